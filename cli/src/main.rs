//! `tessera`: the operator's command-line tool for the Tessera CA.
//!
//! Exit codes scripts can rely on: 0 success, 1 local failure (file, check),
//! 2 usage error or request refused as invalid, 3 not found, 4 refused
//! (unauthenticated, forbidden, conflict), 5 server error or unreachable.
#![forbid(unsafe_code)]

mod output;
mod renew;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hyper::{Method, StatusCode};
use output::{Failure, Out, rows};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::path::{Path, PathBuf};
use tessera_core::api::{self, Problem};
use tessera_core::audit;
use tessera_core::client::Client;
use tessera_core::time::rfc3339;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Operate a Tessera CA: entries, join tokens, certificates, revocation, audit, denials"
)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(Args, Clone)]
struct ConnArgs {
    /// CLI config file (TOML: server, cert, key, ca_bundle, token).
    /// Default: <data-dir>/admin/cli.toml, written by tessera-ca.
    #[arg(long, global = true, env = "TESSERA_CLI_CONFIG")]
    config: Option<PathBuf>,
    /// CA URL. Default: from the config file, else https://localhost:8443.
    #[arg(long, global = true, env = "TESSERA_SERVER")]
    server: Option<String>,
    /// Data directory whose admin/ holds the CLI's default credentials.
    #[arg(
        long,
        global = true,
        env = "TESSERA_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: PathBuf,
    /// Client certificate (PEM). Default: <data-dir>/admin/cert.pem if present.
    #[arg(long, global = true, env = "TESSERA_CERT")]
    cert: Option<PathBuf>,
    /// Client key (PEM). Default: <data-dir>/admin/key.pem if present.
    #[arg(long, global = true, env = "TESSERA_KEY")]
    key: Option<PathBuf>,
    /// Trust bundle used to verify the CA's certificate. Default: <data-dir>/admin/bundle.pem.
    #[arg(long, global = true, env = "TESSERA_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// API token (instead of a client certificate).
    #[arg(long, global = true, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// CA status and trust bundle.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Registration entries.
    #[command(subcommand)]
    Entry(EntryCmd),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Certificates.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Certificate revocation lists.
    #[command(subcommand)]
    Crl(CrlCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Scoped API tokens for automation.
    #[command(subcommand, name = "api-token")]
    ApiToken(ApiTokenCmd),
    /// Connections refused by sidecars (the container firewall), fleet-wide.
    #[command(subcommand)]
    Denials(DenialsCmd),
    /// Nodes (hosts running tessera-agent): list, show, ban, unban.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Webhooks: signed HTTPS deliveries of events.
    #[command(subcommand)]
    Webhook(WebhookCmd),
    /// Events (certificates issued, renewed, revoked, expiring; CA changes;
    /// node bans) from the audit log; `--follow` streams new ones.
    Events {
        /// Keep streaming new events until interrupted.
        #[arg(long)]
        follow: bool,
        /// Only these kinds (comma-separated or repeated): certificate.issued,
        /// certificate.renewed, certificate.revoked, certificate.expiring,
        /// ca.state_changed, node.banned.
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        /// Only events after this event ID (default: from the start, or from
        /// now with --follow).
        #[arg(long)]
        after: Option<i64>,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
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

#[derive(Subcommand)]
enum WebhookCmd {
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

#[derive(Subcommand)]
enum CaCmd {
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

#[derive(Args)]
struct EntryFields {
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
}

impl EntryFields {
    fn request(self) -> api::EntryRequest {
        api::EntryRequest {
            spiffe_id: self.spiffe_id,
            selectors: self.selectors,
            parent_id: self.parent_id,
            ttl_seconds: self.ttl,
            dns_names: self.dns_names,
            note: self.note,
        }
    }
}

#[derive(Subcommand)]
enum EntryCmd {
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

#[derive(Subcommand)]
enum TokenCmd {
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

#[derive(Clone, Copy, ValueEnum)]
enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

#[derive(Subcommand)]
enum CertCmd {
    /// Generate a key here and get a certificate for it (the key never leaves this machine).
    Issue {
        /// SPIFFE ID to issue for (needs issuer or admin credentials).
        #[arg(long, conflicts_with = "token", required_unless_present = "token")]
        spiffe_id: Option<String>,
        /// Join token to redeem instead (needs no credentials, only --ca-bundle).
        #[arg(long, env = "TESSERA_JOIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Directory for key.pem (0600), cert.pem, chain.pem, bundle.pem.
        #[arg(long)]
        out_dir: PathBuf,
        /// Key type.
        #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
        key_type: KeyType,
        /// Requested lifetime.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<u64>,
    },
    /// Renew certificate files over mTLS with a new key, once or (--watch)
    /// continuously: --cert FILE --key FILE --bundle FILE (or --cert-dir DIR).
    Renew(renew::RenewArgs),
    /// Revoke by serial, SPIFFE ID or entry.
    Revoke {
        #[arg(long, group = "sel")]
        serial: Option<String>,
        #[arg(long, group = "sel")]
        spiffe_id: Option<String>,
        #[arg(long, group = "sel")]
        entry_id: Option<String>,
        /// unspecified, key_compromise, ca_compromise, affiliation_changed,
        /// superseded, cessation_of_operation, privilege_withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// List certificates.
    List {
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Only live certificates expiring within this duration.
        #[arg(long, value_parser = parse_duration)]
        expiring_within: Option<u64>,
        /// Only revoked (true) or only unrevoked (false).
        #[arg(long)]
        revoked: Option<bool>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one certificate's ledger record.
    Show { serial: String },
    /// Inspect a certificate file locally (no server).
    Inspect {
        file: PathBuf,
        /// Run the X.509-SVID and Tessera profile checks; exit 1 on failure.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum CrlCmd {
    /// Fetch the active CA's CRL and list its serials.
    Fetch {
        /// Save it here (DER, or PEM with --format pem).
        #[arg(long)]
        out: Option<PathBuf>,
        /// der or pem.
        #[arg(long, default_value = "der")]
        format: String,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
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

#[derive(Subcommand)]
enum ApiTokenCmd {
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

#[derive(Subcommand)]
enum DenialsCmd {
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

/// Parses `90`, `90s`, `15m`, `2h` or `7d` into seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
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

struct Ctx {
    client: Client,
    out: Out,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what}: reading {}", path.display()))
}

/// Settings from the CLI config file (`--config`, default `<data-dir>/admin/cli.toml`);
/// flags and environment win over it. Relative paths are relative to the file.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
    token: Option<String>,
}

fn file_config(conn: &ConnArgs) -> Result<FileConfig> {
    let (path, explicit) = match &conn.config {
        Some(p) => (p.clone(), true),
        None => (conn.data_dir.join("admin").join("cli.toml"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) if !explicit => return Ok(FileConfig::default()),
        Err(e) => return Err(Failure::usage(format!("--config {}: {e}", path.display())).into()),
    };
    let mut f: FileConfig = toml::from_str(&text)
        .map_err(|e| Failure::usage(format!("--config {}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut f.cert, &mut f.key, &mut f.ca_bundle]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(f)
}

/// The CA URL: flag or environment, else the config file, else the default.
fn server_url(conn: &ConnArgs, file: &FileConfig) -> String {
    conn.server
        .clone()
        .or_else(|| file.server.clone())
        .unwrap_or_else(|| "https://localhost:8443".into())
}

fn connect(
    conn: &ConnArgs,
    client_cert: Option<(PathBuf, PathBuf)>,
    need_creds: bool,
) -> Result<Client> {
    let admin = conn.data_dir.join("admin");
    let file = file_config(conn)?;
    let server = server_url(conn, &file);
    let token = conn.token.clone().or(file.token);
    let bundle_path = conn
        .ca_bundle
        .clone()
        .or(file.ca_bundle)
        .unwrap_or_else(|| admin.join("bundle.pem"));
    let (cert_flag, key_flag) = (
        conn.cert.clone().or(file.cert),
        conn.key.clone().or(file.key),
    );
    let bundle = tessera_core::pem::certs(&read(&bundle_path, "--ca-bundle")?)
        .map_err(|e| Failure::usage(format!("--ca-bundle {}: {e}", bundle_path.display())))?;
    let pair = match client_cert {
        Some(p) => Some(p),
        None if token.is_some() || !need_creds => None,
        None => {
            let cert = cert_flag.clone().unwrap_or_else(|| admin.join("cert.pem"));
            let key = key_flag.clone().unwrap_or_else(|| admin.join("key.pem"));
            if cert.exists() && key.exists() {
                Some((cert, key))
            } else if cert_flag.is_some() || key_flag.is_some() {
                return Err(Failure::usage("--cert and --key: both files must exist").into());
            } else {
                None
            }
        }
    };
    let identity = match pair {
        Some((c, k)) => {
            let chain = tessera_core::pem::certs(&read(&c, "--cert")?)
                .map_err(|e| Failure::usage(format!("--cert {}: {e}", c.display())))?;
            let key = tessera_core::pem::private_key(&read(&k, "--key")?)
                .map_err(|e| Failure::usage(format!("--key {}: {e}", k.display())))?;
            Some((chain, key))
        }
        None => None,
    };
    let tls = tessera_core::tls::api_client_config(&bundle, identity, false)?;
    Client::new(&server, tls, token).map_err(|e| Failure::usage(format!("--server: {e}")).into())
}

impl Ctx {
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let bytes = self.call_raw(method, path, body).await?;
        serde_json::from_slice(&bytes).context("decoding the server's answer")
    }

    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<bytes::Bytes> {
        let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
        let reply = self
            .client
            .call(method, path, body)
            .await
            .map_err(|e| Failure::new(5, format!("{e:#}")))?;
        if reply.status.is_success() || reply.status == StatusCode::NOT_MODIFIED {
            return Ok(reply.body);
        }
        let problem: Option<Problem> = serde_json::from_slice(&reply.body).ok();
        let msg = match &problem {
            Some(p) => format!(
                "{} ({}): {}",
                p.title,
                p.code,
                p.detail.clone().unwrap_or_default()
            ),
            None => format!("server answered {}", reply.status),
        };
        let code = match reply.status.as_u16() {
            404 => 3,
            401 | 403 | 409 => 4,
            400..=499 => 2,
            _ => 5,
        };
        Err(Failure::new(code, msg).into())
    }
}

/// A new key of `key_type` and a CSR for it (the CA takes only the key from it).
fn csr_for(key_type: KeyType) -> Result<(rcgen::KeyPair, String), rcgen::Error> {
    let alg = match key_type {
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Ed25519 => &rcgen::PKCS_ED25519,
    };
    let key = rcgen::KeyPair::generate_for(alg)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key, csr))
}

/// Writes key.pem (0600), cert.pem, chain.pem and bundle.pem atomically.
fn write_cert_dir(dir: &Path, key: &rcgen::KeyPair, issued: &api::IssuedCertificate) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--out-dir: creating {}", dir.display()))?;
    let write = |name: &str, data: &[u8], mode: u32| -> Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        Ok(())
    };
    write("key.pem", key.serialize_pem().as_bytes(), 0o600)?;
    write(
        "cert.pem",
        format!("{}{}", issued.certificate, issued.chain).as_bytes(),
        0o644,
    )?;
    write("chain.pem", issued.chain.as_bytes(), 0o644)?;
    write("bundle.pem", issued.bundle.as_bytes(), 0o644)?;
    Ok(())
}

fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The CA generations as a table; with `header`, trust domain and schedule too.
fn ca_table(s: &api::CaStatus, header: bool) -> String {
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
        t += "\n";
    }
    t += &rows(
        &[
            "ID",
            "STATE",
            "KIND",
            "KEY",
            "NOT AFTER",
            "DEPENDENTS",
            "SUBJECT",
        ],
        s.cas.iter().map(|c| {
            vec![
                c.id.clone(),
                c.state.to_string(),
                c.kind.clone(),
                c.key_algorithm.clone(),
                c.not_after.clone(),
                c.dependents.to_string(),
                c.subject.clone(),
            ]
        }),
    );
    // Intermediates: whether the upstream root constrained them (see the README).
    for c in s.cas.iter().filter(|c| c.kind == "intermediate") {
        if let Some(nc) = c.name_constrained {
            t += &format!("{}: name_constrained: {nc}\n", c.id);
        }
    }
    t
}

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
        let server = server_url(&cli.conn, &file_config(&cli.conn)?);
        return renew::run(args, &server, cli.conn.cert, cli.conn.key, out.json)
            .await
            .map_err(|e| Failure::new(e.exit_code(), e.to_string()).into());
    }
    let (client_cert, need_creds) = match &cli.command {
        Cmd::Cert(CertCmd::Issue { token: Some(_), .. }) => (None, false),
        _ => (None, true),
    };
    let ctx = Ctx {
        client: connect(&cli.conn, client_cert, need_creds)?,
        out,
    };
    match cli.command {
        Cmd::Ca(CaCmd::Status) => {
            let s: api::CaStatus = ctx.call(Method::GET, "/v1/ca", None).await?;
            if let Some(why) = &s.schedule.stalled {
                eprintln!("warning: CA rotation schedule has stalled: {why}");
            }
            ctx.out.show(&s, || ca_table(&s, true))
        }
        Cmd::Ca(CaCmd::List) => {
            let s: api::CaStatus = ctx.call(Method::GET, "/v1/ca", None).await?;
            ctx.out.show(&s.cas, || ca_table(&s, false))
        }
        Cmd::Ca(CaCmd::Prepare) => {
            let s: api::CaStatus = ctx.call(Method::POST, "/v1/ca/prepare", None).await?;
            ctx.out.show(&s, || ca_table(&s, true))
        }
        Cmd::Ca(CaCmd::Rotate) => {
            let s: api::CaStatus = ctx.call(Method::POST, "/v1/ca/rotate", None).await?;
            ctx.out.show(&s, || ca_table(&s, true))
        }
        Cmd::Ca(CaCmd::Activate { id }) => {
            let path = format!("/v1/ca/{}/activate", q(&id));
            let s: api::CaStatus = ctx.call(Method::POST, &path, None).await?;
            ctx.out.show(&s, || ca_table(&s, true))
        }
        Cmd::Ca(CaCmd::Retire { id }) => {
            let path = format!("/v1/ca/{}/retire", q(&id));
            let s: api::CaStatus = ctx.call(Method::POST, &path, None).await?;
            ctx.out.show(&s, || ca_table(&s, true))
        }
        Cmd::Ca(CaCmd::Revoke { id, yes }) => {
            if !yes {
                return Err(Failure::usage("revoking a CA cannot be undone: add --yes").into());
            }
            let path = format!("/v1/ca/{}/revoke", q(&id));
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
        Cmd::Ca(CaCmd::Bundle { format, out: file }) => {
            let body = ctx
                .call_raw(
                    Method::GET,
                    &format!("/v1/bundle?format={}", q(&format)),
                    None,
                )
                .await?;
            match file {
                Some(f) => {
                    std::fs::write(&f, &body).with_context(|| format!("--out {}", f.display()))
                }
                None => {
                    print!("{}", String::from_utf8_lossy(&body));
                    Ok(())
                }
            }
        }
        Cmd::Entry(cmd) => entry(&ctx, cmd).await,
        Cmd::Token(cmd) => token(&ctx, cmd).await,
        Cmd::Cert(cmd) => cert(&ctx, cmd).await,
        Cmd::Crl(CrlCmd::Fetch { out: file, format }) => {
            if format != "der" && format != "pem" {
                return Err(Failure::usage("--format: der or pem").into());
            }
            let der = ctx
                .call_raw(Method::GET, "/v1/crl?format=der", None)
                .await?;
            output::crl(&ctx.out, &der, file.as_deref(), &format)
        }
        Cmd::Audit(AuditCmd::List { after, limit }) => {
            let l: api::AuditList = ctx
                .call(
                    Method::GET,
                    &format!("/v1/audit?after={after}&limit={limit}"),
                    None,
                )
                .await?;
            ctx.out.show(&l, || {
                rows(
                    &["SEQ", "TIME", "ACTOR", "ACTION", "TARGET"],
                    l.items.iter().map(|r| {
                        vec![
                            r.seq.to_string(),
                            rfc3339(r.at),
                            r.actor.clone(),
                            r.action.clone(),
                            r.target.clone(),
                        ]
                    }),
                )
            })
        }
        Cmd::Audit(AuditCmd::Verify) => {
            let mut after = 0;
            let mut prev = [0u8; 32];
            let mut count = 0;
            loop {
                let l: api::AuditList = ctx
                    .call(
                        Method::GET,
                        &format!("/v1/audit?after={after}&limit=1000"),
                        None,
                    )
                    .await?;
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
                prev = audit::verify_chain(prev, &l.items).map_err(|seq| {
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
        Cmd::ApiToken(cmd) => api_token(&ctx, cmd).await,
        Cmd::Denials(cmd) => denials(&ctx, cmd).await,
        Cmd::Webhook(cmd) => webhook(&ctx, cmd).await,
        Cmd::Node(cmd) => node(&ctx, cmd).await,
        Cmd::Events {
            follow,
            kinds,
            after,
        } => events(&ctx, follow, &kinds, after).await,
    }
}

fn parse_kinds(kinds: &[String]) -> Result<Vec<api::EventKind>> {
    let list = api::EventKind::parse_list(&kinds.join(","))
        .map_err(|e| Failure::usage(format!("--kind: {e}")))?;
    Ok(list)
}

async fn webhook(ctx: &Ctx, cmd: WebhookCmd) -> Result<()> {
    let table = |items: &[api::Webhook]| {
        rows(
            &[
                "ID",
                "URL",
                "KINDS",
                "LAST EVENT",
                "ATTEMPTS",
                "DESCRIPTION",
            ],
            items.iter().map(|w| {
                vec![
                    w.id.clone(),
                    w.url.clone(),
                    w.kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    w.last_event_id.to_string(),
                    w.attempts.to_string(),
                    w.description.clone().unwrap_or_else(|| "-".into()),
                ]
            }),
        )
    };
    match cmd {
        WebhookCmd::Add {
            url,
            kinds,
            ca_file,
            description,
        } => {
            let kinds = parse_kinds(&kinds)?;
            let ca_pem = match ca_file {
                Some(f) => Some(
                    String::from_utf8(read(&f, "--ca-file")?)
                        .map_err(|_| Failure::usage("--ca-file: not PEM text"))?,
                ),
                None => None,
            };
            let req = api::WebhookCreateRequest {
                url,
                kinds,
                ca_pem,
                description,
            };
            let w: api::WebhookCreated = ctx
                .call(
                    Method::POST,
                    "/v1/webhooks",
                    Some(serde_json::to_value(req)?),
                )
                .await?;
            ctx.out.show(&w, || {
                format!(
                    "webhook {}\nsecret {}\n(the secret is shown only now: receivers verify Tessera-Signature with it)\n",
                    w.webhook.id, w.secret
                )
            })
        }
        WebhookCmd::List => {
            let l: api::WebhookList = ctx.call(Method::GET, "/v1/webhooks", None).await?;
            ctx.out.show(&l, || table(&l.items))
        }
        WebhookCmd::Remove { id } => {
            ctx.call_raw(Method::DELETE, &format!("/v1/webhooks/{}", q(&id)), None)
                .await?;
            ctx.out.show(&json!({"removed": id}), || {
                format!("removed webhook {id}\n")
            })
        }
        WebhookCmd::Deliveries { id, limit } => {
            let l: api::WebhookDeliveryList = ctx
                .call(
                    Method::GET,
                    &format!("/v1/webhooks/{}/deliveries?limit={limit}", q(&id)),
                    None,
                )
                .await?;
            ctx.out.show(&l, || {
                rows(
                    &[
                        "TIME", "EVENT", "KIND", "ATTEMPT", "OUTCOME", "STATUS", "MS", "ERROR",
                    ],
                    l.items.iter().map(|d| {
                        vec![
                            d.at.clone(),
                            d.event_id.to_string(),
                            d.kind.as_str().into(),
                            d.attempt.to_string(),
                            d.outcome.as_str().into(),
                            d.status_code
                                .map(|c| c.to_string())
                                .unwrap_or_else(|| "-".into()),
                            d.duration_ms.to_string(),
                            d.error.clone().unwrap_or_else(|| "-".into()),
                        ]
                    }),
                )
            })
        }
    }
}

/// `tessera events`: reads the server-sent event stream; one line (table) or
/// one JSON object per event as it arrives.
async fn events(ctx: &Ctx, follow: bool, kinds: &[String], after: Option<i64>) -> Result<()> {
    use http_body_util::BodyExt;
    let kinds = parse_kinds(kinds)?;
    let mut path = format!("/v1/events?follow={follow}");
    if !kinds.is_empty() {
        path += &format!(
            "&kinds={}",
            kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    if let Some(a) = after {
        if a < 0 {
            return Err(Failure::usage("--after: an event ID, not negative").into());
        }
        path += &format!("&after={a}");
    }
    let mut s = ctx
        .client
        .stream(&path, &[])
        .await
        .map_err(|e| Failure::new(5, format!("{e:#}")))?;
    if !s.status.is_success() {
        let body = s
            .body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let problem: Option<Problem> = serde_json::from_slice(&body).ok();
        let msg = match problem {
            Some(p) => format!("{} ({}): {}", p.title, p.code, p.detail.unwrap_or_default()),
            None => format!("server answered {}", s.status),
        };
        let code = match s.status.as_u16() {
            401 | 403 => 4,
            400..=499 => 2,
            _ => 5,
        };
        return Err(Failure::new(code, msg).into());
    }
    if !ctx.out.json {
        print!(
            "{}",
            rows(
                &["ID", "TIME", "KIND", "ACTION", "TARGET", "ACTOR"],
                std::iter::empty()
            )
        );
    }
    let mut parser = tessera_core::sse::SseParser::new(1 << 20);
    // Without --follow the JSON output is one document like other lists;
    // with it, one object per line as events arrive.
    let mut collected: Vec<api::Event> = vec![];
    while let Some(frame) = s.body.frame().await {
        let frame = frame.map_err(|e| Failure::new(5, format!("event stream: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for e in parser
            .feed(&data)
            .map_err(|e| Failure::new(5, e.to_string()))?
        {
            let ev: api::Event = serde_json::from_str(&e.data)
                .map_err(|e| Failure::new(5, format!("event stream: {e}")))?;
            if ctx.out.json && !follow {
                collected.push(ev);
            } else if ctx.out.json {
                println!("{}", serde_json::to_string(&ev)?);
            } else {
                println!(
                    "{}  {}  {}  {}  {}  {}",
                    ev.id,
                    ev.at,
                    ev.kind.as_str(),
                    ev.action,
                    ev.target,
                    ev.actor
                );
            }
        }
    }
    if ctx.out.json && !follow {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "items": collected }))?
        );
    }
    Ok(())
}

async fn node(ctx: &Ctx, cmd: NodeCmd) -> Result<()> {
    let table = |items: &[api::NodeInfo]| {
        rows(
            &["NAME", "SPIFFE ID", "ATTESTATION", "BANNED", "LAST SEEN"],
            items.iter().map(|n| {
                vec![
                    n.id.clone(),
                    n.spiffe_id.clone(),
                    n.attestation_type.clone(),
                    n.banned_at.clone().unwrap_or_else(|| "-".into()),
                    n.last_seen.clone(),
                ]
            }),
        )
    };
    match cmd {
        NodeCmd::List => {
            let l: api::NodeList = ctx.call(Method::GET, "/v1/nodes", None).await?;
            ctx.out.show(&l, || table(&l.items))
        }
        NodeCmd::Show { name } => {
            let n: api::NodeInfo = ctx
                .call(Method::GET, &format!("/v1/nodes/{}", q(&name)), None)
                .await?;
            ctx.out.show(&n, || {
                output::kv(&serde_json::to_value(&n).unwrap_or_default())
            })
        }
        NodeCmd::Ban { name } => ban_node(ctx, &name, "ban").await,
        NodeCmd::Unban { name } => ban_node(ctx, &name, "unban").await,
    }
}

async fn ban_node(ctx: &Ctx, name: &str, verb: &str) -> Result<()> {
    let r: api::NodeBanResponse = ctx
        .call(
            Method::POST,
            &format!("/v1/nodes/{}/{verb}", q(name)),
            Some(json!({})),
        )
        .await?;
    ctx.out.show(&r, || {
        format!(
            "{verb}ned node {name}; revoked {} certificate(s); feed version {}\n",
            r.revoked.len(),
            r.version
        )
    })
}

async fn denials(ctx: &Ctx, cmd: DenialsCmd) -> Result<()> {
    match cmd {
        DenialsCmd::List {
            since,
            destination,
            source,
            listener,
            reason,
            limit,
        } => {
            let mut path = format!("/v1/denials?limit={limit}");
            if let Some(secs) = since {
                let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                path += &format!("&since={}", tessera_core::now_unix().saturating_sub(secs));
            }
            if let Some(r) = reason {
                let r: api::DenialReason = serde_json::from_value(json!(r)).map_err(|_| {
                    Failure::usage(format!(
                        "--reason: {r:?} is not one of {}",
                        api::DenialReason::ALL.map(|k| k.as_str()).join(", ")
                    ))
                })?;
                path += &format!("&reason={}", r.as_str());
            }
            for (name, value) in [
                ("destination", destination),
                ("source", source),
                ("listener", listener),
            ] {
                if let Some(v) = value {
                    path += &format!("&{name}={}", q(&v));
                }
            }
            let l: api::DenialList = ctx.call(Method::GET, &path, None).await?;
            ctx.out.show(&l, || {
                rows(
                    &[
                        "TIME",
                        "REASON",
                        "SOURCE",
                        "PEER",
                        "DESTINATION",
                        "LISTENER",
                    ],
                    l.items.iter().map(|d| {
                        vec![
                            rfc3339(d.at),
                            d.reason.as_str().into(),
                            d.peer_spiffe_id.clone().unwrap_or_else(|| "-".into()),
                            d.peer_addr.clone(),
                            d.reporter.clone(),
                            d.listener.clone(),
                        ]
                    }),
                )
            })
        }
    }
}

async fn entry(ctx: &Ctx, cmd: EntryCmd) -> Result<()> {
    let table = |items: &[api::Entry]| {
        rows(
            &["ID", "SPIFFE ID", "SELECTORS", "PARENT", "TTL"],
            items.iter().map(|e| {
                vec![
                    e.id.clone(),
                    e.spiffe_id.clone(),
                    e.selectors.join(","),
                    e.parent_id.clone().unwrap_or_else(|| "-".into()),
                    e.ttl_seconds.to_string(),
                ]
            }),
        )
    };
    match cmd {
        EntryCmd::Create(f) => {
            let e: api::Entry = ctx
                .call(
                    Method::POST,
                    "/v1/entries",
                    Some(serde_json::to_value(f.request())?),
                )
                .await?;
            ctx.out.show(&e, || table(std::slice::from_ref(&e)))
        }
        EntryCmd::List { spiffe_id } => {
            let path = match spiffe_id {
                Some(s) => format!("/v1/entries?spiffe_id={}", q(&s)),
                None => "/v1/entries".into(),
            };
            let l: api::EntryList = ctx.call(Method::GET, &path, None).await?;
            ctx.out.show(&l, || table(&l.items))
        }
        EntryCmd::Show { id } => {
            let e: api::Entry = ctx
                .call(Method::GET, &format!("/v1/entries/{}", q(&id)), None)
                .await?;
            ctx.out.show(&e, || {
                output::kv(&serde_json::to_value(&e).unwrap_or_default())
            })
        }
        EntryCmd::Update { id, fields } => {
            let e: api::Entry = ctx
                .call(
                    Method::PUT,
                    &format!("/v1/entries/{}", q(&id)),
                    Some(serde_json::to_value(fields.request())?),
                )
                .await?;
            ctx.out.show(&e, || table(std::slice::from_ref(&e)))
        }
        EntryCmd::Delete { id } => {
            ctx.call_raw(Method::DELETE, &format!("/v1/entries/{}", q(&id)), None)
                .await?;
            ctx.out
                .show(&json!({"deleted": id}), || format!("deleted entry {id}\n"))
        }
    }
}

async fn token(ctx: &Ctx, cmd: TokenCmd) -> Result<()> {
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
            let t: api::TokenCreated = ctx
                .call(Method::POST, "/v1/tokens", Some(serde_json::to_value(req)?))
                .await?;
            ctx.out.show(&t, || format!("{}\n", t.token))
        }
        TokenCmd::List => {
            let l: api::TokenList = ctx.call(Method::GET, "/v1/tokens", None).await?;
            ctx.out.show(&l, || {
                rows(
                    &["ID", "SPIFFE ID", "EXPIRES", "USED"],
                    l.items.iter().map(|t| {
                        vec![
                            t.id.clone(),
                            t.spiffe_id.clone(),
                            t.expires_at.clone(),
                            t.used_at.clone().unwrap_or_else(|| "-".into()),
                        ]
                    }),
                )
            })
        }
        TokenCmd::Delete { id } => {
            ctx.call_raw(Method::DELETE, &format!("/v1/tokens/{}", q(&id)), None)
                .await?;
            ctx.out
                .show(&json!({"deleted": id}), || format!("deleted token {id}\n"))
        }
    }
}

async fn cert(ctx: &Ctx, cmd: CertCmd) -> Result<()> {
    let cert_table = |items: &[api::CertificateRecord]| {
        rows(
            &["SERIAL", "SPIFFE ID", "NOT AFTER", "REVOKED"],
            items.iter().map(|c| {
                vec![
                    c.serial.clone(),
                    c.spiffe_id.clone(),
                    c.not_after.clone(),
                    c.revoked_at.clone().unwrap_or_else(|| "-".into()),
                ]
            }),
        )
    };
    match cmd {
        CertCmd::Issue {
            spiffe_id,
            token,
            out_dir,
            key_type,
            ttl,
        } => {
            let (key, csr) = csr_for(key_type)?;
            let issued: api::IssuedCertificate = match (spiffe_id, token) {
                (_, Some(token)) => {
                    if ttl.is_some() {
                        return Err(Failure::usage(
                            "--ttl: a join token issues with its entry's lifetime",
                        )
                        .into());
                    }
                    ctx.call(
                        Method::POST,
                        "/v1/certs/redeem",
                        Some(serde_json::to_value(api::RedeemRequest { token, csr })?),
                    )
                    .await?
                }
                (Some(spiffe_id), None) => {
                    ctx.call(
                        Method::POST,
                        "/v1/certs",
                        Some(serde_json::to_value(api::IssueRequest {
                            spiffe_id,
                            csr,
                            ttl_seconds: ttl,
                        })?),
                    )
                    .await?
                }
                (None, None) => return Err(Failure::usage("give --spiffe-id or --token").into()),
            };
            write_cert_dir(&out_dir, &key, &issued)?;
            ctx.out.show(&issued_summary(&issued, &out_dir), || {
                format!(
                    "issued {} serial {} (expires {})\nwrote {}/{{key,cert,chain,bundle}}.pem\n",
                    issued.spiffe_id,
                    issued.serial,
                    issued.not_after,
                    out_dir.display()
                )
            })
        }
        CertCmd::Renew(_) => unreachable!("handled before connecting"),
        CertCmd::Revoke {
            serial,
            spiffe_id,
            entry_id,
            reason,
        } => {
            let reason: api::RevocationReason =
                serde_json::from_value(json!(reason)).map_err(|_| {
                    Failure::usage(format!(
                        "--reason: {reason:?} is not an RFC 5280 reason name"
                    ))
                })?;
            if serial.is_none() && spiffe_id.is_none() && entry_id.is_none() {
                return Err(
                    Failure::usage("give one of --serial, --spiffe-id or --entry-id").into(),
                );
            }
            let req = api::RevokeRequest {
                serial,
                spiffe_id,
                entry_id,
                reason,
            };
            let r: api::RevokeResponse = ctx
                .call(
                    Method::POST,
                    "/v1/revocations",
                    Some(serde_json::to_value(req)?),
                )
                .await?;
            ctx.out.show(&r, || {
                let mut s = format!(
                    "revoked {} certificate(s); feed version {}\n",
                    r.revoked.len(),
                    r.version
                );
                for serial in &r.revoked {
                    s += &format!("  {serial}\n");
                }
                s
            })
        }
        CertCmd::List {
            spiffe_id,
            expiring_within,
            revoked,
            limit,
        } => {
            let mut path = format!("/v1/certs?limit={limit}");
            if let Some(s) = spiffe_id {
                path += &format!("&spiffe_id={}", q(&s));
            }
            if let Some(w) = expiring_within {
                path += &format!("&expiring_within={w}");
            }
            if let Some(r) = revoked {
                path += &format!("&revoked={r}");
            }
            let l: api::CertificateList = ctx.call(Method::GET, &path, None).await?;
            ctx.out.show(&l, || cert_table(&l.items))
        }
        CertCmd::Show { serial } => {
            let c: api::CertificateRecord = ctx
                .call(Method::GET, &format!("/v1/certs/{}", q(&serial)), None)
                .await?;
            ctx.out.show(&c, || {
                let mut v = serde_json::to_value(&c).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.remove("certificate");
                }
                output::kv(&v)
            })
        }
        CertCmd::Inspect { .. } => unreachable!("handled before connecting"),
    }
}

fn issued_summary(i: &api::IssuedCertificate, dir: &Path) -> serde_json::Value {
    json!({
        "serial": i.serial, "spiffe_id": i.spiffe_id, "not_before": i.not_before, "not_after": i.not_after,
        "attestation_hash": i.attestation_hash, "dir": dir.display().to_string(),
    })
}

async fn api_token(ctx: &Ctx, cmd: ApiTokenCmd) -> Result<()> {
    match cmd {
        ApiTokenCmd::Create { name, role, ttl } => {
            let role = api::Role::parse(&role)
                .ok_or_else(|| Failure::usage("--role: admin, registrar, issuer or auditor"))?;
            let req = api::ApiTokenCreateRequest {
                name,
                role,
                ttl_seconds: ttl,
            };
            let t: api::ApiTokenCreated = ctx
                .call(
                    Method::POST,
                    "/v1/credentials",
                    Some(serde_json::to_value(req)?),
                )
                .await?;
            ctx.out.show(&t, || format!("{}\n", t.token))
        }
        ApiTokenCmd::List => {
            let l: api::ApiCredentialList = ctx.call(Method::GET, "/v1/credentials", None).await?;
            ctx.out.show(&l, || {
                rows(
                    &["ID", "KIND", "NAME", "ROLE", "EXPIRES", "DISABLED"],
                    l.items.iter().map(|c| {
                        vec![
                            c.id.clone(),
                            c.kind.clone(),
                            c.name.clone(),
                            c.role.as_str().into(),
                            c.expires_at.clone(),
                            c.disabled.to_string(),
                        ]
                    }),
                )
            })
        }
        ApiTokenCmd::Delete { id } => {
            ctx.call_raw(Method::DELETE, &format!("/v1/credentials/{}", q(&id)), None)
                .await?;
            ctx.out.show(&json!({"disabled": id}), || {
                format!("disabled credential {id}\n")
            })
        }
    }
}

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
