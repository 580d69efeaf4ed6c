//! Container attestation against real containers run by Podman.
//!
//! Each test starts its own `podman system service` on a socket in a temp
//! directory, runs containers from a busybox image built locally (no registry
//! is reachable), attests the PID of a process inside them and checks the
//! selectors. Containers, pods and the service are removed by drop guards,
//! pass or fail. Podman missing is a failure, not a skip: `.ci/run` installs it.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::podman::{
    Containers, IMAGE, Service, binary_mounts, ensure_image, id_of, inspect, pid_of, podman,
};
use tessera_agent::{
    AttestError, Attestation, Attestor, Discovery, EngineClient, EngineError, PeerCred,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn attest_container(attestor: &Attestor, name: &str) -> Attestation {
    let peer = PeerCred::of_process(pid_of(name)).unwrap();
    attestor
        .attest(peer)
        .await
        .unwrap_or_else(|e| panic!("attesting {name}: {e}"))
}

fn has(a: &Attestation, selector: &str) -> bool {
    a.selectors.iter().any(|s| s == selector)
}

#[track_caller]
fn assert_has(a: &Attestation, wanted: &[&str]) {
    for w in wanted {
        assert!(has(a, w), "missing {w} in {:#?}", a.selectors);
    }
}

#[track_caller]
fn assert_sorted_unique(a: &Attestation) {
    let set: BTreeSet<&String> = a.selectors.iter().collect();
    assert_eq!(set.into_iter().cloned().collect::<Vec<_>>(), a.selectors);
}

#[tokio::test]
async fn labelled_container_yields_container_and_default_posture_selectors() {
    let service = Service::start();
    let mut c = Containers::default();
    let web = c.sleeper("web", &["--label", "app=web", "--label", "tier=front"]);
    let id = id_of(&web);
    // The CLI prints the image ID bare; the API (and the selector) prefix it.
    let image_id = format!(
        "sha256:{}",
        inspect(&web, "{{.Image}}").trim_start_matches("sha256:")
    );
    let a = attest_container(&service.attestor(), &web).await;
    let mut wanted = vec![
        format!("container:id:{id}"),
        format!("container:name:{web}"),
        format!("container:image:{IMAGE}"),
        format!("container:image-digest:{image_id}"),
        "container:label:app:web".into(),
        "container:label:tier:front".into(),
        "unix:uid:0".into(),
        "unix:gid:0".into(),
        // Podman's defaults: root in the container, seccomp filter, no
        // CAP_SYS_ADMIN, own namespaces except user and cgroup (this host
        // has hybrid cgroups, so no private cgroup namespace), PID limit 2048.
        "posture:uid:0".into(),
        "posture:root:true".into(),
        "posture:cap-sys-admin:false".into(),
        "posture:no-new-privs:false".into(),
        "posture:seccomp:filter".into(),
        "posture:privileged:false".into(),
        "posture:readonly-rootfs:false".into(),
        "posture:memory-limit:false".into(),
        "posture:pids-limit:true".into(),
        "posture:host-ns-pid:false".into(),
        "posture:host-ns-net:false".into(),
        "posture:host-ns-ipc:false".into(),
        "posture:host-ns-uts:false".into(),
        "posture:host-ns-mnt:false".into(),
        "posture:host-ns-user:true".into(),
    ];
    // The registry digest, when the runtime recorded one for the image.
    for d in podman(&[
        "image",
        "inspect",
        "--format",
        "{{range .RepoDigests}}{{.}} {{end}}",
        IMAGE,
    ])
    .split_whitespace()
    {
        wanted.push(format!(
            "container:image-digest:{}",
            d.rsplit_once('@').unwrap().1
        ));
    }
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    assert_has(&a, &wanted);
    assert!(
        !a.selectors.iter().any(|s| s.starts_with("pod:")),
        "{:?}",
        a.selectors
    );
    assert_sorted_unique(&a);
    let ev = a.container.as_ref().unwrap();
    assert_eq!(ev.found_by, Discovery::Cgroup);
    assert_eq!(ev.caller.id, id);
    assert!(ev.serves.is_none());
    // Serializable for the CA's ledger, and back.
    let json = serde_json::to_string(&a).unwrap();
    let back: Attestation = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
}

#[tokio::test]
async fn pod_member_yields_pod_selectors() {
    let service = Service::start();
    let mut c = Containers::default();
    let pod = c.pod(&["--label", "tier=back", "--label", "team=payments"]);
    let api = c.sleeper("api", &["--pod", &pod, "--label", "app=api"]);
    let pod_id = podman(&["pod", "inspect", "--format", "{{.Id}}", &pod]);
    let a = attest_container(&service.attestor(), &api).await;
    assert_has(
        &a,
        &[
            &format!("container:id:{}", id_of(&api)),
            "container:label:app:api",
            &format!("pod:name:{pod}"),
            "pod:label:tier:back",
            "pod:label:team:payments",
        ],
    );
    let ev = a.container.unwrap();
    // The pod's infra container owns the network namespace; joining it is
    // pod membership, not serving an app.
    assert!(ev.serves.is_none());
    assert_eq!(ev.cgroup_pod.as_deref(), Some(pod_id.as_str()));
    assert_eq!(ev.caller.pod.unwrap().id, pod_id);
}

#[tokio::test]
async fn sidecar_in_an_apps_network_namespace_is_attested_as_the_app() {
    let service = Service::start();
    let mut c = Containers::default();
    let app = c.sleeper("app", &["--label", "app=web"]);
    let sidecar = c.sleeper(
        "sidecar",
        &[
            "--network",
            &format!("container:{app}"),
            "--label",
            "role=sidecar",
        ],
    );
    let a = attest_container(&service.attestor(), &sidecar).await;
    let app_id = id_of(&app);
    assert_has(
        &a,
        &[
            &format!("container:id:{app_id}"),
            &format!("container:name:{app}"),
            "container:label:app:web",
            // Both are confined by default: so is the weaker of the two.
            "posture:host-ns-net:false",
            "posture:privileged:false",
        ],
    );
    assert!(
        !has(&a, "container:label:role:sidecar"),
        "{:?}",
        a.selectors
    );
    assert!(!has(&a, &format!("container:id:{}", id_of(&sidecar))));
    let ev = a.container.unwrap();
    assert_eq!(ev.caller.id, id_of(&sidecar));
    assert_eq!(ev.serves.unwrap().id, app_id);
}

/// A confined sidecar beside a loosely confined app gets the app's weaker
/// posture (the minimum-posture rule reads the app's whole posture, not
/// only `privileged`).
#[tokio::test]
async fn sidecar_posture_is_the_weaker_of_its_own_and_the_apps() {
    let service = Service::start();
    let mut c = Containers::default();
    let app = c.sleeper("loose-app", &["--pid", "host", "--cap-add", "SYS_ADMIN"]);
    let sidecar = c.sleeper(
        "tight-sidecar",
        &[
            "--network",
            &format!("container:{app}"),
            "--memory",
            "64m",
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
        ],
    );
    let a = attest_container(&service.attestor(), &sidecar).await;
    assert_has(
        &a,
        &[
            &format!("container:id:{}", id_of(&app)),
            "posture:host-ns-pid:true",
            "posture:cap-sys-admin:true",
            "posture:memory-limit:false",
            "posture:no-new-privs:false",
            "posture:readonly-rootfs:false",
        ],
    );
    assert_sorted_unique(&a);
}

#[tokio::test]
async fn posture_reflects_how_each_container_was_started() {
    let service = Service::start();
    let attestor = service.attestor();
    let mut c = Containers::default();
    let table: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "privileged",
            vec!["--privileged"],
            vec![
                "posture:privileged:true",
                "posture:cap-sys-admin:true",
                "posture:seccomp:disabled",
            ],
        ),
        (
            "cap-add",
            vec!["--cap-add", "SYS_ADMIN"],
            vec!["posture:privileged:false", "posture:cap-sys-admin:true"],
        ),
        (
            "pid-host",
            vec!["--pid", "host"],
            vec!["posture:host-ns-pid:true", "posture:host-ns-net:false"],
        ),
        (
            "net-host",
            vec!["--network", "host"],
            vec!["posture:host-ns-net:true", "posture:host-ns-pid:false"],
        ),
        (
            "user",
            vec!["--user", "1000"],
            vec!["posture:uid:1000", "posture:root:false", "unix:uid:1000"],
        ),
        (
            "cap-drop",
            vec!["--cap-drop", "all"],
            vec!["posture:cap-sys-admin:false", "posture:root:true"],
        ),
        (
            "nnp",
            vec!["--security-opt", "no-new-privileges"],
            vec!["posture:no-new-privs:true"],
        ),
        (
            "read-only",
            vec!["--read-only"],
            vec!["posture:readonly-rootfs:true"],
        ),
        (
            "memory",
            vec!["--memory", "64m"],
            vec!["posture:memory-limit:true"],
        ),
        (
            "no-pids-limit",
            vec!["--pids-limit", "-1"],
            vec!["posture:pids-limit:false", "posture:memory-limit:false"],
        ),
    ];
    let names: Vec<String> = table
        .iter()
        .map(|(prefix, options, _)| c.sleeper(prefix, options))
        .collect();
    for ((prefix, _, wanted), name) in table.iter().zip(&names) {
        let a = attest_container(&attestor, name).await;
        for w in wanted {
            assert!(has(&a, w), "{prefix}: missing {w} in {:#?}", a.selectors);
        }
        assert_sorted_unique(&a);
    }
}

