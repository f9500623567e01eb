//! Alertmanager's API v2, the three calls Keep running needs: list
//! silences, create one, expire one. Each call tries the configured URLs in
//! order and uses the first that answers: replicas gossip their silences,
//! so one copy anywhere is enough and any replica lists them all.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::matching::Matcher;
use crate::error::{Error, Result};
use crate::notebook::Timestamp;

/// The most of one answer read: a list of silences is a few hundred bytes
/// each, so this holds tens of thousands.
pub(crate) const MAX_ANSWER_BYTES: u64 = 16 << 20;
/// The most of an error answer quoted in an error.
const MAX_QUOTED: usize = 200;

/// A silence as `GET /api/v2/silences` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiSilence {
    pub(crate) id: String,
    pub(crate) matchers: Vec<Matcher>,
    pub(crate) starts_at: Timestamp,
    pub(crate) ends_at: Timestamp,
    #[serde(default)]
    pub(crate) created_by: String,
    #[serde(default)]
    pub(crate) comment: String,
    pub(crate) status: ApiStatus,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ApiStatus {
    /// `active`, `pending` or `expired`.
    pub(crate) state: String,
}

/// The body of `POST /api/v2/silences`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewSilence<'a> {
    pub(crate) matchers: &'a [Matcher],
    pub(crate) starts_at: Timestamp,
    pub(crate) ends_at: Timestamp,
    pub(crate) created_by: &'a str,
    pub(crate) comment: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

/// Alertmanager's API at one or more replicas' base URLs.
pub(crate) struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
}

impl Client {
    pub(crate) fn new(urls: Vec<String>, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(2)
            .build()
            .map_err(Error::HttpClient)?;
        let urls = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        Ok(Client { http, urls })
    }

    /// Every silence Alertmanager holds (active, pending and expired).
    pub(crate) async fn list(&self) -> Result<Vec<ApiSilence>> {
        self.first_answer("api/v2/silences", |http, url| http.get(url))
            .await
            .and_then(|(url, body)| {
                serde_json::from_slice(&body).map_err(|e| {
                    Error::Unavailable(format!("alertmanager {url}: not a list of silences: {e}"))
                })
            })
    }

    /// Creates `silence`; its id.
    pub(crate) async fn create(&self, silence: &NewSilence<'_>) -> Result<String> {
        let (url, body) = self
            .first_answer("api/v2/silences", |http, url| http.post(url).json(silence))
            .await?;
        serde_json::from_slice::<Created>(&body)
            .map(|c| c.silence_id)
            .map_err(|e| Error::Unavailable(format!("alertmanager {url}: no silenceID: {e}")))
    }

    /// Expires the silence `id`.
    pub(crate) async fn expire(&self, id: &str) -> Result<()> {
        // Ids are UUIDs; anything else would change the path.
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::invalid("id", format!("{id:?} is not a silence id")));
        }
        let path = format!("api/v2/silence/{id}");
        self.first_answer(&path, |http, url| http.delete(url))
            .await
            .map(|_| ())
    }

    /// Sends the request `build` makes for each URL in turn until one
    /// answers; its URL and body. A replica that cannot be reached (or
    /// answers 5xx) passes to the next; a 4xx is the answer (another
    /// replica would refuse the same request).
    async fn first_answer(
        &self,
        path: &str,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<(String, Vec<u8>)> {
        let mut failures = Vec::new();
        for base in &self.urls {
            let url = format!("{base}/{path}");
            match self.send(build(&self.http, &url), &url).await {
                Ok(body) => return Ok((url, body)),
                Err(Attempt::Refused(e)) => return Err(e),
                Err(Attempt::Unreachable(m)) => failures.push(m),
            }
        }
        Err(Error::Unavailable(format!(
            "alertmanager did not answer: {}",
            failures.join("; ")
        )))
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<Vec<u8>, Attempt> {
        let unreachable = |e: reqwest::Error| {
            let why = if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                format!("request failed: {e}")
            };
            Attempt::Unreachable(format!("{url}: {why}"))
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let body = read_bounded(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                Bounded::TooLarge => {
                    Attempt::Unreachable(format!("{url}: answer over {MAX_ANSWER_BYTES} bytes"))
                }
                Bounded::Transport(e) => unreachable(e),
            })?;
        if status.is_success() {
            return Ok(body);
        }
        let text: String = String::from_utf8_lossy(&body)
            .chars()
            .take(MAX_QUOTED)
            .collect();
        let m = format!("{url}: HTTP {}: {}", status.as_u16(), text.trim());
        if status.is_server_error() {
            Err(Attempt::Unreachable(m))
        } else {
            Err(Attempt::Refused(Error::Unavailable(format!(
                "alertmanager refused {m}"
            ))))
        }
    }
}

enum Attempt {
    /// Try the next replica.
    Unreachable(String),
    /// The answer, a refusal.
    Refused(Error),
}

enum Bounded {
    TooLarge,
    Transport(reqwest::Error),
}

/// The body if it has at most `max` bytes; dropped (its connection
/// closed) as soon as it would pass the limit.
async fn read_bounded(mut resp: reqwest::Response, max: u64) -> Result<Vec<u8>, Bounded> {
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(Bounded::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Bounded::Transport)? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(Bounded::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
