//! The generated artifacts: checked-in rules and Alertmanager config match
//! the generator, promtool and amtool accept them, promtool's unit tests of
//! the rules pass, and `nbidle check` names the key at fault.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn repo(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn checked_in_rules_match_the_generator() {
    assert_eq!(
        std::fs::read_to_string(repo("rules/nbidle.rules.yml")).unwrap(),
        nbidle_cli(&["rules"]),
        "rules/ drifted from the generator: run `make rules`"
    );
    assert_eq!(
        std::fs::read_to_string(repo("rules/nbidle-prometheusrule.yaml")).unwrap(),
        nbidle_cli(&["rules", "--format", "prometheus-rule"]),
        "rules/ drifted from the generator: run `make rules`"
    );
    assert_eq!(
        std::fs::read_to_string(repo("rules/tests/all-signals.rules.yml")).unwrap(),
        nbidle_cli(&[
            "rules",
            "--config",
            &repo("rules/tests/all-signals.nbidle.yaml")
        ]),
        "rules/tests/ drifted from the generator: run `make rules`"
    );
    assert_eq!(
        std::fs::read_to_string(repo("alertmanager/alertmanager.yml")).unwrap(),
        nbidle_cli(&[
            "manifests",
            "alertmanager",
            "--config",
            &repo("demo/nbidle.yaml")
        ]),
        "alertmanager/ drifted from the generator: run `make rules`"
    );
    // Each overlay's config generates its own deploy/monitoring/<backend>.
    for backend in ["kubeflow", "statefulset"] {
        let cfg = repo(&format!("deploy/overlays/{backend}/nbidle.yaml"));
        for (file, args) in [
            (
                "prometheusrule.yaml",
                vec!["rules", "--format", "prometheus-rule"],
            ),
            ("podmonitor.yaml", vec!["manifests", "pod-monitor"]),
            ("servicemonitor.yaml", vec!["manifests", "service-monitor"]),
            (
                "alertmanagerconfig.yaml",
                vec!["manifests", "alertmanager-config"],
            ),
        ] {
            let mut args = args;
            args.extend(["--config", &cfg]);
            let path = format!("deploy/monitoring/{backend}/{file}");
            assert_eq!(
                std::fs::read_to_string(repo(&path)).unwrap(),
                nbidle_cli(&args),
                "{path} drifted from deploy/overlays/{backend}/nbidle.yaml: run `make rules`"
            );
        }
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let promtool = tool(&["promtool"]);
    run_ok(Command::new(&promtool).args(["check", "rules", &repo("rules/nbidle.rules.yml")]));
    for tests in [
        "rules/tests/nbidle_test.yml",
        "rules/tests/all_signals_test.yml",
        // The local backend's cpu guard, in the same default rules.
        "rules/tests/local_cpu_test.yml",
    ] {
        let out = run_ok(Command::new(&promtool).args(["test", "rules", &repo(tests)]));
        assert!(out.contains("SUCCESS"), "{tests}: {out}");
    }
    // Rules generated from the demo config (2m, every 10s) are valid too.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("demo.rules.yml");
    std::fs::write(
        &f,
        nbidle_cli(&["rules", "--config", &repo("demo/nbidle.yaml")]),
    )
    .unwrap();
    run_ok(Command::new(&promtool).arg("check").arg("rules").arg(&f));
}

#[test]
fn amtool_accepts_every_generated_alertmanager_config() {
    let amtool = tool(&["amtool"]);
    run_ok(Command::new(&amtool).args(["check-config", &repo("alertmanager/alertmanager.yml")]));
    let dir = tempfile::tempdir().unwrap();
    let base = "backend: {kind: local, local: {}}\nauth: {api_tokens: [a], ";
    let variants = [
        ("token-file.yaml", format!("{base}webhook_token_file: token}}\n")),
        ("basic.yaml", format!("{base}webhook_basic_auth: {{username: am, password: pw}}}}\n")),
        ("url.yaml", format!("{base}webhook_token: t}}\nalertmanager: {{webhook_url: \"http://nbidle.monitoring.svc:9877/webhook/alertmanager\"}}\n")),
    ];
    std::fs::write(dir.path().join("token"), "secret\n").unwrap();
    for (name, yaml) in variants {
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, yaml).unwrap();
        let am = dir.path().join(format!("{name}.am.yml"));
        std::fs::write(
            &am,
            nbidle_cli(&[
                "manifests",
                "alertmanager",
                "--config",
                cfg.to_str().unwrap(),
            ]),
        )
        .unwrap();
        run_ok(Command::new(&amtool).arg("check-config").arg(&am));
    }
}

