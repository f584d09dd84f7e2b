//! A report request and its answer: query parameters checked into bucket ranges, counter items
//! summed into rows (per bucket, optionally per group), with rates and percentiles, as JSON or
//! CSV. Pure: the API route reads the counter items and calls these.
//!
//! Ranges: `from` (inclusive) and `to` (exclusive) are RFC 3339 instants or dates (a date is
//! midnight in the tenant's time zone); a report covers every bucket that overlaps the range:
//! UTC hours for `granularity=hour` (at most [`MAX_HOUR_DAYS`] days), the tenant's days for
//! `day` (at most [`MAX_DAY_DAYS`] days). Buckets without counts are left out.
//!
//! Groups: `group_by=phone` splits by the tenant's number (items are per number);
//! `type`, `category`, `template` and `broadcast` (messages only) split each count by that
//! dimension, and what a dimension does not cover (received messages have no category or
//! template) is the row with group `null`, so every row set sums to the totals.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use super::NO_NUMBER;
use super::counters::{CounterRow, Granularity, bucket, count, histogram_sum};
use super::histogram::Histogram;

/// Longest range of an hourly report, and of a daily one.
pub const MAX_HOUR_DAYS: i64 = 31;
pub const MAX_DAY_DAYS: i64 = 400;
/// The range when `from` is not given: the week before `to`.
pub const DEFAULT_DAYS: i64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Messages,
    Conversations,
    /// Per-user metrics (by day, one row per user).
    Users,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Phone,
    Type,
    Category,
    Template,
    Broadcast,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Phone => "phone",
            GroupBy::Type => "type",
            GroupBy::Category => "category",
            GroupBy::Template => "template",
            GroupBy::Broadcast => "broadcast",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// A checked report request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportQuery {
    pub kind: ReportKind,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
    pub group_by: Option<GroupBy>,
    pub time_zone: Tz,
    /// The first and last bucket overlapping `[from, to)`.
    pub first: String,
    pub last: String,
}

/// A query parameter the report cannot take: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct ParamError {
    pub param: &'static str,
    pub message: String,
}

fn bad(param: &'static str, message: impl Into<String>) -> ParamError {
    ParamError {
        param,
        message: message.into(),
    }
}

/// An instant, or a date taken as midnight in `tz` (the first midnight of a day whose midnight
/// a DST change skips).
pub fn parse_instant(value: &str, tz: Tz) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    let midnight = date.and_hms_opt(0, 0, 0)?;
    match tz.from_local_datetime(&midnight) {
        chrono::LocalResult::Single(at) | chrono::LocalResult::Ambiguous(at, _) => Some(at.with_timezone(&Utc)),
        // No midnight that day (a zone that springs forward at 00:00): the day's first hour.
        chrono::LocalResult::None => tz
            .from_local_datetime(&(midnight + Duration::hours(1)))
            .earliest()
            .map(|at| at.with_timezone(&Utc)),
    }
}

