//! What nbidle reads of processes in `/proc` (state, start time, process
//! group, the marker in the environment, the boot id), waiting for a
//! process to end (a pidfd), and signalling a process group.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// How often a watcher checks a process it did not spawn (adopted after a
/// restart), where the kernel offers no pidfd to wait on.
pub(super) const POLL: Duration = Duration::from_millis(500);

/// Set in every notebook process's environment, so nbidle can find a process
/// it spawned but did not get to record.
pub(super) const MARKER_ENV: &str = "NBIDLE_NOTEBOOK";

pub(super) fn boot_id() -> Option<String> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
    })
    .clone()
}

/// Live process-group leaders carrying `MARKER_ENV`, by marker value.
pub(super) fn marked_processes() -> HashMap<String, (i32, u64)> {
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
pub(super) fn signal_group(pgid: i32, sig: libc::c_int) {
    // SAFETY: killpg only sends a signal; a stale pgid fails with ESRCH.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

/// Reads `/proc/<pid>/stat` → (state, starttime, process group).
pub(super) fn proc_stat(pid: i32) -> Option<(char, u64, i32)> {
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

pub(super) fn proc_start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, t, _)| t)
}

/// Alive: exists, not a zombie, the same process we started (start time
/// known and equal), still leading its own process group.
pub(super) fn process_alive(pid: i32, ticks: Option<u64>) -> bool {
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
pub(super) async fn gone(pid: i32, ticks: Option<u64>) {
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
pub(super) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // (close-on-exec) or -1; the descriptor is owned by the OwnedFd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
