//! `backend`: what stops and starts notebooks. `kind` picks one of the
//! sections `local`, `kubeflow`, `statefulset` and `jupyterhub`; validation turns the
//! section as written into [`BackendConfig`], which carries the chosen
//! section alone, with what it requires present and its defaults filled in.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{check_label_selector, check_notebook_name, check_url, HumanDuration};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BackendKind {
    /// Processes on this machine.
    Local,
    /// Kubeflow `Notebook` resources (kubeflow.org/v1).
    Kubeflow,
    /// StatefulSets selected by label, scaled to 0 and back.
    Statefulset,
    /// The servers of a JupyterHub, through its REST API.
    Jupyterhub,
}

impl BackendKind {
    pub(crate) fn is_kubernetes(self) -> bool {
        matches!(self, BackendKind::Kubeflow | BackendKind::Statefulset)
    }

    /// The name of the kind's section (and of the kind in the file).
    fn key(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Kubeflow => "kubeflow",
            BackendKind::Statefulset => "statefulset",
            BackendKind::Jupyterhub => "jupyterhub",
        }
    }
}

/// The validated backend: the section `backend.kind` names.
#[derive(Debug, Clone)]
pub(crate) enum BackendConfig {
    Local(LocalConfig),
    Kubeflow(KubeflowConfig),
    Statefulset(StatefulSetConfig),
    Jupyterhub(JupyterHubConfig),
}

impl BackendConfig {
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            BackendConfig::Local(_) => BackendKind::Local,
            BackendConfig::Kubeflow(_) => BackendKind::Kubeflow,
            BackendConfig::Statefulset(_) => BackendKind::Statefulset,
            BackendConfig::Jupyterhub(_) => BackendKind::Jupyterhub,
        }
    }
}

/// `backend.kubeflow`. The namespaces watched are `kubernetes.notebook_namespaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KubeflowConfig {
    /// Only Notebooks matching this label selector (`key=value,key2`).
    pub(crate) label_selector: Option<String>,
    /// Where the exporter reaches a notebook's Jupyter server; `{namespace}`
    /// and `{name}` are replaced.
    pub(crate) jupyter_url: String,
}

/// `backend.statefulset`. The namespaces watched are `kubernetes.notebook_namespaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatefulSetConfig {
    /// The label selector that picks the StatefulSets that are notebooks.
    pub(crate) label_selector: String,
    /// Where the exporter reaches a notebook's Jupyter server; `{namespace}`
    /// and `{name}` are replaced.
    pub(crate) jupyter_url: String,
}

/// `backend.jupyterhub`: a JupyterHub's servers, through its REST API with
/// a service token (`token`, `token_file`, or the `JUPYTERHUB_API_TOKEN`
/// the Hub gives the services it runs; read with the other secrets).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JupyterHubConfig {
    /// The Hub's REST API, e.g. `http://127.0.0.1:8081/hub/api/`.
    pub(crate) api_url: String,
    /// The proxy's origin (`scheme://host[:port]/`), where the servers are
    /// reached at the URLs the Hub gives (`/user/{name}/`, with its
    /// `base_url`): the exporter probes them through it.
    pub(crate) public_url: String,
    /// The notebooks' namespace: one per Hub.
    #[serde(default = "JupyterHubConfig::default_name")]
    pub(crate) name: String,
    /// The service token inline (prefer `token_file`).
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) token_file: Option<PathBuf>,
    /// Users asked for per request of the list (the Hub caps it, 200 by
    /// default).
    #[serde(default = "JupyterHubConfig::default_page_size")]
    pub(crate) page_size: u32,
    /// Each call to the Hub's API ends after this long.
    #[serde(default = "JupyterHubConfig::default_request_timeout")]
    pub(crate) request_timeout: HumanDuration,
}

impl JupyterHubConfig {
    fn default_name() -> String {
        "jupyterhub".into()
    }

    fn default_page_size() -> u32 {
        200
    }

    fn default_request_timeout() -> HumanDuration {
        HumanDuration::secs(10)
    }

