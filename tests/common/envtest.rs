//! A real Kubernetes control plane for tests: etcd and kube-apiserver built
//! from source by `scripts/envtest/build.sh` (cached), on loopback, with a
//! static admin token. No controllers run; tests play their part.
//!
//! The API is called with curl: nbidle's own HTTP client is built without
//! TLS, and the apiserver only serves HTTPS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{eventually, free_port, Proc};

pub const ADMIN_TOKEN: &str = "envtest-admin-token";

/// The binaries' directory, building them on first use.
pub fn binaries() -> PathBuf {
    built("NBIDLE_ENVTEST_BIN")
}

/// What `scripts/envtest/build.sh` (building on first use, cached after)
/// prints as `<key>=<path>`: the binaries' directory, or kubectl.
pub fn built(key: &str) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/envtest/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("running scripts/envtest/build.sh");
    assert!(
        out.status.success(),
        "scripts/envtest/build.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let prefix = format!("{key}=");
    let path = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("build.sh prints {key}=<path>"));
    PathBuf::from(path)
}

pub struct ControlPlane {
    pub url: String,
    /// The apiserver's self-signed serving certificate (and its CA).
    pub cert: PathBuf,
    _etcd: Proc,
    apiserver: Option<Proc>,
    spawn: ApiServer,
    restarts: u32,
}

/// How to start this control plane's API server (again).
struct ApiServer {
    bin: PathBuf,
    dir: PathBuf,
    etcd_client: u16,
    port: u16,
}

impl ApiServer {
    fn spawn(&self, log: &str) -> Proc {
        let dir = &self.dir;
        let key = dir.join("sa.key");
        Proc::spawn(
            "kube-apiserver",
            Command::new(&self.bin)
                .arg(format!(
                    "--etcd-servers=http://127.0.0.1:{}",
                    self.etcd_client
                ))
                .arg(format!("--secure-port={}", self.port))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--cert-dir={}", dir.join("certs").display()))
                .arg(format!(
                    "--token-auth-file={}",
                    dir.join("tokens.csv").display()
                ))
                .arg("--authorization-mode=RBAC")
                .arg(format!("--service-account-key-file={}", key.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    key.display()
                ))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                // An address range for Service IPs; nothing is routed to it.
                .arg("--service-cluster-ip-range=10.96.0.0/24")
                .arg("--disable-admission-plugins=ServiceAccount"),
            &dir.join(log),
        )
    }
}

/// The outcome of one API call: HTTP status and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl ControlPlane {
    pub async fn start(dir: &Path) -> ControlPlane {
        let bin = binaries();
        let (etcd_client, etcd_peer) = (free_port(), free_port());
        let etcd = Proc::spawn(
            "etcd",
            Command::new(bin.join("etcd"))
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{etcd_client}"
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
                .arg("--unsafe-no-fsync"),
            &dir.join("etcd.log"),
        );
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin-uid,system:masters\n"),
        )
        .unwrap();
        let key = dir.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .expect("openssl");
        assert!(status.status.success(), "openssl genrsa failed");
        let port = free_port();
        let spawn = ApiServer {
            bin: bin.join("kube-apiserver"),
            dir: dir.to_path_buf(),
            etcd_client,
            port,
        };
        let apiserver = spawn.spawn("kube-apiserver.log");
        let cp = ControlPlane {
            url: format!("https://127.0.0.1:{port}"),
            cert: dir.join("certs").join("apiserver.crt"),
            _etcd: etcd,
            apiserver: Some(apiserver),
            spawn,
            restarts: 0,
        };
        cp.wait_ready().await;
        cp
    }

    async fn wait_ready(&self) {
        eventually("kube-apiserver ready", Duration::from_secs(90), || async {
            (self.call("GET", "/readyz", None).status == 200).then_some(())
        })
        .await;
    }

    /// Kills the API server (SIGKILL: no goodbye to its clients); etcd and
    /// its data stay.
    pub fn kill_apiserver(&mut self) {
        if let Some(p) = self.apiserver.take() {
            unsafe {
                libc::kill(p.pid(), libc::SIGKILL);
            }
            drop(p);
        }
    }

    /// Starts the API server again on the same port and etcd, and waits
    /// until it is ready.
    pub async fn restart_apiserver(&mut self) {
        self.restarts += 1;
        let log = format!("kube-apiserver-{}.log", self.restarts);
        self.apiserver = Some(self.spawn.spawn(&log));
        self.wait_ready().await;
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the API server: its sockets stay
    /// open and nothing answers, as with a hung process or host.
    pub fn freeze_apiserver(&self, frozen: bool) {
        let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        if let Some(p) = &self.apiserver {
            unsafe {
                libc::kill(p.pid(), sig);
            }
        }
    }

    /// One API call as the admin; `body` is JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.request(method, path, "application/json", body)
    }

    /// A JSON merge patch.
    pub fn call_patch(&self, path: &str, patch: &Value) -> Reply {
        self.request("PATCH", path, "application/merge-patch+json", Some(patch))
    }

    /// One API call as `user` (impersonated by the admin), to check what
    /// an RBAC role allows.
    pub fn call_as(&self, user: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.request_as(Some(user), method, path, "application/json", body)
    }

    fn request(&self, method: &str, path: &str, content_type: &str, body: Option<&Value>) -> Reply {
        self.request_as(None, method, path, content_type, body)
    }

    fn request_as(
        &self,
        user: Option<&str>,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Reply {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("-H")
            .arg(format!("Authorization: Bearer {ADMIN_TOKEN}"))
            .arg(format!("{}{path}", self.url));
        if let Some(u) = user {
            cmd.arg("-H").arg(format!("Impersonate-User: {u}"));
        }
        if let Some(b) = body {
            cmd.arg("-H")
                .arg(format!("Content-Type: {content_type}"))
                .arg("--data-binary")
                .arg(b.to_string());
        }
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        Reply {
            status: code.trim().parse().unwrap_or(0),
            body: serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        }
    }

    /// Creates the CRDs of a (multi-document) YAML file and waits until
    /// each is served.
    pub async fn install_crd(&self, yaml_path: &Path) {
        let text = std::fs::read_to_string(yaml_path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let crd = Value::deserialize(doc).unwrap();
            let name = crd["metadata"]["name"].as_str().unwrap().to_string();
            let r = self.call(
                "POST",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                Some(&crd),
            );
            assert_eq!(r.status, 201, "creating CRD {name}: {}", r.body);
            eventually(
                &format!("CRD {name} established"),
                Duration::from_secs(30),
                || async {
                    let r = self.call(
                        "GET",
                        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
                        None,
                    );
                    let established = r.body["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    });
                    established.then_some(())
                },
            )
            .await;
        }
    }

    /// Creates a namespace.
    pub fn create_namespace(&self, name: &str) {
        let r = self.call(
            "POST",
            "/api/v1/namespaces",
            Some(&serde_json::json!({"metadata": {"name": name}})),
        );
        assert_eq!(r.status, 201, "creating namespace {name}: {}", r.body);
    }

    /// Creates every object of a (multi-document) YAML text; `plural` maps a
    /// kind to its resource path segment.
    pub fn create_all(&self, yaml: &str, plural: impl Fn(&str) -> &'static str) -> Vec<Reply> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|doc| {
                let obj = Value::deserialize(doc).unwrap();
                let api = obj["apiVersion"].as_str().unwrap();
                let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
                let kind = obj["kind"].as_str().unwrap();
                self.call(
                    "POST",
                    &format!("/apis/{api}/namespaces/{ns}/{}", plural(kind)),
                    Some(&obj),
                )
            })
            .collect()
    }
}

