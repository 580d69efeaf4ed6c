//! `tessera inject`: files, directories and stdin in, the injector's output
//! out (only when every input succeeds), refusals naming the file and the
//! annotation with exit status 1.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use tessera_injector::{Injector, Options};

const CA_URL: &str = "https://tessera-ca:8443";

const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    tessera.dev/inbound: \"8443->8080\"\n    tessera.dev/allow: \"spiffe://example.org/api\"\nspec:\n  containers:\n  - name: web\n    image: web\n";
const JOB: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\nspec:\n  template:\n    metadata:\n      annotations:\n        tessera.dev/outbound: \"15001=spiffe://example.org/api@api:8443\"\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: once\n        image: once\n";
const BAD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  annotations:\n    tessera.dev/outbound: \"15001=spiffe://example.org/api\"\nspec:\n  containers:\n  - name: bad\n    image: bad\n";

fn tessera(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("inject")
        .args(args)
        .env_remove("TESSERA_INJECT_CA_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn expected(native: bool, text: &str) -> String {
    let mut opts = Options::new(CA_URL);
    opts.native_sidecar = native;
    Injector::new(opts).unwrap().inject_str(text).unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn files_directories_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-web.yaml"), WEB).unwrap();
    std::fs::write(dir.path().join("b-job.yml"), JOB).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let web = dir.path().join("a-web.yaml");
    let web = web.to_str().unwrap();
    let d = dir.path().to_str().unwrap();

    assert_eq!(
        stdout(&tessera(&["--ca-url", CA_URL], WEB)),
        expected(false, WEB)
    );
    assert_eq!(
        stdout(&tessera(&["--ca-url", CA_URL, "-f", "-"], WEB)),
        expected(false, WEB)
    );
    assert_eq!(
        stdout(&tessera(&["--ca-url", CA_URL, "-f", web], "")),
        expected(false, WEB)
    );
    // A directory: its manifests in name order (the Job needs native sidecars).
    assert_eq!(
        stdout(&tessera(
            &["--ca-url", CA_URL, "--native-sidecar", "-f", d],
            ""
        )),
        format!("{}---\n{}", expected(true, WEB), expected(true, JOB))
    );
    // Several -f, stdin among them.
    assert_eq!(
        stdout(&tessera(
            &["--ca-url", CA_URL, "--native-sidecar", "-f", web, "-f", "-"],
            JOB
        )),
        format!("{}---\n{}", expected(true, WEB), expected(true, JOB))
    );
}

#[test]
fn refusals_name_the_input_and_print_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), WEB).unwrap();
    std::fs::write(dir.path().join("b.yaml"), format!("{WEB}---\n{BAD}")).unwrap();
    let o = tessera(
        &["--ca-url", CA_URL, "-f", dir.path().to_str().unwrap()],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "partial output");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("b.yaml: document 2: Pod/bad: annotation tessera.dev/outbound"),
        "{err}"
    );
    let o = tessera(&["--ca-url", CA_URL], JOB);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--native-sidecar"));
    let o = tessera(&["--ca-url", "http://plain:80"], WEB);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ca_url"));
    // No CA URL is a usage error.
    assert_eq!(tessera(&[], WEB).status.code(), Some(2));
}
