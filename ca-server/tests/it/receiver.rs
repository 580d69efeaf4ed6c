//! Test doubles for the event features: a real HTTPS webhook receiver (its own
//! CA from rcgen, handed to the server as `ca_pem`) that reports every request
//! on a channel, and a server-sent-events reader.

#![allow(dead_code)]

use crate::common::Clients;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_core::client::Client;
use tessera_core::sse::{SseEvent, SseParser};
use tokio::sync::mpsc;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How the receiver answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Answers these statuses in turn, repeating the last one.
    Statuses(Vec<u16>),
    /// Reads the request, reports it, never answers.
    Hang,
    /// Answers 200 with the body held now (the test changes it between
    /// requests): a stand-in for a foreign bundle endpoint.
    Serve(Arc<Mutex<Bytes>>),
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub rx: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// The webhook URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// The next delivery that is not an operator certificate's issuance (the
    /// harness issues those for every helper call), with its event.
    pub async fn next_event(&mut self, secs: u64) -> (Received, tessera_core::api::Event) {
        loop {
            let r = self.next(secs).await;
            let ev: tessera_core::api::Event = serde_json::from_slice(&r.body).unwrap();
            if ev.action != "cert.issue_operator" {
                return (r, ev);
            }
        }
    }

    /// The next request, or a panic after `secs`.
    pub async fn next(&mut self, secs: u64) -> Received {
        tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
            .await
            .expect("receiver got no request in time")
            .expect("receiver stopped")
    }
}

/// A test CA (PEM) and a `localhost` server certificate under it.
#[derive(Clone)]
pub struct Pki {
    pub ca_pem: String,
    key: rustls::sign::CertifiedKey,
    /// The `localhost` certificate and its key, as files would hold them.
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    /// A rustls server configuration presenting the `localhost` certificate
    /// (through `core::tls`, like every configuration).
    pub fn server_config(&self) -> rustls::ServerConfig {
        let anchors = tessera_core::pem::certs(self.ca_pem.as_bytes()).unwrap();
        tessera_core::tls::server_config_optional_client_auth(
            &anchors,
            Arc::new(tessera_core::tls::RotatingKey::new(self.key.clone())),
        )
        .unwrap()
    }
}

/// A test CA and a `localhost` server certificate under it.
pub fn pki() -> Pki {
    pki_for("localhost")
}

/// A test CA and a server certificate for DNS name `name` under it.
pub fn pki_for(name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "webhook receiver test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&key, &rcgen::Issuer::from_params(&ca, &ca_key))
        .unwrap();
    let ck = tessera_core::tls::certified_key(
        vec![leaf.der().clone()],
        tessera_core::pem::private_key(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        key: ck,
        cert_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Starts a receiver on `port` (0: any free port) with a fresh PKI.
pub async fn start(mode: Mode, port: u16) -> Receiver {
    start_with(mode, port, pki()).await
}

/// Starts a receiver on `port` serving `pki`'s certificate.
pub async fn start_with(mode: Mode, port: u16, pki: Pki) -> Receiver {
    let (ca_pem, ck) = (pki.ca_pem, pki.key);
    let anchors = tessera_core::pem::certs(ca_pem.as_bytes()).unwrap();
    let tls = tessera_core::tls::server_config_optional_client_auth(
        &anchors,
        Arc::new(tessera_core::tls::RotatingKey::new(ck)),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let answered = Arc::new(Mutex::new(0usize));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx, mode, answered) =
                (acceptor.clone(), tx.clone(), mode.clone(), answered.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (tx, mode, answered) = (tx.clone(), mode.clone(), answered.clone());
                        async move {
                            let path = req.uri().to_string();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let _ = tx.send(Received {
                                path,
                                headers,
                                body,
                            });
                            let mut body = Bytes::from_static(b"ok");
                            let status = match &mode {
                                Mode::Hang => {
                                    std::future::pending::<()>().await;
                                    200
                                }
                                Mode::Statuses(list) => {
                                    let mut n = answered.lock().unwrap();
                                    let s = list[(*n).min(list.len() - 1)];
                                    *n += 1;
                                    s
                                }
                                Mode::Serve(held) => {
                                    body = held.lock().unwrap().clone();
                                    200
                                }
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(body))
                                    .unwrap(),
                            )
                        }
                    },
                );
                // The server configuration offers h2 and http/1.1 (ALPN):
                // answer whichever the client picked.
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    Receiver {
        addr,
        ca_pem,
        rx,
        task,
    }
}

/// A free loopback port with nothing listening on it (a receiver that is down).
pub async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Checks `Tessera-Signature` independently of the server's code: HMAC-SHA256
/// keyed with the secret's text over `"<t>.<body>"`. Returns `t`.
pub fn verify_signature(secret: &str, r: &Received) -> i64 {
    let sig = r.headers["tessera-signature"].to_str().unwrap();
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("malformed signature header {sig:?}"));
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(&r.body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, &msg, &hex::decode(v1).unwrap()).expect("signature does not verify");
    t.parse().unwrap()
}

/// An open event stream.
pub struct Sse {
    body: hyper::body::Incoming,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
}

impl Sse {
    /// Opens `GET path` as a stream; panics unless it answers 200.
    pub async fn open(c: &Client, path: &str, last_event_id: Option<i64>) -> Sse {
        let headers: Vec<(&str, String)> = last_event_id
            .map(|id| vec![("last-event-id", id.to_string())])
            .unwrap_or_default();
        let s = c.stream(path, &headers).await.unwrap();
        assert_eq!(s.status, StatusCode::OK, "{path}");
        Sse {
            body: s.body,
            parser: SseParser::new(1 << 20),
            queue: VecDeque::new(),
        }
    }

    /// The next event; None when the stream ends.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            let frame = self.body.frame().await?.unwrap();
            if let Ok(data) = frame.into_data() {
                self.queue.extend(self.parser.feed(&data).unwrap());
            }
        }
    }

    /// The next event within `secs`, else a panic.
    pub async fn next_within(&mut self, secs: u64) -> SseEvent {
        tokio::time::timeout(Duration::from_secs(secs), self.next())
            .await
            .expect("no event in time")
            .expect("stream ended")
    }

    /// Every event until the stream ends (for `follow=false`).
    pub async fn all(mut self) -> Vec<SseEvent> {
        let mut out = vec![];
        while let Some(e) = tokio::time::timeout(Duration::from_secs(10), self.next())
            .await
            .expect("stream did not end")
        {
            out.push(e);
        }
        out
    }
}

/// Waits (polling every 50 ms, up to `secs`) until `f` returns Some.
pub async fn wait_for<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redeems a join token with a fresh key (no operator credentials involved,
/// so no other audit records); returns the issued certificate's JSON.
pub async fn redeem(h: &crate::common::Harness, token: &str) -> serde_json::Value {
    let (_, csr) = crate::common::csr();
    let (s, v) = crate::common::call(
        &h.anonymous(),
        hyper::Method::POST,
        "/v1/certs/redeem",
        Some(serde_json::json!({"token": token, "csr": csr})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}
