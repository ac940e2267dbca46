//! The origin's configuration: every key, its default, and the checks it must pass.
//! `deploy/config/origin.toml` documents each key; a test loads that file with the real
//! loader so the two cannot drift apart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use shoal_core::auth::Secret;
use shoal_core::config::Validate;
use shoal_core::origin_client::{base_url, scheme_problem};
use shoal_core::peer::PeerId;
use shoal_core::telemetry::ServerConfig;
use shoal_core::tls::{Needs, ORIGIN_SUFFIX, PeerIdentity, Tls, TlsConfig};
use shoal_core::units::{ByteRate, ByteSize, duration};

/// The environment prefix of the origin's config keys.
pub const ENV_PREFIX: &str = "SHOAL_ORIGIN_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The HTTP API (`origin/API.md`), `/health`, `/ready` and `/metrics`.
    pub listen: SocketAddr,
    /// Blobs (`blobs/`, `tmp/`) and the SQLite index (`origin.db`).
    pub data_dir: PathBuf,
    /// This origin's base URL exactly as the member list spells it. Empty: the origin finds
    /// itself by asking each member who it is.
    pub advertise_url: String,
    /// How many origins hold each blob and tag (fewer while the cluster is smaller).
    pub replicas: usize,
    /// The cluster's credentials: what writes and reads must present, and the metainfo key.
    pub credentials: Credentials,
    /// Serve without a write token: anyone who reaches this origin can then change what the
    /// whole fleet runs; and without a metainfo key (metainfo then goes out unsigned). Only
    /// for a network that nothing but Shoal's parts can reach.
    pub insecure: bool,
    /// How long requests in flight may finish after SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// The most entries one page of a listing holds, whatever `n` asks for.
    pub max_page: usize,
    pub peer: PeerConfig,
    pub cluster: ClusterConfig,
    pub queue: QueueConfig,
    pub repair: RepairConfig,
    pub backend: BackendConfig,
    /// Bounds on the HTTP server's clients (`shoal_core::telemetry::ServerConfig`).
    pub server: ServerConfig,
    /// HTTPS for the API and to the other origins, and the peer protocol over mutual TLS:
    /// the certificate names this origin `<name>.origin.shoal` (and its HTTPS host names).
    pub tls: TlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            data_dir: PathBuf::from("/var/lib/shoal/origin"),
            advertise_url: String::new(),
            replicas: 3,
            credentials: Credentials::default(),
            insecure: false,
            shutdown_grace: Duration::from_secs(10),
            max_page: 10_000,
            peer: PeerConfig::default(),
            cluster: ClusterConfig::default(),
            queue: QueueConfig::default(),
            repair: RepairConfig::default(),
            backend: BackendConfig::default(),
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// The cluster's credentials as an origin holds them (`shoal_core::auth`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Credentials {
    /// The bearer token every write needs (blobs, tags, referrers, deletes, internal copies);
    /// origins present it to each other. Empty: refused at start unless `insecure = true`.
    pub write_token: Secret,
    /// Set: every read needs this token (or the write token). Empty: reads are open to
    /// whoever reaches the origin.
    pub read_token: Secret,
    /// The Ed25519 private key (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes
    /// it) that signs the metainfo this origin serves; agents verify with its public key.
    /// Empty: the origin does not start unless `insecure = true` (it then serves metainfo
    /// unsigned, which only insecure agents accept).
    pub metainfo_key: Secret,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerConfig {
    /// The peer protocol: where swarms fetch pieces from this origin.
    pub listen: SocketAddr,
    /// The peer id (40 hex characters). Empty: a random one at each start, or with TLS on
    /// the id of the name the certificate carries (set, it must be that one).
    pub id: String,
    /// The peer port announced to others. 0: the port `peer.listen` is bound to.
    pub port: u16,
    /// Piece bytes per second sent to peers, every swarm together; 0: unlimited.
    pub egress: ByteRate,
    /// Piece bytes per second received over the peer protocol; 0: unlimited.
    pub ingress: ByteRate,
    /// Piece bytes held in memory between reading them from disk and sending them to peers,
    /// every upload together.
    pub max_unsent: ByteSize,
    /// Peer connections made to this origin from one address at once; more are refused.
    pub max_inbound_per_addr: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            id: String::new(),
            port: 0,
            egress: ByteRate(0),
            ingress: ByteRate(0),
            max_unsent: ByteSize(shoal_p2p::DEFAULT_MAX_UNSENT_BYTES),
            // One agent opens a connection per blob it pulls.
            max_inbound_per_addr: 4 * shoal_p2p::DEFAULT_MAX_INBOUND_PER_ADDR,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// Every origin's base URL (`https://origin-0.shoal:9000`; `http://` with
    /// `tls.plaintext = true`), this one included, the same list on every origin. Empty with `dns` empty: a cluster of this origin alone.
    pub members: Vec<String>,
    /// Instead of `members`: `host:port`, where the host resolves to every origin's address.
    pub dns: String,
    /// How often `dns` is resolved again.
    #[serde(with = "duration")]
    pub dns_refresh: Duration,
    /// How often each origin asks every other whether it is alive.
    #[serde(with = "duration")]
    pub health_interval: Duration,
    /// How long a health check may take before it counts as failed.
    #[serde(with = "duration")]
    pub health_timeout: Duration,
    /// Failed health checks in a row before an origin drops out of placement.
    pub down_after: u32,
    /// How long a connection to another origin may take to open.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            members: Vec::new(),
            dns: String::new(),
            dns_refresh: Duration::from_secs(30),
            health_interval: Duration::from_secs(2),
            health_timeout: Duration::from_secs(1),
            down_after: 2,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Replica copies and write-backs in flight at once.
    pub concurrency: usize,
    /// The first retry's delay; each further failure doubles it.
    #[serde(with = "duration")]
    pub retry_min: Duration,
    /// The longest delay between retries.
    #[serde(with = "duration")]
    pub retry_max: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            concurrency: 4,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RepairConfig {
    /// How often the repair pass runs even when nothing changed. 0 turns repair off.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// How long membership must stay unchanged before a pass runs because of a change.
    #[serde(with = "duration")]
    pub settle: Duration,
    /// Whether an origin removes its copy of a blob or tag it does not own once all the
    /// owners hold it.
    pub drop_strays: bool,
    /// Entries per page when reading other origins' listings.
    pub page: usize,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            interval: Duration::from_secs(600),
            settle: Duration::from_secs(10),
            drop_strays: true,
            page: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// No backend: the origins' copies are the only ones.
    None,
    /// A directory, possibly shared by every origin (a network file system).
    #[default]
    Filesystem,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendConfig {
    pub kind: BackendKind,
    /// The directory of the filesystem backend. Empty: `<data_dir>/backend`.
    pub path: PathBuf,
}

impl Config {
    /// The filesystem backend's directory.
    pub fn backend_path(&self) -> PathBuf {
        if self.backend.path.as_os_str().is_empty() {
            self.data_dir.join("backend")
        } else {
            self.backend.path.clone()
        }
    }

    /// The configured peer id, if one is set and valid.
    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer.id.parse().ok()
    }

    /// The static member list, normalised to base URLs.
    pub fn static_members(&self) -> Vec<String> {
        let tls = self.tls.enabled();
        let mut m: Vec<String> = self
            .cluster
            .members
            .iter()
            .map(|m| base_url(m, tls))
            .collect();
        m.sort();
        m.dedup();
        m
    }
}

/// `host[:port]` or `[v6]:port`, nothing more.
fn valid_authority(a: &str) -> bool {
    if a.is_empty() || a.chars().any(|c| c.is_whitespace() || "/?#@".contains(c)) {
        return false;
    }
    let (host, port) = match a.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return false,
            },
            None => return false,
        },
        None => match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        },
    };
    !host.is_empty() && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

