//! Config loading shared by every part: a TOML file, then `SHOAL_<PART>_…` environment
//! variables, then `--set key=value` pairs, then the part's own flags, each layer overriding
//! the one before. The first three are text, read the way the file is; the flags are typed
//! and set on the parsed config ([`Sources::load_then`]), so a flag that names no key does
//! not compile.
//!
//! A part's config is a serde struct with `#[serde(default)]` that implements [`Validate`].
//! Do not put `deny_unknown_fields` on it: the loader itself rejects unknown keys, and
//! names all of them at once, along with every type error (one per top-level key) and every
//! problem [`Validate`] finds. A process exits with [`EX_CONFIG`] when loading fails.
//!
//! Environment variables map to keys by dropping the prefix, lowercasing, and reading `__`
//! as a dot: `SHOAL_AGENT_CACHE__MAX_SIZE=10GiB` sets `cache.max_size`. Values are read as
//! TOML (`3`, `true`, `["a", "b"]`) and, where that fails, as a plain string.
//! Kubernetes service-link variables (`…_SERVICE_HOST`, `…_PORT…`) are skipped.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The exit status for a bad config or bad flags (sysexits' `EX_USAGE`).
pub const EX_CONFIG: i32 = 64;

/// Semantic checks a parsed config must pass; push one message per problem.
pub trait Validate {
    fn validate(&self, problems: &mut Vec<String>);
}

/// Everything wrong with a config, each problem on its own line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Where a part's config comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
    /// For example `SHOAL_ORIGIN_`; empty to read no environment.
    pub env_prefix: String,
    /// Environment variables under the prefix that are not config keys (flags read them).
    pub env_ignore: Vec<String>,
    /// `(dotted.key, value)` pairs (`--set`), applied after the environment.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    pub fn new(file: Option<PathBuf>, env_prefix: &str) -> Self {
        Sources {
            file,
            env_prefix: env_prefix.to_owned(),
            ..Default::default()
        }
    }

    pub fn ignore_env(mut self, names: &[&str]) -> Self {
        self.env_ignore.extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// Adds a `key=value` override when `value` is given.
    pub fn set(mut self, key: &str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.overrides.push((key.to_owned(), v.to_string()));
        }
        self
    }

    /// Adds `key=value` overrides (a repeatable `--set` flag).
    pub fn set_pairs(mut self, pairs: &[String]) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        for p in pairs {
            match p.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    self.overrides.push((k.trim().to_owned(), v.to_owned()))
                }
                _ => problems.push(format!("--set {p:?}: expected key=value")),
            }
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Reads the process environment and loads.
    pub fn load<T: DeserializeOwned + Validate>(&self) -> Result<T, ConfigError> {
        self.load_with_env(std::env::vars())
    }

    /// Reads the process environment and loads; `flags` changes the parsed config before it
    /// is checked (a part's typed flags, which win over every other source).
    pub fn load_then<T: DeserializeOwned + Validate>(
        &self,
        flags: impl FnOnce(&mut T),
    ) -> Result<T, ConfigError> {
        self.load_with_env_then(std::env::vars(), flags)
    }

    /// Loads with an explicit environment (tests).
    pub fn load_with_env<T: DeserializeOwned + Validate>(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<T, ConfigError> {
        self.load_with_env_then(env, |_| {})
    }

    /// [`Sources::load_then`] with an explicit environment.
    pub fn load_with_env_then<T: DeserializeOwned + Validate>(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
        flags: impl FnOnce(&mut T),
    ) -> Result<T, ConfigError> {
        let mut problems = Vec::new();
        let mut table = match &self.file {
            Some(path) => read_file(path, &mut problems),
            None => toml::Table::new(),
        };
        if !self.env_prefix.is_empty() {
            let mut env: Vec<(String, String)> = env
                .into_iter()
                .filter(|(k, _)| {
                    k.strip_prefix(self.env_prefix.as_str())
                        .is_some_and(|rest| !is_service_link(rest))
                        && !self.env_ignore.contains(k)
                })
                .collect();
            env.sort();
            for (name, value) in env {
                let key = name[self.env_prefix.len()..]
                    .to_lowercase()
                    .replace("__", ".");
                if let Err(p) = set_path(&mut table, &key, &value) {
                    problems.push(format!("environment {name}: {p}"));
                }
            }
        }
        for (key, value) in &self.overrides {
            if let Err(p) = set_path(&mut table, key, value) {
                problems.push(format!("flag {key}: {p}"));
            }
        }
        let mut parsed = deserialize::<T>(table, &mut problems);
        if let Some(config) = &mut parsed {
            flags(config);
            config.validate(&mut problems);
        }
        match parsed {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError { problems }),
        }
    }
}

