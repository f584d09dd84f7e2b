//! Sending: API → queue → sender → Graph (the local Meta sandbox, or wiremock for error
//! classes) → status webhooks → the message's status.

use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use chrono::Utc;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crm_shared::admin;
use crm_shared::auth::Role;
use crm_shared::config::GraphConfig;
use crm_shared::graph::GraphClient;
use crm_shared::jobs::{EnqueueError, RetryScheduler, SendJob, SendJobQueue};
use crm_shared::message::MessageStatus;
use crm_shared::store::{DynamoStore, MessageStore, TenantStore};
use devstack::sandbox::Sandbox;
use e2e_tests::{TEST_APP_SECRET, api, new_tenant, own_queue, stack, start_gateway_with_queues};
use sender_fn::{Deps, Outcome, SenderConfig};

/// Records the delays the sender asks for (visibility changes and jobs handed back) instead of
/// queueing anything: these tests drive the sender record by record.
#[derive(Default)]
struct NoDelay(Mutex<Vec<i32>>);

impl RetryScheduler for NoDelay {
    async fn retry_after(&self, _receipt_handle: &str, seconds: i32) -> Result<(), EnqueueError> {
        self.0.lock().unwrap().push(seconds);
        Ok(())
    }
}

impl SendJobQueue for NoDelay {
    async fn enqueue_send_after(&self, _job: &SendJob, delay: Duration) -> Result<(), EnqueueError> {
        self.0.lock().unwrap().push(delay.as_secs() as i32);
        Ok(())
    }
}

fn graph(base: &str) -> GraphClient {
    GraphClient::new(&GraphConfig {
        base_url: base.to_owned(),
        version: "v25.0".into(),
    })
    .unwrap()
}

/// A sender function instance on the sender's role.
async fn sender(graph_base: &str) -> Deps<DynamoStore, GraphClient, NoDelay> {
    Deps::new(
        stack().store_for("SenderFunction").await,
        graph(graph_base),
        NoDelay::default(),
        SenderConfig {
            max_receives: 3,
            rate_per_second: 80,
            ..SenderConfig::default()
        },
    )
}

struct World {
    store: DynamoStore,
    gw: e2e_tests::Gateway,
    outbound_queue: String,
    tenant_id: String,
    phone_number_id: String,
    agent: String,
    admin: String,
}

async fn world(name: &str) -> World {
    let store = stack().store().await;
    let outbound_queue = own_queue("OutboundQueue").await;
    let gw = start_gateway_with_queues(store.clone(), stack().media_queue_url(), &outbound_queue).await;
    let t = new_tenant(&store, name).await;
    let agent = admin::create_api_key(&store, &t.tenant.tenant_id, Role::Agent)
        .await
        .unwrap();
    // The approved templates these tests send (template sends are checked against the registry).
    for (name, category) in [("hi", "UTILITY"), ("t", "UTILITY"), ("promo", "MARKETING")] {
        let meta = json!({"id": "1", "name": name, "language": "en", "status": "APPROVED", "category": category,
                          "components": [{"type": "BODY", "text": "Hello"}]});
        let record = crm_shared::template::TemplateRecord::from_meta(&t.tenant.tenant_id, &meta, Utc::now()).unwrap();
        crm_shared::store::TemplateStore::put_template(&store, &record)
            .await
            .unwrap();
    }
    World {
        store,
        gw,
        outbound_queue,
        tenant_id: t.tenant.tenant_id.clone(),
        phone_number_id: t.tenant.phone_number_id.clone(),
        agent: agent.api_key.expose().to_owned(),
        admin: t.api_key.expose().to_owned(),
    }
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.base)
    }

    /// A customer writes in, which opens the 24 h window; returns the contact id.
    async fn customer_writes(&self, sandbox: &Sandbox, phone: &str) -> String {
        sandbox
            .inbound_text(&self.phone_number_id, phone, "Casey", "hello")
            .await
            .expect("webhook accepted");
        let (_, list) = api(
            "GET",
            &self.url(&format!("/v1/contacts?q={}", phone.replace('+', "%2B"))),
            Some(&self.agent),
            None,
        )
        .await;
        list["items"][0]["id"]
            .as_str()
            .expect("contact created by the webhook")
            .to_owned()
    }

    async fn send(&self, body: Value, key: Option<&str>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut req = client
            .post(self.url("/v1/messages"))
            .header("authorization", format!("Bearer {}", self.agent))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn message(&self, id: &str) -> Value {
        api("GET", &self.url(&format!("/v1/messages/{id}")), Some(&self.agent), None)
            .await
            .1
    }

    async fn run_sender(&self, deps: &Deps<DynamoStore, GraphClient, NoDelay>) -> usize {
        let sqs = crm_shared::aws::sqs_client(&stack().sdk().await);
        devstack::poller::poll_once(&sqs, &self.outbound_queue, 2, |event| sender_fn::handle(deps, event))
            .await
            .unwrap()
    }
}

