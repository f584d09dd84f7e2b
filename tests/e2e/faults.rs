//! Fault injection against the local endpoint (docs/faults.md lists the scenarios): the
//! functions reach AWS (and the fake Graph API) through a seeded fault-injecting proxy
//! ([`e2e_tests::faults`]) that throttles, answers 500s, resets connections, loses answers and
//! delays them; crashes drop a handler mid-invocation at a seeded request. On top: Graph answers
//! that never come back after Meta accepted a send, duplicated and reordered SQS deliveries and
//! webhooks, abandoned leases, lost jobs. Each scenario counts what matters (messages, statuses,
//! media objects, Graph sends), asserts nothing is lost and nothing duplicated, and prints one
//! line saying what it injected and what it checked.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crm_shared::config::GraphConfig;
use crm_shared::contact::{Contact, ValidContact};
use crm_shared::graph::GraphClient;
use crm_shared::jobs::{SendJob, SqsQueue};
use crm_shared::message::{Direction, MessageRecord, MessageStatus};
use crm_shared::sending::Category;
use crm_shared::store::{ContactStore, DynamoStore, MessageStore, OutboundStore};
use e2e_tests::faults::{CrashPoint, Fault, FaultProxy, Schedule};
use e2e_tests::{Stack, api, new_tenant, own_queue, post_webhook, stack, start_gateway};
use sender_fn::{Deps, SenderConfig};

/// The schedule's seed: change it to explore another interleaving; every assertion holds for
/// any seed.
const SEED: u64 = 0x5EED_0013;

/// The `n`-th draw of the seeded schedule (the proxy's splitmix64).
fn draw(n: u64) -> u64 {
    e2e_tests::faults::draw(SEED, n)
}

/// `items` in the seeded schedule's order (Fisher–Yates), draws starting at `salt`.
fn shuffled<T>(mut items: Vec<T>, salt: u64) -> Vec<T> {
    for i in (1..items.len()).rev() {
        let j = (draw(salt + i as u64) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
    items
}

/// How long the sender waits for Meta here, and how late the faulty answers come.
const SEND_TIMEOUT: Duration = Duration::from_millis(300);
const LATE_ANSWER: Duration = Duration::from_millis(900);

/// A fake Graph API that accepts every send (wamid `wamid.<our message id>`) and answers the
/// ones `late` names only after the sender gave up waiting: Meta has them, the sender cannot
/// know.
async fn graph_answering_late(late: Arc<dyn Fn(&str) -> bool + Send + Sync>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(move |req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let id = body["biz_opaque_callback_data"].as_str().unwrap_or_default().to_owned();
            let answer = ResponseTemplate::new(200)
                .set_body_json(json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.{id}")}]}));
            if late(&id) {
                answer.set_delay(LATE_ANSWER)
            } else {
                answer
            }
        })
        .mount(&server)
        .await;
    server
}

/// Graph sends per message id (from `biz_opaque_callback_data`), in arrival order.
async fn sends(graph: &MockServer) -> Vec<String> {
    graph
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter_map(|b| b["biz_opaque_callback_data"].as_str().map(str::to_owned))
        .collect()
}

/// A sender on the sender's role, its jobs handed back to a queue of this test's own.
async fn sender(graph_base: &str) -> Deps<DynamoStore, GraphClient, SqsQueue> {
    let requeue = own_queue("OutboundQueue").await;
    sender_on(stack(), graph_base, stack().sdk_for("SenderFunction").await, &requeue).await
}

/// A sender on stack `on` reaching AWS with `sdk` (its role's gate, or a fault proxy in front
/// of it), handing its jobs back to `requeue`.
async fn sender_on(
    on: &Stack,
    graph_base: &str,
    sdk: aws_config::SdkConfig,
    requeue: &str,
) -> Deps<DynamoStore, GraphClient, SqsQueue> {
    let graph = GraphClient::new(&GraphConfig {
        base_url: graph_base.to_owned(),
        version: "v25.0".into(),
    })
    .unwrap()
    .with_send_timeout(SEND_TIMEOUT);
    let requeue = SqsQueue::new(crm_shared::aws::sqs_client(&sdk), requeue);
    Deps::new(
        on.store_with_sdk(&sdk),
        graph,
        requeue,
        SenderConfig {
            rate_per_second: 1000,
            ..SenderConfig::default()
        },
    )
}

/// A contact whose 24 h window is open.
async fn contact(store: &DynamoStore, tenant_id: &str, n: usize) -> Contact {
    let valid = ValidContact {
        phone: Some(format!("+4477009{:05}", 10_000 + n)),
        user_id: None,
        name: None,
        email: None,
        tags: Vec::new(),
        attributes: BTreeMap::new(),
        language: None,
    };
    let mut c = Contact::new(tenant_id, valid, Utc::now());
    c.last_inbound_at = Some(Utc::now());
    store.create_contact(&c).await.expect("contact stored");
    c
}

/// A queued text to `contact`, stored as the API stores it (in its recipient's queue).
async fn queued(store: &DynamoStore, contact: &Contact, id: String) -> MessageRecord {
    let now = Utc::now();
    let m = MessageRecord {
        category: Some(Category::Service),
        ..MessageRecord::new(
            &contact.tenant_id,
            id,
            &contact.contact_id,
            Direction::Outbound,
            "text",
            json!({"body": "hello"}),
            MessageStatus::Queued,
            now,
            now,
        )
    };
    store.create_message_once(&m, None, None).await.expect("message stored");
    m
}

/// Moves a message's send lease two minutes into the past: the time its holder (killed) would
/// have held it, without waiting.
async fn expire_lease(tenant_id: &str, message_id: &str) {
    crm_shared::aws::dynamodb_client(&stack().sdk().await)
        .update_item()
        .table_name(stack().table())
        .key(
            "PK",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{tenant_id}#MSG#{message_id}")),
        )
        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S("MSG".into()))
        .update_expression("SET lease_until_ms = :l")
        .expression_attribute_values(
            ":l",
            aws_sdk_dynamodb::types::AttributeValue::N((Utc::now().timestamp_millis() - 120_000).to_string()),
        )
        .send()
        .await
        .unwrap();
}

fn record(job: &SendJob, n: usize) -> SqsMessage {
    serde_json::from_value(json!({
        "messageId": format!("sqs-{n}"),
        "receiptHandle": format!("rh-{n}"),
        "body": serde_json::to_string(job).unwrap(),
        "attributes": {"ApproximateReceiveCount": "1"},
        "eventSource": "aws:sqs",
    }))
    .unwrap()
}

/// Runs `records` as SQS and the sender's own requeues would: every job the sender hands back
/// (a transient failure, a wait) is delivered again at once, with its failure count, until
/// none is handed back (at most `rounds` times); a wait for a lease left behind lets the lease's
/// time pass first. Returns how many were handed back.
async fn drain(deps: &Deps<DynamoStore, GraphClient, SqsQueue>, records: &[SqsMessage], rounds: usize) -> usize {
    let mut pending: Vec<SqsMessage> = records.to_vec();
    let mut handed_back = 0;
    for round in 0..rounds {
        if pending.is_empty() {
            return handed_back;
        }
        let mut next = Vec::new();
        for batch in pending.chunks(10) {
            let outcomes = sender_fn::process_batch(deps, batch).await;
            for (record, outcome) in batch.iter().zip(outcomes) {
                if let sender_fn::Outcome::Requeue { failures, delay_secs } = outcome {
                    let job: SendJob = serde_json::from_str(record.body.as_deref().unwrap()).unwrap();
                    if delay_secs > 60 {
                        // Waiting for a lease left behind by a failed invocation (its give-back
                        // failed too): let its time pass.
                        expire_lease(&job.tenant_id, &job.message_id).await;
                    }
                    next.push(self::record(
                        &SendJob { failures, ..job },
                        100_000 * (round + 1) + next.len(),
                    ));
                }
            }
        }
        handed_back += next.len();
        pending = next;
    }
    assert!(pending.is_empty(), "jobs still handed back after {rounds} rounds");
    handed_back
}

/// One signed delivery of these statuses (Meta echoes `biz_opaque_callback_data`).
fn status_delivery(phone_number_id: &str, statuses: &[(String, &str)]) -> String {
    let statuses: Vec<Value> = statuses
        .iter()
        .map(|(id, status)| {
            json!({"id": format!("wamid.{id}"), "status": status, "timestamp": Utc::now().timestamp().to_string(),
                   "recipient_id": "447700900000", "biz_opaque_callback_data": id})
        })
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
        "statuses": statuses}}]}]})
    .to_string()
}

