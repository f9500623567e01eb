//! `make bench`: nbidle's start-up and webhook under load, against the
//! release binary supervising real (stand-in) notebook processes.
//!
//! - start-up with 10,000 notebooks: time until the listener answers
//!   (`/livez`, and `/readyz` saying not ready), until `/readyz` is ready
//!   (every notebook recovered: spawned), and until all run; then the same
//!   after a restart that adopts the 10,000 running processes;
//! - one webhook payload with 1,000 firing alerts for 1,000 notebooks: time
//!   until every stop is issued (the response returns after the last one);
//! - 1,000 single-alert payloads, 20 ms apart, while the exporter probes
//!   the 10,000 notebooks: p50/p99 latency;
//! - 1,000 single-alert payloads, one after another: p50/p99 latency;
//! - nbidle's peak RSS (VmHWM) over the whole run.
//!
//! The notebooks are `sleep` processes; a tiny HTTP server in this process
//! answers their readiness probes so they count as running, as Jupyter would.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{free_port, idle_alert, payload};
use serde_json::Value;
use support::{percentile, proc_kib, raise_fd_limit, serve, serve_probes, terminate, until};

const STARTUP_NOTEBOOKS: usize = 10_000;
const BATCH: usize = 1000;
const SINGLES: usize = 1000;
const WEBHOOK_TOKEN: &str = "bench-webhook";
const API_TOKEN: &str = "bench-api";
/// When a wait fails the benchmark.
const GIVE_UP: Duration = Duration::from_secs(300);

/// The idle alert for notebook `nb-{i}`.
fn alert(i: usize, starts_at: &str) -> Value {
    idle_alert("local", &format!("nb-{i}"), starts_at)
}

