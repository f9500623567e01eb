//! `make bench`: the Kubeflow backend at 10,000 Notebooks, against a real
//! kube-apiserver + etcd (envtest, as the tests use).
//!
//! - 10,000 Notebooks with realistic pod templates in 10 namespaces, all
//!   reported ready (as Kubeflow's controller would);
//! - the release nbidle watching them cluster-wide: time until `/readyz`
//!   (the first list is in the cache), and resident memory after the sync
//!   and at peak (`VmRSS`, `VmHWM`), with the exporter probing every notebook
//!   (a tiny HTTP server here answers as Jupyter with nothing running);
//! - one webhook payload with 1,000 firing alerts: time until the response
//!   (every Notebook annotated, every Event recorded), and a check that the
//!   API server has exactly those 1,000 annotations.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};

const NOTEBOOKS: usize = 10_000;
const NAMESPACES: usize = 10;
const ALERTS: usize = 1_000;
const WEBHOOK_TOKEN: &str = "bench-webhook";
const API_TOKEN: &str = "bench-api";

fn notebook(ns: &str, name: &str) -> Value {
    // A pod template about the size of Kubeflow's Jupyter web app's.
    json!({
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"app": name, "access-ml-pipeline": "true"},
            "annotations": {"notebooks.kubeflow.org/creator": format!("{name}@example.com"),
                            "notebooks.kubeflow.org/server-type": "jupyter"}},
        "spec": {"template": {"spec": {
            "serviceAccountName": "default-editor",
            "containers": [{
                "name": name,
                "image": "kubeflownotebookswg/jupyter-scipy:v1.9.0",
                "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                              "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}},
                "env": [{"name": "NB_PREFIX", "value": format!("/notebook/{ns}/{name}")},
                        {"name": "JUPYTER_ENABLE_LAB", "value": "yes"}],
                "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"},
                                 {"name": "dshm", "mountPath": "/dev/shm"}],
                "ports": [{"name": "notebook-port", "containerPort": 8888, "protocol": "TCP"}],
            }],
            "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": format!("{name}-workspace")}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }}},
    })
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cp = common::envtest::ControlPlane::start(dir.path()).await;
    cp.install_crd(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crds/notebook.yaml"),
    )
    .await;
    let kubeconfig = cp.kubeconfig(dir.path(), None);
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let client = kube::Client::try_default().await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubeflow.org", "v1", "Notebook"),
        "notebooks",
    );

    // The notebooks, created and marked ready concurrently.
    let t = Instant::now();
    for n in 0..NAMESPACES {
        cp.create_namespace(&format!("team-{n}"));
    }
    stream::iter(0..NOTEBOOKS)
        .map(|i| {
            let client = client.clone();
            let ar = ar.clone();
            async move {
                let ns = format!("team-{}", i % NAMESPACES);
                let name = format!("nb-{i}");
                let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
                let obj: DynamicObject = serde_json::from_value(notebook(&ns, &name)).unwrap();
                api.create(&PostParams::default(), &obj).await.unwrap();
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"readyReplicas": 1}})),
                )
                .await
                .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let created = t.elapsed();

    // Jupyter stand-in for the exporter's probes.
    let probe_port = support::serve_probes();

    let port = common::free_port();
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\ndata_dir: data\nauth: {{webhook_token: {WEBHOOK_TOKEN}, api_tokens: [{API_TOKEN}]}}\n\
         backend:\n  kind: kubeflow\n  kubeflow:\n    jupyter_url: \"http://127.0.0.1:{probe_port}/{{namespace}}/{{name}}/\"\n"
    );
    let cfg = dir.path().join("nbidle.yaml");
    std::fs::write(&cfg, config).unwrap();
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nbidle"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NBIDLE_LOG", "warn")
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    loop {
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "nbidle never synced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let synced = t.elapsed();
    let t = Instant::now();
    let list: Value = http
        .get(format!("{base}/api/v1/notebooks"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list_time = t.elapsed();
    let notebooks = list["notebooks"].as_array().unwrap();
    assert_eq!(notebooks.len(), NOTEBOOKS);
    assert!(notebooks.iter().all(|n| n["status"] == "running"));
    // Two exporter rounds over every notebook (15 s interval).
    tokio::time::sleep(Duration::from_secs(32)).await;
    let rss_synced = support::proc_kib(pid, "VmRSS:");

    // 1,000 alerts in one payload.
    let starts_at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let alerts: Vec<Value> = (0..ALERTS)
        .map(|i| {
            common::idle_alert(
                &format!("team-{}", i % NAMESPACES),
                &format!("nb-{i}"),
                &starts_at,
            )
        })
        .collect();
    let body = serde_json::to_vec(&common::payload(alerts)).unwrap();
    let t = Instant::now();
    let r = http
        .post(format!("{base}/webhook/alertmanager"))
        .bearer_auth(WEBHOOK_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let stop_time = t.elapsed();
    assert!(r.status().is_success(), "{}", r.status());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stopped"], ALERTS, "every alert stopped its notebook");
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let stopped = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|o| {
            o.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubeflow-resource-stopped"))
        })
        .count();
    assert_eq!(
        stopped, ALERTS,
        "exactly the alerted Notebooks are annotated"
    );
    let hwm = support::proc_kib(pid, "VmHWM:");
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = child.wait();

    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| {NOTEBOOKS} Notebooks created and marked ready (setup, 32 concurrent) | {:.1} s |",
        created.as_secs_f64()
    );
    println!(
        "| nbidle start → ready (watch listed {NOTEBOOKS} Notebooks) | {:.2} s |",
        synced.as_secs_f64()
    );
    println!(
        "| GET /api/v1/notebooks ({NOTEBOOKS}) | {:.0} ms |",
        list_time.as_secs_f64() * 1e3
    );
    println!(
        "| nbidle RSS, synced, exporter probing all | {:.1} MiB |",
        rss_synced as f64 / 1024.0
    );
    println!(
        "| 1 payload, {ALERTS} alerts → {ALERTS} Notebooks annotated + Events | {:.2} s |",
        stop_time.as_secs_f64()
    );
    println!(
        "| nbidle peak RSS (VmHWM) | {:.1} MiB |",
        hwm as f64 / 1024.0
    );
}
