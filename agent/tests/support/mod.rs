//! Shared by the agent's process tests: a real `tessera-agent` process beside
//! a real `tessera-ca` (the test-support crate's), node join tokens, and the
//! Podman fixtures of the container tests ([`podman`]).

#![allow(dead_code)]

pub mod podman;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use tessera_test_support::{Ca, EXIT_TIMEOUT, Process};

/// Longest wait for an agent to print its first line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// This test process's UID, which a host workload's `unix:uid:` selector names.
pub fn uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// The selector a host workload run by this test process (its UID) gets.
pub fn uid_selector() -> String {
    format!("unix:uid:{}", uid())
}

/// An entry for this test process as a host workload ([`uid_selector`])
/// parented to `node`, its certificates living `ttl` seconds if given.
pub async fn host_entry(ca: &Ca, spiffe_id: &str, node: &str, ttl: Option<u64>) -> Value {
    let mut body =
        json!({"spiffe_id": spiffe_id, "selectors": [uid_selector()], "parent_id": node});
    if let Some(ttl) = ttl {
        body["ttl_seconds"] = json!(ttl);
    }
    ca.expect(Method::POST, "/v1/entries", Some(body), 201)
        .await
}

/// A second CA for `other.org`, whose bundle `ca` holds through a federation
/// relationship bootstrapped with it (the endpoint itself is never
/// reachable: the bootstrap is the bundle held); returns the CA and its
/// authorities.
pub async fn federated_other_org(ca: &Ca) -> (Ca, Vec<rustls::pki_types::CertificateDer<'static>>) {
    let other = tessera_test_support::CaBuilder::new()
        .trust_domain("other.org")
        .start("other.org");
    let pem = std::fs::read_to_string(other.bundle_path()).unwrap();
    let anchors = tessera_core::pem::certs(pem.as_bytes()).unwrap();
    ca.expect(
        Method::POST,
        "/v1/federation",
        Some(
            json!({"trust_domain": "other.org", "bundle_endpoint_url": "https://127.0.0.1:1/",
            "profile": "https_spiffe",
            "endpoint_spiffe_id": "spiffe://other.org/tessera/bundle-endpoint",
            "bootstrap_bundle": pem}),
        ),
        201,
    )
    .await;
    (other, anchors)
}

/// A host-workload entry ([`host_entry`]) under `node` that federates with `other.org`.
pub async fn federating_host_entry(ca: &Ca, spiffe_id: &str, node: &str) -> Value {
    let body = json!({"spiffe_id": spiffe_id, "selectors": [uid_selector()], "parent_id": node,
        "federates_with": ["other.org"]});
    ca.expect(Method::POST, "/v1/entries", Some(body), 201)
        .await
}

/// A node entry (`spiffe://example.org/tessera/agent/<name>`) and a join token for it.
pub async fn node_token(ca: &Ca, name: &str) -> String {
    node_token_ttl(ca, name, None).await
}

/// A node entry for `name`, its join token and one host-workload entry
/// ([`host_entry`]) for `spiffe_id` under it: (token, node SPIFFE ID).
pub async fn host_node(ca: &Ca, name: &str, spiffe_id: &str) -> (String, String) {
    let token = node_token(ca, name).await;
    let node = format!("spiffe://example.org/tessera/agent/{name}");
    host_entry(ca, spiffe_id, &node, None).await;
    (token, node)
}

/// A node entry (certificate lifetime `ttl` seconds) and a join token for it.
pub async fn node_token_ttl(ca: &Ca, name: &str, ttl: Option<u64>) -> String {
    let sid = format!("spiffe://example.org/tessera/agent/{name}");
    ca.expect(
        Method::POST,
        "/v1/entries",
        Some(
            json!({"spiffe_id": sid, "selectors": [format!("node:name:{name}")],
                    "ttl_seconds": ttl}),
        ),
        201,
    )
    .await;
    ca.join_token(&sid).await
}

/// A `tessera-agent` process; its socket lives in `dir/sock/agent.sock`.
pub struct Agent {
    pub socket: PathBuf,
    pub spiffe_id: String,
    pub proc: Process,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent for node `name` (its token from [`node_token`]).
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-agent"));
        cmd.arg("--set")
            .arg(format!("ca_url=\"{}\"", ca.url()))
            .arg("--set")
            .arg(format!("ca_bundle=\"{}\"", ca.bundle_path().display()))
            .arg("--set")
            .arg(format!("node_name=\"{name}\""))
            // Through the environment, so that every agent test also shows
            // the agent's environment overrides at work (a raw path is taken
            // as a string, as in a shell).
            .env("TESSERA_AGENT__SOCKET_PATH", &socket)
            .env("TESSERA_AGENT__SYNC_INTERVAL_SECONDS", "1")
            .env_remove("TESSERA_JOIN_TOKEN")
            .env("TESSERA_LOG", "info,tessera_agent=debug");
        if let Some(t) = token {
            cmd.env("TESSERA_JOIN_TOKEN", t);
        }
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        let mut proc = Process::spawn(format!("tessera-agent {name}"), &mut cmd);
        let line = proc.first_stdout_line(START_TIMEOUT);
        let v: Option<Value> = line.as_deref().and_then(|l| serde_json::from_str(l).ok());
        let Some(v) = v else {
            if line.is_none() {
                // It is exiting: its whole log explains why.
                proc.wait_exit(EXIT_TIMEOUT);
            }
            return Err(format!("agent did not start: {line:?}\n{}", proc.stderr()));
        };
        Ok(Agent {
            socket,
            spiffe_id: v["tessera_agent"]["spiffe_id"].as_str().unwrap().to_owned(),
            proc,
            dir,
        })
    }

    /// A Workload API client (the `spiffe` crate's) on the agent's socket.
    pub async fn spiffe_client(&self) -> spiffe::WorkloadApiClient {
        spiffe::WorkloadApiClient::connect_to(format!("unix://{}", self.socket.display()))
            .await
            .unwrap()
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }
}
