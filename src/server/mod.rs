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
use std::sync::atomic::AtomicBool;
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
    /// Set once the backend has synced; cleared when shutdown begins, before
    /// the listener drains, so a load balancer stops sending traffic first
    /// (`run` owns both changes).
    pub ready: AtomicBool,
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
