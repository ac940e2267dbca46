//! `shoal-origin`: parses flags, loads the config, binds, and runs the origin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shoal_core::cli::CommonArgs;
use shoal_core::telemetry::cancel_on_signal;
use shoal_origin::Listeners;
use shoal_origin::config::{Config, ENV_PREFIX};
use tokio_util::sync::CancellationToken;

/// Shoal's origin: durable blob and tag storage on a ring of origins, and the first seeder
/// of every swarm.
///
/// Configuration comes from a TOML file (--config), then SHOAL_ORIGIN_* environment
/// variables (SHOAL_ORIGIN_CLUSTER__MEMBERS sets cluster.members), then --set KEY=VALUE,
/// then the flags below. deploy/config/origin.toml documents every key.
#[derive(Debug, Parser)]
#[command(name = "shoal-origin", version, about, long_about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Address of the HTTP API, /health, /ready and /metrics [key: listen, default 0.0.0.0:9000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Address of the peer protocol [key: peer.listen, default 0.0.0.0:7000].
    #[arg(long, value_name = "ADDR")]
    peer_listen: Option<SocketAddr>,

    /// Directory for blobs and the index [key: data_dir, default /var/lib/shoal/origin].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// This origin's base URL as the member list writes it [key: advertise_url].
    #[arg(long, value_name = "URL", alias = "advertise")]
    advertise_url: Option<String>,

    /// Every origin's base URL, this one included; repeat or separate with commas
    /// [key: cluster.members].
    #[arg(long = "member", value_name = "URL,…", value_delimiter = ',')]
    members: Vec<String>,

    /// host:port whose host resolves to every origin, instead of --member [key: cluster.dns].
    #[arg(long, value_name = "HOST:PORT")]
    dns: Option<String>,

    /// Copies of each blob and tag [key: replicas, default 3].
    #[arg(long, value_name = "N")]
    replicas: Option<usize>,
}

/// A flag's value as a TOML string, so that text such as `123` or `true` stays text.
fn text(v: Option<impl ToString>) -> Option<toml::Value> {
    v.map(|v| toml::Value::String(v.to_string()))
}

fn load(args: &Args) -> Result<Config, shoal_core::config::ConfigError> {
    let members = (!args.members.is_empty()).then(|| {
        toml::Value::Array(
            args.members
                .iter()
                .map(|m| toml::Value::String(m.clone()))
                .collect(),
        )
    });
    args.common
        .sources(ENV_PREFIX)?
        .set("listen", text(args.listen))
        .set("peer.listen", text(args.peer_listen))
        .set(
            "data_dir",
            text(args.data_dir.as_ref().map(|d| d.display())),
        )
        .set("advertise_url", text(args.advertise_url.as_ref()))
        .set("cluster.members", members)
        .set("cluster.dns", text(args.dns.as_ref()))
        .set("replicas", args.replicas)
        .load()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.common.start("shoal-origin", || load(&args)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-origin: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "shoal-origin failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let http = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the HTTP API on {}", config.listen))?;
    let peer = tokio::net::TcpListener::bind(config.peer.listen)
        .await
        .with_context(|| format!("binding the peer protocol on {}", config.peer.listen))?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let registry = prometheus::Registry::new();
    shoal_origin::run(
        config,
        Listeners {
            http,
            peer: Some(peer),
        },
        registry,
        shutdown,
    )
    .await?;
    Ok(())
}
