//! The crate's one error type.

use crate::notebook::NotebookId;

/// Everything that can go wrong inside nbidle. Each variant says which
/// kind of caller mistake or environment failure it is, so the HTTP layer
/// can map it to a status code without string matching.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; `field` is the dotted path of the key.
    #[error("config: {field}: {message}")]
    Config {
        /// The key's dotted path (`backend.local.notebooks[1].name`).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// A request or payload is malformed; `field` names the offending part.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending part (`alerts[3].startsAt`, `body`).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// The backend does not manage this notebook.
    #[error("notebook {0} not found")]
    NotFound(NotebookId),

    /// A backend operation failed for a reason that may go away on retry
    /// and that no lower error explains (a corrupt record, a process that
    /// will not exit, conflicts past the retries).
    #[error("backend: {0}")]
    Backend(String),

    /// A Kubernetes API call failed; `context` names the call's object (a
    /// notebook, an object being applied) or the client being built.
    #[error("backend: {context}: {source}")]
    Kube {
        /// The call's object or client.
        context: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },

    /// Neither a pod's service account nor a kubeconfig was found.
    #[error("backend: kubernetes client: {0}")]
    KubeConfig(#[source] kube::config::InferConfigError),

    /// A backend's file or process operation failed (a state file not
    /// written, a notebook command that could not be spawned).
    #[error("backend: {context}: {source}")]
    BackendIo {
        /// What was being done, to which path or command.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A backend's blocking task panicked or was cancelled.
    #[error("backend: {context}: {source}")]
    Task {
        /// What the task was doing.
        context: String,
        /// Why it did not finish.
        #[source]
        source: tokio::task::JoinError,
    },

    /// The HTTP client for probing notebooks could not be built.
    #[error("backend: http client: {0}")]
    HttpClient(#[source] reqwest::Error),

    /// The backend cannot answer now: its API server does not answer in
    /// time, or its cache is not current, so "not found" might be wrong.
    /// Retried by the caller (HTTP 503 with `Retry-After`).
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// A file or socket operation of nbidle's own failed (reading the
    /// config, binding the listener, creating the data dir).
    #[error("io: {context}: {source}")]
    Io {
        /// What was being done, to which path or address.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A YAML document could not be read or written.
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),

    /// A JSON document could not be read or written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// The crate's result: [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn backend_io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::BackendIo {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn task(context: impl Into<String>, source: tokio::task::JoinError) -> Self {
        Error::Task {
            context: context.into(),
            source,
        }
    }
}
