use super::*;
use proptest::prelude::*;

/// Made by `openssl genpkey -algorithm ed25519` (PKCS#8 v1, without the public key).
const OPENSSL_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDKntVjQaHAIhZle5+UJ7EocExEj6qmu4kjDCzQB+VQU
-----END PRIVATE KEY-----
";
/// `openssl pkey -pubout` of the key above.
const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAODXC35grld8jyBNVc/6piT4VmERxcpfi/0Epu9+O3FA=
-----END PUBLIC KEY-----
";
/// `openssl req -x509 -new -key <the key above> -subj /CN=shoal-origin`, with the text
/// openssl writes before a certificate.
const OPENSSL_CERT: &str = "subject=CN = shoal-origin
-----BEGIN CERTIFICATE-----
MIIBRDCB96ADAgECAhRgbGxoc9nieukvd+NDfL+yUEpv1TAFBgMrZXAwFzEVMBMG
A1UEAwwMc2hvYWwtb3JpZ2luMCAXDTI2MTIwNTAyMjE0NVoYDzIxMjYxMTExMDIy
MTQ1WjAXMRUwEwYDVQQDDAxzaG9hbC1vcmlnaW4wKjAFBgMrZXADIQA4NcLfmCuV
3yPIE1Vz/qmJPhWYRHFyl+L/QSm7347cUKNTMFEwHQYDVR0OBBYEFBk6xOLEN7xv
/miYVtEHCyuVeN2vMB8GA1UdIwQYMBaAFBk6xOLEN7xv/miYVtEHCyuVeN2vMA8G
A1UdEwEB/wQFMAMBAf8wBQYDK2VwA0EAIWPirOD4wWMQn/Q/wxWXlKwrcMZyYyIL
UUMGvBxIUlYnW1ZSCrdw43ZDeQNX4Mgq3lDxGeO9oiAXLCHHtby1CQ==
-----END CERTIFICATE-----
";
/// An EC P-256 public key: PEM of the right kind, key of the wrong one.
const P256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEatvrH47bPiuw7xwrB9RKNhicT6Lt
ksX1ceFnrk5AQgby8L6t+6q+JvYO+F7R1AJOYlRJozunHmvajdGHCwEUJg==
-----END PUBLIC KEY-----
";

fn meta() -> Metainfo {
    Metainfo::from_bytes(&vec![5u8; 700 << 10])
}

fn accept(trust: &MetainfoTrust, wire: Vec<u8>, m: &Metainfo) -> Result<Metainfo, TrustError> {
    trust
        .accept(Bytes::from(wire), m.digest())
        .map(|t| t.metainfo)
}

#[test]
fn openssl_keys_load_and_sign_for_each_other() {
    let signer = MetainfoSigner::from_pem(OPENSSL_PRIVATE).unwrap();
    assert_eq!(signer.public_key_pem(), OPENSSL_PUBLIC);
    let m = meta();
    let wire = signer.sign(&m);
    for pem in [OPENSSL_PUBLIC, OPENSSL_CERT] {
        let trust = MetainfoTrust::from_pem(pem, false).unwrap();
        assert_eq!(accept(&trust, wire.clone(), &m), Ok(m.clone()));
    }
    let both = MetainfoTrust::from_pem(&format!("{OPENSSL_PUBLIC}{OPENSSL_CERT}"), false).unwrap();
    assert_eq!(both.key_ids().count(), 1, "the same key twice is one key");
}

#[test]
fn keys_made_by_openssl_now_load() {
    let Ok(dir) = tempfile::tempdir() else { return };
    let key = dir.path().join("k.pem");
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let Some(_) = run(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        key.to_str().unwrap(),
    ]) else {
        eprintln!("openssl is not installed: only the PEM literals made by it are tried");
        return;
    };
    let public = run(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]).unwrap();
    let private = std::fs::read_to_string(&key).unwrap();
    let signer = MetainfoSigner::from_pem(&private).unwrap();
    let trust = MetainfoTrust::from_pem(&String::from_utf8(public.stdout).unwrap(), false).unwrap();
    let m = meta();
    assert_eq!(accept(&trust, signer.sign(&m), &m), Ok(m));
}

