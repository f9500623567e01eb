//! A warning for idle times shorter than JupyterLab's autosave interval.
//!
//! Typing is not activity until it is saved: JupyterLab saves an open
//! document every 120 s by default (`autosaveInterval` of
//! `@jupyterlab/docmanager-extension`), and nbidle sees the save. With an
//! idle time below that, someone who only types can be stopped between two
//! saves, and the edits since the last one are lost with the stop. The
//! config still works as written, so this warns and does not refuse.

use std::time::Duration;

use super::{BackendConfig, Config, HumanDuration};

/// JupyterLab's default autosave interval.
pub(crate) const JUPYTERLAB_AUTOSAVE: Duration = Duration::from_secs(120);

impl Config {
    /// One line per configured idle time below [`JUPYTERLAB_AUTOSAVE`],
    /// naming its key: `autostop.idle_after` when a notebook gets it (after
    /// `autostop.min_idle_after`), each local notebook's own `idle_after`,
    /// and on Kubernetes `autostop.min_idle_after`, which lets annotations
    /// go that low. Nothing while auto-stop is off.
    pub fn autosave_warnings(&self) -> Vec<String> {
        let a = &self.autostop;
        if !a.enabled {
            return Vec::new();
        }
        let bounds = a.idle_bounds();
        let short = |d: Duration| d < JUPYTERLAB_AUTOSAVE;
        let mut found: Vec<(String, Duration)> = Vec::new();
        let default_used = match &self.backend {
            BackendConfig::Local(local) => {
                let stoppable = local
                    .notebooks
                    .iter()
                    .enumerate()
                    .filter(|(_, nb)| nb.autostop);
                let mut default_used = false;
                for (i, nb) in stoppable {
                    match nb.idle_after {
                        Some(own) => {
                            let d = bounds.effective(Some(own.0));
                            if short(d) {
                                found.push((format!("backend.local.notebooks[{i}].idle_after"), d));
                            }
                        }
                        None => default_used = true,
                    }
                }
                default_used
            }
            _ => {
                if let Some(min) = a.min_idle_after.filter(|m| short(m.0)) {
                    found.push(("autostop.min_idle_after".into(), min.0));
                }
                true
            }
        };
        let default = bounds.effective(None);
        if default_used && short(default) {
            found.insert(0, ("autostop.idle_after".into(), default));
        }
        found
            .into_iter()
            .map(|(key, d)| {
                format!(
                    "{key}: {} is shorter than JupyterLab's autosave interval ({}s by default): edits not yet saved are lost when the notebook is stopped; choose at least {}, or lower JupyterLab's autosaveInterval",
                    HumanDuration(d),
                    JUPYTERLAB_AUTOSAVE.as_secs(),
                    HumanDuration(JUPYTERLAB_AUTOSAVE),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{parse, MINIMAL};

    fn warnings(autostop: &str, notebook_extra: &str) -> Vec<String> {
        let yaml = MINIMAL
            .replace("auth:", &format!("autostop:\n{autostop}\nauth:"))
            .replace(
                "        url: \"http://127.0.0.1:8888/\"\n",
                &format!("        url: \"http://127.0.0.1:8888/\"\n{notebook_extra}"),
            );
        parse(&yaml).unwrap().autosave_warnings()
    }

    #[test]
    fn an_idle_time_below_the_autosave_interval_is_named_with_its_key() {
        let w = warnings(
            "  idle_after: 1m\n  warn_before: 30s\n  evaluation_interval: 10s",
            "",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("autostop.idle_after: 1m is shorter than JupyterLab's autosave interval (120s by default)"), "{w:?}");
        assert!(w[0].contains("edits not yet saved are lost"), "{w:?}");
        assert!(warnings(
            "  idle_after: 2m\n  warn_before: 30s\n  evaluation_interval: 10s",
            ""
        )
        .is_empty());
        assert!(warnings("  idle_after: 30m", "").is_empty(), "the default");
        // Off: nothing is stopped, nothing is lost.
        assert!(warnings(
            "  idle_after: 1m\n  warn_before: 30s\n  evaluation_interval: 10s\n  enabled: false",
            ""
        )
        .is_empty());
    }

    #[test]
    fn a_notebook_s_own_idle_time_is_named_and_the_bounds_apply() {
        let own = "        idle_after: 90s\n";
        let w = warnings("  idle_after: 30m", own);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("backend.local.notebooks[0].idle_after: 1m30s is shorter"),
            "{w:?}"
        );
        // Raised by min_idle_after: no warning.
        assert!(warnings("  idle_after: 30m\n  min_idle_after: 10m", own).is_empty());
        // The default is used by no notebook: not named.
        assert!(warnings(
            "  idle_after: 1m\n  warn_before: 30s\n  evaluation_interval: 10s",
            "        idle_after: 10m\n"
        )
        .is_empty());
        // Opted out: never stopped.
        assert!(warnings(
            "  idle_after: 30m",
            &format!("{own}        autostop: false\n")
        )
        .is_empty());
    }

    #[test]
    fn on_kubernetes_a_low_min_idle_after_is_named() {
        let yaml = "auth: {webhook_token: wh, api_tokens: [api]}\nautostop: {min_idle_after: 1m, warn_before: 30s, evaluation_interval: 10s}\nbackend: {kind: kubeflow}\n";
        let w = crate::config::testing::parse(yaml)
            .unwrap()
            .autosave_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("autostop.min_idle_after: 1m is shorter"),
            "{w:?}"
        );
    }
}
