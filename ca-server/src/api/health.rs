//! Liveness, readiness, metrics and the OpenAPI document.

use super::ApiError;
use super::extract::St;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The OpenAPI document, as checked in.
const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// `GET /healthz`: liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: readiness: the database answers.
pub async fn readyz(a: St) -> Response {
    match a.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "database unreachable",
            )
            .into_response()
        }
    }
}

/// `GET /metrics`: the Prometheus metrics.
pub async fn metrics(a: St) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        a.metrics.registry.render(),
    )
        .into_response()
}

/// `GET /v1/openapi.json`: the OpenAPI document.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
