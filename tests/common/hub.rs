//! A real JupyterHub on loopback: the Hub's API and its proxy
//! (configurable-http-proxy), `SimpleLocalProcessSpawner` starting real
//! single-user servers (jupyter_server 2.x, `jupyterhub-singleuser`), named
//! servers allowed, and nbidle registered as a service holding only the
//! scopes a test gives it. A second service, the test's own, holds admin
//! scopes to create users and start servers as people would.
#![allow(
    dead_code,
    reason = "each test binary compiles tests/common whole and uses a part of it"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::proc::{eventually, free_port, wait_ready, Proc};

/// nbidle's service token at the Hub.
pub const HUB_SERVICE_TOKEN: &str = "nbidle-service-token-for-tests";
/// The test's own admin token at the Hub.
pub const HUB_ADMIN_TOKEN: &str = "hub-admin-token-for-tests";

/// The scopes docs/jupyterhub.md gives nbidle.
pub const HUB_SCOPES: [&str; 3] = ["list:users", "servers", "tokens"];

fn cache_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(std::env::var("NBIDLE_CACHE").unwrap_or_else(|_| format!("{home}/.cache/nbidle")))
}

/// A component `scripts/hub-deps.sh` installs, from its variable or the cache.
fn hub_component(var: &str, cached: &str) -> PathBuf {
    let p = std::env::var(var)
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache_dir().join(cached));
    assert!(
        p.exists(),
        "missing {var} at {}: run `bash scripts/hub-deps.sh`",
        p.display()
    );
    p
}

/// `jupyterhub` from the test venv.
pub fn jupyterhub() -> PathBuf {
    hub_component("NBIDLE_JUPYTERHUB", "venv/bin/jupyterhub")
}

/// npm's `configurable-http-proxy`.
pub fn chp() -> PathBuf {
    hub_component(
        "NBIDLE_CHP",
        "hub/node_modules/.bin/configurable-http-proxy",
    )
}

/// What a test changes in the Hub.
pub struct HubOptions {
    /// nbidle's service's scopes.
    pub scopes: Vec<String>,
    /// The API's default and largest page (`None`: the Hub's own).
    pub page_size: Option<u32>,
    /// More services: name, token, scopes.
    pub services: Vec<(String, String, Vec<String>)>,
    /// Whether nbidle is registered (with [`HUB_SERVICE_TOKEN`] and
    /// `scopes`); `false` for a test that registers it with `extra_config`.
    pub register_nbidle: bool,
    /// Servers that are only an address, the port of one HTTP stand-in
    /// for all (tests/hub/standin_spawner.py), instead of real single-user
    /// servers.
    pub stand_ins: Option<u16>,
    /// Lines appended to `jupyterhub_config.py`.
    pub extra_config: String,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            scopes: HUB_SCOPES.iter().map(|s| s.to_string()).collect(),
            page_size: None,
            services: Vec::new(),
            register_nbidle: true,
            stand_ins: None,
            extra_config: String::new(),
        }
    }
}

/// A running JupyterHub, stopped (with its servers) when dropped.
pub struct Hub {
    pub proc: Option<Proc>,
    /// The Hub's REST API, ending in `/`.
    pub api_url: String,
    /// The proxy's public URL, ending in `/`.
    pub public_url: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub http: reqwest::Client,
    runs: u32,
}

