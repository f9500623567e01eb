//! Request handlers: each takes parsed inputs and the shared [`App`], and
//! returns a reply or an [`ApiError`] rejection.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use super::body::Body;
use warp::http::StatusCode;
use warp::reply::{json, with_status, Reply};
use warp::Rejection;

use super::auth::Scope;
use super::models::*;
use super::App;
use crate::backend::{StopOutcome, StopRequest};
use crate::decide::{self, Decision};
use crate::logsafe::{Escaped, REJECTED_PAYLOAD, UNHANDLED_REJECTION};
use crate::metrics::{ErrorKind, Outcome, Trigger};
use crate::notebook::{NotebookId, NotebookState, StopCause, StoppedBy};

pub(crate) async fn livez() -> Result<impl Reply, Infallible> {
    Ok("ok")
}

pub(crate) async fn readyz(app: Arc<App>) -> Result<impl Reply, Infallible> {
    Ok(if app.readiness.is_ready() && app.backend.current() {
        with_status("ready", StatusCode::OK)
    } else if app.readiness.is_draining() {
        with_status("shutting down", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        with_status("not ready", StatusCode::SERVICE_UNAVAILABLE)
    })
}

pub(crate) async fn metrics(app: Arc<App>) -> Result<impl Reply, Infallible> {
    match app.backend.list().await {
        Ok(states) => app.metrics.set_notebooks(&states),
        Err(e) => {
            app.metrics.error(ErrorKind::Backend);
            tracing::warn!(error = %e, "listing notebooks for metrics");
        }
    }
    Ok(warp::reply::with_header(
        app.metrics.render(),
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    ))
}

/// The activity exporter's per-notebook series (404 when it is disabled).
pub(crate) async fn notebook_metrics(app: Arc<App>) -> Result<impl Reply, Rejection> {
    let exporter = app.exporter.as_ref().ok_or_else(|| {
        warp::reject::custom(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the exporter is disabled (exporter.enabled)",
        ))
    })?;
    Ok(warp::reply::with_header(
        exporter.render(),
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    ))
}

/// Prometheus `http_sd_configs` targets: the running notebooks.
pub(crate) async fn sd_notebooks(app: Arc<App>) -> Result<impl Reply, Rejection> {
    let targets = app
        .backend
        .scrape_targets()
        .await
        .map_err(|e| reject(&app, ErrorKind::Backend, e.into()))?;
    let groups: Vec<SdTargetGroup> = targets
        .into_iter()
        .map(|t| SdTargetGroup {
            targets: vec![t.address],
            labels: BTreeMap::from([
                ("namespace".to_string(), t.id.namespace),
                ("notebook".to_string(), t.id.name),
                ("__metrics_path__".to_string(), t.metrics_path),
                ("__scheme__".to_string(), t.scheme),
            ]),
        })
        .collect();
    Ok(json(&groups))
}

pub(crate) async fn webhook(app: Arc<App>, body: Body) -> Result<impl Reply, Rejection> {
    let started = Instant::now();
    let observe = |code: StatusCode| {
        app.metrics
            .webhook_handled(code.as_u16(), started.elapsed().as_secs_f64());
    };
    // Before the backend's first list every notebook would look unknown and
    // its alert be dropped; 503 makes Alertmanager deliver it again.
    if let Err(e) = synced(&app) {
        observe(StatusCode::SERVICE_UNAVAILABLE);
        return Err(e);
    }
    let payload = match crate::alerts::parse(&body.bytes) {
        Ok(p) => p,
        Err(e) => {
            observe(StatusCode::BAD_REQUEST);
            app.metrics.error(ErrorKind::WebhookPayload);
            // The error quotes the payload; a client can send any number.
            if let Some(a) = REJECTED_PAYLOAD.admit() {
                tracing::warn!(error = %Escaped(&e), suppressed = a.suppressed, "rejected webhook payload");
            }
            return Err(warp::reject::custom(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_payload",
                capped(e.to_string(), MAX_ERROR_CHARS),
            )));
        }
    };
    app.warnings.record(&payload, &app.metrics);
    let results = decide::handle_notifying(
        &payload,
        app.backend.as_ref(),
        app.exporter.as_deref(),
        app.notifier.as_deref(),
        app.policy,
        &app.metrics,
    )
    .await;
    for r in results.iter().filter(|r| r.decision == Decision::Stopped) {
        if let Some(id) = &r.notebook {
            app.warnings.clear(id);
        }
    }
    let stopped = results
        .iter()
        .filter(|r| r.decision == Decision::Stopped)
        .count();
    let failed = results
        .iter()
        .filter(|r| matches!(r.decision, Decision::Failed(_)))
        .count();
    let unavailable = results
        .iter()
        .filter(|r| matches!(r.decision, Decision::Unavailable(_)))
        .count();
    // Alertmanager retries 5xx and gives up on 4xx: a failed stop must be 5xx
    // so it is retried; the retry finds the stops that did work already done.
    let code = if failed > 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if unavailable > 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    observe(code);
    let body = WebhookResponse {
        stopped,
        failed: failed + unavailable,
        alerts: results.into_iter().map(AlertOutcome::from).collect(),
    };
    let mut reply = with_status(json(&body), code).into_response();
    if code == StatusCode::SERVICE_UNAVAILABLE {
        reply.headers_mut().insert(
            warp::http::header::RETRY_AFTER,
            RETRY_UNAVAILABLE_SECS.into(),
        );
    }
    Ok(reply)
}

