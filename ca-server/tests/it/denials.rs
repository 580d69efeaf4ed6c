//! Denial reports: sidecars (workload certificates) post the connections their
//! container firewall refused; admins and auditors list them across the fleet.
//! The reporter is always the caller's own SPIFFE ID; refused reports store
//! nothing; old denials are pruned in batches.

use crate::both_backends;
use crate::common::{Clients, Db, Harness, assert_problem, get, post};
use hyper::StatusCode;
use serde_json::{Value, json};
use tessera_ca::store::{DenialFilter, PruneBefore};
use tessera_core::api::{Denial, DenialReason, Role};
use tessera_core::client::Client;
use tessera_core::now_unix;

const WEB: &str = "spiffe://example.org/web";
const DB: &str = "spiffe://example.org/db";
const API: &str = "spiffe://example.org/api";

/// Keeps the background pruner (which also runs once at start) away from rows
/// a test inserts: it runs rarely and only removes denials ten years old.
const NO_BACKGROUND_PRUNING: [&str; 2] = [
    "retention.keep_denials_seconds=315360000",
    "retention.prune_interval_seconds=86400",
];

/// A workload client holding a join-token certificate for `spiffe_id` (the
/// entry is created first).
async fn workload(h: &Harness, spiffe_id: &str) -> Client {
    h.entry(spiffe_id).await;
    let (cert, key, _) = h.workload(spiffe_id).await;
    h.with_cert(&cert, &key)
}

