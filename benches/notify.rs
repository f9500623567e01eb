//! `make bench` (notify part): the JupyterLab pushes after an exporter
//! round over 10,000 running notebooks of which 1,000 are within the
//! warning window (idle time 5 min, the rest 30 min; every kernel used
//! just now), against a loopback stand-in for every notebook's Jupyter and
//! its extension in a child process (probes answered after 20 ms, each
//! `PUT nbidle/state` at once with no requests): time per push round, CPU
//! time, pushes made, and this process's peak RSS before and after.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nbidle::config::{ExporterConfig, HumanDuration};
use nbidle::exporter::Exporter;
use nbidle::notebook::Timestamp;
use nbidle::notify::Notifier;
use support::fleet::Fleet;
use warp::Filter;

const NOTEBOOKS: usize = 10_000;
/// Every tenth notebook is near its deadline.
const NEAR_EVERY: usize = 10;
const LATENCY: Duration = Duration::from_millis(20);
const WARN_BEFORE: Duration = Duration::from_secs(300);
const INTERVAL: Duration = Duration::from_secs(15);

/// Child-process mode: every notebook's Jupyter and extension; `GET /count`
/// tells how many pushes arrived.
async fn simulate(port: u16) {
    let pushes = Arc::new(AtomicU64::new(0));
    let kernels = warp::path!(String / String / "api" / "kernels").and_then(|_: String, _: String| async {
        tokio::time::sleep(LATENCY).await;
        Ok::<_, std::convert::Infallible>(format!(
            r#"[{{"id":"k","name":"python3","last_activity":"{}","execution_state":"idle","connections":1}}]"#,
            Timestamp::now()
        ))
    });
    let terminals =
        warp::path!(String / String / "api" / "terminals").and_then(|_: String, _: String| async {
            tokio::time::sleep(LATENCY).await;
            Ok::<_, std::convert::Infallible>("[]")
        });
    let status =
        warp::path!(String / String / "api" / "status").and_then(|_: String, _: String| async {
            tokio::time::sleep(LATENCY).await;
            Ok::<_, std::convert::Infallible>(r#"{"started":"2026-01-01T08:00:00Z"}"#)
        });
    let p = pushes.clone();
    let state = warp::put()
        .and(warp::path!(String / String / "nbidle" / "state"))
        .and(warp::body::bytes())
        .map(move |_: String, _: String, _: bytes::Bytes| {
            p.fetch_add(1, Ordering::Relaxed);
            r#"{"requests": []}"#
        });
    let count = warp::path!("count").map(move || pushes.load(Ordering::Relaxed).to_string());
    warp::serve(state.or(kernels).or(terminals).or(status).or(count))
        .run(([127, 0, 0, 1], port))
        .await;
}

async fn pushes(port: u16) -> u64 {
    reqwest::get(format!("http://127.0.0.1:{port}/count"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::main]
async fn main() {
    if let Ok(port) = std::env::var("NBIDLE_BENCH_SIMULATE") {
        simulate(port.parse().unwrap()).await;
        return;
    }
    support::raise_fd_limit();
    let port = common::free_port();
    let mut sim = Command::new(std::env::current_exe().unwrap())
        .env("NBIDLE_BENCH_SIMULATE", port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_ready(
        "the stand-in",
        &format!("http://127.0.0.1:{port}/count"),
        Duration::from_secs(10),
    )
    .await;

    let fleet = Arc::new(Fleet::new(NOTEBOOKS, port, |i| {
        if i % NEAR_EVERY == 0 {
            300
        } else {
            1800
        }
    }));
    let cfg = ExporterConfig {
        interval: HumanDuration(INTERVAL),
        concurrency: 64,
        ..ExporterConfig::default()
    };
    let exporter = Exporter::new(
        fleet.clone(),
        cfg,
        nbidle::exporter::deadline_window(WARN_BEFORE, INTERVAL, Duration::from_secs(60)),
        // As an nbidle that has probed the fleet for longer than
        // warn_before: deadlines as the kernels' activity says.
        Duration::ZERO,
    );
    let notifier = Notifier::standalone(
        exporter.clone(),
        fleet,
        Duration::from_secs(2),
        64,
        WARN_BEFORE,
        INTERVAL,
    );
    exporter.round().await;
    let me = std::process::id();
    let hwm_before = support::proc_kib(me, "VmHWM:");
    notifier.round().await; // warm up connections
    let rounds = 5;
    let (before, cpu0, t) = (
        pushes(port).await,
        support::fleet::cpu_seconds(),
        Instant::now(),
    );
    for _ in 0..rounds {
        notifier.round().await;
    }
    let wall = t.elapsed() / rounds;
    let cpu = (support::fleet::cpu_seconds() - cpu0) / rounds as f64;
    let per_round = (pushes(port).await - before) / rounds as u64;
    assert_eq!(
        per_round,
        (NOTEBOOKS / NEAR_EVERY) as u64,
        "one push per interesting notebook"
    );
    let hwm_after = support::proc_kib(me, "VmHWM:");
    println!("| notebooks (interesting) | push round (wall) | CPU per round | pushes per round | peak RSS after the exporter round | after the push rounds |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {NOTEBOOKS} ({}) | {:.1} ms | {:.1} ms | {per_round} | {:.1} MiB | {:.1} MiB |",
        NOTEBOOKS / NEAR_EVERY,
        wall.as_secs_f64() * 1000.0,
        cpu * 1000.0,
        hwm_before as f64 / 1024.0,
        hwm_after as f64 / 1024.0
    );
    let _ = sim.kill();
    let _ = sim.wait();
}
