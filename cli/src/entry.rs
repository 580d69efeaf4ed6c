//! `tessera entry`: registration entries (which workloads get which SPIFFE ID).

use crate::flags::parse_duration;
use crate::output::table;
use crate::request::{Ctx, Query, escape};
use anyhow::Result;
use clap::{Args, Subcommand};
use hyper::Method;
use tessera_core::api;

/// An entry's fields, shared by `entry create` and `entry update`.
#[derive(Args)]
pub struct EntryFields {
    /// SPIFFE ID the entry grants (in the CA's trust domain).
    #[arg(long)]
    spiffe_id: String,
    /// Selector type:value; repeat; all must match.
    #[arg(long = "selector", required = true)]
    selectors: Vec<String>,
    /// Node or token SPIFFE ID that may claim the entry.
    #[arg(long)]
    parent_id: Option<String>,
    /// Certificate lifetime (e.g. 1h, 30m, 3600).
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<u64>,
    /// DNS SAN to include; repeat.
    #[arg(long = "dns-name")]
    dns_names: Vec<String>,
    /// Operator note.
    #[arg(long)]
    note: Option<String>,
    /// Workload API hint for this entry's SVIDs (e.g. web), 1-64 printable ASCII characters.
    #[arg(long)]
    hint: Option<String>,
    /// A foreign trust domain whose bundle the workload receives (it needs a
    /// federation relationship); repeat.
    #[arg(long = "federates-with")]
    federates_with: Vec<String>,
}

impl EntryFields {
    /// The request body these fields make.
    fn request(self) -> api::EntryRequest {
        api::EntryRequest {
            spiffe_id: self.spiffe_id,
            selectors: self.selectors,
            parent_id: self.parent_id,
            ttl_seconds: self.ttl,
            dns_names: self.dns_names,
            note: self.note,
            hint: self.hint,
            federates_with: self.federates_with,
        }
    }
}

/// `tessera entry …`.
#[derive(Subcommand)]
pub enum EntryCmd {
    /// Create an entry.
    Create(EntryFields),
    /// List entries.
    List {
        /// Only entries for this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
    },
    /// Show one entry.
    Show { id: String },
    /// Replace an entry's fields.
    Update {
        id: String,
        #[command(flatten)]
        fields: EntryFields,
    },
    /// Delete an entry (renewals under it stop).
    Delete { id: String },
}

/// Runs one `entry` subcommand.
pub async fn run(ctx: &Ctx, cmd: EntryCmd) -> Result<()> {
    match cmd {
        EntryCmd::Create(fields) => save(ctx, Method::POST, "/v1/entries", fields).await,
        EntryCmd::List { spiffe_id } => {
            let path = Query::new("/v1/entries").opt("spiffe_id", spiffe_id);
            ctx.list(path.path(), |l: &api::EntryList| &l.items).await
        }
        EntryCmd::Show { id } => {
            let e: api::Entry = ctx.get(&format!("/v1/entries/{}", escape(&id))).await?;
            ctx.out.record(&e)
        }
        EntryCmd::Update { id, fields } => {
            let path = format!("/v1/entries/{}", escape(&id));
            save(ctx, Method::PUT, &path, fields).await
        }
        EntryCmd::Delete { id } => ctx.delete("/v1/entries", &id, "deleted", "entry").await,
    }
}

/// Creates or replaces an entry; the answer is shown as a one-row table.
async fn save(ctx: &Ctx, method: Method, path: &str, fields: EntryFields) -> Result<()> {
    let e: api::Entry = ctx.send(method, path, &fields.request()).await?;
    ctx.out.show(&e, || table(std::slice::from_ref(&e)))
}