pub(crate) async fn list_notebooks(app: Arc<App>, scope: Scope) -> Result<impl Reply, Rejection> {
    synced(&app)?;
    let mut notebooks = app
        .backend
        .list()
        .await
        .map_err(|e| reject(&app, ErrorKind::Backend, e.into()))?;
    notebooks.retain(|n| scope.allows(&n.id.namespace));
    let (mut kept, keep_running_error) = match &app.silences {
        None => (Default::default(), None),
        Some(s) => match s.for_notebooks(&notebooks).await {
            Ok(k) => (k, None),
            Err(e) => (Default::default(), Some(without_paths(&e.to_string()))),
        },
    };
    let mut warned = app.warnings.for_notebooks(&notebooks);
    let notebooks = notebooks
        .into_iter()
        .map(|state| NotebookView {
            kept_running: kept.remove(&state.id),
            warning: warned.remove(&state.id),
            keep_running_error: None,
            state,
        })
        .collect();
    Ok(json(&NotebookList {
        notebooks,
        keep_running_error,
    }))
}

/// `state` with its silence and warning.
async fn view(app: &App, state: NotebookState) -> NotebookView {
    let (kept_running, keep_running_error) = match &app.silences {
        None => (None, None),
        Some(s) => match s.for_notebook(&state).await {
            Ok(k) => (k, None),
            Err(e) => (None, Some(without_paths(&e.to_string()))),
        },
    };
    NotebookView {
        kept_running,
        warning: app.warnings.get(&state),
        keep_running_error,
        state,
    }
}

/// The silences, or 409 when `alertmanager.url` is not set.
fn silences(app: &App) -> Result<&crate::silences::Silences, Rejection> {
    app.silences.as_deref().ok_or_else(|| {
        warp::reject::custom(ApiError::new(
            StatusCode::CONFLICT,
            "keep_running_unavailable",
            "Keep running needs Alertmanager's API: alertmanager.url is not set",
        ))
    })
}

/// Who made a silence through the API: the name the caller gives, else
/// the kind of token (tokens carry no person's name).
fn created_by(scope: &Scope, by: Option<&str>) -> String {
    let token = match scope {
        Scope::All => "nbidle API".to_string(),
        Scope::Namespaces(ns) => format!("nbidle API ({})", ns.join(", ")),
    };
    match by.map(str::trim).filter(|b| !b.is_empty()) {
        Some(b) => format!("{b} via {token}"),
        None => token,
    }
}

fn parse_keep_running(bytes: &[u8]) -> crate::Result<KeepRunningRequest> {
    // serde's derived structs also read an array of their fields in order.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(crate::Error::invalid("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let req: KeepRunningRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        crate::Error::invalid(
            if path == "." { "body".into() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    for (field, v, max) in [
        ("comment", &req.comment, MAX_COMMENT_CHARS),
        ("by", &req.by, MAX_BY_CHARS),
    ] {
        if v.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(crate::Error::invalid(
                field,
                format!("at most {max} characters"),
            ));
        }
    }
    Ok(req)
}

pub(crate) async fn keep_running(
    namespace: String,
    name: String,
    app: Arc<App>,
    scope: Scope,
    body: Body,
) -> Result<impl Reply, Rejection> {
    let id = addressed(&app, &scope, namespace, name)?;
    let silences = silences(&app)?;
    let req = parse_keep_running(&body.bytes)
        .map_err(|e| reject(&app, ErrorKind::ApiRequest, e.into()))?;
    let until = crate::silences::keep_until(
        req.for_.as_deref(),
        req.until.as_deref(),
        crate::notebook::Timestamp::now(),
        silences.max(),
    )
    .map_err(|e| reject(&app, ErrorKind::ApiRequest, e.into()))?;
    let state = get(&app, &id).await?;
    let by = created_by(&scope, req.by.as_deref());
    let kept = silences
        .keep_running(&state, until, &by, req.comment.as_deref().unwrap_or(""))
        .await
        .map_err(|e| reject(&app, ErrorKind::ApiRequest, e.into()))?;
    let mut v = view(&app, state).await;
    // The answer shows the silence just made, whatever the list says.
    v.kept_running = Some(kept);
    Ok(with_status(json(&v), StatusCode::CREATED))
}

