//! The credentials of `auth`: read once at start-up, inline or from their
//! files, and held apart so that no token opens more than one door.
//!
//! - the webhook's credentials (Alertmanager's): deliver alerts only;
//! - admin API tokens: every namespace;
//! - namespace-scoped API tokens: their namespaces only;
//! - the metrics token (Prometheus's): read metrics and service discovery.
//!
//! A token found in two of these roles is refused, naming the key, because
//! whoever holds one credential would silently hold the other.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::Config;
use crate::error::{Error, Result};

/// Secrets resolved from inline values or files.
#[derive(Debug, Clone, Default)]
pub(crate) struct Secrets {
    pub(crate) webhook_token: Option<String>,
    pub(crate) webhook_basic: Option<(String, String)>,
    pub(crate) api_tokens: Vec<String>,
    /// Tokens with the namespaces they may use.
    pub(crate) namespaced_api_tokens: Vec<(String, Vec<String>)>,
    /// Bearer token for `/metrics`, `/metrics/notebooks` and `/sd/notebooks`.
    pub(crate) metrics_token: Option<String>,
    /// nbidle's own token at the JupyterHub it stops servers of
    /// (`backend.jupyterhub.token`).
    pub(crate) hub_token: Option<String>,
}

/// The Hub's name for the token it hands a service it runs.
pub(crate) const HUB_TOKEN_ENV: &str = "JUPYTERHUB_API_TOKEN";

/// A secret file larger than this is not a token file (a path mistyped as
/// `/dev/zero` must not take nbidle's memory).
const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// What a credential opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Webhook,
    Admin,
    Namespaced,
    Metrics,
    Hub,
}

impl Role {
    fn describe(self) -> &'static str {
        match self {
            Role::Webhook => "a webhook credential",
            Role::Admin => "an API token for every namespace",
            Role::Namespaced => "a namespace-scoped API token",
            Role::Metrics => "the metrics token",
            Role::Hub => "nbidle's token at the JupyterHub",
        }
    }
}

/// Why a token must not hold roles `first` and `then`; `None`: it may.
fn conflict(first: Role, then: Role) -> Option<&'static str> {
    use Role::*;
    match (first, then) {
        (Admin, Admin) | (Webhook, Webhook) => None,
        (Namespaced, Namespaced) => Some("list all of its namespaces in one entry"),
        (Admin, Namespaced) | (Namespaced, Admin) => {
            Some("it would get every namespace; give the team a token of its own")
        }
        (Hub, Hub) => None,
        (Hub, _) | (_, Hub) => Some(
            "nbidle's token at the Hub stops servers there; whoever holds one of nbidle's own credentials must not hold it",
        ),
        (Metrics, _) | (_, Metrics) => {
            Some("the metrics token is Prometheus's and must open nothing else")
        }
        _ => Some("the webhook and the REST API take separate credentials, so that Alertmanager's cannot stop or start notebooks through the API, nor an API client post alerts"),
    }
}

/// One credential and where it came from, for error messages.
struct Sourced {
    key: String,
    /// For tokens from `api_tokens_file`: the line.
    line: Option<usize>,
    role: Role,
    token: String,
}

impl Sourced {
    fn new(key: impl Into<String>, role: Role, token: &str) -> Self {
        Sourced {
            key: key.into(),
            line: None,
            role,
            token: token.to_string(),
        }
    }

    fn place(&self) -> String {
        match self.line {
            Some(n) => format!("{} (line {n})", self.key),
            None => self.key.clone(),
        }
    }
}

/// Refuses a token that appears in two roles, naming the later key.
fn check_separation(all: &[Sourced]) -> Result<()> {
    let mut seen: HashMap<&str, &Sourced> = HashMap::new();
    for s in all {
        match seen.get(s.token.as_str()) {
            Some(first) => {
                if let Some(why) = conflict(first.role, s.role) {
                    let at = s.line.map(|n| format!("line {n}: ")).unwrap_or_default();
                    return Err(Error::config(
                        s.key.clone(),
                        format!(
                            "{at}is the same token as {} ({}): {why}",
                            first.place(),
                            first.role.describe()
                        ),
                    ));
                }
            }
            None => {
                seen.insert(&s.token, s);
            }
        }
    }
    Ok(())
}

