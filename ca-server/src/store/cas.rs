//! CA generations: their rows, their lifecycle transitions and their JWT-SVID
//! keys. Every transition is one transaction whose `WHERE` clause (or read
//! under the write lock) re-checks the state it starts from, so two replicas
//! (or a replica and an operator) racing on the same transition cannot both
//! win, and a replica that dies mid-way leaves either the old or the new state.
//! A transition the state does not allow is a [`Refusal`].

use super::revocation::{LiveBy, revoke_live_in_tx};
use super::{AuditEntry, Refusal, Store, StoreError, Tx};
use rustls::pki_types::CertificateDer;
use sqlx::Row;
use tessera_core::api::CaState;

/// RFC 5280 reason code cACompromise.
pub const REASON_CA_COMPROMISE: i64 = 2;

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

impl CaRow {
    /// The generation's own certificate; None while pending (or unreadable).
    pub fn certificate(&self) -> Option<CertificateDer<'static>> {
        let certs = tessera_core::pem::certs(self.cert_pem.as_deref()?.as_bytes()).ok()?;
        certs.into_iter().next()
    }
}

/// Reads a CA state column; a name this version never writes is corruption.
fn ca_state_at(r: &sqlx::any::AnyRow, i: usize) -> Result<CaState, StoreError> {
    let s: String = r.get(i);
    CaState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown CA state {s:?}")))
}

/// The state of generation `id` inside `tx`, or [`StoreError::NotFound`].
async fn state_in(tx: &mut Tx, id: &str) -> Result<CaState, StoreError> {
    let row = sqlx::query("SELECT state FROM cas WHERE id = $1")
        .bind(id.to_owned())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    ca_state_at(&row, 0)
}

