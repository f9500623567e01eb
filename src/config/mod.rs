//! The YAML configuration and its validation.
//!
//! Parsing is strict: unknown keys are errors, and every error names the
//! dotted path of the key at fault (`backend.local.notebooks[1].name`), so
//! `nbidle check` can tell an operator exactly what to fix.
//!
//! Relative paths (`data_dir`, `workdir`, `*_file`) are resolved against the
//! directory of the config file, as Prometheus does for `rule_files`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

mod secrets;
pub use secrets::Secrets;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP server (webhook, REST API, /metrics).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where nbidle keeps its small state (which notebooks it stopped, when).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub autostop: AutostopConfig,
    #[serde(default)]
    pub prometheus: PrometheusConfig,
    #[serde(default)]
    pub webhook: WebhookConfig,
    #[serde(default)]
    pub alertmanager: AlertmanagerConfig,
    #[serde(default)]
    pub exporter: ExporterConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    #[serde(default)]
    pub server: ServerConfig,
    pub backend: BackendConfig,
}

fn default_listen() -> String {
    "127.0.0.1:9877".into()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data/nbidle")
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer token Alertmanager sends (`http_config.authorization.credentials`).
    pub webhook_token: Option<String>,
    pub webhook_token_file: Option<PathBuf>,
    /// Basic credentials instead of (or besides) the bearer token.
    pub webhook_basic_auth: Option<BasicAuth>,
    /// Bearer tokens accepted by the REST API.
    #[serde(default)]
    pub api_tokens: Vec<String>,
    /// A file with one token per line (blank lines and `#` comments ignored).
    pub api_tokens_file: Option<PathBuf>,
    /// Bearer tokens that see and act on the notebooks of some namespaces
    /// only (a team's own). The tokens above see every namespace.
    #[serde(default)]
    pub namespaced_api_tokens: Vec<NamespacedToken>,
    /// Bearer token Prometheus must send to `/metrics`, `/metrics/notebooks`
    /// and `/sd/notebooks`; unset, those routes are open to anyone who can
    /// reach the listener.
    pub metrics_token: Option<String>,
    pub metrics_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespacedToken {
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutostopConfig {
    /// Act on idle alerts at all. Off: alerts are received and counted, nothing stops.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a notebook must be idle before it is stopped.
    #[serde(default = "default_idle_after")]
    pub idle_after: HumanDuration,
    /// How often Prometheus evaluates the generated idle rules.
    #[serde(default = "default_evaluation_interval")]
    pub evaluation_interval: HumanDuration,
    /// Log and count what would be stopped, stop nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// What makes up "idle": the signals whose absence of work counts.
    #[serde(default = "default_signals")]
    pub signals: Vec<SignalName>,
    /// Guards: evidence of work from outside Jupyter that vetoes a stop.
    #[serde(default)]
    pub guards: GuardsConfig,
    /// A raw PromQL expression selecting busy notebooks by
    /// `(namespace, notebook)`; added to the signals.
    pub busy_expr: Option<String>,
    /// `NotebookIdleSoon` fires this long before the stop.
    #[serde(default = "default_warn_before")]
    pub warn_before: HumanDuration,
    /// Admin bounds for per-notebook `idle_after` overrides.
    pub min_idle_after: Option<HumanDuration>,
    pub max_idle_after: Option<HumanDuration>,
    /// Before stopping, check nbidle's own latest probe of the notebook and
    /// skip the stop if it shows work since the alert was computed.
    #[serde(default = "yes")]
    pub recheck: bool,
}

/// The idle signals the generated rule can combine (see docs/idle-signals.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalName {
    /// nbidle's exporter: busy kernels, kernel and terminal activity.
    Activity,
    /// Jupyter's `kernel_currently_running_total` (the original request's signal).
    Kernels,
    /// jupyter_server ≥ 2's `jupyter_server_last_activity_timestamp_seconds`.
    ServerActivity,
}

fn default_signals() -> Vec<SignalName> {
    vec![SignalName::Activity]
}

fn default_warn_before() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardsConfig {
    pub cpu: Option<CpuGuard>,
    pub gpu: Option<GpuGuard>,
}

/// Container CPU (cAdvisor) above `threshold_cores` over `window` is work.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuGuard {
    #[serde(default = "default_cpu_threshold")]
    pub threshold_cores: f64,
    #[serde(default = "default_guard_window")]
    pub window: HumanDuration,
}

/// GPU engine activity (DCGM) above `threshold` over `window` is work.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuGuard {
    /// `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (0–1) or `DCGM_FI_DEV_GPU_UTIL` (0–100).
    #[serde(default = "default_gpu_metric")]
    pub metric: String,
    #[serde(default = "default_gpu_threshold")]
    pub threshold: f64,
    #[serde(default = "default_guard_window")]
    pub window: HumanDuration,
}

fn default_cpu_threshold() -> f64 {
    0.05
}
fn default_gpu_threshold() -> f64 {
    0.05
}
fn default_gpu_metric() -> String {
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE".into()
}
fn default_guard_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}

/// nbidle's Jupyter activity exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Time between probe rounds (independent of scrapes).
    #[serde(default = "default_probe_interval")]
    pub interval: HumanDuration,
    /// Per-probe timeout; a notebook that does not answer in time reports failure.
    #[serde(default = "default_probe_timeout")]
    pub timeout: HumanDuration,
    /// Probes in flight at once.
    #[serde(default = "default_probe_concurrency")]
    pub concurrency: usize,
    /// Largest probe response body read (`/api/kernels`, `/api/terminals`,
    /// `/api/status`); a larger one fails the probe.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Most kernels taken from one `/api/kernels`; more fail the probe.
    #[serde(default = "default_max_items")]
    pub max_kernels: usize,
    /// Most terminals taken from one `/api/terminals`; more fail the probe.
    #[serde(default = "default_max_items")]
    pub max_terminals: usize,
}

/// Bounds of `exporter.max_response_bytes`: an honest answer with a
/// thousand kernels is about 150 KiB; the most stays far below nbidle's
/// memory, since `2 × concurrency` responses can be in flight at once.
pub const MIN_RESPONSE_BYTES: u64 = 16 * 1024;
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// Bound of `exporter.max_kernels` and `exporter.max_terminals`.
pub const MAX_ITEMS: usize = 1_000_000;

