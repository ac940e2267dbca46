//! What Shoal's system tests and benchmark programs share beyond the cluster launcher
//! (`shoal_cluster`, which starts the parts, finds their binaries and reads their metrics
//! for these too): real programs run with deadlines, daemons that are always stopped by
//! their pid, and images written by the tests themselves.
//!
//! - [`process`]: [`process::Cmd`] runs a program to completion within a deadline;
//!   [`process::Daemon`] keeps one running (dockerd, containerd) and stops it on drop;
//!   [`process::require`] fails a test that needs a program which is not installed, naming
//!   its package.
//! - [`oci`]: tar layers and OCI image layouts (images, two-platform indexes).
//! - [`data`]: deterministic incompressible bytes and the checksum the test image prints.
//! - [`bench`]: what only the benchmark programs (`src/bin/swarm-bench.rs`,
//!   `src/bin/registry-bench.rs`) need: timed downloads, `/proc` CPU and memory,
//!   percentiles. Benchmarks print figures and are not part of `./test.sh`;
//!   `BENCHMARKS.md` says how to run them.
//! - [`bins()`]: the parts' binaries for a test, built as the test run built them.
//!
//! The tests that need root or programs other than Rust (`tests/e2e`, `tests/deploy`, and in
//! the parts' crates `clients`, `full_disk`, `sigterm`) are built only with the
//! `system-tests` feature of their crate, which `./test.sh` turns on.
//!
//! Failures panic with a message that says what could not be done and why: this crate runs
//! inside tests and benchmark programs only.
#![forbid(unsafe_code)]

pub mod bench;
pub mod data;
pub mod oci;
pub mod process;

/// The features `./test.sh` builds the workspace with (its `FEATURES` line).
pub const SYSTEM_TEST_FEATURES: [&str; 5] = [
    "shoal-tests/system-tests",
    "shoal-origin/system-tests",
    "shoal-tracker/system-tests",
    "shoal-agent/system-tests",
    "shoal-proxy/system-tests",
];

/// The parts' binaries for a test ([`shoal_cluster::Bins::for_tests`]): `$SHOAL_BIN_DIR`,
/// or built into the target directory this test runs from with the features this crate was
/// built with, so that under `./test.sh` nothing is compiled again. Fails the test if they
/// cannot be had.
pub fn bins() -> shoal_cluster::Bins {
    let features: &[&str] = if cfg!(feature = "system-tests") {
        &SYSTEM_TEST_FEATURES
    } else {
        &[]
    };
    shoal_cluster::Bins::for_tests(features).unwrap_or_else(|e| panic!("the parts' binaries: {e}"))
}
