//! Reading one probe response within limits. A notebook's Jupyter server
//! runs its user's code, so what it answers is hostile input: the body is
//! read chunk by chunk up to a byte limit (refused at once when its
//! `Content-Length` is already over), and JSON arrays are folded element by
//! element up to an item limit, never collected. Whatever goes wrong ends
//! as a [`ProbeFailure`] with a [`Reason`] from a fixed set and a detail
//! made of numbers only, so nothing the server sent reaches a label or a
//! log line.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};

/// Why a probe failed: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No complete answer within `exporter.timeout`.
    Timeout,
    /// The server could not be reached.
    Connect,
    /// A non-success HTTP status.
    HttpStatus,
    /// Any other transport failure: reset, malformed HTTP, bad chunking.
    Request,
    /// A body over `exporter.max_response_bytes`.
    TooLarge,
    /// More kernels or terminals than `exporter.max_kernels` /
    /// `exporter.max_terminals`.
    TooMany,
    /// A body that is not the JSON expected.
    InvalidJson,
}

impl Reason {
    pub(crate) const ALL: [Reason; 7] = [
        Reason::Timeout,
        Reason::Connect,
        Reason::HttpStatus,
        Reason::Request,
        Reason::TooLarge,
        Reason::TooMany,
        Reason::InvalidJson,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Connect => "connect",
            Reason::HttpStatus => "http_status",
            Reason::Request => "request",
            Reason::TooLarge => "too_large",
            Reason::TooMany => "too_many",
            Reason::InvalidJson => "invalid_json",
        }
    }

    /// The position in [`Reason::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Numbers that say more about a failure; never text from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    None,
    /// The HTTP status received.
    Status(u16),
    /// The limit that was exceeded.
    Limit(u64),
    /// Where the JSON went wrong.
    At {
        line: usize,
        column: usize,
    },
}

/// A failed request of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeFailure {
    pub(crate) reason: Reason,
    /// The API path that failed, e.g. `api/kernels`.
    pub(crate) path: &'static str,
    pub(crate) detail: Detail,
}

impl ProbeFailure {
    pub(crate) fn new(reason: Reason, path: &'static str, detail: Detail) -> Self {
        ProbeFailure {
            reason,
            path,
            detail,
        }
    }

    /// A transport error, classified; reqwest's text is not kept.
    pub(crate) fn transport(path: &'static str, e: &reqwest::Error) -> Self {
        let reason = if e.is_timeout() {
            Reason::Timeout
        } else if e.is_connect() {
            Reason::Connect
        } else {
            Reason::Request
        };
        ProbeFailure::new(reason, path, Detail::None)
    }

    pub(crate) fn is_http_status(&self, code: u16) -> bool {
        self.detail == Detail::Status(code)
    }
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason.as_str())?;
        match self.detail {
            Detail::None => Ok(()),
            Detail::Status(s) => write!(f, " (HTTP {s})"),
            Detail::Limit(n) => write!(f, " (limit {n})"),
            Detail::At { line, column } => write!(f, " (line {line}, column {column})"),
        }
    }
}