/// Reads a secret file, trimmed; errors name `field`.
fn read_secret(field: &str, p: &Path) -> Result<String> {
    let reading = |e: std::io::Error| Error::config(field, format!("reading {}: {e}", p.display()));
    let mut text = String::new();
    std::fs::File::open(p)
        .map_err(reading)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(reading)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(Error::config(
            field,
            format!(
                "{} is larger than {MAX_SECRET_FILE_BYTES} bytes; not a token file",
                p.display()
            ),
        ));
    }
    Ok(text.trim().to_string())
}

/// Whether the secret files are read, or only named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretFiles {
    /// Read them: `serve` and `check`, on the host nbidle runs on.
    Read,
    /// Leave them unread, each standing for a token of its own: `rules`
    /// and `manifests` often run where the files are not (a laptop, CI,
    /// for a cluster whose pod mounts them). One file named in two roles
    /// is still one token in two roles.
    Named,
}

impl SecretFiles {
    /// The secret in file `p` (errors name `field`), or what stands for it.
    fn read(self, field: &str, p: &Path) -> Result<String> {
        match self {
            SecretFiles::Read => read_secret(field, p),
            // No token read from a file has a NUL in it: the stand-in
            // equals only itself.
            SecretFiles::Named => Ok(format!("\0file {}", p.display())),
        }
    }
}

/// An inline secret (trimmed, like the header it is compared with) or the
/// content of its file.
fn inline_or_file(
    key: &str,
    inline: &Option<String>,
    file: &Option<std::path::PathBuf>,
    files: SecretFiles,
) -> Result<Option<(String, String)>> {
    Ok(match (inline, file) {
        (Some(t), _) => Some((key.to_string(), t.trim().to_string())),
        (None, Some(p)) => {
            let key = format!("{key}_file");
            let t = files.read(&key, p)?;
            Some((key, t))
        }
        (None, None) => None,
    })
}

impl Config {
    /// Reads the secrets, inline or from their files, and checks that no
    /// token serves two roles. Done once at start-up (and by `check`).
    pub(crate) fn secrets(&self) -> Result<Secrets> {
        self.secrets_with(SecretFiles::Read)
    }

