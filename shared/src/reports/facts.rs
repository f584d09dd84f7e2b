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

use super::counters::{count, count_by};
use super::{Fact, NO_NUMBER, Timed};
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
    field(image, name).and_then(Value::as_str).and_then(|t| t.parse().ok())
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
    let Some(at) = time(new, "timestamp") else {
        return Vec::new();
    };
    let phone = phone_of(new);
    let message_type = text(new, "type");
    let inserted = old.is_none();
    if text(new, "direction") == "inbound" {
        if !inserted {
            return Vec::new();
        }
        let adds = vec![(count("received"), 1), (count_by("received", "type", message_type), 1)];
        return vec![Fact::counts(at, phone, adds)];
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
        return vec![Fact::counts(at, phone, adds)];
    }
    if inserted {
        return Vec::new();
    }
    let (old_rank, new_rank) = (number(old, "status_rank"), number(new, "status_rank"));
    let passed: Vec<MessageStatus> = LADDER
        .iter()
        .copied()
        .filter(|step| old_rank < step.rank() && step.rank() <= new_rank)
        .collect();
    let adds: Vec<(String, u64)> = passed.iter().flat_map(|step| dimensioned(step.as_str())).collect();
    if adds.is_empty() {
        return Vec::new();
    }
    let mut facts = vec![Fact::counts(at, phone, adds)];
    // A reply of one of the tenant's users, counted once it is sent.
    if passed.contains(&MessageStatus::Sent)
        && let Some(user) = field(new, "sent_by").and_then(Value::as_str)
    {
        facts.push(Fact::of_user(at, user, vec![(count("replies"), 1)]));
    }
    facts
}

