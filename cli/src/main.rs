//! `tessera`: the operator's command-line tool for the Tessera CA.
//!
//! Exit codes scripts can rely on: 0 success, 1 local failure (file, check),
//! 2 usage error or request refused as invalid, 3 not found, 4 refused
//! (unauthenticated, forbidden, conflict), 5 server error or unreachable.
#![forbid(unsafe_code)]

mod api_token;
mod audit;
mod ca;
mod cert;
mod connection;
mod crl;
mod denials;
mod entry;
mod events;
mod federation;
mod flags;
mod inject;
mod node;
mod output;
mod renew;
mod request;
mod token;
mod webhook;

use anyhow::Result;
use cert::CertCmd;
use clap::Parser;
use flags::{Cli, Cmd, Format};
use output::{Failure, Out};
use request::Ctx;

/// Parses the command line, runs it, and exits with the failure's code.
fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        let code = e.downcast_ref::<Failure>().map(|f| f.code).unwrap_or(1);
        eprintln!("error: {e:#}");
        std::process::exit(code);
    }
}

/// Runs one parsed command line.
async fn run(cli: Cli) -> Result<()> {
    let out = Out {
        json: cli.output == Format::Json,
    };
    // Local commands first: they need no server.
    if let Cmd::Cert(CertCmd::Inspect { file, check }) = &cli.command {
        return output::inspect(&out, file, *check);
    }
    // Renewal authenticates with the certificate it renews, never with the
    // operator's credentials, so it builds its own client.
    if let Cmd::Cert(CertCmd::Renew(args)) = cli.command {
        let server = connection::server_url(&cli.conn, &connection::file_config(&cli.conn)?);
        return renew::run(args, &server, cli.conn.cert, cli.conn.key, out.json)
            .await
            .map_err(|e| Failure::new(e.exit_code(), e.to_string()).into());
    }
    let need_creds = match &cli.command {
        Cmd::Cert(c) => c.needs_credentials(),
        _ => true,
    };
    // Connected only for the commands that talk to the CA.
    let json = out.json;
    let ctx = || -> Result<Ctx> {
        Ok(Ctx {
            client: connection::connect(&cli.conn, need_creds)?,
            out: Out { json },
        })
    };
    match cli.command {
        Cmd::Inject(args) => inject::run(args),
        Cmd::Ca(cmd) => ca::run(&ctx()?, cmd).await,
        Cmd::Entry(cmd) => entry::run(&ctx()?, cmd).await,
        Cmd::Token(cmd) => token::run(&ctx()?, cmd).await,
        Cmd::Cert(cmd) => cert::run(&ctx()?, cmd).await,
        Cmd::Crl(cmd) => crl::run(&ctx()?, cmd).await,
        Cmd::Audit(cmd) => audit::run(&ctx()?, cmd).await,
        Cmd::ApiToken(cmd) => api_token::run(&ctx()?, cmd).await,
        Cmd::Denials(cmd) => denials::run(&ctx()?, cmd).await,
        Cmd::Webhook(cmd) => webhook::run(&ctx()?, cmd).await,
        Cmd::Federation(cmd) => federation::run(&ctx()?, cmd).await,
        Cmd::Node(cmd) => node::run(&ctx()?, cmd).await,
        Cmd::Events(args) => events::run(&ctx()?, args).await,
    }
}
