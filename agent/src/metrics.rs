//! The agent's own `shoal_agent_…` families. The swarm's (bytes from peers and from origins,
//! downloads in flight, connections) are registered by the p2p node under the same prefix.
//! Labels stay bounded: a route class and a status class.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use shoal_core::telemetry::register;

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Blob and manifest bytes sent to local clients.
    pub client_bytes: IntCounter,
    /// Bytes fetched from origins over HTTP (manifests and small blobs).
    pub origin_http_bytes: IntCounter,
    pub cache_bytes: IntGauge,
    pub cache_max_bytes: IntGauge,
    pub cache_blobs: IntGauge,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_evictions: IntCounter,
    /// Seconds from the start of a swarm download to its verified commit.
    pub download_seconds: Histogram,
    /// Client responses aborted mid-body (failed verification, stalls, node stopping).
    pub aborted: IntCounter,
    requests: IntCounterVec,
}

/// Which part of the registry API a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Base,
    Manifest,
    Blob,
    Tags,
    Write,
    Ops,
    Other,
}

impl RouteClass {
    pub fn label(self) -> &'static str {
        match self {
            RouteClass::Base => "base",
            RouteClass::Manifest => "manifest",
            RouteClass::Blob => "blob",
            RouteClass::Tags => "tags",
            RouteClass::Write => "write",
            RouteClass::Ops => "ops",
            RouteClass::Other => "other",
        }
    }
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Metrics {
            client_bytes: register(
                registry,
                IntCounter::new(
                    "shoal_agent_client_bytes_sent_total",
                    "Blob and manifest bytes sent to local clients.",
                )?,
            )?,
            origin_http_bytes: register(
                registry,
                IntCounter::new(
                    "shoal_agent_origin_http_bytes_total",
                    "Bytes fetched straight from origins over HTTP (manifests and small blobs).",
                )?,
            )?,
            cache_bytes: register(
                registry,
                IntGauge::new("shoal_agent_cache_bytes", "Bytes of blobs in the cache.")?,
            )?,
            cache_max_bytes: register(
                registry,
                IntGauge::new(
                    "shoal_agent_cache_max_bytes",
                    "The cache's configured size (cache.max_size).",
                )?,
            )?,
            cache_blobs: register(
                registry,
                IntGauge::new("shoal_agent_cache_blobs", "Blobs in the cache.")?,
            )?,
            cache_hits: register(
                registry,
                IntCounter::new(
                    "shoal_agent_cache_hits_total",
                    "Blob and manifest reads answered from the cache.",
                )?,
            )?,
            cache_misses: register(
                registry,
                IntCounter::new(
                    "shoal_agent_cache_misses_total",
                    "Blob and manifest reads that had to fetch (swarm or origin).",
                )?,
            )?,
            cache_evictions: register(
                registry,
                IntCounter::new(
                    "shoal_agent_cache_evictions_total",
                    "Blobs removed from the cache to stay within cache.max_size.",
                )?,
            )?,
            download_seconds: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "shoal_agent_download_seconds",
                        "Time from the start of a swarm download to its verified commit.",
                    )
                    .buckets(vec![
                        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                    ]),
                )?,
            )?,
            aborted: register(
                registry,
                IntCounter::new(
                    "shoal_agent_responses_aborted_total",
                    "Client responses broken off mid-body rather than finished with unverified bytes.",
                )?,
            )?,
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "shoal_agent_requests_total",
                        "Registry API requests, by route class and status class.",
                    ),
                    &["route", "status"],
                )?,
            )?,
        })
    }

    pub fn request(&self, route: RouteClass, status: http::StatusCode) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .with_label_values(&[route.label(), class])
            .inc();
    }
}
