//! CA generations over time: prepare → active → retired → removed, the
//! emergency path to revoked, the schedule that drives rotation (one replica
//! at a time, by lease), and picking up transitions other replicas made.
//!
//! Propagation before use: a generation is published in the bundle when it is
//! prepared, and activation is refused until it has been published for
//! `rotation.min_overlap_seconds`; followers learn of bundle changes through
//! the revocation feed's `bundle_sequence` within seconds.

use super::revocation::build_bundle;
use super::{Authority, AuthorityError, Principal, Result, not_found, sha256_hex};
use crate::ca::{self, KeyAlgorithm, SigningCa};
use crate::config::Config;
use crate::keystore::Kek;
use crate::store::{CaRow, Refusal, Store, StoreError};
use rustls::pki_types::CertificateDer;
use serde_json::json;
use std::sync::Arc;
use tessera_core::api::{self, CaState};
use tessera_core::time::rfc3339;
use tessera_core::{SpiffeId, TrustDomain, now_unix, pem};
use tokio::sync::watch;

/// What the TLS layer redoes on a CA change (see [`Authority::on_ca_change`]).
pub type CaHook = Box<dyn Fn(&Authority) + Send + Sync>;

/// The lease name for the rotation schedule.
const SCHEDULE_LEASE: &str = "ca-schedule";
/// Meta key: a prepared generation an operator asked to activate as soon as
/// the overlap allows (`POST /v1/ca/rotate`); survives a replica's death.
const ROTATE_REQUESTED: &str = "ca.rotate_requested";

/// What this replica's schedule last did.
#[derive(Debug, Clone, Default)]
pub struct ScheduleStatus {
    /// When this replica last ran the schedule while holding the lease.
    pub last_run: i64,
    /// When this replica last saw any replica make progress (lease held by someone).
    pub last_seen: i64,
    /// Why the schedule cannot proceed alone, if it cannot.
    pub stalled: Option<String>,
}

/// Certificates of generations revoked recently enough that leaves they
/// signed may still be alive. The API's TLS layer accepts client certificates
/// chaining to them so those holders can re-issue; the principal check then
/// admits only a ledger-exact certificate revoked for cACompromise, and only
/// for renewal.
pub(super) fn reissue_anchors(
    cas: &[CaRow],
    cfg: &Config,
    now: i64,
) -> Vec<CertificateDer<'static>> {
    cas.iter()
        .filter(|c| c.state == CaState::Revoked && c.ended_at + cfg.issuance.max_ttl_seconds > now)
        .filter_map(CaRow::certificate)
        .collect()
}

/// The generation that signs the server's own TLS certificate: the oldest one
/// still published that can sign (the retired one during an overlap, else the
/// active one). Clients holding an older bundle file (an operator's CLI, say)
/// keep reaching the server until that generation leaves the bundle.
pub(super) fn server_signer(
    kek: &crate::keystore::Kek,
    cas: &[CaRow],
    active: &Arc<crate::ca::SigningCa>,
) -> Arc<crate::ca::SigningCa> {
    let now = now_unix();
    cas.iter()
        .filter(|c| {
            c.state == CaState::Retired && c.not_after > now + 60 && !c.key_sealed.is_empty()
        })
        .min_by_key(|c| c.activated_at)
        .and_then(|c| open_ca(kek, c).ok())
        .map(Arc::new)
        .unwrap_or_else(|| active.clone())
}

/// The generations that sign a CRL: every published one whose key is still
/// sealed here (prepared, active, retired), the active one first. A retired
/// generation's leaves stay trusted until they expire, so their revocations
/// need a current CRL too (issue 11, item 5).
pub(super) fn crl_signers(
    kek: &crate::keystore::Kek,
    cas: &[CaRow],
    active: &Arc<crate::ca::SigningCa>,
) -> Vec<Arc<crate::ca::SigningCa>> {
    let mut out = vec![active.clone()];
    for c in cas {
        if c.id != active.id && c.state.is_published() && !c.key_sealed.is_empty() {
            match open_ca(kek, c) {
                Ok(ca) => out.push(Arc::new(ca)),
                Err(e) => tracing::warn!(ca = %c.id, error = %e, "cannot sign this CA's CRL"),
            }
        }
    }
    out
}

