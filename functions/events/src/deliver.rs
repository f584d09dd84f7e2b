//! The delivery worker: each SQS record is one [`DeliveryJob`]; records run concurrently, so a
//! slow endpoint holds only its own deliveries (each request ends within 15 s) and never those
//! of another endpoint or tenant in the same batch.
//!
//! A failed attempt is logged and its next attempt enqueued on the published schedule (jitter,
//! `Retry-After`), as a new message: the record itself is done. A job fails back to SQS (partial
//! batch response, then the dead-letter queue) only when our own storage or queue fails.

use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

use crm_shared::cache::TtlCache;
use crm_shared::events::endpoint::{DeliveryAttempt, EndpointSecrets, WebhookEndpoint};
use crm_shared::events::push::{DeliveryJob, Pusher};
use crm_shared::events::schedule::{Verdict, next_delay, should_disable};
use crm_shared::events::{Event, EventType};
use crm_shared::jobs::{JobQueue, partial_batch_response};
use crm_shared::store::{EndpointOutcome, EventStore, MessageStore, StoreError, WebhookStore};

/// How long this instance trusts an endpoint's settings and secrets (a rotation, a disable or
/// a deletion applies within it).
pub const ENDPOINT_TTL: Duration = Duration::from_secs(5);

/// Events sent per recover job before it hands the rest to the next one.
const RECOVER_PAGE: i32 = 100;

/// SQS's longest delay.
const MAX_DELAY: Duration = Duration::from_secs(900);

/// Jobs of one batch running at once.
const CONCURRENCY: usize = 10;

pub struct Deps<S, Q> {
    pub store: S,
    /// The delivery queue (retries and recover pages).
    pub queue: Q,
    pub pusher: Pusher,
    pub endpoints: TtlCache<(String, String), Option<(WebhookEndpoint, EndpointSecrets)>>,
}

impl<S, Q> Deps<S, Q> {
    pub fn new(store: S, queue: Q, pusher: Pusher) -> Self {
        Deps {
            store,
            queue,
            pusher,
            endpoints: TtlCache::new(10_000, ENDPOINT_TTL),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(String),
}

pub trait DeliveryStore: EventStore + WebhookStore + MessageStore {}
impl<T: EventStore + WebhookStore + MessageStore> DeliveryStore for T {}

pub async fn handle<S: DeliveryStore, Q: JobQueue>(
    deps: &Deps<S, Q>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    use futures::StreamExt;
    let records = &event.payload.records;
    // Collected first: a stream over a mapping closure would not be `Send` for every lifetime
    // (the handler runs on spawned tasks locally).
    let jobs: Vec<_> = records.iter().map(|r| run_record(deps, r)).collect();
    let done: Vec<bool> = futures::stream::iter(jobs).buffered(CONCURRENCY).collect().await;
    Ok(partial_batch_response(records, done))
}

async fn run_record<S: DeliveryStore, Q: JobQueue>(deps: &Deps<S, Q>, record: &SqsMessage) -> bool {
    let Some(job) = record
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<DeliveryJob>(b).ok())
    else {
        tracing::error!("malformed delivery job dropped");
        return true;
    };
    match run_job(deps, &job, Utc::now()).await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(error = %err, "delivery job failed; SQS retries it");
            false
        }
    }
}

pub async fn run_job<S: DeliveryStore, Q: JobQueue>(
    deps: &Deps<S, Q>,
    job: &DeliveryJob,
    now: DateTime<Utc>,
) -> Result<(), DeliveryError> {
    match job {
        DeliveryJob::Event {
            not_before: Some(due), ..
        } if *due > now => {
            // A long retry delay waits in hops of at most 15 minutes.
            let wait = (*due - now).to_std().unwrap_or_default().min(MAX_DELAY);
            enqueue(deps, job, wait).await
        }
        DeliveryJob::Event {
            tenant_id,
            endpoint_id,
            seq,
            attempt,
            event,
            ..
        } => {
            let target = Target {
                tenant_id,
                endpoint_id,
                seq: *seq,
            };
            deliver_event(deps, &target, event.as_deref(), *attempt, now).await
        }
        DeliveryJob::Recover {
            tenant_id,
            endpoint_id,
            from_seq,
            until_seq,
        } => recover_page(deps, tenant_id, endpoint_id, *from_seq, *until_seq, now).await,
    }
}

