//! The certificate ledger's group-commit writer.
//!
//! Issuance must not return a certificate before its row is durable, and one
//! fsync per certificate would cap throughput at the disk's sync rate. Requests
//! queue here; one task takes up to [`MAX_BATCH`] at a time and commits them in
//! a single transaction (rows, preconditions and audit records together), then
//! answers each waiter. Under light load a batch is one row and adds no delay.

use super::audit::{AUDIT_INSERT, bind_audit};
use super::{
    AnyQuery, AuditEntry, Backend, MAX_ROWS_PER_INSERT, NewCert, Refusal, StoreCore, StoreError,
    Tx, WriterState, placeholders,
};
use sqlx::pool::PoolConnection;
use sqlx::{Any, Row};
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};

/// Most certificates committed in one transaction.
const MAX_BATCH: usize = 64;

/// A condition checked inside the commit transaction; if it fails, that one
/// certificate is not recorded and its requester gets the [`Refusal`].
#[derive(Debug, Clone)]
pub enum Precondition {
    /// Mark the join token used; fails if it was already used or has expired.
    ConsumeToken {
        /// Token ID.
        id: String,
        /// Now, unix seconds.
        now: i64,
    },
    /// Record a platform token's `jti` as used; fails if it already is
    /// (a replay). Single-use under races between replicas, like a join
    /// token: the primary key decides inside the commit.
    ConsumeJti {
        /// The issuer's configured name.
        issuer: String,
        /// SHA-256 hex of the `jti`.
        jti_hash: String,
        /// When the row may be pruned (token `exp` plus the largest leeway).
        expires_at: i64,
        /// Now, unix seconds.
        now: i64,
    },
    /// The entry still exists.
    EntryExists(String),
    /// The certificate (being renewed) is not revoked. With
    /// `unless_ca_compromise`, a certificate revoked only because its issuing
    /// CA was revoked (reason cACompromise) also passes: its holder re-issues.
    NotRevoked {
        /// Serial, hex.
        serial: String,
        /// Accept reason cACompromise.
        unless_ca_compromise: bool,
    },
    /// The signing CA generation has not been revoked since the leaf was signed
    /// (an emergency revocation revokes every leaf it finds; this stops one
    /// signed just before from slipping in after).
    IssuerUsable(String),
    /// The node is not banned. With `must_exist`, it must also be recorded
    /// (attested issuance); without, an unknown node passes (its first
    /// join-token attestation).
    NodeNotBanned {
        /// The node's SPIFFE ID.
        spiffe_id: String,
        /// Refuse a node that is not recorded.
        must_exist: bool,
    },
    /// Write: record the node (first attestation) or update its `last_seen`.
    /// Runs after every check and after the token is consumed; it cannot fail
    /// on its own.
    RecordNode {
        /// Node name (`nodes.id`).
        id: String,
        /// The node's SPIFFE ID.
        spiffe_id: String,
        /// How it attested (`join_token`, `platform_token`).
        attestation_type: String,
        /// The selectors it attested with (JSON array), replacing the stored
        /// ones; None keeps them (join tokens, renewals, agent issuance).
        selectors: Option<String>,
        /// Now, unix seconds.
        now: i64,
    },
}

impl Precondition {
    /// The preconditions of an issuance to or through node `spiffe_id`
    /// (`nodes.id` = `name`): it is not banned (and, with `must_exist`,
    /// recorded), then its row is written ([`Precondition::RecordNode`]).
    pub fn node(
        spiffe_id: &str,
        name: &str,
        must_exist: bool,
        attestation_type: &str,
        selectors: Option<String>,
        now: i64,
    ) -> [Precondition; 2] {
        [
            Precondition::NodeNotBanned {
                spiffe_id: spiffe_id.to_owned(),
                must_exist,
            },
            Precondition::RecordNode {
                id: name.to_owned(),
                spiffe_id: spiffe_id.to_owned(),
                attestation_type: attestation_type.to_owned(),
                selectors,
                now,
            },
        ]
    }

    /// 0 for read-only checks, 1 for consuming a token (may fail), 2 for
    /// writes that cannot fail.
    fn phase(&self) -> u8 {
        match self {
            Precondition::ConsumeToken { .. } | Precondition::ConsumeJti { .. } => 1,
            Precondition::RecordNode { .. } => 2,
            _ => 0,
        }
    }
}

