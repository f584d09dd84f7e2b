//! The Meta webhook end to end: signed deliveries through the local gateway into DynamoDB.

use chrono::Utc;
use serde_json::{Value, json};

use crm_shared::contact::MarketingConsent;
use crm_shared::message::{Direction, MessageRecord, MessageStatus, inbound_message_id, meta_time};
use crm_shared::store::{ContactStore, CustomerIdentity, DynamoStore, MessageStore, OutboundStore};
use e2e_tests::{TEST_VERIFY_TOKEN, fixture, new_tenant, post_webhook, stack, start_gateway, unique_numeric_id};

/// Posts a signed delivery and checks the webhook accepted it: every step of a scenario must
/// land, or the assertions after it test nothing.
async fn post_accepted(base: &str, body: &str) {
    let (status, response) = post_webhook(base, body, None).await;
    assert_eq!(status, 200, "delivery refused: {response}");
}

/// A one-message text delivery.
pub fn text_delivery(pnid: &str, from: &str, wamid: &str, ts: i64, body: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000000", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
            "contacts": [{"profile": {"name": "Pat Customer"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": body}}]
        }}]}]
    })
    .to_string()
}

/// A one-status delivery.
pub fn status_delivery(pnid: &str, wamid: &str, status: &str, ts: i64, extra: Value) -> String {
    let mut s = json!({"id": wamid, "status": status, "timestamp": ts.to_string(), "recipient_id": "15550001111"});
    if let (Some(obj), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000000", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
            "statuses": [s]
        }}]}]
    })
    .to_string()
}

/// A customer phone number (wa_id form) unique to this test run.
pub fn customer_wa_id() -> String {
    // +1 555 01xx xxxx numbers are reserved for fiction but not valid E.164 for libphonenumber;
    // use a valid UK mobile range instead.
    let n = unique_numeric_id();
    format!("4477009{}", &n[n.len() - 5..])
}

async fn contact_id_for(store: &DynamoStore, tenant: &str, wa_id: &str) -> Option<String> {
    store
        .match_contact(
            tenant,
            &CustomerIdentity {
                phone: Some(format!("+{wa_id}")),
                user_id: None,
            },
        )
        .await
        .unwrap()
        .map(|(id, _)| id)
}

async fn conversation(store: &DynamoStore, tenant: &str, contact: &str) -> Vec<MessageRecord> {
    store.contact_messages(tenant, contact, 100, None).await.unwrap().items
}

#[tokio::test]
async fn verification_handshake() {
    let gw = start_gateway(stack().store().await).await;
    let url = |token: &str| {
        format!(
            "{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            gw.base
        )
    };
    let resp = reqwest::get(url(TEST_VERIFY_TOKEN)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "1158201444");
    assert_eq!(reqwest::get(url("wrong")).await.unwrap().status(), 403);
    let no_mode = format!(
        "{}/webhooks/whatsapp?hub.verify_token={TEST_VERIFY_TOKEN}&hub.challenge=1",
        gw.base
    );
    assert_eq!(reqwest::get(no_mode).await.unwrap().status(), 403);
}

#[tokio::test]
async fn bad_signatures_and_bodies_are_rejected_and_store_nothing() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let tenant = new_tenant(&store, "Sig").await.tenant;
    let from = customer_wa_id();
    let body = text_delivery(&tenant.phone_number_id, &from, "wamid.sig1", 1_767_225_600, "hello");

    let (status, err) = post_webhook(&gw.base, &body, Some(None)).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "invalid_signature");
    let wrong = crm_shared::whatsapp::sign(b"another-secret", body.as_bytes());
    assert_eq!(post_webhook(&gw.base, &body, Some(Some(&wrong))).await.0, 401);
    assert_eq!(post_webhook(&gw.base, &body, Some(Some("sha256=zz"))).await.0, 401);
    assert_eq!(post_webhook(&gw.base, &body, Some(Some("md5=abc"))).await.0, 401);
    // Signed over other bytes (whitespace added after signing).
    let good = crm_shared::whatsapp::sign(e2e_tests::TEST_APP_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(
        post_webhook(&gw.base, &format!("{body} "), Some(Some(&good))).await.0,
        401
    );

    // Correctly signed but not a usable payload: 400, with a readable error.
    let truncated = &body[..body.len() / 2];
    let (status, err) = post_webhook(&gw.base, truncated, None).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "invalid_payload");
    let wrong_object = body.replace("whatsapp_business_account", "page");
    assert_eq!(post_webhook(&gw.base, &wrong_object, None).await.0, 400);

    assert_eq!(contact_id_for(&store, &tenant.tenant_id, &from).await, None);
}

