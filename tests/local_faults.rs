//! Faults of the local backend, against the real nbidle binary: a second
//! `serve` on the same data dir, corrupt state files, a start that cannot
//! spawn, nbidle's own stops at shutdown, a port already taken.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn state_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("data")
        .join("notebooks")
        .join(format!("{name}.json"))
}

/// Live processes carrying the marker nbidle puts in every notebook's
/// environment: the processes of that notebook, whoever spawned them.
fn notebook_pids(dir: &Path, name: &str) -> Vec<i32> {
    let want = format!("NBIDLE_NOTEBOOK={}", state_file(dir, name).display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .is_some_and(|s| s == "Z" || s == "X");
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !zombie && env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

fn recorded_pid(dir: &Path, name: &str) -> Option<i64> {
    let v: Value = serde_json::from_slice(&std::fs::read(state_file(dir, name)).ok()?).ok()?;
    v["pid"].as_i64()
}

/// Runs `nbidle serve` to its end (bounded), returning (exit code, stderr).
fn serve_to_end(config: &Path, timeout: Duration) -> (Option<i32>, String) {
    let err_path = config.with_extension("second.log");
    let err = std::fs::File::create(&err_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nbidle"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "nbidle serve still running after {timeout:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// A process of the test's own that must not outlive a failed test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh_notebook(name: &str, script: String) -> NotebookSpec {
    NotebookSpec {
        name: name.into(),
        command: vec!["sh".into(), "-c".into(), script],
        url: format!("http://127.0.0.1:{}/", free_port()),
        autostop: true,
    }
}

#[tokio::test]
async fn a_second_serve_on_the_same_data_dir_exits_naming_the_holder_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    // Fails while `go` is missing, as a notebook that cannot start would;
    // a second instance that recovered notebooks would spawn it once `go`
    // exists, behind the first one's back.
    let flaky = sh_notebook(
        "flaky",
        format!("test -e {} && exec sleep 3600; exit 3", go.display()),
    );
    let nb = Nbidle::start(dir.path(), &[sleeper("a"), flaky], NbidleOptions::default()).await;
    nb.wait_status("local", "flaky", "failed", Duration::from_secs(15))
        .await;
    let a_before = nb.notebook("local", "a").await;
    let a_pid = recorded_pid(dir.path(), "a").expect("a's pid recorded");
    std::fs::write(&go, "").unwrap();

    let started = Instant::now();
    let (code, stderr) = serve_to_end(&nb.config, Duration::from_secs(10));
    eprintln!("second serve: {stderr}");
    assert!(
        code.is_some_and(|c| c != 0),
        "the second serve fails: {code:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it exits at once, not after {:?}",
        started.elapsed()
    );
    let data_dir = dir.path().join("data");
    assert!(
        stderr.contains(&data_dir.display().to_string()),
        "names the data dir: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", nb.proc.pid())),
        "names the holder's pid {}: {stderr}",
        nb.proc.pid()
    );
    assert!(
        !stderr.contains("notebook started") && !stderr.contains("adopting"),
        "it neither spawned nor adopted: {stderr}"
    );

    // The first instance's notebooks are as they were.
    assert_eq!(recorded_pid(dir.path(), "a"), Some(a_pid));
    assert_eq!(notebook_pids(dir.path(), "a"), vec![a_pid as i32]);
    assert_eq!(notebook_pids(dir.path(), "flaky"), Vec::<i32>::new());
    assert_eq!(nb.notebook("local", "a").await, a_before);
    assert_eq!(nb.notebook("local", "flaky").await["status"], "failed");
    let lock = std::fs::read_to_string(data_dir.join("lock")).unwrap();
    assert_eq!(
        lock.trim(),
        nb.proc.pid().to_string(),
        "the lock names its holder"
    );
}

/// A state file as nbidle writes one, for a notebook an alert stopped.
fn stopped_record() -> String {
    serde_json::json!({
        "desired": "stopped", "pid": null, "pid_start_ticks": null, "boot_id": null,
        "started_at": "2026-01-01T08:00:00Z", "stopped_at": "2026-01-01T10:00:00Z",
        "stopped_by": {"trigger": "idle-alert", "alertname": "NotebookIdle", "alert_starts_at": "2026-01-01T09:30:00Z"},
    })
    .to_string()
}

#[tokio::test]
async fn each_corrupt_state_file_makes_only_its_notebook_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let notebooks = std::fs::create_dir_all(dir.path().join("data/notebooks"));
    notebooks.unwrap();
    let record = stopped_record();
    let corrupt: [(&str, &[u8], &str); 5] = [
        ("empty", b"", "EOF while parsing"),
        (
            "truncated",
            &record.as_bytes()[..record.len() / 2],
            "EOF while parsing",
        ),
        ("garbage", b"\x00\xff\xfe not json at all", "expected value"),
        ("wrongtype", br#""stopped""#, "invalid type"),
        ("directory", b"", "directory"),
    ];
    for (name, bytes, _) in &corrupt {
        let path = state_file(dir.path(), name);
        if *name == "directory" {
            std::fs::create_dir_all(path.join("inside")).unwrap();
        } else {
            std::fs::write(path, bytes).unwrap();
        }
    }
    let mut specs = vec![sleeper("healthy"), sleeper("other")];
    specs.extend(corrupt.iter().map(|(name, _, _)| sleeper(name)));
    let nb = Nbidle::start(dir.path(), &specs, NbidleOptions::default()).await;

    for (name, _, reason) in &corrupt {
        let v = nb.notebook("local", name).await;
        assert_eq!(v["status"], "unknown", "{name}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(reason), "{name}: the reason: {msg}");
        assert!(
            msg.contains(&format!("notebooks/{name}.json")),
            "{name}: names the file: {msg}"
        );
        assert!(
            msg.contains("Removing the file makes nbidle start the notebook"),
            "{name}: says what removing it does: {msg}"
        );
        assert!(
            !msg.contains(&dir.path().display().to_string()),
            "{name}: no absolute server path: {msg}"
        );
        assert_eq!(
            notebook_pids(dir.path(), name),
            Vec::<i32>::new(),
            "{name} not started"
        );
        assert!(
            nb.log()
                .lines()
                .any(|l| l.contains("corrupt state file") && l.contains(&format!("{name}.json"))),
            "{name}: a log line"
        );
    }
    // The files are left as they were, for the admin to look at.
    assert_eq!(std::fs::read(state_file(dir.path(), "empty")).unwrap(), b"");
    assert!(state_file(dir.path(), "directory").is_dir());
    assert_eq!(
        nb.metric(r#"nbidle_notebooks{status="unknown"}"#).await,
        5.0
    );

    // Every other notebook is served: the webhook stops one, the API lists all.
    assert_eq!(notebook_pids(dir.path(), "healthy").len(), 1);
    let alerts = vec![
        idle_alert("local", "healthy", &rfc3339_from_now(60)),
        idle_alert("local", "garbage", &rfc3339_from_now(60)),
    ];
    let r = nb.webhook(&payload(alerts)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stopped"], 1, "{v}");
    assert_eq!(v["alerts"][1]["decision"], "not_running", "{v}");
    nb.wait_status("local", "healthy", "stopped", Duration::from_secs(10))
        .await;
    assert_eq!(nb.notebook("local", "other").await["status"], "starting");
    assert_eq!(nb.notebook("local", "garbage").await["status"], "unknown");
    let list = nb.list().await;
    assert_eq!(list["notebooks"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn a_corrupt_notebook_is_not_started_by_the_api_and_a_stop_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/notebooks")).unwrap();
    let path = state_file(dir.path(), "lost");
    std::fs::write(&path, "").unwrap();
    // Its process from an earlier life still runs, unrecorded.
    let mut orphan = Command::new("sleep");
    orphan
        .arg("3600")
        .env("NBIDLE_NOTEBOOK", path.display().to_string());
    std::os::unix::process::CommandExt::process_group(&mut orphan, 0);
    let mut orphan = KillOnDrop(orphan.spawn().unwrap());
    let nb = Nbidle::start(dir.path(), &[sleeper("lost")], NbidleOptions::default()).await;

    let v = nb.notebook("local", "lost").await;
    assert_eq!(v["status"], "unknown");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("process {}", orphan.0.id())),
        "names the process left alone: {msg}"
    );

    let r = nb.post("notebooks/local/lost/start").await;
    assert!(
        r.status().is_server_error(),
        "start refused: {}",
        r.status()
    );
    let body: Value = r.json().await.unwrap();
    let err = body["error"]["message"].as_str().unwrap();
    assert!(err.contains("/stop"), "says how to recover: {err}");
    assert_eq!(
        notebook_pids(dir.path(), "lost"),
        vec![orphan.0.id() as i32]
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"", "nothing written");

    // A stop records it stopped and ends the process it finds.
    let r = nb.post("notebooks/local/lost/stop").await;
    assert_eq!(r.status(), 200);
    nb.wait_status("local", "lost", "stopped", Duration::from_secs(10))
        .await;
    assert!(
        orphan.0.wait().unwrap().code().is_none(),
        "ended by a signal"
    );
    let rec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(rec["desired"], "stopped");
    assert_eq!(rec["stopped_by"]["trigger"], "user");

    // Now a start is an ordinary start.
    let r = nb.post("notebooks/local/lost/start").await;
    assert_eq!(r.status(), 200);
    assert_eq!(nb.notebook("local", "lost").await["status"], "starting");
    assert_eq!(notebook_pids(dir.path(), "lost").len(), 1);
}

#[tokio::test]
async fn a_failed_api_start_is_recorded_failed_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let broken = NotebookSpec {
        name: "broken".into(),
        command: vec!["/nonexistent/jupyter".into()],
        url: format!("http://127.0.0.1:{}/", free_port()),
        autostop: true,
    };
    let nb = Nbidle::start(dir.path(), &[broken], NbidleOptions::default()).await;
    assert_eq!(nb.post("notebooks/local/broken/stop").await.status(), 200);
    nb.wait_status("local", "broken", "stopped", Duration::from_secs(10))
        .await;

    let r = nb.post("notebooks/local/broken/start").await;
    assert_eq!(r.status(), 500);
    let v = nb.notebook("local", "broken").await;
    assert_eq!(v["status"], "failed", "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains("/nonexistent/jupyter"), "the reason: {msg}");
}

#[tokio::test]
async fn stop_on_exit_stops_are_stops_not_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mut nb = Nbidle::start(
        dir.path(),
        &[sleeper("a"), sleeper("b")],
        NbidleOptions::default(),
    )
    .await;
    let pids: Vec<i32> = ["a", "b"]
        .iter()
        .flat_map(|n| notebook_pids(dir.path(), n))
        .collect();
    assert_eq!(pids.len(), 2);
    let status = nb.proc.terminate().unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    let log = nb.log();
    assert!(
        !log.contains("ended unexpectedly"),
        "no warning for nbidle's own stops:\n{log}"
    );
    assert!(log.contains("stopped at shutdown"), "{log}");
    for n in ["a", "b"] {
        assert_eq!(
            notebook_pids(dir.path(), n),
            Vec::<i32>::new(),
            "{n} stopped"
        );
    }
}

#[tokio::test]
async fn a_port_in_use_exits_before_anything_is_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let yaml = Nbidle::config_yaml(port, dir.path(), &[sleeper("a")], &NbidleOptions::default());
    let config = dir.path().join("nbidle.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (code, stderr) = serve_to_end(&config, Duration::from_secs(10));
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {stderr}");
    assert!(stderr.contains("binding"), "{stderr}");
    assert_eq!(
        notebook_pids(dir.path(), "a"),
        Vec::<i32>::new(),
        "nothing spawned"
    );
    assert!(!state_file(dir.path(), "a").exists(), "nothing recorded");
}

#[tokio::test]
async fn the_listener_answers_while_notebooks_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    // Enough notebooks that spawning them takes far longer than binding.
    let specs: Vec<NotebookSpec> = (0..1000)
        .map(|i| NotebookSpec {
            // One closed port for all: nothing answers, and URLs differ.
            url: format!("http://127.0.0.1:9/n{i}/"),
            ..sleeper(&format!("n{i}"))
        })
        .collect();
    let port = free_port();
    let yaml = Nbidle::config_yaml(port, dir.path(), &specs, &NbidleOptions::default());
    let config = dir.path().join("nbidle.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nbidle"));
    cmd.arg("serve").arg("--config").arg(&config);
    let mut proc = Proc::spawn("nbidle", &mut cmd, &dir.path().join("nbidle.log"));
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let code = |path: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(format!("{url}{path}"))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    let log = dir.path().join("nbidle.log");
    let first = eventually("the listener", Duration::from_secs(30), || async {
        let c = code("/livez").await;
        if c.is_none()
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Error")
        {
            panic!("nbidle failed: {}", std::fs::read_to_string(&log).unwrap());
        }
        c
    })
    .await;
    assert_eq!(first, 200);
    assert_eq!(
        code("/readyz").await,
        Some(503),
        "not ready while notebooks are recovered"
    );
    let r = nb_list(&http, &url).await;
    assert_eq!(r, 503, "the API waits for recovery");
    eventually("ready", Duration::from_secs(60), || async {
        (code("/readyz").await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(nb_list(&http, &url).await, 200);
    assert!(proc.terminate().unwrap().success());
}

async fn nb_list(http: &reqwest::Client, url: &str) -> u16 {
    http.get(format!("{url}/api/v1/notebooks"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
