//! TLS for every connection between Shoal's parts: one stack (rustls), one crypto provider
//! (ring, the library that already signs metainfo), one `[tls]` table in every part's config.
//!
//! - **HTTP** between parts (agents and proxies to origins, agents to trackers, origins to
//!   each other) is HTTPS: servers present `tls.cert`, clients verify them against `tls.ca`.
//! - **The peer protocol** is TLS 1.3 with mutual authentication against `tls.ca`, and a
//!   peer's id is bound to its certificate ([`PeerIdentity`]): a certificate names its holder
//!   `<name>.agent.shoal` or `<name>.origin.shoal`, and the id is derived from that name. So
//!   a stranger cannot claim an id, and only a certificate that says so makes a peer an
//!   origin.
//! - Certificates and keys are read again when their files change ([`ReloadingKey`]), so a
//!   renewed certificate (cert-manager rotates them) is used without a restart.
//! - An agent may instead make its own peer certificate at start ([`self_issue`]) from an
//!   agents-only CA it holds: agents run one per node from one pod template, and a shared
//!   certificate would give them all the same peer id.
//!
//! `tls.plaintext = true` is the explicit switch for a network only Shoal's parts can reach;
//! without it a part that has no certificate does not start.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

pub use rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
pub use tokio_rustls;

use crate::peer::PeerId;

#[cfg(any(test, feature = "issue"))]
pub mod issue;
#[cfg(any(test, feature = "issue"))]
pub mod self_issue;

/// The name suffix of an agent's peer certificate.
pub const AGENT_SUFFIX: &str = ".agent.shoal";
/// The name suffix of an origin's peer certificate: only these peers are origins.
pub const ORIGIN_SUFFIX: &str = ".origin.shoal";

/// How often, at most, the files of a [`ReloadingKey`] are looked at for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The `[tls]` table of every part's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// No TLS at all: every byte between parts in clear, peers unauthenticated. Only for a
    /// network that nothing but Shoal's parts can reach.
    pub plaintext: bool,
    /// PEM certificate chain this part presents (leaf first).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
    /// PEM bundle of the CAs that servers and peers are verified against.
    pub ca: Option<PathBuf>,
    /// PEM bundle of CAs trusted for agents' peer certificates only: a certificate from one
    /// of these that names an origin is refused. For agents that make their own
    /// certificates from an issuer they hold, which must not let them pass for an origin.
    pub agent_ca: Option<PathBuf>,
    /// Instead of `cert`/`key`: an agent's name (a host name, such as its node's), for a
    /// peer certificate the agent makes itself at start, naming `<name>.agent.shoal` only,
    /// signed by `issuer_cert`/`issuer_key`.
    pub name: Option<String>,
    /// PEM certificate of the agents-only CA that signs the certificate this part makes
    /// (peers list it in `agent_ca`); presented after the certificate.
    pub issuer_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8) of `issuer_cert`.
    pub issuer_key: Option<PathBuf>,
}

/// What a part needs of its `[tls]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// It presents a certificate (it serves HTTPS or speaks the peer protocol).
    pub cert: bool,
    /// It verifies others (it is a client of another part, or a peer).
    pub ca: bool,
}

impl TlsConfig {
    /// Files that say "plaintext" in a test or a trusted network.
    pub fn plaintext() -> Self {
        TlsConfig {
            plaintext: true,
            ..TlsConfig::default()
        }
    }

