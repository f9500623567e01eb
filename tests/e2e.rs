//! The whole loop on one machine with real components: Jupyter servers
//! supervised by nbidle, used by scripted users (tests/drivers), Prometheus
//! scraping nbidle's exporter and evaluating nbidle's generated rules,
//! Alertmanager routing with nbidle's generated config, and nbidle stopping
//! what is idle — and only that.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const IDLE_AFTER_SECS: u64 = 20;

fn nb(name: &str) -> NotebookSpec {
    jupyter_notebook(name, JupyterVersion::Current)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_notebooks_are_stopped_and_working_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut optout = nb("optout");
    optout.autostop = false;
    let notebooks = vec![
        nb("idle"),
        jupyter_notebook("idle-old", JupyterVersion::Old),
        nb("computing"),
        nb("printing"),
        nb("terminal"),
        nb("rest-kernel"),
        nb("open-tab"),
        nb("cells"),
        optout,
        nb("silenced"),
        jupyter_notebook("computing-old", JupyterVersion::Old),
        jupyter_notebook("terminal-old", JupyterVersion::Old),
    ];
    let url = |name: &str| {
        notebooks
            .iter()
            .find(|n| n.name == name)
            .unwrap()
            .url
            .clone()
    };
    let nbidle = Nbidle::start(
        dir.path(),
        &notebooks,
        NbidleOptions {
            idle_after: "20s",
            ..Default::default()
        },
    )
    .await;
    for n in &notebooks {
        nbidle
            .wait_status("local", &n.name, "running", Duration::from_secs(120))
            .await;
    }

    // The users.
    jupyter_user_once(&url("computing"), "compute-silently");
    jupyter_user_once(&url("printing"), "compute-printing");
    jupyter_user_once(&url("rest-kernel"), "rest-kernel");
    jupyter_user_once(&url("computing-old"), "compute-silently");
    let _terminal_old = jupyter_user(dir.path(), &url("terminal-old"), "terminal-every", 3);
    let _terminal = jupyter_user(dir.path(), &url("terminal"), "terminal-every", 3);
    let _tab = jupyter_user(dir.path(), &url("open-tab"), "open-tab", 3);
    let mut cells = jupyter_user(dir.path(), &url("cells"), "execute-every", 3);

    let am = Alertmanager::start(dir.path(), &nbidle.config).await;
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
    let prom = Prometheus::start(dir.path(), &nbidle, &am).await;

    for name in ["idle", "idle-old", "rest-kernel", "open-tab"] {
        let v = nbidle
            .wait_status("local", name, "stopped", Duration::from_secs(120))
            .await;
        assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{name}: {v}");
        assert_eq!(v["stopped_by"]["alertname"], "NotebookIdle");
        eprintln!(
            "{name} stopped {:?} after Prometheus started",
            started.elapsed()
        );
    }

    // The cell runner stops working; its notebook is stopped about idle_after later.
    let last_cell = Instant::now();
    cells.terminate();
    let v = nbidle
        .wait_status("local", "cells", "stopped", Duration::from_secs(120))
        .await;
    let lag = last_cell.elapsed();
    eprintln!(
        "cells: stopped {lag:?} after the last executed cell (idle_after {IDLE_AFTER_SECS}s)"
    );
    assert_eq!(v["stopped_by"]["trigger"], "idle-alert");
    assert!(
        lag >= Duration::from_secs(IDLE_AFTER_SECS - 4),
        "stopped too early: {lag:?}"
    );
    // NotebookIdleSoon fired before the stop.
    let warned = prom
        .query("min_over_time(timestamp(ALERTS{alertname=\"NotebookIdleSoon\", alertstate=\"firing\", notebook=\"cells\"})[10m:1s])")
        .await
        .unwrap();
    let warned_at: f64 = warned[0]["value"][1]
        .as_str()
        .expect("cells was warned")
        .parse()
        .unwrap();
    let stopped_at = time::OffsetDateTime::parse(
        v["stopped_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ahead = stopped_at.unix_timestamp() as f64 - warned_at;
    eprintln!("cells: warned {ahead:.0}s before the stop (warn_before 5s)");
    assert!(
        ahead > 0.0,
        "warned at {warned_at}, stopped at {stopped_at}"
    );

    for name in [
        "computing",
        "printing",
        "terminal",
        "optout",
        "silenced",
        "computing-old",
        "terminal-old",
    ] {
        assert_eq!(
            nbidle.notebook("local", name).await["status"],
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

    // Started by hand, "idle" is not stopped again before idle_after.
    assert_eq!(
        nbidle.post("notebooks/local/idle/start").await.status(),
        200
    );
    nbidle
        .wait_status("local", "idle", "running", Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(nbidle.notebook("local", "idle").await["status"], "running");
    assert_eq!(
        nbidle
            .metric("nbidle_stops_total{result=\"error\",trigger=\"idle-alert\"}")
            .await,
        0.0
    );
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
    assert!(n >= 16, "dashboard has {n} queries");
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
