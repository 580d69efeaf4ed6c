//! End to end with real containers (issue 4 item 7): a `tessera-ca` process
//! and a `tessera-agent` process on the host, two app containers (`api`,
//! `web`) each with a `tessera-sidecar` container joined to its network
//! namespace, the agent's socket bind-mounted (read-only) into the sidecars,
//! which get their identities through the Workload API.
//!
//! - `web` (label `app=web`) becomes `spiffe://example.org/web` and calls
//!   `api` through both sidecars (api's allows only web);
//! - a container with another label gets no identity; its call through its
//!   sidecar is refused, and calling api directly (TLS, no certificate) is
//!   refused by api's sidecar, which reports the denial to the CA;
//! - a `--privileged` container with the right label is refused by the CA's
//!   minimum posture policy, which audits the refusal;
//! - web's certificate (60 s) is renewed at half-life until its entry is
//!   deleted: then the agent and the CA refuse every renewal;
//! - banning the node revokes its workloads, and the sidecars (following the
//!   CA's revocation feed) refuse each other within seconds.
//!
//! Network: the test creates its own Podman network; the CA listens on that
//! network's gateway address (its certificate names it), the one host
//! address the containers can reach (netavark's firewall leaves traffic from
//! the bridge to the host alone), so the sidecars follow the revocation feed
//! and report denials. Nothing else listens beyond loopback.
//!
//! The sidecars run from the sidecar image (`deploy/images/build.sh`,
//! `FROM scratch`, user 65532, no shell: their admin endpoints are asked
//! from the apps' containers, which share their network namespaces); the
//! apps are a busybox image, curl (a TLS client without a certificate) is
//! bind-mounted into one with the libraries `ldd` lists. Containers, the
//! network, the Podman API service, the processes and temp directories are
//! removed by drop guards, pass or fail. Podman missing is a failure.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use support::podman::{
    Containers, Network, Service, binary_mounts, build_tessera_images, ensure_image, id_of,
    podman_try, tessera_image,
};
use support::{Agent, node_token};
use tessera_test_support::{Ca, CaBuilder, Metrics, workspace_binary};

/// What every sidecar here shares: the CA on the network's gateway (for the
/// revocation feed and denial reports; the identity comes from the agent),
/// quick retries and denial batches.
fn sidecar_common(ca_url: &str) -> String {
    format!(
        r#"ca_url = "{ca_url}"
admin_listen = "127.0.0.1:15000"
[renew]
retry_min_ms = 200
retry_max_ms = 1000
[denials]
flush_ms = 200
"#
    )
}

/// `api`'s sidecar: mTLS in on 8443, only `web` allowed, plaintext to the app.
fn api_sidecar_toml(ca_url: &str) -> String {
    sidecar_common(ca_url)
        + r#"[[inbound]]
name = "api"
listen = "0.0.0.0:8443"
forward = "127.0.0.1:8080"
allow = ["spiffe://example.org/web"]
"#
}

/// A client app's sidecar: plaintext in on loopback 15001, mTLS out to
/// `api`'s sidecar, which must present `spiffe://example.org/api`.
fn client_sidecar_toml(ca_url: &str, api_ip: &str) -> String {
    sidecar_common(ca_url)
        + &format!(
            r#"[[outbound]]
name = "api"
listen = "127.0.0.1:15001"
upstream = "{api_ip}:8443"
server_id = "spiffe://example.org/api"
"#
        )
}

/// What the sidecars need: the agent's socket directory.
struct Mesh<'a> {
    sock_dir: &'a Path,
}

impl Mesh<'_> {
    /// A sidecar container from the sidecar image (deploy/images/build.sh),
    /// joined to `app`'s network namespace, the agent's socket mounted
    /// read-only and `SPIFFE_ENDPOINT_SOCKET` pointing at it, its
    /// configuration from `cfg_dir/sidecar.toml`.
    fn sidecar(&self, c: &mut Containers, prefix: &str, app: &str, cfg_dir: &Path) -> String {
        // The image runs as user 65532: the configuration must be readable.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(cfg_dir, 0o755).unwrap();
        mode(&cfg_dir.join("sidecar.toml"), 0o644).unwrap();
        let opts: Vec<String> = vec![
            "--network".into(),
            format!("container:{app}"),
            "-v".into(),
            format!("{}:/run/tessera:ro", self.sock_dir.display()),
            "-v".into(),
            format!("{}:/etc/tessera:ro", cfg_dir.display()),
            "-e".into(),
            "SPIFFE_ENDPOINT_SOCKET=unix:///run/tessera/agent.sock".into(),
            "-e".into(),
            "TESSERA_LOG=info".into(),
        ];
        c.run_image(
            prefix,
            &opts,
            &tessera_image("sidecar"),
            &["--config", "/etc/tessera/sidecar.toml"],
        )
    }
}

