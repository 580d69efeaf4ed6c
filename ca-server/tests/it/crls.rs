//! Issue 11, item 5: every generation that can still be trusted has a current
//! CRL. Issue a leaf under A, rotate to B, revoke the A leaf: `GET
//! /v1/crl?ca_id=A` lists it with a current nextUpdate, on every replica
//! (two on PostgreSQL) and after a restart, and `openssl verify -crl_check`
//! reports it revoked.

use crate::common::{Db, TestDb, ca_ids, get, issue, post, revoke};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tessera_test_support::{Ca, CaBuilder, Clients, openssl_output, poll_until, random_kek};
use x509_parser::prelude::FromDer;

/// The serials (hex) of `r`'s CRL for generation `ca_id` once it lists
/// `serial`, checking its signature by `ca_cert` and that nextUpdate is ahead.
async fn crl_listing(r: &Ca, ca_id: &str, ca_cert: &[u8], serial: &str) -> Vec<u8> {
    poll_until(
        Duration::from_secs(20),
        &format!("{}: CRL of {ca_id} lists {serial}", r.name()),
        || async {
            let reply = r.fetch(&format!("/v1/crl?ca_id={ca_id}")).await;
            if !reply.status.is_success() {
                return None;
            }
            let (_, crl) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(&reply.body)
                    .unwrap();
            let ca = tessera_core::svid::parse(ca_cert).unwrap();
            crl.verify_signature(&ca.tbs_certificate.subject_pki)
                .expect("the CRL is signed by its generation");
            let now = tessera_core::now_unix();
            let next = crl.next_update().expect("nextUpdate").timestamp();
            assert!(
                next > now,
                "{}: nextUpdate {next} is not after {now}",
                r.name()
            );
            crl.iter_revoked_certificates()
                .any(|c| hex::encode(c.raw_serial()) == serial)
                .then(|| reply.body.to_vec())
        },
    )
    .await
}

/// `openssl verify -crl_check` of `leaf` under `bundle` with `crl` (DER).
fn openssl_says_revoked(dir: &Path, bundle: &[u8], leaf: &str, crl: &[u8]) {
    std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf).unwrap();
    std::fs::write(dir.join("crl.der"), crl).unwrap();
    let o = openssl_output(
        dir,
        &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"],
    );
    assert!(o.status.success());
    let o = openssl_output(
        dir,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "bundle.pem",
            "-CRLfile",
            "crl.pem",
            "leaf.pem",
        ],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success(),
        "openssl accepted a revoked leaf: {said}"
    );
    assert!(said.contains("certificate revoked"), "{said}");
}

async fn ca_status(r: &Ca) -> Value {
    let (s, v) = get(r.admin(), "/v1/ca").await;
    assert!(s.is_success(), "{v}");
    v
}

async fn retired_generation_crl_stays_current(db: Db) {
    let db = TestDb::new(db).await;
    let kek = random_kek();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let opts = |dir: &Path| {
        CaBuilder::new()
            .data_dir(dir)
            .database(&db)
            .kek(&kek)
            .sets([
                "rotation.enabled=false",
                "rotation.check_interval_seconds=1",
                "rotation.lease_seconds=3",
                "rotation.min_overlap_seconds=2",
            ])
    };
    let mut first = opts(dirs[0].path()).start("replica-1");
    // Several replicas share PostgreSQL only.
    let second = (db.kind() == Db::Postgres).then(|| opts(dirs[1].path()).start("replica-2"));
    let a = ca_ids(&ca_status(&first).await, "active")[0].clone();

    let id = "spiffe://example.org/old-web";
    let (s, v) = post(
        first.admin(),
        "/v1/entries",
        json!({"spiffe_id": id, "selectors": ["unix:uid:7"]}),
    )
    .await;
    assert!(s.is_success(), "{v}");
    let (s, leaf) = issue(first.admin(), id).await;
    assert!(s.is_success(), "{leaf}");
    let serial = leaf["serial"].as_str().unwrap().to_owned();

    let (s, v) = post(first.admin(), "/v1/ca/rotate", None).await;
    assert!(s.is_success(), "{v}");
    poll_until(Duration::from_secs(30), "B active", || async {
        let v = ca_status(&first).await;
        (ca_ids(&v, "active") != [a.clone()] && ca_ids(&v, "retired") == [a.clone()]).then_some(())
    })
    .await;
    let (s, v) = revoke(
        first.admin(),
        json!({"serial": serial, "reason": "key_compromise"}),
    )
    .await;
    assert!(s.is_success(), "{v}");

    let bundle = first.fetch("/v1/bundle").await.body;
    let anchors = tessera_core::pem::certs(&bundle).unwrap();
    let a_cert = anchors
        .iter()
        .find(|c| {
            tessera_core::svid::parse(c)
                .unwrap()
                .subject()
                .to_string()
                .contains(&a)
        })
        .expect("A is still published")
        .to_vec();
    let cert = leaf["certificate"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    for r in std::iter::once(&first).chain(second.as_ref()) {
        let crl = crl_listing(r, &a, &a_cert, &serial).await;
        openssl_says_revoked(work.path(), &bundle, cert, &crl);
    }
    first.restart();
    let crl = crl_listing(&first, &a, &a_cert, &serial).await;
    openssl_says_revoked(work.path(), &bundle, cert, &crl);
}

crate::both_backends!(retired_generation_crl_stays_current);