    fn validate(&self) -> Result<()> {
        let key = |f: &str| format!("backend.jupyterhub.{f}");
        check_notebook_name(&self.name).map_err(|m| Error::config(key("name"), m))?;
        check_url(&self.api_url).map_err(|m| Error::config(key("api_url"), m))?;
        check_url(&self.public_url).map_err(|m| Error::config(key("public_url"), m))?;
        // The Hub's server URLs hold its `base_url` already.
        let path = self
            .public_url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map_or("", |(_, path)| path);
        if !path.is_empty() {
            return Err(Error::config(
                key("public_url"),
                format!("must be the proxy's origin, without a path (not /{path}): the servers' URLs the Hub gives hold its base_url"),
            ));
        }
        if !(1..=10_000).contains(&self.page_size) {
            return Err(Error::config(
                key("page_size"),
                "must be between 1 and 10000",
            ));
        }
        let t = self.request_timeout.0;
        if t < Duration::from_millis(100) || t > Duration::from_secs(600) {
            return Err(Error::config(
                key("request_timeout"),
                "must be between 100ms and 10m",
            ));
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(Error::config(
                key("token"),
                "set token or token_file, not both",
            ));
        }
        Ok(())
    }
}

/// `backend` as written (named `BackendConfig` in serde's messages).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "struct BackendConfig")]
pub(super) struct BackendSection {
    kind: BackendKind,
    pub(super) local: Option<LocalConfig>,
    #[serde(default)]
    kubeflow: KubeBackendConfig,
    #[serde(default)]
    statefulset: KubeBackendConfig,
    pub(super) jupyterhub: Option<JupyterHubConfig>,
}