async fn start_sandbox(w: &World) -> (std::sync::Arc<Sandbox>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sandbox = Sandbox::new(w.store.clone(), &w.url("/webhooks/whatsapp"), TEST_APP_SECRET, &base);
    tokio::spawn(devstack::sandbox::serve(listener, sandbox.clone()));
    (sandbox, base)
}

#[tokio::test]
async fn a_message_travels_from_the_api_to_read() {
    let w = world("Loop").await;
    let (sandbox, sandbox_url) = start_sandbox(&w).await;
    let contact = w.customer_writes(&sandbox, "+447911123450").await;
    let (status, queued) = w
        .send(
            json!({"contact_id": contact, "type": "text", "text": {"body": "Your order shipped"}}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["status"], "queued");
    let id = queued["id"].as_str().unwrap().to_owned();
    assert_eq!(w.message(&id).await["status"], "queued");

    let deps = sender(&sandbox_url).await;
    assert_eq!(w.run_sender(&deps).await, 1);
    let sent = w.message(&id).await;
    assert!(
        ["sent", "delivered", "read"].contains(&sent["status"].as_str().unwrap()),
        "{sent}"
    );
    let wamid = sent["wamid"].as_str().expect("wamid once Meta accepted").to_owned();
    let payloads = sandbox.sent();
    let (_, payload) = payloads
        .iter()
        .find(|(w, _)| *w == wamid)
        .expect("sandbox got the send");
    assert_eq!(payload["to"], "447911123450");
    assert_eq!(payload["text"]["body"], "Your order shipped");

    // The sandbox's signed status webhooks move it to read.
    let mut last = Value::Null;
    for _ in 0..100 {
        last = w.message(&id).await;
        if last["status"] == "read" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "read", "{last}");
    assert!(last["status_at"]["delivered"].is_string() && last["status_at"]["sent"].is_string());

    // The job is gone; running the sender again sends nothing more.
    assert_eq!(w.run_sender(&deps).await, 0);
    assert_eq!(
        sandbox
            .sent()
            .iter()
            .filter(|(_, p)| p["biz_opaque_callback_data"] == id.as_str())
            .count(),
        1
    );
}

#[tokio::test]
async fn idempotency_keys_return_the_first_response_without_a_second_send() {
    let w = world("Idempotent").await;
    let (sandbox, sandbox_url) = start_sandbox(&w).await;
    let contact = w.customer_writes(&sandbox, "+447911123451").await;
    let body = json!({"contact_id": contact, "type": "text", "text": {"body": "once"}});
    let (s1, first) = w.send(body.clone(), Some("order-42-shipped")).await;
    let (s2, second) = w.send(body.clone(), Some("order-42-shipped")).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first, second);
    let (s3, other) = w
        .send(
            json!({"contact_id": contact, "type": "text", "text": {"body": "different"}}),
            Some("order-42-shipped"),
        )
        .await;
    assert_eq!(
        (s3, other["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // Another tenant may use the same key independently.
    let w2 = world("Idempotent 2").await;
    let (s4, _) = w2.send(json!({"to": "+447911123459", "type": "template", "template": {"name": "hi", "language": {"code": "en"}}, "category": "utility"}), Some("order-42-shipped")).await;
    assert_eq!(s4, 202);

    let deps = sender(&sandbox_url).await;
    while w.run_sender(&deps).await > 0 {}
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        sandbox
            .sent()
            .iter()
            .filter(|(_, p)| p["biz_opaque_callback_data"] == id)
            .count(),
        1
    );
    // A repeat after sending still answers the same and sends nothing.
    let (_, again) = w.send(body, Some("order-42-shipped")).await;
    assert_eq!(again, first);
    while w.run_sender(&deps).await > 0 {}
    assert_eq!(
        sandbox
            .sent()
            .iter()
            .filter(|(_, p)| p["biz_opaque_callback_data"] == id)
            .count(),
        1
    );
}

#[tokio::test]
async fn the_sending_rules_refuse_before_meta_and_again_in_the_sender() {
    let w = world("Rules").await;
    let (sandbox, sandbox_url) = start_sandbox(&w).await;
    let contact = w.customer_writes(&sandbox, "+447911123452").await;
    let template = |category: &str| {
        let name = if category == "marketing" { "promo" } else { "t" };
        json!({"contact_id": contact, "type": "template", "category": category,
               "template": {"name": name, "language": {"code": "en"}}})
    };
    // Opted out: no marketing, utility still fine.
    api(
        "PUT",
        &w.url(&format!("/v1/contacts/{contact}/consent")),
        Some(&w.agent),
        Some(json!({"marketing": "opted_out", "source": "call"})),
    )
    .await;
    let (status, refused) = w.send(template("marketing"), None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("opted_out")));
    let rejected_id = refused["error"]["message_id"].as_str().unwrap();
    assert_eq!(
        (refused["id"].as_str(), &refused["status"]),
        (Some(rejected_id), &json!("rejected"))
    );
    let stored = w.message(rejected_id).await;
    assert_eq!(stored["status"], "rejected");
    assert_eq!(stored["error"]["title"], "opted_out");
    assert_eq!(w.send(template("utility"), None).await.0, 202);

    // Outside 24 h: only templates (a new number never wrote in).
    let (status, refused) = w
        .send(
            json!({"to": "+447911123499", "type": "text", "text": {"body": "hi"}}),
            None,
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("outside_service_window"))
    );
    let (status, _) = w
        .send(json!({"to": "+447911123499", "type": "template", "category": "utility", "template": {"name": "t", "language": {"code": "en"}}}), None)
        .await;
    assert_eq!(status, 202);

    // Queued, then restricted before the sender runs: the sender refuses it, Meta sees nothing.
    let (_, queued) = w
        .send(
            json!({"contact_id": contact, "type": "text", "text": {"body": "late"}}),
            None,
        )
        .await;
    let late_id = queued["id"].as_str().unwrap().to_owned();
    api(
        "PUT",
        &w.url(&format!("/v1/contacts/{contact}/restriction")),
        Some(&w.agent),
        Some(json!({"restricted": true})),
    )
    .await;
    let (status, refused) = w.send(json!({"contact_id": contact, "type": "template", "category": "utility", "template": {"name": "t", "language": {"code": "en"}}}), None).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("contact_restricted"))
    );
    let deps = sender(&sandbox_url).await;
    while w.run_sender(&deps).await > 0 {}
    let late = w.message(&late_id).await;
    assert_eq!(late["status"], "rejected", "{late}");
    assert_eq!(late["error"]["title"], "contact_restricted");
    assert!(
        !sandbox
            .sent()
            .iter()
            .any(|(_, p)| p["biz_opaque_callback_data"] == late_id.as_str())
    );

    // Bad requests.
    for (body, code) in [
        (
            json!({"contact_id": contact, "type": "text", "text": {"body": "x".repeat(4097)}}),
            "invalid_message",
        ),
        (
            json!({"contact_id": crm_shared::ids::new_id(), "type": "text", "text": {"body": "x"}}),
            "not_found",
        ),
        (
            json!({"contact_id": contact, "type": "text", "text": {"body": "x"}, "reply_to": crm_shared::ids::new_id()}),
            "invalid_reply_to",
        ),
    ] {
        let (_, resp) = w.send(body, None).await;
        assert_eq!(resp["error"]["code"], code);
    }
    let viewer = admin::create_api_key(&w.store, &w.tenant_id, Role::Viewer)
        .await
        .unwrap();
    let (status, _) = api(
        "POST",
        &w.url("/v1/messages"),
        Some(viewer.api_key.expose()),
        Some(json!({"to": "+447911123452", "type": "text", "text": {"body": "x"}})),
    )
    .await;
    assert_eq!(status, 403);
    let _ = &w.admin;
}

