//! CA rotation and emergency CA revocation under continuous traffic through a
//! pair of sidecars (A outbound → B inbound → echo app), with a real
//! `tessera-ca` on SQLite and on PostgreSQL.
//!
//! - Two scheduled rotations (`POST /v1/ca/rotate`: prepare now, activate after
//!   the overlap) while the sidecars also renew every few seconds: zero failed
//!   connections, short or long. The bundle reaches both sidecars before any
//!   leaf is signed by the new CA, so no handshake ever meets an unknown issuer.
//! - Emergency revocation of the active CA with a standby published: every
//!   connection authenticated by the revoked CA is closed, the sidecars re-issue
//!   under the standby, and traffic recovers.

mod common;

use common::*;
use hyper::Method;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::Instant;
use tessera_core::client::Client;
use tessera_test_support::{Ca, CaBuilder, Db, TestDb, await_closed, both_backends, ca_ids};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};

/// Traffic through the pair until stopped: short connections (one echo each)
/// and three long-lived ones, counting successes and recording failures.
struct Traffic {
    ok: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    async fn start(target: String) -> Traffic {
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let mut longs = Vec::new();
        for _ in 0..3 {
            longs.push(TcpStream::connect(&target).await.unwrap());
        }
        let (ok2, errors2) = (ok.clone(), errors.clone());
        let task = tokio::spawn(async move {
            while !*stopped.borrow_and_update() {
                for _ in 0..10 {
                    match TcpStream::connect(&target).await {
                        Ok(mut s) => match echo(&mut s, b"short").await {
                            Ok(()) => {
                                ok2.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => errors2.lock().await.push(format!("short: {e}")),
                        },
                        Err(e) => errors2.lock().await.push(format!("connect: {e}")),
                    }
                }
                for l in longs.iter_mut() {
                    if let Err(e) = echo(l, b"long-lived").await {
                        errors2.lock().await.push(format!("long: {e}"));
                    }
                }
            }
        });
        Traffic {
            ok,
            errors,
            stop,
            task,
        }
    }

    async fn finish(self) -> (u64, Vec<String>) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        (
            self.ok.load(Ordering::Relaxed),
            self.errors.lock().await.clone(),
        )
    }
}

/// A CA on `db` with a fast schedule: checks every second, activates a
/// requested rotation 3 s after its generation was published.
fn start_ca(db: &TestDb, extra: &[&str]) -> Ca {
    CaBuilder::new()
        .sets([
            "rotation.check_interval_seconds=1",
            "rotation.lease_seconds=3",
            "rotation.min_overlap_seconds=3",
        ])
        .sets(extra.iter().copied())
        .database(db)
        .start("tessera-ca")
}

/// Sidecars A (outbound) and B (inbound, allows A) renewing at 10 % of a 60 s life.
async fn renewing_pair(ca: &Ca, app: &str) -> (Sidecar, Sidecar) {
    let [ta, tb] = short_lived_tokens(ca, ["ra", "rb"], 60).await;
    let fast =
        "[renew]\nat_fraction = 0.1\njitter_fraction = 0.0\n[revocation]\nwait_seconds = 10\n";
    pair(ca, app, ("ra", &ta, fast), ("rb", &tb, fast))
}

async fn ca_rotates_twice_under_traffic(db: Db) {
    let db = TestDb::new(db).await;
    let ca = start_ca(&db, &["rotation.enabled=false"]);
    let app = echo_server().await;
    let (a, b) = renewing_pair(&ca, &app).await;
    let traffic = Traffic::start(a.addr("outbound", "out")).await;
    let first = ca_ids(&ca.call(Method::GET, "/v1/ca", None).await, "active")[0].clone();
    let mut generations = vec![first];
    for round in 1..=2 {
        let v = ca.call(Method::POST, "/v1/ca/rotate", None).await;
        let prepared = ca_ids(&v, "prepared")[0].clone();
        // Both sidecars hold the new bundle (within the overlap, before activation).
        a.await_metric("tessera_sidecar_bundle_updates_total", round as f64)
            .await;
        b.await_metric("tessera_sidecar_bundle_updates_total", round as f64)
            .await;
        let v = await_ca(ca.admin(), "scheduled activation", |v| {
            ca_ids(v, "active") == vec![prepared.clone()]
        })
        .await;
        assert!(
            ca_ids(&v, "retired").contains(generations.last().unwrap()),
            "{v}"
        );
        generations.push(prepared);
        // Both sidecars renew under the new CA while traffic flows.
        let (ia, ib) = (
            a.count_log("identity installed"),
            b.count_log("identity installed"),
        );
        let end = Instant::now() + Duration::from_secs(30);
        for (s, before) in [(&a, ia), (&b, ib)] {
            let left = end.saturating_duration_since(Instant::now());
            s.proc
                .wait_for(&format!("renewal after round {round}"), left, |o| {
                    (o.stderr_count("identity installed") > before).then_some(())
                });
        }
    }
    let (ok, errors) = traffic.finish().await;
    assert!(
        errors.is_empty(),
        "{} failed connections across two CA rotations: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 100, "too little traffic: {ok}");
    // No denial of any kind on either side.
    for s in [&a, &b] {
        let page = s.admin_get("/metrics").await;
        assert!(
            !page
                .lines()
                .any(|l| l.starts_with("tessera_sidecar_denied_total") && !l.ends_with(" 0")),
            "{page}"
        );
    }
    let audit = ca.call(Method::GET, "/v1/audit?limit=1000", None).await;
    let activations = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "ca.activate")
        .count();
    assert_eq!(activations, 2, "{audit}");
    drop((a, b, ca));
}

