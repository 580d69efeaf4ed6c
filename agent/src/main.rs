//! `tessera-agent`: the node agent. Attests itself to the CA once with a join
//! token (or resumes the identity saved in `data_dir`), renews its node
//! certificate at half-life, and serves the SPIFFE Workload API on a unix
//! socket to the containers on this host.
#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tessera_agent::config::Config;
use tessera_agent::node::NodeLink;
use tessera_agent::server::{Endpoint, Sync};
use tessera_agent::{Attestor, EngineClient};
use tessera_core::SpiffeId;
use tessera_workload_api::WorkloadApiServer;

/// Tessera node agent: SPIFFE Workload API for the containers on this host
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (see config/agent.toml).
    #[arg(long, short, env = "TESSERA_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: tessera_core::daemon::WorkloadFlags,
}

/// Creates the socket's directory if missing (the directories it creates
/// 0755; one that exists keeps the mode its owner gave it) and binds the
/// socket (0777).
fn bind_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    let dir = path.parent().context("socket_path has no directory")?;
    let missing: Vec<&std::path::Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err())
        .collect();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for created in missing {
        std::fs::set_permissions(created, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)?;
        }
        Ok(_) => bail!(
            "socket_path {} exists and is not a socket; not removing it",
            path.display()
        ),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}

#[tokio::main]
async fn main() -> Result<()> {
    let Cli { config, flags } = Cli::parse();
    let with_platform_token = |c: &Config| c.platform_token_file.is_some();
    let cfg: Config = flags.start(config.as_deref(), with_platform_token)?;
    let bootstrap = tessera_workload::read_anchors(&cfg.ca_bundle)?;
    let engine = match &cfg.runtime_socket {
        Some(p) => EngineClient::new(p),
        None => EngineClient::detect(),
    }
    .with_timeout(Duration::from_millis(cfg.runtime_timeout_ms));
    let attestor = Attestor::new(engine).context("reading the host's namespaces and cgroups")?;
    // The CA names a platform-token node <issuer-name>.<node>.
    let mut want = vec![format!(
        "{}{}",
        tessera_core::spiffe::NODE_PATH_PREFIX,
        cfg.node_name
    )];
    if cfg.platform_token_file.is_some() {
        want.push(format!(".{}", cfg.node_name));
    }
    let ours = |id: &SpiffeId| want.iter().any(|w| id.path().ends_with(w));
    // A node identity saved by an earlier run comes first: join tokens are
    // single-use, so a restart would otherwise need the operator. (A
    // platform-token node re-attests with its current token instead: the
    // configuration refuses data_dir with platform_token_file.)
    let resumed = match &cfg.data_dir {
        Some(dir) => NodeLink::resume(&cfg.ca_url, &bootstrap, dir)
            .await
            .with_context(|| {
                format!(
                    "resuming the node identity saved in data_dir {} (if the CA refused it, \
                     the node may be banned; remove the directory and attest with a new join token)",
                    dir.display()
                )
            })?
            .filter(|n| {
                let same = ours(&n.spiffe_id());
                if !same {
                    tracing::warn!(stored = %n.spiffe_id(), node_name = %cfg.node_name,
                        "data_dir holds another node's identity; attesting with the join token");
                }
                same
            }),
        None => None,
    };
    let node = match resumed {
        Some(node) => {
            tracing::info!(spiffe_id = %node.spiffe_id(), "node identity resumed from data_dir");
            node
        }
        None => {
            let token =
                tessera_workload::join_token(flags.join_token, cfg.join_token_file.as_deref())?;
            if let Some(dir) = &cfg.data_dir {
                // Before the single-use token is spent on an identity that
                // could then not be kept.
                tessera_agent::data_dir::prepare(dir).context("data_dir")?;
            }
            let node = match (token, &cfg.platform_token_file) {
                (Some(token), _) => NodeLink::attest(&cfg.ca_url, &bootstrap, token)
                    .await
                    .context("node attestation (redeeming the join token)")?,
                (None, Some(file)) => {
                    NodeLink::attest_platform(&cfg.ca_url, &bootstrap, file.clone())
                        .await
                        .context("node attestation (platform token)")?
                }
                (None, None) => bail!(
                    "node attestation: set TESSERA_JOIN_TOKEN, --join-token, join_token_file \
                     or platform_token_file (no usable node identity in data_dir)"
                ),
            };
            if !ours(&node.spiffe_id()) {
                bail!(
                    "node_name: the CA granted {}, not .../tessera/agent/{}",
                    node.spiffe_id(),
                    cfg.node_name
                );
            }
            match &cfg.data_dir {
                Some(dir) => node
                    .with_data_dir(dir.clone())
                    .context("saving the node identity in data_dir")?,
                None => node,
            }
        }
    };
    tracing::info!(spiffe_id = %node.spiffe_id(), "node attested");
    let node = Arc::new(node);
    let interval = Duration::from_secs(cfg.sync_interval_seconds);
    let snapshot = Sync::start(node.clone(), interval).await;
    let endpoint = Endpoint::new(attestor, node.clone(), snapshot, interval)
        .with_max_streams_per_process(cfg.max_streams_per_process);
    let listener = bind_socket(&cfg.socket_path)?;
    // One line on stdout, for scripts and tests.
    println!(
        "{}",
        serde_json::json!({"tessera_agent": {
            "socket": cfg.socket_path.display().to_string(),
            "spiffe_id": node.spiffe_id(),
        }})
    );
    let signal = tessera_core::daemon::shutdown_signal()?;
    let shutdown = async move {
        signal.await;
        tracing::info!("shutting down");
    };
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(
            WorkloadApiServer::new(Arc::new(endpoint)),
            // Each connection pinned to the process that made it (PID-reuse
            // guard), and every gRPC stack's :authority let through (see
            // tessera_workload_api::authority).
            tokio_stream::StreamExt::map(tessera_agent::conn::incoming(listener), |c| {
                c.map(tessera_workload_api::authority::AuthorityFree::new)
            }),
            shutdown,
        )
        .await
        .context("serving the Workload API")?;
    let _ = std::fs::remove_file(&cfg.socket_path);
    Ok(())
}
