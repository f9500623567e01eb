//! One notebook's slot: its configuration, its record's paths, and two
//! locks of different kinds.
//!
//! - The operation lock (an async mutex) is held by a stop, a start or the
//!   notebook's recovery from its first read to its last write, across its
//!   awaits (the record's durable write, the spawn, the wait for a previous
//!   process to exit, a scan of `/proc`): operations on one notebook never
//!   interleave.
//! - The state (a plain mutex) is what reads see. It is changed at each
//!   transition, by an operation or a watcher, and taken only inside
//!   [`Slot::with`], whose closure cannot await: a read never waits behind
//!   an operation, however long the operation takes.
//!
//! Only operations change the record's content (`SlotState::p`) and
//! `corrupt`; watchers and probes change the status, the message and the
//! process, and only for the process of the current generation.

use std::path::PathBuf;
use std::sync::PoisonError;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use super::procfs::{boot_id, process_alive};
use super::standin::StandIn;
use crate::config::LocalNotebook;
use crate::notebook::{NotebookId, Status, StopCause, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Desired {
    Running,
    Stopped,
}

/// What survives a restart of nbidle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Persisted {
    pub(super) desired: Desired,
    pub(super) pid: Option<i32>,
    /// Field 22 of `/proc/<pid>/stat`: tells our process from a reused pid.
    pub(super) pid_start_ticks: Option<u64>,
    /// The kernel's boot id when the pid was recorded: after a reboot no pid
    /// is ours, whatever its start time.
    #[serde(default)]
    pub(super) boot_id: Option<String>,
    pub(super) started_at: Option<Timestamp>,
    pub(super) stopped_at: Option<Timestamp>,
    pub(super) stopped_by: Option<StopCause>,
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
pub(super) fn parse_record(read: Result<Option<Vec<u8>>, String>) -> Result<Persisted, String> {
    match read? {
        None => Ok(Persisted::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
    }
}

pub(super) struct SlotState {
    pub(super) p: Persisted,
    pub(super) status: Status,
    pub(super) message: Option<String>,
    /// Why the record could not be read; while set, `p` means nothing and
    /// the notebook is neither started nor stopped by nbidle on its own.
    pub(super) corrupt: Option<String>,
    /// Bumped on every spawn and stop, so a watcher of an older process
    /// cannot overwrite the state of a newer one.
    pub(super) generation: u64,
    /// Turns true when the current process has exited; set by its watcher,
    /// so a stop waits on an event instead of polling /proc.
    pub(super) exited: Option<watch::Receiver<bool>>,
    /// The stop in progress, if any: a start hurries it and waits for it to
    /// end, so nothing of the stop reaches the new life's processes.
    pub(super) stopping: Option<StopHandle>,
}

/// A stop in progress, from its SIGTERM to the scan after its SIGKILL.
#[derive(Debug, Clone)]
pub(super) struct StopHandle {
    /// Cancelled to skip the rest of the grace period.
    pub(super) hurry: CancellationToken,
    /// Turns true when the stop has ended every process it could.
    pub(super) done: watch::Receiver<bool>,
}

impl StopHandle {
    /// Whether the stop is still under way.
    pub(super) fn running(&self) -> bool {
        !*self.done.borrow()
    }
}

pub(super) struct Slot {
    pub(super) id: NotebookId,
    /// Its place among the backend's notebooks, and in the process
    /// accounting's tallies.
    pub(super) index: usize,
    pub(super) spec: LocalNotebook,
    /// `spec.command[0]`, found on PATH once at open when it is a bare name.
    pub(super) program: PathBuf,
    pub(super) state_file: PathBuf,
    /// The record's path inside the data dir, for messages that reach API
    /// clients (which are not told the server's paths).
    pub(super) record: String,
    pub(super) log_file: PathBuf,
    /// Its stopped-notebook page's claim on its port.
    pub(super) standin: StandIn,
    op: Mutex<()>,
    state: std::sync::Mutex<SlotState>,
}

impl Slot {
    #[allow(clippy::too_many_arguments)] // one per field; each caller names them
    pub(super) fn new(
        id: NotebookId,
        index: usize,
        spec: LocalNotebook,
        program: PathBuf,
        state_file: PathBuf,
        record: String,
        log_file: PathBuf,
        state: SlotState,
    ) -> Self {
        Slot {
            id,
            index,
            spec,
            program,
            state_file,
            record,
            log_file,
            standin: StandIn::new(),
            op: Mutex::new(()),
            state: std::sync::Mutex::new(state),
        }
    }

    /// Waits for the notebook's other operations to end; the operation runs
    /// while the guard lives.
    pub(super) async fn operation(&self) -> MutexGuard<'_, ()> {
        self.op.lock().await
    }

    /// Reads or changes the state. Never waits on an operation: the lock is
    /// held only while `f` runs, and `f` cannot await.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut SlotState) -> R) -> R {
        // Poisoning is ignored: a bug that panicked in one transition must
        // not take every later read of the notebook down with it.
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

pub(super) fn marker(slot: &Slot) -> String {
    slot.state_file.display().to_string()
}

pub(super) fn live_pid(p: &Persisted) -> Option<i32> {
    if p.boot_id.is_none() || p.boot_id != boot_id() {
        return None;
    }
    p.pid.filter(|&pid| process_alive(pid, p.pid_start_ticks))
}

/// The `message` of a notebook whose record cannot be read: what happened,
/// what nbidle did (nothing), and what each way out does.
pub(super) fn corrupt_message(slot: &Slot, reason: &str, running: &[i32]) -> String {
    let list = |pids: &[i32]| {
        pids.iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let process = match running {
        [] => String::new(),
        [pid] => format!(" Its process {pid} still runs and is left alone."),
        many => format!(
            " Its processes {} still run and are left alone.",
            list(many)
        ),
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
