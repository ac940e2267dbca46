use std::path::PathBuf;
use std::time::Duration;

/// Why a cluster could not be made, started, or used.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not found in {}: {}", dir.display(), missing.join(" "))]
    Missing { dir: PathBuf, missing: Vec<String> },
    #[error("{0}")]
    Binaries(String),
    #[error("{name} exited while {doing} (its log: {}); its last lines:\n{tail}", log.display())]
    Exited {
        name: String,
        doing: String,
        log: PathBuf,
        tail: String,
    },
    #[error("not ready within {}s: {} (logs in {})", timeout.as_secs(), names.join(" "), logs.display())]
    NotReady {
        names: Vec<String>,
        timeout: Duration,
        logs: PathBuf,
    },
    #[error("interrupted")]
    Interrupted,
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{0}")]
    Check(String),
}

impl LaunchError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| LaunchError::Io { what, path, source }
    }

    pub fn http(what: impl Into<String>) -> impl FnOnce(reqwest::Error) -> Self {
        let what = what.into();
        move |source| LaunchError::Http { what, source }
    }
}

pub type Result<T> = std::result::Result<T, LaunchError>;
