//! Idle signals as PromQL building blocks.
//!
//! Every signal answers one question with an instant vector keyed by
//! `(namespace, notebook)`: "which notebooks show work right now?". The idle
//! rule is then "notebooks being scraped, unless any signal shows work", held
//! for `idle_after`. New signals (activity, CPU and GPU guards) plug in by
//! adding a variant here; the rule assembly does not change.

/// The labels that identify a notebook in every generated series.
pub const NOTEBOOK_LABELS: &str = "namespace, notebook";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Jupyter's own `kernel_currently_running_total{type=…}` (the seed's
    /// signal): any running kernel counts as work. Optionally terminals too.
    Kernels { include_terminals: bool },
}

impl Signal {
    pub fn name(&self) -> &'static str {
        match self {
            Signal::Kernels { .. } => "kernels",
        }
    }

    /// One line for `--explain` and for the rule's annotations.
    pub fn describe(&self) -> String {
        match self {
            Signal::Kernels {
                include_terminals: false,
            } => "no kernel running".into(),
            Signal::Kernels {
                include_terminals: true,
            } => "no kernel or terminal running".into(),
        }
    }

    /// PromQL selecting the notebooks where this signal shows work.
    pub fn busy_expr(&self, job: &str) -> String {
        match self {
            Signal::Kernels { include_terminals } => {
                let kernels = format!(
                    "sum by ({NOTEBOOK_LABELS}) (kernel_currently_running_total{{job=\"{job}\"}}) > 0"
                );
                if *include_terminals {
                    format!(
                        "({kernels})\nor\n(sum by ({NOTEBOOK_LABELS}) (terminal_currently_running_total{{job=\"{job}\"}}) > 0)"
                    )
                } else {
                    kernels
                }
            }
        }
    }
}

/// The series that say "this notebook exists and is being scraped". The
/// idle rule starts from it, because Jupyter exports no kernel series at all
/// until a kernel has run once: a rule built on the kernel gauge alone would
/// never see a notebook that nobody ever used.
pub fn present_expr(job: &str) -> String {
    format!("max by ({NOTEBOOK_LABELS}) (up{{job=\"{job}\"}} == 1)")
}
