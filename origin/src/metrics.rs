//! The origin's Prometheus families, all under `shoal_origin_`. Labels stay bounded: a
//! protocol, a queue, an action, a route class and a status class.
//!
//! Blob bytes moved are counted once each, in `shoal_origin_{sent,received}_bytes_total`
//! split by `proto`. HTTP bytes are counted here; peer-protocol bytes are counted by the
//! swarm node, which registers its own families on a registry of the origin's
//! ([`Metrics::peer_registry`]): at each scrape its piece-byte counters become the
//! `proto="peer"` samples, and its other families (connections, refusals…) are shown as
//! they are. Its own byte families are not shown under their names, so no byte appears
//! twice in one scrape.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use shoal_core::telemetry::register;

/// The prefix the swarm node registers its families under.
pub const PEER_PREFIX: &str = "shoal_origin";

const SENT: &str = "shoal_origin_sent_bytes_total";
const SENT_HELP: &str =
    "Blob bytes sent, by protocol: HTTP bodies, and piece payloads over the peer protocol.";
const RECEIVED: &str = "shoal_origin_received_bytes_total";
const RECEIVED_HELP: &str =
    "Blob bytes received, by protocol: HTTP bodies, and piece payloads over the peer protocol.";

#[derive(Debug, Clone)]
pub struct Metrics {
    traffic: Traffic,
    pub blobs: IntGauge,
    pub stored_bytes: IntGauge,
    queue: IntGaugeVec,
    repair: IntCounterVec,
    requests: IntCounterVec,
    pub live_members: IntGauge,
    pub read_through: IntCounter,
}

/// The byte counters of both protocols, and the swarm node's families.
#[derive(Debug, Clone)]
struct Traffic {
    http_sent: IntCounter,
    http_received: IntCounter,
    /// Where the swarm node registers; read at each scrape.
    peer: Registry,
    descs: Vec<Desc>,
}

impl Traffic {
    fn new() -> Result<Self, prometheus::Error> {
        let desc = |name: &str, help: &str| {
            Desc::new(
                name.into(),
                help.into(),
                vec!["proto".into()],
                Default::default(),
            )
        };
        Ok(Traffic {
            http_sent: IntCounter::new("http_sent", "unregistered")?,
            http_received: IntCounter::new("http_received", "unregistered")?,
            peer: Registry::new(),
            descs: vec![desc(SENT, SENT_HELP)?, desc(RECEIVED, RECEIVED_HELP)?],
        })
    }
}

/// The sum of every sample of the counter family `name`.
fn counter_sum(families: &[MetricFamily], name: &str) -> u64 {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value())
        .sum::<f64>() as u64
}

/// A counter family split by `proto`, with the values it has now.
fn by_proto(name: &str, help: &str, http: u64, peer: u64) -> Vec<MetricFamily> {
    let Ok(v) = IntCounterVec::new(Opts::new(name, help), &["proto"]) else {
        return Vec::new();
    };
    v.with_label_values(&["http"]).inc_by(http);
    v.with_label_values(&["peer"]).inc_by(peer);
    v.collect()
}

impl Collector for Traffic {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let node = self.peer.gather();
        // The node's names (`shoal_p2p::metrics`); the tests below break if they change.
        let peer_sent = format!("{PEER_PREFIX}_peer_bytes_sent_total");
        let peer_received = format!("{PEER_PREFIX}_peer_bytes_received_total");
        let mut out = by_proto(
            SENT,
            SENT_HELP,
            self.http_sent.get(),
            counter_sum(&node, &peer_sent),
        );
        out.extend(by_proto(
            RECEIVED,
            RECEIVED_HELP,
            self.http_received.get(),
            counter_sum(&node, &peer_received),
        ));
        out.extend(
            node.into_iter()
                .filter(|f| f.name() != peer_sent && f.name() != peer_received),
        );
        out
    }
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            traffic: register(registry, Traffic::new()?)?,
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
        for q in ["replication", "writeback"] {
            m.queue.with_label_values(&[q]);
        }
        for a in REPAIR_ACTIONS {
            m.repair.with_label_values(&[a]);
        }
        Ok(m)
    }

    /// Counts blob bytes of an HTTP request body.
    pub fn received_http(&self, n: u64) {
        self.traffic.http_received.inc_by(n);
    }

    /// Counts blob bytes of an HTTP response body.
    pub fn sent_http(&self, n: u64) {
        self.traffic.http_sent.inc_by(n);
    }

    /// Where the swarm node registers its families, under [`PEER_PREFIX`]; they show on
    /// the origin's registry, its piece-byte counters as the `proto="peer"` samples of
    /// the byte families.
    pub fn peer_registry(&self) -> &Registry {
        &self.traffic.peer
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    fn scrape(r: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&r.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn peer_bytes_show_once_as_the_peer_share_of_the_byte_families() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        // What the swarm node registers and counts.
        let node = shoal_p2p::metrics::Metrics::register(m.peer_registry(), PEER_PREFIX).unwrap();
        node.bytes_sent.inc_by(1000);
        node.received(false, 20);
        node.received(true, 5);
        m.sent_http(300);
        m.received_http(40);

        let text = scrape(&registry);
        for line in [
            "shoal_origin_sent_bytes_total{proto=\"http\"} 300",
            "shoal_origin_sent_bytes_total{proto=\"peer\"} 1000",
            "shoal_origin_received_bytes_total{proto=\"http\"} 40",
            "shoal_origin_received_bytes_total{proto=\"peer\"} 25",
            // The node's other families are shown as they are.
            "shoal_origin_peer_connections 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("shoal_origin_peer_bytes_"),
            "peer bytes shown twice:\n{text}"
        );
        // No family is shown by both the origin and the node.
        let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let n = types.len();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), n, "{text}");
    }

    #[test]
    fn without_a_node_the_peer_share_is_zero() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        m.sent_http(7);
        let text = scrape(&registry);
        assert!(text.contains("shoal_origin_sent_bytes_total{proto=\"peer\"} 0"));
        assert!(text.contains("shoal_origin_sent_bytes_total{proto=\"http\"} 7"));
        assert!(text.contains("shoal_origin_received_bytes_total{proto=\"peer\"} 0"));
    }
}
