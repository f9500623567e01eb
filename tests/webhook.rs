//! The Alertmanager webhook against a running nbidle with real notebook
//! processes: auth, payload validation, idempotency, stale-alert guard,
//! opt-out, dry run, retryable failures.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn stack(dir: &std::path::Path, opts: NbidleOptions) -> Nbidle {
    let mut optout = sleeper("keep");
    optout.autostop = false;
    let nbs = vec![sleeper("a"), sleeper("b"), sleeper("c"), optout];
    let nb = Nbidle::start(dir, &nbs, opts).await;
    for n in ["a", "b", "c", "keep"] {
        // sleep never answers HTTP, so the local backend reports it starting.
        nb.wait_status("local", n, "starting", Duration::from_secs(5))
            .await;
    }
    nb
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

#[tokio::test]
async fn webhook_auth_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let basic = json!({"webhook_basic_auth": {"username": "alertmanager", "password": "pw"}});
    let nb = stack(
        dir.path(),
        NbidleOptions {
            extra_auth: basic,
            ..Default::default()
        },
    )
    .await;
    let url = format!("{}/webhook/alertmanager", nb.url);
    let body = payload(vec![idle_alert("local", "a", &rfc3339_from_now(60))]);

    let none = nb.http.post(&url).json(&body).send().await.unwrap();
    let (code, v) = json_of(none).await;
    assert_eq!(code, 401);
    assert_eq!(v["error"]["code"], "unauthorized");
    let wrong = nb
        .http
        .post(&url)
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let api_token = nb
        .http
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        api_token.status(),
        401,
        "an API token is not a webhook credential"
    );
    let bad_basic = nb
        .http
        .post(&url)
        .basic_auth("alertmanager", Some("wrong"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_basic.status(), 401);
    assert_eq!(
        nb.notebook("local", "a").await["status"],
        "starting",
        "nothing stopped by unauthenticated calls"
    );

    let ok = nb
        .http
        .post(&url)
        .basic_auth("alertmanager", Some("pw"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (code, v) = json_of(ok).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["stopped"], 1);
    assert_eq!(
        nb.metric("nbidle_errors_total{kind=\"webhook_auth\"}")
            .await,
        4.0
    );
}

#[tokio::test]
async fn bad_payloads_get_400_naming_the_field_and_stop_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nb = stack(dir.path(), NbidleOptions::default()).await;
    let url = format!("{}/webhook/alertmanager", nb.url);
    let good = idle_alert("local", "a", &rfc3339_from_now(60));

    let mut bad_time = good.clone();
    bad_time["startsAt"] = json!("yesterday");
    let mut no_labels = good.clone();
    no_labels.as_object_mut().unwrap().remove("labels");
    let mut v3 = payload(vec![good.clone()]);
    v3["version"] = json!("3");
    let mut bad_status = good.clone();
    bad_status["status"] = json!("exploded");

    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "body"),
        (v3.to_string(), "version"),
        // One bad alert after a good one: the good one must not be acted on either.
        (
            payload(vec![good.clone(), bad_time]).to_string(),
            "alerts[1].startsAt",
        ),
        (payload(vec![no_labels]).to_string(), "alerts[0]"),
        (payload(vec![bad_status]).to_string(), "alerts[0].status"),
        (
            json!({"version": "4", "status": "firing"}).to_string(),
            "alerts",
        ),
    ];
    for (body, field) in cases {
        let r = nb
            .http
            .post(&url)
            .bearer_auth(WEBHOOK_TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (code, v) = json_of(r).await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(v["error"]["code"], "invalid_payload");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "message {msg:?} should name {field}");
    }

    // Oversized: a Content-Length above webhook.max_body_bytes (4 MiB by
    // default) is refused from the headers alone, before the body is read.
    let (code, body) = raw_post_headers_only(&nb.url, 20 * 1024 * 1024).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");

    for n in ["a", "b", "c"] {
        assert_eq!(
            nb.notebook("local", n).await["status"],
            "starting",
            "{n} must not be stopped"
        );
    }
    assert_eq!(
        nb.metric("nbidle_stops_total{result=\"success\",trigger=\"idle-alert\"}")
            .await,
        0.0
    );
    assert_eq!(
        nb.metric("nbidle_errors_total{kind=\"webhook_payload\"}")
            .await,
        6.0
    );
}

#[tokio::test]
async fn decisions_resolved_unknown_foreign_optout_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let nb = stack(dir.path(), NbidleOptions::default()).await;
    let later = rfc3339_from_now(60);
    let mut resolved = idle_alert("local", "b", &later);
    resolved["status"] = json!("resolved");
    let mut foreign = idle_alert("local", "c", &later);
    foreign["labels"]
        .as_object_mut()
        .unwrap()
        .remove("nbidle_action");
    let body = payload(vec![
        idle_alert("local", "a", &later),
        resolved,
        foreign,
        idle_alert("local", "ghost", &later),
        idle_alert("local", "keep", &later),
    ]);
    let (code, v) = json_of(nb.webhook(&body).await).await;
    assert_eq!(code, 200, "{v}");
    let decisions: Vec<&str> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        [
            "stopped",
            "resolved",
            "not_for_nbidle",
            "unknown_notebook",
            "opted_out"
        ]
    );

    let a = nb
        .wait_status("local", "a", "stopped", Duration::from_secs(10))
        .await;
    assert_eq!(a["stopped_by"]["trigger"], "idle-alert");
    assert_eq!(a["stopped_by"]["alertname"], "NotebookIdle");
    for n in ["b", "c", "keep"] {
        assert_eq!(
            nb.notebook("local", n).await["status"],
            "starting",
            "{n} must keep running"
        );
    }
    assert_eq!(
        nb.metric("nbidle_alert_decisions_total{decision=\"unknown_notebook\"}")
            .await,
        1.0
    );
    assert!(
        nb.log().contains("does not know"),
        "unknown notebook is logged"
    );
}

