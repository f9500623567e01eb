//! docs/kubernetes.md as written, run against a real kube-apiserver + etcd
//! (envtest): every ` ```sh ` block, in order, in one bash process (`set
//! -euo pipefail`), in a copy of the repository, with a kubectl built from
//! the API server's release on PATH and KUBECONFIG pointing at the test API
//! server as its admin. `# edit <file>` YAML blocks are merged into their
//! file before the next block; `# <file>` YAML blocks must match the file.
//!
//! What the test API server lacks, the test plays:
//! - the Deployment controller and kubelet (`DeploymentRunner`): on every
//!   new generation of `nbidle/nbidle` it runs the pods as local nbidle
//!   processes, their config from the ConfigMap and their tokens from the
//!   Secret read back from the API server, a ServiceAccount token from the
//!   TokenRequest API (only the ServiceAccount's RBAC), pod 0 on
//!   127.0.0.1:9877, where the guide's `port-forward` would put it; then it
//!   sets the Deployment's status, which `rollout status` waits for;
//! - Kubeflow's notebook controller and the StatefulSet controller: the
//!   ready replicas of the guide's example notebooks, following their
//!   stop annotations and replica counts;
//! - the stack's Alertmanager: a real one on 127.0.0.1:9093, where the
//!   guide's `port-forward` would put it;
//! - the cluster's users: the Notebooks `team-a/train` and `team-a/explore`
//!   and the notebook StatefulSet `lab/jupyter` exist before the guide
//!   starts, as do Kubeflow's and prometheus-operator's CRDs.
//!
//! ` ```console ` blocks (image build and push, port-forward, a foreground
//! `nbidle serve`) are not run; the test checks that only such commands are
//! in them.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::envtest::ControlPlane;
use common::kubectl::{copy_checkout, kubectl, DeploymentRunner};
use serde_json::{json, Value};

const GUIDE: &str = "docs/kubernetes.md";
const NB_API: &str = "/apis/kubeflow.org/v1/namespaces";
/// Where the guide's `port-forward`s put nbidle and Alertmanager.
const NBIDLE_PORT: u16 = 9877;
const ALERTMANAGER_PORT: u16 = 9093;
/// Commands a ` ```console ` block may hold: what needs a registry, a node
/// or a terminal left running.
const NOT_RUN: [&str; 3] = ["docker ", "port-forward", "nbidle serve"];

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// One fenced block of the guide.
#[derive(Debug)]
struct Block {
    lang: String,
    text: String,
    line: usize,
}

/// The fenced blocks of a Markdown text, indented ones (in list items)
/// included, their indentation removed.
fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, usize, Vec<&str>)> = None;
    for (i, line) in md.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(lang) = trimmed.strip_prefix("```") {
                    open = Some((indent, lang.trim().to_string(), i + 1, Vec::new()));
                }
            }
            Some((ind, lang, start, lines)) => {
                if trimmed.starts_with("```") {
                    out.push(Block {
                        lang: lang.clone(),
                        text: lines.join("\n") + "\n",
                        line: *start,
                    });
                    open = None;
                } else {
                    lines.push(line.get(*ind..).unwrap_or("").trim_end_matches('\r'));
                }
            }
        }
    }
    assert!(open.is_none(), "{GUIDE}: a fenced block is not closed");
    out
}

