//! The tracker's configuration: `deploy/config/tracker.toml` documents every key.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_core::auth::{Secret, check_token};
use shoal_core::config::Validate;
use shoal_core::origin_client::{base_url, scheme_problem};
use shoal_core::telemetry::ServerConfig;
use shoal_core::tls::{Needs, TlsConfig};
use shoal_core::units::{ByteSize, duration};

/// The environment prefix of the tracker's config keys.
pub const ENV_PREFIX: &str = "SHOAL_TRACKER_";

/// The longest `announce_interval`: agents clamp whatever a tracker answers to at most this
/// (`shoal_p2p::discovery::MAX_INTERVAL`), so a longer one would not be honoured.
pub const MAX_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(600);

/// The largest `handout_size`: agents keep at most this many peers of one answer
/// (`shoal_p2p::discovery::MAX_PEERS`).
pub const MAX_HANDOUT_SIZE: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the HTTP API (announce, metainfo, health, metrics) listens.
    pub listen: SocketAddr,
    /// The origins' base URLs, exactly as in every origin's own member list: placement on
    /// the ring hashes these strings. `https://` with TLS on, `http://` in plaintext.
    pub origins: Vec<String>,
    /// How many origins own each blob (the origins' `R`).
    pub replicas: usize,
    /// The most peers one announce answer holds, origins included.
    pub handout_size: usize,
    /// How often peers are told to announce.
    #[serde(with = "duration")]
    pub announce_interval: Duration,
    /// A peer that has not announced for this many intervals is dropped.
    pub expire_after_intervals: u32,
    /// Use the `addr` a peer announces instead of the request's source address (behind
    /// NAT, or on hosts with several interfaces). Off, an announced `addr` is ignored. On,
    /// an announce naming a loopback, link-local, unspecified, multicast, broadcast or cloud
    /// metadata address is refused.
    pub trust_announced_addr: bool,
    /// How often each origin's `/v1/info` is asked again for its peer id and port.
    #[serde(with = "duration")]
    pub origin_refresh: Duration,
    /// How long requests in flight may take to finish after SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Serve without a read token: anyone who reaches the tracker can then announce and
    /// steer which peers agents dial. Only for a network that nothing but Shoal's parts can
    /// reach.
    pub insecure: bool,
    pub credentials: Credentials,
    pub table: TableConfig,
    pub metainfo: MetainfoConfig,
    /// Bounds on the HTTP server's clients (`shoal_core::telemetry::ServerConfig`).
    pub server: ServerConfig,
    /// HTTPS for the API (`cert`, `key`), and the origins verified against `ca`.
    pub tls: TlsConfig,
}

/// The cluster's credentials as a tracker holds them (`shoal_core::auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Credentials {
    /// The cluster's read token: every announce and metainfo request must carry it, and the
    /// tracker presents it to the origins. Empty: refused at start unless `insecure = true`.
    pub read_token: Secret,
    /// The cluster's write token, if this tracker should accept it in place of the read
    /// token (the write token passes wherever the read token does). Never sent anywhere.
    pub write_token: Secret,
}

impl Credentials {
    /// Whether a request's bearer token is one of the configured tokens.
    pub fn accepts(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| self.read_token.matches(g) || self.write_token.matches(g))
    }
}

/// Bounds of the in-memory peer table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TableConfig {
    /// Swarms (blobs with at least one announced peer) held at once. An announce that
    /// would open another is refused with `503 TOOMANYREQUESTS`.
    pub max_swarms: usize,
    /// Entries (peer, blob) held at once, across all swarms. Past it, a new peer is
    /// answered but not recorded until expiry makes room.
    pub max_peers: usize,
    /// Entries in one swarm. Past it, a new peer is answered but not recorded.
    pub max_peers_per_swarm: usize,
    /// Entries (peer, blob) whose announces came from one source address, however many
    /// peer ids it uses. An announce that would record one more is refused with
    /// `429 TOOMANYREQUESTS`.
    pub max_entries_per_source: usize,
}

/// The metainfo cache in front of the origins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetainfoConfig {
    /// Bytes of encoded metainfo kept; the least recently used goes first.
    pub cache_size: ByteSize,
    /// Origin fetches in flight at once; further blobs wait their turn.
    pub max_concurrent_fetches: usize,
    /// How long one fetch from the origins may take before askers get `503 UNAVAILABLE`.
    #[serde(with = "duration")]
    pub fetch_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            origins: Vec::new(),
            replicas: 3,
            handout_size: 50,
            announce_interval: Duration::from_secs(3),
            expire_after_intervals: 3,
            trust_announced_addr: false,
            origin_refresh: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            insecure: false,
            credentials: Credentials::default(),
            table: TableConfig::default(),
            metainfo: MetainfoConfig::default(),
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            max_swarms: 100_000,
            max_peers: 1_000_000,
            max_peers_per_swarm: 200_000,
            max_entries_per_source: 2_000,
        }
    }
}

