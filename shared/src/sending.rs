//! Outbound messages: request validation (shaped as Meta's send API), the sending rules
//! (consent, restriction, 24 h customer-service window) and the per-number send schedule.
//! Pure functions, used by the API before queueing and by the sender again right before the
//! Graph call. Meta's send errors are classified in `graph.rs`.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::contact::{Contact, MarketingConsent};

/// Meta's limit on a text message body.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Customer-service window opened by the customer's last inbound message.
pub const SERVICE_WINDOW_HOURS: i64 = 24;
/// Meta's pair rate: about one message per 6 s to the same recipient.
pub const PAIR_INTERVAL_MS: i64 = 6_000;

/// A queued message older than this is not sent any more: it fails `not_sent_in_time` (the
/// sender's deadline, and the sweeper's), so nothing stays `queued` for ever and a message an
/// agent wrote long ago does not reach the customer out of context.
pub const SEND_DEADLINE_MS: i64 = 60 * 60 * 1000;

/// Per-recipient order: the message that must leave before `message_id`, if any — the oldest
/// id in the recipient's queue that is older than it (ids are ULIDs of the time the API accepted
/// the message, so id order is acceptance order). Entries older than `floor_id` (past the send
/// deadline) no longer hold anyone up.
pub fn first_in_line<'a>(
    queue: impl IntoIterator<Item = &'a str>,
    message_id: &str,
    floor_id: &str,
) -> Option<&'a str> {
    queue.into_iter().filter(|id| *id < message_id && *id >= floor_id).min()
}

/// Each aligned second's sends are fitted into its first 900 ms. A request reaches Meta a
/// few milliseconds after its slot (more on a busy host), and a schedule spread evenly over the
/// whole second would now and then carry its last sends into the next one, which holds a full
/// quota of its own: one send too many in a second as Meta counts it (`130429`). Kept clear,
/// the last 100 ms absorb that delay without pacing below the rate; a sliding one-second
/// window still sees at most the rate (plus one), as the pattern repeats every second.
pub const SEND_WINDOW_PERMILLE: i64 = 900;

const SECOND_US: i64 = 1_000_000;

/// The schedule's clock at wall-clock time `wall_us` (µs since the epoch): the earliest schedule
/// time whose slot is not before `wall_us`. Schedule time runs evenly through each aligned
/// second and meets wall-clock time at every second's start; its whole second maps onto the
/// first [`SEND_WINDOW_PERMILLE`] of the wall-clock one, so past 900 ms the next slot is the
/// next second's first.
pub fn schedule_clock(wall_us: i64) -> i64 {
    let second = wall_us.div_euclid(SECOND_US) * SECOND_US;
    let offset = wall_us - second;
    if offset >= SEND_WINDOW_PERMILLE * 1_000 {
        second + SECOND_US
    } else {
        // Rounded up, so the slot is never before `wall_us`.
        second + (offset * 1_000 + SEND_WINDOW_PERMILLE - 1) / SEND_WINDOW_PERMILLE
    }
}

/// The wall-clock time (µs since the epoch) of schedule time `schedule_us`.
pub fn wall_clock(schedule_us: i64) -> i64 {
    let second = schedule_us.div_euclid(SECOND_US) * SECOND_US;
    second + (schedule_us - second) * SEND_WINDOW_PERMILLE / 1_000
}

/// A phone number's send schedule, shared by every concurrent sender (a generic cell rate
/// algorithm on the schedule's clock, see [`schedule_clock`]): slots are `interval_us` of
/// schedule time apart, so each aligned second holds at most the configured rate, in its first
/// 900 ms, and a burst is smoothed instead of front-loaded. The store keeps only the next free
/// slot (schedule time) per number, so booking is one atomic addition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendSchedule {
    /// Schedule time between two sends of the number: one second over the rate, rounded up
    /// (never faster).
    pub interval_us: i64,
    /// How far ahead of now slots are handed out; a sender sleeps until each slot is due.
    pub horizon_us: i64,
}

