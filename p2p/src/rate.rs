//! Per-host byte-rate caps shared by every connection of a node.
//!
//! A token bucket in its virtual-scheduling form (GCRA): the limiter keeps the time at which
//! the bytes paid for so far will have drained at the cap, and a caller that wants to move `n`
//! more bytes waits until that time, minus a small burst allowance, then pushes it `n / rate`
//! later. Callers move pieces in chunks of [`crate::wire::READ_CHUNK`] bytes, so a capped
//! link carries an even stream of chunks, never a burst of more than the allowance; and the
//! schedule is kept in exact time, so however coarse the timer, the average rate is the cap.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How far ahead of the schedule a caller may run: enough to ride over timer granularity, far
/// too little to be a burst anyone notices.
const BURST: Duration = Duration::from_millis(5);

/// A shared cap in bytes per second; cheap to clone. [`RateLimiter::unlimited`] never waits.
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    bytes_per_sec: u64,
    /// When everything paid for so far has drained at the cap.
    drained_at: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A cap of `bytes_per_sec`; `None` or `Some(0)` means no cap.
    pub fn new(bytes_per_sec: Option<u64>) -> Self {
        RateLimiter {
            inner: bytes_per_sec.filter(|&r| r > 0).map(|bytes_per_sec| {
                Arc::new(Inner {
                    bytes_per_sec,
                    drained_at: Mutex::new(None),
                })
            }),
        }
    }

    pub fn unlimited() -> Self {
        RateLimiter::default()
    }

    pub fn bytes_per_sec(&self) -> Option<u64> {
        self.inner.as_ref().map(|i| i.bytes_per_sec)
    }

    /// Waits until `n` more bytes may move.
    pub async fn acquire(&self, n: usize) {
        let Some(inner) = &self.inner else { return };
        let now = Instant::now();
        let start = {
            let mut drained = inner
                .drained_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let from = drained.map_or(now, |d| d.max(now));
            let cost = Duration::from_secs_f64(n as f64 / inner.bytes_per_sec as f64);
            *drained = Some(from + cost);
            from
        };
        // The bytes may go once the ones before them have drained (less the allowance).
        let at = start.checked_sub(BURST).unwrap_or(start);
        if at > now {
            tokio::time::sleep_until(at).await;
        }
    }
}

impl crate::wire::Pacer for RateLimiter {
    async fn pace(&self, n: usize) {
        self.acquire(n).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_cap_in_chunks() {
        let rate = 1_000_000u64;
        let l = RateLimiter::new(Some(rate));
        let t0 = Instant::now();
        let mut gaps = Vec::new();
        let mut last = t0;
        for _ in 0..100 {
            l.acquire(10_000).await;
            let now = Instant::now();
            gaps.push(now - last);
            last = now;
        }
        // 1 MB at 1 MB/s: the last chunk may start once 990 kB have drained, less the
        // allowance.
        let took = last - t0;
        assert!(took >= Duration::from_millis(980), "{took:?}");
        assert!(took <= Duration::from_millis(1000), "{took:?}");
        // No burst: after the first, chunks are 10 ms apart.
        assert!(gaps[2..].iter().all(|g| *g <= Duration::from_millis(11)));
    }

    #[tokio::test(start_paused = true)]
    async fn shared_between_callers() {
        let l = RateLimiter::new(Some(1_000_000));
        let t0 = Instant::now();
        let a = {
            let l = l.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    l.acquire(10_000).await;
                }
            })
        };
        let b = {
            let l = l.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    l.acquire(10_000).await;
                }
            })
        };
        a.await.unwrap();
        b.await.unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(980));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let l = RateLimiter::new(Some(0));
        let t0 = Instant::now();
        l.acquire(usize::MAX).await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(l.bytes_per_sec(), None);
    }
}
