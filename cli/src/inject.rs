//! `tessera inject`: adds the Tessera sidecar to Kubernetes manifests read
//! from files, directories or stdin, and writes them to stdout. A local
//! command (no CA is contacted); the work is `tessera_injector`'s.

use anyhow::{Context, Result};
use clap::Args;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tessera_injector::{Injector, MAX_INPUT_BYTES, Options};

/// `tessera inject`.
#[derive(Args)]
pub struct InjectArgs {
    /// A manifest file, a directory (its *.yaml, *.yml and *.json files, in
    /// name order, not recursively) or - for stdin. Repeatable; default: stdin.
    #[arg(long, short = 'f', value_name = "FILE|DIR|-")]
    filename: Vec<PathBuf>,
    /// The CA's URL as pods reach it (the sidecars follow its revocation
    /// feed and report denials there).
    #[arg(long, env = "TESSERA_INJECT_CA_URL")]
    ca_url: String,
    /// Inject native sidecars (init containers with restartPolicy: Always,
    /// Kubernetes 1.29+): the app starts once the sidecar is ready, and
    /// Jobs and CronJobs can complete. Required for pods that run to completion.
    #[arg(long)]
    native_sidecar: bool,
    /// The sidecar image. Default: localhost/tessera-sidecar:<version>, as
    /// deploy/images/build.sh tags it.
    #[arg(long)]
    image: Option<String>,
    /// The node agent's Workload API socket on the nodes; its directory is
    /// mounted read-only into each sidecar.
    #[arg(long, default_value = "/run/tessera/agent.sock")]
    agent_socket: String,
}

/// Reads every input, injects, and prints the result only if all succeed.
pub fn run(args: InjectArgs) -> Result<()> {
    let mut opts = Options::new(args.ca_url);
    opts.native_sidecar = args.native_sidecar;
    opts.agent_socket = args.agent_socket;
    if let Some(image) = args.image {
        opts.image = image;
    }
    let injector = Injector::new(opts)?;
    let mut budget = MAX_INPUT_BYTES;
    let mut out = String::new();
    let inputs = if args.filename.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.filename
    };
    for input in inputs {
        for (name, text) in read(&input, &mut budget)? {
            let injected = injector.inject_str(&text).with_context(|| name.clone())?;
            if injected.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push_str("---\n");
            }
            out.push_str(&injected);
        }
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("stdout")
}

/// The texts behind one argument, each with the name errors give it; every
/// read counts against `budget`, the bytes left of the input limit.
fn read(input: &Path, budget: &mut usize) -> Result<Vec<(String, String)>> {
    if input == Path::new("-") {
        return Ok(vec![(
            "stdin".into(),
            read_limited(std::io::stdin().lock(), "stdin", budget)?,
        )]);
    }
    let name = input.display().to_string();
    let meta = std::fs::metadata(input).with_context(|| name.clone())?;
    if !meta.is_dir() {
        let file = std::fs::File::open(input).with_context(|| name.clone())?;
        return Ok(vec![(name.clone(), read_limited(file, &name, budget)?)]);
    }
    let mut files = vec![];
    for entry in std::fs::read_dir(input).with_context(|| name.clone())? {
        let path = entry.with_context(|| name.clone())?.path();
        let manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.display().to_string();
            let file = std::fs::File::open(&p).with_context(|| name.clone())?;
            Ok((name.clone(), read_limited(file, &name, budget)?))
        })
        .collect()
}

fn read_limited(r: impl Read, name: &str, budget: &mut usize) -> Result<String> {
    let mut buf = Vec::new();
    r.take(*budget as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| name.to_owned())?;
    anyhow::ensure!(
        buf.len() <= *budget,
        "{name}: the inputs together exceed {MAX_INPUT_BYTES} bytes"
    );
    *budget -= buf.len();
    String::from_utf8(buf).with_context(|| format!("{name}: not UTF-8"))
}
