//! Which stored changes make which events: one plain rule per kind of item, over the item's
//! old and new images as the table's change stream delivers them (NEW_AND_OLD_IMAGES). The
//! events function is the only caller; this module does no I/O, so every rule is unit-tested.
//!
//! Adding an event source is one row in [`RULES`] and one function: the kind of item is told by
//! its sort key, and the rule compares the images. Payloads are thin: ids, statuses and the
//! names of changed fields, never names, phone numbers or message bodies (an endpoint that opts
//! into bodies gets them fetched at delivery time, so the log never holds them).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{EventDraft, EventType};
use crate::store::keys;

/// One record of the table's change stream, images as JSON (see [`image_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamChange {
    /// The stream record's `eventID`: unique per change, the same on every redelivery.
    pub record_id: String,
    /// `ApproximateCreationDateTime`: when the change was stored.
    pub at: DateTime<Utc>,
    pub keys: Value,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// The rule for one kind of item: which sort key it has, and what its changes mean.
struct Rule {
    /// Sort key (exact) or prefix (ending in `#`) of the items the rule reads.
    sk: &'static str,
    derive: fn(&Images<'_>) -> Vec<(EventType, Value)>,
}

/// The table of rules: the whole mapping from stored changes to events.
const RULES: &[Rule] = &[
    Rule {
        sk: keys::MESSAGE_SK,
        derive: message_events,
    },
    Rule {
        sk: keys::PROFILE_SK,
        derive: contact_events,
    },
    Rule {
        sk: keys::CONVERSATION_PREFIX,
        derive: conversation_events,
    },
    Rule {
        sk: keys::EXPORT_SK,
        derive: export_events,
    },
    Rule {
        sk: keys::ERASURE_SK,
        derive: erasure_events,
    },
    Rule {
        sk: keys::TEMPLATE_SK_PREFIX,
        derive: template_events,
    },
    Rule {
        sk: keys::WEBHOOK_ENDPOINT_PREFIX,
        derive: endpoint_events,
    },
    Rule {
        sk: keys::AUTOMATION_FIRING_PREFIX,
        derive: automation_events,
    },
];

/// The sort keys (and prefixes) of every item a rule reads, for the event source mapping's
/// filter (`template.yaml`, checked by a test): other changes never reach the function.
pub fn watched_sort_keys() -> Vec<&'static str> {
    RULES.iter().map(|r| r.sk).collect()
}

/// The two images of a change.
pub struct Images<'a> {
    pub old: Option<&'a Value>,
    pub new: Option<&'a Value>,
}

impl Images<'_> {
    fn before(&self, field: &str) -> Option<&Value> {
        self.old.and_then(|i| i.get(field)).filter(|v| !v.is_null())
    }

    fn after(&self, field: &str) -> Option<&Value> {
        self.new.and_then(|i| i.get(field)).filter(|v| !v.is_null())
    }

    /// A field of whichever image exists (the new one first).
    fn any(&self, field: &str) -> Option<&Value> {
        self.after(field).or_else(|| self.before(field))
    }

    fn changed(&self, field: &str) -> bool {
        self.before(field) != self.after(field)
    }

    fn inserted(&self) -> bool {
        self.old.is_none() && self.new.is_some()
    }

    fn removed(&self) -> bool {
        self.old.is_some() && self.new.is_none()
    }
}

/// The events a change makes (none for most changes).
pub fn derive(change: &StreamChange) -> Vec<EventDraft> {
    let sk = change.keys.get(keys::SK).and_then(Value::as_str).unwrap_or_default();
    let pk = change.keys.get(keys::PK).and_then(Value::as_str).unwrap_or_default();
    let Some(tenant_id) = keys::tenant_of_pk(pk) else {
        return Vec::new();
    };
    let Some(rule) = RULES.iter().find(|r| {
        if r.sk.ends_with('#') {
            sk.starts_with(r.sk)
        } else {
            sk == r.sk
        }
    }) else {
        return Vec::new();
    };
    let images = Images {
        old: change.old.as_ref(),
        new: change.new.as_ref(),
    };
    let mut drafts: Vec<EventDraft> = (rule.derive)(&images)
        .into_iter()
        .enumerate()
        .map(|(i, (event_type, data))| EventDraft {
            id: event_id(&change.record_id, i, change.at),
            tenant_id: tenant_id.to_owned(),
            event_type,
            timestamp: change.at,
            data,
            tally: Vec::new(),
        })
        .collect();
    // The change's report counts ride on its first event: counted once, when it is recorded.
    if let Some(first) = drafts.first_mut() {
        first.tally = crate::reports::facts::facts(sk, images.old, images.new, change.at);
    }
    drafts
}

