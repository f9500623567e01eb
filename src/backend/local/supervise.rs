//! Supervision of notebook processes: the spawn, a watcher per server (our
//! child through the reaper, an adopted one through a pidfd), the readiness
//! probe, a stop's end of every process of the notebook (SIGTERM, SIGKILL
//! after the grace period, a scan that confirms), and the stops at nbidle's
//! exit.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::account::Scanner;
use super::procfs::{
    boot_id, gone, proc_start_ticks, same_process_runs, signal_group, signal_process, MARKER_ENV,
};
use super::slot::{live_pid, marker, Desired, Slot, StopHandle};
use super::LocalBackend;
use crate::error::{Error, Result};
use crate::notebook::{Status, Timestamp};

/// The longest pause between readiness probes of a starting notebook.
pub(super) const PROBE_MAX_INTERVAL: Duration = Duration::from_secs(5);

impl LocalBackend {
    /// Spawns the notebook's command; the caller holds the notebook's
    /// operation lock.
    pub(super) async fn spawn(&self, slot: &Arc<Slot>) -> Result<()> {
        let spec = &slot.spec;
        let (workdir, log_file) = (spec.workdir.clone(), slot.log_file.clone());
        let (log, log2) = tokio::task::spawn_blocking(move || prepare(&workdir, &log_file))
            .await
            .map_err(|e| Error::task(format!("preparing {}", slot.id), e))??;
        // The stopped-notebook page gives the port back before Jupyter binds it.
        slot.standin.release().await?;
        let mut cmd = std::process::Command::new(&slot.program);
        cmd.arg0(&spec.command[0])
            .args(&spec.command[1..])
            .current_dir(&spec.workdir)
            .envs(&spec.env)
            .env(MARKER_ENV, marker(slot))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group, so a Ctrl-C aimed at nbidle does not
            // reach it. Jupyter starts kernels and terminals in sessions of
            // their own, and a job started there may leave them too: a stop
            // ends the group and every process the accounting finds.
            .process_group(0);
        let (pid, exit) = self.reaper.spawn(&mut cmd).map_err(|e| {
            Error::backend_io(format!("starting {}: {:?}", slot.id, spec.command[0]), e)
        })?;
        let pid = Some(pid);
        let mut next = slot.with(|st| st.p.clone());
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
        slot.with(|st| {
            st.p = next;
            st.status = Status::Starting;
            st.message = None;
            st.generation += 1;
            st.exited = Some(self.watch_child(slot.clone(), exit, st.generation));
            self.probe_ready(slot.clone(), st.generation);
        });
        tracing::info!(notebook = %slot.id, pid = ?pid, workdir = %spec.workdir.display(), "notebook started");
        Ok(())
    }

