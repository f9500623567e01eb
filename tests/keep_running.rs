//! Keep running through the REST API, against a real Alertmanager (and
//! `amtool`), real Prometheus evaluating nbidle's rules and real Jupyter
//! servers: the silence is Alertmanager's, the stop alert it covers is not
//! delivered, the notebook outlives its idle time, cancelling expires the
//! silence and the stop follows; silences made with `amtool` show in the
//! notebook's JSON; an Alertmanager that does not answer is a clear error
//! that changes nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const TEAM_TOKEN: &str = "team-x-token-for-tests";

fn nb(name: &str) -> NotebookSpec {
    jupyter_notebook(name, JupyterVersion::Current)
}

/// nbidle over `notebooks` with `alertmanager.url` set to `am_url` (or
/// unset), a token for namespace team-x only, and warnings 10s ahead.
async fn nbidle_with(
    dir: &std::path::Path,
    notebooks: &[NotebookSpec],
    am_url: Option<&str>,
) -> Nbidle {
    let port = free_port();
    let opts = NbidleOptions {
        idle_after: "20s",
        extra_auth: json!({"namespaced_api_tokens": [{"token": TEAM_TOKEN, "namespaces": ["team-x"]}]}),
        ..Default::default()
    };
    let mut cfg = nbidle_config(port, dir, notebooks, &opts);
    cfg["autostop"]["warn_before"] = json!("10s");
    if let Some(u) = am_url {
        cfg["alertmanager"]["url"] = json!(u);
    }
    Nbidle::start_yaml(
        dir,
        "nbidle",
        port,
        &serde_yaml::to_string(&cfg).unwrap(),
        &[],
    )
    .await
}

