//! File work is activity, through the whole loop: real jupyter_server 2.x
//! and Debian's 1.23 supervised by nbidle, a user who only saves a file
//! (`tests/drivers/file_user.py save-every`, as JupyterLab's autosave does)
//! and an open tab that only reads (`poll-every`), real Prometheus with the
//! generated rules and real Alertmanager with the generated route.
//!
//! The servers keep jupyter_server's default `authenticate_prometheus`, so
//! nbidle reads their `/metrics` with the notebook's token.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const IDLE_AFTER_SECS: u64 = 20;
/// Less than the idle time, as JupyterLab's 120 s autosave is less than
/// any idle time of 5 minutes or more.
const SAVE_EVERY_SECS: u32 = 8;

/// A real Jupyter server whose `/metrics` needs its token (the default),
/// with its JupyterLab workspaces (2.x) under `dir`, and `extra` arguments.
fn notebook(dir: &Path, name: &str, version: JupyterVersion, extra: &[&str]) -> NotebookSpec {
    let mut spec = jupyter_notebook(name, version);
    spec.command
        .retain(|a| !a.starts_with("--ServerApp.authenticate_prometheus"));
    if version == JupyterVersion::Current {
        let workspaces = dir.join(format!("lab-workspaces-{name}"));
        spec.command
            .push(format!("--LabApp.workspaces_dir={}", workspaces.display()));
    }
    spec.command.extend(extra.iter().map(|a| a.to_string()));
    spec
}

/// A jupyter_server 2.x config file that records no request metrics, as
/// `ServerApp.record_http_request_metrics = False` would (in 2.21 that
/// trait cannot be set from a config: it is not `config=True`).
fn no_request_metrics(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("no_request_metrics.py");
    std::fs::write(
        &path,
        "from functools import partial\n\
         from jupyter_server.log import log_request\n\
         c.ServerApp.tornado_settings = {\"log_function\": partial(log_request, record_prometheus_metrics=False)}\n",
    )
    .unwrap();
    path
}

/// Runs `tests/drivers/file_user.py ACTION SECONDS` against a notebook;
/// killed when the guard drops. Its log is the returned path.
fn file_user(dir: &Path, base_url: &str, name: &str, action: &str) -> (Proc, std::path::PathBuf) {
    let python = jupyter().with_file_name("python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers/file_user.py");
    let log = dir.join(format!("file-user-{name}.log"));
    let proc = Proc::spawn(
        action,
        Command::new(python)
            .arg(script)
            .arg(base_url)
            .arg(JUPYTER_TOKEN)
            .arg(action)
            .arg(SAVE_EVERY_SECS.to_string()),
        &log,
    );
    (proc, log)
}

/// The value of `series` (name and labels, exactly) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    })
}

