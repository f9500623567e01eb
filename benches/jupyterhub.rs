//! `make bench` (JupyterHub part): the `jupyterhub` backend against a real
//! JupyterHub 5 and its proxy (tests/common/hub.rs), 5,000 users created
//! through the Hub's API, 1,000 of them with a running server. The servers
//! are stand-ins (tests/hub/standin_spawner.py: each is the address of one
//! HTTP stand-in here), so the Hub's own API, database and proxy routes do
//! their real work on a small machine.
//!
//! - nbidle listing every user's servers (`GET /api/v1/notebooks`, which
//!   pages through `GET /hub/api/users`): time per list, and nbidle's RSS;
//! - 1,000 stops from one webhook payload: time until the response and
//!   until the Hub reports no active server;
//! - beside it, in the same run, `jupyterhub-idle-culler` culling the same
//!   1,000 servers in one round (`--timeout=1`, its default
//!   `--concurrency=10`): time from its start until the Hub reports no
//!   active server.
//!
//! nbidle runs as it would on a Hub: its exporter probes every running
//! server through the proxy (the stand-in answers as an idle Jupyter) every
//! 15 s, also during the lists and the stops; the culler probes nothing.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Hub, HubOptions, HUB_SERVICE_TOKEN};
use futures_util::{stream, StreamExt};
use reqwest::Method;
use serde_json::Value;

const USERS: usize = 5_000;
const RUNNING: usize = 1_000;
const LISTS: usize = 10;
const WEBHOOK_TOKEN: &str = "bench-webhook";
const API_TOKEN: &str = "bench-api";
const CULLER_TOKEN: &str = "bench-idle-culler-token";
/// nbidle's idle time: a server started more recently is not idle, and
/// nbidle's check before each stop would keep it.
const IDLE_AFTER: u64 = 30;

fn user(i: usize) -> String {
    format!("u{i}")
}

/// The servers of the users the Hub reports in `state` (`active`:
/// pending or running; `ready`), every page.
async fn servers(hub: &Hub, state: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (status, page) = hub
            .admin(
                Method::GET,
                &format!("users?state={state}&offset={offset}&limit=200"),
                None,
            )
            .await;
        assert!(
            status.is_success(),
            "listing {state} users: {status} {page}"
        );
        let users = page.as_array().expect("a list of users");
        out.extend(
            users
                .iter()
                .flat_map(|u| {
                    u["servers"]
                        .as_object()
                        .into_iter()
                        .flat_map(|s| s.values())
                })
                .cloned(),
        );
        if users.len() < 200 {
            return out;
        }
        offset += users.len();
    }
}

async fn active(hub: &Hub) -> usize {
    servers(hub, "active").await.len()
}

async fn ready(hub: &Hub) -> usize {
    servers(hub, "ready")
        .await
        .iter()
        .filter(|s| s["ready"] == true)
        .count()
}

