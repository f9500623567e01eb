//! `make bench` (process accounting part): the local backend's scan of
//! `/proc` over 1,000 notebooks with 5 processes each.
//!
//! Each notebook is a `sh` carrying its marker with four `sleep` children:
//! three inherit the marker, one runs without it (`env -u`) and is
//! accounted through its parent. The benchmark measures, in this process:
//! the first scan (every process's environment read once), then 20 scans in
//! a row (only `stat` read), then 20 scans of one notebook each (a stop's:
//! `/proc` listed, that notebook's processes read): wall time and CPU time
//! of the scanning thread per scan, and this process's resident memory
//! before the accounting and after the scans. A scan of the same machine without the notebooks'
//! processes is the baseline.
//!
//! `NBIDLE_BENCH_NOTEBOOKS` changes the number of notebooks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nbidle::backend::local::{Accounting, MARKER_ENV};

const PER_NOTEBOOK: usize = 5;
const SCANS: usize = 20;

/// The notebooks' processes, killed when dropped (their `sh` and the
/// children, which share its process group).
struct Notebooks(Vec<Child>);

impl Drop for Notebooks {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: a signal to the process group of a child of ours.
            unsafe { libc::killpg(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

fn spawn(markers: &[String]) -> Notebooks {
    let script =
        format!("sleep 3600 & sleep 3600 & sleep 3600 & env -u {MARKER_ENV} sleep 3600 & wait");
    let mut children = Vec::with_capacity(markers.len());
    for m in markers {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .env(MARKER_ENV, m)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        children.push(cmd.spawn().expect("spawning a notebook's processes"));
    }
    Notebooks(children)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `SCANS` scans in a row (full ones, or one notebook's each: a stop's):
/// (wall, CPU) of each, sorted by wall time.
fn scans(accounting: &Accounting, one_notebook: bool) -> Vec<(Duration, Duration)> {
    let mut out: Vec<(Duration, Duration)> = (0..SCANS)
        .map(|i| {
            let (t, c) = (Instant::now(), thread_cpu());
            if one_notebook {
                accounting.scan_notebook(i);
            } else {
                accounting.scan();
            }
            (t.elapsed(), thread_cpu() - c)
        })
        .collect();
    out.sort();
    out
}

fn report(what: &str, processes: usize, runs: &[(Duration, Duration)]) {
    let wall: Vec<f64> = runs.iter().map(|r| ms(r.0)).collect();
    let mut cpu: Vec<f64> = runs.iter().map(|r| ms(r.1)).collect();
    cpu.sort_by(f64::total_cmp);
    println!(
        "{what}: {processes} processes read; per scan wall min {:.1} / median {:.1} / max {:.1} ms, CPU median {:.1} ms (max {:.1})",
        wall[0],
        wall[wall.len() / 2],
        wall[wall.len() - 1],
        cpu[cpu.len() / 2],
        cpu[cpu.len() - 1],
    );
}

fn main() {
    let n: usize = std::env::var("NBIDLE_BENCH_NOTEBOOKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tag = std::process::id();
    let markers: Vec<String> = (0..n)
        .map(|i| format!("/bench/{tag}/notebooks/nb-{i}.json"))
        .collect();

    // Baseline: the machine as it is.
    let base = Accounting::new(markers.clone());
    base.scan();
    let runs = scans(&base, false);
    report("without the notebooks", base.scan().processes_read(), &runs);
    drop(base);

    let started = Instant::now();
    let notebooks = spawn(&markers);
    let rss_before = rss_kib();
    let accounting = Accounting::new(markers);
    // Until every process has started (and exec'd: a child seen before its
    // exec is looked at again once it has).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let scan = accounting.scan();
        let found: usize = (0..n).map(|i| scan.usage(i).2).sum();
        if found == n * PER_NOTEBOOK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {found} of {} processes found",
            n * PER_NOTEBOOK
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{n} notebooks x {PER_NOTEBOOK} processes spawned and found in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // A first scan over all of them: nbidle's start-up, every process's
    // environment read.
    let mut cold = Vec::new();
    for _ in 0..3 {
        let fresh = Accounting::new((0..n).map(|i| format!("/bench/{tag}/notebooks/nb-{i}.json")));
        let (t, c) = (Instant::now(), thread_cpu());
        let scan = fresh.scan();
        cold.push((t.elapsed(), thread_cpu() - c));
        assert_eq!(
            (0..n).map(|i| scan.usage(i).2).sum::<usize>(),
            n * PER_NOTEBOOK
        );
    }
    cold.sort();
    report(
        "first scan (environments read)",
        accounting.scan().processes_read(),
        &cold,
    );
    let runs = scans(&accounting, false);
    let scan = accounting.scan();
    report(
        &format!("{n} notebooks x {PER_NOTEBOOK}"),
        scan.processes_read(),
        &runs,
    );
    let stops = scans(&accounting, true);
    report(
        "one notebook's scan (a stop's: /proc listed, its processes read)",
        accounting.scan_notebook(0).processes_read(),
        &stops,
    );
    let found: usize = (0..n).map(|i| scan.usage(i).2).sum();
    assert_eq!(found, n * PER_NOTEBOOK, "every process accounted");
    let rss_after = rss_kib();
    println!(
        "RSS of this process: {rss_before} KiB before the accounting, {rss_after} KiB after the scans (+{} KiB)",
        rss_after.saturating_sub(rss_before)
    );
    let median_cpu = {
        let mut c: Vec<Duration> = runs.iter().map(|r| r.1).collect();
        c.sort();
        c[c.len() / 2]
    };
    println!(
        "at the default process_scan_interval (15s): {:.2}% of a core",
        median_cpu.as_secs_f64() / 15.0 * 100.0
    );
    drop(notebooks);
}
