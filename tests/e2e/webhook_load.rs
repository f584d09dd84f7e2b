//! The webhook under load: large deliveries are acknowledged, their tail handed to the
//! overflow queue and processed there by the same code, every item landing exactly once; an
//! item the table cannot hold does not fail its neighbours.
//!
//! Each test uses its own overflow queue (a stand-in for `WebhookOverflowQueue`, checked by the
//! IAM gate as that queue) and drives it into `webhook_fn::handle_overflow` as the event source
//! mapping does. No timings are asserted (the bench measures them): a test asserts the `200`
//! and that work was handed off.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use futures::stream::{self, StreamExt};
use serde_json::{Value, json};

use crm_shared::jobs::SqsQueue;
use crm_shared::message::{Direction, MessageRecord, MessageStatus};
use crm_shared::store::{ContactStore, CustomerIdentity, DynamoStore, MessageStore, OutboundStore};
use e2e_tests::{new_tenant, stack};

use crate::webhook::customer_wa_id;

/// Delivery sizes: the 1,000 items per delivery (10 customers × 100 messages; 1,000
/// statuses). Affordable since the local endpoint rolls transactions back from an undo log
/// instead of copying the table (infra/moto_server.py).
const CUSTOMERS: usize = 10;
const PER_CUSTOMER: usize = 100;
const STATUSES: usize = 1000;

type Webhook = webhook_fn::Deps<DynamoStore, SqsQueue, SqsQueue>;
type Overflow = webhook_fn::Processor<DynamoStore, SqsQueue>;

/// A webhook instance on the function's role whose overflow goes to `overflow_url`.
async fn webhook_with(overflow_url: &str, budget: Duration) -> Webhook {
    let secrets = crm_shared::config::Env::from_map([
        ("WHATSAPP_APP_SECRET", e2e_tests::TEST_APP_SECRET),
        ("WHATSAPP_VERIFY_TOKEN", e2e_tests::TEST_VERIFY_TOKEN),
    ])
    .webhook_secrets()
    .unwrap();
    let sqs = crm_shared::aws::sqs_client(&stack().sdk_for("WebhookFunction").await);
    webhook_fn::Deps::new(
        stack().store_for("WebhookFunction").await,
        SqsQueue::new(sqs.clone(), stack().media_queue_url()),
        SqsQueue::new(sqs, overflow_url),
        secrets,
    )
    .with_limits(webhook_fn::Limits {
        budget,
        ..webhook_fn::Limits::default()
    })
}

/// The overflow consumer on its own role.
async fn overflow_consumer() -> Overflow {
    let sqs = crm_shared::aws::sqs_client(&stack().sdk_for("WebhookOverflowFunction").await);
    webhook_fn::Processor::new(
        stack().store_for("WebhookOverflowFunction").await,
        SqsQueue::new(sqs, stack().media_queue_url()),
    )
}

/// POSTs a signed delivery to the function as API Gateway would; returns the status code.
async fn deliver(deps: &Webhook, body: &str) -> u16 {
    let signature = crm_shared::whatsapp::sign(e2e_tests::TEST_APP_SECRET.as_bytes(), body.as_bytes());
    let request = e2e_tests::gateway_request(
        "POST",
        "/webhooks/whatsapp",
        &[
            ("content-type", "application/json"),
            ("x-hub-signature-256", &signature),
        ],
        body.as_bytes(),
    );
    webhook_fn::handle(deps, request).await.unwrap().status().as_u16()
}

/// Messages waiting on a queue (visible or in flight).
async fn queued(url: &str) -> usize {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let sqs = crm_shared::aws::sqs_client(&stack().sdk().await);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    [A::ApproximateNumberOfMessages, A::ApproximateNumberOfMessagesNotVisible]
        .iter()
        .map(|a| attrs.get(a).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0))
        .sum()
}

/// Runs the overflow consumer until its queue is empty; returns how many records it handled.
async fn drain(url: &str, consumer: &Overflow) -> usize {
    let sqs = crm_shared::aws::sqs_client(&stack().sdk_for("WebhookOverflowFunction").await);
    let mut handled = 0;
    loop {
        let n = devstack::poller::poll_once(&sqs, url, 1, |event| webhook_fn::handle_overflow(consumer, event))
            .await
            .unwrap();
        handled += n;
        if n == 0 && queued(url).await == 0 {
            return handled;
        }
    }
}

