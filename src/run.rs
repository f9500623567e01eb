//! `nbidle serve`: builds the backend, the metrics and the HTTP server from a
//! config, and runs them until the shutdown token is cancelled.
//!
//! Shutdown, in order: readiness drops (`/readyz` answers 503 while the
//! listener drains), the listener drains within `server.shutdown_timeout`,
//! then every task started on the token ends and is awaited (exporter,
//! apply, the local backend's recovery), then the backend's own
//! [`Backend::shutdown`] (the local backend's stops at exit and its own
//! tasks). Each step has a bound (`Bounds`): one that overruns is left
//! behind and the next begins, so a stuck task never skips the stops at
//! exit, and nbidle always exits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apply;
use crate::backend::jupyterhub::JupyterHubBackend;
use crate::backend::k8s;
use crate::backend::k8s::kubeflow::KubeflowBackend;
use crate::backend::k8s::statefulset::StatefulSetBackend;
use crate::backend::local::{LocalBackend, NbidlePage};
use crate::backend::Backend;
use crate::config::{BackendConfig, Config, SecretFiles};
use crate::decide::Policy;
use crate::error::{Error, Result};
use crate::exporter::Exporter;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::server::auth::{ApiTokens, Credentials};
use crate::server::body::BodyLimits;
use crate::server::listener::Limits;
use crate::server::tls::Tls;
use crate::server::{self, App, Readiness};

/// What each step of shutdown may take beyond its own deadline (the
/// drain's `shutdown_timeout`, the local backend's stop grace period); the
/// tasks end promptly once the token is cancelled, so they get this alone.
const STEP_MARGIN: Duration = Duration::from_secs(5);

/// What `nbidle check` verifies beyond the config's own validation: the
/// secrets and their files, the backend's fit with the rules, the TLS web
/// config.
pub fn check(cfg: &Config) -> Result<()> {
    check_with(cfg, SecretFiles::Read)
}

/// What `nbidle rules` and `nbidle manifests` verify: the same as
/// [`check`] but for reading the files the config names (secrets, TLS
/// certificates), which are read where nbidle runs and are often absent
/// where its rules and manifests are generated.
pub fn check_generated(cfg: &Config) -> Result<()> {
    check_with(cfg, SecretFiles::Named)
}

fn check_with(cfg: &Config, files: SecretFiles) -> Result<()> {
    cfg.secrets_with(files)?;
    cfg.check_backend_fit()?;
    if let (SecretFiles::Read, Some(web)) = (files, &cfg.server.web_config_file) {
        Tls::load(web)?;
    }
    Ok(())
}

