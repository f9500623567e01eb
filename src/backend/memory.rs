//! An in-memory [`Backend`] for the crate's own tests: notebooks in a map,
//! outcomes and failures set by the test, every call recorded.
//!
//! Left alone it behaves as the real backends promise: stops and starts are
//! idempotent, an idle alert's stop honours `unless_started_after`, the
//! opt-out and the "not running" refusal, and an unknown notebook is
//! `NotFound` while the backend is current, `Unavailable` while not.
//! [`MemoryBackend::fail`] and [`MemoryBackend::force_stop`] override that
//! for one operation, to reach the paths the real backends take only under
//! a race or an outage.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Backend, JupyterEndpoint, ScrapeTarget, StopOutcome, StopRequest};
use crate::error::{Error, Result};
use crate::notebook::{NotebookId, NotebookState, Status, StopCause, Timestamp};

/// A backend operation, as recorded and as targeted by a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    List,
    Get,
    Stop,
    Start,
    ScrapeTargets,
    JupyterEndpoints,
}

/// One call the backend received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    List,
    Get(NotebookId),
    Stop {
        id: NotebookId,
        cause: StopCause,
        unless_started_after: Option<Timestamp>,
    },
    Start(NotebookId),
    ScrapeTargets,
    JupyterEndpoints,
}

impl Call {
    pub(crate) fn op(&self) -> Op {
        match self {
            Call::List => Op::List,
            Call::Get(_) => Op::Get,
            Call::Stop { .. } => Op::Stop,
            Call::Start(_) => Op::Start,
            Call::ScrapeTargets => Op::ScrapeTargets,
            Call::JupyterEndpoints => Op::JupyterEndpoints,
        }
    }

    fn id(&self) -> Option<&NotebookId> {
        match self {
            Call::Get(id) | Call::Stop { id, .. } | Call::Start(id) => Some(id),
            _ => None,
        }
    }
}

/// The error an operation fails with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    NotFound,
    Unavailable(String),
    Backend(String),
}

impl Fault {
    fn error(&self, id: Option<&NotebookId>) -> Error {
        match self {
            Fault::NotFound => Error::NotFound(
                id.cloned()
                    .unwrap_or_else(|| NotebookId::new("memory", "unknown")),
            ),
            Fault::Unavailable(m) => Error::Unavailable(m.clone()),
            Fault::Backend(m) => Error::Backend(m.clone()),
        }
    }
}

/// What a forced stop answers, whatever the notebook's state; the state
/// is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForcedStop {
    AlreadyStopped,
    StartedSince,
    OptedOut,
    NotRunning,
}

struct Failure {
    op: Op,
    /// `None`: every notebook.
    id: Option<NotebookId>,
    fault: Fault,
}

#[derive(Default)]
struct Inner {
    notebooks: BTreeMap<NotebookId, NotebookState>,
    failures: Vec<Failure>,
    forced_stops: BTreeMap<NotebookId, ForcedStop>,
    calls: Vec<Call>,
}

pub(crate) struct MemoryBackend {
    inner: Mutex<Inner>,
    synced: watch::Sender<bool>,
    current: AtomicBool,
}

impl MemoryBackend {
    /// A synced, current backend holding `notebooks`.
    pub(crate) fn new(notebooks: impl IntoIterator<Item = NotebookState>) -> Self {
        let inner = Inner {
            notebooks: notebooks.into_iter().map(|n| (n.id.clone(), n)).collect(),
            ..Inner::default()
        };
        MemoryBackend {
            inner: Mutex::new(inner),
            synced: watch::Sender::new(true),
            current: AtomicBool::new(true),
        }
    }

    /// A running notebook that may be auto-stopped, idle after 30 minutes,
    /// started an hour before `now`.
    pub(crate) fn running(namespace: &str, name: &str) -> NotebookState {
        let started = Timestamp(Timestamp::now().0 - time::Duration::hours(1));
        NotebookState {
            id: NotebookId::new(namespace, name),
            status: Status::Running,
            message: None,
            autostop: true,
            idle_after_seconds: 30 * 60,
            owner: None,
            started_at: Some(started),
            stopped_at: None,
            stopped_by: None,
            url: Some(format!("http://{name}.{namespace}.test:8888/")),
        }
    }

    /// Whether [`Backend::synced`] has resolved; until set, it waits.
    pub(crate) fn set_synced(&self, synced: bool) {
        self.synced.send_replace(synced);
    }

    pub(crate) fn set_current(&self, current: bool) {
        self.current.store(current, Ordering::SeqCst);
    }

    /// Adds or replaces a notebook.
    pub(crate) fn put(&self, state: NotebookState) {
        self.lock().notebooks.insert(state.id.clone(), state);
    }

    /// The notebook as the backend holds it now.
    pub(crate) fn state(&self, id: &NotebookId) -> Option<NotebookState> {
        self.lock().notebooks.get(id).cloned()
    }

