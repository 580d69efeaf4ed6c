//! Calls to the CA's REST API as tests make them: JSON in, status and JSON out.

use hyper::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use tessera_core::client::Client;

/// A client for `url` trusting `anchors`, presenting a certificate chain and
/// key (PEM) and/or a bearer token.
pub fn client(
    url: &str,
    anchors: &[CertificateDer<'static>],
    cert_and_key: Option<(&[u8], &[u8])>,
    bearer: Option<&str>,
) -> Client {
    let creds = cert_and_key.map(|(c, k)| {
        (
            tessera_core::pem::certs(c).unwrap(),
            tessera_core::pem::private_key(k).unwrap(),
        )
    });
    let tls = tessera_core::tls::api_client_config(anchors, creds, false).unwrap();
    Client::new(url, tls, bearer.map(str::to_owned)).unwrap()
}

/// One JSON call; returns the status and the parsed body (`Null` if not JSON).
/// A failure to reach the server fails the test.
pub async fn call(
    c: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let r = c
        .call(method, path, body.map(|b| serde_json::to_vec(&b).unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// `GET path` (see [`call`]).
pub async fn get(c: &Client, path: &str) -> (StatusCode, Value) {
    call(c, Method::GET, path, None).await
}

/// `POST path` with a JSON body, or none (see [`call`]).
pub async fn post(c: &Client, path: &str, body: impl Into<Option<Value>>) -> (StatusCode, Value) {
    call(c, Method::POST, path, body.into()).await
}

/// `DELETE path` (see [`call`]).
pub async fn delete(c: &Client, path: &str) -> (StatusCode, Value) {
    call(c, Method::DELETE, path, None).await
}

/// `POST /v1/certs` for `spiffe_id` with a fresh key's CSR (see [`call`]).
pub async fn issue(c: &Client, spiffe_id: &str) -> (StatusCode, Value) {
    post(
        c,
        "/v1/certs",
        json!({"spiffe_id": spiffe_id, "csr": csr().1}),
    )
    .await
}

/// `POST /v1/certs/renew` with a fresh key's CSR, presenting whatever `c`
/// presents (see [`call`]).
pub async fn renew(c: &Client) -> (StatusCode, Value) {
    post(c, "/v1/certs/renew", json!({"csr": csr().1})).await
}

/// A fresh P-256 key and a CSR for it (PEM), as a workload makes them.
pub fn csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key, csr)
}
