//! When a failed delivery is tried again, and what an answer means (Standard Webhooks,
//! "Deliverability and reliability"). The schedule is published in docs/events.md.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// Delay before each attempt after the first, in seconds: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
/// 10 h — eight attempts over about 28 hours.
pub const RETRY_DELAYS_SECS: [u64; 7] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];

/// Attempts of one delivery in all.
pub const MAX_ATTEMPTS: u32 = RETRY_DELAYS_SECS.len() as u32 + 1;

/// A request that has not answered within this is a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An endpoint failing without a single success for this long is disabled.
pub const DISABLE_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(5);

/// Longest `Retry-After` honoured (a larger one is read as this).
const MAX_RETRY_AFTER_SECS: u64 = 36_000;

/// What an endpoint's answer means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `2xx`.
    Delivered,
    /// `410 Gone`: the receiver wants nothing more; the endpoint is disabled.
    Gone,
    /// Anything else (timeouts, connection errors, `3xx`, other statuses); `429`/`503` may name
    /// the earliest time to try again.
    Failed { retry_after_secs: Option<u64> },
}

/// The verdict on an HTTP status and its `Retry-After` header (seconds; an HTTP date is
/// ignored and the schedule applies).
pub fn verdict(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        429 | 503 => Verdict::Failed {
            retry_after_secs: retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| s.min(MAX_RETRY_AFTER_SECS)),
        },
        _ => Verdict::Failed { retry_after_secs: None },
    }
}

/// The delay before attempt `attempt + 1` after attempt `attempt` (1-based) failed: the
/// schedule's with ±10 % jitter, never earlier than `Retry-After`; `None` when the attempts are
/// used up.
pub fn next_delay(attempt: u32, retry_after_secs: Option<u64>) -> Option<Duration> {
    let base = *RETRY_DELAYS_SECS.get(attempt.checked_sub(1)? as usize)?;
    let jittered = (base as f64 * rand::rng().random_range(0.9..=1.1)).round() as u64;
    Some(Duration::from_secs(jittered.max(retry_after_secs.unwrap_or(0))))
}

/// Whether an endpoint failing since `failing_since` is to be disabled at `now`.
pub fn should_disable(failing_since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    failing_since.is_some_and(|since| now - since >= DISABLE_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_spec() {
        assert_eq!(verdict(200, None), Verdict::Delivered);
        assert_eq!(verdict(204, None), Verdict::Delivered);
        assert_eq!(verdict(410, None), Verdict::Gone);
        assert_eq!(verdict(301, None), Verdict::Failed { retry_after_secs: None });
        assert_eq!(verdict(500, Some("5")), Verdict::Failed { retry_after_secs: None });
        assert_eq!(
            verdict(429, Some("120")),
            Verdict::Failed {
                retry_after_secs: Some(120)
            }
        );
        assert_eq!(
            verdict(503, Some(" 7 ")),
            Verdict::Failed {
                retry_after_secs: Some(7)
            }
        );
        assert_eq!(
            verdict(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Verdict::Failed { retry_after_secs: None }
        );
        assert_eq!(
            verdict(429, Some("999999")),
            Verdict::Failed {
                retry_after_secs: Some(36_000)
            }
        );
    }

    #[test]
    fn the_schedule_has_jitter_honours_retry_after_and_ends() {
        for (i, base) in RETRY_DELAYS_SECS.iter().enumerate() {
            let d = next_delay(i as u32 + 1, None).unwrap().as_secs();
            assert!(
                d as f64 >= *base as f64 * 0.9 - 1.0 && d as f64 <= *base as f64 * 1.1 + 1.0,
                "{i}: {d}"
            );
        }
        assert_eq!(next_delay(MAX_ATTEMPTS, None), None);
        assert_eq!(next_delay(0, None), None);
        assert!(next_delay(1, Some(60)).unwrap().as_secs() >= 60);
        assert_eq!(MAX_ATTEMPTS, 8);
    }

    #[test]
    fn five_days_of_failure_disables() {
        let now = Utc::now();
        assert!(!should_disable(None, now));
        assert!(!should_disable(Some(now - chrono::TimeDelta::days(4)), now));
        assert!(should_disable(Some(now - chrono::TimeDelta::days(5)), now));
    }
}
