//! The HTTPS server: TLS accept with a handshake deadline, a connection cap
//! and a cap per source address, HTTP/1.1 and HTTP/2 via hyper-util, an idle
//! deadline per connection (no request in flight; shorter until a request
//! authenticates), the client certificate and source passed to the router as
//! [`PeerCert`] and [`PeerConn`], a whole-request deadline, graceful shutdown, and the
//! background tasks (CRL refresh, cross-replica revocation polling, pruning,
//! SQLite WAL checkpoints,
//! rotation of the server's own certificate).

use crate::api::{self, ApiError, PeerCert, PeerConn};
use crate::authority::Authority;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tessera_core::idle::Activity;
use tessera_core::limit::Slots;
use tessera_core::tls::RotatingKey;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Interval, interval};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The public listeners' addresses (bundle endpoint, OIDC discovery).
    pub public: crate::federation::Listeners,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets open requests finish (up to `drain`), then returns.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(drain, self.task).await;
    }
}

/// Binds and serves the API; returns once listening.
pub async fn start(auth: Arc<Authority>, listen: SocketAddr) -> std::io::Result<Running> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let cert = Arc::new(RotatingKey::new(
        auth.server_certified_key().map_err(std::io::Error::other)?,
    ));
    let acceptor = watch::Sender::new(acceptor_for(&auth, &cert)?);
    let (shutdown, shutdown_rx) = watch::channel(false);
    // On every CA change, before anyone is told of it: a server certificate
    // from the (possibly new) signing generation, then an acceptor trusting
    // the new bundle. A client that learns of the change (the API answer, the
    // feed) never meets the old certificate afterwards. Open connections keep theirs.
    {
        let (cert, acceptor) = (cert.clone(), acceptor.clone());
        auth.on_ca_change(Box::new(move |auth: &Authority| {
            match auth.server_certified_key() {
                Ok(k) => cert.set(k),
                Err(e) => tracing::error!(error = %e, "server certificate rotation failed"),
            }
            match acceptor_for(auth, &cert) {
                Ok(a) => {
                    acceptor.send_replace(a);
                }
                Err(e) => tracing::error!(error = %e, "TLS reconfiguration failed"),
            }
        }));
    }
    spawn_background(auth.clone(), cert, shutdown_rx.clone());
    let public = crate::federation::start_listeners(&auth, shutdown_rx.clone()).await?;
    let acceptor = acceptor.subscribe();
    {
        // Event streams never end on their own: end them so connections drain.
        let (auth, mut rx) = (auth.clone(), shutdown_rx.clone());
        tokio::spawn(async move {
            let _ = rx.changed().await;
            auth.events.close();
        });
    }
    let router = api::router(auth.clone());
    let task = tokio::spawn(accept_loop(auth, listener, acceptor, router, shutdown_rx));
    Ok(Running {
        addr,
        public,
        shutdown,
        task,
    })
}

