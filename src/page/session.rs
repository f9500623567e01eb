//! Page sessions: who signed in, their CSRF token and a flash message,
//! kept server-side in a bounded map that forgets them at their expiry.
//!
//! A session id and a CSRF token are 32 bytes from the OS RNG, sent as
//! hex. The map is keyed by the SHA-256 of the id, so neither lookups nor
//! anything kept in memory reveal a usable id, save a trusted proxy's
//! sessions: their id is kept so that a person's cookie-less views share
//! one, and such an id is of no use without the proxy's header.
//!
//! Each viewer (a token, a proxy's user) holds at most
//! [`MAX_PER_VIEWER`] sessions: a new one ends that viewer's oldest, never
//! another viewer's, so no one can sign others out by signing in again and
//! again. A store full of other viewers' live sessions refuses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::digest::{digest, SHA256};

use crate::error::{Error, Result};
use crate::notebook::NotebookState;
use crate::server::auth::Scope;

/// Who is looking at the page, and so which notebooks they see and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Viewer {
    /// Signed in with an API token: that token's namespaces.
    Token(Scope),
    /// Named by the trusted proxy's header: the notebooks they own.
    Owner(String),
}

impl Viewer {
    pub(crate) fn may_use(&self, notebook: &NotebookState) -> bool {
        match self {
            Viewer::Token(scope) => scope.allows(&notebook.id.namespace),
            Viewer::Owner(user) => notebook.owner.as_deref() == Some(user.as_str()),
        }
    }

    /// Who, in a few words: the proxy's user, or which token.
    pub(crate) fn who(&self) -> String {
        match self {
            Viewer::Token(Scope::All) => "a token for every namespace".into(),
            Viewer::Token(Scope::Namespaces(ns)) => format!("a token for {}", ns.join(", ")),
            Viewer::Owner(user) => user.clone(),
        }
    }

    /// What the page's header says about the sign-in.
    pub(crate) fn describe(&self) -> String {
        match self {
            Viewer::Token(Scope::All) => "signed in with a token for every namespace".into(),
            Viewer::Token(Scope::Namespaces(ns)) => {
                format!("signed in with a token for {}", ns.join(", "))
            }
            Viewer::Owner(user) => format!("signed in as {user}"),
        }
    }
}

/// A one-time message shown on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Flash {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

/// Sessions one viewer holds at once: a few browsers and devices.
pub(crate) const MAX_PER_VIEWER: usize = 8;

struct Entry {
    viewer: Viewer,
    /// The SHA-256 of who holds it: the token, or the proxy's user.
    holder: [u8; 32],
    /// A proxy's session only: its id, to hand out again.
    reusable_id: Option<String>,
    csrf: String,
    expires: Instant,
    flash: Option<Flash>,
}

/// What a request learns of its session.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    /// The cookie's value.
    pub(crate) id: String,
    pub(crate) viewer: Viewer,
    pub(crate) csrf: String,
    /// Filled in by the page view that shows it ([`Sessions::take_flash`]).
    pub(crate) flash: Option<Flash>,
    /// Whole seconds left, for the cookie's `Max-Age`.
    pub(crate) ttl_secs: u64,
}

/// The server-side session store.
pub(crate) struct Sessions {
    map: Mutex<HashMap<[u8; 32], Entry>>,
    ttl: Duration,
    max: usize,
}

/// 32 bytes from the OS RNG, as 64 hex digits.
pub(crate) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Backend(format!("reading the OS random number generator: {e}")))?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(id: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, id.as_bytes()).as_ref());
    out
}

/// Whose a session is: a token and a user of the same name differ.
fn holder_key(viewer: &Viewer, holder: &str) -> [u8; 32] {
    let kind = match viewer {
        Viewer::Token(_) => "token",
        Viewer::Owner(_) => "user",
    };
    key(&format!("{kind}\0{holder}"))
}