/// A bearer-token client with `role`.
async fn token_client(h: &Harness, admin: &Client, name: &str, role: Role) -> Client {
    let (s, t) = post(
        admin,
        "/v1/credentials",
        json!({"name": name, "role": role}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    h.with_token(t["token"].as_str().unwrap())
}

fn denial(at: i64, listener: &str, peer: &str, source: Option<&str>, reason: &str) -> Value {
    let mut d = json!({"at": at, "listener": listener, "peer_addr": peer, "reason": reason});
    if let Some(s) = source {
        d["peer_spiffe_id"] = json!(s);
    }
    d
}

async fn report(c: &Client, denials: Vec<Value>) -> (StatusCode, Value) {
    post(c, "/v1/denials", json!({ "denials": denials })).await
}

/// Lists with a query string; returns (at, reporter, listener, peer_addr,
/// peer_spiffe_id, reason) per item, in the order served.
async fn list(
    c: &Client,
    query: &str,
) -> Vec<(i64, String, String, String, Option<String>, String)> {
    let (s, v) = get(c, &format!("/v1/denials{query}")).await;
    assert_eq!(s, StatusCode::OK, "{query}: {v}");
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{query}: no items: {v}"))
        .iter()
        .map(|d| {
            (
                d["at"].as_i64().unwrap(),
                d["reporter"].as_str().unwrap().to_owned(),
                d["listener"].as_str().unwrap().to_owned(),
                d["peer_addr"].as_str().unwrap().to_owned(),
                d["peer_spiffe_id"].as_str().map(str::to_owned),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The `at` values of a listing, in order.
async fn ats(c: &Client, query: &str) -> Vec<i64> {
    list(c, query).await.into_iter().map(|d| d.0).collect()
}

/// A Prometheus sample's value.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse::<f64>().unwrap())
    })
}

/// Two sidecars report; an auditor lists with every filter; the reporter is
/// the caller's identity; the counter counts by reason.
async fn workloads_report_and_auditors_list(db: Db) {
    let h = Harness::start(db).await;
    let web = workload(&h, WEB).await;
    let dbw = workload(&h, DB).await;
    let admin = h.operator(Role::Admin).await;
    let auditor = h.operator(Role::Auditor).await;
    let auditor_token = token_client(&h, &admin, "denial-reader", Role::Auditor).await;
    let t = now_unix() - 1000;

    // web refused three peers on two listeners; db refused one.
    let (s, v) = report(
        &web,
        vec![
            denial(t, "https", "10.0.0.7:41000", Some(API), "not_allowed"),
            denial(t + 10, "https", "10.0.0.8:41001", None, "no_certificate"),
            denial(
                t + 20,
                "metrics",
                "10.0.0.7:41002",
                Some("spiffe://other.org/scraper"),
                "untrusted_chain",
            ),
        ],
    )
    .await;
    assert_eq!((s, &v), (StatusCode::ACCEPTED, &json!({"accepted": 3})));
    let (s, v) = report(
        &dbw,
        vec![denial(
            t + 30,
            "pg",
            "10.0.0.7:41003",
            Some(API),
            "not_allowed",
        )],
    )
    .await;
    assert_eq!((s, &v), (StatusCode::ACCEPTED, &json!({"accepted": 1})));
    // An empty report is accepted and stores nothing.
    let (s, v) = report(&web, vec![]).await;
    assert_eq!((s, &v), (StatusCode::ACCEPTED, &json!({"accepted": 0})));
    assert_eq!(h.count("denials").await, 4);

    // Everything, newest first, each stored under its reporter's identity.
    let all = list(&auditor, "").await;
    assert_eq!(
        all,
        vec![
            (
                t + 30,
                DB.into(),
                "pg".into(),
                "10.0.0.7:41003".into(),
                Some(API.into()),
                "not_allowed".into()
            ),
            (
                t + 20,
                WEB.into(),
                "metrics".into(),
                "10.0.0.7:41002".into(),
                Some("spiffe://other.org/scraper".into()),
                "untrusted_chain".into()
            ),
            (
                t + 10,
                WEB.into(),
                "https".into(),
                "10.0.0.8:41001".into(),
                None,
                "no_certificate".into()
            ),
            (
                t,
                WEB.into(),
                "https".into(),
                "10.0.0.7:41000".into(),
                Some(API.into()),
                "not_allowed".into()
            ),
        ]
    );
    // IDs are present and distinct.
    let (_, v) = get(&auditor, "/v1/denials").await;
    let mut ids: Vec<i64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{v}");

    // Each filter on its own, then combined.
    let q = |s: &str| s.replace(':', "%3A").replace('/', "%2F");
    assert_eq!(
        ats(&auditor, &format!("?since={}", t + 10)).await,
        vec![t + 30, t + 20, t + 10]
    );
    assert_eq!(
        ats(&auditor, &format!("?destination={}", q(WEB))).await,
        vec![t + 20, t + 10, t]
    );
    assert_eq!(
        ats(&auditor, &format!("?destination={}", q(DB))).await,
        vec![t + 30]
    );
    assert_eq!(
        ats(&auditor, &format!("?source={}", q(API))).await,
        vec![t + 30, t]
    );
    assert_eq!(ats(&auditor, "?listener=https").await, vec![t + 10, t]);
    assert_eq!(ats(&auditor, "?reason=not_allowed").await, vec![t + 30, t]);
    assert_eq!(ats(&auditor, "?reason=untrusted_chain").await, vec![t + 20]);
    assert_eq!(ats(&auditor, "?reason=revoked").await, Vec::<i64>::new());
    assert_eq!(ats(&auditor, "?limit=2").await, vec![t + 30, t + 20]);
    assert_eq!(
        ats(
            &auditor,
            &format!(
                "?destination={}&source={}&listener=https&reason=not_allowed&since={t}",
                q(WEB),
                q(API)
            )
        )
        .await,
        vec![t]
    );
    assert_eq!(
        ats(&auditor, &format!("?since={}&source={}", t + 1, q(API))).await,
        vec![t + 30]
    );
    // An auditor token and an admin see the same.
    assert_eq!(list(&auditor_token, "").await, all);
    assert_eq!(list(&admin, "").await, all);

    // Bad queries are refused, naming the parameter.
    for (query, names) in [
        ("?limit=0", Some("limit")),
        ("?limit=1001", Some("limit")),
        ("?destination=web", Some("destination")),
        ("?source=spiffe%3A%2F%2FEXAMPLE.org%2Fx", Some("source")),
        ("?peer_spiffe_id=x", Some("peer_spiffe_id")),
        ("?reporter=x", Some("reporter")),
        ("?reason=bogus", None),
        ("?since=yesterday", None),
    ] {
        let (s, v) = get(&auditor, &format!("/v1/denials{query}")).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_query")),
            "{query}: {v}"
        );
        if let Some(name) = names {
            assert!(
                v["detail"].as_str().unwrap_or("").contains(name),
                "{query}: {v}"
            );
        }
    }

    // The counter counts accepted denials by reason.
    let m = h.fetch("/metrics").await;
    let text = String::from_utf8_lossy(&m.body);
    for (reason, n) in [
        ("not_allowed", 2.0),
        ("no_certificate", 1.0),
        ("untrusted_chain", 1.0),
    ] {
        assert_eq!(
            sample(
                &text,
                &format!("tessera_denials_reported_total{{reason=\"{reason}\"}}")
            ),
            Some(n),
            "{text}"
        );
    }
    assert_eq!(
        sample(&text, "tessera_denials_reported_total{reason=\"revoked\"}"),
        None
    );
}
both_backends!(workloads_report_and_auditors_list);

/// Only workloads report: operator credentials of every role get 403,
/// anonymous callers 401, and a report cannot name its reporter. Workloads and
/// roles other than admin and auditor cannot list.
async fn only_workloads_report_under_their_own_identity(db: Db) {
    let h = Harness::start(db).await;
    let web = workload(&h, WEB).await;
    let admin = h.operator(Role::Admin).await;
    let t = now_unix() - 10;
    let batch = vec![denial(t, "https", "10.0.0.9:5000", Some(API), "revoked")];

    let (s, v) = report(&h.anonymous(), batch.clone()).await;
    assert_problem(s, &v, StatusCode::UNAUTHORIZED, "unauthenticated");
    for role in Role::ALL {
        let cert = h.operator(role).await;
        let token = token_client(&h, &admin, &format!("t-{}", role.as_str()), role).await;
        for (how, c) in [("certificate", cert), ("token", token)] {
            let (s, v) = report(&c, batch.clone()).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (StatusCode::FORBIDDEN, Some("forbidden")),
                "{} {how}: {v}",
                role.as_str()
            );
        }
    }
    assert_eq!(
        h.count("denials").await,
        0,
        "a refused caller stored denials"
    );

    // The sidecar cannot choose the reporter: neither beside the denials nor in one.
    let (s, v) = post(
        &web,
        "/v1/denials",
        json!({"reporter": DB, "denials": batch}),
    )
    .await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "invalid_body");
    let mut forged = batch[0].clone();
    forged["reporter"] = json!(DB);
    let (s, v) = report(&web, vec![forged]).await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "invalid_body");
    assert_eq!(h.count("denials").await, 0);

    let (s, _) = report(&web, batch).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let auditor = h.operator(Role::Auditor).await;
    let all = list(&auditor, "").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1, WEB, "reporter is the caller's SPIFFE ID");

    // Listing is for admins and auditors only.
    let (s, v) = get(&web, "/v1/denials").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    for role in [Role::Registrar, Role::Issuer] {
        let (s, v) = get(&h.operator(role).await, "/v1/denials").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{}: {v}", role.as_str());
    }
    let (s, _) = get(&h.anonymous(), "/v1/denials").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
