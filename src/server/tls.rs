//! TLS for the listener, configured the way the Prometheus ecosystem does:
//! a web config file in exporter-toolkit's format.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional
//!   client_ca_file: ca.crt                         # with client_auth_type
//!   min_version: TLS12                             # TLS12 (default) or TLS13
//! ```
//!
//! Like exporter-toolkit, the files are looked at again for every new
//! connection: a renewed certificate (cert-manager, a rotated Secret) is
//! served without a restart. Only a change of a file's modification time or
//! size rebuilds the TLS setup, so a handshake normally costs a few `stat`s.
//! A change that does not load (a half-written key) is logged and the last
//! good setup stays in use.
//!
//! Paths in the web config file are relative to that file. Keys nbidle does
//! not support are refused by name, so a setting is never silently ignored.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfig {
    tls_server_config: Option<TlsServerConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: ClientAuthType,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: MinVersion,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
enum ClientAuthType {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
    // Accepted by exporter-toolkit, refused here: a client certificate that
    // is not verified proves nothing.
    RequestClientCert,
    RequireAnyClientCert,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
enum MinVersion {
    #[default]
    TLS12,
    TLS13,
}

/// Modification time and size of each file the setup was built from.
type Stamp = Vec<Option<(SystemTime, u64)>>;

struct Loaded {
    /// The web config file first, then the files it names.
    files: Vec<PathBuf>,
    stamp: Stamp,
    config: Arc<ServerConfig>,
}

/// The listener's TLS setup, rebuilt when its files change.
pub(crate) struct Tls {
    web_config: PathBuf,
    loaded: Mutex<Loaded>,
}

impl Tls {
    /// Loads the web config file; an error names the key at fault.
    pub(crate) fn load(web_config: &Path) -> Result<Tls> {
        let loaded = build(web_config)?;
        Ok(Tls {
            web_config: web_config.to_path_buf(),
            loaded: Mutex::new(loaded),
        })
    }

    /// The setup for a new connection: the files are checked first and the
    /// setup rebuilt if they changed.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        let mut loaded = self.loaded.lock().expect("tls lock is never poisoned");
        if stamp(&loaded.files) != loaded.stamp {
            match build(&self.web_config) {
                Ok(new) => {
                    tracing::info!(file = %self.web_config.display(), "TLS certificates reloaded");
                    *loaded = new;
                }
                Err(e) => {
                    // Keep serving with the last good certificates; retry
                    // only once the files change again.
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones");
                    loaded.stamp = stamp(&loaded.files);
                }
            }
        }
        loaded.config.clone()
    }
}

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn key(k: &str) -> String {
    format!("server.web_config_file: {k}")
}

fn build(web_config: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(web_config)
        .map_err(|e| Error::config("server.web_config_file", format!("reading it: {e}")))?;
    let de = serde_yaml::Deserializer::from_str(&text);
    let parsed: WebConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        Error::config(key(&path), e.into_inner().to_string())
    })?;
    let tls = parsed.tls_server_config.ok_or_else(|| {
        Error::config(
            key("tls_server_config"),
            "missing: nbidle reads only tls_server_config from the web config file",
        )
    })?;
    if let t @ (ClientAuthType::RequestClientCert | ClientAuthType::RequireAnyClientCert) =
        tls.client_auth_type
    {
        return Err(Error::config(
            key("tls_server_config.client_auth_type"),
            format!("{t:?} accepts certificates it does not verify; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"),
        ));
    }
    let base = web_config.parent().unwrap_or(Path::new("."));
    let abs = |p: &Path| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.to_path_buf()
        }
    };
    let cert_file = abs(&tls.cert_file);
    let key_file = abs(&tls.key_file);
    let ca_file = tls.client_ca_file.as_deref().map(abs);
    let mut files = vec![
        web_config.to_path_buf(),
        cert_file.clone(),
        key_file.clone(),
    ];
    files.extend(ca_file.clone());
    // Taken before reading: a file changed while it is read is read again
    // at the next connection.
    let stamp = stamp(&files);

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|it| it.collect::<std::result::Result<_, _>>())
        .map_err(|e| {
            Error::config(
                key("tls_server_config.cert_file"),
                format!("{}: {e}", cert_file.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::config(
            key("tls_server_config.cert_file"),
            format!("{}: no PEM certificate in it", cert_file.display()),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
        Error::config(
            key("tls_server_config.key_file"),
            format!("{}: {e}", key_file.display()),
        )
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        MinVersion::TLS12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::TLS13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| Error::config(key("tls_server_config.min_version"), e.to_string()))?;

    let ca = || -> Result<Arc<RootCertStore>> {
        let file = ca_file.as_ref().ok_or_else(|| {
            Error::config(
                key("tls_server_config.client_ca_file"),
                "required to verify client certificates",
            )
        })?;
        let mut roots = RootCertStore::empty();
        let ca_err = |m: String| {
            Error::config(
                key("tls_server_config.client_ca_file"),
                format!("{}: {m}", file.display()),
            )
        };
        for c in CertificateDer::pem_file_iter(file).map_err(|e| ca_err(e.to_string()))? {
            roots
                .add(c.map_err(|e| ca_err(e.to_string()))?)
                .map_err(|e| ca_err(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(ca_err("no PEM certificate in it".into()));
        }
        Ok(Arc::new(roots))
    };
    let verifier = |roots, optional: bool| {
        let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let b = if optional {
            b.allow_unauthenticated()
        } else {
            b
        };
        b.build()
            .map_err(|e| Error::config(key("tls_server_config.client_ca_file"), e.to_string()))
    };
    let builder = match tls.client_auth_type {
        ClientAuthType::NoClientCert => {
            if ca_file.is_some() {
                return Err(Error::config(
                    key("tls_server_config.client_ca_file"),
                    "set client_auth_type to VerifyClientCertIfGiven or RequireAndVerifyClientCert to use it",
                ));
            }
            builder.with_no_client_auth()
        }
        ClientAuthType::VerifyClientCertIfGiven => {
            builder.with_client_cert_verifier(verifier(ca()?, true)?)
        }
        // The two kinds that verify nothing were refused above.
        _ => builder.with_client_cert_verifier(verifier(ca()?, false)?),
    };
    let mut config = builder.with_single_cert(certs, private_key).map_err(|e| {
        Error::config(
            key("tls_server_config.key_file"),
            format!("does not match cert_file: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        files,
        stamp,
        config: Arc::new(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(web: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, web).unwrap();
        Tls::load(&p).err().expect("refused").to_string()
    }

    #[test]
    fn refusals_name_the_key() {
        assert!(err("basic_auth_users: {a: b}\n").contains("basic_auth_users"));
        assert!(err("{}\n").contains("tls_server_config"));
        assert!(
            err("tls_server_config: {cert_file: /nonexistent.crt, key_file: k}\n")
                .contains("tls_server_config.cert_file")
        );
        assert!(err(
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAnyClientCert}\n"
        )
        .contains("tls_server_config.client_auth_type"));
        assert!(
            err("tls_server_config: {cert_file: a, key_file: b, min_version: TLS10}\n")
                .contains("tls_server_config.min_version")
        );
    }
}
