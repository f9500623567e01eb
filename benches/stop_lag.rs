//! `make bench` (stop lag): how long after its idle deadline a notebook is
//! stopped, and how far ahead of it the warning comes, through a real
//! Prometheus and a real Alertmanager at nbidle's defaults.
//!
//! - Eight real Jupyter servers (jupyter_server 2.x from the test venv) are
//!   local notebooks of the nbidle binary; nobody uses them. Each has its
//!   own idle time, 3m + i × 23 s, so their deadlines fall at different
//!   points of the one-minute evaluation cycle.
//! - Shortened, to get deadlines in minutes: the idle times (default 30m)
//!   and `warn_before` (2m, default 5m; it must be shorter than the idle
//!   time). At the defaults, as generated: `autostop.evaluation_interval`
//!   (1m: the rule group's interval and the scrape interval of both
//!   generated jobs), the exporter's probe interval (15s) and timeout, the
//!   Alertmanager route (`group_wait`, `group_interval`, `repeat_interval`),
//!   and Prometheus's own flags (resend delay).
//! - A notebook's deadline is the one the exporter publishes
//!   (`nbidle_notebook_idle_deadline_timestamp_seconds`); its stop is
//!   nbidle's record (`stopped_at`, when the stop was decided and SIGTERM
//!   sent); when Prometheus fired the stop alert is `stopped_by.alert_starts_at`;
//!   the warning is the `NotebookIdleSoon` alert Alertmanager holds for the
//!   notebook (its `startsAt`: when Prometheus fired it).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{free_port, jupyter_notebook, nbidle_config, Alertmanager, JupyterVersion};
use common::{Nbidle, NbidleOptions, Prometheus};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const NOTEBOOKS: usize = 8;
const FIRST_IDLE_SECS: u64 = 180;
const STAGGER_SECS: u64 = 23;
const WARN_BEFORE: &str = "2m";
const WARN_BEFORE_SECS: f64 = 120.0;

fn unix(s: &str) -> f64 {
    let t = OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s}: {e}"));
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// What was seen of one notebook.
#[derive(Default)]
struct Seen {
    idle_after: u64,
    deadline: Option<f64>,
    /// Deadlines published later that differ from the first (none expected).
    moved: u32,
    warned: Option<f64>,
    fired: Option<f64>,
    stopped: Option<f64>,
}

/// `nbidle_notebook_idle_deadline_timestamp_seconds` per notebook name.
fn deadlines(exposition: &str) -> BTreeMap<String, f64> {
    let name = "nbidle_notebook_idle_deadline_timestamp_seconds{";
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| {
            let nb = rest.split("notebook=\"").nth(1)?.split('"').next()?;
            let v = rest.rsplit(' ').next()?.parse().ok()?;
            Some((nb.to_string(), v))
        })
        .collect()
}

/// Alertmanager's active `NotebookIdleSoon` alerts: notebook → startsAt.
async fn warnings(http: &reqwest::Client, am: &Alertmanager) -> BTreeMap<String, f64> {
    let url = format!(
        "{}/api/v2/alerts?filter=alertname%3D%22NotebookIdleSoon%22",
        am.url
    );
    let Ok(r) = http.get(url).send().await else {
        return BTreeMap::new();
    };
    let alerts: Vec<Value> = r.json().await.unwrap_or_default();
    alerts
        .iter()
        .filter_map(|a| {
            let nb = a["labels"]["notebook"].as_str()?;
            Some((nb.to_string(), unix(a["startsAt"].as_str()?)))
        })
        .collect()
}

fn stats(v: &[f64]) -> (f64, f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.len().is_multiple_of(2) {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    } else {
        s[s.len() / 2]
    };
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    (s[0], median, s[s.len() - 1], mean)
}

