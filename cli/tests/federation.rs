//! `tessera federation` against a real `tessera-ca` process: a relationship
//! whose endpoint is down (so every poll fails), its health in `list`,
//! `show` and the `ca status` warning, refusals with their exit codes, and
//! removal.

use tessera_test_support::{CaBuilder, wait_until};

mod common;

use common::Ca;

#[test]
fn federation_commands() {
    let builder = CaBuilder::new().sets([
        "federation.stale_after_seconds=1",
        "federation.poll_min_seconds=1",
    ]);
    let ca = Ca::start_with(&builder, "ca");
    // A port nothing listens on: the foreign endpoint is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://localhost:{}/", dead.local_addr().unwrap().port());
    drop(dead);

    let web = |td: &'static str| {
        [
            "federation",
            "add",
            td,
            "--url",
            &url,
            "--profile",
            "https_web",
        ]
    };

    // Refused: exit 2 (invalid), nothing created.
    let e = ca.exits(&web("example.org"), 2);
    assert!(e.contains("own trust domain"), "{e}");
    let e = ca.exits(&["federation", "add", "other.org", "--url", &url], 2);
    assert!(e.contains("endpoint_spiffe_id"), "{e}");
    let e = ca.exits(&["federation", "add", "other.org"], 2);
    assert!(e.contains("--url"), "{e}");
    let none = ca.json(&["federation", "list"]);
    assert_eq!(none["items"], serde_json::json!([]));

    let added = ca.json(&web("other.org"));
    assert_eq!(added["trust_domain"], "other.org");
    assert_eq!(added["profile"], "https_web");
    // A duplicate is a conflict: exit 4.
    let e = ca.exits(&web("other.org"), 4);
    assert!(e.contains("exists"), "{e}");

    // The poller fails (endpoint down): the table says unhealthy, then stale.
    wait_until(
        std::time::Duration::from_secs(15),
        "a stale relationship",
        || {
            let table = ca.ok(&["federation", "list"]);
            table.contains("other.org") && table.contains("STALE")
        },
    );
    let shown = ca.json(&["federation", "show", "other.org"]);
    assert_eq!(shown["healthy"], false);
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap()
            .contains("fetch failed"),
        "{shown}"
    );
    let o = ca.tessera(&["ca", "status"]);
    let warned = String::from_utf8_lossy(&o.stderr);
    assert!(
        warned.contains("warning: federation with other.org"),
        "{warned}"
    );
    // Polling now fails too: exit 5, the reason named.
    let e = ca.exits(&["federation", "refresh", "other.org"], 5);
    assert!(
        e.contains("bundle_endpoint_unreachable") || e.contains("fetch failed"),
        "{e}"
    );

    let moved = format!("{url}moved");
    let updated = ca.json(&["federation", "update", "other.org", "--url", &moved]);
    assert_eq!(updated["bundle_endpoint_url"], moved.as_str());

    let removed = ca.ok(&["federation", "remove", "other.org"]);
    assert!(
        removed.contains("removed federation with other.org"),
        "{removed}"
    );
    ca.exits(&["federation", "show", "other.org"], 3);
    let o = ca.tessera(&["ca", "status"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("federation"));
}