/// `nbidle serve`: runs until `shutdown` is cancelled, then drains.
pub async fn serve(cfg: Config, shutdown: CancellationToken) -> Result<()> {
    let secrets = cfg.secrets()?;
    cfg.check_backend_fit()?;
    let tls = match &cfg.server.web_config_file {
        Some(f) => Some(Arc::new(Tls::load(f)?)),
        None => None,
    };
    let limits = Limits::from(&cfg.server).within_fd_limit();
    let metrics = Arc::new(Metrics::new());
    let mut kube_client = None;
    // What the local backend's stops at shutdown may take.
    let mut stop_grace = Duration::ZERO;
    let tasks = TaskTracker::new();
    // The local backend's notebooks are recovered once the listener is bound.
    let mut local_recovery = None;
    let namespaces = &cfg.kubernetes.notebook_namespaces;
    let backend: Arc<dyn Backend> = match &cfg.backend {
        BackendConfig::Local(local) => {
            stop_grace = local.stop_grace_period.0;
            // Takes the data dir's lock first: a second nbidle stops here.
            let b = LocalBackend::open(local, &cfg.data_dir, cfg.idle_bounds(), &shutdown).await?;
            local_recovery = Some(b.clone());
            b
        }
        BackendConfig::Kubeflow(k) => {
            let clients = k8s::Clients::from_env(cfg.kubernetes.request_timeout.0).await?;
            kube_client = Some(clients.requests.clone());
            KubeflowBackend::new(
                clients,
                namespaces,
                k.label_selector.as_deref(),
                k.jupyter_url.clone(),
                cfg.idle_bounds(),
                &metrics.watch,
            )
        }
        BackendConfig::Statefulset(s) => {
            let clients = k8s::Clients::from_env(cfg.kubernetes.request_timeout.0).await?;
            kube_client = Some(clients.requests.clone());
            StatefulSetBackend::new(
                clients,
                namespaces,
                Some(&s.label_selector),
                s.jupyter_url.clone(),
                cfg.idle_bounds(),
                &metrics.watch,
            )
        }
        BackendConfig::Jupyterhub(h) => {
            let token = secrets
                .hub_token
                .clone()
                .expect("secrets() requires the Hub's token with backend.kind jupyterhub");
            // The Hub may start after nbidle; a token without a needed
            // scope ends start-up at once.
            JupyterHubBackend::connect(h, token, cfg.idle_bounds(), HUB_START_WAIT).await?
        }
    };
    // validate() allows apply only with a Kubernetes backend, so the client exists.
    if let (true, Some(client)) = (cfg.kubernetes.apply, kube_client) {
        let objects = apply::objects(&cfg)?;
        tasks.spawn(apply::run(
            client,
            objects,
            shutdown.clone().cancelled_owned(),
        ));
    }
    let exporter = cfg
        .exporter
        .enabled
        .then(|| Exporter::from_config(backend.clone(), &cfg));
    if let Some(e) = exporter.clone() {
        spawn_exporter(e, shutdown.clone().cancelled_owned(), &tasks)?;
    }
    let silences =
        crate::silences::Silences::from_config(&cfg.alertmanager, metrics.clone())?.map(Arc::new);
    let warnings = Arc::new(crate::warnings::Warnings::new(
        cfg.autostop.warn_before.0,
        cfg.alertmanager.group_interval.0,
    ));
    // After each exporter round, on the main runtime: its pushes and the
    // silences they make are the webhook's kind of work, not probes.
    let notifier = match (&exporter, cfg.notify.jupyterlab.enabled) {
        (Some(e), true) => {
            let n = Notifier::new(
                crate::notify::Settings::from_config(&cfg),
                e.clone(),
                backend.clone(),
                warnings.clone(),
                silences.clone(),
                metrics.clone(),
            );
            tasks.spawn(n.clone().run(shutdown.clone().cancelled_owned()));
            Some(n)
        }
        _ => None,
    };
    let app = Arc::new(App {
        notifier,
        silences,
        warnings,
        exporter: exporter.clone(),
        backend: backend.clone(),
        metrics,
        policy: Policy {
            enabled: cfg.autostop.enabled,
            dry_run: cfg.autostop.dry_run,
            recheck: cfg.autostop.recheck,
        },
        webhook_credentials: Credentials::new(secrets.webhook_token, secrets.webhook_basic),
        api_tokens: ApiTokens::new(secrets.api_tokens, secrets.namespaced_api_tokens)
            .with_scrape_token(secrets.metrics_token),
        body_limits: Arc::new(BodyLimits::new(
            cfg.webhook.max_body_bytes,
            cfg.webhook.max_bytes_in_flight,
            cfg.server.body_read_timeout.0,
        )),
        // Synced once the backend knows its notebooks (local: once recovered).
        readiness: Readiness::default(),
        page: crate::page::Page::from_config(&cfg.auth, tls.is_some()),
    });
    // The listener drains only once readiness is down: whoever polls
    // /readyz sees 503 before connections close.
    let not_ready = tasks.spawn(readiness(app.clone(), shutdown.clone()));
    let drain = async move {
        let _ = not_ready.await;
    };
    let https = tls.is_some();
    let people = app.page.gate();
    let (bound, server) = server::bind(app, cfg.listen, limits, tls, drain).await?;
    tracing::info!(%bound, backend = ?cfg.backend.kind(), dry_run = cfg.autostop.dry_run, "nbidle listening");
    // Only now, with the port ours: an nbidle that cannot listen has spawned
    // and adopted nothing. /livez answers meanwhile; /readyz once done.
    if let Some(local) = local_recovery {
        let nbidle = NbidlePage {
            addr: bound,
            https,
            external_url: cfg.server.external_url(),
        };
        local.serve_stopped_pages(nbidle, people);
        tasks.spawn(local.recover());
    }
    let bounds = Bounds::new(limits.shutdown_timeout, stop_grace);
    run_until_shutdown(server, &shutdown, &tasks, backend.as_ref(), bounds).await;
    Ok(())
}

/// How long each step of shutdown may take.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    drain: Duration,
    tasks: Duration,
    backend: Duration,
}

