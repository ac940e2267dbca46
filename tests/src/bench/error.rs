use std::path::PathBuf;

/// Why a benchmark could not go on.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    #[error("{0} did not happen in time")]
    Timeout(String),
    #[error("{0}")]
    Check(String),
    #[error(transparent)]
    Launch(#[from] shoal_cluster::LaunchError),
}

impl BenchError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| BenchError::Io { what, path, source }
    }

    pub fn http(what: impl Into<String>) -> impl FnOnce(reqwest::Error) -> Self {
        let what = what.into();
        move |source| BenchError::Http { what, source }
    }
}
