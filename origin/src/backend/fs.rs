//! A backend in a directory, which several origins may share (a network file system):
//!
//! ```text
//! blobs/<algorithm>/<first two hex>/<hex>
//! repositories/<name>/_tags/<tag>          the manifest digest, as text
//! tmp/<random>                             writes in progress
//! ```
//!
//! `_tags` cannot be a repository name component (components start with a letter or digit),
//! so a repository named `a/_tags` cannot exist to collide with tag files. Every write goes to
//! a fresh file in `tmp/` and is renamed into place, so readers never see a partial entry.
//! Since other origins may be writing into `tmp/` at the same moment, only files there that
//! are a day old are removed at start.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::future::BoxFuture;
use shoal_core::{Digest, RepoName, Tag};
use tokio::fs;
use tokio::io::AsyncWriteExt;

use super::{Backend, BackendError, BlobRead, ByteStream};

/// Temporary files older than this are left over from a crash.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
}

impl FsBackend {
    pub async fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref().to_owned();
        for d in ["blobs", "repositories", "tmp"] {
            fs::create_dir_all(root.join(d)).await?;
        }
        let tmp = root.join("tmp");
        let mut rd = fs::read_dir(&tmp).await?;
        while let Some(e) = rd.next_entry().await? {
            let old = e
                .metadata()
                .await
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP);
            if old {
                let _ = fs::remove_file(e.path()).await;
            }
        }
        Ok(FsBackend { root })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    fn tag_path(&self, name: &RepoName, tag: &Tag) -> PathBuf {
        let mut p = self.root.join("repositories");
        for c in name.as_str().split('/') {
            p.push(c);
        }
        p.join("_tags").join(tag.as_str())
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(hex::encode(rand::random::<[u8; 12]>()))
    }

    /// Writes whatever `fill` writes to a temporary file, then renames it to `dest`.
    async fn install(
        &self,
        dest: &Path,
        write: impl AsyncFnOnce(&mut fs::File) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let temp = self.temp_path();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await?;
        let result = async {
            write(&mut file).await?;
            file.flush().await?;
            file.sync_all().await?;
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir).await?;
            }
            fs::rename(&temp, dest).await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&temp).await;
        }
        result
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Backend for FsBackend {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn stat_blob<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<u64>, BackendError>> {
        Box::pin(async move {
            Ok(not_found_is_none(fs::metadata(self.blob_path(digest)).await)?.map(|m| m.len()))
        })
    }

    fn get_blob<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<BlobRead>, BackendError>> {
        Box::pin(async move {
            let Some(file) = not_found_is_none(fs::File::open(self.blob_path(digest)).await)?
            else {
                return Ok(None);
            };
            let length = file.metadata().await?.len();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).boxed();
            Ok(Some(BlobRead { length, stream }))
        })
    }

    fn put_blob<'a>(
        &'a self,
        digest: &'a Digest,
        length: u64,
        mut body: ByteStream,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let dest = self.blob_path(digest);
            if fs::try_exists(&dest).await? {
                return Ok(());
            }
            self.install(&dest, async move |file| {
                let mut written = 0u64;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    written += chunk.len() as u64;
                    file.write_all(&chunk).await?;
                }
                if written != length {
                    return Err(BackendError::Io(io::Error::other(format!(
                        "blob source gave {written} bytes where {length} were expected"
                    ))));
                }
                Ok(())
            })
            .await
        })
    }

    fn delete_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            Ok(not_found_is_none(fs::remove_file(self.blob_path(digest)).await)?.is_some())
        })
    }

    fn get_tag<'a>(
        &'a self,
        name: &'a RepoName,
        tag: &'a Tag,
    ) -> BoxFuture<'a, Result<Option<Digest>, BackendError>> {
        Box::pin(async move {
            let Some(text) = not_found_is_none(fs::read_to_string(self.tag_path(name, tag)).await)?
            else {
                return Ok(None);
            };
            text.trim()
                .parse()
                .map(Some)
                .map_err(|e| BackendError::Corrupt(format!("tag {name}:{tag}: {e}")))
        })
    }

    fn put_tag<'a>(
        &'a self,
        name: &'a RepoName,
        tag: &'a Tag,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let text = format!("{digest}\n");
            self.install(&self.tag_path(name, tag), async move |file| {
                file.write_all(text.as_bytes()).await?;
                Ok(())
            })
            .await
        })
    }

    fn delete_tag<'a>(
        &'a self,
        name: &'a RepoName,
        tag: &'a Tag,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            Ok(not_found_is_none(fs::remove_file(self.tag_path(name, tag)).await)?.is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::TryStreamExt;

    fn body(b: &'static [u8]) -> ByteStream {
        futures::stream::iter([Ok(Bytes::from_static(b))]).boxed()
    }

    #[tokio::test]
    async fn blobs_and_tags_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path()).await.unwrap();
        let d = Digest::sha256_of(b"hello");
        assert_eq!(b.stat_blob(&d).await.unwrap(), None);
        assert!(b.get_blob(&d).await.unwrap().is_none());
        b.put_blob(&d, 5, body(b"hello")).await.unwrap();
        assert_eq!(b.stat_blob(&d).await.unwrap(), Some(5));
        let read = b.get_blob(&d).await.unwrap().unwrap();
        let bytes: Vec<Bytes> = read.stream.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), b"hello");
        assert!(b.delete_blob(&d).await.unwrap());
        assert!(!b.delete_blob(&d).await.unwrap());

        let name: RepoName = "a/b".parse().unwrap();
        let inner: RepoName = "a".parse().unwrap();
        let tag: Tag = "latest".parse().unwrap();
        assert_eq!(b.get_tag(&name, &tag).await.unwrap(), None);
        b.put_tag(&name, &tag, &d).await.unwrap();
        // A repository that is a prefix of another does not collide with its tags.
        b.put_tag(&inner, &"b".parse().unwrap(), &d).await.unwrap();
        assert_eq!(b.get_tag(&name, &tag).await.unwrap(), Some(d));
        assert!(b.delete_tag(&name, &tag).await.unwrap());
        assert_eq!(b.get_tag(&name, &tag).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_short_source_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path()).await.unwrap();
        let d = Digest::sha256_of(b"hello");
        assert!(b.put_blob(&d, 10, body(b"hello")).await.is_err());
        assert_eq!(b.stat_blob(&d).await.unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
