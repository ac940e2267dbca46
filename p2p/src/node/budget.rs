//! The node's bound on piece bytes held in memory between the socket and the disk.
//!
//! The same kind of budget bounds the other direction, uploads: a connection's writer
//! reserves a chunk of a piece before it reads the chunk from disk, and gives it back once
//! the chunk is written to the socket.
//!
//! A connection's reader reserves a piece's length from the [`WriteBudget`] as soon as it
//! has read the piece's header, before it allocates the buffer, and the [`Reservation`]
//! travels with the bytes: through verification, the engine's decision, and the write to the
//! partial blob; dropping it (written, dropped as a duplicate, or the connection gone) gives
//! the bytes back. While the budget is spent, readers stop reading, so TCP's flow control
//! slows the senders down to the pace of the disk instead of the node buffering without
//! bound when the network outruns it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::IntGauge;
use tokio::sync::Semaphore;

use crate::rate::RateLimiter;
use crate::wire::Pacer;

/// What [`crate::NodeConfig::max_unwritten_bytes`] is unless set.
pub const DEFAULT_MAX_UNWRITTEN_BYTES: u64 = 64 << 20;

/// What [`crate::NodeConfig::max_unsent_bytes`] is unless set.
pub const DEFAULT_MAX_UNSENT_BYTES: u64 = 64 << 20;

/// Piece bytes received and not yet written or dropped, for the whole node; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct WriteBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: Semaphore,
    limit: u32,
    held: AtomicU64,
    /// The most ever held at once (tests).
    peak: AtomicU64,
    gauge: Option<IntGauge>,
}

impl WriteBudget {
    /// A budget of `limit` bytes (at least 1, at most 4 GiB), reported on `gauge`.
    pub fn new(limit: u64, gauge: Option<IntGauge>) -> Self {
        let limit = limit.clamp(1, u32::MAX as u64) as u32;
        WriteBudget {
            inner: Arc::new(Inner {
                permits: Semaphore::new(limit as usize),
                limit,
                held: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                gauge,
            }),
        }
    }

    /// Waits until `bytes` fit and takes them. A piece longer than the whole budget takes
    /// all of it, so it still gets through, alone.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let n = (bytes.min(u32::MAX as usize) as u32).min(self.inner.limit);
        if let Ok(p) = self.inner.permits.acquire_many(n).await {
            // Given back by hand when the reservation drops, which may be on another task.
            p.forget();
        }
        let held = self.inner.held.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        self.inner.peak.fetch_max(held, Ordering::SeqCst);
        if let Some(g) = &self.inner.gauge {
            g.add(n as i64);
        }
        Reservation {
            inner: Arc::clone(&self.inner),
            n,
        }
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.inner.held.load(Ordering::SeqCst)
    }

    /// The most ever reserved at once.
    #[cfg(test)]
    pub fn peak(&self) -> u64 {
        self.inner.peak.load(Ordering::SeqCst)
    }
}

/// Bytes of one piece counted against the budget until this is dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    inner: Arc<Inner>,
    n: u32,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.held.fetch_sub(self.n as u64, Ordering::SeqCst);
        if let Some(g) = &self.inner.gauge {
            g.sub(self.n as i64);
        }
        self.inner.permits.add_permits(self.n as usize);
    }
}

/// A connection reader's pacing: the node's ingress cap for every chunk, and a reservation
/// from the write budget for every piece before its buffer exists.
pub(crate) struct ReadPacer<'a> {
    ingress: &'a RateLimiter,
    budget: &'a WriteBudget,
    held: Mutex<Option<Reservation>>,
}

impl<'a> ReadPacer<'a> {
    pub fn new(ingress: &'a RateLimiter, budget: &'a WriteBudget) -> Self {
        ReadPacer {
            ingress,
            budget,
            held: Mutex::new(None),
        }
    }