#[tokio::test]
async fn host_process_gets_only_unix_selectors() {
    // No runtime is needed for a process outside any container.
    let attestor = Attestor::new(EngineClient::new("/nonexistent/podman.sock")).unwrap();
    let me = PeerCred::of_process(std::process::id()).unwrap();
    let a = attestor.attest(me).await.unwrap();
    assert!(a.container.is_none());
    assert_eq!(
        a.selectors,
        vec![
            format!("unix:gid:{}", me.gid),
            format!("unix:uid:{}", me.uid)
        ]
    );
}

/// A process in no container but in a mount namespace of its own is not a
/// host process: refused, with the namespace named (a plain child of this
/// test, in the host's namespaces, is the control).
#[tokio::test]
async fn a_private_mount_namespace_without_a_container_is_refused() {
    let attestor = Attestor::new(EngineClient::new("/nonexistent/podman.sock")).unwrap();
    let mut plain = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let mut private = std::process::Command::new("unshare")
        .args(["-m", "sleep", "30"])
        .spawn()
        .expect("unshare (util-linux)");
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let mine = ns(std::process::id());
    // `unshare` makes the namespace, then execs `sleep` in it: an event.
    tessera_test_support::wait_until(
        Duration::from_secs(10),
        "unshare's new mount namespace",
        || ns(private.id()).is_some_and(|n| Some(n) != mine),
    );
    let ok = attestor
        .attest(PeerCred::of_process(plain.id()).unwrap())
        .await;
    let refused = attestor
        .attest(PeerCred::of_process(private.id()).unwrap())
        .await;
    for c in [&mut plain, &mut private] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(ok.unwrap().container.is_none());
    let e = refused.expect_err("a private mount namespace attested as a host process");
    assert!(
        matches!(
            e,
            AttestError::NotHost {
                namespace: "mnt",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("not in the host's mnt namespace"),
        "{e}"
    );
}

#[tokio::test]
async fn unreachable_runtime_fails_closed() {
    ensure_image();
    let mut c = Containers::default();
    let web = c.sleeper("unreachable", &["--label", "app=web"]);
    let attestor = Attestor::new(EngineClient::new("/nonexistent/podman.sock")).unwrap();
    let err = attestor
        .attest(PeerCred::of_process(pid_of(&web)).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AttestError::Engine(EngineError::Unreachable { .. })),
        "{err}"
    );
}

/// A proxy in front of the runtime's socket that removes the container
/// before it forwards the first request: the container vanishes after the
/// agent mapped the PID to it and before the runtime is asked.
#[tokio::test]
async fn container_removed_between_pid_lookup_and_inspect_fails_closed() {
    let service = Service::start();
    let mut c = Containers::default();
    let doomed = c.sleeper("doomed", &["--label", "app=web"]);
    let id = id_of(&doomed);
    let pid = pid_of(&doomed);
    let dir = tempfile::tempdir().unwrap();
    let proxy_path = dir.path().join("proxy.sock");
    let listener = tokio::net::UnixListener::bind(&proxy_path).unwrap();
    let upstream = service.socket.clone();
    let name = doomed.clone();
    let proxy = tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((mut downstream, _)) = listener.accept().await else {
                return;
            };
            if first {
                first = false;
                let name = name.clone();
                tokio::task::spawn_blocking(move || podman(&["rm", "-f", "-t", "0", &name]))
                    .await
                    .unwrap();
            }
            let mut up = tokio::net::UnixStream::connect(&upstream).await.unwrap();
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut downstream, &mut up).await;
            });
        }
    });
    let attestor = Attestor::new(EngineClient::new(&proxy_path)).unwrap();
    let peer = PeerCred::of_process(pid).unwrap();
    let err = attestor.attest(peer).await.unwrap_err();
    proxy.abort();
    match err {
        AttestError::ContainerVanished { container_id } => assert_eq!(container_id, id),
        other => panic!("expected ContainerVanished, got {other}"),
    }
    // And once the container is gone, its PID attests to nothing.
    assert!(attestor.attest(peer).await.is_err());
}

