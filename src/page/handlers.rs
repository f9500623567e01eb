//! The page's handlers. Each answers with a reply, never a rejection: the
//! API's `recover` stays the API's, and a browser gets pages.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use warp::http::{HeaderValue, Response, StatusCode};
use warp::reply::Response as Reply;

use super::render::Capabilities;
use super::request::{field, html, json, redirect, refuse, set_cookie, Req};
use super::session::{same_token, Current, Flash, Viewer};
use super::view::{self, Extras, ListView, Query, RowState};
use super::{assets, render};
use crate::backend::{StopOutcome, StopRequest};
use crate::metrics::{Outcome, Trigger};
use crate::notebook::{NotebookId, NotebookState, Status, StopCause, StoppedBy, Timestamp};
use crate::server::auth::Scope;
use crate::server::models::without_paths;
use crate::server::App;

type Answer = Result<Reply, Infallible>;

/// The request's session: its cookie's, or, behind a trusted proxy and
/// when `make`, the one of the person its header names. The bool: handed
/// out now (its cookie must be set). Only a page view makes one: a
/// script's refresh or a form without the cookie must not fill the store.
/// `Err`: the store is full of other people's sessions (429).
fn session(app: &App, req: &Req, make: bool) -> Result<Option<(Current, bool)>, Box<Reply>> {
    let page = &app.page;
    let trusted = page.trusted_user_header.as_deref();
    if let Some(c) = super::gate::current(&page.sessions, trusted, req) {
        return Ok(Some((c, false)));
    }
    let Some(user) = trusted.and_then(|h| req.header(h)).filter(|_| make) else {
        return Ok(None);
    };
    match page.sessions.create(Viewer::Owner(user.clone()), &user) {
        Ok(Some(c)) => Ok(Some((c, true))),
        Ok(None) => Err(Box::new(store_full(req))),
        Err(e) => Err(Box::new(backend_failed(req, e))),
    }
}

/// The session store holds `auth.max_sessions` live sessions of others.
fn store_full(req: &Req) -> Reply {
    let mut r = refuse(
        req,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_sessions",
        "Too many sign-ins",
        "Too many people are signed in to nbidle right now (auth.max_sessions). Try again in a few minutes, or ask its admin to raise auth.max_sessions.",
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("60"));
    r
}

fn secure(app: &App, req: &Req) -> bool {
    app.page.tls || req.forwarded_https()
}

fn with_session_cookie(app: &App, req: &Req, r: Reply, cur: &Current, new: bool) -> Reply {
    if new {
        set_cookie(r, Some((&cur.id, cur.ttl_secs)), secure(app, req))
    } else {
        r
    }
}

fn now() -> f64 {
    Timestamp::now().unix_seconds()
}

fn not_ready(req: &Req) -> Reply {
    let mut r = refuse(
        req,
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "Starting",
        "nbidle is starting: its notebooks are not listed yet. Try again in a few seconds.",
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("5"));
    r
}

fn backend_failed(req: &Req, e: crate::Error) -> Reply {
    let api = crate::server::models::ApiError::from(e);
    refuse(
        req,
        api.status,
        api.code,
        "The notebooks could not be listed",
        &api.message,
    )
}

/// The page `raw` asks for, with each row's exporter facts, Keep running
/// silence and warning.
async fn list_view(app: &App, viewer: &Viewer, raw: &str) -> crate::Result<ListView> {
    let all = app.backend.list().await?;
    let sel = view::select(all, viewer, Query::parse(raw));
    let facts = app
        .exporter
        .as_ref()
        .map(|e| e.last_round())
        .unwrap_or_default();
    // Alertmanager down: the list shows, without Keep running, saying why.
    let (kept, keep_running_error) = match &app.silences {
        None => (HashMap::new(), None),
        Some(s) => match s.for_notebooks(&sel.page).await {
            Ok(k) => (k, None),
            Err(e) => (HashMap::new(), Some(without_paths(&e.to_string()))),
        },
    };
    let warnings = app.warnings.for_notebooks(&sel.page);
    Ok(sel.rows(Extras {
        facts: &facts,
        kept,
        warnings,
        keep_running_error,
    }))
}

fn capabilities(app: &App) -> Capabilities {
    Capabilities {
        keep_running: app.silences.is_some(),
    }
}

