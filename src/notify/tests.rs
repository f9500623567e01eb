//! The pure parts of a push: what it says, when a notebook gets one, which
//! requests are taken, and how an answer is read.

use super::client::{parse_answer, Pushed};
use super::state::*;

const WINDOW: f64 = 330.0;
const WARN: f64 = 300.0;

#[test]
fn a_near_deadline_or_a_warning_is_interesting_others_are_not() {
    let now = 1_000_000.0;
    // Far from its deadline, no warning: nothing to show.
    assert_eq!(interest(Some(now + 1800.0), None, now, WINDOW, WARN), None);
    assert_eq!(interest(None, None, now, WINDOW, WARN), None);
    // Within warn_before + 2 intervals: shown as running with the deadline.
    let s = interest(Some(now + 300.0), None, now, WINDOW, WARN).unwrap();
    assert_eq!(
        (s.phase, s.stops_at, s.warning_since),
        (Phase::Running, Some(now + 300.0), None)
    );
    // A firing warning shows whatever the deadline says, or its own stop time.
    let w = interest(
        Some(now + 900.0),
        Some((now - 5.0, now + 295.0)),
        now,
        WINDOW,
        WARN,
    )
    .unwrap();
    assert_eq!(w.phase, Phase::Warning);
    assert_eq!(w.stops_at, Some(now + 900.0));
    assert_eq!(w.warning_since, Some(now - 5.0));
    let w = interest(None, Some((now - 5.0, now + 295.0)), now, WINDOW, WARN).unwrap();
    assert_eq!(w.stops_at, Some(now + 295.0));
    // Passed by more than warn_before with no warning (a guard holds the
    // stop back): nothing to count down; a warning still shows.
    assert!(interest(Some(now - 200.0), None, now, WINDOW, WARN).is_some());
    assert_eq!(interest(Some(now - 301.0), None, now, WINDOW, WARN), None);
    assert_eq!(
        interest(
            Some(now - 301.0),
            Some((now - 600.0, now)),
            now,
            WINDOW,
            WARN
        )
        .map(|s| s.phase),
        Some(Phase::Warning)
    );
    // A push: something shown, results waiting, or one clear after a show.
    assert!(worth_a_push(Some(s), false, false));
    assert!(worth_a_push(None, true, false));
    assert!(worth_a_push(None, false, true));
    assert!(!worth_a_push(None, false, false));
}

fn raw(id: &str, kind: &str, for_: Option<&str>) -> RawRequest {
    RawRequest {
        id: id.into(),
        kind: kind.into(),
        for_: for_.map(Into::into),
    }
}

#[test]
fn only_the_offered_keep_running_is_taken() {
    let ok = validate(&raw("a1", "keep_running", Some("4h")), Some("4h")).unwrap();
    assert_eq!(
        ok,
        KeepRequest {
            id: "a1".into(),
            for_: "4h".into()
        }
    );
    let refused = |r: RawRequest, offered| match validate(&r, offered) {
        Err(Refused(Some(res))) => {
            assert_eq!(res.id, r.id);
            assert!(!res.ok);
            res.message
        }
        other => panic!("{other:?}"),
    };
    assert!(refused(raw("a2", "keep_running", Some("8h")), Some("4h")).contains("4h"));
    assert!(refused(raw("a3", "keep_running", None), Some("4h")).contains("4h"));
    assert_eq!(
        refused(raw("a4", "stop", Some("4h")), Some("4h")),
        "unknown request kind"
    );
    assert!(refused(raw("a5", "keep_running", Some("4h")), None).contains("Alertmanager"));
    // Ids that cannot be echoed get no result at all.
    for id in ["", &"x".repeat(65), "a\nb"] {
        assert_eq!(
            validate(&raw(id, "keep_running", Some("4h")), Some("4h")),
            Err(Refused(None))
        );
    }
    assert!(validate(
        &raw(&"x".repeat(64), "keep_running", Some("4h")),
        Some("4h")
    )
    .is_ok());
}

#[test]
fn the_offer_is_four_hours_at_most_keep_running_max() {
    use std::time::Duration;
    assert_eq!(offered_duration(Duration::from_secs(7 * 86400)), "4h");
    assert_eq!(offered_duration(Duration::from_secs(9000)), "2h 30m");
    // keep_until reads the offer back.
    let now = crate::notebook::Timestamp::now();
    let max = Duration::from_secs(9000);
    let until = crate::silences::keep_until(Some(&offered_duration(max)), None, now, max).unwrap();
    assert_eq!((until.0 - now.0).whole_seconds(), 9000);
}

