//! Nodes and attested issuance: a node attests with a join token, then asks
//! for the SVIDs of workloads its agent attested. Only entries parented to
//! that node whose selectors all match are issued; the minimum posture
//! policy, bans and malformed evidence refuse, changing nothing.

use crate::both_backends;
use crate::common::{
    Clients, Db, Harness, assert_problem, csr, delete, field_strs, get, id, issue, post, renew,
};
use hyper::StatusCode;
use serde_json::{Value, json};
use tessera_core::api::Role;
use tessera_core::client::Client;

const NODE1: &str = "spiffe://example.org/tessera/agent/n1";
const NODE2: &str = "spiffe://example.org/tessera/agent/n2";
const WEB: &str = "spiffe://example.org/web";
const API: &str = "spiffe://example.org/api";

fn container_id(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// Evidence for a well-confined container with `labels` (plus extra selectors).
fn evidence(id: &str, labels: &[&str], extra: &[&str]) -> Value {
    let mut selectors: Vec<String> = vec![
        format!("container:id:{id}"),
        "container:image-digest:sha256:abc".into(),
        "posture:host-ns-net:false".into(),
        "posture:host-ns-pid:false".into(),
        "posture:privileged:false".into(),
        "posture:memory-limit:false".into(),
        "unix:uid:0".into(),
    ];
    selectors.extend(labels.iter().map(|l| format!("container:label:{l}")));
    selectors.extend(extra.iter().map(|s| s.to_string()));
    json!({
        "selectors": selectors,
        "container_id": id,
        "image": "localhost/app:1",
        "image_digest": "sha256:abc",
    })
}

/// Replaces selector `from` by `to` in evidence made by [`evidence`].
fn swap_selector(att: &mut Value, from: &str, to: &str) {
    for s in att["selectors"].as_array_mut().unwrap() {
        if s == from {
            *s = json!(to);
        }
    }
}

async fn ask(c: &Client, attestation: Value) -> (StatusCode, Value, rcgen::KeyPair) {
    let (key, csr) = csr();
    let (s, v) = post(
        c,
        "/v1/agent/svids",
        json!({"csr": csr, "attestation": attestation}),
    )
    .await;
    (s, v, key)
}

async fn entry(admin: &Client, spiffe_id: &str, selectors: &[&str], parent: &str) -> Value {
    let (s, v) = post(
        admin,
        "/v1/entries",
        if parent.is_empty() {
            json!({"spiffe_id": spiffe_id, "selectors": selectors})
        } else {
            json!({"spiffe_id": spiffe_id, "selectors": selectors, "parent_id": parent})
        },
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// A client holding node `name`'s certificate (redeemed from a fresh join token).
async fn node_client(h: &Harness, name: &str) -> Client {
    let (cert, key, _) = h.node(name).await;
    h.with_cert(&cert, &key)
}

/// Entries `web` (label `app:web`) and `web-admin` (`app:web`, `tier:admin`)
/// under node 1, and `api` (label `app:<api_label>`) under node 2; returns `web`.
async fn web_entries(admin: &Client, api_label: &str) -> Value {
    let web = entry(admin, WEB, &["container:label:app:web"], NODE1).await;
    let web_admin = ["container:label:app:web", "container:label:tier:admin"];
    entry(admin, "spiffe://example.org/web-admin", &web_admin, NODE1).await;
    let api = format!("container:label:app:{api_label}");
    entry(admin, API, &[&api], NODE2).await;
    web
}

/// `node` asking for `spiffe_id` (with a fresh CSR) on this evidence.
async fn ask_for(node: &Client, spiffe_id: &str, attestation: Value) -> (StatusCode, Value) {
    let body = json!({"csr": csr().1, "spiffe_id": spiffe_id, "attestation": attestation});
    post(node, "/v1/agent/svids", body).await
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

async fn attested_issuance(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    let (n1_cert, n1_key, n1) = h.node("n1").await;
    let node1 = h.with_cert(&n1_cert, &n1_key);
    let node2 = node_client(&h, "n2").await;
    assert_eq!(n1["spiffe_id"], NODE1);

    // The redemptions recorded both nodes.
    let (s, v) = get(&admin, "/v1/nodes").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let names = field_strs(&v["items"], "id");
    assert_eq!(names, ["n1", "n2"]);
    let (s, v) = get(&admin, "/v1/nodes/n1").await;
    assert_eq!((s, v["spiffe_id"].as_str()), (StatusCode::OK, Some(NODE1)));
    assert_eq!(v["attestation_type"], "join_token");
    assert_eq!(v["banned"], false);

    let web = web_entries(&admin, "api").await;
    entry(
        &admin,
        "spiffe://example.org/host-tool",
        &["unix:uid:0"],
        NODE1,
    )
    .await;

    // The agent sees the entries parented to its node (not other nodes').
    let (s, v) = get(&node1, "/v1/agent/entries").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ids = field_strs(&v["items"], "spiffe_id");
    assert_eq!(
        ids,
        [
            "spiffe://example.org/host-tool",
            WEB,
            "spiffe://example.org/web-admin"
        ]
    );

    // A matching container gets exactly the entries parented to its node
    // whose selectors all match (not web-admin: no tier label; not host-tool:
    // its selector matches too, so it is included).
    let cid = container_id('a');
    let (s, v, key) = ask(&node1, evidence(&cid, &["app:web"], &[])).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ids = field_strs(&v["svids"], "spiffe_id");
    // Oldest entry first (creation time, then entry ID): the default SVID.
    let (_, all) = get(&admin, "/v1/entries").await;
    let mut by_age: Vec<(String, String, String)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            ["spiffe://example.org/host-tool", WEB].contains(&e["spiffe_id"].as_str().unwrap())
        })
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap().to_owned();
            (f("created_at"), f("id"), f("spiffe_id"))
        })
        .collect();
    by_age.sort();
    let oldest_first: Vec<&str> = by_age.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(ids, oldest_first);
    let svid = v["svids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spiffe_id"] == WEB)
        .unwrap()
        .clone();
    let serial = svid["serial"].as_str().unwrap().to_owned();

    // The ledger records the node and the evidence; its hash is in the binding.
    let (s, rec) = get(&admin, &format!("/v1/certs/{serial}")).await;
    assert_eq!(s, StatusCode::OK, "{rec}");
    assert_eq!(rec["node"], NODE1);
    let att = &rec["attestation"];
    assert_eq!(att["method"], "agent");
    assert_eq!(att["node"], NODE1);
    assert_eq!(att["container_id"], cid.as_str());
    assert_eq!(att["image_digest"], "sha256:abc");
    assert_eq!(att["entry_id"], web["id"]);
    assert!(
        att["selectors"]
            .as_array()
            .unwrap()
            .contains(&json!("container:label:app:web"))
    );
    let canonical = att.to_string();
    assert_eq!(
        rec["attestation_hash"].as_str().unwrap(),
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes()
        ))
    );
    let info = tessera_core::svid::check_leaf(
        &tessera_core::pem::certs(svid["certificate"].as_str().unwrap().as_bytes()).unwrap()[0],
    )
    .unwrap();
    assert_eq!(info.spiffe_id.as_str(), WEB);

    // Asking for one SPIFFE ID returns only it; one that does not match, nothing.
    let (s, v) = ask_for(&node1, WEB, evidence(&cid, &["app:web"], &[])).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["svids"].as_array().unwrap().len(), 1);

    let certs_before = h.count("certificates").await;
    // Selectors that do not match: no identity.
    let (s, v, _) = ask(&node2, evidence(&cid, &["app:web"], &[])).await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "no_entry");
    // Entry parented to another node: n1 cannot claim n2's api entry.
    let (s, v) = ask_for(&node1, API, evidence(&cid, &["app:api"], &[])).await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "no_entry");
    // A node identity is never issued to a workload.
    let (s, v) = ask_for(
        &node1,
        NODE2,
        evidence(&cid, &["app:web"], &["node:name:x"]),
    )
    .await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "no_entry");
    // Wrong trust domain.
    let other_domain = "spiffe://other.org/web";
    let (s, v) = ask_for(&node1, other_domain, evidence(&cid, &["app:web"], &[])).await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "wrong_trust_domain");
    // A workload certificate (the one just issued) or an operator is not a node.
    let workload = h.with_cert(svid["certificate"].as_str().unwrap(), &key.serialize_pem());
    for c in [&workload, &admin] {
        let (s, v, _) = ask(c, evidence(&cid, &["app:web"], &[])).await;
        assert_problem(s, &v, StatusCode::FORBIDDEN, "forbidden");
    }
    // Malformed and oversized evidence.
    let too_many: Vec<String> = (0..300).map(|i| format!("unix:gid:{i}")).collect();
    let bad = [
        (
            json!({"selectors": ["unix:uid:0"], "extra": 1}),
            "invalid_body",
        ),
        (json!({"selectors": too_many}), "invalid_field"),
        (json!({"selectors": ["not a selector"]}), "invalid_field"),
        (
            json!({"selectors": ["unix:uid:0"], "container_id": "nothex"}),
            "invalid_field",
        ),
        // Container evidence without the container (would dodge the posture policy).
        (
            json!({"selectors": ["container:label:app:web"]}),
            "invalid_field",
        ),
        (
            json!({"selectors": [format!("container:label:app:{}", "x".repeat(600))],
                "container_id": cid}),
            "invalid_field",
        ),
        (json!({"selectors": "unix:uid:0"}), "invalid_body"),
    ];
    for (att, want) in bad {
        let (s, v, _) = ask(&node1, att.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, want),
            "{att} -> {v}"
        );
    }
    let huge = json!({"selectors": ["unix:uid:0"], "image": "x".repeat(70 * 1024)});
    let (s, v, _) = ask(&node1, huge).await;
    assert_problem(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(h.count("certificates").await, certs_before);

    // Plain renewal of an agent-issued certificate is refused: only the agent
    // renews it, with fresh evidence.
    let (s, v) = renew(&workload).await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "renewal_refused");
    assert!(v["detail"].as_str().unwrap().contains("agent"), "{v}");
    // The node renews its own certificate the ordinary way.
    let (s, v) = renew(&node1).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["spiffe_id"], NODE1);
    // A host process (no container) matches by unix selectors, no posture needed.
    let (s, v, _) = ask(&node1, json!({"selectors": ["unix:gid:0", "unix:uid:0"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["svids"][0]["spiffe_id"], "spiffe://example.org/host-tool");
    assert_eq!(v["svids"].as_array().unwrap().len(), 1);
}

both_backends!(attested_issuance);

/// The minimum posture refuses whatever the entry says, audited, writing no
/// certificate.
async fn posture_policy(db: Db) {
    let h = Harness::start_with(db, &["attestation.require_memory_limit=true"]).await;
    let admin = h.operator(Role::Admin).await;
    let node = node_client(&h, "n1").await;
    entry(&admin, WEB, &["container:label:app:web"], NODE1).await;
    let cid = container_id('b');
    let before = h.count("certificates").await;
    let cases = [
        (
            "posture:privileged:false",
            "posture:privileged:true",
            "privileged",
        ),
        (
            "posture:host-ns-pid:false",
            "posture:host-ns-pid:true",
            "PID namespace",
        ),
        (
            "posture:host-ns-net:false",
            "posture:host-ns-net:true",
            "network namespace",
        ),
        (
            "posture:memory-limit:true",
            "posture:memory-limit:false",
            "memory limit",
        ),
        // Evidence missing the fact is refused too.
        ("posture:privileged:false", "unix:gid:0", "privileged"),
    ];
    for (good, bad, why) in cases {
        let mut att = evidence(&cid, &["app:web"], &["posture:memory-limit:true"]);
        att["selectors"]
            .as_array_mut()
            .unwrap()
            .retain(|s| s != "posture:memory-limit:false");
        swap_selector(&mut att, good, bad);
        let (s, v, _) = ask(&node, att).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "posture_refused"),
            "{bad}: {v}"
        );
        assert!(v["detail"].as_str().unwrap().contains(why), "{v}");
    }
    assert_eq!(h.count("certificates").await, before);
    let audit = crate::common::audit_log(&admin).await;
    let refusals: Vec<_> = audit
        .iter()
        .filter(|r| r.action == "attestation.refuse")
        .collect();
    assert_eq!(refusals.len(), 5);
    let details: Value = serde_json::from_str(&refusals[0].details).unwrap();
    assert!(details["reason"].as_str().unwrap().contains("privileged"));
    assert_eq!(details["node"], NODE1);
    assert_eq!(details["container_id"], cid.as_str());
    assert_eq!(refusals[0].actor, NODE1);

    // The same container, well confined, is issued.
    let mut att = evidence(&cid, &["app:web"], &["posture:memory-limit:true"]);
    let sel: Vec<Value> = att["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| **s != json!("posture:memory-limit:false"))
        .cloned()
        .collect();
    att["selectors"] = json!(sel);
    let (s, v, _) = ask(&node, att).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

both_backends!(posture_policy);

/// Banning a node refuses its certificate everywhere at once and revokes what
/// was issued through it; unbanning restores the node (not the revoked
/// certificates).
async fn ban_and_unban(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    let auditor = h.operator(Role::Auditor).await;
    let node = node_client(&h, "n1").await;
    entry(&admin, WEB, &["container:label:app:web"], NODE1).await;
    let cid = container_id('c');
    let (s, v, _) = ask(&node, evidence(&cid, &["app:web"], &[])).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let serial = v["svids"][0]["serial"].as_str().unwrap().to_owned();
    // A certificate not issued through the node is untouched by its ban.
    h.entry("spiffe://example.org/direct").await;
    let (_, _, direct) = h.workload("spiffe://example.org/direct").await;

    // Only admins ban.
    let (s, _) = post(&auditor, "/v1/nodes/n1/ban", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = post(&admin, "/v1/nodes/nope/ban", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = post(&admin, "/v1/nodes/n1/ban", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["node"]["banned"], true);
    assert_eq!(v["revoked"], json!([serial]));

    // The node's certificate stops working on every route, renewal included.
    let (s, v, _) = ask(&node, evidence(&cid, &["app:web"], &[])).await;
    assert_problem(s, &v, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (s, v) = renew(&node).await;
    assert_problem(s, &v, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (s, _) = get(&node, "/v1/revocations").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Its workloads' certificates are revoked, others are not.
    let (_, rec) = get(&admin, &format!("/v1/certs/{serial}")).await;
    assert_eq!(rec["revocation_reason"], "privilege_withdrawn", "{rec}");
    let (_, rec) = get(
        &admin,
        &format!("/v1/certs/{}", direct["serial"].as_str().unwrap()),
    )
    .await;
    assert_eq!(rec["revoked_at"], Value::Null);
    // A new join token for the banned node's entry is refused too.
    let (s, v) = post(
        &h.anonymous(),
        "/v1/certs/redeem",
        json!({"token": h.join_token(NODE1).await, "csr": csr().1}),
    )
    .await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "node_refused");

    // Unban: the node works again; the revoked certificate stays revoked.
    let (s, v) = post(&admin, "/v1/nodes/n1/unban", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["node"]["banned"], false);
    assert_eq!(v["revoked"], json!([]));
    let (s, v, _) = ask(&node, evidence(&cid, &["app:web"], &[])).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, rec) = get(&admin, &format!("/v1/certs/{serial}")).await;
    assert_ne!(rec["revoked_at"], Value::Null);
    // Audited.
    let audit = crate::common::audit_log(&admin).await;
    let actions: Vec<&str> = audit.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"node.attest"));
    assert!(actions.contains(&"node.ban"));
    assert!(actions.contains(&"node.unban"));
    assert!(actions.contains(&"cert.agent_issue"));
}

both_backends!(ban_and_unban);

/// Deleting an entry stops the next attested issuance at once.
async fn deleted_entry_stops_issuance(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    let node = node_client(&h, "n1").await;
    let e = entry(&admin, WEB, &["container:label:app:web"], NODE1).await;
    let cid = container_id('d');
    let (s, _, _) = ask(&node, evidence(&cid, &["app:web"], &[])).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = delete(&admin, &format!("/v1/entries/{}", id(&e))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v, _) = ask(&node, evidence(&cid, &["app:web"], &[])).await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "no_entry");
    // A node entry cannot have a parent; a node identity cannot be issued directly.
    let (s, v) = post(
        &admin,
        "/v1/entries",
        json!({"spiffe_id": NODE2, "selectors": ["a:b"], "parent_id": NODE1}),
    )
    .await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "invalid_field");
    let (s, v) = issue(&admin, NODE1).await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "invalid_field");
}