async fn statuses(store: &DynamoStore, tenant_id: &str, ids: &[String]) -> HashMap<MessageStatus, usize> {
    let mut counts = HashMap::new();
    for id in ids {
        let m = store.get_message(tenant_id, id).await.unwrap().expect("message kept");
        *counts.entry(m.status).or_insert(0) += 1;
    }
    counts
}

/// 100 sends, a seeded third of whose answers arrive after the sender stopped waiting, every SQS
/// record delivered twice in a shuffled order, while the sender's AWS requests meet the
/// proxy's faults; five more senders are killed right after Meta accepted their message (before
/// the write of `sent`) and their batch redelivered once their lease ran out; then Meta's status
/// webhooks, each twice and shuffled; then a late redelivery of every record. Nothing is sent
/// twice, nothing stays `queued`, and every send ends with its wamid.
#[tokio::test]
async fn sends_whose_answer_is_lost_are_never_resent_and_are_reconciled_by_their_statuses() {
    const MESSAGES: usize = 100;
    let store = stack().store().await;
    let tenant = new_tenant(&store, "Faults: lost answers").await.tenant;
    let mut ids = Vec::new();
    let contacts: Vec<Contact> = futures::stream::iter(0..MESSAGES)
        .map(|n| contact(&store, &tenant.tenant_id, n))
        .buffered(8)
        .collect()
        .await;
    for c in &contacts {
        ids.push(queued(&store, c, crm_shared::ids::new_id()).await.message_id);
    }
    let late: HashMap<String, bool> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (id.clone(), draw(n as u64).is_multiple_of(3)))
        .collect();
    let injected = late.values().filter(|l| **l).count();
    let late = Arc::new(late);
    let graph = graph_answering_late(Arc::new({
        let late = late.clone();
        move |id: &str| late.get(id).copied().unwrap_or(false)
    }))
    .await;
    // Meta through a proxy that only crashes; AWS through one that injects faults.
    let meta = FaultProxy::start(&graph.uri(), Schedule::none(SEED)).await;
    let aws = FaultProxy::start(&stack().gates["SenderFunction"], aws_faults(SEED ^ 0x2)).await;
    let requeue = own_queue("OutboundQueue").await;
    let deps = sender_on(stack(), &meta.endpoint, faulty_sdk(&aws).await, &requeue).await;

    // Kill -9 between Meta's answer and the write of `sent`: the Graph send is the crash point.
    const CRASHED: usize = 5;
    let mut crashed = Vec::new();
    for n in 0..CRASHED {
        let c = contact(&store, &tenant.tenant_id, MESSAGES + n).await;
        let id = queued(&store, &c, crm_shared::ids::new_id()).await.message_id;
        let job = record(&SendJob::new(&tenant.tenant_id, &id), 10_000 + n);
        let finished = meta
            .crash_at(
                CrashPoint::After(1),
                sender_fn::process_batch(&deps, std::slice::from_ref(&job)),
            )
            .await;
        assert!(finished.is_none(), "the sender was killed at its Graph send");
        crashed.push((id, job));
    }
    assert_eq!(sends(&graph).await.len(), CRASHED, "Meta accepted the crashed sends");
    // SQS redelivers the killed invocations' records once their lease (longer than the queue's
    // visibility timeout) has run out.
    for (id, job) in &crashed {
        expire_lease(&tenant.tenant_id, id).await;
        sender_fn::process_batch(&deps, std::slice::from_ref(job)).await;
    }
    assert_eq!(sends(&graph).await.len(), CRASHED, "a crashed send is never resent");
    let crashed_ids: Vec<String> = crashed.iter().map(|(id, _)| id.clone()).collect();
    let after_crash = statuses(&store, &tenant.tenant_id, &crashed_ids).await;
    assert_eq!(
        after_crash,
        HashMap::from([(MessageStatus::Unknown, CRASHED)]),
        "{after_crash:?}"
    );

    // Every record twice (SQS delivers at least once), in a seeded order, ten per batch.
    let jobs: Vec<SendJob> = ids.iter().map(|id| SendJob::new(&tenant.tenant_id, id)).collect();
    let deliveries = shuffled([jobs.clone(), jobs.clone()].concat(), 1_000);
    let records: Vec<SqsMessage> = deliveries.iter().enumerate().map(|(n, j)| record(j, n)).collect();
    let handed_back = drain(&deps, &records, 10).await;
    aws.set_enabled(false);
    ids.extend(crashed_ids);
    let sent = sends(&graph).await;
    let sent_once: std::collections::HashSet<String> = sent.iter().cloned().collect();
    assert_eq!(sent_once.len(), sent.len(), "no message was sent twice");
    // A message Meta never saw is one whose lease was left behind by an invocation that failed
    // before its Graph call and could not give the lease back (its give-back failed too): it
    // ends `unknown`, never silently `queued`, and is never sent blindly.
    let never_sent: Vec<&String> = ids.iter().filter(|id| !sent_once.contains(*id)).collect();
    for id in &never_sent {
        let m = store.get_message(&tenant.tenant_id, id).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Unknown, "{id}: not sent, says so");
    }
    let after_sending = statuses(&store, &tenant.tenant_id, &ids).await;
    let unknown = after_sending.get(&MessageStatus::Unknown).copied().unwrap_or(0);
    assert!(unknown >= injected + CRASHED, "{after_sending:?}");
    assert_eq!(
        unknown + after_sending.get(&MessageStatus::Sent).copied().unwrap_or(0),
        ids.len(),
        "nothing stays queued: {after_sending:?}"
    );

    // Meta's statuses for what it accepted: sent and delivered, each delivery twice, shuffled,
    // ten statuses per webhook delivery.
    let gw = start_gateway(store.clone()).await;
    let receipts: Vec<(String, &str)> = sent
        .iter()
        .flat_map(|id| [(id.clone(), "sent"), (id.clone(), "delivered")])
        .collect();
    let receipts = shuffled([receipts.clone(), receipts].concat(), 2_000);
    for chunk in receipts.chunks(10) {
        let (status, body) = post_webhook(&gw.base, &status_delivery(&tenant.phone_number_id, chunk), None).await;
        assert_eq!(status, 200, "{body}");
    }
    // A late redelivery of every record changes nothing.
    aws.set_enabled(true);
    drain(&deps, &records[..MESSAGES], 10).await;
    aws.set_enabled(false);
    assert_eq!(sends(&graph).await, sent, "nothing sent again");
    let settled = statuses(&store, &tenant.tenant_id, &ids).await;
    let mut expected = HashMap::from([(MessageStatus::Delivered, sent.len())]);
    if !never_sent.is_empty() {
        expected.insert(MessageStatus::Unknown, never_sent.len());
    }
    assert_eq!(settled, expected, "{settled:?}");
    for id in &sent {
        let m = store.get_message(&tenant.tenant_id, id).await.unwrap().unwrap();
        assert_eq!(m.wamid, Some(format!("wamid.{id}")), "{id}: reconciled with its wamid");
    }
    eprintln!(
        "faults[sends]: {MESSAGES} sends with {injected} Graph answers lost after acceptance, {CRASHED} senders killed after Meta accepted, {} SQS deliveries ({handed_back} handed back and redelivered), {} status deliveries, injected {} into the sender's AWS requests; checked {} Graph sends (none twice), {} delivered with their wamid, {} never sent and `unknown` (lease left behind)",
        records.len() + MESSAGES + 2 * CRASHED,
        receipts.len(),
        aws.report(),
        sent.len(),
        sent.len(),
        never_sent.len(),
    );
}

