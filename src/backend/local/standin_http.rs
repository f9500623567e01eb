//! What the stopped-notebook page answers, request by request.
//!
//! A request is one of ([`classify`]):
//! - a browser's visit: `GET`/`HEAD`, `Accept: text/html`, not an API path,
//!   not a script's `fetch` (`Sec-Fetch-Mode` other than `navigate`,
//!   `X-Requested-With`), not a websocket upgrade. It gets the page (503
//!   with `Retry-After`), or, with `wake_on_visit`, a `GET` that is not a
//!   prefetch starts the notebook.
//! - the page's Start form (`POST <base>_nbidle/start`);
//! - the JupyterLab extension's `GET <base>nbidle/state`: 200 JSON, no
//!   auth, phase `stopped` with the page's sentence, so an open JupyterLab
//!   says the notebook was stopped and links to Start;
//! - anything else: JupyterLab's polling, its kernels' websockets, scripts.
//!   It gets JSON 503 `{"error", "reason", "notebook"}` with `Retry-After`,
//!   so an open JupyterLab backs off. It never starts the notebook.
//!
//! Start is allowed to whoever presents the notebook's own Jupyter token
//! (`token` in the config): as the form's `token` field (filled in from
//! `?token=` of the URL the page was opened with), as `?token=` of the POST,
//! or as `Authorization: token …` (or `Bearer …`). Jupyter's login cookie is
//! signed with Jupyter's own secret, which nbidle does not have, so it is
//! not accepted. A form POST must carry the page's CSRF token (random per
//! notebook and nbidle run) and must not come from another site; a POST
//! with the token in `Authorization` (a script) needs neither, as a browser
//! never sends that header across sites. Tokens are compared as SHA-256
//! digests in constant time.
//!
//! Start is also allowed to a person signed in to nbidle's page whose
//! session may start this notebook (the page's own scope rules, through
//! [`PersonGate`](crate::backend::PersonGate)): browsers send a host's
//! cookies to every port, so the page's session cookie arrives here when
//! nbidle's page and the notebook share a host name. The form then has no
//! token field and carries the session's CSRF token, which the POST must
//! return with the cookie. A notebook without a configured token is
//! started from here by such a person only, or from nbidle's page or API.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ring::digest::{digest, SHA256, SHA256_OUTPUT_LEN};

use super::standin::Page;
use super::standin_page::{self as render, Form, Refusal};
use crate::backend::Backend;
use crate::notebook::{NotebookState, Status, StopCause, StoppedBy, Timestamp};

/// What a client is told to wait before asking again.
pub(super) const RETRY_AFTER_SECONDS: u64 = 30;
/// A Start form's body is two short fields.
pub(super) const MAX_FORM_BYTES: usize = 8 * 1024;
/// The Start form's body must arrive within this.
pub(super) const FORM_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The path of the Start form, under the notebook's base URL.
pub(super) const START_PATH: &str = "_nbidle/start";
/// JupyterLab's extension reads the notebook's state here (`nbidle-jupyterlab`).
pub(super) const STATE_PATH: &str = "nbidle/state";
/// Marks every answer of the page, so its script tells it from Jupyter's.
pub(super) const MARK_HEADER: &str = "x-nbidle-stopped";

type Digest = [u8; SHA256_OUTPUT_LEN];

fn sha256(value: &[u8]) -> Digest {
    let mut out = [0u8; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, value).as_ref());
    out
}

/// Every byte is compared, whatever differs first.
fn digests_equal(a: &Digest, b: &Digest) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The notebook's token and the page's CSRF token, as digests.
#[derive(Debug)]
pub(super) struct Secret {
    token: Option<Digest>,
    csrf: Option<String>,
}

impl Secret {
    pub(super) fn new(token: Option<&str>) -> Self {
        Secret {
            token: token.map(|t| sha256(t.as_bytes())),
            csrf: random_hex(),
        }
    }

    /// Whether `presented` is the notebook's token.
    pub(super) fn is_token(&self, presented: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| digests_equal(t, &sha256(presented.as_bytes())))
    }

    pub(super) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub(super) fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }

    pub(super) fn is_csrf(&self, presented: &str) -> bool {
        self.csrf
            .as_deref()
            .is_some_and(|c| same_secret(c, presented))
    }
}

