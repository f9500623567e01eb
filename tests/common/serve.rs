//! The nbidle binary under test: its config as a value, `nbidle serve` run
//! in several ways, and calls to its API, webhook and metrics.
#![allow(
    dead_code,
    reason = "each test binary compiles tests/common whole and uses a part of it"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::jupyter::JUPYTER_TOKEN;
use super::proc::{eventually, free_port, wait_ready, Proc};

pub const API_TOKEN: &str = "api-token-for-tests";
pub const WEBHOOK_TOKEN: &str = "webhook-token-for-tests";

/// A notebook entry of the nbidle config.
pub struct NotebookSpec {
    pub name: String,
    pub command: Vec<String>,
    pub url: String,
    pub autostop: bool,
}

impl NotebookSpec {
    /// The entry of `backend.local.notebooks`, its workspace under `dir`.
    fn config(&self, dir: &Path) -> Value {
        json!({
            "name": self.name,
            "command": self.command,
            "workdir": dir.join("workspaces").join(&self.name),
            "url": self.url,
            "token": JUPYTER_TOKEN,
            "autostop": self.autostop,
        })
    }
}

/// A stand-in notebook process (for webhook semantics, not Jupyter's).
pub fn sleeper(name: &str) -> NotebookSpec {
    NotebookSpec {
        name: name.into(),
        command: vec!["sleep".into(), "3600".into()],
        url: format!("http://127.0.0.1:{}/", free_port()),
        autostop: true,
    }
}

/// What a test changes in [`nbidle_config`].
pub struct NbidleOptions {
    pub idle_after: &'static str,
    pub dry_run: bool,
    /// Keys added to the `auth` section (an object; `Null` adds none).
    pub extra_auth: Value,
    pub stop_on_exit: bool,
}

impl Default for NbidleOptions {
    fn default() -> Self {
        NbidleOptions {
            idle_after: "20s",
            dry_run: false,
            extra_auth: Value::Null,
            stop_on_exit: true,
        }
    }
}

