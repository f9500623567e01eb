//! The `jupyterhub` backend against a real JupyterHub (tests/common/hub.rs):
//! single-user servers spawned by the Hub, probed through its proxy, stopped
//! and started through its API with nbidle's service token and only the
//! scopes docs/jupyterhub.md lists.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const NS: &str = "jupyterhub";

/// nbidle on `hub`'s servers, its config otherwise the tests' usual one.
async fn nbidle_on(dir: &std::path::Path, hub: &Hub, idle_after: &'static str) -> Nbidle {
    nbidle_with_am(dir, hub, idle_after, None).await
}

/// [`nbidle_on`], with Keep running's Alertmanager at `am_url`.
async fn nbidle_with_am(
    dir: &std::path::Path,
    hub: &Hub,
    idle_after: &'static str,
    am_url: Option<&str>,
) -> Nbidle {
    let port = free_port();
    let opts = NbidleOptions {
        idle_after,
        ..Default::default()
    };
    let mut cfg = nbidle_config(port, dir, &[], &opts);
    cfg["backend"] = hub.backend();
    if let Some(u) = am_url {
        cfg["alertmanager"]["url"] = json!(u);
    }
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    Nbidle::start_yaml(dir, "nbidle", port, &yaml, &[]).await
}

fn statuses(list: &Value) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Listed {
        namespace: String,
        name: String,
        status: String,
    }
    let listed: Vec<Listed> = serde_json::from_value(list["notebooks"].clone()).unwrap();
    let mut out: Vec<(String, String)> = listed
        .into_iter()
        .map(|n| (format!("{}/{}", n.namespace, n.name), n.status))
        .collect();
    out.sort();
    out
}

