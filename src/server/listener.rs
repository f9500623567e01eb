//! Accepting and serving connections, with the limits that keep slow,
//! silent or many clients from exhausting nbidle (warp's own server exposes
//! none of them, so connections are served with hyper directly).
//!
//! - `header_read_timeout`: the request head must arrive within it. hyper
//!   starts this clock whenever it waits for a request, so it also ends
//!   silent connections and idle keep-alive ones.
//! - `max_header_bytes`: what hyper buffers of an unfinished head.
//! - `write_timeout`: a response the client does not read is abandoned.
//! - `max_connections`: at the cap, a new connection replaces the oldest one
//!   that is not handling a request (a silent or slow client, an idle
//!   keep-alive); if every connection is handling one, the new one is
//!   closed. So held connections cannot keep `/livez`, Alertmanager or the
//!   API out, and file descriptors stay bounded.
//! - Shutdown: stop accepting, finish requests in flight, close idle
//!   connections, and after `shutdown_timeout` drop whatever is left. Every
//!   connection's task is tracked, so [`serve`] returns only once all have
//!   ended.
//!
//! Body limits (size, read time, bytes in flight) are per route, in
//! [`super::body`].

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls::Tls;
use crate::config::{ServerConfig, MIN_HEADER_BYTES};
use crate::metrics::{ErrorKind, Metrics};

/// The listener's limits, from `server:` in the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub write_timeout: Duration,
    pub shutdown_timeout: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(c: &ServerConfig) -> Self {
        Limits {
            max_connections: c.max_connections,
            header_read_timeout: c.header_read_timeout.0,
            max_header_bytes: c.max_header_bytes,
            write_timeout: c.write_timeout.0,
            shutdown_timeout: c.shutdown_timeout.0,
        }
    }
}

impl Limits {
    /// Raises the soft open-files limit to the hard one (as Go programs do)
    /// and keeps the connection cap at half of it, so connections cannot
    /// take the descriptors the backend and the probes need.
    #[allow(unsafe_code)] // getrlimit/setrlimit
    pub(crate) fn within_fd_limit(mut self) -> Self {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        let soft = unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return self;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
            lim.rlim_cur
        };
        let room = usize::try_from(soft / 2).unwrap_or(usize::MAX);
        if self.max_connections > room {
            tracing::warn!(
                max_connections = self.max_connections,
                open_files_limit = soft,
                "server.max_connections lowered to half the open-files limit"
            );
            self.max_connections = room.max(1);
        }
        self
    }
}

/// One open connection, as the registry sees it.
struct Conn {
    /// Requests being handled; 0 = waiting for a request (evictable).
    in_flight: AtomicUsize,
    /// Told when the connection must close now.
    evict: Notify,
}

/// Open connections by age (ids grow), for the cap and for shutdown.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

impl Registry {
    /// Registers a new connection, evicting the oldest idle one at the cap.
    /// `None`: every connection is handling a request; refuse this one.
    fn admit(&self, max: usize, metrics: &Metrics) -> Option<(u64, Arc<Conn>)> {
        let mut open = self.open.lock().expect("registry lock is never poisoned");
        if open.len() >= max && !evict_oldest_idle(&mut open, metrics) {
            metrics.connections_refused.inc();
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            evict: Notify::new(),
        });
        open.insert(id, conn.clone());
        metrics.connections_open.set(open.len() as i64);
        Some((id, conn))
    }

    /// Frees a file descriptor when accept fails for the lack of one.
    fn evict_one(&self, metrics: &Metrics) -> bool {
        let mut open = self.open.lock().expect("registry lock is never poisoned");
        evict_oldest_idle(&mut open, metrics)
    }

    fn remove(&self, id: u64, metrics: &Metrics) {
        let mut open = self.open.lock().expect("registry lock is never poisoned");
        open.remove(&id);
        metrics.connections_open.set(open.len() as i64);
    }

    fn len(&self) -> usize {
        self.open
            .lock()
            .expect("registry lock is never poisoned")
            .len()
    }

    fn evict_all(&self) {
        for c in self
            .open
            .lock()
            .expect("registry lock is never poisoned")
            .values()
        {
            c.evict.notify_one();
        }
    }
}

fn evict_oldest_idle(open: &mut BTreeMap<u64, Arc<Conn>>, metrics: &Metrics) -> bool {
    let Some(id) = open
        .iter()
        .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
        .map(|(id, _)| *id)
    else {
        return false;
    };
    if let Some(c) = open.remove(&id) {
        // notify_one keeps the permit if the task is not waiting yet.
        c.evict.notify_one();
        metrics.connections_evicted.inc();
    }
    true
}

/// What serving needs of the routes: warp's filter turned into a service.
pub(crate) trait RouteService:
    tower_service::Service<
        hyper::Request<Incoming>,
        Response = warp::reply::Response,
        Error = std::convert::Infallible,
    > + Clone
    + Send
    + 'static
{
}

