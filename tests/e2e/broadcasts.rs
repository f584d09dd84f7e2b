//! Broadcasts end to end against the local endpoint (400 contacts): the API creates and controls a campaign,
//! the broadcast engine runs on the `BroadcastFunction` role (IAM-gated), hands sends to an SQS
//! queue of this test's own, the sender (on its role) sends them to a fake Graph API (wiremock),
//! and the engine follows the results. Graph sends are counted per recipient: exactly the
//! eligible ones, once each, through a pause and a resume; every skip reason is recorded; a
//! `131049` recipient is held back for a later retry; another tenant sees nothing; an erased
//! contact leaves the recipients while the counters keep their numbers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lambda_events::sqs::SqsMessage;
use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crm_shared::auth::Role;
use crm_shared::broadcast::run::{EngineConfig, run_tenant};
use crm_shared::config::GraphConfig;
use crm_shared::contact::{Contact, MarketingConsent, ValidContact};
use crm_shared::graph::GraphClient;
use crm_shared::jobs::SqsQueue;
use crm_shared::store::{ContactStore, DynamoStore, TemplateStore};
use e2e_tests::{api, new_tenant, own_queue, stack, start_gateway_with_queues};
use sender_fn::{Deps, SenderConfig};

/// Kept small: moto's transactions copy the table per item, so a page commit costs O(table)
/// here (the 2,000-recipient run is the sender crate's `broadcast_tests`, over the in-memory
/// ports).
const CONTACTS: usize = 400;
/// What makes contact `i` (in)eligible: `KINDS[i % 8]`.
const KINDS: [&str; 8] = [
    "ok",
    "opted_out",
    "unknown_consent",
    "restricted",
    "bad_params",
    "us",
    "ok",
    "untagged",
];

/// A fake Graph API: every send accepted with a fresh wamid, except those to `held_back`
/// (Meta's 131049).
async fn graph(held_back: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"to": held_back.trim_start_matches('+')})))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "This message was not delivered to maintain healthy ecosystem engagement.",
            "type": "OAuthException", "code": 131049, "fbtrace_id": "x"}})))
        .with_priority(1)
        .mount(&server)
        .await;
    let issued = Arc::new(AtomicU64::new(0));
    Mock::given(method("POST"))
        .respond_with(move |_: &Request| {
            let n = issued.fetch_add(1, Ordering::Relaxed);
            ResponseTemplate::new(200)
                .set_body_json(json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.B{n}")}]}))
        })
        .with_priority(5)
        .mount(&server)
        .await;
    server
}

