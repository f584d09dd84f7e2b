//! Unit tests of the webhook over the in-memory ports (`crm_shared::testing`), through the
//! handler with signed deliveries: which contact an inbound message lands on (new, known,
//! remembered by this instance, erased meanwhile, identity moved to another contact),
//! STOP/START consent, and redelivery. DynamoDB's own conditions are the e2e tests' business.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use crm_shared::config::WebhookSecrets;
use crm_shared::contact::{Contact, IdentityChange, MarketingConsent};
use crm_shared::message::MessageRecord;
use crm_shared::secret::Secret;
use crm_shared::store::{ContactStore, ContactUpdate};
use crm_shared::tenant::Tenant;
use crm_shared::testing::{MemQueue, MemStore, Op, fixtures};
use crm_shared::whatsapp::sign;

use crate::{Deps, handle};

const APP_SECRET: &str = "app-secret";
const PHONE_NUMBER_ID: &str = "106540352242922";
const WA_ID: &str = "447700900123";
const PHONE: &str = "+447700900123";

struct Webhook {
    store: MemStore,
    queue: MemQueue,
    deps: Deps<MemStore, MemQueue, MemQueue>,
    tenant: Tenant,
}

fn webhook() -> Webhook {
    let store = MemStore::new();
    let queue = MemQueue::new();
    let tenant = fixtures::tenant(PHONE_NUMBER_ID);
    store.add_tenant(tenant.clone(), Secret::new("graph-token"));
    let secrets = WebhookSecrets {
        app_secret: Secret::new(APP_SECRET),
        verify_token: Secret::new("verify"),
    };
    let deps = Deps::new(store.clone(), queue.clone(), queue.clone(), secrets);
    Webhook {
        store,
        queue,
        deps,
        tenant,
    }
}

/// A delivery of one inbound message of `message` (the type's fields) from [`WA_ID`].
fn delivery(wamid: &str, ts: i64, message: Value) -> String {
    let mut m = json!({"from": WA_ID, "id": wamid, "timestamp": ts.to_string()});
    if let (Some(obj), Some(fields)) = (m.as_object_mut(), message.as_object()) {
        obj.extend(fields.clone());
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000000", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Pat Customer"}, "wa_id": WA_ID}],
            "messages": [m]
        }}]}]
    })
    .to_string()
}

fn text(wamid: &str, ts: i64, body: &str) -> String {
    delivery(wamid, ts, json!({"type": "text", "text": {"body": body}}))
}

fn signed(body: &str, signature: Option<String>) -> Request {
    let mut req = lambda_http::http::Request::builder()
        .method("POST")
        .uri("https://hooks.test/webhooks/whatsapp");
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    req.body(Body::Text(body.to_owned())).expect("request")
}

impl Webhook {
    async fn post(&self, body: &str) -> Response<Body> {
        let req = signed(body, Some(sign(APP_SECRET.as_bytes(), body.as_bytes())));
        handle(&self.deps, req).await.expect("handler answers")
    }

    async fn deliver(&self, body: &str) {
        let response = self.post(body).await;
        assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
    }

    fn message_by_wamid(&self, wamid: &str) -> MessageRecord {
        self.store
            .messages(&self.tenant.tenant_id)
            .into_iter()
            .find(|m| m.wamid.as_deref() == Some(wamid))
            .expect("message stored")
    }

    fn seed_contact(&self, phone: &str) -> Contact {
        let c = fixtures::contact(&self.tenant.tenant_id, phone, Utc::now());
        self.store.add_contact(c.clone());
        c
    }

    /// The contact that received message `wamid` first (delivered beforehand).
    fn contact_of(&self, wamid: &str) -> Contact {
        let m = self.message_by_wamid(wamid);
        self.store.contact(&m.tenant_id, &m.contact_id).expect("contact")
    }
}

/// What happened before the message under test arrived.
#[derive(Debug, Clone, Copy)]
enum Before {
    Nothing,
    /// A contact with the sender's phone exists; this instance never saw it.
    KnownInStore,
    /// This instance matched the sender to a contact on an earlier message.
    Remembered,
    /// Remembered, then the contact was erased.
    RememberedThenErased,
    /// Remembered, then the contact's phone changed and another contact took the number.
    RememberedThenIdentityMoved,
}