impl Bounds {
    /// `drain`: `server.shutdown_timeout`; `stop_grace`: what the local
    /// backend's stops at exit may take (zero for the others).
    fn new(drain: Duration, stop_grace: Duration) -> Self {
        Bounds {
            drain: drain + STEP_MARGIN,
            tasks: STEP_MARGIN,
            backend: stop_grace + STEP_MARGIN,
        }
    }
}

/// How long start-up waits for the Hub to answer.
const HUB_START_WAIT: Duration = Duration::from_secs(60);

/// The one owner of readiness: up once the backend has synced, down the
/// moment shutdown begins (and never up again). Ends once it is down.
async fn readiness(app: Arc<App>, shutdown: CancellationToken) {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => {}
        () = app.backend.synced() => {
            app.readiness.set_synced();
            tracing::info!("backend synced; ready");
            shutdown.cancelled().await;
        }
    }
    app.readiness.set_draining();
    tracing::info!("shutting down: not ready, draining connections");
}

/// Serves until shutdown begins, then awaits the listener's drain, the
/// tracked tasks and the backend's shutdown, in that order, each within its
/// bound. Returns whether every step ended in time.
async fn run_until_shutdown(
    server: impl Future<Output = ()>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
    backend: &dyn Backend,
    bounds: Bounds,
) -> bool {
    tokio::pin!(server);
    // The listener ends only after shutdown has begun.
    let drained = tokio::select! {
        () = &mut server => true,
        () = shutdown.cancelled() => false,
    };
    let mut in_time = drained || within(bounds.drain, "the listener's drain", server).await;
    tracing::info!(
        tasks = tasks.len(),
        "connections drained; waiting for tasks"
    );
    tasks.close();
    in_time &= within(bounds.tasks, "the tasks", tasks.wait()).await;
    in_time &= within(bounds.backend, "the backend's shutdown", backend.shutdown()).await;
    tracing::info!("shut down");
    in_time
}

/// Awaits `step` for at most `bound`; past it, goes on without it.
async fn within(bound: Duration, what: &str, step: impl Future<Output = ()>) -> bool {
    let in_time = tokio::time::timeout(bound, step).await.is_ok();
    if !in_time {
        tracing::warn!(
            ?bound,
            "shutdown: {what} did not end in time; going on without"
        );
    }
    in_time
}