both_backends!(ca_rotates_twice_under_traffic);

async fn emergency_ca_revocation_under_traffic(db: Db) {
    let db = TestDb::new(db).await;
    // A standby generation is kept published, so revoking the active one
    // promotes a CA every sidecar already trusts.
    let ca = start_ca(&db, &["rotation.standby=true"]);
    let v = await_ca(ca.admin(), "standby prepared", |v| {
        ca_ids(v, "prepared").len() == 1
    })
    .await;
    let (old, standby) = (
        ca_ids(&v, "active")[0].clone(),
        ca_ids(&v, "prepared")[0].clone(),
    );
    // The admin certificate falls with its CA: keep an API token, and trust the
    // current bundle (old + standby) to reach the server afterwards.
    let token = admin_token(&ca).await;
    let app = echo_server().await;
    let (a, b) = renewing_pair(&ca, &app).await;
    let r = ca
        .admin()
        .call(Method::GET, "/v1/bundle", None)
        .await
        .unwrap();
    let anchors = tessera_core::pem::certs(&r.body).unwrap();
    assert_eq!(anchors.len(), 2);
    let ops = Client::new(
        ca.url(),
        tessera_core::tls::api_client_config(&anchors, None, false).unwrap(),
        Some(token),
    )
    .unwrap();

    let target = a.addr("outbound", "out");
    let mut long = TcpStream::connect(&target).await.unwrap();
    echo(&mut long, b"before").await.unwrap();
    let traffic = Traffic::start(target.clone()).await;
    while traffic.ok.load(Ordering::Relaxed) < 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let r = ops
        .call(Method::POST, &format!("/v1/ca/{old}/revoke"), None)
        .await
        .unwrap();
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["replacement"], standby.as_str(), "{v}");
    assert!(v.get("warning").is_none(), "{v}");
    // The connection authenticated by the revoked CA does not survive.
    await_closed(
        &mut long,
        Duration::from_secs(5),
        "connection from the revoked CA",
    )
    .await;
    // Both sidecars re-issue under the standby at once.
    for s in [&a, &b] {
        s.proc
            .await_stderr("re-issuing now", Duration::from_secs(10));
    }
    // Traffic recovers: 20 consecutive new connections succeed.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut streak = 0;
    while streak < 20 {
        assert!(std::time::Instant::now() < end, "traffic did not recover");
        let ok = match TcpStream::connect(&target).await {
            Ok(mut s) => echo(&mut s, b"after").await.is_ok(),
            Err(_) => false,
        };
        if ok {
            streak += 1;
        } else {
            streak = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (ok, errors) = traffic.finish().await;
    assert!(ok > 0);
    eprintln!(
        "{} connections failed during the emergency, then recovered",
        errors.len()
    );
    // Each sidecar's identity now comes from the standby: renewals recorded in
    // the ledger by the new CA, and the feed holds the old leaves as cACompromise.
    let r = ops
        .call(Method::GET, "/v1/revocations?since=0", None)
        .await
        .unwrap();
    let feed: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        feed["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "ca_compromise" && e["spiffe_id"] == "spiffe://example.org/ra"),
        "{feed}"
    );
    let mut fresh = TcpStream::connect(&target).await.unwrap();
    echo(&mut fresh, b"a new long connection").await.unwrap();
    drop((a, b, ca));
}

both_backends!(emergency_ca_revocation_under_traffic);
