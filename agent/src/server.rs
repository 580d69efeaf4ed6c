//! The Workload API endpoint: attest each caller, fetch its SVIDs from the
//! CA, stream them, and push again on every rotation and entry change.
//!
//! For each `FetchX509SVID` stream:
//! 1. the request must carry `workload.spiffe.io: true` (else `InvalidArgument`);
//! 2. the caller's PID/UID/GID come from the kernel (`SO_PEERCRED`, through
//!    taken when the connection is accepted), and [`Attestor::attest`] maps it to
//!    selectors, re-checking the process's start time at the end; the
//!    process must be the one that opened the connection ([`crate::conn`]:
//!    its start time as recorded at accept, not after the accept, still
//!    alive), else its PID was reused and the request is refused; a
//!    connection ends as soon as the process that opened it exits;
//! 3. the agent generates a key in memory and asks the CA for every SVID the
//!    evidence entitles the caller to; the first message carries them all
//!    (no identity: `PermissionDenied` with the CA's reason);
//! 4. then the stream wakes at the earliest of: half the lifetime of its
//!    SVIDs (rotation), a change of the entries parented to this node or of
//!    the trust bundle (the [`Sync`] poller, every `sync_interval`), and
//!    every `sync_interval` anyway. Each wake re-attests the caller (same
//!    PID *and* same start time as the first attestation, so a reused PID
//!    never inherits a stream); rotation, changed selectors or a changed set
//!    of matching entries re-issues with fresh evidence; a changed bundle
//!    re-sends. So an entry change or a label change reaches the workload
//!    within `sync_interval` plus one issuance.
//!
//! `FetchJWTSVID` attests the caller the same way and asks the CA to sign one
//! token per matching entry (`POST /v1/agent/jwt-svids`); `FetchJWTBundles`
//! streams the `jwt-svid` keys of the bundle (pushed when they change);
//! `ValidateJWTSVID` checks a token against those keys here (ES256, `kid` in
//! the bundle, `exp`, audience) and returns its claims.
//!
//! Everything fails closed: an attestation error, an unreachable runtime, a
//! refused or unreachable CA ends the stream with a status saying why. Keys
//! are never logged.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tessera_core::api;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use tessera_workload::{CaError, concat_der};
use tessera_workload_api::{
    JwtBundlesRequest, JwtBundlesResponse, JwtSvid, JwtSvidRequest, JwtSvidResponse,
    ResponseStream, ValidateJwtSvidRequest, ValidateJwtSvidResponse, WorkloadApi,
    X509BundlesRequest, X509BundlesResponse, X509Svid, X509SvidRequest, X509SvidResponse,
    check_security_header,
};

use crate::attest::{AttestError, Attestation, Attestor};
use crate::conn::ConnInfo;
use crate::node::{Federated, JwtBundle, NodeError, NodeLink, RENEWAL, WorkloadSvid};
use crate::peer::PeerCred;

/// What the poller last saw: the node's entries and the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Entries parented to this node.
    pub entries: Arc<Vec<api::Entry>>,
    /// Trust anchors.
    pub bundle: Arc<Vec<CertificateDer<'static>>>,
    /// JWT-SVID keys.
    pub jwt_bundle: Arc<JwtBundle>,
    /// Foreign bundles the node's entries federate with.
    pub federated: Arc<Federated>,
    /// Set when the CA refused the node itself (banned): streams end.
    pub node_refused: Option<String>,
}

/// Polls the CA for the node's entries and the bundle every `interval`,
/// publishing changes; also renews the node certificate at half-life.
pub struct Sync;