/// Posts a webhook body as Alertmanager does.
async fn deliver(http: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    http.post(url)
        .bearer_auth(WEBHOOK_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Writes a config for `n` `sleep` notebooks probed at `probe_port`. The
/// processes end by themselves after `life` seconds, should a run fail
/// before stopping them.
fn write_config(
    dir: &Path,
    n: usize,
    (port, probe_port): (u16, u16),
    life: u32,
    stop_on_exit: bool,
) -> PathBuf {
    let mut nbs = String::new();
    for i in 0..n {
        nbs.push_str(&format!(
            "      - {{name: nb-{i}, command: [sleep, \"{life}\"], workdir: ws/nb-{i}, url: \"http://127.0.0.1:{probe_port}/nb-{i}/\"}}\n"
        ));
    }
    // The shortest idle time the config allows: the notebooks have been
    // running longer than that when their alerts come, so the recheck
    // (nbidle's own latest probe shows work within the idle time) lets
    // every alert stop its notebook, and the figures time stops.
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\ndata_dir: data\nauth: {{webhook_token: {WEBHOOK_TOKEN}, api_tokens: [{API_TOKEN}]}}\n\
         autostop: {{idle_after: 3s, warn_before: 2s, evaluation_interval: 1s}}\n\
         backend:\n  kind: local\n  local:\n    stop_grace_period: 30s\n    stop_on_exit: {stop_on_exit}\n    notebooks:\n{nbs}"
    );
    let cfg = dir.join("nbidle.yaml");
    std::fs::write(&cfg, config).unwrap();
    cfg
}

/// How many notebooks the API reports running (None before it answers 200).
async fn running(http: &reqwest::Client, base: &str) -> Option<usize> {
    support::count_status(http, base, API_TOKEN, "running").await
}

async fn status_of(http: &reqwest::Client, url: String) -> Option<u16> {
    let r = http.get(url).send().await.ok()?;
    Some(r.status().as_u16())
}

/// nbidle's CPU time so far (user + system), from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

struct Startup {
    listening: Duration,
    /// What `/readyz` answered when the listener first did.
    first_readyz: u16,
    ready: Duration,
    cpu_at_ready: f64,
    all_running: Duration,
}

/// Starts nbidle and times its way to every notebook running.
async fn time_startup(http: &reqwest::Client, cfg: &Path, port: u16, n: usize) -> (Child, Startup) {
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    let child = serve(cfg);
    until("listener", (Duration::from_millis(5), GIVE_UP), || {
        let url = format!("{base}/livez");
        async move { status_of(http, url).await == Some(200) }
    })
    .await;
    let listening = t0.elapsed();
    let first_readyz = status_of(http, format!("{base}/readyz")).await.unwrap();
    until("ready", (Duration::from_millis(20), GIVE_UP), || {
        let url = format!("{base}/readyz");
        async move { status_of(http, url).await == Some(200) }
    })
    .await;
    let ready = t0.elapsed();
    let cpu_at_ready = cpu_seconds(child.id());
    until(
        "all running",
        (Duration::from_millis(500), GIVE_UP),
        || async { running(http, &base).await == Some(n) },
    )
    .await;
    let startup = Startup {
        listening,
        first_readyz,
        ready,
        cpu_at_ready,
        all_running: t0.elapsed(),
    };
    (child, startup)
}

fn print_startup(what: &str, s: &Startup) {
    println!(
        "| {what}: listener answers /livez (/readyz then: {}) | {:.2} s |",
        s.first_readyz,
        s.listening.as_secs_f64()
    );
    println!(
        "| {what}: /readyz ready (every notebook recovered) | {:.2} s (nbidle CPU {:.2} s) |",
        s.ready.as_secs_f64(),
        s.cpu_at_ready
    );
    println!(
        "| {what}: every notebook running | {:.2} s |",
        s.all_running.as_secs_f64()
    );
}

/// 1,000 single-alert payloads, 20 ms apart, to an nbidle whose exporter
/// is probing its notebooks; sorted latencies.
async fn singles_while_probed(http: &reqwest::Client, port: u16) -> Vec<Duration> {
    let url = format!("http://127.0.0.1:{port}/webhook/alertmanager");
    let starts_at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut lat = Vec::with_capacity(SINGLES);
    for i in 0..SINGLES {
        let body = serde_json::to_vec(&payload(vec![alert(i, &starts_at)])).unwrap();
        let t = Instant::now();
        let r = deliver(http, &url, body).await;
        lat.push(t.elapsed());
        assert!(r.status().is_success());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lat.sort();
    lat
}

#[tokio::main]
async fn main() {
    let fd_limit = raise_fd_limit();
    // Answers readiness probes and the exporter's probes like a booted
    // Jupyter server with no kernels and no terminals.
    let probe_port = serve_probes();

    let http = reqwest::Client::new();

    // Start-up with 10,000 notebooks: first every process is spawned, then
    // a restart (the processes outlive nbidle: stop_on_exit false) adopts
    // them all; the restarted nbidle stops them all when it exits.
    let startup_dir = tempfile::tempdir().unwrap();
    let n = STARTUP_NOTEBOOKS;
    let port = free_port();
    let cfg = write_config(startup_dir.path(), n, (port, probe_port), 600, false);
    let (child, fresh) = time_startup(&http, &cfg, port, n).await;
    terminate(child);
    let cfg = write_config(startup_dir.path(), n, (port, probe_port), 600, true);
    let (child, adopted) = time_startup(&http, &cfg, port, n).await;
    // Single alerts while the exporter probes all 10,000 (every 15 s, the
    // default): one every 20 ms for 1,000, so they span more than a round.
    let probed_lat = singles_while_probed(&http, port).await;
    // The same alerts again: their notebooks are stopped, so nothing is
    // written to disk; what is left is the server under the probe load.
    let probed_repeat_lat = singles_while_probed(&http, port).await;
    let stop_all = terminate(child);

    let dir = tempfile::tempdir().unwrap();
    let total = BATCH + SINGLES;
    let port = free_port();
    let cfg = write_config(dir.path(), total, (port, probe_port), 3600, true);
    let child = serve(&cfg);
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");

    // Wait until every notebook is up and running.
    let t0 = Instant::now();
    until(
        "notebooks up",
        (Duration::from_millis(200), GIVE_UP),
        || async { running(&http, &base).await == Some(total) },
    )
    .await;
    let startup = t0.elapsed();
    let starts_at = {
        let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let url = format!("{base}/webhook/alertmanager");

    // 1. One payload, 1,000 alerts.
    let body =
        serde_json::to_vec(&payload((0..BATCH).map(|i| alert(i, &starts_at)).collect())).unwrap();
    let t = Instant::now();
    let r = deliver(&http, &url, body.clone()).await;
    let batch_time = t.elapsed();
    assert!(r.status().is_success());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stopped"], BATCH, "every alert stopped its notebook");

    // 2. 1,000 single-alert payloads.
    let mut lat = Vec::with_capacity(SINGLES);
    for i in BATCH..total {
        let body = serde_json::to_vec(&payload(vec![alert(i, &starts_at)])).unwrap();
        let t = Instant::now();
        let r = deliver(&http, &url, body).await;
        lat.push(t.elapsed());
        assert!(r.status().is_success());
    }
    lat.sort();

    // 3. The same 1,000-alert payload again: every notebook already stopped.
    let t = Instant::now();
    let r = deliver(&http, &url, body).await;
    let repeat_time = t.elapsed();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stopped"], 0, "a repeated delivery stops nothing");

    let hwm = proc_kib(pid, "VmHWM:");
    terminate(child);
    // Deleted only now: on ext4 without a journal, inodes freed in the last
    // minutes are skipped when new files are made, and deleting the 30,000
    // files of the start-up run made the next run's file creation slow.
    drop(startup_dir);

    println!("| measurement | result |");
    println!("|---|---|");
    print_startup(&format!("start-up, {n} notebooks spawned"), &fresh);
    print_startup(&format!("restart, {n} running notebooks adopted"), &adopted);
    println!(
        "| single-alert latency p50 / p99 / max while {n} notebooks are probed ({SINGLES} requests, 20 ms apart) | {:.2} / {:.2} / {:.2} ms |",
        percentile(&probed_lat, 0.50).as_secs_f64() * 1e3,
        percentile(&probed_lat, 0.99).as_secs_f64() * 1e3,
        probed_lat.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| the same alerts again (already stopped: no state write), while probed | {:.2} / {:.2} / {:.2} ms |",
        percentile(&probed_repeat_lat, 0.50).as_secs_f64() * 1e3,
        percentile(&probed_repeat_lat, 0.99).as_secs_f64() * 1e3,
        probed_repeat_lat.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| SIGTERM with stop_on_exit: {n} notebooks stopped, nbidle exited | {:.2} s |",
        stop_all.as_secs_f64()
    );
    println!("| open file limit (RLIMIT_NOFILE) | {fd_limit} |");
    println!(
        "| start-up: {total} notebooks spawned and running | {:.2} s |",
        startup.as_secs_f64()
    );
    println!(
        "| 1 payload, {BATCH} firing alerts → {BATCH} stops issued | {:.1} ms |",
        batch_time.as_secs_f64() * 1e3
    );
    println!(
        "| same payload again (all already stopped) | {:.1} ms |",
        repeat_time.as_secs_f64() * 1e3
    );
    println!(
        "| single-alert payload latency p50 ({SINGLES} requests) | {:.2} ms |",
        percentile(&lat, 0.50).as_secs_f64() * 1e3
    );
    println!(
        "| single-alert payload latency p99 | {:.2} ms |",
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| single-alert payload latency max | {:.2} ms |",
        lat.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| nbidle peak RSS (VmHWM) | {:.1} MiB |",
        hwm as f64 / 1024.0
    );
}
