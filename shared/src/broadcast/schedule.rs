//! When a broadcast may send, on the local clock of its time zone (the tenant's unless the
//! broadcast names another): its start time may be given as a local date and time, and its
//! quiet hours (e.g. 21:00 → 08:00) hold every send back until they end. Read on the local
//! clock, so DST moves the instants with the clock, as the business expects.

use chrono::{DateTime, Duration, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::reports::hours::{local, time};

/// Local hours in which a broadcast sends nothing: `start` to `end`, crossing midnight when
/// `end` is earlier (`"21:00"` → `"08:00"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
}

impl QuietHours {
    pub fn validate(&self) -> Result<(), String> {
        match (time(&self.start), time(&self.end)) {
            (Some(s), Some(e)) if s != e => Ok(()),
            (Some(_), Some(_)) => Err("quiet_hours: start and end must differ".into()),
            _ => Err("quiet_hours: {\"start\": \"HH:MM\", \"end\": \"HH:MM\"} (local time)".into()),
        }
    }

    fn times(&self) -> (NaiveTime, NaiveTime) {
        (
            time(&self.start).unwrap_or(NaiveTime::MIN),
            time(&self.end).unwrap_or(NaiveTime::MIN),
        )
    }

    /// When the quiet hours `at` falls in end (`None`: `at` is not in them).
    pub fn quiet_until(&self, tz: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (start, end) = self.times();
        let here = at.with_timezone(&tz);
        let (day, now) = (here.date_naive(), here.time());
        let until = if start < end {
            (start..end).contains(&now).then(|| local(tz, day, end))
        } else if now >= start {
            Some(local(tz, day + Duration::days(1), end))
        } else if now < end {
            Some(local(tz, day, end))
        } else {
            None
        };
        // A skipped or repeated local hour can put the computed end at or before `at`.
        until.filter(|u| *u > at)
    }

    /// The next instant quiet hours begin, after `at`.
    pub fn next_start(&self, tz: Tz, at: DateTime<Utc>) -> DateTime<Utc> {
        let (start, _) = self.times();
        let day = at.with_timezone(&tz).date_naive();
        [day, day + Duration::days(1), day + Duration::days(2)]
            .into_iter()
            .map(|d| local(tz, d, start))
            .find(|s| *s > at)
            .unwrap_or(at + Duration::days(1))
    }
}

/// Most seconds of sends one run may hand over at `now`, so none is due inside quiet hours:
/// `None` when quiet hours are on now (with when they end), else the seconds until they
/// begin (capped at `run_secs`).
pub fn sending_room(
    quiet: Option<&QuietHours>,
    tz: Tz,
    now: DateTime<Utc>,
    run_secs: u32,
) -> Result<u32, DateTime<Utc>> {
    let Some(quiet) = quiet else {
        return Ok(run_secs);
    };
    if let Some(until) = quiet.quiet_until(tz, now) {
        return Err(until);
    }
    let secs = (quiet.next_start(tz, now) - now).num_seconds().max(1);
    Ok(u32::try_from(secs).unwrap_or(u32::MAX).min(run_secs))
}

/// Why a local start time was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalTimeError {
    Malformed,
    /// The clock skips it (the hour DST jumps over).
    Skipped,
}

/// A start time: RFC 3339 with an offset (`2026-12-05T09:00:00+01:00`, `…Z`) is that instant;
/// a local date and time without one (`2026-12-05T09:00`, seconds optional) is read in `tz`
/// (a repeated hour means its first occurrence).
pub fn parse_start(raw: &str, tz: Tz) -> Result<DateTime<Utc>, LocalTimeError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.to_utc());
    }
    let naive = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M"))
        .map_err(|_| LocalTimeError::Malformed)?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.to_utc())
        .ok_or(LocalTimeError::Skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn quiet(start: &str, end: &str) -> QuietHours {
        QuietHours {
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn overnight_quiet_hours_hold_sends_until_morning_on_the_local_clock() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let q = quiet("21:00", "08:00");
        // 22:30 in Berlin (winter, UTC+1) → 08:00 the next morning.
        assert_eq!(
            q.quiet_until(berlin, at("2026-12-04T21:30:00Z")),
            Some(at("2026-12-05T07:00:00Z"))
        );
        // 06:00 local → 08:00 the same day.
        assert_eq!(
            q.quiet_until(berlin, at("2026-12-05T05:00:00Z")),
            Some(at("2026-12-05T07:00:00Z"))
        );
        // 12:00 local: sending; quiet starts at 21:00 local.
        assert_eq!(q.quiet_until(berlin, at("2026-12-05T11:00:00Z")), None);
        assert_eq!(
            q.next_start(berlin, at("2026-12-05T11:00:00Z")),
            at("2026-12-05T20:00:00Z")
        );
        // The end is exclusive of quiet: at 08:00 sharp it sends.
        assert_eq!(q.quiet_until(berlin, at("2026-12-05T07:00:00Z")), None);
        // Summer time (UTC+2): the same local hours are an hour earlier in UTC.
        assert_eq!(
            q.quiet_until(berlin, at("2026-07-01T20:00:00Z")),
            Some(at("2026-07-02T06:00:00Z"))
        );
    }

    #[test]
    fn daytime_quiet_hours_and_the_run_room() {
        let utc = Tz::UTC;
        let q = quiet("12:00", "13:00");
        assert_eq!(
            q.quiet_until(utc, at("2026-12-05T12:30:00Z")),
            Some(at("2026-12-05T13:00:00Z"))
        );
        assert_eq!(q.quiet_until(utc, at("2026-12-05T13:30:00Z")), None);
        // 20 s before quiet hours: only 20 s of sends may be handed over.
        assert_eq!(sending_room(Some(&q), utc, at("2026-12-05T11:59:40Z"), 60), Ok(20));
        assert_eq!(sending_room(Some(&q), utc, at("2026-12-05T10:00:00Z"), 60), Ok(60));
        assert_eq!(
            sending_room(Some(&q), utc, at("2026-12-05T12:00:00Z"), 60),
            Err(at("2026-12-05T13:00:00Z"))
        );
        assert_eq!(sending_room(None, utc, at("2026-12-05T12:00:00Z"), 60), Ok(60));
        assert!(quiet("09:00", "09:00").validate().is_err());
        assert!(quiet("9", "10:00").validate().is_err());
        assert!(quiet("22:00", "06:30").validate().is_ok());
    }

    #[test]
    fn a_start_time_is_an_instant_or_a_local_time_of_the_zone() {
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(parse_start("2026-12-05T09:00:00Z", ny), Ok(at("2026-12-05T09:00:00Z")));
        assert_eq!(
            parse_start("2026-12-05T09:00:00+01:00", ny),
            Ok(at("2026-12-05T08:00:00Z"))
        );
        assert_eq!(parse_start("2026-12-05T09:00", ny), Ok(at("2026-12-05T14:00:00Z")));
        assert_eq!(parse_start("2026-07-05T09:00:30", ny), Ok(at("2026-07-05T13:00:30Z")));
        // 02:30 on the spring-forward night does not exist in New York.
        assert_eq!(parse_start("2026-03-08T02:30", ny), Err(LocalTimeError::Skipped));
        // 01:30 on the fall-back night happens twice: the first one.
        assert_eq!(parse_start("2026-11-01T01:30", ny), Ok(at("2026-11-01T05:30:00Z")));
        assert_eq!(parse_start("next tuesday", ny), Err(LocalTimeError::Malformed));
    }
}
