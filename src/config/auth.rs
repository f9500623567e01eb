//! `auth`: who may call the webhook, the REST API and the metrics routes,
//! as written. [`super::Secrets`] reads the credentials themselves.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use std::time::Duration;

use super::values::{check_notebook_name, HumanDuration};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthConfig {
    /// Bearer token Alertmanager sends (`http_config.authorization.credentials`).
    pub(crate) webhook_token: Option<String>,
    pub(crate) webhook_token_file: Option<PathBuf>,
    /// Basic credentials instead of (or besides) the bearer token.
    pub(crate) webhook_basic_auth: Option<BasicAuth>,
    /// Bearer tokens accepted by the REST API.
    pub(crate) api_tokens: Vec<String>,
    /// A file with one token per line (blank lines and `#` comments ignored).
    pub(crate) api_tokens_file: Option<PathBuf>,
    /// Bearer tokens that see and act on the notebooks of some namespaces
    /// only (a team's own). The tokens above see every namespace.
    pub(crate) namespaced_api_tokens: Vec<NamespacedToken>,
    /// Bearer token Prometheus must send to `/metrics`, `/metrics/notebooks`
    /// and `/sd/notebooks`; unset, those routes are open to anyone who can
    /// reach the listener.
    pub(crate) metrics_token: Option<String>,
    pub(crate) metrics_token_file: Option<PathBuf>,
    /// How long a sign-in on the notebook page lasts (default 8h).
    pub(crate) session_ttl: Option<HumanDuration>,
    /// At most this many page sessions at once (default 10000); the one
    /// closest to expiry goes first.
    pub(crate) max_sessions: Option<usize>,
    /// A header set by an authenticating proxy naming the person; they act
    /// on the notebooks whose owner they are. Off by default.
    pub(crate) trusted_user_header: Option<String>,
}

/// `auth.session_ttl` unset.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// `auth.max_sessions` unset.
const DEFAULT_MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamespacedToken {
    pub(crate) token: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) namespaces: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicAuth {
    pub(crate) username: String,
    pub(crate) password: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
}

impl AuthConfig {
    /// How long a page session lasts.
    pub(crate) fn session_ttl(&self) -> Duration {
        self.session_ttl.map_or(DEFAULT_SESSION_TTL, |d| d.0)
    }

    /// How many page sessions are kept at most.
    pub(crate) fn max_sessions(&self) -> usize {
        self.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS)
    }

    /// The trusted user header, lower-cased, when set.
    pub(crate) fn trusted_user_header(&self) -> Option<String> {
        self.trusted_user_header
            .as_ref()
            .map(|h| h.trim().to_ascii_lowercase())
    }

    fn validate_page(&self) -> Result<()> {
        if let Some(d) = self.session_ttl {
            if d.0 < Duration::from_secs(60) || d.0 > Duration::from_secs(31 * 24 * 3600) {
                return Err(Error::config(
                    "auth.session_ttl",
                    "must be between 1m and 31d",
                ));
            }
        }
        if self.max_sessions == Some(0) {
            return Err(Error::config("auth.max_sessions", "must be at least 1"));
        }
        if let Some(h) = &self.trusted_user_header {
            let h = h.trim();
            let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if h.is_empty() || !h.chars().all(token_char) {
                return Err(Error::config(
                    "auth.trusted_user_header",
                    "must be an HTTP header name such as kubeflow-userid",
                ));
            }
            if h.eq_ignore_ascii_case("authorization") || h.eq_ignore_ascii_case("cookie") {
                return Err(Error::config(
                    "auth.trusted_user_header",
                    "must be a header the proxy sets, not Authorization or Cookie",
                ));
            }
        }
        Ok(())
    }

    /// The secret files, each with its key.
    pub(super) fn files(&self) -> Vec<(String, &Path)> {
        let mut files: Vec<(String, Option<&PathBuf>)> = vec![
            (
                "auth.webhook_token_file".into(),
                self.webhook_token_file.as_ref(),
            ),
            (
                "auth.webhook_basic_auth.password_file".into(),
                self.webhook_basic_auth
                    .as_ref()
                    .and_then(|b| b.password_file.as_ref()),
            ),
            ("auth.api_tokens_file".into(), self.api_tokens_file.as_ref()),
        ];
        for (i, t) in self.namespaced_api_tokens.iter().enumerate() {
            files.push((
                format!("auth.namespaced_api_tokens[{i}].token_file"),
                t.token_file.as_ref(),
            ));
        }
        files.push((
            "auth.metrics_token_file".into(),
            self.metrics_token_file.as_ref(),
        ));
        files
            .into_iter()
            .filter_map(|(key, p)| Some((key, p?.as_path())))
            .collect()
    }

    /// The same files, to resolve against the config file's directory.
    pub(super) fn files_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut files: Vec<&mut PathBuf> = [
            self.webhook_token_file.as_mut(),
            self.webhook_basic_auth
                .as_mut()
                .and_then(|b| b.password_file.as_mut()),
            self.api_tokens_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        .collect();
        files.extend(
            self.namespaced_api_tokens
                .iter_mut()
                .filter_map(|t| t.token_file.as_mut()),
        );
        files.extend(self.metrics_token_file.as_mut());
        files
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.webhook_token.is_some() && self.webhook_token_file.is_some() {
            return Err(Error::config(
                "auth.webhook_token_file",
                "set webhook_token or webhook_token_file, not both",
            ));
        }
        if let Some(t) = &self.webhook_token {
            if t.trim().is_empty() {
                return Err(Error::config("auth.webhook_token", "must not be empty"));
            }
        }
        if let Some(b) = &self.webhook_basic_auth {
            b.validate()?;
        }
        if self.metrics_token.is_some() && self.metrics_token_file.is_some() {
            return Err(Error::config(
                "auth.metrics_token_file",
                "set metrics_token or metrics_token_file, not both",
            ));
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Error::config("auth.metrics_token", "must not be empty"));
        }
        for (i, t) in self.api_tokens.iter().enumerate() {
            if t.trim().is_empty() {
                return Err(Error::config(
                    format!("auth.api_tokens[{i}]"),
                    "must not be empty",
                ));
            }
        }
        for (i, t) in self.namespaced_api_tokens.iter().enumerate() {
            t.validate(&format!("auth.namespaced_api_tokens[{i}]"))?;
        }
        self.validate_page()
    }
}

