//! `tessera cert renew`: keeps certificate files on disk renewed over mTLS with
//! a new key each time, once or (`--watch`) for as long as it runs. This is
//! the step-ca `renew --daemon` use case: workloads without a sidecar.
//!
//! Renewal authenticates with the current certificate (`POST /v1/certs/renew`);
//! the new key is generated here, in memory, and only ever written to the key
//! file (mode 0600). The trust bundle file is refreshed with each renewal and,
//! while watching, by conditional GET of `/v1/bundle` in between.
//!
//! Keys, the SVID, renewal timing, the file writer and the CA client are
//! `tessera-workload`'s.
//!
//! # How files are replaced
//!
//! As one `tessera_workload::PemSet`: every file is written to a temporary
//! file in its own directory (the key's created 0600, never wider), flushed
//! to disk, and renamed over the old one, so a reader never sees half a
//! file; the renames go bundle, chain, key, **cert last**: the certificate
//! file is the commit point. A reader that reloads when `--exec`/`--signal`
//! fires (they run after the last rename), or when the certificate file
//! changes, always sees a matching pair.

use crate::cert::KeyType;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tessera_core::api::{IssuedCertificate, RenewRequest};
use tessera_core::time::rfc3339;
use tessera_workload::{
    CaClient, CaError, Identity, Lifetime, PemFile, PemSet, PrivateKey, Refusal, RenewalPolicy,
    Svid, SvidParseError, WriteError, new_key_and_csr,
};

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

impl From<WriteError> for RenewError {
    fn from(e: WriteError) -> Self {
        RenewError::Write {
            path: e.path,
            source: e.source,
        }
    }
}

/// The renewal policy of `--watch`: at `renew_at` of the lifetime (from
/// arrival) ± [`JITTER`] of that wait; retries from [`RETRY_MIN`] doubling
/// up to a tenth of the lifetime, within [`RETRY_MIN`]..[`RETRY_MAX`].
fn policy(renew_at: f64) -> RenewalPolicy {
    RenewalPolicy::at(renew_at)
        .jitter(JITTER)
        .retry(RETRY_MIN, RETRY_MAX)
        .retry_within(0.1)
}

/// A CA client authenticating with `cur`'s certificate.
fn client(server: &str, cur: &Identity) -> Result<CaClient, RenewError> {
    CaClient::new(server, &cur.bundle, Some(&cur.svid)).map_err(|e| match e {
        CaError::Url(_) => RenewError::Usage(format!("--server: {e}")),
        other => RenewError::Local(other.to_string()),
    })
}

fn expired_error(cur: &Identity) -> RenewError {
    RenewError::Expired {
        serial: cur.svid.serial().to_owned(),
        not_after: cur.svid.not_after(),
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
fn load(files: &Files) -> Result<Identity, RenewError> {
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
    // The file's modification time stands for when it arrived: `cert issue`
    // and this command write it on receipt (renewal timing counts from
    // there, within the certificate's validity).
    let written = std::fs::metadata(&files.cert)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MIN);
    let svid =
        Svid::new(chain, Arc::new(PrivateKey::from_der(&key)), written).map_err(|e| match e {
            SvidParseError::KeyMismatch => RenewError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            },
            SvidParseError::Key(reason) => bad("--key", &files.key, reason),
            other => bad("--cert", &files.cert, other.to_string()),
        })?;
    Ok(Identity { svid, bundle })
}

/// The CA's problem answer as one line, and whether to give up on it.
fn refusal(r: &Refusal) -> RenewError {
    let message = match &r.problem {
        Some(p) => format!(
            "{} ({}): {}",
            p.title,
            p.code,
            p.detail.as_deref().unwrap_or_default()
        ),
        None => format!(
            "server answered {}",
            hyper::StatusCode::from_u16(r.status)
                .map(|s| s.to_string())
                .unwrap_or_else(|_| r.status.to_string())
        ),
    };
    match r.status {
        // The CA has decided about this certificate or request; asking again
        // will not change its mind.
        s @ (400 | 401 | 403 | 404) => RenewError::Refused { status: s, message },
        _ => RenewError::Unavailable(message),
    }
}

/// A failed call as the CLI reports it.
fn ca_error(e: CaError) -> RenewError {
    match e {
        CaError::Refused(r) => refusal(&r),
        CaError::Unreachable(why) => RenewError::Unavailable(why),
        other => RenewError::Local(other.to_string()),
    }
}