fn check_url(what: &str, url: &str, tls: bool, problems: &mut Vec<String>) {
    let ok = match base_url(url, tls).split_once("://") {
        Some(("http" | "https", rest)) => valid_authority(rest),
        _ => false,
    };
    if !ok {
        problems.push(format!(
            "{what} {url:?} is not a base URL such as https://origin-0:9000"
        ));
    } else {
        problems.extend(scheme_problem(what, url, tls));
    }
}

impl Config {
    /// This origin's TLS and the peer identity its certificate gives it; `None` in
    /// plaintext. Refused: a certificate that does not name an origin, or a `peer.id` that
    /// is not the certificate's.
    pub fn peer_tls(&self) -> Result<Option<(Tls, PeerIdentity)>, String> {
        let Some(tls) = Tls::from_config(&self.tls).map_err(|e| format!("tls: {e}"))? else {
            return Ok(None);
        };
        let me = tls.identity().map_err(|e| {
            format!("tls.cert: {e}: an origin's certificate names it <name>{ORIGIN_SUFFIX}")
        })?;
        if !me.origin {
            return Err(format!(
                "tls.cert names the peer {:?}, not an origin: an origin's certificate names it \
                 <name>{ORIGIN_SUFFIX}",
                me.name
            ));
        }
        if let Some(id) = self.peer_id()
            && id != me.id
        {
            return Err(format!(
                "peer.id {id} is not the id of {:?}, the name in tls.cert ({}): leave peer.id \
                 empty with TLS on",
                me.name, me.id
            ));
        }
        Ok(Some((tls, me)))
    }

