//! A delivery split into work items, and work items packed back into deliveries (pure).
//!
//! Every message, status and error of a `messages` change, and every other change, is one
//! *work item*. Items are grouped by whom they are about: the messages of one customer (on one
//! business number) form one group and run in delivery order, because their order matters
//! (consent keywords, `last_inbound_at`); the statuses of one outbound message form one group;
//! everything else is a group of its own. Different groups may run concurrently.
//!
//! Items the webhook does not finish within its time budget are re-packaged as minimal, valid
//! WhatsApp webhook payloads (one entry with one change holding just that item) for the overflow
//! queue, where the same code processes them: the result is the same as processing them here.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crm_shared::jobs::MAX_MESSAGE_BYTES;
use crm_shared::whatsapp::{
    Change, Entry, InboundMessage, MessagesValue, PayloadError, StatusUpdate, WaContact, WebhookPayload,
};

/// One change of the delivery, parsed once.
pub(crate) struct ChangeWork<'a> {
    pub entry: &'a Entry,
    pub change: &'a Change,
    /// The typed value of a `messages` change (`None` for other fields).
    pub messages: Option<Result<MessagesValue, PayloadError>>,
    /// Each message and status of `messages`, parsed on its own.
    pub inbound: Vec<Result<InboundMessage, PayloadError>>,
    pub statuses: Vec<Result<StatusUpdate, PayloadError>>,
}

impl ChangeWork<'_> {
    pub fn phone_number_id(&self) -> Option<&str> {
        self.change
            .value
            .get("metadata")
            .and_then(|m| m.get("phone_number_id"))
            .and_then(Value::as_str)
    }

    /// The parsed `messages` value, when this change has one.
    pub fn value(&self) -> Option<&MessagesValue> {
        self.messages.as_ref()?.as_ref().ok()
    }
}

/// What a work item is, within its change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    /// `messages[i]`.
    Message(usize),
    /// `statuses[i]`.
    Status(usize),
    /// `errors[i]`.
    Error(usize),
    /// The whole change: another field, or a `messages` value that could not be parsed.
    Change,
}

impl Item {
    /// For logs and digests.
    pub fn kind(self) -> &'static str {
        match self {
            Item::Message(_) => "message",
            Item::Status(_) => "status",
            Item::Error(_) => "error",
            Item::Change => "change",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkItem {
    /// Index into the delivery's changes.
    pub change: usize,
    pub item: Item,
}

/// The delivery's changes and its work items in groups (each group in delivery order, groups
/// in the order their first item appears).
pub(crate) fn split(payload: &WebhookPayload) -> (Vec<ChangeWork<'_>>, Vec<Vec<WorkItem>>) {
    let mut changes = Vec::new();
    let mut groups: Vec<Vec<WorkItem>> = Vec::new();
    let mut by_key: HashMap<(String, String), usize> = HashMap::new();
    let mut push = |groups: &mut Vec<Vec<WorkItem>>, key: Option<(String, String)>, item: WorkItem| match key {
        Some(key) => {
            let at = *by_key.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[at].push(item);
        }
        None => groups.push(vec![item]),
    };
    for (entry, change) in payload.changes() {
        let messages = change.messages_value();
        let (inbound, statuses) = match &messages {
            Some(Ok(value)) => (value.inbound_messages(), value.status_updates()),
            _ => (Vec::new(), Vec::new()),
        };
        let work = ChangeWork {
            entry,
            change,
            messages,
            inbound,
            statuses,
        };
        let c = changes.len();
        let route = work
            .phone_number_id()
            .map_or_else(|| format!("waba:{}", entry.id), |id| format!("pnid:{id}"));
        match work.value() {
            Some(value) => {
                for (i, parsed) in work.inbound.iter().enumerate() {
                    let customer = parsed
                        .as_ref()
                        .ok()
                        .and_then(|m| m.from.as_ref().or(m.from_user_id.as_ref()));
                    let key = customer.map(|who| (route.clone(), format!("from:{who}")));
                    push(
                        &mut groups,
                        key,
                        WorkItem {
                            change: c,
                            item: Item::Message(i),
                        },
                    );
                }
                for (i, parsed) in work.statuses.iter().enumerate() {
                    let key = parsed.as_ref().ok().map(|s| (route.clone(), format!("wamid:{}", s.id)));
                    push(
                        &mut groups,
                        key,
                        WorkItem {
                            change: c,
                            item: Item::Status(i),
                        },
                    );
                }
                for i in 0..value.errors.len() {
                    push(
                        &mut groups,
                        None,
                        WorkItem {
                            change: c,
                            item: Item::Error(i),
                        },
                    );
                }
            }
            None => push(
                &mut groups,
                None,
                WorkItem {
                    change: c,
                    item: Item::Change,
                },
            ),
        }
        changes.push(work);
    }
    (changes, groups)
}

/// The `contacts[]` entry describing the sender of `message`: the one matching its `from` or
/// `from_user_id`, else the only one.
pub(crate) fn matching_contact<'c>(message: &InboundMessage, contacts: &'c [WaContact]) -> Option<&'c WaContact> {
    contacts
        .iter()
        .find(|c| {
            (message.from.is_some() && c.wa_id == message.from)
                || (message.from_user_id.is_some() && c.user_id == message.from_user_id)
        })
        .or(if contacts.len() == 1 { contacts.first() } else { None })
}

