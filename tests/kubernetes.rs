//! Against a real kube-apiserver + etcd (envtest, built from source by
//! scripts/envtest/build.sh): the objects nbidle generates are accepted by
//! the apiserver's CRD validation, and a malformed one is refused.

mod common;

use common::envtest::ControlPlane;
use common::nbidle_cli;
use serde_json::{json, Value};

fn repo(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn yaml_to_json(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

#[tokio::test]
async fn generated_prometheus_rules_pass_crd_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    cp.install_crd(&repo("tests/crds/prometheusrule.yaml"))
        .await;
    cp.create_namespace("nbidle");
    let path = "/apis/monitoring.coreos.com/v1/namespaces/nbidle/prometheusrules";

    let configs = [
        None,
        Some("demo/nbidle.yaml"),
        Some("rules/tests/all-signals.nbidle.yaml"),
    ];
    for (i, cfg) in configs.iter().enumerate() {
        let mut args = vec!["rules", "--format", "prometheus-rule"];
        let cfg_path = cfg.map(|c| repo(c).display().to_string());
        if let Some(c) = &cfg_path {
            args.extend(["--config", c]);
        }
        let mut obj = yaml_to_json(&nbidle_cli(&args));
        obj["metadata"]["name"] = json!(format!("nbidle-idle-{i}"));
        let r = cp.call("POST", path, Some(&obj));
        assert_eq!(r.status, 201, "{cfg:?}: {}", r.body);
        assert_eq!(
            r.body["spec"]["groups"][0]["rules"][1]["alert"],
            "NotebookIdle"
        );
        assert_eq!(
            r.body["metadata"]["labels"]["app.kubernetes.io/name"],
            "nbidle"
        );
    }
    // The demo config's seed-style labels reach the object.
    let r = cp.call("GET", &format!("{path}/nbidle-idle-1"), None);
    assert_eq!(r.body["metadata"]["labels"]["k8s-app-pod"], "true");

    // The validation is real: a malformed duration is refused.
    let mut bad = yaml_to_json(&nbidle_cli(&["rules", "--format", "prometheus-rule"]));
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["groups"][0]["rules"][1]["for"] = json!("soon");
    let r = cp.call("POST", path, Some(&bad));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("for"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn the_notebook_crd_accepts_a_kubeflow_notebook() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    cp.install_crd(&repo("tests/crds/notebook.yaml")).await;
    let nb = json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "metadata": {"name": "test", "namespace": "default"},
        "spec": {"template": {"spec": {"containers": [{"name": "test", "image": "jupyter/base-notebook"}]}}},
    });
    let r = cp.call(
        "POST",
        "/apis/kubeflow.org/v1/namespaces/default/notebooks",
        Some(&nb),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // Stop as Kubeflow understands it: the annotation, by merge patch.
    let patch =
        json!({"metadata": {"annotations": {"kubeflow-resource-stopped": "2026-01-01T00:00:00Z"}}});
    let r = cp.call_patch(
        "/apis/kubeflow.org/v1/namespaces/default/notebooks/test",
        &patch,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["metadata"]["annotations"]["kubeflow-resource-stopped"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(
        r.body["spec"]["template"]["spec"]["containers"][0]["image"],
        "jupyter/base-notebook"
    );
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "PodMonitor" => "podmonitors",
        "ServiceMonitor" => "servicemonitors",
        "AlertmanagerConfig" => "alertmanagerconfigs",
        "PrometheusRule" => "prometheusrules",
        other => panic!("no resource for kind {other}"),
    }
}

#[tokio::test]
async fn generated_monitors_and_alertmanager_configs_pass_crd_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    cp.install_crd(&repo("tests/crds/monitors.yaml")).await;
    for ns in ["nbidle", "team-a", "team-b"] {
        cp.create_namespace(ns);
    }
    // Notebooks in two namespaces: one AlertmanagerConfig in each, since the
    // operator confines each to alerts of its own namespace.
    let cfg = dir.path().join("nbidle.yaml");
    std::fs::write(
        &cfg,
        "backend: {kind: local, local: {}}\nprometheus: {labels: \"release:kube-prometheus-stack\"}\nkubernetes: {notebook_namespaces: [team-a, team-b]}\n",
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    for kind in ["pod-monitor", "service-monitor", "alertmanager-config"] {
        let yaml = nbidle_cli(&["manifests", kind, "--config", &cfg]);
        let replies = cp.create_all(&yaml, plural);
        assert!(!replies.is_empty());
        for r in &replies {
            assert_eq!(r.status, 201, "{kind}: {}", r.body);
            assert_eq!(
                r.body["metadata"]["labels"]["release"], "kube-prometheus-stack",
                "{kind}"
            );
        }
        if kind == "alertmanager-config" {
            let namespaces: Vec<&str> = replies
                .iter()
                .map(|r| r.body["metadata"]["namespace"].as_str().unwrap())
                .collect();
            assert_eq!(namespaces, ["team-a", "team-b"]);
        }
    }
    let pm = cp.call(
        "GET",
        "/apis/monitoring.coreos.com/v1/namespaces/nbidle/podmonitors/nbidle-notebooks",
        None,
    );
    assert_eq!(
        pm.body["spec"]["namespaceSelector"]["matchNames"],
        json!(["team-a", "team-b"])
    );
    // Jupyter servers that protect /metrics: the PodMonitor sends a token.
    let cfg2 = dir.path().join("nbidle-auth.yaml");
    std::fs::write(
        &cfg2,
        "backend: {kind: local, local: {}}\nkubernetes: {notebook_metrics_secret: jupyter-metrics}\n",
    )
    .unwrap();
    let mut pm = yaml_to_json(&nbidle_cli(&[
        "manifests",
        "pod-monitor",
        "--config",
        cfg2.to_str().unwrap(),
    ]));
    pm["metadata"]["name"] = json!("with-auth");
    let r = cp.call(
        "POST",
        "/apis/monitoring.coreos.com/v1/namespaces/nbidle/podmonitors",
        Some(&pm),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["spec"]["podMetricsEndpoints"][0]["authorization"]["credentials"],
        json!({"name": "jupyter-metrics", "key": "token"})
    );
    // A metrics token: the ServiceMonitor scrapes both paths with it, from
    // a Secret in nbidle's namespace; the apiserver keeps the field.
    let cfg3 = dir.path().join("nbidle-metrics.yaml");
    std::fs::write(
        &cfg3,
        "backend: {kind: local, local: {}}\nauth: {metrics_token_file: /etc/nbidle/secrets/metrics-token}\nkubernetes: {metrics_secret: scrape-token}\n",
    )
    .unwrap();
    let mut sm = yaml_to_json(&nbidle_cli(&[
        "manifests",
        "service-monitor",
        "--config",
        cfg3.to_str().unwrap(),
    ]));
    sm["metadata"]["name"] = json!("with-auth");
    let r = cp.call(
        "POST",
        "/apis/monitoring.coreos.com/v1/namespaces/nbidle/servicemonitors",
        Some(&sm),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let endpoints = r.body["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    for ep in endpoints {
        assert_eq!(
            ep["authorization"],
            json!({"type": "Bearer", "credentials": {"name": "scrape-token", "key": "token"}}),
            "{ep}"
        );
    }
    // The validation is real: a bad relabeling action is refused.
    let mut bad = yaml_to_json(&nbidle_cli(&["manifests", "pod-monitor"]));
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = json!("explode");
    let r = cp.call(
        "POST",
        "/apis/monitoring.coreos.com/v1/namespaces/nbidle/podmonitors",
        Some(&bad),
    );
    assert_eq!(r.status, 422, "{}", r.body);
}
