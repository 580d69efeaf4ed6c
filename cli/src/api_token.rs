//! `tessera api-token`: scoped API tokens for automation, and the list of
//! every API credential (client certificates too).

use crate::flags::parse_duration;
use crate::output::Failure;
use crate::request::Ctx;
use anyhow::Result;
use clap::Subcommand;
use tessera_core::api;

/// `tessera api-token …`.
#[derive(Subcommand)]
pub enum ApiTokenCmd {
    /// Create a scoped API token (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// admin, registrar, issuer or auditor.
        #[arg(long)]
        role: String,
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<u64>,
    },
    /// List API credentials.
    List,
    /// Disable a credential.
    Delete { id: String },
}

/// Runs one `api-token` subcommand.
pub async fn run(ctx: &Ctx, cmd: ApiTokenCmd) -> Result<()> {
    match cmd {
        ApiTokenCmd::Create { name, role, ttl } => {
            let req = api::ApiTokenCreateRequest {
                name,
                role: api::Role::parse(&role)
                    .ok_or_else(|| Failure::usage("--role: admin, registrar, issuer or auditor"))?,
                ttl_seconds: ttl,
            };
            ctx.create_secret("/v1/credentials", &req, |t: &api::ApiTokenCreated| &t.token)
                .await
        }
        ApiTokenCmd::List => {
            ctx.list("/v1/credentials", |l: &api::ApiCredentialList| &l.items)
                .await
        }
        ApiTokenCmd::Delete { id } => {
            ctx.delete("/v1/credentials", &id, "disabled", "credential")
                .await
        }
    }
}