impl Sync {
    /// Starts the poller and the node renewal; returns the snapshot channel.
    /// The tasks end when every receiver is dropped.
    pub async fn start(node: Arc<NodeLink>, interval: Duration) -> watch::Receiver<Snapshot> {
        // The JWT keys come only from the bundle document: fetch it before
        // serving, so the first FetchJWTBundles is not empty.
        if let Err(e) = node.refresh_bundle().await {
            tracing::warn!(error = %e, "fetching the trust bundle");
        }
        let first = Snapshot {
            entries: Arc::new(node.entries().await.unwrap_or_default()),
            bundle: node.bundle(),
            jwt_bundle: node.jwt_bundle(),
            federated: Arc::new(node.federated_bundles().await.unwrap_or_default()),
            node_refused: None,
        };
        let (tx, rx) = watch::channel(first);
        let poll_node = node.clone();
        let poll_tx = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = poll_tx.closed() => return,
                }
                let entries = poll_node.entries().await;
                let bundle = poll_node.refresh_bundle().await;
                let federated = poll_node.federated_bundles().await;
                if let Err(e) = federated.as_ref() {
                    tracing::warn!(error = %e, "polling the CA for federated bundles");
                }
                let refused = [entries.as_ref().err(), bundle.as_ref().err()]
                    .into_iter()
                    .flatten()
                    .find(|e| e.node_refused())
                    .map(|e| e.to_string());
                if let Err(e) = entries.as_ref() {
                    tracing::warn!(error = %e, "polling the CA for this node's entries");
                }
                poll_tx.send_if_modified(|s| {
                    let mut next = s.clone();
                    if let Ok(e) = &entries {
                        next.entries = Arc::new(e.clone());
                    }
                    if let Ok(f) = &federated {
                        next.federated = Arc::new(f.clone());
                    }
                    next.bundle = poll_node.bundle();
                    next.jwt_bundle = poll_node.jwt_bundle();
                    next.node_refused = refused.clone();
                    if next != *s {
                        *s = next;
                        true
                    } else {
                        false
                    }
                });
            }
        });
        tokio::spawn(async move {
            loop {
                let wait = (node.renew_at() - tessera_core::now_unix()).max(1) as u64;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                    _ = tx.closed() => return,
                }
                let mut retry = RENEWAL.backoff(node.lifetime());
                loop {
                    match node.renew().await {
                        Ok(()) => {
                            tracing::info!(spiffe_id = %node.spiffe_id(), "node certificate renewed");
                            break;
                        }
                        Err(e) => {
                            let delay = retry.next_delay();
                            tracing::warn!(error = %e, "renewing the node certificate; retrying in {} s", delay.as_secs());
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = tx.closed() => return,
                            }
                        }
                    }
                }
            }
        });
        rx
    }
}

/// The connection's caller as pinned at accept ([`crate::conn`]): its
/// credentials and the accept time a reused PID is measured against.
fn peer_of<T>(request: &Request<T>) -> Result<(PeerCred, ConnInfo), Status> {
    let info = request
        .extensions()
        .get::<ConnInfo>()
        .ok_or_else(|| Status::internal("not a unix-socket connection"))?;
    let peer = info.peer.clone().map_err(|why| {
        Status::permission_denied(format!("the caller could not be identified: {why}"))
    })?;
    Ok((peer, info.clone()))
}

/// What every method starts with: the security header and the caller's
/// credentials from the kernel, taken when the connection was accepted.
fn caller<T>(request: &Request<T>) -> Result<(PeerCred, ConnInfo), Status> {
    check_security_header(request)?;
    peer_of(request)
}

/// `InvalidArgument` when the request leaves `field` empty.
fn required(empty: bool, field: &str) -> Result<(), Status> {
    if empty {
        return Err(Status::invalid_argument(format!(
            "{field} must be specified"
        )));
    }
    Ok(())
}

fn attest_status(e: AttestError) -> Status {
    match e {
        AttestError::Engine(_) => Status::unavailable(format!(
            "attestation failed, the container runtime could not be asked (fail closed): {e}"
        )),
        other => Status::permission_denied(format!("attestation failed: {other}")),
    }
}

fn ca_status(e: NodeError) -> Status {
    let refusal = match &e {
        NodeError::Ca(CaError::Refused(r)) => Some(r),
        _ => None,
    };
    match refusal {
        Some(r) if r.status == 403 && r.code() != "node_refused" => {
            Status::permission_denied(format!("no identity: {} ({})", r.detail(), r.code()))
        }
        Some(_) if e.node_refused() => {
            Status::unavailable(format!("this node was refused by the CA: {e}"))
        }
        // The CA refused the request itself (e.g. too many audiences, a
        // malformed SPIFFE ID): the caller's mistake, not ours.
        Some(r) if r.status == 400 => Status::invalid_argument(format!("refused by the CA: {e}")),
        None if matches!(e, NodeError::Ca(CaError::Unreachable(_))) => {
            Status::unavailable(e.to_string())
        }
        _ => Status::internal(format!("getting SVIDs: {e}")),
    }
}

