//! The TLS files of a cluster that runs over TLS: a throwaway CA made once per directory and
//! a certificate from it for each part, kept by later starts like the credentials are (so
//! that a client told to trust the CA goes on trusting the cluster), and deleted with the
//! directory.
//!
//! ```text
//! tls/ca.crt                    the CA every part trusts (tls.ca)
//! tls/NAME.crt, tls/NAME.key    each part's certificate and key (keys readable by the owner)
//! tls/trust/ca.crt              the CA alone, for a client's certificate directory
//!                               (skopeo --dest-cert-dir, docker's certs.d/<host>/)
//! secrets/ca.key                the CA's private key, with the other credentials
//! ```
//!
//! A part's certificate names what it is: an origin `origin-<i>.origin.shoal`, an agent
//! `agent-<i>.agent.shoal` (the peer protocol binds a peer's id to that name), the tracker
//! and the proxy their own name; each also 127.0.0.1 (and but for agents `localhost`), the
//! address the others reach it at.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_core::tls::issue::{Ca, Validity, agent_name, origin_name};
use shoal_core::tls::{Tls, TlsConfig, rustls};

use crate::dir::{ClusterDir, make_private_dir, write_private};
use crate::error::{LaunchError, Result};
use crate::spec::{Member, Role};

/// The common name of every local cluster's CA: a CA read back from its files must be
/// called what it was made as.
pub const CA_NAME: &str = "Shoal local cluster CA";

/// How long the parts' certificates and the CA are valid: a throwaway cluster's lifetime.
const VALID_DAYS: u64 = 825;

/// The TLS files of a cluster's directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    /// A client that presents nothing and trusts the CA.
    client: Tls,
}

/// The names a member's certificate carries.
pub fn names(m: &Member) -> Vec<String> {
    let mut names = match m.role {
        Role::Origin => vec![origin_name(&m.name)],
        Role::Agent => vec![agent_name(&m.name)],
        Role::Tracker | Role::Proxy => vec![m.name.clone()],
    };
    names.push("127.0.0.1".into());
    if m.role != Role::Agent {
        names.push("localhost".into());
    }
    names
}

fn issue_error(e: impl std::fmt::Display) -> LaunchError {
    LaunchError::Check(format!("cannot make a certificate: {e}"))
}

impl Pki {
    /// The TLS files of `dir` for every member of `members`, each made now if it is not there
    /// yet. A CA whose certificate or key is missing is made again, and every part's
    /// certificate with it.
    pub fn ensure<'a>(
        dir: &ClusterDir,
        members: impl IntoIterator<Item = &'a Member>,
    ) -> Result<Pki> {
        let tls = dir.tls();
        make_private_dir(&tls)?;
        make_private_dir(&dir.secrets())?;
        let ca_cert = tls.join("ca.crt");
        let ca_key = dir.secret("ca.key");
        let kept = match (
            std::fs::read_to_string(&ca_cert),
            std::fs::read_to_string(&ca_key),
        ) {
            (Ok(cert), Ok(key)) => Ca::from_pem(CA_NAME, &cert, &key).ok(),
            _ => None,
        };
        let ca = match kept {
            Some(ca) => ca,
            None => {
                let ca = Ca::new(CA_NAME).map_err(issue_error)?;
                write_private(&ca_key, ca.key_pem().as_bytes())?;
                ca.write_cert(&tls)
                    .map_err(LaunchError::io("cannot write", &ca_cert))?;
                // Certificates of an earlier CA are no use with this one.
                if let Ok(entries) = std::fs::read_dir(&tls) {
                    for e in entries.flatten() {
                        let p = e.path();
                        if p != ca_cert && p.extension().is_some_and(|x| x == "crt" || x == "key") {
                            let _ = std::fs::remove_file(p);
                        }
                    }
                }
                ca
            }
        };
        let trust = tls.join("trust");
        make_private_dir(&trust)?;
        ca.write_cert(&trust)
            .map_err(LaunchError::io("cannot write", &trust))?;
        for m in members {
            let (cert, key) = (
                tls.join(format!("{}.crt", m.name)),
                tls.join(format!("{}.key", m.name)),
            );
            if cert.is_file() && key.is_file() {
                continue;
            }
            let names = names(m);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            ca.issue(&names, Validity::days(VALID_DAYS))
                .map_err(issue_error)?
                .write(&tls, &m.name)
                .map_err(LaunchError::io("cannot write", &cert))?;
        }
        Pki::open(dir)
    }

    /// The TLS files already in `dir`, to reach its parts; an error if it has no CA.
    pub fn open(dir: &ClusterDir) -> Result<Pki> {
        let dir = dir.tls();
        let ca = dir.join("ca.crt");
        let client = Tls::from_config(&TlsConfig {
            ca: Some(ca.clone()),
            ..TlsConfig::default()
        })
        .map_err(|e| LaunchError::Check(format!("{}: {e}", ca.display())))?
        .ok_or_else(|| LaunchError::Check("a TLS client config said plaintext".into()))?;
        Ok(Pki { dir, client })
    }

    /// The CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A directory holding the CA's certificate alone (`ca.crt`), as container tools take it.
    pub fn trust_dir(&self) -> PathBuf {
        self.dir.join("trust")
    }

    /// The `[tls]` table of the part called `name`: its certificate and key, and the CA.
    pub fn files(&self, name: &str) -> TlsConfig {
        TlsConfig::files(
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
            self.ca(),
        )
    }

    /// A client that trusts the CA and presents nothing.
    pub fn client(&self) -> &Tls {
        &self.client
    }

    /// What a blocking HTTPS client needs to reach the parts.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        self.client
            .http_client()
            .map(Arc::new)
            .map_err(|e| LaunchError::Check(format!("{}: {e}", self.ca().display())))
    }

    /// A reqwest client that trusts the CA (HTTPS to origins, the tracker, the proxy).
    pub fn reqwest(&self) -> Result<reqwest::Client> {
        shoal_core::tls::client_builder(Some(&self.client))
            .map_err(|e| LaunchError::Check(format!("{}: {e}", self.ca().display())))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .pool_max_idle_per_host(4)
            .build()
            .map_err(LaunchError::http("cannot build an HTTPS client"))
    }
}

/// Whether `dir` holds the TLS files of a cluster.
pub fn present(dir: &Path) -> bool {
    dir.join("tls").join("ca.crt").is_file()
}

#[cfg(test)]
mod tests;
