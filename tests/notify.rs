//! nbidle's pushes to notebooks' JupyterLab extension (`notify`), against
//! the real nbidle binary and a real Alertmanager: a loopback server of
//! this test plays a notebook's Jupyter with the extension's side of the
//! contract (`PUT nbidle/state`), so every answer, hostile ones included,
//! is the test's to choose; and the real extension (`jupyterlab/`,
//! module `nbidle_jupyterlab`) in a real jupyter_server.
//!
//! The state reaches the notebook within the warning window and is
//! cleared after; a Keep running request becomes a silence in
//! Alertmanager and its result comes back in the next push, at once; the
//! push before an idle stop says why; a notebook without the extension
//! (404) is left alone and works as before; a huge, slow or invalid
//! answer is a counted error that costs nbidle a bounded read.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const UP: Duration = Duration::from_secs(60);
/// What the huge answer tries to send.
const HUGE_BYTES: u64 = 64 * 1024 * 1024;

/// How the fake extension answers `PUT nbidle/state`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// The contract: 200 with the pending requests.
    Extension,
    /// No extension: 404.
    Absent,
    /// 200 and an endless body.
    Huge,
    /// The answer after 5 s.
    Slow,
    /// 200 and JSON cut short.
    BadJson,
}

/// One `PUT nbidle/state` received.
#[derive(Debug, Clone)]
struct Put {
    at: Instant,
    query: String,
    authorization: Option<String>,
    body: Value,
    /// The requests handed out in its answer.
    handed: Vec<Value>,
}

struct Shared {
    mode: Mode,
    started: String,
    puts: Mutex<Vec<Put>>,
    pending: Mutex<Vec<Value>>,
    /// Kernel activity reported as now at each probe.
    busy: std::sync::atomic::AtomicBool,
    /// Bytes of the huge answer written before nbidle hung up.
    huge_written: AtomicU64,
    /// Requests are handed out only to the push before a stop.
    hold_for_stopping: std::sync::atomic::AtomicBool,
}

/// A notebook's Jupyter as far as nbidle's probes and pushes go.
struct FakeLab {
    url: String,
    shared: Arc<Shared>,
}

impl FakeLab {
    async fn start(mode: Mode) -> FakeLab {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            mode,
            started: rfc3339_from_now(0),
            puts: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            busy: Default::default(),
            huge_written: AtomicU64::new(0),
            hold_for_stopping: Default::default(),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        FakeLab {
            url: format!("http://127.0.0.1:{port}/"),
            shared,
        }
    }

    fn spec(&self, name: &str) -> NotebookSpec {
        NotebookSpec {
            name: name.into(),
            command: vec![tool(&["sleep"]).display().to_string(), "3600".into()],
            url: self.url.clone(),
            autostop: true,
        }
    }

    fn puts(&self) -> Vec<Put> {
        self.shared.puts.lock().unwrap().clone()
    }

    fn hand_out(&self, requests: Vec<Value>) {
        self.shared.pending.lock().unwrap().extend(requests);
    }

