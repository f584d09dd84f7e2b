//! How fast and how much a broadcast may send: its share of the number's rate (the rest is
//! left to conversations), the portfolio's 24 h messaging limit, and the retry schedule of a
//! recipient Meta held back (`131049`).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Share of the number's send rate broadcasts use unless the tenant sets another.
pub const DEFAULT_RATE_SHARE_PCT: u8 = 50;
/// Meta's messaging limit of a new business portfolio (unique users per moving 24 h).
pub const DEFAULT_MESSAGING_LIMIT: u64 = 250;
/// Meta's code for marketing held back for a user ("healthy ecosystem engagement").
pub const HELD_BACK_CODE: i64 = 131049;
/// Delays before each retry of a held-back recipient; after the last, it is `capped`. Meta
/// asks not to retry at once: the first retry waits a day.
pub const HELD_BACK_RETRY_HOURS: [i64; 2] = [24, 72];

/// A tenant's broadcast settings (`GET/PUT /v1/settings/broadcasts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastSettings {
    /// Whether `agent` keys may create and control broadcasts (else `admin` only).
    #[serde(default)]
    pub agents_may_broadcast: bool,
    /// Percent (1–100) of the number's send rate broadcasts may use.
    #[serde(default = "default_share")]
    pub rate_share_pct: u8,
    /// Unique users per moving 24 h the portfolio may reach outside a service window
    /// (`None`: unlimited); set by Meta's `business_capability_update` webhook.
    #[serde(default = "default_limit")]
    pub messaging_limit: Option<u64>,
}

fn default_share() -> u8 {
    DEFAULT_RATE_SHARE_PCT
}

fn default_limit() -> Option<u64> {
    Some(DEFAULT_MESSAGING_LIMIT)
}

impl Default for BroadcastSettings {
    fn default() -> Self {
        BroadcastSettings {
            agents_may_broadcast: false,
            rate_share_pct: DEFAULT_RATE_SHARE_PCT,
            messaging_limit: Some(DEFAULT_MESSAGING_LIMIT),
        }
    }
}

/// The messaging limit a `business_capability_update` change value reports (`Some(None)`:
/// unlimited; `None`: the value names no limit). `max_daily_conversation_per_phone` is the
/// older field Meta is removing.
pub fn capability_limit(value: &Value) -> Option<Option<u64>> {
    let raw = value
        .get("max_daily_conversations_per_business")
        .or_else(|| value.get("max_daily_conversation_per_phone"))?;
    let n = raw.as_i64().or_else(|| raw.as_str().and_then(|s| s.parse().ok()))?;
    match n {
        -1 => Some(None),
        n if n > 0 => Some(Some(n as u64)),
        _ => None,
    }
}

/// Sends per second a broadcast may make on a number of `rate_per_second` (at least one).
pub fn broadcast_rate(rate_per_second: u32, share_pct: u8) -> u32 {
    let share = u32::from(share_pct.clamp(1, 100));
    (rate_per_second * share / 100).max(1)
}

/// How many sends one engine run of `run_secs` may hand to the sender, and the delay of the
/// `i`-th (seconds from now): spread evenly at the broadcast's rate, so the sender's shared
/// per-number schedule sees the broadcast's share and not a burst.
pub fn run_quota(rate: u32, run_secs: u32) -> u64 {
    u64::from(rate) * u64::from(run_secs)
}

pub fn send_delay_secs(i: u64, rate: u32) -> u32 {
    (i / u64::from(rate.max(1))).min(900) as u32
}

/// Unique users reached per hour (epoch hour → count): the moving 24 h window.
pub type UsageHours = BTreeMap<i64, u64>;

fn hour_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(3600)
}

/// [`UsageHours`] with its hour keys as strings, as a DynamoDB map must hold them.
pub mod usage_hours_as_strings {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::UsageHours;