both_backends!(only_workloads_report_under_their_own_identity);

/// A realistic denial: a long-ish listener name, an address, a peer ID.
fn realistic(at: i64, i: usize) -> Value {
    denial(
        at,
        "inbound-https-payments",
        &format!("10.244.{}.{}:{}", i / 250, i % 250, 40000 + i),
        Some(&format!(
            "spiffe://example.org/ns/payments/sa/worker-{i:04}"
        )),
        "not_allowed",
    )
}

/// Invalid reports are refused whole with a problem naming the field, and
/// nothing of them is stored; a full report of 1000 fits and is accepted.
async fn invalid_reports_store_nothing(db: Db) {
    let h = Harness::start(db).await;
    let web = workload(&h, WEB).await;
    let now = now_unix();
    let keep = h.auth.cfg.retention.keep_denials_seconds;
    let good = denial(now - 5, "https", "10.0.0.1:1", Some(API), "expired");

    // 1001 realistic denials: refused for their number (not their size).
    let many: Vec<Value> = (0..1001).map(|i| realistic(now - 60, i)).collect();
    let (s, v) = report(&web, many.clone()).await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "invalid_field");
    assert!(v["detail"].as_str().unwrap().contains("denials"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("1000"), "{v}");
    assert_eq!(h.count("denials").await, 0);

    let mut bad_listener = good.clone();
    bad_listener["listener"] = json!("l".repeat(129));
    let mut bad_peer = good.clone();
    bad_peer["peer_addr"] = json!("1".repeat(65));
    let mut control = good.clone();
    control["listener"] = json!("https\u{1b}[31m");
    let mut empty_listener = good.clone();
    empty_listener["listener"] = json!("");
    let mut bad_id = good.clone();
    bad_id["peer_spiffe_id"] = json!("spiffe://example.org/a/../b");
    let mut not_id = good.clone();
    not_id["peer_spiffe_id"] = json!("https://example.org/a");
    let mut future = good.clone();
    future["at"] = json!(now + 86400 + 3600);
    let mut old = good.clone();
    old["at"] = json!(now - keep - 3600);
    for (what, bad, field) in [
        ("listener over 128 bytes", bad_listener, "listener"),
        ("peer_addr over 64 bytes", bad_peer, "peer_addr"),
        ("control characters", control, "listener"),
        ("empty listener", empty_listener, "listener"),
        ("dot segment in a SPIFFE ID", bad_id, "peer_spiffe_id"),
        ("not a SPIFFE ID", not_id, "peer_spiffe_id"),
        ("more than a day ahead", future, "at"),
        ("older than retention", old, "at"),
    ] {
        // The bad denial sits after a good one: the whole report is refused.
        let (s, v) = report(&web, vec![good.clone(), bad]).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_field")),
            "{what}: {v}"
        );
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{field}:")) && detail.contains("denials[1]"),
            "{what}: {v}"
        );
    }
    assert_eq!(
        h.count("denials").await,
        0,
        "a refused report stored denials"
    );

    // Unknown reasons, unknown fields, a missing field: serde refuses them.
    let mut unknown_reason = good.clone();
    unknown_reason["reason"] = json!("cosmic_rays");
    let mut unknown_field = good.clone();
    unknown_field["severity"] = json!("high");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("peer_addr");
    for (what, bad) in [
        ("unknown reason", unknown_reason),
        ("unknown field", unknown_field),
        ("missing field", missing),
    ] {
        let (s, v) = report(&web, vec![good.clone(), bad]).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_body")),
            "{what}: {v}"
        );
    }
    assert_eq!(
        h.count("denials").await,
        0,
        "a refused report stored denials"
    );

    // The limits are inclusive, and any trust domain is a valid peer.
    let mut edge = good.clone();
    edge["listener"] = json!("l".repeat(128));
    edge["peer_addr"] = json!("1".repeat(64));
    edge["peer_spiffe_id"] = json!("spiffe://partner.example/svc");
    edge["at"] = json!(now + 3600);
    let (s, v) = report(&web, vec![edge]).await;
    assert_eq!((s, &v), (StatusCode::ACCEPTED, &json!({"accepted": 1})));

    // A full report of 1000 realistic denials is within the body limit.
    let (s, v) = report(&web, many[..1000].to_vec()).await;
    assert_eq!((s, &v), (StatusCode::ACCEPTED, &json!({"accepted": 1000})));
    assert_eq!(h.count("denials").await, 1001);

    // The larger limit is this route's only: other routes keep max_body_bytes.
    let admin = h.operator(Role::Admin).await;
    let (s, v) = post(
        &admin,
        "/v1/entries",
        json!({"spiffe_id": API, "selectors": ["a:b"], "note": "n".repeat(100_000)}),
    )
    .await;
    assert_problem(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}
