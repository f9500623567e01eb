//! `make bench` (rule evaluation): what the generated rules cost a real
//! Prometheus over 10,000 notebooks.
//!
//! - A text-exposition server in this process publishes what nbidle's
//!   exporter publishes for 10,000 running notebooks in 50 namespaces (idle
//!   time, start, probe success and duration, kernels, terminals, last
//!   activity, and the idle deadline where it is near or past).
//! - Prometheus (Debian's, on PATH) scrapes it and evaluates the rules
//!   `nbidle rules` generates for the default config, every 5 s instead of
//!   1 m so that many evaluations fit in a short run (one evaluation's work
//!   does not depend on the interval; the resend delay is set to the same
//!   interval, so every evaluation sends its firing alerts as at the
//!   defaults).
//! - After every evaluation the rule group's duration is read from
//!   Prometheus's own `/metrics` (`prometheus_rule_group_last_duration_seconds`,
//!   and the per-rule `prometheus_rule_evaluation_duration_seconds` summary).
//!
//! Cases: 1,000 notebooks past their deadline, so 1,000 `NotebookIdle` alerts
//! are active (nothing stops them here); 1,000 inside the warning window; none
//! near its deadline (steady state).
//!
//! Prometheus's CPU time per evaluation interval is given too: less
//! sensitive than wall time to other work on the machine; it includes the
//! scrapes, which the case without alerts shows alone.
//!
//! `NBIDLE_BENCH_RULES=<rule file>` evaluates that file instead of the
//! generated one (to compare rule shapes); `NBIDLE_BENCH_EVALUATIONS=<n>`
//! sets the evaluations measured per case (default 24);
//! `NBIDLE_BENCH_CASES=past,warned,busy` picks cases.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_port, nbidle_cli, Prometheus};
use serde_json::json;
use warp::Filter;

const NOTEBOOKS: usize = 10_000;
const NAMESPACES: usize = 50;
const SELECTED: usize = 1_000;
const IDLE_AFTER: f64 = 1800.0;
const INTERVAL: &str = "5s";

/// Which notebooks' deadlines are near or past.
#[derive(Clone, Copy)]
enum Case {
    /// Every tenth notebook was last active two hours ago.
    PastDeadline,
    /// Every tenth notebook's deadline is two minutes away (warning window).
    Warned,
    /// Every notebook was active just now: no deadline is published.
    Busy,
}

