//! Registration entries and their selectors, and the lookups attested
//! issuance needs (by parent, by SPIFFE ID prefix for node sets).

use super::{AnyQuery, AuditEntry, Store, StoreError, Tx, change_one};
use sqlx::Row;
use sqlx::any::AnyRow;
use tessera_core::api;
use tessera_core::time::{parse_rfc3339, rfc3339};

/// A registration entry as stored.
pub type EntryRow = api::Entry;

/// The entry columns [`with_selectors`] wraps, before `WHERE`.
const ENTRY_SELECT: &str = "SELECT id, spiffe_id, parent_id, ttl_seconds, dns_names, note, created_at, updated_at, hint, \
     federates_with FROM entries";

/// `entries` (a query of [`ENTRY_SELECT`] with its filter, order and
/// limit) joined with the entries' selectors: one row per selector (one with
/// a NULL selector for an entry without any), in SPIFFE ID, ID and selector
/// order, so one query reads every entry whole (see
/// `Store::entries_from_rows`).
fn with_selectors(entries: &str) -> String {
    format!(
        "SELECT e.id, e.spiffe_id, e.parent_id, e.ttl_seconds, e.dns_names, e.note, \
         e.created_at, e.updated_at, e.hint, e.federates_with, s.selector FROM ({entries}) AS e \
         LEFT JOIN entry_selectors s ON s.entry_id = e.id \
         ORDER BY e.spiffe_id, e.id, s.selector"
    )
}

