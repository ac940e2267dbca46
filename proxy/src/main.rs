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
    if let Some(Command::Htpasswd { user }) = &args.command {
        return htpasswd(user);
    }
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