/// A file in `user`'s home, written through their server's contents API
/// behind the proxy.
async fn write_file(hub: &Hub, user: &str, name: &str, text: &str) {
    let r = hub
        .http
        .put(format!("{}user/{user}/api/contents/{name}", hub.public_url))
        .header("Authorization", format!("token {HUB_ADMIN_TOKEN}"))
        .json(&json!({"type": "file", "format": "text", "content": text}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "writing {name}: {}", r.status());
}

async fn read_file(hub: &Hub, user: &str, name: &str) -> String {
    let r = hub
        .http
        .get(format!("{}user/{user}/api/contents/{name}", hub.public_url))
        .header("Authorization", format!("token {HUB_ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "reading {name}: {}", r.status());
    r.json::<Value>().await.unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_and_named_servers_are_listed_stopped_and_started_with_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), HubOptions::default()).await;
    hub.create_users(&["ada", "bob", "odd.name"]).await;
    hub.start_server("ada", "", None).await;
    hub.start_server("bob", "gpu", Some(json!({"profile": "gpu"})))
        .await;
    // bob's default server has run once and is stopped.
    hub.start_server("bob", "", None).await;
    let (s, _) = hub.admin(Method::DELETE, "users/bob/server", None).await;
    assert!(s.is_success(), "{s}");
    hub.start_server("odd.name", "", None).await;
    write_file(&hub, "ada", "kept.txt", "ada's work").await;

    let nbidle = nbidle_on(dir.path(), &hub, "1h").await;
    assert_eq!(
        statuses(&nbidle.list().await),
        vec![
            (format!("{NS}/ada"), "running".into()),
            (format!("{NS}/bob"), "stopped".into()),
            (format!("{NS}/bob--gpu"), "running".into()),
        ],
        "a user whose name is no notebook name is left out"
    );
    let ada = nbidle.notebook(NS, "ada").await;
    assert_eq!(ada["owner"], "ada");
    assert_eq!(ada["url"], format!("{}user/ada/", hub.public_url));
    assert!(ada["started_at"].is_string(), "{ada}");

    // Stop: the server goes, the user and their files stay.
    let r = nbidle.post(&format!("notebooks/{NS}/ada/stop")).await;
    assert!(r.status().is_success(), "{}", r.status());
    nbidle
        .wait_status(NS, "ada", "stopped", Duration::from_secs(60))
        .await;
    let server = hub.server("ada", "").await.expect("the server is kept");
    assert_eq!(server["stopped"], true, "{server}");
    assert!(std::fs::read_to_string(hub.dir.join("home/ada/kept.txt"))
        .unwrap()
        .contains("ada's work"));
    let v = nbidle.notebook(NS, "ada").await;
    assert_eq!(v["stopped_by"]["trigger"], "user", "{v}");
    // Idempotent.
    let r = nbidle.post(&format!("notebooks/{NS}/ada/stop")).await;
    assert!(r.status().is_success(), "{}", r.status());

    // Start: the same home.
    let r = nbidle.post(&format!("notebooks/{NS}/ada/start")).await;
    assert!(r.status().is_success(), "{}", r.status());
    nbidle
        .wait_status(NS, "ada", "running", Duration::from_secs(120))
        .await;
    assert_eq!(read_file(&hub, "ada", "kept.txt").await, "ada's work");

    // A named server: stopped without being removed, started with its
    // last user_options.
    let r = nbidle.post(&format!("notebooks/{NS}/bob--gpu/stop")).await;
    assert!(r.status().is_success(), "{}", r.status());
    nbidle
        .wait_status(NS, "bob--gpu", "stopped", Duration::from_secs(60))
        .await;
    let gpu = hub
        .server("bob", "gpu")
        .await
        .expect("the named server is kept");
    assert_eq!(gpu["user_options"], json!({"profile": "gpu"}));
    let r = nbidle.post(&format!("notebooks/{NS}/bob--gpu/start")).await;
    assert!(r.status().is_success(), "{}", r.status());
    nbidle
        .wait_status(NS, "bob--gpu", "running", Duration::from_secs(120))
        .await;
    let gpu = hub.server("bob", "gpu").await.unwrap();
    assert_eq!(gpu["user_options"], json!({"profile": "gpu"}));
    let users = hub.admin(Method::GET, "users", None).await.1;
    assert_eq!(
        users.as_array().unwrap().len(),
        3,
        "no user is removed: {users}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_servers_and_polling_tabs_are_stopped_through_the_alert_path_and_a_silent_computation_kept(
) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), HubOptions::default()).await;
    hub.create_users(&["idle", "busy", "tab", "kept"]).await;
    hub.start_server("idle", "", None).await;
    let idle_ready = std::time::Instant::now();
    for user in ["busy", "tab", "kept"] {
        hub.start_server(user, "", None).await;
    }
    // JupyterLab left open: its polling through the proxy moves the Hub's
    // last_activity, but is no work.
    let _tab = jupyter_user_as(
        dir.path(),
        &format!("{}user/tab/", hub.public_url),
        HUB_ADMIN_TOKEN,
        "open-tab",
        3,
    );
    // A long cell with no output, its browser tab closed.
    jupyter_user_once_as(
        &format!("{}user/busy/", hub.public_url),
        HUB_ADMIN_TOKEN,
        "compute-silently",
    );
    // nbidle deployed after idle's idle time has passed: idle's JupyterLab
    // is still told before the stop comes.
    tokio::time::sleep(Duration::from_secs(21).saturating_sub(idle_ready.elapsed())).await;
    let am_port = free_port();
    let am_url = format!("http://127.0.0.1:{am_port}");
    let nbidle = nbidle_with_am(dir.path(), &hub, "20s", Some(&am_url)).await;
    let am = Alertmanager::start_at(dir.path(), &nbidle.config, am_port).await;
    // Its owner keeps one running (an Alertmanager silence).
    let r = nbidle
        .http
        .post(nbidle.api(&format!("notebooks/{NS}/kept/keep-running")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"for": "1h", "by": "kept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // What the JupyterLab extension in idle's server is told, read as its
    // browser tab reads it, through the Hub's proxy.
    let countdown = tokio::spawn({
        let (http, url) = (
            hub.http.clone(),
            format!("{}user/idle/nbidle/state", hub.public_url),
        );
        async move {
            loop {
                let r = http
                    .get(&url)
                    .header("Authorization", format!("token {HUB_ADMIN_TOKEN}"))
                    .send()
                    .await;
                if let Ok(r) = r {
                    if let Ok(v) = r.json::<Value>().await {
                        if v["state"]["stops_at"].is_number() {
                            return v["state"].clone();
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    let started = std::time::Instant::now();
    let _prom = Prometheus::start(dir.path(), &nbidle, &am).await;

    let v = nbidle
        .wait_status(NS, "idle", "stopped", Duration::from_secs(120))
        .await;
    eprintln!(
        "idle stopped {:?} after Prometheus started",
        started.elapsed()
    );
    assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{v}");
    assert_eq!(v["stopped_by"]["alertname"], "NotebookIdle");
    let server = hub.server("idle", "").await.expect("kept");
    assert_eq!(server["stopped"], true, "{server}");
    let told = tokio::time::timeout(Duration::from_secs(1), countdown)
        .await
        .expect("idle's JupyterLab was told of the stop before it came")
        .unwrap();
    assert_eq!(told["notebook"]["name"], "idle", "{told}");
    let v = nbidle
        .wait_status(NS, "tab", "stopped", Duration::from_secs(120))
        .await;
    assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{v}");
    // Idle as long as the others: its stop alert fires and Alertmanager
    // holds it, suppressed by the silence; nbidle keeps it.
    let alert = eventually("kept's stop alert", Duration::from_secs(60), || {
        am.alert("NotebookIdle", "kept")
    })
    .await;
    assert_eq!(alert["status"]["state"], "suppressed", "{alert}");
    assert_eq!(nbidle.notebook(NS, "kept").await["status"], "running");
    assert_eq!(hub.server("kept", "").await.unwrap()["ready"], true);
    // The exporter saw the busy kernel through the proxy.
    let busy = nbidle.notebook(NS, "busy").await;
    assert_eq!(busy["status"], "running", "{busy}");
    let metrics = nbidle.exporter_metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("nbidle_notebook_kernels{")
                && l.contains("notebook=\"busy\"")
                && l.contains("state=\"busy\"")
                && l.ends_with(" 1")),
        "the busy kernel is seen through the proxy:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_users_than_one_page_are_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        HubOptions {
            page_size: Some(2),
            ..Default::default()
        },
    )
    .await;
    let users = ["u1", "u2", "u3", "u4", "u5"];
    hub.create_users(&users).await;
    for u in users {
        let (s, b) = hub
            .admin(Method::POST, &format!("users/{u}/server"), None)
            .await;
        assert!(s.is_success(), "{u}: {s} {b}");
    }
    for u in users {
        hub.wait_ready(u, "").await;
    }
    let port = free_port();
    let mut cfg = nbidle_config(port, dir.path(), &[], &NbidleOptions::default());
    cfg["backend"] = hub.backend();
    cfg["backend"]["jupyterhub"]["page_size"] = json!(2);
    let nbidle = Nbidle::start_yaml(
        dir.path(),
        "nbidle",
        port,
        &serde_yaml::to_string(&cfg).unwrap(),
        &[],
    )
    .await;
    let listed = statuses(&nbidle.list().await);
    assert_eq!(
        listed,
        users
            .iter()
            .map(|u| (format!("{NS}/{u}"), "running".to_string()))
            .collect::<Vec<_>>()
    );
    let log = std::fs::read_to_string(hub.dir.join("hub-1.log")).unwrap();
    assert!(
        log.contains("offset=4"),
        "nbidle read the last page by its offset"
    );
}

/// Each scope docs/jupyterhub.md lists is needed: without it the Hub
/// refuses what nbidle does with it, and nbidle refuses to start, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listed_scope_is_needed_and_a_missing_one_is_named_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let without = |scope: &str| -> Vec<String> {
        HUB_SCOPES
            .iter()
            .filter(|s| **s != scope)
            .map(|s| s.to_string())
            .collect()
    };
    let services: Vec<(String, String, Vec<String>)> = HUB_SCOPES
        .iter()
        .map(|s| {
            let name = format!("no-{}", s.replace(':', "-"));
            (name.clone(), format!("{name}-token-for-tests"), without(s))
        })
        .collect();
    let hub = Hub::start(
        dir.path(),
        HubOptions {
            services: services.clone(),
            ..Default::default()
        },
    )
    .await;
    hub.create_users(&["ada"]).await;
    hub.start_server("ada", "", None).await;
    let call = |token: String, method: Method, url: String| {
        let http = hub.http.clone();
        async move {
            let r = http
                .request(method, url)
                .header("Authorization", format!("token {token}"))
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        }
    };
    let token_without = |scope: &str| {
        services
            .iter()
            .find(|(n, _, _)| *n == format!("no-{}", scope.replace(':', "-")))
            .unwrap()
            .1
            .clone()
    };
    let api = |p: &str| format!("{}{p}", hub.api_url);

    // With every listed scope, all of it works.
    let (s, body) = call(
        HUB_SERVICE_TOKEN.into(),
        Method::GET,
        api("users?include_stopped_servers"),
    )
    .await;
    assert!(s.is_success() && body.contains("\"servers\""), "{s} {body}");
    // list:users: listing users.
    let (s, _) = call(token_without("list:users"), Method::GET, api("users")).await;
    assert_eq!(s, 403, "listing users without list:users");
    // servers: a stop, and (through the read:servers it implies) the
    // servers in the list.
    let (s, _) = call(
        token_without("servers"),
        Method::DELETE,
        api("users/ada/server"),
    )
    .await;
    assert_eq!(s, 403, "stopping without servers");
    let (s, body) = call(
        token_without("servers"),
        Method::GET,
        api("users?include_stopped_servers"),
    )
    .await;
    assert!(
        s.is_success() && !body.contains("\"servers\""),
        "servers listed without servers: {body}"
    );
    // tokens: ada's probe token, which opens her server and no other, and
    // nbidle's own token opens none.
    let made = |token: String| {
        let http = hub.http.clone();
        let url = api("users/ada/tokens");
        async move {
            http.post(url)
                .header("Authorization", format!("token {token}"))
                .json(&json!({"scopes": ["access:servers!user=ada"], "expires_in": 600}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = made(HUB_SERVICE_TOKEN.into()).await;
    assert_eq!(r.status(), 201, "a probe token with tokens");
    let ada_token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(made(token_without("tokens")).await.status(), 403);
    let probe = format!("{}user/ada/api/kernels?no_track_activity=1", hub.public_url);
    let (s, _) = call(ada_token, Method::GET, probe.clone()).await;
    assert!(s.is_success(), "probe with ada's token: {s}");
    let (s, _) = call(HUB_SERVICE_TOKEN.into(), Method::GET, probe).await;
    assert!(
        s == 403 || s.is_redirection(),
        "nbidle's own token does not open a server: {s}"
    );

    // nbidle names the missing scope and does not start.
    for scope in HUB_SCOPES {
        let port = free_port();
        let mut cfg = nbidle_config(port, dir.path(), &[], &NbidleOptions::default());
        cfg["backend"] = hub.backend();
        cfg["backend"]["jupyterhub"]["token"] = json!(token_without(scope));
        let path = dir
            .path()
            .join(format!("nbidle-{}.yaml", scope.replace(':', "-")));
        std::fs::write(&path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_nbidle"))
                .arg("serve")
                .arg("--config")
                .arg(&path)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "nbidle started without {scope}");
        assert!(
            err.contains("backend.jupyterhub.token")
                && err.contains(&format!("lacks the scope {scope} (")),
            "without {scope}: {err}"
        );
    }
}

/// A Hub with ada's server running, nbidle on it with a 10 s idle time,
/// and an idle alert about this life of the server, past its idle time.
async fn ada_idle(dir: &std::path::Path) -> (Hub, Nbidle, Value) {
    let hub = Hub::start(dir, HubOptions::default()).await;
    hub.create_users(&["ada"]).await;
    hub.start_server("ada", "", None).await;
    let nbidle = nbidle_on(dir, &hub, "10s").await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let alert = payload(vec![idle_alert(NS, "ada", &rfc3339_from_now(0))]);
    (hub, nbidle, alert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_does_not_answer_is_unavailable_and_a_later_retry_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, nbidle, alert) = ada_idle(dir.path()).await;

    hub.freeze(true);
    let r = nbidle
        .http
        .get(nbidle.api("notebooks"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "the list while the Hub does not answer");
    let r = nbidle.webhook(&alert).await;
    assert!(r.status().is_server_error(), "the webhook: {}", r.status());
    hub.freeze(false);

    // Alertmanager's retry.
    let r = nbidle.webhook(&alert).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "the retry: {status} {body}");
    let v = nbidle
        .wait_status(NS, "ada", "stopped", Duration::from_secs(60))
        .await;
    assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{v}");
}

/// The Hub's process gone (an upgrade, a crash): the API answers 503 and
/// the webhook 5xx at once, so Alertmanager delivers again; once the Hub
/// is back the same delivery is answered (the Hub stopped its servers on
/// its way down: nothing is left to stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_is_down_is_unavailable_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, nbidle, alert) = ada_idle(dir.path()).await;

    hub.halt();
    let t = std::time::Instant::now();
    let r = nbidle
        .http
        .get(nbidle.api("notebooks"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 503, "the list while the Hub is down: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("jupyterhub")),
        "{body}"
    );
    let r = nbidle.webhook(&alert).await;
    assert!(r.status().is_server_error(), "the webhook: {}", r.status());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a Hub that is down is reported without waiting for a timeout: {:?}",
        t.elapsed()
    );

    hub.run().await;
    let r = nbidle.webhook(&alert).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(
        status.is_success(),
        "Alertmanager's next delivery: {status} {body}"
    );
    assert_eq!(nbidle.notebook(NS, "ada").await["status"], "stopped");
    assert_eq!(hub.server("ada", "").await.unwrap()["stopped"], true);
}

/// A server restarted from the Hub's own UI lives a new life: an alert
/// about the previous one does not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_about_a_servers_previous_life_does_not_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, nbidle, alert) = ada_idle(dir.path()).await;
    // The user stops and starts it in the Hub meanwhile.
    let (s, _) = hub.admin(Method::DELETE, "users/ada/server", None).await;
    assert!(s.is_success(), "{s}");
    hub.start_server("ada", "", None).await;

    let r = nbidle.webhook(&alert).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(
        status.is_success() && body.contains("stale"),
        "{status} {body}"
    );
    let server = hub.server("ada", "").await.unwrap();
    assert_eq!(server["ready"], true, "{server}");
    assert_eq!(nbidle.notebook(NS, "ada").await["status"], "running");
}

/// A spawner slower to stop than the Hub waits (`slow_stop_timeout`): the
/// Hub answers the `DELETE` with 202 and stops the server in the
/// background. nbidle reports it `stopping`, and a Start pressed meanwhile
/// waits for the stop to end instead of being refused, then starts the
/// same home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stop_is_reported_stopping_and_a_start_meanwhile_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        HubOptions {
            extra_config: r#"
import asyncio
from jupyterhub.spawner import SimpleLocalProcessSpawner
class SlowStop(SimpleLocalProcessSpawner):
    async def stop(self, now=False):
        await asyncio.sleep(10)
        return await super().stop(now=now)
c.JupyterHub.spawner_class = SlowStop
c.JupyterHub.tornado_settings = {"slow_stop_timeout": 1}
"#
            .into(),
            ..Default::default()
        },
    )
    .await;
    hub.create_users(&["ada"]).await;
    hub.start_server("ada", "", None).await;
    write_file(&hub, "ada", "kept.txt", "ada's work").await;
    let nbidle = nbidle_on(dir.path(), &hub, "1h").await;

    let r = nbidle.post(&format!("notebooks/{NS}/ada/stop")).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status} {v}");
    assert_eq!(v["status"], "stopping", "the Hub's 202: {v}");
    let (_, user) = hub.admin(Method::GET, "users/ada", None).await;
    assert_eq!(user["servers"][""]["pending"], "stop", "{user}");
    assert_eq!(nbidle.notebook(NS, "ada").await["status"], "stopping");

    let t = std::time::Instant::now();
    let r = nbidle.post(&format!("notebooks/{NS}/ada/start")).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    eprintln!("the start during the stop answered after {:?}", t.elapsed());
    assert!(
        status.is_success(),
        "a start while stopping: {status} {body}"
    );
    let log = hub.log();
    assert!(
        log.contains("ada") && !log.contains("400 POST /hub/api/users/ada/server"),
        "the start came after the stop, not refused by the Hub:\n{log}"
    );
    nbidle
        .wait_status(NS, "ada", "running", Duration::from_secs(120))
        .await;
    assert_eq!(read_file(&hub, "ada", "kept.txt").await, "ada's work");
}

/// The Hub's own rate limit, `concurrent_spawn_limit`, answers a start
/// with 429 and `Retry-After`: nbidle waits it out a few times, then
/// answers 503 (the caller retries), and a start once the limit has
/// lifted succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_spawn_limit_is_waited_out_then_reported_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        HubOptions {
            // One spawn at a time, a retry suggested after 1 s; `slow`'s
            // spawn holds the one place for 20 s.
            extra_config: r#"
import asyncio
c.JupyterHub.concurrent_spawn_limit = 1
# Not a config option of the Hub's (30-60 s): set where the Hub reads it.
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0, "spawn_throttle_retry_range": (1, 2)}
async def hold(spawner):
    if spawner.user.name == "slow":
        await asyncio.sleep(20)
