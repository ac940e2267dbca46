use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use shoal_core::tls::rustls::client::WebPkiServerVerifier;
use shoal_core::tls::rustls::client::danger::ServerCertVerifier;
use shoal_core::tls::rustls::pki_types::{ServerName, UnixTime};
use shoal_core::tls::{PeerIdentity, load_certs, load_roots, provider};

use super::*;
use crate::http::Target;
use crate::spec::{Plan, Rate, Spec};

fn ok<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn plan(agents: usize) -> Plan {
    let mut spec = Spec::local(agents, Rate::unlimited());
    spec.tls = true;
    ok(Plan::new(&spec))
}

/// Whether `name`'s certificate is from the CA in `tls/ca.crt` and valid for `host`.
fn valid_for(pki: &Pki, name: &str, host: &str) -> bool {
    let roots = Arc::new(ok(load_roots(&pki.ca())));
    let verifier = ok(WebPkiServerVerifier::builder_with_provider(roots, provider()).build());
    let chain = ok(load_certs(&pki.dir.join(format!("{name}.crt"))));
    verifier
        .verify_server_cert(
            &chain[0],
            &[],
            &ok(ServerName::try_from(host.to_owned())),
            &[],
            UnixTime::now(),
        )
        .is_ok()
}

fn identity(pki: &Pki, name: &str) -> PeerIdentity {
    let chain = ok(load_certs(&pki.dir.join(format!("{name}.crt"))));
    ok(PeerIdentity::of(&chain[0]))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_part_gets_a_certificate_naming_what_it_is_from_one_private_ca() {
    let tmp = ok(tempfile::tempdir());
    let dir = ClusterDir::new(tmp.path());
    let plan = plan(2);
    let pki = ok(Pki::ensure(&dir, &plan.members));

    for m in &plan.members {
        assert!(valid_for(&pki, &m.name, "127.0.0.1"), "{}", m.name);
        assert_eq!(mode(&dir.tls().join(format!("{}.key", m.name))), 0o600);
        let tls = ok(Tls::from_config(&pki.files(&m.name)));
        assert!(tls.is_some_and(|t| t.current().is_ok()), "{}", m.name);
    }
    let origin = identity(&pki, "origin-1");
    assert_eq!(origin.name, "origin-1.origin.shoal");
    assert!(origin.origin);
    let agent = identity(&pki, "agent-2");
    assert_eq!(agent.name, "agent-2.agent.shoal");
    assert!(!agent.origin);
    assert!(PeerIdentity::of(&ok(load_certs(&pki.dir.join("tracker.crt")))[0]).is_err());
    for server in ["origin-0", "tracker", "proxy"] {
        assert!(valid_for(&pki, server, "localhost"), "{server}");
    }
    assert!(valid_for(&pki, "tracker", "tracker"));
    assert!(!valid_for(&pki, "agent-1", "localhost"));
    assert!(!valid_for(&pki, "tracker", "proxy"));

    // The CA's key lives with the other secrets; the trust directory holds the CA alone,
    // as a container tool's certificate directory must (a .key there needs a .cert).
    assert_eq!(mode(&dir.secret("ca.key")), 0o600);
    assert_eq!(mode(&dir.tls()), 0o700);
    let trust: Vec<_> = ok(std::fs::read_dir(pki.trust_dir()))
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(trust, ["ca.crt"]);
    assert_eq!(read(&pki.trust_dir().join("ca.crt")), read(&pki.ca()));
    assert!(present(tmp.path()));
}

#[test]
fn the_ca_and_certificates_are_kept_and_a_new_part_is_signed_by_the_same_ca() {
    let tmp = ok(tempfile::tempdir());
    let dir = ClusterDir::new(tmp.path());
    let pki = ok(Pki::ensure(&dir, &plan(1).members));
    let ca = read(&pki.ca());
    let origin = read(&dir.tls().join("origin-0.crt"));

    let bigger = plan(3);
    let again = ok(Pki::ensure(&dir, &bigger.members));
    assert_eq!(read(&again.ca()), ca, "the CA is kept");
    assert_eq!(
        read(&dir.tls().join("origin-0.crt")),
        origin,
        "and what it signed"
    );
    assert!(
        valid_for(&again, "agent-3", "127.0.0.1"),
        "the CA read back signs"
    );

    // Without its key the CA is made again, and everything it signed with it.
    ok(std::fs::remove_file(dir.secret("ca.key")));
    let renewed = ok(Pki::ensure(&dir, &bigger.members));
    assert_ne!(read(&renewed.ca()), ca);
    assert_ne!(read(&dir.tls().join("origin-0.crt")), origin);
    for m in &bigger.members {
        assert!(valid_for(&renewed, &m.name, "127.0.0.1"), "{}", m.name);
    }
}

/// One HTTPS answer from a server presenting `name`'s certificate, on a real socket.
fn serve_once(pki: &Pki, name: &str) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let server = ok(ok(Tls::from_config(&pki.files(name)))
        .unwrap_or_else(|| panic!("plaintext"))
        .http_server());
    let listener = ok(TcpListener::bind("127.0.0.1:0"));
    let addr = ok(listener.local_addr()).to_string();
    let t = std::thread::spawn(move || {
        let Ok((sock, _)) = listener.accept() else {
            return;
        };
        let Ok(conn) = rustls::ServerConnection::new(server) else {
            return;
        };
        let mut s = rustls::StreamOwned::new(conn, sock);
        let mut req = Vec::new();
        let mut b = [0u8; 256];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&b[..n]),
            }
        }
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nready");
        s.conn.send_close_notify();
        let _ = s.flush();
    });
    (addr, t)
}

#[test]
fn the_blocking_client_speaks_https_to_a_part_and_trusts_only_the_cluster_ca() {
    let tmp = ok(tempfile::tempdir());
    let dir = ClusterDir::new(tmp.path());
    let pki = ok(Pki::ensure(&dir, &plan(1).members));
    let cfg = ok(pki.client_config());

    let (addr, t) = serve_once(&pki, "origin-0");
    let answer = crate::http::get(Target::https(&addr, cfg.clone()), "/ready");
    assert_eq!(answer, Ok((200, "ready".to_owned())));
    let _ = t.join();

    // A client of another cluster's CA does not trust this one.
    let other = ok(tempfile::tempdir());
    let theirs = ok(Pki::ensure(
        &ClusterDir::new(other.path()),
        &plan(1).members,
    ));
    let (addr, t) = serve_once(&pki, "tracker");
    let refused = crate::http::get(Target::https(&addr, ok(theirs.client_config())), "/ready");
    assert!(refused.is_err(), "{refused:?}");
    let _ = t.join();
}