/// `GET /`: the list, or the way to sign in.
pub(crate) async fn index(app: Arc<App>, req: Req, raw: String) -> Answer {
    let (mut cur, new) = match session(&app, &req, true) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(redirect("/sign-in")),
        Err(r) => return Ok(*r),
    };
    if !app.readiness.is_synced() {
        return Ok(not_ready(&req));
    }
    let v = match list_view(&app, &cur.viewer, &raw).await {
        Ok(v) => v,
        Err(e) => return Ok(backend_failed(&req, e)),
    };
    // Taken only here, by the view that shows it.
    cur.flash = app.page.sessions.take_flash(&cur.id);
    let body = render::list(&v, &cur, capabilities(&app), now());
    Ok(with_session_cookie(
        &app,
        &req,
        html(StatusCode::OK, body),
        &cur,
        new,
    ))
}

#[derive(Serialize)]
struct States {
    now: f64,
    /// The counts line above the list.
    summary: String,
    notebooks: Vec<RowState>,
}

/// `GET /page/states`: the live state of the rows a page shows, for its
/// script.
pub(crate) async fn states(app: Arc<App>, req: Req, raw: String) -> Answer {
    let Ok(Some((cur, _))) = session(&app, &req, false) else {
        return Ok(refuse(
            &req,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Sign in",
            "sign in first",
        ));
    };
    if !app.readiness.is_synced() {
        return Ok(not_ready(&req));
    }
    let v = match list_view(&app, &cur.viewer, &raw).await {
        Ok(v) => v,
        Err(e) => return Ok(backend_failed(&req, e)),
    };
    let body = States {
        now: now(),
        summary: v.summary(),
        notebooks: v.rows.iter().map(RowState::from).collect(),
    };
    Ok(json(StatusCode::OK, &body))
}

/// `GET /sign-in`.
pub(crate) async fn sign_in_form(app: Arc<App>, req: Req) -> Answer {
    if matches!(session(&app, &req, false), Ok(Some(_))) {
        return Ok(redirect("/"));
    }
    let trusted = app.page.trusted_user_header.is_some();
    Ok(html(StatusCode::OK, render::sign_in(None, trusted)))
}

/// `POST /sign-in`: an API token becomes a session with its scope.
pub(crate) async fn sign_in(
    app: Arc<App>,
    req: Req,
    form: Option<Vec<(String, String)>>,
) -> Answer {
    let page = &app.page;
    let trusted = page.trusted_user_header.is_some();
    // A sign-in only this page may make: another site's form would sign
    // the browser in with the other site's token.
    if req.cross_site() {
        let msg =
            "This sign-in came from another site and was refused. Sign in from nbidle's own page.";
        return Ok(html(
            StatusCode::FORBIDDEN,
            render::sign_in(Some(msg), trusted),
        ));
    }
    if let Err(wait) = page.limiter.check(req.client, Instant::now()) {
        let secs = wait.as_secs().max(1);
        let msg = format!("Too many wrong tokens from this address. Try again in {secs} s.");
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            render::sign_in(Some(&msg), trusted),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
        return Ok(r);
    }
    let token = form
        .as_deref()
        .and_then(|f| field(f, "token"))
        .map(str::trim)
        .unwrap_or("");
    // The API's own check: constant time, every token compared.
    let scope = (!token.is_empty())
        .then(|| app.api_tokens.scope(Some(&format!("Bearer {token}"))))
        .flatten();
    let Some(scope) = scope else {
        page.limiter.failed(req.client, Instant::now());
        app.metrics.error(crate::metrics::ErrorKind::ApiAuth);
        let msg = "That token is not valid. Check it and try again.";
        return Ok(html(
            StatusCode::UNAUTHORIZED,
            render::sign_in(Some(msg), trusted),
        ));
    };
    page.limiter.succeeded(req.client);
    if let Some(old) = req.cookie.as_deref() {
        page.sessions.remove(old);
    }
    match page.sessions.create(Viewer::Token(scope), token) {
        Ok(None) => Ok(store_full(&req)),
        Ok(Some(cur)) => Ok(set_cookie(
            redirect("/"),
            Some((&cur.id, cur.ttl_secs)),
            secure(&app, &req),
        )),
        Err(e) => Ok(backend_failed(&req, e)),
    }
}

/// The session of a state-changing form, once its CSRF token matches;
/// a 403 otherwise.
fn checked(
    app: &App,
    req: &Req,
    form: &Option<Vec<(String, String)>>,
) -> Result<Current, Box<Reply>> {
    let sent = form.as_deref().and_then(|f| field(f, "csrf"));
    match (session(app, req, false), sent) {
        (Ok(Some((cur, _))), Some(sent)) if same_token(&cur.csrf, sent) => Ok(cur),
        _ => Err(Box::new(refuse(
            req,
            StatusCode::FORBIDDEN,
            "forbidden",
            "Refused",
            "This form is out of date or did not come from this page (missing or wrong CSRF token). Reload the page and try again.",
        ))),
    }
}

