//! `shoal-tracker`: flags and config in, [`shoal_tracker::run`] out.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shoal_core::cli::CommonArgs;
use shoal_core::config::ConfigError;
use shoal_core::telemetry::cancel_on_signal;
use shoal_tracker::Config;
use shoal_tracker::config::ENV_PREFIX;
use tokio_util::sync::CancellationToken;

/// Shoal's tracker: which peers hold the blob a downloader wants, and the blob's metainfo.
///
/// Every config key can also be set as `SHOAL_TRACKER_<KEY>` (`__` for a dot) or with
/// `--set key=value`; the flags below win over both.
#[derive(Debug, Parser)]
#[command(name = "shoal-tracker", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Address of the HTTP API (`listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Origin base URLs, comma-separated, as in the origins' member list (`origins`).
    #[arg(long, value_name = "URL,…", value_delimiter = ',')]
    origins: Vec<String>,

    /// How many origins own each blob (`replicas`).
    #[arg(long, value_name = "N")]
    replicas: Option<usize>,

    /// Most peers per announce answer (`handout_size`).
    #[arg(long, value_name = "N")]
    handout_size: Option<usize>,

    /// Announce interval told to peers, such as `3s` (`announce_interval`).
    #[arg(long, value_name = "DURATION")]
    announce_interval: Option<String>,

    /// Honour the address peers announce instead of the source address
    /// (`trust_announced_addr`).
    #[arg(long)]
    trust_announced_addr: bool,
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
    let announce_interval = args
        .announce_interval
        .as_ref()
        .map(|d| toml::Value::String(d.clone()));
    args.common
        .sources(ENV_PREFIX)?
        .set(
            "listen",
            args.listen.map(|a| toml::Value::String(a.to_string())),
        )
        .set("origins", origins)
        .set("replicas", args.replicas)
        .set("handout_size", args.handout_size)
        .set("announce_interval", announce_interval)
        .set(
            "trust_announced_addr",
            args.trust_announced_addr.then_some(true),
        )
        .load()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.common.start("shoal-tracker", || load(&args)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "shoal-tracker failed");
            ExitCode::FAILURE
        }
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
    shoal_tracker::run(config, listener, registry, shutdown).await?;
    Ok(())
}