#[tokio::test]
async fn inbound_text_creates_the_contact_and_the_message_exactly_once() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let tenant = new_tenant(&store, "Inbound").await.tenant;
    let from = customer_wa_id();
    let body = text_delivery(&tenant.phone_number_id, &from, "wamid.once", 1_767_225_600, "Hi there");

    let (status, _) = post_webhook(&gw.base, &body, None).await;
    assert_eq!(status, 200);
    let contact_id = contact_id_for(&store, &tenant.tenant_id, &from)
        .await
        .expect("contact created");
    let contact = store
        .get_contact(&tenant.tenant_id, &contact_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact.phone.as_deref(), Some(format!("+{from}").as_str()));
    assert_eq!(contact.profile_name.as_deref(), Some("Pat Customer"));
    assert_eq!(contact.last_inbound_at.map(|t| t.timestamp()), Some(1_767_225_600));
    let messages = conversation(&store, &tenant.tenant_id, &contact_id).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(
        (m.direction, m.status, m.message_type.as_str()),
        (Direction::Inbound, MessageStatus::Received, "text")
    );
    assert_eq!(m.content["body"], "Hi there");
    assert_eq!(m.wamid.as_deref(), Some("wamid.once"));

    // Redelivery (Meta retries) changes nothing.
    for _ in 0..2 {
        assert_eq!(post_webhook(&gw.base, &body, None).await.0, 200);
    }
    assert_eq!(conversation(&store, &tenant.tenant_id, &contact_id).await.len(), 1);
    let again = store
        .get_contact(&tenant.tenant_id, &contact_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.last_inbound_at, contact.last_inbound_at);

    // An older message arriving late is stored but does not move the 24 h window back.
    let late = text_delivery(&tenant.phone_number_id, &from, "wamid.older", 1_767_225_000, "earlier");
    assert_eq!(post_webhook(&gw.base, &late, None).await.0, 200);
    let messages = conversation(&store, &tenant.tenant_id, &contact_id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].wamid.as_deref(), Some("wamid.once"), "newest first");
    let after = store
        .get_contact(&tenant.tenant_id, &contact_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.last_inbound_at.map(|t| t.timestamp()), Some(1_767_225_600));
}

#[tokio::test]
async fn every_inbound_fixture_type_is_stored_typed() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let tenant = new_tenant(&store, "Types").await.tenant;
    let dir = devstack::workspace_root().join("shared/tests/fixtures/webhooks");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("inbound_"))
        .collect();
    names.sort();
    assert!(names.len() >= 18, "{names:?}");
    for name in names {
        let body = fixture(&name, &tenant.phone_number_id);
        let (status, resp) = post_webhook(&gw.base, &body, None).await;
        assert_eq!(status, 200, "{name}: {resp}");
        let doc: Value = serde_json::from_str(&body).unwrap();
        let message = &doc["entry"][0]["changes"][0]["value"]["messages"][0];
        let wamid = message["id"].as_str().unwrap();
        let ts: i64 = message["timestamp"].as_str().unwrap().parse().unwrap();
        let id = inbound_message_id(&tenant.tenant_id, wamid, meta_time(ts, Utc::now()));
        let stored = store
            .get_message(&tenant.tenant_id, &id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: message not stored"));
        let type_name = message["type"].as_str().unwrap();
        assert_eq!(stored.message_type, type_name, "{name}");
        assert_eq!(
            stored.content, message[type_name],
            "{name}: content kept as Meta sent it"
        );
        let has_media = ["image", "audio", "video", "document", "sticker"].contains(&type_name);
        assert_eq!(stored.media.is_some(), has_media, "{name}");
    }
}

