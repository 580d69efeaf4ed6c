//! `tessera denials`: connections refused by sidecars, fleet-wide.

use crate::flags::parse_duration;
use crate::output::Failure;
use crate::request::{Ctx, Query};
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use tessera_core::api;

/// `tessera denials …`.
#[derive(Subcommand)]
pub enum DenialsCmd {
    /// List refused connections, newest first.
    List {
        /// Only those within this long before now (e.g. 1h, 30m, 7d).
        #[arg(long, value_parser = parse_duration)]
        since: Option<u64>,
        /// Only those refused by this sidecar (its SPIFFE ID).
        #[arg(long)]
        destination: Option<String>,
        /// Only those from this peer (its SPIFFE ID).
        #[arg(long)]
        source: Option<String>,
        /// Only those on this listener or upstream.
        #[arg(long)]
        listener: Option<String>,
        /// no_certificate, untrusted_chain, expired, revoked, not_allowed,
        /// invalid_svid, handshake_timeout or tls_error.
        #[arg(long)]
        reason: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Runs one `denials` subcommand.
pub async fn run(ctx: &Ctx, cmd: DenialsCmd) -> Result<()> {
    match cmd {
        DenialsCmd::List {
            since,
            destination,
            source,
            listener,
            reason,
            limit,
        } => {
            // `--since` is relative for the operator; the server takes the
            // absolute time.
            let since = since.map(|secs| {
                let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                tessera_core::now_unix().saturating_sub(secs)
            });
            let reason = reason.map(|r| parse_reason(&r)).transpose()?;
            let path = Query::new("/v1/denials")
                .param("limit", limit)
                .opt("since", since)
                .opt("reason", reason.map(api::DenialReason::as_str))
                .opt("destination", destination)
                .opt("source", source)
                .opt("listener", listener);
            ctx.list(path.path(), |l: &api::DenialList| &l.items).await
        }
    }
}

/// `--reason`, checked here so a typo is a usage error naming the choices.
fn parse_reason(r: &str) -> Result<api::DenialReason> {
    serde_json::from_value(json!(r)).map_err(|_| {
        Failure::usage(format!(
            "--reason: {r:?} is not one of {}",
            api::DenialReason::ALL.map(|k| k.as_str()).join(", ")
        ))
        .into()
    })
}
