//! Workload API conformance with a client no one here wrote (the `spiffe`
//! crate), against a real `tessera-agent` process and a real `tessera-ca`
//! process on loopback. The test process itself is the workload: a host
//! process, attested by its UID (`unix:uid:0` when run as root, as here).

mod support;

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;
use support::{Agent, host_entry, host_node, node_token, node_token_ttl, uid_selector};
use tessera_test_support::{Ca, CaBuilder};
use tessera_workload_api::X509SvidResponse;

/// The next message on an X.509-SVID stream, within the agent's sync bound
/// (15 s); `after` names what should have caused it.
async fn next_push(
    stream: &mut tonic::codec::Streaming<X509SvidResponse>,
    after: &str,
) -> X509SvidResponse {
    tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .unwrap_or_else(|_| panic!("no push after {after}"))
        .unwrap()
        .unwrap()
}

/// An agent on node `host` whose node certificate, and the SVIDs of its one
/// host entry (`spiffe_id`), live 60 s.
async fn short_lived_agent(ca: &Ca, host: &str, spiffe_id: &str) -> Agent {
    let token = node_token_ttl(ca, host, Some(60)).await;
    let node = format!("spiffe://example.org/tessera/agent/{host}");
    host_entry(ca, spiffe_id, &node, Some(60)).await;
    Agent::start(ca, host, &token, None)
}

/// A request carrying the `workload.spiffe.io: true` header, or not.
fn request<T>(message: T, with_header: bool) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if with_header {
        req.metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
    }
    req
}

/// `e` is the refusal of a request without the `workload.spiffe.io` header.
fn assert_header_refused(e: &tonic::Status, path: &str) {
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{path}: {e:?}");
    assert!(e.message().contains("workload.spiffe.io"), "{path}: {e:?}");
}

/// `e` is the refusal of a caller no entry matches.
fn assert_no_entry(e: &tonic::Status) {
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("no_entry"), "{e:?}");
}

