//! Webhooks: registration (URL and trust checks, the signing secret sealed
//! under the KEK), signing, and the deliverer.
//!
//! The deliverer runs on one replica at a time (the `webhooks` lease row,
//! renewed every third of `webhooks.lease_seconds`, taken over when it lapses).
//! Each webhook has its own task that tails the audit log from the webhook's
//! cursor, so a slow or dead receiver only delays its own deliveries, and the
//! API never waits on any receiver. Events go out in order, at least once:
//! each attempt is recorded, and the cursor moves (with a conditional UPDATE,
//! in the same transaction) only after a 2xx answer or the last failed attempt.
//!
//! Signature: `Tessera-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"`, keyed with the secret's text.

use crate::authority::{Authority, AuthorityError, Principal, not_found};
use crate::store::{DeliveryState, WebhookRow};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header;
use hyper_util::rt::TokioIo;
use ring::hmac;
use rustls::pki_types::ServerName;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_core::api::{self, DeliveryOutcome, Event};
use tessera_core::now_unix;
use tessera_core::time::rfc3339;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

/// Longest webhook URL, bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Largest `ca_pem`, bytes.
pub const MAX_CA_PEM_BYTES: usize = 32 * 1024;
/// Longest description, bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// The lease the delivering replica holds.
pub const LEASE: &str = "webhooks";

/// A receiver URL that passed the checks: `https`, a host, no user
/// information, no fragment, at most [`MAX_URL_BYTES`].
#[derive(Debug, Clone)]
pub struct WebhookUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (443 unless given).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
    server_name: ServerName<'static>,
}