both_backends!(invalid_reports_store_nothing);

/// Stores denials with any `at` (the API refuses old ones; pruning must still
/// handle rows that aged while stored).
async fn store_at(h: &Harness, reporter: &str, ats: &[i64]) {
    let denials: Vec<Denial> = ats
        .iter()
        .map(|&at| Denial {
            at,
            listener: "https".into(),
            peer_addr: "10.0.0.1:1".into(),
            peer_spiffe_id: None,
            reason: DenialReason::HandshakeTimeout,
        })
        .collect();
    let n = h
        .auth
        .store
        .record_denials(reporter, &denials, now_unix())
        .await
        .unwrap();
    assert_eq!(n, ats.len() as u64);
}

/// Pruning removes denials older than the cut-off (`keep_denials_seconds`
/// ago), oldest first, at most a batch per call, and keeps the rest; it leaves
/// other history alone.
async fn pruning_removes_old_denials(db: Db) {
    let h = Harness::start_with(db, &NO_BACKGROUND_PRUNING).await;
    let now = now_unix();
    let keep = tessera_ca::config::Config::default()
        .retention
        .keep_denials_seconds;
    assert_eq!(keep, 7 * 86400, "the default retention");
    let cutoff = now - keep;
    // 15 denials past retention (oldest first), 3 within it.
    let old: Vec<i64> = (0..15).map(|i| cutoff - 5000 + i * 100).collect();
    let recent = [cutoff + 100, now - 60, now];
    store_at(&h, WEB, &old).await;
    store_at(&h, DB, &recent).await;
    let certs = h.count("certificates").await;
    let store = &h.auth.store;
    let all = |limit| DenialFilter {
        limit,
        ..Default::default()
    };

    let before = PruneBefore {
        // Far in the past: nothing else is due.
        expired: 0,
        denials: cutoff,
    };
    let mut per_call = vec![];
    loop {
        let n = store.prune(before, 10).await.unwrap();
        if n == 0 {
            break;
        }
        per_call.push(n);
        if per_call.len() == 1 {
            // Oldest first: the ten oldest are gone.
            let left: Vec<i64> = store
                .list_denials(&all(1000))
                .await
                .unwrap()
                .iter()
                .map(|d| d.at)
                .collect();
            let mut want: Vec<i64> = old[10..].iter().chain(recent.iter()).copied().collect();
            want.reverse();
            assert_eq!(left, want);
        }
        assert!(per_call.len() <= 5, "prune never finished");
    }
    assert_eq!(per_call, vec![10, 5]);
    let left = store.list_denials(&all(1000)).await.unwrap();
    let mut want = recent.to_vec();
    want.reverse();
    assert_eq!(left.iter().map(|d| d.at).collect::<Vec<_>>(), want);
    assert!(left.iter().all(|d| d.reporter == DB));
    assert_eq!(h.count("denials").await, 3);
    assert_eq!(h.count("certificates").await, certs, "pruned other history");
}
both_backends!(pruning_removes_old_denials);

