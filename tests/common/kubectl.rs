//! kubectl built from source by `scripts/envtest/build.sh` (the release of
//! the test API server, with its built-in kustomize), and the part of a
//! kubelet the deploy tests need: a Deployment's pod run as a local process,
//! its volumes, environment and ServiceAccount token taken from the API
//! server as a kubelet takes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::envtest::ControlPlane;
use super::Proc;

/// The kubectl binary, building it on first use.
pub fn kubectl() -> PathBuf {
    super::envtest::built("NBIDLE_KUBECTL")
}

/// `kubectl kustomize <dir>`: the rendered YAML, or kubectl's error.
pub fn kustomize(kubectl: &Path, dir: &Path) -> Result<String, String> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("running kubectl");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The objects of a multi-document YAML text.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Every directory under `root` holding a `kustomization.yaml`, sorted.
pub fn kustomizations(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        if d.join("kustomization.yaml").is_file() {
            found.push(d.clone());
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    found.sort();
    found
}

/// The files the repository's working tree holds (tracked, and new ones not
/// ignored) under `sub`, copied into `dest`: what an operator's checkout
/// has, without build output or local token files.
pub fn copy_checkout(sub: &str, dest: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("git")
        .current_dir(repo)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
        ])
        .arg(sub)
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    for f in out.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = Path::new(std::str::from_utf8(f).unwrap());
        let src = repo.join(rel);
        if !src.is_file() {
            continue; // deleted in the working tree
        }
        let dst = dest.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&src, &dst).unwrap();
    }
}

/// Creates every file a secretGenerator of the kustomization in `dir`
/// names that does not exist yet, each with a token of its own.
pub fn create_generator_files(dir: &Path) {
    let k: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    for g in k["secretGenerator"].as_array().into_iter().flatten() {
        for f in g["files"].as_array().into_iter().flatten() {
            let entry = f.as_str().unwrap();
            let rel = entry.split_once('=').map_or(entry, |(_, p)| p);
            let path = dir.join(rel);
            if !path.exists() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                std::fs::write(&path, format!("{name}-{:016x}\n", rand_u64())).unwrap();
            }
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// Standard base64 (Secret `data`), padding optional.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// A kubeconfig for `cp` that authenticates with `token` (no admin rights,
/// no impersonation) and trusts the API server's CA.
pub fn token_kubeconfig(cp: &ControlPlane, path: &Path, token: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: pod
  user:
    token: {token}
contexts:
- name: envtest
  context:
    cluster: envtest
    user: pod
current-context: envtest
",
            url = cp.url,
            ca = cp.cert.display(),
        ),
    )
    .unwrap();
}

/// A token for a ServiceAccount from the TokenRequest API, as the kubelet
/// gets one for a pod's projected token volume.
pub fn service_account_token(cp: &ControlPlane, namespace: &str, sa: &str) -> String {
    let r = cp.call(
        "POST",
        &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token"),
        Some(&json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        })),
    );
    assert_eq!(
        r.status, 201,
        "TokenRequest for {namespace}/{sa}: {}",
        r.body
    );
    r.body["status"]["token"].as_str().unwrap().to_string()
}

/// One pod of a Deployment, run as a local process: the image's entrypoint
/// is `entrypoint`, the pod's address is a loopback address of its own, and
/// every path under one of its volume mounts lives under `root` instead.
pub struct LocalPod {
    pub name: String,
    pub ip: String,
    pub root: PathBuf,
    pub proc: Proc,
    pub log: PathBuf,
}

/// What a kubelet prepares for a pod's first container: its volumes on
/// disk, its arguments and environment.
pub struct PodFiles {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub service_account: String,
}