/// Compared as digests, in constant time.
fn same_secret(a: &str, b: &str) -> bool {
    digests_equal(&sha256(a.as_bytes()), &sha256(b.as_bytes()))
}

/// 128 random bits as hex; `None` if the system has no randomness to give
/// (the form is then refused).
fn random_hex() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A browser's visit: the page.
    Visit,
    /// The Start form or a script's start.
    Start,
    /// JupyterLab's extension reading the state (`GET nbidle/state`).
    State,
    /// Jupyter's API, websockets, scripts, assets: JSON 503.
    Api,
    /// Outside the notebook's base URL.
    Elsewhere,
}

fn header(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Classifies a request to a stopped notebook's address (module doc).
pub(super) fn classify(method: &Method, path: &str, headers: &HeaderMap, base: &str) -> Kind {
    let Some(rest) = path
        .strip_prefix(base)
        .or_else(|| (path == base.trim_end_matches('/')).then_some(""))
    else {
        return Kind::Elsewhere;
    };
    if rest == START_PATH {
        return match *method {
            Method::POST => Kind::Start,
            _ => Kind::Api,
        };
    }
    if rest == STATE_PATH && *method == Method::GET {
        return Kind::State;
    }
    let upgrade = headers.contains_key(header::UPGRADE)
        || header(headers, header::CONNECTION)
            .is_some_and(|c| c.to_ascii_lowercase().contains("upgrade"));
    let api_path = rest == "api" || rest.starts_with("api/") || rest.contains("/api/");
    let script = headers.contains_key("x-requested-with")
        || header(headers, "sec-fetch-mode").is_some_and(|m| m != "navigate");
    let html = header(headers, header::ACCEPT).is_some_and(|a| a.contains("text/html"));
    let read = matches!(*method, Method::GET | Method::HEAD);
    if read && html && !api_path && !script && !upgrade {
        Kind::Visit
    } else {
        Kind::Api
    }
}

/// Whether a visit may wake the notebook: a `GET` of the page itself, not a
/// `HEAD` (link checkers), a browser's prefetch, nor an `<iframe>`,
/// `<object>` or `<embed>` (also navigations, which any site the person
/// opens could put in its page).
pub(super) fn wakes(method: &Method, headers: &HeaderMap) -> bool {
    let prefetch = ["sec-purpose", "purpose", "x-moz"]
        .iter()
        .any(|h| header(headers, *h).is_some_and(|v| v.contains("prefetch")));
    let document = header(headers, "sec-fetch-dest").is_none_or(|d| d == "document");
    *method == Method::GET && !prefetch && document
}

/// `name=value&…` of a query or a form, decoded.
pub(super) fn form_value(encoded: &str, name: &str) -> Option<String> {
    encoded.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token of `Authorization: token …` or `Bearer …`.
pub(super) fn authorization_token(headers: &HeaderMap) -> Option<&str> {
    let (scheme, value) = header(headers, header::AUTHORIZATION)?
        .trim()
        .split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| value.trim())
}

/// Where to go once Jupyter answers: a path under the base URL (never
/// another site), by default the base URL itself.
pub(super) fn safe_next(next: Option<&str>, base: &str) -> String {
    match next {
        Some(n)
            if n.starts_with(base)
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => base.to_string(),
    }
}

/// `next` with `token=` added when it has none, so Jupyter signs the
/// person in who presented it.
fn with_token(next: &str, token: &str) -> String {
    let (_, query) = next.split_once('?').unwrap_or((next, ""));
    if form_value(query, "token").is_some() {
        return next.to_string();
    }
    let sep = if next.contains('?') { '&' } else { '?' };
    let encoded: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect();
    format!("{next}{sep}token={encoded}")
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(MARK_HEADER, HeaderValue::from_static("1"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    r
}

fn html(status: StatusCode, body: String) -> Reply {
    reply(status, "text/html; charset=utf-8", body)
}

fn json(status: StatusCode, body: serde_json::Value) -> Reply {
    reply(status, "application/json", body.to_string())
}

/// The `reason` of the JSON answer.
pub(super) fn reason_code(state: &NotebookState) -> &'static str {
    match state.status {
        Status::Failed => "failed",
        Status::Starting => "starting",
        _ => "stopped",
    }
}

fn api_answer(state: &NotebookState) -> Reply {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({
            "error": render::sentence(state),
            "reason": reason_code(state),
            "notebook": state.id.name,
        }),
    )
}

/// The JupyterLab extension's `GET nbidle/state` while the notebook is
/// down: 200 without auth (the stopped page says the same to anyone), in
/// the extension's own shape, so an open JupyterLab says it was stopped.
fn state_answer(page: &Page, headers: &HeaderMap, state: &NotebookState) -> Reply {
    let (by, reason) = match &state.stopped_by {
        Some(StopCause::IdleAlert { alertname, .. }) => (
            Some(alertname.clone()),
            Some(crate::notebook::idle_reason(state.idle_after_seconds)),
        ),
        Some(StopCause::User { by }) => (
            Some(match by {
                Some(StoppedBy::Page { who }) => who.clone(),
                Some(StoppedBy::Api { .. }) => "nbidle's API".into(),
                None => "nbidle".into(),
            }),
            None,
        ),
        None => (None, None),
    };
    let phase = match state.status {
        Status::Starting => "starting",
        _ => "stopped",
    };
    let base = page.site.base.as_str();
    json(
        StatusCode::OK,
        serde_json::json!({
            "state": {
                "version": 1,
                "notebook": {"namespace": state.id.namespace, "name": state.id.name},
                "phase": phase,
                "stopped_at": state.stopped_at.map(Timestamp::unix_seconds),
                "by": by,
                "reason": reason,
                "message": render::sentence(state),
                "start_url": state.url.as_deref().unwrap_or(base),
                "page_url": render::nbidle_url(&page.nbidle, host_of(headers)),
            },
            "received_at": Timestamp::now().unix_seconds(),
            "requests": [],
        }),
    )
}

/// Answers one request (module doc).
pub(super) async fn handle(
    page: Arc<Page>,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let state = page.backend.state_of(&page.slot);
    let base = page.site.base.as_str();
    let kind = classify(req.method(), req.uri().path(), req.headers(), base);
    Ok(match kind {
        Kind::Elsewhere => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("not found; the notebook is at {base}"), "reason": reason_code(&state)}),
        ),
        Kind::Api => api_answer(&state),
        Kind::State => state_answer(&page, req.headers(), &state),
        Kind::Visit => visit(&page, client, &req, &state),
        Kind::Start => start(&page, client, req, &state).await,
    })
}

