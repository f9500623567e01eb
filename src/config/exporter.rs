//! `exporter`: nbidle's Jupyter activity exporter, its probe schedule and
//! the limits on what one probe may read.

use std::time::Duration;

use serde::Deserialize;

use super::values::HumanDuration;
use crate::error::{Error, Result};

/// The `exporter` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterConfig {
    /// Whether nbidle probes notebooks and serves `/metrics/notebooks`.
    pub enabled: bool,
    /// Time between probe rounds (independent of scrapes).
    pub interval: HumanDuration,
    /// Per-probe timeout; a notebook that does not answer in time reports failure.
    pub timeout: HumanDuration,
    /// Probes in flight at once.
    pub concurrency: usize,
    /// Largest probe response body read (`/api/kernels`, `/api/terminals`,
    /// `/api/status`); a larger one fails the probe.
    pub max_response_bytes: u64,
    /// Most kernels taken from one `/api/kernels`; more fail the probe.
    pub max_kernels: usize,
    /// Most terminals taken from one `/api/terminals`; more fail the probe.
    pub max_terminals: usize,
}

/// Bounds of `exporter.max_response_bytes`: an honest answer with a
/// thousand kernels is about 150 KiB; the most stays far below nbidle's
/// memory, since `2 × concurrency` responses can be in flight at once.
const MIN_RESPONSE_BYTES: u64 = 16 * 1024;
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// Bound of `exporter.max_kernels` and `exporter.max_terminals`.
const MAX_ITEMS: usize = 1_000_000;

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            enabled: true,
            interval: HumanDuration::secs(15),
            timeout: HumanDuration::secs(5),
            concurrency: 64,
            max_response_bytes: 1024 * 1024,
            max_kernels: 1000,
            max_terminals: 1000,
        }
    }
}

impl ExporterConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if self.interval.0 < Duration::from_secs(1) {
            return Err(Error::config("exporter.interval", "must be at least 1s"));
        }
        if self.timeout.0 < Duration::from_millis(100)
            || self.timeout.0 > self.interval.0.max(Duration::from_secs(1)) * 4
        {
            return Err(Error::config(
                "exporter.timeout",
                "must be at least 100ms and at most 4 × exporter.interval",
            ));
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            return Err(Error::config(
                "exporter.concurrency",
                "must be between 1 and 4096",
            ));
        }
        if !(MIN_RESPONSE_BYTES..=MAX_RESPONSE_BYTES).contains(&self.max_response_bytes) {
            return Err(Error::config(
                "exporter.max_response_bytes",
                format!("must be between {MIN_RESPONSE_BYTES} (16 KiB) and {MAX_RESPONSE_BYTES} (64 MiB)"),
            ));
        }
        for (key, n) in [
            ("exporter.max_kernels", self.max_kernels),
            ("exporter.max_terminals", self.max_terminals),
        ] {
            if !(1..=MAX_ITEMS).contains(&n) {
                return Err(Error::config(
                    key,
                    format!("must be between 1 and {MAX_ITEMS}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{err_field, parse, MINIMAL};

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
}
