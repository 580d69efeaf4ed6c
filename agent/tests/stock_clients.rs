//! The Workload API with clients no one here wrote, on the stacks that send
//! `:authority` forms h2 alone would refuse: py-spiffe (gRPC C-core, the
//! percent-encoded socket path), and a raw HTTP/2 client sending each form
//! other stacks use (grpc-go's `localhost`, grpc-java's and grpc-swift's raw
//! path, C-core's percent-encoded path, none). Real `tessera-agent` and
//! `tessera-ca` processes on loopback; the test process is the workload.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Agent, host_entry, host_node, node_token, node_token_ttl};
use tessera_test_support::{Ca, Process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `agent/tests/py/py_spiffe.py` with the suite's venv Python (killed
/// if it outlives two minutes); returns the JSON it printed.
async fn py_spiffe(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/py_spiffe.py");
    let mut cmd = std::process::Command::new(tessera_test_support::python::venv_python());
    cmd.arg(script).args(args);
    let mut proc = Process::spawn("py-spiffe", &mut cmd);
    let status =
        tokio::task::spawn_blocking(move || (proc.wait_exit(Duration::from_secs(120)), proc))
            .await
            .unwrap();
    let (status, proc) = status;
    assert!(status.success(), "py-spiffe failed:\n{}", proc.describe());
    let line = proc.stdout_lines().concat();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {}", proc.describe()))
}

/// py-spiffe: X.509 context, JWT-SVID, validation through the agent (a wrong
/// audience refused), JWT bundles, and a rotation pushed on an open stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_uses_the_workload_api() {
    let ca = Ca::start();
    let token = node_token_ttl(&ca, "py1", Some(60)).await;
    let node = "spiffe://example.org/tessera/agent/py1";
    host_entry(&ca, "spiffe://example.org/py", node, Some(60)).await;
    let agent = Agent::start(&ca, "py1", &token, None);
    let socket = agent.socket.display().to_string();
    let seen = py_spiffe(&[&socket, "db", "--rotation"]).await;

    let x509 = seen["x509"].as_array().unwrap();
    assert_eq!(x509.len(), 1, "{seen}");
    assert_eq!(x509[0]["spiffe_id"], "spiffe://example.org/py");
    use base64::Engine;
    let leaf = base64::engine::general_purpose::STANDARD
        .decode(x509[0]["leaf"].as_str().unwrap())
        .unwrap();
    let info = tessera_core::svid::check_leaf(&leaf).unwrap();
    assert_eq!(info.spiffe_id.as_str(), "spiffe://example.org/py");
    assert_eq!(seen["x509_bundles"], serde_json::json!(["example.org"]));

    assert_eq!(seen["jwt"]["spiffe_id"], "spiffe://example.org/py");
    assert_eq!(seen["validated"], "spiffe://example.org/py");
    let wrong = seen["wrong_audience"]
        .as_str()
        .expect("wrong audience refused");
    assert!(wrong.contains("audience"), "{wrong}");
    // The token verifies with the CA's JWKS alone (our validator as the check).
    let keys = seen["jwt_bundles"]["example.org"].as_array().unwrap();
    assert!(!keys.is_empty(), "{seen}");

    let rotation = &seen["rotation"];
    assert_eq!(rotation["errors"], serde_json::json!([]), "{}", agent.log());
    let serials: Vec<&str> = rotation["serials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        serials.len() >= 2 && serials[0] != serials[serials.len() - 1],
        "no rotation pushed: {serials:?}\n{}",
        agent.log()
    );
}