fn default_probe_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}
fn default_probe_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_probe_concurrency() -> usize {
    64
}
fn default_max_response_bytes() -> u64 {
    1024 * 1024
}
fn default_max_items() -> usize {
    1000
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            enabled: true,
            interval: default_probe_interval(),
            timeout: default_probe_timeout(),
            concurrency: default_probe_concurrency(),
            max_response_bytes: default_max_response_bytes(),
            max_kernels: default_max_items(),
            max_terminals: default_max_items(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_idle_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 60))
}
fn default_evaluation_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

impl Default for AutostopConfig {
    fn default() -> Self {
        AutostopConfig {
            enabled: true,
            idle_after: default_idle_after(),
            evaluation_interval: default_evaluation_interval(),
            dry_run: false,
            signals: default_signals(),
            guards: GuardsConfig::default(),
            busy_expr: None,
            warn_before: default_warn_before(),
            min_idle_after: None,
            max_idle_after: None,
            recheck: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Generate rules and monitors for Prometheus.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Prometheus's base URL (used for re-checks and by tooling).
    pub url: Option<String>,
    /// Labels put on generated PrometheusRule/monitor objects, so an operator's
    /// `ruleSelector` picks them up. `"k:v,k:v"` or a map.
    #[serde(default)]
    pub labels: Labels,
    /// The `job` label of the notebooks' scrape job; the rules select on it.
    #[serde(default = "default_notebook_job")]
    pub notebook_job: String,
    /// The `job` label of the scrape job for nbidle's exporter (`/metrics/notebooks`).
    #[serde(default = "default_exporter_job")]
    pub exporter_job: String,
    /// How Prometheus verifies nbidle's certificate when nbidle serves TLS
    /// (`server.web_config_file`); the generated scrape jobs carry it.
    pub tls_config: Option<TlsClientConfig>,
}

/// A client's `tls_config` in the generated Prometheus and Alertmanager
/// configs: how they verify nbidle's certificate. The paths are on their
/// machines, so they are written as given, not resolved.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    pub ca_file: Option<String>,
    /// A client certificate, for `client_auth_type: RequireAndVerifyClientCert`.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub server_name: Option<String>,
}

impl TlsClientConfig {
    fn validate(&self, field: &str) -> Result<()> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(Error::config(
                format!("{field}.key_file"),
                "set cert_file and key_file together",
            ));
        }
        for (k, v) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("server_name", &self.server_name),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(Error::config(format!("{field}.{k}"), "must not be empty"));
            }
        }
        Ok(())
    }
}

fn default_exporter_job() -> String {
    "nbidle-exporter".into()
}

fn default_notebook_job() -> String {
    "nbidle-notebooks".into()
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            enabled: true,
            url: None,
            labels: Labels::default(),
            notebook_job: default_notebook_job(),
            exporter_job: default_exporter_job(),
            tls_config: None,
        }
    }
}

/// Where things are on Kubernetes, for the generated PodMonitor,
/// ServiceMonitor and AlertmanagerConfig (`nbidle manifests`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// nbidle's own namespace.
    #[serde(default = "default_k8s_name")]
    pub namespace: String,
    /// nbidle's Service; its port named `service_port` serves HTTP.
    #[serde(default = "default_k8s_name")]
    pub service: String,
    #[serde(default = "default_service_port")]
    pub service_port: String,
    /// Namespaces with notebooks; empty: all namespaces.
    #[serde(default)]
    pub notebook_namespaces: Vec<String>,
    /// The notebook pods' label carrying the notebook name (Kubeflow's).
    #[serde(default = "default_notebook_label")]
    pub notebook_label: String,
    /// The notebook container's port name (Kubeflow's).
    #[serde(default = "default_notebook_port")]
    pub notebook_port: String,
    /// The Secret (in each namespace that gets an AlertmanagerConfig) holding
    /// the webhook token under the key `token`.
    #[serde(default = "default_webhook_secret")]
    pub webhook_secret: String,
    /// A Secret (in `namespace`, key `token`) with a token the notebooks'
    /// Jupyter servers accept, for a PodMonitor scraping servers that
    /// protect `/metrics` (jupyter_server ≥ 2 with a token set).
    pub notebook_metrics_secret: Option<String>,
    /// The Secret (in `namespace`, key `token`) holding `auth.metrics_token`,
    /// for the ServiceMonitor; used only when a metrics token is set.
    #[serde(default = "default_metrics_secret")]
    pub metrics_secret: String,
    /// With TLS: a Secret holding `ca.crt` (cert-manager's layout) that the
    /// generated ServiceMonitor and AlertmanagerConfigs verify nbidle with.
    pub tls_secret: Option<String>,
    /// Keep the generated PrometheusRule, PodMonitor, ServiceMonitor and
    /// AlertmanagerConfig applied (server-side apply, field manager
    /// `nbidle`); needs a Kubernetes backend and RBAC for those objects.
    #[serde(default)]
    pub apply: bool,
    /// The most one API server call, or one stop or start with its retries,
    /// may take; past it the webhook answers 503 (Alertmanager delivers
    /// again) and the REST API 503.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}

fn default_k8s_name() -> String {
    "nbidle".into()
}
fn default_service_port() -> String {
    "http".into()
}
fn default_notebook_label() -> String {
    "notebook-name".into()
}
fn default_notebook_port() -> String {
    "notebook-port".into()
}
fn default_webhook_secret() -> String {
    "nbidle-webhook".into()
}
fn default_metrics_secret() -> String {
    "nbidle-metrics".into()
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespace: default_k8s_name(),
            service: default_k8s_name(),
            service_port: default_service_port(),
            notebook_namespaces: Vec::new(),
            notebook_label: default_notebook_label(),
            notebook_port: default_notebook_port(),
            webhook_secret: default_webhook_secret(),
            notebook_metrics_secret: None,
            metrics_secret: default_metrics_secret(),
            tls_secret: None,
            apply: false,
            request_timeout: default_request_timeout(),
        }
    }
}

