//! The main path end to end: entry → join token → certificate → renewal →
//! revocation → CRL and feed, checked with our own checker and with openssl.

use crate::both_backends;
use crate::common::{
    Clients, Db, Harness, create_entry, csr, delete, get, id, issue, post, renew, revoke,
};
use hyper::StatusCode;
use serde_json::{Value, json};
use tessera_core::api::Role;
use tessera_test_support::openssl_output;
use x509_parser::prelude::FromDer;

/// `openssl verify <options> -CAfile bundle.pem cert.pem` of `cert_pem`
/// against the bundle that came with it in `issued`.
fn openssl_verify(issued: &Value, cert_pem: &str, options: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let bundle = issued["bundle"].as_str().unwrap();
    std::fs::write(dir.path().join("bundle.pem"), bundle).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert_pem).unwrap();
    let mut args = vec!["verify"];
    args.extend_from_slice(options);
    args.extend(["-CAfile", "bundle.pem", "cert.pem"]);
    openssl_output(dir.path(), &args)
}

async fn issue_renew_revoke(db: Db) {
    let h = Harness::start(db).await;
    let entry = h.entry("spiffe://example.org/web").await;
    let (cert_pem, key_pem, issued) = h.workload("spiffe://example.org/web").await;

    // Profile: our checker, and openssl as an independent verifier.
    let der = tessera_core::pem::certs(cert_pem.as_bytes())
        .unwrap()
        .remove(0);
    let info = tessera_core::svid::check_tessera_leaf(&der).unwrap();
    assert_eq!(info.spiffe_id.as_str(), "spiffe://example.org/web");
    assert_eq!(
        hex::encode(info.attestation_hash.unwrap()),
        issued["attestation_hash"].as_str().unwrap()
    );
    assert!(info.not_after - info.not_before <= 3600 + 30);
    let out = openssl_verify(
        &issued,
        &cert_pem,
        &["-x509_strict", "-purpose", "sslclient"],
    );
    assert!(
        out.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The ledger maps the binding hash back to the attestation record.
    let admin = h.operator(Role::Admin).await;
    let hash = issued["attestation_hash"].as_str().unwrap();
    let (s, list) = get(&admin, &format!("/v1/certs?attestation_hash={hash}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["attestation"]["method"], "join_token");
    assert_eq!(list["items"][0]["attestation"]["entry_id"], entry["id"]);

    // Renewal over mTLS keeps the identity; the new key may differ.
    let workload = h.with_cert(&cert_pem, &key_pem);
    let (_, csr2) = csr();
    let (s, renewed) = post(&workload, "/v1/certs/renew", json!({"csr": csr2})).await;
    assert_eq!(s, StatusCode::CREATED, "{renewed}");
    assert_eq!(renewed["spiffe_id"], "spiffe://example.org/web");
    assert_ne!(renewed["serial"], issued["serial"]);

    // Revoke the first certificate: feed, CRL and renewal all see it.
    let serial = issued["serial"].as_str().unwrap();
    let (s, v) = get(&admin, "/v1/revocations?since=0").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["version"], 0);
    // An auditor long-polls the feed while the revocation happens.
    let waiter = {
        let follower = h.operator(Role::Auditor).await;
        tokio::spawn(async move { get(&follower, "/v1/revocations?since=0&wait=30").await })
    };
    let (s, r) = revoke(
        &admin,
        json!({"serial": serial, "reason": "key_compromise"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["revoked"], json!([serial]));
    let (s, feed) = waiter.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(feed["revocations"][0]["serial"], serial);
    assert_eq!(feed["revocations"][0]["reason"], "key_compromise");
    assert_eq!(feed["version"], r["version"]);

    let crl = h.fetch("/v1/crl").await;
    assert_eq!(crl.status, StatusCode::OK);
    let (_, parsed) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl.body).unwrap();
    let serials: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(serials, vec![serial.to_owned()]);
    assert!(
        parsed
            .verify_signature(
                &tessera_core::svid::parse(&h.anchors()[0])
                    .unwrap()
                    .tbs_certificate
                    .subject_pki
            )
            .is_ok()
    );

    let (s, v) = renew(&workload).await;
    assert!(
        s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN,
        "revoked certificate renewed: {s} {v}"
    );

    // Revoking again changes nothing.
    let (s, r2) = revoke(&admin, json!({"serial": serial})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r2["revoked"], json!([]));
    assert_eq!(r2["version"], r["version"]);

    // Every change is in the audit log, and the chain verifies.
    let records = crate::common::verified_audit_log(&admin).await;
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    for want in [
        "ca.create",
        "entry.create",
        "token.create",
        "cert.redeem",
        "cert.renew",
        "cert.revoke",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
}

both_backends!(issue_renew_revoke);

async fn revoke_by_spiffe_id_and_entry(db: Db) {
    let h = Harness::start(db).await;
    let e = h.entry("spiffe://example.org/api").await;
    h.entry("spiffe://example.org/other").await;
    let (_, _, a) = h.workload("spiffe://example.org/api").await;
    let (_, _, b) = h.workload("spiffe://example.org/api").await;
    let (_, _, other) = h.workload("spiffe://example.org/other").await;
    let admin = h.operator(Role::Issuer).await;
    let (s, r) = revoke(&admin, json!({"spiffe_id": "spiffe://example.org/api"})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let mut got: Vec<String> = serde_json::from_value(r["revoked"].clone()).unwrap();
    got.sort();
    let mut want = vec![
        a["serial"].as_str().unwrap().to_owned(),
        b["serial"].as_str().unwrap().to_owned(),
    ];
    want.sort();
    assert_eq!(got, want);
    h.workload("spiffe://example.org/api").await;
    let (s, r) = revoke(&admin, json!({"entry_id": e["id"]})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["revoked"].as_array().unwrap().len(), 1);
    let (s, list) = get(
        &admin,
        "/v1/certs?revoked=false&spiffe_id=spiffe%3A%2F%2Fexample.org%2Fother",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"][0]["serial"], other["serial"]);
}

both_backends!(revoke_by_spiffe_id_and_entry);

/// Many concurrent issuances (batched commits, including SQLite's one-round-trip
/// path): every certificate is recorded once, the audit chain stays intact, and
/// deleting the entry stops issuance at once even with a warm entry cache.
async fn concurrent_issuance_is_durable_and_audited(db: Db) {
    let h = Harness::start(db).await;
    let e = h.entry("spiffe://example.org/busy").await;
    let issuer = std::sync::Arc::new(h.operator(Role::Issuer).await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let issuer = issuer.clone();
        tasks.push(tokio::spawn(async move {
            let mut serials = Vec::new();
            for _ in 0..12 {
                let (s, v) = issue(&issuer, "spiffe://example.org/busy").await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
                serials.push(v["serial"].as_str().unwrap().to_owned());
            }
            serials
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 96);
    let admin = h.operator(Role::Admin).await;
    let (_, list) = get(
        &admin,
        "/v1/certs?spiffe_id=spiffe%3A%2F%2Fexample.org%2Fbusy&limit=1000",
    )
    .await;
    let mut listed: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, all);
    let records = crate::common::verified_audit_log(&admin).await;
    assert_eq!(
        records.iter().filter(|r| r.action == "cert.issue").count(),
        96
    );

    let before = h.count("certificates").await;
    let (s, _) = delete(&admin, &format!("/v1/entries/{}", id(&e))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = issue(&issuer, "spiffe://example.org/busy").await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::CONFLICT,
        "issued after entry deletion: {s} {v}"
    );
    assert_eq!(
        h.count("certificates").await,
        before,
        "nothing recorded after the deletion"
    );
}

both_backends!(concurrent_issuance_is_durable_and_audited);

/// P-384 and Ed25519 CAs are selectable and issue certificates openssl accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p384_and_ed25519_cas_issue_verifiable_certificates() {
    for alg in ["ecdsa-p384", "ed25519"] {
        let h = Harness::start_with(Db::Sqlite, &[&format!("ca.key_algorithm=\"{alg}\"")]).await;
        assert_eq!(h.auth.ca_status().await.unwrap().cas[0].key_algorithm, alg);
        h.entry("spiffe://example.org/alg").await;
        let (cert, _, issued) = h.workload("spiffe://example.org/alg").await;
        let out = openssl_verify(&issued, &cert, &["-x509_strict"]);
        assert!(
            out.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Issue 11 item 9: entries are read with their selectors in one query
/// (`store::entries`, a join): every entry comes back whole, with its own
/// selectors sorted, through each lookup (by ID, the list, by parent, by
/// SPIFFE ID prefix), however many entries share a parent or a prefix.
async fn entries_come_back_whole_from_one_query(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    let parent = "spiffe://example.org/tessera/agent/n1";
    let mut want = Vec::new();
    for i in 0..30 {
        let sid = format!("spiffe://example.org/set/w{i:02}");
        // Inserted out of order; 1 to 5 selectors each, some shared.
        let mut sel: Vec<String> = (0..=(i % 5))
            .rev()
            .map(|k| format!("k8s:label:s{}", (i + k) % 7))
            .collect();
        sel.push(format!("unix:uid:{i}"));
        let v = h
            .entry_with(json!({"spiffe_id": sid, "parent_id": parent, "selectors": sel}))
            .await;
        sel.sort();
        sel.dedup();
        want.push((v["id"].as_str().unwrap().to_owned(), sid, sel));
    }
    let check = |what: &str, got: Vec<tessera_core::api::Entry>| {
        let got: Vec<_> = got
            .into_iter()
            .map(|e| (e.id, e.spiffe_id, e.selectors))
            .collect();
        assert_eq!(got, want, "{what}");
    };
    let store = &h.auth.store;
    check(
        "by parent",
        store.entries_by_parent(parent, 100).await.unwrap(),
    );
    check(
        "by prefix",
        store
            .entries_by_id_prefix("spiffe://example.org/set/", 100)
            .await
            .unwrap(),
    );
    let all = store.list_entries(None).await.unwrap();
    check(
        "the list",
        all.into_iter()
            .filter(|e| e.spiffe_id.contains("/set/"))
            .collect(),
    );
    let (id, sid, sel) = &want[7];
    let one = store.get_entry(id).await.unwrap();
    assert_eq!((&one.spiffe_id, &one.selectors), (sid, sel));
    let (s, v) = get(&admin, &format!("/v1/entries/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["selectors"], json!(sel));
}
both_backends!(entries_come_back_whole_from_one_query);