/// A queued message (through the API) and its SQS record for driving the sender directly.
async fn queued(w: &World, phone: &str, sandbox: &Sandbox, failures: u32) -> (String, SqsMessage) {
    let contact = w.customer_writes(sandbox, phone).await;
    let (status, q) = w
        .send(
            json!({"contact_id": contact, "type": "text", "text": {"body": "hi"}}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{q}");
    let id = q["id"].as_str().unwrap().to_owned();
    (id.clone(), record(&w.tenant_id, &id, failures))
}

/// The SQS record of a send job that failed `failures` times before.
fn record(tenant: &str, message_id: &str, failures: u32) -> SqsMessage {
    serde_json::from_value(json!({
        "messageId": format!("sqs-{message_id}"),
        "receiptHandle": "rh",
        "body": json!({"tenant_id": tenant, "message_id": message_id, "failures": failures}).to_string(),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "awsRegion": "us-east-1"
    }))
    .unwrap()
}

fn meta_error(status: u16, code: i64) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"error": {
        "message": format!("error {code}"), "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": format!("details of {code}")},
        "fbtrace_id": "x"}}))
}

fn accepted(wamid: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"messaging_product": "whatsapp", "messages": [{"id": wamid}]}))
}

#[tokio::test]
async fn meta_errors_are_classified_and_a_mixed_batch_reports_only_its_retries() {
    let w = world("Errors").await;
    let (sandbox, _) = start_sandbox(&w).await;
    let graph_mock = MockServer::start().await;
    let to = |n: &str| body_partial_json(json!({"to": n}));
    Mock::given(method("POST"))
        .and(to("447911123460"))
        .respond_with(accepted("wamid.ok"))
        .expect(1)
        .mount(&graph_mock)
        .await;
    Mock::given(method("POST"))
        .and(to("447911123461"))
        .respond_with(meta_error(400, 131047))
        .expect(1)
        .mount(&graph_mock)
        .await;
    Mock::given(method("POST"))
        .and(to("447911123462"))
        .respond_with(meta_error(400, 130429))
        .mount(&graph_mock)
        .await;
    Mock::given(method("POST"))
        .and(to("447911123463"))
        .respond_with(meta_error(400, 131056))
        .mount(&graph_mock)
        .await;
    Mock::given(method("POST"))
        .and(to("447911123464"))
        .respond_with(meta_error(503, 131000))
        .mount(&graph_mock)
        .await;
    Mock::given(method("POST"))
        .and(to("447911123465"))
        .respond_with(meta_error(400, 132001))
        .mount(&graph_mock)
        .await;

    let (ok, r_ok) = queued(&w, "+447911123460", &sandbox, 0).await;
    let (window, r_window) = queued(&w, "+447911123461", &sandbox, 0).await;
    let (throttled, r_throttled) = queued(&w, "+447911123462", &sandbox, 0).await;
    let (pair, r_pair) = queued(&w, "+447911123463", &sandbox, 0).await;
    let (down, r_down) = queued(&w, "+447911123464", &sandbox, 2).await;
    let (template, r_template) = queued(&w, "+447911123465", &sandbox, 0).await;
    let deps = sender(&graph_mock.uri()).await;
    let outcomes = sender_fn::process_batch(&deps, &[r_ok, r_window, r_throttled, r_pair, r_down, r_template]).await;
    assert_eq!(
        outcomes,
        vec![
            Outcome::Done,
            Outcome::Done,
            Outcome::Requeue {
                delay_secs: 5,
                failures: 1
            },
            Outcome::Requeue {
                delay_secs: 7,
                failures: 0
            },
            Outcome::Done,
            Outcome::Done
        ]
    );
    let status = |id: String| {
        let store = w.store.clone();
        let t = w.tenant_id.clone();
        async move { store.get_message(&t, &id).await.unwrap().unwrap() }
    };
    assert_eq!(status(ok).await.status, MessageStatus::Sent);
    let failed = status(window).await;
    assert_eq!(failed.status, MessageStatus::Failed);
    let error = failed.error.unwrap();
    assert_eq!(
        (error.code, error.detail.as_deref()),
        (131047, Some("details of 131047"))
    );
    // Retryable ones are back in the queue's hands, still queued, lease released.
    assert_eq!(status(throttled.clone()).await.status, MessageStatus::Queued);
    assert_eq!(status(pair).await.status, MessageStatus::Queued);
    // Out of retries: failed for good.
    assert_eq!(status(down).await.status, MessageStatus::Failed);
    assert_eq!(status(template).await.error.unwrap().code, 132001);

    // Through the Lambda handler, a retry is handed back as a new delayed job: the record is done.
    let resp = sender_fn::handle(
        &deps,
        lambda_runtime::LambdaEvent::new(
            serde_json::from_value(
                json!({"Records": [serde_json::to_value(record(&w.tenant_id, &throttled, 1)).unwrap()]}),
            )
            .unwrap(),
            lambda_runtime::Context::default(),
        ),
    )
    .await
    .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    // The recipient was paced by the first attempt, so this retry waits out the pair interval.
    assert_eq!(*deps.retry.0.lock().unwrap(), vec![6]);
}