async fn enqueue<S, Q: JobQueue>(deps: &Deps<S, Q>, job: &DeliveryJob, delay: Duration) -> Result<(), DeliveryError> {
    deps.queue
        .send_job(job, delay.min(MAX_DELAY))
        .await
        .map_err(|e| DeliveryError::Queue(e.0))
}

async fn endpoint<S: DeliveryStore, Q>(
    deps: &Deps<S, Q>,
    tenant_id: &str,
    endpoint_id: &str,
) -> Result<Option<(WebhookEndpoint, EndpointSecrets)>, StoreError> {
    let key = (tenant_id.to_owned(), endpoint_id.to_owned());
    if let Some(cached) = deps.endpoints.get(&key) {
        return Ok(cached);
    }
    let found = match deps.store.get_endpoint(tenant_id, endpoint_id).await? {
        Some(ep) => deps
            .store
            .endpoint_secrets(tenant_id, endpoint_id)
            .await?
            .map(|s| (ep, s)),
        None => None,
    };
    deps.endpoints.insert(key, found.clone());
    Ok(found)
}

/// The webhook body of `event` for `endpoint`: the event's public form, with the inbound
/// message's type and content added when the endpoint opted into bodies.
async fn body_for<S: DeliveryStore>(store: &S, event: &Event, endpoint: &WebhookEndpoint) -> Result<Value, StoreError> {
    let mut body = event.view();
    if endpoint.include_bodies && event.event_type.carries_message() {
        let message_id = event.data["message_id"].as_str().unwrap_or_default();
        if let Some(m) = store.get_message(&event.tenant_id, message_id).await? {
            body["data"]["message"] = json!({"type": m.message_type, "content": m.content});
        }
    }
    Ok(body)
}

/// Which event goes where.
struct Target<'a> {
    tenant_id: &'a str,
    endpoint_id: &'a str,
    seq: u64,
}

