//! Which stored changes count what: one rule per kind of item, over the change stream's images,
//! mirroring the event rules of [`crate::events::derive`] (each fact rides on the event its
//! change makes — [`crate::events::derive::derive`] attaches them — so a rule here may count
//! only changes that make an event; a test there holds it to that).
//!
//! - Messages are counted in the bucket of the message's own time (the customer's send time for
//!   received messages, the creation time for ours), so a bucket's `delivered / sent` is over
//!   one cohort of messages and never exceeds 1, and the counts equal what the stored messages
//!   say however late their receipts arrive.
//! - An outbound message counts each step of the ladder `sent < delivered < read` it passes,
//!   once, when its stored status first reaches or passes it: a `read` that arrives before (or
//!   instead of) `delivered` counts `delivered` too (the handset had it), a duplicate or a late
//!   lower receipt counts nothing (the status never moves back). `played` counts as `read`.
//!   `failed` / `rejected` count once, by Meta's error code; a message that failed after `sent`
//!   stays counted as sent.
//! - Conversations count `opened` (created or reopened) and `resolved` when the change happens;
//!   the first response of a measurement (a customer's first message since the conversation was
//!   created or last resolved, or an agent's reopen) is counted when our first message after it
//!   is stored; the resolution time runs from the same start to the resolve.
//! - Consent changes count `opt_out` / `opt_in` (no number: consent is the contact's).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::counters::{count, count_by, histogram_bucket, histogram_sum};
use super::histogram::bucket_of;
use super::{Fact, NO_NUMBER};
use crate::message::MessageStatus;
use crate::store::keys;

/// The facts of one change of the item with sort key `sk`.
pub fn facts(sk: &str, old: Option<&Value>, new: Option<&Value>, at: DateTime<Utc>) -> Vec<Fact> {
    if sk == keys::MESSAGE_SK {
        message_facts(old, new)
    } else if sk.starts_with(keys::CONVERSATION_PREFIX) {
        conversation_facts(old, new, at)
    } else if sk == keys::PROFILE_SK {
        consent_facts(old, new, at)
    } else {
        Vec::new()
    }
}

fn field<'a>(image: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    image.and_then(|i| i.get(name)).filter(|v| !v.is_null())
}

fn text<'a>(image: Option<&'a Value>, name: &str) -> &'a str {
    field(image, name).and_then(Value::as_str).unwrap_or_default()
}

fn time(image: Option<&Value>, name: &str) -> Option<DateTime<Utc>> {
    field(image, name)
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
}

fn number(image: Option<&Value>, name: &str) -> i64 {
    field(image, name)
        .and_then(|r| r.as_i64().or_else(|| r.as_str().and_then(|s| s.parse().ok())))
        .unwrap_or(0)
}

fn phone_of(image: Option<&Value>) -> String {
    match text(image, "phone_number_id") {
        "" => NO_NUMBER.to_owned(),
        p => p.to_owned(),
    }
}

const FAILED: [&str; 2] = ["failed", "rejected"];

/// The steps of the ladder an outbound message is counted at.
const LADDER: [MessageStatus; 3] = [MessageStatus::Sent, MessageStatus::Delivered, MessageStatus::Read];

