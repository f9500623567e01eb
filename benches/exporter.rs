//! `make bench` (exporter part):
//!
//! 1. probe rounds of nbidle's Jupyter activity exporter over 1,000 and
//!    10,000 simulated Jupyter servers answering after 20 ms (kernels,
//!    terminals, and a `/metrics` of a fresh jupyter_server 2.x, about
//!    50 KB, with contents writes): time per round, CPU time and peak RSS of
//!    this process (the exporter, not the servers, which run in a child
//!    process);
//! 2. the cost of the generated rules in a real Prometheus scraping 10,000
//!    notebooks' exporter series: `prometheus_rule_group_last_duration_seconds`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nbidle::config::{ExporterConfig, HumanDuration};
use nbidle::exporter::Exporter;
use nbidle::notebook::Timestamp;
use support::fleet::Fleet;
use warp::Filter;

const LATENCY: Duration = Duration::from_millis(20);

/// Child-process mode: a Jupyter API stand-in answering after LATENCY.
/// Nine notebooks in ten were used just now; every tenth has been idle
/// since 2026-01-01, so the rules have idle notebooks to alert on.
async fn simulate(port: u16) {
    let kernels = warp::path!(String / String / "api" / "kernels").and_then(|_: String, name: String| async move {
        tokio::time::sleep(LATENCY).await;
        let idle = name.trim_start_matches("nb-").parse::<usize>().is_ok_and(|i| i % 10 == 0);
        let at = if idle { "2026-01-01T10:00:00Z".to_string() } else { Timestamp::now().to_string() };
        Ok::<_, std::convert::Infallible>(format!(
            r#"[{{"id":"k","name":"python3","last_activity":"{at}","execution_state":"idle","connections":1}}]"#
        ))
    });
    let terminals =
        warp::path!(String / String / "api" / "terminals").and_then(|_: String, _: String| async {
            tokio::time::sleep(LATENCY).await;
            Ok::<_, std::convert::Infallible>(
                r#"[{"name":"1","last_activity":"2026-01-01T11:00:00.000000Z"}]"#,
            )
        });
    let status = warp::path!(String / String / "api" / "status").and_then(|_: String, _: String| async {
        tokio::time::sleep(LATENCY).await;
        Ok::<_, std::convert::Infallible>(r#"{"started":"2026-01-01T08:00:00.000000Z","last_activity":"2026-01-01T08:00:00.000000Z","connections":0,"kernels":1}"#)
    });
    let body = Arc::new(ExpositionParts::new());
    let metrics =
        warp::path!(String / String / "metrics").and_then(move |_: String, name: String| {
            let body = body.clone();
            async move {
                tokio::time::sleep(LATENCY).await;
                // Nine in ten save all the time; every tenth never saved (a
                // count seen first in a life is activity when it is not zero).
                let idle = name
                    .trim_start_matches("nb-")
                    .parse::<usize>()
                    .is_ok_and(|i| i % 10 == 0);
                let writes = if idle {
                    0
                } else {
                    Timestamp::now().0.unix_timestamp() as u64
                };
                Ok::<_, std::convert::Infallible>(body.with_writes(writes))
            }
        });
    warp::serve(kernels.or(terminals).or(status).or(metrics))
        .run(([127, 0, 0, 1], port))
        .await;
}

/// A fresh jupyter_server 2.x's `/metrics` as measured (about 50 KB): the
/// process and Python families and 17 request histograms of 18 lines each,
/// one of them the contents PUTs whose count is filled in.
struct ExpositionParts {
    before: String,
    after: String,
}

impl ExpositionParts {
    const PUT: &str = "handler=\"jupyter_server.services.contents.handlers.ContentsHandler\",method=\"PUT\",status_code=\"200\"";

    fn new() -> Self {
        let mut before = String::new();
        for (name, kind, v) in [
            ("python_gc_objects_collected_total", "counter", "1523.0"),
            ("python_gc_collections_total", "counter", "211.0"),
            ("process_virtual_memory_bytes", "gauge", "2.5e+08"),
            ("process_resident_memory_bytes", "gauge", "8.1e+07"),
            ("process_start_time_seconds", "gauge", "1.76e+09"),
            ("process_cpu_seconds_total", "counter", "2.04"),
            ("process_open_fds", "gauge", "13.0"),
        ] {
            before += &format!("# HELP {name} {name}\n# TYPE {name} {kind}\n{name} {v}\n");
        }
        before += "# HELP http_request_duration_seconds duration in seconds for all HTTP requests\n# TYPE http_request_duration_seconds histogram\n";
        let series: Vec<String> = (0..16)
            .map(|i| format!("handler=\"jupyter_server.services.handler{i}.handlers.SomeHandler\",method=\"GET\",status_code=\"200\""))
            .chain([Self::PUT.to_string()])
            .collect();
        let les = [
            "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5",
            "5.0", "7.5", "10.0", "+Inf",
        ];
        let mut after = String::new();
        for (i, labels) in series.iter().enumerate() {
            let out = if i == series.len() - 1 {
                &mut after
            } else {
                &mut before
            };
            for le in les {
                *out +=
                    &format!("http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} 12.0\n");
            }
            if i < series.len() - 1 {
                *out += &format!("http_request_duration_seconds_count{{{labels}}} 12.0\n");
            }
            *out += &format!("http_request_duration_seconds_sum{{{labels}}} 0.0123\n");
        }
        after += "# HELP http_request_duration_seconds_created duration in seconds for all HTTP requests\n# TYPE http_request_duration_seconds_created gauge\n";
        for labels in &series {
            after += &format!("http_request_duration_seconds_created{{{labels}}} 1.7645e+09\n");
        }
        after += "# HELP kernel_currently_running_total kernels\n# TYPE kernel_currently_running_total gauge\nkernel_currently_running_total{type=\"python3\"} 1.0\n";
        ExpositionParts { before, after }
    }

    fn with_writes(&self, n: u64) -> String {
        format!(
            "{}http_request_duration_seconds_count{{{}}} {n}.0\n{}",
            self.before,
            Self::PUT,
            self.after
        )
    }
}

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("port {port} never opened");
}

