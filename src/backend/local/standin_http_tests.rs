use hyper::header::HeaderName;

use super::*;
use crate::backend::local::standin::NbidlePage;
use crate::backend::local::standin_page::{clock, nbidle_url, sentence_at};
use crate::notebook::span;
use crate::notebook::{NotebookId, StopCause, Timestamp};

/// A browser's navigation to a page, as Chromium sends it.
const NAVIGATION: &[(&str, &str)] = &[
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-dest", "document"),
];

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn kind(method: Method, path: &str, pairs: &[(&str, &str)]) -> Kind {
    classify(&method, path, &headers(pairs), "/user/ada/")
}

#[test]
fn jupyterlab_s_state_read_is_answered_by_the_stand_in() {
    for accept in [
        &[("accept", "*/*"), ("sec-fetch-mode", "cors")][..],
        NAVIGATION,
    ] {
        assert_eq!(
            kind(Method::GET, "/user/ada/nbidle/state", accept),
            Kind::State
        );
    }
    // Only the read: nbidle's own PUT never reaches a stopped notebook,
    // and anything else there is Jupyter's API.
    assert_eq!(kind(Method::PUT, "/user/ada/nbidle/state", &[]), Kind::Api);
    assert_eq!(
        kind(Method::GET, "/user/ada/nbidle/stateful", &[]),
        Kind::Api
    );
    assert_eq!(
        kind(Method::GET, "/user/bob/nbidle/state", &[]),
        Kind::Elsewhere
    );
}

#[test]
fn a_browser_visit_gets_the_page() {
    for path in [
        "/user/ada/",
        "/user/ada",
        "/user/ada/lab",
        "/user/ada/tree/x.ipynb",
    ] {
        assert_eq!(kind(Method::GET, path, NAVIGATION), Kind::Visit, "{path}");
        assert_eq!(kind(Method::HEAD, path, NAVIGATION), Kind::Visit, "{path}");
    }
    // An old browser or curl -H 'Accept: text/html': no Sec-Fetch headers.
    assert_eq!(
        kind(Method::GET, "/user/ada/lab", &[("accept", "text/html")]),
        Kind::Visit
    );
}

#[test]
fn jupyterlab_polling_websockets_and_scripts_get_the_api_answer() {
    let api = Kind::Api;
    // JupyterLab's polls: fetch() with Accept */* or JSON.
    let fetch = [("accept", "*/*"), ("sec-fetch-mode", "cors")];
    for path in [
        "/user/ada/api/kernels",
        "/user/ada/api/sessions?1",
        "/user/ada/api",
        "/user/ada/lab/api/settings",
        "/user/ada/static/lab/main.js",
    ] {
        assert_eq!(kind(Method::GET, path, &fetch), api, "{path}");
    }
    // Even a navigation to an API path, or a fetch that accepts HTML.
    assert_eq!(kind(Method::GET, "/user/ada/api/kernels", NAVIGATION), api);
    let html_fetch = [("accept", "text/html"), ("sec-fetch-mode", "same-origin")];
    assert_eq!(kind(Method::GET, "/user/ada/lab", &html_fetch), api);
    let xhr = [
        ("accept", "text/html"),
        ("x-requested-with", "XMLHttpRequest"),
    ];
    assert_eq!(kind(Method::GET, "/user/ada/lab", &xhr), api);
    // A kernel's websocket.
    let ws = [
        ("accept", "text/html"),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
    ];
    assert_eq!(
        kind(Method::GET, "/user/ada/api/kernels/k/channels", &ws),
        api
    );
    assert_eq!(kind(Method::GET, "/user/ada/lab", &ws), api);
    // Writes, and no Accept at all.
    assert_eq!(
        kind(Method::PUT, "/user/ada/api/contents/a", NAVIGATION),
        api
    );
    assert_eq!(kind(Method::POST, "/user/ada/lab", NAVIGATION), api);
    assert_eq!(kind(Method::GET, "/user/ada/lab", &[]), api);
}

#[test]
fn only_a_real_get_wakes() {
    assert!(wakes(&Method::GET, &headers(NAVIGATION)));
    assert!(!wakes(&Method::HEAD, &headers(NAVIGATION)));
    let prefetch = [
        ("accept", "text/html"),
        ("sec-purpose", "prefetch;prerender"),
    ];
    assert!(!wakes(&Method::GET, &headers(&prefetch)));
    assert!(!wakes(&Method::GET, &headers(&[("purpose", "prefetch")])));
    // Another site's hidden frame navigates too; it never wakes.
    let framed: Vec<(&str, &str)> = NAVIGATION
        .iter()
        .map(|&(k, v)| (k, if k == "sec-fetch-dest" { "iframe" } else { v }))
        .collect();
    assert!(!wakes(&Method::GET, &headers(&framed)));
}