    /// The secrets, their files read or only named (see [`SecretFiles`]):
    /// every check but what a file holds.
    pub(crate) fn secrets_with(&self, files: SecretFiles) -> Result<Secrets> {
        let a = &self.auth;
        let mut sourced = Vec::new();
        let webhook_token = inline_or_file(
            "auth.webhook_token",
            &a.webhook_token,
            &a.webhook_token_file,
            files,
        )?;
        if let Some((key, t)) = &webhook_token {
            if t.is_empty() {
                return Err(Error::config(key.clone(), "the file is empty"));
            }
            sourced.push(Sourced::new(key.clone(), Role::Webhook, t));
        }
        let webhook_basic = match &a.webhook_basic_auth {
            Some(b) => {
                let (key, pw) = inline_or_file(
                    "auth.webhook_basic_auth.password",
                    &b.password,
                    &b.password_file,
                    files,
                )?
                .expect("validate() requires password or password_file");
                if pw.is_empty() {
                    return Err(Error::config(
                        "auth.webhook_basic_auth.password",
                        "must not be empty",
                    ));
                }
                sourced.push(Sourced::new(key, Role::Webhook, &pw));
                Some((b.username.clone(), pw))
            }
            None => None,
        };
        if webhook_token.is_none() && webhook_basic.is_none() {
            return Err(Error::config(
                "auth.webhook_token",
                "the webhook needs credentials: set webhook_token, webhook_token_file or webhook_basic_auth",
            ));
        }
        let mut api_tokens = Vec::new();
        for (i, t) in a.api_tokens.iter().enumerate() {
            let t = t.trim().to_string();
            sourced.push(Sourced::new(
                format!("auth.api_tokens[{i}]"),
                Role::Admin,
                &t,
            ));
            api_tokens.push(t);
        }
        if let Some(p) = &a.api_tokens_file {
            let text = files.read("auth.api_tokens_file", p)?;
            for (n, line) in text.lines().enumerate() {
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                sourced.push(Sourced {
                    line: Some(n + 1),
                    ..Sourced::new("auth.api_tokens_file", Role::Admin, t)
                });
                api_tokens.push(t.to_string());
            }
        }
        let mut namespaced_api_tokens = Vec::new();
        for (i, t) in a.namespaced_api_tokens.iter().enumerate() {
            let field = format!("auth.namespaced_api_tokens[{i}].token");
            let (key, token) = inline_or_file(&field, &t.token, &t.token_file, files)?
                .expect("validate() requires token or token_file");
            if token.is_empty() {
                return Err(Error::config(field, "must not be empty"));
            }
            sourced.push(Sourced::new(key, Role::Namespaced, &token));
            namespaced_api_tokens.push((token, t.namespaces.clone()));
        }
        if api_tokens.is_empty() && namespaced_api_tokens.is_empty() {
            return Err(Error::config(
                "auth.api_tokens",
                "the REST API needs at least one token",
            ));
        }
        let metrics_token = inline_or_file(
            "auth.metrics_token",
            &a.metrics_token,
            &a.metrics_token_file,
            files,
        )?;
        if let Some((key, t)) = &metrics_token {
            if t.is_empty() {
                return Err(Error::config(key.clone(), "must not be empty"));
            }
            sourced.push(Sourced::new(key.clone(), Role::Metrics, t));
        }
        let hub_token = match &self.backend {
            super::BackendConfig::Jupyterhub(h) => {
                let key = "backend.jupyterhub.token";
                let (key, t) = match inline_or_file(key, &h.token, &h.token_file, files)? {
                    Some(found) => found,
                    None => match std::env::var(HUB_TOKEN_ENV) {
                        Ok(t) => (format!("{key} (from {HUB_TOKEN_ENV})"), t.trim().to_string()),
                        // Generating rules and manifests needs no token, and
                        // the variable is set where nbidle runs, not there.
                        Err(_) if files == SecretFiles::Named => {
                            (key.to_string(), format!("\0env {HUB_TOKEN_ENV}"))
                        }
                        Err(_) => {
                            return Err(Error::config(
                                key,
                                format!("the Hub needs nbidle's service token: set token, token_file or {HUB_TOKEN_ENV}"),
                            ))
                        }
                    },
                };
                if t.is_empty() {
                    return Err(Error::config(key, "must not be empty"));
                }
                sourced.push(Sourced::new(key, Role::Hub, &t));
                Some(t)
            }
            _ => None,
        };
        check_separation(&sourced)?;
        Ok(Secrets {
            webhook_token: webhook_token.map(|(_, t)| t),
            webhook_basic,
            api_tokens,
            namespaced_api_tokens,
            metrics_token: metrics_token.map(|(_, t)| t),
            hub_token,
        })
    }

