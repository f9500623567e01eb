//! `autostop`: what counts as idle, for how long, and the schedule the
//! generated rules run on.

use std::time::Duration;

use serde::Deserialize;

use super::values::{prometheus_duration, HumanDuration};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AutostopConfig {
    /// Act on idle alerts at all. Off: alerts are received and counted, nothing stops.
    pub(crate) enabled: bool,
    /// How long a notebook must be idle before it is stopped.
    pub(crate) idle_after: HumanDuration,
    /// How often Prometheus evaluates the generated idle rules.
    pub(crate) evaluation_interval: HumanDuration,
    /// Log and count what would be stopped, stop nothing.
    pub(crate) dry_run: bool,
    /// What makes up "idle": the signals whose absence of work counts.
    pub(crate) signals: Vec<SignalName>,
    /// Guards: evidence of work from outside Jupyter that vetoes a stop.
    pub(crate) guards: GuardsConfig,
    /// A raw PromQL expression selecting busy notebooks by
    /// `(namespace, notebook)`; added to the signals.
    pub(crate) busy_expr: Option<String>,
    /// `NotebookIdleSoon` fires this long before the stop.
    pub(crate) warn_before: HumanDuration,
    /// Admin bounds for per-notebook `idle_after` overrides.
    pub(crate) min_idle_after: Option<HumanDuration>,
    pub(crate) max_idle_after: Option<HumanDuration>,
    /// Before stopping, check nbidle's own latest probe of the notebook and
    /// skip the stop if it shows work within the notebook's idle time (work
    /// Prometheus had not scraped when the alert fired).
    pub(crate) recheck: bool,
}

impl Default for AutostopConfig {
    fn default() -> Self {
        AutostopConfig {
            enabled: true,
            idle_after: HumanDuration::secs(30 * 60),
            evaluation_interval: HumanDuration::secs(60),
            dry_run: false,
            signals: vec![SignalName::Activity],
            guards: GuardsConfig::default(),
            busy_expr: None,
            warn_before: HumanDuration::secs(5 * 60),
            min_idle_after: None,
            max_idle_after: None,
            recheck: true,
        }
    }
}

/// The idle signals the generated rule can combine (see docs/idle-signals.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SignalName {
    /// nbidle's exporter: busy kernels, kernel and terminal activity.
    Activity,
    /// Jupyter's `kernel_currently_running_total` (the original request's signal).
    Kernels,
    /// jupyter_server ≥ 2's `jupyter_server_last_activity_timestamp_seconds`.
    ServerActivity,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GuardsConfig {
    pub(crate) cpu: Option<CpuGuard>,
    pub(crate) gpu: Option<GpuGuard>,
}

/// CPU above `threshold_cores` over `window` is work: the notebook's
/// containers' (cAdvisor) on Kubernetes, its processes' (nbidle's process
/// accounting) on the local backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CpuGuard {
    /// `false` turns off the local backend's default guard.
    pub(crate) enabled: bool,
    pub(crate) threshold_cores: f64,
    pub(crate) window: HumanDuration,
}

impl Default for CpuGuard {
    fn default() -> Self {
        CpuGuard {
            enabled: true,
            // 10 times an idle Jupyter server with an idle kernel, probed
            // every second (0.005 cores, 2.x and 1.23), a twelfth of a busy
            // loop on a loaded machine (docs/idle-signals.md).
            threshold_cores: 0.05,
            window: GUARD_WINDOW,
        }
    }
}

/// GPU engine activity (DCGM) above `threshold` over `window` is work.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GpuGuard {
    /// `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (0–1) or `DCGM_FI_DEV_GPU_UTIL` (0–100).
    pub(crate) metric: String,
    pub(crate) threshold: f64,
    pub(crate) window: HumanDuration,
}

impl Default for GpuGuard {
    fn default() -> Self {
        GpuGuard {
            metric: "DCGM_FI_PROF_GR_ENGINE_ACTIVE".into(),
            threshold: 0.05,
            window: GUARD_WINDOW,
        }
    }
}

const GUARD_WINDOW: HumanDuration = HumanDuration::secs(5 * 60);

impl AutostopConfig {
    pub(super) fn validate(&self) -> Result<()> {
        self.validate_intervals()?;
        if self.signals.is_empty() && self.busy_expr.is_none() {
            return Err(Error::config(
                "autostop.signals",
                "name at least one signal (activity, kernels, server_activity) or set busy_expr",
            ));
        }
        self.validate_warning()?;
        if let Some(e) = &self.busy_expr {
            if e.trim().is_empty() {
                return Err(Error::config("autostop.busy_expr", "must not be empty"));
            }
        }
        self.guards.validate(self.evaluation_interval.0)
    }

