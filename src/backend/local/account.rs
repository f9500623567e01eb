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
//! A full scan reads `/proc/<pid>/stat` of every process; the environment
//! only of a process it has not seen before, or one that has since exec'd
//! and belongs to no notebook (the command name changed: a child nbidle
//! spawned seen between its fork and its exec). A notebook's scan (a stop's)
//! lists `/proc` and reads only new processes and that notebook's: a pid
//! reused since the last full scan by one of the notebook's processes, where
//! nbidle knew an unrelated process, is found at the next full scan. Per
//! notebook it keeps a CPU counter that never decreases while nbidle runs:
//! the live processes' CPU time (user + system) plus what each exited one
//! had used when last seen (what a process used between the last scan and
//! its exit is not counted).
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
    /// What the next scan must read, and the scans asked for so far (changed
    /// together, so a scan that takes the one knows the other).
    wanted: Mutex<Wanted>,
    requested: AtomicU64,
    last: RwLock<Arc<Scan>>,
    /// The last full scan's duration and the processes it read.
    last_full: Mutex<(Duration, usize)>,
}

/// What a scan reads besides the processes it has not seen before.
#[derive(Debug, Default)]
struct Wanted {
    /// Every process.
    full: bool,
    /// The processes of these notebooks.
    notebooks: Vec<usize>,
}

/// One scan's result.
#[derive(Debug, Default)]
pub struct Scan {
    /// Per notebook, in the order of the markers given to
    /// [`Accounting::new`].
    tallies: Vec<Tally>,
    /// Every notebook's live processes: (notebook, pid, start time), by
    /// notebook and pid.
    members: Vec<(usize, i32, u64)>,
    /// Processes listed in `/proc`.
    listed: usize,
    /// Processes whose `stat` this scan read.
    read: usize,
    duration: Duration,
}

/// What one notebook's processes use.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    /// CPU time of its processes since nbidle started, in clock ticks:
    /// the live ones' and what the exited ones had when last seen.
    pub(super) cpu_ticks: u64,
    pub(super) rss_pages: u64,
    /// Live processes (zombies left out).
    pub(super) processes: usize,
}

impl Scan {
    /// Processes listed in `/proc` (the notebooks' and every other).
    pub fn processes_listed(&self) -> usize {
        self.listed
    }

    /// Processes whose `/proc/<pid>/stat` this scan read: all of them in a
    /// full scan.
    pub fn processes_read(&self) -> usize {
        self.read
    }

    /// How long the scan took.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The `i`th notebook's CPU seconds, resident bytes and live processes.
    pub fn usage(&self, i: usize) -> (f64, u64, usize) {
        let (hz, page) = units();
        self.tallies.get(i).map_or((0.0, 0, 0), |t| {
            (
                t.cpu_ticks as f64 / hz as f64,
                t.rss_pages * page,
                t.processes,
            )
        })
    }

    /// The `i`th notebook's live processes, as (pid, start time), by pid.
    pub(super) fn members(&self, i: usize) -> Vec<(i32, u64)> {
        let from = self.members.partition_point(|m| m.0 < i);
        self.members[from..]
            .iter()
            .take_while(|m| m.0 == i)
            .map(|&(_, pid, start)| (pid, start))
            .collect()
    }

