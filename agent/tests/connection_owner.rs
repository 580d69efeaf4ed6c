//! The PID-reuse guard belongs to the connection: a real process connects to
//! a real `tessera-agent`, forks, and its child keeps the socket (relaying
//! it to this test, which speaks gRPC through it) while the connecting
//! parent exits. The agent must end the streams of that connection at once,
//! and a process that later gets the parent's PID must not be served on it.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Agent, host_entry, node_token};
use tessera_test_support::Ca;
use tessera_workload_api::{X509SvidRequest, X509SvidResponse};

/// Connects to the agent (argv 1), forks; the child relays that connection
/// to the test's socket (argv 2) and the parent prints both PIDs, then
/// exits when its stdin closes. The child gives up after two minutes.
const FORKER: &str = r#"
import os, select, socket, sys
a = socket.socket(socket.AF_UNIX); a.connect(sys.argv[1])
child = os.fork()
if child:
    print(os.getpid(), child, flush=True)
    sys.stdin.read()
    os._exit(0)
t = socket.socket(socket.AF_UNIX); t.connect(sys.argv[2])
peers = {a: t, t: a}
while True:
    ready, _, _ = select.select([a, t], [], [], 120)
    if not ready:
        os._exit(1)
    for s in ready:
        data = s.recv(65536)
        if not data:
            os._exit(0)
        peers[s].sendall(data)
"#;

/// The forking workload: the connecting parent, its PID and its child's.
struct Forker {
    parent: Child,
    parent_pid: u32,
    child_pid: u32,
}

impl Forker {
    fn exit_parent(&mut self) {
        drop(self.parent.stdin.take());
        let status = self.parent.wait().unwrap();
        assert!(status.success(), "forker parent: {status}");
    }
}

impl Drop for Forker {
    fn drop(&mut self) {
        let _ = self.parent.kill();
        let _ = self.parent.wait();
        let _ = Command::new("kill")
            .args(["-9", &self.child_pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Starts the forker against `agent` and returns it with a gRPC channel
/// through the child's relay: the agent sees the parent as the peer.
async fn fork_connection(
    agent: &Agent,
) -> (Forker, tonic::client::Grpc<tonic::transport::Channel>) {
    let relay = agent.dir.path().join("relay.sock");
    let listener = tokio::net::UnixListener::bind(&relay).unwrap();
    let mut parent = Command::new("python3")
        .arg("-c")
        .arg(FORKER)
        .arg(&agent.socket)
        .arg(&relay)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let forker = Forker {
        parent,
        parent_pid: pids[0],
        child_pid: pids[1],
    };
    let (io, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("the forker's child connects to the relay socket")
        .unwrap();
    let io = std::sync::Mutex::new(Some(io));
    let channel = tonic::transport::Endpoint::from_static("http://x.invalid")
        .connect_with_connector(tower::service_fn(move |_: hyper::Uri| {
            let io = io.lock().unwrap().take();
            async move {
                io.map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the relay connection is used up"))
            }
        }))
        .await
        .unwrap();
    (forker, tonic::client::Grpc::new(channel))
}

/// Opens `FetchX509SVID` on `grpc`.
async fn fetch(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
) -> Result<tonic::Streaming<X509SvidResponse>, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(X509SvidRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    grpc.server_streaming(
        req,
        hyper::http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchX509SVID"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(|r| r.into_inner())
}

/// A stream opened while the connecting parent lives, its first message
/// (the forker's SVID) read.
async fn served(
    agent: &Agent,
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
) -> tonic::Streaming<X509SvidResponse> {
    let mut stream = fetch(grpc)
        .await
        .unwrap_or_else(|e| panic!("fetch while the parent lives: {e:?}\n{}", agent.log()));
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids[0].spiffe_id, "spiffe://example.org/forker");
    stream
}

/// An agent that re-attests only hourly, so only the connection guard can
/// end a stream within the test's bounds.
async fn agent(ca: &Ca, name: &str) -> Agent {
    let token = node_token(ca, name).await;
    let node = format!("spiffe://example.org/tessera/agent/{name}");
    host_entry(ca, "spiffe://example.org/forker", &node, None).await;
    Agent::try_start(
        ca,
        name,
        Some(&token),
        &["sync_interval_seconds=3600".to_owned()],
    )
    .unwrap_or_else(|log| panic!("{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ends_when_the_connecting_process_exits() {
    let ca = Ca::start();
    let agent = agent(&ca, "fork1").await;
    let (mut forker, mut grpc) = fork_connection(&agent).await;
    let mut stream = served(&agent, &mut grpc).await;

    forker.exit_parent();
    let next = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the stream outlived the process that opened it\n{}",
                agent.log()
            )
        });
    assert!(
        !matches!(next, Ok(Some(_))),
        "nothing more after the connecting process exited: {next:?}"
    );
    // A new request on that connection gets nothing either.
    if let Ok(mut s) = fetch(&mut grpc).await {
        assert!(
            !matches!(s.message().await, Ok(Some(_))),
            "SVIDs on a dead peer's connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_pid_gets_nothing_on_the_old_connection() {
    let ca = Ca::start();
    let agent = agent(&ca, "fork2").await;
    let (mut forker, mut grpc) = fork_connection(&agent).await;
    // One call while the parent lives: the agent has accepted (and pinned)
    // the connection before the PID changes hands.
    drop(served(&agent, &mut grpc).await);
    forker.exit_parent();
    // Give the parent's PID to a new process (as root: the kernel's next
    // PID is settable; other processes may take it first, so retry).
    let pid = forker.parent_pid;
    let mut victim = None;
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("writing ns_last_pid (the test runs as root)");
        let mut c = Command::new("sleep").arg("120").spawn().unwrap();
        if c.id() == pid {
            victim = Some(c);
            break;
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut victim = victim.expect("a new process with the connecting parent's PID");
    let got = match fetch(&mut grpc).await {
        Ok(mut s) => s.message().await,
        Err(e) => Err(e),
    };
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        !matches!(got, Ok(Some(_))),
        "the process that reused PID {pid} got SVIDs on the old connection\n{}",
        agent.log()
    );
}

/// The agent creates a missing socket directory 0755 but leaves the mode of
/// one that exists alone (it must not open up a directory it did not make).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_socket_directory_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let ca = Ca::start();
    let token = node_token(&ca, "sockdir").await;
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("operator");
    std::fs::create_dir(&own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o750)).unwrap();
    let socket = own.join("agent.sock");
    let agent = Agent::try_start(
        &ca,
        "sockdir",
        Some(&token),
        &[format!("socket_path=\"{}\"", socket.display())],
    )
    .unwrap_or_else(|log| panic!("{log}"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert!(socket.exists(), "{}", agent.log());
    assert_eq!(mode(&own), 0o750, "the operator's directory was chmodded");
    assert_eq!(mode(&socket), 0o777);
}
