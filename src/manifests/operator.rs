//! prometheus-operator's objects: a `PodMonitor` scraping the notebook
//! pods, a `ServiceMonitor` for nbidle (`/metrics` and the exporter), and
//! `AlertmanagerConfig`s routing idle alerts to nbidle's webhook.

use serde_json::json;

use super::scheme;
use crate::config::{BackendConfig, Config, StatefulSetConfig};
use crate::rules::{ACTION_LABEL, ACTION_STOP, ACTION_WARN};

/// The operator's `tlsConfig` for reaching nbidle's Service: the CA from
/// `ca.crt` of `kubernetes.tls_secret` (cert-manager's layout), the
/// Service's DNS name as the name to verify.
fn operator_tls_config(cfg: &Config) -> Option<serde_json::Value> {
    let k = &cfg.kubernetes;
    let secret = k.tls_secret.as_ref()?;
    Some(json!({
        "ca": {"secret": {"name": secret, "key": "ca.crt"}},
        "serverName": format!("{}.{}.svc", k.service, k.namespace),
    }))
}

fn object_meta(cfg: &Config, name: &str, namespace: &str) -> serde_json::Value {
    let mut labels: serde_json::Map<String, serde_json::Value> = cfg
        .prometheus
        .labels
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    labels.insert("app.kubernetes.io/name".into(), "nbidle".into());
    json!({"name": name, "namespace": namespace, "labels": labels})
}

fn namespace_selector(cfg: &Config) -> serde_json::Value {
    let k = &cfg.kubernetes;
    if k.notebook_namespaces.is_empty() {
        json!({"any": true})
    } else {
        json!({"matchNames": k.notebook_namespaces})
    }
}

/// Scrapes every notebook pod's own `/metrics` (Jupyter's kernel gauges, for
/// the `kernels` and `server_activity` signals).
pub(super) fn pod_monitor(cfg: &Config) -> serde_json::Value {
    let k = &cfg.kubernetes;
    let (selector, relabelings) = match &cfg.backend {
        BackendConfig::Statefulset(s) => statefulset_pods(s),
        _ => kubeflow_pods(cfg),
    };
    let mut relabelings = relabelings;
    // The rules select on this job name.
    relabelings.push(json!({"targetLabel": "job", "replacement": cfg.prometheus.notebook_job}));
    let mut pm = json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": object_meta(cfg, "nbidle-notebooks", &k.namespace),
        "spec": {
            "namespaceSelector": namespace_selector(cfg),
            "selector": selector,
            "podMetricsEndpoints": [{
                "port": k.notebook_port,
                "interval": cfg.autostop.evaluation_interval.prometheus(),
                "relabelings": relabelings,
            }],
        },
    });
    // jupyter_server ≥ 2 accepts `Authorization: Bearer <token>`; the
    // operator reads the Secret from the PodMonitor's namespace.
    if let Some(secret) = &k.notebook_metrics_secret {
        pm["spec"]["podMetricsEndpoints"][0]["authorization"] =
            json!({"type": "Bearer", "credentials": {"name": secret, "key": "token"}});
    }
    pm
}

/// Kubeflow's notebook pods carry the notebook's name in a label, and
/// Kubeflow serves a notebook under `/notebook/<namespace>/<name>/`.
fn kubeflow_pods(cfg: &Config) -> (serde_json::Value, Vec<serde_json::Value>) {
    let k = &cfg.kubernetes;
    let pod_label = format!(
        "__meta_kubernetes_pod_label_{}",
        sanitize(&k.notebook_label)
    );
    let selector = json!({"matchExpressions": [{"key": k.notebook_label, "operator": "Exists"}]});
    let relabelings = vec![
        json!({
            "sourceLabels": ["__meta_kubernetes_namespace", pod_label],
            "separator": "/",
            "regex": "(.+)/(.+)",
            "targetLabel": "__metrics_path__",
            "replacement": "/notebook/$1/$2/metrics",
        }),
        json!({"sourceLabels": [pod_label], "targetLabel": "notebook"}),
    ];
    (selector, relabelings)
}

/// A StatefulSet's pods are selected by the backend's label selector (which
/// assumes the pod template carries the labels the StatefulSet is selected
/// by), the notebook is the StatefulSet that controls the pod, and Jupyter
/// serves `/metrics` under the path of `jupyter_url`.
fn statefulset_pods(sts: &StatefulSetConfig) -> (serde_json::Value, Vec<serde_json::Value>) {
    const OWNER: &str = "__meta_kubernetes_pod_controller_name";
    let selector = json!({
        "matchExpressions": selector_requirements(&sts.label_selector),
    });
    let path = url_path(&sts.jupyter_url)
        .replace("{namespace}", "${1}")
        .replace("{name}", "${2}");
    let relabelings = vec![
        json!({
            "sourceLabels": ["__meta_kubernetes_pod_controller_kind"],
            "regex": "StatefulSet",
            "action": "keep",
        }),
        json!({
            "sourceLabels": ["__meta_kubernetes_namespace", OWNER],
            "separator": "/",
            "regex": "(.+)/(.+)",
            "targetLabel": "__metrics_path__",
            "replacement": format!("{path}metrics"),
        }),
        json!({"sourceLabels": [OWNER], "targetLabel": "notebook"}),
    ];
    (selector, relabelings)
}

