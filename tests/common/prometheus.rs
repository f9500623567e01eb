//! A real Prometheus: scraping nbidle's notebooks (found through nbidle's
//! service discovery) and nbidle itself with nbidle's generated rules, or
//! only given scrape jobs.
#![allow(
    dead_code,
    reason = "each test binary compiles tests/common whole and uses a part of it"
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::alertmanager::Alertmanager;
use super::proc::{free_port, tool, wait_ready, Proc};
use super::serve::{nbidle_cli, Nbidle};

pub struct Prometheus {
    pub proc: Proc,
    pub url: String,
    pub http: reqwest::Client,
}

impl Prometheus {
    /// Prometheus with nbidle's rules, scrape jobs and Alertmanager config.
    pub async fn start(dir: &Path, nbidle: &Nbidle, alertmanager: &Alertmanager) -> Prometheus {
        // Send an alert again 1s after a failed or lost delivery.
        Self::start_with_args(
            dir,
            nbidle,
            alertmanager,
            &["--rules.alert.resend-delay=1s"],
        )
        .await
    }

    /// As [`Prometheus::start`], with these command-line arguments (none:
    /// Prometheus's defaults).
    pub async fn start_with_args(
        dir: &Path,
        nbidle: &Nbidle,
        alertmanager: &Alertmanager,
        args: &[&str],
    ) -> Prometheus {
        let cfg_path = nbidle.config.to_str().unwrap();
        let rules = dir.join("nbidle.rules.yml");
        std::fs::write(&rules, nbidle_cli(&["rules", "--config", cfg_path])).unwrap();
        let scrape = nbidle_cli(&["manifests", "prometheus-scrape", "--config", cfg_path]);
        let scrape: Value = serde_yaml::from_str(&scrape).unwrap();
        let mut jobs = scrape["scrape_configs"].as_array().unwrap().clone();
        jobs.push(json!({
            "job_name": "nbidle",
            "scrape_interval": "1s",
            "static_configs": [{"targets": [nbidle.url.trim_start_matches("http://")]}],
        }));
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules.display().to_string()],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.url.trim_start_matches("http://")]}]}]},
            "scrape_configs": jobs,
        });
        Self::launch(dir, &config, args).await
    }

    /// A real Prometheus with only these scrape jobs (no rules, no
    /// Alertmanager), scraping every second.
    pub async fn start_with_jobs(dir: &Path, jobs: Vec<serde_yaml::Value>) -> Prometheus {
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": jobs,
        });
        Self::launch(dir, &config, &[]).await
    }

    /// A real Prometheus evaluating the rule file `rules` every `interval`
    /// over these scrape jobs (no Alertmanager), with these arguments.
    pub async fn start_with_rules(
        dir: &Path,
        rules: &Path,
        interval: &str,
        jobs: Vec<Value>,
        args: &[&str],
    ) -> Prometheus {
        let config = json!({
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [rules.display().to_string()],
            "scrape_configs": jobs,
        });
        Self::launch(dir, &config, args).await
    }

    /// Prometheus's own `/metrics` text.
    pub async fn own_metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Writes `config` to `<dir>/prometheus.yml` and runs Prometheus on it;
    /// returns once it is ready.
    async fn launch(dir: &Path, config: &Value, extra_args: &[&str]) -> Prometheus {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, serde_yaml::to_string(config).unwrap()).unwrap();
        let port = free_port();
        let proc = Proc::spawn(
            "prometheus",
            Command::new(tool(&["prometheus"]))
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("prom-data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args(extra_args),
            &dir.join("prometheus.log"),
        );
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(
            "prometheus ready",
            &format!("{url}/-/ready"),
            Duration::from_secs(30),
        )
        .await;
        Prometheus {
            proc,
            url,
            http: reqwest::Client::new(),
        }
    }

    /// Runs an instant query; Err carries Prometheus's error message.
    pub async fn query(&self, q: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(
                reqwest::Url::parse_with_params(
                    &format!("{}/api/v1/query", self.url),
                    &[("query", q)],
                )
                .unwrap(),
            )
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if v["status"] == "success" {
            Ok(v["data"]["result"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }

    /// `/api/v1/targets`' active targets.
    pub async fn active_targets(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/targets?state=active", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}
