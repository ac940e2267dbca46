//! What the benchmark programs (`swarm-bench`, `registry-bench`) share. Benchmarks print
//! figures; nothing here asserts a time. The cluster they measure (origins, a tracker, a
//! proxy and agents of the release binaries on free 127.0.0.1 ports) is the cluster
//! launcher's ([`shoal_cluster::Cluster`]), and so are `/ready` and `/metrics`.
//!
//! - [`http`]: blob uploads to an origin or a registry, and timed downloads through a
//!   registry API with the body checked against its digest.
//! - [`blob`]: random blobs written to disk with their digest.
//! - [`sys`]: the machine, and CPU time and peak memory of processes from `/proc`.
//! - [`stats`]: percentiles, and the bound a download time is set against.
//! - [`workdir`]: the run's directory, removed or stripped to its configs and logs at the end.
//! - [`error`]: the benchmarks' error type.

pub mod blob;
pub mod error;
pub mod http;
pub mod stats;
pub mod sys;
pub mod workdir;

pub use error::BenchError;

use std::future::Future;
use std::process::ExitCode;

/// A bench program's `main`: runs `body` on a multi-thread runtime until it ends or SIGINT
/// or SIGTERM arrives; either way the processes it started are stopped as its future is
/// dropped. An error is printed after the program's `name`.
pub fn main_until_signal<F>(name: &str, body: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot watch SIGTERM: {e}"))?;
        tokio::select! {
            r = body => r,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; stopping what was started"),
            _ = term.recv() => anyhow::bail!("terminated; stopping what was started"),
        }
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The benchmarks' result.
pub type Result<T> = std::result::Result<T, BenchError>;
