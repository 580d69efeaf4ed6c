//! Tessera sidecar: one process beside one app container (sharing its network
//! namespace) that makes every connection into and out of the app mutually
//! authenticated (SPIFFE mTLS) and authorized, rotates its identity in memory,
//! follows revocations, and logs and reports every refused connection.
//!
//! Architecture invariant: TLS configurations are built only by
//! `tessera_core::tls`; rotation replaces the key inside a shared
//! [`tessera_core::tls::RotatingKey`], so established connections are never
//! touched and new handshakes pick up the new certificate at once.
#![forbid(unsafe_code)]

pub mod config;
pub mod identity;
mod metrics;
pub mod probe;
pub mod proxy;
mod relay;

use config::Config;
use identity::IdentitySource;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tessera_core::SpiffeId;
use tessera_core::api::{Denial, DenialReason, DenialReport, RevocationFeed};
use tessera_core::tls::{RevokedSerials, RotatingKey};
use tessera_workload::{CALL_DEADLINE, CaClient, Identity, PemFile, PemSet, RenewalPolicy};
use tokio::sync::watch;

pub use metrics::Metrics;

/// Errors starting the sidecar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// A listener could not bind.
    #[error("{0}: {1}")]
    Bind(String, std::io::Error),
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(#[from] tessera_core::tls::TlsError),
    /// Identity failure.
    #[error("identity: {0}")]
    Identity(#[from] identity::IdentityError),
    /// The CA client for the identity could not be set up.
    #[error("CA client: {0}")]
    Ca(#[from] tessera_workload::CaError),
    /// `[svid_files]` could not be written.
    #[error("svid_files: {0}")]
    SvidFiles(String),
}

/// State shared by the listeners, the admin endpoint and the background tasks.
pub struct Shared {
    /// Configuration.
    pub cfg: Config,
    /// The current identity and its CA client (None until the first
    /// certificate arrives).
    held: RwLock<Option<Arc<Held>>>,
    /// When to renew and how to retry (from `[renew]`).
    renewal: RenewalPolicy,
    /// The key every TLS configuration serves.
    key: RwLock<Option<Arc<RotatingKey>>>,
    /// Revoked serials.
    pub revoked: Arc<RevokedSerials>,
    /// Bumped whenever new revocations arrive (wakes established connections).
    revoked_gen: watch::Sender<u64>,
    /// TLS configurations, republished when the bundle changes.
    tls: watch::Sender<Option<Arc<proxy::TlsSet>>>,
    /// Ready once an identity is held and every listener is up.
    pub ready: AtomicBool,
    /// Metrics.
    pub metrics: Metrics,
    denials: Mutex<Vec<Denial>>,
    /// The sequence (ETag) of the bundle held; 0 until one was fetched.
    bundle_seq: AtomicI64,
    /// Wakes the bundle follower (the feed saw another sequence).
    bundle_wake: tokio::sync::Notify,
    /// Wakes the renewal loop early (our own certificate was revoked, e.g. with its CA).
    renew_now: tokio::sync::Notify,
    /// The serial [`Self::renew_now`] was woken for: a wake for a certificate
    /// already replaced is stale and ignored.
    renew_serial: Mutex<Option<String>>,
}

/// The identity held and the CA client that presents it (its kept
/// connection serves every call to the CA), replaced together.
struct Held {
    identity: Identity,
    ca: Arc<CaClient>,
}

impl Shared {
    fn new(cfg: Config) -> Arc<Self> {
        let r = &cfg.renew;
        // `jitter_fraction` is of the lifetime; the policy's jitter is a
        // share of the wait (at_fraction of the lifetime, at least 0.1).
        let renewal = RenewalPolicy::at(r.at_fraction)
            .jitter(r.jitter_fraction / r.at_fraction)
            .retry(
                Duration::from_millis(r.retry_min_ms),
                Duration::from_millis(r.retry_max_ms),
            );
        Arc::new(Self {
            cfg,
            held: RwLock::new(None),
            renewal,
            key: RwLock::new(None),
            revoked: Arc::new(RevokedSerials::default()),
            revoked_gen: watch::channel(0).0,
            tls: watch::channel(None).0,
            ready: AtomicBool::new(false),
            metrics: Metrics::new(),
            denials: Mutex::new(Vec::new()),
            bundle_seq: AtomicI64::new(0),
            bundle_wake: tokio::sync::Notify::new(),
            renew_now: tokio::sync::Notify::new(),
            renew_serial: Mutex::new(None),
        })
    }

    /// The current identity, if any.
    pub fn identity(&self) -> Option<Identity> {
        self.held().map(|h| h.identity.clone())
    }

    fn held(&self) -> Option<Arc<Held>> {
        self.held.read().ok().and_then(|h| h.clone())
    }

    /// `identity` with a CA client that presents it, ready to [`Self::hold`].
    fn client_for(&self, identity: Identity) -> Result<Held, SidecarError> {
        let ca = CaClient::new(&self.cfg.ca_url, &identity.bundle, Some(&identity.svid))?;
        Ok(Held {
            identity,
            ca: Arc::new(ca),
        })
    }

    /// Makes `held` current.
    fn hold(&self, held: Held) {
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(held));
    }

    /// Wakes the renewal loop to replace the certificate `serial` now.
    fn renew_now(&self, serial: &str) {
        *self.renew_serial.lock().unwrap_or_else(|p| p.into_inner()) = Some(serial.to_owned());
        self.renew_now.notify_one();
    }

    /// Records a refused connection: one structured log line, a metric, and a
    /// queued report for the CA.
    pub fn deny(
        &self,
        listener: &str,
        peer: std::net::SocketAddr,
        peer_id: Option<SpiffeId>,
        reason: DenialReason,
    ) {
        tracing::warn!(
            target: "tessera_sidecar::denial",
            listener,
            peer_addr = %peer,
            peer_spiffe_id = peer_id.as_ref().map_or("-", SpiffeId::as_str),
            reason = reason.as_str(),
            "connection denied"
        );
        self.metrics.denied.inc(&[listener, reason.as_str()]);
        if self.cfg.denials.report
            && let Ok(mut q) = self.denials.lock()
        {
            if q.len() >= self.cfg.denials.max_buffered {
                q.remove(0);
                self.metrics.denials_dropped.add(1);
            }
            q.push(Denial {
                at: tessera_core::now_unix(),
                listener: listener.to_owned(),
                peer_addr: peer.to_string(),
                peer_spiffe_id: peer_id.map(String::from),
                reason,
            });
        }
    }

    /// Installs a new identity: rotates the key in place and, if the bundle
    /// changed, republishes TLS configurations for new handshakes.
    fn install(&self, new: Identity) -> Result<(), SidecarError> {
        let ck = new.svid.certified_key()?;
        let held = self.client_for(new)?;
        let new = &held.identity;
        let bundle_changed = self
            .identity()
            .map(|old| old.bundle != new.bundle)
            .unwrap_or(true);
        let key = {
            let mut slot = self.key.write().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(k) => {
                    k.set(ck);
                    k.clone()
                }
                None => {
                    let k = Arc::new(RotatingKey::new(ck));
                    *slot = Some(k.clone());
                    k
                }
            }
        };
        if bundle_changed {
            let set = proxy::TlsSet::build(&self.cfg, &new.bundle, key, self.revoked.clone())?;
            self.tls.send_replace(Some(Arc::new(set)));
        }
        let svid = &new.svid;
        self.metrics.cert_expiry.set(svid.not_after());
        if let Some(dir) = &self.cfg.svid_files.dir
            && let Err(e) = write_svid_files(dir, new)
        {
            tracing::error!(error = %e, dir = %dir.display(), "writing SVID files failed");
        } else if self.cfg.svid_files.dir.is_some() {
            self.notify_app();
        }
        let (spiffe_id, serial, not_after) = (
            svid.spiffe_id().clone(),
            svid.serial().to_owned(),
            svid.not_after(),
        );
        // Held before it is announced: whoever reads the log line finds it.
        self.hold(held);
        tracing::info!(%spiffe_id, %serial, not_after, "identity installed");
        Ok(())
    }
}