c.Spawner.pre_spawn_hook = hold
"#
            .into(),
            ..Default::default()
        },
    )
    .await;
    hub.create_users(&["ada", "slow"]).await;
    hub.start_server("ada", "", None).await;
    let (s, _) = hub.admin(Method::DELETE, "users/ada/server", None).await;
    assert!(s.is_success(), "{s}");
    let nbidle = nbidle_on(dir.path(), &hub, "1h").await;
    let (s, body) = hub.admin(Method::POST, "users/slow/server", None).await;
    assert_eq!(s, 202, "slow's spawn is pending: {body}");

    let t = std::time::Instant::now();
    let r = nbidle.post(&format!("notebooks/{NS}/ada/start")).await;
    let waited = t.elapsed();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 503, "while the Hub limits spawns: {body}");
    assert!(body.contains("429"), "{body}");
    let limited = hub
        .log()
        .lines()
        .filter(|l| l.contains("429 POST /hub/api/users/ada/server (nbidle@"))
        .count();
    assert_eq!(
        limited,
        4,
        "the first call and three retries:\n{}",
        hub.log()
    );
    assert!(
        waited >= Duration::from_secs(3),
        "each Retry-After is waited out: {waited:?}"
    );
    assert_eq!(nbidle.notebook(NS, "ada").await["status"], "stopped");

    hub.wait_ready("slow", "").await;
    let r = nbidle.post(&format!("notebooks/{NS}/ada/start")).await;
    assert!(r.status().is_success(), "{}", r.status());
    nbidle
        .wait_status(NS, "ada", "running", Duration::from_secs(120))
        .await;
}