/// Checks a report request's query parameters (`from`, `to`, `granularity`, `group_by`;
/// `format` is read by [`format_of`]); unknown parameters are refused so a typo is not a silent
/// full report.
pub fn parse_query<'a>(
    kind: ReportKind,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<ReportQuery, ParamError> {
    let (mut from, mut to, mut granularity, mut group_by) = (None, None, Granularity::Day, None);
    for (name, value) in params {
        match name {
            "from" => {
                from = Some(
                    parse_instant(value, tz)
                        .ok_or_else(|| bad("from", "must be an RFC 3339 time or a date (YYYY-MM-DD)"))?,
                )
            }
            "to" => {
                to = Some(
                    parse_instant(value, tz)
                        .ok_or_else(|| bad("to", "must be an RFC 3339 time or a date (YYYY-MM-DD)"))?,
                )
            }
            "granularity" => {
                granularity = match value {
                    "hour" => Granularity::Hour,
                    "day" => Granularity::Day,
                    _ => return Err(bad("granularity", "must be hour or day")),
                }
            }
            "group_by" => {
                let allowed: &[GroupBy] = match kind {
                    ReportKind::Messages => &[
                        GroupBy::Phone,
                        GroupBy::Type,
                        GroupBy::Category,
                        GroupBy::Template,
                        GroupBy::Broadcast,
                    ],
                    ReportKind::Conversations => &[GroupBy::Phone],
                    ReportKind::Users => &[],
                };
                group_by = Some(allowed.iter().copied().find(|g| g.as_str() == value).ok_or_else(|| {
                    let names: Vec<&str> = allowed.iter().map(|g| g.as_str()).collect();
                    match names.is_empty() {
                        true => bad("group_by", "this report is always by user"),
                        false => bad("group_by", format!("must be one of {}", names.join(", "))),
                    }
                })?);
            }
            "format" => {}
            _ => return Err(bad("query", format!("unknown parameter {name:?}"))),
        }
    }
    if kind == ReportKind::Users {
        if granularity == Granularity::Hour {
            return Err(bad("granularity", "per-user metrics are by day"));
        }
        granularity = Granularity::UserDay;
    }
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - Duration::days(DEFAULT_DAYS));
    if from >= to {
        return Err(bad("to", "must be after from"));
    }
    let max_days = match granularity {
        Granularity::Hour => MAX_HOUR_DAYS,
        Granularity::Day | Granularity::UserDay => MAX_DAY_DAYS,
    };
    if to - from > Duration::days(max_days) {
        return Err(bad(
            "to",
            format!("a {} report covers at most {max_days} days", granularity.as_str()),
        ));
    }
    Ok(ReportQuery {
        kind,
        from,
        to,
        granularity,
        group_by,
        time_zone: tz,
        first: bucket(granularity, from, tz),
        last: bucket(granularity, to - Duration::nanoseconds(1), tz),
    })
}

/// CSV when `format=csv` or the `Accept` header asks for `text/csv` (JSON otherwise).
pub fn format_of<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    accept: Option<&str>,
) -> Result<Format, ParamError> {
    for (name, value) in params {
        if name == "format" {
            return match value {
                "json" => Ok(Format::Json),
                "csv" => Ok(Format::Csv),
                _ => Err(bad("format", "must be json or csv")),
            };
        }
    }
    Ok(match accept {
        Some(a) if a.split(',').any(|t| t.trim().starts_with("text/csv")) => Format::Csv,
        _ => Format::Json,
    })
}

const MESSAGE_METRICS: [&str; 5] = ["received", "sent", "delivered", "read", "failed"];
const CONVERSATION_METRICS: [&str; 4] = ["opened", "resolved", "opt_out", "opt_in"];
const USER_METRICS: [&str; 2] = ["replies", "resolutions"];
const HISTOGRAMS: [&str; 2] = ["first_response", "resolution"];

/// The sums of one row (or of the totals).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    pub counts: BTreeMap<&'static str, u64>,
    /// Failures by Meta error code (messages, without a dimension group).
    pub failed_by_code: BTreeMap<String, u64>,
    pub histograms: BTreeMap<&'static str, Histogram>,
}

impl Sums {
    fn merge(&mut self, other: &Sums) {
        for (m, n) in &other.counts {
            *self.counts.entry(m).or_default() += n;
        }
        for (c, n) in &other.failed_by_code {
            *self.failed_by_code.entry(c.clone()).or_default() += n;
        }
        for (h, hist) in &other.histograms {
            self.histograms.entry(h).or_default().merge(hist);
        }
    }

    pub fn count(&self, metric: &str) -> u64 {
        self.counts.get(metric).copied().unwrap_or(0)
    }

    /// `delivered / sent`; `None` without sends.
    pub fn delivery_rate(&self) -> Option<f64> {
        ratio(self.count("delivered"), self.count("sent"))
    }

    /// `read / delivered`: a lower bound (a customer may turn read receipts off).
    pub fn read_rate(&self) -> Option<f64> {
        ratio(self.count("read"), self.count("delivered"))
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0)
}

/// A report: rows by bucket then group, and the totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub query: ReportQuery,
    pub rows: BTreeMap<(String, Option<String>), Sums>,
    pub totals: Sums,
}

fn histogram_of(values: &BTreeMap<String, u64>, name: &str) -> Histogram {
    let prefix = format!("h:{name}|");
    let mut h = Histogram::default();
    for (attr, n) in values.range(prefix.clone()..) {
        let Some(b) = attr.strip_prefix(&prefix) else { break };
        if let Ok(b) = b.parse::<u32>() {
            *h.buckets.entry(b).or_default() += n;
        }
    }
    h.count = values.get(&count(name)).copied().unwrap_or(0);
    h.sum_seconds = values.get(&histogram_sum(name)).copied().unwrap_or(0);
    h
}