/// Runs the exporter's probe rounds on a runtime and thread of their own,
/// at a lower CPU priority: a round over thousands of notebooks then never
/// delays the webhook or the API, which keep the main runtime to
/// themselves. `tasks` tracks the thread until its runtime is gone.
#[allow(unsafe_code)] // setpriority for the exporter thread
fn spawn_exporter(
    exporter: Arc<Exporter>,
    until: impl Future<Output = ()> + Send + 'static,
    tasks: &TaskTracker,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("building the exporter runtime", e))?;
    let running = tasks.token();
    std::thread::Builder::new()
        .name("nbidle-exporter".into())
        .spawn(move || {
            // SAFETY: setpriority on this thread's own id only changes its
            // scheduling priority; failure leaves it at the default.
            unsafe {
                let tid = libc::gettid();
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
            }
            rt.block_on(exporter.run(until));
            // Its probes in flight end with the runtime, before it counts as ended.
            drop(rt);
            drop(running);
        })
        .map_err(|e| Error::io("starting the exporter thread", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{JupyterEndpoint, ScrapeTarget, StopOutcome, StopRequest};
    use crate::notebook::{NotebookId, NotebookState};

    /// What happened during a shutdown, in order.
    #[derive(Clone, Default)]
    struct Events(Arc<Mutex<Vec<&'static str>>>);

    impl Events {
        fn note(&self, event: &'static str) {
            self.0.lock().unwrap().push(event);
        }

        fn all(&self) -> Vec<&'static str> {
            self.0.lock().unwrap().clone()
        }
    }

    /// The in-memory backend, noting when it is shut down.
    struct Noting {
        inner: MemoryBackend,
        events: Events,
    }

    #[async_trait]
    impl Backend for Noting {
        async fn list(&self) -> Result<Vec<NotebookState>> {
            self.inner.list().await
        }
        async fn get(&self, id: &NotebookId) -> Result<NotebookState> {
            self.inner.get(id).await
        }
        async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome> {
            self.inner.stop(id, req).await
        }
        async fn start(&self, id: &NotebookId) -> Result<NotebookState> {
            self.inner.start(id).await
        }
        async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>> {
            self.inner.scrape_targets().await
        }
        async fn jupyter_endpoints(&self) -> Result<Vec<JupyterEndpoint>> {
            self.inner.jupyter_endpoints().await
        }
        async fn synced(&self) {
            self.inner.synced().await
        }
        async fn shutdown(&self) {
            self.events.note("backend shut down");
        }
    }

    fn noting(events: &Events) -> Arc<Noting> {
        Arc::new(Noting {
            inner: MemoryBackend::new([]),
            events: events.clone(),
        })
    }

    fn app(backend: Arc<dyn Backend>) -> Arc<App> {
        Arc::new(App {
            notifier: None,
            backend,
            exporter: None,
            metrics: Arc::new(Metrics::new()),
            policy: Policy {
                enabled: true,
                dry_run: false,
                recheck: false,
            },
            webhook_credentials: Credentials::new(Vec::new(), None),
            api_tokens: ApiTokens::new(Vec::new(), Vec::new()),
            body_limits: Arc::new(BodyLimits::new(4096, 16384, Duration::from_secs(5))),
            readiness: Readiness::default(),
            silences: None,
            warnings: Arc::new(crate::warnings::Warnings::new(
                Duration::from_secs(60),
                Duration::from_secs(60),
            )),
            page: crate::page::Page::new(Duration::from_secs(60), 10, None, false),
        })
    }

    const LIMITS: Limits = Limits {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(10),
        max_header_bytes: 8192,
        write_timeout: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(5),
    };

    /// Polls `done` every 10 ms for at most 5 s.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not {what} within 5 s");
    }

    #[tokio::test]
    async fn readiness_drops_then_the_listener_drains_then_tasks_end_then_the_backend() {
        let events = Events::default();
        let backend = noting(&events);
        let app = app(backend.clone());
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        let not_ready = tasks.spawn(readiness(app.clone(), shutdown.clone()));
        let drain = async move {
            let _ = not_ready.await;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let (addr, server) = server::bind(app.clone(), addr, LIMITS, None, drain)
            .await
            .unwrap();
        // A task that takes a while to end once the token is cancelled.
        tasks.spawn({
            let (shutdown, events) = (shutdown.clone(), events.clone());
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                events.note("task ended");
            }
        });
        let bounds = Bounds::new(LIMITS.shutdown_timeout, Duration::ZERO);
        let shutting_down = run_until_shutdown(server, &shutdown, &tasks, backend.as_ref(), bounds);
        let client = async {
            until("ready", || app.readiness.is_ready()).await;
            // A request in flight: its head unfinished when shutdown begins.
            let mut held = TcpStream::connect(addr).await.unwrap();
            held.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            until("accepted", || app.metrics.connections_open.get() == 1).await;
            shutdown.cancel();
            events.note("cancelled");
            // The listener stops accepting only once readiness is down.
            for _ in 0..500 {
                if TcpStream::connect(addr).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
            assert!(!app.readiness.is_ready(), "ready while draining");
            held.write_all(b"\r\n").await.unwrap();
            let mut response = String::new();
            held.read_to_string(&mut response).await.unwrap();
            assert!(response.starts_with("HTTP/1.1 503"), "{response}");
            events.note("request answered");
        };
        let (in_time, ()) = tokio::join!(shutting_down, client);
        assert!(in_time);
        assert_eq!(
            events.all(),
            [
                "cancelled",
                "request answered",
                "task ended",
                "backend shut down"
            ]
        );
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn a_step_past_its_bound_is_left_behind_and_the_backend_still_shuts_down() {
        let events = Events::default();
        let backend = noting(&events);
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        // A task that ignores the token.
        tasks.spawn(std::future::pending::<()>());
        let bounds = Bounds {
            drain: Duration::from_secs(5),
            tasks: Duration::from_millis(200),
            backend: Duration::from_secs(5),
        };
        shutdown.cancel();
        let started = std::time::Instant::now();
        let in_time = run_until_shutdown(
            std::future::ready(()),
            &shutdown,
            &tasks,
            backend.as_ref(),
            bounds,
        )
        .await;
        let took = started.elapsed();
        assert!(!in_time);
        assert_eq!(events.all(), ["backend shut down"]);
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(tasks.len(), 1, "left behind, not awaited for ever");
    }
}
