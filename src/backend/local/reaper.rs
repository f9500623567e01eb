//! Spawns notebook processes and collects their exits with one SIGCHLD
//! listener, instead of one pidfd per child (tokio's way). Every spawn copies
//! the parent's descriptors into the child and closes them again at exec, so
//! with a descriptor per running notebook the 10,000th spawn closed 10,000
//! descriptors and start-up grew with the square of the notebooks.
//!
//! On each SIGCHLD the reaper looks at which child has exited without
//! reaping it (`waitid(WNOWAIT)`) and reaps only its own: a child of some
//! other part of the process is left to whoever waits for it. While such a
//! child is first in line, its own children are checked one by one.

// This module's job is a syscall (waitpid/waitid for exited children); each use says why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(super) struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Starts the SIGCHLD listener on the current tokio runtime, tracked by
    /// `tasks`; it ends when `retired` is cancelled, or when the reaper is
    /// dropped (at the next SIGCHLD).
    pub(super) fn start(
        tasks: &TaskTracker,
        retired: CancellationToken,
    ) -> std::io::Result<Arc<Reaper>> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper {
            waiting: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&reaper);
        tasks.spawn(retired.run_until_cancelled_owned(async move {
            while sigchld.recv().await.is_some() {
                match weak.upgrade() {
                    Some(r) => r.collect(),
                    None => return,
                }
            }
        }));
        Ok(reaper)
    }

    /// Spawns `cmd`; the receiver gets the process's exit status.
    pub(super) fn spawn(
        &self,
        cmd: &mut Command,
    ) -> std::io::Result<(i32, oneshot::Receiver<ExitStatus>)> {
        // Spawned outside the lock, so spawns run in parallel. The collector
        // reaps only registered children, so one that exits before it is
        // registered stays a zombie (keeping its pid) until checked here.
        let pid = cmd.spawn()?.id() as i32;
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.lock();
        waiting.insert(pid, tx);
        deliver(&mut waiting, pid);
        Ok((pid, rx))
    }

    /// Reaps every exited child of ours.
    fn collect(&self) {
        let mut waiting = self.lock();
        while let Some(pid) = exited_child() {
            if !waiting.contains_key(&pid) {
                let ours: Vec<i32> = waiting.keys().copied().collect();
                for pid in ours {
                    deliver(&mut waiting, pid);
                }
                return;
            }
            if !deliver(&mut waiting, pid) {
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reaps `pid` if it has exited and hands its status to its waiter.
fn deliver(waiting: &mut HashMap<i32, oneshot::Sender<ExitStatus>>, pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a local; WNOHANG never blocks.
    if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
        return false;
    }
    if let Some(tx) = waiting.remove(&pid) {
        let _ = tx.send(ExitStatus::from_raw(status));
    }
    true
}

/// Some child that has exited, left unreaped.
fn exited_child() -> Option<i32> {
    // SAFETY: waitid fills a zeroed siginfo_t; WNOWAIT leaves the child
    // for waitpid, WNOHANG never blocks.
    let pid = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_ALL, 0, &mut info, flags) != 0 {
            return None;
        }
        info.si_pid()
    };
    (pid != 0).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn exits_reach_their_waiters_and_other_children_are_left_alone() {
        let reaper = Reaper::start(&TaskTracker::new(), CancellationToken::new()).unwrap();
        // Someone else's child, exited first and waited for by its owner.
        let mut foreign = Command::new("true").spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, quick) = reaper
            .spawn(Command::new("sh").args(["-c", "exit 3"]))
            .unwrap();
        // One that exits at once: delivered whether its exit comes before
        // or after it is registered.
        let (_, early) = reaper.spawn(&mut Command::new("true")).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), early)
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
        let (pid, slow) = reaper.spawn(Command::new("sleep").arg("30")).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), quick)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(3));
        // SAFETY: a signal to a child this test owns.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(5), slow)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(
            foreign.wait().unwrap().success(),
            "not reaped by the reaper"
        );
    }
}
