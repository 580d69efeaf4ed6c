//! The pod annotations that configure an injected sidecar, and their
//! rendering into the sidecar's `--set` arguments.
//!
//! | annotation | value | sidecar option |
//! |---|---|---|
//! | `tessera.dev/inject` | `"false"` skips the pod (`"true"` or absent: inject) | |
//! | `tessera.dev/inbound` | `"8443->8080, 9443->9090"`: mTLS on port 8443 of the pod, plaintext to the app on 127.0.0.1:8080 | `[[inbound]]` (`listen`, `forward`) |
//! | `tessera.dev/allow` | `"spiffe://example.org/web, spiffe://example.org/ns/prod/*"`: peers every inbound listener accepts | `[[inbound]] allow` |
//! | `tessera.dev/outbound` | `"15001=spiffe://example.org/api@api:8443"`: the app connects to 127.0.0.1:15001, the sidecar to api:8443, which must be that SPIFFE ID | `[[outbound]]` (`listen`, `server_id`, `upstream`) |
//! | `tessera.dev/spiffe-id` | `"spiffe://example.org/web"`: which SVID to use when the agent offers several | `workload_api_spiffe_id` |
//!
//! Lists are comma-separated. The syntax is checked here; every rule the
//! sidecar applies at start (SPIFFE IDs and patterns, `host:port`, loopback
//! listeners, at least one listener, ...) is checked by loading the rendered
//! arguments with the sidecar's own `Config::load`, and a refusal names the
//! annotation it came from.

use std::collections::BTreeMap;
use tessera_core::config::NO_ENV;
use tessera_sidecar::config::{Config, Options as _};

use crate::ErrorKind;

/// Skips injection when `"false"`.
pub const INJECT: &str = "tessera.dev/inject";
/// Inbound listeners: `LISTEN->FORWARD` port pairs.
pub const INBOUND: &str = "tessera.dev/inbound";
/// The peers inbound listeners allow.
pub const ALLOW: &str = "tessera.dev/allow";
/// Outbound listeners: `PORT=SERVER_ID@HOST:PORT`.
pub const OUTBOUND: &str = "tessera.dev/outbound";
/// The SVID to use when the agent offers several.
pub const SPIFFE_ID: &str = "tessera.dev/spiffe-id";
/// Longest annotation value read.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Most entries in one list annotation.
pub const MAX_ENTRIES: usize = 32;

/// One outbound listener from `tessera.dev/outbound`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Loopback port the app connects to.
    pub port: u16,
    /// The SPIFFE ID (or pattern) the upstream must present.
    pub server_id: String,
    /// The upstream's `host:port`.
    pub upstream: String,
}

/// A pod's sidecar configuration, read from its annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidecarConfig {
    /// `(listen, forward)` ports of the inbound listeners.
    pub inbound: Vec<(u16, u16)>,
    /// Peers the inbound listeners allow.
    pub allow: Vec<String>,
    /// Outbound listeners.
    pub outbound: Vec<Outbound>,
    /// The SVID to use when the agent offers several.
    pub spiffe_id: Option<String>,
}

