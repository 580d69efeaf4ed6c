//! Named leases among replicas: exactly one replica runs a periodic duty
//! (the webhook deliverer, the CA rotation schedule). Taken and renewed with
//! conditional statements that behave the same on SQLite and PostgreSQL; a
//! holder that stops renewing loses the lease when it expires.

use super::{Store, StoreError};

impl Store {
    /// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms`:
    /// granted if nobody holds it, `holder` already does, or the holder's lease
    /// has expired. Plain conditional statements, the same on both backends.
    pub async fn lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let core = self.core();
        let _turn = core.sqlite_turn().await;
        let inserted = sqlx::query(
            "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.to_owned())
        .bind(holder.to_owned())
        .bind(now_ms + ttl_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(true);
        }
        let updated = sqlx::query(
            "UPDATE leases SET holder = $2, expires_ms = $3 WHERE name = $1 AND (holder = $2 OR expires_ms < $4)",
        )
        .bind(name.to_owned())
        .bind(holder.to_owned())
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Gives up the lease `name` if `holder` has it (another replica may take it at once).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let core = self.core();
        let _turn = core.sqlite_turn().await;
        sqlx::query("UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2")
            .bind(name.to_owned())
            .bind(holder.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
