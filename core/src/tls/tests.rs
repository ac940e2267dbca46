use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::issue::{Ca, Validity, agent_name, origin_name};
use super::*;

fn pair(ca: &Ca, dir: &Path, stem: &str, names: &[&str], v: Validity) -> TlsConfig {
    let (cert, key) = ca.issue(names, v).unwrap().write(dir, stem).unwrap();
    let ca_path = ca.write_cert(dir).unwrap();
    TlsConfig::files(cert, key, ca_path)
}

#[test]
fn the_table_says_what_is_missing_or_broken() {
    let needs = Needs {
        cert: true,
        ca: true,
    };
    let mut p = Vec::new();
    TlsConfig::default().validate(needs, &mut p);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("tls.plaintext = true"), "{p:?}");

    let mut p = Vec::new();
    TlsConfig::plaintext().validate(needs, &mut p);
    assert!(p.is_empty(), "{p:?}");

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test").unwrap();
    let good = pair(&ca, dir.path(), "a", &["a.agent.shoal"], Validity::days(1));
    let mut p = Vec::new();
    good.validate(needs, &mut p);
    assert!(p.is_empty(), "{p:?}");

    let mut both = good.clone();
    both.plaintext = true;
    let mut p = Vec::new();
    both.validate(needs, &mut p);
    assert!(p[0].contains("choose one"), "{p:?}");

    // A key that is not the certificate's, and a CA file that holds no certificate.
    let other = ca.issue(&["b.agent.shoal"], Validity::days(1)).unwrap();
    std::fs::write(good.key.as_ref().unwrap(), other.key_pem).unwrap();
    std::fs::write(good.ca.as_ref().unwrap(), "not pem").unwrap();
    let mut p = Vec::new();
    good.validate(needs, &mut p);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("tls.cert/tls.key"), "{p:?}");
    assert!(p[1].contains("no CERTIFICATE"), "{p:?}");
}

#[test]
fn a_certificate_names_one_peer() {
    let ca = Ca::new("test").unwrap();
    let der = |names: &[&str]| {
        let i = ca.issue(names, Validity::days(1)).unwrap();
        CertificateDer::from_pem_slice(i.cert_pem.as_bytes()).unwrap()
    };
    let a = PeerIdentity::of(&der(&["host-1", &agent_name("node-1")])).unwrap();
    assert!(!a.origin);
    assert_eq!(a.name, "node-1.agent.shoal");
    assert_eq!(a.id, PeerIdentity::id_of("node-1.agent.shoal"));
    let o = PeerIdentity::of(&der(&[&origin_name("origin-0"), "127.0.0.1"])).unwrap();
    assert!(o.origin);
    assert_ne!(o.id, a.id);
    assert_eq!(
        PeerIdentity::of(&der(&["localhost"])),
        Err(IdentityError::None)
    );
    assert!(matches!(
        PeerIdentity::of(&der(&["a.agent.shoal", "b.origin.shoal"])),
        Err(IdentityError::Several(..))
    ));
}

/// Serves HTTPS with `server`; whether a client trusting `client` gets `/health`.
async fn https_get(server: &TlsConfig, client: &TlsConfig) -> Result<String, reqwest::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let tls = Tls::from_config(server).unwrap().unwrap();
    let app = crate::telemetry::ops_router(
        prometheus::Registry::new(),
        crate::telemetry::Readiness::default(),
    );
    tokio::spawn(crate::telemetry::serve(
        listener,
        app,
        token.clone(),
        Duration::from_secs(1),
        crate::telemetry::ServerConfig::default(),
        Some(tls.http_server().unwrap()),
    ));
    let client_tls = Tls::from_config(client).unwrap().unwrap();
    let http = client_builder(Some(&client_tls)).unwrap().build().unwrap();
    let r = async {
        http.get(format!("https://{addr}/health"))
            .send()
            .await?
            .text()
            .await
    }
    .await;
    token.cancel();
    r
}

#[tokio::test]
async fn https_is_served_and_verified_against_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster").unwrap();
    let server = pair(&ca, dir.path(), "origin", &["127.0.0.1"], Validity::days(1));
    assert_eq!(https_get(&server, &server).await.unwrap(), "ok\n");

    let other_dir = tempfile::tempdir().unwrap();
    let other = Ca::new("other").unwrap();
    let stranger = pair(
        &other,
        other_dir.path(),
        "x",
        &["127.0.0.1"],
        Validity::days(1),
    );
    let e = https_get(&server, &stranger).await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");

    // A plain-HTTP client reaching a TLS port gets nothing it could mistake for an answer.
    let plain = crate::tls::client();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = Tls::from_config(&server).unwrap().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::telemetry::serve(
        listener,
        axum::Router::new(),
        token.clone(),
        Duration::from_secs(1),
        crate::telemetry::ServerConfig::default(),
        Some(tls.http_server().unwrap()),
    ));
    assert!(plain.get(format!("http://{addr}/")).send().await.is_err());
    token.cancel();
}

