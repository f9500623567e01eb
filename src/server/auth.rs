//! Credential checks for the webhook (bearer or basic, as Alertmanager's
//! `http_config` sends them), the REST API (bearer) and the scrape routes
//! (bearer, when a metrics token is set).
//!
//! Only SHA-256 digests of the accepted credentials are kept, computed at
//! start-up; a presented value is digested and compared with every
//! candidate in constant time. Comparing digests, all 32 bytes long, means
//! the time taken tells neither which candidate matched nor how long any
//! of them is.

use ring::digest::{digest, SHA256, SHA256_OUTPUT_LEN};

type Digest = [u8; SHA256_OUTPUT_LEN];

fn sha256(value: &[u8]) -> Digest {
    let mut out = [0u8; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, value).as_ref());
    out
}

/// Every byte is compared, whatever differs first.
fn digests_equal(a: &Digest, b: &Digest) -> bool {
    #[cfg(test)]
    tests::record(a, b);
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Splits `Scheme value`; `None` without a value.
fn scheme_and_value(header: Option<&str>) -> Option<(&str, &str)> {
    let (scheme, value) = header?.trim().split_once(' ')?;
    Some((scheme, value.trim()))
}

/// The digest of a bearer token in the header; `None` for anything else.
fn bearer(header: Option<&str>) -> Option<Digest> {
    let (scheme, value) = scheme_and_value(header)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| sha256(value.as_bytes()))
}

/// Whether `presented` is among `candidates`; every candidate is compared,
/// so the time taken does not reveal which matched.
fn any_equal<'a>(candidates: impl IntoIterator<Item = &'a Digest>, presented: &Digest) -> bool {
    candidates
        .into_iter()
        .fold(false, |ok, c| digests_equal(c, presented) | ok)
}

/// Accepted `Authorization` header values, precomputed at start-up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    bearer: Vec<Digest>,
    basic: Vec<Digest>,
}

impl Credentials {
    pub(crate) fn new(
        bearer: impl IntoIterator<Item = String>,
        basic: Option<(String, String)>,
    ) -> Self {
        Credentials {
            bearer: bearer.into_iter().map(|t| sha256(t.as_bytes())).collect(),
            basic: basic
                .map(|(u, p)| sha256(base64(format!("{u}:{p}").as_bytes()).as_bytes()))
                .into_iter()
                .collect(),
        }
    }

    /// True when the header carries one of the accepted credentials.
    pub(crate) fn allows(&self, header: Option<&str>) -> bool {
        let Some((scheme, value)) = scheme_and_value(header) else {
            return false;
        };
        let candidates = if scheme.eq_ignore_ascii_case("bearer") {
            &self.bearer
        } else if scheme.eq_ignore_ascii_case("basic") {
            &self.basic
        } else {
            return false;
        };
        any_equal(candidates, &sha256(value.as_bytes()))
    }
}

/// Which notebooks a REST API caller may see and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    All,
    Namespaces(Vec<String>),
}

impl Scope {
    pub(crate) fn allows(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespaces(list) => list.iter().any(|n| n == namespace),
        }
    }
}

/// The bearer tokens of the routes other than the webhook: the REST API's,
/// each with its scope, and the optional metrics token of the scrape routes.
#[derive(Debug, Clone, Default)]
pub(crate) struct ApiTokens {
    tokens: Vec<(Digest, Scope)>,
    scrape: Option<Digest>,
}

impl ApiTokens {
    pub(crate) fn new(all: Vec<String>, namespaced: Vec<(String, Vec<String>)>) -> Self {
        let mut tokens: Vec<(Digest, Scope)> = all
            .into_iter()
            .map(|t| (sha256(t.as_bytes()), Scope::All))
            .collect();
        tokens.extend(
            namespaced
                .into_iter()
                .map(|(t, ns)| (sha256(t.as_bytes()), Scope::Namespaces(ns))),
        );
        ApiTokens {
            tokens,
            scrape: None,
        }
    }

    /// Requires `token` on `/metrics`, `/metrics/notebooks` and
    /// `/sd/notebooks`; `None` leaves them open.
    pub(crate) fn with_scrape_token(mut self, token: Option<String>) -> Self {
        self.scrape = token.map(|t| sha256(t.as_bytes()));
        self
    }

    /// The scope of the bearer token in the header; `None`: not a token.
    pub(crate) fn scope(&self, header: Option<&str>) -> Option<Scope> {
        let presented = bearer(header)?;
        // Every candidate is compared, so the time taken does not reveal which matched.
        let mut found = None;
        for (t, scope) in &self.tokens {
            if digests_equal(t, &presented) && found.is_none() {
                found = Some(scope.clone());
            }
        }
        found
    }

