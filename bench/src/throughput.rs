//! Sender throughput (issue 6's benchmark): SQS-shaped batches fed to `instances` concurrent
//! senders — real `sender` processes against the local AWS endpoint, or the sender's library
//! over an in-memory store — with a fake Graph that answers after a delay; the Graph's arrival
//! log judges the per-number limiter.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crm_shared::config::GraphConfig;
use crm_shared::contact::{Contact, ValidContact};
use crm_shared::graph::GraphClient;
use crm_shared::jobs::{EnqueueError, RetryScheduler, SendJob, SendJobQueue};
use crm_shared::message::{Direction, MessageRecord, MessageStatus};
use crm_shared::secret::Secret;
use crm_shared::sending::Category;
use crm_shared::tenant::{Tenant, TenantStatus};
use crm_shared::testing::MemStore;

use crate::graph::{FakeGraph, unix_micros};
use crate::stats::{RateAccuracy, rate_accuracy};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputConfig {
    /// Concurrent senders (the event source mapping's `MaximumConcurrency`).
    pub instances: usize,
    /// Records per SQS batch (`BatchSize`).
    pub batch_size: usize,
    /// The limiter's messages per second for the one phone number.
    pub rate: u32,
    /// How long batches are fed.
    pub feed_for: Duration,
    /// How long the fake Graph takes to answer a send.
    pub graph_delay: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputResult {
    pub label: String,
    pub config: ThroughputConfig,
    /// Simulated database round trip of the in-memory store (`None`: the real endpoint).
    pub store_latency_ms: Option<u64>,
    /// A run with the limiter set above what the sender can do, to measure its ceiling.
    #[serde(default)]
    pub capacity_probe: bool,
    /// Sends the Graph accepted during the whole run.
    pub sent: usize,
    /// Sends the Graph refused with `130429` (over the limit in an aligned second).
    pub throttled: u64,
    /// Records handed back to the queue (no send slot in time, pair rate, errors).
    pub retried: u64,
    /// The queue ran dry before feeding stopped (then the rate says little about the sender).
    pub supply_exhausted: bool,
    pub accuracy: RateAccuracy,
    /// Accepted sends per second from the first send until feeding stopped (meaningful when the
    /// steady window is empty because the run is too slow to have one).
    pub overall_per_s: f64,
    /// Requests the local AWS endpoint served per second, and per accepted send (process runs).
    pub endpoint_requests_per_s: Option<f64>,
    pub endpoint_requests_per_message: Option<f64>,
    /// CPU of the sender processes per accepted send (process runs only).
    pub sender_cpu_us_per_message: Option<f64>,
    /// CPU the local AWS endpoint used over the run, as a share of one core (process runs only).
    pub endpoint_cpu_share: Option<f64>,
    pub final_statuses: BTreeMap<String, usize>,
}

/// One job waiting in the (simulated) queue.
#[derive(Debug, Clone)]
pub struct Queued {
    pub job: SendJob,
    pub receive_count: u32,
}

#[derive(Default)]
pub struct JobQueue {
    jobs: Mutex<VecDeque<Queued>>,
    retried: AtomicU64,
    ran_dry: AtomicBool,
}

impl JobQueue {
    pub fn new(jobs: impl IntoIterator<Item = SendJob>) -> Arc<JobQueue> {
        Arc::new(JobQueue {
            jobs: Mutex::new(jobs.into_iter().map(|job| Queued { job, receive_count: 1 }).collect()),
            ..JobQueue::default()
        })
    }

    fn pop(&self, n: usize) -> Vec<Queued> {
        let mut q = self.jobs.lock().expect("queue");
        let take = n.min(q.len());
        q.drain(..take).collect()
    }

    fn retry_later(self: &Arc<Self>, mut item: Queued, delay: Duration) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        item.receive_count += 1;
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.jobs.lock().expect("queue").push_back(item);
        });
    }
}

/// The SQS event a sender receives for `batch` (record id: message id + receive count,
/// receipt handle: the message id).
pub fn sqs_event(batch: &[Queued]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = batch
        .iter()
        .map(|q| {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("{}-{}", q.job.message_id, q.receive_count));
            m.receipt_handle = Some(q.job.message_id.clone());
            m.body = Some(serde_json::to_string(&q.job).expect("job serializes"));
            m.attributes
                .insert("ApproximateReceiveCount".into(), q.receive_count.to_string());
            m.event_source = Some("aws:sqs".into());
            m.aws_region = Some("us-east-1".into());
            m
        })
        .collect();
    event
}