/// The item as it arrived (the raw message or status, the error, the change's value).
pub(crate) fn raw_item(changes: &[ChangeWork<'_>], w: WorkItem) -> Value {
    let change = &changes[w.change];
    let value = change.value();
    match (w.item, value) {
        (Item::Message(i), Some(v)) => v.messages[i].clone(),
        (Item::Status(i), Some(v)) => v.statuses[i].clone(),
        (Item::Error(i), Some(v)) => serde_json::to_value(&v.errors[i]).unwrap_or(Value::Null),
        _ => change.change.value.clone(),
    }
}

/// The item as one entry of a webhook payload: its change reduced to this item (with the
/// metadata, and for a message the contact that describes its sender).
pub(crate) fn entry_of(changes: &[ChangeWork<'_>], w: WorkItem) -> Value {
    let change = &changes[w.change];
    let value = match (w.item, change.value()) {
        (Item::Change, _) | (_, None) => change.change.value.clone(),
        (item, Some(v)) => {
            let mut out = Map::new();
            for field in ["messaging_product", "metadata"] {
                if let Some(x) = change.change.value.get(field) {
                    out.insert(field.to_owned(), x.clone());
                }
            }
            let raw = raw_item(changes, w);
            match item {
                Item::Message(i) => {
                    let contact = change.inbound[i]
                        .as_ref()
                        .ok()
                        .and_then(|m| matching_contact(m, &v.contacts));
                    if let Some(contact) = contact {
                        out.insert("contacts".into(), json!([contact]));
                    }
                    out.insert("messages".into(), json!([raw]));
                }
                Item::Status(_) => {
                    out.insert("statuses".into(), json!([raw]));
                }
                Item::Error(_) | Item::Change => {
                    out.insert("errors".into(), json!([raw]));
                }
            }
            Value::Object(out)
        }
    };
    let mut entry = json!({"id": change.entry.id, "changes": [{"field": change.change.field, "value": value}]});
    if let Some(time) = change.entry.time {
        entry["time"] = json!(time);
    }
    entry
}

const ENVELOPE_START: &str = r#"{"object":"whatsapp_business_account","entry":["#;
const ENVELOPE_END: &str = "]}";

/// Whether an entry can travel to the overflow queue on its own.
pub(crate) fn fits_queue(entry_bytes: usize) -> bool {
    ENVELOPE_START.len() + entry_bytes + ENVELOPE_END.len() <= MAX_MESSAGE_BYTES
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an item of {0} bytes cannot be handed to the queue")]
pub(crate) struct TooLarge(pub usize);

/// Groups of entries (in order) packed into webhook payloads of at most `max_bytes` each. A
/// group stays in one payload when it fits one (so its order survives the queue, which does not
/// keep order between messages); a larger group is split across consecutive payloads.
pub(crate) fn pack(groups: &[Vec<Value>], max_bytes: usize) -> Result<Vec<String>, TooLarge> {
    let overhead = ENVELOPE_START.len() + ENVELOPE_END.len();
    let mut bodies = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = overhead;
    let mut flush = |current: &mut Vec<String>, size: &mut usize| {
        if !current.is_empty() {
            bodies.push(format!("{ENVELOPE_START}{}{ENVELOPE_END}", current.join(",")));
            current.clear();
            *size = overhead;
        }
    };
    for group in groups {
        let entries: Vec<String> = group.iter().map(Value::to_string).collect();
        let group_size: usize = entries.iter().map(|e| e.len() + 1).sum();
        if size + group_size > max_bytes {
            flush(&mut current, &mut size);
        }
        for entry in entries {
            if overhead + entry.len() > max_bytes {
                return Err(TooLarge(entry.len()));
            }
            if size + entry.len() + 1 > max_bytes {
                flush(&mut current, &mut size);
            }
            size += entry.len() + 1;
            current.push(entry);
        }
    }
    flush(&mut current, &mut size);
    Ok(bodies)
}

/// What is kept of an item the table refused: its digest, its size, where it was, and the
/// fields of it that identify it without quoting anyone (ids, type, status, timestamp).
pub(crate) fn digest(field: &str, item: Item, raw: &Value) -> (String, Value) {
    let text = raw.to_string();
    let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    let mut kept = json!({
        "sha256": sha256,
        "size": text.len(),
        "field": field,
        "item": item.kind(),
    });
    for name in ["id", "type", "status", "timestamp", "code"] {
        if let Some(v) = raw.get(name).filter(|v| v.is_string() || v.is_number()) {
            kept[name] = v.clone();
        }
    }
    (sha256, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_shared::whatsapp::parse_payload;

    fn delivery() -> Value {
        json!({"object": "whatsapp_business_account", "entry": [
            {"id": "W1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "1555", "phone_number_id": "P1"},
                "contacts": [
                    {"wa_id": "441", "profile": {"name": "A"}},
                    {"wa_id": "442", "profile": {"name": "B"}}
                ],
                "messages": [
                    {"from": "441", "id": "m1", "timestamp": "1", "type": "text", "text": {"body": "STOP"}},
                    {"from": "442", "id": "m2", "timestamp": "2", "type": "text", "text": {"body": "hi"}},
                    {"from": "441", "id": "m3", "timestamp": "3", "type": "text", "text": {"body": "START"}},
                    {"id": "bad"}
                ],
                "statuses": [
                    {"id": "s1", "status": "delivered", "timestamp": "4", "recipient_id": "441"},
                    {"id": "s2", "status": "read", "timestamp": "5", "recipient_id": "441"},
                    {"id": "s1", "status": "read", "timestamp": "6", "recipient_id": "441"}
                ],
                "errors": [{"code": 131000, "title": "Something"}]
            }}]},
            {"id": "W2", "changes": [{"field": "account_update", "value": {"event": "VERIFIED"}}]}
        ]})
    }

    fn payload(v: &Value) -> WebhookPayload {
        parse_payload(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn items_of_one_customer_or_one_message_share_a_group_in_order() {
        let v = delivery();
        let p = payload(&v);
        let (changes, groups) = split(&p);
        assert_eq!(changes.len(), 2);
        let items: Vec<Vec<Item>> = groups.iter().map(|g| g.iter().map(|w| w.item).collect()).collect();
        assert_eq!(
            items,
            vec![
                vec![Item::Message(0), Item::Message(2)],
                vec![Item::Message(1)],
                vec![Item::Message(3)],
                vec![Item::Status(0), Item::Status(2)],
                vec![Item::Status(1)],
                vec![Item::Error(0)],
                vec![Item::Change],
            ]
        );
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 9, "every item, once");
    }

    #[test]
    fn an_item_repackaged_is_a_delivery_of_just_that_item() {
        let v = delivery();
        let p = payload(&v);
        let (changes, groups) = split(&p);
        let entries: Vec<Vec<Value>> = groups
            .iter()
            .map(|g| g.iter().map(|&w| entry_of(&changes, w)).collect())
            .collect();
        let bodies = pack(&entries, MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(bodies.len(), 1);
        let again = parse_payload(bodies[0].as_bytes()).unwrap();
        let (changes2, groups2) = split(&again);
        assert_eq!(groups2.iter().map(Vec::len).sum::<usize>(), 9);
        // The second message keeps its own sender's contact, and only that one.
        let m2 = &changes2[2];
        let value = m2.value().unwrap();
        assert_eq!(value.contacts.len(), 1);
        assert_eq!(value.contacts[0].wa_id.as_deref(), Some("442"));
        assert_eq!(value.metadata.phone_number_id, "P1");
        // Raw items survive unchanged.
        let originals: Vec<Value> = groups.iter().flatten().map(|&w| raw_item(&changes, w)).collect();
        let copies: Vec<Value> = groups2.iter().flatten().map(|&w| raw_item(&changes2, w)).collect();
        assert_eq!(originals, copies);
        assert_eq!(changes2.last().unwrap().change.value, json!({"event": "VERIFIED"}));
    }

    #[test]
    fn packing_keeps_groups_whole_and_payloads_small() {
        let entry = |n: usize| json!({"id": "W", "pad": "x".repeat(n)});
        let groups = vec![
            vec![entry(100), entry(100)],
            vec![entry(100), entry(100)],
            vec![entry(10)],
        ];
        let bodies = pack(&groups, 350).unwrap();
        assert!(bodies.iter().all(|b| b.len() <= 350), "{bodies:?}");
        for b in &bodies {
            serde_json::from_str::<Value>(b).unwrap();
        }
        let counts: Vec<usize> = bodies
            .iter()
            .map(|b| {
                serde_json::from_str::<Value>(b).unwrap()["entry"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(counts, vec![2, 3], "a group never shares a payload it does not fit in");
        // A group larger than a payload is split, in order.
        let big = vec![vec![entry(100), entry(100), entry(100), entry(100)]];
        assert_eq!(pack(&big, 350).unwrap().len(), 2);
        assert!(matches!(pack(&[vec![entry(1000)]], 350), Err(TooLarge(_))));
        assert!(pack(&[], 350).unwrap().is_empty());
    }

    #[test]
    fn a_digest_identifies_without_quoting() {
        let raw = json!({"from": "447700900123", "id": "wamid.X", "timestamp": "1", "type": "text", "text": {"body": "secret"}});
        let (sha, kept) = digest("messages", Item::Message(0), &raw);
        assert_eq!(sha.len(), 64);
        assert_eq!(kept["id"], "wamid.X");
        assert_eq!(kept["item"], "message");
        assert_eq!(kept["size"], raw.to_string().len());
        let text = kept.to_string();
        assert!(!text.contains("447700900123") && !text.contains("secret"), "{text}");
    }
}
