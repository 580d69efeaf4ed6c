//! The `meta` table: small named values (the trust domain the database
//! belongs to, a pending rotation request).

use super::{Store, StoreError};
use sqlx::Row;

impl Store {
    /// Reads a metadata value.
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .row_by("SELECT value FROM meta WHERE key = $1", key)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Sets a metadata value if it is not set yet; returns the value now stored.
    pub async fn meta_init(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key.to_owned())
            .bind(value.to_owned())
            .execute(&self.pool)
            .await?;
        self.meta_get(key).await?.ok_or(StoreError::NotFound)
    }

    /// Sets (or with None, clears) a metadata value.
    pub async fn meta_set(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        match value {
            Some(v) => sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
            )
            .bind(key.to_owned())
            .bind(v.to_owned()),
            None => sqlx::query("DELETE FROM meta WHERE key = $1").bind(key.to_owned()),
        }
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The `meta` key holding the bundle's sequence and the digest it numbers.
const BUNDLE_SEQUENCE: &str = "bundle_sequence";

impl Store {
    /// The SPIFFE bundle sequence for a bundle whose content digest is
    /// `digest`: the stored number if the stored digest is the same, else the
    /// next number (stored with the new digest). A compare-and-set on the
    /// `meta` row, so replicas that see the same change agree on its number
    /// and the number only ever rises (the SPIFFE bundle standard: it must
    /// increase whenever the content changes).
    pub async fn bundle_sequence(&self, digest: &str) -> Result<i64, StoreError> {
        loop {
            let Some(cur) = self.meta_get(BUNDLE_SEQUENCE).await? else {
                self.meta_init(BUNDLE_SEQUENCE, &format!("1 {digest}"))
                    .await?;
                continue;
            };
            let (n, d) = cur
                .split_once(' ')
                .and_then(|(n, d)| Some((n.parse::<i64>().ok()?, d)))
                .ok_or_else(|| StoreError::Corrupt("meta bundle_sequence".into()))?;
            if d == digest {
                return Ok(n);
            }
            let next = n.saturating_add(1);
            let swapped = sqlx::query("UPDATE meta SET value = $1 WHERE key = $2 AND value = $3")
                .bind(format!("{next} {digest}"))
                .bind(BUNDLE_SEQUENCE.to_owned())
                .bind(cur.clone())
                .execute(&self.pool)
                .await?
                .rows_affected();
            if swapped == 1 {
                return Ok(next);
            }
        }
    }
}