/// `POST /sign-out`.
fn sign_out(app: &App, req: &Req, cur: &Current) -> Reply {
    app.page.sessions.remove(&cur.id);
    set_cookie(redirect("/sign-in"), None, secure(app, req))
}

/// What a state-changing form asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Post {
    SignOut,
    /// An action on the notebook the form names.
    On(Act),
}

impl From<Act> for Post {
    fn from(act: Act) -> Self {
        Post::On(act)
    }
}

/// What a notebook's form asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Act {
    Stop,
    Start,
    /// An Alertmanager silence on its stop alert.
    KeepRunning,
    /// Its Keep running silences expired.
    Cancel,
}

/// Every state-changing form: its CSRF token checked, then the action.
pub(crate) async fn act(
    post: impl Into<Post>,
    app: Arc<App>,
    req: Req,
    form: Option<Vec<(String, String)>>,
) -> Answer {
    let cur = match checked(&app, &req, &form) {
        Ok(c) => c,
        Err(r) => return Ok(*r),
    };
    Ok(match post.into() {
        Post::SignOut => sign_out(&app, &req, &cur),
        Post::On(act) => on_notebook(act, &app, &req, &cur, form.unwrap_or_default()).await,
    })
}

/// `POST /notebooks/stop`, `POST /notebooks/start`, …: the action, then
/// back to the list the form was on, with what happened.
async fn on_notebook(
    act: Act,
    app: &App,
    req: &Req,
    cur: &Current,
    form: Vec<(String, String)>,
) -> Reply {
    let back = Query::parse(field(&form, "back").unwrap_or("")).encode();
    let location = if back.is_empty() {
        "/".to_string()
    } else {
        format!("/?{back}")
    };
    let (Some(ns), Some(name)) = (field(&form, "namespace"), field(&form, "name")) else {
        return refuse(
            req,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Refused",
            "the form names no notebook",
        );
    };
    let id = NotebookId::new(ns, name);
    if !app.readiness.is_synced() {
        return not_ready(req);
    }
    if let Err(r) = allowed(app, req, &cur.viewer, &id).await {
        return *r;
    }
    let flash = match act {
        Act::Stop => stop(app, &cur.viewer, &id).await,
        Act::Start => start(app, &id).await,
        Act::KeepRunning => keep_running(app, &cur.viewer, &id, &form).await,
        Act::Cancel => cancel(app, &id).await,
    };
    app.page.sessions.set_flash(&cur.id, flash);
    redirect(&location)
}

/// 403 unless the viewer may act on `id`: a token's namespaces are
/// checked before anything is read, as the API does; an owner's
/// notebook must be read to know its owner.
async fn allowed(app: &App, req: &Req, viewer: &Viewer, id: &NotebookId) -> Result<(), Box<Reply>> {
    let ok = match viewer {
        Viewer::Token(Scope::All) => true,
        Viewer::Token(scope) => scope.allows(&id.namespace),
        Viewer::Owner(_) => app.backend.get(id).await.is_ok_and(|s| viewer.may_use(&s)),
    };
    if ok {
        return Ok(());
    }
    app.metrics.error(crate::metrics::ErrorKind::ApiForbidden);
    Err(Box::new(refuse(
        req,
        StatusCode::FORBIDDEN,
        "forbidden",
        "Not yours",
        &format!("This sign-in may not use the notebook {id}."),
    )))
}

/// What a stop did, as the backend reported it: a notebook may still be
/// shutting down when the stop returns.
pub(crate) fn stop_message(state: &NotebookState) -> String {
    let id = &state.id;
    match state.status {
        Status::Stopped => format!("Stopped {id}. Its files are kept; Start brings it back."),
        Status::Stopping => {
            format!("Stopping {id}… Its files are kept; the list shows when it is stopped.")
        }
        other => format!("Asked {id} to stop; it is {} now.", other.as_str()),
    }
}

async fn stop(app: &App, viewer: &Viewer, id: &NotebookId) -> Flash {
    let req = StopRequest {
        cause: StopCause::user(Some(StoppedBy::Page { who: viewer.who() })),
        unless_started_after: None,
    };
    match app.backend.stop(id, req).await {
        Ok(StopOutcome::Stopped(state)) => {
            app.warnings.clear(id);
            app.metrics.stop(Trigger::User, Outcome::Success);
            ok(stop_message(&state))
        }
        Ok(_) => ok(format!("{id} was already stopped.")),
        Err(e) => {
            if !matches!(e, crate::Error::NotFound(_)) {
                app.metrics.stop(Trigger::User, Outcome::Error);
            }
            failed(format!(
                "Could not stop {id}: {}",
                without_paths(&e.to_string())
            ))
        }
    }
}

