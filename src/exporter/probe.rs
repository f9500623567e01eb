//! Probing one notebook's Jupyter REST API: kernels and terminals (with
//! `?no_track_activity=1`), the server's start once a life and its file
//! work ([`super::filework`]), each answer read within limits
//! ([`super::bounded`]) and folded into one [`ProbeResult`].

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::bounded::{self, Detail, ProbeFailure, Reason};
use super::filework::FileWork;
use super::Exporter;
use crate::backend::JupyterEndpoint;
use crate::notebook::Timestamp;

/// Kernel execution states, as exported in the `state` label.
pub(crate) const KERNEL_STATES: [&str; 5] = ["idle", "busy", "starting", "dead", "other"];

/// What one probe of one notebook found.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProbeResult {
    pub(crate) ok: bool,
    pub(crate) duration: Duration,
    /// Counts in the order of [`KERNEL_STATES`].
    pub(crate) kernels: [u32; 5],
    pub(crate) terminals: u32,
    /// Latest kernel or terminal activity, Unix seconds.
    pub(crate) last_activity: Option<f64>,
    /// The server's start, when this probe read `/api/status`.
    pub(crate) server_started: Option<f64>,
    /// The server's contents writes, or why they are unseen; `None` when
    /// the probe failed before reading them.
    pub(crate) file_work: Option<FileWork>,
    /// Why the probe failed, when it did.
    pub(crate) failure: Option<ProbeFailure>,
}

impl ProbeResult {
    pub(crate) fn busy_kernels(&self) -> u32 {
        self.kernels[1]
    }
}

#[derive(Deserialize)]
struct Kernel {
    execution_state: Option<String>,
    last_activity: Option<String>,
}

#[derive(Deserialize)]
struct Terminal {
    last_activity: Option<String>,
}

/// `/api/status`: when the Jupyter server itself started.
#[derive(Deserialize)]
struct ServerStatus {
    started: Option<String>,
}

impl Exporter {
    /// One probe request's body, read within `exporter.max_response_bytes`.
    async fn get(&self, ep: &JupyterEndpoint, path: &'static str) -> Result<Vec<u8>, ProbeFailure> {
        let resp = self.send(ep, path, "?no_track_activity=1").await?;
        bounded::read_body(resp, self.cfg.max_response_bytes, path).await
    }

    /// A GET of `path` + `query` with the notebook's token, answered with
    /// a success status; its body is left to the caller.
    pub(crate) async fn send(
        &self,
        ep: &JupyterEndpoint,
        path: &'static str,
        query: &str,
    ) -> Result<reqwest::Response, ProbeFailure> {
        let mut req = self.http.get(format!("{}{path}{query}", ep.base_url));
        if let Some(t) = &ep.token {
            req = req.header("Authorization", format!("token {t}"));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ProbeFailure::transport(path, &e))?;
        if !resp.status().is_success() {
            return Err(ProbeFailure::new(
                Reason::HttpStatus,
                path,
                Detail::Status(resp.status().as_u16()),
            ));
        }
        Ok(resp)
    }

    /// A JSON array of at most `max_items`, each element folded into
    /// `activity` as it is parsed.
    async fn get_array<T: serde::de::DeserializeOwned>(
        &self,
        ep: &JupyterEndpoint,
        path: &'static str,
        max_items: usize,
        mut each: impl FnMut(&mut Activity, T),
    ) -> Result<Activity, ProbeFailure> {
        let body = self.get(ep, path).await?;
        let mut activity = Activity::default();
        bounded::fold_array(&body, max_items, |item| each(&mut activity, item))
            .map_err(|e| e.into_failure(path, max_items))?;
        Ok(activity)
    }

    /// `with_status`: also read the server's start (`/api/status`).
    pub(crate) async fn probe(&self, ep: &JupyterEndpoint, with_status: bool) -> ProbeResult {
        let started = Instant::now();
        let fetched = self.fetch(ep, with_status).await;
        let duration = started.elapsed();
        match fetched {
            Ok((activity, server_started, file_work)) => {
                let mut r = activity.into_result(duration, Timestamp::now().unix_seconds());
                r.server_started = server_started;
                r.file_work = Some(file_work);
                r
            }
            Err(failure) => ProbeResult {
                duration,
                failure: Some(failure),
                ..Default::default()
            },
        }
    }