    /// A config presenting `cert`/`key` and trusting `ca`.
    pub fn files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        TlsConfig {
            plaintext: false,
            cert: Some(cert.into()),
            key: Some(key.into()),
            ca: Some(ca.into()),
            ..TlsConfig::default()
        }
    }

    /// A config for the agent `name` that makes its own certificate from `issuer_cert` and
    /// `issuer_key`, trusting `ca`.
    pub fn self_issued(
        name: &str,
        issuer_cert: impl Into<PathBuf>,
        issuer_key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        TlsConfig {
            name: Some(name.to_owned()),
            issuer_cert: Some(issuer_cert.into()),
            issuer_key: Some(issuer_key.into()),
            ca: Some(ca.into()),
            ..TlsConfig::default()
        }
    }

    /// Whether the table asks this part to make its own certificate.
    fn mints(&self) -> bool {
        self.name.is_some() || self.issuer_cert.is_some() || self.issuer_key.is_some()
    }

    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.plaintext
    }

    /// Pushes a problem for each thing wrong with the table, reading the files it names so
    /// that `--check-config` catches a missing or broken certificate before the part starts.
    pub fn validate(&self, needs: Needs, problems: &mut Vec<String>) {
        if self.plaintext {
            if self.cert.is_some()
                || self.key.is_some()
                || self.ca.is_some()
                || self.agent_ca.is_some()
                || self.mints()
            {
                problems.push(
                    "tls.plaintext = true and tls.cert, tls.key, tls.ca, tls.agent_ca or \
                     tls.name/tls.issuer_cert/tls.issuer_key are set: choose one"
                        .into(),
                );
            }
            return;
        }
        if self.mints() {
            if self.cert.is_some() || self.key.is_some() {
                problems.push(
                    "tls.cert/tls.key and tls.name/tls.issuer_cert/tls.issuer_key are both set: \
                     choose one"
                        .into(),
                );
            } else {
                self.validate_minting(problems);
            }
        } else {
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    if let Err(e) = load_certified_key(cert, key) {
                        problems.push(format!("tls.cert/tls.key: {e}"));
                    }
                }
                (None, None) if needs.cert => problems.push(
                    "tls.cert and tls.key are not set: set them (PEM files), or set \
                     tls.plaintext = true for a network that only Shoal's parts can reach"
                        .into(),
                ),
                (None, None) => {}
                _ => problems.push("tls.cert and tls.key are set together or not at all".into()),
            }
        }
        match &self.ca {
            Some(ca) => {
                if let Err(e) = load_roots(ca) {
                    problems.push(format!("tls.ca: {e}"));
                }
            }
            None if needs.ca => problems.push(
                "tls.ca is not set: set it (a PEM bundle of the cluster's CA), or set \
                 tls.plaintext = true for a network that only Shoal's parts can reach"
                    .into(),
            ),
            None => {}
        }
        if let Some(ca) = &self.agent_ca
            && let Err(e) = load_roots(ca)
        {
            problems.push(format!("tls.agent_ca: {e}"));
        }
    }

    /// The name, and a certificate made once from the issuer's files (which proves that the
    /// key is PKCS#8 and signs for the certificate).
    fn validate_minting(&self, problems: &mut Vec<String>) {
        let (Some(name), Some(cert), Some(key)) = (&self.name, &self.issuer_cert, &self.issuer_key)
        else {
            problems.push(
                "tls.name, tls.issuer_cert and tls.issuer_key are set together or not at all"
                    .into(),
            );
            return;
        };
        if let Err(e) = agent_peer_name(name) {
            problems.push(e);
            return;
        }
        if let Err(e) = Presented::minted(name, cert, key) {
            problems.push(format!("tls.issuer_cert/tls.issuer_key: {e}"));
        }
    }
}

/// The name in the certificate an agent called `name` makes itself: `<name>.agent.shoal`,
/// lowercased. `name` is a host name, such as a Kubernetes node's (labels of letters, digits
/// and hyphens joined by dots); whatever it holds, the suffix makes it an agent's.
pub fn agent_peer_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    let full = format!("{lower}{AGENT_SUFFIX}");
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if full.len() <= 253 && lower.split('.').all(label) {
        Ok(full)
    } else {
        Err(format!(
            "tls.name {name:?} is not a host name (labels of at most 63 letters, digits and \
             hyphens, joined by dots)"
        ))
    }
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS is configured without {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("cannot make this part's certificate: {0}")]
    SelfIssue(String),
}

/// The crypto provider of every TLS connection Shoal makes or takes: ring, which already
/// signs and verifies metainfo, with AES-128-GCM preferred (as safe for this use, and
/// cheaper per byte of piece than AES-256).
///
/// rustls marks ring's provider deprecated because it offers no post-quantum key exchange;
/// that is the one thing given up by not carrying a second crypto library.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            #[allow(deprecated)]
            let mut p = rustls::crypto::ring::default_provider();
            p.cipher_suites
                .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
            Arc::new(p)
        })
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "no CERTIFICATE in the file".into(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let pem = read(key)?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let ck = CertifiedKey::from_der(chain, der, &provider())?;
    // A certificate that cannot be parsed at all is refused here, not at the first handshake.
    ParsedCertificate::try_from(ck.end_entity_cert()?)?;
    Ok(ck)
}

/// The trust anchors of a PEM CA bundle.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: format!("not a CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// A certificate and key read from files, and read again when either file changes (looked
/// at no more than once per [`RELOAD_CHECK`], on the next handshake). A changed pair that
/// cannot be used (half-written, mismatched) is logged and the previous one kept.
pub struct ReloadingKey {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<KeyState>,
}

struct KeyState {
    current: Arc<CertifiedKey>,
    stamp: Option<(SystemTime, SystemTime)>,
    checked: Instant,
}

impl fmt::Debug for ReloadingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingKey")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

