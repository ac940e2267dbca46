//! containerd's registry host configuration (`<certs.d>/<registry>/hosts.toml`): make it try
//! the agent first for a registry, and put things back as they were.
//!
//! ```toml
//! server = "https://registry-1.docker.io"
//!
//! [host."http://127.0.0.1:8081"]
//!   capabilities = ["pull", "resolve"]
//! ```
//!
//! A file the agent did not write is kept as `hosts.toml.shoal-backup` before the agent's
//! replaces it, and `restore` puts it back; a file the agent wrote is recognised by its
//! first line, so installing twice changes nothing and never backs up the agent's own file.

use std::io;
use std::path::{Path, PathBuf};

/// The first line of every file the agent writes.
const MARKER: &str = "# Written by shoal-agent: containerd tries the Shoal agent first.";
const FILE: &str = "hosts.toml";
const BACKUP: &str = "hosts.toml.shoal-backup";

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("{0:?} is not a registry host name (such as docker.io or registry.example.com:5000)")]
    BadRegistry(String),
    #[error("{0:?} is not an http:// or https:// URL of the agent")]
    BadMirror(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What happened to one registry's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written where there was none.
    Written,
    /// Written; the file that was there is kept as the backup.
    WrittenWithBackup,
    /// The agent's file was already there with the same content.
    Unchanged,
    /// The agent's earlier file was rewritten (another mirror address).
    Updated,
    /// restore: the backup is back in place.
    Restored,
    /// restore: the agent's file is removed; there was nothing before it.
    Removed,
    /// restore: the file there is not the agent's, and there is no backup: left alone.
    LeftAlone,
}

/// The upstream server containerd falls back to for a registry.
pub fn upstream_server(registry: &str) -> String {
    match registry {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => {
            "https://registry-1.docker.io".into()
        }
        r => format!("https://{r}"),
    }
}

/// A registry host as containerd names its directory: `host` or `host:port`.
fn check_registry(r: &str) -> Result<(), ContainerdError> {
    let bad = || ContainerdError::BadRegistry(r.to_owned());
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_mirror(m: &str) -> Result<String, ContainerdError> {
    let bad = || ContainerdError::BadMirror(m.to_owned());
    let url = reqwest::Url::parse(m).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad());
    }
    if m.contains(['"', '\\', '\n']) {
        return Err(bad());
    }
    Ok(m.trim_end_matches('/').to_owned())
}

/// The file the agent writes for `registry` with the agent at `mirror`.
pub fn hosts_toml(registry: &str, mirror: &str) -> String {
    format!(
        "{MARKER}\n# `shoal-agent containerd-config restore` puts the previous file back.\n\
         server = \"{}\"\n\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        upstream_server(registry)
    )
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContainerdError + '_ {
    move |source| ContainerdError::Io {
        path: path.to_owned(),
        source,
    }
}

fn is_ours(path: &Path) -> Result<Option<bool>, ContainerdError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.lines().next() == Some(MARKER))),
        // Not UTF-8: certainly not ours.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Some(false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes `path` whole or not at all.