/// The entries whose selectors are all among `selectors`: what a change is
/// measured against (the CA decides the actual issuance).
fn matching(entries: &[api::Entry], selectors: &[String]) -> BTreeSet<(String, String, String)> {
    entries
        .iter()
        .filter(|e| {
            e.selectors
                .iter()
                .all(|s| selectors.binary_search(s).is_ok())
        })
        .map(|e| (e.id.clone(), e.spiffe_id.clone(), e.updated_at.clone()))
        .collect()
}

/// The foreign bundles a workload receives: those of the trust domains its
/// matching entries federate with, DER concatenated.
fn federated_for(snap: &Snapshot, selectors: &[String]) -> FederatedDer {
    let wanted: BTreeSet<&str> = snap
        .entries
        .iter()
        .filter(|e| {
            e.selectors
                .iter()
                .all(|s| selectors.binary_search(s).is_ok())
        })
        .flat_map(|e| e.federates_with.iter().map(String::as_str))
        .collect();
    snap.federated
        .iter()
        .filter(|(id, _)| {
            id.strip_prefix("spiffe://")
                .is_some_and(|td| wanted.contains(td))
        })
        .map(|(id, certs)| (id.clone(), bytes::Bytes::from(concat_der(certs))))
        .collect()
}

/// Foreign bundles as sent: trust domain ID to concatenated DER.
type FederatedDer = std::collections::BTreeMap<String, bytes::Bytes>;

