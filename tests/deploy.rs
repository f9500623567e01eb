//! Every kustomization in deploy/, rendered by a real kustomize (kubectl
//! built from the Go module proxy, the test API server's own release) and
//! applied to a real kube-apiserver with prometheus-operator's and
//! Kubeflow's CRDs (as written for the tests): what `kubectl apply -k` does
//! for an operator. The token files the secret generators read are created
//! in a copy of deploy/, never in the repository.

mod common;

use std::path::Path;
use std::process::Command;

use common::envtest::ControlPlane;
use common::kubectl::*;
use serde_json::Value;

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

const CLUSTER_SCOPED: [&str; 3] = ["Namespace", "ClusterRole", "ClusterRoleBinding"];

/// The names of the ConfigMaps and Secrets a Deployment's pods mount.
fn mounted(deployment: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for v in deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(n) = v["configMap"]["name"].as_str() {
            out.push(("configmaps", n.to_string()));
        }
        if let Some(n) = v["secret"]["secretName"].as_str() {
            out.push(("secrets", n.to_string()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kustomization_renders_and_the_apiserver_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let kubectl = kubectl();
    let checkout = dir.path().join("checkout");
    copy_checkout("deploy", &checkout);
    let deploy = checkout.join("deploy");
    let dirs = kustomizations(&deploy);
    assert!(!dirs.is_empty(), "no kustomization.yaml under deploy/");
    for d in &dirs {
        create_generator_files(d);
    }
    // Render all of them first, so one failure names every broken one.
    let rendered: Vec<(String, Result<String, String>)> = dirs
        .iter()
        .map(|d| {
            let rel = d.strip_prefix(&checkout).unwrap().display().to_string();
            (rel, kustomize(&kubectl, d))
        })
        .collect();
    let failed: Vec<String> = rendered
        .iter()
        .filter_map(|(rel, r)| r.as_ref().err().map(|e| format!("{rel}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "`kubectl kustomize` fails for:\n{}",
        failed.join("\n")
    );

    let cp = ControlPlane::start(dir.path()).await;
    for crd in ["notebook", "prometheusrule", "monitors"] {
        cp.install_crd(&repo(&format!("tests/crds/{crd}.yaml")))
            .await;
    }
    let kubeconfig = cp.kubeconfig(dir.path(), None);
    // The image the base's `images:` entry sets, which operators edit.
    let base: Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy.join("base/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let img = &base["images"][0];
    let base_image = format!(
        "{}:{}",
        img["newName"].as_str().unwrap(),
        img["newTag"].as_str().unwrap()
    );
    for (i, (rel, yaml)) in rendered.iter().enumerate() {
        let yaml = yaml.as_ref().unwrap();
        let objects = documents(yaml);
        assert!(!objects.is_empty(), "{rel} renders nothing");
        for o in &objects {
            let kind = o["kind"].as_str().unwrap();
            assert!(
                CLUSTER_SCOPED.contains(&kind) || o["metadata"]["namespace"].is_string(),
                "{rel}: {kind} {} has no namespace (it would land in the kubeconfig's)",
                o["metadata"]["name"]
            );
        }
        let file = dir.path().join(format!("render-{i}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(&kubectl)
            .args(["apply", "-f"])
            .arg(&file)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl apply of {rel}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{rel}: {} objects applied", objects.len());

        // Generated names (hash suffixes) are what the pods mount, and the
        // config the container serves passes `nbidle check` with the
        // tokens the Secret holds.
        for d in objects.iter().filter(|o| o["kind"] == "Deployment") {
            if !objects.iter().any(|o| o["kind"] == "ConfigMap") {
                continue; // a base, configured by its overlays
            }
            let ns = d["metadata"]["namespace"].as_str().unwrap();
            for (plural, name) in mounted(d) {
                let r = cp.call(
                    "GET",
                    &format!("/api/v1/namespaces/{ns}/{plural}/{name}"),
                    None,
                );
                assert_eq!(
                    r.status, 200,
                    "{rel}: the Deployment mounts {plural}/{name}"
                );
            }
            // As stored: two replicas, hardened, probed, the base's image.
            let name = d["metadata"]["name"].as_str().unwrap();
            let stored = cp
                .call(
                    "GET",
                    &format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"),
                    None,
                )
                .body;
            assert_eq!(stored["spec"]["replicas"], 2, "{rel}");
            let c = &stored["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"], true,
                "{rel}"
            );
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{rel}");
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez", "{rel}");
            assert_eq!(c["image"].as_str(), Some(base_image.as_str()), "{rel}");

            let root = dir.path().join(format!("pod-{i}"));
            let files = PodFiles::materialize(&cp, d, "check", "127.0.0.1", &root);
            let mut args = files.args.clone();
            assert_eq!(args[0], "serve", "{rel}: {args:?}");
            args[0] = "check".into();
            let out = Command::new(env!("CARGO_BIN_EXE_nbidle"))
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{rel}: the pod's config fails `nbidle check`:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