/// A raw gRPC client on the agent's socket (no metadata of its own).
async fn raw_grpc(agent: &Agent) -> tonic::client::Grpc<tonic::transport::Channel> {
    let socket = agent.socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://x.invalid")
        .connect_with_connector(tower::service_fn(move |_: hyper::Uri| {
            let s = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(s).await?,
                ))
            }
        }))
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_crate_fetches_svid_and_bundle() {
    let ca = Ca::start();
    let (token, node) = host_node(&ca, "host1", "spiffe://example.org/host-workload").await;
    let node = node.as_str();
    let selector = uid_selector();
    // Parented to another node: never this agent's to give.
    ca.entry(
        "spiffe://example.org/elsewhere",
        &[&selector],
        Some("spiffe://example.org/tessera/agent/other"),
    )
    .await;
    let agent = Agent::start(&ca, "host1", &token, None);
    assert_eq!(agent.spiffe_id, node);
    let addr = format!("unix://{}", agent.socket.display());

    // The socket is world-connectable (0777) in a 0755 directory.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&agent.socket), 0o777);
    assert_eq!(mode(agent.socket.parent().unwrap()), 0o755);

    let client = spiffe::WorkloadApiClient::connect_to(&addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", agent.log()));
    let svid = client
        .fetch_x509_svid()
        .await
        .unwrap_or_else(|e| panic!("fetch_x509_svid: {e}\n{}", agent.log()));
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/host-workload"
    );
    let all = client.fetch_all_x509_svids().await.unwrap();
    assert_eq!(all.len(), 1, "only the entry parented to this node");
    // Our own checker agrees it is an X.509-SVID, with the binding extension.
    let info = tessera_core::svid::check_leaf(svid.leaf().as_ref()).unwrap();
    assert_eq!(
        info.spiffe_id.as_str(),
        "spiffe://example.org/host-workload"
    );
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    let bundle = bundles.get(&td).expect("bundle for example.org");
    let ca_pem = std::fs::read(ca.bundle_path()).unwrap();
    let anchors = tessera_core::pem::certs(&ca_pem).unwrap();
    assert_eq!(bundle.authorities().len(), anchors.len());
    assert_eq!(bundle.authorities()[0].as_ref(), anchors[0].as_ref());
    let ctx = client.fetch_x509_context().await.unwrap();
    assert_eq!(ctx.svids().len(), 1);

    // The CA's ledger records the attestation and the node.
    let serial = info.serial.clone();
    let rec = ca
        .expect(Method::GET, &format!("/v1/certs/{serial}"), None, 200)
        .await;
    assert_eq!(rec["node"], node);
    assert_eq!(rec["attestation"]["method"], "agent");
    assert!(
        rec["attestation"]["selectors"]
            .as_array()
            .unwrap()
            .contains(&json!(selector))
    );

    // Our own client (the sidecar's), on the address form
    // SPIFFE_ENDPOINT_SOCKET uses (the e2e test sets the variable itself).
    let path = tessera_workload_api::parse_address(&addr).unwrap();
    let mut ours = tessera_workload_api::Client::new(&path).unwrap();
    let mut stream = ours.fetch_x509_svid().await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
    assert_eq!(
        first.svids[0].spiffe_id,
        "spiffe://example.org/host-workload"
    );
    assert!(!first.svids[0].x509_svid_key.is_empty());

    // An entry change is pushed on the open stream within the sync bound.
    let second = ca
        .entry(
            "spiffe://example.org/host-workload-2",
            &[&selector],
            Some(node),
        )
        .await;
    let next = next_push(&mut stream, "the entry change").await;
    let mut ids: Vec<&str> = next.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/host-workload",
            "spiffe://example.org/host-workload-2"
        ]
    );
    // Deleting it is pushed too.
    ca.expect(
        Method::DELETE,
        &format!("/v1/entries/{}", second["id"].as_str().unwrap()),
        None,
        204,
    )
    .await;
    let next = next_push(&mut stream, "the entry deletion").await;
    assert_eq!(next.svids.len(), 1);

    // Banning the node ends the stream and refuses new callers.
    ca.expect(Method::POST, "/v1/nodes/host1/ban", Some(json!({})), 200)
        .await;
    let end = tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("the stream ends after the ban");
    let status = end.expect_err("an error status after the ban");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.fetch_x509_svid().await;
        if r.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "banned node still serving SVIDs");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Requests without `workload.spiffe.io: true` are refused with
/// InvalidArgument (raw tonic client, no metadata), on every method; a
/// caller with no entry gets PermissionDenied (X.509 and JWT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let ca = Ca::start();
    let token = node_token(&ca, "host2").await;
    let agent = Agent::start(&ca, "host2", &token, None);
    let grpc = raw_grpc(&agent).await;
    let call = |path: &'static str, with_header: bool| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await.unwrap();
            grpc.server_streaming::<_, X509SvidResponse, _>(
                request(tessera_workload_api::X509SvidRequest {}, with_header),
                hyper::http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(|_| ())
        }
    };
    for path in [
        "/SpiffeWorkloadAPI/FetchX509SVID",
        "/SpiffeWorkloadAPI/FetchX509Bundles",
    ] {
        assert_header_refused(&call(path, false).await.unwrap_err(), path);
    }
    // No entry for this node: permission denied, with the CA's reason.
    assert_no_entry(
        &call("/SpiffeWorkloadAPI/FetchX509SVID", true)
            .await
            .unwrap_err(),
    );
    // Bundles need no entry.
    let bundles = agent
        .spiffe_client()
        .await
        .fetch_x509_bundles()
        .await
        .unwrap();
    assert_eq!(bundles.len(), 1);
    // The JWT methods: no header → InvalidArgument; no entry → PermissionDenied.
    let unary = |path: &'static str, with_header: bool| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await.unwrap();
            let message = tessera_workload_api::JwtSvidRequest {
                audience: vec!["db".into()],
                spiffe_id: String::new(),
            };
            grpc.unary::<_, tessera_workload_api::JwtSvidResponse, _>(
                request(message, with_header),
                hyper::http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(|r| r.into_inner())
        }
    };
    for path in [
        "/SpiffeWorkloadAPI/FetchJWTSVID",
        "/SpiffeWorkloadAPI/ValidateJWTSVID",
    ] {
        assert_header_refused(&unary(path, false).await.unwrap_err(), path);
    }
    let e = call("/SpiffeWorkloadAPI/FetchJWTBundles", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_no_entry(
        &unary("/SpiffeWorkloadAPI/FetchJWTSVID", true)
            .await
            .unwrap_err(),
    );
}