/// Starts the first [`RUNNING`] users' servers through the Hub's API and
/// waits until all are ready; returns the time it took.
async fn start_servers(hub: &Hub) -> Duration {
    let t = Instant::now();
    stream::iter(0..RUNNING)
        .map(|i| async move {
            let path = format!("users/{}/server", user(i));
            loop {
                let (status, body) = hub.admin(Method::POST, &path, None).await;
                // 429: the Hub's own limit on concurrent spawns.
                if status.as_u16() == 429 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                assert!(status.is_success(), "starting {path}: {status} {body}");
                break;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    support::until(
        "every server running",
        (Duration::from_millis(200), Duration::from_secs(300)),
        || async { ready(hub).await == RUNNING },
    )
    .await;
    t.elapsed()
}

/// Polls the Hub from `t0` until it reports no active server.
async fn until_none_active(hub: &Hub, t0: Instant) -> Duration {
    support::until(
        "no active server",
        (Duration::from_millis(100), Duration::from_secs(600)),
        || async { active(hub).await == 0 },
    )
    .await;
    t0.elapsed()
}

#[tokio::main]
async fn main() {
    support::raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let standin = support::serve_probes();
    let culler_scopes = [
        "list:users",
        "read:users:activity",
        "read:servers",
        "delete:servers",
    ];
    let hub = Hub::start(
        dir.path(),
        HubOptions {
            stand_ins: Some(standin),
            services: vec![(
                "idle-culler".into(),
                CULLER_TOKEN.into(),
                culler_scopes.iter().map(|s| s.to_string()).collect(),
            )],
            ..Default::default()
        },
    )
    .await;

    let t = Instant::now();
    for chunk in (0..USERS).collect::<Vec<_>>().chunks(500) {
        let names: Vec<String> = chunk.iter().map(|&i| user(i)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        hub.create_users(&refs).await;
    }
    let created = t.elapsed();
    let started = start_servers(&hub).await;
    let all_started = Instant::now();
    println!(
        "jupyterhub: {USERS} users created in {:.1} s, {RUNNING} stand-in servers started in {:.1} s",
        created.as_secs_f64(),
        started.as_secs_f64()
    );

    let port = common::free_port();
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\ndata_dir: data\n\
         auth: {{webhook_token: {WEBHOOK_TOKEN}, api_tokens: [{API_TOKEN}]}}\n\
         autostop: {{idle_after: {IDLE_AFTER}s, evaluation_interval: 10s, warn_before: 20s}}\n\
         backend:\n  kind: jupyterhub\n  jupyterhub:\n    api_url: \"{}\"\n    public_url: \"{}\"\n    token: {HUB_SERVICE_TOKEN}\n",
        hub.api_url, hub.public_url
    );
    let cfg = dir.path().join("nbidle.yaml");
    std::fs::write(&cfg, config).unwrap();
    let served = support::Served(support::serve(&cfg));
    let pid = served.0.id();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    support::until(
        "nbidle ready",
        (Duration::from_millis(100), Duration::from_secs(120)),
        || async {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;

    // Lists.
    let rss_before = support::proc_kib(pid, "VmRSS:");
    let mut times = Vec::new();
    let mut rows = (0, 0);
    for _ in 0..LISTS {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/api/v1/notebooks"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "the list: {}", r.status());
        let v: Value = r.json().await.unwrap();
        times.push(t.elapsed());
        let list = v["notebooks"].as_array().unwrap();
        let running = list.iter().filter(|n| n["status"] == "running").count();
        assert_eq!(running, RUNNING, "every running server is listed running");
        rows = (list.len(), running);
    }
    times.sort();
    let rss_lists = support::proc_kib(pid, "VmRSS:");
    println!(
        "jupyterhub: list of {} servers ({} running) of {USERS} users: min {:.0} ms, median {:.0} ms, max {:.0} ms over {LISTS} lists; nbidle RSS {:.1} MiB before, {:.1} MiB after",
        rows.0,
        rows.1,
        support::ms(times[0]),
        support::ms(support::percentile(&times, 0.5)),
        support::ms(times[LISTS - 1]),
        rss_before as f64 / 1024.0,
        rss_lists as f64 / 1024.0,
    );

    // The Hub's own time for the same pages, without nbidle.
    let mut raw = Vec::new();
    for _ in 0..LISTS {
        let t = Instant::now();
        let mut offset = 0;
        loop {
            let (status, page) = hub
                .admin(
                    Method::GET,
                    &format!("users?include_stopped_servers&offset={offset}&limit=200"),
                    None,
                )
                .await;
            assert!(status.is_success(), "{status}");
            let n = page.as_array().unwrap().len();
            offset += n;
            if n < 200 {
                break;
            }
        }
        raw.push(t.elapsed());
    }
    raw.sort();
    println!(
        "jupyterhub: the Hub's own answers to the same {} pages (admin token, no nbidle): median {:.0} ms",
        USERS.div_ceil(200),
        support::ms(support::percentile(&raw, 0.5)),
    );

    // 1,000 stops from one payload, every server idle for longer than
    // nbidle's idle time.
    tokio::time::sleep(
        (all_started + Duration::from_secs(IDLE_AFTER + 1))
            .saturating_duration_since(Instant::now()),
    )
    .await;
    let starts_at = common::rfc3339_from_now(5);
    let alerts: Vec<Value> = (0..RUNNING)
        .map(|i| common::idle_alert("jupyterhub", &user(i), &starts_at))
        .collect();
    let body = serde_json::to_vec(&common::payload(alerts)).unwrap();
    let t0 = Instant::now();
    let r = http
        .post(format!("{base}/webhook/alertmanager"))
        .bearer_auth(WEBHOOK_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let answered = t0.elapsed();
    assert!(r.status().is_success(), "the webhook: {}", r.status());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stopped"], RUNNING, "every alert stopped its server: {v}");
    let nbidle_done = until_none_active(&hub, t0).await;
    println!(
        "jupyterhub: nbidle, {RUNNING} stops from one payload: response in {:.2} s, no active server after {:.2} s; peak RSS {:.1} MiB",
        answered.as_secs_f64(),
        nbidle_done.as_secs_f64(),
        support::proc_kib(pid, "VmHWM:") as f64 / 1024.0,
    );
    drop(served);

    // The same 1,000, culled by jupyterhub-idle-culler in one round.
    let restarted = start_servers(&hub).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let culler = common::jupyterhub().with_file_name("jupyterhub-idle-culler");
    assert!(
        culler.exists(),
        "missing {}: run `bash scripts/hub-deps.sh`",
        culler.display()
    );
    let log = std::fs::File::create(dir.path().join("idle-culler.log")).unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(&culler)
        .arg(format!("--url={}", hub.api_url.trim_end_matches('/')))
        .args(["--timeout=1", "--cull-every=3600"])
        .env("JUPYTERHUB_API_TOKEN", CULLER_TOKEN)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let culler_done = until_none_active(&hub, t0).await;
    let _ = child.kill();
    let _ = child.wait();
    let culled = std::fs::read_to_string(dir.path().join("idle-culler.log"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("Culling server"))
        .count();
    assert_eq!(culled, RUNNING, "the culler culled each server once");
    println!(
        "jupyterhub: jupyterhub-idle-culler, {RUNNING} culls in one round (servers restarted in {:.1} s): no active server {:.2} s after its start",
        restarted.as_secs_f64(),
        culler_done.as_secs_f64(),
    );
}
