//! The data plane: inbound (mTLS from peers → plaintext to the app) and
//! outbound (plaintext from the app → mTLS to an upstream) relays, with the
//! handshake deadline, the listener's SPIFFE policy, the connection cap, an
//! idle deadline, and closing connections whose peer gets revoked.

use crate::Shared;
use crate::config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tessera_core::SpiffeId;
use tessera_core::api::DenialReason;
use tessera_core::tls::{RevokedSerials, RotatingKey, SpiffeRefusal};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// TLS configurations for every listener, rebuilt when the trust bundle changes.
pub(crate) struct TlsSet {
    inbound: Arc<rustls::ServerConfig>,
    outbound: Vec<Arc<rustls::ClientConfig>>,
}

impl TlsSet {
    pub(crate) fn build(
        cfg: &Config,
        bundle: &[rustls::pki_types::CertificateDer<'static>],
        key: Arc<RotatingKey>,
        revoked: Arc<RevokedSerials>,
    ) -> Result<Self, tessera_core::tls::TlsError> {
        let inbound = Arc::new(tessera_core::tls::spiffe_server_config(
            bundle,
            key.clone(),
            revoked.clone(),
            cfg.tls12,
        )?);
        let mut outbound = Vec::new();
        for o in &cfg.outbound {
            outbound.push(Arc::new(tessera_core::tls::spiffe_client_config(
                bundle,
                key.clone(),
                o.server_id.clone(),
                revoked.clone(),
                cfg.tls12,
            )?));
        }
        Ok(Self { inbound, outbound })
    }
}

/// The denial reason operators see for a failed handshake, and the peer's
/// SPIFFE ID where its certificate parsed: the SPIFFE verifiers say both
/// ([`SpiffeRefusal`]); anything else is rustls's own failure.
fn refusal(e: &std::io::Error) -> (DenialReason, Option<SpiffeId>) {
    if let Some(r) = SpiffeRefusal::of_io(e) {
        let reason = match r {
            SpiffeRefusal::UntrustedChain { .. } => DenialReason::UntrustedChain,
            SpiffeRefusal::Expired { .. } => DenialReason::Expired,
            SpiffeRefusal::NotAnSvid(_) => DenialReason::InvalidSvid,
            SpiffeRefusal::Revoked { .. } => DenialReason::Revoked,
            SpiffeRefusal::WrongSpiffeId { .. } => DenialReason::NotAllowed,
            _ => DenialReason::TlsError,
        };
        return (reason, r.peer().cloned());
    }
    let reason = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => DenialReason::NoCertificate,
        // The handshake signature does not verify with the certificate's key.
        Some(rustls::Error::InvalidCertificate(_)) => DenialReason::UntrustedChain,
        _ => DenialReason::TlsError,
    };
    (reason, None)
}

pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    inbound: bool,
    index: usize,
    listener: TcpListener,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let name = if inbound {
            &shared.cfg.inbound[index].name
        } else {
            &shared.cfg.outbound[index].name
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.metrics.denied.inc(&[name, "connection_limit"]);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = shared.tls.borrow().clone() else {
            // Not ready: no identity yet. Refuse rather than relay unauthenticated.
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if inbound {
                handle_inbound(shared, index, tcp, peer, tls).await;
            } else {
                handle_outbound(shared, index, tcp, peer, tls).await;
            }
        });
    }
}