/// The fenced block of docs/jupyterhub.md in `lang` that starts with
/// `first`.
fn doc_block(lang: &str, first: &str) -> String {
    let doc = include_str!("../docs/jupyterhub.md");
    let fence = format!("```{lang}\n{first}");
    let start = doc
        .find(&fence)
        .unwrap_or_else(|| panic!("docs/jupyterhub.md has no {lang} block starting {first:?}"))
        + lang.len()
        + 4;
    let len = doc[start..].find("```").expect("the block ends");
    doc[start..start + len].to_string()
}

/// nbidle on a Hub whose `jupyterhub_config.py` registers it with
/// `registration` only: it starts (its start-up checks every scope it
/// needs), lists ada's running server and stops it.
async fn registered_by(registration: String) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        HubOptions {
            register_nbidle: false,
            extra_config: registration,
            ..Default::default()
        },
    )
    .await;
    hub.create_users(&["ada"]).await;
    hub.start_server("ada", "", None).await;
    let nbidle = nbidle_on(dir.path(), &hub, "1h").await;
    assert_eq!(
        statuses(&nbidle.list().await),
        vec![(format!("{NS}/ada"), "running".into())]
    );
    let r = nbidle.post(&format!("notebooks/{NS}/ada/stop")).await;
    assert!(r.status().is_success(), "{}", r.status());
    nbidle
        .wait_status(NS, "ada", "stopped", Duration::from_secs(60))
        .await;
}

