//! Work handed from one function to another through SQS: the jobs, the ports that enqueue
//! them, [`SqsQueue`], the one SQS queue type of the codebase, and the two facts every queue
//! handler reads from a batch (how often a record was received; which records failed, as the
//! partial batch response).

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsMessage};
use serde::{Deserialize, Serialize};

/// How many times SQS has delivered this record, this delivery included (1 when the attribute
/// is missing): compared with the queue's `maxReceiveCount` to spot the last attempt.
pub fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The partial batch response for `records`, given whether each one is done with (in order):
/// the ones that are not are redelivered by SQS (and dead-lettered after `maxReceiveCount`).
pub fn partial_batch_response(records: &[SqsMessage], done: impl IntoIterator<Item = bool>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for (record, done) in records.iter().zip(done) {
        if !done && let Some(id) = &record.message_id {
            response.add_failure(id.clone());
        }
    }
    response
}

/// Fetch one inbound media item from Meta into S3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaJob {
    pub tenant_id: String,
    pub message_id: String,
    pub contact_id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("could not enqueue job: {0}")]
pub struct EnqueueError(pub String);

pub trait MediaJobQueue: Send + Sync {
    fn enqueue_media(&self, job: &MediaJob) -> impl Future<Output = Result<(), EnqueueError>> + Send;
}

/// Send one queued outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendJob {
    pub tenant_id: String,
    pub message_id: String,
    /// Failed send attempts so far. The sender counts them itself and hands a job it must try
    /// again (or wait with) back as a new, delayed queue message: waiting never uses up the
    /// queue's receives, which are left to catch crashes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SendJob {
    pub fn new(tenant_id: &str, message_id: &str) -> Self {
        SendJob {
            tenant_id: tenant_id.to_owned(),
            message_id: message_id.to_owned(),
            failures: 0,
        }
    }
}

pub trait SendJobQueue: Send + Sync {
    /// Enqueues `job`, delivered no earlier than `delay` from now (at most 15 minutes).
    fn enqueue_send_after(
        &self,
        job: &SendJob,
        delay: Duration,
    ) -> impl Future<Output = Result<(), EnqueueError>> + Send;

    fn enqueue_send(&self, job: &SendJob) -> impl Future<Output = Result<(), EnqueueError>> + Send {
        self.enqueue_send_after(job, Duration::ZERO)
    }
}

impl SendJobQueue for SqsQueue {
    async fn enqueue_send_after(&self, job: &SendJob, delay: Duration) -> Result<(), EnqueueError> {
        self.send_job(job, delay).await
    }
}

/// A queue of jobs of any serializable kind (privacy jobs: exports, erasures).
pub trait JobQueue: Send + Sync {
    /// Sends `job`, delivered no earlier than `delay` from now (at most 15 minutes, SQS's
    /// longest delay).
    fn send_job<T: Serialize + Sync>(
        &self,
        job: &T,
        delay: Duration,
    ) -> impl Future<Output = Result<(), EnqueueError>> + Send;
}

impl JobQueue for SqsQueue {
    async fn send_job<T: Serialize + Sync>(&self, job: &T, delay: Duration) -> Result<(), EnqueueError> {
        let body = serde_json::to_string(job).expect("jobs serialize");
        let delay_seconds = delay.as_secs().min(900) as i32;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_seconds)
            .send()
            .await
            .map_err(|e| EnqueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}

/// Largest message body sent to a queue. SQS now takes 1 MiB, but 256 KiB was its limit for
/// years (and still is for some clients and integrations): staying under it is safe everywhere.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Entries per `SendMessageBatch` request (an SQS limit); the request as a whole is kept under
/// [`MAX_MESSAGE_BYTES`] as well.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// Consecutive runs of bodies (by their sizes, in order) that each fit one `SendMessageBatch`
/// request: at most `max_entries` entries and `max_bytes` bytes together. A body larger than
/// `max_bytes` gets a run of its own (the queue will refuse it; callers keep bodies smaller).
pub fn batch_runs(sizes: &[usize], max_entries: usize, max_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == max_entries || bytes + size > max_bytes) {
            runs.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        runs.push(start..sizes.len());
    }
    runs
}

/// Already-authenticated webhook deliveries the webhook could not finish within its time
/// budget, handed to its overflow queue (each body a complete WhatsApp webhook payload).
pub trait OverflowQueue: Send + Sync {
    /// Sends every body (in batches); `Ok` only when all of them are on the queue.
    fn hand_off(&self, bodies: &[String]) -> impl Future<Output = Result<(), EnqueueError>> + Send;
}

