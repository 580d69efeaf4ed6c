//! Issue 11, item 1: the CA is authenticated by its SPIFFE ID, not by a DNS
//! name a workload's certificate can carry. A workload whose entry names
//! `localhost` serves its own certificate with `openssl s_server`; the CLI,
//! `tessera cert renew`, the sidecar and the agent all refuse it, saying why,
//! and the CA refuses entries for its own identities and names.

use std::process::Command;
use std::time::Duration;
use tessera_test_support::{CaBuilder, Process, workspace_binary};

mod common;

use common::Ca;

const WHY: &str = "not the Tessera CA (spiffe://example.org/tessera/ca-server)";
const IMPOSTOR: &str = "server is spiffe://example.org/web";
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_workload_certificate_for_the_ca_name_does_not_pass_for_the_ca() {
    // The real CA answers as ca.test and 127.0.0.1, so "localhost" is a name
    // an entry may carry.
    let ca = Ca::start_with(
        &CaBuilder::new().set(r#"server_dns_names=["ca.test"]"#),
        "tessera-ca",
    );
    let real = format!("https://127.0.0.1:{}", ca.inner().port());
    let at_ca = |args: &[&str]| {
        let mut all = vec!["--server", real.as_str()];
        all.extend_from_slice(args);
        ca.tessera(&all)
    };
    let entry = |id: &str, dns: Option<&str>| {
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--selector",
            "unix:uid:1",
        ];
        if let Some(d) = dns {
            args.extend(["--dns-name", d]);
        }
        at_ca(&args)
    };
    // The CA's and operators' identities, and the CA's own names, are not
    // for entries.
    for (id, dns, refusal) in [
        (
            "spiffe://example.org/tessera/ca-server",
            None,
            "reserved for Tessera",
        ),
        (
            "spiffe://example.org/tessera/operator/eve",
            None,
            "reserved for Tessera",
        ),
        (
            "spiffe://example.org/db",
            Some("CA.test"),
            "CA server's own names",
        ),
        ("spiffe://example.org/db", Some("127.0.0.1"), ""),
    ] {
        let o = entry(id, dns);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "entry {id} {dns:?} was accepted");
        assert!(err.contains(refusal), "entry {id} {dns:?}: {err}");
    }

    // The impostor: a workload entry for the name clients dial, redeemed.
    let o = entry("spiffe://example.org/web", Some("localhost"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = |id: &str| {
        let o = at_ca(&["token", "create", "--spiffe-id", id]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let t = token("spiffe://example.org/web");
    let o = at_ca(&["cert", "issue", "--token", &t, "--out-dir", "web"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let web = ca.path("web");
    let s_server = Process::spawn(
        "openssl s_server",
        Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
            .arg(web.join("cert.pem"))
            .arg("-key")
            .arg(web.join("key.pem"))
            .current_dir(ca.dir()),
    );
    let line = s_server.wait_for("ACCEPT line", DEADLINE, |o| {
        o.stdout.iter().find(|l| l.starts_with("ACCEPT")).cloned()
    });
    let port = line.rsplit(':').next().unwrap().trim().to_owned();
    let fake = format!("https://localhost:{port}");
    let bundle = ca.path("data/admin/bundle.pem");
    let bundle = bundle.to_str().unwrap();

    // The CLI, with the operator's credentials and bundle.
    let o = ca.tessera(&["--server", &fake, "--ca-bundle", bundle, "ca", "status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the CLI accepted the impostor");
    assert!(err.contains(IMPOSTOR) && err.contains(WHY), "CLI: {err}");

    // `tessera cert renew`, with the workload's own certificate.
    let o = ca.tessera(&["--server", &fake, "cert", "renew", "--cert-dir", "web"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "cert renew accepted the impostor");
    assert!(
        err.contains(IMPOSTOR) && err.contains(WHY),
        "cert renew: {err}"
    );

    // The sidecar (join token, direct mode) and the agent (node join token).
    let dir = ca.path("peers");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("sidecar.toml");
    std::fs::write(
        &cfg,
        format!(
            "ca_url = \"{fake}\"\nca_bundle = \"{bundle}\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [[inbound]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\nforward = \"127.0.0.1:9\"\n\
             allow = [\"spiffe://example.org/*\"]\n"
        ),
    )
    .unwrap();
    let sidecar = Process::spawn(
        "tessera-sidecar",
        Command::new(workspace_binary("tessera-sidecar", "tessera-sidecar"))
            .arg("--config")
            .arg(&cfg)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env("TESSERA_JOIN_TOKEN", token("spiffe://example.org/web"))
            .env("TESSERA_LOG", "info"),
    );
    let o = entry("spiffe://example.org/tessera/agent/n1", None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let agent = Process::spawn(
        "tessera-agent",
        Command::new(workspace_binary("tessera-agent", "tessera-agent"))
            .arg("--set")
            .arg(format!("ca_url=\"{fake}\""))
            .arg("--set")
            .arg(format!("ca_bundle=\"{bundle}\""))
            .arg("--set")
            .arg("node_name=\"n1\"")
            .arg("--set")
            .arg(format!(
                "socket_path=\"{}\"",
                dir.join("sock/agent.sock").display()
            ))
            .env(
                "TESSERA_JOIN_TOKEN",
                token("spiffe://example.org/tessera/agent/n1"),
            )
            .env("TESSERA_LOG", "info"),
    );
    for p in [&sidecar, &agent] {
        let line = p.wait_for("the refusal", DEADLINE, |o| {
            o.stderr
                .iter()
                .chain(&o.stdout)
                .find(|l| l.contains(WHY) || l.contains("ready"))
                .cloned()
        });
        assert!(
            line.contains(IMPOSTOR) && line.contains(WHY),
            "{}: {line}\n{}",
            p.name(),
            p.describe()
        );
    }
}
