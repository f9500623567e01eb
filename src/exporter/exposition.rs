//! The text exposition of `/metrics/notebooks`, written by hand from the
//! last round's snapshot into one buffer sized up front, so 10,000
//! notebooks need no registry of series kept in step with the backend.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::bounded::Reason;
use super::probe::KERNEL_STATES;
use super::NotebookFacts;
use crate::backend::ProcessReport;

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
        "When the notebook becomes idle for its idle time if nothing happens: last activity (or start) + idle time, never sooner than warn_before after nbidle first probed it. Absent when it opted out or its probe failed.",
        &mut facts.iter().filter_map(|f| {
            let deadline = f.idle_deadline()?;
            let owner = escape(f.state.owner.as_deref().unwrap_or(""));
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

/// The backend's process accounting (the local backend): per notebook its
/// processes' CPU counter, resident memory and count, and the accounting's
/// own figures.
pub(crate) fn render_processes(out: &mut String, report: &ProcessReport) {
    out.reserve(64 + report.notebooks.len() * 360);
    let mut family =
        |name: &str, kind: &str, help: &str, rows: &mut dyn Iterator<Item = (String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (l, v) in rows {
                let _ = writeln!(out, "{name}{l} {v}");
            }
        };
    let labels = |u: &crate::backend::ProcessUsage| {
        format!(
            "{{namespace=\"{}\",notebook=\"{}\"}}",
            escape(&u.id.namespace),
            escape(&u.id.name)
        )
    };
    family(
        "nbidle_notebook_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of the notebook's processes since nbidle started: the live ones' and what exited ones had used when last seen.",
        &mut report
            .notebooks
            .iter()
            .map(|u| (labels(u), u.cpu_seconds.to_string())),
    );
    family(
        "nbidle_notebook_resident_memory_bytes",
        "gauge",
        "Resident memory of the notebook's live processes.",
        &mut report
            .notebooks
            .iter()
            .map(|u| (labels(u), u.resident_bytes.to_string())),
    );
    family(
        "nbidle_notebook_processes",
        "gauge",
        "Live processes of the notebook: its server, kernels, terminals and whatever they started.",
        &mut report
            .notebooks
            .iter()
            .map(|u| (labels(u), u.processes.to_string())),
    );
    family(
        "nbidle_process_stop_survivors_total",
        "counter",
        "Processes of notebooks still alive after a stop's last SIGKILL, since nbidle started.",
        &mut std::iter::once((String::new(), report.stop_survivors.to_string())),
    );
    family(
        "nbidle_process_scan_duration_seconds",
        "gauge",
        "How long the last scan of /proc for the notebooks' processes took.",
        &mut std::iter::once((String::new(), report.scan_seconds.to_string())),
    );
    family(
        "nbidle_process_scan_processes",
        "gauge",
        "Processes the last scan read, the notebooks' and every other.",
        &mut std::iter::once((String::new(), report.processes_read.to_string())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ProcessUsage;
    use crate::notebook::NotebookId;

    #[test]
    fn process_usage_is_one_series_per_notebook_and_family() {
        let usage = |name: &str, cpu: f64, rss: u64, n: usize| ProcessUsage {
            id: NotebookId::new("local", name),
            cpu_seconds: cpu,
            resident_bytes: rss,
            processes: n,
        };
        let report = ProcessReport {
            notebooks: vec![usage("a", 12.5, 4096, 3), usage("b\"q", 0.0, 0, 0)],
            stop_survivors: 1,
            scan_seconds: 0.25,
            processes_read: 123,
        };
        let mut out = String::new();
        render_processes(&mut out, &report);
        for line in [
            "# TYPE nbidle_notebook_cpu_seconds_total counter",
            "nbidle_notebook_cpu_seconds_total{namespace=\"local\",notebook=\"a\"} 12.5",
            "nbidle_notebook_cpu_seconds_total{namespace=\"local\",notebook=\"b\\\"q\"} 0",
            "nbidle_notebook_resident_memory_bytes{namespace=\"local\",notebook=\"a\"} 4096",
            "nbidle_notebook_processes{namespace=\"local\",notebook=\"a\"} 3",
            "nbidle_process_stop_survivors_total 1",
            "nbidle_process_scan_duration_seconds 0.25",
            "nbidle_process_scan_processes 123",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in:\n{out}");
        }
        assert_eq!(out.matches("notebook=\"a\"").count(), 3, "{out}");
    }
}
