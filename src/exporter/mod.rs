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
//! - File work is activity: the server's own `/metrics` counts contents
//!   API writes (saves, uploads, new files, renames, deletions), and a count
//!   that changed since the last probe is activity at this probe
//!   (`filework.rs`). When `/metrics` cannot be read, file work is unseen
//!   (`nbidle_notebook_file_work_unseen`; one log line once two probes in a
//!   row could not see it) and the probe still
//!   succeeds: kernels and terminals are never hidden by it.
//! - A kernel in `starting` counts as activity once, at its
//!   `last_activity` (its start); one that no client ever connects to
//!   therefore stops keeping the notebook alive after `idle_after`.
//! - A failed probe exports `nbidle_notebook_probe_success 0` and no
//!   activity, kernel or terminal series: a failure never looks idle.
//! - A notebook's server answers with its user's code, so every response is
//!   read within limits (`bounded.rs`): at most
//!   `exporter.max_response_bytes`, at most `exporter.max_kernels` /
//!   `max_terminals` items, folded one at a time. Over a limit is a failed
//!   probe, not a truncated list: what was not read cannot be judged idle.
//!   The reason is a label from a fixed set, logged once when a notebook
//!   starts failing (or fails otherwise).
//! - Policy series (`nbidle_notebook_idle_after_seconds`, started time,
//!   owner) come from the backend, so per-notebook thresholds live in data,
//!   and a few rules serve any number of notebooks.
//! - `nbidle_notebook_idle_deadline_timestamp_seconds` = last activity (or
//!   start) + idle time: the one series the default rules compare with
//!   `time()`, so each rule costs one lookup however many notebooks there are.
//! - Never earlier than the first answer in this life + `warn_before`: a
//!   notebook nbidle first sees past its idle time (nbidle just deployed,
//!   or restarted) is warned, in Prometheus and in its JupyterLab, before
//!   the stop, instead of being stopped at the first evaluation with no
//!   word to the person at it.
//!
//! Files: `mod.rs` (rounds, the per-life memory, the snapshot), `probe.rs`
//! (one notebook's probe and what its answers add up to), `filework.rs`
//! (contents writes from the server's `/metrics`), `bounded.rs` (reading
//! an answer within limits), `exposition.rs` (the text format, written by
//! hand), `tests.rs` (over a Jupyter stand-in on loopback).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use crate::backend::Backend;
use crate::config::ExporterConfig;
use crate::notebook::{NotebookId, NotebookState, Timestamp};

mod bounded;
mod exposition;
mod filework;
mod probe;

use bounded::Reason;
// Answers to nbidle's pushes (`notify`) are read within limits the same way.
pub(crate) use bounded::{read_body, ProbeFailure};
use probe::max_opt;
use probe::ProbeResult;

/// Everything exported about one notebook.
#[derive(Debug, Clone)]
pub(crate) struct NotebookFacts {
    pub(crate) state: NotebookState,
    pub(crate) probe: Option<ProbeResult>,
    /// When the probe ran.
    pub(crate) probed_at: Option<Timestamp>,
    /// The latest activity seen in this life of the notebook (remembered
    /// across rounds, so closing the last kernel does not forget the work
    /// done in it), or its start; Unix seconds.
    pub(crate) last_activity: Option<f64>,
    /// The notebook's pods, for `nbidle_notebook_pod_info`.
    pub(crate) pods: Vec<String>,
    /// No idle deadline before this (Unix seconds): the first answer of
    /// this life seen by this nbidle + `warn_before`, so no stop comes
    /// before a warning.
    pub(crate) deadline_floor: Option<f64>,
}

impl NotebookFacts {
    /// When the idle stop is due if nothing happens (Unix seconds), as
    /// `nbidle_notebook_idle_deadline_timestamp_seconds` has it: last
    /// activity + idle time, only from a probe that answered and for a
    /// notebook that did not opt out.
    pub(crate) fn idle_deadline(&self) -> Option<f64> {
        let answered = self.probe.as_ref().is_some_and(|p| p.ok);
        (answered && self.state.autostop)
            .then(|| self.due())
            .flatten()
    }

    /// Last activity + idle time, not before [`Self::deadline_floor`];
    /// whatever the probe and the opt-out say.
    pub(crate) fn due(&self) -> Option<f64> {
        let due = self.last_activity? + self.state.idle_after_seconds as f64;
        Some(self.deadline_floor.map_or(due, |floor| due.max(floor)))
    }
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
    /// The server's contents writes at the last probe that read them.
    file_writes: Option<f64>,
    /// Why file work was unseen at the last probe that tried, if it was,
    /// and whether that was logged.
    file_work_unseen: filework::UnseenNote,
    /// When a probe first answered in this life, Unix seconds.
    first_answered: Option<f64>,
}

/// Probes the backend's running notebooks in rounds ([`Exporter::round`])
/// and renders the last round's facts ([`Exporter::render`]); shared
/// behind an `Arc` by the probe loop and the scrape route.
pub struct Exporter {
    backend: Arc<dyn Backend>,
    cfg: ExporterConfig,
    /// Deadlines further away than this are not exported (see `render`).
    deadline_window: Duration,
    /// A life's deadline is never sooner than this after its first answer.
    first_warning: Duration,
    http: reqwest::Client,
    snapshot: RwLock<Arc<Vec<NotebookFacts>>>,
    /// Per notebook: the start of its current life and the latest activity
    /// seen in it.
    memory: std::sync::Mutex<HashMap<NotebookId, Life>>,
    /// Failed probes since start, by [`Reason`] (in the order of
    /// [`Reason::ALL`]).
    failures: [AtomicU64; Reason::ALL.len()],
    /// Counts published rounds, so what follows a round (`notify`) wakes
    /// when one ends and reads [`Exporter::last_round`].
    rounds: tokio::sync::watch::Sender<u64>,
}

