//! What a page request carries, and the replies every page route shares.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BufMut};
use futures_util::StreamExt;

use warp::http::header::{HeaderMap, HeaderValue};
use warp::http::{Response, StatusCode};
use warp::reply::Response as Reply;
use warp::Filter;

use crate::server::listener::Peer;

pub(crate) const COOKIE: &str = "nbidle_session";

/// Only this origin's styles, scripts, forms and fetches; never framed.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The parts of a page request its handlers look at.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) cookie: Option<String>,
    pub(crate) headers: HeaderMap,
    /// The TCP peer; all unknown peers share one address.
    pub(crate) client: IpAddr,
}

impl Req {
    /// `X-Forwarded-Proto: https` from a proxy in front.
    pub(crate) fn forwarded_https(&self) -> bool {
        self.headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
    }

    /// A browser (it accepts HTML) gets HTML errors; others JSON.
    pub(crate) fn wants_html(&self) -> bool {
        self.headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
    }

    /// Sent by another site's page: `Sec-Fetch-Site: cross-site`, or an
    /// `Origin` whose host is not the one asked (`Host`, or a proxy's
    /// `X-Forwarded-Host`; a cross-site form cannot set either). No
    /// `Origin` at all is a script or an old browser, not a cross-site form.
    pub(crate) fn cross_site(&self) -> bool {
        let value = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok());
        if value("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
            return true;
        }
        let Some(origin) = value("origin") else {
            return false;
        };
        let Some((_, origin_host)) = origin.trim().split_once("://") else {
            return true;
        };
        let same = |name: &str| {
            value(name)
                .and_then(|h| h.split(',').next())
                .is_some_and(|h| h.trim().eq_ignore_ascii_case(origin_host))
        };
        !(same("host") || same("x-forwarded-host"))
    }

    /// The trusted header's value, when set and non-empty.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        let v = self.headers.get(name)?.to_str().ok()?.trim();
        (!v.is_empty()).then(|| v.to_string())
    }
}

pub(crate) fn request() -> impl Filter<Extract = (Req,), Error = std::convert::Infallible> + Clone {
    warp::cookie::optional::<String>(COOKIE)
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::ext::optional::<Peer>())
        .map(
            |cookie: Option<String>, headers, remote: Option<SocketAddr>, peer: Option<Peer>| Req {
                cookie,
                headers,
                client: remote
                    .or(peer.map(|p| p.0))
                    .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip()),
            },
        )
}

/// The query string, empty when there is none.
pub(crate) fn raw_query(
) -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// The largest form the page accepts.
pub(crate) const MAX_FORM_BYTES: u64 = 16 * 1024;

/// A form body within [`MAX_FORM_BYTES`] that arrives within
/// `server.body_read_timeout`; `None` for anything else, which the handler
/// refuses in the page's own words. The time limit matters as much as the
/// size: a body sent a byte a minute would hold its connection in flight,
/// and enough of them would keep the webhook and the API out.
pub(crate) fn form(
    read_timeout: Duration,
) -> impl Filter<Extract = (Option<Vec<(String, String)>>,), Error = std::convert::Infallible> + Clone
{
    warp::body::content_length_limit(MAX_FORM_BYTES)
        .and(warp::body::stream())
        .then(move |body| read_form(body, read_timeout))
        .or(warp::any().map(|| None))
        .unify()
}

async fn read_form<S, B>(body: S, read_timeout: Duration) -> Option<Vec<(String, String)>>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let collect = async {
        let mut body = std::pin::pin!(body);
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.ok()?;
            // hyper ends the body at Content-Length; this is a second
            // guard, not the first.
            if buf.len() + chunk.remaining() > MAX_FORM_BYTES as usize {
                return None;
            }
            buf.put(chunk);
        }
        Some(buf)
    };
    let buf = tokio::time::timeout(read_timeout, collect).await.ok()??;
    Some(
        form_urlencoded::parse(&buf)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

/// A form field's value.
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The headers every page reply carries.
pub(crate) fn secured(mut r: Reply) -> Reply {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !h.contains_key("cache-control") {
        // Pages carry CSRF tokens and names: never cached.
        h.insert("cache-control", HeaderValue::from_static("no-store"));
    }
    r
}

pub(crate) fn html(status: StatusCode, body: maud::Markup) -> Reply {
    let mut r = Response::new(body.into_string().into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secured(r)
}

pub(crate) fn json(status: StatusCode, body: &impl serde::Serialize) -> Reply {
    let mut r = Response::new(serde_json::to_vec(body).unwrap_or_default().into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    secured(r)
}

/// 303 to `location`, a path of this server.
pub(crate) fn redirect(location: &str) -> Reply {
    let mut r = Response::new(Default::default());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert("location", v);
    }
    secured(r)
}

/// The session cookie: `Max-Age` its time left; `None` clears it.
pub(crate) fn set_cookie(mut r: Reply, session: Option<(&str, u64)>, secure: bool) -> Reply {
    let (value, max_age) = session.unwrap_or(("", 0));
    let secure = if secure { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append("set-cookie", v);
    }
    r
}

/// A refusal: an HTML page for a browser, the API's JSON error shape
/// for anything else.
pub(crate) fn refuse(
    req: &Req,
    status: StatusCode,
    code: &str,
    title: &str,
    message: &str,
) -> Reply {
    if req.wants_html() {
        html(status, super::render::error(title, message))
    } else {
        json(
            status,
            &crate::server::models::ErrorBody {
                error: crate::server::models::ErrorDetail { code, message },
            },
        )
    }
}
