//! Counter items and their attribute names, and a batch's facts folded into one delta per item.
//!
//! Items: one per tenant × granularity × bucket × WhatsApp number. Hour buckets are UTC hours
//! (`2026-12-01T13`); day buckets are days in the tenant's time zone (`2026-12-01`), so a day
//! report needs no re-bucketing and a time zone with a half-hour offset is exact too.
//!
//! Attribute names:
//! - `n:<metric>`: a count (`received`, `sent`, `delivered`, `read`, `failed`, `opened`,
//!   `resolved`, `opt_out`, `opt_in`, `first_response`, `resolution`);
//! - `n:<metric>|<dimension>=<value>`: the same count for one value of one dimension (`type`,
//!   `category`, `template`, `broadcast`, `code` — Meta's error code of a failure);
//! - `h:<histogram>|<bucket>`: a histogram bucket ([`super::histogram`]) of `first_response`
//!   or `resolution` times; `s:<histogram>`: their sum in seconds (for means).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::Fact;
use super::histogram::bucket_of;
use super::hours::BusinessHours;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    Hour,
    Day,
    /// Per-user items: a tenant day per user (the "number" of the key is the user id).
    UserDay,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day | Granularity::UserDay => "day",
        }
    }

    /// The sort-key letter of the granularity's partition.
    pub fn letter(self) -> &'static str {
        match self {
            Granularity::Hour => "H",
            Granularity::Day => "D",
            Granularity::UserDay => "U",
        }
    }
}

/// The bucket of an instant: its UTC hour, or its day in the tenant's time zone.
pub fn bucket(granularity: Granularity, at: DateTime<Utc>, tz: Tz) -> String {
    match granularity {
        Granularity::Hour => at.format("%Y-%m-%dT%H").to_string(),
        Granularity::Day | Granularity::UserDay => at.with_timezone(&tz).date_naive().format("%Y-%m-%d").to_string(),
    }
}

/// One counter item: which granularity, bucket and number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub granularity: Granularity,
    pub bucket: String,
    pub phone: String,
}

/// What to add to each counter item: attribute → amount.
pub type Deltas = BTreeMap<CounterKey, BTreeMap<String, u64>>;

/// How facts become counts: the tenant's time zone, business hours (durations count only them;
/// wall-clock time without) and whether per-user facts are counted at all.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub tz: Tz,
    pub hours: Option<&'a BusinessHours>,
    pub per_user: bool,
}

impl Rules<'_> {
    /// Wall-clock durations, per-user facts counted (an upper bound of the items touched).
    pub fn wall(tz: Tz) -> Rules<'static> {
        Rules {
            tz,
            hours: None,
            per_user: true,
        }
    }
}

/// A batch's facts folded per item: each fact adds to its hour item and its day item (a user's
/// fact to that user's day item, only with `per_user`); each duration adds to its histogram's
/// count, bucket and sum.
pub fn deltas<'a>(facts: impl IntoIterator<Item = &'a Fact>, rules: &Rules<'_>) -> Deltas {
    let (tz, hours) = (rules.tz, rules.hours);
    let mut out: Deltas = BTreeMap::new();
    for fact in facts {
        if fact.user.is_some() && !rules.per_user {
            continue;
        }
        let mut adds = fact.adds.clone();
        for span in &fact.durations {
            let seconds = match hours {
                Some(h) => h.seconds_between(span.from, span.to, tz),
                None => (span.to - span.from).num_seconds(),
            }
            .max(0) as u64;
            adds.push((count(&span.name), 1));
            adds.push((histogram_bucket(&span.name, bucket_of(seconds as f64)), 1));
            adds.push((histogram_sum(&span.name), seconds));
        }
        let (granularities, owner): (&[Granularity], &str) = match &fact.user {
            Some(user) => (&[Granularity::UserDay], user),
            None => (&[Granularity::Hour, Granularity::Day], &fact.phone),
        };
        for &granularity in granularities {
            let key = CounterKey {
                granularity,
                bucket: bucket(granularity, fact.at, tz),
                phone: owner.to_owned(),
            };
            let item = out.entry(key).or_default();
            for (name, amount) in &adds {
                *item.entry(name.clone()).or_default() += amount;
            }
        }
    }
    out
}

/// The counter items a batch's facts touch (how many updates it costs).
pub fn items_touched<'a>(facts: impl IntoIterator<Item = &'a Fact>, tz: Tz) -> usize {
    deltas(facts, &Rules::wall(tz)).len()
}

/// How a batch's facts are counted: the tenant's time zone (day buckets), business hours (for
/// response times) and when the counter items it touches expire (the tenant's `reports_days`
/// after their last update).
#[derive(Debug, Clone, PartialEq)]
pub struct Counting {
    pub time_zone: Tz,
    pub business_hours: Option<BusinessHours>,
    /// Per-user metrics are on (the tenant's `per_user_metrics`).
    pub per_user: bool,
    pub expires_at: DateTime<Utc>,
}

impl Counting {
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            tz: self.time_zone,
            hours: self.business_hours.as_ref(),
            per_user: self.per_user,
        }
    }
}

/// A counter item as read: its bucket, number and counter attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CounterRow {
    pub bucket: String,
    pub phone: String,
    pub values: BTreeMap<String, u64>,
}

pub fn count(metric: &str) -> String {
    format!("n:{metric}")
}

