//! Unit tests of the sender over the in-memory ports (`crm_shared::testing`): what a failed
//! Graph send becomes for each of Meta's error classes on the first, a middle and the last
//! receive, and what preparation refuses or hands back before any send. DynamoDB's own
//! conditions are the e2e tests' business (moto).

use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;

use crm_shared::contact::{Contact, MarketingConsent};
use crm_shared::graph::GraphCallError;
use crm_shared::message::{MessageRecord, MessageStatus};
use crm_shared::secret::Secret;
use crm_shared::sending::Category;
use crm_shared::store::TemplateStore;
use crm_shared::template::{TemplateCategory, TemplateRecord};
use crm_shared::tenant::{Tenant, TenantStatus};
use crm_shared::testing::fixtures;
use crm_shared::testing::graph::meta_error;
use crm_shared::testing::{FakeGraph, MemQueue, MemStore, Op};

use crate::{Deps, SenderConfig, handle};

const MAX_RECEIVES: u32 = 8;

struct Sender {
    store: MemStore,
    graph: FakeGraph,
    queue: MemQueue,
    deps: Deps<MemStore, FakeGraph, MemQueue>,
    tenant: Tenant,
    contact: Contact,
}

/// An approved template `offer` (en) of `category` in the sender's registry.
async fn seed_offer(s: &Sender, category: TemplateCategory) {
    let meta = json!({"id": "77", "name": "offer", "language": "en", "status": "APPROVED",
                      "category": category.as_str(), "components": [{"type": "BODY", "text": "Hello"}]});
    let record = TemplateRecord::from_meta(&s.tenant.tenant_id, &meta, Utc::now()).unwrap();
    s.store.put_template(&record).await.unwrap();
}

fn sender_with(tenant: Tenant, contact: Contact) -> Sender {
    let store = MemStore::new();
    let graph = FakeGraph::new();
    let queue = MemQueue::new();
    store.add_tenant(tenant.clone(), Secret::new("graph-token"));
    store.add_contact(contact.clone());
    let config = SenderConfig {
        max_receives: MAX_RECEIVES,
        rate_per_second: 1000,
        max_slot_wait: Duration::from_secs(1),
        ..SenderConfig::default()
    };
    let deps = Deps::new(store.clone(), graph.clone(), queue.clone(), config);
    Sender {
        store,
        graph,
        queue,
        deps,
        tenant,
        contact,
    }
}

fn sender() -> Sender {
    let tenant = fixtures::tenant("106540352242922");
    let contact = fixtures::contact(&tenant.tenant_id, "+447700900123", Utc::now());
    sender_with(tenant, contact)
}

/// An SQS record of a send job that failed `failures` times before.
fn record(message: &MessageRecord, failures: u32) -> SqsMessage {
    let mut r = SqsMessage::default();
    r.message_id = Some(format!("sqs-{}", message.message_id));
    r.receipt_handle = Some(format!("receipt-{}", message.message_id));
    r.body = Some(
        json!({"tenant_id": message.tenant_id, "message_id": message.message_id, "failures": failures}).to_string(),
    );
    r.attributes.insert("ApproximateReceiveCount".into(), "1".into());
    r
}

impl Sender {
    fn queue_text(&self) -> MessageRecord {
        let m = fixtures::queued_text(&self.contact);
        self.store.add_message(m.clone());
        m
    }

    async fn run(&self, records: Vec<SqsMessage>) -> SqsBatchResponse {
        let mut event = SqsEvent::default();
        event.records = records;
        handle(&self.deps, LambdaEvent::new(event, Context::default()))
            .await
            .expect("the handler never fails the invocation")
    }

    /// Sends `message` after `failures` failed attempts; returns the SQS ids reported as failed.
    async fn send(&self, message: &MessageRecord, failures: u32) -> Vec<String> {
        let response = self.run(vec![record(message, failures)]).await;
        response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect()
    }

    /// The jobs handed back to the queue: (message id, failures, delay in seconds).
    fn requeued(&self) -> Vec<(String, u32, u64)> {
        self.queue
            .delayed_send_jobs()
            .into_iter()
            .map(|(job, delay)| (job.message_id, job.failures, delay.as_secs()))
            .collect()
    }

    fn stored(&self, message: &MessageRecord) -> MessageRecord {
        self.store
            .message(&message.tenant_id, &message.message_id)
            .expect("message is stored")
    }
}

