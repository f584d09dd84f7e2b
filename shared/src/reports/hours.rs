//! Business hours: the tenant's weekly opening hours in its time zone, and how much of a span of
//! time falls inside them (response and resolution times count only that when the tenant set
//! hours: a message at Friday 17:55 answered Monday 09:05 waited 10 minutes, not 63 hours).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Opening hours per weekday (`mon` … `sun`), each `["09:00", "17:30"]` (start before end, local
/// time); a day not listed is closed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BusinessHours(pub BTreeMap<String, [String; 2]>);

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// Longest span measured day by day; beyond it the rest counts as wall-clock time (a year of
/// waiting is an outlier whichever way it is counted).
const MAX_DAYS: i64 = 400;

/// `HH:MM` as a time of day.
pub(crate) fn time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

impl BusinessHours {
    pub fn validate(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("business_hours needs at least one day (or null for none)".into());
        }
        for (day, [start, end]) in &self.0 {
            if !DAYS.iter().any(|(d, _)| d == day) {
                return Err(format!("business_hours: unknown day {day:?} (mon … sun)"));
            }
            match (time(start), time(end)) {
                (Some(s), Some(e)) if s < e => {}
                _ => {
                    return Err(format!(
                        "business_hours.{day}: [\"HH:MM\", \"HH:MM\"], start before end"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The day's opening and closing time (`None`: closed).
    pub fn window(&self, weekday: Weekday) -> Option<(NaiveTime, NaiveTime)> {
        let (name, _) = DAYS.iter().find(|(_, w)| *w == weekday)?;
        let [start, end] = self.0.get(*name)?;
        Some((time(start)?, time(end)?))
    }

    /// Whether `at` falls inside the hours, read on the local clock of `tz` (so DST moves the
    /// opening instant with the clock, as the business does).
    pub fn open_at(&self, at: DateTime<Utc>, tz: Tz) -> bool {
        let local = at.with_timezone(&tz);
        self.window(local.weekday())
            .is_some_and(|(open, close)| (open..close).contains(&local.time()))
    }

    /// The seconds of `[from, to)` inside the hours, in `tz`.
    pub fn seconds_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> i64 {
        if to <= from {
            return 0;
        }
        let first = from.with_timezone(&tz).date_naive();
        let last = to.with_timezone(&tz).date_naive();
        let mut total = 0;
        let mut day = first;
        let mut n = 0;
        while day <= last {
            if n == MAX_DAYS {
                return total + (to - local(tz, day, NaiveTime::MIN).max(from)).num_seconds().max(0);
            }
            if let Some((open, close)) = self.window(day.weekday()) {
                let (open, close) = (local(tz, day, open), local(tz, day, close));
                let (start, end) = (open.max(from), close.min(to));
                if end > start {
                    total += (end - start).num_seconds();
                }
            }
            day += Duration::days(1);
            n += 1;
        }
        total
    }
}

/// A local time of a day as an instant (the earlier of a repeated hour; past a skipped one).
pub(crate) fn local(tz: Tz, day: NaiveDate, at: NaiveTime) -> DateTime<Utc> {
    let naive = day.and_time(at);
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        chrono::LocalResult::None => tz
            .from_local_datetime(&(naive + Duration::hours(1)))
            .earliest()
            .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekdays(start: &str, end: &str) -> BusinessHours {
        BusinessHours(
            ["mon", "tue", "wed", "thu", "fri"]
                .iter()
                .map(|d| (d.to_string(), [start.to_owned(), end.to_owned()]))
                .collect(),
        )
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn only_open_hours_count_across_nights_weekends_and_dst() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let h = weekdays("09:00", "17:00");
        // Within one day.
        assert_eq!(
            h.seconds_between(at("2026-12-01T09:00:00Z"), at("2026-12-01T09:10:00Z"), berlin),
            600
        );
        // Friday 17:55 → Monday 09:05 Berlin (UTC+1): 0 on Friday (closed at 17:00), 5 minutes Monday.
        assert_eq!(
            h.seconds_between(at("2026-12-04T16:55:00Z"), at("2026-12-07T08:05:00Z"), berlin),
            300
        );
        // Friday 16:55 → Monday 09:05: 5 + 5 minutes.
        assert_eq!(
            h.seconds_between(at("2026-12-04T15:55:00Z"), at("2026-12-07T08:05:00Z"), berlin),
            600
        );
        // A whole week: five days of eight hours.
        assert_eq!(
            h.seconds_between(at("2026-11-30T00:00:00Z"), at("2026-12-07T00:00:00Z"), berlin),
            5 * 8 * 3600
        );
        // The Monday after the clocks go forward (2026-03-29): 09:00 is 07:00Z, not 08:00Z.
        assert_eq!(
            h.seconds_between(at("2026-03-30T07:00:00Z"), at("2026-03-30T07:30:00Z"), berlin),
            1800
        );
        assert_eq!(
            h.seconds_between(at("2026-03-30T06:00:00Z"), at("2026-03-30T06:59:00Z"), berlin),
            0
        );
        // Reversed or empty spans.
        assert_eq!(
            h.seconds_between(at("2026-12-02T10:00:00Z"), at("2026-12-01T10:00:00Z"), berlin),
            0
        );
    }

    #[test]
    fn hours_are_validated() {
        assert!(weekdays("09:00", "17:00").validate().is_ok());
        assert!(weekdays("17:00", "09:00").validate().is_err());
        assert!(weekdays("9am", "17:00").validate().is_err());
        assert!(BusinessHours::default().validate().is_err());
        let mut odd = weekdays("09:00", "17:00");
        odd.0.insert("funday".into(), ["09:00".into(), "10:00".into()]);
        assert!(odd.validate().unwrap_err().contains("funday"));
        let parsed: BusinessHours = serde_json::from_str(r#"{"mon": ["08:30", "12:00"]}"#).unwrap();
        assert!(parsed.validate().is_ok());
    }
}
