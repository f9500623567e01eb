//! The warnings Alertmanager delivers before a stop (`NotebookIdleSoon`,
//! `nbidle_action="warn"`), per notebook, for the REST API and the page's
//! banner. A warning never stops anything: the webhook records it and
//! `decide` answers `warning`.
//!
//! For the page, through `server::App::warnings`:
//! [`Warnings::get`]`(&NotebookState) -> Option<Warning>` and
//! [`Warnings::for_notebooks`]`(&[NotebookState]) -> HashMap<NotebookId, Warning>`.
//!
//! A warning ends when Alertmanager sends it resolved (the generated
//! route has `send_resolved: true` for warnings), at the alert's `endsAt`
//! (or, as firing alerts often carry none, `warn_before` plus
//! `alertmanager.group_interval` and a minute after it was last delivered),
//! or when the notebook stops or starts. The store holds at most
//! [`MAX_WARNINGS`] notebooks; expired entries make room first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::alerts::{AlertStatus, WebhookPayload};
use crate::metrics::Metrics;
use crate::notebook::{NotebookId, NotebookState, Timestamp};
use crate::rules::{ACTION_LABEL, ACTION_WARN};

/// The most notebooks warned at once that are remembered.
pub(crate) const MAX_WARNINGS: usize = 100_000;

/// A notebook's warning, as the notebook JSON and the page show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Warning {
    /// When the warning began firing.
    pub(crate) since: Timestamp,
    /// About when the notebook is stopped unless it is used: the warning
    /// fires `autostop.warn_before` ahead of the idle deadline.
    pub(crate) stops_at: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Timestamp,
    expires: Timestamp,
}

/// Firing warnings by notebook.
pub(crate) struct Warnings {
    map: Mutex<HashMap<NotebookId, Entry>>,
    warn_before: time::Duration,
    /// How long a delivery without `endsAt` counts.
    ttl: time::Duration,
    max: usize,
}