fn host_of(headers: &HeaderMap) -> Option<&str> {
    header(headers, header::HOST)
}

fn form_for<'a>(
    page: &'a Page,
    headers: &'a HeaderMap,
    state: &NotebookState,
    next: String,
) -> Form<'a> {
    Form {
        person: page.people.may_start(headers, state),
        action: format!("{}{START_PATH}", page.site.base),
        csrf: page.secret.csrf(),
        next,
        token: None,
        token_needed: page.secret.has_token(),
        nbidle_url: render::nbidle_url(&page.nbidle, host_of(headers)),
        refusal: None,
    }
}

/// Whether `presented` is the notebook's token, counting a wrong one
/// against `client`; `Err(wait)` while the client must wait, before any
/// comparison, so guessing costs time.
fn try_token(page: &Page, client: IpAddr, presented: &str) -> Result<bool, Duration> {
    let now = Instant::now();
    page.guesses.check(client, now)?;
    let ok = page.secret.is_token(presented);
    match ok {
        true => page.guesses.succeeded(client),
        false => page.guesses.failed(client, now),
    }
    Ok(ok)
}

/// 429 with `Retry-After`, over the page's (or a script's JSON) answer.
fn slowed(mut r: Reply, wait: Duration) -> Reply {
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r.headers_mut().insert(
        header::RETRY_AFTER,
        // Rounded up: a client that waits as told is not refused again.
        HeaderValue::from(wait.as_millis().div_ceil(1000).max(1) as u64),
    );
    r
}

fn visit(
    page: &Arc<Page>,
    client: IpAddr,
    req: &Request<Incoming>,
    state: &NotebookState,
) -> Reply {
    let query = req.uri().query().unwrap_or("");
    let next = safe_next(
        req.uri().path_and_query().map(|p| p.as_str()),
        &page.site.base,
    );
    if page.wake && wakes(req.method(), req.headers()) {
        return begin_start(page, state, &next, "a visit (wake_on_visit)");
    }
    let mut form = form_for(page, req.headers(), state, next);
    if let Some(t) = form_value(query, "token") {
        match try_token(page, client, &t) {
            Ok(true) => form.token = Some(t),
            Ok(false) => form.refusal = Some(Refusal::WrongToken),
            Err(wait) => {
                form.refusal = Some(Refusal::TooManyWrong);
                let body = render::stopped(state, &form);
                return slowed(html(StatusCode::SERVICE_UNAVAILABLE, body), wait);
            }
        }
    }
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        render::stopped(state, &form),
    )
}