/// Three quick messages through the API to one customer leave in the order the API accepted
/// them, whatever order their jobs arrive in and though the first one is retried.
#[tokio::test]
async fn messages_to_one_recipient_leave_in_acceptance_order() {
    let store = stack().store().await;
    let tenant = new_tenant(&store, "Faults: order").await.tenant;
    let c = contact(&store, &tenant.tenant_id, 900).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(queued(&store, &c, crm_shared::ids::new_id()).await.message_id);
    }
    // The first send fails once with a Meta 500: it is retried, and keeps its place.
    let graph = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::body_partial_json(
            json!({"biz_opaque_callback_data": ids[0]}),
        ))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": {"code": 131000, "message": "x"}})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&graph)
        .await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(|req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let id = body["biz_opaque_callback_data"].as_str().unwrap_or_default();
            ResponseTemplate::new(200).set_body_json(json!({"messages": [{"id": format!("wamid.{id}")}]}))
        })
        .mount(&graph)
        .await;
    let deps = sender(&graph.uri()).await;
    let raw = crm_shared::aws::dynamodb_client(&stack().sdk().await);
    let forget_pair_rate = || async {
        // Meta's pair rate is 6 s; the test does not wait it out.
        raw.update_item()
            .table_name(stack().table())
            .key(
                "PK",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{}#C#{}", tenant.tenant_id, c.contact_id)),
            )
            .key("SK", aws_sdk_dynamodb::types::AttributeValue::S("PROFILE".into()))
            .update_expression("REMOVE last_outbound_ms")
            .send()
            .await
            .unwrap();
    };
    let newest_first: Vec<SqsMessage> = ids
        .iter()
        .rev()
        .enumerate()
        .map(|(n, id)| record(&SendJob::new(&tenant.tenant_id, id), n))
        .collect();
    for _ in 0..5 {
        forget_pair_rate().await;
        sender_fn::process_batch(&deps, &newest_first).await;
    }
    let sent = sends(&graph).await;
    assert_eq!(
        sent,
        [&ids[0], &ids[0], &ids[1], &ids[2]].map(String::clone),
        "retried first, then in order"
    );
    for id in &ids {
        let m = store.get_message(&tenant.tenant_id, id).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Sent, "{id}");
    }
}

