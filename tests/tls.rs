//! TLS on nbidle's listener with certificates made here: a real
//! Alertmanager delivers an idle alert over TLS (with a client certificate)
//! using the config nbidle generates, a real Prometheus scrapes nbidle's
//! service discovery, exporter and `/metrics` over TLS, and a renewed
//! certificate is served without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_yaml::Value as Yaml;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new(tool(&["openssl"])).current_dir(dir).args(args));
}

/// A CA and a certificate it signed for `cn`, for server or client use.
fn issue(dir: &Path, name: &str, cn: &str, usage: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
}

fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=nbidle test CA",
        ],
    );
}

/// `curl` over TLS with the test CA and the client certificate.
fn curl(dir: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(tool(&["curl"]))
        .current_dir(dir)
        .args(["-sS", "--max-time", "5", "--cacert", "ca.crt"])
        .args(["--cert", "client.crt", "--key", "client.key"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap()
}

fn curl_ok(dir: &Path, url: &str, extra: &[&str]) -> Option<String> {
    let out = curl(dir, url, extra);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The subject of the certificate nbidle serves now.
fn served_subject(dir: &Path, port: u16) -> String {
    let out = Command::new(tool(&["openssl"]))
        .current_dir(dir)
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args([
            "-CAfile",
            "ca.crt",
            "-cert",
            "client.crt",
            "-key",
            "client.key",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no certificate served: {text}"))
        .to_string()
}

fn set(doc: &mut Yaml, section: &str, key: &str, value: Yaml) {
    let m = doc.as_mapping_mut().unwrap();
    let s = m
        .entry(Yaml::String(section.into()))
        .or_insert_with(|| Yaml::Mapping(Default::default()));
    s.as_mapping_mut()
        .unwrap()
        .insert(Yaml::String(key.into()), value);
}

#[tokio::test]
async fn alertmanager_delivers_and_prometheus_scrapes_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d);
    issue(d, "server", "nbidle first", "serverAuth");
    issue(d, "client", "prometheus and alertmanager", "clientAuth");
    let web = d.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    .unwrap();

    let port = free_port();
    let mut doc: Yaml = serde_yaml::to_value(nbidle_config(
        port,
        d,
        &[sleeper("nb")],
        &NbidleOptions::default(),
    ))
    .unwrap();
    set(
        &mut doc,
        "server",
        "web_config_file",
        Yaml::String(web.display().to_string()),
    );
    let client_tls: Yaml = serde_yaml::from_str(&format!(
        "{{ca_file: {ca}, cert_file: {crt}, key_file: {key}}}",
        ca = d.join("ca.crt").display(),
        crt = d.join("client.crt").display(),
        key = d.join("client.key").display(),
    ))
    .unwrap();
    set(&mut doc, "alertmanager", "tls_config", client_tls.clone());
    set(&mut doc, "prometheus", "tls_config", client_tls.clone());
    let config = d.join("nbidle.yaml");
    std::fs::write(&config, serde_yaml::to_string(&doc).unwrap()).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nbidle"));
    cmd.arg("serve").arg("--config").arg(&config);
    let _nbidle = Proc::spawn("nbidle", &mut cmd, &d.join("nbidle.log"));
    let base = format!("https://127.0.0.1:{port}");
    eventually("nbidle ready over TLS", Duration::from_secs(30), || async {
        curl_ok(d, &format!("{base}/readyz"), &[])
    })
    .await;
    let api = |path: &str| format!("{base}/api/v1/notebooks/local/nb{path}");
    let bearer = format!("Authorization: Bearer {API_TOKEN}");
    // The API answers over TLS (the notebook is a `sleep`: it starts, never
    // serves).
    let state = curl_ok(d, &api(""), &["-H", &bearer]).expect("API over TLS");
    assert!(state.contains("\"starting\""), "{state}");

    // Plain HTTP and clients without a certificate get nothing.
    let plain = Command::new(tool(&["curl"]))
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/livez"),
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("ok"));
    let anonymous = Command::new(tool(&["curl"]))
        .current_dir(d)
        .args([
            "-sS",
            "--max-time",
            "5",
            "--cacert",
            "ca.crt",
            &format!("{base}/livez"),
        ])
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "a client without a certificate was served"
    );

    // Alertmanager with the generated config: https and the tls_config.
    let am_cfg = nbidle_cli(&[
        "manifests",
        "alertmanager",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        am_cfg.contains(&format!("url: {base}/webhook/alertmanager")),
        "{am_cfg}"
    );
    assert!(am_cfg.contains("tls_config:"), "{am_cfg}");
    std::fs::write(d.join("alertmanager.yml"), &am_cfg).unwrap();
    run(Command::new(tool(&["amtool"]))
        .args(["check-config", d.join("alertmanager.yml").to_str().unwrap()]));
    let am_port = free_port();
    let _am = Proc::spawn(
        "alertmanager",
        Command::new(tool(&["prometheus-alertmanager", "alertmanager"]))
            .arg(format!(
                "--config.file={}",
                d.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", d.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address="),
        &d.join("alertmanager.log"),
    );
    let am = format!("http://127.0.0.1:{am_port}");
    wait_ready(
        "alertmanager",
        &format!("{am}/-/ready"),
        Duration::from_secs(30),
    )
    .await;
    let alert = serde_json::json!([{
        "labels": {"alertname": "NotebookIdle", "nbidle_action": "stop",
                   "namespace": "local", "notebook": "nb"},
        "startsAt": rfc3339_from_now(0),
    }]);
    let r = reqwest::Client::new()
        .post(format!("{am}/api/v2/alerts"))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let stopped = eventually(
        "stopped by the alert over TLS",
        Duration::from_secs(30),
        || async { curl_ok(d, &api(""), &["-H", &bearer]).filter(|b| b.contains("\"stopped\"")) },
    )
    .await;
    assert!(stopped.contains("idle-alert"), "{stopped}");

    // Prometheus with the generated scrape jobs (service discovery and
    // exporter over TLS) and a job for nbidle's own /metrics.
    let scrape = nbidle_cli(&[
        "manifests",
        "prometheus-scrape",
        "--config",
        config.to_str().unwrap(),
    ]);
    let scrape: Yaml = serde_yaml::from_str(&scrape).unwrap();
    let mut jobs = scrape["scrape_configs"].as_sequence().unwrap().clone();
    let mut own: Yaml = serde_yaml::from_str(&format!(
        "{{job_name: nbidle, scheme: https, scrape_interval: 1s, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}"
    ))
    .unwrap();
    own.as_mapping_mut()
        .unwrap()
        .insert(Yaml::String("tls_config".into()), client_tls);
    jobs.push(own);
    let prom = Prometheus::start_with_jobs(d, jobs).await;
    run(Command::new(tool(&["promtool"])).args([
        "check",
        "config",
        d.join("prometheus.yml").to_str().unwrap(),
    ]));
    eventually(
        "nbidle's jobs up over TLS",
        Duration::from_secs(30),
        || async {
            let targets = prom.active_targets().await;
            let up = |job: &str| {
                targets
                    .iter()
                    .any(|t| t["labels"]["job"] == job && t["health"] == "up")
            };
            (up("nbidle") && up("nbidle-exporter")).then_some(())
        },
    )
    .await;

    // A renewed certificate is served to new connections, no restart.
    assert!(served_subject(d, port).contains("nbidle first"));
    issue(d, "renewed", "nbidle renewed", "serverAuth");
    for ext in ["crt", "key"] {
        let tmp: PathBuf = d.join(format!("server.{ext}.new"));
        std::fs::copy(d.join(format!("renewed.{ext}")), &tmp).unwrap();
        std::fs::rename(&tmp, d.join(format!("server.{ext}"))).unwrap();
    }
    eventually(
        "renewed certificate served",
        Duration::from_secs(10),
        || async {
            served_subject(d, port)
                .contains("nbidle renewed")
                .then_some(())
        },
    )
    .await;
    assert!(curl_ok(d, &format!("{base}/livez"), &[]).is_some());
}
