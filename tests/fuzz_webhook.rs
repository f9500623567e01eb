//! Property-based: arbitrary and mutated Alertmanager payloads through the
//! webhook's parser ([`alerts::parse`]) and decision ([`decide::handle`]),
//! against an in-memory backend.
//!
//! For every body: nothing panics; a refused body names a field and logs as
//! one bounded line; an accepted body is a well-formed version-4 payload;
//! and a notebook is stopped exactly when the payload was accepted and one
//! of its alerts is firing, carries `nbidle_action="stop"`, names the
//! notebook by its `namespace` and `notebook` labels, the notebook is known,
//! has not opted out, is not down, and was not started after
//! max(the alert's start, now − its idle time); autostop enabled, no dry
//! run. The expectation is read from the raw JSON, not from the parser's
//! structs.
//!
//! `PROPTEST_CASES` sets the number of cases (3,000 by default; `make fuzz`
//! runs 1,000,000 in release).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use nbidle::alerts;
use nbidle::backend::{Backend, JupyterEndpoint, ScrapeTarget, StopOutcome, StopRequest};
use nbidle::decide::{self, Decision, Policy};
use nbidle::logsafe::{Escaped, MAX_CHARS};
use nbidle::metrics::Metrics;
use nbidle::notebook::{NotebookId, NotebookState, Status, StopCause, Timestamp};
use nbidle::{Error, Result};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const DEFAULT_CASES: u32 = 3_000;
const IDLE_AFTER: Duration = Duration::from_secs(30 * 60);

/// The in-memory backend's notebooks: namespace, name, status, autostop,
/// started this many seconds ago. `flaky` fails its stop; every notebook in
/// namespace `broken` fails its read.
const NOTEBOOKS: &[(&str, &str, Status, bool, i64)] = &[
    ("local", "a", Status::Running, true, 2 * 3600),
    ("local", "b", Status::Running, true, 60),
    ("local", "keep", Status::Running, false, 2 * 3600),
    ("local", "down", Status::Stopped, true, 2 * 3600),
    ("local", "flaky", Status::Running, true, 2 * 3600),
    ("team-a", "a", Status::Running, true, 2 * 3600),
    ("team-a", "starting", Status::Starting, true, 2 * 3600),
    ("broken", "a", Status::Running, true, 2 * 3600),
];

fn seeds() -> BTreeMap<NotebookId, NotebookState> {
    let now = OffsetDateTime::now_utc();
    NOTEBOOKS
        .iter()
        .map(|&(ns, name, status, autostop, ago)| {
            let id = NotebookId::new(ns, name);
            let state = NotebookState {
                id: id.clone(),
                status,
                message: None,
                autostop,
                idle_after_seconds: IDLE_AFTER.as_secs(),
                owner: None,
                started_at: Some(Timestamp(now - time::Duration::seconds(ago))),
                stopped_at: None,
                stopped_by: None,
                url: None,
            };
            (id, state)
        })
        .collect()
}

/// Keeps its notebooks in memory and records every stop it performs; keeps
/// the contract of the real backends (idempotent stops, the opt-out and
/// `unless_started_after` honoured atomically with the stop).
struct Fake {
    notebooks: Mutex<BTreeMap<NotebookId, NotebookState>>,
    stops: Mutex<Vec<(NotebookId, StopRequest)>>,
}

