//! Where blobs and tags live beyond the origins: written back after an upload, read through
//! when something is missing from every origin. One trait; a directory on disk
//! ([`fs::FsBackend`]) now, object stores and upstream registries later.

use std::fmt;
use std::io;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use shoal_core::{Digest, RepoName, Tag};

pub mod fs;

/// A blob's bytes on their way in or out of a backend.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend I/O: {0}")]
    Io(#[from] io::Error),
    /// The backend cannot be reached just now; retrying may help.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend holds something that cannot be what it claims to be.
    #[error("backend holds a corrupt entry: {0}")]
    Corrupt(String),
}

/// A blob read from a backend. The origin verifies the bytes before it stores or serves them.
pub struct BlobRead {
    pub length: u64,
    pub stream: ByteStream,
}

impl fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobRead")
            .field("length", &self.length)
            .finish()
    }
}

/// A backend store. Every method is idempotent: the write-back queue retries them.
pub trait Backend: Send + Sync + fmt::Debug {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Whether writes go anywhere; the origin queues no write-backs for a backend that
    /// keeps nothing.
    fn stores(&self) -> bool {
        true
    }

    /// The blob's length, or `None` if the backend does not hold it.
    fn stat_blob<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<u64>, BackendError>>;

    fn get_blob<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<BlobRead>, BackendError>>;

    /// Stores a blob whose bytes the origin has verified; `length` is their count.
    fn put_blob<'a>(
        &'a self,
        digest: &'a Digest,
        length: u64,
        body: ByteStream,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Removes a blob; `false` if it was not there.
    fn delete_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<bool, BackendError>>;

    fn get_tag<'a>(
        &'a self,
        name: &'a RepoName,
        tag: &'a Tag,
    ) -> BoxFuture<'a, Result<Option<Digest>, BackendError>>;

    fn put_tag<'a>(
        &'a self,
        name: &'a RepoName,
        tag: &'a Tag,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Removes a tag; `false` if it was not there.
    fn delete_tag<'a>(
        &'a self,
        name: &'a RepoName,
        tag: &'a Tag,
    ) -> BoxFuture<'a, Result<bool, BackendError>>;
}

/// No backend: nothing is written back and nothing can be read through.
#[derive(Debug, Default)]
pub struct NoBackend;

impl Backend for NoBackend {
    fn name(&self) -> &'static str {
        "none"
    }

    fn stores(&self) -> bool {
        false
    }

    fn stat_blob<'a>(&'a self, _: &'a Digest) -> BoxFuture<'a, Result<Option<u64>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    fn get_blob<'a>(
        &'a self,
        _: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<BlobRead>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    fn put_blob<'a>(
        &'a self,
        _: &'a Digest,
        _: u64,
        _: ByteStream,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn delete_blob<'a>(&'a self, _: &'a Digest) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async { Ok(false) })
    }

    fn get_tag<'a>(
        &'a self,
        _: &'a RepoName,
        _: &'a Tag,
    ) -> BoxFuture<'a, Result<Option<Digest>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    fn put_tag<'a>(
        &'a self,
        _: &'a RepoName,
        _: &'a Tag,
        _: &'a Digest,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn delete_tag<'a>(
        &'a self,
        _: &'a RepoName,
        _: &'a Tag,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async { Ok(false) })
    }
}