impl PodFiles {
    /// Materializes the pod's volumes from the API server under `root`.
    /// Paths under the mounts are rewritten to `root` in the container's
    /// arguments and in the files of configMap volumes; `0.0.0.0` (every
    /// address of the pod) becomes `ip`.
    pub fn materialize(
        cp: &ControlPlane,
        deployment: &Value,
        name: &str,
        ip: &str,
        root: &Path,
    ) -> PodFiles {
        let ns = deployment["metadata"]["namespace"].as_str().unwrap();
        let spec = &deployment["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        assert!(
            container.get("command").is_none(),
            "the container must run the image's entrypoint"
        );
        std::fs::create_dir_all(root).unwrap();
        let mounts = container["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mount_paths: Vec<String> = mounts
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap().to_string())
            .collect();
        let rewrite = |text: &str| rewrite_paths(text, &mount_paths, root, ip);
        for m in &mounts {
            let vol_name = m["name"].as_str().unwrap();
            let vol = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == vol_name)
                .unwrap_or_else(|| panic!("volume {vol_name} not in the pod spec"));
            let dir = under(root, m["mountPath"].as_str().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(cm) = vol.get("configMap") {
                let name = cm["name"].as_str().unwrap();
                let obj = get_ok(cp, &format!("/api/v1/namespaces/{ns}/configmaps/{name}"));
                for (k, v) in obj["data"].as_object().into_iter().flatten() {
                    std::fs::write(dir.join(k), rewrite(v.as_str().unwrap())).unwrap();
                }
            } else if let Some(s) = vol.get("secret") {
                let name = s["secretName"].as_str().unwrap();
                let obj = get_ok(cp, &format!("/api/v1/namespaces/{ns}/secrets/{name}"));
                for (k, v) in obj["data"].as_object().into_iter().flatten() {
                    std::fs::write(dir.join(k), base64_decode(v.as_str().unwrap())).unwrap();
                }
            } else if vol.get("emptyDir").is_none() {
                panic!("the test's kubelet cannot mount volume {vol}");
            }
        }
        let args = container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| rewrite(a.as_str().unwrap()))
            .collect();
        let env = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let key = e["name"].as_str().unwrap().to_string();
                let value = if let Some(v) = e["value"].as_str() {
                    v.to_string()
                } else {
                    match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                        Some("metadata.name") => name.to_string(),
                        Some("metadata.namespace") => ns.to_string(),
                        _ => panic!("the test's kubelet cannot set {e}"),
                    }
                };
                (key, value)
            })
            .collect();
        PodFiles {
            args,
            env,
            service_account: spec["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
        }
    }
}