/// The values of `metric` by `dimension` in one item, and what no value covers.
fn split(values: &BTreeMap<String, u64>, metric: &str, dimension: &str) -> Vec<(Option<String>, u64)> {
    let prefix = format!("n:{metric}|{dimension}=");
    let mut out = Vec::new();
    let mut covered = 0;
    for (attr, n) in values.range(prefix.clone()..) {
        let Some(value) = attr.strip_prefix(&prefix) else { break };
        covered += n;
        out.push((Some(value.to_owned()), *n));
    }
    let total = values.get(&count(metric)).copied().unwrap_or(0);
    if total > covered {
        out.push((None, total - covered));
    }
    out
}

/// Sums counter items into a report.
pub fn build(query: &ReportQuery, items: &[CounterRow]) -> Report {
    let mut rows: BTreeMap<(String, Option<String>), Sums> = BTreeMap::new();
    let phone_group = |phone: &str| (phone != NO_NUMBER).then(|| phone.to_owned());
    for item in items
        .iter()
        .filter(|i| i.bucket >= query.first && i.bucket <= query.last)
    {
        let mut whole = Sums::default();
        match query.kind {
            ReportKind::Messages => {
                for m in MESSAGE_METRICS {
                    whole.counts.insert(m, item.values.get(&count(m)).copied().unwrap_or(0));
                }
                for (code, n) in split(&item.values, "failed", "code") {
                    whole.failed_by_code.insert(code.unwrap_or_else(|| "none".into()), n);
                }
            }
            ReportKind::Conversations | ReportKind::Users => {
                let metrics: &[&'static str] = match query.kind {
                    ReportKind::Users => &USER_METRICS,
                    _ => &CONVERSATION_METRICS,
                };
                for m in metrics {
                    whole.counts.insert(m, item.values.get(&count(m)).copied().unwrap_or(0));
                }
                for h in HISTOGRAMS {
                    whole.histograms.insert(h, histogram_of(&item.values, h));
                }
            }
        }
        if query.kind == ReportKind::Users {
            // Items are per user: the group is the user.
            rows.entry((item.bucket.clone(), Some(item.phone.clone())))
                .or_default()
                .merge(&whole);
            continue;
        }
        match query.group_by {
            None => rows.entry((item.bucket.clone(), None)).or_default().merge(&whole),
            Some(GroupBy::Phone) => rows
                .entry((item.bucket.clone(), phone_group(&item.phone)))
                .or_default()
                .merge(&whole),
            Some(dimension) => {
                for m in MESSAGE_METRICS {
                    for (group, n) in split(&item.values, m, dimension.as_str()) {
                        *rows
                            .entry((item.bucket.clone(), group))
                            .or_default()
                            .counts
                            .entry(m)
                            .or_default() += n;
                    }
                }
            }
        }
    }
    rows.retain(|_, sums| sums.counts.values().any(|n| *n > 0) || sums.histograms.values().any(|h| h.count > 0));
    let mut totals = Sums::default();
    for sums in rows.values() {
        totals.merge(sums);
    }
    if query.group_by.is_some_and(|g| g != GroupBy::Phone) {
        // Codes are counted per item, not per dimension value: only the totals carry them.
        totals.failed_by_code = items
            .iter()
            .filter(|i| i.bucket >= query.first && i.bucket <= query.last)
            .flat_map(|i| split(&i.values, "failed", "code"))
            .fold(BTreeMap::new(), |mut acc, (code, n)| {
                *acc.entry(code.unwrap_or_else(|| "none".into())).or_default() += n;
                acc
            });
    }
    for metric in MESSAGE_METRICS.iter().chain(&CONVERSATION_METRICS).chain(&USER_METRICS) {
        totals.counts.entry(metric).or_default();
    }
    Report {
        query: query.clone(),
        rows,
        totals,
    }
}

fn seconds(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |s| json!((s * 10.0).round() / 10.0))
}

fn histogram_json(h: &Histogram) -> Value {
    json!({
        "count": h.count,
        "p50_seconds": seconds(h.percentile(0.5)),
        "p90_seconds": seconds(h.percentile(0.9)),
        "p99_seconds": seconds(h.percentile(0.99)),
        "mean_seconds": seconds(h.mean()),
    })
}

