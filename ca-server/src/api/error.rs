//! The one API error type: maps every failure to an RFC 9457 problem document
//! with a stable `code`. Refusals are matched by type, never by their text;
//! internal causes (the database's, the CA engine's) are logged, never returned.

use crate::authority::AuthorityError;
use crate::csr::CsrError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_core::api::Problem;

/// An API error: status, stable code and a client-safe detail.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Client-safe explanation.
    pub detail: String,
    /// Seconds for a `Retry-After` header (`429 rate_limited`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 429: `who` (this address, node, reporter) is over its rate; the
    /// answer says when to retry, in its text and in `Retry-After`.
    pub fn rate_limited(who: &str, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from this {who}; retry in {secs} s"),
        );
        e.retry_after = Some(secs);
        e
    }

    /// 401: no usable credentials.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this route needs a client certificate or API token",
        )
    }

    /// 403: credentials lack the role.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404 for unknown routes.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "no_such_route", "no such route")
    }

    /// 405 for a known route asked with another method (`detail` says what is served).
    pub fn method_not_allowed(detail: &'static str) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", detail)
    }
}

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> Self {
        use AuthorityError as A;
        use StatusCode as S;
        match &e {
            A::Invalid { .. } => Self::new(S::BAD_REQUEST, "invalid_field", e.to_string()),
            A::SpiffeId(..) => Self::new(S::BAD_REQUEST, "invalid_spiffe_id", e.to_string()),
            A::WrongTrustDomain(..) => {
                Self::new(S::BAD_REQUEST, "wrong_trust_domain", e.to_string())
            }
            A::Csr(c) => {
                let code = match c {
                    CsrError::TooLarge(_) => "csr_too_large",
                    CsrError::Malformed => "csr_malformed",
                    CsrError::BadSignature => "csr_bad_signature",
                    CsrError::WeakKey(_) => "csr_key_refused",
                };
                let status = if matches!(c, CsrError::TooLarge(_)) {
                    S::PAYLOAD_TOO_LARGE
                } else {
                    S::BAD_REQUEST
                };
                Self::new(status, code, e.to_string())
            }
            A::NoEntry(_) => Self::new(S::FORBIDDEN, "no_entry", e.to_string()),
            A::NotFound(_) => Self::new(S::NOT_FOUND, "not_found", e.to_string()),
            A::Token(_) => Self::new(S::FORBIDDEN, "join_token_refused", e.to_string()),
            A::Renewal(_) => Self::new(S::FORBIDDEN, "renewal_refused", e.to_string()),
            // State that does not allow the request: the refusal's own words.
            A::Refused(_) | A::IssuerExpiring | A::IntermediateSuccessor | A::AwaitingSignature => {
                Self::new(S::CONFLICT, "conflict", e.to_string())
            }
            A::Forbidden(_) => Self::new(S::FORBIDDEN, "node_refused", e.to_string()),
            A::Posture(_) => Self::new(S::FORBIDDEN, "posture_refused", e.to_string()),
            A::PlatformToken(_) => Self::new(S::FORBIDDEN, "platform_token_refused", e.to_string()),
            A::Upstream { code, .. } => Self::new(S::BAD_GATEWAY, code, e.to_string()),
            A::RateLimited { who, retry } => Self::rate_limited(who, *retry),
            A::Store(_) | A::Ca(_) | A::Keystore(_) => {
                tracing::error!(error = %e, "internal error");
                Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        use StatusCode as S;
        match &r {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/json",
            ),
            JsonRejection::JsonSyntaxError(_) => {
                Self::new(S::BAD_REQUEST, "malformed_json", r.body_text())
            }
            JsonRejection::JsonDataError(_) => {
                Self::new(S::BAD_REQUEST, "invalid_body", r.body_text())
            }
            _ if r.status() == S::PAYLOAD_TOO_LARGE => Self::new(
                S::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body exceeds the limit",
            ),
            _ => Self::new(r.status(), "invalid_body", r.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let p = Problem {
            type_uri: format!("https://tessera.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("error").to_owned(),
            status: self.status.as_u16(),
            detail: Some(self.detail),
            code: self.code.to_owned(),
        };
        let body = serde_json::to_vec(&p).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEntry, NewCert, Refusal, Store, StoreError};

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// A ledger commit the database fails (here: a serial recorded twice, a
    /// primary-key violation) answers `500 internal`, and nothing of the
    /// database's words reaches the client.
    #[tokio::test]
    async fn failed_ledger_commit_is_internal() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let store = Store::open(&url, 2).await.unwrap();
        let cert = NewCert {
            serial: "0a".repeat(16),
            spiffe_id: "spiffe://example.org/w".into(),
            entry_id: "e".into(),
            ca_id: "c".into(),
            not_before: 0,
            not_after: i64::MAX / 2,
            requested_by: "test".into(),
            attestation: "{}".into(),
            attestation_hash: "00".repeat(32),
            der: vec![0x30, 0x00],
            node_spiffe_id: None,
        };
        let audit = || AuditEntry {
            actor: "test".into(),
            action: "cert.issue",
            target: "0a".repeat(16),
            details: serde_json::json!({}),
        };
        store
            .record_certificate(cert.clone(), vec![], audit())
            .await
            .unwrap();
        let err = store
            .record_certificate(cert, vec![], audit())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::LedgerCommit(_)), "{err:?}");
        let (status, v) = body(AuthorityError::from(err).into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(v["code"], "internal");
        assert_eq!(v["detail"], "internal error; see the server log");
        let text = v.to_string().to_lowercase();
        for leak in ["unique", "certificates", "database", "ledger", "sqlite"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }

    /// A refusal answers 409 `conflict` with its own words, as always.
    #[tokio::test]
    async fn refusal_is_conflict() {
        let e = AuthorityError::from(StoreError::Refused(Refusal::EntryGone));
        let (status, v) = body(e.into()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(v["code"], "conflict");
        assert_eq!(v["detail"], "registration entry no longer exists");
    }
}
