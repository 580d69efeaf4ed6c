//! `demo/run.sh`, the first thing a new user runs, three times in a row on
//! this build: every run must show the allowed call, the denial (listed by the
//! CA) and the revocation, and exit 0. It used to fail about every other run
//! on a fresh machine (it called the api before `http.server` listened).

use std::path::Path;
use std::process::Command;
use tessera_test_support::workspace_binary;

#[test]
fn demo_succeeds_three_runs_in_a_row() {
    let bins = [
        workspace_binary("tessera-ca-server", "tessera-ca"),
        workspace_binary("tessera-cli", "tessera"),
        workspace_binary("tessera-sidecar", "tessera-sidecar"),
    ];
    let dir = bins[0].parent().unwrap().to_owned();
    for b in &bins {
        assert_eq!(
            b.parent(),
            Some(dir.as_path()),
            "{} not beside the others",
            b.display()
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/run.sh");
    for run in 1..=3 {
        // `timeout` bounds a hung run; the script's own waits fail sooner.
        let out = Command::new("timeout")
            .args(["-k", "5", "120", "bash"])
            .arg(&script)
            .env("TESSERA_DEMO_BIN", &dir)
            .output()
            .expect("running demo/run.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "run {run}: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        for want in [
            "hello from api",
            "(connection refused by the api's sidecar, as it should be)",
            "spiffe://example.org/intruder",
            "web refused after revocation",
            "demo done",
        ] {
            assert!(
                stdout.contains(want),
                "run {run}: no {want:?} in\n{stdout}\n{stderr}"
            );
        }
    }
}
