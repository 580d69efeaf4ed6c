//! Pruning: history past its retention goes, oldest first, a bounded batch
//! per table per call so a large backlog never holds the write lock long.

use super::{Store, StoreError};

/// Cut-offs for [`Store::prune`], unix seconds: rows older than these go.
#[derive(Debug, Clone, Copy)]
pub struct PruneBefore {
    /// Certificates and revocations whose notAfter, and join tokens whose
    /// expiry, is before this.
    pub expired: i64,
    /// Denials that happened (`at`) before this.
    pub denials: i64,
}

impl Store {
    /// Deletes, oldest first, at most `batch` rows from each of: certificates
    /// and revocations that expired before `before.expired`, join tokens that
    /// expired before it (used ones included), and denials that happened before
    /// `before.denials`. Returns rows removed.
    pub async fn prune(&self, before: PruneBefore, batch: i64) -> Result<u64, StoreError> {
        self.delete_oldest(
            &[
                (
                    "DELETE FROM certificates WHERE serial IN \
                     (SELECT serial FROM certificates WHERE not_after < $1 ORDER BY not_after LIMIT $2)",
                    before.expired,
                ),
                // The newest revocation is never pruned: it carries the feed's version,
                // which must never move backwards.
                (
                    "DELETE FROM revocations WHERE version IN \
                     (SELECT version FROM revocations WHERE not_after < $1 \
                     AND version < (SELECT MAX(version) FROM revocations) ORDER BY not_after LIMIT $2)",
                    before.expired,
                ),
                (
                    "DELETE FROM join_tokens WHERE id IN \
                     (SELECT id FROM join_tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
                    before.expired,
                ),
                (
                    "DELETE FROM denials WHERE id IN \
                     (SELECT id FROM denials WHERE at < $1 ORDER BY at LIMIT $2)",
                    before.denials,
                ),
                // A jti is kept until its token has expired (plus leeway); after
                // that the token is refused as expired anyway.
                (
                    "DELETE FROM jwt_jtis WHERE (issuer, jti_hash) IN \
                     (SELECT issuer, jti_hash FROM jwt_jtis WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
                    before.expired,
                ),
            ],
            batch,
        )
        .await
    }

    /// Deletes, oldest first, at most `batch` delivery attempts made before
    /// `deliveries_before` and at most `batch` expiring-markers of
    /// certificates whose notAfter is before `expired_before` (pruned with
    /// the certificates). Returns rows removed.
    pub async fn prune_events(
        &self,
        deliveries_before: i64,
        expired_before: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        self.delete_oldest(
            &[
                (
                    "DELETE FROM webhook_deliveries WHERE id IN \
                     (SELECT id FROM webhook_deliveries WHERE at < $1 ORDER BY at LIMIT $2)",
                    deliveries_before,
                ),
                (
                    "DELETE FROM cert_expiring WHERE serial IN \
                     (SELECT serial FROM cert_expiring WHERE not_after < $1 ORDER BY not_after LIMIT $2)",
                    expired_before,
                ),
            ],
            batch,
        )
        .await
    }

    /// Runs each `(DELETE, cutoff)` with `$1 = cutoff` and `$2 = batch` in one
    /// transaction under the write lock; returns rows removed.
    async fn delete_oldest(
        &self,
        deletes: &[(&'static str, i64)],
        batch: i64,
    ) -> Result<u64, StoreError> {
        let core = self.core();
        let _guard = core.write_lock.lock().await;
        let mut tx = core.begin_write().await?;
        let mut n = 0;
        for (sql, cutoff) in deletes {
            n += sqlx::query(*sql)
                .bind(*cutoff)
                .bind(batch)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }
}