/// nbidle's config for a test: listening on loopback `port`, state and
/// workspaces under `dir`, the local backend with `notebooks`, every
/// interval short. Tests adjust the value before writing it out.
pub fn nbidle_config(
    port: u16,
    dir: &Path,
    notebooks: &[NotebookSpec],
    opts: &NbidleOptions,
) -> Value {
    let mut auth = json!({"webhook_token": WEBHOOK_TOKEN, "api_tokens": [API_TOKEN]});
    match &opts.extra_auth {
        Value::Null => {}
        Value::Object(extra) => auth.as_object_mut().unwrap().extend(extra.clone()),
        other => panic!("NbidleOptions::extra_auth must be an object, not {other}"),
    }
    let notebooks: Vec<Value> = notebooks.iter().map(|n| n.config(dir)).collect();
    json!({
        "listen": format!("127.0.0.1:{port}"),
        "data_dir": dir.join("data"),
        "auth": auth,
        "autostop": {
            "enabled": true,
            "idle_after": opts.idle_after,
            "evaluation_interval": "1s",
            "warn_before": "5s",
            "dry_run": opts.dry_run,
        },
        "exporter": {"interval": "1s", "timeout": "2s"},
        "prometheus": {"enabled": true},
        "alertmanager": {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1m"},
        "backend": {
            "kind": "local",
            "local": {
                "stop_grace_period": "5s",
                "stop_on_exit": opts.stop_on_exit,
                "notebooks": notebooks,
            },
        },
    })
}

/// A running `nbidle serve`, killed when dropped.
pub struct Nbidle {
    pub proc: Proc,
    pub url: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub http: reqwest::Client,
}

impl Nbidle {
    /// The YAML text of [`nbidle_config`].
    pub fn config_yaml(
        port: u16,
        dir: &Path,
        notebooks: &[NotebookSpec],
        opts: &NbidleOptions,
    ) -> String {
        serde_yaml::to_string(&nbidle_config(port, dir, notebooks, opts)).unwrap()
    }

    pub async fn start(dir: &Path, notebooks: &[NotebookSpec], opts: NbidleOptions) -> Nbidle {
        let port = free_port();
        let yaml = Self::config_yaml(port, dir, notebooks, &opts);
        Self::start_yaml(dir, "nbidle", port, &yaml, &[]).await
    }

    /// Runs `nbidle serve` on `yaml` (which must listen on `port`), with
    /// extra environment; config and log are `<dir>/<tag>.yaml|.log`.
    pub async fn start_yaml(
        dir: &Path,
        tag: &str,
        port: u16,
        yaml: &str,
        env: &[(&str, &str)],
    ) -> Nbidle {
        Self::start_wrapped(dir, tag, port, yaml, env, &[]).await
    }

    /// As `start_yaml`, with nbidle run by a wrapper command (`wrap` then
    /// nbidle's own arguments), e.g. `prlimit --nofile=256:256 --`.
    pub async fn start_wrapped(
        dir: &Path,
        tag: &str,
        port: u16,
        yaml: &str,
        env: &[(&str, &str)],
        wrap: &[&str],
    ) -> Nbidle {
        let config = dir.join(format!("{tag}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let bin = env!("CARGO_BIN_EXE_nbidle");
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("serve").arg("--config").arg(&config).env(
            "NBIDLE_LOG",
            "debug,hyper=info,kube=info,tower=info,rustls=info",
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn_ready(dir, tag, port, config, &mut cmd).await
    }

    /// Runs nbidle with exactly `args` (every `{config}` replaced by the
    /// config's path) and exactly `env`: nothing of the test's environment,
    /// as a container would. Config and log are `<dir>/<tag>.yaml|.log`.
    pub async fn start_exact(
        dir: &Path,
        tag: &str,
        port: u16,
        yaml: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Nbidle {
        let config = dir.join(format!("{tag}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let config_arg = config.display().to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nbidle"));
        cmd.args(args.iter().map(|a| a.replace("{config}", &config_arg)))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn_ready(dir, tag, port, config, &mut cmd).await
    }

    /// Spawns `cmd` logging to `<dir>/<tag>.log`; returns once `/readyz`
    /// on `port` says ready.
    async fn spawn_ready(
        dir: &Path,
        tag: &str,
        port: u16,
        config: PathBuf,
        cmd: &mut Command,
    ) -> Nbidle {
        let log = dir.join(format!("{tag}.log"));
        let proc = Proc::spawn(tag, cmd, &log);
        let nb = Nbidle {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            config,
            log,
            http: reqwest::Client::new(),
        };
        wait_ready(
            &format!("{tag} ready"),
            &format!("{}/readyz", nb.url),
            Duration::from_secs(30),
        )
        .await;
        nb
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1/{}", self.url, path)
    }

    /// `GET /api/v1/notebooks`, which must succeed.
    pub async fn list(&self) -> Value {
        let r = self
            .http
            .get(self.api("notebooks"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET notebooks: {}", r.status());
        r.json().await.unwrap()
    }

    /// The notebook `namespace/name` (`local` for the local backend), which
    /// must exist.
    pub async fn notebook(&self, namespace: &str, name: &str) -> Value {
        let r = self
            .http
            .get(self.api(&format!("notebooks/{namespace}/{name}")))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "GET notebook {name}: {}",
            r.status()
        );
        r.json().await.unwrap()
    }

    /// Polls the notebook `namespace/name` until its status is `status`.
    pub async fn wait_status(
        &self,
        namespace: &str,
        name: &str,
        status: &str,
        timeout: Duration,
    ) -> Value {
        eventually(
            &format!("{namespace}/{name} to be {status}"),
            timeout,
            || async {
                let v = self.notebook(namespace, name).await;
                (v["status"] == status).then_some(v)
            },
        )
        .await
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(self.api(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn webhook(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/webhook/alertmanager", self.url))
            .bearer_auth(WEBHOOK_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The value of one sample of nbidle's own /metrics, 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The text of `/metrics/notebooks`.
    pub async fn exporter_metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics/notebooks", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Runs the nbidle binary with arguments and returns its stdout.
pub fn nbidle_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nbidle"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nbidle {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
