//! The federation poller. Every replica runs it: each pass lists the
//! relationships and publishes their health as metrics; only the holder of
//! the `federation-poll` lease fetches the ones that are due, so each
//! foreign endpoint is polled by one replica. A pass runs every second, when
//! a relationship is created or changed on this replica (`federation_poke`),
//! and a lease that lapses is taken over by another replica.

use crate::authority::Authority;
use std::sync::Arc;
use std::time::Duration;
use tessera_core::now_unix;

/// The lease the polling replica holds.
const LEASE: &str = "federation-poll";

/// Runs the poller (until dropped).
pub async fn run_poller(auth: Arc<Authority>) {
    let holder = auth.replica_id().to_owned();
    let lease_ms = auth.cfg.federation.lease_seconds.saturating_mul(1000);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = auth.federation_poke.notified() => {}
        }
        let rows = match auth.store.list_federations(super::MAX_RELATIONSHIPS).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "listing federation relationships failed");
                continue;
            }
        };
        publish_health(&auth, &rows);
        if rows.is_empty() {
            continue;
        }
        let now_ms = now_unix().saturating_mul(1000);
        let was = held;
        held = auth
            .store
            .lease(LEASE, &holder, now_ms, lease_ms)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "federation lease renewal failed");
                false
            });
        if held != was {
            tracing::info!(held, "federation poll lease");
        }
        if !held {
            continue;
        }
        for row in rows.iter().filter(|r| r.next_poll_ms <= now_ms) {
            if let Err(e) = auth.poll_federation(row).await {
                tracing::warn!(trust_domain = %row.trust_domain, error = %e, "recording a federation poll failed");
            }
        }
    }
}

/// Sets the federation gauges from the relationships as stored (every
/// replica, so whichever one is scraped tells the truth) and drops the
/// series of relationships that no longer exist.
fn publish_health(auth: &Authority, rows: &[crate::store::FederationRow]) {
    let m = &auth.metrics;
    let now = now_unix();
    let names: Vec<&str> = rows.iter().map(|r| r.trust_domain.as_str()).collect();
    for g in [
        &m.federation_healthy,
        &m.federation_sequence,
        &m.federation_last_success,
        &m.federation_bundle_age,
    ] {
        g.retain(|labels| names.contains(&labels[0].as_str()));
    }
    for r in rows {
        let v = auth.federation_view(r);
        let td = [r.trust_domain.as_str()];
        m.federation_healthy.set(&td, i64::from(v.healthy));
        m.federation_sequence.set(&td, r.sequence.unwrap_or(0));
        m.federation_last_success
            .set(&td, r.last_success_at.unwrap_or(0));
        m.federation_bundle_age
            .set(&td, r.bundle_updated_at.map_or(0, |t| now - t));
    }
}