impl Store {
    /// Inserts a CA generation, audited. An `active` one is refused with
    /// [`Refusal::ActiveCaExists`] if another is already active (two replicas
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
                        return Err(Refusal::ActiveCaExists.into());
                    }
                    insert_ca_in(tx, &ca, tessera_core::now_unix()).await
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

    /// Completes a pending intermediate with its signed certificate: it becomes
    /// `active` if no generation is active yet (first start), else `prepared`
    /// (a rotation: it is published now and activated after the overlap).
    /// Returns the state it entered.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete_pending_ca(
        &self,
        id: &str,
        cert_pem: &str,
        upstream_chain_pem: &str,
        bundle_pem: &str,
        not_before: i64,
        not_after: i64,
        audit: AuditEntry,
    ) -> Result<CaState, StoreError> {
        let (id, cert_pem, chain, bundle) = (
            id.to_owned(),
            cert_pem.to_owned(),
            upstream_chain_pem.to_owned(),
            bundle_pem.to_owned(),
        );
        let entered = std::sync::Arc::new(std::sync::Mutex::new(CaState::Prepared));
        let out = entered.clone();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    let now = tessera_core::now_unix();
                    let has_active = sqlx::query("SELECT 1 FROM cas WHERE state = 'active'")
                        .fetch_optional(&mut **tx)
                        .await?
                        .is_some();
                    let state = if has_active {
                        CaState::Prepared
                    } else {
                        CaState::Active
                    };
                    let r = sqlx::query(
                        "UPDATE cas SET state = $8, cert_pem = $2, upstream_chain_pem = $3, \
                         bundle_pem = $4, not_before = $5, not_after = $6, prepared_at = $7, \
                         activated_at = CASE WHEN $8 = 'active' THEN $7 ELSE 0 END \
                         WHERE id = $1 AND state = 'pending'",
                    )
                    .bind(id)
                    .bind(cert_pem)
                    .bind(chain)
                    .bind(bundle)
                    .bind(not_before)
                    .bind(not_after)
                    .bind(now)
                    .bind(state.as_str())
                    .execute(&mut **tx)
                    .await?;
                    if r.rows_affected() != 1 {
                        return Err(Refusal::NoPendingCa.into());
                    }
                    if let Ok(mut e) = entered.lock() {
                        *e = state;
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(out.lock().map(|e| *e).unwrap_or(CaState::Prepared))
    }

    /// Makes a prepared generation the active one; the previously active one
    /// becomes `retired` (still published, no longer signing). Refused unless
    /// the target has been published since `published_by` or earlier (the
    /// enforced minimum overlap).
    pub async fn activate_ca(
        &self,
        id: &str,
        now: i64,
        published_by: i64,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    let row = sqlx::query("SELECT state, prepared_at FROM cas WHERE id = $1")
                        .bind(id.clone())
                        .fetch_optional(&mut **tx)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                    let state = ca_state_at(&row, 0)?;
                    let prepared_at: i64 = row.get(1);
                    if state != CaState::Prepared {
                        return Err(Refusal::NotPrepared { id, state }.into());
                    }
                    if prepared_at > published_by {
                        return Err(Refusal::OverlapNotElapsed {
                            id,
                            published_for: (now - prepared_at).max(0),
                            activate_after: prepared_at + (now - published_by),
                        }
                        .into());
                    }
                    sqlx::query(
                        "UPDATE cas SET state = 'retired', retired_at = $1 WHERE state = 'active'",
                    )
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                    sqlx::query(
                        "UPDATE cas SET state = 'active', activated_at = $2 WHERE id = $1 AND state = 'prepared'",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Takes a generation out of the bundle for good: a prepared or pending one
    /// at once (cancelled), a retired one once no unexpired, unrevoked leaf
    /// depends on it. Its sealed key is erased. The active generation is refused.
    pub async fn remove_ca(&self, id: &str, now: i64, audit: AuditEntry) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    match state_in(tx, &id).await? {
                        // Cancelled: a prepared one leaves the bundle, a pending
                        // one (an unsigned CSR) is never published.
                        CaState::Prepared | CaState::Pending => {}
                        CaState::Retired => {
                            let count = dependents_in(tx, &id, now).await?;
                            if count > 0 {
                                return Err(Refusal::Dependents { id, count }.into());
                            }
                        }
                        CaState::Active => {
                            return Err(Refusal::ActiveCannotRetire.into());
                        }
                        state => return Err(Refusal::CaState { id, state }.into()),
                    }
                    let sql = "UPDATE cas SET state = 'removed', ended_at = $2, key_sealed = $3 \
                               WHERE id = $1";
                    end_generation(tx, sql, &id, now).await
                })
            })
            .await
    }

    /// Emergency revocation of a generation (key compromise), in one
    /// transaction: it leaves the bundle, its key is erased, every live leaf it
    /// signed is revoked with reason cACompromise, and if it was the active one
    /// `replacement` (a fresh generation; without one, the prepared generation)
    /// becomes active at once. Returns the serials revoked, the feed version
    /// after the change and the generation now active if it changed.
    pub async fn revoke_ca(
        &self,
        id: &str,
        replacement: Option<CaRow>,
        now: i64,
        actor: &str,
        audit: AuditEntry,
    ) -> Result<(Vec<String>, i64, Option<String>), StoreError> {
        let core = self.core();
        let mut w = core.serialized().await?;
        w.state.clear_verified();
        let tx = &mut w.tx;
        let current = state_in(tx, id).await?;
        if !current.is_published() {
            return Err(Refusal::CaState {
                id: id.to_owned(),
                state: current,
            }
            .into());
        }
        // The active generation is replaced in the same transaction: by the
        // fresh one given, else by the prepared one (already published).
        let promote = if current == CaState::Active && replacement.is_none() {
            let p: Option<String> =
                sqlx::query("SELECT id FROM cas WHERE state = 'prepared' ORDER BY created_at DESC")
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.get(0));
            match p {
                Some(p) => Some(p),
                None => return Err(Refusal::NoReplacement.into()),
            }
        } else {
            None
        };
        let sql = "UPDATE cas SET state = 'revoked', ended_at = $2, key_sealed = $3, \
                   retired_at = CASE WHEN retired_at = 0 THEN $2 ELSE retired_at END WHERE id = $1";
        end_generation(tx, sql, id, now).await?;
        let mut audits = vec![audit];
        let replaced_by = match (current, replacement, promote) {
            (CaState::Active, Some(r), _) => {
                insert_ca_in(tx, &r, now).await?;
                Some(r.id)
            }
            (CaState::Active, None, Some(p)) => {
                sqlx::query("UPDATE cas SET state = 'active', activated_at = $2 WHERE id = $1")
                    .bind(p.clone())
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                Some(p)
            }
            _ => None,
        };
        if let Some(r) = &replaced_by {
            audits.push(AuditEntry {
                actor: actor.to_owned(),
                action: "ca.activate",
                target: r.clone(),
                details: serde_json::json!({"replaces": id, "emergency": true}),
            });
        }
        let (revoked, version, mut leaf_audits) = revoke_live_in_tx(
            tx,
            LiveBy::Ca(id.to_owned()),
            REASON_CA_COMPROMISE,
            now,
            actor,
        )
        .await?;
        audits.append(&mut leaf_audits);
        w.commit(&audits, now).await?;
        Ok((revoked, version, replaced_by))
    }

    /// Prepares a new generation (published, not yet signing), audited. Refused
    /// if another generation is already prepared, so a racing second scheduler
    /// (or operator) cannot publish two at once.
    pub async fn prepare_ca(&self, ca: &CaRow, audit: AuditEntry) -> Result<(), StoreError> {
        let ca = ca.clone();
        self.core()
            .write(vec![audit], move |tx| {
                Box::pin(async move {
                    if let Some(r) = sqlx::query(
                        "SELECT id, state FROM cas WHERE state IN ('prepared', 'pending')",
                    )
                    .fetch_optional(&mut **tx)
                    .await?
                    {
                        let (id, state): (String, CaState) = (r.get(0), ca_state_at(&r, 1)?);
                        return Err(if state == CaState::Pending {
                            Refusal::AlreadyPending { id }
                        } else {
                            Refusal::AlreadyPrepared { id }
                        }
                        .into());
                    }
                    insert_ca_in(tx, &ca, tessera_core::now_unix()).await
                })
            })
            .await
    }

    /// How many unexpired, unrevoked leaves a generation signed.
    pub async fn ca_dependents(&self, id: &str, now: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query(DEPENDENTS)
            .bind(id.to_owned())
            .bind(now)
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// The latest notAfter among a generation's unrevoked leaves.
    pub async fn ca_last_leaf(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query(
            "SELECT MAX(not_after) FROM certificates WHERE ca_id = $1 AND revoked_at IS NULL",
        )
        .bind(id.to_owned())
        .fetch_one(&self.pool)
        .await?
        .get(0))
    }

    /// Every JWT-SVID signing key: (CA generation, kid, sealed key).
    pub async fn jwt_keys(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        Ok(
            sqlx::query("SELECT ca_id, kid, key_sealed FROM jwt_keys ORDER BY ca_id")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        )
    }

    /// Stores a generation's JWT-SVID key unless it has one already (two
    /// replicas creating one at once: the first wins, both then read it).
    pub async fn insert_jwt_key(
        &self,
        ca_id: &str,
        kid: &str,
        key_sealed: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jwt_keys (ca_id, kid, key_sealed, created_at) \
             SELECT $1, $2, $3, $4 WHERE EXISTS \
             (SELECT 1 FROM cas WHERE id = $1 AND state IN ('prepared', 'active', 'retired')) \
             ON CONFLICT (ca_id) DO NOTHING",
        )
        .bind(ca_id.to_owned())
        .bind(kid.to_owned())
        .bind(key_sealed.to_vec())
        .bind(tessera_core::now_unix())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A cheap fingerprint of every generation's (id, state), to notice
    /// transitions made by other replicas.
    pub async fn ca_states(&self) -> Result<Vec<(String, CaState)>, StoreError> {
        sqlx::query("SELECT id, state FROM cas ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.get(0), ca_state_at(r, 1)?)))
            .collect()
    }
}