/// Feeds batches to one sender until `feed_end`; `invoke` returns the failed record ids.
async fn worker<F, Fut>(
    queue: Arc<JobQueue>,
    batch_size: usize,
    feed_end: Instant,
    retry_delay: Duration,
    mut invoke: F,
) where
    F: FnMut(SqsEvent) -> Fut,
    Fut: Future<Output = Result<Vec<String>, String>>,
{
    while Instant::now() < feed_end {
        let batch = queue.pop(batch_size);
        if batch.is_empty() {
            queue.ran_dry.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let failed = match invoke(sqs_event(&batch)).await {
            Ok(ids) => ids,
            // The whole batch comes back, as SQS would redeliver it.
            Err(_) => batch
                .iter()
                .map(|q| format!("{}-{}", q.job.message_id, q.receive_count))
                .collect(),
        };
        for q in batch {
            if failed.contains(&format!("{}-{}", q.job.message_id, q.receive_count)) {
                queue.retry_later(q, retry_delay);
            }
        }
    }
}

/// The failed record ids of an `SqsBatchResponse` in JSON.
pub fn batch_failures(response: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(response).map_err(|e| e.to_string())?;
    Ok(v["batchItemFailures"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Statistics over the steady part of a run: from two seconds after the first send to the
/// last whole second before feeding stopped.
fn judge(
    label: &str,
    config: &ThroughputConfig,
    graph: &FakeGraph,
    queue: &JobQueue,
    feed_end_us: i64,
) -> ThroughputResult {
    let log = graph.take();
    let first_s = log
        .accepted_us
        .iter()
        .min()
        .map(|t| t.div_euclid(1_000_000))
        .unwrap_or(0);
    let to_s = feed_end_us.div_euclid(1_000_000);
    let from_s = (first_s + 2).min(to_s);
    let in_feed: Vec<i64> = log.accepted_us.iter().copied().filter(|&t| t < feed_end_us).collect();
    ThroughputResult {
        label: label.to_owned(),
        config: config.clone(),
        store_latency_ms: None,
        capacity_probe: false,
        sent: log.accepted_us.len(),
        throttled: log.throttled,
        retried: queue.retried.load(Ordering::Relaxed),
        supply_exhausted: queue.ran_dry.load(Ordering::Relaxed),
        accuracy: rate_accuracy(&in_feed, config.rate, from_s, to_s),
        overall_per_s: match log.accepted_us.iter().min() {
            Some(&first) if feed_end_us > first => in_feed.len() as f64 / ((feed_end_us - first) as f64 / 1e6),
            _ => 0.0,
        },
        endpoint_requests_per_s: None,
        endpoint_requests_per_message: None,
        sender_cpu_us_per_message: None,
        endpoint_cpu_share: None,
        final_statuses: BTreeMap::new(),
    }
}

/// Records the delay the sender asked for, per receipt handle; jobs the sender hands back go to
/// the simulated queue after their delay (as SQS would deliver them).
#[derive(Clone)]
struct MemRetry(Arc<Mutex<HashMap<String, i32>>>, Arc<JobQueue>);

impl SendJobQueue for MemRetry {
    async fn enqueue_send_after(&self, job: &SendJob, delay: Duration) -> Result<(), EnqueueError> {
        let item = Queued {
            job: job.clone(),
            receive_count: 0,
        };
        self.1.retry_later(item, delay);
        Ok(())
    }
}

impl RetryScheduler for MemRetry {
    async fn retry_after(&self, receipt_handle: &str, seconds: i32) -> Result<(), EnqueueError> {
        self.0
            .lock()
            .expect("retries")
            .insert(receipt_handle.to_owned(), seconds);
        Ok(())
    }
}

pub const BENCH_PHONE_NUMBER_ID: &str = "100000000000001";

/// A queued outbound text to `contact` (open service window), as the API would store it.
pub fn queued_text(tenant_id: &str, contact_id: &str, n: usize) -> MessageRecord {
    let now = Utc::now();
    MessageRecord {
        phone_number_id: None,
        tenant_id: tenant_id.to_owned(),
        message_id: crm_shared::ids::new_id(),
        contact_id: contact_id.to_owned(),
        direction: Direction::Outbound,
        wamid: None,
        message_type: "text".into(),
        content: json!({"body": format!("Your order #{n} has shipped.")}),
        status: MessageStatus::Queued,
        status_at: BTreeMap::from([("queued".to_owned(), now)]),
        error: None,
        media: None,
        category: Some(Category::Utility),
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
    }
}

/// A contact who wrote in a minute ago (the 24 h window is open).
pub fn recent_contact(tenant_id: &str, phone: &str) -> Contact {
    let now = Utc::now();
    let mut c = Contact::new(
        tenant_id,
        ValidContact {
            phone: Some(phone.to_owned()),
            user_id: None,
            name: None,
            email: None,
            language: None,
            tags: Vec::new(),
            attributes: Default::default(),
        },
        now,
    );
    c.last_inbound_at = Some(now - chrono::Duration::minutes(1));
    c
}

/// A phone number for customer `i` (valid in the numbering plan).
pub fn customer_phone(i: usize) -> String {
    // San Francisco numbers +1 415 200-0000 … 999-9999: valid E.164 for libphonenumber.
    format!("+1415{:07}", 2_000_000 + i % 8_000_000)
}

/// The sender library over the in-memory store: every "instance" has its own `Deps` (own
/// tenant cache and HTTP client, as separate execution environments would) and all share one
/// store, so the limiter's windows are shared as they are through DynamoDB.
pub async fn run_in_memory(graph: &FakeGraph, config: &ThroughputConfig, store_latency: Duration) -> ThroughputResult {
    let store = MemStore::with_latency(store_latency);
    let tenant = Tenant {
        tenant_id: crm_shared::ids::new_id(),
        name: "Bench".into(),
        phone_number_id: BENCH_PHONE_NUMBER_ID.into(),
        waba_id: "100000000000000".into(),
        status: TenantStatus::Active,
        created_at: Utc::now(),
        token_invalid: false,
        inbox: Default::default(),
        reports: Default::default(),
    };
    store.add_tenant(tenant.clone(), Secret::new("bench-token"));
    // One message per contact: Meta's pair rate (one per recipient per ~6 s) never interferes.
    let messages = (config.rate as f64 * config.feed_for.as_secs_f64() * 1.5) as usize + 2_000;
    let mut jobs = Vec::with_capacity(messages);
    for i in 0..messages {
        let contact = recent_contact(&tenant.tenant_id, &customer_phone(i));
        let message = queued_text(&tenant.tenant_id, &contact.contact_id, i);
        jobs.push(SendJob::new(&tenant.tenant_id, &message.message_id));
        store.add_contact(contact);
        store.add_message(message);
    }
    let queue = JobQueue::new(jobs);
    graph.configure(config.graph_delay, config.rate);
    graph.take();
    let graph_config = GraphConfig {
        base_url: graph.base_url(),
        version: crm_shared::config::DEFAULT_GRAPH_API_VERSION.into(),
    };
    let feed_end = Instant::now() + config.feed_for;
    let feed_end_us = unix_micros() + config.feed_for.as_micros() as i64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.instances {
        let retries = MemRetry(Arc::default(), queue.clone());
        let deps = Arc::new(sender_fn::Deps::new(
            store.clone(),
            GraphClient::new(&graph_config).expect("graph client"),
            retries.clone(),
            sender_fn::SenderConfig {
                rate_per_second: config.rate,
                ..sender_fn::SenderConfig::default()
            },
        ));
        let queue = queue.clone();
        let batch_size = config.batch_size;
        tasks.spawn(async move {
            worker(queue, batch_size, feed_end, Duration::from_secs(1), move |event| {
                let deps = deps.clone();
                let retries = retries.clone();
                async move {
                    let response = sender_fn::handle(&deps, LambdaEvent::new(event, Context::default()))
                        .await
                        .map_err(|e| e.to_string())?;
                    retries.0.lock().expect("retries").clear();
                    Ok(response
                        .batch_item_failures
                        .iter()
                        .map(|f| f.item_identifier.clone())
                        .collect())
                }
            })
            .await
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut result = judge("in-memory store", config, graph, &queue, feed_end_us);
    result.store_latency_ms = Some(store_latency.as_millis() as u64);
    result.final_statuses = store
        .status_counts()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n))
        .collect();
    result
}

/// Real sender processes sharing one Runtime API endpoint (`invoke` hands a batch to whichever
/// process asks next and returns its response).
pub async fn run_processes<F, Fut>(
    label: &str,
    graph: &FakeGraph,
    config: &ThroughputConfig,
    jobs: Vec<SendJob>,
    invoke: F,
) -> ThroughputResult
where
    F: Fn(SqsEvent) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Vec<String>, String>> + Send,
{
    let queue = JobQueue::new(jobs);
    graph.configure(config.graph_delay, config.rate);
    graph.take();
    let feed_end = Instant::now() + config.feed_for;
    let feed_end_us = unix_micros() + config.feed_for.as_micros() as i64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.instances {
        let queue = queue.clone();
        let invoke = invoke.clone();
        let batch_size = config.batch_size;
        tasks.spawn(async move { worker(queue, batch_size, feed_end, Duration::from_secs(1), invoke).await });
    }
    while tasks.join_next().await.is_some() {}
    judge(label, config, graph, &queue, feed_end_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_response_failures() {
        let body = br#"{"batchItemFailures":[{"itemIdentifier":"a-1"},{"itemIdentifier":"b-2"}]}"#;
        assert_eq!(batch_failures(body).unwrap(), vec!["a-1", "b-2"]);
        assert!(batch_failures(br#"{"batchItemFailures":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn events_carry_the_job_and_its_receive_count() {
        let q = Queued {
            job: SendJob::new("t", "m"),
            receive_count: 3,
        };
        let event = sqs_event(&[q]);
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(v["Records"][0]["messageId"], "m-3");
        assert_eq!(v["Records"][0]["attributes"]["ApproximateReceiveCount"], "3");
        let job: SendJob = serde_json::from_str(v["Records"][0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(job.message_id, "m");
    }

    #[test]
    fn customer_phones_are_valid_e164() {
        for i in [0, 1, 999_999] {
            let p = customer_phone(i);
            assert_eq!(crm_shared::contact::normalize_phone(&p).as_deref(), Ok(p.as_str()));
        }
    }
}
