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
//!   (`ledger` batches the commits);
//! - a precondition that does not hold is a typed [`Refusal`]; every other
//!   failure is the database's, and its text never reaches a client.
//!
//! One submodule per table family: `meta`, `cas` (generations and their
//! transitions), `entries`, `tokens` (join tokens), `certs` (the ledger's
//! rows and `ledger`, its group-commit writer), `revocation` (the feed and
//! CRL entries), `credentials`, `audit`, `denials`, `nodes`, `leases`,
//! `webhooks` (events, webhooks, expiring markers) and `prune`.

mod audit;
mod cas;
mod certs;
mod credentials;
mod denials;
mod entries;
mod federation;
mod leases;
mod ledger;
mod meta;
mod nodes;
mod prune;
mod refusal;
mod revocation;
mod tokens;
mod webhooks;

pub use audit::AuditEntry;
pub use cas::{CaRow, REASON_CA_COMPROMISE};
pub use certs::{CertFilter, CertRow, NewCert};
pub use credentials::CredentialRow;
pub use denials::{DenialFilter, MAX_DENIALS_PER_INSERT};
pub use entries::EntryRow;
pub use federation::{FederationRow, PollOutcome};
pub use ledger::Precondition;
pub use prune::PruneBefore;
pub use refusal::Refusal;
pub use tokens::TokenRow;
pub use webhooks::{DeliveryState, ExpiringCert, WebhookRow};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard, watch};

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
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database URL is not sqlite: or postgres:.
    #[error("unsupported database URL (use sqlite://PATH or postgres://...)")]
    BadUrl,
    /// The ledger writer has stopped.
    #[error("ledger writer stopped")]
    LedgerClosed,
    /// The ledger's batch transaction failed (the database's words, for the log).
    #[error("ledger commit failed: {0}")]
    LedgerCommit(String),
    /// A stored value is not one this version writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Reads of one row: [`StoreError::NotFound`] as `None`.
pub trait OptionalRow<T> {
    /// `Ok(None)` for a row that does not exist.
    fn optional(self) -> Result<Option<T>, StoreError>;
}

impl<T> OptionalRow<T> for Result<T, StoreError> {
    fn optional(self) -> Result<Option<T>, StoreError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
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
    (
        7,
        "0007_entry_hints",
        include_str!("../../../migrations/sqlite/0007_entry_hints.sql"),
    ),
    (
        8,
        "0008_revoked_by_ca",
        include_str!("../../../migrations/sqlite/0008_revoked_by_ca.sql"),
    ),
    (
        9,
        "0009_federation",
        include_str!("../../../migrations/sqlite/0009_federation.sql"),
    ),
    (
        10,
        "0010_entry_federates_with",
        include_str!("../../../migrations/sqlite/0010_entry_federates_with.sql"),
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
    (
        7,
        "0007_entry_hints",
        include_str!("../../../migrations/postgres/0007_entry_hints.sql"),
    ),
    (
        8,
        "0008_revoked_by_ca",
        include_str!("../../../migrations/postgres/0008_revoked_by_ca.sql"),
    ),
    (
        9,
        "0009_federation",
        include_str!("../../../migrations/postgres/0009_federation.sql"),
    ),
    (
        10,
        "0010_entry_federates_with",
        include_str!("../../../migrations/postgres/0010_entry_federates_with.sql"),
    ),
];

/// Advisory-lock key serialising audit appends and migrations across replicas.
const PG_LOCK_AUDIT: i64 = 0x7e55_e7a0_0001;
const PG_LOCK_MIGRATE: i64 = 0x7e55_e7a0_0002;

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

    /// The row `sql` selects with `$1` = `key`, if there is one.
    async fn row_by(
        &self,
        sql: impl Into<String>,
        key: &str,
    ) -> Result<Option<AnyRow>, StoreError> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.into()))
            .bind(key.to_owned())
            .fetch_optional(&self.pool)
            .await?)
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