async fn handle_inbound(
    shared: Arc<Shared>,
    index: usize,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Arc<TlsSet>,
) {
    let l = &shared.cfg.inbound[index];
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.inbound.clone());
    let Some(stream) = handshake(&shared, &l.name, peer, acceptor.accept(tcp)).await else {
        return;
    };
    let Some(info) = peer_leaf(stream.get_ref().1.peer_certificates()) else {
        return shared.deny(&l.name, peer, None, DenialReason::InvalidSvid);
    };
    if !l.allow.iter().any(|p| p.matches(&info.spiffe_id)) {
        return shared.deny(
            &l.name,
            peer,
            Some(info.spiffe_id),
            DenialReason::NotAllowed,
        );
    }
    let app = match TcpStream::connect(l.forward).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(listener = %l.name, error = %e, "app unreachable");
            return;
        }
    };
    let _ = app.set_nodelay(true);
    let mut app = app;
    if l.proxy_protocol {
        use tokio::io::AsyncWriteExt;
        let local = stream.get_ref().0.local_addr().unwrap_or(l.listen);
        let header = proxy_v2_header(peer, local, &info.spiffe_id);
        if app.write_all(&header).await.is_err() {
            return;
        }
    }
    relay(&shared, &l.name, stream, app, Some(info.serial)).await;
}

async fn handle_outbound(
    shared: Arc<Shared>,
    index: usize,
    app: TcpStream,
    peer: SocketAddr,
    tls: Arc<TlsSet>,
) {
    let o = &shared.cfg.outbound[index];
    let hs = Duration::from_millis(shared.cfg.limits.handshake_timeout_ms);
    let upstream = match tokio::time::timeout(hs, TcpStream::connect(&o.upstream)).await {
        Ok(Ok(u)) => u,
        _ => {
            tracing::warn!(listener = %o.name, upstream = %o.upstream, "upstream unreachable");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let upstream_addr = upstream.peer_addr().unwrap_or(peer);
    let host = o
        .upstream
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or("localhost");
    // SNI only; identity is checked by SPIFFE ID, never by this name.
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .unwrap_or_else(|_| {
            rustls::pki_types::ServerName::try_from("localhost").expect("static name")
        });
    let connector = tokio_rustls::TlsConnector::from(tls.outbound[index].clone());
    let handshaking = connector.connect(name, upstream);
    let Some(stream) = handshake(&shared, &o.name, upstream_addr, handshaking).await else {
        return;
    };
    let serial = peer_leaf(stream.get_ref().1.peer_certificates()).map(|i| i.serial);
    relay(&shared, &o.name, stream, app, serial).await;
}

/// Runs a TLS handshake within `limits.handshake_timeout_ms`; a failure is
/// a denial (with the refusal's reason and the peer's ID where known).
async fn handshake<S>(
    shared: &Shared,
    listener: &str,
    peer: SocketAddr,
    tls: impl std::future::Future<Output = std::io::Result<S>>,
) -> Option<S> {
    let hs = Duration::from_millis(shared.cfg.limits.handshake_timeout_ms);
    match tokio::time::timeout(hs, tls).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            let (reason, peer_id) = refusal(&e);
            shared.deny(listener, peer, peer_id, reason);
            None
        }
        Err(_) => {
            shared.deny(listener, peer, None, DenialReason::HandshakeTimeout);
            None
        }
    }
}

/// What the peer's leaf certificate says (the verifiers admitted it).
fn peer_leaf(
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Option<tessera_core::svid::LeafInfo> {
    certs
        .and_then(|c| c.first())
        .and_then(|c| tessera_core::svid::check_leaf(c).ok())
}

/// TLV type carrying the peer's SPIFFE ID (first of PROXY v2's custom range).
pub const PP2_TYPE_SPIFFE_ID: u8 = 0xE0;

/// A PROXY protocol v2 header (PROXY command, TCP) for `src` → `dst` with the
/// peer's SPIFFE ID as a TLV. Mixed address families are sent as IPv6.
pub fn proxy_v2_header(src: SocketAddr, dst: SocketAddr, spiffe_id: &SpiffeId) -> Vec<u8> {
    const SIG: [u8; 12] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
    ];
    let mut addrs = Vec::with_capacity(36);
    let fam = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            addrs.extend_from_slice(&s.ip().octets());
            addrs.extend_from_slice(&d.ip().octets());
            0x11
        }
        _ => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v) => v.ip().to_ipv6_mapped(),
                SocketAddr::V6(v) => *v.ip(),
            };
            addrs.extend_from_slice(&v6(src).octets());
            addrs.extend_from_slice(&v6(dst).octets());
            0x21
        }
    };
    addrs.extend_from_slice(&src.port().to_be_bytes());
    addrs.extend_from_slice(&dst.port().to_be_bytes());
    let id = spiffe_id.as_str().as_bytes();
    let mut out = Vec::with_capacity(16 + addrs.len() + 3 + id.len());
    out.extend_from_slice(&SIG);
    out.push(0x21); // version 2, PROXY
    out.push(fam);
    out.extend_from_slice(&((addrs.len() + 3 + id.len()) as u16).to_be_bytes());
    out.extend_from_slice(&addrs);
    out.push(PP2_TYPE_SPIFFE_ID);
    out.extend_from_slice(&(id.len() as u16).to_be_bytes());
    out.extend_from_slice(id);
    out
}

