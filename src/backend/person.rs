//! A person signed in to nbidle's page, as a stopped notebook's page
//! (`local::standin`) learns of them: browsers send a host's cookies to
//! every port of it, so when nbidle's page and a notebook share a host
//! name, the notebook's address receives nbidle's session cookie.
//!
//! The page's sessions and scope rules stay the page's: it implements
//! [`PersonGate`] and `run` hands it to the backend, so data still flows
//! one way and the backend layer does not depend on the page.

use hyper::HeaderMap;

use crate::notebook::NotebookState;

/// Who may start a notebook, as the page's session says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Person {
    /// Who, for the page's button and the log.
    pub(crate) who: String,
    /// The session's CSRF token: a form that starts the notebook must
    /// carry it.
    pub(crate) csrf: String,
}

/// Whether a request's sign-in to nbidle's page may start a notebook.
pub(crate) trait PersonGate: Send + Sync {
    /// The person whose live session the request's cookie names, when
    /// that session may start `notebook` (a token's namespaces, a trusted
    /// proxy's user's own notebooks); `None` otherwise.
    fn may_start(&self, headers: &HeaderMap, notebook: &NotebookState) -> Option<Person>;
}
