//! Denials: sidecars' reports of the connections they refused, checked
//! whole (one bad denial refuses the report), stored and counted.

use super::{Authority, AuthorityError, Result};
use crate::store::DenialFilter;
use std::collections::HashMap;
use tessera_core::{SpiffeId, api, now_unix};

/// Most denials one report may carry.
pub const MAX_DENIALS_PER_REPORT: usize = 1000;
/// How far ahead of the CA's clock a denial's `at` may be, seconds (one day).
pub const MAX_DENIAL_FUTURE_SECONDS: i64 = 86400;
/// Longest `listener` in a denial, bytes.
pub const MAX_DENIAL_LISTENER_BYTES: usize = 128;
/// Longest `peer_addr` in a denial, bytes.
pub const MAX_DENIAL_PEER_ADDR_BYTES: usize = 64;

impl Authority {
    /// Stores a sidecar's report of refused connections. `reporter` is the
    /// sidecar's own SPIFFE ID, from its credentials (the report cannot name
    /// it). The whole report is refused if any denial is invalid: more than
    /// [`MAX_DENIALS_PER_REPORT`], `at` more than a day ahead or older than
    /// `retention.keep_denials_seconds`, an over-long or non-printable
    /// `listener` or `peer_addr`, or a `peer_spiffe_id` that is not a SPIFFE ID
    /// (of any trust domain). A valid report past the reporter's rate
    /// (`limits.denials_per_second_per_reporter`, counted in denials, so one
    /// sidecar cannot fill the table) is [`AuthorityError::RateLimited`] and
    /// stores nothing. Returns how many were stored.
    pub async fn report_denials(
        &self,
        reporter: &SpiffeId,
        denials: &[api::Denial],
    ) -> Result<u64> {
        if denials.len() > MAX_DENIALS_PER_REPORT {
            return Err(AuthorityError::Invalid {
                field: "denials",
                reason: format!(
                    "{} denials; at most {MAX_DENIALS_PER_REPORT} per report",
                    denials.len()
                ),
            });
        }
        let now = now_unix();
        let oldest = now - self.cfg.retention.keep_denials_seconds;
        let newest = now + MAX_DENIAL_FUTURE_SECONDS;
        for (i, d) in denials.iter().enumerate() {
            let invalid = |field: &'static str, why: String| AuthorityError::Invalid {
                field,
                reason: format!("denials[{i}]: {why}"),
            };
            if d.at > newest {
                return Err(invalid(
                    "at",
                    format!("{} is more than a day in the future", d.at),
                ));
            }
            if d.at < oldest {
                return Err(invalid(
                    "at",
                    format!(
                        "{} is older than the retention period ({} s)",
                        d.at, self.cfg.retention.keep_denials_seconds
                    ),
                ));
            }
            for (field, value, max) in [
                ("listener", &d.listener, MAX_DENIAL_LISTENER_BYTES),
                ("peer_addr", &d.peer_addr, MAX_DENIAL_PEER_ADDR_BYTES),
            ] {
                if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
                    return Err(invalid(
                        field,
                        format!("1 to {max} bytes without control characters"),
                    ));
                }
            }
            if let Some(p) = &d.peer_spiffe_id {
                SpiffeId::new(p)
                    .map_err(|e| invalid("peer_spiffe_id", format!("not a SPIFFE ID: {e}")))?;
            }
        }
        let n = u32::try_from(denials.len()).unwrap_or(u32::MAX);
        if let Err(retry) = self.denial_rate.take_n(&reporter.as_str().to_owned(), n) {
            self.metrics.rate_limited.inc(&["denials"]);
            return Err(AuthorityError::RateLimited {
                who: "reporter",
                retry,
            });
        }
        let stored = self
            .store
            .record_denials(reporter.as_str(), denials, now)
            .await?;
        let mut by_reason: HashMap<api::DenialReason, u64> = HashMap::new();
        for d in denials {
            *by_reason.entry(d.reason).or_default() += 1;
        }
        for (reason, n) in by_reason {
            self.metrics.denials.add(&[reason.as_str()], n);
        }
        Ok(stored)
    }

    /// Lists stored denials, newest first.
    pub async fn list_denials(&self, f: &DenialFilter) -> Result<Vec<api::DenialRecord>> {
        Ok(self.store.list_denials(f).await?)
    }
}
