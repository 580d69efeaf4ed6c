//! Process-level tests: the real `tessera-ca` binary, started as child
//! processes on loopback ports, talked to over HTTPS with the admin
//! credentials each process writes into its data directory.
//!
//! Nothing here sleeps to wait for an event: startup is the one stdout line the
//! binary prints once it listens, and exit is both of its pipes closing. Every
//! wait has a generous deadline that fails the test, and every child is killed
//! and reaped when its guard drops.

use crate::common::{Db, TestDb, ca_ids, create_entry, csr, get, issue, post, renew, revoke};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_core::api::AuditRecord;
use tessera_core::client::Client;
use tessera_test_support::{Ca, CaBuilder, Clients, poll_until, random_kek, wait_listening};
use x509_parser::prelude::FromDer;

/// The SQLite URL of a data directory's database.
fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/tessera.db?mode=rwc", dir.display())
}

/// How these tests start one `tessera-ca` process: data in `data_dir`, the
/// trust domain named on the command line.
fn opts(data_dir: &Path) -> CaBuilder {
    CaBuilder::new()
        .data_dir(data_dir)
        .trust_domain("example.org")
}

/// A new client holding the admin credentials `r` wrote (one per task).
fn admin_of(r: &Ca) -> Client {
    r.with_cert(&r.read("cert.pem"), &r.read("key.pem"))
}

/// `GET /v1/ca` as admin.
async fn ca_status(r: &Ca) -> Value {
    let (s, v) = get(r.admin(), "/v1/ca").await;
    assert_eq!(s, StatusCode::OK, "{}: {v}", r.name());
    v
}

/// Fetches and parses a replica's CRL (DER); returns the revoked serials, hex.
async fn crl_serials(r: &Ca) -> Vec<String> {
    let reply = r.fetch("/v1/crl").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", r.name());
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&reply.body).unwrap();
    let anchors = r.anchors();
    let ca = tessera_core::svid::parse(&anchors[0]).unwrap();
    crl.verify_signature(&ca.tbs_certificate.subject_pki)
        .expect("CRL signed by the CA");
    crl.iter_revoked_certificates()
        .map(|c| hex::encode(c.raw_serial()))
        .collect()
}

/// The whole audit log, in pages of 1000, alternating between replicas.
async fn whole_audit_log(replicas: &[&Ca]) -> Vec<AuditRecord> {
    let mut all: Vec<AuditRecord> = vec![];
    for page in 0.. {
        let r = replicas[page % replicas.len()];
        let after = all.last().map(|a| a.seq).unwrap_or(0);
        let (s, v) = get(r.admin(), &format!("/v1/audit?after={after}&limit=1000")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let items: Vec<AuditRecord> = serde_json::from_value(v["items"].clone()).unwrap();
        let n = items.len();
        all.extend(items);
        if n < 1000 {
            break;
        }
    }
    all
}

/// The whole audit log through `replicas`, checked: one hash chain that
/// verifies, seqs 1..n with no gap, and exactly one CA ever created.
async fn single_chain(replicas: &[&Ca]) -> Vec<AuditRecord> {
    let log = whole_audit_log(replicas).await;
    tessera_core::audit::verify_chain([0; 32], &log)
        .unwrap_or_else(|seq| panic!("audit chain broken at seq {seq}"));
    let seqs: Vec<i64> = log.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=log.len() as i64).collect::<Vec<_>>());
    assert_eq!(count_actions(&log, "ca.create"), 1, "one CA bootstrapped");
    log
}

fn count_actions(records: &[AuditRecord], action: &str) -> usize {
    records.iter().filter(|r| r.action == action).count()
}