impl KubernetesConfig {
    fn validate(&self) -> Result<()> {
        let k = |f: &str| format!("kubernetes.{f}");
        for (field, v) in [
            ("namespace", &self.namespace),
            ("service", &self.service),
            ("service_port", &self.service_port),
            ("notebook_port", &self.notebook_port),
            ("webhook_secret", &self.webhook_secret),
            ("metrics_secret", &self.metrics_secret),
        ] {
            check_notebook_name(v).map_err(|m| Error::config(k(field), m))?;
        }
        for (i, ns) in self.notebook_namespaces.iter().enumerate() {
            check_notebook_name(ns)
                .map_err(|m| Error::config(k(&format!("notebook_namespaces[{i}]")), m))?;
        }
        if let Some(s) = &self.notebook_metrics_secret {
            check_notebook_name(s).map_err(|m| Error::config(k("notebook_metrics_secret"), m))?;
        }
        if let Some(s) = &self.tls_secret {
            check_notebook_name(s).map_err(|m| Error::config(k("tls_secret"), m))?;
        }
        let t = self.request_timeout.0;
        if t < std::time::Duration::from_secs(1) || t > std::time::Duration::from_secs(300) {
            return Err(Error::config(
                k("request_timeout"),
                format!("{} is outside 1s..5m", self.request_timeout),
            ));
        }
        check_label_key(&self.notebook_label).map_err(|m| Error::config(k("notebook_label"), m))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Largest accepted webhook body. Alertmanager's `max_alerts` keeps
    /// payloads well under this.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Bytes of webhook bodies read at the same time, over all requests;
    /// beyond it a request gets 503 with `Retry-After` and Alertmanager
    /// delivers it again.
    #[serde(default = "default_max_bytes_in_flight")]
    pub max_bytes_in_flight: u64,
}

fn default_max_body_bytes() -> u64 {
    4 * 1024 * 1024
}

fn default_max_bytes_in_flight() -> u64 {
    16 * 1024 * 1024
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_body_bytes: default_max_body_bytes(),
            max_bytes_in_flight: default_max_bytes_in_flight(),
        }
    }
}

/// Limits of the HTTP listener, so slow, silent or many clients cannot
/// exhaust nbidle's memory or connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Open connections at most; at the cap a new connection replaces the
    /// oldest one that is not handling a request.
    pub max_connections: usize,
    /// The request line and headers must arrive within this; it is also how
    /// long an idle keep-alive connection is kept open.
    pub header_read_timeout: HumanDuration,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// A request body must arrive within this.
    pub body_read_timeout: HumanDuration,
    /// A response the client does not read for this long is abandoned.
    pub write_timeout: HumanDuration,
    /// On shutdown, requests in flight get this long to finish.
    pub shutdown_timeout: HumanDuration,
    /// TLS: a web config file in the Prometheus exporter-toolkit format
    /// (`tls_server_config`); without it the listener speaks plain HTTP.
    pub web_config_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            max_header_bytes: 16 * 1024,
            body_read_timeout: HumanDuration(Duration::from_secs(30)),
            write_timeout: HumanDuration(Duration::from_secs(30)),
            shutdown_timeout: HumanDuration(Duration::from_secs(10)),
            web_config_file: None,
        }
    }
}

/// hyper cannot buffer less than this for a request head.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

impl ServerConfig {
    fn validate(&self) -> Result<()> {
        let k = |key: &str| format!("server.{key}");
        if !(16..=1_000_000).contains(&self.max_connections) {
            return Err(Error::config(
                k("max_connections"),
                "must be between 16 and 1000000",
            ));
        }
        if !(MIN_HEADER_BYTES..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(Error::config(
                k("max_header_bytes"),
                format!("must be between {MIN_HEADER_BYTES} and 1048576"),
            ));
        }
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("write_timeout", self.write_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if d.0 < Duration::from_millis(100) || d.0 > Duration::from_secs(3600) {
                return Err(Error::config(k(key), "must be between 100ms and 1h"));
            }
        }
        Ok(())
    }
}

/// How the generated Alertmanager route delivers idle alerts to nbidle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// The URL Alertmanager posts to; default: `http://<listen>/webhook/alertmanager`.
    pub webhook_url: Option<String>,
    /// Wait this long to batch the first alerts of a group.
    #[serde(default = "default_group_wait")]
    pub group_wait: HumanDuration,
    #[serde(default = "default_group_interval")]
    pub group_interval: HumanDuration,
    /// Re-send a still-firing alert this often (a stop missed while nbidle
    /// was down longer than Alertmanager's retries is caught here).
    #[serde(default = "default_repeat_interval")]
    pub repeat_interval: HumanDuration,
    /// How Alertmanager verifies nbidle's certificate when nbidle serves
    /// TLS; the generated webhook receiver carries it.
    pub tls_config: Option<TlsClientConfig>,
}

fn default_group_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_group_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}
fn default_repeat_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60 * 60))
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            webhook_url: None,
            group_wait: default_group_wait(),
            group_interval: default_group_interval(),
            repeat_interval: default_repeat_interval(),
            tls_config: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub local: Option<LocalConfig>,
    #[serde(default)]
    pub kubeflow: KubeBackendConfig,
    #[serde(default)]
    pub statefulset: KubeBackendConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Processes on this machine.
    Local,
    /// Kubeflow `Notebook` resources (kubeflow.org/v1).
    Kubeflow,
    /// StatefulSets selected by label, scaled to 0 and back.
    Statefulset,
}

impl BackendKind {
    pub fn is_kubernetes(self) -> bool {
        !matches!(self, BackendKind::Local)
    }
}

/// A Kubernetes backend's settings (`backend.kubeflow`, `backend.statefulset`).
/// The namespaces watched are `kubernetes.notebook_namespaces`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeBackendConfig {
    /// Only objects matching this label selector (`key=value,key2`);
    /// required for StatefulSets, which are not all notebooks.
    pub label_selector: Option<String>,
    /// Where the exporter reaches a notebook's Jupyter server; `{namespace}`
    /// and `{name}` are replaced. Default for Kubeflow: its Service and
    /// `NB_PREFIX`, `http://{name}.{namespace}.svc/notebook/{namespace}/{name}/`;
    /// for StatefulSets: `http://{name}.{namespace}.svc/`.
    pub jupyter_url: Option<String>,
}