    /// Whether any scan has run: before one, nothing is known.
    pub(super) fn scanned(&self) -> bool {
        self.listed > 0
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
            wanted: Mutex::new(Wanted::default()),
            requested: AtomicU64::new(0),
            last: RwLock::new(Arc::new(Scan {
                tallies: vec![Tally::default(); notebooks],
                ..Scan::default()
            })),
            last_full: Mutex::new((Duration::ZERO, 0)),
            markers,
        }
    }

    /// A full scan that started after this call: its own, or one that
    /// another caller started meanwhile. Blocking.
    pub fn scan(&self) -> Arc<Scan> {
        self.scan_for(self.ask(None))
    }

    /// A scan that started after this call and read the `i`th notebook's
    /// processes and every new one (a stop's). Blocking.
    pub fn scan_notebook(&self, i: usize) -> Arc<Scan> {
        self.scan_for(self.ask(Some(i)))
    }

    /// Asks for a scan of every process (`None`) or of one notebook's: one
    /// that starts after this call covers it.
    fn ask(&self, notebook: Option<usize>) -> u64 {
        let mut wanted = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        match notebook {
            None => wanted.full = true,
            Some(i) => wanted.notebooks.push(i),
        }
        self.requested.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The scan that covers `ticket`: the last one if it does, else a new
    /// one of what was asked for so far. Blocking.
    fn scan_for(&self, ticket: u64) -> Arc<Scan> {
        let mut books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        if books.covered >= ticket {
            return self.last();
        }
        let (wanted, upto) = {
            let mut w = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
            (
                std::mem::take(&mut *w),
                self.requested.load(Ordering::SeqCst),
            )
        };
        let mut reread = vec![wanted.full; self.markers.len()];
        for i in wanted.notebooks {
            if let Some(r) = reread.get_mut(i) {
                *r = true;
            }
        }
        let started = Instant::now();
        let pids = all_pids();
        let markers = &self.markers;
        let (tallies, members, read) = books.apply(
            &pids,
            |owner| wanted.full || owner.is_some_and(|o| reread.get(o) == Some(&true)),
            read_stat,
            |pid| marker_of(pid).and_then(|m| markers.get(&m).copied()),
        );
        let scan = Arc::new(Scan {
            tallies,
            members,
            listed: pids.len(),
            read,
            duration: started.elapsed(),
        });
        if wanted.full {
            *self
                .last_full
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = (scan.duration, scan.read);
        }
        books.covered = upto;
        *self.last.write().unwrap_or_else(PoisonError::into_inner) = scan.clone();
        scan
    }

    /// Whether a finished scan covers `ticket`.
    fn covers(&self, ticket: u64) -> bool {
        let books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        books.covered >= ticket
    }

    /// The last scan's result, without scanning.
    fn last(&self) -> Arc<Scan> {
        self.last
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The last full scan's duration and the processes it read.
    pub(super) fn last_full(&self) -> (Duration, usize) {
        *self
            .last_full
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The least time from one scan's end to the next one's start: stops
/// arriving one after another share scans, so 50 stops a second over
/// 10,000 processes cost at most 10 listings of `/proc` a second.
const SCAN_GAP: Duration = Duration::from_millis(100);

/// Scans for async callers: each asks, then waits its turn without a
/// thread, so 1,000 stops at once wait for a scan or two on one blocking
/// thread instead of filling the blocking pool.
pub(super) struct Scanner {
    accounting: Arc<Accounting>,
    /// Held by the scan in progress; holds when the last one ended.
    turn: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Scanner {
    pub(super) fn new(accounting: Accounting) -> Self {
        Scanner {
            accounting: Arc::new(accounting),
            turn: tokio::sync::Mutex::new(None),
        }
    }

    /// A full scan that started after this call, on the blocking pool.
    pub(super) async fn scan(&self) -> Arc<Scan> {
        self.run(None).await
    }

    /// A scan that re-read the `i`th notebook's processes after this call.
    pub(super) async fn scan_notebook(&self, i: usize) -> Arc<Scan> {
        self.run(Some(i)).await
    }

    async fn run(&self, notebook: Option<usize>) -> Arc<Scan> {
        let ticket = self.accounting.ask(notebook);
        let mut last_end = self.turn.lock().await;
        if self.accounting.covers(ticket) {
            return self.accounting.last();
        }
        if let Some(end) = *last_end {
            // Whoever asks meanwhile is served by this scan too.
            tokio::time::sleep_until(end + SCAN_GAP).await;
        }
        let accounting = self.accounting.clone();
        let scan = match tokio::task::spawn_blocking(move || accounting.scan_for(ticket)).await {
            Ok(scan) => scan,
            Err(_) => self.accounting.last(),
        };
        *last_end = Some(tokio::time::Instant::now());
        scan
    }

    /// The last scan's result, without scanning.
    pub(super) fn last(&self) -> Arc<Scan> {
        self.accounting.last()
    }

    /// The last full scan's duration and the processes it read.
    pub(super) fn last_full(&self) -> (Duration, usize) {
        self.accounting.last_full()
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

    /// Takes one scan: `pids` listed in `/proc`; `reread` says whether a
    /// known process owned by a notebook (or by none) is read again, else
    /// it is only marked present; `read` reads a process's stat (into the
    /// buffer it is given); `marker` says which notebook a new process's
    /// environment names, if any. Updates what is known, assigns new
    /// processes, retires the gone ones, and tallies each notebook; returns
    /// the tallies, the members and how many stats were read.
    pub(super) fn apply(
        &mut self,
        pids: &[i32],
        reread: impl Fn(Option<usize>) -> bool,
        mut read: impl FnMut(i32, &mut Vec<u8>) -> Option<Stat>,
        mut marker: impl FnMut(i32) -> Option<usize>,
    ) -> (Vec<Tally>, Vec<(usize, i32, u64)>, usize) {
        self.generation += 1;
        let generation = self.generation;
        // Processes to (re)assign, by pid.
        let mut fresh: Vec<(i32, Stat)> = Vec::new();
        let mut stats_read = 0;
        for &pid in pids {
            if let Some(e) = self.known.get_mut(&pid) {
                if !reread(e.owner) {
                    e.seen = generation;
                    continue;
                }
            }
            let Some(st) = read(pid, &mut self.buf) else {
                continue;
            };
            stats_read += 1;
            match self.known.get_mut(&pid) {
                Some(e) if e.start == st.start && (e.owner.is_some() || e.comm == st.comm) => {
                    e.ticks = e.ticks.max(st.cpu_ticks);
                    e.rss_pages = st.rss_pages;
                    e.ended = st.ended();
                    e.seen = generation;
                }
                _ => fresh.push((pid, st)),
            }
        }
        fresh.sort_unstable_by_key(|&(pid, _)| pid);
        let fresh_stat = |pid: i32| {
            fresh
                .binary_search_by_key(&pid, |&(p, _)| p)
                .ok()
                .map(|i| fresh[i].1)
        };
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
        // Many processes gone at once (a mass stop, another program's
        // children): give the memory back rather than keep it for good.
        if self.known.capacity() > 4 * self.known.len() + 1024 {
            self.known.shrink_to_fit();
        }
        let mut chain = Vec::new();
        for &(pid, _) in &fresh {
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
                let Some(st) = fresh_stat(cur) else {
                    break None;
                };
                chain.push((cur, st));
                if let Some(owner) = marker(cur) {
                    break Some(owner);
                }
                if chain.len() > MAX_DEPTH {
                    break None;
                }
                cur = st.ppid;
            };
            for &(pid, st) in &chain {
                self.known.insert(
                    pid,
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
        let (tallies, members) = self.tally();
        (tallies, members, stats_read)
    }

    fn tally(&self) -> (Vec<Tally>, Vec<(usize, i32, u64)>) {
        let mut tallies: Vec<Tally> = self
            .exited
            .iter()
            .map(|&cpu_ticks| Tally {
                cpu_ticks,
                ..Tally::default()
            })
            .collect();
        let mut members = Vec::new();
        for (&pid, e) in &self.known {
            let Some((owner, t)) = e.owner.and_then(|o| Some((o, tallies.get_mut(o)?))) else {
                continue;
            };
            t.cpu_ticks += e.ticks;
            if !e.ended {
                t.rss_pages += e.rss_pages;
                t.processes += 1;
                members.push((owner, pid, e.start));
            }
        }
        members.sort_unstable();
        (tallies, members)
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

    /// A full scan of `rows`: every process's stat read.
    fn apply(
        books: &mut Books,
        rows: &[(i32, Stat)],
        marker: impl FnMut(i32) -> Option<usize>,
    ) -> Scan {
        let pids: Vec<i32> = rows.iter().map(|r| r.0).collect();
        let read = |pid: i32, _: &mut Vec<u8>| rows.iter().find(|r| r.0 == pid).map(|r| r.1);
        scan(books.apply(&pids, |_| true, read, marker))
    }

    /// The scan's view of `apply`'s result.
    fn scan(applied: (Vec<Tally>, Vec<(usize, i32, u64)>, usize)) -> Scan {
        Scan {
            tallies: applied.0,
            members: applied.1,
            listed: 1,
            read: applied.2,
            ..Scan::default()
        }
    }

    fn pids(s: &Scan, i: usize) -> Vec<i32> {
        s.members(i).iter().map(|&(pid, _)| pid).collect()
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
        let s = apply(
            &mut books,
            &rows,
            marked(&[(10, 0), (11, 0), (20, 1), (21, 0)]),
        );
        assert_eq!(pids(&s, 0), vec![10, 11, 12, 13, 21]);
        assert_eq!(pids(&s, 1), vec![20]);
        assert_eq!(s.tallies[0].cpu_ticks, 5 + 7 + 1 + 2 + 4);
        assert_eq!(s.tallies[0].rss_pages, 50);
        assert_eq!(s.tallies[0].processes, 5);
        assert_eq!(s.tallies[1].cpu_ticks, 3);
    }

    #[test]
    fn a_process_stays_its_notebook_s_after_its_parent_exits_and_its_cpu_after_its_own_exit() {
        let mut books = Books::new(1);
        let rows = [row(10, 1, 100, 5), row(12, 10, 120, 30)];
        let s = apply(&mut books, &rows, marked(&[(10, 0)]));
        assert_eq!(s.tallies[0].cpu_ticks, 35);
        // The parent exits; its child is re-parented to init and goes on.
        let s = apply(&mut books, &[row(12, 1, 120, 40)], marked(&[]));
        assert_eq!(pids(&s, 0), vec![12]);
        assert_eq!(
            s.tallies[0].cpu_ticks,
            5 + 40,
            "the exited parent's CPU is kept"
        );
        // The child exits too: the counter keeps what it had.
        let s = apply(&mut books, &[], marked(&[]));
        assert!(s.members(0).is_empty());
        assert_eq!(s.tallies[0].cpu_ticks, 45);
        // A zombie is no member, but its CPU counts.
        let mut zombie = row(14, 1, 140, 9);
        zombie.1.state = b'Z';
        let s = apply(&mut books, &[zombie], marked(&[(14, 0)]));
        assert!(s.members(0).is_empty());
        assert_eq!(s.tallies[0].cpu_ticks, 54);
    }

    #[test]
    fn a_reused_pid_is_a_new_process_and_an_exec_is_looked_at_again() {
        let mut books = Books::new(1);
        apply(&mut books, &[row(10, 1, 100, 5)], marked(&[(10, 0)]));
        // Pid 10 now belongs to a process that started later, unmarked.
        let s = apply(&mut books, &[row(10, 1, 150, 1)], marked(&[]));
        assert!(s.members(0).is_empty());
        assert_eq!(s.tallies[0].cpu_ticks, 5);
        // An unmarked process seen before its exec (nbidle's own child
        // between fork and exec) is read again once its command changes...
        let s = apply(&mut books, &[row(10, 1, 150, 1)], marked(&[(10, 0)]));
        assert!(s.members(0).is_empty(), "the same image is not read again");
        let mut execd = row(10, 1, 150, 2);
        execd.1.comm[..4].copy_from_slice(b"jupy");
        let s = apply(&mut books, &[execd], marked(&[(10, 0)]));
        assert_eq!(pids(&s, 0), vec![10]);
        // ... and a notebook's process that execs without the marker stays.
        let mut again = execd;
        again.1.comm[..4].copy_from_slice(b"pyth");
        let s = apply(&mut books, &[again], marked(&[]));
        assert_eq!(pids(&s, 0), vec![10]);
    }

    #[test]
    fn a_process_listed_but_not_read_keeps_what_was_known_of_it() {
        let mut books = Books::new(2);
        let rows = [row(10, 1, 100, 5), row(20, 1, 200, 7), row(30, 1, 300, 1)];
        apply(&mut books, &rows, marked(&[(10, 0), (20, 1)]));
        // A scan of notebook 0: 20 and 30 listed only; 40 is new, a child
        // of 20; 10 read again.
        let now = [row(10, 1, 100, 9), row(40, 20, 400, 2)];
        let read = |pid: i32, _: &mut Vec<u8>| now.iter().find(|r| r.0 == pid).map(|r| r.1);
        let applied = books.apply(&[10, 20, 30, 40], |o| o == Some(0), read, marked(&[]));
        let s = scan(applied);
        assert_eq!(s.read, 2, "10 and the new 40");
        assert_eq!(pids(&s, 0), vec![10]);
        assert_eq!(pids(&s, 1), vec![20, 40]);
        assert_eq!(s.tallies[0].cpu_ticks, 9);
        assert_eq!(s.tallies[1].cpu_ticks, 7 + 2);
        // Not listed: gone, with the CPU last read.
        let s = scan(books.apply(&[10], |_| false, read, marked(&[])));
        assert!(s.members(1).is_empty());
        assert_eq!(s.tallies[1].cpu_ticks, 9);
    }

    #[test]
    fn scans_share_and_find_marked_processes() {
        let marker = format!("test-{}-{}", std::process::id(), line!());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(super::super::procfs::MARKER_ENV, &marker)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Right after its exec a process has no page resident yet: wait
        // for its first, read as the scan reads it (stat's rss field: the
        // kernel's count is approximate just after exec, and statm was
        // seen to show a page while the scan still read none).
        let resident = || {
            super::super::procfs::proc_stat(pid)
                .map(|st| st.rss_pages)
                .unwrap_or(0)
        };
        let until = Instant::now() + Duration::from_secs(10);
        while resident() == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let accounting = Accounting::new([marker, "other".to_string()]);
        assert!(!accounting.last().scanned(), "nothing before a scan");
        let scan = accounting.scan();
        assert_eq!(pids(&scan, 0), vec![pid]);
        // Processes of other programs may end between the listing and the
        // read, so a full scan reads at most what it listed.
        assert!(scan.processes_read() > 1 && scan.processes_read() <= scan.processes_listed());
        assert!(pids(&scan, 1).is_empty());
        let (_, rss, n) = scan.usage(0);
        assert!(rss > 0 && n == 1, "{rss} {n}");
        // A notebook's scan reads its processes and no others.
        let light = accounting.scan_notebook(1);
        assert_eq!(pids(&light, 0), vec![pid]);
        assert!(light.processes_read() < scan.processes_read());
        assert_eq!(accounting.last_full().1, scan.processes_read());
        // Concurrent callers: each gets a scan that started after it asked.
        let accounting = Arc::new(accounting);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let a = accounting.clone();
                std::thread::spawn(move || {
                    let s = if i % 2 == 0 {
                        a.scan()
                    } else {
                        a.scan_notebook(0)
                    };
                    pids(&s, 0)
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), vec![pid]);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(accounting.scan_notebook(0).members(0).is_empty());
    }
}
