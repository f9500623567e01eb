//! The stopped-notebook page, against the real nbidle binary and real
//! Jupyter 2.x servers (local backend): what a browser and JupyterLab's
//! requests get at a stopped notebook's URL, Start with and without the
//! notebook's token, the port handed back to Jupyter and taken again, a
//! port someone else took, `wake_on_visit`, the page's bounds, and the
//! whole of it in a real browser.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The headers Chromium sends for a navigation.
const NAVIGATION: [(&str, &str); 3] = [
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-dest", "document"),
];
/// JupyterLab's polls: fetch() from the page.
const POLL: [(&str, &str); 2] = [("accept", "*/*"), ("sec-fetch-mode", "cors")];
const UP: Duration = Duration::from_secs(60);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn marked(r: &reqwest::Response) -> bool {
    r.headers().contains_key("x-nbidle-stopped")
}

/// The value of the page's hidden input `name`.
fn hidden(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &page[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    post_form_as(url, form, None).await
}

/// The Start form, sent with nbidle's session cookie when `cookie`.
async fn post_form_as(url: &str, form: &[(&str, &str)], cookie: Option<&str>) -> reqwest::Response {
    let body: String = form
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.replace('%', "%25")
                    .replace('&', "%26")
                    .replace('+', "%2B")
                    .replace('?', "%3F")
                    .replace('=', "%3D")
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut req = client()
        .post(format!("{url}_nbidle/start"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .header("sec-fetch-site", "same-origin");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.body(body).send().await.unwrap()
}

/// Signs in to nbidle's page with `token`: the session cookie
/// (`nbidle_session=…`), which a browser sends to every port of the host.
async fn signed_in(nb: &Nbidle, token: &str) -> String {
    let r = client()
        .post(format!("{}/sign-in", nb.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed in with {token}");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

/// nbidle's own page's CSRF token for the session `cookie`.
async fn page_csrf(nb: &Nbidle, cookie: &str) -> String {
    let r = get(
        &format!("{}/", nb.url),
        &[("accept", "text/html"), ("cookie", cookie)],
    )
    .await;
    assert_eq!(r.status(), 200);
    hidden(&r.text().await.unwrap(), "csrf").expect("the page's CSRF token")
}

async fn start_nbidle(
    dir: &Path,
    notebooks: &[NotebookSpec],
    edit: impl FnOnce(&mut Value),
) -> Nbidle {
    let port = free_port();
    let opts = NbidleOptions {
        idle_after: "30m",
        ..Default::default()
    };
    let mut cfg = nbidle_config(port, dir, notebooks, &opts);
    edit(&mut cfg);
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    Nbidle::start_yaml(dir, "nbidle", port, &yaml, &[]).await
}

/// Stops `name` as its idle alert would.
async fn idle_stop(nb: &Nbidle, name: &str) {
    let r = nb
        .webhook(&payload(vec![idle_alert(
            "local",
            name,
            &rfc3339_from_now(60),
        )]))
        .await;
    assert_eq!(r.status(), 200);
    nb.wait_status("local", name, "stopped", UP).await;
}

/// Waits until the stopped page answers on `url`.
async fn page_served(url: &str) {
    eventually("the stopped-notebook page", UP, || async {
        let r = client().get(format!("{url}api")).send().await.ok()?;
        marked(&r).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_open_jupyterlab_reads_why_its_notebook_was_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let ada = jupyter_notebook("ada", JupyterVersion::Current);
    let url = ada.url.clone();
    let nb = start_nbidle(dir.path(), &[ada], |_| {}).await;
    wait_ready("jupyter", &format!("{url}api"), UP).await;
    idle_stop(&nb, "ada").await;
    page_served(&url).await;

    // The extension's poll (fetch, no token needed): 200 in its own shape.
    let r = get(&format!("{url}nbidle/state"), &POLL).await;
    assert_eq!(r.status(), 200);
    assert!(marked(&r));
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    let s = &v["state"];
    assert_eq!(s["version"], 1, "{v}");
    assert_eq!(s["notebook"], json!({"namespace": "local", "name": "ada"}));
    assert_eq!(s["phase"], "stopped", "{v}");
    assert_eq!(s["by"], "NotebookIdle", "{v}");
    assert_eq!(s["reason"], "after 30 min without activity", "{v}");
    let message = s["message"].as_str().unwrap();
    assert!(
        message.starts_with("ada was stopped at ")
            && message.ends_with(
                " UTC by NotebookIdle after 30 min without activity; your files are kept."
            ),
        "the stopped page's sentence: {message}"
    );
    let stopped_at = s["stopped_at"].as_f64().unwrap();
    let received_at = v["received_at"].as_f64().unwrap();
    assert!(
        stopped_at <= received_at && received_at - stopped_at < 120.0,
        "{v}"
    );
    assert_eq!(s["start_url"], json!(url));
    assert_eq!(s["page_url"], json!(format!("{}/", nb.url)));
    assert_eq!(v["requests"], json!([]));
    // Only the read: a PUT there is Jupyter's API, which is down.
    let r = client()
        .put(format!("{url}nbidle/state"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn a_stopped_notebook_explains_itself_and_its_token_starts_it() {
    let dir = tempfile::tempdir().unwrap();
    let ada = jupyter_notebook("ada", JupyterVersion::Current);
    let url = ada.url.clone();
    let nb = start_nbidle(dir.path(), &[ada], |_| {}).await;
    wait_ready("jupyter", &format!("{url}api"), UP).await;
    let http = reqwest::Client::new();
    let put = jupyter_api(
        &http,
        &url,
        reqwest::Method::PUT,
        "api/contents/kept.txt",
        Some(json!({"type": "file", "format": "text", "content": "still here"})),
    )
    .await
    .unwrap();
    assert!(put.status().is_success(), "{}", put.status());

    idle_stop(&nb, "ada").await;
    page_served(&url).await;

    // A browser: the page, saying why, with the Start form.
    let r = get(&format!("{url}lab"), &NAVIGATION).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "30");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(
        page.contains("ada was stopped at ")
            && page.contains(
                " UTC by NotebookIdle after 30 min without activity; your files are kept."
            ),
        "{page}"
    );
    assert!(
        page.contains("Start") && page.contains(&format!("{}/", nb.url)),
        "links to nbidle: {page}"
    );
    let csrf = hidden(&page, "csrf").expect("a CSRF token");
    assert_eq!(
        hidden(&page, "token"),
        None,
        "no token in the URL: none in the page"
    );

    // JupyterLab's requests: JSON 503 with Retry-After, never the page.
    for path in [
        "api/kernels",
        "api/sessions",
        "lab/api/settings",
        "api/kernels/x/channels",
    ] {
        let r = get(&format!("{url}{path}"), &POLL).await;
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["retry-after"], "30", "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["reason"], "stopped", "{path}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("by NotebookIdle"),
            "{v}"
        );
    }

    // The URL it was opened with carries the token: the form carries it.
    let r = get(&format!("{url}lab?token={JUPYTER_TOKEN}"), &NAVIGATION).await;
    let with_token = r.text().await.unwrap();
    assert_eq!(hidden(&with_token, "token").as_deref(), Some(JUPYTER_TOKEN));
    let r = get(&format!("{url}lab?token=guess"), &NAVIGATION).await;
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("not this notebook's token"));

    // Refused: no token, a wrong one, no or a wrong CSRF token, another site.
    let refused = [
        post_form(&url, &[("csrf", &csrf), ("next", "/lab")]).await,
        post_form(&url, &[("csrf", &csrf), ("token", "guess")]).await,
        post_form(&url, &[("token", JUPYTER_TOKEN)]).await,
        post_form(&url, &[("csrf", "0000"), ("token", JUPYTER_TOKEN)]).await,
        client()
            .post(format!("{url}_nbidle/start"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "cross-site")
            .body(format!("csrf={csrf}&token={JUPYTER_TOKEN}"))
            .send()
            .await
            .unwrap(),
        client()
            .post(format!("{url}_nbidle/start"))
            .header("authorization", "token guess")
            .send()
            .await
            .unwrap(),
    ];
    for (i, r) in refused.into_iter().enumerate() {
        assert_eq!(r.status(), 403, "refusal {i}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(nb.notebook("local", "ada").await["status"], "stopped");

    // The token: Jupyter starts on its own port, the files are there.
    let r = post_form(
        &url,
        &[("csrf", &csrf), ("token", JUPYTER_TOKEN), ("next", "/lab")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let waiting = r.text().await.unwrap();
    assert!(waiting.contains("Starting ada"), "{waiting}");
    assert!(
        waiting.contains(&format!("data-next=\"/lab?token={JUPYTER_TOKEN}\"")),
        "{waiting}"
    );
    assert!(
        waiting.contains("http-equiv=\"refresh\""),
        "works without JavaScript: {waiting}"
    );
    nb.wait_status("local", "ada", "running", UP).await;
    let r = jupyter_api(
        &http,
        &url,
        reqwest::Method::GET,
        "api/contents/kept.txt",
        None,
    )
    .await
    .unwrap();
    assert!(!marked(&r), "Jupyter's answer, not the page's");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"], "still here");
    let log = nb.log();
    assert!(
        log.contains("starting a stopped notebook from its page"),
        "{log}"
    );

    // A manual stop: the page takes the port again; a script starts it
    // with the token in Authorization.
    assert_eq!(nb.post("notebooks/local/ada/stop").await.status(), 200);
    nb.wait_status("local", "ada", "stopped", UP).await;
    page_served(&url).await;
    let r = get(&format!("{url}lab"), &NAVIGATION).await;
    assert!(r.text().await.unwrap().contains("through nbidle's API"));
    let r = client()
        .post(format!("{url}_nbidle/start"))
        .header("authorization", format!("token {JUPYTER_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    nb.wait_status("local", "ada", "running", UP).await;
    wait_ready("jupyter again", &format!("{url}api"), UP).await;
}

const OTHER_TOKEN: &str = "token-for-the-other-namespace";

#[tokio::test]
async fn a_person_signed_in_to_nbidle_starts_the_stopped_notebook_from_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let ada = jupyter_notebook("ada", JupyterVersion::Current);
    let url = ada.url.clone();
    let nb = start_nbidle(dir.path(), &[ada], |cfg| {
        cfg["auth"]["namespaced_api_tokens"] =
            json!([{"token": OTHER_TOKEN, "namespaces": ["other"]}]);
    })
    .await;
    wait_ready("jupyter", &format!("{url}api"), UP).await;
    idle_stop(&nb, "ada").await;
    page_served(&url).await;
    let visit = |cookie: String| {
        let url = url.clone();
        async move {
            let mut h = NAVIGATION.to_vec();
            h.push(("cookie", &cookie));
            get(&format!("{url}lab"), &h).await.text().await.unwrap()
        }
    };

    // A token for another namespace: today's page, and its session starts
    // nothing, with its own CSRF token or the stopped page's.
    let other = signed_in(&nb, OTHER_TOKEN).await;
    let page = visit(other.clone()).await;
    assert!(!page.contains("You are signed in"), "{page}");
    assert!(page.contains("name=\"token\""), "the token asked: {page}");
    let standin_csrf = hidden(&page, "csrf").unwrap();
    let other_csrf = page_csrf(&nb, &other).await;
    for csrf in [&other_csrf, &standin_csrf] {
        let r = post_form_as(&url, &[("csrf", csrf), ("next", "/lab")], Some(&other)).await;
        assert_eq!(r.status(), 403);
    }
    // An unknown session cookie: today's page.
    let page = visit("nbidle_session=0123".into()).await;
    assert!(!page.contains("You are signed in"), "{page}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(nb.notebook("local", "ada").await["status"], "stopped");

    // Signed in with a token for every namespace: Start without a token,
    // carrying the page's own CSRF token.
    let admin = signed_in(&nb, API_TOKEN).await;
    let page = visit(admin.clone()).await;
    assert!(
        page.contains("You are signed in to nbidle (a token for every namespace)."),
        "{page}"
    );
    assert!(!page.contains("name=\"token\""), "no token field: {page}");
    let csrf = hidden(&page, "csrf").unwrap();
    assert_eq!(csrf, page_csrf(&nb, &admin).await, "the page's CSRF token");
    // Without the cookie, that CSRF token starts nothing.
    let r = post_form(&url, &[("csrf", &csrf), ("next", "/lab")]).await;
    assert_eq!(r.status(), 403);
    let r = post_form_as(&url, &[("csrf", &csrf), ("next", "/lab")], Some(&admin)).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Starting ada"));
    nb.wait_status("local", "ada", "running", UP).await;
    let log = nb.log();
    assert!(
        log.contains("signed in to nbidle") && log.contains("every namespace"),
        "who started it is logged: {log}"
    );
}

/// What the waiting page's script does with one answer of `<base>api`.
fn waiting_page_after(status: u16, marked: bool, body: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = stdout_of(
        std::process::Command::new(tool(&["node"]))
            .arg(root.join("tests/browser/standin_wait.mjs"))
            .arg(root.join("src/backend/local/assets/standin.js"))
            .arg(status.to_string())
            .arg(if marked { "1" } else { "0" })
            .arg(body),
    );
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn the_waiting_page_opens_jupyterlab_only_once_jupyter_itself_answers() {
    // Jupyter's GET <base>api.
    let jupyter = waiting_page_after(200, false, r#"{"version": "2.14.2"}"#);
    assert_eq!(jupyter["redirected"], true, "{jupyter}");
    // Another program that took the port, a proxy's error page, any
    // answer that is not Jupyter's: waited out, no redirect loop.
    for (status, body) in [
        (200, "<html>another program</html>"),
        (200, r#"{"status": "ok"}"#),
        (502, "Bad Gateway"),
        (404, r#"{"version": "2.14.2"}"#),
    ] {
        let v = waiting_page_after(status, false, body);
        assert_eq!(v["redirected"], false, "{status} {body}: {v}");
        assert_eq!(v["polls"], 1);
    }
    // nbidle's stopped page still answering.
    let body = r#"{"error": "ada is starting.", "reason": "starting", "notebook": "ada"}"#;
    let v = waiting_page_after(503, true, body);
    assert_eq!(v["redirected"], false, "{v}");
}

#[tokio::test]
async fn a_port_taken_while_stopped_is_reported_not_fought_over() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sleeper("taken");
    let (url, port) = (
        spec.url.clone(),
        spec.url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap(),
    );
    let nb = start_nbidle(dir.path(), &[spec], |_| {}).await;
    nb.wait_status("local", "taken", "starting", UP).await;
    // Someone takes the port (the sleeper never binds it) before the stop.
    let other = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    other.set_nonblocking(true).unwrap();
    assert_eq!(nb.post("notebooks/local/taken/stop").await.status(), 200);
    let v = nb.wait_status("local", "taken", "stopped", UP).await;
    let v = if v["message"].is_null() {
        eventually("the port reported", UP, || async {
            let v = nb.notebook("local", "taken").await;
            (!v["message"].is_null()).then_some(v)
        })
        .await
    } else {
        v
    };
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("127.0.0.1:{port} is not free")),
        "{msg}"
    );
    assert!(nb.log().contains("not fought over"), "logged");
    // Not fought over: connections reach the other process for 5 s.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        drop(c);
        std::thread::sleep(Duration::from_millis(100));
        let accepted = other.accept();
        assert!(accepted.is_ok(), "the other process still has its port");
    }
    let warnings = nb.log().matches("not fought over").count();
    assert_eq!(warnings, 1, "reported once, not at every retry");
    // Once it is free, the page takes it (retries are at most 30 s apart).
    drop(other);
    page_served(&url).await;
    let v = nb.notebook("local", "taken").await;
    assert!(v["message"].is_null(), "cleared: {v}");
    let r = get(&url, &NAVIGATION).await;
    assert!(r.text().await.unwrap().contains("taken was stopped at "));

    // A crash leaves the notebook failed: the page says so.
    assert_eq!(nb.post("notebooks/local/taken/start").await.status(), 200);
    nb.wait_status("local", "taken", "starting", UP).await;
    let record = dir.path().join("data/notebooks/taken.json");
    let pid = eventually("the sleeper's pid recorded", UP, || async {
        let v: Value = serde_json::from_slice(&std::fs::read(&record).ok()?).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    })
    .await;
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    nb.wait_status("local", "taken", "failed", UP).await;
    page_served(&url).await;
    let page = get(&url, &NAVIGATION).await.text().await.unwrap();
    assert!(
        page.contains("taken is not running: process signal: 9"),
        "{page}"
    );
}

#[tokio::test]
async fn wake_on_visit_starts_on_a_browser_visit_never_on_api_polling() {
    let dir = tempfile::tempdir().unwrap();
    let (woken, asleep) = (
        jupyter_notebook("woken", JupyterVersion::Current),
        jupyter_notebook("asleep", JupyterVersion::Current),
    );
    let (url, asleep_url) = (woken.url.clone(), asleep.url.clone());
    let nb = start_nbidle(dir.path(), &[woken, asleep], |cfg| {
        let local = &mut cfg["backend"]["local"];
        local["wake_on_visit"] = json!(true);
        local["notebooks"][1]["wake_on_visit"] = json!(false);
    })
    .await;
    for (name, u) in [("woken", &url), ("asleep", &asleep_url)] {
        wait_ready(name, &format!("{u}api"), UP).await;
        assert_eq!(
            nb.post(&format!("notebooks/local/{name}/stop"))
                .await
                .status(),
            200
        );
        nb.wait_status("local", name, "stopped", UP).await;
        page_served(u).await;
    }
    // JupyterLab's polling, for a while: nothing starts.
    for _ in 0..10 {
        for path in ["api/kernels", "api/sessions", "lab"] {
            let r = get(&format!("{url}{path}"), &POLL).await;
            assert_eq!(r.status(), 503, "{path}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(nb.notebook("local", "woken").await["status"], "stopped");
    // The notebook that says false is not woken by a visit.
    let r = get(&format!("{asleep_url}lab"), &NAVIGATION).await;
    assert_eq!(r.status(), 503);
    // A visit wakes the other.
    let r = get(&format!("{url}lab"), &NAVIGATION).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Starting woken"));
    nb.wait_status("local", "woken", "running", UP).await;
    wait_ready("woken answering", &format!("{url}api"), UP).await;
    assert_eq!(nb.notebook("local", "asleep").await["status"], "stopped");
}

#[tokio::test]
async fn a_notebook_found_stopped_at_start_up_gets_its_page_and_shutdown_frees_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sleeper("kept");
    let url = spec.url.clone();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut nb = start_nbidle(dir.path(), &[spec], |_| {}).await;
    nb.wait_status("local", "kept", "starting", UP).await;
    assert_eq!(nb.post("notebooks/local/kept/stop").await.status(), 200);
    nb.wait_status("local", "kept", "stopped", UP).await;
    page_served(&url).await;
    assert!(nb.proc.terminate().unwrap().success());
    // nbidle's exit closes the page's listener.
    std::net::TcpListener::bind(&addr).expect("the port is free once nbidle has exited");
    let yaml = std::fs::read_to_string(&nb.config).unwrap();
    let port: u16 = nb.url.rsplit(':').next().unwrap().parse().unwrap();
    drop(nb);
    let again = Nbidle::start_yaml(dir.path(), "nbidle-again", port, &yaml, &[]).await;
    page_served(&url).await;
    let page = get(&url, &NAVIGATION).await.text().await.unwrap();
    assert!(
        page.contains("kept was stopped at ") && page.contains("through nbidle's API"),
        "{page}"
    );
    assert_eq!(again.notebook("local", "kept").await["status"], "stopped");
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn a_stopped_page_bounds_connections_heads_and_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sleeper("held");
    let url = spec.url.clone();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let nb = start_nbidle(dir.path(), &[spec], |_| {}).await;
    nb.wait_status("local", "held", "starting", UP).await;
    assert_eq!(nb.post("notebooks/local/held/stop").await.status(), 200);
    nb.wait_status("local", "held", "stopped", UP).await;
    page_served(&url).await;
    let pid = nb.proc.pid();
    let before = open_fds(pid);
    // 300 silent connections: at most 32 are kept open by nbidle.
    let mut silent = Vec::new();
    for _ in 0..300 {
        if let Ok(c) = tokio::net::TcpStream::connect(&addr).await {
            silent.push(c);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = open_fds(pid);
    assert!(
        during <= before + 32 + 4,
        "descriptors: {before} before, {during} with 300 clients"
    );
    // nbidle's own API is not affected.
    assert_eq!(nb.notebook("local", "held").await["status"], "stopped");
    // Silent connections are closed after the header timeout (10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = open_fds(pid);
    assert!(
        after <= before + 2,
        "descriptors: {before} before, {after} after the timeout"
    );
    drop(silent);
    // A huge head is refused, not buffered.
    let huge = "x".repeat(64 * 1024);
    let r = client().get(&url).header("x-big", huge).send().await;
    assert!(r.map(|r| r.status().as_u16()).unwrap_or(431) == 431);
    // A large form is refused without being read whole.
    let r = client()
        .post(format!("{url}_nbidle/start"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", "a".repeat(1 << 20)))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 403);
    }
    assert_eq!(nb.notebook("local", "held").await["status"], "stopped");
    // And the page still answers.
    let r = get(&url, &NAVIGATION).await;
    assert_eq!(r.status(), 503);
}

/// Whether nbidle keeps `c` open (`false`: it closed it).
fn held(c: &std::net::TcpStream) -> bool {
    use std::io::Read;
    c.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    let read = (&*c).read(&mut buf);
    matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// `n` silent connections to `addr`.
fn connect(addr: &str, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect()
}

#[tokio::test]
async fn all_stopped_pages_together_hold_at_most_256_connections() {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<NotebookSpec> = (0..9).map(|i| sleeper(&format!("cap{i}"))).collect();
    let addrs: Vec<String> = specs
        .iter()
        .map(|s| {
            s.url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    let urls: Vec<String> = specs.iter().map(|s| s.url.clone()).collect();
    let nb = start_nbidle(dir.path(), &specs, |_| {}).await;
    for (i, url) in urls.iter().enumerate() {
        let name = format!("cap{i}");
        nb.wait_status("local", &name, "starting", UP).await;
        let path = format!("notebooks/local/{name}/stop");
        assert_eq!(nb.post(&path).await.status(), 200);
        nb.wait_status("local", &name, "stopped", UP).await;
        // Asked without keep-alive: no connection of the client's is left
        // holding a place.
        eventually("the stopped-notebook page", UP, || async {
            let once = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let r = once.get(format!("{url}api")).send().await.ok()?;
            let served = marked(&r);
            r.bytes().await.ok()?;
            served.then_some(())
        })
        .await;
    }
    // A starting notebook's readiness probe wakes once more after the stop
    // (within 5 s) and asks the page. nbidle keeps no idle probe
    // connection, and any other closes after the head's timeout (10 s):
    // none is left after 16 s.
    tokio::time::sleep(Duration::from_secs(16)).await;
    // Silent connections are closed after 10 s: what follows takes well
    // under that.
    // One page: 32 held, the 33rd closed at once.
    let mut open = connect(&addrs[0], 33);
    // Seven more pages, 32 each: 256 in all.
    for addr in &addrs[1..8] {
        open.extend(connect(addr, 32));
    }
    // Accepted before a ninth page, under its own cap, is asked: it is at
    // the shared one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let beyond = connect(&addrs[8], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first: Vec<bool> = open[..33].iter().map(held).collect();
    assert!(
        first[..32].iter().all(|h| *h),
        "32 held on one page: {first:?}"
    );
    assert!(!first[32], "the 33rd on one page is closed at once");
    let held_all = open.iter().filter(|c| held(c)).count();
    let per: Vec<usize> = open[33..]
        .chunks(32)
        .map(|c| c.iter().filter(|c| held(c)).count())
        .collect();
    assert_eq!(held_all, 256, "held across eight pages: {per:?}");
    assert!(
        beyond.iter().all(|c| !held(c)),
        "beyond 256, a ninth page's connections are closed at once"
    );
    // nbidle's own API answers meanwhile.
    assert_eq!(nb.notebook("local", "cap8").await["status"], "stopped");
    // Once they are closed, every page answers again.
    drop((open, beyond));
    for url in &urls {
        let r = eventually("the page answering again", UP, || async {
            let r = client()
                .get(url)
                .header("accept", "text/html")
                .send()
                .await
                .ok()?;
            (r.status() == 503 && marked(&r)).then_some(r)
        })
        .await;
        assert!(r.text().await.unwrap().contains("was stopped at "));
    }
}

/// A real JupyterLab in headless Chromium: stopped under it, the tab
/// reloaded shows why, Start brings JupyterLab back. The screenshot is
/// docs/img/stopped-notebook.png.
#[tokio::test]
async fn in_a_browser_the_stopped_page_says_why_and_start_loads_jupyterlab() {
    let _ = (browser_modules(), chromium(), tool(&["node"]));
    let dir = tempfile::tempdir().unwrap();
    let lab = jupyterlab_notebook(dir.path(), "ada", None);
    let url = lab.url.clone();
    // The open tab is activity, which the re-check would see: the alert
    // stands here for an idle time that has passed.
    let nb = start_nbidle(dir.path(), &[lab], |cfg| {
        cfg["autostop"]["recheck"] = json!(false);
    })
    .await;
    wait_ready("jupyterlab", &format!("{url}api"), Duration::from_secs(120)).await;
    let mut tab = LabDriver::spawn_script(dir.path(), "standin.mjs", &url, "stopped", 0);
    tab.wait_for("lab-open", Duration::from_secs(120)).await;
    idle_stop(&nb, "ada").await;

    let polled = tab.wait_for("lab-polled", UP).await;
    assert!(
        polled.line["stoppedAnswers"].as_u64().unwrap() > 0,
        "JupyterLab's requests reached the page: {}",
        polled.line
    );
    assert_eq!(
        polled.line["stoppedAnswers"], polled.line["jsonAnswers"],
        "every one a JSON 503: {}",
        polled.line
    );
    let shown = tab.wait_for("stopped-page", UP).await;
    assert_eq!(shown.line["heading"], "ada is stopped", "{}", shown.line);
    let reason = shown.line["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("ada was stopped at ")
            && reason
                .ends_with("by NotebookIdle after 30 min without activity; your files are kept."),
        "{reason}"
    );
    tab.wait_for("screenshot", UP).await;
    let asked = tab.wait_for("token-asked", UP).await;
    assert_eq!(
        asked.line["asked"], true,
        "JupyterLab drops ?token= from its URL: {}",
        asked.line
    );
    tab.wait_for("waiting", UP).await;
    let again = tab.wait_for("lab-again", Duration::from_secs(120)).await;
    eprintln!("JupyterLab loaded again at {}", again.line["url"]);
    // JupyterLab answered the browser; nbidle's own readiness probe may
    // see it a moment later.
    nb.wait_status("local", "ada", "running", Duration::from_secs(30))
        .await;
    let shot = dir.path().join("stopped-notebook.png");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::copy(&shot, docs.join("stopped-notebook.png")).unwrap();
}
