//! From a validated webhook payload to stops: which firing alert stops which
//! notebook, and which must not.
//!
//! An alert stops a notebook only if it is firing, carries
//! `nbidle_action="stop"`, names a notebook the backend knows, that notebook
//! has not opted out, and it was not started after the alert began (the
//! stale-alert guard, checked by the backend atomically with the stop).
//! Stops are idempotent, so a duplicate delivery finds the notebook already
//! stopped and does nothing.

use futures_util::stream::{self, StreamExt};

use crate::alerts::{Alert, AlertStatus, WebhookPayload};
use crate::backend::{started_since, Backend, StopOutcome, StopRequest};
use crate::error::Error;
use crate::exporter::{Exporter, NotebookFacts};
use crate::logsafe::{Escaped, BACKEND_UNAVAILABLE, UNKNOWN_NOTEBOOK};
use crate::metrics::{ErrorKind, Metrics, Outcome, Trigger};
use crate::notebook::{NotebookId, StopCause, Timestamp};
use crate::notify::Notifier;
use crate::rules::{ACTION_LABEL, ACTION_STOP, ACTION_WARN};

/// Stops in flight at once for one payload.
const CONCURRENCY: usize = 64;

/// The `autostop` settings a decision follows.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `autostop.enabled`
    pub enabled: bool,
    /// `autostop.dry_run`
    pub dry_run: bool,
    /// `autostop.recheck`
    pub recheck: bool,
}

impl Policy {
    /// The latest start that still lets `alert` stop a notebook.
    ///
    /// An alert that began before the notebook's last start is about its
    /// previous life. Unless the notebook has been up for `idle_after` since:
    /// an alert still firing then has seen this life idle for that long too
    /// (a restart faster than a scrape leaves the old alert firing, and it
    /// must not protect the notebook forever).
    pub(crate) fn stale_limit(
        &self,
        alert_starts_at: Timestamp,
        now: Timestamp,
        idle_after: std::time::Duration,
    ) -> Timestamp {
        let idle = time::Duration::try_from(idle_after).unwrap_or(time::Duration::MAX);
        let life_long_enough = now.0.checked_sub(idle).map(Timestamp).unwrap_or(now);
        alert_starts_at.max(life_long_enough)
    }
}

/// What became of one alert, counted in `nbidle_alert_decisions_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The alert stopped the notebook.
    Stopped,
    /// The notebook was stopped or stopping already.
    AlreadyStopped,
    /// The notebook was started after the alert began.
    Stale,
    /// The notebook opted out of idle stops (`autostop: false`).
    OptedOut,
    /// The backend does not know the notebook the alert names.
    UnknownNotebook,
    /// No `nbidle_action="stop"` label, or no notebook labels.
    NotForNbidle,
    /// A warning (`nbidle_action="warn"`): recorded for people by the
    /// webhook, never a stop.
    Warning,
    /// The alert is resolved: nothing to stop.
    Resolved,
    /// `autostop.dry_run`: it would have been stopped, and was not.
    DryRun,
    /// `autostop.enabled` is false.
    Disabled,
    /// nbidle's latest probe shows work within the notebook's idle time,
    /// which the alert had not seen (see `still_active`).
    ActiveAgain,
    /// A person asked JupyterLab to keep it running, and the answer to the
    /// push just before the stop carried the request: the silence is made
    /// and the stop is not.
    KeptRunning,
    /// A Kubernetes notebook that is not running (starting, failed): its
    /// start time is unknown until its pod runs, so an old alert must not
    /// stop a notebook just started in Kubeflow's UI or by `kubectl scale`.
    NotRunning,
    /// The backend failed; Alertmanager should retry.
    Failed(String),
    /// The backend cannot answer now (its API server does not, or its
    /// cache is not current and the notebook may exist unseen); the webhook
    /// answers 503 so Alertmanager retries.
    Unavailable(String),
}