/// Takes generation `id` out of the bundle for good with `sql` (`$1` ID,
/// `$2` now, `$3` the empty key that erases the sealed one) and deletes its
/// JWT-SVID key.
async fn end_generation(
    tx: &mut Tx,
    sql: &'static str,
    id: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(sql)
        .bind(id.to_owned())
        .bind(now)
        .bind(Vec::<u8>::new())
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM jwt_keys WHERE ca_id = $1")
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Counts a generation's unexpired, unrevoked leaves (`$1` CA, `$2` now).
const DEPENDENTS: &str =
    "SELECT COUNT(*) FROM certificates WHERE ca_id = $1 AND not_after > $2 AND revoked_at IS NULL";

async fn dependents_in(tx: &mut Tx, id: &str, now: i64) -> Result<i64, StoreError> {
    Ok(sqlx::query(DEPENDENTS)
        .bind(id.to_owned())
        .bind(now)
        .fetch_one(&mut **tx)
        .await?
        .get(0))
}

pub(super) async fn insert_ca_in(tx: &mut Tx, ca: &CaRow, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO cas (id, state, kind, key_algorithm, cert_pem, upstream_chain_pem, \
         bundle_pem, key_sealed, not_before, not_after, created_at, prepared_at, activated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(ca.id.clone())
    .bind(ca.state.as_str())
    .bind(ca.kind.clone())
    .bind(ca.key_algorithm.clone())
    .bind(ca.cert_pem.clone())
    .bind(ca.upstream_chain_pem.clone())
    .bind(ca.bundle_pem.clone())
    .bind(ca.key_sealed.clone())
    .bind(ca.not_before)
    .bind(ca.not_after)
    .bind(now)
    .bind(ca.prepared_at)
    .bind(ca.activated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