impl SidecarConfig {
    /// Reads the `tessera.dev/*` annotations; `Ok(None)` when the pod opts out.
    /// `ca_url` completes the configuration so the sidecar's rules can judge
    /// the whole of it.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
        ca_url: &str,
    ) -> Result<Option<Self>, ErrorKind> {
        let get = |name: &'static str| -> Result<Option<&str>, ErrorKind> {
            match annotations.get(name) {
                Some(v) if v.len() > MAX_VALUE_BYTES => Err(ErrorKind::Annotation(
                    name,
                    format!("longer than {MAX_VALUE_BYTES} bytes"),
                )),
                Some(v) => Ok(Some(v.trim())),
                None => Ok(None),
            }
        };
        match get(INJECT)? {
            Some("false") => return Ok(None),
            None | Some("true") => {}
            Some(v) => {
                return Err(ErrorKind::Annotation(
                    INJECT,
                    format!("{v:?}: expected \"true\" or \"false\""),
                ));
            }
        }
        let mut cfg = Self::default();
        for item in list(INBOUND, get(INBOUND)?)? {
            let (l, f) = item.split_once("->").ok_or_else(|| {
                ErrorKind::Annotation(INBOUND, format!("{item:?}: expected LISTEN->FORWARD ports"))
            })?;
            cfg.inbound
                .push((port(INBOUND, l.trim())?, port(INBOUND, f.trim())?));
        }
        cfg.allow = list(ALLOW, get(ALLOW)?)?
            .into_iter()
            .map(str::to_owned)
            .collect();
        for item in list(OUTBOUND, get(OUTBOUND)?)? {
            let shape = || {
                ErrorKind::Annotation(
                    OUTBOUND,
                    format!("{item:?}: expected PORT=SPIFFE_ID@HOST:PORT"),
                )
            };
            let (p, rest) = item.split_once('=').ok_or_else(shape)?;
            // SPIFFE IDs cannot contain '@', so the first one ends the ID.
            let (id, upstream) = rest.split_once('@').ok_or_else(shape)?;
            let upstream = upstream.trim();
            let (host, _) = upstream.rsplit_once(':').ok_or_else(shape)?;
            if !valid_host(host) {
                return Err(ErrorKind::Annotation(
                    OUTBOUND,
                    format!("{upstream:?}: the host must be a DNS name or an IP address"),
                ));
            }
            cfg.outbound.push(Outbound {
                port: port(OUTBOUND, p.trim())?,
                server_id: id.trim().to_owned(),
                upstream: upstream.to_owned(),
            });
        }
        cfg.spiffe_id = get(SPIFFE_ID)?.map(str::to_owned);
        if cfg.inbound.is_empty() && cfg.outbound.is_empty() {
            return Err(ErrorKind::Annotation(
                INBOUND,
                format!(
                    "neither {INBOUND} nor {OUTBOUND} is set: the sidecar would have no listener"
                ),
            ));
        }
        if !cfg.inbound.is_empty() && cfg.allow.is_empty() {
            return Err(ErrorKind::Annotation(
                ALLOW,
                format!(
                    "required with {INBOUND}: the SPIFFE IDs or patterns inbound listeners accept"
                ),
            ));
        }
        if cfg.inbound.is_empty() && !cfg.allow.is_empty() {
            return Err(ErrorKind::Annotation(
                ALLOW,
                format!("only meaningful with {INBOUND}"),
            ));
        }
        cfg.check_ports()?;
        cfg.validate(ca_url)?;
        Ok(Some(cfg))
    }

    /// The ports the sidecar uses in the pod's network namespace, each with
    /// what uses it (an annotation or the admin endpoint); the app's
    /// `forward` ports are the app's, not the sidecar's.
    pub fn ports(&self) -> Vec<(u16, &'static str)> {
        let mut ports = vec![(crate::ADMIN_PORT, "its admin endpoint")];
        ports.extend(self.inbound.iter().map(|&(l, _)| (l, INBOUND)));
        ports.extend(self.outbound.iter().map(|o| (o.port, OUTBOUND)));
        ports
    }

    /// No two listeners on one port, and no listener forwarding to a port
    /// the sidecar itself listens on (it would relay to itself).
    fn check_ports(&self) -> Result<(), ErrorKind> {
        let ports = self.ports();
        for (i, &(p, what)) in ports.iter().enumerate() {
            if let Some(&(_, first)) = ports[..i].iter().find(|(q, _)| *q == p) {
                let name = if what.starts_with("tessera.dev") {
                    what
                } else {
                    first
                };
                return Err(ErrorKind::Annotation(
                    name,
                    format!("port {p} is used twice by the sidecar ({first} and {what})"),
                ));
            }
        }
        for &(_, f) in &self.inbound {
            if let Some(&(_, what)) = ports.iter().find(|(p, _)| *p == f) {
                return Err(ErrorKind::Annotation(
                    INBOUND,
                    format!("forward port {f} is the sidecar's own ({what}), not the app's"),
                ));
            }
        }
        Ok(())
    }

    /// The sidecar's `--set` options (each `key=TOML value`), without the
    /// `--set` flags.
    pub fn sets(&self, ca_url: &str) -> Vec<String> {
        let mut sets = vec![format!("ca_url={}", toml_str(ca_url))];
        if !self.inbound.is_empty() {
            let allow = toml_array(self.allow.iter().map(|a| toml_str(a)));
            let listeners = self.inbound.iter().map(|(l, f)| {
                format!(
                    "{{name = \"inbound-{l}\", listen = \"0.0.0.0:{l}\", forward = \"127.0.0.1:{f}\", allow = {allow}}}"
                )
            });
            sets.push(format!("inbound={}", toml_array(listeners)));
        }
        if !self.outbound.is_empty() {
            let listeners = self.outbound.iter().map(|o| {
                format!(
                    "{{name = \"outbound-{}\", listen = \"127.0.0.1:{}\", upstream = {}, server_id = {}}}",
                    o.port,
                    o.port,
                    toml_str(&o.upstream),
                    toml_str(&o.server_id)
                )
            });
            sets.push(format!("outbound={}", toml_array(listeners)));
        }
        if let Some(id) = &self.spiffe_id {
            sets.push(format!("workload_api_spiffe_id={}", toml_str(id)));
        }
        sets
    }

    /// Loads the rendered options exactly as the sidecar will at start, and
    /// names the annotation behind a refusal.
    fn validate(&self, ca_url: &str) -> Result<(), ErrorKind> {
        let e = match Config::load(None, NO_ENV, &self.sets(ca_url)) {
            Ok(_) => return Ok(()),
            Err(e) => e.0,
        };
        // Errors name the option: first for the sidecar's own checks
        // (`inbound[0].allow: ...`), last for a value that does not
        // deserialize (``... in `inbound.allow` ``).
        let annotation = if e.contains("inbound") && e.contains("allow") {
            ALLOW
        } else if e.contains("outbound") {
            OUTBOUND
        } else if e.contains("workload_api_spiffe_id") {
            SPIFFE_ID
        } else {
            INBOUND
        };
        Err(ErrorKind::Annotation(annotation, e))
    }

    /// The CA URL judged by the sidecar's rule (with a placeholder listener,
    /// since a configuration without one is refused).
    pub(crate) fn check_ca_url(ca_url: &str) -> Result<(), String> {
        let sets = [
            format!("ca_url={}", toml_str(ca_url)),
            "outbound=[{name = \"check\", listen = \"127.0.0.1:1\", upstream = \"ca:1\", server_id = \"spiffe://check/x\"}]".to_owned(),
        ];
        Config::load(None, NO_ENV, &sets).map(drop).map_err(|e| e.0)
    }
}

