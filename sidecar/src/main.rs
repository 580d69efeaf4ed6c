//! `tessera-sidecar`: mTLS in and out of one container.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use tessera_sidecar::config::Config;
use tessera_sidecar::identity::{
    IdentitySource, JoinTokenSource, PlatformTokenSource, WorkloadApiSource,
};

/// Tessera sidecar: SPIFFE mTLS beside one container
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (see config/sidecar.toml).
    #[arg(long, short, env = "TESSERA_SIDECAR_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: tessera_core::daemon::WorkloadFlags,
    /// Exit (after draining) when this process exits: for batch jobs whose
    /// sidecar should not outlive them.
    #[arg(long, value_name = "PID")]
    exit_with_pid: Option<u32>,
    /// Health check for images without a shell: GET this loopback URL
    /// (e.g. http://127.0.0.1:15000/readyz) and exit 0 iff the answer is 2xx;
    /// nothing else runs, no configuration is read and every other option is
    /// ignored (a probe inherits the container's environment, which sets
    /// some of them).
    #[arg(long, value_name = "URL")]
    probe: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(url) = &cli.probe {
        // No runtime, no logging setup: a probe runs every few seconds.
        return Ok(tessera_sidecar::probe::probe(url)?);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(cli))
}

async fn serve(cli: Cli) -> Result<()> {
    let cfg: Config = cli.flags.start(cli.config.as_deref(), |c: &Config| {
        c.platform_token_file.is_some()
    })?;
    let token = tessera_workload::join_token(cli.flags.join_token, cfg.join_token_file.as_deref())?;
    let workload_api = cfg.workload_api_socket.is_some()
        || std::env::var_os(tessera_workload_api::ENDPOINT_SOCKET_ENV).is_some();
    match token {
        Some(token) => {
            let bootstrap = tessera_workload::read_anchors(&cfg.ca_bundle)?;
            let source = JoinTokenSource::new(cfg.ca_url.clone(), bootstrap, token);
            run(cfg, source, cli.exit_with_pid).await
        }
        None if cfg.platform_token_file.is_some() => {
            let source = PlatformTokenSource::new(
                cfg.ca_url.clone(),
                tessera_workload::read_anchors(&cfg.ca_bundle)?,
                cfg.platform_token_file.clone().unwrap_or_default(),
                cfg.platform_token_spiffe_id.clone(),
            );
            run(cfg, source, cli.exit_with_pid).await
        }
        None if workload_api => {
            let source = WorkloadApiSource::new(
                cfg.workload_api_socket.as_deref(),
                cfg.workload_api_spiffe_id.clone(),
            )
            .context("workload_api_socket")?;
            run(cfg, source, cli.exit_with_pid).await
        }
        None => anyhow::bail!(
            "identity: give a join token (TESSERA_JOIN_TOKEN, --join-token or join_token_file), \
             a platform token (platform_token_file) \
             or the node agent's Workload API (workload_api_socket or SPIFFE_ENDPOINT_SOCKET)"
        ),
    }
}

async fn run<S: IdentitySource + 'static>(
    cfg: Config,
    source: S,
    exit_with_pid: Option<u32>,
) -> Result<()> {
    let drain = std::time::Duration::from_secs(cfg.drain_seconds);
    let signal = tessera_core::daemon::shutdown_signal()?;
    let running = tessera_sidecar::start(cfg, source).await?;
    // One line on stdout with every bound address, for scripts and tests.
    println!("{}", serde_json::json!({"tessera_sidecar": running.addrs}));
    let app_gone = async {
        match exit_with_pid {
            Some(pid) => {
                let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
                while proc_dir.exists() {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                tracing::info!(pid, "the app exited");
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = signal => {}
        _ = app_gone => {}
    }
    tracing::info!("stopping");
    running.shutdown(drain).await;
    Ok(())
}
