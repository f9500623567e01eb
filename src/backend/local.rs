//! The embedded default backend: notebooks as child process groups on this
//! machine.
//!
//! - stop: persist "stopped by X at T", SIGTERM the process group, SIGKILL
//!   after the grace period. The workdir is never touched.
//! - start: run the command again in the same workdir.
//! - Per notebook a small JSON file under `<data_dir>/notebooks/` records the
//!   desired state, the pid (with its kernel start time, so a reused pid is not
//!   mistaken for ours) and who stopped it. On start-up nbidle adopts a
//!   notebook whose process still runs instead of spawning a second copy, and
//!   leaves stopped notebooks stopped.
//!
//! Every operation on a notebook holds that notebook's mutex, so a stop and
//! a start (or two deliveries of one alert) never interleave.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use super::{Backend, JupyterEndpoint, ScrapeTarget, StopOutcome, StopRequest};
use crate::config::{LocalConfig, LocalNotebook};
use crate::error::{Error, Result};
use crate::notebook::{
    IdleBounds, NotebookId, NotebookState, Status, StopCause, Timestamp, LOCAL_NAMESPACE,
};

/// How often a watcher checks a process it did not spawn (adopted after a
/// restart).
const POLL: Duration = Duration::from_millis(500);
/// The longest pause between readiness probes of a starting notebook.
const PROBE_MAX_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Desired {
    Running,
    Stopped,
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

struct SlotState {
    p: Persisted,
    status: Status,
    message: Option<String>,
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
    state_file: PathBuf,
    log_file: PathBuf,
    inner: Mutex<SlotState>,
}

pub struct LocalBackend {
    slots: BTreeMap<NotebookId, Arc<Slot>>,
    idle: IdleBounds,
    grace: Duration,
    stop_on_exit: bool,
    http: reqwest::Client,
}

impl LocalBackend {
    /// Loads persisted state and brings every notebook to its desired state:
    /// adopts live processes, spawns the missing ones, leaves stopped ones.
    pub async fn new(cfg: &LocalConfig, data_dir: &Path, idle: IdleBounds) -> Result<Arc<Self>> {
        let state_dir = data_dir.join("notebooks");
        let log_dir = data_dir.join("logs");
        for d in [&state_dir, &log_dir] {
            tokio::fs::create_dir_all(d)
                .await
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Error::Backend(format!("http client: {e}")))?;
        let mut slots = BTreeMap::new();
        for spec in &cfg.notebooks {
            let id = NotebookId::new(LOCAL_NAMESPACE, &spec.name);
            let state_file = state_dir.join(format!("{}.json", spec.name));
            let p = match tokio::fs::read(&state_file).await {
                Ok(bytes) => serde_json::from_slice::<Persisted>(&bytes).map_err(|e| {
                    Error::Backend(format!(
                        "state file {} is corrupt ({e}); fix or remove it",
                        state_file.display()
                    ))
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
                Err(e) => return Err(Error::io(format!("reading {}", state_file.display()), e)),
            };
            let slot = Arc::new(Slot {
                id: id.clone(),
                spec: spec.clone(),
                state_file,
                log_file: log_dir.join(format!("{}.log", spec.name)),
                inner: Mutex::new(SlotState {
                    p,
                    status: Status::Unknown,
                    message: None,
                    generation: 0,
                    exited: None,
                }),
            });
            slots.insert(id, slot);
        }
        let backend = Arc::new(LocalBackend {
            slots,
            idle,
            grace: cfg.stop_grace_period.0,
            stop_on_exit: cfg.stop_on_exit,
            http,
        });
        // One pass over /proc for all notebooks, before any is spawned.
        let marked = marked_processes();
        for slot in backend.slots.values() {
            backend.recover(slot, &marked).await?;
        }
        Ok(backend)
    }

    async fn recover(&self, slot: &Arc<Slot>, marked: &HashMap<String, (i32, u64)>) -> Result<()> {
        let mut st = slot.inner.lock().await;
        let mut live = live_pid(&st.p);
        if live.is_none() {
            // nbidle may have died between spawning a process and recording
            // its pid: find it by the marker every notebook process carries.
            if let Some(&(pid, ticks)) = marked.get(&marker(slot)) {
                tracing::info!(notebook = %slot.id, pid, "found an unrecorded notebook process");
                st.p.pid = Some(pid);
                st.p.pid_start_ticks = Some(ticks);
                st.p.boot_id = boot_id();
                live = Some(pid);
            }
        }
        match (st.p.desired, live) {
            (Desired::Running, Some(pid)) => {
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
            (Desired::Running, None) => {
                // One notebook that cannot start must not keep nbidle (and
                // every other notebook's stops) down: report it failed.
                if let Err(e) = self.spawn(slot, &mut st).await {
                    tracing::error!(notebook = %slot.id, error = %e, "starting notebook");
                    st.status = Status::Failed;
                    st.message = Some(e.to_string());
                }
            }
            (Desired::Stopped, Some(pid)) => {
                // nbidle went down in the middle of a stop: finish it.
                st.generation += 1;
                st.status = Status::Stopping;
                let exited =
                    self.watch_adopted(slot.clone(), pid, st.p.pid_start_ticks, st.generation);
                self.terminate(slot.clone(), pid, exited, st.generation);
            }
            (Desired::Stopped, None) => st.status = Status::Stopped,
        }
        Ok(())
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

    async fn persist(slot: &Slot, p: &Persisted) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(p)?;
        let path = slot.state_file.clone();
        // One trip to the blocking pool for write + rename.
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, bytes)
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            // rename is atomic: a crash leaves the old or the new file, never half.
            std::fs::rename(&tmp, &path)
                .map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))
        })
        .await
        .map_err(|e| Error::Backend(format!("persisting state: {e}")))?
    }

    /// Spawns the notebook's command; the caller holds the slot lock.
    async fn spawn(&self, slot: &Arc<Slot>, st: &mut SlotState) -> Result<()> {
        let spec = &slot.spec;
        tokio::fs::create_dir_all(&spec.workdir)
            .await
            .map_err(|e| Error::io(format!("creating workdir {}", spec.workdir.display()), e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log_file)
            .map_err(|e| Error::io(format!("opening {}", slot.log_file.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", slot.log_file.display()), e))?;
        let mut cmd = tokio::process::Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..])
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
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(|e| {
            Error::Backend(format!("starting {}: {:?}: {e}", slot.id, spec.command[0]))
        })?;
        let pid = child.id().map(|p| p as i32);
        let mut next = st.p.clone();
        next.desired = Desired::Running;
        next.pid = pid;
        next.pid_start_ticks = pid.and_then(proc_start_ticks);
        next.boot_id = boot_id();
        next.started_at = Some(Timestamp::now());
        next.stopped_at = None;
        next.stopped_by = None;
        if let Err(e) = Self::persist(slot, &next).await {
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
        st.exited = Some(self.watch_child(slot.clone(), child, st.generation));
        self.probe_ready(slot.clone(), st.generation);
        Ok(())
    }

    /// Reaps our own child and records how it ended. The receiver turns
    /// true when it has exited.
    fn watch_child(
        &self,
        slot: Arc<Slot>,
        mut child: tokio::process::Child,
        generation: u64,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let status = child.wait().await;
            let how = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
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
        tokio::spawn(async move {
            while process_alive(pid, ticks) {
                tokio::time::sleep(POLL).await;
            }
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
        let http = self.http.clone();
        tokio::spawn(async move {
            let url = format!("{}/api", slot.spec.url.trim_end_matches('/'));
            // Back off while the server boots, so a notebook that never
            // answers costs one request every few seconds, not a busy loop.
            let mut wait = Duration::from_millis(250);
            loop {
                let answered = http.get(&url).send().await.is_ok();
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
        tokio::spawn(async move {
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
        if st.p.desired == Desired::Stopped {
            return Ok(StopOutcome::AlreadyStopped(self.snapshot(slot, &st)));
        }
        if let (Some(limit), Some(started)) = (req.unless_started_after, st.p.started_at) {
            if started > limit {
                return Ok(StopOutcome::StartedSince(self.snapshot(slot, &st)));
            }
        }
        let mut next = st.p.clone();
        next.desired = Desired::Stopped;
        next.stopped_at = Some(Timestamp::now());
        next.stopped_by = Some(req.cause);
        // Persist before signalling: if nbidle dies now, the restart finishes
        // the stop instead of resurrecting the notebook.
        Self::persist(slot, &next).await?;
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
                        self.watch_adopted(slot.clone(), pid, st.p.pid_start_ticks, st.generation)
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
        self.spawn(slot, &mut st).await?;
        Ok(self.snapshot(slot, &st))
    }

    async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>> {
        let mut out = Vec::new();
        for slot in self.slots.values() {
            let st = slot.inner.lock().await;
            if st.p.desired != Desired::Running {
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

    async fn shutdown(&self) {
        if !self.stop_on_exit {
            return;
        }
        for slot in self.slots.values() {
            let st = slot.inner.lock().await;
            if let Some(pid) = live_pid(&st.p) {
                signal_group(pid, libc::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        for slot in self.slots.values() {
            let st = slot.inner.lock().await;
            if let Some(pid) = live_pid(&st.p) {
                while process_alive(pid, st.p.pid_start_ticks)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                signal_group(pid, libc::SIGKILL);
            }
        }
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
}
