//! `tessera node`: hosts running tessera-agent, and banning them.

use crate::request::{Ctx, escape};
use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use serde_json::json;
use tessera_core::api;

/// `tessera node …`.
#[derive(Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    List,
    /// Show one node.
    Show {
        /// The node name (last segment of spiffe://<td>/tessera/agent/<name>).
        name: String,
    },
    /// Ban a node: its certificate is refused at once and every certificate
    /// issued through it is revoked.
    Ban {
        /// The node name.
        name: String,
    },
    /// Unban a node (certificates revoked by the ban stay revoked).
    Unban {
        /// The node name.
        name: String,
    },
}

/// Runs one `node` subcommand.
pub async fn run(ctx: &Ctx, cmd: NodeCmd) -> Result<()> {
    match cmd {
        NodeCmd::List => ctx.list("/v1/nodes", |l: &api::NodeList| &l.items).await,
        NodeCmd::Show { name } => {
            let n: api::NodeInfo = ctx.get(&format!("/v1/nodes/{}", escape(&name))).await?;
            ctx.out.record(&n)
        }
        NodeCmd::Ban { name } => ban(ctx, &name, "ban").await,
        NodeCmd::Unban { name } => ban(ctx, &name, "unban").await,
    }
}

/// `node ban` or `node unban` (`verb`), reporting what the ban revoked.
async fn ban(ctx: &Ctx, name: &str, verb: &str) -> Result<()> {
    let path = format!("/v1/nodes/{}/{verb}", escape(name));
    let r: api::NodeBanResponse = ctx.send(Method::POST, &path, &json!({})).await?;
    ctx.out.show(&r, || {
        format!(
            "{verb}ned node {name}; revoked {} certificate(s); feed version {}\n",
            r.revoked.len(),
            r.version
        )
    })
}
