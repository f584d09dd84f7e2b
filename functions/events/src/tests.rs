//! The events function and the delivery worker over the in-memory ports, with a local receiver
//! (wiremock) standing in for a tenant endpoint.

use std::time::Duration;

use aws_lambda_events::dynamodb::Event as StreamEvent;
use chrono::{TimeDelta, Utc};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crm_shared::events::EventType;
use crm_shared::events::endpoint::{NewEndpoint, WebhookEndpoint};
use crm_shared::events::push::{DeliveryJob, Pusher};
use crm_shared::events::signing::{new_secret, verify};
use crm_shared::events::ssrf::UrlPolicy;
use crm_shared::secret::Secret;
use crm_shared::store::{EventStore, StoreError, WebhookStore};
use crm_shared::testing::{MemQueue, MemStore, Op};

use crate::{deliver, record};

const LOCAL: UrlPolicy = UrlPolicy { allow_loopback: true };

fn stream_record(id: &str, seq: u64, pk: &str, sk: &str, old: Option<Value>, new: Option<Value>) -> Value {
    let dynamo = |v: &Value| serde_json::to_value(serde_dynamo::to_item::<_, serde_dynamo::Item>(v).unwrap()).unwrap();
    let mut change = json!({
        "ApproximateCreationDateTime": Utc::now().timestamp() as f64,
        "Keys": {"PK": {"S": pk}, "SK": {"S": sk}},
        "SequenceNumber": seq.to_string(),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    });
    if let Some(new) = &new {
        change["NewImage"] = dynamo(new);
    }
    if let Some(old) = &old {
        change["OldImage"] = dynamo(old);
    }
    json!({"eventID": id, "eventName": "INSERT", "eventSource": "aws:dynamodb", "awsRegion": "us-east-1", "dynamodb": change})
}

fn stream_event(records: Vec<Value>) -> LambdaEvent<StreamEvent> {
    LambdaEvent::new(
        serde_json::from_value(json!({"Records": records})).unwrap(),
        Context::default(),
    )
}

fn inbound(tenant: &str, message: &str) -> Value {
    stream_record(
        &format!("rec-{message}"),
        100,
        &format!("T#{tenant}#MSG#{message}"),
        "MSG",
        None,
        Some(
            json!({"message_id": message, "contact_id": "c1", "direction": "inbound", "type": "text",
                    "content": {"body": "hello there"}, "status": "received", "status_rank": 0}),
        ),
    )
}

fn new_contact(tenant: &str, seq: u64) -> Value {
    stream_record(
        "rec-contact",
        seq,
        &format!("T#{tenant}#C#c1"),
        "PROFILE",
        None,
        Some(json!({"contact_id": "c1", "tenant_id": tenant, "name": "Ann"})),
    )
}

async fn endpoint(store: &MemStore, tenant: &str, url: &str, types: &[&str]) -> (WebhookEndpoint, Secret) {
    let input: NewEndpoint = serde_json::from_value(json!({"url": url, "event_types": types})).unwrap();
    let endpoint = input.into_endpoint(tenant, Utc::now()).unwrap();
    let secret = new_secret();
    store.create_endpoint(&endpoint, &secret).await.unwrap();
    (endpoint, secret)
}

fn jobs(queue: &MemQueue) -> Vec<DeliveryJob> {
    queue
        .overflow_bodies()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect()
}

