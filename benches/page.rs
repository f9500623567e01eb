//! `make bench`: the notebook page for 1,000 and 10,000 notebooks, against
//! the release binary supervising real (stand-in) notebook processes.
//!
//! For each size: nbidle starts with that many `sleep` notebooks (a tiny
//! HTTP server in this process answers their readiness and the exporter's
//! probes, as a Jupyter server with no kernels would), every one running
//! and probed; a person signs in; then, one request after another on
//! loopback: the first page of the list (100 rows), the last page, a
//! filtered page (one owner of 50, 20 rows), and the script's state
//! refresh. Reported: request time p50 / p99 / max (nbidle's rendering
//! plus loopback transfer), bytes of each answer, and nbidle's resident
//! memory after a warm-up and after each of four batches of 1,000 more
//! page requests.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::free_port;
use support::{
    ms, percentile as pct, proc_kib, raise_fd_limit, serve, serve_probes, until, Served,
};

const SIZES: [usize; 2] = [1000, 10_000];
const REQUESTS: usize = 200;
const LEAK_REQUESTS: usize = 1000;
const LEAK_BATCHES: usize = 4;
const API_TOKEN: &str = "bench-api";
const OWNERS: usize = 50;
/// How often a wait polls, and when it gives up.
const POLL: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(600));

fn write_config(dir: &Path, n: usize, port: u16, probe_port: u16) -> PathBuf {
    let mut nbs = String::new();
    for i in 0..n {
        nbs.push_str(&format!(
            "      - {{name: nb-{i:05}, owner: user-{}@example.org, command: [sleep, \"1800\"], workdir: ws/nb-{i}, url: \"http://127.0.0.1:{probe_port}/nb-{i}/\"}}\n",
            i % OWNERS
        ));
    }
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\ndata_dir: data\nauth: {{webhook_token: bench-webhook, api_tokens: [{API_TOKEN}]}}\n\
         exporter: {{interval: 5s}}\n\
         backend:\n  kind: local\n  local:\n    stop_grace_period: 30s\n    stop_on_exit: true\n    notebooks:\n{nbs}"
    );
    let cfg = dir.join("nbidle.yaml");
    std::fs::write(&cfg, config).unwrap();
    cfg
}

/// Signs in as a browser does; the session cookie.
async fn sign_in(http: &reqwest::Client, base: &str) -> String {
    let r = http
        .post(format!("{base}/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={API_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let c = r.headers()["set-cookie"].to_str().unwrap();
    c.split(';').next().unwrap().to_string()
}

struct Timed {
    times: Vec<Duration>,
    bytes: usize,
    rows: usize,
}

async fn timed(http: &reqwest::Client, url: &str, cookie: &str, n: usize) -> Timed {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    let mut rows = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = http
            .get(url)
            .header("cookie", cookie)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let body = r.bytes().await.unwrap();
        times.push(t.elapsed());
        bytes = body.len();
        let text = String::from_utf8_lossy(&body);
        rows = text.matches("<tr data-id=").count() + text.matches("\"can_stop\"").count();
    }
    times.sort();
    Timed { times, bytes, rows }
}

async fn one_size(http: &reqwest::Client, n: usize, probe_port: u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(dir.path(), n, port, probe_port);
    let child = Served(serve(&cfg));
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    until("every notebook running", POLL, || async {
        support::count_status(http, &base, API_TOKEN, "running").await == Some(n)
    })
    .await;
    // One exporter round over all of them: the page shows time left.
    until("probed", POLL, || async {
        let m = http
            .get(format!("{base}/metrics/notebooks"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.lines()
            .filter(|l| l.starts_with("nbidle_notebook_probe_success{") && l.ends_with("} 1"))
            .count()
            == n
    })
    .await;
    eprintln!(
        "{n} notebooks running and probed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let cookie = sign_in(http, &base).await;
    let pid = child.0.id();
    let last_page = n.div_ceil(100);
    let pages = [
        ("first page", format!("{base}/")),
        ("last page", format!("{base}/?page={last_page}")),
        (
            "one owner's, filtered",
            format!("{base}/?owner=user-7%40example.org&status=running&page=1"),
        ),
        ("state refresh (JSON)", format!("{base}/page/states")),
    ];
    // Warm-up: allocator pools, connections.
    timed(http, &pages[0].1, &cookie, 50).await;
    let rss_warm = proc_kib(pid, "VmRSS:");
    for (what, url) in &pages {
        let t = timed(http, url, &cookie, REQUESTS).await;
        println!(
            "| {n} notebooks: {what} ({} rows) | {:.2} / {:.2} / {:.2} ms | {} bytes |",
            t.rows,
            ms(pct(&t.times, 0.5)),
            ms(pct(&t.times, 0.99)),
            ms(*t.times.last().unwrap()),
            t.bytes
        );
    }
    // Growth that stops is the allocator settling; a leak grows per batch.
    let mut rss = vec![rss_warm, proc_kib(pid, "VmRSS:")];
    for _ in 0..LEAK_BATCHES {
        timed(http, &pages[0].1, &cookie, LEAK_REQUESTS).await;
        rss.push(proc_kib(pid, "VmRSS:"));
    }
    let rss: Vec<String> = rss.iter().map(u64::to_string).collect();
    println!(
        "| {n} notebooks: nbidle RSS after warm-up, after the timings, then after each {LEAK_REQUESTS} more first pages | {} KiB; peak {} KiB |",
        rss.join(" / "),
        proc_kib(pid, "VmHWM:")
    );
    drop(child);
}

#[tokio::main]
async fn main() {
    raise_fd_limit();
    let probe_port = serve_probes();
    // A browser's POST /sign-in answer is the redirect itself.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    println!("| measurement | p50 / p99 / max | answer |");
    println!("|---|---|---|");
    for n in SIZES {
        one_size(&http, n, probe_port).await;
    }
}
