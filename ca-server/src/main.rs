//! `tessera-ca`: the Tessera CA server.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_ca::authority::Authority;
use tessera_ca::config::{Config, Options};
use tessera_ca::keystore::write_private_file;
use tessera_core::api::{CaState, Role};

/// Tessera CA server: SPIFFE X.509-SVIDs for containers
#[derive(Parser)]
#[command(name = "tessera-ca", version)]
struct Cli {
    /// Configuration file (TOML); see config/ca-server.toml.
    #[arg(long, short, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// Override any option: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Data directory (SQLite database, KEK file, admin credentials).
    #[arg(long, env = "TESSERA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTPS listen address.
    #[arg(long, env = "TESSERA_LISTEN")]
    listen: Option<String>,
    /// Database URL (sqlite://... or postgres://...).
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    database_url: Option<String>,
    /// Trust domain.
    #[arg(long, env = "TESSERA_TRUST_DOMAIN")]
    trust_domain: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "TESSERA_LOG_FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Run,
    /// Create the CA and the admin credentials, then exit.
    Init,
    /// Run as an intermediate under an operator's root: before the first `run`,
    /// and again (also while the server runs) to rotate the intermediate.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue an operator client certificate with a role into a directory.
    OperatorCert {
        /// Credential name.
        #[arg(long)]
        name: String,
        /// Role: admin, registrar, issuer or auditor.
        #[arg(long)]
        role: String,
        /// Output directory (key.pem 0600, cert.pem, bundle.pem).
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the intermediate CA's key (sealed in the database) and write a CSR
    /// for the operator's root to sign.
    Csr {
        /// Where to write the CSR (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Import the certificate the operator's root signed for the pending CA: it
    /// becomes active (first start) or prepared (rotation: a running server
    /// publishes it within a second and activates it after the overlap).
    /// Leaves carry it in their chain; the bundle is the root.
    ImportSigned {
        /// The signed intermediate certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The operator's trust anchors (PEM), published as the bundle.
        #[arg(long)]
        bundle: PathBuf,
        /// Certificates between the intermediate and the root, if any (PEM).
        #[arg(long)]
        chain: Option<PathBuf>,
    },
}

fn load_config(cli: &Cli) -> Result<Config> {
    let mut sets = cli.sets.clone();
    if let Some(d) = &cli.data_dir {
        sets.push(format!("data_dir={}", toml_str(&d.display().to_string())));
    }
    if let Some(v) = &cli.listen {
        sets.push(format!("listen={}", toml_str(v)));
    }
    if let Some(v) = &cli.database_url {
        sets.push(format!("database_url={}", toml_str(v)));
    }
    if let Some(v) = &cli.trust_domain {
        sets.push(format!("trust_domain={}", toml_str(v)));
    }
    if let Some(v) = &cli.log_format {
        sets.push(format!("log_format={}", toml_str(v)));
    }
    Ok(Config::load(
        cli.config.as_deref(),
        std::env::vars_os(),
        &sets,
    )?)
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes an operator credential set into `dir`: key.pem (0600), cert.pem, bundle.pem.
async fn write_operator_creds(auth: &Authority, dir: &Path, name: &str, role: Role) -> Result<()> {
    tessera_ca::keystore::create_private_dir(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let (key, cert) = auth.issue_operator_cert(name, role).await?;
    write_private_file(&dir.join("key.pem"), key.as_bytes())?;
    std::fs::write(dir.join("cert.pem"), cert)?;
    std::fs::write(dir.join("bundle.pem"), &auth.bundle().pem)?;
    Ok(())
}

/// On first start, creates the admin credentials where the CLI looks for them.
async fn ensure_admin(auth: &Authority, cfg: &Config, server_url: &str) -> Result<PathBuf> {
    let dir = cfg.data_dir.join("admin");
    if !dir.join("cert.pem").exists() {
        write_operator_creds(auth, &dir, "admin", Role::Admin).await?;
        tracing::info!(dir = %dir.display(), "created admin credentials");
    }
    std::fs::write(dir.join("bundle.pem"), &auth.bundle().pem)?;
    std::fs::write(
        dir.join("cli.toml"),
        format!(
            "# Written by tessera-ca; read by the tessera CLI.\nserver = {}\n",
            toml_str(server_url)
        ),
    )?;
    Ok(dir)
}

fn server_url(cfg: &Config, addr: std::net::SocketAddr) -> String {
    let host = cfg
        .server_dns_names
        .first()
        .cloned()
        .unwrap_or_else(|| addr.ip().to_string());
    format!("https://{host}:{}", addr.port())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let cfg = load_config(&cli)?;
    tessera_core::daemon::init_logging(&cfg.log_format);
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Ca(ca) = command {
        return match ca {
            CaCommand::Csr { out } => {
                let (id, csr) = tessera_ca::ca::prepare_intermediate(&cfg).await?;
                std::fs::write(&out, csr).with_context(|| format!("--out {}", out.display()))?;
                println!(
                    "pending intermediate CA {id}: CSR written to {}",
                    out.display()
                );
                Ok(())
            }
            CaCommand::ImportSigned {
                cert,
                bundle,
                chain,
            } => {
                let read = |p: &Path, flag: &str| {
                    std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))
                };
                let chain = chain.as_deref().map(|c| read(c, "--chain")).transpose()?;
                let done = tessera_ca::ca::import_signed_intermediate(
                    &cfg,
                    &read(&cert, "--cert")?,
                    &read(&bundle, "--bundle")?,
                    chain.as_deref(),
                )
                .await?;
                let id = &done.id;
                if done.state == CaState::Active {
                    println!("intermediate CA {id} is active");
                } else {
                    println!(
                        "intermediate CA {id} is prepared: published in the bundle now; \
                         `tessera ca activate {id}` after rotation.min_overlap_seconds \
                         (or `tessera ca rotate`, or the schedule) makes it sign"
                    );
                }
                println!("name_constrained: {}", done.name_constrained);
                Ok(())
            }
        };
    }
    let auth = Authority::start(cfg.clone())
        .await
        .context("starting the CA")?;
    match command {
        Command::Ca(_) => unreachable!("handled above"),
        Command::Init => {
            let dir = ensure_admin(&auth, &cfg, &server_url(&cfg, cfg.listen)).await?;
            println!(
                "CA ready for {}; admin credentials in {}",
                cfg.trust_domain,
                dir.display()
            );
            Ok(())
        }
        Command::OperatorCert {
            name,
            role,
            out_dir,
        } => {
            let role = Role::parse(&role).context("--role: admin, registrar, issuer or auditor")?;
            write_operator_creds(&auth, &out_dir, &name, role).await?;
            println!(
                "wrote {} credentials to {}",
                role.as_str(),
                out_dir.display()
            );
            Ok(())
        }
        Command::Run => run(auth, cfg).await,
    }
}

async fn run(auth: Arc<Authority>, cfg: Config) -> Result<()> {
    // Signal handlers first: a SIGTERM that arrives as soon as we say we listen
    // must still mean a graceful shutdown.
    let signal = tessera_core::daemon::shutdown_signal()?;
    let running = tessera_ca::server::start(auth.clone(), cfg.listen)
        .await
        .with_context(|| format!("listen: binding {}", cfg.listen))?;
    let url = server_url(&cfg, running.addr);
    let dir = ensure_admin(&auth, &cfg, &url).await?;
    tracing::info!(addr = %running.addr, trust_domain = %cfg.trust_domain, storage = auth.store.backend().as_str(), replica = auth.replica_id(), "tessera-ca listening");
    // One stable line on stdout, for scripts and tests that bind port 0.
    println!(
        "tessera-ca listening on {} (admin credentials in {})",
        running.addr,
        dir.display()
    );
    signal.await;
    tracing::info!("shutting down");
    running.shutdown(std::time::Duration::from_secs(10)).await;
    Ok(())
}
