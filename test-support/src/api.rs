//! Calls to the CA's REST API as tests make them: JSON in, status and JSON out.

use crate::pki::csr;
use hyper::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use std::future::Future;
use tessera_core::client::{Client, Reply};

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

/// Clients for a CA server under test, made from its URL and trust bundle
/// (the in-process harness of the CA's tests and [`Ca`](crate::Ca) both are one).
pub trait Clients {
    /// `https://host:port` of the server.
    fn url(&self) -> &str;

    /// The trust bundle (DER) clients verify the server with.
    fn anchors(&self) -> Vec<CertificateDer<'static>>;

    /// A client with no credentials.
    fn anonymous(&self) -> Client {
        client(self.url(), &self.anchors(), None, None)
    }

    /// A client presenting a bearer token.
    fn with_token(&self, token: &str) -> Client {
        client(self.url(), &self.anchors(), None, Some(token))
    }

    /// A client presenting a certificate chain and key (PEM).
    fn with_cert(&self, cert_pem: &str, key_pem: &str) -> Client {
        let creds = (cert_pem.as_bytes(), key_pem.as_bytes());
        client(self.url(), &self.anchors(), Some(creds), None)
    }

    /// `GET path` without credentials: the raw reply, whatever its status.
    fn fetch(&self, path: &str) -> impl Future<Output = Reply> + Send {
        let (c, path) = (self.anonymous(), path.to_owned());
        async move { c.call(Method::GET, &path, None).await.unwrap() }
    }
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

/// `POST /v1/revocations` with `body` (see [`call`]).
pub async fn revoke(c: &Client, body: Value) -> (StatusCode, Value) {
    post(c, "/v1/revocations", body).await
}

/// `POST /v1/certs/renew` with a fresh key's CSR, presenting whatever `c`
/// presents (see [`call`]).
pub async fn renew(c: &Client) -> (StatusCode, Value) {
    post(c, "/v1/certs/renew", json!({"csr": csr().1})).await
}
