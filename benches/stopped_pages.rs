//! `make bench`: what 1,000 stopped notebooks' pages cost nbidle, against
//! the release binary supervising real (stand-in) notebook processes.
//!
//! nbidle starts with 1,000 `sleep` notebooks, each on a port of its own
//! (nothing answers there, so they stay "starting", as a Jupyter server
//! still booting); all are stopped through the API, 50 requests at a time.
//! Measured: nbidle's resident memory and open descriptors 5 s and 15 s
//! after the last page listens; then rounds of one browser-like `GET` to every page
//! (each answer checked: 503 and the stopped page of that notebook), each
//! round measured 12 s after it (the page's 10 s head timeout has closed
//! the idle connections by then), with the time of each visit; each visit
//! on a connection of its own, closed after the answer. The same
//! with `stopped_page: false` for comparison, where nothing listens.
//!
//! `NBIDLE_BENCH_ROUNDS` changes the number of rounds (default 6).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::free_port;
use futures_util::{stream, StreamExt};
use support::{ms, open_fds, percentile, proc_kib, raise_fd_limit, serve, until, Served};

const NOTEBOOKS: usize = 1000;
const API_TOKEN: &str = "bench-api";
/// After the last page listens, before the first measurement, and before
/// the second: past the page's head timeout (10 s), which closes the
/// connections of the readiness probes' last requests (below).
const SETTLE: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(15)];
/// After a round, before its measurement: past the page's head timeout
/// (10 s), which ends idle keep-alive connections.
const AFTER_ROUND: Duration = Duration::from_secs(12);
/// How often a wait polls, and when it gives up.
const POLL: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(300));

fn write_config(dir: &Path, port: u16, ports: &[u16], stopped_page: bool) -> PathBuf {
    let mut nbs = String::new();
    for (i, p) in ports.iter().enumerate() {
        nbs.push_str(&format!(
            "      - {{name: nb-{i}, command: [sleep, \"1800\"], workdir: ws/nb-{i}, url: \"http://127.0.0.1:{p}/nb-{i}/\"}}\n"
        ));
    }
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\ndata_dir: data\nauth: {{webhook_token: bench-webhook, api_tokens: [{API_TOKEN}]}}\n\
         backend:\n  kind: local\n  local:\n    stop_grace_period: 5s\n    stop_on_exit: true\n    stopped_page: {stopped_page}\n    notebooks:\n{nbs}"
    );
    let cfg = dir.join("nbidle.yaml");
    std::fs::write(&cfg, config).unwrap();
    cfg
}

/// Loopback ports in the LISTEN state, from /proc/net/tcp.
fn listening_ports() -> HashSet<u16> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    tcp.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = f.get(1)?.rsplit(':').next()?;
            (f.get(3)? == &"0A").then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

struct Sample {
    rss_kib: u64,
    fds: usize,
    sockets: usize,
}

fn sample(pid: u32) -> Sample {
    let (fds, sockets) = open_fds(pid);
    Sample {
        rss_kib: proc_kib(pid, "VmRSS:"),
        fds,
        sockets,
    }
}

fn row(what: &str, s: &Sample, extra: &str) {
    println!(
        "| {what} | {:.1} MiB | {} ({} sockets) | {extra} |",
        s.rss_kib as f64 / 1024.0,
        s.fds,
        s.sockets
    );
}

/// One visit to every page, as a browser navigates; each answer must be
/// that notebook's stopped page. Sorted visit times.
async fn round(ports: &[u16]) -> Vec<Duration> {
    // Each connection closed after its answer: all pages share a cap of 256
    // connections, which a client keeping 1,000 idle ones would fill.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut times = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter().enumerate() {
        let t = Instant::now();
        let r = http
            .get(format!("http://127.0.0.1:{p}/nb-{i}/lab"))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-dest", "document")
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        times.push(t.elapsed());
        assert_eq!(status, 503, "nb-{i}: {body}");
        assert!(
            body.contains(&format!("<h1>nb-{i} is stopped</h1>")),
            "nb-{i}: not its stopped page: {body}"
        );
    }
    times.sort();
    times
}

async fn count(http: &reqwest::Client, base: &str, status: &str) -> Option<usize> {
    support::count_status(http, base, API_TOKEN, status).await
}

async fn one_run(http: &reqwest::Client, stopped_page: bool, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ports: Vec<u16> = (0..NOTEBOOKS).map(|_| free_port()).collect();
    let cfg = write_config(dir.path(), port, &ports, stopped_page);
    let child = Served(serve(&cfg));
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    until("every notebook started", POLL, || async {
        count(http, &base, "starting").await == Some(NOTEBOOKS)
    })
    .await;
    let t0 = Instant::now();
    let stops = (0..NOTEBOOKS).map(|i| {
        let url = format!("{base}/api/v1/notebooks/local/nb-{i}/stop");
        async move {
            let r = http.post(url).bearer_auth(API_TOKEN).send().await.unwrap();
            assert_eq!(r.status(), 200, "stopping nb-{i}");
        }
    });
    stream::iter(stops)
        .buffer_unordered(50)
        .collect::<Vec<()>>()
        .await;
    until("every notebook stopped", POLL, || async {
        count(http, &base, "stopped").await == Some(NOTEBOOKS)
    })
    .await;
    let stopped = t0.elapsed();
    if stopped_page {
        until("every page listening", POLL, || async {
            let listening = listening_ports();
            ports.iter().all(|p| listening.contains(p))
        })
        .await;
    }
    let listening = Instant::now();
    let listened = t0.elapsed();
    let what = format!("stopped_page: {stopped_page}");
    // A starting notebook's readiness probe sends one more request after
    // its stop, which reaches the page once it listens: an idle keep-alive
    // connection on each side until the head timeout.
    for settle in SETTLE {
        tokio::time::sleep_until((listening + settle).into()).await;
        row(
            &format!(
                "{what}: {NOTEBOOKS} stopped, {} s after the last page listens",
                settle.as_secs()
            ),
            &sample(pid),
            &format!(
                "stopped in {:.1} s, all listening at {:.1} s",
                stopped.as_secs_f64(),
                listened.as_secs_f64()
            ),
        );
    }
    for r in 1..=rounds {
        let times = round(&ports).await;
        tokio::time::sleep(AFTER_ROUND).await;
        row(
            &format!("{what}: after round {r} of {NOTEBOOKS} visits"),
            &sample(pid),
            &format!(
                "visit p50 / p99 / max {:.2} / {:.2} / {:.2} ms",
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.99)),
                ms(*times.last().unwrap())
            ),
        );
    }
    println!(
        "| {what}: peak (VmHWM) | {:.1} MiB | | |",
        proc_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    drop(child);
}

#[tokio::main]
async fn main() {
    raise_fd_limit();
    let rounds: usize = std::env::var("NBIDLE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let http = reqwest::Client::new();
    println!("| measurement | nbidle RSS | descriptors | |");
    println!("|---|---|---|---|");
    one_run(&http, false, 0).await;
    one_run(&http, true, rounds).await;
}