/// A sender that died mid-send (its lease expired without being given back) is not resent:
/// the message is `unknown` until its status webhook names it. A message whose send job was
/// lost (the enqueue failed after the API stored it) is found by the send sweeper and sent.
#[tokio::test]
async fn abandoned_sends_become_unknown_and_lost_jobs_are_swept_up() {
    let store = stack().store().await;
    let tenant = new_tenant(&store, "Faults: abandoned").await.tenant;
    let graph = graph_answering_late(Arc::new(|_: &str| false)).await;
    let deps = sender(&graph.uri()).await;

    // Abandoned: a lease two minutes past its end (its holder was killed).
    let crashed = queued(
        &store,
        &contact(&store, &tenant.tenant_id, 910).await,
        crm_shared::ids::new_id(),
    )
    .await;
    expire_lease(&tenant.tenant_id, &crashed.message_id).await;
    let crashed_job = SendJob::new(&tenant.tenant_id, &crashed.message_id);
    sender_fn::process_batch(&deps, &[record(&crashed_job, 0)]).await;
    let m = store
        .get_message(&tenant.tenant_id, &crashed.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.status, MessageStatus::Unknown);
    assert!(sends(&graph).await.is_empty(), "not resent");
    let gw = start_gateway(store.clone()).await;
    let receipt = status_delivery(&tenant.phone_number_id, &[(crashed.message_id.clone(), "sent")]);
    assert_eq!(post_webhook(&gw.base, &receipt, None).await.0, 200);
    let m = store
        .get_message(&tenant.tenant_id, &crashed.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.status, m.wamid),
        (MessageStatus::Sent, Some(format!("wamid.{}", crashed.message_id)))
    );

    // Lost: accepted 15 minutes ago, never enqueued.
    let accepted = Utc::now() - chrono::Duration::minutes(15);
    let lost_id = crm_shared::privacy::id_floor(accepted);
    let lost = queued(&store, &contact(&store, &tenant.tenant_id, 911).await, lost_id).await;
    let sweeper_sdk = stack().sdk_for("SendSweepFunction").await;
    let swept_queue = own_queue("OutboundQueue").await;
    let sqs = crm_shared::aws::sqs_client(&sweeper_sdk);
    let report = sender_fn::sweep::sweep(
        &stack().store_for("SendSweepFunction").await,
        &SqsQueue::new(sqs.clone(), &swept_queue),
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(report.requeued >= 1, "{report:?}");
    let received = crm_shared::aws::sqs_client(&stack().sdk().await)
        .receive_message()
        .queue_url(&swept_queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let jobs: Vec<SendJob> = received
        .messages()
        .iter()
        .filter_map(|m| serde_json::from_str(m.body()?).ok())
        .collect();
    let job = jobs
        .iter()
        .find(|j| j.message_id == lost.message_id)
        .expect("the lost message is queued again");
    sender_fn::process_batch(&deps, &[record(job, 1)]).await;
    let m = store
        .get_message(&tenant.tenant_id, &lost.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.status, MessageStatus::Sent);
    assert_eq!(sends(&graph).await, vec![lost.message_id.clone()]);
    // Once sent it has left the outbox: the next sweep leaves it alone.
    let again = stack()
        .store_for("SendSweepFunction")
        .await
        .stale_queued(&tenant.tenant_id, Utc::now(), Utc::now())
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}

/// The AWS faults the scenarios inject into a function's requests: about one request in seven.
fn aws_faults(seed: u64) -> Schedule {
    Schedule {
        seed,
        throttle: 50,
        server_error: 30,
        reset: 25,
        lost_answer: 25,
        delay: 60,
        max_delay: Duration::from_millis(40),
    }
}

/// SDK configuration of a function reaching AWS through `proxy`. The SDK's standard retries
/// (3 attempts) as in production, with a shorter first backoff: the suite stays bounded in
/// time; what is retried, and how often, is the production strategy's.
async fn faulty_sdk(proxy: &FaultProxy) -> aws_config::SdkConfig {
    let base = e2e_tests::sdk_config(&proxy.endpoint).await;
    base.into_builder()
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(400)),
        )
        .build()
}

/// One signed delivery of inbound texts `(from, wamid, unix seconds)`.
fn texts_delivery(phone_number_id: &str, texts: &[(String, String, i64)]) -> String {
    let contacts: Vec<Value> = texts
        .iter()
        .map(|(from, _, _)| json!({"profile": {"name": "Fault Customer"}, "wa_id": from}))
        .collect();
    let messages: Vec<Value> = texts
        .iter()
        .map(|(from, wamid, ts)| {
            json!({"from": from, "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": format!("hello {wamid}")}})
        })
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
        "contacts": contacts, "messages": messages}}]}]})
    .to_string()
}

/// Delivers every body as Meta does: each one until it is answered 2xx (a non-2xx answer, or
/// none, makes Meta deliver it again), `parallel` at once. Returns how many answers were not 2xx.
async fn deliver_until_accepted(base: &str, bodies: Vec<String>, parallel: usize) -> usize {
    let rejected = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(bodies)
        .for_each_concurrent(parallel, |body| {
            let rejected = &rejected;
            async move {
                for _attempt in 0..20 {
                    let (status, _) = post_webhook(base, &body, None).await;
                    if (200..300).contains(&status) {
                        return;
                    }
                    rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                panic!("a delivery was refused 20 times");
            }
        })
        .await;
    rejected.into_inner()
}

/// Every message of a contact's history.
async fn history(store: &DynamoStore, tenant_id: &str, contact_id: &str) -> Vec<MessageRecord> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = store.contact_messages(tenant_id, contact_id, 100, start).await.unwrap();
        out.extend(page.items);
        match page.next {
            Some(next) => start = Some(next),
            None => return out,
        }
    }
}