    /// Waits for our own child's exit (from the reaper) and records how it
    /// ended. The receiver turns true when it has exited.
    pub(super) fn watch_child(
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
            Self::exited(&slot, generation, how);
        });
        rx
    }

    /// Watches a process from an earlier nbidle run, which we cannot wait on.
    pub(super) fn watch_adopted(
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
            Self::exited(&slot, generation, "exited".into());
        });
        rx
    }

    /// Records the end of the process of `generation`, if it is still the
    /// notebook's current one.
    pub(super) fn exited(slot: &Slot, generation: u64, how: String) {
        let unexpected = slot.with(|st| {
            // A stop bumps the generation too; the process ending after a
            // stop is recorded through the stop's own generation.
            if st.generation != generation {
                return false;
            }
            // Not persisted: the recorded pid is checked against its start
            // time and boot id on every read, so a dead pid is never mistaken
            // for a live one, and skipping the write keeps mass stops cheap.
            st.p.pid = None;
            st.p.pid_start_ticks = None;
            match st.p.desired {
                Desired::Stopped => {
                    st.status = Status::Stopped;
                    st.message = None;
                    slot.standin.hold();
                    false
                }
                Desired::Running => {
                    st.status = Status::Failed;
                    st.message = Some(format!("process {how}"));
                    slot.standin.hold();
                    true
                }
            }
        });
        if unexpected {
            tracing::warn!(notebook = %slot.id, %how, "notebook process ended unexpectedly");
        }
    }

    /// Marks a starting notebook running once its URL answers HTTP at all.
    pub(super) fn probe_ready(&self, slot: Arc<Slot>, generation: u64) {
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
                let done = slot.with(|st| {
                    if st.generation != generation || st.status != Status::Starting {
                        return true;
                    }
                    if answered {
                        st.status = Status::Running;
                    }
                    answered
                });
                if done {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(PROBE_MAX_INTERVAL);
            }
        });
    }

    /// Ends every process of the notebook: SIGTERM now to the server's
    /// group (`server`: its pid and exit), then in a task tracked as a stop
    /// ([`end_all`]), and records the end under `generation`. Returns the
    /// handle a start uses to hurry the stop and wait for it.
    pub(super) fn terminate(
        &self,
        slot: Arc<Slot>,
        server: Option<(i32, watch::Receiver<bool>)>,
        generation: u64,
    ) -> StopHandle {
        if let Some((pid, _)) = &server {
            signal_group(*pid, libc::SIGTERM);
        }
        let hurry = CancellationToken::new();
        let (done_tx, done) = watch::channel(false);
        let handle = StopHandle {
            hurry: hurry.clone(),
            done,
        };
        let ender = self.ender();
        let deadline = tokio::time::Instant::now() + self.grace;
        self.tasks.stops.spawn(async move {
            ender.end_all(&slot, server, deadline, &hurry).await;
            Self::exited(&slot, generation, "stopped".into());
            let _ = done_tx.send(true);
        });
        handle
    }

    /// What ending a notebook's processes needs, apart from the backend.
    pub(super) fn ender(&self) -> Ender {
        Ender {
            scanner: self.scanner.clone(),
            survivors: self.survivors.clone(),
        }
    }

    /// Stops every notebook at nbidle's exit (`stop_on_exit`): its server
    /// and every other process of it, as a stop does. These are nbidle's own
    /// stops: their watchers are retired first so none reports its process
    /// as ended unexpectedly, and the records keep saying "running", so the
    /// next start-up starts them again.
    pub(super) async fn stop_all_at_exit(&self) {
        let mut ending = Vec::new();
        for slot in self.slots.values() {
            // After any operation in progress, so none spawns after this.
            let _op = slot.operation().await;
            let (recorded, in_progress, corrupt) = slot.with(|st| {
                let in_progress = st.stopping.as_ref().is_some_and(StopHandle::running);
                (st.p.clone(), in_progress, st.corrupt.is_some())
            });
            // A stop in progress ends its processes itself (shutdown waits
            // for it); a notebook whose record is unreadable is left alone.
            if in_progress || corrupt {
                continue;
            }
            // Every other notebook: a server that died may have left jobs.
            let server = live_pid(&recorded).map(|pid| {
                let exited = slot.with(|st| {
                    st.generation += 1;
                    st.status = Status::Stopping;
                    st.message = None;
                    st.exited.clone()
                });
                signal_group(pid, libc::SIGTERM);
                let exited = exited.unwrap_or_else(|| {
                    self.watch_adopted(slot.clone(), pid, recorded.pid_start_ticks, 0)
                });
                (pid, exited)
            });
            ending.push((slot.clone(), server));
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        let ender = self.ender();
        let never = CancellationToken::new();
        let ends = ending.iter().map(|(slot, server)| {
            let (ender, never) = (&ender, &never);
            async move {
                let outcome = ender.end_all(slot, server.clone(), deadline, never).await;
                if server.is_some() {
                    slot.with(|st| st.status = Status::Stopped);
                }
                (server.is_some() || outcome.found > 0, outcome)
            }
        });
        let outcomes = futures_util::future::join_all(ends).await;
        let stopped = outcomes.iter().filter(|(any, _)| *any).count();
        let killed = outcomes.iter().filter(|(_, o)| !o.in_time).count();
        let survivors: usize = outcomes.iter().map(|(_, o)| o.survivors).sum();
        tracing::info!(
            notebooks = stopped,
            killed_after_grace = killed,
            survivors,
            "notebooks stopped at shutdown (stop_on_exit)"
        );
    }
}

/// How a notebook's processes ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ended {
    /// Processes of the notebook found and signalled (its server among
    /// them, when it has one).
    pub(super) found: usize,
    /// Everything exited within the grace period (after SIGTERM).
    pub(super) in_time: bool,
    /// Processes still there after the last SIGKILL.
    pub(super) survivors: usize,
}

/// Ends a notebook's processes: the accounting that finds them, and the
/// count of those that survive.
#[derive(Clone)]
pub(super) struct Ender {
    scanner: Arc<Scanner>,
    survivors: Arc<AtomicU64>,
}

