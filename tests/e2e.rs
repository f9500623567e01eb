//! The whole loop on one machine with real components: Jupyter servers
//! supervised by nbidle, Prometheus scraping them through nbidle's service
//! discovery and evaluating nbidle's generated rules, Alertmanager routing
//! with nbidle's generated config, and nbidle stopping what is idle.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_notebooks_are_stopped_through_prometheus_and_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let busy = jupyter_notebook("busy", JupyterVersion::Current);
    let busy_url = busy.url.clone();
    let mut optout = jupyter_notebook("optout", JupyterVersion::Current);
    optout.autostop = false;
    let notebooks = vec![
        jupyter_notebook("idle", JupyterVersion::Current),
        jupyter_notebook("idle-old", JupyterVersion::Old),
        busy,
        optout,
        jupyter_notebook("silenced", JupyterVersion::Current),
    ];
    let nb = Nbidle::start(
        dir.path(),
        &notebooks,
        NbidleOptions {
            idle_after: "15s",
            ..Default::default()
        },
    )
    .await;
    for n in &notebooks {
        nb.wait_status(&n.name, "running", Duration::from_secs(90))
            .await;
    }
    // Work in progress: a kernel running on "busy".
    let k = jupyter_api(
        &nb.http,
        &busy_url,
        Method::POST,
        "api/kernels",
        Some(json!({"name": "python3"})),
    )
    .await
    .unwrap();
    assert!(k.status().is_success(), "starting a kernel: {}", k.status());

    let am = Alertmanager::start(dir.path(), &nb.config).await;
    // A user keeps "silenced" alive by silencing its idle alert.
    let silence = Command::new(tool(&["amtool"]))
        .args([
            "silence",
            "add",
            "alertname=NotebookIdle",
            "notebook=silenced",
            "--comment=keep it",
            "--author=test",
            "--duration=1h",
        ])
        .arg(format!("--alertmanager.url={}", am.url))
        .output()
        .unwrap();
    assert!(
        silence.status.success(),
        "amtool: {}",
        String::from_utf8_lossy(&silence.stderr)
    );

    let started = Instant::now();
    let prom = Prometheus::start(dir.path(), &nb, &am).await;

    for name in ["idle", "idle-old"] {
        let v = nb
            .wait_status(name, "stopped", Duration::from_secs(120))
            .await;
        assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{v}");
        assert_eq!(v["stopped_by"]["alertname"], "NotebookIdle");
        eprintln!(
            "{name} stopped {:?} after Prometheus started (idle_after 15s)",
            started.elapsed()
        );
    }
    // The opted-out notebook fired too, and was refused.
    eventually("opt-out decision", Duration::from_secs(30), || async {
        (nb.metric("nbidle_alert_decisions_total{decision=\"opted_out\"}")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    // Give the others a few more evaluation rounds to be wrongly stopped.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for name in ["busy", "optout", "silenced"] {
        assert_eq!(
            nb.notebook(name).await["status"],
            "running",
            "{name} must keep running"
        );
    }
    let firing = prom
        .query("ALERTS{alertname=\"NotebookIdle\", alertstate=\"firing\", notebook=\"silenced\"}")
        .await
        .unwrap();
    assert_eq!(
        firing.as_array().unwrap().len(),
        1,
        "the silenced notebook's alert does fire in Prometheus"
    );

    // Every dashboard query runs against this Prometheus without error.
    check_dashboard_queries(&prom).await;

    // Started by hand, "idle" is not stopped by its old alert: the next
    // alert can only come idle_after after this start.
    let r = nb.post("notebooks/local/idle/start").await;
    assert_eq!(r.status(), 200);
    nb.wait_status("idle", "running", Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(nb.notebook("idle").await["status"], "running");
    assert_eq!(
        nb.metric("nbidle_stops_total{result=\"error\",trigger=\"idle-alert\"}")
            .await,
        0.0
    );
    drop(prom);
    drop(am);
}

/// Runs every query of the shipped Grafana dashboard, with Grafana's
/// variables filled in, and fails on any query error.
async fn check_dashboard_queries(prom: &Prometheus) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/nbidle.json"
    ))
    .unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let fill = |q: &str| q.replace("$__rate_interval", "1m").replace("$job", ".+");
    let mut n = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let q = fill(t["expr"].as_str().unwrap());
            prom.query(&q)
                .await
                .unwrap_or_else(|e| panic!("panel {:?}: {q}: {e}", panel["title"]));
            n += 1;
        }
    }
    assert!(n >= 8, "dashboard has {n} queries");
    // The job variable's label_values(metric, label): the metric must exist.
    let r = prom
        .query("count by (job) (nbidle_notebooks)")
        .await
        .unwrap();
    assert!(
        !r.as_array().unwrap().is_empty(),
        "nbidle is scraped and nbidle_notebooks exists"
    );
}
