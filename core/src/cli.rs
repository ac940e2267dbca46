//! Flags every part's binary takes, so the four `main`s read alike.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{ConfigError, Sources};
use crate::telemetry::LogFormat;

#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// TOML config file; keys it leaves out take their defaults.
    #[arg(long, short = 'c', env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Set any config key, overriding the file and the environment (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// Log line format.
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, such as `info` or `shoal_agent=debug,info` (RUST_LOG wins if set).
    #[arg(long, env = "SHOAL_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,

    /// Load and check the config, print every problem (or the effective config), and exit:
    /// 0 if it is valid, 64 if not. Nothing is started.
    #[arg(long)]
    pub check_config: bool,
}

impl CommonArgs {
    /// Ends a `--check-config` run: prints the outcome and returns the exit status. `show`
    /// renders the effective config for the user to read.
    pub fn check_outcome<T: serde::Serialize>(result: &Result<T, ConfigError>) -> i32 {
        match result {
            Ok(config) => {
                match toml::to_string_pretty(config) {
                    Ok(text) => println!("{text}"),
                    Err(e) => println!("# config is valid (it cannot be shown: {e})"),
                }
                0
            }
            Err(e) => {
                eprintln!("{e}");
                crate::config::EX_CONFIG
            }
        }
    }

    /// What every part's `main` does first. With `--check-config`: checks the config, prints
    /// the outcome and returns `Err` with the status to exit with. Otherwise: starts logging
    /// and loads the config; a bad one is printed after `name` and returns `Err(EX_CONFIG)`.
    pub fn start<T: serde::Serialize>(
        &self,
        name: &str,
        load: impl Fn() -> Result<T, ConfigError>,
    ) -> Result<T, ExitCode> {
        if self.check_config {
            return Err(exit_code(Self::check_outcome(&load())));
        }
        crate::telemetry::init_tracing(self.log_format, &self.log);
        load().map_err(|e| {
            eprintln!("{name}: {e}");
            exit_code(crate::config::EX_CONFIG)
        })
    }

    /// The config sources: the file, `<env_prefix>…` variables, then `--set` pairs. Callers
    /// add their own typed flags with [`Sources::set`] afterwards, so those win.
    pub fn sources(&self, env_prefix: &str) -> Result<Sources, ConfigError> {
        Sources::new(self.config.clone(), env_prefix).set_pairs(&self.set)
    }
}

/// An exit status as `main` returns it (statuses here are small: 0, 1, 64).
fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