fn timed(name: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Timed {
    Timed {
        name: name.to_owned(),
        from,
        to,
    }
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
        facts.push(Fact::counts(at, phone.clone(), vec![(count("opened"), 1)]));
    } else if before != after && after == "resolved" {
        let resolved_at = time(new, "resolved_at").unwrap_or(at);
        let mut fact = Fact::counts(resolved_at, phone.clone(), vec![(count("resolved"), 1)]);
        if let Some(start) = time(old, "measured_from").or_else(|| time(old, "opened_at")) {
            fact.durations.push(timed("resolution", start, resolved_at));
        }
        if let Some(user) = field(new, "resolved_by").and_then(Value::as_str) {
            let mut theirs = Fact::of_user(resolved_at, user, vec![(count("resolutions"), 1)]);
            theirs.durations = fact.durations.clone();
            facts.push(theirs);
        }
        facts.push(fact);
    }
    if let Some(start) = first_response_start(old, new)
        && let Some(answered) = time(new, "last_outbound_at")
    {
        let mut fact = Fact::counts(answered, phone, Vec::new());
        fact.durations.push(timed("first_response", start, answered));
        if let Some(user) = field(new, "last_outbound_by").and_then(Value::as_str) {
            let mut theirs = Fact::of_user(answered, user, Vec::new());
            theirs.durations = fact.durations.clone();
            facts.push(theirs);
        }
        facts.push(fact);
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
    vec![Fact::counts(at, NO_NUMBER.to_owned(), vec![(count(metric), 1)])]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn out(status: &str, rank: i64) -> Value {
        json!({"message_id": "m1", "contact_id": "c1", "direction": "outbound", "type": "template",
               "phone_number_id": "1001", "category": "utility", "broadcast_id": "b1",
               "content": {"name": "order_update", "components": [{"text": "Ann's parcel"}]},
               "status": status, "status_rank": rank, "timestamp": "2026-12-01T12:34:00Z"})
    }

    fn spans(facts: &[Fact]) -> Vec<(String, i64)> {
        facts
            .iter()
            .flat_map(|f| {
                f.durations
                    .iter()
                    .map(|d| (d.name.clone(), (d.to - d.from).num_seconds()))
            })
            .collect()
    }

    fn names(facts: &[Fact]) -> Vec<String> {
        facts
            .iter()
            .flat_map(|f| f.adds.iter().map(|(n, _)| n.clone()))
            .collect()
    }

    #[test]
    fn each_ladder_step_counts_once_with_its_dimensions_and_skipped_steps_count_too() {
        let t = |old: Option<Value>, new: Value| facts("MSG", old.as_ref(), Some(&new), Utc::now());
        assert!(t(None, out("queued", 0)).is_empty());
        let sent = t(Some(out("queued", 0)), out("sent", 10));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].phone, "1001");
        assert_eq!(sent[0].at, "2026-12-01T12:34:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(
            names(&sent),
            [
                "n:sent",
                "n:sent|type=template",
                "n:sent|category=utility",
                "n:sent|template=order_update",
                "n:sent|broadcast=b1"
            ]
        );
        // `read` straight after `sent`: delivered and read.
        let read = names(&t(Some(out("sent", 10)), out("read", 30)));
        assert!(read.contains(&"n:delivered".to_owned()) && read.contains(&"n:read".to_owned()));
        assert!(!read.contains(&"n:sent".to_owned()));
        // Straight to `played` from queued: all three steps.
        let played = names(&t(Some(out("queued", 0)), out("played", 40)));
        assert_eq!(played.iter().filter(|n| !n.contains('|')).count(), 3);
        // Duplicates and late lower receipts: nothing.
        assert!(t(Some(out("read", 30)), out("read", 30)).is_empty());
        assert!(t(Some(out("read", 30)), out("delivered", 30)).is_empty());
        // A failure: once, by code, with its dimensions.
        let mut failed = out("failed", 100);
        failed["error"] = json!({"code": 131047, "title": "Re-engagement message"});
        let f = names(&t(Some(out("sent", 10)), failed.clone()));
        assert!(f.contains(&"n:failed".to_owned()) && f.contains(&"n:failed|code=131047".to_owned()));
        assert!(t(Some(failed.clone()), failed).is_empty());
        assert!(names(&t(None, out("rejected", 100))).contains(&"n:failed|code=none".to_owned()));
        // Nothing personal in any name: no contact, no text.
        let all = names(&t(Some(out("queued", 0)), out("read", 30))).join(" ");
        assert!(!all.contains("c1") && !all.contains("Ann"));
    }

    #[test]
    fn inbound_messages_count_once_by_type_and_deletions_nothing() {
        let msg = json!({"message_id": "m2", "contact_id": "c1", "direction": "inbound", "type": "image",
                         "status": "received", "status_rank": 0, "timestamp": "2026-12-01T12:00:00Z"});
        let f = facts("MSG", None, Some(&msg), Utc::now());
        assert_eq!(names(&f), ["n:received", "n:received|type=image"]);
        assert_eq!(f[0].phone, NO_NUMBER, "stored before numbers were recorded");
        assert!(facts("MSG", Some(&msg), Some(&msg), Utc::now()).is_empty());
        assert!(facts("MSG", Some(&msg), None, Utc::now()).is_empty());
    }

    fn conv(status: &str, extra: Value) -> Value {
        let mut c = json!({"conversation_id": "c1-1001", "contact_id": "c1", "phone_number_id": "1001",
                           "status": status, "opened_at": "2026-12-01T10:00:00Z"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    }

    #[test]
    fn first_responses_and_resolutions_are_measured_per_opening() {
        let at: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let waiting = conv("open", json!({"measured_from": "2026-12-01T10:00:00Z"}));
        let answered = conv(
            "open",
            json!({"measured_from": "2026-12-01T10:00:00Z", "responded_from": "2026-12-01T10:00:00Z",
                   "last_outbound_at": "2026-12-01T10:02:00Z"}),
        );
        let f = facts("CONV#1001", Some(&waiting), Some(&answered), at);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].at, "2026-12-01T10:02:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(spans(&f), [("first_response".to_owned(), 120)]);
        assert!(f[0].adds.is_empty());
        // A second reply of the same measurement: nothing.
        let mut again = answered.clone();
        again["last_outbound_at"] = json!("2026-12-01T10:30:00Z");
        assert!(facts("CONV#1001", Some(&answered), Some(&again), at).is_empty());
        // Resolved: counted with the time since the measurement's start.
        let resolved = conv(
            "resolved",
            json!({"resolved_at": "2026-12-01T11:00:00Z",
                                               "responded_from": "2026-12-01T10:00:00Z"}),
        );
        let f = facts("CONV#1001", Some(&again), Some(&resolved), at);
        assert!(f[0].adds.contains(&("n:resolved".into(), 1)));
        assert_eq!(spans(&f), [("resolution".to_owned(), 3600)]);
        // Reopened: opened again, and the reply to the new measurement is a first response.
        let reopened = conv(
            "open",
            json!({"measured_from": "2026-12-02T09:00:00Z",
                                           "responded_from": "2026-12-01T10:00:00Z"}),
        );
        assert_eq!(
            names(&facts("CONV#1001", Some(&resolved), Some(&reopened), at)),
            ["n:opened"]
        );
        let mut replied = reopened.clone();
        replied["responded_from"] = json!("2026-12-02T09:00:00Z");
        replied["last_outbound_at"] = json!("2026-12-02T09:00:30Z");
        let f = facts("CONV#1001", Some(&reopened), Some(&replied), at);
        assert_eq!(spans(&f), [("first_response".to_owned(), 30)]);
        // Our message to a conversation nobody opened: no measurement.
        let ours = conv(
            "pending",
            json!({"last_outbound_at": "2026-12-01T10:00:00Z", "responded_from": null}),
        );
        assert_eq!(names(&facts("CONV#1001", None, Some(&ours), at)), ["n:opened"]);
    }

    #[test]
    fn users_get_their_replies_resolutions_and_first_responses() {
        let at = Utc::now();
        let mine = |status: &str, rank: i64| {
            let mut m = out(status, rank);
            m["sent_by"] = json!("u1");
            m
        };
        let sent = facts("MSG", Some(&mine("queued", 0)), Some(&mine("sent", 10)), at);
        assert_eq!(sent.len(), 2);
        assert_eq!(
            (sent[1].user.as_deref(), names(&sent[1..])),
            (Some("u1"), vec!["n:replies".to_owned()])
        );
        // Later steps are not replies again.
        assert!(
            facts("MSG", Some(&mine("sent", 10)), Some(&mine("read", 30)), at)
                .iter()
                .all(|f| f.user.is_none())
        );
        let waiting = conv("open", json!({"measured_from": "2026-12-01T10:00:00Z"}));
        let answered = conv(
            "open",
            json!({"measured_from": "2026-12-01T10:00:00Z", "responded_from": "2026-12-01T10:00:00Z",
                   "last_outbound_at": "2026-12-01T10:02:00Z", "last_outbound_by": "u1"}),
        );
        let f = facts("CONV#1001", Some(&waiting), Some(&answered), at);
        let theirs: Vec<&Fact> = f.iter().filter(|f| f.user.as_deref() == Some("u1")).collect();
        assert_eq!(theirs.len(), 1);
        assert_eq!(
            (theirs[0].durations[0].to - theirs[0].durations[0].from).num_seconds(),
            120
        );
        let resolved = conv(
            "resolved",
            json!({"resolved_at": "2026-12-01T11:00:00Z", "resolved_by": "u2"}),
        );
        let f = facts("CONV#1001", Some(&answered), Some(&resolved), at);
        let theirs: Vec<&Fact> = f.iter().filter(|f| f.user.is_some()).collect();
        assert_eq!(
            (theirs[0].user.as_deref(), names(&[theirs[0].clone()])),
            (Some("u2"), vec!["n:resolutions".to_owned()])
        );
        assert_eq!(spans(&[theirs[0].clone()]), [("resolution".to_owned(), 3600)]);
        // Facts without a user stay the number's.
        assert!(
            f.iter()
                .any(|f| f.user.is_none() && names(std::slice::from_ref(f)) == ["n:resolved"])
        );
    }

    #[test]
    fn consent_changes_count_opt_outs_and_ins_without_a_number() {
        let c = |m: &str| json!({"contact_id": "c1", "consent": {"marketing": m}});
        let at = Utc::now();
        let f = facts("PROFILE", Some(&c("opted_in")), Some(&c("opted_out")), at);
        assert_eq!(
            (names(&f), f[0].phone.as_str()),
            (vec!["n:opt_out".to_owned()], NO_NUMBER)
        );
        assert_eq!(
            names(&facts("PROFILE", Some(&c("opted_out")), Some(&c("opted_in")), at)),
            ["n:opt_in"]
        );
        assert!(facts("PROFILE", Some(&c("opted_in")), Some(&c("opted_in")), at).is_empty());
        assert!(facts("PROFILE", None, Some(&c("opted_in")), at).is_empty());
    }
}
