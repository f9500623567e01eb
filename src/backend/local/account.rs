//! Process accounting: every process of each local notebook, found in
//! `/proc`, and what they use.
//!
//! A process belongs to a notebook when its environment carries the
//! notebook's marker ([`MARKER_ENV`], set when nbidle spawns the server and
//! inherited by its kernels, terminals and whatever they start, detached,
//! `nohup`'ed or `setsid` alike), or else when its parent belongs to the
//! notebook at the first scan that sees it (a child that dropped the marker,
//! `env -u`, `env -i`, while its parent lives). Once assigned, a process
//! stays assigned for its life (its pid and start time): an `exec` that
//! clears its environment, or its parent's exit, does not take it away.
//!
//! A process that clears its environment and is re-parented to init before
//! a scan sees it escapes: nothing links it to the notebook any more.
//!
//! A scan reads `/proc/<pid>/stat` of every process; the environment only of
//! a process it has not seen before, or one that has since exec'd and
//! belongs to no notebook (the command name changed: a child nbidle spawned
//! seen between its fork and its exec). Per notebook it keeps a CPU counter
//! that never decreases while nbidle runs: the live processes' CPU time
//! (user + system) plus what each exited one had used when last seen (what a
//! process used between the last scan and its exit is not counted).
//!
//! Scans are shared: a scan that starts after a caller asked for one covers
//! that caller (as the records' directory syncs are), so many stops at once
//! cost a few scans, not one each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

#[cfg(doc)]
use super::procfs::MARKER_ENV;
use super::procfs::{all_pids, marker_of, read_stat, units, Stat};

/// How far up the parent chain a new process is followed.
const MAX_DEPTH: usize = 4096;

/// The processes of a set of notebooks, each named by its marker (the
/// value of [`MARKER_ENV`] in its processes' environment). Public for the
/// benchmark; nbidle's local backend keeps one for its notebooks.
pub struct Accounting {
    markers: HashMap<Vec<u8>, usize>,
    books: Mutex<Books>,
    /// Scans asked for so far.
    requested: AtomicU64,
    last: RwLock<Arc<Scan>>,
}

/// One scan's result.
#[derive(Debug, Default)]
pub struct Scan {
    /// Per notebook, in the order of the markers given to
    /// [`Accounting::new`].
    pub(super) notebooks: Vec<Tally>,
    processes: usize,
    duration: Duration,
}

/// What one notebook's processes use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Tally {
    /// CPU time of its processes since nbidle started, in clock ticks:
    /// the live ones' and what the exited ones had when last seen.
    pub(super) cpu_ticks: u64,
    pub(super) rss_pages: u64,
    /// Its live processes (zombies left out), as (pid, start time), by pid.
    pub(super) members: Vec<(i32, u64)>,
}

impl Scan {
    /// Processes read in `/proc`, the notebooks' and every other.
    pub fn processes_read(&self) -> usize {
        self.processes
    }

    /// How long the scan took.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The `i`th notebook's CPU seconds, resident bytes and live processes.
    pub fn usage(&self, i: usize) -> (f64, u64, usize) {
        let (hz, page) = units();
        self.notebooks.get(i).map_or((0.0, 0, 0), |t| {
            (
                t.cpu_ticks as f64 / hz as f64,
                t.rss_pages * page,
                t.members.len(),
            )
        })
    }
}

/// What a scan remembers of one process.
#[derive(Debug, Clone)]
struct Entry {
    start: u64,
    owner: Option<usize>,
    ticks: u64,
    rss_pages: u64,
    ended: bool,
    comm: [u8; 16],
    /// The scan that last saw it.
    seen: u64,
}

/// Every process seen (the notebooks' and the others, so an unrelated
/// process's environment is read once), and the CPU of the exited ones.
#[derive(Debug)]
pub(super) struct Books {
    known: HashMap<i32, Entry>,
    /// Per notebook: clock ticks of its processes that have exited.
    exited: Vec<u64>,
    generation: u64,
    /// How many requested scans the last finished one covers.
    covered: u64,
    buf: Vec<u8>,
}

