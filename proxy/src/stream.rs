//! Byte streams on their way to the origins: checked against a digest as they pass, so a
//! blob is hashed once, while it moves, and an origin never receives the complete body of
//! a blob that does not match its name.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use shoal_core::digest::{Digest, Hasher};
use std::future::Future;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// How a [`Verify`] stream ended, for the handler to tell whose fault a failed upload was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not at the end yet (or the reader stopped early).
    Pending,
    Matched {
        length: u64,
    },
    Mismatch {
        actual: Digest,
    },
    /// The source failed: the client went away or sent a broken body.
    SourceFailed,
}

/// The end of a mismatching stream.
#[derive(Debug, thiserror::Error)]
#[error("content does not match digest {expected}")]
pub struct MismatchError {
    pub expected: Digest,
}

/// A stream that hashes what passes (all of it, or all after the first `skip` bytes when
/// the hash of those is already known) and, at the end, yields an error in place of the
/// end of stream if the hash is not `expected`.
pub struct Verify {
    inner: ByteStream,
    hasher: Option<Hasher>,
    skip: u64,
    seen: u64,
    expected: Digest,
    verdict: Arc<Mutex<Verdict>>,
}

impl Verify {
    /// Hashes the whole stream.
    pub fn new(inner: ByteStream, expected: Digest) -> Self {
        Self::resume(inner, expected, Hasher::new(expected.algorithm()), 0)
    }

    /// Goes on from `hasher`, which has already hashed the first `skip` bytes of `inner`.
    pub fn resume(inner: ByteStream, expected: Digest, hasher: Hasher, skip: u64) -> Self {
        Verify {
            inner,
            hasher: Some(hasher),
            skip,
            seen: 0,
            expected,
            verdict: Arc::new(Mutex::new(Verdict::Pending)),
        }
    }

    /// Where the outcome will be, readable after the stream is gone.
    pub fn verdict(&self) -> Arc<Mutex<Verdict>> {
        self.verdict.clone()
    }

    fn set(&self, v: Verdict) {
        if let Ok(mut g) = self.verdict.lock() {
            *g = v;
        }
    }
}

/// Reads a verdict, treating a poisoned lock as no verdict.
pub fn read_verdict(v: &Arc<Mutex<Verdict>>) -> Verdict {
    v.lock().map(|g| *g).unwrap_or(Verdict::Pending)
}

impl Stream for Verify {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(hasher) = this.hasher.as_mut() else {
            return Poll::Ready(None);
        };
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                let start = this.seen;
                this.seen += chunk.len() as u64;
                if this.seen > this.skip {
                    let from = this.skip.saturating_sub(start) as usize;
                    hasher.update(&chunk[from..]);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.hasher = None;
                this.set(Verdict::SourceFailed);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let actual = this.hasher.take().map(Hasher::finalize);
                match actual {
                    Some(a) if a == this.expected => {
                        let length = this.seen;
                        this.set(Verdict::Matched { length });
                        Poll::Ready(None)
                    }
                    Some(actual) => {
                        this.set(Verdict::Mismatch { actual });
                        Poll::Ready(Some(Err(Box::new(MismatchError {
                            expected: this.expected,
                        }))))
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }
}

/// A body that stopped sending.
#[derive(Debug, thiserror::Error)]
#[error("the body sent nothing for {0:?}")]
pub struct Stalled(pub std::time::Duration);

/// Fails a stream that yields nothing for `limit`, so a client that stops sending mid-body
/// does not hold an origin connection (or a session) forever.
pub struct Stall {
    inner: ByteStream,
    limit: std::time::Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl Stall {
    pub fn new(inner: ByteStream, limit: std::time::Duration) -> Self {
        Stall {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            done: false,
        }
    }
}

impl Stream for Stall {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(item) => {
                let deadline = tokio::time::Instant::now() + this.limit;
                this.sleep.as_mut().reset(deadline);
                if item.is_none() {
                    this.done = true;
                }
                Poll::Ready(item)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err(Box::new(Stalled(this.limit)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<Result<Bytes, BoxError>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn drain(mut v: Verify) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut failed = false;
        while let Some(item) = v.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => failed = true,
            }
        }
        (out, failed)
    }

    #[tokio::test]
    async fn matching_stream_ends_cleanly() {
        let d = Digest::sha256_of(b"hello world");
        let v = Verify::new(chunks(&[b"hello", b" ", b"world"]), d);
        let verdict = v.verdict();
        let (out, failed) = drain(v).await;
        assert_eq!((out.as_slice(), failed), (&b"hello world"[..], false));
        assert_eq!(read_verdict(&verdict), Verdict::Matched { length: 11 });
    }

    #[tokio::test]
    async fn mismatch_ends_with_an_error() {
        let d = Digest::sha256_of(b"hello world");
        let v = Verify::new(chunks(&[b"hello", b" there"]), d);
        let verdict = v.verdict();
        let (_, failed) = drain(v).await;
        assert!(failed);
        assert!(matches!(read_verdict(&verdict), Verdict::Mismatch { .. }));
    }

    #[tokio::test]
    async fn resume_skips_what_was_hashed_even_mid_chunk() {
        let d = Digest::sha256_of(b"abcdef");
        let mut h = Hasher::new(d.algorithm());
        h.update(b"abc");
        // The first three bytes arrive split differently from how they were hashed.
        let v = Verify::resume(chunks(&[b"ab", b"cde", b"f"]), d, h, 3);
        let verdict = v.verdict();
        let (_, failed) = drain(v).await;
        assert!(!failed);
        assert_eq!(read_verdict(&verdict), Verdict::Matched { length: 6 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_fails() {
        let inner = futures::stream::iter(vec![Ok::<_, BoxError>(Bytes::from_static(b"a"))])
            .chain(futures::stream::pending());
        let mut s = Stall::new(Box::pin(inner), std::time::Duration::from_secs(5));
        assert!(s.next().await.unwrap().is_ok());
        let started = tokio::time::Instant::now();
        assert!(s.next().await.unwrap().is_err());
        assert!(started.elapsed() >= std::time::Duration::from_secs(5));
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn source_failure_is_recorded() {
        let items: Vec<Result<Bytes, BoxError>> = vec![
            Ok(Bytes::from_static(b"a")),
            Err(Box::new(std::io::Error::other("gone"))),
        ];
        let v = Verify::new(
            Box::pin(futures::stream::iter(items)),
            Digest::sha256_of(b"a"),
        );
        let verdict = v.verdict();
        let (_, failed) = drain(v).await;
        assert!(failed);
        assert_eq!(read_verdict(&verdict), Verdict::SourceFailed);
    }
}
