//! `shoal-tracker`: its flags, then the `main` every part shares
//! (`shoal_core::lifecycle::main`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shoal_core::cli::{CommonArgs, flag, parse};
use shoal_core::lifecycle;
use shoal_core::units::duration;
use shoal_tracker::{Config, Tracker};

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
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    announce_interval: Option<Duration>,

    /// Honour the address peers announce instead of the source address
    /// (`trust_announced_addr`).
    #[arg(long)]
    trust_announced_addr: bool,
}

impl Args {
    /// The flags given, over the config from every other source.
    fn apply(&self, c: &mut Config) {
        flag(&mut c.listen, &self.listen);
        flag(&mut c.origins, &self.origins);
        flag(&mut c.replicas, &self.replicas);
        flag(&mut c.handout_size, &self.handout_size);
        flag(&mut c.announce_interval, &self.announce_interval);
        flag(&mut c.trust_announced_addr, &self.trust_announced_addr);
    }
}

fn main() -> ExitCode {
    let args: Args = parse();
    lifecycle::main::<Tracker>(&args.common, |c| args.apply(c))
}