fn write_atomic(path: &Path, text: &str) -> Result<(), ContainerdError> {
    let tmp = path.with_extension("toml.shoal-tmp");
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

/// Makes containerd try the agent at `mirror` first for each of `registries`.
pub fn install(
    certs_dir: &Path,
    mirror: &str,
    registries: &[String],
) -> Result<Vec<(String, Outcome)>, ContainerdError> {
    let mirror = check_mirror(mirror)?;
    for r in registries {
        check_registry(r)?;
    }
    let mut out = Vec::new();
    for r in registries {
        let dir = certs_dir.join(r);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let file = dir.join(FILE);
        let backup = dir.join(BACKUP);
        let text = hosts_toml(r, &mirror);
        let outcome = match is_ours(&file)? {
            None => Outcome::Written,
            Some(true) => {
                let current = std::fs::read_to_string(&file).map_err(io_err(&file))?;
                if current == text {
                    out.push((r.clone(), Outcome::Unchanged));
                    continue;
                }
                Outcome::Updated
            }
            Some(false) => {
                // The file there is someone else's: keep it (a backup left by an earlier
                // install would be the agent's predecessor of it, so the newer one wins).
                std::fs::copy(&file, &backup).map_err(io_err(&backup))?;
                Outcome::WrittenWithBackup
            }
        };
        write_atomic(&file, &text)?;
        out.push((r.clone(), outcome));
    }
    Ok(out)
}

/// Undoes [`install`] for each of `registries`.
pub fn restore(
    certs_dir: &Path,
    registries: &[String],
) -> Result<Vec<(String, Outcome)>, ContainerdError> {
    for r in registries {
        check_registry(r)?;
    }
    let mut out = Vec::new();
    for r in registries {
        let dir = certs_dir.join(r);
        let file = dir.join(FILE);
        let backup = dir.join(BACKUP);
        let outcome = if backup.exists() {
            std::fs::rename(&backup, &file).map_err(io_err(&file))?;
            Outcome::Restored
        } else if is_ours(&file)? == Some(true) {
            std::fs::remove_file(&file).map_err(io_err(&file))?;
            // The directory was the agent's too if nothing else is in it.
            let _ = std::fs::remove_dir(&dir);
            Outcome::Removed
        } else {
            Outcome::LeftAlone
        };
        out.push((r.clone(), outcome));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIRROR: &str = "http://127.0.0.1:8081";

    fn regs(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn writes_a_mirror_first_config_that_parses() {
        let dir = tempfile::tempdir().unwrap();
        let got = install(dir.path(), MIRROR, &regs(&["docker.io", "ghcr.io"])).unwrap();
        assert_eq!(
            got,
            vec![
                ("docker.io".into(), Outcome::Written),
                ("ghcr.io".into(), Outcome::Written)
            ]
        );
        let text = std::fs::read_to_string(dir.path().join("docker.io/hosts.toml")).unwrap();
        let t: toml::Table = text.parse().unwrap();
        assert_eq!(t["server"].as_str(), Some("https://registry-1.docker.io"));
        let host = &t["host"][MIRROR];
        assert_eq!(
            host["capabilities"].as_array().unwrap(),
            &vec![toml::Value::from("pull"), toml::Value::from("resolve")]
        );
        let ghcr: toml::Table = std::fs::read_to_string(dir.path().join("ghcr.io/hosts.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ghcr["server"].as_str(), Some("https://ghcr.io"));
    }

    #[test]
    fn install_is_idempotent_and_restore_undoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("docker.io");
        std::fs::create_dir_all(&d).unwrap();
        let theirs = "server = \"https://registry-1.docker.io\"\n# the operator's own\n";
        std::fs::write(d.join("hosts.toml"), theirs).unwrap();

        let r = regs(&["docker.io", "quay.io"]);
        let first = install(dir.path(), MIRROR, &r).unwrap();
        assert_eq!(first[0].1, Outcome::WrittenWithBackup);
        assert_eq!(
            std::fs::read_to_string(d.join("hosts.toml.shoal-backup")).unwrap(),
            theirs
        );
        let second = install(dir.path(), MIRROR, &r).unwrap();
        assert!(second.iter().all(|(_, o)| *o == Outcome::Unchanged));
        // The backup is still the operator's file, not the agent's.
        assert_eq!(
            std::fs::read_to_string(d.join("hosts.toml.shoal-backup")).unwrap(),
            theirs
        );
        let moved = install(dir.path(), "http://127.0.0.1:18081/", &r).unwrap();
        assert!(moved.iter().all(|(_, o)| *o == Outcome::Updated));

        let back = restore(dir.path(), &r).unwrap();
        assert_eq!(
            back,
            vec![
                ("docker.io".into(), Outcome::Restored),
                ("quay.io".into(), Outcome::Removed)
            ]
        );
        assert_eq!(
            std::fs::read_to_string(d.join("hosts.toml")).unwrap(),
            theirs
        );
        assert!(!d.join("hosts.toml.shoal-backup").exists());
        assert!(!dir.path().join("quay.io").exists());
        // Nothing of the agent's is left: a second restore changes nothing.
        let again = restore(dir.path(), &r).unwrap();
        assert_eq!(again[0].1, Outcome::LeftAlone);
        assert_eq!(
            std::fs::read_to_string(d.join("hosts.toml")).unwrap(),
            theirs
        );
    }

    #[test]
    fn bad_names_touch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "../etc",
            "a/b",
            "",
            "docker.io:0",
            "-x.io",
            "a..b",
            "x:99999",
        ] {
            assert!(
                matches!(
                    install(dir.path(), MIRROR, &regs(&["ok.io", bad])),
                    Err(ContainerdError::BadRegistry(_))
                ),
                "{bad:?}"
            );
        }
        for bad in ["127.0.0.1:8081", "ftp://x", "http://a\"b"] {
            assert!(matches!(
                install(dir.path(), bad, &regs(&["ok.io"])),
                Err(ContainerdError::BadMirror(_))
            ));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(install(dir.path(), MIRROR, &regs(&["registry.local:5000"])).is_ok());
    }
}
