//! Per-tenant request quotas: a token bucket per tenant, kept in memory per instance.
//!
//! Rule: a tenant's bucket holds at most `burst` tokens and gains `rate_per_second` tokens a
//! second; each request takes one. A request that finds less than one token is refused with the
//! whole seconds until a token is there again (`Retry-After`, rounded up, at least 1).
//!
//! Scope: the buckets live in one execution environment (a warm Lambda instance), so a tenant
//! spread over N concurrent instances can get up to N times its quota. API Gateway's per-route
//! throttles bound the total; a quota across instances would need a shared counter
//! (a conditional DynamoDB update per request or per batch of tokens).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// How many requests a tenant may make: sustained rate and burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaConfig {
    pub rate_per_second: u32,
    pub burst: u32,
}

/// The template's defaults (`TenantRequestsPerSecond`, `TenantRequestBurst`).
impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            rate_per_second: 20,
            burst: 40,
        }
    }
}

/// A request over the quota: retry after this many whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after_secs: u64,
}

/// One tenant's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(config: QuotaConfig, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(config.burst.max(1)),
            at: now,
        }
    }

    /// Takes one token at `now`, or says how long until one is there.
    pub fn take(&mut self, config: QuotaConfig, now: Instant) -> Result<(), RateLimited> {
        self.refill(config, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(RateLimited {
                retry_after_secs: retry_after_secs(1.0 - self.tokens, config.rate_per_second),
            })
        }
    }

    /// Whether the bucket is full at `now` (then it is the same as a new one and can be dropped).
    pub fn is_full(&self, config: QuotaConfig, now: Instant) -> bool {
        let mut copy = *self;
        copy.refill(config, now);
        copy.tokens >= f64::from(config.burst.max(1))
    }

    fn refill(&mut self, config: QuotaConfig, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let burst = f64::from(config.burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(config.rate_per_second.max(1))).min(burst);
        // Time never runs backwards for a bucket (an older `now` changes nothing).
        if now > self.at {
            self.at = now;
        }
    }
}

/// Whole seconds until `missing` tokens have refilled at `rate_per_second`: rounded up, at
/// least 1 (`Retry-After: 0` would invite an immediate retry that fails again).
pub fn retry_after_secs(missing: f64, rate_per_second: u32) -> u64 {
    let secs = missing.max(0.0) / f64::from(rate_per_second.max(1));
    // A float a hair above a whole number still rounds up: a retry on the dot must succeed.
    (secs.ceil() as u64).max(1)
}

/// Every tenant's bucket in this instance. Thread-safe behind one mutex (held for a few
/// arithmetic operations, never across an `await`). At most `capacity` buckets: when full, the
/// buckets that have refilled completely are dropped (they equal new ones), and if that frees
/// nothing the map starts over (a tenant may then get one extra burst; memory stays bounded).
#[derive(Debug)]
pub struct TenantQuotas {
    config: QuotaConfig,
    buckets: Mutex<HashMap<String, TokenBucket>>,
    capacity: usize,
}

/// Buckets kept per instance before full ones are dropped.
pub const DEFAULT_QUOTA_CAPACITY: usize = 10_000;

impl TenantQuotas {
    pub fn new(config: QuotaConfig) -> Self {
        Self::with_capacity(config, DEFAULT_QUOTA_CAPACITY)
    }