async fn start(app: &App, id: &NotebookId) -> Flash {
    let before = app.backend.get(id).await.ok().and_then(|s| s.started_at);
    match app.backend.start(id).await {
        Ok(state) => {
            app.warnings.clear(id);
            if state.started_at != before {
                app.metrics.start(Trigger::User, Outcome::Success);
            }
            ok(format!(
                "Started {id}; it can take a few seconds to answer."
            ))
        }
        Err(e) => {
            app.metrics.start(Trigger::User, Outcome::Error);
            failed(format!(
                "Could not start {id}: {}",
                without_paths(&e.to_string())
            ))
        }
    }
}

/// Who a silence says made it: the person behind a trusted proxy; for a
/// token, which kind (tokens carry no person's name).
fn created_by(viewer: &Viewer) -> String {
    match viewer {
        Viewer::Owner(u) => u.clone(),
        Viewer::Token(Scope::All) => "nbidle page".into(),
        Viewer::Token(Scope::Namespaces(ns)) => format!("nbidle page ({})", ns.join(", ")),
    }
}

/// A `datetime-local` value (`2026-06-01T18:00`, seconds optional) as
/// RFC 3339 in UTC, which the form says it is; anything else as given.
fn utc(value: &str) -> String {
    let v = value.trim();
    match v.len() {
        16 => format!("{v}:00Z"),
        19 if !v.ends_with('Z') => format!("{v}Z"),
        _ => v.to_string(),
    }
}

async fn keep_running(
    app: &App,
    viewer: &Viewer,
    id: &NotebookId,
    form: &[(String, String)],
) -> Flash {
    let Some(silences) = &app.silences else {
        return failed("Keep running needs alertmanager.url in nbidle's config.".into());
    };
    let choice = field(form, "for").unwrap_or("");
    let until_field = utc(field(form, "until").unwrap_or(""));
    let (for_, until) = if choice == "until" {
        (None, Some(until_field.as_str()))
    } else {
        (Some(choice), None)
    };
    let until = match crate::silences::keep_until(for_, until, Timestamp::now(), silences.max()) {
        Ok(t) => t,
        Err(e) => return failed(format!("Could not keep {id} running: {e}")),
    };
    let state = match app.backend.get(id).await {
        Ok(s) => s,
        Err(e) => {
            return failed(format!(
                "Could not keep {id} running: {}",
                without_paths(&e.to_string())
            ))
        }
    };
    match silences
        .keep_running(&state, until, &created_by(viewer), "")
        .await
    {
        Ok(k) => ok(format!(
            "{id} is kept running until {} (a silence in Alertmanager).",
            k.until
        )),
        Err(e) => failed(format!(
            "Could not keep {id} running: {}",
            without_paths(&e.to_string())
        )),
    }
}

async fn cancel(app: &App, id: &NotebookId) -> Flash {
    let Some(silences) = &app.silences else {
        return failed("Keep running needs alertmanager.url in nbidle's config.".into());
    };
    let state = match app.backend.get(id).await {
        Ok(s) => s,
        Err(e) => {
            return failed(format!(
                "Could not cancel keep running of {id}: {}",
                without_paths(&e.to_string())
            ))
        }
    };
    match silences.cancel(&state).await {
        Ok(done) if !done.expired.is_empty() => ok(format!(
            "{id} is no longer kept running; it stops when idle again."
        )),
        Ok(done) if !done.left.is_empty() => {
            let ids: Vec<&str> = done.left.iter().map(|k| k.id.as_str()).collect();
            failed(format!(
                "{id} is kept running by silences that cover other notebooks too ({}); expire them in Alertmanager.",
                ids.join(", ")
            ))
        }
        Ok(_) => failed(format!("No silence keeps {id} running.")),
        Err(e) => failed(format!(
            "Could not cancel keep running of {id}: {}",
            without_paths(&e.to_string())
        )),
    }
}

fn ok(text: String) -> Flash {
    Flash { ok: true, text }
}

fn failed(text: String) -> Flash {
    Flash { ok: false, text }
}

/// `GET /assets/page.css`, `GET /assets/page.js`.
pub(crate) fn asset(body: &'static str, content_type: &'static str) -> Reply {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    h.insert(
        "cache-control",
        HeaderValue::from_static(assets::CACHE_FOREVER),
    );
    super::request::secured(r)
}
