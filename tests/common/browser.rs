//! A real JupyterLab as a local notebook and a real browser using it:
//! headless Chromium (Debian's) driven by Playwright through
//! `tests/browser/lab.mjs`, which reports its progress as JSON lines.
#![allow(
    dead_code,
    reason = "each test binary compiles tests/common whole and uses a part of it"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::jupyter::{jupyter, JUPYTER_TOKEN};
use super::proc::{free_port, tool, Proc};
use super::serve::NotebookSpec;

const INSTALL: &str =
    "run `bash scripts/browser-deps.sh` (as root) to install Chromium and playwright-core";

/// The cache `scripts/browser-deps.sh` installs into.
fn cache() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    std::env::var("NBIDLE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(home).join(".cache/nbidle"))
}

/// node_modules holding playwright-core, or fails the test.
pub fn browser_modules() -> PathBuf {
    let p = std::env::var("NBIDLE_BROWSER_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache().join("browser/node_modules"));
    assert!(
        p.join("playwright-core/package.json").exists(),
        "missing playwright-core in {}: {INSTALL}",
        p.display()
    );
    p
}

/// The Chromium the driver launches, or fails the test.
pub fn chromium() -> PathBuf {
    let p = std::env::var("NBIDLE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    assert!(p.exists(), "missing Chromium at {}: {INSTALL}", p.display());
    p
}

/// nbidle's JupyterLab extension (`jupyterlab/`), installed in the test
/// venv by `scripts/jupyterlab-ext.sh`, or fails the test: the
/// `labextension list` line of its frontend, which Jupyter reports enabled.
pub fn jupyterlab_extension() -> String {
    let out = Command::new(jupyter())
        .args(["labextension", "list"])
        .output()
        .unwrap_or_else(|e| panic!("jupyter labextension list: {e}"));
    // Jupyter writes the list to stderr or stdout, depending on its version.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains("nbidle-jupyterlab"))
        .unwrap_or_else(|| {
            panic!("nbidle's JupyterLab extension is not installed: run `bash scripts/jupyterlab-ext.sh`; {text}")
        });
    assert!(
        line.contains("enabled"),
        "nbidle's JupyterLab extension is installed but not enabled: {line}"
    );
    line.trim().to_string()
}

/// JupyterLab (from the test venv) as a local notebook, with its own
/// workspaces, user settings and settings overrides under `dir/<name>-lab`.
/// `autosave_secs` lowers JupyterLab's autosave interval (default 120 s)
/// through the overrides, as an administrator would.
pub fn jupyterlab_notebook(dir: &Path, name: &str, autosave_secs: Option<u32>) -> NotebookSpec {
    let lab = dir.join(format!("{name}-lab"));
    let (workspaces, user_settings, app_settings) = (
        lab.join("workspaces"),
        lab.join("user-settings"),
        lab.join("app-settings"),
    );
    for d in [&workspaces, &user_settings, &app_settings] {
        std::fs::create_dir_all(d).unwrap();
    }
    // No news or update checks: nothing leaves loopback, and no
    // notification takes the focus while the test types.
    let mut overrides = json!({
        "@jupyterlab/apputils-extension:notification": {
            "fetchNews": "false",
            "checkForUpdates": false,
        },
    });
    if let Some(secs) = autosave_secs {
        overrides["@jupyterlab/docmanager-extension:plugin"] =
            json!({"autosave": true, "autosaveInterval": secs});
    }
    std::fs::write(
        app_settings.join("overrides.json"),
        serde_json::to_string_pretty(&overrides).unwrap(),
    )
    .unwrap();
    let port = free_port();
    let command = vec![
        jupyter().display().to_string(),
        "lab".into(),
        "--allow-root".into(),
        "--no-browser".into(),
        "--ServerApp.ip=127.0.0.1".into(),
        format!("--ServerApp.port={port}"),
        "--ServerApp.port_retries=0".into(),
        "--ServerApp.authenticate_prometheus=False".into(),
        format!("--IdentityProvider.token={JUPYTER_TOKEN}"),
        format!("--LabApp.workspaces_dir={}", workspaces.display()),
        format!("--LabApp.user_settings_dir={}", user_settings.display()),
        format!("--LabApp.app_settings_dir={}", app_settings.display()),
    ];
    NotebookSpec {
        name: name.into(),
        command,
        url: format!("http://127.0.0.1:{port}/"),
        autostop: true,
    }
}

/// One line the driver printed: `{"t": seconds, "event": name, ...}`.
#[derive(Debug, Clone)]
pub struct LabEvent {
    /// When the test read it.
    pub at: Instant,
    /// Its Unix time, as the test's clock read it.
    pub unix: f64,
    pub line: Value,
}

impl LabEvent {
    pub fn name(&self) -> &str {
        self.line["event"].as_str().unwrap_or("")
    }
}

/// `tests/browser/lab.mjs` running one scenario against a JupyterLab; the
/// browser is closed when the guard drops.
pub struct LabDriver {
    pub proc: Proc,
    pub scenario: String,
    lines: mpsc::Receiver<LabEvent>,
    pub events: Vec<LabEvent>,
    log: PathBuf,
}

impl LabDriver {
    /// Starts the driver; `seconds` is the scenario's argument (0: none).
    pub fn spawn(dir: &Path, base_url: &str, scenario: &str, seconds: u64) -> LabDriver {
        Self::spawn_script(dir, "lab.mjs", base_url, scenario, seconds)
    }

    /// Starts `tests/browser/<script>` with the arguments of `lab.mjs`.
    pub fn spawn_script(
        dir: &Path,
        script: &str,
        base_url: &str,
        scenario: &str,
        seconds: u64,
    ) -> LabDriver {
        let args = [
            base_url.to_string(),
            JUPYTER_TOKEN.to_string(),
            scenario.to_string(),
            seconds.to_string(),
        ];
        Self::spawn_with_args(dir, script, scenario, &args)
    }

    /// Starts another driver script of `tests/browser/` with `args`, read
    /// the same way (JSON lines); `tag` names its log.
    pub fn spawn_with_args(dir: &Path, script: &str, tag: &str, args: &[String]) -> LabDriver {
        let node = tool(&["node"]);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/browser")
            .join(script);
        let log = dir.join(format!("browser-{tag}.log"));
        let mut child = Command::new(node)
            .arg(path)
            .args(args)
            .env("NBIDLE_BROWSER_MODULES", browser_modules())
            .env("NBIDLE_CHROMIUM", chromium())
            .env("NBIDLE_BROWSER_SHOTS", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning node for {script} ({tag}): {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let name = tag.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("browser {name}: {line}");
                let line = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"event": "text", "text": line}));
                let event = LabEvent {
                    at: Instant::now(),
                    unix: unix_now(),
                    line,
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        LabDriver {
            proc: Proc::adopt(tag, child),
            scenario: tag.into(),
            lines: rx,
            events: Vec::new(),
            log,
        }
    }

    /// Takes in what the driver printed so far; fails the test on an
    /// `error` line or when the driver has exited.
    pub fn poll(&mut self) {
        while let Ok(e) = self.lines.try_recv() {
            self.take(e);
        }
        if let Some(status) = self.proc.exited() {
            self.take_last_lines();
            panic!(
                "browser {} exited ({status}) after {:?}; stderr in {}",
                self.scenario,
                self.events.iter().map(|e| e.name()).collect::<Vec<_>>(),
                self.log.display()
            );
        }
    }

    /// Once the driver has exited: what it printed last, which may still be
    /// on its way from the reader thread (until its end of output).
    fn take_last_lines(&mut self) {
        while let Ok(e) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.take(e);
        }
    }

    /// One printed line; fails the test on an `error` line.
    fn take(&mut self, e: LabEvent) {
        if e.name() == "error" {
            panic!(
                "browser {}: {} (stderr in {}, a screenshot may be in its directory)",
                self.scenario,
                e.line["message"],
                self.log.display()
            );
        }
        self.events.push(e);
    }

    /// Waits until the driver has printed `event`; a driver that exits
    /// after printing it (its last line) is no failure.
    pub async fn wait_for(&mut self, event: &str, timeout: Duration) -> LabEvent {
        let deadline = Instant::now() + timeout;
        loop {
            while let Ok(e) = self.lines.try_recv() {
                self.take(e);
            }
            if let Some(e) = self.events.iter().find(|e| e.name() == event) {
                return e.clone();
            }
            if self.proc.exited().is_some() {
                self.take_last_lines();
                if let Some(e) = self.events.iter().find(|e| e.name() == event) {
                    return e.clone();
                }
                self.poll();
            }
            assert!(
                Instant::now() < deadline,
                "browser {}: no {event:?} within {timeout:?}; saw {:?}",
                self.scenario,
                self.events.iter().map(|e| e.name()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many lines named `event` the driver printed so far.
    pub fn count(&self, event: &str) -> usize {
        self.events.iter().filter(|e| e.name() == event).count()
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// An RFC 3339 time of nbidle's JSON (`started_at`, `stopped_at`) as Unix
/// seconds.
pub fn unix_time(v: &Value) -> f64 {
    let t = time::OffsetDateTime::parse(
        v.as_str().unwrap_or_else(|| panic!("not a time: {v}")),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    t.unix_timestamp_nanos() as f64 / 1e9
}
