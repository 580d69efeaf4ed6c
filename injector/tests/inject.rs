//! `tessera-injector` over manifests of every kind: sidecars where they
//! belong, every output valid against the Kubernetes API schema
//! (`kubernetes-validate --strict`, offline, current release), idempotence,
//! everything else kept in order (also as a YAML 1.1 reader such as
//! Kubernetes' sees it), and each refusal naming what it refuses.

use serde_norway::Value;
use std::path::Path;
use std::process::Command;
use tessera_injector::{
    ErrorKind, InjectError, Injector, Options, SIDECAR_CONTAINER, SOCKET_VOLUME,
};
use tessera_test_support::python::{venv_python, venv_tool};

/// The Kubernetes release whose schema outputs are checked against.
const KUBERNETES: &str = "1.37.0";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/manifests")
            .join(name),
    )
    .unwrap()
}

fn injector(native: bool) -> Injector {
    let mut opts = Options::new("https://tessera-ca.tessera.svc:8443");
    opts.native_sidecar = native;
    Injector::new(opts).unwrap()
}

fn docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The pod specs of a document (a List's items each), with their object's name.
fn pod_specs(doc: &Value) -> Vec<(String, Value)> {
    if doc["kind"] == "List" {
        return doc["items"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(pod_specs)
            .collect();
    }
    let name = format!(
        "{}/{}",
        doc["kind"].as_str().unwrap(),
        doc["metadata"]["name"].as_str().unwrap_or("")
    );
    let spec = match doc["kind"].as_str().unwrap() {
        "Pod" => &doc["spec"],
        "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            &doc["spec"]["template"]["spec"]
        }
        _ => return vec![],
    };
    vec![(name, spec.clone())]
}

/// `f` of every item of a sequence.
fn each<'a, T>(seq: &'a Value, f: impl Fn(&'a Value) -> T) -> Vec<T> {
    seq.as_sequence().unwrap().iter().map(f).collect()
}

fn named<'a>(list: &'a Value, name: &str) -> Vec<&'a Value> {
    list.as_sequence()
        .map(|s| s.iter().filter(|c| c["name"] == name).collect())
        .unwrap_or_default()
}

/// Runs kubernetes-validate on every object of `yaml` (a List's items
/// separately: the validator has no schema for List and would skip them).
fn validate(yaml: &str) {
    let mut flat = String::new();
    for doc in docs(yaml) {
        let objects = if doc["kind"] == "List" {
            doc["items"].as_sequence().unwrap().clone()
        } else {
            vec![doc]
        };
        for o in objects {
            flat.push_str("---\n");
            flat.push_str(&tessera_injector::yaml::to_string(&o).unwrap());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.yaml");
    std::fs::write(&file, &flat).unwrap();
    let out = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "-k", KUBERNETES])
        .arg(&file)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubernetes-validate refused:\n{report}\n{flat}"
    );
    assert!(!report.contains("Couldn't find schema"), "{report}");
}

/// Takes the injection out again: the sidecar, the socket volume, and the
/// lists left empty.
fn uninject(doc: &mut Value) {
    if doc["kind"] == "List" {
        doc["items"]
            .as_sequence_mut()
            .unwrap()
            .iter_mut()
            .for_each(uninject);
        return;
    }
    let spec = match doc["kind"].as_str().unwrap() {
        "Pod" => &mut doc["spec"],
        "CronJob" => &mut doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            &mut doc["spec"]["template"]["spec"]
        }
        _ => return,
    };
    let spec = spec.as_mapping_mut().unwrap();
    for (list, name) in [
        ("containers", SIDECAR_CONTAINER),
        ("initContainers", SIDECAR_CONTAINER),
        ("volumes", SOCKET_VOLUME),
    ] {
        if let Some(seq) = spec.get_mut(list).and_then(Value::as_sequence_mut) {
            seq.retain(|c| c["name"] != name);
            if seq.is_empty() && list != "containers" {
                spec.remove(list);
            }
        }
    }
}

fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_norway::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn every_workload_kind_gets_one_sidecar_and_the_output_is_valid_kubernetes() {
    for native in [false, true] {
        let out = injector(native)
            .inject_str(&fixture("workloads.yaml"))
            .unwrap();
        validate(&out);
        let mut meshed = vec![];
        for doc in docs(&out) {
            for (name, spec) in pod_specs(&doc) {
                let (here, there) = if native {
                    ("initContainers", "containers")
                } else {
                    ("containers", "initContainers")
                };
                let sidecars = named(&spec["volumes"], SOCKET_VOLUME).len();
                if name == "Pod/skipped" {
                    assert_eq!(sidecars, 0, "{name}");
                    assert!(named(&spec[here], SIDECAR_CONTAINER).is_empty());
                    continue;
                }
                meshed.push(name.clone());
                assert_eq!(
                    named(&spec[here], SIDECAR_CONTAINER).len(),
                    1,
                    "{name}: {spec:?}"
                );
                assert!(named(&spec[there], SIDECAR_CONTAINER).is_empty(), "{name}");
                assert_eq!(sidecars, 1, "{name}");
                let sidecar = named(&spec[here], SIDECAR_CONTAINER)[0];
                if native {
                    // First init container, so everything after it waits for it.
                    assert_eq!(
                        spec["initContainers"][0]["name"], SIDECAR_CONTAINER,
                        "{name}"
                    );
                    assert_eq!(sidecar["restartPolicy"], "Always");
                    assert!(
                        sidecar["startupProbe"]["exec"]["command"][2]
                            .as_str()
                            .unwrap()
                            .ends_with("/readyz")
                    );
                } else {
                    assert!(sidecar.get("restartPolicy").is_none());
                }
                assert_eq!(sidecar["env"][0]["name"], "SPIFFE_ENDPOINT_SOCKET");
                assert_eq!(sidecar["env"][0]["value"], "unix:///run/tessera/agent.sock");
                assert_eq!(sidecar["volumeMounts"][0]["readOnly"], true);
                assert_eq!(sidecar["readinessProbe"]["exec"]["command"][1], "--probe");
                assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
            }
        }
        assert_eq!(
            meshed,
            [
                "Pod/web",
                "Deployment/api",
                "StatefulSet/db",
                "DaemonSet/collector",
                "ReplicaSet/cache",
                "Deployment/listed"
            ]
        );
    }
}