/// One delivery of `per_customer` text messages from each of `customers`, interleaved.
fn messages_delivery(pnid: &str, customers: &[String], per_customer: usize, tag: &str) -> Value {
    let mut messages = Vec::new();
    for n in 0..per_customer {
        for (c, from) in customers.iter().enumerate() {
            messages.push(json!({
                "from": from, "id": format!("wamid.{tag}.{c}.{n}"),
                "timestamp": (1_767_225_600 + n as i64).to_string(),
                "type": "text", "text": {"body": format!("message {n}")}
            }));
        }
    }
    let contacts: Vec<Value> = customers
        .iter()
        .map(|from| json!({"profile": {"name": "Load Customer"}, "wa_id": from}))
        .collect();
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000000", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
            "contacts": contacts,
            "messages": messages
        }}]}]
    })
}

/// Every stored message of each customer, by customer: (wamid, content body).
async fn stored_messages(store: &DynamoStore, tenant: &str, customers: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for from in customers {
        let identity = CustomerIdentity {
            phone: crm_shared::contact::phone_from_wa_id(from),
            user_id: None,
        };
        let Some((contact, _)) = store.match_contact(tenant, &identity).await.unwrap() else {
            out.insert(from.clone(), Vec::new());
            continue;
        };
        let mut wamids = Vec::new();
        let mut next = None;
        loop {
            let page = store.contact_messages(tenant, &contact, 100, next).await.unwrap();
            wamids.extend(page.items.iter().filter_map(|m| m.wamid.clone()));
            match page.next {
                Some(p) => next = Some(p),
                None => break,
            }
        }
        out.insert(from.clone(), wamids);
    }
    out
}

#[tokio::test]
async fn a_large_message_delivery_is_acknowledged_and_each_message_lands_once_even_when_redelivered() {
    let store = stack().store().await;
    let tenant = new_tenant(&store, "Load messages").await.tenant;
    let overflow = e2e_tests::own_queue("WebhookOverflowQueue").await;
    let customers: Vec<String> = (0..CUSTOMERS).map(|_| customer_wa_id()).collect();
    let body = messages_delivery(&tenant.phone_number_id, &customers, PER_CUSTOMER, "load").to_string();

    // No budget at all: the whole delivery is handed off, then acknowledged.
    let handing_off = webhook_with(&overflow, Duration::ZERO).await;
    assert_eq!(deliver(&handing_off, &body).await, 200);
    assert!(queued(&overflow).await > 0, "the delivery's items were handed off");
    assert!(
        stored_messages(&store, &tenant.tenant_id, &customers[..1]).await[&customers[0]].is_empty(),
        "nothing was processed inline"
    );

    // Meta redelivers the same delivery while its tail is still queued, to an instance with
    // the default budget: acknowledged too (what it cannot finish goes to the queue again).
    let webhook = webhook_with(&overflow, webhook_fn::Limits::default().budget).await;
    assert_eq!(deliver(&webhook, &body).await, 200);

    let handled = drain(&overflow, &overflow_consumer().await).await;
    assert!(handled > 0);
    let stored = stored_messages(&store, &tenant.tenant_id, &customers).await;
    let total: usize = stored.values().map(Vec::len).sum();
    let distinct: BTreeSet<&String> = stored.values().flatten().collect();
    assert_eq!(total, CUSTOMERS * PER_CUSTOMER, "every message once");
    assert_eq!(distinct.len(), CUSTOMERS * PER_CUSTOMER);
    for wamids in stored.values() {
        assert_eq!(wamids.len(), PER_CUSTOMER, "each customer's messages, once each");
    }
    assert_eq!(
        queued(&overflow).await,
        0,
        "nothing left behind (no failed record waits for redelivery)"
    );
}

