//! A whole Shoal cluster on this machine, from the parts' binaries: the one launcher behind
//! the local cluster (`deploy/devcluster.sh`, this crate's `shoal-cluster` binary), the
//! end-to-end tests and the benchmarks. The same code path serves them all; only the
//! [`Spec`] differs (fixed, documented ports for the local cluster, free ones elsewhere).
//!
//! - [`bins`]: where the parts' binaries are, for programs and for tests in any crate.
//! - [`spec`]: what to start and on which ports ([`Spec`], [`Plan`], [`spec::local`]).
//! - [`dir`]: a cluster's directory: configs, data, logs, pid files, the recorded shape.
//! - [`credentials`]: the tokens, the metainfo key pair and the proxy's login, made once.
//! - [`tls`]: a cluster's own CA and a certificate per part, when it runs over TLS.
//! - [`config`]: each part's config file.
//! - [`cluster`]: [`Cluster`]: start in order, wait for `/ready`, stop by pid, or detach.
//! - [`process`]: background processes with a log, stopped by pid.
//! - [`http`]: a blocking client for `/ready`, `/metrics` and small requests, HTTP or HTTPS.
//! - [`registry`]: pushes and verified pulls through the registry API.
//! - [`image`]: tar layers and the demo's OCI image layout.
//! - [`figures`]: where the agents' piece bytes came from, from `/metrics`.
#![forbid(unsafe_code)]

pub mod bins;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod dir;
pub mod error;
pub mod figures;
pub mod http;
pub mod image;
pub mod process;
pub mod registry;
pub mod spec;
pub mod tls;

pub use bins::Bins;
pub use cluster::Cluster;
pub use credentials::{Credentials, PROXY_USER};
pub use dir::ClusterDir;
pub use error::{LaunchError, Result};
pub use spec::{Backend, Member, Plan, Ports, Rate, Role, Spec};
