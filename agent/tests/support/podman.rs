//! Podman, as the container tests use it: the command, the busybox test
//! image, a private Podman API service, and guards that remove the
//! containers, pods and networks a test made, pass or fail. Podman missing
//! is a failure, not a skip: `.ci/run` installs it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tessera_agent::{Attestor, EngineClient};
use tessera_test_support::Process;

/// The test image: a static busybox, imported locally (no registry is reachable).
pub const IMAGE: &str = "localhost/tessera-test-base:1";

fn required(e: std::io::Error) -> ! {
    panic!("podman is required for these tests (.ci/run installs it): {e}")
}

/// Runs podman; panics with its stderr on failure. Returns trimmed stdout.
pub fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| required(e));
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// podman's combined output and success, without panicking.
pub fn podman_try(args: &[&str]) -> (bool, String) {
    let out = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| required(e));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `podman inspect --format <format> <name>`.
pub fn inspect(name: &str, format: &str) -> String {
    podman(&["inspect", "--format", format, name])
}

/// The host PID of a container's init process.
pub fn pid_of(name: &str) -> u32 {
    inspect(name, "{{.State.Pid}}").parse().unwrap()
}

/// A container's full ID.
pub fn id_of(name: &str) -> String {
    inspect(name, "{{.Id}}")
}

/// Imports the busybox image once per test process (reused if present).
pub fn ensure_image() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    if !podman_try(&["image", "exists", IMAGE]).0 {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .expect("/bin/busybox (busybox-static) is required");
        std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
        let tar = dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(dir.path().join("rootfs"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        // Another test process may import it concurrently; either import is fine.
        let _ = podman_try(&["import", tar.to_str().unwrap(), IMAGE]);
        podman(&["image", "exists", IMAGE]);
    }
    *done = true;
}

/// `localhost/tessera-<name>:<version>`, as `deploy/images/build.sh` tags it.
pub fn tessera_image(name: &str) -> String {
    format!("localhost/tessera-{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// Builds the Tessera images with `deploy/images/build.sh`, once per test
/// process; panics with its output on failure. Its release build goes to
/// this test's target directory (cargo rebuilds only what changed).
pub fn build_tessera_images() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // <target>/debug/deps/<test binary>
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_owned();
    // A clean environment: cargo's test environment (CARGO_PKG_*,
    // LD_LIBRARY_PATH, ...) would make this release build differ from the
    // one `build.sh` run by hand makes, and rebuild all of it every time.
    let mut build = Command::new(repo.join("deploy/images/build.sh"));
    build.env_clear().env("CARGO_TARGET_DIR", target);
    for keep in ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(keep) {
            build.env(keep, v);
        }
    }
    let out = build.output().expect("deploy/images/build.sh");
    assert!(
        out.status.success(),
        "deploy/images/build.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    *done = true;
}

/// A `podman system service` on a private socket, killed on drop.
pub struct Service {
    pub socket: PathBuf,
    _proc: Process,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts the service (after the test image is in place) and waits for its socket.
    pub fn start() -> Service {
        ensure_image();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let proc = Process::spawn(
            "podman system service",
            Command::new("podman")
                .args(["system", "service", "--time=0"])
                .arg(format!("unix://{}", socket.display())),
        );
        // The socket appearing is the event; nothing announces it otherwise.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "podman service socket never appeared\n{}",
                proc.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Service {
            socket,
            _proc: proc,
            _dir: dir,
        }
    }

    /// An attestor asking this service.
    pub fn attestor(&self) -> Attestor {
        Attestor::new(EngineClient::new(&self.socket)).unwrap()
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test process) uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "tessera-test-{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Containers and pods this test created; removed on drop, newest first (a
/// container that joined another's network must go before it).
#[derive(Default)]
pub struct Containers {
    names: Vec<String>,
    pods: Vec<String>,
}

impl Containers {
    /// `podman run -d` with `options`, the test image and `cmd`; returns the name.
    pub fn run<S: AsRef<str>>(&mut self, prefix: &str, options: &[S], cmd: &[&str]) -> String {
        self.run_image(prefix, options, IMAGE, cmd)
    }

    /// `podman run -d` with `options`, `image` and `cmd`; returns the name.
    pub fn run_image<S: AsRef<str>>(
        &mut self,
        prefix: &str,
        options: &[S],
        image: &str,
        cmd: &[&str],
    ) -> String {
        let name = unique(prefix);
        self.names.push(name.clone());
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend(options.iter().map(AsRef::as_ref));
        args.push(image);
        args.extend_from_slice(cmd);
        podman(&args);
        name
    }

    /// A container that sleeps (see [`Containers::run`]).
    pub fn sleeper<S: AsRef<str>>(&mut self, prefix: &str, options: &[S]) -> String {
        self.run(prefix, options, &["/bin/busybox", "sleep", "600"])
    }

    /// `podman pod create` with `options`; returns the pod's name.
    pub fn pod(&mut self, options: &[&str]) -> String {
        let name = unique("pod");
        self.pods.push(name.clone());
        let mut args = vec!["pod", "create", "--name", &name];
        args.extend_from_slice(options);
        podman(&args);
        name
    }
}

/// Runs podman quietly, whatever the outcome (cleanup).
fn podman_quiet(args: &[&str]) {
    let _ = Command::new("podman")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Containers {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            podman_quiet(&["rm", "-f", "-t", "0", name]);
        }
        for pod in &self.pods {
            podman_quiet(&["pod", "rm", "-f", "-t", "0", pod]);
        }
    }
}

/// A Podman network of the test's own (Podman picks a free subnet; no DNS),
/// removed on drop.
pub struct Network {
    pub name: String,
}

impl Network {
    /// Creates the network.
    pub fn create() -> Network {
        let name = unique("net");
        podman(&["network", "create", "--disable-dns", &name]);
        Network { name }
    }

    /// Creates a network whose containers find each other by name through
    /// Podman's DNS server (aardvark-dns) on the bridge.
    pub fn create_with_dns() -> Network {
        let name = unique("net");
        podman(&["network", "create", &name]);
        Network { name }
    }

    /// The bridge's address on the host.
    pub fn gateway(&self) -> String {
        inspect_network(&self.name, "{{range .Subnets}}{{.Gateway}}{{end}}")
    }

    /// A container on this network with `options` running `cmd`.
    pub fn app<S: AsRef<str>>(
        &self,
        c: &mut Containers,
        prefix: &str,
        options: &[S],
        cmd: &[&str],
    ) -> String {
        let mut opts = vec!["--network", &self.name];
        opts.extend(options.iter().map(AsRef::as_ref));
        c.run(prefix, &opts, cmd)
    }

    /// `container`'s address on this network.
    pub fn ip_of(&self, container: &str) -> String {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.name
        );
        inspect(container, &format)
    }
}

fn inspect_network(name: &str, format: &str) -> String {
    podman(&["network", "inspect", "--format", format, name])
}

impl Drop for Network {
    fn drop(&mut self) {
        podman_quiet(&["network", "rm", "-f", &self.name]);
    }
}

/// `-v` options mounting a host binary at `at` and the libraries it links
/// (from `ldd`) read-only at their own paths, so it runs in the busybox image.
pub fn binary_mounts(binary: &Path, at: &str) -> Vec<String> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mounts = vec!["-v".to_string(), format!("{}:{at}:ro", binary.display())];
    let libs: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        })
        .filter(|p| p.starts_with('/'))
        .collect();
    for p in libs {
        mounts.push("-v".into());
        mounts.push(format!("{p}:{p}:ro"));
    }
    mounts
}