impl Fake {
    fn new(notebooks: BTreeMap<NotebookId, NotebookState>) -> Fake {
        Fake {
            notebooks: Mutex::new(notebooks),
            stops: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Backend for Fake {
    async fn list(&self) -> Result<Vec<NotebookState>> {
        Ok(self.notebooks.lock().unwrap().values().cloned().collect())
    }

    async fn get(&self, id: &NotebookId) -> Result<NotebookState> {
        if id.namespace == "broken" {
            return Err(Error::Backend("the API server is unreachable".into()));
        }
        let nbs = self.notebooks.lock().unwrap();
        nbs.get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome> {
        let mut nbs = self.notebooks.lock().unwrap();
        let st = nbs.get_mut(id).ok_or_else(|| Error::NotFound(id.clone()))?;
        if st.status.is_down() {
            return Ok(StopOutcome::AlreadyStopped(st.clone()));
        }
        if matches!(req.cause, StopCause::IdleAlert { .. }) && !st.autostop {
            return Ok(StopOutcome::OptedOut(st.clone()));
        }
        if let (Some(limit), Some(started)) = (req.unless_started_after, st.started_at) {
            if started > limit {
                return Ok(StopOutcome::StartedSince(st.clone()));
            }
        }
        if id.name == "flaky" {
            return Err(Error::Backend("the stop failed".into()));
        }
        st.status = Status::Stopped;
        st.stopped_by = Some(req.cause.clone());
        self.stops.lock().unwrap().push((id.clone(), req));
        Ok(StopOutcome::Stopped(st.clone()))
    }

    async fn start(&self, id: &NotebookId) -> Result<NotebookState> {
        Err(Error::Backend(format!("{id}: the webhook never starts")))
    }

    async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>> {
        Ok(Vec::new())
    }

    async fn jupyter_endpoints(&self) -> Result<Vec<JupyterEndpoint>> {
        Ok(Vec::new())
    }
}

// ---- the expectation, from the raw JSON ----

/// The fields nbidle reads, as plain JSON, present or not (`null` is
/// present). The others are skipped as the parser skips them: serde_json
/// does not check the UTF-8 or `\u` escapes of what it skips, so a whole
/// `Value` cannot be read from every accepted body.
#[derive(Deserialize)]
struct RawPayload {
    #[serde(default, deserialize_with = "present")]
    version: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    status: Option<Value>,
    #[serde(default, rename = "groupKey", deserialize_with = "present")]
    group_key: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    receiver: Option<Value>,
    #[serde(default)]
    alerts: Option<Vec<Object<RawAlert>>>,
}

#[derive(Deserialize)]
struct RawAlert {
    #[serde(default, deserialize_with = "present")]
    status: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    labels: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    annotations: Option<Value>,
    #[serde(default, rename = "startsAt", deserialize_with = "present")]
    starts_at: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    fingerprint: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `T` read from a JSON object only (serde's derived structs also read an
/// array of their field values).
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData))
            .map(Object)
    }
}

fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect::<Map<String, Value>>(),
    )
}

impl RawPayload {
    fn into_value(self) -> Value {
        let alerts = self.alerts.map(|xs| {
            Value::Array(
                xs.into_iter()
                    .map(|Object(a)| {
                        object(vec![
                            ("status", a.status),
                            ("labels", a.labels),
                            ("annotations", a.annotations),
                            ("startsAt", a.starts_at),
                            ("fingerprint", a.fingerprint),
                        ])
                    })
                    .collect(),
            )
        });
        object(vec![
            ("version", self.version),
            ("status", self.status),
            ("groupKey", self.group_key),
            ("receiver", self.receiver),
            ("alerts", alerts),
        ])
    }
}

fn rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// The notebooks the payload must stop, judged at `now`.
fn expected_stops(
    raw: &Value,
    initial: &BTreeMap<NotebookId, NotebookState>,
    policy: Policy,
    now: OffsetDateTime,
) -> BTreeSet<NotebookId> {
    let mut out = BTreeSet::new();
    if !policy.enabled || policy.dry_run {
        return out;
    }
    for a in raw["alerts"].as_array().into_iter().flatten() {
        let labels = &a["labels"];
        if a["status"] != "firing" || labels["nbidle_action"] != "stop" {
            continue;
        }
        let (Some(ns), Some(name)) = (labels["namespace"].as_str(), labels["notebook"].as_str())
        else {
            continue;
        };
        let id = NotebookId::new(ns, name);
        let Some(st) = initial.get(&id) else { continue };
        if ns == "broken" || name == "flaky" || !st.autostop || st.status.is_down() {
            continue;
        }
        let Some(starts_at) = a["startsAt"].as_str().and_then(rfc3339) else {
            continue;
        };
        let idle = time::Duration::try_from(IDLE_AFTER).unwrap();
        let limit = starts_at.max(now.checked_sub(idle).unwrap_or(now));
        if st.started_at.is_some_and(|t| t.0 > limit) {
            continue;
        }
        out.insert(id);
    }
    out
}

