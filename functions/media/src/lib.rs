//! Media worker: for each queued inbound media item, ask the Graph API for its short-lived
//! URL, stream it with the tenant's token into S3 under the tenant and contact (hashing as it
//! goes, see [`transfer`]), check its size and SHA-256, and mark the message's media available.
//!
//! Memory: the jobs of a batch run concurrently, but the bytes they buffer come from one
//! [`PartBudget`] (48 MiB by default), so a batch of ten 100 MB documents holds no more than a
//! batch of ten thumbnails' worth of parts at a time: big media never takes the worker (and the
//! other jobs of its batch) down.
//!
//! Retries: a retryable failure reports the record as failed (partial batch response) and
//! pushes its next delivery out with backoff (5 s, 1 min, 12 min, then hourly); on the last
//! allowed receive the message is marked `failed` before the record goes to the dead-letter
//! queue. Failures that cannot improve (media expired or unknown, too large, a media id that
//! is not digits, a download URL that is not `https` on Meta's media hosts) are marked at once
//! and not retried. A transfer still running a few seconds before the invocation's deadline is
//! stopped and retried, so a slow download never times the whole batch out. Whatever still
//! reaches the dead-letter queue with its media `pending` (a worker that died, a last attempt
//! that never answered) is marked `failed` there by [`dead_letter`].

use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Error, LambdaEvent};
use tokio::time::Instant;

use crm_shared::blob::{BlobStore, media_key};
use crm_shared::graph::{GraphCallError, GraphErrorClass, MAX_MEDIA_BYTES, MediaSource};
use crm_shared::jobs::{MediaJob, RetryScheduler, partial_batch_response, receive_count, retry_delay_secs};
use crm_shared::media_url::{MediaHosts, is_media_id};
use crm_shared::message::{MediaRef, MediaStatus};
use crm_shared::store::{MessageStore, StoreError, TenantStore};

pub mod dead_letter;
pub mod transfer;

pub use transfer::PartBudget;
use transfer::{Announced, TransferError, transfer};

#[cfg(test)]
mod tests;

/// How long before the invocation's deadline running transfers are stopped: time to abort
/// their uploads, record the outcome and answer with the batch's failures.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

pub struct Deps<S, G, B, R> {
    pub store: S,
    pub graph: G,
    pub blobs: B,
    pub retry: R,
    /// The queue's `maxReceiveCount`: the receive on which a failure is final.
    pub max_receives: u32,
    /// Where media may be downloaded from (Meta's media hosts over https in production).
    pub media_hosts: MediaHosts,
    /// The part size and the bytes all running transfers may buffer at once.
    pub buffers: PartBudget,
}

/// Storage the worker needs.
pub trait WorkerStore: MessageStore + TenantStore {}
impl<T: MessageStore + TenantStore> WorkerStore for T {}

#[derive(Debug, thiserror::Error)]
enum Failure {
    /// May succeed on a later delivery.
    #[error("{0}")]
    Retry(String),
    /// Will not succeed; recorded on the message.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Retry(e.to_string())
    }
}

impl From<TransferError> for Failure {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Download(e) => e.into(),
            TransferError::Store(e) => Failure::Retry(e.to_string()),
            e @ (TransferError::SizeMismatch | TransferError::ChecksumMismatch | TransferError::OutOfTime) => {
                Failure::Retry(e.to_string())
            }
        }
    }
}

impl From<GraphCallError> for Failure {
    fn from(e: GraphCallError) -> Self {
        match e.class() {
            GraphErrorClass::Permanent => Failure::Permanent(e.to_string()),
            // A rejected token is worth another try too: an operator may replace it well
            // within the 7 days a media id lives.
            GraphErrorClass::Transient
            | GraphErrorClass::PairRateLimit
            | GraphErrorClass::TokenInvalid
            | GraphErrorClass::OutcomeUnknown => Failure::Retry(e.to_string()),
        }
    }
}

pub async fn handle<S: WorkerStore, G: MediaSource, B: BlobStore, R: RetryScheduler>(
    deps: &Deps<S, G, B, R>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let deadline = transfer_deadline(&event.context);
    let records = &event.payload.records;
    let outcomes = futures::future::join_all(records.iter().map(|r| process_record(deps, r, deadline))).await;
    Ok(partial_batch_response(records, outcomes))
}

/// When running transfers must stop: [`DEADLINE_MARGIN`] before the invocation's deadline
/// (none when the context carries none, as in tests).
fn transfer_deadline(context: &lambda_runtime::Context) -> Option<Instant> {
    if context.deadline == 0 {
        return None;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left = Duration::from_millis(context.deadline.saturating_sub(now_ms));
    Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN))
}

