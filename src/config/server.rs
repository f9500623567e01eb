//! `server`: limits of the HTTP listener, so slow, silent or many clients
//! cannot exhaust nbidle's memory or connections, and its TLS.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::HumanDuration;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    /// Open connections at most; at the cap a new connection replaces the
    /// oldest one that is not handling a request.
    pub(crate) max_connections: usize,
    /// The request line and headers must arrive within this; it is also how
    /// long an idle keep-alive connection is kept open.
    pub(crate) header_read_timeout: HumanDuration,
    /// Largest request head (request line and headers).
    pub(crate) max_header_bytes: usize,
    /// A request body must arrive within this.
    pub(crate) body_read_timeout: HumanDuration,
    /// A response the client does not read for this long is abandoned.
    pub(crate) write_timeout: HumanDuration,
    /// On shutdown, requests in flight get this long to finish.
    pub(crate) shutdown_timeout: HumanDuration,
    /// TLS: a web config file in the Prometheus exporter-toolkit format
    /// (`tls_server_config`); without it the listener speaks plain HTTP.
    pub(crate) web_config_file: Option<PathBuf>,
    /// The URL people use for nbidle's page (behind a proxy, its public
    /// name); shown in notebooks by the JupyterLab extension. Without it,
    /// a loopback `listen` is its own URL and any other has none.
    pub(crate) external_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            header_read_timeout: HumanDuration::secs(10),
            max_header_bytes: 16 * 1024,
            body_read_timeout: HumanDuration::secs(30),
            write_timeout: HumanDuration::secs(30),
            shutdown_timeout: HumanDuration::secs(10),
            web_config_file: None,
            external_url: None,
        }
    }
}

/// hyper cannot buffer less than this for a request head.
pub(crate) const MIN_HEADER_BYTES: usize = 8 * 1024;

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let k = |key: &str| format!("server.{key}");
        if !(16..=1_000_000).contains(&self.max_connections) {
            return Err(Error::config(
                k("max_connections"),
                "must be between 16 and 1000000",
            ));
        }
        if !(MIN_HEADER_BYTES..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(Error::config(
                k("max_header_bytes"),
                format!("must be between {MIN_HEADER_BYTES} and 1048576"),
            ));
        }
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("write_timeout", self.write_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if d.0 < Duration::from_millis(100) || d.0 > Duration::from_secs(3600) {
                return Err(Error::config(k(key), "must be between 100ms and 1h"));
            }
        }
        if let Some(u) = &self.external_url {
            let bad = |m: String| Error::config(k("external_url"), m);
            super::values::check_url(u).map_err(bad)?;
            if u.contains('?') || u.contains('#') {
                return Err(bad(format!("{u:?} must have no query or fragment")));
            }
        }
        Ok(())
    }

    /// `external_url` ending in `/`.
    pub(crate) fn external_url(&self) -> Option<String> {
        self.external_url.as_ref().map(|u| match u.ends_with('/') {
            true => u.clone(),
            false => format!("{u}/"),
        })
    }

    /// `external_url` ending in `/`; else, for a loopback `listen`,
    /// `http(s)://<listen>/`; else none.
    pub(crate) fn page_url(&self, listen: std::net::SocketAddr) -> Option<String> {
        match self.external_url() {
            Some(u) => Some(u),
            None if listen.ip().is_loopback() => {
                let scheme = match self.web_config_file {
                    Some(_) => "https",
                    None => "http",
                };
                Some(format!("{scheme}://{listen}/"))
            }
            None => None,
        }
    }
}
