//! The notebook page in a real browser: headless Chromium (Debian's)
//! driven by Playwright (`tests/browser/page.mjs`) against the nbidle
//! binary, whose local backend runs a real JupyterLab and a real Jupyter
//! server, plus two stand-in processes so the list is not trivially short.
//! The driver signs in (a wrong token refused), reads the list, is refused
//! a POST without the CSRF token, stops JupyterLab with the keyboard only,
//! starts it, opens it and finds the workspace's file, checks a
//! phone-width screen, uses namespace-scoped tokens, and keeps JupyterLab
//! running (a real Alertmanager's silence) then cancels that. This test checks
//! the same through the REST API and saves the docs' screenshots into
//! docs/img/.
//!
//! Components: `bash scripts/browser-deps.sh` (`make test-deps` runs it).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const LAB: &str = "lab";
const SECOND: &str = "analysis";
const OTHER_TOKEN: &str = "token-for-namespace-other";
const LOCAL_TOKEN: &str = "token-for-namespace-local";
const UI_TIMEOUT: Duration = Duration::from_secs(120);
/// The whole scenario, JupyterLab's restart included.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_stops_starts_and_opens_a_notebook_in_a_browser() {
    let _ = (browser_modules(), chromium(), tool(&["node"]));
    let dir = tempfile::Builder::new()
        .prefix("nbidle-page-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let notebooks = vec![
        jupyterlab_notebook(d, LAB, None),
        jupyter_notebook(SECOND, JupyterVersion::Current),
        sleeper("batch-report"),
        sleeper("scratch"),
    ];
    let workspace = d.join("workspaces").join(LAB);
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::write(workspace.join("kept.txt"), "kept across stop and start\n").unwrap();
    let port = free_port();
    let opts = NbidleOptions {
        // Nothing stops for being idle while the test runs.
        idle_after: "30m",
        extra_auth: json!({
            "namespaced_api_tokens": [
                {"token": OTHER_TOKEN, "namespaces": ["other"]},
                {"token": LOCAL_TOKEN, "namespaces": ["local"]},
            ],
        }),
        ..Default::default()
    };
    let mut cfg = nbidle_config(port, d, &notebooks, &opts);
    for (i, owner) in [
        "ada@example.org",
        "bob@example.org",
        "ada@example.org",
        "eve@example.org",
    ]
    .iter()
    .enumerate()
    {
        cfg["backend"]["local"]["notebooks"][i]["owner"] = json!(owner);
    }
    let am_port = free_port();
    let am_url = format!("http://127.0.0.1:{am_port}");
    cfg["alertmanager"]["url"] = json!(am_url);
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    let nbidle = Nbidle::start_yaml(d, "nbidle", port, &yaml, &[]).await;
    let _am = Alertmanager::start_at(d, &nbidle.config, am_port).await;
    let lab_url = notebooks[0].url.clone();
    wait_ready("JupyterLab answering", &format!("{lab_url}api"), UI_TIMEOUT).await;
    // A stopped row in the list and its screenshot.
    let r = nbidle.post("notebooks/local/scratch/stop").await;
    assert!(r.status().is_success(), "{}", r.status());
    // The exporter has probed JupyterLab: the page shows its time left.
    eventually("JupyterLab probed", UI_TIMEOUT, || async {
        let m = nbidle.exporter_metrics().await;
        m.contains(&format!(
            "nbidle_notebook_probe_success{{namespace=\"local\",notebook=\"{LAB}\"}} 1"
        ))
        .then_some(())
    })
    .await;
    let before = nbidle.notebook("local", LAB).await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    std::fs::create_dir_all(&shots).unwrap();
    let settings = json!({
        "admin": API_TOKEN,
        "other": OTHER_TOKEN,
        "local": LOCAL_TOKEN,
        "jupyterToken": JUPYTER_TOKEN,
        "lab": LAB,
        "second": SECOND,
        "shots": shots,
    });
    let mut driver = LabDriver::spawn_with_args(
        d,
        "page.mjs",
        "page",
        &[nbidle.url.clone(), settings.to_string()],
    );
    let list = driver.wait_for("list", UI_TIMEOUT).await;
    let rows: Vec<&str> = list.line["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "local/analysis",
            "local/batch-report",
            "local/lab",
            "local/scratch"
        ]
    );
    let left = list.line["left"].as_str().unwrap();
    assert!(left.ends_with(" left") && left.contains("min"), "{left}");
    // Keep running made a real silence in Alertmanager.
    driver.wait_for("kept-running", UI_TIMEOUT).await;

    // The driver read "Stopped by a person" on the page, from the backend's
    // state; the stop counts are checked at the end.
    driver.wait_for("stopped-by-keyboard", DRIVER_TIMEOUT).await;
    driver.wait_for("lab-open", DRIVER_TIMEOUT).await;
    let after = nbidle.notebook("local", LAB).await;
    assert_eq!(after["status"], "running", "{after}");
    assert!(
        unix_time(&after["started_at"]) > unix_time(&before["started_at"]),
        "started again: {before} → {after}"
    );
    let phone = driver.wait_for("phone", DRIVER_TIMEOUT).await;
    assert!(phone.line["scroll"].as_f64() <= phone.line["view"].as_f64());
    driver.wait_for("done", DRIVER_TIMEOUT).await;
    // The token for namespace local stopped the second notebook; the one
    // for namespace other stopped nothing (JupyterLab still runs).
    let second = nbidle
        .wait_status("local", SECOND, "stopped", Duration::from_secs(30))
        .await;
    assert_eq!(second["stopped_by"]["trigger"], "user", "{second}");
    // Stops by a person: scratch through the API, then lab and the second
    // notebook on the page; lab's start on the page.
    let stops = r#"nbidle_stops_total{result="success",trigger="user"}"#;
    let starts = r#"nbidle_starts_total{result="success",trigger="user"}"#;
    assert_eq!(nbidle.metric(stops).await, 3.0);
    assert_eq!(nbidle.metric(starts).await, 1.0);
    assert_eq!(nbidle.notebook("local", LAB).await["status"], "running");
    assert_eq!(
        std::fs::read_to_string(workspace.join("kept.txt")).unwrap(),
        "kept across stop and start\n"
    );
    // The silence Keep running made, expired by Cancel.
    let silences: Value = nbidle
        .http
        .get(format!("{am_url}/api/v2/silences"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ours: Vec<&Value> = silences
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["createdBy"] == "nbidle page")
        .collect();
    assert_eq!(ours.len(), 1, "{silences}");
    assert_eq!(ours[0]["status"]["state"], "expired", "{silences}");
    let matchers = ours[0]["matchers"].to_string();
    assert!(
        matchers.contains("\"NotebookIdle\"") && matchers.contains(&format!("\"{LAB}\"")),
        "{matchers}"
    );
    for shot in ["page-list.png", "page-signin.png", "page-phone.png"] {
        let len = std::fs::metadata(shots.join(shot)).unwrap().len();
        assert!(len > 5_000, "{shot}: {len} bytes");
    }
    drop(driver);
    drop(nbidle);
}
