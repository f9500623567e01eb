//! A real JupyterLab 4 in a real browser: headless Chromium (Debian's)
//! driven by Playwright (`tests/browser/lab.mjs`), the JupyterLab started
//! by nbidle's local backend, real Prometheus with nbidle's generated rules
//! and real Alertmanager with nbidle's generated route. Each scenario runs
//! in its own nbidle, with one JupyterLab; the scenarios that must keep
//! their notebook also run an unused Jupyter server beside it, which must
//! be stopped, so "kept" cannot come from a loop that stops nothing.
//!
//! Components: `bash scripts/browser-deps.sh` (`make test-deps` runs it);
//! a missing one fails the test, in CI and elsewhere.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Short, and still well above the time from JupyterLab's start to the
/// browser's first kernel or terminal (about 10 s on a loaded machine).
const IDLE_AFTER_TEXT: &str = "25s";
const IDLE_AFTER_SECS: u64 = 25;
const IDLE_AFTER: Duration = Duration::from_secs(IDLE_AFTER_SECS);
/// Longer than a stop takes after its deadline with these settings
/// (exporter, scrape and evaluation every 1 s, `group_wait` 1 s); the
/// stopped scenario prints the lag it measured.
const MARGIN: Duration = Duration::from_secs(10);
/// Chromium launched, JupyterLab loaded, a notebook or terminal open.
const UI_TIMEOUT: Duration = Duration::from_secs(120);
const CONTROL: &str = "control";

/// nbidle with one JupyterLab (and the control notebook when asked),
/// Alertmanager and Prometheus; all of it ends when dropped.
struct Stack {
    name: String,
    lab_url: String,
    started: Instant,
    nbidle: Nbidle,
    prom: Prometheus,
    _am: Alertmanager,
    dir: KeptOnFailure,
}

