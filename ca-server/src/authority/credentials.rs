//! Credentials: scoped API tokens, disabling a credential, and resolving
//! what a request presents (a bearer token, a verified client certificate)
//! to a [`Principal`]. Secrets are stored only as their SHA-256 and compared
//! in constant time; the helpers here serve join tokens too.

use super::{Authority, AuthorityError, Principal, Result, not_found, sha256_hex};
use crate::store::{CertRow, CredentialRow, OptionalRow, REASON_CA_COMPROMISE};
use serde_json::json;
use std::sync::atomic::Ordering;
use subtle::ConstantTimeEq;
use tessera_core::api;
use tessera_core::now_unix;
use tessera_core::time::rfc3339;

/// Makes a secret of 256 random bits in URL-safe base64 (an RNG failure is
/// an error: no token is made from a predictable secret).
pub(super) fn random_secret() -> Result<String> {
    use base64::Engine;
    let b = crate::ca::random_bytes::<32>()?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Splits `prefix_<id>.<secret>` tokens.
pub(super) fn split_token<'a>(token: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = token.trim().strip_prefix(prefix)?;
    let (id, secret) = rest.split_once('.')?;
    if id.len() != 32
        || !id.bytes().all(|b| b.is_ascii_hexdigit())
        || secret.is_empty()
        || secret.len() > 128
    {
        return None;
    }
    Some((id, secret))
}

/// Compares a presented secret with a stored SHA-256 hex in constant time.
pub(super) fn secret_matches(secret: &str, stored_hash_hex: &str) -> bool {
    let presented = sha256_hex(secret.as_bytes());
    presented
        .as_bytes()
        .ct_eq(stored_hash_hex.as_bytes())
        .into()
}

impl Authority {
    /// Creates a scoped API token.
    pub async fn create_api_token(
        &self,
        req: &api::ApiTokenCreateRequest,
        actor: &Principal,
    ) -> Result<api::ApiTokenCreated> {
        // Characters, not bytes: what the message and the OpenAPI document say.
        if req.name.is_empty()
            || req.name.chars().count() > 128
            || req.name.chars().any(char::is_control)
        {
            return Err(AuthorityError::Invalid {
                field: "name",
                reason: "1 to 128 printable characters".into(),
            });
        }
        let ttl = req.ttl_seconds.unwrap_or(30 * 86400);
        if !(60..=366 * 86400).contains(&ttl) {
            return Err(AuthorityError::Invalid {
                field: "ttl_seconds",
                reason: "between 60 and 31622400".into(),
            });
        }
        let id = crate::ca::random_id()?;
        let secret = random_secret()?;
        let expires_at = now_unix() + ttl as i64;
        let row = CredentialRow {
            id: id.clone(),
            kind: "token".into(),
            name: req.name.clone(),
            role: req.role,
            spiffe_id: None,
            token_hash: Some(sha256_hex(secret.as_bytes())),
            expires_at,
            disabled: false,
        };
        let audit = actor.audit("credential.create", id.clone(), json!({"kind": "token", "name": req.name, "role": req.role.as_str(), "expires_at": expires_at}));
        self.store.insert_credential(&row, audit).await?;
        Ok(api::ApiTokenCreated {
            token: format!("tsa_{id}.{secret}"),
            id,
            role: req.role,
            expires_at: rfc3339(expires_at),
        })
    }

    /// Disables an API credential.
    pub async fn disable_credential(&self, id: &str, actor: &Principal) -> Result<()> {
        let audit = actor.audit("credential.disable", id.to_owned(), json!({}));
        let r = self.store.disable_credential(id, audit).await;
        self.cred_epoch.fetch_add(1, Ordering::AcqRel);
        r.map_err(not_found("credential"))
    }

    /// Resolves a bearer token to a principal, or None if it is not valid now.
    pub async fn principal_from_token(&self, token: &str) -> Result<Option<Principal>> {
        let Some((id, secret)) = split_token(token, "tsa_") else {
            return Ok(None);
        };
        let Some(c) = self.store.credential(id).await? else {
            return Ok(None);
        };
        let hash = c.token_hash.as_deref().unwrap_or("");
        if c.kind != "token"
            || !secret_matches(secret, hash)
            || c.disabled
            || c.expires_at <= now_unix()
        {
            return Ok(None);
        }
        Ok(Some(Principal::Credential {
            id: c.id,
            name: c.name,
            role: c.role,
        }))
    }

    /// Resolves a verified client certificate to a principal, or None if it is
    /// unknown to the ledger, revoked, or a disabled credential.
    pub async fn principal_from_cert(&self, der: &[u8]) -> Result<Option<Principal>> {
        let epoch = (
            *self.rev_version.borrow(),
            self.cred_epoch.load(Ordering::Acquire),
        );
        if let Some(p) = self.principals.get(&der.to_vec(), epoch) {
            return Ok(p);
        }
        let p = self.principal_from_cert_uncached(der).await?;
        self.principals.put(der.to_vec(), p.clone(), epoch);
        Ok(p)
    }

    async fn principal_from_cert_uncached(&self, der: &[u8]) -> Result<Option<Principal>> {
        let Ok(info) = tessera_core::svid::check_leaf(der) else {
            return Ok(None);
        };
        let Some(CertRow {
            issued: cert,
            revoked_at,
            revocation_reason,
            revoked_by_ca,
        }) = self.store.get_cert(&info.serial).await.optional()?
        else {
            return Ok(None);
        };
        // The serial is public: only the exact certificate we issued counts (in
        // intermediate mode the TLS layer also accepts other children of the root).
        if cert.der != der || cert.not_after <= now_unix() {
            return Ok(None);
        }
        if revoked_at.is_some() {
            // Only a leaf revoked BY its generation's revocation re-issues: one
            // an operator revoked (with any reason, ca_compromise included)
            // stays revoked when its generation falls later.
            if revoked_by_ca
                && revocation_reason == Some(REASON_CA_COMPROMISE)
                && !cert.entry_id.is_empty()
                && self.issuer_revoked(&cert.ca_id)
            {
                return Ok(Some(Principal::Reissue {
                    spiffe_id: info.spiffe_id,
                    serial: cert.serial,
                }));
            }
            return Ok(None);
        }
        if cert.entry_id.is_empty() {
            let Some(c) = self
                .store
                .credential_by_spiffe_id(info.spiffe_id.as_str())
                .await?
            else {
                return Ok(None);
            };
            if c.disabled || c.expires_at <= now_unix() {
                return Ok(None);
            }
            return Ok(Some(Principal::Credential {
                id: c.id,
                name: c.name,
                role: c.role,
            }));
        }
        // The ledger holds this exact DER: the ID it carries is the one recorded.
        match self.node_usable(&info.spiffe_id).await? {
            Some(true) => Ok(Some(Principal::Node {
                spiffe_id: info.spiffe_id,
                serial: cert.serial,
            })),
            // A banned (or never recorded) node's certificate counts for nothing.
            Some(false) => Ok(None),
            None => Ok(Some(Principal::Workload {
                spiffe_id: info.spiffe_id,
                serial: cert.serial,
            })),
        }
    }
}