/// Which contact the message should land on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LandsOn {
    /// A contact created for it.
    New,
    /// The contact that existed (or was remembered) before.
    Earlier,
    /// The contact that took over the sender's number.
    Other,
}

#[tokio::test]
async fn contact_resolution() {
    // (before, lands on, identity reads, contacts created, for the message under test).
    let cases = [
        (Before::Nothing, LandsOn::New, 1, 1),
        (Before::KnownInStore, LandsOn::Earlier, 1, 0),
        (Before::Remembered, LandsOn::Earlier, 0, 0),
        (Before::RememberedThenErased, LandsOn::New, 1, 1),
        (Before::RememberedThenIdentityMoved, LandsOn::Other, 1, 0),
    ];
    for (before, lands_on, reads, creates) in cases {
        let w = webhook();
        let t = &w.tenant.tenant_id;
        let (mut earlier, mut other) = (None, None);
        match before {
            Before::Nothing => {}
            Before::KnownInStore => earlier = Some(w.seed_contact(PHONE)),
            Before::Remembered | Before::RememberedThenErased | Before::RememberedThenIdentityMoved => {
                w.deliver(&text("wamid.first", 1_700_000_000, "hi")).await;
                earlier = Some(w.contact_of("wamid.first"));
            }
        }
        if let (Before::RememberedThenErased, Some(c)) = (before, &earlier) {
            w.store.erase_contact(t, &c.contact_id);
        }
        if let (Before::RememberedThenIdentityMoved, Some(c)) = (before, &earlier) {
            let mut moved = c.clone();
            moved.phone = Some("+447700900999".into());
            moved.version += 1;
            let change = IdentityChange {
                old: c.phone.clone(),
                new: moved.phone.clone(),
            };
            w.store
                .update_contact(&ContactUpdate {
                    before: c,
                    after: &moved,
                    phone_change: Some(&change),
                    user_id_change: None,
                })
                .await
                .expect("phone moved");
            earlier = Some(moved);
            other = Some(w.seed_contact(PHONE));
        }
        let (reads_before, contacts_before) = (w.store.calls(Op::MatchContact), w.store.contacts(t).len());

        w.deliver(&text("wamid.under.test", 1_700_000_100, "hello")).await;

        let case = format!("{before:?}");
        let m = w.message_by_wamid("wamid.under.test");
        let landed = w.store.contact(t, &m.contact_id).expect("message is on a live contact");
        let which = if Some(&landed.contact_id) == earlier.as_ref().map(|c| &c.contact_id) {
            LandsOn::Earlier
        } else if Some(&landed.contact_id) == other.as_ref().map(|c| &c.contact_id) {
            LandsOn::Other
        } else {
            LandsOn::New
        };
        assert_eq!(which, lands_on, "{case}: contact");
        assert_eq!(
            landed.phone.as_deref(),
            Some(PHONE),
            "{case}: it holds the sender's number"
        );
        assert_eq!(landed.last_inbound_at, Some(m.timestamp), "{case}: window opened");
        assert_eq!(landed.profile_name.as_deref(), Some("Pat Customer"), "{case}");
        assert_eq!(
            w.store.calls(Op::MatchContact) - reads_before,
            reads,
            "{case}: identity reads"
        );
        assert_eq!(
            w.store.contacts(t).len() - contacts_before,
            creates,
            "{case}: contacts created"
        );
        // A new contact is created by the message's own write.
        assert_eq!(w.store.calls(Op::CreateContact), 0, "{case}: no separate creation");
        if let (Before::RememberedThenIdentityMoved, Some(c)) = (before, &earlier) {
            let unchanged = w.store.contact(t, &c.contact_id).expect("moved contact kept");
            assert_eq!(unchanged.version, c.version, "{case}: the old contact was not touched");
        }
    }
}

