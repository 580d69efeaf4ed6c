//! `tessera cert`: issue (the key is generated here and never leaves this
//! machine), revoke, list and show certificates. `cert renew` is the `renew`
//! module and `cert inspect` is local (`output::inspect`); both run before
//! the CLI connects with the operator's credentials.

use crate::flags::parse_duration;
use crate::output::Failure;
use crate::renew;
use crate::request::{Ctx, Query, escape};
use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use hyper::Method;
use serde_json::json;
use std::path::{Path, PathBuf};
use tessera_core::api;
use tessera_workload::{KeyAlgorithm, PemFile, PemSet, PrivateKey, new_key_and_csr};

/// The key types `cert issue` and `cert renew` can generate.
#[derive(Clone, Copy, ValueEnum)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

/// `tessera cert …`.
#[derive(Subcommand)]
pub enum CertCmd {
    /// Generate a key here and get a certificate for it (the key never leaves this machine).
    Issue {
        /// SPIFFE ID to issue for (needs issuer or admin credentials).
        #[arg(long, conflicts_with = "token", required_unless_present = "token")]
        spiffe_id: Option<String>,
        /// Join token to redeem instead (needs no credentials, only --ca-bundle).
        #[arg(long, env = "TESSERA_JOIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Directory for key.pem (0600), cert.pem, chain.pem, bundle.pem.
        #[arg(long)]
        out_dir: PathBuf,
        /// Key type.
        #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
        key_type: KeyType,
        /// Requested lifetime.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<u64>,
    },
    /// Renew certificate files over mTLS with a new key, once or (--watch)
    /// continuously: --cert FILE --key FILE --bundle FILE (or --cert-dir DIR).
    Renew(renew::RenewArgs),
    /// Revoke by serial, SPIFFE ID or entry.
    Revoke {
        #[arg(long, group = "sel")]
        serial: Option<String>,
        #[arg(long, group = "sel")]
        spiffe_id: Option<String>,
        #[arg(long, group = "sel")]
        entry_id: Option<String>,
        /// unspecified, key_compromise, ca_compromise, affiliation_changed,
        /// superseded, cessation_of_operation, privilege_withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// List certificates.
    List {
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Only live certificates expiring within this duration.
        #[arg(long, value_parser = parse_duration)]
        expiring_within: Option<u64>,
        /// Only revoked (true) or only unrevoked (false).
        #[arg(long)]
        revoked: Option<bool>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one certificate's ledger record.
    Show { serial: String },
    /// Inspect a certificate file locally (no server).
    Inspect {
        file: PathBuf,
        /// Run the X.509-SVID and Tessera profile checks; exit 1 on failure.
        #[arg(long)]
        check: bool,
    },
}

impl CertCmd {
    /// Whether the request needs the operator's credentials: redeeming a
    /// join token authenticates with the token alone.
    pub fn needs_credentials(&self) -> bool {
        !matches!(self, CertCmd::Issue { token: Some(_), .. })
    }
}

/// Runs one `cert` subcommand that talks to the CA with a [`Ctx`].
pub async fn run(ctx: &Ctx, cmd: CertCmd) -> Result<()> {
    match cmd {
        CertCmd::Issue {
            spiffe_id,
            token,
            out_dir,
            key_type,
            ttl,
        } => issue(ctx, spiffe_id, token, &out_dir, key_type, ttl).await,
        CertCmd::Revoke {
            serial,
            spiffe_id,
            entry_id,
            reason,
        } => {
            let reason: api::RevocationReason =
                serde_json::from_value(json!(reason)).map_err(|_| {
                    Failure::usage(format!(
                        "--reason: {reason:?} is not an RFC 5280 reason name"
                    ))
                })?;
            if serial.is_none() && spiffe_id.is_none() && entry_id.is_none() {
                return Err(
                    Failure::usage("give one of --serial, --spiffe-id or --entry-id").into(),
                );
            }
            let req = api::RevokeRequest {
                serial,
                spiffe_id,
                entry_id,
                reason,
            };
            let r: api::RevokeResponse = ctx.send(Method::POST, "/v1/revocations", &req).await?;
            ctx.out.show(&r, || {
                let mut s = format!(
                    "revoked {} certificate(s); feed version {}\n",
                    r.revoked.len(),
                    r.version
                );
                for serial in &r.revoked {
                    s += &format!("  {serial}\n");
                }
                s
            })
        }
        CertCmd::List {
            spiffe_id,
            expiring_within,
            revoked,
            limit,
        } => {
            let path = Query::new("/v1/certs")
                .param("limit", limit)
                .opt("spiffe_id", spiffe_id)
                .opt("expiring_within", expiring_within)
                .opt("revoked", revoked);
            ctx.list(path.path(), |l: &api::CertificateList| &l.items)
                .await
        }
        CertCmd::Show { serial } => {
            let c: api::CertificateRecord =
                ctx.get(&format!("/v1/certs/{}", escape(&serial))).await?;
            ctx.out.show(&c, || {
                // Only the JSON output carries the PEM.
                let mut v = serde_json::to_value(&c).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.remove("certificate");
                }
                crate::output::kv(&v)
            })
        }
        CertCmd::Renew(_) | CertCmd::Inspect { .. } => {
            unreachable!("handled before connecting")
        }
    }
}

/// `cert issue`: a new key here, a certificate for it by SPIFFE ID (operator
/// credentials) or by redeeming a join token, and the four files in `out_dir`.
async fn issue(
    ctx: &Ctx,
    spiffe_id: Option<String>,
    token: Option<String>,
    out_dir: &Path,
    key_type: KeyType,
    ttl: Option<u64>,
) -> Result<()> {
    let (key, csr) = new_key_and_csr(key_type.into())?;
    let issued: api::IssuedCertificate = match (spiffe_id, token) {
        (_, Some(token)) => {
            if ttl.is_some() {
                return Err(
                    Failure::usage("--ttl: a join token issues with its entry's lifetime").into(),
                );
            }
            let req = api::RedeemRequest { token, csr };
            ctx.send(Method::POST, "/v1/certs/redeem", &req).await?
        }
        (Some(spiffe_id), None) => {
            let req = api::IssueRequest {
                spiffe_id,
                csr,
                ttl_seconds: ttl,
            };
            ctx.send(Method::POST, "/v1/certs", &req).await?
        }
        (None, None) => return Err(Failure::usage("give --spiffe-id or --token").into()),
    };
    write_cert_dir(out_dir, &key, &issued)?;
    ctx.out.show(&issued_summary(&issued, out_dir), || {
        format!(
            "issued {} serial {} (expires {})\nwrote {}/{{key,cert,chain,bundle}}.pem\n",
            issued.spiffe_id,
            issued.serial,
            issued.not_after,
            out_dir.display()
        )
    })
}

/// What `cert issue --output json` prints: the certificate's facts and where
/// the files went, never the key.
fn issued_summary(i: &api::IssuedCertificate, dir: &Path) -> serde_json::Value {
    json!({
        "serial": i.serial, "spiffe_id": i.spiffe_id, "not_before": i.not_before, "not_after": i.not_after,
        "attestation_hash": i.attestation_hash, "dir": dir.display().to_string(),
    })
}

impl From<KeyType> for KeyAlgorithm {
    fn from(k: KeyType) -> Self {
        match k {
            KeyType::EcdsaP256 => KeyAlgorithm::EcdsaP256,
            KeyType::EcdsaP384 => KeyAlgorithm::EcdsaP384,
            KeyType::Ed25519 => KeyAlgorithm::Ed25519,
        }
    }
}

/// Writes key.pem (0600), cert.pem (leaf and chain), chain.pem and
/// bundle.pem, each atomically, the certificate last.
fn write_cert_dir(dir: &Path, key: &PrivateKey, issued: &api::IssuedCertificate) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--out-dir: creating {}", dir.display()))?;
    let cert = format!("{}{}", issued.certificate, issued.chain);
    let key = key.to_pem();
    let (key_file, cert_file) = (dir.join("key.pem"), dir.join("cert.pem"));
    let (chain_file, bundle_file) = (dir.join("chain.pem"), dir.join("bundle.pem"));
    PemSet {
        bundle: Some(PemFile::public(&bundle_file, issued.bundle.as_bytes())),
        chain: Some(PemFile::public(&chain_file, issued.chain.as_bytes())),
        key: Some(PemFile::private(&key_file, key.as_bytes())),
        cert: Some(PemFile::public(&cert_file, cert.as_bytes())),
    }
    .write()?;
    Ok(())
}