/// The JWT half of the Workload API, through the `spiffe` crate: a JWT-SVID
/// for the attested caller's entry, the JWT bundle holding its key, the
/// agent validating it (claims back) and refusing a wrong audience, a
/// tampered signature, an empty audience and another entry's SPIFFE ID; the
/// JWT bundle stream pushes a prepared CA generation's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_crate_fetches_and_validates_jwt_svids() {
    use futures_util::StreamExt;
    let ca = CaBuilder::new()
        .args(["--set", "rotation.enabled=false"])
        .start("tessera-ca");
    let (token, node) = host_node(&ca, "host5", "spiffe://example.org/jwt-workload").await;
    let node = node.as_str();
    // This caller does not match it.
    ca.entry("spiffe://example.org/other", &["unix:uid:4242"], Some(node))
        .await;
    let agent = Agent::start(&ca, "host5", &token, None);
    let client = agent.spiffe_client().await;

    let svid = client
        .fetch_jwt_svid(["db", "cache"], None)
        .await
        .unwrap_or_else(|e| panic!("fetch_jwt_svid: {e}\n{}", agent.log()));
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/jwt-workload"
    );
    assert_eq!(svid.audience(), ["db".to_string(), "cache".to_string()]);
    // Signed by a key the CA publishes in its bundle for JWT-SVIDs.
    let jwks = ca
        .admin()
        .call(Method::GET, "/v1/bundle?format=jwks", None)
        .await
        .unwrap();
    let published = tessera_core::jwt::bundle_keys(std::str::from_utf8(&jwks.body).unwrap());
    assert!(
        published.iter().any(|k| k.kid == svid.key_id()),
        "the token's kid is not in the CA's bundle"
    );
    // ...and verifies against those keys here too (no agent involved).
    tessera_core::jwt::validate(svid.token(), "db", &published, tessera_core::now_unix())
        .expect("the token verifies against the CA's published keys");

    // The JWT bundle from the agent holds that key (only JWT-SVID keys).
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let bundle = bundles.get(&td).expect("the trust domain's JWT bundle");
    assert!(bundle.find_jwt_authority(svid.key_id()).is_some());
    assert_eq!(bundle.jwt_authorities().count(), published.len());

    // The agent validates it and returns its claims.
    let checked = client
        .validate_jwt_token("cache", svid.token())
        .await
        .unwrap_or_else(|e| panic!("validate_jwt_token: {e}\n{}", agent.log()));
    assert_eq!(checked.spiffe_id(), svid.spiffe_id());
    // Refusals: wrong audience, tampered signature, empty audience.
    let e = client
        .validate_jwt_token("payments", svid.token())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("audience"), "{e}");
    // Change one character in the middle of the signature (the last one
    // carries padding bits and may only break the encoding).
    let token = svid.token();
    let sig_at = token.rfind('.').unwrap() + 1;
    let mid = sig_at + (token.len() - sig_at) / 2;
    let mut forged = token.to_owned();
    let swapped = if &token[mid..=mid] == "A" { "B" } else { "A" };
    forged.replace_range(mid..=mid, swapped);
    let e = client.validate_jwt_token("db", &forged).await.unwrap_err();
    assert!(e.to_string().contains("signature"), "{e}");
    let e = client
        .fetch_jwt_svid(Vec::<String>::new(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("audience"), "{e}");
    // Another entry's SPIFFE ID (its selectors do not match this caller).
    let other = spiffe::SpiffeId::new("spiffe://example.org/other").unwrap();
    let e = client
        .fetch_jwt_svid(["db"], Some(&other))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no_entry"), "{e}");

    // A prepared generation's JWT key is pushed on the JWT bundle stream.
    let mut stream = client.stream_jwt_bundles().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let before = first.get(&td).unwrap().jwt_authorities().count();
    ca.expect(Method::POST, "/v1/ca/prepare", None, 201).await;
    let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap_or_else(|_| panic!("no JWT bundle pushed after prepare\n{}", agent.log()))
        .unwrap()
        .unwrap();
    assert_eq!(next.get(&td).unwrap().jwt_authorities().count(), before + 1);
    // The old token still validates (its key is still published).
    client.validate_jwt_token("db", svid.token()).await.unwrap();
}