#[tokio::main]
async fn main() {
    if let Ok(port) = std::env::var("NBIDLE_BENCH_SIMULATE") {
        simulate(port.parse().unwrap()).await;
        return;
    }
    let port = free_port();
    let mut sim = Command::new(std::env::current_exe().unwrap())
        .env("NBIDLE_BENCH_SIMULATE", port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port).await;

    println!("| notebooks | probe round (wall) | exporter CPU per round | exporter peak RSS |");
    println!("|---|---|---|---|");
    let mut last = None;
    for n in [1_000usize, 10_000] {
        let fleet = Arc::new(Fleet::new(n, port, |_| 1800));
        let cfg = ExporterConfig {
            enabled: true,
            interval: HumanDuration(Duration::from_secs(15)),
            timeout: HumanDuration(Duration::from_secs(5)),
            concurrency: 64,
            ..ExporterConfig::default()
        };
        let exporter = Exporter::new(
            fleet,
            cfg,
            nbidle::exporter::deadline_window(
                Duration::from_secs(300),
                Duration::from_secs(15),
                Duration::from_secs(60),
            ),
            // As an nbidle that has probed the fleet for longer than
            // warn_before: its idle notebooks are past their deadlines (a
            // fresh one would first hold them warn_before off, to warn).
            Duration::ZERO,
        );
        exporter.round().await; // warm up connections
        let rounds = 3;
        let cpu0 = support::fleet::cpu_seconds();
        let t = Instant::now();
        for _ in 0..rounds {
            exporter.round().await;
        }
        let wall = t.elapsed() / rounds;
        let cpu = (support::fleet::cpu_seconds() - cpu0) / rounds as f64;
        let text = exporter.render();
        let probed_ok = text
            .lines()
            .filter(|l| l.starts_with("nbidle_notebook_probe_success{") && l.ends_with(" 1"))
            .count();
        assert_eq!(probed_ok, n, "every notebook probed successfully");
        let writes_read = text
            .lines()
            .filter(|l| l.starts_with("nbidle_notebook_file_writes_total{"))
            .count();
        assert_eq!(writes_read, n, "every notebook's file work read");
        println!(
            "| {n} | {:.2} s | {:.2} s | {:.1} MiB |",
            wall.as_secs_f64(),
            cpu,
            vm_kib("VmHWM:") as f64 / 1024.0
        );
        last = Some(text);
    }
    let _ = sim.kill();
    let _ = sim.wait();

    let all = last.unwrap();
    let firing = all
        .lines()
        .filter(|l| l.starts_with("nbidle_notebook_idle_deadline_timestamp_seconds{"))
        .count();
    println!();
    println!("| rule cost, 10,000 notebooks | rule group evaluation avg | max |");
    println!("|---|---|---|");
    rule_cost(&all, &format!("{firing} past their deadline (firing)")).await;
    // Everyone busy: the exporter publishes no deadlines at all.
    let busy: String = all
        .lines()
        .filter(|l| !l.starts_with("nbidle_notebook_idle_deadline_timestamp_seconds{"))
        .map(|l| format!("{l}\n"))
        .collect();
    rule_cost(&busy, "none near its deadline").await;
}

