//! Federation relationships: where each foreign trust domain's bundle
//! endpoint is, the last good bundle fetched from it and the poller's health
//! record. Operator changes and every change of a held bundle are audited;
//! a poll that changes no bundle is telemetry (its health columns only).

use super::{AuditEntry, Refusal, Store, StoreError, Tx, change_one};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A relationship as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRow {
    /// The foreign trust domain (primary key).
    pub trust_domain: String,
    /// Its bundle endpoint URL.
    pub bundle_endpoint_url: String,
    /// `https_spiffe` or `https_web`.
    pub profile: String,
    /// `https_spiffe`: the endpoint's SPIFFE ID.
    pub endpoint_spiffe_id: Option<String>,
    /// The last good bundle (SPIFFE bundle JSON); None before first contact.
    pub bundle: Option<String>,
    /// Its `spiffe_sequence`.
    pub sequence: Option<i64>,
    /// Its `spiffe_refresh_hint`, seconds.
    pub refresh_hint: Option<i64>,
    /// When it was stored.
    pub bundle_updated_at: Option<i64>,
    /// Last poll.
    pub last_attempt_at: Option<i64>,
    /// Last successful poll.
    pub last_success_at: Option<i64>,
    /// Why the last poll failed; None after a success.
    pub last_error: Option<String>,
    /// Consecutive failed polls.
    pub failures: i64,
    /// Next poll, unix milliseconds (0: now).
    pub next_poll_ms: i64,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: i64,
    /// Last operator change.
    pub updated_at: i64,
}

/// What one poll of a relationship found.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    /// A valid bundle: stored if its sequence is higher than the one held.
    Bundle {
        /// SPIFFE bundle JSON.
        json: String,
        /// Its `spiffe_sequence`.
        sequence: Option<i64>,
        /// Its `spiffe_refresh_hint`.
        refresh_hint: Option<i64>,
        /// The audit record of the change, if the bundle is stored.
        audit: AuditEntry,
    },
    /// The poll failed; the bundle held is kept.
    Failed(String),
}

const SELECT: &str = "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, bundle, \
     sequence, refresh_hint, bundle_updated_at, last_attempt_at, last_success_at, last_error, failures, \
     next_poll_ms, created_by, created_at, updated_at FROM federation_relationships";

fn row(r: &AnyRow) -> FederationRow {
    FederationRow {
        trust_domain: r.get(0),
        bundle_endpoint_url: r.get(1),
        profile: r.get(2),
        endpoint_spiffe_id: r.get(3),
        bundle: r.get(4),
        sequence: r.get(5),
        refresh_hint: r.get(6),
        bundle_updated_at: r.get(7),
        last_attempt_at: r.get(8),
        last_success_at: r.get(9),
        last_error: r.get(10),
        failures: r.get(11),
        next_poll_ms: r.get(12),
        created_by: r.get(13),
        created_at: r.get(14),
        updated_at: r.get(15),
    }
}

impl Store {
    /// Stores a new relationship, audited. Refused with
    /// [`Refusal::FederationExists`] if the trust domain has one, and with
    /// [`Refusal::FederationLimit`] if `max` exist.
    pub async fn create_federation(
        &self,
        f: &FederationRow,
        max: i64,
        audit: AuditEntry,
    ) -> Result<FederationRow, StoreError> {
        self.save_federation(f, Save::Create { max }, audit).await
    }

    /// Replaces a relationship's endpoint settings (and, with
    /// `replace_bundle`, its bundle, sequence and hint: a new bootstrap),
    /// audited; the next poll is due at once. [`StoreError::NotFound`] if it
    /// does not exist.
    pub async fn update_federation(
        &self,
        f: &FederationRow,
        replace_bundle: bool,
        audit: AuditEntry,
    ) -> Result<FederationRow, StoreError> {
        self.save_federation(f, Save::Update { replace_bundle }, audit)
            .await
    }

