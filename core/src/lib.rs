//! What every Shoal part shares.
//!
//! - [`auth`]: the cluster's credentials (write and read tokens, the metainfo key).
//! - [`digest`]: `algorithm:hex` digests and verifying hashers.
//! - [`reference`]: repository names, tags and references by the distribution-spec grammar.
//! - [`distribution`]: which resource a `/v2/…` path names, and the API's header names.
//! - [`metainfo`]: piece layout and piece hashes of a blob, and their binary encoding.
//! - [`signature`]: signed metainfo: the origins' signing key, the agents' trusted keys.
//! - [`store`]: the content-addressed blob store on disk.
//! - [`ring`]: rendezvous placement of blobs and tags on origins.
//! - [`peer`]: peer ids and the tracker's announce messages.
//! - [`handout`]: the tracker's handout policy, which peers an announcing peer is told about.
//! - [`origin_client`]: the client of the origins' HTTP API (`origin/API.md`).
//! - [`error`]: the OCI error envelope and the HTTP error type of every server.
//! - [`range`]: HTTP `Range` requests on blobs.
//! - [`config`], [`units`], [`cli`]: layered config loading with human units; common flags,
//!   and typed flags set on a part's config.
//! - [`lifecycle`]: the one shape of a part (`start`, `wait`) and the `main` every binary
//!   shares; [`tasks`]: tracked tasks that end on shutdown, and the one periodic loop.
//! - [`tls`]: the `[tls]` table, HTTPS between parts, and the peer protocol's mutual TLS with
//!   peer ids bound to certificates.
//! - [`telemetry`]: logging, `/health` `/ready` `/metrics`, serving and shutdown.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod digest;
pub mod distribution;
pub mod error;
pub mod handout;
pub mod lifecycle;
pub mod metainfo;
pub mod origin_client;
pub mod peer;
pub mod range;
pub mod reference;
pub mod ring;
pub mod signature;
pub mod store;
pub mod tasks;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod units;

pub use digest::{Algorithm, Digest, DigestError, DigestMismatch};
pub use error::{ApiError, ErrorCode};
pub use metainfo::Metainfo;
pub use reference::{NameError, Reference, RepoName, Tag};
