//! `alertmanager`: how the generated Alertmanager route delivers idle
//! alerts to nbidle, and where nbidle reaches Alertmanager's API for Keep
//! running (silences).

use std::time::Duration;

use serde::Deserialize;

use super::values::{check_url, HumanDuration, TlsClientConfig};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AlertmanagerConfig {
    /// The URL Alertmanager posts to; default: `http://<listen>/webhook/alertmanager`.
    pub(crate) webhook_url: Option<String>,
    /// Wait this long to batch the first alerts of a group. nbidle's route
    /// groups by notebook, and a notebook has one stop alert, so there is
    /// nothing to batch: the default is short, and a stop follows its alert
    /// by about this much.
    pub(crate) group_wait: HumanDuration,
    pub(crate) group_interval: HumanDuration,
    /// Re-send a still-firing alert this often (a stop missed while nbidle
    /// was down longer than Alertmanager's retries is caught here).
    pub(crate) repeat_interval: HumanDuration,
    /// How Alertmanager verifies nbidle's certificate when nbidle serves
    /// TLS; the generated webhook receiver carries it.
    pub(crate) tls_config: Option<TlsClientConfig>,
    /// Alertmanager's base URL, for Keep running (silences through its API
    /// v2). Unset (with `urls`): Keep running is unavailable.
    pub(crate) url: Option<String>,
    /// Several replicas' base URLs instead: each call uses the first that
    /// answers (replicas gossip silences, so one copy is enough).
    pub(crate) urls: Vec<String>,
    /// How long one call to Alertmanager's API may take.
    pub(crate) api_timeout: HumanDuration,
    /// The longest a notebook may be kept running by one request.
    pub(crate) keep_running_max: HumanDuration,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            webhook_url: None,
            group_wait: HumanDuration::secs(1),
            group_interval: HumanDuration::secs(5 * 60),
            repeat_interval: HumanDuration::secs(60 * 60),
            tls_config: None,
            url: None,
            urls: Vec::new(),
            api_timeout: HumanDuration::secs(5),
            keep_running_max: HumanDuration::secs(7 * 24 * 60 * 60),
        }
    }
}

impl AlertmanagerConfig {
    /// The API's base URLs: `url`, or `urls`; empty when neither is set.
    pub(crate) fn api_urls(&self) -> Vec<String> {
        self.url.iter().chain(&self.urls).cloned().collect()
    }

    fn validate_api(&self) -> Result<()> {
        if self.url.is_some() && !self.urls.is_empty() {
            return Err(Error::config(
                "alertmanager.urls",
                "set url or urls, not both",
            ));
        }
        let keys = self
            .url
            .iter()
            .map(|u| ("alertmanager.url".to_string(), u))
            .chain(
                self.urls
                    .iter()
                    .enumerate()
                    .map(|(i, u)| (format!("alertmanager.urls[{i}]"), u)),
            );
        for (key, u) in keys {
            check_url(u).map_err(|m| Error::config(&key, m))?;
            // nbidle's HTTP client is built without TLS (it probes
            // notebooks in-cluster or on loopback).
            if !u.starts_with("http://") {
                return Err(Error::config(
                    key,
                    format!("{u:?}: only http is supported; reach Alertmanager's API over http (its Service, or loopback)"),
                ));
            }
        }
        if self.api_timeout.0 < Duration::from_millis(100) {
            return Err(Error::config(
                "alertmanager.api_timeout",
                "must be at least 100ms",
            ));
        }
        if self.keep_running_max.0 < Duration::from_secs(60) {
            return Err(Error::config(
                "alertmanager.keep_running_max",
                "must be at least 1m",
            ));
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<()> {
        self.validate_api()?;
        if let Some(url) = &self.webhook_url {
            check_url(url).map_err(|m| Error::config("alertmanager.webhook_url", m))?;
        }
        for (key, d) in [
            ("alertmanager.group_interval", self.group_interval),
            ("alertmanager.repeat_interval", self.repeat_interval),
        ] {
            if d.0 < Duration::from_secs(1) {
                return Err(Error::config(key, "must be at least 1s"));
            }
        }
        match &self.tls_config {
            Some(t) => t.validate("alertmanager.tls_config"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err_field, parse, MINIMAL};

    fn with(section: &str) -> String {
        format!("{MINIMAL}alertmanager:\n{section}")
    }

    #[test]
    fn keep_running_needs_an_http_url_and_takes_replicas() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.alertmanager.api_urls().is_empty(), "unset by default");
        assert_eq!(c.alertmanager.keep_running_max.0.as_secs(), 7 * 24 * 3600);
        let c = parse(&with("  url: http://am:9093/\n")).unwrap();
        assert_eq!(c.alertmanager.api_urls(), ["http://am:9093/"]);
        let c = parse(&with(
            "  urls: [\"http://am-0:9093\", \"http://am-1:9093\"]\n",
        ))
        .unwrap();
        assert_eq!(c.alertmanager.api_urls().len(), 2);
        for (section, key) in [
            (
                "  url: http://a:1\n  urls: [\"http://b:1\"]\n",
                "alertmanager.urls",
            ),
            ("  url: \"am:9093\"\n", "alertmanager.url"),
            ("  url: https://am:9093\n", "alertmanager.url"),
            (
                "  urls: [\"http://a:1\", \"ftp://b\"]\n",
                "alertmanager.urls[1]",
            ),
            ("  api_timeout: 10ms\n", "alertmanager.api_timeout"),
            ("  keep_running_max: 30s\n", "alertmanager.keep_running_max"),
        ] {
            assert_eq!(err_field(&with(section)), key, "{section}");
        }
    }
}