/// What a failed send should leave behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    status: MessageStatus,
    /// Handed back to the queue as a new job: (its failure count, delay in seconds).
    requeued: Option<(u32, u64)>,
    token_flagged: bool,
}

const RETRY_LATER: fn(u32, u64) -> Expected = |failures, secs| Expected {
    status: MessageStatus::Queued,
    requeued: Some((failures, secs)),
    token_flagged: false,
};
const FAILED: Expected = Expected {
    status: MessageStatus::Failed,
    requeued: None,
    token_flagged: false,
};
const UNKNOWN: Expected = Expected {
    status: MessageStatus::Unknown,
    requeued: None,
    token_flagged: false,
};
const TOKEN_INVALID: Expected = Expected {
    status: MessageStatus::Failed,
    requeued: None,
    token_flagged: true,
};

#[tokio::test]
async fn a_failed_send_by_meta_error_class_and_attempt() {
    let transient = [RETRY_LATER(1, 5), RETRY_LATER(4, 135), FAILED];
    // (what Meta answered, the error code recorded on a failed message, after [0, 3, the last
    // allowed number of] earlier failures).
    let cases: Vec<(&str, GraphCallError, i64, [Expected; 3])> = vec![
        ("throughput limit", meta_error(400, Some(130429)), 130429, transient),
        ("spam rate limit", meta_error(400, Some(131048)), 131048, transient),
        ("temporary Meta error", meta_error(500, Some(131000)), 131000, transient),
        ("app rate limit", meta_error(400, Some(4)), 4, transient),
        ("account rate limit", meta_error(400, Some(80007)), 80007, transient),
        ("5xx without a code", meta_error(503, None), 503, transient),
        ("429 without a code", meta_error(429, None), 429, transient),
        (
            "never connected",
            GraphCallError::Transport("connection refused".into()),
            0,
            transient,
        ),
        (
            "no answer after the request left",
            GraphCallError::OutcomeUnknown("operation timed out".into()),
            0,
            [UNKNOWN, UNKNOWN, UNKNOWN],
        ),
        (
            "pair rate (a wait, not a failure)",
            meta_error(400, Some(131056)),
            131056,
            [RETRY_LATER(0, 7), RETRY_LATER(3, 7), RETRY_LATER(MAX_RECEIVES - 1, 7)],
        ),
        (
            "re-engagement required",
            meta_error(400, Some(131047)),
            131047,
            [FAILED, FAILED, FAILED],
        ),
        (
            "invalid parameter",
            meta_error(400, Some(100)),
            100,
            [FAILED, FAILED, FAILED],
        ),
        (
            "4xx without a code",
            meta_error(404, None),
            404,
            [FAILED, FAILED, FAILED],
        ),
        ("too large", GraphCallError::TooLarge, 413, [FAILED, FAILED, FAILED]),
        (
            "token invalid",
            meta_error(401, Some(190)),
            190,
            [TOKEN_INVALID, TOKEN_INVALID, TOKEN_INVALID],
        ),
    ];
    for (name, error, recorded_code, expected) in cases {
        for (failures, want) in [0, 3, MAX_RECEIVES - 1].into_iter().zip(expected) {
            let s = sender();
            let m = s.queue_text();
            s.graph.answer_next_send(Err(error.clone()));
            let reported = s.send(&m, failures).await;
            let case = format!("{name}, after {failures} failures");
            let stored = s.stored(&m);
            assert_eq!(s.graph.sent().len(), 1, "{case}: one Graph call");
            assert_eq!(stored.status, want.status, "{case}: status");
            assert_eq!(
                s.requeued(),
                want.requeued
                    .map(|(f, secs)| (m.message_id.clone(), f, secs))
                    .into_iter()
                    .collect::<Vec<_>>(),
                "{case}: handed back"
            );
            assert!(reported.is_empty(), "{case}: the record itself is done with");
            assert!(s.queue.retries().is_empty(), "{case}: no receive used up");
            let tenant = s.store.tenant(&s.tenant.tenant_id).unwrap();
            assert_eq!(tenant.token_invalid, want.token_flagged, "{case}: token flag");
            assert_eq!(
                s.store.lease_until_ms(&m.tenant_id, &m.message_id),
                None,
                "{case}: no lease left behind"
            );
            match want.status {
                MessageStatus::Queued => {
                    assert_eq!(stored.error, None, "{case}: no error while retrying");
                    assert_eq!(
                        s.store.recipient_queue(&m.tenant_id, &m.contact_id),
                        vec![m.message_id.clone()],
                        "{case}: keeps its place in line"
                    );
                }
                MessageStatus::Unknown => {
                    assert_eq!(
                        stored.error.and_then(|e| e.title).as_deref(),
                        Some("send_outcome_unknown"),
                        "{case}"
                    );
                }
                _ => assert_eq!(
                    stored.error.as_ref().map(|e| e.code),
                    Some(recorded_code),
                    "{case}: Meta's code recorded"
                ),
            }
        }
    }
}

