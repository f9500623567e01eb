//! Generated configuration for the other half of the loop: the Prometheus
//! scrape job that finds notebooks through nbidle's service discovery, and
//! the Alertmanager configuration that delivers idle alerts to nbidle.
//! prometheus-operator's objects for the same (PodMonitor, ServiceMonitor,
//! AlertmanagerConfig) are in `operator`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_yaml::{Mapping, Value};

use crate::config::{Config, TlsClientConfig};
use crate::error::Result;
use crate::rules::{ACTION_LABEL, ACTION_STOP, ACTION_WARN};

mod operator;

/// Which configuration `nbidle manifests` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Manifest {
    /// `scrape_configs` entry: notebooks discovered from nbidle's `/sd/notebooks`.
    PrometheusScrape,
    /// A complete Alertmanager config: a route for nbidle's alerts and its
    /// webhook receiver. Merge the route and receiver into an existing config.
    Alertmanager,
    /// prometheus-operator `PodMonitor` scraping the notebook pods: Kubeflow's
    /// by their notebook label, StatefulSets' by the backend's label selector.
    PodMonitor,
    /// prometheus-operator `ServiceMonitor` for nbidle (`/metrics` and the exporter).
    ServiceMonitor,
    /// prometheus-operator `AlertmanagerConfig`(s) routing idle alerts to nbidle.
    AlertmanagerConfig,
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(s(k), v);
    }
    Value::Mapping(m)
}

fn list(items: Vec<Value>) -> Value {
    Value::Sequence(items)
}

