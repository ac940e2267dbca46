//! `shoal-agent`: flags and config in, [`shoal_agent::run`] out; and the `containerd-config`
//! subcommand that points containerd at the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_agent::config::ENV_PREFIX;
use shoal_agent::{Config, Listeners, containerd};
use shoal_core::cli::CommonArgs;
use shoal_core::config::{ConfigError, EX_CONFIG};
use shoal_core::telemetry::cancel_on_signal;
use tokio_util::sync::CancellationToken;

/// Shoal's agent: a read-only registry on this host whose layers arrive through the swarm.
///
/// Every config key can also be set as `SHOAL_AGENT_<KEY>` (`__` for a dot) or with
/// `--set key=value`; the flags below win over both. deploy/config/agent.toml documents
/// every key.
#[derive(Debug, Parser)]
#[command(name = "shoal-agent", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    common: CommonArgs,

    /// Address of the registry API for local clients (`listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Address of the peer protocol (`peer.listen`).
    #[arg(long, value_name = "ADDR")]
    peer_listen: Option<SocketAddr>,

    /// The tracker's base URL; empty for none (`tracker`).
    #[arg(long, value_name = "URL")]
    tracker: Option<String>,

    /// Origin base URLs, comma-separated (`origins`).
    #[arg(long, value_name = "URL,…", value_delimiter = ',')]
    origins: Vec<String>,

    /// Cache directory (`cache.dir`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Cache size, such as 20GiB (`cache.max_size`).
    #[arg(long, value_name = "SIZE")]
    cache_size: Option<String>,

    /// Upload cap to peers, such as 100MiB/s; 0 for none (`peer.egress`).
    #[arg(long, value_name = "RATE")]
    egress: Option<String>,

    /// Download cap from peers and origins; 0 for none (`peer.ingress`).
    #[arg(long, value_name = "RATE")]
    ingress: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Points containerd at the agent (or back) through its hosts.toml files.
    #[command(subcommand)]
    ContainerdConfig(ContainerdCommand),
}

#[derive(Debug, Subcommand)]
enum ContainerdCommand {
    /// Writes DIR/<registry>/hosts.toml so containerd tries the agent first, keeping any
    /// file that was there as hosts.toml.shoal-backup. Running it twice changes nothing.
    Install {
        /// containerd's registry config directory (`config_path`), such as
        /// /etc/containerd/certs.d.
        #[arg(long, value_name = "DIR")]
        certs_dir: PathBuf,
        /// The agent's registry URL as containerd should dial it.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8081")]
        mirror: String,
        /// A registry to mirror, such as docker.io (repeatable).
        #[arg(long = "registry", value_name = "HOST", required = true)]
        registries: Vec<String>,
    },
    /// Puts the backups back, or removes the files the agent wrote.
    Restore {
        #[arg(long, value_name = "DIR")]
        certs_dir: PathBuf,
        #[arg(long = "registry", value_name = "HOST", required = true)]
        registries: Vec<String>,
    },
}

fn text(v: &Option<String>) -> Option<toml::Value> {
    v.as_ref().map(|s| toml::Value::String(s.clone()))
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
    let addr = |a: Option<SocketAddr>| a.map(|a| toml::Value::String(a.to_string()));
    args.common
        .sources(ENV_PREFIX)?
        .set("listen", addr(args.listen))
        .set("peer.listen", addr(args.peer_listen))
        .set("tracker", text(&args.tracker))
        .set("origins", origins)
        .set(
            "cache.dir",
            args.cache_dir
                .as_ref()
                .map(|d| toml::Value::String(d.display().to_string())),
        )
        .set("cache.max_size", text(&args.cache_size))
        .set("peer.egress", text(&args.egress))
        .set("peer.ingress", text(&args.ingress))
        .load()
}

fn containerd_config(cmd: &ContainerdCommand) -> ExitCode {
    let result = match cmd {
        ContainerdCommand::Install {
            certs_dir,
            mirror,
            registries,
        } => containerd::install(certs_dir, mirror, registries),
        ContainerdCommand::Restore {
            certs_dir,
            registries,
        } => containerd::restore(certs_dir, registries),
    };
    match result {
        Ok(outcomes) => {
            for (registry, outcome) in outcomes {
                println!("{registry}: {outcome:?}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal-agent: {e}");
            match e {
                containerd::ContainerdError::Io { .. } => ExitCode::FAILURE,
                _ => ExitCode::from(EX_CONFIG as u8),
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::ContainerdConfig(cmd)) = &args.command {
        return containerd_config(cmd);
    }
    let config = match args.common.start("shoal-agent", || load(&args)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "shoal-agent failed");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    let http = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let peer = tokio::net::TcpListener::bind(config.peer.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.peer.listen))?;
    let ops = match config.ops_addr() {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a}"))?,
        ),
        None => None,
    };
    let registry = prometheus::Registry::new();
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    shoal_agent::run(config, Listeners { http, peer, ops }, registry, shutdown).await?;
    Ok(())
}
