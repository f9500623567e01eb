//! The routes in-process (`warp::test`), over the in-memory backend: auth,
//! the REST API, the webhook, `/livez` and `/readyz`, the scrape routes,
//! the one error shape and the body limits. The spawned binary's tests in
//! `tests/` prove the same against real components; these are the fast net.
//! Longer than most files: one whole test per behaviour, sharing one
//! fixture (the app, its tokens and four notebooks) that a split would repeat.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use warp::http::{Response, StatusCode};
use warp::test::RequestBuilder;

use super::auth::{ApiTokens, Credentials};
use super::body::BodyLimits;
use super::{filters, App, Readiness};
use crate::backend::memory::{Call, Fault, MemoryBackend, Op};
use crate::decide::Policy;
use crate::metrics::Metrics;
use crate::notebook::{NotebookId, NotebookState, Status, StopCause, Timestamp};

const WEBHOOK_TOKEN: &str = "webhook-secret";
const ADMIN_TOKEN: &str = "admin-secret";
/// An API token for namespace team-a only.
const TEAM_TOKEN: &str = "team-a-secret";
const SCRAPE_TOKEN: &str = "scrape-secret";
const MAX_BODY_BYTES: u64 = 4096;

const POLICY: Policy = Policy {
    enabled: true,
    dry_run: false,
    recheck: true,
};

fn at(s: &str) -> Option<Timestamp> {
    Some(s.parse::<Timestamp>().unwrap())
}

/// The same four notebooks at every call: three running, one stopped.
fn notebooks() -> Vec<NotebookState> {
    let running = |ns: &str, name: &str| NotebookState {
        started_at: at("2025-01-01T08:00:00Z"),
        ..MemoryBackend::running(ns, name)
    };
    vec![
        running("team-a", "lab"),
        running("team-a", "idle"),
        running("team-b", "lab"),
        NotebookState {
            status: Status::Stopped,
            stopped_at: at("2025-01-01T09:00:00Z"),
            stopped_by: Some(StopCause::User { by: None }),
            ..running("team-b", "off")
        },
    ]
}

/// An app over `backend`, ready, with the test tokens and body limits.
fn app_over(backend: Arc<MemoryBackend>, limits: BodyLimits) -> Arc<App> {
    let readiness = Readiness::default();
    readiness.set_synced();
    app_with(backend, limits, readiness)
}

fn app_with(backend: Arc<MemoryBackend>, limits: BodyLimits, readiness: Readiness) -> Arc<App> {
    Arc::new(App {
        notifier: None,
        backend,
        exporter: None,
        metrics: Arc::new(Metrics::new()),
        policy: POLICY,
        webhook_credentials: Credentials::new([WEBHOOK_TOKEN.to_string()], None),
        api_tokens: ApiTokens::new(
            vec![ADMIN_TOKEN.into()],
            vec![(TEAM_TOKEN.into(), vec!["team-a".into()])],
        )
        .with_scrape_token(Some(SCRAPE_TOKEN.into())),
        body_limits: Arc::new(limits),
        readiness,
        silences: None,
        warnings: Arc::new(crate::warnings::Warnings::new(
            Duration::from_secs(300),
            Duration::from_secs(60),
        )),
        page: crate::page::Page::new(Duration::from_secs(60), 10, None, false),
    })
}

fn limits() -> BodyLimits {
    BodyLimits::new(MAX_BODY_BYTES, 4 * MAX_BODY_BYTES, Duration::from_secs(5))
}

fn setup() -> (Arc<MemoryBackend>, Arc<App>) {
    let backend = Arc::new(MemoryBackend::new(notebooks()));
    let app = app_over(backend.clone(), limits());
    (backend, app)
}

async fn send(app: &Arc<App>, req: RequestBuilder) -> Response<Bytes> {
    req.reply(&filters::routes(app.clone())).await
}

fn get(path: &str, token: &str) -> RequestBuilder {
    warp::test::request()
        .path(path)
        .header("authorization", format!("Bearer {token}"))
}