fn stamp(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

impl ReloadingKey {
    pub fn open(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = stamp(cert, key);
        let current = Arc::new(load_certified_key(cert, key)?);
        Ok(ReloadingKey {
            cert: cert.to_owned(),
            key: key.to_owned(),
            state: Mutex::new(KeyState {
                current,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to present now: reloaded first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.checked.elapsed() >= RELOAD_CHECK {
            st.checked = Instant::now();
            let now = stamp(&self.cert, &self.key);
            if now.is_some() && now != st.stamp {
                match load_certified_key(&self.cert, &self.key) {
                    Ok(ck) => {
                        st.stamp = now;
                        st.current = Arc::new(ck);
                        tracing::info!(cert = %self.cert.display(), "certificate reloaded");
                    }
                    // Perhaps half-written: looked at again at the next check.
                    Err(e) => tracing::warn!(
                        cert = %self.cert.display(),
                        error = %e,
                        "changed certificate cannot be used; keeping the previous one"
                    ),
                }
            }
        }
        st.current.clone()
    }
}

impl ResolvesServerCert for ReloadingKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingKey {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What a part presents: a certificate from files, or one it makes itself.
#[derive(Debug)]
enum Presented {
    Files(ReloadingKey),
    #[cfg(any(test, feature = "issue"))]
    Minted(self_issue::SelfIssued),
}

impl Presented {
    #[cfg(any(test, feature = "issue"))]
    fn minted(name: &str, issuer_cert: &Path, issuer_key: &Path) -> Result<Self, TlsError> {
        Ok(Presented::Minted(self_issue::SelfIssued::open(
            name,
            issuer_cert,
            issuer_key,
        )?))
    }

    #[cfg(not(any(test, feature = "issue")))]
    fn minted(_name: &str, _issuer_cert: &Path, _issuer_key: &Path) -> Result<Self, TlsError> {
        Err(TlsError::SelfIssue(
            "this part is built without the means to make certificates: give it tls.cert and \
             tls.key"
                .into(),
        ))
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self {
            Presented::Files(k) => k.current(),
            #[cfg(any(test, feature = "issue"))]
            Presented::Minted(m) => m.current(),
        }
    }
}

impl ResolvesServerCert for Presented {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Presented {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A part's TLS, built from its `[tls]` table: what it presents and whom it trusts.
#[derive(Debug, Clone)]
pub struct Tls {
    key: Option<Arc<Presented>>,
    /// `tls.ca`: servers, and peers of any kind.
    roots: Option<Arc<RootCertStore>>,
    /// `tls.ca` and `tls.agent_ca`: what a peer's chain may lead to.
    peer_roots: Option<Arc<RootCertStore>>,
    /// `tls.agent_ca` is trusted too: a chain naming an origin must lead to `tls.ca` alone.
    agents_apart: bool,
}

impl Tls {
    /// `None` when the table says plaintext.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Tls>, TlsError> {
        if config.plaintext {
            return Ok(None);
        }
        let key = match (&config.cert, &config.key) {
            (Some(c), Some(k)) => Some(Arc::new(Presented::Files(ReloadingKey::open(c, k)?))),
            _ => match (&config.name, &config.issuer_cert, &config.issuer_key) {
                (Some(name), Some(c), Some(k)) => Some(Arc::new(Presented::minted(name, c, k)?)),
                _ => None,
            },
        };
        let roots = match &config.ca {
            Some(ca) => Some(Arc::new(load_roots(ca)?)),
            None => None,
        };
        let peer_roots = match (&roots, &config.agent_ca) {
            (Some(r), Some(agents)) => {
                let mut all = RootCertStore::clone(r);
                all.roots.extend(load_roots(agents)?.roots);
                Some(Arc::new(all))
            }
            (r, _) => r.clone(),
        };
        Ok(Some(Tls {
            key,
            roots,
            peer_roots,
            agents_apart: config.agent_ca.is_some(),
        }))
    }

    fn key(&self) -> Result<Arc<Presented>, TlsError> {
        self.key
            .clone()
            .ok_or(TlsError::Missing("tls.cert and tls.key"))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        self.roots.clone().ok_or(TlsError::Missing("tls.ca"))
    }

    fn peer_roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        self.peer_roots.clone().ok_or(TlsError::Missing("tls.ca"))
    }

    /// The certificate this part presents now.
    pub fn current(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        Ok(self.key()?.current())
    }

    /// An HTTPS server (no client certificates: callers authenticate with tokens).
    pub fn http_server(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.key()?);
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// An HTTPS client that verifies servers against `tls.ca`.
    pub fn http_client(&self) -> Result<rustls::ClientConfig, TlsError> {
        let roots = self.roots()?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// The accepting side of the peer protocol: TLS 1.3, a client certificate from `tls.ca`
    /// required. Whose it is ([`PeerIdentity`]) is the caller's to check.
    pub fn peer_server(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.peer_roots()?, provider()).build()?;
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.key()?);
        Ok(Arc::new(cfg))
    }

    /// The dialling side of the peer protocol: TLS 1.3, this part's certificate presented,
    /// the peer's chain verified against `tls.ca`. The peer is dialled by address, not name:
    /// whose certificate it is ([`PeerIdentity`]) is the caller's to check.
    pub fn peer_client(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let verifier = Arc::new(ChainOnly {
            roots: self.peer_roots()?,
            algs: provider().signature_verification_algorithms,
        });
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(self.key()?);
        Ok(Arc::new(cfg))
    }

    /// Who the peer at the other end of a finished handshake is, from the chain it presented
    /// (already verified against the peer roots by the handshake). A certificate that names
    /// an origin must lead to `tls.ca` itself, not to an agents-only CA.
    pub fn peer_identity(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<PeerIdentity, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
        let identity = PeerIdentity::of(leaf)?;
        if identity.origin && self.agents_apart {
            let roots = self.roots.as_ref().ok_or(IdentityError::NotAnOrigin)?;
            let parsed = ParsedCertificate::try_from(leaf)
                .map_err(|e| IdentityError::Parse(e.to_string()))?;
            verify_server_cert_signed_by_trust_anchor(
                &parsed,
                roots,
                &chain[1..],
                UnixTime::now(),
                provider().signature_verification_algorithms.all,
            )
            .map_err(|_| IdentityError::NotAnOrigin)?;
        }
        Ok(identity)
    }

    /// This part's own peer identity, from the certificate it presents now.
    pub fn identity(&self) -> Result<PeerIdentity, TlsError> {
        let ck = self.current()?;
        Ok(PeerIdentity::of(ck.end_entity_cert()?)?)
    }
}

/// A reqwest client builder for calls between parts: HTTPS verified against `tls.ca` when
/// `tls` is given, plain HTTP otherwise (an `https://` URL then fails: nothing is trusted).
/// Every client in Shoal is made here, so that all of them use the one crypto provider.
pub fn client_builder(tls: Option<&Tls>) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(match tls {
        Some(t) => reqwest::Client::builder().tls_backend_preconfigured(t.http_client()?),
        None => plain_client_builder(),
    })
}

/// A reqwest client builder for plain HTTP (tests and tools): no CA is trusted, so an
/// `https://` URL fails.
pub fn plain_client_builder() -> reqwest::ClientBuilder {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(cfg)
}

/// A plain-HTTP client with reqwest's defaults (tests and tools).
pub fn client() -> reqwest::Client {
    plain_client_builder()
        .build()
        .expect("a client without TLS material builds")
}

/// Verifies a server's chain against the roots and nothing else: the peer protocol checks
/// the name itself ([`PeerIdentity`]), since a peer is dialled by address.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Who a peer certificate says its holder is: the one name in it that ends in
/// [`AGENT_SUFFIX`] or [`ORIGIN_SUFFIX`], and the peer id derived from that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub name: String,
    pub id: PeerId,
    pub origin: bool,
}

/// Why a certificate names no peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
    #[error(
        "the certificate names no peer (no DNS name ending in {AGENT_SUFFIX} or {ORIGIN_SUFFIX})"
    )]
    None,
    #[error("the certificate names more than one peer: {0} and {1}")]
    Several(String, String),
    #[error("no certificate was presented")]
    NoCertificate,
    #[error("the certificate names an origin but is not from the cluster's CA")]
    NotAnOrigin,
}