both_backends!(deleted_entry_stops_issuance);

/// JWT-SVIDs for attested workloads (`POST /v1/agent/jwt-svids`, the agent's
/// `FetchJWTSVID`): the same node, posture and entry rules as X.509, one
/// ES256 token per matching entry that verifies against the bundle's
/// `jwt-svid` keys; bad input and other callers are refused; a banned node
/// gets nothing. Nothing is written to the ledger.
async fn agent_jwt_svids(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    let node = node_client(&h, "n1").await;
    web_entries(&admin, "web").await;
    let cid = container_id('e');
    let jwt = |att: Value, extra: Value| {
        let node = &node;
        async move {
            let mut body = json!({"audience": ["db"], "attestation": att});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            post(node, "/v1/agent/jwt-svids", body).await
        }
    };
    let certs_before = h.count("certificates").await;
    let (_, bundle) = get(&h.anonymous(), "/v1/bundle?format=jwks").await;
    let keys = tessera_core::jwt::bundle_keys(&bundle.to_string());
    assert_eq!(keys.len(), 1, "{bundle}");
    let now = tessera_core::now_unix();

    // One label: only `web` (not web-admin, not the other node's entry).
    let (s, v) = jwt(evidence(&cid, &["app:web"], &[]), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let svids = v["svids"].as_array().unwrap();
    assert_eq!(svids.len(), 1, "{v}");
    let token = svids[0]["token"].as_str().unwrap();
    let ok = tessera_core::jwt::validate(token, "db", &keys, now).unwrap();
    assert_eq!(ok.spiffe_id, WEB);
    assert!(ok.expires_at <= now + 301, "default lifetime 300 s");
    // Both labels: both entries; `spiffe_id` narrows to one.
    let both = evidence(&cid, &["app:web", "tier:admin"], &[]);
    let (s, v) = jwt(both.clone(), json!({"ttl_seconds": 60})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut subs: Vec<String> = v["svids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            tessera_core::jwt::validate(t["token"].as_str().unwrap(), "db", &keys, now)
                .unwrap()
                .spiffe_id
        })
        .collect();
    subs.sort();
    assert_eq!(subs, [WEB, "spiffe://example.org/web-admin"]);
    let (s, v) = jwt(both, json!({"spiffe_id": "spiffe://example.org/web-admin"})).await;
    assert_eq!(
        (s, v["svids"].as_array().map(Vec::len)),
        (StatusCode::CREATED, Some(1))
    );
    assert_eq!(v["svids"][0]["spiffe_id"], "spiffe://example.org/web-admin");

    // Refusals, each changing nothing.
    let (s, v) = jwt(evidence(&cid, &["app:api"], &[]), json!({})).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "no_entry"), "{v}");
    let no_container = json!({"selectors": ["posture:privileged:false"]});
    let (s, v) = jwt(no_container, json!({})).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_field"),
        "{v}"
    );
    // The rest on the `web` workload's evidence.
    let cases = [
        (json!({"spiffe_id": API}), StatusCode::FORBIDDEN, "no_entry"),
        (
            json!({"spiffe_id": "spiffe://other.org/web"}),
            StatusCode::BAD_REQUEST,
            "wrong_trust_domain",
        ),
        (
            json!({"audience": []}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"audience": ["x".repeat(257)]}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"ttl_seconds": 86400}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"csr": "not for JWTs"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    for (extra, status, want) in cases {
        let (s, v) = jwt(evidence(&cid, &["app:web"], &[]), extra.clone()).await;
        assert_eq!((s, code(&v)), (status, want), "{extra}: {v}");
    }
    // The minimum posture applies (and is audited).
    let mut privileged = evidence(&cid, &["app:web"], &[]);
    swap_selector(
        &mut privileged,
        "posture:privileged:false",
        "posture:privileged:true",
    );
    let (s, v) = jwt(privileged, json!({})).await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "posture_refused");
    let audit = crate::common::audit_log(&admin).await;
    assert!(
        audit
            .iter()
            .any(|r| r.action == "attestation.refuse" && r.target == cid.as_str()),
        "{audit:?}"
    );
    // Only a node's certificate may ask (here an operator's).
    let (s, v) = post(
        &admin,
        "/v1/agent/jwt-svids",
        json!({"audience": ["db"], "attestation": evidence(&cid, &["app:web"], &[])}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // No certificate was written by any of this.
    assert_eq!(h.count("certificates").await, certs_before);

    // A banned node gets nothing.
    let (s, _) = post(&admin, "/v1/nodes/n1/ban", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = jwt(evidence(&cid, &["app:web"], &[]), json!({})).await;
    assert_problem(s, &v, StatusCode::UNAUTHORIZED, "unauthenticated");
}

both_backends!(agent_jwt_svids);

/// Node sets: an entry `spiffe://<td>/tessera/node-set/<name>` whose
/// selectors are node selectors; workload entries parented to it are
/// available to every node whose node entry has those selectors (and to no
/// other node). The set itself is never issued and cannot have a parent;
/// deleting it stops issuance through it at once.
async fn node_sets(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    const EU: &str = "spiffe://example.org/tessera/node-set/eu";
    // Two nodes the operator labelled by zone in their node entries.
    let mut nodes = vec![];
    for (name, zone) in [("n1", "eu"), ("n2", "us")] {
        let sid = format!("spiffe://example.org/tessera/agent/{name}");
        entry(
            &admin,
            &sid,
            &[&format!("node:zone:{zone}"), &format!("node:name:{name}")],
            "",
        )
        .await;
        let (c, k, _) = h.workload(&sid).await;
        nodes.push(h.with_cert(&c, &k));
    }
    let (eu_node, us_node) = (&nodes[0], &nodes[1]);

    // A node set cannot have a parent or DNS names, and is never issued.
    for bad in [
        json!({"spiffe_id": EU, "selectors": ["node:zone:eu"], "parent_id": NODE1}),
        json!({"spiffe_id": EU, "selectors": ["node:zone:eu"], "dns_names": ["a.example"]}),
        json!({"spiffe_id": "spiffe://example.org/tessera/node-set/a/b", "selectors": ["x:y"]}),
        json!({"spiffe_id": "spiffe://example.org/tessera/node-set", "selectors": ["x:y"]}),
        // Claim selectors without their issuer: another cluster's node of the
        // same name would match.
        json!({"spiffe_id": EU, "selectors": ["k8s:node-name:gpu-1"]}),
        json!({"spiffe_id": EU, "selectors": ["jwt:sub:node-7"]}),
        // Issuer parent IDs are nobody's identity.
        json!({"spiffe_id": "spiffe://example.org/tessera/issuer/k8s", "selectors": ["x:y"]}),
    ] {
        let (s, v) = post(&admin, "/v1/entries", bad.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_field"),
            "{bad}: {v}"
        );
    }
    // With the issuer named, a claim-based set is fine.
    let (s, v) = post(
        &admin,
        "/v1/entries",
        json!({"spiffe_id": "spiffe://example.org/tessera/node-set/gpu",
                    "selectors": ["jwt:issuer-name:k8s", "k8s:node-name:gpu-1"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let set = entry(&admin, EU, &["node:zone:eu"], "").await;
    let (s, v) = post(&admin, "/v1/tokens", json!({"spiffe_id": EU})).await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "invalid_field");
    let (s, v) = issue(&admin, EU).await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "invalid_field");

    // A workload entry parented to the set.
    entry(&admin, WEB, &["container:label:app:web"], EU).await;
    let cid = container_id('f');
    async fn listed(c: &Client) -> Vec<String> {
        let (s, v) = get(c, "/v1/agent/entries").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["spiffe_id"].as_str().unwrap().to_owned())
            .collect()
    }
    assert_eq!(listed(eu_node).await, [WEB]);
    assert!(listed(us_node).await.is_empty());
    let (s, v, _) = ask(eu_node, evidence(&cid, &["app:web"], &[])).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let serial = v["svids"][0]["serial"].as_str().unwrap().to_owned();
    let (_, rec) = get(&admin, &format!("/v1/certs/{serial}")).await;
    let att = rec["attestation"].to_string();
    assert!(
        att.contains(set["id"].as_str().unwrap()),
        "the set is recorded: {rec}"
    );
    assert!(att.contains(NODE1), "{rec}");
    // The node outside the set gets nothing from it (X.509 or JWT).
    let (s, v, _) = ask(us_node, evidence(&cid, &["app:web"], &[])).await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "no_entry");
    let (s, v) = post(
        us_node,
        "/v1/agent/jwt-svids",
        json!({"audience": ["db"], "attestation": evidence(&cid, &["app:web"], &[])}),
    )
    .await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "no_entry");

    // Deleting the set stops issuance through it at once.
    let (s, _) = delete(&admin, &format!("/v1/entries/{}", id(&set))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v, _) = ask(eu_node, evidence(&cid, &["app:web"], &[])).await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "no_entry");
    assert!(listed(eu_node).await.is_empty());
}

