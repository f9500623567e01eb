//! Generated Prometheus alerting rules: plain rule files and
//! `monitoring.coreos.com/v1` `PrometheusRule` objects, both from one model.
//!
//! Two alerts: `NotebookIdleSoon` (`nbidle_action="warn"`, for people) and
//! `NotebookIdle` (`nbidle_action="stop"`, for nbidle's webhook).
//!
//! - With the exporter (the default), each compares the notebook's exported
//!   idle deadline with `time()`; extra signals and guards veto with
//!   `unless on (namespace, notebook)`. See `with_exporter`. No `for:`: the
//!   deadline already contains the idle time, so the alerts fire at the
//!   first evaluation past it (the warning at the first one within
//!   `warn_before` of it), and a stop comes at most one evaluation interval
//!   and Alertmanager's `group_wait` after the deadline.
//! - Without it, only the kernel count is available: notebooks being scraped
//!   (`up`) unless a kernel ran, held with `for: idle_after`. See
//!   `without_exporter`.
//!
//! Either way a notebook started less than its idle time ago cannot fire.
//!
//! The expressions set the alerts' labels themselves (`label_replace`), and
//! the stop alert has no annotations: Prometheus expands every rule label and
//! annotation as a template, for every alert, at every evaluation, and with
//! 1,000 alerts active those expansions cost it more than ten times the query
//! (docs/benchmarks.md). The warning, for people, keeps its summary and
//! description.

pub(crate) mod signals;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use signals::{present_expr, Jobs, Signal, Threshold, NOTEBOOK_LABELS};

/// The label every nbidle alert carries; Alertmanager routes on it and the
/// webhook ignores alerts without it, so a misrouted alert stops nothing.
pub(crate) const ACTION_LABEL: &str = "nbidle_action";
pub(crate) const ACTION_STOP: &str = "stop";
pub(crate) const IDLE_ALERT: &str = "NotebookIdle";
pub(crate) const GROUP_NAME: &str = "nbidle.idle";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RuleFile {
    pub(crate) groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RuleGroup {
    pub(crate) name: String,
    pub(crate) interval: String,
    pub(crate) rules: Vec<AlertRule>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct AlertRule {
    pub(crate) alert: String,
    /// Sets `labels` itself (see [`AlertRule::new`]).
    pub(crate) expr: String,
    /// Only where the expression does not already hold the idle time.
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub(crate) for_: Option<String>,
    /// The labels `expr` sets; not written as the rule's `labels:`.
    #[serde(skip)]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
}

impl AlertRule {
    /// The alert `alert` with the action label `action`: the expression
    /// sets the labels with `label_replace`, which costs Prometheus a label
    /// copy per alert, where a rule's `labels:` would cost a template
    /// expansion per label, alert and evaluation.
    fn new(
        alert: &str,
        action: &str,
        expr: String,
        for_: Option<String>,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        let labels = BTreeMap::from([
            (ACTION_LABEL.to_string(), action.to_string()),
            ("severity".to_string(), "info".to_string()),
        ]);
        // The values are constants without `$`, so nothing in them is a
        // reference to a capture group.
        let expr = labels.iter().fold(expr, |e, (k, v)| {
            format!(
                "label_replace(\n{},\n  \"{k}\", \"{v}\", \"\", \"\"\n)",
                indent(&e)
            )
        });
        AlertRule {
            alert: alert.into(),
            expr,
            for_,
            labels,
            annotations,
        }
    }
}

/// How `nbidle rules` writes the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A Prometheus rule file (`rule_files:`).
    RuleFile,
    /// A prometheus-operator `PrometheusRule` object.
    PrometheusRule,
}

impl Format {
    /// The file `nbidle rules --out` writes.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::RuleFile => "nbidle.rules.yml",
            Format::PrometheusRule => "nbidle-prometheusrule.yaml",
        }
    }
}

pub(crate) const WARN_ALERT: &str = "NotebookIdleSoon";
pub(crate) const ACTION_WARN: &str = "warn";

