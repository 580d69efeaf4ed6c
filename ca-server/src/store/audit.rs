//! The hash-chained audit log: appending (inside every write's transaction),
//! reading, and the watched head that wakes event streams.

use super::{AnyQuery, Backend, MAX_ROWS_PER_INSERT, PG_LOCK_AUDIT, Store, StoreError, Tx};
use super::{placeholders, raise};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use tessera_core::api::AuditRecord;
use tessera_core::audit;
use tokio::sync::watch;

/// A change to append to the audit log.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Who acted.
    pub actor: String,
    /// What kind of action (`cert.issue`, `entry.create`, ...).
    pub action: &'static str,
    /// What it acted on.
    pub target: String,
    /// Details as a JSON value (stored canonically: sorted keys, no spaces).
    pub details: Value,
}

/// The audit-log columns, in [`audit_record`]'s order.
pub(super) const AUDIT_COLUMNS: &str = "seq, at, actor, action, target, details, prev_hash, hash";

/// The audit-log INSERT, before `VALUES`.
pub(super) const AUDIT_INSERT: &str =
    "INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, hash)";

/// An audit record from a row of [`AUDIT_COLUMNS`].
pub(super) fn audit_record(r: &AnyRow) -> AuditRecord {
    AuditRecord {
        seq: r.get(0),
        at: r.get(1),
        actor: r.get(2),
        action: r.get(3),
        target: r.get(4),
        details: r.get(5),
        prev_hash: r.get(6),
        hash: r.get(7),
    }
}

fn canonical(v: &Value) -> String {
    // serde_json's Map is a BTreeMap (no preserve_order feature), so keys are sorted.
    v.to_string()
}

impl Store {
    /// Appends audit records on their own (for actions that change nothing else).
    pub async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        self.core()
            .write(entries, |_tx| Box::pin(async { Ok(()) }))
            .await
    }

    /// Audit records with seq > `after`, at most `limit`, in order.
    pub async fn audit_list(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(audit_record).collect())
    }

    /// A watch of the highest audit seq known committed: woken by every local
    /// commit and by [`Store::note_audit_head`] (the poll for other replicas).
    pub fn audit_watch(&self) -> watch::Receiver<i64> {
        self.audit_tip.subscribe()
    }

    /// Records an audit seq seen committed (by a poll of the database), waking
    /// event streams if it is new.
    pub fn note_audit_head(&self, seq: i64) {
        raise(&self.audit_tip, seq);
    }

    /// The highest committed audit seq (0 for an empty log).
    pub async fn audit_head(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM audit_log")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }
}

/// Appends audit records inside `tx`, chaining each to the one before.
/// The caller holds the write lock (and, on PostgreSQL, this takes the advisory lock).
/// Returns the new chain head, for [`super::WriterState::committed`] once the
/// transaction commits.
pub(super) async fn append_audit(
    tx: &mut Tx,
    backend: Backend,
    entries: &[AuditEntry],
    now: i64,
) -> Result<Option<(i64, [u8; 32])>, StoreError> {
    if entries.is_empty() {
        return Ok(None);
    }
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_LOCK_AUDIT)
            .execute(&mut **tx)
            .await?;
    }
    // The head is read inside the transaction, never taken from the cache:
    // on SQLite, `tessera-ca ca csr` / `ca import-signed` may write the same
    // database while the server runs. (Only the ledger's fast path trusts
    // the cached head, and falls back here when another writer moved it.)
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (seq, prev) = match last {
        Some(r) => {
            let h: String = r.get(1);
            let mut p = [0u8; 32];
            hex::decode_to_slice(&h, &mut p)
                .map_err(|_| StoreError::Corrupt("audit chain head is corrupt".into()))?;
            (r.get::<i64, _>(0), p)
        }
        None => (0, [0u8; 32]),
    };
    // One multi-row INSERT per chunk: a round trip per record would dominate a batch.
    let mut head = (seq, prev);
    for chunk in entries.chunks(MAX_ROWS_PER_INSERT) {
        let sql = format!("{AUDIT_INSERT} VALUES {}", placeholders(chunk.len(), 8, 0));
        let q = bind_audit(sqlx::query(sqlx::AssertSqlSafe(sql)), &mut head, chunk, now);
        q.execute(&mut **tx).await?;
    }
    Ok(Some(head))
}

/// Binds audit rows (8 values each) chained from `head`, advancing `head`.
pub(super) fn bind_audit<'q>(
    mut q: AnyQuery<'q>,
    head: &mut (i64, [u8; 32]),
    entries: &[AuditEntry],
    now: i64,
) -> AnyQuery<'q> {
    let (mut seq, mut prev) = *head;
    for e in entries {
        seq += 1;
        let details = canonical(&e.details);
        let h = audit::record_hash(&prev, seq, now, &e.actor, e.action, &e.target, &details);
        q = q
            .bind(seq)
            .bind(now)
            .bind(e.actor.clone())
            .bind(e.action.to_owned())
            .bind(e.target.clone())
            .bind(details)
            .bind(hex::encode(prev))
            .bind(hex::encode(h));
        prev = h;
    }
    *head = (seq, prev);
    q
}
