//! The text exposition of `/metrics/notebooks`, written by hand from the
//! last round's snapshot into one buffer sized up front, so 10,000
//! notebooks need no registry of series kept in step with the backend.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::bounded::Reason;
use super::probe::KERNEL_STATES;
use super::NotebookFacts;

pub(super) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders facts in the Prometheus text format. Deadlines later than
/// `deadline_horizon` (Unix seconds) are left out: the rules only compare
/// deadlines that are near or past, and every series a rule selects costs
/// Prometheus a lookup at every evaluation, so 10,000 busy notebooks cost
/// the rules nothing.
pub(crate) fn render(facts: &[NotebookFacts], deadline_horizon: f64) -> String {
    let mut out = String::with_capacity(256 + facts.len() * 900);
    let labels = |f: &NotebookFacts| {
        format!(
            "namespace=\"{}\",notebook=\"{}\"",
            escape(&f.state.id.namespace),
            escape(&f.state.id.name)
        )
    };
    let mut family = |name: &str, help: &str, rows: &mut dyn Iterator<Item = (String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (l, v) in rows {
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
    };
    family(
        "nbidle_notebook_idle_after_seconds",
        "The notebook's idle time, with its owner; absent when it opted out of auto-stop.",
        &mut facts.iter().filter(|f| f.state.autostop).map(|f| {
            let owner = escape(f.state.owner.as_deref().unwrap_or(""));
            (
                format!("{},owner=\"{owner}\"", labels(f)),
                f.state.idle_after_seconds as f64,
            )
        }),
    );
    family(
        "nbidle_notebook_started_timestamp_seconds",
        "When the notebook was last started.",
        &mut facts
            .iter()
            .filter_map(|f| f.state.started_at.map(|t| (labels(f), t.unix_seconds()))),
    );
    family(
        "nbidle_notebook_pod_info",
        "1 per pod of a notebook (Kubernetes backends): joins pod series such as cAdvisor CPU or DCGM GPU to notebooks.",
        &mut facts.iter().flat_map(|f| {
            f.pods
                .iter()
                .map(move |pod| (format!("{},pod=\"{}\"", labels(f), escape(pod)), 1.0))
        }),
    );
    family(
        "nbidle_notebook_probe_success",
        "1 if the last probe of the notebook's Jupyter API succeeded.",
        &mut facts.iter().filter_map(|f| {
            f.probe
                .as_ref()
                .map(|p| (labels(f), if p.ok { 1.0 } else { 0.0 }))
        }),
    );
    family(
        "nbidle_notebook_probe_failure",
        "1, with the reason, while the last probe of the notebook failed (timeout, connect, http_status, request, too_large, too_many, invalid_json).",
        &mut facts.iter().filter_map(|f| {
            let failure = f.probe.as_ref()?.failure.as_ref()?;
            Some((
                format!("{},reason=\"{}\"", labels(f), failure.reason.as_str()),
                1.0,
            ))
        }),
    );
    family(
        "nbidle_notebook_probe_duration_seconds",
        "How long the last probe took.",
        &mut facts.iter().filter_map(|f| {
            f.probe
                .as_ref()
                .map(|p| (labels(f), p.duration.as_secs_f64()))
        }),
    );
    let ok = |f: &&NotebookFacts| f.probe.as_ref().is_some_and(|p| p.ok);
    family(
        "nbidle_notebook_kernels",
        "Kernels by execution state (idle, busy, starting, dead, other); states with none are left out.",
        &mut facts.iter().filter(ok).flat_map(|f| {
            let p = f.probe.as_ref().expect("filtered on ok probes");
            KERNEL_STATES
                .iter()
                .zip(p.kernels)
                .filter(|(_, n)| *n > 0)
                .map(move |(s, n)| (format!("{},state=\"{s}\"", labels(f)), n as f64))
        }),
    );
    family(
        "nbidle_notebook_terminals",
        "Terminals open.",
        &mut facts.iter().filter(ok).map(|f| {
            (
                labels(f),
                f.probe.as_ref().map_or(0.0, |p| p.terminals as f64),
            )
        }),
    );
    family(
        "nbidle_notebook_idle_deadline_timestamp_seconds",
        "When the notebook becomes idle for its idle time if nothing happens: last activity (or start) + idle time. Absent when it opted out or its probe failed.",
        &mut facts.iter().filter(|f| f.state.autostop).filter(ok).filter_map(|f| {
            let last = f.last_activity?;
            let owner = escape(f.state.owner.as_deref().unwrap_or(""));
            let deadline = last + f.state.idle_after_seconds as f64;
            (deadline <= deadline_horizon).then(|| (format!("{},owner=\"{owner}\"", labels(f)), deadline))
        }),
    );
    family(
        "nbidle_notebook_last_activity_timestamp_seconds",
        "Latest kernel, terminal or file activity in this life of the notebook (now while a kernel is busy), or its start.",
        &mut facts.iter().filter(ok).filter_map(|f| f.last_activity.map(|t| (labels(f), t))),
    );
    out
}

/// `nbidle_exporter_probe_failures_total`: every reason, zeros included,
/// so a rate over it needs no series to appear first.
pub(crate) fn render_failures(out: &mut String, failures: &[AtomicU64; Reason::ALL.len()]) {
    let name = "nbidle_exporter_probe_failures_total";
    let _ = writeln!(
        out,
        "# HELP {name} Failed probes since nbidle started, by reason.\n# TYPE {name} counter"
    );
    for r in Reason::ALL {
        let n = failures[r.index()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", r.as_str());
    }
}
