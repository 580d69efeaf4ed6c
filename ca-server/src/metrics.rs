//! The CA server's Prometheus metrics.

use std::sync::Arc;
use tessera_core::metrics::{CounterVec, HistogramVec, LATENCY_BUCKETS, Registry};

/// Every metric the CA server exports.
#[derive(Clone)]
pub struct Metrics {
    /// The registry rendered at `/metrics`.
    pub registry: Registry,
    /// Certificates issued, by kind (issue, renew).
    pub issued: Arc<CounterVec>,
    /// Certificates revoked, by reason.
    pub revoked: Arc<CounterVec>,
    /// Issuance latency, by action.
    pub issue_latency: Arc<HistogramVec>,
    /// API requests, by route, method and status.
    pub requests: Arc<CounterVec>,
    /// API latency, by route and method.
    pub request_latency: Arc<HistogramVec>,
    /// Refused TLS handshakes and connections, by reason.
    pub refused: Arc<CounterVec>,
    /// Denials reported by sidecars and stored, by reason.
    pub denials: Arc<CounterVec>,
    /// Webhook delivery attempts, by outcome (delivered, retrying, failed).
    pub webhook_deliveries: Arc<CounterVec>,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::default();
        Self {
            issued: registry.register(CounterVec::new(
                "tessera_certificates_issued_total",
                "Certificates issued.",
                &["kind"],
            )),
            revoked: registry.register(CounterVec::new(
                "tessera_certificates_revoked_total",
                "Certificates revoked.",
                &["reason"],
            )),
            issue_latency: registry.register(HistogramVec::new(
                "tessera_issuance_duration_seconds",
                "Time to sign and durably record a certificate.",
                &["action"],
                LATENCY_BUCKETS,
            )),
            requests: registry.register(CounterVec::new(
                "tessera_api_requests_total",
                "API requests.",
                &["route", "method", "status"],
            )),
            request_latency: registry.register(HistogramVec::new(
                "tessera_api_request_duration_seconds",
                "API request latency.",
                &["route", "method"],
                LATENCY_BUCKETS,
            )),
            refused: registry.register(CounterVec::new(
                "tessera_connections_refused_total",
                "Connections refused before a request was read.",
                &["reason"],
            )),
            denials: registry.register(CounterVec::new(
                "tessera_denials_reported_total",
                "Connections refused by sidecars, as reported and stored.",
                &["reason"],
            )),
            webhook_deliveries: registry.register(CounterVec::new(
                "tessera_webhook_deliveries_total",
                "Webhook delivery attempts.",
                &["outcome"],
            )),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
