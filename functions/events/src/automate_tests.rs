//! The automation step over the in-memory store: a firing queues one reply, a redelivered
//! record completes it without a second, our own reply is never evaluated, the daily cap and
//! an erased contact stop firings.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crm_shared::automation::{AutomationSettings, Rule, RuleSpec};
use crm_shared::events::derive::StreamChange;
use crm_shared::message::{Direction, MessageRecord, MessageStatus};
use crm_shared::store::{AutomationStore, MessageStore, OutboundStore};
use crm_shared::testing::{MemQueue, MemStore, fixtures};

use crate::automate::{Automations, inbound_insert, on_inbound};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

async fn keyword_rule(store: &MemStore, tenant: &str, id: &str, words: &[&str]) {
    let mut spec: RuleSpec = serde_json::from_value(json!({
        "name": id, "trigger": {"type": "keyword", "match": "contains", "keywords": words},
        "actions": [{"type": "reply", "message": {"type": "text", "text": {"body": "our price: 5"}}},
                    {"type": "add_tags", "tags": ["asked price"]}]
    }))
    .unwrap();
    spec.validate().unwrap();
    let now = Utc::now();
    store
        .create_rule(&Rule {
            tenant_id: tenant.into(),
            rule_id: id.into(),
            spec,
            version: 1,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
}

fn inbound(contact: &crm_shared::contact::Contact, id: &str, body: &str, t: DateTime<Utc>) -> MessageRecord {
    MessageRecord {
        phone_number_id: Some("pn1".into()),
        wamid: Some(format!("wamid.{id}")),
        ..MessageRecord::new(
            &contact.tenant_id,
            id.into(),
            &contact.contact_id,
            Direction::Inbound,
            "text",
            json!({"body": body}),
            MessageStatus::Received,
            t,
            t,
        )
    }
}

fn setup(now: DateTime<Utc>) -> (MemStore, crm_shared::contact::Contact) {
    let store = MemStore::new();
    let mut contact = fixtures::contact("t1", "+4915112345678", now - Duration::days(3));
    contact.last_inbound_at = Some(now);
    store.add_contact(contact.clone());
    (store, contact)
}

#[tokio::test]
async fn a_firing_queues_one_reply_and_a_redelivery_completes_it_without_a_second() {
    let now = at("2026-12-01T10:00:00Z");
    let (store, contact) = setup(now);
    keyword_rule(&store, "t1", "r1", &["price"]).await;
    let auto = Automations::new(MemQueue::new());
    let message = inbound(&contact, "m1", "What is the PRICE?", now);
    assert_eq!(on_inbound(&auto, &store, &message, now).await.unwrap(), 1);
    let replies: Vec<MessageRecord> = store
        .messages("t1")
        .into_iter()
        .filter(|m| m.direction == Direction::Outbound)
        .collect();
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert_eq!(
        (reply.status, reply.message_type.as_str()),
        (MessageStatus::Queued, "text")
    );
    assert_eq!(reply.phone_number_id.as_deref(), Some("pn1"));
    assert_eq!(auto.sends.send_jobs().len(), 1);
    assert_eq!(store.contact("t1", &contact.contact_id).unwrap().tags, ["asked price"]);

    // The stream redelivers the record: the same decision, completed, nothing made twice.
    assert_eq!(on_inbound(&auto, &store, &message, now).await.unwrap(), 1);
    assert_eq!(
        store
            .messages("t1")
            .iter()
            .filter(|m| m.direction == Direction::Outbound)
            .count(),
        1
    );
    let log = store.rule_firings("t1", "r1", 10, None).await.unwrap().items;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].reply_message_id.as_deref(), Some(reply.message_id.as_str()));
    // The queued reply is queued again (the sender's claim makes the duplicate harmless).
    assert_eq!(auto.sends.send_jobs().len(), 2);

    // A second message within the cooldown: suppressed and logged, no reply.
    let later = inbound(&contact, "m2", "price?", now + Duration::minutes(5));
    assert_eq!(
        on_inbound(&auto, &store, &later, now + Duration::minutes(5))
            .await
            .unwrap(),
        0
    );
    let log = store.rule_firings("t1", "r1", 10, None).await.unwrap().items;
    assert_eq!(log[0].reason.as_deref(), Some("cooldown"));

    // Loop-proof: the reply's own stream record is not an inbound message.
    let image = serde_json::to_value(store.message("t1", &reply.message_id).unwrap()).unwrap();
    let change = StreamChange {
        record_id: "r".into(),
        at: now,
        keys: json!({"PK": "T#t1#MSG#x", "SK": "MSG"}),
        old: None,
        new: Some(image),
    };
    assert!(inbound_insert(&change).is_none());
    let inbound_image = serde_json::to_value(&message).unwrap();
    assert!(
        inbound_insert(&StreamChange {
            new: Some(inbound_image.clone()),
            ..change.clone()
        })
        .is_some()
    );
    // A later change of the inbound message (media stored, …) is not a new message either.
    assert!(
        inbound_insert(&StreamChange {
            old: Some(inbound_image.clone()),
            new: Some(inbound_image),
            ..change
        })
        .is_none()
    );
}