impl SendSchedule {
    pub fn new(rate_per_second: u32, horizon: std::time::Duration) -> Self {
        let rate = i64::from(rate_per_second.max(1));
        SendSchedule {
            interval_us: (SECOND_US + rate - 1) / rate,
            horizon_us: horizon.as_micros().min(i64::MAX as u128) as i64,
        }
    }
}

/// Consecutive send slots: the `i`-th (from 0) is at schedule time
/// `first_slot_us + i * interval_us`, due at its wall-clock time ([`SlotGrant::due_us`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrant {
    pub first_slot_us: i64,
    pub count: u32,
    pub interval_us: i64,
}

impl SlotGrant {
    /// When the `i`-th slot is due (wall clock, µs since the epoch).
    pub fn due_us(&self, i: u32) -> i64 {
        wall_clock(self.first_slot_us + i64::from(i) * self.interval_us)
    }
}

/// What the schedule answers to a request for slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotDecision {
    /// Granted; the schedule's next free slot (schedule time) moves to `next_free_us`.
    Grant { grant: SlotGrant, next_free_us: i64 },
    /// The schedule is booked beyond the horizon; ask again at `retry_at_us` (wall clock).
    Full { retry_at_us: i64 },
}

/// Books `count` slots on a schedule whose next free slot is `next_free_us` (schedule time;
/// `None`: never used) at wall-clock `now_us`. Slots in the past are not handed out: an idle
/// schedule restarts at now, so idle time never turns into a burst.
pub fn book_slots(next_free_us: Option<i64>, now_us: i64, count: u32, schedule: SendSchedule) -> SlotDecision {
    let now = schedule_clock(now_us);
    let start = next_free_us.map_or(now, |next| next.max(now));
    if start > now + schedule.horizon_us {
        return SlotDecision::Full {
            retry_at_us: wall_clock(start - schedule.horizon_us),
        };
    }
    SlotDecision::Grant {
        grant: SlotGrant {
            first_slot_us: start,
            count,
            interval_us: schedule.interval_us,
        },
        next_free_us: start + i64::from(count) * schedule.interval_us,
    }
}

pub const MESSAGE_TYPES: [&str; 10] = [
    "text",
    "template",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "interactive",
    "reaction",
    "location",
];

/// What a message is for, which decides the consent rule (only `marketing` needs opt-in
/// not to be withdrawn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
    Service,
}

impl Category {
    /// Without a category, a template counts as marketing (the conservative reading for an
    /// opted-out customer) and a free-form message as service.
    pub fn default_for(message_type: &str) -> Category {
        if message_type == "template" {
            Category::Marketing
        } else {
            Category::Service
        }
    }
}