/// Two replicas on one PostgreSQL database: one CA after racing the first-start
/// bootstrap; single-use join tokens, distinct serials, revocations, the CRL
/// and the audit chain all hold across replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_postgres() {
    let t0 = Instant::now();
    let db = TestDb::new(Db::Postgres).await;
    let kek = random_kek();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts_a = opts(dir_a.path()).database_url(&db.url).kek(&kek);
    let opts_b = opts(dir_b.path()).database_url(&db.url).kek(&kek);

    // Both start at once on the empty database and race the bootstrap.
    let (pa, pb) = (opts_a.spawn("A"), opts_b.spawn("B"));
    let a = opts_a.ready(pa);
    let b = opts_b.ready(pb);
    eprintln!(
        "startup: A {:?}, B {:?} (racing one empty database)",
        a.startup(),
        b.startup()
    );
    let (sa, sb) = (ca_status(&a).await, ca_status(&b).await);
    assert_eq!(sa["storage"], "postgres");
    let (ids_a, ids_b) = (ca_ids(&sa, "active"), ca_ids(&sb, "active"));
    assert_eq!(ids_a.len(), 1, "A: {sa}");
    assert_eq!(ids_a, ids_b, "A: {sa}\nB: {sb}");
    assert_eq!(
        sa["cas"].as_array().unwrap().len(),
        1,
        "the loser stored a CA: {sa}"
    );
    let ca_id = ids_a[0].clone();
    assert_eq!(a.read("bundle.pem"), b.read("bundle.pem"));
    // Credentials are shared: A's admin works on B and B's on A.
    let (s, _) = get(a.admin(), "/v1/ca").await;
    assert_eq!(s, StatusCode::OK);
    let cross = b.with_cert(&a.read("cert.pem"), &a.read("key.pem"));
    let (s, v) = get(&cross, "/v1/ca").await;
    assert_eq!(s, StatusCode::OK, "A's admin on B: {v}");
    let cross = a.with_cert(&b.read("cert.pem"), &b.read("key.pem"));
    let (s, v) = get(&cross, "/v1/ca").await;
    assert_eq!(s, StatusCode::OK, "B's admin on A: {v}");

    // (a) A join token made through A is redeemed at most once across both.
    let t = Instant::now();
    for (r, id) in [
        (&a, "spiffe://example.org/web"),
        (&b, "spiffe://example.org/batch"),
    ] {
        create_entry(
            r.admin(),
            json!({"spiffe_id": id, "selectors": ["unix:uid:1000"]}),
        )
        .await;
    }
    let (s, v) = post(
        a.admin(),
        "/v1/tokens",
        json!({"spiffe_id": "spiffe://example.org/web"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let gate = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = vec![];
    for i in 0..8 {
        let r = if i % 2 == 0 { &a } else { &b };
        let (name, client) = (r.name().to_owned(), r.anonymous());
        let (key, csr) = csr();
        let (gate, token) = (gate.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let (s, v) = post(
                &client,
                "/v1/certs/redeem",
                json!({"token": token, "csr": csr}),
            )
            .await;
            (name, s, v, key.serialize_pem())
        }));
    }
    let mut winners = vec![];
    for task in tasks {
        let (name, s, v, key) = task.await.unwrap();
        if s == StatusCode::CREATED {
            winners.push((name, v, key));
        } else {
            assert_eq!(s, StatusCode::FORBIDDEN, "redeem via {name}: {v}");
            assert_eq!(v["code"], "join_token_refused", "redeem via {name}: {v}");
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "one token, {} certificates",
        winners.len()
    );
    let (won_via, issued, workload_key) = winners.remove(0);
    let workload_cert = issued["certificate"].as_str().unwrap().to_owned();
    let workload_serial = issued["serial"].as_str().unwrap().to_owned();
    // The certificate A or B issued is good for renewal on B.
    let workload_on_b = b.with_cert(&workload_cert, &workload_key);
    let (s, v) = renew(&workload_on_b).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "renewal on B of a cert from {won_via}: {v}"
    );
    eprintln!(
        "(a) join-token race: 1 of 8 won (via {won_via}) in {:?}",
        t.elapsed()
    );

    // (b) 200 issuances through both replicas at once: distinct serials.
    const N: usize = 200;
    let t = Instant::now();
    let admins = [Arc::new(admin_of(&a)), Arc::new(admin_of(&b))];
    let gate = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = vec![];
    for i in 0..N {
        let (admin, gate) = (admins[i % 2].clone(), gate.clone());
        let csr = csr().1;
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            post(
                &admin,
                "/v1/certs",
                json!({"spiffe_id": "spiffe://example.org/batch", "csr": csr}),
            )
            .await
        }));
    }
    let mut serials = HashSet::new();
    for task in tasks {
        let (s, v) = task.await.unwrap();
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert!(
            serials.insert(v["serial"].as_str().unwrap().to_owned()),
            "serial reused: {v}"
        );
    }
    assert_eq!(serials.len(), N);
    eprintln!(
        "(b) {N} concurrent issuances via A and B in {:?}",
        t.elapsed()
    );
    let (s, list) = get(
        b.admin(),
        "/v1/certs?spiffe_id=spiffe%3A%2F%2Fexample.org%2Fbatch&limit=1000",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let items = list["items"].as_array().unwrap();
    let listed: HashSet<String> = items
        .iter()
        .map(|c| c["serial"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(items.len(), N);
    assert_eq!(listed, serials);
    assert!(items.iter().all(|c| c["ca_id"] == ca_id.as_str()));
    let (s, all) = get(a.admin(), "/v1/certs?limit=1000").await;
    assert_eq!(s, StatusCode::OK);
    // Two admin certificates (one per replica), the redeemed one, its renewal, the batch.
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        2 + 1 + 1 + N,
        "{all}"
    );

    // (c) A revocation written through A reaches B's feed, B's CRL and B's renewal check.
    let t = Instant::now();
    let since = ca_status(&b).await["revocation_version"].as_i64().unwrap();
    let follower = admin_of(&b);
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let r = get(&follower, &format!("/v1/revocations?since={since}&wait=30")).await;
        (r, started.elapsed())
    });
    let (s, rv) = revoke(
        a.admin(),
        json!({"serial": workload_serial, "reason": "key_compromise"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rv}");
    assert_eq!(rv["revoked"], json!([workload_serial]));
    let revoked_at = Instant::now();
    let ((s, feed), polled_for) = poll.await.unwrap();
    let noticed = revoked_at.elapsed();
    assert_eq!(s, StatusCode::OK, "{feed}");
    let events = feed["revocations"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{feed}");
    assert_eq!(events[0]["serial"], workload_serial.as_str());
    assert_eq!(events[0]["reason"], "key_compromise");
    assert_eq!(feed["version"], rv["version"]);
    // B has noticed; its CRL must list the serial now.
    let on_b = crl_serials(&b).await;
    assert_eq!(
        on_b,
        vec![workload_serial.clone()],
        "B's feed showed the revocation but B's CRL does not list it yet"
    );
    assert_eq!(
        crl_serials(&a).await,
        vec![workload_serial.clone()],
        "A's CRL"
    );
    let (s, v) = renew(&workload_on_b).await;
    assert!(
        s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN,
        "B renewed a certificate revoked through A: {s} {v}"
    );
    eprintln!(
        "(c) B's long-poll answered {noticed:?} after A's revocation (polled {polled_for:?}); step {:?}",
        t.elapsed()
    );

    // (d) One audit chain across both replicas, and both serve the same one.
    let log = single_chain(&[&a, &b]).await;
    assert_eq!(
        count_actions(&log, "credential.create"),
        1,
        "one admin credential"
    );
    assert_eq!(count_actions(&log, "cert.issue_operator"), 2);
    assert_eq!(count_actions(&log, "cert.redeem"), 1);
    assert_eq!(count_actions(&log, "cert.renew"), 1);
    assert_eq!(count_actions(&log, "cert.issue"), N);
    assert_eq!(count_actions(&log, "cert.revoke"), 1);
    let from_b = whole_audit_log(&[&b]).await;
    assert_eq!(
        log.iter().map(|r| &r.hash).collect::<Vec<_>>(),
        from_b.iter().map(|r| &r.hash).collect::<Vec<_>>()
    );
    eprintln!(
        "(d) audit chain of {} records verified; total {:?}",
        log.len(),
        t0.elapsed()
    );
}

/// The KEK file must be private, and a wrong KEK is refused without printing secrets.
#[test]
fn refuses_group_readable_kek_file() {
    use std::os::unix::fs::PermissionsExt;
    // A KEK file readable by the group.
    let dir = tempfile::tempdir().unwrap();
    let kek_path = dir.path().join("kek");
    let secret = random_kek();
    std::fs::write(&kek_path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&kek_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let t = Instant::now();
    let mut p = opts(dir.path()).spawn("group-readable");
    assert!(
        wait_listening(&mut p).is_none(),
        "started with a 0640 KEK file"
    );
    let took = t.elapsed();
    let status = p.status().unwrap();
    let err = p.stderr();
    assert!(!status.success(), "{}", p.describe());
    assert!(
        err.contains(&kek_path.display().to_string()),
        "file not named: {err}"
    );
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(err.contains("640"), "mode not named: {err}");
    assert!(!err.contains(&secret), "stderr shows the KEK: {err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        !dir.path().join("tessera.db").exists(),
        "opened the database anyway"
    );
    eprintln!("0640 KEK file refused in {took:?}");

    // A KEK given in the environment that does not open the stored CA key.
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (random_kek(), random_kek());
    let url = sqlite_url(dir.path());
    let mut first = opts(dir.path()).database_url(&url).kek(&x).start("kek-x");
    assert!(
        !dir.path().join("kek").exists(),
        "KEK file written although TESSERA_KEK is set"
    );
    // Only a means to free the database here; restart_keeps_ca_and_admin checks
    // that SIGTERM is a clean exit.
    first.terminate();
    let t = Instant::now();
    let mut second = opts(dir.path()).database_url(&url).kek(&y).spawn("kek-y");
    assert!(
        wait_listening(&mut second).is_none(),
        "started with the wrong KEK"
    );
    let took = t.elapsed();
    let err = second.stderr();
    assert!(!second.status().unwrap().success(), "{}", second.describe());
    assert!(err.contains("CA key could not be decrypted"), "{err}");
    for (name, k) in [("X", &x), ("Y", &y)] {
        let logs = format!("{}{}", first.process().stderr(), err).to_ascii_lowercase();
        assert!(!logs.contains(k.as_str()), "KEK {name} printed: {logs}");
    }
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("wrong KEK refused in {took:?}");
}

/// Configuration errors exit non-zero and name the option at fault.
#[test]
fn config_errors_name_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = opts(dir.path()).set("issuance.bogus=1");
    let bad_td = opts(dir.path()).trust_domain("Bad.Domain");
    for (o, needles) in [
        (bogus, &["bogus", "issuance"][..]),
        (bad_td, &["trust_domain"][..]),
    ] {
        let needle = needles[0];
        let mut p = o.spawn(needle);
        assert!(
            wait_listening(&mut p).is_none(),
            "started: {}",
            p.describe()
        );
        let status = p.status().unwrap();
        assert!(!status.success(), "{}", p.describe());
        assert!(status.code().is_some_and(|c| c != 0), "{}", p.describe());
        let err = p.stderr();
        for n in needles {
            assert!(err.contains(n), "{n} not named: {err}");
        }
        assert!(p.stdout_lines().is_empty(), "{}", p.describe());
        eprintln!("{needle}: {}", err.trim().replace('\n', " | "));
    }
    assert!(
        !dir.path().join("tessera.db").exists(),
        "a configuration error still opened the database"
    );
}

/// A restart on the same data dir keeps the CA, the admin credentials and the ledger;
/// SIGTERM is a clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_ca_and_admin() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // No TESSERA_KEK: the KEK file in the data dir is created, then reused.
    let opts = opts(dir.path()).database_url(&sqlite_url(dir.path()));
    let mut first = opts.start("first");
    let kek_mode = std::fs::metadata(dir.path().join("kek"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(kek_mode & 0o777, 0o600);
    let status = ca_status(&first).await;
    assert_eq!(status["storage"], "sqlite");
    let ids = ca_ids(&status, "active");
    assert_eq!(ids.len(), 1, "{status}");
    let (bundle, admin_cert) = (first.read("bundle.pem"), first.read("cert.pem"));
    let admin = first.admin();
    create_entry(
        admin,
        json!({"spiffe_id": "spiffe://example.org/db", "selectors": ["unix:uid:70"]}),
    )
    .await;
    let (s, issued) = issue(admin, "spiffe://example.org/db").await;
    assert_eq!(s, StatusCode::CREATED, "{issued}");
    let t = Instant::now();
    let exit = first.terminate();
    eprintln!("SIGTERM: exited {exit:?} after {:?}", t.elapsed());
    assert_eq!(exit.code(), Some(0), "{}", first.process().describe());

    let mut second = opts.start("second");
    eprintln!(
        "startups: first {:?}, restart {:?}",
        first.startup(),
        second.startup()
    );
    let status = ca_status(&second).await;
    assert_eq!(
        ca_ids(&status, "active"),
        ids,
        "CA changed across restart: {status}"
    );
    assert_eq!(status["cas"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(second.read("bundle.pem"), bundle);
    assert_eq!(
        second.read("cert.pem"),
        admin_cert,
        "admin certificate re-issued"
    );
    assert!(
        second
            .read("cli.toml")
            .contains(&format!("https://localhost:{}", second.port())),
        "{}",
        second.read("cli.toml")
    );
    // The credentials written by the first run, on the second.
    let (s, v) = get(second.admin(), "/v1/ca").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let serial = issued["serial"].as_str().unwrap();
    let (s, v) = get(second.admin(), &format!("/v1/certs/{serial}")).await;
    assert_eq!(s, StatusCode::OK, "certificate of the first run lost: {v}");
    let log = whole_audit_log(&[&second]).await;
    tessera_core::audit::verify_chain([0; 32], &log)
        .unwrap_or_else(|seq| panic!("audit chain broken at seq {seq}"));
    assert_eq!(count_actions(&log, "ca.create"), 1);
    let exit = second.terminate();
    assert_eq!(exit.code(), Some(0), "{}", second.process().describe());

    // The listening line is what scripts and supervisors wait for: SIGTERM as
    // soon as it appears must be a clean exit too.
    for i in 0..5 {
        let mut quick = opts.start(&format!("quick-{i}"));
        let exit = quick.terminate();
        assert_eq!(
            exit.code(),
            Some(0),
            "SIGTERM right after the listening line\n{}",
            quick.process().describe()
        );
    }
}

/// `(id, state)` of every CA generation, straight from the database.
async fn ca_rows(c: &mut sqlx::AnyConnection) -> Vec<(String, String)> {
    use sqlx::Row;
    sqlx::query("SELECT id, state FROM cas ORDER BY id")
        .fetch_all(c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The holder of the rotation schedule's lease.
async fn schedule_holder(c: &mut sqlx::AnyConnection) -> Option<String> {
    use sqlx::Row;
    sqlx::query("SELECT holder FROM leases WHERE name = 'ca-schedule'")
        .fetch_optional(c)
        .await
        .unwrap()
        .map(|r| r.get(0))
}

fn in_state(rows: &[(String, String)], state: &str) -> Vec<String> {
    rows.iter()
        .filter(|(_, s)| s == state)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Two replicas on one PostgreSQL with a fast rotation schedule. The one
/// holding the `ca-schedule` lease prepares the next generation and is
/// SIGKILLed before activating it; the other takes the lease once it expires
/// and activates that same prepared generation. Throughout, exactly one
/// generation is active at every observation, none is prepared twice, and the
/// audit chain stays single and valid. The killed replica, restarted, rejoins
/// without bootstrapping, taking the lease or changing the CA set.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_killed_mid_rotation() {
    let db = TestDb::new(Db::Postgres).await;
    let kek = random_kek();
    // A 120 s CA: prepare at 2 % of its life, activate at 15 % (18 s), so
    // there is time to kill the preparer before activation.
    let sets = [
        "ca.ttl_seconds=120",
        "issuance.max_ttl_seconds=60",
        "issuance.default_ttl_seconds=60",
        "rotation.prepare_at=0.02",
        "rotation.activate_at=0.15",
        "rotation.min_overlap_seconds=2",
        "rotation.check_interval_seconds=1",
        "rotation.lease_seconds=3",
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replica = |dir: &Path| opts(dir).database_url(&db.url).kek(&kek).sets(sets);
    let (opts_a, opts_b) = (replica(dir_a.path()), replica(dir_b.path()));
    let (pa, pb) = (opts_a.spawn("A"), opts_b.spawn("B"));
    let mut replicas = vec![opts_a.ready(pa), opts_b.ready(pb)];

    // An independent observer of the cas table, every 50 ms, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observer = {
        let (stop, mut c) = (stop.clone(), db.raw().await);
        tokio::spawn(async move {
            let mut seen = vec![];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(ca_rows(&mut c).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    let mut c = db.raw().await;
    let first = poll_until(Duration::from_secs(30), "active CA", || async {
        in_state(&ca_rows(&mut db.raw().await).await, "active").pop()
    })
    .await;

    // The lease holder prepares the next generation.
    let prepared = poll_until(Duration::from_secs(30), "prepared generation", || async {
        in_state(&ca_rows(&mut db.raw().await).await, "prepared").pop()
    })
    .await;
    let holder = schedule_holder(&mut c).await.expect("a schedule lease");
    let victim = replicas
        .iter()
        .position(|r| r.process().stderr().contains(&holder))
        .unwrap_or_else(|| panic!("no replica logged replica id {holder}"));
    let mut killed = replicas.remove(victim);
    let survivor = replicas.pop().unwrap();
    let survivor_id = {
        let err = survivor.process().stderr();
        let at = err
            .find("replica=")
            .expect("replica id in the listening line")
            + 8;
        err[at..]
            .trim_start_matches('"')
            .chars()
            .take(32)
            .collect::<String>()
    };
    assert_ne!(survivor_id, holder);
    let status = killed.kill();
    let killed_at = Instant::now();
    let rows = ca_rows(&mut c).await;
    assert_eq!(
        in_state(&rows, "prepared"),
        vec![prepared.clone()],
        "killed too late: the generation was already activated: {rows:?}"
    );
    assert_eq!(in_state(&rows, "active"), vec![first.clone()]);
    eprintln!(
        "{} (holder {holder}) prepared {prepared} and was SIGKILLed ({status:?}); {} survives",
        killed.name(),
        survivor.name()
    );

    // The survivor takes the lease once it expires, then activates the
    // generation the dead replica prepared (it does not prepare another).
    poll_until(Duration::from_secs(15), "lease takeover", || async {
        (schedule_holder(&mut db.raw().await).await.as_deref() == Some(survivor_id.as_str()))
            .then_some(())
    })
    .await;
    eprintln!("lease taken over {:?} after the kill", killed_at.elapsed());
    poll_until(
        Duration::from_secs(40),
        "activation of the prepared generation",
        || async {
            let rows = ca_rows(&mut db.raw().await).await;
            (in_state(&rows, "active") == vec![prepared.clone()]).then_some(())
        },
    )
    .await;
    let rows = ca_rows(&mut c).await;
    assert!(in_state(&rows, "retired").contains(&first), "{rows:?}");
    eprintln!(
        "{prepared} activated by the survivor {:?} after the kill",
        killed_at.elapsed()
    );

    // The killed replica restarts and rejoins: same CA set, no bootstrap, no
    // lease taken from a live holder, the same bundle as the survivor.
    let before = whole_audit_log(&[&survivor]).await;
    let victim_opts = if victim == 0 { &opts_a } else { &opts_b };
    let mut again = victim_opts.start(&format!("{}-restarted", killed.name()));
    poll_until(
        Duration::from_secs(10),
        "the same bundle on both",
        || async {
            let get = |r: &Ca| {
                let client = r.anonymous();
                async move {
                    client
                        .call(Method::GET, "/v1/bundle", None)
                        .await
                        .unwrap()
                        .body
                }
            };
            (get(&again).await == get(&survivor).await).then_some(())
        },
    )
    .await;
    // Three schedule ticks of the restarted replica: the lease stays put.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            schedule_holder(&mut c).await.as_deref(),
            Some(survivor_id.as_str())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both serve the generation the database says is active (the schedule
    // keeps rotating meanwhile, so compare until they agree).
    poll_until(
        Duration::from_secs(10),
        "the same active CA on both",
        || async {
            let (sa, sb) = (ca_status(&again).await, ca_status(&survivor).await);
            (ca_ids(&sa, "active") == ca_ids(&sb, "active") && ca_ids(&sa, "active").len() == 1)
                .then_some(())
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = observer.await.unwrap();

    // Invariants over the whole run.
    assert!(seen.len() > 100, "{} observations", seen.len());
    for rows in &seen {
        assert_eq!(in_state(rows, "active").len(), 1, "{rows:?}");
        assert!(in_state(rows, "prepared").len() <= 1, "{rows:?}");
    }
    let log = single_chain(&[&again, &survivor]).await;
    let prepares: Vec<&str> = log
        .iter()
        .filter(|r| r.action == "ca.prepare")
        .map(|r| r.target.as_str())
        .collect();
    let unique: HashSet<&str> = prepares.iter().copied().collect();
    assert_eq!(
        unique.len(),
        prepares.len(),
        "a generation prepared twice: {prepares:?}"
    );
    let activations: Vec<&str> = log
        .iter()
        .filter(|r| r.action == "ca.activate")
        .map(|r| r.target.as_str())
        .collect();
    assert_eq!(
        activations.iter().filter(|t| **t == prepared).count(),
        1,
        "{activations:?}"
    );
    // Whatever the restarted replica did is schedule work (none of it a bootstrap).
    for r in &log[before.len()..] {
        assert!(
            matches!(
                r.action.as_str(),
                "ca.prepare" | "ca.activate" | "ca.remove"
            ),
            "unexpected after the restart: {r:?}"
        );
    }
    let _ = again.terminate();
}

/// Environment overrides (`TESSERA__SECTION__KEY`) reach the running server,
/// `--set` wins over them, and a bad one stops the start naming the option.
#[tokio::test]
async fn environment_overrides_reach_the_server() {
    let ca = CaBuilder::new()
        .env("TESSERA__TRUST_DOMAIN", "env.example")
        .env("TESSERA__ISSUANCE__DEFAULT_TTL_SECONDS", "900")
        .set("issuance.default_ttl_seconds=1200")
        .start("tessera-ca");
    assert_eq!(ca_status(&ca).await["trust_domain"], "env.example");
    let id = "spiffe://env.example/web";
    let entry = ca
        .call(
            Method::POST,
            "/v1/entries",
            Some(json!({"spiffe_id": id, "selectors": ["t:x"]})),
        )
        .await;
    assert_eq!(entry["ttl_seconds"], 1200, "{entry}");

    let mut bad = CaBuilder::new()
        .env("TESSERA__LIMITS__MAX_CONNECTIONS", "0")
        .spawn("tessera-ca bad env");
    assert!(!bad.wait_exit(Duration::from_secs(30)).success());
    assert!(
        bad.stderr().contains("limits.max_connections"),
        "{}",
        bad.describe()
    );
}

/// Issue 11 item 9 (the README's way): the PostgreSQL password stays off the
/// command line. The URL names no password; the server reads it from a
/// pgpass file (`PGPASSFILE`, mode 0600), and `ps` (`/proc/PID/cmdline`)
/// shows none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_password_from_a_pgpass_file_not_the_command_line() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new(Db::Postgres).await;
    let rest = db.url.strip_prefix("postgres://").unwrap();
    let (creds, location) = rest.split_once('@').unwrap();
    let (user, password) = creds.split_once(':').unwrap();
    let (host_port, name) = location.split_once('/').unwrap();
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("{host}:{port}:{name}:{user}:{password}\n")).unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = CaBuilder::new()
        .database_url(&format!("postgres://{user}@{host_port}/{name}"))
        .env("PGPASSFILE", pgpass.to_str().unwrap())
        .start("tessera-ca pgpass");
    let (s, _) = get(ca.admin(), "/v1/ca").await;
    assert_eq!(s, StatusCode::OK);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", ca.process().id())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains(name), "{cmdline}");
    assert!(
        !cmdline.contains(&format!(":{password}@")),
        "the password is on the command line: {cmdline}"
    );
}