/// The path of a URL template, ending in `/`: `http://{name}.svc:8888/lab/`
/// → `/lab/`.
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("/");
    if path.ends_with('/') {
        path.to_string()
    } else {
        format!("{path}/")
    }
}

/// An equality-based label selector (`key=value`, `key==value`,
/// `key!=value`, `key`, `!key`; validated by the config) as a label
/// selector's `matchExpressions`.
fn selector_requirements(sel: &str) -> Vec<serde_json::Value> {
    sel.split(',')
        .map(str::trim)
        .map(|term| {
            let (key, op, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, "NotIn", Some(v))
            } else if let Some((k, v)) = term.split_once("==") {
                (k, "In", Some(v))
            } else if let Some((k, v)) = term.split_once('=') {
                (k, "In", Some(v))
            } else if let Some(k) = term.strip_prefix('!') {
                (k, "DoesNotExist", None)
            } else {
                (term, "Exists", None)
            };
            let mut r = json!({"key": key.trim(), "operator": op});
            if let Some(v) = value {
                r["values"] = json!([v.trim()]);
            }
            r
        })
        .collect()
}

/// Prometheus label names allow `[a-zA-Z0-9_]`; Kubernetes label keys also
/// `-`, `.` and `/`, which service discovery turns into `_`.
fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

pub(super) fn service_monitor(cfg: &Config) -> serde_json::Value {
    let k = &cfg.kubernetes;
    let interval = cfg.autostop.evaluation_interval.prometheus();
    let mut sm = json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": object_meta(cfg, &k.service, &k.namespace),
        "spec": {
            "namespaceSelector": {"matchNames": [k.namespace]},
            "selector": {"matchLabels": {"app.kubernetes.io/name": "nbidle"}},
            "endpoints": [
                {"port": k.service_port, "path": "/metrics", "interval": interval},
                {
                    "port": k.service_port,
                    "path": "/metrics/notebooks",
                    "interval": interval,
                    // The series name their notebook's namespace.
                    "honorLabels": true,
                    "relabelings": [{"targetLabel": "job", "replacement": cfg.prometheus.exporter_job}],
                },
            ],
        },
    });
    // With a metrics token nbidle answers both paths to that token only;
    // the operator reads it from the Secret in nbidle's namespace.
    if scheme(cfg) == "https" {
        let tls = operator_tls_config(cfg);
        for ep in sm["spec"]["endpoints"].as_array_mut().into_iter().flatten() {
            ep["scheme"] = json!("https");
            if let Some(t) = &tls {
                ep["tlsConfig"] = t.clone();
            }
        }
    }
    let a = &cfg.auth;
    if a.metrics_token.is_some() || a.metrics_token_file.is_some() {
        let auth =
            json!({"type": "Bearer", "credentials": {"name": k.metrics_secret, "key": "token"}});
        for ep in sm["spec"]["endpoints"].as_array_mut().into_iter().flatten() {
            ep["authorization"] = auth.clone();
        }
    }
    sm
}

