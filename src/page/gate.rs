//! The page's sessions as a stopped notebook's page sees them
//! ([`PersonGate`]): a person signed in here may start, from a local
//! notebook's own address, the notebooks this page lets them start.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use warp::http::HeaderMap;

use super::request::{Req, COOKIE};
use super::session::{Current, Sessions, Viewer};
use crate::backend::{Person, PersonGate};
use crate::notebook::NotebookState;

/// The live session the request's cookie names. A trusted proxy's
/// session holds only while the proxy names that person (`trusted`:
/// `auth.trusted_user_header`).
pub(crate) fn current(sessions: &Sessions, trusted: Option<&str>, req: &Req) -> Option<Current> {
    let proxied = trusted.and_then(|h| req.header(h));
    req.cookie
        .as_deref()
        .and_then(|id| sessions.get(id))
        .filter(|c| match &c.viewer {
            Viewer::Owner(u) => proxied.as_deref() == Some(u.as_str()),
            Viewer::Token(_) => true,
        })
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_string())
        })
}

/// The page's sessions, handed to the local backend's stopped pages.
pub(crate) struct SignedIn {
    pub(crate) sessions: Arc<Sessions>,
    /// Lower-cased; `None`: off.
    pub(crate) trusted_user_header: Option<String>,
}

impl PersonGate for SignedIn {
    fn may_start(&self, headers: &HeaderMap, notebook: &NotebookState) -> Option<Person> {
        let req = Req {
            cookie: cookie(headers, COOKIE),
            headers: headers.clone(),
            client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let cur = current(&self.sessions, self.trusted_user_header.as_deref(), &req)?;
        // The page's own rule for acting on a notebook.
        cur.viewer.may_use(notebook).then(|| Person {
            who: cur.viewer.who(),
            csrf: cur.csrf,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::server::auth::Scope;

    fn gate(trusted: Option<&str>, ttl: Duration) -> SignedIn {
        SignedIn {
            sessions: Arc::new(Sessions::new(ttl, 10)),
            trusted_user_header: trusted.map(str::to_string),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                warp::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn signed_in(g: &SignedIn, viewer: Viewer, holder: &str) -> (String, String) {
        let c = g.sessions.create(viewer, holder).unwrap().unwrap();
        (format!("other=1; {COOKIE}={}; x=y", c.id), c.csrf)
    }

    #[test]
    fn a_namespace_token_starts_its_namespace_only() {
        let g = gate(None, Duration::from_secs(60));
        let scoped = Viewer::Token(Scope::Namespaces(vec!["team-a".into()]));
        let (cookie, csrf) = signed_in(&g, scoped, "t");
        let h = headers(&[("cookie", &cookie)]);
        let mine = MemoryBackend::running("team-a", "lab");
        let person = g.may_start(&h, &mine).expect("its namespace");
        assert_eq!(person.csrf, csrf);
        assert_eq!(person.who, "a token for team-a");
        let theirs = MemoryBackend::running("team-b", "lab");
        assert_eq!(g.may_start(&h, &theirs), None, "another namespace");
        assert_eq!(g.may_start(&headers(&[]), &mine), None, "no cookie");
        let forged = headers(&[("cookie", &format!("{COOKIE}=0123"))]);
        assert_eq!(g.may_start(&forged, &mine), None, "no such session");
    }

    #[test]
    fn a_proxy_user_starts_their_own_notebooks_while_the_proxy_names_them() {
        let g = gate(Some("x-user"), Duration::from_secs(60));
        let (cookie, _) = signed_in(&g, Viewer::Owner("ada".into()), "ada");
        let owned = |owner: &str| NotebookState {
            owner: Some(owner.into()),
            ..MemoryBackend::running("team-a", "lab")
        };
        let proxied = headers(&[("cookie", &cookie), ("x-user", "ada")]);
        assert_eq!(g.may_start(&proxied, &owned("ada")).unwrap().who, "ada");
        assert_eq!(g.may_start(&proxied, &owned("bob")), None, "not hers");
        let bare = headers(&[("cookie", &cookie)]);
        assert_eq!(g.may_start(&bare, &owned("ada")), None, "no proxy header");
    }

    #[test]
    fn an_expired_session_starts_nothing() {
        let g = gate(None, Duration::from_millis(30));
        let (cookie, _) = signed_in(&g, Viewer::Token(Scope::All), "t");
        let h = headers(&[("cookie", &cookie)]);
        let nb = MemoryBackend::running("team-a", "lab");
        assert!(g.may_start(&h, &nb).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(g.may_start(&h, &nb), None);
    }
}
