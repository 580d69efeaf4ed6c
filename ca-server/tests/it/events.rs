//! The event stream: events are audit records, resumable with Last-Event-ID
//! without loss or duplicates, filtered by kind, woken by new writes; the
//! expiring scan reports a certificate once.

use crate::both_backends;
use crate::common::{Db, Harness, array, csr, get, post, revoke};
use crate::receiver::{Sse, redeem, wait_for};
use hyper::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;
use tessera_core::api::{Event, EventKind, Role};
use tessera_core::client::Client;

/// Every event of a stream that ends once caught up (`follow=false`), parsed.
async fn caught_up(c: &Client, path: &str, last_event_id: Option<i64>) -> Vec<Event> {
    let events = Sse::open(c, path, last_event_id).await.all().await;
    events.iter().map(parse).collect()
}

/// The seqs of the audit records in `audit` (an `/v1/audit` answer) that are events.
fn event_seqs(audit: &Value) -> Vec<i64> {
    array(&audit["items"])
        .iter()
        .filter(|r| EventKind::of_action(r["action"].as_str().unwrap()).is_some())
        .map(|r| r["seq"].as_i64().unwrap())
        .collect()
}

fn parse(e: &tessera_core::sse::SseEvent) -> Event {
    let ev: Event = serde_json::from_str(&e.data).unwrap();
    assert_eq!(e.id.as_deref(), Some(ev.id.to_string().as_str()));
    assert_eq!(e.event, ev.kind.as_str());
    ev
}

