//! `shoal-origin`: its flags, then the `main` every part shares
//! (`shoal_core::lifecycle::main`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shoal_core::cli::{CommonArgs, flag, parse};
use shoal_core::lifecycle;
use shoal_origin::{Config, Origin};

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

impl Args {
    /// The flags given, over the config from every other source.
    fn apply(&self, c: &mut Config) {
        flag(&mut c.listen, &self.listen);
        flag(&mut c.peer.listen, &self.peer_listen);
        flag(&mut c.data_dir, &self.data_dir);
        flag(&mut c.advertise_url, &self.advertise_url);
        flag(&mut c.cluster.members, &self.members);
        flag(&mut c.cluster.dns, &self.dns);
        flag(&mut c.replicas, &self.replicas);
    }
}

fn main() -> ExitCode {
    let args: Args = parse();
    lifecycle::main::<Origin>(&args.common, |c| args.apply(c))
}
