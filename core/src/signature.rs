//! Signed metainfo: origins sign every metainfo they serve with the cluster's Ed25519 key,
//! trackers pass the signed form through untouched, and agents verify it against the
//! public keys they were given before a download starts. Piece hashes then come from the
//! origins whoever carried them (`p2p/PROTOCOL.md`, "Metainfo trust").
//!
//! The signed form, all integers big-endian:
//!
//! ```text
//! [u8; 4]  magic "SHSM"
//! u8       envelope version (1)
//! [u8; 8]  key id: the first 8 bytes of SHA-256 of the raw 32-byte public key
//! [u8; 64] Ed25519 signature of  "shoal metainfo signature v1\0" ‖ key id ‖ metainfo
//! ...      the metainfo's own encoding (`Metainfo::encode`), to the end
//! ```
//!
//! The signature covers the exact bytes that are decoded, behind a prefix that names what
//! they are and the envelope's version, so a signature made for anything else (or for a
//! later version) never verifies as one of these. An unsigned metainfo (what an origin
//! without a key serves) starts with the metainfo's version byte, 1, never with the magic.
//!
//! Keys are PEM: the private key as PKCS#8 (`openssl genpkey -algorithm ed25519`, which
//! writes the v1 form without the public key), public keys as `PUBLIC KEY` blocks
//! (`openssl pkey -pubout`) or as `CERTIFICATE` blocks whose subject key is Ed25519 (the
//! certificate is only a container here: its validity and issuer are not checked).

use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sha2::Digest as _;

use crate::digest::Digest;
use crate::metainfo::{Metainfo, MetainfoError};

const MAGIC: [u8; 4] = *b"SHSM";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"shoal metainfo signature v1\0";
const KEY_ID_LEN: usize = 8;
const SIGNATURE_LEN: usize = 64;
const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_ID_LEN + SIGNATURE_LEN;
/// DER of an Ed25519 SubjectPublicKeyInfo up to its 32 key bytes (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Names the key a metainfo was signed with, so that a refusal can say which.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    fn of(public: &[u8]) -> Self {
        let h = sha2::Sha256::digest(public);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&h[..KEY_ID_LEN]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A key that cannot be used: named in config errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no PEM block found")]
    NoPem,
    #[error("a PEM block is not closed by its END line")]
    UnclosedPem,
    #[error("a PEM block is not base64: {0}")]
    Base64(String),
    #[error("a `{0}` PEM block is not a key this expects")]
    UnexpectedBlock(String),
    #[error("the private key is not an Ed25519 PKCS#8 key: {0}")]
    Private(String),
    #[error("a public key is not Ed25519")]
    NotEd25519,
    #[error("a certificate cannot be read: {0}")]
    Certificate(&'static str),
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

/// Why a metainfo is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("metainfo is not signed")]
    Unsigned,
    #[error("metainfo is signed by key {0}, which is not one of the configured metainfo keys")]
    UnknownKey(KeyId),
    #[error("metainfo signature does not verify with key {0}")]
    BadSignature(KeyId),
    #[error("signed metainfo envelope version {0} is not supported")]
    Version(u8),
    #[error("signed metainfo is truncated")]
    Truncated,
    #[error(transparent)]
    Metainfo(#[from] MetainfoError),
    #[error("metainfo names {actual}, not {expected}")]
    WrongDigest { expected: Digest, actual: Digest },
}

/// A metainfo as it arrived, split into its parts but not verified.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The key id and signature, if it is signed.
    pub signature: Option<(KeyId, &'a [u8; SIGNATURE_LEN])>,
    /// The metainfo's encoding.
    pub encoded: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Splits a metainfo answer: signed (`SHSM…`) or a bare encoding.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TrustError> {
        let Some(rest) = bytes.strip_prefix(&MAGIC) else {
            return Ok(Envelope {
                signature: None,
                encoded: bytes,
            });
        };
        if rest.len() < HEADER_LEN - MAGIC.len() {
            return Err(TrustError::Truncated);
        }
        if rest[0] != VERSION {
            return Err(TrustError::Version(rest[0]));
        }
        let (id, rest) = rest[1..].split_at(KEY_ID_LEN);
        let (sig, encoded) = rest.split_at(SIGNATURE_LEN);
        let mut key = [0u8; KEY_ID_LEN];
        key.copy_from_slice(id);
        let sig: &[u8; SIGNATURE_LEN] = sig.try_into().map_err(|_| TrustError::Truncated)?;
        Ok(Envelope {
            signature: Some((KeyId(key), sig)),
            encoded,
        })
    }

    /// The metainfo, decoded and checked to describe `digest`, without any look at the
    /// signature: for tools and tests, and for a tracker that only passes it on.
    pub fn metainfo_unverified(&self, digest: Digest) -> Result<Metainfo, TrustError> {
        let m = Metainfo::decode(self.encoded)?;
        if m.digest() != digest {
            return Err(TrustError::WrongDigest {
                expected: digest,
                actual: m.digest(),
            });
        }
        Ok(m)
    }
}

fn message(id: &KeyId, encoded: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(DOMAIN.len() + KEY_ID_LEN + encoded.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(&id.0);
    msg.extend_from_slice(encoded);
    msg
}

/// The origins' signing key.
pub struct MetainfoSigner {
    pair: Ed25519KeyPair,
    id: KeyId,
}

impl fmt::Debug for MetainfoSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetainfoSigner")
            .field("key_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MetainfoSigner {
    /// From a `PRIVATE KEY` PEM block holding Ed25519 PKCS#8, v1 or v2.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let blocks = pem_blocks(pem)?;
        let [(label, der)] = blocks.as_slice() else {
            return Err(KeyError::Private(format!(
                "expected one PRIVATE KEY block, found {}",
                blocks.len()
            )));
        };
        if label != "PRIVATE KEY" {
            return Err(KeyError::UnexpectedBlock(label.clone()));
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError::Private(e.to_string()))?;
        let id = KeyId::of(pair.public_key().as_ref());
        Ok(MetainfoSigner { pair, id })
    }

    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The public key as a `PUBLIC KEY` PEM block, as `openssl pkey -pubout` writes it.
    pub fn public_key_pem(&self) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.pair.public_key().as_ref());
        to_pem("PUBLIC KEY", &der)
    }

    /// The signed form of `m`.
    pub fn sign(&self, m: &Metainfo) -> Vec<u8> {
        let encoded = m.encode();
        let sig = self.pair.sign(&message(&self.id, &encoded));
        let mut out = Vec::with_capacity(HEADER_LEN + encoded.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(sig.as_ref());
        out.extend_from_slice(&encoded);
        out
    }
}

