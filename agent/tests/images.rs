//! The OCI images (issue 14 item 1), built by `deploy/images/build.sh` from
//! this repository alone (`FROM scratch`, static binaries, `--pull=never`),
//! then run with nothing of the host mounted but a trust bundle:
//!
//! - each image's size (the sidecar's at most 15 MB), its numeric user
//!   (65532 for the CA and the sidecar; root for the agent, on purpose) and
//!   the absence of a shell;
//! - the CA image runs `tessera-ca` as its unprivileged user on an empty
//!   data directory, and the `tessera` CLI beside it registers an entry and
//!   makes a join token;
//! - the sidecar image, on the same Podman network, reaches the CA by its
//!   container name (resolved by DNS inside the container: Podman's
//!   aardvark-dns), redeems the token, and its own `--probe` (the exec health
//!   check, since the image has no shell) passes on `/readyz` and `/healthz`
//!   and fails on a port nothing listens on.
//!
//! The release build is cargo's (cached in the target directory: about ten
//! minutes cold on two cores, seconds after). Containers, the network and
//! temp directories are removed by drop guards, pass or fail.

mod support;

use std::process::Command;
use std::time::Duration;

use support::podman::{
    Containers, Network, build_tessera_images, podman, podman_try, tessera_image,
};
use tessera_test_support::Process;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const START: Duration = Duration::from_secs(120);

/// Follows a container's output until a line satisfies `found`.
fn await_line(container: &str, what: &str, found: impl Fn(&str) -> bool) -> String {
    let logs = Process::spawn(
        format!("podman logs -f {container}"),
        Command::new("podman").args(["logs", "-f", container]),
    );
    logs.wait_for(what, START, |o| {
        o.stdout
            .iter()
            .chain(&o.stderr)
            .find(|l| found(l))
            .cloned()
            .map(Some)
            .or_else(|| o.closed().then_some(None))
    })
    .unwrap_or_else(|| panic!("{container} exited before {what}:\n{}", logs.describe()))
}

/// `tessera` (the CLI in the CA image) inside the CA container.
fn cli(ca: &str, args: &[&str]) -> String {
    let mut all = vec!["exec", ca, "/tessera", "--server", "https://localhost:8443"];
    all.extend_from_slice(args);
    podman(&all)
}

#[test]
fn images_build_from_the_repo_and_run_a_ca_and_a_ready_sidecar() {
    build_tessera_images();
    // Sizes, users, no shell.
    for (name, user, most) in [
        ("sidecar", "65532:65532", 15_000_000),
        ("agent", "0:0", 15_000_000),
        ("ca", "65532:65532", 40_000_000),
    ] {
        let img = tessera_image(name);
        let size: u64 = podman(&["image", "inspect", "--format", "{{.Size}}", &img])
            .parse()
            .unwrap();
        eprintln!("{img}: {size} bytes");
        assert!(size <= most, "{img}: {size} bytes, more than {most}");
        assert_eq!(
            podman(&["image", "inspect", "--format", "{{.Config.User}}", &img]),
            user
        );
        let (shell, out) =
            podman_try(&["run", "--rm", "--entrypoint", "/bin/sh", &img, "-c", "true"]);
        assert!(!shell, "{img} has a shell: {out}");
    }
    let agent = podman(&["run", "--rm", &tessera_image("agent"), "--version"]);
    assert!(agent.contains(VERSION), "{agent}");

    let net = Network::create_with_dns();
    let mut c = Containers::default();
    // The CA on the test's network, known there by DNS as `tessera-ca` (its
    // server certificate names it).
    let ca = c.run_image(
        "ca",
        &[
            "--network",
            &net.name,
            "--network-alias",
            "tessera-ca",
            "-e",
            "TESSERA_LISTEN=0.0.0.0:8443",
            "-e",
            "TESSERA__SERVER_DNS_NAMES=[\"localhost\", \"tessera-ca\"]",
        ],
        &tessera_image("ca"),
        &[],
    );
    await_line(&ca, "the CA's listening line", |l| {
        l.starts_with("tessera-ca listening on ")
    });
    let id = "spiffe://example.org/image-test";
    cli(
        &ca,
        &[
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--selector",
            "unix:uid:65532",
        ],
    );
    let token = cli(&ca, &["token", "create", "--spiffe-id", id]);
    let bundle_dir = tempfile::tempdir().unwrap();
    let bundle = bundle_dir.path().join("bundle.pem");
    std::fs::write(&bundle, cli(&ca, &["ca", "bundle"]) + "\n").unwrap();
    // The sidecar runs as 65532: the bind-mounted bundle must be readable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The sidecar, configured by flags alone, reaching the CA by name.
    let side = c.run_image(
        "sidecar",
        &[
            "--network".to_owned(),
            net.name.clone(),
            "-v".into(),
            format!("{}:/etc/tessera/bundle.pem:ro", bundle.display()),
            "-e".into(),
            format!("TESSERA_JOIN_TOKEN={token}"),
        ],
        &tessera_image("sidecar"),
        &[
            "--set",
            "ca_url=\"https://tessera-ca:8443\"",
            "--set",
            "ca_bundle=\"/etc/tessera/bundle.pem\"",
            "--set",
            "inbound=[{name = \"in\", listen = \"0.0.0.0:8443\", forward = \"127.0.0.1:8080\", allow = [\"spiffe://example.org/*\"]}]",
        ],
    );
    // Its one stdout line comes once it holds an identity and listens.
    let line = await_line(&side, "the sidecar's addresses", |l| {
        l.starts_with("{\"tessera_sidecar\"")
    });
    eprintln!("{line}");
    let probe = |url: &str| podman_try(&["exec", &side, "/tessera-sidecar", "--probe", url]);
    for url in [
        "http://127.0.0.1:15000/readyz",
        "http://127.0.0.1:15000/healthz",
    ] {
        let (ok, out) = probe(url);
        assert!(ok, "{url}: {out}");
    }
    let (ok, out) = probe("http://127.0.0.1:1/readyz");
    assert!(!ok && out.contains("127.0.0.1:1"), "{out}");
    let identity = podman(&[
        "exec",
        &ca,
        "/tessera",
        "--server",
        "https://localhost:8443",
        "cert",
        "list",
        "--spiffe-id",
        id,
    ]);
    assert!(identity.contains(id), "{identity}");
}