/// 300 inbound texts from 12 customers (several per delivery, most customers writing many),
/// every delivery sent 3× in a seeded order, 12 at once, while the webhook function's DynamoDB
/// and SQS requests are throttled, answered 500, reset, answered-then-lost and delayed. Every
/// refused delivery is delivered again until accepted (as Meta does). Every message is stored
/// exactly once, in its customer's one contact and conversation, and each contact's
/// `last_inbound_at` and conversation counters match what was sent.
#[tokio::test]
async fn inbound_redeliveries_under_aws_faults_store_every_message_exactly_once() {
    const MESSAGES: usize = 300;
    const CUSTOMERS: u64 = 12;
    // Its own endpoint: its 1,500-odd requests do not queue behind the other scenarios'.
    let on = e2e_tests::faults_stack();
    let store = on.store().await;
    let created = new_tenant(&store, "Faults: inbound").await;
    let tenant = created.tenant;
    let proxy = FaultProxy::start(&on.gates["WebhookFunction"], aws_faults(SEED ^ 0x1)).await;
    proxy.set_enabled(false);
    // Texts only: nothing is enqueued on the media queue.
    let gw = on
        .start_gateway_with_webhook_sdk(store.clone(), faulty_sdk(&proxy).await, on.media_queue_url())
        .await;
    proxy.set_enabled(true);

    // Customer of each message (seeded), times one second apart within the last hour.
    let phone = |c: u64| format!("4477013{:05}", 20_000 + c);
    let start = Utc::now().timestamp() - 3_600;
    let texts: Vec<(String, String, i64)> = (0..MESSAGES)
        .map(|n| {
            let customer = draw(10_000 + n as u64) % CUSTOMERS;
            (
                phone(customer),
                format!("wamid.fault.in.{}.{n}", tenant.tenant_id),
                start + n as i64,
            )
        })
        .collect();
    // Deliveries of 1–4 consecutive messages, each delivered three times, shuffled.
    let mut deliveries = Vec::new();
    let mut at = 0;
    while at < MESSAGES {
        let len = (1 + draw(20_000 + at as u64) % 4) as usize;
        let end = (at + len).min(MESSAGES);
        deliveries.push(texts_delivery(&tenant.phone_number_id, &texts[at..end]));
        at = end;
    }
    let bodies = shuffled(
        [deliveries.clone(), deliveries.clone(), deliveries.clone()].concat(),
        30_000,
    );
    let sent = bodies.len();
    let began = std::time::Instant::now();
    let refused = deliver_until_accepted(&gw.base, bodies, 12).await;
    let took = began.elapsed();
    proxy.set_enabled(false);

    let mut stored = 0;
    let mut customers = 0;
    for c in 0..CUSTOMERS {
        let mine: Vec<&(String, String, i64)> = texts.iter().filter(|(from, _, _)| *from == phone(c)).collect();
        let Some(last) = mine.last() else { continue };
        customers += 1;
        let identity = crm_shared::store::CustomerIdentity {
            phone: Some(format!("+{}", phone(c))),
            user_id: None,
        };
        let (contact_id, _) = store
            .match_contact(&tenant.tenant_id, &identity)
            .await
            .unwrap()
            .expect("the customer's contact");
        let contact = store
            .get_contact(&tenant.tenant_id, &contact_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            contact.last_inbound_at.map(|t| t.timestamp()),
            Some(last.2),
            "customer {c}: last inbound is the newest message"
        );
        let kept = history(&store, &tenant.tenant_id, &contact_id).await;
        let mut wamids: Vec<String> = kept.iter().filter_map(|m| m.wamid.clone()).collect();
        wamids.sort();
        let mut expected: Vec<String> = mine.iter().map(|(_, w, _)| w.clone()).collect();
        expected.sort();
        assert_eq!(wamids, expected, "customer {c}: every message once");
        stored += kept.len();
    }
    assert_eq!(stored, MESSAGES);
    // One contact and one conversation per customer, counting each message once.
    let key = created.api_key.expose();
    let (status, contacts) = api("GET", &format!("{}/v1/contacts?limit=100", gw.base), Some(key), None).await;
    assert_eq!(status, 200, "{contacts}");
    assert_eq!(contacts["items"].as_array().unwrap().len(), customers);
    let (status, conversations) = api(
        "GET",
        &format!("{}/v1/conversations?limit=100", gw.base),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{conversations}");
    let conversations = conversations["items"].as_array().unwrap().clone();
    assert_eq!(conversations.len(), customers, "{conversations:?}");
    let counted: u64 = conversations.iter().map(|c| c["last_seq"].as_u64().unwrap_or(0)).sum();
    assert_eq!(
        counted, MESSAGES as u64,
        "conversation sequence numbers count each message once"
    );
    eprintln!(
        "faults[inbound]: injected {} into the webhook's AWS requests; {sent} deliveries of {} distinct in {took:.1?} ({refused} refused and redelivered); checked {MESSAGES} messages stored once across {customers} contacts/conversations, last_inbound_at and counters",
        proxy.report(),
        deliveries.len(),
    );
}

/// `len` seeded bytes (xorshift).
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Meta serving `data` as media `media_id`, its download URL through `via` (the fault proxy).
async fn serve_media(graph: &MockServer, via: &FaultProxy, media_id: &str, data: &[u8]) {
    use sha2::Digest;
    use wiremock::matchers::{method, path};
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{media_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp",
            "url": format!("{}/lookaside/{media_id}", via.endpoint),
            "mime_type": "application/pdf",
            "sha256": hex::encode(sha2::Sha256::digest(data)),
            "file_size": data.len(),
            "id": media_id,
        })))
        .mount(graph)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/lookaside/{media_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(data.to_vec()))
        .mount(graph)
        .await;
}

/// Objects stored under a contact's media prefix.
async fn media_objects(tenant_id: &str, contact_id: &str) -> Vec<(String, i64)> {
    let s3 = crm_shared::aws::s3_client(&stack().sdk().await);
    let out = s3
        .list_objects_v2()
        .bucket(stack().media_bucket())
        .prefix(crm_shared::blob::contact_media_prefix(tenant_id, contact_id))
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .map(|o| (o.key().unwrap_or_default().to_owned(), o.size().unwrap_or_default()))
        .collect()
}