/// docs/jupyterhub.md's `jupyterhub_config.py` lines (TLJH's
/// `jupyterhub_config.d`), as written, token file aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_jupyterhub_config_registers_nbidle() {
    let snippet = doc_block("python", "c.JupyterHub.services.append(");
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), format!("{HUB_SERVICE_TOKEN}\n")).unwrap();
    assert!(snippet.contains("/etc/nbidle/hub-token"), "{snippet}");
    let scopes = format!("{HUB_SCOPES:?}");
    assert!(
        snippet.contains(&scopes[1..scopes.len() - 1]),
        "the scopes the tests grant, {scopes}, are the docs': {snippet}"
    );
    registered_by(snippet.replace("/etc/nbidle/hub-token", &token.path().display().to_string()))
        .await;
}

/// docs/jupyterhub.md's Zero to JupyterHub values, turned into the Hub's
/// config as the chart's own `jupyterhub_config.py` does it: each
/// `hub.services` entry named by its key with its `api_token` (the
/// chart's Secret holds the given one), each `hub.loadRoles` entry named
/// by its key; and the chart's culler turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_helm_values_register_nbidle() {
    let values: serde_yaml::Value = serde_yaml::from_str(&doc_block("yaml", "hub:")).unwrap();
    assert_eq!(
        values["cull"]["enabled"],
        serde_yaml::Value::Bool(false),
        "the chart's culler is off"
    );
    let mut python = String::new();
    let services = values["hub"]["services"]
        .as_mapping()
        .expect("hub.services is a map");
    for (key, service) in services {
        let mut s: serde_json::Map<String, Value> =
            serde_json::from_value(serde_json::to_value(service).unwrap()).unwrap();
        s.entry("name")
            .or_insert(serde_json::to_value(key).unwrap());
        let given = s.remove("api_token").or_else(|| s.remove("apiToken"));
        assert_eq!(
            given,
            Some(json!("<the token>")),
            "the values give the token: {s:?}"
        );
        s.insert("api_token".into(), json!(HUB_SERVICE_TOKEN));
        python.push_str(&format!(
            "c.JupyterHub.services.append({})\n",
            Value::Object(s)
        ));
    }
    let roles = values["hub"]["loadRoles"]
        .as_mapping()
        .expect("hub.loadRoles is a map");
    for (key, role) in roles {
        let mut r: serde_json::Map<String, Value> =
            serde_json::from_value(serde_json::to_value(role).unwrap()).unwrap();
        r.entry("name")
            .or_insert(serde_json::to_value(key).unwrap());
        assert_eq!(r["scopes"], json!(HUB_SCOPES), "the scopes the tests grant");
        python.push_str(&format!(
            "c.JupyterHub.load_roles.append({})\n",
            Value::Object(r)
        ));
    }
    registered_by(python).await;
}

