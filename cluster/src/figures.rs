//! What the swarm did, read from the parts' `/metrics` the way a scraper reads them
//! ([`shoal_core::telemetry::scrape`]): where an agent's piece bytes came from, and what the
//! origins sent over the peer protocol. A part that does not answer counts as 0.

use shoal_core::telemetry::scrape::metric_sum;

use crate::http::Target;

pub const AGENT_RECEIVED: &str = "shoal_agent_peer_bytes_received_total";
pub const ORIGIN_SENT: &str = "shoal_origin_sent_bytes_total";

/// The sum of `at`'s samples of `name` whose labels contain each of `labels`.
pub fn sum_at(at: impl Into<Target>, name: &str, labels: &[&str]) -> f64 {
    crate::http::metrics(at).map_or(0.0, |text| metric_sum(&text, name, labels))
}

/// Piece bytes the agent at `addr` has received since it started: (from peers, from origins).
pub fn agent_piece_bytes(addr: &str) -> (f64, f64) {
    let Ok(text) = crate::http::metrics(addr) else {
        return (0.0, 0.0);
    };
    (
        metric_sum(&text, AGENT_RECEIVED, &["source=\"peer\""]),
        metric_sum(&text, AGENT_RECEIVED, &["source=\"origin\""]),
    )
}

/// Bytes the origins at `origins` have sent over the peer protocol, together.
pub fn origins_peer_sent<T: Into<Target>>(origins: impl IntoIterator<Item = T>) -> f64 {
    origins
        .into_iter()
        .map(|a| sum_at(a, ORIGIN_SENT, &["proto=\"peer\""]))
        .sum()
}
