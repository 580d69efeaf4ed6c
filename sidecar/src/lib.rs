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
pub mod proxy;
mod relay;

use config::Config;
use identity::{IdentitySource, Svid};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tessera_core::api::{Denial, DenialReason, DenialReport, RevocationFeed};
use tessera_core::tls::{RevokedSerials, RotatingKey};
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
}

/// State shared by the listeners, the admin endpoint and the background tasks.
pub struct Shared {
    /// Configuration.
    pub cfg: Config,
    /// The current identity (None until the first certificate arrives).
    pub svid: RwLock<Option<Svid>>,
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
}

impl Shared {
    fn new(cfg: Config) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            svid: RwLock::new(None),
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
        })
    }

    /// The current identity, if any.
    pub fn identity(&self) -> Option<Svid> {
        self.svid.read().ok().and_then(|s| s.clone())
    }

    /// Records a refused connection: one structured log line, a metric, and a
    /// queued report for the CA.
    pub fn deny(
        &self,
        listener: &str,
        peer: std::net::SocketAddr,
        peer_id: Option<String>,
        reason: DenialReason,
    ) {
        tracing::warn!(
            target: "tessera_sidecar::denial",
            listener,
            peer_addr = %peer,
            peer_spiffe_id = peer_id.as_deref().unwrap_or("-"),
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
                peer_spiffe_id: peer_id,
                reason,
            });
        }
    }

    /// Installs a new identity: rotates the key in place and, if the bundle
    /// changed, republishes TLS configurations for new handshakes.
    fn install(&self, svid: Svid) -> Result<(), SidecarError> {
        let ck = svid.certified_key()?;
        let bundle_changed = self
            .identity()
            .map(|old| old.bundle != svid.bundle)
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
            let set = proxy::TlsSet::build(&self.cfg, &svid.bundle, key, self.revoked.clone())?;
            self.tls.send_replace(Some(Arc::new(set)));
        }
        self.metrics.cert_expiry.set(svid.not_after);
        if let Some(dir) = &self.cfg.svid_files.dir
            && let Err(e) = write_svid_files(dir, &svid)
        {
            tracing::error!(error = %e, dir = %dir.display(), "writing SVID files failed");
        } else if self.cfg.svid_files.dir.is_some() {
            self.notify_app();
        }
        tracing::info!(spiffe_id = %svid.spiffe_id, serial = %svid.serial, not_after = svid.not_after, "identity installed");
        *self.svid.write().unwrap_or_else(|p| p.into_inner()) = Some(svid);
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
        let Some(mut svid) = self.identity() else {
            return Ok(false);
        };
        if svid.bundle == bundle {
            return Ok(false);
        }
        let Some(key) = self.key.read().ok().and_then(|k| k.clone()) else {
            return Ok(false);
        };
        let set = proxy::TlsSet::build(&self.cfg, &bundle, key, self.revoked.clone())?;
        self.tls.send_replace(Some(Arc::new(set)));
        svid.bundle = bundle;
        if let Some(dir) = &self.cfg.svid_files.dir {
            match write_svid_files(dir, &svid) {
                Ok(()) => self.notify_app(),
                Err(e) => {
                    tracing::error!(error = %e, dir = %dir.display(), "writing SVID files failed")
                }
            }
        }
        tracing::info!(anchors = svid.bundle.len(), "trust bundle updated");
        *self.svid.write().unwrap_or_else(|p| p.into_inner()) = Some(svid);
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