impl Report {
    fn sums_json(&self, sums: &Sums, with_codes: bool) -> Value {
        match self.query.kind {
            ReportKind::Messages => {
                let mut v = json!({
                    "received": sums.count("received"),
                    "sent": sums.count("sent"),
                    "delivered": sums.count("delivered"),
                    "read": sums.count("read"),
                    "failed": sums.count("failed"),
                    "delivery_rate": sums.delivery_rate(),
                    "read_rate": sums.read_rate(),
                });
                if with_codes {
                    v["failed_by_code"] = json!(sums.failed_by_code);
                }
                v
            }
            ReportKind::Users => json!({
                "replies": sums.count("replies"),
                "resolutions": sums.count("resolutions"),
                "first_response": histogram_json(sums.histograms.get("first_response").unwrap_or(&Histogram::default())),
                "resolution": histogram_json(sums.histograms.get("resolution").unwrap_or(&Histogram::default())),
            }),
            ReportKind::Conversations => json!({
                "opened": sums.count("opened"),
                "resolved": sums.count("resolved"),
                "opt_outs": sums.count("opt_out"),
                "opt_ins": sums.count("opt_in"),
                "first_response": histogram_json(sums.histograms.get("first_response").unwrap_or(&Histogram::default())),
                "resolution": histogram_json(sums.histograms.get("resolution").unwrap_or(&Histogram::default())),
            }),
        }
    }