/// Merges `patch` into `base` as the guide's `# edit` blocks mean it: maps
/// key by key, lists of entries with a `name` by that name, anything else
/// replaced.
fn merge(base: &mut serde_yaml::Value, patch: &serde_yaml::Value) {
    use serde_yaml::Value as Y;
    match (base, patch) {
        (Y::Mapping(b), Y::Mapping(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Y::Sequence(b), Y::Sequence(p)) if p.iter().all(|e| e.get("name").is_some()) => {
            for entry in p {
                match b.iter_mut().find(|e| e.get("name") == entry.get("name")) {
                    Some(existing) => merge(existing, entry),
                    None => b.push(entry.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Whether every key of `part` is in `whole` with the same value.
fn contains(whole: &serde_yaml::Value, part: &serde_yaml::Value) -> bool {
    match (whole, part) {
        (serde_yaml::Value::Mapping(w), serde_yaml::Value::Mapping(p)) => p
            .iter()
            .all(|(k, v)| w.get(k).is_some_and(|wv| contains(wv, v))),
        (w, p) => w == p,
    }
}

/// A bash process that runs the guide's blocks one after another, so that
/// variables and the working directory carry over as in an operator's
/// terminal. Each block is sourced with `set -euo pipefail`: a failing
/// command ends the shell, and with it the test.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    dir: PathBuf,
    count: usize,
}

const DONE: &str = "nbidle-guide-block-done";

impl Shell {
    fn start(cwd: &Path, dir: &Path, env: &[(&str, String)]) -> Shell {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc"])
            .current_dir(cwd)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so that anything a block leaves
            // running ends with the shell.
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("bash");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Shell {
            child,
            stdin,
            lines,
            dir: dir.to_path_buf(),
            count: 0,
        }
    }

    /// Runs one block; its stdout, or what it wrote to stderr when it
    /// failed or timed out. `abort` is polled while waiting (a failure of
    /// the controllers the test plays).
    fn run(
        &mut self,
        script: &str,
        timeout: Duration,
        abort: impl Fn() -> Option<String>,
    ) -> Result<String, String> {
        self.count += 1;
        let file = self.dir.join(format!("block-{}.sh", self.count));
        let err = self.dir.join(format!("block-{}.err", self.count));
        std::fs::write(&file, script).unwrap();
        writeln!(
            self.stdin,
            "set -euo pipefail; source {} </dev/null 2>{}; echo {DONE}",
            file.display(),
            err.display()
        )
        .map_err(|e| format!("the shell is gone: {e}"))?;
        let stderr = || std::fs::read_to_string(&err).unwrap_or_default();
        let deadline = Instant::now() + timeout;
        let mut out = String::new();
        loop {
            if let Some(why) = abort() {
                return Err(format!("{why}\nstderr so far:\n{}", stderr()));
            }
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                // Output without a final newline (curl's) shares the line.
                Ok(l) if l.ends_with(DONE) => {
                    out.push_str(l.strip_suffix(DONE).unwrap());
                    return Ok(out);
                }
                Ok(l) => {
                    out.push_str(&l);
                    out.push('\n');
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no end after {timeout:?}; stderr:\n{}", stderr()))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    return Err(format!(
                        "failed ({status:?}); stdout:\n{out}stderr:\n{}",
                        stderr()
                    ));
                }
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn notebook(name: &str) -> Value {
    json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "metadata": {"name": name, "namespace": "team-a",
                     "annotations": {"notebooks.kubeflow.org/creator": "grace@example.com"}},
        "spec": {"template": {"spec": {"containers": [{
            "name": name, "image": "kubeflownotebookswg/jupyter-scipy:v1.9.0"}]}}},
    })
}

fn notebook_statefulset() -> Value {
    let labels = json!({"app.kubernetes.io/component": "notebook", "app": "jupyter"});
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "jupyter", "namespace": "lab", "labels": labels},
        "spec": {
            "replicas": 1,
            "serviceName": "jupyter",
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                "name": "notebook", "image": "quay.io/jupyter/base-notebook",
                "ports": [{"name": "notebook-port", "containerPort": 8888}]}]}},
        },
    })
}

/// Kubeflow's controller and the StatefulSet controller, as far as nbidle
/// sees them: ready replicas follow the stop annotation and the replica
/// count.
fn play_notebook_controllers(cp: &ControlPlane) {
    for name in ["train", "explore"] {
        let nb = cp
            .call("GET", &format!("{NB_API}/team-a/notebooks/{name}"), None)
            .body;
        let stopped = nb["metadata"]["annotations"]
            .get("kubeflow-resource-stopped")
            .is_some();
        let want = if stopped { 0 } else { 1 };
        if nb["status"]["readyReplicas"] != want {
            cp.call_patch(
                &format!("{NB_API}/team-a/notebooks/{name}/status"),
                &json!({"status": {"readyReplicas": want}}),
            );
        }
    }
    let path = "/apis/apps/v1/namespaces/lab/statefulsets/jupyter";
    let sts = cp.call("GET", path, None).body;
    let want = sts["spec"]["replicas"].clone();
    if sts["status"]["readyReplicas"] != want || sts["status"]["replicas"] != want {
        cp.call_patch(
            &format!("{path}/status"),
            &json!({"status": {"replicas": want, "readyReplicas": want, "availableReplicas": want}}),
        );
    }
}

