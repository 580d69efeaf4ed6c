//! Short-lived caches of hot lookups (client-certificate principals, entries by
//! SPIFFE ID), so the request path does not pay database round trips that
//! rarely change their answer.
//!
//! An entry is used only while the epoch it was stored under is still current
//! (the authority bumps epochs on every local change that could alter the
//! answer: a revocation, a disabled credential, an entry change) and for at
//! most `ttl`, which bounds how long a change made on another replica can go
//! unseen. Correctness-critical checks (entry still exists, token unused,
//! certificate not revoked) are repeated inside the ledger transaction anyway.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bounded map of recent answers.
pub struct Recent<K, V, E> {
    map: Mutex<HashMap<K, (V, E, Instant)>>,
    ttl: Duration,
    cap: usize,
}

impl<K: Hash + Eq, V: Clone, E: PartialEq + Copy> Recent<K, V, E> {
    /// An empty cache holding at most `cap` answers for at most `ttl` each.
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            ttl,
            cap,
        }
    }

    /// The cached answer for `k`, if stored under `epoch` less than `ttl` ago.
    pub fn get(&self, k: &K, epoch: E) -> Option<V> {
        let map = self.map.lock().ok()?;
        let (v, e, at) = map.get(k)?;
        (*e == epoch && at.elapsed() < self.ttl).then(|| v.clone())
    }

    /// Stores an answer computed under `epoch`.
    pub fn put(&self, k: K, v: V, epoch: E) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.cap {
                // Bounded memory: forget everything rather than track recency.
                map.clear();
            }
            map.insert(k, (v, epoch, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_change_and_capacity_invalidate() {
        let c: Recent<&str, i32, u64> = Recent::new(Duration::from_secs(60), 2);
        c.put("a", 1, 7);
        assert_eq!(c.get(&"a", 7), Some(1));
        assert_eq!(c.get(&"a", 8), None, "a newer epoch hides older answers");
        c.put("b", 2, 7);
        c.put("c", 3, 7);
        assert_eq!(c.get(&"a", 7), None, "capacity reached: cleared");
        assert_eq!(c.get(&"c", 7), Some(3));
        let z: Recent<&str, i32, u64> = Recent::new(Duration::ZERO, 2);
        z.put("a", 1, 7);
        assert_eq!(z.get(&"a", 7), None, "expired");
    }
}