impl Shared {
    /// Applies a trust bundle fetched from the CA: new handshakes verify peers
    /// against it at once; established connections are untouched. The
    /// identity's copy (used to reach the CA and written to `bundle.pem`) follows.
    fn install_bundle(
        &self,
        bundle: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Result<bool, SidecarError> {
        let Some(mut identity) = self.identity() else {
            return Ok(false);
        };
        if identity.bundle == bundle {
            return Ok(false);
        }
        let Some(key) = self.key.read().ok().and_then(|k| k.clone()) else {
            return Ok(false);
        };
        let set = proxy::TlsSet::build(&self.cfg, &bundle, key, self.revoked.clone())?;
        self.tls.send_replace(Some(Arc::new(set)));
        identity.bundle = bundle;
        if let Some(dir) = &self.cfg.svid_files.dir {
            match write_svid_files(dir, &identity) {
                Ok(()) => self.notify_app(),
                Err(e) => {
                    tracing::error!(error = %e, dir = %dir.display(), "writing SVID files failed")
                }
            }
        }
        let anchors = identity.bundle.len();
        self.hold(self.client_for(identity)?);
        tracing::info!(anchors, "trust bundle updated");
        self.metrics.bundle_updates.add(1);
        Ok(true)
    }

    /// Tells the app its files changed: runs the command and/or sends the signal.
    fn notify_app(&self) {
        let f = &self.cfg.svid_files;
        if let Some(cmd) = &f.command {
            match std::process::Command::new("sh").arg("-c").arg(cmd).status() {
                Ok(s) if s.success() => {}
                other => {
                    tracing::warn!(command = %cmd, result = ?other, "svid_files.command failed")
                }
            }
        }
        if let Some(pid) = f.signal_pid {
            let sig = f.signal.clone().unwrap_or_else(|| "HUP".into());
            // The `kill` command keeps this crate free of unsafe code.
            match std::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status()
            {
                Ok(s) if s.success() => {}
                other => {
                    tracing::warn!(pid, signal = %sig, result = ?other, "signalling the app failed")
                }
            }
        }
    }
}

/// Writes `bundle.pem`, `svid_key.pem` (0600, never wider) and `svid.pem`
/// (leaf and chain) as one [`PemSet`]: every file through a temporary file
/// and a rename, so an app never reads half a file, and the certificate
/// renamed last, so an app reloading on its change never pairs it with the
/// previous key.
fn write_svid_files(dir: &std::path::Path, identity: &Identity) -> Result<(), SidecarError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SidecarError::SvidFiles(format!("{}: {e}", dir.display())))?;
    let (bundle, key, cert) = (
        dir.join("bundle.pem"),
        dir.join("svid_key.pem"),
        dir.join("svid.pem"),
    );
    let bundle_pem = identity.bundle_pem();
    let key_pem = identity.svid.key().to_pem();
    let cert_pem = identity.svid.chain_pem();
    PemSet {
        bundle: Some(PemFile::public(&bundle, bundle_pem.as_bytes())),
        key: Some(PemFile::private(&key, key_pem.as_bytes())),
        cert: Some(PemFile::public(&cert, cert_pem.as_bytes())),
        ..PemSet::default()
    }
    .write()
    .map_err(|e| SidecarError::SvidFiles(e.to_string()))
}

