//! Credentials of the routes that read: with `auth.metrics_token` set,
//! `/metrics`, `/metrics/notebooks` and `/sd/notebooks` answer a real
//! Prometheus (configured by `nbidle manifests prometheus-scrape`) and
//! refuse everyone else; error bodies do not show where nbidle keeps files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const METRICS_TOKEN: &str = "metrics-token-for-tests";

const SCRAPE_ROUTES: [&str; 3] = ["metrics", "metrics/notebooks", "sd/notebooks"];

#[tokio::test]
async fn scrape_routes_answer_the_metrics_token_only_and_prometheus_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, format!("{METRICS_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let nb = Nbidle::start(
        dir.path(),
        &[jupyter_notebook("lab", JupyterVersion::Current)],
        NbidleOptions {
            // Relative to the config file, which is in `dir`.
            extra_auth: json!({"metrics_token_file": "metrics-token"}),
            ..Default::default()
        },
    )
    .await;
    nb.wait_status("local", "lab", "running", Duration::from_secs(60))
        .await;
    let h = &nb.http;

    for route in SCRAPE_ROUTES {
        let url = format!("{}/{route}", nb.url);
        for (who, token) in [
            ("no token", None),
            ("an API token", Some(API_TOKEN)),
            ("the webhook token", Some(WEBHOOK_TOKEN)),
            ("a wrong token", Some("metrics-token-for-test")),
        ] {
            let mut req = h.get(&url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{route} with {who}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "unauthorized", "{route} with {who}");
        }
        let r = h.get(&url).bearer_auth(METRICS_TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200, "{route} with the metrics token");
    }
    for probe in ["livez", "readyz"] {
        let r = h.get(format!("{}/{probe}", nb.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{probe} stays open");
    }

    // Prometheus as `nbidle manifests prometheus-scrape` configures it,
    // plus nbidle's own /metrics with the same token file.
    let scrape = nbidle_cli(&[
        "manifests",
        "prometheus-scrape",
        "--config",
        nb.config.to_str().unwrap(),
    ]);
    let scrape: serde_yaml::Value = serde_yaml::from_str(&scrape).unwrap();
    let mut jobs = scrape["scrape_configs"].as_sequence().unwrap().clone();
    jobs.push(
        serde_yaml::from_str(&format!(
            "{{job_name: nbidle, authorization: {{credentials_file: {}}}, static_configs: [{{targets: ['{}']}}]}}",
            token_file.display(),
            nb.url.trim_start_matches("http://")
        ))
        .unwrap(),
    );
    let prom = Prometheus::start_with_jobs(dir.path(), jobs).await;
    let targets = eventually(
        "every target discovered and up",
        Duration::from_secs(60),
        || async {
            let targets = prom.active_targets().await;
            let up = |job: &str| {
                targets
                    .iter()
                    .any(|t| t["labels"]["job"] == job && t["health"] == "up")
            };
            (up("nbidle") && up("nbidle-exporter") && up("nbidle-notebooks")).then_some(targets)
        },
    )
    .await;
    // The notebook came from /sd/notebooks, which needs the token.
    let lab = targets
        .iter()
        .find(|t| t["labels"]["job"] == "nbidle-notebooks")
        .unwrap();
    assert_eq!(lab["labels"]["notebook"], "lab", "{lab}");
    // The exporter's series arrived.
    let probe = eventually("the exporter's series", Duration::from_secs(30), || async {
        prom.query("nbidle_notebook_probe_success{notebook=\"lab\"}")
            .await
            .ok()
            .filter(|r| r.as_array().is_some_and(|a| !a.is_empty()))
    })
    .await;
    assert_eq!(probe[0]["metric"]["namespace"], "local", "{probe}");

    let text = h
        .get(format!("{}/metrics", nb.url))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("nbidle_errors_total{kind=\"metrics_auth\"} 12"),
        "each refusal is counted:\n{text}"
    );
}

/// Without a metrics token the scrape routes stay open, as before.
#[tokio::test]
async fn scrape_routes_are_open_without_a_metrics_token() {
    let dir = tempfile::tempdir().unwrap();
    let nb = Nbidle::start(dir.path(), &[sleeper("a")], NbidleOptions::default()).await;
    for route in SCRAPE_ROUTES {
        let r = nb
            .http
            .get(format!("{}/{route}", nb.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{route}");
    }
}

/// An I/O failure behind an API call: the answer says what failed, the
/// log says where; the body has no path of the server's.
#[tokio::test]
async fn api_errors_do_not_show_server_paths() {
    let dir = tempfile::tempdir().unwrap();
    let nb = Nbidle::start(dir.path(), &[sleeper("a")], NbidleOptions::default()).await;
    assert_eq!(nb.post("notebooks/local/a/stop").await.status(), 200);
    nb.wait_status("local", "a", "stopped", Duration::from_secs(15))
        .await;
    // The notebook's log file becomes a directory: opening it fails.
    let log_file = dir.path().join("data/logs/a.log");
    let _ = std::fs::remove_file(&log_file);
    std::fs::create_dir_all(log_file.join("x")).unwrap();

    let r = nb.post("notebooks/local/a/start").await;
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    let root = dir.path().display().to_string();
    assert!(
        !message.contains(&root),
        "the body shows a server path: {v}"
    );
    assert!(!message.contains("/logs/"), "{v}");
    assert!(message.contains("a.log"), "it still says what failed: {v}");
    assert_eq!(v["error"]["code"], "backend_error");
    assert!(
        nb.log().contains(&log_file.display().to_string()),
        "the log keeps the path"
    );
}
