//! The agent's configuration: `deploy/config/agent.toml` documents every key, and a test
//! loads that file with the real loader.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_core::auth::{Secret, check_token};
use shoal_core::config::Validate;
use shoal_core::origin_client::{base_url, scheme_problem};
use shoal_core::telemetry::ServerConfig;
use shoal_core::tls::{AGENT_SUFFIX, Needs, PeerIdentity, Tls, TlsConfig};
use shoal_core::units::{ByteRate, ByteSize, duration};

/// The environment prefix of the agent's config keys.
pub const ENV_PREFIX: &str = "SHOAL_AGENT_";

/// Why an agent without metainfo keys does not start (unless `insecure = true`).
pub const NO_METAINFO_KEYS: &str = "no key configured: add the origins' public key (`openssl pkey -pubout`), or set insecure = true";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The registry API for local clients (docker, containerd, podman). It stays plain HTTP
    /// whatever `tls` says: its clients are on this host and reach it on loopback.
    pub listen: SocketAddr,
    /// The tracker's base URL; empty: no tracker (metainfo from the origins, and the origins
    /// as the only peers). `https://` with TLS on, `http://` in plaintext.
    pub tracker: String,
    /// The origins' base URLs, as in the origins' own member list.
    pub origins: Vec<String>,
    /// `/health`, `/ready` and `/metrics` on another address as well (for probes and
    /// scrapers that cannot reach `listen` on loopback); empty: only on `listen`.
    pub ops_listen: String,
    /// How long requests in flight may take to finish after SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Accept metainfo that no configured key signed, and talk to origins and tracker with
    /// no read token. Only for a network that nothing but Shoal's parts can reach.
    pub insecure: bool,
    pub credentials: Credentials,
    pub cache: CacheConfig,
    pub peer: PeerConfig,
    pub swarm: SwarmConfig,
    /// Bounds on the HTTP server's clients (`shoal_core::telemetry::ServerConfig`).
    pub server: ServerConfig,
    /// The origins and the tracker verified against `ca`, and the peer protocol over
    /// mutual TLS: the certificate names this agent `<name>.agent.shoal`.
    pub tls: TlsConfig,
}

/// The cluster's credentials as an agent holds them (`shoal_core::auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Credentials {
    /// The cluster's read token, presented to the origins and the tracker.
    pub read_token: Secret,
    /// The origins' metainfo public keys: PEM text with one or more Ed25519 keys as
    /// `PUBLIC KEY` (`openssl pkey -pubout`) or `CERTIFICATE` blocks. Metainfo that none of
    /// them signed is refused. Several keys let the origins' key be rotated. Empty: the
    /// agent does not start unless `insecure = true`.
    pub metainfo_keys: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// Where blobs, their metainfo and downloads in progress live.
    pub dir: PathBuf,
    /// Bytes of blobs kept; past it the least recently used blobs that are neither seeding
    /// nor being served are removed.
    pub max_size: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerConfig {
    /// The peer-protocol address other hosts dial for pieces.
    pub listen: SocketAddr,
    /// The IP other peers should dial; empty: the tracker uses the announce's source address.
    pub advertise_ip: String,
    /// Piece bytes per second sent to peers, all connections together; 0: unlimited.
    pub egress: ByteRate,
    /// Piece bytes per second received from peers and origins; 0: unlimited.
    pub ingress: ByteRate,
    /// Piece bytes held in memory between receiving and writing them; past it the agent
    /// stops reading pieces until the disk catches up.
    pub max_unwritten: ByteSize,
    /// Piece bytes held in memory between reading them from the cache and sending them to
    /// peers, every upload together; past it uploads wait for slow sockets.
    pub max_unsent: ByteSize,
    /// Peer connections made to this agent from one address at once; more are refused.
    pub max_inbound_per_addr: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwarmConfig {
    /// How long a complete blob keeps being seeded after its last upload to a peer.
    #[serde(with = "duration")]
    pub seed_idle: Duration,
    /// Blobs at most this long (configs) come straight from an origin, verified, instead of
    /// through the swarm. 0: everything but manifests goes through the swarm.
    pub direct_max: ByteSize,
    /// A client's download is abandoned when no piece of the blob arrives for this long.
    /// The swarm download itself goes on.
    #[serde(with = "duration")]
    pub stall_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            tracker: "https://127.0.0.1:7070".into(),
            origins: vec!["https://127.0.0.1:9000".into()],
            ops_listen: String::new(),
            shutdown_grace: Duration::from_secs(10),
            insecure: false,
            credentials: Credentials::default(),
            cache: CacheConfig::default(),
            peer: PeerConfig::default(),
            swarm: SwarmConfig::default(),
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: PathBuf::from("/var/lib/shoal/agent"),
            max_size: ByteSize::gib(20),
        }
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7100)),
            advertise_ip: String::new(),
            egress: ByteRate(0),
            ingress: ByteRate(0),
            max_unwritten: ByteSize(shoal_p2p::DEFAULT_MAX_UNWRITTEN_BYTES),
            max_unsent: ByteSize(shoal_p2p::DEFAULT_MAX_UNSENT_BYTES),
            max_inbound_per_addr: shoal_p2p::DEFAULT_MAX_INBOUND_PER_ADDR,
        }
    }
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            seed_idle: Duration::from_secs(300),
            direct_max: ByteSize(64 << 10),
            stall_timeout: Duration::from_secs(120),
        }
    }
}

