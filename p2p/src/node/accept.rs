//! Accepting connections, and counting them per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

#[cfg(doc)]
use super::NodeConfig;
use super::{Ctx, conn};

/// Accepts connections until shutdown, each handshaken in a task of its own. Beyond the
/// per-address cap a connection is answered `busy`; beyond twice the cap it is closed
/// unanswered.
pub(super) async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener) {
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let cap = ctx.cfg.max_inbound_per_addr;
                    let (slot, before) = ctx.inbound.take(addr.ip());
                    if before < cap {
                        ctx.tasks.spawn(conn::accept(Arc::clone(&ctx), stream, addr, slot));
                    } else if before < cap.saturating_mul(2) {
                        ctx.tasks.spawn(conn::refuse_busy(Arc::clone(&ctx), stream, addr, slot));
                    } else {
                        tracing::debug!(%addr, "too many connections from one address; closed");
                        conn::refuse_metric(&ctx, "per_address");
                        drop((stream, slot));
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Connections made to this node, per source address: what
/// [`NodeConfig::max_inbound_per_addr`] bounds.
#[derive(Debug, Default, Clone)]
pub(crate) struct InboundCounts(Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>);

impl InboundCounts {
    /// Counts one more connection from `ip` until the slot is dropped; also says how many
    /// there were before it.
    fn take(&self, ip: IpAddr) -> (InboundSlot, usize) {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        let before = *n;
        *n += 1;
        (
            InboundSlot {
                counts: self.clone(),
                ip,
            },
            before,
        )
    }
}

/// One connection counted against its source address; dropped when the connection ends.
pub(crate) struct InboundSlot {
    counts: InboundCounts,
    ip: IpAddr,
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let mut m = self
            .counts
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}