/// A dimension value as an attribute-name part: at most 64 characters, without the name's
/// separators.
pub fn count_by(metric: &str, dimension: &str, value: &str) -> String {
    let value: String = value
        .chars()
        .map(|c| if matches!(c, '|' | '=' | ':') { '_' } else { c })
        .take(64)
        .collect();
    format!("n:{metric}|{dimension}={value}")
}

pub fn histogram_bucket(histogram: &str, bucket: u32) -> String {
    format!("h:{histogram}|{bucket}")
}

pub fn histogram_sum(histogram: &str) -> String {
    format!("s:{histogram}")
}

/// Whether an attribute name is a counter attribute (the item's other attributes are keys,
/// bucket, number and expiry).
pub fn is_counter_attribute(name: &str) -> bool {
    name.starts_with("n:") || name.starts_with("h:") || name.starts_with("s:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_utc_and_days_are_the_tenants_across_dst() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // 23:30 EST on the eve of the spring change; 01:30 EST after midnight.
        assert_eq!(bucket(Granularity::Day, at("2026-03-08T04:30:00Z"), ny), "2026-03-07");
        assert_eq!(bucket(Granularity::Day, at("2026-03-08T05:30:00Z"), ny), "2026-03-08");
        // 03:30 EDT (after the jump) and 23:30 EDT, still the same day.
        assert_eq!(bucket(Granularity::Day, at("2026-03-08T07:30:00Z"), ny), "2026-03-08");
        assert_eq!(bucket(Granularity::Day, at("2026-03-09T03:30:00Z"), ny), "2026-03-08");
        // Autumn: 00:30 EDT and, an hour after 01:30 EDT, 01:30 EST again: one day.
        assert_eq!(bucket(Granularity::Day, at("2026-11-01T04:30:00Z"), ny), "2026-11-01");
        assert_eq!(bucket(Granularity::Day, at("2026-11-01T06:30:00Z"), ny), "2026-11-01");
        assert_eq!(bucket(Granularity::Day, at("2026-11-02T04:59:59Z"), ny), "2026-11-01");
        assert_eq!(bucket(Granularity::Day, at("2026-11-02T05:00:00Z"), ny), "2026-11-02");
        assert_eq!(
            bucket(Granularity::Hour, at("2026-11-01T06:30:00Z"), ny),
            "2026-11-01T06"
        );
        // A half-hour zone: its day starts at 18:30 UTC.
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(
            bucket(Granularity::Day, at("2026-12-01T18:29:00Z"), kolkata),
            "2026-12-01"
        );
        assert_eq!(
            bucket(Granularity::Day, at("2026-12-01T18:30:00Z"), kolkata),
            "2026-12-02"
        );
    }

    #[test]
    fn a_batch_folds_into_one_delta_per_item() {
        let fact = |at: &str, phone: &str, name: &str| {
            Fact::counts(
                at.parse().unwrap(),
                phone.into(),
                vec![(count(name), 1), (count_by(name, "type", "te|x=t"), 1)],
            )
        };
        let facts: Vec<Fact> = (0..1000)
            .map(|i| fact(&format!("2026-12-01T12:{:02}:00Z", i % 60), "1001", "received"))
            .chain([fact("2026-12-01T13:00:00Z", "1001", "sent")])
            .collect();
        let d = deltas(&facts, &Rules::wall(Tz::UTC));
        // Two hours and one day of one number: three items for 1,001 facts.
        assert_eq!(d.len(), 3);
        let day = CounterKey {
            granularity: Granularity::Day,
            bucket: "2026-12-01".into(),
            phone: "1001".into(),
        };
        assert_eq!(d[&day]["n:received"], 1000);
        assert_eq!(d[&day]["n:received|type=te_x_t"], 1000);
        assert_eq!(d[&day]["n:sent"], 1);
        assert!(d.values().flat_map(|v| v.keys()).all(|k| is_counter_attribute(k)));
    }

    #[test]
    fn durations_count_in_business_hours_when_the_tenant_set_them() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let mut fact = Fact::counts(at("2026-12-07T08:05:00Z"), "1001".into(), Vec::new());
        // Friday 16:55 → Monday 09:05 in Berlin.
        fact.durations.push(super::super::Timed {
            name: "first_response".into(),
            from: at("2026-12-04T15:55:00Z"),
            to: at("2026-12-07T08:05:00Z"),
        });
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let hours: BusinessHours = serde_json::from_value(serde_json::json!({
            "mon": ["09:00", "17:00"], "fri": ["09:00", "17:00"]
        }))
        .unwrap();
        let day = |d: &Deltas| {
            d.iter()
                .find(|(k, _)| k.granularity == Granularity::Day)
                .unwrap()
                .1
                .clone()
        };
        let rules = |hours| Rules {
            tz: berlin,
            hours,
            per_user: false,
        };
        let open = day(&deltas([&fact], &rules(Some(&hours))));
        assert_eq!(open["s:first_response"], 600);
        assert_eq!(open[&histogram_bucket("first_response", bucket_of(600.0))], 1);
        assert_eq!(open["n:first_response"], 1);
        let wall = day(&deltas([&fact], &rules(None)));
        assert_eq!(wall["s:first_response"], 231_000);
        // A user's fact: only with per-user metrics on, and only in the user's own item.
        let mut theirs = fact.clone();
        theirs.user = Some("u1".into());
        assert!(deltas([&theirs], &rules(None)).is_empty());
        let on = deltas([&theirs], &Rules::wall(berlin));
        assert_eq!(
            on.keys().map(|k| (k.granularity, k.phone.as_str())).collect::<Vec<_>>(),
            [(Granularity::UserDay, "u1")]
        );
    }
}
