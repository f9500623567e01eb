//! The warning banner in a real browser, from a real warning: a local
//! notebook with a real Jupyter server goes idle under nbidle's generated
//! rules in a real Prometheus; a real Alertmanager on nbidle's generated
//! config routes the warning (`NotebookIdleSoon`) to nbidle and, at the
//! deadline, the stop alert. A signed-in person in headless Chromium
//! (`tests/browser/banner.mjs`) sees "Stops in … unless used — Keep
//! running" on that notebook's row while it still runs, in a tab loaded
//! before the warning (the page's script) and in one loaded after it; the
//! countdown ticks and agrees with the stop that follows; then the row
//! reads stopped and the banner is gone. The screenshot of the banner is
//! docs/img/page-warning.png.
//!
//! Components: `bash scripts/browser-deps.sh` (`make test-deps` runs it);
//! a missing one fails the test.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;

const LAB: &str = "lab";
/// Long enough for the browser to sign in before the warning fires.
const IDLE_AFTER: &str = "80s";
/// The banner's time on the page: long enough to read it in two tabs and
/// see it tick.
const WARN_BEFORE: &str = "40s";
const WARN_BEFORE_SECS: f64 = 40.0;
/// The warning, then the stop, with this test's intervals.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(300);
/// How far the countdown may be from the stop that follows: the rule's
/// evaluation (1 s), Alertmanager's `group_wait` (1 s), the webhook, the
/// process's end, and the page's whole seconds.
const STOP_TOLERANCE_SECS: f64 = 8.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_the_warning_banner_before_the_idle_stop_and_not_after() {
    // Before anything starts: a missing component fails here.
    let _ = (browser_modules(), chromium(), tool(&["node"]));
    let dir = tempfile::Builder::new()
        .prefix("nbidle-banner-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let notebooks = vec![jupyter_notebook(LAB, JupyterVersion::Current)];
    let port = free_port();
    let opts = NbidleOptions {
        idle_after: IDLE_AFTER,
        ..Default::default()
    };
    let mut cfg = nbidle_config(port, d, &notebooks, &opts);
    cfg["autostop"]["warn_before"] = json!(WARN_BEFORE);
    cfg["backend"]["local"]["notebooks"][0]["owner"] = json!("ada@example.org");
    // Keep running is offered only with an Alertmanager to make silences in.
    let am_port = free_port();
    cfg["alertmanager"]["url"] = json!(format!("http://127.0.0.1:{am_port}"));
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    let nbidle = Nbidle::start_yaml(d, "nbidle", port, &yaml, &[]).await;
    nbidle
        .wait_status("local", LAB, "running", Duration::from_secs(120))
        .await;
    // nbidle's generated Alertmanager config: the warning's route to nbidle.
    let am = Alertmanager::start_at(d, &nbidle.config, am_port).await;
    let _prom = Prometheus::start(d, &nbidle, &am).await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    std::fs::create_dir_all(&shots).unwrap();
    let settings = json!({"admin": API_TOKEN, "lab": LAB, "shots": shots});
    let mut driver = LabDriver::spawn_with_args(
        d,
        "banner.mjs",
        "banner",
        &[nbidle.url.clone(), settings.to_string()],
    );
    driver.wait_for("signed-in", DRIVER_TIMEOUT).await;

    // The banner, as the server rendered it, while the notebook runs.
    let banner = driver.wait_for("banner", DRIVER_TIMEOUT).await;
    let b = &banner.line;
    let text = b["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("Stops in ") && text.contains("unless used"),
        "{b}"
    );
    let seconds = b["seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no countdown in the banner: {b}"));
    assert!(
        seconds > 0.0 && seconds <= WARN_BEFORE_SECS,
        "the banner counts {seconds} s, warn_before is {WARN_BEFORE}: {b}"
    );
    assert_eq!(b["status"], "running", "{b}");
    assert_eq!(b["keep"]["label"], "Keep running", "{b}");
    assert_eq!(b["keep"]["action"], "/notebooks/keep-running", "{b}");
    assert_eq!(b["keep"]["csrf"], true, "{b}");
    // nbidle's JSON agrees: warned and running, at that moment.
    let n = nbidle.notebook("local", LAB).await;
    assert_eq!(n["status"], "running", "{n}");
    assert!(n["warning"].is_object(), "{n}");

    // The tab loaded before the warning showed it without a reload and
    // counted down.
    let live = driver.wait_for("banner-live", DRIVER_TIMEOUT).await;
    assert_eq!(live.line["status"], "running", "{}", live.line);
    assert_eq!(live.line["navigations"], 0, "{}", live.line);
    driver.wait_for("ticking", DRIVER_TIMEOUT).await;

    // The stop, then the row without its banner.
    let gone = driver.wait_for("stopped-live", DRIVER_TIMEOUT).await;
    assert_eq!(gone.line["navigations"], 0, "{}", gone.line);
    let stopped = driver.wait_for("stopped", DRIVER_TIMEOUT).await;
    let why = stopped.line["why"].as_str().unwrap_or_default();
    assert!(why.contains("NotebookIdle"), "{}", stopped.line);
    driver.wait_for("done", DRIVER_TIMEOUT).await;

    let s = nbidle.notebook("local", LAB).await;
    assert_eq!(s["status"], "stopped", "{s}");
    assert_eq!(s["stopped_by"]["alertname"], "NotebookIdle", "{s}");
    assert!(s.get("warning").is_none(), "{s}");
    // The countdown was right: the stop came when the banner said it would.
    let due = b["at"].as_f64().unwrap() + seconds;
    let off = unix_time(&s["stopped_at"]) - due;
    eprintln!("the banner said {seconds} s; the stop came {off:+.1} s from then");
    assert!(
        off.abs() <= STOP_TOLERANCE_SECS,
        "the banner said {seconds} s at {}, the stop came {off:+.1} s off: {s}",
        b["at"]
    );
    // The warning that reached nbidle came through Alertmanager's route.
    assert!(
        nbidle
            .metric("nbidle_alert_decisions_total{decision=\"warning\"}")
            .await
            >= 1.0
    );
    let len = std::fs::metadata(shots.join("page-warning.png"))
        .unwrap()
        .len();
    assert!(len > 5_000, "page-warning.png: {len} bytes");
    drop(driver);
    drop(nbidle);
}
