//! The demo and the script itself: what `deploy/devcluster.sh` does, as a user runs it.

use std::path::Path;

use shoal_cluster::ClusterDir;
use shoal_cluster::http::{Target, request};
use shoal_cluster::spec::local::{ORIGIN_ADDRS as ORIGINS, PROXY, agent};
use shoal_cluster::tls::Pki;
use shoal_core::Digest;
use shoal_core::telemetry::scrape::metric_sum;
use shoal_tests::process::{Output, pid_running, require};

use super::{Local, exclusive, metrics, script};

pub fn demo(cluster: &Local) {
    require("skopeo", "skopeo");
    let status = cluster.script(&["status"]).ok();
    assert!(status.contains("the parts speak TLS"), "{status}");
    let o = cluster.script(&["demo", "--size", "48"]).ok();
    eprintln!("{o}");
    assert!(o.contains("with skopeo"), "{o}");
    assert!(o.contains("every agent has demo/app:v1"), "{o}");
    // Three agents pulling at once can take at most two thirds from each other. Uncapped on
    // one machine an origin is as fast as a peer, so the split varies (45-57% from peers);
    // what must hold is that the hosts share: a good part comes from peers, and the origins
    // send well under the three copies one server would. 48 MiB makes enough pieces for the
    // figures to be steady.
    let share: u32 = o
        .split("; ")
        .nth(1)
        .and_then(|t| t.split('%').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the demo printed no share of bytes from peers:\n{o}"));
    assert!(
        share >= 35,
        "only {share}% of the bytes came from peers:\n{o}"
    );
    let copies: f64 = o
        .split(" times the image")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the demo printed no origin copies:\n{o}"));
    assert!(
        copies < 2.0,
        "the origins sent {copies} copies of the image for three agents:\n{o}"
    );
    for i in 1..=cluster.agents() {
        assert!(
            o.contains(&format!("agent-{i} ")),
            "no line for agent-{i}:\n{o}"
        );
    }

    // Without skopeo the demo makes its own registry requests, every digest checked.
    let o = cluster
        .script(&["demo", "--size", "8"])
        .env("SHOAL_DEMO_CLIENT", "http")
        .ok();
    assert!(o.contains("with plain registry requests"), "{o}");
    assert!(o.contains("every agent has demo/app:v1"), "{o}");
}

/// A cluster brought up by the script in a directory of its own, taken down (and its
/// directory deleted) when dropped.
struct Scripted {
    dir: tempfile::TempDir,
    up: bool,
}

impl Scripted {
    fn new() -> Scripted {
        let dir = tempfile::Builder::new()
            .prefix("shoal-devcluster.")
            .tempdir()
            .unwrap();
        Scripted { dir, up: false }
    }

    fn dir(&self) -> ClusterDir {
        ClusterDir::new(self.dir.path())
    }

    fn run(&self, args: &[&str]) -> Output {
        script(self.dir.path(), args).run()
    }

    fn ok(&self, args: &[&str]) -> String {
        script(self.dir.path(), args).ok()
    }

    /// `up` with `args`; fails the test, with the end of every log, unless it succeeds.
    fn up(args: &[&str]) -> Scripted {
        let mut s = Scripted::new();
        s.start(args);
        s
    }

    fn start(&mut self, args: &[&str]) {
        self.up = true;
        let s = self;
        let o = s.run(&[&["up"], args].concat());
        if !o.success() {
            panic!(
                "devcluster.sh up {args:?} failed ({}):\n{}\n{}\n{}",
                o.status,
                o.stdout,
                o.stderr,
                s.dir().log_tails(15)
            );
        }
    }

    fn down(&mut self, wipe: bool) -> Output {
        self.up = false;
        self.run(if wipe { &["down", "--wipe"] } else { &["down"] })
    }

    /// The pid of each process recorded in `run/`, by name.
    fn pids(&self) -> Vec<(String, u32)> {
        let dir = self.dir();
        let mut out: Vec<(String, u32)> = dir
            .recorded_names()
            .into_iter()
            .map(|n| {
                let pid = std::fs::read_to_string(dir.pidfile(&n))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                (n, pid)
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if self.up {
            let o = self.down(true);
            if !o.success() {
                eprintln!("devcluster.sh down failed: {}\n{}", o.stdout, o.stderr);
            }
        }
    }
}

fn port_open(port: u16) -> bool {
    shoal_cluster::spec::port_in_use(port)
}

#[test]
fn the_script_starts_reports_and_stops_exactly_what_it_started() {
    let _turn = exclusive();
    let mut cluster = Scripted::up(&["--agents", "1", "--tls"]);
    let dir = cluster.dir();
    let https = Pki::open(&dir).unwrap().client_config().unwrap();
    let tls = |addr: &str| Target::https(addr, https.clone());
    let started = cluster.pids();
    let names: Vec<&str> = started.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "agent-1", "origin-0", "origin-1", "origin-2", "proxy", "tracker"
        ]
    );
    assert!(started.iter().all(|(_, pid)| pid_running(*pid)));

    let status = cluster.ok(&["status"]);
    assert_eq!(status.matches(" ready ").count(), 6, "{status}");
    assert!(status.contains("the parts speak TLS"), "{status}");
    assert!(
        status.contains(&dir.log("proxy").display().to_string()),
        "{status}"
    );

    // A second `up` of the same shape finds it running and starts nothing.
    let again = cluster.ok(&["up", "--agents", "1", "--tls"]);
    assert!(again.contains("already running"), "{again}");
    assert_eq!(cluster.pids(), started);

    // Another cluster cannot take the same ports, and says why.
    let other = Scripted::new();
    let refused = other.run(&["up", "--agents", "1"]);
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("ports already in use"),
        "{}",
        refused.stderr
    );
    assert!(
        !other.dir.path().join("run").exists(),
        "the refused cluster started something"
    );

    // Every part answers on its fixed port and exposes its metrics: the origins and the
    // tracker over HTTPS only, the registries of the proxy and the agents in plain HTTP.
    for at in [
        Target::plain(PROXY),
        tls("127.0.0.1:7070"),
        tls("127.0.0.1:9000"),
        Target::plain(&agent(1)),
    ] {
        let m = metrics(&at);
        assert!(m.contains("shoal_"), "{}/metrics: {m}", at.addr);
    }
    for addr in ["127.0.0.1:7070", ORIGINS[2]] {
        let plain = request(addr, "GET", "/ready", &[], b"");
        assert!(plain.is_err(), "{addr} answered plain HTTP: {plain:?}");
    }

    credentials_are_generated_private_and_required(&dir, &tls);

    let down = cluster.down(false);
    assert!(down.success(), "{}", down.stderr);
    for (name, pid) in &started {
        assert!(
            !pid_running(*pid),
            "{name} (pid {pid}) still runs after down, which said:\n{}\n{}",
            down.stdout,
            down.stderr
        );
    }
    for port in [5000, 7070, 9000, 9001, 9002, 7000, 7001, 7002, 8081, 7101] {
        assert!(!port_open(port), "port {port} still answers after down");
    }
    assert!(
        dir.data("origin-0").is_dir(),
        "down without --wipe keeps data"
    );

    // The CA and the certificates are kept across ups, as the credentials are: a client
    // told to trust the cluster goes on trusting it.
    let ca = std::fs::read(dir.tls().join("ca.crt")).unwrap();
    let origin_cert = std::fs::read(dir.tls().join("origin-0.crt")).unwrap();
    cluster.start(&["--agents", "1", "--tls"]);
    assert_eq!(std::fs::read(dir.tls().join("ca.crt")).unwrap(), ca);
    assert_eq!(
        std::fs::read(dir.tls().join("origin-0.crt")).unwrap(),
        origin_cert
    );
    let (status, _) = request(tls(ORIGINS[0]), "GET", "/ready", &[], b"").unwrap();
    assert_eq!(status, 200);

    let wiped = cluster.down(true);
    assert!(wiped.success(), "{}", wiped.stderr);
    assert!(!dir.path().join("data").exists());
    assert!(
        !dir.tls().exists(),
        "down --wipe deletes the CA and the keys"
    );
}