impl Decision {
    /// The bounded label value of `nbidle_alert_decisions_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Decision::Stopped => "stopped",
            Decision::AlreadyStopped => "already_stopped",
            Decision::Stale => "stale",
            Decision::OptedOut => "opted_out",
            Decision::UnknownNotebook => "unknown_notebook",
            Decision::NotForNbidle => "not_for_nbidle",
            Decision::Warning => "warning",
            Decision::Resolved => "resolved",
            Decision::DryRun => "dry_run",
            Decision::Disabled => "disabled",
            Decision::ActiveAgain => "active_again",
            Decision::KeptRunning => "kept_running",
            Decision::NotRunning => "not_running",
            Decision::Failed(_) => "failed",
            Decision::Unavailable(_) => "unavailable",
        }
    }
}

/// One alert of a payload and what became of it.
#[derive(Debug, Clone)]
pub struct AlertResult {
    pub(crate) alertname: String,
    pub(crate) notebook: Option<NotebookId>,
    /// What [`handle`] decided, and did, for the alert.
    pub decision: Decision,
}

/// Decides and acts on every alert of a payload.
pub async fn handle(
    payload: &WebhookPayload,
    backend: &dyn Backend,
    exporter: Option<&Exporter>,
    policy: Policy,
    metrics: &Metrics,
) -> Vec<AlertResult> {
    handle_notifying(payload, backend, exporter, None, policy, metrics).await
}

