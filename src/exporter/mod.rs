//! The Jupyter activity exporter: probes every running notebook's REST API
//! on its own schedule and publishes per-notebook facts on
//! `/metrics/notebooks`, for the rules nbidle generates.
//!
//! - Probes use `?no_track_activity=1`, so nbidle's own requests never count
//!   as activity, and run with bounded concurrency and a per-probe timeout;
//!   a scrape reads the last round's snapshot and never waits on a probe.
//! - Activity comes from kernels' and terminals' `last_activity` (kernel
//!   messages, terminal I/O), never from the server's own `last_activity`,
//!   which an open but untouched JupyterLab tab bumps all day by polling.
//!   The server's `started` (`/api/status`) is the floor: a notebook started
//!   outside nbidle is never older than its server.
//! - A kernel in `starting` counts as activity once, at its
//!   `last_activity` (its start); one that no client ever connects to
//!   therefore stops keeping the notebook alive after `idle_after`.
//! - A failed probe exports `nbidle_notebook_probe_success 0` and no
//!   activity, kernel or terminal series: a failure never looks idle.
//! - A notebook's server answers with its user's code, so every response is
//!   read within limits ([`bounded`]): at most `exporter.max_response_bytes`,
//!   at most `exporter.max_kernels` / `max_terminals` items, folded one at a
//!   time. Over a limit is a failed probe, not a truncated list: what was
//!   not read cannot be judged idle. The reason is a label from a fixed
//!   set, logged once when a notebook starts failing (or fails otherwise).
//! - Policy series (`nbidle_notebook_idle_after_seconds`, started time,
//!   owner) come from the backend, so per-notebook thresholds live in data,
//!   and a few rules serve any number of notebooks.
//! - `nbidle_notebook_idle_deadline_timestamp_seconds` = last activity (or
//!   start) + idle time: the one series the default rules compare with
//!   `time()`, so each rule costs one lookup however many notebooks there are.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde::Deserialize;

use crate::backend::{Backend, JupyterEndpoint};
use crate::config::ExporterConfig;
use crate::notebook::{NotebookId, NotebookState, Timestamp};

pub mod bounded;

pub use bounded::{Detail, ProbeFailure, Reason};

/// Kernel execution states, as exported in the `state` label.
pub const KERNEL_STATES: [&str; 5] = ["idle", "busy", "starting", "dead", "other"];

/// What one probe of one notebook found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeResult {
    pub ok: bool,
    pub duration: Duration,
    /// Counts in the order of [`KERNEL_STATES`].
    pub kernels: [u32; 5],
    pub terminals: u32,
    /// Latest kernel or terminal activity, Unix seconds.
    pub last_activity: Option<f64>,
    /// The server's start, when this probe read `/api/status`.
    pub server_started: Option<f64>,
    /// Why the probe failed, when it did.
    pub failure: Option<ProbeFailure>,
}

impl ProbeResult {
    pub fn busy_kernels(&self) -> u32 {
        self.kernels[1]
    }
}

/// Everything exported about one notebook.
#[derive(Debug, Clone)]
pub struct NotebookFacts {
    pub state: NotebookState,
    pub probe: Option<ProbeResult>,
    /// When the probe ran.
    pub probed_at: Option<Timestamp>,
    /// The latest activity seen in this life of the notebook (remembered
    /// across rounds, so closing the last kernel does not forget the work
    /// done in it), or its start; Unix seconds.
    pub last_activity: Option<f64>,
    /// The notebook's pods, for `nbidle_notebook_pod_info`.
    pub pods: Vec<String>,
}

/// One probe's result, when it answered, and the notebook's pods.
type Probed = (ProbeResult, Timestamp, Vec<String>);

/// What the exporter remembers of one notebook's current life.
#[derive(Debug, Clone, Copy)]
struct Life {
    /// The backend's start of this life; another value is another life.
    started_at: Option<Timestamp>,
    /// The latest activity seen in it, Unix seconds.
    last_activity: f64,
    /// The Jupyter server's own start (`/api/status`), fetched once a life.
    server_started: Option<f64>,
}