/// `backend.kubeflow` or `backend.statefulset` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubeBackendConfig {
    /// Only objects matching this label selector (`key=value,key2`);
    /// required for StatefulSets, which are not all notebooks.
    label_selector: Option<String>,
    /// Default for Kubeflow: its Service and `NB_PREFIX`,
    /// `http://{name}.{namespace}.svc/notebook/{namespace}/{name}/`;
    /// for StatefulSets: `http://{name}.{namespace}.svc/`.
    jupyter_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LocalConfig {
    /// SIGTERM, then SIGKILL after this long.
    pub(crate) stop_grace_period: HumanDuration,
    /// Stop every notebook when nbidle exits. Off by default: notebooks
    /// outlive an nbidle restart, which adopts them instead of respawning.
    pub(crate) stop_on_exit: bool,
    /// Time between scans of `/proc` that account each notebook's
    /// processes (CPU, memory, count); a stop scans on its own.
    pub(crate) process_scan_interval: HumanDuration,
    /// While a notebook is stopped, nbidle answers on its address: a page
    /// for browsers (why it stopped, a Start button), 503 for its API.
    pub(crate) stopped_page: bool,
    /// A browser's visit to a stopped notebook starts it (its API polling
    /// never does); each notebook may say otherwise.
    pub(crate) wake_on_visit: bool,
    pub(crate) notebooks: Vec<LocalNotebook>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            stop_grace_period: HumanDuration::secs(10),
            stop_on_exit: false,
            process_scan_interval: HumanDuration::secs(15),
            stopped_page: true,
            wake_on_visit: false,
            notebooks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalNotebook {
    pub(crate) name: String,
    /// argv of the notebook server; run in its own process group.
    pub(crate) command: Vec<String>,
    /// The workspace; the process runs here and it is never deleted by a stop.
    pub(crate) workdir: PathBuf,
    /// Base URL of the Jupyter server, e.g. `http://127.0.0.1:8888/`.
    pub(crate) url: String,
    /// Jupyter token, for probes and for users.
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// `false`: never stopped by an idle alert (a user can still stop it).
    #[serde(default = "LocalNotebook::default_autostop")]
    pub(crate) autostop: bool,
    /// This notebook's idle time, within `autostop.min/max_idle_after`.
    pub(crate) idle_after: Option<HumanDuration>,
    /// Who to warn before the stop (carried on `NotebookIdleSoon`).
    pub(crate) owner: Option<String>,
    /// `backend.local.wake_on_visit` for this notebook alone.
    pub(crate) wake_on_visit: Option<bool>,
}

impl BackendSection {
    pub(super) fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The section `kind` names, checked. A `local` section is held to its
    /// notebooks' own idle times even when another kind is chosen.
    pub(super) fn validate(self) -> Result<BackendConfig> {
        if let Some(local) = &self.local {
            local.validate_idle_times()?;
        }
        Ok(match self.kind {
            BackendKind::Local => {
                let local = self.local.ok_or_else(|| {
                    Error::config("backend.local", "required when backend.kind is local")
                })?;
                local.validate()?;
                BackendConfig::Local(local)
            }
            BackendKind::Kubeflow => {
                let k = self.kubeflow;
                let jupyter_url = k.jupyter_url.unwrap_or_else(|| {
                    "http://{name}.{namespace}.svc/notebook/{namespace}/{name}/".into()
                });
                let kubeflow = KubeflowConfig {
                    label_selector: k.label_selector,
                    jupyter_url,
                };
                let key = |f: &str| format!("backend.kubeflow.{f}");
                if let Some(sel) = &kubeflow.label_selector {
                    check_label_selector(sel)
                        .map_err(|m| Error::config(key("label_selector"), m))?;
                }
                check_jupyter_url(&kubeflow.jupyter_url, BackendKind::Kubeflow)?;
                BackendConfig::Kubeflow(kubeflow)
            }
            BackendKind::Statefulset => {
                let k = self.statefulset;
                let key = |f: &str| format!("backend.statefulset.{f}");
                let label_selector = k.label_selector.ok_or_else(|| {
                    Error::config(
                        key("label_selector"),
                        "required: it picks the StatefulSets that are notebooks",
                    )
                })?;
                check_label_selector(&label_selector)
                    .map_err(|m| Error::config(key("label_selector"), m))?;
                let jupyter_url = k
                    .jupyter_url
                    .unwrap_or_else(|| "http://{name}.{namespace}.svc/".into());
                check_jupyter_url(&jupyter_url, BackendKind::Statefulset)?;
                BackendConfig::Statefulset(StatefulSetConfig {
                    label_selector,
                    jupyter_url,
                })
            }
            BackendKind::Jupyterhub => {
                let hub = self.jupyterhub.ok_or_else(|| {
                    Error::config(
                        "backend.jupyterhub",
                        "required when backend.kind is jupyterhub",
                    )
                })?;
                hub.validate()?;
                BackendConfig::Jupyterhub(hub)
            }
        })
    }
}

/// A Kubernetes backend's `jupyter_url` template, with a name filled in,
/// must be a URL the exporter can probe.
fn check_jupyter_url(template: &str, kind: BackendKind) -> Result<()> {
    let key = format!("backend.{}.jupyter_url", kind.key());
    let url = template
        .replace("{namespace}", "ns")
        .replace("{name}", "nb");
    check_url(&url).map_err(|m| Error::config(key.clone(), m))?;
    if !url.starts_with("http://") {
        return Err(Error::config(
            key,
            "notebooks are probed over http:// inside the cluster",
        ));
    }
    Ok(())
}

impl LocalConfig {
    fn validate(&self) -> Result<()> {
        let grace = self.stop_grace_period.0;
        if grace < Duration::from_secs(1) || grace > Duration::from_secs(3600) {
            return Err(Error::config(
                "backend.local.stop_grace_period",
                "must be between 1s and 1h",
            ));
        }
        let scans = self.process_scan_interval.0;
        if scans < Duration::from_secs(1) || scans > Duration::from_secs(3600) {
            return Err(Error::config(
                "backend.local.process_scan_interval",
                "must be between 1s and 1h",
            ));
        }
        if self.wake_on_visit && !self.stopped_page {
            return Err(Error::config(
                "backend.local.wake_on_visit",
                "needs backend.local.stopped_page: the visit is seen by the stopped-notebook page",
            ));
        }
        let mut seen = HashSet::new();
        let mut urls = HashSet::new();
        for (i, nb) in self.notebooks.iter().enumerate() {
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
            if nb.wake_on_visit == Some(true) && !self.stopped_page {
                return Err(Error::config(
                    f("wake_on_visit"),
                    "needs backend.local.stopped_page: the visit is seen by the stopped-notebook page",
                ));
            }
            if !urls.insert(nb.url.trim_end_matches('/')) {
                return Err(Error::config(
                    f("url"),
                    format!("{:?} is used by another notebook", nb.url),
                ));
            }
        }
        Ok(())
    }

    fn validate_idle_times(&self) -> Result<()> {
        for (i, nb) in self.notebooks.iter().enumerate() {
            if nb.idle_after.is_some_and(|d| d.0 < Duration::from_secs(1)) {
                return Err(Error::config(
                    format!("backend.local.notebooks[{i}].idle_after"),
                    "must be at least 1s",
                ));
            }
        }
        Ok(())
    }

    /// Each notebook's workdir with its key.
    pub(super) fn workdirs(&self) -> impl Iterator<Item = (String, &PathBuf)> {
        self.notebooks
            .iter()
            .enumerate()
            .map(|(i, nb)| (format!("backend.local.notebooks[{i}].workdir"), &nb.workdir))
    }

    /// Whether a browser's visit starts this notebook.
    pub(crate) fn wakes_on_visit(&self, nb: &LocalNotebook) -> bool {
        self.stopped_page && nb.wake_on_visit.unwrap_or(self.wake_on_visit)
    }

    pub(super) fn workdirs_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        self.notebooks.iter_mut().map(|nb| &mut nb.workdir)
    }
}

