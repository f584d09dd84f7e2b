//! Tenant reports: counters and response-time histograms that are exact by construction and
//! hold no personal data.
//!
//! - [`facts`]: which stored changes count what (plain rules over the change stream's old and
//!   new images, beside the event rules of [`crate::events::derive`]). Every fact rides on the
//!   event its change makes, so it is counted exactly when that event is first recorded: the
//!   event log's dedupe (one id record per stream record) is the counters' dedupe too, and the
//!   counter updates are folded into the same transaction that appends the event pack
//!   (`store/events.rs`), so a redelivered or retried batch changes nothing.
//! - [`counters`]: a batch's facts folded into one delta per counter item (tenant × granularity
//!   × bucket × WhatsApp number): one `ADD` per item, not one write per event.
//! - [`histogram`]: fixed log-scale buckets for first response and resolution times.
//! - [`report`]: query parameters, bucket ranges (UTC hours, tenant-local days), the report
//!   rows with rates and percentiles, JSON and CSV.
//!
//! What a counter item holds: the bucket, the number's id (the tenant's own WhatsApp number,
//! never a customer's), and numbers under attribute names made of metric names, message types,
//! categories, template names, broadcast ids and Meta error codes. No contact id, phone number,
//! name or text: an erasure leaves counters as they are (docs/privacy.md).

pub mod counters;
pub mod facts;
pub mod histogram;
pub mod hours;
pub mod report;

use chrono::{DateTime, Utc};

/// One thing a change counts: when (which buckets), on which of the tenant's numbers, and the
/// counter attributes it adds to (see [`counters`] for the names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub at: DateTime<Utc>,
    /// The tenant's WhatsApp number (phone number id); [`NO_NUMBER`] when the fact belongs to
    /// no number (consent changes, messages stored before tenants had several numbers).
    pub phone: String,
    pub adds: Vec<(String, u64)>,
    /// Durations for the histograms (first response, resolution): measured when counted, in
    /// the tenant's business hours if it set them.
    pub durations: Vec<Timed>,
    /// The tenant's user the fact is about (per-user metrics: counted only when the tenant
    /// enabled them, in the user's own items, never in the number's).
    pub user: Option<String>,
}

/// A span of time for histogram `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    pub name: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The number key of facts that belong to no number.
pub const NO_NUMBER: &str = "-";

/// How long counters are kept unless the tenant chose otherwise (`reports_days` of the
/// retention settings), and the allowed range.
pub const REPORTS_DAYS_DEFAULT: u32 = 400;
pub const REPORTS_DAYS: (u32, u32) = (1, 3650);

impl Fact {
    /// A fact of counts only.
    pub fn counts(at: DateTime<Utc>, phone: String, adds: Vec<(String, u64)>) -> Fact {
        Fact {
            at,
            phone,
            adds,
            durations: Vec::new(),
            user: None,
        }
    }

    /// A fact about one of the tenant's users.
    pub fn of_user(at: DateTime<Utc>, user: &str, adds: Vec<(String, u64)>) -> Fact {
        Fact {
            user: Some(user.to_owned()),
            ..Fact::counts(at, NO_NUMBER.to_owned(), adds)
        }
    }
}
