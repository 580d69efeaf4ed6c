//! The Workload API socket's `:authority` handling.
//!
//! On a unix socket the HTTP/2 `:authority` names nothing: the socket path
//! already identifies the server, and the caller is identified by the kernel
//! (`SO_PEERCRED`), never by a header. gRPC stacks fill it in differently:
//! grpc-go sends `localhost`, grpc-java and grpc-swift the raw socket path
//! (`/run/agent.sock`), gRPC C-core (py-spiffe, grpcio, Ruby, PHP) the
//! percent-encoded path (`run%2Fagent.sock`), some none at all. The `h2`
//! server (under hyper and tonic) parses `:authority` as a URI authority
//! while decoding the HEADERS frame and answers the last three forms with
//! `RST_STREAM PROTOCOL_ERROR` before the request reaches any handler; h2
//! has no option to skip that check (hyperium/h2#487 is still open).
//!
//! [`AuthorityFree`] therefore sits between the accepted socket and the
//! HTTP/2 server and removes `:authority` from every request's header
//! block, whatever its form, so every client is served the same way and
//! nothing can be inferred from it. Everything else reaches h2 unchanged
//! and h2 still applies all its checks and limits: the frames other than
//! HEADERS/CONTINUATION are relayed byte for byte; a header block is
//! decoded with the client's HPACK context and re-encoded as literals
//! without indexing (so h2's own dynamic table stays empty and cannot fall
//! out of step), with the same fields in the same order less `:authority`.
//! Only what a conforming client never sends is refused here, by closing
//! the connection: a bad preface, a HEADERS or CONTINUATION frame larger
//! than the server's maximum frame size, a block interleaved with other
//! frames, an HPACK error, or a block beyond [`MAX_BLOCK_BYTES`] (encoded or
//! decoded; well above the HTTP/2 server's own 16 KiB header-list limit,
//! which still applies after this layer).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload a client may send: the HTTP/2 default of
/// SETTINGS_MAX_FRAME_SIZE, which the agent's server does not raise.
pub const MAX_FRAME_BYTES: usize = 16_384;
/// The largest header block (encoded, and decoded as HTTP/2 counts a header
/// list: name + value + 32 per field) this layer holds before refusing.
pub const MAX_BLOCK_BYTES: usize = 64 * 1024;
/// HPACK's initial dynamic table size, which the agent's server does not change.
const HPACK_TABLE_BYTES: usize = 4096;
/// How much is read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A connection whose requests reach the HTTP/2 server without
/// `:authority` (see the module documentation); writes pass through.
pub struct AuthorityFree<S> {
    inner: S,
    /// Bytes read from the socket, not yet relayed.
    raw: BytesMut,
    /// Bytes ready for the HTTP/2 server.
    out: BytesMut,
    phase: Phase,
    /// The header block being gathered (HEADERS then CONTINUATION frames).
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    eof: bool,
}

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preface,
    FrameHeader,
    /// Relaying this many more bytes of a frame's payload unchanged.
    Relay(usize),
}

/// A header block being gathered.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

