//! CAs whose certificate comes from outside: a key and certificate imported
//! at first start (`ca.import_*`), and the offline intermediate flow
//! (`tessera-ca ca csr` / `ca import-signed`): a key made and sealed here, a
//! CSR for the operator's root, and the signed certificate checked and
//! completed into a generation. Both only write the store, so they also run
//! beside a live server.

use super::{KeyAlgorithm, SigningCa};
use crate::authority::{AuthorityError, Principal, open_parts, sha256_hex};
use crate::config::Config;
use crate::keystore::Kek;
use crate::store::CaRow;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tessera_core::api::CaState;
use tessera_core::{now_unix, pem};

type Result<T, E = AuthorityError> = std::result::Result<T, E>;

/// The active generation `ca.import_cert` / `ca.import_key` (and, for an
/// intermediate, `ca.import_bundle`) name, its key sealed under the KEK.
pub(crate) fn imported_generation(cfg: &Config, kek: &Kek, now: i64) -> Result<CaRow> {
    let id = super::random_id()?;
    let cert_pem =
        std::fs::read(&cfg.ca.import_cert).map_err(AuthorityError::invalid_as("ca.import_cert"))?;
    let key_pem = std::fs::read_to_string(&cfg.ca.import_key)
        .map_err(AuthorityError::invalid_as("ca.import_key"))?;
    let bundle_pem = if cfg.ca.import_bundle.is_empty() {
        String::new()
    } else {
        std::fs::read_to_string(&cfg.ca.import_bundle)
            .map_err(AuthorityError::invalid_as("ca.import_bundle"))?
    };
    let mut certs = pem::certs(&cert_pem).map_err(AuthorityError::invalid_as("ca.import_cert"))?;
    let cert = certs.remove(0);
    let key_der = super::key_form::pkcs8_from_pem(&key_pem)
        .map_err(AuthorityError::invalid_as("ca.import_key"))?;
    let loaded = SigningCa::load(&id, cert.clone(), certs.clone(), &key_der)
        .map_err(AuthorityError::invalid_as("ca.import_key"))?;
    let self_signed = bundle_pem.is_empty();
    Ok(CaRow {
        state: CaState::Active,
        kind: if self_signed { "root" } else { "intermediate" }.into(),
        key_algorithm: loaded.algorithm.as_str().into(),
        cert_pem: Some(pem::encode("CERTIFICATE", &cert)),
        upstream_chain_pem: pem::encode_certs(certs.iter().map(|c| c.as_ref())),
        bundle_pem,
        key_sealed: kek.seal(&id, &key_der)?,
        not_before: loaded.not_before,
        not_after: loaded.not_after,
        prepared_at: now,
        activated_at: now,
        retired_at: 0,
        ended_at: 0,
        id,
    })
}

/// Intermediate mode, step 1: creates a key (sealed in the store) and returns a
/// CSR for the operator's root to sign. The CA stays `pending` until
/// [`import_signed_intermediate`]. Returns (CA ID, CSR PEM).
///
/// Used for the first intermediate and for every rotation of it, also while
/// the server runs (it only writes the store). Refused while another
/// generation is pending or prepared: one successor at a time.
pub async fn prepare_intermediate(cfg: &Config) -> Result<(String, String)> {
    let (td, store, kek) = open_parts(cfg).await?;
    let alg = KeyAlgorithm::parse(&cfg.ca.key_algorithm).unwrap_or_default();
    let id = super::random_id()?;
    let (csr, key_der) = super::intermediate_csr(&td, &id, alg)?;
    let row = CaRow {
        id: id.clone(),
        state: CaState::Pending,
        kind: "intermediate".into(),
        key_algorithm: alg.as_str().into(),
        cert_pem: None,
        upstream_chain_pem: String::new(),
        bundle_pem: String::new(),
        key_sealed: kek.seal(&id, &key_der)?,
        not_before: 0,
        not_after: 0,
        prepared_at: 0,
        activated_at: 0,
        retired_at: 0,
        ended_at: 0,
    };
    let audit = Principal::System.audit(
        "ca.prepare_intermediate",
        id.clone(),
        json!({"key_algorithm": alg.as_str()}),
    );
    store.prepare_ca(&row, audit).await?;
    tracing::info!(ca = %id, "pending intermediate CA created; CSR written for the operator's root");
    Ok((id, csr))
}

/// What [`import_signed_intermediate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedIntermediate {
    /// The CA's ID.
    pub id: String,
    /// `active` on first start, `prepared` when another generation is active
    /// (a rotation: published now, activated after the minimum overlap).
    pub state: CaState,
    /// Whether the signed certificate carries a NameConstraints extension.
    pub name_constrained: bool,
}