fn humantime_secs(s: &str) -> f64 {
    // Durations as nbidle's config writes them: "30s", "1m", "5m".
    let (n, unit) = s.split_at(s.len() - 1);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("duration {s}"));
    match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => panic!("duration {s}"),
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<_> = (0..NOTEBOOKS)
        .map(|i| jupyter_notebook(&format!("nb-{i}"), JupyterVersion::Current))
        .collect();
    let port = free_port();
    let mut cfg = nbidle_config(port, dir.path(), &specs, &NbidleOptions::default());
    // nbidle's defaults for everything that decides the lag.
    for key in ["exporter", "alertmanager"] {
        cfg.as_object_mut().unwrap().remove(key);
    }
    cfg["autostop"] = json!({
        "enabled": true,
        "idle_after": format!("{FIRST_IDLE_SECS}s"),
        "warn_before": WARN_BEFORE,
    });
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for (i, nb) in cfg["backend"]["local"]["notebooks"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        let idle = FIRST_IDLE_SECS + i as u64 * STAGGER_SECS;
        nb["idle_after"] = json!(format!("{idle}s"));
        seen.insert(
            format!("nb-{i}"),
            Seen {
                idle_after: idle,
                ..Seen::default()
            },
        );
    }
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    let nbidle = Nbidle::start_yaml(dir.path(), "nbidle", port, &yaml, &[]).await;
    let am = Alertmanager::start(dir.path(), &nbidle.config).await;
    let prom = Prometheus::start_with_args(dir.path(), &nbidle, &am, &[]).await;
    // The generated route's timing, to check the target against.
    let am_cfg: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.path().join("alertmanager.yml")).unwrap(),
    )
    .unwrap();
    let group_wait = humantime_secs(am_cfg["route"]["routes"][0]["group_wait"].as_str().unwrap());
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.path().join("nbidle.rules.yml")).unwrap(),
    )
    .unwrap();
    let evaluation = humantime_secs(rules["groups"][0]["interval"].as_str().unwrap());
    let for_ = rules["groups"][0]["rules"][1]["for"]
        .as_str()
        .unwrap_or("none")
        .to_string();
    eprintln!(
        "evaluation interval {evaluation}s, stop rule for: {for_}, group_wait {group_wait}s; {NOTEBOOKS} notebooks, idle {FIRST_IDLE_SECS}s + i x {STAGGER_SECS}s"
    );

    let http = reqwest::Client::new();
    let longest = FIRST_IDLE_SECS + (NOTEBOOKS as u64 - 1) * STAGGER_SECS;
    let give_up = Instant::now() + Duration::from_secs(longest + 600);
    while seen.values().any(|s| s.stopped.is_none()) {
        assert!(
            Instant::now() < give_up,
            "not every notebook was stopped within the idle time + 10 minutes"
        );
        for (nb, d) in deadlines(&nbidle.exporter_metrics().await) {
            if let Some(s) = seen.get_mut(&nb) {
                match s.deadline {
                    None => s.deadline = Some(d),
                    Some(first) if (first - d).abs() > 0.5 => s.moved += 1,
                    Some(_) => {}
                }
            }
        }
        for (nb, at) in warnings(&http, &am).await {
            if let Some(s) = seen.get_mut(&nb) {
                s.warned.get_or_insert(at);
            }
        }
        for v in nbidle.list().await["notebooks"].as_array().unwrap() {
            let Some(s) = seen.get_mut(v["name"].as_str().unwrap()) else {
                continue;
            };
            if s.stopped.is_none() && v["status"] != "running" && v["status"] != "starting" {
                assert_eq!(v["stopped_by"]["trigger"], "idle-alert", "{v}");
                s.stopped = Some(unix(v["stopped_at"].as_str().unwrap()));
                s.fired = Some(unix(v["stopped_by"]["alert_starts_at"].as_str().unwrap()));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(prom);

    let t0 = seen
        .values()
        .filter_map(|s| s.deadline.map(|d| d - s.idle_after as f64))
        .fold(f64::INFINITY, f64::min);
    println!("| notebook | idle time | deadline (s after the first start) | warning fired, s before the deadline | stop alert fired, s after | stopped, s after the deadline |");
    println!("|---|---|---|---|---|---|");
    let (mut lags, mut leads) = (vec![], vec![]);
    for (nb, s) in &seen {
        let d = s
            .deadline
            .unwrap_or_else(|| panic!("{nb}: no deadline seen"));
        assert_eq!(s.moved, 0, "{nb}: its deadline moved (someone used it?)");
        let lag = s.stopped.unwrap() - d;
        let lead = s.warned.map(|w| d - w);
        lags.push(lag);
        leads.extend(lead);
        println!(
            "| {nb} | {}s | {:.1} | {} | {:.1} | {lag:.1} |",
            s.idle_after,
            d - t0,
            lead.map_or("not warned".into(), |l| format!("{l:.1}")),
            s.fired.unwrap() - d,
        );
    }
    let (min, median, max, mean) = stats(&lags);
    println!();
    println!("| over {NOTEBOOKS} notebooks | min | median | max | mean |");
    println!("|---|---|---|---|---|");
    println!(
        "| stop lag after the deadline | {min:.1} s | {median:.1} s | {max:.1} s | {mean:.1} s |"
    );
    if !leads.is_empty() {
        let (min, median, max, mean) = stats(&leads);
        println!("| warning ahead of the deadline (warn_before {WARN_BEFORE}) | {min:.1} s | {median:.1} s | {max:.1} s | {mean:.1} s |");
    }
    let bound = evaluation + group_wait + 1.0;
    println!();
    println!(
        "target: every stop within {bound:.0} s (evaluation interval {evaluation:.0} s + group_wait {group_wait:.0} s + 1 s): {}; mean under 45 s: {}; every warning {WARN_BEFORE_SECS:.0} s ± {evaluation:.0} s ahead: {}",
        if max <= bound { "met" } else { "not met" },
        if mean < 45.0 { "met" } else { "not met" },
        if leads.len() == NOTEBOOKS
            && leads.iter().all(|l| (l - WARN_BEFORE_SECS).abs() <= evaluation)
        {
            "met"
        } else {
            "not met"
        }
    );
}
