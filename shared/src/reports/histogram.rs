//! Fixed log-scale histograms of durations: bucket `b` holds the durations in
//! `(2^((b-1)/4), 2^(b/4)]` seconds (bucket 0 holds everything up to one second), so four
//! buckets per doubling, about 19 % wide each, and [`MAX_BUCKET`] reaches past a year. A
//! percentile is the upper bound of the bucket that holds it: never below the exact nearest-rank
//! percentile and at most one bucket (a factor 2^(1/4)) above it. Counts per bucket are all a
//! counter item stores, so p50/p90/p99 come without keeping any raw duration.

use std::collections::BTreeMap;

/// Buckets per doubling of the duration.
pub const PER_DOUBLING: u32 = 4;
/// The last bucket: 2^(100/4) s ≈ 388 days; longer durations are counted in it.
pub const MAX_BUCKET: u32 = 100;

/// The upper bound of bucket `b`, in seconds.
pub fn upper_bound(b: u32) -> f64 {
    2f64.powf(f64::from(b) / f64::from(PER_DOUBLING))
}

/// The bucket of a duration in seconds (negative durations, clock skew, count as zero).
pub fn bucket_of(seconds: f64) -> u32 {
    if seconds.is_nan() || seconds <= 1.0 {
        return 0;
    }
    let estimate = (seconds.log2() * f64::from(PER_DOUBLING))
        .ceil()
        .clamp(0.0, f64::from(MAX_BUCKET)) as u32;
    // Float error at exact powers: settle on the smallest bucket whose bound holds the value.
    let mut b = estimate;
    while b < MAX_BUCKET && upper_bound(b) < seconds {
        b += 1;
    }
    while b > 0 && upper_bound(b - 1) >= seconds {
        b -= 1;
    }
    b
}

/// A histogram: bucket → count, with the count and sum of the durations it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: BTreeMap<u32, u64>,
    pub count: u64,
    pub sum_seconds: u64,
}

impl Histogram {
    pub fn record(&mut self, seconds: u64) {
        *self.buckets.entry(bucket_of(seconds as f64)).or_default() += 1;
        self.count += 1;
        self.sum_seconds += seconds;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }

    /// The `q`-quantile (0 < q ≤ 1) as the upper bound of its bucket, by nearest rank; `None`
    /// when empty.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.values().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(*b));
            }
        }
        None
    }

    /// The mean in seconds; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_seconds as f64 / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_bounds() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(1.0), 0);
        assert_eq!(bucket_of(-5.0), 0);
        assert_eq!(bucket_of(2.0), 4);
        assert_eq!(bucket_of(2.0001), 5);
        assert_eq!(bucket_of(4.0), 8);
        assert_eq!(bucket_of(1e12), MAX_BUCKET);
        for b in 1..MAX_BUCKET {
            assert_eq!(bucket_of(upper_bound(b)), b, "{b}");
            assert_eq!(bucket_of(upper_bound(b) * 1.0001), b + 1, "{b}");
        }
    }

    /// Nearest-rank percentile of the raw values.
    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn percentiles_are_within_one_bucket_of_the_exact_ones_on_a_generated_set() {
        // A deterministic generator (xorshift) over durations from a second to two weeks,
        // skewed towards short ones as response times are.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for size in [1usize, 2, 7, 100, 5_000] {
            let mut values: Vec<u64> = (0..size)
                .map(|_| {
                    let exponent = (next() % 2_000) as f64 / 100.0; // 2^0 .. 2^20 s
                    2f64.powf(exponent) as u64
                })
                .collect();
            let mut h = Histogram::default();
            for v in &values {
                h.record(*v);
            }
            values.sort_unstable();
            for q in [0.5, 0.9, 0.99, 1.0] {
                let exact = exact(&values, q);
                let estimate = h.percentile(q).unwrap();
                assert!(estimate >= exact as f64, "q {q}: {estimate} below {exact}");
                assert_eq!(bucket_of(estimate), bucket_of(exact as f64), "q {q} size {size}");
                assert!(estimate <= (exact.max(1) as f64) * upper_bound(1) + 1e-9);
            }
            assert_eq!(h.count, size as u64);
            assert_eq!(h.sum_seconds, values.iter().sum::<u64>());
        }
        assert_eq!(Histogram::default().percentile(0.5), None);
    }

    #[test]
    fn merged_histograms_equal_one_over_all_values() {
        let (mut a, mut b, mut all) = (Histogram::default(), Histogram::default(), Histogram::default());
        for v in [3, 60, 61, 3600] {
            a.record(v);
            all.record(v);
        }
        for v in [1, 86_400] {
            b.record(v);
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(a.mean(), Some((3 + 60 + 61 + 3600 + 1 + 86_400) as f64 / 6.0));
    }
}
