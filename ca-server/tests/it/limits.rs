//! Limits and operations: the handshake deadline and the connection cap (and
//! the metrics that count what they refuse), HTTP/2 over ALPN, issuance
//! metrics, batched pruning of expired history, audit-chain tamper detection,
//! and JSON logs of the real binary (which never contain the KEK).
//!
//! Nothing here sleeps to wait for an event: a closed connection is awaited by
//! reading it, a log line by reading the pipe. Every wait has a deadline that
//! fails the test. Where no event exists (a permit is released a moment after
//! the server closes the socket that held it) a retry is bounded by attempts.

use crate::both_backends;
use crate::common::{Clients, Db, Harness, audit_log, field_strs, get, issue, revoke, test_audit};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_ca::store::{NewCert, PruneBefore, TokenRow};
use tessera_core::api::Role;
use tessera_core::now_unix;
use tessera_test_support::{CaBuilder, Metrics, await_closed, random_kek, read_until_closed};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Longest wait for anything the server should do within a second or so.
const DEADLINE: Duration = Duration::from_secs(10);

/// Keeps the background pruner away from rows a test inserts: it runs rarely
/// and only removes rows that expired ten years ago.
const NO_BACKGROUND_PRUNING: [&str; 2] = [
    "retention.keep_expired_seconds=315360000",
    "retention.prune_interval_seconds=86400",
];

fn addr(h: &Harness) -> SocketAddr {
    h.running.as_ref().unwrap().addr
}

/// The `/metrics` page (public route).
async fn metrics(h: &Harness) -> Metrics {
    Metrics::fetch(&h.anonymous()).await
}

/// Fetches `/metrics` until `series` is at least `min`. The server closes a
/// refused socket a moment before it counts the refusal, so a client that saw
/// the close may ask a little early: bounded by attempts, not by sleeping.
async fn await_metric_at_least(h: &Harness, series: &str, min: f64) -> Metrics {
    let mut last = None;
    for _ in 0..20 {
        let text = metrics(h).await;
        if text.sample(series).is_some_and(|v| v >= min) {
            return text;
        }
        last = Some(text);
    }
    panic!("{series} never reached {min}:\n{}", last.unwrap());
}

/// A TCP connection that connects and then says nothing is closed by the
/// server at the handshake deadline, and counted as `handshake_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_deadline_closes_silent_connections() {
    let h = Harness::start_with(Db::Sqlite, &["limits.handshake_timeout_ms=300"]).await;
    let mut silent = TcpStream::connect(addr(&h)).await.unwrap();
    let took = await_closed(&mut silent, DEADLINE, "a silent connection").await;
    // The deadline, not some other reason, closed it.
    assert!(
        took >= Duration::from_millis(250),
        "closed after {took:?}, before the 300 ms deadline"
    );
    let text = await_metric_at_least(
        &h,
        r#"tessera_connections_refused_total{reason="handshake_timeout"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        text.sample(r#"tessera_connections_refused_total{reason="connection_limit"}"#),
        None,
        "{text}"
    );

    // A client that starts the handshake and stalls half-way is cut off too.
    let mut stalled = TcpStream::connect(addr(&h)).await.unwrap();
    // A TLS record header announcing a 512-byte handshake message, then nothing.
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let took = await_closed(&mut stalled, DEADLINE, "a stalled handshake").await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    await_metric_at_least(
        &h,
        r#"tessera_connections_refused_total{reason="handshake_timeout"}"#,
        2.0,
    )
    .await;
    // And the server still serves.
    let (s, _) = get(&h.anonymous(), "/healthz").await;
    assert_eq!(s, StatusCode::OK);
}

