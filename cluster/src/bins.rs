//! Where the parts' binaries are: the one finder the local cluster, the benchmarks and the
//! tests of every crate use.
//!
//! - [`Bins::at`]: a directory named by the user (`--bin-dir`, `SHOAL_BIN_DIR`).
//! - [`Bins::find`]: for programs: a named directory, `SHOAL_BIN_DIR`, the directory the
//!   program runs from, or `$CARGO_TARGET_DIR/release`, the first that holds every part.
//! - [`Bins::for_tests`]: for tests in any crate: built through cargo into the target
//!   directory and profile the test runs from, as `cargo test --workspace` builds them, so
//!   that under that command nothing is compiled again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{LaunchError, Result};

/// The four parts' binaries.
pub const PARTS: [&str; 4] = [
    "shoal-origin",
    "shoal-tracker",
    "shoal-proxy",
    "shoal-agent",
];

/// This crate's binary, the local cluster's commands.
pub const LAUNCHER: &str = "shoal-cluster";

/// A directory of binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bins {
    dir: PathBuf,
}

/// The workspace's top directory (where `Cargo.toml` and `deploy/` are).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

impl Bins {
    /// `dir` as it is; [`Bins::check`] says whether it holds what is needed.
    pub fn at(dir: impl Into<PathBuf>) -> Bins {
        Bins { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An error naming every one of `names` that is not an executable file here.
    pub fn check<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let missing: Vec<String> = names
            .into_iter()
            .filter(|n| !is_executable(&self.path(n)))
            .map(str::to_owned)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(LaunchError::Missing {
                dir: self.dir.clone(),
                missing,
            })
        }
    }

    /// For programs: `explicit`, else `$SHOAL_BIN_DIR`, else the directory this program runs
    /// from (only if it is a release build when `release_only`), else
    /// `$CARGO_TARGET_DIR/release`: the first that holds every part's binary.
    pub fn find(explicit: Option<PathBuf>, release_only: bool) -> Result<Bins> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(d) = explicit {
            candidates.push(d);
        } else {
            if let Some(d) = std::env::var_os("SHOAL_BIN_DIR") {
                candidates.push(d.into());
            }
            if let Some(d) = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
                .filter(|d| !release_only || d.ends_with("release"))
            {
                candidates.push(d);
            }
            if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
                candidates.push(PathBuf::from(d).join("release"));
            }
        }
        let mut tried = Vec::new();
        for d in candidates {
            let bins = Bins::at(d);
            if bins.check(PARTS).is_ok() {
                return Ok(bins);
            }
            tried.push(bins.dir.display().to_string());
        }
        Err(LaunchError::Binaries(format!(
            "no directory holds {} (tried: {}); build them with `cargo build --release -p \
             shoal-origin -p shoal-tracker -p shoal-agent -p shoal-proxy` or name one with \
             --bin-dir",
            PARTS.join(", "),
            tried.join(", ")
        )))
    }

    /// For tests: `$SHOAL_BIN_DIR` if set, else the directory of the target directory and
    /// profile this test runs from, after building in it what `cargo test --workspace
    /// --features <features>` builds (every member's bins and tests: the same selection
    /// gives the same feature set, so under that command everything is built already and
    /// nothing is compiled again, while a test run alone still gets fresh binaries).
    /// Built once per test process.
    pub fn for_tests(features: &[&str]) -> Result<Bins> {
        static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
        let dir = DIR.get_or_init(|| {
            if let Some(dir) = std::env::var_os("SHOAL_BIN_DIR") {
                return Ok(PathBuf::from(dir));
            }
            build_like_tests(features)
        });
        let bins = Bins::at(dir.clone().map_err(LaunchError::Binaries)?);
        bins.check(PARTS)?;
        Ok(bins)
    }
}

fn build_like_tests(features: &[&str]) -> std::result::Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot tell where this runs from: {e}"))?;
    let unexpected = || format!("unexpected test binary path {}", exe.display());
    // <target>/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(unexpected)?
        .to_path_buf();
    let target_dir = profile_dir.parent().ok_or_else(unexpected)?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(&cargo);
    c.args([
        "build",
        "--workspace",
        "--bins",
        "--tests",
        "--locked",
        "--quiet",
    ])
    .arg("--target-dir")
    .arg(target_dir)
    .current_dir(workspace_root());
    if !features.is_empty() {
        c.arg("--features").arg(features.join(","));
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            c.arg("--release");
        }
        other => {
            c.args(["--profile", other]);
        }
    }
    let status = c
        .status()
        .map_err(|e| format!("cannot run {cargo} to build the binaries: {e}"))?;
    if !status.success() {
        return Err(format!("building the binaries failed: {status}"));
    }
    Ok(profile_dir)
}

/// Where `program` is on the `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_a_part_names_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = Bins::at(dir.path())
            .check(["shoal-origin", "shoal-agent"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            err,
            format!(
                "not found in {}: shoal-origin shoal-agent",
                dir.path().display()
            )
        );
    }

    #[test]
    fn find_takes_the_named_directory_only_if_it_holds_every_part() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(Bins::find(Some(dir.path().to_owned()), true).is_err());
        for p in PARTS {
            let path = dir.path().join(p);
            std::fs::write(&path, "").unwrap_or_else(|e| panic!("{e}"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let found = Bins::find(Some(dir.path().to_owned()), true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.dir(), dir.path());
    }
}