    /// Waits for a push matching `what`; returns it.
    async fn push_where(&self, what: &str, f: impl Fn(&Put) -> bool) -> Put {
        let deadline = Instant::now() + UP;
        loop {
            if let Some(p) = self.puts().into_iter().find(|p| f(p)) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no push {what}; pushes: {:#?}",
                self.puts().iter().map(|p| &p.body).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn serve(mut conn: TcpStream, s: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = &buf[head_end..head_end + length];
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let now = rfc3339_from_now(0);
    let (status, answer) = match (method, path) {
        ("GET", "/api") => (200, json!({"version": "2.14.0"}).to_string()),
        ("GET", "/api/status") => (
            200,
            json!({"started": s.started, "last_activity": s.started, "connections": 0, "kernels": 0})
                .to_string(),
        ),
        ("GET", "/api/kernels") => {
            let kernels = match s.busy.load(Ordering::Relaxed) {
                true => json!([{"id": "k1", "name": "python3", "last_activity": now, "execution_state": "idle", "connections": 1}]),
                false => json!([]),
            };
            (200, kernels.to_string())
        }
        ("GET", "/api/terminals") => (200, "[]".to_string()),
        ("PUT", "/nbidle/state") => {
            if s.mode == Mode::Huge {
                huge(conn, &s).await;
                record(&s, query, header("authorization"), body, Vec::new());
                return;
            }
            if s.mode == Mode::Slow {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let held = s.hold_for_stopping.load(Ordering::Relaxed)
                && !String::from_utf8_lossy(body).contains(r#""phase":"stopping""#);
            let handed: Vec<Value> = match s.mode {
                Mode::Extension if !held => std::mem::take(&mut *s.pending.lock().unwrap()),
                _ => Vec::new(),
            };
            record(&s, query, header("authorization"), body, handed.clone());
            match s.mode {
                Mode::Absent => (404, json!({"message": "Not Found"}).to_string()),
                Mode::BadJson => (200, r#"{"requests": [{"id": "#.to_string()),
                _ => (200, json!({ "requests": handed }).to_string()),
            }
        }
        _ => (404, json!({"message": "Not Found"}).to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = conn.write_all(reply.as_bytes()).await;
}

fn record(s: &Shared, query: &str, authorization: Option<String>, body: &[u8], handed: Vec<Value>) {
    s.puts.lock().unwrap().push(Put {
        at: Instant::now(),
        query: query.to_string(),
        authorization,
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        handed,
    });
}

/// 200 without a length and a body that does not end: what nbidle reads
/// of it is up to nbidle.
async fn huge(mut conn: TcpStream, s: &Shared) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"requests\": [";
    if conn.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let block = vec![b' '; 64 * 1024];
    let mut written = 0u64;
    while written < HUGE_BYTES {
        let w = tokio::time::timeout(Duration::from_secs(10), conn.write_all(&block)).await;
        if !matches!(w, Ok(Ok(()))) {
            break;
        }
        written += block.len() as u64;
    }
    s.huge_written.store(written, Ordering::Relaxed);
}

fn nbidle_config_with(
    port: u16,
    dir: &std::path::Path,
    notebooks: &[NotebookSpec],
    am_port: Option<u16>,
) -> Value {
    let mut cfg = nbidle_config(port, dir, notebooks, &NbidleOptions::default());
    cfg["autostop"]["idle_after"] = json!("20s");
    cfg["autostop"]["warn_before"] = json!("10s");
    // The stop at the end comes from the test's alert, whatever the probe says.
    cfg["autostop"]["recheck"] = json!(false);
    cfg["exporter"]["interval"] = json!("3s");
    cfg["notify"] = json!({"jupyterlab": {"timeout": "1s"}});
    if let Some(p) = am_port {
        cfg["alertmanager"]["url"] = json!(format!("http://127.0.0.1:{p}"));
    }
    cfg
}

async fn start_nbidle(dir: &std::path::Path, cfg: &Value, port: u16) -> Nbidle {
    let yaml = serde_yaml::to_string(cfg).unwrap();
    Nbidle::start_yaml(dir, "nbidle", port, &yaml, &[]).await
}

fn warning_alert(notebook: &str, status: &str) -> Value {
    let mut a = idle_alert("local", notebook, &rfc3339_from_now(-1));
    a["labels"]["alertname"] = json!("NotebookIdleSoon");
    a["labels"]["nbidle_action"] = json!("warn");
    a["status"] = json!(status);
    if status == "resolved" {
        a["endsAt"] = json!(rfc3339_from_now(0));
    }
    a
}

/// Notebook "alpha" of ada behind the fake extension, nbidle, and a real
/// Alertmanager.
async fn alpha_of_ada_with_alertmanager() -> (tempfile::TempDir, FakeLab, Nbidle, Alertmanager) {
    let dir = tempfile::tempdir().unwrap();
    let lab = FakeLab::start(Mode::Extension).await;
    let (port, am_port) = (free_port(), free_port());
    let mut cfg = nbidle_config_with(port, dir.path(), &[lab.spec("alpha")], Some(am_port));
    cfg["backend"]["local"]["notebooks"][0]["owner"] = json!("ada");
    let nbidle = start_nbidle(dir.path(), &cfg, port).await;
    nbidle.wait_status("local", "alpha", "running", UP).await;
    let am = Alertmanager::start_at(dir.path(), &nbidle.config, am_port).await;
    (dir, lab, nbidle, am)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_reaches_jupyterlab_in_the_warning_window_and_keep_running_comes_back() {
    let (_dir, lab, nbidle, am) = alpha_of_ada_with_alertmanager().await;

    // Pushed once the deadline is within warn_before + 2 intervals (16 s),
    // with the notebook's token, never counted as activity.
    let first = lab.push_where("at all", |_| true).await;
    let b = &first.body;
    assert_eq!(
        first.authorization.as_deref(),
        Some(&*format!("token {JUPYTER_TOKEN}"))
    );
    assert_eq!(first.query, "no_track_activity=1");
    assert_eq!(b["version"], 1, "{b}");
    assert_eq!(
        b["notebook"],
        json!({"namespace": "local", "name": "alpha"})
    );
    assert_eq!(b["phase"], "running", "{b}");
    assert_eq!(b["warn_before_seconds"], 10);
    assert_eq!(b["idle_after_seconds"], 20);
    assert_eq!(b["keep_running_for"], "4h");
    assert_eq!(b["page_url"], json!(format!("{}/", nbidle.url)));
    assert_eq!(b["results"], json!([]));
    let ahead = b["stops_at"].as_f64().unwrap() - b["sent_at"].as_f64().unwrap();
    assert!(ahead <= 16.5, "pushed {ahead} s ahead of the deadline: {b}");

    // The warning, as the webhook records it: phase warning.
    let r = nbidle
        .webhook(&payload(vec![warning_alert("alpha", "firing")]))
        .await;
    assert_eq!(r.status(), 200);
    let warned = lab
        .push_where("with the warning", |p| p.body["phase"] == "warning")
        .await;
    assert!(
        warned.body["warning_since"].as_f64().is_some(),
        "{}",
        warned.body
    );

    // Keep running from JupyterLab, and one that is not the offer.
    lab.hand_out(vec![
        json!({"id": "req-ok", "kind": "keep_running", "for": "4h", "by": "ada", "at": 1.0}),
        json!({"id": "req-8h", "kind": "keep_running", "for": "8h", "by": "ada", "at": 1.0}),
    ]);
    let handed = lab
        .push_where("that collected the requests", |p| !p.handed.is_empty())
        .await;
    let answered = lab
        .push_where("with the results", |p| p.body["results"] != json!([]))
        .await;
    let results = answered.body["results"].as_array().unwrap().clone();
    let ok = results
        .iter()
        .find(|r| r["id"] == "req-ok")
        .expect("req-ok's result");
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(
        ok["message"]
            .as_str()
            .unwrap()
            .starts_with("Kept running until "),
        "{ok}"
    );
    let refused = results
        .iter()
        .find(|r| r["id"] == "req-8h")
        .expect("req-8h's result");
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("4h"),
        "{refused}"
    );
    // At once, not an exporter interval (3 s) later.
    let after = answered.at - handed.at;
    eprintln!("result pushed {after:?} after the request was collected");
    assert!(after < Duration::from_secs(2), "{after:?}");
    // The silence is Alertmanager's, by the notebook's owner via JupyterLab.
    let made = am.silences();
    let s = made
        .iter()
        .find(|s| s["createdBy"] == "ada via JupyterLab")
        .unwrap_or_else(|| panic!("no silence by ada via JupyterLab: {made:?}"));
    assert!(
        s["matchers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "notebook" && m["value"] == "alpha"),
        "{s}"
    );
    assert_eq!(made.len(), 1, "one silence for one request: {made:?}");
    let kept = lab
        .push_where("showing the silence", |p| {
            p.body["kept_running"].is_object()
        })
        .await;
    assert_eq!(kept.body["kept_running"]["by"], "ada via JupyterLab");
    assert_eq!(
        nbidle
            .metric("nbidle_jupyterlab_keep_requests_total{result=\"ok\"}")
            .await,
        1.0
    );
    assert_eq!(
        nbidle
            .metric("nbidle_jupyterlab_keep_requests_total{result=\"refused\"}")
            .await,
        1.0
    );

    // Used again and the warning resolved: one push clears it, then none.
    lab.shared.busy.store(true, Ordering::Relaxed);
    let r = nbidle
        .webhook(&payload(vec![warning_alert("alpha", "resolved")]))
        .await;
    assert_eq!(r.status(), 200);
    let cleared = lab
        .push_where("that clears", |p| {
            p.at > kept.at && p.body["stops_at"].is_null()
        })
        .await;
    assert_eq!(cleared.body["phase"], "running", "{}", cleared.body);
    assert!(cleared.body["warning_since"].is_null());
    tokio::time::sleep(Duration::from_secs(8)).await;
    let later: Vec<Value> = lab
        .puts()
        .into_iter()
        .filter(|p| p.at > cleared.at)
        .map(|p| p.body)
        .collect();
    assert!(later.is_empty(), "pushes after the clear: {later:?}");

    // The idle stop: the push before it says why.
    lab.shared.busy.store(false, Ordering::Relaxed);
    let before = Instant::now();
    let r = nbidle
        .webhook(&payload(vec![idle_alert(
            "local",
            "alpha",
            &rfc3339_from_now(60),
        )]))
        .await;
    assert_eq!(r.status(), 200);
    let stopping = lab
        .push_where("before the stop", |p| {
            p.at > before && p.body["phase"] == "stopping"
        })
        .await;
    assert_eq!(
        stopping.body["reason"], "after 20 s without activity",
        "{}",
        stopping.body
    );
    nbidle.wait_status("local", "alpha", "stopped", UP).await;
    assert!(
        nbidle
            .metric("nbidle_jupyterlab_notifications_total{result=\"ok\"}")
            .await
            >= 4.0
    );
    assert_eq!(
        nbidle
            .metric("nbidle_jupyterlab_notifications_total{result=\"error\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_running_handed_out_to_the_push_before_the_stop_keeps_it_running() {
    let (_dir, lab, nbidle, am) = alpha_of_ada_with_alertmanager().await;
    lab.push_where("at all", |_| true).await;

    // Clicked twice since the last round: the extension hands both out to
    // the push before the stop.
    lab.shared.hold_for_stopping.store(true, Ordering::Relaxed);
    lab.hand_out(vec![
        json!({"id": "late-1", "kind": "keep_running", "for": "4h", "by": "ada", "at": 1.0}),
        json!({"id": "late-2", "kind": "keep_running", "for": "4h", "by": "ada", "at": 1.0}),
    ]);
    let before = Instant::now();
    let r = nbidle
        .webhook(&payload(vec![idle_alert(
            "local",
            "alpha",
            &rfc3339_from_now(60),
        )]))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["alerts"][0]["decision"], "kept_running", "{v}");
    let stopping = lab
        .push_where("before the stop", |p| {
            p.at > before && p.body["phase"] == "stopping"
        })
        .await;
    assert_eq!(stopping.handed.len(), 2, "{:?}", stopping.handed);
    // The results right away, both ok, from one silence.
    let answered = lab
        .push_where("with the results", |p| {
            p.at > stopping.at && p.body["results"].as_array().is_some_and(|r| r.len() == 2)
        })
        .await;
    assert!(
        answered.at - stopping.at < Duration::from_secs(2),
        "{:?}",
        answered.at - stopping.at
    );
    for r in answered.body["results"].as_array().unwrap() {
        assert_eq!(r["ok"], true, "{r}");
    }
    let made = am.silences();
    assert_eq!(made.len(), 1, "one silence for two requests: {made:?}");
    assert_eq!(made[0]["createdBy"], "ada via JupyterLab");
    assert_eq!(
        nbidle.notebook("local", "alpha").await["status"],
        "running",
        "kept running, not stopped"
    );
    assert_eq!(
        nbidle
            .metric("nbidle_alert_decisions_total{decision=\"kept_running\"}")
            .await,
        1.0
    );

    // Another click right after: the silence already covers it.
    lab.shared.hold_for_stopping.store(false, Ordering::Relaxed);
    lab.hand_out(vec![
        json!({"id": "again", "kind": "keep_running", "for": "4h", "by": "ada", "at": 2.0}),
    ]);
    let again = lab
        .push_where("with the second result", |p| {
            p.body["results"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["id"] == "again"))
        })
        .await;
    let r = &again.body["results"][0];
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["message"], answered.body["results"][0]["message"]);
    let made = am.silences();
    assert_eq!(made.len(), 1, "no second silence: {made:?}");
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_extension_nbidle_works_as_before_and_hostile_answers_are_bounded_errors() {
    let dir = tempfile::tempdir().unwrap();
    let absent = FakeLab::start(Mode::Absent).await;
    let huge = FakeLab::start(Mode::Huge).await;
    let slow = FakeLab::start(Mode::Slow).await;
    let bad = FakeLab::start(Mode::BadJson).await;
    let fine = FakeLab::start(Mode::Extension).await;
    let labs = [
        ("absent", &absent),
        ("huge", &huge),
        ("slow", &slow),
        ("bad", &bad),
        ("fine", &fine),
    ];
    let specs: Vec<NotebookSpec> = labs.iter().map(|(n, l)| l.spec(n)).collect();
    let port = free_port();
    let mut cfg = nbidle_config_with(port, dir.path(), &specs, None);
    // Interesting from the start: the window (16 s + 2 × 2 s) covers the idle time.
    cfg["autostop"]["warn_before"] = json!("16s");
    cfg["exporter"]["interval"] = json!("2s");
    let nbidle = start_nbidle(dir.path(), &cfg, port).await;
    for (n, _) in &labs {
        nbidle.wait_status("local", n, "running", UP).await;
    }
    let rss_before = rss_kib(nbidle.proc.pid());

    eventually("every kind of answer counted", UP, || async {
        let absent = nbidle
            .metric("nbidle_jupyterlab_notifications_total{result=\"absent\"}")
            .await;
        let errors = nbidle
            .metric("nbidle_jupyterlab_notifications_total{result=\"error\"}")
            .await;
        (absent >= 1.0 && errors >= 6.0).then_some(())
    })
    .await;
    // Rounds go on: each hostile answer fails again, and the extension
    // that answers well is told at every round meanwhile (how many rounds
    // come in a given time depends on the machine's load, not asserted).
    eventually("rounds after the hostile answers", UP, || async {
        let again = [&huge, &slow, &bad].iter().all(|l| l.puts().len() >= 2);
        (again && fine.puts().len() >= 5).then_some(())
    })
    .await;

    // No extension: asked once, then left alone (for 10 min).
    assert_eq!(absent.puts().len(), 1, "{:?}", absent.puts());
    // Without Alertmanager, Keep running is not offered.
    let p = &fine.puts()[0].body;
    assert!(p["keep_running_for"].is_null(), "{p}");
    // Hostile answers fail each push and are tried again, while the
    // others' pushes go on every round.
    for (name, lab) in [("huge", &huge), ("slow", &slow), ("bad", &bad)] {
        assert!(lab.puts().len() >= 2, "{name}: {:?}", lab.puts().len());
    }
    assert!(fine.puts().len() >= 5, "fine: {}", fine.puts().len());
    let written = huge.shared.huge_written.load(Ordering::Relaxed);
    eprintln!("the huge answer got {written} bytes out before nbidle hung up");
    assert!(written < 16 * 1024 * 1024, "{written}");
    let rss_after = rss_kib(nbidle.proc.pid());
    eprintln!("nbidle RSS {rss_before} kB -> {rss_after} kB");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "{rss_before} -> {rss_after} kB"
    );
    assert!(!nbidle.log().contains("panicked"), "{}", nbidle.log());

    // The notebook without the extension is probed and stopped as ever.
    let m = nbidle.exporter_metrics().await;
    assert!(
        m.lines().any(
            |l| l.starts_with("nbidle_notebook_idle_deadline_timestamp_seconds{")
                && l.contains("notebook=\"absent\"")
        ),
        "{m}"
    );
    let r = nbidle
        .webhook(&payload(vec![idle_alert(
            "local",
            "absent",
            &rfc3339_from_now(60),
        )]))
        .await;
    assert_eq!(r.status(), 200);
    nbidle.wait_status("local", "absent", "stopped", UP).await;
    assert_eq!(
        absent.puts().len(),
        1,
        "no push before the stop of a notebook without the extension"
    );
}

/// The real extension's folder, `<repo>/jupyterlab`, if its Python module
/// is there. Missing is a failure under CI (`CI=true`); elsewhere the test
/// says so and checks nothing.
fn extension_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jupyterlab");
    if dir.join("nbidle_jupyterlab").is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "missing the JupyterLab extension's server module at {}/nbidle_jupyterlab (package nbidle-jupyterlab)",
        dir.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("{msg}: not run");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_extension_takes_the_state_and_its_keep_running_becomes_a_silence() {
    let Some(ext) = extension_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut lab = jupyter_notebook("lab", JupyterVersion::Current);
    lab.command
        .push("--ServerApp.jpserver_extensions=nbidle_jupyterlab=True".into());
    let url = lab.url.clone();
    let (port, am_port) = (free_port(), free_port());
    let mut cfg = nbidle_config_with(port, dir.path(), &[lab], Some(am_port));
    cfg["autostop"]["warn_before"] = json!("16s");
    cfg["exporter"]["interval"] = json!("2s");
    cfg["backend"]["local"]["notebooks"][0]["env"] = json!({"PYTHONPATH": ext});
    let nbidle = start_nbidle(dir.path(), &cfg, port).await;
    nbidle.wait_status("local", "lab", "running", UP).await;
    let am = Alertmanager::start_at(dir.path(), &nbidle.config, am_port).await;
    let http = reqwest::Client::new();
    let get_state = || async {
        let r = jupyter_api(&http, &url, reqwest::Method::GET, "nbidle/state", None)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };

    // nbidle's push, as the frontend reads it.
    let state = eventually("the state pushed to the extension", UP, || async {
        let v = get_state().await;
        v["state"].is_object().then_some(v)
    })
    .await;
    let s = &state["state"];
    assert_eq!(s["notebook"]["name"], "lab", "{state}");
    assert_eq!(s["keep_running_for"], "4h", "{state}");
    assert!(s["stops_at"].as_f64().is_some(), "{state}");
    assert!(state["received_at"].as_f64().is_some(), "{state}");

    // Keep running from the frontend: nbidle collects it and makes the silence.
    let r = jupyter_api(
        &http,
        &url,
        reqwest::Method::POST,
        "nbidle/keep",
        Some(json!({"for": "4h"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = eventually("the request done", UP, || async {
        let v = get_state().await;
        v["requests"]
            .as_array()?
            .iter()
            .find(|q| q["id"] == id.as_str() && q["status"] == "done")
            .cloned()
    })
    .await;
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .starts_with("Kept running until "),
        "{done}"
    );
    let made = am.silences();
    assert!(
        made.iter().any(|s| s["createdBy"] == "JupyterLab"),
        "{made:?}"
    );

    // Save and keep working counts as file work.
    let before = nbidle.exporter_metrics().await;
    let r = jupyter_api(&http, &url, reqwest::Method::POST, "nbidle/activity", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let writes = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("nbidle_notebook_file_writes_total{"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let was = writes(&before);
    eventually("the activity seen as file work", UP, || async {
        (writes(&nbidle.exporter_metrics().await) > was).then_some(())
    })
    .await;
}
