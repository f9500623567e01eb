//! Where notebooks live. A backend lists notebooks, reports their state, and
//! stops and starts them; it is the source of truth for `stopped_by` and
//! `started_at`, so nbidle itself keeps no state that a backend cannot
//! rebuild.
//!
//! - `local`: notebooks as supervised processes on this machine, each
//!   notebook's processes accounted to it.
//! - `k8s`: notebooks as Kubernetes objects: Kubeflow `Notebook`
//!   resources (`k8s::kubeflow`) and StatefulSets selected by label
//!   (`k8s::statefulset`), through the API server.
//! - `jupyterhub`: the servers of a JupyterHub, default and named, through
//!   the Hub's REST API with a service token.
//! - `person`: who is signed in to nbidle's page, for a stopped local
//!   notebook's page (a trait the page implements).

pub(crate) mod jupyterhub;
pub(crate) mod k8s;
pub mod local;
#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod person;

use async_trait::async_trait;

pub(crate) use person::{Person, PersonGate};

use crate::error::Result;
use crate::notebook::{NotebookId, NotebookState, StopCause, Timestamp};

/// A stop with the condition under which it must not happen.
#[derive(Debug, Clone)]
pub struct StopRequest {
    /// Who or what asks for the stop; the backend records it as
    /// `stopped_by`.
    pub cause: StopCause,
    /// Refuse the stop when the notebook was started after this instant: an
    /// alert about a notebook's previous life must not stop its new one.
    /// Checked by the backend atomically with the stop.
    pub unless_started_after: Option<Timestamp>,
}

/// What a stop found and did. `T` is what it carries: the notebook's state
/// for callers; inside a Kubernetes backend, the object it read or wrote,
/// until it is turned into state.
#[derive(Debug, Clone)]
pub enum StopOutcome<T = NotebookState> {
    /// This call stopped it (it may still be shutting down).
    Stopped(T),
    /// It was stopped or stopping already; nothing was done.
    AlreadyStopped(T),
    /// It was started after `unless_started_after`; nothing was done.
    StartedSince(T),
    /// An idle alert's stop, refused because the object (read fresh, not
    /// from a cache that may lag) says the notebook opted out.
    OptedOut(T),
    /// An idle alert's stop of a notebook that is not running (Kubernetes
    /// backends, whose start time is known only once its pod runs), or whose
    /// state is unknown (a local notebook whose record cannot be read).
    NotRunning(T),
}

impl<T> StopOutcome<T> {
    pub(crate) fn state(&self) -> &T {
        match self {
            StopOutcome::Stopped(s)
            | StopOutcome::AlreadyStopped(s)
            | StopOutcome::StartedSince(s)
            | StopOutcome::OptedOut(s)
            | StopOutcome::NotRunning(s) => s,
        }
    }

    /// The same outcome carrying `f` of what this one carries.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> StopOutcome<U> {
        match self {
            StopOutcome::Stopped(s) => StopOutcome::Stopped(f(s)),
            StopOutcome::AlreadyStopped(s) => StopOutcome::AlreadyStopped(f(s)),
            StopOutcome::StartedSince(s) => StopOutcome::StartedSince(f(s)),
            StopOutcome::OptedOut(s) => StopOutcome::OptedOut(f(s)),
            StopOutcome::NotRunning(s) => StopOutcome::NotRunning(f(s)),
        }
    }
}

/// The stale-start guard: a notebook started after `limit` lives a new
/// life, which an alert about its previous one must not stop. An unknown
/// start or no limit refuses nothing.
pub(crate) fn started_since(started_at: Option<Timestamp>, limit: Option<Timestamp>) -> bool {
    matches!((started_at, limit), (Some(started), Some(limit)) if started > limit)
}

/// A Prometheus scrape target for one notebook's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeTarget {
    /// The notebook, served as the target's `namespace` and `notebook`
    /// labels.
    pub id: NotebookId,
    /// `host:port`
    pub address: String,
    /// `http` or `https`, served as `__scheme__`.
    pub scheme: String,
    /// The path of the notebook's metrics, served as `__metrics_path__`.
    pub metrics_path: String,
}

impl ScrapeTarget {
    /// The target serving `<base_url>metrics`; `None` for an unusable URL.
    pub(crate) fn from_url(id: &NotebookId, base_url: &str) -> Option<ScrapeTarget> {
        let url = reqwest::Url::parse(base_url).ok()?;
        let host = url.host_str()?;
        let port = url.port_or_known_default().unwrap_or(80);
        Some(ScrapeTarget {
            id: id.clone(),
            address: format!("{host}:{port}"),
            scheme: url.scheme().to_string(),
            metrics_path: format!("{}/metrics", url.path().trim_end_matches('/')),
        })
    }
}