impl WebhookUrl {
    /// Parses and checks a receiver URL; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.len() > MAX_URL_BYTES {
            return Err(format!("at most {MAX_URL_BYTES} bytes"));
        }
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') || !url.is_ascii() {
            return Err("must be ASCII without spaces or control characters".into());
        }
        let lower = url.to_ascii_lowercase();
        let rest = match lower.strip_prefix("https://") {
            Some(_) => &url["https://".len()..],
            None if lower.starts_with("http://") => {
                return Err(
                    "must be https:// (plain http is refused: events and their signatures would travel in clear)"
                        .into(),
                );
            }
            None => return Err("must be an https:// URL".into()),
        };
        if rest.contains('#') {
            return Err("must not have a fragment".into());
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err("must not carry user information (user:password@)".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| "unclosed [ in the host".to_string())?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| "junk after ] in the host".to_string())?,
                    ),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("must name a host".into());
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port {p:?} is not 1 to 65535"))?,
        };
        let host = host.to_ascii_lowercase();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| format!("host {host:?} is not a DNS name or IP address"))?;
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Self {
            host,
            port,
            path,
            server_name,
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The `Tessera-Signature` value for `body` sent at unix time `t`:
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// The AEAD label binding a sealed secret to its webhook.
fn seal_label(id: &str) -> String {
    format!("webhook:{id}")
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AuthorityError {
    AuthorityError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Authority {
    /// Registers a webhook; the answer carries its signing secret, the only
    /// time it is shown.
    pub async fn create_webhook(
        &self,
        req: &api::WebhookCreateRequest,
        actor: &Principal,
    ) -> Result<api::WebhookCreated, AuthorityError> {
        let url = WebhookUrl::parse(&req.url).map_err(|e| invalid("url", e))?;
        if req.kinds.is_empty() {
            return Err(invalid("kinds", "at least one event kind"));
        }
        let mut kinds = Vec::new();
        for k in &req.kinds {
            if !kinds.contains(k) {
                kinds.push(*k);
            }
        }
        if let Some(pem) = &req.ca_pem {
            if pem.len() > MAX_CA_PEM_BYTES {
                return Err(invalid(
                    "ca_pem",
                    format!("at most {MAX_CA_PEM_BYTES} bytes"),
                ));
            }
            let anchors = tessera_core::pem::certs(pem.as_bytes())
                .map_err(|e| invalid("ca_pem", e.to_string()))?;
            tessera_core::tls::webpki_client_config(&anchors, None, false)
                .map_err(|e| invalid("ca_pem", e.to_string()))?;
        }
        if let Some(d) = &req.description
            && (d.len() > MAX_DESCRIPTION_BYTES || d.chars().any(char::is_control))
        {
            return Err(invalid(
                "description",
                format!("at most {MAX_DESCRIPTION_BYTES} bytes, no control characters"),
            ));
        }
        let id = crate::ca::random_id()?;
        let secret = hex::encode(crate::ca::random_bytes::<32>()?);
        let row = WebhookRow {
            id: id.clone(),
            url: req.url.clone(),
            kinds: kinds.clone(),
            ca_pem: req.ca_pem.clone(),
            description: req.description.clone(),
            secret_sealed: self.kek.seal(&seal_label(&id), secret.as_bytes())?,
            created_by: actor.audit_name(),
            created_at: now_unix(),
            last_event_id: 0,
            attempts: 0,
            next_attempt_ms: 0,
        };
        let audit = actor.audit(
            "webhook.create",
            id.clone(),
            json!({
                "host": url.host,
                "kinds": kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "private_ca": req.ca_pem.is_some(),
            }),
        );
        let stored = self
            .store
            .create_webhook(&row, self.cfg.webhooks.max_webhooks, audit)
            .await?;
        Ok(api::WebhookCreated {
            webhook: stored.to_api(),
            secret,
        })
    }

    /// Lists webhooks (never their secrets).
    pub async fn list_webhooks(&self) -> Result<Vec<api::Webhook>, AuthorityError> {
        Ok(self
            .store
            .list_webhooks(self.cfg.webhooks.max_webhooks.max(1))
            .await?
            .iter()
            .map(WebhookRow::to_api)
            .collect())
    }

    /// Deletes a webhook and its delivery log.
    pub async fn delete_webhook(&self, id: &str, actor: &Principal) -> Result<(), AuthorityError> {
        let audit = actor.audit("webhook.delete", id.to_owned(), json!({}));
        self.store
            .delete_webhook(id, audit)
            .await
            .map_err(not_found("webhook"))
    }

    /// A webhook's delivery attempts, newest first.
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        limit: i64,
    ) -> Result<Vec<api::WebhookDelivery>, AuthorityError> {
        self.store
            .get_webhook(id)
            .await
            .map_err(not_found("webhook"))?;
        Ok(self.store.list_deliveries(id, limit).await?)
    }
}

/// Delay before attempt `failed + 1`, after `failed` failed attempts (from 1):
/// `retry_base_ms` doubled each time, capped at `retry_max_ms`.
pub fn backoff_ms(cfg: &crate::config::WebhooksConfig, failed: i64) -> i64 {
    let shift = (failed - 1).clamp(0, 30) as u32;
    cfg.retry_base_ms
        .saturating_mul(1i64 << shift)
        .min(cfg.retry_max_ms)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the deliverer (until dropped): holds the lease, keeps one task per
/// webhook while it does, stops them all when it loses it.
pub async fn run_deliverer(auth: Arc<Authority>) {
    // The lease holder's ID must be unique among replicas: wait for the RNG
    // rather than share a predictable one.
    let holder = loop {
        match crate::ca::random_id() {
            Ok(id) => break id,
            Err(e) => {
                tracing::error!(error = %e, "webhook deliverer waits for randomness");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let lease_ms = auth.cfg.webhooks.lease_seconds * 1000;
    let renew_every = Duration::from_millis((lease_ms / 3) as u64);
    let mut tip = auth.store.audit_watch();
    let mut tick = tokio::time::interval(renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut running: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut held = false;
    let mut renewed = Instant::now();
    let mut first = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = tip.changed() => if r.is_err() { return },
            Some(_) = tasks.join_next() => {}
        }
        if first || renewed.elapsed() >= renew_every {
            first = false;
            renewed = Instant::now();
            let was = held;
            held = match auth.store.lease(LEASE, &holder, now_ms(), lease_ms).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook lease renewal failed");
                    false
                }
            };
            if held != was {
                tracing::info!(held, "webhook delivery lease");
            }
        }
        if !held {
            tasks.abort_all();
            running.clear();
            continue;
        }
        let hooks = match auth
            .store
            .list_webhooks(auth.cfg.webhooks.max_webhooks.max(1))
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "listing webhooks failed");
                continue;
            }
        };
        running.retain(|id, handle| {
            let keep = !handle.is_finished() && hooks.iter().any(|h| &h.id == id);
            if !keep {
                handle.abort();
            }
            keep
        });
        for hook in hooks {
            if running.contains_key(&hook.id) {
                continue;
            }
            let id = hook.id.clone();
            let handle = tasks.spawn(deliver_hook(auth.clone(), hook));
            running.insert(id, handle);
        }
        // Coalesce bursts of audit writes into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How often a webhook with nothing to deliver saves how far it has scanned.
const SAVE_SCAN_EVERY: Duration = Duration::from_secs(10);

/// Delivers one webhook's events in order until it is deleted or its task is
/// stopped (lease lost).
async fn deliver_hook(auth: Arc<Authority>, hook: WebhookRow) {
    let cfg = auth.cfg.webhooks.clone();
    let secret = match auth
        .kek
        .open(&seal_label(&hook.id), &hook.secret_sealed)
        .ok()
        .and_then(|s| String::from_utf8(s.to_vec()).ok())
    {
        Some(s) => zeroize::Zeroizing::new(s),
        None => {
            tracing::error!(webhook = %hook.id, "webhook secret does not open (wrong KEK?)");
            // Retried when the deliverer next lists webhooks.
            tokio::time::sleep(Duration::from_secs(cfg.lease_seconds as u64)).await;
            return;
        }
    };
    let url = WebhookUrl::parse(&hook.url);
    let tls = client_config(&hook, &cfg.system_roots_file);
    let mut state = DeliveryState {
        last_event_id: hook.last_event_id,
        attempts: hook.attempts,
        next_attempt_ms: hook.next_attempt_ms,
    };
    // How far the log has been scanned with nothing to deliver; saved now and then.
    let mut scanned = state.last_event_id;
    let mut saved_at = Instant::now();
    let mut tip = auth.store.audit_watch();
    loop {
        let wait = state.next_attempt_ms - now_ms();
        if state.attempts > 0 && wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let head = *tip.borrow_and_update();
        let upto = head.min(scanned.saturating_add(crate::events::SCAN_WINDOW));
        let records = if scanned < upto {
            match auth
                .store
                .event_records(scanned, upto, &hook.kinds, 1)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(webhook = %hook.id, error = %e, "reading events failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        } else {
            vec![]
        };
        let Some(event) = records.first().and_then(Event::from_audit) else {
            scanned = scanned.max(upto);
            if scanned > state.last_event_id
                && state.attempts == 0
                && (saved_at.elapsed() >= SAVE_SCAN_EVERY || scanned < head)
            {
                let to = DeliveryState {
                    last_event_id: scanned,
                    attempts: 0,
                    next_attempt_ms: 0,
                };
                match auth.store.advance_webhook(&hook.id, state, to, None).await {
                    Ok(true) => state = to,
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(webhook = %hook.id, error = %e, "saving cursor failed")
                    }
                }
                saved_at = Instant::now();
            }
            if scanned >= head {
                tokio::select! {
                    r = tip.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(SAVE_SCAN_EVERY) => {}
                }
            }
            continue;
        };
        let body = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
        let started = Instant::now();
        let result = match (&url, &tls) {
            (Ok(url), Ok(tls)) => {
                let sig = signature(&secret, now_unix(), &body);
                post(url, tls.clone(), &event, body, sig, &cfg).await
            }
            (Err(e), _) => Err(format!("url: {e}")),
            (_, Err(e)) => Err(e.clone()),
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let attempt = state.attempts + 1;
        let (outcome, status_code, error) = match result {
            Ok(code) if (200..300).contains(&code) => {
                (DeliveryOutcome::Delivered, Some(code), None)
            }
            Ok(code) => (
                DeliveryOutcome::Retrying,
                Some(code),
                Some(format!("receiver answered {code}")),
            ),
            Err(e) => (DeliveryOutcome::Retrying, None, Some(e)),
        };
        let outcome = if outcome == DeliveryOutcome::Retrying && attempt >= cfg.max_attempts {
            DeliveryOutcome::Failed
        } else {
            outcome
        };
        let to = match outcome {
            DeliveryOutcome::Retrying => DeliveryState {
                last_event_id: state.last_event_id,
                attempts: attempt,
                next_attempt_ms: now_ms() + backoff_ms(&cfg, attempt),
            },
            _ => DeliveryState {
                last_event_id: event.id,
                attempts: 0,
                next_attempt_ms: 0,
            },
        };
        let delivery = api::WebhookDelivery {
            webhook_id: hook.id.clone(),
            event_id: event.id,
            kind: event.kind,
            attempt,
            outcome,
            status_code,
            error,
            duration_ms,
            at: rfc3339(now_unix()),
        };
        auth.metrics.webhook_deliveries.inc(&[outcome.as_str()]);
        match auth
            .store
            .advance_webhook(&hook.id, state, to, Some(&delivery))
            .await
        {
            Ok(true) => {
                state = to;
                scanned = if outcome == DeliveryOutcome::Retrying {
                    event.id - 1
                } else {
                    event.id
                };
                saved_at = Instant::now();
            }
            // Deleted, or another replica moved it on.
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(webhook = %hook.id, error = %e, "recording a delivery failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The TLS configuration for a webhook: its own anchors, or the system's.
fn client_config(
    hook: &WebhookRow,
    system_roots: &str,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = match &hook.ca_pem {
        Some(p) => p.as_bytes().to_vec(),
        None => std::fs::read(system_roots)
            .map_err(|e| format!("system trust anchors {system_roots}: {e}"))?,
    };
    let anchors = tessera_core::pem::certs(&pem).map_err(|e| format!("trust anchors: {e}"))?;
    tessera_core::tls::webpki_client_config(&anchors, None, false)
        .map(Arc::new)
        .map_err(|e| format!("trust anchors: {e}"))
}

/// Aborts the connection task when the attempt ends, whatever way it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One POST of one event; the receiver's status, or what went wrong.
async fn post(
    url: &WebhookUrl,
    tls: Arc<rustls::ClientConfig>,
    event: &Event,
    body: Bytes,
    sig: String,
    cfg: &crate::config::WebhooksConfig,
) -> Result<u16, String> {
    let connect = async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(tls)
            .connect(url.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))
    };
    let stream = tokio::time::timeout(Duration::from_millis(cfg.connect_timeout_ms), connect)
        .await
        .map_err(|_| {
            format!(
                "timeout: not connected within {} ms",
                cfg.connect_timeout_ms
            )
        })??;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let req = hyper::Request::post(url.path.as_str())
        .header(header::HOST, url.host_header())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("tessera-webhook/", env!("CARGO_PKG_VERSION")),
        )
        .header("Tessera-Event-Id", event.id.to_string())
        .header("Tessera-Event-Kind", event.kind.as_str())
        .header("Tessera-Signature", sig)
        .body(Full::new(body))
        .map_err(|e| format!("HTTP: {e}"))?;
    let resp = tokio::time::timeout(
        Duration::from_millis(cfg.response_timeout_ms),
        send.send_request(req),
    )
    .await
    .map_err(|_| format!("timeout: no response within {} ms", cfg.response_timeout_ms))?
    .map_err(|e| format!("HTTP: {e}"))?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = WebhookUrl::parse("https://Hooks.Example.com:8443/a/b?c=d").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("hooks.example.com", 8443, "/a/b?c=d")
        );
        assert_eq!(u.host_header(), "hooks.example.com:8443");
        let u = WebhookUrl::parse("https://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 443));
        assert_eq!(u.host_header(), "[::1]");
        assert_eq!(WebhookUrl::parse("https://h?q").unwrap().path, "/?q");
        for bad in [
            "http://h/",
            "ftp://h/",
            "https://",
            "https:///path",
            "https://user:pw@h/",
            "https://h:0/",
            "https://h:99999/",
            "https://h/#frag",
            "https://h/ x",
            "https://bad_host!/",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://h/{}", "a".repeat(MAX_URL_BYTES));
        assert!(WebhookUrl::parse(&long).is_err());
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // openssl: printf '%s' '1700000000.{}' | openssl dgst -sha256 -hmac k
        let s = signature("k", 1_700_000_000, b"{}");
        assert!(s.starts_with("t=1700000000,v1="), "{s}");
        assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = crate::config::WebhooksConfig {
            retry_base_ms: 100,
            retry_max_ms: 350,
            ..Default::default()
        };
        assert_eq!(
            [1, 2, 3, 4, 50].map(|n| backoff_ms(&cfg, n)),
            [100, 200, 350, 350, 350]
        );
    }
}
