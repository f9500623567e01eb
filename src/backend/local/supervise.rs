//! Supervision of notebook processes: the spawn, a watcher per process (our
//! child through the reaper, an adopted one through a pidfd), the readiness
//! probe, the stop's SIGTERM and SIGKILL after the grace period, and the
//! stops at nbidle's exit.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::procfs::{boot_id, gone, proc_start_ticks, signal_group, MARKER_ENV};
use super::slot::{live_pid, marker, Desired, Slot};
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
                    false
                }
                Desired::Running => {
                    st.status = Status::Failed;
                    st.message = Some(format!("process {how}"));
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

    /// SIGTERM now, SIGKILL after the grace period if the process is still there.
    pub(super) fn terminate(
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
            Self::exited(&slot, generation, "stopped".into());
        });
    }

    /// Stops every live process at nbidle's exit (`stop_on_exit`). These are
    /// nbidle's own stops: their watchers are retired first so none reports
    /// its process as ended unexpectedly, and the records keep saying
    /// "running", so the next start-up starts them again.
    pub(super) async fn stop_all_at_exit(&self) {
        let mut stopping = Vec::new();
        for slot in self.slots.values() {
            // After any operation in progress, so none spawns after this.
            let _op = slot.operation().await;
            let recorded = slot.with(|st| st.p.clone());
            let Some(pid) = live_pid(&recorded) else {
                continue;
            };
            let exited = slot.with(|st| {
                st.generation += 1;
                st.status = Status::Stopping;
                st.message = None;
                st.exited.clone()
            });
            signal_group(pid, libc::SIGTERM);
            stopping.push((slot.clone(), pid, recorded.pid_start_ticks, exited));
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
            slot.with(|st| st.status = Status::Stopped);
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