/// Rotation is pushed: with a 60 s lifetime the agent re-attests and pushes a
/// new SVID (new serial, new key) at half-life on the open stream, as the
/// `spiffe` crate's stream sees it. The agent renews its own node certificate
/// (also 60 s here) at half-life too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_pushed_at_half_life() {
    use futures_util::StreamExt;
    let ca = Ca::start();
    let agent = short_lived_agent(&ca, "host3", "spiffe://example.org/short").await;
    let client = agent.spiffe_client().await;
    let mut stream = client.stream_x509_svids().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let started = Instant::now();
    let second = tokio::time::timeout(Duration::from_secs(50), stream.next())
        .await
        .expect("a rotation within the lifetime")
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let serial = |s: &spiffe::X509Svid| {
        tessera_core::svid::check_leaf(s.leaf().as_ref())
            .unwrap()
            .serial
    };
    assert_ne!(serial(&first), serial(&second));
    assert_ne!(
        first.private_key().as_ref(),
        second.private_key().as_ref(),
        "a new key with every rotation"
    );
    assert_eq!(second.spiffe_id().to_string(), "spiffe://example.org/short");
    // Half of 60 s from receipt (the stream wakes at least every second).
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(20),
        "rotated too early: {waited:?}"
    );
}

/// A CA rotation reaches Workload API clients before any SVID is signed by the
/// new generation: every X.509 context the client receives carries a bundle
/// holding the issuer of its SVID, and the bundle with the new CA arrives
/// (pushed by the agent) before the first SVID the new CA signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_reaches_workload_api_clients_before_use() {
    use futures_util::StreamExt;
    let ca = CaBuilder::new()
        .args([
            "--set",
            "rotation.enabled=false",
            "--set",
            "rotation.check_interval_seconds=1",
            "--set",
            "rotation.min_overlap_seconds=3",
        ])
        .start("tessera-ca");
    let agent = short_lived_agent(&ca, "host4", "spiffe://example.org/rotating").await;
    let client = agent.spiffe_client().await;
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    // For one context: the SVID's issuer DN, and whether the bundle holds a
    // certificate that signed it.
    let check = |ctx: &spiffe::X509Context| -> (String, usize) {
        let svid = ctx.default_svid().expect("an SVID");
        let leaf = tessera_core::svid::parse(svid.leaf().as_ref()).unwrap();
        let bundle = ctx
            .bundle_set()
            .get(&td)
            .expect("the trust domain's bundle");
        let signed_by_bundle = bundle.authorities().iter().any(|a| {
            let ca = tessera_core::svid::parse(a.as_ref()).unwrap();
            ca.subject() == leaf.issuer() && leaf.verify_signature(Some(ca.public_key())).is_ok()
        });
        assert!(
            signed_by_bundle,
            "an SVID arrived whose issuer is not in the bundle it came with"
        );
        (leaf.issuer().to_string(), bundle.authorities().len())
    };
    let first = stream.next().await.unwrap().unwrap();
    let (old_issuer, anchors) = check(&first);
    assert_eq!(anchors, 1);
    // Rotate: prepared now, activated by the schedule after the 3 s overlap.
    ca.expect(Method::POST, "/v1/ca/rotate", None, 200).await;
    let mut saw_new_bundle_at = None;
    let end = Instant::now() + Duration::from_secs(70);
    let mut n = 0;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ctx = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no SVID from the new CA in time\n{}", agent.log()))
            .unwrap()
            .unwrap();
        n += 1;
        let (issuer, anchors) = check(&ctx);
        if anchors == 2 && saw_new_bundle_at.is_none() {
            saw_new_bundle_at = Some(n);
        }
        if issuer != old_issuer {
            let at = saw_new_bundle_at.expect("the new CA's SVID came before its bundle");
            assert!(
                at < n,
                "the bundle with the new CA must precede its first SVID"
            );
            break;
        }
    }
}

