//! Which changes call for a contact's cards (`contact::ContactCard`, the copy of its summary
//! each of its conversations carries for the inbox) to be copied again: a conversation without
//! one (new, or stored before cards existed), and a contact whose name, WhatsApp profile name,
//! phone or tags changed. The API's own edits copy the card in their transaction; this covers
//! every other writer (the webhook's profile name) and is harmless after those (a copy only
//! replaces an older one).

use serde_json::Value;

use super::derive::StreamChange;
use crate::store::keys::{CONTACT_CARD, CONVERSATION_PREFIX, PROFILE_SK, contact_pk};

/// The contact attributes a card copies.
const CARD_FIELDS: &[&str] = &["name", "profile_name", "phone", "tags"];

/// The contact (tenant id, contact id) whose cards this change calls to refresh, if any.
pub fn refresh_of(change: &StreamChange) -> Option<(String, String)> {
    let sk = change.keys.get("SK")?.as_str()?;
    let new = change.new.as_ref()?;
    let wanted = if sk == PROFILE_SK {
        // A new contact has no conversation yet: the conversation's own insert asks.
        let old = change.old.as_ref()?;
        CARD_FIELDS.iter().any(|f| field(old, f) != field(new, f))
    } else if sk.starts_with(CONVERSATION_PREFIX) {
        new.get(CONTACT_CARD).is_none()
    } else {
        false
    };
    if !wanted {
        return None;
    }
    let text = |name: &str| new.get(name).and_then(Value::as_str).map(str::to_owned);
    let (tenant_id, contact_id) = (text("tenant_id")?, text("contact_id")?);
    // Only the contact whose partition changed (its key names the tenant).
    let pk = change.keys.get("PK")?.as_str()?;
    (pk == contact_pk(&tenant_id, &contact_id)).then_some((tenant_id, contact_id))
}

/// An attribute as the card sees it: absent, null and an empty list are all "none".
fn field<'a>(image: &'a Value, name: &str) -> Option<&'a Value> {
    image
        .get(name)
        .filter(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(sk: &str, old: Option<Value>, new: Option<Value>) -> StreamChange {
        StreamChange {
            record_id: "r1".into(),
            at: chrono::Utc::now(),
            keys: json!({"PK": "T#t1#C#c1", "SK": sk}),
            old,
            new,
        }
    }

    fn profile(name: &str, tags: Value, version: u64) -> Value {
        json!({"tenant_id": "t1", "contact_id": "c1", "name": name, "phone": "+351912345678",
               "tags": tags, "version": version, "updated_at": format!("2026-12-06T10:00:0{version}Z")})
    }

    #[test]
    fn a_contact_whose_card_fields_changed_is_refreshed_and_one_that_only_moved_its_clock_is_not() {
        let before = profile("Ana", json!(["vip"]), 1);
        let renamed = profile("Ana Sousa", json!(["vip"]), 2);
        let retagged = profile("Ana", json!(["vip", "lead"]), 2);
        let clock_only = profile("Ana", json!(["vip"]), 2);
        let expected = Some(("t1".to_owned(), "c1".to_owned()));
        assert_eq!(
            refresh_of(&change(PROFILE_SK, Some(before.clone()), Some(renamed))),
            expected
        );
        assert_eq!(
            refresh_of(&change(PROFILE_SK, Some(before.clone()), Some(retagged))),
            expected
        );
        assert_eq!(
            refresh_of(&change(PROFILE_SK, Some(before.clone()), Some(clock_only))),
            None
        );
        let mut profile_named = before.clone();
        profile_named["profile_name"] = json!("Ana S.");
        assert_eq!(
            refresh_of(&change(PROFILE_SK, Some(before.clone()), Some(profile_named))),
            expected
        );
        // An empty tag list stored where none was is no change.
        let mut untagged = before.clone();
        untagged["tags"] = json!([]);
        let mut no_tags = before.clone();
        no_tags.as_object_mut().unwrap().remove("tags");
        assert_eq!(refresh_of(&change(PROFILE_SK, Some(no_tags), Some(untagged))), None);
        // A new contact has no conversation to carry a card; a removed one none left.
        assert_eq!(refresh_of(&change(PROFILE_SK, None, Some(before.clone()))), None);
        assert_eq!(refresh_of(&change(PROFILE_SK, Some(before), None)), None);
    }

    #[test]
    fn a_conversation_without_a_card_asks_for_one_and_one_with_a_card_does_not() {
        let conv = json!({"tenant_id": "t1", "contact_id": "c1", "conversation_id": "c1-1001", "status": "open"});
        let expected = Some(("t1".to_owned(), "c1".to_owned()));
        assert_eq!(refresh_of(&change("CONV#1001", None, Some(conv.clone()))), expected);
        // Stored before cards existed: its next change asks.
        assert_eq!(
            refresh_of(&change("CONV#1001", Some(conv.clone()), Some(conv.clone()))),
            expected
        );
        let mut carded = conv.clone();
        carded["contact_card"] = json!({"name": "Ana", "tags": [], "version": 3});
        assert_eq!(refresh_of(&change("CONV#1001", Some(conv.clone()), Some(carded))), None);
        assert_eq!(refresh_of(&change("CONV#1001", Some(conv.clone()), None)), None);
        // An image naming another partition's contact asks for nothing.
        let mut elsewhere = conv.clone();
        elsewhere["tenant_id"] = json!("t2");
        assert_eq!(refresh_of(&change("CONV#1001", None, Some(elsewhere))), None);
        // Other items never do.
        let message = json!({"tenant_id": "t1", "contact_id": "c1"});
        assert_eq!(refresh_of(&change("MSG", None, Some(message))), None);
    }
}