/// Bound addresses of a running sidecar.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Addresses {
    /// Admin endpoint.
    pub admin: std::net::SocketAddr,
    /// Inbound listeners by name.
    pub inbound: std::collections::BTreeMap<String, std::net::SocketAddr>,
    /// Outbound listeners by name.
    pub outbound: std::collections::BTreeMap<String, std::net::SocketAddr>,
}

/// A started sidecar.
pub struct Running {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Bound addresses.
    pub addrs: Addresses,
    stop: watch::Sender<bool>,
    accept_loops: Vec<tokio::task::JoinHandle<()>>,
    /// Connection slots, inbound and outbound apart: every accepted
    /// connection holds one of its side's from accept to close, handshakes
    /// included.
    slots: Slots,
}

/// The inbound and the outbound listeners' connection slots.
#[derive(Clone)]
pub(crate) struct Slots {
    inbound: Arc<tokio::sync::Semaphore>,
    outbound: Arc<tokio::sync::Semaphore>,
}

impl Slots {
    fn new(l: &config::Limits) -> Self {
        Self {
            inbound: Arc::new(tokio::sync::Semaphore::new(l.max_inbound_connections)),
            outbound: Arc::new(tokio::sync::Semaphore::new(l.max_outbound_connections)),
        }
    }

    /// The slots of the inbound (`true`) or outbound listeners.
    pub(crate) fn side(&self, inbound: bool) -> &Arc<tokio::sync::Semaphore> {
        if inbound {
            &self.inbound
        } else {
            &self.outbound
        }
    }

    /// Whether some connection (in a handshake or relaying) holds a slot.
    fn any_held(&self, l: &config::Limits) -> bool {
        self.inbound.available_permits() < l.max_inbound_connections
            || self.outbound.available_permits() < l.max_outbound_connections
    }
}