impl Case {
    fn describe(self) -> &'static str {
        match self {
            Case::PastDeadline => "1000 past their deadline (1000 NotebookIdle alerts active)",
            Case::Warned => "1000 inside the warning window (1000 NotebookIdleSoon alerts active)",
            Case::Busy => "none near its deadline",
        }
    }

    /// The alert expected active for each selected notebook.
    fn alert(self) -> Option<&'static str> {
        match self {
            Case::PastDeadline => Some("NotebookIdle"),
            Case::Warned => Some("NotebookIdleSoon"),
            Case::Busy => None,
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The exporter's exposition for the fleet at `at` (Unix seconds): the same
/// families, labels and filtering as `nbidle::exporter::render`.
fn exposition(case: Case, at: f64) -> String {
    let started = at - 4.0 * 3600.0;
    let last = |i: usize| match (case, i.is_multiple_of(NOTEBOOKS / SELECTED)) {
        (Case::PastDeadline, true) => at - 2.0 * 3600.0,
        (Case::Warned, true) => at - IDLE_AFTER + 120.0,
        _ => at,
    };
    // Deadlines further than warn_before + 2 probe + 2 evaluation
    // intervals away are not published (exporter::deadline_window).
    let horizon = at + 300.0 + 2.0 * 15.0 + 2.0 * 60.0;
    let labels = |i: usize| format!("namespace=\"team-{}\",notebook=\"nb-{i}\"", i % NAMESPACES);
    let mut out = String::with_capacity(NOTEBOOKS * 900);
    let mut family = |name: &str, rows: &mut dyn Iterator<Item = (String, f64)>| {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            out,
            "# HELP {name} nbidle exporter series.\n# TYPE {name} {kind}"
        );
        for (l, v) in rows {
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
    };
    let all = || 0..NOTEBOOKS;
    let owned = |i: usize| format!("{},owner=\"user-{i}\"", labels(i));
    family(
        "nbidle_notebook_idle_after_seconds",
        &mut all().map(|i| (owned(i), IDLE_AFTER)),
    );
    family(
        "nbidle_notebook_started_timestamp_seconds",
        &mut all().map(|i| (labels(i), started)),
    );
    family(
        "nbidle_notebook_probe_success",
        &mut all().map(|i| (labels(i), 1.0)),
    );
    family(
        "nbidle_notebook_probe_duration_seconds",
        &mut all().map(|i| (labels(i), 0.021)),
    );
    family(
        "nbidle_notebook_kernels",
        &mut all().map(|i| (format!("{},state=\"idle\"", labels(i)), 1.0)),
    );
    family(
        "nbidle_notebook_terminals",
        &mut all().map(|i| (labels(i), 1.0)),
    );
    family(
        "nbidle_notebook_idle_deadline_timestamp_seconds",
        &mut all().filter_map(|i| {
            let d = last(i) + IDLE_AFTER;
            (d <= horizon).then(|| (owned(i), d))
        }),
    );
    family(
        "nbidle_notebook_last_activity_timestamp_seconds",
        &mut all().map(|i| (labels(i), last(i))),
    );
    // The local backend's process accounting, which the default cpu guard
    // reads: an idle server's trickle (0.005 cores), under the guard's
    // 0.05, so the guard's rate() is computed for every notebook and
    // vetoes none.
    family(
        "nbidle_notebook_cpu_seconds_total",
        &mut all().map(|i| (labels(i), (at - started) * 0.005)),
    );
    family(
        "nbidle_notebook_resident_memory_bytes",
        &mut all().map(|i| (labels(i), 180e6)),
    );
    family(
        "nbidle_notebook_processes",
        &mut all().map(|i| (labels(i), 5.0)),
    );
    family(
        "nbidle_notebook_file_writes_total",
        &mut all().map(|i| (labels(i), 12.0)),
    );
    out
}

/// The value of the first sample of `name` whose labels contain `labels`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

async fn scalar(prom: &Prometheus, q: &str) -> f64 {
    prom.query(q).await.unwrap()[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// One case: Prometheus on the fleet's series, `evaluations` evaluations
/// measured once the expected alerts are all active.
async fn measure(case: Case, rules: &str, evaluations: usize) {
    let dir = tempfile::tempdir().unwrap();
    let body = Arc::new(RwLock::new(exposition(case, now())));
    let port = free_port();
    let served = body.clone();
    let route = warp::path!("metrics" / "notebooks").map(move || served.read().unwrap().clone());
    let server = tokio::spawn(warp::serve(route).run(([127, 0, 0, 1], port)));
    // Values as a live exporter's: recomputed while Prometheus scrapes.
    let refresh = {
        let body = body.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let text = exposition(case, now());
                *body.write().unwrap() = text;
            }
        })
    };
    let rules_path = dir.path().join("rules.yml");
    std::fs::write(&rules_path, rules).unwrap();
    let jobs = vec![json!({
        "job_name": "nbidle-exporter",
        "honor_labels": true,
        "metrics_path": "/metrics/notebooks",
        "static_configs": [{"targets": [format!("127.0.0.1:{port}")]}],
    })];
    let prom = Prometheus::start_with_rules(
        dir.path(),
        &rules_path,
        INTERVAL,
        jobs,
        &[&format!("--rules.alert.resend-delay={INTERVAL}")],
    )
    .await;
    let t0 = Instant::now();
    let scraped = loop {
        let n = scalar(&prom, "count(nbidle_notebook_idle_after_seconds)").await;
        if n == NOTEBOOKS as f64 || t0.elapsed() > Duration::from_secs(120) {
            break n;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(
        scraped, NOTEBOOKS as f64,
        "every notebook's series reached Prometheus"
    );
    // Until every expected alert is active (firing, after any `for:`).
    if let Some(alert) = case.alert() {
        let q = format!("count(ALERTS{{alertname=\"{alert}\", alertstate=\"firing\"}})");
        loop {
            let n = scalar(&prom, &q).await;
            if n == SELECTED as f64 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "{alert}: {n} of {SELECTED} firing after 5 minutes"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let group = "nbidle.idle\"";
    let mut durations = Vec::with_capacity(evaluations);
    let mut last_eval = 0.0;
    // Prometheus's CPU time from the first measured evaluation to the last.
    let mut cpu = (0.0, 0.0);
    let deadline = Instant::now() + Duration::from_secs(10 * evaluations as u64 + 60);
    while durations.len() < evaluations && Instant::now() < deadline {
        let text = prom.own_metrics().await;
        let at = sample(
            &text,
            "prometheus_rule_group_last_evaluation_timestamp_seconds",
            group,
        );
        let took = sample(&text, "prometheus_rule_group_last_duration_seconds", group);
        let cpu_now = sample(&text, "process_cpu_seconds_total", "").unwrap_or(0.0);
        if let (Some(at), Some(took)) = (at, took) {
            if at != last_eval {
                if last_eval == 0.0 {
                    cpu.0 = cpu_now;
                } else {
                    durations.push(took * 1e3);
                    cpu.1 = cpu_now;
                }
                last_eval = at;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(durations.len(), evaluations, "evaluations observed");
    let text = prom.own_metrics().await;
    let q = |quantile: &str| {
        sample(
            &text,
            "prometheus_rule_evaluation_duration_seconds",
            &format!("quantile=\"{quantile}\""),
        )
        .map_or("-".into(), |v| format!("{:.1}", v * 1e3))
    };
    let firing = scalar(&prom, "count(ALERTS{alertstate=\"firing\"})").await;
    let (min, median, max) = stats(durations.clone());
    let mean = durations.iter().sum::<f64>() / durations.len() as f64;
    // Scrapes every 5 s included: compare with the case without alerts.
    let cpu_per_interval = (cpu.1 - cpu.0) / (evaluations - 1) as f64;
    println!(
        "| {} | {evaluations} | {min:.1} / {median:.1} / {max:.1} ms | {mean:.1} ms | {} / {} / {} ms | {:.0} ms | {firing} |",
        case.describe(),
        q("0.5"),
        q("0.9"),
        q("0.99"),
        cpu_per_interval * 1e3,
    );
    refresh.abort();
    server.abort();
    drop(prom);
}

#[tokio::main]
async fn main() {
    let rules = match std::env::var("NBIDLE_BENCH_RULES") {
        Ok(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        Err(_) => nbidle_cli(&["rules"]),
    };
    // Evaluated every 5s instead of the default 1m to collect samples quickly.
    let rules = rules.replace("interval: 1m", &format!("interval: {INTERVAL}"));
    let evaluations = std::env::var("NBIDLE_BENCH_EVALUATIONS")
        .map(|n| n.parse().expect("NBIDLE_BENCH_EVALUATIONS: a number"))
        .unwrap_or(24);
    // NBIDLE_BENCH_CASES=past,warned,busy (default all).
    let cases = std::env::var("NBIDLE_BENCH_CASES").unwrap_or("past,warned,busy".into());
    println!("| 10,000 notebooks | evaluations | rule group min / median / max | mean | per rule p50 / p90 / p99 | Prometheus CPU per 5 s | alerts firing |");
    println!("|---|---|---|---|---|---|---|");
    for case in cases.split(',') {
        let case = match case {
            "past" => Case::PastDeadline,
            "warned" => Case::Warned,
            "busy" => Case::Busy,
            other => panic!("NBIDLE_BENCH_CASES: unknown case {other}"),
        };
        measure(case, &rules, evaluations).await;
    }
}
