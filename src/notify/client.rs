//! One `PUT nbidle/state` to a notebook's Jupyter, its answer read within
//! [`MAX_ANSWER_BYTES`] and the notify timeout. The server runs its user's
//! code, so the answer is hostile input: over the limit, too slow, not the
//! contract's JSON or more than [`MAX_REQUESTS`] requests is a failure,
//! and nothing it sent reaches a log line.

use std::time::Duration;

use super::state::{Answer, RawRequest, StateBody, MAX_REQUESTS};
use crate::backend::JupyterEndpoint;
use crate::exporter::{read_body, ProbeFailure};

/// The largest answer read.
pub(crate) const MAX_ANSWER_BYTES: u64 = 16 * 1024;
const PATH: &str = "nbidle/state";

/// What a push came to.
#[derive(Debug)]
pub(crate) enum Pushed {
    /// The extension took the state and handed out these requests.
    Taken(Vec<RawRequest>),
    /// 404: no extension in this notebook's Jupyter.
    Absent,
    /// Anything else; the text is nbidle's own.
    Failed(String),
}

/// The HTTP client for pushes: the notify timeout for the whole exchange,
/// no redirects (the token goes only where the backend said).
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(2)
        .build()
        .expect("a reqwest client with timeouts and no redirects builds")
}

/// `{base_url}nbidle/state?no_track_activity=1`.
pub(crate) fn state_url(base_url: &str) -> String {
    format!("{base_url}{PATH}?no_track_activity=1")
}

/// Pushes `body` to `ep` and reads its answer, all within `timeout`.
pub(crate) async fn push(
    http: &reqwest::Client,
    ep: &JupyterEndpoint,
    body: &StateBody,
    timeout: Duration,
) -> Pushed {
    let json = match serde_json::to_vec(body) {
        Ok(j) => j,
        Err(e) => return Pushed::Failed(format!("encoding the state: {e}")),
    };
    match tokio::time::timeout(timeout, exchange(http, ep, json)).await {
        Ok(p) => p,
        Err(_) => Pushed::Failed(format!("{PATH}: timeout")),
    }
}

async fn exchange(http: &reqwest::Client, ep: &JupyterEndpoint, json: Vec<u8>) -> Pushed {
    let mut req = http
        .put(state_url(&ep.base_url))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json);
    if let Some(t) = &ep.token {
        req = req.header(reqwest::header::AUTHORIZATION, format!("token {t}"));
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Pushed::Failed(ProbeFailure::transport(PATH, &e).to_string()),
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Pushed::Absent;
    }
    if !status.is_success() {
        return Pushed::Failed(format!("{PATH}: HTTP {}", status.as_u16()));
    }
    let bytes = match read_body(resp, MAX_ANSWER_BYTES, PATH).await {
        Ok(b) => b,
        Err(f) => return Pushed::Failed(f.to_string()),
    };
    parse_answer(&bytes)
}

/// The answer's requests, or why it is not the contract's.
pub(crate) fn parse_answer(bytes: &[u8]) -> Pushed {
    match serde_json::from_slice::<Answer>(bytes) {
        Ok(a) if a.requests.len() > MAX_REQUESTS => Pushed::Failed(format!(
            "{PATH}: {} requests, at most {MAX_REQUESTS}",
            a.requests.len()
        )),
        Ok(a) => Pushed::Taken(a.requests),
        Err(e) => Pushed::Failed(format!(
            "{PATH}: invalid JSON (line {}, column {})",
            e.line(),
            e.column()
        )),
    }
}
