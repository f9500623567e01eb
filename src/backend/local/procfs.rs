//! What nbidle reads of processes in `/proc` (state, parent, start time,
//! process group, CPU time, resident memory, the marker in the
//! environment, the boot id), waiting for a process to end (a pidfd), and
//! signalling a process group or one process.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How often a watcher checks a process it did not spawn (adopted after a
/// restart), where the kernel offers no pidfd to wait on.
pub(super) const POLL: Duration = Duration::from_millis(500);

/// Set in every notebook server's environment, and so inherited by its
/// kernels, terminals and whatever they start: how nbidle finds every
/// process of a notebook (see `account`).
pub const MARKER_ENV: &str = "NBIDLE_NOTEBOOK";

pub(super) fn boot_id() -> Option<String> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
    })
    .clone()
}

#[allow(unsafe_code)] // killpg
pub(super) fn signal_group(pgid: i32, sig: libc::c_int) {
    // SAFETY: killpg only sends a signal; a stale pgid fails with ESRCH.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

/// What nbidle reads of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) state: u8,
    pub(super) ppid: i32,
    pub(super) pgid: i32,
    /// utime + stime, in clock ticks.
    pub(super) cpu_ticks: u64,
    /// Clock ticks after boot; with the pid, tells one process from a
    /// later one that reuses its pid.
    pub(super) start: u64,
    /// Resident pages.
    pub(super) rss_pages: u64,
    /// The command name (`comm`, at most 15 bytes), which changes at exec.
    pub(super) comm: [u8; 16],
}

impl Stat {
    /// A zombie (exited, not yet reaped) or dead process: nothing to
    /// signal, no memory, but its CPU time is final.
    pub(super) fn ended(&self) -> bool {
        matches!(self.state, b'Z' | b'X')
    }
}

/// Parses the text of `/proc/<pid>/stat`.
pub(super) fn parse_stat(text: &[u8]) -> Option<Stat> {
    // The command name may contain spaces and parentheses; the fields after
    // the last ')' are fixed: state ppid pgrp session tty tpgid flags minflt
    // cminflt majflt cmajflt utime stime cutime cstime priority nice
    // threads itrealvalue starttime vsize rss.
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut comm = [0; 16];
    let name = text.get(open + 1..close)?;
    let n = name.len().min(comm.len());
    comm[..n].copy_from_slice(&name[..n]);
    let mut fields = text.get(close + 2..)?.split(|&b| b == b' ');
    let mut next = || fields.next();
    let num = |f: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(f?).ok()?.parse().ok() };
    let state = *next()?.first()?;
    let ppid = num(next())? as i32;
    let pgid = num(next())? as i32;
    for _ in 0..8 {
        next()?;
    }
    let utime = num(next())?;
    let stime = num(next())?;
    for _ in 0..6 {
        next()?;
    }
    let start = num(next())?;
    next()?;
    let rss_pages = num(next())?;
    Some(Stat {
        state,
        ppid,
        pgid,
        cpu_ticks: utime + stime,
        start,
        rss_pages,
        comm,
    })
}

/// Reads `/proc/<pid>/stat` into `buf` (reused, so a scan of every process
/// allocates once) and parses it.
pub(super) fn read_stat(pid: i32, buf: &mut Vec<u8>) -> Option<Stat> {
    buf.clear();
    std::fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read_to_end(buf))
        .ok()?;
    parse_stat(buf)
}

pub(super) fn proc_stat(pid: i32) -> Option<Stat> {
    read_stat(pid, &mut Vec::with_capacity(512))
}

pub(super) fn proc_start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start)
}

/// Alive: exists, not a zombie, the same process we started (start time
/// known and equal), still leading its own process group.
pub(super) fn process_alive(pid: i32, ticks: Option<u64>) -> bool {
    match (proc_stat(pid), ticks) {
        (Some(s), Some(t)) => !s.ended() && s.start == t && s.pgid == pid,
        _ => false,
    }
}

/// The same process (pid and start time) exists and has not exited.
pub(super) fn same_process_runs(pid: i32, start: u64) -> bool {
    proc_stat(pid).is_some_and(|s| !s.ended() && s.start == start)
}

/// The value of `MARKER_ENV` in a process's environment (as it was at its
/// last exec), if it has one and nbidle may read it.
pub(super) fn marker_of(pid: i32) -> Option<Vec<u8>> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{MARKER_ENV}=");
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(<[u8]>::to_vec)
}

/// Every pid in `/proc` (thread group leaders, i.e. processes).
pub(super) fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Clock ticks per second and bytes per page, for `Stat`'s units.
#[allow(unsafe_code)] // sysconf
pub(super) fn units() -> (u64, u64) {
    static UNITS: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    *UNITS.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let (hz, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (
            u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100),
            u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096),
        )
    })
}

/// Sends `sig` to the process `pid` if it is still the one that started at
/// `start`: through a pidfd, so a pid reused since the scan that found it
/// is never signalled. False when it is gone.
#[allow(unsafe_code)] // pidfd_send_signal
pub(super) fn signal_process(pid: i32, start: u64, sig: libc::c_int) -> bool {
    let fd = pidfd_open(pid);
    // Checked after opening: a process still ours now is the pidfd's.
    if proc_start_ticks(pid) != Some(start) {
        return false;
    }
    let Some(fd) = fd else {
        // A kernel without pidfds (before 5.3): the check above narrows
        // the window to a pid reused between two syscalls.
        // SAFETY: kill only sends a signal.
        return unsafe { libc::kill(pid, sig) } == 0;
    };
    // SAFETY: pidfd_send_signal takes a descriptor this function owns, a
    // signal number, no siginfo and no flags.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    sent == 0
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
