//! What the benchmarks that run the release `nbidle` binary share: its
//! start with a service's environment, its stop, polling the API, a
//! stand-in Jupyter answering probes, and reading nbidle's memory and
//! descriptors from `/proc`. Not every benchmark uses every item. A
//! benchmark using it also declares `mod common` (tests/common), whose
//! `free_port` never gives the same port twice in one process.
#![allow(dead_code)]

pub mod fleet;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warp::Filter;

use crate::common::free_port;

/// Raises this process's open-file limit (and so nbidle's, its child's) to
/// the hard limit: thousands of notebooks need thousands of processes, log
/// files and, with their stopped pages, listeners. Returns the new limit.
pub fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    r.rlim_cur
}

/// A `kB` field of `/proc/<pid>/status` (`"VmRSS:"`, `"VmHWM:"`).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The process's open descriptors, and how many of them are sockets.
pub fn open_fds(pid: u32) -> (usize, usize) {
    let (mut all, mut sockets) = (0, 0);
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    (all, sockets)
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs nbidle with the small environment a service has: cargo's (with its
/// LD_LIBRARY_PATH) would be inherited by every notebook, and each stand-in's
/// dynamic loader would search cargo's library dirs, costing more CPU than
/// nbidle itself spends on start-up. Its log level is `warn`, or
/// `NBIDLE_BENCH_LOG` when set (to see where a run spends its time).
pub fn serve(cfg: &Path) -> Child {
    let log = std::env::var("NBIDLE_BENCH_LOG").unwrap_or_else(|_| "warn".into());
    Command::new(env!("CARGO_BIN_EXE_nbidle"))
        .args(["serve", "--config"])
        .arg(cfg)
        .current_dir(cfg.parent().unwrap())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("NBIDLE_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// SIGTERM, and the time until nbidle has exited.
pub fn terminate(mut child: Child) -> Duration {
    let t = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    t.elapsed()
}

/// nbidle, stopped (and its notebooks with it) when dropped, also when
/// the benchmark fails.
pub struct Served(pub Child);

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Polls until `f` answers, every `every`; fails the benchmark after
/// `limit`.
pub async fn until<F, Fut>(what: &str, (every, limit): (Duration, Duration), mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < limit, "{what}: timed out");
        tokio::time::sleep(every).await;
    }
}

/// How many notebooks the API reports with `status` (None before it
/// answers with a list).
pub async fn count_status(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    status: &str,
) -> Option<usize> {
    let r = http
        .get(format!("{base}/api/v1/notebooks"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    Some(
        v["notebooks"]
            .as_array()?
            .iter()
            .filter(|n| n["status"] == status)
            .count(),
    )
}

/// A stand-in for every notebook's Jupyter, on one port: answers readiness
/// probes and the exporter's probes like a booted Jupyter server with no
/// kernels and no terminals. Returns its port.
pub fn serve_probes() -> u16 {
    let port = free_port();
    tokio::spawn(
        warp::serve(warp::path::full().map(|p: warp::path::FullPath| {
            if p.as_str().ends_with("/api/status") {
                r#"{"started":"2026-01-01T08:00:00Z"}"#
            } else {
                "[]"
            }
        }))
        .run(([127, 0, 0, 1], port)),
    );
    port
}
