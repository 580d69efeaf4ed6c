//! Platform tokens as a Kubernetes cluster would project them, signed by a
//! key the test holds, and the CA configuration that trusts that key.

use serde_json::json;
use std::path::{Path, PathBuf};
use tessera_core::now_unix;
use tessera_core::platform_jwt::mint::{SigningKey, token};

/// The issuer of the cluster's service-account tokens.
const KUBERNETES_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A projected service-account token for `namespace`/`service_account` in
/// pod `pod` (scheduled on `node`, if given), audience `tessera`, valid for
/// an hour, signed by `key` as `kid` `k1`; `jti` makes it single-use.
pub fn kubernetes_token(
    key: &SigningKey,
    (namespace, service_account, pod): (&str, &str, &str),
    node: Option<&str>,
    jti: &str,
) -> String {
    let now = now_unix();
    let mut claims = json!({
        "iss": KUBERNETES_ISSUER, "aud": ["tessera"],
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        "iat": now - 5, "nbf": now - 5, "exp": now + 3600, "jti": jti,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": "sa-1"},
            "pod": {"name": pod, "uid": "pod-1"},
        }
    });
    if let Some(node) = node {
        claims["kubernetes.io"]["node"] = json!({"name": node, "uid": "node-uid-1"});
    }
    token(key, json!({"kid": "k1"}), &claims)
}

/// Writes `jwks.json` (`key` as `k1`) and `ca.toml` into `dir`: the CA's
/// configuration trusting that key as Kubernetes issuer `k8s` (`jti`
/// required), followed by `extra` lines of that issuer's table. Returns the
/// path of `ca.toml`.
pub fn kubernetes_issuer_config(dir: &Path, key: &SigningKey, extra: &str) -> PathBuf {
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.jwk("k1")]}).to_string()).unwrap();
    let toml = dir.join("ca.toml");
    std::fs::write(
        &toml,
        format!(
            "[[attestation.jwt_issuers]]\nname = \"k8s\"\nkind = \"kubernetes\"\n\
             issuer = \"{KUBERNETES_ISSUER}\"\naudiences = [\"tessera\"]\n\
             jwks_file = \"{}\"\nrequire_jti = true\n{extra}",
            jwks.display()
        ),
    )
    .unwrap();
    toml
}
