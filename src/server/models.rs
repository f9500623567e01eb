//! JSON shapes of the HTTP API and the one error type every route rejects with.

use serde::Serialize;
use warp::http::StatusCode;

use crate::decide::AlertResult;
use crate::error::Error;
use crate::notebook::{NotebookId, NotebookState};

/// A rejection that becomes `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (503s the client should retry).
    pub retry_after: Option<u32>,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong credentials",
        )
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match &e {
            Error::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            Error::Invalid { .. } | Error::Json(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
            }
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backend_error",
                e.to_string(),
            ),
        }
    }
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

#[derive(Serialize)]
pub struct NotebookList {
    pub notebooks: Vec<NotebookState>,
}

/// The webhook's answer: what happened to each alert.
#[derive(Serialize)]
pub struct WebhookResponse {
    pub stopped: usize,
    pub failed: usize,
    pub alerts: Vec<AlertOutcome>,
}

#[derive(Serialize)]
pub struct AlertOutcome {
    pub alertname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notebook: Option<NotebookId>,
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<AlertResult> for AlertOutcome {
    fn from(r: AlertResult) -> Self {
        let error = match &r.decision {
            crate::decide::Decision::Failed(e) => Some(e.clone()),
            _ => None,
        };
        AlertOutcome {
            alertname: r.alertname,
            notebook: r.notebook,
            decision: r.decision.label(),
            error,
        }
    }
}

/// One entry of Prometheus's HTTP service discovery.
#[derive(Serialize)]
pub struct SdTargetGroup {
    pub targets: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}