/// py-spiffe sees a foreign bundle through the agent: the workload's entry
/// federates with `other.org`, so its X.509 context holds both trust
/// domains' bundles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_sees_the_federated_bundle() {
    let ca = Ca::start();
    let (_other, _) = support::federated_other_org(&ca).await;
    let token = node_token_ttl(&ca, "pyfed", None).await;
    let node = "spiffe://example.org/tessera/agent/pyfed";
    support::federating_host_entry(&ca, "spiffe://example.org/py-fed", node).await;
    let agent = Agent::start(&ca, "pyfed", &token, None);
    let socket = agent.socket.display().to_string();
    let seen = py_spiffe(&[&socket, "db"]).await;
    assert_eq!(
        seen["x509_bundles"],
        serde_json::json!(["example.org", "other.org"]),
        "{seen}\n{}",
        agent.log()
    );
}

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// What the server answered one request: its response header fields and
/// the first DATA payload, or the RST_STREAM code.
#[derive(Debug)]
enum Answer {
    Served(Vec<(String, String)>, Vec<u8>),
    Reset(u32),
}

/// One `FetchX509Bundles` request on a fresh connection, `:authority` as
/// given (HPACK literals, as a hand-written client would send them).
async fn raw_request(socket: &std::path::Path, authority: Option<&str>) -> Answer {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let mut block = Vec::new();
    let mut fields = vec![(":method", "POST"), (":scheme", "http")];
    if let Some(a) = authority {
        fields.push((":authority", a));
    }
    fields.extend([
        (":path", "/SpiffeWorkloadAPI/FetchX509Bundles"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("workload.spiffe.io", "true"),
    ]);
    for (n, v) in fields {
        block.push(0);
        for s in [n, v] {
            assert!(s.len() < 127);
            block.push(s.len() as u8);
            block.extend(s.as_bytes());
        }
    }
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    out.extend(frame(0x1, 0x4, 1, &block)); // HEADERS, END_HEADERS
    out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0])); // an empty message, END_STREAM
    s.write_all(&out).await.unwrap();
    let mut decoder = loona_hpack::Decoder::new();
    let mut headers = None;
    loop {
        let mut head = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut head))
            .await
            .expect("an answer")
            .unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        match head[3] {
            0x4 if head[4] & 1 == 0 => s.write_all(&frame(0x4, 1, 0, &[])).await.unwrap(),
            0x1 => {
                let fields = decoder.decode(&payload).unwrap();
                let fields = fields
                    .into_iter()
                    .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                    .collect::<Vec<_>>();
                headers.get_or_insert(fields);
            }
            0x0 if head[4] & 0x8 == 0 => {
                return Answer::Served(headers.expect("headers before data"), payload);
            }
            0x3 => {
                return Answer::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
            }
            _ => {}
        }
    }
}

/// Every `:authority` form gRPC stacks send on a unix socket is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authority_form_is_served() {
    let ca = Ca::start();
    let (token, _) = host_node(&ca, "raw1", "spiffe://example.org/raw").await;
    let agent = Agent::start(&ca, "raw1", &token, None);
    let path = agent.socket.display().to_string();
    let encoded = path.trim_start_matches('/').replace('/', "%2F");
    for form in [
        Some("localhost".to_owned()),
        Some(path.clone()),
        Some(encoded),
        None,
    ] {
        match raw_request(&agent.socket, form.as_deref()).await {
            Answer::Served(headers, data) => {
                assert!(
                    headers.contains(&(":status".into(), "200".into())),
                    "{form:?}: {headers:?}"
                );
                // A gRPC message holding the bundle (example.org's CA).
                assert_eq!(data[0], 0, "{form:?}");
                let msg: tessera_workload_api::X509BundlesResponse =
                    prost::Message::decode(&data[5..]).unwrap();
                assert!(
                    msg.bundles.contains_key("spiffe://example.org"),
                    "{form:?}: {msg:?}"
                );
            }
            Answer::Reset(code) => panic!("{form:?} refused: RST_STREAM {code}\n{}", agent.log()),
        }
    }
}