    /// Every later `op` (on `id`, or on every notebook for `None`) fails
    /// with `fault`.
    pub(crate) fn fail(&self, op: Op, id: Option<&NotebookId>, fault: Fault) {
        self.lock().failures.push(Failure {
            op,
            id: id.cloned(),
            fault,
        });
    }

    /// Every later stop of `id` answers `outcome` and changes nothing.
    pub(crate) fn force_stop(&self, id: &NotebookId, outcome: ForcedStop) {
        self.lock().forced_stops.insert(id.clone(), outcome);
    }

    /// The calls received so far, in order.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls of one kind received so far.
    pub(crate) fn calls_of(&self, op: Op) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.op() == op).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("memory backend lock is never poisoned")
    }

    /// Records `call`; the lock and the error of a failure set for it.
    fn enter(&self, call: Call) -> Result<std::sync::MutexGuard<'_, Inner>> {
        let mut inner = self.lock();
        let failure = inner
            .failures
            .iter()
            .find(|f| f.op == call.op() && (f.id.is_none() || f.id.as_ref() == call.id()))
            .map(|f| f.fault.error(call.id()));
        inner.calls.push(call);
        match failure {
            Some(e) => Err(e),
            None => Ok(inner),
        }
    }

    /// What an unknown notebook is: not found, unless the backend is not
    /// current and the notebook may exist unseen.
    fn unknown(&self, id: &NotebookId) -> Error {
        if self.current() {
            Error::NotFound(id.clone())
        } else {
            Error::Unavailable(format!("{id}: the backend is not current"))
        }
    }
}

fn stop_state(state: &mut NotebookState, req: StopRequest) -> StopOutcome {
    let idle_alert = matches!(req.cause, StopCause::IdleAlert { .. });
    if state.status.is_down() {
        return StopOutcome::AlreadyStopped(state.clone());
    }
    if idle_alert && !state.autostop {
        return StopOutcome::OptedOut(state.clone());
    }
    if super::started_since(state.started_at, req.unless_started_after) {
        return StopOutcome::StartedSince(state.clone());
    }
    if idle_alert && state.status != Status::Running {
        return StopOutcome::NotRunning(state.clone());
    }
    state.status = Status::Stopped;
    state.stopped_at = Some(Timestamp::now());
    state.stopped_by = Some(req.cause);
    StopOutcome::Stopped(state.clone())
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn list(&self) -> Result<Vec<NotebookState>> {
        let inner = self.enter(Call::List)?;
        Ok(inner.notebooks.values().cloned().collect())
    }

    async fn get(&self, id: &NotebookId) -> Result<NotebookState> {
        let inner = self.enter(Call::Get(id.clone()))?;
        inner
            .notebooks
            .get(id)
            .cloned()
            .ok_or_else(|| self.unknown(id))
    }

    async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome> {
        let mut inner = self.enter(Call::Stop {
            id: id.clone(),
            cause: req.cause.clone(),
            unless_started_after: req.unless_started_after,
        })?;
        let forced = inner.forced_stops.get(id).copied();
        let state = inner
            .notebooks
            .get_mut(id)
            .ok_or_else(|| self.unknown(id))?;
        Ok(match forced {
            Some(ForcedStop::AlreadyStopped) => StopOutcome::AlreadyStopped(state.clone()),
            Some(ForcedStop::StartedSince) => StopOutcome::StartedSince(state.clone()),
            Some(ForcedStop::OptedOut) => StopOutcome::OptedOut(state.clone()),
            Some(ForcedStop::NotRunning) => StopOutcome::NotRunning(state.clone()),
            None => stop_state(state, req),
        })
    }

    async fn start(&self, id: &NotebookId) -> Result<NotebookState> {
        let mut inner = self.enter(Call::Start(id.clone()))?;
        let state = inner
            .notebooks
            .get_mut(id)
            .ok_or_else(|| self.unknown(id))?;
        if state.status != Status::Running {
            state.status = Status::Running;
            state.started_at = Some(Timestamp::now());
            state.stopped_at = None;
            state.stopped_by = None;
        }
        Ok(state.clone())
    }

    async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>> {
        let inner = self.enter(Call::ScrapeTargets)?;
        Ok(running_urls(&inner)
            .filter_map(|(id, url)| ScrapeTarget::from_url(id, url))
            .collect())
    }

    async fn jupyter_endpoints(&self) -> Result<Vec<JupyterEndpoint>> {
        let inner = self.enter(Call::JupyterEndpoints)?;
        Ok(running_urls(&inner)
            .map(|(id, url)| JupyterEndpoint {
                id: id.clone(),
                base_url: url.to_string(),
                token: None,
                pods: Vec::new(),
            })
            .collect())
    }

    async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as the backend, so this only ends synced.
        let _ = rx.wait_for(|&s| s).await;
    }

    fn current(&self) -> bool {
        self.current.load(Ordering::SeqCst)
    }
}

fn running_urls(inner: &Inner) -> impl Iterator<Item = (&NotebookId, &str)> {
    inner
        .notebooks
        .values()
        .filter(|n| n.status == Status::Running)
        .filter_map(|n| Some((&n.id, n.url.as_deref()?)))
}