/// A send request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    pub contact_id: Option<String>,
    /// E.164.
    pub to: Option<String>,
    /// `to` is shaped as E.164 but outside the numbering plan (`contact::phone_on_record`):
    /// only a contact that already has it can be sent to.
    pub to_on_record_only: bool,
    pub message_type: String,
    /// The type's object, as Meta's send API takes it.
    pub content: Value,
    pub reply_to: Option<String>,
    pub category: Category,
    /// The tenant's number to send from (phone number id); `None`: the conversation's, else
    /// the tenant's first.
    pub from: Option<String>,
    /// The category the caller named (`None`: left to us). A template's comes from the
    /// registry, and a named one must agree with it.
    pub declared_category: Option<Category>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendValidationError {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> SendValidationError {
    SendValidationError {
        code,
        message: message.into(),
    }
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, SendValidationError> {
    v.as_object()
        .ok_or_else(|| invalid("invalid_message", format!("{what} must be a JSON object")))
}

fn non_empty_str(obj: &Map<String, Value>, field: &str, what: &str) -> Result<(), SendValidationError> {
    match obj.get(field).and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() => Ok(()),
        _ => Err(invalid("invalid_message", format!("{what}.{field} is required"))),
    }
}

/// Validates the type's object against the shape of Meta's send API.
pub fn validate_content(message_type: &str, content: &Value) -> Result<(), SendValidationError> {
    let obj = object(content, message_type)?;
    match message_type {
        "text" => {
            let body = obj
                .get("body")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("invalid_message", "text.body is required"))?;
            let chars = body.chars().count();
            if chars == 0 || chars > MAX_TEXT_CHARS {
                return Err(invalid(
                    "invalid_message",
                    format!("text.body must be 1 to {MAX_TEXT_CHARS} characters"),
                ));
            }
            if obj.get("preview_url").is_some_and(|v| !v.is_boolean()) {
                return Err(invalid("invalid_message", "text.preview_url must be a boolean"));
            }
        }
        "template" => {
            non_empty_str(obj, "name", "template")?;
            // Without a language (or with code `auto`) the API picks one (template::language).
            if let Some(language) = obj.get("language") {
                let language = language
                    .as_object()
                    .ok_or_else(|| invalid("invalid_message", "template.language must be an object"))?;
                non_empty_str(language, "code", "template.language")?;
            }
            if obj.get("components").is_some_and(|v| !v.is_array()) {
                return Err(invalid("invalid_message", "template.components must be an array"));
            }
        }
        "image" | "video" | "audio" | "document" | "sticker" => {
            let has_id = obj.get("id").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
            let link = obj.get("link").and_then(Value::as_str);
            if has_id == link.is_some() {
                return Err(invalid(
                    "invalid_message",
                    format!("{message_type} needs exactly one of id or link"),
                ));
            }
            if link.is_some_and(|l| !l.starts_with("https://")) {
                return Err(invalid(
                    "invalid_message",
                    format!("{message_type}.link must be an https URL"),
                ));
            }
            if matches!(message_type, "audio" | "sticker") && obj.contains_key("caption") {
                return Err(invalid(
                    "invalid_message",
                    format!("{message_type} cannot have a caption"),
                ));
            }
            if obj
                .get("caption")
                .is_some_and(|c| c.as_str().is_none_or(|c| c.chars().count() > 1024))
            {
                return Err(invalid(
                    "invalid_message",
                    "caption must be a string of at most 1024 characters",
                ));
            }
        }
        "interactive" => {
            non_empty_str(obj, "type", "interactive")?;
            if !obj.get("action").is_some_and(Value::is_object) {
                return Err(invalid("invalid_message", "interactive.action is required"));
            }
        }
        "reaction" => {
            non_empty_str(obj, "message_id", "reaction")?;
            if !obj.get("emoji").is_some_and(Value::is_string) {
                return Err(invalid(
                    "invalid_message",
                    "reaction.emoji is required (empty removes a reaction)",
                ));
            }
        }
        "location" => {
            let coordinate = |field: &str, max: f64| {
                obj.get(field)
                    .and_then(Value::as_f64)
                    .filter(|v| v.abs() <= max)
                    .ok_or_else(|| {
                        invalid(
                            "invalid_message",
                            format!("location.{field} must be a number within ±{max}"),
                        )
                    })
            };
            coordinate("latitude", 90.0)?;
            coordinate("longitude", 180.0)?;
        }
        other => {
            return Err(invalid(
                "invalid_type",
                format!(
                    "type {other:?} is not supported; use one of {}",
                    MESSAGE_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Parses and validates the body of `POST /v1/messages`. Phone normalisation happens here
/// too (`to` must be E.164).
pub fn parse_send_request(body: &Value) -> Result<SendRequest, SendValidationError> {
    let obj = object(body, "the body")?;
    let allowed = ["contact_id", "to", "type", "reply_to", "category", "from"];
    // A body shaped as for Meta's send API may keep its envelope: these are the only values
    // Meta takes there, and what this API sends anyway.
    for (field, only) in [("messaging_product", "whatsapp"), ("recipient_type", "individual")] {
        if obj.get(field).is_some_and(|v| v.as_str() != Some(only)) {
            return Err(invalid("invalid_body", format!("{field} can only be \"{only}\"")));
        }
    }
    let message_type = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("invalid_type", "type is required"))?
        .to_owned();
    if !MESSAGE_TYPES.contains(&message_type.as_str()) {
        return Err(invalid(
            "invalid_type",
            format!("type must be one of {}", MESSAGE_TYPES.join(", ")),
        ));
    }
    for key in obj.keys() {
        let envelope = matches!(key.as_str(), "messaging_product" | "recipient_type");
        if !allowed.contains(&key.as_str()) && key != &message_type && !envelope {
            let shown = if key.len() <= 64 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                key.as_str()
            } else {
                "(not shown)"
            };
            return Err(invalid("invalid_body", format!("unknown field {shown}")));
        }
    }
    let content = obj
        .get(&message_type)
        .cloned()
        .ok_or_else(|| invalid("invalid_message", format!("the {message_type} object is required")))?;
    validate_content(&message_type, &content)?;
    let string = |field: &str| -> Result<Option<String>, SendValidationError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Some(_) => Err(invalid("invalid_body", format!("{field} must be a non-empty string"))),
        }
    };
    let contact_id = string("contact_id")?;
    let (to, to_on_record_only) = match string("to")? {
        Some(raw) => match crate::contact::normalize_phone(&raw) {
            Ok(phone) => (Some(phone), false),
            Err(_) => match crate::contact::phone_on_record(&raw) {
                Some(phone) => (Some(phone), true),
                None => return Err(invalid("invalid_phone", "to must be an E.164 phone number")),
            },
        },
        None => (None, false),
    };
    match (&contact_id, &to) {
        (None, None) => return Err(invalid("invalid_body", "contact_id or to is required")),
        (Some(_), Some(_)) => return Err(invalid("invalid_body", "give contact_id or to, not both")),
        _ => {}
    }
    let declared_category: Option<Category> = match obj.get("category") {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| {
            invalid(
                "invalid_category",
                "category must be marketing, utility, authentication or service",
            )
        })?),
    };
    let category = declared_category.unwrap_or_else(|| Category::default_for(&message_type));
    Ok(SendRequest {
        contact_id,
        to,
        to_on_record_only,
        message_type,
        content,
        reply_to: string("reply_to")?,
        category,
        from: match string("from")? {
            Some(f) if (1..=32).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => Some(f),
            Some(_) => return Err(invalid("invalid_from", "from must be a phone number id (digits)")),
            None => None,
        },
        declared_category,
    })
}

