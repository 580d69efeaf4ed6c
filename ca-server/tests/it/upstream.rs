//! Tessera as an intermediate under an operator's root made by `openssl`:
//! the CSR flow (`ca csr` → operator signs → `ca import-signed`) and importing
//! an existing CA certificate and key. Leaves must verify against the
//! operator's root with openssl.

use crate::both_backends;
use crate::common::{Db, Harness, TestDb, config};
use hyper::Method;
use std::path::Path;
use std::process::Command;
use tessera_ca::authority::{Authority, import_signed_intermediate, prepare_intermediate};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CA_EXT: &str = "[v3_ca]\nbasicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n\
    subjectAltName=URI:spiffe://example.org\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

/// An operator root (EC P-256) in `dir`: root.key, root.pem.
fn operator_root(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &format!("{name}.key"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "3650",
            "-subj",
            &format!("/O=Operator/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// Issues a workload certificate through the harness and checks it with openssl
/// against `root.pem` (the intermediate travels in the chain).
async fn leaf_verifies_against_root(h: &Harness, dir: &Path) -> String {
    h.entry("spiffe://example.org/web").await;
    let (cert, _key, issued) = h.workload("spiffe://example.org/web").await;
    let chain = issued["chain"].as_str().unwrap();
    assert!(
        !chain.is_empty(),
        "an intermediate's leaves carry the chain"
    );
    let bundle = h
        .anonymous()
        .call(Method::GET, "/v1/bundle", None)
        .await
        .unwrap();
    assert_eq!(
        tessera_core::pem::certs(&bundle.body).unwrap(),
        tessera_core::pem::certs(&std::fs::read(dir.join("root.pem")).unwrap()).unwrap(),
        "the bundle is the operator's root"
    );
    std::fs::write(dir.join("leaf.pem"), &cert).unwrap();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    openssl(
        dir,
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "leaf.pem",
        ],
    );
    tessera_core::svid::check_tessera_leaf(&tessera_core::pem::certs(cert.as_bytes()).unwrap()[0])
        .unwrap();
    issued["serial"].as_str().unwrap().to_owned()
}

async fn csr_flow_under_openssl_root(db: Db) {
    let db = TestDb::new(db).await;
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let cfg = config(&db, data.path(), &[]);
    operator_root(dir, "root");
    operator_root(dir, "other");

    let (id, csr) = prepare_intermediate(&cfg).await.unwrap();
    // A pending intermediate is not silently replaced by a self-signed root.
    let err = Authority::start(cfg.clone())
        .await
        .err()
        .expect("start must wait for the import");
    assert!(err.to_string().contains("import-signed"), "{err}");

    std::fs::write(dir.join("int.csr"), csr).unwrap();
    std::fs::write(dir.join("ext.cnf"), CA_EXT).unwrap();
    let sign = |ca: &str, out: &str| {
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "int.csr",
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "365",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "v3_ca",
                "-out",
                out,
            ],
        )
    };
    sign("other", "wrong.pem");
    sign("root", "int.pem");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();

    // Signed by a root the operator did not give as the bundle: refused, nothing changes.
    let e = import_signed_intermediate(&cfg, &read("wrong.pem"), &read("root.pem"), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not signed by"), "{e}");
    // The operator's root itself is not the pending CA's certificate.
    let e = import_signed_intermediate(&cfg, &read("root.pem"), &read("root.pem"), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--cert"), "{e}");

    assert_eq!(
        import_signed_intermediate(&cfg, &read("int.pem"), &read("root.pem"), None)
            .await
            .unwrap(),
        id
    );
    let h = Harness::start_config(db, data, cfg).await;
    assert_eq!(h.auth.signing_ca().id, id);
    leaf_verifies_against_root(&h, dir).await;
}

both_backends!(csr_flow_under_openssl_root);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_existing_intermediate_key_and_cert() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    operator_root(dir, "root");
    std::fs::write(dir.join("ext.cnf"), CA_EXT).unwrap();
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "int.ec.key",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "int.ec.key",
            "-out",
            "int.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "int.key",
            "-subj",
            "/O=Operator/CN=Tessera intermediate",
            "-out",
            "int.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "v3_ca",
            "-out",
            "int.pem",
        ],
    );
    let p = |f: &str| dir.join(f).display().to_string();
    let h = Harness::start_with(
        Db::Sqlite,
        &[
            &format!("ca.import_cert=\"{}\"", p("int.pem")),
            &format!("ca.import_key=\"{}\"", p("int.key")),
            &format!("ca.import_bundle=\"{}\"", p("root.pem")),
        ],
    )
    .await;
    let status = h.auth.ca_status().await.unwrap();
    assert_eq!(status.cas.len(), 1);
    assert_eq!(status.cas[0].kind, "intermediate");
    let serial = leaf_verifies_against_root(&h, dir).await;

    // Another child of the operator's root passes the TLS layer, so it copies a
    // real workload's serial and SPIFFE ID: it must still not be that workload.
    std::fs::write(
        dir.join("leaf.cnf"),
        "[v3_leaf]\nbasicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:spiffe://example.org/web\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "forged.ec.key",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "forged.ec.key",
            "-out",
            "forged.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "forged.key",
            "-subj",
            "/O=Tessera",
            "-out",
            "forged.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "forged.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-set_serial",
            &format!("0x{serial}"),
            "-days",
            "1",
            "-extfile",
            "leaf.cnf",
            "-extensions",
            "v3_leaf",
            "-out",
            "forged.pem",
        ],
    );
    let forged = h.with_cert(
        &std::fs::read_to_string(dir.join("forged.pem")).unwrap(),
        &std::fs::read_to_string(dir.join("forged.key")).unwrap(),
    );
    let (s, v) = crate::common::call(&forged, Method::GET, "/v1/revocations", None).await;
    assert_eq!(
        s,
        hyper::StatusCode::UNAUTHORIZED,
        "forged certificate accepted: {v}"
    );
    let (s, v) = crate::common::call(
        &forged,
        Method::POST,
        "/v1/certs/renew",
        Some(serde_json::json!({"csr": crate::common::csr().1})),
    )
    .await;
    assert_eq!(
        s,
        hyper::StatusCode::UNAUTHORIZED,
        "forged certificate renewed: {v}"
    );
}