#[tokio::test]
async fn stream_records_become_ordered_events_once_and_fan_out_to_interested_endpoints() {
    let (store, queue) = (MemStore::new(), MemQueue::new());
    let (all, _) = endpoint(&store, "t1", "https://a.example/hook", &[]).await;
    let (contacts_only, _) = endpoint(&store, "t1", "https://b.example/hook", &["contact.created"]).await;
    let deps = record::Deps::new(store.clone(), queue.clone());
    let batch = || stream_event(vec![new_contact("t1", 99), inbound("t1", "m1"), inbound("t2", "m9")]);
    let response = record::handle(&deps, batch()).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let log = store.event_log("t1");
    let kinds: Vec<(u64, EventType)> = log.iter().map(|e| (e.seq, e.event_type)).collect();
    assert_eq!(kinds, [(1, EventType::ContactCreated), (2, EventType::MessageReceived)]);
    assert!(
        !serde_json::to_string(&log).unwrap().contains("hello there"),
        "no bodies in the log"
    );
    assert_eq!(store.event_log("t2").len(), 1, "each tenant has its own log");
    assert_eq!(store.event_log("t2")[0].seq, 1);
    let targets: Vec<(String, u64)> = jobs(&queue)
        .into_iter()
        .map(|j| match j {
            DeliveryJob::Event {
                endpoint_id,
                seq,
                attempt: 1,
                event: Some(event),
                ..
            } if event.seq == seq && event.tenant_id == "t1" => (endpoint_id, seq),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(targets.len(), 3);
    assert!(targets.contains(&(all.endpoint_id.clone(), 1)) && targets.contains(&(all.endpoint_id.clone(), 2)));
    assert!(targets.contains(&(contacts_only.endpoint_id.clone(), 1)));
    // The same batch again (Lambda retried it): nothing recorded twice, deliveries enqueued again.
    record::handle(&deps, batch()).await.unwrap();
    assert_eq!(store.event_log("t1").len(), 2);
    assert_eq!(jobs(&queue).len(), 6);
}

#[tokio::test]
async fn a_storage_failure_retries_the_batch_from_the_tenants_first_record() {
    let (store, queue) = (MemStore::new(), MemQueue::new());
    let deps = record::Deps::new(store.clone(), queue.clone());
    store.fail_next_backend(Op::RecordEvents);
    let response = record::handle(&deps, stream_event(vec![new_contact("t1", 99), inbound("t1", "m1")]))
        .await
        .unwrap();
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, [Some("99".to_owned())]);
    assert!(store.event_log("t1").is_empty());
}

/// A tenant's log with one `message.received`, an endpoint on `url`, and the worker.
async fn delivery_setup(
    url: &str,
    include_bodies: bool,
) -> (
    MemStore,
    MemQueue,
    deliver::Deps<MemStore, MemQueue>,
    WebhookEndpoint,
    Secret,
) {
    let (store, queue) = (MemStore::new(), MemQueue::new());
    let (mut endpoint, secret) = endpoint(&store, "t1", url, &[]).await;
    if include_bodies {
        endpoint.include_bodies = true;
        endpoint.version += 1;
        store.update_endpoint(&endpoint).await.unwrap();
    }
    let rec = record::Deps::new(store.clone(), MemQueue::new());
    record::handle(&rec, stream_event(vec![inbound("t1", "m1")]))
        .await
        .unwrap();
    let deps = deliver::Deps::new(store.clone(), queue.clone(), Pusher::new(LOCAL));
    (store, queue, deps, endpoint, secret)
}

fn first_attempt(endpoint: &WebhookEndpoint) -> DeliveryJob {
    DeliveryJob::Event {
        tenant_id: "t1".into(),
        endpoint_id: endpoint.endpoint_id.clone(),
        seq: 1,
        attempt: 1,
        not_before: None,
        // As a redelivery by id makes it: the worker reads the event from the log.
        event: None,
    }
}

/// A receiver that answers `first` to the first delivery and `then` to every later one.
async fn failing_once(first: u16, then: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(first))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(then))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_job_carrying_its_event_reads_nothing_of_the_log_and_its_retry_carries_it_too() {
    let server = failing_once(503, 204).await;
    let (store, queue, deps, endpoint, _) = delivery_setup(&server.uri(), false).await;
    let logged = store.events_after("t1", 0, 10, Utc::now()).await.unwrap()[0].clone();
    let carrying = |event: crm_shared::events::Event| DeliveryJob::Event {
        tenant_id: "t1".into(),
        endpoint_id: endpoint.endpoint_id.clone(),
        seq: 1,
        attempt: 1,
        not_before: None,
        event: Some(Box::new(event)),
    };
    let now = Utc::now();
    let reads = store.calls(Op::EventAt);
    deliver::run_job(&deps, &carrying(logged.clone()), now).await.unwrap();
    assert_eq!(store.calls(Op::EventAt), reads, "no read of the log");
    let (retry, _) = queue.jobs_of::<DeliveryJob>()[0].clone();
    let DeliveryJob::Event {
        attempt: 2,
        not_before: Some(due),
        event: Some(carried),
        ..
    } = &retry
    else {
        panic!("{retry:?}")
    };
    assert_eq!(**carried, logged);
    deliver::run_job(&deps, &retry, *due).await.unwrap();
    assert_eq!(store.calls(Op::EventAt), reads);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let body: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(
        (body["id"].as_str(), &body["seq"]),
        (Some(logged.id.as_str()), &json!(1))
    );
    // An event that is not the one the job names (another position) is not trusted: the log is.
    let mut other = logged.clone();
    other.seq = 7;
    deliver::run_job(&deps, &carrying(other), now).await.unwrap();
    assert_eq!(store.calls(Op::EventAt), reads + 1);
    let last: Value = serde_json::from_slice(&server.received_requests().await.unwrap()[2].body).unwrap();
    assert_eq!(last["seq"], 1);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_on_the_schedule_with_the_same_webhook_id_and_a_valid_signature() {
    let server = failing_once(500, 200).await;
    let (store, queue, deps, endpoint, secret) = delivery_setup(&server.uri(), false).await;
    let now = Utc::now();
    deliver::run_job(&deps, &first_attempt(&endpoint), now).await.unwrap();
    let retries = queue.jobs_of::<DeliveryJob>();
    assert_eq!(retries.len(), 1);
    let (retry, delay) = retries[0].clone();
    let DeliveryJob::Event {
        attempt: 2,
        not_before: Some(due),
        ..
    } = &retry
    else {
        panic!("{retry:?}")
    };
    assert!(
        (4..=6).contains(&delay.as_secs()),
        "{delay:?}: the second attempt is due after ~5 s"
    );
    assert!((*due - now).num_seconds() >= 4);
    // Not due yet: it waits (re-enqueued, nothing sent).
    deliver::run_job(&deps, &retry, now).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    deliver::run_job(&deps, &retry, *due).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let id = |r: &wiremock::Request| r.headers.get("webhook-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(id(&requests[0]), id(&requests[1]), "one logical delivery");
    for r in &requests {
        let h = |n: &str| r.headers.get(n).unwrap().to_str().unwrap().to_owned();
        let ts: i64 = h("webhook-timestamp").parse().unwrap();
        verify(
            &secret,
            &id(r),
            &h("webhook-timestamp"),
            &h("webhook-signature"),
            &r.body,
            ts,
        )
        .unwrap();
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], "message.received");
        assert_eq!(body["seq"], 1);
        assert!(body["data"].get("message").is_none(), "thin by default");
    }
    let log = store
        .list_deliveries("t1", &endpoint.endpoint_id, 10, None)
        .await
        .unwrap()
        .items;
    assert_eq!(log.len(), 2);
    assert!(log[0].success && log[0].attempt == 2 && log[0].status_code == Some(200));
    assert!(!log[1].success && log[1].status_code == Some(500) && log[1].next_attempt_at.is_some());
    let stored = store.get_endpoint("t1", &endpoint.endpoint_id).await.unwrap().unwrap();
    assert!(stored.failing_since.is_some(), "failing since the first failure");
}

