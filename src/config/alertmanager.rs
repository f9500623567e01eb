//! `alertmanager`: how the generated Alertmanager route delivers idle
//! alerts to nbidle.

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
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            webhook_url: None,
            group_wait: HumanDuration::secs(1),
            group_interval: HumanDuration::secs(5 * 60),
            repeat_interval: HumanDuration::secs(60 * 60),
            tls_config: None,
        }
    }
}

impl AlertmanagerConfig {
    pub(super) fn validate(&self) -> Result<()> {
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
