//! Values from outside in nbidle's log, against a running nbidle: alert
//! labels and rejected payloads carrying line breaks, terminal escapes and
//! megabytes of text are logged one line per event, escaped and capped; a
//! flood of rejected payloads writes a bounded log and counts what it left
//! out.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::stream::{self, StreamExt};
use serde_json::json;

/// Production's log filter; no colours, so any ESC in the log came from a
/// request. The body limit is raised so that megabyte labels reach the
/// parser whatever the default is.
async fn start(dir: &std::path::Path) -> Nbidle {
    let port = free_port();
    let mut yaml = Nbidle::config_yaml(port, dir, &[sleeper("demo")], &NbidleOptions::default());
    yaml.push_str("webhook:\n  max_body_bytes: 8388608\n");
    let env = [
        ("NBIDLE_LOG", "info,warp=warn,hyper=warn"),
        ("NO_COLOR", "1"),
    ];
    Nbidle::start_yaml(dir, "nbidle", port, &yaml, &env).await
}

fn alert_named(notebook: &str, alertname: &str) -> serde_json::Value {
    let mut a = idle_alert("local", "x", &rfc3339_from_now(-60));
    a["labels"]["notebook"] = json!(notebook);
    a["labels"]["alertname"] = json!(alertname);
    a
}

/// The log lines containing `marker`.
fn lines_with(log: &str, marker: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(marker))
        .map(str::to_string)
        .collect()
}

/// The one line that contains `marker`, which must also contain `event`.
fn one_line(log: &str, marker: &str, event: &str) -> String {
    let lines = lines_with(log, marker);
    assert_eq!(
        lines.len(),
        1,
        "{marker} must be in exactly one line, found {}: {:?}",
        lines.len(),
        lines
            .iter()
            .map(|l| l.chars().take(300).collect::<String>())
            .collect::<Vec<_>>()
    );
    assert!(
        lines[0].contains(event),
        "{marker} in a line that is not `{event}`: {}",
        lines[0].chars().take(300).collect::<String>()
    );
    lines[0].clone()
}

#[tokio::test]
async fn hostile_labels_are_logged_one_escaped_capped_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let nb = start(dir.path()).await;
    nb.wait_status("local", "demo", "starting", Duration::from_secs(5))
        .await;
    let forged_ts = "2030-01-01T00:00:00.000000Z";
    let forged = format!(
        "\r\n{forged_ts}  INFO nbidle::backend::local: notebook stopping notebook=local/demo trigger=\"idle-alert\""
    );
    let unknown = "alert names a notebook the backend does not know";
    let rejected = "rejected webhook payload";
    let huge = 3 * 1024 * 1024;

    // Line breaks in the notebook and alert names.
    let crlf = alert_named(
        &format!("ghost MARK-CRLF{forged}"),
        &format!("Idle\nMARK-NAME{forged}"),
    );
    // Terminal escapes, a C1 CSI, DEL and Unicode line/paragraph separators.
    let ansi = alert_named(
        "\x1b[2J\x1b[31mMARK-ANSI\x1b[0m\u{9b}1m\x7f\u{2028}\u{2029}\u{85}",
        "NotebookIdle",
    );
    let big = alert_named(&format!("MARK-HUGE{}", "x".repeat(huge)), "NotebookIdle");
    for alert in [crlf, ansi, big] {
        let r = nb.webhook(&payload(vec![alert])).await;
        assert_eq!(r.status(), 200);
    }
    // Rejected payloads whose error quotes the input: a label key with a
    // forged line (in the error's field path) and a megabyte status.
    let mut bad_key = idle_alert("local", "demo", &rfc3339_from_now(-60));
    bad_key["labels"][format!("k MARK-KEY{forged}")] = json!(7);
    let mut bad_status = idle_alert("local", "demo", &rfc3339_from_now(-60));
    bad_status["status"] = json!(format!("MARK-STATUS{}", "y".repeat(huge)));
    for alert in [bad_key, bad_status] {
        let r = nb.webhook(&payload(vec![alert])).await;
        assert_eq!(r.status(), 400);
    }

    let log = eventually("the rejection lines", Duration::from_secs(10), || async {
        let log = nb.log();
        (log.matches(rejected).count() >= 2).then_some(log)
    })
    .await;
    assert!(
        !log.lines().any(|l| l.starts_with(forged_ts)),
        "a forged line made it into the log"
    );
    for marker in ["MARK-CRLF", "MARK-ANSI", "MARK-HUGE"] {
        one_line(&log, marker, unknown);
    }
    let crlf_line = one_line(&log, "MARK-NAME", unknown);
    assert!(
        crlf_line.contains(r"\r\n2030-01-01"),
        "line breaks are shown escaped: {crlf_line}"
    );
    let ansi_line = one_line(&log, "MARK-ANSI", unknown);
    assert!(
        ansi_line.contains(r"\u{1b}[31mMARK-ANSI"),
        "ESC is shown escaped: {ansi_line}"
    );
    for c in [
        '\x1b', '\u{9b}', '\x7f', '\u{2028}', '\u{2029}', '\u{85}', '\r',
    ] {
        assert!(
            !log.contains(c),
            "{:?} reached the log unescaped",
            c.escape_unicode().to_string()
        );
    }
    one_line(&log, "MARK-KEY", rejected);
    for (marker, event) in [("MARK-HUGE", unknown), ("MARK-STATUS", rejected)] {
        let line = one_line(&log, marker, event);
        assert!(
            line.len() < 2048,
            "{marker}: a {huge}-byte value made a {}-byte line",
            line.len()
        );
        assert!(
            line.contains(" bytes)"),
            "the cut is marked with the value's size: {line}"
        );
    }
    assert!(
        log.len() < 64 * 1024,
        "the whole log is {} bytes after five requests",
        log.len()
    );
    assert_ne!(nb.notebook("local", "demo").await["status"], "stopped");
}