/// A TLS acceptor trusting the current bundle (plus recently revoked CAs, for
/// re-issue only; see `Authority::client_auth_anchors`).
fn acceptor_for(auth: &Authority, cert: &Arc<RotatingKey>) -> std::io::Result<TlsAcceptor> {
    let tls = tessera_core::tls::server_config_optional_client_auth(
        &auth.client_auth_anchors(),
        cert.clone(),
    )
    .map_err(std::io::Error::other)?;
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// Accepts TLS connections and serves `router` on each (also used by the
/// public listeners, see `crate::federation`).
pub(crate) async fn accept_loop(
    auth: Arc<Authority>,
    listener: TcpListener,
    acceptor: watch::Receiver<TlsAcceptor>,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = auth.cfg.limits.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // One source cannot take every slot: each address holds at most its share.
    let per_source = Arc::new(Slots::new(
        limits.max_connections_per_source,
        limits.max_connections,
    ));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer_addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(source_slot) = per_source.acquire(&peer_addr.ip()) else {
            auth.metrics.refused.inc(&["connection_limit_source"]);
            drop(tcp);
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            auth.metrics.refused.inc(&["connection_limit"]);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (auth, acceptor, router, mut shutdown) = (
            auth.clone(),
            acceptor.borrow().clone(),
            router.clone(),
            shutdown.clone(),
        );
        let limits = limits.clone();
        conns.spawn(async move {
            let _permit = (permit, source_slot);
            let hs = Duration::from_millis(limits.handshake_timeout_ms);
            let tls = match tokio::time::timeout(hs, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    auth.metrics.refused.inc(&["tls_error"]);
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    auth.metrics.refused.inc(&["handshake_timeout"]);
                    return;
                }
            };
            let peer = PeerCert(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Arc::new(c.clone().into_owned())),
            );
            let conn_info = PeerConn {
                addr: peer_addr,
                authenticated: Arc::new(AtomicBool::new(false)),
            };
            let authenticated = conn_info.authenticated.clone();
            let req_timeout = Duration::from_millis(limits.request_timeout_ms);
            // Only requests are activity: bytes read (an HTTP/2 PING, a
            // trickle of headers) do not hold a connection open.
            let activity = Activity::new();
            let svc_activity = activity.clone();
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                req.extensions_mut().insert(conn_info.clone());
                let router = router.clone();
                let busy = svc_activity.request();
                let busy_body = svc_activity.request();
                async move {
                    let _busy = busy;
                    let (req, unread) = Unread::wrap(req);
                    let resp = match tokio::time::timeout(req_timeout, router.oneshot(req)).await {
                        // The request stays in flight until its body is sent
                        // (event streams), so the idle deadline never cuts it.
                        Ok(Ok(r)) => r.map(|b| {
                            Body::new(Guarded {
                                inner: b,
                                _busy: busy_body,
                            })
                        }),
                        Ok(Err(infallible)) => match infallible {},
                        Err(_) => axum::response::IntoResponse::into_response(ApiError::new(
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "timeout",
                            "request took too long",
                        )),
                    };
                    unread.drain().await;
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(hs)
                .max_headers(limits.max_headers);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(64 * 1024)
                .max_concurrent_streams(64);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            let idle = Duration::from_millis(limits.idle_timeout_ms);
            let unauthenticated = idle.min(Duration::from_millis(
                limits.unauthenticated_idle_timeout_ms,
            ));
            // A connection that never authenticated gets the shorter deadline
            // (also for its first request); the gate marks it during a
            // request, so the flag is settled whenever nothing is in flight.
            let idle_out = async {
                activity.idle_for(unauthenticated).await;
                if !authenticated.load(Ordering::Acquire) {
                    return "unauthenticated_idle_timeout";
                }
                activity.idle_for(idle).await;
                "idle_timeout"
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                reason = idle_out => {
                    // Dropping the connection closes it; nothing was in flight.
                    auth.metrics.refused.inc(&[reason]);
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

/// A background task: runs until the server shuts down.
type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A task that runs `pass` at every tick of `tick`.
fn periodic<F, Fut>(mut tick: Interval, auth: &Arc<Authority>, pass: F) -> Task
where
    F: Fn(Arc<Authority>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let auth = auth.clone();
    Box::pin(async move {
        loop {
            tick.tick().await;
            pass(auth.clone()).await;
        }
    })
}

/// Logs a failed pass of a background task; the next tick tries again.
fn warn_failed<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "{what} failed");
    }
}

/// Ticks every `secs` (at least 1); a late pass delays the next tick.
fn every(secs: u64) -> Interval {
    let mut i = interval(Duration::from_secs(secs.max(1)));
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

fn spawn_background(auth: Arc<Authority>, cert: Arc<RotatingKey>, shutdown: watch::Receiver<bool>) {
    let c = &auth.cfg;
    let mut tasks: Vec<Task> = vec![
        periodic(
            every(c.crl.interval_seconds as u64),
            &auth,
            |a| async move {
                warn_failed("CRL refresh", a.refresh_crls().await);
            },
        ),
        // Revocations written by another replica reach this one's feed and
        // CRL within a second; its CA transitions likewise.
        periodic(
            interval(Duration::from_millis(500)),
            &auth,
            |a| async move {
                warn_failed("revocation poll", a.sync_revocations().await);
                warn_failed("CA poll", a.sync_cas().await);
            },
        ),
        // The rotation schedule: every replica ticks, the lease holder acts.
        periodic(
            every(c.rotation.check_interval_seconds),
            &auth,
            |a| async move {
                warn_failed("CA rotation schedule", a.run_schedule_once().await);
            },
        ),
        periodic(
            every(c.retention.prune_interval_seconds),
            &auth,
            |a| async move {
                prune_once(&a).await;
            },
        ),
    ];
    if !auth.issuers.all().is_empty() {
        // Platform-token issuers' JWKS URLs, each on its own period.
        tasks.push(periodic(every(10), &auth, |a| async move {
            a.issuers.refresh_all(false).await;
        }));
    }
    tasks.push(Box::pin(crate::events::run_poller(auth.clone())));
    tasks.push(Box::pin(crate::events::run_expiring_scan(auth.clone())));
    tasks.push(Box::pin(crate::webhooks::run_deliverer(auth.clone())));
    tasks.push(Box::pin(crate::federation::run_poller(auth.clone())));
    tasks.push(periodic(
        interval(Duration::from_secs(1)),
        &auth,
        |a| async move {
            warn_failed("WAL checkpoint", a.store.checkpoint().await);
        },
    ));
    {
        let auth = auth.clone();
        let half = (auth.cfg.issuance.max_ttl_seconds / 2).max(30) as u64;
        tasks.push(Box::pin(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(half)).await;
                match auth.server_certified_key() {
                    Ok(k) => cert.set(k),
                    Err(e) => tracing::error!(error = %e, "server certificate rotation failed"),
                }
            }
        }));
    }
    for t in tasks {
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = t => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

/// One pruning pass: expired history, then old deliveries and event markers.
async fn prune_once(auth: &Authority) {
    let retention = &auth.cfg.retention;
    let now = tessera_core::now_unix();
    let before = crate::store::PruneBefore {
        expired: now - retention.keep_expired_seconds,
        denials: now - retention.keep_denials_seconds,
    };
    let batch = retention.prune_batch;
    let deliveries = now - retention.keep_deliveries_seconds;
    let pruned = match auth.store.prune(before, batch).await {
        Ok(n) => auth
            .store
            .prune_events(deliveries, before.expired, batch)
            .await
            .map(|m| n + m),
        Err(e) => Err(e),
    };
    match pruned {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "pruned expired history"),
        Err(e) => tracing::warn!(error = %e, "prune failed"),
    }
}

/// A response body that keeps its request counted in flight (for the idle
/// deadline) until the body has been sent or dropped.
/// The most of an HTTP/1.1 request body the server still reads, and throws
/// away, after answering without reading it all (a refused caller, a 413), so
/// that the connection stays open for the next request: otherwise hyper closes it, and
/// a client that pools connections (Python's `requests`, which schemathesis
/// uses) meets a reset on its next request there. Twice the default largest
/// body a route takes (a denial report); beyond it, or after
/// [`DRAIN_DEADLINE`], the connection is closed as before.
const DRAIN_MAX_BYTES: u64 = 2 * 1024 * 1024;

/// The longest the server spends draining one unread request body.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// A request's body, shared between the router (which reads what it needs)
/// and the connection's service, which drains the rest once the answer is
/// made (see [`DRAIN_MAX_BYTES`]).
struct Unread(Arc<std::sync::Mutex<Option<Incoming>>>);

impl Unread {
    /// The request for the router, its body read through the shared handle;
    /// and the handle. Only HTTP/1.1 needs it: an HTTP/2 stream answered
    /// early is reset on its own and the connection stays open, so its body
    /// goes to the router as it is (no lock per frame, no drain delaying the
    /// answer). A client that asked `Expect: 100-continue` waits for the
    /// answer before it sends: nothing to drain (draining would invite the
    /// body).
    fn wrap(req: hyper::Request<Incoming>) -> (hyper::Request<Body>, Unread) {
        let h1 = req.version() < hyper::Version::HTTP_2;
        let expects = req.headers().contains_key(hyper::header::EXPECT);
        let (parts, body) = req.into_parts();
        if !h1 || expects {
            return (
                hyper::Request::from_parts(parts, Body::new(body)),
                Unread(Arc::new(std::sync::Mutex::new(None))),
            );
        }
        let shared = Arc::new(std::sync::Mutex::new(Some(body)));
        (
            hyper::Request::from_parts(parts, Body::new(Unread(shared.clone()))),
            Unread(shared),
        )
    }

    /// Reads and discards what the router left of the body, within the bounds.
    async fn drain(self) {
        use http_body_util::BodyExt;
        let body = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut body) = body else { return };
        if hyper::body::Body::is_end_stream(&body)
            || hyper::body::Body::size_hint(&body).lower() > DRAIN_MAX_BYTES
        {
            return;
        }
        let _ = tokio::time::timeout(DRAIN_DEADLINE, async {
            let mut read = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > DRAIN_MAX_BYTES {
                    break;
                }
            }
        })
        .await;
    }
}

impl hyper::body::Body for Unread {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match body.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        body.as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        body.as_ref().map_or_else(
            || hyper::body::SizeHint::with_exact(0),
            hyper::body::Body::size_hint,
        )
    }
}

struct Guarded {
    inner: Body,
    _busy: tessera_core::idle::Busy,
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
