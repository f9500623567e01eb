//! The embedded default backend: notebooks as child process groups on this
//! machine.
//!
//! - stop: persist "stopped by X at T", SIGTERM the server's process group
//!   and every other process of the notebook, SIGKILL whatever is left after
//!   the grace period, and a scan of `/proc` confirms nothing is left. The
//!   workdir is never touched.
//! - start: run the command again in the same workdir.
//! - Per notebook a small JSON record under `<data_dir>/notebooks/` holds the
//!   desired state, the pid (with its kernel start time, so a reused pid is not
//!   mistaken for ours) and who stopped it ([`record`]: atomic, durable
//!   writes). On start-up nbidle adopts a notebook's server that still runs
//!   (the recorded pid, start time and boot id: never another process of the
//!   notebook) instead of spawning a second copy, and leaves stopped
//!   notebooks stopped. Start-up kills nothing.
//! - Every process of a notebook is accounted to it ([`account`]: the
//!   marker in its environment, or its parent's notebook): its CPU seconds,
//!   resident memory and count, for the `cpu` guard, and the set a stop ends.
//! - One nbidle per data dir ([`lock`]).
//! - Start-up has two parts: [`LocalBackend::open`] takes the lock and reads
//!   the records (nothing is spawned, adopted or signalled), and
//!   [`LocalBackend::recover`] brings each notebook to its desired state, in
//!   the background once the listener is bound; [`Backend::synced`] resolves
//!   when it is done.
//! - Every task the backend spawns is tracked (`Tasks`) and has ended when
//!   [`Backend::shutdown`] returns: recovery stops at nbidle's shutdown
//!   token, stops in progress get their SIGKILL, then the watchers end.
//! - A record that cannot be read leaves its notebook `unknown`: neither
//!   started nor stopped, its idle alerts ignored, a start refused; a user's
//!   stop writes a fresh record and stops a process of it that still runs.
//!
//! Every operation on a notebook (a stop, a start, its recovery) holds that
//! notebook's operation lock across its awaits, so a stop and a start (or
//! two deliveries of one alert) never interleave. Reads (`list`, `get`, the
//! scrape targets and Jupyter endpoints: `/metrics`, the API, the exporter)
//! take only the notebook's state, which no one holds across an await, so
//! they never wait for an operation ([`slot`]).
//!
//! # Files
//!
//! - `mod.rs`: [`LocalBackend`], opening the data dir, the [`Backend`]
//!   operations.
//! - `slot.rs`: one notebook's slot: its configuration, its operation lock,
//!   its readable state; its record's content.
//! - `supervise.rs`: spawning, a watcher per process, the readiness probe,
//!   the stop's signals, the stops at nbidle's exit.
//! - `recover.rs`: start-up recovery, from the records and `/proc`.
//! - `procfs.rs`: what is read in `/proc`, waiting on a pidfd, signals.
//! - [`account`]: which processes are each notebook's, and what they use.
//! - `standin.rs`: the stopped-notebook page on a stopped notebook's port
//!   (taken when it goes down, given back before each spawn);
//!   `standin_http.rs` what it answers, `standin_page.rs` its HTML.
//! - [`record`]: the record's atomic, durable writes; [`lock`]: one nbidle
//!   per data dir; [`reaper`]: one SIGCHLD listener for every child.

mod account;
mod lock;
#[cfg(test)]
mod process_tests;
mod procfs;
mod reaper;
mod record;
mod recover;
mod slot;
mod standin;
mod standin_http;
mod standin_page;
mod supervise;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    started_since, Backend, JupyterEndpoint, ProcessReport, ProcessUsage, ScrapeTarget,
    StopOutcome, StopRequest,
};
use crate::config::LocalConfig;
use crate::error::{Error, Result};
use crate::notebook::{
    IdleBounds, NotebookId, NotebookState, Status, StopCause, Timestamp, LOCAL_NAMESPACE,
};
use account::Scanner;
pub use account::{Accounting, Scan};
use lock::DataDirLock;
pub use procfs::MARKER_ENV;
use procfs::{process_alive, signal_group};
use reaper::Reaper;
use record::RecordDir;
use slot::{live_pid, marker, parse_record, Desired, Persisted, Slot, SlotState, StopHandle};
pub(crate) use standin::NbidlePage;
use supervise::find_program;

/// Readiness probes in flight at once: 10,000 notebooks starting together
/// must not open 10,000 connections or starve the webhook of CPU.
const PROBE_CONCURRENCY: usize = 32;