#[test]
fn annotations_become_sidecar_arguments_the_sidecar_accepts() {
    let out = injector(false)
        .inject_str(&fixture("workloads.yaml"))
        .unwrap();
    let api = &docs(&out)[1];
    let sidecar = named(
        &api["spec"]["template"]["spec"]["containers"],
        SIDECAR_CONTAINER,
    )[0];
    let args = each(&sidecar["args"], |a| a.as_str().unwrap());
    assert_eq!(
        args,
        [
            "--set",
            "ca_url=\"https://tessera-ca.tessera.svc:8443\"",
            "--set",
            "inbound=[{name = \"inbound-8443\", listen = \"0.0.0.0:8443\", forward = \"127.0.0.1:8080\", allow = [\"spiffe://example.org/web\"]}, \
             {name = \"inbound-9443\", listen = \"0.0.0.0:9443\", forward = \"127.0.0.1:9090\", allow = [\"spiffe://example.org/web\"]}]",
            "--set",
            "workload_api_spiffe_id=\"spiffe://example.org/api\"",
        ]
    );
    let ports = each(&sidecar["ports"], |p| p["containerPort"].as_u64().unwrap());
    assert_eq!(ports, [8443, 9443]);
    // The sidecar's own loader takes exactly these arguments.
    use tessera_sidecar::config::Options as _;
    let sets: Vec<String> = args
        .iter()
        .skip(1)
        .step_by(2)
        .map(|s| s.to_string())
        .collect();
    let cfg =
        tessera_sidecar::config::Config::load(None, tessera_core::config::NO_ENV, &sets).unwrap();
    assert_eq!(cfg.inbound.len(), 2);
    assert_eq!(cfg.inbound[1].forward, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(
        cfg.workload_api_spiffe_id.unwrap().as_str(),
        "spiffe://example.org/api"
    );
}

#[test]
fn injecting_twice_is_injecting_once_in_either_mode() {
    let input = fixture("workloads.yaml");
    for native in [false, true] {
        let once = injector(native).inject_str(&input).unwrap();
        assert_eq!(
            injector(native).inject_str(&once).unwrap(),
            once,
            "native={native}"
        );
        // Switching modes replaces the earlier sidecar instead of adding one.
        let other = injector(!native).inject_str(&once).unwrap();
        assert_eq!(
            other,
            injector(!native).inject_str(&input).unwrap(),
            "native={native}"
        );
    }
    let batch = injector(true).inject_str(&fixture("batch.yaml")).unwrap();
    assert_eq!(injector(true).inject_str(&batch).unwrap(), batch);
}

#[test]
fn everything_but_the_sidecar_is_kept_in_order_and_as_yaml_1_1_reads_it() {
    // Fields Kubernetes does not know (a newer release's, or an operator's)
    // are kept too; this manifest is not validated for that reason.
    let unknown = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: future\n  annotations:\n    tessera.dev/outbound: \"15001=spiffe://example.org/api@api:8443\"\n\
                   spec:\n  zFutureField: {b: 1, a: 2}\n  containers:\n  - name: app\n    image: app\n    futureKnob: true\n  restartPolicy: Always\n";
    for (input, native) in [
        (fixture("workloads.yaml"), false),
        (fixture("workloads.yaml"), true),
        (fixture("batch.yaml"), true),
        (unknown.to_owned(), false),
    ] {
        let out = injector(native).inject_str(&input).unwrap();
        let mut stripped = docs(&out);
        stripped.iter_mut().for_each(uninject);
        // Same documents, same keys in the same order (a string compare;
        // Value equality would ignore order).
        assert_eq!(to_yaml(&stripped), to_yaml(&docs(&input)));
        // And a YAML 1.1 reader (PyYAML, as Kubernetes' go-yaml) reads the
        // output as it reads the input: "on", "0755", "yes" stay strings.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.yaml"), &input).unwrap();
        std::fs::write(dir.path().join("out.yaml"), &out).unwrap();
        let st = Command::new(venv_python())
            .current_dir(dir.path())
            .args(["-c", PY_SAME_BUT_THE_SIDECAR])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// Python: in.yaml equals out.yaml once the sidecar, the socket volume and
/// the lists left empty are taken out of out.yaml.
const PY_SAME_BUT_THE_SIDECAR: &str = r#"
import sys, yaml
def strip(v):
    if isinstance(v, dict):
        for key, name in (("containers", "tessera-sidecar"), ("initContainers", "tessera-sidecar"), ("volumes", "tessera-agent-socket")):
            if isinstance(v.get(key), list):
                v[key] = [c for c in v[key] if not (isinstance(c, dict) and c.get("name") == name)]
                if not v[key] and key != "containers":
                    del v[key]
        for x in v.values():
            strip(x)
    elif isinstance(v, list):
        for x in v:
            strip(x)
    return v
a = [d for d in yaml.safe_load_all(open("in.yaml")) if d is not None]
b = [strip(d) for d in yaml.safe_load_all(open("out.yaml")) if d is not None]
if a != b:
    print(a, b, sep="\n!=\n")
    sys.exit(1)
"#;

#[test]
fn skipped_and_foreign_objects_pass_through_unchanged() {
    let input = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 1\n---\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  template:\n    metadata:\n      annotations:\n        tessera.dev/inject: \"false\"\n    spec:\n      containers:\n      - name: a\n        image: a\n---\n\
                 apiVersion: example.com/v1\nkind: Deployment\nmetadata:\n  name: custom\nspec: 3\n";
    let out = injector(false).inject_str(input).unwrap();
    assert_eq!(docs(&out), docs(input));
    assert_eq!(to_yaml(&docs(&out)), to_yaml(&docs(input)));
}

fn refusal(yaml: &str, native: bool) -> InjectError {
    injector(native).inject_str(yaml).unwrap_err()
}

/// A Pod with these annotation lines (already indented) and this container spec tail.
fn pod(annotations: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n{annotations}spec:\n  containers:\n  - name: app\n    image: app\n{extra}"
    )
}

#[test]
fn invalid_annotations_are_refused_naming_the_annotation() {
    let long = format!(
        "    tessera.dev/allow: \"spiffe://example.org/{}\"\n",
        "a".repeat(5000)
    );
    let many = format!(
        "    tessera.dev/inbound: \"{}\"\n    tessera.dev/allow: \"spiffe://example.org/*\"\n",
        (1..=33)
            .map(|p| format!("{}->{}", 20000 + p, 30000 + p))
            .collect::<Vec<_>>()
            .join(",")
    );
    let inb = "    tessera.dev/inbound: \"8443->8080\"\n";
    let cases: Vec<(String, &str, &str)> = vec![
        ("    tessera.dev/inbound: \"8443\"\n    tessera.dev/allow: \"spiffe://example.org/*\"\n".into(), "tessera.dev/inbound", "LISTEN->FORWARD"),
        ("    tessera.dev/inbound: \"8443->0\"\n    tessera.dev/allow: \"spiffe://example.org/*\"\n".into(), "tessera.dev/inbound", "1 to 65535"),
        ("    tessera.dev/inbound: \"8443->8080,\"\n    tessera.dev/allow: \"spiffe://example.org/*\"\n".into(), "tessera.dev/inbound", "empty entry"),
        (inb.into(), "tessera.dev/allow", "required"),
        (format!("{inb}    tessera.dev/allow: \"web\"\n"), "tessera.dev/allow", "\"web\""),
        (format!("{inb}    tessera.dev/allow: \"spiffe://Bad Domain/*\"\n"), "tessera.dev/allow", "spiffe"),
        ("    tessera.dev/allow: \"spiffe://example.org/*\"\n    tessera.dev/outbound: \"15001=spiffe://example.org/a@a:1\"\n".into(), "tessera.dev/allow", "only meaningful"),
        ("    tessera.dev/outbound: \"15001=spiffe://example.org/api\"\n".into(), "tessera.dev/outbound", "PORT=SPIFFE_ID@HOST:PORT"),
        ("    tessera.dev/outbound: \"15001=spiffe://example.org/api@api\"\n".into(), "tessera.dev/outbound", "PORT=SPIFFE_ID@HOST:PORT"),
        ("    tessera.dev/outbound: \"15001=spiffe://example.org/api@api:http\"\n".into(), "tessera.dev/outbound", "host:port"),
        ("    tessera.dev/outbound: \"15001=https://example.org/api@api:8443\"\n".into(), "tessera.dev/outbound", "server_id"),
        ("    tessera.dev/outbound: \"15001=spiffe://example.org/api@a\\\"b:8443\"\n".into(), "tessera.dev/outbound", "DNS name"),
        ("    tessera.dev/outbound: \"15001=spiffe://example.org/a@a:1\"\n    tessera.dev/spiffe-id: \"spiffe://example.org\"\n".into(), "tessera.dev/spiffe-id", "workload_api_spiffe_id"),
        ("    tessera.dev/inject: \"maybe\"\n".into(), "tessera.dev/inject", "\"true\" or \"false\""),
        ("    tessera.dev/inject: false\n".into(), "tessera.dev/inject", "must be a string"),
        ("    tessera.dev/inbund: \"8443->8080\"\n".into(), "tessera.dev/*", "tessera.dev/inbound"),
        ("    example.com/x: \"y\"\n".into(), "tessera.dev/inbound", "no listener"),
        ("    tessera.dev/inbound: \"15000->8080\"\n    tessera.dev/allow: \"spiffe://example.org/*\"\n".into(), "tessera.dev/inbound", "admin"),
        ("    tessera.dev/inbound: \"8443->8080,8443->9090\"\n    tessera.dev/allow: \"spiffe://example.org/*\"\n".into(), "tessera.dev/inbound", "used twice"),
        ("    tessera.dev/inbound: \"8443->15001\"\n    tessera.dev/allow: \"spiffe://example.org/*\"\n    tessera.dev/outbound: \"15001=spiffe://example.org/a@a:1\"\n".into(), "tessera.dev/inbound", "forward port 15001"),
        (long, "tessera.dev/allow", "longer than"),
        (many, "tessera.dev/inbound", "more than 32"),
    ];
    for (annotations, name, says) in cases {
        let e = refusal(&pod(&annotations, ""), false);
        let msg = e.to_string();
        match &e.kind {
            ErrorKind::Annotation(n, m) => {
                assert_eq!(*n, name, "{annotations}: {msg}");
                assert!(m.contains(says), "{annotations}: {msg}");
            }
            other => panic!("{annotations}: {other:?}"),
        }
        assert!(msg.starts_with("document 1: Pod/p: annotation "), "{msg}");
    }
}

#[test]
fn pods_that_cannot_be_meshed_safely_are_refused() {
    let outbound = "    tessera.dev/outbound: \"15001=spiffe://example.org/api@api:8443\"\n";
    let inbound = "    tessera.dev/inbound: \"8443->8080\"\n    tessera.dev/allow: \"spiffe://example.org/*\"\n";
    let host = pod(outbound, "  hostNetwork: true\n");
    assert!(matches!(refusal(&host, false).kind, ErrorKind::HostNetwork));
    assert!(matches!(refusal(&host, true).kind, ErrorKind::HostNetwork));
    for (annotations, port, what) in [
        (inbound, 8443, "tessera.dev/inbound"),
        (outbound, 15001, "tessera.dev/outbound"),
        (outbound, 15000, "admin"),
    ] {
        let p = pod(
            annotations,
            &format!("    ports:\n    - containerPort: {port}\n"),
        );
        match refusal(&p, false).kind {
            ErrorKind::PortCollision {
                port: got,
                container,
                what: w,
            } => {
                assert_eq!((got, container.as_str()), (port, "app"));
                assert!(w.contains(what), "{w}");
            }
            other => panic!("{other:?}"),
        }
    }
    // The app's own port is where the sidecar forwards: no collision.
    let ok = pod(inbound, "    ports:\n    - containerPort: 8080\n");
    injector(false).inject_str(&ok).unwrap();
}

#[test]
fn pods_that_run_to_completion_need_native_sidecars() {
    let batch = fixture("batch.yaml");
    let e = refusal(&batch, false);
    assert!(matches!(e.kind, ErrorKind::Completes(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("document 1: Job/migrate: Job pods run to completion"),
        "{msg}"
    );
    assert!(msg.contains("--native-sidecar"), "{msg}");
    for (i, doc) in batch.split("\n---\n").enumerate().skip(1) {
        let e = refusal(doc, false);
        assert!(matches!(e.kind, ErrorKind::Completes(_)), "{i}: {e}");
    }
    let out = injector(true).inject_str(&batch).unwrap();
    validate(&out);
    let cron = &docs(&out)[1];
    let init = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(init[0]["name"], SIDECAR_CONTAINER);
    assert_eq!(init[1]["name"], "wait");
}

#[test]
fn malformed_input_is_refused_naming_the_document() {
    let e = refusal("apiVersion: v1\nkind: Service\n---\nkind: [\n", false);
    assert!(matches!(e.kind, ErrorKind::Input(_)), "{e}");
    assert!(e.to_string().starts_with("document 2"), "{e}");
    let e = refusal(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: 3}\n",
        false,
    );
    assert!(
        matches!(&e.kind, ErrorKind::Malformed(f, _) if f == "spec.template"),
        "{e}"
    );
    let e = refusal(
        &pod(
            "    tessera.dev/outbound: \"15001=spiffe://example.org/a@a:1\"\n",
            "",
        )
        .replace(
            "  containers:\n  - name: app\n    image: app\n",
            "  containers: 7\n",
        ),
        false,
    );
    assert!(
        matches!(&e.kind, ErrorKind::Malformed(f, _) if f == "spec.containers"),
        "{e}"
    );
    let e = refusal("kind: List\nitems:\n- kind: List\n  items: []\n", false);
    assert!(
        e.to_string()
            .starts_with("document 1: List/<unnamed> item 1"),
        "{e}"
    );
    // Limits on the input as a whole.
    let e = refusal(
        &"{}\n---\n".repeat(tessera_injector::MAX_DOCUMENTS + 1),
        false,
    );
    assert!(e.to_string().contains("documents"), "{e}");
    let e = refusal(&" ".repeat(tessera_injector::MAX_INPUT_BYTES + 1), false);
    assert!(e.to_string().contains("bytes"), "{e}");
}

#[test]
fn options_are_checked_once_by_the_sidecars_rules() {
    for (opts, says) in [
        (Options::new("http://ca:8443"), "ca_url"),
        (
            Options {
                agent_socket: "agent.sock".into(),
                ..Options::new("https://ca:8443")
            },
            "agent socket",
        ),
        (
            Options {
                image: "a b".into(),
                ..Options::new("https://ca:8443")
            },
            "image",
        ),
    ] {
        let e = Injector::new(opts).unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::Options(_)) && e.to_string().contains(says),
            "{e}"
        );
    }
    let custom = Injector::new(Options {
        agent_socket: "/var/run/spire/tessera.sock".into(),
        image: "registry.example/tessera-sidecar:9".into(),
        ..Options::new("https://ca:8443")
    })
    .unwrap();
    let out = custom
        .inject_str(&pod(
            "    tessera.dev/outbound: \"15001=spiffe://example.org/a@a:1\"\n",
            "",
        ))
        .unwrap();
    let spec = &docs(&out)[0]["spec"];
    assert_eq!(
        spec["containers"][1]["image"],
        "registry.example/tessera-sidecar:9"
    );
    assert_eq!(
        spec["containers"][1]["env"][0]["value"],
        "unix:///run/tessera/tessera.sock"
    );
    assert_eq!(spec["volumes"][0]["hostPath"]["path"], "/var/run/spire");
}
