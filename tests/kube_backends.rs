//! The Kubernetes backends against a real kube-apiserver + etcd (envtest,
//! built from source by scripts/envtest/build.sh). No controllers run, so
//! the tests play Kubeflow's controller and the StatefulSet controller where
//! nbidle would wait on them (status fields).

mod common;

use std::time::Duration;

use common::envtest::{ControlPlane, Reply};
use common::*;
use serde_json::{json, Value};

const TEAM_A_TOKEN: &str = "team-a-token-for-tests";
const NB_API: &str = "/apis/kubeflow.org/v1/namespaces";
const STS_API: &str = "/apis/apps/v1/namespaces";

fn repo(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A config for the Kubernetes backends. The exporter's Jupyter URL points
/// where nothing listens: these tests are about the API objects.
fn kube_config(dir: &std::path::Path, port: u16, backend: &str, namespaces: &[&str]) -> String {
    format!(
        r#"listen: "127.0.0.1:{port}"
data_dir: {data}
auth:
  webhook_token: "{WEBHOOK_TOKEN}"
  api_tokens: ["{API_TOKEN}"]
  namespaced_api_tokens:
    - token: "{TEAM_A_TOKEN}"
      namespaces: [team-a]
autostop:
  idle_after: 30m
  evaluation_interval: 1m
  min_idle_after: 10m
  max_idle_after: 4h
exporter:
  interval: 1s
  timeout: 1s
kubernetes:
  notebook_namespaces: {ns}
backend:
{backend}
"#,
        data = dir.join(format!("data-{port}")).display(),
        ns = serde_json::to_string(namespaces).unwrap(),
    )
}

const KUBEFLOW: &str = "  kind: kubeflow\n  kubeflow:\n    jupyter_url: \"http://127.0.0.1:1/notebook/{namespace}/{name}/\"";

async fn start_nbidle(
    dir: &std::path::Path,
    tag: &str,
    kubeconfig: &std::path::Path,
    backend: &str,
    namespaces: &[&str],
) -> Nbidle {
    let port = free_port();
    let yaml = kube_config(dir, port, backend, namespaces);
    Nbidle::start_yaml(
        dir,
        tag,
        port,
        &yaml,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
    .await
}

fn notebook(ns: &str, name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations,
                     "labels": {"app": name}},
        "spec": {"template": {"spec": {"containers": [{
            "name": name, "image": "kubeflownotebookswg/jupyter-scipy:v1.9.0",
            "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"}]}],
            "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": format!("{name}-workspace")}}]}}},
    })
}

/// RFC 3339 for one second before `t`: an alert that began before it.
fn second_before(t: &str) -> String {
    let rfc = &time::format_description::well_known::Rfc3339;
    (time::OffsetDateTime::parse(t, rfc).unwrap() - time::Duration::seconds(1))
        .format(rfc)
        .unwrap()
}

fn pvc(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    })
}

