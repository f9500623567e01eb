//! The notebook page at `/`: the notebooks a person may see, with Open,
//! Stop and Start, behind a sign-in with an API token (or a trusted
//! proxy's user header). Server-rendered HTML that works without
//! JavaScript; a little script refreshes states and counts down.
//!
//! Keep running (an Alertmanager silence, `crate::silences`) and the
//! warning banner (`crate::warnings`) show when `alertmanager.url` is set.
//!
//! - [`filters`]: the page's routes, mounted beside the API's
//! - [`handlers`]: one function per route
//! - [`request`]: what a page request carries (cookie, proxy headers,
//!   client) and the replies (security headers, cookies, redirects)
//! - [`session`]: the server-side session store, CSRF tokens
//! - [`gate`]: the sessions as a stopped local notebook's page sees them
//! - [`view`]: the list's rows, filters and pages
//! - [`render`]: the HTML
//! - [`assets`]: the stylesheet and script in the binary

pub(crate) mod assets;
pub(crate) mod filters;
pub(crate) mod gate;
pub(crate) mod handlers;
#[cfg(test)]
mod harden_tests;
#[cfg(test)]
mod keep_tests;
#[cfg(test)]
mod list_tests;
pub(crate) mod render;
pub(crate) mod request;
pub(crate) mod session;
#[cfg(test)]
mod tests;
pub(crate) mod view;

use std::sync::Arc;
use std::time::Duration;

use crate::limit::TokenLimiter;
pub(crate) use filters::routes;
use session::Sessions;

/// The page's state, shared by its requests: sessions, the sign-in
/// limiter and its settings.
pub(crate) struct Page {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) limiter: TokenLimiter,
    /// Lower-cased; `None`: off.
    pub(crate) trusted_user_header: Option<String>,
    /// Served over TLS: cookies are always `Secure`.
    pub(crate) tls: bool,
}

impl Page {
    pub(crate) fn new(
        session_ttl: Duration,
        max_sessions: usize,
        trusted_user_header: Option<String>,
        tls: bool,
    ) -> Self {
        Page {
            sessions: Arc::new(Sessions::new(session_ttl, max_sessions)),
            limiter: TokenLimiter::default(),
            trusted_user_header,
            tls,
        }
    }

    /// Who is signed in, for the local backend's stopped pages.
    pub(crate) fn gate(&self) -> Arc<dyn crate::backend::PersonGate> {
        Arc::new(gate::SignedIn {
            sessions: self.sessions.clone(),
            trusted_user_header: self.trusted_user_header.clone(),
        })
    }

    /// The page `nbidle serve` runs, from the `auth` section.
    pub(crate) fn from_config(auth: &crate::config::AuthConfig, tls: bool) -> Self {
        Page::new(
            auth.session_ttl(),
            auth.max_sessions(),
            auth.trusted_user_header(),
            tls,
        )
    }
}
