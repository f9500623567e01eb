//! The servers of a JupyterHub as notebooks, through the Hub's REST API
//! with nbidle's service token.
//!
//! - Identity: `namespace` is the configured hub name (`jupyterhub` by
//!   default), `notebook` the user for their default server and
//!   `user--server` for a named one. A user name holding `--` (the split
//!   would be ambiguous) or anything outside a DNS-1123 label (lowercase
//!   letters, digits, `-`; at most 63 with the server's name) cannot be
//!   named so: such servers are left out of the list, logged once per
//!   list, and never stopped.
//! - The list is every user's servers, default and named, paginated
//!   (`application/jupyterhub-pagination+json`), stopped servers included
//!   (`include_stopped_servers`) so they show as `stopped` and can be
//!   started again.
//! - A stop is `DELETE …/server` or `…/servers/{name}` without `remove`:
//!   the user, their storage and their named server stay. The Hub keeps no
//!   record of who stopped a server, so nbidle remembers it in memory
//!   (lost on restart; the Hub's own `stopped` state is not).
//! - A start is `POST` of the same path with the server's last
//!   `user_options`, which the Hub keeps on stopped servers.
//! - Probes go through the Hub's proxy (`public_url` + the server's URL)
//!   with a token of the server's own user that opens that user's servers
//!   and nothing else (`access:servers!user=<user>`, made by nbidle with
//!   its `tokens` scope, valid one day, renewed after 23 h): a single-user
//!   server runs its user's code and sees every header it is sent, so it
//!   must never see nbidle's own token.
//! - Every answer is read within [`MAX_ANSWER_BYTES`], and a list within
//!   [`MAX_USERS`]; an answer that is not the API's is an error naming the
//!   call.
//! - The Hub unreachable, a timeout or a 5xx is `Unavailable` (the webhook
//!   answers 5xx and Alertmanager retries); a 429 is waited out
//!   (`Retry-After`, up to 10 s) a few times, then `Unavailable`; a longer
//!   `Retry-After` is `Unavailable` at once, naming it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::backend::{started_since, Backend, JupyterEndpoint, ScrapeTarget};
use crate::backend::{StopOutcome, StopRequest};
use crate::config::JupyterHubConfig;
use crate::error::{Error, Result};
use crate::notebook::{IdleBounds, NotebookId, NotebookState, Status, StopCause, Timestamp};

/// The scopes nbidle's token needs, each with what it is for. `servers`
/// implies `read:servers` (the servers in the list), and with it
/// `delete:servers`, which nbidle never uses: the Hub has no narrower scope
/// to start and stop. `tokens` makes each user's probe token; nbidle's own
/// token never reaches a server.
pub(crate) const REQUIRED_SCOPES: [(&str, &str); 3] = [
    ("list:users", "list the users"),
    ("servers", "stop, start and read servers"),
    (
        "tokens",
        "make each user a token that opens only their servers, for the probes",
    ),
];

/// The most one answer of the Hub may hold (a page of 200 users is about
/// 0.5 MB).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The most users one list reads: a Hub handing out pages forever ends.
const MAX_USERS: u64 = 1_000_000;

/// A probe token's life at the Hub, and how long before its end nbidle
/// makes the next one.
const PROBE_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);
const PROBE_TOKEN_RENEW: Duration = Duration::from_secs(3600);

/// Probe tokens made at once (the first round after start-up makes one per
/// running server).
const TOKEN_CONCURRENCY: usize = 16;

/// How often a 429 is waited out before the call is `Unavailable`.
const RATE_LIMIT_RETRIES: u32 = 3;

/// The longest `Retry-After` waited out within one call; the Hub's own
/// spawn throttle asks for 30-60 s, which is reported instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a start's `POST` or a stop's `DELETE` may take at least: the Hub
/// answers once the server is up (down) or its `slow_spawn_timeout`
/// (`slow_stop_timeout`), 10 s by default, has passed.
const SPAWNER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a start asks whether the Hub's pending stop has ended.
const STOP_POLL: Duration = Duration::from_millis(500);

