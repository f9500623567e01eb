//! The page's routes in-process (`warp::test`) over the in-memory backend,
//! mounted as `nbidle serve` mounts them (beside the API, under its
//! `recover`): sign-in, sessions, CSRF, scopes, the trusted header,
//! filters, pages and escaping.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use warp::http::{Response, StatusCode};
use warp::test::RequestBuilder;

use super::Page;
use crate::backend::memory::{MemoryBackend, Op};
use crate::decide::Policy;
use crate::metrics::Metrics;
use crate::notebook::{NotebookId, NotebookState, Status, StopCause, Timestamp};
use crate::server::auth::{ApiTokens, Credentials};
use crate::server::body::BodyLimits;
use crate::server::{filters, App, Readiness};

pub(super) const ADMIN: &str = "admin-secret";
pub(super) const TEAM_A: &str = "team-a-secret";

pub(super) fn notebooks() -> Vec<NotebookState> {
    let owned = |ns: &str, name: &str, owner: &str| NotebookState {
        owner: Some(owner.into()),
        ..MemoryBackend::running(ns, name)
    };
    vec![
        owned("team-a", "lab", "ada"),
        owned("team-a", "idle", "bob"),
        owned("team-b", "lab", "bob"),
        NotebookState {
            status: Status::Stopped,
            stopped_at: Some("2026-01-01T09:00:00Z".parse::<Timestamp>().unwrap()),
            stopped_by: Some(StopCause::IdleAlert {
                alertname: "NotebookIdle".into(),
                alert_starts_at: "2026-01-01T08:59:00Z".parse().unwrap(),
            }),
            url: None,
            ..owned("team-b", "off", "ada")
        },
    ]
}

pub(super) fn app(backend: Arc<MemoryBackend>, page: Page) -> Arc<App> {
    app_with(backend, page, None)
}

/// With Keep running through `silences`.
pub(super) fn app_with(
    backend: Arc<MemoryBackend>,
    page: Page,
    silences: Option<Arc<crate::silences::Silences>>,
) -> Arc<App> {
    let readiness = Readiness::default();
    readiness.set_synced();
    Arc::new(App {
        notifier: None,
        backend,
        exporter: None,
        metrics: Arc::new(Metrics::new()),
        policy: Policy {
            enabled: true,
            dry_run: false,
            recheck: false,
        },
        webhook_credentials: Credentials::new(Vec::new(), None),
        api_tokens: ApiTokens::new(
            vec![ADMIN.into()],
            vec![(TEAM_A.into(), vec!["team-a".into()])],
        ),
        body_limits: Arc::new(BodyLimits::new(4096, 16384, Duration::from_secs(5))),
        readiness,
        silences,
        warnings: Arc::new(crate::warnings::Warnings::new(
            Duration::from_secs(300),
            Duration::from_secs(60),
        )),
        page,
    })
}

pub(super) fn page() -> Page {
    Page::new(Duration::from_secs(3600), 100, None, false)
}

fn setup() -> (Arc<MemoryBackend>, Arc<App>) {
    let b = Arc::new(MemoryBackend::new(notebooks()));
    (b.clone(), app(b, page()))
}

pub(super) async fn send(app: &Arc<App>, req: RequestBuilder) -> Response<Bytes> {
    req.reply(&filters::routes(app.clone())).await
}

pub(super) fn text(r: &Response<Bytes>) -> String {
    String::from_utf8_lossy(r.body()).into_owned()
}

pub(super) fn header<'a>(r: &'a Response<Bytes>, name: &str) -> &'a str {
    r.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