/// Writes `svid.pem`, `svid_key.pem` (0600, never wider) and `bundle.pem`,
/// each through a temporary file and a rename, so an app never reads half a file.
fn write_svid_files(dir: &std::path::Path, svid: &Svid) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let key_pem = tessera_core::pem::encode("PRIVATE KEY", svid.key().secret_der());
    let files = [
        (
            "svid.pem",
            tessera_core::pem::encode_certs(svid.chain.iter().map(|c| c.as_ref())),
            0o644,
        ),
        ("svid_key.pem", key_pem, 0o600),
        (
            "bundle.pem",
            tessera_core::pem::encode_certs(svid.bundle.iter().map(|c| c.as_ref())),
            0o644,
        ),
    ];
    for (name, data, mode) in files {
        let tmp = dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
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
    /// Connection slots: every accepted connection holds one from accept to
    /// close, handshakes included.
    slots: Arc<tokio::sync::Semaphore>,
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
        let max = self.shared.cfg.limits.max_connections;
        while (self.slots.available_permits() < max || self.shared.metrics.active_total() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    let admin = tokio::net::TcpListener::bind(shared.cfg.admin_listen)
        .await
        .map_err(|e| SidecarError::Bind("admin_listen".into(), e))?;
    let mut addrs = Addresses {
        admin: admin
            .local_addr()
            .map_err(|e| SidecarError::Bind("admin_listen".into(), e))?,
        inbound: Default::default(),
        outbound: Default::default(),
    };
    tokio::spawn(metrics::serve_admin(shared.clone(), admin));
    let mut listeners = Vec::new();
    for (i, l) in shared.cfg.inbound.iter().enumerate() {
        let sock = tokio::net::TcpListener::bind(l.listen)
            .await
            .map_err(|e| SidecarError::Bind(format!("inbound[{i}].listen"), e))?;
        addrs.inbound.insert(
            l.name.clone(),
            sock.local_addr()
                .map_err(|e| SidecarError::Bind(l.name.clone(), e))?,
        );
        listeners.push((true, i, sock));
    }
    for (i, o) in shared.cfg.outbound.iter().enumerate() {
        let sock = tokio::net::TcpListener::bind(o.listen)
            .await
            .map_err(|e| SidecarError::Bind(format!("outbound[{i}].listen"), e))?;
        addrs.outbound.insert(
            o.name.clone(),
            sock.local_addr()
                .map_err(|e| SidecarError::Bind(o.name.clone(), e))?,
        );
        listeners.push((false, i, sock));
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(
        shared.cfg.limits.max_connections,
    ));
    let mut accept_loops = Vec::with_capacity(listeners.len());
    for (inbound, i, sock) in listeners {
        accept_loops.push(tokio::spawn(proxy::accept_loop(
            shared.clone(),
            inbound,
            i,
            sock,
            slots.clone(),
            stop_rx.clone(),
        )));
    }
    let source = Arc::new(source);
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(shared.cfg.renew.retry_min_ms);
            loop {
                match source.fetch().await {
                    Ok(svid) => match shared.install(svid) {
                        Ok(()) => break,
                        Err(e) => tracing::error!(error = %e, "cannot use the issued identity"),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "no identity yet")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(shared.cfg.renew.retry_max_ms));
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

fn jittered(shared: &Shared, svid: &Svid) -> Duration {
    use ring::rand::SecureRandom;
    // From receipt, not notBefore: the CA back-dates notBefore for clock skew,
    // which would otherwise pull every renewal earlier (and, for short
    // lifetimes, into a renewal loop).
    let start = svid.received_at.max(svid.not_before);
    let life = (svid.not_after - start).max(1) as f64;
    let mut b = [0u8; 2];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    let r = (u16::from_be_bytes(b) as f64 / u16::MAX as f64) * 2.0 - 1.0;
    let at =
        start as f64 + life * (shared.cfg.renew.at_fraction + r * shared.cfg.renew.jitter_fraction);
    Duration::from_secs_f64((at - tessera_core::now_unix() as f64).max(0.0))
}

/// Renews at the configured fraction of the lifetime (± jitter); on failure
/// retries with capped exponential backoff while the current certificate serves.
async fn renew_forever<S: IdentitySource>(shared: Arc<Shared>, source: Arc<S>) {
    loop {
        let Some(current) = shared.identity() else {
            return;
        };
        // A pushing source (the Workload API) decides when: wait for its push.
        let wait = if source.pushes_updates() {
            Duration::ZERO
        } else {
            jittered(&shared, &current)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.renew_now.notified() => {
                tracing::warn!(serial = %current.serial, "own certificate revoked; re-issuing now");
            }
        }
        let mut delay = Duration::from_millis(shared.cfg.renew.retry_min_ms);
        loop {
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
            if current.not_after <= tessera_core::now_unix() {
                tracing::error!("certificate expired before it could be renewed");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(shared.cfg.renew.retry_max_ms));
        }
    }
}

/// Follows the CA's revocation feed by long-poll; keeps the last known list
/// when the CA is unreachable and exposes the lag.
async fn follow_revocations(shared: Arc<Shared>) {
    let mut since = 0i64;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        let result = async {
            let svid = shared.identity().ok_or("no identity")?;
            let client = svid.client(&shared.cfg.ca_url).map_err(|_| "client")?;
            let path = format!(
                "/v1/revocations?since={since}&wait={}&bundle={}",
                shared.cfg.revocation.wait_seconds,
                shared.bundle_seq.load(Ordering::Acquire)
            );
            let r = client
                .call(hyper::Method::GET, &path, None)
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
                last_ok = tokio::time::Instant::now();
                if feed.bundle_sequence != shared.bundle_seq.load(Ordering::Acquire) {
                    shared.bundle_wake.notify_one();
                }
                if !feed.revocations.is_empty() {
                    shared
                        .revoked
                        .extend(feed.revocations.iter().map(|r| r.serial.clone()));
                    shared.revoked_gen.send_modify(|g| *g += 1);
                    let own = shared.identity().map(|s| s.serial);
                    if feed
                        .revocations
                        .iter()
                        .any(|r| Some(&r.serial) == own.as_ref())
                    {
                        shared.renew_now.notify_one();
                    }
                    tracing::info!(
                        count = feed.revocations.len(),
                        version = feed.version,
                        "revocations received"
                    );
                }
                since = feed.version;
                shared.metrics.feed_version.set(since);
                shared.metrics.feed_lag.set(0);
                if feed.more {
                    continue;
                }
            }
            Err(why) => {
                if why == "own certificate refused" {
                    shared.renew_now.notify_one();
                }
                shared
                    .metrics
                    .feed_lag
                    .set(last_ok.elapsed().as_secs() as i64);
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
    let mut retry = Duration::from_millis(shared.cfg.renew.retry_min_ms);
    loop {
        let result = async {
            let svid = shared.identity().ok_or("no identity")?;
            let client = svid.client(&shared.cfg.ca_url).map_err(|_| "client")?;
            let held = shared.bundle_seq.load(Ordering::Acquire);
            let etag = (held != 0).then(|| format!("\"{held}\""));
            let r = client
                .get_if_none_match("/v1/bundle", etag.as_deref())
                .await
                .map_err(|_| "unreachable")?;
            let seq = r
                .etag
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
                retry = Duration::from_millis(shared.cfg.renew.retry_min_ms);
                every
            }
            Err(why) => {
                tracing::warn!(
                    why,
                    "trust bundle refresh failed; keeping the current bundle"
                );
                let r = retry;
                retry = (retry * 2).min(Duration::from_millis(shared.cfg.renew.retry_max_ms));
                r.min(every)
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
        let Some(svid) = shared.identity() else {
            requeue(&shared, batch);
            continue;
        };
        let status = async {
            let client = svid.client(&shared.cfg.ca_url).ok()?;
            let body = serde_json::to_vec(&DenialReport {
                denials: batch.clone(),
            })
            .ok()?;
            let r = client
                .call(hyper::Method::POST, "/v1/denials", Some(body))
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