#[test]
fn start_is_a_post_to_its_path_and_other_paths_are_elsewhere() {
    assert_eq!(
        kind(Method::POST, "/user/ada/_nbidle/start", &[]),
        Kind::Start
    );
    assert_eq!(
        kind(Method::GET, "/user/ada/_nbidle/start", NAVIGATION),
        Kind::Api
    );
    for path in ["/", "/user/adam/", "/user/", "/other/ada/"] {
        assert_eq!(
            kind(Method::GET, path, NAVIGATION),
            Kind::Elsewhere,
            "{path}"
        );
    }
    assert_eq!(
        classify(&Method::GET, "/lab", &headers(NAVIGATION), "/"),
        Kind::Visit
    );
}

#[test]
fn tokens_and_csrf_match_only_exactly() {
    let s = Secret::new(Some("tok-123"));
    assert!(s.is_token("tok-123"));
    for wrong in ["", "tok-12", "tok-1234", "TOK-123", " tok-123"] {
        assert!(!s.is_token(wrong), "{wrong:?}");
    }
    let csrf = s.csrf().unwrap().to_string();
    assert_eq!(csrf.len(), 32);
    assert!(s.is_csrf(&csrf));
    assert!(!s.is_csrf(&csrf[1..]));
    assert!(!s.is_csrf(""));
    // Each page has its own CSRF token.
    assert_ne!(Secret::new(Some("tok-123")).csrf().unwrap(), csrf);
    // No token configured: nothing matches, not even the empty string.
    let none = Secret::new(None);
    assert!(!none.has_token() && !none.is_token("") && !none.is_token("tok-123"));
}

#[test]
fn tokens_are_read_from_forms_queries_and_authorization() {
    assert_eq!(
        form_value("csrf=a&token=x%2By+z&next=%2Flab", "token").as_deref(),
        Some("x+y z")
    );
    assert_eq!(form_value("a=1", "token"), None);
    assert_eq!(form_value("token", "token").as_deref(), Some(""));
    // Bad escapes are kept as written, not misread.
    assert_eq!(form_value("t=%zz%2", "t").as_deref(), Some("%zz%2"));
    assert_eq!(form_value("t=%+1", "t").as_deref(), Some("% 1"));
    let auth = |v: &str| headers(&[("authorization", v)]);
    assert_eq!(authorization_token(&auth("token abc")), Some("abc"));
    assert_eq!(authorization_token(&auth("Bearer abc")), Some("abc"));
    assert_eq!(authorization_token(&auth("Basic abc")), None);
    assert_eq!(authorization_token(&HeaderMap::new()), None);
}

#[test]
fn next_stays_under_the_base_url_and_carries_the_token() {
    let base = "/user/ada/";
    assert_eq!(
        safe_next(Some("/user/ada/lab?x=1"), base),
        "/user/ada/lab?x=1"
    );
    for bad in [
        "//evil.example/",
        "https://evil.example/",
        "/user/adam/",
        "/user/ada/\\x",
        "/user/ada/\nx",
    ] {
        assert_eq!(safe_next(Some(bad), base), base, "{bad:?}");
    }
    assert_eq!(safe_next(None, base), base);
    assert_eq!(with_token("/lab", "a b&c"), "/lab?token=a%20b%26c");
    assert_eq!(with_token("/lab?x=1", "t"), "/lab?x=1&token=t");
    assert_eq!(with_token("/lab?token=t", "t"), "/lab?token=t");
}

fn stopped(by: Option<StopCause>, at: &str) -> NotebookState {
    NotebookState {
        id: NotebookId::new("local", "ada"),
        status: Status::Stopped,
        message: None,
        autostop: true,
        idle_after_seconds: 1800,
        owner: None,
        started_at: None,
        stopped_at: Some(at.parse().unwrap()),
        stopped_by: by,
        url: None,
    }
}

