//! The messages of `proto/workload.proto`, written by hand with prost's
//! derive macros (no `protoc`/`protox` build step); field tags follow the
//! standard file exactly.

use std::collections::HashMap;

/// `X509SVIDRequest`: no parameters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`: the caller's SVIDs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// One entry per SPIFFE ID the caller is entitled to.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// DER CRLs (we send none: revocation travels in the CA's feed).
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub crl: Vec<bytes::Bytes>,
    /// Foreign trust domains' bundles (none: no federation yet).
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, bytes::Bytes>,
}

/// `X509SVID`: one SVID with its key and its trust domain's bundle.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct X509Svid {
    /// The SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// DER certificates, leaf first, concatenated.
    #[prost(bytes = "bytes", tag = "2")]
    pub x509_svid: bytes::Bytes,
    /// PKCS#8 DER private key.
    #[prost(bytes = "bytes", tag = "3")]
    pub x509_svid_key: bytes::Bytes,
    /// DER CA certificates of the trust domain, concatenated.
    #[prost(bytes = "bytes", tag = "4")]
    pub bundle: bytes::Bytes,
    /// Operator guidance when several SVIDs are returned.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesRequest`: no parameters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`: bundles keyed by trust domain SPIFFE ID.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesResponse {
    /// DER CRLs (none).
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub crl: Vec<bytes::Bytes>,
    /// `spiffe://<td>` → concatenated DER CA certificates.
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, bytes::Bytes>,
}

/// `JWTSVIDRequest`: audiences and, optionally, one SPIFFE ID.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct JwtSvidRequest {
    /// Audiences (`aud`), at least one.
    #[prost(string, repeated, tag = "1")]
    pub audience: Vec<String>,
    /// Only this SPIFFE ID (empty: every identity of the caller).
    #[prost(string, tag = "2")]
    pub spiffe_id: String,
}

/// `JWTSVIDResponse`: the caller's JWT-SVIDs.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct JwtSvidResponse {
    /// One token per SPIFFE ID.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<JwtSvid>,
}

/// `JWTSVID`: one token.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct JwtSvid {
    /// The SPIFFE ID (`sub`).
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The compact JWS.
    #[prost(string, tag = "2")]
    pub svid: String,
    /// Operator guidance when several SVIDs are returned.
    #[prost(string, tag = "3")]
    pub hint: String,
}

/// `JWTBundlesRequest`: no parameters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct JwtBundlesRequest {}

/// `JWTBundlesResponse`: JWKS documents keyed by trust domain SPIFFE ID.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesResponse {
    /// `spiffe://<td>` → JWKS (JSON) of its JWT-SVID keys.
    #[prost(map = "string, bytes", tag = "1")]
    pub bundles: HashMap<String, bytes::Bytes>,
}

/// `ValidateJWTSVIDRequest`: a token and the audience it must carry.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ValidateJwtSvidRequest {
    /// The audience the validator expects.
    #[prost(string, tag = "1")]
    pub audience: String,
    /// The token.
    #[prost(string, tag = "2")]
    pub svid: String,
}

/// `ValidateJWTSVIDResponse`: who the token names, and all its claims.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateJwtSvidResponse {
    /// The SPIFFE ID (`sub`).
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// Every claim of the token.
    #[prost(message, optional, tag = "2")]
    pub claims: Option<prost_types::Struct>,
}
