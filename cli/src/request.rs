//! Requests to the CA: one context per run (client and output), the request
//! shapes every resource uses, and how a refusal becomes an exit code.

use crate::output::{Failure, Out, Row, table};
use anyhow::{Context, Result};
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Display;
use tessera_core::api::Problem;
use tessera_core::client::Client;

/// What every command that talks to the CA needs.
pub struct Ctx {
    /// The authenticated client (see `connection::connect`).
    pub client: Client,
    /// Where results go.
    pub out: Out,
}

impl Ctx {
    /// `GET path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None).await
    }

    /// `GET path` of a list, shown as a table of the items `items` picks out.
    pub async fn list<L, T>(&self, path: &str, items: fn(&L) -> &[T]) -> Result<()>
    where
        L: DeserializeOwned + Serialize,
        T: Row,
    {
        let l: L = self.get(path).await?;
        self.out.show(&l, || table(items(&l)))
    }

    /// `method path` with `body` as JSON, decoded.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        self.call(method, path, Some(serde_json::to_vec(body)?))
            .await
    }

    /// `POST path` creating a credential whose secret only this answer
    /// carries: the whole answer as JSON, or the bare secret (`secret` picks
    /// it out) so that a script can capture it.
    pub async fn create_secret<T>(
        &self,
        path: &str,
        body: &impl Serialize,
        secret: fn(&T) -> &str,
    ) -> Result<()>
    where
        T: DeserializeOwned + Serialize,
    {
        let created: T = self.send(Method::POST, path, body).await?;
        self.out
            .show(&created, || format!("{}\n", secret(&created)))
    }

    /// One request, its answer decoded.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let bytes = self.call_raw(method, path, body).await?;
        serde_json::from_slice(&bytes).context("decoding the server's answer")
    }

    /// One request, its answer as bytes; a refusal is a [`Failure`] with the
    /// exit code of its status.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<bytes::Bytes> {
        let reply = self
            .client
            .call(method, path, body)
            .await
            .map_err(no_answer)?;
        if reply.status.is_success() || reply.status == StatusCode::NOT_MODIFIED {
            return Ok(reply.body);
        }
        let code = match reply.status.as_u16() {
            404 => 3,
            401 | 403 | 409 => 4,
            400..=499 => 2,
            _ => 5,
        };
        Err(Failure::new(code, refusal(reply.status, &reply.body)).into())
    }

    /// `DELETE collection/id`, reported as `{"<done>": id}` or `<done> <noun> <id>`.
    pub async fn delete(&self, collection: &str, id: &str, done: &str, noun: &str) -> Result<()> {
        let path = format!("{collection}/{}", escape(id));
        self.call_raw(Method::DELETE, &path, None).await?;
        self.out
            .show(&json!({ done: id }), || format!("{done} {noun} {id}\n"))
    }
}

/// A CA that could not be reached or did not answer: exit 5.
pub fn no_answer(e: impl Display) -> Failure {
    Failure::new(5, format!("{e:#}"))
}

/// What to print for a refused request: the problem's title, code and detail,
/// or only the status when the body is not a problem document.
pub fn refusal(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<Problem>(body) {
        Ok(p) => format!("{} ({}): {}", p.title, p.code, p.detail.unwrap_or_default()),
        Err(_) => format!("server answered {status}"),
    }
}

/// Percent-encodes `s` for a path segment or a query value (RFC 3986
/// unreserved characters stay as they are).
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request path with a query string built one parameter at a time, each
/// value percent-encoded, in the order given.
pub struct Query(String);

impl Query {
    /// `path` with no parameters yet.
    pub fn new(path: &str) -> Self {
        Self(path.to_owned())
    }

    /// Adds `name=value`.
    pub fn param(mut self, name: &str, value: impl Display) -> Self {
        let sep = if self.0.contains('?') { '&' } else { '?' };
        self.0 += &format!("{sep}{name}={}", escape(&value.to_string()));
        self
    }

    /// Adds `name=a,b,…` unless `values` is empty; the commas separate the
    /// values, so they are not encoded.
    pub fn list<'a>(mut self, name: &str, values: impl IntoIterator<Item = &'a str>) -> Self {
        let joined: Vec<String> = values.into_iter().map(escape).collect();
        if !joined.is_empty() {
            let sep = if self.0.contains('?') { '&' } else { '?' };
            self.0 += &format!("{sep}{name}={}", joined.join(","));
        }
        self
    }

    /// Adds `name=value` when there is a value.
    pub fn opt(self, name: &str, value: Option<impl Display>) -> Self {
        match value {
            Some(v) => self.param(name, v),
            None => self,
        }
    }

    /// The path and query.
    pub fn path(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encodes_values_in_order() {
        let q = Query::new("/v1/certs")
            .param("limit", 100)
            .opt("spiffe_id", Some("spiffe://td/a b"))
            .opt("revoked", None::<bool>)
            .list("kinds", ["certificate.issued", "node.banned"]);
        assert_eq!(
            q.path(),
            "/v1/certs?limit=100&spiffe_id=spiffe%3A%2F%2Ftd%2Fa%20b&kinds=certificate.issued,node.banned"
        );
        assert_eq!(
            Query::new("/v1/entries").opt("x", None::<u8>).path(),
            "/v1/entries"
        );
        assert_eq!(
            Query::new("/v1/events").list("kinds", []).path(),
            "/v1/events"
        );
    }
}