/// Serves 10,000 notebooks' exporter series to a real Prometheus that
/// evaluates the default generated rules, and reads the rule group's cost.
async fn rule_cost(series: &str, case: &str) {
    let series = Arc::new(series.to_string());
    let port = free_port();
    let s = series.clone();
    tokio::spawn(
        warp::serve(warp::path!("metrics" / "notebooks").map(move || s.to_string()))
            .run(([127, 0, 0, 1], port)),
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let out = Command::new(env!("CARGO_BIN_EXE_nbidle"))
        .arg("rules")
        .output()
        .unwrap();
    assert!(out.status.success());
    // Evaluate every 5s instead of 1m to collect samples quickly.
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace("interval: 1m", "interval: 5s");
    std::fs::write(&rules, text).unwrap();
    let prom_port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{scrape_interval: 5s, evaluation_interval: 5s}}\nrule_files: [{}]\nscrape_configs:\n- job_name: nbidle-exporter\n  honor_labels: true\n  metrics_path: /metrics/notebooks\n  static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n- job_name: prometheus\n  static_configs: [{{targets: ['127.0.0.1:{prom_port}']}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (run scripts/test-deps.sh)");
    wait_port(prom_port).await;
    let http = reqwest::Client::new();
    let q = |query: &str| {
        reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{prom_port}/api/v1/query"),
            &[("query", query)],
        )
        .unwrap()
    };
    // A minute of evaluations over all 10,000 notebooks.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let value = |query: &str| {
        let (http, url) = (http.clone(), q(query));
        async move {
            let j: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
            j["data"]["result"][0]["value"][1]
                .as_str()
                .unwrap_or("NaN")
                .parse::<f64>()
                .unwrap_or(f64::NAN)
        }
    };
    let count = value("count(nbidle_notebook_idle_after_seconds)").await;
    let max = value("max_over_time(prometheus_rule_group_last_duration_seconds{rule_group=~\".*nbidle.idle\"}[1m])").await;
    let avg = value("avg_over_time(prometheus_rule_group_last_duration_seconds{rule_group=~\".*nbidle.idle\"}[1m])").await;
    let _ = prom.kill();
    let _ = prom.wait();
    println!("| {case} | {:.1} ms | {:.1} ms |", avg * 1e3, max * 1e3);
    assert_eq!(count, 10_000.0, "all notebooks' series reached Prometheus");
}
