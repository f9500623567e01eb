//! Requests to Keep running checked, and the cache over a stand-in
//! Alertmanager on loopback that counts its calls.

use std::sync::atomic::{AtomicUsize, Ordering};

use warp::Filter;

use super::*;
use crate::notebook::Status;

fn now() -> Timestamp {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn field(r: Result<Timestamp>) -> String {
    match r {
        Err(Error::Invalid { field, message }) => format!("{field}: {message}"),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn for_and_until_become_the_end() {
    assert_eq!(
        keep_until(Some("4h"), None, now(), WEEK).unwrap(),
        "2026-06-01T16:00:00Z".parse().unwrap()
    );
    assert_eq!(
        keep_until(Some("1h 30m"), None, now(), WEEK).unwrap(),
        "2026-06-01T13:30:00Z".parse().unwrap()
    );
    assert_eq!(
        keep_until(None, Some("2026-06-02T09:00:00+02:00"), now(), WEEK).unwrap(),
        "2026-06-02T07:00:00Z".parse().unwrap()
    );
    assert_eq!(
        keep_until(Some("7d"), None, now(), WEEK).unwrap(),
        "2026-06-08T12:00:00Z".parse().unwrap()
    );
}

#[test]
fn bad_requests_name_the_field() {
    let f = |a: Option<&str>, b: Option<&str>| field(keep_until(a, b, now(), WEEK));
    assert!(f(Some("soon"), None).starts_with("for: \"soon\" is not a duration"));
    assert!(f(Some("-4h"), None).starts_with("for: "));
    assert_eq!(f(Some("10s"), None), "for: at least 1m");
    assert!(
        f(Some("8d"), None).starts_with("for: at most 7days"),
        "{}",
        f(Some("8d"), None)
    );
    assert!(f(None, Some("tomorrow")).starts_with("until: \"tomorrow\" is not an RFC 3339 time"));
    assert_eq!(
        f(None, Some("2026-06-01T11:00:00Z")),
        "until: \"2026-06-01T11:00:00Z\" is in the past"
    );
    // Year -1 in UTC, which RFC 3339 cannot show: refused, not a panic.
    assert_eq!(
        f(None, Some("0000-01-01T00:00:00+01:00")),
        "until: \"0000-01-01T00:00:00+01:00\" is in the past"
    );
    assert!(f(None, Some("2026-06-01T12:00:00Z")).contains("in the past"));
    assert!(f(None, Some("2026-06-09T12:00:00Z")).starts_with("until: at most 7days"));
    assert!(
        f(Some("4h"), Some("2026-06-01T13:00:00Z")).starts_with("for: give for or until, not both")
    );
    assert!(f(None, None).starts_with("for: give for"));
}

fn state(name: &str) -> NotebookState {
    NotebookState {
        id: NotebookId::new("team-a", name),
        status: Status::Running,
        message: None,
        autostop: true,
        idle_after_seconds: 600,
        owner: None,
        started_at: None,
        stopped_at: None,
        stopped_by: None,
        url: None,
    }
}

/// An Alertmanager stand-in answering `GET /api/v2/silences` with one
/// active silence on `team-a/lab-7` and one expired on `team-a/lab-8`;
/// counts the calls.
async fn stand_in() -> (String, Arc<AtomicUsize>) {
    let far = "2099-01-01T00:00:00Z";
    let list = serde_json::json!([
        {"id": "a1", "status": {"state": "active"}, "createdBy": "ada", "comment": "demo",
         "startsAt": "2020-01-01T00:00:00Z", "endsAt": far,
         "matchers": [{"name": "alertname", "value": "NotebookIdle", "isRegex": false},
                      {"name": "notebook", "value": "lab-7", "isRegex": false, "isEqual": true}]},
        {"id": "e1", "status": {"state": "expired"}, "createdBy": "bob", "comment": "",
         "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2020-01-02T00:00:00Z",
         "matchers": [{"name": "notebook", "value": "lab-8", "isRegex": false}]},
    ]);
    serve_list(list).await
}

/// Serves `list` on `GET /api/v2/silences`; counts the calls.
async fn serve_list(list: serde_json::Value) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let route = warp::path!("api" / "v2" / "silences").map(move || {
        c.fetch_add(1, Ordering::SeqCst);
        warp::reply::json(&list)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}"), calls)
}

fn silences(urls: Vec<String>) -> Silences {
    let cfg = AlertmanagerConfig {
        urls,
        ..Default::default()
    };
    Silences::from_config(&cfg, Arc::new(Metrics::new()))
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_page_of_notebooks_costs_one_call_and_amtool_silences_count() {
    let (url, calls) = stand_in().await;
    let s = silences(vec![url]);
    let notebooks: Vec<NotebookState> = (0..1000).map(|i| state(&format!("lab-{i}"))).collect();
    let kept = s.for_notebooks(&notebooks).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let k = &kept[&NotebookId::new("team-a", "lab-7")];
    assert_eq!(
        (k.id.as_str(), k.by.as_str(), k.comment.as_str()),
        ("a1", "ada", "demo")
    );
    for n in notebooks.iter().take(50) {
        s.for_notebook(n).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreachable_replica_passes_to_the_next_and_none_is_a_clear_error() {
    let (url, calls) = stand_in().await;
    // A port nothing listens on: bound, then closed.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let s = silences(vec![dead.clone(), url]);
    assert!(s.for_notebook(&state("lab-7")).await.unwrap().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let s = silences(vec![dead.clone()]);
    match s.for_notebook(&state("lab-7")).await {
        Err(Error::Unavailable(m)) => {
            assert!(m.contains(&format!("{dead}/api/v2/silences")), "{m}");
            assert!(m.contains("connection failed"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

/// 1,000 notebooks against 300 silences by regular expression (each tried
/// on every notebook, compiled once) and 1,000 by equality (indexed): the
/// right one for each, one call to Alertmanager.
#[tokio::test]
async fn many_silences_over_many_notebooks() {
    let silence = |id: String, notebook: serde_json::Value, ends: &str| {
        serde_json::json!({"id": id, "status": {"state": "active"},
            "startsAt": "2020-01-01T00:00:00Z", "endsAt": ends,
            "matchers": [{"name": "alertname", "value": "NotebookIdle", "isRegex": false}, notebook]})
    };
    let mut list: Vec<serde_json::Value> = (0..300)
        .map(|i| {
            let m = serde_json::json!({"name": "notebook", "value": format!("lab-{i}|none"), "isRegex": true});
            silence(format!("s{i}"), m, "2099-01-01T00:00:00Z")
        })
        .collect();
    // Equality silences ending earlier than the regex ones: the later wins.
    list.extend((0..1000).map(|i| {
        let m =
            serde_json::json!({"name": "notebook", "value": format!("lab-{i}"), "isRegex": false});
        silence(format!("e{i}"), m, "2098-01-01T00:00:00Z")
    }));
    let (url, calls) = serve_list(serde_json::Value::Array(list)).await;
    let s = silences(vec![url]);
    let notebooks: Vec<NotebookState> = (0..1000).map(|i| state(&format!("lab-{i}"))).collect();
    s.active().await.unwrap();
    let t = std::time::Instant::now();
    let kept = s.for_notebooks(&notebooks).await.unwrap();
    eprintln!(
        "1,000 notebooks x (300 regex + 1,000 equality silences): {:?}",
        t.elapsed()
    );
    assert_eq!(kept.len(), 1000);
    assert_eq!(kept[&NotebookId::new("team-a", "lab-42")].id, "s42");
    assert_eq!(kept[&NotebookId::new("team-a", "lab-420")].id, "e420");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