    pub fn to_json(&self) -> Value {
        let q = &self.query;
        let row_codes = !q.group_by.is_some_and(|g| g != GroupBy::Phone);
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|((bucket, group), sums)| {
                let mut row = json!({"bucket": bucket, "group": group});
                if let (Value::Object(row), Value::Object(sums)) = (&mut row, self.sums_json(sums, row_codes)) {
                    row.extend(sums);
                }
                row
            })
            .collect();
        let mut out = json!({
            "report": match q.kind {
                ReportKind::Messages => "messages",
                ReportKind::Conversations => "conversations",
                ReportKind::Users => "users",
            },
            "from": q.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "to": q.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "granularity": q.granularity.as_str(),
            "time_zone": q.time_zone.name(),
            "group_by": q.group_by.map(GroupBy::as_str),
            "rows": rows,
            "totals": self.sums_json(&self.totals, true),
        });
        if q.kind == ReportKind::Messages {
            // Customers can turn read receipts off: `read` counts only those who did not.
            out["read_rate_is_lower_bound"] = json!(true);
        }
        out
    }

    /// One header line, then one line per row (`bucket`, `group`, then the counts), CRLF-ended
    /// as RFC 4180 has it.
    pub fn to_csv(&self) -> String {
        let header: &[&str] = match self.query.kind {
            ReportKind::Messages => &[
                "bucket",
                "group",
                "received",
                "sent",
                "delivered",
                "read",
                "failed",
                "delivery_rate",
                "read_rate",
            ],
            ReportKind::Users => &[
                "bucket",
                "group",
                "replies",
                "resolutions",
                "first_response_count",
                "first_response_p50_seconds",
                "first_response_p90_seconds",
                "first_response_p99_seconds",
                "first_response_mean_seconds",
                "resolution_count",
                "resolution_p50_seconds",
                "resolution_p90_seconds",
                "resolution_p99_seconds",
                "resolution_mean_seconds",
            ],
            ReportKind::Conversations => &[
                "bucket",
                "group",
                "opened",
                "resolved",
                "opt_outs",
                "opt_ins",
                "first_response_count",
                "first_response_p50_seconds",
                "first_response_p90_seconds",
                "first_response_p99_seconds",
                "first_response_mean_seconds",
                "resolution_count",
                "resolution_p50_seconds",
                "resolution_p90_seconds",
                "resolution_p99_seconds",
                "resolution_mean_seconds",
            ],
        };
        let mut out = header.join(",");
        out.push_str("\r\n");
        let num = |v: Value| if v.is_null() { String::new() } else { v.to_string() };
        for ((bucket, group), sums) in &self.rows {
            let mut fields = vec![csv_field(bucket), csv_field(group.as_deref().unwrap_or_default())];
            let v = self.sums_json(sums, false);
            match self.query.kind {
                ReportKind::Messages => {
                    for k in &header[2..] {
                        fields.push(num(v[*k].clone()));
                    }
                }
                ReportKind::Conversations | ReportKind::Users => {
                    let counts: &[&str] = match self.query.kind {
                        ReportKind::Users => &["replies", "resolutions"],
                        _ => &["opened", "resolved", "opt_outs", "opt_ins"],
                    };
                    for k in counts {
                        fields.push(num(v[*k].clone()));
                    }
                    for h in HISTOGRAMS {
                        for k in ["count", "p50_seconds", "p90_seconds", "p99_seconds", "mean_seconds"] {
                            fields.push(num(v[h][k].clone()));
                        }
                    }
                }
            }
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

/// A CSV field: quoted when it holds a separator, quote or line break; a leading `= + - @`
/// (a spreadsheet formula) is defused with a `'`.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::counters::{count_by, histogram_bucket};
    use crate::reports::histogram::bucket_of;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn q<'a>(kind: ReportKind, params: &[(&'a str, &'a str)], tz: &str) -> Result<ReportQuery, ParamError> {
        parse_query(
            kind,
            params.iter().copied(),
            tz.parse().unwrap(),
            at("2026-12-01T12:00:00Z"),
        )
    }

    #[test]
    fn parameters_are_checked_with_clear_errors() {
        let m = ReportKind::Messages;
        let d = q(m, &[], "UTC").unwrap();
        assert_eq!((d.granularity, d.group_by), (Granularity::Day, None));
        assert_eq!((d.first.as_str(), d.last.as_str()), ("2026-11-24", "2026-12-01"));
        let err = |params: &[(&str, &str)]| q(m, params, "UTC").unwrap_err();
        assert_eq!(err(&[("from", "yesterday")]).param, "from");
        assert_eq!(err(&[("to", "2026-13-01")]).param, "to");
        assert_eq!(err(&[("granularity", "week")]).param, "granularity");
        assert_eq!(err(&[("group_by", "contact")]).param, "group_by");
        assert_eq!(
            err(&[("from", "2026-12-01"), ("to", "2026-11-01")]).message,
            "must be after from"
        );
        assert_eq!(err(&[("limit", "5")]).param, "query");
        // Ranges: 90 days by day is fine, by hour too long.
        assert!(q(m, &[("from", "2026-09-02"), ("to", "2026-12-01")], "UTC").is_ok());
        let long = err(&[("from", "2026-09-02"), ("to", "2026-12-01"), ("granularity", "hour")]);
        assert!(long.message.contains("at most 31 days"), "{long}");
        assert!(q(m, &[("from", "2025-01-01"), ("to", "2026-12-01")], "UTC").is_err());
        // Conversations group only by number.
        assert!(q(ReportKind::Conversations, &[("group_by", "phone")], "UTC").is_ok());
        assert_eq!(
            q(ReportKind::Conversations, &[("group_by", "template")], "UTC")
                .unwrap_err()
                .param,
            "group_by"
        );
        assert_eq!(format_of([("format", "csv")], None), Ok(Format::Csv));
        assert_eq!(format_of([], Some("application/json, text/csv;q=0.5")), Ok(Format::Csv));
        assert_eq!(format_of([], Some("*/*")), Ok(Format::Json));
        assert_eq!(format_of([("format", "xml")], None).unwrap_err().param, "format");
    }

    #[test]
    fn dates_are_the_tenants_midnights_across_dst() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // The spring-forward day is 23 hours long, the autumn one 25.
        let spring = q(
            ReportKind::Messages,
            &[("from", "2026-03-08"), ("to", "2026-03-09"), ("granularity", "hour")],
            "America/New_York",
        )
        .unwrap();
        assert_eq!(
            (spring.from, spring.to),
            (at("2026-03-08T05:00:00Z"), at("2026-03-09T04:00:00Z"))
        );
        assert_eq!(
            (spring.first.as_str(), spring.last.as_str()),
            ("2026-03-08T05", "2026-03-09T03")
        );
        let autumn = q(
            ReportKind::Messages,
            &[("from", "2026-11-01"), ("to", "2026-11-02"), ("granularity", "hour")],
            "America/New_York",
        )
        .unwrap();
        assert_eq!(autumn.to - autumn.from, Duration::hours(25));
        let days = q(
            ReportKind::Messages,
            &[("from", "2026-11-01"), ("to", "2026-11-02")],
            "America/New_York",
        )
        .unwrap();
        assert_eq!((days.first.as_str(), days.last.as_str()), ("2026-11-01", "2026-11-01"));
        // An instant keeps its own offset.
        assert_eq!(
            parse_instant("2026-03-08T00:00:00-05:00", ny),
            Some(at("2026-03-08T05:00:00Z"))
        );
        // A zone whose midnight the change skips (Santiago springs forward at 00:00).
        let santiago: Tz = "America/Santiago".parse().unwrap();
        assert_eq!(parse_instant("2026-09-06", santiago), Some(at("2026-09-06T04:00:00Z")));
    }

    fn row(bucket: &str, phone: &str, values: &[(String, u64)]) -> CounterRow {
        CounterRow {
            bucket: bucket.into(),
            phone: phone.into(),
            values: values.iter().cloned().collect(),
        }
    }

    fn sample() -> Vec<CounterRow> {
        vec![
            row(
                "2026-11-30",
                "1001",
                &[
                    (count("received"), 4),
                    (count_by("received", "type", "text"), 4),
                    (count("sent"), 10),
                    (count_by("sent", "template", "order_update"), 6),
                    (count_by("sent", "category", "utility"), 6),
                    (count_by("sent", "category", "service"), 4),
                    (count("delivered"), 8),
                    (count_by("delivered", "template", "order_update"), 5),
                    (count("read"), 3),
                    (count("failed"), 2),
                    (count_by("failed", "code", "131047"), 2),
                ],
            ),
            row("2026-11-30", "1002", &[(count("sent"), 5), (count("delivered"), 5)]),
            row("2026-12-01", "1001", &[(count("received"), 1)]),
            // Outside the range: never counted.
            row("2026-12-05", "1001", &[(count("received"), 99)]),
        ]
    }

    #[test]
    fn messages_sum_by_bucket_and_group_with_rates_and_a_null_group_for_the_rest() {
        let query = q(
            ReportKind::Messages,
            &[("from", "2026-11-30"), ("to", "2026-12-02")],
            "UTC",
        )
        .unwrap();
        let r = build(&query, &sample());
        let json = r.to_json();
        assert_eq!(json["totals"]["sent"], 15);
        assert_eq!(json["totals"]["received"], 5);
        assert_eq!(json["totals"]["delivery_rate"], 0.8667);
        assert_eq!(json["totals"]["read_rate"], 0.2308);
        assert_eq!(json["read_rate_is_lower_bound"], true);
        assert_eq!(json["totals"]["failed_by_code"], json!({"131047": 2}));
        assert_eq!(json["rows"].as_array().unwrap().len(), 2);
        assert_eq!(json["rows"][0]["bucket"], "2026-11-30");
        assert_eq!(json["rows"][0]["group"], Value::Null);

        let by_template = q(
            ReportKind::Messages,
            &[("from", "2026-11-30"), ("to", "2026-12-02"), ("group_by", "template")],
            "UTC",
        )
        .unwrap();
        let r = build(&by_template, &sample());
        let day = |group: Option<&str>| r.rows[&("2026-11-30".to_owned(), group.map(str::to_owned))].clone();
        assert_eq!(
            (
                day(Some("order_update")).count("sent"),
                day(Some("order_update")).count("delivered")
            ),
            (6, 5)
        );
        // The rest of each count (other numbers, free-form sends, received) has group null.
        assert_eq!((day(None).count("sent"), day(None).count("received")), (9, 4));
        // Every grouping sums to the same totals.
        for group in ["phone", "type", "category", "template", "broadcast"] {
            let query = q(
                ReportKind::Messages,
                &[("from", "2026-11-30"), ("to", "2026-12-02"), ("group_by", group)],
                "UTC",
            )
            .unwrap();
            let r = build(&query, &sample());
            for m in MESSAGE_METRICS {
                assert_eq!(
                    r.totals.count(m),
                    build(&query_plain(), &sample()).totals.count(m),
                    "{group} {m}"
                );
            }
        }
        let by_phone = q(
            ReportKind::Messages,
            &[("from", "2026-11-30"), ("to", "2026-12-02"), ("group_by", "phone")],
            "UTC",
        )
        .unwrap();
        let r = build(&by_phone, &sample());
        assert_eq!(
            r.rows[&("2026-11-30".to_owned(), Some("1002".to_owned()))].delivery_rate(),
            Some(1.0)
        );
    }

    fn query_plain() -> ReportQuery {
        q(
            ReportKind::Messages,
            &[("from", "2026-11-30"), ("to", "2026-12-02")],
            "UTC",
        )
        .unwrap()
    }

    #[test]
    fn csv_has_one_header_and_one_line_per_row() {
        let query = q(
            ReportKind::Messages,
            &[("from", "2026-11-30"), ("to", "2026-12-02"), ("group_by", "phone")],
            "UTC",
        )
        .unwrap();
        let csv = build(&query, &sample()).to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "bucket,group,received,sent,delivered,read,failed,delivery_rate,read_rate"
        );
        assert_eq!(lines[1], "2026-11-30,1001,4,10,8,3,2,0.8,0.375");
        assert_eq!(lines[2], "2026-11-30,1002,0,5,5,0,0,1.0,0.0");
        assert_eq!(lines[3], "2026-12-01,1001,1,0,0,0,0,,");
        assert_eq!(lines[4], "", "CRLF after the last line");
        assert_eq!(lines.len(), 5);
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");

        let conv = q(
            ReportKind::Conversations,
            &[("from", "2026-11-30"), ("to", "2026-12-02")],
            "UTC",
        )
        .unwrap();
        let mut values = vec![
            (count("opened"), 3),
            (count("resolved"), 2),
            (count("first_response"), 2),
            (histogram_sum("first_response"), 130),
        ];
        values.push((histogram_bucket("first_response", bucket_of(10.0)), 1));
        values.push((histogram_bucket("first_response", bucket_of(120.0)), 1));
        let csv = build(&conv, &[row("2026-11-30", "1001", &values)]).to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(lines[0].starts_with(
            "bucket,group,opened,resolved,opt_outs,opt_ins,first_response_count,first_response_p50_seconds"
        ));
        assert!(lines[1].starts_with("2026-11-30,,3,2,0,0,2,"), "{}", lines[1]);
    }

    #[test]
    fn per_user_reports_are_by_day_one_row_per_user() {
        assert_eq!(
            q(ReportKind::Users, &[("granularity", "hour")], "UTC")
                .unwrap_err()
                .param,
            "granularity"
        );
        assert_eq!(
            q(ReportKind::Users, &[("group_by", "phone")], "UTC").unwrap_err().param,
            "group_by"
        );
        let query = q(
            ReportKind::Users,
            &[("from", "2026-11-30"), ("to", "2026-12-02")],
            "UTC",
        )
        .unwrap();
        assert_eq!(query.granularity, Granularity::UserDay);
        let items = [
            row("2026-11-30", "u1", &[(count("replies"), 3), (count("resolutions"), 1)]),
            row("2026-11-30", "u2", &[(count("replies"), 2)]),
        ];
        let r = build(&query, &items);
        let json = r.to_json();
        assert_eq!(json["rows"][0]["group"], "u1");
        assert_eq!(json["rows"][1]["replies"], 2);
        assert_eq!(json["totals"]["replies"], 5);
        let csv = r.to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert!(lines[0].starts_with("bucket,group,replies,resolutions,first_response_count"));
        assert!(lines[1].starts_with("2026-11-30,u1,3,1,0,"), "{}", lines[1]);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
    }

    #[test]
    fn conversation_percentiles_come_from_merged_histograms() {
        let query = q(
            ReportKind::Conversations,
            &[("from", "2026-11-30"), ("to", "2026-12-02")],
            "UTC",
        )
        .unwrap();
        let item = |bucket: &str, seconds: &[u64]| {
            let mut h = Histogram::default();
            for s in seconds {
                h.record(*s);
            }
            let mut values: Vec<(String, u64)> = h
                .buckets
                .iter()
                .map(|(b, n)| (histogram_bucket("first_response", *b), *n))
                .collect();
            values.push((count("first_response"), h.count));
            values.push((histogram_sum("first_response"), h.sum_seconds));
            row(bucket, "1001", &values)
        };
        let r = build(
            &query,
            &[item("2026-11-30", &[10, 20, 30]), item("2026-12-01", &[40, 3600])],
        );
        let t = &r.to_json()["totals"]["first_response"];
        assert_eq!(t["count"], 5);
        assert_eq!(t["mean_seconds"], 740.0);
        let p50 = t["p50_seconds"].as_f64().unwrap();
        assert_eq!(bucket_of(p50), bucket_of(30.0));
        assert_eq!(bucket_of(t["p99_seconds"].as_f64().unwrap()), bucket_of(3600.0));
    }
}
