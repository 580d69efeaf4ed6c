//! Typed callers: each extractor takes the principal the gate admitted, so a
//! handler's signature states what its route's rule guarantees. A route whose
//! handler takes a caller its rule does not guarantee is a programming error,
//! caught by a test over the whole table (`route::tests`); at run time it
//! would answer `500 internal`, never run the handler.

use super::ApiError;
use super::access::PeerCert;
use super::route::{Accepts, Arg};
use crate::authority::Principal;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use tessera_core::SpiffeId;
use tessera_core::api::Role;

/// An operator credential (admin certificate or API token) with its role:
/// what [`Access::Roles`](super::Access::Roles) admits.
#[derive(Debug, Clone)]
pub struct Operator {
    role: Role,
    principal: Principal,
}

impl Operator {
    fn of(p: &Principal) -> Option<Self> {
        match p {
            Principal::Credential { role, .. } => Some(Self {
                role: *role,
                principal: p.clone(),
            }),
            _ => None,
        }
    }

    /// The credential's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The caller, as the domain's audit names it.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

/// A caller known by a certificate this CA issued, under one principal kind.
macro_rules! certified_caller {
    ($(#[$doc:meta])* $name:ident, $kind:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            spiffe_id: SpiffeId,
            principal: Principal,
            not_after: i64,
        }

        impl $name {
            fn of(p: &Principal) -> Option<Self> {
                match p {
                    Principal::$kind { spiffe_id, .. } => Some(Self {
                        spiffe_id: spiffe_id.clone(),
                        principal: p.clone(),
                        not_after: 0,
                    }),
                    _ => None,
                }
            }

            /// The SPIFFE ID its certificate proved.
            pub fn spiffe_id(&self) -> &SpiffeId {
                &self.spiffe_id
            }

            /// notAfter (unix seconds) of the certificate the caller
            /// authenticated with: nothing issued on its strength (a
            /// JWT-SVID) may outlive it.
            pub fn cert_not_after(&self) -> i64 {
                self.not_after
            }

            /// The caller, as the domain's audit names it.
            pub fn principal(&self) -> &Principal {
                &self.principal
            }
        }
    };
}

certified_caller!(
    /// A workload presenting a live certificate this CA issued: what
    /// [`Access::Workload`](super::Access::Workload) admits.
    Workload,
    Workload
);
certified_caller!(
    /// A node agent presenting its node certificate (node recorded, not
    /// banned): what [`Access::Node`](super::Access::Node) admits.
    Node,
    Node
);

/// Any authenticated caller (operator, workload or node): what
/// [`Access::Authenticated`](super::Access::Authenticated) admits.
#[derive(Debug, Clone)]
pub struct Caller(Principal);

impl Caller {
    fn of(p: &Principal) -> Option<Self> {
        (!matches!(p, Principal::Anonymous | Principal::Reissue { .. })).then(|| Self(p.clone()))
    }

    /// The caller, as the domain's audit names it.
    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

/// A workload or node certificate, or one revoked only with its CA, with the
/// certificate itself: what [`Access::Renew`](super::Access::Renew) admits.
#[derive(Debug, Clone)]
pub struct Renewer {
    cert: Arc<CertificateDer<'static>>,
}

impl Renewer {
    fn accepts(p: &Principal) -> bool {
        matches!(
            p,
            Principal::Workload { .. } | Principal::Node { .. } | Principal::Reissue { .. }
        )
    }

    /// The certificate the caller presented (the one to renew).
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Renewer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        principal_as(parts, |p| Self::accepts(p).then_some(()))?;
        let cert = parts
            .extensions
            .get::<PeerCert>()
            .and_then(|c| c.0.clone())
            .ok_or_else(ApiError::unauthenticated)?;
        Ok(Self { cert })
    }
}

impl Arg for Renewer {
    const CALLER: Option<Accepts> = Some(Self::accepts);
}

macro_rules! caller_extractor {
    ($($t:ident),+) => {$(
        impl<S: Send + Sync> FromRequestParts<S> for $t {
            type Rejection = ApiError;
            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
                principal_as(parts, $t::of)
            }
        }

        impl Arg for $t {
            const CALLER: Option<Accepts> = Some(|p| $t::of(p).is_some());
        }
    )+};
}
caller_extractor!(Operator, Caller);

/// The extractors of callers known by a certificate: the principal, and the
/// presented certificate's notAfter (no certificate: unauthenticated).
macro_rules! certified_extractor {
    ($($t:ident),+) => {$(
        impl<S: Send + Sync> FromRequestParts<S> for $t {
            type Rejection = ApiError;
            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
                let mut caller = principal_as(parts, $t::of)?;
                caller.not_after = parts
                    .extensions
                    .get::<PeerCert>()
                    .and_then(|c| c.0.as_ref())
                    .and_then(|c| tessera_core::svid::check_leaf(c).ok())
                    .map(|leaf| leaf.not_after)
                    .ok_or_else(ApiError::unauthenticated)?;
                Ok(caller)
            }
        }

        impl Arg for $t {
            const CALLER: Option<Accepts> = Some(|p| $t::of(p).is_some());
        }
    )+};
}
certified_extractor!(Workload, Node);

/// The principal the gate admitted, as caller `T`.
fn principal_as<T>(parts: &Parts, of: impl FnOnce(&Principal) -> Option<T>) -> Result<T, ApiError> {
    parts
        .extensions
        .get::<Principal>()
        .and_then(of)
        .ok_or_else(|| {
            tracing::error!(
                path = %parts.uri.path(),
                "route handler takes a caller its access rule does not guarantee"
            );
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            )
        })
}