/// Every byte compared, whatever differs first; lengths are not secret
/// (every token is 64 hex digits).
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.map
            .lock()
            .expect("no panics while the session map is held")
    }

    /// A session for `viewer`, who is `holder` (the token it signed in
    /// with, or the proxy's user): a proxy's user gets their live one
    /// again. A viewer at [`MAX_PER_VIEWER`], or a full store, gives up
    /// that viewer's oldest; `None` when the store is full of other
    /// viewers' live sessions.
    pub(crate) fn create(&self, viewer: Viewer, holder: &str) -> Result<Option<Current>> {
        let (id, csrf) = (random_token()?, random_token()?);
        let now = Instant::now();
        let holder = holder_key(&viewer, holder);
        let mut map = self.lock();
        map.retain(|_, e| e.expires > now);
        let own = map.values().filter(|e| e.holder == holder);
        if let Some(e) = own.clone().find(|e| e.reusable_id.is_some()) {
            return Ok(Some(Current {
                id: e.reusable_id.clone().unwrap_or_default(),
                viewer: e.viewer.clone(),
                csrf: e.csrf.clone(),
                flash: None,
                ttl_secs: (e.expires - now).as_secs(),
            }));
        }
        let count = own.count();
        if count >= MAX_PER_VIEWER || (count > 0 && map.len() >= self.max) {
            let oldest = map
                .iter()
                .filter(|(_, e)| e.holder == holder)
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        if map.len() >= self.max {
            return Ok(None);
        }
        let reusable_id = matches!(viewer, Viewer::Owner(_)).then(|| id.clone());
        map.insert(
            key(&id),
            Entry {
                viewer: viewer.clone(),
                holder,
                reusable_id,
                csrf: csrf.clone(),
                expires: now + self.ttl,
                flash: None,
            },
        );
        Ok(Some(Current {
            id,
            viewer,
            csrf,
            flash: None,
            ttl_secs: self.ttl.as_secs(),
        }))
    }

    /// The live session `id` names; an expired one is forgotten. Its
    /// flash message is left for the page view: a script's refresh or
    /// another tab between a form and its redirect must not take it.
    pub(crate) fn get(&self, id: &str) -> Option<Current> {
        let k = key(id);
        let now = Instant::now();
        let mut map = self.lock();
        let entry = map.get_mut(&k)?;
        if entry.expires <= now {
            map.remove(&k);
            return None;
        }
        Some(Current {
            id: id.to_string(),
            viewer: entry.viewer.clone(),
            csrf: entry.csrf.clone(),
            flash: None,
            ttl_secs: (entry.expires - now).as_secs(),
        })
    }

    /// Keeps `flash` for the session's next page.
    pub(crate) fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(e) = self.lock().get_mut(&key(id)) {
            e.flash = Some(flash);
        }
    }

    /// The session's flash message, taken: shown once.
    pub(crate) fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(&key(id))?.flash.take()
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(&key(id));
    }

    /// Live and expired sessions not yet forgotten.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_of_32_bytes() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b));
        assert!(!same_token(&a, &a[..63]));
    }

    #[test]
    fn the_store_is_bounded_and_drops_the_viewers_oldest() {
        let s = Sessions::new(Duration::from_secs(60), 3);
        let ids: Vec<String> = (0..5)
            .map(|_| {
                s.create(Viewer::Token(Scope::All), "t")
                    .unwrap()
                    .unwrap()
                    .id
            })
            .collect();
        assert_eq!(s.len(), 3);
        assert!(s.get(&ids[0]).is_none() && s.get(&ids[1]).is_none());
        assert!(ids[2..].iter().all(|id| s.get(id).is_some()));
    }

    #[test]
    fn a_session_expires_and_a_flash_is_shown_once() {
        let s = Sessions::new(Duration::from_millis(50), 10);
        let c = s
            .create(Viewer::Owner("ada".into()), "ada")
            .unwrap()
            .unwrap();
        s.set_flash(
            &c.id,
            Flash {
                ok: true,
                text: "hi".into(),
            },
        );
        assert!(s.get(&c.id).unwrap().flash.is_none(), "get leaves it");
        assert_eq!(s.take_flash(&c.id).unwrap().text, "hi");
        assert!(s.take_flash(&c.id).is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.get(&c.id).is_none());
        assert_eq!(s.len(), 0, "an expired session is forgotten when seen");
    }
}