/// A freshly made key pair as PEM text: what `openssl genpkey -algorithm ed25519` and
/// `openssl pkey -pubout` would write (the private key in PKCS#8 v2 form). For test kits
/// and tools.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPairPem {
    pub private_pem: String,
    pub public_pem: String,
}

impl fmt::Debug for KeyPairPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPairPem")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

impl KeyPairPem {
    pub fn generate() -> Result<Self, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| KeyError::Generate(e.to_string()))?;
        let private_pem = to_pem("PRIVATE KEY", doc.as_ref());
        let public_pem = MetainfoSigner::from_pem(&private_pem)?.public_key_pem();
        Ok(KeyPairPem {
            private_pem,
            public_pem,
        })
    }
}

/// What an agent accepts: metainfo signed by one of its keys, and, only when `insecure`,
/// anything else that is well formed.
#[derive(Clone)]
pub struct MetainfoTrust {
    keys: Vec<(KeyId, [u8; 32])>,
    insecure: bool,
}

impl fmt::Debug for MetainfoTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetainfoTrust")
            .field(
                "keys",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// A metainfo that passed [`MetainfoTrust::accept`], with the bytes it arrived as (kept so
/// that a restart verifies them again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    pub metainfo: Metainfo,
    pub wire: Bytes,
}

impl MetainfoTrust {
    /// From PEM text holding `PUBLIC KEY` and `CERTIFICATE` blocks (empty text: no keys).
    pub fn from_pem(pem: &str, insecure: bool) -> Result<Self, KeyError> {
        let keys = if pem.trim().is_empty() {
            Vec::new()
        } else {
            public_keys(pem)?
        };
        Ok(MetainfoTrust { keys, insecure })
    }