pub(crate) struct LocalBackend {
    slots: BTreeMap<NotebookId, Arc<Slot>>,
    idle: IdleBounds,
    grace: Duration,
    stop_on_exit: bool,
    scanner: Arc<Scanner>,
    /// Time between the scans that keep the accounting current.
    scan_interval: Duration,
    /// Processes found alive after a stop's last SIGKILL, since start.
    survivors: Arc<AtomicU64>,
    http: reqwest::Client,
    probes: Arc<Semaphore>,
    reaper: Arc<Reaper>,
    records: Arc<RecordDir>,
    /// Turns true when start-up recovery has finished.
    recovered: watch::Sender<bool>,
    /// Held by recovery while it runs, so shutdown can wait for it.
    recovery: Mutex<()>,
    tasks: Tasks,
    /// `stopped_page` of the config, and whether a visit wakes each
    /// notebook (by index).
    stopped_page: bool,
    wakes: Vec<bool>,
    /// Connections all stopped pages serve at once, so 1,000 stopped
    /// notebooks cannot hold 1,000 × a page's own cap of descriptors.
    page_connections: Arc<Semaphore>,
    _lock: DataDirLock,
}

/// The backend's tasks, and what ends them.
struct Tasks {
    /// Cancelled when nbidle's shutdown begins (a child of its token), or
    /// by [`Backend::shutdown`]: recovery starts no further notebook.
    closing: CancellationToken,
    /// Stops in progress, each with its SIGKILL after the grace period:
    /// awaited at shutdown, so none is left half done.
    stops: TaskTracker,
    /// Watchers, readiness probes and the SIGCHLD listener. They report the
    /// exits that stops wait for, so they end (`retired`) only after the
    /// stops, at the end of shutdown.
    supervision: TaskTracker,
    retired: CancellationToken,
}

impl Tasks {
    fn new(shutdown: &CancellationToken) -> Self {
        Tasks {
            closing: shutdown.child_token(),
            stops: TaskTracker::new(),
            supervision: TaskTracker::new(),
            retired: CancellationToken::new(),
        }
    }

    /// Runs `task` until it ends or supervision is retired.
    fn supervise(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.supervision
            .spawn(self.retired.clone().run_until_cancelled_owned(task));
    }

    /// Awaits the stops in progress, then retires supervision and awaits it.
    async fn finish(&self) {
        self.stops.close();
        self.stops.wait().await;
        self.retired.cancel();
        self.supervision.close();
        self.supervision.wait().await;
    }
}

impl LocalBackend {
    /// [`open`](Self::open) and [`recover`](Self::recover) in one step, for
    /// a backend that only [`Backend::shutdown`] shuts down (the tests'; the
    /// server opens, binds, then recovers).
    #[cfg(test)]
    pub(crate) async fn new(
        cfg: &LocalConfig,
        data_dir: &Path,
        idle: IdleBounds,
    ) -> Result<Arc<Self>> {
        let backend = Self::open(cfg, data_dir, idle, &CancellationToken::new()).await?;
        backend.clone().recover().await;
        Ok(backend)
    }

