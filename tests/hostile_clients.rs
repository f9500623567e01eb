//! Hostile and broken HTTP clients against a real nbidle process: partial
//! headers, silent and idle connections, half bodies, many connections,
//! oversized heads, concurrent large bodies, and shutdown with connections
//! held. Each checks the connection is dealt with and that the API keeps
//! answering meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// nbidle with one `sleep` notebook and `server`/`webhook` settings appended;
/// `wrap` runs it under another command (e.g. `prlimit`).
async fn start(dir: &std::path::Path, extra: &str, wrap: &[&str]) -> Nbidle {
    let port = free_port();
    let yaml = Nbidle::config_yaml(port, dir, &[sleeper("nb")], &NbidleOptions::default()) + extra;
    Nbidle::start_wrapped(dir, "nbidle", port, &yaml, &[], wrap).await
}

fn addr(nb: &Nbidle) -> String {
    nb.url.trim_start_matches("http://").to_string()
}

/// The API answers an authenticated request within 2 s.
async fn api_answers(nb: &Nbidle) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let r = http
        .get(nb.api("notebooks"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("the API answers while hostile connections are held");
    assert_eq!(r.status(), 200);
}

/// Waits until the server closes `s` (EOF or reset); returns what it sent.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Result<String, String> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), s.read(&mut buf)).await
        {
            Err(_) => {
                return Err(format!(
                    "still open after {limit:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const SHORT: &str = "server:\n  header_read_timeout: 1s\n  body_read_timeout: 1s\n";

#[tokio::test]
async fn partial_headers_silent_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let nb = start(dir.path(), SHORT, &[]).await;
    let a = addr(&nb);

    let mut silent = TcpStream::connect(&a).await.unwrap();
    let mut partial = TcpStream::connect(&a).await.unwrap();
    partial
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // A keep-alive connection left idle after one request.
    let mut idle = TcpStream::connect(&a).await.unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    api_answers(&nb).await;
    for (what, s) in [
        ("silent", &mut silent),
        ("partial headers", &mut partial),
        ("idle keep-alive", &mut idle),
    ] {
        closed_within(s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{what} connection: {e}"));
    }
    api_answers(&nb).await;
}

#[tokio::test]
async fn a_head_over_max_header_bytes_is_refused_before_it_is_buffered() {
    let dir = tempfile::tempdir().unwrap();
    // Long timeouts: only the size limit may end the connection.
    let nb = start(dir.path(), "server:\n  max_header_bytes: 16384\n", &[]).await;
    let mut s = TcpStream::connect(addr(&nb)).await.unwrap();
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
    let mut sent = 0;
    // 100 KB of unfinished head: far over the limit, far under what hyper
    // buffers by default (about 400 KB).
    while sent < 100 * 1024 {
        if s.write_all(line.as_bytes()).await.is_err() {
            break;
        }
        sent += line.len();
    }
    let answer = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("connection closed at the head limit");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    api_answers(&nb).await;
}

#[tokio::test]
async fn a_half_sent_body_times_out_with_408() {
    let dir = tempfile::tempdir().unwrap();
    let nb = start(dir.path(), SHORT, &[]).await;
    let mut s = TcpStream::connect(addr(&nb)).await.unwrap();
    let head = format!(
        "POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"version\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("half body ended by the body read timeout");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_ne!(nb.notebook("local", "nb").await["status"], "stopped");
    api_answers(&nb).await;
}

#[tokio::test]
async fn a_half_sent_page_form_is_ended_by_the_body_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let nb = start(dir.path(), SHORT, &[]).await;
    let mut s = TcpStream::connect(addr(&nb)).await.unwrap();
    // Anyone can post the sign-in form: no session, no token needed.
    let head = "POST /sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 16000\r\n\r\ntoken=";
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("half form ended by the body read timeout");
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    api_answers(&nb).await;
}

#[tokio::test]
async fn bodies_beyond_the_in_flight_budget_get_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "webhook:\n  max_body_bytes: 1048576\n  max_bytes_in_flight: 2097152\n";
    let nb = start(dir.path(), extra, &[]).await;
    let head = format!(
        "POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{{\"version\":"
    );
    // Two bodies in flight take the whole budget...
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr(&nb)).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so a third is turned away at once, before its body is read.
    let mut s = TcpStream::connect(addr(&nb)).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("answered at once")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("\"busy\""), "{answer}");
    // Once the held bodies are gone, the budget is free again.
    drop(held);
    eventually("budget released", Duration::from_secs(10), || async {
        let r = nb.webhook(&payload(vec![])).await;
        (r.status() != 503).then_some(())
    })
    .await;
    api_answers(&nb).await;
}

#[tokio::test]
async fn many_silent_connections_under_a_low_open_files_limit_do_not_lock_out_the_api() {
    let dir = tempfile::tempdir().unwrap();
    // 256 descriptors: nbidle keeps its cap at half of that. Long timeouts,
    // so only the cap can make room.
    let nb = start(
        dir.path(),
        "server:\n  header_read_timeout: 5m\n",
        &["prlimit", "--nofile=256:256", "--"],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect(addr(&nb)).await {
            Ok(s) => held.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        api_answers(&nb).await;
        let r = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
            .get(format!("{}/livez", nb.url))
            .send()
            .await
            .expect("/livez answers");
        assert_eq!(r.status(), 200);
    }
    assert!(nb.metric("nbidle_http_connections_evicted_total").await > 0.0);
    assert!(nb.metric("nbidle_http_connections_open").await <= 128.0);
}

#[tokio::test]
async fn shutdown_ends_within_its_deadline_while_a_client_holds_a_partial_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut nb = start(
        dir.path(),
        "server:\n  header_read_timeout: 5m\n  shutdown_timeout: 2s\n",
        &[],
    )
    .await;
    let mut s = TcpStream::connect(addr(&nb)).await.unwrap();
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = nb.proc.terminate().expect("exit status");
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{}", nb.log());
    // shutdown_timeout (2 s) plus the notebook's stop (stop_on_exit).
    assert!(took < Duration::from_secs(10), "took {took:?}");
    closed_within(&mut s, Duration::from_secs(1))
        .await
        .expect("held connection closed by the shutdown");
}
