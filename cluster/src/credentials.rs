//! The cluster's credentials, made once per directory in `secrets/` (readable by the owner
//! alone) and kept by later starts, so that logins and tokens stay valid:
//!
//! - `write-token`: origins and proxies (every write to an origin);
//! - `read-token`: trackers and agents (announces, and reads from the origins);
//! - `metainfo-key.pem`, `metainfo-pub.pem`: the origins' Ed25519 signing key and the public
//!   half agents verify metainfo with (the PEM `openssl genpkey -algorithm ed25519` writes);
//! - `proxy-password`, `htpasswd`: the proxy's login, user [`PROXY_USER`], as a bcrypt entry.

use std::fmt;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};
use shoal_core::signature::{KeyPairPem, MetainfoSigner};

use crate::dir::{ClusterDir, make_private_dir, write_private};
use crate::error::{LaunchError, Result};

/// The user of the proxy's login.
pub const PROXY_USER: &str = "shoal";

pub struct Credentials {
    pub write_token: String,
    pub read_token: String,
    pub metainfo_key_pem: String,
    pub metainfo_pub_pem: String,
    pub proxy_password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("metainfo_pub_pem", &self.metainfo_pub_pem)
            .finish_non_exhaustive()
    }
}

/// `bytes` random bytes from the system's generator, as hex (what `openssl rand -hex` prints).
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| LaunchError::Check("the system's random generator failed".into()))?;
    Ok(hex::encode(b))
}

/// The first line of a file, if it has a non-empty one.
fn first_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().next()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}

fn non_empty(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .filter(|t| !t.trim().is_empty())
}

impl Credentials {
    /// The credentials of `dir`, each made now if it is not there yet.
    pub fn ensure(dir: &ClusterDir) -> Result<Credentials> {
        let secrets = dir.secrets();
        make_private_dir(&secrets)?;
        let token = |file: &str, bytes: usize| -> Result<String> {
            let path = dir.secret(file);
            if let Some(t) = first_line(&path) {
                return Ok(t);
            }
            let t = random_hex(bytes)?;
            write_private(&path, format!("{t}\n").as_bytes())?;
            Ok(t)
        };
        let write_token = token("write-token", 32)?;
        let read_token = token("read-token", 32)?;

        let key_path = dir.secret("metainfo-key.pem");
        let pub_path = dir.secret("metainfo-pub.pem");
        let metainfo_key_pem = match non_empty(&key_path) {
            Some(k) => k,
            None => {
                let pair = KeyPairPem::generate()
                    .map_err(|e| LaunchError::Check(format!("cannot make an Ed25519 key: {e}")))?;
                write_private(&key_path, pair.private_pem.as_bytes())?;
                let _ = std::fs::remove_file(&pub_path);
                pair.private_pem
            }
        };
        let metainfo_pub_pem = match non_empty(&pub_path) {
            Some(p) => p,
            None => {
                let public = MetainfoSigner::from_pem(&metainfo_key_pem)
                    .map_err(|e| LaunchError::Check(format!("{}: {e}", key_path.display())))?
                    .public_key_pem();
                write_private(&pub_path, public.as_bytes())?;
                public
            }
        };

        let proxy_password = token("proxy-password", 16)?;
        let htpasswd = dir.secret("htpasswd");
        if non_empty(&htpasswd).is_none() || newer(&dir.secret("proxy-password"), &htpasswd) {
            let hash = bcrypt::hash(&proxy_password, bcrypt::DEFAULT_COST).map_err(|e| {
                LaunchError::Check(format!("cannot hash the proxy's password: {e}"))
            })?;
            write_private(&htpasswd, format!("{PROXY_USER}:{hash}\n").as_bytes())?;
        }
        // Files put there by hand are made private too.
        if let Ok(entries) = std::fs::read_dir(&secrets) {
            for e in entries.flatten() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600));
            }
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))
                .map_err(LaunchError::io("cannot make private", &secrets))?;
        }
        Ok(Credentials {
            write_token,
            read_token,
            metainfo_key_pem,
            metainfo_pub_pem,
            proxy_password,
        })
    }
}

/// Whether `a` was modified after `b`.
fn newer(a: &Path, b: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(a), modified(b)), (Some(a), Some(b)) if a > b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = ClusterDir::new(tmp.path());
        let first = Credentials::ensure(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.write_token.len(), 64);
        assert_ne!(first.write_token, first.read_token);
        assert!(first.metainfo_key_pem.contains("BEGIN PRIVATE KEY"));
        assert!(first.metainfo_pub_pem.contains("BEGIN PUBLIC KEY"));
        let line = std::fs::read_to_string(dir.secret("htpasswd")).unwrap_or_default();
        let (user, hash) = line.trim().split_once(':').unwrap_or_default();
        assert_eq!(user, PROXY_USER);
        assert!(bcrypt::verify(&first.proxy_password, hash).unwrap_or(false));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(&dir.secrets()), 0o700);
        for f in [
            "write-token",
            "read-token",
            "metainfo-key.pem",
            "metainfo-pub.pem",
            "proxy-password",
            "htpasswd",
        ] {
            assert_eq!(mode(&dir.secret(f)), 0o600, "{f}");
        }

        let again = Credentials::ensure(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.write_token, first.write_token);
        assert_eq!(again.metainfo_key_pem, first.metainfo_key_pem);
        assert_eq!(again.proxy_password, first.proxy_password);

        // A signing key of one's own gets its public half made again.
        std::fs::remove_file(dir.secret("metainfo-key.pem")).unwrap_or_else(|e| panic!("{e}"));
        let renewed = Credentials::ensure(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(renewed.metainfo_pub_pem, first.metainfo_pub_pem);
    }
}