/// Kubernetes puts `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT` and `<SERVICE>_PORT_<n>_TCP…`
/// into every pod for every Service; a Service named `shoal-tracker` makes them look like
/// tracker config keys. No config key is spelt like that, so they are skipped.
fn is_service_link(rest: &str) -> bool {
    rest.starts_with("SERVICE_")
        || rest == "PORT"
        || rest
            .strip_prefix("PORT_")
            .is_some_and(|p| p.starts_with(|c: char| c.is_ascii_digit()))
}

fn read_file(path: &Path, problems: &mut Vec<String>) -> toml::Table {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", path.display()));
            return toml::Table::new();
        }
    };
    match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{} is not valid TOML: {e}", path.display()));
            toml::Table::new()
        }
    }
}

/// A value from the environment or a flag: TOML if it parses as a value, else a string.
fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, key: &str, raw: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{key:?} is not a valid key"));
    }
    let (last, parents) = parts.split_last().ok_or("empty key")?;
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p:?} is not a table"))?;
    }
    // A credential is always text: a token of digits, or one spelt `true` or `nan`, must not
    // become a number or a boolean (nor lose its leading zeros) on its way in.
    let value = if parents.first() == Some(&"credentials") {
        toml::Value::String(raw.to_owned())
    } else {
        parse_value(raw)
    };
    cur.insert((*last).to_owned(), value);
    Ok(())
}

/// Deserializes, collecting every unknown key and the type errors of each top-level key.
fn deserialize<T: DeserializeOwned>(table: toml::Table, problems: &mut Vec<String>) -> Option<T> {
    let mut unknown = Vec::new();
    let result = deserialize_tracked::<T>(toml::Value::Table(table.clone()), &mut unknown);
    let parsed = match result {
        Ok(v) => Some(v),
        Err(first) => {
            // Serde stops at the first error; to name them all, try each top-level key on
            // its own (every field has a default) and report each one that fails.
            unknown.clear();
            let mut errors = Vec::new();
            for (k, v) in table {
                let single = toml::Value::Table(toml::Table::from_iter([(k, v)]));
                if let Err(e) = deserialize_tracked::<T>(single, &mut unknown) {
                    errors.push(e);
                }
            }
            if errors.is_empty() {
                errors.push(first);
            }
            problems.extend(errors);
            None
        }
    };
    problems.splice(
        0..0,
        unknown.into_iter().map(|k| format!("unknown key `{k}`")),
    );
    parsed
}

