//! Alertmanager webhook payloads (version 4) as Alertmanager posts them to
//! nbidle, shared by the tests and the benchmarks.
#![allow(
    dead_code,
    reason = "each test binary compiles tests/common whole and uses a part of it"
)]

use serde_json::{json, Value};

/// A webhook payload with the given alerts.
pub fn payload(alerts: Vec<Value>) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}/{nbidle_action=\"stop\"}:{namespace=\"local\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "nbidle",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    })
}

/// A firing `NotebookIdle` alert for `namespace/notebook`, labelled as
/// nbidle's rules label it.
pub fn idle_alert(namespace: &str, notebook: &str, starts_at: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "NotebookIdle", "namespace": namespace, "notebook": notebook, "nbidle_action": "stop", "severity": "info"},
        "annotations": {"summary": "idle"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": format!("fp-{notebook}"),
    })
}

/// RFC 3339 for `secs` seconds from now (negative: in the past).
pub fn rfc3339_from_now(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}