#[test]
fn check_accepts_the_demo_and_names_the_bad_key() {
    nbidle_cli(&["check", "--config", &repo("demo/nbidle.yaml")]);
    let dir = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(repo("demo/nbidle.yaml")).unwrap();
    let cases = [
        (
            demo.replace("idle_after: 2m", "idle_after: two minutes"),
            "autostop.idle_after",
        ),
        (
            demo.replace("idle_after: 2m", "idel_after: 2m"),
            "idel_after",
        ),
        (
            demo.replace("url: \"http://127.0.0.1:8888/\"", "url: \"127.0.0.1:8888\""),
            "backend.local.notebooks[0].url",
        ),
        (
            demo.replace("labels: \"k8s-app-pod:true\"", "labels: \"k8s-app-pod\""),
            "prometheus.labels",
        ),
        (
            demo.replace("  webhook_token: \"demo-webhook-token\"\n", ""),
            "auth.webhook_token",
        ),
        // One token for the webhook and the API: holding one opens both.
        (
            demo.replace("[\"demo-api-token\"]", "[\"demo-api-token\", \"demo-webhook-token\"]"),
            "auth.api_tokens[1]",
        ),
        (
            demo.replace("  api_tokens:", "  namespaced_api_tokens: [{token: demo-webhook-token, namespaces: [team-a]}]\n  api_tokens:"),
            "auth.namespaced_api_tokens[0].token",
        ),
        // A team's token that is also an admin token would see everything.
        (
            demo.replace("  api_tokens:", "  namespaced_api_tokens: [{token: demo-api-token, namespaces: [team-a]}]\n  api_tokens:"),
            "auth.namespaced_api_tokens[0].token",
        ),
        // Basic credentials are `user:password`; a `:` in the user is ambiguous.
        (
            demo.replace("  webhook_token: \"demo-webhook-token\"\n", "  webhook_basic_auth: {username: \"a:b\", password: pw}\n"),
            "auth.webhook_basic_auth.username",
        ),
        // An empty path would resolve to the config's own directory.
        (
            demo.replace("workdir: \"../data/demo/workspace\"", "workdir: \"\""),
            "backend.local.notebooks[0].workdir",
        ),
        (
            demo.replace("data_dir: \"../data/demo/state\"", "data_dir: \"\""),
            "data_dir",
        ),
    ];
    for (yaml, key) in cases {
        let f = dir.path().join("bad.yaml");
        std::fs::write(&f, &yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_nbidle"))
            .arg("check")
            .arg("--config")
            .arg(&f)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}: accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "error for {key} does not name it: {err}");
    }
    assert!(Path::new(&repo("demo/nbidle.yaml")).exists());
}

