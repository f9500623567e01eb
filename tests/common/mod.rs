//! Test support: real Prometheus, Alertmanager, Jupyter and nbidle processes
//! on loopback, each killed when its guard drops.
//!
//! A missing component fails the test with the command that installs it;
//! nothing is skipped. `make test` runs `scripts/test-deps.sh` first.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod envtest;
pub mod kubectl;

pub const API_TOKEN: &str = "api-token-for-tests";
pub const WEBHOOK_TOKEN: &str = "webhook-token-for-tests";
pub const JUPYTER_TOKEN: &str = "jupyter-token-for-tests";

/// Finds an executable on PATH (or at an absolute path), or fails the test.
pub fn tool(names: &[&str]) -> PathBuf {
    for name in names {
        let p = Path::new(name);
        if p.is_absolute() && p.exists() {
            return p.to_path_buf();
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let c = dir.join(name);
                if c.is_file() {
                    return c;
                }
            }
        }
    }
    panic!("missing {names:?}: run `bash scripts/test-deps.sh` (as root) to install the test components");
}

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that gets SIGTERM (then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            name: name.into(),
            child,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Polls `f` until it returns Some, or fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `url` answers with a 2xx status.
pub async fn wait_ready(what: &str, url: &str, timeout: Duration) {
    let http = reqwest::Client::new();
    eventually(what, timeout, || {
        let (http, url) = (http.clone(), url.to_string());
        async move {
            http.get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
}

/// A notebook entry of the nbidle config.
pub struct NotebookSpec {
    pub name: String,
    pub command: Vec<String>,
    pub url: String,
    pub autostop: bool,
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

/// A stand-in notebook process (for webhook semantics, not Jupyter's).
pub fn sleeper(name: &str) -> NotebookSpec {
    NotebookSpec {
        name: name.into(),
        command: vec!["sleep".into(), "3600".into()],
        url: format!("http://127.0.0.1:{}/", free_port()),
        autostop: true,
    }
}

pub struct Nbidle {
    pub proc: Proc,
    pub url: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub http: reqwest::Client,
}

pub struct NbidleOptions {
    pub idle_after: &'static str,
    pub dry_run: bool,
    pub extra_auth: &'static str,
    pub stop_on_exit: bool,
}

impl Default for NbidleOptions {
    fn default() -> Self {
        NbidleOptions {
            idle_after: "20s",
            dry_run: false,
            extra_auth: "",
            stop_on_exit: true,
        }
    }
}

impl Nbidle {
    pub fn config_yaml(
        port: u16,
        dir: &Path,
        notebooks: &[NotebookSpec],
        opts: &NbidleOptions,
    ) -> String {
        let mut nbs = String::new();
        for n in notebooks {
            nbs.push_str(&format!(
                "      - name: {}\n        command: {}\n        workdir: {}\n        url: {:?}\n        token: {JUPYTER_TOKEN}\n        autostop: {}\n",
                n.name,
                serde_json::to_string(&n.command).unwrap(),
                dir.join("workspaces").join(&n.name).display(),
                n.url,
                n.autostop
            ));
        }
        format!(
            r#"listen: "127.0.0.1:{port}"
data_dir: {data}
auth:
  webhook_token: "{WEBHOOK_TOKEN}"
  api_tokens: ["{API_TOKEN}"]
{extra_auth}autostop:
  enabled: true
  idle_after: {idle}
  evaluation_interval: 1s
  warn_before: 5s
  dry_run: {dry}
exporter:
  interval: 1s
  timeout: 2s
prometheus:
  enabled: true
alertmanager:
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1m
backend:
  kind: local
  local:
    stop_grace_period: 5s
    stop_on_exit: {stop_on_exit}
    notebooks:
{nbs}"#,
            data = dir.join("data").display(),
            idle = opts.idle_after,
            dry = opts.dry_run,
            extra_auth = opts.extra_auth,
            stop_on_exit = opts.stop_on_exit,
        )
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
        let log = dir.join(format!("{tag}.log"));
        let proc = Proc::spawn(tag, &mut cmd, &log);
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

    pub async fn notebook(&self, name: &str) -> Value {
        self.notebook_in("local", name).await
    }

    /// A notebook by `namespace/name`, which must exist.
    pub async fn notebook_in(&self, namespace: &str, name: &str) -> Value {
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

    pub async fn wait_status(&self, name: &str, status: &str, timeout: Duration) -> Value {
        self.wait_status_in("local", name, status, timeout).await
    }

    pub async fn wait_status_in(
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
                let v = self.notebook_in(namespace, name).await;
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

/// An Alertmanager webhook payload (version 4) with the given alerts.
pub fn payload(alerts: Vec<Value>) -> Value {
    serde_json::json!({
        "version": "4",
        "groupKey": "{}/{nbidle_action=\"stop\"}:{namespace=\"local\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "nbidle",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    })
}

pub fn idle_alert(notebook: &str, starts_at: &str) -> Value {
    idle_alert_in("local", notebook, starts_at)
}

pub fn idle_alert_in(namespace: &str, notebook: &str, starts_at: &str) -> Value {
    serde_json::json!({
        "status": "firing",
        "labels": {"alertname": "NotebookIdle", "namespace": namespace, "notebook": notebook, "nbidle_action": "stop", "severity": "info"},
        "annotations": {"summary": "idle"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": format!("fp-{notebook}"),
    })
}

/// RFC 3339 for `secs` seconds from now (negative: in the past).
pub fn rfc3339_from_now(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
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

/// A real Alertmanager with nbidle's generated config.
pub struct Alertmanager {
    pub proc: Proc,
    pub url: String,
}

impl Alertmanager {
    pub async fn start(dir: &Path, nbidle_config: &Path) -> Alertmanager {
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(
            &cfg,
            nbidle_cli(&[
                "manifests",
                "alertmanager",
                "--config",
                nbidle_config.to_str().unwrap(),
            ]),
        )
        .unwrap();
        let port = free_port();
        let bin = tool(&["prometheus-alertmanager", "alertmanager"]);
        let proc = Proc::spawn(
            "alertmanager",
            Command::new(bin)
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.path={}", dir.join("am-data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // No cluster: a single instance on loopback.
                .arg("--cluster.listen-address="),
            &dir.join("alertmanager.log"),
        );
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(
            "alertmanager ready",
            &format!("{url}/-/ready"),
            Duration::from_secs(30),
        )
        .await;
        Alertmanager { proc, url }
    }
}

/// A real Prometheus scraping nbidle's notebooks (found through nbidle's
/// service discovery) and nbidle itself, with nbidle's generated rules.
pub struct Prometheus {
    pub proc: Proc,
    pub url: String,
    pub http: reqwest::Client,
}

impl Prometheus {
    pub async fn start(dir: &Path, nbidle: &Nbidle, alertmanager: &Alertmanager) -> Prometheus {
        let cfg_path = nbidle.config.to_str().unwrap();
        let rules = dir.join("nbidle.rules.yml");
        std::fs::write(&rules, nbidle_cli(&["rules", "--config", cfg_path])).unwrap();
        let scrape = nbidle_cli(&["manifests", "prometheus-scrape", "--config", cfg_path]);
        let scrape: serde_yaml::Value = serde_yaml::from_str(&scrape).unwrap();
        let mut jobs = scrape["scrape_configs"].as_sequence().unwrap().clone();
        jobs.push(
            serde_yaml::from_str(&format!(
                "{{job_name: nbidle, scrape_interval: 1s, static_configs: [{{targets: ['{}']}}]}}",
                nbidle.url.trim_start_matches("http://")
            ))
            .unwrap(),
        );
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules.display().to_string()],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.url.trim_start_matches("http://")]}]}]},
            "scrape_configs": jobs,
        });
        // Send an alert again 1s after a failed or lost delivery.
        Self::launch(dir, &config, &["--rules.alert.resend-delay=1s"]).await
    }

    /// Writes `config` to `<dir>/prometheus.yml` and runs Prometheus on it;
    /// returns once it is ready.
    async fn launch(dir: &Path, config: &Value, extra_args: &[&str]) -> Prometheus {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, serde_yaml::to_string(config).unwrap()).unwrap();
        let port = free_port();
        let proc = Proc::spawn(
            "prometheus",
            Command::new(tool(&["prometheus"]))
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("prom-data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args(extra_args),
            &dir.join("prometheus.log"),
        );
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(
            "prometheus ready",
            &format!("{url}/-/ready"),
            Duration::from_secs(30),
        )
        .await;
        Prometheus {
            proc,
            url,
            http: reqwest::Client::new(),
        }
    }

    /// Runs an instant query; Err carries Prometheus's error message.
    pub async fn query(&self, q: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(
                reqwest::Url::parse_with_params(
                    &format!("{}/api/v1/query", self.url),
                    &[("query", q)],
                )
                .unwrap(),
            )
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if v["status"] == "success" {
            Ok(v["data"]["result"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }
}

/// Runs `tests/drivers/jupyter_user.py ACTION` against a notebook with the
/// venv's Python; the process is killed when the guard drops.
pub fn jupyter_user(dir: &Path, base_url: &str, action: &str, every_secs: u32) -> Proc {
    let python = jupyter().with_file_name("python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers/jupyter_user.py");
    Proc::spawn(
        action,
        Command::new(python)
            .arg(script)
            .arg(base_url)
            .arg(JUPYTER_TOKEN)
            .arg(action)
            .arg(every_secs.to_string()),
        &dir.join(format!("driver-{action}-{}.log", free_port())),
    )
}

/// Runs a driver action that finishes by itself (compute-*, rest-kernel).
pub fn jupyter_user_once(base_url: &str, action: &str) {
    let python = jupyter().with_file_name("python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers/jupyter_user.py");
    let out = Command::new(python)
        .arg(script)
        .arg(base_url)
        .arg(JUPYTER_TOKEN)
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

impl Prometheus {
    /// A real Prometheus with only these scrape jobs (no rules, no
    /// Alertmanager), scraping every second.
    pub async fn start_with_jobs(dir: &Path, jobs: Vec<serde_yaml::Value>) -> Prometheus {
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": jobs,
        });
        Self::launch(dir, &config, &[]).await
    }

    /// `/api/v1/targets`' active targets.
    pub async fn active_targets(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/targets?state=active", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Nbidle {
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
        let log = dir.join(format!("{tag}.log"));
        let proc = Proc::spawn(tag, &mut cmd, &log);
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
}

impl Proc {
    /// Takes charge of a child spawned with its own stdio (a terminal, a
    /// pipe): SIGTERM (then SIGKILL) when dropped.
    pub fn adopt(name: &str, child: Child) -> Proc {
        Proc {
            name: name.into(),
            child,
        }
    }

    /// The exit status, once the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}