struct Job {
    cert: NewCert,
    pre: Vec<Precondition>,
    audit: AuditEntry,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Handle for submitting certificates to the writer.
#[derive(Clone)]
pub(crate) struct LedgerHandle {
    tx: mpsc::Sender<Job>,
}

impl LedgerHandle {
    /// Queues a certificate and waits until it is committed (or refused).
    pub(crate) async fn submit(
        &self,
        cert: NewCert,
        pre: Vec<Precondition>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Job {
                cert,
                pre,
                audit,
                done,
            })
            .await
            .map_err(|_| StoreError::LedgerClosed)?;
        rx.await.map_err(|_| StoreError::LedgerClosed)?
    }
}

pub(crate) fn spawn(core: StoreCore) -> LedgerHandle {
    let (tx, mut rx) = mpsc::channel::<Job>(4096);
    let writer = async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // The connection the one-round-trip path keeps, so its page cache stays warm.
        let mut conn = None;
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            commit(&core, &mut batch, &mut conn).await;
        }
    };
    // The writer is the issuance bottleneck: each of its database round trips
    // must resume at once, not queue behind request tasks signing certificates.
    // So it runs on a thread of its own (the OS schedules it promptly) with a
    // single-threaded runtime; it ends when every handle is dropped.
    let spawned = std::thread::Builder::new()
        .name("tessera-ledger".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(writer),
                Err(e) => tracing::error!(error = %e, "ledger runtime failed to start"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "ledger thread failed to start");
    }
    LedgerHandle { tx }
}

async fn commit(core: &StoreCore, batch: &mut Vec<Job>, conn: &mut Option<PoolConnection<Any>>) {
    let mut outcomes: Vec<Result<(), StoreError>> = Vec::with_capacity(batch.len());
    let result: Result<(), StoreError> = async {
        let mut state = core.write_lock.lock().await;
        if let Some(fast) = commit_sqlite_fast(core, &mut state, batch, conn).await {
            outcomes.extend(batch.iter().map(|_| Ok(())));
            return fast;
        }
        // The advisory lock is taken before the checks, so no replica can
        // delete an entry or consume a token between our check and our commit.
        let mut w = core.serialize(state).await?;
        let now = tessera_core::now_unix();
        // On SQLite every entry change and CA revocation goes through this
        // process's `write`, which clears the set (the `tessera-ca ca`
        // subcommands that may run beside it only add pending or prepared CAs):
        // an entry seen since then exists.
        let mut seen = match core.backend {
            Backend::Sqlite => Seen {
                entries: w.state.verified_entries.clone(),
                cas: w.state.usable_cas.clone(),
            },
            Backend::Postgres => Seen::default(),
        };
        let mut audits = Vec::with_capacity(batch.len());
        let mut accepted = Vec::with_capacity(batch.len());
        for job in batch.iter() {
            match check(&mut w.tx, &job.pre, &mut seen).await? {
                Ok(()) => {
                    accepted.push(&job.cert);
                    audits.push(job.audit.clone());
                    outcomes.push(Ok(()));
                }
                Err(refusal) => outcomes.push(Err(refusal.into())),
            }
        }
        insert(&mut w.tx, &accepted, now).await?;
        let mut state = w.commit_holding(&audits, now).await?;
        if core.backend == Backend::Sqlite {
            state.verified_entries = seen.entries;
            state.usable_cas = seen.cas;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            for (job, outcome) in batch.drain(..).zip(outcomes) {
                let _ = job.done.send(outcome);
            }
        }
        Err(e) => {
            // A database failure, not a refusal: every requester gets an
            // internal error (the text is for the log, never for clients).
            tracing::error!(error = %e, size = batch.len(), "ledger commit failed");
            let msg = e.to_string();
            for job in batch.drain(..) {
                let _ = job.done.send(Err(StoreError::LedgerCommit(msg.clone())));
            }
        }
    }
}

/// What a batch has already seen to hold (one look per entry / CA per batch,
/// or since the last write on SQLite).
#[derive(Default)]
struct Seen {
    entries: HashSet<String>,
    cas: HashSet<String>,
}