    /// Whether a scrape route may answer: no metrics token is set, or the
    /// header carries it.
    pub(crate) fn allows_scrape(&self, header: Option<&str>) -> bool {
        match &self.scrape {
            None => true,
            Some(token) => bearer(header).is_some_and(|p| any_equal([token], &p)),
        }
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static COMPARED: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
    }

    /// Notes the lengths of each comparison's inputs.
    pub(super) fn record(a: &[u8], b: &[u8]) {
        COMPARED.with(|c| c.borrow_mut().push((a.len(), b.len())));
    }

    fn take_recorded() -> Vec<(usize, usize)> {
        COMPARED.with(|c| std::mem::take(&mut *c.borrow_mut()))
    }

    /// A wrong guess of any length costs the same: every candidate is
    /// compared, always as two 32-byte digests, so neither the time nor an
    /// early exit tells how long the token is.
    #[test]
    fn every_comparison_is_of_two_fixed_size_digests() {
        let long = "L".repeat(100);
        let secrets = ["s".to_string(), "abcdefgh".to_string(), long.clone()];
        let c = Credentials::new(secrets.clone(), None);
        let t = ApiTokens::new(
            vec![secrets[0].clone(), secrets[1].clone()],
            vec![(long.clone(), vec!["team".into()])],
        );
        let longer = format!("{long}x");
        let huge = "h".repeat(10_000);
        for presented in [
            "s",
            "t",
            "abcdefgh",
            "abcdefgX",
            "abcdefg",
            long.as_str(),
            longer.as_str(),
            huge.as_str(),
        ] {
            let header = format!("Bearer {presented}");
            let expected = secrets.iter().any(|s| s == presented);
            take_recorded();
            assert_eq!(c.allows(Some(&header)), expected, "{presented:?}");
            let webhook = take_recorded();
            assert_eq!(t.scope(Some(&header)).is_some(), expected, "{presented:?}");
            let api = take_recorded();
            for rec in [webhook, api] {
                assert_eq!(rec.len(), 3, "{presented:?}: every candidate is compared");
                assert!(
                    rec.iter().all(|&lens| lens == (32, 32)),
                    "{presented:?}: compared {rec:?}"
                );
            }
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn api_tokens_carry_their_scope() {
        let t = ApiTokens::new(
            vec!["admin".into()],
            vec![("team".into(), vec!["team-a".into()])],
        );
        assert_eq!(t.scope(Some("Bearer admin")), Some(Scope::All));
        let team = t.scope(Some("Bearer team")).unwrap();
        assert!(team.allows("team-a") && !team.allows("team-b"));
        assert_eq!(t.scope(Some("Bearer nope")), None);
        assert_eq!(t.scope(Some("Basic team")), None);
        assert_eq!(t.scope(None), None);
    }

    #[test]
    fn the_scrape_token_is_required_only_when_set() {
        let open = ApiTokens::new(vec!["admin".into()], vec![]);
        assert!(open.allows_scrape(None));
        let t = open.with_scrape_token(Some("m".into()));
        assert!(t.allows_scrape(Some("Bearer m")));
        assert!(t.allows_scrape(Some("bearer  m ")));
        for wrong in [
            None,
            Some("Bearer admin"),
            Some("Bearer mm"),
            Some("Basic m"),
            Some("m"),
        ] {
            assert!(!t.allows_scrape(wrong), "{wrong:?}");
        }
        assert_eq!(
            t.scope(Some("Bearer m")),
            None,
            "the metrics token is not an API token"
        );
        assert_eq!(t.scope(Some("Bearer admin")), Some(Scope::All));
    }

    #[test]
    fn bearer_and_basic() {
        let c = Credentials::new(["s3cret".to_string()], Some(("am".into(), "pw".into())));
        assert!(c.allows(Some("Bearer s3cret")));
        assert!(c.allows(Some("bearer s3cret")));
        assert!(!c.allows(Some("Bearer s3cre")));
        assert!(!c.allows(Some("s3cret")));
        assert!(!c.allows(None));
        assert!(c.allows(Some(&format!("Basic {}", base64(b"am:pw")))));
        assert!(!c.allows(Some(&format!("Basic {}", base64(b"am:px")))));
        assert!(!Credentials::new([], None).allows(Some("Bearer ")));
    }
}
