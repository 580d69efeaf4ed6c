//! Join tokens: stored as the hash of their secret, consumed by the ledger
//! ([`super::Precondition::ConsumeToken`]) in the transaction that records the
//! certificate they were redeemed for.

use super::{AuditEntry, Store, StoreError};
use sqlx::Row;
use tessera_core::api;
use tessera_core::time::rfc3339;

/// A join token row.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Public ID.
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub token_hash: String,
    /// Entry it redeems for.
    pub entry_id: String,
    /// Expiry.
    pub expires_at: i64,
    /// When used.
    pub used_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
}

impl Store {
    /// Stores a new join token (its hash only), audited.
    pub async fn create_token(
        &self,
        t: &TokenRow,
        created_by: &str,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let (t, by) = (t.clone(), created_by.to_owned());
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    let n = sqlx::query("SELECT 1 FROM entries WHERE id = $1")
                        .bind(t.entry_id.clone())
                        .fetch_optional(&mut **tx)
                        .await?;
                    if n.is_none() {
                        return Err(StoreError::NotFound);
                    }
                    sqlx::query(
                        "INSERT INTO join_tokens (id, token_hash, entry_id, created_by, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(t.id)
                    .bind(t.token_hash)
                    .bind(t.entry_id)
                    .bind(by)
                    .bind(t.created_at)
                    .bind(t.expires_at)
                    .execute(&mut **tx)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Reads a join token by its public ID.
    pub async fn get_token(&self, id: &str) -> Result<TokenRow, StoreError> {
        let sql = "SELECT id, token_hash, entry_id, expires_at, used_at, created_at FROM join_tokens WHERE id = $1";
        let r = self.row_by(sql, id).await?.ok_or(StoreError::NotFound)?;
        Ok(TokenRow {
            id: r.get(0),
            token_hash: r.get(1),
            entry_id: r.get(2),
            expires_at: r.get(3),
            used_at: r.get(4),
            created_at: r.get(5),
        })
    }

    /// Lists join tokens with their entry's SPIFFE ID.
    pub async fn list_tokens(&self) -> Result<Vec<api::TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, t.entry_id, COALESCE(e.spiffe_id, ''), t.created_at, t.expires_at, t.used_at \
             FROM join_tokens t LEFT JOIN entries e ON e.id = t.entry_id ORDER BY t.created_at DESC, t.id LIMIT 10000",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| api::TokenInfo {
                id: r.get(0),
                entry_id: r.get(1),
                spiffe_id: r.get(2),
                created_at: rfc3339(r.get(3)),
                expires_at: rfc3339(r.get(4)),
                used_at: r.get::<Option<i64>, _>(5).map(rfc3339),
            })
            .collect())
    }

    /// Deletes a join token, audited.
    pub async fn delete_token(&self, id: &str, audit: AuditEntry) -> Result<(), StoreError> {
        let sql = "DELETE FROM join_tokens WHERE id = $1";
        self.core().write_one(audit, sql, id).await
    }
}
