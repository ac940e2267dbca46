//! Basic authentication against an htpasswd file of bcrypt entries.
//!
//! When it is on, `GET /v2/` without valid credentials answers 401 with a `Basic` challenge:
//! docker, podman and skopeo learn from that ping which scheme to use, and send no
//! credentials at all to a registry whose ping said nothing. Pulls may stay open
//! (`anonymous_pull`), in which case whatever credentials a pull carries are ignored
//! (containers/image sends an empty pair). Pushes and deletes need a valid user, and one
//! named in `push_users` when that list is not empty (403 DENIED otherwise).
//!
//! bcrypt is slow on purpose, and a push is many requests, so credentials that verified are
//! remembered (by their SHA-256) for a few minutes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderMap;
use sha2::Digest as _;
use shoal_core::error::{ApiError, ErrorCode};
use tokio::time::Instant;

use crate::config::AuthConfig;

/// How long verified credentials are trusted without running bcrypt again.
const REMEMBER_FOR: Duration = Duration::from_secs(300);
/// Verified credentials remembered at most; the table is emptied when it grows past this.
const REMEMBER_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: expected user:bcrypt-hash")]
    Syntax { line: usize },
    #[error("line {line}: user {user:?} does not have a bcrypt hash (make it with htpasswd -B)")]
    NotBcrypt { line: usize, user: String },
    #[error("no users in the file")]
    Empty,
}

/// Users and their bcrypt hashes. The hashes never appear in `Debug`.
pub struct Htpasswd {
    users: HashMap<String, String>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Htpasswd {
    pub fn parse(text: &str) -> Result<Self, HtpasswdError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .filter(|(u, h)| !u.is_empty() && !h.is_empty())
                .ok_or(HtpasswdError::Syntax { line: i + 1 })?;
            if !["$2a$", "$2b$", "$2y$", "$2x$"]
                .iter()
                .any(|p| hash.starts_with(p))
            {
                return Err(HtpasswdError::NotBcrypt {
                    line: i + 1,
                    user: user.to_owned(),
                });
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        if users.is_empty() {
            return Err(HtpasswdError::Empty);
        }
        Ok(Htpasswd { users })
    }

    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `GET /v2/`: the ping that tells clients how to authenticate.
    Ping,
    Pull,
    /// Uploads, manifest and tag writes, deletes.
    Push,
}

#[derive(Debug)]
pub struct Auth {
    htpasswd: Htpasswd,
    challenge: String,
    anonymous_pull: bool,
    push_users: HashSet<String>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Auth {
    /// Authentication as `config` says, or `None` when it is off.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, HtpasswdError> {
        let Some(path) = &config.htpasswd else {
            return Ok(None);
        };
        let htpasswd = Htpasswd::load(path)?;
        for u in &config.push_users {
            if !htpasswd.users.contains_key(u) {
                tracing::warn!(user = %u, "auth.push_users names a user the htpasswd file does not have");
            }
        }
        Ok(Some(Self::new(htpasswd, config)))
    }

    pub fn new(htpasswd: Htpasswd, config: &AuthConfig) -> Self {
        Auth {
            htpasswd,
            challenge: format!("Basic realm=\"{}\"", config.realm),
            anonymous_pull: config.anonymous_pull,
            push_users: config.push_users.iter().cloned().collect(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn unauthorized(&self, message: &'static str) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
            .with_header(http::header::WWW_AUTHENTICATE, &self.challenge)
    }

    /// Lets the request through, or says why not. Returns the user, if one authenticated.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        access: Access,
    ) -> Result<Option<String>, ApiError> {
        if access == Access::Pull && self.anonymous_pull {
            return Ok(None);
        }
        let Some((user, password)) = basic_credentials(headers) else {
            return Err(self.unauthorized("authentication required"));
        };
        if !self.verify(&user, &password).await {
            tracing::info!(%user, "authentication failed");
            return Err(self.unauthorized("invalid username or password"));
        }
        if access == Access::Push && !self.push_users.is_empty() && !self.push_users.contains(&user)
        {
            return Err(ApiError::new(
                ErrorCode::Denied,
                "this user may not push or delete",
            ));
        }
        Ok(Some(user))
    }

    async fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.htpasswd.users.get(user).cloned() else {
            return false;
        };
        let key: [u8; 32] = {
            let mut h = sha2::Sha256::new();
            h.update(user.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.update([0]);
            h.update(hash.as_bytes());
            h.finalize().into()
        };
        let now = Instant::now();
        if let Ok(v) = self.verified.lock()
            && v.get(&key)
                .is_some_and(|t| now.duration_since(*t) < REMEMBER_FOR)
        {
            return true;
        }
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && let Ok(mut v) = self.verified.lock() {
            if v.len() >= REMEMBER_MAX {
                v.clear();
            }
            v.insert(key, now);
        }
        ok
    }
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            http::header::AUTHORIZATION,
            format!("Basic {v}").parse().unwrap(),
        );
        h
    }