/// The plaintext switch, end to end: `demo` without `--tls` brings up a cluster whose
/// configs say `plaintext = true`, and the image arrives at the agent.
#[test]
fn a_plaintext_cluster_still_carries_an_image() {
    let _turn = exclusive();
    let mut cluster = Scripted::new();
    cluster.up = true;
    let o = script(
        cluster.dir.path(),
        &["demo", "--agents", "1", "--size", "4"],
    )
    .env("SHOAL_DEMO_CLIENT", "http")
    .ok();
    assert!(o.contains("every agent has demo/app:v1"), "{o}");
    let status = cluster.ok(&["status"]);
    assert!(status.contains("plain HTTP to each other"), "{status}");
    let dir = cluster.dir();
    for name in ["origin-0", "tracker", "proxy", "agent-1"] {
        let config = std::fs::read_to_string(dir.config(name)).unwrap();
        let table: toml::Table = config.parse().unwrap();
        assert_eq!(
            table["tls"]["plaintext"].as_bool(),
            Some(true),
            "{name}: {config}"
        );
        assert!(!config.contains("https://"), "{name}: {config}");
    }
    assert!(!dir.tls().exists(), "a plaintext cluster makes no CA");
    let (status, _) = request(ORIGINS[0], "GET", "/ready", &[], b"").unwrap();
    assert_eq!(status, 200);
}