/// Where nbidle's exporter reaches a running notebook's Jupyter REST API.
#[derive(Debug, Clone, PartialEq)]
pub struct JupyterEndpoint {
    /// The notebook this endpoint serves.
    pub id: NotebookId,
    /// Base URL ending in `/`.
    pub base_url: String,
    /// The Jupyter token, sent as `Authorization: token …`.
    pub token: Option<String>,
    /// The notebook's pods (Kubernetes backends), published as
    /// `nbidle_notebook_pod_info` so rules can join pod series (cAdvisor
    /// CPU, DCGM GPU) to notebooks.
    pub pods: Vec<String>,
}

/// What one notebook's processes use (the local backend's process
/// accounting), published on `/metrics/notebooks` for the `cpu` guard.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessUsage {
    /// The notebook.
    pub id: NotebookId,
    /// CPU time (user + system) of its processes since nbidle started: the
    /// live ones' and what each exited one had used when last seen. Never
    /// decreases while nbidle runs.
    pub cpu_seconds: f64,
    /// Resident memory of its live processes.
    pub resident_bytes: u64,
    /// Its live processes.
    pub processes: usize,
}

/// A backend's process accounting, as of its last scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessReport {
    /// Per notebook; empty before the first scan.
    pub notebooks: Vec<ProcessUsage>,
    /// Processes found alive after a stop's last SIGKILL, since nbidle
    /// started.
    pub stop_survivors: u64,
    /// How long the last scan took.
    pub scan_seconds: f64,
    /// Processes the last scan read (every process on the machine).
    pub processes_read: usize,
}

/// Where notebooks live and how they are stopped and started: the one
/// interface between nbidle's decisions and a notebook platform.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Every notebook this backend manages, sorted by id.
    async fn list(&self) -> Result<Vec<NotebookState>>;

    /// One notebook; `Error::NotFound` if the backend does not manage it.
    async fn get(&self, id: &NotebookId) -> Result<NotebookState>;

    /// Stops a notebook, keeping its workspace. Idempotent.
    async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome>;

    /// Starts a notebook on its existing workspace. Idempotent.
    async fn start(&self, id: &NotebookId) -> Result<NotebookState>;

    /// Targets Prometheus should scrape (running notebooks only, so a
    /// stopped notebook is not a failing target).
    async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>>;

    /// Jupyter endpoints of the running notebooks, for the activity exporter.
    async fn jupyter_endpoints(&self) -> Result<Vec<JupyterEndpoint>>;

    /// Resolves once the backend knows its notebooks (a Kubernetes backend's
    /// first list, the local backend's start-up recovery); `/readyz`, the
    /// webhook and the REST API answer 503 until then.
    async fn synced(&self) {}

    /// Whether what the backend reports is current now (a Kubernetes
    /// backend: every watch listed and open). `/readyz` fails while not, and
    /// an unknown notebook is then `Unavailable`, not `NotFound`.
    fn current(&self) -> bool {
        true
    }

    /// What the notebooks' processes use, where the backend accounts for
    /// them (the local backend); `None` elsewhere.
    fn processes(&self) -> Option<ProcessReport> {
        None
    }

    /// Called once when nbidle shuts down.
    async fn shutdown(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse::<Timestamp>().unwrap()
    }

    #[test]
    fn the_stale_start_guard_refuses_only_a_start_known_to_be_later() {
        let (before, limit, after) = (
            t("2026-01-01T09:00:00Z"),
            t("2026-01-01T10:00:00Z"),
            t("2026-01-01T11:00:00Z"),
        );
        assert!(started_since(Some(after), Some(limit)));
        assert!(!started_since(Some(limit), Some(limit)));
        assert!(!started_since(Some(before), Some(limit)));
        assert!(!started_since(None, Some(limit)));
        assert!(!started_since(Some(after), None));
    }

    #[test]
    fn an_outcome_keeps_its_kind_when_mapped() {
        let mapped = StopOutcome::StartedSince(2).map(|n| n * 10);
        assert!(matches!(mapped, StopOutcome::StartedSince(20)));
        assert_eq!(*StopOutcome::NotRunning("x").state(), "x");
    }
}
