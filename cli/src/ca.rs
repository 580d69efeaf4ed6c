//! `tessera ca`: CA generations, their rotation, and the trust bundle.

use crate::output::{Failure, table};
use crate::request::{Ctx, escape};
use anyhow::{Context, Result};
use clap::Subcommand;
use hyper::Method;
use std::path::PathBuf;
use tessera_core::api;

/// `tessera ca …`.
#[derive(Subcommand)]
pub enum CaCmd {
    /// Show the trust domain, CA generations, the rotation schedule and feed
    /// version; warns when the schedule has stalled.
    Status,
    /// List CA generations with their state and lifecycle times.
    List,
    /// Prepare the next generation: published in the bundle, not yet signing.
    Prepare,
    /// Activate a prepared generation (after the minimum overlap).
    Activate {
        /// CA generation ID.
        id: String,
    },
    /// Retire a generation: cancel a prepared (or pending intermediate) one, or remove a retired one from
    /// the bundle once no unexpired certificate depends on it.
    Retire {
        /// CA generation ID.
        id: String,
    },
    /// Prepare now and activate as soon as the minimum overlap has elapsed.
    Rotate,
    /// Emergency: revoke a generation (key compromise). It leaves the bundle at
    /// once, every certificate it signed is revoked, and holders re-issue.
    Revoke {
        /// CA generation ID.
        id: String,
        /// Required: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Print or save the trust bundle.
    Bundle {
        /// pem or jwks (SPIFFE bundle).
        #[arg(long, default_value = "pem")]
        format: String,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs one `ca` subcommand.
pub async fn run(ctx: &Ctx, cmd: CaCmd) -> Result<()> {
    match cmd {
        CaCmd::Status => {
            let s: api::CaStatus = ctx.get("/v1/ca").await?;
            if let Some(why) = &s.schedule.stalled {
                eprintln!("warning: CA rotation schedule has stalled: {why}");
            }
            for stale in &s.stale_federations {
                eprintln!("warning: {stale}");
            }
            ctx.out.show(&s, || status_text(&s, true))
        }
        CaCmd::List => {
            let s: api::CaStatus = ctx.get("/v1/ca").await?;
            ctx.out.show(&s.cas, || status_text(&s, false))
        }
        CaCmd::Prepare => step(ctx, "/v1/ca/prepare").await,
        CaCmd::Rotate => step(ctx, "/v1/ca/rotate").await,
        CaCmd::Activate { id } => step(ctx, &format!("/v1/ca/{}/activate", escape(&id))).await,
        CaCmd::Retire { id } => step(ctx, &format!("/v1/ca/{}/retire", escape(&id))).await,
        CaCmd::Revoke { id, yes } => revoke(ctx, &id, yes).await,
        CaCmd::Bundle { format, out } => bundle(ctx, &format, out).await,
    }
}

/// A lifecycle step (prepare, rotate, activate, retire): the server answers
/// with the new status, shown in full.
async fn step(ctx: &Ctx, path: &str) -> Result<()> {
    let s: api::CaStatus = ctx.call(Method::POST, path, None).await?;
    ctx.out.show(&s, || status_text(&s, true))
}

/// `ca revoke`: refused without `--yes`, as it cannot be undone.
async fn revoke(ctx: &Ctx, id: &str, yes: bool) -> Result<()> {
    if !yes {
        return Err(Failure::usage("revoking a CA cannot be undone: add --yes").into());
    }
    let path = format!("/v1/ca/{}/revoke", escape(id));
    let r: api::CaRevokeResponse = ctx.call(Method::POST, &path, None).await?;
    ctx.out.show(&r, || {
        format!(
            "revoked CA {} and {} certificate(s) it signed (feed version {}){}\n",
            r.revoked_ca,
            r.revoked_certificates,
            r.version,
            r.replacement
                .as_deref()
                .map(|n| format!("; {n} is now active"))
                .unwrap_or_default()
        )
    })
}

/// `ca bundle`: the bundle exactly as served (PEM or JWKS), to stdout or a file.
async fn bundle(ctx: &Ctx, format: &str, out: Option<PathBuf>) -> Result<()> {
    let body = ctx
        .call_raw(
            Method::GET,
            &format!("/v1/bundle?format={}", escape(format)),
            None,
        )
        .await?;
    match out {
        Some(f) => std::fs::write(&f, &body).with_context(|| format!("--out {}", f.display())),
        None => {
            print!("{}", String::from_utf8_lossy(&body));
            Ok(())
        }
    }
}

/// The CA generations as a table; with `header`, trust domain and schedule too.
fn status_text(s: &api::CaStatus, header: bool) -> String {
    let mut t = String::new();
    if header {
        t += &format!(
            "trust domain: {}\nstorage:      {}\nrevocations:  version {}\nbundle:       sequence {}\n",
            s.trust_domain, s.storage, s.revocation_version, s.bundle_sequence
        );
        let next = s
            .schedule
            .next
            .as_ref()
            .map(|n| {
                format!(
                    "{} {} at {}",
                    n.action,
                    n.ca_id.as_deref().unwrap_or("a new generation"),
                    n.at
                )
            })
            .unwrap_or_else(|| "nothing scheduled".into());
        t += &format!(
            "schedule:     {} (next: {next})\n",
            if s.schedule.enabled {
                "enabled"
            } else {
                "disabled"
            }
        );
        if let Some(why) = &s.schedule.stalled {
            t += &format!("WARNING:      schedule stalled: {why}\n");
        }
        for stale in &s.stale_federations {
            t += &format!("WARNING:      {stale}\n");
        }
        t += "\n";
    }
    t += &table(&s.cas);
    // Intermediates: whether the upstream root constrained them (see the README).
    for c in s.cas.iter().filter(|c| c.kind == "intermediate") {
        if let Some(nc) = c.name_constrained {
            t += &format!("{}: name_constrained: {nc}\n", c.id);
        }
    }
    t
}
