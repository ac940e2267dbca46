//! `shoal-agent`: its flags, then the `main` every part shares
//! (`shoal_core::lifecycle::main`); and the `containerd-config` subcommand that points
//! containerd at the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_agent::{Agent, Config, containerd};
use shoal_core::cli::{CommonArgs, flag, parse};
use shoal_core::config::EX_CONFIG;
use shoal_core::lifecycle;
use shoal_core::units::{ByteRate, ByteSize};

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
    cache_size: Option<ByteSize>,

    /// Upload cap to peers, such as 100MiB/s; 0 for none (`peer.egress`).
    #[arg(long, value_name = "RATE")]
    egress: Option<ByteRate>,

    /// Download cap from peers and origins; 0 for none (`peer.ingress`).
    #[arg(long, value_name = "RATE")]
    ingress: Option<ByteRate>,
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

impl Args {
    /// The flags given, over the config from every other source.
    fn apply(&self, c: &mut Config) {
        flag(&mut c.listen, &self.listen);
        flag(&mut c.peer.listen, &self.peer_listen);
        flag(&mut c.tracker, &self.tracker);
        flag(&mut c.origins, &self.origins);
        flag(&mut c.cache.dir, &self.cache_dir);
        flag(&mut c.cache.max_size, &self.cache_size);
        flag(&mut c.peer.egress, &self.egress);
        flag(&mut c.peer.ingress, &self.ingress);
    }
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
    let args: Args = parse();
    if let Some(Command::ContainerdConfig(cmd)) = &args.command {
        return containerd_config(cmd);
    }
    lifecycle::main::<Agent>(&args.common, |c| args.apply(c))
}
