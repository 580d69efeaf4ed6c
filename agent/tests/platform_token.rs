//! Node attestation with a platform token, with real processes: a
//! `tessera-ca` trusting a Kubernetes issuer for nodes (JWKS file), and a
//! `tessera-agent` holding the agent's projected service-account token in a
//! file. The agent becomes `.../tessera/agent/k8s.node-1`, serves a workload
//! through the Workload API, and at half its node certificate's life
//! re-attests with the token the file then holds (the first token's `jti`
//! is spent, so only a fresh read succeeds).

mod support;

use hyper::Method;
use std::time::Duration;
use support::{Agent, host_entry};
use tessera_test_support::{CaBuilder, SigningKey, kubernetes_issuer_config, kubernetes_token};

const NODE: &str = "spiffe://example.org/tessera/agent/k8s.node-1";

/// The agent's projected token (its pod runs on node-1).
fn agent_token(key: &SigningKey, jti: &str) -> String {
    let pod = ("tessera", "agent", "tessera-agent-x1");
    kubernetes_token(key, pod, Some("node-1"), jti)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_attests_with_a_platform_token_and_re_attests() {
    let key = SigningKey::es256();
    let cfg_dir = tempfile::tempdir().unwrap();
    let node_issuer =
        "node_selectors = [\"k8s:ns:tessera\", \"k8s:sa:agent\"]\nnode_ttl_seconds = 60\n";
    let ca_toml = kubernetes_issuer_config(cfg_dir.path(), &key, node_issuer);
    let ca = CaBuilder::new().config(&ca_toml).start("tessera-ca");
    host_entry(&ca, "spiffe://example.org/host-workload", NODE, None).await;

    let token_file = cfg_dir.path().join("agent-token");
    std::fs::write(&token_file, agent_token(&key, "first")).unwrap();
    let sets = [format!("platform_token_file=\"{}\"", token_file.display())];
    let agent = Agent::try_start(&ca, "node-1", None, &sets).unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(agent.spiffe_id, NODE);
    let node = ca
        .expect(Method::GET, "/v1/nodes/k8s.node-1", None, 200)
        .await;
    assert_eq!(node["attestation_type"], "platform_token");

    // A workload on this host gets its SVID through the platform-attested node.
    let addr = format!("unix://{}", agent.socket.display());
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
    agent
        .proc
        .wait_for("re-attestation", Duration::from_secs(60), |o| {
            for l in &o.stderr {
                assert!(
                    !l.contains("renewing the node certificate"),
                    "re-attestation failed: {l}"
                );
                if l.contains("node certificate renewed") {
                    return Some(());
                }
            }
            None
        });
    let certs = ca
        .expect(
            Method::GET,
            &format!("/v1/certs?spiffe_id={NODE}"),
            None,
            200,
        )
        .await;
    assert_eq!(certs["items"].as_array().unwrap().len(), 2, "{certs}");
    let tok = std::fs::read_to_string(&token_file).unwrap();
    assert!(!agent.log().contains(&tok[..40]), "token in the agent log");
}