/// Starts the notebook in the background (one start at a time from this
/// page) and answers with the page that waits for Jupyter.
fn begin_start(page: &Arc<Page>, state: &NotebookState, next: &str, by: &str) -> Reply {
    if !page.starting.swap(true, Ordering::AcqRel) {
        tracing::info!(notebook = %page.slot.id, by, "starting a stopped notebook from its page");
        let p = page.clone();
        page.backend.tasks.supervise(async move {
            if let Err(e) = Backend::start(p.backend.as_ref(), &p.slot.id).await {
                tracing::warn!(notebook = %p.slot.id, error = %e, "start from the stopped-notebook page failed");
            }
            p.starting.store(false, Ordering::Release);
        });
    }
    html(
        StatusCode::OK,
        render::starting(state, &format!("{}api", page.site.base), next),
    )
}

async fn read_form(body: Incoming) -> Option<String> {
    let limited = Limited::new(body, MAX_FORM_BYTES);
    let bytes = tokio::time::timeout(FORM_READ_TIMEOUT, limited.collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).ok()
}

async fn start(
    page: &Arc<Page>,
    client: IpAddr,
    req: Request<Incoming>,
    state: &NotebookState,
) -> Reply {
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    if let Some(t) = authorization_token(headers) {
        return match try_token(page, client, t) {
            Err(wait) => slowed(
                json(
                    StatusCode::TOO_MANY_REQUESTS,
                    serde_json::json!({"error": "too many wrong tokens from this address", "reason": reason_code(state)}),
                ),
                wait,
            ),
            Ok(true) => {
                begin_start(page, state, &page.site.base, "its token (Authorization)");
                json(
                    StatusCode::ACCEPTED,
                    serde_json::json!({"status": "starting", "notebook": state.id.name}),
                )
            }
            Ok(false) => json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "not this notebook's token", "reason": reason_code(state)}),
            ),
        };
    }
    let cross_site = header(headers, "sec-fetch-site").is_some_and(|s| s == "cross-site");
    let form = match cross_site {
        true => None,
        false => read_form(body).await,
    };
    let field = |name| form.as_deref().and_then(|f| form_value(f, name));
    let next = safe_next(field("next").as_deref(), &page.site.base);
    // A person signed in to nbidle's page, with their session's CSRF token.
    if let Some(person) = page.people.may_start(headers, state) {
        if field("csrf").is_some_and(|c| same_secret(&person.csrf, &c)) {
            let by = format!("{} (signed in to nbidle's page)", person.who);
            return begin_start(page, state, &next, &by);
        }
    }
    let presented = field("token")
        .filter(|t| !t.is_empty())
        .or_else(|| parts.uri.query().and_then(|q| form_value(q, "token")));
    let csrf_ok = field("csrf").is_some_and(|c| page.secret.is_csrf(&c));
    // Only a token that came with the form's CSRF token is tried (and
    // counted): an out-of-date form says so instead.
    let tried = match (csrf_ok, presented.as_deref()) {
        (true, Some(t)) => Some(try_token(page, client, t)),
        _ => None,
    };
    if let Some(Err(wait)) = tried {
        let mut f = form_for(page, headers, state, next);
        f.refusal = Some(Refusal::TooManyWrong);
        return slowed(
            html(StatusCode::FORBIDDEN, render::stopped(state, &f)),
            wait,
        );
    }
    let token_ok = tried == Some(Ok(true));
    if csrf_ok && token_ok {
        let token = presented.unwrap_or_default();
        return begin_start(page, state, &with_token(&next, &token), "its token");
    }
    let mut f = form_for(page, headers, state, next);
    f.refusal = Some(match (csrf_ok, presented.is_some()) {
        (false, _) => Refusal::Expired,
        (true, false) => Refusal::NoToken,
        (true, true) => Refusal::WrongToken,
    });
    html(StatusCode::FORBIDDEN, render::stopped(state, &f))
}

#[cfg(test)]
#[path = "standin_http_tests.rs"]
mod tests;
