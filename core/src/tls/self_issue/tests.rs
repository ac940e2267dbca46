use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpStream};

use super::super::issue::{Ca, Validity, origin_name};
use super::super::*;
use super::{KeyPair, SelfIssued};

/// A cluster CA, an agents-only CA, and an origin whose certificate is the cluster CA's and
/// whose peers may also come from the agents CA.
struct Pki {
    dir: tempfile::TempDir,
    cluster: Ca,
    agents: Ca,
    ca: PathBuf,
    agents_cert: PathBuf,
    agents_key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Ca::new("cluster").unwrap();
        let agents = Ca::new("agents").unwrap();
        let ca = cluster.write_cert(dir.path()).unwrap();
        let agents_cert = dir.path().join("agents-ca.crt");
        let agents_key = dir.path().join("agents-ca.key");
        std::fs::write(&agents_cert, agents.cert_pem()).unwrap();
        std::fs::write(&agents_key, agents.key_pem()).unwrap();
        Pki {
            dir,
            cluster,
            agents,
            ca,
            agents_cert,
            agents_key,
        }
    }

    fn origin(&self, name: &str) -> TlsConfig {
        let (cert, key) = self
            .cluster
            .issue(&[&origin_name(name)], Validity::days(1))
            .unwrap()
            .write(self.dir.path(), name)
            .unwrap();
        TlsConfig {
            agent_ca: Some(self.agents_cert.clone()),
            ..TlsConfig::files(cert, key, &self.ca)
        }
    }

    fn agent(&self, name: &str) -> TlsConfig {
        TlsConfig {
            agent_ca: Some(self.agents_cert.clone()),
            ..TlsConfig::self_issued(name, &self.agents_cert, &self.agents_key, &self.ca)
        }
    }
}

fn tls(cfg: &TlsConfig) -> Tls {
    Tls::from_config(cfg).unwrap().unwrap()
}

/// A mutual-TLS handshake on a real socket; who each side says the other is.
async fn handshake(
    accepting: &Tls,
    dialling: &Tls,
) -> std::io::Result<(
    Result<PeerIdentity, IdentityError>,
    Result<PeerIdentity, IdentityError>,
)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(accepting.peer_server().unwrap());
    let acc = accepting.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let s = acceptor.accept(tcp).await?;
        let chain = s.get_ref().1.peer_certificates().unwrap_or_default();
        std::io::Result::Ok(acc.peer_identity(chain))
    });
    let connector = tokio_rustls::TlsConnector::from(dialling.peer_client().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let dialled = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await;
    let accepted = server.await.unwrap();
    let s = dialled?;
    let chain = s.get_ref().1.peer_certificates().unwrap_or_default();
    Ok((accepted?, dialling.peer_identity(chain)))
}

#[tokio::test]
async fn an_agent_with_a_certificate_of_its_own_handshakes_with_an_origin_and_an_agent() {
    let pki = Pki::new();
    let origin = tls(&pki.origin("origin-0"));
    let agent = tls(&pki.agent("Node-1"));
    let me = agent.identity().unwrap();
    assert_eq!(me.name, "node-1.agent.shoal");
    assert!(!me.origin);
    assert_eq!(me.id, PeerIdentity::id_of("node-1.agent.shoal"));
    // The issuer's certificate follows the agent's own.
    let presented = agent.current().unwrap();
    assert_eq!(presented.cert.len(), 2);
    assert_eq!(
        presented.cert[1],
        CertificateDer::from_pem_slice(pki.agents.cert_pem().as_bytes()).unwrap()
    );

    // The origin sees the agent; the agent sees an origin.
    let (seen_by_origin, seen_by_agent) = handshake(&origin, &agent).await.unwrap();
    assert_eq!(seen_by_origin.unwrap(), me);
    let o = seen_by_agent.unwrap();
    assert!(o.origin, "{o:?}");
    assert_eq!(o.name, "origin-0.origin.shoal");
    let (seen_by_agent, seen_by_origin) = handshake(&agent, &origin).await.unwrap();
    assert_eq!(seen_by_agent.unwrap(), o);
    assert_eq!(seen_by_origin.unwrap(), me);

    // Two agents, each with its own certificate and so its own id.
    let other = tls(&pki.agent("node-2"));
    let (a, b) = handshake(&agent, &other).await.unwrap();
    assert_eq!(a.unwrap(), other.identity().unwrap());
    assert_eq!(b.unwrap(), me);
    assert_ne!(other.identity().unwrap().id, me.id);
}

#[tokio::test]
async fn a_certificate_made_from_an_issuer_the_peer_does_not_list_is_refused() {
    let pki = Pki::new();
    let origin = tls(&pki.origin("origin-0"));
    let elsewhere = Pki::new();
    let stranger = tls(&TlsConfig::self_issued(
        "node-1",
        &elsewhere.agents_cert,
        &elsewhere.agents_key,
        &pki.ca,
    ));
    assert!(handshake(&origin, &stranger).await.is_err());
    // And an origin that lists no agents CA takes no self-made certificate at all.
    let mut strict = pki.origin("origin-1");
    strict.agent_ca = None;
    let agent = tls(&pki.agent("node-1"));
    assert!(handshake(&tls(&strict), &agent).await.is_err());
}