/// Refuses certificates whose URI name constraints rustls-webpki would reject.
fn refuse_uri_name_constraints(
    field: &'static str,
    certs: &[CertificateDer<'static>],
) -> Result<bool> {
    let mut present = false;
    for c in certs {
        let nc = super::name_constraints(c).map_err(AuthorityError::invalid_as(field))?;
        if nc.uri {
            return Err(AuthorityError::Invalid {
                field,
                reason: "carries URI name constraints, which rustls-webpki (Tessera's sidecars, \
                         CLI and API) rejects unconditionally: every certificate under it would \
                         be refused. Sign without URI name constraints (DNS and IP constraints \
                         are fine)"
                    .into(),
            });
        }
        present |= nc.present;
    }
    Ok(present)
}

/// Intermediate mode, step 2: takes the certificate the operator's root signed
/// for the pending CA, checks that it is a signing certificate for the pending
/// key, in this trust domain, signed by a certificate of `chain` or `bundle`,
/// outliving a maximum-lifetime leaf and free of URI name constraints, then
/// makes it the active CA (first start) or a prepared one (rotation; a running
/// server picks it up within a second). Nothing changes when it is refused.
pub async fn import_signed_intermediate(
    cfg: &Config,
    cert_pem: &[u8],
    bundle_pem: &[u8],
    chain_pem: Option<&[u8]>,
) -> Result<ImportedIntermediate> {
    let (td, store, kek) = open_parts(cfg).await?;
    let invalid = |field: &'static str, reason: String| AuthorityError::Invalid { field, reason };
    let cert = pem::certs(cert_pem)
        .map_err(AuthorityError::invalid_as("--cert"))?
        .remove(0);
    let anchors = pem::certs(bundle_pem).map_err(AuthorityError::invalid_as("--bundle"))?;
    let chain = match chain_pem {
        Some(p) => pem::certs(p).map_err(AuthorityError::invalid_as("--chain"))?,
        None => vec![],
    };
    let pending = store
        .list_cas()
        .await?
        .into_iter()
        .find(|c| c.state == CaState::Pending)
        .ok_or(AuthorityError::NotFound(
            "pending CA (run `tessera-ca ca csr` first)",
        ))?;
    let key = kek.open(&pending.id, &pending.key_sealed)?;
    let loaded = SigningCa::load(&pending.id, cert.clone(), chain.clone(), &key)
        .map_err(AuthorityError::invalid_as("--cert"))?;
    let parsed = tessera_core::svid::parse(&cert).map_err(AuthorityError::invalid_as("--cert"))?;
    let in_td = tessera_core::svid::uri_sans(&parsed)
        .iter()
        .all(|u| *u == td.id_string());
    if !in_td {
        return Err(invalid(
            "--cert",
            format!("URI SAN is not {}", td.id_string()),
        ));
    }
    let signed_by_upstream = chain.iter().chain(anchors.iter()).any(|issuer| {
        tessera_core::svid::parse(issuer)
            .ok()
            .is_some_and(|i| parsed.verify_signature(Some(i.public_key())).is_ok())
    });
    if !signed_by_upstream {
        return Err(invalid(
            "--cert",
            "not signed by any certificate in --chain or --bundle".into(),
        ));
    }
    let now = now_unix();
    if loaded.not_after <= now + cfg.issuance.max_ttl_seconds {
        return Err(invalid(
            "--cert",
            "expires before a maximum-lifetime leaf would (see issuance.max_ttl_seconds)".into(),
        ));
    }
    let name_constrained = refuse_uri_name_constraints("--cert", std::slice::from_ref(&cert))?;
    refuse_uri_name_constraints("--chain", &chain)?;
    refuse_uri_name_constraints("--bundle", &anchors)?;
    let audit = Principal::System.audit(
        "ca.import_signed",
        pending.id.clone(),
        json!({"subject": loaded.subject, "not_after": loaded.not_after,
                        "name_constrained": name_constrained,
                        "fingerprint": sha256_hex(&cert)}),
    );
    let state = store
        .complete_pending_ca(
            &pending.id,
            &pem::encode("CERTIFICATE", &cert),
            &pem::encode_certs(chain.iter().map(|c| c.as_ref())),
            &pem::encode_certs(anchors.iter().map(|c| c.as_ref())),
            loaded.not_before,
            loaded.not_after,
            audit,
        )
        .await?;
    tracing::info!(ca = %pending.id, state = %state, name_constrained, not_after = loaded.not_after,
                   "signed intermediate CA imported");
    Ok(ImportedIntermediate {
        id: pending.id,
        state,
        name_constrained,
    })
}