/// Why a message may not be sent now. Codes are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Restricted,
    OptedOut,
    OutsideServiceWindow,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Restricted => "contact_restricted",
            Refusal::OptedOut => "opted_out",
            Refusal::OutsideServiceWindow => "outside_service_window",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Restricted => "the contact is restricted: no outbound messages",
            Refusal::OptedOut => "the contact opted out of marketing messages",
            Refusal::OutsideServiceWindow => {
                "more than 24 hours since the contact's last message: only templates can be sent"
            }
        }
    }
}

/// The sending rules, in order of precedence.
pub fn check_rules(
    contact: &Contact,
    message_type: &str,
    category: Category,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    if contact.restricted {
        return Err(Refusal::Restricted);
    }
    if category == Category::Marketing && contact.consent.marketing == MarketingConsent::OptedOut {
        return Err(Refusal::OptedOut);
    }
    if message_type != "template" {
        let open = contact
            .last_inbound_at
            .is_some_and(|t| now - t < Duration::hours(SERVICE_WINDOW_HOURS));
        if !open {
            return Err(Refusal::OutsideServiceWindow);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_clock_compresses_each_second_into_its_first_900_ms() {
        // Whole seconds meet; inside a second the schedule runs 1/0.9 times as fast.
        assert_eq!(schedule_clock(5_000_000), 5_000_000);
        assert_eq!(wall_clock(5_000_000), 5_000_000);
        assert_eq!(schedule_clock(5_450_000), 5_500_000);
        assert_eq!(wall_clock(5_500_000), 5_450_000);
        // Past 900 ms the next slot is the next second's first.
        assert_eq!(schedule_clock(5_900_000), 6_000_000);
        assert_eq!(schedule_clock(5_999_999), 6_000_000);
        assert_eq!(wall_clock(5_999_999), 5_899_999);
        // A slot is never before the time it was asked for, and at most 1 µs after.
        for wall in (0..3_000_000).step_by(7_919).map(|t| 1_700_000_000_000_000 + t) {
            let due = wall_clock(schedule_clock(wall));
            let offset = wall % 1_000_000;
            if offset < 900_000 {
                assert!(due >= wall && due <= wall + 1, "{wall} -> {due}");
            } else {
                assert_eq!(due, wall - offset + 1_000_000);
            }
        }
    }

    #[test]
    fn the_schedule_spaces_sends_at_the_rate_and_never_faster() {
        let s = SendSchedule::new(1000, std::time::Duration::from_secs(2));
        assert_eq!(s.interval_us, 1_000);
        assert_eq!(SendSchedule::new(80, std::time::Duration::ZERO).interval_us, 12_500);
        // 333,333.3 µs rounded up: three per second, never four.
        assert_eq!(SendSchedule::new(3, std::time::Duration::ZERO).interval_us, 333_334);
        let SlotDecision::Grant { grant, next_free_us } = book_slots(None, 5_000_000, 10, s) else {
            panic!("an unused schedule grants at once");
        };
        assert_eq!(grant.due_us(0), 5_000_000);
        // 900 µs of wall-clock time apart: 1,000 sends in the first 900 ms of the second.
        assert_eq!(grant.due_us(9), 5_008_100);
        assert_eq!(next_free_us, 5_010_000);
        // The next request continues where the last one ended.
        let SlotDecision::Grant { grant, .. } = book_slots(Some(next_free_us), 5_000_100, 5, s) else {
            panic!("within the horizon");
        };
        assert_eq!(grant.first_slot_us, 5_010_000);
    }

    #[test]
    fn idle_time_is_not_saved_up_for_a_burst() {
        let s = SendSchedule::new(100, std::time::Duration::from_secs(1));
        // Last slot long past: the schedule restarts now, not in the past.
        let SlotDecision::Grant { grant, next_free_us } = book_slots(Some(1_000), 9_000_000, 3, s) else {
            panic!("idle schedule grants");
        };
        assert_eq!(grant.due_us(0), 9_000_000);
        assert_eq!(next_free_us, 9_000_000 + 3 * s.interval_us);
        // Asked in a second's last 100 ms, the first slot is the next second's start.
        let SlotDecision::Grant { grant, .. } = book_slots(None, 9_950_000, 1, s) else {
            panic!("idle schedule grants");
        };
        assert_eq!(grant.due_us(0), 10_000_000);
    }

    #[test]
    fn a_schedule_booked_beyond_the_horizon_says_when_to_ask_again() {
        let s = SendSchedule::new(10, std::time::Duration::from_secs(1));
        // Booked until now + 1.5 s with a 1 s horizon: full until the schedule's clock reaches
        // 10.5 s, which is wall-clock 10.45 s.
        assert_eq!(
            book_slots(Some(11_500_000), 10_000_000, 1, s),
            SlotDecision::Full {
                retry_at_us: 10_450_000
            }
        );
        // Exactly at the horizon still grants.
        assert!(matches!(
            book_slots(Some(11_000_000), 10_000_000, 1, s),
            SlotDecision::Grant { .. }
        ));
    }

    #[test]
    fn each_aligned_second_holds_at_most_the_rate_and_keeps_its_last_100_ms_clear() {
        // Many senders booking batches of various sizes back to back, as fast as they can,
        // starting mid-second.
        let s = SendSchedule::new(1000, std::time::Duration::from_secs(10));
        let mut next = None;
        let mut due = Vec::new();
        for (i, now) in (0..400).map(|i| (i, 1_337_000 + i * 3_000)) {
            match book_slots(next, now, 1 + (i % 10) as u32, s) {
                SlotDecision::Grant { grant, next_free_us } => {
                    due.extend((0..grant.count).map(|k| grant.due_us(k)));
                    next = Some(next_free_us);
                }
                SlotDecision::Full { .. } => unreachable!("horizon is long"),
            }
        }
        due.sort_unstable();
        assert!(
            due.windows(2).all(|w| w[1] - w[0] >= 900),
            "never two sends in one slot"
        );
        let mut per_second = std::collections::BTreeMap::<i64, u32>::new();
        for &t in &due {
            // Clear of the last 100 ms: a send delayed by up to that on its way still lands in
            // its own second.
            assert!(t % 1_000_000 < 900_000, "{t} falls in a second's last 100 ms");
            *per_second.entry(t / 1_000_000).or_default() += 1;
        }
        assert!(per_second.values().all(|&n| n <= 1000), "{per_second:?}");
        // Full seconds carry the whole rate: nothing is paced below it.
        assert_eq!(per_second[&2], 1000);
        // Any one-second span, aligned or not, holds at most the rate plus one.
        for (i, &start) in due.iter().enumerate() {
            let in_one_second = due[i..].iter().take_while(|&&t| t < start + 1_000_000).count();
            assert!(in_one_second <= 1001, "{in_one_second} sends within one second");
        }
    }
    use serde_json::json;

    fn contact(now: DateTime<Utc>) -> Contact {
        let valid = crate::contact::NewContact::from_json(br#"{"phone": "+14155550123"}"#)
            .unwrap()
            .validate()
            .unwrap();
        let mut c = Contact::new("t", valid, now);
        c.last_inbound_at = Some(now - Duration::hours(1));
        c
    }

    #[test]
    fn a_body_in_metas_shape_keeps_its_envelope_and_only_metas_values_for_it() {
        let meta_shaped = json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                                 "to": "+14155550123", "type": "text", "text": {"body": "hi"}});
        let r = parse_send_request(&meta_shaped).unwrap();
        assert_eq!(
            (r.to.as_deref(), r.content.clone()),
            (Some("+14155550123"), json!({"body": "hi"}))
        );
        for (field, value) in [("messaging_product", json!("sms")), ("recipient_type", json!("group"))] {
            let mut body = meta_shaped.clone();
            body[field] = value;
            let err = parse_send_request(&body).unwrap_err();
            assert_eq!(err.code, "invalid_body", "{field}");
        }
    }

    #[test]
    fn text_requests_parse_and_bound_the_body() {
        let r = parse_send_request(&json!({"to": "+1 415 555 0123", "type": "text", "text": {"body": "hi"}})).unwrap();
        assert_eq!(r.to.as_deref(), Some("+14155550123"));
        assert_eq!(r.category, Category::Service);
        let long = "x".repeat(MAX_TEXT_CHARS);
        assert!(parse_send_request(&json!({"to": "+14155550123", "type": "text", "text": {"body": long}})).is_ok());
        let too_long = "x".repeat(MAX_TEXT_CHARS + 1);
        let err =
            parse_send_request(&json!({"to": "+14155550123", "type": "text", "text": {"body": too_long}})).unwrap_err();
        assert_eq!(err.code, "invalid_message");
    }

    #[test]
    fn request_shape_errors() {
        let cases = [
            (json!({"type": "text", "text": {"body": "x"}}), "invalid_body"),
            (
                json!({"to": "+14155550123", "contact_id": "c", "type": "text", "text": {"body": "x"}}),
                "invalid_body",
            ),
            (json!({"to": "+14155550123", "type": "fax", "fax": {}}), "invalid_type"),
            (json!({"to": "+14155550123", "type": "text"}), "invalid_message"),
            (
                json!({"to": "12", "type": "text", "text": {"body": "x"}}),
                "invalid_phone",
            ),
            (
                json!({"to": "+14155550123", "type": "text", "text": {"body": "x"}, "extra": 1}),
                "invalid_body",
            ),
            (
                json!({"to": "+14155550123", "type": "text", "text": {"body": "x"}, "category": "spam"}),
                "invalid_category",
            ),
            (
                json!({"to": "+14155550123", "type": "image", "image": {"id": "1", "link": "https://x"}}),
                "invalid_message",
            ),
            (
                json!({"to": "+14155550123", "type": "image", "image": {"link": "http://x"}}),
                "invalid_message",
            ),
            (
                json!({"to": "+14155550123", "type": "audio", "audio": {"id": "1", "caption": "c"}}),
                "invalid_message",
            ),
            (
                json!({"to": "+14155550123", "type": "template", "template": {"name": "t", "language": "en"}}),
                "invalid_message",
            ),
            (
                json!({"to": "+14155550123", "type": "location", "location": {"latitude": 91, "longitude": 0}}),
                "invalid_message",
            ),
            (
                json!({"to": "+14155550123", "type": "reaction", "reaction": {"message_id": "w"}}),
                "invalid_message",
            ),
            (
                json!({"to": "+14155550123", "type": "interactive", "interactive": {"type": "button"}}),
                "invalid_message",
            ),
            (json!("text"), "invalid_message"),
        ];
        for (body, code) in cases {
            let err = parse_send_request(&body).map(|_| ()).unwrap_err();
            assert_eq!(err.code, code, "{body}");
        }
        for ok in [
            json!({"contact_id": "c", "type": "template", "template": {"name": "hello_world", "language": {"code": "en_US"}}}),
            json!({"contact_id": "c", "type": "image", "image": {"link": "https://example.com/a.png", "caption": "c"}}),
            json!({"contact_id": "c", "type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": ""}}),
            json!({"contact_id": "c", "type": "location", "location": {"latitude": 1.5, "longitude": -2}}),
            json!({"contact_id": "c", "type": "interactive", "interactive": {"type": "button", "action": {"buttons": []}}}),
            json!({"contact_id": "c", "type": "sticker", "sticker": {"id": "9"}}),
        ] {
            assert!(parse_send_request(&ok).is_ok(), "{ok}");
        }
        let t = parse_send_request(
            &json!({"contact_id": "c", "type": "template", "template": {"name": "x", "language": {"code": "en"}}}),
        )
        .unwrap();
        assert_eq!(t.category, Category::Marketing);
    }

    #[test]
    fn the_oldest_queued_message_of_a_recipient_goes_first() {
        let queue = ["01b", "01c", "01a"];
        assert_eq!(first_in_line(queue, "01c", "00"), Some("01a"));
        assert_eq!(first_in_line(queue, "01a", "00"), None);
        assert_eq!(
            first_in_line(["01b"], "01b", "00"),
            None,
            "a message never waits for itself"
        );
        // Past the deadline, an entry holds nobody up.
        assert_eq!(first_in_line(queue, "01c", "01b"), Some("01b"));
        assert_eq!(first_in_line(Vec::<&str>::new(), "01c", "00"), None);
    }

    #[test]
    fn sending_rules() {
        let now = Utc::now();
        let mut c = contact(now);
        assert_eq!(check_rules(&c, "text", Category::Service, now), Ok(()));
        c.last_inbound_at = Some(now - Duration::hours(25));
        assert_eq!(
            check_rules(&c, "text", Category::Service, now),
            Err(Refusal::OutsideServiceWindow)
        );
        assert_eq!(check_rules(&c, "template", Category::Utility, now), Ok(()));
        c.last_inbound_at = None;
        assert_eq!(
            check_rules(&c, "image", Category::Service, now),
            Err(Refusal::OutsideServiceWindow)
        );
        c.consent.marketing = MarketingConsent::OptedOut;
        assert_eq!(
            check_rules(&c, "template", Category::Marketing, now),
            Err(Refusal::OptedOut)
        );
        assert_eq!(check_rules(&c, "template", Category::Utility, now), Ok(()));
        c.restricted = true;
        assert_eq!(
            check_rules(&c, "template", Category::Utility, now),
            Err(Refusal::Restricted)
        );
    }
}
