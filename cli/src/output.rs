//! Output (tables or JSON), exit-code-carrying failures, and the local commands
//! (`cert inspect`, CRL listing). Each resource's table layout is in `tables`.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::Path;
use tessera_core::time::rfc3339;

use x509_parser::prelude::{CertificateRevocationList, FromDer};

mod tables;

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: i32,
    msg: String,
}

impl Failure {
    /// A failure with an exit code.
    pub fn new(code: i32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    /// A usage error (exit 2).
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::new(2, msg)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Failure {}

/// Where results go.
pub struct Out {
    /// JSON instead of tables.
    pub json: bool,
}

impl Out {
    /// Prints `value` as JSON, or the human text `human` renders.
    pub fn show<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            print!("{}", human());
        }
        Ok(())
    }

    /// Prints `value` as JSON, or as `key: value` lines.
    pub fn record<T: Serialize>(&self, value: &T) -> Result<()> {
        self.show(value, || {
            kv(&serde_json::to_value(value).unwrap_or_default())
        })
    }
}

/// A resource shown as one line of a table.
pub trait Row {
    /// The column headers.
    const HEADERS: &'static [&'static str];
    /// This item's cells, in the order of [`Row::HEADERS`].
    fn cells(&self) -> Vec<String>;
}

/// Renders `items` as an aligned table with their headers.
pub fn table<T: Row>(items: &[T]) -> String {
    rows(T::HEADERS, items.iter().map(Row::cells))
}

/// A cell for an optional value: the value, or `-`.
pub fn or_dash<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), T::to_string)
}

/// Renders an aligned table.
pub fn rows(headers: &[&str], data: impl Iterator<Item = Vec<String>>) -> String {
    let data: Vec<Vec<String>> = data.collect();
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &data {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for r in data {
        out += &line(r);
    }
    out
}

/// Renders a JSON object as `key: value` lines.
pub fn kv(v: &Value) -> String {
    let mut s = String::new();
    if let Some(o) = v.as_object() {
        let w = o.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in o {
            let text = match v {
                Value::String(t) => t.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            s += &format!("{k:<w$}  {text}\n");
        }
    }
    s
}

/// `tessera cert inspect FILE [--check]`.
pub fn inspect(out: &Out, file: &Path, check: bool) -> Result<()> {
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let certs = tessera_core::pem::certs(&data).or_else(|_| {
        Ok::<_, anyhow::Error>(vec![rustls::pki_types::CertificateDer::from(data.clone())])
    })?;
    let der = &certs[0];
    let cert = tessera_core::svid::parse(der)
        .map_err(|e| Failure::new(1, format!("{}: {e}", file.display())))?;
    let spiffe = tessera_core::svid::check_leaf_parsed(&cert);
    let binding = tessera_core::svid::binding_hash(&cert).map(hex::encode);
    let uri = tessera_core::svid::uri_sans(&cert).first().copied();
    let mut v = json!({
        "spiffe_id": uri,
        "serial": tessera_core::svid::serial_hex(&cert),
        "subject": cert.subject().to_string(),
        "issuer": cert.issuer().to_string(),
        "not_before": rfc3339(cert.validity().not_before.timestamp()),
        "not_after": rfc3339(cert.validity().not_after.timestamp()),
        "is_ca": cert.is_ca(),
        "attestation_binding": binding,
        "chain_length": certs.len(),
    });
    if let Ok(info) = &spiffe {
        v["dns_names"] = json!(info.dns_names);
    }
    let verdict = check.then(|| {
        if cert.is_ca() {
            tessera_core::svid::check_signing_cert(der).map(|_| ())
        } else {
            tessera_core::svid::check_tessera_leaf(der).map(|_| ())
        }
    });
    if let Some(r) = &verdict {
        v["check"] = match r {
            Ok(()) => json!("ok"),
            Err(e) => json!(e.to_string()),
        };
    }
    out.show(&v, || kv(&v))?;
    match verdict {
        Some(Err(e)) => Err(Failure::new(1, format!("check failed: {e}")).into()),
        _ => Ok(()),
    }
}

/// Lists a CRL's serials and optionally saves it.
pub fn crl(out: &Out, der: &[u8], file: Option<&Path>, format: &str) -> Result<()> {
    let (_, crl) = CertificateRevocationList::from_der(der)
        .map_err(|e| Failure::new(5, format!("server sent an unparsable CRL: {e}")))?;
    let serials: Vec<Value> = crl
        .iter_revoked_certificates()
        .map(|r| {
            json!({
                "serial": hex::encode(r.raw_serial()),
                "revoked_at": rfc3339(r.revocation_date.timestamp()),
            })
        })
        .collect();
    if let Some(f) = file {
        let bytes = if format == "pem" {
            tessera_core::pem::encode("X509 CRL", der).into_bytes()
        } else {
            der.to_vec()
        };
        std::fs::write(f, bytes).with_context(|| format!("--out {}", f.display()))?;
    }
    let v = json!({
        "issuer": crl.issuer().to_string(),
        "this_update": rfc3339(crl.last_update().timestamp()),
        "next_update": crl.next_update().map(|t| rfc3339(t.timestamp())),
        "revoked": serials,
    });
    out.show(&v, || {
        let mut s = format!(
            "issuer:      {}\nthis update: {}\nrevoked:     {}\n",
            crl.issuer(),
            rfc3339(crl.last_update().timestamp()),
            serials.len()
        );
        for r in &serials {
            s += &format!(
                "  {}  {}\n",
                r["serial"].as_str().unwrap_or(""),
                r["revoked_at"].as_str().unwrap_or("")
            );
        }
        s
    })
}
