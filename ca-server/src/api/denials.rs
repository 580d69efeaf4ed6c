//! Denial reports: sidecars report the connections they refused; operators read them.

use super::caller::{Operator, Workload};
use super::extract::{Body, Query, St, bad_query, page_limit};
use super::reply::{Reply, Res};
use crate::authority::MAX_DENIAL_LISTENER_BYTES;
use crate::store::DenialFilter;
use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use tessera_core::api::{DenialList, DenialReason, DenialReport};

/// `POST /v1/denials`: a sidecar's batch of refused connections.
pub async fn report(a: St, caller: Workload, Body(report): Body<DenialReport>) -> Reply {
    // The reporter is who the caller proved to be, never a field of the report.
    let accepted = a
        .report_denials(caller.spiffe_id(), &report.denials)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": accepted })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenialQuery {
    since: Option<i64>,
    destination: Option<String>,
    source: Option<String>,
    listener: Option<String>,
    reason: Option<DenialReason>,
    limit: Option<i64>,
}

/// `GET /v1/denials`: the denial reports, filtered.
pub async fn list(a: St, _: Operator, Query(q): Query<DenialQuery>) -> Res<Json<DenialList>> {
    let limit = page_limit(q.limit)?;
    for (name, id) in [("destination", &q.destination), ("source", &q.source)] {
        if let Some(id) = id {
            tessera_core::SpiffeId::new(id)
                .map_err(|e| bad_query(format!("{name}: invalid SPIFFE ID: {e}")))?;
        }
    }
    if q.listener
        .as_ref()
        .is_some_and(|l| l.len() > MAX_DENIAL_LISTENER_BYTES)
    {
        return Err(bad_query(format!(
            "listener: at most {MAX_DENIAL_LISTENER_BYTES} bytes"
        )));
    }
    let f = DenialFilter {
        since: q.since,
        reporter: q.destination,
        peer_spiffe_id: q.source,
        listener: q.listener,
        reason: q.reason,
        limit,
    };
    Ok(Json(DenialList {
        items: a.list_denials(&f).await?,
    }))
}