    /// One line per secret file that users other than its owner may read
    /// or write (`mode & 0o077`): on a shared machine they could take the
    /// token, or replace it. Unreadable files are left to `Config::secrets`.
    pub fn secret_file_warnings(&self) -> Vec<String> {
        self.auth
            .files()
            .into_iter()
            .filter_map(|(key, path)| {
                let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
                (mode & 0o077 != 0).then(|| {
                    format!(
                        "{key}: {} is readable or writable by group or others (mode {mode:04o}); make it the owner's only (chmod 600)",
                        path.display()
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(auth: &str) -> Config {
        Config::from_yaml(
            &format!("backend: {{kind: local, local: {{}}}}\nauth: {auth}\n"),
            Path::new("/etc/nbidle"),
        )
        .unwrap()
    }

    fn refused(auth: &str) -> (String, String) {
        match config(auth).secrets() {
            Err(Error::Config { field, message }) => (field, message),
            other => panic!("{auth}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn each_token_serves_one_role() {
        for (auth, key, other) in [
            (
                "{webhook_token: t, api_tokens: [a, t]}",
                "auth.api_tokens[1]",
                "auth.webhook_token",
            ),
            (
                "{webhook_basic_auth: {username: am, password: t}, api_tokens: [t]}",
                "auth.api_tokens[0]",
                "auth.webhook_basic_auth.password",
            ),
            (
                "{webhook_token: w, api_tokens: [a], namespaced_api_tokens: [{token: w, namespaces: [x]}]}",
                "auth.namespaced_api_tokens[0].token",
                "auth.webhook_token",
            ),
            (
                "{webhook_token: w, api_tokens: [a], namespaced_api_tokens: [{token: a, namespaces: [x]}]}",
                "auth.namespaced_api_tokens[0].token",
                "auth.api_tokens[0]",
            ),
            (
                "{webhook_token: w, api_tokens: [a], namespaced_api_tokens: [{token: n, namespaces: [x]}, {token: n, namespaces: [y]}]}",
                "auth.namespaced_api_tokens[1].token",
                "auth.namespaced_api_tokens[0].token",
            ),
            (
                "{webhook_token: w, api_tokens: [a], metrics_token: w}",
                "auth.metrics_token",
                "auth.webhook_token",
            ),
            (
                "{webhook_token: w, api_tokens: [a], metrics_token: \" a \"}",
                "auth.metrics_token",
                "auth.api_tokens[0]",
            ),
        ] {
            let (field, message) = refused(auth);
            assert_eq!(field, key, "{auth}");
            assert!(message.contains(other), "{auth}: {message}");
        }
        // The same admin token twice does no harm.
        assert!(
            config("{webhook_token: w, api_tokens: [a, a], metrics_token: m}")
                .secrets()
                .is_ok()
        );
    }

    #[test]
    fn tokens_from_files_are_checked_too_and_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w"), "shared\n").unwrap();
        std::fs::write(dir.path().join("a"), "# admins\n\nfirst\nshared\n").unwrap();
        let cfg = Config::from_yaml(
            "backend: {kind: local, local: {}}\nauth: {webhook_token_file: w, api_tokens_file: a}\n",
            dir.path(),
        )
        .unwrap();
        match cfg.secrets() {
            Err(Error::Config { field, message }) => {
                assert_eq!(field, "auth.api_tokens_file");
                assert!(message.starts_with("line 4: "), "{message}");
                assert!(message.contains("auth.webhook_token_file"), "{message}");
                assert!(!message.contains("shared"), "the token itself is not shown");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_huge_secret_file_is_refused_without_reading_it_whole() {
        let cfg = config("{webhook_token_file: /dev/zero, api_tokens: [a]}");
        match cfg.secrets() {
            Err(Error::Config { field, message }) => {
                assert_eq!(field, "auth.webhook_token_file");
                assert!(message.contains("larger than"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn open_secret_files_are_named_in_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{name}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        file("w", 0o600);
        file("a", 0o640);
        file("n", 0o602);
        file("m", 0o400);
        let cfg = Config::from_yaml(
            "backend: {kind: local, local: {}}\nauth: {webhook_token_file: w, api_tokens_file: a, metrics_token_file: m, namespaced_api_tokens: [{token_file: n, namespaces: [x]}]}\n",
            dir.path(),
        )
        .unwrap();
        let w = cfg.secret_file_warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("auth.api_tokens_file: ") && w[0].contains("0640"),
            "{w:?}"
        );
        assert!(w[0].contains(&dir.path().join("a").display().to_string()));
        assert!(
            w[1].starts_with("auth.namespaced_api_tokens[0].token_file: "),
            "{w:?}"
        );
        assert!(cfg.secrets().is_ok());
    }
}