/// `evt_` + a ULID of `at` whose random part is a hash of the stream record and the event's
/// index within it.
fn event_id(record_id: &str, index: usize, at: DateTime<Utc>) -> String {
    let digest = Sha256::digest(format!("{record_id}\n{index}").as_bytes());
    let random = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
    let ulid = ulid::Ulid::from_parts(at.timestamp_millis().max(0) as u64, random);
    format!("evt_{}", ulid.to_string().to_lowercase())
}

fn str_of(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or_default()
}

fn rank(v: Option<&Value>) -> i64 {
    v.and_then(|r| r.as_i64().or_else(|| r.as_str().and_then(|s| s.parse().ok())))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The rules

/// A firing recorded (not a suppression): `automation.fired`, once (the record is written once
/// per message and rule).
fn automation_events(i: &Images<'_>) -> Vec<(EventType, Value)> {
    if !i.inserted() || str_of(i.after("outcome")) != "fired" {
        return Vec::new();
    }
    let field = |name: &str| i.after(name).cloned().unwrap_or(Value::Null);
    vec![(
        EventType::AutomationFired,
        json!({
            "rule_id": field("rule_id"),
            "message_id": field("message_id"),
            "contact_id": field("contact_id"),
            "conversation_id": field("conversation_id"),
            "trigger": field("trigger"),
            "actions": field("actions"),
            "reply_message_id": field("reply_message_id"),
            "notify": field("notify"),
            "waiting_since": field("waiting_since"),
        }),
    )]
}

const FAILED: [&str; 2] = ["failed", "rejected"];

/// Inbound messages are `message.received` when stored; outbound ones make an event at each
/// step up the status ladder (`status_rank` rises: forward moves only, so each status once) and
/// `message.failed` when they end failed or rejected.
fn message_events(i: &Images<'_>) -> Vec<(EventType, Value)> {
    let Some(new) = i.new else { return Vec::new() };
    let ids = json!({
        "message_id": str_of(new.get("message_id")),
        "contact_id": str_of(new.get("contact_id")),
    });
    let status = str_of(i.after("status"));
    if i.inserted() && str_of(i.after("direction")) == "inbound" {
        // No wamid: Meta's ids encode the customer's number. `GET /v1/messages/{id}` has it.
        let mut data = ids;
        data["type"] = json!(str_of(i.after("type")));
        return vec![(EventType::MessageReceived, data)];
    }
    let was_failed = FAILED.contains(&str_of(i.before("status")));
    if FAILED.contains(&status) && !was_failed {
        let mut data = ids;
        data["status"] = json!(status);
        data["error"] = json!(
            i.after("error")
                .map(|e| json!({"code": e.get("code"), "title": e.get("title")}))
        );
        return vec![(EventType::MessageFailed, data)];
    }
    let (old_rank, new_rank) = (rank(i.before("status_rank")), rank(i.after("status_rank")));
    if !i.inserted() && new_rank > old_rank && !FAILED.contains(&status) {
        let mut data = ids;
        data["status"] = json!(status);
        data["previous_status"] = json!(str_of(i.before("status")));
        data["status_rank"] = json!(new_rank);
        data["at"] = json!(i.after("status_at").and_then(|m| m.get(status)));
        return vec![(EventType::MessageStatusUpdated, data)];
    }
    Vec::new()
}

/// Fields of a contact whose change is a `contact.updated` (the bookkeeping fields a message
/// moves — `last_inbound_at`, pacing, versions — are not).
const CONTACT_FIELDS: &[&str] = &[
    "phone",
    "user_id",
    "name",
    "profile_name",
    "email",
    "tags",
    "attributes",
    "restricted",
];

fn contact_events(i: &Images<'_>) -> Vec<(EventType, Value)> {
    let contact_id = str_of(i.any("contact_id"));
    if i.inserted() {
        return vec![(EventType::ContactCreated, json!({"contact_id": contact_id}))];
    }
    if i.removed() {
        return vec![(EventType::ContactErased, json!({"contact_id": contact_id}))];
    }
    let mut events = Vec::new();
    let changed: Vec<&str> = CONTACT_FIELDS.iter().copied().filter(|f| i.changed(f)).collect();
    if !changed.is_empty() {
        events.push((
            EventType::ContactUpdated,
            json!({"contact_id": contact_id, "changed": changed}),
        ));
    }
    let marketing = |img: Option<&Value>| {
        img.and_then(|c| c.get("marketing"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned()
    };
    let (before, after) = (marketing(i.before("consent")), marketing(i.after("consent")));
    if before != after {
        events.push((
            EventType::ConsentChanged,
            json!({"contact_id": contact_id, "marketing": after, "previous": before}),
        ));
    }
    events
}

/// A registry entry's Meta status changes (a webhook, the reconcile, our own create): one
/// `template.status_changed`. A new entry counts (`previous_status` null); a removed one does
/// not (the reconcile and deletes remove entries; offboarding removes them all).
fn template_events(i: &Images<'_>) -> Vec<(EventType, Value)> {
    if i.new.is_none() || !i.changed("status") {
        return Vec::new();
    }
    let data = json!({
        "name": str_of(i.after("name")),
        "language": str_of(i.after("language")),
        "template_id": str_of(i.after("meta_id")),
        "status": str_of(i.after("status")),
        "previous_status": i.before("status"),
        "category": str_of(i.after("category")),
    });
    vec![(EventType::TemplateStatusChanged, data)]
}

/// A conversation is `opened` when created or reopened (from resolved), `assigned` when its
/// assignee changes, `status_changed` on any other move of its status. Each carries the
/// conversation's sequence number (`last_seq`, its customer messages so far), so a consumer
/// orders and dedupes them; a message's own touch of the conversation (clocks, preview,
/// counters) makes none. A conversation removed (erasure, retention) makes none either: the
/// contact's own events say so.
fn conversation_events(i: &Images<'_>) -> Vec<(EventType, Value)> {
    // A conversation is one once it has a status; an image without one (removed, or a
    // half-made item) makes no event.
    if i.after("status").is_none() {
        return Vec::new();
    }
    let base = || {
        json!({
            "conversation_id": str_of(i.after("conversation_id")),
            "contact_id": str_of(i.after("contact_id")),
            "phone_number_id": str_of(i.after("phone_number_id")),
            "status": str_of(i.after("status")),
            "seq": rank(i.after("last_seq")),
        })
    };
    let (before, after) = (str_of(i.before("status")), str_of(i.after("status")));
    let mut events = Vec::new();
    let created = i.before("status").is_none();
    if created || (before == "resolved" && after != "resolved") {
        let mut data = base();
        data["reopened"] = json!(!created);
        events.push((EventType::ConversationOpened, data));
    } else if before != after {
        let mut data = base();
        data["previous_status"] = json!(before);
        events.push((EventType::ConversationStatusChanged, data));
    }
    if let Some(start) = crate::reports::facts::first_response_start(i.old, i.new) {
        let mut data = base();
        let answered = str_of(i.after("last_outbound_at"));
        data["first_response_seconds"] = json!(
            answered
                .parse::<DateTime<Utc>>()
                .ok()
                .map(|a| (a - start).num_seconds().max(0))
        );
        events.push((EventType::ConversationResponded, data));
    }
    if i.changed("assignee") {
        let mut data = base();
        data["assignee"] = json!(i.after("assignee"));
        data["previous_assignee"] = json!(i.before("assignee"));
        events.push((EventType::ConversationAssigned, data));
    }
    events
}

fn export_events(i: &Images<'_>) -> Vec<(EventType, Value)> {
    if str_of(i.after("status")) == "ready" && str_of(i.before("status")) != "ready" {
        let data = json!({"export_id": str_of(i.after("export_id")), "contact_id": str_of(i.after("contact_id"))});
        return vec![(EventType::ExportReady, data)];
    }
    Vec::new()
}

fn erasure_events(i: &Images<'_>) -> Vec<(EventType, Value)> {
    if str_of(i.after("status")) == "completed" && str_of(i.before("status")) != "completed" {
        let data = json!({
            "erasure_id": str_of(i.after("erasure_id")),
            "contact_id": str_of(i.after("contact_id")),
            "deleted": i.after("deleted"),
        });
        return vec![(EventType::ErasureCompleted, data)];
    }
    Vec::new()
}

/// An endpoint the delivery worker disabled (`410`, five days of failures) is an event of its
/// own, so the tenant learns of it on the pull stream and on its other endpoints.
fn endpoint_events(i: &Images<'_>) -> Vec<(EventType, Value)> {
    let reason = str_of(i.after("disabled_reason"));
    if !reason.is_empty() && i.changed("disabled_reason") {
        let data = json!({"endpoint_id": str_of(i.after("endpoint_id")), "reason": reason});
        return vec![(EventType::EndpointDisabled, data)];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(pk: &str, sk: &str, old: Option<Value>, new: Option<Value>) -> StreamChange {
        StreamChange {
            record_id: "rec-1".into(),
            at: "2026-12-01T12:00:00Z".parse().unwrap(),
            keys: json!({"PK": pk, "SK": sk}),
            old,
            new,
        }
    }

    fn types(c: &StreamChange) -> Vec<EventType> {
        derive(c).iter().map(|e| e.event_type).collect()
    }

    fn message(direction: &str, status: &str, rank: i64) -> Value {
        json!({"message_id": "m1", "contact_id": "c1", "direction": direction, "type": "text",
               "content": {"body": "secret words"}, "status": status, "status_rank": rank,
               "status_at": {status: "2026-12-01T12:00:00Z"}, "wamid": "wamid.X"})
    }

    const MSG_PK: &str = "T#t1#MSG#m1";

    #[test]
    fn an_inbound_message_is_received_once_without_its_body() {
        let c = change(MSG_PK, "MSG", None, Some(message("inbound", "received", 0)));
        let events = derive(&c);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.event_type, EventType::MessageReceived);
        assert_eq!(e.tenant_id, "t1");
        assert_eq!(e.data["message_id"], "m1");
        assert_eq!(e.data["contact_id"], "c1");
        assert!(!e.data.to_string().contains("secret words"));
        assert!(
            !e.data.to_string().contains("wamid"),
            "Meta's ids encode the customer's number"
        );
        // The same record always gives the same id; another record another.
        assert_eq!(derive(&c)[0].id, e.id);
        assert!(e.id.starts_with("evt_") && e.id.len() == 30);
        let other = StreamChange {
            record_id: "rec-2".into(),
            ..c.clone()
        };
        assert_ne!(derive(&other)[0].id, e.id);
        // A later change of the inbound message (media stored) makes no event.
        let mut with_media = message("inbound", "received", 0);
        with_media["media"] = json!({"state": "stored"});
        assert!(
            types(&change(
                MSG_PK,
                "MSG",
                Some(message("inbound", "received", 0)),
                Some(with_media)
            ))
            .is_empty()
        );
    }

    #[test]
    fn a_recorded_firing_is_one_automation_event_and_a_suppression_none() {
        let firing = |outcome: &str| {
            json!({"rule_id": "r1", "message_id": "m1", "contact_id": "c1", "conversation_id": "c1-1001",
                   "trigger": "keyword", "outcome": outcome, "actions": ["reply"], "reply_message_id": "m2",
                   "notify": "sales", "at": "2026-12-01T12:00:00Z"})
        };
        let sk = "AUTOFIRE#m1#r1";
        let events = derive(&change("T#t1#C#c1", sk, None, Some(firing("fired"))));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::AutomationFired);
        assert_eq!(events[0].data["notify"], "sales");
        assert_eq!(events[0].data["reply_message_id"], "m2");
        assert!(types(&change("T#t1#C#c1", sk, None, Some(firing("suppressed")))).is_empty());
        // Expiry (TTL) of the record makes no event.
        assert!(types(&change("T#t1#C#c1", sk, Some(firing("fired")), None)).is_empty());
    }

    fn conv(status: &str, assignee: Option<&str>, seq: u64) -> Value {
        json!({"conversation_id": "c1-1001", "contact_id": "c1", "phone_number_id": "1001",
               "status": status, "assignee": assignee, "last_seq": seq,
               "preview": {"text": "secret words"}})
    }

    #[test]
    fn conversations_open_reopen_move_and_get_assigned_with_their_sequence() {
        const PK: &str = "T#t1#C#c1";
        let opened = derive(&change(PK, "CONV#1001", None, Some(conv("open", None, 1))));
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].event_type, EventType::ConversationOpened);
        assert_eq!(opened[0].data["reopened"], false);
        assert_eq!(opened[0].data["seq"], 1);
        assert_eq!(opened[0].data["conversation_id"], "c1-1001");
        assert!(!opened[0].data.to_string().contains("secret words"));
        // A message's touch (seq, clocks, preview) is no event.
        let touch = change(
            PK,
            "CONV#1001",
            Some(conv("open", None, 1)),
            Some(conv("open", None, 2)),
        );
        assert!(types(&touch).is_empty());
        let assigned = derive(&change(
            PK,
            "CONV#1001",
            Some(conv("open", None, 2)),
            Some(conv("open", Some("u1"), 2)),
        ));
        assert_eq!(
            assigned.iter().map(|e| e.event_type).collect::<Vec<_>>(),
            [EventType::ConversationAssigned]
        );
        assert_eq!(assigned[0].data["assignee"], "u1");
        assert_eq!(assigned[0].data["previous_assignee"], Value::Null);
        let resolved = derive(&change(
            PK,
            "CONV#1001",
            Some(conv("open", Some("u1"), 2)),
            Some(conv("resolved", Some("u1"), 2)),
        ));
        assert_eq!(resolved[0].event_type, EventType::ConversationStatusChanged);
        assert_eq!(resolved[0].data["previous_status"], "open");
        assert_eq!(resolved[0].data["status"], "resolved");
        let reopened = derive(&change(
            PK,
            "CONV#1001",
            Some(conv("resolved", Some("u1"), 2)),
            Some(conv("open", Some("u1"), 3)),
        ));
        assert_eq!(reopened.len(), 1);
        assert_eq!(reopened[0].event_type, EventType::ConversationOpened);
        assert_eq!(reopened[0].data["reopened"], true);
        assert_eq!(reopened[0].data["seq"], 3);
        assert!(types(&change(PK, "CONV#1001", Some(conv("open", None, 3)), None)).is_empty());
        // An item created in two steps (keys first) opens once, when it gets its status.
        let keys_only = json!({"PK": PK, "SK": "CONV#1001"});
        assert!(types(&change(PK, "CONV#1001", None, Some(keys_only.clone()))).is_empty());
        assert_eq!(
            types(&change(PK, "CONV#1001", Some(keys_only), Some(conv("open", None, 1)))),
            [EventType::ConversationOpened]
        );
        // Notes share the partition, not the rule.
        assert!(types(&change(PK, "NOTE#1001#n1", None, Some(json!({"body": "x"})))).is_empty());
    }

    #[test]
    fn outbound_statuses_move_forward_only_and_failures_are_their_own_event() {
        let queued = message("outbound", "queued", 0);
        assert!(types(&change(MSG_PK, "MSG", None, Some(queued.clone()))).is_empty());
        let sent = message("outbound", "sent", 10);
        let c = change(MSG_PK, "MSG", Some(queued.clone()), Some(sent.clone()));
        let events = derive(&c);
        assert_eq!(events[0].event_type, EventType::MessageStatusUpdated);
        assert_eq!(events[0].data["status"], "sent");
        assert_eq!(events[0].data["previous_status"], "queued");
        // `read` without `delivered`: one event for read.
        let read = message("outbound", "read", 30);
        assert_eq!(
            types(&change(MSG_PK, "MSG", Some(sent.clone()), Some(read.clone()))),
            [EventType::MessageStatusUpdated]
        );
        // Same rank (a pricing update, a repeated status) or lower: nothing.
        assert!(types(&change(MSG_PK, "MSG", Some(read.clone()), Some(read.clone()))).is_empty());
        assert!(types(&change(MSG_PK, "MSG", Some(read.clone()), Some(sent.clone()))).is_empty());
        let mut failed = message("outbound", "failed", 100);
        failed["error"] = json!({"code": 131047, "title": "Re-engagement message", "detail": "more than 24 hours"});
        let events = derive(&change(MSG_PK, "MSG", Some(sent), Some(failed.clone())));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::MessageFailed);
        assert_eq!(events[0].data["error"]["code"], 131047);
        assert!(types(&change(MSG_PK, "MSG", Some(failed.clone()), Some(failed))).is_empty());
        // Rejected before Meta, stored that way at once.
        assert_eq!(
            types(&change(MSG_PK, "MSG", None, Some(message("outbound", "rejected", 100)))),
            [EventType::MessageFailed]
        );
        // Deleted by retention or erasure: nothing.
        assert!(types(&change(MSG_PK, "MSG", Some(queued), None)).is_empty());
    }

    fn contact(name: &str, marketing: &str, last_inbound: &str) -> Value {
        json!({"contact_id": "c1", "tenant_id": "t1", "name": name, "phone": "+447911123456",
               "tags": [], "attributes": {}, "consent": {"marketing": marketing},
               "restricted": false, "last_inbound_at": last_inbound, "version": 1})
    }

    const C_PK: &str = "T#t1#C#c1";

    #[test]
    fn contacts_are_created_updated_by_field_consented_and_erased_by_id_only() {
        let a = contact("Ann", "unknown", "2026-12-01T10:00:00Z");
        let events = derive(&change(C_PK, "PROFILE", None, Some(a.clone())));
        assert_eq!(events[0].event_type, EventType::ContactCreated);
        assert_eq!(events[0].data, json!({"contact_id": "c1"}));
        // An inbound message moves only bookkeeping fields: no event.
        let later = contact("Ann", "unknown", "2026-12-01T11:00:00Z");
        assert!(types(&change(C_PK, "PROFILE", Some(a.clone()), Some(later.clone()))).is_empty());
        let renamed = contact("Anna", "unknown", "2026-12-01T11:00:00Z");
        let events = derive(&change(C_PK, "PROFILE", Some(later.clone()), Some(renamed.clone())));
        assert_eq!(events[0].event_type, EventType::ContactUpdated);
        assert_eq!(events[0].data["changed"], json!(["name"]));
        assert!(!events[0].data.to_string().contains("Anna"));
        let opted_out = contact("Anna", "opted_out", "2026-12-01T11:00:00Z");
        let events = derive(&change(C_PK, "PROFILE", Some(renamed), Some(opted_out.clone())));
        assert_eq!(
            types(&change(C_PK, "PROFILE", Some(later), Some(opted_out.clone()))).len(),
            2
        );
        assert_eq!(events[0].event_type, EventType::ConsentChanged);
        assert_eq!(events[0].data["marketing"], "opted_out");
        assert_eq!(events[0].data["previous"], "unknown");
        let erased = derive(&change(C_PK, "PROFILE", Some(opted_out), None));
        assert_eq!(erased[0].event_type, EventType::ContactErased);
        assert_eq!(erased[0].data, json!({"contact_id": "c1"}));
        // Two events of one change have distinct ids.
        let two = derive(&change(C_PK, "PROFILE", Some(a), Some(contact("Bo", "opted_in", "x"))));
        assert_ne!(two[0].id, two[1].id);
    }

    #[test]
    fn exports_erasures_and_endpoints() {
        let pending = json!({"export_id": "e1", "contact_id": "c1", "status": "pending"});
        let ready = json!({"export_id": "e1", "contact_id": "c1", "status": "ready", "s3_key": "k"});
        assert_eq!(
            types(&change(
                "T#t1#EXPORT#e1",
                "EXPORT",
                Some(pending.clone()),
                Some(ready.clone())
            )),
            [EventType::ExportReady]
        );
        assert!(types(&change("T#t1#EXPORT#e1", "EXPORT", None, Some(pending))).is_empty());
        assert!(types(&change("T#t1#EXPORT#e1", "EXPORT", Some(ready.clone()), Some(ready))).is_empty());
        let running = json!({"erasure_id": "x1", "contact_id": "c1", "status": "in_progress"});
        let done = json!({"erasure_id": "x1", "contact_id": "c1", "status": "completed", "deleted": {"messages": 3}});
        let events = derive(&change("T#t1#ERASURE#x1", "ERASURE", Some(running), Some(done)));
        assert_eq!(events[0].event_type, EventType::ErasureCompleted);
        assert_eq!(events[0].data["deleted"]["messages"], 3);
        let on = json!({"endpoint_id": "w1", "enabled": true});
        let off = json!({"endpoint_id": "w1", "enabled": false, "disabled_reason": "gone"});
        assert_eq!(
            types(&change("T#t1#WEBHOOKS", "WEBHOOK#w1", Some(on), Some(off.clone()))),
            [EventType::EndpointDisabled]
        );
        assert!(types(&change("T#t1#WEBHOOKS", "WEBHOOK#w1", Some(off.clone()), Some(off))).is_empty());
    }

    #[test]
    fn a_template_status_change_is_one_event_and_other_registry_changes_none() {
        let entry = |status: &str, quality: &str| {
            json!({"kind": "template", "tenant_id": "t1", "name": "order_update", "language": "en_US",
                   "meta_id": "9001", "status": status, "category": "UTILITY", "quality": quality})
        };
        let (pk, sk) = ("T#t1#TPL", "TPL#order_update#en_US");
        let created = derive(&change(pk, sk, None, Some(entry("PENDING", "UNKNOWN"))));
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].event_type, EventType::TemplateStatusChanged);
        assert_eq!(created[0].tenant_id, "t1");
        assert_eq!(created[0].data["status"], "PENDING");
        assert!(created[0].data["previous_status"].is_null());
        let approved = derive(&change(
            pk,
            sk,
            Some(entry("PENDING", "UNKNOWN")),
            Some(entry("APPROVED", "UNKNOWN")),
        ));
        assert_eq!(approved.len(), 1);
        assert_eq!(
            approved[0].data,
            json!({"name": "order_update", "language": "en_US", "template_id": "9001",
                   "status": "APPROVED", "previous_status": "PENDING", "category": "UTILITY"})
        );
        // Quality alone, or the entry removed: no event.
        let quality = change(pk, sk, Some(entry("APPROVED", "GREEN")), Some(entry("APPROVED", "RED")));
        assert!(types(&quality).is_empty());
        assert!(types(&change(pk, sk, Some(entry("APPROVED", "RED")), None)).is_empty());
        // The creation log and template settings are no registry entries.
        assert!(
            types(&change(
                "T#t1",
                "TEMPLATES#CREATIONS",
                None,
                Some(json!({"version": 1}))
            ))
            .is_empty()
        );
    }

    #[test]
    fn other_items_and_foreign_keys_make_nothing() {
        assert!(types(&change("T#t1#AUDIT", "01abc", None, Some(json!({"action": "x"})))).is_empty());
        assert!(types(&change("PNID#123", "ROUTE", None, Some(json!({"tenant_id": "t1"})))).is_empty());
        assert!(types(&change("T#t1#EVLOG", "SEQ#00000000000000000001", None, Some(json!({})))).is_empty());
        assert_eq!(
            watched_sort_keys(),
            [
                "MSG",
                "PROFILE",
                "CONV#",
                "EXPORT",
                "ERASURE",
                "TPL#",
                "WEBHOOK#",
                "AUTOFIRE#"
            ]
        );
    }

    #[test]
    fn report_facts_ride_on_the_first_event_of_their_change() {
        const PK: &str = "T#t1#C#c1";
        let mut waiting = conv("open", None, 1);
        waiting["measured_from"] = json!("2026-12-01T11:00:00Z");
        let mut answered = waiting.clone();
        answered["responded_from"] = json!("2026-12-01T11:00:00Z");
        answered["last_outbound_at"] = json!("2026-12-01T11:05:00Z");
        let responded = derive(&change(PK, "CONV#1001", Some(waiting.clone()), Some(answered.clone())));
        assert_eq!(
            responded.iter().map(|e| e.event_type).collect::<Vec<_>>(),
            [EventType::ConversationResponded]
        );
        assert_eq!(responded[0].data["first_response_seconds"], 300);
        assert_eq!(responded[0].tally.len(), 1);
        // Every change that counts something makes an event that carries it, and only the first
        // event of a change carries facts.
        let mut out_sent = message("outbound", "sent", 10);
        out_sent["timestamp"] = json!("2026-12-01T12:00:00Z");
        let mut out_read = message("outbound", "read", 30);
        out_read["timestamp"] = json!("2026-12-01T12:00:00Z");
        let mut inbound = message("inbound", "received", 0);
        inbound["timestamp"] = json!("2026-12-01T12:00:00Z");
        let contact_a = contact("Ann", "opted_in", "x");
        let contact_b = contact("Bo", "opted_out", "y");
        let changes = [
            change(MSG_PK, "MSG", None, Some(inbound)),
            change(MSG_PK, "MSG", Some(out_sent.clone()), Some(out_read.clone())),
            change(MSG_PK, "MSG", Some(out_read.clone()), Some(out_read)),
            change(C_PK, "PROFILE", Some(contact_a), Some(contact_b)),
            change(PK, "CONV#1001", None, Some(conv("open", None, 1))),
            change(
                PK,
                "CONV#1001",
                Some(conv("open", None, 1)),
                Some(conv("resolved", None, 1)),
            ),
            change(PK, "CONV#1001", Some(waiting), Some(answered)),
        ];
        let mut counted = 0;
        for c in &changes {
            let sk = c.keys["SK"].as_str().unwrap();
            let facts = crate::reports::facts::facts(sk, c.old.as_ref(), c.new.as_ref(), c.at);
            let drafts = derive(c);
            assert!(facts.is_empty() || !drafts.is_empty(), "{c:?}");
            assert_eq!(drafts.first().map(|d| d.tally.clone()).unwrap_or_default(), facts);
            assert!(drafts.iter().skip(1).all(|d| d.tally.is_empty()));
            counted += usize::from(!facts.is_empty());
        }
        assert_eq!(counted, changes.len() - 1, "all but the repeated receipt count");
    }

    /// The event source mapping's filter passes exactly the sort keys the rules read.
    #[test]
    fn the_templates_stream_filter_matches_the_rules() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let mapping = &doc["Resources"]["EventsFunction"]["Properties"]["Events"]["TableStream"]["Properties"];
        let pattern = mapping["FilterCriteria"]["Filters"][0]["Pattern"].as_str().unwrap();
        let pattern: Value = serde_json::from_str(pattern).unwrap();
        let listed: Vec<String> = pattern["dynamodb"]["Keys"]["SK"]["S"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v["prefix"].as_str().unwrap().to_owned())
            })
            .collect();
        assert_eq!(listed, watched_sort_keys());
        for prefixed in watched_sort_keys().iter().filter(|k| k.ends_with('#')) {
            assert!(
                pattern.to_string().contains(&format!("{{\"prefix\":\"{prefixed}\"}}")),
                "{prefixed} as a prefix"
            );
        }
        assert_eq!(mapping["StartingPosition"], "TRIM_HORIZON");
        assert_eq!(mapping["BisectBatchOnFunctionError"], true);
    }
}