fn assert_port_free(ip: &str, port: u16) {
    if let Err(e) = std::net::TcpListener::bind((ip, port)) {
        panic!("{ip}:{port} is in use ({e}): the guide's commands reach the port-forward there; stop what listens on it");
    }
}

/// A real Alertmanager where the guide's port-forward puts the stack's.
fn alertmanager(dir: &Path) -> common::Proc {
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(&cfg, "route: {receiver: none}\nreceivers: [{name: none}]\n").unwrap();
    common::Proc::spawn(
        "alertmanager",
        Command::new(common::tool(&["prometheus-alertmanager", "alertmanager"]))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!(
                "--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}"
            ))
            .arg("--cluster.listen-address="),
        &dir.join("alertmanager.log"),
    )
}

fn http_get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "5", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The namespace/name of every notebook in an API listing.
fn listed(json_text: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(json_text)
        .unwrap_or_else(|e| panic!("not a notebook listing ({e}): {json_text}"));
    v["notebooks"]
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
        .collect()
}

/// What the state of the cluster and nbidle must be after a block, by what
/// the block does.
fn check_after(cp: &ControlPlane, checkout: &Path, block: &str, out: &str) {
    let annotations = |name: &str| {
        cp.call("GET", &format!("{NB_API}/team-a/notebooks/{name}"), None)
            .body["metadata"]["annotations"]
            .clone()
    };
    if block.contains("nbidle check") {
        assert!(out.contains(": ok"), "{out}");
    }
    if block.contains("rollout status") {
        // The Deployment runs the image the `images:` entry names.
        let k: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(checkout.join("deploy/base/kustomization.yaml")).unwrap(),
        )
        .unwrap();
        let img = &k["images"][0];
        let d = cp
            .call(
                "GET",
                "/apis/apps/v1/namespaces/nbidle/deployments/nbidle",
                None,
            )
            .body;
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            format!(
                "{}:{}",
                img["newName"].as_str().unwrap(),
                img["newTag"].as_str().unwrap()
            )
        );
        assert!(out.contains("successfully rolled out"), "{out}");
    }
    if block.contains("localhost:9877/api/v1/notebooks\n") {
        let names = listed(out.lines().last().unwrap_or(""));
        if block.contains("TEAM_TOKEN") {
            assert_eq!(names, ["team-a/explore", "team-a/train"], "{out}");
            let team =
                std::fs::read_to_string(checkout.join("deploy/base/secrets/team-a-token")).unwrap();
            let (code, body) = http_get(
                &format!("http://127.0.0.1:{NBIDLE_PORT}/api/v1/notebooks/lab/jupyter"),
                Some(team.trim()),
            );
            assert_eq!(code, 403, "the team token outside team-a: {body}");
        } else if block.contains("overlays/statefulset") {
            assert_eq!(names, ["lab/jupyter"], "{out}");
        } else {
            assert_eq!(names, ["team-a/explore", "team-a/train"], "{out}");
        }
    }
    if block.contains("team-a/train/stop") {
        let a = annotations("train");
        assert!(a["kubeflow-resource-stopped"].is_string(), "{a}");
        assert_eq!(a["nbidle.io/stopped-by"], "user", "{a}");
        assert!(out.contains("kubeflow-resource-stopped"), "describe: {out}");
        assert!(out.contains("Stopped"), "describe shows the Event: {out}");
    }
    if block.contains("team-a/train/start") {
        let a = annotations("train");
        assert!(a.get("kubeflow-resource-stopped").is_none(), "{a}");
    }
    if block.contains("annotate notebook explore") {
        let a = annotations("explore");
        assert_eq!(a["nbidle.io/idle-after"], "3h");
        assert_eq!(annotations("train")["nbidle.io/autostop"], "false");
        let v: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap();
        assert_eq!(v["name"], "explore", "{out}");
        // nbidle's watch carries the annotations into its policy.
        let url = format!("http://127.0.0.1:{NBIDLE_PORT}/api/v1/notebooks/team-a/explore");
        let token =
            std::fs::read_to_string(checkout.join("deploy/base/secrets/api-tokens")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = http_get(&url, Some(token.trim()));
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if v["idle_after_seconds"] == 10800 && v["owner"] == "ada@example.com" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "explore's annotations not applied: {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if block.contains("amtool silence add") {
        let (code, body) = http_get(
            &format!("http://127.0.0.1:{ALERTMANAGER_PORT}/api/v2/silences"),
            None,
        );
        assert_eq!(code, 200, "{body}");
        let silences: Value = serde_json::from_str(&body).unwrap();
        let s = &silences[0];
        assert_eq!(s["comment"], "training run", "{body}");
        assert!(s["matchers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "notebook" && m["value"] == "train"));
    }
    if block.contains("delete alertmanagerconfig nbidle") {
        let amc = "/apis/monitoring.coreos.com/v1alpha1/namespaces";
        assert_eq!(
            cp.call(
                "GET",
                &format!("{amc}/nbidle/alertmanagerconfigs/nbidle"),
                None
            )
            .status,
            404
        );
        assert_eq!(
            cp.call(
                "GET",
                &format!("{amc}/team-a/alertmanagerconfigs/nbidle"),
                None
            )
            .status,
            200
        );
        assert_eq!(
            cp.call(
                "GET",
                "/api/v1/namespaces/team-a/secrets/nbidle-webhook",
                None
            )
            .status,
            200
        );
    }
    // The applied PodMonitor names each notebook by `label`.
    let podmonitor_relabels_by = |label: &str| {
        let pm = cp
            .call(
                "GET",
                "/apis/monitoring.coreos.com/v1/namespaces/nbidle/podmonitors/nbidle-notebooks",
                None,
            )
            .body;
        let relabelings = pm["spec"]["podMetricsEndpoints"][0]["relabelings"].to_string();
        assert!(relabelings.contains(label), "{pm}");
    };
    if block.contains("apply -k deploy/monitoring/statefulset") {
        podmonitor_relabels_by("__meta_kubernetes_pod_controller_name");
    }
    let sts = || {
        cp.call(
            "GET",
            "/apis/apps/v1/namespaces/lab/statefulsets/jupyter",
            None,
        )
        .body
    };
    if block.contains("lab/jupyter/stop") {
        let sts = sts();
        assert!(
            out.trim_end().ends_with("\n0"),
            "replicas after the stop: {out}"
        );
        assert_eq!(sts["spec"]["replicas"], 0);
        assert_eq!(sts["metadata"]["annotations"]["nbidle.io/replicas"], "1");
    }
    if block.contains("lab/jupyter/start") {
        assert_eq!(sts()["spec"]["replicas"], 1, "started again");
    }
    if block.contains("apply -k deploy/monitoring/kubeflow") {
        podmonitor_relabels_by("__meta_kubernetes_pod_label_notebook_name");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_guide_works_as_written() {
    assert_port_free("127.0.0.1", NBIDLE_PORT);
    assert_port_free("127.0.0.2", NBIDLE_PORT);
    assert_port_free("127.0.0.1", ALERTMANAGER_PORT);
    let dir = tempfile::tempdir().unwrap();
    let kubectl = kubectl();
    let checkout = dir.path().join("checkout");
    copy_checkout(".", &checkout);

    let guide = std::fs::read_to_string(repo(GUIDE)).unwrap();
    let blocks = blocks(&guide);
    for b in &blocks {
        assert!(
            ["sh", "console", "yaml"].contains(&b.lang.as_str()),
            "{GUIDE}:{}: a ```{} block; use sh (run by this test), console (not run) or yaml",
            b.line,
            b.lang
        );
        if b.lang == "console" {
            assert!(
                b.text
                    .lines()
                    .all(|l| NOT_RUN.iter().any(|c| l.contains(c))),
                "{GUIDE}:{}: a console block is not run; only {NOT_RUN:?} belong there:\n{}",
                b.line,
                b.text
            );
        }
    }

    // The cluster as the guide's §1 expects it.
    let cp = ControlPlane::start(dir.path()).await;
    for crd in ["notebook", "prometheusrule", "monitors"] {
        cp.install_crd(&repo(&format!("tests/crds/{crd}.yaml")))
            .await;
    }
    for ns in ["team-a", "lab", "monitoring"] {
        cp.create_namespace(ns);
    }
    for name in ["train", "explore"] {
        let r = cp.create(&notebook(name), "team-a");
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = cp.create(&notebook_statefulset(), "lab");
    assert_eq!(r.status, 201, "{}", r.body);
    play_notebook_controllers(&cp);
    let _alertmanager = alertmanager(dir.path());
    common::wait_ready(
        "alertmanager",
        &format!("http://127.0.0.1:{ALERTMANAGER_PORT}/-/ready"),
        Duration::from_secs(30),
    )
    .await;

    let nbidle = PathBuf::from(env!("CARGO_BIN_EXE_nbidle"));
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let path = format!(
        "{}:{}:{}",
        kubectl.parent().unwrap().display(),
        nbidle.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path),
        ("HOME", home.display().to_string()),
        (
            "KUBECONFIG",
            cp.kubeconfig(dir.path(), None).display().to_string(),
        ),
        // `make rules` runs this nbidle instead of building one.
        ("NBIDLE", nbidle.display().to_string()),
        ("LC_ALL", "C.UTF-8".to_string()),
    ];
    let logs = dir.path().join("shell");
    std::fs::create_dir_all(&logs).unwrap();
    let mut shell = Shell::start(&checkout, &logs, &env);

    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let mut runner = DeploymentRunner::new("nbidle", "nbidle", dir.path(), &nbidle);
    let (mut ran, mut edits) = (0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                while !stop.load(Ordering::Relaxed) {
                    runner.reconcile(&cp);
                    play_notebook_controllers(&cp);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }));
            if let Err(e) = result {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                *failure.lock().unwrap() = Some(format!("the test's controllers failed: {msg}"));
            }
        });
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for b in &blocks {
                match b.lang.as_str() {
                    "sh" => {
                        let t = Instant::now();
                        let out = shell
                            .run(&b.text, Duration::from_secs(120), || {
                                failure.lock().unwrap().clone()
                            })
                            .unwrap_or_else(|e| {
                                panic!("{GUIDE}:{}: the block\n{}failed: {e}", b.line, b.text)
                            });
                        eprintln!("{GUIDE}:{}: ran in {:?}\n{out}", b.line, t.elapsed());
                        check_after(&cp, &checkout, &b.text, &out);
                        ran += 1;
                    }
                    "yaml" => {
                        let first = b.text.lines().next().unwrap_or("");
                        let body: serde_yaml::Value = serde_yaml::from_str(&b.text).unwrap();
                        if let Some(file) = first.strip_prefix("# edit ") {
                            let p = checkout.join(file.trim());
                            let mut v: serde_yaml::Value =
                                serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap())
                                    .unwrap();
                            merge(&mut v, &body);
                            std::fs::write(&p, serde_yaml::to_string(&v).unwrap()).unwrap();
                            edits += 1;
                        } else if let Some(file) = first.strip_prefix("# deploy/") {
                            let p = checkout.join("deploy").join(file.trim());
                            let v: serde_yaml::Value =
                                serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap())
                                    .unwrap();
                            assert!(
                                contains(&v, &body),
                                "{GUIDE}:{}: the excerpt differs from {}",
                                b.line,
                                p.display()
                            );
                        }
                    }
                    _ => {}
                }
            }
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    });
    assert!(
        failure.lock().unwrap().is_none(),
        "{:?}",
        failure.lock().unwrap()
    );
    eprintln!(
        "{ran} sh blocks run, {edits} edits made; {} rollouts",
        runner.rollouts.len()
    );
    assert!(ran >= 15 && edits >= 5, "{ran} blocks, {edits} edits");
}