/// [`handle`], telling each notebook's JupyterLab just before its stop
/// (`notifier`, when `notify.jupyterlab` is on).
pub(crate) async fn handle_notifying(
    payload: &WebhookPayload,
    backend: &dyn Backend,
    exporter: Option<&Exporter>,
    notifier: Option<&Notifier>,
    policy: Policy,
    metrics: &Metrics,
) -> Vec<AlertResult> {
    for a in &payload.alerts {
        metrics.alert_received(a.status);
    }
    // Indices, not `&Alert` items: a closure taking a borrowed item makes
    // the future's Send-ness depend on a higher-ranked lifetime that rustc
    // cannot prove, and warp needs Send handler futures.
    let results: Vec<AlertResult> = stream::iter(0..payload.alerts.len())
        .map(|i| async move {
            let alert = &payload.alerts[i];
            let decision = decide_one(alert, backend, exporter, notifier, policy, metrics).await;
            AlertResult {
                alertname: alert.alertname().to_string(),
                notebook: alert.notebook(),
                decision,
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    for r in &results {
        metrics.alert_decided(r.decision.label());
        let nb = r
            .notebook
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        // Labels come from whoever holds the webhook token: escaped and cut.
        let (alert, notebook) = (Escaped(&r.alertname), Escaped(&nb));
        match &r.decision {
            Decision::Failed(e) => {
                tracing::error!(%alert, %notebook, error = %Escaped(e), "stop failed")
            }
            Decision::Unavailable(e) => {
                if let Some(a) = BACKEND_UNAVAILABLE.admit() {
                    tracing::warn!(%alert, %notebook, error = %Escaped(e), suppressed = a.suppressed, "not acted on now; Alertmanager will deliver again")
                }
            }
            // A payload can name any number of unknown notebooks.
            Decision::UnknownNotebook => {
                if let Some(a) = UNKNOWN_NOTEBOOK.admit() {
                    tracing::warn!(%alert, %notebook, suppressed = a.suppressed, "alert names a notebook the backend does not know")
                }
            }
            Decision::DryRun => {
                tracing::info!(%alert, %notebook, "dry run: would stop")
            }
            d => {
                tracing::debug!(%alert, %notebook, decision = d.label(), "alert handled")
            }
        }
    }
    results
}

async fn decide_one(
    alert: &Alert,
    backend: &dyn Backend,
    exporter: Option<&Exporter>,
    notifier: Option<&Notifier>,
    policy: Policy,
    metrics: &Metrics,
) -> Decision {
    if alert.status == AlertStatus::Resolved {
        return Decision::Resolved;
    }
    match alert.labels.get(ACTION_LABEL).map(String::as_str) {
        Some(ACTION_STOP) => {}
        Some(ACTION_WARN) => return Decision::Warning,
        _ => return Decision::NotForNbidle,
    }
    let Some(id) = alert.notebook() else {
        return Decision::NotForNbidle;
    };
    if !policy.enabled {
        return Decision::Disabled;
    }
    let state = match backend.get(&id).await {
        Ok(s) => s,
        Err(Error::NotFound(_)) => return Decision::UnknownNotebook,
        Err(Error::Unavailable(m)) => return Decision::Unavailable(m),
        Err(e) => {
            metrics.error(ErrorKind::Backend);
            return Decision::Failed(e.to_string());
        }
    };
    if !state.autostop {
        return Decision::OptedOut;
    }
    // The notebook's own idle time (per-notebook overrides), not the default.
    let idle_after = std::time::Duration::from_secs(state.idle_after_seconds);
    let stale_limit = policy.stale_limit(alert.starts_at, Timestamp::now(), idle_after);
    if started_since(state.started_at, Some(stale_limit)) {
        return Decision::Stale;
    }
    if state.status.is_down() {
        return Decision::AlreadyStopped;
    }
    let recheck = exporter.filter(|_| policy.recheck);
    if let Some(f) = recheck.and_then(|e| e.facts(&id)) {
        if still_active(&f, Timestamp::now()) {
            // Rare, and the one stop Prometheus asked for that is not made.
            let probed_at = f.probed_at.map(|t| t.to_string()).unwrap_or_default();
            tracing::info!(notebook = %id, %probed_at, "not stopped: nbidle's latest probe shows work within the idle time");
            return Decision::ActiveAgain;
        }
    }
    if policy.dry_run {
        return Decision::DryRun;
    }
    let req = StopRequest {
        cause: StopCause::IdleAlert {
            alertname: alert.alertname().to_string(),
            alert_starts_at: alert.starts_at,
        },
        unless_started_after: Some(stale_limit),
    };
    // Best effort and bounded by notify.jupyterlab.timeout: only a Keep
    // running its answer hands out prevents the stop.
    if let Some(n) = notifier {
        if n.stopping(&state).await {
            tracing::info!(notebook = %id, "not stopped: kept running from JupyterLab just before the stop");
            return Decision::KeptRunning;
        }
    }
    match backend.stop(&id, req).await {
        Ok(StopOutcome::Stopped(_)) => {
            metrics.stop(Trigger::IdleAlert, Outcome::Success);
            Decision::Stopped
        }
        Ok(StopOutcome::AlreadyStopped(_)) => Decision::AlreadyStopped,
        Ok(StopOutcome::StartedSince(_)) => Decision::Stale,
        Ok(StopOutcome::OptedOut(_)) => Decision::OptedOut,
        Ok(StopOutcome::NotRunning(_)) => Decision::NotRunning,
        Err(Error::NotFound(_)) => Decision::UnknownNotebook,
        Err(Error::Unavailable(m)) => Decision::Unavailable(m),
        Err(e) => {
            metrics.stop(Trigger::IdleAlert, Outcome::Error);
            metrics.error(ErrorKind::Backend);
            Decision::Failed(e.to_string())
        }
    }
}

/// The re-check: nbidle's own latest probe says the notebook is not idle
/// for its idle time: a busy kernel, or kernel or terminal activity (or its
/// start) less than its idle time ago. The rules fire at the first
/// evaluation past the deadline Prometheus holds, which can be a scrape
/// interval and a probe round older than this probe; work that came since
/// is caught here, even when it came before the alert began. A failed
/// probe confirms nothing either way, and the stop goes ahead on
/// Prometheus's word.
fn still_active(f: &NotebookFacts, now: Timestamp) -> bool {
    let Some(p) = f.probe.as_ref().filter(|p| p.ok) else {
        return false;
    };
    let idle_after = f.state.idle_after_seconds as f64;
    p.busy_kernels() > 0
        || f.last_activity
            .is_some_and(|t| t + idle_after > now.unix_seconds())
}

#[cfg(test)]
mod tests;