#[tokio::test]
async fn stop_and_start_change_marketing_consent_with_history_and_audit() {
    let w = webhook();
    let t = w.tenant.tenant_id.clone();
    for (wamid, ts, body, expected) in [
        ("wamid.stop", 1_700_000_000, " Stop! ", MarketingConsent::OptedOut),
        ("wamid.start", 1_700_000_010, "START", MarketingConsent::OptedIn),
        ("wamid.unsub", 1_700_000_020, "unsubscribe", MarketingConsent::OptedOut),
        // Any other text leaves consent as it is.
        (
            "wamid.other",
            1_700_000_030,
            "stop it please",
            MarketingConsent::OptedOut,
        ),
    ] {
        w.deliver(&text(wamid, ts, body)).await;
        assert_eq!(w.contact_of(wamid).consent.marketing, expected, "{body:?}");
    }
    let contact = w.contact_of("wamid.stop");
    let history = w.store.consent_history(&t, &contact.contact_id).await.unwrap();
    let steps: Vec<_> = history.iter().map(|c| (c.previous, c.marketing)).collect();
    assert_eq!(
        steps,
        [
            (MarketingConsent::Unknown, MarketingConsent::OptedOut),
            (MarketingConsent::OptedOut, MarketingConsent::OptedIn),
            (MarketingConsent::OptedIn, MarketingConsent::OptedOut),
        ]
    );
    // Ids (ULIDs) within one millisecond do not sort by time: order by the entries' times.
    let mut entries = w.store.audit(&t);
    entries.sort_by_key(|e| e.at);
    let audited: Vec<_> = entries
        .into_iter()
        .filter(|e| e.action == "contact.consent")
        .map(|e| e.details["marketing"].clone())
        .collect();
    assert_eq!(audited, [json!("opted_out"), json!("opted_in"), json!("opted_out")]);
}