    /// Creates or updates `f` in one audited write, and reads it back.
    async fn save_federation(
        &self,
        f: &FederationRow,
        how: Save,
        audit: AuditEntry,
    ) -> Result<FederationRow, StoreError> {
        let r = f.clone();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    match how {
                        Save::Create { max } => insert(tx, r, max).await,
                        Save::Update { replace_bundle } => update(tx, r, replace_bundle).await,
                    }
                })
            })
            .await?;
        self.get_federation(&f.trust_domain).await
    }

    /// Reads one relationship.
    pub async fn get_federation(&self, trust_domain: &str) -> Result<FederationRow, StoreError> {
        let sql = format!("{SELECT} WHERE trust_domain = $1");
        let r = self
            .row_by(sql, trust_domain)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row(&r))
    }

    /// Lists relationships by trust domain, at most `limit`.
    pub async fn list_federations(&self, limit: i64) -> Result<Vec<FederationRow>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY trust_domain LIMIT $1"));
        let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row).collect())
    }

    /// Deletes a relationship and the bundle held, audited.
    pub async fn delete_federation(
        &self,
        trust_domain: &str,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let td = trust_domain.to_owned();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    change_one(
                        tx,
                        "DELETE FROM federation_relationships WHERE trust_domain = $1",
                        td,
                    )
                    .await
                })
            })
            .await
    }

    /// Records one poll of `trust_domain` at `now` (seconds), the next one
    /// due at `next_poll_ms`. A fetched bundle replaces the one held only if
    /// its sequence is higher (or nothing with a sequence is held yet), in
    /// an audited write whose `WHERE` re-checks that, so replicas and a
    /// concurrent `refresh` can never move it backwards. Returns whether the
    /// bundle held changed; a relationship deleted meanwhile is left deleted.
    pub async fn record_federation_poll(
        &self,
        trust_domain: &str,
        outcome: PollOutcome,
        now: i64,
        next_poll_ms: i64,
    ) -> Result<bool, StoreError> {
        let td = trust_domain.to_owned();
        let (error, hint) = match &outcome {
            PollOutcome::Bundle { refresh_hint, .. } => (None, *refresh_hint),
            PollOutcome::Failed(e) => (Some(e.clone()), None),
        };
        {
            let core = self.core();
            let _turn = core.sqlite_turn().await;
            sqlx::query(
                "UPDATE federation_relationships SET last_attempt_at = $2, next_poll_ms = $3, last_error = $4, \
                 last_success_at = CASE WHEN $5 = 1 THEN $2 ELSE last_success_at END, \
                 failures = CASE WHEN $5 = 1 THEN 0 ELSE failures + 1 END \
                 WHERE trust_domain = $1",
            )
            .bind(td.clone())
            .bind(now)
            .bind(next_poll_ms)
            .bind(error.clone())
            .bind(i64::from(error.is_none()))
            .execute(&self.pool)
            .await?;
        }
        let PollOutcome::Bundle {
            json,
            sequence,
            audit,
            ..
        } = outcome
        else {
            return Ok(false);
        };
        let stored = self
            .core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    // Newer: a higher sequence, or the first one with a
                    // sequence; a bundle without one only replaces another
                    // without one (nothing to compare, the content decides).
                    let n = sqlx::query(
                        "UPDATE federation_relationships SET bundle = $2, sequence = $3, refresh_hint = $4, \
                         bundle_updated_at = $5 WHERE trust_domain = $1 AND ( \
                         (CAST($3 AS BIGINT) IS NOT NULL AND (sequence IS NULL OR sequence < $3)) \
                         OR (CAST($3 AS BIGINT) IS NULL AND sequence IS NULL \
                             AND (bundle IS NULL OR bundle <> $2)))",
                    )
                    .bind(td)
                    .bind(json)
                    .bind(sequence)
                    .bind(hint)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    if n != 1 {
                        // Rolls back the audit record too: nothing changed.
                        return Err(Refusal::BundleNotNewer.into());
                    }
                    Ok(())
                })
            })
            .await;
        match stored {
            Ok(()) => Ok(true),
            Err(StoreError::Refused(Refusal::BundleNotNewer)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// How [`Store::save_federation`] writes.
#[derive(Clone, Copy)]
enum Save {
    /// A new row, unless one exists or `max` do.
    Create { max: i64 },
    /// An existing row's settings, and its bundle if asked.
    Update { replace_bundle: bool },
}

async fn insert(tx: &mut Tx, r: FederationRow, max: i64) -> Result<(), StoreError> {
    let exists = sqlx::query("SELECT 1 FROM federation_relationships WHERE trust_domain = $1")
        .bind(r.trust_domain.clone())
        .fetch_optional(&mut **tx)
        .await?;
    if exists.is_some() {
        return Err(Refusal::FederationExists {
            trust_domain: r.trust_domain,
        }
        .into());
    }
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM federation_relationships")
        .fetch_one(&mut **tx)
        .await?
        .get(0);
    if n >= max {
        return Err(Refusal::FederationLimit { max }.into());
    }
    sqlx::query(
        "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, \
         endpoint_spiffe_id, bundle, sequence, refresh_hint, bundle_updated_at, failures, \
         next_poll_ms, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, $9, $10, $10)",
    )
    .bind(r.trust_domain)
    .bind(r.bundle_endpoint_url)
    .bind(r.profile)
    .bind(r.endpoint_spiffe_id)
    .bind(r.bundle)
    .bind(r.sequence)
    .bind(r.refresh_hint)
    .bind(r.bundle_updated_at)
    .bind(r.created_by)
    .bind(r.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn update(tx: &mut Tx, r: FederationRow, replace_bundle: bool) -> Result<(), StoreError> {
    let n = sqlx::query(
        "UPDATE federation_relationships SET bundle_endpoint_url = $2, profile = $3, \
         endpoint_spiffe_id = $4, updated_at = $5, next_poll_ms = 0, \
         bundle = CASE WHEN $6 = 1 THEN $7 ELSE bundle END, \
         sequence = CASE WHEN $6 = 1 THEN $8 ELSE sequence END, \
         refresh_hint = CASE WHEN $6 = 1 THEN $9 ELSE refresh_hint END, \
         bundle_updated_at = CASE WHEN $6 = 1 THEN $5 ELSE bundle_updated_at END \
         WHERE trust_domain = $1",
    )
    .bind(r.trust_domain)
    .bind(r.bundle_endpoint_url)
    .bind(r.profile)
    .bind(r.endpoint_spiffe_id)
    .bind(r.updated_at)
    .bind(i64::from(replace_bundle))
    .bind(r.bundle)
    .bind(r.sequence)
    .bind(r.refresh_hint)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
