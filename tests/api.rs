//! The REST API against nbidle supervising real Jupyter servers: manual stop
//! and start keep the workspace, errors are JSON, health endpoints, and
//! Prometheus service discovery.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn stop_start_keeps_workspace(version: JupyterVersion) {
    let dir = tempfile::tempdir().unwrap();
    let spec = jupyter_notebook("lab", version);
    let base = spec.url.clone();
    let nb = Nbidle::start(dir.path(), &[spec], NbidleOptions::default()).await;
    let running = nb
        .wait_status("local", "lab", "running", Duration::from_secs(60))
        .await;
    assert!(running["started_at"].is_string());

    // A user saves a file through Jupyter.
    let put = jupyter_api(
        &nb.http,
        &base,
        Method::PUT,
        "api/contents/notes.txt",
        Some(json!({"type": "file", "format": "text", "content": "keep me"})),
    )
    .await
    .unwrap();
    assert!(
        put.status().is_success(),
        "saving through Jupyter: {}",
        put.status()
    );

    let r = nb.post("notebooks/local/lab/stop").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["status"] == "stopping" || v["status"] == "stopped", "{v}");
    let stopped = nb
        .wait_status("local", "lab", "stopped", Duration::from_secs(15))
        .await;
    assert_eq!(stopped["stopped_by"]["trigger"], "user");
    assert!(stopped["stopped_at"].is_string());
    // Jupyter is down: nbidle's stopped-notebook page answers its API.
    let down = eventually("the server down", Duration::from_secs(15), || async {
        let r = jupyter_api(&nb.http, &base, Method::GET, "api", None).await;
        r.ok()
            .filter(|r| r.headers().contains_key("x-nbidle-stopped") && r.status() == 503)
    });
    down.await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("workspaces/lab/notes.txt")).unwrap(),
        "keep me"
    );

    // Stop again: idempotent, same state.
    let again: Value = nb
        .post("notebooks/local/lab/stop")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["status"], "stopped");
    assert_eq!(again["stopped_at"], stopped["stopped_at"]);

    let r = nb.post("notebooks/local/lab/start").await;
    assert_eq!(r.status(), 200);
    let started = nb
        .wait_status("local", "lab", "running", Duration::from_secs(60))
        .await;
    assert!(started["stopped_by"].is_null());
    assert_ne!(started["started_at"], running["started_at"]);
    let got: Value = jupyter_api(&nb.http, &base, Method::GET, "api/contents/notes.txt", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["content"], "keep me", "the workspace came back");
    // Start again: idempotent.
    let again: Value = nb
        .post("notebooks/local/lab/start")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["started_at"], started["started_at"]);
    assert_eq!(
        nb.metric("nbidle_stops_total{result=\"success\",trigger=\"user\"}")
            .await,
        1.0
    );
    assert_eq!(
        nb.metric("nbidle_starts_total{result=\"success\",trigger=\"user\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn stop_and_start_keep_the_workspace_jupyter_server_2() {
    stop_start_keeps_workspace(JupyterVersion::Current).await;
}

#[tokio::test]
async fn stop_and_start_keep_the_workspace_jupyter_server_1_23() {
    stop_start_keeps_workspace(JupyterVersion::Old).await;
}

#[tokio::test]
async fn restarting_nbidle_keeps_stopped_notebooks_stopped_and_adopts_running_ones() {
    let dir = tempfile::tempdir().unwrap();
    let nbs = [sleeper("up"), sleeper("down")];
    let keep = NbidleOptions {
        stop_on_exit: false,
        ..Default::default()
    };
    let mut nb = Nbidle::start(dir.path(), &nbs, keep).await;
    nb.post("notebooks/local/down/stop").await;
    nb.wait_status("local", "down", "stopped", Duration::from_secs(10))
        .await;
    let up_before = nb.notebook("local", "up").await;
    let pid_of = |name: &str| -> i64 {
        let state: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("data/notebooks/{name}.json"))).unwrap(),
        )
        .unwrap();
        state["pid"].as_i64().unwrap()
    };
    let up_pid = pid_of("up");
    let nbidle_pid = nb.proc.pid();
    nb.proc.terminate();
    drop(nb);
    assert!(
        std::fs::read_to_string(format!("/proc/{nbidle_pid}/stat")).is_err(),
        "nbidle exited"
    );
    assert!(
        std::fs::read_to_string(format!("/proc/{up_pid}/stat")).is_ok(),
        "the notebook outlived nbidle"
    );

    // The next nbidle (stop_on_exit, so the test cleans up after itself).
    let nb = Nbidle::start(dir.path(), &nbs, NbidleOptions::default()).await;
    let down = nb.notebook("local", "down").await;
    assert_eq!(down["status"], "stopped");
    assert_eq!(down["stopped_by"]["trigger"], "user");
    let up = nb.notebook("local", "up").await;
    assert_eq!(
        up["started_at"], up_before["started_at"],
        "adopted, not started again"
    );
    assert_eq!(pid_of("up"), up_pid, "the same process");
}

#[tokio::test]
async fn rest_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let nb = Nbidle::start(dir.path(), &[sleeper("a")], NbidleOptions::default()).await;
    let h = &nb.http;

    let r = h.get(nb.api("notebooks")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    let r = h
        .post(nb.api("notebooks/local/a/stop"))
        .bearer_auth(WEBHOOK_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a webhook token is not an API token");
    assert_eq!(nb.notebook("local", "a").await["status"], "starting");

    let r = h
        .get(nb.api("notebooks/local/nope"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("local/nope"));
    let r = nb.post("notebooks/other/a/start").await;
    assert_eq!(r.status(), 404);
    let r = h
        .get(format!("{}/no/such/route", nb.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let r = h
        .delete(nb.api("notebooks/local/a"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    let list: Value = h
        .get(nb.api("notebooks"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["notebooks"][0]["namespace"], "local");
    assert_eq!(list["notebooks"][0]["name"], "a");
    assert_eq!(list["notebooks"][0]["autostop"], true);

    for probe in ["livez", "readyz"] {
        let r = h.get(format!("{}/{probe}", nb.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{probe}");
    }
    assert_eq!(
        nb.metric("nbidle_notebooks{status=\"starting\"}").await,
        1.0
    );
}

#[tokio::test]
async fn service_discovery_lists_running_notebooks_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = sleeper("a");
    let a_url = a.url.clone();
    let nb = Nbidle::start(dir.path(), &[a, sleeper("b")], NbidleOptions::default()).await;
    nb.post("notebooks/local/b/stop").await;
    let sd: Value = nb
        .http
        .get(format!("{}/sd/notebooks", nb.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let groups = sd.as_array().unwrap();
    assert_eq!(groups.len(), 1, "{sd}");
    assert_eq!(groups[0]["labels"]["notebook"], "a");
    assert_eq!(groups[0]["labels"]["namespace"], "local");
    assert_eq!(groups[0]["labels"]["__metrics_path__"], "/metrics");
    assert_eq!(
        format!("http://{}/", groups[0]["targets"][0].as_str().unwrap()),
        a_url
    );
}
