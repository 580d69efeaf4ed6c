//! Webhooks against a real HTTPS receiver: signed deliveries (the HMAC checked
//! here with ring, independently of the server), retries with backoff while the
//! receiver is down, giving up after the last attempt, a slow receiver that
//! never blocks the API, refused registrations, and one deliverer among
//! replicas.

use crate::both_backends;
use crate::common::{Clients, Db, Harness, config, delete, get, id, post, revoke};
use crate::receiver::{self, Mode, Sse, redeem, verify_signature, wait_for};
use hyper::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;
use std::time::{Duration, Instant};
use tessera_core::api::{Event, EventKind, Role};
use tessera_core::client::Client;

async fn register(admin: &Client, url: &str, kinds: &[&str], ca_pem: &str) -> (String, String) {
    let (s, v) = post(
        admin,
        "/v1/webhooks",
        json!({"url": url, "kinds": kinds, "ca_pem": ca_pem, "description": "test"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    (v["id"].as_str().unwrap().to_owned(), secret)
}

async fn deliveries(c: &Client, id: &str) -> Vec<Value> {
    let (s, v) = get(c, &format!("/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

async fn signed_deliveries(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    let auditor = h.operator(Role::Auditor).await;
    h.entry("spiffe://example.org/w").await;
    let token = h.join_token("spiffe://example.org/w").await;
    let mut rcv = receiver::start(Mode::Statuses(vec![200]), 0).await;
    let (id, secret) = register(
        &admin,
        &rcv.url("/hooks/tessera?x=1"),
        &["certificate.issued", "certificate.revoked"],
        &rcv.ca_pem,
    )
    .await;

    // The secret is shown once: never listed, never stored in clear.
    let (s, list) = get(&auditor, "/v1/webhooks").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["private_ca"], true);
    assert!(!list.to_string().contains(&secret));
    let mut c = h.db.raw().await;
    let sealed: Vec<u8> = sqlx::query("SELECT secret_sealed FROM webhooks")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    assert!(
        !sealed
            .windows(16)
            .any(|w| secret.as_bytes().windows(16).any(|s| s == w))
    );

    let issued = redeem(&h, &token).await;
    let serial = issued["serial"].as_str().unwrap();
    let (s, _) = revoke(&admin, json!({"serial": serial})).await;
    assert_eq!(s, StatusCode::OK);

    let mut ids = vec![];
    for want in [EventKind::CertificateIssued, EventKind::CertificateRevoked] {
        let r = rcv.next(15).await;
        assert_eq!(r.path, "/hooks/tessera?x=1");
        assert_eq!(r.headers["content-type"], "application/json");
        let t = verify_signature(&secret, &r);
        assert!((t - tessera_core::now_unix()).abs() < 60);
        let ev: Event = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(ev.kind, want);
        assert_eq!(ev.target, serial);
        assert_eq!(r.headers["tessera-event-id"], ev.id.to_string().as_str());
        assert_eq!(r.headers["tessera-event-kind"], want.as_str());
        // A wrong secret does not verify.
        let bad = std::panic::catch_unwind(|| verify_signature(&"0".repeat(64), &r));
        assert!(bad.is_err());
        ids.push(ev.id);
    }
    // The same events the stream serves, in order.
    let streamed: Vec<i64> = Sse::open(
        &auditor,
        "/v1/events?after=0&kinds=certificate.issued,certificate.revoked&follow=false",
        None,
    )
    .await
    .all()
    .await
    .iter()
    .map(|e| e.id.as_deref().unwrap().parse().unwrap())
    .filter(|id| ids.contains(id))
    .collect();
    assert_eq!(streamed, ids);

    let log = wait_for(10, || async {
        let d = deliveries(&auditor, &id).await;
        (d.len() == 2).then_some(d)
    })
    .await;
    for (d, event) in log.iter().rev().zip(&ids) {
        assert_eq!(d["outcome"], "delivered");
        assert_eq!(d["status_code"], 200);
        assert_eq!(d["attempt"], 1);
        assert_eq!(d["event_id"].as_i64(), Some(*event));
    }
    assert!(!log.iter().any(|d| d.to_string().contains(&secret)));

    // Removed: no more deliveries, its log is gone.
    let (s, _) = delete(&admin, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = get(&admin, &format!("/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = delete(&admin, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(h.count("webhook_deliveries").await, 0);
}

both_backends!(signed_deliveries);

/// A harness whose webhook deliveries are retried from 100 ms, backing off to
/// `max_ms`, at most `attempts` times, with `extra` settings.
async fn retrying(db: Db, max_ms: u32, attempts: u32, extra: &[&str]) -> Harness {
    let max = format!("webhooks.retry_max_ms={max_ms}");
    let attempts = format!("webhooks.max_attempts={attempts}");
    let retry = [
        "webhooks.retry_base_ms=100",
        max.as_str(),
        attempts.as_str(),
    ];
    Harness::start_with(db, &[&retry[..], extra].concat()).await
}

async fn receiver_down_then_up(db: Db) {
    let h = retrying(db, 400, 100, &["webhooks.connect_timeout_ms=1000"]).await;
    let admin = h.operator(Role::Admin).await;
    let port = receiver::dead_port().await;
    let pki = receiver::pki();
    let url = format!("https://localhost:{port}/hook");
    h.entry("spiffe://example.org/w").await;
    let token = h.join_token("spiffe://example.org/w").await;
    let (id, secret) = register(&admin, &url, &["certificate.issued"], &pki.ca_pem).await;
    let issued = redeem(&h, &token).await;
    let serial = issued["serial"].as_str().unwrap();

    // Attempts fail and are recorded, spaced by a growing backoff; the API
    // went on answering meanwhile.
    let failed = wait_for(15, || async {
        let d = deliveries(&admin, &id).await;
        (d.len() >= 4).then_some(d)
    })
    .await;
    for d in &failed {
        assert_eq!(d["outcome"], "retrying", "{d}");
        assert!(d["status_code"].is_null());
        assert!(d["error"].as_str().unwrap().starts_with("connect:"), "{d}");
    }
    let attempts: Vec<i64> = failed
        .iter()
        .rev()
        .map(|d| d["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(&attempts[..4], &[1, 2, 3, 4]);
    let (_, list) = get(&admin, "/v1/webhooks").await;
    assert!(list["items"][0]["attempts"].as_i64().unwrap() >= 4);

    // The receiver comes up on its address: the same event is delivered.
    let mut rcv = receiver::start_with(Mode::Statuses(vec![200]), port, pki).await;
    let r = rcv.next(15).await;
    verify_signature(&secret, &r);
    let ev: Event = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (ev.kind, ev.target.as_str()),
        (EventKind::CertificateIssued, serial)
    );
    let log = wait_for(10, || async {
        let d = deliveries(&admin, &id).await;
        (d[0]["outcome"] == "delivered").then_some(d)
    })
    .await;
    assert!(log[0]["attempt"].as_i64().unwrap() > 4);
    assert_eq!(log[0]["event_id"].as_i64(), Some(ev.id));
    assert!(
        log[1..]
            .iter()
            .all(|d| d["outcome"] == "retrying" && d["event_id"].as_i64() == Some(ev.id))
    );
    let (_, list) = get(&admin, "/v1/webhooks").await;
    assert_eq!(list["items"][0]["attempts"], 0);
}

both_backends!(receiver_down_then_up);

async fn failing_receiver_retried_then_given_up(db: Db) {
    // The receiver is up but failing (503, 503, then 200): the same event is
    // retried with backoff and delivered on the third attempt; a later event is
    // given up on after max_attempts.
    let h = retrying(db, 200, 3, &[]).await;
    let admin = h.operator(Role::Admin).await;
    let mut rcv = receiver::start(Mode::Statuses(vec![503, 503, 200, 500]), 0).await;
    h.entry("spiffe://example.org/w").await;
    let tokens = [
        h.join_token("spiffe://example.org/w").await,
        h.join_token("spiffe://example.org/w").await,
    ];
    let (id, secret) = register(&admin, &rcv.url("/"), &["certificate.issued"], &rcv.ca_pem).await;
    let first = redeem(&h, &tokens[0]).await;
    let mut seen = vec![];
    for _ in 0..3 {
        let r = rcv.next(15).await;
        verify_signature(&secret, &r);
        seen.push(serde_json::from_slice::<Event>(&r.body).unwrap());
    }
    assert!(
        seen.iter()
            .all(|e| e.target == first["serial"].as_str().unwrap())
    );
    assert!(
        seen.windows(2).all(|w| w[0].id == w[1].id),
        "one event, retried"
    );
    // Second event: the receiver answers 500 from now on; three attempts, then failed.
    let second = redeem(&h, &tokens[1]).await;
    for _ in 0..3 {
        let r = rcv.next(15).await;
        let ev: Event = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(ev.target, second["serial"].as_str().unwrap());
    }
    let log = wait_for(10, || async {
        let d = deliveries(&admin, &id).await;
        (d.len() == 6).then_some(d)
    })
    .await;
    let summary: Vec<(i64, String, i64)> = log
        .iter()
        .rev()
        .map(|d| {
            (
                d["attempt"].as_i64().unwrap(),
                d["outcome"].as_str().unwrap().to_owned(),
                d["status_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "retrying".into(), 503),
            (2, "retrying".into(), 503),
            (3, "delivered".into(), 200),
            (1, "retrying".into(), 500),
            (2, "retrying".into(), 500),
            (3, "failed".into(), 500),
        ]
    );
    // The backoff is recorded in the webhook's state only while retrying.
    let (_, list) = get(&admin, "/v1/webhooks").await;
    assert_eq!(list["items"][0]["attempts"], 0);
    assert_eq!(
        list["items"][0]["last_event_id"].as_i64(),
        log[0]["event_id"].as_i64()
    );
    // Nothing more is attempted.
    assert!(
        tokio::time::timeout(Duration::from_millis(800), rcv.rx.recv())
            .await
            .is_err()
    );
}

both_backends!(failing_receiver_retried_then_given_up);

async fn slow_receiver_never_blocks_the_api(db: Db) {
    let h = Harness::start_with(db, &["webhooks.response_timeout_ms=700"]).await;
    let admin = h.operator(Role::Admin).await;
    let mut rcv = receiver::start(Mode::Hang, 0).await;
    let (id, _) = register(
        &admin,
        &rcv.url("/slow"),
        &["certificate.issued"],
        &rcv.ca_pem,
    )
    .await;
    h.entry("spiffe://example.org/w").await;
    let token = h.join_token("spiffe://example.org/w").await;
    let (_, csr) = crate::common::csr();
    let started = Instant::now();
    let (s, _) = post(
        &h.anonymous(),
        "/v1/certs/redeem",
        json!({"token": token, "csr": csr}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // The receiver has the request and is sitting on it ...
    rcv.next(10).await;
    // ... while the API answers at once.
    for _ in 0..3 {
        let t = Instant::now();
        let (_, _, _) = h.workload("spiffe://example.org/w").await;
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    let d = wait_for(10, || async {
        let d = deliveries(&admin, &id).await;
        d.iter()
            .find(|d| d["error"].as_str().is_some_and(|e| e.contains("timeout")))
            .cloned()
    })
    .await;
    assert_eq!(d["outcome"], "retrying");
    assert!(d["duration_ms"].as_i64().unwrap() >= 600, "{d}");
}

both_backends!(slow_receiver_never_blocks_the_api);

async fn bad_registrations_refused(db: Db) {
    let h = Harness::start(db).await;
    let admin = h.operator(Role::Admin).await;
    let auditor = h.operator(Role::Auditor).await;
    let rcv = receiver::start(Mode::Statuses(vec![200]), 0).await;
    let ok = json!({"url": rcv.url("/"), "kinds": ["certificate.issued"], "ca_pem": rcv.ca_pem});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let long = format!("https://localhost/{}", "a".repeat(2048));
    let cases = [
        (
            with("url", json!("http://localhost/hook")),
            "invalid_field",
            "https",
        ),
        (
            with("url", json!("HTTP://localhost/hook")),
            "invalid_field",
            "https",
        ),
        (
            with("url", json!("https://user:pw@localhost/")),
            "invalid_field",
            "user information",
        ),
        (with("url", json!("https:///hook")), "invalid_field", "host"),
        (
            with("url", json!("https://localhost:99999/")),
            "invalid_field",
            "port",
        ),
        (with("url", json!(long)), "invalid_field", "2048"),
        (
            with("url", json!("localhost/hook")),
            "invalid_field",
            "https",
        ),
        (with("kinds", json!([])), "invalid_field", "kinds"),
        (
            with("kinds", json!(["certificate.bogus"])),
            "invalid_body",
            "certificate.bogus",
        ),
        (
            with("ca_pem", json!("not a pem")),
            "invalid_field",
            "ca_pem",
        ),
        (
            with("description", json!("x".repeat(1025))),
            "invalid_field",
            "description",
        ),
        (with("secret", json!("mine")), "invalid_body", "secret"),
    ];
    for (body, code, needle) in cases {
        let (s, v) = post(&admin, "/v1/webhooks", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {v}");
        assert_eq!(v["code"], code, "{body} -> {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(needle),
            "{body} -> {v}"
        );
    }
    // An auditor reads events and webhooks but cannot add or remove them.
    let (s, _) = post(&auditor, "/v1/webhooks", ok.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h.count("webhooks").await, 0);
    let (s, _) = get(&auditor, "/v1/events?follow=false").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = post(&admin, "/v1/webhooks", ok.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = delete(&auditor, &format!("/v1/webhooks/{}", id(&v))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h.count("webhooks").await, 1);
}

both_backends!(bad_registrations_refused);

async fn one_deliverer_among_replicas(db: Db) {
    // Two servers on one database: exactly one delivers; when it stops, the
    // other takes the lease over and delivers what follows.
    let sets = ["webhooks.lease_seconds=3"];
    let mut h = Harness::start_with(db, &sets).await;
    let cfg = config(&h.db, h.dir.path(), &sets);
    let auth2 = tessera_ca::authority::Authority::start(cfg).await.unwrap();
    let running2 = tessera_ca::server::start(auth2.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let admin = h.operator(Role::Admin).await;
    let mut rcv = receiver::start(Mode::Statuses(vec![200]), 0).await;
    h.entry("spiffe://example.org/w").await;
    let mut tokens = vec![];
    for _ in 0..3 {
        tokens.push(h.join_token("spiffe://example.org/w").await);
    }
    let (id, _) = register(&admin, &rcv.url("/"), &["certificate.issued"], &rcv.ca_pem).await;
    let mut serials = vec![];
    for t in &tokens {
        serials.push(redeem(&h, t).await["serial"].as_str().unwrap().to_owned());
    }
    let mut got = vec![];
    for _ in 0..3 {
        got.push(rcv.next_event(15).await.1.target);
    }
    assert_eq!(got, serials, "in order, once each");
    // Recorded (a delivery cut off before it is recorded is sent again: at least once).
    wait_for(10, || async {
        let d = deliveries(&admin, &id).await;
        (d.len() == 3).then_some(())
    })
    .await;
    // The first replica stops (and with it, possibly the lease holder).
    h.running
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(2))
        .await;
    let url2 = format!("https://localhost:{}", running2.addr.port());
    let admin2 = {
        let (key, cert) = auth2
            .issue_operator_cert("admin2", Role::Admin)
            .await
            .unwrap();
        let chain = tessera_core::pem::certs(cert.as_bytes()).unwrap();
        let key = tessera_core::pem::private_key(key.as_bytes()).unwrap();
        let tls =
            tessera_core::tls::api_client_config(&h.anchors(), Some((chain, key)), false).unwrap();
        Client::new(&url2, tls, None).unwrap()
    };
    let token = {
        let (s, v) = post(
            &admin2,
            "/v1/tokens",
            json!({"spiffe_id": "spiffe://example.org/w"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    };
    let (_, csr) = crate::common::csr();
    let (s, v) = post(
        &admin2,
        "/v1/certs/redeem",
        json!({"token": token, "csr": csr}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, ev) = rcv.next_event(20).await;
    assert_eq!(ev.target, v["serial"].as_str().unwrap());
    let d = wait_for(10, || async {
        let d = deliveries(&admin2, &id).await;
        (d.len() >= 5).then_some(d)
    })
    .await;
    let mut events: Vec<i64> = d.iter().map(|d| d["event_id"].as_i64().unwrap()).collect();
    let n = events.len();
    events.dedup();
    assert_eq!(events.len(), n, "no duplicates: {d:?}");
    assert_eq!(
        n, 5,
        "3 redeems, admin2's operator certificate, 1 redeem: {d:?}"
    );
    assert!(d.iter().all(|d| d["outcome"] == "delivered"));
    running2.shutdown(Duration::from_secs(2)).await;
}

both_backends!(one_deliverer_among_replicas);