fn is_string_map(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.values().all(Value::is_string))
}

/// An accepted payload is a version-4 payload with every field nbidle reads
/// well-formed.
fn check_accepted_shape(raw: &Value) -> Result<(), TestCaseError> {
    let status = |v: &Value| v == "firing" || v == "resolved";
    prop_assert_eq!(&raw["version"], "4");
    prop_assert!(status(&raw["status"]), "payload status {}", raw["status"]);
    for key in ["groupKey", "receiver"] {
        prop_assert!(raw.get(key).is_none_or(Value::is_string), "{key}");
    }
    let alerts = raw["alerts"].as_array();
    prop_assert!(alerts.is_some(), "alerts is not an array");
    for a in alerts.unwrap() {
        prop_assert!(status(&a["status"]), "alert status {}", a["status"]);
        prop_assert!(is_string_map(&a["labels"]), "labels {}", a["labels"]);
        prop_assert!(a.get("annotations").is_none_or(is_string_map));
        prop_assert!(a.get("fingerprint").is_none_or(Value::is_string));
        let starts = a["startsAt"].as_str().and_then(rfc3339);
        prop_assert!(starts.is_some(), "startsAt {}", a["startsAt"]);
        for key in ["namespace", "notebook"] {
            prop_assert_ne!(&a["labels"][key], "", "empty {}", key);
        }
    }
    Ok(())
}

/// One body through what the webhook does with it: parse, then decide.
async fn check(
    body: &[u8],
    valid_by_construction: bool,
    policy: Policy,
    metrics: &Metrics,
) -> Result<(), TestCaseError> {
    let initial = seeds();
    let fake = Fake::new(initial.clone());
    let payload = match alerts::parse(body) {
        Ok(p) => p,
        Err(e) => {
            prop_assert!(!valid_by_construction, "a valid payload refused: {e}");
            let Error::Invalid { field, .. } = &e else {
                return Err(TestCaseError::fail(format!("not an Invalid error: {e:?}")));
            };
            prop_assert!(!field.is_empty());
            // The rejection's log line: one line, bounded.
            let logged = Escaped(&e).to_string();
            prop_assert!(!logged.contains(['\n', '\r', '\x1b']), "{logged}");
            prop_assert!(logged.chars().count() <= MAX_CHARS + 32, "{logged}");
            // Refused: the webhook answers 400 and decides nothing.
            return Ok(());
        }
    };
    let raw = match serde_json::from_slice::<Object<RawPayload>>(body) {
        Ok(Object(r)) => r.into_value(),
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "accepted, yet unreadable: {e}"
            )))
        }
    };
    check_accepted_shape(&raw)?;
    prop_assert_eq!(
        payload.alerts.len(),
        raw["alerts"].as_array().unwrap().len()
    );

    let before = OffsetDateTime::now_utc();
    let results = decide::handle(&payload, &fake, None, policy, metrics).await;
    let after = OffsetDateTime::now_utc();

    prop_assert_eq!(results.len(), payload.alerts.len());
    let stops = fake.stops.lock().unwrap().clone();
    let stopped: BTreeSet<NotebookId> = stops.iter().map(|(id, _)| id.clone()).collect();
    prop_assert_eq!(stopped.len(), stops.len(), "a notebook stopped twice");
    let decided_stopped = results
        .iter()
        .filter(|r| r.decision == Decision::Stopped)
        .count();
    prop_assert_eq!(decided_stopped, stops.len());
    // Judged at both ends of the decision: a notebook whose fate changed in
    // between may go either way.
    let (x, y) = (
        expected_stops(&raw, &initial, policy, before),
        expected_stops(&raw, &initial, policy, after),
    );
    let must: BTreeSet<_> = x.intersection(&y).cloned().collect();
    let may: BTreeSet<_> = x.union(&y).cloned().collect();
    prop_assert!(
        must.is_subset(&stopped) && stopped.is_subset(&may),
        "stopped {stopped:?}, expected {must:?} (up to {may:?})"
    );
    // Each stop carries the alert that asked for it.
    for (id, req) in &stops {
        let StopCause::IdleAlert {
            alertname,
            alert_starts_at,
        } = &req.cause
        else {
            return Err(TestCaseError::fail(format!("{id}: not an idle-alert stop")));
        };
        prop_assert!(req.unless_started_after.is_some());
        let asked = raw["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["namespace"] == id.namespace.as_str()
                && a["labels"]["notebook"] == id.name.as_str()
                && a["labels"]["alertname"].as_str().unwrap_or("") == alertname
                && a["startsAt"].as_str().and_then(rfc3339) == Some(alert_starts_at.0)
        });
        prop_assert!(asked, "{id} stopped for an alert the payload does not have");
    }
    Ok(())
}