/// The comma-separated entries of a list annotation (none when unset).
fn list<'a>(name: &'static str, value: Option<&'a str>) -> Result<Vec<&'a str>, ErrorKind> {
    let Some(value) = value else {
        return Ok(vec![]);
    };
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.len() > MAX_ENTRIES {
        return Err(ErrorKind::Annotation(
            name,
            format!("more than {MAX_ENTRIES} entries"),
        ));
    }
    if items.iter().any(|i| i.is_empty()) {
        return Err(ErrorKind::Annotation(
            name,
            format!("{value:?}: an empty entry"),
        ));
    }
    Ok(items)
}

/// A port number 1 to 65535.
fn port(name: &'static str, s: &str) -> Result<u16, ErrorKind> {
    s.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| ErrorKind::Annotation(name, format!("{s:?}: expected a port, 1 to 65535")))
}

/// A DNS name (letters, digits, `-`, `.`; at most 253 bytes) or a
/// bracketed IPv6 / dotted IPv4 address: the upstream goes into the
/// sidecar's configuration verbatim.
fn valid_host(h: &str) -> bool {
    if let Some(v6) = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A TOML basic string. Every control character (DEL included, which TOML
/// forbids raw) is escaped, so no annotation can end the string early.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML inline array of already rendered values.
fn toml_array(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_survive_quotes_backslashes_and_controls() {
        for s in ["plain", "a\"b", "c\\d", "e\nf\u{7f}g", "spiffe://td/x"] {
            let t: toml::Table = toml::from_str(&format!("v = {}", toml_str(s))).unwrap();
            assert_eq!(t["v"].as_str(), Some(s));
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "api",
            "api.prod.svc.cluster.local",
            "10.0.0.1",
            "[::1]",
            "a-b",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "a b", "-a", "a..b", "a\"b", "[nope]", "a/b", "x=y"] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
