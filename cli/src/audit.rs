//! `tessera audit`: the hash-chained audit log, listed or verified end to end.

use crate::output::{Failure, table};
use crate::request::Ctx;
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use tessera_core::api;

/// Records per request while verifying: the most one page may hold.
const VERIFY_PAGE: u32 = 1000;

/// `tessera audit …`.
#[derive(Subcommand)]
pub enum AuditCmd {
    /// List audit records.
    List {
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Verify the whole hash chain.
    Verify,
}

/// Runs one `audit` subcommand.
pub async fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::List { after, limit } => {
            let l = page(ctx, after, limit).await?;
            ctx.out.show(&l, || table(&l.items))
        }
        AuditCmd::Verify => verify(ctx).await,
    }
}

/// Up to `limit` records after sequence number `after`.
async fn page(ctx: &Ctx, after: i64, limit: u32) -> Result<api::AuditList> {
    ctx.get(&format!("/v1/audit?after={after}&limit={limit}"))
        .await
}

/// Reads the whole log page by page, checking that no record is missing and
/// that each hash covers its predecessor; exit 1 if the chain is broken.
async fn verify(ctx: &Ctx) -> Result<()> {
    let mut after = 0;
    let mut prev = [0u8; 32];
    let mut count = 0;
    loop {
        let l = page(ctx, after, VERIFY_PAGE).await?;
        if l.items.is_empty() {
            break;
        }
        if l.items[0].seq != after + 1 {
            return Err(Failure::new(
                1,
                format!("audit chain broken: record {} is missing", after + 1),
            )
            .into());
        }
        prev = tessera_core::audit::verify_chain(prev, &l.items).map_err(|seq| {
            Failure::new(
                1,
                format!("audit chain broken at record {seq}: hash does not match"),
            )
        })?;
        count += l.items.len();
        after = l.items.last().map(|r| r.seq).unwrap_or(after);
    }
    let v = json!({"intact": true, "records": count, "head": hex::encode(prev)});
    ctx.out.show(&v, || {
        format!(
            "audit chain intact: {count} records, head {}\n",
            hex::encode(prev)
        )
    })
}