    /// Why this config must not serve: no write token and no `insecure = true`.
    pub fn credentials_problem(&self) -> Option<String> {
        (self.credentials.write_token.is_empty() && !self.insecure).then(|| {
            "credentials.write_token is not set: anyone who reaches this origin could change what \
             the fleet runs. Set it (the same token on every origin and proxy; \
             `openssl rand -hex 32`), or set insecure = true for a network that only Shoal's \
             parts can reach"
                .to_owned()
        })
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.peer.max_unsent.bytes() == 0 {
            problems.push("peer.max_unsent must be more than 0".into());
        }
        if self.peer.max_inbound_per_addr == 0 {
            problems.push("peer.max_inbound_per_addr must be at least 1".into());
        }
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
        problems.extend(self.credentials_problem());
        let creds = &self.credentials;
        shoal_core::auth::check_token("credentials.write_token", &creds.write_token, problems);
        shoal_core::auth::check_token("credentials.read_token", &creds.read_token, problems);
        if self.replicas == 0 {
            problems.push("replicas must be at least 1".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir must be set".into());
        }
        if self.max_page == 0 {
            problems.push("max_page must be at least 1".into());
        }
        if !self.peer.id.is_empty() && self.peer_id().is_none() {
            problems.push("peer.id must be 40 lowercase hex characters, or empty".into());
        }
        let tls = self.tls.enabled();
        if !self.advertise_url.is_empty() {
            check_url("advertise_url", &self.advertise_url, tls, problems);
        }
        for m in &self.cluster.members {
            check_url("cluster.members entry", m, tls, problems);
        }
        let c = &self.cluster;
        if !c.members.is_empty() && !c.dns.is_empty() {
            problems.push("set cluster.members or cluster.dns, not both".into());
        }
        if !c.dns.is_empty() {
            match c.dns.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => problems.push(format!(
                    "cluster.dns {:?} must be host:port, such as origins.shoal:9000",
                    c.dns
                )),
            }
        }
        if !c.members.is_empty() && !self.advertise_url.is_empty() {
            let me = base_url(&self.advertise_url, tls);
            if !self.static_members().contains(&me) {
                problems.push(format!(
                    "advertise_url {me:?} is not in cluster.members; write it exactly as the member list does"
                ));
            }
        }
        for (name, d) in [
            ("cluster.health_interval", c.health_interval),
            ("cluster.health_timeout", c.health_timeout),
            ("cluster.connect_timeout", c.connect_timeout),
            ("cluster.dns_refresh", c.dns_refresh),
            ("queue.retry_min", self.queue.retry_min),
        ] {
            if d.is_zero() {
                problems.push(format!("{name} must be more than 0"));
            }
        }
        if c.down_after == 0 {
            problems.push("cluster.down_after must be at least 1".into());
        }
        if self.queue.concurrency == 0 {
            problems.push("queue.concurrency must be at least 1".into());
        }
        if self.queue.retry_max < self.queue.retry_min {
            problems.push("queue.retry_max must not be less than queue.retry_min".into());
        }
        if self.repair.page == 0 {
            problems.push("repair.page must be at least 1".into());
        }
        match self.credentials.metainfo_key.get() {
            Some(pem) => {
                if let Err(e) = shoal_core::signature::MetainfoSigner::from_pem(pem) {
                    problems.push(format!(
                        "credentials.metainfo_key cannot sign: {e} (generate one with `openssl genpkey -algorithm ed25519`)"
                    ));
                }
            }
            None if !self.insecure => problems.push(crate::Error::NoMetainfoKey.to_string()),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::config::Sources;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    /// `openssl genpkey -algorithm ed25519`: PKCS#8 v1, without the public key.
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIDKntVjQaHAIhZle5+UJ7EocExEj6qmu4kjDCzQB+VQU\n\
        -----END PRIVATE KEY-----\n";

    fn plaintext() -> (String, String) {
        ("SHOAL_ORIGIN_TLS__PLAINTEXT".into(), "true".into())
    }

    #[test]
    fn defaults_are_valid_with_a_write_token_a_metainfo_key_and_plaintext() {
        let c: Config = Sources::new(None, ENV_PREFIX)
            .load_with_env(vec![
                ("SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN".into(), TOKEN.into()),
                ("SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY".into(), KEY.into()),
                plaintext(),
            ])
            .unwrap();
        let mut want = Config::default();
        want.credentials.write_token = Secret::new(TOKEN);
        want.credentials.metainfo_key = Secret::new(KEY);
        want.tls = TlsConfig::plaintext();
        assert_eq!(c, want);
        assert_eq!(
            c.backend_path(),
            PathBuf::from("/var/lib/shoal/origin/backend")
        );
    }

    #[test]
    fn env_and_problems() {
        let env = vec![
            ("SHOAL_ORIGIN_REPLICAS".to_string(), "0".to_string()),
            (
                "SHOAL_ORIGIN_CLUSTER__MEMBERS".to_string(),
                "[\"http://a:1\", \"b:2\"]".to_string(),
            ),
            (
                "SHOAL_ORIGIN_ADVERTISE_URL".to_string(),
                "http://c:3".to_string(),
            ),
            ("SHOAL_ORIGIN_CLUSTER__DNS".to_string(), "nope".to_string()),
        ];
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(env)
            .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "replicas",
            "not both",
            "host:port",
            "not in cluster.members",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
    }

    #[test]
    fn no_write_token_is_refused_unless_insecure() {
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![])
            .unwrap_err();
        assert!(
            err.problems.iter().any(|p| p.contains("write_token")),
            "{:?}",
            err.problems
        );
        let c: Config = Sources::new(None, ENV_PREFIX)
            .load_with_env(vec![
                ("SHOAL_ORIGIN_INSECURE".into(), "true".into()),
                plaintext(),
            ])
            .unwrap();
        assert!(c.insecure && c.credentials.write_token.is_empty());
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![
                (
                    "SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN".into(),
                    "short".into(),
                ),
                ("SHOAL_ORIGIN_CREDENTIALS__READ_TOKEN".into(), "tiny".into()),
            ])
            .unwrap_err();
        let all = err.problems.join("\n");
        assert!(
            all.contains("credentials.write_token must be at least")
                && all.contains("credentials.read_token must be at least"),
            "{all}"
        );
    }

