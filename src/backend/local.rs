//! The embedded default backend: notebooks as child process groups on this
//! machine.
//!
//! - stop: persist "stopped by X at T", SIGTERM the process group, SIGKILL
//!   after the grace period. The workdir is never touched.
//! - start: run the command again in the same workdir.
//! - Per notebook a small JSON record under `<data_dir>/notebooks/` holds the
//!   desired state, the pid (with its kernel start time, so a reused pid is not
//!   mistaken for ours) and who stopped it ([`record`]: atomic, durable
//!   writes). On start-up nbidle adopts a notebook whose process still runs
//!   instead of spawning a second copy, and leaves stopped notebooks stopped.
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
//! Every operation on a notebook holds that notebook's mutex, so a stop and
//! a start (or two deliveries of one alert) never interleave.

mod lock;
mod reaper;
mod record;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{started_since, Backend, JupyterEndpoint, ScrapeTarget, StopOutcome, StopRequest};
use crate::config::{LocalConfig, LocalNotebook};
use crate::error::{Error, Result};
use crate::notebook::{
    IdleBounds, NotebookId, NotebookState, Status, StopCause, Timestamp, LOCAL_NAMESPACE,
};
use lock::DataDirLock;
use reaper::Reaper;
use record::RecordDir;

/// How often a watcher checks a process it did not spawn (adopted after a
/// restart), where the kernel offers no pidfd to wait on.
const POLL: Duration = Duration::from_millis(500);
/// The longest pause between readiness probes of a starting notebook.
const PROBE_MAX_INTERVAL: Duration = Duration::from_secs(5);
/// Readiness probes in flight at once: 10,000 notebooks starting together
/// must not open 10,000 connections or starve the webhook of CPU.
const PROBE_CONCURRENCY: usize = 32;
/// Notebooks recovered at once at start-up. Each recovery waits mostly on
/// its record's file syncs (2-6 ms each on this project's machine); one at a
/// time, 10,000 notebooks would wait a minute for them, many at once share
/// the disk's flushes and the directory's syncs.
const RECOVERY_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Desired {
    Running,
    Stopped,
}

/// What start-up recovery does with one notebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Its process runs: watch it.
    Adopt(i32),
    Spawn,
    /// Stopped, but its process still runs: nbidle died during the stop.
    FinishStop(i32),
    Stopped,
    /// Its record cannot be read: leave it alone.
    Corrupt,
}

/// What survives a restart of nbidle.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Persisted {
    desired: Desired,
    pid: Option<i32>,
    /// Field 22 of /proc/<pid>/stat: tells our process from a reused pid.
    pid_start_ticks: Option<u64>,
    /// The kernel's boot id when the pid was recorded: after a reboot no pid
    /// is ours, whatever its start time.
    #[serde(default)]
    boot_id: Option<String>,
    started_at: Option<Timestamp>,
    stopped_at: Option<Timestamp>,
    stopped_by: Option<StopCause>,
}

impl Default for Persisted {
    fn default() -> Self {
        Persisted {
            desired: Desired::Running,
            pid: None,
            pid_start_ticks: None,
            boot_id: None,
            started_at: None,
            stopped_at: None,
            stopped_by: None,
        }
    }
}