both_backends!(node_sets);

/// The (SPIFFE ID, hint) of each SVID of an answer to the node.
fn hints(v: &Value) -> Vec<(&str, &str)> {
    v["svids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["spiffe_id"].as_str().unwrap(),
                s["hint"].as_str().unwrap(),
            )
        })
        .collect()
}

/// Entry hints: stored and returned on both backends, refused when
/// malformed (nothing changes), carried on the X.509 and JWT answers to the
/// node, which list a workload's SVIDs oldest entry first (the default);
/// asking for an ID the workload is not entitled to is refused.
async fn entry_hints_and_default_order(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    let (c, k, _) = h.node("n1").await;
    let node = h.with_cert(&c, &k);
    // Created first, sorting last by SPIFFE ID: still the default.
    let (s, zweb) = post(
        &admin,
        "/v1/entries",
        json!({"spiffe_id": "spiffe://example.org/z-web", "selectors": ["container:label:app:web"],
               "parent_id": NODE1, "hint": "web"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{zweb}");
    assert_eq!(zweb["hint"], "web");
    // The next entry is created in a later second.
    let t0 = tessera_core::now_unix();
    tessera_test_support::wait_until(std::time::Duration::from_secs(3), "the next second", || {
        tessera_core::now_unix() > t0
    });
    let adb = entry(
        &admin,
        "spiffe://example.org/a-db",
        &["container:label:app:web"],
        NODE1,
    )
    .await;
    assert_eq!(adb["hint"], Value::Null);
    let adb_path = format!("/v1/entries/{}", adb["id"].as_str().unwrap());
    let body = |hint: Value| {
        json!({"spiffe_id": "spiffe://example.org/a-db", "selectors": ["container:label:app:web"],
               "parent_id": NODE1, "hint": hint})
    };
    let (s, v) = crate::common::call(
        &admin,
        hyper::Method::PUT,
        &adb_path,
        Some(body(json!("db-client"))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = get(&admin, &adb_path).await;
    assert_eq!(v["hint"], "db-client");

    // Malformed hints: refused, naming the field; the entry keeps its hint.
    let before = h.count("entries").await;
    for bad in [
        json!(""),
        json!("h".repeat(65)),
        json!("tab\there"),
        json!("caf\u{e9}"),
        json!(" web"),
        json!("web\n"),
        json!(7),
    ] {
        let (s, v) = post(
            &admin,
            "/v1/entries",
            json!({"spiffe_id": "spiffe://example.org/x", "selectors": ["unix:uid:1"], "hint": bad}),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        let (s, _) = crate::common::call(
            &admin,
            hyper::Method::PUT,
            &adb_path,
            Some(body(bad.clone())),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        if bad.is_string() {
            assert_eq!(v["code"], "invalid_field", "{v}");
            assert!(v["detail"].as_str().unwrap().contains("hint"), "{v}");
        }
    }
    assert_eq!(h.count("entries").await, before);
    let (_, v) = get(&admin, &adb_path).await;
    assert_eq!(v["hint"], "db-client");
    let (_, v) = get(&admin, "/v1/entries").await;
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["hint"] == "web"),
        "{v}"
    );

    // The node's answers: oldest entry first, each with its hint.
    let att = evidence(&container_id('d'), &["app:web"], &[]);
    let (s, v, _) = ask(&node, att.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let got = hints(&v);
    let want = [
        ("spiffe://example.org/z-web", "web"),
        ("spiffe://example.org/a-db", "db-client"),
    ];
    assert_eq!(got, want);
    let (s, v) = post(
        &node,
        "/v1/agent/jwt-svids",
        json!({"audience": ["db"], "attestation": att.clone()}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let got = hints(&v);
    assert_eq!(got, want);
    // One asked for by ID; one the workload is not entitled to is refused.
    let (s, v) = post(
        &node,
        "/v1/agent/jwt-svids",
        json!({"audience": ["db"], "attestation": att.clone(), "spiffe_id": "spiffe://example.org/a-db"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["svids"].as_array().unwrap().len(), 1);
    assert_eq!(v["svids"][0]["spiffe_id"], "spiffe://example.org/a-db");
    entry(
        &admin,
        "spiffe://example.org/admin",
        &["container:label:tier:admin"],
        NODE1,
    )
    .await;
    let (s, v) = post(
        &node,
        "/v1/agent/jwt-svids",
        json!({"audience": ["db"], "attestation": att, "spiffe_id": "spiffe://example.org/admin"}),
    )
    .await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "no_entry");
    // Certificates answered to other callers carry no hint field.
    let (s, v) = issue(&admin, "spiffe://example.org/z-web").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v.get("hint").is_none(), "{v}");
}

both_backends!(entry_hints_and_default_order);