/// One media batch: a 33 MiB document (streamed in parts), two small ones whose downloads fail
/// once (a reset, a 500) and one whose download always fails, through a proxy in front of the
/// fake Graph API; the batch is redelivered (the failed records only) until the queue's last
/// receive. Every document arrives once, with Meta's hash and size; nothing stays `pending`;
/// the always-failing one is `failed` only on its last attempt.
#[tokio::test]
async fn a_media_batch_with_a_large_file_and_flaky_downloads_stores_each_object_once() {
    use crate::media::{
        RecordedRetries, document_job, event, media_worker, object_bytes, open_uploads, record, stored_message,
    };
    use crm_shared::message::MediaStatus;
    use sha2::Digest;

    let large = noise(33 * 1024 * 1024 + 777, SEED | 1);
    let small = [noise(70_000, SEED | 3), noise(50_000, SEED | 5), noise(9_000, SEED | 7)];
    let graph = MockServer::start().await;
    let meta = FaultProxy::start(&graph.uri(), Schedule::none(SEED)).await;
    let docs: [(&str, &str, &[u8]); 4] = [
        ("wamid.fault.large", "66701", &large),
        ("wamid.fault.reset", "66702", &small[0]),
        ("wamid.fault.500", "66703", &small[1]),
        ("wamid.fault.gone", "66704", &small[2]),
    ];
    let mut jobs = Vec::new();
    for (wamid, media_id, data) in docs {
        let sha = hex::encode(sha2::Sha256::digest(data));
        jobs.push(document_job("Faults: media", wamid, media_id, &sha).await);
        serve_media(&graph, &meta, media_id, data).await;
    }
    meta.script("/lookaside/66702", &[Fault::Reset]);
    meta.script("/lookaside/66703", &[Fault::ServerError]);
    meta.script("/lookaside/66704", &[Fault::ServerError; 16]);
    let deps = media_worker(
        GraphClient::new(&GraphConfig {
            base_url: graph.uri(),
            version: "v25.0".into(),
        })
        .unwrap(),
        RecordedRetries::default(),
    )
    .await;
    let store = stack().store().await;
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    let mut attempts = 0;
    for attempt in 1..=deps.max_receives {
        attempts = attempt;
        let records = pending.iter().map(|i| record(&jobs[*i].2, attempt)).collect();
        let resp = media_fn::handle(&deps, event(records)).await.unwrap();
        let failed: Vec<String> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        // The flaky downloads fail once, the gone one every time.
        assert_eq!(
            failed.len(),
            if attempt == 1 { 3 } else { 1 },
            "attempt {attempt}: {failed:?}"
        );
        let gone = stored_message(&store, &jobs[3].0, docs[3].0).await.media.unwrap();
        if attempt < deps.max_receives {
            assert_eq!(
                gone.status,
                MediaStatus::Pending,
                "attempt {attempt}: still to be retried"
            );
        } else {
            assert_eq!(gone.status, MediaStatus::Failed, "the last attempt marks it failed");
        }
        // Only the failed records come back (the batch's positions 1–3, then the gone one).
        pending = if attempt == 1 { vec![1, 2, 3] } else { vec![3] };
    }
    for (n, (wamid, _, data)) in docs.iter().enumerate().take(3) {
        let (tenant_id, message, _) = &jobs[n];
        let media = stored_message(&store, tenant_id, wamid).await.media.unwrap();
        assert_eq!(media.status, MediaStatus::Available, "{wamid}");
        assert_eq!(media.size, Some(data.len() as u64), "{wamid}");
        let objects = media_objects(tenant_id, &message.contact_id).await;
        assert_eq!(objects.len(), 1, "{wamid}: one object: {objects:?}");
        assert_eq!(objects[0].1, data.len() as i64);
        let stored = object_bytes(&objects[0].0).await;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&stored)),
            hex::encode(sha2::Sha256::digest(data)),
            "{wamid}: the stored bytes hash as Meta announced"
        );
        assert!(
            open_uploads(&crm_shared::blob::contact_media_prefix(tenant_id, &message.contact_id))
                .await
                .is_empty()
        );
    }
    let (tenant_id, message, _) = &jobs[3];
    assert!(
        media_objects(tenant_id, &message.contact_id).await.is_empty(),
        "nothing stored for the failed one"
    );
    assert_eq!(
        deps.buffers.available(),
        deps.buffers.total_bytes(),
        "every buffer given back"
    );
    eprintln!(
        "faults[media]: injected {} into the Graph downloads over {attempts} receives of a batch of 4 (one {} MiB); checked 3 objects stored once with Meta's hash and size, none pending, the always-failing one `failed` only on receive {}",
        meta.report(),
        large.len() / (1024 * 1024),
        deps.max_receives
    );
}

/// What a tenant holds after a sweep: its messages (ids), and its media objects (keys).
async fn remaining(store: &DynamoStore, tenant_id: &str, contacts: &[Contact]) -> (Vec<String>, Vec<String>) {
    let (mut messages, mut objects) = (Vec::new(), Vec::new());
    for c in contacts {
        messages.extend(
            history(store, tenant_id, &c.contact_id)
                .await
                .into_iter()
                .map(|m| m.message_id),
        );
        objects.extend(
            media_objects(tenant_id, &c.contact_id)
                .await
                .into_iter()
                .map(|(k, _)| k),
        );
    }
    messages.sort();
    objects.sort();
    (messages, objects)
}

/// A tenant for the retention scenario: 3 contacts, each with messages past the default
/// retention (400 days, with media), media past its retention on kept messages (120 days) and
/// recent messages with media (10 days). Returns its contacts.
async fn seed_for_retention(store: &DynamoStore, tenant_id: &str, salt: usize) -> Vec<Contact> {
    let now = Utc::now();
    let mut contacts = Vec::new();
    let s3 = crm_shared::aws::s3_client(&stack().sdk().await);
    for n in 0..3 {
        let c = contact(store, tenant_id, 2_000 + salt * 10 + n).await;
        let mut records = Vec::new();
        for (k, days) in [400, 400, 400, 400, 380, 120, 120, 120, 10, 10, 10, 2]
            .into_iter()
            .enumerate()
        {
            let at = now - chrono::Duration::days(days) - chrono::Duration::minutes(k as i64);
            let id = crm_shared::message::inbound_message_id("seed", &crm_shared::ids::new_id(), at);
            let key = crm_shared::blob::media_key(tenant_id, &c.contact_id, &id);
            let with_media = days != 380 && days != 2;
            let mut m = json!({
                "tenant_id": tenant_id, "message_id": id, "contact_id": c.contact_id, "direction": "inbound",
                "type": if with_media { "image" } else { "text" }, "content": {"body": "seeded"},
                "status": "received", "timestamp": at, "created_at": at,
            });
            if with_media {
                m["media"] = json!({"media_id": "m1", "mime_type": "image/png", "sha256": "abc",
                                    "status": "available", "s3_key": key, "size": 4});
                s3.put_object()
                    .bucket(stack().media_bucket())
                    .key(&key)
                    .body(b"data".to_vec().into())
                    .send()
                    .await
                    .unwrap();
            }
            records.push(serde_json::from_value::<MessageRecord>(m).unwrap());
        }
        store.import_messages(&records).await.unwrap();
        contacts.push(c);
    }
    contacts
}