pub struct Exporter {
    backend: Arc<dyn Backend>,
    cfg: ExporterConfig,
    /// Deadlines further away than this are not exported (see `render`).
    deadline_window: Duration,
    http: reqwest::Client,
    snapshot: RwLock<Arc<Vec<NotebookFacts>>>,
    /// Per notebook: the start of its current life and the latest activity
    /// seen in it.
    memory: std::sync::Mutex<HashMap<NotebookId, Life>>,
    /// Failed probes since start, by [`Reason`] (in the order of
    /// [`Reason::ALL`]).
    failures: [AtomicU64; Reason::ALL.len()],
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
    /// `deadline_window`: how far ahead deadlines are published; see
    /// [`deadline_window`].
    pub fn new(
        backend: Arc<dyn Backend>,
        cfg: ExporterConfig,
        deadline_window: Duration,
    ) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout.0)
            .pool_max_idle_per_host(2)
            .build()
            .expect("a reqwest client with only a timeout set builds");
        Arc::new(Exporter {
            backend,
            cfg,
            deadline_window,
            http,
            snapshot: RwLock::new(Arc::new(Vec::new())),
            memory: Default::default(),
            failures: Default::default(),
        })
    }

    /// The exporter `nbidle serve` runs: `exporter`'s settings, deadlines
    /// published [`deadline_window`] ahead of `autostop.warn_before`, so the
    /// warning rule sees them in time.
    pub fn from_config(backend: Arc<dyn Backend>, cfg: &crate::config::Config) -> Arc<Self> {
        let window = deadline_window(
            cfg.autostop.warn_before.0,
            cfg.exporter.interval.0,
            cfg.autostop.evaluation_interval.0,
        );
        Exporter::new(backend, cfg.exporter.clone(), window)
    }

    /// Probe rounds until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // A round before the backend has listed would publish nothing, and
        // the next comes an interval later: start when there is something.
        tokio::select! {
            _ = &mut shutdown => return,
            _ = self.backend.synced() => {}
        }
        loop {
            let started = Instant::now();
            self.round().await;
            let pause = self.cfg.interval.0.saturating_sub(started.elapsed());
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One probe round over every running notebook; replaces the snapshot.
    pub async fn round(&self) {
        let states = match self.backend.list().await {
            Ok(s) => s,
            Err(e) => {
                // Publish nothing rather than last round's facts: stale
                // numbers could look idle. The memory of activity stays.
                tracing::warn!(error = %crate::logsafe::Escaped(&e), "exporter: listing notebooks");
                *self
                    .snapshot
                    .write()
                    .expect("snapshot lock is never poisoned") = Arc::new(Vec::new());
                return;
            }
        };
        let endpoints = self.backend.jupyter_endpoints().await.unwrap_or_default();
        let probed = endpoints.len();
        // Servers whose start is known for the life the backend reports
        // need no /api/status: one request fewer per probe.
        let known: std::collections::HashSet<NotebookId> = {
            let memory = self.memory.lock().expect("memory lock is never poisoned");
            states
                .iter()
                .filter(|s| {
                    memory
                        .get(&s.id)
                        .is_some_and(|l| l.started_at == s.started_at && l.server_started.is_some())
                })
                .map(|s| s.id.clone())
                .collect()
        };
        let known = &known;
        let mut probes: HashMap<NotebookId, Probed> = stream::iter(endpoints)
            .map(|ep| async move {
                let r = self.probe(&ep, !known.contains(&ep.id)).await;
                (ep.id, (r, Timestamp::now(), ep.pods))
            })
            .buffer_unordered(self.cfg.concurrency)
            .collect()
            .await;
        self.note_failures(&probes);
        let mut memory = self.memory.lock().expect("memory lock is never poisoned");
        let mut facts: Vec<NotebookFacts> = states
            .into_iter()
            .filter(|s| !s.status.is_down())
            .map(|state| {
                let (p, pods) = match probes.remove(&state.id) {
                    Some((r, t, pods)) => (Some((r, t)), pods),
                    None => (None, Vec::new()),
                };
                let seen = p
                    .as_ref()
                    .and_then(|(r, _)| r.ok.then_some(r.last_activity).flatten());
                let life = memory
                    .get(&state.id)
                    .filter(|l| l.started_at == state.started_at)
                    .copied();
                // The server's own start is the floor of its activity: a
                // notebook started outside nbidle (kubectl scale, Kubeflow's
                // UI) is as young as its server, whatever the backend says.
                let server_started = p
                    .as_ref()
                    .and_then(|(r, _)| r.server_started)
                    .or(life.and_then(|l| l.server_started));
                let started = state.started_at.map(Timestamp::unix_seconds);
                let last_activity = [seen, life.map(|l| l.last_activity), started, server_started]
                    .into_iter()
                    .fold(None, max_opt);
                if let Some(t) = last_activity {
                    memory.insert(
                        state.id.clone(),
                        Life {
                            started_at: state.started_at,
                            last_activity: t,
                            server_started,
                        },
                    );
                }
                NotebookFacts {
                    probed_at: p.as_ref().map(|(_, t)| *t),
                    probe: p.map(|(r, _)| r),
                    last_activity,
                    pods,
                    state,
                }
            })
            .collect();
        // Forget notebooks that are gone or down.
        memory.retain(|id, _| facts.iter().any(|f| &f.state.id == id));
        drop(memory);
        facts.sort_by(|a, b| a.state.id.cmp(&b.state.id));
        tracing::debug!(notebooks = facts.len(), probed = probed, "exporter round");
        *self
            .snapshot
            .write()
            .expect("snapshot lock is never poisoned: no panics under it") = Arc::new(facts);
    }

    /// The last round's facts about one notebook.
    pub fn facts(&self, id: &NotebookId) -> Option<NotebookFacts> {
        let snap = self
            .snapshot
            .read()
            .expect("snapshot lock is never poisoned")
            .clone();
        snap.iter().find(|f| &f.state.id == id).cloned()
    }

    /// Counts this round's failed probes and logs each notebook whose probe
    /// now fails where it did not (or failed otherwise) in the last round,
    /// and each that succeeds again: one line per change, not per round.
    fn note_failures(&self, probes: &HashMap<NotebookId, Probed>) {
        let last = self
            .snapshot
            .read()
            .expect("snapshot lock is never poisoned")
            .clone();
        let last_reason = |id: &NotebookId| {
            // The snapshot is sorted by id.
            last.binary_search_by(|f| f.state.id.cmp(id))
                .ok()
                .and_then(|i| last[i].probe.as_ref())
                .and_then(|p| p.failure.as_ref())
                .map(|f| f.reason)
        };
        for (id, (r, _, _)) in probes {
            let before = last_reason(id);
            let Some(f) = &r.failure else {
                if before.is_some() {
                    tracing::info!(notebook = %id, "exporter: probe succeeds again");
                }
                continue;
            };
            self.failures[f.reason.index()].fetch_add(1, Ordering::Relaxed);
            if before != Some(f.reason) {
                let reason = f.reason.as_str();
                tracing::warn!(notebook = %id, reason, failure = %f, "exporter: probe failed");
            }
        }
    }

    /// One probe request's body, read within `exporter.max_response_bytes`.
    async fn get(&self, ep: &JupyterEndpoint, path: &'static str) -> Result<Vec<u8>, ProbeFailure> {
        let mut req = self
            .http
            .get(format!("{}{path}?no_track_activity=1", ep.base_url));
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
        bounded::read_body(resp, self.cfg.max_response_bytes, path).await
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
    async fn probe(&self, ep: &JupyterEndpoint, with_status: bool) -> ProbeResult {
        let started = Instant::now();
        let fetched = self.fetch(ep, with_status).await;
        let duration = started.elapsed();
        match fetched {
            Ok((activity, server_started)) => {
                let mut r = activity.into_result(duration, Timestamp::now().unix_seconds());
                r.server_started = server_started;
                r
            }
            Err(failure) => ProbeResult {
                duration,
                failure: Some(failure),
                ..Default::default()
            },
        }
    }

    /// Kernels and terminals together; the server's start (once a life)
    /// after them, so a probe holds at most two connections.
    async fn fetch(
        &self,
        ep: &JupyterEndpoint,
        with_status: bool,
    ) -> Result<(Activity, Option<f64>), ProbeFailure> {
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
        let server_started = if with_status {
            let path = "api/status";
            let body = self.get(ep, path).await?;
            let s: ServerStatus = bounded::parse_object(&body, path)?;
            parse_time(&s.started)
        } else {
            None
        };
        Ok((kernels.merge(terminals), server_started))
    }

    /// The text exposition of the last round.
    pub fn render(&self) -> String {
        let snap = self
            .snapshot
            .read()
            .expect("snapshot lock is never poisoned")
            .clone();
        let mut out = render(
            &snap,
            Timestamp::now().unix_seconds() + self.deadline_window.as_secs_f64(),
        );
        render_failures(&mut out, &self.failures);
        out
    }
}

fn parse_time(s: &Option<String>) -> Option<f64> {
    s.as_deref()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(Timestamp::unix_seconds)
}

/// How far ahead deadlines must be published for the warning rule to see
/// them in time: `warn_before`, plus two probe rounds and two scrape and
/// evaluation rounds (the generated scrape interval is the evaluation
/// interval) of delay between a probe and the rule.
pub fn deadline_window(
    warn_before: Duration,
    probe_interval: Duration,
    evaluation_interval: Duration,
) -> Duration {
    warn_before + probe_interval * 2 + evaluation_interval * 2
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
            failure: None,
        }
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders facts in the Prometheus text format.
/// Renders facts in the Prometheus text format. Deadlines later than
/// `deadline_horizon` (Unix seconds) are left out: the rules only compare
/// deadlines that are near or past, and every series a rule selects costs
/// Prometheus a lookup at every evaluation, so 10,000 busy notebooks cost
/// the rules nothing.
pub fn render(facts: &[NotebookFacts], deadline_horizon: f64) -> String {
    let mut out = String::with_capacity(256 + facts.len() * 900);
    let labels = |f: &NotebookFacts| {
        format!(
            "namespace=\"{}\",notebook=\"{}\"",
            escape(&f.state.id.namespace),
            escape(&f.state.id.name)
        )
    };
    let mut family = |name: &str, help: &str, rows: &mut dyn Iterator<Item = (String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (l, v) in rows {
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
    };
    family(
        "nbidle_notebook_idle_after_seconds",
        "The notebook's idle time, with its owner; absent when it opted out of auto-stop.",
        &mut facts.iter().filter(|f| f.state.autostop).map(|f| {
            let owner = escape(f.state.owner.as_deref().unwrap_or(""));
            (
                format!("{},owner=\"{owner}\"", labels(f)),
                f.state.idle_after_seconds as f64,
            )
        }),
    );
    family(
        "nbidle_notebook_started_timestamp_seconds",
        "When the notebook was last started.",
        &mut facts
            .iter()
            .filter_map(|f| f.state.started_at.map(|t| (labels(f), t.unix_seconds()))),
    );
    family(
        "nbidle_notebook_pod_info",
        "1 per pod of a notebook (Kubernetes backends): joins pod series such as cAdvisor CPU or DCGM GPU to notebooks.",
        &mut facts.iter().flat_map(|f| {
            f.pods
                .iter()
                .map(move |pod| (format!("{},pod=\"{}\"", labels(f), escape(pod)), 1.0))
        }),
    );
    family(
        "nbidle_notebook_probe_success",
        "1 if the last probe of the notebook's Jupyter API succeeded.",
        &mut facts.iter().filter_map(|f| {
            f.probe
                .as_ref()
                .map(|p| (labels(f), if p.ok { 1.0 } else { 0.0 }))
        }),
    );
    family(
        "nbidle_notebook_probe_failure",
        "1, with the reason, while the last probe of the notebook failed (timeout, connect, http_status, request, too_large, too_many, invalid_json).",
        &mut facts.iter().filter_map(|f| {
            let failure = f.probe.as_ref()?.failure.as_ref()?;
            Some((
                format!("{},reason=\"{}\"", labels(f), failure.reason.as_str()),
                1.0,
            ))
        }),
    );
    family(
        "nbidle_notebook_probe_duration_seconds",
        "How long the last probe took.",
        &mut facts.iter().filter_map(|f| {
            f.probe
                .as_ref()
                .map(|p| (labels(f), p.duration.as_secs_f64()))
        }),
    );
    let ok = |f: &&NotebookFacts| f.probe.as_ref().is_some_and(|p| p.ok);
    family(
        "nbidle_notebook_kernels",
        "Kernels by execution state (idle, busy, starting, dead, other); states with none are left out.",
        &mut facts.iter().filter(ok).flat_map(|f| {
            let p = f.probe.as_ref().expect("filtered on ok probes");
            KERNEL_STATES
                .iter()
                .zip(p.kernels)
                .filter(|(_, n)| *n > 0)
                .map(move |(s, n)| (format!("{},state=\"{s}\"", labels(f)), n as f64))
        }),
    );
    family(
        "nbidle_notebook_terminals",
        "Terminals open.",
        &mut facts.iter().filter(ok).map(|f| {
            (
                labels(f),
                f.probe.as_ref().map_or(0.0, |p| p.terminals as f64),
            )
        }),
    );
    family(
        "nbidle_notebook_idle_deadline_timestamp_seconds",
        "When the notebook becomes idle for its idle time if nothing happens: last activity (or start) + idle time. Absent when it opted out or its probe failed.",
        &mut facts.iter().filter(|f| f.state.autostop).filter(ok).filter_map(|f| {
            let last = f.last_activity?;
            let owner = escape(f.state.owner.as_deref().unwrap_or(""));
            let deadline = last + f.state.idle_after_seconds as f64;
            (deadline <= deadline_horizon).then(|| (format!("{},owner=\"{owner}\"", labels(f)), deadline))
        }),
    );
    family(
        "nbidle_notebook_last_activity_timestamp_seconds",
        "Latest kernel or terminal activity in this life of the notebook (now while a kernel is busy), or its start.",
        &mut facts.iter().filter(ok).filter_map(|f| f.last_activity.map(|t| (labels(f), t))),
    );
    out
}

/// `nbidle_exporter_probe_failures_total`: every reason, zeros included,
/// so a rate over it needs no series to appear first.
fn render_failures(out: &mut String, failures: &[AtomicU64; Reason::ALL.len()]) {
    let name = "nbidle_exporter_probe_failures_total";
    let _ = writeln!(
        out,
        "# HELP {name} Failed probes since nbidle started, by reason.\n# TYPE {name} counter"
    );
    for r in Reason::ALL {
        let n = failures[r.index()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", r.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::Status;

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

    fn facts(probe: Option<ProbeResult>, autostop: bool) -> NotebookFacts {
        NotebookFacts {
            state: NotebookState {
                id: NotebookId::new("local", "nb"),
                status: Status::Running,
                message: None,
                autostop,
                idle_after_seconds: 1800,
                owner: Some("al\"ice".into()),
                started_at: Some("2026-01-01T08:00:00Z".parse::<Timestamp>().unwrap()),
                stopped_at: None,
                stopped_by: None,
                url: None,
            },
            pods: vec!["nb-0".into()],
            last_activity: max_opt(
                probe.as_ref().and_then(|p| p.last_activity),
                Some(
                    "2026-01-01T08:00:00Z"
                        .parse::<Timestamp>()
                        .unwrap()
                        .unix_seconds(),
                ),
            ),
            probe,
            probed_at: None,
        }
    }

    #[test]
    fn a_failed_probe_exports_failure_and_no_activity() {
        let text = render_all(&[facts(
            Some(ProbeResult {
                ok: false,
                ..Default::default()
            }),
            true,
        )]);
        assert!(
            text.contains("nbidle_notebook_probe_success{namespace=\"local\",notebook=\"nb\"} 0")
        );
        assert!(!text.contains("nbidle_notebook_last_activity_timestamp_seconds{"));
        assert!(!text.contains("nbidle_notebook_kernels{"));
        assert!(text.contains("owner=\"al\\\"ice\""));
    }

    #[test]
    fn no_kernels_means_activity_at_start_and_opt_out_exports_no_threshold() {
        let ok = ProbeResult {
            ok: true,
            ..Default::default()
        };
        let text = render_all(&[facts(Some(ok), false)]);
        let start = "2026-01-01T08:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .unix_seconds();
        assert!(text.contains(&format!("nbidle_notebook_last_activity_timestamp_seconds{{namespace=\"local\",notebook=\"nb\"}} {start}")));
        assert!(!text.contains("nbidle_notebook_idle_after_seconds{"));
        assert!(!text.contains(
            "nbidle_notebook_kernels{namespace=\"local\",notebook=\"nb\",state=\"busy\"}"
        ));
    }

    fn render_all(f: &[NotebookFacts]) -> String {
        render(f, f64::INFINITY)
    }

    #[test]
    fn pods_are_published_even_when_the_probe_fails() {
        // The guards' join must hold while Jupyter does not answer: a busy
        // GPU keeps a notebook whose server is too loaded to reply.
        let text = render_all(&[facts(Some(ProbeResult::default()), true)]);
        assert!(text.contains(
            "nbidle_notebook_pod_info{namespace=\"local\",notebook=\"nb\",pod=\"nb-0\"} 1"
        ));
    }

    #[test]
    fn far_deadlines_are_left_out() {
        let start = "2026-01-01T08:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .unix_seconds();
        let f = [facts(
            Some(ProbeResult {
                ok: true,
                ..Default::default()
            }),
            true,
        )];
        assert!(!render(&f, start + 1799.0)
            .contains("nbidle_notebook_idle_deadline_timestamp_seconds{"));
        assert!(
            render(&f, start + 1800.0).contains("nbidle_notebook_idle_deadline_timestamp_seconds{")
        );
    }

    #[test]
    fn the_deadline_is_last_activity_or_start_plus_idle_time() {
        let start = "2026-01-01T08:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .unix_seconds();
        let never_used = render_all(&[facts(
            Some(ProbeResult {
                ok: true,
                ..Default::default()
            }),
            true,
        )]);
        assert!(never_used.contains(&format!(
            "nbidle_notebook_idle_deadline_timestamp_seconds{{namespace=\"local\",notebook=\"nb\",owner=\"al\\\"ice\"}} {}",
            start + 1800.0
        )));
        let used = ProbeResult {
            ok: true,
            last_activity: Some(start + 600.0),
            ..Default::default()
        };
        assert!(render_all(&[facts(Some(used.clone()), true)])
            .contains(&format!("}} {}", start + 2400.0)));
        for text in [
            render_all(&[facts(Some(used), false)]),
            render_all(&[facts(Some(ProbeResult::default()), true)]),
            render_all(&[facts(None, true)]),
        ] {
            assert!(
                !text.contains("nbidle_notebook_idle_deadline_timestamp_seconds{"),
                "{text}"
            );
        }
    }

    /// A fixed notebook list for exercising rounds; the Jupyter side is a
    /// real HTTP server whose answers the test changes between rounds.
    struct OneNotebook(NotebookState, String);

    #[async_trait::async_trait]
    impl Backend for OneNotebook {
        async fn list(&self) -> crate::Result<Vec<NotebookState>> {
            Ok(vec![self.0.clone()])
        }
        async fn get(&self, _: &NotebookId) -> crate::Result<NotebookState> {
            Ok(self.0.clone())
        }
        async fn stop(
            &self,
            id: &NotebookId,
            _: crate::backend::StopRequest,
        ) -> crate::Result<crate::backend::StopOutcome> {
            Err(crate::Error::NotFound(id.clone()))
        }
        async fn start(&self, _: &NotebookId) -> crate::Result<NotebookState> {
            Ok(self.0.clone())
        }
        async fn scrape_targets(&self) -> crate::Result<Vec<crate::backend::ScrapeTarget>> {
            Ok(vec![])
        }
        async fn jupyter_endpoints(&self) -> crate::Result<Vec<JupyterEndpoint>> {
            Ok(vec![JupyterEndpoint {
                id: self.0.id.clone(),
                base_url: self.1.clone(),
                token: None,
                pods: Vec::new(),
            }])
        }
    }

    /// A Jupyter stand-in on loopback whose `/api/kernels` answers what
    /// `kernels` holds at the time; its base URL.
    async fn jupyter_answering(kernels: Arc<RwLock<String>>) -> String {
        use warp::Filter;
        let routes = warp::path!("api" / "kernels")
            .map(move || kernels.read().unwrap().clone())
            .or(warp::path!("api" / "terminals").map(|| "[]".to_string()))
            .or(warp::path!("api" / "status")
                .map(|| r#"{"started":"2026-01-01T08:00:00Z"}"#.to_string()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        format!("http://127.0.0.1:{port}/")
    }

    #[tokio::test]
    async fn at_the_default_intervals_a_deadline_is_published_before_the_warning_is_due() {
        let cfg = crate::config::Config::from_yaml(
            "auth: {webhook_token: wh, api_tokens: [api]}\nbackend:\n  kind: local\n  local:\n    notebooks: []\n",
            std::path::Path::new("/etc/nbidle"),
        )
        .unwrap();
        let warn_before = cfg.autostop.warn_before.0.as_secs_f64();
        // Idle until warn_before plus a minute from now: the warning rule,
        // a scrape and an evaluation behind the exporter, must already see
        // the deadline to fire on time a minute from now.
        let state = facts(None, true).state;
        let deadline = Timestamp::now().unix_seconds() + warn_before + 60.0;
        let last = deadline - state.idle_after_seconds as f64;
        let last = time::OffsetDateTime::from_unix_timestamp(last as i64)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let kernels = Arc::new(RwLock::new(format!(
            r#"[{{"execution_state":"idle","last_activity":"{last}"}}]"#
        )));
        let backend = Arc::new(OneNotebook(state.clone(), jupyter_answering(kernels).await));
        let e = Exporter::from_config(backend, &cfg);
        e.round().await;
        let text = e.render();
        assert!(
            text.contains("nbidle_notebook_idle_deadline_timestamp_seconds{"),
            "a deadline {warn_before}s + 60s ahead is not published:\n{text}"
        );
    }

    #[tokio::test]
    async fn closing_the_last_kernel_does_not_forget_its_activity() {
        let kernels = Arc::new(RwLock::new(
            r#"[{"execution_state":"idle","last_activity":"2026-01-01T09:30:00Z"}]"#.to_string(),
        ));
        let state = facts(None, true).state;
        let backend = Arc::new(OneNotebook(
            state.clone(),
            jupyter_answering(kernels.clone()).await,
        ));
        let cfg = ExporterConfig::default();
        let e = Exporter::new(backend, cfg, Duration::from_secs(300));
        let at_930 = "2026-01-01T09:30:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .unix_seconds();
        e.round().await;
        assert_eq!(e.facts(&state.id).unwrap().last_activity, Some(at_930));
        // The user shuts the kernel down: no kernels, no terminals.
        *kernels.write().unwrap() = "[]".into();
        e.round().await;
        assert_eq!(
            e.facts(&state.id).unwrap().last_activity,
            Some(at_930),
            "remembered"
        );
        let text = render(&e.snapshot.read().unwrap(), f64::INFINITY);
        assert!(text.contains(&format!("}} {}", at_930 + 1800.0)), "{text}");
    }

    #[tokio::test]
    async fn a_server_started_outside_nbidle_is_as_young_as_the_server() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use warp::Filter;
        // The backend's record says 08:00 (the object's creation); the
        // server was started at 10:00 by someone else (kubectl scale).
        let status_reads = Arc::new(AtomicUsize::new(0));
        let reads = status_reads.clone();
        let routes = warp::path!("api" / "kernels")
            .map(|| "[]")
            .or(warp::path!("api" / "terminals").map(|| "[]"))
            .or(warp::path!("api" / "status").map(move || {
                reads.fetch_add(1, Ordering::SeqCst);
                r#"{"started":"2026-01-01T10:00:00Z"}"#
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        let state = facts(None, true).state;
        let backend = Arc::new(OneNotebook(
            state.clone(),
            format!("http://127.0.0.1:{port}/"),
        ));
        let e = Exporter::new(backend, ExporterConfig::default(), Duration::from_secs(300));
        let at_10 = "2026-01-01T10:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .unix_seconds();
        for _ in 0..3 {
            e.round().await;
            assert_eq!(e.facts(&state.id).unwrap().last_activity, Some(at_10));
        }
        // The server's start is read once a life, not at every probe.
        assert_eq!(status_reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_over_a_limit_is_a_failed_probe_with_its_reason() {
        // What /api/kernels answers, changed between rounds.
        let kernels = Arc::new(RwLock::new(String::new()));
        let state = facts(None, true).state;
        let backend = Arc::new(OneNotebook(
            state.clone(),
            jupyter_answering(kernels.clone()).await,
        ));
        let cfg = ExporterConfig {
            max_response_bytes: 16 * 1024,
            max_kernels: 3,
            ..ExporterConfig::default()
        };
        let e = Exporter::new(backend, cfg, Duration::from_secs(300));
        let kernel = r#"{"execution_state":"idle","last_activity":"2026-01-01T09:30:00Z"}"#;
        let array = |n: usize| format!("[{}]", vec![kernel; n].join(","));
        let cases = [
            (array(3), None),
            (array(4), Some(Reason::TooMany)),
            (
                format!("[{}]", " ".repeat(16 * 1024)),
                Some(Reason::TooLarge),
            ),
            (
                "[{\"execution_state\": 1}]".to_string(),
                Some(Reason::InvalidJson),
            ),
            (array(1), None),
        ];
        for (body, reason) in cases {
            *kernels.write().unwrap() = body;
            e.round().await;
            let p = e.facts(&state.id).unwrap().probe.unwrap();
            assert_eq!(p.failure.as_ref().map(|f| f.reason), reason);
            assert_eq!(p.ok, reason.is_none());
            let text = e.render();
            let series = reason.map(|r| {
                format!(
                    "nbidle_notebook_probe_failure{{namespace=\"local\",notebook=\"nb\",reason=\"{}\"}} 1",
                    r.as_str()
                )
            });
            assert_eq!(
                text.contains("nbidle_notebook_probe_failure{"),
                series.is_some(),
                "{text}"
            );
            if let Some(series) = series {
                assert!(text.contains(&series), "{text}");
                assert!(!text.contains("nbidle_notebook_kernels{"), "{text}");
            }
        }
        let text = e.render();
        for (reason, n) in [
            ("too_many", 1),
            ("too_large", 1),
            ("invalid_json", 1),
            ("timeout", 0),
        ] {
            assert!(
                text.contains(&format!(
                    "nbidle_exporter_probe_failures_total{{reason=\"{reason}\"}} {n}\n"
                )),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_server_without_terminals_is_probed_without_them() {
        use warp::Filter;
        // No /api/terminals route: warp answers 404, as a server without
        // the terminals extension does.
        let routes = warp::path!("api" / "kernels")
            .map(|| r#"[{"execution_state":"busy","last_activity":"2026-01-01T09:30:00Z"}]"#)
            .or(warp::path!("api" / "status").map(|| r#"{"started":"2026-01-01T08:00:00Z"}"#));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        let state = facts(None, true).state;
        let backend = Arc::new(OneNotebook(
            state.clone(),
            format!("http://127.0.0.1:{port}/"),
        ));
        let e = Exporter::new(backend, ExporterConfig::default(), Duration::from_secs(300));
        e.round().await;
        let p = e.facts(&state.id).unwrap().probe.unwrap();
        assert!(p.ok, "{:?}", p.failure);
        assert_eq!((p.busy_kernels(), p.terminals), (1, 0));
    }
}
