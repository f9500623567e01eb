//! Real Jupyter servers as local notebooks, their REST API, and the
//! scripted Jupyter user of `tests/drivers/jupyter_user.py`.
#![allow(
    dead_code,
    reason = "each test binary compiles tests/common whole and uses a part of it"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::proc::{free_port, tool, Proc};
use super::serve::NotebookSpec;

pub const JUPYTER_TOKEN: &str = "jupyter-token-for-tests";

/// Jupyter from the venv `scripts/test-deps.sh` creates (jupyter_server 2.x).
pub fn jupyter() -> PathBuf {
    let p = std::env::var("NBIDLE_JUPYTER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            let cache =
                std::env::var("NBIDLE_CACHE").unwrap_or_else(|_| format!("{home}/.cache/nbidle"));
            PathBuf::from(cache).join("venv/bin/jupyter")
        });
    assert!(
        p.exists(),
        "missing Jupyter at {}: run `bash scripts/test-deps.sh`",
        p.display()
    );
    p
}

/// Which Jupyter server a test notebook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JupyterVersion {
    /// jupyter_server 2.x from PyPI, in the test venv.
    Current,
    /// Debian's jupyter-server 1.23.
    Old,
}

/// A real Jupyter server as a local notebook.
pub fn jupyter_notebook(name: &str, version: JupyterVersion) -> NotebookSpec {
    let port = free_port();
    let mut command = match version {
        JupyterVersion::Current => vec![jupyter().display().to_string(), "server".into()],
        JupyterVersion::Old => vec![tool(&["/usr/bin/jupyter-server"]).display().to_string()],
    };
    command.extend([
        "--allow-root".to_string(),
        "--no-browser".into(),
        "--ServerApp.ip=127.0.0.1".into(),
        format!("--ServerApp.port={port}"),
        "--ServerApp.port_retries=0".into(),
        "--ServerApp.authenticate_prometheus=False".into(),
    ]);
    command.push(match version {
        JupyterVersion::Current => format!("--IdentityProvider.token={JUPYTER_TOKEN}"),
        JupyterVersion::Old => format!("--ServerApp.token={JUPYTER_TOKEN}"),
    });
    NotebookSpec {
        name: name.into(),
        command,
        url: format!("http://127.0.0.1:{port}/"),
        autostop: true,
    }
}

/// Calls a notebook's Jupyter REST API with its token.
pub async fn jupyter_api(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Result<reqwest::Response> {
    let mut req = http
        .request(method, format!("{}{}", base, path))
        .header("Authorization", format!("token {JUPYTER_TOKEN}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await
}

/// Runs `tests/drivers/jupyter_user.py ACTION` against a notebook with the
/// venv's Python; the process is killed when the guard drops.
pub fn jupyter_user(dir: &Path, base_url: &str, action: &str, every_secs: u32) -> Proc {
    jupyter_user_as(dir, base_url, JUPYTER_TOKEN, action, every_secs)
}

/// As [`jupyter_user`], with another token (a Hub's, through its proxy).
pub fn jupyter_user_as(
    dir: &Path,
    base_url: &str,
    token: &str,
    action: &str,
    every_secs: u32,
) -> Proc {
    let python = jupyter().with_file_name("python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers/jupyter_user.py");
    Proc::spawn(
        action,
        Command::new(python)
            .arg(script)
            .arg(base_url)
            .arg(token)
            .arg(action)
            .arg(every_secs.to_string()),
        &dir.join(format!("driver-{action}-{}.log", free_port())),
    )
}

/// Runs a driver action that finishes by itself (compute-*, rest-kernel).
pub fn jupyter_user_once(base_url: &str, action: &str) {
    jupyter_user_once_as(base_url, JUPYTER_TOKEN, action)
}

/// As [`jupyter_user_once`], with another token (a Hub's, through its proxy).
pub fn jupyter_user_once_as(base_url: &str, token: &str, action: &str) {
    let python = jupyter().with_file_name("python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers/jupyter_user.py");
    let out = Command::new(python)
        .arg(script)
        .arg(base_url)
        .arg(token)
        .arg(action)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "driver {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!(
        "driver {action} at {base_url}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}
