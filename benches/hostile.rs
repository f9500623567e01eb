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

/// A notebook nobody serves: its probes fail at connect, cheaply.
const QUIET_NOTEBOOK: &str =
    "      - {name: quiet, command: [sleep, \"3600\"], workdir: ws/quiet, url: \"http://127.0.0.1:9/\"}\n";

/// Opens a connection and sends an unfinished head of up to 390 KB, in
/// 1 KB lines, until nbidle closes it; then starts again, until `until`.
async fn partial_head_client(addr: String, until: Instant) -> u64 {
    use tokio::io::AsyncWriteExt;
    let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
    let mut closed = 0;
    while Instant::now() < until {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
        {
            continue;
        }
        let mut sent = 0;
        while sent < 390 * 1024 && Instant::now() < until {
            if s.write_all(line.as_bytes()).await.is_err() {
                closed += 1;
                break;
            }
            sent += line.len();
        }
        // Hold what was sent (as a slow client would) until nbidle ends it.
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await;
    }
    closed
}

/// Milliseconds of `n` authenticated API requests, one after another.
async fn api_latencies(base: &str, n: usize) -> Vec<f64> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let ok = http
            .get(format!("{base}/api/v1/notebooks"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        out.push(if ok {
            t.elapsed().as_secs_f64() * 1000.0
        } else {
            f64::INFINITY
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// 1,000 clients holding unfinished request heads of up to 390 KB each,
/// while the API is timed.
async fn partial_heads() -> Row {
    let nb = Nbidle::start(QUIET_NOTEBOOK).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = vm_mib(nb.pid(), "VmRSS:");
    let quiet = api_latencies(&nb.base, 200).await;
    let addr = nb.base.trim_start_matches("http://").to_string();
    let until = Instant::now() + HOSTILE_FOR;
    let clients: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(partial_head_client(addr.clone(), until)))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = api_latencies(&nb.base, 200).await;
    let mut closed = 0;
    for c in clients {
        closed += c.await.unwrap();
    }
    let peak = vm_mib(nb.pid(), "VmHWM:");
    Row {
        case: "1,000 clients hold unfinished heads of up to 390 KB".into(),
        idle_mib: idle,
        peak_mib: peak,
        outcome: format!(
            "{closed} heads cut off at the limit; API p50/p99 {:.2}/{:.2} ms quiet, {:.2}/{:.2} ms meanwhile ({} of 200 failed)",
            quantile(&quiet, 0.5),
            quantile(&quiet, 0.99),
            quantile(&loaded, 0.5),
            quantile(&loaded, 0.99),
            loaded.iter().filter(|l| l.is_infinite()).count(),
        ),
    }
}

/// 200 clients posting 4 MiB webhook bodies at once, again and again.
async fn large_bodies() -> Row {
    let nb = Nbidle::start(QUIET_NOTEBOOK).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = vm_mib(nb.pid(), "VmRSS:");
    let body = bytes::Bytes::from(vec![b' '; 4 * 1024 * 1024 - 16]);
    let until = Instant::now() + HOSTILE_FOR;
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let (url, body) = (format!("{}/webhook/alertmanager", nb.base), body.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut codes = std::collections::BTreeMap::<u16, u64>::new();
                while Instant::now() < until {
                    let r = http
                        .post(&url)
                        .bearer_auth(WEBHOOK_TOKEN)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    *codes
                        .entry(r.map_or(0, |r| r.status().as_u16()))
                        .or_default() += 1;
                }
                codes
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::<u16, u64>::new();
    for c in clients {
        for (k, v) in c.await.unwrap() {
            *codes.entry(k).or_default() += v;
        }
    }
    let peak = vm_mib(nb.pid(), "VmHWM:");
    let summary: Vec<String> = codes.iter().map(|(c, n)| format!("{n}× {c}")).collect();
    Row {
        case: "200 clients post 4 MiB webhook bodies at once".into(),
        idle_mib: idle,
        peak_mib: peak,
        outcome: format!("answers: {}", summary.join(", ")),
    }
}

/// The bytes of one webhook notification carrying 1,000 idle alerts, as a
/// real Alertmanager sends it: alerts labelled and annotated as nbidle's
/// rules make them, posted to Alertmanager, grouped into one notification
/// (`group_by: [nbidle_action]`) and caught by a listener here.
async fn alertmanager_payload_bytes(alerts: usize) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let catcher = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let catch_at = catcher.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alertmanager.yml");
    std::fs::write(
        &cfg,
        format!(
            "route:\n  receiver: nbidle\n  group_by: [nbidle_action]\n  group_wait: 1s\nreceivers:\n- name: nbidle\n  webhook_configs:\n  - url: http://{catch_at}/webhook/alertmanager\n    send_resolved: false\n    max_alerts: 0\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let bin = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Alertmanager: run scripts/test-deps.sh");
    let _am = Killed(
        Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let am = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    until("alertmanager ready", Duration::from_secs(30), || async {
        http.get(format!("{am}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    // Labels, annotations and generator URL as the rule NotebookIdle gives
    // them (rules/nbidle.rules.yml), for notebooks with realistic names.
    let expr = "(time() - topk by (namespace, notebook) (1, max by (namespace, notebook, owner) (nbidle_notebook_idle_deadline_timestamp_seconds{job=\"nbidle-exporter\"}))) >= 0";
    let generator = format!(
        "http://prometheus-k8s-0:9090/graph?g0.expr={}&g0.tab=1",
        expr.bytes()
            .map(|b| if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    let batch: Vec<serde_json::Value> = (0..alerts)
        .map(|i| {
            let (ns, nb, owner) = (format!("team-{:02}", i % 40), format!("notebook-{i:04}"), format!("user{:03}@example.org", i % 300));
            serde_json::json!({
                "labels": {"alertname": "NotebookIdle", "namespace": ns, "notebook": nb, "owner": owner,
                           "nbidle_action": "stop", "severity": "info", "prometheus": "monitoring/k8s"},
                "annotations": {
                    "summary": format!("Notebook {ns}/{nb} is idle"),
                    "description": format!("Notebook {ns}/{nb} of {owner} has shown no work (no busy kernel and no kernel or terminal activity) for its idle time; nbidle stops it. Silence this alert to keep it running."),
                },
                "generatorURL": generator,
            })
        })
        .collect();
    let r = http
        .post(format!("{am}/api/v2/alerts"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(60), catcher.accept())
        .await
        .expect("Alertmanager notified")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let length = loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the head");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: u64 = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("Content-Length")
                .trim()
                .parse()
                .unwrap();
            let mut body = (got.len() - end - 4) as u64;
            while body < len {
                body += s.read(&mut buf).await.unwrap() as u64;
            }
            break len;
        }
    };
    let _ = s
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .await;
    length
}

#[tokio::main]
async fn main() {
    let rows = vec![
        hostile_notebook("huge", "a notebook answers 400 MB (Content-Length)").await,
        hostile_notebook("huge-chunked", "a notebook answers 400 MB (chunked)").await,
        hostile_notebook("endless", "a notebook answers an endless body").await,
        partial_heads().await,
        large_bodies().await,
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
    let bytes = alertmanager_payload_bytes(1000).await;
    println!();
    println!(
        "| webhook body of 1,000 idle alerts from a real Alertmanager | {bytes} bytes ({:.2} MiB) |",
        bytes as f64 / 1024.0 / 1024.0
    );
    for r in &rows {
        assert!(
            r.above_idle() < TARGET_MIB,
            "{}: {:.1} MiB above idle, target under {TARGET_MIB} MiB",
            r.case,
            r.above_idle()
        );
    }
}
