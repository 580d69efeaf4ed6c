//! The store: every SQL statement Tessera runs lives under this module.
//!
//! One sqlx `Any` pool serves SQLite (default: one file, WAL, synchronous=FULL)
//! and PostgreSQL (several CA replicas). Times are unix seconds in BIGINT and
//! booleans BIGINT 0/1, the subset the `Any` driver handles on both.
//!
//! Architecture invariants:
//! - every write transaction appends its audit records in the same transaction,
//!   so a change without its audit record cannot be committed;
//! - audit appends are serialised (an in-process mutex, plus a PostgreSQL
//!   advisory lock across replicas), so the hash chain never forks;
//! - a certificate row is durable before the certificate leaves the server
//!   ([`ledger`] batches the commits).

mod cas;
mod leases;
pub mod ledger;
mod nodes;
pub use cas::REASON_CA_COMPROMISE;
pub mod webhooks;
pub use nodes::NodeRow;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::sync::Arc;
use std::time::Duration;
use tessera_core::api::{
    self, AuditRecord, CaState, Denial, DenialReason, DenialRecord, RevocationEvent,
    RevocationReason, Role,
};
use tessera_core::audit;
use tessera_core::time::{parse_rfc3339, rfc3339};
use tokio::sync::{Mutex, watch};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration {0} failed: {1}")]
    Migration(&'static str, sqlx::Error),
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A precondition of the write no longer held (token used, entry gone, ...).
    #[error("{0}")]
    Precondition(String),
    /// The database URL is not sqlite: or postgres:.
    #[error("unsupported database URL (use sqlite://PATH or postgres://...)")]
    BadUrl,
    /// The ledger writer has stopped.
    #[error("ledger writer stopped")]
    LedgerClosed,
    /// A stored value is not one this version writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Reads a CA state column; a name this version never writes is corruption.
pub(crate) fn ca_state_at(r: &sqlx::any::AnyRow, i: usize) -> Result<CaState, StoreError> {
    let s: String = r.get(i);
    CaState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown CA state {s:?}")))
}

/// Revokes the live (unexpired, unrevoked) certificates `by` selects inside
/// `tx`: marks them, appends them to the revocation feed and returns (serials,
/// feed version after, audit records to append).
async fn revoke_live_in_tx(
    tx: &mut Tx,
    by: cas::LiveBy,
    reason: i64,
    now: i64,
    actor: &str,
) -> Result<(Vec<String>, i64, Vec<AuditEntry>), StoreError> {
    let (column, value) = match by {
        cas::LiveBy::Serial(v) => ("serial", v),
        cas::LiveBy::SpiffeId(v) => ("spiffe_id", v),
        cas::LiveBy::Entry(v) => ("entry_id", v),
        cas::LiveBy::Ca(v) => ("ca_id", v),
        cas::LiveBy::Node(v) => ("node_spiffe_id", v),
    };
    // `column` is one of the constants above, never input.
    let sql = format!(
        "SELECT serial, spiffe_id, ca_id, not_after FROM certificates \
         WHERE {column} = $1 AND revoked_at IS NULL AND not_after > $2 ORDER BY serial"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    let mut version: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM revocations")
        .fetch_one(&mut **tx)
        .await?
        .get(0);
    let mut revoked = Vec::with_capacity(rows.len());
    let mut audits = Vec::with_capacity(rows.len());
    for r in &rows {
        let s: String = r.get(0);
        let sid: String = r.get(1);
        let ca: String = r.get(2);
        let not_after: i64 = r.get(3);
        version += 1;
        sqlx::query(
            "UPDATE certificates SET revoked_at = $2, revocation_reason = $3 WHERE serial = $1",
        )
        .bind(s.clone())
        .bind(now)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO revocations (version, serial, spiffe_id, ca_id, reason, revoked_at, not_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(version)
        .bind(s.clone())
        .bind(sid.clone())
        .bind(ca)
        .bind(reason)
        .bind(now)
        .bind(not_after)
        .execute(&mut **tx)
        .await?;
        audits.push(AuditEntry {
            actor: actor.to_owned(),
            action: "cert.revoke",
            target: s.clone(),
            details: serde_json::json!({"spiffe_id": sid, "reason": reason, "version": version}),
        });
        revoked.push(s);
    }
    Ok((revoked, version, audits))
}

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, one file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

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

/// A CA generation as stored.
#[derive(Debug, Clone)]
pub struct CaRow {
    /// ID.
    pub id: String,
    /// Where the generation is in its life.
    pub state: CaState,
    /// `root` or `intermediate`.
    pub kind: String,
    /// Key algorithm name.
    pub key_algorithm: String,
    /// CA certificate PEM (absent while pending).
    pub cert_pem: Option<String>,
    /// Upstream chain PEM (intermediates above this CA).
    pub upstream_chain_pem: String,
    /// Trust anchors PEM for an intermediate (the operator's root); empty for a root.
    pub bundle_pem: String,
    /// Sealed private key.
    pub key_sealed: Vec<u8>,
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
    /// When it was prepared (published), unix seconds; 0 if never.
    pub prepared_at: i64,
    /// When it became active; 0 if never.
    pub activated_at: i64,
    /// When it stopped signing; 0 if it has not.
    pub retired_at: i64,
    /// When it left the bundle (removed or revoked); 0 if it has not.
    pub ended_at: i64,
}

/// A registration entry as stored.
pub type EntryRow = api::Entry;

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

/// A certificate row as read back.
#[derive(Debug, Clone)]
pub struct CertRow {
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
    /// Its hash, hex.
    pub attestation_hash: String,
    /// DER.
    pub der: Vec<u8>,
    /// Revocation time.
    pub revoked_at: Option<i64>,
    /// Revocation reason code.
    pub revocation_reason: Option<i64>,
    /// The node whose agent attested the workload, if issued through one.
    pub node_spiffe_id: Option<String>,
}

impl CertRow {
    /// The API view of this row (with the certificate PEM if asked).
    pub fn to_api(&self, with_pem: bool) -> api::CertificateRecord {
        api::CertificateRecord {
            serial: self.serial.clone(),
            spiffe_id: self.spiffe_id.clone(),
            entry_id: self.entry_id.clone(),
            ca_id: self.ca_id.clone(),
            not_before: rfc3339(self.not_before),
            not_after: rfc3339(self.not_after),
            revoked_at: self.revoked_at.map(rfc3339),
            revocation_reason: self.revocation_reason.and_then(RevocationReason::from_code),
            attestation_hash: self.attestation_hash.clone(),
            attestation: serde_json::from_str(&self.attestation).unwrap_or(Value::Null),
            requested_by: self.requested_by.clone(),
            node: self.node_spiffe_id.clone(),
            certificate: with_pem.then(|| tessera_core::pem::encode("CERTIFICATE", &self.der)),
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

/// Filters for listing denials; every filter that is set must match.
#[derive(Debug, Clone, Default)]
pub struct DenialFilter {
    /// Only denials at or after this time, unix seconds.
    pub since: Option<i64>,
    /// Only denials reported by this sidecar (the destination), a SPIFFE ID.
    pub reporter: Option<String>,
    /// Only denials of this peer (the source), a SPIFFE ID.
    pub peer_spiffe_id: Option<String>,
    /// Only denials on this listener or upstream.
    pub listener: Option<String>,
    /// Only denials for this reason.
    pub reason: Option<DenialReason>,
    /// At most this many rows.
    pub limit: i64,
}

/// Cut-offs for [`Store::prune`], unix seconds: rows older than these go.
#[derive(Debug, Clone, Copy)]
pub struct PruneBefore {
    /// Certificates and revocations whose notAfter, and join tokens whose
    /// expiry, is before this.
    pub expired: i64,
    /// Denials that happened (`at`) before this.
    pub denials: i64,
}

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

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    write_lock: Arc<Mutex<WriterState>>,
    ledger: ledger::LedgerHandle,
    /// The highest audit seq known committed (local commits, and whatever
    /// [`Store::note_audit_head`] learns from other replicas).
    audit_tip: Arc<watch::Sender<i64>>,
}

const MIGRATIONS_SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_initial",
        include_str!("../../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "0002_denials",
        include_str!("../../../migrations/sqlite/0002_denials.sql"),
    ),
    (
        3,
        "0003_ca_lifecycle",
        include_str!("../../../migrations/sqlite/0003_ca_lifecycle.sql"),
    ),
    (
        4,
        "0004_webhooks",
        include_str!("../../../migrations/sqlite/0004_webhooks.sql"),
    ),
    (
        5,
        "0005_nodes",
        include_str!("../../../migrations/sqlite/0005_nodes.sql"),
    ),
    (
        6,
        "0006_platform_tokens",
        include_str!("../../../migrations/sqlite/0006_platform_tokens.sql"),
    ),
];
const MIGRATIONS_POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "0002_denials",
        include_str!("../../../migrations/postgres/0002_denials.sql"),
    ),
    (
        3,
        "0003_ca_lifecycle",
        include_str!("../../../migrations/postgres/0003_ca_lifecycle.sql"),
    ),
    (
        4,
        "0004_webhooks",
        include_str!("../../../migrations/postgres/0004_webhooks.sql"),
    ),
    (
        5,
        "0005_nodes",
        include_str!("../../../migrations/postgres/0005_nodes.sql"),
    ),
    (
        6,
        "0006_platform_tokens",
        include_str!("../../../migrations/postgres/0006_platform_tokens.sql"),
    ),
];

/// Advisory-lock key serialising audit appends and migrations across replicas.
const PG_LOCK_AUDIT: i64 = 0x7e55_e7a0_0001;
const PG_LOCK_MIGRATE: i64 = 0x7e55_e7a0_0002;

fn canonical(v: &Value) -> String {
    // serde_json's Map is a BTreeMap (no preserve_order feature), so keys are sorted.
    v.to_string()
}

impl Store {
    /// Connects, applies pending migrations and starts the ledger writer.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl);
        };
        let mut opts = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // A ping per acquire would add a round trip to every transaction;
            // broken connections surface as errors and are replaced anyway.
            .test_before_acquire(false);
        if backend == Backend::Sqlite {
            opts = opts.after_connect(|conn, _meta| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA journal_mode=WAL",
                        "PRAGMA synchronous=FULL",
                        "PRAGMA busy_timeout=10000",
                        "PRAGMA foreign_keys=ON",
                        // Reads through a memory map and a larger page cache: the
                        // ledger's index pages stay hot instead of being re-read.
                        "PRAGMA mmap_size=268435456",
                        "PRAGMA cache_size=-16384",
                        // Checkpoints run in the background (`Store::checkpoint`), not
                        // inside a ledger commit; this is only the backstop.
                        "PRAGMA wal_autocheckpoint=16384",
                        "PRAGMA journal_size_limit=67108864",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = opts.connect(url).await?;
        let audit_tip = Arc::new(watch::channel(0).0);
        let write_lock = Arc::new(Mutex::new(WriterState::new(audit_tip.clone())));
        let store_core = StoreCore {
            pool: pool.clone(),
            backend,
            write_lock: write_lock.clone(),
        };
        store_core.migrate().await?;
        let ledger = ledger::spawn(store_core);
        let store = Self {
            pool,
            backend,
            write_lock,
            ledger,
            audit_tip,
        };
        store.note_audit_head(store.audit_head().await?);
        Ok(store)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn core(&self) -> StoreCore {
        StoreCore {
            pool: self.pool.clone(),
            backend: self.backend,
            write_lock: self.write_lock.clone(),
        }
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- meta -------------------------------------------------------------

    /// Reads a metadata value.
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key.to_owned())
            .fetch_optional(&self.pool)
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

    // ---- CAs --------------------------------------------------------------

    /// Inserts a CA generation, audited. An `active` one is refused with
    /// [`StoreError::Precondition`] if another is already active (two replicas
    /// bootstrapping one empty database at once: the first wins).
    pub async fn insert_ca(&self, ca: &CaRow, audit: AuditEntry) -> Result<(), StoreError> {
        let ca = ca.clone();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    if ca.state == CaState::Active
                        && sqlx::query("SELECT 1 FROM cas WHERE state = 'active'")
                            .fetch_optional(&mut **tx)
                            .await?
                            .is_some()
                    {
                        return Err(StoreError::Precondition(
                            "an active CA already exists".into(),
                        ));
                    }
                    cas::insert_ca_in(tx, &ca, tessera_core::now_unix()).await
                })
            })
            .await
    }

    /// All CA generations, newest first.
    pub async fn list_cas(&self) -> Result<Vec<CaRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, state, kind, key_algorithm, cert_pem, upstream_chain_pem, bundle_pem, \
             key_sealed, not_before, not_after, prepared_at, activated_at, retired_at, ended_at \
             FROM cas ORDER BY created_at DESC, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CaRow {
                    id: r.get(0),
                    state: ca_state_at(r, 1)?,
                    kind: r.get(2),
                    key_algorithm: r.get(3),
                    cert_pem: r.get(4),
                    upstream_chain_pem: r.get(5),
                    bundle_pem: r.get(6),
                    key_sealed: r.get(7),
                    not_before: r.get(8),
                    not_after: r.get(9),
                    prepared_at: r.get(10),
                    activated_at: r.get(11),
                    retired_at: r.get(12),
                    ended_at: r.get(13),
                })
            })
            .collect()
    }

    // ---- entries ----------------------------------------------------------

    /// Creates an entry, audited.
    pub async fn create_entry(&self, e: &EntryRow, audit: AuditEntry) -> Result<(), StoreError> {
        let e = e.clone();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO entries (id, spiffe_id, parent_id, ttl_seconds, dns_names, note, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(e.id.clone())
                    .bind(e.spiffe_id.clone())
                    .bind(e.parent_id.clone())
                    .bind(e.ttl_seconds as i64)
                    .bind(serde_json::to_string(&e.dns_names).unwrap_or_default())
                    .bind(e.note.clone())
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
                    let r = sqlx::query(
                        "UPDATE entries SET spiffe_id = $2, parent_id = $3, ttl_seconds = $4, dns_names = $5, \
                         note = $6, updated_at = $7 WHERE id = $1",
                    )
                    .bind(e.id.clone())
                    .bind(e.spiffe_id.clone())
                    .bind(e.parent_id.clone())
                    .bind(e.ttl_seconds as i64)
                    .bind(serde_json::to_string(&e.dns_names).unwrap_or_default())
                    .bind(e.note.clone())
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
                    let r = sqlx::query("DELETE FROM entries WHERE id = $1")
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                    if r.rows_affected() != 1 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Reads one entry.
    pub async fn get_entry(&self, id: &str) -> Result<EntryRow, StoreError> {
        let rows = sqlx::query(
            "SELECT id, spiffe_id, parent_id, ttl_seconds, dns_names, note, created_at, updated_at \
             FROM entries WHERE id = $1",
        )
        .bind(id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        self.entries_from_rows(rows)
            .await?
            .pop()
            .ok_or(StoreError::NotFound)
    }

    /// Lists entries, optionally for one SPIFFE ID.
    pub async fn list_entries(&self, spiffe_id: Option<&str>) -> Result<Vec<EntryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, spiffe_id, parent_id, ttl_seconds, dns_names, note, created_at, updated_at \
             FROM entries WHERE (CAST($1 AS TEXT) IS NULL OR spiffe_id = $1) ORDER BY spiffe_id, id LIMIT 10000",
        )
        .bind(spiffe_id.map(str::to_owned))
        .fetch_all(&self.pool)
        .await?;
        self.entries_from_rows(rows).await
    }

    async fn entries_from_rows(&self, rows: Vec<AnyRow>) -> Result<Vec<EntryRow>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get(0);
            let sel = sqlx::query(
                "SELECT selector FROM entry_selectors WHERE entry_id = $1 ORDER BY selector",
            )
            .bind(id.clone())
            .fetch_all(&self.pool)
            .await?;
            let dns: String = r.get(4);
            out.push(api::Entry {
                id,
                spiffe_id: r.get(1),
                parent_id: r.get(2),
                ttl_seconds: r.get::<i64, _>(3) as u64,
                dns_names: serde_json::from_str(&dns).unwrap_or_default(),
                note: r.get(5),
                created_at: rfc3339(r.get(6)),
                updated_at: rfc3339(r.get(7)),
                selectors: sel.iter().map(|s| s.get(0)).collect(),
            });
        }
        Ok(out)
    }

    // ---- join tokens ------------------------------------------------------

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
        let r = sqlx::query(
            "SELECT id, token_hash, entry_id, expires_at, used_at, created_at FROM join_tokens WHERE id = $1",
        )
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
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
        let id = id.to_owned();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    let r = sqlx::query("DELETE FROM join_tokens WHERE id = $1")
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                    if r.rows_affected() != 1 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                })
            })
            .await
    }

    // ---- certificates -----------------------------------------------------

    /// Records a certificate durably (batched with others), checking the
    /// preconditions in the same transaction. Returns once committed.
    pub async fn record_certificate(
        &self,
        cert: NewCert,
        preconditions: Vec<ledger::Precondition>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.ledger.submit(cert, preconditions, audit).await
    }

    /// Reads one certificate by serial.
    pub async fn get_cert(&self, serial: &str) -> Result<CertRow, StoreError> {
        let r = sqlx::query(CERT_SELECT_BY_SERIAL)
            .bind(serial.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(cert_row(&r))
    }

    /// Lists certificates, newest first.
    pub async fn list_certs(&self, f: &CertFilter, now: i64) -> Result<Vec<CertRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, spiffe_id, entry_id, ca_id, not_before, not_after, requested_by, attestation, \
             attestation_hash, cert_der, revoked_at, revocation_reason, node_spiffe_id FROM certificates WHERE \
             (CAST($1 AS TEXT) IS NULL OR spiffe_id = $1) AND \
             (CAST($2 AS BIGINT) IS NULL OR (not_after <= $2 AND not_after > $3)) AND \
             (CAST($4 AS BIGINT) IS NULL OR ($4 = 1 AND revoked_at IS NOT NULL) OR ($4 = 0 AND revoked_at IS NULL)) AND \
             (CAST($5 AS TEXT) IS NULL OR attestation_hash = $5) \
             ORDER BY created_at DESC, serial LIMIT $6",
        )
        .bind(f.spiffe_id.clone())
        .bind(f.expiring_within.map(|w| now + w))
        .bind(now)
        .bind(f.revoked.map(|b| b as i64))
        .bind(f.attestation_hash.clone())
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(cert_row).collect())
    }

    // ---- revocation -------------------------------------------------------

    /// Revokes the live (unexpired, unrevoked) certificates selected by exactly
    /// one of serial / SPIFFE ID / entry ID, audited. Returns the serials revoked
    /// now and the feed version after the change.
    pub async fn revoke(
        &self,
        serial: Option<String>,
        spiffe_id: Option<String>,
        entry_id: Option<String>,
        reason: i64,
        now: i64,
        actor: &str,
    ) -> Result<(Vec<String>, i64), StoreError> {
        let actor = actor.to_owned();
        let core = self.core();
        let mut state = core.write_lock.lock().await;
        let mut tx = core.begin_write().await?;
        if core.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_LOCK_AUDIT)
                .execute(&mut *tx)
                .await?;
        }
        let by = match (serial, spiffe_id, entry_id) {
            (Some(s), _, _) => cas::LiveBy::Serial(s),
            (_, Some(s), _) => cas::LiveBy::SpiffeId(s),
            (_, _, Some(e)) => cas::LiveBy::Entry(e),
            _ => return Ok((vec![], 0)),
        };
        let (revoked, version, audits) =
            revoke_live_in_tx(&mut tx, by, reason, now, &actor).await?;
        let head = append_audit(&mut tx, core.backend, &audits, now).await?;
        tx.commit().await?;
        state.committed(core.backend, head);
        Ok((revoked, version))
    }

    /// The revocation-feed version (highest version recorded).
    pub async fn revocation_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COALESCE(MAX(version), 0) FROM revocations")
                .fetch_one(&self.pool)
                .await?
                .get(0),
        )
    }

    /// Revocations after `since`, oldest first, at most `limit`.
    pub async fn revocations_since(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<RevocationEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, serial, spiffe_id, ca_id, reason, revoked_at, not_after FROM revocations \
             WHERE version > $1 ORDER BY version LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RevocationEvent {
                version: r.get(0),
                serial: r.get(1),
                spiffe_id: r.get(2),
                ca_id: r.get(3),
                reason: RevocationReason::from_code(r.get(4)).unwrap_or_default(),
                revoked_at: r.get(5),
                not_after: r.get(6),
            })
            .collect())
    }

    /// Unexpired revoked certificates of one CA: (serial, revoked_at, reason).
    pub async fn crl_entries(
        &self,
        ca_id: &str,
        now: i64,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, COALESCE(revocation_reason, 0) FROM certificates \
             WHERE ca_id = $1 AND revoked_at IS NOT NULL AND not_after > $2 ORDER BY serial",
        )
        .bind(ca_id.to_owned())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    // ---- API credentials --------------------------------------------------

    /// Stores an API credential, audited. A certificate credential whose SPIFFE ID
    /// already has one is refused with [`StoreError::Precondition`] (checked under
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
                        return Err(StoreError::Precondition("a credential for this SPIFFE ID exists".into()));
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
        let r = sqlx::query(cred_select!("WHERE spiffe_id = $1"))
            .bind(spiffe_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().and_then(cred_row))
    }

    /// Finds a credential by ID.
    pub async fn credential(&self, id: &str) -> Result<Option<CredentialRow>, StoreError> {
        let r = sqlx::query(cred_select!("WHERE id = $1"))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().and_then(cred_row))
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
        let id = id.to_owned();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    let r = sqlx::query("UPDATE api_credentials SET disabled = 1 WHERE id = $1")
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                    if r.rows_affected() != 1 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                })
            })
            .await
    }

    // ---- audit ------------------------------------------------------------

    /// Appends audit records on their own (for actions that change nothing else).
    pub async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        self.core()
            .write(entries, |_tx| Box::pin(async { Ok(()) }))
            .await
    }

    /// Audit records with seq > `after`, at most `limit`, in order.
    pub async fn audit_list(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, details, prev_hash, hash FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditRecord {
                seq: r.get(0),
                at: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                details: r.get(5),
                prev_hash: r.get(6),
                hash: r.get(7),
            })
            .collect())
    }

    // ---- denials -----------------------------------------------------------

    /// Stores a batch of denials reported by `reporter` (the sidecar's SPIFFE ID,
    /// from its credentials), received at `received_at`. One multi-row INSERT
    /// per [`MAX_DENIALS_PER_INSERT`] rows, all in one transaction. Not audited:
    /// denials are telemetry, and their volume would swamp the audit log.
    /// Returns the number of rows stored.
    pub async fn record_denials(
        &self,
        reporter: &str,
        denials: &[Denial],
        received_at: i64,
    ) -> Result<u64, StoreError> {
        if denials.is_empty() {
            return Ok(0);
        }
        let core = self.core();
        // SQLite has one writer: queue behind the ledger in-process instead of
        // contending for the database lock (busy_timeout backs off by sleeping).
        // PostgreSQL inserts need no serialisation and no advisory lock.
        let _guard = match core.backend {
            Backend::Sqlite => Some(core.write_lock.lock().await),
            Backend::Postgres => None,
        };
        let mut tx = core.begin_write().await?;
        let mut n = 0;
        for chunk in denials.chunks(MAX_DENIALS_PER_INSERT) {
            let sql = format!("{DENIAL_INSERT} VALUES {}", placeholders(chunk.len(), 7, 0));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in chunk {
                q = q
                    .bind(d.at)
                    .bind(reporter.to_owned())
                    .bind(d.listener.clone())
                    .bind(d.peer_addr.clone())
                    .bind(d.peer_spiffe_id.clone())
                    .bind(d.reason.as_str().to_owned())
                    .bind(received_at);
            }
            n += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Denials matching `f`, newest first (by `at`, then by arrival).
    pub async fn list_denials(&self, f: &DenialFilter) -> Result<Vec<DenialRecord>, StoreError> {
        // `since` is always bound (no `IS NULL OR`), so SQLite walks the `at`
        // index as a range instead of scanning it whole.
        let rows = sqlx::query(
            "SELECT id, at, reporter, listener, peer_addr, peer_spiffe_id, reason FROM denials WHERE \
             at >= $1 AND \
             (CAST($2 AS TEXT) IS NULL OR reporter = $2) AND \
             (CAST($3 AS TEXT) IS NULL OR peer_spiffe_id = $3) AND \
             (CAST($4 AS TEXT) IS NULL OR listener = $4) AND \
             (CAST($5 AS TEXT) IS NULL OR reason = $5) \
             ORDER BY at DESC, id DESC LIMIT $6",
        )
        .bind(f.since.unwrap_or(i64::MIN))
        .bind(f.reporter.clone())
        .bind(f.peer_spiffe_id.clone())
        .bind(f.listener.clone())
        .bind(f.reason.map(|r| r.as_str().to_owned()))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let reason: String = r.get(6);
                Some(DenialRecord {
                    id: r.get(0),
                    at: r.get(1),
                    reporter: r.get(2),
                    listener: r.get(3),
                    peer_addr: r.get(4),
                    peer_spiffe_id: r.get(5),
                    reason: DenialReason::ALL
                        .into_iter()
                        .find(|k| k.as_str() == reason)?,
                })
            })
            .collect())
    }

    // ---- pruning ----------------------------------------------------------

    /// Deletes, oldest first, at most `batch` rows from each of: certificates
    /// and revocations that expired before `before.expired`, join tokens that
    /// expired before it (used ones included), and denials that happened before
    /// `before.denials`. Returns rows removed.
    pub async fn prune(&self, before: PruneBefore, batch: i64) -> Result<u64, StoreError> {
        let core = self.core();
        let _guard = core.write_lock.lock().await;
        let mut tx = core.begin_write().await?;
        let mut n = 0;
        for (sql, cutoff) in [
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
        ] {
            n += sqlx::query(sql)
                .bind(cutoff)
                .bind(batch)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Copies committed WAL pages into the SQLite database file without blocking
    /// writers (PASSIVE), so commits never pay for it. No-op on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

const CERT_SELECT_BY_SERIAL: &str = "SELECT serial, spiffe_id, entry_id, ca_id, not_before, not_after, requested_by, \
     attestation, attestation_hash, cert_der, revoked_at, revocation_reason, node_spiffe_id FROM certificates WHERE serial = $1";

macro_rules! cred_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, kind, name, role, spiffe_id, token_hash, expires_at, disabled FROM api_credentials ",
            $tail
        )
    };
}
use cred_select;