impl KubeBackendConfig {
    pub fn jupyter_url(&self, kind: BackendKind) -> String {
        self.jupyter_url.clone().unwrap_or_else(|| match kind {
            BackendKind::Kubeflow => {
                "http://{name}.{namespace}.svc/notebook/{namespace}/{name}/".into()
            }
            _ => "http://{name}.{namespace}.svc/".into(),
        })
    }
}

impl BackendConfig {
    /// The settings of the configured Kubernetes backend.
    pub fn kube(&self) -> &KubeBackendConfig {
        match self.kind {
            BackendKind::Statefulset => &self.statefulset,
            _ => &self.kubeflow,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// SIGTERM, then SIGKILL after this long.
    #[serde(default = "default_grace")]
    pub stop_grace_period: HumanDuration,
    /// Stop every notebook when nbidle exits. Off by default: notebooks
    /// outlive an nbidle restart, which adopts them instead of respawning.
    #[serde(default)]
    pub stop_on_exit: bool,
    #[serde(default)]
    pub notebooks: Vec<LocalNotebook>,
}

fn default_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalNotebook {
    pub name: String,
    /// argv of the notebook server; run in its own process group.
    pub command: Vec<String>,
    /// The workspace; the process runs here and it is never deleted by a stop.
    pub workdir: PathBuf,
    /// Base URL of the Jupyter server, e.g. `http://127.0.0.1:8888/`.
    pub url: String,
    /// Jupyter token, for probes and for users.
    pub token: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `false`: never stopped by an idle alert (a user can still stop it).
    #[serde(default = "yes")]
    pub autostop: bool,
    /// This notebook's idle time, within `autostop.min/max_idle_after`.
    pub idle_after: Option<HumanDuration>,
    /// Who to warn before the stop (carried on `NotebookIdleSoon`).
    pub owner: Option<String>,
}

/// A duration written as humantime (`30m`, `1h 30m`, `90s`) or a bare number
/// of minutes (the seed's `autostop.duration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return minutes(s.parse().map_err(|e| format!("{s:?}: {e}"))?);
        }
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("{s:?} is not a duration like 30m or 1h30m: {e}"))
    }

    /// The duration in Prometheus's format (`1h30m`, `45s`), whole seconds.
    pub fn prometheus(self) -> String {
        prometheus_duration(self.0)
    }
}

fn minutes(m: u64) -> std::result::Result<HumanDuration, String> {
    m.checked_mul(60)
        .map(|s| HumanDuration(Duration::from_secs(s)))
        .ok_or_else(|| format!("{m} minutes is too long"))
}

pub fn prometheus_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prometheus())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Minutes(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration like 30m, 1h30m or a number of minutes")
        })? {
            Raw::Minutes(m) => minutes(m).map_err(serde::de::Error::custom),
            Raw::Text(s) => HumanDuration::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Kubernetes object labels, from `"k:v,k:v"` or a YAML map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

impl Labels {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let mut map = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once(':')
                .or_else(|| part.split_once('='))
                .ok_or_else(|| format!("{part:?} is not key:value"))?;
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(Labels(map))
    }

    fn validate(&self, field: &str) -> Result<()> {
        for (k, v) in &self.0 {
            check_label_key(k).map_err(|m| Error::config(format!("{field}.{k}"), m))?;
            check_label_value(v).map_err(|m| Error::config(format!("{field}.{k}"), m))?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Map(BTreeMap<String, serde_yaml::Value>),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected \"key:value,key:value\" or a map of labels")
        })? {
            Raw::Text(s) => Labels::parse(&s).map_err(serde::de::Error::custom),
            Raw::Map(m) => m
                .into_iter()
                .map(|(k, v)| match v {
                    serde_yaml::Value::String(s) => Ok((k, s)),
                    serde_yaml::Value::Bool(b) => Ok((k, b.to_string())),
                    serde_yaml::Value::Number(n) => Ok((k, n.to_string())),
                    _ => Err(serde::de::Error::custom(format!(
                        "label {k:?}: value must be a string"
                    ))),
                })
                .collect::<std::result::Result<_, _>>()
                .map(Labels),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

fn kind_key(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Local => "local",
        BackendKind::Kubeflow => "kubeflow",
        BackendKind::Statefulset => "statefulset",
    }
}

/// An equality-based label selector: `key`, `!key`, `key=value`,
/// `key==value`, `key!=value`, comma-separated. (Set-based terms such as
/// `key in (a,b)` are not accepted: their commas make a simple check wrong.)
fn check_label_selector(sel: &str) -> std::result::Result<(), String> {
    if sel.trim().is_empty() {
        return Err("must not be empty".into());
    }
    for term in sel.split(',') {
        let term = term.trim();
        let (key, value) = if let Some((k, v)) = term.split_once("!=") {
            (k, Some(v))
        } else if let Some((k, v)) = term.split_once("==") {
            (k, Some(v))
        } else if let Some((k, v)) = term.split_once('=') {
            (k, Some(v))
        } else {
            (term.strip_prefix('!').unwrap_or(term), None)
        };
        check_label_key(key.trim()).map_err(|m| format!("{term:?}: {m}"))?;
        if let Some(v) = value {
            check_label_value(v.trim()).map_err(|m| format!("{term:?}: {m}"))?;
        }
    }
    Ok(())
}

/// A Kubernetes label key: optional DNS-subdomain prefix, `/`, a name of at
/// most 63 characters starting and ending with an alphanumeric.
fn check_label_key(key: &str) -> std::result::Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty()
                || prefix.len() > 253
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(format!(
                    "label key prefix {prefix:?} is not a DNS subdomain"
                ));
            }
            name
        }
        None => key,
    };
    check_label_value(name)
        .map_err(|_| format!("label key {key:?} is not a valid Kubernetes label name"))?;
    if name.is_empty() {
        return Err("label key is empty".into());
    }
    Ok(())
}