    pub fn serialize<S: Serializer>(hours: &UsageHours, s: S) -> Result<S::Ok, S::Error> {
        let keyed: BTreeMap<String, u64> = hours.iter().map(|(h, n)| (h.to_string(), *n)).collect();
        keyed.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UsageHours, D::Error> {
        let keyed = BTreeMap::<String, u64>::deserialize(d)?;
        keyed
            .into_iter()
            .map(|(h, n)| h.parse().map(|h| (h, n)).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Users reached in the 24 h before `now` (the hour buckets that overlap it).
pub fn used_in_window(usage: &UsageHours, now: DateTime<Utc>) -> u64 {
    let from = hour_of(now) - 23;
    usage.range(from..).map(|(_, n)| n).sum()
}

/// Drops buckets older than the window.
pub fn prune(usage: &mut UsageHours, now: DateTime<Utc>) {
    let from = hour_of(now) - 23;
    usage.retain(|h, _| *h >= from);
}

/// How many more users may be reached now (`u64::MAX` when unlimited).
pub fn budget_left(limit: Option<u64>, usage: &UsageHours, now: DateTime<Utc>) -> u64 {
    match limit {
        None => u64::MAX,
        Some(limit) => limit.saturating_sub(used_in_window(usage, now)),
    }
}

/// When the window next frees room: the end of the oldest bucket still in it.
pub fn window_reopens(usage: &UsageHours, now: DateTime<Utc>) -> DateTime<Utc> {
    let from = hour_of(now) - 23;
    let oldest = usage.range(from..).next().map_or(hour_of(now), |(h, _)| *h);
    DateTime::from_timestamp((oldest + 24) * 3600, 0).unwrap_or(now + Duration::hours(1))
}

/// Records `n` users reached at `now`.
pub fn record_use(usage: &mut UsageHours, now: DateTime<Utc>, n: u64) {
    prune(usage, now);
    *usage.entry(hour_of(now)).or_default() += n;
}

/// What to do with a recipient Meta held back after `attempts` earlier sends of it: retry at
/// the returned time, or give up (`None`: `capped`).
pub fn held_back_retry(attempts: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    HELD_BACK_RETRY_HOURS
        .get(attempts.saturating_sub(1) as usize)
        .map(|h| now + Duration::hours(*h))
}

/// Whether a contact counts against the messaging limit: Meta counts unique users reached
/// outside a customer-service window.
pub fn counts_against_limit(last_inbound_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_inbound_at.is_none_or(|t| now - t >= Duration::hours(crate::sending::SERVICE_WINDOW_HOURS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_broadcast_leaves_the_rest_of_the_rate_to_conversations() {
        assert_eq!(broadcast_rate(80, 50), 40);
        assert_eq!(broadcast_rate(1000, 75), 750);
        assert_eq!(
            broadcast_rate(80, 0),
            1,
            "a share is at least 1 %, and a rate at least 1/s"
        );
        assert_eq!(broadcast_rate(80, 200), 80, "never more than the number's rate");
        assert_eq!(run_quota(40, 50), 2000);
        // Spread evenly: 40 per second of delay, capped at SQS's 15 minutes.
        assert_eq!(send_delay_secs(0, 40), 0);
        assert_eq!(send_delay_secs(39, 40), 0);
        assert_eq!(send_delay_secs(40, 40), 1);
        assert_eq!(send_delay_secs(1999, 40), 49);
        assert_eq!(send_delay_secs(10_000_000, 1), 900);
        for i in 0..2000u64 {
            let in_second = (0..2000u64)
                .filter(|j| send_delay_secs(*j, 40) == send_delay_secs(i, 40))
                .count();
            assert!(in_second <= 40);
        }
    }

    #[test]
    fn the_messaging_limit_is_a_moving_24_hour_window() {
        let t0 = DateTime::parse_from_rfc3339("2026-03-01T10:30:00Z").unwrap().to_utc();
        let mut usage = UsageHours::new();
        assert_eq!(budget_left(Some(250), &usage, t0), 250);
        assert_eq!(budget_left(None, &usage, t0), u64::MAX);
        record_use(&mut usage, t0, 200);
        record_use(&mut usage, t0 + Duration::hours(5), 50);
        assert_eq!(budget_left(Some(250), &usage, t0 + Duration::hours(6)), 0);
        // The first bucket (10:00–11:00) leaves the window at 10:00 the next day.
        assert_eq!(
            window_reopens(&usage, t0 + Duration::hours(6)),
            t0 - Duration::minutes(30) + Duration::hours(24)
        );
        assert_eq!(budget_left(Some(250), &usage, t0 + Duration::hours(24)), 200);
        assert_eq!(budget_left(Some(250), &usage, t0 + Duration::hours(29)), 250);
        record_use(&mut usage, t0 + Duration::hours(30), 1);
        assert_eq!(usage.len(), 1, "old buckets are pruned");
    }

    #[test]
    fn capability_updates_set_the_limit() {
        assert_eq!(
            capability_limit(&json!({"max_daily_conversations_per_business": 2000})),
            Some(Some(2000))
        );
        assert_eq!(
            capability_limit(&json!({"max_daily_conversations_per_business": -1})),
            Some(None)
        );
        assert_eq!(
            capability_limit(&json!({"max_daily_conversation_per_phone": "10000"})),
            Some(Some(10000))
        );
        assert_eq!(capability_limit(&json!({"max_phone_numbers_per_waba": 2})), None);
        assert_eq!(
            capability_limit(&json!({"max_daily_conversations_per_business": 0})),
            None
        );
    }

    #[test]
    fn held_back_recipients_are_retried_later_then_capped() {
        let now = Utc::now();
        assert_eq!(held_back_retry(1, now), Some(now + Duration::hours(24)));
        assert_eq!(held_back_retry(2, now), Some(now + Duration::hours(72)));
        assert_eq!(held_back_retry(3, now), None);
        assert!(counts_against_limit(None, now));
        assert!(!counts_against_limit(Some(now - Duration::hours(2)), now));
        assert!(counts_against_limit(Some(now - Duration::hours(25)), now));
    }
}