#[tokio::test]
async fn stop_and_start_keywords_change_marketing_consent_with_history() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let tenant = new_tenant(&store, "Consent").await.tenant;
    let from = customer_wa_id();
    let pnid = &tenant.phone_number_id;
    post_accepted(
        &gw.base,
        &text_delivery(pnid, &from, "wamid.k1", 1_767_225_600, "hello"),
    )
    .await;
    let contact_id = contact_id_for(&store, &tenant.tenant_id, &from).await.unwrap();
    let consent = |c: crm_shared::contact::Contact| c.consent.marketing;
    assert_eq!(
        consent(
            store
                .get_contact(&tenant.tenant_id, &contact_id)
                .await
                .unwrap()
                .unwrap()
        ),
        MarketingConsent::Unknown
    );

    post_accepted(
        &gw.base,
        &text_delivery(pnid, &from, "wamid.k2", 1_767_225_700, " Stop "),
    )
    .await;
    let c = store
        .get_contact(&tenant.tenant_id, &contact_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.consent.marketing, MarketingConsent::OptedOut);
    assert_eq!(c.consent.source.as_deref(), Some("inbound_keyword"));
    post_accepted(
        &gw.base,
        &text_delivery(pnid, &from, "wamid.k3", 1_767_225_800, "please stop calling"),
    )
    .await;
    assert_eq!(
        consent(
            store
                .get_contact(&tenant.tenant_id, &contact_id)
                .await
                .unwrap()
                .unwrap()
        ),
        MarketingConsent::OptedOut
    );
    post_accepted(
        &gw.base,
        &text_delivery(pnid, &from, "wamid.k4", 1_767_225_900, "START"),
    )
    .await;
    assert_eq!(
        consent(
            store
                .get_contact(&tenant.tenant_id, &contact_id)
                .await
                .unwrap()
                .unwrap()
        ),
        MarketingConsent::OptedIn
    );
    post_accepted(
        &gw.base,
        &text_delivery(pnid, &from, "wamid.k5", 1_767_226_000, "unsubscribe"),
    )
    .await;
    assert_eq!(
        consent(
            store
                .get_contact(&tenant.tenant_id, &contact_id)
                .await
                .unwrap()
                .unwrap()
        ),
        MarketingConsent::OptedOut
    );

    // History: one entry per keyword, with the previous value.
    let history = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{}#C#{contact_id}", tenant.tenant_id)),
        )
        .expression_attribute_values(":p", aws_sdk_dynamodb::types::AttributeValue::S("CONSENT#".into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let entries: Vec<(String, String)> = history
        .iter()
        .map(|i| {
            (
                i["previous"].as_s().unwrap().clone(),
                i["marketing"].as_s().unwrap().clone(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("unknown".into(), "opted_out".into()),
            ("opted_out".into(), "opted_in".into()),
            ("opted_in".into(), "opted_out".into())
        ]
    );
}

async fn outbound(store: &DynamoStore, tenant: &str, contact: &str) -> MessageRecord {
    let now = Utc::now();
    let m = MessageRecord {
        phone_number_id: None,
        tenant_id: tenant.to_owned(),
        message_id: crm_shared::ids::new_id(),
        contact_id: contact.to_owned(),
        direction: Direction::Outbound,
        wamid: None,
        message_type: "text".into(),
        content: json!({"body": "Your order shipped"}),
        status: MessageStatus::Queued,
        status_at: [("queued".to_owned(), now)].into(),
        error: None,
        media: None,
        category: None,
        language: None,
        reply_to: None,
        context_wamid: None,
        referral: None,
        pricing: None,
        conversation: None,
        timestamp: now,
        created_at: now,
        sent_by: None,
        automation_rule: None,
        broadcast_id: None,
    };
    store.create_message(&m).await.unwrap();
    m
}

#[tokio::test]
async fn statuses_only_move_forward_and_repeat_harmlessly() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let tenant = new_tenant(&store, "Statuses").await.tenant;
    let t = &tenant.tenant_id;
    let pnid = &tenant.phone_number_id;
    let from = customer_wa_id();
    post_accepted(&gw.base, &text_delivery(pnid, &from, "wamid.in", 1_767_225_600, "hi")).await;
    let contact = contact_id_for(&store, t, &from).await.unwrap();

    // read arrives before delivered; the late delivered is history only.
    let m = outbound(&store, t, &contact).await;
    store
        .mark_sent(t, &m.message_id, &contact, "wamid.out1", Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store.get_message(t, &m.message_id).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
    let pricing = json!({"pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"}});
    assert_eq!(
        post_webhook(
            &gw.base,
            &status_delivery(pnid, "wamid.out1", "read", 1_767_225_900, pricing),
            None
        )
        .await
        .0,
        200
    );
    post_accepted(
        &gw.base,
        &status_delivery(pnid, "wamid.out1", "delivered", 1_767_225_800, json!({})),
    )
    .await;
    post_accepted(
        &gw.base,
        &status_delivery(pnid, "wamid.out1", "read", 1_767_225_900, json!({})),
    )
    .await;
    post_accepted(
        &gw.base,
        &status_delivery(pnid, "wamid.out1", "failed", 1_767_226_000, json!({})),
    )
    .await;
    let stored = store.get_message(t, &m.message_id).await.unwrap().unwrap();
    assert_eq!(stored.status, MessageStatus::Read);
    assert!(stored.status_at.contains_key("delivered") && stored.status_at.contains_key("read"));
    assert_eq!(stored.status_at["read"].timestamp(), 1_767_225_900);
    assert!(!stored.status_at.contains_key("failed"), "a late failure never applies");
    assert_eq!(stored.pricing.as_ref().unwrap()["category"], "utility");
    assert!(stored.error.is_none());

    // failed after sent wins and records Meta's error.
    let m2 = outbound(&store, t, &contact).await;
    store
        .mark_sent(t, &m2.message_id, &contact, "wamid.out2", Utc::now())
        .await
        .unwrap();
    let failed = fixture("status_failed.json", pnid);
    let doc: Value = serde_json::from_str(&failed).unwrap();
    let wamid = doc["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
        .as_str()
        .unwrap();
    let failed = failed.replace(wamid, "wamid.out2");
    assert_eq!(post_webhook(&gw.base, &failed, None).await.0, 200);
    post_accepted(
        &gw.base,
        &status_delivery(pnid, "wamid.out2", "delivered", 1_767_226_100, json!({})),
    )
    .await;
    let stored = store.get_message(t, &m2.message_id).await.unwrap().unwrap();
    assert_eq!(stored.status, MessageStatus::Failed);
    let error = stored.error.expect("Meta's error recorded");
    let expected_code = doc["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]["code"]
        .as_i64()
        .unwrap();
    assert_eq!(error.code, expected_code);
    assert!(error.title.is_some());

    // A status that races ahead of the sender's write is parked, then applied.
    let m3 = outbound(&store, t, &contact).await;
    post_accepted(
        &gw.base,
        &status_delivery(pnid, "wamid.out3", "delivered", 1_767_226_200, json!({})),
    )
    .await;
    assert_eq!(
        store.get_message(t, &m3.message_id).await.unwrap().unwrap().status,
        MessageStatus::Queued
    );
    store
        .mark_sent(t, &m3.message_id, &contact, "wamid.out3", Utc::now())
        .await
        .unwrap();
    let stored = store.get_message(t, &m3.message_id).await.unwrap().unwrap();
    assert_eq!(stored.status, MessageStatus::Delivered);
    assert_eq!(stored.wamid.as_deref(), Some("wamid.out3"));
}

#[tokio::test]
async fn unknown_numbers_are_acknowledged_and_batches_are_processed_whole() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let tenant = new_tenant(&store, "Batch").await.tenant;
    let other = new_tenant(&store, "Batch two").await.tenant;

    let from = customer_wa_id();
    let stray = text_delivery(&unique_numeric_id(), &from, "wamid.stray", 1_767_225_600, "hi");
    assert_eq!(post_webhook(&gw.base, &stray, None).await.0, 200);
    assert_eq!(contact_id_for(&store, &tenant.tenant_id, &from).await, None);

    // The fixture's entries: WABA ...000 with number ...001, and WABA ...010 (an account
    // update, routed by WABA id) with number ...011.
    let body = fixture("batched.json", &tenant.phone_number_id)
        .replace("100000000000011", &other.phone_number_id)
        .replace("\"100000000000000\"", &format!("\"{}\"", tenant.waba_id))
        .replace("\"100000000000010\"", &format!("\"{}\"", other.waba_id));
    let (status, _) = post_webhook(&gw.base, &body, None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let mut expected_messages = 0;
    let mut expected_events = 0;
    for entry in doc["entry"].as_array().unwrap() {
        let entry_owner = if entry["id"] == other.waba_id.as_str() {
            &other
        } else {
            &tenant
        };
        for change in entry["changes"].as_array().unwrap() {
            let pnid = change["value"]["metadata"]["phone_number_id"].as_str();
            let owner = if pnid == Some(other.phone_number_id.as_str()) {
                &other
            } else {
                &tenant
            };
            if change["field"] == "messages" {
                for m in change["value"]["messages"].as_array().into_iter().flatten() {
                    expected_messages += 1;
                    let ts: i64 = m["timestamp"].as_str().unwrap().parse().unwrap();
                    let id = inbound_message_id(&owner.tenant_id, m["id"].as_str().unwrap(), meta_time(ts, Utc::now()));
                    assert!(store.get_message(&owner.tenant_id, &id).await.unwrap().is_some());
                }
            } else if entry_owner.tenant_id == other.tenant_id {
                expected_events += 1;
            }
        }
    }
    assert!(expected_messages >= 3, "fixture has several messages");
    let events = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{}#EVENTS", other.tenant_id)),
        )
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert_eq!(
        events.len(),
        expected_events,
        "non-message changes are recorded for their tenant"
    );
    assert_eq!(events[0]["field"].as_s().unwrap(), "account_update");
}

#[tokio::test]
async fn the_same_customer_is_a_separate_contact_in_each_tenant() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let a = new_tenant(&store, "A").await.tenant;
    let b = new_tenant(&store, "B").await.tenant;
    let from = customer_wa_id();
    let (status, body) = post_webhook(
        &gw.base,
        &text_delivery(&a.phone_number_id, &from, "wamid.same", 1_767_225_600, "to A"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        contact_id_for(&store, &b.tenant_id, &from).await,
        None,
        "B sees nothing of A's delivery"
    );
    let (status, body) = post_webhook(
        &gw.base,
        &text_delivery(&b.phone_number_id, &from, "wamid.same", 1_767_225_600, "to B"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ca = contact_id_for(&store, &a.tenant_id, &from).await.unwrap();
    let cb = contact_id_for(&store, &b.tenant_id, &from).await.unwrap();
    assert_ne!(ca, cb);
    assert_eq!(conversation(&store, &a.tenant_id, &ca).await[0].content["body"], "to A");
    assert_eq!(conversation(&store, &b.tenant_id, &cb).await[0].content["body"], "to B");
    assert!(store.get_contact(&b.tenant_id, &ca).await.unwrap().is_none());
}

/// What one inbound text message costs in DynamoDB requests (AWS bills per request).
type Webhook = webhook_fn::Deps<DynamoStore, crm_shared::jobs::SqsQueue, crm_shared::jobs::SqsQueue>;

/// A webhook function instance (its own route and contact memory) over `store` (a store on the
/// webhook function's role).
async fn webhook_instance(store: &DynamoStore) -> Webhook {
    let secrets = crm_shared::config::Env::from_map([
        ("WHATSAPP_APP_SECRET", e2e_tests::TEST_APP_SECRET),
        ("WHATSAPP_VERIFY_TOKEN", TEST_VERIFY_TOKEN),
    ])
    .webhook_secrets()
    .unwrap();
    let sqs = crm_shared::aws::sqs_client(&stack().sdk_for("WebhookFunction").await);
    webhook_fn::Deps::new(
        store.clone(),
        crm_shared::jobs::SqsQueue::new(sqs.clone(), stack().media_queue_url()),
        crm_shared::jobs::SqsQueue::new(sqs, stack().overflow_queue_url()),
        secrets,
    )
}

/// A signed text delivery from `from`, as API Gateway hands it to the function.
fn signed_text(pnid: &str, from: &str, wamid: &str, ts: i64) -> lambda_http::Request {
    let body = text_delivery(pnid, from, wamid, ts, "hello");
    let signature = crm_shared::whatsapp::sign(e2e_tests::TEST_APP_SECRET.as_bytes(), body.as_bytes());
    e2e_tests::gateway_request(
        "POST",
        "/webhooks/whatsapp",
        &[
            ("content-type", "application/json"),
            ("x-hub-signature-256", &signature),
        ],
        body.as_bytes(),
    )
}

#[tokio::test]
async fn an_inbound_text_costs_at_most_two_dynamodb_requests_for_a_known_contact() {
    let (store, counter) = stack().counted_store("WebhookFunction").await;
    let tenant = new_tenant(&stack().store().await, "Cost").await.tenant;
    let pnid = tenant.phone_number_id.clone();
    let deps = webhook_instance(&store).await;
    let from = customer_wa_id();
    let deliver = async |deps: &Webhook, from: &str, wamid: &str, ts: i64| {
        counter.take();
        let resp = webhook_fn::handle(deps, signed_text(&pnid, from, wamid, ts))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        counter.take()
    };
    let first = deliver(&deps, &from, "wamid.cost1", 1_767_225_600).await;
    let again = deliver(&deps, &from, "wamid.cost2", 1_767_225_700).await;
    let duplicate = deliver(&deps, &from, "wamid.cost2", 1_767_225_700).await;
    let same_second = deliver(&deps, &from, "wamid.cost2b", 1_767_225_700).await;
    // Another instance (own caches), route warmed by another customer's message first.
    let other = webhook_instance(&store).await;
    deliver(&other, &customer_wa_id(), "wamid.cost3", 1_767_225_800).await;
    let known = deliver(&other, &from, "wamid.cost4", 1_767_225_900).await;
    println!("DynamoDB requests, first message of a new contact (cold route cache): {first:?}");
    println!("DynamoDB requests, next message of that contact, same instance: {again:?}");
    println!("DynamoDB requests, redelivered message: {duplicate:?}");
    println!("DynamoDB requests, known contact new to the instance: {known:?}");
    // Regression guards on request counts (not timings).
    // A first contact: route, identity match, and the message's transaction, which creates the
    // contact (and checks the wamid's erasure tombstone).
    assert_eq!(first, vec!["GetItem", "GetItem", "TransactWriteItems"]);
    assert_eq!(again, vec!["TransactWriteItems"]);
    assert_eq!(duplicate, vec!["TransactWriteItems"]);
    assert_eq!(
        same_second,
        vec!["TransactWriteItems"],
        "a second message within the same second"
    );
    assert_eq!(known, vec!["GetItem", "TransactWriteItems"]);
    // Those same requests kept the customer's conversation: four messages, one redelivery.
    let contact = contact_id_for(&store, &tenant.tenant_id, &from).await.unwrap();
    let id = crm_shared::conversation::conversation_id(&contact, &pnid);
    let conversation = crm_shared::store::ConversationStore::get_conversation(&store, &tenant.tenant_id, &id)
        .await
        .unwrap()
        .expect("the inbound transactions opened the conversation");
    assert_eq!((conversation.last_seq, conversation.message_count), (4, 4));
    assert_eq!(conversation.unread("anyone"), 4);
    assert_eq!(conversation.last_inbound_at.map(|t| t.timestamp()), Some(1_767_225_900));
    assert_eq!(
        conversation.waiting_since.map(|t| t.timestamp()),
        Some(1_767_225_600),
        "waiting since the first unanswered message"
    );
}

#[tokio::test]
async fn a_remembered_contact_never_outlives_its_identity() {
    use crm_shared::contact::apply_patch;
    use crm_shared::store::{ContactStore, ContactUpdate};
    let store = stack().store().await;
    let tenant = new_tenant(&store, "Remembered").await.tenant;
    let (t, pnid) = (tenant.tenant_id.clone(), tenant.phone_number_id.clone());
    let deps = webhook_instance(&stack().store_for("WebhookFunction").await).await;
    let from = customer_wa_id();
    // A number the API accepts (the fiction range above is kept from webhooks only).
    let moved_to = format!("+447911{}", &unique_numeric_id()[..6]);
    let deliver = async |wamid: &str, ts: i64| {
        let resp = webhook_fn::handle(&deps, signed_text(&pnid, &from, wamid, ts))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    };
    let identity = |wa_id: &str| CustomerIdentity {
        phone: crm_shared::contact::phone_from_wa_id(wa_id),
        user_id: None,
    };
    deliver("wamid.mem1", 1_767_225_600).await;
    let first = store.match_contact(&t, &identity(&from)).await.unwrap().unwrap().0;

    // The phone moves to another number on that contact (an API edit); the instance still
    // remembers the old number → first contact.
    let before = store.get_contact(&t, &first).await.unwrap().unwrap();
    let patched = apply_patch(&before, &json!({ "phone": moved_to }), chrono::Utc::now()).unwrap();
    store
        .update_contact(&ContactUpdate {
            before: &before,
            after: &patched.contact,
            phone_change: patched.phone_change.as_ref(),
            user_id_change: patched.user_id_change.as_ref(),
        })
        .await
        .unwrap();
    deliver("wamid.mem2", 1_767_225_700).await;
    let second = store
        .match_contact(&t, &identity(&from))
        .await
        .unwrap()
        .map(|(id, _)| id)
        .expect("the old number got a contact of its own");
    assert_ne!(
        second, first,
        "the message went to the contact that holds the number now"
    );
    let page = |id: String| {
        let store = store.clone();
        let t = t.clone();
        async move { store.contact_messages(&t, &id, 50, None).await.unwrap().items }
    };
    assert_eq!(
        page(first.clone()).await.len(),
        1,
        "nothing more on the contact that moved away"
    );
    assert_eq!(page(second).await.len(), 1);
    // (Erasure behind a warm instance's back: privacy.rs, "the same person writing again".)
}

#[tokio::test]
async fn an_edit_never_rolls_back_the_clock_a_late_older_message_is_checked_against() {
    use crm_shared::contact::apply_patch;
    use crm_shared::store::ContactUpdate;
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let tenant = new_tenant(&store, "EditClock").await.tenant;
    let (t, pnid) = (&tenant.tenant_id, &tenant.phone_number_id);
    let from = customer_wa_id();
    post_accepted(&gw.base, &text_delivery(pnid, &from, "wamid.ec1", 1_767_225_600, "hi")).await;
    post_accepted(
        &gw.base,
        &text_delivery(pnid, &from, "wamid.ec2", 1_767_225_900, "STOP"),
    )
    .await;
    let contact_id = contact_id_for(&store, t, &from).await.unwrap();

    // An agent edits the contact (the API's PATCH stores it the same way).
    let before = store.get_contact(t, &contact_id).await.unwrap().unwrap();
    let patched = apply_patch(&before, &json!({ "name": "Pat Renamed" }), Utc::now()).unwrap();
    store
        .update_contact(&ContactUpdate {
            before: &before,
            after: &patched.contact,
            phone_change: patched.phone_change.as_ref(),
            user_id_change: patched.user_id_change.as_ref(),
        })
        .await
        .unwrap();

    // Meta delivers an older START late: it is stored, but it neither moves the clock back nor
    // undoes the newer STOP.
    post_accepted(
        &gw.base,
        &text_delivery(pnid, &from, "wamid.ec0", 1_767_225_700, "START"),
    )
    .await;
    let after = store.get_contact(t, &contact_id).await.unwrap().unwrap();
    assert_eq!(after.name.as_deref(), Some("Pat Renamed"));
    assert_eq!(after.consent.marketing, MarketingConsent::OptedOut, "{after:?}");
    assert_eq!(after.last_inbound_at, Some(meta_time(1_767_225_900, Utc::now())));
    assert_eq!(conversation(&store, t, &contact_id).await.len(), 3);
}
