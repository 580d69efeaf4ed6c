//! Fairness limits keyed by who is asking: [`Buckets`], a token bucket per
//! key (requests per second per source address, per node), and [`Slots`], a
//! cap on what one key holds at once (connections per source address).
//!
//! Both are bounded in memory: they track at most `cap` keys. Past that,
//! [`Buckets`] forgets the keys whose bucket has refilled (they are
//! indistinguishable from new ones) and, if that is not enough, all of them;
//! [`Slots`] refuses new keys, since forgetting a count would let a key
//! exceed its cap.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket per key: `rate` tokens a second, at most `burst` saved up.
pub struct Buckets<K> {
    map: Mutex<HashMap<K, (f64, Instant)>>,
    rate: f64,
    burst: f64,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Buckets refilling at `rate` a second up to `burst`, for at most `cap`
    /// keys. A `rate` of 0 admits everything.
    pub fn new(rate: f64, burst: u32, cap: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            rate,
            burst: f64::from(burst.max(1)),
            cap: cap.max(1),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        self.take_n(key, 1)
    }

    /// Takes `n` tokens for `key` at once (at most `burst` are asked: a
    /// larger `n` costs the whole burst), or says how long until they are
    /// available; nothing is taken then.
    pub fn take_n(&self, key: &K, n: u32) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let Ok(mut map) = self.map.lock() else {
            return Ok(());
        };
        if map.len() >= self.cap && !map.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if map.len() >= self.cap {
                map.clear();
            }
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((self.burst, now));
        let available =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        let want = f64::from(n.max(1)).min(self.burst);
        *at = now;
        if available >= want {
            *tokens = available - want;
            Ok(())
        } else {
            *tokens = available;
            Err(Duration::from_secs_f64((want - available) / self.rate))
        }
    }
}

/// At most `max` slots held per key at once.
pub struct Slots<K: Hash + Eq> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    max: usize,
    cap: usize,
}

/// One slot of a key, given back when dropped.
pub struct Slot<K: Hash + Eq> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock()
            && let Some(n) = held.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// At most `max` slots per key (0: no limit), for at most `cap` keys.
    pub fn new(max: usize, cap: usize) -> Self {
        Self {
            held: Arc::new(Mutex::new(HashMap::new())),
            max,
            cap: cap.max(1),
        }
    }

    /// A slot for `key`, unless it holds `max` already (or `cap` other keys
    /// hold slots).
    pub fn acquire(&self, key: &K) -> Option<Slot<K>> {
        let mut held = self.held.lock().ok()?;
        if self.max > 0 {
            let n = held.get(key).copied().unwrap_or(0);
            if n >= self.max || (n == 0 && held.len() >= self.cap) {
                return None;
            }
        }
        *held.entry(key.clone()).or_insert(0) += 1;
        Some(Slot {
            held: self.held.clone(),
            key: key.clone(),
        })
    }

    /// Slots `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        self.held
            .lock()
            .map(|h| h.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_past_the_burst_per_key() {
        let b: Buckets<u8> = Buckets::new(1.0, 3, 16);
        for _ in 0..3 {
            assert!(b.take(&1).is_ok());
        }
        let wait = b.take(&1).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        // Another key has its own bucket.
        assert!(b.take(&2).is_ok());
        // Rate 0: no limit.
        let open: Buckets<u8> = Buckets::new(0.0, 1, 1);
        assert!((0..100).all(|_| open.take(&1).is_ok()));
    }

    #[test]
    fn buckets_take_several_at_once() {
        let b: Buckets<u8> = Buckets::new(1.0, 10, 16);
        assert!(b.take_n(&1, 8).is_ok());
        // 2 left: 5 more are refused and take nothing.
        let wait = b.take_n(&1, 5).unwrap_err();
        assert!(
            wait > Duration::from_secs(2) && wait <= Duration::from_secs(3),
            "{wait:?}"
        );
        assert!(b.take_n(&1, 2).is_ok());
        // More than the burst costs the whole burst (never impossible).
        assert!(b.take_n(&2, 100).is_ok());
        assert!(b.take(&2).is_err());
    }

    #[test]
    fn buckets_stay_bounded() {
        let b: Buckets<u32> = Buckets::new(1.0, 1, 4);
        for k in 0..100 {
            assert!(b.take(&k).is_ok());
        }
        assert!(b.map.lock().unwrap().len() <= 4);
    }

    #[test]
    fn slots_cap_each_key_and_come_back() {
        let s: Slots<u8> = Slots::new(2, 2);
        let a = s.acquire(&1).unwrap();
        let _b = s.acquire(&1).unwrap();
        assert!(s.acquire(&1).is_none());
        let _c = s.acquire(&2).unwrap();
        // A third key while two hold slots: refused (the map is full).
        assert!(s.acquire(&3).is_none());
        drop(a);
        assert_eq!(s.held(&1), 1);
        assert!(s.acquire(&1).is_some());
    }
}