/// Renews `cur` once and replaces the files. Returns the new state and the CA's answer.
async fn renew_once(
    server: &str,
    files: &Files,
    cur: &Identity,
    key_type: KeyType,
) -> Result<(Identity, IssuedCertificate), RenewError> {
    if cur.svid.expired() {
        // The CA's TLS layer would refuse an expired client certificate at
        // the handshake, which reads like an outage; say what it is.
        return Err(expired_error(cur));
    }
    let client = client(server, cur)?;
    let (key, csr) =
        new_key_and_csr(key_type.into()).map_err(|e| RenewError::Local(e.to_string()))?;
    // The issued certificate is checked against the new key: never a
    // certificate on disk beside a key it does not belong to.
    let issued = client
        .issue("/v1/certs/renew", &RenewRequest { csr }, key)
        .await
        .map_err(ca_error)?;
    let answer = &issued.answer;
    let cert_pem = format!("{}{}", answer.certificate, answer.chain);
    let key_pem = issued.identity.svid.key().to_pem();
    PemSet {
        bundle: Some(PemFile::public(&files.bundle, answer.bundle.as_bytes())),
        chain: files
            .chain
            .as_deref()
            .map(|c| PemFile::public(c, answer.chain.as_bytes())),
        key: Some(PemFile::private(&files.key, key_pem.as_bytes())),
        cert: Some(PemFile::public(&files.cert, cert_pem.as_bytes())),
    }
    .write()?;
    Ok((issued.identity, issued.answer))
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
fn report(json: bool, new: &Identity, issued: &IssuedCertificate, next: Option<i64>) {
    let (spiffe_id, serial) = (new.svid.spiffe_id(), new.svid.serial());
    if json {
        let mut v = serde_json::json!({
            "event": "renewed",
            "spiffe_id": spiffe_id,
            "serial": serial,
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
            "renewed spiffe_id={spiffe_id} serial={serial} not_after={}{next}",
            issued.not_after
        );
    }
}

fn log(level: &str, msg: std::fmt::Arguments<'_>) {
    eprintln!("{} {level}: {msg}", rfc3339(tessera_core::now_unix()));
}

/// When to renew a certificate with lifetime `life`: at `fraction` of it ± jitter.
fn renewal_time(life: Lifetime, fraction: f64) -> i64 {
    policy(fraction).renew_at_secs(life)
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
    mut cur: Identity,
    json: bool,
) -> Result<(), RenewError> {
    let mut stop = Shutdown::new()?;
    let mut etag: Option<String> = None;
    loop {
        let due = renewal_time(cur.svid.lifetime(), args.renew_at);
        log(
            "info",
            format_args!(
                "holding serial={} not_after={}; renewing at {}",
                cur.svid.serial(),
                rfc3339(cur.svid.not_after()),
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
        let mut retry = policy(args.renew_at).backoff(cur.svid.lifetime());
        loop {
            let delay = retry.next_delay();
            let attempt = tokio::select! {
                r = renew_once(server, &files, &cur, args.key_type) => r,
                _ = stop.term.recv() => return stopped(),
                _ = stop.int.recv() => return stopped(),
            };
            match attempt {
                Ok((new, issued)) => {
                    let next = renewal_time(new.svid.lifetime(), args.renew_at);
                    report(json, &new, &issued, Some(next));
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
                        rfc3339(cur.svid.not_after())
                    ),
                ),
            }
            if !stop.sleep(delay).await {
                return stopped();
            }
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
    cur: &mut Identity,
    etag: &mut Option<String>,
) -> Result<bool, RenewError> {
    let reply = client(server, cur)?
        .get_if_none_match("/v1/bundle", etag.as_deref())
        .await
        .map_err(ca_error)?;
    if reply.status == hyper::StatusCode::NOT_MODIFIED {
        return Ok(false);
    }
    let reply_etag = reply.etag();
    let body = tessera_workload::success(reply).map_err(ca_error)?;
    let bundle = tessera_core::pem::certs(&body)
        .map_err(|e| RenewError::Local(format!("the CA's bundle: {e}")))?;
    *etag = reply_etag;
    if bundle == cur.bundle {
        return Ok(false);
    }
    PemFile::public(&files.bundle, &body).write()?;
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
        let life = Lifetime {
            start: 1_000,
            not_after: 1_000 + 60,
        };
        for _ in 0..100 {
            let at = renewal_time(life, 0.6667);
            assert!((1_036..=1_044).contains(&at), "{at}");
        }
    }
}