#[tokio::test]
async fn a_token_rejected_by_meta_pauses_the_tenant_for_the_next_batch() {
    let s = sender();
    let first = s.queue_text();
    let second = s.queue_text();
    s.graph.answer_next_send(Err(meta_error(401, Some(190))));
    s.send(&first, 0).await;
    // The tenant cache was dropped: the next batch reads the flag and sends nothing.
    s.send(&second, 0).await;
    assert_eq!(s.graph.sent().len(), 1);
    assert_eq!(s.stored(&second).status, MessageStatus::Queued);
    assert_eq!(
        s.requeued(),
        vec![(second.message_id.clone(), 0, 60)],
        "a paused tenant waits a minute, no failure counted"
    );
}

#[tokio::test]
async fn an_accepted_send_records_sent_with_its_wamid_and_frees_the_lease() {
    let s = sender();
    let m = s.queue_text();
    s.graph.answer_next_send(Ok("wamid.ACCEPTED".into()));
    assert!(s.send(&m, 0).await.is_empty());
    let stored = s.stored(&m);
    assert_eq!(stored.status, MessageStatus::Sent);
    assert!(s.store.recipient_queue(&m.tenant_id, &m.contact_id).is_empty());
    assert_eq!(stored.wamid.as_deref(), Some("wamid.ACCEPTED"));
    assert_eq!(s.store.lease_until_ms(&m.tenant_id, &m.message_id), None);
    let sent = s.graph.sent();
    assert_eq!(sent[0].phone_number_id, s.tenant.phone_number_id);
    assert_eq!(sent[0].token.expose(), "graph-token");
    assert_eq!(sent[0].payload["to"], "447700900123");
    assert_eq!(sent[0].payload["text"], json!({"body": "hello"}));
}

#[tokio::test]
async fn a_send_that_cannot_be_recorded_is_retried_in_place_not_resent() {
    let s = sender();
    let m = s.queue_text();
    s.store.fail_next_backend(Op::MarkSent);
    s.store.fail_next_backend(Op::MarkSent);
    assert!(s.send(&m, 0).await.is_empty());
    assert_eq!(s.graph.sent().len(), 1);
    assert_eq!(s.store.calls(Op::MarkSent), 3);
    assert_eq!(s.stored(&m).status, MessageStatus::Sent);
}

