//! `tessera crl`: the active CA's certificate revocation list.

use crate::output::{self, Failure};
use crate::request::Ctx;
use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use std::path::PathBuf;

/// `tessera crl …`.
#[derive(Subcommand)]
pub enum CrlCmd {
    /// Fetch the active CA's CRL and list its serials.
    Fetch {
        /// Save it here (DER, or PEM with --format pem).
        #[arg(long)]
        out: Option<PathBuf>,
        /// der or pem.
        #[arg(long, default_value = "der")]
        format: String,
    },
}

/// Runs one `crl` subcommand.
pub async fn run(ctx: &Ctx, cmd: CrlCmd) -> Result<()> {
    match cmd {
        CrlCmd::Fetch { out, format } => {
            if format != "der" && format != "pem" {
                return Err(Failure::usage("--format: der or pem").into());
            }
            // Always fetched as DER: the listing parses it, and PEM is only
            // an encoding of the same bytes for the saved file.
            let der = ctx
                .call_raw(Method::GET, "/v1/crl?format=der", None)
                .await?;
            output::crl(&ctx.out, &der, out.as_deref(), &format)
        }
    }
}