pub(crate) async fn cancel_keep_running(
    namespace: String,
    name: String,
    app: Arc<App>,
    scope: Scope,
) -> Result<impl Reply, Rejection> {
    let id = addressed(&app, &scope, namespace, name)?;
    let silences = silences(&app)?;
    let state = get(&app, &id).await?;
    let done = silences
        .cancel(&state)
        .await
        .map_err(|e| reject(&app, ErrorKind::ApiRequest, e.into()))?;
    if done.expired.is_empty() {
        let (status, code, message) = if done.left.is_empty() {
            (
                StatusCode::NOT_FOUND,
                "not_kept_running",
                format!("no silence keeps {id} running"),
            )
        } else {
            let ids: Vec<&str> = done.left.iter().map(|k| k.id.as_str()).collect();
            (
                StatusCode::CONFLICT,
                "silence_covers_others",
                format!("{id} is kept running by silences that cover other notebooks too ({}); expire them in Alertmanager", ids.join(", ")),
            )
        };
        return Err(reject(
            &app,
            ErrorKind::ApiRequest,
            ApiError::new(status, code, message),
        ));
    }
    Ok(json(&done))
}

/// How much of a refusal's message goes back to the client: the message
/// may quote the payload, which may be megabytes.
const MAX_ERROR_CHARS: usize = 1024;

fn capped(mut message: String, max_chars: usize) -> String {
    if let Some((cut, _)) = message.char_indices().nth(max_chars) {
        let total = message.len();
        message.truncate(cut);
        message.push_str(&format!("…({total} bytes)"));
    }
    message
}

/// 503 until the backend has listed its notebooks: before that, every
/// notebook would look unknown (404) or absent (an empty list).
fn synced(app: &App) -> Result<(), Rejection> {
    if app.readiness.is_synced() {
        Ok(())
    } else {
        Err(warp::reject::custom(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the backend has not listed its notebooks yet".to_string(),
        )))
    }
}

async fn get(app: &App, id: &NotebookId) -> Result<NotebookState, Rejection> {
    app.backend
        .get(id)
        .await
        .map_err(|e| reject(app, ErrorKind::ApiRequest, e.into()))
}

/// The notebook a request names, once the caller may use its namespace and
/// the backend has listed its notebooks.
fn addressed(
    app: &App,
    scope: &Scope,
    namespace: String,
    name: String,
) -> Result<NotebookId, Rejection> {
    let id = NotebookId::new(namespace, name);
    in_scope(app, scope, &id)?;
    synced(app)?;
    Ok(id)
}

/// 403 for a namespace the caller's token does not cover; nothing is read.
fn in_scope(app: &App, scope: &Scope, id: &NotebookId) -> Result<(), Rejection> {
    if scope.allows(&id.namespace) {
        Ok(())
    } else {
        app.metrics.error(ErrorKind::ApiForbidden);
        Err(warp::reject::custom(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token may not use namespace {:?}", id.namespace),
        )))
    }
}

pub(crate) async fn get_notebook(
    namespace: String,
    name: String,
    app: Arc<App>,
    scope: Scope,
) -> Result<impl Reply, Rejection> {
    let id = addressed(&app, &scope, namespace, name)?;
    let state = get(&app, &id).await?;
    Ok(json(&view(&app, state).await))
}

pub(crate) async fn stop_notebook(
    namespace: String,
    name: String,
    app: Arc<App>,
    scope: Scope,
) -> Result<impl Reply, Rejection> {
    let id = addressed(&app, &scope, namespace, name)?;
    let token = crate::page::session::Viewer::Token(scope).who();
    let req = StopRequest {
        cause: StopCause::user(Some(StoppedBy::Api { token })),
        unless_started_after: None,
    };
    match app.backend.stop(&id, req).await {
        Ok(outcome) => {
            app.warnings.clear(&id);
            if matches!(outcome, StopOutcome::Stopped(_)) {
                app.metrics.stop(Trigger::User, Outcome::Success);
            }
            Ok(json(outcome.state()))
        }
        Err(e) => {
            if !matches!(e, crate::Error::NotFound(_)) {
                app.metrics.stop(Trigger::User, Outcome::Error);
            }
            Err(reject(&app, ErrorKind::ApiRequest, e.into()))
        }
    }
}