/// The whole body of `resp` if it has at most `max_bytes`. Chunks are
/// appended as they come; the body is dropped (and its connection closed)
/// as soon as it would pass the limit.
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    max_bytes: u64,
    path: &'static str,
) -> Result<Vec<u8>, ProbeFailure> {
    let too_large = || ProbeFailure::new(Reason::TooLarge, path, Detail::Limit(max_bytes));
    let announced = resp.content_length();
    if announced.is_some_and(|n| n > max_bytes) {
        return Err(too_large());
    }
    // A declared length is at most the limit here; an undeclared one
    // starts small, so an honest short answer costs little.
    let mut body = Vec::with_capacity(announced.unwrap_or(8 * 1024) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ProbeFailure::transport(path, &e))?
    {
        let len = (body.len() + chunk.len()) as u64;
        if len > max_bytes {
            return Err(too_large());
        }
        if body.capacity() < len as usize {
            // Doubling, but never past the limit.
            let want = (body.capacity() * 2).clamp(len as usize, max_bytes as usize);
            body.reserve_exact(want - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why a JSON body was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FoldError {
    TooMany,
    Invalid { line: usize, column: usize },
}

impl FoldError {
    pub(crate) fn into_failure(self, path: &'static str, max_items: usize) -> ProbeFailure {
        match self {
            FoldError::TooMany => {
                ProbeFailure::new(Reason::TooMany, path, Detail::Limit(max_items as u64))
            }
            FoldError::Invalid { line, column } => {
                ProbeFailure::new(Reason::InvalidJson, path, Detail::At { line, column })
            }
        }
    }
}

fn invalid(e: &serde_json::Error) -> FoldError {
    FoldError::Invalid {
        line: e.line(),
        column: e.column(),
    }
}

/// Parses `body` as a JSON array of `T`, handing each element to `each` as
/// it is parsed; stops at the element after `max_items`. Returns how many
/// there were. Memory: one element at a time.
pub(crate) fn fold_array<T, F>(body: &[u8], max_items: usize, each: F) -> Result<usize, FoldError>
where
    T: DeserializeOwned,
    F: FnMut(T),
{
    let mut over = false;
    let mut de = serde_json::Deserializer::from_slice(body);
    let visitor = FoldSeq {
        max_items,
        over: &mut over,
        each,
        item: PhantomData,
    };
    let n = serde::Deserializer::deserialize_seq(&mut de, visitor);
    if over {
        return Err(FoldError::TooMany);
    }
    let n = n.map_err(|e| invalid(&e))?;
    de.end().map_err(|e| invalid(&e))?;
    Ok(n)
}

/// One JSON object (`/api/status`).
pub(crate) fn parse_object<T: DeserializeOwned>(
    body: &[u8],
    path: &'static str,
) -> Result<T, ProbeFailure> {
    serde_json::from_slice(body).map_err(|e| {
        let at = Detail::At {
            line: e.line(),
            column: e.column(),
        };
        ProbeFailure::new(Reason::InvalidJson, path, at)
    })
}

struct FoldSeq<'a, T, F> {
    max_items: usize,
    /// Set when the array had more than `max_items`: the error serde_json
    /// returns then is ours, not the body's.
    over: &'a mut bool,
    each: F,
    item: PhantomData<fn() -> T>,
}

impl<'de, T, F> Visitor<'de> for FoldSeq<'_, T, F>
where
    T: DeserializeOwned,
    F: FnMut(T),
{
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(item) = seq.next_element::<T>()? {
            if n == self.max_items {
                *self.over = true;
                return Err(de::Error::custom("too many items"));
            }
            n += 1;
            (self.each)(item);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(serde::Deserialize)]
    struct Item {
        #[allow(dead_code)]
        a: Option<u32>,
    }

    #[test]
    fn an_array_is_folded_up_to_its_limit() {
        let mut seen = 0;
        assert_eq!(
            fold_array(br#"[{"a":1},{},{"a":3}]"#, 3, |_: Item| seen += 1),
            Ok(3)
        );
        assert_eq!(seen, 3);
        let many = format!("[{}]", vec!["{}"; 100_000].join(","));
        let mut seen = 0;
        assert_eq!(
            fold_array(many.as_bytes(), 1000, |_: Item| seen += 1),
            Err(FoldError::TooMany)
        );
        assert_eq!(seen, 1000, "nothing past the limit is taken");
    }

    #[test]
    fn broken_json_reports_where_not_what() {
        let e = fold_array(b"[{}, {\"a\": \"secret\"}]", 10, |_: Item| {}).unwrap_err();
        assert!(matches!(e, FoldError::Invalid { line: 1, .. }), "{e:?}");
        let failure = e.into_failure("api/kernels", 10);
        assert_eq!(failure.reason, Reason::InvalidJson);
        assert!(!failure.to_string().contains("secret"), "{failure}");
        assert!(matches!(
            fold_array(b"{}", 10, |_: Item| {}),
            Err(FoldError::Invalid { .. })
        ));
        assert!(matches!(
            fold_array(b"[] []", 10, |_: Item| {}),
            Err(FoldError::Invalid { .. })
        ));
    }

    /// A raw HTTP server answering every connection with `head` and then
    /// `body_chunks` copies of a 64 KiB block (forever when `None`);
    /// counts the body bytes it managed to write.
    async fn serve(head: &'static str, body_chunks: Option<u64>) -> (String, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/kernels", listener.local_addr().unwrap());
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req).await;
            s.write_all(head.as_bytes()).await.unwrap();
            let block = vec![b' '; 64 * 1024];
            let mut i = 0;
            while body_chunks.is_none_or(|n| i < n) {
                if s.write_all(&block).await.is_err() {
                    return;
                }
                w.fetch_add(block.len() as u64, Ordering::SeqCst);
                i += 1;
            }
        });
        (url, written)
    }

    async fn get(url: &str) -> reqwest::Response {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let (url, written) = serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 400000000\r\n\r\n",
            Some(6000),
        )
        .await;
        let e = read_body(get(&url).await, 1 << 20, "api/kernels")
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::TooLarge);
        assert_eq!(e.detail, Detail::Limit(1 << 20));
        // The server could only fill the socket buffers before the close.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            written.load(Ordering::SeqCst) < 64 << 20,
            "{}",
            written.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn an_endless_body_stops_at_the_limit() {
        let (url, written) = serve(
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
            None, // read until close: endless
        )
        .await;
        let e = read_body(get(&url).await, 1 << 20, "api/kernels")
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::TooLarge);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = written.load(Ordering::SeqCst);
        assert!(sent < 64 << 20, "the reader went on: {sent} bytes");
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let (url, _) = serve("HTTP/1.1 200 OK\r\ncontent-length: 131072\r\n\r\n", Some(2)).await;
        let body = read_body(get(&url).await, 1 << 20, "api/kernels")
            .await
            .unwrap();
        assert_eq!(body.len(), 131072);
        assert!(body.capacity() <= 1 << 20);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_by_one_byte_is_too_large() {
        let (url, _) = serve("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", Some(2)).await;
        let e = read_body(get(&url).await, 131071, "api/kernels")
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::TooLarge);
    }
}