/// The API path of a kind's collection, for the kinds the tests create.
fn collection(api_version: &str, kind: &str, namespace: &str) -> String {
    let (plural, namespaced) = match kind {
        "Namespace" => ("namespaces", false),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "CustomResourceDefinition" => ("customresourcedefinitions", false),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "ServiceAccount" => ("serviceaccounts", true),
        "ConfigMap" => ("configmaps", true),
        "Secret" => ("secrets", true),
        "Service" => ("services", true),
        "Deployment" => ("deployments", true),
        "StatefulSet" => ("statefulsets", true),
        "PersistentVolumeClaim" => ("persistentvolumeclaims", true),
        "PodDisruptionBudget" => ("poddisruptionbudgets", true),
        "Notebook" => ("notebooks", true),
        "PrometheusRule" => ("prometheusrules", true),
        "PodMonitor" => ("podmonitors", true),
        "ServiceMonitor" => ("servicemonitors", true),
        "AlertmanagerConfig" => ("alertmanagerconfigs", true),
        other => panic!("the test harness does not know kind {other}"),
    };
    let base = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    if namespaced {
        format!("{base}/namespaces/{namespace}/{plural}")
    } else {
        format!("{base}/{plural}")
    }
}

impl ControlPlane {
    /// Creates one object; namespaced objects without a namespace go to
    /// `default_ns`.
    pub fn create(&self, obj: &Value, default_ns: &str) -> Reply {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or(default_ns);
        let path = collection(
            obj["apiVersion"].as_str().expect("apiVersion"),
            obj["kind"].as_str().expect("kind"),
            ns,
        );
        self.call("POST", &path, Some(obj))
    }

    /// Creates every object of a multi-document YAML text and asserts each
    /// was accepted.
    pub fn create_yaml(&self, yaml: &str, default_ns: &str) {
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let obj = Value::deserialize(doc).unwrap();
            if obj.is_null() {
                continue;
            }
            let r = self.create(&obj, default_ns);
            assert_eq!(
                r.status, 201,
                "creating {} {}: {}",
                obj["kind"], obj["metadata"]["name"], r.body
            );
        }
    }

    /// The events.k8s.io Events about one object.
    pub fn events(&self, namespace: &str, name: &str) -> Vec<Value> {
        let r = self.call(
            "GET",
            &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .cloned()
            .collect()
    }

    /// A kubeconfig for this control plane with the admin token, acting as
    /// `impersonate` when given (nbidle then has exactly that user's rights).
    pub fn kubeconfig(&self, dir: &Path, impersonate: Option<&str>) -> PathBuf {
        let path = dir.join(format!(
            "kubeconfig-{}",
            impersonate.unwrap_or("admin").replace(':', "-")
        ));
        let imp = impersonate
            .map(|u| format!("\n    as: {u}"))
            .unwrap_or_default();
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: nbidle
  user:
    token: {ADMIN_TOKEN}{imp}
contexts:
- name: envtest
  context:
    cluster: envtest
    user: nbidle
current-context: envtest
",
                url = self.url,
                ca = self.cert.display(),
            ),
        )
        .unwrap();
        path
    }
}
