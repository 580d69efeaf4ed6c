//! The registry: registration entries (who may have which SPIFFE ID, under
//! which selectors) and the join tokens that redeem them.

use super::credentials::random_secret;
use super::nodes::selector_ok;
use super::{Authority, AuthorityError, Principal, Result, not_found, sha256_hex};
use crate::store::TokenRow;
use serde_json::json;
use std::sync::atomic::Ordering;
use tessera_core::api;
use tessera_core::spiffe;
use tessera_core::time::rfc3339;
use tessera_core::{SpiffeId, TrustDomain, now_unix};

impl Authority {
    fn validate_entry(&self, req: &api::EntryRequest) -> Result<SpiffeId> {
        let id = self.check_td("spiffe_id", &req.spiffe_id)?;
        if req.selectors.is_empty() {
            return Err(AuthorityError::Invalid {
                field: "selectors",
                reason: "at least one selector is required".into(),
            });
        }
        if req.selectors.len() > 64 {
            return Err(AuthorityError::Invalid {
                field: "selectors",
                reason: "at most 64".into(),
            });
        }
        for s in &req.selectors {
            if !selector_ok(s) {
                return Err(AuthorityError::Invalid {
                    field: "selectors",
                    reason: format!("{s:?} is not type:value (lowercase type, non-empty value)"),
                });
            }
        }
        // Parent IDs of platform-token issuers name no one: no entry grants them.
        if id.path().starts_with(spiffe::ISSUER_PATH_PREFIX)
            || id.path() == spiffe::ISSUER_PATH_PREFIX.trim_end_matches('/')
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "spiffe://<td>/tessera/issuer/<name> is the parent of direct-mode \
                         platform-token entries, never an identity"
                    .into(),
            });
        }
        // The CA server's and operators' identities (and the rest of
        // /tessera/) are Tessera's own: an entry granting one could serve as
        // the CA to its clients, or as an operator.
        if !spiffe::entry_may_grant(id.path()) {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "spiffe://<td>/tessera/… is reserved for Tessera (the CA server, \
                         operators); entries may use /tessera/agent/<name> and \
                         /tessera/node-set/<name> only"
                    .into(),
            });
        }
        let node_set_like = id.path().starts_with(spiffe::NODE_SET_PATH_PREFIX)
            || id.path() == spiffe::NODE_SET_PATH_PREFIX.trim_end_matches('/');
        // Claim selectors mean nothing without their issuer: two clusters
        // can both have a node "gpu-1". A set that matches on them must name
        // the issuer too.
        if node_set_like
            && req
                .selectors
                .iter()
                .any(|s| s.starts_with("k8s:") || s.starts_with("jwt:"))
            && !req
                .selectors
                .iter()
                .any(|s| s.starts_with("jwt:issuer-name:"))
        {
            return Err(AuthorityError::Invalid {
                field: "selectors",
                reason: "a node set matching platform-token claims (k8s:, jwt:) must also \
                         require jwt:issuer-name:<issuer>"
                    .into(),
            });
        }
        if node_set_like
            && (spiffe::node_set_name(id.path()).is_none()
                || req.parent_id.is_some()
                || !req.dns_names.is_empty())
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "a node set is spiffe://<td>/tessera/node-set/<name> with node \
                         selectors only: no parent_id, no dns_names"
                    .into(),
            });
        }
        // Node names `<issuer-name>.<node>` belong to platform-token issuers.
        if let Some(name) = spiffe::node_name(id.path())
            && let Some(i) = self.issuers.all().iter().find(|i| {
                name.strip_prefix(i.cfg.name.as_str())
                    .is_some_and(|r| r.starts_with('.'))
            })
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: format!(
                    "node names {}.* are attested with platform tokens from issuer {}",
                    i.cfg.name, i.cfg.name
                ),
            });
        }
        if let Some(p) = &req.parent_id {
            SpiffeId::new(p).map_err(|e| AuthorityError::SpiffeId("parent_id", e))?;
            if spiffe::node_name(id.path()).is_some() {
                return Err(AuthorityError::Invalid {
                    field: "parent_id",
                    reason: "a node entry (spiffe://<td>/tessera/agent/<name>) is claimed with a \
                             join token and has no parent"
                        .into(),
                });
            }
        }
        if let Some(t) = req.ttl_seconds {
            let i = &self.cfg.issuance;
            if (t as i64) < i.min_ttl_seconds || (t as i64) > i.max_ttl_seconds {
                return Err(AuthorityError::Invalid {
                    field: "ttl_seconds",
                    reason: format!(
                        "must be between {} and {}",
                        i.min_ttl_seconds, i.max_ttl_seconds
                    ),
                });
            }
        }
        if req.dns_names.len() > 32 {
            return Err(AuthorityError::Invalid {
                field: "dns_names",
                reason: "at most 32".into(),
            });
        }
        for d in &req.dns_names {
            if rustls::pki_types::DnsName::try_from(d.as_str()).is_err() || d.len() > 253 {
                return Err(AuthorityError::Invalid {
                    field: "dns_names",
                    reason: format!("{d:?} is not a DNS name"),
                });
            }
            if self.is_server_name(d) {
                return Err(AuthorityError::Invalid {
                    field: "dns_names",
                    reason: format!("{d:?} is one of the CA server's own names (server.dns_names)"),
                });
            }
        }
        if let Some(h) = &req.hint {
            check_hint(h)?;
        }
        if req.federates_with.len() > MAX_FEDERATES_WITH {
            return Err(AuthorityError::Invalid {
                field: "federates_with",
                reason: format!("at most {MAX_FEDERATES_WITH}"),
            });
        }
        for td in &req.federates_with {
            let ok = TrustDomain::new(td).map_err(|e| AuthorityError::Invalid {
                field: "federates_with",
                reason: format!("{td:?}: {e}"),
            })?;
            if ok == self.td {
                return Err(AuthorityError::Invalid {
                    field: "federates_with",
                    reason: "this CA's own trust domain is always trusted".into(),
                });
            }
        }
        if req.note.as_ref().is_some_and(|n| n.len() > 1024) {
            return Err(AuthorityError::Invalid {
                field: "note",
                reason: "at most 1024 bytes".into(),
            });
        }
        Ok(id)
    }

    /// Whether an entry's DNS name `d` could stand for one of the server's
    /// own names (`server.dns_names`, `server.ips`): equal ignoring case, or
    /// a wildcard on either side covering the other.
    pub(super) fn is_server_name(&self, d: &str) -> bool {
        let d = d.to_ascii_lowercase();
        let covers = |wild: &str, name: &str| {
            wild.strip_prefix("*.").is_some_and(|base| {
                name.split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == base)
            })
        };
        let ips = self.cfg.server_ips.iter().map(|ip| ip.to_string());
        self.cfg
            .server_dns_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .chain(ips)
            .any(|n| n == d || covers(&d, &n) || covers(&n, &d))
    }

    fn entry_from(
        &self,
        id: String,
        req: &api::EntryRequest,
        created_at: String,
        now: i64,
    ) -> api::Entry {
        let mut selectors = req.selectors.clone();
        selectors.sort();
        selectors.dedup();
        api::Entry {
            id,
            spiffe_id: req.spiffe_id.clone(),
            selectors,
            parent_id: req.parent_id.clone(),
            ttl_seconds: req
                .ttl_seconds
                .unwrap_or(self.cfg.issuance.default_ttl_seconds as u64),
            dns_names: req.dns_names.clone(),
            note: req.note.clone(),
            hint: req.hint.clone(),
            federates_with: {
                let mut f = req.federates_with.clone();
                f.sort();
                f.dedup();
                f
            },
            created_at,
            updated_at: rfc3339(now),
        }
    }

    /// Creates a registration entry.
    pub async fn create_entry(
        &self,
        req: &api::EntryRequest,
        actor: &Principal,
    ) -> Result<api::Entry> {
        self.validate_entry(req)?;
        self.check_federated(req).await?;
        let now = now_unix();
        let e = self.entry_from(crate::ca::random_id()?, req, rfc3339(now), now);
        let audit = actor.audit(
            "entry.create",
            e.id.clone(),
            serde_json::to_value(&e).unwrap_or_default(),
        );
        let r = self.store.create_entry(&e, audit).await;
        self.entry_epoch.fetch_add(1, Ordering::AcqRel);
        r?;
        Ok(e)
    }

    /// Replaces a registration entry's fields.
    pub async fn update_entry(
        &self,
        id: &str,
        req: &api::EntryRequest,
        actor: &Principal,
    ) -> Result<api::Entry> {
        self.validate_entry(req)?;
        self.check_federated(req).await?;
        let old = self.get_entry(id).await?;
        let e = self.entry_from(old.id.clone(), req, old.created_at.clone(), now_unix());
        let audit = actor.audit(
            "entry.update",
            e.id.clone(),
            json!({"before": old, "after": e}),
        );
        let r = self.store.update_entry(&e, audit).await;
        self.entry_epoch.fetch_add(1, Ordering::AcqRel);
        r?;
        Ok(e)
    }

    /// Deletes a registration entry (renewals under it stop at once).
    pub async fn delete_entry(&self, id: &str, actor: &Principal) -> Result<()> {
        let old = self.get_entry(id).await?;
        let audit = actor.audit(
            "entry.delete",
            id.to_owned(),
            serde_json::to_value(&old).unwrap_or_default(),
        );
        let r = self.store.delete_entry(id, audit).await;
        self.entry_epoch.fetch_add(1, Ordering::AcqRel);
        r.map_err(not_found("entry"))
    }

    /// Reads one entry.
    pub async fn get_entry(&self, id: &str) -> Result<api::Entry> {
        self.store.get_entry(id).await.map_err(not_found("entry"))
    }

    /// Creates a join token for an entry (by ID, or the entry of a SPIFFE ID).
    pub async fn create_token(
        &self,
        req: &api::TokenCreateRequest,
        actor: &Principal,
    ) -> Result<api::TokenCreated> {
        let entry = match (&req.entry_id, &req.spiffe_id) {
            (Some(id), None) => self.get_entry(id).await?,
            (None, Some(sid)) => {
                self.oldest_entry_for(&self.check_td("spiffe_id", sid)?)
                    .await?
            }
            _ => {
                return Err(AuthorityError::Invalid {
                    field: "entry_id|spiffe_id",
                    reason: "give exactly one".into(),
                });
            }
        };
        if SpiffeId::new(&entry.spiffe_id).is_ok_and(|i| spiffe::node_set_name(i.path()).is_some())
        {
            return Err(AuthorityError::Invalid {
                field: "spiffe_id",
                reason: "a node set is never issued, so it has no join token".into(),
            });
        }
        let ttl = req
            .ttl_seconds
            .unwrap_or(self.cfg.issuance.join_token_ttl_seconds as u64);
        if !(30..=7 * 86400).contains(&ttl) {
            return Err(AuthorityError::Invalid {
                field: "ttl_seconds",
                reason: "between 30 and 604800".into(),
            });
        }
        let now = now_unix();
        let id = crate::ca::random_id()?;
        let secret = random_secret()?;
        let row = TokenRow {
            id: id.clone(),
            token_hash: sha256_hex(secret.as_bytes()),
            entry_id: entry.id.clone(),
            expires_at: now + ttl as i64,
            used_at: None,
            created_at: now,
        };
        let audit = actor.audit("token.create", id.clone(), json!({"entry_id": entry.id, "spiffe_id": entry.spiffe_id, "expires_at": row.expires_at}));
        self.store
            .create_token(&row, &actor.audit_name(), audit)
            .await?;
        Ok(api::TokenCreated {
            token: format!("tsj_{id}.{secret}"),
            id,
            entry_id: entry.id,
            expires_at: rfc3339(row.expires_at),
        })
    }

    /// Deletes a join token.
    pub async fn delete_token(&self, id: &str, actor: &Principal) -> Result<()> {
        let audit = actor.audit("token.delete", id.to_owned(), json!({}));
        self.store
            .delete_token(id, audit)
            .await
            .map_err(not_found("token"))
    }
}

