//! The stopped-notebook page: while a local notebook is down (stopped, or
//! failed), nbidle listens on the notebook's own address, so whoever reaches
//! its URL learns why it is down and can start it again
//! ([`standin_http`](super::standin_http) answers the requests).
//!
//! The port changes hands at a notebook's transitions, never by polling:
//! - a stop's end, a crash (`failed`), a start that failed and a notebook
//!   found stopped at start-up ask for the port ([`StandIn::hold`]);
//! - every spawn gives it back first ([`StandIn::release`]) and waits until
//!   the listener is closed, so Jupyter binds a free port.
//!
//! A port someone else holds is not fought over: the bind is retried at a
//! bounded pace (1 s doubling to 30 s), and the notebook's status message
//! and the log say so until it succeeds.
//!
//! Each page is bounded: at most [`MAX_CONNECTIONS`] connections (one more
//! is closed at once), a request head within [`HEADER_READ_TIMEOUT`] and
//! [`MAX_HEAD_BYTES`], a connection for at most [`CONNECTION_LIFETIME`]; a
//! body within the limits of [`standin_http`](super::standin_http). A
//! hostile client can keep one stopped notebook's page busy, not exhaust
//! nbidle's memory or file descriptors.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::slot::Slot;
use super::standin_http::{handle, Secret};
use super::LocalBackend;
use crate::backend::PersonGate;
use crate::error::{Error, Result};
use crate::limit::TokenLimiter;

/// Connections one page serves at once.
pub(super) const MAX_CONNECTIONS: usize = 32;
/// Connections all pages serve at once: nbidle's own listener keeps half
/// the open-files limit; 256 more stay well within the rest at the usual
/// limit of 1,024 or more.
pub(super) const MAX_CONNECTIONS_ALL: usize = 256;
/// The request head must arrive within this; also ends idle keep-alives.
pub(super) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// What a request head may occupy (hyper's read buffer; 8 KiB at least).
pub(super) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// No connection to a page lasts longer.
pub(super) const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long a spawn waits for the page to give the port back.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where nbidle's own page (`/`, where people sign in) is served.
#[derive(Debug, Clone)]
pub(crate) struct NbidlePage {
    /// nbidle's bound listen address.
    pub(crate) addr: SocketAddr,
    /// Served over TLS.
    pub(crate) https: bool,
    /// `server.external_url`: what people use for nbidle's page, when it
    /// is not the listen address (a proxy, a public name).
    pub(crate) external_url: Option<String>,
}

/// One notebook's claim on its port, held in its slot: what transitions
/// ask for, and what the page's task reports.
#[derive(Debug)]
pub(super) struct StandIn {
    /// True while the notebook is down: the port should be nbidle's.
    want: watch::Sender<bool>,
    /// True while the page's task holds the port or is binding it.
    busy: watch::Sender<bool>,
    /// Why the page is not served, for the status message.
    note: Mutex<Option<String>>,
}

impl StandIn {
    pub(super) fn new() -> Self {
        StandIn {
            want: watch::channel(false).0,
            busy: watch::channel(false).0,
            note: Mutex::new(None),
        }
    }

    /// The notebook is down: its page may take the port.
    pub(super) fn hold(&self) {
        self.want.send_replace(true);
    }

    /// Gives the port back and waits until the listener is closed (at once
    /// when no page is served). Connections still open finish their
    /// request and close.
    pub(super) async fn release(&self) -> Result<()> {
        self.want.send_replace(false);
        self.set_note(None);
        let mut busy = self.busy.subscribe();
        let released = tokio::time::timeout(RELEASE_TIMEOUT, busy.wait_for(|&b| !b))
            .await
            .is_ok();
        match released {
            true => Ok(()),
            false => Err(Error::Backend(format!(
                "the stopped-notebook page did not give the port back within {RELEASE_TIMEOUT:?}"
            ))),
        }
    }

    /// Why the page is not served, when it should be.
    pub(super) fn note(&self) -> Option<String> {
        self.note
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_note(&self, note: Option<String>) {
        *self.note.lock().unwrap_or_else(PoisonError::into_inner) = note;
    }
}

/// The notebook's address, from its URL.
#[derive(Debug, Clone)]
pub(super) struct Site {
    /// Host as in the URL (a name, an IPv4 address, or `[v6]`).
    pub(super) host: String,
    pub(super) port: u16,
    /// The base URL's path, ending in `/`.
    pub(super) base: String,
}

impl Site {
    /// `None` for a URL without a host (validation refuses those).
    pub(super) fn of(url: &str) -> Option<Self> {
        let u = reqwest::Url::parse(url).ok()?;
        let host = u.host_str()?.to_string();
        let port = u.port_or_known_default()?;
        let mut base = u.path().to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        Some(Site { host, port, base })
    }

    async fn bind(&self) -> std::io::Result<TcpListener> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        TcpListener::bind((host, self.port)).await
    }
}