/// Two tenants with the same data. One is swept once, uninterrupted. The other's sweep is killed
/// twice at seeded requests (once before a request reached the endpoint, once after it was
/// applied), then run under AWS faults until it completes. Both hold the same afterwards:
/// counts of messages and media objects, and what a repeat sweep deletes (nothing).
#[tokio::test]
async fn a_retention_sweep_killed_twice_ends_like_an_uninterrupted_one() {
    let store = stack().store().await;
    let calm = new_tenant(&store, "Faults: retention calm").await.tenant;
    let killed = new_tenant(&store, "Faults: retention killed").await.tenant;
    let calm_contacts = seed_for_retention(&store, &calm.tenant_id, 0).await;
    let killed_contacts = seed_for_retention(&store, &killed.tenant_id, 1).await;
    let as_of = Utc::now();

    let calm_proxy = FaultProxy::start(&stack().gates["RetentionFunction"], Schedule::none(SEED)).await;
    let calm_sweep = stack().privacy_with_sdk(&faulty_sdk(&calm_proxy).await);
    let report = calm_sweep
        .run_retention(as_of, None, std::slice::from_ref(&calm.tenant_id))
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    let uninterrupted = calm_proxy.requests();
    let expected = remaining(&store, &calm.tenant_id, &calm_contacts).await;
    // 3 contacts × 12 messages: the 5 past 365 days go (4 with media), the media of the 3 of
    // 120 days goes too.
    assert_eq!(expected.0.len(), 3 * 7, "{expected:?}");
    assert_eq!(expected.1.len(), 3 * 3, "{expected:?}");

    // Twice the usual rates: the finishing runs make few requests.
    let heavy = Schedule {
        throttle: 100,
        server_error: 60,
        reset: 50,
        lost_answer: 50,
        ..aws_faults(SEED ^ 0x5)
    };
    let proxy = FaultProxy::start(&stack().gates["RetentionFunction"], heavy).await;
    let sweep = stack().privacy_with_sdk(&faulty_sdk(&proxy).await);
    let only = std::slice::from_ref(&killed.tenant_id);
    // The crashes on an otherwise calm endpoint, so the seeded points fall where they were
    // drawn; the faults then meet the runs that finish the work.
    proxy.set_enabled(false);
    let mut crashes = Vec::new();
    // The first in the first half of an uninterrupted sweep's requests, the second in the first
    // half of what the first crash left (the work done before it is not done again).
    let first = 1 + draw(50_000) % (uninterrupted / 2).max(1);
    let second = 2 + draw(50_001) % ((uninterrupted - first) / 2).max(1);
    for (n, point) in [CrashPoint::Before(first), CrashPoint::After(second)]
        .into_iter()
        .enumerate()
    {
        let finished = proxy.crash_at(point, sweep.run_retention(as_of, None, only)).await;
        assert!(finished.is_none(), "crash {n} at {point:?} of {uninterrupted} requests");
        crashes.push(format!("{point:?}"));
    }
    proxy.set_enabled(true);
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 10, "the sweep completes");
        let report = sweep.run_retention(as_of, None, only).await.unwrap();
        if report.complete {
            break;
        }
    }
    proxy.set_enabled(false);
    let after = remaining(&store, &killed.tenant_id, &killed_contacts).await;
    assert_eq!(
        (after.0.len(), after.1.len()),
        (expected.0.len(), expected.1.len()),
        "same counts as the uninterrupted sweep"
    );
    // The same messages, by age: each kept message's timestamp matches one kept on the other side.
    let ages = |tenant_id: String, ids: Vec<String>| {
        let store = store.clone();
        async move {
            let mut days = Vec::new();
            for id in ids {
                let m = store.get_message(&tenant_id, &id).await.unwrap().unwrap();
                days.push(((as_of - m.timestamp).num_days(), m.media.map(|x| x.status)));
            }
            days.sort_by_key(|d| d.0);
            days
        }
    };
    assert_eq!(
        ages(killed.tenant_id.clone(), after.0.clone()).await,
        ages(calm.tenant_id.clone(), expected.0.clone()).await
    );
    let repeat = sweep.run_retention(as_of, None, only).await.unwrap();
    assert_eq!(repeat.tenants[0].deleted, Default::default(), "{repeat:?}");
    eprintln!(
        "faults[retention]: killed the sweep at {} of an uninterrupted sweep's {uninterrupted} requests, injected {}, completed in {runs} more run(s); checked {} messages and {} media objects left, as after the uninterrupted sweep, and a repeat deleting nothing",
        crashes.join(" and "),
        proxy.report(),
        after.0.len(),
        after.1.len()
    );
}

/// A customer wrote (hello, a STOP, another text) and an agent queued a reply. The contact's
/// erasure then runs while Meta redelivers the old webhooks (each twice, shuffled, through a
/// webhook whose AWS requests meet the proxy's faults) and while the sender works on the reply
/// (its AWS requests faulty too); afterwards Meta redelivers everything once more. Nothing of the
/// contact comes back (no contact, message, media object or body, in any item or object), the
/// reply left Meta at most once and its body is gone, and a genuinely new message from the same
/// customer starts a fresh contact whose consent the old STOP does not touch.
///
/// Two customers: the first one's erasure starts at once (it wins the race), the second's a
/// seeded 1.5–2 s after the send and the redeliveries (the send goes out first).
#[tokio::test]
async fn an_erasure_racing_redeliveries_and_a_send_leaves_nothing_behind() {
    // The privacy tests' stack: they drive its erasure queue, one test at a time.
    let _serial = e2e_tests::bulk_lock().await;
    let c = crate::privacy::ctx("Faults: erasure race").await;
    let early = Duration::from_millis(draw(60_001) % 20);
    let late = Duration::from_millis(1_500 + draw(60_002) % 500);
    let first = erasure_race(&c, "447700913377", 1, early).await;
    let second = erasure_race(&c, "447700913378", 2, late).await;
    eprintln!("faults[erasure]: {first}; {second}");
}

