//! Request bodies with bounds: size (`webhook.max_body_bytes`), read time
//! (`server.body_read_timeout`) and bytes in flight over all requests
//! (`webhook.max_bytes_in_flight`).
//!
//! The in-flight budget is taken from the declared `Content-Length` before
//! a byte is read, and held until the handler is done with the body, so
//! concurrent large bodies cost at most the budget, however many clients
//! send them. Beyond it a request gets 503 with `Retry-After`: Alertmanager
//! delivers it again, and nothing was read or decided.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::models::ApiError;

/// Body limits shared by every request.
pub(crate) struct BodyLimits {
    pub max_bytes: u64,
    pub read_timeout: Duration,
    /// One permit per byte.
    budget: Arc<Semaphore>,
}

impl BodyLimits {
    pub(crate) fn new(max_bytes: u64, max_bytes_in_flight: u64, read_timeout: Duration) -> Self {
        // Semaphore permits are counted in u32 elsewhere; validation keeps
        // both well under 4 GiB, the clamp only guards the conversion.
        let in_flight = max_bytes_in_flight.min(u64::from(u32::MAX)) as usize;
        BodyLimits {
            max_bytes: max_bytes.min(u64::from(u32::MAX)),
            read_timeout,
            budget: Arc::new(Semaphore::new(in_flight)),
        }
    }
}

/// A body read whole, holding its share of the in-flight budget.
pub(crate) struct Body {
    pub bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// Extracts the body within the limits, or rejects: 411 without a
/// `Content-Length`, 400 over `max_bytes`, 503 over the in-flight budget,
/// 408 when it does not arrive in time.
pub(crate) fn bounded(
    limits: Arc<BodyLimits>,
) -> impl Filter<Extract = (Body,), Error = Rejection> + Clone {
    warp::body::content_length_limit(limits.max_bytes)
        .and(warp::header::<u64>("content-length"))
        .and(warp::body::stream())
        .and(warp::any().map(move || limits.clone()))
        .and_then(|len: u64, body, limits: Arc<BodyLimits>| read(len, body, limits))
}

async fn read<S, B>(len: u64, body: S, limits: Arc<BodyLimits>) -> Result<Body, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    // content_length_limit has checked len against max_bytes (<= u32::MAX).
    let permit = limits
        .budget
        .clone()
        .try_acquire_many_owned(len as u32)
        .map_err(|_| {
            warp::reject::custom(
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many request bytes in flight (webhook.max_bytes_in_flight); retry later",
                )
                .retry_after(1),
            )
        })?;
    let collect = async {
        let mut body = std::pin::pin!(body);
        // hyper ends the body at Content-Length, so this never grows past it.
        let mut buf = BytesMut::with_capacity(len as usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                warp::reject::custom(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("reading the request body: {e}"),
                ))
            })?;
            buf.put(chunk);
        }
        Ok::<_, Rejection>(buf.freeze())
    };
    match tokio::time::timeout(limits.read_timeout, collect).await {
        Ok(bytes) => Ok(Body {
            bytes: bytes?,
            _budget: permit,
        }),
        Err(_) => Err(warp::reject::custom(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive within server.body_read_timeout",
        ))),
    }
}
