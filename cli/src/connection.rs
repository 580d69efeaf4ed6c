//! Where the CLI finds the CA and its credentials: flags and environment
//! first, then the CLI config file, then the defaults under
//! `<data-dir>/admin/` that `tessera-ca` writes on first start.

use crate::flags::ConnArgs;
use crate::output::Failure;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tessera_core::client::Client;

/// The CA URL when neither a flag, the environment nor the config file names one.
const DEFAULT_SERVER: &str = "https://localhost:8443";

/// Reads a file named by a flag; the error names the flag (`what`) and the path.
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what}: reading {}", path.display()))
}

/// Settings from the CLI config file (`--config`, default `<data-dir>/admin/cli.toml`);
/// flags and environment win over it. Relative paths are relative to the file.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    server: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
    token: Option<String>,
}

/// Loads the config file. The default path may be absent (an empty config);
/// an explicit `--config` must exist and parse.
pub fn file_config(conn: &ConnArgs) -> Result<FileConfig> {
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
pub fn server_url(conn: &ConnArgs, file: &FileConfig) -> String {
    conn.server
        .clone()
        .or_else(|| file.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.into())
}

/// A client for the CA with the operator's credentials: the API token if one
/// is set, else the client certificate and key. With `need_creds` false (a
/// join token authenticates the request itself) only the trust bundle is used.
pub fn connect(conn: &ConnArgs, need_creds: bool) -> Result<Client> {
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
    let pair = if token.is_some() || !need_creds {
        None
    } else {
        let cert = cert_flag.clone().unwrap_or_else(|| admin.join("cert.pem"));
        let key = key_flag.clone().unwrap_or_else(|| admin.join("key.pem"));
        if cert.exists() && key.exists() {
            Some((cert, key))
        } else if cert_flag.is_some() || key_flag.is_some() {
            return Err(Failure::usage("--cert and --key: both files must exist").into());
        } else {
            // No credentials anywhere: send the request unauthenticated and
            // let the server's refusal (with its exit code) be the answer.
            None
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