/// A process inside a container connects to a unix socket the test serves
/// (busybox has no unix-socket client, so the host's curl runs in the
/// container with its libraries mounted); SO_PEERCRED's PID maps to that
/// container, and the test answers curl with the container ID it attested.
#[tokio::test]
async fn peer_credentials_from_inside_a_container_map_to_it() {
    let service = Service::start();
    let attestor = service.attestor();
    let mut c = Containers::default();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::UnixListener::bind(dir.path().join("agent.sock")).unwrap();
    let curl = PathBuf::from("/usr/bin/curl");
    assert!(curl.exists(), "curl is required (.ci/run installs it)");
    let mut options = vec![
        "-v".to_owned(),
        format!("{}:/agent", dir.path().display()),
        "--label".to_owned(),
        "app=caller".to_owned(),
    ];
    options.extend(binary_mounts(&curl, "/usr/bin/curl"));
    let caller = c.run(
        "curl",
        &options,
        &[
            "/usr/bin/curl",
            "-sS",
            "--max-time",
            "60",
            "--unix-socket",
            "/agent/agent.sock",
            "http://agent/attest",
        ],
    );
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
        .await
        .expect("the container never connected")
        .unwrap();
    let peer = PeerCred::of(&stream).unwrap();
    let a = attestor.attest(peer).await.unwrap();
    let id = id_of(&caller);
    assert_eq!(peer.pid, pid_of(&caller), "curl is the container's init");
    assert_eq!(a.container.as_ref().unwrap().caller.id, id);
    assert_has(
        &a,
        &[&format!("container:id:{id}"), "container:label:app:caller"],
    );
    // Answer the request with what was attested; curl prints it.
    let mut buf = vec![0u8; 4096];
    let _ = stream.read(&mut buf).await.unwrap();
    let body = format!("{id}\n");
    stream
        .write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let code = tokio::task::spawn_blocking({
        let caller = caller.clone();
        move || podman(&["wait", &caller])
    })
    .await
    .unwrap();
    assert_eq!(code, "0");
    assert_eq!(podman(&["logs", &caller]), id);
}