/// One attempt of one event to one endpoint: `carried` is the event when the job holds it
/// (else it is read from the log).
async fn deliver_event<S: DeliveryStore, Q: JobQueue>(
    deps: &Deps<S, Q>,
    target: &Target<'_>,
    carried: Option<&Event>,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<(), DeliveryError> {
    let Target {
        tenant_id,
        endpoint_id,
        seq,
    } = *target;
    let Some((endpoint, secrets)) = endpoint(deps, tenant_id, endpoint_id).await? else {
        return Ok(()); // deleted: nothing to deliver to
    };
    if !endpoint.enabled {
        return Ok(()); // disabled: `…/recover` re-sends what it missed
    }
    // A carried event must be the one the job names (the tenant's, at that position).
    let event = match carried.filter(|e| e.tenant_id == tenant_id && e.seq == seq) {
        Some(event) => event.clone(),
        None => match deps.store.event_at(tenant_id, seq).await? {
            Some(event) => event,
            None => return Ok(()), // past the log's retention
        },
    };
    let body = serde_json::to_vec(&body_for(&deps.store, &event, &endpoint).await?).expect("JSON serializes");
    let result = deps
        .pusher
        .push(&endpoint.url, &event.id, &body, &secrets.signing(now), now)
        .await;
    let mut logged = DeliveryAttempt {
        // Monotonic within the process: two attempts in one millisecond still list newest first.
        attempt_id: crm_shared::ids::new_id(),
        tenant_id: tenant_id.to_owned(),
        endpoint_id: endpoint_id.to_owned(),
        event_id: event.id.clone(),
        event_type: event.event_type,
        attempt,
        at: now,
        status_code: result.status_code,
        latency_ms: result.latency_ms,
        success: result.verdict == Verdict::Delivered,
        error: result.error.clone(),
        next_attempt_at: None,
    };
    match result.verdict {
        Verdict::Delivered => {
            if endpoint.failing_since.is_some() {
                deps.store
                    .endpoint_outcome(tenant_id, endpoint_id, &EndpointOutcome::Succeeded)
                    .await?;
            }
        }
        Verdict::Gone => disable(deps, &endpoint, "gone").await?,
        Verdict::Failed { retry_after_secs } => {
            if should_disable(endpoint.failing_since, now) {
                disable(deps, &endpoint, "failing").await?;
            } else {
                if endpoint.failing_since.is_none() {
                    deps.store
                        .endpoint_outcome(tenant_id, endpoint_id, &EndpointOutcome::Failed(now))
                        .await?;
                }
                if let Some(delay) = next_delay(attempt, retry_after_secs) {
                    let due = now + chrono::TimeDelta::from_std(delay).unwrap_or_default();
                    logged.next_attempt_at = Some(due);
                    let retry = DeliveryJob::Event {
                        tenant_id: tenant_id.to_owned(),
                        endpoint_id: endpoint_id.to_owned(),
                        seq,
                        attempt: attempt + 1,
                        not_before: Some(due),
                        event: Some(Box::new(event.clone())),
                    };
                    enqueue(deps, &retry, delay).await?;
                }
            }
        }
    }
    deps.store.record_delivery(&logged).await?;
    tracing::info!(attempt, status = ?result.status_code, latency_ms = result.latency_ms, success = logged.success, "delivery attempt");
    Ok(())
}

/// Disables the endpoint (the change makes an `endpoint.disabled` event through the stream).
async fn disable<S: DeliveryStore, Q>(
    deps: &Deps<S, Q>,
    endpoint: &WebhookEndpoint,
    reason: &str,
) -> Result<(), StoreError> {
    deps.store
        .endpoint_outcome(
            &endpoint.tenant_id,
            &endpoint.endpoint_id,
            &EndpointOutcome::Disable(reason.into()),
        )
        .await?;
    deps.endpoints
        .remove(&(endpoint.tenant_id.clone(), endpoint.endpoint_id.clone()));
    tracing::warn!(reason, "webhook endpoint disabled");
    Ok(())
}

/// One page of a recovery: the endpoint's events from `from_seq` on, each as a first attempt,
/// then the rest as the next job.
async fn recover_page<S: DeliveryStore, Q: JobQueue>(
    deps: &Deps<S, Q>,
    tenant_id: &str,
    endpoint_id: &str,
    from_seq: u64,
    until_seq: u64,
    now: DateTime<Utc>,
) -> Result<(), DeliveryError> {
    let Some((endpoint, _)) = endpoint(deps, tenant_id, endpoint_id).await? else {
        return Ok(());
    };
    let events = deps
        .store
        .events_after(tenant_id, from_seq.saturating_sub(1), RECOVER_PAGE, now)
        .await?;
    let mut last = from_seq.saturating_sub(1);
    for event in events.iter().filter(|e| e.seq <= until_seq) {
        last = event.seq;
        if endpoint.wants(event.event_type) && event.event_type != EventType::EndpointTest {
            let target = Target {
                tenant_id,
                endpoint_id,
                seq: event.seq,
            };
            deliver_event(deps, &target, Some(event), 1, now).await?;
        }
    }
    if events.len() == RECOVER_PAGE as usize && last < until_seq {
        let next = DeliveryJob::Recover {
            tenant_id: tenant_id.to_owned(),
            endpoint_id: endpoint_id.to_owned(),
            from_seq: last + 1,
            until_seq,
        };
        enqueue(deps, &next, Duration::ZERO).await?;
    }
    Ok(())
}
