//! End-to-end tests of the `tessera` CLI against a real `tessera-ca` process:
//! the README walkthrough as written, and the exit codes scripts rely on.

use std::process::{Command, Output};

mod common;

use common::{Ca, bin_dir};

#[test]
fn readme_walkthrough_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("walkthrough start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("walkthrough end marker");
    let block = &readme[start..end];
    let script: String = block
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        script.contains("tessera cert issue"),
        "walkthrough block not found"
    );
    let ca = Ca::start();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(ca.dir())
        .env("PATH", path)
        .env_remove("TESSERA_SERVER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "walkthrough failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("check                ok"), "{stdout}");
    assert!(stdout.contains("./web/cert.pem: OK"), "{stdout}");
    assert!(stdout.contains("revoked 1 certificate(s)"), "{stdout}");
    assert!(
        stdout.contains("Serial Number:"),
        "CRL listing lacks the serial: {stdout}"
    );
    assert!(stdout.contains("audit chain intact"), "{stdout}");
    // The key was written 0600 by the CLI, never by the CA.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ca.dir().join("web/key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

/// `entry create` for this SPIFFE ID with one selector.
fn entry_create(spiffe_id: &str) -> [&str; 6] {
    [
        "entry",
        "create",
        "--spiffe-id",
        spiffe_id,
        "--selector",
        "a:b",
    ]
}

/// The auditor's config file, and no data directory to fall back on.
const RO_CONFIG: [&str; 4] = ["--config", "ro.toml", "--data-dir", "/nonexistent"];

#[test]
fn exit_codes_scripts_rely_on() {
    let ca = Ca::start();
    let code = |o: &Output| o.status.code().unwrap_or(-1);

    let o = ca.tessera(&["entry", "show", "00000000000000000000000000000000"]);
    assert_eq!(
        code(&o),
        3,
        "not found: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Invalid request: the message names the field.
    let stderr = ca.exits(&entry_create("spiffe://other.org/x"), 2);
    assert!(stderr.contains("spiffe_id"), "{stderr}");

    // Missing flag.
    let stderr = ca.exits(&["entry", "create", "--selector", "a:b"], 2);
    assert!(stderr.contains("--spiffe-id"));

    let o = ca.tessera(&[
        "cert",
        "issue",
        "--token",
        "tsj_00000000000000000000000000000000.x",
        "--out-dir",
        "x",
    ]);
    assert_eq!(
        code(&o),
        4,
        "refused token: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !ca.dir().join("x/key.pem").exists(),
        "nothing written on refusal"
    );

    let o = ca.tessera(&["--server", "https://localhost:1", "ca", "status"]);
    assert_eq!(code(&o), 5, "unreachable");

    let o = ca.tessera(&["cert", "inspect", "no-such-file.pem"]);
    assert_eq!(code(&o), 1, "local failure");

    // An auditor token reads but cannot register.
    let o = ca.tessera(&[
        "api-token",
        "create",
        "--name",
        "ro",
        "--role",
        "auditor",
        "--output",
        "json",
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let token = v["token"].as_str().unwrap();
    let o = ca.tessera(&["--token", token, "entry", "list", "--output", "json"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(list["items"].is_array());
    // An auditor lists the sidecars' denials (none yet); a bad reason is a usage error.
    let o = ca.tessera(&[
        "--token", token, "denials", "list", "--since", "1h", "--output", "json",
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["items"], serde_json::json!([]));
    let stderr = ca.exits(
        &["--token", token, "denials", "list", "--reason", "bogus"],
        2,
    );
    assert!(stderr.contains("--reason"));
    // The auditor may not register.
    let stderr = ca.exits(
        &[
            &["--token", token][..],
            &entry_create("spiffe://example.org/x"),
        ]
        .concat(),
        4,
    );
    assert!(stderr.contains("forbidden"));

    // The same credentials from a config file (relative paths are relative to it).
    let server = std::fs::read_to_string(ca.dir().join("data/admin/cli.toml")).unwrap();
    let server = server
        .lines()
        .find_map(|l| l.strip_prefix("server = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        ca.dir().join("ro.toml"),
        format!("server = {server}\ntoken = \"{token}\"\nca_bundle = \"data/admin/bundle.pem\"\n"),
    )
    .unwrap();
    ca.exits(
        &[&RO_CONFIG[..], &["cert", "list", "--output", "json"]].concat(),
        0,
    );
    // The file's auditor token is used.
    ca.exits(
        &[&RO_CONFIG[..], &entry_create("spiffe://example.org/x")].concat(),
        4,
    );
    std::fs::write(ca.dir().join("bad.toml"), "sever = \"https://x\"\n").unwrap();
    let stderr = ca.exits(&["--config", "bad.toml", "ca", "status"], 2);
    assert!(stderr.contains("sever"), "names the unknown key: {stderr}");
}

/// `tessera node list|show|ban|unban` against a node that attested with a
/// join token (redeemed here by `tessera cert issue --token`, as an agent does).
#[test]
fn node_commands() {
    let ca = Ca::start();
    let out = |o: &Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let sid = "spiffe://example.org/tessera/agent/n1";
    out(&ca.tessera(&[
        "entry",
        "create",
        "--spiffe-id",
        sid,
        "--selector",
        "node:name:n1",
    ]));
    let token = out(&ca.tessera(&["token", "create", "--spiffe-id", sid]));
    out(&ca.tessera(&["cert", "issue", "--token", token.trim(), "--out-dir", "n1"]));
    let list = out(&ca.tessera(&["node", "list"]));
    assert!(list.contains("n1") && list.contains("join_token"), "{list}");
    let show: serde_json::Value = serde_json::from_str(&out(
        &ca.tessera(&["node", "show", "n1", "--output", "json"])
    ))
    .unwrap();
    assert_eq!(show["spiffe_id"], sid);
    assert_eq!(show["banned"], false);
    let ban = out(&ca.tessera(&["node", "ban", "n1"]));
    assert!(ban.contains("banned node n1"), "{ban}");
    let show: serde_json::Value = serde_json::from_str(&out(
        &ca.tessera(&["node", "show", "n1", "--output", "json"])
    ))
    .unwrap();
    assert_eq!(show["banned"], true);
    let unban = out(&ca.tessera(&["node", "unban", "n1"]));
    assert!(unban.contains("unbanned node n1"), "{unban}");
    let o = ca.tessera(&["node", "show", "nope"]);
    assert_eq!(o.status.code(), Some(3), "not found");
}
