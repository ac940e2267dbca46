//! `shoal-proxy`: its flags, then the `main` every part shares
//! (`shoal_core::lifecycle::main`); and the `htpasswd` subcommand.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use shoal_core::cli::{CommonArgs, flag, parse};
use shoal_core::config::EX_CONFIG;
use shoal_core::lifecycle;
use shoal_proxy::{Config, Proxy};

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

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Reads a password on stdin (its first line) and prints the htpasswd line of USER with
    /// its bcrypt hash, for the file `auth.htpasswd` names.
    Htpasswd {
        /// The user name (no colon).
        user: String,
    },
}

/// `shoal-proxy htpasswd <user>`: the password comes on stdin so that it is in no
/// process list and no shell history.
fn htpasswd(user: &str) -> ExitCode {
    use std::io::BufRead;
    if user.is_empty() || user.contains(':') || user.contains(char::is_whitespace) {
        eprintln!("shoal-proxy htpasswd: a user name is not empty and has no colon or space");
        return ExitCode::from(EX_CONFIG as u8);
    }
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        eprintln!("shoal-proxy htpasswd: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("shoal-proxy htpasswd: give the password on stdin (an empty one is refused)");
        return ExitCode::from(EX_CONFIG as u8);
    }
    match bcrypt::hash(password, bcrypt::DEFAULT_COST) {
        Ok(hash) => {
            println!("{user}:{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal-proxy htpasswd: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Args {
    /// The flags given, over the config from every other source.
    fn apply(&self, c: &mut Config) {
        flag(&mut c.listen, &self.listen);
        flag(&mut c.origins, &self.origins);
    }
}

fn main() -> ExitCode {
    let args: Args = parse();
    if let Some(Command::Htpasswd { user }) = &args.command {
        return htpasswd(user);
    }
    lifecycle::main::<Proxy>(&args.common, |c| args.apply(c))
}
