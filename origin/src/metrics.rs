//! The origin's Prometheus families, all under `shoal_origin_`. Labels stay bounded: a
//! protocol, a queue, an action, a route class and a status class.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use shoal_core::telemetry::register;

#[derive(Debug, Clone)]
pub struct Metrics {
    received: IntCounterVec,
    sent: IntCounterVec,
    pub blobs: IntGauge,
    pub stored_bytes: IntGauge,
    queue: IntGaugeVec,
    repair: IntCounterVec,
    requests: IntCounterVec,
    pub live_members: IntGauge,
    pub read_through: IntCounter,
}

/// Which way blob bytes travel.
#[derive(Debug, Clone, Copy)]
pub enum Proto {
    Http,
    Peer,
}

impl Proto {
    fn label(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Peer => "peer",
        }
    }
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            received: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "shoal_origin_received_bytes_total",
                        "Blob bytes received, by protocol.",
                    ),
                    &["proto"],
                )?,
            )?,
            sent: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "shoal_origin_sent_bytes_total",
                        "Blob bytes sent, by protocol.",
                    ),
                    &["proto"],
                )?,
            )?,
            blobs: register(
                registry,
                IntGauge::new("shoal_origin_blobs", "Blobs stored on this origin.")?,
            )?,
            stored_bytes: register(
                registry,
                IntGauge::new(
                    "shoal_origin_stored_bytes",
                    "Bytes of the blobs stored on this origin.",
                )?,
            )?,
            queue: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "shoal_origin_queue_depth",
                        "Tasks waiting in the durable queue, by queue (replication, writeback).",
                    ),
                    &["queue"],
                )?,
            )?,
            repair: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "shoal_origin_repair_actions_total",
                        "What repair passes did: copies queued, stray copies dropped, write-backs queued.",
                    ),
                    &["action"],
                )?,
            )?,
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "shoal_origin_requests_total",
                        "HTTP requests answered, by route class and status class.",
                    ),
                    &["route", "status"],
                )?,
            )?,
            live_members: register(
                registry,
                IntGauge::new(
                    "shoal_origin_live_members",
                    "Origins this one sees alive, itself included.",
                )?,
            )?,
            read_through: register(
                registry,
                IntCounter::new(
                    "shoal_origin_read_through_total",
                    "Blobs and tags fetched from the backend because no origin held them.",
                )?,
            )?,
        };
        for p in [Proto::Http, Proto::Peer] {
            m.received.with_label_values(&[p.label()]);
            m.sent.with_label_values(&[p.label()]);
        }
        for q in ["replication", "writeback"] {
            m.queue.with_label_values(&[q]);
        }
        for a in REPAIR_ACTIONS {
            m.repair.with_label_values(&[a]);
        }
        Ok(m)
    }

    pub fn received(&self, proto: Proto, n: u64) {
        self.received.with_label_values(&[proto.label()]).inc_by(n);
    }

    pub fn sent(&self, proto: Proto, n: u64) {
        self.sent.with_label_values(&[proto.label()]).inc_by(n);
    }

    pub fn set_queue_depth(&self, replication: u64, write_back: u64) {
        self.queue
            .with_label_values(&["replication"])
            .set(replication as i64);
        self.queue
            .with_label_values(&["writeback"])
            .set(write_back as i64);
    }

    pub fn repair_action(&self, action: &'static str, n: u64) {
        if n > 0 {
            self.repair.with_label_values(&[action]).inc_by(n);
        }
    }

    pub fn request(&self, route: &'static str, status: http::StatusCode) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.with_label_values(&[route, class]).inc();
    }

    pub fn blob_added(&self, length: u64) {
        self.blobs.inc();
        self.stored_bytes.add(length as i64);
    }

    pub fn blob_removed(&self, length: u64) {
        self.blobs.dec();
        self.stored_bytes.sub(length as i64);
    }
}

pub const REPAIR_COPY: &str = "copy";
pub const REPAIR_DROP: &str = "drop_stray";
pub const REPAIR_WRITE_BACK: &str = "write_back";
const REPAIR_ACTIONS: [&str; 3] = [REPAIR_COPY, REPAIR_DROP, REPAIR_WRITE_BACK];