fn cert_row(r: &AnyRow) -> CertRow {
    CertRow {
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
        revoked_at: r.get(10),
        revocation_reason: r.get(11),
        node_spiffe_id: r.get(12),
    }
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

type Tx = sqlx::Transaction<'static, sqlx::Any>;

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

/// Appends audit records inside `tx`, chaining each to the one before.
/// The caller holds the write lock (and, on PostgreSQL, this takes the advisory lock).
/// Returns the new chain head, for [`WriterState::committed`] once the
/// transaction commits.
async fn append_audit(
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
                .map_err(|_| StoreError::Precondition("audit chain head is corrupt".into()))?;
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

/// The audit-log INSERT, before `VALUES`.
pub(crate) const AUDIT_INSERT: &str =
    "INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, hash)";

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds audit rows (8 values each) chained from `head`, advancing `head`.
pub(crate) fn bind_audit<'q>(
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

/// Most rows in one multi-row INSERT (keeps bind counts far below both backends' limits).
pub(crate) const MAX_ROWS_PER_INSERT: usize = 64;

/// Most denials in one multi-row INSERT: a whole report (at most 1000) is one
/// statement; 7 values a row stays far below SQLite's 32766 and PostgreSQL's
/// 65535 bound parameters.
pub const MAX_DENIALS_PER_INSERT: usize = 1000;

/// The denials INSERT, before `VALUES` (7 values a row).
const DENIAL_INSERT: &str =
    "INSERT INTO denials (at, reporter, listener, peer_addr, peer_spiffe_id, reason, received_at)";

/// `($k+1, $k+2, ..), ..` for `rows` rows of `cols` values after `k = offset`
/// earlier parameters. Only numbered placeholders are generated: values are
/// always bound, never formatted in.
pub(crate) fn placeholders(rows: usize, cols: usize, offset: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(offset + r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

/// The parts of the store the ledger writer and write helpers need.
#[derive(Clone)]
pub(crate) struct StoreCore {
    pool: AnyPool,
    backend: Backend,
    write_lock: Arc<Mutex<WriterState>>,
}

/// What the single writer knows, guarded by the write lock. The chain head and
/// entry set are only used on SQLite, where this process is the only writer;
/// PostgreSQL replicas always read.
pub(crate) struct WriterState {
    /// Told the seq of every audit record this process commits (wakes event streams).
    audit_tip: Arc<watch::Sender<i64>>,
    /// The audit chain's head (seq, hash) after the last commit.
    audit_head: Option<(i64, [u8; 32])>,
    /// Entries seen to exist since the last entry-changing write.
    verified_entries: std::collections::HashSet<String>,
    /// CA generations seen able to sign (not revoked) since the last write.
    usable_cas: std::collections::HashSet<String>,
}

impl WriterState {
    fn new(audit_tip: Arc<watch::Sender<i64>>) -> Self {
        Self {
            audit_tip,
            audit_head: None,
            verified_entries: Default::default(),
            usable_cas: Default::default(),
        }
    }

    /// Forgets cached existence checks; every non-ledger write calls this.
    fn clear_verified(&mut self) {
        self.verified_entries.clear();
        self.usable_cas.clear();
    }

    /// Records the chain head after a commit (cached on SQLite only) and
    /// announces its seq to event streams.
    fn committed(&mut self, backend: Backend, head: Option<(i64, [u8; 32])>) {
        if let Some((seq, _)) = head {
            raise(&self.audit_tip, seq);
        }
        if backend == Backend::Sqlite && head.is_some() {
            self.audit_head = head;
        }
    }
}

type WriteFn = Box<
    dyn for<'t> FnOnce(
            &'t mut Tx,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 't>,
        > + Send,
>;

impl StoreCore {
    /// Runs `f` and appends `audit` in one transaction under the write lock.
    async fn write<F>(&self, audit: Vec<AuditEntry>, f: F) -> Result<(), StoreError>
    where
        F: for<'t> FnOnce(
                &'t mut Tx,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 't>,
            > + Send
            + 'static,
    {
        let f: WriteFn = Box::new(f);
        let mut state = self.write_lock.lock().await;
        // Entries and CAs may change here: forget what the ledger saw.
        state.clear_verified();
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Serialises check-then-write sequences (and the audit chain) across replicas.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_LOCK_AUDIT)
                .execute(&mut *tx)
                .await?;
        }
        f(&mut tx).await?;
        let head = append_audit(&mut tx, self.backend, &audit, tessera_core::now_unix()).await?;
        tx.commit().await?;
        state.committed(self.backend, head);
        Ok(())
    }

    /// Begins a write transaction. SQLite: `BEGIN IMMEDIATE`, so the database
    /// write lock is taken up front (waiting up to busy_timeout) instead of a
    /// read snapshot that could fail to upgrade when another writer commits.
    pub(crate) async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(PG_LOCK_MIGRATE)
                .execute(&mut *conn)
                .await?;
        }
        let result = self.migrate_locked(&mut conn).await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(PG_LOCK_MIGRATE)
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    async fn migrate_locked(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        let done: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let list = match self.backend {
            Backend::Sqlite => MIGRATIONS_SQLITE,
            Backend::Postgres => MIGRATIONS_POSTGRES,
        };
        for (version, name, sql) in list {
            if done.contains(version) {
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(*sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::Migration(name, e))?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(*version)
            .bind((*name).to_owned())
            .bind(tessera_core::now_unix())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Raises a watched high-water mark, waking receivers only if it moved.
fn raise(tip: &watch::Sender<i64>, seq: i64) {
    tip.send_if_modified(|cur| {
        if seq > *cur {
            *cur = seq;
            true
        } else {
            false
        }
    });
}