impl Default for MetainfoConfig {
    fn default() -> Self {
        MetainfoConfig {
            cache_size: ByteSize::mib(256),
            max_concurrent_fetches: 32,
            fetch_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// How long an entry lives without a fresh announce.
    pub fn peer_ttl(&self) -> Duration {
        self.announce_interval
            .saturating_mul(self.expire_after_intervals)
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        self.server.validate("server", problems);
        self.tls.validate(
            Needs {
                cert: true,
                ca: true,
            },
            problems,
        );
        let tls = self.tls.enabled();
        if self.origins.is_empty() {
            problems.push("`origins`: at least one origin base URL is needed".into());
        }
        for (i, o) in self.origins.iter().enumerate() {
            if o.trim().is_empty() {
                problems.push(format!("`origins[{i}]` is empty"));
            } else if reqwest::Url::parse(&base_url(o, tls))
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .and_then(|u| u.host_str().map(str::to_owned))
                .is_none()
            {
                problems.push(format!("`origins[{i}]` = {o:?} is not a base URL"));
            } else {
                problems.extend(scheme_problem(&format!("`origins[{i}]`"), o, tls));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for o in &self.origins {
            if !seen.insert(base_url(o, tls)) {
                problems.push(format!("`origins`: {o:?} is listed twice"));
            }
        }
        if self.replicas == 0 {
            problems.push("`replicas` must be at least 1".into());
        }
        if self.handout_size == 0 || self.handout_size > MAX_HANDOUT_SIZE {
            problems.push(format!(
                "`handout_size` must be 1 to {MAX_HANDOUT_SIZE} (agents keep no more peers of one answer)"
            ));
        }
        if self.announce_interval < Duration::from_secs(1)
            || self.announce_interval > MAX_ANNOUNCE_INTERVAL
        {
            problems.push(format!(
                "`announce_interval` must be 1s to {}s (agents clamp what a tracker says to that)",
                MAX_ANNOUNCE_INTERVAL.as_secs()
            ));
        }
        if self.credentials.read_token.is_empty() && !self.insecure {
            problems.push(
                "`credentials.read_token` is empty: set the cluster's read token (or \
                 `insecure = true` to let anyone who reaches the tracker announce and read \
                 metainfo)"
                    .into(),
            );
        }
        check_token(
            "`credentials.read_token`",
            &self.credentials.read_token,
            problems,
        );
        check_token(
            "`credentials.write_token`",
            &self.credentials.write_token,
            problems,
        );
        if self.expire_after_intervals < 2 {
            problems.push(
                "`expire_after_intervals` must be at least 2, or one late announce drops a peer"
                    .into(),
            );
        }
        if self.origin_refresh < Duration::from_secs(1) {
            problems.push("`origin_refresh` must be at least 1s".into());
        }
        let t = &self.table;
        for (name, v) in [
            ("table.max_swarms", t.max_swarms),
            ("table.max_peers", t.max_peers),
            ("table.max_peers_per_swarm", t.max_peers_per_swarm),
            ("table.max_entries_per_source", t.max_entries_per_source),
            (
                "metainfo.max_concurrent_fetches",
                self.metainfo.max_concurrent_fetches,
            ),
        ] {
            if v == 0 {
                problems.push(format!("`{name}` must be at least 1"));
            }
        }
        if self.metainfo.fetch_timeout.is_zero() {
            problems.push("`metainfo.fetch_timeout` must be more than 0s".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::config::Sources;
    use std::path::PathBuf;

    fn example_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/tracker.toml")
    }

    fn plaintext() -> (String, String) {
        ("SHOAL_TRACKER_TLS__PLAINTEXT".into(), "true".into())
    }

    #[test]
    fn the_example_config_loads_and_shows_every_default() {
        // The example leaves the token empty (it belongs in the environment), which the
        // checks refuse: give one the way a deployment would. Its certificate files are
        // where a deployment mounts them: the test points at files of its own instead.
        let text = std::fs::read_to_string(example_path()).unwrap();
        let example: toml::Table = text.parse().unwrap();
        let in_file: TlsConfig = example["tls"].clone().try_into().unwrap();
        assert_eq!(
            in_file,
            TlsConfig::files(
                "/etc/shoal/tls/tls.crt",
                "/etc/shoal/tls/tls.key",
                "/etc/shoal/tls/ca.crt"
            )
        );
        let pki = shoal_core::testing::TestPki::new();
        let tls = pki.server("tracker");
        let path = |p: &Option<PathBuf>| p.as_ref().unwrap().to_str().unwrap().to_owned();
        let token = "0123456789abcdef0123456789abcdef";
        let loaded: Config = Sources::new(Some(example_path()), ENV_PREFIX)
            .load_with_env(vec![
                ("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN".into(), token.into()),
                ("SHOAL_TRACKER_TLS__CERT".into(), path(&tls.cert)),
                ("SHOAL_TRACKER_TLS__KEY".into(), path(&tls.key)),
                ("SHOAL_TRACKER_TLS__CA".into(), path(&tls.ca)),
            ])
            .unwrap();
        assert_eq!(loaded.credentials.read_token, Secret::new(token));
        let expected = Config {
            origins: loaded.origins.clone(),
            credentials: loaded.credentials.clone(),
            tls,
            ..Config::default()
        };
        assert!(!loaded.origins.is_empty());
        assert_eq!(loaded, expected, "the example must show the defaults");

        // Every key the config knows is written in the example.
        let defaults = toml::Table::try_from(expected).unwrap();
        fn keys(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in t {
                match v {
                    toml::Value::Table(t) => keys(t, &format!("{prefix}{k}."), out),
                    _ => out.push(format!("{prefix}{k}")),
                }
            }
        }
        let (mut want, mut have) = (Vec::new(), Vec::new());
        keys(&defaults, "", &mut want);
        keys(&example, "", &mut have);
        want.sort();
        have.sort();
        assert_eq!(have, want);
    }

    #[test]
    fn without_tls_or_plaintext_the_tracker_is_refused_and_urls_follow_the_mode() {
        let base = vec![
            (
                "SHOAL_TRACKER_CREDENTIALS__READ_TOKEN".to_string(),
                "0123456789abcdef0123456789abcdef".to_string(),
            ),
            (
                "SHOAL_TRACKER_ORIGINS".to_string(),
                r#"["https://o:9000"]"#.to_string(),
            ),
        ];
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(base.clone())
            .unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("tls.cert and tls.key are not set"), "{all}");
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>([base, vec![plaintext()]].concat())
            .unwrap_err();
        let all = err.problems.join("\n");
        assert!(
            all.contains("`origins[0]`") && all.contains("is https:// but tls.plaintext = true"),
            "{all}"
        );
    }

    #[test]
    fn every_problem_is_named() {
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![
                ("SHOAL_TRACKER_REPLICAS".into(), "0".into()),
                ("SHOAL_TRACKER_HANDOUT_SIZE".into(), "0".into()),
                ("SHOAL_TRACKER_TABLE__MAX_SWARMS".into(), "0".into()),
                ("SHOAL_TRACKER_ANNOUNCE_INTERVAL".into(), "1h".into()),
                (
                    "SHOAL_TRACKER_CREDENTIALS__WRITE_TOKEN".into(),
                    "short".into(),
                ),
                (
                    "SHOAL_TRACKER_ORIGINS".into(),
                    r#"["a:1", "http://a:1"]"#.into(),
                ),
                plaintext(),
            ])
            .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "replicas",
            "handout_size",
            "table.max_swarms",
            "listed twice",
            "announce_interval",
            "`credentials.read_token` is empty",
            "`credentials.write_token` must be at least",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![])
            .unwrap_err();
        assert!(err.problems.join("\n").contains("origins"));
    }

    #[test]
    fn a_tracker_without_a_read_token_needs_insecure_in_so_many_words() {
        let origins = (
            "SHOAL_TRACKER_ORIGINS".to_string(),
            r#"["http://o:9000"]"#.to_string(),
        );
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![origins.clone()])
            .unwrap_err();
        assert!(
            err.problems.join("\n").contains("credentials.read_token"),
            "{:?}",
            err.problems
        );
        let c: Config = Sources::new(None, ENV_PREFIX)
            .load_with_env(vec![
                origins.clone(),
                ("SHOAL_TRACKER_INSECURE".into(), "true".into()),
                plaintext(),
            ])
            .unwrap();
        assert!(c.insecure && c.credentials.read_token.is_empty());
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![
                origins,
                (
                    "SHOAL_TRACKER_CREDENTIALS__READ_TOKEN".into(),
                    "secret".into(),
                ),
            ])
            .unwrap_err();
        assert!(
            err.problems.join("\n").contains("at least 16"),
            "{:?}",
            err.problems
        );
    }
}
