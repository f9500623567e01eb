//! A notebook's Jupyter server is its user's code: whatever it answers to a
//! probe, nbidle's memory stays bounded, the probe fails with a bounded
//! reason within the timeout, and one line is logged.
//!
//! The hostile server is `tests/drivers/hostile_jupyter.py`; nbidle is the
//! real binary, probing it every second with a 2 s timeout (the test config).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The test config's `exporter.timeout`.
const PROBE_TIMEOUT: f64 = 2.0;
/// How much nbidle's peak resident memory may exceed its idle memory.
const RSS_BOUND_MIB: f64 = 64.0;

/// The hostile Jupyter stand-in: quiet until `mode` is called.
struct HostileJupyter {
    _proc: Proc,
    base: String,
    http: reqwest::Client,
}

impl HostileJupyter {
    async fn start(dir: &Path) -> HostileJupyter {
        let port = free_port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/drivers/hostile_jupyter.py"
        );
        let proc = Proc::spawn(
            "hostile-jupyter",
            Command::new(tool(&["python3"]))
                .arg(script)
                .arg(port.to_string())
                .arg("300"),
            &dir.join("hostile-jupyter.log"),
        );
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(
            "hostile Jupyter",
            &format!("{base}/api"),
            Duration::from_secs(20),
        )
        .await;
        HostileJupyter {
            _proc: proc,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.text().await.unwrap()
    }

    async fn mode(&self, mode: &str) {
        self.get(&format!("/_mode/{mode}")).await;
    }

    /// `/hostile/api/kernels` requests so far.
    async fn requests(&self) -> u64 {
        self.get("/_requests").await.trim().parse().unwrap()
    }

    fn notebook(&self, name: &str, prefix: &str) -> NotebookSpec {
        NotebookSpec {
            name: name.into(),
            command: vec!["sleep".into(), "3600".into()],
            url: format!("{}/{prefix}/", self.base),
            autostop: true,
        }
    }
}

fn vm_kib(pid: i32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// The value of `series` (name and labels, exactly) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    })
}

fn labels(notebook: &str) -> String {
    format!("{{namespace=\"local\",notebook=\"{notebook}\"}}")
}

/// nbidle probing an honest notebook and one answering `/api/kernels` as
/// `mode` says: the hostile probe fails with `reason`, the honest one goes
/// on succeeding, and nbidle's peak memory stays within the bound.
async fn hostile_case(mode: &str, reason: &str, max_took: f64) {
    let dir = tempfile::tempdir().unwrap();
    let jupyter = HostileJupyter::start(dir.path()).await;
    let nb = Nbidle::start(
        dir.path(),
        &[
            jupyter.notebook("honest", "honest"),
            jupyter.notebook("hostile", "hostile"),
        ],
        NbidleOptions::default(),
    )
    .await;
    let success = |name: &str| format!("nbidle_notebook_probe_success{}", labels(name));
    eventually("both notebooks probed", Duration::from_secs(30), || async {
        let text = nb.exporter_metrics().await;
        (sample(&text, &success("honest")) == Some(1.0)
            && sample(&text, &success("hostile")) == Some(1.0))
        .then_some(())
    })
    .await;
    // Two more quiet rounds, then nbidle's idle memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = nb.proc.pid();
    let idle_rss = vm_kib(pid, "VmRSS:") / 1024.0;

    jupyter.mode(mode).await;
    let switched = Instant::now();
    let before = jupyter.requests().await;
    let within_bound = || {
        let peak = vm_kib(pid, "VmHWM:") / 1024.0;
        assert!(
            peak - idle_rss < RSS_BOUND_MIB,
            "{mode}: nbidle's peak RSS {peak:.1} MiB is {:.1} MiB above its idle {idle_rss:.1} MiB (bound {RSS_BOUND_MIB} MiB)",
            peak - idle_rss
        );
        peak
    };
    // Three hostile probes, and the round of the last one published.
    eventually("three hostile probes", Duration::from_secs(40), || async {
        within_bound();
        (jupyter.requests().await >= before + 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs_f64(PROBE_TIMEOUT + 1.5)).await;
    let peak = within_bound();
    let failure = format!(
        "nbidle_notebook_probe_failure{{namespace=\"local\",notebook=\"hostile\",reason=\"{reason}\"}}"
    );
    let text = eventually(
        &format!("the probe of a notebook answering `{mode}` to fail with reason {reason}"),
        Duration::from_secs(10),
        || async {
            let text = nb.exporter_metrics().await;
            (sample(&text, &failure) == Some(1.0)).then_some(text)
        },
    )
    .await;
    assert_eq!(sample(&text, &success("hostile")), Some(0.0), "{text}");
    assert_eq!(sample(&text, &success("honest")), Some(1.0), "{text}");
    // A failed probe never looks idle: no activity or deadline series.
    for family in [
        "nbidle_notebook_last_activity_timestamp_seconds",
        "nbidle_notebook_kernels",
        "nbidle_notebook_terminals",
    ] {
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with(family) && l.contains("notebook=\"hostile\"")),
            "{family} published for a failed probe:\n{text}"
        );
    }
    let failures = sample(
        &text,
        &format!("nbidle_exporter_probe_failures_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0);
    assert!(failures >= 2.0, "failures counted: {failures}\n{text}");
    // Within the timeout; a refusal by size at once.
    let took = sample(
        &text,
        &format!(
            "nbidle_notebook_probe_duration_seconds{}",
            labels("hostile")
        ),
    )
    .unwrap();
    assert!(took <= max_took, "{mode}: the probe took {took} s");
    eprintln!(
        "{mode}: failed ({reason}) in {took:.3} s, peak RSS {peak:.1} MiB, idle {idle_rss:.1} MiB, {:.1} s after the switch",
        switched.elapsed().as_secs_f64()
    );
    // One line for the failure, however many rounds it lasts, and nothing
    // of the body in it.
    let log = nb.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("probe failed") && l.contains("local/hostile"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(reason), "{}", lines[0]);
    assert!(lines[0].len() < 400, "{}", lines[0]);
    eprintln!("{mode}: logged {}", lines[0]);
    assert!(
        !log.contains("execution_state") && !log.contains("python3"),
        "the body reached the log"
    );
}

#[tokio::test]
async fn a_huge_body_with_its_length_is_refused_unread() {
    hostile_case("huge", "too_large", 0.5).await;
}

#[tokio::test]
async fn a_huge_chunked_body_is_read_up_to_the_limit() {
    hostile_case("huge-chunked", "too_large", PROBE_TIMEOUT).await;
}

#[tokio::test]
async fn an_endless_body_is_read_up_to_the_limit() {
    hostile_case("endless", "too_large", PROBE_TIMEOUT).await;
}

#[tokio::test]
async fn a_trickling_body_times_out() {
    hostile_case("trickle", "timeout", PROBE_TIMEOUT + 0.5).await;
}

#[tokio::test]
async fn a_hundred_thousand_kernels_are_too_many() {
    hostile_case("many", "too_many", PROBE_TIMEOUT).await;
}