#[tokio::test]
async fn an_expired_token_fails_the_message_and_stops_sending_for_the_tenant() {
    let w = world("Token").await;
    let (sandbox, _) = start_sandbox(&w).await;
    let graph_mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("/messages$"))
        .respond_with(meta_error(401, 190))
        .expect(1)
        .mount(&graph_mock)
        .await;
    let (first, r1) = queued(&w, "+447911123470", &sandbox, 0).await;
    let (second, r2) = queued(&w, "+447911123471", &sandbox, 0).await;
    let deps = sender(&graph_mock.uri()).await;
    assert_eq!(sender_fn::process_batch(&deps, &[r1]).await, vec![Outcome::Done]);
    let m = w.store.get_message(&w.tenant_id, &first).await.unwrap().unwrap();
    assert_eq!((m.status, m.error.unwrap().code), (MessageStatus::Failed, 190));
    assert!(w.store.get_tenant(&w.tenant_id).await.unwrap().unwrap().token_invalid);
    // The next message waits (no Graph call: the mock expects exactly one).
    let outcome = sender_fn::process_batch(&deps, std::slice::from_ref(&r2)).await;
    assert!(
        matches!(outcome[0], Outcome::Requeue { delay_secs, failures: 0 } if delay_secs >= 60),
        "{outcome:?}"
    );
    assert_eq!(
        w.store
            .get_message(&w.tenant_id, &second)
            .await
            .unwrap()
            .unwrap()
            .status,
        MessageStatus::Queued
    );

    // An operator replaces the token: sending resumes.
    w.store
        .replace_graph_token(&w.tenant_id, &crm_shared::secret::Secret::new("fresh-token"))
        .await
        .unwrap();
    let good = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(accepted("wamid.resumed"))
        .expect(1)
        .mount(&good)
        .await;
    let deps = sender(&good.uri()).await;
    assert_eq!(sender_fn::process_batch(&deps, &[r2]).await, vec![Outcome::Done]);
    assert_eq!(
        w.store
            .get_message(&w.tenant_id, &second)
            .await
            .unwrap()
            .unwrap()
            .status,
        MessageStatus::Sent
    );
}

