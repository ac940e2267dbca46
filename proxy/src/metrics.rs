//! The proxy's Prometheus families, all `shoal_proxy_…`, with bounded labels only: a route
//! class, a method and a status class, never a repository, tag or digest.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};
use shoal_core::telemetry::register;

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Requests by `route` (base, blob, upload, manifest, …), `method` and `status` (2xx…).
    pub requests: IntCounterVec,
    /// Request durations by `route`, until the response head is sent.
    pub request_seconds: HistogramVec,
    /// Body bytes received from clients (blob chunks, manifests).
    pub bytes_in: IntCounter,
    /// Body bytes sent to clients (blobs, manifests).
    pub bytes_out: IntCounter,
    /// Upload sessions open now.
    pub uploads_in_flight: IntGauge,
    /// From the start of an upload to the origin's acknowledgement.
    pub upload_seconds: Histogram,
    /// Blobs acknowledged by an origin, and their bytes.
    pub blobs_stored: IntCounter,
    pub blob_bytes_stored: IntCounter,
}

impl Metrics {
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        Ok(Metrics {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new("shoal_proxy_requests_total", "Registry requests answered."),
                    &["route", "method", "status"],
                )?,
            )?,
            request_seconds: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "shoal_proxy_request_duration_seconds",
                        "Time to answer a request (to the response head).",
                    )
                    .buckets(prometheus::exponential_buckets(0.001, 4.0, 9)?),
                    &["route"],
                )?,
            )?,
            bytes_in: register(
                registry,
                IntCounter::new(
                    "shoal_proxy_received_bytes_total",
                    "Body bytes received from clients.",
                )?,
            )?,
            bytes_out: register(
                registry,
                IntCounter::new(
                    "shoal_proxy_sent_bytes_total",
                    "Body bytes sent to clients.",
                )?,
            )?,
            uploads_in_flight: register(
                registry,
                IntGauge::new(
                    "shoal_proxy_uploads_in_flight",
                    "Blob upload sessions open now.",
                )?,
            )?,
            upload_seconds: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "shoal_proxy_upload_duration_seconds",
                        "From the start of a blob upload to the origin's acknowledgement.",
                    )
                    .buckets(prometheus::exponential_buckets(0.01, 4.0, 9)?),
                )?,
            )?,
            blobs_stored: register(
                registry,
                IntCounter::new(
                    "shoal_proxy_blobs_stored_total",
                    "Blobs (layers, configs, manifests) an origin acknowledged.",
                )?,
            )?,
            blob_bytes_stored: register(
                registry,
                IntCounter::new(
                    "shoal_proxy_blob_bytes_stored_total",
                    "Bytes of the blobs an origin acknowledged.",
                )?,
            )?,
        })
    }
}

/// `2xx`, `4xx`, … for a status.
pub fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// A bounded method label.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "other",
    }
}