/// The backend for one JupyterHub.
pub(crate) struct JupyterHubBackend {
    http: reqwest::Client,
    /// The API's base URL, ending in `/`.
    api: String,
    /// The proxy's URL, without a trailing `/`.
    public: String,
    namespace: String,
    token: String,
    page_size: u32,
    request_timeout: Duration,
    bounds: IdleBounds,
    /// Who stopped each server and when, as far as this process saw; kept
    /// until the server is seen running again (a new life).
    stops: Mutex<HashMap<NotebookId, (Timestamp, StopCause)>>,
    /// Each user's probe token and when nbidle makes the next one.
    probe_tokens: Mutex<HashMap<String, (String, std::time::Instant)>>,
}

/// One server as the Hub's API reports it (the fields nbidle reads).
#[derive(Debug, Clone, Deserialize)]
struct HubServer {
    #[serde(default)]
    started: Option<String>,
    #[serde(default)]
    pending: Option<String>,
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    stopped: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    user_options: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct HubUser {
    name: String,
    #[serde(default)]
    servers: BTreeMap<String, HubServer>,
}

#[derive(Debug, Deserialize)]
struct Page {
    items: Vec<HubUser>,
    #[serde(rename = "_pagination")]
    pagination: Pagination,
}

#[derive(Debug, Deserialize)]
struct Pagination {
    next: Option<NextPage>,
}

#[derive(Debug, Deserialize)]
struct NextPage {
    offset: u64,
}

/// What the Hub says of the token itself (`GET /user`).
#[derive(Debug, Deserialize)]
struct Whoami {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// The notebook name of `user`'s server `server` (`""`: the default one),
/// when it can be named reversibly and validly.
pub(crate) fn notebook_name(user: &str, server: &str) -> Option<String> {
    if user.contains("--") || crate::config::check_notebook_name(user).is_err() {
        return None;
    }
    let name = if server.is_empty() {
        user.to_string()
    } else {
        crate::config::check_notebook_name(server).ok()?;
        format!("{user}--{server}")
    };
    crate::config::check_notebook_name(&name).ok()?;
    Some(name)
}

/// The user and server a notebook name stands for (inverse of
/// [`notebook_name`]).
pub(crate) fn hub_server(name: &str) -> (&str, &str) {
    name.split_once("--").unwrap_or((name, ""))
}

fn status_of(s: &HubServer) -> Status {
    match s.pending.as_deref() {
        Some("stop") => Status::Stopping,
        Some(_) => Status::Starting,
        None if s.ready => Status::Running,
        None if s.stopped || s.started.is_none() => Status::Stopped,
        None => Status::Starting,
    }
}

/// `/users/{user}/server` or `/users/{user}/servers/{name}`, escaped.
fn server_path(user: &str, server: &str) -> String {
    let enc = |s: &str| url_escape(s);
    if server.is_empty() {
        format!("users/{}/server", enc(user))
    } else {
        format!("users/{}/servers/{}", enc(user), enc(server))
    }
}

/// Percent-encodes all but unreserved characters: names become one path
/// segment whatever they hold.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How long to wait after a 429 before calling again, from its
/// `Retry-After` (seconds; 1 s when absent or not a number); `None` when
/// the Hub asks for longer than nbidle holds a request open
/// ([`MAX_RETRY_AFTER`]): the caller is told instead (Alertmanager and
/// people retry later).
fn retry_wait(retry_after: Option<&str>) -> Option<Duration> {
    let wait = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs);
    (wait <= MAX_RETRY_AFTER).then_some(wait)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("jupyterhub: {what}: {e}"))
}

/// The start of an answer's body, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    // The Hub's errors are `{"status": …, "message": …}`.
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.into_owned())
}

/// A call the Hub refused (a status nbidle does not expect).
fn refused(what: &str, status: StatusCode, body: &[u8]) -> Error {
    let hint = if status == StatusCode::FORBIDDEN {
        " (does the token hold the scopes docs/jupyterhub.md lists?)"
    } else {
        ""
    };
    Error::Backend(format!(
        "jupyterhub: {what} answered {status}{hint}: {}",
        excerpt(body)
    ))
}

/// An answer parsed as the API's `T`, or an error naming the call.
fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::Backend(format!(
            "jupyterhub: {what}: the answer is not the Hub API's ({e})"
        ))
    })
}

