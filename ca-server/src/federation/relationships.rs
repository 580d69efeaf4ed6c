//! Federation relationships: the operator's list of foreign trust domains
//! whose bundles this CA follows, one poll of a relationship, and its
//! health. The poller that schedules the polls is [`super::poller`].
//!
//! A foreign bundle is parsed by the one parser (`tessera_core::bundle`) for
//! the trust domain the operator named, and stored apart from this CA's own
//! bundle: nothing here ever adds a foreign key to `/v1/bundle` or to any of
//! our verifiers.

use super::fetch::{FetchError, fetch_bundle, split};
use crate::authority::{Authority, AuthorityError, Principal, not_found};
use crate::store::{FederationRow, PollOutcome};
use serde_json::json;
use std::time::Duration;
use tessera_core::api;
use tessera_core::bundle::{MAX_BUNDLE_BYTES, SpiffeBundle};
use tessera_core::time::rfc3339;
use tessera_core::{SpiffeId, TrustDomain, now_unix};

/// Most relationships one CA keeps.
pub const MAX_RELATIONSHIPS: i64 = 256;

/// The two bundle endpoint profiles of the SPIFFE Federation standard.
const PROFILES: [&str; 2] = ["https_spiffe", "https_web"];

fn invalid(field: &'static str, reason: impl Into<String>) -> AuthorityError {
    AuthorityError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn now_ms() -> i64 {
    now_unix().saturating_mul(1000)
}

/// What a relationship is told to be, validated.
struct Settings {
    url: String,
    profile: String,
    endpoint_id: Option<String>,
}

impl Authority {
    fn foreign_domain(&self, td: &str) -> Result<TrustDomain, AuthorityError> {
        let parsed = TrustDomain::new(td).map_err(|e| invalid("trust_domain", e.to_string()))?;
        if parsed == self.td {
            return Err(invalid(
                "trust_domain",
                "this CA's own trust domain cannot be federated with",
            ));
        }
        Ok(parsed)
    }

    /// Checks URL, profile and endpoint ID together (the ID belongs to
    /// `https_spiffe` only, and to the foreign trust domain).
    fn settings(
        td: &TrustDomain,
        url: &str,
        profile: &str,
        endpoint_id: Option<&str>,
    ) -> Result<Settings, AuthorityError> {
        split(url).map_err(|e| invalid("bundle_endpoint_url", e.to_string()))?;
        if !PROFILES.contains(&profile) {
            return Err(invalid("profile", "https_spiffe or https_web"));
        }
        let endpoint_id = match (profile, endpoint_id) {
            ("https_spiffe", Some(id)) => {
                let id = SpiffeId::new(id)
                    .map_err(|e| AuthorityError::SpiffeId("endpoint_spiffe_id", e))?;
                if !id.is_member_of(td) {
                    return Err(AuthorityError::WrongTrustDomain(
                        "endpoint_spiffe_id",
                        td.clone(),
                    ));
                }
                Some(id.to_string())
            }
            ("https_spiffe", None) => {
                return Err(invalid("endpoint_spiffe_id", "required for https_spiffe"));
            }
            (_, Some(_)) => {
                return Err(invalid("endpoint_spiffe_id", "only for https_spiffe"));
            }
            (_, None) => None,
        };
        Ok(Settings {
            url: url.to_owned(),
            profile: profile.to_owned(),
            endpoint_id,
        })
    }

    /// Parses a bootstrap bundle (PEM or SPIFFE JSON) for `td`.
    fn bootstrap(td: &TrustDomain, doc: &str) -> Result<SpiffeBundle, AuthorityError> {
        if doc.len() > MAX_BUNDLE_BYTES {
            return Err(invalid(
                "bootstrap_bundle",
                format!("at most {MAX_BUNDLE_BYTES} bytes"),
            ));
        }
        SpiffeBundle::from_bootstrap(td, doc.as_bytes())
            .map_err(|e| invalid("bootstrap_bundle", e.to_string()))
    }

    /// Creates a relationship; its first poll is due at once.
    pub async fn create_federation(
        &self,
        req: &api::FederationCreateRequest,
        actor: &Principal,
    ) -> Result<api::Federation, AuthorityError> {
        let td = self.foreign_domain(&req.trust_domain)?;
        let s = Self::settings(
            &td,
            &req.bundle_endpoint_url,
            &req.profile,
            req.endpoint_spiffe_id.as_deref(),
        )?;
        let bundle = req
            .bootstrap_bundle
            .as_deref()
            .map(|b| Self::bootstrap(&td, b))
            .transpose()?;
        if s.profile == "https_spiffe"
            && bundle
                .as_ref()
                .is_none_or(|b| b.x509_authorities.is_empty())
        {
            return Err(invalid(
                "bootstrap_bundle",
                "https_spiffe needs the foreign X.509 authorities for first contact",
            ));
        }
        let now = now_unix();
        let row = FederationRow {
            trust_domain: td.to_string(),
            bundle_endpoint_url: s.url,
            profile: s.profile,
            endpoint_spiffe_id: s.endpoint_id,
            sequence: bundle.as_ref().and_then(|b| b.sequence).map(|v| v as i64),
            refresh_hint: bundle
                .as_ref()
                .and_then(|b| b.refresh_hint)
                .map(|v| v as i64),
            bundle_updated_at: bundle.as_ref().map(|_| now),
            bundle: bundle.as_ref().map(SpiffeBundle::to_json),
            last_attempt_at: None,
            last_success_at: None,
            last_error: None,
            failures: 0,
            next_poll_ms: 0,
            created_by: actor.audit_name(),
            created_at: now,
            updated_at: now,
        };
        let audit = actor.audit(
            "federation.create",
            td.to_string(),
            json!({"url": row.bundle_endpoint_url, "profile": row.profile,
                "endpoint_spiffe_id": row.endpoint_spiffe_id, "bootstrap": bundle.is_some()}),
        );
        let stored = self
            .store
            .create_federation(&row, MAX_RELATIONSHIPS, audit)
            .await?;
        self.federation_poke.notify_one();
        Ok(self.federation_view(&stored))
    }

    /// Every relationship with its health.
    pub async fn list_federations(&self) -> Result<Vec<api::Federation>, AuthorityError> {
        let rows = self.store.list_federations(MAX_RELATIONSHIPS).await?;
        Ok(rows.iter().map(|r| self.federation_view(r)).collect())
    }

    async fn federation_row(&self, td: &str) -> Result<FederationRow, AuthorityError> {
        let td = TrustDomain::new(td).map_err(|e| invalid("trust_domain", e.to_string()))?;
        self.store
            .get_federation(td.as_str())
            .await
            .map_err(not_found("federation relationship"))
    }

    /// One relationship with its health.
    pub async fn show_federation(&self, td: &str) -> Result<api::Federation, AuthorityError> {
        Ok(self.federation_view(&self.federation_row(td).await?))
    }

    /// Changes a relationship's endpoint settings and, with a bootstrap
    /// bundle, replaces the bundle held; the next poll is due at once.
    pub async fn update_federation(
        &self,
        td: &str,
        req: &api::FederationUpdateRequest,
        actor: &Principal,
    ) -> Result<api::Federation, AuthorityError> {
        let mut row = self.federation_row(td).await?;
        let domain = TrustDomain::new(&row.trust_domain)
            .map_err(|e| invalid("trust_domain", e.to_string()))?;
        let profile = req.profile.as_deref().unwrap_or(&row.profile);
        // Moving to https_web drops the endpoint ID unless one is given.
        let keep_id = profile == "https_spiffe";
        let endpoint_id = req
            .endpoint_spiffe_id
            .as_deref()
            .or(row.endpoint_spiffe_id.as_deref().filter(|_| keep_id));
        let url = req
            .bundle_endpoint_url
            .as_deref()
            .unwrap_or(&row.bundle_endpoint_url);
        let s = Self::settings(&domain, url, profile, endpoint_id)?;
        let bundle = req
            .bootstrap_bundle
            .as_deref()
            .map(|b| Self::bootstrap(&domain, b))
            .transpose()?;
        if s.profile == "https_spiffe" && bundle.is_none() && row.bundle.is_none() {
            return Err(invalid(
                "bootstrap_bundle",
                "https_spiffe needs a bundle for first contact",
            ));
        }
        let now = now_unix();
        (row.bundle_endpoint_url, row.profile, row.endpoint_spiffe_id) =
            (s.url, s.profile, s.endpoint_id);
        row.updated_at = now;
        if let Some(b) = &bundle {
            row.bundle = Some(b.to_json());
            row.sequence = b.sequence.map(|v| v as i64);
            row.refresh_hint = b.refresh_hint.map(|v| v as i64);
        }
        let audit = actor.audit(
            "federation.update",
            row.trust_domain.clone(),
            json!({"url": row.bundle_endpoint_url, "profile": row.profile,
                "endpoint_spiffe_id": row.endpoint_spiffe_id, "bootstrap": bundle.is_some()}),
        );
        let stored = self
            .store
            .update_federation(&row, bundle.is_some(), audit)
            .await
            .map_err(not_found("federation relationship"))?;
        self.federation_poke.notify_one();
        Ok(self.federation_view(&stored))
    }

    /// Deletes a relationship and the bundle held.
    pub async fn delete_federation(
        &self,
        td: &str,
        actor: &Principal,
    ) -> Result<(), AuthorityError> {
        let row = self.federation_row(td).await?;
        let audit = actor.audit("federation.delete", row.trust_domain.clone(), json!({}));
        self.store
            .delete_federation(&row.trust_domain, audit)
            .await
            .map_err(not_found("federation relationship"))
    }

    /// Polls a relationship now, on this replica, and answers what it holds
    /// afterwards; a failed poll is recorded (the bundle held is kept) and
    /// answered as an [`AuthorityError::Upstream`].
    pub async fn refresh_federation(&self, td: &str) -> Result<api::Federation, AuthorityError> {
        let row = self.federation_row(td).await?;
        let outcome = self.poll_federation(&row).await?;
        let now = self.federation_row(td).await?;
        match outcome {
            Ok(_) => Ok(self.federation_view(&now)),
            Err(e) => Err(AuthorityError::Upstream {
                code: match e {
                    FetchError::Bundle(_) => "foreign_bundle_refused",
                    _ => "bundle_endpoint_unreachable",
                },
                reason: format!("{}: {e}", row.trust_domain),
            }),
        }
    }

    /// Fetches `row`'s bundle endpoint once and records the result: a newer
    /// bundle replaces the one held (audited), anything else keeps it. The
    /// outer error is the store's; the inner one the poll's.
    pub(crate) async fn poll_federation(
        &self,
        row: &FederationRow,
    ) -> Result<Result<bool, FetchError>, AuthorityError> {
        let f = &self.cfg.federation;
        let fetched = self.fetch_foreign(row).await;
        let now = now_unix();
        let (outcome, next, result) = match fetched {
            Ok(b) => {
                let next = now_ms() + self.poll_period_ms(b.refresh_hint);
                let outcome = PollOutcome::Bundle {
                    json: b.to_json(),
                    sequence: b.sequence.map(|v| v as i64),
                    refresh_hint: b.refresh_hint.map(|v| v as i64),
                    audit: Principal::System.audit(
                        "federation.bundle",
                        row.trust_domain.clone(),
                        json!({"sequence": b.sequence, "x509_authorities": b.x509_authorities.len(),
                            "jwt_authorities": b.jwt_authorities.len()}),
                    ),
                };
                (outcome, next, Ok(()))
            }
            Err(e) => {
                // Retry sooner than a full period, doubling from the minimum.
                let shift = row.failures.clamp(0, 20) as u32;
                let retry = (f.poll_min_seconds.saturating_mul(1 << shift) * 1000)
                    .min(self.poll_period_ms(row.refresh_hint.map(|h| h as u64)) as u64);
                tracing::warn!(trust_domain = %row.trust_domain, error = %e, "federation poll failed; keeping the last good bundle");
                (
                    PollOutcome::Failed(e.to_string()),
                    now_ms() + retry as i64,
                    Err(e),
                )
            }
        };
        let changed = self
            .store
            .record_federation_poll(&row.trust_domain, outcome, now, next)
            .await?;
        let label = match (&result, changed) {
            (Err(_), _) => "failed",
            (Ok(()), true) => "updated",
            (Ok(()), false) => "unchanged",
        };
        self.metrics
            .federation_polls
            .inc(&[row.trust_domain.as_str(), label]);
        if changed {
            tracing::info!(trust_domain = %row.trust_domain, "federated bundle updated");
        }
        Ok(result.map(|()| changed))
    }

    /// One fetch of `row`'s endpoint with its profile's verification.
    async fn fetch_foreign(&self, row: &FederationRow) -> Result<SpiffeBundle, FetchError> {
        let td = TrustDomain::new(&row.trust_domain).map_err(|e| FetchError::Url(e.to_string()))?;
        let tls = match (row.profile.as_str(), &row.endpoint_spiffe_id) {
            ("https_spiffe", Some(id)) => {
                // Each poll is authenticated by the bundle the last one brought.
                let held = row
                    .bundle
                    .as_deref()
                    .map(|b| SpiffeBundle::parse(&td, b.as_bytes()))
                    .transpose()?
                    .map(|b| b.x509_authorities)
                    .unwrap_or_default();
                let id = SpiffeId::new(id).map_err(|e| FetchError::Url(e.to_string()))?;
                tessera_core::tls::bundle_endpoint_client_config(&held, id)
            }
            _ => {
                let file = &self.cfg.federation.web_roots_file;
                let pem = std::fs::read(file).map_err(|e| {
                    FetchError::Transport(format!("federation.web_roots_file {file}: {e}"))
                })?;
                let roots = tessera_core::pem::certs(&pem).map_err(|e| {
                    FetchError::Transport(format!("federation.web_roots_file: {e}"))
                })?;
                tessera_core::tls::webpki_client_config(&roots, None, true)
            }
        }
        .map_err(|e| FetchError::Transport(e.to_string()))?;
        let timeout = Duration::from_millis(self.cfg.federation.fetch_timeout_ms);
        fetch_bundle(&row.bundle_endpoint_url, &td, tls, timeout).await
    }

    /// How long until the next poll after a success, milliseconds: a
    /// fraction of the foreign refresh hint, clamped; the default without one.
    fn poll_period_ms(&self, hint: Option<u64>) -> i64 {
        let f = &self.cfg.federation;
        let secs = hint.map_or(f.poll_default_seconds, |h| {
            ((h as f64) * f.poll_fraction) as u64
        });
        (secs.clamp(f.poll_min_seconds, f.poll_max_seconds) * 1000) as i64
    }

    /// Whether `row` has had no successful poll for `stale_after_seconds`
    /// (counted from its creation before the first).
    fn federation_stale(&self, row: &FederationRow, now: i64) -> bool {
        now - row.last_success_at.unwrap_or(row.created_at)
            > self.cfg.federation.stale_after_seconds
    }

    /// The API view of a relationship, with its health as of now.
    pub(crate) fn federation_view(&self, r: &FederationRow) -> api::Federation {
        let now = now_unix();
        let held = TrustDomain::new(&r.trust_domain).ok().and_then(|td| {
            r.bundle
                .as_deref()
                .and_then(|b| SpiffeBundle::parse(&td, b.as_bytes()).ok())
        });
        let stale = self.federation_stale(r, now);
        api::Federation {
            trust_domain: r.trust_domain.clone(),
            bundle_endpoint_url: r.bundle_endpoint_url.clone(),
            profile: r.profile.clone(),
            endpoint_spiffe_id: r.endpoint_spiffe_id.clone(),
            sequence: r.sequence.map(|v| v as u64),
            refresh_hint_seconds: r.refresh_hint.map(|v| v as u64),
            x509_authorities: held.as_ref().map_or(0, |b| b.x509_authorities.len()),
            jwt_authorities: held.as_ref().map_or(0, |b| b.jwt_authorities.len()),
            bundle: r.bundle.clone(),
            bundle_updated_at: r.bundle_updated_at.map(rfc3339),
            bundle_age_seconds: r.bundle_updated_at.map(|t| now - t),
            last_attempt_at: r.last_attempt_at.map(rfc3339),
            last_success_at: r.last_success_at.map(rfc3339),
            last_error: r.last_error.clone(),
            failures: r.failures,
            healthy: r.last_success_at.is_some() && r.last_error.is_none() && !stale,
            stale,
            next_poll_at: rfc3339(r.next_poll_ms / 1000),
            created_by: r.created_by.clone(),
            created_at: rfc3339(r.created_at),
        }
    }

    /// The foreign bundles of every trust domain an entry the node `node`
    /// serves federates with (a domain without a relationship or a bundle
    /// held is left out): what its agent may hand to workloads, and
    /// nothing more.
    pub async fn agent_federated_bundles(
        &self,
        node: &SpiffeId,
    ) -> Result<api::AgentFederatedBundles, AuthorityError> {
        let entries = self.agent_entries(node).await?;
        let wanted: std::collections::BTreeSet<&str> = entries
            .iter()
            .flat_map(|e| e.federates_with.iter().map(String::as_str))
            .collect();
        let mut out = api::AgentFederatedBundles::default();
        for td in wanted {
            match self.store.get_federation(td).await {
                Ok(FederationRow {
                    bundle: Some(b), ..
                }) => {
                    out.bundles.insert(td.to_owned(), b);
                }
                Ok(_) | Err(crate::store::StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// One sentence per stale relationship, for `GET /v1/ca`.
    pub(crate) async fn stale_federations(&self) -> Result<Vec<String>, AuthorityError> {
        let now = now_unix();
        let rows = self.store.list_federations(MAX_RELATIONSHIPS).await?;
        Ok(rows
            .iter()
            .filter(|r| self.federation_stale(r, now))
            .map(|r| {
                let since = r
                    .last_success_at
                    .map_or_else(|| "it was created".to_owned(), rfc3339);
                let why = r
                    .last_error
                    .as_deref()
                    .map_or_else(String::new, |e| format!(" (last error: {e})"));
                format!(
                    "federation with {}: no successful poll since {since}{why}",
                    r.trust_domain
                )
            })
            .collect())
    }
}