/// What `up` did about credentials, as a user would check it: every file holding a secret is
/// the owner's alone, the origins run with a write token (no insecure warning), refuse a
/// write without it or with a wrong one and a read without the read token, and a push to
/// the proxy without its login is refused.
fn credentials_are_generated_private_and_required(dir: &ClusterDir, tls: &dyn Fn(&str) -> Target) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.secrets()), 0o700);
    assert_eq!(mode(&dir.tls()), 0o700);
    assert!(dir.secret("ca.key").is_file(), "the CA's key is a secret");
    for sub in ["secrets", "config", "tls"] {
        for e in std::fs::read_dir(dir.path().join(sub)).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "crt") || path.is_dir() {
                continue;
            }
            assert_eq!(mode(&path), 0o600, "{} is not 0600", path.display());
        }
    }
    assert!(dir.tls().join("origin-0.key").is_file());
    let write_token = first_line(&dir.secret("write-token"));
    let read_token = first_line(&dir.secret("read-token"));
    assert_eq!(write_token.len(), 64);
    assert_ne!(write_token, read_token);
    let origin_config = std::fs::read_to_string(dir.config("origin-0")).unwrap();
    assert!(origin_config.contains(&write_token) && origin_config.contains("BEGIN PRIVATE KEY"));
    let agent_config = std::fs::read_to_string(dir.config("agent-1")).unwrap();
    assert!(agent_config.contains(&read_token) && !agent_config.contains(&write_token));
    assert!(agent_config.contains("BEGIN PUBLIC KEY"));

    let (status, body) = request(tls(ORIGINS[0]), "GET", "/ready", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(!body.contains("insecure"), "{body}");

    let digest = Digest::sha256_of(b"repointed");
    let tag_body = format!("{{\"digest\":\"{digest}\"}}");
    let wrong = "Bearer 0123456789abcdef0123456789abcdef";
    let read = format!("Bearer {read_token}");
    for headers in [
        vec![],
        vec![("Authorization", wrong)],
        vec![("Authorization", read.as_str())],
    ] {
        for origin in ORIGINS {
            let (status, body) = request(
                tls(origin),
                "PUT",
                "/v1/tags/library/nginx:latest",
                &headers,
                tag_body.as_bytes(),
            )
            .unwrap();
            assert_eq!(
                status, 401,
                "a tag write to {origin} with {headers:?}: {body}"
            );
            assert!(body.contains("UNAUTHORIZED"), "{body}");
        }
    }
    let (status, _) = request(tls(ORIGINS[1]), "GET", "/v1/repositories", &[], b"").unwrap();
    assert_eq!(status, 401, "a read without the read token");
    let (status, body) = request(
        tls(ORIGINS[1]),
        "GET",
        "/v1/repositories",
        &[("Authorization", read.as_str())],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "a read with the read token: {body}");
    assert!(
        !body.contains("library/nginx"),
        "the refused tag write left a trace: {body}"
    );

    // A push without the login: refused at its first request, and counted as what it was.
    let refused_uploads = || {
        metric_sum(
            &metrics(PROXY),
            "shoal_proxy_requests_total",
            &["route=\"upload\"", "method=\"POST\"", "status=\"4xx\""],
        )
    };
    let before = refused_uploads();
    let (status, _) = request(PROXY, "POST", "/v2/e2e/nologin/blobs/uploads/", &[], b"").unwrap();
    assert_eq!(status, 401, "an upload without the proxy's login");
    assert_eq!(
        refused_uploads() - before,
        1.0,
        "the refused upload is counted once, as a POST to the upload route answered 4xx"
    );
}

fn first_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
