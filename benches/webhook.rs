//! `make bench`: nbidle's webhook under load, against the release binary
//! supervising real (stand-in) notebook processes.
//!
//! - one webhook payload with 1,000 firing alerts for 1,000 notebooks: time
//!   until every stop is issued (the response returns after the last one);
//! - 1,000 single-alert payloads, one after another: p50/p99 latency;
//! - nbidle's peak RSS (VmHWM) over the whole run.
//!
//! The notebooks are `sleep` processes; a tiny HTTP server in this process
//! answers their readiness probes so they count as running, as Jupyter would.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warp::Filter;

const BATCH: usize = 1000;
const SINGLES: usize = 1000;
const WEBHOOK_TOKEN: &str = "bench-webhook";
const API_TOKEN: &str = "bench-api";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn alert(i: usize, starts_at: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "NotebookIdle", "namespace": "local", "notebook": format!("nb-{i}"), "nbidle_action": "stop", "severity": "info"},
        "annotations": {"summary": "idle"},
        "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": format!("{i:016x}"),
    })
}

fn payload(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "groupKey": "bench", "truncatedAlerts": 0, "status": "firing", "receiver": "nbidle",
           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093", "alerts": alerts})
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

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    // Answers readiness probes and the exporter's probes like a booted
    // Jupyter server with no kernels and no terminals.
    let probe_port = free_port();
    tokio::spawn(
        warp::serve(warp::path::full().map(|p: warp::path::FullPath| {
            if p.as_str().ends_with("/api/status") {
                r#"{"started":"2026-01-01T08:00:00Z"}"#
            } else {
                "[]"
            }
        }))
        .run(([127, 0, 0, 1], probe_port)),
    );

    let dir = tempfile::tempdir().unwrap();
    let total = BATCH + SINGLES;
    let mut nbs = String::new();
    for i in 0..total {
        nbs.push_str(&format!(
            "      - {{name: nb-{i}, command: [sleep, \"3600\"], workdir: ws/nb-{i}, url: \"http://127.0.0.1:{probe_port}/nb-{i}/\"}}\n"
        ));
    }
    let port = free_port();
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\ndata_dir: data\nauth: {{webhook_token: {WEBHOOK_TOKEN}, api_tokens: [{API_TOKEN}]}}\n\
         backend:\n  kind: local\n  local:\n    stop_grace_period: 30s\n    stop_on_exit: true\n    notebooks:\n{nbs}"
    );
    let cfg = dir.path().join("nbidle.yaml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nbidle"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NBIDLE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");

    // Wait until every notebook is up and running.
    let t0 = Instant::now();
    loop {
        let ok = async {
            let r = http
                .get(format!("{base}/api/v1/notebooks"))
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let running = v["notebooks"]
                .as_array()?
                .iter()
                .filter(|n| n["status"] == "running")
                .count();
            (running == total).then_some(())
        }
        .await;
        if ok.is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "notebooks did not come up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

    let hwm = vm_hwm_kib(pid);
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = child.wait();

    println!("| measurement | result |");
    println!("|---|---|");
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