fn message_facts(old: Option<&Value>, new: Option<&Value>) -> Vec<Fact> {
    let Some(new_image) = new else { return Vec::new() };
    let Some(at) = time(new, "timestamp") else { return Vec::new() };
    let phone = phone_of(new);
    let message_type = text(new, "type");
    let inserted = old.is_none();
    if text(new, "direction") == "inbound" {
        if !inserted {
            return Vec::new();
        }
        let adds = vec![
            (count("received"), 1),
            (count_by("received", "type", message_type), 1),
        ];
        return vec![Fact { at, phone, adds }];
    }
    // Outbound: the dimensions every count of the message carries.
    let category = match text(new, "category") {
        "" => crate::sending::Category::default_for(message_type),
        c => serde_json::from_value(Value::from(c)).unwrap_or(crate::sending::Category::default_for(message_type)),
    };
    let category = serde_json::to_value(category)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let template = (message_type == "template")
        .then(|| new_image.pointer("/content/name").and_then(Value::as_str))
        .flatten();
    let broadcast = text(new, "broadcast_id");
    let dimensioned = |metric: &str| {
        let mut adds = vec![
            (count(metric), 1),
            (count_by(metric, "type", message_type), 1),
            (count_by(metric, "category", &category), 1),
        ];
        if let Some(t) = template {
            adds.push((count_by(metric, "template", t), 1));
        }
        if !broadcast.is_empty() {
            adds.push((count_by(metric, "broadcast", broadcast), 1));
        }
        adds
    };
    let (status, was) = (text(new, "status"), text(old, "status"));
    if FAILED.contains(&status) {
        if FAILED.contains(&was) {
            return Vec::new();
        }
        let mut adds = dimensioned("failed");
        let code = field(new, "error")
            .and_then(|e| e.get("code"))
            .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
            .unwrap_or_else(|| "none".to_owned());
        adds.push((count_by("failed", "code", &code), 1));
        return vec![Fact { at, phone, adds }];
    }
    if inserted {
        return Vec::new();
    }
    let (old_rank, new_rank) = (number(old, "status_rank"), number(new, "status_rank"));
    let adds: Vec<(String, u64)> = LADDER
        .iter()
        .filter(|step| old_rank < step.rank() && step.rank() <= new_rank)
        .flat_map(|step| dimensioned(step.as_str()))
        .collect();
    if adds.is_empty() {
        return Vec::new();
    }
    vec![Fact { at, phone, adds }]
}

fn duration_adds(histogram: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(String, u64)> {
    let seconds = (to - from).num_seconds().max(0) as u64;
    vec![
        (count(histogram), 1),
        (histogram_bucket(histogram, bucket_of(seconds as f64)), 1),
        (histogram_sum(histogram), seconds),
    ]
}

fn conversation_facts(old: Option<&Value>, new: Option<&Value>, at: DateTime<Utc>) -> Vec<Fact> {
    if field(new, "status").is_none() {
        return Vec::new();
    }
    let phone = phone_of(new);
    let (before, after) = (text(old, "status"), text(new, "status"));
    let created = field(old, "status").is_none();
    let mut facts = Vec::new();
    if created || (before == "resolved" && after != "resolved") {
        facts.push(Fact {
            at,
            phone: phone.clone(),
            adds: vec![(count("opened"), 1)],
        });
    } else if before != after && after == "resolved" {
        let resolved_at = time(new, "resolved_at").unwrap_or(at);
        let mut adds = vec![(count("resolved"), 1)];
        if let Some(start) = time(old, "measured_from").or_else(|| time(old, "opened_at")) {
            adds.extend(duration_adds("resolution", start, resolved_at));
        }
        facts.push(Fact {
            at: resolved_at,
            phone: phone.clone(),
            adds,
        });
    }
    if let Some(start) = first_response_start(old, new)
        && let Some(answered) = time(new, "last_outbound_at")
    {
        facts.push(Fact {
            at: answered,
            phone,
            adds: duration_adds("first_response", start, answered),
        });
    }
    facts
}

/// The start of the measurement our message just answered first: `responded_from` (the
/// measurement start copied by each of our messages) moved to a new start.
pub fn first_response_start(old: Option<&Value>, new: Option<&Value>) -> Option<DateTime<Utc>> {
    let answered = time(new, "responded_from")?;
    (time(old, "responded_from") != Some(answered)).then_some(answered)
}

fn consent_facts(old: Option<&Value>, new: Option<&Value>, at: DateTime<Utc>) -> Vec<Fact> {
    if old.is_none() || new.is_none() {
        return Vec::new();
    }
    let marketing = |image: Option<&Value>| {
        field(image, "consent")
            .and_then(|c| c.get("marketing"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned()
    };
    let (before, after) = (marketing(old), marketing(new));
    let metric = match after.as_str() {
        _ if before == after => return Vec::new(),
        "opted_out" => "opt_out",
        "opted_in" => "opt_in",
        _ => return Vec::new(),
    };
    vec![Fact {
        at,
        phone: NO_NUMBER.to_owned(),
        adds: vec![(count(metric), 1)],
    }]
}
