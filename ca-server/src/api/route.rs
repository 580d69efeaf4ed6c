//! The route table's entry type, and what ties a handler to its access rule:
//! every handler argument is an [`Arg`], and a caller extractor among them
//! says which principals it accepts, so a test can check each route's handler
//! against its rule.

use super::access::{self, Access, Gate};
use crate::authority::{Authority, Principal};
use crate::config::LimitsConfig;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::handler::Handler;
use axum::http::HeaderMap;
use axum::middleware;
use axum::routing::{MethodFilter, MethodRouter, on};
use std::sync::Arc;

/// One route of the API: method, path, access rule and handler, in one entry,
/// so a route cannot exist without its rule or its handler.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern (axum syntax, `{param}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    handler: fn() -> Endpoint,
    body_limit: Option<fn(&LimitsConfig) -> usize>,
}

/// An entry of the table: `route!(POST "/v1/things", access, handler)`; the
/// one method token names both the table's method and the handler's filter.
macro_rules! route {
    ($method:ident $path:literal, $access:expr, $handler:expr) => {
        $crate::api::route::Route::new(stringify!($method), $path, $access, || {
            $crate::api::route::Endpoint::new(::axum::routing::MethodFilter::$method, $handler)
        })
    };
}
pub(super) use route;

impl Route {
    /// An entry; use [`route!`] rather than this.
    pub(super) const fn new(
        method: &'static str,
        path: &'static str,
        access: Access,
        handler: fn() -> Endpoint,
    ) -> Self {
        Self {
            method,
            path,
            access,
            handler,
            body_limit: None,
        }
    }

    /// The same route with a body limit of its own instead of `max_body_bytes`.
    pub(super) const fn body_limit(self, limit: fn(&LimitsConfig) -> usize) -> Self {
        Self {
            body_limit: Some(limit),
            ..self
        }
    }

    /// The handler behind this route's gate.
    pub(super) fn method_router(
        &'static self,
        auth: &Arc<Authority>,
        fairness: &Arc<access::Fairness>,
    ) -> MethodRouter<Arc<Authority>> {
        let mut router = (self.handler)().router;
        if let Some(limit) = self.body_limit {
            router = router.layer(DefaultBodyLimit::max(limit(&auth.cfg.limits)));
        }
        let gate = Gate {
            auth: auth.clone(),
            route: self,
            fairness: fairness.clone(),
        };
        router.route_layer(middleware::from_fn_with_state(gate, access::gate))
    }
}

/// A route's handler, with the caller extractors its signature names.
pub(super) struct Endpoint {
    router: MethodRouter<Arc<Authority>>,
    // Only the table's test reads it: serving needs no check, the test proved it.
    #[cfg_attr(not(test), allow(dead_code))]
    callers: Vec<Accepts>,
}

impl Endpoint {
    /// `handler` for requests with this method.
    pub(super) fn new<H, T>(method: MethodFilter, handler: H) -> Self
    where
        H: Handler<T, Arc<Authority>>,
        T: Args + 'static,
    {
        Self {
            router: on(method, handler),
            callers: T::callers(),
        }
    }
}

/// Whether a caller extractor accepts this principal.
pub(super) type Accepts = fn(&Principal) -> bool;

/// A handler argument the table knows: a caller extractor says which
/// principals it accepts; any other argument leaves [`Arg::CALLER`] unset.
/// Handlers may take only these, so none reads the principal unchecked.
pub(super) trait Arg {
    /// For a caller extractor: which principals it accepts.
    const CALLER: Option<Accepts> = None;
}

impl Arg for State<Arc<Authority>> {}
impl<T> Arg for Path<T> {}
impl Arg for HeaderMap {}

/// A handler's arguments, as axum's `Handler` names them.
pub(super) trait Args {
    /// The caller extractors among them.
    fn callers() -> Vec<Accepts>;
}

impl Args for ((),) {
    fn callers() -> Vec<Accepts> {
        Vec::new()
    }
}

macro_rules! args {
    ($($arg:ident),+) => {
        impl<M, $($arg: Arg),+> Args for (M, $($arg,)+) {
            fn callers() -> Vec<Accepts> {
                [$($arg::CALLER),+].into_iter().flatten().collect()
            }
        }
    };
}
args!(A);
args!(A, B);
args!(A, B, C);
args!(A, B, C, D);
args!(A, B, C, D, E);

#[cfg(test)]
mod tests {
    use super::super::ROUTES;
    use super::*;
    use axum::Router;
    use tessera_core::SpiffeId;
    use tessera_core::api::Role;

    /// Every kind of principal the gate can hand a handler.
    fn principals() -> Vec<Principal> {
        let cert = |kind: fn(SpiffeId, String) -> Principal| {
            kind(
                SpiffeId::new("spiffe://example.org/x").unwrap(),
                "0a".into(),
            )
        };
        let mut all = vec![
            Principal::Anonymous,
            cert(|spiffe_id, serial| Principal::Workload { spiffe_id, serial }),
            cert(|spiffe_id, serial| Principal::Node { spiffe_id, serial }),
            cert(|spiffe_id, serial| Principal::Reissue { spiffe_id, serial }),
        ];
        all.extend(Role::ALL.into_iter().map(|role| Principal::Credential {
            id: "c".into(),
            name: "n".into(),
            role,
        }));
        all
    }

    #[test]
    fn every_handler_takes_the_caller_its_rule_admits() {
        let principals = principals();
        let mut wrong = Vec::new();
        for r in ROUTES {
            let callers = (r.handler)().callers;
            let name = format!("{} {}", r.method, r.path);
            match (r.access, &callers[..]) {
                (Access::Public, []) => {}
                (Access::Public, _) => {
                    wrong.push(format!("{name}: a public route's handler takes no caller"))
                }
                (_, [accepts]) => wrong.extend(
                    principals
                        .iter()
                        .filter(|p| access::admit(r.access, p).is_ok() && !accepts(p))
                        .map(|p| {
                            format!(
                                "{name}: {:?} admits {p:?}, the handler's caller refuses it",
                                r.access
                            )
                        }),
                ),
                _ => wrong.push(format!(
                    "{name}: the handler must take exactly one caller extractor"
                )),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_table_builds_a_router() {
        // Router::route panics on a bad path or a method listed twice.
        let router = ROUTES
            .iter()
            .fold(Router::<Arc<Authority>>::new(), |router, r| {
                router.route(r.path, (r.handler)().router)
            });
        drop(router);
    }
}
