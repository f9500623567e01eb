//! Generated configuration for the other half of the loop: the Prometheus
//! scrape job that finds notebooks through nbidle's service discovery, and
//! the Alertmanager configuration that delivers idle alerts to nbidle.

use serde_yaml::{Mapping, Value};

use crate::config::Config;
use crate::error::Result;
use crate::rules::{ACTION_LABEL, ACTION_STOP};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Manifest {
    /// `scrape_configs` entry: notebooks discovered from nbidle's `/sd/notebooks`.
    PrometheusScrape,
    /// A complete Alertmanager config: a route for nbidle's alerts and its
    /// webhook receiver. Merge the route and receiver into an existing config.
    Alertmanager,
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
pub fn nbidle_base_url(cfg: &Config) -> String {
    let listen = cfg
        .listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    format!("http://{listen}")
}

fn scrape_config(cfg: &Config) -> Value {
    let base = nbidle_base_url(cfg);
    let host = base.trim_start_matches("http://").to_string();
    let interval = cfg.autostop.evaluation_interval.prometheus();
    let mut jobs = vec![map(vec![
        ("job_name", s(&cfg.prometheus.notebook_job)),
        ("scrape_interval", s(&interval)),
        (
            "http_sd_configs",
            list(vec![map(vec![
                ("url", s(&format!("{base}/sd/notebooks"))),
                ("refresh_interval", s(&interval)),
            ])]),
        ),
    ])];
    if cfg.exporter.enabled {
        jobs.push(map(vec![
            ("job_name", s(&cfg.prometheus.exporter_job)),
            ("scrape_interval", s(&interval)),
            ("metrics_path", s("/metrics/notebooks")),
            // The series name their notebook's namespace; keep it rather
            // than nbidle's own target labels.
            ("honor_labels", Value::Bool(true)),
            (
                "static_configs",
                list(vec![map(vec![("targets", list(vec![s(&host)]))])]),
            ),
        ]));
    }
    map(vec![("scrape_configs", list(jobs))])
}

/// The webhook's credentials as Alertmanager's `http_config`: a token file
/// is referenced by path (the secret stays out of the generated file), an
/// inline token is written inline.
fn http_config(cfg: &Config) -> Value {
    let a = &cfg.auth;
    let mut pairs = vec![];
    if let Some(file) = &a.webhook_token_file {
        pairs.push((
            "authorization",
            map(vec![
                ("type", s("Bearer")),
                ("credentials_file", s(&file.display().to_string())),
            ]),
        ));
    } else if let Some(token) = &a.webhook_token {
        pairs.push((
            "authorization",
            map(vec![("type", s("Bearer")), ("credentials", s(token))]),
        ));
    } else if let Some(b) = &a.webhook_basic_auth {
        let mut basic = vec![("username", s(&b.username))];
        match (&b.password, &b.password_file) {
            (_, Some(f)) => basic.push(("password_file", s(&f.display().to_string()))),
            (Some(p), None) => basic.push(("password", s(p))),
            (None, None) => {}
        }
        pairs.push(("basic_auth", map(basic)));
    }
    map(pairs)
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
                    list(vec![map(vec![
                        ("receiver", s("nbidle")),
                        (
                            "matchers",
                            list(vec![s(&format!("{ACTION_LABEL}=\"{ACTION_STOP}\""))]),
                        ),
                        // One notification per notebook: a failed stop is
                        // retried alone, without re-sending its neighbours.
                        ("group_by", list(vec![s("namespace"), s("notebook")])),
                        ("group_wait", s(&am.group_wait.prometheus())),
                        ("group_interval", s(&am.group_interval.prometheus())),
                        ("repeat_interval", s(&am.repeat_interval.prometheus())),
                    ])]),
                ),
            ]),
        ),
        (
            "receivers",
            list(vec![
                map(vec![("name", s("default"))]),
                map(vec![
                    ("name", s("nbidle")),
                    (
                        "webhook_configs",
                        list(vec![map(vec![
                            ("url", s(&url)),
                            // Resolved alerts stop nothing; don't send them.
                            ("send_resolved", Value::Bool(false)),
                            ("http_config", http_config(cfg)),
                        ])]),
                    ),
                ]),
            ]),
        ),
    ])
}

pub fn render(cfg: &Config, which: Manifest) -> Result<String> {
    let doc = match which {
        Manifest::PrometheusScrape => scrape_config(cfg),
        Manifest::Alertmanager => alertmanager_config(cfg),
    };
    let header = "# Generated by `nbidle manifests`; edit the nbidle config, not this file.\n";
    Ok(format!("{header}{}", serde_yaml::to_string(&doc)?))
}
