//! Every certificate and CRL Tessera makes, checked by two implementations
//! no one here wrote: pkilint (RFC 5280 structure, each document and each
//! issuer/subject pair; the only finding allowed is its false positive on
//! `spiffe://` URIs) and `openssl verify -x509_strict` (`openssl crl -verify`
//! for CRLs). The set: roots of every key algorithm, the API server's and an
//! operator's certificates, workload leaves from a join token, from a node
//! agent and from a platform token, the node's own certificate, the CRL, and
//! in intermediate mode the CSR, the certificate the operator's root signed,
//! a leaf under it and its CRL.

use crate::common::{Clients, Db, Harness, csr, post, revoke};
use hyper::StatusCode;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tessera_core::api::Role;
use tessera_test_support::pkilint::{assert_cert_clean, assert_chain_clean, assert_crl_clean};
use tessera_test_support::{SigningKey, jwks, openssl_output, token};
use x509_parser::prelude::FromDer;

/// The first certificate of a PEM text.
fn first(pem: &str) -> CertificateDer<'static> {
    tessera_core::pem::certs(pem.as_bytes()).unwrap().remove(0)
}

/// Lints `leaf` with pkilint (alone and, unless it is self-signed, under
/// `issuer`) and verifies it with `openssl verify -x509_strict` under
/// `anchor` through `chain`.
fn check_leaf(what: &str, leaf: &[u8], issuer: &[u8], anchor: &[u8], chain: &[&[u8]]) {
    assert_cert_clean(what, leaf);
    if leaf != issuer {
        // A self-signed certificate MAY omit the authority key identifier
        // (RFC 5280 4.2.1.1), which the pair linter requires.
        assert_chain_clean(what, issuer, leaf);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("anchor.pem"),
        tessera_core::pem::encode("CERTIFICATE", anchor),
    )
    .unwrap();
    std::fs::write(
        d.join("chain.pem"),
        tessera_core::pem::encode_certs(chain.iter().copied()),
    )
    .unwrap();
    std::fs::write(
        d.join("leaf.pem"),
        tessera_core::pem::encode("CERTIFICATE", leaf),
    )
    .unwrap();
    let mut args = vec!["verify", "-x509_strict", "-CAfile", "anchor.pem"];
    if !chain.is_empty() {
        args.extend(["-untrusted", "chain.pem"]);
    }
    args.push("leaf.pem");
    let out = openssl_output(d, &args);
    assert!(
        out.status.success(),
        "openssl verify -x509_strict of {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lints a self-signed root with pkilint and `openssl verify -x509_strict`.
fn check_root(what: &str, root: &[u8]) {
    check_leaf(what, root, root, root, &[]);
}

/// Lints the CRL served at `/v1/crl` and verifies its signature with openssl
/// (`openssl crl -verify`) under `issuer`.
async fn check_crl(h: &Harness, what: &str, issuer: &[u8]) {
    let crl = h.fetch("/v1/crl").await;
    assert_eq!(crl.status, StatusCode::OK);
    let (_, parsed) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl.body).unwrap();
    assert!(
        parsed.iter_revoked_certificates().count() > 0,
        "{what}: lint a CRL that lists something"
    );
    assert_crl_clean(what, &crl.body);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("crl.der"), &crl.body).unwrap();
    std::fs::write(
        d.join("ca.pem"),
        tessera_core::pem::encode("CERTIFICATE", issuer),
    )
    .unwrap();
    let out = openssl_output(
        d,
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout", "-verify",
        ],
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("verify OK"),
        "openssl crl -verify of {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issues a join-token leaf for a new entry `id` and revokes an earlier one,
/// so the CRL lists something. Returns the leaf and the answer.
async fn join_token_leaf(h: &Harness, id: &str) -> (CertificateDer<'static>, Value) {
    h.entry(id).await;
    let (cert, _, issued) = h.workload(id).await;
    let (_, _, doomed) = h.workload(id).await;
    let admin = h.operator(Role::Admin).await;
    let (s, v) = revoke(
        &admin,
        json!({"serial": doomed["serial"], "reason": "key_compromise"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    (first(&cert), issued)
}

/// The subject's serialNumber attribute (the CA generation's ID) of a DN.
fn serial_number_tag(
    dn: &x509_parser::x509::X509Name<'_>,
) -> x509_parser::der_parser::asn1_rs::Tag {
    dn.iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .next()
        .expect("the CA's subject carries its generation's serialNumber")
        .attr_value()
        .header
        .tag()
}

/// A root CA of each key algorithm and everything it signs: the server's and
/// an operator's certificates, leaves from a join token, a node agent and a
/// platform token, the node's own certificate, and the CRL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_mode_certificates_and_crl_pass_pkilint_and_openssl() {
    let ec = SigningKey::es256();
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[(&ec, "ec")])).unwrap();
    for alg in ["ecdsa-p256", "ecdsa-p384", "ed25519"] {
        let issuer = format!(
            "attestation.jwt_issuers=[{{name=\"ci\", issuer=\"https://ci.example.test\", \
             audiences=[\"tessera\"], kind=\"oidc\", jwks_file=\"{}\"}}]",
            jwks_file.display()
        );
        let h = Harness::start_with(
            Db::Sqlite,
            &[&format!("ca.key_algorithm=\"{alg}\""), &issuer],
        )
        .await;
        let root = h.anchors().remove(0);
        check_root(&format!("{alg} root"), &root);
        let parsed = tessera_core::svid::parse(&root).unwrap();
        assert_eq!(
            serial_number_tag(parsed.subject()),
            x509_parser::der_parser::asn1_rs::Tag::PrintableString,
            "RFC 5280 4.1.2.6: serialNumber is a PrintableString"
        );

        let leaf =
            |what: &str, der: &[u8]| check_leaf(&format!("{alg} {what}"), der, &root, &root, &[]);
        let server = h.auth.server_certified_key().unwrap();
        leaf("API server certificate", &server.cert[0]);
        let (_, operator) = h
            .auth
            .issue_operator_cert("lint", Role::Admin)
            .await
            .unwrap();
        leaf("operator certificate", &first(&operator));
        let (workload, _) = join_token_leaf(&h, "spiffe://example.org/web").await;
        leaf("join-token leaf", &workload);

        // A node attested by join token, then a workload its agent attested.
        let (node_cert, node_key, _) = h.node("n1").await;
        leaf("node certificate", &first(&node_cert));
        let admin = h.operator(Role::Admin).await;
        let cid: String = std::iter::repeat_n('a', 64).collect();
        let (s, v) = post(
            &admin,
            "/v1/entries",
            json!({"spiffe_id": "spiffe://example.org/agent-web",
                   "selectors": ["container:label:app:web"],
                   "parent_id": "spiffe://example.org/tessera/agent/n1"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let node = h.with_cert(&node_cert, &node_key);
        let (s, v) = post(
            &node,
            "/v1/agent/svids",
            json!({"csr": csr().1, "attestation": {
                "selectors": [format!("container:id:{cid}"), "container:label:app:web",
                              "posture:host-ns-net:false", "posture:host-ns-pid:false",
                              "posture:privileged:false", "posture:memory-limit:false"],
                "container_id": cid, "image": "localhost/app:1", "image_digest": "sha256:abc"}}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        leaf(
            "agent-attested leaf",
            &first(v["svids"][0]["certificate"].as_str().unwrap()),
        );

        // A workload presenting a platform token.
        let (s, v) = post(
            &admin,
            "/v1/entries",
            json!({"spiffe_id": "spiffe://example.org/ci-job", "selectors": ["jwt:sub:job"],
                   "parent_id": "spiffe://example.org/tessera/issuer/ci"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let now = tessera_core::now_unix();
        let t = token(
            &ec,
            json!({"kid": "ec"}),
            &json!({"iss": "https://ci.example.test", "aud": "tessera", "sub": "job",
                    "iat": now - 5, "nbf": now - 5, "exp": now + 600, "jti": alg}),
        );
        let (s, v) = post(
            &h.anonymous(),
            "/v1/svids/platform",
            json!({"token": t, "csr": csr().1}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        leaf(
            "platform-token leaf",
            &first(v["certificate"].as_str().unwrap()),
        );

        check_crl(&h, &format!("{alg} CRL"), &root).await;
    }
}

/// Intermediate mode under an operator's root made by openssl: the CSR Tessera
/// writes, the certificate the root signed from it, a leaf and the CRL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediate_mode_csr_certificates_and_crl_pass_pkilint_and_openssl() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (h, _) = crate::upstream::intermediate_harness(Db::Sqlite, dir, &[], "365").await;
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();

    // pkilint has no CSR linter: openssl checks its signature and the
    // subject's serialNumber must be a PrintableString, as in the certificate.
    let out = openssl_output(dir, &["req", "-in", "first.csr", "-noout", "-verify"]);
    assert!(
        out.status.success(),
        "openssl req -verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csr_der = tessera_core::pem::csr(&read("first.csr")).unwrap();
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der).unwrap();
    assert_eq!(
        serial_number_tag(&req.certification_request_info.subject),
        x509_parser::der_parser::asn1_rs::Tag::PrintableString
    );

    let root = tessera_core::pem::certs(&read("root.pem"))
        .unwrap()
        .remove(0);
    let int = tessera_core::pem::certs(&read("first.pem"))
        .unwrap()
        .remove(0);
    check_root("operator root", &root);
    check_leaf("imported intermediate", &int, &root, &root, &[]);
    h.entry("spiffe://example.org/web").await;
    let (cert, _, _) = h.workload("spiffe://example.org/web").await;
    check_leaf(
        "leaf under the intermediate",
        &first(&cert),
        &int,
        &root,
        &[&int],
    );
    let server = h.auth.server_certified_key().unwrap();
    check_leaf(
        "API server certificate under the intermediate",
        &server.cert[0],
        &int,
        &root,
        &[&int],
    );
    join_token_leaf(&h, "spiffe://example.org/doomed").await;
    check_crl(&h, "intermediate's CRL", &int).await;
}