impl OverflowQueue for SqsQueue {
    async fn hand_off(&self, bodies: &[String]) -> Result<(), EnqueueError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let sizes: Vec<usize> = bodies.iter().map(String::len).collect();
        for run in batch_runs(&sizes, MAX_BATCH_ENTRIES, MAX_MESSAGE_BYTES) {
            // Entry ids are indexes into `bodies`, so failed entries can be sent again.
            let mut pending: Vec<usize> = run.collect();
            for attempt in 0..3 {
                let entries = pending
                    .iter()
                    .map(|&i| {
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(&bodies[i])
                            .build()
                            .map_err(|e| EnqueueError(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| EnqueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
                pending = out.failed.iter().filter_map(|f| f.id.parse().ok()).collect();
                if pending.is_empty() {
                    break;
                }
                if attempt == 2 {
                    let codes: Vec<&str> = out.failed.iter().map(|f| f.code.as_str()).collect();
                    return Err(EnqueueError(format!("{} messages refused: {codes:?}", pending.len())));
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
        Ok(())
    }
}

/// Delays the next delivery of a received SQS message (exponential backoff for retries).
pub trait RetryScheduler: Send + Sync {
    fn retry_after(&self, receipt_handle: &str, seconds: i32) -> impl Future<Output = Result<(), EnqueueError>> + Send;
}

/// Backoff before delivery `receive_count + 1`: fast first (a blip costs an agent seconds, not
/// minutes), then backing off for real outages: 5 s, 1 min, 12 min, then an hour.
pub fn retry_delay_secs(receive_count: u32) -> i32 {
    let exp = receive_count.saturating_sub(1).min(3);
    (5 * 12i32.pow(exp)).min(3600)
}

/// Backoff for a retryable send failure: 5 s, 15 s, 45 s … capped at 15 minutes.
pub fn send_retry_delay_secs(receive_count: u32) -> i32 {
    let exp = receive_count.saturating_sub(1).min(6);
    (5 * 3i32.pow(exp)).min(900)
}

/// The SQS implementation.
impl RetryScheduler for SqsQueue {
    async fn retry_after(&self, receipt_handle: &str, seconds: i32) -> Result<(), EnqueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.clamp(0, 43_200))
            .send()
            .await
            .map_err(|e| EnqueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, receive_count: Option<&str>) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.message_id = Some(id.to_owned());
        if let Some(n) = receive_count {
            record.attributes.insert("ApproximateReceiveCount".into(), n.into());
        }
        record
    }

    #[test]
    fn receive_count_reads_the_attribute_and_defaults_to_one() {
        assert_eq!(receive_count(&record("a", Some("3"))), 3);
        assert_eq!(receive_count(&record("a", None)), 1);
        assert_eq!(receive_count(&record("a", Some("x"))), 1);
    }

    #[test]
    fn the_batch_response_lists_exactly_the_records_not_done() {
        let records = [record("a", None), record("b", None), record("c", None)];
        let response = partial_batch_response(&records, [true, false, false]);
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["b", "c"]);
        assert!(
            partial_batch_response(&records, [true; 3])
                .batch_item_failures
                .is_empty()
        );
    }

    #[test]
    fn batch_runs_respect_entry_and_byte_limits() {
        assert!(batch_runs(&[], 10, 100).is_empty());
        assert_eq!(batch_runs(&[1; 25], 10, 100), vec![0..10, 10..20, 20..25]);
        assert_eq!(batch_runs(&[40, 40, 40, 10], 10, 100), vec![0..2, 2..4]);
        // Too big alone: its own run, neighbours unaffected.
        assert_eq!(batch_runs(&[10, 500, 10], 10, 100), vec![0..1, 1..2, 2..3]);
        assert_eq!(batch_runs(&[100, 1], 10, 100), vec![0..1, 1..2]);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(retry_delay_secs(1), 5);
        assert_eq!(retry_delay_secs(2), 60);
        assert_eq!(retry_delay_secs(3), 720);
        assert_eq!(retry_delay_secs(4), 3600);
        assert_eq!(retry_delay_secs(40), 3600);
        assert_eq!(retry_delay_secs(0), 5);
    }
}

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: crate::aws::LazyClient<aws_sdk_sqs::Client>,
    url: String,
}

impl SqsQueue {
    pub fn new(client: impl Into<crate::aws::LazyClient<aws_sdk_sqs::Client>>, url: impl Into<String>) -> Self {
        SqsQueue {
            client: client.into(),
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl MediaJobQueue for SqsQueue {
    async fn enqueue_media(&self, job: &MediaJob) -> Result<(), EnqueueError> {
        self.send_job(job, Duration::ZERO).await
    }
}