pub(crate) async fn start_notebook(
    namespace: String,
    name: String,
    app: Arc<App>,
    scope: Scope,
) -> Result<impl Reply, Rejection> {
    let id = addressed(&app, &scope, namespace, name)?;
    let before = get(&app, &id).await?;
    match app.backend.start(&id).await {
        Ok(state) => {
            app.warnings.clear(&id);
            if state.started_at != before.started_at {
                app.metrics.start(Trigger::User, Outcome::Success);
            }
            Ok(json(&state))
        }
        Err(e) => {
            app.metrics.start(Trigger::User, Outcome::Error);
            Err(reject(&app, ErrorKind::Backend, e.into()))
        }
    }
}

/// Counts the error and turns it into a rejection. Server-side failures are
/// counted as `backend` whatever the caller guessed.
fn reject(app: &App, kind: ErrorKind, e: ApiError) -> Rejection {
    let kind = if e.status.is_server_error() {
        ErrorKind::Backend
    } else {
        kind
    };
    app.metrics.error(kind);
    warp::reject::custom(e)
}

/// The one place rejections become responses.
pub(crate) async fn recover(err: Rejection) -> Result<impl Reply, Infallible> {
    let retry_after = err.find::<ApiError>().and_then(|e| e.retry_after);
    let (status, code, message) = if let Some(e) = err.find::<ApiError>() {
        (e.status, e.code, e.message.clone())
    } else if err.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_string(),
        )
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        // 400, not 413: Alertmanager treats both as final, and 400 is what
        // the webhook documents for every payload it refuses.
        (
            StatusCode::BAD_REQUEST,
            "payload_too_large",
            "request body is larger than webhook.max_body_bytes".to_string(),
        )
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a Content-Length header is required".to_string(),
        )
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route".to_string(),
        )
    } else if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
    } else {
        // A client that cuts its body off gets here, as often as it likes.
        if let Some(a) = UNHANDLED_REJECTION.admit() {
            tracing::error!(rejection = ?err, suppressed = a.suppressed, "unhandled rejection");
        }
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error".to_string(),
        )
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message: &message,
        },
    };
    let reply = with_status(json(&body), status).into_response();
    Ok(match retry_after {
        Some(s) => warp::reply::with_header(reply, "retry-after", s.to_string()).into_response(),
        None => reply,
    })
}

#[cfg(test)]
mod tests {
    use super::capped;

    #[test]
    fn refusal_messages_are_capped_on_a_char_boundary() {
        assert_eq!(capped("short".into(), 10), "short");
        let long = "é".repeat(2000);
        let c = capped(long.clone(), 1024);
        assert!(c.starts_with(&"é".repeat(1024)));
        assert!(c.ends_with(&format!("…({} bytes)", long.len())));
    }
}

#[cfg(test)]
mod keep_running_tests {
    use super::{created_by, parse_keep_running, Scope};

    fn field(body: &str) -> String {
        match parse_keep_running(body.as_bytes()) {
            Err(crate::Error::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn keep_running_bodies_are_checked_naming_the_field() {
        let r = parse_keep_running(br#"{"for": "4h", "comment": "training"}"#).unwrap();
        assert_eq!(
            (r.for_.as_deref(), r.comment.as_deref()),
            (Some("4h"), Some("training"))
        );
        assert_eq!(field(r#"{"for": 4}"#), "for");
        assert_eq!(field(r#"{"until": true}"#), "until");
        assert_eq!(field(r#"{"for": "1h", "colour": "red"}"#), "colour");
        assert_eq!(
            field(&format!(
                r#"{{"for": "1h", "comment": "{}"}}"#,
                "x".repeat(1001)
            )),
            "comment"
        );
        assert_eq!(
            field(&format!(r#"{{"for": "1h", "by": "{}"}}"#, "x".repeat(201))),
            "by"
        );
        assert_eq!(field("[1]"), "body");
        assert_eq!(field("not json"), "body");
    }

    #[test]
    fn silences_name_who_asked_and_which_token() {
        assert_eq!(created_by(&Scope::All, None), "nbidle API");
        assert_eq!(created_by(&Scope::All, Some("  ")), "nbidle API");
        let team = Scope::Namespaces(vec!["team-a".into(), "team-b".into()]);
        assert_eq!(
            created_by(&team, Some("ada")),
            "ada via nbidle API (team-a, team-b)"
        );
    }
}
