//! The HTTP server: Alertmanager webhook, REST API, `/metrics`, Prometheus
//! service discovery, `/livez` and `/readyz`.
//!
//! - [`filters`]: routes and their checks (auth, body limits)
//! - [`handlers`]: one function per endpoint, and the one `recover`
//! - [`models`]: JSON shapes and the `ApiError` rejection
//! - [`auth`]: bearer/basic credential checks
//! - [`body`]: request bodies within size, time and in-flight bounds
//! - [`listener`]: connections: timeouts, the connection cap, shutdown
//! - [`tls`]: TLS from a Prometheus-style web config file

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod filters;
pub(crate) mod handlers;
pub(crate) mod listener;
pub(crate) mod models;
#[cfg(test)]
mod tests;
pub(crate) mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::backend::Backend;
use crate::decide::Policy;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use auth::{ApiTokens, Credentials};

/// Everything a handler needs, shared by all requests.
pub(crate) struct App {
    pub backend: Arc<dyn Backend>,
    /// The Jupyter activity exporter, when enabled.
    pub exporter: Option<Arc<crate::exporter::Exporter>>,
    pub metrics: Arc<Metrics>,
    pub policy: Policy,
    pub webhook_credentials: Credentials,
    pub api_tokens: ApiTokens,
    pub body_limits: Arc<body::BodyLimits>,
    /// Synced, then draining (`run` owns both changes).
    pub readiness: Readiness,
    /// Keep running (Alertmanager silences); `None` without `alertmanager.url`.
    pub silences: Option<Arc<crate::silences::Silences>>,
    /// Firing warnings per notebook, from the webhook.
    pub warnings: Arc<crate::warnings::Warnings>,
    /// The notebook page's sessions and settings.
    pub page: crate::page::Page,
    /// Pushes to notebooks' JupyterLab extension (`notify.jupyterlab`).
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

/// Two facts, kept apart because they answer different callers: the API
/// refuses requests until the backend has listed its notebooks (before
/// that every notebook would look unknown), while `/readyz` also goes down
/// the moment shutdown begins, so a load balancer stops sending traffic
/// before the listener drains. Requests that arrive meanwhile are still
/// served: the backend works until the drain is over.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    synced: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// The backend has listed its notebooks.
    pub(crate) fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Shutdown has begun; never undone.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// What `/readyz` says (besides the backend's own currency).
    pub(crate) fn is_ready(&self) -> bool {
        self.is_synced() && !self.is_draining()
    }
}

/// Binds `addr` and serves until `drain` resolves, then drains within
/// `limits.shutdown_timeout`. Returns the bound address (useful with port
/// 0) and the server future, which ends once drained.
pub(crate) async fn bind(
    app: Arc<App>,
    addr: SocketAddr,
    limits: listener::Limits,
    tls: Option<Arc<tls::Tls>>,
    drain: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()>)> {
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("binding {addr}"), e))?;
    let local = tcp
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
    let metrics = app.metrics.clone();
    let service = warp::service(filters::routes(app));
    let server = listener::serve(tcp, service, limits, tls, metrics, drain);
    Ok((local, server))
}