impl Running {
    /// Stops accepting (every listener is closed when this logs
    /// "draining"), then waits up to `drain` for open connections to finish.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(true);
        // Each accept loop owns its listener: once they have returned, no
        // new connection can be accepted.
        for h in self.accept_loops {
            let _ = h.await;
        }
        tracing::info!(
            open = self.shared.metrics.active_total(),
            "draining: listeners closed"
        );
        let deadline = tokio::time::Instant::now() + drain;
        // Connections still in their TLS handshake hold a slot but are not
        // counted as active yet: wait for both.
        let limits = &self.shared.cfg.limits;
        while (self.slots.any_held(limits) || self.shared.metrics.active_total() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Binds `addr` (the option `what`), returning the listener and its address.
async fn bind(
    addr: std::net::SocketAddr,
    what: String,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), SidecarError> {
    let sock = tokio::net::TcpListener::bind(addr).await;
    match sock.and_then(|s| s.local_addr().map(|a| (s, a))) {
        Ok(bound) => Ok(bound),
        Err(e) => Err(SidecarError::Bind(what, e)),
    }
}

/// Binds every listener, then gets an identity (retrying while the CA is
/// unreachable; not ready meanwhile) and starts serving.
pub async fn start<S: IdentitySource + 'static>(
    cfg: Config,
    source: S,
) -> Result<Running, SidecarError> {
    let shared = Shared::new(cfg);
    let (stop, stop_rx) = watch::channel(false);
    let (admin, admin_addr) = bind(shared.cfg.admin_listen, "admin_listen".into()).await?;
    let mut addrs = Addresses {
        admin: admin_addr,
        inbound: Default::default(),
        outbound: Default::default(),
    };
    tokio::spawn(metrics::serve_admin(shared.clone(), admin));
    let mut listeners = Vec::new();
    let inbound = shared.cfg.inbound.iter().map(|l| (l.listen, &l.name));
    let outbound = shared.cfg.outbound.iter().map(|o| (o.listen, &o.name));
    for (is_inbound, side) in [
        (true, inbound.collect::<Vec<_>>()),
        (false, outbound.collect()),
    ] {
        let (kind, names) = if is_inbound {
            ("inbound", &mut addrs.inbound)
        } else {
            ("outbound", &mut addrs.outbound)
        };
        for (i, (listen, name)) in side.into_iter().enumerate() {
            let (sock, addr) = bind(listen, format!("{kind}[{i}].listen")).await?;
            names.insert(name.clone(), addr);
            listeners.push((is_inbound, i, sock));
        }
    }
    let slots = Slots::new(&shared.cfg.limits);
    let mut accept_loops = Vec::with_capacity(listeners.len());
    for (inbound, i, sock) in listeners {
        accept_loops.push(tokio::spawn(proxy::accept_loop(
            shared.clone(),
            inbound,
            i,
            sock,
            slots.side(inbound).clone(),
            stop_rx.clone(),
        )));
    }
    let source = Arc::new(source);
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut retry = shared.renewal.retries();
            loop {
                let delay = retry.next_delay();
                match source.fetch().await {
                    Ok(identity) => match shared.install(identity) {
                        Ok(()) => break,
                        Err(e) => tracing::error!(error = %e, "cannot use the issued identity"),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "no identity yet")
                    }
                }
                tokio::time::sleep(delay).await;
            }
            shared.ready.store(true, Ordering::Release);
            tracing::info!("ready");
            let follower = shared.clone();
            if shared.cfg.revocation.follow {
                tokio::spawn(follow_revocations(follower));
            }
            if shared.cfg.denials.report {
                tokio::spawn(report_denials(shared.clone()));
            }
            tokio::spawn(follow_bundle(shared.clone()));
            renew_forever(shared, source).await;
        });
    }
    Ok(Running {
        shared,
        addrs,
        stop,
        accept_loops,
        slots,
    })
}

