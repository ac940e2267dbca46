//! The directory a benchmark works in, cleaned up however the run ends: removed after a
//! successful run, and after a failed one stripped of its data (blobs, caches, origin
//! stores) but not of the configs and logs that say what went wrong.

use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
    ok: bool,
}

impl WorkDir {
    /// `path`, or a new directory named after `prefix` and this process under the system's
    /// temporary directory. With `keep` nothing is removed.
    pub fn new(path: Option<PathBuf>, prefix: &str, keep: bool) -> super::Result<WorkDir> {
        let path = path.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()))
        });
        std::fs::create_dir_all(&path).map_err(super::BenchError::io("cannot create", &path))?;
        Ok(WorkDir {
            path,
            keep,
            ok: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run succeeded: the whole directory goes (unless kept).
    pub fn succeeded(&mut self) {
        self.ok = true;
    }
}

/// Removes everything under `dir` but directories named `config` or `logs`.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let keep = matches!(
            p.file_name().and_then(|n| n.to_str()),
            Some("config" | "logs")
        );
        if keep {
            continue;
        }
        if p.is_dir() {
            prune(&p);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else if self.ok {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            prune(&self.path);
            eprintln!(
                "configs and logs of the failed run are in {}",
                self.path.display()
            );
        }
    }
}