#[test]
fn the_page_says_who_stopped_it_when_and_after_how_long() {
    let now: Timestamp = "2026-12-01T15:00:00Z".parse().unwrap();
    let idle = StopCause::IdleAlert {
        alertname: "NotebookIdle".into(),
        alert_starts_at: now,
    };
    let s = stopped(Some(idle), "2026-12-01T14:02:09Z");
    assert_eq!(
        sentence_at(&s, now.0),
        "ada was stopped at 14:02 UTC by NotebookIdle after 30 min without activity; your files are kept."
    );
    let s = stopped(Some(StopCause::User { by: None }), "2026-11-30T09:05:00Z");
    assert_eq!(
        sentence_at(&s, now.0),
        "ada was stopped at 09:05 UTC on 30 Nov from nbidle's page or API; your files are kept."
    );
    let by_ada = crate::notebook::StoppedBy::Page { who: "ada".into() };
    let s = stopped(Some(StopCause::user(Some(by_ada))), "2026-12-01T14:02:09Z");
    assert_eq!(
        sentence_at(&s, now.0),
        "ada was stopped at 14:02 UTC from nbidle's page by ada; your files are kept."
    );
    let mut failed = stopped(None, "2026-12-01T14:02:09Z");
    failed.status = Status::Failed;
    failed.message = Some("process exit status: 1".into());
    assert_eq!(
        sentence_at(&failed, now.0),
        "ada is not running: process exit status: 1. Your files are kept."
    );
    assert_eq!(span(45), "45 s");
    assert_eq!(span(3600), "1 h");
    assert_eq!(span(5400), "1 h 30 min");
    assert_eq!(clock(now, now.0), "15:00 UTC");
}

#[test]
fn the_page_escapes_what_it_shows() {
    let mut s = stopped(Some(StopCause::User { by: None }), "2026-12-01T14:02:09Z");
    s.id.name = "<b>x</b>".into();
    let form = Form {
        action: "/_nbidle/start".into(),
        csrf: Some("c"),
        next: "/lab?a=\"><script>".into(),
        token: None,
        token_needed: true,
        nbidle_url: "http://127.0.0.1:8080/".into(),
        refusal: Some(Refusal::WrongToken),
        person: None,
    };
    let page = super::render::stopped(&s, &form);
    assert!(!page.contains("<b>x</b>") && page.contains("&lt;b&gt;x&lt;/b&gt;"));
    assert!(!page.contains("\"><script>"));
    assert!(page.contains("not this notebook's token"));
    assert!(
        page.contains(r#"<input type="password" name="token""#) || page.contains(r#"id="token""#)
    );
    // No token in the config: no form, a link to nbidle.
    let page = super::render::stopped(
        &s,
        &Form {
            token_needed: false,
            ..form
        },
    );
    assert!(!page.contains("<form") && page.contains("http://127.0.0.1:8080/"));
}

#[test]
fn a_signed_in_person_gets_a_start_of_their_own_without_a_token_field() {
    let s = stopped(Some(StopCause::User { by: None }), "2026-12-01T14:02:09Z");
    let form = Form {
        action: "/_nbidle/start".into(),
        csrf: Some("standin-csrf"),
        next: "/lab".into(),
        token: None,
        // Even with no token in the config.
        token_needed: false,
        nbidle_url: "http://127.0.0.1:8080/".into(),
        refusal: None,
        person: Some(crate::backend::Person {
            who: "<ada>".into(),
            csrf: "page-csrf".into(),
        }),
    };
    let page = super::render::stopped(&s, &form);
    assert!(page.contains(">Start ada</button>"), "{page}");
    assert!(
        page.contains("You are signed in to nbidle (&lt;ada&gt;)."),
        "{page}"
    );
    assert!(!page.contains("Start as"), "{page}");
    assert!(
        page.contains(r#"<link rel="icon" href="data:,">"#),
        "no /favicon.ico 404"
    );
    assert!(page.contains(r#"name="csrf" value="page-csrf""#), "{page}");
    assert!(!page.contains("standin-csrf") && !page.contains(r#"name="token""#));
}

#[test]
fn the_link_to_nbidle_uses_its_address_or_the_browsers_host() {
    let page = |addr: &str| NbidlePage {
        addr: addr.parse().unwrap(),
        https: false,
        external_url: None,
    };
    assert_eq!(
        nbidle_url(&page("127.0.0.1:8080"), Some("evil:1")),
        "http://127.0.0.1:8080/"
    );
    assert_eq!(
        nbidle_url(&page("0.0.0.0:8080"), Some("nb.example:8888")),
        "http://nb.example:8080/"
    );
    assert_eq!(
        nbidle_url(&page("[::]:8080"), Some("[::1]:8888")),
        "http://[::1]:8080/"
    );
    assert_eq!(
        nbidle_url(&page("0.0.0.0:8080"), Some("a\"b")),
        "http://127.0.0.1:8080/"
    );
    let tls = NbidlePage {
        addr: "[::1]:8443".parse().unwrap(),
        https: true,
        external_url: None,
    };
    assert_eq!(nbidle_url(&tls, None), "https://[::1]:8443/");
    let public = NbidlePage {
        external_url: Some("https://nbidle.example.org/".into()),
        ..tls
    };
    assert_eq!(
        nbidle_url(&public, Some("nb.example:8888")),
        "https://nbidle.example.org/"
    );
}