#[test]
fn answers_outside_the_contract_are_failures() {
    match parse_answer(br#"{"requests": [{"id": "a", "kind": "keep_running", "for": "4h", "by": "ada", "at": 1.5, "extra": 1}], "more": true}"#) {
        Pushed::Taken(r) => assert_eq!(r.len(), 1),
        other => panic!("{other:?}"),
    }
    assert!(matches!(parse_answer(b"{}"), Pushed::Taken(r) if r.is_empty()));
    let five = format!(
        r#"{{"requests": [{}]}}"#,
        [r#"{"id": "a", "kind": "keep_running"}"#; 5].join(",")
    );
    for bad in [
        &b"not json"[..],
        br#"{"requests": "x"}"#,
        br#"{"requests": [{"id": 1, "kind": "k"}]}"#,
        five.as_bytes(),
    ] {
        assert!(
            matches!(parse_answer(bad), Pushed::Failed(_)),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn the_body_is_the_contract_s() {
    let body = StateBody {
        version: 1,
        notebook: NotebookRef {
            namespace: "local".into(),
            name: "alpha".into(),
        },
        phase: Phase::Warning,
        sent_at: 1.0,
        stops_at: Some(301.0),
        warn_before_seconds: 300,
        idle_after_seconds: 1800,
        warning_since: Some(1.0),
        kept_running: None,
        keep_running_for: Some("4h".into()),
        page_url: Some("http://127.0.0.1:9877/".into()),
        reason: None,
        results: vec![KeepResult {
            id: "a".into(),
            ok: true,
            message: "Kept running until 16:05 UTC".into(),
        }],
    };
    let v = serde_json::to_value(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "version": 1, "notebook": {"namespace": "local", "name": "alpha"}, "phase": "warning",
            "sent_at": 1.0, "stops_at": 301.0, "warn_before_seconds": 300, "idle_after_seconds": 1800,
            "warning_since": 1.0, "kept_running": null, "keep_running_for": "4h",
            "page_url": "http://127.0.0.1:9877/", "reason": null,
            "results": [{"id": "a", "ok": true, "message": "Kept running until 16:05 UTC"}]
        })
    );
    assert!(serde_json::to_vec(&body).unwrap().len() < super::client::MAX_ANSWER_BYTES as usize);
}

#[test]
fn a_push_carries_the_deadline_the_warning_the_silence_and_the_offer() {
    use crate::notebook::Timestamp;
    use crate::silences::KeptRunning;

    let (state, n) = ada_s_alpha_notifier();
    let until = Timestamp::now();
    let kept = KeptRunning {
        id: "s1".into(),
        until,
        by: "ada via JupyterLab".into(),
        comment: String::new(),
    };
    let shown = interest(None, Some((10.0, 310.0)), 20.0, WINDOW, WARN);
    let b = n.body(&state, shown, Some(&kept), Vec::new());
    assert_eq!(
        (b.notebook.namespace.as_str(), b.notebook.name.as_str()),
        ("team", "alpha")
    );
    assert_eq!(b.phase, Phase::Warning);
    assert_eq!((b.stops_at, b.warning_since), (Some(310.0), Some(10.0)));
    assert_eq!((b.warn_before_seconds, b.idle_after_seconds), (300, 1800));
    assert_eq!(
        b.kept_running,
        Some(Kept {
            until: until.unix_seconds(),
            by: "ada via JupyterLab".into()
        })
    );
    // The standalone notifier has no Alertmanager: nothing offered.
    assert_eq!(b.keep_running_for, None);
    assert!(b.sent_at >= until.unix_seconds());
    // Nothing shown: a clear.
    let b = n.body(&state, None, None, Vec::new());
    assert_eq!(
        (b.phase, b.stops_at, b.warning_since),
        (Phase::Running, None, None)
    );
}

#[test]
fn nothing_is_pushed_while_nbidle_does_not_stop() {
    use crate::config::testing::{parse, MINIMAL};
    let stops = |extra: &str| {
        let c = parse(&format!("{MINIMAL}{extra}")).unwrap();
        super::Settings::from_config(&c).stops
    };
    assert!(stops(""));
    assert!(!stops("autostop:\n  enabled: false\n"));
    assert!(!stops("autostop:\n  dry_run: true\n"));
}

#[tokio::test]
async fn after_a_stopping_push_the_next_round_pushes_what_the_tab_shows() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::backend::JupyterEndpoint;

    // The extension's side: 200 and no requests.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = c.read(&mut buf).await;
            let body = r#"{"requests": []}"#;
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = c.write_all(reply.as_bytes()).await;
        }
    });
    let (state, n) = ada_s_alpha_notifier();
    // The last round's push was a clear: nothing shown.
    n.lock().insert(
        state.id.clone(),
        super::Memo {
            answered: Some(JupyterEndpoint {
                id: state.id.clone(),
                base_url: format!("http://127.0.0.1:{port}/"),
                token: None,
                pods: Vec::new(),
            }),
            ..super::Memo::new(None)
        },
    );
    // No Keep running came back: the stop goes ahead.
    assert!(!n.stopping(&state).await);
    // The tab shows "stopping" now; if the backend refuses the stop, the
    // next round pushes (showed_last) and corrects it.
    assert!(n.lock().get(&state.id).unwrap().showed);
}

/// Running notebook team/alpha of ada, and a standalone notifier over it.
fn ada_s_alpha_notifier() -> (
    crate::notebook::NotebookState,
    std::sync::Arc<super::Notifier>,
) {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::backend::memory::MemoryBackend;
    use crate::exporter::Exporter;
    use crate::notebook::{NotebookId, NotebookState, Status};

    let state = NotebookState {
        id: NotebookId::new("team", "alpha"),
        status: Status::Running,
        message: None,
        autostop: true,
        idle_after_seconds: 1800,
        owner: Some("ada".into()),
        started_at: None,
        stopped_at: None,
        stopped_by: None,
        url: None,
    };
    let backend = Arc::new(MemoryBackend::new([state.clone()]));
    let exporter = Exporter::new(
        backend.clone(),
        Default::default(),
        Duration::from_secs(600),
        // Known for longer than warn_before: deadlines as their activity says.
        Duration::ZERO,
    );
    let n = super::Notifier::standalone(
        exporter,
        backend,
        Duration::from_secs(2),
        4,
        Duration::from_secs(300),
        Duration::from_secs(15),
    );
    (state, n)
}
