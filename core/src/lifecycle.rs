//! One lifecycle for every part, and the `main` they share.
//!
//! Each part (`Origin`, `Tracker`, `Agent`, `Proxy`) is started with
//! `X::start(config, listeners, registry, shutdown)`: the caller binds the listeners (tests
//! bind port 0 and never race for a port), makes the metrics registry and owns the shutdown
//! token. `start` returns once the part serves; `x.wait()` returns once `shutdown` is
//! cancelled and everything has stopped; `x.stop()` is both, and dropping a running part
//! stops it too. Each crate's `run` is `start` then `wait`. [`Part`] names that shape, so
//! that [`main`] is every binary's.
//!
//! Exit statuses: 0 after a clean shutdown; [`EX_CONFIG`] (64) when the config or the flags
//! are to blame, whether the loader found it or `start` did; 1 for anything else (a port in
//! use, a disk that fails).

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use prometheus::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{CommonArgs, exit_code};
use crate::config::{EX_CONFIG, Validate};

/// A Shoal part as its binary runs it.
pub trait Part: Sized + Send + 'static {
    /// The binary's name, for messages: `shoal-origin`.
    const NAME: &'static str;
    /// The prefix of the part's config variables: `SHOAL_ORIGIN_`.
    const ENV_PREFIX: &'static str;
    type Config: Serialize + DeserializeOwned + Validate + Send;
    /// The sockets the part serves, bound by the caller.
    type Listeners: Send;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Binds the sockets `config` names.
    fn bind(
        config: &Self::Config,
    ) -> impl Future<Output = Result<Self::Listeners, BindError>> + Send;

    /// Starts serving `listeners` and the part's background tasks; returns once it serves.
    fn start(
        config: Self::Config,
        listeners: Self::Listeners,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Waits until `shutdown` has been cancelled and everything has stopped.
    fn wait(self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether the config is to blame for `error` (exit [`EX_CONFIG`]).
    fn is_config_error(error: &Self::Error) -> bool;
}

/// Implements [`Part`] for a part from what it has anyway: its inherent `start` and `wait`,
/// its error type's `is_config`, and an async function that binds its listeners.
///
/// ```ignore
/// shoal_core::part!(Origin: Config, Listeners, Error; "shoal-origin", config::ENV_PREFIX, Listeners::bind);
/// ```
#[macro_export]
macro_rules! part {
    ($part:ty : $config:ty, $listeners:ty, $error:ty; $name:literal, $env:expr, $bind:path) => {
        impl $crate::lifecycle::Part for $part {
            const NAME: &'static str = $name;
            const ENV_PREFIX: &'static str = $env;
            type Config = $config;
            type Listeners = $listeners;
            type Error = $error;

            async fn bind(config: &$config) -> Result<$listeners, $crate::lifecycle::BindError> {
                $bind(config).await
            }

            async fn start(
                config: $config,
                listeners: $listeners,
                registry: $crate::lifecycle::__private::Registry,
                shutdown: $crate::lifecycle::__private::CancellationToken,
            ) -> Result<Self, $error> {
                <$part>::start(config, listeners, registry, shutdown).await
            }

            async fn wait(self) -> Result<(), $error> {
                <$part>::wait(self).await
            }

            fn is_config_error(error: &$error) -> bool {
                error.is_config()
            }
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use prometheus::Registry;
    pub use tokio_util::sync::CancellationToken;
}

/// A socket that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr`; `what` says which of the part's sockets it is, for the error.
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}

/// Every part's `main` after parsing its flags: loads the config (the file, the
/// environment, `--set`, then `flags` onto the typed config) or checks it
/// (`--check-config`), binds, starts, waits for SIGTERM or SIGINT and drains.
pub fn main<P: Part>(common: &CommonArgs, flags: impl Fn(&mut P::Config)) -> ExitCode {
    let config = match common.start(P::NAME, || common.load(P::ENV_PREFIX, &flags)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: cannot start the runtime: {e}", P::NAME);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve::<P>(config))
}

async fn serve<P: Part>(config: P::Config) -> ExitCode {
    let listeners = match P::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "{} failed", P::NAME);
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let signals = crate::telemetry::cancel_on_signal(shutdown.clone());
    let result = match P::start(config, listeners, Registry::new(), shutdown.clone()).await {
        Ok(part) => part.wait().await,
        Err(e) => Err(e),
    };
    shutdown.cancel();
    if let Err(e) = signals.await {
        tracing::warn!(error = %e, "the signal watcher failed");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if P::is_config_error(&e) => {
            eprintln!("{}: {e}", P::NAME);
            exit_code(EX_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = chain(&e), "{} failed", P::NAME);
            ExitCode::FAILURE
        }
    }
}

/// An error with its chain of causes, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}