#[tokio::test]
async fn a_redelivered_webhook_changes_nothing() {
    let w = webhook();
    let t = w.tenant.tenant_id.clone();
    let stop = text("wamid.stop", 1_700_000_000, "STOP");
    w.deliver(&stop).await;
    let first = w.contact_of("wamid.stop");
    w.deliver(&stop).await;
    assert_eq!(w.store.messages(&t).len(), 1);
    assert_eq!(w.store.contacts(&t).len(), 1);
    assert_eq!(w.contact_of("wamid.stop"), first, "contact untouched by the repeat");
    let history = w.store.consent_history(&t, &first.contact_id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(w.store.audit(&t).len(), 1);
}

#[tokio::test]
async fn a_redelivered_media_message_is_enqueued_again_while_its_media_is_pending() {
    let w = webhook();
    let image = delivery(
        "wamid.img",
        1_700_000_000,
        json!({"type": "image", "image": {"id": "media-1", "mime_type": "image/jpeg", "sha256": "abc"}}),
    );
    w.deliver(&image).await;
    w.deliver(&image).await;
    let m = w.message_by_wamid("wamid.img");
    let jobs = w.queue.media_jobs();
    assert_eq!(jobs.len(), 2, "the first enqueue may have been lost");
    assert!(
        jobs.iter()
            .all(|j| j.message_id == m.message_id && j.contact_id == m.contact_id)
    );
    assert_eq!(w.store.messages(&w.tenant.tenant_id).len(), 1);
}

#[tokio::test]
async fn a_bogus_future_time_is_bounded_and_its_redelivery_is_still_the_same_message() {
    let w = webhook();
    let t = w.tenant.tenant_id.clone();
    let year_3000 = 32_503_680_000;
    let body = text("wamid.future", year_3000, "from the future");
    w.deliver(&body).await;
    let stored = w.message_by_wamid("wamid.future");
    let bound = Utc::now() + crm_shared::message::META_TIME_AHEAD;
    assert!(stored.timestamp <= bound, "stored time {} is bounded", stored.timestamp);
    let contact = w.contact_of("wamid.future");
    assert!(
        contact.last_inbound_at.is_some_and(|at| at <= bound),
        "the 24 h window is not held open"
    );
    // Redelivered later: the id comes from the stated time, so it is the same message.
    w.deliver(&body).await;
    assert_eq!(w.store.messages(&t).len(), 1);
    assert_eq!(
        stored.message_id,
        crm_shared::message::inbound_message_id(
            &t,
            "wamid.future",
            crm_shared::message::meta_time(year_3000, Utc::now())
        )
    );
}

#[tokio::test]
async fn an_erased_message_redelivered_creates_nothing_and_replays_no_consent() {
    let w = webhook();
    let t = w.tenant.tenant_id.clone();
    let stop = text("wamid.stop", 1_700_000_000, "STOP");
    w.deliver(&stop).await;
    let erased = w.contact_of("wamid.stop");
    // What an erasure leaves: the tombstone of the wamid, no contact, no message.
    w.store.erase_contact(&t, &erased.contact_id);
    let audits = w.store.audit(&t).len();
    w.deliver(&stop).await;
    assert!(w.store.contacts(&t).is_empty(), "the contact did not come back");
    assert!(w.store.messages(&t).is_empty());
    assert_eq!(w.store.audit(&t).len(), audits, "no consent change replayed");
    // A genuinely new message from the same customer starts a fresh contact.
    w.deliver(&text("wamid.new", 1_700_000_100, "hello again")).await;
    let fresh = w.contact_of("wamid.new");
    assert_ne!(fresh.contact_id, erased.contact_id);
    assert_eq!(fresh.consent.marketing, MarketingConsent::Unknown);
}

/// An erasure first deletes the contact with its identity records, then tombstones and deletes
/// its messages page by page. A redelivery in between matches nobody; its write must still
/// create nothing (the message is there: a duplicate), nor after the message went (tombstoned).
#[tokio::test]
async fn a_redelivery_while_an_erasure_runs_creates_no_contact() {
    use crm_shared::privacy::ErasureRecord;
    use crm_shared::store::{ErasureStart, Lease, PrivacyStore};

    let w = webhook();
    let t = w.tenant.tenant_id.clone();
    let hello = text("wamid.hello", 1_700_000_000, "hello");
    let stop = text("wamid.stop", 1_700_000_001, "STOP");
    w.deliver(&hello).await;
    w.deliver(&stop).await;
    let erased = w.contact_of("wamid.hello");
    let now = Utc::now();
    let record = ErasureRecord::new(&t, &erased.contact_id, None, 30, now);
    let lease = Lease::new(now + chrono::Duration::minutes(5));
    let started = w.store.start_erasure(&erased, &record, &lease).await.unwrap();
    assert!(matches!(started, ErasureStart::Started { .. }), "{started:?}");
    let audits = w.store.audit(&t).len();

    for body in [&hello, &stop, &hello] {
        w.deliver(body).await;
    }
    assert_eq!(w.store.messages(&t).len(), 2, "the erasure's own messages, nothing new");
    assert!(w.store.contacts(&t).is_empty(), "the contact did not come back");
    assert_eq!(w.store.audit(&t).len(), audits, "no consent change replayed");
    assert_eq!(w.store.calls(Op::CreateContact), 0);

    // A genuinely new message from the same customer starts a fresh contact, opted in by its
    // own keyword.
    w.deliver(&text("wamid.start", 1_700_000_100, "START")).await;
    let fresh = w.contact_of("wamid.start");
    assert_ne!(fresh.contact_id, erased.contact_id);
    assert_eq!(fresh.consent.marketing, MarketingConsent::OptedIn);
    let audit = w.store.audit(&t);
    assert_eq!(audit.len(), audits + 1);
    assert!(
        audit
            .iter()
            .any(|e| e.action == "contact.consent" && e.target_id.as_ref() == Some(&fresh.contact_id)),
        "the keyword's consent change is audited"
    );
}

#[tokio::test]
async fn a_first_message_creates_its_contact_in_one_write_even_with_a_keyword() {
    let w = webhook();
    w.deliver(&text("wamid.stop", 1_700_000_000, "STOP")).await;
    let contact = w.contact_of("wamid.stop");
    assert_eq!(contact.consent.marketing, MarketingConsent::OptedOut);
    assert_eq!(contact.version, 1, "created as the message leaves it");
    let history = w
        .store
        .consent_history(&contact.tenant_id, &contact.contact_id)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].previous, MarketingConsent::Unknown);
    // One identity read and the message's write; no consent read, no separate creation.
    assert_eq!(
        [
            Op::MatchContact,
            Op::GetContact,
            Op::CreateContact,
            Op::WamidErased,
            Op::RecordInbound
        ]
        .map(|op| w.store.calls(op)),
        [1, 0, 0, 0, 1]
    );
}

#[tokio::test]
async fn an_older_message_arriving_late_is_stored_without_moving_the_window_back() {
    let w = webhook();
    w.deliver(&text("wamid.new", 1_700_000_100, "newer")).await;
    w.deliver(&text("wamid.old", 1_700_000_000, "older")).await;
    let newer = w.message_by_wamid("wamid.new");
    let contact = w.contact_of("wamid.old");
    assert_eq!(contact.contact_id, newer.contact_id);
    assert_eq!(contact.last_inbound_at, Some(newer.timestamp));
}