impl Config {
    /// The advertised address, if one is set (checked by [`Validate`]).
    pub fn advertise_ip(&self) -> Option<IpAddr> {
        self.peer.advertise_ip.trim().parse().ok()
    }

    /// The tracker's base URL, if one is configured.
    pub fn tracker_url(&self) -> Option<String> {
        let t = self.tracker.trim();
        (!t.is_empty()).then(|| base_url(t, self.tls.enabled()))
    }

    /// This agent's TLS and the peer identity its certificate gives it; `None` in
    /// plaintext. Refused: a certificate that does not name an agent.
    pub fn peer_tls(&self) -> Result<Option<(Tls, PeerIdentity)>, String> {
        let Some(tls) = Tls::from_config(&self.tls).map_err(|e| format!("tls: {e}"))? else {
            return Ok(None);
        };
        let me = tls.identity().map_err(|e| {
            format!("tls.cert: {e}: an agent's certificate names it <name>{AGENT_SUFFIX}")
        })?;
        if me.origin {
            return Err(format!(
                "tls.cert names the origin {:?}: an agent's certificate names it \
                 <name>{AGENT_SUFFIX}",
                me.name
            ));
        }
        Ok(Some((tls, me)))
    }

    /// The extra address for `/health`, `/ready`, `/metrics`, if one is set.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_listen.trim().parse().ok()
    }
}

fn is_base_url(s: &str, tls: bool) -> bool {
    reqwest::Url::parse(&base_url(s, tls))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some()
}

