//! `tessera webhook`: signed HTTPS deliveries of events to receivers.

use crate::connection::read;
use crate::events::parse_kinds;
use crate::output::Failure;
use crate::request::{Ctx, escape};
use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use std::path::{Path, PathBuf};
use tessera_core::api;

/// `tessera webhook …`.
#[derive(Subcommand)]
pub enum WebhookCmd {
    /// Register an HTTPS receiver; prints its signing secret, shown only once.
    Add {
        /// The receiver, https://host[:port]/path.
        #[arg(long)]
        url: String,
        /// An event kind to deliver; repeat.
        #[arg(long = "kind", required = true)]
        kinds: Vec<String>,
        /// Trust anchors (PEM) for a receiver with a private CA.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Operator note.
        #[arg(long)]
        description: Option<String>,
    },
    /// List webhooks (never their secrets).
    List,
    /// Remove a webhook and its delivery log.
    Remove { id: String },
    /// A webhook's delivery attempts, newest first.
    Deliveries {
        id: String,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `--ca-file`: PEM is text, so anything else is refused here.
fn read_pem_text(path: &Path) -> Result<String> {
    String::from_utf8(read(path, "--ca-file")?)
        .map_err(|_| Failure::usage("--ca-file: not PEM text").into())
}

/// Runs one `webhook` subcommand.
pub async fn run(ctx: &Ctx, cmd: WebhookCmd) -> Result<()> {
    match cmd {
        WebhookCmd::Add {
            url,
            kinds,
            ca_file,
            description,
        } => {
            // Fields in this order: a bad kind is reported before an unreadable file.
            let req = api::WebhookCreateRequest {
                url,
                kinds: parse_kinds(&kinds)?,
                ca_pem: ca_file.as_deref().map(read_pem_text).transpose()?,
                description,
            };
            let w: api::WebhookCreated = ctx.send(Method::POST, "/v1/webhooks", &req).await?;
            ctx.out.show(&w, || {
                format!(
                    "webhook {}\nsecret {}\n(the secret is shown only now: receivers verify Tessera-Signature with it)\n",
                    w.webhook.id, w.secret
                )
            })
        }
        WebhookCmd::List => {
            ctx.list("/v1/webhooks", |l: &api::WebhookList| &l.items)
                .await
        }
        WebhookCmd::Remove { id } => ctx.delete("/v1/webhooks", &id, "removed", "webhook").await,
        WebhookCmd::Deliveries { id, limit } => {
            let path = format!("/v1/webhooks/{}/deliveries?limit={limit}", escape(&id));
            ctx.list(&path, |l: &api::WebhookDeliveryList| &l.items)
                .await
        }
    }
}
