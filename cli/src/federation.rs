//! `tessera federation`: relationships with foreign trust domains, whose
//! SPIFFE bundle endpoints the CA polls.

use crate::connection::read;
use crate::output::Failure;
use crate::request::{Ctx, escape};
use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use std::path::{Path, PathBuf};
use tessera_core::api;

/// `tessera federation …`.
#[derive(Subcommand)]
pub enum FederationCmd {
    /// Federate with a foreign trust domain (admin).
    Add {
        /// The foreign trust domain.
        trust_domain: String,
        /// Its bundle endpoint, https://host[:port][/path].
        #[arg(long)]
        url: String,
        /// https_spiffe or https_web.
        #[arg(long, default_value = "https_spiffe")]
        profile: String,
        /// https_spiffe: the endpoint's SPIFFE ID (in the foreign trust domain).
        #[arg(long)]
        endpoint_spiffe_id: Option<String>,
        /// The foreign bundle for first contact (PEM or SPIFFE bundle JSON;
        /// required for https_spiffe).
        #[arg(long)]
        bundle_file: Option<PathBuf>,
    },
    /// Relationships with their health (admin, auditor).
    List,
    /// One relationship, its health and the bundle held (admin, auditor).
    Show { trust_domain: String },
    /// Change a relationship; options not given keep their value (admin).
    Update {
        trust_domain: String,
        /// New bundle endpoint URL.
        #[arg(long)]
        url: Option<String>,
        /// New profile.
        #[arg(long)]
        profile: Option<String>,
        /// New endpoint SPIFFE ID.
        #[arg(long)]
        endpoint_spiffe_id: Option<String>,
        /// A bundle replacing the one held (re-bootstrap).
        #[arg(long)]
        bundle_file: Option<PathBuf>,
    },
    /// Remove a relationship and the foreign bundle held (admin).
    Remove { trust_domain: String },
    /// Poll the foreign bundle endpoint now (admin).
    Refresh { trust_domain: String },
}

/// `--bundle-file`: PEM or JSON, text either way.
fn read_bundle(path: &Path) -> Result<String> {
    String::from_utf8(read(path, "--bundle-file")?)
        .map_err(|_| Failure::usage("--bundle-file: not PEM or JSON text").into())
}

fn path_of(td: &str) -> String {
    format!("/v1/federation/{}", escape(td))
}

/// Runs one `federation` subcommand.
pub async fn run(ctx: &Ctx, cmd: FederationCmd) -> Result<()> {
    match cmd {
        FederationCmd::Add {
            trust_domain,
            url,
            profile,
            endpoint_spiffe_id,
            bundle_file,
        } => {
            let req = api::FederationCreateRequest {
                trust_domain,
                bundle_endpoint_url: url,
                profile,
                endpoint_spiffe_id,
                bootstrap_bundle: bundle_file.as_deref().map(read_bundle).transpose()?,
            };
            let f: api::Federation = ctx.send(Method::POST, "/v1/federation", &req).await?;
            ctx.out.record(&f)
        }
        FederationCmd::List => {
            ctx.list("/v1/federation", |l: &api::FederationList| &l.items)
                .await
        }
        FederationCmd::Show { trust_domain } => {
            let f: api::Federation = ctx.get(&path_of(&trust_domain)).await?;
            ctx.out.record(&f)
        }
        FederationCmd::Update {
            trust_domain,
            url,
            profile,
            endpoint_spiffe_id,
            bundle_file,
        } => {
            let req = api::FederationUpdateRequest {
                bundle_endpoint_url: url,
                profile,
                endpoint_spiffe_id,
                bootstrap_bundle: bundle_file.as_deref().map(read_bundle).transpose()?,
            };
            let f: api::Federation = ctx.send(Method::PUT, &path_of(&trust_domain), &req).await?;
            ctx.out.record(&f)
        }
        FederationCmd::Remove { trust_domain } => {
            ctx.delete(
                "/v1/federation",
                &trust_domain,
                "removed",
                "federation with",
            )
            .await
        }
        FederationCmd::Refresh { trust_domain } => {
            let path = format!("{}/refresh", path_of(&trust_domain));
            let f: api::Federation = ctx.call(Method::POST, &path, None).await?;
            ctx.out.record(&f)
        }
    }
}
