//! Shared Tessera library: SPIFFE identities, X.509-SVID checks, API types,
//! PEM helpers, metrics, and the single module that configures rustls.
#![forbid(unsafe_code)]

/// Implements `Debug` for the struct `$ty` showing only the named fields
/// (then `..`): for types that hold a token, secret or key, which no log line
/// may show (`debug_without_secrets!(Type: shown_a, shown_b)`).
#[macro_export]
macro_rules! debug_without_secrets {
    ($ty:ident: $($field:ident),*) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

pub mod api;
pub mod audit;
pub mod bundle;
pub mod client;
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod idle;
pub mod jwt;
pub mod limit;
pub mod metrics;
pub mod pem;
pub mod platform_jwt;
pub mod spiffe;
pub mod sse;
pub mod svid;
pub mod time;
pub mod tls;

pub use spiffe::{SpiffeId, SpiffeIdError, SpiffeIdPattern, TrustDomain};
pub use time::now_unix;