async fn stream_resume_and_filter(db: Db) {
    let h = Harness::start(db).await;
    let auditor = h.operator(Role::Auditor).await;
    let admin = h.operator(Role::Admin).await;
    let issuer = h.operator(Role::Issuer).await;
    h.entry("spiffe://example.org/a").await;
    let mut tokens = vec![];
    for _ in 0..3 {
        tokens.push(h.join_token("spiffe://example.org/a").await);
    }

    // A following stream starts at the end of the log: nothing from before.
    let mut live = Sse::open(&auditor, "/v1/events", None).await;
    let mut serials = vec![];
    for t in &tokens {
        let v = redeem(&h, t).await;
        serials.push(v["serial"].as_str().unwrap().to_owned());
    }
    let first = parse(&live.next_within(10).await);
    assert_eq!(first.kind, EventKind::CertificateIssued);
    assert_eq!(first.action, "cert.redeem");
    assert_eq!(first.target, serials[0]);
    assert_eq!(first.details["spiffe_id"], "spiffe://example.org/a");
    drop(live);

    // Missed while disconnected: two issues and a revocation.
    let (s, v) = revoke(
        &admin,
        json!({"serial": serials[1], "reason": "key_compromise"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let missed = caught_up(&auditor, "/v1/events?follow=false", Some(first.id)).await;
    let got: Vec<(EventKind, &str)> = missed.iter().map(|e| (e.kind, e.target.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (EventKind::CertificateIssued, serials[1].as_str()),
            (EventKind::CertificateIssued, serials[2].as_str()),
            (EventKind::CertificateRevoked, serials[1].as_str()),
        ]
    );
    assert!(missed.windows(2).all(|w| w[0].id < w[1].id));
    assert!(missed.iter().all(|e| e.id > first.id));
    // Exactly the event-kind audit records after first.id: nothing lost.
    let audit: Value = get(
        &auditor,
        &format!("/v1/audit?after={}&limit=1000", first.id),
    )
    .await
    .1;
    let expected = event_seqs(&audit);
    assert_eq!(missed.iter().map(|e| e.id).collect::<Vec<_>>(), expected);

    // ?after= works like Last-Event-ID; kinds filter.
    let revoked = Sse::open(
        &auditor,
        "/v1/events?after=0&kinds=certificate.revoked&follow=false",
        None,
    )
    .await
    .all()
    .await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(parse(&revoked[0]).target, serials[1]);
    let all = caught_up(&admin, "/v1/events?after=0&follow=false", None).await;
    let audit: Value = get(&auditor, "/v1/audit?limit=1000").await.1;
    let expected = event_seqs(&audit);
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), expected);
    assert_eq!(all[0].kind, EventKind::CaStateChanged, "the CA's creation");

    // A following stream resumed with Last-Event-ID gets the backlog, then wakes on a new write.
    let last = missed.last().unwrap().id;
    let mut live = Sse::open(
        &auditor,
        "/v1/events?kinds=certificate.revoked",
        Some(first.id),
    )
    .await;
    assert_eq!(parse(&live.next_within(10).await).id, last);
    let (s, _) = revoke(&admin, json!({"serial": serials[2]})).await;
    assert_eq!(s, StatusCode::OK);
    let ev = parse(&live.next_within(5).await);
    assert_eq!(
        (ev.kind, ev.target.as_str()),
        (EventKind::CertificateRevoked, serials[2].as_str())
    );

    // Bad input is refused as a problem.
    for path in [
        "/v1/events?kinds=certificate.bogus",
        "/v1/events?after=-1",
        "/v1/events?bogus=1",
    ] {
        let (s, v) = get(&auditor, path).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_query")),
            "{path}"
        );
    }
    let r = auditor
        .stream("/v1/events", &[("last-event-id", "x1".into())])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Roles: issuers and workloads may not read events.
    let (s, _) = get(&issuer, "/v1/events?follow=false").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

both_backends!(stream_resume_and_filter);

async fn stream_limit(db: Db) {
    let h = Harness::start_with(db, &["events.max_streams=1", "events.heartbeat_seconds=1"]).await;
    let auditor = h.operator(Role::Auditor).await;
    let held = Sse::open(&auditor, "/v1/events", None).await;
    let (s, v) = get(&auditor, "/v1/events?follow=false").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("too_many_streams"))
    );
    drop(held);
    // The slot is freed once the server notices the client left.
    wait_for(10, || async {
        let r = auditor
            .stream("/v1/events?follow=false", &[])
            .await
            .unwrap();
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
}

both_backends!(stream_limit);

async fn expiring_reported_once(db: Db) {
    let h = Harness::start_with(
        db,
        &[
            "events.expiring_window_seconds=55",
            "events.expiring_scan_seconds=1",
        ],
    )
    .await;
    let admin = h.operator(Role::Admin).await;
    h.entry("spiffe://example.org/short").await;
    h.entry("spiffe://example.org/long").await;
    let mut stream = Sse::open(&admin, "/v1/events?kinds=certificate.expiring", None).await;
    // A 60-second certificate enters its last 55 seconds after 5; a 1-hour one does not.
    let issue = |id: &'static str, ttl: u64| {
        let admin = &admin;
        async move {
            let (_, csr) = csr();
            let (s, v) = post(
                admin,
                "/v1/certs",
                json!({"spiffe_id": id, "csr": csr, "ttl_seconds": ttl}),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            v["serial"].as_str().unwrap().to_owned()
        }
    };
    let long = issue("spiffe://example.org/long", 3600).await;
    let short = issue("spiffe://example.org/short", 60).await;
    let ev = parse(&stream.next_within(20).await);
    assert_eq!(ev.kind, EventKind::CertificateExpiring);
    assert_eq!(ev.target, short);
    assert_eq!(ev.details["spiffe_id"], "spiffe://example.org/short");
    // Scanning again reports nothing new; the audit log has it exactly once.
    assert_eq!(tessera_ca::events::scan_expiring(&h.auth).await.unwrap(), 0);
    let mut c = h.db.raw().await;
    let rows = sqlx::query("SELECT target FROM audit_log WHERE action = 'cert.expiring'")
        .fetch_all(&mut c)
        .await
        .unwrap();
    let targets: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(targets, vec![short.clone()]);
    assert!(!targets.contains(&long));
    // A renewed identity is not expiring: two short certificates for one ID
    // (the second outlives the first) are reported as one.
    h.entry("spiffe://example.org/renewed").await;
    issue("spiffe://example.org/renewed", 60).await;
    issue("spiffe://example.org/renewed", 61).await;
    let ev = parse(&stream.next_within(20).await);
    assert_eq!(ev.details["spiffe_id"], "spiffe://example.org/renewed");
    assert_eq!(tessera_ca::events::scan_expiring(&h.auth).await.unwrap(), 0);
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM cert_expiring")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

both_backends!(expiring_reported_once);
