//! `tessera-sidecar --probe URL`: the container health check. The sidecar's
//! image has no shell and no HTTP client, and its admin endpoint listens on
//! loopback only (a kubelet's `httpGet` probe comes from outside the pod's
//! network namespace and cannot reach it), so the binary itself is the exec
//! probe: one plain HTTP/1.1 GET to a loopback address, success iff the
//! answer's status is 2xx.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The whole probe (connect, send, answer) must finish within this.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most bytes read of the answer: the status line is all the probe needs.
const MAX_ANSWER: u64 = 4096;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The URL is not `http://<loopback IP>:<port>/<path>`.
    #[error("probe URL {0:?}: expected http://<loopback address>:<port>/<path>")]
    Url(String),
    /// Connecting, sending or reading failed (or timed out).
    #[error("probe {0}: {1}")]
    Io(String, std::io::Error),
    /// The answer was not HTTP or its status was not 2xx.
    #[error("probe {0}: answered {1:?}")]
    Status(String, String),
}

/// Parses `http://127.0.0.1:15000/readyz` into the address and the path.
/// Only loopback IP literals are accepted: the probe checks this pod's own
/// sidecar, and refusing names keeps DNS out of a health check.
fn parse(url: &str) -> Result<(SocketAddr, &str), ProbeError> {
    let bad = || ProbeError::Url(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority.parse().map_err(|_| bad())?;
    if !addr.ip().is_loopback()
        || path.len() > 1024
        || path.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(bad());
    }
    Ok((addr, path))
}

/// Runs the probe: `Ok(())` iff the answer's status is 2xx.
pub fn probe(url: &str) -> Result<(), ProbeError> {
    let (addr, path) = parse(url)?;
    let io = |e| ProbeError::Io(url.to_owned(), e);
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut answer = Vec::new();
    // The status line ends the first line; read until it is complete, the
    // peer closes, or the cap is reached.
    let mut limited = (&mut stream).take(MAX_ANSWER);
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') {
        let n = limited.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(answer.split(|&b| b == b'\n').next().unwrap_or_default())
        .trim_end()
        .to_owned();
    let mut words = line.split(' ');
    let ok = words.next().is_some_and(|v| v.starts_with("HTTP/1."))
        && words.next().is_some_and(|s| {
            s.len() == 3 && s.starts_with('2') && s.bytes().all(|b| b.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(ProbeError::Status(url.to_owned(), line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one connection with `answer`, returning the request it read.
    fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/readyz", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 256];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer.as_bytes()).unwrap();
            String::from_utf8(req).unwrap()
        });
        (url, h)
    }

    #[test]
    fn two_hundreds_pass_and_everything_else_fails() {
        let (url, h) = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        probe(&url).unwrap();
        assert!(h.join().unwrap().starts_with("GET /readyz HTTP/1.1\r\n"));
        let (url, h) = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let e = probe(&url).unwrap_err();
        assert!(e.to_string().contains("503"), "{e}");
        h.join().unwrap();
        let (url, h) = serve_once("SSH-2.0-nope\r\n");
        assert!(matches!(probe(&url), Err(ProbeError::Status(..))));
        h.join().unwrap();
        // Nothing listening: a closed port on loopback.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(matches!(
            probe(&format!("http://127.0.0.1:{port}/readyz")),
            Err(ProbeError::Io(..))
        ));
    }

    #[test]
    fn only_loopback_http_urls() {
        for bad in [
            "https://127.0.0.1:15000/readyz",
            "http://10.0.0.1:15000/readyz",
            "http://localhost:15000/readyz",
            "http://127.0.0.1/readyz",
            "http://127.0.0.1:15000/a b",
        ] {
            assert!(matches!(parse(bad), Err(ProbeError::Url(_))), "{bad}");
        }
        assert_eq!(
            parse("http://[::1]:15000").unwrap(),
            ("[::1]:15000".parse().unwrap(), "/")
        );
    }
}