/// With `data_dir`, a restarted agent resumes its node identity without a
/// join token (the single-use token is spent): the key is saved 0600 in a
/// 0700 directory, the resumed identity is renewed at once (new serial) and
/// serves workloads. A banned node's saved identity is refused at start with
/// a clear error; without a token and without `data_dir` the agent refuses to
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_resumes_its_node_identity_from_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let ca = Ca::start();
    let (token, node) = host_node(&ca, "host6", "spiffe://example.org/resumed").await;
    let node = node.as_str();
    let state = tempfile::tempdir().unwrap();
    let data_dir = state.path().join("agent");
    let sets = [format!("data_dir=\"{}\"", data_dir.display())];
    let node_serial = |dir: &std::path::Path| {
        let pem = std::fs::read(dir.join("node.pem")).unwrap();
        let chain = tessera_core::pem::certs(&pem).unwrap();
        tessera_core::svid::check_leaf(&chain[0]).unwrap().serial
    };

    let first = Agent::try_start(&ca, "host6", Some(&token), &sets).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    for f in ["node.pem", "bundle.pem"] {
        assert_eq!(mode(&data_dir.join(f)), 0o600, "{f}");
    }
    let serial1 = node_serial(&data_dir);
    drop(first);

    // No token this time: the saved identity is resumed and renewed.
    let second = Agent::try_start(&ca, "host6", None, &sets).unwrap();
    assert_eq!(second.spiffe_id, node);
    assert!(second.log().contains("resumed"), "{}", second.log());
    let serial2 = node_serial(&data_dir);
    assert_ne!(serial1, serial2, "the resumed identity is renewed at once");
    let client = second.spiffe_client().await;
    let svid = client
        .fetch_x509_svid()
        .await
        .unwrap_or_else(|e| panic!("fetch_x509_svid: {e}\n{}", second.log()));
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/resumed");
    drop(client);
    drop(second);

    // Banned meanwhile: the saved identity is refused, with the reason.
    ca.expect(Method::POST, "/v1/nodes/host6/ban", Some(json!({})), 200)
        .await;
    let e = Agent::try_start(&ca, "host6", None, &sets)
        .err()
        .expect("a banned node's saved identity must not start");
    assert!(e.contains("CA refused (401"), "{e}");
    // No data_dir and no token: a clear refusal.
    let e = Agent::try_start(&ca, "host6", None, &[])
        .err()
        .expect("no identity at all must not start");
    assert!(e.contains("TESSERA_JOIN_TOKEN"), "{e}");
}