/// A record read at start-up: its content, or why it is unusable.
fn parse_record(read: Result<Option<Vec<u8>>, String>) -> Result<Persisted, String> {
    match read? {
        None => Ok(Persisted::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
    }
}

struct SlotState {
    p: Persisted,
    status: Status,
    message: Option<String>,
    /// Why the record could not be read; while set, `p` means nothing and
    /// the notebook is neither started nor stopped by nbidle on its own.
    corrupt: Option<String>,
    /// Bumped on every spawn and stop, so a watcher of an older process
    /// cannot overwrite the state of a newer one.
    generation: u64,
    /// Turns true when the current process has exited; set by its watcher,
    /// so a stop waits on an event instead of polling /proc.
    exited: Option<watch::Receiver<bool>>,
}

struct Slot {
    id: NotebookId,
    spec: LocalNotebook,
    /// `spec.command[0]`, found on PATH once at open when it is a bare name.
    program: PathBuf,
    state_file: PathBuf,
    /// The record's path inside the data dir, for messages that reach API
    /// clients (which are not told the server's paths).
    record: String,
    log_file: PathBuf,
    inner: Mutex<SlotState>,
}

pub(crate) struct LocalBackend {
    slots: BTreeMap<NotebookId, Arc<Slot>>,
    idle: IdleBounds,
    grace: Duration,
    stop_on_exit: bool,
    http: reqwest::Client,
    probes: Arc<Semaphore>,
    reaper: Arc<Reaper>,
    records: Arc<RecordDir>,
    /// Turns true when start-up recovery has finished.
    recovered: watch::Sender<bool>,
    /// Held by recovery while it runs, so shutdown can wait for it.
    recovery: Mutex<()>,
    tasks: Tasks,
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(Error::HttpClient)?;
        let mut slots = BTreeMap::new();
        let mut programs = HashMap::new();
        for spec in &cfg.notebooks {
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
            let slot = Arc::new(Slot {
                id: id.clone(),
                spec: spec.clone(),
                program,
                state_file,
                record: format!("notebooks/{file_name}"),
                log_file: log_dir.join(format!("{}.log", spec.name)),
                inner: Mutex::new(SlotState {
                    p,
                    status: Status::Unknown,
                    message: None,
                    corrupt,
                    generation: 0,
                    exited: None,
                }),
            });
            slots.insert(id, slot);
        }
        Ok(Arc::new(LocalBackend {
            slots,
            idle,
            grace: cfg.stop_grace_period.0,
            stop_on_exit: cfg.stop_on_exit,
            http,
            probes: Arc::new(Semaphore::new(PROBE_CONCURRENCY)),
            reaper,
            records: Arc::new(RecordDir::new(state_dir)),
            recovered: watch::channel(false).0,
            recovery: Mutex::new(()),
            tasks,
            _lock: lock,
        }))
    }

    /// Brings every notebook to its desired state: adopts live processes,
    /// spawns the missing ones, finishes interrupted stops, leaves stopped
    /// ones. Run once, after [`open`](Self::open).
    pub(crate) async fn recover(self: Arc<Self>) {
        let _running = self.recovery.lock().await;
        let started = Instant::now();
        // One pass over /proc for all notebooks, before any is spawned.
        let marked = tokio::task::spawn_blocking(marked_processes)
            .await
            .unwrap_or_default();
        // Spawns first, then the rest: an adopted process is watched
        // through a pidfd, and every descriptor open in nbidle costs every
        // later spawn a close at exec.
        let marked = Arc::new(marked);
        let slots: Vec<Arc<Slot>> = self.slots.values().cloned().collect();
        let rest: Vec<(Arc<Slot>, Plan)> = stream::iter(slots)
            .map(|slot| {
                let (this, marked) = (self.clone(), marked.clone());
                async move {
                    let mut st = slot.inner.lock().await;
                    let plan = Self::plan(&slot, &mut st, &marked);
                    if plan == Plan::Spawn && !this.tasks.closing.is_cancelled() {
                        this.recover_spawn(&slot, &mut st).await;
                    }
                    drop(st);
                    (slot, plan)
                }
            })
            .buffer_unordered(RECOVERY_CONCURRENCY)
            .filter(|(_, plan)| std::future::ready(*plan != Plan::Spawn))
            .collect()
            .await;
        for (slot, plan) in rest {
            if self.tasks.closing.is_cancelled() {
                break;
            }
            let mut st = slot.inner.lock().await;
            self.recover_rest(&slot, &mut st, plan);
        }
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for slot in self.slots.values() {
            *by_status
                .entry(slot.inner.lock().await.status.as_str())
                .or_default() += 1;
        }
        tracing::info!(
            notebooks = self.slots.len(),
            seconds = started.elapsed().as_secs_f64(),
            ?by_status,
            "local notebooks recovered"
        );
        self.recovered.send_replace(true);
    }

    /// What recovery does with a notebook. Records a process found by its
    /// marker (spawned by an nbidle that died before recording it).
    fn plan(slot: &Slot, st: &mut SlotState, marked: &HashMap<String, (i32, u64)>) -> Plan {
        if let Some(reason) = &st.corrupt {
            let running = marked.get(&marker(slot)).map(|&(pid, _)| pid);
            st.message = Some(corrupt_message(slot, reason, running));
            return Plan::Corrupt;
        }
        let mut live = live_pid(&st.p);
        if live.is_none() {
            if let Some(&(pid, ticks)) = marked.get(&marker(slot)) {
                tracing::info!(notebook = %slot.id, pid, "found an unrecorded notebook process");
                st.p.pid = Some(pid);
                st.p.pid_start_ticks = Some(ticks);
                st.p.boot_id = boot_id();
                live = Some(pid);
            }
        }
        match (st.p.desired, live) {
            (Desired::Running, Some(pid)) => Plan::Adopt(pid),
            (Desired::Running, None) => Plan::Spawn,
            (Desired::Stopped, Some(pid)) => Plan::FinishStop(pid),
            (Desired::Stopped, None) => Plan::Stopped,
        }
    }

    async fn recover_spawn(&self, slot: &Arc<Slot>, st: &mut SlotState) {
        // One notebook that cannot start must not keep nbidle (and every
        // other notebook's stops) down: report it failed.
        if let Err(e) = self.spawn(slot, st).await {
            tracing::error!(notebook = %slot.id, error = %e, "starting notebook");
            st.status = Status::Failed;
            st.message = Some(e.to_string());
        }
    }

    fn recover_rest(&self, slot: &Arc<Slot>, st: &mut SlotState, plan: Plan) {
        match plan {
            Plan::Adopt(pid) => {
                tracing::info!(notebook = %slot.id, pid, "adopting running notebook process");
                st.status = Status::Starting;
                st.generation += 1;
                st.exited = Some(self.watch_adopted(
                    slot.clone(),
                    pid,
                    st.p.pid_start_ticks,
                    st.generation,
                ));
                self.probe_ready(slot.clone(), st.generation);
            }
            Plan::FinishStop(pid) => {
                // nbidle went down in the middle of a stop: finish it.
                st.generation += 1;
                st.status = Status::Stopping;
                let exited =
                    self.watch_adopted(slot.clone(), pid, st.p.pid_start_ticks, st.generation);
                st.exited = Some(exited.clone());
                self.terminate(slot.clone(), pid, exited, st.generation);
            }
            Plan::Stopped => st.status = Status::Stopped,
            Plan::Spawn | Plan::Corrupt => {}
        }
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
            message: st.message.clone(),
            autostop: slot.spec.autostop,
            started_at: st.p.started_at,
            stopped_at: st.p.stopped_at,
            stopped_by: st.p.stopped_by.clone(),
            url: Some(slot.spec.url.clone()),
        }
    }

    /// Writes a notebook's record durably; the caller holds the slot lock.
    async fn persist(&self, slot: &Slot, p: &Persisted) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(p)?;
        let (records, path) = (self.records.clone(), slot.state_file.clone());
        tokio::task::spawn_blocking(move || records.write(&path, &bytes))
            .await
            .map_err(|e| Error::task("persisting state", e))?
            .map_err(|e| Error::backend_io(format!("writing state file {}", slot.record), e))
    }

    /// Spawns the notebook's command; the caller holds the slot lock.
    async fn spawn(&self, slot: &Arc<Slot>, st: &mut SlotState) -> Result<()> {
        let spec = &slot.spec;
        let (workdir, log_file) = (spec.workdir.clone(), slot.log_file.clone());
        let (log, log2) = tokio::task::spawn_blocking(move || prepare(&workdir, &log_file))
            .await
            .map_err(|e| Error::task(format!("preparing {}", slot.id), e))??;
        let mut cmd = std::process::Command::new(&slot.program);
        cmd.arg0(&spec.command[0])
            .args(&spec.command[1..])
            .current_dir(&spec.workdir)
            .envs(&spec.env)
            .env(MARKER_ENV, marker(slot))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a stop signals the server and whatever
            // else runs in its group, and a Ctrl-C aimed at nbidle does not
            // reach it. (Jupyter starts kernels in sessions of their own; it
            // shuts them down on SIGTERM, and ipykernel exits when its parent
            // dies, so SIGKILL after the grace period leaves none behind.)
            .process_group(0);
        let (pid, exit) = self.reaper.spawn(&mut cmd).map_err(|e| {
            Error::backend_io(format!("starting {}: {:?}", slot.id, spec.command[0]), e)
        })?;
        let pid = Some(pid);
        let mut next = st.p.clone();
        next.desired = Desired::Running;
        next.pid = pid;
        next.pid_start_ticks = pid.and_then(proc_start_ticks);
        next.boot_id = boot_id();
        next.started_at = Some(Timestamp::now());
        next.stopped_at = None;
        next.stopped_by = None;
        if let Err(e) = self.persist(slot, &next).await {
            if let Some(pid) = pid {
                signal_group(pid, libc::SIGKILL);
            }
            return Err(e);
        }
        st.p = next;
        st.status = Status::Starting;
        st.message = None;
        st.generation += 1;
        tracing::info!(notebook = %slot.id, pid = ?pid, workdir = %spec.workdir.display(), "notebook started");
        st.exited = Some(self.watch_child(slot.clone(), exit, st.generation));
        self.probe_ready(slot.clone(), st.generation);
        Ok(())
    }

    /// Waits for our own child's exit (from the reaper) and records how it
    /// ended. The receiver turns true when it has exited.
    fn watch_child(
        &self,
        slot: Arc<Slot>,
        exit: oneshot::Receiver<ExitStatus>,
        generation: u64,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        self.tasks.supervise(async move {
            let how = match exit.await {
                Ok(s) => s.to_string(),
                Err(_) => "ended; its exit status was not collected".into(),
            };
            let _ = tx.send(true);
            Self::exited(&slot, generation, how).await;
        });
        rx
    }

    /// Watches a process from an earlier nbidle run, which we cannot wait on.
    fn watch_adopted(
        &self,
        slot: Arc<Slot>,
        pid: i32,
        ticks: Option<u64>,
        generation: u64,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        self.tasks.supervise(async move {
            gone(pid, ticks).await;
            let _ = tx.send(true);
            Self::exited(&slot, generation, "exited".into()).await;
        });
        rx
    }

    async fn exited(slot: &Slot, generation: u64, how: String) {
        let mut st = slot.inner.lock().await;
        // A stop bumps the generation too; the process ending after a stop
        // is recorded through the stop's own generation.
        if st.generation != generation {
            return;
        }
        // Not persisted: the recorded pid is checked against its start time
        // and boot id on every read, so a dead pid is never mistaken for a
        // live one, and skipping the write keeps mass stops cheap.
        st.p.pid = None;
        st.p.pid_start_ticks = None;
        match st.p.desired {
            Desired::Stopped => {
                st.status = Status::Stopped;
                st.message = None;
            }
            Desired::Running => {
                tracing::warn!(notebook = %slot.id, %how, "notebook process ended unexpectedly");
                st.status = Status::Failed;
                st.message = Some(format!("process {how}"));
            }
        }
    }

    /// Marks a starting notebook running once its URL answers HTTP at all.
    fn probe_ready(&self, slot: Arc<Slot>, generation: u64) {
        let (http, probes) = (self.http.clone(), self.probes.clone());
        self.tasks.supervise(async move {
            let url = format!("{}/api", slot.spec.url.trim_end_matches('/'));
            // Back off while the server boots, so a notebook that never
            // answers costs one request every few seconds, not a busy loop.
            let mut wait = Duration::from_millis(250);
            loop {
                let answered = {
                    let _permit = probes.acquire().await;
                    http.get(&url).send().await.is_ok()
                };
                let mut st = slot.inner.lock().await;
                if st.generation != generation || st.status != Status::Starting {
                    return;
                }
                if answered {
                    st.status = Status::Running;
                    return;
                }
                drop(st);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(PROBE_MAX_INTERVAL);
            }
        });
    }

    /// SIGTERM now, SIGKILL after the grace period if the process is still there.
    fn terminate(
        &self,
        slot: Arc<Slot>,
        pid: i32,
        mut exited: watch::Receiver<bool>,
        generation: u64,
    ) {
        signal_group(pid, libc::SIGTERM);
        let grace = self.grace;
        self.tasks.stops.spawn(async move {
            let in_time = tokio::time::timeout(grace, exited.wait_for(|&e| e))
                .await
                .is_ok();
            if !in_time {
                tracing::warn!(notebook = %slot.id, pid, "still running after grace period, sending SIGKILL");
            }
            // Also when the leader exited in time: kernels it left behind in
            // the group die with it.
            signal_group(pid, libc::SIGKILL);
            if !in_time {
                let _ = exited.wait_for(|&e| e).await;
            }
            Self::exited(&slot, generation, "stopped".into()).await;
        });
    }

    /// What a stop starts from for a notebook whose record is corrupt: no
    /// record, and the process of this notebook found by its marker, if any.
    async fn unrecorded(slot: &Slot) -> Persisted {
        let m = marker(slot);
        let found = tokio::task::spawn_blocking(move || marked_processes().remove(&m))
            .await
            .ok()
            .flatten();
        Persisted {
            pid: found.map(|(pid, _)| pid),
            pid_start_ticks: found.map(|(_, ticks)| ticks),
            boot_id: found.and_then(|_| boot_id()),
            ..Persisted::default()
        }
    }

    /// Stops every live process at nbidle's exit (`stop_on_exit`). These are
    /// nbidle's own stops: their watchers are retired first so none reports
    /// its process as ended unexpectedly, and the records keep saying
    /// "running", so the next start-up starts them again.
    async fn stop_all_at_exit(&self) {
        let mut stopping = Vec::new();
        for slot in self.slots.values() {
            let mut st = slot.inner.lock().await;
            let Some(pid) = live_pid(&st.p) else {
                continue;
            };
            st.generation += 1;
            st.status = Status::Stopping;
            st.message = None;
            signal_group(pid, libc::SIGTERM);
            stopping.push((slot.clone(), pid, st.p.pid_start_ticks, st.exited.clone()));
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        let mut killed = 0;
        for (slot, pid, ticks, exited) in &stopping {
            let in_time = match exited.clone() {
                Some(mut rx) => matches!(
                    tokio::time::timeout_at(deadline, rx.wait_for(|&e| e)).await,
                    Ok(Ok(_))
                ),
                None => tokio::time::timeout_at(deadline, gone(*pid, *ticks))
                    .await
                    .is_ok(),
            };
            if !in_time {
                killed += 1;
            }
            signal_group(*pid, libc::SIGKILL);
            slot.inner.lock().await.status = Status::Stopped;
        }
        tracing::info!(
            notebooks = stopping.len(),
            killed_after_grace = killed,
            "notebooks stopped at shutdown (stop_on_exit)"
        );
    }
}