/// The `suppressed=N` counts reported in the log.
fn suppressed_counts(log: &str, event: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(event))
        .filter_map(|l| {
            let rest = &l[l.find("suppressed=")? + "suppressed=".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn a_flood_of_rejected_payloads_writes_a_bounded_log_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let nb = start(dir.path()).await;
    let rejected = "rejected webhook payload";
    let url = format!("{}/webhook/alertmanager", nb.url);
    // About 2 KiB of input that the parser's error quotes back.
    let mut alert = idle_alert("local", "demo", &rfc3339_from_now(-60));
    alert["status"] = json!(format!("burning-{}", "z".repeat(2000)));
    let body = serde_json::to_vec(&payload(vec![alert])).unwrap();
    let send = |body: Vec<u8>| {
        let (http, url) = (nb.http.clone(), url.clone());
        async move {
            http.post(&url)
                .bearer_auth(WEBHOOK_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    let before = nb.log().len();
    let flood = 10_000;
    let started = Instant::now();
    let codes: Vec<u16> = stream::iter(0..flood)
        .map(|_| send(body.clone()))
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(codes.iter().all(|&c| c == 400), "every payload is refused");
    let log = nb.log();
    let grown = log.len() - before;
    eprintln!("{flood} rejected payloads in {elapsed:?}: the log grew by {grown} bytes");
    let tail: Vec<&str> = log.lines().rev().take(3).collect();
    assert!(
        grown < 128 * 1024,
        "{flood} rejected payloads wrote {grown} bytes of log, ending {tail:#?}"
    );

    // Once the limit lets a line through again, it says how many it left
    // out; every rejection is either logged or counted.
    let mut sent = flood as u64;
    let log = eventually(
        "a line reporting the suppressed ones",
        Duration::from_secs(60),
        || {
            sent += 1;
            let (body, send, nb, sent) = (body.clone(), &send, &nb, sent);
            async move {
                assert_eq!(send(body).await, 400);
                let log = nb.log();
                let reported: u64 = suppressed_counts(&log, rejected).iter().sum();
                let logged = log.matches(rejected).count() as u64;
                (reported > 0 && reported + logged == sent).then_some(log)
            }
        },
    )
    .await;
    let reported: u64 = suppressed_counts(&log, rejected).iter().sum();
    assert!(reported >= 9_000, "only {reported} reported as suppressed");
    assert_eq!(
        nb.metric("nbidle_log_lines_suppressed_total{kind=\"webhook_payload\"}")
            .await,
        reported as f64
    );
}

#[tokio::test]
async fn bodies_cut_off_by_their_client_log_a_bounded_number_of_lines() {
    let dir = tempfile::tempdir().unwrap();
    let nb = start(dir.path()).await;
    let addr = nb.url.trim_start_matches("http://").to_string();
    let head = format!(
        "POST /webhook/alertmanager HTTP/1.1\r\nHost: nbidle\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"version\":"
    );
    let before = nb.log().len();
    let cut = 2_000;
    for _ in 0..cut {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        std::io::Write::write_all(&mut s, head.as_bytes()).unwrap();
    }
    // Each cut-off body is seen once its connection closes; a request after
    // them all is answered after they are handled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(nb.webhook(&payload(vec![])).await.status(), 200);
    let log = nb.log();
    let grown = log.len() - before;
    eprintln!("{cut} cut-off bodies: the log grew by {grown} bytes");
    assert!(
        grown < 32 * 1024,
        "{cut} cut-off bodies wrote {grown} bytes of log, ending {:#?}",
        log.lines().rev().take(2).collect::<Vec<_>>()
    );
}