/// SIGKILL rounds after the grace period: a process that forks while it
/// is being killed leaves children the next round's scan finds.
const KILL_ROUNDS: usize = 3;
/// How long a round waits for its SIGKILLed processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(1);
/// Pause between checks whether processes are gone.
const GONE_POLL: Duration = Duration::from_millis(20);

impl Ender {
    /// The notebook's live processes, by a scan that started after this
    /// call.
    async fn scan(&self, index: usize) -> Vec<(i32, u64)> {
        self.scanner.scan_notebook(index).await.members(index)
    }

    /// SIGTERM to every process of the notebook the last scan knew (its
    /// server's group has had it already); once the server has exited, a
    /// fresh scan finds what is left, which gets SIGTERM too and the rest of
    /// the grace period. At `deadline`, or when hurried: SIGKILL to the
    /// server's group and to every process a fresh scan still finds, for a
    /// few rounds; a scan confirms that nothing is left, and what is (a
    /// process stuck in the kernel) is logged and counted. When nothing is
    /// left once the server has gone, that first scan is the confirmation:
    /// most stops cost one scan.
    pub(super) async fn end_all(
        &self,
        slot: &Slot,
        server: Option<(i32, watch::Receiver<bool>)>,
        deadline: tokio::time::Instant,
        hurry: &CancellationToken,
    ) -> Ended {
        let known = self.scanner.last().members(slot.index);
        for &(pid, start) in &known {
            signal_process(pid, start, libc::SIGTERM);
        }
        let mut exited = server.as_ref().map(|(_, rx)| rx.clone());
        let server_gone = async {
            if let Some(rx) = exited.as_mut() {
                let _ = rx.wait_for(|&e| e).await;
            }
        };
        let mut in_time = tokio::select! {
            () = server_gone => true,
            () = tokio::time::sleep_until(deadline) => false,
            () = hurry.cancelled() => false,
        };
        let mut left = self.scan(slot.index).await;
        let mut found = known.len();
        if in_time && !left.is_empty() {
            found += left.iter().filter(|p| !known.contains(p)).count();
            for p in left.iter().filter(|p| !known.contains(p)) {
                signal_process(p.0, p.1, libc::SIGTERM);
            }
            let rest = &left;
            let all_gone = async {
                while rest
                    .iter()
                    .any(|&(pid, start)| same_process_runs(pid, start))
                {
                    tokio::time::sleep(GONE_POLL * 5).await;
                }
            };
            in_time = tokio::select! {
                () = all_gone => true,
                () = tokio::time::sleep_until(deadline) => false,
                () = hurry.cancelled() => false,
            };
            left = self.scan(slot.index).await;
        }
        if !in_time {
            tracing::warn!(notebook = %slot.id, processes = left.len(), "still running after grace period, sending SIGKILL");
        }
        if let Some((pid, _)) = &server {
            // Also when everything exited in time: anything left in the
            // server's group goes with it.
            signal_group(*pid, libc::SIGKILL);
        }
        for _ in 0..KILL_ROUNDS {
            if left.is_empty() {
                break;
            }
            for &(pid, start) in &left {
                signal_process(pid, start, libc::SIGKILL);
            }
            let until = tokio::time::Instant::now() + KILL_WAIT;
            while tokio::time::Instant::now() < until
                && left
                    .iter()
                    .any(|&(pid, start)| same_process_runs(pid, start))
            {
                tokio::time::sleep(GONE_POLL).await;
            }
            left = self.scan(slot.index).await;
        }
        if !left.is_empty() {
            self.survivors
                .fetch_add(left.len() as u64, Ordering::Relaxed);
            let pids: Vec<i32> = left.iter().map(|&(pid, _)| pid).collect();
            tracing::warn!(notebook = %slot.id, ?pids, "processes of the notebook survived its stop");
        }
        if let (Some(rx), false) = (exited.as_mut(), in_time) {
            // Reaped by the reaper (or seen gone) soon after the SIGKILL.
            let _ = tokio::time::timeout(KILL_WAIT * 5, rx.wait_for(|&e| e)).await;
        }
        Ended {
            found,
            in_time,
            survivors: left.len(),
        }
    }
}

/// Creates the workdir and opens the log for stdout and stderr; blocking.
/// A log that is not a regular file is refused: opening a FIFO would block
/// until someone reads it.
pub(super) fn prepare(workdir: &Path, log_file: &Path) -> Result<(std::fs::File, std::fs::File)> {
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
pub(super) fn find_program(program: &str, path_var: Option<&str>) -> PathBuf {
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
