//! `shoal-proxy`: reads flags and config, binds, and runs the proxy until SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use shoal_core::cli::CommonArgs;
use shoal_core::config::EX_CONFIG;
use shoal_core::telemetry::{cancel_on_signal, init_tracing};
use shoal_proxy::Config;
use shoal_proxy::config::ENV_PREFIX;
use tokio_util::sync::CancellationToken;

/// The write side of a Shoal registry: the OCI distribution API, storing on the origins.
#[derive(Debug, Parser)]
#[command(name = "shoal-proxy", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to serve the registry API on (config key `listen`).
    #[arg(long, env = "SHOAL_PROXY_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The origins, comma-separated or repeated (config key `origins`).
    #[arg(
        long,
        env = "SHOAL_PROXY_ORIGINS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    origins: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    init_tracing(args.common.log_format, &args.common.log);
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-proxy: {e}");
            return Ok(ExitCode::from(EX_CONFIG as u8));
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    match shoal_proxy::run(config, listener, prometheus::Registry::new(), shutdown).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.is_config() => {
            eprintln!("shoal-proxy: {e}");
            Ok(ExitCode::from(EX_CONFIG as u8))
        }
        Err(e) => Err(e.into()),
    }
}

fn load(args: &Args) -> Result<Config, shoal_core::config::ConfigError> {
    let origins = (!args.origins.is_empty())
        .then(|| serde_json::to_string(&args.origins).unwrap_or_default());
    args.common
        .sources(ENV_PREFIX)?
        // The flags read these two themselves (a comma-separated list is not TOML).
        .ignore_env(&["SHOAL_PROXY_LISTEN", "SHOAL_PROXY_ORIGINS"])
        .set("listen", args.listen)
        .set("origins", origins)
        .load()
}