/// How preparation should end for a message that is not sent.
#[derive(Debug)]
enum Prepared {
    /// Recorded on the message with this status and error title; the record is done with.
    Refused(MessageStatus, &'static str),
    /// Handed back to the queue after this many seconds, the message untouched.
    HandedBack(u64),
    /// Done with, the message untouched.
    NothingToDo,
}

#[tokio::test]
async fn preparation_rechecks_the_rules_and_the_claim() {
    // (case, edit of the message and contact before they are stored, what else happened
    // meanwhile, how preparation ends).
    type Edit = fn(&mut MessageRecord, &mut Contact);
    type Meanwhile = fn(&Sender, &MessageRecord);
    let unchanged: Edit = |_, _| {};
    let nothing: Meanwhile = |_, _| {};
    let cases: Vec<(&str, Edit, Meanwhile, Prepared)> = vec![
        (
            "restricted contact",
            |_, c| c.restricted = true,
            nothing,
            Prepared::Refused(MessageStatus::Rejected, "contact_restricted"),
        ),
        (
            "opted out of marketing, marketing template",
            |m, c| {
                c.consent.marketing = MarketingConsent::OptedOut;
                m.message_type = "template".into();
                m.content = json!({"name": "offer", "language": {"code": "en"}});
                m.category = Some(Category::Marketing);
            },
            nothing,
            Prepared::Refused(MessageStatus::Rejected, "opted_out"),
        ),
        (
            "service window closed, text",
            |_, c| c.last_inbound_at = Some(Utc::now() - chrono::Duration::hours(25)),
            nothing,
            Prepared::Refused(MessageStatus::Rejected, "outside_service_window"),
        ),
        (
            "contact erased",
            unchanged,
            |s, m| {
                s.store.erase_contact(&m.tenant_id, &m.contact_id);
                s.store.add_message(m.clone());
            },
            Prepared::Refused(MessageStatus::Rejected, "contact_erased"),
        ),
        (
            "tenant disabled",
            unchanged,
            |s, _| {
                let mut t = s.tenant.clone();
                t.status = TenantStatus::Disabled;
                s.store.add_tenant(t, Secret::new("graph-token"));
            },
            Prepared::Refused(MessageStatus::Failed, "tenant_disabled"),
        ),
        (
            "no longer queued",
            |m, _| m.status = MessageStatus::Sent,
            nothing,
            Prepared::NothingToDo,
        ),
        (
            "lease held by another sender",
            unchanged,
            |s, m| {
                s.store
                    .set_lease(&m.tenant_id, &m.message_id, Utc::now().timestamp_millis() + 60_000)
            },
            Prepared::HandedBack(60),
        ),
        (
            "lease abandoned by a sender that died mid-send",
            unchanged,
            |s, m| {
                s.store
                    .set_lease(&m.tenant_id, &m.message_id, Utc::now().timestamp_millis() - 1)
            },
            Prepared::Refused(MessageStatus::Unknown, "send_outcome_unknown"),
        ),
        (
            "accepted more than an hour ago",
            |m, _| m.message_id = crm_shared::privacy::id_floor(Utc::now() - chrono::Duration::minutes(61)),
            nothing,
            Prepared::Refused(MessageStatus::Failed, "not_sent_in_time"),
        ),
        (
            "recipient messaged within the pair interval",
            unchanged,
            |s, m| {
                s.store
                    .set_last_outbound_ms(&m.tenant_id, &m.contact_id, Utc::now().timestamp_millis() - 1_000)
            },
            Prepared::HandedBack(6),
        ),
    ];
    for (name, edit, meanwhile, want) in cases {
        let tenant = fixtures::tenant("106540352242922");
        let mut contact = fixtures::contact(&tenant.tenant_id, "+447700900123", Utc::now());
        let mut message = fixtures::queued_text(&contact);
        edit(&mut message, &mut contact);
        let s = sender_with(tenant, contact);
        seed_offer(&s, TemplateCategory::Marketing).await;
        s.store.add_message(message.clone());
        meanwhile(&s, &message);
        let reported = s.send(&message, 0).await;
        assert!(s.graph.sent().is_empty(), "{name}: nothing sent");
        assert!(reported.is_empty(), "{name}: the record is done with");
        assert!(s.queue.retries().is_empty(), "{name}: no receive used up");
        let stored = s.stored(&message);
        match want {
            Prepared::Refused(status, title) => {
                assert_eq!(stored.status, status, "{name}");
                assert_eq!(stored.error.and_then(|e| e.title).as_deref(), Some(title), "{name}");
                assert!(s.requeued().is_empty(), "{name}");
                assert!(
                    s.store
                        .recipient_queue(&message.tenant_id, &message.contact_id)
                        .is_empty(),
                    "{name}: out of its recipient's queue"
                );
            }
            Prepared::HandedBack(secs) => {
                assert_eq!(stored.status, MessageStatus::Queued, "{name}");
                let (_, failures, delay) = s.requeued().pop().expect("handed back");
                assert_eq!((failures, delay), (0, secs), "{name}");
            }
            Prepared::NothingToDo => {
                assert_eq!(stored.status, message.status, "{name}");
                assert!(s.requeued().is_empty(), "{name}");
            }
        }
    }
}

fn template_category(c: Category) -> TemplateCategory {
    match c {
        Category::Marketing => TemplateCategory::Marketing,
        Category::Authentication => TemplateCategory::Authentication,
        Category::Utility | Category::Service => TemplateCategory::Utility,
    }
}

#[tokio::test]
async fn a_template_changed_at_meta_while_queued_is_checked_again() {
    let now = Utc::now();
    let tenant = fixtures::tenant("106540352242923");
    let mut contact = fixtures::contact(&tenant.tenant_id, "+447700900124", now);
    contact.consent.marketing = MarketingConsent::OptedOut;
    let s = sender_with(tenant, contact);
    let queued = |s: &Sender| {
        let m = fixtures::queued_message(
            &s.contact,
            "template",
            json!({"name": "offer", "language": {"code": "en"}}),
            Some(Category::Utility),
        );
        s.store.add_message(m.clone());
        m
    };
    // Recategorised as marketing while queued: the opted-out contact gets nothing.
    seed_offer(&s, TemplateCategory::Marketing).await;
    let m = queued(&s);
    s.send(&m, 1).await;
    let stored = s.stored(&m);
    assert_eq!(
        (stored.status, stored.error.unwrap().title.as_deref()),
        (MessageStatus::Rejected, Some("opted_out"))
    );
    // Paused at Meta while queued: refused with Meta's code, Meta not called.
    let change = crm_shared::template::parse_webhook_change(
        "message_template_status_update",
        &json!({"event": "PAUSED", "message_template_name": "offer", "message_template_language": "en"}),
    )
    .unwrap();
    s.store
        .apply_template_change(&s.tenant.tenant_id, &change, now.timestamp() + 10, now)
        .await
        .unwrap();
    let m = queued(&s);
    s.send(&m, 1).await;
    assert_eq!(s.stored(&m).error.unwrap().code, 132015);
    assert!(s.graph.sent().is_empty());
}

#[tokio::test]
async fn templates_pass_the_rules_that_stop_other_messages() {
    // The negative controls of the rules above: each would be refused as a text.
    let now = Utc::now();
    for (name, category, set_up) in [
        (
            "opted out, utility template",
            Category::Utility,
            (|c: &mut Contact| c.consent.marketing = MarketingConsent::OptedOut) as fn(&mut Contact),
        ),
        ("window closed, template", Category::Marketing, |c: &mut Contact| {
            c.consent.marketing = MarketingConsent::OptedIn;
            c.last_inbound_at = None;
        }),
    ] {
        let tenant = fixtures::tenant("106540352242922");
        let mut contact = fixtures::contact(&tenant.tenant_id, "+447700900123", now);
        set_up(&mut contact);
        let s = sender_with(tenant, contact);
        seed_offer(&s, template_category(category)).await;
        let m = fixtures::queued_message(
            &s.contact,
            "template",
            json!({"name": "offer", "language": {"code": "en"}}),
            Some(category),
        );
        s.store.add_message(m.clone());
        assert!(s.send(&m, 0).await.is_empty(), "{name}");
        assert_eq!(s.stored(&m).status, MessageStatus::Sent, "{name}");
    }
}

#[tokio::test]
async fn a_token_flagged_invalid_holds_messages_until_the_send_deadline() {
    for (age_minutes, status, requeued) in [(0, MessageStatus::Queued, 1), (61, MessageStatus::Failed, 0)] {
        let mut tenant = fixtures::tenant("106540352242922");
        tenant.token_invalid = true;
        let contact = fixtures::contact(&tenant.tenant_id, "+447700900123", Utc::now());
        let s = sender_with(tenant, contact);
        let mut m = fixtures::queued_text(&s.contact);
        m.message_id = crm_shared::privacy::id_floor(Utc::now() - chrono::Duration::minutes(age_minutes));
        s.store.add_message(m.clone());
        let reported = s.send(&m, 0).await;
        assert!(s.graph.sent().is_empty());
        assert!(reported.is_empty());
        assert_eq!(s.stored(&m).status, status, "{age_minutes} min old");
        assert_eq!(s.requeued().len(), requeued, "{age_minutes} min old");
        assert_eq!(s.store.lease_until_ms(&m.tenant_id, &m.message_id), None);
    }
}

#[tokio::test]
async fn storage_failures_while_preparing_count_as_failures() {
    let s = sender();
    let m = s.queue_text();
    s.store.fail_next_backend(Op::ClaimForSend);
    assert!(s.send(&m, 2).await.is_empty());
    assert!(s.graph.sent().is_empty());
    assert_eq!(s.requeued(), vec![(m.message_id.clone(), 3, 45)]);
    assert_eq!(s.stored(&m).status, MessageStatus::Queued);
    // A body that is no send job can never succeed: straight to the DLQ.
    let s = sender();
    let mut r = record(&s.queue_text(), 0);
    r.body = Some("not json".into());
    let response = s.run(vec![r]).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert!(s.queue.retries().is_empty());
}

#[tokio::test]
async fn when_the_queue_refuses_the_hand_back_the_record_stays_with_its_delay() {
    let s = sender();
    let m = s.queue_text();
    s.store
        .set_last_outbound_ms(&m.tenant_id, &m.contact_id, Utc::now().timestamp_millis());
    s.queue.fail_next_enqueue();
    let reported = s.send(&m, 0).await;
    assert_eq!(reported, vec![format!("sqs-{}", m.message_id)]);
    assert_eq!(s.queue.retries(), vec![(format!("receipt-{}", m.message_id), 6)]);
    assert_eq!(s.stored(&m).status, MessageStatus::Queued);
}

#[tokio::test]
async fn an_unknown_outcome_is_never_resent() {
    let s = sender();
    let m = s.queue_text();
    s.graph
        .answer_next_send(Err(GraphCallError::OutcomeUnknown("timed out".into())));
    s.send(&m, 0).await;
    // The same job again (an SQS redelivery, a sweep, a replayed API request): nothing sent.
    s.send(&m, 0).await;
    assert_eq!(s.graph.sent().len(), 1);
    assert_eq!(s.stored(&m).status, MessageStatus::Unknown);
    assert!(s.requeued().is_empty());
}

#[tokio::test]
async fn messages_to_one_recipient_leave_in_the_order_they_were_accepted() {
    let s = sender();
    let first = s.queue_text();
    let second = s.queue_text();
    let third = s.queue_text();
    let ids = |ms: &[&MessageRecord]| ms.iter().map(|m| m.message_id.clone()).collect::<Vec<_>>();
    assert_eq!(
        s.store.recipient_queue(&first.tenant_id, &first.contact_id),
        ids(&[&first, &second, &third])
    );
    // The first fails transiently: it keeps its place, the later ones wait behind it.
    s.graph.answer_next_send(Err(meta_error(500, Some(131000))));
    s.send(&first, 0).await;
    let clear_pair_rate = || s.store.set_last_outbound_ms(&first.tenant_id, &first.contact_id, 0);
    clear_pair_rate();
    s.run(vec![record(&third, 0), record(&second, 0)]).await;
    assert_eq!(s.graph.sent().len(), 1, "nothing overtakes the first");
    // Each batch delivers them in reverse; they still leave in order.
    for expected in [&first, &second, &third] {
        clear_pair_rate();
        s.run(vec![record(&third, 0), record(&second, 0), record(&first, 0)])
            .await;
        assert_eq!(s.stored(expected).status, MessageStatus::Sent);
    }
    let sent: Vec<String> = s
        .graph
        .sent()
        .iter()
        .skip(1)
        .map(|c| c.payload["biz_opaque_callback_data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, ids(&[&first, &second, &third]));
}

#[tokio::test]
async fn a_finished_message_left_in_line_by_mistake_holds_nobody_up() {
    let s = sender();
    let stale = s.queue_text();
    let next = s.queue_text();
    // The first failed, but taking it out of its recipient's queue did not happen.
    s.store.add_message(MessageRecord {
        status: MessageStatus::Failed,
        ..stale.clone()
    });
    assert!(s.send(&next, 0).await.is_empty());
    assert_eq!(s.stored(&next).status, MessageStatus::Sent);
    assert!(s.store.recipient_queue(&next.tenant_id, &next.contact_id).is_empty());
}

#[tokio::test]
async fn the_sweep_queues_again_only_messages_whose_job_is_lost() {
    let s = sender();
    let at = |minutes: i64| crm_shared::privacy::id_floor(Utc::now() - chrono::Duration::minutes(minutes));
    let with_id = |id: String| {
        let m = MessageRecord {
            message_id: id,
            ..fixtures::queued_text(&s.contact)
        };
        s.store.add_message(m.clone());
        m
    };
    let lost = with_id(at(15));
    // Accepted two minutes ago: its job may still be on its way.
    with_id(at(2));
    let alive = with_id(at(20));
    let sent = with_id(at(30));
    // A sender claimed one a minute ago (its job is waiting out the pair rate).
    s.store
        .set_last_outbound_ms(&alive.tenant_id, &alive.contact_id, Utc::now().timestamp_millis());
    s.send(&alive, 0).await;
    s.store.add_message(MessageRecord {
        status: MessageStatus::Sent,
        ..sent.clone()
    });
    let queue = MemQueue::new();
    let report = crate::sweep::sweep(&s.store, &queue, Utc::now()).await.unwrap();
    assert_eq!(report.requeued, 1, "{report:?}");
    assert_eq!(
        queue.send_jobs(),
        vec![crm_shared::jobs::SendJob::new(&lost.tenant_id, &lost.message_id)]
    );
}
