//! `shoal-proxy`: flags and config in, [`shoal_proxy::run`] out.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use shoal_core::cli::CommonArgs;
use shoal_core::config::{ConfigError, EX_CONFIG};
use shoal_core::telemetry::cancel_on_signal;
use shoal_proxy::Config;
use shoal_proxy::config::ENV_PREFIX;
use tokio_util::sync::CancellationToken;

/// The write side of a Shoal registry: the OCI distribution API, storing on the origins.
///
/// Every config key can also be set as `SHOAL_PROXY_<KEY>` (`__` for a dot) or with
/// `--set key=value`; the flags below win over both.
#[derive(Debug, Parser)]
#[command(name = "shoal-proxy", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Address of the registry API (`listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Origin base URLs, comma-separated, as in the origins' member list (`origins`).
    #[arg(long, value_name = "URL,…", value_delimiter = ',')]
    origins: Vec<String>,
}

fn load(args: &Args) -> Result<Config, ConfigError> {
    let origins = (!args.origins.is_empty()).then(|| {
        toml::Value::Array(
            args.origins
                .iter()
                .map(|o| toml::Value::String(o.clone()))
                .collect(),
        )
    });
    args.common
        .sources(ENV_PREFIX)?
        .set(
            "listen",
            args.listen.map(|a| toml::Value::String(a.to_string())),
        )
        .set("origins", origins)
        .load()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.common.start("shoal-proxy", || load(&args)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<shoal_proxy::ProxyError>() {
            Some(p) if p.is_config() => {
                eprintln!("shoal-proxy: {p}");
                ExitCode::from(EX_CONFIG as u8)
            }
            _ => {
                tracing::error!(error = format!("{e:#}"), "shoal-proxy failed");
                ExitCode::FAILURE
            }
        },
    }
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let registry = prometheus::Registry::new();
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    shoal_proxy::run(config, listener, registry, shutdown).await?;
    Ok(())
}