/// With `limits.max_connections=2`, two connections that hold their slots make
/// the server close a third at once (`connection_limit`); once the server has
/// timed the two out, requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_refuses_and_recovers() {
    let h = Harness::start_with(
        Db::Sqlite,
        &[
            "limits.max_connections=2",
            "limits.handshake_timeout_ms=500",
        ],
    )
    .await;
    let anon = h.anonymous();
    let timeouts = || h.auth.metrics.refused.get(&["handshake_timeout"]);
    let mut refused = None;
    // One attempt is enough unless this machine stalls for more than the 500 ms
    // deadline between opening the holders and the third connection.
    for attempt in 0..5 {
        let timeouts_before = timeouts();
        // The server accepts in order: these two take both slots before the third arrives.
        let mut holders = [
            TcpStream::connect(addr(&h)).await.unwrap(),
            TcpStream::connect(addr(&h)).await.unwrap(),
        ];
        let third = tokio::time::timeout(DEADLINE, anon.call(Method::GET, "/healthz", None))
            .await
            .expect("the third connection was neither refused nor served");
        // The holders are closed by the server at the handshake deadline.
        for (i, s) in holders.iter_mut().enumerate() {
            await_closed(s, DEADLINE, &format!("holder {i}")).await;
        }
        drop(holders);
        match third {
            Err(e) => {
                eprintln!("third connection refused (attempt {attempt}): {e}");
                refused = Some(e);
                break;
            }
            Ok(r) => {
                // Served only if a holder had already been timed out (the
                // refusal is counted before the slot is released).
                assert!(
                    timeouts() > timeouts_before,
                    "a third connection was served ({}) while two held both slots",
                    r.status
                );
            }
        }
    }
    assert!(
        refused.is_some(),
        "the third connection was never refused in 5 attempts"
    );

    // The server closed both holders; their slots are released right after.
    let mut served = None;
    for _ in 0..50 {
        if let Ok(Ok(r)) =
            tokio::time::timeout(DEADLINE, anon.call(Method::GET, "/healthz", None)).await
        {
            served = Some(r);
            break;
        }
    }
    let r = served.expect("no request was served after the holders were closed");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"ok\n");

    let text = metrics(&h).await;
    let limit = text.sample(r#"tessera_connections_refused_total{reason="connection_limit"}"#);
    assert!(limit.is_some_and(|v| v >= 1.0), "{text}");
    let timed_out = text.sample(r#"tessera_connections_refused_total{reason="handshake_timeout"}"#);
    assert!(timed_out.is_some_and(|v| v >= 2.0), "{text}");
}

/// After the handshake, the same deadline bounds reading a request head
/// (HTTP/1.1): a client that stops half-way through its headers, or keeps a
/// connection idle after a response, is closed.
///
/// Not asserted here (see the report that came with this test): a client that
/// completes the TLS handshake and then sends nothing at all, or sends only the
/// HTTP/2 preface, is never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_deadline_closes_slow_requests() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start_with(Db::Sqlite, &["limits.handshake_timeout_ms=300"]).await;
    let tls = Arc::new(tessera_core::tls::api_client_config(&h.anchors(), None, false).unwrap());
    for (what, sent) in [
        (
            "half a request head",
            &b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n"[..],
        ),
        (
            "an idle keep-alive connection",
            &b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n"[..],
        ),
    ] {
        let tcp = TcpStream::connect(addr(&h)).await.unwrap();
        let mut s = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        s.write_all(sent).await.unwrap();
        s.flush().await.unwrap();
        let t = Instant::now();
        let got = read_until_closed(&mut s, DEADLINE).await;
        let took = t.elapsed();
        let got = got.unwrap_or_else(|| panic!("{what}: still open after {DEADLINE:?}"));
        assert!(
            took >= Duration::from_millis(250),
            "{what}: closed after {took:?}, before the deadline"
        );
        let got = String::from_utf8_lossy(&got);
        if sent.ends_with(b"\r\n\r\n") {
            // The complete request was answered, and the connection kept alive until the deadline.
            assert!(got.starts_with("HTTP/1.1 200 OK"), "{what}: {got}");
            assert!(got.ends_with("ok\n"), "{what}: {got}");
        }
    }
    // The server still serves.
    let (s, _) = get(&h.anonymous(), "/healthz").await;
    assert_eq!(s, StatusCode::OK);
}