/// One customer's erasure race (see above), the erasure `head_start` behind; returns its report.
async fn erasure_race(c: &crate::privacy::Ctx, from: &str, n: u64, head_start: Duration) -> String {
    use crate::privacy::{conversation, erase_until_done, leftovers, text_delivery};

    let t = c.tenant_id.clone();
    let ts = Utc::now().timestamp();
    let tag = format!("race{n}{}", &t[t.len() - 6..]);
    let old: Vec<String> = [("hello, remember me?", 0), ("STOP", 1), ("one more thing", 2)]
        .iter()
        .map(|(text, n)| text_delivery(&c.phone_number_id, from, &format!("wamid.{tag}.{n}"), ts + n, text))
        .collect();
    for body in &old {
        assert_eq!(post_webhook(&c.base, body, None).await.0, 200);
    }
    let identity = crm_shared::store::CustomerIdentity {
        phone: Some(format!("+{from}")),
        user_id: None,
    };
    let (x, _) = c.store.match_contact(&t, &identity).await.unwrap().expect("contact");
    let (status, queued) = c
        .call(
            "POST",
            "/v1/messages",
            &c.agent,
            Some(json!({"contact_id": x, "type": "text", "text": {"body": "about your order, dear customer"}})),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let reply = queued["id"].as_str().unwrap().to_owned();

    let graph = graph_answering_late(Arc::new(|_: &str| false)).await;
    let on = e2e_tests::bulk_stack();
    let sender_aws = FaultProxy::start(&on.gates["SenderFunction"], aws_faults(SEED ^ 0x6 ^ n)).await;
    let deps = sender_on(on, &graph.uri(), faulty_sdk(&sender_aws).await, on.outbound_queue_url()).await;
    let webhook_aws = FaultProxy::start(&on.gates["WebhookFunction"], aws_faults(SEED ^ 0x7 ^ n)).await;
    let faulty_gw = on
        .start_gateway_with_webhook_sdk(c.store.clone(), faulty_sdk(&webhook_aws).await, on.media_queue_url())
        .await;
    let racing = shuffled([old.clone(), old.clone()].concat(), 60_000 + 100 * n);

    let erase = async {
        tokio::time::sleep(head_start).await;
        let (status, receipt) = c.call("DELETE", &format!("/v1/contacts/{x}"), &c.admin, None).await;
        assert!(status == 200 || status == 202, "{status} {receipt}");
        let erasure_id = receipt["erasure_id"].as_str().unwrap().to_owned();
        let done = erase_until_done(c, &erasure_id).await;
        assert_eq!(done["status"], "completed", "{done}");
        erasure_id
    };
    let reply_job = [record(&SendJob::new(&t, &reply), 0)];

    let send = drain(&deps, &reply_job, 10);
    let redeliver = deliver_until_accepted(&faulty_gw.base, racing.clone(), 3);
    let (erasure_id, _, refused) = tokio::join!(erase, send, redeliver);
    // Meta keeps redelivering for days, and reports on the reply it got. When the erasure lands
    // between Meta's answer and the write of `sent`, the wamid is never recorded: the sender
    // tombstones it when it finds the message gone, and a status that arrives first (or names
    // our erased message id) is dropped, its parked copy deleted.
    let graph_sends = sends(&graph).await;
    let mut redeliveries = old.clone();
    if !graph_sends.is_empty() {
        redeliveries.push(status_delivery(&c.phone_number_id, &[(reply.clone(), "delivered")]));
    }
    let late_refused = deliver_until_accepted(&faulty_gw.base, redeliveries.clone(), 3).await;
    sender_aws.set_enabled(false);
    webhook_aws.set_enabled(false);

    assert!(graph_sends.len() <= 1, "the reply left at most once: {graph_sends:?}");
    assert_eq!(
        c.store.match_contact(&t, &identity).await.unwrap(),
        None,
        "no contact came back"
    );
    assert!(
        c.store.get_message(&t, &reply).await.unwrap().is_none(),
        "the reply is gone"
    );
    let mut needles: Vec<String> = vec![
        x.clone(),
        from.to_owned(),
        reply.clone(),
        format!("wamid.{reply}"),
        "remember me".into(),
        "about your order".into(),
    ];
    needles.extend((0..3).map(|n| format!("wamid.{tag}.{n}")));
    // The audit log names the contact and the reply by id (never by anything else).
    let found = leftovers(c, &erasure_id, &needles, &[x.clone(), reply.clone()]).await;
    assert!(found.is_empty(), "{}", found.join("\n"));

    // A genuinely new message from the same customer starts a fresh contact.
    let fresh_body = text_delivery(
        &c.phone_number_id,
        from,
        &format!("wamid.{tag}.new"),
        ts + 10,
        "hi again",
    );
    assert_eq!(post_webhook(&c.base, &fresh_body, None).await.0, 200);
    let (fresh, _) = c
        .store
        .match_contact(&t, &identity)
        .await
        .unwrap()
        .expect("a fresh contact");
    assert_ne!(fresh, x);
    assert_eq!(conversation(&c.store, &t, &fresh).await.len(), 1);
    let fresh = c.store.get_contact(&t, &fresh).await.unwrap().unwrap();
    assert_ne!(
        fresh.consent.marketing.as_str(),
        "opted_out",
        "the old STOP was not replayed"
    );
    format!(
        "an erasure {head_start:?} behind raced {} redeliveries ({refused} refused, then {} late, {late_refused} refused) and a send ({} Graph send); injected {} (webhook) and {} (sender); checked no contact, message, body or object of the contact left, the reply sent at most once and gone, and a fresh contact for a new message without the old STOP",
        racing.len(),
        redeliveries.len(),
        graph_sends.len(),
        webhook_aws.report(),
        sender_aws.report(),
    )
}
