//! Start-up recovery: each notebook brought to its desired state from its
//! record and the processes found in `/proc`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};

use super::procfs::{boot_id, marked_processes};
use super::slot::{corrupt_message, live_pid, marker, Desired, Persisted, Slot, SlotState};
use super::LocalBackend;
use crate::notebook::Status;

/// Notebooks recovered at once at start-up. Each recovery waits mostly on
/// its record's file syncs (2-6 ms each on this project's machine); one at a
/// time, 10,000 notebooks would wait a minute for them, many at once share
/// the disk's flushes and the directory's syncs.
pub(super) const RECOVERY_CONCURRENCY: usize = 64;

/// What start-up recovery does with one notebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Its process runs: watch it.
    Adopt(i32),
    Spawn,
    /// Stopped, but its process still runs: nbidle died during the stop.
    FinishStop(i32),
    Stopped,
    /// Its record cannot be read: leave it alone.
    Corrupt,
}

impl LocalBackend {
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
                    let op = slot.operation().await;
                    let plan = slot.with(|st| Self::plan(&slot, st, &marked));
                    if plan == Plan::Spawn && !this.tasks.closing.is_cancelled() {
                        this.recover_spawn(&slot).await;
                    }
                    drop(op);
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
            let _op = slot.operation().await;
            slot.with(|st| self.recover_rest(&slot, st, plan));
        }
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for slot in self.slots.values() {
            *by_status
                .entry(slot.with(|st| st.status.as_str()))
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
    pub(super) fn plan(
        slot: &Slot,
        st: &mut SlotState,
        marked: &HashMap<String, (i32, u64)>,
    ) -> Plan {
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

    /// The caller holds the notebook's operation lock.
    pub(super) async fn recover_spawn(&self, slot: &Arc<Slot>) {
        // One notebook that cannot start must not keep nbidle (and every
        // other notebook's stops) down: report it failed.
        if let Err(e) = self.spawn(slot).await {
            tracing::error!(notebook = %slot.id, error = %e, "starting notebook");
            slot.with(|st| {
                st.status = Status::Failed;
                st.message = Some(e.to_string());
            });
        }
    }

    pub(super) fn recover_rest(&self, slot: &Arc<Slot>, st: &mut SlotState, plan: Plan) {
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

    /// What a stop starts from for a notebook whose record is corrupt: no
    /// record, and the process of this notebook found by its marker, if any.
    pub(super) async fn unrecorded(slot: &Slot) -> Persisted {
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
}