/// The host PID of the process in `container` whose arguments are exactly
/// `args`, polled until it appears (`podman exec -d` returns before a
/// command such as `unshare` has exec'd the final program).
fn host_pid_by_args(container: &str, args: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let table = podman(&["top", container, "hpid", "args"]);
        let found = table.lines().skip(1).find_map(|l| {
            let (pid, rest) = l.trim().split_once(char::is_whitespace)?;
            (rest.trim() == args).then(|| pid.parse().ok())?
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no process {args:?} in {container}:\n{table}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A second process started with `podman exec` attests as its container; a
/// process in the container's cgroup that made itself a private mount
/// namespace does not (the kernel-vs-runtime cross-check refuses it).
#[tokio::test]
async fn exec_process_attests_but_a_private_mount_namespace_is_refused() {
    let service = Service::start();
    let attestor = service.attestor();
    let mut c = Containers::default();
    let web = c.sleeper("exec", &["--cap-add", "SYS_ADMIN", "--label", "app=web"]);
    podman(&["exec", "-d", &web, "/bin/busybox", "sleep", "601"]);
    podman(&[
        "exec",
        "-d",
        &web,
        "/bin/busybox",
        "unshare",
        "-m",
        "/bin/busybox",
        "sleep",
        "602",
    ]);
    let exec_pid = host_pid_by_args(&web, "/bin/busybox sleep 601");
    assert_ne!(exec_pid, pid_of(&web));
    let a = attestor
        .attest(PeerCred::of_process(exec_pid).unwrap())
        .await
        .unwrap();
    assert_has(
        &a,
        &[
            &format!("container:id:{}", id_of(&web)),
            "container:label:app:web",
        ],
    );

    let unshared = host_pid_by_args(&web, "/bin/busybox sleep 602");
    let err = attestor
        .attest(PeerCred::of_process(unshared).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, AttestError::Mismatch { .. }), "{err}");
}