impl Store {
    /// Creates an entry, audited.
    pub async fn create_entry(&self, e: &EntryRow, audit: AuditEntry) -> Result<(), StoreError> {
        let e = e.clone();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    bind_fields(
                        sqlx::query(
                            "INSERT INTO entries (id, spiffe_id, parent_id, ttl_seconds, dns_names, note, hint, federates_with, \
                             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        ),
                        &e,
                    )
                    .bind(parse_rfc3339(&e.created_at).unwrap_or(0))
                    .bind(parse_rfc3339(&e.updated_at).unwrap_or(0))
                    .execute(&mut **tx)
                    .await?;
                    insert_selectors(tx, &e.id, &e.selectors).await
                })
            })
            .await
    }

    /// Replaces an entry's fields (ID and creation time kept), audited.
    pub async fn update_entry(&self, e: &EntryRow, audit: AuditEntry) -> Result<(), StoreError> {
        let e = e.clone();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    let r = bind_fields(
                        sqlx::query(
                            "UPDATE entries SET spiffe_id = $2, parent_id = $3, ttl_seconds = $4, dns_names = $5, \
                             note = $6, hint = $7, federates_with = $8, updated_at = $9 WHERE id = $1",
                        ),
                        &e,
                    )
                    .bind(parse_rfc3339(&e.updated_at).unwrap_or(0))
                    .execute(&mut **tx)
                    .await?;
                    if r.rows_affected() != 1 {
                        return Err(StoreError::NotFound);
                    }
                    sqlx::query("DELETE FROM entry_selectors WHERE entry_id = $1")
                        .bind(e.id.clone())
                        .execute(&mut **tx)
                        .await?;
                    insert_selectors(tx, &e.id, &e.selectors).await
                })
            })
            .await
    }

    /// Deletes an entry (and its unused join tokens), audited.
    pub async fn delete_entry(&self, id: &str, audit: AuditEntry) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM entry_selectors WHERE entry_id = $1")
                        .bind(id.clone())
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query("DELETE FROM join_tokens WHERE entry_id = $1 AND used_at IS NULL")
                        .bind(id.clone())
                        .execute(&mut **tx)
                        .await?;
                    change_one(tx, "DELETE FROM entries WHERE id = $1", id).await
                })
            })
            .await
    }

    /// Reads one entry.
    pub async fn get_entry(&self, id: &str) -> Result<EntryRow, StoreError> {
        let id = id.to_owned();
        self.entries_where("WHERE id = $1", |q| q.bind(id))
            .await?
            .pop()
            .ok_or(StoreError::NotFound)
    }

    /// Lists entries, optionally for one SPIFFE ID.
    pub async fn list_entries(&self, spiffe_id: Option<&str>) -> Result<Vec<EntryRow>, StoreError> {
        let spiffe_id = spiffe_id.map(str::to_owned);
        self.entries_where(
            "WHERE (CAST($1 AS TEXT) IS NULL OR spiffe_id = $1) ORDER BY spiffe_id, id LIMIT 10000",
            |q| q.bind(spiffe_id),
        )
        .await
    }

    /// The entries whose parent is `parent_id` (a node's SPIFFE ID), at most
    /// `limit`, by SPIFFE ID.
    pub async fn entries_by_parent(
        &self,
        parent_id: &str,
        limit: i64,
    ) -> Result<Vec<EntryRow>, StoreError> {
        let parent_id = parent_id.to_owned();
        self.entries_where(
            "WHERE parent_id = $1 ORDER BY spiffe_id, id LIMIT $2",
            |q| q.bind(parent_id).bind(limit),
        )
        .await
    }

    /// Entries whose SPIFFE ID starts with `prefix` (node sets), at most `limit`.
    pub async fn entries_by_id_prefix(
        &self,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<EntryRow>, StoreError> {
        // substr, not LIKE: '_' (legal in trust domains) is a LIKE wildcard.
        let (prefix, len) = (prefix.to_owned(), prefix.len() as i64);
        self.entries_where(
            "WHERE substr(spiffe_id, 1, CAST($2 AS INTEGER)) = $1 ORDER BY spiffe_id, id LIMIT $3",
            |q| q.bind(prefix).bind(len).bind(limit),
        )
        .await
    }

    /// The entries an [`ENTRY_SELECT`] query with `filter` (its `WHERE`,
    /// order and limit, with `bind` supplying its parameters) selects, read
    /// whole with their selectors in one query ([`with_selectors`]).
    async fn entries_where(
        &self,
        filter: &str,
        bind: impl FnOnce(AnyQuery<'_>) -> AnyQuery<'_>,
    ) -> Result<Vec<EntryRow>, StoreError> {
        let sql = with_selectors(&format!("{ENTRY_SELECT} {filter}"));
        let rows = bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(&self.pool)
            .await?;
        Ok(Self::entries_from_rows(rows))
    }

    /// The entries in rows of a [`with_selectors`] query (all of an entry's
    /// rows are adjacent). Not async on purpose: it cannot run a query of
    /// its own (it once ran one per entry, up to 10,001 per request).
    fn entries_from_rows(rows: Vec<AnyRow>) -> Vec<EntryRow> {
        let mut out: Vec<EntryRow> = Vec::new();
        for r in rows {
            let id: String = r.get(0);
            let selector: Option<String> = r.get(10);
            if out.last().is_none_or(|e| e.id != id) {
                let dns: String = r.get(4);
                out.push(api::Entry {
                    id,
                    spiffe_id: r.get(1),
                    parent_id: r.get(2),
                    ttl_seconds: r.get::<i64, _>(3) as u64,
                    dns_names: serde_json::from_str(&dns).unwrap_or_default(),
                    note: r.get(5),
                    hint: r.get(8),
                    federates_with: serde_json::from_str(&r.get::<String, _>(9))
                        .unwrap_or_default(),
                    created_at: rfc3339(r.get(6)),
                    updated_at: rfc3339(r.get(7)),
                    selectors: Vec::new(),
                });
            }
            if let (Some(e), Some(sel)) = (out.last_mut(), selector) {
                e.selectors.push(sel);
            }
        }
        out
    }
}

/// Binds `$1..$8`: ID, SPIFFE ID, parent, TTL, DNS names, note, hint,
/// federated trust domains.
fn bind_fields<'q>(q: AnyQuery<'q>, e: &EntryRow) -> AnyQuery<'q> {
    q.bind(e.id.clone())
        .bind(e.spiffe_id.clone())
        .bind(e.parent_id.clone())
        .bind(e.ttl_seconds as i64)
        .bind(serde_json::to_string(&e.dns_names).unwrap_or_default())
        .bind(e.note.clone())
        .bind(e.hint.clone())
        .bind(serde_json::to_string(&e.federates_with).unwrap_or_default())
}

async fn insert_selectors(
    tx: &mut Tx,
    entry_id: &str,
    selectors: &[String],
) -> Result<(), StoreError> {
    for s in selectors {
        sqlx::query("INSERT INTO entry_selectors (entry_id, selector) VALUES ($1, $2)")
            .bind(entry_id.to_owned())
            .bind(s.clone())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
