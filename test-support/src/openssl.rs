//! openssl, the independent implementation tests check Tessera against.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `openssl args` in `dir`; returns its output whatever the outcome.
pub fn openssl_output(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (.ci/run installs it)")
}

/// Runs `openssl args` in `dir`, failing the test with its stderr unless it succeeds.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = openssl_output(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new EC P-256 key in `dir/<file>` (SEC1 PEM, as `openssl ecparam` writes it).
pub fn openssl_ec_key(dir: &Path, file: &str) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            file,
        ],
    );
}

/// A fresh P-256 key in `dir/<name>.key`, PKCS#8 (the form `ca.import_key`
/// takes; the SEC1 form is left in `<name>.ec.key`).
pub fn openssl_pkcs8_key(dir: &Path, name: &str) {
    let ec = format!("{name}.ec.key");
    let out = format!("{name}.key");
    openssl_ec_key(dir, &ec);
    openssl(
        dir,
        &["pkcs8", "-topk8", "-nocrypt", "-in", &ec, "-out", &out],
    );
}

/// The `[v3_ca]` extension section an operator's root gives a Tessera
/// intermediate for `example.org`: cA with pathLen 0, keyCertSign + cRLSign,
/// the trust domain's URI SAN.
pub const SPIFFE_INTERMEDIATE_EXT: &str = "[v3_ca]\nbasicConstraints=critical,CA:true,pathlen:0\n\
    keyUsage=critical,keyCertSign,cRLSign,digitalSignature\n\
    subjectAltName=URI:spiffe://example.org\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

/// `openssl req -new`: a CSR `out` for the key file `key` with `subject`.
pub fn openssl_csr(dir: &Path, key: &str, subject: &str, out: &str) {
    openssl(
        dir,
        &["req", "-new", "-key", key, "-subj", subject, "-out", out],
    );
}

/// `out`: a self-signed CA certificate (ten years, basicConstraints cA and
/// keyUsage keyCertSign, cRLSign, both critical) over the key file `key`,
/// made by `openssl req -x509` with the `extra` options.
pub fn openssl_self_signed_ca(dir: &Path, key: &str, out: &str, subject: &str, extra: &[&str]) {
    let mut args = vec![
        "req",
        "-x509",
        "-new",
        "-key",
        key,
        "-out",
        out,
        "-days",
        "3650",
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:true",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// A CA no Tessera process knows (self-signed by openssl, `<name>-ca.pem`)
/// and a leaf it signed for `spiffe_id` (`<name>.pem`, key `<name>.key`),
/// with the extensions of an X.509-SVID: what a peer from another trust
/// domain, or an impostor, presents.
pub fn openssl_foreign_leaf(dir: &Path, name: &str, spiffe_id: &str) {
    let (ca_key, ca, key, csr, cert, ext) = (
        format!("{name}-ca.key"),
        format!("{name}-ca.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    openssl_ec_key(dir, &ca_key);
    openssl_self_signed_ca(dir, &ca_key, &ca, &format!("/CN={name} CA"), &[]);
    openssl_ec_key(dir, &key);
    openssl_csr(dir, &key, "/O=x", &csr);
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=URI:{spiffe_id}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
}
