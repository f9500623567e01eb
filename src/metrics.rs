//! nbidle's own metrics, in one struct that registers itself. Every label
//! has a small fixed set of values; notebook names never become labels here.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::alerts::AlertStatus;
use crate::notebook::{NotebookState, Status};

/// Declares a label enum: its variants, their label values on the wire and
/// `ALL`, from which series are pre-created and the docs are checked.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value. `ErrorKind`'s is read only by the test that
            /// checks the docs: its series are not pre-created.
            #[allow(dead_code)]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value, as dashboards and alerts match it.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }
    };
}

label_enum! {
    /// The `kind` label of `nbidle_errors_total`.
    ErrorKind {
        /// Wrong or missing webhook credentials.
        WebhookAuth => "webhook_auth",
        /// A webhook payload that is not a valid Alertmanager payload.
        WebhookPayload => "webhook_payload",
        /// Wrong or missing API token.
        ApiAuth => "api_auth",
        /// An API token used outside its namespaces.
        ApiForbidden => "api_forbidden",
        /// An API request the backend refused (not found, invalid).
        ApiRequest => "api_request",
        /// Wrong or missing token on `/metrics`, `/metrics/notebooks`, `/sd/notebooks`.
        MetricsAuth => "metrics_auth",
        /// A backend failure (every server-side error is counted here).
        Backend => "backend",
        /// Accepting a connection failed.
        Accept => "accept",
        /// A TLS handshake failed or timed out.
        TlsHandshake => "tls_handshake",
    }
}

label_enum! {
    /// The `trigger` label of `nbidle_stops_total` and `nbidle_starts_total`.
    Trigger {
        /// Through the REST API.
        User => "user",
        /// A firing idle alert on the webhook.
        IdleAlert => "idle-alert",
    }
}

label_enum! {
    /// The `result` label of `nbidle_stops_total` and `nbidle_starts_total`.
    Outcome {
        Success => "success",
        Error => "error",
    }
}

label_enum! {
    /// The `op` label of `nbidle_silences_total`.
    SilenceOp {
        /// Keep running: a silence created.
        Create => "create",
        /// Keep running cancelled: a silence expired.
        Expire => "expire",
    }
}

label_enum! {
    /// The `result` label of `nbidle_jupyterlab_notifications_total`.
    Notified {
        /// The extension took the state.
        Ok => "ok",
        /// No extension (404): not tried again for a while.
        Absent => "absent",
        /// Unreachable, too slow, or an answer that is not the contract's.
        Error => "error",
    }
}

label_enum! {
    /// The `result` label of `nbidle_jupyterlab_keep_requests_total`.
    KeepRequest {
        /// The silence was made.
        Ok => "ok",
        /// Not the request offered (kind, duration, too many, no Alertmanager).
        Refused => "refused",
        /// Alertmanager failed to make the silence.
        Error => "error",
    }
}

/// nbidle's own metrics, registered in a registry of their own and
/// rendered on `/metrics`.
pub struct Metrics {
    registry: Registry,
    /// Alerts in webhook payloads, by alert status (firing|resolved).
    pub alerts_received: IntCounterVec,
    /// What was decided for each alert (see `decide::Decision::label`).
    pub(crate) alert_decisions: IntCounterVec,
    /// Stops by trigger (`user`, `idle-alert`) and result (`success`,
    /// `error`).
    pub stops: IntCounterVec,
    /// Starts by [`Trigger`] (user) and [`Outcome`].
    pub(crate) starts: IntCounterVec,
    /// Webhook request handling time, by response code class.
    pub(crate) webhook_duration: HistogramVec,
    /// Notebooks by status; refreshed at every scrape.
    pub(crate) notebooks: IntGaugeVec,
    /// Errors by kind ([`ErrorKind`]).
    pub(crate) errors: IntCounterVec,
    /// Open HTTP connections.
    pub(crate) connections_open: IntGauge,
    /// Idle connections closed to make room at `server.max_connections`.
    pub(crate) connections_evicted: IntCounter,
    /// New connections closed at the cap because every open one was busy.
    pub(crate) connections_refused: IntCounter,
    /// Log lines left out by a rate limit, by kind (`logsafe::LIMITS`).
    pub(crate) log_lines_suppressed: IntCounterVec,
    /// What `log_lines_suppressed` has been brought up to, per limit.
    log_synced: Vec<AtomicU64>,
    /// The Kubernetes backends' watches.
    pub(crate) watch: WatchMetrics,
    /// Alertmanager silences made and expired for Keep running, by
    /// [`SilenceOp`] and [`Outcome`].
    pub(crate) silences: IntCounterVec,
    /// Warning alerts recorded from the webhook, and those refused because
    /// the store was full.
    pub(crate) warnings: IntCounterVec,
    /// Pushes to notebooks' JupyterLab extension, by [`Notified`].
    pub(crate) jupyterlab_notifications: IntCounterVec,
    /// Keep running requests from JupyterLab, by [`KeepRequest`].
    pub(crate) jupyterlab_keep_requests: IntCounterVec,
}

