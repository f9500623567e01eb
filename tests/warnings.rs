//! Warnings reach people: real Prometheus evaluates nbidle's rules, a real
//! Alertmanager runs alertmanager/warnings-example.yml and routes the
//! warning by `owner` to email (a real SMTP server, aiosmtpd) and to a chat
//! webhook (a loopback HTTP receiver), and to nbidle, whose notebook JSON
//! shows it. The warning stops nothing: the stop comes at the idle
//! deadline, from the stop alert.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn repo(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn rfc3339(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[test]
fn amtool_accepts_the_warnings_example() {
    let out = std::process::Command::new(tool(&["amtool"]))
        .args(["check-config", &repo("alertmanager/warnings-example.yml")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warning_is_mailed_to_the_owner_posted_to_chat_and_shown_by_nbidle() {
    let dir = tempfile::tempdir().unwrap();
    let notebooks = vec![
        jupyter_notebook("lab", JupyterVersion::Current),
        jupyter_notebook("lab2", JupyterVersion::Current),
    ];
    let port = free_port();
    let mut cfg = nbidle_config(port, dir.path(), &notebooks, &NbidleOptions::default());
    cfg["autostop"]["warn_before"] = json!("10s");
    // An owner that is a user name gets the domain; an address is used as it is.
    cfg["backend"]["local"]["notebooks"][0]["owner"] = json!("ada");
    cfg["backend"]["local"]["notebooks"][1]["owner"] = json!("bob@example.org");
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    let nbidle = Nbidle::start_yaml(dir.path(), "nbidle", port, &yaml, &[]).await;
    for n in &notebooks {
        nbidle
            .wait_status("local", &n.name, "running", Duration::from_secs(120))
            .await;
    }

    let smtp = SmtpReceiver::start(dir.path()).await;
    let chat = HttpReceiver::start().await;
    let example = std::fs::read_to_string(repo("alertmanager/warnings-example.yml"))
        .unwrap()
        .replace("smtp.example.com:25", &format!("127.0.0.1:{}", smtp.port))
        .replace("http://chat-bridge.example:8080/hooks/nbidle", &chat.url)
        .replace(
            "http://127.0.0.1:9877/webhook/alertmanager",
            &format!("{}/webhook/alertmanager", nbidle.url),
        )
        .replace("demo-webhook-token", WEBHOOK_TOKEN);
    let am = Alertmanager::start_yaml(dir.path(), &example, free_port()).await;
    let started = Instant::now();
    let _prom = Prometheus::start(dir.path(), &nbidle, &am).await;

    // nbidle shows each warning while the notebook runs; then each is
    // stopped by the stop alert.
    let mut warned: BTreeMap<String, Value> = BTreeMap::new();
    let mut stopped: BTreeMap<String, Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stopped.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "not both stopped: warned {warned:?}, stopped {stopped:?}"
        );
        for n in nbidle.list().await["notebooks"].as_array().unwrap() {
            let name = n["name"].as_str().unwrap().to_string();
            if n["warning"].is_object() {
                assert_eq!(n["status"], "running", "{n}");
                warned.entry(name.clone()).or_insert(n["warning"].clone());
            }
            if n["status"] == "stopped" {
                stopped.entry(name).or_insert(n.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "both stopped {:?} after Prometheus started",
        started.elapsed()
    );
    for name in ["lab", "lab2"] {
        let w = warned
            .get(name)
            .unwrap_or_else(|| panic!("{name} never warned"));
        let s = &stopped[name];
        assert_eq!(s["stopped_by"]["alertname"], "NotebookIdle", "{s}");
        assert!(s.get("warning").is_none(), "{s}");
        // The warning did not stop it: the stop came at the deadline,
        // about warn_before (10s) after the warning began.
        let ahead = rfc3339(&s["stopped_at"]) - rfc3339(&w["since"]);
        eprintln!("{name}: warned {ahead} before its stop");
        assert!(ahead >= time::Duration::seconds(6), "{name}: {ahead}");
    }

    // The owners' mail: one message each, to the address the example derives.
    let mail = eventually("two warning emails", Duration::from_secs(30), || async {
        let m = smtp.messages();
        (m.len() >= 2).then_some(m)
    })
    .await;
    for (notebook, to) in [("lab", "ada@example.com"), ("lab2", "bob@example.org")] {
        let msg = mail
            .iter()
            .find(|m| m.contains(&format!("X-RcptTo: {to}")))
            .unwrap_or_else(|| panic!("no mail to {to} in {mail:?}"));
        assert!(msg.contains(&format!("To: {to}")), "{msg}");
        assert!(
            msg.contains(&format!(
                "Subject: Your notebook local/{notebook} will be stopped soon"
            )),
            "{msg}"
        );
        assert!(msg.contains("unless it is used"), "{msg}");
    }
    // The chat webhook got Alertmanager's payload for each warning.
    let posts = chat.bodies();
    for notebook in ["lab", "lab2"] {
        assert!(
            posts
                .iter()
                .any(|p| p["commonLabels"]["alertname"] == "NotebookIdleSoon"
                    && p["commonLabels"]["notebook"] == notebook
                    && p["status"] == "firing"),
            "{notebook}: {posts:?}"
        );
    }
    assert!(
        posts
            .iter()
            .all(|p| p["commonLabels"]["nbidle_action"] == "warn"),
        "{posts:?}"
    );
    assert!(
        nbidle
            .metric("nbidle_warnings_total{result=\"recorded\"}")
            .await
            >= 2.0
    );
}