#[tokio::test]
async fn gone_disables_and_five_days_of_failure_disable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&server)
        .await;
    let (store, queue, deps, endpoint, _) = delivery_setup(&server.uri(), false).await;
    deliver::run_job(&deps, &first_attempt(&endpoint), Utc::now())
        .await
        .unwrap();
    let stored = store.get_endpoint("t1", &endpoint.endpoint_id).await.unwrap().unwrap();
    assert!(!stored.enabled);
    assert_eq!(stored.disabled_reason.as_deref(), Some("gone"));
    assert!(queue.jobs().is_empty(), "no retry after 410");

    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&failing)
        .await;
    let (store, queue, deps, endpoint, _) = delivery_setup(&failing.uri(), false).await;
    let now = Utc::now();
    store
        .endpoint_outcome(
            "t1",
            &endpoint.endpoint_id,
            &crm_shared::store::EndpointOutcome::Failed(now - TimeDelta::days(5)),
        )
        .await
        .unwrap();
    deliver::run_job(&deps, &first_attempt(&endpoint), now).await.unwrap();
    let stored = store.get_endpoint("t1", &endpoint.endpoint_id).await.unwrap().unwrap();
    assert_eq!(stored.disabled_reason.as_deref(), Some("failing"));
    assert!(queue.jobs().is_empty());
    // A disabled endpoint gets nothing more.
    deliver::run_job(&deps, &first_attempt(&endpoint), now).await.unwrap();
    assert_eq!(failing.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_and_bodies_come_only_when_opted_in() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .mount(&server)
        .await;
    let (store, queue, deps, endpoint, _) = delivery_setup(&server.uri(), true).await;
    let mut message = crm_shared::testing::fixtures::inbound_media_message(
        &crm_shared::testing::fixtures::contact("t1", "+447911123456", Utc::now()),
        "123",
        None,
    );
    message.message_id = "m1".into();
    store.add_message(message.clone());
    deliver::run_job(&deps, &first_attempt(&endpoint), Utc::now())
        .await
        .unwrap();
    let (_, delay) = queue.jobs_of::<DeliveryJob>()[0].clone();
    assert!(delay >= Duration::from_secs(120), "{delay:?}");
    let body: Value = serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        body["data"]["message"]["content"], message.content,
        "the opted-in body, fetched at delivery"
    );
    assert_eq!(body["data"]["message"]["type"], message.message_type);
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_and_refused_addresses_are_failures() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let (store, _, deps, endpoint, old) = delivery_setup(&server.uri(), false).await;
    let new = new_secret();
    store
        .rotate_secret("t1", &endpoint.endpoint_id, &new, Utc::now() + TimeDelta::hours(24))
        .await
        .unwrap();
    deliver::run_job(&deps, &first_attempt(&endpoint), Utc::now())
        .await
        .unwrap();
    let r = &server.received_requests().await.unwrap()[0];
    let h = |n: &str| r.headers.get(n).unwrap().to_str().unwrap().to_owned();
    assert_eq!(h("webhook-signature").split(' ').count(), 2);
    let ts: i64 = h("webhook-timestamp").parse().unwrap();
    for secret in [&old, &new] {
        verify(
            secret,
            &h("webhook-id"),
            &h("webhook-timestamp"),
            &h("webhook-signature"),
            &r.body,
            ts,
        )
        .unwrap();
    }
    // The same endpoint under the production policy: loopback is refused, not sent.
    let strict = deliver::Deps::new(store.clone(), MemQueue::new(), Pusher::new(UrlPolicy::default()));
    deliver::run_job(&strict, &first_attempt(&endpoint), Utc::now())
        .await
        .unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    let log = store
        .list_deliveries("t1", &endpoint.endpoint_id, 10, None)
        .await
        .unwrap()
        .items;
    assert!(
        log[0].error.as_deref().unwrap_or_default().starts_with("refused"),
        "{:?}",
        log[0]
    );
}