#[tokio::test]
async fn the_per_number_send_schedule_never_books_two_senders_into_one_slot() {
    use crm_shared::sending::{SendSchedule, SlotDecision, schedule_clock, wall_clock};
    use crm_shared::store::SendPacingStore;
    let w = world("Limiter").await;
    // 25 per second, booked up to 2 s ahead.
    let schedule = SendSchedule::new(25, std::time::Duration::from_secs(2));
    let now_us = Utc::now().timestamp_micros();
    // Eight concurrent senders ask for 10 slots each (3.2 s of sends at 25/s): the first ones
    // start at `now`, the later ones queue behind them until the horizon is booked.
    let asks = (0..8).map(|_| {
        w.store
            .take_send_slots(&w.tenant_id, &w.phone_number_id, now_us, 10, schedule)
    });
    let mut due = Vec::new();
    let mut full = 0;
    for decision in futures::future::join_all(asks).await {
        match decision.unwrap() {
            SlotDecision::Grant { grant, .. } => due.extend((0..grant.count).map(|i| grant.due_us(i))),
            SlotDecision::Full { retry_at_us } => {
                assert!(retry_at_us > now_us && retry_at_us <= now_us + 2_000_000);
                full += 1;
            }
        }
    }
    // A grant may start up to the horizon: 10 slots = 0.4 s of the schedule's clock each, so
    // six grants (starting at 0, 0.4, …, 2.0 s); the rest are told when to come back.
    assert_eq!(due.len(), 60, "slots granted");
    assert_eq!(due.len() / 10 + full, 8);
    due.sort_unstable();
    let start = schedule_clock(now_us);
    let first = wall_clock(start);
    assert_eq!(due[0], first, "an unused schedule starts now");
    let expected: Vec<i64> = (0..60).map(|i| wall_clock(start + i * schedule.interval_us)).collect();
    assert_eq!(due, expected, "slots are consecutive and never shared");
    // Another phone number of the same tenant has its own schedule.
    match w
        .store
        .take_send_slots(&w.tenant_id, "other-number", now_us, 5, schedule)
        .await
        .unwrap()
    {
        SlotDecision::Grant { grant, .. } => assert_eq!(grant.due_us(0), first),
        other => panic!("another number is not booked: {other:?}"),
    }
    // An idle schedule restarts at the caller's now instead of handing out past slots.
    let later_us = now_us + 60_000_000;
    match w
        .store
        .take_send_slots(&w.tenant_id, &w.phone_number_id, later_us, 1, schedule)
        .await
        .unwrap()
    {
        SlotDecision::Grant { grant, .. } => assert_eq!(grant.due_us(0), wall_clock(schedule_clock(later_us))),
        other => panic!("idle schedule grants at once: {other:?}"),
    }
}

