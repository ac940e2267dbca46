//! Making a throwaway CA and certificates from it: the local cluster's `--tls`, and tests.
//! A production cluster gets its certificates from cert-manager or the chart's CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub use rcgen::Error;

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clocks differ a little) until `days` from now.
    pub fn days(days: u64) -> Self {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(days * 86_400),
        }
    }

    /// Valid for a day that ended an hour ago.
    pub fn expired() -> Self {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(25 * 3600),
            not_after: now - Duration::from_secs(3600),
        }
    }
}

pub(super) fn time(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key` (the key readable by its owner only),
    /// each through a temporary file and a rename, so a part reloading them never reads half
    /// of one. The two paths.
    pub fn write(&self, dir: &Path, stem: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_atomic(&key, self.key_pem.as_bytes(), true)?;
        write_atomic(&cert, self.cert_pem.as_bytes(), false)?;
        Ok((cert, key))
    }
}

fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, private)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)
}

fn tempfile_in(dir: &Path, private: bool) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!(".tls-{:016x}.tmp", rand::random::<u64>()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&path)?;
    Ok((path, f))
}

/// What a CA called `name` is, but its validity.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A certificate authority that lives as long as the value (and in the files it writes).
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA called `name`, valid for ten years.
    pub fn new(name: &str) -> Result<Ca, Error> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(name);
        let v = Validity::days(3650);
        params.not_before = time(v.not_before);
        params.not_after = time(v.not_after);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA called `name` again, from the certificate and key [`Ca::cert_pem`] and
    /// [`Ca::key_pem`] gave (a launcher that keeps its CA across runs). `name` must be the one
    /// it was made with: what it signs names it as their issuer.
    pub fn from_pem(name: &str, cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer: Issuer::new(ca_params(name), key),
        })
    }

    /// The CA's certificate: what parts trust (`tls.ca`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (for a launcher that keeps the CA across runs).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for `names` (DNS names or IP addresses; the first is also its common
    /// name), good for serving and for dialling (both ends of the peer protocol).
    pub fn issue(&self, names: &[&str], validity: Validity) -> Result<Issued, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("shoal"),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<_, Error>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = time(validity.not_before);
        params.not_after = time(validity.not_after);
        params.serial_number = Some(rand::random::<[u8; 16]>().to_vec().into());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the CA's certificate to `<dir>/ca.crt`; its path.
    pub fn write_cert(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("ca.crt");
        write_atomic(&path, self.cert_pem.as_bytes(), false)?;
        Ok(path)
    }
}

/// The name in a peer certificate of the agent called `name`.
pub fn agent_name(name: &str) -> String {
    format!("{name}{}", super::AGENT_SUFFIX)
}

/// The name in a peer certificate of the origin called `name`.
pub fn origin_name(name: &str) -> String {
    format!("{name}{}", super::ORIGIN_SUFFIX)
}