/// Issue 11 item 9: a reporter's denials are rate-limited by count: past
/// its burst a report answers `429 rate_limited` (the same answer, with
/// `Retry-After`, as `limits::public_routes_are_rate_limited_per_source`) and
/// stores nothing, while another reporter is still heard; what is stored is
/// attributed to its reporter.
async fn reports_are_rate_limited_per_reporter(db: Db) {
    let h = Harness::start_with(
        db,
        &[
            "limits.denials_per_second_per_reporter=1",
            "limits.denial_burst_per_reporter=5",
            NO_BACKGROUND_PRUNING[0],
            NO_BACKGROUND_PRUNING[1],
        ],
    )
    .await;
    let (web, api) = (workload(&h, WEB).await, workload(&h, API).await);
    let now = now_unix();
    let batch = |n: usize| {
        (0..n)
            .map(|i| denial(now, "in", &format!("10.0.0.{i}:1"), None, "no_certificate"))
            .collect::<Vec<_>>()
    };
    let (s, v) = report(&web, batch(5)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, v) = report(&web, batch(3)).await;
    assert_problem(s, &v, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Another reporter has its own budget.
    let (s, v) = report(&api, batch(4)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let admin = h.operator(Role::Auditor).await;
    let stored = list(&admin, "").await;
    let by = |who: &str| stored.iter().filter(|d| d.1 == who).count();
    assert_eq!((by(WEB), by(API), stored.len()), (5, 4, 9), "{stored:?}");
    assert_eq!(h.auth.metrics.rate_limited.get(&["denials"]), 1);
}
both_backends!(reports_are_rate_limited_per_reporter);
