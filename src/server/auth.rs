//! Credential checks for the webhook (bearer or basic, as Alertmanager's
//! `http_config` sends them) and the REST API (bearer).

/// Accepted `Authorization` header values, precomputed at start-up.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    bearer: Vec<String>,
    basic: Vec<String>,
}

impl Credentials {
    pub fn new(bearer: impl IntoIterator<Item = String>, basic: Option<(String, String)>) -> Self {
        Credentials {
            bearer: bearer.into_iter().collect(),
            basic: basic
                .map(|(u, p)| base64(format!("{u}:{p}").as_bytes()))
                .into_iter()
                .collect(),
        }
    }

    /// True when the header carries one of the accepted credentials.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some((scheme, value)) = header.and_then(|h| h.trim().split_once(' ')) else {
            return false;
        };
        let value = value.trim();
        let candidates = if scheme.eq_ignore_ascii_case("bearer") {
            &self.bearer
        } else if scheme.eq_ignore_ascii_case("basic") {
            &self.basic
        } else {
            return false;
        };
        // Check every candidate so the time taken does not reveal which matched.
        candidates.iter().fold(false, |ok, c| {
            constant_time_eq(c.as_bytes(), value.as_bytes()) | ok
        })
    }
}

/// Which notebooks a REST API caller may see and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespaces(Vec<String>),
}

impl Scope {
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespaces(list) => list.iter().any(|n| n == namespace),
        }
    }
}

/// The REST API's bearer tokens, each with its scope.
#[derive(Debug, Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<(String, Scope)>,
}

impl ApiTokens {
    pub fn new(all: Vec<String>, namespaced: Vec<(String, Vec<String>)>) -> Self {
        let mut tokens: Vec<(String, Scope)> = all.into_iter().map(|t| (t, Scope::All)).collect();
        tokens.extend(
            namespaced
                .into_iter()
                .map(|(t, ns)| (t, Scope::Namespaces(ns))),
        );
        ApiTokens { tokens }
    }

    /// The scope of the bearer token in the header; `None`: not a token.
    pub fn scope(&self, header: Option<&str>) -> Option<Scope> {
        let (scheme, value) = header.and_then(|h| h.trim().split_once(' '))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let value = value.trim();
        // Every candidate is compared, so the time taken does not reveal which matched.
        let mut found = None;
        for (t, scope) in &self.tokens {
            if constant_time_eq(t.as_bytes(), value.as_bytes()) && found.is_none() {
                found = Some(scope.clone());
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
