//! `make bench` (hostile part): nbidle's memory while its peers misbehave,
//! against the release binary.
//!
//! Each case is one function that starts its own nbidle (peak memory is per
//! process), measures its idle resident memory (`VmRSS`), lets the hostile
//! peer work on it, and reads its peak (`VmHWM`). The target is the same for
//! every case: the peak stays under 64 MiB above idle. To add a case, write
//! another `async fn … -> Row` and list it in `main`.
//!
//! Cases:
//! - a notebook's Jupyter server answering `/api/kernels` with 400 MB
//!   (`tests/drivers/hostile_jupyter.py`), with its `Content-Length`,
//!   chunked, and endless, probed every 2 s for 10 s.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TARGET_MIB: f64 = 64.0;
const WEBHOOK_TOKEN: &str = "bench-webhook";
const API_TOKEN: &str = "bench-api";
/// How long each hostile peer works on nbidle.
const HOSTILE_FOR: Duration = Duration::from_secs(10);

/// One line of the results.
struct Row {
    case: String,
    idle_mib: f64,
    peak_mib: f64,
    /// What the case checked happened (e.g. how the probes failed).
    outcome: String,
}

impl Row {
    fn above_idle(&self) -> f64 {
        self.peak_mib - self.idle_mib
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn vm_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The release nbidle on a local backend with `notebooks` (YAML list
/// entries), probing every 2 s with the default 5 s timeout; ready when
/// `/readyz` answers.
struct Nbidle {
    proc: Killed,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Nbidle {
    async fn start(notebooks: &str) -> Nbidle {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\ndata_dir: data\nauth: {{webhook_token: {WEBHOOK_TOKEN}, api_tokens: [{API_TOKEN}]}}\n\
             exporter: {{interval: 2s, timeout: 5s}}\n\
             backend:\n  kind: local\n  local:\n    stop_grace_period: 5s\n    stop_on_exit: true\n    notebooks:\n{notebooks}"
        );
        let cfg = dir.path().join("nbidle.yaml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nbidle"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("NBIDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut nb = Nbidle {
            proc: Killed(child),
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let t = Instant::now();
        loop {
            let r = nb.http.get(format!("{}/readyz", nb.base)).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return nb;
            }
            if let Ok(Some(status)) = nb.proc.0.try_wait() {
                panic!("nbidle exited: {status}");
            }
            assert!(t.elapsed() < Duration::from_secs(30), "nbidle never ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    async fn exporter_metrics(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics/notebooks", self.base))
            .send()
            .await;
        match r {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Whether the last probe of the notebook `hostile` succeeded ("1") or
    /// failed ("0").
    async fn probed(&self, success: &str) -> bool {
        self.exporter_metrics().await.contains(&format!(
            "nbidle_notebook_probe_success{{namespace=\"local\",notebook=\"hostile\"}} {success}"
        ))
    }
}

/// Polls `ok` every 200 ms; panics after `timeout`.
async fn until<F, Fut>(what: &str, timeout: Duration, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !ok().await {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `tests/drivers/hostile_jupyter.py`: quiet until told a mode.
struct HostileJupyter {
    _proc: Killed,
    base: String,
}

impl HostileJupyter {
    async fn start() -> HostileJupyter {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/hostile_jupyter.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg("600")
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let t = Instant::now();
        while http.get(format!("{base}/api")).send().await.is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "stand-in never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        HostileJupyter {
            _proc: Killed(child),
            base,
        }
    }

    async fn get(&self, path: &str) -> String {
        reqwest::get(format!("{}{path}", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// One notebook whose server answers `/api/kernels` as `mode` says.
async fn hostile_notebook(mode: &str, case: &str) -> Row {
    let jupyter = HostileJupyter::start().await;
    let nb = Nbidle::start(&format!(
        "      - {{name: hostile, command: [sleep, \"3600\"], workdir: ws/hostile, url: \"{}/hostile/\"}}\n",
        jupyter.base
    ))
    .await;
    until("a quiet probe", Duration::from_secs(30), || nb.probed("1")).await;
    // A few quiet rounds: idle memory with the exporter at work.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = vm_mib(nb.pid(), "VmRSS:");
    jupyter.get(&format!("/_mode/{mode}")).await;
    let before: u64 = jupyter.get("/_requests").await.trim().parse().unwrap();
    tokio::time::sleep(HOSTILE_FOR).await;
    let probes = jupyter
        .get("/_requests")
        .await
        .trim()
        .parse::<u64>()
        .unwrap()
        - before;
    let peak = vm_mib(nb.pid(), "VmHWM:");
    until("the probe to fail", Duration::from_secs(10), || {
        nb.probed("0")
    })
    .await;
    let text = nb.exporter_metrics().await;
    let reason = text
        .lines()
        .find(|l| l.starts_with("nbidle_notebook_probe_failure{"))
        .and_then(|l| l.split("reason=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .unwrap_or("none")
        .to_string();
    let failed = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "nbidle_exporter_probe_failures_total{{reason=\"{reason}\"}} "
            ))
        })
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Row {
        case: case.into(),
        idle_mib: idle,
        peak_mib: peak,
        outcome: format!(
            "{probes} probes in {} s; {failed} failed: {reason}",
            HOSTILE_FOR.as_secs()
        ),
    }
}

#[tokio::main]
async fn main() {
    let rows = vec![
        hostile_notebook("huge", "a notebook answers 400 MB (Content-Length)").await,
        hostile_notebook("huge-chunked", "a notebook answers 400 MB (chunked)").await,
        hostile_notebook("endless", "a notebook answers an endless body").await,
    ];
    println!("| case | nbidle idle RSS | peak RSS (VmHWM) | above idle | outcome |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} |",
            r.case,
            r.idle_mib,
            r.peak_mib,
            r.above_idle(),
            r.outcome
        );
    }
    for r in &rows {
        assert!(
            r.above_idle() < TARGET_MIB,
            "{}: {:.1} MiB above idle, target under {TARGET_MIB} MiB",
            r.case,
            r.above_idle()
        );
    }
}