fn opt_time(t: i64) -> Option<String> {
    (t > 0).then(|| rfc3339(t))
}

/// Makes the first generation of an empty database: imported from
/// `ca.import_*` files, else a fresh root.
pub(super) async fn bootstrap_ca(
    cfg: &Config,
    td: &TrustDomain,
    store: &Store,
    kek: &Kek,
) -> Result<()> {
    let now = now_unix();
    let (row, what) = if !cfg.ca.import_cert.is_empty() {
        (ca::imported_generation(cfg, kek, now)?, "ca.import")
    } else {
        let ttl = cfg.ca.ttl_seconds;
        let (row, _) = new_root_generation(cfg, td, kek, CaState::Active, now, ttl)?;
        (row, "ca.create")
    };
    let audit = Principal::System.audit(
        what,
        row.id.clone(),
        json!({"kind": row.kind, "key_algorithm": row.key_algorithm, "not_after": row.not_after}),
    );
    match store.insert_ca(&row, audit).await {
        // Another replica bootstrapped the same database first; use its CA.
        Ok(()) | Err(StoreError::Refused(Refusal::ActiveCaExists)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A fresh self-signed root generation in `state` (prepared now, and active
/// now if `state` is active) living `ttl` seconds, its key sealed under the
/// KEK; with its certificate.
fn new_root_generation(
    cfg: &Config,
    td: &TrustDomain,
    kek: &Kek,
    state: CaState,
    now: i64,
    ttl: i64,
) -> Result<(CaRow, CertificateDer<'static>)> {
    let id = ca::random_id()?;
    let alg = KeyAlgorithm::parse(&cfg.ca.key_algorithm).unwrap_or_default();
    let (cert, key_der) = ca::new_root(td, &id, alg, now, ttl)?;
    let loaded = SigningCa::load(&id, cert.clone(), vec![], &key_der)?;
    let row = CaRow {
        state,
        kind: "root".into(),
        key_algorithm: alg.as_str().into(),
        cert_pem: Some(pem::encode("CERTIFICATE", &cert)),
        upstream_chain_pem: String::new(),
        bundle_pem: String::new(),
        key_sealed: kek.seal(&id, &key_der)?,
        not_before: loaded.not_before,
        not_after: loaded.not_after,
        prepared_at: now,
        activated_at: if state == CaState::Active { now } else { 0 },
        retired_at: 0,
        ended_at: 0,
        id,
    };
    Ok((row, cert))
}

/// Opens a CA row's sealed key and loads it for signing.
pub(super) fn open_ca(kek: &Kek, row: &CaRow) -> Result<SigningCa> {
    let cert_pem = row
        .cert_pem
        .as_deref()
        .ok_or(AuthorityError::NotFound("CA certificate"))?;
    let mut certs =
        pem::certs(cert_pem.as_bytes()).map_err(AuthorityError::invalid_as("ca certificate"))?;
    let cert = certs.remove(0);
    let chain = if row.upstream_chain_pem.is_empty() {
        vec![]
    } else {
        pem::certs(row.upstream_chain_pem.as_bytes())
            .map_err(AuthorityError::invalid_as("ca chain"))?
    };
    let key = kek.open(&row.id, &row.key_sealed)?;
    Ok(SigningCa::load(&row.id, cert, chain, &key)?)
}

impl Authority {
    /// Changes whenever the set of generations or their states change (new
    /// bundle, new signing CA). Feed followers watch it; the TLS layer has
    /// already been updated (see [`Self::on_ca_change`]) when it changes.
    pub fn ca_watch(&self) -> watch::Receiver<i64> {
        self.bundle_seq.subscribe()
    }

    /// Registers what the TLS layer must redo on a CA change (new server
    /// certificate, new acceptor); called synchronously by [`Self::reload_cas`]
    /// before feed followers and API callers learn of the change. Once only.
    pub fn on_ca_change(&self, hook: CaHook) {
        let _ = self.ca_hook.set(hook);
    }

    /// Trust anchors for client certificates at the API: the bundle plus
    /// recently revoked generations (see `reissue_anchors`).
    pub fn client_auth_anchors(&self) -> Vec<CertificateDer<'static>> {
        let mut a = self.bundle().anchors.clone();
        if let Ok(r) = self.reissue_anchors.read() {
            a.extend(r.iter().cloned());
        }
        a
    }

    /// Whether generation `ca_id` has been revoked (as last loaded).
    pub(super) fn issuer_revoked(&self, ca_id: &str) -> bool {
        self.ca_states
            .lock()
            .map(|s| {
                s.iter()
                    .any(|(id, st)| id == ca_id && *st == CaState::Revoked)
            })
            .unwrap_or(false)
    }

    /// Reloads every generation from the store and applies it: signing CA,
    /// bundle, CRLs. Wakes watchers if anything changed.
    pub async fn reload_cas(&self) -> Result<()> {
        let cas = self.store.list_cas().await?;
        let active = cas
            .iter()
            .find(|c| c.state == CaState::Active)
            .ok_or(AuthorityError::NotFound("active CA"))?;
        let changed_signer = self.signing_ca().id != active.id;
        if changed_signer {
            let signing = open_ca(&self.kek, active)?;
            *self.signing.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(signing);
        }
        let server = server_signer(&self.kek, &cas, &self.signing_ca());
        *self
            .server_signer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = server;
        *self.crl_signers.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(crl_signers(&self.kek, &cas, &self.signing_ca()));
        let jwt_keys = self.load_jwt_keys(&cas, active).await?;
        let bundle = build_bundle(&cas, &jwt_keys)?;
        let changed_bundle = bundle.digest != self.bundle().digest;
        if changed_bundle {
            let sequence = self.store.bundle_sequence(&bundle.digest).await?;
            let bundle = bundle.numbered(sequence, self.cfg.federation.refresh_hint_seconds);
            *self.bundle.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(bundle);
        }
        *self
            .reissue_anchors
            .write()
            .unwrap_or_else(|p| p.into_inner()) =
            Arc::new(reissue_anchors(&cas, &self.cfg, now_unix()));
        for c in &cas {
            self.metrics.ca_not_after.set(&[&c.id], c.not_after);
            for st in CaState::ALL {
                self.metrics
                    .ca_state
                    .set(&[&c.id, st.as_str()], i64::from(c.state == st));
            }
        }
        let mut states: Vec<(String, CaState)> =
            cas.iter().map(|c| (c.id.clone(), c.state)).collect();
        states.sort();
        let changed_states = {
            let mut cur = self.ca_states.lock().unwrap_or_else(|p| p.into_inner());
            let changed = *cur != states;
            *cur = states;
            changed
        };
        if changed_signer || changed_bundle || changed_states {
            self.refresh_crls().await?;
            self.metrics.ca_transitions.add(&[], 1);
            // Watchers compare values; bump past the bundle sequence so a
            // signer change with an unchanged bundle still wakes them.
            if let Some(hook) = self.ca_hook.get() {
                hook(self);
            }
            self.bundle_seq.send_modify(|v| *v = v.wrapping_add(1));
            tracing::info!(
                active = %self.signing_ca().id,
                bundle_sequence = self.bundle().sequence,
                "CA generations changed"
            );
        }
        Ok(())
    }

    /// Makes sure every published generation has a JWT-SVID key (created and
    /// sealed here on first sight), loads the active one's for signing, and
    /// returns the published public keys for the bundle.
    async fn load_jwt_keys(
        &self,
        cas: &[CaRow],
        active: &CaRow,
    ) -> Result<Vec<tessera_core::jwt::Jwk>> {
        use tessera_core::jwt::JwtSigner;
        let label = |id: &str| format!("jwt:{id}");
        let mut stored = self.store.jwt_keys().await?;
        let missing: Vec<&CaRow> = cas
            .iter()
            .filter(|c| c.state.is_published() && !stored.iter().any(|(id, _, _)| *id == c.id))
            .collect();
        if !missing.is_empty() {
            for c in missing {
                let der = JwtSigner::generate().map_err(jwt_err)?;
                let kid = ca::random_id()?;
                let sealed = self.kek.seal(&label(&c.id), &der)?;
                self.store.insert_jwt_key(&c.id, &kid, &sealed).await?;
            }
            stored = self.store.jwt_keys().await?;
        }
        let mut keys = Vec::new();
        let mut signer = None;
        for (ca_id, kid, sealed) in &stored {
            let Some(c) = cas.iter().find(|c| &c.id == ca_id) else {
                continue;
            };
            if !c.state.is_published() {
                continue;
            }
            let der = self.kek.open(&label(ca_id), sealed)?;
            let s = JwtSigner::load(&der, kid).map_err(jwt_err)?;
            keys.push(s.jwk());
            if c.id == active.id {
                signer = Some(Arc::new(s));
            }
        }
        *self.jwt_signer.write().unwrap_or_else(|p| p.into_inner()) = signer;
        Ok(keys)
    }

    /// Signs a JWT-SVID for a workload's own SPIFFE ID (the one its
    /// certificate proved) with the active generation's JWT key (published
    /// in the bundle since its preparation). It expires no later than
    /// `cert_not_after`, the end of that certificate.
    pub fn issue_jwt_svid(
        &self,
        spiffe_id: &SpiffeId,
        cert_not_after: i64,
        req: &api::JwtSvidRequest,
    ) -> Result<api::JwtSvid> {
        let ttl = check_jwt_request(&req.audience, req.ttl_seconds)?;
        self.sign_jwt_svid(spiffe_id, &req.audience, ttl, cert_not_after)
    }

    /// Signs a JWT-SVID for `spiffe_id` (already authorised and checked by
    /// [`check_jwt_request`]) with the active generation's JWT key, expiring
    /// by `not_after` at the latest (the authenticating certificate's end:
    /// a bearer token must not outlive the credential that obtained it).
    pub(crate) fn sign_jwt_svid(
        &self,
        spiffe_id: &SpiffeId,
        audience: &[String],
        ttl: u64,
        not_after: i64,
    ) -> Result<api::JwtSvid> {
        let signer = self
            .jwt_signer
            .read()
            .ok()
            .and_then(|s| s.clone())
            .ok_or(AuthorityError::NotFound("JWT-SVID signing key"))?;
        let now = now_unix();
        // Never beyond the active generation: its key leaves the bundle with it.
        let exp = (now + ttl as i64)
            .min(self.signing_ca().not_after)
            .min(not_after);
        let token = signer
            .sign_issued(
                self.cfg.oidc_discovery.issuer(),
                spiffe_id.as_str(),
                audience,
                now,
                exp,
            )
            .map_err(jwt_err)?;
        self.metrics.jwt_issued.inc(&[]);
        Ok(api::JwtSvid {
            token,
            spiffe_id: spiffe_id.to_string(),
            expires_at: rfc3339(exp),
            hint: None,
        })
    }

    /// Picks up transitions made by other replicas (a cheap read of id/state).
    pub async fn sync_cas(&self) -> Result<()> {
        let mut states = self.store.ca_states().await?;
        states.sort();
        let same = *self.ca_states.lock().unwrap_or_else(|p| p.into_inner()) == states;
        if !same {
            self.reload_cas().await?;
        }
        Ok(())
    }

    /// Prepares the next generation: a new self-signed root, published in the
    /// bundle at once, signing nothing until activated.
    pub async fn ca_prepare(&self, actor: &Principal) -> Result<()> {
        let active_row = self
            .store
            .list_cas()
            .await?
            .into_iter()
            .find(|c| c.state == CaState::Active)
            .ok_or(AuthorityError::NotFound("active CA"))?;
        if active_row.kind == "intermediate" {
            return Err(AuthorityError::IntermediateSuccessor);
        }
        let now = now_unix();
        // A generation prepared long before its scheduled activation (a
        // standby) gets the waiting time on top, so it starts signing with a
        // full `ca.ttl_seconds` ahead of it.
        let wait = (schedule_times(&active_row, &self.cfg).1 - now).max(0);
        let ttl = self.cfg.ca.ttl_seconds + wait;
        let (row, cert) =
            new_root_generation(&self.cfg, &self.td, &self.kek, CaState::Prepared, now, ttl)?;
        let audit = actor.audit(
            "ca.prepare",
            row.id.clone(),
            json!({"key_algorithm": row.key_algorithm, "not_after": row.not_after,
                            "fingerprint": sha256_hex(&cert)}),
        );
        self.store
            .prepare_ca(&row, audit)
            .await
            .map_err(not_found("CA"))?;
        self.reload_cas().await
    }

    /// Activates a prepared generation (after the minimum overlap); the
    /// previously active one is retired (still published while leaves depend on it).
    pub async fn ca_activate(&self, id: &str, actor: &Principal) -> Result<()> {
        check_ca_id(id)?;
        let now = now_unix();
        let previous = self.signing_ca().id.clone();
        let audit = actor.audit("ca.activate", id.to_owned(), json!({"retires": previous}));
        self.store
            .activate_ca(id, now, now - self.cfg.rotation.min_overlap_seconds, audit)
            .await
            .map_err(not_found("CA"))?;
        let _ = self.store.meta_set(ROTATE_REQUESTED, None).await;
        self.reload_cas().await
    }

    /// Retires a generation for good: a prepared one is cancelled; a retired
    /// one leaves the bundle once no unexpired leaf depends on it. The active
    /// generation is refused.
    pub async fn ca_retire(&self, id: &str, actor: &Principal, action: &'static str) -> Result<()> {
        check_ca_id(id)?;
        let audit = actor.audit(action, id.to_owned(), json!({}));
        self.store
            .remove_ca(id, now_unix(), audit)
            .await
            .map_err(not_found("CA"))?;
        self.reload_cas().await
    }

    /// Prepares a generation now (if none is prepared) and asks the schedule to
    /// activate it as soon as the minimum overlap has elapsed.
    pub async fn ca_rotate(&self, actor: &Principal) -> Result<()> {
        let cas = self.store.list_cas().await?;
        let prepared = match cas.iter().find(|c| c.state == CaState::Prepared) {
            Some(p) => p.id.clone(),
            None => {
                self.ca_prepare(actor).await?;
                self.store
                    .list_cas()
                    .await?
                    .into_iter()
                    .find(|c| c.state == CaState::Prepared)
                    .map(|c| c.id)
                    .ok_or(AuthorityError::NotFound("prepared CA"))?
            }
        };
        self.store
            .meta_set(ROTATE_REQUESTED, Some(&prepared))
            .await?;
        // If the overlap has already elapsed, activate now.
        self.run_schedule_once().await.map(|_| ())
    }

    /// Emergency revocation (key compromise): the generation leaves the bundle
    /// at once, every live leaf it signed is revoked (cACompromise), and if it
    /// was active a fresh generation (or the prepared one) takes over
    /// immediately. Holders of revoked leaves re-issue through renewal.
    pub async fn ca_revoke(&self, id: &str, actor: &Principal) -> Result<api::CaRevokeResponse> {
        check_ca_id(id)?;
        let cas = self.store.list_cas().await?;
        let row = cas
            .iter()
            .find(|c| c.id == id)
            .ok_or(AuthorityError::NotFound("CA"))?;
        let now = now_unix();
        let has_prepared = cas.iter().any(|c| c.state == CaState::Prepared);
        let replacement = if row.state == CaState::Active && !has_prepared && row.kind == "root" {
            let ttl = self.cfg.ca.ttl_seconds;
            let (fresh, _) =
                new_root_generation(&self.cfg, &self.td, &self.kek, CaState::Active, now, ttl)?;
            Some(fresh)
        } else {
            None
        };
        let audit = actor.audit(
            "ca.revoke",
            id.to_owned(),
            json!({"previous_state": row.state, "reason": "cACompromise"}),
        );
        let fresh = replacement.is_some();
        let (revoked, version, replaced_by) = self
            .store
            .revoke_ca(id, replacement, now, &actor.audit_name(), audit)
            .await
            .map_err(not_found("CA"))?;
        self.metrics
            .revoked
            .add(&["ca_compromise"], revoked.len() as u64);
        // Reloading regenerates the CRLs, so followers woken next see them.
        self.reload_cas().await?;
        if !revoked.is_empty() {
            self.announce_revocations(version);
        }
        tracing::warn!(ca = %id, leaves = revoked.len(), replacement = ?replaced_by, "CA revoked");
        let warning = fresh.then(|| {
            "no prepared generation existed: the new CA is in no follower's bundle yet, and the \
             revoked one was their only anchor, so followers cannot authenticate this server until \
             they get the new bundle (`tessera ca bundle`) out of band. Keep a standby generation \
             (rotation.standby = true) so an emergency revocation promotes an already-trusted CA."
                .to_owned()
        });
        Ok(api::CaRevokeResponse {
            warning,
            revoked_ca: id.to_owned(),
            revoked_certificates: revoked.len(),
            replacement: replaced_by,
            version: *self.rev_version.borrow(),
        })
    }

    /// One pass of the rotation schedule, if this replica holds (or can take)
    /// the lease. Returns whether it held the lease.
    pub async fn run_schedule_once(&self) -> Result<bool> {
        let now = now_unix();
        let r = &self.cfg.rotation;
        let now_ms = now.saturating_mul(1000);
        if !self
            .store
            .lease(
                SCHEDULE_LEASE,
                &self.replica_id,
                now_ms,
                r.lease_seconds * 1000,
            )
            .await?
        {
            if let Ok(mut s) = self.schedule.lock() {
                s.last_seen = now;
            }
            return Ok(false);
        }
        let cas = self.store.list_cas().await?;
        let requested = self.store.meta_get(ROTATE_REQUESTED).await?;
        let last_leaf = self.last_leaves(&cas, now).await?;
        let stalled = operator_needed(&cas, &self.cfg, now);
        for (action, id, at) in self.transitions(&cas, requested.as_deref(), &last_leaf) {
            if at > now {
                break;
            }
            let system = Principal::System;
            let result = match action {
                "prepare" => self.ca_prepare(&system).await,
                "activate" => self.ca_activate(id.as_deref().unwrap_or(""), &system).await,
                _ => {
                    self.ca_retire(id.as_deref().unwrap_or(""), &system, "ca.remove")
                        .await
                }
            };
            match result {
                Ok(()) => tracing::info!(action, ca = ?id, "scheduled CA transition done"),
                // An intermediate's successor needs the operator's root
                // (reported as `stalled`, see [`operator_needed`]).
                Err(e @ AuthorityError::IntermediateSuccessor) => {
                    tracing::debug!(why = %e, "scheduled CA transition needs the operator")
                }
                // Another replica (or an operator) got there first: fine.
                Err(AuthorityError::Refused(why)) => {
                    tracing::info!(action, why = %why, "scheduled CA transition skipped")
                }
                Err(e) => return Err(e),
            }
        }
        if let Ok(mut s) = self.schedule.lock() {
            s.last_run = now;
            s.last_seen = now;
            s.stalled = stalled;
        }
        Ok(true)
    }

    /// For each retired generation, when its last live leaf expires (its
    /// removal time), and the dependents gauge for every signing generation.
    async fn last_leaves(&self, cas: &[CaRow], now: i64) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for c in cas
            .iter()
            .filter(|c| matches!(c.state, CaState::Active | CaState::Retired))
        {
            let n = self.store.ca_dependents(&c.id, now).await?;
            self.metrics.ca_dependents.set(&[&c.id], n);
            if c.state == CaState::Retired {
                let last = self.store.ca_last_leaf(&c.id).await?.unwrap_or(0);
                out.push((c.id.clone(), last.max(c.retired_at)));
            }
        }
        Ok(out)
    }

    /// The schedule's pending transitions, earliest first: (action, generation, when).
    fn transitions(
        &self,
        cas: &[CaRow],
        requested: Option<&str>,
        last_leaf: &[(String, i64)],
    ) -> Vec<(&'static str, Option<String>, i64)> {
        let r = &self.cfg.rotation;
        // Retired generations leave the bundle once their last leaf expires.
        let mut out: Vec<(&'static str, Option<String>, i64)> = last_leaf
            .iter()
            .map(|(id, at)| ("remove", Some(id.clone()), *at + 1))
            .collect();
        if let Some(active) = cas.iter().find(|c| c.state == CaState::Active) {
            let (prepare_due, activate_due) = schedule_times(active, &self.cfg);
            match cas.iter().find(|c| c.state == CaState::Prepared) {
                Some(p) => {
                    let due = if requested == Some(p.id.as_str()) {
                        p.prepared_at
                    } else {
                        activate_due
                    };
                    out.push((
                        "activate",
                        Some(p.id.clone()),
                        due.max(p.prepared_at + r.min_overlap_seconds),
                    ));
                }
                None if r.enabled && !cas.iter().any(|c| c.state == CaState::Pending) => {
                    out.push((
                        "prepare",
                        None,
                        if r.standby {
                            active.activated_at.max(active.not_before)
                        } else {
                            prepare_due
                        },
                    ))
                }
                None => {}
            }
        }
        out.sort_by_key(|t| t.2);
        out
    }

    /// The CA server's generations and schedule.
    pub async fn ca_status(&self) -> Result<api::CaStatus> {
        let stale_federations = self.stale_federations().await?;
        let cas = self.store.list_cas().await?;
        let now = now_unix();
        let mut infos = Vec::with_capacity(cas.len());
        for c in &cas {
            let cert = c.certificate();
            let dependents = if matches!(c.state, CaState::Active | CaState::Retired) {
                self.store.ca_dependents(&c.id, now).await?
            } else {
                0
            };
            infos.push(api::CaInfo {
                id: c.id.clone(),
                state: c.state,
                key_algorithm: c.key_algorithm.clone(),
                subject: cert
                    .as_ref()
                    .and_then(|d| tessera_core::svid::parse(d).ok())
                    .map(|x| x.subject().to_string())
                    .unwrap_or_default(),
                not_before: rfc3339(c.not_before),
                not_after: rfc3339(c.not_after),
                kind: c.kind.clone(),
                prepared_at: opt_time(c.prepared_at),
                activated_at: opt_time(c.activated_at),
                retired_at: opt_time(c.retired_at),
                ended_at: opt_time(c.ended_at),
                dependents,
                published: c.state.is_published(),
                name_constrained: cert
                    .as_ref()
                    .and_then(|d| ca::name_constraints(d).ok())
                    .map(|n| n.present),
            });
        }
        let requested = self.store.meta_get(ROTATE_REQUESTED).await?;
        let last_leaf = self.last_leaves(&cas, now).await?;
        let s = self.schedule.lock().map(|s| s.clone()).unwrap_or_default();
        let next = self
            .transitions(&cas, requested.as_deref(), &last_leaf)
            .into_iter()
            .next()
            .map(|(action, ca_id, at)| api::NextTransition {
                action: action.into(),
                ca_id,
                at: rfc3339(at),
            });
        // Stalled: the schedule is enabled but nothing has run it for three
        // intervals, or a due transition is overdue by that much.
        let grace = 3 * self.cfg.rotation.check_interval_seconds as i64 + 5;
        let overdue = next.as_ref().and_then(|n| {
            let at = cas_time(&n.at)?;
            (at + grace < now).then(|| format!("{} of {:?} was due at {}", n.action, n.ca_id, n.at))
        });
        // The operator's part is computed afresh (an import may have just
        // ended it); `s.stalled` is only this replica's last view of it.
        let stalled = operator_needed(&cas, &self.cfg, now)
            .or(overdue)
            .or_else(|| {
                (self.cfg.rotation.enabled && s.last_seen > 0 && s.last_seen + grace < now).then(
                    || {
                        format!(
                            "no replica has run the schedule since {}",
                            rfc3339(s.last_seen)
                        )
                    },
                )
            });
        Ok(api::CaStatus {
            trust_domain: self.td.to_string(),
            cas: infos,
            revocation_version: *self.rev_version.borrow(),
            storage: self.store.backend().as_str().into(),
            schedule: api::ScheduleInfo {
                enabled: self.cfg.rotation.enabled,
                next,
                last_run: opt_time(s.last_run.max(s.last_seen)),
                stalled,
            },
            bundle_sequence: self.bundle().sequence,
            stale_federations,
        })
    }
}

/// Why the schedule cannot go on without the operator, if it cannot: the
/// active generation is an intermediate (only the operator's root can sign its
/// successor, so `ca_prepare` refuses) and the successor is due — either not
/// yet requested (`tessera-ca ca csr`) or its CSR not yet signed and imported.
/// Once a signed successor is `prepared`, the schedule activates it alone.
fn operator_needed(cas: &[CaRow], cfg: &Config, now: i64) -> Option<String> {
    let r = &cfg.rotation;
    let active = cas.iter().find(|c| c.state == CaState::Active)?;
    if !r.enabled
        || active.kind != "intermediate"
        || cas.iter().any(|c| c.state == CaState::Prepared)
    {
        return None;
    }
    let due = if r.standby {
        active.activated_at.max(active.not_before)
    } else {
        schedule_times(active, cfg).0
    };
    if due > now {
        return None;
    }
    let (a, expires) = (&active.id, rfc3339(active.not_after));
    Some(match cas.iter().find(|c| c.state == CaState::Pending) {
        Some(p) => format!(
            "the active CA {a} is an intermediate (expires {expires}) and its successor {p} is \
             pending: the operator must have its CSR signed by the upstream root and run \
             `tessera-ca ca import-signed`; the schedule activates it after the overlap",
            p = p.id
        ),
        None => format!(
            "the active CA {a} is an intermediate (expires {expires}) and its successor was due \
             at {due}: the schedule cannot prepare it, the operator must (`tessera-ca ca csr`, \
             the upstream root signs it, `tessera-ca ca import-signed`); the schedule activates \
             it after the overlap",
            due = rfc3339(due)
        ),
    })
}

/// When the schedule prepares and activates the successor of `active`:
/// fractions of its lifetime, counted from its creation (notBefore is
/// back-dated for clock skew and would pull both earlier).
fn schedule_times(active: &CaRow, cfg: &Config) -> (i64, i64) {
    let start = if active.prepared_at > 0 {
        active.prepared_at.max(active.not_before)
    } else {
        active.not_before
    };
    let life = (active.not_after - start).max(1) as f64;
    let r = &cfg.rotation;
    (
        start + (life * r.prepare_at) as i64,
        start + (life * r.activate_at) as i64,
    )
}

fn cas_time(rfc: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Checks a JWT-SVID request's audiences and lifetime; the lifetime to use.
pub(crate) fn check_jwt_request(audience: &[String], ttl_seconds: Option<u64>) -> Result<u64> {
    if audience.is_empty() || audience.len() > 16 {
        return Err(AuthorityError::Invalid {
            field: "audience",
            reason: "give 1 to 16 audiences".into(),
        });
    }
    if let Some(bad) = audience
        .iter()
        // Characters, not bytes: what the message and the OpenAPI document say.
        .find(|a| a.is_empty() || a.chars().count() > 256 || a.chars().any(|c| c.is_control()))
    {
        return Err(AuthorityError::Invalid {
            field: "audience",
            reason: format!(
                "each audience is 1 to 256 printable characters (got {} characters)",
                bad.chars().count()
            ),
        });
    }
    let ttl = ttl_seconds.unwrap_or(300);
    if !(60..=3600).contains(&ttl) {
        return Err(AuthorityError::Invalid {
            field: "ttl_seconds",
            reason: "must be between 60 and 3600".into(),
        });
    }
    Ok(ttl)
}

fn jwt_err(e: tessera_core::jwt::JwtError) -> AuthorityError {
    AuthorityError::Invalid {
        field: "jwt key",
        reason: e.to_string(),
    }
}

/// A CA ID is 32 hex digits.
fn check_ca_id(id: &str) -> Result<()> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthorityError::Invalid {
            field: "ca_id",
            reason: "must be 32 hex digits".into(),
        });
    }
    Ok(())
}