/// Plays Kubeflow's controller: the ready replicas it would report.
fn set_ready(cp: &ControlPlane, ns: &str, name: &str, ready: i32) {
    let r = cp.call_patch(
        &format!("{NB_API}/{ns}/notebooks/{name}/status"),
        &json!({"status": {"readyReplicas": ready}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn get(cp: &ControlPlane, path: &str) -> Reply {
    cp.call("GET", path, None)
}

async fn control_plane(dir: &std::path::Path, namespaces: &[&str]) -> ControlPlane {
    let cp = ControlPlane::start(dir).await;
    cp.install_crd(&repo("tests/crds/notebook.yaml")).await;
    for ns in namespaces {
        cp.create_namespace(ns);
    }
    cp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeflow_stop_and_start_keep_the_notebook_and_its_volume() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &["team-a", "team-b", "elsewhere"]).await;
    for (ns, name, ann) in [
        (
            "team-a",
            "nb1",
            json!({"notebooks.kubeflow.org/creator": "ada@example.com"}),
        ),
        ("team-a", "keep", json!({"nbidle.io/autostop": "false"})),
        ("team-b", "long", json!({"nbidle.io/idle-after": "2h"})),
        (
            "team-b",
            "typo",
            json!({"nbidle.io/idle-after": "two hours"}),
        ),
        ("elsewhere", "other", json!({})),
    ] {
        cp.create_yaml(
            &serde_yaml::to_string(&pvc(ns, &format!("{name}-workspace"))).unwrap(),
            ns,
        );
        let r = cp.create(&notebook(ns, name, ann), ns);
        assert_eq!(r.status, 201, "{}", r.body);
        set_ready(&cp, ns, name, 1);
    }
    let kubeconfig = cp.kubeconfig(dir.path(), None);
    let nbidle = start_nbidle(
        dir.path(),
        "nbidle",
        &kubeconfig,
        KUBEFLOW,
        &["team-a", "team-b"],
    )
    .await;

    // The watch lists exactly the configured namespaces.
    let v = nbidle
        .wait_status("team-a", "nb1", "running", Duration::from_secs(30))
        .await;
    assert_eq!(v["owner"], "ada@example.com");
    assert_eq!(v["idle_after_seconds"], 1800);
    let list = nbidle.list().await;
    let names: Vec<String> = list["notebooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{}/{}",
                n["namespace"].as_str().unwrap(),
                n["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        ["team-a/keep", "team-a/nb1", "team-b/long", "team-b/typo"]
    );
    assert_eq!(
        nbidle.post("notebooks/elsewhere/other/stop").await.status(),
        404
    );

    // Per-notebook policy from annotations, bounded by the admin.
    let long = nbidle.notebook("team-b", "long").await;
    assert_eq!(long["idle_after_seconds"], 7200);
    let typo = nbidle.notebook("team-b", "typo").await;
    assert_eq!(typo["autostop"], false, "{typo}");
    assert!(
        typo["message"]
            .as_str()
            .unwrap()
            .contains("nbidle.io/idle-after"),
        "{typo}"
    );
    assert_eq!(nbidle.notebook("team-a", "keep").await["autostop"], false);

    // A user's stop: Kubeflow's annotation plus nbidle's record; an Event.
    let r = nbidle.post("notebooks/team-a/nb1/stop").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "stopping", "{v}");
    let obj = get(&cp, &format!("{NB_API}/team-a/notebooks/nb1")).body;
    let ann = &obj["metadata"]["annotations"];
    assert!(ann["kubeflow-resource-stopped"].is_string(), "{ann}");
    assert_eq!(ann["nbidle.io/stopped-by"], "user");
    assert_eq!(
        ann["notebooks.kubeflow.org/creator"], "ada@example.com",
        "other annotations kept"
    );
    set_ready(&cp, "team-a", "nb1", 0); // Kubeflow's controller scaled to 0
    let v = nbidle
        .wait_status("team-a", "nb1", "stopped", Duration::from_secs(30))
        .await;
    assert_eq!(v["stopped_by"]["trigger"], "user");
    // Stopping again changes nothing.
    let before = get(&cp, &format!("{NB_API}/team-a/notebooks/nb1")).body["metadata"]
        ["resourceVersion"]
        .clone();
    assert_eq!(nbidle.post("notebooks/team-a/nb1/stop").await.status(), 200);
    let after = get(&cp, &format!("{NB_API}/team-a/notebooks/nb1")).body["metadata"]
        ["resourceVersion"]
        .clone();
    assert_eq!(before, after, "a repeated stop writes nothing");

    // The workspace survives: the Notebook and its claim are still there.
    assert_eq!(
        get(
            &cp,
            "/api/v1/namespaces/team-a/persistentvolumeclaims/nb1-workspace"
        )
        .status,
        200
    );
    assert_eq!(
        get(&cp, &format!("{NB_API}/team-a/notebooks/nb1")).status,
        200
    );

    // Start: Kubeflow's annotation and nbidle's record removed.
    let r = nbidle.post("notebooks/team-a/nb1/start").await;
    assert_eq!(r.status(), 200);
    let obj = get(&cp, &format!("{NB_API}/team-a/notebooks/nb1")).body;
    let ann = &obj["metadata"]["annotations"];
    assert!(ann.get("kubeflow-resource-stopped").is_none(), "{ann}");
    assert!(ann.get("nbidle.io/stopped-by").is_none(), "{ann}");
    assert!(ann["nbidle.io/started-at"].is_string());
    set_ready(&cp, "team-a", "nb1", 1);
    nbidle
        .wait_status("team-a", "nb1", "running", Duration::from_secs(30))
        .await;

    // An alert about the notebook's previous life is stale.
    let old = payload(vec![idle_alert("team-a", "nb1", &rfc3339_from_now(-3600))]);
    let r: Value = nbidle.webhook(&old).await.json().await.unwrap();
    assert_eq!(r["alerts"][0]["decision"], "stale", "{r}");
    // An opted-out notebook is kept.
    let keep = payload(vec![idle_alert("team-a", "keep", &rfc3339_from_now(-5))]);
    let r: Value = nbidle.webhook(&keep).await.json().await.unwrap();
    assert_eq!(r["alerts"][0]["decision"], "opted_out", "{r}");
    // A current one stops it and says which alert did.
    let now = payload(vec![idle_alert("team-a", "nb1", &rfc3339_from_now(2))]);
    let r: Value = nbidle.webhook(&now).await.json().await.unwrap();
    assert_eq!(r["alerts"][0]["decision"], "stopped", "{r}");
    let ann =
        get(&cp, &format!("{NB_API}/team-a/notebooks/nb1")).body["metadata"]["annotations"].clone();
    assert_eq!(ann["nbidle.io/stopped-by"], "idle-alert");
    assert_eq!(ann["nbidle.io/stop-reason"], "NotebookIdle");
    assert!(ann["nbidle.io/alert-starts-at"].is_string());

    // One Event per stop and start, on the Notebook.
    let events = cp.events("team-a", "nb1");
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "Stopped").count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| **r == "Started").count(),
        1,
        "{events:?}"
    );
    assert!(events
        .iter()
        .all(|e| e["regarding"]["kind"] == "Notebook"
            && e["reportingController"] == "nbidle.io/nbidle"));
    assert!(events
        .iter()
        .any(|e| e["note"].as_str().unwrap().contains("NotebookIdle")));

    // Kubeflow's controller scales it down; then Kubeflow's UI starts it
    // again, removing only its own annotation.
    set_ready(&cp, "team-a", "nb1", 0);
    nbidle
        .wait_status("team-a", "nb1", "stopped", Duration::from_secs(30))
        .await;
    let r = cp.call_patch(
        &format!("{NB_API}/team-a/notebooks/nb1"),
        &json!({"metadata": {"annotations": {"kubeflow-resource-stopped": null}}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // While its pod is not ready, no idle alert stops it...
    let v = nbidle
        .wait_status("team-a", "nb1", "starting", Duration::from_secs(30))
        .await;
    assert_eq!(v["stopped_by"], Value::Null);
    let r: Value = nbidle
        .webhook(&payload(vec![idle_alert(
            "team-a",
            "nb1",
            &rfc3339_from_now(2),
        )]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["alerts"][0]["decision"], "not_running", "{r}");
    // ...and once running, a re-delivery of an alert from before nbidle's
    // stop is about its previous life, though nbidle did not start it.
    set_ready(&cp, "team-a", "nb1", 1);
    nbidle
        .wait_status("team-a", "nb1", "running", Duration::from_secs(30))
        .await;
    let before_stop = second_before(ann["nbidle.io/stopped-at"].as_str().unwrap());
    let r: Value = nbidle
        .webhook(&payload(vec![idle_alert("team-a", "nb1", &before_stop)]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["alerts"][0]["decision"], "stale", "{r}");
    // A stop in Kubeflow's UI is not reported as nbidle's earlier one.
    let r = cp.call_patch(
        &format!("{NB_API}/team-a/notebooks/nb1"),
        &json!({"metadata": {"annotations": {"kubeflow-resource-stopped": "2030-01-01T00:00:00Z"}}}),
    );
    assert_eq!(r.status, 200);
    set_ready(&cp, "team-a", "nb1", 0);
    let v = nbidle
        .wait_status("team-a", "nb1", "stopped", Duration::from_secs(30))
        .await;
    assert_eq!(v["stopped_by"], Value::Null, "{v}");
    assert_eq!(v["stopped_at"], "2030-01-01T00:00:00Z");

    // The exporter maps the notebooks to their pods for the CPU/GPU guards.
    eventually("pod info", Duration::from_secs(10), || async {
        nbidle
            .exporter_metrics()
            .await
            .contains(
                "nbidle_notebook_pod_info{namespace=\"team-b\",notebook=\"long\",pod=\"long-0\"} 1",
            )
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_and_duplicate_alerts_stop_a_notebook_once() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &["team-a"]).await;
    for i in 0..5 {
        let name = format!("nb{i}");
        assert_eq!(
            cp.create(&notebook("team-a", &name, json!({})), "team-a")
                .status,
            201
        );
        set_ready(&cp, "team-a", &name, 1);
    }
    let kubeconfig = cp.kubeconfig(dir.path(), None);
    let a = start_nbidle(dir.path(), "nbidle-a", &kubeconfig, KUBEFLOW, &["team-a"]).await;
    let b = start_nbidle(dir.path(), "nbidle-b", &kubeconfig, KUBEFLOW, &["team-a"]).await;
    for n in [&a, &b] {
        n.wait_status("team-a", "nb4", "running", Duration::from_secs(30))
            .await;
    }

    // A user edits the notebooks all the while: their edits and nbidle's
    // stops must both land (conflicts are retried, never overwritten).
    let editor = {
        let cp_url = cp.url.clone();
        std::thread::spawn(move || {
            for round in 0..40 {
                for i in 0..5 {
                    let _ = std::process::Command::new("curl")
                        .args(["-sk", "-o", "/dev/null", "-X", "PATCH"])
                        .arg("-H")
                        .arg(format!(
                            "Authorization: Bearer {}",
                            common::envtest::ADMIN_TOKEN
                        ))
                        .arg("-H")
                        .arg("Content-Type: application/merge-patch+json")
                        .arg("--data-binary")
                        .arg(
                            json!({"metadata": {"labels": {"edited": format!("r{round}")}}})
                                .to_string(),
                        )
                        .arg(format!("{cp_url}{NB_API}/team-a/notebooks/nb{i}"))
                        .status();
                }
            }
        })
    };

    // Both replicas get the same notification, three times each, at once.
    let alerts: Vec<Value> = (0..5)
        .map(|i| idle_alert("team-a", &format!("nb{i}"), &rfc3339_from_now(2)))
        .collect();
    let body = payload(alerts);
    let sends = (0..6).map(|i| {
        let target = if i % 2 == 0 { &a } else { &b };
        let body = body.clone();
        async move { target.webhook(&body).await }
    });
    let replies = futures_util::future::join_all(sends).await;
    let mut stopped = 0;
    for r in replies {
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        for al in v["alerts"].as_array().unwrap() {
            let d = al["decision"].as_str().unwrap();
            assert!(d == "stopped" || d == "already_stopped", "{v}");
            stopped += (d == "stopped") as usize;
        }
    }
    editor.join().unwrap();
    assert_eq!(stopped, 5, "each notebook stopped by exactly one delivery");
    let conflicts: usize = [&a, &b]
        .iter()
        .map(|n| n.log().matches("write conflicted").count())
        .sum();
    eprintln!("write conflicts retried by the two replicas: {conflicts}");
    for i in 0..5 {
        let name = format!("nb{i}");
        let obj = get(&cp, &format!("{NB_API}/team-a/notebooks/{name}")).body;
        assert!(obj["metadata"]["annotations"]["kubeflow-resource-stopped"].is_string());
        assert_eq!(
            obj["metadata"]["labels"]["edited"], "r39",
            "the user's last edit is kept"
        );
        let stops = cp
            .events("team-a", &name)
            .into_iter()
            .filter(|e| e["reason"] == "Stopped")
            .count();
        assert_eq!(stops, 1, "{name}: one Stopped event");
    }
}

fn statefulset(ns: &str, name: &str, labels: Value, replicas: i32, when_scaled: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": when_scaled, "whenDeleted": "Retain"},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "jupyter", "image": "quay.io/jupyter/base-notebook"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "work"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    })
}

/// Plays the StatefulSet controller: current and ready replicas.
fn set_sts_status(cp: &ControlPlane, ns: &str, name: &str, replicas: i32) {
    let r = cp.call_patch(
        &format!("{STS_API}/{ns}/statefulsets/{name}/status"),
        &json!({"status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

const STATEFULSET: &str = "  kind: statefulset\n  statefulset:\n    label_selector: \"app.kubernetes.io/component=notebook\"\n    jupyter_url: \"http://127.0.0.1:1/{namespace}/{name}/\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulsets_scale_to_zero_and_back_to_their_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &["lab"]).await;
    let nb = json!({"app.kubernetes.io/component": "notebook"});
    for (name, labels, replicas, when) in [
        ("jupyter", nb.clone(), 2, "Retain"),
        ("fragile", nb.clone(), 1, "Delete"),
        ("database", json!({"app": "db"}), 3, "Retain"),
    ] {
        let r = cp.create(&statefulset("lab", name, labels, replicas, when), "lab");
        assert_eq!(r.status, 201, "{}", r.body);
        set_sts_status(&cp, "lab", name, replicas);
    }
    cp.create_yaml(
        &serde_yaml::to_string(&pvc("lab", "work-jupyter-0")).unwrap(),
        "lab",
    );
    let kubeconfig = cp.kubeconfig(dir.path(), None);
    let nbidle = start_nbidle(dir.path(), "nbidle", &kubeconfig, STATEFULSET, &[]).await;
    nbidle
        .wait_status("lab", "jupyter", "running", Duration::from_secs(30))
        .await;
    // Only the selected StatefulSets are notebooks.
    assert_eq!(
        nbidle.post("notebooks/lab/database/stop").await.status(),
        404
    );
    // One whose claims would be deleted by a scale-down is never stopped.
    let fragile = nbidle.notebook("lab", "fragile").await;
    assert_eq!(fragile["autostop"], false);
    let r = nbidle.post("notebooks/lab/fragile/stop").await;
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("whenScaled"),
        "{err}"
    );

    let r = nbidle
        .webhook(&payload(vec![idle_alert(
            "lab",
            "jupyter",
            &rfc3339_from_now(2),
        )]))
        .await;
    assert_eq!(r.status(), 200);
    let obj = get(&cp, &format!("{STS_API}/lab/statefulsets/jupyter")).body;
    assert_eq!(obj["spec"]["replicas"], 0);
    assert_eq!(obj["metadata"]["annotations"]["nbidle.io/replicas"], "2");
    assert_eq!(
        obj["metadata"]["annotations"]["nbidle.io/stopped-by"],
        "idle-alert"
    );
    let scale = get(&cp, &format!("{STS_API}/lab/statefulsets/jupyter/scale")).body;
    assert_eq!(scale["kind"], "Scale");
    // The API leaves out a zero `spec.replicas` of a Scale.
    assert_eq!(
        scale["spec"]["replicas"].as_i64().unwrap_or(0),
        0,
        "{scale}"
    );
    set_sts_status(&cp, "lab", "jupyter", 0);
    let v = nbidle
        .wait_status("lab", "jupyter", "stopped", Duration::from_secs(30))
        .await;
    assert_eq!(v["stopped_by"]["alertname"], "NotebookIdle");
    assert_eq!(
        get(
            &cp,
            "/api/v1/namespaces/lab/persistentvolumeclaims/work-jupyter-0"
        )
        .status,
        200
    );
    // The untouched: the database keeps its replicas.
    assert_eq!(
        get(&cp, &format!("{STS_API}/lab/statefulsets/database")).body["spec"]["replicas"],
        3
    );

    let r = nbidle.post("notebooks/lab/jupyter/start").await;
    assert_eq!(r.status(), 200);
    let obj = get(&cp, &format!("{STS_API}/lab/statefulsets/jupyter")).body;
    assert_eq!(obj["spec"]["replicas"], 2, "back to the remembered count");
    assert!(obj["metadata"]["annotations"]
        .get("nbidle.io/replicas")
        .is_none());
    set_sts_status(&cp, "lab", "jupyter", 2);
    nbidle
        .wait_status("lab", "jupyter", "running", Duration::from_secs(30))
        .await;
    let reasons: Vec<Value> = cp
        .events("lab", "jupyter")
        .into_iter()
        .map(|e| e["reason"].clone())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    // The next probe round maps the notebook to both its pods.
    let both = |t: &str| {
        ["jupyter-0", "jupyter-1"].iter().all(|pod| {
            t.contains(&format!(
                "nbidle_notebook_pod_info{{namespace=\"lab\",notebook=\"jupyter\",pod=\"{pod}\"}} 1"
            ))
        })
    };
    eventually(
        "pod info for both pods",
        Duration::from_secs(10),
        || async { both(&nbidle.exporter_metrics().await).then_some(()) },
    )
    .await;

    // Stopped by a user, then scaled up by someone else (kubectl scale):
    // an alert from before the stop does not stop it again.
    assert_eq!(
        nbidle.post("notebooks/lab/jupyter/stop").await.status(),
        200
    );
    let stopped_at = get(&cp, &format!("{STS_API}/lab/statefulsets/jupyter")).body["metadata"]
        ["annotations"]["nbidle.io/stopped-at"]
        .as_str()
        .unwrap()
        .to_string();
    let r = cp.call_patch(
        &format!("{STS_API}/lab/statefulsets/jupyter/scale"),
        &json!({"spec": {"replicas": 1}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    set_sts_status(&cp, "lab", "jupyter", 1);
    let v = nbidle
        .wait_status("lab", "jupyter", "running", Duration::from_secs(30))
        .await;
    assert!(
        v["started_at"].as_str().unwrap() >= stopped_at.as_str(),
        "{v}"
    );
    let before_stop = second_before(&stopped_at);
    let r: Value = nbidle
        .webhook(&payload(vec![idle_alert("lab", "jupyter", &before_stop)]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["alerts"][0]["decision"], "stale", "{r}");
}

/// The objects of a YAML file, by kind and name.
fn objects(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_rbac_allows_what_the_backends_do_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &["team-a", "lab"]).await;
    // deploy/'s namespace, ServiceAccount and RBAC, as `kubectl apply -k` would.
    for f in [
        "deploy/base/namespace.yaml",
        "deploy/base/serviceaccount.yaml",
        "deploy/overlays/kubeflow/rbac.yaml",
    ] {
        cp.create_yaml(&std::fs::read_to_string(repo(f)).unwrap(), "nbidle");
    }
    const SA: &str = "system:serviceaccount:nbidle:nbidle";
    assert_eq!(
        cp.create(&notebook("team-a", "nb1", json!({})), "team-a")
            .status,
        201
    );
    set_ready(&cp, "team-a", "nb1", 1);

    let kubeconfig = cp.kubeconfig(dir.path(), Some(SA));
    let nbidle = start_nbidle(dir.path(), "nbidle", &kubeconfig, KUBEFLOW, &[]).await;
    nbidle
        .wait_status("team-a", "nb1", "running", Duration::from_secs(30))
        .await;
    assert_eq!(nbidle.post("notebooks/team-a/nb1/stop").await.status(), 200);
    set_ready(&cp, "team-a", "nb1", 0);
    nbidle
        .wait_status("team-a", "nb1", "stopped", Duration::from_secs(30))
        .await;
    assert_eq!(
        nbidle.post("notebooks/team-a/nb1/start").await.status(),
        200
    );
    assert_eq!(
        cp.events("team-a", "nb1").len(),
        2,
        "Events recorded as the ServiceAccount"
    );
    assert!(
        !nbidle.log().contains("could not record Event"),
        "{}",
        nbidle.log()
    );
    // Nothing more: no deletes, no pods, no secrets, no StatefulSets.
    for (method, path) in [
        ("DELETE", format!("{NB_API}/team-a/notebooks/nb1")),
        ("GET", "/api/v1/namespaces/team-a/pods".to_string()),
        ("GET", "/api/v1/namespaces/team-a/secrets".to_string()),
        (
            "GET",
            "/api/v1/namespaces/team-a/persistentvolumeclaims".to_string(),
        ),
        ("GET", format!("{STS_API}/team-a/statefulsets")),
    ] {
        let r = cp.call_as(SA, method, &path, None);
        assert_eq!(
            r.status, 403,
            "{method} {path} must be forbidden: {}",
            r.body
        );
    }
    drop(nbidle);

    // The statefulset overlay's role, as applying that overlay replaces it.
    let role = objects("deploy/overlays/statefulset/rbac.yaml").remove(0);
    let r = cp.call(
        "PUT",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/nbidle",
        Some(&role),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let nb = json!({"app.kubernetes.io/component": "notebook"});
    assert_eq!(
        cp.create(&statefulset("lab", "jupyter", nb, 1, "Retain"), "lab")
            .status,
        201
    );
    set_sts_status(&cp, "lab", "jupyter", 1);
    let nbidle = start_nbidle(dir.path(), "nbidle-sts", &kubeconfig, STATEFULSET, &[]).await;
    nbidle
        .wait_status("lab", "jupyter", "running", Duration::from_secs(30))
        .await;
    assert_eq!(
        nbidle.post("notebooks/lab/jupyter/stop").await.status(),
        200
    );
    assert_eq!(
        get(&cp, &format!("{STS_API}/lab/statefulsets/jupyter")).body["spec"]["replicas"],
        0
    );
    assert_eq!(
        nbidle.post("notebooks/lab/jupyter/start").await.status(),
        200
    );
    assert_eq!(
        get(&cp, &format!("{STS_API}/lab/statefulsets/jupyter")).body["spec"]["replicas"],
        1
    );
    for (method, path) in [
        ("DELETE", format!("{STS_API}/lab/statefulsets/jupyter")),
        ("GET", format!("{NB_API}/team-a/notebooks")),
        ("GET", "/api/v1/namespaces/lab/pods".to_string()),
    ] {
        let r = cp.call_as(SA, method, &path, None);
        assert_eq!(
            r.status, 403,
            "{method} {path} must be forbidden: {}",
            r.body
        );
    }
}

/// The whole path on Kubernetes objects: nbidle's exporter probes a real
/// Jupyter server (served without a token, as Kubeflow runs them), a real
/// Prometheus evaluates the generated rules, a real Alertmanager routes with
/// the generated config, and nbidle stops the Notebook through the API
/// server. The opted-out notebook, probed on the same server, is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kubeflow_notebook_is_stopped_by_prometheus_and_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &["team-a"]).await;
    for (name, ann) in [
        (
            "idle",
            json!({"notebooks.kubeflow.org/creator": "ada@example.com"}),
        ),
        ("keep", json!({"nbidle.io/autostop": "false"})),
    ] {
        assert_eq!(
            cp.create(&notebook("team-a", name, ann), "team-a").status,
            201
        );
        set_ready(&cp, "team-a", name, 1);
    }
    let jport = free_port();
    let root = dir.path().join("jupyter-root");
    std::fs::create_dir_all(&root).unwrap();
    let _jupyter = Proc::spawn(
        "jupyter",
        std::process::Command::new(jupyter())
            .args([
                "server",
                "--allow-root",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
            ])
            .arg(format!("--ServerApp.port={jport}"))
            .arg(format!("--ServerApp.root_dir={}", root.display()))
            .args([
                "--ServerApp.port_retries=0",
                "--IdentityProvider.token=",
                "--ServerApp.password=",
            ]),
        &dir.path().join("jupyter.log"),
    );
    wait_ready(
        "jupyter",
        &format!("http://127.0.0.1:{jport}/api/status"),
        Duration::from_secs(60),
    )
    .await;

    let kubeconfig = cp.kubeconfig(dir.path(), None);
    let port = free_port();
    let yaml = kube_config(
        dir.path(),
        port,
        &format!("  kind: kubeflow\n  kubeflow:\n    jupyter_url: \"http://127.0.0.1:{jport}/\""),
        &["team-a"],
    )
    .replace("idle_after: 30m", "idle_after: 20s")
    .replace(
        "evaluation_interval: 1m",
        "evaluation_interval: 1s\n  warn_before: 5s",
    )
    .replace("min_idle_after: 10m", "min_idle_after: 10s")
        + "alertmanager:\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1m\n";
    let nbidle = Nbidle::start_yaml(
        dir.path(),
        "nbidle",
        port,
        &yaml,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
    .await;
    let am = Alertmanager::start(dir.path(), &nbidle.config).await;
    let started = std::time::Instant::now();
    let _prom = Prometheus::start(dir.path(), &nbidle, &am).await;

    let path = format!("{NB_API}/team-a/notebooks/idle");
    let ann = eventually(
        "the Notebook stopped by the idle alert",
        Duration::from_secs(120),
        || async {
            let ann = get(&cp, &path).body["metadata"]["annotations"].clone();
            ann["kubeflow-resource-stopped"].is_string().then_some(ann)
        },
    )
    .await;
    eprintln!(
        "idle Notebook stopped {:?} after Prometheus started (idle_after 20s)",
        started.elapsed()
    );
    assert_eq!(ann["nbidle.io/stopped-by"], "idle-alert");
    assert_eq!(ann["nbidle.io/stop-reason"], "NotebookIdle");
    assert!(cp
        .events("team-a", "idle")
        .iter()
        .any(|e| e["reason"] == "Stopped"));
    let keep = get(&cp, &format!("{NB_API}/team-a/notebooks/keep")).body;
    assert!(
        keep["metadata"]["annotations"]
            .get("kubeflow-resource-stopped")
            .is_none(),
        "{keep}"
    );
    assert_eq!(
        nbidle
            .metric("nbidle_stops_total{result=\"error\",trigger=\"idle-alert\"}")
            .await,
        0.0
    );
}

/// `kubernetes.apply: true`: the generated monitoring objects are created
/// by server-side apply, as nbidle's ServiceAccount with deploy/'s roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_monitoring_objects_are_applied_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path(), &["team-a", "team-b"]).await;
    cp.install_crd(&repo("tests/crds/prometheusrule.yaml"))
        .await;
    cp.install_crd(&repo("tests/crds/monitors.yaml")).await;
    for f in [
        "deploy/base/namespace.yaml",
        "deploy/base/serviceaccount.yaml",
        "deploy/overlays/kubeflow/rbac.yaml",
        "deploy/monitoring/rbac.yaml",
    ] {
        cp.create_yaml(&std::fs::read_to_string(repo(f)).unwrap(), "nbidle");
    }
    const SA: &str = "system:serviceaccount:nbidle:nbidle";
    let kubeconfig = cp.kubeconfig(dir.path(), Some(SA));
    let port = free_port();
    let yaml = kube_config(dir.path(), port, KUBEFLOW, &["team-a", "team-b"])
        .replace("kubernetes:\n", "kubernetes:\n  apply: true\n")
        + "prometheus:\n  labels: {release: kube-prometheus-stack}\n";
    let _nbidle = Nbidle::start_yaml(
        dir.path(),
        "nbidle",
        port,
        &yaml,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
    .await;
    let mon = "/apis/monitoring.coreos.com/v1";
    let paths = [
        format!("{mon}/namespaces/nbidle/prometheusrules/nbidle-idle"),
        format!("{mon}/namespaces/nbidle/podmonitors/nbidle-notebooks"),
        format!("{mon}/namespaces/nbidle/servicemonitors/nbidle"),
        "/apis/monitoring.coreos.com/v1alpha1/namespaces/team-a/alertmanagerconfigs/nbidle".into(),
        "/apis/monitoring.coreos.com/v1alpha1/namespaces/team-b/alertmanagerconfigs/nbidle".into(),
    ];
    for p in &paths {
        let obj = eventually(&format!("{p} applied"), Duration::from_secs(30), || async {
            let r = get(&cp, p);
            (r.status == 200).then_some(r.body)
        })
        .await;
        assert_eq!(
            obj["metadata"]["labels"]["release"], "kube-prometheus-stack",
            "{p}"
        );
        let managers: Vec<&Value> = obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["manager"])
            .collect();
        assert_eq!(managers, [&json!("nbidle")], "{p}: applied by nbidle only");
        assert_eq!(obj["metadata"]["managedFields"][0]["operation"], "Apply");
    }
    // The rule applied is the one `nbidle rules` prints for this config.
    let rule = get(&cp, &paths[0]).body;
    assert_eq!(
        rule["spec"]["groups"][0]["rules"][1]["alert"],
        "NotebookIdle"
    );
    // Nothing more than create and patch: deleting is not allowed.
    let r = cp.call_as(SA, "DELETE", &paths[0], None);
    assert_eq!(r.status, 403, "{}", r.body);
}

/// A control plane with one running Kubeflow notebook, team-a/nb-1, and
/// nbidle watching team-a, with `edit` applied to the test config.
async fn one_running_notebook(
    dir: &std::path::Path,
    edit: impl Fn(String) -> String,
) -> (ControlPlane, Nbidle) {
    let cp = control_plane(dir, &["team-a"]).await;
    let r = cp.create(&notebook("team-a", "nb-1", json!({})), "team-a");
    assert_eq!(r.status, 201, "{}", r.body);
    set_ready(&cp, "team-a", "nb-1", 1);
    let kubeconfig = cp.kubeconfig(dir, None);
    let port = free_port();
    let yaml = edit(kube_config(dir, port, KUBEFLOW, &["team-a"]));
    let nbidle = Nbidle::start_yaml(
        dir,
        "nbidle",
        port,
        &yaml,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
    .await;
    (cp, nbidle)
}

/// `/readyz`'s status code.
async fn readyz(nbidle: &Nbidle) -> u16 {
    reqwest::get(format!("{}/readyz", nbidle.url))
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// The notebook as nbidle's API shows it, `None` while it does not.
async fn shown(nbidle: &Nbidle, ns: &str, name: &str) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(nbidle.api(&format!("notebooks/{ns}/{name}")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

const WATCH_UP: &str = r#"nbidle_kube_watch_up{resource="notebooks",watch_namespace="team-a"}"#;
const RELISTS: &str =
    r#"nbidle_kube_watch_relists_total{resource="notebooks",watch_namespace="team-a"}"#;

/// The bound (docs/kubernetes.md, "Operations") on how soon after the API
/// server answers again nbidle shows what changed meanwhile and after.
const CURRENT_AFTER_OUTAGE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_api_server_outage_changes_are_seen_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cp, nbidle) = one_running_notebook(dir.path(), |y| y).await;
    assert_eq!(nbidle.metric(WATCH_UP).await, 1.0);

    cp.kill_apiserver();
    let killed = std::time::Instant::now();
    // Readiness and the metric show the watch is not current.
    eventually("/readyz failing", Duration::from_secs(15), || async {
        (readyz(&nbidle).await == 503).then_some(())
    })
    .await;
    assert_eq!(nbidle.metric(WATCH_UP).await, 0.0);
    // The last known state is still served...
    assert_eq!(nbidle.notebook("team-a", "nb-1").await["status"], "running");
    // ...but an alert for a notebook it does not know may be for one created
    // meanwhile: 503, so Alertmanager delivers again, not 200 "unknown".
    let r = nbidle
        .webhook(&payload(vec![idle_alert(
            "team-a",
            "nb-new",
            &rfc3339_from_now(-3600),
        )]))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["alerts"][0]["decision"], "unavailable", "{body}");

    // A long outage: nbidle's retry delay must not have grown with it.
    let outage = Duration::from_secs(75);
    tokio::time::sleep(outage.saturating_sub(killed.elapsed())).await;
    cp.restart_apiserver().await;
    let back = std::time::Instant::now();
    let r = cp.create(&notebook("team-a", "nb-2", json!({})), "team-a");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = cp.call_patch(
        &format!("{NB_API}/team-a/notebooks/nb-1"),
        &json!({"metadata": {"annotations": {"nbidle.io/owner": "after-outage"}}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(
        "the changes made after the outage",
        CURRENT_AFTER_OUTAGE,
        || async {
            let nb1 = shown(&nbidle, "team-a", "nb-1").await?;
            shown(&nbidle, "team-a", "nb-2").await?;
            (nb1["owner"] == "after-outage").then_some(())
        },
    )
    .await;
    let seen = back.elapsed();
    assert_eq!(readyz(&nbidle).await, 200);
    assert_eq!(nbidle.metric(WATCH_UP).await, 1.0);
    // The first list, and one after the restarted API server's 410.
    assert!(nbidle.metric(RELISTS).await >= 2.0);
    eprintln!("changes after a {outage:?} outage seen {seen:?} after the API server was ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_api_server_gets_5xx_answers_within_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, nbidle) = one_running_notebook(dir.path(), |y| y).await;

    cp.freeze_apiserver(true);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let alert = payload(vec![idle_alert(
        "team-a",
        "nb-1",
        // After the notebook's start: not a stale alert.
        &rfc3339_from_now(0),
    )]);
    let webhook = http
        .post(format!("{}/webhook/alertmanager", nbidle.url))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&alert)
        .send();
    let stop = http
        .post(nbidle.api("notebooks/team-a/nb-1/stop"))
        .bearer_auth(API_TOKEN)
        .send();
    let (webhook, stop) = tokio::join!(webhook, stop);
    let took = started.elapsed();
    cp.freeze_apiserver(false);
    let (webhook, stop) = (
        webhook.expect("webhook answered"),
        stop.expect("stop answered"),
    );
    // kubernetes.request_timeout is 10s by default.
    assert!(took < Duration::from_secs(13), "answers took {took:?}");
    assert_eq!(webhook.status(), 503);
    assert_eq!(stop.status(), 503);
    assert_eq!(stop.headers()["retry-after"], "5");
    let body: Value = stop.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // Thawed, the same stop goes through.
    let r = nbidle.post("notebooks/team-a/nb-1/stop").await;
    assert_eq!(r.status(), 200);
    let nb = get(&cp, &format!("{NB_API}/team-a/notebooks/nb-1"));
    assert!(nb.body["metadata"]["annotations"]["kubeflow-resource-stopped"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_publishes_within_seconds_of_the_first_list() {
    let dir = tempfile::tempdir().unwrap();
    // A long interval, as in deploy/: a first round that ran before the
    // watch listed would leave the series out for all of it.
    let (_cp, nbidle) =
        one_running_notebook(dir.path(), |y| y.replace("interval: 1s", "interval: 1m")).await;
    let series = r#"nbidle_notebook_probe_success{namespace="team-a",notebook="nb-1"} 0"#;
    eventually(
        "the notebook's probe series",
        Duration::from_secs(5),
        || async {
            nbidle
                .exporter_metrics()
                .await
                .contains(series)
                .then_some(())
        },
    )
    .await;
}