    /// A rule evaluated less often than the idle time cannot see it pass.
    fn validate_intervals(&self) -> Result<()> {
        if self.idle_after.0 < Duration::from_secs(1) {
            return Err(Error::config("autostop.idle_after", "must be at least 1s"));
        }
        if self.evaluation_interval.0 < Duration::from_secs(1) {
            return Err(Error::config(
                "autostop.evaluation_interval",
                "must be at least 1s",
            ));
        }
        if self.evaluation_interval.0 > self.idle_after.0 {
            return Err(Error::config(
                "autostop.evaluation_interval",
                format!(
                    "{} is longer than autostop.idle_after ({})",
                    self.evaluation_interval, self.idle_after
                ),
            ));
        }
        Ok(())
    }

    /// The warning must fit between one evaluation round and the stop, for
    /// the default idle time and for every allowed override.
    fn validate_warning(&self) -> Result<()> {
        if self.warn_before.0 <= self.evaluation_interval.0 {
            return Err(Error::config(
                "autostop.warn_before",
                format!("must be longer than autostop.evaluation_interval ({}), or the warning cannot fire before the stop", self.evaluation_interval),
            ));
        }
        if self.warn_before.0 >= self.idle_after.0 {
            return Err(Error::config(
                "autostop.warn_before",
                format!(
                    "must be shorter than autostop.idle_after ({})",
                    self.idle_after
                ),
            ));
        }
        for (key, bound) in [
            ("autostop.min_idle_after", self.min_idle_after),
            ("autostop.max_idle_after", self.max_idle_after),
        ] {
            if bound.is_some_and(|d| d.0 <= self.warn_before.0) {
                return Err(Error::config(
                    key,
                    format!(
                        "must be longer than autostop.warn_before ({})",
                        self.warn_before
                    ),
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_idle_after, self.max_idle_after) {
            if lo.0 > hi.0 {
                return Err(Error::config(
                    "autostop.min_idle_after",
                    "is longer than autostop.max_idle_after",
                ));
            }
        }
        Ok(())
    }

    /// The default idle time and the admin's bounds for overrides.
    pub(crate) fn idle_bounds(&self) -> crate::notebook::IdleBounds {
        crate::notebook::IdleBounds {
            default: self.idle_after.0,
            min: self.min_idle_after.map(|d| d.0),
            max: self.max_idle_after.map(|d| d.0),
        }
    }
}

impl GuardsConfig {
    /// The cpu guard in effect: as written (`enabled: false` turns it off);
    /// unwritten, on with the defaults for the local backend when nbidle's
    /// exporter publishes its process CPU (`local_cpu`), off elsewhere. The
    /// default window covers at least two evaluations.
    pub(super) fn effective_cpu(
        &self,
        local_cpu: bool,
        evaluation_interval: Duration,
    ) -> Option<CpuGuard> {
        match &self.cpu {
            Some(c) if !c.enabled => None,
            Some(c) => Some(c.clone()),
            None if local_cpu => {
                let d = CpuGuard::default();
                let window = HumanDuration(d.window.0.max(evaluation_interval * 2));
                Some(CpuGuard { window, ..d })
            }
            None => None,
        }
    }

    fn validate(&self, evaluation_interval: Duration) -> Result<()> {
        // rate() and avg_over_time() need at least two scrapes in the window.
        let min_window = evaluation_interval * 2;
        for (key, w) in [
            (
                "autostop.guards.cpu.window",
                self.cpu.as_ref().map(|c| c.window),
            ),
            (
                "autostop.guards.gpu.window",
                self.gpu.as_ref().map(|g| g.window),
            ),
        ] {
            if w.is_some_and(|w| w.0 < min_window) {
                return Err(Error::config(
                    key,
                    format!(
                        "must cover at least two scrapes ({})",
                        prometheus_duration(min_window)
                    ),
                ));
            }
        }
        if let Some(c) = &self.cpu {
            if !(c.threshold_cores > 0.0 && c.threshold_cores.is_finite()) {
                return Err(Error::config(
                    "autostop.guards.cpu.threshold_cores",
                    "must be a positive number of cores",
                ));
            }
        }
        if let Some(g) = &self.gpu {
            g.validate()?;
        }
        Ok(())
    }
}

impl GpuGuard {
    fn validate(&self) -> Result<()> {
        if !(self.threshold > 0.0 && self.threshold.is_finite()) {
            return Err(Error::config(
                "autostop.guards.gpu.threshold",
                "must be positive",
            ));
        }
        let metric_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if self.metric.is_empty() || !self.metric.chars().all(metric_name) {
            return Err(Error::config(
                "autostop.guards.gpu.metric",
                "must be a Prometheus metric name",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{err_field, parse, MINIMAL};

    #[test]
    fn bad_duration_names_the_key() {
        let y = MINIMAL.replace("auth:", "autostop:\n  idle_after: soonish\nauth:");
        assert_eq!(err_field(&y), "autostop.idle_after");
    }

    #[test]
    fn evaluation_interval_longer_than_idle_after_is_rejected() {
        let y = MINIMAL.replace(
            "auth:",
            "autostop:\n  idle_after: 1m\n  evaluation_interval: 2m\nauth:",
        );
        assert_eq!(err_field(&y), "autostop.evaluation_interval");
    }

    #[test]
    fn warnings_and_guards_are_checked_against_the_schedule_and_backend() {
        let y = MINIMAL.replace(
            "auth:",
            "autostop:\n  evaluation_interval: 5m\n  warn_before: 5m\nauth:",
        );
        assert_eq!(err_field(&y), "autostop.warn_before");
        let y = MINIMAL.replace("auth:", "autostop:\n  guards: {cpu: {window: 30s}}\nauth:");
        assert_eq!(err_field(&y), "autostop.guards.cpu.window");
        let y = MINIMAL.replace("auth:", "autostop:\n  guards: {gpu: {}}\nauth:");
        match parse(&y).unwrap().check_backend_fit() {
            Err(Error::Config { field, .. }) => assert_eq!(field, "autostop.guards.gpu"),
            other => panic!("{other:?}"),
        }
        let y = MINIMAL.replace("auth:", "prometheus:\n  exporter_job: \"a\\\"b\"\nauth:");
        assert_eq!(err_field(&y), "prometheus.exporter_job");
    }

    #[test]
    fn missing_keys_take_the_defaults_of_their_type() {
        let y = MINIMAL.replace(
            "auth:",
            "autostop:\n  dry_run: true\n  guards: {cpu: {threshold_cores: 0.5}, gpu: {window: 10m}}\nauth:",
        );
        let a = parse(&y).unwrap().autostop;
        let d = AutostopConfig::default();
        assert!(a.dry_run && a.enabled && a.recheck);
        assert_eq!(
            (a.idle_after, a.warn_before, a.evaluation_interval),
            (d.idle_after, d.warn_before, d.evaluation_interval)
        );
        assert_eq!(a.signals, vec![SignalName::Activity]);
        assert_eq!(
            a.guards.cpu,
            Some(CpuGuard {
                enabled: true,
                threshold_cores: 0.5,
                window: HumanDuration::secs(300)
            })
        );
        assert_eq!(
            a.guards.gpu,
            Some(GpuGuard {
                window: HumanDuration::secs(600),
                ..GpuGuard::default()
            })
        );
        assert_eq!(
            a.guards.gpu.unwrap().metric,
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
        );
    }

    #[test]
    fn the_cpu_guard_is_on_by_default_for_the_local_backend_only() {
        let local = parse(MINIMAL).unwrap();
        let cpu = local.autostop.guards.cpu.clone();
        assert_eq!(cpu, Some(CpuGuard::default()), "on for the local backend");
        assert!(local.check_backend_fit().is_ok());
        // Turned off by hand.
        let off = MINIMAL.replace(
            "auth:",
            "autostop:\n  guards: {cpu: {enabled: false}}\nauth:",
        );
        assert_eq!(parse(&off).unwrap().autostop.guards.cpu, None);
        // The default window covers two evaluations.
        let slow = MINIMAL.replace(
            "auth:",
            "autostop:\n  evaluation_interval: 4m\n  warn_before: 10m\nauth:",
        );
        let cpu = parse(&slow).unwrap().autostop.guards.cpu.unwrap();
        assert_eq!(cpu.window, HumanDuration::secs(480));
        // Without the exporter there is no process CPU to read: off by
        // default, refused when asked for.
        let bare = MINIMAL.replace(
            "auth:",
            "exporter: {enabled: false}\nautostop: {signals: [kernels]}\nauth:",
        );
        assert_eq!(parse(&bare).unwrap().autostop.guards.cpu, None);
        let asked = MINIMAL.replace(
            "auth:",
            "exporter: {enabled: false}\nautostop: {signals: [kernels], guards: {cpu: {}}}\nauth:",
        );
        match parse(&asked).unwrap().check_backend_fit() {
            Err(Error::Config { field, message }) => {
                assert_eq!(field, "autostop.guards.cpu");
                assert!(message.contains("exporter.enabled"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Kubernetes backends: off unless written.
        let kube = "auth: {webhook_token: w, api_tokens: [a]}\nbackend: {kind: kubeflow}\n";
        assert_eq!(parse(kube).unwrap().autostop.guards.cpu, None);
    }
}