/// Issue 16 item 3 (start): a workload whose entry federates with
/// `other.org` receives the bundle the CA holds for that relationship (here
/// its bootstrap: a second CA's real bundle) in its X.509 context, seen by
/// the stock `spiffe` crate; a workload whose entry does not gets none; and
/// removing the relationship takes the bundle away within one sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_bundles_reach_only_federating_workloads() {
    let ca = Ca::start();
    let (_other, other_anchors) = support::federated_other_org(&ca).await;
    let token = node_token(&ca, "fed1").await;
    let node = "spiffe://example.org/tessera/agent/fed1";
    support::federating_host_entry(&ca, "spiffe://example.org/fed-workload", node).await;
    let agent = Agent::start(&ca, "fed1", &token, None);
    let client = agent.spiffe_client().await;
    let ctx = client
        .fetch_x509_context()
        .await
        .unwrap_or_else(|e| panic!("fetch_x509_context: {e}\n{}", agent.log()));
    let td = spiffe::TrustDomain::new("other.org").unwrap();
    let got = ctx.bundle_set().get(&td).expect("other.org's bundle");
    assert_eq!(got.authorities().len(), other_anchors.len());
    assert_eq!(got.authorities()[0].as_ref(), other_anchors[0].as_ref());
    let own = spiffe::TrustDomain::new("example.org").unwrap();
    assert!(ctx.bundle_set().get(&own).is_some(), "and our own");

    // Removing the relationship: pushed on the open stream, bundle gone.
    let path =
        tessera_workload_api::parse_address(&format!("unix://{}", agent.socket.display())).unwrap();
    let mut ours = tessera_workload_api::Client::new(&path).unwrap();
    let mut stream = ours.fetch_x509_svid().await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    let keys: Vec<&String> = first.federated_bundles.keys().collect();
    assert_eq!(keys, ["spiffe://other.org"]);
    ca.expect(Method::DELETE, "/v1/federation/other.org", None, 204)
        .await;
    let next = next_push(&mut stream, "removing the relationship").await;
    assert!(
        next.federated_bundles.is_empty(),
        "{:?}",
        next.federated_bundles.keys()
    );

    // An entry without federates_with: no foreign bundle for its workload.
    let token = node_token(&ca, "fed2").await;
    host_entry(
        &ca,
        "spiffe://example.org/plain",
        "spiffe://example.org/tessera/agent/fed2",
        None,
    )
    .await;
    let plain = Agent::start(&ca, "fed2", &token, None);
    let ctx = plain
        .spiffe_client()
        .await
        .fetch_x509_context()
        .await
        .unwrap();
    assert!(ctx.bundle_set().get(&td).is_none());
}

/// Issue 11 item 8: one process holds at most `max_streams_per_process`
/// Workload API streams (X.509-SVID and bundle streams together); one more
/// is refused with ResourceExhausted, and a closed stream gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_process_are_capped() {
    let ca = Ca::start();
    let token = node_token(&ca, "host-cap").await;
    let agent = Agent::try_start(
        &ca,
        "host-cap",
        Some(&token),
        &["max_streams_per_process=3".into()],
    )
    .unwrap_or_else(|log| panic!("{log}"));
    let grpc = raw_grpc(&agent).await;
    let open = |path: &'static str| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await.unwrap();
            grpc.server_streaming::<_, tessera_workload_api::X509BundlesResponse, _>(
                request(tessera_workload_api::X509BundlesRequest {}, true),
                hyper::http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
        }
    };
    const X509: &str = "/SpiffeWorkloadAPI/FetchX509Bundles";
    let mut held = Vec::new();
    for i in 0..3 {
        let mut s = open(X509)
            .await
            .unwrap_or_else(|e| panic!("stream {i}: {e:?}"));
        // Served: the first bundle arrives.
        s.get_mut().message().await.unwrap().unwrap();
        held.push(s);
    }
    let e = open(X509).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("per process"), "{e:?}");
    // The JWT bundle stream counts against the same budget.
    let mut grpc_jwt = grpc.clone();
    grpc_jwt.ready().await.unwrap();
    let e = grpc_jwt
        .server_streaming::<_, tessera_workload_api::JwtBundlesResponse, _>(
            request(tessera_workload_api::JwtBundlesRequest {}, true),
            hyper::http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchJWTBundles"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    // Closing one gives its slot back (the agent notices the closed stream
    // a moment later: retried until the deadline).
    drop(held.pop());
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match open(X509).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::ResourceExhausted && Instant::now() < until => {}
            Err(e) => panic!("no slot came back: {e:?}"),
        }
    }
    assert!(agent.log().contains("too many streams from one process"));
}
