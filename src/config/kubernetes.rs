//! `kubernetes`: where things are in the cluster, for the generated
//! PodMonitor, ServiceMonitor and AlertmanagerConfig (`nbidle manifests`),
//! and how nbidle talks to the API server.

use std::time::Duration;

use serde::Deserialize;

use super::values::{check_label_key, check_notebook_name, HumanDuration};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KubernetesConfig {
    /// nbidle's own namespace.
    pub(crate) namespace: String,
    /// nbidle's Service; its port named `service_port` serves HTTP.
    pub(crate) service: String,
    pub(crate) service_port: String,
    /// Namespaces with notebooks; empty: all namespaces.
    pub(crate) notebook_namespaces: Vec<String>,
    /// The notebook pods' label carrying the notebook name (Kubeflow's).
    pub(crate) notebook_label: String,
    /// The notebook container's port name (Kubeflow's).
    pub(crate) notebook_port: String,
    /// The Secret (in each namespace that gets an AlertmanagerConfig) holding
    /// the webhook token under the key `token`.
    pub(crate) webhook_secret: String,
    /// A Secret (in `namespace`, key `token`) with a token the notebooks'
    /// Jupyter servers accept, for a PodMonitor scraping servers that
    /// protect `/metrics` (jupyter_server ≥ 2 with a token set).
    pub(crate) notebook_metrics_secret: Option<String>,
    /// The Secret (in `namespace`, key `token`) holding `auth.metrics_token`,
    /// for the ServiceMonitor; used only when a metrics token is set.
    pub(crate) metrics_secret: String,
    /// With TLS: a Secret holding `ca.crt` (cert-manager's layout) that the
    /// generated ServiceMonitor and AlertmanagerConfigs verify nbidle with.
    pub(crate) tls_secret: Option<String>,
    /// Keep the generated PrometheusRule, PodMonitor, ServiceMonitor and
    /// AlertmanagerConfig applied (server-side apply, field manager
    /// `nbidle`); needs a Kubernetes backend and RBAC for those objects.
    pub(crate) apply: bool,
    /// The most one API server call, or one stop or start with its retries,
    /// may take; past it the webhook answers 503 (Alertmanager delivers
    /// again) and the REST API 503.
    pub(crate) request_timeout: HumanDuration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespace: "nbidle".into(),
            service: "nbidle".into(),
            service_port: "http".into(),
            notebook_namespaces: Vec::new(),
            notebook_label: "notebook-name".into(),
            notebook_port: "notebook-port".into(),
            webhook_secret: "nbidle-webhook".into(),
            notebook_metrics_secret: None,
            metrics_secret: "nbidle-metrics".into(),
            tls_secret: None,
            apply: false,
            request_timeout: HumanDuration::secs(10),
        }
    }
}

impl KubernetesConfig {
    pub(super) fn validate(&self) -> Result<()> {
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
        if t < Duration::from_secs(1) || t > Duration::from_secs(300) {
            return Err(Error::config(
                k("request_timeout"),
                format!("{} is outside 1s..5m", self.request_timeout),
            ));
        }
        check_label_key(&self.notebook_label).map_err(|m| Error::config(k("notebook_label"), m))
    }
}
