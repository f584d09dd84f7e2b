//! The 100,000-recipient campaign of issue 17's benchmark (`broadcast-bench campaign`): the
//! real broadcast engine (`crm_shared::broadcast::run`) on its one-minute schedule hands the
//! campaign to real sender instances (`sender_fn::handle`, the sender's limiter at the number's
//! rate) through a delayed queue that stands in for SQS, against the fake Graph enforcing that
//! rate with `130429`; then Meta's three statuses per message go through the webhook's store
//! path and the engine follows them. Everything runs over one in-memory store with a latency
//! per DynamoDB request, which also counts writes per partition key (`MemStore::count_writes`).
//!
//! The queue is the only part that is not the product's code: SQS keeps a job invisible for its
//! delay and hands it to whichever sender asks; a record a sender fails comes back after the
//! visibility the sender asked for (else a second).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};

use crm_shared::jobs::{EnqueueError, RetryScheduler, SendJob, SendJobQueue};

use crate::throughput::{Queued, sqs_event};

/// A job and when it becomes visible, ordered by that (then by arrival).
struct Delayed {
    due: Instant,
    seq: u64,
    item: Queued,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// SQS as the campaign sees it: delayed sends from the engine, visibility changes and
/// redeliveries from the senders.
#[derive(Default)]
pub struct DelayQueue {
    heap: Mutex<BinaryHeap<Reverse<Delayed>>>,
    seq: AtomicU64,
    /// Visibility timeouts the senders asked for, by receipt handle (the message id).
    visibility: Mutex<HashMap<String, i32>>,
    pub enqueued: AtomicU64,
    pub redelivered: AtomicU64,
}

impl DelayQueue {
    fn push(&self, item: Queued, delay: Duration) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let due = Instant::now() + delay;
        self.heap
            .lock()
            .expect("queue")
            .push(Reverse(Delayed { due, seq, item }));
    }

    /// Up to `n` visible jobs, oldest due first.
    fn pop_due(&self, n: usize) -> Vec<Queued> {
        let now = Instant::now();
        let mut heap = self.heap.lock().expect("queue");
        let mut out = Vec::new();
        while out.len() < n && heap.peek().is_some_and(|Reverse(d)| d.due <= now) {
            if let Some(Reverse(d)) = heap.pop() {
                out.push(d.item);
            }
        }
        out
    }

