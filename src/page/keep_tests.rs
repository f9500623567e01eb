//! Keep running and the warning banner on the page, over a stand-in
//! Alertmanager on loopback that keeps its silences in memory (API v2:
//! list, create, expire).

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::Filter;

use super::tests::*;
use crate::backend::memory::MemoryBackend;
use crate::config::AlertmanagerConfig;
use crate::metrics::Metrics;
use crate::silences::Silences;

type Store = Arc<Mutex<Vec<Value>>>;

async fn alertmanager() -> (String, Store) {
    let store: Store = Arc::default();
    let (list, add, del) = (store.clone(), store.clone(), store.clone());
    let get = warp::path!("api" / "v2" / "silences")
        .and(warp::get())
        .map(move || warp::reply::json(&*list.lock().unwrap()));
    let post = warp::path!("api" / "v2" / "silences")
        .and(warp::post())
        .and(warp::body::json())
        .map(move |mut s: Value| {
            let mut all = add.lock().unwrap();
            let id = format!("s{}", all.len() + 1);
            s["id"] = json!(id);
            s["status"] = json!({"state": "active"});
            all.push(s);
            warp::reply::json(&json!({"silenceID": id}))
        });
    let expire = warp::path!("api" / "v2" / "silence" / String)
        .and(warp::delete())
        .map(move |id: String| {
            for s in del.lock().unwrap().iter_mut() {
                if s["id"] == id {
                    s["status"] = json!({"state": "expired"});
                }
            }
            warp::reply()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        warp::serve(get.or(post).or(expire))
            .incoming(listener)
            .run(),
    );
    (format!("http://{addr}"), store)
}

fn silences(url: String) -> Arc<Silences> {
    let cfg = AlertmanagerConfig {
        urls: vec![url],
        ..Default::default()
    };
    Arc::new(
        Silences::from_config(&cfg, Arc::new(Metrics::new()))
            .unwrap()
            .unwrap(),
    )
}

fn active(store: &Store) -> Vec<Value> {
    store
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s["status"]["state"] == "active")
        .cloned()
        .collect()
}

#[tokio::test]
async fn keep_running_makes_a_silence_shows_it_and_cancel_expires_it() {
    let (url, store) = alertmanager().await;
    let b = Arc::new(MemoryBackend::new(notebooks()));
    let app = app_with(b, page(), Some(silences(url)));
    let cookie = sign_in(&app, ADMIN).await;
    let html = list(&app, &cookie, "").await;
    assert!(
        html.contains("action=\"/notebooks/keep-running\""),
        "{html}"
    );
    let token = csrf(&html);
    let nb = [("namespace", "team-a"), ("name", "lab")];
    let keep = |fields: &[(&str, &str)]| {
        let all = [&nb[..], fields].concat();
        form_post("/notebooks/keep-running", Some(&cookie), &all)
    };
    let r = send(&app, keep(&[("for", "4h")])).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    assert!(active(&store).is_empty());
    let r = send(&app, keep(&[("for", "4h"), ("csrf", &token)])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let made = active(&store);
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["createdBy"], "nbidle page");
    let matchers = made[0]["matchers"].to_string();
    for label in ["\"NotebookIdle\"", "\"team-a\"", "\"lab\""] {
        assert!(matchers.contains(label), "{matchers}");
    }
    let html = list(&app, &cookie, "").await;
    assert!(
        html.contains("team-a/lab is kept running until"),
        "the flash"
    );
    assert!(html.contains("Kept running until"), "the row");
    assert!(html.contains("by nbidle page"));

    // Until a time the form says is UTC; one in the past is refused.
    let r = send(
        &app,
        keep(&[
            ("for", "until"),
            ("until", "2001-01-01T10:00"),
            ("csrf", &token),
        ]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = list(&app, &cookie, "").await;
    assert!(
        html.contains("&quot;2001-01-01T10:00:00Z&quot; is in the past"),
        "{html}"
    );
    assert_eq!(active(&store).len(), 1);

    let cancel = [&nb[..], &[("csrf", token.as_str())]].concat();
    let r = send(
        &app,
        form_post("/notebooks/keep-running/cancel", Some(&cookie), &cancel),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(active(&store).is_empty(), "expired");
    let html = list(&app, &cookie, "").await;
    assert!(html.contains("is no longer kept running"));
    assert!(!html.contains("Kept running until"));
}

#[tokio::test]
async fn a_scoped_token_keeps_running_only_its_namespace() {
    let (url, store) = alertmanager().await;
    let b = Arc::new(MemoryBackend::new(notebooks()));
    let app = app_with(b, page(), Some(silences(url)));
    let cookie = sign_in(&app, TEAM_A).await;
    let token = csrf(&list(&app, &cookie, "").await);
    let r = send(
        &app,
        form_post(
            "/notebooks/keep-running",
            Some(&cookie),
            &[
                ("namespace", "team-b"),
                ("name", "lab"),
                ("for", "1h"),
                ("csrf", &token),
            ],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(store.lock().unwrap().is_empty());
    let r = send(
        &app,
        form_post(
            "/notebooks/keep-running",
            Some(&cookie),
            &[
                ("namespace", "team-a"),
                ("name", "lab"),
                ("for", "1h"),
                ("csrf", &token),
            ],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(active(&store)[0]["createdBy"], "nbidle page (team-a)");
}

#[tokio::test]
async fn with_alertmanager_down_the_page_says_so_and_stop_still_works() {
    // A port nothing listens on: bound, then closed.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let b = Arc::new(MemoryBackend::new(notebooks()));
    let app = app_with(b.clone(), page(), Some(silences(dead)));
    let cookie = sign_in(&app, ADMIN).await;
    let html = list(&app, &cookie, "").await;
    assert!(html.contains("Keep running is unavailable now"), "{html}");
    assert_eq!(rows(&html).len(), 4, "the list still shows");
    let token = csrf(&html);
    let r = send(
        &app,
        form_post(
            "/notebooks/stop",
            Some(&cookie),
            &[("namespace", "team-a"), ("name", "lab"), ("csrf", &token)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let id = crate::notebook::NotebookId::new("team-a", "lab");
    assert_eq!(
        b.state(&id).unwrap().status,
        crate::notebook::Status::Stopped
    );
}

#[tokio::test]
async fn a_firing_warning_shows_on_its_notebook() {
    let b = Arc::new(MemoryBackend::new(notebooks()));
    let app = app(b, page());
    let soon = crate::notebook::Timestamp::now();
    let body = json!({"version": "4", "status": "firing", "alerts": [{
        "status": "firing",
        "labels": {"alertname": "NotebookIdleSoon", "namespace": "team-a", "notebook": "idle", "nbidle_action": "warn"},
        "startsAt": soon.to_string(), "endsAt": "0001-01-01T00:00:00Z",
    }]});
    let payload = crate::alerts::parse(body.to_string().as_bytes()).unwrap();
    app.warnings.record(&payload, &app.metrics);
    let cookie = sign_in(&app, ADMIN).await;
    let html = list(&app, &cookie, "").await;
    let row = |id: &str| {
        let at = html.find(&format!("<tr data-id=\"{id}\"")).unwrap();
        html[at..at + html[at..].find("</tr>").unwrap()].to_string()
    };
    // No probe yet: the banner counts to the warning's start plus
    // warn_before, and says so in words.
    let idle = row("team-a/idle");
    assert!(idle.contains("class=\"warning\""), "{idle}");
    assert!(
        idle.contains("Stops in ") && idle.contains("unless used"),
        "{idle}"
    );
    assert!(!idle.contains("Stops at"), "{idle}");
    assert!(!row("team-a/lab").contains("unless used"));
}
