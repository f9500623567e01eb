//! The stopped-notebook page against someone guessing the notebook's
//! Jupyter token: wrong tokens from one client are slowed, as nbidle's
//! own sign-in slows them, whether sent in the URL, the Start form or
//! `Authorization`.

mod common;

use std::time::Duration;

use common::*;

const UP: Duration = Duration::from_secs(60);
const NAVIGATION: [(&str, &str); 2] = [("accept", "text/html"), ("sec-fetch-mode", "navigate")];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn visit(url: &str, token: &str) -> reqwest::Response {
    let mut req = client().get(format!("{url}?token={token}"));
    for (k, v) in NAVIGATION {
        req = req.header(k, v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn wrong_notebook_tokens_from_one_client_wait_longer_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sleeper("guessed");
    let url = spec.url.clone();
    let port = free_port();
    let opts = NbidleOptions {
        idle_after: "30m",
        ..Default::default()
    };
    let cfg = nbidle_config(port, dir.path(), &[spec], &opts);
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    let nb = Nbidle::start_yaml(dir.path(), "nbidle", port, &yaml, &[]).await;
    nb.wait_status("local", "guessed", "starting", UP).await;
    assert_eq!(nb.post("notebooks/local/guessed/stop").await.status(), 200);
    nb.wait_status("local", "guessed", "stopped", UP).await;
    eventually("the stopped-notebook page", UP, || async {
        let r = client().get(format!("{url}api")).send().await.ok()?;
        r.headers().contains_key("x-nbidle-stopped").then_some(())
    })
    .await;

    for i in 0..5 {
        let r = visit(&url, &format!("guess{i}")).await;
        assert_eq!(
            r.status(),
            503,
            "guess {i}: the page, saying the token is wrong"
        );
    }
    // Now every further try waits, the right token too, so guessing costs time.
    let r = visit(&url, JUPYTER_TOKEN).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.text().await.unwrap().contains("Too many wrong tokens"));
    let r = client()
        .post(format!("{url}_nbidle/start"))
        .header("authorization", "token guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "Authorization is slowed the same");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = client()
        .post(format!("{url}_nbidle/start"))
        .header("authorization", "token guess-again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "after the wait, one more try");
    let r = visit(&url, JUPYTER_TOKEN).await;
    assert_eq!(r.status(), 429, "and the wait doubled");
    assert_eq!(r.headers()["retry-after"], "2");
    // A page without a token is still served.
    let r = client()
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}