type Tx = sqlx::Transaction<'static, sqlx::Any>;

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Most rows in one multi-row INSERT (keeps bind counts far below both backends' limits).
pub(crate) const MAX_ROWS_PER_INSERT: usize = 64;

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

    /// Forgets cached existence checks; every write that may change entries
    /// or CA generations calls this.
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

/// A write transaction that holds the write lock and, on PostgreSQL, the
/// advisory lock: check-then-write sequences and the audit chain are
/// serialised across this process and across replicas.
struct Serialized<'a> {
    state: MutexGuard<'a, WriterState>,
    tx: Tx,
    backend: Backend,
}

impl<'a> Serialized<'a> {
    /// Appends `audits` (chained to the head read inside the transaction),
    /// commits, and announces the new head.
    async fn commit(self, audits: &[AuditEntry], now: i64) -> Result<(), StoreError> {
        self.commit_holding(audits, now).await.map(drop)
    }

    /// [`Self::commit`], still holding the write lock afterwards.
    async fn commit_holding(
        mut self,
        audits: &[AuditEntry],
        now: i64,
    ) -> Result<MutexGuard<'a, WriterState>, StoreError> {
        let head = audit::append_audit(&mut self.tx, self.backend, audits, now).await?;
        self.tx.commit().await?;
        self.state.committed(self.backend, head);
        Ok(self.state)
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
    /// Runs `f` and appends `audit` in one serialised transaction; entries
    /// and CAs may change in `f`, so the ledger's cached checks are forgotten.
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
        let mut w = self.serialized().await?;
        w.state.clear_verified();
        f(&mut w.tx).await?;
        w.commit(&audit, tessera_core::now_unix()).await
    }

    /// Runs `sql` (`$1` = `id`) and appends `audit`, as [`Self::write`];
    /// [`StoreError::NotFound`] unless exactly one row changed.
    async fn write_one(
        &self,
        audit: AuditEntry,
        sql: &'static str,
        id: &str,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(vec![audit], move |tx| Box::pin(change_one(tx, sql, id)))
            .await
    }

    /// Takes the write lock and begins a write transaction holding, on
    /// PostgreSQL, the advisory lock.
    async fn serialized(&self) -> Result<Serialized<'_>, StoreError> {
        let state = self.write_lock.lock().await;
        self.serialize(state).await
    }

    /// [`Self::serialized`] for a caller that already holds the write lock.
    async fn serialize<'a>(
        &self,
        state: MutexGuard<'a, WriterState>,
    ) -> Result<Serialized<'a>, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_LOCK_AUDIT)
                .execute(&mut *tx)
                .await?;
        }
        Ok(Serialized {
            state,
            tx,
            backend: self.backend,
        })
    }

    /// SQLite has one writer: writes that need no serialisation on
    /// PostgreSQL still queue behind the ledger in-process there, instead of
    /// contending for the database lock (busy_timeout backs off by sleeping).
    async fn sqlite_turn(&self) -> Option<MutexGuard<'_, WriterState>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        }
    }

    /// Begins a write transaction. SQLite: `BEGIN IMMEDIATE`, so the database
    /// write lock is taken up front (waiting up to busy_timeout) instead of a
    /// read snapshot that could fail to upgrade when another writer commits.
    async fn begin_write(&self) -> Result<Tx, StoreError> {
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

/// Runs `sql` (`$1` = `id`) inside `tx`; [`StoreError::NotFound`] unless
/// exactly one row changed.
async fn change_one(tx: &mut Tx, sql: &'static str, id: String) -> Result<(), StoreError> {
    let r = sqlx::query(sql).bind(id).execute(&mut **tx).await?;
    if r.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// Raises a watched high-water mark, waking receivers only if it moved.
pub(crate) fn raise(tip: &watch::Sender<i64>, seq: i64) {
    tip.send_if_modified(|cur| {
        if seq > *cur {
            *cur = seq;
            true
        } else {
            false
        }
    });
}