/// What one page's requests need.
pub(super) struct Page {
    pub(super) backend: Arc<LocalBackend>,
    pub(super) slot: Arc<Slot>,
    pub(super) site: Site,
    pub(super) secret: Secret,
    /// Wrong tokens per client, one count for all stopped pages.
    pub(super) guesses: Arc<TokenLimiter>,
    pub(super) wake: bool,
    pub(super) nbidle: NbidlePage,
    /// Who is signed in to nbidle's page (its session cookie reaches this
    /// port when both share a host name), and whether they may start it.
    pub(super) people: Arc<dyn PersonGate>,
    /// A start from this page is under way; further requests do not queue
    /// more.
    pub(super) starting: AtomicBool,
}

impl LocalBackend {
    /// Serves each notebook's stopped page while the notebook is down, from
    /// now until shutdown begins. Called once nbidle's own listener is
    /// bound (`nbidle` is where the pages link to; `people`, its page's
    /// sessions).
    pub(crate) fn serve_stopped_pages(
        self: &Arc<Self>,
        nbidle: NbidlePage,
        people: Arc<dyn PersonGate>,
    ) {
        if !self.stopped_page {
            return;
        }
        let guesses = Arc::new(TokenLimiter::default());
        for slot in self.slots.values() {
            let Some(site) = Site::of(&slot.spec.url) else {
                continue;
            };
            let page = Arc::new(Page {
                backend: self.clone(),
                slot: slot.clone(),
                site,
                secret: Secret::new(slot.spec.token.as_deref()),
                guesses: guesses.clone(),
                wake: self.wakes.get(slot.index).copied().unwrap_or(false),
                nbidle: nbidle.clone(),
                people: people.clone(),
                starting: AtomicBool::new(false),
            });
            self.tasks.supervise(page.run(self.tasks.closing.clone()));
        }
    }
}

impl Page {
    fn standin(&self) -> &StandIn {
        &self.slot.standin
    }

    /// Holds the port while the notebook is down, until `closing`.
    async fn run(self: Arc<Self>, closing: CancellationToken) {
        let mut want = self.standin().want.subscribe();
        loop {
            tokio::select! {
                () = closing.cancelled() => return,
                r = want.wait_for(|&w| w) => if r.is_err() { return },
            }
            let Some(listener) = self.bind(&mut want, &closing).await else {
                continue;
            };
            self.serve(listener, &mut want, &closing).await;
            self.standin().busy.send_replace(false);
        }
    }

    /// Binds the port, retrying at a bounded pace while someone else holds
    /// it. `None` once the port is no longer wanted (or at shutdown); on
    /// `Some`, `busy` is left true.
    async fn bind(
        &self,
        want: &mut watch::Receiver<bool>,
        closing: &CancellationToken,
    ) -> Option<TcpListener> {
        let (standin, id) = (self.standin(), &self.slot.id);
        let mut wait = RETRY_FIRST;
        let mut reported: Option<String> = None;
        loop {
            // Busy before the last look at `want`: a release either sees
            // busy and waits, or is seen here.
            standin.busy.send_replace(true);
            if !*want.borrow_and_update() || closing.is_cancelled() {
                standin.busy.send_replace(false);
                return None;
            }
            match self.site.bind().await {
                Ok(l) => {
                    if reported.is_some() {
                        tracing::info!(notebook = %id, port = self.site.port, "stopped-notebook page served again");
                    }
                    standin.set_note(None);
                    return Some(l);
                }
                Err(e) => {
                    standin.busy.send_replace(false);
                    let why = format!(
                        "its address {}:{} is not free ({e}): the stopped-notebook page is not \
                         served there; nbidle tries again every {}s at most",
                        self.site.host,
                        self.site.port,
                        RETRY_MAX.as_secs()
                    );
                    if reported.as_deref() != Some(why.as_str()) {
                        tracing::warn!(notebook = %id, error = %e, port = self.site.port,
                            "stopped notebook's port is taken by another process; not fought over");
                        standin.set_note(Some(why.clone()));
                        reported = Some(why);
                    }
                }
            }
            tokio::select! {
                () = closing.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
                r = want.wait_for(|&w| !w) => if r.is_err() { return None },
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// Accepts connections until the port is no longer wanted; then closes
    /// the listener and tells open connections to finish.
    async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        want: &mut watch::Receiver<bool>,
        closing: &CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let finish = CancellationToken::new();
        loop {
            let accepted = tokio::select! {
                () = closing.cancelled() => break,
                _ = want.wait_for(|&w| !w) => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((tcp, peer)) => match (
                    slots.clone().try_acquire_owned(),
                    self.backend.page_connections.clone().try_acquire_owned(),
                ) {
                    (Ok(permit), Ok(shared)) => {
                        let (page, finish) = (self.clone(), finish.clone());
                        self.backend.tasks.supervise(async move {
                            page.connection(tcp, peer.ip(), finish).await;
                            drop((permit, shared));
                        });
                    }
                    // At a cap: closed at once, costing nothing.
                    _ => drop(tcp),
                },
                // Out of file descriptors, or transient: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        drop(listener);
        finish.cancel();
    }

    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        client: IpAddr,
        finish: CancellationToken,
    ) {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES);
        let page = self.clone();
        let service = hyper::service::service_fn(move |req| handle(page.clone(), client, req));
        let conn = http.serve_connection(TokioIo::new(tcp), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
            () = finish.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, conn).await;
            }
        }
    }
}