    /// Jobs waiting (visible or not).
    pub fn len(&self) -> usize {
        self.heap.lock().expect("queue").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The engine's and the senders' handle on the queue.
#[derive(Clone, Default)]
pub struct Sqs(pub Arc<DelayQueue>);

impl SendJobQueue for Sqs {
    async fn enqueue_send_after(&self, job: &SendJob, delay: Duration) -> Result<(), EnqueueError> {
        self.0.enqueued.fetch_add(1, Ordering::Relaxed);
        self.0.push(
            Queued {
                job: job.clone(),
                receive_count: 0,
            },
            delay,
        );
        Ok(())
    }
}

impl RetryScheduler for Sqs {
    async fn retry_after(&self, receipt_handle: &str, seconds: i32) -> Result<(), EnqueueError> {
        self.0
            .visibility
            .lock()
            .expect("visibility")
            .insert(receipt_handle.to_owned(), seconds);
        Ok(())
    }
}

/// One sender instance: takes visible batches until `stop`, hands failed records back after
/// the visibility the sender set for them (else 1 s). `invoke` returns the failed record ids.
pub async fn sender_instance<F, Fut>(queue: Sqs, batch_size: usize, stop: Arc<AtomicBool>, mut invoke: F)
where
    F: FnMut(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, String>>,
{
    while !stop.load(Ordering::Relaxed) {
        let mut batch = queue.0.pop_due(batch_size);
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        for q in &mut batch {
            q.receive_count += 1;
        }
        let id = |q: &Queued| format!("{}-{}", q.job.message_id, q.receive_count);
        let failed = invoke(sqs_event(&batch))
            .await
            .unwrap_or_else(|_| batch.iter().map(id).collect());
        for q in batch {
            if failed.contains(&id(&q)) {
                let seconds = queue
                    .0
                    .visibility
                    .lock()
                    .expect("visibility")
                    .remove(&q.job.message_id)
                    .unwrap_or(1);
                queue.0.redelivered.fetch_add(1, Ordering::Relaxed);
                queue.0.push(q, Duration::from_secs(seconds.max(0) as u64));
            }
        }
    }
}

/// One invocation of a sender: the failed record ids.
pub type Invocation = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>, String>> + Send>>;

/// Runs the sender library as one instance would be invoked by its event source mapping.
pub fn invoke_sender<S, G>(deps: Arc<sender_fn::Deps<S, G, Sqs>>) -> impl FnMut(SqsEvent) -> Invocation
where
    S: sender_fn::SenderStore + Send + Sync + 'static,
    G: crm_shared::graph::MessageSender + Send + Sync + 'static,
{
    move |event| {
        let deps = deps.clone();
        Box::pin(async move {
            let response = sender_fn::handle(&deps, LambdaEvent::new(event, Context::default()))
                .await
                .map_err(|e| e.to_string())?;
            Ok(response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.clone())
                .collect())
        })
    }
}

/// The family of a partition key: the tenant id as `<t>`, ids, wamids and numbers as
/// placeholders, so the keys a campaign writes group into the patterns of
/// `shared/src/store/keys.rs` (a shard suffix stays, as `<shard>`).
pub fn key_family(pk: &str, tenant_id: &str) -> String {
    let parts: Vec<&str> = pk.split('#').collect();
    let last = parts.len().saturating_sub(1);
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let shard = i == last && part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()) && i > 1;
            if *part == tenant_id {
                "<t>".to_owned()
            } else if shard {
                "<shard>".to_owned()
            } else if part.starts_with("wamid.") {
                "<wamid>".to_owned()
            } else if part.len() >= 10 && part.bytes().all(|b| b.is_ascii_alphanumeric()) {
                "<id>".to_owned()
            } else {
                (*part).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("#")
}

/// Writes per key family: keys, writes, the busiest key's writes.
#[derive(Debug, Default, Clone, Copy)]
pub struct FamilyWrites {
    pub keys: usize,
    pub writes: u64,
    pub busiest: u64,
    pub quietest: u64,
}

pub fn families(writes: &HashMap<String, u64>, tenant_id: &str) -> Vec<(String, FamilyWrites)> {
    let mut by: HashMap<String, FamilyWrites> = HashMap::new();
    for (pk, &n) in writes {
        let f = by.entry(key_family(pk, tenant_id)).or_insert(FamilyWrites {
            quietest: u64::MAX,
            ..FamilyWrites::default()
        });
        f.keys += 1;
        f.writes += n;
        f.busiest = f.busiest.max(n);
        f.quietest = f.quietest.min(n);
    }
    let mut out: Vec<_> = by.into_iter().collect();
    out.sort_by(|a, b| b.1.busiest.cmp(&a.1.busiest).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_shared::store::keys;

    #[test]
    fn keys_group_into_their_families() {
        let t = "01jabcdefghjkmnpqrstvwxyz0";
        let m = "01jbbcdefghjkmnpqrstvwxyz1";
        assert_eq!(key_family(&keys::message_pk(t, m), t), "T#<t>#MSG#<id>");
        assert_eq!(key_family(&keys::tenant_messages_gsi5pk(t, 7), t), "T#<t>#MSGS#<shard>");
        assert_eq!(
            key_family(&keys::tenant_outbox_gsi6pk(t, 12), t),
            "T#<t>#OUTBOX#<shard>"
        );
        assert_eq!(
            key_family(&keys::wamid_pk(t, "wamid.BENCH000000000001"), t),
            "T#<t>#WAMID#<wamid>"
        );
        assert_eq!(key_family(&keys::conversation_gsi1pk(t, m), t), "T#<t>#C#<id>#MSGS");
        assert_eq!(
            key_family(&keys::broadcast_recipients_pk(t, m, 3), t),
            "T#<t>#BCAST#<id>#<shard>"
        );
        assert_eq!(
            key_family(&keys::send_schedule_pk(t, "106540352242922"), t),
            "T#<t>#RATE#<id>"
        );
        assert_eq!(key_family(&keys::tenant_pk(t), t), "T#<t>");
    }

    #[test]
    fn families_count_keys_and_their_busiest() {
        let writes = HashMap::from([
            ("T#t#MSGS#00".to_owned(), 10),
            ("T#t#MSGS#01".to_owned(), 30),
            ("T#t#AUDIT".to_owned(), 2),
        ]);
        let f = families(&writes, "t");
        assert_eq!(f[0].0, "T#<t>#MSGS#<shard>");
        assert_eq!(
            (f[0].1.keys, f[0].1.writes, f[0].1.busiest, f[0].1.quietest),
            (2, 40, 30, 10)
        );
        assert_eq!(f[1].0, "T#<t>#AUDIT");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_queue_hands_out_jobs_once_due_in_order() {
        let q = Sqs::default();
        q.enqueue_send_after(&SendJob::new("t", "b"), Duration::from_secs(2))
            .await
            .unwrap();
        q.enqueue_send_after(&SendJob::new("t", "a"), Duration::ZERO)
            .await
            .unwrap();
        let first = q.0.pop_due(10);
        assert_eq!(
            first.iter().map(|j| j.job.message_id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(q.0.len(), 1);
    }
}
