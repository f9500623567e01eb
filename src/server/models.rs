//! JSON shapes of the HTTP API and the one error type every route rejects with.

use serde::{Deserialize, Serialize};
use warp::http::StatusCode;

use crate::decide::AlertResult;
use crate::error::Error;
use crate::notebook::{NotebookId, NotebookState};

/// A rejection that becomes `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (503s the client should retry).
    pub retry_after: Option<u32>,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(crate) fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong credentials",
        )
    }
}

/// `Retry-After` for a backend that cannot answer now: about the time a
/// Kubernetes watch needs to be current again once its API server answers.
pub(crate) const RETRY_UNAVAILABLE_SECS: u32 = 5;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Invalid { .. } | Error::Json(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "backend_error"),
        };
        if status.is_server_error() {
            // The whole error, paths and all, is for the operator.
            tracing::warn!(error = %e, "request failed");
        }
        let api = ApiError::new(status, code, without_paths(&e.to_string()));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            api.retry_after(RETRY_UNAVAILABLE_SECS)
        } else {
            api
        }
    }
}

/// Replaces each absolute path in `msg` with its last component: a client
/// learns which file an operation failed on, not where nbidle keeps its
/// files. A path starts with `/` at the start of a word (or after a quote,
/// bracket or `=`) and ends at whitespace, a quote, a bracket, `,` or `:`.
/// nbidle's own API paths (`/api/v1/…`) are kept.
pub(crate) fn without_paths(msg: &str) -> String {
    let ends = |c: char| c.is_whitespace() || "\"'`)]},:".contains(c);
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    let mut word_start = true;
    while let Some(c) = rest.chars().next() {
        // nbidle's own routes (advice such as "POST /api/v1/…/stop") are
        // not server paths.
        if c == '/' && word_start && !rest.starts_with("/api/v1/") {
            let len = rest.find(ends).unwrap_or(rest.len());
            let (path, after) = rest.split_at(len);
            out.push_str(path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("/"));
            rest = after;
            word_start = false;
            continue;
        }
        out.push(c);
        word_start = c.is_whitespace() || "\"'`([{=".contains(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub(crate) struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

#[derive(Serialize)]
pub(crate) struct NotebookList {
    pub notebooks: Vec<NotebookView>,
    /// Why `kept_running` is missing from every notebook: Alertmanager
    /// did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_running_error: Option<String>,
}

/// A notebook as the API shows it: its state, the silence keeping it
/// running and its warning, when there are.
#[derive(Serialize)]
pub(crate) struct NotebookView {
    #[serde(flatten)]
    pub state: NotebookState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_running: Option<crate::silences::KeptRunning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<crate::warnings::Warning>,
    /// Alertmanager did not answer, so whether it is kept running is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_running_error: Option<String>,
}

/// The body of `POST …/keep-running`: `for` or `until`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeepRunningRequest {
    /// A duration (`"4h"`, `"90m"`).
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// An RFC 3339 time.
    pub until: Option<String>,
    pub comment: Option<String>,
    /// Who the caller acts for (`createdBy`), on the token's word.
    pub by: Option<String>,
}

/// The longest `comment` and `by` taken.
pub(crate) const MAX_COMMENT_CHARS: usize = 1000;
pub(crate) const MAX_BY_CHARS: usize = 200;

/// The webhook's answer: what happened to each alert.
#[derive(Serialize)]
pub(crate) struct WebhookResponse {
    pub stopped: usize,
    pub failed: usize,
    pub alerts: Vec<AlertOutcome>,
}

#[derive(Serialize)]
pub(crate) struct AlertOutcome {
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
            crate::decide::Decision::Failed(e) | crate::decide::Decision::Unavailable(e) => {
                Some(without_paths(e))
            }
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
pub(crate) struct SdTargetGroup {
    pub targets: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_name_files_not_where_they_are() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = Error::io("writing /var/lib/nbidle/notebooks/lab.json.tmp", io);
        let api = ApiError::from(e);
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!api.message.contains("/var/lib"), "{}", api.message);
        assert!(
            api.message.starts_with("io: writing lab.json.tmp: "),
            "{}",
            api.message
        );
        let e = Error::Backend(
            "persisting state: io: renaming /data/a b/x.json.tmp: Is a directory; starting local/lab: \"/opt/jupyter/bin/jupyter\": not found (path=/etc/x)".into(),
        );
        assert_eq!(
            ApiError::from(e).message,
            "backend: persisting state: io: renaming a b/x.json.tmp: Is a directory; starting local/lab: \"jupyter\": not found (path=x)"
        );
    }

    #[test]
    fn backend_failures_with_a_source_are_server_errors() {
        let conflict = kube::Error::Api(Box::new(
            kube::core::Status::failure("conflict", "Conflict").with_code(409),
        ));
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        for e in [
            Error::kube("team-a/lab", conflict),
            Error::backend_io("starting local/lab: \"/opt/jupyter/bin/jupyter\"", io),
        ] {
            let api = ApiError::from(e);
            assert_eq!(
                (api.status, api.code),
                (StatusCode::INTERNAL_SERVER_ERROR, "backend_error")
            );
            assert!(api.message.starts_with("backend: "), "{}", api.message);
            assert!(!api.message.contains("/opt"), "{}", api.message);
        }
    }

    #[test]
    fn messages_without_absolute_paths_are_unchanged() {
        for m in [
            "notebook local/lab not found",
            "backend: kubeflow.org/v1 team-a/lab: https://10.0.0.1:6443/apis/x: 409 Conflict",
            "a / b, 1/2",
            "stop it first (POST /api/v1/notebooks/local/lab/stop)",
            "",
        ] {
            assert_eq!(without_paths(m), m);
        }
        assert_eq!(without_paths("/"), "/");
        assert_eq!(without_paths("at /a/b/"), "at b");
    }
}
