//! `nbidle serve`: builds the backend, the metrics and the HTTP server from a
//! config, and runs them until the shutdown future resolves.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::apply;
use crate::backend::k8s;
use crate::backend::k8s::kubeflow::KubeflowBackend;
use crate::backend::k8s::statefulset::StatefulSetBackend;
use crate::backend::local::LocalBackend;
use crate::backend::Backend;
use crate::config::{BackendConfig, Config};
use crate::decide::Policy;
use crate::error::{Error, Result};
use crate::exporter::Exporter;
use crate::metrics::Metrics;
use crate::server::auth::{ApiTokens, Credentials};
use crate::server::body::BodyLimits;
use crate::server::listener::Limits;
use crate::server::tls::Tls;
use crate::server::{self, App};

pub async fn serve(cfg: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let secrets = cfg.secrets()?;
    cfg.check_backend_fit()?;
    let tls = match &cfg.server.web_config_file {
        Some(f) => Some(Arc::new(Tls::load(f)?)),
        None => None,
    };
    let limits = Limits::from(&cfg.server).within_fd_limit();
    let metrics = Arc::new(Metrics::new());
    let mut kube_client = None;
    // The local backend's notebooks are recovered once the listener is bound.
    let mut local_recovery = None;
    let namespaces = &cfg.kubernetes.notebook_namespaces;
    let backend: Arc<dyn Backend> = match &cfg.backend {
        BackendConfig::Local(local) => {
            // Takes the data dir's lock first: a second nbidle stops here.
            let b = LocalBackend::open(local, &cfg.data_dir, cfg.idle_bounds()).await?;
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
    };
    // One shutdown signal, fanned out to every task.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|&s| s).await;
        }
    };
    // validate() allows apply only with a Kubernetes backend, so the client exists.
    let apply_task = match (cfg.kubernetes.apply, kube_client) {
        (true, Some(client)) => {
            let objects = apply::objects(&cfg)?;
            Some(tokio::spawn(apply::run(client, objects, stopped())))
        }
        _ => None,
    };
    let exporter = cfg
        .exporter
        .enabled
        .then(|| Exporter::from_config(backend.clone(), &cfg));
    let exporter_task = match exporter.clone() {
        Some(e) => Some(spawn_exporter(e, stopped())?),
        None => None,
    };
    let app = Arc::new(App {
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
        // Ready once the backend knows its notebooks (local: once recovered).
        ready: AtomicBool::new(false),
    });
    let sync = {
        let (app, backend) = (app.clone(), backend.clone());
        tokio::spawn(async move {
            backend.synced().await;
            app.ready.store(true, Ordering::Release);
            tracing::info!("backend synced; ready");
        })
    };
    let (bound, server) = server::bind(app, cfg.listen, limits, tls, stopped()).await?;
    tracing::info!(%bound, backend = ?cfg.backend.kind(), dry_run = cfg.autostop.dry_run, "nbidle listening");
    // Only now, with the port ours: an nbidle that cannot listen has spawned
    // and adopted nothing. /livez answers meanwhile; /readyz once done.
    if let Some(local) = local_recovery {
        tokio::spawn(local.recover());
    }
    server.await;
    tracing::info!("shutting down");
    if let Some(t) = exporter_task {
        let _ = t.await;
    }
    sync.abort();
    if let Some(t) = apply_task {
        let _ = t.await;
    }
    backend.shutdown().await;
    Ok(())
}

/// Runs the exporter's probe rounds on a runtime and thread of their own,
/// at a lower CPU priority: a round over thousands of notebooks then never
/// delays the webhook or the API, which keep the main runtime to
/// themselves. The returned receiver resolves when the exporter has ended.
fn spawn_exporter(
    exporter: Arc<Exporter>,
    until: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::sync::oneshot::Receiver<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("building the exporter runtime", e))?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
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
            let _ = done_tx.send(());
        })
        .map_err(|e| Error::io("starting the exporter thread", e))?;
    Ok(done_rx)
}
