//! `prometheus`: what the generated rules, scrape jobs and monitors select
//! on and carry.

use serde::Deserialize;

use super::values::{check_label_value, check_url, Labels, TlsClientConfig};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PrometheusConfig {
    /// Generate rules and monitors for Prometheus.
    pub(crate) enabled: bool,
    /// Prometheus's base URL (used for re-checks and by tooling).
    pub(crate) url: Option<String>,
    /// Labels put on generated PrometheusRule/monitor objects, so an operator's
    /// `ruleSelector` picks them up. `"k:v,k:v"` or a map.
    pub(crate) labels: Labels,
    /// The `job` label of the notebooks' scrape job; the rules select on it.
    pub(crate) notebook_job: String,
    /// The `job` label of the scrape job for nbidle's exporter (`/metrics/notebooks`).
    pub(crate) exporter_job: String,
    /// How Prometheus verifies nbidle's certificate when nbidle serves TLS
    /// (`server.web_config_file`); the generated scrape jobs carry it.
    pub(crate) tls_config: Option<TlsClientConfig>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            enabled: true,
            url: None,
            labels: Labels::default(),
            notebook_job: "nbidle-notebooks".into(),
            exporter_job: "nbidle-exporter".into(),
            tls_config: None,
        }
    }
}

impl PrometheusConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if let Some(url) = &self.url {
            check_url(url).map_err(|m| Error::config("prometheus.url", m))?;
        }
        self.labels.validate("prometheus.labels")?;
        // Both go into generated PromQL selectors.
        for (key, job) in [
            ("prometheus.notebook_job", &self.notebook_job),
            ("prometheus.exporter_job", &self.exporter_job),
        ] {
            if job.is_empty() {
                return Err(Error::config(key, "must not be empty"));
            }
            check_label_value(job).map_err(|m| Error::config(key, m))?;
        }
        match &self.tls_config {
            Some(t) => t.validate("prometheus.tls_config"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Labels;
    use crate::config::testing::{err_field, parse, MINIMAL};

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
}