#[tokio::test]
async fn a_large_status_delivery_is_acknowledged_and_each_status_lands_once() {
    let store = stack().store().await;
    let tenant = new_tenant(&store, "Load statuses").await.tenant;
    let t = tenant.tenant_id.clone();
    let overflow = e2e_tests::own_queue("WebhookOverflowQueue").await;
    let contact = "c-load-statuses";
    // A campaign's 1,000 sent messages.
    let now = Utc::now();
    let ids: Vec<(String, String)> = stream::iter(0..STATUSES)
        .map(|n| {
            let (store, t) = (store.clone(), t.clone());
            async move {
                let m = MessageRecord::new(
                    &t,
                    crm_shared::ids::new_id(),
                    contact,
                    Direction::Outbound,
                    "text",
                    json!({"body": "Sale today"}),
                    // Stored as sent (a queued message joins its contact's recipient queue, and
                    // this campaign's contact is only a name).
                    MessageStatus::Sent,
                    now,
                    now,
                );
                store.create_message(&m).await.unwrap();
                let wamid = format!("wamid.campaign.{t}.{n}");
                store.mark_sent(&t, &m.message_id, contact, &wamid, now).await.unwrap();
                (m.message_id, wamid)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let statuses: Vec<Value> = ids
        .iter()
        .map(|(_, wamid)| json!({"id": wamid, "status": "delivered", "timestamp": "1767225700", "recipient_id": "15550001111"}))
        .collect();
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000000", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": tenant.phone_number_id},
            "statuses": statuses
        }}]}]
    })
    .to_string();

    let webhook = webhook_with(&overflow, webhook_fn::Limits::default().budget).await;
    assert_eq!(deliver(&webhook, &body).await, 200);
    drain(&overflow, &overflow_consumer().await).await;
    // Redelivered after everything landed: nothing changes.
    assert_eq!(deliver(&webhook, &body).await, 200);
    drain(&overflow, &overflow_consumer().await).await;

    let delivered = stream::iter(ids.iter())
        .map(|(id, _)| {
            let (store, t) = (store.clone(), t.clone());
            async move { store.get_message(&t, id).await.unwrap().unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(delivered.len(), STATUSES);
    for m in &delivered {
        assert_eq!(m.status, MessageStatus::Delivered);
        assert_eq!(m.status_at["delivered"].timestamp(), 1_767_225_700);
    }
}

#[tokio::test]
async fn an_item_the_table_cannot_hold_is_kept_as_a_digest_and_its_neighbours_land() {
    let store = stack().store().await;
    let tenant = new_tenant(&store, "Oversized").await.tenant;
    let overflow = e2e_tests::own_queue("WebhookOverflowQueue").await;
    let customers: Vec<String> = (0..3).map(|_| customer_wa_id()).collect();
    let mut doc = messages_delivery(&tenant.phone_number_id, &customers, 1, "big");
    // The middle message is over DynamoDB's 400 KB item limit.
    doc["entry"][0]["changes"][0]["value"]["messages"][1]["text"]["body"] = json!("x".repeat(450 * 1024));
    let body = doc.to_string();

    let webhook = webhook_with(&overflow, webhook_fn::Limits::default().budget).await;
    assert_eq!(
        deliver(&webhook, &body).await,
        200,
        "acknowledged: no endless redelivery"
    );
    drain(&overflow, &overflow_consumer().await).await;
    let stored = stored_messages(&store, &tenant.tenant_id, &customers).await;
    assert_eq!(stored[&customers[0]], vec!["wamid.big.0.0".to_owned()]);
    assert_eq!(stored[&customers[2]], vec!["wamid.big.2.0".to_owned()]);
    assert!(stored[&customers[1]].is_empty());

    // The drop is visible: a raw event with the item's digest and id, not its content.
    let events = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{}#EVENTS", tenant.tenant_id)),
        )
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let dropped: Vec<_> = events
        .iter()
        .filter(|e| e.get("field").and_then(|f| f.as_s().ok()).map(String::as_str) == Some("item_unstorable"))
        .collect();
    assert_eq!(dropped.len(), 1, "{events:?}");
    let value = dropped[0]["value"].as_m().unwrap();
    assert_eq!(value["id"].as_s().unwrap(), "wamid.big.1.0");
    assert_eq!(value["sha256"].as_s().unwrap().len(), 64);
    assert!(!format!("{value:?}").contains("xxxx"), "the content is not kept");

    // Redelivered: still acknowledged, still one digest.
    assert_eq!(deliver(&webhook, &body).await, 200);
    drain(&overflow, &overflow_consumer().await).await;
    let again = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{}#EVENTS", tenant.tenant_id)),
        )
        .send()
        .await
        .unwrap()
        .count;
    assert_eq!(again as usize, events.len());
}