// ---- payloads: valid ones, then mutated ----

fn from_now(secs: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .format(&Rfc3339)
        .unwrap()
}

/// Strings that mean something to the parser or the decision, and hostile
/// ones.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "stop", "Stop", "firing", "resolved", "4", "3", "local", "team-a", "broken",
            "a", "b", "keep", "down", "flaky", "starting", "ghost", "", "NotebookIdle",
            "nbidle_action", "0001-01-01T00:00:00Z", "2026-01-01T00:00:00+02:00",
            "yesterday", "\r\nINFO forged", "\u{1b}[31m", "\u{2028}", "a/b",
        ])
        .prop_map(String::from),
        3 => any::<String>(),
        1 => (1usize..70_000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Valid times only: invalid ones come from the mutations.
fn starts_at() -> impl Strategy<Value = String> {
    prop_oneof![
        // Around the notebooks' starts (2 h and 60 s ago) and the idle time.
        8 => prop::sample::select(vec![-3 * 3600, -3600, -600, -30, 0, 3600]).prop_map(from_now),
        1 => Just("0001-01-01T00:00:00Z".to_string()),
        1 => Just("9999-12-31T23:59:59.999999999Z".to_string()),
        1 => Just("2026-01-01T10:00:00.5+02:00".to_string()),
    ]
}

fn label(common: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        12 => prop::sample::select(common).prop_map(|s| Some(s.to_string())),
        1 => Just(None),
        2 => interesting_string().prop_map(Some),
    ]
}

fn alert() -> impl Strategy<Value = Value> {
    (
        prop_oneof![6 => Just("firing"), 1 => Just("resolved")],
        label(&[
            "local", "local", "local", "team-a", "team-a", "broken", "other",
        ]),
        label(&["a", "a", "b", "starting", "keep", "down", "flaky", "ghost"]),
        label(&["stop", "stop", "stop", "stop", "stop", "warn"]),
        label(&["NotebookIdle", "NotebookIdleGPU"]),
        starts_at(),
        prop::collection::btree_map(interesting_string(), interesting_string(), 0..3),
    )
        .prop_map(|(status, ns, nb, action, name, starts, extra)| {
            let mut a = common::idle_alert("local", "a", &starts);
            a["status"] = json!(status);
            let labels = a["labels"].as_object_mut().unwrap();
            for (k, v) in extra {
                labels.insert(k, json!(v));
            }
            for (key, value) in [
                ("namespace", ns),
                ("notebook", nb),
                ("nbidle_action", action),
                ("alertname", name),
            ] {
                match value {
                    // The parser refuses empty names, as it should.
                    Some(v) if v.is_empty() && (key == "namespace" || key == "notebook") => {
                        labels.remove(key)
                    }
                    Some(v) => labels.insert(key.into(), json!(v)),
                    None => labels.remove(key),
                };
            }
            a
        })
}