    /// Kernels and terminals together; then the server's file work with
    /// its start (once a life). A probe holds at most two connections, so
    /// a notebook's idle keep-alive pair serves every probe; and the server
    /// has answered the probe's first requests when `/metrics` is read, so
    /// a server that records requests has some to show. File work that
    /// cannot be read does not fail the probe.
    async fn fetch(
        &self,
        ep: &JupyterEndpoint,
        with_status: bool,
    ) -> Result<(Activity, Option<f64>, FileWork), ProbeFailure> {
        let (kernels, terminals) = tokio::join!(
            self.get_array(ep, "api/kernels", self.cfg.max_kernels, Activity::kernel),
            self.get_array(
                ep,
                "api/terminals",
                self.cfg.max_terminals,
                Activity::terminal
            ),
        );
        let kernels = kernels?;
        // A server without the terminals extension answers 404: no terminals.
        let terminals = match terminals {
            Err(f) if f.is_http_status(404) => Activity::default(),
            t => t?,
        };
        let status = async {
            if !with_status {
                return Ok(None);
            }
            let path = "api/status";
            let body = self.get(ep, path).await?;
            let s: ServerStatus = bounded::parse_object(&body, path)?;
            Ok::<_, ProbeFailure>(parse_time(&s.started))
        };
        let (server_started, file_work) = tokio::join!(status, self.file_work(ep));
        Ok((kernels.merge(terminals), server_started?, file_work))
    }
}

fn parse_time(s: &Option<String>) -> Option<f64> {
    s.as_deref()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(Timestamp::unix_seconds)
}

/// What one probe's kernels and terminals add up to, folded one item at a
/// time as they are parsed.
#[derive(Debug, Default)]
struct Activity {
    /// Counts in the order of [`KERNEL_STATES`].
    kernels: [u32; 5],
    terminals: u32,
    /// The latest `last_activity` read, Unix seconds.
    latest: Option<f64>,
    /// A kernel is busy, or an item's activity could not be read: active
    /// at the probe's answer (see [`Activity::into_result`]).
    active_now: bool,
}

impl Activity {
    fn kernel(&mut self, k: Kernel) {
        let i = match k.execution_state.as_deref() {
            Some("idle") => 0,
            Some("busy") => 1,
            Some("starting") => 2,
            Some("dead") => 3,
            _ => 4,
        };
        self.kernels[i] += 1;
        self.active_now |= i == 1;
        self.seen(&k.last_activity);
    }

    fn terminal(&mut self, t: Terminal) {
        self.terminals += 1;
        self.seen(&t.last_activity);
    }

    /// A kernel or terminal whose activity cannot be read counts as active
    /// now: what cannot be judged is not stopped.
    fn seen(&mut self, at: &Option<String>) {
        match parse_time(at) {
            Some(t) => self.latest = max_opt(self.latest, Some(t)),
            None => self.active_now = true,
        }
    }

    fn merge(self, other: Activity) -> Activity {
        Activity {
            kernels: std::array::from_fn(|i| self.kernels[i] + other.kernels[i]),
            terminals: self.terminals + other.terminals,
            latest: max_opt(self.latest, other.latest),
            active_now: self.active_now || other.active_now,
        }
    }

    /// `now`: when the probe answered. A busy kernel is work in progress,
    /// so it makes `now` the last activity: one series then carries every
    /// kind of activity, and the rules need no separate join for busy
    /// kernels.
    fn into_result(self, duration: Duration, now: f64) -> ProbeResult {
        ProbeResult {
            ok: true,
            duration,
            kernels: self.kernels,
            terminals: self.terminals,
            last_activity: max_opt(self.latest, self.active_now.then_some(now)),
            server_started: None,
            file_work: None,
            failure: None,
        }
    }
}

pub(crate) fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(state: &str, at: &str) -> Kernel {
        Kernel {
            execution_state: Some(state.into()),
            last_activity: Some(at.into()),
        }
    }

    fn summarize(
        kernels: Vec<Kernel>,
        terminals: Vec<Terminal>,
        duration: Duration,
        now: f64,
    ) -> ProbeResult {
        let mut k = Activity::default();
        kernels.into_iter().for_each(|x| k.kernel(x));
        let mut t = Activity::default();
        terminals.into_iter().for_each(|x| t.terminal(x));
        k.merge(t).into_result(duration, now)
    }

    #[test]
    fn activity_is_the_latest_kernel_or_terminal_activity() {
        let r = summarize(
            vec![
                k("idle", "2026-01-01T10:00:00Z"),
                k("busy", "2026-01-01T09:00:00Z"),
            ],
            vec![
                Terminal {
                    last_activity: Some("2026-01-01T11:00:00Z".into()),
                },
                Terminal {
                    last_activity: None,
                },
            ],
            Duration::from_millis(3),
            2e9,
        );
        assert!(r.ok);
        assert_eq!(r.kernels, [1, 1, 0, 0, 0]);
        assert_eq!(r.terminals, 2);
        // A busy kernel: activity is the probe's own time.
        assert_eq!(r.last_activity, Some(2e9));
        let quiet = summarize(
            vec![k("idle", "2026-01-01T10:00:00Z")],
            vec![Terminal {
                last_activity: Some("2026-01-01T11:00:00Z".into()),
            }],
            Duration::from_millis(3),
            2e9,
        );
        assert_eq!(
            quiet.last_activity,
            Some(
                "2026-01-01T11:00:00Z"
                    .parse::<Timestamp>()
                    .unwrap()
                    .unix_seconds()
            )
        );
    }
}
