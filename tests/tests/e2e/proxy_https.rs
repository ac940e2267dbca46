//! The proxy's registry over HTTPS (`up --tls --proxy-tls`), for a registry behind no
//! ingress: skopeo pushes through it trusting the cluster's CA from a certificate
//! directory, a client that trusts only the system's roots is refused, and the image comes
//! back whole through an agent.

use shoal_cluster::http::{Target, request};
use shoal_cluster::spec::local::{PROXY, agent};
use shoal_core::Digest;
use shoal_tests::data::noise;
use shoal_tests::oci::{Entry, Layout, OCI_MANIFEST, tar};
use shoal_tests::process::require;

use super::clients::skopeo;
use super::{Local, exclusive};

#[test]
fn the_proxy_serves_https_to_a_client_that_trusts_the_cluster_ca() {
    require("skopeo", "skopeo");
    let _turn = exclusive();
    let cluster = Local::up_with(1, |spec| spec.proxy_tls = true);
    let pki = cluster.cluster.pki().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut src = Layout::new(&work.path().join("src"));
    let layer = tar(&[Entry::file("hello", &noise(5, 2 << 20))]);
    let manifest = src.image("amd64", &["/bin/true"], std::slice::from_ref(&layer));
    src.tag("v1", OCI_MANIFEST, &manifest);
    let src_ref = format!("oci:{}:v1", src.dir.display());
    let dest = format!("docker://{PROXY}/e2e/https:v1");
    let creds = cluster.proxy_creds();

    // A client that trusts the system's roots alone does not trust the cluster's proxy.
    let refused = skopeo(&["copy", "--dest-creds", &creds])
        .arg(&src_ref)
        .arg(&dest)
        .run();
    assert!(!refused.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("certificate"),
        "refused for another reason: {}",
        refused.stderr
    );

    // The cluster's CA alone in a directory, as skopeo takes a registry's CA.
    let trust = pki.trust_dir();
    assert!(trust.join("ca.crt").is_file());
    skopeo(&["copy", "--preserve-digests", "--dest-creds", &creds])
        .arg(format!("--dest-cert-dir={}", trust.display()))
        .arg(&src_ref)
        .arg(&dest)
        .ok();

    // The proxy's port speaks HTTPS only.
    let plain = request(PROXY, "GET", "/v2/", &[], b"");
    assert!(plain.is_err(), "the proxy answered plain HTTP: {plain:?}");
    let https = Target::https(PROXY, pki.client_config().unwrap());
    let (status, body) = request(&https, "GET", "/v2/", &[], b"").unwrap();
    assert!(status == 200 || status == 401, "{status}: {body}");

    // Pulled through an agent (plain HTTP on loopback), byte for byte.
    let via = agent(1);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{via}/e2e/https:v1"))
        .ok();
    assert_eq!(raw.trim_end().as_bytes(), manifest.as_slice());
    let out = work.path().join("out");
    skopeo(&["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{via}/e2e/https:v1"))
        .arg(format!("dir:{}", out.display()))
        .ok();
    let digest = Digest::sha256_of(&layer);
    let got = std::fs::read(out.join(digest.hex())).unwrap();
    assert_eq!(Digest::sha256_of(&got), digest, "the layer came back whole");
}