fn valid_payload() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(alert(), 0..6),
        prop_oneof![Just("firing"), Just("resolved")],
    )
        .prop_map(|(alerts, status)| {
            let mut p = common::payload(alerts);
            p["status"] = json!(status);
            p
        })
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        interesting_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(interesting_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A change at one node of the payload, chosen by index among all nodes.
#[derive(Debug, Clone)]
enum Mutation {
    Remove(usize),
    Replace(usize, Value),
    /// Into the object at the node, or its nearest object parent.
    Insert(usize, String, Value),
    /// An array's element again, or an object's field under a second key.
    Duplicate(usize),
    /// An object as the array of its values in the order of an alert's
    /// fields (serde's derived structs can also be written so).
    ObjectToArray(usize),
    /// A string `s` as `{s: null}` (how serde's enums can also be written).
    StringToMap(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "nbidle_action", "namespace", "notebook", "status", "version", "alerts",
            "labels", "startsAt", "alertname", "annotations", "fingerprint",
        ])
        .prop_map(String::from),
        1 => interesting_string(),
    ];
    prop_oneof![
        2 => any::<usize>().prop_map(Mutation::Remove),
        4 => (any::<usize>(), any_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        3 => (any::<usize>(), key, any_json()).prop_map(|(i, k, v)| Mutation::Insert(i, k, v)),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
        1 => any::<usize>().prop_map(Mutation::ObjectToArray),
        1 => any::<usize>().prop_map(Mutation::StringToMap),
    ]
}

/// JSON pointers of every node, the root first.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Array(xs) => {
            for (i, x) in xs.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// The parent's pointer and the last segment, unescaped.
fn split(ptr: &str) -> Option<(&str, String)> {
    let cut = ptr.rfind('/')?;
    let last = ptr[cut + 1..].replace("~1", "/").replace("~0", "~");
    Some((&ptr[..cut], last))
}

fn apply(root: &mut Value, m: &Mutation) {
    let mut ptrs = Vec::new();
    pointers(root, String::new(), &mut ptrs);
    let at = |i: usize| ptrs[i % ptrs.len()].clone();
    match m {
        Mutation::Remove(i) => {
            let ptr = at(*i);
            if let Some((parent, last)) = split(&ptr) {
                match root.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(&last);
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(n) = last.parse::<usize>() {
                            a.remove(n);
                        }
                    }
                    _ => {}
                }
            }
        }
        Mutation::Replace(i, v) => {
            if let Some(node) = root.pointer_mut(&at(*i)) {
                *node = v.clone();
            }
        }
        Mutation::Insert(i, k, v) => {
            let mut ptr = at(*i);
            loop {
                if let Some(Value::Object(o)) = root.pointer_mut(&ptr) {
                    o.insert(k.clone(), v.clone());
                    return;
                }
                match split(&ptr) {
                    Some((parent, _)) => ptr = parent.to_string(),
                    None => return,
                }
            }
        }
        Mutation::Duplicate(i) => match root.pointer_mut(&at(*i)) {
            Some(Value::Array(a)) if !a.is_empty() => {
                let first = a[0].clone();
                a.push(first);
            }
            Some(Value::Object(o)) => {
                if let Some((k, v)) = o.iter().next().map(|(k, v)| (k.clone(), v.clone())) {
                    o.insert(format!("{k} "), v);
                }
            }
            _ => {}
        },
        Mutation::ObjectToArray(i) => {
            if let Some(node) = root.pointer_mut(&at(*i)) {
                if let Value::Object(o) = node {
                    let fields = ["status", "labels", "annotations", "startsAt", "fingerprint"];
                    *node = fields.iter().filter_map(|f| o.get(*f).cloned()).collect();
                }
            }
        }
        Mutation::StringToMap(i) => {
            if let Some(node) = root.pointer_mut(&at(*i)) {
                if let Value::String(s) = node {
                    *node = json!({ s.as_str(): null });
                }
            }
        }
    }
}