impl<T> RouteService for T where
    T: tower_service::Service<
            hyper::Request<Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `listener` until `drain` resolves, then drains (see the module
/// doc). `service` is the warp filter turned into a service.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    metrics: Arc<Metrics>,
    drain: impl Future<Output = ()>,
) where
    S: RouteService,
    S::Future: Send + 'static,
{
    let registry = Arc::new(Registry::default());
    let connections = TaskTracker::new();
    // Tells every connection the listener is draining.
    let draining = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        // The read buffer bounds what an unfinished head can occupy.
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
    let http = Arc::new(http);
    tokio::pin!(drain);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut drain => break,
        };
        let (tcp, peer) = match accepted {
            Ok((tcp, peer)) => (tcp, peer),
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or a transient
                // error: free one if we can, and do not spin.
                metrics.error(ErrorKind::Accept);
                if !registry.evict_one(&metrics) {
                    tracing::warn!(error = %e, "accepting a connection");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some((id, conn)) = registry.admit(limits.max_connections, &metrics) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let task = ConnTask {
            conn,
            service: service.clone(),
            peer: Some(peer),
            http: http.clone(),
            draining: draining.clone(),
        };
        let (registry, metrics, tls) = (registry.clone(), metrics.clone(), tls.clone());
        connections.spawn(async move {
            let io = WriteTimeout::new(tcp, limits.write_timeout);
            match tls {
                None => task.run(io).await,
                Some(tls) => task.handshake_then_run(&tls, io, limits, &metrics).await,
            }
            registry.remove(id, &metrics);
        });
    }
    drop(listener);
    // Drain: idle connections close now, busy ones after their response.
    draining.cancel();
    connections.close();
    let deadline = tokio::time::Instant::now() + limits.shutdown_timeout;
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = registry.len(),
            "connections still open after server.shutdown_timeout; closing them"
        );
        // Each ends at once when evicted.
        registry.evict_all();
        connections.wait().await;
    }
}

struct ConnTask<S> {
    conn: Arc<Conn>,
    service: S,
    peer: Option<std::net::SocketAddr>,
    http: Arc<hyper::server::conn::http1::Builder>,
    draining: CancellationToken,
}

impl<S> ConnTask<S>
where
    S: RouteService,
    S::Future: Send + 'static,
{
    /// The TLS handshake, then the connection. The handshake is part of
    /// the head (same deadline), and an evicted connection ends in it too.
    async fn handshake_then_run<I>(self, tls: &Tls, io: I, limits: Limits, metrics: &Metrics)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io));
        let accepted = tokio::select! {
            accepted = handshake => accepted,
            _ = self.conn.evict.notified() => return,
        };
        match accepted {
            Ok(Ok(stream)) => self.run(stream).await,
            Ok(Err(e)) => {
                metrics.error(ErrorKind::TlsHandshake);
                tracing::debug!(error = %e, "TLS handshake failed");
            }
            Err(_) => metrics.error(ErrorKind::TlsHandshake),
        }
    }

    async fn run<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = Counted {
            conn: self.conn.clone(),
            inner: self.service,
            peer: self.peer,
        };
        let served = self.http.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(served);
        tokio::select! {
            _ = served.as_mut() => return,
            _ = self.conn.evict.notified() => return,
            _ = self.draining.cancelled() => served.as_mut().graceful_shutdown(),
        }
        // Draining: the request in flight finishes, unless evicted at the
        // shutdown deadline.
        tokio::select! {
            _ = served => {}
            _ = self.conn.evict.notified() => {}
        }
    }
}

/// The client's address, in each request's extensions (the page slows
/// wrong sign-in tokens per client).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// The warp service, counting the requests in flight on its connection.
struct Counted<S> {
    conn: Arc<Conn>,
    inner: S,
    peer: Option<std::net::SocketAddr>,
}

/// Decrements the in-flight count when the request's future is done or
/// dropped.
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Counted<S>
where
    S: RouteService,
    S::Future: Send + 'static,
{
    type Response = warp::reply::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(Peer(peer));
        }
        self.conn.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.conn.clone());
        // warp's service is always ready (its poll_ready returns Ready).
        let fut = self.inner.clone().call(req);
        Box::pin(async move {
            let res = fut.await;
            drop(guard);
            res
        })
    }
}

/// An I/O stream whose writes fail once they have made no progress for
/// `timeout`: a client that stops reading cannot hold a response (and its
/// memory) for ever.
struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteTimeout<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Arms the timer on `Pending`, disarms it on progress.
    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client did not read the response in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_timeout() {
        // A 64-byte pipe whose reader never reads: the writer stalls at once.
        let (a, _b) = tokio::io::duplex(64);
        let mut w = WriteTimeout::new(a, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = w.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn writes_that_progress_never_time_out() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = WriteTimeout::new(a, Duration::from_millis(100));
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            // Reads slowly, but each read is well within the timeout.
            let mut buf = [0u8; 64];
            while sink.len() < 1024 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let n = tokio::io::AsyncReadExt::read(&mut b, &mut buf)
                    .await
                    .unwrap();
                sink.extend_from_slice(&buf[..n]);
            }
            sink.len()
        });
        w.write_all(&[1u8; 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 1024);
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room_and_busy_ones_do_not() {
        let m = Metrics::new();
        let r = Registry::default();
        let (_, first) = r.admit(2, &m).unwrap();
        let (_, second) = r.admit(2, &m).unwrap();
        first.in_flight.store(1, Ordering::Release);
        // The first is busy: the second, idle, is evicted for the third.
        let (_, _third) = r.admit(2, &m).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(m.connections_evicted.get(), 1);
        drop(second);
        // Both left are now busy: a fourth is refused.
        for c in r.open.lock().unwrap().values() {
            c.in_flight.store(1, Ordering::Release);
        }
        assert!(r.admit(2, &m).is_none());
        assert_eq!(m.connections_refused.get(), 1);
    }
}
