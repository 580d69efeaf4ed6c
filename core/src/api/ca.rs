//! CA generations, the rotation schedule and the CA's status.

use serde::{Deserialize, Serialize};

/// Where a CA generation is in its life (ordered as a life runs). Stored and
/// sent as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaState {
    /// An intermediate whose CSR waits for the upstream's signature; not published.
    Pending,
    /// Published in the bundle, not yet signing.
    Prepared,
    /// The one generation signing now.
    Active,
    /// No longer signing; published until its last leaf expires.
    Retired,
    /// Out of the bundle, key erased.
    Removed,
    /// Revoked in an emergency: out of the bundle, key erased, its leaves revoked.
    Revoked,
}

impl CaState {
    /// Every state, in life order.
    pub const ALL: [CaState; 6] = [
        CaState::Pending,
        CaState::Prepared,
        CaState::Active,
        CaState::Retired,
        CaState::Removed,
        CaState::Revoked,
    ];

    /// The state's name as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            CaState::Pending => "pending",
            CaState::Prepared => "prepared",
            CaState::Active => "active",
            CaState::Retired => "retired",
            CaState::Removed => "removed",
            CaState::Revoked => "revoked",
        }
    }

    /// Parses a state name.
    pub fn parse(s: &str) -> Option<CaState> {
        CaState::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether a generation in this state is in the trust bundle.
    pub fn is_published(self) -> bool {
        matches!(self, CaState::Prepared | CaState::Active | CaState::Retired)
    }
}

impl std::fmt::Display for CaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One CA generation's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaInfo {
    /// The CA's ID.
    pub id: String,
    /// Where the generation is in its life (`active` for the one signing now).
    pub state: CaState,
    /// Key algorithm.
    pub key_algorithm: String,
    /// Subject DN.
    pub subject: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// Whether it is a self-signed root or an intermediate under an upstream.
    pub kind: String,
    /// When it was prepared (published in the bundle), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_at: Option<String>,
    /// When it became active, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<String>,
    /// When it stopped signing, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
    /// When it left the bundle (removed or revoked), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Unexpired, unrevoked leaves it signed.
    #[serde(default)]
    pub dependents: i64,
    /// Whether it is in the trust bundle now.
    #[serde(default)]
    pub published: bool,
    /// Whether its certificate carries a NameConstraints extension (absent
    /// while it has no certificate, e.g. a pending intermediate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_constrained: Option<bool>,
}

/// The rotation schedule's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// Whether the schedule is enabled in config.
    pub enabled: bool,
    /// The next transition the schedule will make, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextTransition>,
    /// When some replica last ran the schedule, RFC 3339 (from this replica's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Why the schedule cannot proceed on its own, if it cannot (for example an
    /// intermediate waiting for the operator's upstream to sign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
}

/// A scheduled CA transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextTransition {
    /// `prepare`, `activate` or `remove`.
    pub action: String,
    /// The generation it applies to (absent for `prepare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_id: Option<String>,
    /// When, RFC 3339.
    pub at: String,
}

/// The answer to an emergency CA revocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaRevokeResponse {
    /// The revoked generation.
    pub revoked_ca: String,
    /// Leaves revoked with it (reason cACompromise).
    pub revoked_certificates: usize,
    /// The fresh generation made active, if the revoked one was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// The revocation-feed version after the change.
    pub version: i64,
    /// Set when followers cannot learn the new bundle through the CA (no
    /// prepared generation existed, so the fresh one is trusted by no one yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The CA server's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaStatus {
    /// The trust domain served.
    pub trust_domain: String,
    /// CA generations.
    pub cas: Vec<CaInfo>,
    /// Current revocation-feed version.
    pub revocation_version: i64,
    /// Database backend (`sqlite` or `postgres`).
    pub storage: String,
    /// The rotation schedule.
    #[serde(default)]
    pub schedule: ScheduleInfo,
    /// The current trust bundle's sequence.
    #[serde(default)]
    pub bundle_sequence: i64,
    /// Federation relationships without a successful poll for
    /// `federation.stale_after_seconds`, one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_federations: Vec<String>,
}
