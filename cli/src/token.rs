//! `tessera token`: single-use join tokens that redeem for an entry.

use crate::flags::parse_duration;
use crate::request::Ctx;
use anyhow::Result;
use clap::Subcommand;
use tessera_core::api;

/// `tessera token …`.
#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a single-use join token for an entry.
    Create {
        /// The entry the token redeems for.
        #[arg(
            long,
            conflicts_with = "spiffe_id",
            required_unless_present = "spiffe_id"
        )]
        entry_id: Option<String>,
        /// Or the SPIFFE ID whose entry it redeems for.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Lifetime (default 10m).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<u64>,
    },
    /// List join tokens (never their secrets).
    List,
    /// Delete a join token.
    Delete { id: String },
}

/// Runs one `token` subcommand.
pub async fn run(ctx: &Ctx, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            entry_id,
            spiffe_id,
            ttl,
        } => {
            let req = api::TokenCreateRequest {
                entry_id,
                spiffe_id,
                ttl_seconds: ttl,
            };
            ctx.create_secret("/v1/tokens", &req, |t: &api::TokenCreated| &t.token)
                .await
        }
        TokenCmd::List => ctx.list("/v1/tokens", |l: &api::TokenList| &l.items).await,
        TokenCmd::Delete { id } => ctx.delete("/v1/tokens", &id, "deleted", "token").await,
    }
}
