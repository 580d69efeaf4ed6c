//! Denials: sidecars' reports of refused connections. Telemetry, not
//! audited: their volume would swamp the audit log.

use super::{Store, StoreError, placeholders};
use sqlx::Row;
use tessera_core::api::{Denial, DenialReason, DenialRecord};

/// Filters for listing denials; every filter that is set must match.
#[derive(Debug, Clone, Default)]
pub struct DenialFilter {
    /// Only denials at or after this time, unix seconds.
    pub since: Option<i64>,
    /// Only denials reported by this sidecar (the destination), a SPIFFE ID.
    pub reporter: Option<String>,
    /// Only denials of this peer (the source), a SPIFFE ID.
    pub peer_spiffe_id: Option<String>,
    /// Only denials on this listener or upstream.
    pub listener: Option<String>,
    /// Only denials for this reason.
    pub reason: Option<DenialReason>,
    /// At most this many rows.
    pub limit: i64,
}

/// Most denials in one multi-row INSERT: a whole report (at most 1000) is one
/// statement; 7 values a row stays far below SQLite's 32766 and PostgreSQL's
/// 65535 bound parameters.
pub const MAX_DENIALS_PER_INSERT: usize = 1000;

/// The denials INSERT, before `VALUES` (7 values a row).
const DENIAL_INSERT: &str =
    "INSERT INTO denials (at, reporter, listener, peer_addr, peer_spiffe_id, reason, received_at)";

impl Store {
    /// Stores a batch of denials reported by `reporter` (the sidecar's SPIFFE ID,
    /// from its credentials), received at `received_at`. One multi-row INSERT
    /// per [`MAX_DENIALS_PER_INSERT`] rows, all in one transaction. Not audited:
    /// denials are telemetry, and their volume would swamp the audit log.
    /// Returns the number of rows stored.
    pub async fn record_denials(
        &self,
        reporter: &str,
        denials: &[Denial],
        received_at: i64,
    ) -> Result<u64, StoreError> {
        if denials.is_empty() {
            return Ok(0);
        }
        let core = self.core();
        // PostgreSQL inserts need no serialisation and no advisory lock.
        let _turn = core.sqlite_turn().await;
        let mut tx = core.begin_write().await?;
        let mut n = 0;
        for chunk in denials.chunks(MAX_DENIALS_PER_INSERT) {
            let sql = format!("{DENIAL_INSERT} VALUES {}", placeholders(chunk.len(), 7, 0));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in chunk {
                q = q
                    .bind(d.at)
                    .bind(reporter.to_owned())
                    .bind(d.listener.clone())
                    .bind(d.peer_addr.clone())
                    .bind(d.peer_spiffe_id.clone())
                    .bind(d.reason.as_str().to_owned())
                    .bind(received_at);
            }
            n += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Denials matching `f`, newest first (by `at`, then by arrival).
    pub async fn list_denials(&self, f: &DenialFilter) -> Result<Vec<DenialRecord>, StoreError> {
        // `since` is always bound (no `IS NULL OR`), so SQLite walks the `at`
        // index as a range instead of scanning it whole.
        let rows = sqlx::query(
            "SELECT id, at, reporter, listener, peer_addr, peer_spiffe_id, reason FROM denials WHERE \
             at >= $1 AND \
             (CAST($2 AS TEXT) IS NULL OR reporter = $2) AND \
             (CAST($3 AS TEXT) IS NULL OR peer_spiffe_id = $3) AND \
             (CAST($4 AS TEXT) IS NULL OR listener = $4) AND \
             (CAST($5 AS TEXT) IS NULL OR reason = $5) \
             ORDER BY at DESC, id DESC LIMIT $6",
        )
        .bind(f.since.unwrap_or(i64::MIN))
        .bind(f.reporter.clone())
        .bind(f.peer_spiffe_id.clone())
        .bind(f.listener.clone())
        .bind(f.reason.map(|r| r.as_str().to_owned()))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let reason: String = r.get(6);
                Some(DenialRecord {
                    id: r.get(0),
                    at: r.get(1),
                    reporter: r.get(2),
                    listener: r.get(3),
                    peer_addr: r.get(4),
                    peer_spiffe_id: r.get(5),
                    reason: DenialReason::ALL
                        .into_iter()
                        .find(|k| k.as_str() == reason)?,
                })
            })
            .collect())
    }
}