/// `rules`, `rules --explain` and every `manifests` kind refuse a config
/// that `check` refuses, exit non-zero and name the key; only the files the
/// config names are left unread (they are read where nbidle runs).
#[test]
fn generators_refuse_what_check_refuses_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], yaml: &str| {
        let f = dir.path().join("nbidle.yaml");
        std::fs::write(&f, yaml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_nbidle"))
            .args(args)
            .arg("--config")
            .arg(&f)
            .output()
            .unwrap()
    };
    let generators: [&[&str]; 8] = [
        &["rules"],
        &["rules", "--explain"],
        &["rules", "--format", "prometheus-rule"],
        &["manifests", "prometheus-scrape"],
        &["manifests", "alertmanager"],
        &["manifests", "pod-monitor"],
        &["manifests", "service-monitor"],
        &["manifests", "alertmanager-config"],
    ];
    let tokens = "auth: {webhook_token: w, api_tokens: [a]}\n";
    let cases = [
        // A guard the local backend cannot feed (no GPU series per
        // notebook): a veto that never vetoes.
        (
            format!("{tokens}backend: {{kind: local, local: {{}}}}\nautostop: {{guards: {{gpu: {{}}}}}}\n"),
            "autostop.guards.gpu",
        ),
        (
            "auth: {api_tokens: [a]}\nbackend: {kind: kubeflow}\n".to_string(),
            "auth.webhook_token",
        ),
        // One token for the webhook and the API.
        (
            "auth: {webhook_token: a, api_tokens: [a]}\nbackend: {kind: kubeflow}\n".to_string(),
            "auth.api_tokens[0]",
        ),
        // One file for the webhook and the metrics: one token, unread or not.
        (
            "auth: {webhook_token_file: /absent/t, api_tokens: [a], metrics_token_file: /absent/t}\nbackend: {kind: kubeflow}\n".to_string(),
            "auth.metrics_token_file",
        ),
    ];
    for (yaml, key) in &cases {
        assert!(
            !run(&["check"], yaml).status.success(),
            "check accepts {yaml}"
        );
        for args in generators {
            let out = run(args, yaml);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "nbidle {args:?} accepted {yaml}");
            assert!(
                err.contains(key),
                "nbidle {args:?} does not name {key}: {err}"
            );
            assert!(out.stdout.is_empty(), "nbidle {args:?} printed output");
        }
    }
    // Token files absent here (a cluster's pod mounts them): check refuses,
    // the generators work, as `make rules` does for deploy/overlays.
    let mounted = "auth: {webhook_token_file: /absent/w, api_tokens_file: /absent/a}\nbackend: {kind: kubeflow}\n";
    let out = run(&["check"], mounted);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.webhook_token_file"));
    for args in generators {
        let out = run(args, mounted);
        assert!(
            out.status.success(),
            "nbidle {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Tokens read from files are held to the same rules as inline ones, and a
/// token file others may read or write is named in a warning (still exit 0).
#[test]
fn check_refuses_shared_tokens_from_files_and_warns_about_open_token_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let check = |yaml: &str| {
        let f = dir.path().join("nbidle.yaml");
        std::fs::write(&f, yaml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_nbidle"))
            .args(["check", "--config"])
            .arg(&f)
            .output()
            .unwrap()
    };
    write("webhook-token", "shared\n", 0o600);
    write("api-tokens", "# admins\nother\nshared\n", 0o600);
    let base = "backend: {kind: local, local: {}}\n";
    let out = check(&format!(
        "{base}auth: {{webhook_token_file: webhook-token, api_tokens_file: api-tokens}}\n"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a shared token was accepted");
    assert!(
        err.contains("auth.api_tokens_file") && err.contains("auth.webhook_token_file"),
        "{err}"
    );
    write("team-token", "other\n", 0o600);
    let out = check(&format!(
        "{base}auth: {{webhook_token: w, api_tokens_file: api-tokens, namespaced_api_tokens: [{{token_file: team-token, namespaces: [team-a]}}]}}\n"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a team token equal to an admin token was accepted"
    );
    assert!(
        err.contains("auth.namespaced_api_tokens[0].token_file"),
        "{err}"
    );

    // Separate tokens, one of them in a file anyone may read: ok, with a warning.
    write("webhook-token", "webhook\n", 0o644);
    write("metrics-token", "metrics\n", 0o600);
    let out = check(&format!(
        "{base}auth: {{webhook_token_file: webhook-token, api_tokens_file: api-tokens, metrics_token_file: metrics-token}}\n"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("auth.webhook_token_file")
            && warnings[0].contains(&dir.path().join("webhook-token").display().to_string()),
        "{err}"
    );
    write("webhook-token", "webhook\n", 0o620);
    let out = check(&format!(
        "{base}auth: {{webhook_token_file: webhook-token, api_tokens_file: api-tokens}}\n"
    ));
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auth.webhook_token_file"),
        "group-writable"
    );
    write("webhook-token", "webhook\n", 0o400);
    let out = check(&format!(
        "{base}auth: {{webhook_token_file: webhook-token, api_tokens_file: api-tokens}}\n"
    ));
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "an owner-only file is fine"
    );
}

/// With a metrics token, the generated scrape config sends it to nbidle's
/// service discovery and exporter, never to the notebooks, and promtool
/// accepts it; the ServiceMonitor reads it from a Secret.
#[test]
fn generated_scrape_configs_send_the_metrics_token_to_nbidle_only() {
    let promtool = tool(&["promtool"]);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, "m\n").unwrap();
    let base = "backend: {kind: local, local: {}}\nauth: {webhook_token: w, api_tokens: [a]";
    let file_auth =
        serde_json::json!({"type": "Bearer", "credentials_file": token_file.display().to_string()});
    let inline_auth = serde_json::json!({"type": "Bearer", "credentials": "m"});
    for (name, auth, expected) in [
        ("open", "", None),
        (
            "file",
            ", metrics_token_file: metrics-token",
            Some(&file_auth),
        ),
        ("inline", ", metrics_token: m", Some(&inline_auth)),
    ] {
        let cfg = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&cfg, format!("{base}{auth}}}\n")).unwrap();
        let cfg = cfg.to_str().unwrap();
        let text = nbidle_cli(&["manifests", "prometheus-scrape", "--config", cfg]);
        let prom = dir.path().join(format!("{name}.prometheus.yml"));
        std::fs::write(&prom, &text).unwrap();
        run_ok(
            Command::new(&promtool)
                .arg("check")
                .arg("config")
                .arg(&prom),
        );

        let v: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let jobs = v["scrape_configs"].as_array().unwrap();
        let (notebooks, exporter) = (&jobs[0], &jobs[1]);
        assert_eq!(notebooks["job_name"], "nbidle-notebooks");
        assert!(
            notebooks.get("authorization").is_none(),
            "{name}: the notebooks must not receive nbidle's token"
        );
        assert_eq!(
            notebooks["http_sd_configs"][0].get("authorization"),
            expected,
            "{name}"
        );
        assert_eq!(exporter["metrics_path"], "/metrics/notebooks");
        assert_eq!(exporter.get("authorization"), expected, "{name}");

        let sm: serde_json::Value = serde_yaml::from_str(&nbidle_cli(&[
            "manifests",
            "service-monitor",
            "--config",
            cfg,
        ]))
        .unwrap();
        let secret_ref = expected.map(|_| {
            serde_json::json!({"type": "Bearer", "credentials": {"name": "nbidle-metrics", "key": "token"}})
        });
        for ep in sm["spec"]["endpoints"].as_array().unwrap() {
            assert_eq!(ep.get("authorization"), secret_ref.as_ref(), "{name}: {ep}");
        }
        // The notebooks' PodMonitor never carries nbidle's token.
        let pm = nbidle_cli(&["manifests", "pod-monitor", "--config", cfg]);
        assert!(!pm.contains("authorization"), "{name}: {pm}");
    }
}