    /// Takes the data dir's lock, then reads every notebook's record.
    /// Spawns, adopts and signals nothing: a second nbidle on the same data
    /// dir fails here, before it can touch a notebook. A record that cannot
    /// be read makes that notebook `unknown`, not an error. Recovery stops
    /// once `shutdown` is cancelled.
    pub(crate) async fn open(
        cfg: &LocalConfig,
        data_dir: &Path,
        idle: IdleBounds,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Self>> {
        let (cfg, data_dir) = (cfg.clone(), data_dir.to_path_buf());
        let tasks = Tasks::new(shutdown);
        let reaper = Reaper::start(&tasks.supervision, tasks.retired.clone())
            .map_err(|e| Error::io("listening for SIGCHLD", e))?;
        tokio::task::spawn_blocking(move || {
            Self::open_blocking(&cfg, &data_dir, idle, reaper, tasks)
        })
        .await
        .map_err(|e| Error::task("opening the data dir", e))?
    }

    fn open_blocking(
        cfg: &LocalConfig,
        data_dir: &Path,
        idle: IdleBounds,
        reaper: Arc<Reaper>,
        tasks: Tasks,
    ) -> Result<Arc<Self>> {
        let lock = DataDirLock::acquire(data_dir)?;
        let state_dir = data_dir.join("notebooks");
        let log_dir = data_dir.join("logs");
        for d in [&state_dir, &log_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        // Readiness probes only. No idle connection is kept: after a stop,
        // a pooled one would hold a slot of the notebook's stopped page.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(Error::HttpClient)?;
        let mut slots = BTreeMap::new();
        let mut programs = HashMap::new();
        for (index, spec) in cfg.notebooks.iter().enumerate() {
            let id = NotebookId::new(LOCAL_NAMESPACE, &spec.name);
            let file_name = format!("{}.json", spec.name);
            let state_file = state_dir.join(&file_name);
            let (p, corrupt) = match parse_record(record::read(&state_file)) {
                Ok(p) => (p, None),
                Err(reason) => {
                    tracing::error!(notebook = %id, file = %state_file.display(), %reason,
                        "corrupt state file: the notebook is left unknown, neither started nor stopped");
                    (Persisted::default(), Some(reason))
                }
            };
            let path_var = spec.env.get("PATH").cloned();
            let program = programs
                .entry((spec.command[0].clone(), path_var))
                .or_insert_with_key(|(program, path_var)| {
                    find_program(program, path_var.as_deref())
                })
                .clone();
            let slot = Arc::new(Slot::new(
                id.clone(),
                index,
                spec.clone(),
                program,
                state_file,
                format!("notebooks/{file_name}"),
                log_dir.join(format!("{}.log", spec.name)),
                SlotState {
                    p,
                    status: Status::Unknown,
                    message: None,
                    corrupt,
                    generation: 0,
                    exited: None,
                    stopping: None,
                },
            ));
            slots.insert(id, slot);
        }
        let mut by_index: Vec<&Arc<Slot>> = slots.values().collect();
        by_index.sort_by_key(|s| s.index);
        let scanner = Arc::new(Scanner::new(Accounting::new(
            by_index.into_iter().map(|s| marker(s)),
        )));
        Ok(Arc::new(LocalBackend {
            slots,
            idle,
            grace: cfg.stop_grace_period.0,
            stop_on_exit: cfg.stop_on_exit,
            scanner,
            scan_interval: cfg.process_scan_interval.0,
            survivors: Arc::new(AtomicU64::new(0)),
            http,
            probes: Arc::new(Semaphore::new(PROBE_CONCURRENCY)),
            reaper,
            records: Arc::new(RecordDir::new(state_dir)),
            recovered: watch::channel(false).0,
            recovery: Mutex::new(()),
            tasks,
            stopped_page: cfg.stopped_page,
            wakes: cfg
                .notebooks
                .iter()
                .map(|nb| cfg.wakes_on_visit(nb))
                .collect(),
            page_connections: Arc::new(Semaphore::new(standin::MAX_CONNECTIONS_ALL)),
            _lock: lock,
        }))
    }

    fn slot(&self, id: &NotebookId) -> Result<&Arc<Slot>> {
        self.slots
            .get(id)
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    fn snapshot(&self, slot: &Slot, st: &SlotState) -> NotebookState {
        NotebookState {
            idle_after_seconds: self
                .idle
                .effective(slot.spec.idle_after.map(|d| d.0))
                .as_secs(),
            owner: slot.spec.owner.clone(),
            id: slot.id.clone(),
            status: st.status,
            message: match (st.message.clone(), slot.standin.note()) {
                (Some(m), Some(n)) => Some(format!("{m}; {n}")),
                (m, n) => m.or(n),
            },
            autostop: slot.spec.autostop,
            started_at: st.p.started_at,
            stopped_at: st.p.stopped_at,
            stopped_by: st.p.stopped_by.clone(),
            url: Some(slot.spec.url.clone()),
        }
    }

    /// The notebook's state as reads see it now.
    fn state_of(&self, slot: &Slot) -> NotebookState {
        slot.with(|st| self.snapshot(slot, st))
    }

    /// Writes a notebook's record durably; the caller holds the notebook's
    /// operation lock.
    async fn persist(&self, slot: &Slot, p: &Persisted) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(p)?;
        let (records, path) = (self.records.clone(), slot.state_file.clone());
        tokio::task::spawn_blocking(move || records.write(&path, &bytes))
            .await
            .map_err(|e| Error::task("persisting state", e))?
            .map_err(|e| Error::backend_io(format!("writing state file {}", slot.record), e))
    }

    /// Puts a stop that has been persisted into effect: the state says
    /// stopping (or stopped, with no process left) and the processes get
    /// SIGTERM. `others`: processes of the notebook other than a live
    /// server still run. The caller holds the notebook's operation lock.
    fn stop_persisted(&self, slot: &Arc<Slot>, next: Persisted, others: bool) -> NotebookState {
        let live = live_pid(&next);
        slot.with(|st| {
            if st.corrupt.take().is_some() {
                tracing::info!(notebook = %slot.id, "corrupt state file replaced by a stopped record");
            }
            st.p = next;
            st.generation += 1;
            st.message = None;
            match live {
                Some(pid) => {
                    st.status = Status::Stopping;
                    // Every live process has a watcher; should one be missing,
                    // watch it now rather than leave the process running.
                    let exited = match st.exited.clone() {
                        Some(rx) => rx,
                        None => {
                            let rx = self.watch_adopted(
                                slot.clone(),
                                pid,
                                st.p.pid_start_ticks,
                                st.generation,
                            );
                            st.exited = Some(rx.clone());
                            rx
                        }
                    };
                    st.stopping =
                        Some(self.terminate(slot.clone(), Some((pid, exited)), st.generation));
                }
                None if others => {
                    st.status = Status::Stopping;
                    st.stopping = Some(self.terminate(slot.clone(), None, st.generation));
                }
                None => {
                    st.status = Status::Stopped;
                    slot.standin.hold();
                }
            }
            tracing::info!(notebook = %slot.id, trigger = st.p.stopped_by.as_ref().map(StopCause::trigger), "notebook stopping");
            self.snapshot(slot, st)
        })
    }

    /// Whether processes of the notebook run, by a fresh scan.
    async fn has_processes(&self, slot: &Slot) -> bool {
        let scan = self.scanner.scan_notebook(slot.index).await;
        scan.usage(slot.index).2 > 0
    }

    /// A user's stop of a stopped notebook whose processes still run
    /// (left over by an nbidle that died during a stop, or found at
    /// start-up and left alone): they are ended now. The caller holds the
    /// notebook's operation lock.
    async fn end_leftovers(&self, slot: &Arc<Slot>) {
        if slot.with(|st| st.stopping.as_ref().is_some_and(StopHandle::running)) {
            return;
        }
        if !self.has_processes(slot).await {
            return;
        }
        tracing::info!(notebook = %slot.id, "stopped notebook's processes still run: ending them");
        slot.with(|st| {
            st.generation += 1;
            st.status = Status::Stopping;
            st.stopping = Some(self.terminate(slot.clone(), None, st.generation));
        });
    }

    /// Waits for a stop in progress to end, after telling it to skip the
    /// rest of its grace period. The caller holds the operation lock.
    async fn hurry_stop(&self, slot: &Slot) -> Result<()> {
        let Some(mut h) = slot.with(|st| st.stopping.clone()) else {
            return Ok(());
        };
        h.hurry.cancel();
        // The sweep after the SIGKILL takes a few scans; a process that
        // survives them is logged by the stop, which ends regardless.
        let bound = Duration::from_secs(30);
        let ended = tokio::time::timeout(bound, h.done.wait_for(|&d| d))
            .await
            .is_ok();
        match ended {
            true => Ok(()),
            false => Err(Error::Backend(format!(
                "{}: the stop in progress did not end within {bound:?}",
                slot.id
            ))),
        }
    }

    /// A scan of `/proc` that started after this call, on the blocking pool.
    pub(super) async fn scan(&self) -> Arc<Scan> {
        self.scanner.scan().await
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn list(&self) -> Result<Vec<NotebookState>> {
        Ok(self.slots.values().map(|s| self.state_of(s)).collect())
    }

    async fn get(&self, id: &NotebookId) -> Result<NotebookState> {
        Ok(self.state_of(self.slot(id)?))
    }

    async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome> {
        let slot = self.slot(id)?;
        let _op = slot.operation().await;
        let (recorded, corrupt) = slot.with(|st| (st.p.clone(), st.corrupt.is_some()));
        let current = match (corrupt, &req.cause) {
            (false, _) => recorded,
            // An alert cannot know more than nbidle does: it stops nothing.
            (true, StopCause::IdleAlert { .. }) => {
                return Ok(StopOutcome::NotRunning(self.state_of(slot)))
            }
            // Someone asked for it: the safe direction, and the way out. No
            // server is known; the stop ends every process of the notebook.
            (true, StopCause::User { .. }) => Persisted::default(),
        };
        if current.desired == Desired::Stopped {
            if matches!(req.cause, StopCause::User { .. }) {
                self.end_leftovers(slot).await;
            }
            return Ok(StopOutcome::AlreadyStopped(self.state_of(slot)));
        }
        if started_since(current.started_at, req.unless_started_after) {
            return Ok(StopOutcome::StartedSince(self.state_of(slot)));
        }
        let mut next = current;
        next.desired = Desired::Stopped;
        next.stopped_at = Some(Timestamp::now());
        next.stopped_by = Some(req.cause);
        // Persist before signalling: if nbidle dies now, the restart finishes
        // the stop instead of resurrecting the notebook.
        self.persist(slot, &next).await?;
        // Without a live server, only a scan tells whether anything is left
        // to end (a job of a notebook whose server died).
        let others = live_pid(&next).is_none() && self.has_processes(slot).await;
        Ok(StopOutcome::Stopped(
            self.stop_persisted(slot, next, others),
        ))
    }

    async fn start(&self, id: &NotebookId) -> Result<NotebookState> {
        let slot = self.slot(id)?;
        let _op = slot.operation().await;
        let (recorded, corrupt, status) =
            slot.with(|st| (st.p.clone(), st.corrupt.clone(), st.status));
        if let Some(reason) = corrupt {
            return Err(Error::Backend(format!(
                "{id} was not started: its state file {} is corrupt ({reason}), so nbidle cannot \
                 tell whether it was stopped or still runs. Stop it first \
                 (POST /api/v1/notebooks/local/{}/stop writes a fresh record and stops any process \
                 of it), then start it",
                slot.record, slot.spec.name
            )));
        }
        if recorded.desired == Desired::Running
            && matches!(status, Status::Running | Status::Starting)
        {
            return Ok(self.state_of(slot));
        }
        // A stop may still be in progress; the old processes must be gone
        // before the new server binds the same port, and the stop's last
        // sweep must not reach the new life's processes.
        self.hurry_stop(slot).await?;
        if let Some(pid) = live_pid(&recorded) {
            signal_group(pid, libc::SIGKILL);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while process_alive(pid, recorded.pid_start_ticks) {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Backend(format!(
                        "{id}: previous process {pid} does not exit"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if let Err(e) = self.spawn(slot).await {
            // The notebook is down and why must be visible, not "stopped".
            tracing::error!(notebook = %id, error = %e, "starting notebook");
            slot.with(|st| {
                st.status = Status::Failed;
                st.message = Some(e.to_string());
            });
            slot.standin.hold();
            return Err(e);
        }
        Ok(self.state_of(slot))
    }

    fn processes(&self) -> Option<ProcessReport> {
        let scan = self.scanner.last();
        // Nothing before the first scan: a counter published as 0 and then
        // at its value would look like a burst of CPU.
        let notebooks = if !scan.scanned() {
            Vec::new()
        } else {
            // A stopped notebook's series only while something of it runs:
            // 10,000 stopped notebooks cost no series.
            self.slots
                .values()
                .filter_map(|slot| {
                    let (cpu_seconds, resident_bytes, processes) = scan.usage(slot.index);
                    let stopped = slot.with(|st| st.status == Status::Stopped);
                    (!stopped || processes > 0).then(|| ProcessUsage {
                        id: slot.id.clone(),
                        cpu_seconds,
                        resident_bytes,
                        processes,
                    })
                })
                .collect()
        };
        let (full_scan, processes_read) = self.scanner.last_full();
        Some(ProcessReport {
            notebooks,
            stop_survivors: self.survivors.load(Ordering::Relaxed),
            scan_seconds: full_scan.as_secs_f64(),
            processes_read,
        })
    }

    async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>> {
        let running = self.slots.values().filter(|slot| {
            slot.with(|st| st.corrupt.is_none() && st.p.desired == Desired::Running)
        });
        // The URL was validated at config load, so this always succeeds.
        Ok(running
            .filter_map(|slot| ScrapeTarget::from_url(&slot.id, &slot.spec.url))
            .collect())
    }

    async fn jupyter_endpoints(&self) -> Result<Vec<JupyterEndpoint>> {
        let running = self
            .slots
            .values()
            .filter(|slot| slot.with(|st| st.status == Status::Running));
        Ok(running
            .map(|slot| JupyterEndpoint {
                id: slot.id.clone(),
                base_url: format!("{}/", slot.spec.url.trim_end_matches('/')),
                token: slot.spec.token.clone(),
                pods: Vec::new(),
            })
            .collect())
    }

    /// Resolves once start-up recovery has brought every notebook to its
    /// desired state.
    async fn synced(&self) {
        let mut rx = self.recovered.subscribe();
        let _ = rx.wait_for(|&done| done).await;
    }

    async fn shutdown(&self) {
        // No notebook is spawned once shutdown begins; wait for the ones
        // recovery is on, so none starts after the stops below.
        self.tasks.closing.cancel();
        drop(self.recovery.lock().await);
        if self.stop_on_exit {
            self.stop_all_at_exit().await;
        }
        self.tasks.finish().await;
    }
}