/// A change to the serialized bytes.
#[derive(Debug, Clone)]
enum ByteOp {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn byte_op() -> impl Strategy<Value = ByteOp> {
    let token = prop_oneof![
        prop::sample::select(vec![
            &b"\"nbidle_action\":\"stop\","[..],
            b",",
            b"}",
            b"]",
            b"\"",
            b"\\",
            b"\\u0000",
            b"\\ud800",
            b"{",
            b"[",
            b"\xff",
            b"\r\n",
            b"1e400",
        ])
        .prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteOp::Set(i, b)),
        (any::<usize>(), token).prop_map(|(i, t)| ByteOp::Insert(i, t)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| ByteOp::Delete(i, n)),
        any::<usize>().prop_map(ByteOp::Truncate),
    ]
}

fn apply_bytes(body: &mut Vec<u8>, op: &ByteOp) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match op {
        ByteOp::Set(i, b) => {
            if !body.is_empty() {
                let i = at(*i, body.len());
                body[i] = *b;
            }
        }
        ByteOp::Insert(i, t) => {
            let i = at(*i, body.len() + 1);
            body.splice(i..i, t.iter().copied());
        }
        ByteOp::Delete(i, n) => {
            let i = at(*i, body.len());
            let end = (i + n).min(body.len());
            body.drain(i..end);
        }
        ByteOp::Truncate(i) => body.truncate(at(*i, body.len() + 1)),
    }
}

/// A request body, and whether it was built valid and left so.
#[derive(Clone)]
struct Body {
    bytes: Vec<u8>,
    valid: bool,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.bytes);
        write!(
            f,
            "Body(valid: {}, {} bytes: {text:?})",
            self.valid,
            self.bytes.len()
        )
    }
}

fn body() -> impl Strategy<Value = Body> {
    let to_bytes = |v: &Value| serde_json::to_vec(v).unwrap();
    prop_oneof![
        4 => valid_payload().prop_map(move |v| Body { bytes: to_bytes(&v), valid: true }),
        5 => (valid_payload(), prop::collection::vec(mutation(), 1..4)).prop_map(
            move |(mut v, ms)| {
                for m in &ms {
                    apply(&mut v, m);
                }
                Body { bytes: to_bytes(&v), valid: false }
            }
        ),
        2 => (
            valid_payload(),
            prop::collection::vec(mutation(), 0..3),
            prop::collection::vec(byte_op(), 1..4)
        )
            .prop_map(move |(mut v, ms, ops)| {
                for m in &ms {
                    apply(&mut v, m);
                }
                let mut b = to_bytes(&v);
                for op in &ops {
                    apply_bytes(&mut b, op);
                }
                Body { bytes: b, valid: false }
            }),
        1 => any_json().prop_map(move |v| Body { bytes: to_bytes(&v), valid: false }),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(|bytes| Body { bytes, valid: false }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![8 => Just(true), 1 => Just(false)],
        prop_oneof![8 => Just(false), 1 => Just(true)],
        any::<bool>(),
    )
        .prop_map(|(enabled, dry_run, recheck)| Policy {
            enabled,
            dry_run,
            recheck,
        })
}

fn cases() -> u32 {
    match std::env::var("PROPTEST_CASES") {
        Ok(v) => v.parse().expect("PROPTEST_CASES is a number"),
        Err(_) => DEFAULT_CASES,
    }
}

#[test]
fn arbitrary_and_mutated_payloads_never_panic_and_stop_only_what_a_valid_alert_names() {
    let cases = cases();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let metrics = Metrics::new();
    let config = Config {
        cases,
        // Cases are made in the run, not read from earlier failures' files.
        failure_persistence: None,
        ..Config::default()
    };
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&(body(), policy()), |(body, policy)| {
        rt.block_on(check(&body.bytes, body.valid, policy, &metrics))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // How many payloads reached the decision, as a check that the
    // generator is not only producing garbage.
    let decided: u64 = ["firing", "resolved"]
        .iter()
        .map(|s| metrics.alerts_received.with_label_values(&[*s]).get())
        .sum();
    let stops = metrics
        .stops
        .with_label_values(&["idle-alert", "success"])
        .get();
    eprintln!(
        "{cases} cases in {:?}: {decided} alerts decided, {stops} stops",
        started.elapsed()
    );
    assert!(decided > u64::from(cases) / 4, "too few valid payloads");
    assert!(stops > u64::from(cases) / 50, "too few stops");
}