impl Stack {
    async fn start(name: &str, autosave_secs: Option<u32>, control: bool) -> Stack {
        // Before anything starts: a missing component fails here.
        let _ = (browser_modules(), chromium(), tool(&["node"]));
        assert_eq!(IDLE_AFTER_TEXT, format!("{IDLE_AFTER_SECS}s"));
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix(&format!("nbidle-browser-{name}-"))
            .tempdir()
            .unwrap();
        let lab = jupyterlab_notebook(dir.path(), name, autosave_secs);
        let lab_url = lab.url.clone();
        let mut notebooks = vec![lab];
        if control {
            notebooks.push(jupyter_notebook(CONTROL, JupyterVersion::Current));
        }
        let port = free_port();
        let opts = NbidleOptions {
            idle_after: IDLE_AFTER_TEXT,
            ..Default::default()
        };
        let mut cfg = nbidle_config(port, dir.path(), &notebooks, &opts);
        // These people do not know nbidle's JupyterLab extension: its
        // warning dialog would take the click and the keys they script
        // (tests/jupyterlab_extension.rs is the person who answers it).
        cfg["notify"] = json!({"jupyterlab": {"enabled": false}});
        let yaml = serde_yaml::to_string(&cfg).unwrap();
        let nbidle = Nbidle::start_yaml(dir.path(), "nbidle", port, &yaml, &[]).await;
        // Prometheus and Alertmanager start while Jupyter does.
        let am = Alertmanager::start(dir.path(), &nbidle.config).await;
        let prom = Prometheus::start(dir.path(), &nbidle, &am).await;
        // Jupyter answering, not nbidle's status: nbidle's readiness probe
        // backs off to a few seconds while a server boots.
        wait_ready(
            &format!("{name} answering"),
            &format!("{lab_url}api"),
            UI_TIMEOUT,
        )
        .await;
        eprintln!(
            "{name}: nbidle, JupyterLab, Alertmanager, Prometheus up in {:?}",
            started.elapsed()
        );
        Stack {
            name: name.into(),
            lab_url,
            started,
            nbidle,
            prom,
            _am: am,
            dir: KeptOnFailure(Some(dir)),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.0.as_ref().unwrap().path()
    }

    /// Polls nbidle's API and exporter every 500 ms until the JupyterLab
    /// notebook is stopped or `until` passes; the driver must stay alive.
    async fn watch(&self, tab: &mut LabDriver, until: Instant) -> Watched {
        let mut seen = Watched::default();
        loop {
            tab.poll();
            let metrics = self.nbidle.exporter_metrics().await;
            if let Some(t) = exporter_value(
                &metrics,
                "nbidle_notebook_last_activity_timestamp_seconds",
                &self.name,
            ) {
                seen.last_activity = Some(t);
            }
            let v = self.nbidle.notebook("local", &self.name).await;
            if v["status"] == "stopped" {
                seen.stopped = Some(v);
                return seen;
            }
            if Instant::now() >= until {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The JupyterLab notebook must keep running from `from` until its idle
    /// time plus [`MARGIN`] have passed; `why` explains a stop.
    async fn must_keep(
        &self,
        tab: &mut LabDriver,
        from: &LabEvent,
        why: impl Fn(&LabDriver) -> String,
    ) {
        let seen = self.watch(tab, from.at + IDLE_AFTER + MARGIN).await;
        if let Some(v) = seen.stopped {
            let stopped_at = unix(&v["stopped_at"]);
            panic!(
                "{}: stopped by {}/{} {:.1}s after {:?} (idle time {IDLE_AFTER_SECS}s) while {}",
                self.name,
                v["stopped_by"]["trigger"],
                v["stopped_by"]["alertname"],
                stopped_at - from.unix,
                from.name(),
                why(tab)
            );
        }
        // Not even close: its idle alert never became pending.
        let alerts = self
            .prom
            .query(&format!(
                "max_over_time(ALERTS{{alertname=\"NotebookIdle\",notebook=\"{}\"}}[10m])",
                self.name
            ))
            .await
            .unwrap();
        assert_eq!(
            alerts,
            Value::Array(vec![]),
            "{}: NotebookIdle was pending or firing",
            self.name
        );
        eprintln!(
            "{}: kept {:?} past {:?} (idle time + {MARGIN:?}); last activity {:.1}s before the end",
            self.name,
            from.at.elapsed(),
            from.name(),
            seen.last_activity.map_or(f64::NAN, |t| unix_now() - t)
        );
    }

    /// The unused notebook beside the JupyterLab is stopped for being idle.
    async fn control_is_stopped(&self) {
        let v = self
            .nbidle
            .wait_status(
                "local",
                CONTROL,
                "stopped",
                IDLE_AFTER + Duration::from_secs(60),
            )
            .await;
        assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{v}");
        assert_eq!(v["stopped_by"]["alertname"], "NotebookIdle", "{v}");
    }

    /// Jupyter's REST API of the JupyterLab notebook.
    async fn jupyter_get(&self, path: &str) -> Value {
        let r = jupyter_api(
            &self.nbidle.http,
            &self.lab_url,
            reqwest::Method::GET,
            path,
            None,
        )
        .await
        .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    fn done(&self) {
        eprintln!("{}: scenario took {:?}", self.name, self.started.elapsed());
    }
}

#[derive(Default)]
struct Watched {
    stopped: Option<Value>,
    last_activity: Option<f64>,
}

/// The test's directory, kept (and its path printed) when the test fails,
/// for the logs of nbidle, Jupyter, Prometheus and the browser.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!("logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// One notebook's sample of a family on nbidle's `/metrics/notebooks`.
fn exporter_value(text: &str, family: &str, notebook: &str) -> Option<f64> {
    let prefix = format!("{family}{{namespace=\"local\",notebook=\"{notebook}\"");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.split_once("} ").map(|(_, v)| v))
        .map(|v| v.trim().parse().unwrap())
}

/// A cell's source: one string, or (as stored on disk) a list of lines.
fn cell_source(v: &Value) -> String {
    match v {
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        other => other.as_str().unwrap_or_default().to_string(),
    }
}

/// An RFC 3339 time from nbidle's or Jupyter's API, as Unix seconds.
fn unix(v: &Value) -> f64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s}: {e}"));
    t.unix_timestamp_nanos() as f64 / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_left_open_after_running_a_cell_is_stopped() {
    let s = Stack::start("open-tab", None, false).await;
    let mut tab = LabDriver::spawn(s.dir(), &s.lab_url, "cell", 0);
    let ran = tab.wait_for("ran", UI_TIMEOUT).await;
    let seen = s
        .watch(&mut tab, ran.at + IDLE_AFTER + Duration::from_secs(60))
        .await;
    let v = seen.stopped.unwrap_or_else(|| {
        panic!(
            "open-tab: still running {:?} after its cell ran (idle time {IDLE_AFTER_SECS}s)",
            ran.at.elapsed()
        )
    });
    assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{v}");
    assert_eq!(v["stopped_by"]["alertname"], "NotebookIdle", "{v}");
    // The tab was open all along: the driver is alive and reported no error.
    tab.poll();
    let stopped_at = unix(&v["stopped_at"]);
    let after_cell = stopped_at - ran.unix;
    // The kernel's last message comes just before the page shows the output.
    assert!(
        after_cell >= IDLE_AFTER_SECS as f64 - 3.0,
        "open-tab: stopped {after_cell:.1}s after its cell ran, before the idle time"
    );
    let last = seen
        .last_activity
        .expect("the exporter published the notebook's last activity");
    eprintln!(
        "open-tab: stopped {after_cell:.1}s after the cell's output showed, {:.1}s after its deadline (last activity + {IDLE_AFTER_SECS}s)",
        stopped_at - (last + IDLE_AFTER_SECS as f64)
    );
    s.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sleep_cell_with_the_tab_open_is_kept() {
    let s = Stack::start("sleep-cell", None, true).await;
    let sleep_secs = (IDLE_AFTER + MARGIN).as_secs() + 30;
    let mut tab = LabDriver::spawn(s.dir(), &s.lab_url, "sleep", sleep_secs);
    let running = tab.wait_for("running", UI_TIMEOUT).await;
    s.must_keep(&mut tab, &running, |_| {
        format!("a cell ran time.sleep({sleep_secs}) silently")
    })
    .await;
    // What it was kept by: Jupyter reads the kernel busy.
    let kernels = s.jupyter_get("api/kernels").await;
    let states: Vec<&Value> = kernels
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["execution_state"])
        .collect();
    assert!(states.iter().any(|s| *s == "busy"), "kernels: {kernels}");
    s.control_is_stopped().await;
    s.done();
}

/// Kept by file work: each autosave is a contents API write, which the
/// server counts in its `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_into_a_markdown_cell_with_autosave_is_kept() {
    const AUTOSAVE_SECS: u32 = 5;
    let s = Stack::start("markdown", Some(AUTOSAVE_SECS), true).await;
    // The override is in effect: JupyterLab's default for the interval.
    let settings = s
        .jupyter_get("lab/api/settings/@jupyterlab/docmanager-extension:plugin")
        .await;
    assert_eq!(
        settings["schema"]["properties"]["autosaveInterval"]["default"], AUTOSAVE_SECS,
        "{settings}"
    );
    let typing_secs = (IDLE_AFTER + MARGIN).as_secs() + 5;
    let mut tab = LabDriver::spawn(s.dir(), &s.lab_url, "markdown", typing_secs);
    let typing = tab.wait_for("typing", UI_TIMEOUT).await;
    s.must_keep(&mut tab, &typing, |tab| {
        format!(
            "typing into a markdown cell, saved by JupyterLab's autosave {} times (PUT /api/contents)",
            tab.count("saved")
        )
    })
    .await;
    assert!(
        tab.count("saved") >= 3,
        "autosave saved {} times",
        tab.count("saved")
    );
    // The typed text is in the saved notebook.
    let saved = s.jupyter_get("api/contents/Untitled.ipynb").await;
    let sources: Vec<String> = saved["content"]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cell_type"] == "markdown")
        .map(|c| cell_source(&c["source"]))
        .collect();
    assert!(
        sources.iter().any(|s| s.contains("word1 ")),
        "saved markdown cells: {sources:?}"
    );
    s.control_is_stopped().await;
    s.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_typed_into_is_kept() {
    let s = Stack::start("terminal", None, true).await;
    let typing_secs = (IDLE_AFTER + MARGIN).as_secs() + 5;
    let mut tab = LabDriver::spawn(s.dir(), &s.lab_url, "terminal", typing_secs);
    let typing = tab.wait_for("typing", UI_TIMEOUT).await;
    s.must_keep(&mut tab, &typing, |_| {
        "typing into a terminal every 2 s".into()
    })
    .await;
    // What it was kept by: Jupyter saw the terminal's input lately.
    let terminals = s.jupyter_get("api/terminals").await;
    let latest = terminals
        .as_array()
        .unwrap()
        .iter()
        .map(|t| unix(&t["last_activity"]))
        .fold(f64::NAN, f64::max);
    assert!(
        latest >= typing.unix + IDLE_AFTER_SECS as f64,
        "terminals: {terminals} (typing began at {})",
        typing.unix
    );
    s.control_is_stopped().await;
    s.done();
}