async fn send(
    nbidle: &Nbidle,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = nbidle
        .http
        .request(method, nbidle.api(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_running_is_a_silence_that_outlives_the_idle_time_until_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let am_port = free_port();
    let am_url = format!("http://127.0.0.1:{am_port}");
    let notebooks = vec![nb("kept"), nb("idle")];
    let nbidle = nbidle_with(dir.path(), &notebooks, Some(&am_url)).await;
    for n in &notebooks {
        nbidle
            .wait_status("local", &n.name, "running", Duration::from_secs(120))
            .await;
    }
    let am = Alertmanager::start_at(dir.path(), &nbidle.config, am_port).await;
    let post = reqwest::Method::POST;

    // Requests checked before Alertmanager is asked; errors name the field.
    for (body, field) in [
        (json!({"for": "8d"}), "for"),
        (json!({"for": "soon"}), "for"),
        (json!({"until": "2020-01-01T00:00:00Z"}), "until"),
        (json!({"for": "1h", "color": "red"}), "color"),
    ] {
        let (code, v) = send(
            &nbidle,
            post.clone(),
            "notebooks/local/kept/keep-running",
            API_TOKEN,
            Some(body.clone()),
        )
        .await;
        assert_eq!(code, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    // A token for another namespace may not keep this one running.
    let (code, v) = send(
        &nbidle,
        post.clone(),
        "notebooks/local/kept/keep-running",
        TEAM_TOKEN,
        Some(json!({"for": "1h"})),
    )
    .await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    assert!(am.silences().is_empty());

    let (code, v) = send(
        &nbidle,
        post.clone(),
        "notebooks/local/kept/keep-running",
        API_TOKEN,
        Some(json!({"for": "1h", "comment": "training run", "by": "ada"})),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let id = v["kept_running"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["kept_running"]["by"], "ada via nbidle API");
    assert_eq!(v["status"], "running");
    // amtool sees the silence: on the stop alert of this notebook alone.
    let silences = am.silences();
    assert_eq!(silences.len(), 1, "{silences:?}");
    let s = &silences[0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(
        (s["createdBy"].as_str(), s["comment"].as_str()),
        (Some("ada via nbidle API"), Some("training run"))
    );
    let mut matchers: Vec<String> = s["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(
                (m["isRegex"].as_bool(), m["isEqual"].as_bool()),
                (Some(false), Some(true))
            );
            format!(
                "{}={}",
                m["name"].as_str().unwrap(),
                m["value"].as_str().unwrap()
            )
        })
        .collect();
    matchers.sort();
    assert_eq!(
        matchers,
        ["alertname=NotebookIdle", "namespace=local", "notebook=kept"]
    );

    // Prometheus starts evaluating; both notebooks are idle. The warnings
    // reach nbidle (the notebook JSON shows them); "idle" is stopped.
    let started = Instant::now();
    let _prom = Prometheus::start(dir.path(), &nbidle, &am).await;
    let mut warned = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    'poll: loop {
        assert!(
            Instant::now() < deadline,
            "idle was not stopped; warned: {warned:?}"
        );
        for n in nbidle.list().await["notebooks"].as_array().unwrap() {
            if n["warning"].is_object() {
                warned
                    .entry(n["name"].as_str().unwrap().to_string())
                    .or_insert(n["warning"].clone());
            }
            if n["name"] == "idle" && n["status"] == "stopped" {
                break 'poll;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "idle stopped {:?} after Prometheus started; warned: {warned:?}",
        started.elapsed()
    );
    for name in ["idle", "kept"] {
        let w = &warned[name];
        assert!(
            w["since"].is_string() && w["stops_at"].is_string(),
            "{name}: {w}"
        );
    }
    let idle = nbidle.notebook("local", "idle").await;
    assert_eq!(idle["stopped_by"]["alertname"], "NotebookIdle", "{idle}");
    assert!(
        idle.get("warning").is_none(),
        "a stopped notebook shows no warning: {idle}"
    );

    // "kept" is past its idle time too: its stop alert fires in Prometheus,
    // Alertmanager holds it (suppressed by our silence) and nbidle keeps it.
    let alert = eventually(
        "kept's stop alert suppressed",
        Duration::from_secs(60),
        || am.alert("NotebookIdle", "kept"),
    )
    .await;
    assert_eq!(alert["status"]["state"], "suppressed", "{alert}");
    assert_eq!(alert["status"]["silencedBy"][0], id.as_str(), "{alert}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kept = nbidle.notebook("local", "kept").await;
    assert_eq!(kept["status"], "running", "{kept}");
    assert_eq!(kept["kept_running"]["id"], id.as_str(), "{kept}");
    assert_eq!(kept["kept_running"]["comment"], "training run");
    let started_at = time::OffsetDateTime::parse(
        kept["started_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let age = time::OffsetDateTime::now_utc() - started_at;
    assert!(
        age > time::Duration::seconds(25),
        "kept past its 20s idle time: {age}"
    );
    assert!(
        nbidle
            .metric("nbidle_silences_total{op=\"create\",result=\"success\"}")
            .await
            >= 1.0
    );
    assert!(
        nbidle
            .metric("nbidle_alert_decisions_total{decision=\"warning\"}")
            .await
            >= 1.0
    );

    // A silence made with amtool, with a regular expression, shows too;
    // it covers other notebooks as well, so DELETE leaves it alone.
    am.amtool(&[
        "silence",
        "add",
        "alertname=NotebookIdle",
        "notebook=~id.*",
        "--comment=by hand",
        "--author=bob",
        "--duration=2h",
    ]);
    let idle = eventually(
        "amtool's silence in idle's JSON",
        Duration::from_secs(30),
        || async {
            let v = nbidle.notebook("local", "idle").await;
            (v["kept_running"]["by"] == "bob").then_some(v)
        },
    )
    .await;
    assert_eq!(idle["kept_running"]["comment"], "by hand", "{idle}");
    let del = reqwest::Method::DELETE;
    let (code, v) = send(
        &nbidle,
        del.clone(),
        "notebooks/local/idle/keep-running",
        API_TOKEN,
        None,
    )
    .await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (409, Some("silence_covers_others")),
        "{v}"
    );

    // Cancel: the silence is expired, and the stop follows.
    let (code, v) = send(
        &nbidle,
        del.clone(),
        "notebooks/local/kept/keep-running",
        API_TOKEN,
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["expired"], json!([id]), "{v}");
    let ids: Vec<Value> = am.silences().iter().map(|s| s["id"].clone()).collect();
    assert!(!ids.contains(&json!(id)), "{ids:?}");
    assert!(nbidle
        .notebook("local", "kept")
        .await
        .get("kept_running")
        .is_none());
    let kept = nbidle
        .wait_status("local", "kept", "stopped", Duration::from_secs(60))
        .await;
    assert_eq!(kept["stopped_by"]["alertname"], "NotebookIdle", "{kept}");
    let (code, v) = send(
        &nbidle,
        del,
        "notebooks/local/kept/keep-running",
        API_TOKEN,
        None,
    )
    .await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (404, Some("not_kept_running")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_that_does_not_answer_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    // A stand-in process: it never serves, so it stays "starting".
    let notebooks = vec![sleeper("lab")];
    let nbidle = nbidle_with(dir.path(), &notebooks, Some(&dead)).await;
    nbidle
        .wait_status("local", "lab", "starting", Duration::from_secs(60))
        .await;
    let before = nbidle.notebook("local", "lab").await;
    let (code, v) = send(
        &nbidle,
        reqwest::Method::POST,
        "notebooks/local/lab/keep-running",
        API_TOKEN,
        Some(json!({"for": "4h"})),
    )
    .await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(&format!("{dead}/api/v2/silences")) && m.contains("connection failed"),
        "{m}"
    );
    // The notebook is as it was; its JSON says why Keep running is unknown.
    let after = nbidle.notebook("local", "lab").await;
    assert_eq!(after["status"], before["status"]);
    assert_eq!(after["started_at"], before["started_at"]);
    assert!(
        after["keep_running_error"]
            .as_str()
            .unwrap()
            .contains(&dead),
        "{after}"
    );
    let list = nbidle.list().await;
    assert!(
        list["keep_running_error"].as_str().unwrap().contains(&dead),
        "{list}"
    );
    assert_eq!(list["notebooks"][0]["status"], before["status"]);
    assert_eq!(
        nbidle
            .metric("nbidle_silences_total{op=\"create\",result=\"error\"}")
            .await,
        1.0
    );

    // Without alertmanager.url, Keep running is unavailable, and says why.
    let dir2 = tempfile::tempdir().unwrap();
    let plain = nbidle_with(dir2.path(), &[sleeper("lab")], None).await;
    plain
        .wait_status("local", "lab", "starting", Duration::from_secs(60))
        .await;
    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let body = (method == reqwest::Method::POST).then(|| json!({"for": "1h"}));
        let (code, v) = send(
            &plain,
            method,
            "notebooks/local/lab/keep-running",
            API_TOKEN,
            body,
        )
        .await;
        assert_eq!(
            (code, v["error"]["code"].as_str()),
            (409, Some("keep_running_unavailable")),
            "{v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alertmanager.url is not set"));
    }
    let v = plain.notebook("local", "lab").await;
    assert!(
        v.get("kept_running").is_none() && v.get("keep_running_error").is_none(),
        "{v}"
    );
}