    pub fn with_capacity(config: QuotaConfig, capacity: usize) -> Self {
        TenantQuotas {
            config,
            buckets: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn config(&self) -> QuotaConfig {
        self.config
    }

    /// Takes one request of `tenant_id`'s quota now.
    pub fn check(&self, tenant_id: &str) -> Result<(), RateLimited> {
        self.check_at(tenant_id, Instant::now())
    }

    pub fn check_at(&self, tenant_id: &str, now: Instant) -> Result<(), RateLimited> {
        let config = self.config;
        let mut buckets = self.lock();
        if let Some(bucket) = buckets.get_mut(tenant_id) {
            return bucket.take(config, now);
        }
        if buckets.len() >= self.capacity {
            buckets.retain(|_, b| !b.is_full(config, now));
            if buckets.len() >= self.capacity {
                buckets.clear();
            }
        }
        let mut bucket = TokenBucket::full(config, now);
        let outcome = bucket.take(config, now);
        buckets.insert(tenant_id.to_owned(), bucket);
        outcome
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TokenBucket>> {
        // A panic aborts the process (release profile): a poisoned map holds nothing worth refusing.
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CONFIG: QuotaConfig = QuotaConfig {
        rate_per_second: 2,
        burst: 5,
    };

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses() {
        let quotas = TenantQuotas::new(CONFIG);
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(quotas.check_at("t1", t0), Ok(()), "request {i} of the burst");
        }
        // Empty: one token needs 0.5 s at 2/s → Retry-After rounds up to 1.
        assert_eq!(quotas.check_at("t1", t0), Err(RateLimited { retry_after_secs: 1 }));
    }

    #[test]
    fn tokens_refill_at_the_rate_up_to_the_burst() {
        let quotas = TenantQuotas::new(CONFIG);
        let t0 = Instant::now();
        for _ in 0..5 {
            quotas.check_at("t1", t0).unwrap();
        }
        // 0.5 s later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(quotas.check_at("t1", t1), Ok(()));
        assert!(quotas.check_at("t1", t1).is_err());
        // A long pause refills to the burst, never beyond it.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(quotas.check_at("t1", t2), Ok(()));
        }
        assert!(quotas.check_at("t1", t2).is_err());
    }

    #[test]
    fn refused_requests_take_nothing() {
        let mut bucket = TokenBucket::full(CONFIG, Instant::now());
        let t0 = Instant::now();
        for _ in 0..5 {
            bucket.take(CONFIG, t0).unwrap();
        }
        for _ in 0..100 {
            assert!(bucket.take(CONFIG, t0).is_err());
        }
        assert_eq!(bucket.take(CONFIG, t0 + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_secs(1.0, 1), 1);
        assert_eq!(retry_after_secs(1.0, 100), 1);
        assert_eq!(retry_after_secs(0.0, 5), 1);
        assert_eq!(retry_after_secs(1.0, u32::MAX), 1);
        // Slow rates: one token per 2.5 s → 3; 1.0001 s → 2.
        let config = QuotaConfig {
            rate_per_second: 1,
            burst: 1,
        };
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(config, t0);
        bucket.take(config, t0).unwrap();
        assert_eq!(
            bucket.take(config, t0 + Duration::from_millis(100)),
            Err(RateLimited { retry_after_secs: 1 })
        );
        assert_eq!(retry_after_secs(2.5, 1), 3);
        assert_eq!(retry_after_secs(1.0001, 1), 2);
    }

    #[test]
    fn tenants_have_separate_buckets() {
        let quotas = TenantQuotas::new(CONFIG);
        let t0 = Instant::now();
        for _ in 0..5 {
            quotas.check_at("busy", t0).unwrap();
        }
        assert!(quotas.check_at("busy", t0).is_err());
        for _ in 0..5 {
            assert_eq!(quotas.check_at("quiet", t0), Ok(()));
        }
    }

    #[test]
    fn a_full_map_drops_refilled_buckets_first_then_starts_over() {
        let quotas = TenantQuotas::with_capacity(CONFIG, 2);
        let t0 = Instant::now();
        quotas.check_at("a", t0).unwrap();
        for _ in 0..5 {
            quotas.check_at("b", t0).unwrap();
        }
        // 1 s later "a" is full again (dropped), "b" is not (kept, still short of tokens).
        let t1 = t0 + Duration::from_secs(1);
        quotas.check_at("c", t1).unwrap();
        assert_eq!(quotas.len(), 2);
        for _ in 0..2 {
            quotas.check_at("b", t1).unwrap();
        }
        assert!(quotas.check_at("b", t1).is_err(), "b kept its state");
        // Full of busy buckets: starts over with the new one.
        quotas.check_at("d", t1).unwrap();
        assert_eq!(quotas.len(), 1);
    }
}