/// The sum of a Jupyter server's `http_request_duration_seconds_count`
/// samples whose line `pick`s.
fn requests(text: &str, pick: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("http_request_duration_seconds_count{") && pick(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

fn labels(name: &str) -> String {
    format!("{{namespace=\"local\",notebook=\"{name}\"}}")
}

/// The Unix time of the driver's last successful save.
fn last_save(log: &Path) -> f64 {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .rev()
        .filter(|l| l.contains("(PUT 200)") || l.contains("(PUT 201)"))
        .find_map(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no save in {}:\n{text}", log.display()))
}

fn unix(rfc3339: &str) -> f64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap();
    t.unix_timestamp_nanos() as f64 / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autosave_only_file_editing_is_kept_and_a_reading_tab_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let notebooks = vec![
        notebook(d, "saving", JupyterVersion::Current, &[]),
        notebook(d, "saving-old", JupyterVersion::Old, &[]),
        notebook(d, "polling", JupyterVersion::Current, &[]),
        notebook(d, "polling-old", JupyterVersion::Old, &[]),
        // Saving too, on a server that records no requests: unseen.
        notebook(
            d,
            "unrecorded",
            JupyterVersion::Current,
            &[&format!("--config={}", no_request_metrics(d).display())],
        ),
    ];
    let url = |name: &str| {
        let n = notebooks.iter().find(|n| n.name == name).unwrap();
        n.url.clone()
    };
    let nbidle = Nbidle::start(
        d,
        &notebooks,
        NbidleOptions {
            idle_after: "20s",
            ..Default::default()
        },
    )
    .await;
    for n in &notebooks {
        nbidle
            .wait_status("local", &n.name, "running", Duration::from_secs(120))
            .await;
    }

    // /metrics needs the token on both versions; nbidle sends it.
    let http = reqwest::Client::new();
    for name in ["polling", "polling-old"] {
        let r = http
            .get(format!("{}metrics", url(name)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: /metrics without the token");
    }

    let (mut saver, saver_log) = file_user(d, &url("saving"), "saving", "save-every");
    let (mut saver_old, saver_old_log) =
        file_user(d, &url("saving-old"), "saving-old", "save-every");
    let _poller = file_user(d, &url("polling"), "polling", "poll-every");
    let _poller_old = file_user(d, &url("polling-old"), "polling-old", "poll-every");
    let _unrecorded = file_user(d, &url("unrecorded"), "unrecorded", "save-every");

    // The exporter's view: writes counted where they happen, none for the
    // tabs that only read (and write their workspace), unseen where the
    // server records nothing.
    let writes = |name: &str| format!("nbidle_notebook_file_writes_total{}", labels(name));
    let unseen = "nbidle_notebook_file_work_unseen{namespace=\"local\",notebook=\"unrecorded\",reason=\"not_recorded\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = nbidle.exporter_metrics().await;
        let saved = |n| sample(&text, &writes(n)).is_some_and(|v| v >= 2.0);
        let polled = |n| sample(&text, &writes(n)) == Some(0.0);
        if saved("saving")
            && saved("saving-old")
            && polled("polling")
            && polled("polling-old")
            && sample(&text, unseen) == Some(1.0)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "saves counted on both versions, polling as no write, unrecorded unseen:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        !text.contains(
            "nbidle_notebook_file_writes_total{namespace=\"local\",notebook=\"unrecorded\"}"
        ),
        "{text}"
    );
    for name in [
        "saving",
        "saving-old",
        "polling",
        "polling-old",
        "unrecorded",
    ] {
        assert_eq!(
            sample(
                &text,
                &format!("nbidle_notebook_probe_success{}", labels(name))
            ),
            Some(1.0),
            "{name}: {text}"
        );
    }
    // What the tabs did, as the servers counted it: reads of the contents
    // API and (2.x, JupyterLab) PUTs of the workspace; no contents write.
    // The tabs poll every 8 s; on a loaded machine the second poll may not
    // have come yet, so the count is awaited (bounded).
    for (name, workspace_puts) in [("polling", true), ("polling-old", false)] {
        let contents = |l: &str| l.contains("handler=\"jupyter_server.services.contents.handlers.");
        let get = |l: &str| l.contains("method=\"GET\"");
        let deadline = Instant::now() + Duration::from_secs(60);
        let (m, gets) = loop {
            let r = jupyter_api(&http, &url(name), reqwest::Method::GET, "metrics", None)
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{name}: /metrics with the token");
            let m = r.text().await.unwrap();
            let gets = requests(&m, |l| contents(l) && get(l));
            if gets >= 2.0 || Instant::now() > deadline {
                break (m, gets);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let writes = requests(&m, |l| contents(l) && !get(l));
        let puts = requests(&m, |l| {
            l.contains("WorkspacesHandler") && l.contains("method=\"PUT\"")
        });
        eprintln!("{name}: contents GETs {gets}, workspace PUTs {puts}, contents writes {writes}");
        assert!(gets >= 2.0, "{name}: the tab read the contents API\n{m}");
        assert_eq!(puts >= 2.0, workspace_puts, "{name}: workspace PUTs {puts}");
        assert_eq!(writes, 0.0, "{name}\n{m}");
    }

    let am = Alertmanager::start(d, &nbidle.config).await;
    let prom = Prometheus::start(d, &nbidle, &am).await;
    let started = Instant::now();
    for name in ["polling", "polling-old", "unrecorded"] {
        let v = nbidle
            .wait_status("local", name, "stopped", Duration::from_secs(120))
            .await;
        assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{name}: {v}");
        eprintln!(
            "{name} stopped {:?} after Prometheus started",
            started.elapsed()
        );
    }
    // The savers outlive three idle times with the rules running.
    let kept_for = Duration::from_secs(IDLE_AFTER_SECS * 3);
    tokio::time::sleep(kept_for.saturating_sub(started.elapsed())).await;
    for name in ["saving", "saving-old"] {
        assert_eq!(
            nbidle.notebook("local", name).await["status"],
            "running",
            "{name}: saving every {SAVE_EVERY_SECS}s must keep it (idle time {IDLE_AFTER_SECS}s)"
        );
        let fired = prom
            .query(&format!(
                "max_over_time(ALERTS{{alertname=\"NotebookIdle\",notebook=\"{name}\"}}[5m])"
            ))
            .await
            .unwrap();
        assert_eq!(
            fired.as_array().unwrap().len(),
            0,
            "{name}: NotebookIdle fired: {fired}"
        );
    }

    // The user stops editing: stopped about an idle time after the last save.
    saver.terminate();
    saver_old.terminate();
    for (name, log) in [("saving", &saver_log), ("saving-old", &saver_old_log)] {
        let saved_at = last_save(log);
        let v = nbidle
            .wait_status("local", name, "stopped", Duration::from_secs(90))
            .await;
        assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{name}: {v}");
        let lag = unix(v["stopped_at"].as_str().unwrap()) - saved_at;
        eprintln!("{name}: stopped {lag:.1}s after the last save (idle time {IDLE_AFTER_SECS}s)");
        assert!(
            lag >= IDLE_AFTER_SECS as f64 - 1.0,
            "{name}: stopped {lag:.1}s after the last save"
        );
    }

    // One line for the server that records nothing; none for the others.
    let log = nbidle.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("file work unseen"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("local/unrecorded") && lines[0].contains("not_recorded"),
        "{}",
        lines[0]
    );
    eprintln!("logged: {}", lines[0]);
}

/// `nbidle check` (and `serve`'s log) warn about an idle time below
/// JupyterLab's autosave interval, naming its key; the config still passes.
#[test]
fn check_warns_when_an_idle_time_is_below_the_autosave_interval() {
    let dir = tempfile::tempdir().unwrap();
    let check = |idle_after: &'static str| {
        let yaml = Nbidle::config_yaml(
            9,
            dir.path(),
            &[sleeper("nb")],
            &NbidleOptions {
                idle_after,
                ..Default::default()
            },
        );
        let config = dir.path().join("nbidle.yaml");
        std::fs::write(&config, yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_nbidle"))
            .arg("check")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{idle_after}: {err}");
        err
    };
    let err = check("90s");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].starts_with(
            "warning: autostop.idle_after: 1m30s is shorter than JupyterLab's autosave interval (120s by default)"
        ),
        "{err}"
    );
    eprintln!("{}", warnings[0]);
    assert!(!check("2m").contains("warning"), "2m is not shorter");
}
