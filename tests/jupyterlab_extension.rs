//! nbidle's JupyterLab extension (`jupyterlab/`) in a real browser, with
//! real JupyterLabs that have it installed, real nbidle, Prometheus on
//! nbidle's generated rules and Alertmanager on its generated config:
//!
//! - alpha: a person writes in a notebook and saves nothing. The status bar
//!   counts down within `warn_before`; the warning dialog comes when
//!   `NotebookIdleSoon` fires; "Save and keep working" saves the draft and
//!   the notebook is not stopped at its old deadline. At the next warning,
//!   "Keep running for 4 h" makes an Alertmanager silence (`amtool` sees it).
//! - beta: a tab with the extension and nothing else. Its polling is not
//!   activity: the stop comes at the deadline the countdown showed, and the
//!   tab then says the notebook was stopped, by what, and links to its page,
//!   which has Start.
//!
//! The screenshots of the warning and the stop are
//! docs/img/jupyterlab-{warning,stopped}.png.
//!
//! Components: `make test-deps` (scripts/test-deps.sh, browser-deps.sh,
//! jupyterlab-ext.sh); a missing one fails the test.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Long enough for the browser to open JupyterLab and type before the
/// warning fires.
const IDLE_AFTER: &str = "80s";
const IDLE_AFTER_SECS: f64 = 80.0;
const WARN_BEFORE: &str = "40s";
const WARN_BEFORE_SECS: f64 = 40.0;
const DRIVER_TIMEOUT: Duration = Duration::from_secs(300);
/// How far a stop may come from the countdown's deadline: the rule's
/// evaluation (1 s), Alertmanager's `group_wait` (1 s), the webhook, the
/// process's end, and the status bar's whole seconds.
const STOP_TOLERANCE_SECS: f64 = 8.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_warned_in_jupyterlab_keeps_working_and_learns_of_a_stop() {
    // Before anything starts: a missing component fails here.
    let _ = (
        browser_modules(),
        chromium(),
        tool(&["node"]),
        jupyterlab_extension(),
    );
    let dir = tempfile::Builder::new()
        .prefix("nbidle-extension-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    // Autosave well beyond the test: only the dialog's button saves.
    let alpha = jupyterlab_notebook(d, "alpha", Some(3600));
    let beta = jupyterlab_notebook(d, "beta", Some(3600));
    let (alpha_url, beta_url) = (alpha.url.clone(), beta.url.clone());
    let port = free_port();
    let opts = NbidleOptions {
        idle_after: IDLE_AFTER,
        ..Default::default()
    };
    let mut cfg = nbidle_config(port, d, &[alpha, beta], &opts);
    cfg["autostop"]["warn_before"] = json!(WARN_BEFORE);
    cfg["backend"]["local"]["notebooks"][0]["owner"] = json!("ada");
    let am_port = free_port();
    cfg["alertmanager"]["url"] = json!(format!("http://127.0.0.1:{am_port}"));
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    let nbidle = Nbidle::start_yaml(d, "nbidle", port, &yaml, &[]).await;
    for nb in ["alpha", "beta"] {
        nbidle
            .wait_status("local", nb, "running", Duration::from_secs(120))
            .await;
    }
    let am = Alertmanager::start_at(d, &nbidle.config, am_port).await;
    let _prom = Prometheus::start(d, &nbidle, &am).await;

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    std::fs::create_dir_all(&shots).unwrap();
    let settings =
        json!({"token": JUPYTER_TOKEN, "alpha": alpha_url, "beta": beta_url, "shots": shots});
    let mut driver = LabDriver::spawn_with_args(
        d,
        "extension.mjs",
        "extension",
        &["-".to_string(), settings.to_string()],
    );

    // Both tabs count down within warn_before, then warn in a dialog with
    // the words and buttons.
    let mut deadlines = Vec::new();
    for nb in ["alpha", "beta"] {
        let c = driver
            .wait_for(&format!("{nb}:countdown"), DRIVER_TIMEOUT)
            .await;
        let secs = c.line["seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("no countdown in {}", c.line));
        assert!(
            secs > 0.0 && secs <= WARN_BEFORE_SECS,
            "{nb}: the status bar counts {secs} s, warn_before is {WARN_BEFORE}: {}",
            c.line
        );
        deadlines.push(c.line["at"].as_f64().unwrap() + secs);
        let w = driver
            .wait_for(&format!("{nb}:dialog"), DRIVER_TIMEOUT)
            .await;
        let text = w.line["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("This notebook will be stopped in")
                && text.contains("because nothing has run. Unsaved changes are lost."),
            "{nb}: {}",
            w.line
        );
        assert_eq!(
            w.line["buttons"],
            json!(["Save and keep working", "Keep running for 4 h", "Dismiss"]),
            "{nb}: {}",
            w.line
        );
    }
    let (alpha_deadline, beta_deadline) = (deadlines[0], deadlines[1]);

    // alpha: "Save and keep working" saved the draft, and it counted.
    let saved_at = driver.wait_for("alpha:saved", DRIVER_TIMEOUT).await.line["at"]
        .as_f64()
        .unwrap();
    let saved = std::fs::read_to_string(d.join("workspaces/alpha/Untitled.ipynb"))
        .expect("the dialog's save wrote the notebook");
    assert!(saved.contains("draft_marker = 42"), "{saved}");
    let wait = alpha_deadline + STOP_TOLERANCE_SECS - unix_now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let a = nbidle.notebook("local", "alpha").await;
    assert_eq!(
        a["status"], "running",
        "alpha was stopped at its old deadline: {a}"
    );

    // beta: the tab's polling moved nothing; stopped at its deadline, and
    // the tab says so.
    let stopped = driver.wait_for("beta:stopped", DRIVER_TIMEOUT).await;
    let b = nbidle.notebook("local", "beta").await;
    assert_eq!(b["status"], "stopped", "{b}");
    assert_eq!(b["stopped_by"]["alertname"], "NotebookIdle", "{b}");
    let off = unix_time(&b["stopped_at"]) - beta_deadline;
    eprintln!("beta: the status bar's deadline and the stop are {off:+.1} s apart");
    assert!(
        off.abs() <= STOP_TOLERANCE_SECS,
        "beta's stop came {off:+.1} s from the countdown's deadline: {b}"
    );
    let text = stopped.line["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("was stopped")
            && text.contains("NotebookIdle")
            && text.contains("files are kept"),
        "{}",
        stopped.line
    );
    assert_eq!(stopped.line["href"], json!(beta_url), "{}", stopped.line);
    let page = driver.wait_for("beta:start-page", DRIVER_TIMEOUT).await;
    assert!(
        page.line["start_buttons"].as_u64().unwrap_or(0) >= 1,
        "{}",
        page.line
    );

    // alpha: the next warning, one idle time after the save; Keep running.
    let again = driver.wait_for("alpha:dialog-again", DRIVER_TIMEOUT).await;
    let since_save = again.line["at"].as_f64().unwrap() - saved_at;
    assert!(
        since_save > IDLE_AFTER_SECS - WARN_BEFORE_SECS - STOP_TOLERANCE_SECS,
        "the second warning came {since_save:.1} s after the save"
    );
    let kept = driver.wait_for("alpha:kept", DRIVER_TIMEOUT).await;
    eprintln!("alpha: {}", kept.line["text"]);
    let silences = am.silences();
    let ours: Vec<&Value> = silences
        .iter()
        .filter(|s| {
            s["matchers"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["name"] == "notebook" && m["value"] == "alpha")
            })
        })
        .collect();
    assert_eq!(ours.len(), 1, "{silences:?}");
    let by = ours[0]["createdBy"].as_str().unwrap_or_default();
    assert!(by.contains("JupyterLab"), "{}", ours[0]);
    let a = nbidle.notebook("local", "alpha").await;
    assert!(a["kept_running"].is_object(), "{a}");
    driver.wait_for("done", DRIVER_TIMEOUT).await;

    // The dialogs came with the warnings Alertmanager routed to nbidle;
    // nbidle told both notebooks, and made the silence at a person's word.
    assert!(
        nbidle
            .metric("nbidle_alert_decisions_total{decision=\"warning\"}")
            .await
            >= 3.0
    );
    assert!(
        nbidle
            .metric("nbidle_jupyterlab_notifications_total{result=\"ok\"}")
            .await
            >= 2.0
    );
    assert_eq!(
        nbidle
            .metric("nbidle_jupyterlab_keep_requests_total{result=\"ok\"}")
            .await,
        1.0
    );
    for shot in ["jupyterlab-warning.png", "jupyterlab-stopped.png"] {
        let len = std::fs::metadata(shots.join(shot)).unwrap().len();
        assert!(len > 5_000, "{shot}: {len} bytes");
    }
    drop(driver);
    drop(nbidle);
}