#[tokio::test]
async fn unsigned_or_mis_signed_deliveries_store_nothing() {
    let w = webhook();
    let body = text("wamid.x", 1_700_000_000, "hi");
    for signature in [None, Some(sign(b"another secret", body.as_bytes()))] {
        let response = handle(&w.deps, signed(&body, signature)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(w.store.messages(&w.tenant.tenant_id).is_empty());
    assert_eq!(w.store.calls(Op::TenantForPhoneNumber), 0);
}

#[tokio::test]
async fn a_storage_failure_hands_the_item_off_and_only_a_failed_hand_off_answers_500() {
    let w = webhook();
    let body = text("wamid.x", 1_700_000_000, "hi");
    // A retryable failure: the item goes to the overflow queue and Meta gets its 200.
    w.store.fail_next_backend(Op::RecordInbound);
    w.deliver(&body).await;
    let bodies = w.queue.overflow_bodies();
    assert_eq!(bodies.len(), 1);
    assert!(w.store.messages(&w.tenant.tenant_id).is_empty());
    // The consumer stores it once, on the contact the first attempt created.
    let done = overflow(&w, &bodies).await;
    assert!(done.batch_item_failures.is_empty());
    assert_eq!(w.store.messages(&w.tenant.tenant_id).len(), 1);
    assert_eq!(w.store.contacts(&w.tenant.tenant_id).len(), 1);

    // Neither stored nor handed off: 500, so Meta redelivers; the redelivery changes nothing.
    let body2 = text("wamid.y", 1_700_000_100, "again");
    w.store.fail_next_backend(Op::RecordInbound);
    w.queue.fail_next_enqueue();
    assert_eq!(w.post(&body2).await.status(), StatusCode::INTERNAL_SERVER_ERROR);
    w.deliver(&body2).await;
    w.deliver(&body2).await;
    assert_eq!(w.store.messages(&w.tenant.tenant_id).len(), 2);
}

#[tokio::test]
async fn with_no_budget_everything_is_handed_off_and_the_consumer_lands_it_in_order() {
    let mut w = webhook();
    w.deps = Deps::new(w.store.clone(), w.queue.clone(), w.queue.clone(), secrets()).with_limits(crate::Limits {
        budget: std::time::Duration::ZERO,
        concurrency: 4,
    });
    let stop = text("wamid.s1", 1_700_000_000, "STOP");
    let start = text("wamid.s2", 1_700_000_010, "START");
    // One delivery holding both: merge the second message into the first.
    let mut doc: Value = serde_json::from_str(&stop).unwrap();
    let second: Value = serde_json::from_str(&start).unwrap();
    let m = second["entry"][0]["changes"][0]["value"]["messages"][0].clone();
    doc["entry"][0]["changes"][0]["value"]["messages"]
        .as_array_mut()
        .unwrap()
        .push(m);
    w.deliver(&doc.to_string()).await;
    assert!(w.store.messages(&w.tenant.tenant_id).is_empty(), "nothing inline");
    let bodies = w.queue.overflow_bodies();
    assert_eq!(bodies.len(), 1, "one customer's items travel together");
    // Twice (SQS delivers at least once): the same result.
    for _ in 0..2 {
        assert!(overflow(&w, &bodies).await.batch_item_failures.is_empty());
    }
    assert_eq!(w.store.messages(&w.tenant.tenant_id).len(), 2);
    let contact = &w.store.contacts(&w.tenant.tenant_id)[0];
    assert_eq!(
        contact.consent.marketing,
        MarketingConsent::OptedIn,
        "STOP then START, in order"
    );
}

fn secrets() -> WebhookSecrets {
    WebhookSecrets {
        app_secret: Secret::new(APP_SECRET),
        verify_token: Secret::new("verify"),
    }
}

/// Runs the overflow consumer on `bodies` as one SQS batch.
async fn overflow(w: &Webhook, bodies: &[String]) -> aws_lambda_events::sqs::SqsBatchResponse {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"messageId": i.to_string(), "body": b, "attributes": {}, "messageAttributes": {}}))
        .collect();
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(json!({ "Records": records })).unwrap();
    crate::handle_overflow(
        &w.deps.processor,
        lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
    )
    .await
    .unwrap()
}
