//! The cluster's credentials, one vocabulary for every part.
//!
//! - The **write token** lets its holder change what the fleet runs: blobs, tags, referrers,
//!   deletes and the origins' internal copies. Origins and proxies hold it.
//! - The **read token** lets its holder read from the origins and announce to the trackers.
//!   Agents and trackers hold it; the write token is accepted wherever the read token is.
//! - The **metainfo key** (origins) signs every metainfo; agents verify with the matching
//!   public keys, so piece hashes from anyone else never decide what a client receives.
//!
//! Each part's config has these under `[credentials]`; a part that would otherwise serve
//! without them refuses to start unless its config says `insecure = true`.

use std::fmt;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};

/// A secret string: read from config like any other, never printed (nor written out by
/// `--check-config`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret, or `None` when it is empty (not configured).
    pub fn get(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(self.0.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is this secret, compared in constant time. An empty secret matches
    /// nothing.
    pub fn matches(&self, given: &str) -> bool {
        !self.0.is_empty() && constant_time_eq(given.as_bytes(), self.0.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<none>"
        } else {
            "<redacted>"
        })
    }
}

/// The bearer token of a request's `Authorization` header, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Compares without an early exit, so the time taken says nothing about the secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token of at least this many characters; shorter ones are refused by every part's
/// config check, so that nobody runs a cluster on `secret`.
pub const MIN_TOKEN_LEN: usize = 16;

/// Adds a problem when a configured token is too short to be a credential, or cannot be
/// sent in an `Authorization` header.
pub fn check_token(key: &str, token: &Secret, problems: &mut Vec<String>) {
    let Some(t) = token.get() else {
        return;
    };
    if t.len() < MIN_TOKEN_LEN {
        problems.push(format!(
            "{key} must be at least {MIN_TOKEN_LEN} characters (generate one with `openssl rand -hex 32`)"
        ));
    }
    if http::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
        problems.push(format!(
            "{key} holds control characters, which no HTTP header can carry"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hide_and_match() {
        let s = Secret::new("0123456789abcdef-secret");
        assert!(!format!("{s:?}").contains("secret"));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"<redacted>\"".to_string()
        );
        assert!(s.matches("0123456789abcdef-secret"));
        assert!(!s.matches("0123456789abcdef-secreT"));
        assert!(!Secret::default().matches(""));
    }

    #[test]
    fn bearer_is_read() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn short_tokens_are_refused() {
        let mut p = Vec::new();
        check_token("credentials.write_token", &Secret::new("short"), &mut p);
        check_token("credentials.read_token", &Secret::default(), &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        check_token(
            "credentials.read_token",
            &Secret::new("0123456789abcdef\n"),
            &mut p,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].contains("control characters"), "{p:?}");
    }
}
