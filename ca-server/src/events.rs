//! Events: the audit records of certificate, CA and node changes, served as a
//! server-sent event stream (`GET /v1/events`) and delivered to webhooks
//! (`crate::webhooks`).
//!
//! An event is an audit record (see [`tessera_core::api::Event::from_audit`]):
//! its ID is the record's sequence number, so events are durable, ordered, the
//! same on every replica, and a client resumes exactly where it stopped with
//! `Last-Event-ID`. Streams wake on the store's audit watch: at once for local
//! commits, within `events.poll_interval_ms` for other replicas' (the poller
//! here). Also here: the expiring-certificate scan, which writes the
//! `cert.expiring` records behind `certificate.expiring`.

use crate::authority::Authority;
use bytes::Bytes;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tessera_core::api::{Event, EventKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Most audit sequence numbers one database read scans, so a stream with a
/// rare kind filter never reads an unbounded range at once.
pub const SCAN_WINDOW: i64 = 10_000;

/// Bounds and shutdown for event streams.
pub struct EventHub {
    streams: Arc<Semaphore>,
    closing: watch::Sender<bool>,
}

/// Every stream slot is taken (`events.max_streams`).
#[derive(Debug, thiserror::Error)]
#[error("too many event streams open (events.max_streams)")]
pub struct TooManyStreams;

impl EventHub {
    /// A hub allowing `max_streams` concurrent streams.
    pub fn new(max_streams: usize) -> Self {
        Self {
            streams: Arc::new(Semaphore::new(max_streams)),
            closing: watch::channel(false).0,
        }
    }

    /// Ends every open stream (server shutdown) and refuses new ones.
    pub fn close(&self) {
        self.streams.close();
        self.closing.send_replace(true);
    }
}

/// What a client asked of a stream.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// Resume after this event ID; None: from now when following, from the
    /// start of the log otherwise.
    pub after: Option<i64>,
    /// Only these kinds (all if empty).
    pub kinds: Vec<EventKind>,
    /// Keep the stream open and send new events as they happen; false: send
    /// what is there now, then end.
    pub follow: bool,
}

struct StreamState {
    auth: Arc<Authority>,
    cursor: i64,
    kinds: Vec<EventKind>,
    follow: bool,
    tip: watch::Receiver<i64>,
    closing: watch::Receiver<bool>,
    heartbeat: tokio::time::Interval,
    _permit: OwnedSemaphorePermit,
}

/// Formats one event as a server-sent event (`id`, `event`, `data` lines).
pub fn sse_frame(out: &mut String, ev: &Event) {
    let data = serde_json::to_string(ev).unwrap_or_default();
    let _ = write!(
        out,
        "id: {}\nevent: {}\ndata: {data}\n\n",
        ev.id,
        ev.kind.as_str()
    );
}

impl Authority {
    /// Opens an event stream: the body of `GET /v1/events`, as chunks of
    /// `text/event-stream`. Refused when `events.max_streams` are open.
    pub fn event_stream(
        self: &Arc<Self>,
        req: StreamRequest,
    ) -> Result<
        impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
        TooManyStreams,
    > {
        let permit = self
            .events
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooManyStreams)?;
        let tip = self.store.audit_watch();
        let cursor = match (req.after, req.follow) {
            (Some(a), _) => a.max(0),
            (None, true) => *tip.borrow(),
            (None, false) => 0,
        };
        let hb = Duration::from_secs(self.cfg.events.heartbeat_seconds);
        let state = StreamState {
            auth: self.clone(),
            cursor,
            kinds: req.kinds,
            follow: req.follow,
            tip,
            closing: self.events.closing.subscribe(),
            heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + hb, hb),
            _permit: permit,
        };
        Ok(futures_util::stream::unfold(state, next_chunk))
    }
}

/// The next chunk of a stream: a page of events, a heartbeat comment, or the end.
async fn next_chunk(mut st: StreamState) -> Option<(Result<Bytes, Infallible>, StreamState)> {
    let page = st.auth.cfg.events.page_size;
    loop {
        if *st.closing.borrow() {
            return None;
        }
        let head = *st.tip.borrow_and_update();
        if st.cursor < head {
            let upto = head.min(st.cursor.saturating_add(SCAN_WINDOW));
            let records = match st
                .auth
                .store
                .event_records(st.cursor, upto, &st.kinds, page)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // The client reconnects with Last-Event-ID and loses nothing.
                    tracing::warn!(error = %e, "event stream: reading the audit log failed");
                    return None;
                }
            };
            st.cursor = match records.last() {
                Some(last) if records.len() as i64 >= page => last.seq,
                _ => upto,
            };
            let mut out = String::new();
            for ev in records.iter().filter_map(Event::from_audit) {
                sse_frame(&mut out, &ev);
            }
            if out.is_empty() {
                continue;
            }
            return Some((Ok(Bytes::from(out)), st));
        }
        if !st.follow {
            return None;
        }
        tokio::select! {
            r = st.tip.changed() => if r.is_err() { return None },
            _ = st.heartbeat.tick() => {
                return Some((Ok(Bytes::from_static(b": keepalive\n\n")), st));
            }
            _ = st.closing.changed() => return None,
        }
    }
}

/// Polls the database for audit records committed by other replicas and
/// announces them to streams and the webhook deliverer (runs until dropped).
pub async fn run_poller(auth: Arc<Authority>) {
    let mut tick = tokio::time::interval(Duration::from_millis(auth.cfg.events.poll_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match auth.store.audit_head().await {
            Ok(seq) => auth.store.note_audit_head(seq),
            Err(e) => tracing::warn!(error = %e, "audit poll failed"),
        }
    }
}

/// Most certificates one expiring-scan transaction reports.
const EXPIRING_BATCH: i64 = 500;

/// Runs the expiring-certificate scan every `events.expiring_scan_seconds`
/// (runs until dropped). Safe on every replica at once: each certificate is
/// reported once, under the audit lock.
pub async fn run_expiring_scan(auth: Arc<Authority>) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(auth.cfg.events.expiring_scan_seconds));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = scan_expiring(&auth).await {
            tracing::warn!(error = %e, "expiring-certificate scan failed");
        }
    }
}

/// One pass of the expiring-certificate scan; returns how many were reported.
pub async fn scan_expiring(auth: &Authority) -> Result<usize, crate::store::StoreError> {
    let window = auth.cfg.events.expiring_window_seconds;
    // No certificate lives longer than the longest lifetime the CA grants, so
    // none can be in its window beyond this.
    let lookahead = if window > 0 {
        window
    } else {
        auth.cfg
            .issuance
            .max_ttl_seconds
            .max(auth.cfg.admin.cert_ttl_seconds)
            / 6
            + 1
    };
    let mut total = 0;
    loop {
        let now = tessera_core::now_unix();
        let found = auth
            .store
            .report_expiring(now, window, lookahead, EXPIRING_BATCH)
            .await?;
        total += found.len();
        if (found.len() as i64) < EXPIRING_BATCH {
            return Ok(total);
        }
    }
}
