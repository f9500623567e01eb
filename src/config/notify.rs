//! `notify`: what nbidle tells the notebooks themselves. `notify.jupyterlab`
//! pushes each notebook's state to its JupyterLab extension
//! (`nbidle-jupyterlab`) so people see the warning in the notebook.

use std::time::Duration;

use serde::Deserialize;

use super::values::HumanDuration;
use crate::error::{Error, Result};

/// The `notify` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NotifyConfig {
    pub(crate) jupyterlab: JupyterLabNotify,
}

/// `notify.jupyterlab`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct JupyterLabNotify {
    /// Whether nbidle pushes state to the notebooks' extension.
    pub(crate) enabled: bool,
    /// One push (request and its answer) at most.
    pub(crate) timeout: HumanDuration,
}

impl Default for JupyterLabNotify {
    fn default() -> Self {
        JupyterLabNotify {
            enabled: true,
            timeout: HumanDuration::secs(2),
        }
    }
}

impl NotifyConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let t = self.jupyterlab.timeout.0;
        if t < Duration::from_millis(100) || t > Duration::from_secs(30) {
            return Err(Error::config(
                "notify.jupyterlab.timeout",
                "must be between 100ms and 30s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{err_field, parse, MINIMAL};

    #[test]
    fn defaults_and_bounds_name_the_key() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.notify.jupyterlab.enabled);
        assert_eq!(c.notify.jupyterlab.timeout.0.as_secs(), 2);
        let with = |s: &str| format!("{MINIMAL}notify:\n  jupyterlab:\n{s}");
        let c = parse(&with("    enabled: false\n    timeout: 500ms\n")).unwrap();
        assert!(!c.notify.jupyterlab.enabled);
        assert_eq!(c.notify.jupyterlab.timeout.0.as_millis(), 500);
        for bad in ["    timeout: 50ms\n", "    timeout: 31s\n"] {
            assert_eq!(err_field(&with(bad)), "notify.jupyterlab.timeout");
        }
        assert_eq!(
            err_field(&with("    retries: 3\n")),
            "notify.jupyterlab.retries"
        );
    }

    #[test]
    fn the_page_url_is_normalised_or_derived_from_a_loopback_listen() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.page_url().as_deref(), Some("http://127.0.0.1:9877/"));
        let c = parse(&format!("listen: \"0.0.0.0:9877\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.page_url(), None);
        let c = parse(&format!("listen: \"[::1]:80\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.page_url().as_deref(), Some("http://[::1]:80/"));
        let c = parse(&format!(
            "listen: \"0.0.0.0:9877\"\nserver:\n  external_url: \"https://nbidle.example.org/lab\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(
            c.page_url().as_deref(),
            Some("https://nbidle.example.org/lab/")
        );
        for bad in ["ftp://x/", "/relative/", "https://x/?a=1", "https://x/#f"] {
            assert_eq!(
                err_field(&format!("server:\n  external_url: \"{bad}\"\n{MINIMAL}")),
                "server.external_url",
                "{bad}"
            );
        }
    }
}
