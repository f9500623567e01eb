//! Every process of a local notebook, with real Jupyter servers (2.x and
//! Debian's 1.23), real Prometheus and Alertmanager, and scripted users
//! (`tests/drivers/jupyter_procs.py`): a job left running in a closed
//! terminal keeps its notebook through the cpu guard and is ended by its
//! stop; a silent computation that Jupyter Server 1.x reports idle is kept;
//! a restart of nbidle starts a dead server again and neither adopts nor
//! kills the job its user left.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Idle time, guard window and process scans short enough for a test.
const IDLE_AFTER_SECS: u64 = 20;
const GUARD_WINDOW_SECS: u64 = 10;

fn config(port: u16, dir: &Path, notebooks: &[NotebookSpec], stop_on_exit: bool) -> String {
    let opts = NbidleOptions {
        idle_after: "20s",
        stop_on_exit,
        ..Default::default()
    };
    let mut v = nbidle_config(port, dir, notebooks, &opts);
    // The default threshold (0.05 cores); a window of a few evaluations.
    v["autostop"]["guards"] = json!({"cpu": {"window": format!("{GUARD_WINDOW_SECS}s")}});
    v["backend"]["local"]["process_scan_interval"] = json!("1s");
    serde_yaml::to_string(&v).unwrap()
}

fn marker(dir: &Path, name: &str) -> String {
    dir.join("data/notebooks")
        .join(format!("{name}.json"))
        .display()
        .to_string()
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .iter()
        .rposition(|&b| b == b')')
        .and_then(|i| stat.get(i + 2).copied());
    state.is_some_and(|s| s != b'Z' && s != b'X')
}

