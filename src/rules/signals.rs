//! Idle signals as PromQL building blocks.
//!
//! Every signal (and guard) answers one question with an instant vector
//! keyed by `(namespace, notebook)`: "which notebooks show work?". The idle
//! rule is "notebooks nbidle watches, old enough, unless any signal shows
//! work". Signals that depend on time compare against a threshold
//! expression, so the same blocks build the stop rule (the notebook's
//! `idle_after`) and the warning rule (`idle_after - warn_before`).

use std::time::Duration;

use crate::config::{prometheus_duration, CpuGuard, GpuGuard, SignalName};

/// The labels that identify a notebook in every generated series.
pub(crate) const NOTEBOOK_LABELS: &str = "namespace, notebook";

/// Where the rules find their inputs.
#[derive(Debug, Clone)]
pub(crate) struct Jobs {
    /// The scrape job of the notebooks' own `/metrics`.
    pub(crate) notebooks: String,
    /// The scrape job of nbidle's `/metrics/notebooks`.
    pub(crate) exporter: String,
}

/// A threshold in seconds: a PromQL expression per notebook, and the
/// global duration for range windows (`[30m]`), which cannot vary per series.
#[derive(Debug, Clone)]
pub(crate) struct Threshold {
    pub(crate) per_notebook: String,
    pub(crate) window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Signal {
    /// Busy kernels, and kernel or terminal activity newer than the
    /// threshold, from nbidle's exporter.
    Activity,
    /// Any kernel running during the window (`kernel_currently_running_total`).
    Kernels,
    /// jupyter_server ≥ 2's own last-activity timestamp newer than the threshold.
    ServerActivity,
    /// Container CPU above a number of cores over a window (cAdvisor).
    Cpu(CpuGuard),
    /// The CPU of a local notebook's processes above a number of cores over
    /// a window (nbidle's process accounting, on its exporter).
    ProcessCpu(CpuGuard),
    /// GPU activity above a threshold over a window (DCGM).
    Gpu(GpuGuard),
    /// A user-supplied PromQL expression selecting busy notebooks.
    Expr(String),
}

impl From<SignalName> for Signal {
    fn from(n: SignalName) -> Self {
        match n {
            SignalName::Activity => Signal::Activity,
            SignalName::Kernels => Signal::Kernels,
            SignalName::ServerActivity => Signal::ServerActivity,
        }
    }
}

impl Signal {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Signal::Activity => "activity",
            Signal::Kernels => "kernels",
            Signal::ServerActivity => "server_activity",
            Signal::Cpu(_) | Signal::ProcessCpu(_) => "cpu guard",
            Signal::Gpu(_) => "gpu guard",
            Signal::Expr(_) => "busy_expr",
        }
    }

    /// One line for `--explain` and the alert description.
    pub(crate) fn describe(&self) -> String {
        match self {
            Signal::Activity => "no busy kernel and no kernel or terminal activity".into(),
            Signal::Kernels => "no kernel running".into(),
            Signal::ServerActivity => "no Jupyter server activity".into(),
            Signal::Cpu(c) => format!("CPU under {} cores over {}", c.threshold_cores, c.window),
            Signal::ProcessCpu(c) => format!(
                "process CPU under {} cores over {}",
                c.threshold_cores, c.window
            ),
            Signal::Gpu(g) => format!("{} under {} over {}", g.metric, g.threshold, g.window),
            Signal::Expr(_) => "nothing from busy_expr during the idle time".into(),
        }
    }

    /// PromQL selecting the notebooks where this signal shows work.
    pub(crate) fn busy_expr(&self, jobs: &Jobs, t: &Threshold) -> String {
        let ex = &jobs.exporter;
        let nb = &jobs.notebooks;
        let on = format!("on ({NOTEBOOK_LABELS})");
        match self {
            // The activity signal is the base of the exporter rule
            // (rules::with_exporter); as a veto it is the same comparison.
            Signal::Activity => format!(
                "(time() - max by ({NOTEBOOK_LABELS}) (nbidle_notebook_last_activity_timestamp_seconds{{job=\"{ex}\"}})) < {on} {thr}",
                thr = t.per_notebook
            ),
            Signal::Kernels => format!(
                "sum by ({NOTEBOOK_LABELS}) (max_over_time(kernel_currently_running_total{{job=\"{nb}\"}}[{w}])) > 0",
                w = prometheus_duration(t.window)
            ),
            Signal::ServerActivity => format!(
                "(time() - max by ({NOTEBOOK_LABELS}) (jupyter_server_last_activity_timestamp_seconds{{job=\"{nb}\"}})) < {on} {thr}",
                thr = t.per_notebook
            ),
            // cAdvisor labels series by namespace and pod; nbidle's exporter
            // maps pods to notebooks with nbidle_notebook_pod_info.
            Signal::Cpu(c) => format!(
                "sum by ({NOTEBOOK_LABELS}) (\n  rate(container_cpu_usage_seconds_total{{container!=\"\", container!=\"POD\"}}[{w}])\n  * on (namespace, pod) group_left (notebook) {pods}\n) > {thr}",
                pods = pod_info(ex),
                w = c.window,
                thr = c.threshold_cores
            ),
            // The local backend accounts every process of a notebook itself.
            // A counter with fewer than two samples in the window has no
            // rate yet (Prometheus or nbidle just started): unknown CPU is
            // kept, not taken for none, so a restart of either never stops
            // a notebook whose job is running.
            Signal::ProcessCpu(c) => format!(
                "(max by ({NOTEBOOK_LABELS}) (rate({cpu}[{w}])) > {thr})\nor\n(max by ({NOTEBOOK_LABELS}) (count_over_time({cpu}[{w}])) < 2)",
                cpu = format_args!("nbidle_notebook_cpu_seconds_total{{job=\"{ex}\"}}"),
                w = c.window,
                thr = c.threshold_cores
            ),
            // DCGM's exporter is usually scraped without honor_labels, so the
            // GPU user's pod lands in exported_namespace/exported_pod.
            Signal::Gpu(g) => format!(
                "max by ({NOTEBOOK_LABELS}) (\n  label_replace(label_replace(avg_over_time({m}[{w}]), \"namespace\", \"$1\", \"exported_namespace\", \"(.+)\"), \"pod\", \"$1\", \"exported_pod\", \"(.+)\")\n  * on (namespace, pod) group_left (notebook) {pods}\n) > {thr}",
                pods = pod_info(ex),
                m = g.metric,
                w = g.window,
                thr = g.threshold
            ),
            // busy_expr says "busy now"; any moment of work within the
            // idle time vetoes, as for the other signals.
            Signal::Expr(e) => format!(
                "max by ({NOTEBOOK_LABELS}) (max_over_time((\n  {}\n)[{w}:]))",
                e.trim(),
                w = prometheus_duration(t.window)
            ),
        }
    }
}

/// Pods to notebooks, one series per pod however many nbidle replicas
/// publish it (a duplicate on the "one" side of a join is an error).
fn pod_info(exporter_job: &str) -> String {
    format!(
        "max by (namespace, pod, notebook) (nbidle_notebook_pod_info{{job=\"{exporter_job}\"}})"
    )
}

/// Without the exporter: notebooks being scraped, from their `up` series.
/// (Jupyter exports no kernel series until a kernel has run once, so the
/// kernel gauge alone would never see a notebook nobody used.)
pub(crate) fn present_expr(job: &str) -> String {
    format!("max by ({NOTEBOOK_LABELS}) (up{{job=\"{job}\"}} == 1)")
}
