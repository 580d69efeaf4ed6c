//! The audit log: as pages (`/v1/audit`) and as a stream of events (`/v1/events`).

use super::ApiError;
use super::caller::Operator;
use super::extract::{Query, St, bad_query, page_limit};
use super::reply::{Reply, Res, stored};
use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use tessera_core::api::{AuditList, EventKind};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

/// `GET /v1/audit`: a page of the audit log.
pub async fn audit(a: St, _: Operator, Query(q): Query<AuditQuery>) -> Res<Json<AuditList>> {
    let limit = page_limit(q.limit)?;
    let items = stored(a.store.audit_list(q.after, limit).await)?;
    Ok(Json(AuditList { items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    after: Option<i64>,
    kinds: Option<String>,
    follow: Option<bool>,
}

/// `GET /v1/events`: the audit log as server-sent events; resumes after
/// `Last-Event-ID` (or `?after=`), filtered by `?kinds=a,b`; `?follow=false`
/// ends once caught up.
pub async fn events(a: St, _: Operator, headers: HeaderMap, Query(q): Query<EventQuery>) -> Reply {
    let kinds = EventKind::parse_list(q.kinds.as_deref().unwrap_or(""))
        .map_err(|e| bad_query(format!("kinds: {e}")))?;
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad_query("Last-Event-ID: an event ID (a non-negative integer)"))?,
        ),
    };
    if q.after.is_some_and(|n| n < 0) {
        return Err(bad_query("after: an event ID (a non-negative integer)"));
    }
    let req = crate::events::StreamRequest {
        after: last.or(q.after),
        kinds,
        follow: q.follow.unwrap_or(true),
    };
    let stream = a.event_stream(req).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            e.to_string(),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
