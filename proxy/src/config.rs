//! The proxy's configuration: the TOML file `deploy/config/proxy.toml` documents every key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use shoal_core::auth::Secret;
use shoal_core::config::Validate;
use shoal_core::origin_client::{base_url, scheme_problem};
use shoal_core::telemetry::ServerConfig;
use shoal_core::tls::{Needs, TlsConfig};
use shoal_core::units::{ByteSize, duration};

/// The environment prefix of the proxy's config keys (`SHOAL_PROXY_UPLOADS__IDLE_TIMEOUT`).
pub const ENV_PREFIX: &str = "SHOAL_PROXY_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the registry API (and `/health`, `/ready`, `/metrics`) is served.
    pub listen: SocketAddr,
    /// The origins' base URLs or `host:port`s, every one of them, in any order: `https://`
    /// with TLS on, `http://` in plaintext.
    pub origins: Vec<String>,
    /// The cluster's credentials the proxy presents to the origins.
    pub credentials: Credentials,
    /// Whether `DELETE` of manifests, tags and blobs is allowed.
    pub allow_delete: bool,
    /// The largest manifest accepted on `PUT` (413 beyond).
    pub max_manifest_size: ByteSize,
    /// The most entries one page of a tag list or the catalog holds, whatever `n` asks.
    pub max_page: usize,
    /// How long requests in flight may run on after a shutdown signal.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    pub uploads: UploadConfig,
    pub auth: AuthConfig,
    /// Bounds on the HTTP server's clients (`shoal_core::telemetry::ServerConfig`).
    pub server: ServerConfig,
    /// The origins verified against `ca`; with `cert` and `key` the registry API is served
    /// over HTTPS too (a registry behind no ingress), else plain HTTP.
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UploadConfig {
    /// Where chunked uploads keep their bytes until the final `PUT`. The proxy owns the
    /// `uploads/` directory inside it and empties it at start.
    pub spool_dir: PathBuf,
    /// An upload session with no request for this long is dropped with its bytes.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// A request body (a chunk, a monolithic upload) that sends nothing for this long is
    /// given up on, so a stalled client cannot hold a session forever.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// Upload sessions open at once; more are refused with 429 TOOMANYREQUESTS.
    pub max_sessions: usize,
    /// The most bytes one upload session may hold; a chunk beyond gets 413.
    pub max_size: ByteSize,
    /// How long a session may last from its start, however busy a client keeps it; then
    /// it is dropped with its bytes, even in the middle of a chunk.
    #[serde(with = "duration")]
    pub max_lifetime: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// An htpasswd file with bcrypt entries (`htpasswd -B`). Unset: no authentication.
    pub htpasswd: Option<PathBuf>,
    /// The realm named in the `WWW-Authenticate` challenge.
    pub realm: String,
    /// Whether pulls need no credentials when authentication is on.
    pub anonymous_pull: bool,
    /// Users who may push and delete; empty: every user in the htpasswd file.
    pub push_users: Vec<String>,
}