/// Most trust domains one entry federates with.
const MAX_FEDERATES_WITH: usize = 16;

impl Authority {
    /// Every trust domain an entry federates with must have a federation
    /// relationship: a typo would otherwise silently deliver nothing.
    async fn check_federated(&self, req: &api::EntryRequest) -> Result<()> {
        for td in &req.federates_with {
            match self.store.get_federation(td).await {
                Ok(_) => {}
                Err(crate::store::StoreError::NotFound) => {
                    return Err(AuthorityError::Invalid {
                        field: "federates_with",
                        reason: format!(
                            "no federation relationship with {td} (tessera federation add {td} ...)"
                        ),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Longest entry hint, bytes.
pub const MAX_HINT_BYTES: usize = 64;

/// An entry hint: 1 to [`MAX_HINT_BYTES`] printable ASCII characters, no
/// space at either end (it is shown to workloads and in tables).
fn check_hint(h: &str) -> Result<()> {
    let printable = h.bytes().all(|b| (b' '..=b'~').contains(&b));
    if h.is_empty() || h.len() > MAX_HINT_BYTES || !printable || h.trim() != h {
        return Err(AuthorityError::Invalid {
            field: "hint",
            reason: format!(
                "1 to {MAX_HINT_BYTES} printable ASCII characters, no leading or trailing space"
            ),
        });
    }
    Ok(())
}
