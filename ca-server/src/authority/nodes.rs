//! Nodes and attested issuance.
//!
//! A node is a host running `tessera-agent`. It attests once by redeeming a
//! join token for a node entry (SPIFFE ID `spiffe://<td>/tessera/agent/<name>`,
//! see [`spiffe::node_name`]); the redemption records it in `nodes`. Its
//! certificate is renewed like any other (`POST /v1/certs/renew`).
//!
//! With that certificate the agent asks for workloads' SVIDs
//! (`POST /v1/agent/svids`), sending a CSR for a key it generated in memory
//! and fresh evidence about the workload. The CA issues only for entries
//! parented to that node whose selectors are all among the attested ones,
//! after the CA-wide minimum posture ([`crate::config::AttestationConfig`]).
//! Each certificate records the node and the evidence in its ledger row (and
//! the evidence's SHA-256 in its binding extension). Such certificates are
//! renewed only the same way, with fresh evidence: the plain renew route
//! refuses them. Banning a node refuses its certificate on every route at
//! once and revokes every certificate issued through it.

use super::{Authority, AuthorityError, Principal, Result, not_found};
use crate::store::Precondition;
use serde_json::json;
use std::sync::atomic::Ordering;
use tessera_core::api::{self, RevocationReason};
use tessera_core::spiffe;
use tessera_core::{SpiffeId, now_unix};

/// Most selectors one attestation may carry.
pub const MAX_ATTESTED_SELECTORS: usize = 256;
/// Longest selector, bytes (as for entries).
pub const MAX_SELECTOR_BYTES: usize = 512;
/// Longest image name, image digest or pod name in evidence, bytes.
pub const MAX_EVIDENCE_FIELD_BYTES: usize = 512;
/// Most SVIDs one attested request returns (entries matched beyond it are
/// left out, by SPIFFE ID order).
pub const MAX_SVIDS_PER_WORKLOAD: usize = 32;
/// Most entries read for one node per request.
const MAX_ENTRIES_PER_NODE: i64 = 10_000;

/// Most node sets considered per trust domain.
const MAX_NODE_SETS: i64 = 1_000;
/// Most nodes listed.
const MAX_NODES_LISTED: i64 = 10_000;

