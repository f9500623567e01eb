//! Shutdown through a real nbidle process.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tokio::net::TcpStream;

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
