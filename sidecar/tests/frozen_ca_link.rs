//! A CA connection that stops forwarding without a reset (a middlebox that
//! drops state, a frozen peer) must not freeze the revocation feed: a
//! test-owned TCP relay sits between sidecar B and a real `tessera-ca`, and
//! at some point stops moving bytes on every connection it carries (keeping
//! them open) while still forwarding new ones. The feed-lag metric must rise
//! while the feed is stuck (before the long-poll's own deadline), B must
//! reconnect, and a peer revoked meanwhile must be refused.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{DEADLINE, Sidecar, echo, echo_server, inbound, outbound, sid, tokens};
use hyper::Method;
use tessera_test_support::Ca;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards loopback TCP to `target`; [`Relay::freeze`] stops every
/// connection accepted so far without closing it.
struct Relay {
    port: u16,
    accepted: Arc<AtomicUsize>,
    frozen_below: watch::Sender<usize>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (frozen_below, _) = watch::channel(0usize);
        let (count, freeze) = (accepted.clone(), frozen_below.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let id = count.fetch_add(1, Ordering::SeqCst);
                let mut frozen = freeze.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let freeze = async { frozen.wait_for(|below| id < *below).await.is_ok() };
                    let stopped = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        f = freeze => f,
                    };
                    if stopped {
                        // Hold both sockets open, forwarding nothing.
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Relay {
            port,
            accepted,
            frozen_below,
        }
    }

    /// Stops every connection accepted so far; returns how many there were.
    fn freeze(&self) -> usize {
        let n = self.accepted.load(Ordering::SeqCst);
        self.frozen_below.send_replace(n);
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_ca_connection_is_replaced_and_the_lag_shows_it() {
    let ca = Ca::start();
    let app = echo_server().await;
    let [ta, tb] = tokens(&ca, ["fa", "fb"]).await;
    let relay = Relay::start(ca.addr()).await;
    let wait = 2u64;
    // The long-poll deadline the CA client gives itself: wait plus margin.
    let poll_deadline = Duration::from_secs(wait) + tessera_workload::LONG_POLL_MARGIN;
    let b_cfg = format!(
        "ca_url = \"https://localhost:{}\"\nca_bundle = \"{}\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [revocation]\nwait_seconds = {wait}\n{}",
        relay.port,
        ca.bundle_path().display(),
        inbound("api", &app, &sid("fa")),
    );
    let b = Sidecar::spawn(&b_cfg, Some(&tb), &[]);
    b.await_log("ready");
    // A talks to the CA directly and does not follow the feed: only B's
    // knowledge decides whether A gets in.
    let a = Sidecar::start(
        &ca,
        &ta,
        &format!(
            "[revocation]\nfollow = false\n{}",
            outbound("to-b", &b.addr("inbound", "api"), &sid("fb"))
        ),
    );
    let mut s = TcpStream::connect(a.addr("outbound", "to-b"))
        .await
        .unwrap();
    echo(&mut s, b"before").await.unwrap();
    drop(s);
    let lag = |page: tessera_test_support::Metrics| {
        page.value("tessera_sidecar_revocation_feed_lag_seconds", &[])
            .unwrap_or(-1.0)
    };
    assert_eq!(lag(b.metrics().await), 0.0);

    let frozen = relay.freeze();
    let started = Instant::now();
    let serial = a.serial().await;
    ca.call(
        Method::POST,
        "/v1/revocations",
        Some(serde_json::json!({"serial": serial, "reason": "key_compromise"})),
    )
    .await;

    // The lag rises while the stuck long-poll is still waiting for its
    // deadline, second by second (a watchdog keeps it), rather than jumping
    // from 0 to the whole deadline once the poll fails.
    let first = tessera_test_support::poll_until(poll_deadline + DEADLINE, "feed lag", || async {
        let l = lag(b.metrics().await);
        (l >= 1.0).then_some(l)
    })
    .await;
    assert!(
        first <= 4.0,
        "the feed lag jumped from 0 to {first} after {:?}: it was not kept while the poll hung",
        started.elapsed()
    );

    // B gives up on the frozen connection, opens another and learns of the
    // revocation: A is refused.
    let end = started + poll_deadline + DEADLINE;
    loop {
        let mut s = TcpStream::connect(a.addr("outbound", "to-b"))
            .await
            .unwrap();
        if echo(&mut s, b"after").await.is_err() {
            break;
        }
        assert!(
            Instant::now() < end,
            "A still admitted {:?} after its revocation (relay connections: {})\n{}",
            started.elapsed(),
            relay.accepted.load(Ordering::SeqCst),
            b.proc.describe()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        relay.accepted.load(Ordering::SeqCst) > frozen,
        "B never reconnected to the CA"
    );
    b.await_log("revoked");
    // And the feed is current again.
    tessera_test_support::poll_until(DEADLINE, "the feed lag back to 0", || async {
        (lag(b.metrics().await) == 0.0).then_some(())
    })
    .await;
}