/// Where Prometheus and Alertmanager reach nbidle: its listen address,
/// with an unspecified host replaced by loopback.
pub(crate) fn nbidle_base_url(cfg: &Config) -> String {
    let mut listen = cfg.listen;
    if listen.ip().is_unspecified() {
        listen.set_ip(match listen {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("{}://{listen}", scheme(cfg))
}

/// `https` when nbidle serves TLS (`server.web_config_file`).
fn scheme(cfg: &Config) -> &'static str {
    if cfg.server.web_config_file.is_some() {
        "https"
    } else {
        "http"
    }
}

/// A client's `tls_config` as Prometheus and Alertmanager read it.
fn tls_config(t: &TlsClientConfig) -> Value {
    let pairs = [
        ("ca_file", &t.ca_file),
        ("cert_file", &t.cert_file),
        ("key_file", &t.key_file),
        ("server_name", &t.server_name),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| (k, s(v))))
    .collect();
    map(pairs)
}

fn scrape_config(cfg: &Config) -> Value {
    let base = nbidle_base_url(cfg);
    let host = base
        .split_once("://")
        .map_or(base.as_str(), |(_, h)| h)
        .to_string();
    let tls = cfg.prometheus.tls_config.as_ref().map(tls_config);
    let interval = cfg.autostop.evaluation_interval.prometheus();
    let a = &cfg.auth;
    // nbidle's metrics token goes to nbidle only: to its service discovery,
    // not to the notebooks that discovery finds, which would learn it.
    let token = bearer_authorization(a.metrics_token_file.as_deref(), a.metrics_token.as_deref());
    let mut sd = vec![
        ("url", s(&format!("{base}/sd/notebooks"))),
        ("refresh_interval", s(&interval)),
    ];
    let mut exporter = vec![
        ("job_name", s(&cfg.prometheus.exporter_job)),
        ("scrape_interval", s(&interval)),
        ("metrics_path", s("/metrics/notebooks")),
        // The series name their notebook's namespace; keep it rather
        // than nbidle's own target labels.
        ("honor_labels", Value::Bool(true)),
    ];
    if let Some(auth) = token {
        sd.push(("authorization", auth.clone()));
        exporter.push(("authorization", auth));
    }
    if scheme(cfg) == "https" {
        exporter.push(("scheme", s("https")));
    }
    if let Some(t) = tls {
        sd.push(("tls_config", t.clone()));
        exporter.push(("tls_config", t));
    }
    exporter.push((
        "static_configs",
        list(vec![map(vec![("targets", list(vec![s(&host)]))])]),
    ));
    let mut jobs = vec![map(vec![
        ("job_name", s(&cfg.prometheus.notebook_job)),
        ("scrape_interval", s(&interval)),
        ("http_sd_configs", list(vec![map(sd)])),
    ])];
    if cfg.exporter.enabled {
        jobs.push(map(exporter));
    }
    map(vec![("scrape_configs", list(jobs))])
}

/// A bearer token as Prometheus's and Alertmanager's `authorization`: a
/// token file is referenced by path (the secret stays out of the generated
/// file), an inline token is written inline.
fn bearer_authorization(file: Option<&std::path::Path>, inline: Option<&str>) -> Option<Value> {
    let credentials = match (file, inline) {
        (Some(f), _) => ("credentials_file", s(&f.display().to_string())),
        (None, Some(t)) => ("credentials", s(t)),
        (None, None) => return None,
    };
    Some(map(vec![("type", s("Bearer")), credentials]))
}

/// The webhook's credentials as Alertmanager's `http_config`.
fn http_config(cfg: &Config) -> Value {
    let a = &cfg.auth;
    let mut pairs = vec![];
    if let Some(auth) =
        bearer_authorization(a.webhook_token_file.as_deref(), a.webhook_token.as_deref())
    {
        pairs.push(("authorization", auth));
    } else if let Some(b) = &a.webhook_basic_auth {
        let mut basic = vec![("username", s(&b.username))];
        match (&b.password, &b.password_file) {
            (_, Some(f)) => basic.push(("password_file", s(&f.display().to_string()))),
            (Some(p), None) => basic.push(("password", s(p))),
            (None, None) => {}
        }
        pairs.push(("basic_auth", map(basic)));
    }
    if let Some(t) = &cfg.alertmanager.tls_config {
        pairs.push(("tls_config", tls_config(t)));
    }
    map(pairs)
}

/// The route of nbidle's alerts with action `action` to `receiver`, one
/// group per notebook.
fn nbidle_route(receiver: &str, action: &str, am: &crate::config::AlertmanagerConfig) -> Value {
    map(vec![
        ("receiver", s(receiver)),
        (
            "matchers",
            list(vec![s(&format!("{ACTION_LABEL}=\"{action}\""))]),
        ),
        ("group_by", list(vec![s("namespace"), s("notebook")])),
        ("group_wait", s(&am.group_wait.prometheus())),
        ("group_interval", s(&am.group_interval.prometheus())),
        ("repeat_interval", s(&am.repeat_interval.prometheus())),
    ])
}

/// A receiver posting to nbidle's webhook at `url`.
fn webhook_receiver(name: &str, url: &str, send_resolved: bool, cfg: &Config) -> Value {
    map(vec![
        ("name", s(name)),
        (
            "webhook_configs",
            list(vec![map(vec![
                ("url", s(url)),
                ("send_resolved", Value::Bool(send_resolved)),
                ("http_config", http_config(cfg)),
            ])]),
        ),
    ])
}

fn alertmanager_config(cfg: &Config) -> Value {
    let am = &cfg.alertmanager;
    let url = am
        .webhook_url
        .clone()
        .unwrap_or_else(|| format!("{}/webhook/alertmanager", nbidle_base_url(cfg)));
    map(vec![
        (
            "route",
            map(vec![
                // Everything that is not for nbidle goes to a receiver that
                // does nothing; replace with your own.
                ("receiver", s("default")),
                (
                    "routes",
                    list(vec![
                        // One notification per notebook: a failed stop is
                        // retried alone, without re-sending its neighbours.
                        nbidle_route("nbidle", ACTION_STOP, am),
                        // Warnings, for the notebook's banner; people's own
                        // receivers (email, chat) go before this route with
                        // `continue: true` (alertmanager/warnings-example.yml).
                        nbidle_route("nbidle-warnings", ACTION_WARN, am),
                    ]),
                ),
            ]),
        ),
        (
            "receivers",
            list(vec![
                map(vec![("name", s("default"))]),
                // Resolved stop alerts stop nothing: not sent. A resolved
                // warning ends the notebook's banner: sent.
                webhook_receiver("nbidle", &url, false, cfg),
                webhook_receiver("nbidle-warnings", &url, true, cfg),
            ]),
        ),
    ])
}

/// `which` for `cfg`, as YAML (several objects as one multi-document
/// stream).
pub fn render(cfg: &Config, which: Manifest) -> Result<String> {
    let docs: Vec<String> = match which {
        Manifest::PrometheusScrape => vec![serde_yaml::to_string(&scrape_config(cfg))?],
        Manifest::Alertmanager => vec![serde_yaml::to_string(&alertmanager_config(cfg))?],
        Manifest::PodMonitor => vec![serde_yaml::to_string(&operator::pod_monitor(cfg))?],
        Manifest::ServiceMonitor => vec![serde_yaml::to_string(&operator::service_monitor(cfg))?],
        Manifest::AlertmanagerConfig => operator::alertmanager_configs(cfg)
            .iter()
            .map(serde_yaml::to_string)
            .collect::<std::result::Result<_, _>>()?,
    };
    let header = "# Generated by `nbidle manifests`; edit the nbidle config, not this file.\n";
    Ok(format!("{header}{}", docs.join("---\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One group per notebook, each with one stop alert: nothing to batch,
    /// so the route sends it after a second, not Alertmanager's usual 30s.
    #[test]
    fn the_default_route_sends_a_stop_alert_after_a_second() {
        let yaml = "auth: {webhook_token: w, api_tokens: [a]}\nbackend: {kind: kubeflow}\n";
        let cfg = Config::from_yaml(yaml, std::path::Path::new(".")).unwrap();
        let am: Value =
            serde_yaml::from_str(&render(&cfg, Manifest::Alertmanager).unwrap()).unwrap();
        let route = &am["route"]["routes"][0];
        assert_eq!(
            route["group_by"],
            serde_yaml::from_str::<Value>("[namespace, notebook]").unwrap()
        );
        assert_eq!(route["group_wait"], "1s");
        let objs = render(&cfg, Manifest::AlertmanagerConfig).unwrap();
        assert!(objs.contains("groupWait: 1s"), "{objs}");
    }

    /// Warnings reach nbidle too, resolved ones included (they end the
    /// banner); stop alerts' resolves are still not sent.
    #[test]
    fn warnings_are_routed_to_nbidle_with_their_resolves() {
        let yaml = "auth: {webhook_token: w, api_tokens: [a]}\nbackend: {kind: kubeflow}\n";
        let cfg = Config::from_yaml(yaml, std::path::Path::new(".")).unwrap();
        let am: Value =
            serde_yaml::from_str(&render(&cfg, Manifest::Alertmanager).unwrap()).unwrap();
        let routes = am["route"]["routes"].as_sequence().unwrap();
        let by_receiver = |name: &str| {
            let r = routes.iter().find(|r| r["receiver"] == name).unwrap();
            let recv = am["receivers"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .unwrap();
            (r["matchers"][0].clone(), recv["webhook_configs"][0].clone())
        };
        let (m, w) = by_receiver("nbidle-warnings");
        assert_eq!(m, "nbidle_action=\"warn\"");
        assert_eq!(w["send_resolved"], true);
        assert_eq!(w["http_config"]["authorization"]["credentials"], "w");
        let (m, w) = by_receiver("nbidle");
        assert_eq!(m, "nbidle_action=\"stop\"");
        assert_eq!(w["send_resolved"], false);
        assert_eq!(w["url"], by_receiver("nbidle-warnings").1["url"]);
        let objs: serde_json::Value =
            serde_yaml::from_str(&render(&cfg, Manifest::AlertmanagerConfig).unwrap()).unwrap();
        let child = &objs["spec"]["route"]["routes"][0];
        assert_eq!(child["receiver"], "nbidle-warnings");
        assert_eq!(child["matchers"][0]["value"], "warn");
        assert_eq!(
            objs["spec"]["receivers"][1]["webhookConfigs"][0]["sendResolved"],
            true
        );
    }

    /// Prometheus and Alertmanager reach an nbidle listening on every
    /// address through loopback; any other address is used as it is.
    #[test]
    fn base_url_replaces_only_an_unspecified_listen_address() {
        for (listen, want) in [
            ("0.0.0.0:9000", "http://127.0.0.1:9000"),
            ("[::]:9000", "http://[::1]:9000"),
            ("10.0.0.0:9000", "http://10.0.0.0:9000"),
            ("[fe80::1]:9000", "http://[fe80::1]:9000"),
        ] {
            let yaml = format!("listen: \"{listen}\"\nauth: {{webhook_token: w, api_tokens: [a]}}\nbackend: {{kind: kubeflow}}\n");
            let cfg = Config::from_yaml(&yaml, std::path::Path::new(".")).unwrap();
            assert_eq!(nbidle_base_url(&cfg), want, "{listen}");
            let am = render(&cfg, Manifest::AlertmanagerConfig).unwrap();
            assert!(
                am.contains("http://nbidle.nbidle.svc:9000/webhook/alertmanager"),
                "{am}"
            );
        }
    }
}
