//! Revocation: marking live certificates revoked (by serial, SPIFFE ID,
//! entry, CA generation or node), the revocation feed followers long-poll,
//! and the entries of each generation's CRL.

use super::{AuditEntry, Store, StoreError, Tx};
use sqlx::Row;
use tessera_core::api::{RevocationEvent, RevocationReason};

/// Which live certificates a revocation selects.
pub(super) enum LiveBy {
    /// One serial.
    Serial(String),
    /// Every certificate of a SPIFFE ID.
    SpiffeId(String),
    /// Every certificate of an entry.
    Entry(String),
    /// Every certificate a CA generation signed.
    Ca(String),
    /// Every certificate issued through a node's agent (node SPIFFE ID).
    Node(String),
}

/// Revokes the live (unexpired, unrevoked) certificates `by` selects inside
/// `tx`: marks them, appends them to the revocation feed and returns (serials,
/// feed version after, audit records to append).
pub(super) async fn revoke_live_in_tx(
    tx: &mut Tx,
    by: LiveBy,
    reason: i64,
    now: i64,
    actor: &str,
) -> Result<(Vec<String>, i64, Vec<AuditEntry>), StoreError> {
    // Only a generation's own revocation marks its leaves as re-issuable.
    let by_ca = i64::from(matches!(by, LiveBy::Ca(_)));
    let (column, value) = match by {
        LiveBy::Serial(v) => ("serial", v),
        LiveBy::SpiffeId(v) => ("spiffe_id", v),
        LiveBy::Entry(v) => ("entry_id", v),
        LiveBy::Ca(v) => ("ca_id", v),
        LiveBy::Node(v) => ("node_spiffe_id", v),
    };
    // `column` is one of the constants above, never input.
    let sql = format!(
        "SELECT serial, spiffe_id, ca_id, not_after FROM certificates \
         WHERE {column} = $1 AND revoked_at IS NULL AND not_after > $2 ORDER BY serial"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    let mut version: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM revocations")
        .fetch_one(&mut **tx)
        .await?
        .get(0);
    let mut revoked = Vec::with_capacity(rows.len());
    let mut audits = Vec::with_capacity(rows.len());
    for r in &rows {
        let s: String = r.get(0);
        let sid: String = r.get(1);
        let ca: String = r.get(2);
        let not_after: i64 = r.get(3);
        version += 1;
        sqlx::query(
            "UPDATE certificates SET revoked_at = $2, revocation_reason = $3, revoked_by_ca = $4 \
             WHERE serial = $1",
        )
        .bind(s.clone())
        .bind(now)
        .bind(reason)
        .bind(by_ca)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO revocations (version, serial, spiffe_id, ca_id, reason, revoked_at, not_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(version)
        .bind(s.clone())
        .bind(sid.clone())
        .bind(ca)
        .bind(reason)
        .bind(now)
        .bind(not_after)
        .execute(&mut **tx)
        .await?;
        audits.push(AuditEntry {
            actor: actor.to_owned(),
            action: "cert.revoke",
            target: s.clone(),
            details: serde_json::json!({"spiffe_id": sid, "reason": reason, "version": version}),
        });
        revoked.push(s);
    }
    Ok((revoked, version, audits))
}

impl Store {
    /// Revokes the live (unexpired, unrevoked) certificates selected by exactly
    /// one of serial / SPIFFE ID / entry ID, audited. Returns the serials revoked
    /// now and the feed version after the change.
    pub async fn revoke(
        &self,
        serial: Option<String>,
        spiffe_id: Option<String>,
        entry_id: Option<String>,
        reason: i64,
        now: i64,
        actor: &str,
    ) -> Result<(Vec<String>, i64), StoreError> {
        let by = match (serial, spiffe_id, entry_id) {
            (Some(s), _, _) => LiveBy::Serial(s),
            (_, Some(s), _) => LiveBy::SpiffeId(s),
            (_, _, Some(e)) => LiveBy::Entry(e),
            _ => return Ok((vec![], 0)),
        };
        let core = self.core();
        let mut w = core.serialized().await?;
        let (revoked, version, audits) =
            revoke_live_in_tx(&mut w.tx, by, reason, now, actor).await?;
        w.commit(&audits, now).await?;
        Ok((revoked, version))
    }

    /// The revocation-feed version (highest version recorded).
    pub async fn revocation_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COALESCE(MAX(version), 0) FROM revocations")
                .fetch_one(&self.pool)
                .await?
                .get(0),
        )
    }

    /// Revocations after `since`, oldest first, at most `limit`.
    pub async fn revocations_since(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<RevocationEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, serial, spiffe_id, ca_id, reason, revoked_at, not_after FROM revocations \
             WHERE version > $1 ORDER BY version LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RevocationEvent {
                version: r.get(0),
                serial: r.get(1),
                spiffe_id: r.get(2),
                ca_id: r.get(3),
                reason: RevocationReason::from_code(r.get(4)).unwrap_or_default(),
                revoked_at: r.get(5),
                not_after: r.get(6),
            })
            .collect())
    }

    /// Unexpired revoked certificates of one CA: (serial, revoked_at, reason).
    pub async fn crl_entries(
        &self,
        ca_id: &str,
        now: i64,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, COALESCE(revocation_reason, 0) FROM certificates \
             WHERE ca_id = $1 AND revoked_at IS NOT NULL AND not_after > $2 ORDER BY serial",
        )
        .bind(ca_id.to_owned())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}
