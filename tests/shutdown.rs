//! Shutdown's order, through a real nbidle process: on SIGTERM readiness
//! drops first, the listener then drains the requests in flight, then
//! nbidle's own tasks finish (here a stop in progress, whose SIGKILL after
//! the grace period is still due), and the process exits within its bound.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GRACE: Duration = Duration::from_secs(2);

/// A notebook that ignores SIGTERM: only the SIGKILL sent after the grace
/// period ends it.
fn stubborn(name: &str) -> NotebookSpec {
    NotebookSpec {
        name: name.into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "trap '' TERM; exec sleep 3600".into(),
        ],
        url: format!("http://127.0.0.1:{}/", free_port()),
        autostop: true,
    }
}

fn recorded_pid(dir: &Path, name: &str) -> Option<i32> {
    let file = dir.join("data/notebooks").join(format!("{name}.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    v["pid"].as_i64().and_then(|p| i32::try_from(p).ok())
}

/// Running, not a zombie left for whoever reaps it.
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .unwrap_or("X");
    state != "Z" && state != "X"
}

/// Whether the process ignores SIGTERM yet (its shell has run the trap).
fn ignores_sigterm(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

/// Kills the notebook at the end whatever happened, so a failed run leaves
/// no process behind.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

/// A connection holding an unfinished request head.
async fn held(addr: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// Finishes the head and reads the response to the connection's end.
async fn finish(mut s: TcpStream) -> String {
    s.write_all(b"\r\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the response within 5 s")
        .expect("reading the response");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn sigterm_drops_readiness_drains_requests_then_finishes_a_stop_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let opts = NbidleOptions {
        stop_on_exit: false,
        ..NbidleOptions::default()
    };
    let yaml = Nbidle::config_yaml(port, dir.path(), &[stubborn("nb")], &opts)
        .replace("stop_grace_period: 5s", "stop_grace_period: 2s")
        + "server:\n  shutdown_timeout: 5s\n";
    let mut nb = Nbidle::start_yaml(dir.path(), "nbidle", port, &yaml, &[]).await;
    let pid = eventually("the notebook's pid", Duration::from_secs(10), || async {
        recorded_pid(dir.path(), "nb").filter(|&p| alive(p) && ignores_sigterm(p))
    })
    .await;
    let _cleanup = KillOnDrop(pid);
    let addr = nb.url.trim_start_matches("http://").to_string();
    let readyz = held(&addr, "/readyz").await;
    let livez = held(&addr, "/livez").await;

    // A stop in progress: SIGTERM (ignored) now, SIGKILL after the grace period.
    assert_eq!(nb.post("notebooks/local/nb/stop").await.status(), 200);
    let stopped_at = Instant::now();
    // SAFETY: kill only sends a signal.
    unsafe {
        libc::kill(nb.proc.pid(), libc::SIGTERM);
    }
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        nb.proc.exited().is_none(),
        "nbidle waits for the requests in flight\n{}",
        nb.log()
    );

    // Draining: readiness is already down, and requests in flight complete.
    let r = finish(readyz).await;
    assert!(r.starts_with("HTTP/1.1 503"), "/readyz while draining: {r}");
    let r = finish(livez).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("ok"),
        "a request in flight completes: {r}"
    );

    let status = eventually("nbidle's exit", Duration::from_secs(20), || {
        let s = nb.proc.exited();
        async move { s }
    })
    .await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}\n{}", nb.log());
    // The stop's SIGKILL came before the exit, not never.
    assert!(
        !alive(pid),
        "the notebook whose stop was in progress is gone\n{}",
        nb.log()
    );
    assert!(
        stopped_at.elapsed() >= GRACE,
        "exited before the stop's grace period"
    );
    // Well within the bound: shutdown_timeout, the grace period and a margin.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let log = nb.log();
    assert!(log.contains("sending SIGKILL"), "{log}");
}

/// A self-signed certificate for 127.0.0.1 and a web config serving it.
fn web_config(dir: &Path) -> std::path::PathBuf {
    let out = std::process::Command::new(tool(&["openssl"]))
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    web
}

#[tokio::test]
async fn a_client_stalling_its_tls_handshake_does_not_hold_shutdown_past_the_drain_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = Nbidle::config_yaml(port, dir.path(), &[], &NbidleOptions::default())
        + &format!(
            "server:\n  web_config_file: {}\n  header_read_timeout: 5m\n  shutdown_timeout: 1s\n",
            web_config(dir.path()).display()
        );
    let config = dir.path().join("nbidle.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("nbidle.log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nbidle"));
    cmd.arg("serve").arg("--config").arg(&config);
    let mut nbidle = Proc::spawn("nbidle", &mut cmd, &log);
    eventually("nbidle listening", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("backend synced; ready").then_some(())
    })
    .await;
    // Connected, and never a ClientHello: the handshake waits on it.
    let _stalled = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = nbidle.terminate().expect("exit status");
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{text}");
    // The 1 s deadline, not the 5 m head timeout nor the step's margin.
    assert!(took < Duration::from_secs(4), "took {took:?}\n{text}");
}