/// A person on the Hub, in a real browser: signs in on the Hub's login
/// page, opens JupyterLab on their server through the proxy and leaves it
/// open. nbidle's JupyterLab extension counts down and warns before the
/// stop (NotebookIdleSoon through a real Prometheus and Alertmanager), and
/// after it the tab says nbidle stopped the server, and why, instead of
/// the Hub's "Server unavailable or unreachable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_in_jupyterlab_on_the_hub_is_warned_and_told_of_the_stop() {
    let _ = (
        browser_modules(),
        chromium(),
        tool(&["node"]),
        jupyterlab_extension(),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = Hub::start(d, HubOptions::default()).await;
    hub.create_users(&["ada"]).await;
    let port = free_port();
    let am_port = free_port();
    // Long enough for the browser to sign in and open JupyterLab first.
    let opts = NbidleOptions {
        idle_after: "90s",
        ..Default::default()
    };
    let mut cfg = nbidle_config(port, d, &[], &opts);
    cfg["backend"] = hub.backend();
    cfg["autostop"]["warn_before"] = json!("40s");
    cfg["alertmanager"]["url"] = json!(format!("http://127.0.0.1:{am_port}"));
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    let nbidle = Nbidle::start_yaml(d, "nbidle", port, &yaml, &[]).await;
    let am = Alertmanager::start_at(d, &nbidle.config, am_port).await;
    let _prom = Prometheus::start(d, &nbidle, &am).await;
    // Started last: its idle time is for the browser alone.
    hub.start_server("ada", "", None).await;

    let settings = json!({"user": "ada", "shots": d});
    let mut driver = LabDriver::spawn_with_args(
        d,
        "hub.mjs",
        "hub",
        &[hub.public_url.clone(), settings.to_string()],
    );
    let timeout = Duration::from_secs(300);
    let open = driver.wait_for("open", timeout).await;
    let c = driver.wait_for("countdown", timeout).await;
    assert!(
        c.unix > open.unix,
        "the countdown came after the person opened JupyterLab: {}",
        c.line
    );
    let w = driver.wait_for("dialog", timeout).await;
    let text = w.line["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("This notebook will be stopped in"),
        "{}",
        w.line
    );
    let s = driver.wait_for("stopped", timeout).await;
    let v = nbidle.notebook(NS, "ada").await;
    assert_eq!(v["status"], "stopped", "{v}");
    assert_eq!(v["stopped_by"]["alertname"], "NotebookIdle", "{v}");
    let text = s.line["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("was stopped by nbidle") && text.contains("your files are kept"),
        "{}",
        s.line
    );
    assert_eq!(s.line["hub_lost_dialogs"], 0, "{}", s.line);
    // The Hub's own page, on the Hub's own origin (JupyterLab's hubHost
    // is empty when the Hub and the servers share it).
    assert_eq!(
        s.line["href"], "/hub/spawn/ada",
        "Start it again is the Hub's spawn page: {}",
        s.line
    );
    let server = hub.server("ada", "").await.expect("kept");
    assert_eq!(server["stopped"], true, "{server}");
    // Its Start is the Hub's: the same server, running again, in JupyterLab.
    driver.wait_for("started-again", timeout).await;
    driver.wait_for("done", timeout).await;
    nbidle
        .wait_status(NS, "ada", "running", Duration::from_secs(60))
        .await;
    assert_eq!(hub.server("ada", "").await.unwrap()["ready"], true);
}