/// The cluster's credentials as the proxy holds them (`shoal_core::auth`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Credentials {
    /// The origins' write token, sent with every request to them: pushes, tags and deletes
    /// need it.
    pub write_token: Secret,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            origins: vec!["https://127.0.0.1:9000".into()],
            credentials: Credentials::default(),
            allow_delete: true,
            max_manifest_size: ByteSize::mib(4),
            max_page: 1000,
            shutdown_grace: Duration::from_secs(30),
            uploads: UploadConfig::default(),
            auth: AuthConfig::default(),
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            spool_dir: PathBuf::from("/var/tmp/shoal-proxy"),
            idle_timeout: Duration::from_secs(15 * 60),
            body_timeout: Duration::from_secs(120),
            max_sessions: 1000,
            max_size: ByteSize::gib(64),
            max_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            htpasswd: None,
            realm: "shoal".into(),
            anonymous_pull: true,
            push_users: Vec::new(),
        }
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        self.server.validate("server", problems);
        self.tls.validate(
            Needs {
                cert: false,
                ca: true,
            },
            problems,
        );
        let tls = self.tls.enabled();
        shoal_core::auth::check_token(
            "credentials.write_token",
            &self.credentials.write_token,
            problems,
        );
        if self.origins.is_empty() {
            problems.push("origins: name at least one origin".into());
        }
        for o in &self.origins {
            let url = base_url(o, tls);
            match reqwest::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    problems.extend(scheme_problem("origins:", o, tls));
                }
                Ok(_) => problems.push(format!(
                    "origins: {o:?} must be an https:// or http:// URL or host:port"
                )),
                Err(e) => problems.push(format!("origins: {o:?} is not an address: {e}")),
            }
        }
        if self.max_manifest_size.bytes() == 0 {
            problems.push("max_manifest_size must be more than 0".into());
        }
        if self.max_page == 0 {
            problems.push("max_page must be at least 1".into());
        }
        if self.uploads.spool_dir.as_os_str().is_empty() {
            problems.push("uploads.spool_dir must be set".into());
        }
        if self.uploads.idle_timeout < Duration::from_secs(1) {
            problems.push("uploads.idle_timeout must be at least 1s".into());
        }
        if self.uploads.body_timeout < Duration::from_secs(1) {
            problems.push("uploads.body_timeout must be at least 1s".into());
        }
        if self.uploads.max_sessions == 0 {
            problems.push("uploads.max_sessions must be at least 1".into());
        }
        if self.uploads.max_size.bytes() == 0 {
            problems.push("uploads.max_size must be more than 0".into());
        }
        if self.uploads.max_lifetime < Duration::from_secs(1) {
            problems.push("uploads.max_lifetime must be at least 1s".into());
        }
        if self.auth.realm.contains('"') || self.auth.realm.chars().any(char::is_control) {
            problems.push("auth.realm must not contain quotes or control characters".into());
        }
        match &self.auth.htpasswd {
            None if !self.auth.push_users.is_empty() => {
                problems.push("auth.push_users needs auth.htpasswd".into());
            }
            // Read as start-up reads it, so that a check finds what start-up would refuse.
            Some(path) => {
                if let Err(e) = crate::auth::Htpasswd::load(path) {
                    problems.push(format!("auth.htpasswd: {e}"));
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::config::Sources;

    fn plaintext() -> Vec<(String, String)> {
        vec![
            ("SHOAL_PROXY_TLS__PLAINTEXT".into(), "true".into()),
            ("SHOAL_PROXY_ORIGINS".into(), r#"["o:9000"]"#.into()),
        ]
    }

    #[test]
    fn defaults_are_valid_but_for_tls() {
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![])
            .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
        assert!(err.problems[0].contains("tls.ca is not set"), "{err:?}");
        let pki = shoal_core::testing::TestPki::new();
        let ca = pki.ca_path().to_str().unwrap().to_owned();
        let c: Config = Sources::new(None, ENV_PREFIX)
            .load_with_env(vec![("SHOAL_PROXY_TLS__CA".into(), ca)])
            .unwrap();
        assert_eq!(
            c,
            Config {
                tls: pki.client(),
                ..Config::default()
            }
        );
    }

    #[test]
    fn origins_take_the_scheme_of_the_tls_mode() {
        let err = Sources::new(None, ENV_PREFIX)
            .set("origins", Some("[\"https://a:1\"]"))
            .load_with_env::<Config>(plaintext())
            .unwrap_err();
        assert!(
            err.problems
                .join("\n")
                .contains("is https:// but tls.plaintext = true"),
            "{err:?}"
        );
    }

    #[test]
    fn every_problem_at_once() {
        let err = Sources::new(None, ENV_PREFIX)
            .set("origins", Some("[\"ftp://x\"]"))
            .set("max_page", Some(0))
            .set("uploads.max_sessions", Some(0))
            .set("auth.push_users", Some("[\"a\"]"))
            .set("credentials.write_token", Some("short"))
            .load_with_env::<Config>(plaintext())
            .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "ftp://x",
            "max_page",
            "max_sessions",
            "push_users",
            "write_token",
        ] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
    }

    #[test]
    fn environment_overrides() {
        let c: Config = Sources::new(None, ENV_PREFIX)
            .load_with_env(vec![
                plaintext()[0].clone(),
                plaintext()[1].clone(),
                ("SHOAL_PROXY_UPLOADS__IDLE_TIMEOUT".into(), "2m".into()),
                (
                    "SHOAL_PROXY_CREDENTIALS__WRITE_TOKEN".into(),
                    "hunter2-hunter2-hunter2".into(),
                ),
            ])
            .unwrap();
        assert_eq!(c.uploads.idle_timeout, Duration::from_secs(120));
        assert_eq!(
            c.credentials.write_token.get(),
            Some("hunter2-hunter2-hunter2")
        );
        assert!(!format!("{c:?}").contains("hunter2-hunter2-hunter2"));
        assert!(
            !toml::to_string(&c)
                .unwrap()
                .contains("hunter2-hunter2-hunter2")
        );
    }

    #[test]
    fn example_config_loads_with_the_real_loader() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/proxy.toml");
        // The example's CA file is where a deployment mounts it: the test points at a file
        // of its own instead, and at nothing else.
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = text.parse().unwrap();
        let in_file: TlsConfig = table["tls"].clone().try_into().unwrap();
        assert_eq!(
            in_file,
            TlsConfig {
                ca: Some("/etc/shoal/tls/ca.crt".into()),
                ..TlsConfig::default()
            }
        );
        let pki = shoal_core::testing::TestPki::new();
        let ca = pki.ca_path().to_str().unwrap().to_owned();
        let c: Config = Sources::new(Some(path), ENV_PREFIX)
            .load_with_env(vec![("SHOAL_PROXY_TLS__CA".into(), ca)])
            .unwrap_or_else(|e| panic!("{e}"));
        // The example spells out the defaults, apart from where it says otherwise.
        let expected = Config {
            origins: c.origins.clone(),
            tls: pki.client(),
            ..Config::default()
        };
        assert_eq!(c, expected);
        assert_eq!(c.origins.len(), 3);
    }
}