    /// The reservation of the piece just read, to keep with its bytes. A piece whose read
    /// failed halfway leaves its reservation here, given back when the pacer is dropped or
    /// the next piece begins.
    pub fn take(&self) -> Option<Reservation> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Pacer for ReadPacer<'_> {
    async fn pace(&self, n: usize) {
        self.ingress.acquire(n).await;
    }

    async fn begin_piece(&self, len: usize) {
        // Anything left from a piece that was not taken goes back first.
        drop(self.take());
        let r = self.budget.reserve(len).await;
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reservations_wait_while_the_budget_is_spent() {
        let b = WriteBudget::new(3 << 20, None);
        let a = b.reserve(1 << 20).await;
        let c = b.reserve(2 << 20).await;
        assert_eq!(b.held(), 3 << 20);
        // A third piece has to wait for one of the first two to be written.
        let waiting = tokio::time::timeout(Duration::from_secs(60), b.reserve(1 << 20)).await;
        assert!(waiting.is_err(), "reserved beyond the budget");
        drop(a);
        let d = tokio::time::timeout(Duration::from_secs(1), b.reserve(1 << 20))
            .await
            .expect("the budget was given back");
        assert_eq!(b.held(), 3 << 20);
        assert_eq!(b.peak(), 3 << 20);
        drop((c, d));
        assert_eq!(b.held(), 0);
    }

    /// The bound where it is enforced: a connection's reader, reading pieces off a socket,
    /// holds at most the budget and leaves the rest unread until a piece is given back.
    #[tokio::test(start_paused = true)]
    async fn a_reader_leaves_pieces_unread_while_the_budget_is_spent() {
        use shoal_core::Metainfo;
        use tokio::io::AsyncWriteExt;

        use crate::wire::{Decoder, Layout, Message, piece_header, read_message};

        const PIECE: usize = 256 << 10;
        let data = vec![7u8; 4 * PIECE];
        let meta = Metainfo::from_bytes(&data);
        assert_eq!(meta.piece_count(), 4);
        let decoder = Decoder::new(Layout::of(&meta));
        let (mut tx, mut rx) = tokio::io::duplex(8 * PIECE);
        for i in 0..4u32 {
            tx.write_all(&piece_header(i, PIECE as u32)).await.unwrap();
            tx.write_all(&data[..PIECE]).await.unwrap();
        }
        let ingress = RateLimiter::unlimited();
        let budget = WriteBudget::new(2 * PIECE as u64, None);
        let pacer = ReadPacer::new(&ingress, &budget);
        let mut held = Vec::new();
        for want in 0..2u32 {
            let m = read_message(&mut rx, &decoder, &pacer, |_| {})
                .await
                .unwrap();
            assert!(matches!(m, Message::Piece { index, .. } if index == want));
            held.push(pacer.take().expect("a piece carries its reservation"));
        }
        let third = read_message(&mut rx, &decoder, &pacer, |_| {});
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut third)
                .await
                .is_err(),
            "a third piece was read while two were unwritten"
        );
        assert_eq!(budget.held(), 2 * PIECE as u64);
        // The first piece is written: the third may come in.
        drop(held.remove(0));
        let m = tokio::time::timeout(Duration::from_secs(1), &mut third)
            .await
            .expect("the reader went on once the budget had room")
            .unwrap();
        assert!(matches!(m, Message::Piece { index: 2, .. }));
        held.push(pacer.take().expect("a piece carries its reservation"));
        assert_eq!(budget.peak(), 2 * PIECE as u64);
        drop(held);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_piece_larger_than_the_budget_passes_alone() {
        let b = WriteBudget::new(1 << 20, None);
        let big = b.reserve(4 << 20).await;
        assert_eq!(b.held(), 1 << 20);
        let next = tokio::time::timeout(Duration::from_secs(60), b.reserve(1)).await;
        assert!(next.is_err());
        drop(big);
        let _small = b.reserve(1).await;
        assert!(b.peak() <= 1 << 20);
    }
}