fn post(path: &str, token: &str) -> RequestBuilder {
    get(path, token).method("POST")
}

fn webhook(body: &Value) -> RequestBuilder {
    post("/webhook/alertmanager", WEBHOOK_TOKEN).body(body.to_string())
}

fn json_of(r: &Response<Bytes>) -> Value {
    serde_json::from_slice(r.body())
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(r.body())))
}

fn retry_after(r: &Response<Bytes>) -> Option<&str> {
    r.headers().get("retry-after").map(|v| v.to_str().unwrap())
}

/// Asserts `r` is `status` with exactly `{"error": {"code", "message"}}`
/// and `code`; its message.
fn error(r: &Response<Bytes>, status: StatusCode, code: &str) -> String {
    let v = json_of(r);
    assert_eq!(r.status(), status, "{v}");
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "{status}: {v}"
    );
    let top = v.as_object().unwrap();
    assert_eq!(top.keys().collect::<Vec<_>>(), ["error"], "{v}");
    let e = top["error"].as_object().unwrap();
    assert_eq!(e.keys().collect::<Vec<_>>(), ["code", "message"], "{v}");
    assert_eq!(e["code"], code, "{v}");
    e["message"].as_str().unwrap().to_string()
}

/// One series of `/metrics`, read through the route.
async fn sample(app: &Arc<App>, series: &str) -> f64 {
    let r = send(app, get("/metrics", SCRAPE_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = String::from_utf8(r.body().to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn id(ns: &str, name: &str) -> NotebookId {
    NotebookId::new(ns, name)
}

fn alert(ns: &str, name: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {
            "alertname": "NotebookIdle",
            "namespace": ns,
            "notebook": name,
            "nbidle_action": "stop",
        },
        "startsAt": Timestamp(Timestamp::now().0 - time::Duration::minutes(10)).to_string(),
    })
}

fn payload(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "nbidle", "alerts": alerts})
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_401_and_reach_nothing() {
    let (backend, app) = setup();
    let api = "/api/v1/notebooks";
    let none = |path: &str| warp::test::request().path(path);
    for req in [
        none(api),
        get(api, "wrong"),
        get(api, WEBHOOK_TOKEN),
        get(api, SCRAPE_TOKEN),
        none(api).header("authorization", format!("Basic {ADMIN_TOKEN}")),
        post("/api/v1/notebooks/team-a/lab/stop", "wrong"),
        none("/webhook/alertmanager").method("POST"),
        webhook(&payload(vec![alert("team-a", "lab")]))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}")),
        none("/metrics"),
        get("/sd/notebooks", ADMIN_TOKEN),
    ] {
        let r = send(&app, req).await;
        let message = error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(message, "missing or wrong credentials");
    }
    assert!(backend.calls().is_empty(), "{:?}", backend.calls());
    assert_eq!(
        sample(&app, r#"nbidle_errors_total{kind="api_auth"}"#).await,
        6.0
    );
    assert_eq!(
        sample(&app, r#"nbidle_errors_total{kind="webhook_auth"}"#).await,
        2.0
    );
    assert_eq!(
        sample(&app, r#"nbidle_errors_total{kind="metrics_auth"}"#).await,
        2.0
    );
    assert_eq!(
        backend.state(&id("team-a", "lab")).unwrap().status,
        Status::Running
    );
}

#[tokio::test]
async fn a_namespaced_token_gets_403_outside_its_namespaces_and_sees_only_its_own() {
    let (backend, app) = setup();
    for req in [
        get("/api/v1/notebooks/team-b/lab", TEAM_TOKEN),
        post("/api/v1/notebooks/team-b/lab/stop", TEAM_TOKEN),
        post("/api/v1/notebooks/team-b/off/start", TEAM_TOKEN),
    ] {
        let message = error(&send(&app, req).await, StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(message, r#"this token may not use namespace "team-b""#);
    }
    assert!(backend.calls().is_empty(), "nothing is read");
    assert_eq!(
        backend.state(&id("team-b", "lab")).unwrap().status,
        Status::Running
    );
    assert_eq!(
        sample(&app, r#"nbidle_errors_total{kind="api_forbidden"}"#).await,
        3.0
    );

    let r = send(&app, get("/api/v1/notebooks", TEAM_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let names: Vec<String> = json_of(&r)["notebooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("{}/{}", n["namespace"], n["name"]).replace('"', ""))
        .collect();
    assert_eq!(names, ["team-a/idle", "team-a/lab"]);
    let r = send(&app, post("/api/v1/notebooks/team-a/lab/stop", TEAM_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_of(&r)["status"], "stopped");
}

#[tokio::test]
async fn list_and_get_answer_what_the_backend_holds() {
    let (_, app) = setup();
    let r = send(&app, get("/api/v1/notebooks", ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let expected: Vec<Value> = {
        let mut n = notebooks();
        n.sort_by(|a, b| a.id.cmp(&b.id));
        n.iter().map(|s| serde_json::to_value(s).unwrap()).collect()
    };
    assert_eq!(json_of(&r), json!({ "notebooks": expected }));

    let r = send(&app, get("/api/v1/notebooks/team-b/off", ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v = json_of(&r);
    assert_eq!(v, expected[3], "team-b/off");
    assert_eq!(v["status"], "stopped");
    // The fixture's stop predates `by`: none is answered.
    assert_eq!(v["stopped_by"], json!({"trigger": "user"}));
}

#[tokio::test]
async fn stop_and_start_change_the_notebook_and_are_idempotent() {
    let (backend, app) = setup();
    let lab = id("team-a", "lab");
    let r = send(&app, post("/api/v1/notebooks/team-a/lab/stop", ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v = json_of(&r);
    assert_eq!(v["status"], "stopped");
    assert_eq!(
        v["stopped_by"],
        json!({"trigger": "user", "by": {"via": "api", "token": "a token for every namespace"}})
    );
    assert_eq!(
        backend.calls_of(Op::Stop),
        [Call::Stop {
            id: lab.clone(),
            cause: StopCause::user(Some(crate::notebook::StoppedBy::Api {
                token: "a token for every namespace".into()
            })),
            unless_started_after: None,
        }]
    );
    // Again: already stopped, the same answer, not counted twice.
    let r = send(&app, post("/api/v1/notebooks/team-a/lab/stop", ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_of(&r)["status"], "stopped");
    assert_eq!(
        sample(
            &app,
            r#"nbidle_stops_total{result="success",trigger="user"}"#
        )
        .await,
        1.0
    );

    let before = backend.state(&lab).unwrap();
    let r = send(
        &app,
        post("/api/v1/notebooks/team-a/lab/start", ADMIN_TOKEN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v = json_of(&r);
    assert_eq!(v["status"], "running");
    assert_eq!(v["stopped_by"], Value::Null);
    assert_ne!(backend.state(&lab).unwrap().started_at, before.started_at);
    let r = send(
        &app,
        post("/api/v1/notebooks/team-a/lab/start", ADMIN_TOKEN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        sample(
            &app,
            r#"nbidle_starts_total{result="success",trigger="user"}"#
        )
        .await,
        1.0,
        "a start of a running notebook started nothing"
    );
    // The routes take method and path strictly.
    let r = send(&app, get("/api/v1/notebooks/team-a/lab/stop", ADMIN_TOKEN)).await;
    error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn an_unknown_notebook_is_404_and_no_failed_stop() {
    let (_, app) = setup();
    for req in [
        get("/api/v1/notebooks/team-a/nope", ADMIN_TOKEN),
        post("/api/v1/notebooks/team-a/nope/stop", ADMIN_TOKEN),
        post("/api/v1/notebooks/team-a/nope/start", ADMIN_TOKEN),
    ] {
        let message = error(&send(&app, req).await, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(message, "notebook team-a/nope not found");
    }
    assert_eq!(
        sample(&app, r#"nbidle_stops_total{result="error",trigger="user"}"#).await,
        0.0
    );
}

#[tokio::test]
async fn before_the_backend_has_listed_the_api_and_webhook_answer_503_not_ready() {
    let backend = Arc::new(MemoryBackend::new(notebooks()));
    backend.set_synced(false);
    let app = app_with(backend.clone(), limits(), Readiness::default());
    // As `run::serve` does: synced once the backend has synced.
    let sync = {
        let app = app.clone();
        tokio::spawn(async move {
            app.backend.synced().await;
            app.readiness.set_synced();
        })
    };
    for req in [
        get("/api/v1/notebooks", ADMIN_TOKEN),
        get("/api/v1/notebooks/team-a/lab", ADMIN_TOKEN),
        post("/api/v1/notebooks/team-a/lab/stop", ADMIN_TOKEN),
        post("/api/v1/notebooks/team-a/lab/start", ADMIN_TOKEN),
        webhook(&payload(vec![alert("team-a", "lab")])),
    ] {
        let r = send(&app, req).await;
        let message = error(&r, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
        assert_eq!(message, "the backend has not listed its notebooks yet");
    }
    let r = send(&app, warp::test::request().path("/readyz")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(backend.calls().is_empty(), "{:?}", backend.calls());
    assert!(!sync.is_finished());

    backend.set_synced(true);
    sync.await.unwrap();
    let r = send(&app, warp::test::request().path("/readyz")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(&app, get("/api/v1/notebooks/team-a/lab", ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_backend_that_cannot_answer_gets_503_unavailable_with_retry_after() {
    let (backend, app) = setup();
    // Not current: a notebook it does not list may exist unseen.
    backend.set_current(false);
    let r = send(&app, get("/api/v1/notebooks/team-a/unseen", ADMIN_TOKEN)).await;
    let message = error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(
        message.starts_with("unavailable: team-a/unseen"),
        "{message}"
    );
    assert_eq!(retry_after(&r), Some("5"));

    backend.set_current(true);
    backend.fail(
        Op::Stop,
        Some(&id("team-a", "lab")),
        Fault::Unavailable("api server timeout".into()),
    );
    let r = send(&app, post("/api/v1/notebooks/team-a/lab/stop", ADMIN_TOKEN)).await;
    let message = error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(message, "unavailable: api server timeout");
    assert_eq!(retry_after(&r), Some("5"));
    assert_eq!(
        sample(&app, r#"nbidle_errors_total{kind="backend"}"#).await,
        2.0
    );

    // Last: /metrics itself lists, and would count this failure again.
    backend.fail(
        Op::List,
        None,
        Fault::Unavailable("api server timeout".into()),
    );
    let r = send(&app, get("/api/v1/notebooks", ADMIN_TOKEN)).await;
    error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(retry_after(&r), Some("5"));
}

#[tokio::test]
async fn a_backend_failure_is_500_without_server_paths() {
    let (backend, app) = setup();
    let lab = id("team-a", "lab");
    backend.put(NotebookState {
        status: Status::Stopped,
        ..backend.state(&lab).unwrap()
    });
    backend.fail(
        Op::Start,
        Some(&lab),
        Fault::Backend("spawning /opt/jupyter/bin/jupyter: no such file".into()),
    );
    let r = send(
        &app,
        post("/api/v1/notebooks/team-a/lab/start", ADMIN_TOKEN),
    )
    .await;
    let message = error(&r, StatusCode::INTERNAL_SERVER_ERROR, "backend_error");
    assert_eq!(message, "backend: spawning jupyter: no such file");
    assert_eq!(retry_after(&r), None);
    assert_eq!(
        sample(
            &app,
            r#"nbidle_starts_total{result="error",trigger="user"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn the_webhook_answers_each_alerts_decision() {
    let (backend, app) = setup();
    let mut resolved = alert("team-a", "idle");
    resolved["status"] = json!("resolved");
    let mut unlabelled = alert("team-a", "idle");
    unlabelled["labels"]["nbidle_action"] = json!("page");
    let body = payload(vec![
        alert("team-a", "lab"),
        alert("team-b", "off"),
        alert("team-a", "gone"),
        resolved,
        unlabelled,
    ]);
    let r = send(&app, webhook(&body)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let nb = |ns: &str, name: &str| json!({"namespace": ns, "name": name});
    assert_eq!(
        json_of(&r),
        json!({
            "stopped": 1,
            "failed": 0,
            "alerts": [
                {"alertname": "NotebookIdle", "notebook": nb("team-a", "lab"), "decision": "stopped"},
                {"alertname": "NotebookIdle", "notebook": nb("team-b", "off"), "decision": "already_stopped"},
                {"alertname": "NotebookIdle", "notebook": nb("team-a", "gone"), "decision": "unknown_notebook"},
                {"alertname": "NotebookIdle", "notebook": nb("team-a", "idle"), "decision": "resolved"},
                {"alertname": "NotebookIdle", "notebook": nb("team-a", "idle"), "decision": "not_for_nbidle"},
            ],
        })
    );
    assert_eq!(retry_after(&r), None);
    let lab = backend.state(&id("team-a", "lab")).unwrap();
    assert_eq!(lab.status, Status::Stopped);
    assert!(matches!(lab.stopped_by, Some(StopCause::IdleAlert { .. })));
    assert_eq!(
        backend.state(&id("team-a", "idle")).unwrap().status,
        Status::Running
    );
    assert_eq!(
        sample(&app, r#"nbidle_webhook_duration_seconds_count{code="2xx"}"#).await,
        1.0
    );
}

#[tokio::test]
async fn an_invalid_payload_is_400_with_the_field_named_and_the_message_capped() {
    let (backend, app) = setup();
    let mut bad_time = payload(vec![alert("team-a", "lab")]);
    bad_time["alerts"][0]["startsAt"] = json!("yesterday");
    let r = send(&app, webhook(&bad_time)).await;
    let message = error(&r, StatusCode::BAD_REQUEST, "invalid_payload");
    assert!(message.starts_with("alerts[0].startsAt: "), "{message}");

    // The parser's message quotes the payload; the answer keeps 1024 chars.
    let huge_version = "v".repeat(3000);
    let body = json!({"version": huge_version, "status": "firing", "alerts": []});
    let r = send(&app, webhook(&body)).await;
    let message = error(&r, StatusCode::BAD_REQUEST, "invalid_payload");
    assert!(
        message.starts_with("version: unsupported payload version \"vvv"),
        "{message}"
    );
    let (kept, rest) = message.split_at(message.find('…').unwrap());
    assert_eq!(kept.chars().count(), 1024);
    let full = format!(
        "version: unsupported payload version \"{huge_version}\"; nbidle understands \"4\""
    );
    assert_eq!(rest, format!("…({} bytes)", full.len()));

    assert!(backend.calls().is_empty(), "nothing decided");
    assert_eq!(
        sample(&app, r#"nbidle_errors_total{kind="webhook_payload"}"#).await,
        2.0
    );
    assert_eq!(
        sample(&app, r#"nbidle_webhook_duration_seconds_count{code="4xx"}"#).await,
        2.0
    );
}

#[tokio::test]
async fn a_failed_stop_is_500_so_alertmanager_retries() {
    let (backend, app) = setup();
    backend.fail(
        Op::Stop,
        Some(&id("team-a", "lab")),
        Fault::Backend("writing /var/lib/nbidle/lab.json: disk full".into()),
    );
    let body = payload(vec![alert("team-a", "lab"), alert("team-a", "idle")]);
    let r = send(&app, webhook(&body)).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(retry_after(&r), None);
    let v = json_of(&r);
    assert_eq!(
        (v["stopped"].clone(), v["failed"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(v["alerts"][0]["decision"], "failed");
    assert_eq!(
        v["alerts"][0]["error"],
        "backend: writing lab.json: disk full"
    );
    assert_eq!(v["alerts"][1]["decision"], "stopped");
    // A failure outranks an unavailable backend: both are retried, and
    // 500 says something is wrong, not only late.
    backend.fail(
        Op::Get,
        Some(&id("team-b", "lab")),
        Fault::Unavailable("timeout".into()),
    );
    let body = payload(vec![alert("team-a", "lab"), alert("team-b", "lab")]);
    let r = send(&app, webhook(&body)).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json_of(&r)["failed"], 2);
    assert_eq!(
        sample(&app, r#"nbidle_webhook_duration_seconds_count{code="5xx"}"#).await,
        2.0
    );
}

#[tokio::test]
async fn an_unavailable_backend_is_503_with_retry_after() {
    let (backend, app) = setup();
    backend.fail(
        Op::Get,
        None,
        Fault::Unavailable("api server timeout".into()),
    );
    let r = send(&app, webhook(&payload(vec![alert("team-a", "lab")]))).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&r), Some("5"));
    let v = json_of(&r);
    assert_eq!(v["stopped"], 0);
    assert_eq!(v["failed"], 1);
    assert_eq!(v["alerts"][0]["decision"], "unavailable");
    assert_eq!(v["alerts"][0]["error"], "api server timeout");
    assert!(backend.calls_of(Op::Stop).is_empty());
}

#[tokio::test]
async fn livez_always_and_readyz_only_while_ready_and_current() {
    let (backend, app) = setup();
    let probe = |path: &str| warp::test::request().path(path);
    let body = |r: &Response<Bytes>| String::from_utf8(r.body().to_vec()).unwrap();
    let r = send(&app, probe("/readyz")).await;
    assert_eq!((r.status(), body(&r)), (StatusCode::OK, "ready".into()));

    backend.set_current(false);
    let r = send(&app, probe("/readyz")).await;
    assert_eq!(
        (r.status(), body(&r)),
        (StatusCode::SERVICE_UNAVAILABLE, "not ready".into())
    );
    let r = send(&app, probe("/livez")).await;
    assert_eq!((r.status(), body(&r)), (StatusCode::OK, "ok".into()));

    backend.set_current(true);
    // Shutdown takes readiness down first.
    app.readiness.set_draining();
    let r = send(&app, probe("/readyz")).await;
    assert_eq!(
        (r.status(), body(&r)),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down".into())
    );
    let r = send(&app, probe("/livez")).await;
    assert_eq!(r.status(), StatusCode::OK);
    // No credentials needed, and no backend call.
    assert!(backend.calls().is_empty());
}

#[tokio::test]
async fn every_refusal_has_the_one_error_shape() {
    let (_, app) = setup();
    let r = send(&app, get("/no/such/route", ADMIN_TOKEN)).await;
    assert_eq!(
        error(&r, StatusCode::NOT_FOUND, "not_found"),
        "no such route"
    );
    let r = send(&app, warp::test::request().path("/livez").method("POST")).await;
    error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    // A header that is not text.
    let r = send(
        &app,
        warp::test::request()
            .path("/api/v1/notebooks")
            .header("authorization", &b"Bearer \xff"[..]),
    )
    .await;
    error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    // A length that is not a number is no length.
    let r = send(
        &app,
        webhook(&payload(vec![])).header("content-length", "many"),
    )
    .await;
    error(&r, StatusCode::LENGTH_REQUIRED, "length_required");
}

#[tokio::test]
async fn bodies_over_the_limit_or_without_a_length_are_refused_before_reading() {
    let (backend, app) = setup();
    let mut big = payload(vec![alert("team-a", "lab")]);
    big["receiver"] = json!("r".repeat(MAX_BODY_BYTES as usize));
    let r = send(&app, webhook(&big)).await;
    // 400, not 413: Alertmanager gives up on either, and the webhook
    // documents 400 for every payload it refuses.
    let message = error(&r, StatusCode::BAD_REQUEST, "payload_too_large");
    assert!(message.contains("webhook.max_body_bytes"), "{message}");

    let no_length = post("/webhook/alertmanager", WEBHOOK_TOKEN);
    let r = send(&app, no_length).await;
    error(&r, StatusCode::LENGTH_REQUIRED, "length_required");

    // Exactly the limit is read.
    let mut exact = payload(vec![alert("team-a", "lab")]);
    let len = exact.to_string().len();
    exact["receiver"] = json!("r".repeat(MAX_BODY_BYTES as usize - len + "nbidle".len()));
    assert_eq!(exact.to_string().len(), MAX_BODY_BYTES as usize);
    let r = send(&app, webhook(&exact)).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.body());
    assert_eq!(backend.calls_of(Op::Stop).len(), 1);
}

#[tokio::test]
async fn bytes_in_flight_over_the_budget_get_503_and_are_given_back() {
    let backend = Arc::new(MemoryBackend::new(notebooks()));
    let body = payload(vec![alert("team-a", "lab")]).to_string();
    let app = app_over(
        backend.clone(),
        // Room for one body in flight, not two.
        BodyLimits::new(
            MAX_BODY_BYTES,
            body.len() as u64 + 10,
            Duration::from_secs(5),
        ),
    );
    // Each request's share is returned when it is answered, so one after
    // another always fits.
    for _ in 0..3 {
        let r = send(
            &app,
            post("/webhook/alertmanager", WEBHOOK_TOKEN).body(&body),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let bigger = format!("{body}{}", " ".repeat(20));
    let r = send(
        &app,
        post("/webhook/alertmanager", WEBHOOK_TOKEN).body(bigger),
    )
    .await;
    let message = error(&r, StatusCode::SERVICE_UNAVAILABLE, "busy");
    assert!(message.contains("webhook.max_bytes_in_flight"), "{message}");
    assert_eq!(retry_after(&r), Some("1"));
    assert_eq!(
        backend.calls_of(Op::Get).len(),
        3,
        "the refused one read nothing"
    );
}

#[tokio::test]
async fn scrape_routes_need_the_metrics_token_and_list_running_notebooks() {
    let (backend, app) = setup();
    let r = send(&app, get("/sd/notebooks", SCRAPE_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let groups = json_of(&r);
    let targets: Vec<(&str, &str)> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["targets"][0].as_str().unwrap(),
                g["labels"]["notebook"].as_str().unwrap(),
            )
        })
        .collect();
    // team-b/off is stopped: not a target.
    assert_eq!(
        targets,
        [
            ("idle.team-a.test:8888", "idle"),
            ("lab.team-a.test:8888", "lab"),
            ("lab.team-b.test:8888", "lab"),
        ]
    );
    assert_eq!(groups[0]["labels"]["__metrics_path__"], "/metrics");
    assert_eq!(
        sample(&app, r#"nbidle_notebooks{status="running"}"#).await,
        3.0
    );
    assert_eq!(
        sample(&app, r#"nbidle_notebooks{status="stopped"}"#).await,
        1.0
    );
    // The exporter is off: its route says so.
    let r = send(&app, get("/metrics/notebooks", SCRAPE_TOKEN)).await;
    let message = error(&r, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("exporter.enabled"), "{message}");
    assert!(backend.calls_of(Op::ScrapeTargets).len() == 1);
}

#[tokio::test]
async fn while_draining_readyz_is_down_but_requests_in_flight_are_still_served() {
    let (backend, app) = setup();
    // What shutdown does first.
    app.readiness.set_draining();
    let r = send(&app, warp::test::request().path("/readyz")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Alertmanager's retry or a user's click that arrived just before: the
    // backend still works until the listener has drained.
    let r = send(&app, get("/api/v1/notebooks/team-a/lab", ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.body());
    let r = send(&app, webhook(&payload(vec![alert("team-a", "lab")]))).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.body());
    assert!(!backend.calls().is_empty());
}
