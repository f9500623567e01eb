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
        "backend: {kind: local, local: {}}\nauth: {webhook_token: w, api_tokens: [a]}\nprometheus: {labels: \"release:kube-prometheus-stack\"}\nkubernetes: {notebook_namespaces: [team-a, team-b]}\n",
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
        "backend: {kind: local, local: {}}\nauth: {webhook_token: w, api_tokens: [a]}\nkubernetes: {notebook_metrics_secret: jupyter-metrics}\n",
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
        "backend: {kind: local, local: {}}\nauth: {webhook_token: w, api_tokens: [a], metrics_token_file: /etc/nbidle/secrets/metrics-token}\nkubernetes: {metrics_secret: scrape-token}\n",
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

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What Prometheus's Kubernetes service discovery (role `pod`) finds in
/// the API server, as file SD target groups: the labels
/// discovery/kubernetes/pod.go builds from each Pod with an IP, one target
/// per container port. (Debian's Prometheus is built without Kubernetes SD;
/// its relabeling and scraping are the real ones.)
fn discovered_pods(cp: &ControlPlane, namespaces: Option<&Vec<Value>>) -> Value {
    let pods = cp.call("GET", "/api/v1/pods", None).body;
    let mut groups = Vec::new();
    for pod in pods["items"].as_array().unwrap() {
        let (meta, status) = (&pod["metadata"], &pod["status"]);
        let ns = meta["namespace"].as_str().unwrap();
        if namespaces.is_some_and(|names| !names.iter().any(|n| n == ns)) {
            continue;
        }
        let Some(ip) = status["podIP"].as_str() else {
            continue;
        };
        let mut labels = serde_json::Map::new();
        let mut set = |k: String, v: &str| {
            labels.insert(k, json!(v));
        };
        set("__meta_kubernetes_namespace".into(), ns);
        set(
            "__meta_kubernetes_pod_name".into(),
            meta["name"].as_str().unwrap(),
        );
        set("__meta_kubernetes_pod_ip".into(), ip);
        set(
            "__meta_kubernetes_pod_phase".into(),
            status["phase"].as_str().unwrap_or(""),
        );
        if let Some(owner) = meta["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["controller"] == true)
        {
            set(
                "__meta_kubernetes_pod_controller_kind".into(),
                owner["kind"].as_str().unwrap(),
            );
            set(
                "__meta_kubernetes_pod_controller_name".into(),
                owner["name"].as_str().unwrap(),
            );
        }
        for (k, v) in meta["labels"].as_object().into_iter().flatten() {
            set(
                format!("__meta_kubernetes_pod_label_{}", sanitize(k)),
                v.as_str().unwrap(),
            );
            set(
                format!("__meta_kubernetes_pod_labelpresent_{}", sanitize(k)),
                "true",
            );
        }
        let mut targets = Vec::new();
        for c in pod["spec"]["containers"].as_array().unwrap() {
            for p in c["ports"].as_array().into_iter().flatten() {
                let port = p["containerPort"].as_u64().unwrap();
                targets.push(json!({
                    "__address__": format!("{ip}:{port}"),
                    "__meta_kubernetes_pod_container_name": c["name"],
                    "__meta_kubernetes_pod_container_port_name": p["name"],
                    "__meta_kubernetes_pod_container_port_number": port.to_string(),
                }));
            }
        }
        // File SD: one group per target, the pod's labels on each.
        for t in targets {
            let mut l = labels.clone();
            for (k, v) in t.as_object().unwrap() {
                l.insert(k.clone(), v.clone());
            }
            let addr = l.remove("__address__").unwrap();
            groups.push(json!({"targets": [addr], "labels": l}));
        }
    }
    Value::Array(groups)
}

/// A PodMonitor's scrape job as prometheus-operator writes it into
/// Prometheus's config (pod discovery in the selected namespaces, keep the
/// pods its selector matches and the container port it names, the
/// operator's default target labels, then the PodMonitor's relabelings),
/// with the discovered pods from `discovered_pods` in a file; scrapes
/// every second.
fn operator_scrape_job(
    pm: &Value,
    cp: &ControlPlane,
    dir: &std::path::Path,
    i: usize,
) -> serde_yaml::Value {
    let spec = &pm["spec"];
    let ep = &spec["podMetricsEndpoints"][0];
    let sd_file = dir.join(format!("pods-{i}.json"));
    let found = discovered_pods(cp, spec["namespaceSelector"]["matchNames"].as_array());
    std::fs::write(&sd_file, found.to_string()).unwrap();
    let sd = json!({"files": [sd_file.display().to_string()]});
    let meta = |k: &str, kind: &str| format!("__meta_kubernetes_pod_{kind}_{}", sanitize(k));
    let mut relabel =
        vec![json!({"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"})];
    for (k, v) in spec["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        relabel.push(json!({"action": "keep", "source_labels": [meta(k, "label"), meta(k, "labelpresent")], "regex": format!("({});true", v.as_str().unwrap())}));
    }
    for e in spec["selector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let k = e["key"].as_str().unwrap();
        let values = e["values"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .map(|v| v.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .unwrap_or_default();
        relabel.push(match e["operator"].as_str().unwrap() {
            "In" => json!({"action": "keep", "source_labels": [meta(k, "label"), meta(k, "labelpresent")], "regex": format!("({values});true")}),
            "NotIn" => json!({"action": "drop", "source_labels": [meta(k, "label"), meta(k, "labelpresent")], "regex": format!("({values});true")}),
            "Exists" => json!({"action": "keep", "source_labels": [meta(k, "labelpresent")], "regex": "true"}),
            "DoesNotExist" => json!({"action": "drop", "source_labels": [meta(k, "labelpresent")], "regex": "true"}),
            op => panic!("selector operator {op}"),
        });
    }
    relabel.push(json!({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": ep["port"]}));
    for (from, to) in [
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_pod_container_name", "container"),
        ("__meta_kubernetes_pod_name", "pod"),
    ] {
        relabel.push(json!({"source_labels": [from], "target_label": to}));
    }
    let (ns, name) = (
        pm["metadata"]["namespace"].as_str().unwrap(),
        pm["metadata"]["name"].as_str().unwrap(),
    );
    relabel.push(json!({"target_label": "job", "replacement": format!("{ns}/{name}")}));
    relabel.push(json!({"target_label": "endpoint", "replacement": ep["port"]}));
    for r in ep["relabelings"].as_array().into_iter().flatten() {
        let mut out = serde_json::Map::new();
        for (k, v) in r.as_object().unwrap() {
            let key = match k.as_str() {
                "sourceLabels" => "source_labels",
                "targetLabel" => "target_label",
                other => other,
            };
            out.insert(key.into(), v.clone());
        }
        relabel.push(Value::Object(out));
    }
    let job = json!({
        "job_name": format!("podMonitor/{i}"),
        "scrape_interval": "1s",
        "file_sd_configs": [sd],
        "relabel_configs": relabel,
    });
    serde_yaml::to_value(&job).unwrap()
}

/// A pod as its StatefulSet's controller would create it (labels from the
/// template, a controller owner reference), given an address by the test.
fn statefulset_pod(cp: &ControlPlane, ns: &str, sts: &str, labels: Value, port: u16) {
    let set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": sts, "namespace": ns, "labels": labels},
        "spec": {
            "serviceName": sts,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "notebook", "image": "jupyter/base-notebook"}]},
            },
        },
    });
    let r = cp.call(
        "POST",
        &format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
        Some(&set),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let uid = r.body["metadata"]["uid"].clone();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{sts}-0"), "namespace": ns, "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts, "uid": uid, "controller": true}],
        },
        "spec": {"containers": [{
            "name": "notebook", "image": "jupyter/base-notebook",
            "ports": [{"name": "notebook-port", "containerPort": port}],
        }]},
    });
    let path = format!("/api/v1/namespaces/{ns}/pods");
    let r = cp.call("POST", &path, Some(&pod));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = cp.call_patch(
        &format!("{path}/{sts}-0/status"),
        &json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The shipped overlays' PodMonitors in a real Prometheus, translated as
/// prometheus-operator translates them, on the pods in the API server: the statefulset one scrapes a plain StatefulSet's pod (a real
/// Jupyter server, at the path of `jupyter_url`) as its notebook, the
/// Kubeflow one Kubeflow's notebook pod, and neither the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_overlays_pod_monitor_scrapes_its_backends_notebook_pods() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    for ns in ["lab", "team-a"] {
        cp.create_namespace(ns);
    }
    let jport = common::free_port();
    let _jupyter = common::Proc::spawn(
        "jupyter",
        std::process::Command::new(common::jupyter())
            .args([
                "server",
                "--allow-root",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
            ])
            .arg(format!("--ServerApp.port={jport}"))
            .arg(format!("--ServerApp.root_dir={}", dir.path().display()))
            .args([
                "--ServerApp.port_retries=0",
                "--IdentityProvider.token=",
                "--ServerApp.authenticate_prometheus=False",
            ]),
        &dir.path().join("jupyter.log"),
    );
    // A plain Jupyter StatefulSet, as the statefulset overlay selects it.
    statefulset_pod(
        &cp,
        "lab",
        "jupyter",
        json!({"app.kubernetes.io/component": "notebook", "app": "jupyter"}),
        jport,
    );
    // Kubeflow's notebook pod: also a StatefulSet's, labelled with its notebook.
    statefulset_pod(
        &cp,
        "team-a",
        "kf",
        json!({"notebook-name": "kf", "statefulset": "kf"}),
        common::free_port(),
    );
    let monitors: Vec<Value> = ["kubeflow", "statefulset"]
        .iter()
        .map(|b| {
            let cfg = repo(&format!("deploy/overlays/{b}/nbidle.yaml"));
            yaml_to_json(&nbidle_cli(&[
                "manifests",
                "pod-monitor",
                "--config",
                cfg.to_str().unwrap(),
            ]))
        })
        .collect();
    let jobs: Vec<serde_yaml::Value> = monitors
        .iter()
        .enumerate()
        .map(|(i, pm)| operator_scrape_job(pm, &cp, dir.path(), i))
        .collect();
    let prom = common::Prometheus::start_with_jobs(dir.path(), jobs).await;
    let targets = common::eventually("the statefulset PodMonitor scraping lab/jupyter-0 (a plain StatefulSet's pod) and the Kubeflow one finding team-a/kf-0", std::time::Duration::from_secs(60), || async {
        let t = prom.active_targets().await;
        let sts_up = t.iter().any(|t| t["scrapePool"] == "podMonitor/1" && t["health"] == "up");
        (sts_up && t.iter().any(|t| t["scrapePool"] == "podMonitor/0")).then_some(t)
    })
    .await;
    let pool =
        |p: &str| -> Vec<&Value> { targets.iter().filter(|t| t["scrapePool"] == p).collect() };
    let (kubeflow, sts) = (pool("podMonitor/0"), pool("podMonitor/1"));
    assert_eq!(sts.len(), 1, "{sts:?}");
    let l = &sts[0]["labels"];
    assert_eq!(
        (&l["namespace"], &l["notebook"], &l["job"]),
        (&json!("lab"), &json!("jupyter"), &json!("nbidle-notebooks")),
        "{l}"
    );
    assert_eq!(
        sts[0]["scrapeUrl"],
        format!("http://127.0.0.1:{jport}/metrics")
    );
    assert_eq!(kubeflow.len(), 1, "{kubeflow:?}");
    let l = &kubeflow[0]["labels"];
    assert_eq!(
        (&l["namespace"], &l["notebook"]),
        (&json!("team-a"), &json!("kf")),
        "{l}"
    );
    assert!(
        kubeflow[0]["scrapeUrl"]
            .as_str()
            .unwrap()
            .ends_with("/notebook/team-a/kf/metrics"),
        "{}",
        kubeflow[0]["scrapeUrl"]
    );
    // Jupyter's own series reach Prometheus under the notebook's name.
    common::eventually(
        "Jupyter's series",
        std::time::Duration::from_secs(30),
        || async {
            let r = prom
                .query("up{notebook=\"jupyter\", namespace=\"lab\"} == 1")
                .await
                .ok()?;
            (r.as_array()?.len() == 1).then_some(())
        },
    )
    .await;
}
