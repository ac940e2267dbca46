//! What Shoal's end-to-end tests and benchmark programs share: real programs run with
//! deadlines, daemons that are always stopped by their pid, the local cluster of
//! `deploy/devcluster.sh`, and images written by the tests themselves.
//!
//! - [`process`]: [`process::Cmd`] runs a program to completion within a deadline;
//!   [`process::Daemon`] keeps one running (dockerd, containerd) and stops it on drop;
//!   [`process::require`] fails a test that needs a program which is not installed.
//! - [`devcluster`]: [`devcluster::DevCluster`] brings the script's cluster up in a
//!   directory of its own and always takes it down again; [`devcluster::binaries`] builds
//!   the parts' binaries the way `cargo test --workspace` does.
//! - [`http`]: a blocking `GET` for `/metrics` and `/ready`.
//! - [`oci`]: tar layers and OCI image layouts (images, two-platform indexes).
//! - [`data`]: deterministic incompressible bytes and the checksum the test image prints.
//! - [`bench`]: what only the benchmark programs (`src/bin/swarm-bench.rs`,
//!   `src/bin/registry-bench.rs`) need: a cluster of the release binaries on free ports,
//!   timed downloads, `/proc` CPU and memory, percentiles. Benchmarks print figures and are
//!   not part of `./test.sh`; `BENCHMARKS.md` says how to run them.
//!
//! Failures panic with a message that says what could not be done and why: this crate runs
//! inside tests and benchmark programs only.
#![forbid(unsafe_code)]

pub mod bench;
pub mod data;
pub mod devcluster;
pub mod http;
pub mod oci;
pub mod process;
