//! nbidle's log as the shipped Deployment writes it, against a running
//! nbidle started with exactly the Deployment's arguments and environment:
//! probe rounds, scrapes and kubelet probes write nothing at the shipped
//! level, the notebooks' events still are logged, no line carries a colour
//! code when the log is not a terminal, and every line is one JSON object.
//! On a terminal the text log is coloured unless `NO_COLOR` is set, and bad
//! logging settings are refused naming the variable.

mod common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde::Deserialize;
use serde_json::Value;

/// Probe rounds driven while the log is watched.
const ROUNDS: u64 = 8;
/// Lines the whole run of [`ROUNDS`] rounds may add: nothing that repeats
/// with each round, scrape or kubelet probe.
const MAX_LINES_PER_ROUND: f64 = 0.25;
/// The paths Prometheus scrapes and the kubelet probes, once per round.
const POLLED: [&str; 4] = ["/metrics", "/metrics/notebooks", "/readyz", "/livez"];

/// The nbidle container of the shipped Deployment: its arguments (the
/// config path as `{config}`) and environment.
struct Container {
    file: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Every YAML file under `dir`.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// The one whole Deployment named nbidle under `deploy/` (a kustomize
/// patch of it has no image, and is not the Deployment).
fn shipped_container() -> Container {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut files = Vec::new();
    yaml_files(&deploy, &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(doc) = serde_yaml::Value::deserialize(doc) else {
                continue;
            };
            if doc["kind"] != "Deployment" || doc["metadata"]["name"] != "nbidle" {
                continue;
            }
            let containers = doc["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .cloned()
                .unwrap_or_default();
            for c in containers {
                if c["name"] == "nbidle" && c["image"].is_string() {
                    found.push((file.clone(), c));
                }
            }
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one nbidle container in one Deployment under deploy/: {:?}",
        found.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    let (file, c) = found.pop().unwrap();
    let mut args: Vec<String> = c["args"]
        .as_sequence()
        .expect("the container's args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("--config in the args");
    args[at + 1] = "{config}".into();
    let env = c["env"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                (serde_yaml::Value::String(v), _) => v.clone(),
                (_, p) if p == "metadata.name" => "nbidle-7d9f8-x2x4q".into(),
                _ => panic!("env {name}: neither a value nor the pod's name: {e:?}"),
            };
            (name, value)
        })
        .collect();
    Container { file, args, env }
}

/// The Jupyter stand-in (`tests/drivers/hostile_jupyter.py`, quiet): it
/// counts the probes of the notebook under `/hostile/`, one per round.
struct StandIn {
    _proc: Proc,
    base: String,
}

impl StandIn {
    async fn start(dir: &Path) -> StandIn {
        let port = free_port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/drivers/hostile_jupyter.py"
        );
        let proc = Proc::spawn(
            "jupyter-stand-in",
            Command::new(tool(&["python3"]))
                .arg(script)
                .arg(port.to_string())
                .arg("120"),
            &dir.join("jupyter-stand-in.log"),
        );
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(
            "the Jupyter stand-in",
            &format!("{base}/api"),
            Duration::from_secs(20),
        )
        .await;
        StandIn { _proc: proc, base }
    }

    async fn rounds(&self) -> u64 {
        reqwest::get(format!("{}/_requests", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A notebook probed under `prefix`, run as an absolute `sleep` (the
    /// container's environment has no PATH).
    fn notebook(&self, name: &str, prefix: &str) -> NotebookSpec {
        NotebookSpec {
            name: name.into(),
            command: vec![tool(&["sleep"]).display().to_string(), "3600".into()],
            url: format!("{}/{prefix}/", self.base),
            autostop: true,
        }
    }
}

/// What is wrong with `line` as a JSON log line, if anything.
fn json_line_problem(line: &str) -> Option<String> {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON ({e})")),
    };
    let ts = v["timestamp"].as_str().unwrap_or_default();
    if time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_err() {
        return Some(format!("timestamp {:?} is not RFC 3339", v["timestamp"]));
    }
    if !matches!(
        v["level"].as_str(),
        Some("TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")
    ) {
        return Some(format!("level {:?}", v["level"]));
    }
    if v["target"].as_str().is_none_or(str::is_empty) {
        return Some("no target".into());
    }
    if !v["fields"]["message"].is_string() {
        return Some("no fields.message".into());
    }
    None
}

fn shown(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .take(4)
        .map(|l| l.chars().take(240).collect())
        .collect()
}

#[tokio::test]
async fn the_shipped_deployment_logs_events_not_rounds_as_json_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = shipped_container();
    eprintln!(
        "{}: args {:?}, env {:?}",
        shipped.file.display(),
        shipped.args,
        shipped.env
    );
    let jupyter = StandIn::start(dir.path()).await;
    let notebooks = [
        jupyter.notebook("counted", "hostile"),
        jupyter.notebook("second", "second"),
        jupyter.notebook("third", "third"),
    ];
    let opts = NbidleOptions {
        idle_after: "1h",
        ..NbidleOptions::default()
    };
    let port = free_port();
    let yaml = Nbidle::config_yaml(port, dir.path(), &notebooks, &opts);
    let nb = Nbidle::start_exact(
        dir.path(),
        "nbidle",
        port,
        &yaml,
        &shipped.args,
        &shipped.env,
    )
    .await;
    eventually("every notebook probed", Duration::from_secs(30), || async {
        let text = nb.exporter_metrics().await;
        notebooks
            .iter()
            .all(|n| {
                text.contains(&format!(
                    "nbidle_notebook_probe_success{{namespace=\"local\",notebook=\"{}\"}} 1",
                    n.name
                ))
            })
            .then_some(())
    })
    .await;

    // Two more rounds belong to start-up: a file work unseen line comes at
    // the second probe that finds it so, and a round's lines are written
    // when it ends, before the next one starts.
    let settled = jupyter.rounds().await + 2;
    while jupyter.rounds().await < settled {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Steady state: each round probed, scraped and probed by the kubelet.
    let start_lines = nb.log().lines().count();
    let first = jupyter.rounds().await;
    let started = Instant::now();
    let mut polls = 0;
    while jupyter.rounds().await < first + ROUNDS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{ROUNDS} probe rounds in 60 s"
        );
        for path in POLLED {
            let r = nb.http.get(format!("{}{path}", nb.url)).send().await;
            assert!(r.unwrap().status().is_success(), "{path}");
            polls += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rounds = jupyter.rounds().await - first;
    let log = nb.log();
    let steady: Vec<&str> = log.lines().skip(start_lines).collect();
    let per_round = steady.len() as f64 / rounds as f64;
    eprintln!(
        "{rounds} probe rounds of 3 notebooks, {polls} requests to {POLLED:?}: {} log lines, {per_round:.2} per round",
        steady.len()
    );

    // An event of a notebook is still logged.
    assert!(nb
        .post("notebooks/local/second/stop")
        .await
        .status()
        .is_success());
    nb.wait_status("local", "second", "stopped", Duration::from_secs(20))
        .await;
    let log = eventually("the stop's line", Duration::from_secs(5), || async {
        let log = nb.log();
        log.contains("notebook stopping").then_some(log)
    })
    .await;

    let mut problems = Vec::new();
    if per_round > MAX_LINES_PER_ROUND {
        problems.push(format!(
            "{} lines in {rounds} quiet rounds ({per_round:.2} per round, at most {MAX_LINES_PER_ROUND}), e.g. {:#?}",
            steady.len(),
            shown(&steady)
        ));
    }
    let coloured: Vec<&str> = log.lines().filter(|l| l.contains('\x1b')).collect();
    if !coloured.is_empty() {
        problems.push(format!(
            "{} of {} lines carry ESC with the log in a file, e.g. {:?}",
            coloured.len(),
            log.lines().count(),
            shown(&coloured)
        ));
    }
    let format_env = shipped
        .env
        .iter()
        .find(|(k, _)| k == "NBIDLE_LOG_FORMAT")
        .map(|(_, v)| v.as_str());
    let format_arg = shipped
        .args
        .windows(2)
        .find(|w| w[0] == "--log-format")
        .map(|w| w[1].as_str());
    if format_arg.or(format_env) != Some("json") {
        problems.push(format!(
            "the Deployment does not choose JSON logs (NBIDLE_LOG_FORMAT {format_env:?}, --log-format {format_arg:?})"
        ));
    }
    let not_json: Vec<String> = log
        .lines()
        .filter_map(|l| json_line_problem(l).map(|p| format!("{p}: {}", &l[..l.len().min(160)])))
        .collect();
    if !not_json.is_empty() {
        problems.push(format!(
            "{} of {} lines are not one JSON log object, e.g. {:#?}",
            not_json.len(),
            log.lines().count(),
            &not_json[..not_json.len().min(3)]
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

fn check_config(dir: &Path) -> PathBuf {
    let yaml = Nbidle::config_yaml(
        free_port(),
        dir,
        &[sleeper("demo")],
        &NbidleOptions::default(),
    );
    let path = dir.join("check.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `nbidle check` with these arguments before the config and this
/// environment: exit success, stderr.
fn check_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nbidle"))
        .args(args)
        .arg("check")
        .arg("--config")
        .arg(config)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_logging_settings_are_refused_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = check_config(dir.path());
    for (args, env) in [
        (&[][..], &[][..]),
        (&[][..], &[("NBIDLE_LOG_FORMAT", "json")][..]),
        (&[][..], &[("NBIDLE_LOG_FORMAT", "text")][..]),
        (&["--log-format", "json"][..], &[][..]),
        (
            &[][..],
            &[("NBIDLE_LOG", "info,nbidle::exporter=debug")][..],
        ),
    ] {
        let (ok, stderr) = check_with(&config, args, env);
        assert!(ok, "{args:?} {env:?}: {stderr}");
    }
    for (args, env, named) in [
        (
            &[][..],
            &[("NBIDLE_LOG_FORMAT", "yaml")][..],
            "NBIDLE_LOG_FORMAT",
        ),
        (
            &[][..],
            &[("NBIDLE_LOG_FORMAT", "JSON ")][..],
            "NBIDLE_LOG_FORMAT",
        ),
        (
            &[][..],
            &[("NBIDLE_LOG", "info,warp=loud")][..],
            "NBIDLE_LOG",
        ),
        (&["--log-format", "yaml"][..], &[][..], "--log-format"),
    ] {
        let (ok, stderr) = check_with(&config, args, env);
        assert!(!ok, "{args:?} {env:?} is accepted: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} {env:?}: the error does not name {named}: {stderr}"
        );
    }
}

/// `nbidle serve` with its stderr and stdout on a terminal (a pty) and only
/// `env`: what it wrote up to its listening line.
async fn serve_on_terminal(dir: &Path, tag: &str, env: &[(&str, &str)]) -> String {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors, owned here from now on.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let port = free_port();
    let yaml = Nbidle::config_yaml(port, dir, &[sleeper("demo")], &NbidleOptions::default());
    let config = dir.join(format!("{tag}.yaml"));
    std::fs::write(&config, yaml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_nbidle"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut proc = Proc::adopt(tag, child);
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    // Ends when the last writer closes the terminal (read fails with EIO).
    std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = master.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let text = || String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    eventually("the listening line", Duration::from_secs(30), || async {
        text().contains("nbidle listening").then_some(())
    })
    .await;
    proc.terminate();
    text()
}

#[tokio::test]
async fn the_log_is_coloured_on_a_terminal_unless_no_color_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let coloured = serve_on_terminal(dir.path(), "tty", &[("NBIDLE_LOG", "info")]).await;
    assert!(
        coloured.contains("\x1b["),
        "a terminal gets colours: {coloured:?}"
    );
    let plain = serve_on_terminal(
        dir.path(),
        "tty-no-color",
        &[("NBIDLE_LOG", "info"), ("NO_COLOR", "1")],
    )
    .await;
    assert!(
        plain.contains("nbidle listening") && !plain.contains('\x1b'),
        "NO_COLOR=1 on a terminal: {plain:?}"
    );
    let json = serve_on_terminal(
        dir.path(),
        "tty-json",
        &[("NBIDLE_LOG", "info"), ("NBIDLE_LOG_FORMAT", "json")],
    )
    .await;
    assert!(!json.contains('\x1b'), "JSON is never coloured: {json:?}");
}
