//! `webhook`: the limits on the Alertmanager webhook's request bodies.

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WebhookConfig {
    /// Largest accepted webhook body. Alertmanager's `max_alerts` keeps
    /// payloads well under this.
    pub(crate) max_body_bytes: u64,
    /// Bytes of webhook bodies read at the same time, over all requests;
    /// beyond it a request gets 503 with `Retry-After` and Alertmanager
    /// delivers it again.
    pub(crate) max_bytes_in_flight: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_body_bytes: 4 * 1024 * 1024,
            max_bytes_in_flight: 16 * 1024 * 1024,
        }
    }
}

impl WebhookConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_body_bytes < 1024 {
            return Err(Error::config(
                "webhook.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.max_bytes_in_flight < self.max_body_bytes {
            return Err(Error::config(
                "webhook.max_bytes_in_flight",
                format!(
                    "must be at least webhook.max_body_bytes ({})",
                    self.max_body_bytes
                ),
            ));
        }
        Ok(())
    }
}
