//! The Tessera node agent's container attestation.
//!
//! A workload connects to the agent's unix socket; the agent learns the
//! caller's PID from the kernel ([`peer`]), maps the process to a container
//! ([`cgroup`]), asks the container runtime about that container ([`engine`]),
//! reads how well it is confined ([`posture`]) and turns all of it into
//! selectors ([`attest`]). The agent is the only Tessera component that talks
//! to the container runtime.
//!
//! The `tessera-agent` binary serves this as the SPIFFE Workload API (the
//! wire protocol is the `tessera-workload-api` crate; [`server`]: the
//! per-stream attest → issue → push loop), with the node identity and the
//! CA calls in [`node`] (keys, SVIDs, renewal timing and the CA client come
//! from `tessera-workload`) and its options in [`config`].
//!
//! ```no_run
//! # async fn serve(listener: tokio::net::UnixListener) -> Result<(), Box<dyn std::error::Error>> {
//! use tessera_agent::{Attestor, EngineClient, PeerCred};
//! let attestor = Attestor::new(EngineClient::detect())?;
//! let (stream, _) = listener.accept().await?;
//! let attestation = attestor.attest(PeerCred::of(&stream)?).await?;
//! println!("{:?}", attestation.selectors);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod attest;
pub mod cgroup;
pub mod config;
pub mod conn;
pub mod data_dir;
pub mod engine;
pub mod node;
pub mod peer;
pub mod posture;
pub mod server;

pub use attest::{AttestError, Attestation, Attestor, ContainerEvidence, Discovery};
pub use cgroup::ContainerRef;
pub use engine::{ContainerInfo, EngineClient, EngineError, PodInfo, Workload};
pub use peer::{PeerCred, ProcessError, ProcessHandle};
pub use posture::{CgroupFs, HostNamespaces, Posture};
