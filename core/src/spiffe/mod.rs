//! SPIFFE IDs and trust domains, validated exactly as the SPIFFE-ID standard says.
//!
//! Architecture invariant: this module knows nothing of TLS or X.509; it is the
//! identity vocabulary every other part of Tessera speaks.

use std::fmt;
use std::str::FromStr;

mod reserved;
pub use reserved::{
    CA_SERVER_PATH, ISSUER_PATH_PREFIX, NODE_PATH_PREFIX, NODE_SET_PATH_PREFIX,
    OPERATOR_PATH_PREFIX, entry_may_grant, is_infrastructure_path, node_name, node_set_name,
};

/// The longest SPIFFE ID the standard allows, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The longest trust-domain name the standard allows, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The ID does not start with `spiffe://`.
    #[error("scheme must be spiffe://")]
    WrongScheme,
    /// The trust domain is empty.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain has a character outside `[a-z0-9.-_]`.
    #[error("trust domain may contain only lowercase letters, digits, '.', '-' and '_'")]
    BadTrustDomainChar,
    /// The trust domain is longer than 255 bytes.
    #[error("trust domain is longer than 255 bytes")]
    TrustDomainTooLong,
    /// The path has an empty segment (`//`).
    #[error("path has an empty segment")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("path has a '.' or '..' segment")]
    DotSegment,
    /// The path has a character outside `[a-zA-Z0-9.-_]`.
    #[error("path segments may contain only letters, digits, '.', '-' and '_'")]
    BadPathChar,
    /// The path ends with a slash.
    #[error("path has a trailing slash")]
    TrailingSlash,
    /// A query, fragment, port, userinfo or percent-encoding is present.
    #[error("query, fragment, port, userinfo and percent-encoding are not allowed")]
    ForbiddenUriPart,
    /// The ID is longer than 2048 bytes.
    #[error("SPIFFE ID is longer than 2048 bytes")]
    TooLong,
    /// The ID has no path where one is required.
    #[error("a workload SPIFFE ID needs a path")]
    MissingPath,
    /// The ID has a path where none is allowed.
    #[error("a trust-domain ID must not have a path")]
    UnexpectedPath,
}

/// A SPIFFE trust domain name, such as `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust-domain name (`example.org`) or a `spiffe://example.org` ID.
    pub fn new(s: &str) -> Result<Self, SpiffeIdError> {
        let name = s.strip_prefix("spiffe://").unwrap_or(s);
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The trust-domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own ID, `spiffe://<name>` (used in signing certificates).
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.0)
    }

    /// Builds a workload ID in this trust domain from a path such as `/ns/prod/web`.
    pub fn workload_id(&self, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::new(&format!("spiffe://{}{}", self.0, path))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {}
            b':' | b'@' | b'%' | b'?' | b'#' => return Err(SpiffeIdError::ForbiddenUriPart),
            _ => return Err(SpiffeIdError::BadTrustDomainChar),
        }
    }
    Ok(())
}

/// A validated SPIFFE ID: `spiffe://<trust-domain><path>`.
///
/// Workload IDs always have a non-empty path; use [`SpiffeId::parse_any`] to accept
/// a trust-domain ID without a path (as carried by signing certificates).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    td_len: usize,
}

impl SpiffeId {
    /// Parses a workload SPIFFE ID; a path is required.
    pub fn new(s: &str) -> Result<Self, SpiffeIdError> {
        let id = Self::parse_any(s)?;
        if id.path().is_empty() {
            return Err(SpiffeIdError::MissingPath);
        }
        Ok(id)
    }

    /// Parses a SPIFFE ID with or without a path.
    pub fn parse_any(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or(SpiffeIdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(td)?;
        validate_path(path)?;
        Ok(Self {
            id: s.to_owned(),
            td_len: td.len(),
        })
    }

    /// The trust-domain name of this ID.
    pub fn trust_domain_name(&self) -> &str {
        &self.id[9..9 + self.td_len]
    }

    /// The trust domain of this ID.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The path, starting with `/`, or empty for a trust-domain ID.
    pub fn path(&self) -> &str {
        &self.id[9 + self.td_len..]
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// Whether this ID belongs to the given trust domain.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.as_str()
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    // `path` starts with '/', so the first split item is the empty prefix.
    for seg in path[1..].split('/') {
        if seg.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        for b in seg.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {}
                b'?' | b'#' | b'%' => return Err(SpiffeIdError::ForbiddenUriPart),
                _ => return Err(SpiffeIdError::BadPathChar),
            }
        }
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> Self {
        id.id
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

/// Deserializes a type from a string through its `FromStr`, the error
/// quoting the string: configurations parse identities once, at load.
macro_rules! deserialize_from_str {
    ($t:ty, $what:literal) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(|e: SpiffeIdError| {
                    serde::de::Error::custom(format_args!(
                        concat!("invalid ", $what, " {:?}: {}"),
                        s, e
                    ))
                })
            }
        }
    };
}

deserialize_from_str!(SpiffeId, "SPIFFE ID");
deserialize_from_str!(TrustDomain, "trust domain");
deserialize_from_str!(SpiffeIdPattern, "SPIFFE ID pattern");