fn refused(why: &str) -> io::Error {
    tracing::debug!("Workload API connection closed: {why}");
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

impl<S> AuthorityFree<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_BYTES);
        AuthorityFree {
            inner,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            phase: Phase::Preface,
            block: None,
            decoder,
            eof: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves what `raw` holds into `out` as far as it can.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.phase {
                Phase::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        return Err(refused("not an HTTP/2 connection preface"));
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.out.put(self.raw.split_to(n));
                    self.phase = Phase::FrameHeader;
                }
                Phase::Relay(left) => {
                    if self.raw.is_empty() {
                        return Ok(());
                    }
                    let n = left.min(self.raw.len());
                    self.out.put(self.raw.split_to(n));
                    self.phase = if n == left {
                        Phase::FrameHeader
                    } else {
                        Phase::Relay(left - n)
                    };
                }
                Phase::FrameHeader => {
                    if self.raw.len() < 9 {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]);
                    let len = len as usize;
                    let kind = self.raw[3];
                    if kind != HEADERS && kind != CONTINUATION {
                        if self.block.is_some() {
                            return Err(refused("a frame inside a header block"));
                        }
                        self.out.put(self.raw.split_to(9));
                        if len > 0 {
                            self.phase = Phase::Relay(len);
                        }
                        continue;
                    }
                    if len > MAX_FRAME_BYTES {
                        return Err(refused("a header frame larger than the maximum frame size"));
                    }
                    if self.raw.len() < 9 + len {
                        return Ok(());
                    }
                    let frame = self.raw.split_to(9 + len);
                    let flags = frame[4];
                    let stream =
                        u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
                    self.header_frame(kind, flags, stream, &frame[9..])?;
                }
            }
        }
    }

    /// Gathers one HEADERS or CONTINUATION frame; at the block's end,
    /// relays it re-encoded.
    fn header_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        let fragment = if kind == HEADERS {
            if self.block.is_some() {
                return Err(refused("HEADERS inside a header block"));
            }
            let mut p = payload;
            if flags & PADDED != 0 {
                let (&pad, rest) = p.split_first().ok_or_else(|| refused("bad padding"))?;
                let keep = rest
                    .len()
                    .checked_sub(pad as usize)
                    .ok_or_else(|| refused("bad padding"))?;
                p = &rest[..keep];
            }
            let priority = if flags & PRIORITY != 0 {
                let (head, rest) = p
                    .split_first_chunk::<5>()
                    .ok_or_else(|| refused("bad priority"))?;
                p = rest;
                Some(*head)
            } else {
                None
            };
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: Vec::new(),
            });
            p
        } else {
            match &self.block {
                Some(b) if b.stream == stream => payload,
                _ => return Err(refused("CONTINUATION outside its header block")),
            }
        };
        let block = self.block.as_mut().expect("set above");
        if block.fragment.len() + fragment.len() > MAX_BLOCK_BYTES {
            return Err(refused("header block too large"));
        }
        block.fragment.extend_from_slice(fragment);
        if flags & END_HEADERS != 0 {
            let block = self.block.take().expect("set above");
            let encoded = self.reencode(&block.fragment)?;
            write_block(&mut self.out, &block, &encoded);
        }
        Ok(())
    }

    /// Decodes a block with the client's HPACK context; re-encodes it as
    /// literals without indexing, less a request's `:authority`.
    fn reencode(&mut self, fragment: &[u8]) -> io::Result<Vec<u8>> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        self.decoder
            .decode_with_cb(fragment, |name, value| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size <= MAX_BLOCK_BYTES {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|_| refused("HPACK decoding error"))?;
        if size > MAX_BLOCK_BYTES {
            return Err(refused("header list too large"));
        }
        // Only a request's header block loses it: a trailer carrying
        // pseudo-headers stays malformed, for h2 to refuse.
        let request = fields.iter().any(|(n, _)| n == b":method");
        let mut encoded = Vec::with_capacity(size);
        for (name, value) in &fields {
            if request && name == b":authority" {
                continue;
            }
            // Literal header field without indexing, new name (RFC 7541 6.2.2).
            encoded.push(0);
            for s in [name, value] {
                loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, &mut encoded)?;
                encoded.extend_from_slice(s);
            }
        }
        Ok(encoded)
    }
}

