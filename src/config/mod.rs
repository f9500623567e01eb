//! The YAML configuration and its validation.
//!
//! Parsing is strict: unknown keys are errors, and every error names the
//! dotted path of the key at fault (`backend.local.notebooks[1].name`), so
//! `nbidle check` can tell an operator exactly what to fix.
//!
//! Each section is a type in a file of its own (`server`, `auth`,
//! `autostop`, `exporter`, `prometheus`, `alertmanager`, `webhook`,
//! `kubernetes`, `notify`, `backend`), with its defaults as its `Default` and a
//! `validate` that names its keys; `values` holds what several share.
//! This file reads the document, checks what spans sections, and turns
//! the file as written into [`Config`]: `listen` a [`SocketAddr`], the
//! backend the one section its kind names (`BackendConfig`).
//!
//! Relative paths (`data_dir`, `workdir`, `*_file`) are resolved against the
//! directory of the config file, as Prometheus does for `rule_files`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

mod alertmanager;
mod auth;
mod autosave;
mod autostop;
mod backend;
mod exporter;
mod kubernetes;
mod notify;
mod prometheus;
mod secrets;
mod server;
mod values;
mod webhook;

pub(crate) use alertmanager::AlertmanagerConfig;
pub(crate) use auth::AuthConfig;
pub(crate) use autostop::{AutostopConfig, CpuGuard, GpuGuard, SignalName};
pub(crate) use backend::{
    BackendConfig, BackendKind, JupyterHubConfig, LocalConfig, LocalNotebook, StatefulSetConfig,
};
pub use exporter::ExporterConfig;
pub(crate) use kubernetes::KubernetesConfig;
pub(crate) use notify::NotifyConfig;
pub(crate) use prometheus::PrometheusConfig;
pub(crate) use secrets::SecretFiles;
pub(crate) use server::{ServerConfig, MIN_HEADER_BYTES};
pub(crate) use values::check_notebook_name;
pub use values::HumanDuration;
pub(crate) use values::{prometheus_duration, TlsClientConfig};
pub(crate) use webhook::WebhookConfig;

use backend::BackendSection;

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the HTTP server (webhook, REST API, /metrics).
    pub(crate) listen: SocketAddr,
    /// Where nbidle keeps its small state (which notebooks it stopped, when).
    pub(crate) data_dir: PathBuf,
    pub(crate) auth: AuthConfig,
    pub(crate) autostop: AutostopConfig,
    pub(crate) prometheus: PrometheusConfig,
    pub(crate) webhook: WebhookConfig,
    pub(crate) alertmanager: AlertmanagerConfig,
    pub(crate) exporter: ExporterConfig,
    pub(crate) kubernetes: KubernetesConfig,
    pub(crate) server: ServerConfig,
    pub(crate) notify: NotifyConfig,
    pub(crate) backend: BackendConfig,
}

/// The file as written; [`Document::validate`] makes a [`Config`] of it.
/// Serde's messages name the type they expected, and to the reader of
/// an error the file is a `Config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "struct Config")]
struct Document {
    #[serde(default = "Document::default_listen")]
    listen: String,
    #[serde(default = "Document::default_data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    autostop: AutostopConfig,
    #[serde(default)]
    prometheus: PrometheusConfig,
    #[serde(default)]
    webhook: WebhookConfig,
    #[serde(default)]
    alertmanager: AlertmanagerConfig,
    #[serde(default)]
    exporter: ExporterConfig,
    #[serde(default)]
    kubernetes: KubernetesConfig,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    notify: NotifyConfig,
    backend: BackendSection,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_yaml(&text, base)
    }

    /// Parses and validates YAML; relative paths resolve against `base`.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Config> {
        // serde_path_to_error tracks the full key path, also into values that
        // custom deserializers (durations, labels) reject.
        let de = serde_yaml::Deserializer::from_str(text);
        let mut doc: Document = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(document)".to_string()
            } else {
                path
            };
            Error::config(field, e.into_inner().to_string())
        })?;
        doc.check_paths_given()?;
        doc.resolve_paths(base);
        doc.validate()
    }

    /// Refuses features the chosen backend cannot feed (a guard that could
    /// never veto): for `serve`, `check`, and the generated rules and
    /// manifests alike.
    pub(crate) fn check_backend_fit(&self) -> Result<()> {
        let g = &self.autostop.guards;
        if self.backend.kind() == BackendKind::Jupyterhub {
            // Prometheus cannot scrape a Hub's servers (their /metrics wants a
            // Hub token): the exporter's probes are the only activity signal.
            if !self.exporter.enabled {
                return Err(Error::config(
                    "exporter.enabled",
                    "must be true with the jupyterhub backend: its probes are the only activity nbidle sees on a Hub's servers; without them nothing would ever be stopped",
                ));
            }
            for (key, set) in [
                ("autostop.guards.cpu", g.cpu.is_some()),
                ("autostop.guards.gpu", g.gpu.is_some()),
            ] {
                if set {
                    return Err(Error::config(
                        key,
                        "needs pod series (nbidle_notebook_pod_info), which the jupyterhub backend has none of; it would never keep a notebook running",
                    ));
                }
            }
        }
        if self.backend.kind() == BackendKind::Local {
            if g.gpu.is_some() {
                return Err(Error::config(
                    "autostop.guards.gpu",
                    "needs pod series (nbidle_notebook_pod_info), which the local backend has none of; it would never keep a notebook running",
                ));
            }
            if g.cpu.is_some() && !self.exporter.enabled {
                return Err(Error::config(
                    "autostop.guards.cpu",
                    "reads the notebooks' process CPU (nbidle_notebook_cpu_seconds_total) from nbidle's exporter on the local backend; it needs exporter.enabled: true",
                ));
            }
        }
        Ok(())
    }

    /// nbidle's page for people (`server.external_url`, normalised, or a
    /// loopback `listen`'s own URL).
    pub(crate) fn page_url(&self) -> Option<String> {
        self.server.page_url(self.listen)
    }

    /// The default idle time and the admin's bounds for overrides.
    pub(crate) fn idle_bounds(&self) -> crate::notebook::IdleBounds {
        self.autostop.idle_bounds()
    }
}

