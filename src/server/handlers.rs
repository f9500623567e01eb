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
use crate::notebook::{NotebookId, NotebookState, StopCause};

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
    let results = decide::handle(
        &payload,
        app.backend.as_ref(),
        app.exporter.as_deref(),
        app.policy,
        &app.metrics,
    )
    .await;
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
    Ok(json(&NotebookList { notebooks }))
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
    Ok(json(&state))
}

pub(crate) async fn stop_notebook(
    namespace: String,
    name: String,
    app: Arc<App>,
    scope: Scope,
) -> Result<impl Reply, Rejection> {
    let id = addressed(&app, &scope, namespace, name)?;
    let req = StopRequest {
        cause: StopCause::User,
        unless_started_after: None,
    };
    match app.backend.stop(&id, req).await {
        Ok(outcome) => {
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
