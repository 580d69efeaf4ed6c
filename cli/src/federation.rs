//! `tessera federation`: relationships with foreign trust domains, whose
//! SPIFFE bundle endpoints the CA polls.

use crate::connection::read;
use crate::output::Failure;
use crate::request::{Ctx, escape};
use anyhow::Result;
use clap::{Args, Subcommand};
use hyper::Method;
use std::path::{Path, PathBuf};
use tessera_core::api;

/// `tessera federation …`.
#[derive(Subcommand)]
pub enum FederationCmd {
    /// Federate with a foreign trust domain (admin): `--url` is required,
    /// the profile defaults to https_spiffe.
    Add {
        /// The foreign trust domain.
        trust_domain: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Relationships with their health (admin, auditor).
    List,
    /// One relationship, its health and the bundle held (admin, auditor).
    Show { trust_domain: String },
    /// Change a relationship; options not given keep their value (admin).
    Update {
        trust_domain: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Remove a relationship and the foreign bundle held (admin).
    Remove { trust_domain: String },
    /// Poll the foreign bundle endpoint now (admin).
    Refresh { trust_domain: String },
}

/// A relationship's endpoint settings, for `add` and `update`.
#[derive(Args)]
pub struct Settings {
    /// The bundle endpoint, https://host[:port][/path].
    #[arg(long)]
    url: Option<String>,
    /// https_spiffe or https_web.
    #[arg(long)]
    profile: Option<String>,
    /// https_spiffe: the endpoint's SPIFFE ID (in the foreign trust domain).
    #[arg(long)]
    endpoint_spiffe_id: Option<String>,
    /// A bundle of the foreign trust domain (PEM or SPIFFE bundle JSON): for
    /// first contact (required for https_spiffe), or replacing the one held.
    #[arg(long)]
    bundle_file: Option<PathBuf>,
}

impl Settings {
    /// The settings as an update (absent ones unchanged), the file read.
    fn request(self) -> Result<api::FederationUpdateRequest> {
        Ok(api::FederationUpdateRequest {
            bundle_endpoint_url: self.url,
            profile: self.profile,
            endpoint_spiffe_id: self.endpoint_spiffe_id,
            bootstrap_bundle: self.bundle_file.as_deref().map(read_bundle).transpose()?,
        })
    }
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
    let f: api::Federation = match cmd {
        FederationCmd::Add {
            trust_domain,
            settings,
        } => {
            let u = settings.request()?;
            let req = api::FederationCreateRequest {
                trust_domain,
                bundle_endpoint_url: u
                    .bundle_endpoint_url
                    .ok_or_else(|| Failure::usage("federation add: --url is required"))?,
                profile: u.profile.unwrap_or_else(|| "https_spiffe".into()),
                endpoint_spiffe_id: u.endpoint_spiffe_id,
                bootstrap_bundle: u.bootstrap_bundle,
            };
            ctx.send(Method::POST, "/v1/federation", &req).await?
        }
        FederationCmd::List => {
            return ctx
                .list("/v1/federation", |l: &api::FederationList| &l.items)
                .await;
        }
        FederationCmd::Show { trust_domain } => ctx.get(&path_of(&trust_domain)).await?,
        FederationCmd::Update {
            trust_domain,
            settings,
        } => {
            let req = settings.request()?;
            ctx.send(Method::PUT, &path_of(&trust_domain), &req).await?
        }
        FederationCmd::Remove { trust_domain } => {
            return ctx
                .delete(
                    "/v1/federation",
                    &trust_domain,
                    "removed",
                    "federation with",
                )
                .await;
        }
        FederationCmd::Refresh { trust_domain } => {
            let path = format!("{}/refresh", path_of(&trust_domain));
            ctx.call(Method::POST, &path, None).await?
        }
    };
    ctx.out.record(&f)
}