    fn auth(anonymous_pull: bool, push_users: &[&str]) -> Auth {
        let text = format!(
            "# users\nalice:{}\nbob:{}\n",
            bcrypt::hash("wonderland", 4).unwrap(),
            bcrypt::hash("builder", 4).unwrap()
        );
        let config = AuthConfig {
            anonymous_pull,
            push_users: push_users.iter().map(|s| s.to_string()).collect(),
            ..AuthConfig::default()
        };
        Auth::new(Htpasswd::parse(&text).unwrap(), &config)
    }

    #[test]
    fn htpasswd_parsing() {
        assert!(matches!(
            Htpasswd::parse("x"),
            Err(HtpasswdError::Syntax { line: 1 })
        ));
        assert!(matches!(
            Htpasswd::parse("\nu:{SHA}abc"),
            Err(HtpasswdError::NotBcrypt { line: 2, .. })
        ));
        assert!(matches!(
            Htpasswd::parse("# nothing\n"),
            Err(HtpasswdError::Empty)
        ));
        let h = Htpasswd::parse("u:$2y$05$abcdefghijklmnopqrstuv").unwrap();
        assert!(!format!("{h:?}").contains("$2y$"));
    }

    #[tokio::test]
    async fn pushes_need_a_valid_user_and_get_the_challenge() {
        let a = auth(true, &[]);
        for headers in [
            HeaderMap::new(),
            basic("alice", "wrong"),
            basic("eve", "x"),
            basic("", ""),
        ] {
            let e = a.check(&headers, Access::Push).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized);
            assert_eq!(e.headers[0].1, "Basic realm=\"shoal\"");
        }
        assert_eq!(
            a.check(&basic("alice", "wonderland"), Access::Push)
                .await
                .unwrap(),
            Some("alice".into())
        );
        // Remembered: the second check does not need bcrypt, and gives the same answer.
        assert!(
            a.check(&basic("alice", "wonderland"), Access::Push)
                .await
                .is_ok()
        );
        assert!(
            a.check(&basic("alice", "wonderlan"), Access::Push)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_ping_challenges_even_when_pulls_are_open() {
        let a = auth(true, &[]);
        assert_eq!(
            a.check(&HeaderMap::new(), Access::Ping)
                .await
                .unwrap_err()
                .code,
            ErrorCode::Unauthorized
        );
        assert!(
            a.check(&basic("bob", "builder"), Access::Ping)
                .await
                .is_ok()
        );
        // Open pulls ignore credentials, even bad ones.
        assert!(a.check(&HeaderMap::new(), Access::Pull).await.is_ok());
        assert!(a.check(&basic("", ""), Access::Pull).await.is_ok());
        let closed = auth(false, &[]);
        assert!(closed.check(&HeaderMap::new(), Access::Pull).await.is_err());
        assert!(
            closed
                .check(&basic("bob", "builder"), Access::Pull)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn push_users_limit_who_may_write() {
        let a = auth(true, &["alice"]);
        assert!(
            a.check(&basic("alice", "wonderland"), Access::Push)
                .await
                .is_ok()
        );
        let e = a
            .check(&basic("bob", "builder"), Access::Push)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Denied);
        assert!(
            a.check(&basic("bob", "builder"), Access::Pull)
                .await
                .is_ok()
        );
    }
}