impl Accounting {
    /// Accounting for one notebook per marker, in this order. Reads
    /// nothing until the first [`scan`](Self::scan).
    pub fn new(markers: impl IntoIterator<Item = String>) -> Self {
        let markers: HashMap<Vec<u8>, usize> = markers
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m.into_bytes(), i))
            .collect();
        let notebooks = markers.len();
        Accounting {
            books: Mutex::new(Books::new(notebooks)),
            requested: AtomicU64::new(0),
            last: RwLock::new(Arc::new(Scan {
                notebooks: vec![Tally::default(); notebooks],
                ..Scan::default()
            })),
            markers,
        }
    }

    /// A scan that started after this call: its own, or one that another
    /// caller started meanwhile. Blocking.
    pub fn scan(&self) -> Arc<Scan> {
        self.scan_for(self.ticket())
    }

    /// Asks for a scan: one that starts after this call covers it.
    fn ticket(&self) -> u64 {
        self.requested.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The scan that covers `ticket`: the last one if it does, else a new
    /// one. Blocking.
    fn scan_for(&self, ticket: u64) -> Arc<Scan> {
        let mut books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        if books.covered >= ticket {
            return self.last();
        }
        // Every request counted by now was made before this scan starts.
        let upto = self.requested.load(Ordering::SeqCst);
        let started = Instant::now();
        let rows: Vec<(i32, Stat)> = {
            let buf = &mut books.buf;
            all_pids()
                .into_iter()
                .filter_map(|pid| Some((pid, read_stat(pid, buf)?)))
                .collect()
        };
        let markers = &self.markers;
        let notebooks = books.apply(&rows, |pid| {
            marker_of(pid).and_then(|m| markers.get(&m).copied())
        });
        let scan = Arc::new(Scan {
            notebooks,
            processes: rows.len(),
            duration: started.elapsed(),
        });
        books.covered = upto;
        *self.last.write().unwrap_or_else(PoisonError::into_inner) = scan.clone();
        scan
    }

    /// The last scan's result, without scanning.
    fn last(&self) -> Arc<Scan> {
        self.last
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Scans for async callers: each asks, then waits its turn without a
/// thread, so 1,000 stops at once wait for a scan or two on one blocking
/// thread instead of filling the blocking pool.
pub(super) struct Scanner {
    accounting: Arc<Accounting>,
    turn: tokio::sync::Mutex<()>,
}

impl Scanner {
    pub(super) fn new(accounting: Accounting) -> Self {
        Scanner {
            accounting: Arc::new(accounting),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// A scan that started after this call, on the blocking pool.
    pub(super) async fn scan(&self) -> Arc<Scan> {
        let ticket = self.accounting.ticket();
        let _turn = self.turn.lock().await;
        let accounting = self.accounting.clone();
        match tokio::task::spawn_blocking(move || accounting.scan_for(ticket)).await {
            Ok(scan) => scan,
            Err(_) => self.accounting.last(),
        }
    }

    /// The last scan's result, without scanning.
    pub(super) fn last(&self) -> Arc<Scan> {
        self.accounting.last()
    }
}

impl Books {
    pub(super) fn new(notebooks: usize) -> Self {
        Books {
            known: HashMap::new(),
            exited: vec![0; notebooks],
            generation: 0,
            covered: 0,
            buf: Vec::with_capacity(512),
        }
    }

    /// Takes one scan's rows (pid, stat): updates what is known, assigns
    /// new processes (`marker` says which notebook a process's environment
    /// names, if any), retires the gone ones, and tallies each notebook.
    pub(super) fn apply(
        &mut self,
        rows: &[(i32, Stat)],
        mut marker: impl FnMut(i32) -> Option<usize>,
    ) -> Vec<Tally> {
        self.generation += 1;
        let generation = self.generation;
        // Rows of processes to (re)assign, by pid.
        let mut fresh: HashMap<i32, usize> = HashMap::new();
        for (i, (pid, st)) in rows.iter().enumerate() {
            match self.known.get_mut(pid) {
                Some(e) if e.start == st.start && (e.owner.is_some() || e.comm == st.comm) => {
                    e.ticks = e.ticks.max(st.cpu_ticks);
                    e.rss_pages = st.rss_pages;
                    e.ended = st.ended();
                    e.seen = generation;
                }
                _ => {
                    fresh.insert(*pid, i);
                }
            }
        }
        // Gone: not seen in this scan, its pid taken by another process, or
        // exec'd since (it is assigned again below).
        let exited = &mut self.exited;
        self.known.retain(|_, e| {
            let gone = e.seen != generation;
            if let (true, Some(owner)) = (gone, e.owner) {
                exited[owner] += e.ticks;
            }
            !gone
        });
        let mut chain = Vec::new();
        for (&pid, _) in fresh.iter() {
            if self.known.contains_key(&pid) {
                continue;
            }
            // Up the parent chain to a process whose notebook is known (or
            // that names one), then everything on the way belongs to it.
            chain.clear();
            let mut cur = pid;
            let owner = loop {
                if let Some(e) = self.known.get(&cur) {
                    break e.owner;
                }
                let Some(&i) = fresh.get(&cur) else {
                    break None;
                };
                chain.push(i);
                if let Some(owner) = marker(cur) {
                    break Some(owner);
                }
                if chain.len() > MAX_DEPTH {
                    break None;
                }
                cur = rows[i].1.ppid;
            };
            for &i in &chain {
                let (pid, st) = &rows[i];
                self.known.insert(
                    *pid,
                    Entry {
                        start: st.start,
                        owner,
                        ticks: st.cpu_ticks,
                        rss_pages: st.rss_pages,
                        ended: st.ended(),
                        comm: st.comm,
                        seen: generation,
                    },
                );
            }
        }
        self.tally()
    }

    fn tally(&self) -> Vec<Tally> {
        let mut out: Vec<Tally> = self
            .exited
            .iter()
            .map(|&cpu_ticks| Tally {
                cpu_ticks,
                ..Tally::default()
            })
            .collect();
        for (&pid, e) in &self.known {
            let Some(t) = e.owner.and_then(|o| out.get_mut(o)) else {
                continue;
            };
            t.cpu_ticks += e.ticks;
            if !e.ended {
                t.rss_pages += e.rss_pages;
                t.members.push((pid, e.start));
            }
        }
        for t in &mut out {
            t.members.sort_unstable();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process as a scan reads it.
    fn row(pid: i32, ppid: i32, start: u64, ticks: u64) -> (i32, Stat) {
        let mut comm = [0; 16];
        comm[..4].copy_from_slice(b"proc");
        (
            pid,
            Stat {
                state: b'S',
                ppid,
                pgid: pid,
                cpu_ticks: ticks,
                start,
                rss_pages: 10,
                comm,
            },
        )
    }

    /// Markers by pid: which notebook a process's environment names.
    fn marked(pairs: &[(i32, usize)]) -> impl FnMut(i32) -> Option<usize> + '_ {
        move |pid| pairs.iter().find(|(p, _)| *p == pid).map(|&(_, n)| n)
    }

    fn pids(t: &Tally) -> Vec<i32> {
        t.members.iter().map(|&(pid, _)| pid).collect()
    }

    #[test]
    fn markers_and_parents_assign_processes_and_others_are_left_out() {
        let mut books = Books::new(2);
        // 10: notebook 0's server; 11 its kernel; 12 a child that dropped
        // the marker; 13 that child's child; 20: notebook 1's server, whose
        // child 21 names notebook 0 (the marker wins); 30 is nobody's.
        let rows = [
            row(1, 0, 1, 0),
            row(10, 1, 100, 5),
            row(11, 10, 110, 7),
            row(12, 11, 120, 1),
            row(13, 12, 130, 2),
            row(20, 1, 200, 3),
            row(21, 20, 210, 4),
            row(30, 1, 300, 50),
        ];
        let t = books.apply(&rows, marked(&[(10, 0), (11, 0), (20, 1), (21, 0)]));
        assert_eq!(pids(&t[0]), vec![10, 11, 12, 13, 21]);
        assert_eq!(pids(&t[1]), vec![20]);
        assert_eq!(t[0].cpu_ticks, 5 + 7 + 1 + 2 + 4);
        assert_eq!(t[0].rss_pages, 50);
        assert_eq!(t[1].cpu_ticks, 3);
    }

    #[test]
    fn a_process_stays_its_notebook_s_after_its_parent_exits_and_its_cpu_after_its_own_exit() {
        let mut books = Books::new(1);
        let t = books.apply(
            &[row(10, 1, 100, 5), row(12, 10, 120, 30)],
            marked(&[(10, 0)]),
        );
        assert_eq!(t[0].cpu_ticks, 35);
        // The parent exits; its child is re-parented to init and goes on.
        let t = books.apply(&[row(12, 1, 120, 40)], marked(&[]));
        assert_eq!(pids(&t[0]), vec![12]);
        assert_eq!(t[0].cpu_ticks, 5 + 40, "the exited parent's CPU is kept");
        // The child exits too: the counter keeps what it had.
        let t = books.apply(&[], marked(&[]));
        assert!(t[0].members.is_empty());
        assert_eq!(t[0].cpu_ticks, 45);
        // A zombie is no member, but its CPU counts.
        let mut zombie = row(14, 1, 140, 9);
        zombie.1.state = b'Z';
        let t = books.apply(&[zombie], marked(&[(14, 0)]));
        assert!(t[0].members.is_empty());
        assert_eq!(t[0].cpu_ticks, 54);
    }

    #[test]
    fn a_reused_pid_is_a_new_process_and_an_exec_is_looked_at_again() {
        let mut books = Books::new(1);
        books.apply(&[row(10, 1, 100, 5)], marked(&[(10, 0)]));
        // Pid 10 now belongs to a process that started later, unmarked.
        let t = books.apply(&[row(10, 1, 150, 1)], marked(&[]));
        assert!(t[0].members.is_empty());
        assert_eq!(t[0].cpu_ticks, 5);
        // An unmarked process seen before its exec (nbidle's own child
        // between fork and exec) is read again once its command changes...
        let t = books.apply(&[row(10, 1, 150, 1)], marked(&[(10, 0)]));
        assert!(t[0].members.is_empty(), "the same image is not read again");
        let mut execd = row(10, 1, 150, 2);
        execd.1.comm[..4].copy_from_slice(b"jupy");
        let t = books.apply(&[execd], marked(&[(10, 0)]));
        assert_eq!(pids(&t[0]), vec![10]);
        // ... and a notebook's process that execs without the marker stays.
        let mut again = execd;
        again.1.comm[..4].copy_from_slice(b"pyth");
        let t = books.apply(&[again], marked(&[]));
        assert_eq!(pids(&t[0]), vec![10]);
    }

    #[test]
    fn scans_share_and_find_marked_processes() {
        let marker = format!("test-{}-{}", std::process::id(), line!());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(super::super::procfs::MARKER_ENV, &marker)
            .spawn()
            .unwrap();
        let accounting = Accounting::new([marker, "other".to_string()]);
        assert_eq!(
            accounting.last().processes_read(),
            0,
            "nothing before a scan"
        );
        let scan = accounting.scan();
        assert_eq!(scan.notebooks[0].members.len(), 1);
        assert_eq!(scan.notebooks[0].members[0].0, child.id() as i32);
        assert!(scan.processes_read() > 1);
        assert!(scan.notebooks[1].members.is_empty());
        let (_, rss, n) = scan.usage(0);
        assert!(rss > 0 && n == 1, "{rss} {n}");
        // Concurrent callers: each gets a scan that started after it asked.
        let accounting = Arc::new(accounting);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let a = accounting.clone();
                std::thread::spawn(move || a.scan().notebooks[0].members.len())
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 1);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(accounting.scan().notebooks[0].members.is_empty());
    }
}
