//! `decide::handle` against the in-memory backend: every [`Decision`], what
//! the backend was asked, and what was counted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::backend::memory::{Call, Fault, ForcedStop, MemoryBackend, Op};
use crate::notebook::{NotebookState, Status};

fn t(s: &str) -> Timestamp {
    s.parse::<Timestamp>().unwrap()
}

#[test]
fn stale_limit_is_the_alert_start_until_the_notebook_lived_idle_after() {
    let p = Policy {
        enabled: true,
        dry_run: false,
        recheck: true,
    };
    let alert = t("2026-01-01T10:00:00Z");
    let m30 = Duration::from_secs(30 * 60);
    // 10 minutes later: a notebook started after 10:00 is protected.
    assert_eq!(p.stale_limit(alert, t("2026-01-01T10:10:00Z"), m30), alert);
    // 2 hours later: only a start within the last 30 minutes protects it.
    assert_eq!(
        p.stale_limit(alert, t("2026-01-01T12:00:00Z"), m30),
        t("2026-01-01T11:30:00Z")
    );
    // A notebook with a 4h idle time is protected for 4h after its start.
    let h4 = Duration::from_secs(4 * 3600);
    assert_eq!(p.stale_limit(alert, t("2026-01-01T12:00:00Z"), h4), alert);
}

const POLICY: Policy = Policy {
    enabled: true,
    dry_run: false,
    recheck: true,
};

fn ago(minutes: i64) -> Timestamp {
    Timestamp(Timestamp::now().0 - time::Duration::minutes(minutes))
}

fn id(name: &str) -> NotebookId {
    NotebookId::new("team-a", name)
}

/// A running notebook of team-a, started an hour ago, idle after 30 minutes.
fn running(name: &str) -> NotebookState {
    MemoryBackend::running("team-a", name)
}

fn started(name: &str, minutes_ago: i64) -> NotebookState {
    NotebookState {
        started_at: Some(ago(minutes_ago)),
        ..running(name)
    }
}

/// A firing idle alert about team-a/`name`, active for 10 minutes.
fn firing(name: &str) -> serde_json::Value {
    firing_since(name, ago(10))
}

fn firing_since(name: &str, starts_at: Timestamp) -> serde_json::Value {
    json!({
        "status": "firing",
        "labels": {
            "alertname": "NotebookIdle",
            "namespace": "team-a",
            "notebook": name,
            "nbidle_action": "stop",
        },
        "startsAt": starts_at.to_string(),
    })
}

/// A webhook payload, through the same parser as the webhook's.
fn payload(alerts: Vec<serde_json::Value>) -> WebhookPayload {
    let body = json!({"version": "4", "status": "firing", "alerts": alerts});
    crate::alerts::parse(body.to_string().as_bytes()).unwrap()
}

async fn handle_with(
    backend: &MemoryBackend,
    exporter: Option<&Exporter>,
    policy: Policy,
    alerts: Vec<serde_json::Value>,
) -> (Vec<Decision>, Metrics) {
    let metrics = Metrics::new();
    let results = handle(&payload(alerts), backend, exporter, policy, &metrics).await;
    (results.into_iter().map(|r| r.decision).collect(), metrics)
}

/// The one decision for one alert.
async fn decide(backend: &MemoryBackend, policy: Policy, alert: serde_json::Value) -> Decision {
    let (mut d, _) = handle_with(backend, None, policy, vec![alert]).await;
    assert_eq!(d.len(), 1);
    d.remove(0)
}