/// A response's body, at most [`MAX_ANSWER_BYTES`] of it.
async fn read_bounded(what: &str, mut resp: reqwest::Response) -> Result<bytes::Bytes> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large(what));
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| unavailable(what, e))? {
        if out.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large(what));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

fn too_large(what: &str) -> Error {
    Error::Backend(format!(
        "jupyterhub: {what}: the answer is larger than {} MiB",
        MAX_ANSWER_BYTES >> 20
    ))
}

impl JupyterHubBackend {
    /// Connects to the Hub and checks that the token holds every scope in
    /// [`REQUIRED_SCOPES`]; a missing scope is a config error naming it.
    /// The Hub not answering is retried until `wait` has passed.
    pub(crate) async fn connect(
        cfg: &JupyterHubConfig,
        token: String,
        bounds: IdleBounds,
        wait: Duration,
    ) -> Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout.0)
            .connect_timeout(cfg.request_timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(Error::HttpClient)?;
        let api = format!("{}/", cfg.api_url.trim_end_matches('/'));
        let b = Arc::new(JupyterHubBackend {
            http,
            api,
            public: cfg.public_url.trim_end_matches('/').to_string(),
            namespace: cfg.name.clone(),
            token,
            page_size: cfg.page_size,
            request_timeout: cfg.request_timeout.0,
            bounds,
            stops: Mutex::new(HashMap::new()),
            probe_tokens: Mutex::new(HashMap::new()),
        });
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match b.check_scopes().await {
                Err(Error::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(%why, "the Hub does not answer yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other.map(|()| b),
            }
        }
    }

    async fn check_scopes(&self) -> Result<()> {
        let (status, body) = self.call(Method::GET, "user", None).await?;
        if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
            return Err(Error::config(
                "backend.jupyterhub.token",
                format!("the Hub refuses the token ({status}): it is not a token the Hub knows"),
            ));
        }
        if !status.is_success() {
            return Err(refused("GET /user", status, &body));
        }
        let me: Whoami = parse("GET /user", &body)?;
        let missing: Vec<String> = REQUIRED_SCOPES
            .iter()
            .filter(|(scope, _)| !me.scopes.iter().any(|s| s == scope))
            .map(|(scope, why)| format!("{scope} (to {why})"))
            .collect();
        if !missing.is_empty() {
            return Err(Error::config(
                "backend.jupyterhub.token",
                format!(
                    "the Hub's token for {:?} lacks the scope{} {}; grant it in the Hub's load_roles (unfiltered: a scope with !user= or !group= does not count)",
                    me.name,
                    if missing.len() > 1 { "s" } else { "" },
                    missing.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// One call to the Hub's API, 429s waited out; what cannot be reached
    /// or answers 5xx is `Unavailable`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, bytes::Bytes)> {
        self.call_within(method, path, body, None).await
    }

    /// As [`Self::call`], with a longer timeout than the configured one.
    async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, bytes::Bytes)> {
        let url = format!("{}{path}", self.api);
        let what = format!("{method} /{}", path.split('?').next().unwrap_or(path));
        for attempt in 0.. {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("Authorization", format!("token {}", self.token))
                .header("Accept", "application/jupyterhub-pagination+json");
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Some(t) = timeout {
                req = req.timeout(t.max(self.request_timeout));
            }
            let resp = req.send().await.map_err(|e| unavailable(&what, e))?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let asked = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match retry_wait(asked.as_deref()) {
                    Some(wait) if attempt < RATE_LIMIT_RETRIES => {
                        tracing::info!(call = %what, ?wait, "the Hub limits nbidle's rate; waiting");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    _ => {
                        let after = asked.map_or_else(String::new, |a| {
                            format!("; it asks to retry after {a} s")
                        });
                        let body = read_bounded(&what, resp).await.unwrap_or_default();
                        return Err(unavailable(
                            &what,
                            format!("answered {status}{after}: {}", excerpt(&body)),
                        ));
                    }
                }
            }
            let bytes = read_bounded(&what, resp).await?;
            if status.is_server_error() {
                return Err(unavailable(
                    &what,
                    format!("answered {status}: {}", excerpt(&bytes)),
                ));
            }
            return Ok((status, bytes));
        }
        unreachable!("the loop returns")
    }

    fn state(&self, user: &str, server: &str, s: &HubServer) -> Option<NotebookState> {
        let name = notebook_name(user, server)?;
        let id = NotebookId::new(&self.namespace, name);
        let status = status_of(s);
        let stop = {
            let mut stops = self.stops.lock().expect("stops");
            if matches!(status, Status::Running | Status::Starting) {
                // Started again: who stopped its previous life no longer
                // says why it is down the next time.
                stops.remove(&id);
                None
            } else {
                stops.get(&id).cloned()
            }
        };
        Some(NotebookState {
            status,
            message: None,
            autostop: true,
            idle_after_seconds: self.bounds.effective(None).as_secs(),
            owner: Some(user.to_string()),
            started_at: s.started.as_deref().and_then(|t| t.parse().ok()),
            stopped_at: stop.as_ref().map(|(at, _)| *at),
            stopped_by: stop.map(|(_, by)| by),
            // Absolute with the Hub's `subdomain_host`; else a path that
            // holds the Hub's `base_url`.
            url: s.url.as_deref().map(|u| {
                if u.starts_with("http://") || u.starts_with("https://") {
                    u.to_string()
                } else {
                    format!("{}{u}", self.public)
                }
            }),
            id,
        })
    }

    async fn endpoint(&self, id: NotebookId, base_url: String) -> Result<JupyterEndpoint> {
        let token = self.probe_token(hub_server(&id.name).0).await?;
        Ok(JupyterEndpoint {
            base_url,
            token: Some(token),
            id,
            pods: Vec::new(),
        })
    }

    /// `user`'s probe token: made at the Hub the first time, and again
    /// [`PROBE_TOKEN_RENEW`] before the last one's end.
    async fn probe_token(&self, user: &str) -> Result<String> {
        let now = std::time::Instant::now();
        if let Some((t, renew_at)) = self.probe_tokens.lock().expect("tokens").get(user) {
            if now < *renew_at {
                return Ok(t.clone());
            }
        }
        let what = format!("POST /users/{user}/tokens");
        let body = serde_json::json!({
            "scopes": [format!("access:servers!user={user}")],
            "expires_in": PROBE_TOKEN_LIFE.as_secs(),
            "note": "nbidle: probes of this user's servers (activity, the JupyterLab extension)",
        });
        let (status, answer) = self
            .call(
                Method::POST,
                &format!("users/{}/tokens", url_escape(user)),
                Some(&body),
            )
            .await?;
        if !status.is_success() {
            return Err(refused(&what, status, &answer));
        }
        #[derive(Deserialize)]
        struct Made {
            token: String,
        }
        let made: Made = parse(&what, &answer)?;
        self.probe_tokens.lock().expect("tokens").insert(
            user.to_string(),
            (
                made.token.clone(),
                now + PROBE_TOKEN_LIFE - PROBE_TOKEN_RENEW,
            ),
        );
        Ok(made.token)
    }

    /// Every user's servers, every page; only the active ones (pending or
    /// running, a cheaper list for the Hub) when `active`.
    async fn all(&self, active: bool) -> Result<Vec<NotebookState>> {
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        let mut offset = 0u64;
        let filter = if active {
            "state=active"
        } else {
            "include_stopped_servers"
        };
        loop {
            if offset > MAX_USERS {
                return Err(Error::Backend(format!(
                    "jupyterhub: GET /users: more than {MAX_USERS} users; nbidle reads no more"
                )));
            }
            let path = format!("users?{filter}&offset={offset}&limit={}", self.page_size);
            let (status, body) = self.call(Method::GET, &path, None).await?;
            if !status.is_success() {
                return Err(refused("GET /users", status, &body));
            }
            let page: Page = parse("GET /users", &body)?;
            let empty = page.items.is_empty();
            for u in &page.items {
                for (server, s) in &u.servers {
                    match self.state(&u.name, server, s) {
                        Some(st) => out.push(st),
                        None => skipped.push(format!("{}/{server}", u.name)),
                    }
                }
            }
            match page.pagination.next {
                Some(next) if next.offset > offset && !empty => offset = next.offset,
                _ => break,
            }
        }
        if !skipped.is_empty() {
            tracing::warn!(
                servers = ?&skipped[..skipped.len().min(10)],
                count = skipped.len(),
                "servers whose user or server name is not a notebook name (lowercase letters, digits, '-', no '--' in the user) are left alone"
            );
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn running(&self) -> Result<impl Iterator<Item = NotebookState>> {
        Ok(self
            .all(true)
            .await?
            .into_iter()
            .filter(|s| s.status == Status::Running))
    }

    /// `id`'s server once no stop of it is pending: the Hub refuses a
    /// start while one is (a slow spawner's stop, answered 202), and the
    /// person who pressed Start wants it running, not an error. Waits up
    /// to [`SPAWNER_CALL_TIMEOUT`]; a stop pending longer is `Unavailable`.
    async fn stopped_or_running(&self, id: &NotebookId) -> Result<(NotebookState, HubServer)> {
        let deadline = tokio::time::Instant::now() + SPAWNER_CALL_TIMEOUT;
        loop {
            let (st, server) = self.fetch(id).await?;
            if st.status != Status::Stopping {
                return Ok((st, server));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "jupyterhub: {id} is still stopping after {}s; start it once it has stopped",
                    SPAWNER_CALL_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    /// One user's server, fresh from the Hub.
    async fn fetch(&self, id: &NotebookId) -> Result<(NotebookState, HubServer)> {
        if id.namespace != self.namespace {
            return Err(Error::NotFound(id.clone()));
        }
        let (user, server) = hub_server(&id.name);
        if notebook_name(user, server).as_deref() != Some(id.name.as_str()) {
            return Err(Error::NotFound(id.clone()));
        }
        let path = format!("users/{}?include_stopped_servers", url_escape(user));
        let (status, body) = self.call(Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(id.clone()));
        }
        let what = format!("GET /users/{user}");
        if !status.is_success() {
            return Err(refused(&what, status, &body));
        }
        let u: HubUser = parse(&what, &body)?;
        let s = u
            .servers
            .get(server)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        let st = self
            .state(user, server, &s)
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        Ok((st, s))
    }
}

#[async_trait]
impl Backend for JupyterHubBackend {
    async fn list(&self) -> Result<Vec<NotebookState>> {
        self.all(false).await
    }

    async fn get(&self, id: &NotebookId) -> Result<NotebookState> {
        Ok(self.fetch(id).await?.0)
    }

    async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome> {
        let (st, _) = self.fetch(id).await?;
        if matches!(st.status, Status::Stopped | Status::Stopping) {
            return Ok(StopOutcome::AlreadyStopped(st));
        }
        if matches!(req.cause, StopCause::IdleAlert { .. }) && st.status != Status::Running {
            return Ok(StopOutcome::NotRunning(st));
        }
        if started_since(st.started_at, req.unless_started_after) {
            return Ok(StopOutcome::StartedSince(st));
        }
        let (user, server) = hub_server(&id.name);
        let (status, body) = self
            .call_within(
                Method::DELETE,
                &server_path(user, server),
                None,
                Some(SPAWNER_CALL_TIMEOUT),
            )
            .await?;
        // Removed (the user, or the named server) since the read above.
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(id.clone()));
        }
        if !status.is_success() {
            return Err(refused(&format!("stopping {id}"), status, &body));
        }
        let now = Timestamp::now();
        self.stops
            .lock()
            .expect("stops")
            .insert(id.clone(), (now, req.cause.clone()));
        let mut after = st;
        // 202: the Hub stops it in the background.
        after.status = if status == StatusCode::ACCEPTED {
            Status::Stopping
        } else {
            Status::Stopped
        };
        after.stopped_at = Some(now);
        after.stopped_by = Some(req.cause);
        tracing::info!(notebook = %id, hub_status = %status, "stopped through the Hub");
        Ok(StopOutcome::Stopped(after))
    }

    async fn start(&self, id: &NotebookId) -> Result<NotebookState> {
        let (st, server) = self.stopped_or_running(id).await?;
        if matches!(st.status, Status::Running | Status::Starting) {
            return Ok(st);
        }
        let (user, name) = hub_server(&id.name);
        let options = server
            .user_options
            .filter(|o| o.as_object().is_some_and(|m| !m.is_empty()));
        let (status, body) = self
            .call_within(
                Method::POST,
                &server_path(user, name),
                options.as_ref(),
                Some(SPAWNER_CALL_TIMEOUT),
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(id.clone()));
        }
        if !status.is_success() && status != StatusCode::BAD_REQUEST {
            return Err(refused(&format!("starting {id}"), status, &body));
        }
        let after = self.fetch(id).await?.0;
        // 400 is "already running" when someone started it meanwhile; any
        // other 400 (a stop pending, named servers not allowed) is the
        // Hub's refusal.
        if status == StatusCode::BAD_REQUEST
            && !matches!(after.status, Status::Running | Status::Starting)
        {
            return Err(refused(&format!("starting {id}"), status, &body));
        }
        tracing::info!(notebook = %id, hub_status = %status, "started through the Hub");
        Ok(after)
    }

    /// None: a server's `/metrics` wants a Hub token, which Prometheus does
    /// not have; nbidle's exporter probes the servers instead.
    async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>> {
        Ok(Vec::new())
    }

    async fn jupyter_endpoints(&self) -> Result<Vec<JupyterEndpoint>> {
        let running: Vec<(NotebookId, String)> = self
            .running()
            .await?
            .filter_map(|s| Some((s.id, s.url?)))
            .collect();
        let endpoints: Vec<Result<JupyterEndpoint>> = futures_util::stream::iter(running)
            .map(|(id, base_url)| self.endpoint(id, base_url))
            .buffer_unordered(TOKEN_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::with_capacity(endpoints.len());
        let mut failed = Vec::new();
        for e in endpoints {
            match e {
                Ok(ep) => out.push(ep),
                Err(e @ Error::Unavailable(_)) => return Err(e),
                Err(e) => failed.push(e.to_string()),
            }
        }
        if let Some(first) = failed.first() {
            tracing::warn!(count = failed.len(), error = %first, "servers not probed: no probe token");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_and_refuse_what_would_not_come_back() {
        assert_eq!(notebook_name("ada", "").as_deref(), Some("ada"));
        assert_eq!(notebook_name("ada", "gpu").as_deref(), Some("ada--gpu"));
        assert_eq!(hub_server("ada--gpu"), ("ada", "gpu"));
        assert_eq!(hub_server("ada"), ("ada", ""));
        // A server name with `--` still comes back: the user has none.
        assert_eq!(notebook_name("ada", "a--b").as_deref(), Some("ada--a--b"));
        assert_eq!(hub_server("ada--a--b"), ("ada", "a--b"));
        for (user, server) in [
            ("a--b", ""),
            ("Ada", ""),
            ("ada@example.org", ""),
            ("ada", "GPU"),
            ("-ada", ""),
            ("ada", &"x".repeat(60)),
        ] {
            assert_eq!(notebook_name(user, server), None, "{user}/{server}");
        }
    }

    #[test]
    fn the_hub_states_map_to_statuses() {
        let s = |pending: Option<&str>, ready, stopped, started: Option<&str>| HubServer {
            started: started.map(String::from),
            pending: pending.map(String::from),
            ready,
            stopped,
            url: None,
            user_options: None,
        };
        let t = Some("2026-12-02T01:55:15.787589Z");
        assert_eq!(status_of(&s(None, true, false, t)), Status::Running);
        assert_eq!(
            status_of(&s(Some("spawn"), false, false, t)),
            Status::Starting
        );
        assert_eq!(
            status_of(&s(Some("stop"), false, false, t)),
            Status::Stopping
        );
        assert_eq!(status_of(&s(None, false, true, None)), Status::Stopped);
        assert_eq!(status_of(&s(None, false, false, t)), Status::Starting);
    }

    #[test]
    fn a_short_retry_after_is_waited_out_and_a_long_one_reported() {
        assert_eq!(retry_wait(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_wait(Some(" 10 ")), Some(Duration::from_secs(10)));
        assert_eq!(retry_wait(None), Some(Duration::from_secs(1)));
        assert_eq!(retry_wait(Some("soon")), Some(Duration::from_secs(1)));
        // The Hub's spawn throttle: 30-60 s.
        assert_eq!(retry_wait(Some("42")), None);
    }

    #[test]
    fn paths_escape_every_name_into_one_segment() {
        assert_eq!(server_path("ada", ""), "users/ada/server");
        assert_eq!(server_path("ada", "a b/c"), "users/ada/servers/a%20b%2Fc");
    }
}