#[tokio::test]
async fn a_storage_failure_hands_the_job_back_to_sqs() {
    let (store, queue, deps, endpoint, _) = delivery_setup("https://a.example/", false).await;
    store.fail_next_backend(Op::EventAt);
    let err = deliver::run_job(&deps, &first_attempt(&endpoint), Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, deliver::DeliveryError::Store(StoreError::Backend(_))));
    assert!(queue.jobs().is_empty());
    assert_eq!(store.event_head("t1").await.unwrap(), 1);
}

#[tokio::test]
async fn events_keep_the_tenants_own_retention() {
    use crm_shared::privacy::RetentionSettings;
    use crm_shared::store::PrivacyStore;
    let (store, queue) = (MemStore::new(), MemQueue::new());
    let short = RetentionSettings {
        events_days: 2,
        ..RetentionSettings::default()
    };
    store
        .put_retention_settings("t1", &short, None, Utc::now())
        .await
        .unwrap();
    let deps = record::Deps::new(store.clone(), queue.clone());
    let batch = stream_event(vec![inbound("t1", "m1"), inbound("t2", "m2")]);
    assert!(
        record::handle(&deps, batch)
            .await
            .unwrap()
            .batch_item_failures
            .is_empty()
    );
    let listed = |tenant: &'static str, days: i64| {
        let store = store.clone();
        async move {
            let at = Utc::now() + TimeDelta::days(days);
            store.events_after(tenant, 0, 100, at).await.unwrap().len()
        }
    };
    assert_eq!((listed("t1", 1).await, listed("t1", 3).await), (1, 0), "two days");
    assert_eq!(
        (listed("t2", 6).await, listed("t2", 8).await),
        (1, 0),
        "the default week"
    );
}