/// A workload matching two entries gets both SVIDs, hints set, the oldest
/// entry's first (the default), through both stock clients; FetchJWTSVID
/// honours the requested SPIFFE ID and refuses one the caller has no entry for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_svids_with_hints_reach_both_stock_clients() {
    let ca = Ca::start();
    let token = node_token(&ca, "hints1").await;
    let node = "spiffe://example.org/tessera/agent/hints1";
    let entry = |id: &'static str, hint: &'static str| {
        let body = serde_json::json!({"spiffe_id": id, "selectors": [support::uid_selector()],
                                      "parent_id": node, "hint": hint});
        ca.expect(hyper::Method::POST, "/v1/entries", Some(body), 201)
    };
    // Created first, though it sorts last by SPIFFE ID: the default.
    entry("spiffe://example.org/z-web", "web").await;
    let t0 = tessera_core::now_unix();
    tessera_test_support::wait_until(Duration::from_secs(3), "the next second", || {
        tessera_core::now_unix() > t0
    });
    entry("spiffe://example.org/a-db", "db").await;
    let agent = Agent::start(&ca, "hints1", &token, None);
    let want = [
        ("spiffe://example.org/z-web", "web"),
        ("spiffe://example.org/a-db", "db"),
    ];

    // The Rust `spiffe` crate.
    let client = agent.spiffe_client().await;
    let all = client
        .fetch_all_x509_svids()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let got: Vec<(String, Option<&str>)> = all
        .iter()
        .map(|s| (s.spiffe_id().to_string(), s.hint()))
        .collect();
    let expected: Vec<(String, Option<&str>)> = want
        .iter()
        .map(|(i, h)| (i.to_string(), Some(*h)))
        .collect();
    assert_eq!(got, expected);
    let default = client.fetch_x509_svid().await.unwrap();
    assert_eq!(default.spiffe_id().to_string(), want[0].0);
    let jwts = client.fetch_all_jwt_svids(["db"], None).await.unwrap();
    let got: Vec<(String, Option<&str>)> = jwts
        .iter()
        .map(|s| (s.spiffe_id().to_string(), s.hint()))
        .collect();
    assert_eq!(got, expected);
    let by_hint = client
        .fetch_jwt_svid_by_hint(["db"], None, "db")
        .await
        .unwrap();
    assert_eq!(by_hint.spiffe_id().to_string(), want[1].0);
    let adb = spiffe::SpiffeId::new(want[1].0).unwrap();
    let one = client.fetch_jwt_svid(["db"], Some(&adb)).await.unwrap();
    assert_eq!(one.spiffe_id().to_string(), want[1].0);
    let other = spiffe::SpiffeId::new("spiffe://example.org/not-mine").unwrap();
    let refused = client
        .fetch_jwt_svid(["db"], Some(&other))
        .await
        .expect_err("an ID the caller has no entry for");
    assert!(
        refused.to_string().contains("PermissionDenied")
            || refused.to_string().contains("no identity"),
        "{refused}"
    );

    // py-spiffe (gRPC C-core).
    let socket = agent.socket.display().to_string();
    let seen = py_spiffe(&[&socket, "db", want[1].0]).await;
    assert_eq!(seen["default"], want[0].0, "{seen}");
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
            .collect()
    };
    let expected: Vec<(String, String)> = want
        .iter()
        .map(|(i, h)| (i.to_string(), h.to_string()))
        .collect();
    assert_eq!(pairs(&seen["x509_hints"]), expected);
    assert_eq!(pairs(&seen["jwt_hints"]), expected);
    assert_eq!(seen["jwt"]["spiffe_id"], want[0].0, "the default JWT-SVID");
    assert_eq!(seen["subject"], want[1].0);
    assert_eq!(seen["subject_error"], Value::Null);
    let seen = py_spiffe(&[&socket, "db", "spiffe://example.org/not-mine"]).await;
    let e = seen["subject_error"].as_str().expect("refused");
    assert!(
        e.contains("no identity") || e.contains("PERMISSION_DENIED"),
        "{e}"
    );
}