pub(super) fn enc(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

pub(super) fn form_post(
    path: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
) -> RequestBuilder {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    let mut r = warp::test::request()
        .method("POST")
        .path(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"));
    if let Some(c) = cookie {
        r = r.header("cookie", format!("nbidle_session={c}"));
    }
    r
}

pub(super) fn page_get(path: &str, cookie: &str) -> RequestBuilder {
    warp::test::request()
        .path(path)
        .header("accept", "text/html")
        .header("cookie", format!("nbidle_session={cookie}"))
}

/// The session id the reply's cookie sets.
pub(super) fn session_cookie(r: &Response<Bytes>) -> String {
    let c = header(r, "set-cookie");
    let v = c
        .strip_prefix("nbidle_session=")
        .unwrap_or_else(|| panic!("{c:?}"));
    v.split(';').next().unwrap().to_string()
}

pub(super) async fn sign_in(app: &Arc<App>, token: &str) -> String {
    let r = send(app, form_post("/sign-in", None, &[("token", token)])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(header(&r, "location"), "/");
    session_cookie(&r)
}

/// The page's CSRF token, from its sign-out form.
pub(super) fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_string()
}

pub(super) async fn list(app: &Arc<App>, cookie: &str, query: &str) -> String {
    let r = send(app, page_get(&format!("/{query}"), cookie)).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", text(&r));
    text(&r)
}

pub(super) fn rows(html: &str) -> Vec<String> {
    html.match_indices("<tr data-id=\"")
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

#[tokio::test]
async fn without_a_session_the_page_asks_for_a_token() {
    let (_, app) = setup();
    let r = send(&app, warp::test::request().path("/")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&r, "location"), "/sign-in");
    let r = send(&app, warp::test::request().path("/sign-in")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(text(&r).contains("type=\"password\" name=\"token\""));
    assert_eq!(header(&r, "content-security-policy"), super::request::CSP);
    assert!(header(&r, "content-security-policy").starts_with("default-src 'self'"));
    // The API and its one error shape are as they were.
    let r = send(&app, warp::test::request().path("/nope")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(text(&r).contains("\"no such route\""), "{}", text(&r));
    let r = send(&app, warp::test::request().path("/api/v1/notebooks")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(text(&r).contains("\"unauthorized\""));
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_a_right_one_signs_in() {
    let (_, app) = setup();
    for wrong in ["", "admin-secre", "admin-secret2", "Bearer admin-secret"] {
        let r = send(&app, form_post("/sign-in", None, &[("token", wrong)])).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert!(text(&r).contains("That token is not valid"), "{wrong:?}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    let r = send(&app, form_post("/sign-in", None, &[("token", ADMIN)])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = header(&r, "set-cookie");
    for part in [
        "; Path=/",
        "; HttpOnly",
        "; SameSite=Strict",
        "; Max-Age=3600",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let html = list(&app, &session_cookie(&r), "").await;
    assert_eq!(
        rows(&html),
        ["team-a/idle", "team-a/lab", "team-b/lab", "team-b/off"]
    );
    assert!(html.contains("Stopped by nbidle (NotebookIdle)"), "{html}");
    assert!(html.contains("no activity for 30 min"));
    assert!(
        !html.contains("keep-running"),
        "no Keep running without alertmanager.url"
    );
}

#[tokio::test]
async fn the_cookie_is_secure_over_tls_or_behind_an_https_proxy() {
    let (_, app) = setup();
    let r = send(
        &app,
        form_post("/sign-in", None, &[("token", ADMIN)]).header("x-forwarded-proto", "https"),
    )
    .await;
    assert!(header(&r, "set-cookie").ends_with("; Secure"));
    let b = Arc::new(MemoryBackend::new(notebooks()));
    let tls = app_with_page(b, Page::new(Duration::from_secs(60), 10, None, true));
    let r = send(&tls, form_post("/sign-in", None, &[("token", ADMIN)])).await;
    assert!(header(&r, "set-cookie").ends_with("; Secure"));
}

fn app_with_page(b: Arc<MemoryBackend>, page: Page) -> Arc<App> {
    app(b, page)
}

#[tokio::test]
async fn repeated_wrong_tokens_from_one_client_wait() {
    let (_, app) = setup();
    let from = |ip: &str| -> std::net::SocketAddr { format!("{ip}:5000").parse().unwrap() };
    for _ in 0..5 {
        let r = send(
            &app,
            form_post("/sign-in", None, &[("token", "guess")]).remote_addr(from("192.0.2.1")),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right token waits now, so guessing costs time.
    let r = send(
        &app,
        form_post("/sign-in", None, &[("token", ADMIN)]).remote_addr(from("192.0.2.1")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), "1");
    assert!(text(&r).contains("Too many wrong tokens"));
    let r = send(
        &app,
        form_post("/sign-in", None, &[("token", ADMIN)]).remote_addr(from("192.0.2.2")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "another client signs in");
}

#[tokio::test]
async fn a_session_expires() {
    let b = Arc::new(MemoryBackend::new(notebooks()));
    let app = app(b, Page::new(Duration::from_millis(200), 10, None, false));
    let cookie = sign_in(&app, ADMIN).await;
    list(&app, &cookie, "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = send(&app, page_get("/", &cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&r, "location"), "/sign-in");
}

#[tokio::test]
async fn a_post_without_the_right_csrf_token_is_403_and_does_nothing() {
    let (b, app) = setup();
    let cookie = sign_in(&app, ADMIN).await;
    let token = csrf(&list(&app, &cookie, "").await);
    let nb = [("namespace", "team-a"), ("name", "lab")];
    let wrong = "0".repeat(64);
    for fields in [
        nb.to_vec(),
        [&nb[..], &[("csrf", wrong.as_str())]].concat(),
        [&nb[..], &[("csrf", &token[..63])]].concat(),
    ] {
        let r = send(&app, form_post("/notebooks/stop", Some(&cookie), &fields)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{fields:?}");
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "JSON for a non-browser");
        let html = send(
            &app,
            form_post("/notebooks/stop", Some(&cookie), &fields).header("accept", "text/html"),
        )
        .await;
        assert_eq!(html.status(), StatusCode::FORBIDDEN);
        assert!(
            text(&html).contains("CSRF token"),
            "an HTML page for a browser"
        );
    }
    // Another session's token is wrong for this one.
    let other = sign_in(&app, ADMIN).await;
    let other_token = csrf(&list(&app, &other, "").await);
    assert_ne!(other_token, token);
    let fields = [&nb[..], &[("csrf", other_token.as_str())]].concat();
    let r = send(&app, form_post("/notebooks/stop", Some(&cookie), &fields)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // No session at all.
    let fields = [&nb[..], &[("csrf", token.as_str())]].concat();
    let r = send(&app, form_post("/notebooks/stop", None, &fields)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(b.calls_of(Op::Stop).is_empty(), "nothing was stopped");

    let fields = [
        &nb[..],
        &[("csrf", token.as_str()), ("back", "status=running&page=1")],
    ]
    .concat();
    let r = send(&app, form_post("/notebooks/stop", Some(&cookie), &fields)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&r, "location"), "/?status=running");
    let id = NotebookId::new("team-a", "lab");
    assert_eq!(b.state(&id).unwrap().status, Status::Stopped);
    let html = list(&app, &cookie, "").await;
    assert!(
        html.contains("Stopped team-a/lab. Its files are kept"),
        "flash"
    );
    assert!(
        !list(&app, &cookie, "")
            .await
            .contains("Stopped team-a/lab."),
        "shown once"
    );

    let fields = [&nb[..], &[("csrf", token.as_str())]].concat();
    let r = send(&app, form_post("/notebooks/start", Some(&cookie), &fields)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.state(&id).unwrap().status, Status::Running);
}

#[tokio::test]
async fn a_namespace_scoped_token_sees_and_acts_on_its_namespace_only() {
    let (b, app) = setup();
    let cookie = sign_in(&app, TEAM_A).await;
    let html = list(&app, &cookie, "").await;
    assert_eq!(rows(&html), ["team-a/idle", "team-a/lab"]);
    assert!(html.contains("signed in with a token for team-a"));
    assert!(!html.contains("team-b"), "not even in the namespace filter");
    let token = csrf(&html);
    let r = send(
        &app,
        form_post(
            "/notebooks/stop",
            Some(&cookie),
            &[("namespace", "team-b"), ("name", "lab"), ("csrf", &token)],
        )
        .header("accept", "text/html"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(text(&r).contains("may not use the notebook team-b/lab"));
    assert!(b.calls_of(Op::Stop).is_empty() && b.calls_of(Op::Get).is_empty());
    // The script's states: the same notebooks.
    let r = send(&app, page_get("/page/states", &cookie)).await;
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    let ids: Vec<&str> = v["notebooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["team-a/idle", "team-a/lab"]);
    let r = send(&app, warp::test::request().path("/page/states")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn filters_and_pages() {
    let mut all = notebooks();
    all.extend((0..250).map(|i| NotebookState {
        owner: Some(if i % 2 == 0 { "eve" } else { "mal" }.into()),
        ..MemoryBackend::running("bulk", &format!("nb{i:03}"))
    }));
    let b = Arc::new(MemoryBackend::new(all));
    let app = app(b, page());
    let cookie = sign_in(&app, ADMIN).await;
    assert_eq!(
        rows(&list(&app, &cookie, "?namespace=team-b").await),
        ["team-b/lab", "team-b/off"]
    );
    assert_eq!(
        rows(&list(&app, &cookie, "?owner=ada").await),
        ["team-a/lab", "team-b/off"]
    );
    assert_eq!(
        rows(&list(&app, &cookie, "?status=stopped").await),
        ["team-b/off"]
    );
    assert_eq!(
        rows(&list(&app, &cookie, "?namespace=team-b&status=running").await),
        ["team-b/lab"]
    );
    let first = list(&app, &cookie, "?namespace=bulk&owner=eve").await;
    assert_eq!(rows(&first).len(), 100);
    assert!(first.contains("Page 1 of 2"));
    assert!(
        first.contains("href=\"/?namespace=bulk&amp;owner=eve&amp;page=2\""),
        "next keeps the filters"
    );
    let second = list(&app, &cookie, "?namespace=bulk&owner=eve&page=2").await;
    let r = rows(&second);
    assert_eq!((r.len(), r[0].as_str()), (25, "bulk/nb200"));
    assert!(second.contains("rel=\"prev\""));
    let all = list(&app, &cookie, "?page=3").await;
    assert_eq!(rows(&all).len(), 54);
    assert!(all.contains("254 of 254 notebooks"));
}

#[tokio::test]
async fn hostile_names_owners_urls_and_messages_are_text() {
    let evil = "<script>alert(1)</script>";
    let owner = "\"><img src=x onerror=alert(2)>";
    let b = Arc::new(MemoryBackend::new([
        NotebookState {
            owner: Some(owner.into()),
            url: Some("javascript:alert(3)".into()),
            message: Some("</td><b>bold</b>".into()),
            ..MemoryBackend::running("team-a", evil)
        },
        NotebookState {
            url: Some("http://ok.test/?a=\"b\"&c".into()),
            ..MemoryBackend::running("team-a", "fine")
        },
    ]));
    let app = app(b, page());
    let cookie = sign_in(&app, ADMIN).await;
    let q = format!("?owner={}", enc(owner));
    let html = list(&app, &cookie, &q).await;
    assert_eq!(rows(&html).len(), 1, "the hostile owner filters");
    let html = list(&app, &cookie, "").await;
    for raw in ["<script>alert", "<img", "<b>bold", "javascript:"] {
        assert!(!html.contains(raw), "{raw} in {html}");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("href=\"http://ok.test/?a=&quot;b&quot;&amp;c\""));
    // A hostile name travels in a form body, and back as text.
    let token = csrf(&html);
    let r = send(
        &app,
        form_post(
            "/notebooks/stop",
            Some(&cookie),
            &[("namespace", "team-a"), ("name", evil), ("csrf", &token)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = list(&app, &cookie, "").await;
    assert!(html.contains("Stopped team-a/&lt;script&gt;"), "{html}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_a_person_acts_on_their_own_notebooks() {
    let b = Arc::new(MemoryBackend::new(notebooks()));
    let app = app(
        b.clone(),
        Page::new(
            Duration::from_secs(60),
            10,
            Some("kubeflow-userid".into()),
            false,
        ),
    );
    let as_ada = |r: RequestBuilder| r.header("kubeflow-userid", "ada");
    let r = send(&app, as_ada(warp::test::request().path("/"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = session_cookie(&r);
    assert_eq!(rows(&text(&r)), ["team-a/lab", "team-b/off"]);
    let token = csrf(&text(&r));
    let stop = |ns: &str, name: &str| {
        form_post(
            "/notebooks/stop",
            Some(&cookie),
            &[("namespace", ns), ("name", name), ("csrf", &token)],
        )
    };
    let r = send(&app, as_ada(stop("team-b", "lab"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "bob's notebook");
    let r = send(&app, stop("team-a", "lab").header("kubeflow-userid", "bob")).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "ada's session, bob's header"
    );
    let r = send(&app, stop("team-a", "lab")).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "the session holds only through the proxy"
    );
    assert!(b.calls_of(Op::Stop).is_empty());
    let r = send(&app, as_ada(stop("team-a", "lab"))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        b.state(&NotebookId::new("team-a", "lab")).unwrap().status,
        Status::Stopped
    );
    // Only a page view makes a session: a refresh or a form without the
    // cookie does not fill the store.
    let before = app.page.sessions.len();
    let r = send(&app, as_ada(warp::test::request().path("/page/states"))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = send(
        &app,
        as_ada(form_post("/notebooks/stop", None, &[("csrf", &token)])),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.page.sessions.len(), before);
    // Without the header, the page asks for a token as usual.
    let r = send(&app, warp::test::request().path("/")).await;
    assert_eq!(header(&r, "location"), "/sign-in");
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let (_, app) = setup();
    let cookie = sign_in(&app, ADMIN).await;
    let token = csrf(&list(&app, &cookie, "").await);
    let r = send(&app, form_post("/sign-out", Some(&cookie), &[])).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "sign-out needs the CSRF token too"
    );
    let r = send(
        &app,
        form_post("/sign-out", Some(&cookie), &[("csrf", &token)]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(header(&r, "set-cookie").contains("Max-Age=0"));
    let r = send(&app, page_get("/", &cookie)).await;
    assert_eq!(header(&r, "location"), "/sign-in");
}

#[tokio::test]
async fn assets_are_served_from_the_binary_with_long_caching() {
    let (_, app) = setup();
    let cookie = sign_in(&app, ADMIN).await;
    let html = list(&app, &cookie, "").await;
    use maud::Render;
    for (url, kind) in [
        (super::assets::CSS_URL.render().into_string(), "text/css"),
        (
            super::assets::JS_URL.render().into_string(),
            "text/javascript",
        ),
    ] {
        assert!(html.contains(&url), "{url}");
        let r = send(&app, warp::test::request().path(&url)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(header(&r, "content-type").starts_with(kind));
        assert_eq!(header(&r, "cache-control"), super::assets::CACHE_FOREVER);
    }
    assert_eq!(
        header(&send(&app, page_get("/", &cookie)).await, "cache-control"),
        "no-store"
    );
}
