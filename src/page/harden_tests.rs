//! The page against one viewer crowding out others, cross-site sign-in,
//! and a flash lost to another tab.

use std::sync::Arc;
use std::time::Duration;

use warp::http::StatusCode;
use warp::test::RequestBuilder;

use super::tests::{
    app, form_post, header, notebooks, page_get, send, session_cookie, sign_in, text, ADMIN, TEAM_A,
};
use super::Page;
use crate::backend::memory::MemoryBackend;
use crate::server::App;

fn proxied_app(max_sessions: usize) -> Arc<App> {
    let b = Arc::new(MemoryBackend::new(notebooks()));
    app(
        b,
        Page::new(
            Duration::from_secs(3600),
            max_sessions,
            Some("kubeflow-userid".into()),
            false,
        ),
    )
}

fn as_user(user: &str) -> RequestBuilder {
    warp::test::request()
        .path("/")
        .header("accept", "text/html")
        .header("kubeflow-userid", user)
}

async fn signed_in(app: &Arc<App>, cookie: &str) -> bool {
    send(app, page_get("/", cookie)).await.status() == StatusCode::OK
}

#[tokio::test]
async fn one_token_signing_in_again_and_again_signs_out_only_its_own_oldest() {
    let app = proxied_app(20);
    let admin = sign_in(&app, ADMIN).await;
    let team: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..40 {
            v.push(sign_in(&app, TEAM_A).await);
        }
        v
    };
    assert!(
        signed_in(&app, &admin).await,
        "another token's session is kept"
    );
    assert!(
        !signed_in(&app, &team[0]).await,
        "the token's oldest is gone"
    );
    for c in &team[40 - 8..] {
        assert!(signed_in(&app, c).await, "its newest 8 are kept");
    }
}

#[tokio::test]
async fn a_trusted_user_looping_without_a_cookie_reuses_one_session() {
    let app = proxied_app(20);
    let admin = sign_in(&app, ADMIN).await;
    let first = session_cookie(&send(&app, as_user("ada")).await);
    for _ in 0..40 {
        let r = send(&app, as_user("ada")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(session_cookie(&r), first, "the same session again");
    }
    assert_eq!(app.page.sessions.len(), 2);
    assert!(signed_in(&app, &admin).await);
}

#[tokio::test]
async fn a_store_full_of_other_viewers_refuses_rather_than_evicts() {
    let app = proxied_app(2);
    let admin = sign_in(&app, ADMIN).await;
    let team = sign_in(&app, TEAM_A).await;
    let r = send(&app, as_user("ada")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{}", text(&r));
    assert!(
        text(&r).contains("Too many people are signed in"),
        "{}",
        text(&r)
    );
    let r = send(&app, form_post("/sign-in", None, &[("token", ADMIN)])).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "a viewer's own oldest makes room"
    );
    assert!(!signed_in(&app, &admin).await);
    assert!(signed_in(&app, &team).await, "never another viewer's");
    assert_eq!(header(&r, "location"), "/");
}

#[tokio::test]
async fn a_sign_in_posted_from_another_site_is_refused() {
    let app = proxied_app(20);
    let post =
        || form_post("/sign-in", None, &[("token", ADMIN)]).header("host", "nbidle.test:8080");
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
        ("origin", "http://nbidle.test:9999"),
        ("origin", "null"),
    ] {
        let r = send(
            &app,
            post().header("accept", "text/html").header(name, value),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(text(&r).contains("another site"), "{}", text(&r));
        assert!(r.headers().get("set-cookie").is_none());
    }
    for (name, value) in [
        ("sec-fetch-site", "same-origin"),
        ("origin", "http://nbidle.test:8080"),
    ] {
        let r = send(&app, post().header(name, value)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{name}: {value}");
    }
    let r = send(&app, post()).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "no Origin: a script or an old browser"
    );
}

#[tokio::test]
async fn the_flash_waits_for_the_next_page_view_whatever_else_is_asked_first() {
    let app = proxied_app(20);
    let cookie = sign_in(&app, ADMIN).await;
    let page = text(&send(&app, page_get("/", &cookie)).await);
    let token = super::tests::csrf(&page);
    let stop = |ns: &str, name: &str| {
        form_post(
            "/notebooks/stop",
            Some(&cookie),
            &[("namespace", ns), ("name", name), ("csrf", &token)],
        )
    };
    let r = send(&app, stop("team-a", "lab")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Another tab, between the POST and its redirect.
    let r = send(&app, page_get("/page/states", &cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(&app, page_get("/sign-in", &cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // A form refused for its CSRF token does not take it either.
    let r = send(
        &app,
        form_post("/notebooks/stop", Some(&cookie), &[("csrf", "x")]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let shown = text(&send(&app, page_get("/", &cookie)).await);
    assert!(shown.contains("Stopped team-a/lab"), "{shown}");
    let again = text(&send(&app, page_get("/", &cookie)).await);
    assert!(!again.contains("Stopped team-a/lab"), "shown once");
}