impl BasicAuth {
    fn validate(&self) -> Result<()> {
        if self.username.is_empty() {
            return Err(Error::config(
                "auth.webhook_basic_auth.username",
                "must not be empty",
            ));
        }
        // Basic credentials travel as `username:password`; the first
        // `:` ends the username, so a username with one never matches.
        if self.username.contains(':') {
            return Err(Error::config(
                "auth.webhook_basic_auth.username",
                "must not contain ':'",
            ));
        }
        if self.password.is_some() == self.password_file.is_some() {
            return Err(Error::config(
                "auth.webhook_basic_auth.password",
                "set exactly one of password, password_file",
            ));
        }
        Ok(())
    }
}

impl NamespacedToken {
    /// `field`: this entry's key, `auth.namespaced_api_tokens[i]`.
    fn validate(&self, field: &str) -> Result<()> {
        let f = |k: &str| format!("{field}.{k}");
        if self.token.is_some() == self.token_file.is_some() {
            return Err(Error::config(
                f("token"),
                "set exactly one of token, token_file",
            ));
        }
        if self.namespaces.is_empty() {
            return Err(Error::config(
                f("namespaces"),
                "list at least one namespace (a token for all goes in auth.api_tokens)",
            ));
        }
        for (j, ns) in self.namespaces.iter().enumerate() {
            check_notebook_name(ns)
                .map_err(|m| Error::config(f(&format!("namespaces[{j}]")), m))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{parse, MINIMAL};
    use crate::error::Error;

    #[test]
    fn missing_webhook_credentials_is_an_error_naming_the_key() {
        let c = parse(&MINIMAL.replace("  webhook_token: \"wh\"\n", "")).unwrap();
        match c.secrets() {
            Err(Error::Config { field, .. }) => assert_eq!(field, "auth.webhook_token"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inline_tokens_are_trimmed_and_empty_basic_password_rejected() {
        let c =
            parse(&MINIMAL.replace("webhook_token: \"wh\"", "webhook_token: \" wh \"")).unwrap();
        assert_eq!(c.secrets().unwrap().webhook_token.as_deref(), Some("wh"));
        let y = MINIMAL.replace(
            "  webhook_token: \"wh\"\n",
            "  webhook_basic_auth: {username: am, password: \" \"}\n",
        );
        match parse(&y).unwrap().secrets() {
            Err(Error::Config { field, .. }) => {
                assert_eq!(field, "auth.webhook_basic_auth.password")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_secret_file_is_resolved_against_the_config_directory() {
        let y = MINIMAL.replace(
            "auth:\n",
            "auth:\n  webhook_token_file: w\n  webhook_basic_auth: {username: am, password_file: p}\n  api_tokens_file: /abs/a\n  metrics_token_file: m\n  namespaced_api_tokens: [{token_file: n, namespaces: [x]}]\n",
        )
        .replace("  webhook_token: \"wh\"\n", "");
        let c = parse(&y).unwrap();
        let files: Vec<(String, String)> = c
            .auth
            .files()
            .into_iter()
            .map(|(k, p)| (k, p.display().to_string()))
            .collect();
        let want = [
            ("auth.webhook_token_file", "/etc/nbidle/w"),
            ("auth.webhook_basic_auth.password_file", "/etc/nbidle/p"),
            ("auth.api_tokens_file", "/abs/a"),
            ("auth.namespaced_api_tokens[0].token_file", "/etc/nbidle/n"),
            ("auth.metrics_token_file", "/etc/nbidle/m"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, p)| (k.to_string(), p.to_string()))
            .collect();
        assert_eq!(files, want);
    }

    #[test]
    fn page_sign_in_keys_have_defaults_and_are_checked() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.auth.session_ttl(),
            std::time::Duration::from_secs(8 * 3600)
        );
        assert_eq!(c.auth.max_sessions(), 10_000);
        assert_eq!(c.auth.trusted_user_header(), None);
        let with = |extra: &str| MINIMAL.replace("auth:\n", &format!("auth:\n{extra}"));
        let c = parse(&with(
            "  session_ttl: 30m\n  max_sessions: 5\n  trusted_user_header: Kubeflow-Userid\n",
        ))
        .unwrap();
        assert_eq!(c.auth.session_ttl(), std::time::Duration::from_secs(1800));
        assert_eq!(c.auth.max_sessions(), 5);
        assert_eq!(
            c.auth.trusted_user_header().as_deref(),
            Some("kubeflow-userid")
        );
        for (extra, key) in [
            ("  session_ttl: 5s\n", "auth.session_ttl"),
            ("  max_sessions: 0\n", "auth.max_sessions"),
            (
                "  trusted_user_header: \"x y\"\n",
                "auth.trusted_user_header",
            ),
            (
                "  trusted_user_header: Authorization\n",
                "auth.trusted_user_header",
            ),
        ] {
            match parse(&with(extra)) {
                Err(Error::Config { field, .. }) => assert_eq!(field, key, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
    }
}