/// `GET url` once from inside `container` (busybox wget, bounded by busybox
/// timeout: this build's `wget -T` crashes): the body, or the error output.
fn wget(container: &str, url: &str) -> Result<String, String> {
    match podman_try(&[
        "exec",
        container,
        "/bin/busybox",
        "timeout",
        "20",
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "-",
        url,
    ]) {
        (true, out) => Ok(out),
        (false, out) => Err(out),
    }
}

/// Polls `GET url` from inside `container` until it answers, or the deadline
/// passes.
fn wget_until_ok(container: &str, url: &str, deadline: Duration) -> Option<String> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Ok(out) = wget(container, url) {
            return Some(out);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    None
}

/// Polls the container's logs until `needle` appears (or the deadline).
fn logs_until(container: &str, needle: &str, deadline: Duration) -> Option<String> {
    let end = Instant::now() + deadline;
    loop {
        let (_, out) = podman_try(&["logs", container]);
        if out.contains(needle) {
            return Some(out);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn logs(container: &str) -> String {
    podman_try(&["logs", container]).1
}

/// The identity of `app`'s sidecar, from its admin endpoint (asked from
/// the app's container: they share the network namespace).
fn identity(app: &str) -> Value {
    let body = wget(app, "http://127.0.0.1:15000/identity")
        .unwrap_or_else(|e| panic!("identity of {app}'s sidecar: {e}"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"))
}

/// The sum of `tessera_sidecar_denied_total` samples whose labels contain
/// `reason="<reason>"`, from the metrics of `app`'s sidecar.
fn denied(app: &str, reason: &str) -> f64 {
    let page = wget(app, "http://127.0.0.1:15000/metrics").unwrap_or_default();
    Metrics::parse(page).sum("tessera_sidecar_denied_total", &[("reason", reason)])
}

/// The certificates the CA issued for `spiffe_id`, by serial.
async fn certs_for(ca: &Ca, spiffe_id: &str) -> Vec<String> {
    let path = format!(
        "/v1/certs?limit=1000&spiffe_id={}",
        spiffe_id.replace(':', "%3A").replace('/', "%2F")
    );
    let certs = ca.expect(Method::GET, &path, None, 200).await;
    certs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["serial"].as_str().unwrap().to_owned())
        .collect()
}

const DEADLINE: Duration = Duration::from_secs(60);
const WEB: &str = "spiffe://example.org/web";
const API: &str = "spiffe://example.org/api";

/// The whole mesh of issue 4 item 7 (see the module documentation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_talk_through_sidecars_with_identities_from_the_agent() {
    let started = Instant::now();
    ensure_image();
    // The sidecar image, built from the repository (cached after the first time).
    build_tessera_images();
    // Built now (the CA builder finds it fresh), so no container waits on it.
    workspace_binary("tessera-ca-server", "tessera-ca");
    let curl = PathBuf::from("/usr/bin/curl");
    assert!(curl.exists(), "curl is required (.ci/run installs it)");
    eprintln!("image and binaries ready at {:?}", started.elapsed());
    let service = Service::start();
    let net = Network::create();
    let mut c = Containers::default();

    // The api app first: its start brings the network's bridge up, so the
    // CA can bind the gateway address.
    let api_app = net.app(
        &mut c,
        "api",
        &["--label", "app=api"],
        &[
            "/bin/sh",
            "-c",
            "mkdir -p /www && echo api-ok > /www/index.html \
             && exec /bin/busybox httpd -f -p 127.0.0.1:8080 -h /www",
        ],
    );
    let gateway = net.gateway();
    let api_ip = net.ip_of(&api_app);
    let ca = CaBuilder::new()
        .listen(format!("{gateway}:0"))
        .set(format!("server_ips=[\"127.0.0.1\", \"{gateway}\"]"))
        .start("tessera-ca");
    eprintln!("CA up at {:?}", started.elapsed());
    let token = node_token(&ca, "e2e").await;
    let node = "spiffe://example.org/tessera/agent/e2e";
    ca.entry(API, &["container:label:app:api"], Some(node))
        .await;
    // web's certificates live 60 s (the shortest allowed): the agent renews
    // them at half-life, which the test watches happen, then stop.
    let web_entry = ca
        .expect(
            Method::POST,
            "/v1/entries",
            Some(
                json!({"spiffe_id": WEB, "selectors": ["container:label:app:web"],
                        "parent_id": node, "ttl_seconds": 60}),
            ),
            201,
        )
        .await;
    let agent = Agent::start(&ca, "e2e", &token, Some(&service.socket));
    let sock_dir = agent.socket.parent().unwrap().to_owned();
    let mesh = Mesh {
        sock_dir: &sock_dir,
    };
    let api_cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        api_cfg.path().join("sidecar.toml"),
        api_sidecar_toml(ca.url()),
    )
    .unwrap();
    let client_cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        client_cfg.path().join("sidecar.toml"),
        client_sidecar_toml(ca.url(), &api_ip),
    )
    .unwrap();

    eprintln!("step 1 at {:?}", started.elapsed());
    // 1. api and web, each with a sidecar; web calls api through both.
    let api_side = mesh.sidecar(&mut c, "api-sidecar", &api_app, api_cfg.path());
    let web_app = net.app(
        &mut c,
        "web",
        &["--label", "app=web"],
        &["/bin/busybox", "sleep", "600"],
    );
    let web_side = mesh.sidecar(&mut c, "web-sidecar", &web_app, client_cfg.path());
    // The sidecar image has no shell: its admin endpoint is asked from the
    // app's container, which shares its network namespace.
    for (side, app) in [(&api_side, &api_app), (&web_side, &web_app)] {
        assert!(
            wget_until_ok(app, "http://127.0.0.1:15000/readyz", DEADLINE).is_some(),
            "{side} never became ready:\n{}\nagent:\n{}",
            logs(side),
            agent.log()
        );
    }
    let web_id = identity(&web_app);
    assert_eq!(web_id["spiffe_id"], WEB, "{web_id}");
    let api_id = identity(&api_app);
    assert_eq!(api_id["spiffe_id"], API, "{api_id}");
    // The CA recorded the container it attested (the app the sidecar serves).
    let web_serial = web_id["serial"].as_str().unwrap().to_owned();
    let rec = ca
        .expect(Method::GET, &format!("/v1/certs/{web_serial}"), None, 200)
        .await;
    assert_eq!(rec["node"], node);
    assert_eq!(rec["attestation"]["container_id"], id_of(&web_app).as_str());
    assert_eq!(
        rec["attestation"]["caller_container_id"],
        id_of(&web_side).as_str()
    );
    let through_mesh = "http://127.0.0.1:15001/";
    let answer = wget_until_ok(&web_app, through_mesh, DEADLINE).unwrap_or_else(|| {
        panic!(
            "web's call through the sidecars failed: {:?}\nweb sidecar:\n{}\napi sidecar:\n{}",
            wget(&web_app, through_mesh),
            logs(&web_side),
            logs(&api_side)
        )
    });
    assert_eq!(answer.trim(), "api-ok");

    eprintln!("step 2 at {:?}", started.elapsed());
    // 2. Another label: no identity; its call through its own sidecar is
    // refused, and calling api directly (TLS, no certificate) is refused by
    // api's sidecar, which reports the denial to the CA.
    let mut other_opts = vec!["--label".to_string(), "app=other".to_string()];
    other_opts.extend(binary_mounts(&curl, "/usr/bin/curl"));
    let other_app = net.app(
        &mut c,
        "other",
        &other_opts,
        &["/bin/busybox", "sleep", "600"],
    );
    let other_side = mesh.sidecar(&mut c, "other-sidecar", &other_app, client_cfg.path());
    assert!(
        logs_until(&other_side, "no_entry", DEADLINE).is_some(),
        "no clear refusal in the sidecar's log:\n{}",
        logs(&other_side)
    );
    assert!(
        wget(&other_app, "http://127.0.0.1:15000/readyz").is_err(),
        "a sidecar without identity must not be ready"
    );
    let refused = wget(&other_app, through_mesh);
    assert!(refused.is_err(), "no identity, yet: {refused:?}");
    let (ok, out) = podman_try(&[
        "exec",
        &other_app,
        "/usr/bin/curl",
        "-sS",
        "-k",
        "--max-time",
        "20",
        &format!("https://{api_ip}:8443/"),
    ]);
    assert!(!ok, "api answered a caller without identity: {out}");
    let other_ip = net.ip_of(&other_app);
    let end = Instant::now() + DEADLINE;
    let denial = loop {
        let list = ca
            .expect(
                Method::GET,
                "/v1/denials?destination=spiffe%3A%2F%2Fexample.org%2Fapi",
                None,
                200,
            )
            .await;
        let found = list["items"].as_array().unwrap().iter().find(|d| {
            d["peer_addr"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("{other_ip}:")))
        });
        if let Some(d) = found {
            break d.clone();
        }
        assert!(
            Instant::now() < end,
            "the denial never reached the CA: {list}\napi sidecar:\n{}",
            logs(&api_side)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(denial["reporter"], API, "{denial}");
    assert_eq!(denial["listener"], "api", "{denial}");
    assert_eq!(denial["reason"], "no_certificate", "{denial}");

    eprintln!("step 3 at {:?}", started.elapsed());
    // 3. A privileged app with the right label: refused by the posture policy.
    let priv_app = net.app(
        &mut c,
        "priv",
        &["--label", "app=web", "--privileged"],
        &["/bin/busybox", "sleep", "600"],
    );
    let privileged = mesh.sidecar(&mut c, "priv-sidecar", &priv_app, client_cfg.path());
    assert!(
        logs_until(&privileged, "posture_refused", DEADLINE).is_some(),
        "no posture refusal in the sidecar's log:\n{}\nagent:\n{}",
        logs(&privileged),
        agent.log()
    );
    let audit = ca
        .expect(Method::GET, "/v1/audit?limit=1000", None, 200)
        .await;
    let priv_id = id_of(&priv_app);
    let refusal = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "attestation.refuse" && r["target"] == priv_id.as_str())
        .unwrap_or_else(|| panic!("no audit record of the refusal: {audit}"));
    assert!(
        refusal["details"].as_str().unwrap().contains("privileged"),
        "{refusal}"
    );
    let certs = ca
        .expect(Method::GET, "/v1/certs?limit=1000", None, 200)
        .await;
    assert!(
        !certs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["attestation"]["container_id"] == priv_id.as_str()),
        "a certificate was issued to the privileged container"
    );

    eprintln!("step 4 at {:?}", started.elapsed());
    // 4. web's certificate is renewed at half-life (a new serial)...
    let end = Instant::now() + DEADLINE;
    let renewed = loop {
        let now = identity(&web_app);
        if now["serial"] != web_serial.as_str() {
            break now["serial"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < end,
            "web's certificate was never renewed:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // ...until its entry is deleted: the agent ends web's stream with a
    // refusal, the sidecar's next attempt is refused by the CA (no entry),
    // no certificate for web is issued any more, and the sidecar keeps
    // serving the one it has until it expires or is revoked.
    let issued = certs_for(&ca, WEB).await;
    assert!(issued.contains(&renewed), "{issued:?}");
    let entry_id = web_entry["id"].as_str().unwrap();
    ca.expect(
        Method::DELETE,
        &format!("/v1/entries/{entry_id}"),
        None,
        204,
    )
    .await;
    let end = Instant::now() + DEADLINE;
    loop {
        let log = logs(&web_side);
        let refusals = log
            .lines()
            .filter(|l| l.contains("renewal failed"))
            .collect::<Vec<_>>();
        if refusals.iter().any(|l| l.contains("no registration entry"))
            && refusals.iter().any(|l| l.contains("no_entry"))
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "web's renewal was not refused after its entry was deleted:\n{log}\nagent:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(certs_for(&ca, WEB).await, issued, "issued after deletion");
    assert_eq!(identity(&web_app)["serial"], renewed.as_str());
    let answer = wget(&web_app, through_mesh);
    assert_eq!(
        answer.as_deref().map(str::trim),
        Ok("api-ok"),
        "web's current certificate still serves"
    );

    eprintln!("step 5 at {:?}", started.elapsed());
    // 5. Banning the node revokes what was issued through it, and the peers
    // refuse each other within seconds (the revocation feed).
    let before = denied(&web_app, "revoked") + denied(&api_app, "revoked");
    let banned_at = Instant::now();
    let ban = ca
        .expect(Method::POST, "/v1/nodes/e2e/ban", Some(json!({})), 200)
        .await;
    let revoked: Vec<&str> = ban["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let api_serial = api_id["serial"].as_str().unwrap();
    assert!(
        revoked.contains(&renewed.as_str()) && revoked.contains(&api_serial),
        "{ban}"
    );
    let end = banned_at + Duration::from_secs(15);
    loop {
        let call = wget(&web_app, through_mesh);
        let now = denied(&web_app, "revoked") + denied(&api_app, "revoked");
        if call.is_err() && now > before {
            break;
        }
        assert!(
            Instant::now() < end,
            "still not refused {:?} after the ban: {call:?}\nweb sidecar:\n{}\napi sidecar:\n{}",
            banned_at.elapsed(),
            logs(&web_side),
            logs(&api_side)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "refused {:?} after the ban; whole test {:?}",
        banned_at.elapsed(),
        started.elapsed()
    );
    drop(c);
    drop(net);
}