fn span(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl Warnings {
    /// `warn_before`: `autostop.warn_before`; `group_interval`:
    /// `alertmanager.group_interval` (how late a resolve may come).
    pub(crate) fn new(warn_before: Duration, group_interval: Duration) -> Self {
        Self::with_max(warn_before, group_interval, MAX_WARNINGS)
    }

    fn with_max(warn_before: Duration, group_interval: Duration, max: usize) -> Self {
        Warnings {
            map: Mutex::new(HashMap::new()),
            warn_before: span(warn_before),
            ttl: span(warn_before + group_interval + Duration::from_secs(60)),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NotebookId, Entry>> {
        // A panic mid-insert leaves a map that is still a map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the payload's warnings: firing ones added or renewed,
    /// resolved ones removed. Other alerts are not looked at.
    pub(crate) fn record(&self, payload: &WebhookPayload, metrics: &Metrics) {
        let now = Timestamp::now();
        let mut map = self.lock();
        for a in &payload.alerts {
            if a.labels.get(ACTION_LABEL).map(String::as_str) != Some(ACTION_WARN) {
                continue;
            }
            let Some(id) = a.notebook() else { continue };
            if a.status == AlertStatus::Resolved {
                map.remove(&id);
                continue;
            }
            let expires = a
                .ends_at
                .filter(|t| *t > now)
                .unwrap_or(Timestamp(now.0 + self.ttl));
            if map.len() >= self.max && !map.contains_key(&id) {
                map.retain(|_, e| e.expires > now);
                if map.len() >= self.max {
                    metrics.warning(false);
                    continue;
                }
            }
            map.insert(
                id,
                Entry {
                    since: a.starts_at,
                    expires,
                },
            );
            metrics.warning(true);
        }
    }

    /// Forgets `id`'s warning (it stopped or started).
    pub(crate) fn clear(&self, id: &NotebookId) {
        self.lock().remove(id);
    }

    /// `state`'s warning while it is current: not expired, the notebook
    /// not down, and about this life of it (not one before its last start).
    pub(crate) fn get(&self, state: &NotebookState) -> Option<Warning> {
        let e = *self.lock().get(&state.id)?;
        self.current(state, e, Timestamp::now())
    }

    /// The current warnings of these notebooks.
    pub(crate) fn for_notebooks(&self, states: &[NotebookState]) -> HashMap<NotebookId, Warning> {
        let now = Timestamp::now();
        let map = self.lock();
        states
            .iter()
            .filter_map(|s| {
                let e = *map.get(&s.id)?;
                Some((s.id.clone(), self.current(s, e, now)?))
            })
            .collect()
    }

    fn current(&self, state: &NotebookState, e: Entry, now: Timestamp) -> Option<Warning> {
        let outdated = state.started_at.is_some_and(|s| s > e.since);
        if e.expires <= now || state.status.is_down() || outdated {
            return None;
        }
        Some(Warning {
            since: e.since,
            stops_at: Timestamp(e.since.0 + self.warn_before),
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::Status;

    fn payload(alerts: &[(&str, &str, &str, &str, &str)]) -> WebhookPayload {
        // (status, action, notebook, startsAt, endsAt)
        let alerts: Vec<serde_json::Value> = alerts
            .iter()
            .map(|(status, action, nb, starts, ends)| {
                serde_json::json!({
                    "status": status,
                    "labels": {"alertname": "NotebookIdleSoon", "namespace": "local", "notebook": nb, "nbidle_action": action},
                    "startsAt": starts, "endsAt": ends,
                })
            })
            .collect();
        let body = serde_json::json!({"version": "4", "status": "firing", "alerts": alerts});
        crate::alerts::parse(body.to_string().as_bytes()).unwrap()
    }

    fn state(name: &str, status: Status, started_at: Option<&str>) -> NotebookState {
        NotebookState {
            id: NotebookId::new("local", name),
            status,
            message: None,
            autostop: true,
            idle_after_seconds: 600,
            owner: None,
            started_at: started_at.map(|s| s.parse().unwrap()),
            stopped_at: None,
            stopped_by: None,
            url: None,
        }
    }

    const ZERO: &str = "0001-01-01T00:00:00Z";

    fn ago(secs: i64) -> String {
        Timestamp(Timestamp::now().0 - time::Duration::seconds(secs)).to_string()
    }

    #[test]
    fn firing_warnings_are_kept_until_resolved() {
        let (w, m) = (
            Warnings::new(Duration::from_secs(300), Duration::from_secs(60)),
            Metrics::new(),
        );
        let since = ago(10);
        w.record(&payload(&[("firing", "warn", "lab", &since, ZERO)]), &m);
        let lab = state("lab", Status::Running, Some("2020-01-01T00:00:00Z"));
        let got = w.get(&lab).expect("warned");
        assert_eq!(got.since, since.parse().unwrap());
        assert_eq!(got.stops_at.0 - got.since.0, time::Duration::seconds(300));
        // Stop alerts and alerts for others are not warnings.
        w.record(&payload(&[("firing", "stop", "other", &since, ZERO)]), &m);
        assert!(w.get(&state("other", Status::Running, None)).is_none());
        w.record(
            &payload(&[("resolved", "warn", "lab", &since, &ago(1))]),
            &m,
        );
        assert!(w.get(&lab).is_none());
    }

    #[test]
    fn warnings_end_at_ends_at_on_a_stop_or_a_later_start() {
        let (w, m) = (
            Warnings::new(Duration::from_secs(300), Duration::from_secs(60)),
            Metrics::new(),
        );
        let since = ago(10);
        // endsAt already past: the fallback applies; endsAt to come: kept.
        w.record(&payload(&[("firing", "warn", "a", &since, &ago(1))]), &m);
        assert!(w.get(&state("a", Status::Running, None)).is_some());
        let soon = Timestamp(Timestamp::now().0 + time::Duration::milliseconds(300)).to_string();
        w.record(&payload(&[("firing", "warn", "b", &since, &soon)]), &m);
        assert!(w.get(&state("b", Status::Running, None)).is_some());
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            w.get(&state("b", Status::Running, None)).is_none(),
            "expired at endsAt"
        );
        // Down, or started after the warning began: not shown.
        assert!(w.get(&state("a", Status::Stopped, None)).is_none());
        assert!(w.get(&state("a", Status::Running, Some(&ago(1)))).is_none());
        w.clear(&NotebookId::new("local", "a"));
        assert!(w.get(&state("a", Status::Running, None)).is_none());
    }

    #[test]
    fn the_store_is_bounded_and_expired_entries_make_room() {
        let (w, m) = (
            Warnings::with_max(Duration::from_secs(5), Duration::from_secs(1), 2),
            Metrics::new(),
        );
        let since = ago(1);
        let soon = Timestamp(Timestamp::now().0 + time::Duration::milliseconds(200)).to_string();
        w.record(
            &payload(&[
                ("firing", "warn", "a", &since, &soon),
                ("firing", "warn", "b", &since, ZERO),
            ]),
            &m,
        );
        w.record(&payload(&[("firing", "warn", "c", &since, ZERO)]), &m);
        assert_eq!(w.len(), 2);
        assert!(
            w.get(&state("c", Status::Running, None)).is_none(),
            "dropped when full"
        );
        assert!(m
            .render()
            .contains("nbidle_warnings_total{result=\"dropped\"} 1"));
        std::thread::sleep(Duration::from_millis(300));
        w.record(&payload(&[("firing", "warn", "c", &since, ZERO)]), &m);
        assert!(
            w.get(&state("c", Status::Running, None)).is_some(),
            "a's expired entry made room"
        );
        assert_eq!(w.len(), 2);
    }
}
