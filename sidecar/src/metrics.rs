//! The sidecar's metrics and its loopback admin endpoint: `/healthz`,
//! `/readyz` (an identity is held and every listener is up), `/metrics`
//! (Prometheus), `/identity` (SPIFFE ID, serial, expiry; never key material).

use crate::Shared;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tessera_core::metrics::{CounterVec, Gauge, GaugeVec, Registry};

/// Every metric the sidecar exports.
#[derive(Clone)]
pub struct Metrics {
    /// Rendered at `/metrics`.
    pub registry: Registry,
    /// Connections opened, by listener.
    pub opened: Arc<CounterVec>,
    /// Connections closed, by listener.
    pub closed: Arc<CounterVec>,
    /// Connections open now, by listener.
    pub active: Arc<GaugeVec>,
    /// Refused connections, by listener and reason.
    pub denied: Arc<CounterVec>,
    /// Bytes relayed from peers to the app (inbound) or app to upstream (outbound), by listener.
    pub bytes_in: Arc<CounterVec>,
    /// Bytes relayed the other way, by listener.
    pub bytes_out: Arc<CounterVec>,
    /// notAfter of the current certificate, unix seconds.
    pub cert_expiry: Arc<Gauge>,
    /// Certificate rotations.
    pub rotations: Arc<Gauge>,
    /// Trust-bundle changes applied without a renewal.
    pub bundle_updates: Arc<Gauge>,
    /// Revocation-feed version seen.
    pub feed_version: Arc<Gauge>,
    /// Seconds the feed is overdue beyond the long-poll wait (0 while it answers).
    pub feed_lag: Arc<Gauge>,
    /// Denials sent to the CA.
    pub denials_reported: Arc<Gauge>,
    /// Denials dropped because the report queue was full.
    pub denials_dropped: Arc<Gauge>,
    /// Open connections across listeners (for draining).
    pub open_now: Arc<std::sync::atomic::AtomicI64>,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let r = Registry::default();
        Self {
            opened: r.register(CounterVec::new(
                "tessera_sidecar_connections_opened_total",
                "Connections accepted and relayed.",
                &["listener"],
            )),
            closed: r.register(CounterVec::new(
                "tessera_sidecar_connections_closed_total",
                "Relayed connections closed.",
                &["listener"],
            )),
            active: r.register(GaugeVec::new(
                "tessera_sidecar_connections_active",
                "Relayed connections open now.",
                &["listener"],
            )),
            denied: r.register(CounterVec::new(
                "tessera_sidecar_denied_total",
                "Refused connections (handshake failures and policy denials).",
                &["listener", "reason"],
            )),
            bytes_in: r.register(CounterVec::new(
                "tessera_sidecar_bytes_in_total",
                "Bytes relayed toward the app (inbound) or upstream (outbound).",
                &["listener"],
            )),
            bytes_out: r.register(CounterVec::new(
                "tessera_sidecar_bytes_out_total",
                "Bytes relayed the other way.",
                &["listener"],
            )),
            cert_expiry: r.register(Gauge::new(
                "tessera_sidecar_certificate_expiry_timestamp_seconds",
                "notAfter of the current certificate.",
            )),
            bundle_updates: r.register(Gauge::new(
                "tessera_sidecar_bundle_updates_total",
                "Trust-bundle changes applied (CA rotation or revocation) since start.",
            )),
            rotations: r.register(Gauge::new(
                "tessera_sidecar_rotations_total",
                "Certificate rotations since start.",
            )),
            feed_version: r.register(Gauge::new(
                "tessera_sidecar_revocation_feed_version",
                "Revocation-feed version seen.",
            )),
            feed_lag: r.register(Gauge::new(
                "tessera_sidecar_revocation_feed_lag_seconds",
                "Seconds the revocation feed is overdue: since its last answer, beyond the long-poll wait.",
            )),
            denials_reported: r.register(Gauge::new(
                "tessera_sidecar_denials_reported_total",
                "Denials sent to the CA.",
            )),
            denials_dropped: r.register(Gauge::new(
                "tessera_sidecar_denials_dropped_total",
                "Denials dropped from a full report queue.",
            )),
            open_now: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            registry: r,
        }
    }

    /// Open connections across listeners.
    pub fn active_total(&self) -> i64 {
        self.open_now.load(Ordering::Acquire)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) async fn serve_admin(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<Arc<Shared>>| async move { s.metrics.registry.render() }),
        )
        .route("/identity", get(identity))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin endpoint stopped");
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no identity yet\n")
    }
}

async fn identity(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    match s.identity() {
        Some(i) => axum::Json(serde_json::json!({
            "spiffe_id": i.svid.spiffe_id().as_str(),
            "serial": i.svid.serial(),
            "not_before": i.svid.not_before(),
            "not_after": i.svid.not_after(),
        }))
        .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no identity yet\n").into_response(),
    }
}