async fn check(
    tx: &mut Tx,
    pre: &[Precondition],
    seen: &mut Seen,
) -> Result<Result<(), Refusal>, StoreError> {
    // Read-only checks first, the one that writes (consuming a token) last: jobs
    // share the batch transaction without savepoints, so a failed check must
    // never follow a write it would have to undo.
    let mut ordered: Vec<&Precondition> = pre.iter().collect();
    ordered.sort_by_key(|p| p.phase());
    for p in ordered {
        match p {
            Precondition::ConsumeToken { id, now } => {
                let r = sqlx::query(
                    "UPDATE join_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND expires_at > $2",
                )
                .bind(id.clone())
                .bind(*now)
                .execute(&mut **tx)
                .await?;
                if r.rows_affected() != 1 {
                    return Ok(Err(Refusal::TokenSpent));
                }
            }
            Precondition::ConsumeJti {
                issuer,
                jti_hash,
                expires_at,
                now,
            } => {
                // DO NOTHING rather than an error: on PostgreSQL a failed
                // statement would abort the whole batch transaction.
                let r = sqlx::query(
                    "INSERT INTO jwt_jtis (issuer, jti_hash, expires_at, used_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (issuer, jti_hash) DO NOTHING",
                )
                .bind(issuer.clone())
                .bind(jti_hash.clone())
                .bind(*expires_at)
                .bind(*now)
                .execute(&mut **tx)
                .await?;
                if r.rows_affected() != 1 {
                    return Ok(Err(Refusal::JtiReplayed));
                }
            }
            Precondition::EntryExists(id) => {
                let sql = "SELECT 1 FROM entries WHERE id = $1";
                if !found_once(tx, &mut seen.entries, sql, id).await? {
                    return Ok(Err(Refusal::EntryGone));
                }
            }
            Precondition::NotRevoked {
                serial,
                unless_ca_compromise,
            } => {
                let sql =
                    "SELECT revoked_at, revocation_reason FROM certificates WHERE serial = $1";
                match lookup(tx, sql, serial).await? {
                    Some(row) if row.get::<Option<i64>, _>(0).is_none() => {}
                    Some(row)
                        if *unless_ca_compromise
                            && row.get::<Option<i64>, _>(1)
                                == Some(super::REASON_CA_COMPROMISE) => {}
                    _ => return Ok(Err(Refusal::CertificateRevoked)),
                }
            }
            Precondition::IssuerUsable(ca) => {
                let sql = "SELECT 1 FROM cas WHERE id = $1 AND state IN ('active', 'retired')";
                if !found_once(tx, &mut seen.cas, sql, ca).await? {
                    return Ok(Err(Refusal::IssuerUnusable));
                }
            }
            Precondition::NodeNotBanned {
                spiffe_id,
                must_exist,
            } => {
                match lookup(
                    tx,
                    "SELECT banned FROM nodes WHERE spiffe_id = $1",
                    spiffe_id,
                )
                .await?
                {
                    Some(row) if row.get::<i64, _>(0) != 0 => {
                        return Ok(Err(Refusal::NodeBanned));
                    }
                    None if *must_exist => return Ok(Err(Refusal::NodeUnregistered)),
                    _ => {}
                }
            }
            Precondition::RecordNode {
                id,
                spiffe_id,
                attestation_type,
                selectors,
                now,
            } => {
                sqlx::query(
                    "INSERT INTO nodes (id, spiffe_id, attestation_type, banned, created_at, last_seen, selectors) \
                     VALUES ($1, $2, $3, 0, $4, $4, $5) ON CONFLICT (id) DO UPDATE SET last_seen = $4, \
                     selectors = COALESCE($5, nodes.selectors)",
                )
                .bind(id.clone())
                .bind(spiffe_id.clone())
                .bind(attestation_type.clone())
                .bind(*now)
                .bind(selectors.clone())
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    Ok(Ok(()))
}

/// The row `sql` (a query with the one parameter `$1`) finds for `key`, in
/// the commit transaction.
async fn lookup(
    tx: &mut Tx,
    sql: &'static str,
    key: &str,
) -> Result<Option<sqlx::any::AnyRow>, sqlx::Error> {
    sqlx::query(sql)
        .bind(key.to_owned())
        .fetch_optional(&mut **tx)
        .await
}

/// Whether [`lookup`] finds `key`, asked once per batch: under the write lock
/// nothing deletes entries or changes a CA's state mid-batch, so a key found
/// once (remembered in `seen`) stays found.
async fn found_once(
    tx: &mut Tx,
    seen: &mut HashSet<String>,
    sql: &'static str,
    key: &str,
) -> Result<bool, sqlx::Error> {
    if seen.contains(key) {
        return Ok(true);
    }
    let found = lookup(tx, sql, key).await?.is_some();
    if found {
        seen.insert(key.to_owned());
    }
    Ok(found)
}

/// The certificates INSERT, before `VALUES`.
const CERT_INSERT: &str = "INSERT INTO certificates (serial, spiffe_id, entry_id, ca_id, not_before, not_after, \
     requested_by, attestation, attestation_hash, cert_der, created_at, node_spiffe_id)";

/// Values per row of [`CERT_INSERT`].
const CERT_COLUMNS: usize = 12;

fn bind_certs<'q>(mut q: AnyQuery<'q>, certs: &[&NewCert], now: i64) -> AnyQuery<'q> {
    for c in certs {
        q = q
            .bind(c.serial.clone())
            .bind(c.spiffe_id.clone())
            .bind(c.entry_id.clone())
            .bind(c.ca_id.clone())
            .bind(c.not_before)
            .bind(c.not_after)
            .bind(c.requested_by.clone())
            .bind(c.attestation.clone())
            .bind(c.attestation_hash.clone())
            .bind(c.der.clone())
            .bind(now)
            .bind(c.node_spiffe_id.clone());
    }
    q
}

async fn insert(tx: &mut Tx, certs: &[&NewCert], now: i64) -> Result<(), StoreError> {
    for chunk in certs.chunks(MAX_ROWS_PER_INSERT) {
        let sql = format!(
            "{CERT_INSERT} VALUES {}",
            placeholders(chunk.len(), CERT_COLUMNS, 0)
        );
        bind_certs(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk, now)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// SQLite's common case in one round trip: when every precondition is an entry
/// already known to exist and the chain head is known, the whole batch is one
/// multi-statement query (BEGIN IMMEDIATE; certificates; audit; COMMIT), since
/// each round trip to sqlx's SQLite worker thread costs more than the SQL.
/// Returns None when the batch needs the general path.
async fn commit_sqlite_fast(
    core: &StoreCore,
    state: &mut WriterState,
    batch: &[Job],
    slot: &mut Option<PoolConnection<Any>>,
) -> Option<Result<(), StoreError>> {
    let head = state.audit_head?;
    let simple = batch.len() <= MAX_ROWS_PER_INSERT
        && batch.iter().all(|j| {
            j.pre.iter().all(|p| match p {
                Precondition::EntryExists(id) => state.verified_entries.contains(id),
                Precondition::IssuerUsable(ca) => state.usable_cas.contains(ca),
                _ => false,
            })
        });
    if core.backend != Backend::Sqlite || !simple {
        return None;
    }
    let n = batch.len();
    let now = tessera_core::now_unix();
    let sql = format!(
        "BEGIN IMMEDIATE; {CERT_INSERT} VALUES {}; {AUDIT_INSERT} VALUES {}; COMMIT;",
        placeholders(n, CERT_COLUMNS, 0),
        placeholders(n, 8, n * CERT_COLUMNS)
    );
    let certs: Vec<&NewCert> = batch.iter().map(|j| &j.cert).collect();
    let audits: Vec<AuditEntry> = batch.iter().map(|j| j.audit.clone()).collect();
    let mut new_head = head;
    let q = bind_certs(sqlx::query(sqlx::AssertSqlSafe(sql)), &certs, now);
    let q = bind_audit(q, &mut new_head, &audits, now);
    let mut conn = match slot.take() {
        Some(c) => c,
        None => match core.pool.acquire().await {
            Ok(c) => c,
            Err(e) => return Some(Err(e.into())),
        },
    };
    let result = match q.execute(&mut *conn).await {
        Ok(_) => {
            *slot = Some(conn);
            Ok(())
        }
        Err(e) => {
            // Leave no transaction open on a pooled connection; take a fresh one next time.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(StoreError::from(e))
        }
    };
    match result {
        Ok(()) => {
            state.committed(Backend::Sqlite, Some(new_head));
            Some(Ok(()))
        }
        Err(e) => {
            // Another process (`tessera-ca ca csr`, `ca import-signed`) may have
            // appended to the audit log: our seq then collides (it is the primary
            // key, so the chain cannot fork). Forget the cached head and every
            // cached check; the caller retries through the slow path, which
            // reads and re-checks everything inside its transaction.
            tracing::debug!(error = %e, "ledger fast path failed; retrying with fresh state");
            state.audit_head = None;
            state.clear_verified();
            None
        }
    }
}
