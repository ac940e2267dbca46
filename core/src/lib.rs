//! What every Shoal part shares.
//!
//! - [`digest`]: `algorithm:hex` digests and verifying hashers.
//! - [`reference`]: repository names, tags and references by the distribution-spec grammar.
//! - [`metainfo`]: piece layout and piece hashes of a blob, and their binary encoding.
//! - [`peer`]: peer ids and the tracker's announce messages.
//! - [`store`]: the content-addressed blob store on disk.
#![forbid(unsafe_code)]

pub mod digest;
pub mod metainfo;
pub mod peer;
pub mod reference;
pub mod store;

pub use digest::{Algorithm, Digest, DigestError, DigestMismatch};
pub use metainfo::Metainfo;
pub use reference::{NameError, Reference, RepoName, Tag};
