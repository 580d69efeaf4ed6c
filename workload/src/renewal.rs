//! When to renew a certificate, and how to retry when renewal fails.
//!
//! One policy for every workload-side holder of a certificate: renew at a
//! fraction of the [`Lifetime`] counted from receipt, moved at random by up
//! to ± a share of that wait (so that workloads started together do not
//! renew together, and a small fraction never jitters down to zero), never
//! before receipt nor after notAfter; after a failure retry with a delay
//! that doubles from `retry_min` up to `retry_max`, optionally also capped
//! at a share of the lifetime (a short-lived certificate retries sooner).
//!
//! The holders are parameters of it: `tessera cert renew --watch` renews at
//! `--renew-at` (default ⅔) ± 10 %, retrying from 1 s up to a tenth of the
//! lifetime within 1 s..300 s; the node agent at half-life without jitter
//! (its Workload API streams push at a time tests can count on), retrying
//! every 5 s; the sidecar at `renew.at_fraction` ± `renew.jitter_fraction`
//! of the lifetime, retrying from `retry_min_ms` to `retry_max_ms`.

use std::time::Duration;

use crate::svid::Lifetime;

/// A renewal policy (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalPolicy {
    at: f64,
    jitter: f64,
    retry_min: Duration,
    retry_max: Duration,
    retry_share: Option<f64>,
}

impl RenewalPolicy {
    /// Renews at `fraction` of the lifetime (counted from receipt), without
    /// jitter, retrying from 1 s doubling up to 300 s.
    pub const fn at(fraction: f64) -> Self {
        Self {
            at: fraction,
            jitter: 0.0,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            retry_share: None,
        }
    }

    /// Moves each renewal at random by up to ± `share` of the wait (of the
    /// time from receipt to the renewal point).
    pub const fn jitter(mut self, share: f64) -> Self {
        self.jitter = share;
        self
    }

    /// Retries after `min`, doubling up to `max`.
    pub const fn retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max;
        self
    }

    /// Also caps the retry delay at `share` of the lifetime (never below the
    /// first delay).
    pub const fn retry_within(mut self, share: f64) -> Self {
        self.retry_share = Some(share);
        self
    }

    /// When to renew, unix seconds (with a fresh random jitter).
    pub fn renew_at(&self, life: Lifetime) -> f64 {
        self.renew_at_with(life, unit_random() * 2.0 - 1.0)
    }

    /// [`Self::renew_at`] in whole seconds.
    pub fn renew_at_secs(&self, life: Lifetime) -> i64 {
        self.renew_at(life) as i64
    }

    /// How long from now until [`Self::renew_at`] (zero if it has passed).
    pub fn wait(&self, life: Lifetime) -> Duration {
        let now = tessera_core::now_unix() as f64;
        Duration::from_secs_f64((self.renew_at(life) - now).max(0.0))
    }

    /// `r` in [-1, 1] picks the jitter.
    fn renew_at_with(&self, life: Lifetime, r: f64) -> f64 {
        let span = (life.not_after - life.start).max(1) as f64;
        let at = life.start as f64 + span * self.at * (1.0 + self.jitter * r);
        at.clamp(life.start as f64, life.not_after.max(life.start) as f64)
    }

    /// The retry delays for a certificate with this lifetime.
    pub fn backoff(&self, life: Lifetime) -> Backoff {
        self.delays(Some(life))
    }

    /// The retry delays when there is no certificate yet (or its lifetime
    /// does not matter): never capped by a share of a lifetime.
    pub fn retries(&self) -> Backoff {
        self.delays(None)
    }

    fn delays(&self, life: Option<Lifetime>) -> Backoff {
        let mut max = self.retry_max.max(self.retry_min);
        if let (Some(share), Some(life)) = (self.retry_share, life) {
            let span = Duration::from_secs(u64::try_from(life.not_after - life.start).unwrap_or(0));
            max = span.mul_f64(share).clamp(self.retry_min, max);
        }
        Backoff {
            min: self.retry_min,
            next: self.retry_min,
            max,
        }
    }
}

/// Retry delays: each call to [`Backoff::next_delay`] doubles the next one,
/// up to the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// The delay to wait now; the one after is twice as long (within the cap).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        d
    }

    /// Starts again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A number in [0, 1) for jitter.
fn unit_random() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u32::from_be_bytes(b) as f64 / (u32::MAX as f64 + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: Lifetime = Lifetime {
        start: 1_000,
        not_after: 1_060,
    };

    #[test]
    fn cli_renews_at_its_fraction_with_jitter_relative_to_the_wait() {
        let p = RenewalPolicy::at(0.6667).jitter(0.1);
        assert_eq!(p.renew_at_with(LIFE, -1.0) as i64, 1_036);
        assert_eq!(p.renew_at_with(LIFE, 1.0) as i64, 1_044);
        for _ in 0..100 {
            let at = p.renew_at_secs(LIFE);
            assert!((1_036..=1_044).contains(&at), "{at}");
        }
    }

    #[test]
    fn agent_half_life_is_the_same_policy() {
        let p = RenewalPolicy::at(0.5);
        assert_eq!(p.renew_at_secs(LIFE), 1_030);
        let odd = Lifetime {
            start: 1_000,
            not_after: 1_061,
        };
        // As the agent's integer half: received_at + life / 2.
        assert_eq!(p.renew_at_secs(odd), 1_030);
        let gone = Lifetime {
            start: 1_000,
            not_after: 1_000,
        };
        assert_eq!(p.renew_at_secs(gone), 1_000);
    }

    #[test]
    fn sidecar_jitter_of_the_lifetime_is_a_share_of_the_wait() {
        // at_fraction 0.5 ± 0.1 of the lifetime = 0.5 × (1 ± 0.2).
        let p = RenewalPolicy::at(0.5).jitter(0.1 / 0.5);
        assert!((p.renew_at_with(LIFE, -1.0) - 1_024.0).abs() < 1e-9);
        assert!((p.renew_at_with(LIFE, 1.0) - 1_036.0).abs() < 1e-9);
        // Never past notAfter, never before receipt.
        let wide = RenewalPolicy::at(0.9).jitter(0.3 / 0.9);
        assert_eq!(wide.renew_at_with(LIFE, 1.0), 1_060.0);
        let early = RenewalPolicy::at(0.1).jitter(3.0);
        assert_eq!(early.renew_at_with(LIFE, -1.0), 1_000.0);
    }

    #[test]
    fn backoff_doubles_to_its_caps() {
        let mut b = RenewalPolicy::at(0.5)
            .retry(Duration::from_millis(100), Duration::from_millis(400))
            .backoff(LIFE);
        let d: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 400]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
        // The CLI's: a tenth of the lifetime, within 1 s..300 s.
        let cli = RenewalPolicy::at(0.6667).retry_within(0.1);
        let mut b = cli.backoff(LIFE);
        let d: Vec<_> = (0..4).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 6]);
        let day = Lifetime {
            start: 0,
            not_after: 86_400,
        };
        let mut b = cli.backoff(day);
        assert_eq!(
            (0..12).map(|_| b.next_delay()).max(),
            Some(Duration::from_secs(300))
        );
        let tiny = Lifetime {
            start: 0,
            not_after: 5,
        };
        assert_eq!(cli.backoff(tiny).max, Duration::from_secs(1));
        // The agent's: every 5 s.
        let mut b = RenewalPolicy::at(0.5)
            .retry(Duration::from_secs(5), Duration::from_secs(5))
            .backoff(LIFE);
        assert_eq!(
            [b.next_delay(), b.next_delay()],
            [Duration::from_secs(5); 2]
        );
    }
}