fn deserialize_tracked<T: DeserializeOwned>(
    value: toml::Value,
    unknown: &mut Vec<String>,
) -> Result<T, String> {
    let mut track = serde_path_to_error::Track::new();
    serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(value, &mut track),
        |path| unknown.push(path.to_string()),
    )
    .map_err(|e: toml::de::Error| {
        let msg = e.to_string();
        let first_line = msg.lines().next().unwrap_or("invalid value");
        format!("`{}`: {first_line}", track.path())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{ByteSize, duration};
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default)]
    struct Cache {
        max_size: ByteSize,
        dir: String,
    }

    impl Default for Cache {
        fn default() -> Self {
            Cache {
                max_size: ByteSize::gib(1),
                dir: "/var/cache".into(),
            }
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default)]
    struct Conf {
        listen: String,
        replicas: u32,
        #[serde(with = "duration")]
        interval: Duration,
        peers: Vec<String>,
        cache: Cache,
    }

    impl Default for Conf {
        fn default() -> Self {
            Conf {
                listen: "127.0.0.1:8081".into(),
                replicas: 3,
                interval: Duration::from_secs(3),
                peers: vec![],
                cache: Cache::default(),
            }
        }
    }

    impl Validate for Conf {
        fn validate(&self, problems: &mut Vec<String>) {
            if self.replicas == 0 {
                problems.push("replicas must be at least 1".into());
            }
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_any_source() {
        let c: Conf = Sources::new(None, "SHOAL_T_")
            .load_with_env(vec![])
            .unwrap();
        assert_eq!(c, Conf::default());
    }

    #[test]
    fn credentials_from_the_environment_stay_text() {
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        struct Creds {
            write_token: String,
            read_token: String,
        }
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        struct WithCreds {
            credentials: Creds,
        }
        impl Validate for WithCreds {
            fn validate(&self, _: &mut Vec<String>) {}
        }
        let c: WithCreds = Sources::new(None, "SHOAL_T_")
            .load_with_env(env(&[
                ("SHOAL_T_CREDENTIALS__WRITE_TOKEN", "000123456789012345678"),
                ("SHOAL_T_CREDENTIALS__READ_TOKEN", "true"),
            ]))
            .unwrap();
        assert_eq!(c.credentials.write_token, "000123456789012345678");
        assert_eq!(c.credentials.read_token, "true");
    }

    #[test]
    fn file_then_env_then_flags() {
        let f = file("listen = \"0.0.0.0:1\"\nreplicas = 2\n[cache]\nmax_size = \"2GiB\"\n");
        let sources = Sources::new(Some(f.path().into()), "SHOAL_T_")
            .ignore_env(&["SHOAL_T_CONFIG"])
            .set("listen", Some("127.0.0.1:9"));
        let c: Conf = sources
            .load_with_env(env(&[
                ("SHOAL_T_REPLICAS", "5"),
                ("SHOAL_T_CACHE__DIR", "/tmp/x"),
                ("SHOAL_T_PEERS", "[\"a\", \"b\"]"),
                ("SHOAL_T_INTERVAL", "10s"),
                ("SHOAL_T_CONFIG", "/etc/whatever.toml"),
                ("SHOAL_T_SERVICE_HOST", "10.0.0.1"),
                ("SHOAL_T_SERVICE_PORT_HTTP", "7070"),
                ("SHOAL_T_PORT", "tcp://10.0.0.1:7070"),
                ("SHOAL_T_PORT_7070_TCP_ADDR", "10.0.0.1"),
                ("OTHER", "ignored"),
            ]))
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9");
        assert_eq!(c.replicas, 5);
        assert_eq!(c.cache.max_size, ByteSize::gib(2));
        assert_eq!(c.cache.dir, "/tmp/x");
        assert_eq!(c.peers, vec!["a", "b"]);
        assert_eq!(c.interval, Duration::from_secs(10));
    }

    #[test]
    fn typed_flags_win_and_are_checked() {
        let f = file("replicas = 2\n");
        let sources = Sources::new(Some(f.path().into()), "SHOAL_T_")
            .set_pairs(&["replicas=4".into()])
            .unwrap();
        let c: Conf = sources
            .load_with_env_then(env(&[("SHOAL_T_REPLICAS", "3")]), |c: &mut Conf| {
                c.listen = "127.0.0.1:7".into()
            })
            .unwrap();
        assert_eq!((c.listen.as_str(), c.replicas), ("127.0.0.1:7", 4));
        let c: Conf = sources
            .load_with_env_then(vec![], |c: &mut Conf| c.replicas = 5)
            .unwrap();
        assert_eq!(c.replicas, 5);
        let err = sources
            .load_with_env_then::<Conf>(vec![], |c| c.replicas = 0)
            .unwrap_err();
        assert_eq!(err.problems, vec!["replicas must be at least 1"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let f = file(
            "listen = 5\nreplicas = 0\nbogus = 1\n[cache]\nmax_size = \"huge\"\ncolour = \"red\"\n",
        );
        let err = Sources::new(Some(f.path().into()), "SHOAL_T_")
            .load_with_env::<Conf>(env(&[("SHOAL_T_NOPE", "1")]))
            .unwrap_err();
        let all = err.problems.join("\n");
        for needle in ["bogus", "cache.colour", "nope", "listen", "cache.max_size"] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        // Validation runs only on a config that parsed.
        let f = file("replicas = 0\n");
        let err = Sources::new(Some(f.path().into()), "")
            .load_with_env::<Conf>(vec![])
            .unwrap_err();
        assert_eq!(err.problems, vec!["replicas must be at least 1"]);
    }

    #[test]
    fn unreadable_or_broken_files_are_problems() {
        let err = Sources::new(Some("/nonexistent/shoal.toml".into()), "")
            .load_with_env::<Conf>(vec![])
            .unwrap_err();
        assert!(err.problems[0].contains("cannot read"));
        let f = file("listen = \n");
        let err = Sources::new(Some(f.path().into()), "")
            .load_with_env::<Conf>(vec![])
            .unwrap_err();
        assert!(err.problems[0].contains("not valid TOML"));
    }

    #[test]
    fn set_pairs_parse() {
        let s = Sources::default()
            .set_pairs(&["cache.dir=/d".into(), "replicas=4".into()])
            .unwrap();
        let c: Conf = s.load_with_env(vec![]).unwrap();
        assert_eq!((c.cache.dir.as_str(), c.replicas), ("/d", 4));
        assert!(Sources::default().set_pairs(&["novalue".into()]).is_err());
    }
}