/// `true` when the record is done with (success or a recorded permanent failure).
#[tracing::instrument(skip_all, fields(sqs_message_id = record.message_id.as_deref().unwrap_or("")))]
async fn process_record<S: WorkerStore, G: MediaSource, B: BlobStore, R: RetryScheduler>(
    deps: &Deps<S, G, B, R>,
    record: &SqsMessage,
    deadline: Option<Instant>,
) -> bool {
    let job: MediaJob = match record.body.as_deref().map(serde_json::from_str) {
        Some(Ok(job)) => job,
        _ => {
            // Cannot ever succeed; failing it sends it to the DLQ for inspection.
            tracing::error!("media job body is not a MediaJob");
            return false;
        }
    };
    let attempt = receive_count(record);
    match fetch(deps, &job, deadline).await {
        Ok(()) => true,
        Err(Failure::Permanent(reason)) => {
            tracing::warn!(message_id = %job.message_id, %reason, "media cannot be fetched; marked failed");
            mark_failed(&deps.store, &job, &reason, false).await
        }
        Err(Failure::Retry(reason)) if attempt >= deps.max_receives => {
            tracing::error!(message_id = %job.message_id, attempt, %reason, "media fetch failed on the last attempt; marked failed, record goes to the DLQ");
            mark_failed(&deps.store, &job, &reason, false).await;
            false
        }
        Err(Failure::Retry(reason)) => {
            let delay = retry_delay_secs(attempt);
            tracing::warn!(message_id = %job.message_id, attempt, delay, %reason, "media fetch failed; will retry");
            if let Some(handle) = &record.receipt_handle
                && let Err(e) = deps.retry.retry_after(handle, delay).await
            {
                tracing::warn!(error = %e, "could not delay the retry; the queue's visibility timeout applies");
            }
            false
        }
    }
}

async fn fetch<S: WorkerStore, G: MediaSource, B: BlobStore, R: RetryScheduler>(
    deps: &Deps<S, G, B, R>,
    job: &MediaJob,
    deadline: Option<Instant>,
) -> Result<(), Failure> {
    let Some(message) = deps.store.get_message(&job.tenant_id, &job.message_id).await? else {
        // Erased (or never stored): nothing to fetch.
        return Ok(());
    };
    let Some(media) = message.media.clone() else {
        return Ok(());
    };
    // Stored already, or stored and since removed by retention: nothing to fetch.
    if matches!(media.status, MediaStatus::Available | MediaStatus::Expired) {
        return Ok(());
    }
    // The id goes into a Graph API path: digits only, or the request is not the one we mean.
    if !is_media_id(&media.media_id) {
        return Err(Failure::Permanent("media id is not a Meta media id".into()));
    }
    let token = deps
        .store
        .graph_token(&job.tenant_id)
        .await?
        .ok_or_else(|| Failure::Permanent("tenant has no Graph access token".into()))?;
    let info = within(deadline, deps.graph.media_info(&media.media_id, &token)).await??;
    if info.file_size.is_some_and(|n| n > MAX_MEDIA_BYTES) {
        return Err(GraphCallError::TooLarge.into());
    }
    // The download carries the tenant's token: only to Meta's media hosts, over https. (The
    // reason names no URL: media URLs are signed.)
    deps.media_hosts
        .check(&info.url)
        .map_err(|e| Failure::Permanent(e.to_string()))?;
    let key = media_key(&message.tenant_id, &message.contact_id, &message.message_id);
    let mime = media.mime_type.clone().or(info.mime_type.clone());
    let body = within(deadline, deps.graph.download(&info.url, &token)).await??;
    let announced = Announced {
        size: info.file_size,
        checksums: [media.sha256.as_deref(), info.sha256.as_deref()]
            .into_iter()
            .flatten()
            .collect(),
    };
    let size = transfer(
        &deps.blobs,
        &deps.buffers,
        body,
        &key,
        mime.as_deref(),
        &announced,
        deadline,
    )
    .await?;
    let available = MediaRef {
        status: MediaStatus::Available,
        s3_key: Some(key.clone()),
        size: Some(size),
        mime_type: mime,
        failure: None,
        ..media
    };
    match deps
        .store
        .update_media(&message.tenant_id, &message.message_id, &available)
        .await
    {
        Ok(()) => Ok(()),
        // Erased while we downloaded: remove the object we just stored. (An erasure that is
        // still running deletes the contact's prefix again as its last step.)
        Err(StoreError::NotFound) => deps.blobs.delete(&key).await.map_err(|e| Failure::Retry(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// `call`, unless `deadline` comes first (then a retry).
async fn within<T>(deadline: Option<Instant>, call: impl Future<Output = T>) -> Result<T, Failure> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, call)
            .await
            .map_err(|_| TransferError::OutOfTime.into()),
        None => Ok(call.await),
    }
}

/// Marks the job's media `failed` with `reason`; with `only_pending`, only media still
/// `pending` (a reason recorded earlier stands). `true` when done with (also when the message
/// or its media is gone); stored media is never downgraded (the store's condition).
async fn mark_failed<S: MessageStore>(store: &S, job: &MediaJob, reason: &str, only_pending: bool) -> bool {
    let message = match store.get_message(&job.tenant_id, &job.message_id).await {
        Ok(Some(m)) => m,
        Ok(None) => return true,
        Err(e) => {
            tracing::error!(error = %e, "could not read message to mark its media failed");
            return false;
        }
    };
    let Some(media) = message.media else { return true };
    if only_pending && media.status != MediaStatus::Pending {
        return true;
    }
    let failed = MediaRef {
        status: MediaStatus::Failed,
        failure: Some(reason.to_owned()),
        ..media
    };
    match store.update_media(&job.tenant_id, &job.message_id, &failed).await {
        Ok(()) | Err(StoreError::NotFound) => true,
        Err(e) => {
            tracing::error!(error = %e, "could not mark media failed");
            false
        }
    }
}
