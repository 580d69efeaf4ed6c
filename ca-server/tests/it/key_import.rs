//! Importing an existing CA key and certificate (`ca.import_key`,
//! `ca.import_cert`) in every form openssl writes one: SEC1 from `openssl
//! ecparam -genkey` (with and without its EC PARAMETERS block), PKCS#1 from
//! `openssl genrsa -traditional`, PKCS#8 from `openssl genpkey`. Each CA then
//! signs leaves openssl verifies. Encrypted or missing keys are refused naming
//! the form found and the command that converts it, and nothing is stored.

use crate::common::{Db, Harness, TestDb, config};
use tessera_ca::authority::Authority;
use tessera_test_support::{openssl, openssl_ec_key, openssl_output};

/// Writes `ca.pem`, a self-signed CA certificate for `example.org` over the key
/// in `dir/key.pem` (read by openssl with passphrase `x` if it asks for one).
fn self_signed_ca(dir: &std::path::Path) {
    tessera_test_support::openssl_self_signed_ca(
        dir,
        "key.pem",
        "ca.pem",
        "/O=Operator/CN=Imported CA",
        &[
            "-passin",
            "pass:x",
            "-addext",
            "subjectAltName=URI:spiffe://example.org",
        ],
    );
}

/// The settings importing `dir/ca.pem` and `dir/key.pem`.
fn import_sets(dir: &std::path::Path) -> [String; 2] {
    [
        format!("ca.import_cert=\"{}\"", dir.join("ca.pem").display()),
        format!("ca.import_key=\"{}\"", dir.join("key.pem").display()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_sec1_pkcs1_and_pkcs8_keys_made_by_openssl() {
    for (form, args, label, algorithm) in [
        (
            "SEC1 P-256 with EC PARAMETERS",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-out",
                "key.pem",
            ][..],
            "BEGIN EC PRIVATE KEY",
            "ecdsa-p256",
        ),
        (
            "SEC1 P-384",
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "key.pem",
            ][..],
            "BEGIN EC PRIVATE KEY",
            "ecdsa-p384",
        ),
        (
            "PKCS#1 RSA",
            &["genrsa", "-traditional", "-out", "key.pem", "2048"][..],
            "BEGIN RSA PRIVATE KEY",
            "rsa-sha256",
        ),
        (
            "PKCS#8 EC",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "key.pem",
            ][..],
            "BEGIN PRIVATE KEY",
            "ecdsa-p256",
        ),
        (
            "PKCS#8 RSA",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "key.pem",
            ][..],
            "BEGIN PRIVATE KEY",
            "rsa-sha256",
        ),
        (
            "PKCS#8 Ed25519",
            &["genpkey", "-algorithm", "ed25519", "-out", "key.pem"][..],
            "BEGIN PRIVATE KEY",
            "ed25519",
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        openssl(dir, args);
        let pem = std::fs::read_to_string(dir.join("key.pem")).unwrap();
        assert!(pem.contains(label), "{form}: openssl wrote {pem:.40}");
        self_signed_ca(dir);
        let sets = import_sets(dir);
        let h = Harness::start_with(Db::Sqlite, &[&sets[0], &sets[1]]).await;
        let status = h.auth.ca_status().await.unwrap();
        assert_eq!(
            (
                status.cas[0].kind.as_str(),
                status.cas[0].key_algorithm.as_str()
            ),
            ("root", algorithm),
            "{form}"
        );
        // The whole API runs on a server certificate this CA signed; the leaf
        // it issues verifies under the imported certificate with openssl.
        h.entry("spiffe://example.org/web").await;
        let (cert, _, _) = h.workload("spiffe://example.org/web").await;
        std::fs::write(dir.join("leaf.pem"), cert).unwrap();
        let out = openssl_output(
            dir,
            &["verify", "-x509_strict", "-CAfile", "ca.pem", "leaf.pem"],
        );
        assert!(
            out.status.success(),
            "{form}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_encrypted_or_missing_keys_naming_form_and_conversion() {
    // Each from a plain SEC1 key made by `openssl ecparam` (plain.pem).
    for (form, make, want) in [
        (
            "encrypted PKCS#8",
            &[
                "pkcs8",
                "-topk8",
                "-in",
                "plain.pem",
                "-v2",
                "aes256",
                "-passout",
                "pass:x",
                "-out",
                "key.pem",
            ][..],
            "found an encrypted PKCS#8 (BEGIN ENCRYPTED PRIVATE KEY) key",
        ),
        (
            "encrypted SEC1",
            &[
                "ec",
                "-in",
                "plain.pem",
                "-aes256",
                "-passout",
                "pass:x",
                "-out",
                "key.pem",
            ][..],
            "found an encrypted SEC1 (BEGIN EC PRIVATE KEY, Proc-Type ENCRYPTED) key",
        ),
        (
            "encrypted PKCS#1",
            &[
                "genrsa",
                "-traditional",
                "-aes256",
                "-passout",
                "pass:x",
                "-out",
                "key.pem",
                "2048",
            ][..],
            "found an encrypted PKCS#1 (BEGIN RSA PRIVATE KEY, Proc-Type ENCRYPTED) key",
        ),
        (
            "a certificate instead of a key",
            &["pkey", "-in", "plain.pem", "-out", "key.pem"][..],
            "no private key found",
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        openssl_ec_key(dir, "plain.pem");
        openssl(dir, make);
        self_signed_ca(dir);
        if form == "a certificate instead of a key" {
            std::fs::copy(dir.join("ca.pem"), dir.join("key.pem")).unwrap();
        }
        let db = TestDb::new(Db::Sqlite).await;
        let data = tempfile::tempdir().unwrap();
        let sets = import_sets(dir);
        let cfg = config(&db, data.path(), &[&sets[0], &sets[1]]);
        let err = Authority::start(cfg)
            .await
            .err()
            .unwrap_or_else(|| panic!("{form}: imported"))
            .to_string();
        assert!(
            err.starts_with("ca.import_key")
                && err.contains(want)
                && err.contains("openssl pkey -in KEY -out KEY.pkcs8.pem"),
            "{form}: {err}"
        );
        let mut c = db.raw().await;
        let n: i64 = sqlx::Row::get(
            &sqlx::query("SELECT COUNT(*) FROM cas")
                .fetch_one(&mut c)
                .await
                .unwrap(),
            0,
        );
        assert_eq!(n, 0, "{form}: nothing stored");
    }
}
