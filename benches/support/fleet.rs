//! A fixed fleet of running notebooks as a backend, each served under its
//! own path prefix of one simulated Jupyter server; and this process's CPU
//! time. For the benchmarks that drive the library directly.

use async_trait::async_trait;
use nbidle::backend::{Backend, JupyterEndpoint, ScrapeTarget, StopOutcome, StopRequest};
use nbidle::notebook::{NotebookId, NotebookState, Status, Timestamp};

/// `n` running notebooks `team-<i % 50>/nb-<i>`, started two hours ago
/// (old enough for the rules' age guard), notebook `i`'s idle time
/// `idle_after(i)` seconds, all served at `127.0.0.1:<port>/<ns>/<name>/`.
pub struct Fleet {
    pub states: Vec<NotebookState>,
    pub endpoints: Vec<JupyterEndpoint>,
}

impl Fleet {
    pub fn new(n: usize, port: u16, idle_after: impl Fn(usize) -> u64) -> Self {
        let started = Timestamp(Timestamp::now().0 - time::Duration::hours(2));
        let ids: Vec<NotebookId> = (0..n)
            .map(|i| NotebookId::new(format!("team-{}", i % 50), format!("nb-{i}")))
            .collect();
        Fleet {
            states: ids
                .iter()
                .enumerate()
                .map(|(i, id)| NotebookState {
                    id: id.clone(),
                    status: Status::Running,
                    message: None,
                    autostop: true,
                    idle_after_seconds: idle_after(i),
                    owner: Some(format!("user-{}", id.name)),
                    started_at: Some(started),
                    stopped_at: None,
                    stopped_by: None,
                    url: None,
                })
                .collect(),
            endpoints: ids
                .iter()
                .map(|id| JupyterEndpoint {
                    id: id.clone(),
                    base_url: format!("http://127.0.0.1:{port}/{}/{}/", id.namespace, id.name),
                    token: Some("t".into()),
                    pods: Vec::new(),
                })
                .collect(),
        }
    }
}

#[async_trait]
impl Backend for Fleet {
    async fn list(&self) -> nbidle::Result<Vec<NotebookState>> {
        Ok(self.states.clone())
    }
    async fn get(&self, id: &NotebookId) -> nbidle::Result<NotebookState> {
        Err(nbidle::Error::NotFound(id.clone()))
    }
    async fn stop(&self, id: &NotebookId, _: StopRequest) -> nbidle::Result<StopOutcome> {
        Err(nbidle::Error::NotFound(id.clone()))
    }
    async fn start(&self, id: &NotebookId) -> nbidle::Result<NotebookState> {
        Err(nbidle::Error::NotFound(id.clone()))
    }
    async fn scrape_targets(&self) -> nbidle::Result<Vec<ScrapeTarget>> {
        Ok(vec![])
    }
    async fn jupyter_endpoints(&self) -> nbidle::Result<Vec<JupyterEndpoint>> {
        Ok(self.endpoints.clone())
    }
}

/// This process's CPU time (user + system), seconds.
pub fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}
