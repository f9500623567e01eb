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
    let deploy_cfg = repo("deploy/nbidle.yaml");
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
        args.extend(["--config", &deploy_cfg]);
        assert_eq!(
            std::fs::read_to_string(repo(&format!("deploy/monitoring/{file}"))).unwrap(),
            nbidle_cli(&args),
            "deploy/monitoring/{file} drifted from deploy/nbidle.yaml: run `make rules`"
        );
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let promtool = tool(&["promtool"]);
    run_ok(Command::new(&promtool).args(["check", "rules", &repo("rules/nbidle.rules.yml")]));
    let out = run_ok(Command::new(&promtool).args([
        "test",
        "rules",
        &repo("rules/tests/nbidle_test.yml"),
    ]));
    assert!(out.contains("SUCCESS"), "{out}");
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

/// Every config in docs/kubernetes.md (the blocks that start with
/// `# nbidle.yaml`) passes `nbidle check`, so the walkthrough does not rot.
#[test]
fn the_kubernetes_guide_configs_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["webhook-token", "api-tokens", "team-a-token"] {
        std::fs::write(dir.path().join(f), "a-token\n").unwrap();
    }
    let guide = std::fs::read_to_string(repo("docs/kubernetes.md")).unwrap();
    let blocks: Vec<&str> = guide
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.starts_with("# nbidle.yaml"))
        .collect();
    assert!(blocks.len() >= 4, "found {} config blocks", blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let mut text = block.replace(
            "/etc/nbidle/secrets/",
            &format!("{}/", dir.path().display()),
        );
        if !text.contains("\nauth:") {
            text.push_str("auth:\n  webhook_token: w\n  api_tokens: [a]\n");
        }
        let path = dir.path().join(format!("guide-{i}.yaml"));
        std::fs::write(&path, &text).unwrap();
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_nbidle"))
                .args(["check", "--config"])
                .arg(&path),
        );
    }
}
