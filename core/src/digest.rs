//! Content digests (`algorithm:encoded`) by the OCI image-spec grammar, and hashing that
//! checks bytes as they stream past.
//!
//! The grammar admits any algorithm name; Shoal stores and verifies only the two the spec
//! registers, `sha256` and `sha512`, and rejects the rest as unsupported rather than
//! pretending to verify them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A hash algorithm Shoal can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the raw hash in bytes.
    pub fn hash_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string is not a digest Shoal accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest does not match the grammar algorithm:encoded")]
    Syntax,
    #[error("digest algorithm {0:?} is not supported (sha256 and sha512 are)")]
    UnsupportedAlgorithm(String),
    #[error("{algorithm} digest must be {expected} lowercase hex characters")]
    Encoding {
        algorithm: Algorithm,
        expected: usize,
    },
}

/// The content did not hash to what it was named by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("content digest mismatch: expected {expected}, got {actual}")]
pub struct DigestMismatch {
    pub expected: Digest,
    pub actual: Digest,
}

/// A verified-format digest. Cheap to copy; compares and hashes by value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Digest {
    Sha256([u8; 32]),
    Sha512([u8; 64]),
}

impl Digest {
    /// SHA-256 of a byte slice held in memory (small things: manifests, test data).
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Digest::Sha256(sha2::Sha256::digest(bytes).into())
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Digest::Sha256(_) => Algorithm::Sha256,
            Digest::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Digest::Sha256(b) => b,
            Digest::Sha512(b) => b,
        }
    }

    /// The encoded part, lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// Builds a digest from an algorithm and its raw hash bytes.
    pub fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Option<Self> {
        match algorithm {
            Algorithm::Sha256 => raw.try_into().ok().map(Digest::Sha256),
            Algorithm::Sha512 => raw.try_into().ok().map(Digest::Sha512),
        }
    }

    /// A hasher of the same algorithm, for checking content against this digest.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            expected: *self,
            hasher: Hasher::new(self.algorithm()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn is_algorithm_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `algorithm-component (algorithm-separator algorithm-component)*`
fn is_algorithm(s: &str) -> bool {
    s.split(['+', '.', '_', '-']).all(is_algorithm_component)
}

/// `[a-zA-Z0-9=_-]+`
fn is_encoded(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, encoded) = s.split_once(':').ok_or(DigestError::Syntax)?;
        if !is_algorithm(algorithm) || !is_encoded(encoded) {
            return Err(DigestError::Syntax);
        }
        let algorithm = Algorithm::from_name(algorithm)
            .ok_or_else(|| DigestError::UnsupportedAlgorithm(algorithm.to_owned()))?;
        let expected = algorithm.hash_len() * 2;
        let bad = DigestError::Encoding {
            algorithm,
            expected,
        };
        // The registered algorithms allow lowercase hex only; uppercase would make two
        // names for one blob.
        if encoded.len() != expected
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad);
        }
        let raw = hex::decode(encoded).map_err(|_| bad.clone())?;
        Digest::from_raw(algorithm, &raw).ok_or(bad)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A streaming hash of one of the supported algorithms. SHA-256 uses the CPU's SHA
/// instructions where it has them.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finalize(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::Sha256(h.finalize().into()),
            Hasher::Sha512(h) => Digest::Sha512(h.finalize().into()),
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Hasher").finish()
    }
}

/// Hashes bytes as they pass and, at the end, says whether they were what was expected.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected: Digest,
    hasher: Hasher,
}

impl Verifier {
    pub fn expected(&self) -> Digest {
        self.expected
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    pub fn finish(self) -> Result<(), DigestMismatch> {
        let actual = self.hasher.finalize();
        if actual == self.expected {
            Ok(())
        } else {
            Err(DigestMismatch {
                expected: self.expected,
                actual,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::sha256_of(b""));
    }

    #[test]
    fn parses_sha512() {
        let s = format!("sha512:{}", "ab".repeat(64));
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha512);
        assert_eq!(d.to_string(), s);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:abc",
            "sha256:xyz!",
            "sha256::abc",
            "sha256+:abc",
        ] {
            assert_eq!(bad.parse::<Digest>(), Err(DigestError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn rejects_wrong_length_or_case() {
        let upper = EMPTY.to_uppercase().replacen("SHA256", "sha256", 1);
        for bad in [&EMPTY[..EMPTY.len() - 1], upper.as_str()] {
            assert!(matches!(
                bad.parse::<Digest>(),
                Err(DigestError::Encoding { .. })
            ));
        }
    }

    #[test]
    fn grammar_valid_but_unknown_algorithm_is_unsupported() {
        assert_eq!(
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm("multihash+base58".into()))
        );
    }

    #[test]
    fn verifier_detects_mismatch() {
        let d = Digest::sha256_of(b"hello");
        let mut v = d.verifier();
        v.update(b"hel");
        v.update(b"lo");
        assert!(v.finish().is_ok());
        let mut v = d.verifier();
        v.update(b"hellO");
        let err = v.finish().unwrap_err();
        assert_eq!(err.expected, d);
        assert_eq!(err.actual, Digest::sha256_of(b"hellO"));
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::sha256_of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,200}") {
            let _ = s.parse::<Digest>();
        }

        #[test]
        fn accepts_every_valid_sha256(raw in proptest::array::uniform32(any::<u8>())) {
            let s = format!("sha256:{}", hex::encode(raw));
            let d: Digest = s.parse().unwrap();
            prop_assert_eq!(d.as_bytes(), &raw[..]);
            prop_assert_eq!(d.to_string(), s);
        }

        #[test]
        fn grammar_valid_strings_never_get_a_syntax_error(
            alg in "[a-z0-9]{1,8}([+._-][a-z0-9]{1,8}){0,2}",
            enc in "[a-zA-Z0-9=_-]{1,130}",
        ) {
            let r = format!("{alg}:{enc}").parse::<Digest>();
            prop_assert!(!matches!(r, Err(DigestError::Syntax)));
        }

        #[test]
        fn strings_outside_the_grammar_get_a_syntax_error(
            alg in "[a-z0-9]{1,8}",
            enc in "[a-f0-9]{0,10}[^a-zA-Z0-9=_:-][a-f0-9]{0,10}",
        ) {
            prop_assert_eq!(format!("{alg}:{enc}").parse::<Digest>(), Err(DigestError::Syntax));
        }
    }
}