/// The value of one series as `render` writes it (`name{a="x",b="y"}`).
fn sample(metrics: &Metrics, series: &str) -> f64 {
    let text = metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn stops_of(backend: &MemoryBackend) -> Vec<Call> {
    backend.calls_of(Op::Stop)
}

#[tokio::test]
async fn an_idle_alert_stops_the_notebook_with_the_alert_as_cause() {
    let b = MemoryBackend::new([running("lab")]);
    let alert_start = ago(10);
    let (d, metrics) = handle_with(&b, None, POLICY, vec![firing_since("lab", alert_start)]).await;
    assert_eq!(d, [Decision::Stopped]);
    let cause = StopCause::IdleAlert {
        alertname: "NotebookIdle".into(),
        alert_starts_at: alert_start,
    };
    // Started an hour ago, idle after 30 minutes: the alert's start is the
    // latest start that may still be stopped, checked by the backend.
    assert_eq!(
        stops_of(&b),
        [Call::Stop {
            id: id("lab"),
            cause: cause.clone(),
            unless_started_after: Some(alert_start),
        }]
    );
    let state = b.state(&id("lab")).unwrap();
    assert_eq!(state.status, Status::Stopped);
    assert_eq!(state.stopped_by, Some(cause));
    assert_eq!(
        sample(
            &metrics,
            r#"nbidle_stops_total{result="success",trigger="idle-alert"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"nbidle_alert_decisions_total{decision="stopped"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&metrics, r#"nbidle_alerts_received_total{status="firing"}"#),
        1.0
    );
}

#[tokio::test]
async fn a_duplicate_delivery_finds_the_notebook_already_stopped() {
    let b = MemoryBackend::new([running("lab")]);
    let alert = firing_since("lab", ago(10));
    assert_eq!(decide(&b, POLICY, alert.clone()).await, Decision::Stopped);
    assert_eq!(decide(&b, POLICY, alert).await, Decision::AlreadyStopped);
    // The second saw the stopped state and asked for nothing.
    assert_eq!(stops_of(&b).len(), 1);
}

#[tokio::test]
async fn a_stopping_notebook_is_already_stopped_and_not_stopped_again() {
    let b = MemoryBackend::new([NotebookState {
        status: Status::Stopping,
        ..running("lab")
    }]);
    assert_eq!(
        decide(&b, POLICY, firing("lab")).await,
        Decision::AlreadyStopped
    );
    assert!(stops_of(&b).is_empty());
    // And when only the backend's own read finds it stopped.
    b.put(running("lab"));
    b.force_stop(&id("lab"), ForcedStop::AlreadyStopped);
    assert_eq!(
        decide(&b, POLICY, firing("lab")).await,
        Decision::AlreadyStopped
    );
    assert_eq!(stops_of(&b).len(), 1);
}

#[tokio::test]
async fn an_alert_older_than_the_notebooks_start_is_stale() {
    // Started 5 minutes ago; the alert began 10 minutes ago.
    let b = MemoryBackend::new([started("lab", 5)]);
    assert_eq!(decide(&b, POLICY, firing("lab")).await, Decision::Stale);
    assert!(stops_of(&b).is_empty(), "refused before asking the backend");
    assert_eq!(b.state(&id("lab")).unwrap().status, Status::Running);
}

#[tokio::test]
async fn a_start_the_backend_sees_at_the_stop_is_stale_too() {
    // The read said an old start; the backend's atomic check saw a newer one.
    let b = MemoryBackend::new([running("lab")]);
    b.force_stop(&id("lab"), ForcedStop::StartedSince);
    assert_eq!(decide(&b, POLICY, firing("lab")).await, Decision::Stale);
    assert_eq!(stops_of(&b).len(), 1);
    // The memory backend's own guard, without forcing: a start after the
    // limit it is handed.
    let b = MemoryBackend::new([running("lab")]);
    let req = StopRequest {
        cause: StopCause::User { by: None },
        unless_started_after: Some(ago(90)),
    };
    assert!(matches!(
        b.stop(&id("lab"), req).await.unwrap(),
        StopOutcome::StartedSince(_)
    ));
}

#[tokio::test]
async fn an_old_alert_still_firing_after_idle_after_of_the_new_life_stops_it() {
    // Started 40 minutes ago, idle after 30; the alert began 2 hours ago:
    // it has seen this life idle for 30 minutes too.
    let b = MemoryBackend::new([started("lab", 40)]);
    let (d, _) = handle_with(&b, None, POLICY, vec![firing_since("lab", ago(120))]).await;
    assert_eq!(d, [Decision::Stopped]);
    let Call::Stop {
        unless_started_after: Some(limit),
        ..
    } = &stops_of(&b)[0]
    else {
        panic!("{:?}", b.calls());
    };
    // The limit is "30 minutes ago", not the alert's start.
    assert!(*limit > ago(31) && *limit < ago(29), "{limit}");
}

#[tokio::test]
async fn an_opted_out_notebook_is_not_stopped() {
    let b = MemoryBackend::new([NotebookState {
        autostop: false,
        ..running("lab")
    }]);
    assert_eq!(decide(&b, POLICY, firing("lab")).await, Decision::OptedOut);
    assert!(stops_of(&b).is_empty());
    // Opted out since the read: the backend's fresh read refuses.
    let b = MemoryBackend::new([running("lab")]);
    b.force_stop(&id("lab"), ForcedStop::OptedOut);
    assert_eq!(decide(&b, POLICY, firing("lab")).await, Decision::OptedOut);
    assert_eq!(b.state(&id("lab")).unwrap().status, Status::Running);
}

#[tokio::test]
async fn an_unknown_notebook_is_dropped() {
    let b = MemoryBackend::new([running("lab")]);
    assert_eq!(
        decide(&b, POLICY, firing("gone")).await,
        Decision::UnknownNotebook
    );
    assert!(stops_of(&b).is_empty());
    // Deleted between the read and the stop.
    b.fail(Op::Stop, Some(&id("lab")), Fault::NotFound);
    assert_eq!(
        decide(&b, POLICY, firing("lab")).await,
        Decision::UnknownNotebook
    );
}

/// The warning goes to nbidle's webhook too (for people), and must stop
/// nothing, whatever else it carries: an idle notebook, a stop's own name,
/// dry run off.
#[tokio::test]
async fn warnings_never_stop_anything() {
    let b = MemoryBackend::new([running("lab")]);
    let mut warn = firing("lab");
    warn["labels"]["nbidle_action"] = json!("warn");
    warn["labels"]["alertname"] = json!("NotebookIdleSoon");
    let mut named_like_a_stop = warn.clone();
    named_like_a_stop["labels"]["alertname"] = json!("NotebookIdle");
    let (d, _) = handle_with(&b, None, POLICY, vec![warn, named_like_a_stop]).await;
    assert_eq!(d, vec![Decision::Warning; 2]);
    assert!(b.calls().is_empty(), "{:?}", b.calls());
    assert_eq!(b.get(&id("lab")).await.unwrap().status, Status::Running);
}

#[tokio::test]
async fn alerts_without_the_stop_action_or_a_notebook_are_not_for_nbidle() {
    let b = MemoryBackend::new([running("lab")]);
    let mut no_action = firing("lab");
    no_action["labels"]
        .as_object_mut()
        .unwrap()
        .remove("nbidle_action");
    let mut other_action = firing("lab");
    other_action["labels"]["nbidle_action"] = json!("restart");
    let mut no_notebook = firing("lab");
    no_notebook["labels"]
        .as_object_mut()
        .unwrap()
        .remove("notebook");
    let mut no_namespace = firing("lab");
    no_namespace["labels"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    let (d, _) = handle_with(
        &b,
        None,
        POLICY,
        vec![no_action, other_action, no_notebook, no_namespace],
    )
    .await;
    assert_eq!(d, vec![Decision::NotForNbidle; 4]);
    assert!(b.calls().is_empty(), "{:?}", b.calls());
}

#[tokio::test]
async fn a_resolved_alert_does_nothing() {
    let b = MemoryBackend::new([running("lab")]);
    let mut alert = firing("lab");
    alert["status"] = json!("resolved");
    let (d, metrics) = handle_with(&b, None, POLICY, vec![alert]).await;
    assert_eq!(d, [Decision::Resolved]);
    assert!(b.calls().is_empty());
    assert_eq!(
        sample(
            &metrics,
            r#"nbidle_alerts_received_total{status="resolved"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_dry_run_reads_but_does_not_stop() {
    let b = MemoryBackend::new([running("lab")]);
    let policy = Policy {
        dry_run: true,
        ..POLICY
    };
    assert_eq!(decide(&b, policy, firing("lab")).await, Decision::DryRun);
    assert_eq!(b.calls(), [Call::Get(id("lab"))]);
    assert_eq!(b.state(&id("lab")).unwrap().status, Status::Running);
}

#[tokio::test]
async fn disabled_autostop_asks_the_backend_nothing() {
    let b = MemoryBackend::new([running("lab")]);
    let policy = Policy {
        enabled: false,
        ..POLICY
    };
    assert_eq!(decide(&b, policy, firing("lab")).await, Decision::Disabled);
    assert!(b.calls().is_empty());
}

#[tokio::test]
async fn a_notebook_that_is_not_running_is_not_stopped_by_an_alert() {
    let b = MemoryBackend::new([NotebookState {
        status: Status::Starting,
        ..running("lab")
    }]);
    assert_eq!(
        decide(&b, POLICY, firing("lab")).await,
        Decision::NotRunning
    );
    assert_eq!(b.state(&id("lab")).unwrap().status, Status::Starting);
    let b = MemoryBackend::new([running("lab")]);
    b.force_stop(&id("lab"), ForcedStop::NotRunning);
    assert_eq!(
        decide(&b, POLICY, firing("lab")).await,
        Decision::NotRunning
    );
}

#[tokio::test]
async fn a_backend_failure_is_failed_and_counted() {
    let b = MemoryBackend::new([running("lab"), running("db")]);
    b.fail(
        Op::Get,
        Some(&id("lab")),
        Fault::Backend("api said 500".into()),
    );
    b.fail(
        Op::Stop,
        Some(&id("db")),
        Fault::Backend("disk full".into()),
    );
    let (d, metrics) = handle_with(&b, None, POLICY, vec![firing("lab"), firing("db")]).await;
    assert_eq!(
        d,
        [
            Decision::Failed("backend: api said 500".into()),
            Decision::Failed("backend: disk full".into()),
        ]
    );
    assert_eq!(
        sample(&metrics, r#"nbidle_errors_total{kind="backend"}"#),
        2.0
    );
    // Only the stop that was tried counts as a failed stop.
    assert_eq!(
        sample(
            &metrics,
            r#"nbidle_stops_total{result="error",trigger="idle-alert"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"nbidle_alert_decisions_total{decision="failed"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn a_backend_that_cannot_answer_now_is_unavailable() {
    let b = MemoryBackend::new([running("lab"), running("db")]);
    b.fail(
        Op::Get,
        Some(&id("lab")),
        Fault::Unavailable("api server timeout".into()),
    );
    b.fail(
        Op::Stop,
        Some(&id("db")),
        Fault::Unavailable("api server timeout".into()),
    );
    let (d, metrics) = handle_with(&b, None, POLICY, vec![firing("lab"), firing("db")]).await;
    let unavailable = Decision::Unavailable("api server timeout".into());
    assert_eq!(d, [unavailable.clone(), unavailable]);
    // Not a failure: Alertmanager delivers it again.
    assert_eq!(
        sample(
            &metrics,
            r#"nbidle_stops_total{result="error",trigger="idle-alert"}"#
        ),
        0.0
    );
    // While the backend is not current, a notebook it does not list may
    // exist unseen: not "unknown".
    let b = MemoryBackend::new([]);
    b.set_current(false);
    assert!(matches!(
        decide(&b, POLICY, firing("unseen")).await,
        Decision::Unavailable(_)
    ));
}

#[tokio::test]
async fn each_alert_gets_its_own_decision_in_payload_order() {
    let b = MemoryBackend::new([
        running("a"),
        started("b", 5),
        NotebookState {
            autostop: false,
            ..running("c")
        },
    ]);
    let (d, metrics) = handle_with(
        &b,
        None,
        POLICY,
        vec![firing("a"), firing("b"), firing("c"), firing("d")],
    )
    .await;
    assert_eq!(
        d,
        [
            Decision::Stopped,
            Decision::Stale,
            Decision::OptedOut,
            Decision::UnknownNotebook
        ]
    );
    assert_eq!(stops_of(&b).len(), 1);
    for decision in ["stopped", "stale", "opted_out", "unknown_notebook"] {
        let series = format!(r#"nbidle_alert_decisions_total{{decision="{decision}"}}"#);
        assert_eq!(sample(&metrics, &series), 1.0, "{decision}");
    }
}

/// A Jupyter server on loopback whose one kernel is `state`, last active
/// at `last_activity`; its base URL.
async fn jupyter_with_kernel(state: &str, last_activity: Timestamp) -> String {
    use warp::Filter;
    let kernels =
        json!([{"execution_state": state, "last_activity": last_activity.to_string()}]).to_string();
    let routes = warp::path!("api" / "kernels")
        .map(move || kernels.clone())
        .or(warp::path!("api" / "terminals").map(|| "[]".to_string()))
        .or(warp::path!("api" / "status")
            .map(move || json!({"started": ago(60).to_string()}).to_string()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    format!("http://127.0.0.1:{port}/")
}

/// An exporter over `backend` that has probed once.
async fn probed(backend: Arc<MemoryBackend>) -> Arc<Exporter> {
    let cfg =
        crate::config::Config::from_yaml("backend:\n  kind: kubeflow\n", std::path::Path::new("."))
            .unwrap();
    // Known for longer than warn_before: deadlines as their activity says.
    let e = Exporter::new(
        backend,
        cfg.exporter,
        Duration::from_secs(300),
        Duration::ZERO,
    );
    e.round().await;
    e
}

/// `ActiveAgain` comes only from the exporter's own probe, so this one
/// needs an exporter, probing a Jupyter stand-in on loopback.
#[tokio::test]
async fn a_busy_kernel_since_the_alert_is_active_again() {
    let url = jupyter_with_kernel("busy", Timestamp::now()).await;
    let b = Arc::new(MemoryBackend::new([NotebookState {
        url: Some(url),
        ..running("lab")
    }]));
    let e = probed(b.clone()).await;
    let probe = e.facts(&id("lab")).and_then(|f| f.probe).unwrap();
    assert!(probe.ok && probe.busy_kernels() == 1, "{probe:?}");
    let (d, _) = handle_with(&b, Some(&e), POLICY, vec![firing("lab")]).await;
    assert_eq!(d, [Decision::ActiveAgain]);
    assert!(stops_of(&b).is_empty());
    // Without the re-check, Prometheus's word stands.
    let no_recheck = Policy {
        recheck: false,
        ..POLICY
    };
    let (d, _) = handle_with(&b, Some(&e), no_recheck, vec![firing("lab")]).await;
    assert_eq!(d, [Decision::Stopped]);
}

/// The alert fires at the first evaluation past the deadline Prometheus
/// last scraped, which can be a scrape and a probe round older than nbidle's
/// own latest probe: work seen by that probe, though before the alert
/// began, keeps the notebook.
#[tokio::test]
async fn activity_the_alert_had_not_seen_holds_the_stop() {
    let url = jupyter_with_kernel("idle", ago(1)).await;
    let b = Arc::new(MemoryBackend::new([NotebookState {
        url: Some(url),
        ..running("lab")
    }]));
    let e = probed(b.clone()).await;
    assert!(e.facts(&id("lab")).and_then(|f| f.probe).unwrap().ok);
    // Fired after the probe, on a deadline scraped before the activity.
    let alert = firing_since("lab", Timestamp::now());
    let (d, _) = handle_with(&b, Some(&e), POLICY, vec![alert]).await;
    assert_eq!(d, [Decision::ActiveAgain]);
    assert!(stops_of(&b).is_empty());
}

#[tokio::test]
async fn activity_older_than_the_idle_time_does_not_hold_the_stop() {
    let url = jupyter_with_kernel("idle", ago(40)).await;
    let b = Arc::new(MemoryBackend::new([NotebookState {
        url: Some(url),
        ..running("lab")
    }]));
    let e = probed(b.clone()).await;
    assert!(e.facts(&id("lab")).and_then(|f| f.probe).unwrap().ok);
    let (d, _) = handle_with(&b, Some(&e), POLICY, vec![firing("lab")]).await;
    assert_eq!(d, [Decision::Stopped]);
}
