//! Node attestation with a platform token, with real processes: a
//! `tessera-ca` trusting a Kubernetes issuer for nodes (JWKS file), and a
//! `tessera-agent` holding the agent's projected service-account token in a
//! file. The agent becomes `.../tessera/agent/k8s.node-1`, serves a workload
//! through the Workload API, and at half its node certificate's life
//! re-attests with the token the file then holds (the first token's `jti`
//! is spent, so only a fresh read succeeds).

mod support;

use hyper::Method;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::Ca;
use tessera_core::now_unix;
use tessera_core::platform_jwt::mint::{SigningKey, token};

const ISS: &str = "https://kubernetes.default.svc.cluster.local";
const NODE: &str = "spiffe://example.org/tessera/agent/k8s.node-1";

fn agent_token(key: &SigningKey, jti: &str) -> String {
    let now = now_unix();
    let claims = json!({
        "iss": ISS, "aud": ["tessera"], "sub": "system:serviceaccount:tessera:agent",
        "iat": now - 5, "nbf": now - 5, "exp": now + 3600, "jti": jti,
        "kubernetes.io": {
            "namespace": "tessera",
            "serviceaccount": {"name": "agent", "uid": "sa-1"},
            "pod": {"name": "tessera-agent-x1", "uid": "pod-1"},
            "node": {"name": "node-1", "uid": "node-uid-1"},
        }
    });
    token(key, json!({"kid": "k1"}), &claims)
}

fn uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_attests_with_a_platform_token_and_re_attests() {
    let key = SigningKey::es256();
    let cfg_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg_dir.path().join("jwks.json"),
        json!({"keys": [key.jwk("k1")]}).to_string(),
    )
    .unwrap();
    let ca_toml = cfg_dir.path().join("ca.toml");
    std::fs::write(
        &ca_toml,
        format!(
            "[[attestation.jwt_issuers]]\nname = \"k8s\"\nkind = \"kubernetes\"\nissuer = \"{ISS}\"\n\
             audiences = [\"tessera\"]\njwks_file = \"{}\"\nrequire_jti = true\n\
             node_selectors = [\"k8s:ns:tessera\", \"k8s:sa:agent\"]\nnode_ttl_seconds = 60\n",
            cfg_dir.path().join("jwks.json").display()
        ),
    )
    .unwrap();
    let ca = Ca::start_args(&["--config", ca_toml.to_str().unwrap()]);
    let selector = format!("unix:uid:{}", uid());
    ca.entry(
        "spiffe://example.org/host-workload",
        &[&selector],
        Some(NODE),
    )
    .await;

    let token_file = cfg_dir.path().join("agent-token");
    std::fs::write(&token_file, agent_token(&key, "first")).unwrap();
    let socket = cfg_dir.path().join("sock/agent.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-agent"))
        .args(["--set", &format!("ca_url=\"{}\"", ca.url)])
        .args([
            "--set",
            &format!("ca_bundle=\"{}\"", ca.bundle_path().display()),
        ])
        .args(["--set", "node_name=\"node-1\""])
        .args([
            "--set",
            &format!("platform_token_file=\"{}\"", token_file.display()),
        ])
        .args(["--set", &format!("socket_path=\"{}\"", socket.display())])
        .args(["--set", "sync_interval_seconds=1"])
        .env_remove("TESSERA_JOIN_TOKEN")
        .env("TESSERA_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let _agent = Kill(child);
    // The agent's log lines, as they come (events to wait on, not to poll).
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        panic!(
            "agent did not start: {line:?}\n{}",
            lines.try_iter().collect::<Vec<_>>().join("\n")
        )
    });
    assert_eq!(v["tessera_agent"]["spiffe_id"], NODE);
    let node = ca
        .call(Method::GET, "/v1/nodes/k8s.node-1", None, 200)
        .await;
    assert_eq!(node["attestation_type"], "platform_token");

    // A workload on this host gets its SVID through the platform-attested node.
    let addr = format!("unix://{}", socket.display());
    let client = spiffe::WorkloadApiClient::connect_to(&addr).await.unwrap();
    let svid = client
        .fetch_x509_svid()
        .await
        .unwrap_or_else(|e| panic!("fetch_x509_svid: {e}"));
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/host-workload"
    );

    // The platform rotates the token; at half the node certificate's life
    // (30 s) the agent re-attests with it.
    std::fs::write(&token_file, agent_token(&key, "second")).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let l = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no re-attestation:\n{}", seen.join("\n")));
        assert!(
            !l.contains("renewing the node certificate"),
            "re-attestation failed: {l}"
        );
        let done = l.contains("node certificate renewed");
        seen.push(l);
        if done {
            break;
        }
    }
    let certs = ca
        .call(
            Method::GET,
            &format!("/v1/certs?spiffe_id={NODE}"),
            None,
            200,
        )
        .await;
    assert_eq!(certs["items"].as_array().unwrap().len(), 2, "{certs}");
    let tok = std::fs::read_to_string(&token_file).unwrap();
    seen.extend(lines.try_iter());
    assert!(
        !seen.iter().any(|l| l.contains(&tok[..40])),
        "token in the agent log"
    );
}
