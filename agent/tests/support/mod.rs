//! Shared by the agent's process tests: a real `tessera-ca` process and a real
//! `tessera-agent` process on loopback, an admin client, and cleanup on drop.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use hyper::Method;
use serde_json::{Value, json};
use tessera_core::client::Client;

/// Where cargo put our binaries.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tessera-agent"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds a binary of another package of the workspace (so a test never runs
/// a stale one) and returns its path. Built once per test process: a later
/// call does not wait on cargo's lock again (other builds may hold it).
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    static BUILT: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.insert((package.to_owned(), bin.to_owned())) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", package, "--bin", bin])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        if !status.success() {
            built.remove(&(package.to_owned(), bin.to_owned()));
            panic!("building {bin}");
        }
    }
    bin_dir().join(bin)
}

/// A child process killed (and reaped) on drop, pass or fail.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA process on a loopback port with its data in a temp directory.
pub struct Ca {
    pub url: String,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

impl Ca {
    pub fn start() -> Ca {
        Self::start_args(&[])
    }

    /// Starts the CA with extra arguments (`--set k=v`).
    pub fn start_args(args: &[&str]) -> Ca {
        Self::start_on("127.0.0.1", args)
    }

    /// Starts the CA listening on `ip` (port 0, read back from its first
    /// line) with extra arguments. On loopback its URL names `localhost`,
    /// elsewhere the IP itself (which the server certificate must then carry:
    /// `--set server_ips=[...]`).
    pub fn start_on(ip: &str, args: &[&str]) -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(workspace_binary("tessera-ca-server", "tessera-ca"))
            .args(["--listen", &format!("{ip}:0")])
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let proc = Proc { child };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .strip_prefix(&format!("tessera-ca listening on {ip}:"))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        let host = if ip == "127.0.0.1" { "localhost" } else { ip };
        Ca {
            url: format!("https://{host}:{port}"),
            dir,
            _proc: proc,
        }
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.dir.path().join("data/admin/bundle.pem")
    }

    /// A client with the admin credentials `tessera-ca` wrote.
    pub fn admin(&self) -> Client {
        let admin = self.dir.path().join("data/admin");
        let read = |f: &str| std::fs::read(admin.join(f)).unwrap();
        let chain = tessera_core::pem::certs(&read("cert.pem")).unwrap();
        let key = tessera_core::pem::private_key(&read("key.pem")).unwrap();
        let anchors = tessera_core::pem::certs(&read("bundle.pem")).unwrap();
        let tls =
            tessera_core::tls::api_client_config(&anchors, Some((chain, key)), false).unwrap();
        Client::new(&self.url, tls, None).unwrap()
    }

    /// One admin call; panics unless the status is `want`.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>, want: u16) -> Value {
        let r = self
            .admin()
            .call(method, path, body.map(|b| serde_json::to_vec(&b).unwrap()))
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert_eq!(r.status.as_u16(), want, "{path}: {v}");
        v
    }

    /// Creates an entry; returns it.
    pub async fn entry(&self, spiffe_id: &str, selectors: &[&str], parent: Option<&str>) -> Value {
        self.call(
            Method::POST,
            "/v1/entries",
            Some(json!({"spiffe_id": spiffe_id, "selectors": selectors, "parent_id": parent})),
            201,
        )
        .await
    }

    /// A node entry and a join token for it.
    pub async fn node_token(&self, name: &str) -> String {
        self.node_token_ttl(name, None).await
    }

    /// A node entry (certificate lifetime `ttl` seconds) and a join token for it.
    pub async fn node_token_ttl(&self, name: &str, ttl: Option<u64>) -> String {
        let sid = format!("spiffe://example.org/tessera/agent/{name}");
        self.call(
            Method::POST,
            "/v1/entries",
            Some(
                json!({"spiffe_id": sid, "selectors": [format!("node:name:{name}")],
                        "ttl_seconds": ttl}),
            ),
            201,
        )
        .await;
        let t = self
            .call(
                Method::POST,
                "/v1/tokens",
                Some(json!({"spiffe_id": sid})),
                201,
            )
            .await;
        t["token"].as_str().unwrap().to_owned()
    }
}

/// A `tessera-agent` process; its socket lives in `dir/sock/agent.sock`.
pub struct Agent {
    pub socket: PathBuf,
    pub spiffe_id: String,
    pub dir: tempfile::TempDir,
    pub stderr: PathBuf,
    _proc: Proc,
}

impl Agent {
    /// Starts an agent for node `name` (its token from [`Ca::node_token`]).
    pub fn start(ca: &Ca, name: &str, token: &str, runtime_socket: Option<&Path>) -> Agent {
        let mut extra = vec![];
        if let Some(r) = runtime_socket {
            extra.push(format!("runtime_socket=\"{}\"", r.display()));
        }
        Self::try_start(ca, name, Some(token), &extra).unwrap_or_else(|log| panic!("{log}"))
    }

    /// Starts an agent with a join token or none and extra `--set` options;
    /// `Err` with the agent's output if it exited instead of becoming ready.
    pub fn try_start(
        ca: &Ca,
        name: &str,
        token: Option<&str>,
        sets: &[String],
    ) -> Result<Agent, String> {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sock/agent.sock");
        let stderr = dir.path().join("agent.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-agent"));
        cmd.arg("--set")
            .arg(format!("ca_url=\"{}\"", ca.url))
            .arg("--set")
            .arg(format!("ca_bundle=\"{}\"", ca.bundle_path().display()))
            .arg("--set")
            .arg(format!("node_name=\"{name}\""))
            .arg("--set")
            .arg(format!("socket_path=\"{}\"", socket.display()))
            .arg("--set")
            .arg("sync_interval_seconds=1")
            .env_remove("TESSERA_JOIN_TOKEN")
            .env("TESSERA_LOG", "info,tessera_agent=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if let Some(t) = token {
            cmd.env("TESSERA_JOIN_TOKEN", t);
        }
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let proc = Proc { child };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).map_err(|_| {
            format!(
                "agent did not start: {line:?}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        })?;
        Ok(Agent {
            socket,
            spiffe_id: v["tessera_agent"]["spiffe_id"].as_str().unwrap().to_owned(),
            dir,
            stderr,
            _proc: proc,
        })
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}