impl PeerIdentity {
    /// The id of the peer named `name` (`node-7.agent.shoal`): the first 20 bytes of the
    /// name's SHA-256. The same name, the same id, whichever certificate carries it, so a
    /// renewed certificate keeps its holder's id.
    pub fn id_of(name: &str) -> PeerId {
        let h = Sha256::digest(name.as_bytes());
        let mut id = [0u8; 20];
        id.copy_from_slice(&h[..20]);
        PeerId(id)
    }

    /// The identity of a certificate's holder. Only call it on a certificate whose chain was
    /// verified (the TLS handshake did).
    pub fn of(cert: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
        let mut found: Option<String> = None;
        for name in webpki_names(cert)? {
            let lower = name.to_ascii_lowercase();
            if lower.ends_with(AGENT_SUFFIX) || lower.ends_with(ORIGIN_SUFFIX) {
                if let Some(first) = found {
                    return Err(IdentityError::Several(first, lower));
                }
                found = Some(lower);
            }
        }
        let name = found.ok_or(IdentityError::None)?;
        Ok(PeerIdentity {
            id: Self::id_of(&name),
            origin: name.ends_with(ORIGIN_SUFFIX),
            name,
        })
    }
}

/// The DNS names of a certificate's subject alternative names.
fn webpki_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, IdentityError> {
    let ee =
        webpki::EndEntityCert::try_from(cert).map_err(|e| IdentityError::Parse(e.to_string()))?;
    Ok(ee.valid_dns_names().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests;
