//! The node's Prometheus families, registered under a prefix the caller chooses
//! (`shoal_agent`, `shoal_origin`). Labels are bounded: never a digest or a peer id.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::engine::Totals;

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Piece bytes received, by `source` = `peer` | `origin`.
    pub bytes_received: IntCounterVec,
    pub bytes_sent: IntCounter,
    /// Open peer connections.
    pub connections: IntGauge,
    /// Connections refused or failed during the handshake, by `reason`.
    pub connections_refused: IntCounterVec,
    pub pieces_verified: IntCounter,
    pub pieces_failed: IntCounter,
    pub downloads_in_flight: IntGauge,
    /// Finished downloads, by `result` = `ok` | `failed`.
    pub downloads: IntCounterVec,
    pub peers_shunned: IntCounter,
    /// Connections whose requests timed out and were moved to other peers.
    pub request_timeouts: IntCounter,
    /// Piece requests answered with `reject`, by `direction` = `sent` | `received`.
    pub rejects: IntCounterVec,
    /// Piece bytes received and not yet written or dropped (bounded by the node's
    /// `max_unwritten_bytes`).
    pub unwritten_bytes: IntGauge,
    /// Piece bytes read for uploads and not yet written to a socket (bounded by the node's
    /// `max_unsent_bytes`).
    pub unsent_bytes: IntGauge,
}

impl Metrics {
    /// Registers every family on `registry` as `<prefix>_<name>`.
    pub fn register(registry: &Registry, prefix: &str) -> Result<Self, prometheus::Error> {
        let name = |n: &str| format!("{prefix}_{n}");
        let m = Metrics {
            bytes_received: IntCounterVec::new(
                Opts::new(
                    name("peer_bytes_received_total"),
                    "Piece bytes received from the swarm, by whether they came from a peer or an origin.",
                ),
                &["source"],
            )?,
            bytes_sent: IntCounter::new(
                name("peer_bytes_sent_total"),
                "Piece bytes uploaded to peers.",
            )?,
            connections: IntGauge::new(name("peer_connections"), "Open peer connections.")?,
            connections_refused: IntCounterVec::new(
                Opts::new(
                    name("peer_connections_refused_total"),
                    "Peer connections refused or failed before they opened, by reason.",
                ),
                &["reason"],
            )?,
            pieces_verified: IntCounter::new(
                name("pieces_verified_total"),
                "Pieces received whose SHA-256 matched the metainfo.",
            )?,
            pieces_failed: IntCounter::new(
                name("pieces_failed_total"),
                "Pieces received whose SHA-256 did not match; the sender was shunned.",
            )?,
            downloads_in_flight: IntGauge::new(
                name("downloads_in_flight"),
                "Blobs being downloaded through the swarm.",
            )?,
            downloads: IntCounterVec::new(
                Opts::new(
                    name("downloads_total"),
                    "Finished swarm downloads, by result.",
                ),
                &["result"],
            )?,
            peers_shunned: IntCounter::new(
                name("peers_shunned_total"),
                "Peers dropped for corrupt pieces or repeated failures.",
            )?,
            request_timeouts: IntCounter::new(
                name("peer_request_timeouts_total"),
                "Connections that delivered nothing in time; their requests were moved to other peers.",
            )?,
            rejects: IntCounterVec::new(
                Opts::new(
                    name("peer_rejects_total"),
                    "Piece requests refused with reject (upload queue full), by whether this node sent or received the reject.",
                ),
                &["direction"],
            )?,
            unwritten_bytes: IntGauge::new(
                name("piece_bytes_unwritten"),
                "Piece bytes received and held in memory until they are written or dropped.",
            )?,
            unsent_bytes: IntGauge::new(
                name("piece_bytes_unsent"),
                "Piece bytes read for uploads and held in memory until they are sent.",
            )?,
        };
        registry.register(Box::new(m.bytes_received.clone()))?;
        registry.register(Box::new(m.bytes_sent.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.connections_refused.clone()))?;
        registry.register(Box::new(m.pieces_verified.clone()))?;
        registry.register(Box::new(m.pieces_failed.clone()))?;
        registry.register(Box::new(m.downloads_in_flight.clone()))?;
        registry.register(Box::new(m.downloads.clone()))?;
        registry.register(Box::new(m.peers_shunned.clone()))?;
        registry.register(Box::new(m.request_timeouts.clone()))?;
        registry.register(Box::new(m.rejects.clone()))?;
        registry.register(Box::new(m.unwritten_bytes.clone()))?;
        registry.register(Box::new(m.unsent_bytes.clone()))?;
        // Make the label values visible at zero, so dashboards need not guess them.
        for source in ["peer", "origin"] {
            m.bytes_received.with_label_values(&[source]);
        }
        for result in ["ok", "failed"] {
            m.downloads.with_label_values(&[result]);
        }
        for direction in ["sent", "received"] {
            m.rejects.with_label_values(&[direction]);
        }
        Ok(m)
    }

    /// Brings the engine's counters up to `now` from `before`.
    pub fn engine_totals(&self, before: &Totals, now: &Totals) {
        self.request_timeouts
            .inc_by(now.timeouts.saturating_sub(before.timeouts));
        self.rejects
            .with_label_values(&["sent"])
            .inc_by(now.rejects_sent.saturating_sub(before.rejects_sent));
        self.rejects
            .with_label_values(&["received"])
            .inc_by(now.rejects_received.saturating_sub(before.rejects_received));
    }

    pub fn received(&self, origin: bool, bytes: u64) {
        self.bytes_received
            .with_label_values(&[if origin { "origin" } else { "peer" }])
            .inc_by(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::testing::metrics_text;

    #[test]
    fn names_carry_the_prefix() {
        let r = Registry::new();
        let m = Metrics::register(&r, "shoal_agent").unwrap();
        m.received(true, 10);
        m.received(false, 5);
        let text = metrics_text(&r);
        assert!(text.contains("shoal_agent_peer_bytes_received_total{source=\"origin\"} 10"));
        assert!(text.contains("shoal_agent_peer_bytes_received_total{source=\"peer\"} 5"));
        assert!(text.contains("shoal_agent_downloads_in_flight 0"));
        // A second registration under the same prefix clashes; another prefix does not.
        assert!(Metrics::register(&r, "shoal_agent").is_err());
        assert!(Metrics::register(&r, "shoal_origin").is_ok());
    }

    #[test]
    fn engine_totals_add_what_changed() {
        let r = Registry::new();
        let m = Metrics::register(&r, "shoal_agent").unwrap();
        let a = Totals {
            timeouts: 1,
            rejects_sent: 2,
            rejects_received: 0,
        };
        m.engine_totals(&Totals::default(), &a);
        let b = Totals {
            rejects_received: 3,
            ..a
        };
        m.engine_totals(&a, &b);
        let text = metrics_text(&r);
        assert!(text.contains("shoal_agent_peer_request_timeouts_total 1"));
        assert!(text.contains("shoal_agent_peer_rejects_total{direction=\"sent\"} 2"));
        assert!(text.contains("shoal_agent_peer_rejects_total{direction=\"received\"} 3"));
    }
}