impl Exporter {
    /// An exporter over `backend`'s notebooks with `cfg`'s limits;
    /// `deadline_window`: how far ahead deadlines are published (see
    /// [`deadline_window`]); `first_warning`: how long after a life's first
    /// answer its deadline comes at the soonest (`warn_before`). Nothing is
    /// probed before the first round.
    pub fn new(
        backend: Arc<dyn Backend>,
        cfg: ExporterConfig,
        deadline_window: Duration,
        first_warning: Duration,
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
            first_warning,
            http,
            snapshot: RwLock::new(Arc::new(Vec::new())),
            memory: Default::default(),
            failures: Default::default(),
            rounds: tokio::sync::watch::channel(0).0,
        })
    }

    /// The exporter `nbidle serve` runs: `exporter`'s settings, deadlines
    /// published [`deadline_window`] ahead of `autostop.warn_before`, so the
    /// warning rule sees them in time.
    pub(crate) fn from_config(backend: Arc<dyn Backend>, cfg: &crate::config::Config) -> Arc<Self> {
        let window = deadline_window(
            cfg.autostop.warn_before.0,
            cfg.exporter.interval.0,
            cfg.autostop.evaluation_interval.0,
        );
        Exporter::new(
            backend,
            cfg.exporter.clone(),
            window,
            cfg.autostop.warn_before.0,
        )
    }

    /// Probe rounds until `shutdown` resolves.
    pub(crate) async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
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
                self.publish(Vec::new());
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
                let (mut p, pods) = match probes.remove(&state.id) {
                    Some((r, t, pods)) => (Some((r, t)), pods),
                    None => (None, Vec::new()),
                };
                let life = memory
                    .get(&state.id)
                    .filter(|l| l.started_at == state.started_at)
                    .copied();
                let last_writes = life.and_then(|l| l.file_writes);
                let file_work = p
                    .as_mut()
                    .filter(|(r, _)| r.ok)
                    .and_then(|(r, t)| Some((r.file_work.clone()?, r, t.unix_seconds())));
                let writes = file_work.as_ref().and_then(|(w, _, _)| w.writes());
                let file_work_unseen = filework::note(
                    &state.id,
                    life.map(|l| l.file_work_unseen).unwrap_or_default(),
                    file_work.as_ref().map(|(w, _, _)| w),
                );
                // Folded into the probe's own activity, so the webhook's
                // re-check sees file work too.
                if let Some((_, r, at)) = file_work {
                    let work = filework::activity(last_writes, writes, at);
                    r.last_activity = max_opt(r.last_activity, work);
                }
                let seen = p
                    .as_ref()
                    .and_then(|(r, _)| r.ok.then_some(r.last_activity).flatten());
                let first_answered = life.and_then(|l| l.first_answered).or_else(|| {
                    p.as_ref()
                        .filter(|(r, _)| r.ok)
                        .map(|(_, t)| t.unix_seconds())
                });
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
                            file_writes: writes.or(last_writes),
                            file_work_unseen,
                            first_answered,
                        },
                    );
                }
                NotebookFacts {
                    probed_at: p.as_ref().map(|(_, t)| *t),
                    probe: p.map(|(r, _)| r),
                    last_activity,
                    pods,
                    state,
                    deadline_floor: first_answered.map(|t| t + self.first_warning.as_secs_f64()),
                }
            })
            .collect();
        // Forget notebooks that are gone or down.
        memory.retain(|id, _| facts.iter().any(|f| &f.state.id == id));
        drop(memory);
        facts.sort_by(|a, b| a.state.id.cmp(&b.state.id));
        tracing::debug!(notebooks = facts.len(), probed = probed, "exporter round");
        self.publish(facts);
    }

    /// The last round's facts, sorted by notebook (the notebook page reads
    /// them too).
    pub(crate) fn last_round(&self) -> Arc<Vec<NotebookFacts>> {
        self.snapshot
            .read()
            .expect("snapshot lock is never poisoned: no panics under it")
            .clone()
    }

    /// Replaces what scrapes and the webhook's re-check read, and tells
    /// those waiting for a round's end.
    fn publish(&self, facts: Vec<NotebookFacts>) {
        *self
            .snapshot
            .write()
            .expect("snapshot lock is never poisoned: no panics under it") = Arc::new(facts);
        self.rounds.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes once per published round; the round is [`Exporter::last_round`].
    pub(crate) fn rounds(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    /// The last round's facts about one notebook.
    pub(crate) fn facts(&self, id: &NotebookId) -> Option<NotebookFacts> {
        self.last_round()
            .iter()
            .find(|f| &f.state.id == id)
            .cloned()
    }

    /// Counts this round's failed probes and logs each notebook whose probe
    /// now fails where it did not (or failed otherwise) in the last round,
    /// and each that succeeds again: one line per change, not per round.
    fn note_failures(&self, probes: &HashMap<NotebookId, Probed>) {
        let last = self.last_round();
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

    /// The text exposition of the last round.
    pub fn render(&self) -> String {
        let snap = self.last_round();
        let mut out = exposition::render(
            &snap,
            Timestamp::now().unix_seconds() + self.deadline_window.as_secs_f64(),
        );
        filework::render(&mut out, &snap);
        exposition::render_failures(&mut out, &self.failures);
        if let Some(report) = self.backend.processes() {
            exposition::render_processes(&mut out, &report);
        }
        out
    }
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

#[cfg(test)]
mod tests;
