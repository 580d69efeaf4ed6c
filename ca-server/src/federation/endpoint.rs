//! The public listeners: Tessera's SPIFFE bundle endpoint and the OIDC
//! discovery document. Both run the API server's accept loop (handshake
//! deadline, connection cap, idle and request deadlines) with a TLS
//! configuration that asks for no client certificate, and a router of GET
//! routes only.

use crate::api::ApiError;
use crate::authority::Authority;
use crate::config::OidcDiscoveryConfig;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use rustls::sign::CertifiedKey;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tessera_core::tls::RotatingKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The addresses the public listeners bound (None: not configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct Listeners {
    /// The SPIFFE bundle endpoint.
    pub bundle_endpoint: Option<SocketAddr>,
    /// The OIDC discovery document.
    pub oidc_discovery: Option<SocketAddr>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Binds the configured public listeners and serves them until `shutdown`.
pub async fn start_listeners(
    auth: &Arc<Authority>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Listeners> {
    let mut out = Listeners::default();
    let e = &auth.cfg.federation.endpoint;
    if let Some(listen) = e.listen {
        let key = match e.profile.as_str() {
            "https_web" => file_key(auth, &e.cert_file, &e.key_file, e.reload_seconds, &shutdown)?,
            _ => spiffe_key(auth, &shutdown)?,
        };
        out.bundle_endpoint = Some(serve(auth, listen, key, bundle_router(auth), &shutdown).await?);
    }
    let o = &auth.cfg.oidc_discovery;
    if let Some(listen) = o.listen {
        let key = file_key(auth, &o.cert_file, &o.key_file, o.reload_seconds, &shutdown)?;
        out.oidc_discovery = Some(serve(auth, listen, key, oidc_router(auth, o), &shutdown).await?);
    }
    Ok(out)
}

async fn serve(
    auth: &Arc<Authority>,
    listen: SocketAddr,
    key: Arc<RotatingKey>,
    router: Router,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let tls = tessera_core::tls::server_config_no_client_auth(key).map_err(io_err)?;
    // The certificate rotates inside `key`; the acceptor never changes.
    let (acceptor, rx) = watch::channel(TlsAcceptor::from(Arc::new(tls)));
    let (auth, shutdown) = (auth.clone(), shutdown.clone());
    tokio::spawn(async move {
        let _keep = acceptor;
        crate::server::accept_loop(auth, listener, rx, router, shutdown).await;
    });
    Ok(addr)
}

/// Runs `task` until `shutdown`.
fn until_shutdown(
    shutdown: &watch::Receiver<bool>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = task => {}
            _ = shutdown.changed() => {}
        }
    });
}

