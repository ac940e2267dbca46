//! Flags every part's binary takes, so the four `main`s read alike, and how a part's own
//! flags land on its typed config ([`flag`]).

use std::path::PathBuf;
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use crate::config::{ConfigError, EX_CONFIG, Sources, Validate};
use crate::telemetry::LogFormat;

/// Parses the process's flags. A bad flag exits with [`EX_CONFIG`] (sysexits' `EX_USAGE`),
/// like a bad config; `--help` and `--version` exit 0.
pub fn parse<A: clap::Parser>() -> A {
    A::try_parse().unwrap_or_else(|e| {
        let status = if e.use_stderr() { EX_CONFIG } else { 0 };
        let _ = e.print();
        std::process::exit(status)
    })
}

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
                EX_CONFIG
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
            exit_code(EX_CONFIG)
        })
    }

    /// Loads a part's config: the file, `<env_prefix>…` variables and `--set` pairs, then
    /// `flags` sets the part's own flags on the typed config (so they win), then the
    /// config is checked.
    pub fn load<T: DeserializeOwned + Validate>(
        &self,
        env_prefix: &str,
        flags: impl FnOnce(&mut T),
    ) -> Result<T, ConfigError> {
        Sources::new(self.config.clone(), env_prefix)
            .set_pairs(&self.set)?
            .load_then(flags)
    }
}

/// A flag's value for a config field: an `Option` sets the field when the flag was given, a
/// list replaces it when it is not empty, a switch turns it on.
pub trait FlagValue<T> {
    fn set(&self, field: &mut T);
}

impl<T: Clone> FlagValue<T> for Option<T> {
    fn set(&self, field: &mut T) {
        if let Some(v) = self {
            *field = v.clone();
        }
    }
}

impl<T: Clone> FlagValue<Vec<T>> for Vec<T> {
    fn set(&self, field: &mut Vec<T>) {
        if !self.is_empty() {
            *field = self.clone();
        }
    }
}

impl FlagValue<bool> for bool {
    fn set(&self, field: &mut bool) {
        if *self {
            *field = true;
        }
    }
}

/// Sets `field` from a flag's `value` when the flag was given: `flag(&mut c.listen,
/// &args.listen)`. The compiler checks that the flag and the key have one type.
pub fn flag<T>(field: &mut T, value: &impl FlagValue<T>) {
    value.set(field);
}

/// An exit status as `main` returns it (statuses here are small: 0, 1, 64).
pub(crate) fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_fields_only_when_given() {
        let (mut port, mut list, mut on) = (1u16, vec!["a".to_owned()], false);
        flag(&mut port, &None);
        flag(&mut list, &Vec::new());
        flag(&mut on, &false);
        assert_eq!(
            (port, list.as_slice(), on),
            (1, &["a".to_owned()][..], false)
        );
        flag(&mut port, &Some(2));
        flag(&mut list, &vec!["b".to_owned()]);
        flag(&mut on, &true);
        assert_eq!(
            (port, list.as_slice(), on),
            (2, &["b".to_owned()][..], true)
        );
    }
}