impl LocalNotebook {
    /// A notebook says `autostop: false` to opt out; the others are stopped.
    fn default_autostop() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{err_field, parse, MINIMAL};
    use crate::config::HumanDuration;

    const KUBE_AUTH: &str = "auth: {webhook_token: w, api_tokens: [a]}\n";

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
    fn bounds_and_duplicates_are_rejected() {
        let y = MINIMAL.replace("  local:\n", "  local:\n    stop_grace_period: 0s\n");
        assert_eq!(err_field(&y), "backend.local.stop_grace_period");
        let y = MINIMAL.replace("  local:\n", "  local:\n    process_scan_interval: 500ms\n");
        assert_eq!(err_field(&y), "backend.local.process_scan_interval");
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
    fn wake_on_visit_is_off_by_default_and_per_notebook_wins() {
        let local = |y: &str| match parse(y).unwrap().backend {
            BackendConfig::Local(l) => l,
            other => panic!("{other:?}"),
        };
        let l = local(MINIMAL);
        assert!(l.stopped_page && !l.wake_on_visit);
        assert!(!l.wakes_on_visit(&l.notebooks[0]));
        let l = local(&MINIMAL.replace("  local:\n", "  local:\n    wake_on_visit: true\n"));
        assert!(l.wakes_on_visit(&l.notebooks[0]));
        let y = MINIMAL
            .replace("  local:\n", "  local:\n    wake_on_visit: true\n")
            .replace(
                "      - name: demo\n",
                "      - name: demo\n        wake_on_visit: false\n",
            );
        let l = local(&y);
        assert!(!l.wakes_on_visit(&l.notebooks[0]));
    }

    #[test]
    fn wake_on_visit_without_the_stopped_page_names_its_key() {
        let y = MINIMAL.replace(
            "  local:\n",
            "  local:\n    stopped_page: false\n    wake_on_visit: true\n",
        );
        assert_eq!(err_field(&y), "backend.local.wake_on_visit");
        let y = MINIMAL
            .replace("  local:\n", "  local:\n    stopped_page: false\n")
            .replace(
                "      - name: demo\n",
                "      - name: demo\n        wake_on_visit: true\n",
            );
        assert_eq!(err_field(&y), "backend.local.notebooks[0].wake_on_visit");
    }

    #[test]
    fn the_backend_carries_the_section_its_kind_names() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.backend.kind(), BackendKind::Local);
        match &c.backend {
            BackendConfig::Local(l) => {
                assert_eq!(l.notebooks[0].name, "demo");
                assert_eq!(l.stop_grace_period, HumanDuration::secs(10));
                assert!(!l.stop_on_exit);
            }
            other => panic!("{other:?}"),
        }

        // Unused sections are dropped; the default URL is the kind's own.
        let y = format!("{KUBE_AUTH}backend:\n  kind: kubeflow\n  statefulset: {{jupyter_url: \"http://x/\"}}\n  local: {{}}\n");
        match parse(&y).unwrap().backend {
            BackendConfig::Kubeflow(k) => assert_eq!(
                k,
                KubeflowConfig {
                    label_selector: None,
                    jupyter_url: "http://{name}.{namespace}.svc/notebook/{namespace}/{name}/"
                        .into(),
                }
            ),
            other => panic!("{other:?}"),
        }