    /// Trusts only what these signers signed (tests).
    pub fn of_signers<'a>(signers: impl IntoIterator<Item = &'a MetainfoSigner>) -> Self {
        let keys = signers
            .into_iter()
            .map(|s| {
                let mut k = [0u8; 32];
                k.copy_from_slice(s.pair.public_key().as_ref());
                (s.id, k)
            })
            .collect();
        MetainfoTrust {
            keys,
            insecure: false,
        }
    }

    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Checks a metainfo answer for `digest`: signed by a configured key over these exact
    /// bytes, well formed, and naming `digest`. When insecure, an unsigned one (or one
    /// signed by a key not configured) is accepted with a warning.
    pub fn accept(&self, wire: Bytes, digest: Digest) -> Result<Trusted, TrustError> {
        let env = Envelope::parse(&wire)?;
        let checked = match env.signature {
            None => Err(TrustError::Unsigned),
            Some((id, sig)) => match self.keys.iter().find(|(k, _)| *k == id) {
                None => Err(TrustError::UnknownKey(id)),
                Some((_, public)) => UnparsedPublicKey::new(&ED25519, public)
                    .verify(&message(&id, env.encoded), sig)
                    .map_err(|_| TrustError::BadSignature(id)),
            },
        };
        match checked {
            Ok(()) => {}
            Err(e) if self.insecure => {
                tracing::warn!(%digest, reason = %e, "accepting metainfo that no configured key vouches for (insecure = true)");
            }
            Err(e) => return Err(e),
        }
        let metainfo = env.metainfo_unverified(digest)?;
        Ok(Trusted { metainfo, wire })
    }
}

/// Every Ed25519 public key in `pem`; any other block is an error, so that a key pasted in
/// the wrong place is noticed rather than ignored.
fn public_keys(pem: &str) -> Result<Vec<(KeyId, [u8; 32])>, KeyError> {
    let mut out = Vec::new();
    for (label, der) in pem_blocks(pem)? {
        let spki = match label.as_str() {
            "PUBLIC KEY" => der.as_slice(),
            "CERTIFICATE" => certificate_spki(&der)?,
            _ => return Err(KeyError::UnexpectedBlock(label)),
        };
        let key = spki
            .strip_prefix(&ED25519_SPKI_PREFIX)
            .filter(|k| k.len() == 32)
            .ok_or(KeyError::NotEd25519)?;
        let mut k = [0u8; 32];
        k.copy_from_slice(key);
        let entry = (KeyId::of(&k), k);
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// The PEM blocks of `text` as (label, DER); text between blocks is ignored (openssl
/// writes a certificate's description there).
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        loop {
            match lines.next() {
                None => return Err(KeyError::UnclosedPem),
                Some(l) if l == end => break,
                Some(l) => b64.push_str(l),
            }
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| KeyError::Base64(e.to_string()))?;
        out.push((label.to_owned(), der));
    }
    if out.is_empty() {
        return Err(KeyError::NoPem);
    }
    Ok(out)
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One DER element at the head of its input: tag, whole element, content, what follows.
type Element<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn der_element(input: &[u8]) -> Result<Element<'_>, KeyError> {
    let bad = KeyError::Certificate("malformed DER");
    let (&tag, rest) = input.split_first().ok_or(bad.clone())?;
    let (&first, rest) = rest.split_first().ok_or(bad.clone())?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad);
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad);
    }
    let header = input.len() - rest.len();
    let (content, after) = rest.split_at(len);
    Ok((tag, &input[..header + len], content, after))
}

/// The SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 §4.1): the seventh field of
/// the TBSCertificate, counting the optional `[0]` version.
fn certificate_spki(der: &[u8]) -> Result<&[u8], KeyError> {
    const SEQUENCE: u8 = 0x30;
    let (tag, _, cert, _) = der_element(der)?;
    if tag != SEQUENCE {
        return Err(KeyError::Certificate("not a SEQUENCE"));
    }
    let (tag, _, tbs, _) = der_element(cert)?;
    if tag != SEQUENCE {
        return Err(KeyError::Certificate("no TBSCertificate"));
    }
    let mut rest = tbs;
    let (tag, _, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = der_element(rest)?.3;
    }
    let (tag, spki, _, _) = der_element(rest)?;
    if tag != SEQUENCE {
        return Err(KeyError::Certificate("no SubjectPublicKeyInfo"));
    }
    Ok(spki)
}

#[cfg(test)]
mod tests;
