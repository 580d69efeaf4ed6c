//! `tessera-load`: drives a running CA's HTTPS API with N concurrent clients,
//! each on one keep-alive connection, issuing certificates from pre-made CSRs;
//! prints certificates/s, p50 and p99 latency.
//!
//! `tessera-load --data-dir DIR --clients 16 --requests 20000`
//! `tessera-load --cfssl https://localhost:8888 --ca-bundle ca.pem` (a peer, same load)
#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Load generator for the Tessera CA issuance API")]
struct Args {
    /// CA URL; default from <data-dir>/admin/cli.toml.
    #[arg(long)]
    server: Option<String>,
    /// Data directory holding admin/ credentials.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Total certificates to issue (after warm-up).
    #[arg(long, default_value_t = 20000)]
    requests: usize,
    /// Warm-up requests per client, not measured.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Distinct CSRs to pre-make (reused round-robin).
    #[arg(long, default_value_t = 256)]
    csrs: usize,
    /// SPIFFE ID to issue for (an entry is created if none exists).
    #[arg(long, default_value = "spiffe://example.org/load")]
    spiffe_id: String,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Drive a cfssl `serve` at this https URL instead (POST /api/v1/cfssl/sign),
    /// for same-run comparisons; needs --ca-bundle.
    #[arg(long)]
    cfssl: Option<String>,
    /// Trust anchors for --cfssl's TLS certificate.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
}

struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

async fn connect(addr: &str, host: &str, tls: Arc<rustls::ClientConfig>) -> Result<Conn> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host.to_owned())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(Conn {
        send,
        host: host.to_owned(),
    })
}

impl Conn {
    async fn post(&mut self, path: &str, body: Bytes) -> Result<(u16, Bytes)> {
        self.send.ready().await?;
        let req = hyper::Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let admin = a.data_dir.join("admin");
    let cfssl = a.cfssl.is_some();
    let server = match (a.cfssl.clone(), a.server.clone()) {
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => {
            let t: toml::Table = toml::from_str(
                &std::fs::read_to_string(admin.join("cli.toml"))
                    .context("reading admin/cli.toml")?,
            )?;
            t.get("server")
                .and_then(|v| v.as_str())
                .context("cli.toml: server")?
                .to_owned()
        }
    };
    let rest = server
        .strip_prefix("https://")
        .context("--server must be https://")?;
    let host = rest
        .rsplit_once(':')
        .map(|(h, _)| h.to_owned())
        .context("--server needs a port")?;
    let addr = rest.replace("localhost", "127.0.0.1");
    let tls = if cfssl {
        let bundle = tessera_core::pem::certs(&std::fs::read(
            a.ca_bundle.as_ref().context("--cfssl needs --ca-bundle")?,
        )?)?;
        Arc::new(tessera_core::tls::api_client_config(&bundle, None, false)?)
    } else {
        let bundle = tessera_core::pem::certs(&std::fs::read(admin.join("bundle.pem"))?)?;
        let chain = tessera_core::pem::certs(&std::fs::read(admin.join("cert.pem"))?)?;
        let key = tessera_core::pem::private_key(&std::fs::read(admin.join("key.pem"))?)?;
        Arc::new(tessera_core::tls::api_client_config(
            &bundle,
            Some((chain, key)),
            false,
        )?)
    };
    let (path, ok_status): (&'static str, u16) = if cfssl {
        ("/api/v1/cfssl/sign", 200)
    } else {
        ("/v1/certs", 201)
    };

    if !cfssl {
        // An entry for the load identity.
        let mut c = connect(&addr, &host, tls.clone()).await?;
        let entry = serde_json::json!({"spiffe_id": a.spiffe_id, "selectors": ["load:test"]});
        let (s, b) = c
            .post("/v1/entries", Bytes::from(entry.to_string()))
            .await?;
        if s != 201 {
            eprintln!(
                "entry create answered {s}: {} (continuing; one may exist)",
                String::from_utf8_lossy(&b)
            );
        }
    }

    // Pre-made request bodies: CSR generation is the client's cost, not the CA's.
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..a.csrs.max(1))
            .map(|_| {
                let k = rcgen::KeyPair::generate().expect("keygen");
                let csr = rcgen::CertificateParams::default()
                    .serialize_request(&k)
                    .expect("csr")
                    .pem()
                    .expect("pem");
                let body = if cfssl {
                    serde_json::json!({"certificate_request": csr, "hosts": ["load.internal"]})
                } else {
                    serde_json::json!({"spiffe_id": a.spiffe_id, "csr": csr})
                };
                Bytes::from(body.to_string())
            })
            .collect(),
    );

    let per_client = a.requests.div_ceil(a.clients.max(1));
    let start_gate = Arc::new(tokio::sync::Barrier::new(a.clients + 1));
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let (addr, host, tls, bodies, gate) = (
            addr.clone(),
            host.clone(),
            tls.clone(),
            bodies.clone(),
            start_gate.clone(),
        );
        let warmup = a.warmup;
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&addr, &host, tls).await?;
            for j in 0..warmup {
                conn.post(path, bodies[(i + j) % bodies.len()].clone())
                    .await?;
            }
            gate.wait().await;
            let mut lat = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            for j in 0..per_client {
                let t = Instant::now();
                let (s, _) = conn
                    .post(path, bodies[(i * 7919 + j) % bodies.len()].clone())
                    .await?;
                lat.push(t.elapsed());
                if s != ok_status {
                    errors += 1;
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    start_gate.wait().await;
    let t0 = Instant::now();
    let mut all: Vec<Duration> = Vec::with_capacity(a.requests);
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        all.extend(lat);
        errors += e;
    }
    let elapsed = t0.elapsed();
    if all.is_empty() {
        bail!("no requests completed");
    }
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    let rate = all.len() as f64 / elapsed.as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"clients": a.clients, "requests": all.len(), "errors": errors, "seconds": elapsed.as_secs_f64(),
                "certs_per_second": rate, "p50_ms": pct(0.50), "p99_ms": pct(0.99)})
        );
    } else {
        println!(
            "{} certificates in {:.2}s with {} clients: {:.0} certs/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            all.len(),
            elapsed.as_secs_f64(),
            a.clients,
            rate,
            pct(0.50),
            pct(0.99),
            errors
        );
    }
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}