/// A Python string literal.
fn py(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl Hub {
    /// Writes the Hub's config into `dir` (`jupyterhub_config.py`) and starts it.
    pub async fn start(dir: &Path, opts: HubOptions) -> Hub {
        let dir = dir.join("hub");
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let (public, proxy_api, hub_port) = (free_port(), free_port(), free_port());
        let singleuser = jupyterhub().with_file_name("jupyterhub-singleuser");
        assert!(
            singleuser.exists(),
            "missing {}: run `bash scripts/hub-deps.sh`",
            singleuser.display()
        );
        let mut services = String::new();
        let mut roles = String::new();
        let mut registered = opts.services.clone();
        if opts.register_nbidle {
            registered.insert(
                0,
                (
                    "nbidle".into(),
                    HUB_SERVICE_TOKEN.into(),
                    opts.scopes.clone(),
                ),
            );
        }
        for (name, token, scopes) in &registered {
            services.push_str(&format!(
                "    {{\"name\": {}, \"api_token\": {}}},\n",
                py(name),
                py(token)
            ));
            roles.push_str(&format!(
                "    {{\"name\": {}, \"services\": [{}], \"scopes\": {}}},\n",
                py(&if name == "nbidle" {
                    name.clone()
                } else {
                    format!("{name}-role")
                }),
                py(name),
                serde_json::to_string(scopes).unwrap()
            ));
        }
        let pages = opts
            .page_size
            .map(|n| format!("c.JupyterHub.api_page_default_limit = {n}\nc.JupyterHub.api_page_max_limit = {n}\n"))
            .unwrap_or_default();
        let spawner = match opts.stand_ins {
            Some(port) => format!(
                "import sys\nsys.path.insert(0, {})\nc.JupyterHub.spawner_class = \"standin_spawner.StandInSpawner\"\nc.StandInSpawner.standin_port = {port}",
                py(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hub"))
            ),
            None => format!(
                "c.JupyterHub.spawner_class = \"simple\"\nc.SimpleLocalProcessSpawner.home_dir_template = {}\nc.Spawner.cmd = [{}]\nc.Spawner.args = [\"--allow-root\"]",
                py(&format!("{}/home/{{username}}", dir.display())),
                py(&singleuser.display().to_string()),
            ),
        };
        let config = format!(
            r#"c = get_config()
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.ConfigurableHTTPProxy.command = [{chp}]
c.JupyterHub.db_url = "sqlite:///" + {db}
c.JupyterHub.cookie_secret_file = {cookie}
c.JupyterHub.pid_file = {pid}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.allow_named_servers = True
{spawner}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [
    {{"name": "tests", "api_token": {admin_token}}},
{services}]
c.JupyterHub.load_roles = [
    {{"name": "tests", "services": ["tests"], "scopes": ["admin:users", "admin:servers", "list:users", "read:servers", "servers", "access:servers"]}},
{roles}]
{pages}
{extra}
"#,
            spawner = spawner,
            extra = opts.extra_config,
            chp = py(&chp().display().to_string()),
            db = py(&dir.join("hub.sqlite").display().to_string()),
            cookie = py(&dir.join("cookie_secret").display().to_string()),
            pid = py(&dir.join("proxy.pid").display().to_string()),
            admin_token = py(HUB_ADMIN_TOKEN),
        );
        let path = dir.join("jupyterhub_config.py");
        std::fs::write(&path, config).unwrap();
        let mut hub = Hub {
            proc: None,
            api_url: format!("http://127.0.0.1:{hub_port}/hub/api/"),
            public_url: format!("http://127.0.0.1:{public}/"),
            dir,
            config: path,
            http: reqwest::Client::new(),
            runs: 0,
        };
        hub.run().await;
        hub
    }

    /// Starts the Hub's process (again) on its config and database.
    pub async fn run(&mut self) {
        self.runs += 1;
        let log = self.dir.join(format!("hub-{}.log", self.runs));
        let mut cmd = Command::new(jupyterhub());
        cmd.arg("-f").arg(&self.config).current_dir(&self.dir);
        self.proc = Some(Proc::spawn("jupyterhub", &mut cmd, &log));
        wait_ready("the Hub's API", &self.api_url, Duration::from_secs(60)).await;
        wait_ready(
            "the Hub behind its proxy",
            &format!("{}hub/api/", self.public_url),
            Duration::from_secs(30),
        )
        .await;
    }

    /// Freezes (`true`) or thaws the Hub's process: a Hub that does not
    /// answer, its proxy and servers left running.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.proc.as_ref().expect("the Hub runs").pid();
        let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: a signal to the Hub's own process, which this test started.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Stops the Hub (its servers and proxy end with it).
    pub fn halt(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }

    /// Every log the Hub wrote, for failure messages.
    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("hub-{n}.log"))).unwrap_or_default()
            })
            .collect()
    }

    /// A call to the Hub's API with the test's admin token.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .header("Authorization", format!("token {HUB_ADMIN_TOKEN}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Creates users (through the API, as an admin would).
    pub async fn create_users(&self, names: &[&str]) {
        let (status, body) = self
            .admin(Method::POST, "users", Some(json!({"usernames": names})))
            .await;
        assert!(status.is_success(), "creating users: {status} {body}");
    }

    /// `user`'s server `server` (`""`: the default one) as the Hub has it.
    pub async fn server(&self, user: &str, server: &str) -> Option<Value> {
        let (status, body) = self
            .admin(
                Method::GET,
                &format!("users/{user}?include_stopped_servers"),
                None,
            )
            .await;
        assert!(status.is_success(), "GET user {user}: {status} {body}");
        body["servers"].get(server).cloned()
    }

    /// Starts `user`'s server and waits until the Hub says it is ready.
    pub async fn start_server(&self, user: &str, server: &str, options: Option<Value>) {
        let path = if server.is_empty() {
            format!("users/{user}/server")
        } else {
            format!("users/{user}/servers/{server}")
        };
        let (status, body) = self.admin(Method::POST, &path, options).await;
        assert!(
            status.is_success(),
            "starting {user}/{server}: {status} {body}\n{}",
            self.log()
        );
        self.wait_ready(user, server).await;
    }

    /// Waits until `user`'s server is ready.
    pub async fn wait_ready(&self, user: &str, server: &str) {
        eventually(
            &format!("{user}/{server} ready"),
            Duration::from_secs(120),
            || async {
                self.server(user, server)
                    .await
                    .filter(|s| s["ready"] == true && s["pending"].is_null())
            },
        )
        .await;
    }

    /// The `backend` section nbidle needs for this Hub.
    pub fn backend(&self) -> Value {
        json!({
            "kind": "jupyterhub",
            "jupyterhub": {
                "api_url": self.api_url,
                "public_url": self.public_url,
                "token": HUB_SERVICE_TOKEN,
                "request_timeout": "5s",
            },
        })
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if self.proc.is_some() {
            self.freeze(false);
        }
        self.halt();
    }
}