/// Renews at the configured fraction of the lifetime (± jitter); on failure
/// retries with capped exponential backoff while the current certificate serves.
async fn renew_forever<S: IdentitySource>(shared: Arc<Shared>, source: Arc<S>) {
    loop {
        let Some(current) = shared.identity() else {
            return;
        };
        let svid = &current.svid;
        // A pushing source (the Workload API) decides when: wait for its push.
        let wait = if source.pushes_updates() {
            Duration::ZERO
        } else {
            shared.renewal.wait(svid.lifetime())
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.renew_now.notified() => {
                let flagged = shared.renew_serial.lock().ok().and_then(|mut s| s.take());
                if flagged.as_deref() != Some(svid.serial()) {
                    // Woken for a certificate already replaced.
                    continue;
                }
                tracing::warn!(serial = %svid.serial(), "own certificate revoked; re-issuing now");
            }
        }
        let mut retry = shared.renewal.backoff(svid.lifetime());
        loop {
            let delay = retry.next_delay();
            match source.renew(&current).await.map(|s| shared.install(s)) {
                Ok(Ok(())) => {
                    shared.metrics.rotations.add(1);
                    break;
                }
                Ok(Err(e)) => tracing::error!(error = %e, "renewed identity unusable"),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "renewal failed; serving with the current certificate")
                }
            }
            if svid.expired() {
                tracing::error!("certificate expired before it could be renewed");
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// How overdue the revocation feed is: a healthy feed answers at least every
/// long-poll `wait` (at once when something changes), so the lag is the time
/// since its last answer beyond that. A watchdog keeps the metric: it grows
/// while a long-poll hangs on a connection that stopped forwarding, not
/// only once the poll fails.
struct FeedClock {
    start: tokio::time::Instant,
    /// Milliseconds after `start` until which the feed was current.
    current_until_ms: std::sync::atomic::AtomicU64,
}

impl FeedClock {
    fn new() -> Self {
        FeedClock {
            start: tokio::time::Instant::now(),
            current_until_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The feed answered now; the next answer is due within `wait`.
    fn answered(&self, wait: Duration) {
        let until = self.now_ms() + wait.as_millis() as u64;
        self.current_until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Whole seconds the feed's next answer is overdue.
    fn lag_seconds(&self) -> i64 {
        let until = self.current_until_ms.load(Ordering::Acquire);
        (self.now_ms().saturating_sub(until) / 1000) as i64
    }
}

/// Follows the CA's revocation feed by long-poll; keeps the last known list
/// when the CA is unreachable and exposes the lag ([`FeedClock`]).
async fn follow_revocations(shared: Arc<Shared>) {
    let mut since = 0i64;
    let wait = Duration::from_secs(shared.cfg.revocation.wait_seconds);
    let clock = Arc::new(FeedClock::new());
    clock.answered(wait);
    {
        let (clock, shared) = (clock.clone(), shared.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                shared.metrics.feed_lag.set(clock.lag_seconds());
            }
        });
    }
    loop {
        let held = shared.held();
        let result = async {
            let client = &held.as_ref().ok_or("no identity")?.ca;
            let wait = shared.cfg.revocation.wait_seconds;
            let path = format!(
                "/v1/revocations?since={since}&wait={wait}&bundle={}",
                shared.bundle_seq.load(Ordering::Acquire)
            );
            let r = client
                .long_poll(&path, Duration::from_secs(wait))
                .await
                .map_err(|_| "unreachable")?;
            if r.status == hyper::StatusCode::UNAUTHORIZED {
                // The CA no longer accepts our own certificate (revoked before
                // we saw it on the feed, or unknown): only a new one helps.
                return Err("own certificate refused");
            }
            if !r.status.is_success() {
                return Err("refused");
            }
            serde_json::from_slice::<RevocationFeed>(&r.body).map_err(|_| "bad answer")
        }
        .await;
        match result {
            Ok(feed) => {
                clock.answered(wait);
                if feed.bundle_sequence != shared.bundle_seq.load(Ordering::Acquire) {
                    shared.bundle_wake.notify_one();
                }
                // Expired certificates fail the chain check anyway: their
                // serials are dropped, so the set holds live revocations only.
                let revoked = feed.revocations.iter();
                shared.revoked.extend(
                    revoked.map(|r| (r.serial.clone(), r.not_after)),
                    tessera_core::now_unix(),
                );
                if !feed.revocations.is_empty() {
                    shared.revoked_gen.send_modify(|g| *g += 1);
                    if let Some(own) = shared.identity()
                        && feed
                            .revocations
                            .iter()
                            .any(|r| r.serial == own.svid.serial())
                    {
                        shared.renew_now(own.svid.serial());
                    }
                    tracing::info!(
                        count = feed.revocations.len(),
                        version = feed.version,
                        "revocations received"
                    );
                }
                since = feed.version;
                shared.metrics.feed_version.set(since);
                shared.metrics.feed_lag.set(clock.lag_seconds());
                if feed.more {
                    continue;
                }
            }
            Err(why) => {
                if why == "own certificate refused"
                    && let Some(h) = &held
                {
                    shared.renew_now(h.identity.svid.serial());
                }
                shared.metrics.feed_lag.set(clock.lag_seconds());
                tracing::warn!(
                    why,
                    "revocation feed unavailable; keeping the last known list"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Keeps the trust bundle current: a conditional GET of `/v1/bundle` when the
/// feed reports another sequence, and at least every `bundle_refresh_seconds`.
async fn follow_bundle(shared: Arc<Shared>) {
    let every = Duration::from_secs(shared.cfg.bundle_refresh_seconds);
    let mut retry = shared.renewal.retries();
    loop {
        let result = async {
            let client = shared.held().ok_or("no identity")?.ca.clone();
            let held = shared.bundle_seq.load(Ordering::Acquire);
            let etag = (held != 0).then(|| format!("\"{held}\""));
            let r = client
                .get_if_none_match("/v1/bundle", etag.as_deref())
                .await
                .map_err(|_| "unreachable")?;
            let seq = r
                .etag()
                .as_deref()
                .and_then(|e| e.trim_matches('"').parse::<i64>().ok());
            match r.status.as_u16() {
                304 => {}
                200 => {
                    let certs = tessera_core::pem::certs(&r.body).map_err(|_| "bad bundle")?;
                    if certs.is_empty() {
                        return Err("empty bundle");
                    }
                    shared
                        .install_bundle(certs)
                        .map_err(|_| "unusable bundle")?;
                }
                _ => return Err("refused"),
            }
            if let Some(seq) = seq {
                shared.bundle_seq.store(seq, Ordering::Release);
            }
            Ok(())
        }
        .await;
        let wait = match result {
            Ok(()) => {
                retry.reset();
                every
            }
            Err(why) => {
                tracing::warn!(
                    why,
                    "trust bundle refresh failed; keeping the current bundle"
                );
                retry.next_delay().min(every)
            }
        };
        tokio::select! {
            _ = shared.bundle_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends queued denials to the CA in batches.
async fn report_denials(shared: Arc<Shared>) {
    let mut tick =
        tokio::time::interval(Duration::from_millis(shared.cfg.denials.flush_ms.max(100)));
    loop {
        tick.tick().await;
        let batch: Vec<Denial> = match shared.denials.lock() {
            Ok(mut q) if !q.is_empty() => {
                // 200 denials are ~35 KB: far below the CA's report size limit.
                let n = q.len().min(200);
                q.drain(..n).collect()
            }
            _ => continue,
        };
        let Some(client) = shared.held().map(|h| h.ca.clone()) else {
            requeue(&shared, batch);
            continue;
        };
        let status = async {
            let body = serde_json::to_vec(&DenialReport {
                denials: batch.clone(),
            })
            .ok()?;
            let r = client
                .call(
                    hyper::Method::POST,
                    "/v1/denials",
                    Some(body),
                    &[],
                    CALL_DEADLINE,
                )
                .await
                .ok()?;
            Some(r.status.as_u16())
        }
        .await;
        match status {
            Some(s) if (200..300).contains(&s) => {
                shared.metrics.denials_reported.add(batch.len() as i64)
            }
            // The CA refused the batch as invalid: retrying cannot help and would
            // block every later report, so drop it and count it.
            Some(400 | 413 | 422) => {
                tracing::warn!(
                    status = status.unwrap_or(0),
                    count = batch.len(),
                    "CA refused a denial report; dropped"
                );
                shared.metrics.denials_dropped.add(batch.len() as i64);
            }
            // Unreachable, unauthenticated for now, or a server error: try again later.
            _ => requeue(&shared, batch),
        }
    }
}

/// Puts an unsent batch back in front of newer denials, within the cap.
fn requeue(shared: &Shared, batch: Vec<Denial>) {
    if let Ok(mut q) = shared.denials.lock() {
        let mut merged = batch;
        merged.append(&mut q);
        let excess = merged.len().saturating_sub(shared.cfg.denials.max_buffered);
        merged.drain(..excess);
        shared.metrics.denials_dropped.add(excess as i64);
        *q = merged;
    }
}