/// `https_spiffe`: an X.509-SVID for the endpoint's SPIFFE ID, signed like
/// the API's certificate and renewed on every CA change and at half its life.
fn spiffe_key(
    auth: &Arc<Authority>,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Arc<RotatingKey>> {
    let id = endpoint_spiffe_id(auth).map_err(io_err)?;
    let make = {
        let id = id.clone();
        move |a: &Authority| a.own_certified_key(&id, &[], &[])
    };
    let key = Arc::new(RotatingKey::new(make(auth).map_err(io_err)?));
    let (auth, k) = (auth.clone(), key.clone());
    let half = Duration::from_secs((auth.cfg.issuance.max_ttl_seconds / 2).max(30) as u64);
    until_shutdown(shutdown, async move {
        let mut cas = auth.ca_watch();
        loop {
            tokio::select! {
                r = cas.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(half) => {}
            }
            match make(&auth) {
                Ok(c) => k.set(c),
                Err(e) => tracing::error!(error = %e, "bundle endpoint certificate renewal failed"),
            }
        }
    });
    Ok(key)
}

/// The bundle endpoint's SPIFFE ID (`https_spiffe`): configured, or
/// `spiffe://<td>/tessera/bundle-endpoint`; always in this trust domain.
pub fn endpoint_spiffe_id(auth: &Authority) -> Result<tessera_core::SpiffeId, String> {
    let configured = &auth.cfg.federation.endpoint.spiffe_id;
    let id = if configured.is_empty() {
        auth.td.workload_id("/tessera/bundle-endpoint")
    } else {
        tessera_core::SpiffeId::new(configured)
    }
    .map_err(|e| format!("federation.endpoint.spiffe_id: {e}"))?;
    if !id.is_member_of(&auth.td) {
        return Err("federation.endpoint.spiffe_id: not in this trust domain".into());
    }
    Ok(id)
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let chain =
        tessera_core::pem::certs(&read(cert)?).map_err(|e| format!("{}: {e}", cert.display()))?;
    let der = tessera_core::pem::private_key(&read(key)?)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    tessera_core::tls::certified_key(chain, der).map_err(|e| e.to_string())
}

fn stamp(paths: &[&PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// `https_web` (and the OIDC listener): the operator's certificate and key
/// files, re-read when either changes. A pair that fails to load is logged
/// and the previous one kept.
fn file_key(
    auth: &Arc<Authority>,
    cert: &Path,
    key: &Path,
    reload_seconds: u64,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Arc<RotatingKey>> {
    let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
    let holder = Arc::new(RotatingKey::new(load_files(&cert, &key).map_err(io_err)?));
    let h = holder.clone();
    let metrics_auth = auth.clone();
    until_shutdown(shutdown, async move {
        let mut seen = stamp(&[&cert, &key]);
        let mut tick = tokio::time::interval(Duration::from_secs(reload_seconds.max(1)));
        loop {
            tick.tick().await;
            let now = stamp(&[&cert, &key]);
            if now == seen {
                continue;
            }
            match load_files(&cert, &key) {
                Ok(k) => {
                    h.set(k);
                    seen = now;
                    tracing::info!(cert = %cert.display(), "listener certificate reloaded");
                }
                Err(e) => {
                    let _ = &metrics_auth;
                    tracing::warn!(error = %e, "listener certificate reload failed; keeping the previous one");
                }
            }
        }
    });
    Ok(holder)
}

fn get_only(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::method_not_allowed("only GET is served here")
        })
        .layer(DefaultBodyLimit::max(1024))
}

fn json_reply(body: String) -> axum::response::Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The bundle endpoint: `GET /` answers the SPIFFE bundle document.
fn bundle_router(auth: &Arc<Authority>) -> Router {
    get_only(
        Router::new()
            .route(
                "/",
                get(|State(a): State<Arc<Authority>>| async move {
                    json_reply(a.bundle().jwks.clone())
                }),
            )
            .with_state(auth.clone()),
    )
}

/// The OIDC listener: the discovery document and the JWKS it names, below
/// the issuer's path. Every value comes from the configuration, none from
/// the request.
fn oidc_router(auth: &Arc<Authority>, o: &OidcDiscoveryConfig) -> Router {
    let doc = json!({
        "issuer": o.issuer,
        "jwks_uri": o.jwks_uri(),
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
    .to_string();
    let base = o.base_path();
    get_only(
        Router::new()
            .route(
                &format!("{base}/.well-known/openid-configuration"),
                get(move || {
                    let doc = doc.clone();
                    async move { json_reply(doc) }
                }),
            )
            .route(
                &format!("{base}/keys"),
                get(|State(a): State<Arc<Authority>>| async move { json_reply(oidc_jwks(&a)) }),
            )
            .with_state(auth.clone()),
    )
}

/// The JWT-SVID keys as an ordinary JWKS: `use: sig` and `alg: ES256`, as
/// OIDC relying parties expect (the SPIFFE bundle says `use: jwt-svid`).
fn oidc_jwks(auth: &Authority) -> String {
    let keys: Vec<Value> = auth
        .bundle()
        .jwt_keys
        .iter()
        .map(|k| {
            json!({"kty": k.kty, "crv": k.crv, "x": k.x, "y": k.y, "kid": k.kid,
                "use": "sig", "alg": "ES256"})
        })
        .collect();
    json!({ "keys": keys }).to_string()
}
