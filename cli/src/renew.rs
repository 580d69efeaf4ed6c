//! `tessera cert renew`: keeps certificate files on disk renewed over mTLS with
//! a new key each time, once or (`--watch`) for as long as it runs. This is
//! the step-ca `renew --daemon` use case: workloads without a sidecar.
//!
//! Renewal authenticates with the current certificate (`POST /v1/certs/renew`);
//! the new key is generated here, in memory, and only ever written to the key
//! file (mode 0600). The trust bundle file is refreshed with each renewal and,
//! while watching, by conditional GET of `/v1/bundle` in between.
//!
//! # How files are replaced
//!
//! Every file is written to a temporary file in its own directory (the key's
//! created 0600, never wider), flushed to disk, and renamed over the old one,
//! so a reader never sees half a file. All temporary files are written before
//! the first rename, then renamed in the order bundle, chain, key, **cert
//! last**: the certificate file is the commit point. A reader that reloads
//! when `--exec`/`--signal` fires (they run after the last rename), or when
//! the certificate file changes, always sees a matching pair. Only a reader
//! that happens to read both files within the microseconds between the key
//! and certificate renames can pair the new key with the old certificate; a
//! TLS library refuses such a pair and the reader's next reload fixes it.

use crate::cert::{KeyType, csr_for};
use clap::Args;
use hyper::Method;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_core::api::{IssuedCertificate, Problem, RenewRequest};
use tessera_core::client::Client;
use tessera_core::time::rfc3339;

/// Default point of the lifetime at which `--watch` renews (two thirds).
const DEFAULT_RENEW_AT: f64 = 0.6667;
/// Renewal waits the chosen fraction of the lifetime ± this share of that wait,
/// at random, so that workloads started together do not renew together.
/// Relative to the wait (not the lifetime) so a small `--renew-at` never
/// jitters down to zero and renews in a loop.
const JITTER: f64 = 0.1;
/// How often `--watch` asks for a newer trust bundle between renewals. A CA is
/// published in the bundle at least `rotation.min_overlap_seconds` (default
/// 1 h) before it signs anything, so this leaves ample margin.
const BUNDLE_POLL: Duration = Duration::from_secs(300);
/// First retry delay after a failed renewal; doubles up to a cap.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Retry cap: a tenth of the lifetime, within these bounds.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// `tessera cert renew` options. The certificate (leaf + chain) and key to
/// renew are the global `--cert FILE --key FILE` (or `--cert-dir`).
#[derive(Args)]
pub struct RenewArgs {
    /// Directory written by `cert issue --out-dir`: shorthand for --cert
    /// DIR/cert.pem --key DIR/key.pem --bundle DIR/bundle.pem (chain.pem is
    /// rewritten too).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Trust bundle (PEM): verifies the CA, and is rewritten with the CA's
    /// current bundle.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Key type of the new key.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
    key_type: KeyType,
    /// Keep running: renew at --renew-at of each certificate's lifetime (± 10 %
    /// jitter), retry failures with capped backoff, keep the bundle current.
    /// Stops cleanly on SIGTERM or SIGINT.
    #[arg(long)]
    watch: bool,
    /// With --watch: the fraction of the lifetime (counted from when the
    /// certificate arrived, not from its back-dated notBefore) at which to renew.
    #[arg(long, default_value_t = DEFAULT_RENEW_AT, value_parser = parse_fraction, requires = "watch")]
    renew_at: f64,
    /// After each renewal (and bundle change), run `sh -c CMD`; a failure is
    /// logged and watching goes on.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// After each renewal (and bundle change), send signal SIG to PID, e.g. 1234:HUP.
    #[arg(long, value_name = "PID:SIG", value_parser = parse_signal)]
    signal: Option<SignalTarget>,
    /// With --watch: exit (code 4) once the certificate has expired instead of
    /// retrying (an expired certificate cannot renew itself; issue a new one).
    #[arg(long, requires = "watch")]
    exit_on_expiry: bool,
}

