//! The CA server's Prometheus metrics.

use std::sync::Arc;
use tessera_core::metrics::{CounterVec, GaugeVec, HistogramVec, LATENCY_BUCKETS, Registry};

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
    /// CA generation changes this replica applied.
    pub ca_transitions: Arc<CounterVec>,
    /// Each CA generation's notAfter, unix seconds.
    pub ca_not_after: Arc<GaugeVec>,
    /// 1 for each CA generation's current state, 0 for the others.
    pub ca_state: Arc<GaugeVec>,
    /// Unexpired, unrevoked leaves each signing generation issued.
    pub ca_dependents: Arc<GaugeVec>,
    /// JWT-SVIDs signed.
    pub jwt_issued: Arc<CounterVec>,
    /// Webhook delivery attempts, by outcome (delivered, retrying, failed).
    pub webhook_deliveries: Arc<CounterVec>,
    /// Attested issuances refused by policy, by reason.
    pub attestation_refused: Arc<CounterVec>,
    /// Federation polls, by trust domain and outcome (updated, unchanged, failed).
    pub federation_polls: Arc<CounterVec>,
    /// 1 while a relationship is healthy, by trust domain.
    pub federation_healthy: Arc<GaugeVec>,
    /// `spiffe_sequence` of the foreign bundle held, by trust domain.
    pub federation_sequence: Arc<GaugeVec>,
    /// Last successful poll, unix seconds, by trust domain.
    pub federation_last_success: Arc<GaugeVec>,
    /// Age of the foreign bundle held, seconds, by trust domain.
    pub federation_bundle_age: Arc<GaugeVec>,
    /// Requests refused by a per-source or per-node rate limit, by scope.
    pub rate_limited: Arc<CounterVec>,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::default();
        // The federation gauges: one series per foreign trust domain.
        let by_domain = |name: &'static str, help: &'static str| {
            registry.register(GaugeVec::new(name, help, &["trust_domain"]))
        };
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
            attestation_refused: registry.register(CounterVec::new(
                "tessera_attestation_refused_total",
                "Attestations refused: by the minimum posture policy (posture), a refused platform token whose signature verified (platform_token), or one that never verified (platform_token_unverified).",
                &["reason"],
            )),
            rate_limited: registry.register(CounterVec::new(
                "tessera_requests_rate_limited_total",
                "Requests answered 429: a source address over its public-route rate (public), a node over its /v1/agent/* rate (agent), a sidecar over its denial-report rate (denials).",
                &["scope"],
            )),
            denials: registry.register(CounterVec::new(
                "tessera_denials_reported_total",
                "Connections refused by sidecars, as reported and stored.",
                &["reason"],
            )),
            ca_transitions: registry.register(CounterVec::new(
                "tessera_ca_transitions_total",
                "CA generation changes (prepare, activate, retire, remove, revoke) applied.",
                &[],
            )),
            ca_not_after: registry.register(GaugeVec::new(
                "tessera_ca_not_after_seconds",
                "Each CA generation's notAfter (unix seconds).",
                &["ca_id"],
            )),
            ca_state: registry.register(GaugeVec::new(
                "tessera_ca_state",
                "1 for each CA generation's current state.",
                &["ca_id", "state"],
            )),
            ca_dependents: registry.register(GaugeVec::new(
                "tessera_ca_dependent_leaves",
                "Unexpired, unrevoked leaves signed by each active or retired CA generation.",
                &["ca_id"],
            )),
            jwt_issued: registry.register(CounterVec::new(
                "tessera_jwt_svids_issued_total",
                "JWT-SVIDs signed.",
                &[],
            )),
            webhook_deliveries: registry.register(CounterVec::new(
                "tessera_webhook_deliveries_total",
                "Webhook delivery attempts.",
                &["outcome"],
            )),
            federation_polls: registry.register(CounterVec::new(
                "tessera_federation_polls_total",
                "Polls of foreign bundle endpoints: updated (a newer bundle), unchanged, failed (the last good bundle kept).",
                &["trust_domain", "outcome"],
            )),
            federation_healthy: by_domain(
                "tessera_federation_healthy",
                "1 while the relationship's last poll succeeded within federation.stale_after_seconds.",
            ),
            federation_sequence: by_domain(
                "tessera_federation_bundle_sequence",
                "spiffe_sequence of the foreign bundle held (0: none).",
            ),
            federation_last_success: by_domain(
                "tessera_federation_last_success_seconds",
                "Last successful poll of the foreign bundle endpoint (unix seconds, 0: never).",
            ),
            federation_bundle_age: by_domain(
                "tessera_federation_bundle_age_seconds",
                "Age of the foreign bundle held, seconds.",
            ),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
