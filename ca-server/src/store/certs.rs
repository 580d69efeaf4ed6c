//! The certificate ledger's rows: recorded through [`super::ledger`] (batched,
//! with their preconditions), read by serial and listed.

use super::{AuditEntry, Precondition, Store, StoreError};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use tessera_core::api::{self, RevocationReason};
use tessera_core::time::rfc3339;

/// A certificate row to insert.
#[derive(Debug, Clone)]
pub struct NewCert {
    /// Serial, hex.
    pub serial: String,
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// Entry ID.
    pub entry_id: String,
    /// Issuing CA.
    pub ca_id: String,
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
    /// Who asked.
    pub requested_by: String,
    /// Canonical attestation JSON.
    pub attestation: String,
    /// Its SHA-256, hex.
    pub attestation_hash: String,
    /// DER.
    pub der: Vec<u8>,
    /// The node whose agent attested the workload (SPIFFE ID), for
    /// certificates issued through an agent.
    pub node_spiffe_id: Option<String>,
}

/// A certificate row as read back: what was recorded, and its revocation.
#[derive(Debug, Clone)]
pub struct CertRow {
    /// The row as recorded at issuance.
    pub issued: NewCert,
    /// Revocation time.
    pub revoked_at: Option<i64>,
    /// Revocation reason code.
    pub revocation_reason: Option<i64>,
    /// Whether it was revoked by its generation's revocation (not by an operator).
    pub revoked_by_ca: bool,
}

impl CertRow {
    /// The API view of this row (with the certificate PEM if asked).
    pub fn to_api(&self, with_pem: bool) -> api::CertificateRecord {
        let c = &self.issued;
        api::CertificateRecord {
            serial: c.serial.clone(),
            spiffe_id: c.spiffe_id.clone(),
            entry_id: c.entry_id.clone(),
            ca_id: c.ca_id.clone(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            revoked_at: self.revoked_at.map(rfc3339),
            revocation_reason: self.revocation_reason.and_then(RevocationReason::from_code),
            attestation_hash: c.attestation_hash.clone(),
            attestation: serde_json::from_str(&c.attestation).unwrap_or(Value::Null),
            requested_by: c.requested_by.clone(),
            node: c.node_spiffe_id.clone(),
            certificate: with_pem.then(|| tessera_core::pem::encode("CERTIFICATE", &c.der)),
        }
    }
}

/// Filters for listing certificates.
#[derive(Debug, Clone, Default)]
pub struct CertFilter {
    /// Only this SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// Only live certificates expiring within this many seconds.
    pub expiring_within: Option<i64>,
    /// Only revoked (true) or only unrevoked (false).
    pub revoked: Option<bool>,
    /// Only this attestation hash.
    pub attestation_hash: Option<String>,
    /// At most this many rows.
    pub limit: i64,
}

/// The columns [`cert_row`] reads, before `WHERE`.
const CERT_SELECT: &str = "SELECT serial, spiffe_id, entry_id, ca_id, not_before, not_after, requested_by, \
     attestation, attestation_hash, cert_der, revoked_at, revocation_reason, node_spiffe_id, revoked_by_ca \
     FROM certificates";

fn cert_row(r: &AnyRow) -> CertRow {
    CertRow {
        issued: NewCert {
            serial: r.get(0),
            spiffe_id: r.get(1),
            entry_id: r.get(2),
            ca_id: r.get(3),
            not_before: r.get(4),
            not_after: r.get(5),
            requested_by: r.get(6),
            attestation: r.get(7),
            attestation_hash: r.get(8),
            der: r.get(9),
            node_spiffe_id: r.get(12),
        },
        revoked_at: r.get(10),
        revocation_reason: r.get(11),
        revoked_by_ca: r.get::<i64, _>(13) != 0,
    }
}

impl Store {
    /// Records a certificate durably (batched with others), checking the
    /// preconditions in the same transaction. Returns once committed.
    pub async fn record_certificate(
        &self,
        cert: NewCert,
        preconditions: Vec<Precondition>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.ledger.submit(cert, preconditions, audit).await
    }

    /// Reads one certificate by serial.
    pub async fn get_cert(&self, serial: &str) -> Result<CertRow, StoreError> {
        let sql = format!("{CERT_SELECT} WHERE serial = $1");
        let r = self
            .row_by(sql, serial)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(cert_row(&r))
    }

    /// Lists certificates, newest first.
    pub async fn list_certs(&self, f: &CertFilter, now: i64) -> Result<Vec<CertRow>, StoreError> {
        let sql = format!(
            "{CERT_SELECT} WHERE \
             (CAST($1 AS TEXT) IS NULL OR spiffe_id = $1) AND \
             (CAST($2 AS BIGINT) IS NULL OR (not_after <= $2 AND not_after > $3)) AND \
             (CAST($4 AS BIGINT) IS NULL OR ($4 = 1 AND revoked_at IS NOT NULL) OR ($4 = 0 AND revoked_at IS NULL)) AND \
             (CAST($5 AS TEXT) IS NULL OR attestation_hash = $5) \
             ORDER BY created_at DESC, serial LIMIT $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(f.spiffe_id.clone())
            .bind(f.expiring_within.map(|w| now.saturating_add(w)))
            .bind(now)
            .bind(f.revoked.map(|b| b as i64))
            .bind(f.attestation_hash.clone())
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(cert_row).collect())
    }
}
