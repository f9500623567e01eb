//! A real Alertmanager with nbidle's generated config.
#![allow(
    dead_code,
    reason = "each test binary compiles tests/common whole and uses a part of it"
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::proc::{free_port, tool, wait_ready, Proc};
use super::serve::nbidle_cli;

pub struct Alertmanager {
    pub proc: Proc,
    pub url: String,
}

impl Alertmanager {
    /// A real Alertmanager on a free port with the config nbidle generates
    /// from `nbidle_config`.
    pub async fn start(dir: &Path, nbidle_config: &Path) -> Alertmanager {
        Self::start_at(dir, nbidle_config, free_port()).await
    }

    /// As [`Alertmanager::start`], on `port` (chosen beforehand, so that
    /// nbidle's config can name it as `alertmanager.url`).
    pub async fn start_at(dir: &Path, nbidle_config: &Path, port: u16) -> Alertmanager {
        let yaml = nbidle_cli(&[
            "manifests",
            "alertmanager",
            "--config",
            nbidle_config.to_str().unwrap(),
        ]);
        Self::start_yaml(dir, &yaml, port).await
    }

    /// A real Alertmanager on `port` with the config `yaml`.
    pub async fn start_yaml(dir: &Path, yaml: &str, port: u16) -> Alertmanager {
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let bin = tool(&["prometheus-alertmanager", "alertmanager"]);
        let proc = Proc::spawn(
            "alertmanager",
            Command::new(bin)
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.path={}", dir.join("am-data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // No cluster: a single instance on loopback.
                .arg("--cluster.listen-address="),
            &dir.join("alertmanager.log"),
        );
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(
            "alertmanager ready",
            &format!("{url}/-/ready"),
            Duration::from_secs(30),
        )
        .await;
        Alertmanager { proc, url }
    }

    /// The active silences, as `amtool silence query -o json` lists them.
    pub fn silences(&self) -> Vec<serde_json::Value> {
        let out = self.amtool(&["silence", "query", "-o", "json"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The alert `alertname` about notebook `notebook` as Alertmanager
    /// holds it (`GET /api/v2/alerts`), if it does; both names are put in
    /// the query as they are (label values of letters, digits and `-`).
    pub async fn alert(&self, alertname: &str, notebook: &str) -> Option<serde_json::Value> {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!(
                "{}/api/v2/alerts?filter=alertname%3D%22{alertname}%22&filter=notebook%3D%22{notebook}%22",
                self.url
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v.as_array()?.first().cloned()
    }

    /// `amtool <args> --alertmanager.url=<this>`; its stdout, which must
    /// succeed.
    pub fn amtool(&self, args: &[&str]) -> String {
        let out = Command::new(tool(&["amtool"]))
            .args(args)
            .arg(format!("--alertmanager.url={}", self.url))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "amtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