/// The signals and guards the idle rule is made of, from the config.
pub(crate) fn configured_signals(cfg: &Config) -> Vec<Signal> {
    let a = &cfg.autostop;
    let mut out: Vec<Signal> = a.signals.iter().copied().map(Signal::from).collect();
    if let Some(c) = &a.guards.cpu {
        out.push(match cfg.backend.kind() {
            crate::config::BackendKind::Local => Signal::ProcessCpu(c.clone()),
            _ => Signal::Cpu(c.clone()),
        });
    }
    if let Some(g) = &a.guards.gpu {
        out.push(Signal::Gpu(g.clone()));
    }
    if let Some(e) = &a.busy_expr {
        out.push(Signal::Expr(e.clone()));
    }
    out
}

fn jobs(cfg: &Config) -> Jobs {
    Jobs {
        notebooks: cfg.prometheus.notebook_job.clone(),
        exporter: cfg.prometheus.exporter_job.clone(),
    }
}

/// `(busy1) or (busy2) ...`, wrapped whole: `unless` binds tighter than
/// `or`, so `x unless a or b` would mean `(x unless a) or b`.
fn busy_union(signals: &[Signal], jobs: &Jobs, t: &Threshold) -> String {
    let terms = signals
        .iter()
        .map(|s| format!("(\n{}\n)", indent(&s.busy_expr(jobs, t))))
        .collect::<Vec<_>>()
        .join("\nor\n");
    format!("(\n{}\n)", indent(&terms))
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds the rule model from the config.
pub(crate) fn build(cfg: &Config) -> Result<RuleFile> {
    if !cfg.prometheus.enabled {
        return Err(Error::config(
            "prometheus.enabled",
            "is false: there is nothing to generate rules for",
        ));
    }
    let rules = if cfg.exporter.enabled {
        with_exporter(cfg)
    } else {
        without_exporter(cfg)?
    };
    Ok(RuleFile {
        groups: vec![RuleGroup {
            name: GROUP_NAME.into(),
            interval: cfg.autostop.evaluation_interval.prometheus(),
            rules,
        }],
    })
}

fn why(signals: &[Signal]) -> String {
    signals
        .iter()
        .map(Signal::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One series per notebook, keeping its `owner` label, from series that
/// several nbidle replicas may each publish: the latest value wins, and
/// replicas that briefly disagree on the owner still give one series (a
/// second would duplicate alerts and break the one-to-one joins).
fn one_per_notebook(selector: &str) -> String {
    format!("topk by ({NOTEBOOK_LABELS}) (1, max by ({NOTEBOOK_LABELS}, owner) ({selector}))")
}

/// The default: thresholds per notebook from nbidle's exporter, so one rule
/// serves every notebook whatever its idle time.
///
/// With the activity signal the rule is a single join: the exporter's last
/// activity already includes the start (so a notebook younger than its idle
/// time cannot be idle), busy kernels (activity "now"), and is absent when a
/// probe fails (so a failure never looks idle). Other signals and guards
/// veto with `unless`. Every selector costs a lookup over all notebooks'
/// series, so the rule keeps them few.
fn with_exporter(cfg: &Config) -> Vec<AlertRule> {
    let jobs = jobs(cfg);
    let ex = &jobs.exporter;
    let on = format!("on ({NOTEBOOK_LABELS})");
    // Every exporter series is read through `max by`: with several nbidle
    // replicas each publishes its own copy (differing in instance and pod),
    // and one alert per notebook must come out. The latest deadline wins.
    let idle_after = one_per_notebook(&format!(
        "nbidle_notebook_idle_after_seconds{{job=\"{ex}\"}}"
    ));
    let warn_s = cfg.autostop.warn_before.0.as_secs();
    let stop_t = Threshold {
        per_notebook: idle_after.clone(),
        window: cfg.autostop.idle_after.0,
    };
    let warn_t = Threshold {
        per_notebook: format!("({idle_after} - {warn_s})"),
        window: cfg
            .autostop
            .idle_after
            .0
            .saturating_sub(cfg.autostop.warn_before.0),
    };
    let all = configured_signals(cfg);
    let activity = all.contains(&Signal::Activity);
    let others: Vec<Signal> = all.into_iter().filter(|s| *s != Signal::Activity).collect();
    let deadline = one_per_notebook(&format!(
        "nbidle_notebook_idle_deadline_timestamp_seconds{{job=\"{ex}\"}}"
    ));
    // Without the activity signal: time since the start, and only for
    // notebooks whose probe works.
    let since_start = |t: &Threshold| {
        format!(
            "(\n  (time() - max by ({NOTEBOOK_LABELS}) (nbidle_notebook_started_timestamp_seconds{{job=\"{ex}\"}}))\n  >= {on} group_left (owner) {thr}\n)\nand {on} (max by ({NOTEBOOK_LABELS}) (nbidle_notebook_probe_success{{job=\"{ex}\"}}) == 1)",
            thr = t.per_notebook
        )
    };
    let vetoed = |base: String, t: &Threshold| {
        if others.is_empty() {
            base
        } else {
            format!("{base}\nunless {on}\n{}", busy_union(&others, &jobs, t))
        }
    };
    // Values: seconds past the deadline (stop), seconds left (warning).
    let (stop_base, warn_base) = if activity {
        (
            format!("(time() - {deadline}) >= 0"),
            format!("({deadline} - time()) <= {warn_s} > 0"),
        )
    } else {
        (
            format!("(\n  {}\n)", since_start(&stop_t)),
            format!("(\n  {}\n)", since_start(&warn_t)),
        )
    };
    let stop_expr = vetoed(stop_base, &stop_t);
    let warn_expr = if activity {
        vetoed(warn_base, &warn_t)
    } else {
        // Warned while idle for the warning threshold and not yet for the
        // stop's; vetoed first, so a busy notebook is not "past the stop".
        format!(
            "(\n{}\n)\nunless {on}\n(\n{}\n)",
            indent(&vetoed(warn_base, &warn_t)),
            indent(&stop_expr)
        )
    };
    let why = why(&configured_signals(cfg));
    let nb = "{{ $labels.namespace }}/{{ $labels.notebook }}";
    // No `for:`: the deadline (and, without the activity signal, the age
    // compared with the idle time) already holds the idle time; another
    // evaluation on top of it only delays the stop. Activity that Prometheus
    // had not scraped yet when the alert fired is caught by nbidle's
    // re-check of its own latest probe (`autostop.recheck`).
    vec![
        AlertRule::new(
            WARN_ALERT,
            ACTION_WARN,
            warn_expr,
            None,
            BTreeMap::from([
                (
                    "summary".to_string(),
                    format!("Notebook {nb} will be stopped soon"),
                ),
                (
                    "description".to_string(),
                    if activity {
                        format!("Notebook {nb}{{{{ if $labels.owner }}}} of {{{{ $labels.owner }}}}{{{{ end }}}} has shown no work ({why}); it will be stopped in {{{{ $value | humanizeDuration }}}} unless it is used. Silence NotebookIdle for it to keep it running.")
                    } else {
                        format!("Notebook {nb}{{{{ if $labels.owner }}}} of {{{{ $labels.owner }}}}{{{{ end }}}} has shown no work ({why}); it will be stopped in about {} unless it is used. Silence NotebookIdle for it to keep it running.", cfg.autostop.warn_before)
                    },
                ),
            ]),
        ),
        // For nbidle's webhook, which reads labels only.
        AlertRule::new(IDLE_ALERT, ACTION_STOP, stop_expr, None, BTreeMap::new()),
    ]
}

/// Without the exporter only the kernel count is available; the idle time
/// is global and held with `for:`.
fn without_exporter(cfg: &Config) -> Result<Vec<AlertRule>> {
    let signals = configured_signals(cfg);
    if signals.iter().any(|s| matches!(s, Signal::Activity)) {
        return Err(Error::config(
            "autostop.signals",
            "the activity signal needs exporter.enabled: true",
        ));
    }
    let jobs = jobs(cfg);
    let idle_after = cfg.autostop.idle_after;
    let warn_after = idle_after.0.saturating_sub(cfg.autostop.warn_before.0);
    let rule = |t: &Threshold| {
        format!(
            "{present}\nunless on ({NOTEBOOK_LABELS})\n{busy}",
            present = present_expr(&jobs.notebooks),
            busy = busy_union(&signals, &jobs, t)
        )
    };
    // No per-notebook series exist here; time-based signals use the global idle time.
    let global = |d: std::time::Duration| Threshold {
        per_notebook: d.as_secs().to_string(),
        window: d,
    };
    let why = why(&signals);
    let nb = "{{ $labels.namespace }}/{{ $labels.notebook }}";
    Ok(vec![
        AlertRule::new(
            WARN_ALERT,
            ACTION_WARN,
            rule(&global(warn_after)),
            Some(crate::config::prometheus_duration(warn_after)),
            BTreeMap::from([
                ("summary".to_string(), format!("Notebook {nb} will be stopped soon")),
                (
                    "description".to_string(),
                    format!("Notebook {nb} has shown no work ({why}); it will be stopped in about {} unless it is used. Silence NotebookIdle for it to keep it running.", cfg.autostop.warn_before),
                ),
            ]),
        ),
        AlertRule::new(
            IDLE_ALERT,
            ACTION_STOP,
            rule(&global(idle_after.0)),
            Some(idle_after.prometheus()),
            BTreeMap::new(),
        ),
    ])
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PrometheusRuleObject<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: &'a RuleFile,
}

#[derive(Serialize)]
struct ObjectMeta {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
}

/// Renders the rules in the requested format as YAML.
pub fn render(cfg: &Config, format: Format) -> Result<String> {
    let rules = build(cfg)?;
    let header = "# Generated by `nbidle rules`; edit the nbidle config, not this file.\n";
    let body = match format {
        Format::RuleFile => serde_yaml::to_string(&rules)?,
        Format::PrometheusRule => {
            let mut labels = cfg.prometheus.labels.0.clone();
            labels.insert("app.kubernetes.io/name".into(), "nbidle".into());
            serde_yaml::to_string(&PrometheusRuleObject {
                api_version: "monitoring.coreos.com/v1",
                kind: "PrometheusRule",
                metadata: ObjectMeta {
                    name: "nbidle-idle".into(),
                    namespace: cfg.kubernetes.namespace.clone(),
                    labels,
                },
                spec: &rules,
            })?
        }
    };
    Ok(format!("{header}{body}"))
}

/// `--explain`: each rule with the signals and thresholds it is made of.
pub fn explain(cfg: &Config) -> Result<String> {
    let rules = build(cfg)?;
    let a = &cfg.autostop;
    let mut out = String::new();
    for g in &rules.groups {
        out.push_str(&format!(
            "group {} (evaluated every {})\n",
            g.name, g.interval
        ));
        for r in &g.rules {
            let held = r.for_.as_ref().map_or(
                "no for: fires at the first evaluation that matches".into(),
                |f| format!("for {f}"),
            );
            out.push_str(&format!(
                "  alert {} (labels {:?}, {held})\n",
                r.alert, r.labels
            ));
        }
    }
    if cfg.exporter.enabled {
        out.push_str(&format!(
            "  watched: notebooks in nbidle's exporter (job {:?}) that opted in, answer probes, and are older than their idle time\n",
            cfg.prometheus.exporter_job
        ));
        out.push_str(&format!(
            "  idle time: per notebook from nbidle_notebook_idle_after_seconds (default {}, bounds {} .. {}); warning {} before\n",
            a.idle_after,
            a.min_idle_after.map_or("none".into(), |d| d.to_string()),
            a.max_idle_after.map_or("none".into(), |d| d.to_string()),
            a.warn_before
        ));
    } else {
        out.push_str(&format!(
            "  watched: notebooks scraped by job {:?} (up == 1), idle for {} (held with for:)\n",
            cfg.prometheus.notebook_job, a.idle_after
        ));
    }
    for s in configured_signals(cfg) {
        out.push_str(&format!("  {}: idle when {}\n", s.name(), s.describe()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn default_config() -> Config {
        Config::from_yaml(
            "backend: {kind: local, local: {notebooks: []}}",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn default_rules_warn_then_stop_on_the_exported_deadline() {
        let mut cfg = default_config();
        // The local backend's default cpu guard: see local_cpu_guard_*.
        cfg.autostop.guards.cpu = None;
        let r = build(&cfg).unwrap();
        let g = &r.groups[0];
        assert_eq!(g.interval, "1m");
        let (warn, stop) = (&g.rules[0], &g.rules[1]);
        assert_eq!(
            (warn.alert.as_str(), stop.alert.as_str()),
            (WARN_ALERT, IDLE_ALERT)
        );
        assert_eq!(stop.labels[ACTION_LABEL], ACTION_STOP);
        assert_eq!(warn.labels[ACTION_LABEL], ACTION_WARN);
        let deadline = "topk by (namespace, notebook) (1, max by (namespace, notebook, owner) (nbidle_notebook_idle_deadline_timestamp_seconds{job=\"nbidle-exporter\"}))";
        let labelled = |expr: String, action: &str| {
            format!("label_replace(\n  label_replace(\n    {expr},\n    \"nbidle_action\", \"{action}\", \"\", \"\"\n  ),\n  \"severity\", \"info\", \"\", \"\"\n)")
        };
        assert_eq!(
            stop.expr,
            labelled(format!("(time() - {deadline}) >= 0"), "stop")
        );
        assert_eq!(
            warn.expr,
            labelled(format!("({deadline} - time()) <= 300 > 0"), "warn")
        );
        // The deadline holds the idle time: no `for:` on top of it.
        assert_eq!((&warn.for_, &stop.for_), (&None, &None));
        // Nothing for Prometheus to expand per alert but the warning's text.
        assert!(stop.annotations.is_empty());
        assert_eq!(warn.annotations.len(), 2);
        let text = render(&default_config(), Format::RuleFile).unwrap();
        assert!(
            !text.contains("for:") && !text.contains("labels:"),
            "{text}"
        );
    }

    #[test]
    fn without_the_exporter_the_kernel_rule_holds_for_idle_after() {
        let mut cfg = default_config();
        cfg.exporter.enabled = false;
        cfg.autostop.signals = vec![crate::config::SignalName::Kernels];
        let r = build(&cfg).unwrap();
        let stop = &r.groups[0].rules[1];
        assert_eq!(stop.for_.as_deref(), Some("30m"));
        assert!(stop.expr.contains("up{job=\"nbidle-notebooks\"} == 1"));
        assert!(stop.expr.contains(
            "max_over_time(kernel_currently_running_total{job=\"nbidle-notebooks\"}[30m])"
        ));
        cfg.autostop.signals = vec![crate::config::SignalName::Activity];
        assert!(build(&cfg).is_err());
    }

    #[test]
    fn guards_and_busy_expr_join_the_busy_union() {
        let mut cfg = Config::from_yaml(
            "auth: {webhook_token: w, api_tokens: [a]}\nbackend: {kind: kubeflow}",
            std::path::Path::new("."),
        )
        .unwrap();
        cfg.autostop.guards.cpu = Some(crate::config::CpuGuard {
            enabled: true,
            threshold_cores: 0.1,
            window: crate::config::HumanDuration(std::time::Duration::from_secs(300)),
        });
        cfg.autostop.busy_expr = Some("my_busy_notebooks > 0".into());
        let stop = build(&cfg).unwrap().groups[0].rules[1].expr.clone();
        assert!(stop.contains("container_cpu_usage_seconds_total"));
        assert!(stop.contains("nbidle_notebook_pod_info"));
        assert!(stop.contains("my_busy_notebooks > 0"));
    }

    #[test]
    fn local_cpu_guard_is_on_by_default_and_reads_the_process_counter() {
        let stop = build(&default_config()).unwrap().groups[0].rules[1]
            .expr
            .clone();
        assert!(
            stop.contains("unless on (namespace, notebook)")
                && stop.contains(
                    "max by (namespace, notebook) (rate(nbidle_notebook_cpu_seconds_total{job=\"nbidle-exporter\"}[5m])) > 0.05"
                ),
            "{stop}"
        );
        assert!(
            !stop.contains("container_cpu_usage_seconds_total"),
            "{stop}"
        );
        // Too few samples for a rate (a restart) is kept, not idle.
        assert!(
            stop.contains(
                "(max by (namespace, notebook) (count_over_time(nbidle_notebook_cpu_seconds_total{job=\"nbidle-exporter\"}[5m])) < 2)"
            ),
            "{stop}"
        );
    }

    #[test]
    fn prometheus_rule_carries_configured_labels() {
        let cfg = Config::from_yaml(
            "prometheus: {labels: \"k8s-app-pod:true\"}\nbackend: {kind: local, local: {}}",
            std::path::Path::new("."),
        )
        .unwrap();
        let y = render(&cfg, Format::PrometheusRule).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(v["kind"], "PrometheusRule");
        assert_eq!(v["metadata"]["labels"]["k8s-app-pod"], "true");
        assert_eq!(v["spec"]["groups"][0]["rules"][1]["alert"], IDLE_ALERT);
    }

    #[test]
    fn disabled_prometheus_is_an_error_naming_the_key() {
        let mut cfg = default_config();
        cfg.prometheus.enabled = false;
        assert!(
            matches!(build(&cfg), Err(Error::Config { field, .. }) if field == "prometheus.enabled")
        );
    }
}