/// A process to signal after each renewal.
#[derive(Clone, Debug)]
pub struct SignalTarget {
    pid: u32,
    signal: String,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.01..=0.95).contains(&f) => Ok(f),
        _ => Err(format!(
            "{s:?}: a fraction of the lifetime from 0.01 to 0.95"
        )),
    }
}

fn parse_signal(s: &str) -> Result<SignalTarget, String> {
    let bad = || format!("{s:?}: expected PID:SIGNAL, e.g. 1234:HUP");
    let (pid, sig) = s.split_once(':').ok_or_else(bad)?;
    let pid = pid.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    let sig = sig.to_ascii_uppercase();
    let sig = sig.trim_start_matches("SIG").to_owned();
    if sig.is_empty() || !sig.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad());
    }
    Ok(SignalTarget { pid, signal: sig })
}

/// Why a renewal failed. Each kind has the exit code of the CLI's scheme.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// A flag is missing or contradicts another.
    #[error("{0}")]
    Usage(String),
    /// An input file is unreadable or malformed.
    #[error("{flag} {}: {reason}", path.display())]
    File {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is not the certificate's key.
    #[error("--key {} does not match the certificate in --cert {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate has expired: it can no longer authenticate a renewal.
    #[error(
        "certificate {serial} expired at {}: it cannot renew itself; issue a new one (tessera cert issue)",
        rfc3339(*not_after)
    )]
    Expired {
        /// Its serial.
        serial: String,
        /// Its notAfter, unix seconds.
        not_after: i64,
    },
    /// The CA refused the renewal for good (revoked, entry deleted, invalid request).
    #[error("renewal refused: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem's title, code and detail.
        message: String,
    },
    /// The CA could not be reached or failed; worth retrying.
    #[error("CA unreachable or failing: {0}")]
    Unavailable(String),
    /// Writing the new files failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Something local went wrong (key generation, a CA answer we cannot use).
    #[error("{0}")]
    Local(String),
}

impl RenewError {
    /// The process exit code (see the CLI's header doc).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) | Self::File { .. } | Self::KeyMismatch { .. } => 2,
            Self::Refused { status: 400, .. } => 2,
            Self::Refused { status: 404, .. } => 3,
            Self::Refused { .. } | Self::Expired { .. } => 4,
            Self::Unavailable(_) => 5,
            Self::Write { .. } | Self::Local(_) => 1,
        }
    }

    /// Whether trying again later could succeed.
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Where the certificate, key, bundle (and optionally chain) files live.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    bundle: PathBuf,
    chain: Option<PathBuf>,
}

impl Files {
    fn resolve(
        args: &RenewArgs,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Self, RenewError> {
        match (&args.cert_dir, cert, key) {
            (Some(dir), None, None) => Ok(Files {
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
                bundle: args.bundle.clone().unwrap_or_else(|| dir.join("bundle.pem")),
                chain: Some(dir.join("chain.pem")),
            }),
            (Some(_), _, _) => Err(RenewError::Usage(
                "give --cert-dir or --cert and --key, not both".into(),
            )),
            (None, Some(cert), Some(key)) => Ok(Files {
                cert,
                key,
                bundle: args.bundle.clone().ok_or_else(|| {
                    RenewError::Usage(
                        "--bundle: the trust bundle file is required (it verifies the CA and is kept current)"
                            .into(),
                    )
                })?,
                chain: None,
            }),
            (None, _, _) => Err(RenewError::Usage(
                "give --cert FILE and --key FILE (the certificate and key to renew), or --cert-dir DIR"
                    .into(),
            )),
        }
    }
}

/// The certificate currently on disk and what renewal needs to know about it.
struct Current {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    bundle: Vec<CertificateDer<'static>>,
    spiffe_id: String,
    serial: String,
    not_after: i64,
    /// Where its lifetime starts for renewal timing: when it arrived. The CA
    /// back-dates notBefore by its clock-skew margin, so counting from
    /// notBefore would renew early and, for lifetimes near the skew, at once.
    start: i64,
}

impl Current {
    fn client(&self, server: &str) -> Result<Client, RenewError> {
        let tls = tessera_core::tls::api_client_config(
            &self.bundle,
            Some((self.chain.clone(), self.key.clone_key())),
            false,
        )
        .map_err(|e| RenewError::Local(e.to_string()))?;
        Client::new(server, tls, None).map_err(|e| RenewError::Usage(format!("--server: {e}")))
    }

