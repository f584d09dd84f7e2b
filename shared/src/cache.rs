//! A small per-instance memory: a bounded map whose entries expire after a fixed time.
//!
//! A warm Lambda execution environment serves many invocations; remembering a lookup across
//! them saves a request each time. Contract: [`TtlCache::get`] never returns an entry older
//! than the cache's TTL; the cache never holds more than its capacity (when full it drops the
//! expired entries, and starts over if that frees nothing — a memory, not a store of record);
//! values are cloned out, so no lock is held across an `await`. Thread-safe behind one mutex.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    /// At most `capacity` entries, each valid for `ttl` after it was inserted.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// At most `capacity` entries that never expire: for facts that cannot go stale, or whose
    /// use is checked elsewhere (a conditional write).
    pub fn without_expiry(capacity: usize) -> Self {
        TtlCache::new(capacity, Duration::MAX)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_at(key, Instant::now())
    }

    pub fn insert(&self, key: K, value: V) {
        self.insert_at(key, value, Instant::now());
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(key);
    }

    fn get_at<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.lock();
        let (value, at) = entries.get(key)?;
        self.fresh(*at, now).then(|| value.clone())
    }

    fn insert_at(&self, key: K, value: V, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, at)| self.fresh(*at, now));
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (value, now));
    }

    fn fresh(&self, inserted: Instant, now: Instant) -> bool {
        now.saturating_duration_since(inserted) < self.ttl
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A panic aborts the process (release profile), so a poisoned lock holds no half-done
        // update worth refusing.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = TtlCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert_at("a", 1, t0);
        assert_eq!(cache.get_at("a", t0), Some(1));
        assert_eq!(cache.get_at("a", t0 + Duration::from_secs(59)), Some(1));
        assert_eq!(cache.get_at("a", t0 + Duration::from_secs(60)), None);
        assert_eq!(cache.get_at("b", t0), None);
    }

    #[test]
    fn reinserting_refreshes_and_remove_forgets() {
        let cache = TtlCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert_at("a", 1, t0);
        cache.insert_at("a", 2, t0 + Duration::from_secs(50));
        assert_eq!(cache.get_at("a", t0 + Duration::from_secs(100)), Some(2));
        cache.remove("a");
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_then_starts_over() {
        let cache = TtlCache::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert_at("old", 0, t0);
        cache.insert_at("a", 1, t0 + Duration::from_secs(30));
        cache.insert_at("b", 2, t0 + Duration::from_secs(30));
        // Full; "old" has expired by now and makes room.
        let t1 = t0 + Duration::from_secs(70);
        cache.insert_at("c", 3, t1);
        assert_eq!(cache.len(), 3);
        assert_eq!((cache.get_at("a", t1), cache.get_at("c", t1)), (Some(1), Some(3)));
        // Full of fresh entries: starts over with the new one.
        cache.insert_at("d", 4, t1);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get_at("d", t1), Some(4));
        // Overwriting a present key never counts as growth.
        cache.insert_at("d", 5, t1);
        assert_eq!(cache.get_at("d", t1), Some(5));
    }

    #[test]
    fn without_expiry_keeps_entries_until_full() {
        let cache = TtlCache::without_expiry(2);
        let t0 = Instant::now();
        cache.insert_at(1, "x", t0);
        assert_eq!(cache.get_at(&1, t0 + Duration::from_secs(86_400 * 365)), Some("x"));
        cache.insert_at(2, "y", t0);
        cache.insert_at(3, "z", t0);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&3), Some("z"));
    }
}
