//! What the three daemons (CA server, node agent, sidecar) do alike at
//! start-up: log to stderr, learn of SIGTERM and SIGINT, and (the agent and
//! the sidecar) take the same flags after their configuration file.

use std::future::Future;
use tokio::signal::unix::{SignalKind, signal};

/// The flags the node agent and the sidecar share (`#[command(flatten)]`).
#[derive(clap::Args)]
pub struct WorkloadFlags {
    /// Override any option: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// The join token (prefer TESSERA_JOIN_TOKEN or join_token_file: flags show in `ps`).
    #[arg(long, env = "TESSERA_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

// The join token is a bearer credential: never in a log line.
crate::debug_without_secrets!(WorkloadFlags: sets, log_format);

impl WorkloadFlags {
    /// Starts logging (`--log-format`) and loads the configuration `C` from
    /// `file`, the environment and `--set`; a join token together with a
    /// platform token file (`platform_token_file` reads it from `C`) is refused.
    pub fn start<C: crate::config::Options>(
        &self,
        file: Option<&std::path::Path>,
        platform_token_file: fn(&C) -> bool,
    ) -> Result<C, crate::config::ConfigError> {
        init_logging(&self.log_format);
        let cfg = C::load(file, std::env::vars_os(), &self.sets)?;
        if self.join_token.is_some() && platform_token_file(&cfg) {
            return Err(crate::config::ConfigError(
                "give a join token or platform_token_file, not both".into(),
            ));
        }
        Ok(cfg)
    }
}

/// Logs to stderr at the filter `TESSERA_LOG` gives (default `info`): as
/// text (colours only on a terminal) or, with `format` `json`, one JSON
/// object per line.
pub fn init_logging(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

/// Installs the SIGTERM and SIGINT handlers now, so a signal that arrives
/// before the caller waits (say, just after it announced it listens) still
/// means a graceful shutdown; the future completes at the first of them.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: WorkloadFlags,
    }

    /// The join token given as a flag never shows in `Debug`.
    #[test]
    fn debug_hides_the_join_token() {
        let cli = Cli::parse_from(["x", "--join-token", "tsj_SECRET", "--set", "a.b=1"]);
        let shown = format!("{:?}", cli.flags);
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("a.b=1"), "{shown}");
    }
}
