//! Revocations: revoking certificates, and the feed followers long-poll.

use super::caller::{Caller, Operator};
use super::extract::{Body, Query, St};
use super::reply::{Res, stored};
use axum::Json;
use serde::Deserialize;
use std::time::Duration;
use tessera_core::api::{RevocationFeed, RevokeRequest, RevokeResponse};

/// `POST /v1/revocations`: revokes certificates.
pub async fn revoke(
    a: St,
    op: Operator,
    Body(req): Body<RevokeRequest>,
) -> Res<Json<RevokeResponse>> {
    Ok(Json(a.revoke(&req, op.principal()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    #[serde(default)]
    since: i64,
    #[serde(default)]
    wait: u64,
    /// The bundle sequence the follower holds; a different current one answers at once.
    bundle: Option<i64>,
}

/// `GET /v1/revocations`: the revocation feed, long-polled: answers at once if
/// anything is newer than `since` (or the bundle differs from the follower's
/// `bundle`), else waits up to `wait` seconds for a revocation or a CA change
/// (local, or seen by the cross-replica poller).
pub async fn feed(a: St, _: Caller, Query(q): Query<FeedQuery>) -> Res<Json<RevocationFeed>> {
    const PAGE: i64 = 1000;
    let wait = Duration::from_secs(q.wait.min(a.cfg.limits.max_wait_seconds));
    let mut rx = a.revocation_watch();
    let mut cas = a.ca_watch();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let current = *rx.borrow_and_update();
        cas.borrow_and_update();
        let bundle_moved = q.bundle.is_some_and(|b| b != a.bundle().sequence);
        if current > q.since || bundle_moved || tokio::time::Instant::now() >= deadline {
            break;
        }
        let woke = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                r = rx.changed() => r,
                r = cas.changed() => r,
            }
        })
        .await;
        if !matches!(woke, Ok(Ok(()))) {
            break;
        }
    }
    let revocations = stored(a.store.revocations_since(q.since, PAGE + 1).await)?;
    let more = revocations.len() as i64 > PAGE;
    let revocations: Vec<_> = revocations.into_iter().take(PAGE as usize).collect();
    let version = revocations.last().map(|r| r.version).unwrap_or(q.since);
    Ok(Json(RevocationFeed {
        version,
        revocations,
        more,
        bundle_sequence: a.bundle().sequence,
    }))
}