/// Copies both ways until both sides close (half-close is passed on), the
/// connection is quiet in both directions past `limits.idle_timeout_ms`, or
/// the peer's certificate is revoked.
async fn relay<A, B>(
    shared: &Shared,
    listener: &str,
    mut a: A,
    mut b: B,
    peer_serial: Option<String>,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let m = &shared.metrics;
    let per_conn = shared.cfg.metrics;
    if per_conn {
        m.opened.inc(&[listener]);
        m.active.add(&[listener], 1);
    }
    m.open_now.fetch_add(1, Ordering::AcqRel);
    let mut revoked_rx = shared.revoked_gen.subscribe();
    let close_on_revoke = shared.cfg.revocation.close_established;
    let revoked = async {
        let Some(serial) = peer_serial.as_deref() else {
            return std::future::pending().await;
        };
        loop {
            if revoked_rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            if close_on_revoke && shared.revoked.contains(serial) {
                return;
            }
        }
    };
    // Both directions feed one activity record: quiet in both for the idle
    // deadline means the relay is closed.
    let activity = tessera_core::idle::Activity::new();
    let mut a = tessera_core::idle::IdleIo::new(&mut a, activity.clone());
    let mut b = tessera_core::idle::IdleIo::new(&mut b, activity.clone());
    let idle = Duration::from_millis(shared.cfg.limits.idle_timeout_ms);
    tokio::select! {
        _ = activity.idle_for(idle) => {
            tracing::debug!(listener, "closing idle connection");
        }
        _ = crate::relay::copy_bidirectional(&mut a, &mut b) => {}
        _ = revoked => {
            tracing::warn!(listener, serial = peer_serial.as_deref().unwrap_or("-"), "closing connection: peer certificate revoked");
        }
    }
    if per_conn {
        // Counted from the wrappers, so bytes of connections that end in an
        // error, an idle close or a revocation are counted too.
        m.bytes_in.add(&[listener], a.bytes_read());
        m.bytes_out.add(&[listener], b.bytes_read());
        m.closed.inc(&[listener]);
        m.active.add(&[listener], -1);
    }
    m.open_now.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    #[test]
    fn proxy_v2_header_layout() {
        let id = "spiffe://td/a".parse().unwrap();
        let h = super::proxy_v2_header(
            "10.0.0.1:4000".parse().unwrap(),
            "10.0.0.2:8443".parse().unwrap(),
            &id,
        );
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!((h[12], h[13]), (0x21, 0x11));
        let len = u16::from_be_bytes([h[14], h[15]]) as usize;
        assert_eq!(h.len(), 16 + len);
        assert_eq!(&h[16..20], &[10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 4000);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 8443);
        assert_eq!(h[28], super::PP2_TYPE_SPIFFE_ID);
        assert_eq!(&h[31..], b"spiffe://td/a");
        let h6 = super::proxy_v2_header(
            "10.0.0.1:1".parse().unwrap(),
            "[::1]:2".parse().unwrap(),
            &id,
        );
        assert_eq!(h6[13], 0x21);
    }
}