impl LocalPod {
    /// Starts the pod's first container with a ServiceAccount token from
    /// the TokenRequest API in its kubeconfig: the pod's rights, no more.
    pub fn start(
        cp: &ControlPlane,
        deployment: &Value,
        name: &str,
        ip: &str,
        root: &Path,
        entrypoint: &Path,
    ) -> LocalPod {
        let ns = deployment["metadata"]["namespace"].as_str().unwrap();
        let files = PodFiles::materialize(cp, deployment, name, ip, root);
        let token = service_account_token(cp, ns, &files.service_account);
        let kubeconfig = root.join("kubeconfig");
        token_kubeconfig(cp, &kubeconfig, &token);
        let mut cmd = Command::new(entrypoint);
        cmd.args(&files.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .envs(files.env.iter().map(|(k, v)| (k, v)))
            .current_dir(root);
        let log = root.join("container.log");
        let proc = Proc::spawn(name, &mut cmd, &log);
        LocalPod {
            name: name.into(),
            ip: ip.into(),
            root: root.to_path_buf(),
            proc,
            log,
        }
    }

    /// Waits until the container's readiness probe (HTTP GET) answers 2xx;
    /// panics with the container's log after `timeout`.
    pub fn wait_ready(&mut self, deployment: &Value, timeout: Duration) {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let probe = &container["readinessProbe"]["httpGet"];
        let port = container_port(container, &probe["port"]);
        let url = format!(
            "http://{}:{port}{}",
            self.ip,
            probe["path"].as_str().unwrap()
        );
        let deadline = Instant::now() + timeout;
        loop {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                ])
                .arg(&url)
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).starts_with('2') {
                return;
            }
            let exited = self.proc.exited();
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "pod {} not ready at {url} ({}):\n{}",
                    self.name,
                    exited.map_or(format!("after {timeout:?}"), |s| format!(
                        "container exited: {s}"
                    )),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A probe's port: a number, or the name of a container port.
fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().unwrap();
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// `mount` (absolute) below `root`.
fn under(root: &Path, mount: &str) -> PathBuf {
    root.join(mount.trim_start_matches('/'))
}

/// Rewrites the paths of the outermost mounts to lie under `root` (inner
/// mounts such as `/etc/nbidle/secrets` under `/etc/nbidle` follow), and
/// the unspecified address to the pod's.
fn rewrite_paths(text: &str, mounts: &[String], root: &Path, ip: &str) -> String {
    let root_s = root.display().to_string();
    let outer: Vec<&String> = mounts
        .iter()
        .filter(|m| {
            !mounts
                .iter()
                .any(|o| o != *m && m.starts_with(&format!("{o}/")))
        })
        .collect();
    let mut out = text.to_string();
    for m in outer {
        assert!(!root_s.contains(m.as_str()), "{root_s} contains {m}");
        out = out.replace(m.as_str(), &format!("{root_s}{m}"));
    }
    out.replace("0.0.0.0:", &format!("{ip}:"))
}

fn get_ok(cp: &ControlPlane, path: &str) -> Value {
    let r = cp.call("GET", path, None);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.body
}

/// Plays the Deployment controller and the kubelet for one Deployment:
/// on every new generation its old pods are stopped, `replicas` new ones are
/// started (pod `i` at `127.0.0.<i+1>`), and once all are ready the status
/// says so, which is what `kubectl rollout status` waits for.
pub struct DeploymentRunner {
    pub namespace: String,
    pub name: String,
    pub dir: PathBuf,
    pub entrypoint: PathBuf,
    pub pods: Vec<LocalPod>,
    pub rolled_out: i64,
    /// The ConfigMaps and Secrets each rollout read, for the tests' checks.
    pub rollouts: Vec<BTreeMap<String, String>>,
}

impl DeploymentRunner {
    pub fn new(namespace: &str, name: &str, dir: &Path, entrypoint: &Path) -> DeploymentRunner {
        DeploymentRunner {
            namespace: namespace.into(),
            name: name.into(),
            dir: dir.to_path_buf(),
            entrypoint: entrypoint.to_path_buf(),
            pods: Vec::new(),
            rolled_out: 0,
            rollouts: Vec::new(),
        }
    }

    /// One reconciliation: a no-op unless the Deployment has a generation
    /// not rolled out yet.
    pub fn reconcile(&mut self, cp: &ControlPlane) {
        let path = format!(
            "/apis/apps/v1/namespaces/{}/deployments/{}",
            self.namespace, self.name
        );
        let r = cp.call("GET", &path, None);
        if r.status == 404 {
            return;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        let d = r.body;
        let generation = d["metadata"]["generation"].as_i64().unwrap();
        if generation == self.rolled_out {
            return;
        }
        self.pods.clear(); // SIGTERM to the old pods
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let mut seen = BTreeMap::new();
        for v in d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(n) = v["configMap"]["name"].as_str() {
                seen.insert(v["name"].as_str().unwrap().to_string(), n.to_string());
            }
            if let Some(n) = v["secret"]["secretName"].as_str() {
                seen.insert(v["name"].as_str().unwrap().to_string(), n.to_string());
            }
        }
        for i in 0..replicas {
            let pod = format!("{}-g{generation}-{i}", self.name);
            let root = self.dir.join("pods").join(&pod);
            let ip = format!("127.0.0.{}", i + 1);
            self.pods
                .push(LocalPod::start(cp, &d, &pod, &ip, &root, &self.entrypoint));
        }
        for p in &mut self.pods {
            p.wait_ready(&d, Duration::from_secs(30));
        }
        let status = json!({"status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }});
        let r = cp.call_patch(&format!("{path}/status"), &status);
        assert_eq!(r.status, 200, "{}", r.body);
        self.rolled_out = generation;
        self.rollouts.push(seen);
    }
}