/// One API call handed straight to an API instance (no gateway): `(status, JSON body)`.
async fn call_api<S: api_fn::ApiStore>(
    deps: &api_fn::Deps<S, crm_shared::blob::S3Blobs, NoDelay>,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let bearer = format!("Bearer {key}");
    let request = e2e_tests::gateway_request(
        method,
        path,
        &[("authorization", &bearer), ("content-type", "application/json")],
        body.as_bytes(),
    );
    let resp = api_fn::handle(deps, request).await.unwrap();
    let status = resp.status().as_u16();
    let value = match resp.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, value)
}

#[tokio::test]
async fn a_send_reads_its_recipient_beside_the_key_and_never_a_contact_that_lost_the_phone() {
    let (counted, counter) = stack().counted_store("ApiFunction").await;
    let store = stack().store().await;
    let sdk = stack().sdk_for("ApiFunction").await;
    let instance = || {
        api_fn::Deps::new(
            counted.clone(),
            crm_shared::cursor::CursorCodec::new("send-cost"),
            crm_shared::blob::S3Blobs::new(crm_shared::aws::s3_client(&sdk), stack().media_bucket()),
            NoDelay::default(),
        )
    };
    let (a, b) = (
        new_tenant(&store, "SendCostA").await,
        new_tenant(&store, "SendCostB").await,
    );
    let (key_a, key_b) = (a.api_key.expose().to_owned(), b.api_key.expose().to_owned());
    // Fixed numbers: both tenants are new.
    let phone = "+447911123480".to_owned();
    let first = instance();
    // Warm what every request of an instance reads once (the tenants' status, the keys' use).
    for key in [&key_a, &key_b] {
        assert_eq!(call_api(&first, "GET", "/v1/me", key, None).await.0, 200);
    }
    let text = |to: Value| json!({"to": to, "type": "text", "text": {"body": "hello"}});
    // A text outside the window is stored `rejected` (422): the same reads and the same
    // transaction as a queued one, without the queue.
    let send = async |deps: &api_fn::Deps<_, _, _>, key: &str, body: Value| {
        counter.take();
        let body_sent = body.to_string();
        let (status, body) = call_api(deps, "POST", "/v1/messages", key, Some(body)).await;
        assert_eq!(status, 422, "{body} {body_sent}");
        let message_id = body["error"]["message_id"].as_str().unwrap().to_owned();
        let requests: Vec<&'static str> = counter
            .take()
            .iter()
            .map(|op| match op.as_str() {
                "BatchGetItem" => "BatchGetItem",
                "GetItem" => "GetItem",
                "TransactWriteItems" => "TransactWriteItems",
                _ => "other",
            })
            .collect();
        let (_, message) = call_api(deps, "GET", &format!("/v1/messages/{message_id}"), key, None).await;
        (requests, message["contact_id"].as_str().unwrap().to_owned())
    };

    // A phone new to the tenant: key and phone owner in one batch, the contact's creation, the
    // message (its audit entry in the same transaction). The sending number is the tenant's
    // first (a new contact has written to none), known from authentication's tenant read.
    let (requests, contact) = send(&first, &key_a, text(json!(phone))).await;
    assert_eq!(
        requests,
        vec!["BatchGetItem", "TransactWriteItems", "TransactWriteItems"]
    );
    // Again from this instance: the contact itself beside the key.
    let (requests, again) = send(&first, &key_a, text(json!(phone))).await;
    assert_eq!(
        (requests, again.as_str()),
        (vec!["BatchGetItem", "TransactWriteItems"], contact.as_str())
    );
    // By contact id, from any instance.
    let (requests, by_id) = send(
        &first,
        &key_a,
        json!({"contact_id": contact, "type": "text", "text": {"body": "hi"}}),
    )
    .await;
    assert_eq!(
        (requests, by_id.as_str()),
        (vec!["BatchGetItem", "TransactWriteItems"], contact.as_str())
    );
    // A known contact new to an instance: the phone's owner beside the key, then the contact.
    let second = instance();
    assert_eq!(call_api(&second, "GET", "/v1/me", &key_a, None).await.0, 200);
    let (requests, known) = send(&second, &key_a, text(json!(phone))).await;
    assert_eq!(
        (requests, known.as_str()),
        (vec!["BatchGetItem", "GetItem", "TransactWriteItems"], contact.as_str())
    );
    // The same phone at another tenant is another contact, whatever the instance remembers.
    let (_, other_tenant) = send(&first, &key_b, text(json!(phone))).await;
    assert_ne!(other_tenant, contact);
    let (_, other_again) = send(&first, &key_b, text(json!(phone))).await;
    assert_eq!(other_again, other_tenant);
    // The contact gives up the phone (rectified elsewhere): the instance's memory is checked
    // against the contact it reads, so the next send goes to a new contact holding the phone.
    let moved = "+447911123481";
    let (status, body) = call_api(
        &second,
        "PATCH",
        &format!("/v1/contacts/{contact}"),
        &key_a,
        Some(json!({"phone": moved})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, after_move) = send(&first, &key_a, text(json!(phone))).await;
    assert_ne!(after_move, contact, "never the contact that no longer holds the phone");
    let (_, moved_contact) = send(&first, &key_a, text(json!(moved))).await;
    assert_eq!(moved_contact, contact, "the contact is found at its new phone");
    // Every send was audited in its message's transaction: six at tenant A.
    let (_, audit) = call_api(&first, "GET", "/v1/audit?limit=100", &key_a, None).await;
    let sends = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "message.send")
        .count();
    assert_eq!(sends, 6, "{audit}");
    // A key that is not valid reads nothing on anyone's behalf.
    let last = if key_a.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{last}", &key_a[..key_a.len() - 1]);
    let (status, body) = call_api(&first, "POST", "/v1/messages", &forged, Some(text(json!(phone)))).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn a_number_outside_the_numbering_plan_is_sent_to_only_when_a_contact_has_it() {
    use crm_shared::store::{ContactStore, CustomerIdentity};
    let w = world("Unlisted numbers").await;
    let (sandbox, _) = start_sandbox(&w).await;
    // +1 555 numbers (Meta's test numbers among them) have E.164's shape but no assigned range:
    // WhatsApp routes to them, so a webhook stores the customer as they are.
    let n = e2e_tests::unique_numeric_id();
    let phone = format!("+1555{}", &n[n.len() - 7..]);
    assert!(
        crm_shared::contact::normalize_phone(&phone).is_err(),
        "the premise: {phone}"
    );
    sandbox
        .inbound_text(&w.phone_number_id, &phone, "Casey", "hello")
        .await
        .expect("webhook accepted");
    let identity = CustomerIdentity {
        phone: Some(phone.clone()),
        user_id: None,
    };
    let (contact_id, _) = w
        .store
        .match_contact(&w.tenant_id, &identity)
        .await
        .unwrap()
        .expect("the webhook stored the customer");

    // A reply by `to` reaches that contact, written the way people write it.
    for to in [
        phone.clone(),
        format!("{} {} {}", &phone[..2], &phone[2..5], &phone[5..]),
    ] {
        let (status, body) = w
            .send(json!({"to": to, "type": "text", "text": {"body": "hi back"}}), None)
            .await;
        assert_eq!(status, 202, "{to}: {body}");
        let stored = w.message(body["id"].as_str().unwrap()).await;
        assert_eq!(stored["contact_id"], contact_id.as_str());
    }
    // Nobody has this one: refused, and no contact is made for it (nor through the API).
    let stranger = format!("+1555{}", &n[n.len() - 8..n.len() - 1]);
    let (status, body) = w
        .send(json!({"to": stranger, "type": "text", "text": {"body": "hi"}}), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_phone")),
        "{body}"
    );
    let stranger_identity = CustomerIdentity {
        phone: Some(stranger.clone()),
        user_id: None,
    };
    assert_eq!(
        w.store.match_contact(&w.tenant_id, &stranger_identity).await.unwrap(),
        None
    );
    let (status, _) = api(
        "POST",
        &w.url("/v1/contacts"),
        Some(&w.agent),
        Some(json!({"phone": stranger})),
    )
    .await;
    assert_eq!(status, 400);
}
