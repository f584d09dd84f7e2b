//! Small statistics over measurements.

use serde::{Deserialize, Serialize};

/// Median of the values (mean of the middle two for an even count); `NaN` when empty.
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// Linear-interpolated percentile `p` (0–100).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN in measurements"));
    let rank = (p / 100.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// How a rate limiter did, judged from the arrival times of what it let through.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateAccuracy {
    /// Whole aligned seconds inside the steady window.
    pub seconds: usize,
    pub sends_in_window: usize,
    /// Sends per second over the steady window.
    pub sustained_per_s: f64,
    /// (sustained − limit) / limit, in percent.
    pub deviation_pct: f64,
    pub max_aligned_second: u32,
    pub min_aligned_second: u32,
    /// Most sends within any 1-second interval (sliding, not aligned).
    pub max_sliding_second: u32,
}

/// Counts per aligned second over `[from_s, to_s)` (Unix seconds) of arrival times in µs.
pub fn per_second(arrivals_us: &[i64], from_s: i64, to_s: i64) -> Vec<u32> {
    let mut counts = vec![0u32; (to_s - from_s).max(0) as usize];
    for &t in arrivals_us {
        let s = t.div_euclid(1_000_000);
        if s >= from_s && s < to_s {
            counts[(s - from_s) as usize] += 1;
        }
    }
    counts
}

/// Most arrivals within any half-open interval of `width_us`.
pub fn max_in_sliding_window(arrivals_us: &[i64], width_us: i64) -> u32 {
    let mut v = arrivals_us.to_vec();
    v.sort_unstable();
    let mut best = 0usize;
    let mut start = 0usize;
    for end in 0..v.len() {
        while v[end] - v[start] >= width_us {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best as u32
}

/// Judges arrivals against `limit`/s over the aligned seconds `[from_s, to_s)`.
pub fn rate_accuracy(arrivals_us: &[i64], limit: u32, from_s: i64, to_s: i64) -> RateAccuracy {
    let counts = per_second(arrivals_us, from_s, to_s);
    let total: u64 = counts.iter().map(|&c| c as u64).sum();
    let seconds = counts.len();
    let sustained = if seconds == 0 {
        0.0
    } else {
        total as f64 / seconds as f64
    };
    RateAccuracy {
        seconds,
        sends_in_window: total as usize,
        sustained_per_s: sustained,
        deviation_pct: if limit == 0 {
            0.0
        } else {
            (sustained - limit as f64) / limit as f64 * 100.0
        },
        max_aligned_second: counts.iter().copied().max().unwrap_or(0),
        min_aligned_second: counts.iter().copied().min().unwrap_or(0),
        max_sliding_second: max_in_sliding_window(arrivals_us, 1_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn sliding_window_catches_bursts_across_a_boundary() {
        // 3 at the end of second 10, 3 at the start of second 11: aligned max 3, sliding 6.
        let t = |s: i64, ms: i64| s * 1_000_000 + ms * 1000;
        let arrivals = [t(10, 900), t(10, 950), t(10, 990), t(11, 10), t(11, 20), t(11, 30)];
        assert_eq!(max_in_sliding_window(&arrivals, 1_000_000), 6);
        let acc = rate_accuracy(&arrivals, 3, 10, 12);
        assert_eq!(acc.max_aligned_second, 3);
        assert_eq!(acc.max_sliding_second, 6);
        assert_eq!(acc.sustained_per_s, 3.0);
        assert_eq!(acc.deviation_pct, 0.0);
    }

    #[test]
    fn per_second_ignores_arrivals_outside_the_window() {
        let arrivals = [5_000_000, 6_500_000, 6_600_000, 9_000_000];
        assert_eq!(per_second(&arrivals, 6, 8), vec![2, 0]);
    }
}