impl Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        self.server.validate("server", problems);
        let before = problems.len();
        self.tls.validate(
            Needs {
                cert: true,
                ca: true,
            },
            problems,
        );
        if problems.len() == before
            && let Err(e) = self.peer_tls()
        {
            problems.push(e);
        }
        let tls = self.tls.enabled();
        if self.origins.is_empty() {
            problems.push("`origins`: at least one origin base URL is needed".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, o) in self.origins.iter().enumerate() {
            if o.trim().is_empty() {
                problems.push(format!("`origins[{i}]` is empty"));
            } else if !is_base_url(o, tls) {
                problems.push(format!("`origins[{i}]` = {o:?} is not a base URL"));
            } else if !seen.insert(base_url(o, tls)) {
                problems.push(format!("`origins`: {o:?} is listed twice"));
            } else {
                problems.extend(scheme_problem(&format!("`origins[{i}]`"), o, tls));
            }
        }
        if !self.tracker.trim().is_empty() {
            if !is_base_url(&self.tracker, tls) {
                problems.push(format!(
                    "`tracker` = {:?} is not a base URL (leave it empty for no tracker)",
                    self.tracker
                ));
            } else {
                problems.extend(scheme_problem("`tracker`", &self.tracker, tls));
            }
        }
        if self.peer.max_unwritten.bytes() == 0 {
            problems.push("`peer.max_unwritten` must be more than 0".into());
        }
        if self.peer.max_unsent.bytes() == 0 {
            problems.push("`peer.max_unsent` must be more than 0".into());
        }
        if self.peer.max_inbound_per_addr == 0 {
            problems.push("`peer.max_inbound_per_addr` must be at least 1".into());
        }
        let adv = self.peer.advertise_ip.trim();
        if !adv.is_empty() {
            match adv.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => problems.push(format!(
                    "`peer.advertise_ip` = {adv:?} cannot be dialled by peers"
                )),
                Ok(_) => {}
                Err(_) => problems.push(format!(
                    "`peer.advertise_ip` = {adv:?} is not an IP address (leave it empty to let the tracker use the source address)"
                )),
            }
        }
        if !self.ops_listen.trim().is_empty() && self.ops_addr().is_none() {
            problems.push(format!(
                "`ops_listen` = {:?} is not an address such as 0.0.0.0:9102",
                self.ops_listen
            ));
        }
        if self.cache.dir.as_os_str().is_empty() {
            problems.push("`cache.dir` must name a directory".into());
        }
        if self.cache.max_size.bytes() == 0 {
            problems.push("`cache.max_size` must be more than 0".into());
        }
        if self.credentials.metainfo_keys.trim().is_empty() {
            if !self.insecure {
                problems.push(format!("`credentials.metainfo_keys`: {NO_METAINFO_KEYS}"));
            }
        } else if let Err(e) =
            shoal_core::signature::MetainfoTrust::from_pem(&self.credentials.metainfo_keys, false)
        {
            problems.push(format!(
                "`credentials.metainfo_keys` must hold Ed25519 PUBLIC KEY or CERTIFICATE PEM blocks: {e}"
            ));
        }
        if self.swarm.stall_timeout < Duration::from_secs(1) {
            problems.push("`swarm.stall_timeout` must be at least 1s".into());
        }
        check_token(
            "`credentials.read_token`",
            &self.credentials.read_token,
            problems,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::config::Sources;

    fn example() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/agent.toml")
    }

    /// `openssl pkey -pubout`.
    const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\n\
        MCowBQYDK2VwAyEAODXC35grld8jyBNVc/6piT4VmERxcpfi/0Epu9+O3FA=\n\
        -----END PUBLIC KEY-----\n";

    fn with_keys() -> Vec<(String, String)> {
        vec![(
            "SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS".into(),
            PUBLIC.into(),
        )]
    }

    fn plaintext() -> (String, String) {
        ("SHOAL_AGENT_TLS__PLAINTEXT".into(), "true".into())
    }

    #[test]
    fn the_example_config_loads_and_shows_every_default() {
        // The example leaves the origins' key to the deployment, which the checks want. Its
        // certificate files are where a deployment mounts them: the test points at files of
        // its own instead, and at nothing else.
        let text = std::fs::read_to_string(example()).unwrap();
        let table: toml::Table = text.parse().unwrap();
        let in_file: TlsConfig = table["tls"].clone().try_into().unwrap();
        assert_eq!(
            in_file,
            TlsConfig::files(
                "/etc/shoal/tls/tls.crt",
                "/etc/shoal/tls/tls.key",
                "/etc/shoal/tls/ca.crt"
            )
        );
        let pki = shoal_core::testing::TestPki::new();
        let tls = pki.agent("node-1");
        let path = |p: &Option<PathBuf>| p.as_ref().unwrap().to_str().unwrap().to_owned();
        let mut env = with_keys();
        env.extend([
            ("SHOAL_AGENT_TLS__CERT".into(), path(&tls.cert)),
            ("SHOAL_AGENT_TLS__KEY".into(), path(&tls.key)),
            ("SHOAL_AGENT_TLS__CA".into(), path(&tls.ca)),
        ]);
        let loaded: Config = Sources::new(Some(example()), ENV_PREFIX)
            .load_with_env(env)
            .unwrap();
        let mut want = Config::default();
        want.credentials.metainfo_keys = PUBLIC.into();
        want.tls = tls;
        assert_eq!(loaded, want, "the example must show the defaults");
        let without: Result<Config, _> =
            Sources::new(Some(example()), ENV_PREFIX).load_with_env(vec![]);
        assert!(format!("{without:?}").contains("credentials.metainfo_keys"));

        // Every key the config knows is written in the example, and nothing else.
        let example = table;
        let defaults = toml::Table::try_from(want).unwrap();
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
    fn the_keys_the_chart_renders_keep_their_names() {
        let text = r#"
listen = "127.0.0.1:18081"
tracker = "http://tracker.shoal:7070"
origins = ["http://origin-0.shoal:9000", "http://origin-1.shoal:9000"]
shutdown_grace = "30s"
[cache]
dir = "/data/shoal"
max_size = "50GiB"
[peer]
listen = "0.0.0.0:17100"
advertise_ip = "10.1.2.3"
egress = "100MiB/s"
ingress = "0"
[swarm]
seed_idle = "10m"
[tls]
plaintext = true
"#;
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        let mut env = with_keys();
        env.push((
            "SHOAL_AGENT_CACHE__MAX_SIZE".to_string(),
            "60GiB".to_string(),
        ));
        let c: Config = Sources::new(Some(f.path().into()), ENV_PREFIX)
            .load_with_env(env)
            .unwrap();
        assert_eq!(c.listen.port(), 18081);
        assert_eq!(c.peer.listen.port(), 17100);
        assert_eq!(c.advertise_ip(), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            c.tracker_url().as_deref(),
            Some("http://tracker.shoal:7070")
        );
        assert_eq!(c.origins.len(), 2);
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.cache.dir, PathBuf::from("/data/shoal"));
        assert_eq!(c.cache.max_size, ByteSize::gib(60));
        assert_eq!(c.peer.egress.per_second(), Some(100 << 20));
        assert_eq!(c.peer.ingress.per_second(), None);
        assert_eq!(c.swarm.seed_idle, Duration::from_secs(600));
    }

    #[test]
    fn metainfo_keys_load_as_openssl_writes_them_from_a_file_or_the_environment() {
        // In a TOML multi-line string as a deploy script writes it.
        let public = PUBLIC;
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            format!(
                "tracker = \"\"\norigins = [\"http://o:9000\"]\n\
                 [credentials]\nmetainfo_keys = \"\"\"\n{public}\"\"\"\n[tls]\nplaintext = true\n"
            ),
        )
        .unwrap();
        let c: Config = Sources::new(Some(f.path().into()), ENV_PREFIX)
            .load_with_env(vec![])
            .unwrap();
        assert_eq!(c.credentials.metainfo_keys, public);
        let c: Config = Sources::new(None, ENV_PREFIX)
            .load_with_env(vec![
                (
                    "SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS".into(),
                    public.into(),
                ),
                plaintext(),
                ("SHOAL_AGENT_TRACKER".into(), "".into()),
                ("SHOAL_AGENT_ORIGINS".into(), r#"["o:9000"]"#.into()),
            ])
            .unwrap();
        assert_eq!(c.credentials.metainfo_keys, public);
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![(
                "SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS".into(),
                "not a key".into(),
            )])
            .unwrap_err();
        assert!(
            err.problems
                .join("\n")
                .contains("credentials.metainfo_keys"),
            "{err:?}"
        );
    }

    #[test]
    fn every_problem_is_named() {
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![
                (
                    "SHOAL_AGENT_ORIGINS".into(),
                    r#"["a:1", "http://a:1", ""]"#.into(),
                ),
                ("SHOAL_AGENT_TRACKER".into(), "ftp://x".into()),
                ("SHOAL_AGENT_PEER__ADVERTISE_IP".into(), "nowhere".into()),
                ("SHOAL_AGENT_CACHE__MAX_SIZE".into(), "0".into()),
                ("SHOAL_AGENT_OPS_LISTEN".into(), "everywhere".into()),
                (
                    "SHOAL_AGENT_CREDENTIALS__READ_TOKEN".into(),
                    "password".into(),
                ),
                plaintext(),
            ])
            .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "listed twice",
            "origins[2]",
            "tracker",
            "peer.advertise_ip",
            "cache.max_size",
            "ops_listen",
            "`credentials.read_token` must be at least 16 characters",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        let mut env = with_keys();
        env.push(("SHOAL_AGENT_TRACKER".into(), "".into()));
        env.push(plaintext());
        env.push((
            "SHOAL_AGENT_ORIGINS".into(),
            r#"["http://127.0.0.1:9000"]"#.into(),
        ));
        let c: Config = Sources::new(None, ENV_PREFIX).load_with_env(env).unwrap();
        assert_eq!(c.tracker_url(), None);
    }
}