/// Per watch (labels `resource`, `watch_namespace`: one series per watched
/// namespace of the config, `*` for all): whether its cache is current,
/// when it last heard from the API server, its relists and failures.
#[derive(Clone)]
pub(crate) struct WatchMetrics {
    up: IntGaugeVec,
    last_event: GaugeVec,
    relists: IntCounterVec,
    failures: IntCounterVec,
}

impl WatchMetrics {
    fn new(registry: &Registry) -> Self {
        const LABELS: &[&str] = &["resource", "watch_namespace"];
        let up = IntGaugeVec::new(
            Opts::new(
                "nbidle_kube_watch_up",
                "1 while a Kubernetes watch is listed and open (its cache is current), else 0.",
            ),
            LABELS,
        )
        .expect("valid metric definition");
        let last_event = GaugeVec::new(
            Opts::new(
                "nbidle_kube_watch_last_event_timestamp_seconds",
                "When a Kubernetes watch last heard from the API server (an event, a bookmark, a list or a new watch).",
            ),
            LABELS,
        )
        .expect("valid metric definition");
        let relists = IntCounterVec::new(
            Opts::new(
                "nbidle_kube_watch_relists_total",
                "Complete lists of a Kubernetes watch: the first, and one after each 410 Gone.",
            ),
            LABELS,
        )
        .expect("valid metric definition");
        let failures = IntCounterVec::new(
            Opts::new(
                "nbidle_kube_watch_failures_total",
                "Failed list or watch calls of a Kubernetes watch.",
            ),
            LABELS,
        )
        .expect("valid metric definition");
        for m in [
            Box::new(up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(last_event.clone()),
            Box::new(relists.clone()),
            Box::new(failures.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        WatchMetrics {
            up,
            last_event,
            relists,
            failures,
        }
    }

    fn labels(l: &[String; 2]) -> [&str; 2] {
        [l[0].as_str(), l[1].as_str()]
    }

    /// Creates a watch's series, so a watch that never lists shows up as 0.
    pub(crate) fn register(&self, l: &[String; 2]) {
        let l = Self::labels(l);
        self.up.with_label_values(&l).set(0);
        self.relists.with_label_values(&l);
        self.failures.with_label_values(&l);
    }

    pub(crate) fn set_up(&self, l: &[String; 2], up: bool) {
        self.up.with_label_values(&Self::labels(l)).set(up as i64);
    }

    pub(crate) fn heard(&self, l: &[String; 2]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_event.with_label_values(&Self::labels(l)).set(now);
    }

    pub(crate) fn relisted(&self, l: &[String; 2]) {
        self.relists.with_label_values(&Self::labels(l)).inc();
        self.heard(l);
    }

    pub(crate) fn failed(&self, l: &[String; 2]) {
        self.failures.with_label_values(&Self::labels(l)).inc();
    }
}

impl Metrics {
    /// Every metric registered, its fixed series at zero.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c =
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let alerts_received = counter(
            "nbidle_alerts_received_total",
            "Alerts received on the webhook, by alert status.",
            &["status"],
        );
        let alert_decisions = counter(
            "nbidle_alert_decisions_total",
            "What nbidle decided for each firing alert.",
            &["decision"],
        );
        let stops = counter(
            "nbidle_stops_total",
            "Notebook stops issued, by trigger and result.",
            &["trigger", "result"],
        );
        let starts = counter(
            "nbidle_starts_total",
            "Notebook starts issued, by trigger and result.",
            &["trigger", "result"],
        );
        let errors = counter("nbidle_errors_total", "Errors, by kind.", &["kind"]);
        let log_lines_suppressed = counter(
            "nbidle_log_lines_suppressed_total",
            "Log lines left out by the limit on repeated lines, by kind.",
            &["kind"],
        );
        let webhook_duration = HistogramVec::new(
            HistogramOpts::new(
                "nbidle_webhook_duration_seconds",
                "Time to handle one webhook request.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["code"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(webhook_duration.clone()))
            .expect("metric registered once");
        let notebooks = IntGaugeVec::new(
            Opts::new(
                "nbidle_notebooks",
                "Notebooks known to the backend, by status.",
            ),
            &["status"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(notebooks.clone()))
            .expect("metric registered once");
        let connections_open =
            IntGauge::new("nbidle_http_connections_open", "Open HTTP connections.")
                .expect("valid metric definition");
        let connections_evicted = IntCounter::new(
            "nbidle_http_connections_evicted_total",
            "Idle HTTP connections closed to make room at server.max_connections.",
        )
        .expect("valid metric definition");
        let connections_refused = IntCounter::new(
            "nbidle_http_connections_refused_total",
            "New HTTP connections closed at server.max_connections because every open one was busy.",
        )
        .expect("valid metric definition");
        for m in [
            Box::new(connections_open.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connections_evicted.clone()),
            Box::new(connections_refused.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        // Pre-create the series so dashboards show zeros, not gaps.
        for s in [AlertStatus::Firing, AlertStatus::Resolved] {
            alerts_received.with_label_values(&[s.as_str()]);
        }
        for t in Trigger::ALL {
            for r in Outcome::ALL {
                stops.with_label_values(&[t.as_str(), r.as_str()]);
            }
        }
        // Starts come only from users.
        for r in Outcome::ALL {
            starts.with_label_values(&[Trigger::User.as_str(), r.as_str()]);
        }
        for l in crate::logsafe::LIMITS {
            log_lines_suppressed.with_label_values(&[l.kind()]);
        }
        let silences = counter(
            "nbidle_silences_total",
            "Alertmanager silences created and expired for Keep running, by result.",
            &["op", "result"],
        );
        for o in SilenceOp::ALL {
            for r in Outcome::ALL {
                silences.with_label_values(&[o.as_str(), r.as_str()]);
            }
        }
        // A counter by `result`, each value's series there from the start.
        let by_result = |name: &str, help: &str, results: &[&str]| {
            let c = counter(name, help, &["result"]);
            for r in results {
                c.with_label_values(&[r]);
            }
            c
        };
        let warnings = by_result(
            "nbidle_warnings_total",
            "Warning alerts from the webhook: recorded, or dropped because the store was full.",
            &["recorded", "dropped"],
        );
        let jupyterlab_notifications = by_result(
            "nbidle_jupyterlab_notifications_total",
            "State pushed to notebooks' JupyterLab extension, by result.",
            &Notified::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        );
        let jupyterlab_keep_requests = by_result(
            "nbidle_jupyterlab_keep_requests_total",
            "Keep running requests collected from JupyterLab, by result.",
            &KeepRequest::ALL
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
        );
        let watch = WatchMetrics::new(&registry);
        Metrics {
            jupyterlab_notifications,
            jupyterlab_keep_requests,
            watch,
            silences,
            warnings,
            registry,
            alerts_received,
            alert_decisions,
            stops,
            starts,
            webhook_duration,
            notebooks,
            errors,
            connections_open,
            connections_evicted,
            connections_refused,
            log_lines_suppressed,
            log_synced: crate::logsafe::LIMITS
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    pub(crate) fn set_notebooks(&self, states: &[NotebookState]) {
        for s in Status::ALL {
            let n = states.iter().filter(|n| n.status == s).count();
            self.notebooks
                .with_label_values(&[s.as_str()])
                .set(n as i64);
        }
    }

    pub(crate) fn error(&self, kind: ErrorKind) {
        self.errors.with_label_values(&[kind.as_str()]).inc();
    }

    pub(crate) fn stop(&self, trigger: Trigger, outcome: Outcome) {
        self.stops
            .with_label_values(&[trigger.as_str(), outcome.as_str()])
            .inc();
    }

    pub(crate) fn start(&self, trigger: Trigger, outcome: Outcome) {
        self.starts
            .with_label_values(&[trigger.as_str(), outcome.as_str()])
            .inc();
    }

    /// A silence call to Alertmanager, and whether it worked.
    pub(crate) fn silence(&self, op: SilenceOp, ok: bool) {
        let r = if ok { Outcome::Success } else { Outcome::Error };
        self.silences
            .with_label_values(&[op.as_str(), r.as_str()])
            .inc();
    }

    /// A warning alert recorded (`true`) or dropped at the store's bound.
    pub(crate) fn warning(&self, recorded: bool) {
        let r = if recorded { "recorded" } else { "dropped" };
        self.warnings.with_label_values(&[r]).inc();
    }

    /// One push to a notebook's JupyterLab extension.
    pub(crate) fn jupyterlab_notified(&self, r: Notified) {
        self.jupyterlab_notifications
            .with_label_values(&[r.as_str()])
            .inc();
    }

    /// One Keep running request from JupyterLab.
    pub(crate) fn jupyterlab_keep_request(&self, r: KeepRequest) {
        self.jupyterlab_keep_requests
            .with_label_values(&[r.as_str()])
            .inc();
    }

    pub(crate) fn alert_received(&self, status: AlertStatus) {
        self.alerts_received
            .with_label_values(&[status.as_str()])
            .inc();
    }

    /// `decision` is `decide::Decision::label`'s value.
    pub(crate) fn alert_decided(&self, decision: &'static str) {
        self.alert_decisions.with_label_values(&[decision]).inc();
    }

    /// One webhook request answered with `code`, after `seconds`.
    pub(crate) fn webhook_handled(&self, code: u16, seconds: f64) {
        self.webhook_duration
            .with_label_values(&[code_class(code)])
            .observe(seconds);
    }

    /// Brings `nbidle_log_lines_suppressed_total` up to the limits' counts
    /// (they live with the process's log, not with one `Metrics`).
    fn sync_log_lines_suppressed(&self) {
        for (l, synced) in crate::logsafe::LIMITS.iter().zip(&self.log_synced) {
            let total = l.suppressed_total();
            // fetch_max: of two renders at once, only one adds the difference.
            let before = synced.fetch_max(total, Ordering::Relaxed);
            if total > before {
                self.log_lines_suppressed
                    .with_label_values(&[l.kind()])
                    .inc_by(total - before);
            }
        }
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        self.sync_log_lines_suppressed();
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The `code` label of `nbidle_webhook_duration_seconds`: a status code's class.
fn code_class(code: u16) -> &'static str {
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The label values listed in docs/architecture.md's metrics table for
    /// `label` on `metric`'s row.
    fn documented(metric: &str, label: &str) -> Vec<String> {
        let doc = include_str!("../docs/architecture.md");
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{metric}` |")))
            .unwrap_or_else(|| panic!("no row for {metric} in docs/architecture.md"));
        let after = row
            .split_once(&format!("`{label}` ("))
            .unwrap_or_else(|| panic!("no values for {label} in {row}"))
            .1;
        let values = after.split_once(')').expect("closing parenthesis").0;
        values.split(", ").map(str::to_string).collect()
    }

    fn values<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> Vec<String> {
        all.iter().map(|v| as_str(*v).to_string()).collect()
    }

    #[test]
    fn the_docs_list_every_label_value() {
        assert_eq!(
            documented("nbidle_errors_total", "kind"),
            values(ErrorKind::ALL, ErrorKind::as_str)
        );
        assert_eq!(
            documented("nbidle_stops_total", "trigger"),
            values(Trigger::ALL, Trigger::as_str)
        );
        assert_eq!(
            documented("nbidle_stops_total", "result"),
            values(Outcome::ALL, Outcome::as_str)
        );
        assert_eq!(
            documented("nbidle_silences_total", "op"),
            values(SilenceOp::ALL, SilenceOp::as_str)
        );
        assert_eq!(
            documented("nbidle_jupyterlab_notifications_total", "result"),
            values(Notified::ALL, Notified::as_str)
        );
        assert_eq!(
            documented("nbidle_jupyterlab_keep_requests_total", "result"),
            values(KeepRequest::ALL, KeepRequest::as_str)
        );
    }

    #[test]
    fn label_values_on_the_wire() {
        let m = Metrics::new();
        m.error(ErrorKind::TlsHandshake);
        m.stop(Trigger::IdleAlert, Outcome::Error);
        m.start(Trigger::User, Outcome::Success);
        m.alert_received(AlertStatus::Resolved);
        m.webhook_handled(503, 0.01);
        m.silence(SilenceOp::Create, true);
        m.silence(SilenceOp::Expire, false);
        m.warning(false);
        m.jupyterlab_notified(Notified::Absent);
        m.jupyterlab_keep_request(KeepRequest::Refused);
        let text = m.render();
        for series in [
            r#"nbidle_errors_total{kind="tls_handshake"} 1"#,
            r#"nbidle_stops_total{result="error",trigger="idle-alert"} 1"#,
            r#"nbidle_stops_total{result="success",trigger="user"} 0"#,
            r#"nbidle_starts_total{result="success",trigger="user"} 1"#,
            r#"nbidle_starts_total{result="error",trigger="user"} 0"#,
            r#"nbidle_alerts_received_total{status="resolved"} 1"#,
            r#"nbidle_alerts_received_total{status="firing"} 0"#,
            r#"nbidle_webhook_duration_seconds_count{code="5xx"} 1"#,
            r#"nbidle_silences_total{op="create",result="success"} 1"#,
            r#"nbidle_silences_total{op="expire",result="error"} 1"#,
            r#"nbidle_silences_total{op="create",result="error"} 0"#,
            r#"nbidle_warnings_total{result="dropped"} 1"#,
            r#"nbidle_warnings_total{result="recorded"} 0"#,
            r#"nbidle_jupyterlab_notifications_total{result="absent"} 1"#,
            r#"nbidle_jupyterlab_notifications_total{result="ok"} 0"#,
            r#"nbidle_jupyterlab_keep_requests_total{result="refused"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
        }
    }
}
