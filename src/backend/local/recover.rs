//! Start-up recovery: each notebook brought to its desired state from its
//! record and the processes found in `/proc`.
//!
//! Only the server nbidle recorded (its pid, start time and boot id) is
//! adopted: another process carrying the notebook's marker is a user's job
//! (a `nohup`'ed training run whose server died while nbidle was down) and
//! is neither adopted as the server nor killed. It stays accounted to the
//! notebook, so its CPU counts and the notebook's next stop ends it.
//! Recovery kills nothing but the server of a stop that nbidle did not get
//! to finish (and, as that stop, every process of the notebook).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use super::account::{Scan, Scanner};
use super::slot::{corrupt_message, live_pid, Desired, Slot, SlotState};
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
    /// Its recorded server runs: watch it.
    Adopt(i32),
    Spawn,
    /// Stopped, but its recorded server still runs: nbidle died during the
    /// stop.
    FinishStop(i32),
    Stopped,
    /// Its record cannot be read: leave it alone.
    Corrupt,
}

impl LocalBackend {
    /// Brings every notebook to its desired state: adopts recorded servers
    /// that still run, spawns the missing ones, finishes interrupted stops,
    /// leaves stopped ones; then keeps the process accounting current. Run
    /// once, after [`open`](Self::open).
    pub(crate) async fn recover(self: Arc<Self>) {
        let _running = self.recovery.lock().await;
        let started = Instant::now();
        // One pass over /proc for all notebooks, before any is spawned.
        let marked = self.scan().await;
        // Spawns first, then the rest: an adopted process is watched
        // through a pidfd, and every descriptor open in nbidle costs every
        // later spawn a close at exec.
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
        self.keep_accounts();
    }

    /// Scans `/proc` every `process_scan_interval` from now on, so each
    /// notebook's usage stays current between stops.
    fn keep_accounts(&self) {
        let (scanner, every) = (self.scanner.clone(), self.scan_interval);
        self.tasks.supervise(periodic_scans(scanner, every));
    }

    /// What recovery does with a notebook, from its record and the
    /// processes of it that `marked` found.
    pub(super) fn plan(slot: &Slot, st: &mut SlotState, marked: &Scan) -> Plan {
        let others: Vec<i32> = marked
            .members(slot.index)
            .iter()
            .map(|&(pid, _)| pid)
            .collect();
        if let Some(reason) = &st.corrupt {
            st.message = Some(corrupt_message(slot, reason, &others));
            return Plan::Corrupt;
        }
        let live = live_pid(&st.p);
        let plan = match (st.p.desired, live) {
            (Desired::Running, Some(pid)) => Plan::Adopt(pid),
            (Desired::Running, None) => Plan::Spawn,
            (Desired::Stopped, Some(pid)) => Plan::FinishStop(pid),
            (Desired::Stopped, None) => Plan::Stopped,
        };
        let left_alone = match plan {
            Plan::Spawn => "they are not adopted as its server and stay accounted to it",
            Plan::Stopped => {
                "they are left alone; a stop through the API ends them (or a start and a stop)"
            }
            _ => return plan,
        };
        if !others.is_empty() {
            tracing::warn!(notebook = %slot.id, pids = ?others, "processes of the notebook run without its server: {left_alone}");
        }
        plan
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
            slot.standin.hold();
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
                st.stopping =
                    Some(self.terminate(slot.clone(), Some((pid, exited)), st.generation));
            }
            Plan::Stopped => {
                st.status = Status::Stopped;
                slot.standin.hold();
            }
            Plan::Spawn | Plan::Corrupt => {}
        }
    }
}

/// A scan every `every`, until the backend's supervision is retired.
async fn periodic_scans(scanner: Arc<Scanner>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once; recovery has just scanned.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        scanner.scan().await;
    }
}