/// Creates the workdir and opens the log for stdout and stderr; blocking.
/// A log that is not a regular file is refused: opening a FIFO would block
/// until someone reads it.
fn prepare(workdir: &Path, log_file: &Path) -> Result<(std::fs::File, std::fs::File)> {
    std::fs::create_dir_all(workdir)
        .map_err(|e| Error::io(format!("creating workdir {}", workdir.display()), e))?;
    let opening = |e| Error::io(format!("opening {}", log_file.display()), e);
    if let Ok(m) = std::fs::symlink_metadata(log_file) {
        if !m.is_file() {
            return Err(Error::Backend(format!(
                "log file {} is not a regular file",
                log_file.display()
            )));
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .map_err(opening)?;
    let log2 = log.try_clone().map_err(opening)?;
    Ok((log, log2))
}

/// Where a bare program name is found on PATH (the notebook's own PATH when
/// its `env` sets one), as execvp would find it. Looked up once: each spawn
/// trying every PATH directory in turn was a tenth of the start-up cost of
/// 10,000 notebooks. Anything else, or nothing found, stays as configured
/// and is looked up at the spawn.
fn find_program(program: &str, path_var: Option<&str>) -> PathBuf {
    let as_is = PathBuf::from(program);
    if program.contains('/') {
        return as_is;
    }
    let Some(path_var) = path_var
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
    else {
        return as_is;
    };
    for dir in std::env::split_paths(&path_var) {
        // A relative entry would be relative to the workdir at the spawn.
        if !dir.is_absolute() {
            return as_is;
        }
        let candidate = dir.join(program);
        let executable = std::fs::metadata(&candidate).is_ok_and(|m| {
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0 && m.is_file()
        });
        if executable {
            return candidate;
        }
    }
    as_is
}

/// The `message` of a notebook whose record cannot be read: what happened,
/// what nbidle did (nothing), and what each way out does.
fn corrupt_message(slot: &Slot, reason: &str, running: Option<i32>) -> String {
    let process = match running {
        Some(pid) => format!(" Its process {pid} still runs and is left alone."),
        None => String::new(),
    };
    format!(
        "state file {record} in the data dir is corrupt ({reason}), so nbidle neither started nor \
         stopped this notebook.{process} A stop (POST /api/v1/notebooks/local/{name}/stop) writes \
         a fresh record saying stopped and stops any process of the notebook; a start is then an \
         ordinary start. Removing the file makes nbidle start the notebook (or adopt its running \
         process) at its next start-up, even if it had been stopped.",
        record = slot.record,
        name = slot.spec.name,
    )
}

#[async_trait]
impl Backend for LocalBackend {
    async fn list(&self) -> Result<Vec<NotebookState>> {
        let mut out = Vec::with_capacity(self.slots.len());
        for slot in self.slots.values() {
            let st = slot.inner.lock().await;
            out.push(self.snapshot(slot, &st));
        }
        Ok(out)
    }

    async fn get(&self, id: &NotebookId) -> Result<NotebookState> {
        let slot = self.slot(id)?;
        let st = slot.inner.lock().await;
        Ok(self.snapshot(slot, &st))
    }

    async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome> {
        let slot = self.slot(id)?;
        let mut st = slot.inner.lock().await;
        let current = match (&st.corrupt, &req.cause) {
            (None, _) => st.p.clone(),
            // An alert cannot know more than nbidle does: it stops nothing.
            (Some(_), StopCause::IdleAlert { .. }) => {
                return Ok(StopOutcome::NotRunning(self.snapshot(slot, &st)))
            }
            // Someone asked for it: the safe direction, and the way out.
            (Some(_), StopCause::User) => Self::unrecorded(slot).await,
        };
        if current.desired == Desired::Stopped {
            return Ok(StopOutcome::AlreadyStopped(self.snapshot(slot, &st)));
        }
        if started_since(current.started_at, req.unless_started_after) {
            return Ok(StopOutcome::StartedSince(self.snapshot(slot, &st)));
        }
        let mut next = current;
        next.desired = Desired::Stopped;
        next.stopped_at = Some(Timestamp::now());
        next.stopped_by = Some(req.cause);
        // Persist before signalling: if nbidle dies now, the restart finishes
        // the stop instead of resurrecting the notebook.
        self.persist(slot, &next).await?;
        if st.corrupt.take().is_some() {
            tracing::info!(notebook = %id, "corrupt state file replaced by a stopped record");
        }
        st.p = next;
        st.generation += 1;
        st.message = None;
        match live_pid(&st.p) {
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
                self.terminate(slot.clone(), pid, exited, st.generation);
            }
            None => st.status = Status::Stopped,
        }
        tracing::info!(notebook = %id, trigger = st.p.stopped_by.as_ref().map(StopCause::trigger), "notebook stopping");
        Ok(StopOutcome::Stopped(self.snapshot(slot, &st)))
    }

    async fn start(&self, id: &NotebookId) -> Result<NotebookState> {
        let slot = self.slot(id)?;
        let mut st = slot.inner.lock().await;
        if let Some(reason) = &st.corrupt {
            return Err(Error::Backend(format!(
                "{id} was not started: its state file {} is corrupt ({reason}), so nbidle cannot \
                 tell whether it was stopped or still runs. Stop it first \
                 (POST /api/v1/notebooks/local/{}/stop writes a fresh record and stops any process \
                 of it), then start it",
                slot.record, slot.spec.name
            )));
        }
        if st.p.desired == Desired::Running
            && matches!(st.status, Status::Running | Status::Starting)
        {
            return Ok(self.snapshot(slot, &st));
        }
        // A stop may still be in progress; the old process must be gone
        // before the new one binds the same port.
        if let Some(pid) = live_pid(&st.p) {
            signal_group(pid, libc::SIGKILL);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while process_alive(pid, st.p.pid_start_ticks) {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Backend(format!(
                        "{id}: previous process {pid} does not exit"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if let Err(e) = self.spawn(slot, &mut st).await {
            // The notebook is down and why must be visible, not "stopped".
            tracing::error!(notebook = %id, error = %e, "starting notebook");
            st.status = Status::Failed;
            st.message = Some(e.to_string());
            return Err(e);
        }
        Ok(self.snapshot(slot, &st))
    }

    async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>> {
        let mut out = Vec::new();
        for slot in self.slots.values() {
            let st = slot.inner.lock().await;
            if st.corrupt.is_some() || st.p.desired != Desired::Running {
                continue;
            }
            // The URL was validated at config load, so this always succeeds.
            out.extend(ScrapeTarget::from_url(&slot.id, &slot.spec.url));
        }
        Ok(out)
    }

    async fn jupyter_endpoints(&self) -> Result<Vec<JupyterEndpoint>> {
        let mut out = Vec::new();
        for slot in self.slots.values() {
            let st = slot.inner.lock().await;
            if st.status != Status::Running {
                continue;
            }
            let base = slot.spec.url.trim_end_matches('/');
            out.push(JupyterEndpoint {
                id: slot.id.clone(),
                base_url: format!("{base}/"),
                token: slot.spec.token.clone(),
                pods: Vec::new(),
            });
        }
        Ok(out)
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

/// Set in every notebook process's environment, so nbidle can find a process
/// it spawned but did not get to record.
const MARKER_ENV: &str = "NBIDLE_NOTEBOOK";

fn marker(slot: &Slot) -> String {
    slot.state_file.display().to_string()
}

fn live_pid(p: &Persisted) -> Option<i32> {
    if p.boot_id.is_none() || p.boot_id != boot_id() {
        return None;
    }
    p.pid.filter(|&pid| process_alive(pid, p.pid_start_ticks))
}

fn boot_id() -> Option<String> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
    })
    .clone()
}

/// Live process-group leaders carrying `MARKER_ENV`, by marker value.
fn marked_processes() -> HashMap<String, (i32, u64)> {
    let prefix = format!("{MARKER_ENV}=");
    let mut found = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Only leaders of their own group (what nbidle spawns), not children.
        let Some((state, ticks, pgid)) = proc_stat(pid) else {
            continue;
        };
        if pgid != pid || state == 'Z' || state == 'X' {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if let Some(value) = env
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        {
            found.insert(String::from_utf8_lossy(value).into_owned(), (pid, ticks));
        }
    }
    found
}

#[allow(unsafe_code)] // killpg
fn signal_group(pgid: i32, sig: libc::c_int) {
    // SAFETY: killpg only sends a signal; a stale pgid fails with ESRCH.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

/// Reads `/proc/<pid>/stat` → (state, starttime, process group).
fn proc_stat(pid: i32) -> Option<(char, u64, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields after the
    // last ')' are fixed: state ppid pgrp ... starttime (22nd field overall).
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let pgid = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start, pgid))
}

fn proc_start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, t, _)| t)
}

