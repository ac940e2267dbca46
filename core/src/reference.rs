//! Repository names, tags and references, checked against the OCI distribution-spec grammar.
//!
//! ```text
//! name      = path-component ("/" path-component)*        at most 255 characters
//! component = [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
//! tag       = [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//! reference = tag | digest
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{Digest, DigestError};

/// The longest repository name accepted. The spec leaves the limit to registries; 255 is
/// what clients and the reference registry use.
pub const NAME_MAX_LEN: usize = 255;
/// The longest tag the grammar allows.
pub const TAG_MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is longer than {NAME_MAX_LEN} characters")]
    TooLong,
    #[error("repository name component {0:?} is invalid")]
    Component(String),
    #[error("tag is invalid: it must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag,
    #[error("reference is neither a tag nor a digest: {0}")]
    Reference(DigestError),
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*`
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !is_alnum(first) || !is_alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or any number of "-". It is followed by an
        // alphanumeric because the component ends in one.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !b.get(i).copied().is_some_and(is_alnum) {
            return false;
        }
    }
    true
}

/// A repository name such as `library/alpine`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > NAME_MAX_LEN {
            return Err(NameError::TooLong);
        }
        if let Some(bad) = s.split('/').find(|c| !is_path_component(c)) {
            return Err(NameError::Component(bad.chars().take(64).collect()));
        }
        Ok(RepoName(s.to_owned()))
    }
}

/// A tag such as `latest` or `v1.2.3`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= TAG_MAX_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::Tag)
        }
    }
}

/// What follows `/manifests/` in a URL: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;

    /// A colon cannot appear in a tag, so its presence decides which one is meant.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse()
                .map(Reference::Digest)
                .map_err(NameError::Reference)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

macro_rules! string_newtype {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(RepoName);
string_newtype!(Tag);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_spec_examples() {
        for ok in [
            "a",
            "library/alpine",
            "my-org/my_app/sub.dir",
            "a__b",
            "a---b",
            "0/1/2",
            "ghcr.io",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "", "A", "a/", "/a", "a//b", "-a", "a-", "a___b", "a..b", "a._b", "a b", "a:b", "a/B",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?}");
        }
        assert_eq!("a".repeat(256).parse::<RepoName>(), Err(NameError::TooLong));
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"t".repeat(129)] {
            assert_eq!(bad.parse::<Tag>(), Err(NameError::Tag), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        let d = Digest::sha256_of(b"m");
        assert_eq!(d.to_string().parse(), Ok(Reference::Digest(d)));
        assert!(matches!(
            "sha256:zz".parse::<Reference>(),
            Err(NameError::Reference(_))
        ));
    }

    const COMPONENT: &str = "[a-z0-9]{1,5}((\\.|_|__|-{1,3})[a-z0-9]{1,5}){0,3}";

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = s.parse::<RepoName>();
            let _ = s.parse::<Tag>();
            let _ = s.parse::<Reference>();
        }

        #[test]
        fn grammar_names_are_accepted(parts in proptest::collection::vec(COMPONENT, 1..6)) {
            let name = parts.join("/");
            prop_assert!(name.parse::<RepoName>().is_ok(), "{}", name);
        }

        #[test]
        fn grammar_tags_are_accepted(t in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            prop_assert!(t.parse::<Tag>().is_ok());
            prop_assert!(matches!(t.parse::<Reference>(), Ok(Reference::Tag(_))));
        }

        #[test]
        fn an_uppercase_letter_makes_a_name_invalid(
            a in COMPONENT, b in "[A-Z]", c in COMPONENT,
        ) {
            let name = format!("{a}{b}{c}");
            prop_assert!(name.parse::<RepoName>().is_err());
        }
    }
}