/// Whether `s` is `type:value` with a lowercase type and a non-empty value,
/// at most [`MAX_SELECTOR_BYTES`], without control characters.
pub(super) fn selector_ok(s: &str) -> bool {
    s.len() <= MAX_SELECTOR_BYTES
        && s.split_once(':').is_some_and(|(t, v)| {
            !t.is_empty()
                && !v.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
        && !s.chars().any(char::is_control)
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AuthorityError {
    AuthorityError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks the shape and limits of an attestation and returns its selectors
/// sorted and deduplicated.
fn validate_attestation(a: &api::WorkloadAttestation) -> Result<Vec<String>> {
    if a.selectors.is_empty() {
        return Err(invalid("attestation.selectors", "at least one selector"));
    }
    if a.selectors.len() > MAX_ATTESTED_SELECTORS {
        return Err(invalid(
            "attestation.selectors",
            format!("at most {MAX_ATTESTED_SELECTORS}"),
        ));
    }
    if let Some(bad) = a.selectors.iter().find(|s| !selector_ok(s)) {
        return Err(invalid(
            "attestation.selectors",
            format!(
                "{:?} is not type:value (lowercase type, non-empty value, at most {MAX_SELECTOR_BYTES} bytes)",
                bad.chars().take(64).collect::<String>()
            ),
        ));
    }
    for (field, v) in [
        ("attestation.container_id", &a.container_id),
        ("attestation.caller_container_id", &a.caller_container_id),
    ] {
        if v.as_deref().is_some_and(|id| !is_container_id(id)) {
            return Err(invalid(field, "64 lowercase hex digits"));
        }
    }
    for (field, v) in [
        ("attestation.image", &a.image),
        ("attestation.image_digest", &a.image_digest),
        ("attestation.pod", &a.pod),
    ] {
        if v.as_deref().is_some_and(|t| {
            t.is_empty() || t.len() > MAX_EVIDENCE_FIELD_BYTES || t.chars().any(char::is_control)
        }) {
            return Err(invalid(
                field,
                format!("1 to {MAX_EVIDENCE_FIELD_BYTES} bytes without control characters"),
            ));
        }
    }
    let in_container = |s: &String| {
        s.starts_with("container:") || s.starts_with("pod:") || s.starts_with("posture:")
    };
    match &a.container_id {
        Some(id) => {
            if !a
                .selectors
                .iter()
                .any(|s| *s == format!("container:id:{id}"))
            {
                return Err(invalid(
                    "attestation.selectors",
                    "must include container:id:<container_id>",
                ));
            }
        }
        None => {
            if a.selectors.iter().any(in_container) || a.caller_container_id.is_some() {
                return Err(invalid(
                    "attestation.container_id",
                    "container, pod or posture evidence without a container ID",
                ));
            }
        }
    }
    let mut selectors = a.selectors.clone();
    selectors.sort();
    selectors.dedup();
    Ok(selectors)
}

/// The first rule of the minimum posture a container's selectors violate.
/// A rule whose selector is absent counts as violated.
fn posture_violation(
    cfg: &crate::config::AttestationConfig,
    selectors: &[String],
) -> Option<String> {
    let has = |s: &str| selectors.binary_search_by(|x| x.as_str().cmp(s)).is_ok();
    let rules = [
        (
            cfg.refuse_privileged,
            "privileged",
            "false",
            "a privileged container",
        ),
        (
            cfg.refuse_host_pid,
            "host-ns-pid",
            "false",
            "a container in the host's PID namespace",
        ),
        (
            cfg.refuse_host_net,
            "host-ns-net",
            "false",
            "a container in the host's network namespace",
        ),
        (
            cfg.require_memory_limit,
            "memory-limit",
            "true",
            "a container without a memory limit",
        ),
    ];
    for (on, name, required, what) in rules {
        if !on {
            continue;
        }
        let want = format!("posture:{name}:{required}");
        if !has(&want) {
            return Some(format!(
                "minimum posture policy refuses {what} (needs {want})"
            ));
        }
    }
    None
}

impl Authority {
    /// The nodes, by name.
    pub async fn list_nodes(&self) -> Result<Vec<api::NodeInfo>> {
        Ok(self.store.list_nodes(MAX_NODES_LISTED).await?)
    }

    /// One node by name.
    pub async fn get_node(&self, id: &str) -> Result<api::NodeInfo> {
        self.store.get_node(id).await.map_err(not_found("node"))
    }

    /// Bans or unbans a node. A ban takes effect at once on this replica (the
    /// node's certificate stops authenticating, cached principals are
    /// dropped) and revokes every live certificate issued through the node;
    /// other replicas see the revocations within their feed poll and the ban
    /// within the principal cache's lifetime, and every issuance re-checks
    /// the ban inside its commit. Unbanning lets the node's certificate work
    /// again (if it has not expired); revoked certificates stay revoked.
    pub async fn set_node_banned(
        &self,
        id: &str,
        banned: bool,
        actor: &Principal,
    ) -> Result<api::NodeBanResponse> {
        if id.is_empty() || id.len() > 255 {
            return Err(AuthorityError::NotFound("node"));
        }
        let reason = RevocationReason::PrivilegeWithdrawn;
        let audit = actor.audit(
            if banned { "node.ban" } else { "node.unban" },
            id.to_owned(),
            json!({}),
        );
        let r = self
            .store
            .set_node_banned(id, banned, reason.code(), now_unix(), audit)
            .await;
        self.cred_epoch.fetch_add(1, Ordering::AcqRel);
        let (revoked, version) = r.map_err(not_found("node"))?;
        self.metrics
            .revoked
            .add(&[reason.as_str()], revoked.len() as u64);
        if !revoked.is_empty() {
            self.publish_revocations(version).await?;
        }
        Ok(api::NodeBanResponse {
            node: self.get_node(id).await?,
            revoked,
            version: *self.rev_version.borrow(),
        })
    }

    /// Whether a certificate's SPIFFE ID is a node's and, if so, whether the
    /// node is recorded and not banned: `Some(true)` usable, `Some(false)`
    /// refused, `None` not a node identity.
    pub(super) async fn node_usable(&self, id: &SpiffeId) -> Result<Option<bool>> {
        if spiffe::node_name(id.path()).is_none() {
            return Ok(None);
        }
        Ok(Some(
            self.store
                .node_by_spiffe_id(id.as_str())
                .await?
                .is_some_and(|n| !n.banned),
        ))
    }

    /// The selectors a node has: its node entries' (set by the operator,
    /// e.g. `node:zone:eu`) and those of its last platform-token attestation
    /// (e.g. `k8s:node-name:…`, recorded by the CA). Node sets are matched
    /// against them.
    async fn node_selectors(&self, node_id: &SpiffeId) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .entries_for(node_id)
            .await?
            .into_iter()
            .flat_map(|e| e.selectors)
            .collect();
        if let Some(row) = self.store.node_by_spiffe_id(node_id.as_str()).await? {
            out.extend(row.selectors);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The parents a node's workload entries may have: the node itself, and
    /// every node set (`spiffe://<td>/tessera/node-set/<name>`) whose
    /// selectors are all among the node's. Each with the node-set entry's
    /// ID (`None` for the node itself), for the ledger's precondition.
    async fn node_parents(&self, node_id: &SpiffeId) -> Result<Vec<(String, Option<String>)>> {
        let mut parents = vec![(node_id.to_string(), None)];
        let prefix = format!(
            "spiffe://{}{}",
            node_id.trust_domain_name(),
            spiffe::NODE_SET_PATH_PREFIX
        );
        let epoch = self.entry_epoch.load(Ordering::Acquire);
        let sets = match self.entries.get(&prefix, epoch) {
            Some(v) => v,
            None => {
                let v: Vec<api::Entry> = self
                    .store
                    .entries_by_id_prefix(&prefix, MAX_NODE_SETS)
                    .await?;
                if v.len() as i64 >= MAX_NODE_SETS {
                    tracing::warn!(
                        limit = MAX_NODE_SETS,
                        "too many node sets: only the first {MAX_NODE_SETS} (by SPIFFE ID) are \
                         considered"
                    );
                }
                self.entries.put(prefix.clone(), v.clone(), epoch);
                v
            }
        };
        if sets.is_empty() {
            return Ok(parents);
        }
        let mine = self.node_selectors(node_id).await?;
        for set in sets {
            let member = !set.selectors.is_empty()
                && set.selectors.iter().all(|s| mine.binary_search(s).is_ok());
            if member && !parents.iter().any(|(p, _)| *p == set.spiffe_id) {
                parents.push((set.spiffe_id, Some(set.id)));
            }
        }
        Ok(parents)
    }

    /// Entries parented to the node or to a node set it belongs to that
    /// grant no node or node-set identity, each with the node-set entry it
    /// came through (if any). Sorted by SPIFFE ID, at most
    /// `MAX_ENTRIES_PER_NODE`.
    async fn node_workload_entries(
        &self,
        node_id: &SpiffeId,
    ) -> Result<Vec<(api::Entry, Option<String>)>> {
        let mut out = Vec::new();
        for (parent, via) in self.node_parents(node_id).await? {
            let room = MAX_ENTRIES_PER_NODE - out.len() as i64;
            if room <= 0 {
                break;
            }
            for e in self.store.entries_by_parent(&parent, room).await? {
                let workload = SpiffeId::new(&e.spiffe_id)
                    .is_ok_and(|id| !spiffe::is_infrastructure_path(id.path()));
                if workload {
                    out.push((e, via.clone()));
                }
            }
        }
        out.sort_by(|a, b| (&a.0.spiffe_id, &a.0.id).cmp(&(&b.0.spiffe_id, &b.0.id)));
        Ok(out)
    }

    /// The entries a node's agent may claim for workloads (parented to it or
    /// to a node set it belongs to, granting no node identity), by SPIFFE ID.
    /// Agents poll this to notice entry changes; issuance re-checks
    /// everything anyway.
    pub async fn agent_entries(&self, node_id: &SpiffeId) -> Result<Vec<api::Entry>> {
        Ok(self
            .node_workload_entries(node_id)
            .await?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// The entries an attested workload may have an identity from: the node
    /// (the caller) must be recorded and not banned; the evidence must pass
    /// the minimum posture (a refusal is audited); the entries must be
    /// parented to the node or to a node set it belongs to, grant no node,
    /// node-set or issuer identity, and have every selector among the
    /// attested ones. At most [`MAX_SVIDS_PER_WORKLOAD`], or only the one for
    /// `wanted`, oldest entry first (creation time, then entry ID): the first
    /// is the workload's default SVID. Returns the sorted selectors with them, each entry with the
    /// node-set entry it came through (if any).
    async fn attested_entries(
        &self,
        node_id: &SpiffeId,
        a: &api::WorkloadAttestation,
        wanted: Option<&SpiffeId>,
        actor: &Principal,
    ) -> Result<(Vec<String>, Vec<(api::Entry, Option<String>)>)> {
        let selectors = validate_attestation(a)?;
        if self.node_usable(node_id).await? != Some(true) {
            return Err(AuthorityError::Forbidden(
                "this node is banned or not registered".into(),
            ));
        }
        if a.container_id.is_some()
            && let Some(reason) = posture_violation(&self.cfg.attestation, &selectors)
        {
            self.store
                .audit(vec![actor.audit(
                    "attestation.refuse",
                    a.container_id.clone().unwrap_or_default(),
                    json!({
                        "reason": reason,
                        "node": node_id.as_str(),
                        "container_id": a.container_id,
                        "image": a.image,
                        "image_digest": a.image_digest,
                        "spiffe_id": wanted.map(|w| w.as_str()),
                    }),
                )])
                .await?;
            self.metrics.attestation_refused.inc(&["posture"]);
            return Err(AuthorityError::Posture(reason));
        }
        let entries: Vec<(api::Entry, Option<String>)> = self
            .node_workload_entries(node_id)
            .await?
            .into_iter()
            .filter(|(e, _)| {
                wanted.is_none_or(|w| w.as_str() == e.spiffe_id)
                    && e.selectors
                        .iter()
                        .all(|s| selectors.binary_search(s).is_ok())
            })
            .collect();
        // The default (first) SVID is the oldest matching entry's: adding
        // an entry never changes what a running workload gets first.
        let mut entries = entries;
        entries.sort_by(|a, b| (&a.0.created_at, &a.0.id).cmp(&(&b.0.created_at, &b.0.id)));
        entries.truncate(MAX_SVIDS_PER_WORKLOAD);
        if entries.is_empty() {
            return Err(AuthorityError::NoEntry(format!(
                "{} attested by {node_id}: no entry parented to this node (or to a node set it belongs to) has all its selectors among the attested ones",
                wanted.map_or("a workload", |w| w.as_str()),
            )));
        }
        Ok((selectors, entries))
    }

    /// Signs the JWT-SVIDs an attested workload may have (the Workload API's
    /// `FetchJWTSVID`): the same node, posture and entry checks as
    /// [`Self::agent_svids`], one token per matching entry. Nothing is
    /// written: a JWT-SVID is not a ledger record (it cannot be revoked; its
    /// lifetime is its bound, never beyond `node_not_after`, the end of the
    /// node certificate that asked), as for `POST /v1/jwt-svids`.
    pub async fn agent_jwt_svids(
        &self,
        node_id: &SpiffeId,
        node_not_after: i64,
        req: &api::AgentJwtSvidRequest,
        actor: &Principal,
    ) -> Result<api::AgentJwtSvidResponse> {
        let ttl = super::lifecycle::check_jwt_request(&req.audience, req.ttl_seconds)?;
        let wanted = self.wanted_id(req.spiffe_id.as_deref())?;
        let (_, entries) = self
            .attested_entries(node_id, &req.attestation, wanted.as_ref(), actor)
            .await?;
        let mut svids = Vec::with_capacity(entries.len());
        for (entry, _) in &entries {
            let id = self.check_td("spiffe_id", &entry.spiffe_id)?;
            let mut svid = self.sign_jwt_svid(&id, &req.audience, ttl, node_not_after)?;
            svid.hint = entry.hint.clone();
            svids.push(svid);
        }
        Ok(api::AgentJwtSvidResponse { svids })
    }

    /// Issues the X.509-SVIDs an attested workload may have (see
    /// `Self::attested_entries` for who may have what): every matching
    /// entry, or only the one for `spiffe_id`, gets a certificate for the
    /// CSR's key, recorded with the evidence in one ledger transaction each.
    pub async fn agent_svids(
        &self,
        node_id: &SpiffeId,
        req: &api::AgentSvidRequest,
        actor: &Principal,
    ) -> Result<api::AgentSvidResponse> {
        let wanted = self.wanted_id(req.spiffe_id.as_deref())?;
        let csr = self.verify_csr(&req.csr)?;
        let a = &req.attestation;
        let (selectors, entries) = self
            .attested_entries(node_id, a, wanted.as_ref(), actor)
            .await?;
        let mut svids = Vec::with_capacity(entries.len());
        let now = now_unix();
        for (entry, via) in &entries {
            let (id, ttl) = self.entry_grant(entry)?;
            let mut att = json!({
                "method": "agent",
                "node": node_id.as_str(),
                "entry_id": entry.id,
                "spiffe_id": id.as_str(),
                "container_id": a.container_id,
                "caller_container_id": a.caller_container_id,
                "image": a.image,
                "image_digest": a.image_digest,
                "pod": a.pod,
                "selectors": selectors,
            });
            if let Some(set) = via {
                att["node_set_entry_id"] = json!(set);
            }
            let node_name = spiffe::node_name(node_id.path()).unwrap_or_default();
            let mut pre = vec![Precondition::EntryExists(entry.id.clone())];
            pre.extend(Precondition::node(
                node_id.as_str(),
                node_name,
                true,
                "join_token",
                None,
                now,
            ));
            // Through a node set: the set must still exist when recorded.
            if let Some(set) = via {
                pre.push(Precondition::EntryExists(set.clone()));
            }
            let issued = self
                .issue(
                    entry,
                    &id,
                    &csr,
                    ttl,
                    att,
                    actor,
                    pre,
                    "cert.agent_issue",
                    Some(node_id),
                )
                .await
                .map_err(|e| match e {
                    AuthorityError::Refused(r) if r.is_node() => {
                        AuthorityError::Forbidden(r.to_string())
                    }
                    other => other,
                })?;
            svids.push(api::IssuedCertificate {
                hint: entry.hint.clone(),
                ..issued
            });
        }
        Ok(api::AgentSvidResponse { svids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(selectors: &[&str], container: Option<&str>) -> api::WorkloadAttestation {
        api::WorkloadAttestation {
            selectors: selectors.iter().map(|s| s.to_string()).collect(),
            container_id: container.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn attestation_shape() {
        let id = "a".repeat(64);
        let cid = format!("container:id:{id}");
        assert!(validate_attestation(&att(&["unix:uid:0"], None)).is_ok());
        assert!(validate_attestation(&att(&[&cid], Some(&id))).is_ok());
        // Container evidence without a container ID, or an ID without its selector.
        assert!(validate_attestation(&att(&["unix:uid:0", &cid], None)).is_err());
        assert!(validate_attestation(&att(&["unix:uid:0"], Some(&id))).is_err());
        assert!(validate_attestation(&att(&["posture:privileged:false"], None)).is_err());
        assert!(validate_attestation(&att(&[], None)).is_err());
        assert!(validate_attestation(&att(&["Bad:x"], None)).is_err());
        assert!(validate_attestation(&att(&["unix:uid:0"], Some("xyz"))).is_err());
        let many: Vec<String> = (0..=MAX_ATTESTED_SELECTORS)
            .map(|i| format!("unix:gid:{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(validate_attestation(&att(&many, None)).is_err());
    }

    #[test]
    fn posture_rules() {
        let cfg = crate::config::AttestationConfig::default();
        let ok: Vec<String> = [
            "posture:host-ns-net:false",
            "posture:host-ns-pid:false",
            "posture:privileged:false",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(posture_violation(&cfg, &ok), None);
        let mut privileged = ok.clone();
        privileged[2] = "posture:privileged:true".into();
        privileged.sort();
        assert!(
            posture_violation(&cfg, &privileged)
                .unwrap()
                .contains("privileged")
        );
        // Missing evidence is a violation.
        assert!(posture_violation(&cfg, &ok[..2]).is_some());
        let strict = crate::config::AttestationConfig {
            require_memory_limit: true,
            ..cfg
        };
        assert!(posture_violation(&strict, &ok).unwrap().contains("memory"));
    }
}