/// Alive: exists, not a zombie, the same process we started (start time
/// known and equal), still leading its own process group.
fn process_alive(pid: i32, ticks: Option<u64>) -> bool {
    match (proc_stat(pid), ticks) {
        (Some((state, start, pgid)), Some(t)) => {
            state != 'Z' && state != 'X' && start == t && pgid == pid
        }
        _ => false,
    }
}

/// Resolves when the process is gone. Waits on a pidfd where the kernel has
/// them (Linux 5.3+), so 10,000 adopted notebooks cost nothing while they
/// run, where polling /proc for each would cost 20,000 reads a second.
#[allow(unsafe_code)] // pidfd_open and an AsyncFd over it: see the SAFETY notes
async fn gone(pid: i32, ticks: Option<u64>) {
    if let Some(fd) = pidfd_open(pid) {
        // Checked after opening: a process still ours now is the pidfd's.
        if !process_alive(pid, ticks) {
            return;
        }
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the
        // same descriptor for the AsyncFd's whole life.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        if let Ok(fd) = registered {
            // A pidfd turns readable when its process has exited.
            let _ = fd.readable().await;
            return;
        }
    }
    while process_alive(pid, ticks) {
        tokio::time::sleep(POLL).await;
    }
}

#[allow(unsafe_code)] // the pidfd_open syscall
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // (close-on-exec) or -1; the descriptor is owned by the OwnedFd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn cfg(dir: &Path, names: &[&str]) -> LocalConfig {
        LocalConfig {
            stop_grace_period: HumanDuration(Duration::from_secs(2)),
            stop_on_exit: true,
            notebooks: names
                .iter()
                .map(|n| LocalNotebook {
                    name: n.to_string(),
                    command: vec!["sleep".into(), "300".into()],
                    workdir: dir.join("ws").join(n),
                    url: "http://127.0.0.1:9/".into(),
                    token: None,
                    env: Default::default(),
                    autostop: true,
                    idle_after: None,
                    owner: None,
                })
                .collect(),
        }
    }

    async fn user_stop(b: &LocalBackend, id: &NotebookId) -> StopOutcome {
        let req = StopRequest {
            cause: StopCause::User,
            unless_started_after: None,
        };
        b.stop(id, req).await.unwrap()
    }

    fn bounds() -> IdleBounds {
        IdleBounds {
            default: Duration::from_secs(1800),
            min: None,
            max: None,
        }
    }

    async fn pid_and_ticks(b: &LocalBackend, id: &NotebookId) -> (i32, Option<u64>) {
        let st = b.slot(id).unwrap().inner.lock().await;
        (st.p.pid.unwrap(), st.p.pid_start_ticks)
    }

    #[tokio::test]
    async fn a_process_spawned_but_never_recorded_is_adopted_not_doubled() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("notebooks")).unwrap();
        // As if nbidle died right after spawning: a marked process, no state.
        let marker = data.join("notebooks").join("a.json").display().to_string();
        let mut orphan = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::process_group(
            orphan.arg("300").env(MARKER_ENV, &marker),
            0,
        );
        let mut orphan = orphan.spawn().unwrap();
        let b = LocalBackend::new(&cfg(dir.path(), &["a"]), &data, bounds())
            .await
            .unwrap();
        let id = NotebookId::new(LOCAL_NAMESPACE, "a");
        let (pid, _) = pid_and_ticks(&b, &id).await;
        assert_eq!(
            pid,
            orphan.id() as i32,
            "adopted the orphan instead of spawning"
        );
        user_stop(&b, &id).await;
        assert!(
            orphan.wait().unwrap().code().is_none(),
            "stopped by a signal"
        );
    }

    #[tokio::test]
    async fn a_start_that_cannot_spawn_keeps_the_io_error_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), &["bad"]);
        c.notebooks[0].command = vec!["/nonexistent/jupyter".into()];
        let b = LocalBackend::new(&c, &dir.path().join("data"), bounds())
            .await
            .unwrap();
        let e = b
            .start(&NotebookId::new(LOCAL_NAMESPACE, "bad"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(r#"backend: starting local/bad: "/nonexistent/jupyter": "#),
            "{e}"
        );
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::NotFound),
            "{source:?}"
        );
        b.shutdown().await;
    }

    #[tokio::test]
    async fn a_notebook_that_cannot_start_is_failed_and_the_others_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), &["bad", "good"]);
        c.notebooks[0].command = vec!["/nonexistent/jupyter".into()];
        let b = LocalBackend::new(&c, &dir.path().join("data"), bounds())
            .await
            .unwrap();
        let bad = b
            .get(&NotebookId::new(LOCAL_NAMESPACE, "bad"))
            .await
            .unwrap();
        assert_eq!(bad.status, Status::Failed);
        assert!(bad.message.unwrap().contains("/nonexistent/jupyter"));
        assert_eq!(
            b.get(&NotebookId::new(LOCAL_NAMESPACE, "good"))
                .await
                .unwrap()
                .status,
            Status::Starting
        );
        b.shutdown().await;
    }

    async fn wait_status(b: &LocalBackend, id: &NotebookId, want: Status) -> NotebookState {
        for _ in 0..100 {
            let s = b.get(id).await.unwrap();
            if s.status == want {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{id} never reached {want:?}: {:?}",
            b.get(id).await.unwrap()
        );
    }

    #[tokio::test]
    async fn stop_keeps_workdir_and_survives_restart_and_start_adopts_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), &["a"]);
        let id = NotebookId::new(LOCAL_NAMESPACE, "a");
        let b = LocalBackend::new(&c, &dir.path().join("data"), bounds())
            .await
            .unwrap();
        let (pid, ticks) = pid_and_ticks(&b, &id).await;
        assert!(process_alive(pid, ticks));
        std::fs::write(dir.path().join("ws/a/keep.txt"), "x").unwrap();

        let out = user_stop(&b, &id).await;
        assert!(matches!(out, StopOutcome::Stopped(_)));
        let s = wait_status(&b, &id, Status::Stopped).await;
        assert_eq!(s.stopped_by, Some(StopCause::User));
        assert!(!process_alive(pid, ticks));
        assert!(dir.path().join("ws/a/keep.txt").exists());
        let again = user_stop(&b, &id).await;
        assert!(matches!(again, StopOutcome::AlreadyStopped(_)));

        // A new backend on the same data dir keeps it stopped.
        drop(b);
        let b = LocalBackend::new(&c, &dir.path().join("data"), bounds())
            .await
            .unwrap();
        assert_eq!(b.get(&id).await.unwrap().status, Status::Stopped);

        b.start(&id).await.unwrap();
        let (pid2, ticks2) = pid_and_ticks(&b, &id).await;
        assert!(process_alive(pid2, ticks2));
        // A restart of nbidle adopts the live process instead of spawning another.
        drop(b);
        let b2 = LocalBackend::new(&c, &dir.path().join("data"), bounds())
            .await
            .unwrap();
        assert_eq!(b2.slot(&id).unwrap().inner.lock().await.p.pid, Some(pid2));
        b2.shutdown().await;
        assert!(!process_alive(pid2, ticks2));
    }

    #[tokio::test]
    async fn stop_is_refused_for_a_notebook_started_after_the_alert() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(&cfg(dir.path(), &["a"]), &dir.path().join("data"), bounds())
            .await
            .unwrap();
        let id = NotebookId::new(LOCAL_NAMESPACE, "a");
        let before = Timestamp(Timestamp::now().0 - time::Duration::minutes(5));
        let out = b
            .stop(
                &id,
                StopRequest {
                    cause: StopCause::User,
                    unless_started_after: Some(before),
                },
            )
            .await
            .unwrap();
        assert!(matches!(out, StopOutcome::StartedSince(_)));
        assert!(!b.get(&id).await.unwrap().status.is_down());
        b.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_notebook_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(&cfg(dir.path(), &[]), &dir.path().join("data"), bounds())
            .await
            .unwrap();
        let err = b.get(&NotebookId::new("local", "nope")).await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)));
    }

    #[test]
    fn a_bare_program_is_found_on_path_once() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let path = format!("{}:/usr/bin", dir.path().join("none").display());
        // Not executable yet: not found.
        assert_eq!(find_program("tool", Some(&path)), PathBuf::from("tool"));
        let path = format!("{}:{}", dir.path().join("none").display(), bin.display());
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(find_program("tool", Some(&path)), tool);
        assert_eq!(find_program("./tool", Some(&path)), PathBuf::from("./tool"));
        assert_eq!(
            find_program("tool", Some("rel:/usr/bin")),
            PathBuf::from("tool")
        );
    }

    #[test]
    fn a_record_that_cannot_be_used_says_why() {
        let ok = parse_record(Ok(Some(br#"{"desired":"stopped","pid":null}"#.to_vec()))).unwrap();
        assert_eq!(ok.desired, Desired::Stopped);
        assert_eq!(parse_record(Ok(None)).unwrap().desired, Desired::Running);
        let full = serde_json::to_string(&Persisted {
            desired: Desired::Stopped,
            stopped_by: Some(StopCause::User),
            ..Persisted::default()
        })
        .unwrap();
        let cases: [(&[u8], &str); 5] = [
            (b"", "EOF while parsing"),
            (&full.as_bytes()[..full.len() / 2], "EOF while parsing"),
            (b"\x00\xffgarbage", "expected value"),
            (br#""stopped""#, "invalid type"),
            (b"[]", "invalid length"),
        ];
        for (bytes, want) in cases {
            let e = parse_record(Ok(Some(bytes.to_vec()))).unwrap_err();
            assert!(e.contains(want), "{bytes:?}: {e}");
        }
        assert_eq!(
            parse_record(Err("unreadable: denied".into())).unwrap_err(),
            "unreadable: denied"
        );
    }

    #[tokio::test]
    async fn a_corrupt_record_is_unknown_neither_started_nor_stopped_and_a_user_stop_recovers_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("notebooks")).unwrap();
        std::fs::write(data.join("notebooks/bad.json"), "").unwrap();
        let b = LocalBackend::new(&cfg(dir.path(), &["bad", "good"]), &data, bounds())
            .await
            .unwrap();
        let bad = NotebookId::new(LOCAL_NAMESPACE, "bad");
        let s = b.get(&bad).await.unwrap();
        assert_eq!(s.status, Status::Unknown);
        let msg = s.message.unwrap();
        assert!(
            msg.contains("notebooks/bad.json") && msg.contains("EOF"),
            "{msg}"
        );
        assert!(!msg.contains(&dir.path().display().to_string()), "{msg}");
        assert_eq!(b.slot(&bad).unwrap().inner.lock().await.p.pid, None);
        let good = NotebookId::new(LOCAL_NAMESPACE, "good");
        assert_eq!(b.get(&good).await.unwrap().status, Status::Starting);
        assert!(b
            .scrape_targets()
            .await
            .unwrap()
            .iter()
            .all(|t| t.id == good));

        // An alert stops nothing, a start is refused, the file is untouched.
        let alert = StopRequest {
            cause: StopCause::IdleAlert {
                alertname: "NotebookIdle".into(),
                alert_starts_at: Timestamp::now(),
            },
            unless_started_after: None,
        };
        let out = b.stop(&bad, alert).await.unwrap();
        assert!(matches!(out, StopOutcome::NotRunning(_)), "{out:?}");
        let e = b.start(&bad).await.unwrap_err().to_string();
        assert!(e.contains("/api/v1/notebooks/local/bad/stop"), "{e}");
        assert_eq!(b.get(&bad).await.unwrap().status, Status::Unknown);
        assert_eq!(std::fs::read(data.join("notebooks/bad.json")).unwrap(), b"");

        // A user's stop writes a fresh record; then a start is ordinary.
        assert!(matches!(user_stop(&b, &bad).await, StopOutcome::Stopped(_)));
        let s = b.get(&bad).await.unwrap();
        assert_eq!((s.status, s.message), (Status::Stopped, None));
        let rec: Persisted =
            serde_json::from_slice(&std::fs::read(data.join("notebooks/bad.json")).unwrap())
                .unwrap();
        assert_eq!(rec.desired, Desired::Stopped);
        b.start(&bad).await.unwrap();
        assert_eq!(b.get(&bad).await.unwrap().status, Status::Starting);
        b.shutdown().await;
    }

    #[tokio::test]
    async fn a_failed_start_is_failed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), &["a"]);
        let b = LocalBackend::new(&c, &dir.path().join("data"), bounds())
            .await
            .unwrap();
        let id = NotebookId::new(LOCAL_NAMESPACE, "a");
        user_stop(&b, &id).await;
        wait_status(&b, &id, Status::Stopped).await;
        b.shutdown().await;
        drop(b);
        c.notebooks[0].command = vec!["/nonexistent/jupyter".into()];
        let b = LocalBackend::new(&c, &dir.path().join("data"), bounds())
            .await
            .unwrap();
        let e = b.start(&id).await.unwrap_err().to_string();
        let s = b.get(&id).await.unwrap();
        assert_eq!(s.status, Status::Failed);
        assert_eq!(s.message.as_deref(), Some(e.as_str()));
        assert!(e.contains("/nonexistent/jupyter"), "{e}");
    }

    #[tokio::test]
    async fn open_spawns_nothing_and_synced_waits_for_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let b = LocalBackend::open(
            &cfg(dir.path(), &["a"]),
            &data,
            bounds(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        let id = NotebookId::new(LOCAL_NAMESPACE, "a");
        assert_eq!(b.get(&id).await.unwrap().status, Status::Unknown);
        assert!(!data.join("notebooks/a.json").exists(), "nothing spawned");
        let early = tokio::time::timeout(Duration::from_millis(200), b.synced()).await;
        assert!(early.is_err(), "not synced before recovery");
        // The lock is held from open on.
        assert!(DataDirLock::acquire(&data).is_err());
        b.clone().recover().await;
        tokio::time::timeout(Duration::from_secs(1), b.synced())
            .await
            .expect("synced after recovery");
        assert_eq!(b.get(&id).await.unwrap().status, Status::Starting);
        b.shutdown().await;
    }

    #[tokio::test]
    async fn stop_on_exit_stops_are_stops() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(
            &cfg(dir.path(), &["a", "b"]),
            &dir.path().join("data"),
            bounds(),
        )
        .await
        .unwrap();
        let ids = ["a", "b"].map(|n| NotebookId::new(LOCAL_NAMESPACE, n));
        let mut pids = Vec::new();
        for id in &ids {
            pids.push(pid_and_ticks(&b, id).await);
        }
        b.shutdown().await;
        // Give the processes' watchers time to run: they must not call
        // nbidle's own stops failures.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (id, (pid, ticks)) in ids.iter().zip(pids) {
            assert!(!process_alive(pid, ticks));
            let s = b.get(id).await.unwrap();
            assert_eq!((s.status, s.message), (Status::Stopped, None), "{id}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_behind_a_stop_in_its_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), &["stubborn", "other"]);
        c.stop_grace_period = HumanDuration(Duration::from_secs(3));
        // Ready once the trap is set: the stop's SIGTERM must be ignored.
        c.notebooks[0].command = ["sh", "-c", "trap '' TERM; : > trapped; sleep 1000"]
            .map(String::from)
            .to_vec();
        let b = LocalBackend::new(&c, &dir.path().join("data"), bounds())
            .await
            .unwrap();
        let stubborn = NotebookId::new(LOCAL_NAMESPACE, "stubborn");
        let other = NotebookId::new(LOCAL_NAMESPACE, "other");
        let trapped = dir.path().join("ws/stubborn/trapped");
        for _ in 0..100 {
            if trapped.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(trapped.exists(), "the shell never set its trap");

        let stopping = Instant::now();
        let stop = {
            let b = b.clone();
            let id = stubborn.clone();
            tokio::spawn(async move { user_stop(&b, &id).await })
        };
        // Reads throughout the grace period, until the SIGKILL.
        let mut slowest = Duration::ZERO;
        let mut reads = 0;
        while stopping.elapsed() < Duration::from_millis(2500) {
            let t = Instant::now();
            let all = b.list().await.unwrap();
            let one = b.get(&stubborn).await.unwrap();
            let two = b.get(&other).await.unwrap();
            let waited = t.elapsed();
            slowest = slowest.max(waited);
            assert!(
                waited < Duration::from_millis(200),
                "list() and get() waited {waited:?}, {:?} into the stop",
                t - stopping
            );
            if t - stopping > Duration::from_millis(200) {
                assert!(stop.is_finished(), "the stop waited for its grace period");
                assert_eq!(one.status, Status::Stopping);
                assert_eq!(all[1].status, Status::Stopping, "{all:?}");
            }
            assert!(!two.status.is_down(), "{two:?}");
            reads += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(matches!(stop.await.unwrap(), StopOutcome::Stopped(_)));
        eprintln!("{reads} reads during the grace period, the slowest {slowest:?}");
        wait_status(&b, &stubborn, Status::Stopped).await;
        b.shutdown().await;
    }

    #[tokio::test]
    async fn an_adopted_process_is_watched_to_its_end() {
        let mut p = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::process_group(p.arg("300"), 0);
        let mut p = p.spawn().unwrap();
        let pid = p.id() as i32;
        let ticks = proc_start_ticks(pid);
        let watch = tokio::spawn(gone(pid, ticks));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!watch.is_finished());
        signal_group(pid, libc::SIGTERM);
        // Reaped by its parent (this test), as an adopted process is by
        // whoever its parent is.
        tokio::task::spawn_blocking(move || p.wait())
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), watch)
            .await
            .expect("the exit is seen at once")
            .unwrap();
    }
}