/// A rule matching SPIFFE IDs: an exact ID, a path prefix (`spiffe://td/ns/prod/*`),
/// or a whole trust domain (`spiffe://td/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffeIdPattern {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any ID in the trust domain whose path starts with the given segments.
    Prefix {
        /// The trust domain the ID must belong to.
        trust_domain: TrustDomain,
        /// The path prefix, ending with '/' (or just "/" for the whole trust domain).
        prefix: String,
    },
}

impl SpiffeIdPattern {
    /// Parses `spiffe://td/path`, `spiffe://td/path/*` or `spiffe://td/*`.
    pub fn new(s: &str) -> Result<Self, SpiffeIdError> {
        if let Some(base) = s.strip_suffix("/*") {
            let id = SpiffeId::parse_any(base)?;
            let prefix = format!("{}/", id.path());
            Ok(Self::Prefix {
                trust_domain: id.trust_domain(),
                prefix,
            })
        } else {
            Ok(Self::Exact(SpiffeId::new(s)?))
        }
    }

    /// Whether the ID matches this pattern.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(e) => e == id,
            Self::Prefix {
                trust_domain,
                prefix,
            } => id.is_member_of(trust_domain) && id.path().starts_with(prefix.as_str()),
        }
    }
}

impl FromStr for SpiffeIdPattern {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn valid_ids() {
        for ok in [
            "spiffe://example.org/web",
            "spiffe://example.org/ns/prod/sa/web-1_a.b",
            "spiffe://a-b_c.9/x",
            "spiffe://example.org/A/Z/09",
        ] {
            let id = SpiffeId::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(id.as_str(), ok);
        }
        let id = SpiffeId::new("spiffe://example.org/ns/web").unwrap();
        assert_eq!(id.trust_domain_name(), "example.org");
        assert_eq!(id.path(), "/ns/web");
        assert!(SpiffeId::parse_any("spiffe://example.org").is_ok());
    }

    #[test]
    fn one_invalid_case_per_rule() {
        use SpiffeIdError::*;
        let long_path = format!("spiffe://example.org/{}", "a".repeat(2040));
        let long_td = format!("spiffe://{}/x", "a".repeat(256));
        let cases: Vec<(&str, SpiffeIdError)> = vec![
            ("https://example.org/web", WrongScheme),
            ("SPIFFE://example.org/web", WrongScheme),
            ("spiffe:///web", MissingTrustDomain),
            ("spiffe://Example.org/web", BadTrustDomainChar),
            ("spiffe://exa mple.org/web", BadTrustDomainChar),
            (&long_td, TrustDomainTooLong),
            ("spiffe://example.org//web", EmptySegment),
            ("spiffe://example.org/./web", DotSegment),
            ("spiffe://example.org/a/../web", DotSegment),
            ("spiffe://example.org/we*b", BadPathChar),
            ("spiffe://example.org/web/", TrailingSlash),
            ("spiffe://example.org/web?x=1", ForbiddenUriPart),
            ("spiffe://example.org/web#frag", ForbiddenUriPart),
            ("spiffe://example.org:8443/web", ForbiddenUriPart),
            ("spiffe://user@example.org/web", ForbiddenUriPart),
            ("spiffe://example.org/w%65b", ForbiddenUriPart),
            (&long_path, TooLong),
            ("spiffe://example.org", MissingPath),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::new(input).unwrap_err(), want, "{input}");
        }
        assert_eq!(
            TrustDomain::new("example.org/x").unwrap_err(),
            BadTrustDomainChar
        );
    }

    #[test]
    fn patterns() {
        let p = SpiffeIdPattern::new("spiffe://example.org/ns/prod/*").unwrap();
        assert!(p.matches(&SpiffeId::new("spiffe://example.org/ns/prod/web").unwrap()));
        assert!(!p.matches(&SpiffeId::new("spiffe://example.org/ns/production").unwrap()));
        assert!(!p.matches(&SpiffeId::new("spiffe://other.org/ns/prod/web").unwrap()));
        let all = SpiffeIdPattern::new("spiffe://example.org/*").unwrap();
        assert!(all.matches(&SpiffeId::new("spiffe://example.org/x").unwrap()));
        let exact = SpiffeIdPattern::new("spiffe://example.org/web").unwrap();
        assert!(!exact.matches(&SpiffeId::new("spiffe://example.org/web/x").unwrap()));
    }

    #[test]
    fn deserialized_from_strings_quoting_the_bad_one() {
        fn de(s: &str) -> serde::de::value::StrDeserializer<'_, serde::de::value::Error> {
            serde::de::value::StrDeserializer::new(s)
        }
        let id = SpiffeId::deserialize(de("spiffe://example.org/web")).unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/web");
        let td = TrustDomain::deserialize(de("example.org")).unwrap();
        assert_eq!(td.as_str(), "example.org");
        let p = SpiffeIdPattern::deserialize(de("spiffe://example.org/ns/*")).unwrap();
        assert!(p.matches(&SpiffeId::new("spiffe://example.org/ns/web").unwrap()));
        let e = SpiffeIdPattern::deserialize(de("web"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid SPIFFE ID pattern \"web\": scheme must be spiffe://"
        );
        let e = TrustDomain::deserialize(de("Bad.Domain"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid trust domain \"Bad.Domain\": "),
            "{e}"
        );
    }
}