fn check_label_value(v: &str) -> std::result::Result<(), String> {
    let ok = v.len() <= 63
        && v.chars().all(is_name_char)
        && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?} is not a valid Kubernetes label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)"))
    }
}

/// A notebook name must be usable as a Prometheus label value and in URLs
/// and file names: a DNS-1123 label.
pub fn check_notebook_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"))
    }
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
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(document)".to_string()
            } else {
                path
            };
            Error::config(field, e.into_inner().to_string())
        })?;
        cfg.check_paths_given()?;
        cfg.resolve_paths(base);
        cfg.validate()?;
        Ok(cfg)
    }

    /// An empty path would resolve to the config file's own directory
    /// (state written among the configs, a notebook run there), so each is
    /// refused before paths are resolved.
    fn check_paths_given(&self) -> Result<()> {
        let a = &self.auth;
        let mut paths: Vec<(String, Option<&PathBuf>)> = vec![
            ("data_dir".into(), Some(&self.data_dir)),
            (
                "auth.webhook_token_file".into(),
                a.webhook_token_file.as_ref(),
            ),
            ("auth.api_tokens_file".into(), a.api_tokens_file.as_ref()),
            (
                "auth.metrics_token_file".into(),
                a.metrics_token_file.as_ref(),
            ),
            (
                "auth.webhook_basic_auth.password_file".into(),
                a.webhook_basic_auth
                    .as_ref()
                    .and_then(|b| b.password_file.as_ref()),
            ),
        ];
        for (i, t) in a.namespaced_api_tokens.iter().enumerate() {
            paths.push((
                format!("auth.namespaced_api_tokens[{i}].token_file"),
                t.token_file.as_ref(),
            ));
        }
        if let Some(local) = &self.backend.local {
            for (i, nb) in local.notebooks.iter().enumerate() {
                paths.push((
                    format!("backend.local.notebooks[{i}].workdir"),
                    Some(&nb.workdir),
                ));
            }
        }
        for (key, p) in paths {
            if p.is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(Error::config(key, "must not be empty"));
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.data_dir);
        if let Some(p) = self.server.web_config_file.as_mut() {
            abs(p)
        }
        if let Some(p) = self.auth.webhook_token_file.as_mut() {
            abs(p)
        }
        if let Some(p) = self.auth.api_tokens_file.as_mut() {
            abs(p)
        }
        if let Some(p) = self.auth.metrics_token_file.as_mut() {
            abs(p)
        }
        for t in &mut self.auth.namespaced_api_tokens {
            if let Some(p) = t.token_file.as_mut() {
                abs(p)
            }
        }
        if let Some(p) = self
            .auth
            .webhook_basic_auth
            .as_mut()
            .and_then(|b| b.password_file.as_mut())
        {
            abs(p)
        }
        if let Some(local) = self.backend.local.as_mut() {
            for nb in &mut local.notebooks {
                abs(&mut nb.workdir);
            }
        }
    }

    fn validate(&self) -> Result<()> {
        self.listen.parse::<SocketAddr>().map_err(|e| {
            Error::config("listen", format!("{:?} is not host:port: {e}", self.listen))
        })?;
        let a = &self.autostop;
        if a.idle_after.0 < Duration::from_secs(1) {
            return Err(Error::config("autostop.idle_after", "must be at least 1s"));
        }
        if a.evaluation_interval.0 < Duration::from_secs(1) {
            return Err(Error::config(
                "autostop.evaluation_interval",
                "must be at least 1s",
            ));
        }
        if a.evaluation_interval.0 > a.idle_after.0 {
            return Err(Error::config(
                "autostop.evaluation_interval",
                format!(
                    "{} is longer than autostop.idle_after ({})",
                    a.evaluation_interval, a.idle_after
                ),
            ));
        }
        self.validate_idle()?;
        self.kubernetes.validate()?;
        if let Some(url) = &self.prometheus.url {
            check_url(url).map_err(|m| Error::config("prometheus.url", m))?;
        }
        self.prometheus.labels.validate("prometheus.labels")?;
        if let Some(url) = &self.alertmanager.webhook_url {
            check_url(url).map_err(|m| Error::config("alertmanager.webhook_url", m))?;
        }
        for (key, d) in [
            (
                "alertmanager.group_interval",
                self.alertmanager.group_interval,
            ),
            (
                "alertmanager.repeat_interval",
                self.alertmanager.repeat_interval,
            ),
        ] {
            if d.0 < Duration::from_secs(1) {
                return Err(Error::config(key, "must be at least 1s"));
            }
        }
        // Both go into generated PromQL selectors.
        for (key, job) in [
            ("prometheus.notebook_job", &self.prometheus.notebook_job),
            ("prometheus.exporter_job", &self.prometheus.exporter_job),
        ] {
            if job.is_empty() {
                return Err(Error::config(key, "must not be empty"));
            }
            check_label_value(job).map_err(|m| Error::config(key, m))?;
        }
        if self.webhook.max_body_bytes < 1024 {
            return Err(Error::config(
                "webhook.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.webhook.max_bytes_in_flight < self.webhook.max_body_bytes {
            return Err(Error::config(
                "webhook.max_bytes_in_flight",
                format!(
                    "must be at least webhook.max_body_bytes ({})",
                    self.webhook.max_body_bytes
                ),
            ));
        }
        self.server.validate()?;
        for (key, tls) in [
            ("prometheus.tls_config", &self.prometheus.tls_config),
            ("alertmanager.tls_config", &self.alertmanager.tls_config),
        ] {
            if let Some(t) = tls {
                t.validate(key)?;
            }
        }
        let auth = &self.auth;
        if auth.webhook_token.is_some() && auth.webhook_token_file.is_some() {
            return Err(Error::config(
                "auth.webhook_token_file",
                "set webhook_token or webhook_token_file, not both",
            ));
        }
        if let Some(t) = &auth.webhook_token {
            if t.trim().is_empty() {
                return Err(Error::config("auth.webhook_token", "must not be empty"));
            }
        }
        if let Some(b) = &auth.webhook_basic_auth {
            if b.username.is_empty() {
                return Err(Error::config(
                    "auth.webhook_basic_auth.username",
                    "must not be empty",
                ));
            }
            // Basic credentials travel as `username:password`; the first
            // `:` ends the username, so a username with one never matches.
            if b.username.contains(':') {
                return Err(Error::config(
                    "auth.webhook_basic_auth.username",
                    "must not contain ':'",
                ));
            }
            if b.password.is_some() == b.password_file.is_some() {
                return Err(Error::config(
                    "auth.webhook_basic_auth.password",
                    "set exactly one of password, password_file",
                ));
            }
        }
        if auth.metrics_token.is_some() && auth.metrics_token_file.is_some() {
            return Err(Error::config(
                "auth.metrics_token_file",
                "set metrics_token or metrics_token_file, not both",
            ));
        }
        if auth
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Error::config("auth.metrics_token", "must not be empty"));
        }
        for (i, t) in auth.api_tokens.iter().enumerate() {
            if t.trim().is_empty() {
                return Err(Error::config(
                    format!("auth.api_tokens[{i}]"),
                    "must not be empty",
                ));
            }
        }
        for (i, t) in auth.namespaced_api_tokens.iter().enumerate() {
            let f = |k: &str| format!("auth.namespaced_api_tokens[{i}].{k}");
            if t.token.is_some() == t.token_file.is_some() {
                return Err(Error::config(
                    f("token"),
                    "set exactly one of token, token_file",
                ));
            }
            if t.namespaces.is_empty() {
                return Err(Error::config(
                    f("namespaces"),
                    "list at least one namespace (a token for all goes in auth.api_tokens)",
                ));
            }
            for (j, ns) in t.namespaces.iter().enumerate() {
                check_notebook_name(ns)
                    .map_err(|m| Error::config(f(&format!("namespaces[{j}]")), m))?;
            }
        }
        if self.kubernetes.apply && !self.backend.kind.is_kubernetes() {
            return Err(Error::config(
                "kubernetes.apply",
                "applies objects to a cluster; it needs backend.kind kubeflow or statefulset",
            ));
        }
        match self.backend.kind {
            BackendKind::Local => {
                let local = self.backend.local.as_ref().ok_or_else(|| {
                    Error::config("backend.local", "required when backend.kind is local")
                })?;
                let grace = local.stop_grace_period.0;
                if grace < Duration::from_secs(1) || grace > Duration::from_secs(3600) {
                    return Err(Error::config(
                        "backend.local.stop_grace_period",
                        "must be between 1s and 1h",
                    ));
                }
                let mut seen = HashSet::new();
                let mut urls = HashSet::new();
                for (i, nb) in local.notebooks.iter().enumerate() {
                    let f = |k: &str| format!("backend.local.notebooks[{i}].{k}");
                    check_notebook_name(&nb.name).map_err(|m| Error::config(f("name"), m))?;
                    if !seen.insert(nb.name.as_str()) {
                        return Err(Error::config(
                            f("name"),
                            format!("duplicate notebook name {:?}", nb.name),
                        ));
                    }
                    if nb.command.is_empty() || nb.command[0].is_empty() {
                        return Err(Error::config(f("command"), "must name a program"));
                    }
                    check_url(&nb.url).map_err(|m| Error::config(f("url"), m))?;
                    // Local notebooks are probed over plain HTTP on this machine.
                    if !nb.url.starts_with("http://") {
                        return Err(Error::config(
                            f("url"),
                            "local notebooks are served over http://",
                        ));
                    }
                    if !urls.insert(nb.url.trim_end_matches('/')) {
                        return Err(Error::config(
                            f("url"),
                            format!("{:?} is used by another notebook", nb.url),
                        ));
                    }
                }
            }
            kind @ (BackendKind::Kubeflow | BackendKind::Statefulset) => {
                let key = |f: &str| format!("backend.{}.{f}", kind_key(kind));
                let kube = self.backend.kube();
                match &kube.label_selector {
                    Some(sel) => check_label_selector(sel)
                        .map_err(|m| Error::config(key("label_selector"), m))?,
                    None if kind == BackendKind::Statefulset => {
                        return Err(Error::config(
                            key("label_selector"),
                            "required: it picks the StatefulSets that are notebooks",
                        ))
                    }
                    None => {}
                }
                let url = kube
                    .jupyter_url(kind)
                    .replace("{namespace}", "ns")
                    .replace("{name}", "nb");
                check_url(&url).map_err(|m| Error::config(key("jupyter_url"), m))?;
                if !url.starts_with("http://") {
                    return Err(Error::config(
                        key("jupyter_url"),
                        "notebooks are probed over http:// inside the cluster",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_idle(&self) -> Result<()> {
        let a = &self.autostop;
        if a.signals.is_empty() && a.busy_expr.is_none() {
            return Err(Error::config(
                "autostop.signals",
                "name at least one signal (activity, kernels, server_activity) or set busy_expr",
            ));
        }
        let needs_exporter = a.signals.contains(&SignalName::Activity);
        if needs_exporter && !self.exporter.enabled {
            return Err(Error::config(
                "autostop.signals",
                "the activity signal needs exporter.enabled: true",
            ));
        }
        if a.warn_before.0 <= a.evaluation_interval.0 {
            return Err(Error::config(
                "autostop.warn_before",
                format!("must be longer than autostop.evaluation_interval ({}), or the warning cannot fire before the stop", a.evaluation_interval),
            ));
        }
        if a.warn_before.0 >= a.idle_after.0 {
            return Err(Error::config(
                "autostop.warn_before",
                format!(
                    "must be shorter than autostop.idle_after ({})",
                    a.idle_after
                ),
            ));
        }
        for (key, bound) in [
            ("autostop.min_idle_after", a.min_idle_after),
            ("autostop.max_idle_after", a.max_idle_after),
        ] {
            if bound.is_some_and(|d| d.0 <= a.warn_before.0) {
                return Err(Error::config(
                    key,
                    format!(
                        "must be longer than autostop.warn_before ({})",
                        a.warn_before
                    ),
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (a.min_idle_after, a.max_idle_after) {
            if lo.0 > hi.0 {
                return Err(Error::config(
                    "autostop.min_idle_after",
                    "is longer than autostop.max_idle_after",
                ));
            }
        }
        if let Some(e) = &a.busy_expr {
            if e.trim().is_empty() {
                return Err(Error::config("autostop.busy_expr", "must not be empty"));
            }
        }
        // rate() and avg_over_time() need at least two scrapes in the window.
        let min_window = a.evaluation_interval.0 * 2;
        for (key, w) in [
            (
                "autostop.guards.cpu.window",
                a.guards.cpu.as_ref().map(|c| c.window),
            ),
            (
                "autostop.guards.gpu.window",
                a.guards.gpu.as_ref().map(|g| g.window),
            ),
        ] {
            if w.is_some_and(|w| w.0 < min_window) {
                return Err(Error::config(
                    key,
                    format!(
                        "must cover at least two scrapes ({})",
                        prometheus_duration(min_window)
                    ),
                ));
            }
        }
        if let Some(c) = &a.guards.cpu {
            if !(c.threshold_cores > 0.0 && c.threshold_cores.is_finite()) {
                return Err(Error::config(
                    "autostop.guards.cpu.threshold_cores",
                    "must be a positive number of cores",
                ));
            }
        }
        if let Some(g) = &a.guards.gpu {
            if !(g.threshold > 0.0 && g.threshold.is_finite()) {
                return Err(Error::config(
                    "autostop.guards.gpu.threshold",
                    "must be positive",
                ));
            }
            if g.metric.is_empty()
                || !g
                    .metric
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                return Err(Error::config(
                    "autostop.guards.gpu.metric",
                    "must be a Prometheus metric name",
                ));
            }
        }
        let e = &self.exporter;
        if e.interval.0 < Duration::from_secs(1) {
            return Err(Error::config("exporter.interval", "must be at least 1s"));
        }
        if e.timeout.0 < Duration::from_millis(100)
            || e.timeout.0 > e.interval.0.max(Duration::from_secs(1)) * 4
        {
            return Err(Error::config(
                "exporter.timeout",
                "must be at least 100ms and at most 4 × exporter.interval",
            ));
        }
        if e.concurrency == 0 || e.concurrency > 4096 {
            return Err(Error::config(
                "exporter.concurrency",
                "must be between 1 and 4096",
            ));
        }
        if !(MIN_RESPONSE_BYTES..=MAX_RESPONSE_BYTES).contains(&e.max_response_bytes) {
            return Err(Error::config(
                "exporter.max_response_bytes",
                format!("must be between {MIN_RESPONSE_BYTES} (16 KiB) and {MAX_RESPONSE_BYTES} (64 MiB)"),
            ));
        }
        for (key, n) in [
            ("exporter.max_kernels", e.max_kernels),
            ("exporter.max_terminals", e.max_terminals),
        ] {
            if !(1..=MAX_ITEMS).contains(&n) {
                return Err(Error::config(
                    key,
                    format!("must be between 1 and {MAX_ITEMS}"),
                ));
            }
        }
        if let Some(local) = &self.backend.local {
            for (i, nb) in local.notebooks.iter().enumerate() {
                if let Some(d) = nb.idle_after {
                    if d.0 < Duration::from_secs(1) {
                        return Err(Error::config(
                            format!("backend.local.notebooks[{i}].idle_after"),
                            "must be at least 1s",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that only matter for `serve` (and `check`): features the
    /// chosen backend cannot feed. `nbidle rules` may target another setup.
    pub fn check_backend_fit(&self) -> Result<()> {
        let g = &self.autostop.guards;
        if self.backend.kind == BackendKind::Local {
            for (key, set) in [
                ("autostop.guards.cpu", g.cpu.is_some()),
                ("autostop.guards.gpu", g.gpu.is_some()),
            ] {
                if set {
                    return Err(Error::config(
                        key,
                        "needs pod series (nbidle_notebook_pod_info), which the local backend has none of; it would never keep a notebook running",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The default idle time and the admin's bounds for overrides.
    pub fn idle_bounds(&self) -> crate::notebook::IdleBounds {
        let a = &self.autostop;
        crate::notebook::IdleBounds {
            default: a.idle_after.0,
            min: a.min_idle_after.map(|d| d.0),
            max: a.max_idle_after.map(|d| d.0),
        }
    }
}

fn check_url(url: &str) -> std::result::Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("{url:?}: scheme must be http or https"));
    }
    if u.host_str().is_none() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
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

    fn parse(yaml: &str) -> Result<Config> {
        Config::from_yaml(yaml, Path::new("/etc/nbidle"))
    }

    fn err_field(yaml: &str) -> String {
        match parse(yaml) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.autostop.idle_after.0, Duration::from_secs(1800));
        assert_eq!(c.autostop.evaluation_interval.0, Duration::from_secs(60));
        assert!(c.autostop.enabled && c.prometheus.enabled);
        assert_eq!(c.data_dir, PathBuf::from("/etc/nbidle/data/nbidle"));
        let nb = &c.backend.local.as_ref().unwrap().notebooks[0];
        assert_eq!(nb.workdir, PathBuf::from("/etc/nbidle/ws/demo"));
        assert!(nb.autostop);
        let s = c.secrets().unwrap();
        assert_eq!(s.webhook_token.as_deref(), Some("wh"));
        assert_eq!(s.api_tokens, vec!["api".to_string()]);
    }

    #[test]
    fn durations_accept_humantime_and_bare_minutes() {
        assert_eq!(
            HumanDuration::parse("45").unwrap().0,
            Duration::from_secs(2700)
        );
        assert_eq!(
            HumanDuration::parse("1h 30m").unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(HumanDuration::parse("90s").unwrap().prometheus(), "1m30s");
        assert!(HumanDuration::parse("soon").is_err());
        let c = parse(&MINIMAL.replace("auth:", "autostop:\n  idle_after: 10\nauth:")).unwrap();
        assert_eq!(c.autostop.idle_after.0, Duration::from_secs(600));
    }

    #[test]
    fn bad_duration_names_the_key() {
        let y = MINIMAL.replace("auth:", "autostop:\n  idle_after: soonish\nauth:");
        assert_eq!(err_field(&y), "autostop.idle_after");
    }

    #[test]
    fn unknown_key_names_its_parent() {
        let y = MINIMAL.replace("auth:", "autostop:\n  idel_after: 5m\nauth:");
        let e = parse(&y).unwrap_err().to_string();
        assert!(e.contains("autostop") && e.contains("idel_after"), "{e}");
    }

    #[test]
    fn seed_label_string_and_map_forms_are_equal() {
        let a = Labels::parse("k8s-app-pod:true,k8s-app-pod2:true").unwrap();
        let y = MINIMAL.replace(
            "auth:",
            "prometheus:\n  labels:\n    k8s-app-pod: true\n    k8s-app-pod2: \"true\"\nauth:",
        );
        assert_eq!(parse(&y).unwrap().prometheus.labels, a);
        assert!(Labels::parse("novalue").is_err());
    }

    #[test]
    fn invalid_label_names_the_label() {
        let y = MINIMAL.replace("auth:", "prometheus:\n  labels: \"bad key:x\"\nauth:");
        assert_eq!(err_field(&y), "prometheus.labels.bad key");
    }

    #[test]
    fn exporter_limits_have_defaults_and_bounds_that_name_their_keys() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.exporter.max_response_bytes, 1024 * 1024);
        assert_eq!(
            (c.exporter.max_kernels, c.exporter.max_terminals),
            (1000, 1000)
        );
        let with = |kv: &str| MINIMAL.replace("auth:", &format!("exporter:\n  {kv}\nauth:"));
        let c = parse(&with("max_response_bytes: 65536")).unwrap();
        assert_eq!(c.exporter.max_response_bytes, 65536);
        for (kv, key) in [
            ("max_response_bytes: 0", "exporter.max_response_bytes"),
            ("max_response_bytes: 16383", "exporter.max_response_bytes"),
            (
                "max_response_bytes: 67108865",
                "exporter.max_response_bytes",
            ),
            ("max_response_bytes: -1", "exporter.max_response_bytes"),
            ("max_response_bytes: 1MiB", "exporter.max_response_bytes"),
            ("max_kernels: 0", "exporter.max_kernels"),
            ("max_kernels: 1000001", "exporter.max_kernels"),
            ("max_terminals: 0", "exporter.max_terminals"),
        ] {
            assert_eq!(err_field(&with(kv)), key, "{kv}");
        }
    }

    #[test]
    fn duplicate_notebook_names_are_rejected() {
        let extra = r#"      - name: demo
        command: ["x"]
        workdir: "w"
        url: "http://127.0.0.1:1/"
"#;
        let y = format!("{MINIMAL}{extra}");
        assert_eq!(err_field(&y), "backend.local.notebooks[1].name");
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
    fn missing_webhook_credentials_is_an_error_naming_the_key() {
        let c = parse(&MINIMAL.replace("  webhook_token: \"wh\"\n", "")).unwrap();
        match c.secrets() {
            Err(Error::Config { field, .. }) => assert_eq!(field, "auth.webhook_token"),
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
    fn evaluation_interval_longer_than_idle_after_is_rejected() {
        let y = MINIMAL.replace(
            "auth:",
            "autostop:\n  idle_after: 1m\n  evaluation_interval: 2m\nauth:",
        );
        assert_eq!(err_field(&y), "autostop.evaluation_interval");
    }

    #[test]
    fn bounds_and_duplicates_are_rejected() {
        let y = MINIMAL.replace("  local:\n", "  local:\n    stop_grace_period: 0s\n");
        assert_eq!(err_field(&y), "backend.local.stop_grace_period");
        assert_eq!(
            err_field(&MINIMAL.replace("http://127.0.0.1:8888/", "https://127.0.0.1:8888/")),
            "backend.local.notebooks[0].url"
        );
        let extra = "      - name: other\n        command: [\"x\"]\n        workdir: \"w\"\n        url: \"http://127.0.0.1:8888\"\n";
        assert_eq!(
            err_field(&format!("{MINIMAL}{extra}")),
            "backend.local.notebooks[1].url"
        );
        let y = MINIMAL.replace("auth:", "prometheus:\n  notebook_job: \"\"\nauth:");
        assert_eq!(err_field(&y), "prometheus.notebook_job");
        assert!(HumanDuration::parse("99999999999999999999").is_err());
        assert!(HumanDuration::parse("999999999999999999").is_err());
    }

    #[test]
    fn inline_tokens_are_trimmed_and_empty_basic_password_rejected() {
        let c =
            parse(&MINIMAL.replace("webhook_token: \"wh\"", "webhook_token: \" wh \"")).unwrap();
        assert_eq!(c.secrets().unwrap().webhook_token.as_deref(), Some("wh"));
        let y = MINIMAL.replace(
            "  webhook_token: \"wh\"\n",
            "  webhook_basic_auth: {username: am, password: \" \"}\n",
        );
        match parse(&y).unwrap().secrets() {
            Err(Error::Config { field, .. }) => {
                assert_eq!(field, "auth.webhook_basic_auth.password")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn warnings_and_guards_are_checked_against_the_schedule_and_backend() {
        let y = MINIMAL.replace(
            "auth:",
            "autostop:\n  evaluation_interval: 5m\n  warn_before: 5m\nauth:",
        );
        assert_eq!(err_field(&y), "autostop.warn_before");
        let y = MINIMAL.replace("auth:", "autostop:\n  guards: {cpu: {window: 30s}}\nauth:");
        assert_eq!(err_field(&y), "autostop.guards.cpu.window");
        let y = MINIMAL.replace("auth:", "autostop:\n  guards: {gpu: {}}\nauth:");
        match parse(&y).unwrap().check_backend_fit() {
            Err(Error::Config { field, .. }) => assert_eq!(field, "autostop.guards.gpu"),
            other => panic!("{other:?}"),
        }
        let y = MINIMAL.replace("auth:", "prometheus:\n  exporter_job: \"a\\\"b\"\nauth:");
        assert_eq!(err_field(&y), "prometheus.exporter_job");
    }
}
