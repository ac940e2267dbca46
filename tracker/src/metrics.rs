//! The tracker's Prometheus families, all `shoal_tracker_…`, with bounded labels only.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use shoal_core::telemetry::register;

use crate::table::Recorded;

#[derive(Debug, Clone)]
pub struct Metrics {
    /// As of the last expiry sweep.
    pub swarms: IntGauge,
    /// Entries (peer, blob), as of the last expiry sweep.
    pub peers: IntGauge,
    pub expired: IntCounter,
    pub announces: Announces,
    pub handout_size: Histogram,
    pub origins_up: IntGauge,
    pub metainfo_hits: IntCounter,
    pub metainfo_misses: IntCounter,
    pub metainfo_fetches: Fetches,
    pub metainfo_cache_bytes: IntGauge,
    /// Requests to the API refused for want of a valid token.
    pub unauthorized: IntCounter,
}

/// `shoal_tracker_announces_total{result}`, each child resolved once so the hot path does
/// not hash label values.
#[derive(Debug, Clone)]
pub struct Announces {
    pub recorded: IntCounter,
    pub swarm_full: IntCounter,
    pub table_full: IntCounter,
    pub refused: IntCounter,
    pub invalid: IntCounter,
    pub id_in_use: IntCounter,
}

impl Announces {
    pub fn answered(&self, r: Recorded) -> &IntCounter {
        match r {
            Recorded::Yes => &self.recorded,
            Recorded::SwarmFull => &self.swarm_full,
            Recorded::TableFull => &self.table_full,
            Recorded::IdInUse => &self.id_in_use,
        }
    }
}

/// `shoal_tracker_metainfo_origin_fetches_total{result}`.
#[derive(Debug, Clone)]
pub struct Fetches {
    pub ok: IntCounter,
    pub unknown: IntCounter,
    pub failed: IntCounter,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let announces = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "shoal_tracker_announces_total",
                    "Announces by outcome: recorded; answered but not recorded because the swarm (swarm_full) or the table (table_full) is at its bound, or because another address holds the peer id's entry (id_in_use); refused at a bound; invalid.",
                ),
                &["result"],
            )?,
        )?;
        let fetches = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "shoal_tracker_metainfo_origin_fetches_total",
                    "Metainfo fetches from the origins by outcome: ok, unknown (no origin has the blob), failed.",
                ),
                &["result"],
            )?,
        )?;
        Ok(Metrics {
            swarms: register(
                registry,
                IntGauge::new(
                    "shoal_tracker_swarms",
                    "Swarms with at least one peer, as of the last expiry sweep.",
                )?,
            )?,
            peers: register(
                registry,
                IntGauge::new(
                    "shoal_tracker_peers",
                    "Peer entries across all swarms (a peer in two swarms counts twice), as of the last expiry sweep.",
                )?,
            )?,
            expired: register(
                registry,
                IntCounter::new(
                    "shoal_tracker_expired_total",
                    "Peer entries dropped for not announcing in time.",
                )?,
            )?,
            announces: Announces {
                recorded: announces.with_label_values(&["recorded"]),
                swarm_full: announces.with_label_values(&["swarm_full"]),
                table_full: announces.with_label_values(&["table_full"]),
                refused: announces.with_label_values(&["refused"]),
                invalid: announces.with_label_values(&["invalid"]),
                id_in_use: announces.with_label_values(&["id_in_use"]),
            },
            handout_size: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "shoal_tracker_handout_size",
                        "Peers in each announce answer, origins included.",
                    )
                    .buckets(vec![
                        0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0,
                    ]),
                )?,
            )?,
            origins_up: register(
                registry,
                IntGauge::new(
                    "shoal_tracker_origins_up",
                    "Origins that answered their last /v1/info.",
                )?,
            )?,
            metainfo_hits: register(
                registry,
                IntCounter::new(
                    "shoal_tracker_metainfo_cache_hits_total",
                    "Metainfo requests answered from the cache.",
                )?,
            )?,
            metainfo_misses: register(
                registry,
                IntCounter::new(
                    "shoal_tracker_metainfo_cache_misses_total",
                    "Metainfo requests not in the cache (one origin fetch serves all concurrent misses of a blob).",
                )?,
            )?,
            metainfo_fetches: Fetches {
                ok: fetches.with_label_values(&["ok"]),
                unknown: fetches.with_label_values(&["unknown"]),
                failed: fetches.with_label_values(&["failed"]),
            },
            metainfo_cache_bytes: register(
                registry,
                IntGauge::new(
                    "shoal_tracker_metainfo_cache_bytes",
                    "Bytes of encoded metainfo in the cache.",
                )?,
            )?,
            unauthorized: register(
                registry,
                IntCounter::new(
                    "shoal_tracker_unauthorized_total",
                    "Announce and metainfo requests refused with 401: no token, or not the cluster's.",
                )?,
            )?,
        })
    }
}