/// The server offers h2 by ALPN and serves HTTP/2; curl agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_alpn() {
    let h = Harness::start(Db::Sqlite).await;
    let port = addr(&h).port();
    let connect = |http2: bool| {
        let tls = tessera_core::tls::api_client_config(&h.anchors(), None, http2).unwrap();
        let a = addr(&h);
        async move {
            let tcp = TcpStream::connect(a).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .unwrap()
        }
    };
    // A client offering only HTTP/1.1 gets HTTP/1.1.
    let s = connect(false).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(s);

    let s = connect(true).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    // Several streams on the one connection at once.
    let mut requests = tokio::task::JoinSet::new();
    for path in ["/healthz", "/readyz", "/healthz", "/v1/bundle"] {
        let mut send = send.clone();
        let uri = format!("https://localhost:{port}{path}");
        requests.spawn(async move {
            let req = Request::builder()
                .method(Method::GET)
                .uri(uri)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.expect("HTTP/2 request");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            (path, parts, body)
        });
    }
    let all = tokio::time::timeout(DEADLINE, requests.join_all())
        .await
        .expect("HTTP/2 requests timed out");
    for (path, parts, body) in all {
        assert_eq!(parts.status, StatusCode::OK, "{path}");
        assert_eq!(parts.version, hyper::Version::HTTP_2, "{path}");
        match path {
            "/healthz" => assert_eq!(&body[..], b"ok\n"),
            "/readyz" => assert_eq!(&body[..], b"ready\n"),
            _ => assert!(!body.is_empty(), "{path}"),
        }
    }
    drop(send);
    let _ = tokio::time::timeout(DEADLINE, conn).await;

    // An independent client: curl (CI must have it installed).
    let bundle = h.dir.path().join("bundle.pem");
    std::fs::write(&bundle, &h.auth.bundle().pem).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["--silent", "--show-error", "--http2", "--max-time", "10"])
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg("--cacert")
            .arg(&bundle)
            .args(["--output", "/dev/null", "--write-out", "%{http_version}"])
            .arg(format!("https://localhost:{port}/healthz"))
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("running curl (it must be installed for this test): {e}"));
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2");
}