/// The operator adds a `namespace="<its own namespace>"` matcher to every
/// AlertmanagerConfig route, and idle alerts carry the notebook's
/// namespace. So with `kubernetes.notebook_namespaces` listed, one
/// AlertmanagerConfig goes into each of them (each needs the webhook Secret
/// there); with none listed, one goes into nbidle's namespace and the
/// Alertmanager resource must set `alertmanagerConfigMatcherStrategy: {type: None}`.
pub(super) fn alertmanager_configs(cfg: &Config) -> Vec<serde_json::Value> {
    let k = &cfg.kubernetes;
    let am = &cfg.alertmanager;
    let url = am.webhook_url.clone().unwrap_or_else(|| {
        let port = cfg.listen.port();
        format!(
            "{}://{}.{}.svc:{port}/webhook/alertmanager",
            scheme(cfg),
            k.service,
            k.namespace
        )
    });
    let namespaces = if k.notebook_namespaces.is_empty() {
        vec![k.namespace.clone()]
    } else {
        k.notebook_namespaces.clone()
    };
    namespaces
        .iter()
        .map(|ns| {
            let mut http_config = json!({"authorization": {"type": "Bearer", "credentials": {"name": k.webhook_secret, "key": "token"}}});
            if scheme(cfg) == "https" {
                if let Some(t) = operator_tls_config(cfg) {
                    http_config["tlsConfig"] = t;
                }
            }
            json!({
                "apiVersion": "monitoring.coreos.com/v1alpha1",
                "kind": "AlertmanagerConfig",
                "metadata": object_meta(cfg, "nbidle", ns),
                "spec": {
                    // Stop alerts to "nbidle"; warnings, a child route, to
                    // "nbidle-warnings", which also sends their resolves.
                    "route": {
                        "receiver": "nbidle",
                        "matchers": [{"name": ACTION_LABEL, "value": format!("{ACTION_STOP}|{ACTION_WARN}"), "matchType": "=~"}],
                        "groupBy": ["namespace", "notebook"],
                        "groupWait": am.group_wait.prometheus(),
                        "groupInterval": am.group_interval.prometheus(),
                        "repeatInterval": am.repeat_interval.prometheus(),
                        "routes": [{
                            "receiver": "nbidle-warnings",
                            "matchers": [{"name": ACTION_LABEL, "value": ACTION_WARN, "matchType": "="}],
                        }],
                    },
                    "receivers": [
                        {
                            "name": "nbidle",
                            "webhookConfigs": [{
                                "url": url,
                                "sendResolved": false,
                                "httpConfig": http_config,
                            }],
                        },
                        {
                            "name": "nbidle-warnings",
                            "webhookConfigs": [{
                                "url": url,
                                "sendResolved": true,
                                "httpConfig": http_config,
                            }],
                        },
                    ],
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::{render, Manifest};
    use serde_json::Value as Json;

    fn config(backend: &str) -> Config {
        let yaml = format!("auth: {{webhook_token: w, api_tokens: [a]}}\nbackend:\n{backend}\n");
        Config::from_yaml(&yaml, std::path::Path::new(".")).unwrap()
    }

    fn pod_monitor_of(cfg: &Config) -> Json {
        serde_yaml::from_str(&render(cfg, Manifest::PodMonitor).unwrap()).unwrap()
    }

    #[test]
    fn statefulset_pod_monitor_selects_by_the_label_selector_and_names_the_owner() {
        let cfg = config(
            "  kind: statefulset\n  statefulset:\n    label_selector: \"app.kubernetes.io/component=notebook, tier==lab,stage!=old,gpu,!nbidle.io/skip\"\n    jupyter_url: \"http://{name}.{namespace}.svc:8888/user/{namespace}/{name}\"",
        );
        let pm = pod_monitor_of(&cfg);
        assert_eq!(
            pm["spec"]["selector"],
            json!({"matchExpressions": [
                {"key": "app.kubernetes.io/component", "operator": "In", "values": ["notebook"]},
                {"key": "tier", "operator": "In", "values": ["lab"]},
                {"key": "stage", "operator": "NotIn", "values": ["old"]},
                {"key": "gpu", "operator": "Exists"},
                {"key": "nbidle.io/skip", "operator": "DoesNotExist"},
            ]})
        );
        let ep = &pm["spec"]["podMetricsEndpoints"][0];
        assert_eq!(ep["port"], "notebook-port");
        assert_eq!(
            ep["relabelings"],
            json!([
                {"sourceLabels": ["__meta_kubernetes_pod_controller_kind"], "regex": "StatefulSet", "action": "keep"},
                {
                    "sourceLabels": ["__meta_kubernetes_namespace", "__meta_kubernetes_pod_controller_name"],
                    "separator": "/",
                    "regex": "(.+)/(.+)",
                    "targetLabel": "__metrics_path__",
                    "replacement": "/user/${1}/${2}/metrics",
                },
                {"sourceLabels": ["__meta_kubernetes_pod_controller_name"], "targetLabel": "notebook"},
                {"targetLabel": "job", "replacement": "nbidle-notebooks"},
            ])
        );
        // Nothing of Kubeflow's notebook label.
        assert!(!serde_json::to_string(&pm)
            .unwrap()
            .contains("notebook_name"));
    }

    #[test]
    fn statefulset_pod_monitor_scrapes_metrics_at_the_jupyter_root_by_default() {
        let cfg = config("  kind: statefulset\n  statefulset:\n    label_selector: app=jupyter");
        let pm = pod_monitor_of(&cfg);
        let rl = &pm["spec"]["podMetricsEndpoints"][0]["relabelings"][1];
        assert_eq!(rl["replacement"], "/metrics");
    }

    #[test]
    fn kubeflow_pod_monitor_selects_by_the_notebook_label() {
        let pm = pod_monitor_of(&config("  kind: kubeflow"));
        assert_eq!(
            pm["spec"]["selector"],
            json!({"matchExpressions": [{"key": "notebook-name", "operator": "Exists"}]})
        );
        let rl = &pm["spec"]["podMetricsEndpoints"][0]["relabelings"];
        assert_eq!(rl[0]["replacement"], "/notebook/$1/$2/metrics");
        assert_eq!(
            rl[1]["sourceLabels"],
            json!(["__meta_kubernetes_pod_label_notebook_name"])
        );
    }

    #[test]
    fn url_path_keeps_the_path_and_ends_it_with_a_slash() {
        assert_eq!(url_path("http://{name}.{namespace}.svc:8888/"), "/");
        assert_eq!(url_path("http://{name}.{namespace}.svc"), "/");
        assert_eq!(url_path("http://h/a/{name}?x=1"), "/a/{name}/");
    }
}