/// Graph sends per recipient (digits).
async fn sends(graph: &MockServer) -> HashMap<String, usize> {
    let mut by_to = HashMap::new();
    for r in graph.received_requests().await.unwrap_or_default() {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        *by_to
            .entry(body["to"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    by_to
}

fn contact(tenant_id: &str, i: usize) -> Contact {
    let kind = KINDS[i % KINDS.len()];
    let phone = if kind == "us" {
        format!("+1415{:07}", 5_000_000 + i)
    } else {
        format!("+4477009{:05}", 20_000 + i)
    };
    let valid = ValidContact {
        phone: Some(phone),
        user_id: None,
        name: Some(format!("Customer {i}")),
        email: None,
        tags: if kind == "untagged" { vec![] } else { vec!["vip".into()] },
        attributes: if kind == "bad_params" {
            Default::default()
        } else {
            [("code".to_owned(), format!("C{i}"))].into()
        },
        language: None,
    };
    let mut c = Contact::new(tenant_id, valid, Utc::now());
    c.consent.marketing = match kind {
        "opted_out" => MarketingConsent::OptedOut,
        "unknown_consent" => MarketingConsent::Unknown,
        _ => MarketingConsent::OptedIn,
    };
    c.restricted = kind == "restricted";
    c
}

struct Engine {
    store: DynamoStore,
    files: crm_shared::objects::Bucket,
    queue: SqsQueue,
    queue_url: String,
    sender: Deps<DynamoStore, GraphClient, SqsQueue>,
    tenant_id: String,
}

impl Engine {
    /// The engine on the broadcaster's role and the sender on its own, both IAM-gated, with
    /// `queue_url` as the sender's queue and `graph` as Meta.
    async fn on_roles(tenant_id: &str, queue_url: &str, graph: &str) -> Engine {
        let sender_sdk = stack().sdk_for("SenderFunction").await;
        let engine_sdk = stack().sdk_for("BroadcastFunction").await;
        Engine {
            store: stack().store_for("BroadcastFunction").await,
            files: stack().privacy_for("BroadcastFunction").await.exports,
            queue: SqsQueue::new(crm_shared::aws::sqs_client(&engine_sdk), queue_url),
            queue_url: queue_url.to_owned(),
            sender: Deps::new(
                stack().store_for("SenderFunction").await,
                GraphClient::new(&GraphConfig {
                    base_url: graph.to_owned(),
                    version: "v25.0".into(),
                })
                .unwrap(),
                SqsQueue::new(crm_shared::aws::sqs_client(&sender_sdk), queue_url),
                SenderConfig {
                    rate_per_second: 1000,
                    ..SenderConfig::default()
                },
            ),
            tenant_id: tenant_id.to_owned(),
        }
    }

    /// One engine run (40 sends a run: 80/s, half of it for broadcasts, 1 s runs).
    async fn run(&self) {
        let config = EngineConfig {
            rate_per_second: 80,
            run_secs: 1,
            ..EngineConfig::default()
        };
        let mut report = Default::default();
        run_tenant(
            &self.store,
            &self.files,
            &self.queue,
            &self.tenant_id,
            Utc::now(),
            &config,
            &mut report,
        )
        .await
        .unwrap();
    }

    /// Feeds every job on the queue to the sender, 10 at a time, until the queue is empty.
    async fn drain(&self) {
        let sqs = crm_shared::aws::sqs_client(&stack().sdk().await);
        let mut empty = 0;
        while empty < 2 {
            let received = sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let messages = received.messages();
            if messages.is_empty() {
                empty += 1;
                continue;
            }
            empty = 0;
            let records: Vec<SqsMessage> = messages
                .iter()
                .map(|m| {
                    let mut r = SqsMessage::default();
                    r.message_id = m.message_id().map(str::to_owned);
                    r.body = m.body().map(str::to_owned);
                    r
                })
                .collect();
            sender_fn::process_batch(&self.sender, &records).await;
            for m in messages {
                sqs.delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_campaign_sends_each_eligible_recipient_once_through_pause_and_resume() {
    let clock = std::time::Instant::now();
    let store = stack().store().await;
    let queue_url = own_queue("OutboundQueue").await;
    let gw = start_gateway_with_queues(store.clone(), stack().media_queue_url(), &queue_url).await;
    let url = |p: &str| format!("{}{p}", gw.base);
    let t = new_tenant(&store, "Broadcasts").await;
    let tenant_id = t.tenant.tenant_id.clone();
    let admin = t.api_key.expose().to_owned();
    let agent = crm_shared::admin::create_api_key(&store, &tenant_id, Role::Agent)
        .await
        .unwrap();
    let agent = agent.api_key.expose().to_owned();
    let meta = json!({"name": "spring_sale", "language": "en_US", "id": "9", "status": "APPROVED",
        "category": "MARKETING", "parameter_format": "POSITIONAL",
        "components": [{"type": "BODY", "text": "Hi {{1}}, code {{2}}", "example": {"body_text": [["Ana", "X"]]}}]});
    let template = crm_shared::template::TemplateRecord::from_meta(&tenant_id, &meta, Utc::now()).unwrap();
    store.put_template(&template).await.unwrap();

    let contacts: Vec<Contact> = (0..CONTACTS).map(|i| contact(&tenant_id, i)).collect();
    futures::stream::iter(contacts.iter().map(|c| store.create_contact(c)))
        .buffer_unordered(32)
        .for_each(|r| async move { r.unwrap() })
        .await;
    let eligible: Vec<String> = contacts
        .iter()
        .enumerate()
        .filter(|(i, _)| KINDS[i % KINDS.len()] == "ok")
        .map(|(_, c)| c.phone.clone().unwrap())
        .collect();
    let held_back = eligible[0].clone();
    // Meta's business_capability_update raised the portfolio's limit (the default is 250).
    crm_shared::store::BroadcastStore::set_messaging_limit(&store, &tenant_id, Some(100_000))
        .await
        .unwrap();
    eprintln!("seeded at {:?}", clock.elapsed());
    let graph = graph(&held_back).await;

    // Agents may not broadcast unless the tenant allows it.
    let body = json!({"name": "Spring", "template": {"name": "spring_sale", "language": "en_US"},
        "audience": {"tags_all": ["vip"], "contact_ids": [contacts[0].contact_id, contacts[0].contact_id, crm_shared::ids::new_id()]},
        "parameters": {"1": "contact.name", "2": "attributes.code"}});
    let (status, _) = api("POST", &url("/v1/broadcasts"), Some(&agent), Some(body.clone())).await;
    assert_eq!(status, 403);
    let (status, bad) = api(
        "POST",
        &url("/v1/broadcasts"),
        Some(&admin),
        Some(json!({"name": "x", "template": {"name": "nope"}, "audience": {"all": true}})),
    )
    .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (422, Some("template_not_found"))
    );
    let (status, created) = api("POST", &url("/v1/broadcasts"), Some(&admin), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "draft");
    let (status, wrong) = api("POST", &url(&format!("/v1/broadcasts/{id}/resume")), Some(&admin), None).await;
    assert_eq!((status, wrong["error"]["code"].as_str()), (409, Some("invalid_state")));
    let (status, started) = api("POST", &url(&format!("/v1/broadcasts/{id}/start")), Some(&admin), None).await;
    assert_eq!(
        (status, started["status"].as_str()),
        (200, Some("running")),
        "{started}"
    );

    // Another tenant sees nothing of it.
    let other = new_tenant(&store, "Other").await;
    let other_key = other.api_key.expose().to_owned();
    for (m, path) in [
        ("GET", format!("/v1/broadcasts/{id}")),
        ("GET", format!("/v1/broadcasts/{id}/recipients")),
        ("POST", format!("/v1/broadcasts/{id}/pause")),
    ] {
        let (status, _) = api(m, &url(&path), Some(&other_key), None).await;
        assert_eq!(status, 404, "{m} {path}");
    }
    let (_, listed) = api("GET", &url("/v1/broadcasts"), Some(&other_key), None).await;
    assert_eq!(listed["items"], json!([]));

    let engine = Engine::on_roles(&tenant_id, &queue_url, &graph.uri()).await;
    // Plan (all of it before any send), then the first run's share.
    for _ in 0..20 {
        engine.run().await;
        let (_, b) = api("GET", &url(&format!("/v1/broadcasts/{id}")), Some(&admin), None).await;
        if b["progress"]["planned"] == true {
            break;
        }
    }
    eprintln!("planned at {:?}", clock.elapsed());
    engine.drain().await;
    eprintln!("first share sent at {:?}", clock.elapsed());
    let first = graph.received_requests().await.unwrap().len();
    assert!(first > 0 && first < eligible.len(), "{first}");
    let (status, _) = api("POST", &url(&format!("/v1/broadcasts/{id}/pause")), Some(&admin), None).await;
    assert_eq!(status, 200);
    engine.run().await;
    engine.drain().await;
    assert_eq!(
        graph.received_requests().await.unwrap().len(),
        first,
        "nothing while paused"
    );
    let (status, _) = api("POST", &url(&format!("/v1/broadcasts/{id}/resume")), Some(&admin), None).await;
    assert_eq!(status, 200);
    let mut done = json!(null);
    for _ in 0..10 {
        engine.run().await;
        engine.drain().await;
        let (_, b) = api("GET", &url(&format!("/v1/broadcasts/{id}")), Some(&admin), None).await;
        done = b;
        if done["progress"]["dispatched"] == true && done["counters"]["held_back"] == 1 {
            break;
        }
    }
    engine.run().await;
    eprintln!("done at {:?}", clock.elapsed());

    // Exactly the eligible ones, once each.
    let sent = sends(&graph).await;
    assert_eq!(sent.len(), eligible.len());
    for phone in &eligible {
        assert_eq!(sent.get(phone.trim_start_matches('+')), Some(&1), "{phone}");
    }
    let (_, b) = api("GET", &url(&format!("/v1/broadcasts/{id}")), Some(&admin), None).await;
    let c = &b["counters"];
    for reason in [
        "no_marketing_consent",
        "restricted",
        "invalid_parameters",
        "us_marketing_block",
        "duplicate",
        "unknown_contact",
    ] {
        assert!(c["skipped"][reason].as_u64().unwrap_or(0) > 0, "{reason}: {c}");
    }
    let tagged = CONTACTS - CONTACTS / 8;
    assert_eq!(c["targeted"].as_u64(), Some(tagged as u64 + 2), "{c}");
    assert_eq!(c["queued"].as_u64(), Some(eligible.len() as u64));
    assert_eq!(c["sent"].as_u64(), Some(eligible.len() as u64 - 1));
    assert_eq!(
        c["held_back"].as_u64(),
        Some(1),
        "131049 is held back for a later retry: {c}"
    );
    assert_eq!(c["failed"], json!({}), "{c}");

    // Recipients page by status with sealed cursors.
    let mut skipped = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/broadcasts/{id}/recipients?status=skipped&limit=100");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = api("GET", &url(&path), Some(&admin), None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(
            items
                .iter()
                .all(|r| r["status"] == "skipped" && r["reason"].is_string())
        );
        skipped += items.len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // Skipped recipients with a contact (the duplicate and the unknown id have none).
    assert_eq!(
        skipped as u64,
        c["skipped"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
            - 2
    );
    let (status, _) = api(
        "GET",
        &url(&format!("/v1/broadcasts/{id}/recipients?status=nope")),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Erasure removes the contact from the recipients; the counters keep their numbers.
    let erased = &contacts[6];
    let (status, _) = api(
        "DELETE",
        &url(&format!("/v1/contacts/{}", erased.contact_id)),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, sent_page) = api(
        "GET",
        &url(&format!("/v1/broadcasts/{id}/recipients?status=sent&limit=100")),
        Some(&admin),
        None,
    )
    .await;
    assert!(
        sent_page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["contact_id"] != erased.contact_id.as_str())
    );
    let (_, after) = api("GET", &url(&format!("/v1/broadcasts/{id}")), Some(&admin), None).await;
    assert_eq!(after["counters"]["targeted"], c["targeted"]);
    // The audit log names every lifecycle change.
    let (_, audit) = api("GET", &url("/v1/audit?limit=100"), Some(&admin), None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "broadcast.create",
        "broadcast.start",
        "broadcast.pause",
        "broadcast.resume",
    ] {
        assert!(actions.contains(&a), "{a}: {actions:?}");
    }
}

/// Meta flags the tenant's number red: the webhook (on its role, which may not query) stores
/// the quality with a put conditional on Meta's time, the engine (on its role) pauses the
/// running broadcast with `number_quality_red` and audits it; another tenant is untouched.
#[tokio::test]
async fn a_number_flagged_red_pauses_the_running_broadcast_on_the_functions_roles() {
    use crm_shared::broadcast::control;
    use crm_shared::broadcast::{Action, BroadcastStatus, NumberQuality, PauseReason};
    use crm_shared::store::{AuditStore, BroadcastStore};

    let store = stack().store().await;
    let queue_url = own_queue("OutboundQueue").await;
    let t = new_tenant(&store, "Quality").await;
    let other = new_tenant(&store, "Quality other").await;
    let meta = json!({"name": "spring_sale", "language": "en_US", "id": "9", "status": "APPROVED",
        "category": "MARKETING", "parameter_format": "POSITIONAL",
        "components": [{"type": "BODY", "text": "Hi {{1}}, code {{2}}", "example": {"body_text": [["Ana", "X"]]}}]});
    let mut started = Vec::new();
    for tenant_id in [&t.tenant.tenant_id, &other.tenant.tenant_id] {
        let template = crm_shared::template::TemplateRecord::from_meta(tenant_id, &meta, Utc::now()).unwrap();
        store.put_template(&template).await.unwrap();
        let body = json!({"name": "q", "template": {"name": "spring_sale", "language": "en_US"},
            "audience": {"contact_ids": [crm_shared::ids::new_id()]},
            "parameters": {"1": "contact.name", "2": "attributes.code"}});
        let b = control::create(&store, tenant_id, &body, None, Utc::now(), None)
            .await
            .unwrap();
        let (_, running) = control::act(&store, tenant_id, &b.broadcast_id, Action::Start, Utc::now())
            .await
            .unwrap();
        assert_eq!(running.status, BroadcastStatus::Running);
        started.push(running);
    }

    let webhook = stack().store_for("WebhookFunction").await;
    let at = Utc::now();
    let quality = |red: bool, changed_at| NumberQuality {
        waba_id: t.tenant.waba_id.clone(),
        display_phone_number: "15550783881".into(),
        red,
        changed_at,
    };
    assert!(
        webhook
            .put_number_quality(&t.tenant.tenant_id, &quality(true, at))
            .await
            .unwrap()
    );
    // An older UNFLAGGED delivered late is kept out.
    let older = quality(false, at - chrono::Duration::minutes(5));
    assert!(!webhook.put_number_quality(&t.tenant.tenant_id, &older).await.unwrap());
    let stored = store.number_qualities(&t.tenant.tenant_id).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].red);
    assert!(
        store
            .number_qualities(&other.tenant.tenant_id)
            .await
            .unwrap()
            .is_empty()
    );

    let engine_sdk = stack().sdk_for("BroadcastFunction").await;
    let engine_store = stack().store_for("BroadcastFunction").await;
    let queue = SqsQueue::new(crm_shared::aws::sqs_client(&engine_sdk), &queue_url);
    for tenant_id in [&t.tenant.tenant_id, &other.tenant.tenant_id] {
        let mut report = Default::default();
        run_tenant(
            &engine_store,
            &stack().privacy_for("BroadcastFunction").await.exports,
            &queue,
            tenant_id,
            Utc::now(),
            &EngineConfig::default(),
            &mut report,
        )
        .await
        .unwrap();
    }
    let paused = store
        .get_broadcast(&t.tenant.tenant_id, &started[0].broadcast_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paused.status, BroadcastStatus::Paused);
    assert_eq!(paused.pause_reason, Some(PauseReason::NumberQualityRed));
    let audit = store.list_audit(&t.tenant.tenant_id, 50, None).await.unwrap().items;
    assert!(audit.iter().any(|e| e.action == "broadcast.pause"));
    let untouched = store
        .get_broadcast(&other.tenant.tenant_id, &started[1].broadcast_id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        untouched.status,
        BroadcastStatus::Paused,
        "another tenant's number is not flagged"
    );
}

/// Uploads `csv` through a fresh presigned link; returns the upload id.
async fn upload(base: &str, key: &str, csv: &str) -> String {
    let (status, link) = api("POST", &format!("{base}/v1/broadcasts/uploads"), Some(key), None).await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["method"], "PUT");
    let put = reqwest::Client::new()
        .put(link["url"].as_str().unwrap())
        .header("content-type", link["headers"]["content-type"].as_str().unwrap())
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    link["upload_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_uploaded_csv_audience_is_checked_whole_then_planned_with_its_columns() {
    let store = stack().store().await;
    let queue_url = own_queue("OutboundQueue").await;
    let gw = start_gateway_with_queues(store.clone(), stack().media_queue_url(), &queue_url).await;
    let url = |p: &str| format!("{}{p}", gw.base);
    let t = new_tenant(&store, "CSV audience").await;
    let tenant_id = t.tenant.tenant_id.clone();
    let admin = t.api_key.expose().to_owned();
    let meta = json!({"name": "spring_sale", "language": "en_US", "id": "9", "status": "APPROVED",
        "category": "MARKETING", "parameter_format": "POSITIONAL",
        "components": [{"type": "BODY", "text": "Hi {{1}}, code {{2}}", "example": {"body_text": [["Ana", "X"]]}}]});
    let template = crm_shared::template::TemplateRecord::from_meta(&tenant_id, &meta, Utc::now()).unwrap();
    store.put_template(&template).await.unwrap();
    crm_shared::store::BroadcastStore::set_messaging_limit(&store, &tenant_id, Some(100_000))
        .await
        .unwrap();
    // Contacts 0 and 6 are eligible ("ok"), 1 opted out; the file also names a phone with no
    // contact, repeats contact 0 and gives contact 6 by id.
    let contacts: Vec<Contact> = (0..7)
        .map(|i| Contact {
            // Numbers the phone parser takes (the fixtures' drama range is refused in files).
            phone: Some(format!("+4479111234{i:02}")),
            ..contact(&tenant_id, i)
        })
        .collect();
    for c in &contacts {
        store.create_contact(c).await.unwrap();
    }
    let phone = |i: usize| contacts[i].phone.clone().unwrap();
    let csv = format!(
        "phone,contact_id,first_name,code\n{},,Ana,A-1\n{},,Bo,B-2\n+447911123499,,Cy,C-3\n{},,Ana again,A-9\n,{},Di,D-4\n",
        phone(0),
        phone(1),
        phone(0),
        contacts[6].contact_id
    );
    let body = |upload_id: &str, second: &str| {
        json!({"name": "From a file", "template": {"name": "spring_sale", "language": "en_US"},
            "audience": {"upload_id": upload_id},
            "parameters": {"1": "csv.first_name", "2": second}})
    };

    // A bad file is refused whole, naming its lines; nothing is stored.
    let bad = upload(
        &gw.base,
        &admin,
        "phone,code\n12345,X\n+447911123401,Y\nnot a phone,Z\n",
    )
    .await;
    let (status, refused) = api(
        "POST",
        &url("/v1/broadcasts"),
        Some(&admin),
        Some(body(&bad, "csv.code")),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_audience")),
        "{refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 2") && message.contains("line 4"), "{message}");
    // A source naming a column the file lacks is refused too.
    let id = upload(&gw.base, &admin, &csv).await;
    let (status, refused) = api(
        "POST",
        &url("/v1/broadcasts"),
        Some(&admin),
        Some(body(&id, "csv.nope")),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_parameters")),
        "{refused}"
    );
    // Another tenant cannot take this tenant's upload.
    let other = new_tenant(&store, "Other CSV").await;
    let other_key = other.api_key.expose().to_owned();
    store
        .put_template(
            &crm_shared::template::TemplateRecord::from_meta(&other.tenant.tenant_id, &meta, Utc::now()).unwrap(),
        )
        .await
        .unwrap();
    let (status, refused) = api(
        "POST",
        &url("/v1/broadcasts"),
        Some(&other_key),
        Some(body(&id, "csv.code")),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("upload_not_found")),
        "{refused}"
    );

    let (status, created) = api(
        "POST",
        &url("/v1/broadcasts"),
        Some(&admin),
        Some(body(&id, "csv.code")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["audience"]["file"]["rows"], 5);
    assert_eq!(created["audience"]["file"]["columns"], json!(["first_name", "code"]));
    assert!(created["audience"].get("upload_id").is_none());
    let b = created["id"].as_str().unwrap().to_owned();
    // An upload makes one broadcast.
    let (status, again) = api(
        "POST",
        &url("/v1/broadcasts"),
        Some(&admin),
        Some(body(&id, "csv.code")),
    )
    .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (422, Some("upload_not_found"))
    );
    let (status, _) = api("POST", &url(&format!("/v1/broadcasts/{b}/start")), Some(&admin), None).await;
    assert_eq!(status, 200);

    let graph = graph("+10000000000").await;
    let engine = Engine::on_roles(&tenant_id, &queue_url, &graph.uri()).await;
    let mut done = json!({});
    for _ in 0..10 {
        engine.run().await;
        engine.drain().await;
        let (_, now) = api("GET", &url(&format!("/v1/broadcasts/{b}")), Some(&admin), None).await;
        done = now;
        if done["status"] == "completed" {
            break;
        }
    }
    assert_eq!(done["status"], "completed", "{done}");
    let c = &done["counters"];
    assert_eq!(c["targeted"], 5, "{c}");
    assert_eq!(c["skipped"]["unknown_contact"], 1, "{c}");
    assert_eq!(c["skipped"]["duplicate"], 1, "{c}");
    assert_eq!(c["skipped"]["no_marketing_consent"], 1, "{c}");
    assert_eq!(c["sent"], 2, "{c}");
    // Exactly the eligible rows, once each, with their own row's values.
    let mut texts = HashMap::new();
    for r in graph.received_requests().await.unwrap() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let params: Vec<String> = body["template"]["components"][0]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["text"].as_str().unwrap().to_owned())
            .collect();
        assert!(texts.insert(body["to"].as_str().unwrap().to_owned(), params).is_none());
    }
    assert_eq!(texts.len(), 2);
    assert_eq!(texts[phone(0).trim_start_matches('+')], vec!["Ana", "A-1"]);
    assert_eq!(texts[phone(6).trim_start_matches('+')], vec!["Di", "D-4"]);
    // The file is gone once planned, and so is the upload.
    let exports = stack().privacy().await.exports;
    let left = exports.list_keys(&format!("tenants/{tenant_id}/")).await.unwrap();
    assert!(
        left.iter().all(|k| !k.contains("/broadcasts/") && !k.contains(&id)),
        "{left:?}"
    );
    assert!(
        left.iter().any(|k| k.contains(&bad)),
        "the refused upload waits for the bucket's expiry"
    );

    // The per-recipient results as one CSV document (built by the exporter, on its role).
    let (status, _) = api(
        "POST",
        &url(&format!("/v1/broadcasts/{b}/export")),
        Some(&other_key),
        None,
    )
    .await;
    assert_eq!(status, 404, "another tenant's broadcast");
    let (status, export) = api("POST", &url(&format!("/v1/broadcasts/{b}/export")), Some(&admin), None).await;
    assert_eq!((status, export["status"].as_str()), (202, Some("pending")), "{export}");
    let export_id = export["export_id"].as_str().unwrap().to_owned();
    let exporter = stack().privacy_for("ExporterFunction").await;
    exporter.build_export(&tenant_id, &export_id).await.unwrap();
    let (status, ready) = api("GET", &url(&format!("/v1/exports/{export_id}")), Some(&admin), None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")), "{ready}");
    assert_eq!(ready["broadcast_id"], b.as_str());
    assert_eq!(ready["recipient_count"], 3, "{ready}");
    let document = reqwest::get(ready["url"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = document.lines();
    assert_eq!(
        lines.next(),
        Some(
            "contact_id,phone,name,status,reason,language,message_id,error_code,attempts,sent_at,replied,opted_out_after,retry_at,updated_at"
        )
    );
    let rows: Vec<Vec<String>> = lines.map(|l| l.split(',').map(str::to_owned).collect()).collect();
    assert_eq!(rows.len(), 3, "{document}");
    let row_of = |i: usize| rows.iter().find(|r| r[0] == contacts[i].contact_id).unwrap().clone();
    assert_eq!(
        (row_of(0)[1].as_str(), row_of(0)[3].as_str()),
        (phone(0).as_str(), "sent")
    );
    assert_eq!(
        (row_of(1)[3].as_str(), row_of(1)[4].as_str()),
        ("skipped", "no_marketing_consent")
    );
    assert_eq!(row_of(6)[3], "sent");
    // Erasing a recipient deletes the tenant's result exports (they name phones and names).
    let (status, _) = api(
        "DELETE",
        &url(&format!("/v1/contacts/{}", contacts[0].contact_id)),
        Some(&admin),
        None,
    )
    .await;
    assert!(status == 200 || status == 202, "{status}");
    let (status, _) = api("GET", &url(&format!("/v1/exports/{export_id}")), Some(&admin), None).await;
    assert_eq!(status, 404);
    let left = exports
        .list_keys(&format!("tenants/{tenant_id}/broadcasts/"))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}