    #[test]
    fn urls_are_checked_and_their_scheme_follows_the_tls_mode() {
        for (ok, tls) in [
            ("http://a:1", false),
            ("https://a:1", true),
            ("a:9000", false),
            ("a:9000", true),
            ("origin-0", true),
            ("http://[::1]:9000", false),
            ("10.0.0.5:9000/", false),
        ] {
            let mut p = Vec::new();
            check_url("m", ok, tls, &mut p);
            assert!(p.is_empty(), "{ok}: {p:?}");
        }
        for (bad, tls) in [
            ("not a url", false),
            ("https://a:1", false),
            ("http://a:1", true),
            ("ftp://a:1", true),
            ("http://a:99999", false),
            ("http://a/b", false),
            ("http://", false),
            ("http://u@a:1", false),
            ("[::1", false),
        ] {
            let mut p = Vec::new();
            check_url("m", bad, tls, &mut p);
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
        }
    }

    #[test]
    fn without_tls_or_plaintext_the_origin_is_refused() {
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![
                ("SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN".into(), TOKEN.into()),
                ("SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY".into(), KEY.into()),
            ])
            .unwrap_err();
        let all = err.problems.join("\n");
        assert!(
            all.contains("tls.cert and tls.key are not set") && all.contains("tls.ca is not set"),
            "{all}"
        );
    }

    #[test]
    fn the_certificate_must_name_an_origin_and_fix_the_peer_id() {
        let pki = shoal_core::testing::TestPki::new();
        let with = |tls: TlsConfig, id: &str| Config {
            tls,
            peer: PeerConfig {
                id: id.into(),
                ..PeerConfig::default()
            },
            ..Config::default()
        };
        let origin = pki.origin("o0");
        let (_, me) = with(origin.clone(), "").peer_tls().unwrap().unwrap();
        assert!(me.origin && me.name == "o0.origin.shoal", "{me:?}");
        assert_eq!(
            with(origin.clone(), &me.id.to_string())
                .peer_tls()
                .unwrap()
                .unwrap()
                .1,
            me
        );
        let e = with(origin, &PeerId([9; 20]).to_string())
            .peer_tls()
            .unwrap_err();
        assert!(
            e.contains("peer.id") && e.contains("o0.origin.shoal"),
            "{e}"
        );
        let e = with(pki.agent("a0"), "").peer_tls().unwrap_err();
        assert!(
            e.contains("not an origin") && e.contains(".origin.shoal"),
            "{e}"
        );
        let e = with(pki.server("tracker"), "").peer_tls().unwrap_err();
        assert!(e.contains("names no peer"), "{e}");
        let mut p = Vec::new();
        with(pki.agent("a1"), "").validate(&mut p);
        assert!(p.iter().any(|p| p.contains("not an origin")), "{p:?}");
    }

    #[test]
    fn the_metainfo_key_openssl_writes_loads_and_garbage_or_none_is_named() {
        let openssl = KEY;
        let load = |key: &str| {
            Sources::new(None, ENV_PREFIX).load_with_env::<Config>(vec![
                ("SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY".into(), key.into()),
                (
                    "SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN".into(),
                    "0123456789abcdef0123456789abcdef".into(),
                ),
                plaintext(),
            ])
        };
        let c = load(openssl).unwrap();
        assert!(crate::blobs::metainfo_signer(&c).unwrap().is_some());
        let err = load("-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n").unwrap_err();
        assert!(
            err.problems.join("\n").contains("credentials.metainfo_key"),
            "{err:?}"
        );
        // No key: the origin does not start unless insecure, and the check says so.
        let err = Sources::new(None, ENV_PREFIX)
            .load_with_env::<Config>(vec![(
                "SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN".into(),
                TOKEN.into(),
            )])
            .unwrap_err();
        assert!(
            err.problems
                .join("\n")
                .contains("credentials.metainfo_key is empty"),
            "{err:?}"
        );
        assert!(matches!(
            crate::blobs::metainfo_signer(&Config::default()),
            Err(crate::Error::NoMetainfoKey)
        ));
        let insecure = Config {
            insecure: true,
            ..Config::default()
        };
        assert!(crate::blobs::metainfo_signer(&insecure).unwrap().is_none());
    }

    #[test]
    fn members_normalise_and_secrets_hide() {
        let c = Config {
            cluster: ClusterConfig {
                members: vec!["b:2/".into(), "http://a:1".into(), "http://b:2".into()],
                ..Default::default()
            },
            credentials: Credentials {
                write_token: Secret("hunter2".into()),
                ..Default::default()
            },
            tls: TlsConfig::plaintext(),
            ..Default::default()
        };
        assert_eq!(c.static_members(), vec!["http://a:1", "http://b:2"]);
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.credentials.write_token.get(), Some("hunter2"));
    }
}