/// Live processes carrying notebook `name`'s marker.
fn marked_pids(dir: &Path, name: &str) -> Vec<i32> {
    let want = format!("NBIDLE_NOTEBOOK={}", marker(dir, name));
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
        })
        .filter(|&pid| alive(pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Kills what the notebooks of a failed test left behind (a passing test
/// leaves nothing: it checks so).
struct Leftovers(PathBuf, Vec<&'static str>, Vec<i32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let mut pids: Vec<i32> = self
            .1
            .iter()
            .flat_map(|n| marked_pids(&self.0, n))
            .collect();
        pids.extend(self.2.iter().copied().filter(|&p| alive(p)));
        for pid in pids {
            // SAFETY: a signal to a process this test's notebook started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Runs `tests/drivers/jupyter_procs.py` to its end; returns its stdout.
fn jupyter_procs(base_url: &str, args: &[&str]) -> String {
    let python = jupyter().with_file_name("python");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/drivers/jupyter_procs.py"
    );
    let out = Command::new(python)
        .arg(script)
        .arg(base_url)
        .arg(JUPYTER_TOKEN)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "driver {args:?}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("driver {args:?} at {base_url}: {stdout}");
    stdout
}

/// Types `lines` into a terminal of the notebook at `url`, then deletes
/// the terminal. The lines run in `work`; the last one says they are done.
fn in_a_terminal(url: &str, work: &Path, lines: &[String]) {
    let script = work.join("typed.sh");
    let mut all = vec![format!("cd {}", work.display())];
    all.extend(lines.iter().cloned());
    all.push(format!("touch {}.done", script.display()));
    std::fs::write(&script, all.join("\n")).unwrap();
    jupyter_procs(url, &["terminal-type", script.to_str().unwrap()]);
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// The value of one series of `/metrics/notebooks`.
fn series(text: &str, name: &str, notebook: &str) -> Option<f64> {
    let prefix = format!("{name}{{namespace=\"local\",notebook=\"{notebook}\"");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Seconds since the notebook's activity deadline passed, in Prometheus.
async fn past_deadline(prom: &Prometheus, notebook: &str) -> f64 {
    let q = format!(
        "time() - max(nbidle_notebook_idle_deadline_timestamp_seconds{{notebook=\"{notebook}\"}})"
    );
    let r = prom.query(&q).await.unwrap();
    r[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NEG_INFINITY)
}

/// Fails as soon as one of `names` is not running, until `secs` have passed.
async fn kept_for(nbidle: &Nbidle, names: &[&str], secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        for name in names {
            let v = nbidle.notebook("local", name).await;
            assert_eq!(v["status"], "running", "{name} must be kept: {v}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_job_in_a_closed_terminal_keeps_its_notebook_and_its_stop_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = jupyter_notebook("job", JupyterVersion::Current);
    let url = spec.url.clone();
    let port = free_port();
    let yaml = config(port, dir.path(), &[spec], true);
    let nbidle = Nbidle::start_yaml(dir.path(), "nbidle", port, &yaml, &[]).await;
    let _left = Leftovers(dir.path().to_path_buf(), vec!["job"], Vec::new());
    nbidle
        .wait_status("local", "job", "running", Duration::from_secs(120))
        .await;
    let am = Alertmanager::start(dir.path(), &nbidle.config).await;
    let prom = Prometheus::start(dir.path(), &nbidle, &am).await;

    // A CPU-bound job nohup'ed from a terminal, a sleeping one, one in a
    // session of its own; then the terminal is closed.
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("busy.py"),
        "import os\nwhile not os.path.exists('stop-busy'):\n    pass\n",
    )
    .unwrap();
    in_a_terminal(
        &url,
        &work,
        &[
            "nohup python3 busy.py > /dev/null 2>&1 &".into(),
            "echo $! > busy.pid".into(),
            "nohup sleep 3600 > /dev/null 2>&1 &".into(),
            "echo $! > sleep.pid".into(),
            "setsid sh -c 'echo $$ > setsid.pid; exec sleep 3601' > /dev/null 2>&1 < /dev/null &"
                .into(),
        ],
    );
    let typed = Instant::now();
    let jobs = ["busy.pid", "sleep.pid", "setsid.pid"].map(|f| read_pid(&work.join(f)));
    let _left = Leftovers(dir.path().to_path_buf(), vec!["job"], jobs.to_vec());
    assert!(jobs.iter().all(|&p| alive(p)), "{jobs:?}");

    // Kept while the job runs, well past its activity deadline.
    kept_for(&nbidle, &["job"], IDLE_AFTER_SECS + 25).await;
    let past = past_deadline(&prom, "job").await;
    assert!(
        past > 10.0,
        "the deadline passed {past}s ago: only the guard keeps it"
    );
    let text = nbidle.exporter_metrics().await;
    let processes = series(&text, "nbidle_notebook_processes", "job").unwrap();
    let cpu = series(&text, "nbidle_notebook_cpu_seconds_total", "job").unwrap();
    eprintln!(
        "kept {:?} after the terminal closed, deadline passed {past:.0}s ago: {processes} processes, {cpu:.1} CPU seconds",
        typed.elapsed()
    );
    assert!(processes >= 4.0, "server and three jobs: {processes}");

    // The job ends: stopped about one guard window later.
    std::fs::write(work.join("stop-busy"), "").unwrap();
    let ended = Instant::now();
    let v = nbidle
        .wait_status("local", "job", "stopped", Duration::from_secs(60))
        .await;
    let lag = ended.elapsed();
    eprintln!("stopped {lag:?} after the busy job ended (guard window {GUARD_WINDOW_SECS}s)");
    assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{v}");
    assert!(
        lag > Duration::from_secs(GUARD_WINDOW_SECS / 2),
        "stopped before the guard window passed: {lag:?}"
    );

    // Nothing of the notebook is left: not the nohup'ed, not the setsid one.
    eventually(
        "no process of the notebook",
        Duration::from_secs(15),
        || async {
            (marked_pids(dir.path(), "job").is_empty() && !jobs.iter().any(|&p| alive(p)))
                .then_some(())
        },
    )
    .await;
    let text = nbidle.exporter_metrics().await;
    // A stopped notebook with nothing left publishes no process series.
    assert_eq!(
        series(&text, "nbidle_notebook_processes", "job"),
        None,
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "nbidle_process_stop_survivors_total 0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_computation_is_kept_on_both_jupyter_versions_and_an_idle_notebook_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![
        jupyter_notebook("two", JupyterVersion::Current),
        jupyter_notebook("two-old", JupyterVersion::Old),
        jupyter_notebook("idle", JupyterVersion::Current),
    ];
    let urls: Vec<String> = specs.iter().map(|s| s.url.clone()).collect();
    let port = free_port();
    let yaml = config(port, dir.path(), &specs, true);
    let mut nbidle = Nbidle::start_yaml(dir.path(), "nbidle", port, &yaml, &[]).await;
    let names = ["two", "two-old", "idle"];
    let _left = Leftovers(dir.path().to_path_buf(), names.to_vec(), Vec::new());
    for name in names {
        nbidle
            .wait_status("local", name, "running", Duration::from_secs(120))
            .await;
    }
    // One idle kernel and one computing silently, then a kernel_info on
    // the busy kernel's control channel (what a reconnecting JupyterLab
    // sends): 1.23 then reports the computing kernel idle. Prometheus
    // starts once both compute: before, nobody uses them and a slow first
    // driver would rightly see the second stopped as idle.
    let mut reported = Vec::new();
    for url in &urls[..2] {
        let out = jupyter_procs(url, &["two-kernels"]);
        let states: Value = serde_json::from_str(out.trim()).unwrap();
        reported.push(states);
    }
    eprintln!("kernel states reported (2.x, 1.23): {reported:?}");
    let am = Alertmanager::start(dir.path(), &nbidle.config).await;
    let prom = Prometheus::start(dir.path(), &nbidle, &am).await;
    assert_eq!(reported[0]["busy_after_control_kernel_info"], "busy");

    // Past the idle time: the idle notebook is stopped, both computing
    // ones are kept.
    let started = Instant::now();
    let idle = async {
        nbidle
            .wait_status("local", "idle", "stopped", Duration::from_secs(90))
            .await
    };
    let kept = kept_for(&nbidle, &["two", "two-old"], IDLE_AFTER_SECS + 25);
    let (v, ()) = tokio::join!(idle, kept);
    assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{v}");
    eprintln!(
        "idle notebook stopped, computing ones kept {:?}",
        started.elapsed()
    );
    let text = nbidle.exporter_metrics().await;
    let busy_old = text.lines().find(|l| {
        l.starts_with(
            "nbidle_notebook_kernels{namespace=\"local\",notebook=\"two-old\",state=\"busy\"",
        )
    });
    if reported[1]["busy_after_control_kernel_info"] != "busy" {
        // The server misreports: only the guard can keep it.
        assert_eq!(busy_old, None, "{text}");
        let past = past_deadline(&prom, "two-old").await;
        assert!(past > 10.0, "1.23's deadline passed {past}s ago");
    }
    let cpu_old = series(&text, "nbidle_notebook_cpu_seconds_total", "two-old").unwrap();
    eprintln!("CPU seconds of two-old: {cpu_old:.1}");

    // nbidle's exit (stop_on_exit) ends every process of them.
    assert!(nbidle.proc.terminate().unwrap().success());
    for name in names {
        assert_eq!(marked_pids(dir.path(), name), Vec::<i32>::new(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_starts_a_dead_server_again_and_leaves_the_user_s_job_alone() {
    let dir = tempfile::tempdir().unwrap();
    let spec = jupyter_notebook("left", JupyterVersion::Current);
    let url = spec.url.clone();
    let port = free_port();
    let yaml = config(port, dir.path(), &[spec], false);
    let mut first = Nbidle::start_yaml(dir.path(), "first", port, &yaml, &[]).await;
    let _left = Leftovers(dir.path().to_path_buf(), vec!["left"], Vec::new());
    first
        .wait_status("local", "left", "running", Duration::from_secs(120))
        .await;
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    in_a_terminal(
        &url,
        &work,
        &[
            "nohup sleep 3600 > /dev/null 2>&1 &".into(),
            "echo $! > job.pid".into(),
        ],
    );
    let job = read_pid(&work.join("job.pid"));
    let _left = Leftovers(dir.path().to_path_buf(), vec!["left"], vec![job]);

    // nbidle goes down (its notebooks outlive it), then the server dies.
    assert!(first.proc.terminate().unwrap().success());
    let record: Value =
        serde_json::from_slice(&std::fs::read(marker(dir.path(), "left")).unwrap()).unwrap();
    let server = record["pid"].as_i64().unwrap() as i32;
    // SAFETY: a signal to the notebook server this test's nbidle started.
    unsafe { libc::kill(server, libc::SIGKILL) };
    eventually("only the job left", Duration::from_secs(30), || async {
        (marked_pids(dir.path(), "left") == vec![job]).then_some(())
    })
    .await;

    let second = Nbidle::start_yaml(dir.path(), "second", port, &yaml, &[]).await;
    let v = second
        .wait_status("local", "left", "running", Duration::from_secs(120))
        .await;
    let record: Value =
        serde_json::from_slice(&std::fs::read(marker(dir.path(), "left")).unwrap()).unwrap();
    let new_server = record["pid"].as_i64().unwrap() as i32;
    assert_ne!(new_server, job, "the job was adopted as the server: {v}");
    assert_ne!(new_server, server);
    assert!(alive(job), "the job was killed at start-up");
    let status = jupyter_api(
        &reqwest::Client::new(),
        &url,
        reqwest::Method::GET,
        "api/status",
        None,
    )
    .await
    .unwrap()
    .status();
    assert_eq!(status, 200, "Jupyter answers again");
    assert!(!second.log().contains("adopting"), "{}", second.log());
    // The job is still the notebook's.
    eventually("the job accounted", Duration::from_secs(15), || async {
        let text = second.exporter_metrics().await;
        series(&text, "nbidle_notebook_processes", "left")
            .filter(|&n| n >= 2.0)
            .map(|_| ())
    })
    .await;

    // And its next stop ends it.
    assert_eq!(second.post("notebooks/local/left/stop").await.status(), 200);
    second
        .wait_status("local", "left", "stopped", Duration::from_secs(30))
        .await;
    eventually("the job ended", Duration::from_secs(15), || async {
        (!alive(job) && marked_pids(dir.path(), "left").is_empty()).then_some(())
    })
    .await;
}