/// Frames `encoded` as one HEADERS frame and as many CONTINUATION frames as
/// the maximum frame size needs.
fn write_block(out: &mut BytesMut, block: &Block, encoded: &[u8]) {
    let prio = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let first = encoded.len().min(MAX_FRAME_BYTES - prio.len());
    let (head, mut rest) = encoded.split_at(first);
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    let mut frame = |kind: u8, flags: u8, parts: &[&[u8]]| {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        out.put_slice(&(len as u32).to_be_bytes()[1..]);
        out.put_u8(kind);
        out.put_u8(flags);
        out.put_u32(block.stream);
        for p in parts {
            out.put_slice(p);
        }
    };
    let end = if rest.is_empty() { END_HEADERS } else { 0 };
    frame(HEADERS, flags | end, &[prio, head]);
    while !rest.is_empty() {
        let (chunk, next) = rest.split_at(rest.len().min(MAX_FRAME_BYTES));
        rest = next;
        let end = if rest.is_empty() { END_HEADERS } else { 0 };
        frame(CONTINUATION, end, &[chunk]);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFree<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let start = this.raw.len();
            this.raw.resize(start + READ_CHUNK, 0);
            let mut chunk = ReadBuf::new(&mut this.raw[start..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut chunk);
            let got = chunk.filled().len();
            this.raw.truncate(start + got);
            ready!(polled)?;
            if got == 0 {
                this.eof = true;
                continue;
            }
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFree<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFree<S>
{
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        // The caller's credentials come from the socket itself.
        self.inner.connect_info()
    }
}

/// The connections `listener` accepts, each wrapped in [`AuthorityFree`]:
/// what the agent hands to its gRPC server.
pub fn incoming(
    listener: tokio::net::UnixListener,
) -> impl futures_util::Stream<Item = io::Result<AuthorityFree<tokio::net::UnixStream>>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(s, _)| AuthorityFree::new(s));
        Some((next, listener))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    fn run(input: &[u8]) -> io::Result<(Vec<u8>, AuthorityFree<()>)> {
        let mut a = AuthorityFree::new(());
        a.raw.extend_from_slice(input);
        a.process()?;
        Ok((a.out.to_vec(), a))
    }

    fn request(authority: Option<&str>) -> Vec<u8> {
        let mut enc = loona_hpack::Encoder::new();
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b":method", b"POST"), (b":scheme", b"http")];
        if let Some(a) = authority {
            fields.push((b":authority", a.as_bytes()));
        }
        fields.push((b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"));
        fields.push((b"workload.spiffe.io", b"true"));
        enc.encode(fields)
    }

    fn decoded(out: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut d = loona_hpack::Decoder::new();
        let mut block = Vec::new();
        let mut rest = &out[PREFACE.len()..];
        while rest.len() >= 9 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let skip = if rest[3] == HEADERS && rest[4] & PRIORITY != 0 {
                5
            } else {
                0
            };
            if rest[3] == HEADERS || rest[3] == CONTINUATION {
                block.extend_from_slice(&rest[9 + skip..9 + len]);
            }
            rest = &rest[9 + len..];
        }
        d.decode(&block).unwrap()
    }

    #[test]
    fn removes_every_authority_form_and_keeps_the_rest() {
        for form in [
            None,
            Some("localhost"),
            Some("/tmp/dir/agent.sock"),
            Some("tmp%2Fdir%2Fagent.sock"),
        ] {
            let mut input = PREFACE.to_vec();
            input.extend(frame(HEADERS, END_HEADERS, 1, &request(form)));
            input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
            let (out, _) = run(&input).unwrap();
            let fields = decoded(&out);
            let names: Vec<&[u8]> = fields.iter().map(|(n, _)| &n[..]).collect();
            assert_eq!(
                names,
                [&b":method"[..], b":scheme", b":path", b"workload.spiffe.io"],
                "{form:?}"
            );
            // The DATA frame follows byte for byte.
            assert!(out.ends_with(&frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")));
        }
    }

    #[test]
    fn padded_priority_and_continuation_blocks_are_reassembled() {
        let block = request(Some("x%2Fy"));
        let (a, b) = block.split_at(block.len() / 2);
        let mut headers = vec![3u8]; // pad length
        headers.extend([0x80, 0, 0, 0, 15]); // priority
        headers.extend(a);
        headers.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &headers));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, b));
        let (out, _) = run(&input).unwrap();
        let first = &out[PREFACE.len()..];
        assert_eq!(first[3], HEADERS);
        assert_eq!(first[4], PRIORITY | END_STREAM | END_HEADERS);
        assert_eq!(&first[9..14], &[0x80, 0, 0, 0, 15]);
        assert_eq!(decoded(&out).len(), 4);
    }

    #[test]
    fn a_request_split_across_reads_is_relayed_once_whole() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &request(Some("/a.sock"))));
        let mut a = AuthorityFree::new(());
        for byte in &input {
            a.raw.put_u8(*byte);
            a.process().unwrap();
        }
        assert_eq!(decoded(&a.out).len(), 4);
    }

    #[test]
    fn what_no_conforming_client_sends_closes_the_connection() {
        let big = vec![0u8; MAX_FRAME_BYTES + 1];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("bad preface", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            ("oversized frame", frame(HEADERS, END_HEADERS, 1, &big)),
            (
                "continuation alone",
                frame(CONTINUATION, END_HEADERS, 1, &[0x82]),
            ),
            (
                "interleaved",
                [frame(HEADERS, 0, 1, &[0x82]), frame(0x0, 0, 1, b"x")].concat(),
            ),
            (
                "other stream's continuation",
                [
                    frame(HEADERS, 0, 1, &[0x82]),
                    frame(CONTINUATION, END_HEADERS, 3, &[0x84]),
                ]
                .concat(),
            ),
            (
                "bad hpack index",
                frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f]),
            ),
            (
                "bad padding",
                frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]),
            ),
            // One indexed 4 KiB entry, referenced many times, would decode huge.
            ("decoded too large", {
                let mut b = vec![0x40, 1, b'x'];
                b.extend(loona_hpack::encoder::encode_integer(4000, 7));
                b.extend(vec![b'v'; 4000]);
                b.extend(vec![0xbe; 100]);
                frame(HEADERS, END_HEADERS, 1, &b)
            }),
        ];
        for (what, body) in cases {
            let input = if what == "bad preface" {
                body
            } else {
                [PREFACE.to_vec(), body].concat()
            };
            assert!(run(&input).is_err(), "{what} was relayed");
        }
        // Many CONTINUATION frames: the block is bounded.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x82]));
        for _ in 0..(MAX_BLOCK_BYTES / MAX_FRAME_BYTES + 1) {
            input.extend(frame(CONTINUATION, 0, 1, &vec![0x82; MAX_FRAME_BYTES]));
        }
        assert!(run(&input).is_err(), "an unbounded block was gathered");
    }

    #[test]
    fn the_hpack_context_carries_across_requests() {
        // The client's encoder indexes fields; the second request refers to them.
        let mut enc = loona_hpack::Encoder::new();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":authority", b"run%2Fa.sock"),
            (b":path", b"/p"),
            (b"x-custom", b"kept"),
        ];
        let first = enc.encode(fields.clone());
        let second = enc.encode(fields);
        assert!(
            second.len() < first.len(),
            "the second block uses the table"
        );
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        let (out1, mut a) = run(&input).unwrap();
        a.out.clear();
        a.raw
            .extend_from_slice(&frame(HEADERS, END_HEADERS, 3, &second));
        a.process().unwrap();
        let out2 = [PREFACE, &a.out[..]].concat();
        for out in [out1, out2] {
            let f = decoded(&out);
            assert_eq!(f.len(), 3);
            assert_eq!(f[2], (b"x-custom".to_vec(), b"kept".to_vec()));
        }
    }
}