#[test]
fn generated_pairs_are_what_openssl_would_write() {
    let pair = KeyPairPem::generate().unwrap();
    assert!(
        pair.private_pem
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert!(pair.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let signer = MetainfoSigner::from_pem(&pair.private_pem).unwrap();
    let trust = MetainfoTrust::from_pem(&pair.public_pem, false).unwrap();
    assert_eq!(trust.key_ids().collect::<Vec<_>>(), vec![signer.key_id()]);
    assert!(!format!("{pair:?}").contains("PRIVATE"));
}

#[test]
fn metainfo_signed_by_a_foreign_key_is_refused() {
    let ours = MetainfoSigner::from_pem(&KeyPairPem::generate().unwrap().private_pem).unwrap();
    let foreign = MetainfoSigner::from_pem(&KeyPairPem::generate().unwrap().private_pem).unwrap();
    let trust = MetainfoTrust::of_signers([&ours]);
    let m = meta();
    assert_eq!(
        accept(&trust, foreign.sign(&m), &m),
        Err(TrustError::UnknownKey(foreign.key_id()))
    );
    // Claiming our key id does not help a foreign signature.
    let mut claimed = foreign.sign(&m);
    claimed[5..5 + KEY_ID_LEN].copy_from_slice(&ours.key_id().0);
    assert_eq!(
        accept(&trust, claimed, &m),
        Err(TrustError::BadSignature(ours.key_id()))
    );
}

#[test]
fn rotation_trusts_every_configured_key() {
    let old = KeyPairPem::generate().unwrap();
    let new = KeyPairPem::generate().unwrap();
    let trust =
        MetainfoTrust::from_pem(&format!("{}\n{}", old.public_pem, new.public_pem), false).unwrap();
    let m = meta();
    for pair in [&old, &new] {
        let signer = MetainfoSigner::from_pem(&pair.private_pem).unwrap();
        assert_eq!(accept(&trust, signer.sign(&m), &m), Ok(m.clone()));
    }
}

#[test]
fn unsigned_metainfo_is_refused_unless_insecure() {
    let pair = KeyPairPem::generate().unwrap();
    let m = meta();
    let strict = MetainfoTrust::from_pem(&pair.public_pem, false).unwrap();
    assert_eq!(accept(&strict, m.encode(), &m), Err(TrustError::Unsigned));
    let none = MetainfoTrust::from_pem("", false).unwrap();
    assert_eq!(accept(&none, m.encode(), &m), Err(TrustError::Unsigned));
    let insecure = MetainfoTrust::from_pem("", true).unwrap();
    assert_eq!(accept(&insecure, m.encode(), &m), Ok(m.clone()));
    // Insecure or not, it must still describe the blob asked for.
    let other = Metainfo::from_bytes(b"other");
    assert!(matches!(
        accept(&insecure, other.encode(), &m),
        Err(TrustError::WrongDigest { .. })
    ));
}

#[test]
fn a_tampered_signature_or_metainfo_is_refused() {
    let signer = MetainfoSigner::from_pem(&KeyPairPem::generate().unwrap().private_pem).unwrap();
    let trust = MetainfoTrust::of_signers([&signer]);
    let m = meta();
    let wire = signer.sign(&m);
    let id = signer.key_id();
    let mut sig = wire.clone();
    sig[HEADER_LEN - 1] ^= 1;
    assert_eq!(accept(&trust, sig, &m), Err(TrustError::BadSignature(id)));
    // A piece hash changed behind a good signature.
    let mut hash = wire.clone();
    let last = hash.len() - 1;
    hash[last] ^= 1;
    assert_eq!(accept(&trust, hash, &m), Err(TrustError::BadSignature(id)));
    let mut version = wire.clone();
    version[4] = 2;
    assert_eq!(accept(&trust, version, &m), Err(TrustError::Version(2)));
    assert_eq!(
        accept(&trust, wire[..HEADER_LEN - 1].to_vec(), &m),
        Err(TrustError::Truncated)
    );
    // A signature made for another blob's metainfo does not pass as this one's.
    let other = Metainfo::from_bytes(b"other");
    assert!(matches!(
        accept(&trust, signer.sign(&other), &m),
        Err(TrustError::WrongDigest { .. })
    ));
}

#[test]
fn bad_key_text_is_named() {
    assert_eq!(
        MetainfoTrust::from_pem("nonsense", false).unwrap_err(),
        KeyError::NoPem
    );
    assert_eq!(
        MetainfoTrust::from_pem(P256_PUBLIC, false).unwrap_err(),
        KeyError::NotEd25519
    );
    assert!(matches!(
        MetainfoTrust::from_pem(OPENSSL_PRIVATE, false).unwrap_err(),
        KeyError::UnexpectedBlock(_)
    ));
    assert!(matches!(
        MetainfoSigner::from_pem(OPENSSL_PUBLIC).unwrap_err(),
        KeyError::UnexpectedBlock(_)
    ));
    assert_eq!(
        MetainfoTrust::from_pem("-----BEGIN PUBLIC KEY-----\nMCow\n", false).unwrap_err(),
        KeyError::UnclosedPem
    );
    assert!(matches!(
        MetainfoTrust::from_pem(
            "-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----",
            false
        )
        .unwrap_err(),
        KeyError::Base64(_)
    ));
    let broken = OPENSSL_CERT.replace("MIIBRDCB", "MIIBRDCC");
    assert!(matches!(
        MetainfoTrust::from_pem(&broken, false),
        Err(KeyError::Certificate(_) | KeyError::NotEd25519)
    ));
}

proptest! {
    #[test]
    fn envelope_parsing_and_certificates_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut signed = MAGIC.to_vec();
        signed.extend_from_slice(&bytes);
        let _ = Envelope::parse(&signed);
        let _ = Envelope::parse(&bytes);
        let _ = certificate_spki(&bytes);
    }
}
