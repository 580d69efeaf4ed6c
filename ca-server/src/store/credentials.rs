//! API credentials: scoped tokens (stored as the hash of their secret) and
//! operator certificates (by the SPIFFE ID they carry).

use super::{AuditEntry, Refusal, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tessera_core::api::Role;

/// An API credential row.
#[derive(Debug, Clone)]
pub struct CredentialRow {
    /// ID.
    pub id: String,
    /// `certificate` or `token`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// For certificates: the SPIFFE ID they carry.
    pub spiffe_id: Option<String>,
    /// For tokens: SHA-256 of the secret, hex.
    pub token_hash: Option<String>,
    /// Expiry.
    pub expires_at: i64,
    /// Disabled.
    pub disabled: bool,
}

macro_rules! cred_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, kind, name, role, spiffe_id, token_hash, expires_at, disabled FROM api_credentials ",
            $tail
        )
    };
}

fn cred_row(r: &AnyRow) -> Option<CredentialRow> {
    Some(CredentialRow {
        id: r.get(0),
        kind: r.get(1),
        name: r.get(2),
        role: Role::parse(&r.get::<String, _>(3))?,
        spiffe_id: r.get(4),
        token_hash: r.get(5),
        expires_at: r.get(6),
        disabled: r.get::<i64, _>(7) != 0,
    })
}

impl Store {
    /// Stores an API credential, audited. A certificate credential whose SPIFFE ID
    /// already has one is refused with [`Refusal::CredentialExists`] (checked under
    /// the write lock, so replicas initialising together cannot both insert).
    pub async fn insert_credential(
        &self,
        c: &CredentialRow,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let c = c.clone();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    if let Some(sid) = &c.spiffe_id
                        && sqlx::query("SELECT 1 FROM api_credentials WHERE spiffe_id = $1")
                            .bind(sid.clone())
                            .fetch_optional(&mut **tx)
                            .await?
                            .is_some()
                    {
                        return Err(Refusal::CredentialExists.into());
                    }
                    sqlx::query(
                        "INSERT INTO api_credentials (id, kind, name, role, spiffe_id, token_hash, created_at, expires_at, disabled) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
                    )
                    .bind(c.id)
                    .bind(c.kind)
                    .bind(c.name)
                    .bind(c.role.as_str().to_owned())
                    .bind(c.spiffe_id)
                    .bind(c.token_hash)
                    .bind(tessera_core::now_unix())
                    .bind(c.expires_at)
                    .execute(&mut **tx)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Finds the certificate credential for a SPIFFE ID.
    pub async fn credential_by_spiffe_id(
        &self,
        spiffe_id: &str,
    ) -> Result<Option<CredentialRow>, StoreError> {
        let r = self.row_by(cred_select!("WHERE spiffe_id = $1"), spiffe_id);
        Ok(r.await?.as_ref().and_then(cred_row))
    }

    /// Finds a credential by ID.
    pub async fn credential(&self, id: &str) -> Result<Option<CredentialRow>, StoreError> {
        let r = self.row_by(cred_select!("WHERE id = $1"), id);
        Ok(r.await?.as_ref().and_then(cred_row))
    }

    /// Lists credentials.
    pub async fn list_credentials(&self) -> Result<Vec<CredentialRow>, StoreError> {
        let rows = sqlx::query(cred_select!("ORDER BY name, id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().filter_map(cred_row).collect())
    }

    /// Disables a credential, audited.
    pub async fn disable_credential(&self, id: &str, audit: AuditEntry) -> Result<(), StoreError> {
        let sql = "UPDATE api_credentials SET disabled = 1 WHERE id = $1";
        self.core().write_one(audit, sql, id).await
    }
}
