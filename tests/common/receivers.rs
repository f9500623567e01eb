//! Where Alertmanager's notifications for people land in tests: a real
//! SMTP server (aiosmtpd, from the test venv) writing a maildir, and a
//! loopback HTTP receiver standing for a chat webhook.
#![allow(
    dead_code,
    reason = "each test binary compiles tests/common whole and uses a part of it"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::jupyter::jupyter;
use super::proc::{eventually, free_port, Proc};

/// aiosmtpd's `Mailbox` handler on loopback: each message a file in
/// `<dir>/maildir/new`, with the envelope's recipients as `X-RcptTo`.
pub struct SmtpReceiver {
    pub proc: Proc,
    pub port: u16,
    pub maildir: PathBuf,
}

impl SmtpReceiver {
    pub async fn start(dir: &Path) -> SmtpReceiver {
        let python = jupyter().parent().unwrap().join("python");
        let ok = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "aiosmtpd missing in the test venv: run `bash scripts/test-deps.sh`"
        );
        let port = free_port();
        let maildir = dir.join("maildir");
        let proc = Proc::spawn(
            "aiosmtpd",
            Command::new(python)
                .args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir),
            &dir.join("aiosmtpd.log"),
        );
        eventually("aiosmtpd listening", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        SmtpReceiver {
            proc,
            port,
            maildir,
        }
    }

    /// Every message received so far, as text.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

/// A loopback HTTP server keeping every JSON body POSTed to it.
pub struct HttpReceiver {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

impl HttpReceiver {
    pub async fn start() -> HttpReceiver {
        use warp::Filter;
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = bodies.clone();
        let route = warp::post().and(warp::body::json()).map(move |v: Value| {
            kept.lock().unwrap().push(v);
            "ok"
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/nbidle", listener.local_addr().unwrap());
        tokio::spawn(warp::serve(route).incoming(listener).run());
        HttpReceiver { url, bodies }
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}
