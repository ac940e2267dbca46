//! An agent's own peer certificate, made in memory at start from an agents-only CA it holds
//! (`tls.name`, `tls.issuer_cert`, `tls.issuer_key`).
//!
//! Agents run one per node from one pod template: a certificate handed to all of them would
//! give them all one peer id. So each makes its own, naming `<tls.name>.agent.shoal` and
//! nothing else. The suffix is fixed, so the issuer cannot be used to make an origin, and
//! peers trust it through `tls.agent_ca`, which refuses origin names whatever they say.
//!
//! The certificate is good for [`LIFETIME`] and made again once two thirds of that have
//! passed, from the issuer's files as they are then (a renewed CA is picked up there).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;

use super::issue::time;
use super::{TlsError, agent_peer_name, load_certs, provider, read};

/// How long a certificate an agent makes itself is good for.
pub const LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// After a failed renewal, how long until the next try (the current certificate is kept).
const RETRY: Duration = Duration::from_secs(60);

/// A certificate this part made itself, made again before it expires.
#[derive(Debug)]
pub struct SelfIssued {
    name: String,
    issuer_cert: PathBuf,
    issuer_key: PathBuf,
    lifetime: Duration,
    state: Mutex<Minted>,
}

#[derive(Debug)]
struct Minted {
    current: Arc<CertifiedKey>,
    renew_at: SystemTime,
}

impl SelfIssued {
    /// Makes the certificate of the agent `name` (a host name) from the issuer's files.
    pub fn open(name: &str, issuer_cert: &Path, issuer_key: &Path) -> Result<Self, TlsError> {
        Self::open_for(name, issuer_cert, issuer_key, LIFETIME)
    }

    pub(crate) fn open_for(
        name: &str,
        issuer_cert: &Path,
        issuer_key: &Path,
        lifetime: Duration,
    ) -> Result<Self, TlsError> {
        let name = agent_peer_name(name).map_err(TlsError::SelfIssue)?;
        let current = Arc::new(mint(&name, issuer_cert, issuer_key, lifetime)?);
        tracing::info!(name, "made this agent's peer certificate");
        Ok(SelfIssued {
            name,
            issuer_cert: issuer_cert.to_owned(),
            issuer_key: issuer_key.to_owned(),
            lifetime,
            state: Mutex::new(Minted {
                current,
                renew_at: renew_at(lifetime),
            }),
        })
    }

    /// The certificate to present now: made again first if it is due.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if SystemTime::now() >= st.renew_at {
            match mint(
                &self.name,
                &self.issuer_cert,
                &self.issuer_key,
                self.lifetime,
            ) {
                Ok(ck) => {
                    st.current = Arc::new(ck);
                    st.renew_at = renew_at(self.lifetime);
                    tracing::info!(name = self.name, "renewed this agent's peer certificate");
                }
                Err(e) => {
                    st.renew_at = SystemTime::now() + RETRY;
                    tracing::warn!(
                        name = self.name,
                        error = %e,
                        "cannot renew this agent's peer certificate; keeping the current one"
                    );
                }
            }
        }
        st.current.clone()
    }
}

fn renew_at(lifetime: Duration) -> SystemTime {
    SystemTime::now() + lifetime * 2 / 3
}

fn fail(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// A certificate for `name` alone, signed by the issuer, presented with the issuer's
/// certificate after it.
fn mint(
    name: &str,
    issuer_cert: &Path,
    issuer_key: &Path,
    lifetime: Duration,
) -> Result<CertifiedKey, TlsError> {
    let issuer_chain = load_certs(issuer_cert)?;
    let key_pem = String::from_utf8(read(issuer_key)?).map_err(|e| fail(issuer_key, e))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| {
        fail(
            issuer_key,
            format!("{e} (the issuer's key must be PKCS#8, a PRIVATE KEY block)"),
        )
    })?;
    let issuer =
        Issuer::from_ca_cert_der(&issuer_chain[0], key).map_err(|e| fail(issuer_cert, e))?;

    let leaf_key = KeyPair::generate().map_err(|e| TlsError::SelfIssue(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let dns = name
        .try_into()
        .map_err(|e: rcgen::Error| TlsError::SelfIssue(e.to_string()))?;
    params.subject_alt_names = vec![SanType::DnsName(dns)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = SystemTime::now();
    // An hour's slack for peers whose clocks are behind.
    params.not_before = time(now - Duration::from_secs(3600));
    params.not_after = time(now + lifetime);
    params.serial_number = Some(rand::random::<[u8; 16]>().to_vec().into());
    let leaf = params
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| TlsError::SelfIssue(e.to_string()))?;

    // rcgen signs with whatever key it is given: check that this one is the certificate's,
    // or every peer would refuse what it signed.
    let mut roots = RootCertStore::empty();
    roots
        .add(issuer_chain[0].clone())
        .map_err(|e| fail(issuer_cert, format!("not a CA certificate: {e}")))?;
    let parsed = ParsedCertificate::try_from(leaf.der())?;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &[],
        UnixTime::now(),
        provider().signature_verification_algorithms.all,
    )
    .map_err(|e| {
        fail(
            issuer_key,
            format!("does not sign for the certificate in tls.issuer_cert ({e})"),
        )
    })?;

    let mut chain = vec![leaf.der().clone()];
    chain.extend(issuer_chain);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

#[cfg(test)]
mod tests;