#[tokio::test]
async fn duplicate_deliveries_stop_once() {
    let dir = tempfile::tempdir().unwrap();
    let nb = stack(dir.path(), NbidleOptions::default()).await;
    let body = payload(vec![idle_alert("local", "a", &rfc3339_from_now(60))]);
    // Two Alertmanager replicas and a retry, at the same time.
    let sends = (0..6).map(|_| nb.webhook(&body));
    let responses = futures_util::future::join_all(sends).await;
    let mut stopped = 0;
    for r in responses {
        let (code, v) = json_of(r).await;
        assert_eq!(code, 200);
        stopped += v["stopped"].as_u64().unwrap();
    }
    assert_eq!(stopped, 1, "exactly one delivery stops the notebook");
    nb.wait_status("local", "a", "stopped", Duration::from_secs(10))
        .await;
    // And once more after it is down.
    let (_, v) = json_of(nb.webhook(&body).await).await;
    assert_eq!(v["alerts"][0]["decision"], "already_stopped");
    assert_eq!(
        nb.metric("nbidle_stops_total{result=\"success\",trigger=\"idle-alert\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_alert_older_than_the_last_start_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let nb = stack(dir.path(), NbidleOptions::default()).await;
    // The alert began before the notebook was (re)started by hand.
    let before_start = rfc3339_from_now(-120);
    assert_eq!(nb.post("notebooks/local/a/stop").await.status(), 200);
    nb.wait_status("local", "a", "stopped", Duration::from_secs(10))
        .await;
    assert_eq!(nb.post("notebooks/local/a/start").await.status(), 200);
    let (code, v) = json_of(
        nb.webhook(&payload(vec![idle_alert("local", "a", &before_start)]))
            .await,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(v["alerts"][0]["decision"], "stale");
    assert_eq!(nb.notebook("local", "a").await["status"], "starting");
    // An alert that began after the start does stop it.
    let (_, v) = json_of(
        nb.webhook(&payload(vec![idle_alert(
            "local",
            "a",
            &rfc3339_from_now(1),
        )]))
        .await,
    )
    .await;
    assert_eq!(v["alerts"][0]["decision"], "stopped");
}

#[tokio::test]
async fn dry_run_stops_nothing_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let nb = stack(
        dir.path(),
        NbidleOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await;
    let (code, v) = json_of(
        nb.webhook(&payload(vec![idle_alert(
            "local",
            "a",
            &rfc3339_from_now(60),
        )]))
        .await,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(v["alerts"][0]["decision"], "dry_run");
    assert_eq!(nb.notebook("local", "a").await["status"], "starting");
    assert_eq!(
        nb.metric("nbidle_alert_decisions_total{decision=\"dry_run\"}")
            .await,
        1.0
    );
    assert!(nb.log().contains("dry run: would stop"));
}

#[tokio::test]
async fn a_failed_stop_is_5xx_and_the_retry_stops_once() {
    let dir = tempfile::tempdir().unwrap();
    let nb = stack(dir.path(), NbidleOptions::default()).await;
    // Make persisting the stop fail: a directory where the temp file goes.
    let blocker = dir.path().join("data/notebooks/a.json.tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let body = payload(vec![
        idle_alert("local", "a", &rfc3339_from_now(60)),
        idle_alert("local", "b", &rfc3339_from_now(60)),
    ]);
    let (code, v) = json_of(nb.webhook(&body).await).await;
    assert_eq!(code, 500, "Alertmanager retries 5xx: {v}");
    assert_eq!(v["alerts"][0]["decision"], "failed");
    assert_eq!(v["alerts"][1]["decision"], "stopped");
    assert_eq!(
        nb.notebook("local", "a").await["status"],
        "starting",
        "a failed stop changes nothing"
    );

    std::fs::remove_dir(&blocker).unwrap();
    let (code, v) = json_of(nb.webhook(&body).await).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["alerts"][0]["decision"], "stopped");
    assert_eq!(v["alerts"][1]["decision"], "already_stopped");
    assert_eq!(
        nb.metric("nbidle_stops_total{result=\"success\",trigger=\"idle-alert\"}")
            .await,
        2.0
    );
    assert_eq!(
        nb.metric("nbidle_stops_total{result=\"error\",trigger=\"idle-alert\"}")
            .await,
        1.0
    );
}

/// Sends request headers announcing `len` body bytes and reads the answer
/// without sending the body, as a client would after an early rejection.
async fn raw_post_headers_only(base: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhook/alertmanager HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, text)
}