fn svid_response(
    svids: &[WorkloadSvid],
    bundle: &[CertificateDer<'static>],
    federated: &FederatedDer,
) -> X509SvidResponse {
    let bundle = bytes::Bytes::from(concat_der(bundle));
    X509SvidResponse {
        federated_bundles: federated.clone().into_iter().collect(),
        svids: svids
            .iter()
            .map(|WorkloadSvid { svid: s, hint }| X509Svid {
                spiffe_id: s.spiffe_id().to_string(),
                x509_svid: concat_der(s.chain()).into(),
                // Keys the agent generates are PKCS#8, as the Workload API requires.
                x509_svid_key: bytes::Bytes::copy_from_slice(
                    s.key().pkcs8_der().unwrap_or_default(),
                ),
                bundle: bundle.clone(),
                hint: hint.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

/// When to re-issue a stream's SVIDs ([`RENEWAL`]): the earliest of them.
fn renew_at(svids: &[WorkloadSvid]) -> i64 {
    svids
        .iter()
        .map(|s| RENEWAL.renew_at_secs(s.svid.lifetime()))
        .min()
        .unwrap_or(0)
}

impl Shared {
    /// One of the [`MAX_CONCURRENT_ISSUES`] attest-and-issue slots.
    async fn issue_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        self.issue_slots
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))
    }

    /// A bundle stream (X.509 or JWT) for an attested caller (bundles are
    /// public, but only attested callers are served): `first` (read after
    /// the attestation) at once, then
    /// whatever `pick` reads from each new snapshot when it differs from what
    /// was sent, each as `message(trust domain ID, bundle)`; ends with
    /// `Unavailable` when the CA refuses the node.
    async fn bundle_stream<R, B, M>(
        &self,
        request: &Request<R>,
        first: fn(&NodeLink) -> Arc<B>,
        pick: fn(&Snapshot) -> Arc<B>,
        message: fn(&str, &B) -> M,
    ) -> Result<Response<ResponseStream<M>>, Status>
    where
        B: PartialEq + Send + std::marker::Sync + 'static,
        M: Send + 'static,
    {
        let (peer, conn) = caller(request)?;
        let att = {
            let _slot = self.issue_slot().await?;
            self.attest(peer, &conn).await?
        };
        let stream_slot = self.stream_slot(peer, att.start_time)?;
        // The Workload API keys bundles by the trust domain's ID.
        let td = self.node.trust_domain().id_string();
        let message = move |b: &B| message(&td, b);
        let first = first(&self.node);
        let mut snap = self.snapshot.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _stream_slot = stream_slot;
            let mut sent = first;
            if tx.send(Ok(message(&sent))).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    r = snap.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
                let current = snap.borrow_and_update().clone();
                if let Some(why) = current.node_refused {
                    let _ = tx.send(Err(Status::unavailable(why))).await;
                    return;
                }
                let next = pick(&current);
                if next != sent {
                    sent = next;
                    if tx.send(Ok(message(&sent))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    /// One of the caller's stream slots (`max_streams_per_process`), held
    /// while its stream is open; the process is known by PID and start time.
    fn stream_slot(&self, peer: PeerCred, start_time: u64) -> Result<StreamSlot, Status> {
        self.streams
            .acquire(&(peer.pid, start_time))
            .ok_or_else(|| {
                tracing::warn!(
                    pid = peer.pid,
                    max = self.max_streams,
                    "too many streams from one process"
                );
                Status::resource_exhausted(format!(
                    "at most {} open Workload API streams per process",
                    self.max_streams
                ))
            })
    }

    /// Attests the caller of a request on connection `conn`: the process
    /// must be the one that opened the connection (same start time as at
    /// accept, not started after it, still alive), else its PID was reused.
    async fn attest(&self, peer: PeerCred, conn: &ConnInfo) -> Result<Attestation, Status> {
        let att = self.attestor.attest(peer).await.map_err(|e| {
            tracing::warn!(pid = peer.pid, uid = peer.uid, error = %e, "workload attestation failed");
            attest_status(e)
        })?;
        if att.start_time > conn.accepted
            || Some(att.start_time) != conn.start_time
            || !conn.peer_alive()
        {
            tracing::warn!(
                pid = peer.pid,
                "the process that opened the connection is gone; its PID was reused"
            );
            return Err(Status::permission_denied(
                "the process that opened this connection exited (its PID now belongs to another process)",
            ));
        }
        Ok(att)
    }

    async fn attest_and_issue(
        &self,
        peer: PeerCred,
        conn: &ConnInfo,
    ) -> Result<(Attestation, Vec<WorkloadSvid>), Status> {
        let _slot = self.issue_slot().await?;
        let att = self.attest(peer, conn).await?;
        let svids = self.node.workload_svids(&att).await.map_err(|e| {
            tracing::warn!(pid = peer.pid, selectors = ?att.selectors, error = %e, "no SVID for workload");
            ca_status(e)
        })?;
        tracing::info!(
            pid = peer.pid,
            ids = ?svids.iter().map(|s| s.svid.spiffe_id().as_str()).collect::<Vec<_>>(),
            "SVIDs issued to workload"
        );
        Ok((att, svids))
    }
}

/// A stream slot of one process, keyed by (PID, start time).
type StreamSlot = tessera_core::limit::Slot<(u32, u64)>;

/// One `FetchX509SVID` stream after its first message.
struct SvidStream {
    _slot: StreamSlot,
    agent: Arc<Shared>,
    peer: PeerCred,
    start_time: u64,
    selectors: Vec<String>,
    matched: BTreeSet<(String, String, String)>,
    svids: Vec<WorkloadSvid>,
    bundle: Arc<Vec<CertificateDer<'static>>>,
    /// The foreign bundles last sent.
    federated: FederatedDer,
    tx: mpsc::Sender<Result<X509SvidResponse, Status>>,
}

/// Most attest-and-issue rounds in flight at once (all callers): a looping
/// caller cannot drive unbounded runtime inspections, CA requests and
/// signatures.
const MAX_CONCURRENT_ISSUES: usize = 16;

/// What stream tasks share.
struct Shared {
    /// Bounds concurrent attest-and-issue rounds ([`MAX_CONCURRENT_ISSUES`]).
    issue_slots: tokio::sync::Semaphore,
    /// Open streams per process (`max_streams_per_process`).
    streams: tessera_core::limit::Slots<(u32, u64)>,
    max_streams: usize,
    attestor: Attestor,
    node: Arc<NodeLink>,
    snapshot: watch::Receiver<Snapshot>,
    sync_interval: Duration,
}

impl SvidStream {
    async fn run(mut self) {
        let mut snap = self.agent.snapshot.clone();
        loop {
            let renew_at = renew_at(&self.svids);
            let wait = Duration::from_secs((renew_at - tessera_core::now_unix()).max(0) as u64)
                .min(self.agent.sync_interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = snap.changed() => if r.is_err() { return },
                _ = self.tx.closed() => return,
            }
            let current = snap.borrow_and_update().clone();
            if let Some(why) = current.node_refused {
                let _ = self.tx.send(Err(Status::unavailable(why))).await;
                return;
            }
            match self.step(&current).await {
                Ok(Some(msg)) => {
                    if self.tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(status) => {
                    let _ = self.tx.send(Err(status)).await;
                    return;
                }
            }
        }
    }

    /// Re-attests; re-issues or re-sends when something changed.
    async fn step(&mut self, snap: &Snapshot) -> Result<Option<X509SvidResponse>, Status> {
        // Re-attesting and re-issuing on an open stream takes a slot like
        // the first issuance: N streams cannot bypass the bound.
        let _slot = self.agent.issue_slot().await?;
        let att = self
            .agent
            .attestor
            .attest(self.peer)
            .await
            .map_err(attest_status)?;
        if att.start_time != self.start_time {
            return Err(Status::permission_denied(
                "the calling process exited (its PID now belongs to another process)",
            ));
        }
        let matched = matching(&snap.entries, &att.selectors);
        let due = renew_at(&self.svids) <= tessera_core::now_unix();
        if due || matched != self.matched || att.selectors != self.selectors {
            if matched.is_empty() {
                return Err(Status::permission_denied(
                    "no identity: no registration entry for this node matches the workload any more",
                ));
            }
            let svids = self.agent.node.workload_svids(&att).await.map_err(|e| {
                tracing::warn!(pid = self.peer.pid, error = %e, "re-issuing for a workload");
                ca_status(e)
            })?;
            tracing::info!(
                pid = self.peer.pid,
                rotation = due,
                ids = ?svids.iter().map(|s| s.svid.spiffe_id().as_str()).collect::<Vec<_>>(),
                "SVIDs pushed to workload"
            );
            self.svids = svids;
            self.selectors = att.selectors;
            self.matched = matched;
            self.bundle = self.agent.node.bundle();
            self.federated = federated_for(snap, &self.selectors);
            return Ok(Some(self.response()));
        }
        // A changed (or removed) foreign bundle is pushed like our own.
        let federated = federated_for(snap, &self.selectors);
        if snap.bundle != self.bundle || federated != self.federated {
            self.bundle = snap.bundle.clone();
            self.federated = federated;
            return Ok(Some(self.response()));
        }
        Ok(None)
    }

    fn response(&self) -> X509SvidResponse {
        svid_response(&self.svids, &self.bundle, &self.federated)
    }
}

/// The Workload API implementation the agent serves.
pub struct Endpoint(Arc<Shared>);

impl Endpoint {
    /// An endpoint attesting with `attestor`, issuing through `node`,
    /// following `snapshot` (from [`Sync::start`]) and re-attesting every
    /// `sync_interval`.
    pub fn new(
        attestor: Attestor,
        node: Arc<NodeLink>,
        snapshot: watch::Receiver<Snapshot>,
        sync_interval: Duration,
    ) -> Self {
        Endpoint(Arc::new(Shared {
            issue_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_ISSUES),
            streams: tessera_core::limit::Slots::new(DEFAULT_MAX_STREAMS, MAX_TRACKED_PROCESSES),
            max_streams: DEFAULT_MAX_STREAMS,
            attestor,
            node,
            snapshot,
            sync_interval,
        }))
    }

    /// At most `max` open streams per process (default
    /// [`DEFAULT_MAX_STREAMS`]); call before serving.
    pub fn with_max_streams_per_process(self, max: usize) -> Self {
        let mut shared = Arc::try_unwrap(self.0).unwrap_or_else(|_| {
            unreachable!("with_max_streams_per_process is called before serving")
        });
        shared.streams = tessera_core::limit::Slots::new(max, MAX_TRACKED_PROCESSES);
        shared.max_streams = max;
        Endpoint(Arc::new(shared))
    }
}

/// Open streams one process may hold unless configured
/// (`max_streams_per_process`).
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// Most processes whose streams are counted at once (bounded memory).
const MAX_TRACKED_PROCESSES: usize = 65_536;

impl WorkloadApi for Endpoint {
    async fn fetch_x509_svid(
        &self,
        request: Request<X509SvidRequest>,
    ) -> Result<Response<ResponseStream<X509SvidResponse>>, Status> {
        let (peer, conn) = caller(&request)?;
        let shared = self.0.clone();
        let (att, svids) = shared.attest_and_issue(peer, &conn).await?;
        let slot = shared.stream_slot(peer, att.start_time)?;
        let snap = shared.snapshot.borrow().clone();
        let bundle = shared.node.bundle();
        let federated = federated_for(&snap, &att.selectors);
        let first = svid_response(&svids, &bundle, &federated);
        let (tx, rx) = mpsc::channel(4);
        let _ = tx.send(Ok(first)).await;
        let stream = SvidStream {
            _slot: slot,
            agent: shared,
            peer,
            start_time: att.start_time,
            matched: matching(&snap.entries, &att.selectors),
            selectors: att.selectors,
            svids,
            bundle,
            federated,
            tx,
        };
        tokio::spawn(stream.run());
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<ResponseStream<X509BundlesResponse>>, Status> {
        self.0
            .bundle_stream(
                &request,
                |n| n.bundle(),
                |s| s.bundle.clone(),
                |td, b| X509BundlesResponse {
                    crl: vec![],
                    bundles: [(td.to_owned(), concat_der(b.iter()).into())]
                        .into_iter()
                        .collect(),
                },
            )
            .await
    }

    async fn fetch_jwt_svid(
        &self,
        request: Request<JwtSvidRequest>,
    ) -> Result<Response<JwtSvidResponse>, Status> {
        let (peer, conn) = caller(&request)?;
        let req = request.into_inner();
        required(req.audience.is_empty(), "audience")?;
        let _slot = self.0.issue_slot().await?;
        let att = self.0.attest(peer, &conn).await?;
        let wanted = (!req.spiffe_id.is_empty()).then_some(req.spiffe_id);
        let svids = self
            .0
            .node
            .workload_jwt_svids(&att, req.audience, wanted)
            .await
            .map_err(|e| {
                tracing::warn!(pid = peer.pid, selectors = ?att.selectors, error = %e, "no JWT-SVID for workload");
                ca_status(e)
            })?;
        tracing::info!(
            pid = peer.pid,
            ids = ?svids.iter().map(|s| s.spiffe_id.as_str()).collect::<Vec<_>>(),
            "JWT-SVIDs issued to workload"
        );
        Ok(Response::new(JwtSvidResponse {
            svids: svids
                .into_iter()
                .map(|s| JwtSvid {
                    spiffe_id: s.spiffe_id,
                    svid: s.token,
                    hint: s.hint.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<ResponseStream<JwtBundlesResponse>>, Status> {
        self.0
            .bundle_stream(
                &request,
                |n| n.jwt_bundle(),
                |s| s.jwt_bundle.clone(),
                |td, b| JwtBundlesResponse {
                    bundles: [(td.to_owned(), b.jwks.clone())].into_iter().collect(),
                },
            )
            .await
    }

    async fn validate_jwt_svid(
        &self,
        request: Request<ValidateJwtSvidRequest>,
    ) -> Result<Response<ValidateJwtSvidResponse>, Status> {
        let (peer, conn) = caller(&request)?;
        let req = request.into_inner();
        required(req.audience.is_empty(), "audience")?;
        required(req.svid.is_empty(), "svid")?;
        {
            let _slot = self.0.issue_slot().await?;
            self.0.attest(peer, &conn).await?;
        }
        let bundle = self.0.node.jwt_bundle();
        let verified = tessera_core::jwt::validate(
            &req.svid,
            &req.audience,
            &bundle.keys,
            tessera_core::now_unix(),
        )
        .map_err(|e| {
            // The token itself is a bearer credential: never logged.
            tracing::info!(pid = peer.pid, reason = %e, "JWT-SVID validation refused");
            Status::invalid_argument(format!("the JWT-SVID is not valid: {e}"))
        })?;
        Ok(Response::new(ValidateJwtSvidResponse {
            spiffe_id: verified.spiffe_id,
            claims: Some(claims_struct(verified.claims)),
        }))
    }
}

/// JSON claims as a `google.protobuf.Struct` (numbers become doubles, as
/// the protobuf JSON mapping says).
fn claims_struct(claims: serde_json::Value) -> prost_types::Struct {
    fn value(v: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.into_iter().map(value).collect(),
            }),
            serde_json::Value::Object(o) => Kind::StructValue(object(o)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    fn object(o: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
        prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, value(v))).collect(),
        }
    }
    match claims {
        serde_json::Value::Object(o) => object(o),
        _ => prost_types::Struct::default(),
    }
}