/// A mutual-TLS handshake over the peer configs; the accepting side's view of the dialler.
async fn peer_handshake(accepting: &Tls, dialling: &Tls) -> Result<PeerIdentity, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(accepting.peer_server().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let s = acceptor.accept(tcp).await?;
        let chain = s.get_ref().1.peer_certificates().unwrap_or_default();
        PeerIdentity::of(&chain[0]).map_err(std::io::Error::other)
    });
    let connector = tokio_rustls::TlsConnector::from(dialling.peer_client().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let dialled = connector.connect(name, tcp).await;
    let accepted = server.await.unwrap();
    dialled?;
    accepted
}

#[tokio::test]
async fn peers_authenticate_each_other_against_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster").unwrap();
    let tls = |stem: &str, v: Validity| {
        let name = agent_name(stem);
        Tls::from_config(&pair(&ca, dir.path(), stem, &[&name], v))
            .unwrap()
            .unwrap()
    };
    let a = tls("a", Validity::days(1));
    let b = tls("b", Validity::days(1));
    let seen = peer_handshake(&a, &b).await.unwrap();
    assert_eq!(seen, b.identity().unwrap());

    let expired = tls("old", Validity::expired());
    assert!(peer_handshake(&a, &expired).await.is_err());
    assert!(peer_handshake(&expired, &a).await.is_err());

    let other_dir = tempfile::tempdir().unwrap();
    let other = Ca::new("other").unwrap();
    let stranger = Tls::from_config(&pair(
        &other,
        other_dir.path(),
        "s",
        &["s.agent.shoal"],
        Validity::days(1),
    ))
    .unwrap()
    .unwrap();
    assert!(peer_handshake(&a, &stranger).await.is_err());
    assert!(peer_handshake(&stranger, &a).await.is_err());
}

#[tokio::test]
async fn a_renewed_certificate_is_presented_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster").unwrap();
    let cfg = pair(&ca, dir.path(), "n", &["n.agent.shoal"], Validity::days(1));
    let tls = Tls::from_config(&cfg).unwrap().unwrap();
    let before = tls.current().unwrap().cert[0].clone();
    // Modification times are compared, so the renewal must land in a later one.
    let mtime = || {
        std::fs::metadata(cfg.cert.as_ref().unwrap())
            .unwrap()
            .modified()
            .unwrap()
    };
    let written = mtime();
    crate::testing::wait_until_blocking(
        "the clock passes the file's time",
        Duration::from_secs(5),
        || SystemTime::now() > written,
    );
    ca.issue(&["n.agent.shoal"], Validity::days(30))
        .unwrap()
        .write(dir.path(), "n")
        .unwrap();
    crate::testing::wait_until(
        "the renewed certificate",
        Duration::from_secs(5),
        || async { tls.current().unwrap().cert[0] != before },
    )
    .await;
    assert_eq!(
        tls.identity().unwrap().name,
        "n.agent.shoal",
        "the same name, so the same id"
    );
}

#[test]
fn an_agents_only_ca_cannot_make_an_origin() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Ca::new("cluster").unwrap();
    let agents = Ca::new("agents").unwrap();
    let mut cfg = pair(
        &cluster,
        dir.path(),
        "o",
        &["o.origin.shoal"],
        Validity::days(1),
    );
    let agents_dir = tempfile::tempdir().unwrap();
    cfg.agent_ca = Some(agents.write_cert(agents_dir.path()).unwrap());
    let tls = Tls::from_config(&cfg).unwrap().unwrap();
    let der = |ca: &Ca, name: &str| {
        let i = ca.issue(&[name], Validity::days(1)).unwrap();
        CertificateDer::from_pem_slice(i.cert_pem.as_bytes()).unwrap()
    };
    assert!(tls.peer_identity(&[der(&agents, "n.agent.shoal")]).is_ok());
    assert!(
        tls.peer_identity(&[der(&cluster, "p.origin.shoal")])
            .unwrap()
            .origin
    );
    assert_eq!(
        tls.peer_identity(&[der(&agents, "fake.origin.shoal")]),
        Err(IdentityError::NotAnOrigin)
    );
}