/// Redeeming a join token shows in the issuance counter, the request counter
/// and the issuance-latency histogram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_issuance() {
    let h = Harness::start(Db::Sqlite).await;
    let text = metrics(&h).await;
    assert!(
        text.text()
            .contains("# TYPE tessera_certificates_issued_total counter"),
        "{text}"
    );
    assert_eq!(
        text.sample(r#"tessera_certificates_issued_total{kind="issue"}"#),
        None,
        "{text}"
    );

    h.entry("spiffe://example.org/web").await;
    h.workload("spiffe://example.org/web").await;

    let text = metrics(&h).await;
    for (series, want) in [
        (r#"tessera_certificates_issued_total{kind="issue"}"#, 1.0),
        (
            r#"tessera_api_requests_total{route="/v1/certs/redeem",method="POST",status="201"}"#,
            1.0,
        ),
        (
            r#"tessera_api_requests_total{route="/v1/tokens",method="POST",status="201"}"#,
            1.0,
        ),
        (
            r#"tessera_api_requests_total{route="/v1/entries",method="POST",status="201"}"#,
            1.0,
        ),
        (
            r#"tessera_issuance_duration_seconds_count{action="cert.redeem"}"#,
            1.0,
        ),
        (
            r#"tessera_api_request_duration_seconds_count{route="/v1/certs/redeem",method="POST"}"#,
            1.0,
        ),
    ] {
        assert_eq!(text.sample(series), Some(want), "{series}\n{text}");
    }
    assert_eq!(
        text.sample(r#"tessera_certificates_issued_total{kind="renew"}"#),
        None,
        "{text}"
    );
    assert!(
        text.text()
            .lines()
            .any(|l| l.starts_with("tessera_issuance_duration_seconds_count")),
        "{text}"
    );
    // The histogram's +Inf bucket holds the one observation.
    assert_eq!(
        text.sample(r#"tessera_issuance_duration_seconds_bucket{action="cert.redeem",le="+Inf"}"#),
        Some(1.0),
        "{text}"
    );
}

/// Records a certificate row straight into the ledger (the store does not parse
/// DER), with the given validity.
async fn record_cert(h: &Harness, entry_id: &str, not_before: i64, not_after: i64) -> String {
    let serial = tessera_ca::ca::random_id().unwrap();
    h.auth
        .store
        .record_certificate(
            NewCert {
                serial: serial.clone(),
                spiffe_id: "spiffe://example.org/prune".into(),
                entry_id: entry_id.to_owned(),
                ca_id: h.auth.signing_ca().id.clone(),
                not_before,
                not_after,
                requested_by: "test".into(),
                attestation: "{}".into(),
                attestation_hash: "00".repeat(32),
                der: vec![0x30, 0x00],
                node_spiffe_id: None,
            },
            vec![],
            test_audit("cert.issue", &serial),
        )
        .await
        .unwrap();
    serial
}

/// Stores a join token expiring at `expires_at`; returns its ID.
async fn record_token(h: &Harness, entry_id: &str, expires_at: i64) -> String {
    let id = tessera_ca::ca::random_id().unwrap();
    h.store_token(TokenRow {
        id: id.clone(),
        token_hash: "00".repeat(32),
        entry_id: entry_id.to_owned(),
        expires_at,
        used_at: None,
        created_at: expires_at - 600,
    })
    .await;
    id
}

/// Revokes one certificate as of `at` (the store takes the time as given);
/// returns the feed version.
async fn revoke_at(h: &Harness, serial: &str, at: i64) -> i64 {
    let (revoked, version) = h
        .auth
        .store
        .revoke(Some(serial.to_owned()), None, None, 1, at, "test")
        .await
        .unwrap();
    assert_eq!(revoked, vec![serial.to_owned()]);
    version
}

/// Prune cut-offs: expired history before `cutoff`; denials (none here) likewise.
fn prune_before(cutoff: i64) -> PruneBefore {
    PruneBefore {
        expired: cutoff,
        denials: cutoff,
    }
}

/// (certificates, revocations, join_tokens) row counts.
async fn history_counts(h: &Harness) -> (i64, i64, i64) {
    (
        h.count("certificates").await,
        h.count("revocations").await,
        h.count("join_tokens").await,
    )
}

/// `prune` deletes expired certificates, expired revocations and expired join
/// tokens older than the cut-off, oldest first, at most `batch` rows of each
/// table per call; everything newer stays.
async fn pruning_is_batched(db: Db) {
    let h = Harness::start_with(db, &NO_BACKGROUND_PRUNING).await;
    let entry = h.entry("spiffe://example.org/prune").await;
    let entry_id = entry["id"].as_str().unwrap();
    let now = now_unix();
    let cutoff = now - 3600;
    let (base_certs, base_revs, base_tokens) = history_counts(&h).await;
    assert_eq!(base_revs, 0);

    // 25 certificates that expired before the cut-off, oldest first; the first
    // 12 were revoked while they were live.
    let mut expired = vec![];
    for i in 0..25 {
        let not_after = cutoff - 10_000 + i * 10;
        expired.push((
            record_cert(&h, entry_id, not_after - 3600, not_after).await,
            not_after,
        ));
    }
    for (serial, not_after) in &expired[..12] {
        revoke_at(&h, serial, not_after - 60).await;
    }
    // Kept: 5 live (one revoked now), 2 expired after the cut-off.
    let mut kept = vec![];
    for _ in 0..5 {
        kept.push(record_cert(&h, entry_id, now - 60, now + 3600).await);
    }
    let live_revoked = kept[0].clone();
    revoke_at(&h, &live_revoked, now).await;
    for _ in 0..2 {
        kept.push(record_cert(&h, entry_id, now - 7200, now - 60).await);
    }
    // Join tokens: 15 expired before the cut-off, 2 expired after it, 3 live.
    let mut expired_tokens = vec![];
    for i in 0..15 {
        expired_tokens.push(record_token(&h, entry_id, cutoff - 5000 + i).await);
    }
    let mut kept_tokens = vec![];
    for _ in 0..2 {
        kept_tokens.push(record_token(&h, entry_id, now - 60).await);
    }
    for _ in 0..3 {
        kept_tokens.push(record_token(&h, entry_id, now + 600).await);
    }
    let (certs, revs, tokens) = history_counts(&h).await;
    assert_eq!(certs, base_certs + 32);
    assert_eq!(revs, 13);
    assert_eq!(tokens, base_tokens + 20);

    let mut removed_per_call = vec![];
    loop {
        let before = history_counts(&h).await;
        let n = h.auth.store.prune(prune_before(cutoff), 10).await.unwrap();
        let after = history_counts(&h).await;
        let removed = (before.0 - after.0, before.1 - after.1, before.2 - after.2);
        assert!(
            removed.0 <= 10 && removed.1 <= 10 && removed.2 <= 10,
            "one prune call removed more than a batch: {removed:?}"
        );
        assert_eq!(
            n as i64,
            removed.0 + removed.1 + removed.2,
            "prune's count disagrees with the tables"
        );
        if n == 0 {
            break;
        }
        removed_per_call.push(removed);
        if removed_per_call.len() == 1 {
            // Oldest first: the ten that expired first are gone, the rest not yet.
            for (i, (serial, _)) in expired.iter().enumerate() {
                let gone = h.auth.store.get_cert(serial).await.is_err();
                assert_eq!(gone, i < 10, "certificate {i} after the first batch");
            }
        }
        assert!(removed_per_call.len() <= 10, "prune never finished");
    }
    assert_eq!(
        removed_per_call,
        vec![(10, 10, 10), (10, 2, 5), (5, 0, 0)],
        "rows removed per call (certificates, revocations, join tokens)"
    );

    // What is left: exactly the rows newer than the cut-off.
    assert_eq!(
        history_counts(&h).await,
        (base_certs + 7, 1, base_tokens + 5)
    );
    for (serial, _) in &expired {
        assert!(
            h.auth.store.get_cert(serial).await.is_err(),
            "expired {serial} kept"
        );
    }
    for serial in &kept {
        let row = h.auth.store.get_cert(serial).await.unwrap();
        assert_eq!(row.revoked_at.is_some(), *serial == live_revoked);
    }
    for id in &expired_tokens {
        assert!(h.auth.store.get_token(id).await.is_err(), "token {id} kept");
    }
    for id in &kept_tokens {
        h.auth.store.get_token(id).await.unwrap();
    }
    let feed = h.auth.store.revocations_since(0, 100).await.unwrap();
    assert_eq!(feed.len(), 1, "{feed:?}");
    assert_eq!(feed[0].serial, live_revoked);
    assert_eq!(feed[0].version, 13);
    // The live revocation is still on the CRL.
    let crl = h.auth.store.crl_entries(&h.auth.signing_ca().id, now).await;
    let crl: Vec<String> = crl.unwrap().into_iter().map(|e| e.0).collect();
    assert_eq!(crl, vec![live_revoked]);
}
both_backends!(pruning_is_batched);

/// Pruning old revocations must not move the revocation feed's version
/// backwards: followers ask for `version > since`, so a reused version is a
/// revocation they never see.
async fn pruning_keeps_the_feed_version(db: Db) {
    let h = Harness::start_with(db, &NO_BACKGROUND_PRUNING).await;
    let entry = h.entry("spiffe://example.org/prune").await;
    let entry_id = entry["id"].as_str().unwrap();
    let admin = h.operator(Role::Admin).await;
    let now = now_unix();
    let cutoff = now - 3600;
    // Two revocations of certificates that have long expired since.
    for i in 0..2 {
        let not_after = cutoff - 1000 + i;
        let serial = record_cert(&h, entry_id, not_after - 3600, not_after).await;
        revoke_at(&h, &serial, not_after - 60).await;
    }
    // A follower has read the feed up to its head.
    let (s, feed) = get(&admin, "/v1/revocations?since=0").await;
    assert_eq!(s, StatusCode::OK, "{feed}");
    let seen = feed["version"].as_i64().unwrap();
    assert_eq!(seen, 2, "{feed}");

    // Both revocations are past the cut-off.
    h.auth
        .store
        .prune(prune_before(cutoff), 1000)
        .await
        .unwrap();

    // A new revocation must be newer than anything the follower has seen.
    let fresh = record_cert(&h, entry_id, now - 60, now + 3600).await;
    let (s, v) = revoke(&admin, json!({"serial": fresh, "reason": "key_compromise"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revoked"], json!([fresh]), "{v}");
    let (s, feed) = get(&admin, &format!("/v1/revocations?since={seen}")).await;
    assert_eq!(s, StatusCode::OK, "{feed}");
    let serials = field_strs(&feed["revocations"], "serial");
    assert_eq!(
        serials,
        vec![fresh.as_str()],
        "a follower at version {seen} does not see the revocation made after pruning \
         (it got version {}): {feed}",
        v["version"]
    );
}
both_backends!(pruning_keeps_the_feed_version);

/// The background pruner runs on `retention.*`: expired rows older than
/// `keep_expired_seconds` disappear without anyone calling `prune`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_pruner_removes_expired_history() {
    let h = Harness::start_with(
        Db::Sqlite,
        &[
            "retention.keep_expired_seconds=3600",
            "retention.prune_interval_seconds=1",
            "retention.prune_batch=5",
        ],
    )
    .await;
    let entry = h.entry("spiffe://example.org/prune").await;
    let entry_id = entry["id"].as_str().unwrap();
    let now = now_unix();
    let mut old = vec![];
    for i in 0..7 {
        old.push(record_cert(&h, entry_id, now - 20_000, now - 10_000 + i).await);
    }
    let recent = record_cert(&h, entry_id, now - 7200, now - 60).await;
    let old_token = record_token(&h, entry_id, now - 10_000).await;
    // Nothing signals a pruner run; poll the ledger (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut left = 0;
        for s in &old {
            left += h.auth.store.get_cert(s).await.is_ok() as usize;
        }
        if left == 0 && h.auth.store.get_token(&old_token).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} expired certificates still there after 20 s of 1 s pruning"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.auth
        .store
        .get_cert(&recent)
        .await
        .expect("a certificate within keep_expired_seconds was pruned");
}

/// Changing a field of one audit row, or deleting a row, is caught by the hash
/// chain at exactly that row (or the row after the gap).
async fn audit_tampering_is_detected(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    h.entry("spiffe://example.org/web").await;
    let (_, _, issued) = h.workload("spiffe://example.org/web").await;
    let (s, v) = revoke(&admin, json!({"serial": issued["serial"]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = issue(&admin, "spiffe://example.org/web").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let log = audit_log(&admin).await;
    assert!(log.len() >= 6, "{log:?}");
    tessera_core::audit::verify_chain([0; 32], &log)
        .unwrap_or_else(|seq| panic!("untouched chain broken at {seq}"));

    let mut raw = h.db.raw().await;
    // Rewrite who did something in the middle of the log.
    let victim = &log[log.len() / 2];
    let r = sqlx::query("UPDATE audit_log SET actor = $1 WHERE seq = $2")
        .bind("admin:someone-else".to_owned())
        .bind(victim.seq)
        .execute(&mut raw)
        .await
        .unwrap();
    assert_eq!(sqlx::any::AnyQueryResult::rows_affected(&r), 1);
    let tampered = audit_log(&admin).await;
    assert_eq!(
        tampered
            .iter()
            .find(|r| r.seq == victim.seq)
            .map(|r| r.actor.as_str()),
        Some("admin:someone-else")
    );
    assert_eq!(
        tessera_core::audit::verify_chain([0; 32], &tampered),
        Err(victim.seq),
        "changed actor at seq {}",
        victim.seq
    );

    // Put it back: the chain verifies again.
    sqlx::query("UPDATE audit_log SET actor = $1 WHERE seq = $2")
        .bind(victim.actor.clone())
        .bind(victim.seq)
        .execute(&mut raw)
        .await
        .unwrap();
    tessera_core::audit::verify_chain([0; 32], &audit_log(&admin).await)
        .unwrap_or_else(|seq| panic!("restored chain broken at {seq}"));

    // Delete a row in the middle: the next one no longer chains.
    let gone = log[2].seq;
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(gone)
        .execute(&mut raw)
        .await
        .unwrap();
    let cut = audit_log(&admin).await;
    assert_eq!(cut.len(), log.len() - 1);
    assert_eq!(
        tessera_core::audit::verify_chain([0; 32], &cut),
        Err(log[3].seq),
        "deleted seq {gone}"
    );
}
both_backends!(audit_tampering_is_detected);

/// `--log-format json`: every stderr line is a JSON object, the listening event
/// is one of them, and the KEK from the environment appears in none.
#[test]
fn json_logs_without_the_kek() {
    let kek = random_kek();
    let mut p = CaBuilder::new()
        .trust_domain("example.org")
        .args(["--log-format", "json"])
        .kek(&kek)
        .spawn("json-logs");
    let message = |l: &str| -> Option<String> {
        let v: Value = serde_json::from_str(l).ok()?;
        v["fields"]["message"]
            .as_str()
            .or(v["message"].as_str())
            .map(str::to_owned)
    };
    let listening = p
        .wait_for("JSON listening line", Duration::from_secs(60), |o| {
            let line = o
                .stderr
                .iter()
                .find(|l| message(l).is_some_and(|m| m.contains("listening")));
            match line {
                Some(l) => Some(Some(l.clone())),
                None => o.closed().then_some(None),
            }
        })
        .unwrap_or_else(|| panic!("tessera-ca exited before listening\n{}", p.describe()));
    let listening: Value = serde_json::from_str(&listening).unwrap();
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert!(
        listening["fields"]["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{listening}"
    );

    // SIGTERM, then everything else it logs until it exits.
    let status = p.terminate();
    let seen = p.stderr_lines();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", seen.join("\n"));

    for line in &seen {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
        assert!(
            !line.to_ascii_lowercase().contains(&kek),
            "the KEK is in the log: {line}"
        );
    }
    assert!(
        seen.iter()
            .any(|l| message(l).is_some_and(|m| m.contains("shutting down"))),
        "{}",
        seen.join("\n")
    );
}

/// A TLS connection to the server from the loopback address `source` (so a
/// test can be two clients at once: 127.0.0.1 and 127.0.0.2), offering h2 by
/// ALPN or only HTTP/1.1, presenting `client` (certificate PEM, key PEM) if any.
async fn tls_from(
    h: &Harness,
    source: IpAddr,
    http2: bool,
    client: Option<(&str, &str)>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let creds = client.map(|(c, k)| {
        (
            tessera_core::pem::certs(c.as_bytes()).unwrap(),
            tessera_core::pem::private_key(k.as_bytes()).unwrap(),
        )
    });
    let cfg = tessera_core::tls::api_client_config(&h.anchors(), creds, http2).unwrap();
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(addr(h)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// An HTTP/2 client connection over `tls`, PINGing the server every `ping`
/// (also with no request open) if given; the task ends when the server
/// closes the connection.
async fn h2_over(
    tls: TlsStream<TcpStream>,
    ping: Option<Duration>,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut b = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.timer(hyper_util::rt::TokioTimer::new());
    if let Some(every) = ping {
        b.keep_alive_interval(every)
            .keep_alive_timeout(DEADLINE)
            .keep_alive_while_idle(true);
    }
    let (send, conn) = b
        .handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    (send, tokio::spawn(async move { drop(conn.await) }))
}

/// `GET path` on an HTTP/2 connection: status, headers and the whole body.
async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("https://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let call = async {
        let resp = send.send_request(req).await.expect("HTTP/2 request");
        let (parts, body) = resp.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    };
    tokio::time::timeout(DEADLINE, call)
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
}

const FIRST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const SECOND: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// A client that completes the TLS handshake and then sends nothing (over
/// HTTP/1.1, or after an HTTP/2 preface) still holds a connection slot: the
/// deadline for connections that never authenticated closes it, and counts it
/// (`unauthenticated_idle_timeout`). A connection whose request authenticated
/// gets the longer idle deadline (`idle_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_deadline_closes_connections_that_say_nothing_after_the_handshake() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start_with(
        Db::Sqlite,
        &[
            "limits.unauthenticated_idle_timeout_ms=300",
            "limits.idle_timeout_ms=1500",
        ],
    )
    .await;
    for (http2, preface) in [
        (false, &b""[..]),
        (
            true,
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"[..],
        ),
    ] {
        let mut tls = tls_from(&h, FIRST, http2, None).await.unwrap();
        tls.write_all(preface).await.unwrap();
        let t = Instant::now();
        read_until_closed(&mut tls, DEADLINE)
            .await
            .unwrap_or_else(|| {
                panic!("http2={http2}: an idle TLS connection was not closed within {DEADLINE:?}")
            });
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "closed before the idle deadline"
        );
    }
    await_metric_at_least(
        &h,
        r#"tessera_connections_refused_total{reason="unauthenticated_idle_timeout"}"#,
        2.0,
    )
    .await;
    assert_eq!(h.auth.metrics.refused.get(&["idle_timeout"]), 0);

    // An operator's connection, idle after one request, lasts the full deadline.
    let (key, cert) = h
        .auth
        .issue_operator_cert("auditor", Role::Auditor)
        .await
        .unwrap();
    let tls = tls_from(&h, FIRST, true, Some((&cert, &key)))
        .await
        .unwrap();
    let (mut send, conn) = h2_over(tls, None).await;
    let (s, _, body) = h2_get(&mut send, "/v1/revocations?since=0").await;
    assert_eq!(s, StatusCode::OK, "{body:?}");
    let t = Instant::now();
    tokio::time::timeout(DEADLINE, conn)
        .await
        .expect("an idle authenticated connection was not closed")
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "an authenticated connection was closed after {:?}, before its 1500 ms idle deadline",
        t.elapsed()
    );
    await_metric_at_least(
        &h,
        r#"tessera_connections_refused_total{reason="idle_timeout"}"#,
        1.0,
    )
    .await;

    // A long-poll in flight is not idle: it outlives the idle deadline.
    let admin = h.operator(Role::Auditor).await;
    let t = Instant::now();
    let (s, _) = get(&admin, "/v1/revocations?since=0&wait=2").await;
    assert_eq!(s, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(1900));
}

/// One client holding many HTTP/2 connections open with nothing but PINGs
/// cannot stop another client: it gets at most
/// `limits.max_connections_per_source` of the slots (further connections are
/// closed at once, `connection_limit_source`), PINGs do not count as activity
/// (the connections are closed at the deadline for connections that never
/// authenticated), and a client from another address is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_of_one_client_do_not_stop_another() {
    let h = Harness::start_with(
        Db::Sqlite,
        &[
            "limits.max_connections=8",
            "limits.max_connections_per_source=4",
            "limits.unauthenticated_idle_timeout_ms=1000",
        ],
    )
    .await;
    let ping = Some(Duration::from_millis(50));
    let mut pingers = vec![];
    let mut refused = 0;
    let opened = Instant::now();
    for _ in 0..8 {
        match tls_from(&h, FIRST, true, None).await {
            Ok(tls) => pingers.push(h2_over(tls, ping).await),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(
        (pingers.len(), refused),
        (4, 4),
        "connections from one source (held, refused)"
    );
    // The other client connects and is served while the PINGers hold theirs.
    let tls = tls_from(&h, SECOND, true, None)
        .await
        .expect("a second client could not connect while the first held its connections");
    let (mut other, _other_conn) = h2_over(tls, None).await;
    let (s, _, body) = h2_get(&mut other, "/healthz").await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
    assert!(
        pingers.iter().any(|(_, conn)| !conn.is_finished()),
        "the PINGing connections were gone before the other client was served"
    );
    // PINGs keep none of them open past the deadline.
    for (i, (_, conn)) in pingers.into_iter().enumerate() {
        tokio::time::timeout(DEADLINE, conn)
            .await
            .unwrap_or_else(|_| panic!("PINGing connection {i} still open after {DEADLINE:?}"))
            .unwrap();
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(950),
        "closed after {:?}, before the 1000 ms deadline",
        opened.elapsed()
    );
    assert_eq!(h.auth.metrics.refused.get(&["connection_limit_source"]), 4);
    assert!(
        h.auth
            .metrics
            .refused
            .get(&["unauthenticated_idle_timeout"])
            >= 4
    );
}

/// The public routes are rate-limited per source address: past its burst a
/// source gets `429 rate_limited` (problem details, `Retry-After`), while
/// another source, and authenticated routes from the same one, are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_are_rate_limited_per_source() {
    const RATE: [&str; 2] = [
        "limits.public_requests_per_second_per_source=1",
        "limits.public_burst_per_source=5",
    ];
    let h = Harness::start_with(Db::Sqlite, &RATE).await;
    let (mut first, _c1) = h2_over(tls_from(&h, FIRST, true, None).await.unwrap(), None).await;
    for i in 0..5 {
        let (s, _, body) = h2_get(&mut first, "/healthz").await;
        assert_eq!(s, StatusCode::OK, "request {i} within the burst: {body:?}");
    }
    let (s, headers, body) = h2_get(&mut first, "/v1/bundle").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body:?}");
    assert_eq!(
        headers.get(hyper::header::CONTENT_TYPE).unwrap(),
        "application/problem+json"
    );
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "rate_limited", "{problem}");
    assert_eq!(problem["status"], 429, "{problem}");
    let retry: u64 = headers
        .get(hyper::header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");

    // Another source has its own budget.
    let (mut second, _c2) = h2_over(tls_from(&h, SECOND, true, None).await.unwrap(), None).await;
    let (s, _, body) = h2_get(&mut second, "/healthz").await;
    assert_eq!(s, StatusCode::OK, "{body:?}");
    // An operator from the limited source is not a public caller.
    let (s, v) = get(&h.operator(Role::Auditor).await, "/v1/revocations?since=0").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h.auth.metrics.rate_limited.get(&["public"]), 1);
}
