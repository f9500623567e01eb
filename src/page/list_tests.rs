//! What the list says about notebooks on their way up or down: the counts
//! line (also in `/page/states`, for the script), a stopping row's Actions
//! cell and the message after Stop.

use std::sync::Arc;

use warp::http::StatusCode;

use super::handlers::stop_message;
use super::tests::{app, csrf, form_post, list, page, page_get, send, sign_in, text, ADMIN};
use crate::backend::memory::MemoryBackend;
use crate::notebook::{NotebookId, NotebookState, Status, StopCause, StoppedBy, Timestamp};

fn with(status: Status, name: &str) -> NotebookState {
    NotebookState {
        status,
        ..MemoryBackend::running("local", name)
    }
}

#[tokio::test]
async fn the_counts_line_counts_starting_and_stopping_and_the_script_gets_it() {
    let b = Arc::new(MemoryBackend::new([
        with(Status::Running, "alpha"),
        with(Status::Stopping, "beta"),
        with(Status::Starting, "gamma"),
        with(Status::Stopped, "delta"),
    ]));
    let app = app(b, page());
    let cookie = sign_in(&app, ADMIN).await;
    let line = "4 of 4 notebooks · 1 running · 1 starting · 1 stopping · 1 stopped";
    let html = list(&app, &cookie, "").await;
    assert!(html.contains(line), "{html}");
    let r = send(&app, page_get("/page/states", &cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(body["summary"], line, "{}", text(&r));
    let beta = body["notebooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "local/beta")
        .unwrap();
    assert_eq!(beta["pending"], "Stopping…");
}

#[tokio::test]
async fn a_stopping_row_says_so_in_its_actions_cell() {
    let b = Arc::new(MemoryBackend::new([with(Status::Stopping, "beta")]));
    let app = app(b, page());
    let cookie = sign_in(&app, ADMIN).await;
    let html = list(&app, &cookie, "").await;
    let actions = &html[html.find("data-label=\"Actions\"").unwrap()..];
    assert!(
        actions.contains("<span class=\"pending\">Stopping…</span>"),
        "{actions}"
    );
}

#[test]
fn after_stop_the_message_says_what_the_backend_reported() {
    let stopping = with(Status::Stopping, "alpha");
    assert_eq!(
        stop_message(&stopping),
        "Stopping local/alpha… Its files are kept; the list shows when it is stopped."
    );
    let stopped = with(Status::Stopped, "alpha");
    assert!(stop_message(&stopped).starts_with("Stopped local/alpha."));
}

#[tokio::test]
async fn a_stop_on_the_page_records_who_asked_and_the_row_says_so() {
    let b = Arc::new(MemoryBackend::new([with(Status::Running, "alpha")]));
    let app = app(b.clone(), page());
    let cookie = sign_in(&app, ADMIN).await;
    let token = csrf(&list(&app, &cookie, "").await);
    let fields = [
        ("namespace", "local"),
        ("name", "alpha"),
        ("csrf", token.as_str()),
    ];
    let r = send(&app, form_post("/notebooks/stop", Some(&cookie), &fields)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let state = b.state(&NotebookId::new("local", "alpha")).unwrap();
    assert_eq!(
        state.stopped_by,
        Some(StopCause::user(Some(StoppedBy::Page {
            who: "a token for every namespace".into()
        })))
    );
    let html = list(&app, &cookie, "").await;
    assert!(
        html.contains("Stopped by a token for every namespace on nbidle&#x27;s page at ")
            || html.contains("Stopped by a token for every namespace on nbidle's page at "),
        "{html}"
    );
    assert!(!html.contains("Stop on this page"), "{html}");
}

#[tokio::test]
async fn pages_name_an_empty_icon_so_browsers_ask_for_no_favicon() {
    let b = Arc::new(MemoryBackend::new([with(Status::Running, "alpha")]));
    let app = app(b, page());
    let sign_in_page = send(&app, warp::test::request().path("/sign-in")).await;
    assert!(text(&sign_in_page).contains(r#"<link rel="icon" href="data:,">"#));
    let cookie = sign_in(&app, ADMIN).await;
    assert!(list(&app, &cookie, "")
        .await
        .contains(r#"<link rel="icon" href="data:,">"#));
}

#[tokio::test]
async fn times_give_the_date_only_when_it_is_not_today() {
    let now = Timestamp::now();
    let today = NotebookState {
        started_at: Some(now),
        ..with(Status::Running, "alpha")
    };
    let old = NotebookState {
        stopped_at: Some("2025-01-01T09:00:00Z".parse().unwrap()),
        ..with(Status::Stopped, "beta")
    };
    let b = Arc::new(MemoryBackend::new([today, old]));
    let app = app(b, page());
    let cookie = sign_in(&app, ADMIN).await;
    let html = list(&app, &cookie, "").await;
    let u = now.0;
    let hm = format!("{:02}:{:02} UTC", u.hour(), u.minute());
    assert!(html.contains(&format!(">{hm}</time>")), "{html}");
    assert!(
        html.contains(r#"title="2025-01-01T09:00:00Z">1 Jan 2025 09:00 UTC</time>"#),
        "{html}"
    );
}
