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