#[tokio::test]
async fn the_daily_cap_and_tenants_without_rules() {
    let now = at("2026-12-01T10:00:00Z");
    let (store, contact) = setup(now);
    keyword_rule(&store, "t1", "r1", &["price"]).await;
    store
        .put_automation_settings(
            "t1",
            &AutomationSettings {
                daily_cap: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let auto = Automations::new(MemQueue::new());
    assert_eq!(
        on_inbound(&auto, &store, &inbound(&contact, "m1", "price", now), now)
            .await
            .unwrap(),
        1
    );
    let mut other = fixtures::contact("t1", "+4915112345679", now - Duration::days(3));
    other.last_inbound_at = Some(now);
    store.add_contact(other.clone());
    assert_eq!(
        on_inbound(&auto, &store, &inbound(&other, "m2", "price", now), now)
            .await
            .unwrap(),
        0
    );
    let log = store.rule_firings("t1", "r1", 10, None).await.unwrap().items;
    assert_eq!(log[0].reason.as_deref(), Some("daily_cap"));

    // A message no rule can trigger on reads nothing beyond the (cached) rules.
    let before = store.calls(crm_shared::testing::Op::AutomationContext);
    assert_eq!(
        on_inbound(&auto, &store, &inbound(&other, "m3", "hello", now), now)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.calls(crm_shared::testing::Op::AutomationContext), before);
    let rule_reads = store.calls(crm_shared::testing::Op::AutomationRules);
    on_inbound(&auto, &store, &inbound(&other, "m4", "hello", now), now)
        .await
        .unwrap();
    assert_eq!(
        store.calls(crm_shared::testing::Op::AutomationRules),
        rule_reads,
        "rules come from memory"
    );

    // Another tenant's message never meets this tenant's rules.
    let stranger = fixtures::contact("t2", "+4915112345678", now);
    store.add_contact(stranger.clone());
    assert_eq!(
        on_inbound(&auto, &store, &inbound(&stranger, "m5", "price", now), now)
            .await
            .unwrap(),
        0
    );
    assert!(store.get_message("t2", "m5").await.unwrap().is_none());
}

async fn no_reply_rule(store: &MemStore, tenant: &str, id: &str, minutes: u32) {
    let mut spec: RuleSpec = serde_json::from_value(json!({
        "name": id, "trigger": {"type": "no_reply", "minutes": minutes}, "cooldown_minutes": 0,
        "actions": [{"type": "reply", "message": {"type": "text", "text": {"body": "on it"}}}]
    }))
    .unwrap();
    spec.validate().unwrap();
    let now = Utc::now();
    store
        .create_rule(&Rule {
            tenant_id: tenant.into(),
            rule_id: id.into(),
            spec,
            version: 1,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_no_reply_sweep_reads_only_tenants_with_a_rule_and_completes_a_crashed_firing() {
    use crate::automate::sweep_no_reply;
    use crm_shared::automation::{Firing, waiting_period_id};
    use crm_shared::testing::Op;

    let now = at("2026-12-01T10:00:00Z");
    let (store, contact) = setup(now);
    no_reply_rule(&store, "t1", "n1", 5).await;
    // A tenant with only a keyword rule and a customer waiting: the sweep never looks at it.
    keyword_rule(&store, "t2", "k2", &["price"]).await;
    let mut stranger = fixtures::contact("t2", "+4915112345670", now - Duration::days(3));
    stranger.last_inbound_at = Some(now);
    store.add_contact(stranger.clone());
    store
        .create_message_once(&inbound(&stranger, "s1", "hello", now), None, None)
        .await
        .unwrap();
    store
        .create_message_once(&inbound(&contact, "m1", "hello", now), None, None)
        .await
        .unwrap();
    let auto = Automations::new(MemQueue::new());

    let report = sweep_no_reply(&auto, &store, now + Duration::minutes(6)).await.unwrap();
    assert_eq!((report.tenants, report.due, report.fired), (1, 1, 1), "{report:?}");
    assert_eq!(
        store.calls(Op::WaitingConversations),
        1,
        "only the tenant with a no-reply rule"
    );
    assert_eq!(store.calls(Op::AutomationContext), 1);

    // The next sweep: our reply ended the wait, so nothing is read per conversation.
    let again = sweep_no_reply(&auto, &store, now + Duration::minutes(7)).await.unwrap();
    assert_eq!((again.due, again.fired), (0, 0));
    assert_eq!(store.calls(Op::AutomationContext), 1);
    let replies = || {
        store
            .messages("t1")
            .into_iter()
            .filter(|m| m.direction == Direction::Outbound)
            .count()
    };
    assert_eq!(replies(), 1);

    // A sweep that crashed after recording its firing (no reply made, not marked done): the next
    // completes it, once.
    let other_contact = {
        let mut c = fixtures::contact("t1", "+4915112345671", now - Duration::days(3));
        c.last_inbound_at = Some(now);
        store.add_contact(c.clone());
        c
    };
    store
        .create_message_once(&inbound(&other_contact, "m2", "hello", now), None, None)
        .await
        .unwrap();
    let period = waiting_period_id(&format!("{}-pn1", other_contact.contact_id), now);
    let crashed_at = now + Duration::minutes(6);
    let firing = Firing {
        tenant_id: "t1".into(),
        rule_id: "n1".into(),
        message_id: period.clone(),
        contact_id: other_contact.contact_id.clone(),
        conversation_id: format!("{}-pn1", other_contact.contact_id),
        trigger: "no_reply".into(),
        outcome: "fired".into(),
        reason: None,
        actions: vec!["reply".into()],
        reply_message_id: Some(crm_shared::automation::reply_message_id(
            "t1", "n1", &period, crashed_at,
        )),
        notify: None,
        waiting_since: Some(now),
        at: crashed_at,
    };
    store.record_firing(&firing, false, 100).await.unwrap();
    let recovered = sweep_no_reply(&auto, &store, now + Duration::minutes(8)).await.unwrap();
    assert_eq!(recovered.fired, 1, "{recovered:?}");
    assert_eq!(replies(), 2);
    let log = store.rule_firings("t1", "n1", 10, None).await.unwrap().items;
    assert_eq!(log.len(), 2, "one firing per wait: {log:?}");
}