impl Document {
    fn default_listen() -> String {
        "127.0.0.1:9877".into()
    }

    fn default_data_dir() -> PathBuf {
        PathBuf::from("data/nbidle")
    }

    /// An empty path would resolve to the config file's own directory
    /// (state written among the configs, a notebook run there), so each is
    /// refused before paths are resolved.
    fn check_paths_given(&self) -> Result<()> {
        let mut paths = vec![("data_dir".to_string(), self.data_dir.as_path())];
        paths.extend(self.auth.files());
        if let Some(local) = &self.backend.local {
            paths.extend(local.workdirs().map(|(key, p)| (key, p.as_path())));
        }
        if let Some(p) = self
            .backend
            .jupyterhub
            .as_ref()
            .and_then(|h| h.token_file.as_ref())
        {
            paths.push(("backend.jupyterhub.token_file".into(), p.as_path()));
        }
        for (key, p) in paths {
            if p.as_os_str().is_empty() {
                return Err(Error::config(key, "must not be empty"));
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let mut paths = vec![&mut self.data_dir];
        paths.extend(self.server.web_config_file.as_mut());
        paths.extend(self.auth.files_mut());
        if let Some(local) = self.backend.local.as_mut() {
            paths.extend(local.workdirs_mut());
        }
        paths.extend(
            self.backend
                .jupyterhub
                .as_mut()
                .and_then(|h| h.token_file.as_mut()),
        );
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Each section checks itself; what spans sections is checked here.
    fn validate(self) -> Result<Config> {
        let listen = self.listen.parse::<SocketAddr>().map_err(|e| {
            Error::config("listen", format!("{:?} is not host:port: {e}", self.listen))
        })?;
        self.autostop.validate()?;
        if self.autostop.signals.contains(&SignalName::Activity) && !self.exporter.enabled {
            return Err(Error::config(
                "autostop.signals",
                "the activity signal needs exporter.enabled: true",
            ));
        }
        self.exporter.validate()?;
        self.kubernetes.validate()?;
        self.prometheus.validate()?;
        self.alertmanager.validate()?;
        self.webhook.validate()?;
        self.server.validate()?;
        self.notify.validate()?;
        self.auth.validate()?;
        if self.kubernetes.apply && !self.backend.kind().is_kubernetes() {
            return Err(Error::config(
                "kubernetes.apply",
                "applies objects to a cluster; it needs backend.kind kubeflow or statefulset",
            ));
        }
        let mut autostop = self.autostop;
        let local_cpu = self.backend.kind() == BackendKind::Local && self.exporter.enabled;
        autostop.guards.cpu = autostop
            .guards
            .effective_cpu(local_cpu, autostop.evaluation_interval.0);
        Ok(Config {
            listen,
            data_dir: self.data_dir,
            auth: self.auth,
            autostop,
            prometheus: self.prometheus,
            webhook: self.webhook,
            alertmanager: self.alertmanager,
            exporter: self.exporter,
            kubernetes: self.kubernetes,
            server: self.server,
            notify: self.notify,
            backend: self.backend.validate()?,
        })
    }
}

/// What the sections' tests share: a small valid config and its parsing.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) const MINIMAL: &str = r#"
auth:
  webhook_token: "wh"
  api_tokens: ["api"]
backend:
  kind: local
  local:
    notebooks:
      - name: demo
        command: ["jupyter", "lab"]
        workdir: "ws/demo"
        url: "http://127.0.0.1:8888/"
"#;

    pub(crate) fn parse(yaml: &str) -> Result<Config> {
        Config::from_yaml(yaml, Path::new("/etc/nbidle"))
    }

    /// The key a config error names; panics on anything else.
    pub(crate) fn err_field(yaml: &str) -> String {
        match parse(yaml) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::{err_field, parse, MINIMAL};
    use super::*;

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.autostop.idle_after.0, Duration::from_secs(1800));
        assert_eq!(c.autostop.evaluation_interval.0, Duration::from_secs(60));
        assert!(c.autostop.enabled && c.prometheus.enabled);
        assert_eq!(c.data_dir, PathBuf::from("/etc/nbidle/data/nbidle"));
        let BackendConfig::Local(local) = &c.backend else {
            panic!("{:?}", c.backend)
        };
        let nb = &local.notebooks[0];
        assert_eq!(nb.workdir, PathBuf::from("/etc/nbidle/ws/demo"));
        assert!(nb.autostop);
        let s = c.secrets().unwrap();
        assert_eq!(s.webhook_token.as_deref(), Some("wh"));
        assert_eq!(s.api_tokens, vec!["api".to_string()]);
    }

    #[test]
    fn unknown_key_names_its_parent() {
        let y = MINIMAL.replace("auth:", "autostop:\n  idel_after: 5m\nauth:");
        let e = parse(&y).unwrap_err().to_string();
        assert!(e.contains("autostop") && e.contains("idel_after"), "{e}");
    }

    #[test]
    fn bad_url_and_listen_name_their_keys() {
        assert_eq!(
            err_field(&MINIMAL.replace("http://127.0.0.1:8888/", "127.0.0.1:8888")),
            "backend.local.notebooks[0].url"
        );
        assert_eq!(err_field(&format!("listen: nowhere\n{MINIMAL}")), "listen");
        let y = MINIMAL.replace("auth:", "prometheus:\n  url: \"ftp://x\"\nauth:");
        assert_eq!(err_field(&y), "prometheus.url");
    }

    #[test]
    fn listen_is_parsed_once_into_a_socket_address() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 9877)));
        let c = parse(&format!("listen: \"[::]:8080\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.listen, "[::]:8080".parse::<SocketAddr>().unwrap());
        assert!(c.listen.ip().is_unspecified());
        match parse(&format!("listen: \"localhost:80\"\n{MINIMAL}")) {
            Err(Error::Config { field, message }) => {
                assert_eq!(field, "listen");
                assert_eq!(
                    message,
                    "\"localhost:80\" is not host:port: invalid socket address syntax"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_paths_and_ambiguous_basic_users_are_refused() {
        assert_eq!(err_field(&format!("data_dir: \"\"\n{MINIMAL}")), "data_dir");
        let extra = "      - name: two\n        command: [\"x\"]\n        workdir: \"\"\n        url: \"http://127.0.0.1:1/\"\n";
        assert_eq!(
            err_field(&format!("{MINIMAL}{extra}")),
            "backend.local.notebooks[1].workdir"
        );
        let y = MINIMAL.replace("auth:\n", "auth:\n  metrics_token_file: \"\"\n");
        assert_eq!(err_field(&y), "auth.metrics_token_file");
        let y = MINIMAL.replace(
            "auth:\n",
            "auth:\n  webhook_basic_auth: {username: \"am:x\", password: pw}\n",
        );
        assert_eq!(err_field(&y), "auth.webhook_basic_auth.username");
        let y = MINIMAL.replace(
            "auth:\n",
            "auth:\n  metrics_token: m\n  metrics_token_file: m\n",
        );
        assert_eq!(err_field(&y), "auth.metrics_token_file");
        let y = MINIMAL.replace("auth:\n", "auth:\n  metrics_token: \" \"\n");
        assert_eq!(err_field(&y), "auth.metrics_token");
        let y = MINIMAL.replace("auth:", "kubernetes: {metrics_secret: Bad}\nauth:");
        assert_eq!(err_field(&y), "kubernetes.metrics_secret");
    }

    #[test]
    fn checks_across_sections_name_the_key_that_must_change() {
        let y = MINIMAL.replace("auth:", "exporter: {enabled: false}\nauth:");
        assert_eq!(err_field(&y), "autostop.signals");
        let y = MINIMAL.replace("auth:", "kubernetes: {apply: true}\nauth:");
        assert_eq!(err_field(&y), "kubernetes.apply");
        let y = "auth: {webhook_token: w, api_tokens: [a]}\nkubernetes: {apply: true}\nbackend: {kind: kubeflow}\n";
        assert!(parse(y).unwrap().kubernetes.apply);
    }
}
