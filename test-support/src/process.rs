//! Child processes that cannot outlive their test, with their output kept.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest wait for a process to exit once it should.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many trailing lines of each stream a failing test prints.
const SHOWN_LINES: usize = 300;

/// What a child process has written so far, line by line.
#[derive(Debug, Default, Clone)]
pub struct Output {
    /// Lines written to stdout, without their line ends.
    pub stdout: Vec<String>,
    /// Lines written to stderr, without their line ends.
    pub stderr: Vec<String>,
    /// Whether stdout is still open.
    pub stdout_open: bool,
    /// Whether stderr is still open.
    pub stderr_open: bool,
}

impl Output {
    /// Both pipes are closed: the process has exited.
    pub fn closed(&self) -> bool {
        !self.stdout_open && !self.stderr_open
    }

    /// The first stderr line containing `needle`.
    pub fn stderr_line(&self, needle: &str) -> Option<&str> {
        self.stderr
            .iter()
            .find(|l| l.contains(needle))
            .map(String::as_str)
    }

    /// How many stderr lines contain `needle`.
    pub fn stderr_count(&self, needle: &str) -> usize {
        self.stderr.iter().filter(|l| l.contains(needle)).count()
    }
}

/// The output, and a condition variable the reader threads signal on each line.
struct Pipes {
    output: Mutex<Output>,
    changed: Condvar,
}

impl Pipes {
    fn lock(&self) -> MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A child process that is killed and reaped when dropped, pass or fail. Its
/// stdout and stderr are read line by line as they come (waits are on those
/// lines, never on a clock), and a test that fails prints them.
pub struct Process {
    name: String,
    child: Child,
    pipes: Arc<Pipes>,
    status: Option<ExitStatus>,
    started: Instant,
}

impl Process {
    /// Spawns `cmd` with stdin closed and stdout and stderr captured; `name`
    /// identifies it in failure messages.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> Process {
        let name = name.into();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: spawning {:?}: {e}", cmd.get_program()));
        let pipes = Arc::new(Pipes {
            output: Mutex::new(Output {
                stdout_open: true,
                stderr_open: true,
                ..Output::default()
            }),
            changed: Condvar::new(),
        });
        read_lines(child.stdout.take().unwrap(), pipes.clone(), true);
        read_lines(child.stderr.take().unwrap(), pipes.clone(), false);
        Process {
            name,
            child,
            pipes,
            status: None,
            started,
        }
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating system's process ID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// When the process was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The exit status, once the process has been reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// A copy of everything written so far.
    pub fn output(&self) -> Output {
        self.pipes.lock().clone()
    }

    /// The stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.pipes.lock().stdout.clone()
    }

    /// The stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.pipes.lock().stderr.clone()
    }

    /// Stderr so far as one text, each line ended by a newline.
    pub fn stderr(&self) -> String {
        self.pipes
            .lock()
            .stderr
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// How many stderr lines so far contain `needle`.
    pub fn count_stderr(&self, needle: &str) -> usize {
        self.pipes.lock().stderr_count(needle)
    }

    /// The name, the status and the (trailing) output, for failure messages.
    pub fn describe(&self) -> String {
        describe(&self.name, self.status, &self.pipes.lock())
    }

    /// Waits until `f` returns `Some` for the output so far, re-checking on
    /// every new line and when a pipe closes; panics with the output after
    /// `within`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        mut f: impl FnMut(&Output) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        let mut output = self.pipes.lock();
        loop {
            if let Some(t) = f(&output) {
                return t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let log = describe(&self.name, self.status, &output);
                drop(output);
                panic!("{}: no {what} within {within:?}\n{log}", self.name);
            }
            output = self
                .pipes
                .changed
                .wait_timeout(output, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The first stderr line containing `needle`, waiting up to `within` for it.
    pub fn await_stderr(&self, needle: &str, within: Duration) -> String {
        self.wait_for(&format!("stderr line with {needle:?}"), within, |o| {
            o.stderr_line(needle).map(str::to_owned)
        })
    }

    /// The first stdout line, waiting up to `within`; `None` if the process
    /// closes stdout without writing one.
    pub fn first_stdout_line(&self, within: Duration) -> Option<String> {
        self.wait_for("first stdout line", within, |o| match o.stdout.first() {
            Some(l) => Some(Some(l.clone())),
            None => (!o.stdout_open).then_some(None),
        })
    }

    /// Waits up to `within` for the process to close both pipes, then reaps it.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        self.wait_for("exit", within, |o| o.closed().then_some(()));
        self.reap()
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Sends `signal` (a name such as `TERM` or `HUP`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .expect("running kill")
            .success();
        assert!(ok, "kill -{signal} {} ({}) failed", self.id(), self.name);
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(EXIT_TIMEOUT)
    }

    /// SIGKILL (no shutdown of any kind), then waits for the process to exit.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        self.child.kill().expect("SIGKILL");
        self.wait_exit(EXIT_TIMEOUT)
    }

    fn reap(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        // Both pipes are closed, so the process is exiting; wait() returns promptly.
        let s = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        self.status = Some(s);
        s
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
    }
}

/// Reads `pipe` line by line into `pipes` on a thread of its own.
fn read_lines(pipe: impl Read + Send + 'static, pipes: Arc<Pipes>, stdout: bool) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    let mut o = pipes.lock();
                    if stdout {
                        o.stdout.push(line);
                    } else {
                        o.stderr.push(line);
                    }
                    pipes.changed.notify_all();
                }
            }
        }
        let mut o = pipes.lock();
        if stdout {
            o.stdout_open = false;
        } else {
            o.stderr_open = false;
        }
        pipes.changed.notify_all();
    });
}

fn describe(name: &str, status: Option<ExitStatus>, o: &Output) -> String {
    let tail = |lines: &[String]| {
        let skip = lines.len().saturating_sub(SHOWN_LINES);
        let mut s = String::new();
        if skip > 0 {
            s.push_str(&format!("[{skip} earlier lines]\n"));
        }
        for l in &lines[skip..] {
            s.push_str(l);
            s.push('\n');
        }
        s
    };
    format!(
        "--- {name} (status {status:?}) stdout ---\n{}--- {name} stderr ---\n{}--- end of {name} ---",
        tail(&o.stdout),
        tail(&o.stderr)
    )
}
