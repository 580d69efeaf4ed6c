//! The command line: global options and the command tree. Each resource's own
//! subcommands live beside their handlers (`ca::CaCmd`, `entry::EntryCmd`, …);
//! this module only assembles them.

use crate::{
    api_token, audit, ca, cert, crl, denials, entry, events, federation, inject, node, token,
    webhook,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The `tessera` command line.
#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Operate a Tessera CA: entries, join tokens, certificates, revocation, audit, denials"
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Cmd,
}

/// `--output`: aligned tables for people or JSON for scripts.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// Where the CA is and how to authenticate to it; resolved by `connection`.
#[derive(Args, Clone)]
pub struct ConnArgs {
    /// CLI config file (TOML: server, cert, key, ca_bundle, token).
    /// Default: <data-dir>/admin/cli.toml, written by tessera-ca.
    #[arg(long, global = true, env = "TESSERA_CLI_CONFIG")]
    pub config: Option<PathBuf>,
    /// CA URL. Default: from the config file, else https://localhost:8443.
    #[arg(long, global = true, env = "TESSERA_SERVER")]
    pub server: Option<String>,
    /// Data directory whose admin/ holds the CLI's default credentials.
    #[arg(
        long,
        global = true,
        env = "TESSERA_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// Client certificate (PEM). Default: <data-dir>/admin/cert.pem if present.
    #[arg(long, global = true, env = "TESSERA_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM). Default: <data-dir>/admin/key.pem if present.
    #[arg(long, global = true, env = "TESSERA_KEY")]
    pub key: Option<PathBuf>,
    /// Trust bundle used to verify the CA's certificate. Default: <data-dir>/admin/bundle.pem.
    #[arg(long, global = true, env = "TESSERA_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// API token (instead of a client certificate).
    #[arg(long, global = true, env = "TESSERA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The resources, one subcommand each.
#[derive(Subcommand)]
pub enum Cmd {
    /// CA status and trust bundle.
    #[command(subcommand)]
    Ca(ca::CaCmd),
    /// Registration entries.
    #[command(subcommand)]
    Entry(entry::EntryCmd),
    /// Join tokens.
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Certificates.
    #[command(subcommand)]
    Cert(cert::CertCmd),
    /// Certificate revocation lists.
    #[command(subcommand)]
    Crl(crl::CrlCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Scoped API tokens for automation.
    #[command(subcommand, name = "api-token")]
    ApiToken(api_token::ApiTokenCmd),
    /// Connections refused by sidecars (the container firewall), fleet-wide.
    #[command(subcommand)]
    Denials(denials::DenialsCmd),
    /// Nodes (hosts running tessera-agent): list, show, ban, unban.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Webhooks: signed HTTPS deliveries of events.
    #[command(subcommand)]
    Webhook(webhook::WebhookCmd),
    /// Federation with foreign trust domains (their SPIFFE bundle endpoints).
    #[command(subcommand)]
    Federation(federation::FederationCmd),
    /// Events (certificates issued, renewed, revoked, expiring; CA changes;
    /// node bans) from the audit log; `--follow` streams new ones.
    Events(events::EventsArgs),
    /// Add the Tessera sidecar to Kubernetes manifests (files, directories
    /// or stdin) and print them; configured by tessera.dev/* pod annotations.
    Inject(inject::InjectArgs),
}

/// Parses `90`, `90s`, `15m`, `2h` or `7d` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a duration like 90s, 15m, 2h or 7d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        for bad in ["", "m", "5y", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
