//! CA lifecycle on both backends: prepare → activate → retire → removed by
//! hand and through the API, the schedule rotating on its own, emergency
//! revocation of a generation (with re-issue of its leaves), and every refusal
//! the issue lists. Certificates are checked with openssl against the bundle.

use crate::both_backends;
use crate::common::{Clients, Db, Harness, ca_ids, csr, get, post, revoke};
use hyper::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tessera_core::api::Role;
use tessera_core::client::Client;

async fn status(admin: &Client) -> Value {
    let (s, v) = get(admin, "/v1/ca").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn one_in(v: &Value, state: &str) -> String {
    let ids = ca_ids(v, state);
    assert_eq!(ids.len(), 1, "expected one {state} CA: {v}");
    ids[0].clone()
}

async fn bundle_pem(h: &Harness) -> String {
    let r = h.fetch("/v1/bundle").await;
    assert_eq!(r.status, StatusCode::OK);
    String::from_utf8(r.body.to_vec()).unwrap()
}

/// `openssl verify -x509_strict` of `cert_pem` against `anchors_pem`.
fn openssl_verifies(dir: &Path, anchors_pem: &str, cert_pem: &str) -> bool {
    let (a, c) = (dir.join("anchors.pem"), dir.join("leaf.pem"));
    std::fs::write(&a, anchors_pem).unwrap();
    std::fs::write(&c, cert_pem).unwrap();
    Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(&a)
        .arg(&c)
        .output()
        .expect("openssl must be installed (.ci/run installs it)")
        .status
        .success()
}

fn ca_cert_pem(h: &Harness, id: &str) -> String {
    // The bundle holds each published generation's certificate; pick by subject serial (the CA ID).
    let anchors = h.anchors();
    for a in anchors {
        let p = tessera_core::svid::parse(&a).unwrap();
        if p.subject().to_string().contains(id) {
            return tessera_core::pem::encode("CERTIFICATE", &a);
        }
    }
    panic!("CA {id} not in the bundle");
}

async fn admin(h: &Harness) -> Client {
    h.operator(Role::Admin).await
}

async fn renew_with_key(c: &Client) -> (StatusCode, Value, rcgen::KeyPair) {
    let (key, csr) = csr();
    let (s, v) = post(c, "/v1/certs/renew", json!({"csr": csr})).await;
    (s, v, key)
}

/// A harness whose CA lives `ca_ttl` seconds and issues 60 s leaves, with
/// `extra` settings.
async fn short_lived_ca(db: Db, ca_ttl: u32, extra: &[&str]) -> Harness {
    let ttl = format!("ca.ttl_seconds={ca_ttl}");
    let leaves = [
        ttl.as_str(),
        "issuance.max_ttl_seconds=60",
        "issuance.default_ttl_seconds=60",
    ];
    Harness::start_with(db, &[&leaves[..], extra].concat()).await
}

async fn lifecycle_by_hand(db: Db) {
    let h = Harness::start_with(
        db,
        &["rotation.enabled=false", "rotation.min_overlap_seconds=2"],
    )
    .await;
    // Clients trust the bundle of the moment they are made (the server's own
    // certificate follows the active CA), so each step uses a fresh admin.
    let s0 = status(&admin(&h).await).await;
    let old = one_in(&s0, "active");
    let seq0 = s0["bundle_sequence"].as_i64().unwrap();
    assert_eq!(h.anchors().len(), 1);

    h.entry("spiffe://example.org/w1").await;
    let (w1_cert, w1_key, _) = h.workload("spiffe://example.org/w1").await;

    // Refusals before anything is prepared.
    let (s, v) = post(&admin(&h).await, &format!("/v1/ca/{old}/activate"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "activating the active CA: {v}");
    let (s, v) = post(&admin(&h).await, &format!("/v1/ca/{old}/retire"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "retiring the only active CA: {v}");
    assert!(v["detail"].as_str().unwrap().contains("active CA"), "{v}");
    let (s, _) = post(
        &admin(&h).await,
        &format!("/v1/ca/{}/activate", "0".repeat(32)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "activating a CA never prepared");
    let (s, v) = post(&admin(&h).await, "/v1/ca/not-an-id/activate", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let auditor = h.operator(Role::Auditor).await;
    let (s, _) = post(&auditor, "/v1/ca/prepare", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an auditor cannot prepare");

    // Prepare: published at once (bundle changes), signing nothing yet.
    let (s, v) = post(&admin(&h).await, "/v1/ca/prepare", None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let new = one_in(&v, "prepared");
    assert_ne!(v["bundle_sequence"].as_i64().unwrap(), seq0);
    assert_eq!(h.anchors().len(), 2);
    assert_eq!(bundle_pem(&h).await.matches("BEGIN CERTIFICATE").count(), 2);
    let (s, v) = post(&admin(&h).await, "/v1/ca/prepare", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "a second prepared CA: {v}");
    let (_, _, issued) = h.workload("spiffe://example.org/w1").await;
    let still_old = issued["certificate"].as_str().unwrap();
    assert!(openssl_verifies(
        h.dir.path(),
        &ca_cert_pem(&h, &old),
        still_old
    ));

    // The overlap is enforced.
    let (s, v) = post(&admin(&h).await, &format!("/v1/ca/{new}/activate"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "activated before the overlap: {v}");
    assert!(v["detail"].as_str().unwrap().contains("overlap"), "{v}");
    // The overlap is a span of wall-clock time; nothing else to wait for.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, v) = post(&admin(&h).await, &format!("/v1/ca/{new}/activate"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(one_in(&v, "active"), new);
    assert_eq!(one_in(&v, "retired"), old);
    let retired = v["cas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == old.as_str())
        .unwrap()
        .clone();
    assert!(retired["dependents"].as_i64().unwrap() >= 2, "{retired}");
    assert_eq!(retired["published"], true);

    // New leaves come from the new CA; old leaves still verify against the bundle.
    let (_, _, issued) = h.workload("spiffe://example.org/w1").await;
    let fresh = issued["certificate"].as_str().unwrap();
    let bundle = bundle_pem(&h).await;
    assert!(openssl_verifies(
        h.dir.path(),
        &ca_cert_pem(&h, &new),
        fresh
    ));
    assert!(!openssl_verifies(
        h.dir.path(),
        &ca_cert_pem(&h, &old),
        fresh
    ));
    assert!(openssl_verifies(h.dir.path(), &bundle, fresh));
    assert!(openssl_verifies(h.dir.path(), &bundle, &w1_cert));
    // A holder of an old-CA certificate renews across the rotation.
    let (s, v, _) = renew_with_key(&h.with_cert(&w1_cert, &w1_key)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(openssl_verifies(
        h.dir.path(),
        &ca_cert_pem(&h, &new),
        v["certificate"].as_str().unwrap()
    ));

    // Retiring the old one waits for its leaves.
    let (s, v) = post(&admin(&h).await, &format!("/v1/ca/{old}/retire"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("depend"), "{v}");
    // Let its leaves expire (the clock, straight in the database).
    h.expire_leaves_of(&old).await;
    let (s, v) = post(&admin(&h).await, &format!("/v1/ca/{old}/retire"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(one_in(&v, "removed"), old);
    assert_eq!(h.anchors().len(), 1);
    assert!(!bundle_pem(&h).await.is_empty());
    assert!(!openssl_verifies(
        h.dir.path(),
        &bundle_pem(&h).await,
        &w1_cert
    ));
    let (s, _) = post(&admin(&h).await, &format!("/v1/ca/{old}/retire"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "retiring a removed CA");
    let (s, _) = post(&admin(&h).await, &format!("/v1/ca/{old}/activate"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "activating a removed CA");

    // Every transition is audited and the chain holds.
    let records = crate::common::verified_audit_log(&admin(&h).await).await;
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    for a in ["ca.prepare", "ca.activate", "ca.retire"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }

    // Metrics name each generation's state and expiry.
    let r = h.fetch("/metrics").await;
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        text.contains(&format!(
            "tessera_ca_state{{ca_id=\"{new}\",state=\"active\"}} 1"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("tessera_ca_not_after_seconds{{ca_id=\"{old}\"}}")));
}
both_backends!(lifecycle_by_hand);

async fn schedule_rotates_on_its_own(db: Db) {
    // A 120 s CA: the schedule prepares at 2 % of its life and activates at
    // 6 % (and not before the 2 s overlap), checking every second.
    let h = short_lived_ca(
        db,
        120,
        &[
            "rotation.prepare_at=0.02",
            "rotation.activate_at=0.06",
            "rotation.min_overlap_seconds=2",
            "rotation.check_interval_seconds=1",
            "rotation.lease_seconds=3",
        ],
    )
    .await;
    let first = one_in(&status(&admin(&h).await).await, "active");
    let next = status(&admin(&h).await).await["schedule"]["next"].clone();
    assert!(
        next["action"] == "prepare" || next["action"] == "activate",
        "{next}"
    );
    // Wait (polling the API) until two more generations have been activated.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut activated = vec![first.clone()];
    loop {
        let v = status(&admin(&h).await).await;
        let a = one_in(&v, "active");
        if !activated.contains(&a) {
            activated.push(a);
        }
        if activated.len() >= 3 {
            assert!(v["schedule"]["stalled"].is_null(), "{v}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the schedule did not rotate twice: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every activation came from the schedule, after its generation had been
    // published for the overlap.
    let recs = crate::common::audit_log(&admin(&h).await).await;
    let find = |action: &str, target: &str| {
        recs.iter()
            .find(|r| r.action == action && r.target == target)
    };
    for id in &activated[1..] {
        let p = find("ca.prepare", id).expect("prepared by the schedule").at;
        let a = find("ca.activate", id).expect("activated by the schedule");
        assert!(
            a.at - p >= 2,
            "{id}: prepared at {p}, activated at {}",
            a.at
        );
        assert_eq!(a.actor, "system");
    }
    // A leaf never outlives its issuer.
    h.entry("spiffe://example.org/s").await;
    let (_, _, issued) = h.workload("spiffe://example.org/s").await;
    let v = status(&admin(&h).await).await;
    let active = v["cas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["state"] == "active")
        .unwrap()
        .clone();
    let not_after = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    };
    assert!(
        not_after(issued["not_after"].as_str().unwrap())
            <= not_after(active["not_after"].as_str().unwrap())
    );
}
both_backends!(schedule_rotates_on_its_own);

async fn emergency_revocation(db: Db) {
    let h = Harness::start_with(
        db,
        &["rotation.enabled=false", "rotation.min_overlap_seconds=1"],
    )
    .await;
    let old = one_in(&status(&admin(&h).await).await, "active");
    h.entry("spiffe://example.org/victim").await;
    h.entry("spiffe://example.org/bad").await;
    h.entry("spiffe://example.org/x").await;
    let (v_cert, v_key, v_issued) = h.workload("spiffe://example.org/victim").await;
    let (b_cert, b_key, b_issued) = h.workload("spiffe://example.org/bad").await;
    let (x_cert, x_key, x_issued) = h.workload("spiffe://example.org/x").await;
    // Two holders were already revoked by an operator: one for its own
    // reasons, one with reason ca_compromise (issue 11, item 7). Neither may
    // come back when the generation's revocation follows.
    for (issued, reason) in [(&b_issued, "key_compromise"), (&x_issued, "ca_compromise")] {
        let (s, v) = revoke(
            &admin(&h).await,
            json!({"serial": issued["serial"], "reason": reason}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = post(&admin(&h).await, "/v1/ca/prepare", None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let standby = one_in(&v, "prepared");
    let (_, feed0) = get(&admin(&h).await, "/v1/revocations?since=0").await;
    let since = feed0["version"].as_i64().unwrap();

    let (s, r) = post(&admin(&h).await, &format!("/v1/ca/{old}/revoke"), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["replacement"], standby.as_str(), "{r}");
    assert!(r.get("warning").is_none(), "{r}");
    assert!(r["revoked_certificates"].as_i64().unwrap() >= 2, "{r}");
    let v = status(&admin(&h).await).await;
    assert_eq!(one_in(&v, "revoked"), old);
    assert_eq!(one_in(&v, "active"), standby);
    // Out of the bundle at once, and its leaves in the feed as cACompromise.
    assert_eq!(h.anchors().len(), 1);
    assert!(!openssl_verifies(
        h.dir.path(),
        &bundle_pem(&h).await,
        &v_cert
    ));
    let (_, feed) = get(
        // The old admin certificate fell with its CA; a new one comes from the new CA.
        &h.operator(Role::Admin).await,
        &format!("/v1/revocations?since={since}"),
    )
    .await;
    let ev: Vec<&Value> = feed["revocations"].as_array().unwrap().iter().collect();
    assert!(
        ev.iter()
            .any(|e| e["serial"] == v_issued["serial"] && e["reason"] == "ca_compromise"),
        "{feed}"
    );
    assert_ne!(feed["bundle_sequence"], feed0["bundle_sequence"]);

    // The victim re-issues with its revoked certificate, under the new CA...
    let victim = h.with_cert(&v_cert, &v_key);
    let (s, v, _) = renew_with_key(&victim).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(openssl_verifies(
        h.dir.path(),
        &bundle_pem(&h).await,
        v["certificate"].as_str().unwrap()
    ));
    // ...but may do nothing else with it.
    let (s, v) = post(&victim, "/v1/denials", json!({"denials": []})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // A certificate an operator revoked (for its own compromise, or with
    // reason ca_compromise) stays revoked.
    for (cert, key) in [(&b_cert, &b_key), (&x_cert, &x_key)] {
        let (s, v, _) = renew_with_key(&h.with_cert(cert, key)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    }
    // A second revocation of the same generation is refused. (The ledger's
    // `IssuerUsable` check, which stops a leaf signed just before the
    // revocation from being recorded after it, is a race this test does not
    // provoke.)
    let (s, _) = post(
        &h.operator(Role::Admin).await,
        &format!("/v1/ca/{old}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Revoking the active generation with nothing prepared makes a fresh one,
    // with a warning that followers need the new bundle out of band.
    let (s, r) = post(&admin(&h).await, &format!("/v1/ca/{standby}/revoke"), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let fresh = r["replacement"].as_str().unwrap().to_owned();
    assert_ne!(fresh, standby);
    assert!(
        r["warning"].as_str().unwrap().contains("out of band"),
        "{r}"
    );
    assert_eq!(h.anchors().len(), 1);
    assert!(ca_cert_pem(&h, &fresh).contains("BEGIN CERTIFICATE"));
}
both_backends!(emergency_revocation);

async fn expiring_ca_refuses_to_issue(db: Db) {
    // A CA with 61 s to live and a 60 s minimum leaf lifetime: after two
    // seconds no leaf could get its minimum lifetime, so issuance is refused
    // with a pointer to rotation instead of handing out a nearly dead leaf.
    let h = short_lived_ca(db, 61, &["rotation.enabled=false"]).await;
    h.entry("spiffe://example.org/late").await;
    let token = h.join_token("spiffe://example.org/late").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, csr) = csr();
    let before = h.count("certificates").await;
    let (s, v) = post(
        &h.anonymous(),
        "/v1/certs/redeem",
        json!({"token": token, "csr": csr}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("rotate"), "{v}");
    assert_eq!(h.count("certificates").await, before);
}
both_backends!(expiring_ca_refuses_to_issue);