    fn expired(&self) -> bool {
        self.not_after <= tessera_core::now_unix()
    }

    fn expired_error(&self) -> RenewError {
        RenewError::Expired {
            serial: self.serial.clone(),
            not_after: self.not_after,
        }
    }
}

fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, RenewError> {
    std::fs::read(path).map_err(|e| RenewError::File {
        flag,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads and cross-checks the files; nothing here contacts the CA.
fn load(files: &Files) -> Result<Current, RenewError> {
    let bad = |flag, path: &Path, reason: String| RenewError::File {
        flag,
        path: path.to_owned(),
        reason,
    };
    let chain = tessera_core::pem::certs(&read_file("--cert", &files.cert)?)
        .map_err(|e| bad("--cert", &files.cert, e.to_string()))?;
    let key = tessera_core::pem::private_key(&read_file("--key", &files.key)?)
        .map_err(|e| bad("--key", &files.key, e.to_string()))?;
    let bundle = tessera_core::pem::certs(&read_file("--bundle", &files.bundle)?)
        .map_err(|e| bad("--bundle", &files.bundle, e.to_string()))?;
    let info = tessera_core::svid::check_leaf(&chain[0])
        .map_err(|e| bad("--cert", &files.cert, format!("not an X.509-SVID: {e}")))?;
    match tessera_core::tls::certified_key(chain.clone(), key.clone_key()) {
        Ok(_) => {}
        Err(tessera_core::tls::TlsError::Rustls(rustls::Error::InconsistentKeys(_))) => {
            return Err(RenewError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }
        Err(e) => return Err(bad("--key", &files.key, e.to_string())),
    }
    // The file's modification time stands for when it arrived: `cert issue`
    // and this command write it on receipt.
    let written = std::fs::metadata(&files.cert)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(info.not_before);
    Ok(Current {
        chain,
        key,
        bundle,
        spiffe_id: info.spiffe_id.to_string(),
        serial: info.serial,
        not_after: info.not_after,
        start: written.clamp(info.not_before, info.not_after),
    })
}

/// The CA's problem answer as one line, and whether to give up on it.
fn refusal(status: hyper::StatusCode, body: &[u8]) -> RenewError {
    let message = match serde_json::from_slice::<Problem>(body) {
        Ok(p) => format!("{} ({}): {}", p.title, p.code, p.detail.unwrap_or_default()),
        Err(_) => format!("server answered {status}"),
    };
    match status.as_u16() {
        // The CA has decided about this certificate or request; asking again
        // will not change its mind.
        s @ (400 | 401 | 403 | 404) => RenewError::Refused { status: s, message },
        _ => RenewError::Unavailable(message),
    }
}

/// Renews `cur` once and replaces the files. Returns the new state and the CA's answer.
async fn renew_once(
    server: &str,
    files: &Files,
    cur: &Current,
    key_type: KeyType,
) -> Result<(Current, IssuedCertificate), RenewError> {
    if cur.expired() {
        // The CA's TLS layer would refuse an expired client certificate at
        // the handshake, which reads like an outage; say what it is.
        return Err(cur.expired_error());
    }
    let client = cur.client(server)?;
    let (key, csr) = csr_for(key_type).map_err(|e| RenewError::Local(e.to_string()))?;
    let body =
        serde_json::to_vec(&RenewRequest { csr }).map_err(|e| RenewError::Local(e.to_string()))?;
    let reply = client
        .call(Method::POST, "/v1/certs/renew", Some(body))
        .await
        .map_err(|e| RenewError::Unavailable(e.to_string()))?;
    if !reply.status.is_success() {
        return Err(refusal(reply.status, &reply.body));
    }
    let issued: IssuedCertificate = serde_json::from_slice(&reply.body)
        .map_err(|e| RenewError::Local(format!("the CA's answer: {e}")))?;
    let unusable =
        |e: &dyn std::fmt::Display| RenewError::Local(format!("issued certificate: {e}"));
    let mut chain =
        tessera_core::pem::certs(issued.certificate.as_bytes()).map_err(|e| unusable(&e))?;
    if !issued.chain.trim().is_empty() {
        chain.extend(tessera_core::pem::certs(issued.chain.as_bytes()).map_err(|e| unusable(&e))?);
    }
    let bundle = tessera_core::pem::certs(issued.bundle.as_bytes()).map_err(|e| unusable(&e))?;
    let info = tessera_core::svid::check_leaf(&chain[0]).map_err(|e| unusable(&e))?;
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Never put a certificate on disk beside a key it does not belong to.
    tessera_core::tls::certified_key(chain.clone(), key_der.clone_key())
        .map_err(|e| unusable(&e))?;
    let cert_pem = format!("{}{}", issued.certificate, issued.chain);
    let mut writes: Vec<(&Path, &[u8], u32)> =
        vec![(&files.bundle, issued.bundle.as_bytes(), 0o644)];
    if let Some(chain_file) = &files.chain {
        writes.push((chain_file, issued.chain.as_bytes(), 0o644));
    }
    let key_pem = key.serialize_pem();
    writes.push((&files.key, key_pem.as_bytes(), 0o600));
    writes.push((&files.cert, cert_pem.as_bytes(), 0o644));
    replace_files(&writes)?;
    let now = tessera_core::now_unix();
    Ok((
        Current {
            chain,
            key: key_der,
            bundle,
            spiffe_id: info.spiffe_id.to_string(),
            serial: info.serial,
            not_after: info.not_after,
            start: now.clamp(info.not_before, info.not_after),
        },
        issued,
    ))
}

/// Writes every file to a temporary sibling, then renames them in the order
/// given (see the module doc for why the certificate goes last). On a write
/// failure nothing has been replaced.
fn replace_files(files: &[(&Path, &[u8], u32)]) -> Result<(), RenewError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp_of = |path: &Path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
    };
    let mut written: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    let write = |path: &Path, data: &[u8], mode: u32| -> std::io::Result<PathBuf> {
        let tmp = tmp_of(path);
        let _ = std::fs::remove_file(&tmp);
        // Created with its final mode: a key is never readable by others, not
        // even for a moment (the umask can only narrow it).
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        Ok(tmp)
    };
    for (path, data, mode) in files {
        match write(path, data, *mode) {
            Ok(tmp) => written.push((tmp, path)),
            Err(source) => {
                let _ = std::fs::remove_file(tmp_of(path));
                for (tmp, _) in &written {
                    let _ = std::fs::remove_file(tmp);
                }
                return Err(RenewError::Write {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    for (tmp, path) in &written {
        std::fs::rename(tmp, path).map_err(|source| RenewError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    // Make the renames durable too, not only the contents.
    let mut dirs: Vec<&Path> = files
        .iter()
        .map(|(p, _, _)| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        })
        .collect();
    dirs.dedup();
    for d in dirs {
        if let Ok(dir) = std::fs::File::open(d) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Runs `tessera cert renew`. `cert`/`key` are the global flags, `server` the
/// resolved CA URL; `json` selects JSON lines on stdout.
pub async fn run(
    args: RenewArgs,
    server: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    json: bool,
) -> Result<(), RenewError> {
    let files = Files::resolve(&args, cert, key)?;
    let cur = load(&files)?;
    if !args.watch {
        let (new, issued) = renew_once(server, &files, &cur, args.key_type).await?;
        report(json, &new, &issued, None);
        notify(&args).await;
        return Ok(());
    }
    watch(args, server, files, cur, json).await
}

/// One line per renewal on stdout; never key material.
fn report(json: bool, new: &Current, issued: &IssuedCertificate, next: Option<i64>) {
    if json {
        let mut v = serde_json::json!({
            "event": "renewed",
            "spiffe_id": new.spiffe_id,
            "serial": new.serial,
            "not_before": issued.not_before,
            "not_after": issued.not_after,
            "attestation_hash": issued.attestation_hash,
        });
        if let Some(at) = next {
            v["next_renewal"] = rfc3339(at).into();
        }
        println!("{v}");
    } else {
        let next = next
            .map(|at| format!(" next_renewal={}", rfc3339(at)))
            .unwrap_or_default();
        println!(
            "renewed spiffe_id={} serial={} not_after={}{next}",
            new.spiffe_id, new.serial, issued.not_after
        );
    }
}

fn log(level: &str, msg: std::fmt::Arguments<'_>) {
    eprintln!("{} {level}: {msg}", rfc3339(tessera_core::now_unix()));
}

/// When to renew `cur`: at `fraction` of its lifetime ± jitter.
fn renewal_time(cur: &Current, fraction: f64) -> i64 {
    let life = (cur.not_after - cur.start).max(1) as f64;
    let at = cur.start as f64 + life * fraction * (1.0 + JITTER * (2.0 * unit_random() - 1.0));
    (at as i64).clamp(cur.start, cur.not_after)
}

/// A number in [0, 1) good enough for jitter (not for secrets): std's
/// randomly keyed hasher spares a dependency.
fn unit_random() -> f64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let h = std::collections::hash_map::RandomState::new().hash_one(nanos);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn secs_until(at: i64) -> Duration {
    Duration::from_secs(u64::try_from(at - tessera_core::now_unix()).unwrap_or(0))
}

/// Resolves on SIGTERM or SIGINT.
struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn new() -> Result<Self, RenewError> {
        use tokio::signal::unix::{SignalKind, signal};
        let h = |k| signal(k).map_err(|e| RenewError::Local(format!("signal handler: {e}")));
        Ok(Self {
            term: h(SignalKind::terminate())?,
            int: h(SignalKind::interrupt())?,
        })
    }

    /// Sleeps for `d`; false if a shutdown signal came first.
    async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.term.recv() => false,
            _ = self.int.recv() => false,
        }
    }
}

async fn watch(
    args: RenewArgs,
    server: &str,
    files: Files,
    mut cur: Current,
    json: bool,
) -> Result<(), RenewError> {
    let mut stop = Shutdown::new()?;
    let mut etag: Option<String> = None;
    loop {
        let due = renewal_time(&cur, args.renew_at);
        log(
            "info",
            format_args!(
                "holding serial={} not_after={}; renewing at {}",
                cur.serial,
                rfc3339(cur.not_after),
                rfc3339(due)
            ),
        );
        // Sleep until due, looking for a newer bundle now and then.
        while tessera_core::now_unix() < due {
            if !stop.sleep(secs_until(due).min(BUNDLE_POLL)).await {
                return stopped();
            }
            if tessera_core::now_unix() < due {
                match refresh_bundle(server, &files, &mut cur, &mut etag).await {
                    Ok(true) => notify(&args).await,
                    Ok(false) => {}
                    Err(e) => log("warning", format_args!("bundle refresh failed: {e}")),
                }
            }
        }
        let life = Duration::from_secs(u64::try_from(cur.not_after - cur.start).unwrap_or(0));
        let cap = (life / 10).clamp(RETRY_MIN, RETRY_MAX);
        let mut delay = RETRY_MIN;
        loop {
            let attempt = tokio::select! {
                r = renew_once(server, &files, &cur, args.key_type) => r,
                _ = stop.term.recv() => return stopped(),
                _ = stop.int.recv() => return stopped(),
            };
            match attempt {
                Ok((new, issued)) => {
                    report(json, &new, &issued, Some(renewal_time(&new, args.renew_at)));
                    cur = new;
                    etag = None;
                    notify(&args).await;
                    break;
                }
                Err(RenewError::Expired { serial, not_after }) => {
                    if args.exit_on_expiry {
                        return Err(RenewError::Expired { serial, not_after });
                    }
                    log(
                        "ERROR",
                        format_args!(
                            "certificate serial={serial} EXPIRED at {}; it cannot renew itself: issue a new one; retrying in {}s",
                            rfc3339(not_after),
                            delay.as_secs()
                        ),
                    );
                }
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => log(
                    "warning",
                    format_args!(
                        "renewal failed: {e}; retrying in {}s; the current certificate is valid until {}",
                        delay.as_secs(),
                        rfc3339(cur.not_after)
                    ),
                ),
            }
            if !stop.sleep(delay).await {
                return stopped();
            }
            delay = (delay * 2).min(cap);
        }
    }
}

fn stopped() -> Result<(), RenewError> {
    log("info", format_args!("stopping on signal"));
    Ok(())
}

/// Conditional GET of the bundle; rewrites the file when its anchors change.
async fn refresh_bundle(
    server: &str,
    files: &Files,
    cur: &mut Current,
    etag: &mut Option<String>,
) -> Result<bool, RenewError> {
    let reply = cur
        .client(server)?
        .get_if_none_match("/v1/bundle", etag.as_deref())
        .await
        .map_err(|e| RenewError::Unavailable(e.to_string()))?;
    if reply.status == hyper::StatusCode::NOT_MODIFIED {
        return Ok(false);
    }
    if !reply.status.is_success() {
        return Err(refusal(reply.status, &reply.body));
    }
    let bundle = tessera_core::pem::certs(&reply.body)
        .map_err(|e| RenewError::Local(format!("the CA's bundle: {e}")))?;
    *etag = reply.etag;
    if bundle == cur.bundle {
        return Ok(false);
    }
    replace_files(&[(&files.bundle, &reply.body, 0o644)])?;
    log(
        "info",
        format_args!("trust bundle updated: {} anchor(s)", bundle.len()),
    );
    cur.bundle = bundle;
    Ok(true)
}

/// Tells the workload its files changed: `--exec`, then `--signal`. Failures
/// are logged, never fatal: the files are renewed either way.
async fn notify(args: &RenewArgs) {
    if let Some(cmd) = &args.exec {
        let c = cmd.clone();
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new("sh").arg("-c").arg(&c).status()
        })
        .await;
        match status {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => log("warning", format_args!("--exec {cmd:?} exited with {s}")),
            Ok(Err(e)) => log("warning", format_args!("--exec {cmd:?}: {e}")),
            Err(e) => log("warning", format_args!("--exec {cmd:?}: {e}")),
        }
    }
    if let Some(t) = &args.signal {
        // The `kill` command keeps the workspace free of unsafe code.
        let (pid, sig) = (t.pid.to_string(), t.signal.clone());
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new("kill")
                .args(["-s", &sig, &pid])
                .status()
        })
        .await;
        match status {
            Ok(Ok(s)) if s.success() => {}
            other => log(
                "warning",
                format_args!("--signal {}:{}: {other:?}", t.pid, t.signal),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_targets() {
        let t = parse_signal("1234:HUP").unwrap();
        assert_eq!((t.pid, t.signal.as_str()), (1234, "HUP"));
        assert_eq!(parse_signal("7:sigusr1").unwrap().signal, "USR1");
        assert_eq!(parse_signal("7:15").unwrap().signal, "15");
        for bad in ["HUP", "0:HUP", "x:HUP", "1:", "1:H;UP"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fractions() {
        assert!(parse_fraction("0.6667").is_ok());
        assert!(parse_fraction("0").is_err());
        assert!(parse_fraction("1").is_err());
    }

    #[test]
    fn renewal_counts_from_arrival_with_jitter() {
        let cur = Current {
            chain: vec![],
            key: PrivateKeyDer::Pkcs8(vec![].into()),
            bundle: vec![],
            spiffe_id: String::new(),
            serial: String::new(),
            not_after: 1_000 + 60,
            start: 1_000,
        };
        for _ in 0..100 {
            let at = renewal_time(&cur, 0.6667);
            assert!((1_036..=1_044).contains(&at), "{at}");
        }
    }
}