#[tokio::test]
async fn a_certificate_an_agent_makes_never_names_an_origin() {
    let pki = Pki::new();
    let origin = tls(&pki.origin("origin-0"));
    // The name cannot escape the agents' suffix: whatever it says, it is an agent's.
    let sly = tls(&pki.agent("origin-0.origin.shoal"));
    let (seen, _) = handshake(&origin, &sly).await.unwrap();
    let seen = seen.unwrap();
    assert!(!seen.origin, "{seen:?}");
    assert_eq!(seen.name, "origin-0.origin.shoal.agent.shoal");
    assert_ne!(seen.id, PeerIdentity::id_of("origin-0.origin.shoal"));
    // A certificate made by hand from the agents CA that names an origin is refused.
    let forged = pki
        .agents
        .issue(&[&origin_name("origin-0")], Validity::days(1))
        .unwrap();
    let forged = CertificateDer::from_pem_slice(forged.cert_pem.as_bytes()).unwrap();
    let agents_ca = CertificateDer::from_pem_slice(pki.agents.cert_pem().as_bytes()).unwrap();
    assert_eq!(
        origin.peer_identity(&[forged, agents_ca]),
        Err(IdentityError::NotAnOrigin)
    );
}

#[test]
fn the_table_refuses_a_bad_name_a_half_set_issuer_and_a_key_that_is_not_the_issuers() {
    let pki = Pki::new();
    let needs = Needs {
        cert: true,
        ca: true,
    };
    let problems = |cfg: &TlsConfig| {
        let mut p = Vec::new();
        cfg.validate(needs, &mut p);
        p
    };
    assert_eq!(problems(&pki.agent("node-1")), Vec::<String>::new());
    assert_eq!(
        problems(&pki.agent("ip-10-0-1-23.eu-west-1.compute.internal")),
        Vec::<String>::new(),
        "node names on many clouds hold dots"
    );
    for bad in [
        "",
        "node_1",
        "-node",
        "node-",
        "a..b",
        "x y",
        &"n".repeat(64),
    ] {
        let p = problems(&pki.agent(bad));
        assert!(
            p.len() == 1 && p[0].contains("is not a host name"),
            "{bad:?}: {p:?}"
        );
        assert!(Tls::from_config(&pki.agent(bad)).is_err(), "{bad:?}");
    }

    let mut half = pki.agent("node-1");
    half.issuer_key = None;
    assert!(problems(&half)[0].contains("set together or not at all"));

    let mut both = pki.agent("node-1");
    both.cert = Some(pki.ca.clone());
    both.key = Some(pki.agents_key.clone());
    assert!(problems(&both)[0].contains("choose one"));

    let mut plain = pki.agent("node-1");
    plain.plaintext = true;
    plain.ca = None;
    plain.agent_ca = None;
    assert!(problems(&plain)[0].contains("choose one"));

    // Another CA's key: what it signed would verify nowhere.
    let other = Ca::new("other").unwrap();
    let other_key = pki.dir.path().join("other.key");
    std::fs::write(&other_key, other.key_pem()).unwrap();
    let mut wrong = pki.agent("node-1");
    wrong.issuer_key = Some(other_key);
    let p = problems(&wrong);
    assert!(
        p.len() == 1 && p[0].contains("does not sign for the certificate"),
        "{p:?}"
    );

    // A key that is not PKCS#8: the same kind of key as SEC1 (`openssl ecparam -genkey`
    // writes these), cut out of a PKCS#8 P-256 key, whose layout is fixed.
    let pkcs8 = KeyPair::generate().unwrap().serialize_der();
    assert_eq!((pkcs8.len(), pkcs8[27], pkcs8[28]), (138, 0x04, 0x6d));
    let sec1 = pki.dir.path().join("sec1.key");
    std::fs::write(
        &sec1,
        format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pkcs8[29..])
        ),
    )
    .unwrap();
    let mut sec1_cfg = pki.agent("node-1");
    sec1_cfg.issuer_key = Some(sec1);
    let p = problems(&sec1_cfg);
    assert!(p.len() == 1 && p[0].contains("PKCS#8"), "{p:?}");
}

#[tokio::test]
async fn the_certificate_is_made_again_before_it_expires() {
    let pki = Pki::new();
    let minted = SelfIssued::open_for(
        "node-1",
        &pki.agents_cert,
        &pki.agents_key,
        Duration::from_secs(3),
    )
    .unwrap();
    let first = minted.current().cert[0].clone();
    crate::testing::wait_until("a new certificate", Duration::from_secs(10), || async {
        minted.current().cert[0] != first
    })
    .await;
    let renewed = minted.current();
    assert_eq!(
        PeerIdentity::of(&renewed.cert[0]).unwrap().name,
        "node-1.agent.shoal",
        "the same name, so the same id"
    );
    // Still good for peers: it verifies against the agents CA.
    let origin = tls(&pki.origin("origin-0"));
    assert!(origin.peer_identity(&renewed.cert).is_ok());
}