        let y = format!("{KUBE_AUTH}backend:\n  kind: statefulset\n  statefulset: {{label_selector: \"app=nb\"}}\n  kubeflow: {{jupyter_url: \"http://x/\"}}\n");
        match parse(&y).unwrap().backend {
            BackendConfig::Statefulset(s) => assert_eq!(
                s,
                StatefulSetConfig {
                    label_selector: "app=nb".into(),
                    jupyter_url: "http://{name}.{namespace}.svc/".into(),
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_jupyterhub_section_has_defaults_and_names_its_keys() {
        let hub = |extra: &str| {
            format!("{KUBE_AUTH}backend:\n  kind: jupyterhub\n  jupyterhub:\n    api_url: \"http://127.0.0.1:8081/hub/api/\"\n    public_url: \"http://127.0.0.1:8000/\"\n    token: hub-secret\n{extra}")
        };
        let c = parse(&hub("")).unwrap();
        match &c.backend {
            BackendConfig::Jupyterhub(h) => {
                assert_eq!(h.name, "jupyterhub");
                assert_eq!(h.page_size, 200);
                assert_eq!(h.request_timeout, HumanDuration::secs(10));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.secrets().unwrap().hub_token.as_deref(),
            Some("hub-secret")
        );
        assert!(!BackendKind::Jupyterhub.is_kubernetes());
        for (extra, key) in [
            ("    name: Hub\n", "backend.jupyterhub.name"),
            ("    page_size: 0\n", "backend.jupyterhub.page_size"),
            (
                "    request_timeout: 1ms\n",
                "backend.jupyterhub.request_timeout",
            ),
            ("    token_file: t\n", "backend.jupyterhub.token"),
        ] {
            assert_eq!(err_field(&hub(extra)), key, "{extra}");
        }
        let y = hub("").replace("http://127.0.0.1:8000/", "not a url");
        assert_eq!(err_field(&y), "backend.jupyterhub.public_url");
        // The Hub's URLs hold its base_url: a path would be doubled.
        let y = hub("").replace("http://127.0.0.1:8000/", "http://127.0.0.1:8000/jhub/");
        assert_eq!(err_field(&y), "backend.jupyterhub.public_url");

        assert_eq!(
            err_field(&format!("{KUBE_AUTH}backend: {{kind: jupyterhub}}\n")),
            "backend.jupyterhub"
        );
        // nbidle's own credentials must not open the Hub.
        let y = hub("").replace("token: hub-secret", "token: w");
        match parse(&y).unwrap().secrets() {
            Err(Error::Config { field, .. }) => assert_eq!(field, "backend.jupyterhub.token"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_config_in_docs_jupyterhub_md_is_valid() {
        let doc = include_str!("../../docs/jupyterhub.md");
        let section = &doc[doc.find("## 2. Configure nbidle").expect("section 2")..];
        let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
        let yaml = &section[start..start + section[start..].find("```").unwrap()];
        match parse(yaml).unwrap().backend {
            BackendConfig::Jupyterhub(h) => {
                assert_eq!(h.name, "jupyterhub");
                assert_eq!(h.public_url, "http://proxy-public/");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_kind_without_what_it_requires_names_the_missing_key() {
        let refused = |y: &str| match parse(y) {
            Err(Error::Config { field, message }) => (field, message),
            other => panic!("{y}: {other:?}"),
        };
        let (field, message) = refused("backend: {kind: local}\n");
        assert_eq!(field, "backend.local");
        assert_eq!(message, "required when backend.kind is local");
        let (field, message) = refused(&format!(
            "{KUBE_AUTH}backend: {{kind: statefulset, kubeflow: {{label_selector: \"app=nb\"}}}}\n"
        ));
        assert_eq!(field, "backend.statefulset.label_selector");
        assert!(message.starts_with("required"), "{message}");
        let (field, _) = refused(&format!(
            "{KUBE_AUTH}backend: {{kind: kubeflow, kubeflow: {{jupyter_url: \"https://{{name}}/\"}}}}\n"
        ));
        assert_eq!(field, "backend.kubeflow.jupyter_url");
    }
}
