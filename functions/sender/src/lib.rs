//! The sender: takes queued messages from SQS, re-checks the sending rules (state may have
//! changed while a message waited), paces per phone number and per recipient, calls the Graph
//! API, and records the outcome.
//!
//! Never a duplicate send: a message is sent only under a lease taken with a conditional write
//! on its `queued` status (a second delivery of the same job finds the lease or a later
//! status). Retries go back to the queue with a delay (partial batch response plus
//! `ChangeMessageVisibility`); a message that exhausts its retries is marked `failed` and its
//! record lands in the dead-letter queue. Throughput is bounded by a per-number send schedule
//! shared by every concurrent sender through DynamoDB: a batch books consecutive slots spaced
//! at the configured rate and sends each message when its slot is due.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

use crm_shared::graph::{GraphCallError, MessageSender};
use crm_shared::jobs::{RetryScheduler, SendJob, send_retry_delay_secs};
use crm_shared::message::{MessageError, MessageRecord, MessageStatus};
use crm_shared::secret::Secret;
use crm_shared::sending::{self, Category, SendFailure, SendSchedule, SlotDecision, SlotGrant};
use crm_shared::store::{ContactStore, MessageStore, OutboundStore, SendPacingStore, StoreError, TenantStore};
use crm_shared::tenant::{Tenant, TenantStatus};

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The queue's `maxReceiveCount`: the receive on which a failure is final.
    pub max_receives: u32,
    /// Messages per second per phone number.
    pub rate_per_second: u32,
    /// How long a sender holds a message it is sending.
    pub lease_ms: i64,
    /// How far ahead send slots are booked, and so how long a batch may wait for its slots
    /// before handing its messages back to the queue.
    pub max_slot_wait: Duration,
    /// Tenant records are cached this long (token flags apply within it).
    pub tenant_ttl: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            max_receives: 8,
            rate_per_second: 80,
            lease_ms: 120_000,
            max_slot_wait: Duration::from_secs(10),
            tenant_ttl: Duration::from_secs(30),
        }
    }
}

/// Storage the sender needs.
pub trait SenderStore: OutboundStore + SendPacingStore + MessageStore + ContactStore + TenantStore {}
impl<T: OutboundStore + SendPacingStore + MessageStore + ContactStore + TenantStore> SenderStore for T {}

pub struct Deps<S, G, R> {
    pub store: S,
    pub graph: G,
    pub retry: R,
    pub config: SenderConfig,
    tenants: Mutex<HashMap<String, (Tenant, Secret, Instant)>>,
}

impl<S: SenderStore, G: MessageSender, R: RetryScheduler> Deps<S, G, R> {
    pub fn new(store: S, graph: G, retry: R, config: SenderConfig) -> Self {
        Deps {
            store,
            graph,
            retry,
            config,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant and its token, cached briefly across invocations.
    async fn tenant(&self, tenant_id: &str) -> Result<Option<(Tenant, Secret)>, StoreError> {
        if let Some((tenant, token, at)) = self.tenants.lock().expect("tenant cache").get(tenant_id)
            && at.elapsed() < self.config.tenant_ttl
        {
            return Ok(Some((tenant.clone(), token.clone())));
        }
        let Some(tenant) = self.store.get_tenant(tenant_id).await? else {
            return Ok(None);
        };
        let Some(token) = self.store.graph_token(tenant_id).await? else {
            return Ok(None);
        };
        self.tenants
            .lock()
            .expect("tenant cache")
            .insert(tenant_id.to_owned(), (tenant.clone(), token.clone(), Instant::now()));
        Ok(Some((tenant, token)))
    }
}

impl<S, G, R> Deps<S, G, R> {
    fn forget_tenant(&self, tenant_id: &str) {
        self.tenants.lock().expect("tenant cache").remove(tenant_id);
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done with (sent, refused, failed for good, or nothing to do).
    Done,
    /// Hand back to the queue; deliver again after this many seconds.
    RetryAfter(i32),
    /// Final failure after the last allowed receive: the record goes to the DLQ.
    DeadLetter,
}

/// A claimed message ready for the Graph call.
struct Ready {
    record_index: usize,
    message: MessageRecord,
    tenant: Tenant,
    token: Secret,
    to: Value,
}

pub async fn handle<S: SenderStore, G: MessageSender, R: RetryScheduler>(
    deps: &Deps<S, G, R>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let records = &event.payload.records;
    let outcomes = process_batch(deps, records).await;
    let mut response = SqsBatchResponse::default();
    for (record, outcome) in records.iter().zip(outcomes) {
        match outcome {
            Outcome::Done => {}
            Outcome::RetryAfter(secs) => {
                if let Some(handle) = &record.receipt_handle
                    && let Err(e) = deps.retry.retry_after(handle, secs).await
                {
                    tracing::warn!(error = %e, "could not delay the retry; the queue's visibility timeout applies");
                }
                if let Some(id) = &record.message_id {
                    response.add_failure(id.clone());
                }
            }
            Outcome::DeadLetter => {
                if let Some(id) = &record.message_id {
                    response.add_failure(id.clone());
                }
            }
        }
    }
    Ok(response)
}

fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Runs a batch: prepare every record concurrently, take send slots per phone number, send
/// concurrently, record outcomes.
pub async fn process_batch<S: SenderStore, G: MessageSender, R: RetryScheduler>(
    deps: &Deps<S, G, R>,
    records: &[SqsMessage],
) -> Vec<Outcome> {
    let mut outcomes = vec![Outcome::Done; records.len()];
    let prepared = futures::future::join_all(records.iter().enumerate().map(|(i, r)| prepare(deps, i, r))).await;
    let mut ready: Vec<Ready> = Vec::new();
    for (i, p) in prepared.into_iter().enumerate() {
        match p {
            Ok(Some(r)) => ready.push(r),
            Ok(None) => outcomes[i] = Outcome::Done,
            Err(o) => outcomes[i] = o,
        }
    }
    // Send slots, per phone number, for the whole batch at once.
    let mut by_number: HashMap<(String, String), Vec<Ready>> = HashMap::new();
    for r in ready {
        by_number
            .entry((r.tenant.tenant_id.clone(), r.tenant.phone_number_id.clone()))
            .or_default()
            .push(r);
    }
    let mut sendable: Vec<(Ready, i64)> = Vec::new();
    for ((tenant_id, number), group) in by_number {
        match take_slots(deps, &tenant_id, &number, group.len() as u32).await {
            Some(grant) => sendable.extend(group.into_iter().zip(0..).map(|(r, i)| (r, grant.due_us(i)))),
            None => {
                for r in group {
                    // No slot in time: give the message back untouched.
                    let _ = deps
                        .store
                        .release_claim(&r.tenant.tenant_id, &r.message.message_id)
                        .await;
                    outcomes[r.record_index] = Outcome::RetryAfter(1);
                }
            }
        }
    }
    let sent = futures::future::join_all(sendable.iter().map(|(r, due_us)| async move {
        sleep_until_us(*due_us).await;
        send_one(deps, r, receive_count(&records[r.record_index])).await
    }))
    .await;
    for ((r, _), outcome) in sendable.iter().zip(sent) {
        outcomes[r.record_index] = outcome;
    }
    outcomes
}

/// Books `count` consecutive slots on the number's shared send schedule, waiting (bounded by
/// `max_slot_wait`) while it is booked beyond its horizon. `None`: no slots in time, or the
/// schedule is unavailable (the messages go back to the queue).
async fn take_slots<S: SenderStore, G, R>(
    deps: &Deps<S, G, R>,
    tenant_id: &str,
    number: &str,
    count: u32,
) -> Option<SlotGrant> {
    let schedule = SendSchedule::new(deps.config.rate_per_second, deps.config.max_slot_wait);
    let deadline_us = Utc::now().timestamp_micros() + schedule.horizon_us;
    loop {
        let now_us = Utc::now().timestamp_micros();
        match deps
            .store
            .take_send_slots(tenant_id, number, now_us, count, schedule)
            .await
        {
            Ok(SlotDecision::Grant { grant, .. }) => return Some(grant),
            Ok(SlotDecision::Full { retry_at_us }) if retry_at_us <= deadline_us => sleep_until_us(retry_at_us).await,
            Ok(SlotDecision::Full { .. }) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "send schedule unavailable");
                return None;
            }
        }
    }
}

/// Sleeps until the wall-clock time `at_us` (µs since the epoch): slots are shared across
/// machines, so they are wall-clock times.
async fn sleep_until_us(at_us: i64) {
    let wait_us = at_us - Utc::now().timestamp_micros();
    if wait_us > 0 {
        tokio::time::sleep(Duration::from_micros(wait_us as u64)).await;
    }
}

fn retry_or_dead(deps_max: u32, attempt: u32) -> Outcome {
    if attempt >= deps_max {
        Outcome::DeadLetter
    } else {
        Outcome::RetryAfter(send_retry_delay_secs(attempt))
    }
}

/// Claims the message, re-checks everything that may have changed, and returns it ready to
/// send (`Ok(None)`: nothing to send).
async fn prepare<S: SenderStore, G: MessageSender, R: RetryScheduler>(
    deps: &Deps<S, G, R>,
    index: usize,
    record: &SqsMessage,
) -> Result<Option<Ready>, Outcome> {
    let attempt = receive_count(record);
    let Some(job) = record
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<SendJob>(b).ok())
    else {
        tracing::error!("send job body is not a SendJob");
        return Err(Outcome::DeadLetter);
    };
    let store_failure = |e: StoreError| {
        tracing::warn!(error = %e, "storage failure while preparing a send");
        retry_or_dead(deps.config.max_receives, attempt)
    };
    let now = Utc::now();
    let message = match deps
        .store
        .claim_for_send(&job.tenant_id, &job.message_id, now, deps.config.lease_ms)
        .await
        .map_err(store_failure)?
    {
        Some(m) => m,
        None => {
            // Not queued any more (sent, failed, erased), or another sender holds it.
            return match deps
                .store
                .get_message(&job.tenant_id, &job.message_id)
                .await
                .map_err(store_failure)?
            {
                Some(m) if m.status == MessageStatus::Queued => Err(Outcome::RetryAfter(5)),
                _ => Ok(None),
            };
        }
    };
    let fail = |status: MessageStatus, code: i64, title: &str, detail: &str| {
        let error = MessageError {
            code,
            title: Some(title.to_owned()),
            detail: Some(detail.to_owned()),
        };
        let (tenant_id, message_id) = (job.tenant_id.clone(), job.message_id.clone());
        async move {
            deps.store
                .finish_unsent(&tenant_id, &message_id, status, &error, Utc::now())
                .await
        }
    };
    let release = || deps.store.release_claim(&job.tenant_id, &job.message_id);

    let (tenant, token) = match deps.tenant(&job.tenant_id).await.map_err(store_failure)? {
        Some(t) if t.0.status == TenantStatus::Active => t,
        _ => {
            fail(
                MessageStatus::Failed,
                0,
                "tenant_disabled",
                "the tenant is disabled or has no access token",
            )
            .await
            .map_err(store_failure)?;
            return Ok(None);
        }
    };
    if tenant.token_invalid {
        // Sending for this tenant is paused until an operator replaces the token; the message
        // waits in the queue (and fails for good if that takes longer than its retries).
        let _ = release().await;
        if attempt >= deps.config.max_receives {
            fail(
                MessageStatus::Failed,
                190,
                "token_invalid",
                "the tenant's access token was rejected by Meta",
            )
            .await
            .map_err(store_failure)?;
            return Err(Outcome::DeadLetter);
        }
        return Err(Outcome::RetryAfter(send_retry_delay_secs(attempt).max(60)));
    }
    let Some(contact) = deps
        .store
        .get_contact(&job.tenant_id, &message.contact_id)
        .await
        .map_err(store_failure)?
    else {
        fail(
            MessageStatus::Rejected,
            0,
            "contact_erased",
            "the contact no longer exists",
        )
        .await
        .map_err(store_failure)?;
        return Ok(None);
    };
    let category = message
        .category
        .unwrap_or_else(|| Category::default_for(&message.message_type));
    if let Err(refusal) = sending::check_rules(&contact, &message.message_type, category, now) {
        fail(MessageStatus::Rejected, 0, refusal.code(), refusal.message())
            .await
            .map_err(store_failure)?;
        return Ok(None);
    }
    let to = match (&contact.phone, &contact.user_id) {
        (Some(phone), _) => json!({"to": phone.trim_start_matches('+')}),
        (None, Some(user_id)) => json!({"recipient": user_id}),
        (None, None) => {
            fail(
                MessageStatus::Rejected,
                0,
                "no_recipient",
                "the contact has no phone number or user id",
            )
            .await
            .map_err(store_failure)?;
            return Ok(None);
        }
    };
    // Meta's pair rate: one message per recipient every few seconds.
    if !deps
        .store
        .claim_recipient(&job.tenant_id, &contact.contact_id, now, sending::PAIR_INTERVAL_MS)
        .await
        .map_err(store_failure)?
    {
        let _ = release().await;
        return Err(Outcome::RetryAfter((sending::PAIR_INTERVAL_MS / 1000) as i32));
    }
    Ok(Some(Ready {
        record_index: index,
        message,
        tenant,
        token,
        to,
    }))
}

/// The Graph send API payload for a stored outbound message.
pub fn graph_payload(message: &MessageRecord, to: &Value) -> Value {
    let mut payload = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "type": message.message_type,
        "biz_opaque_callback_data": message.message_id,
    });
    if let (Some(obj), Some(to)) = (payload.as_object_mut(), to.as_object()) {
        obj.extend(to.clone());
    }
    payload[message.message_type.as_str()] = message.content.clone();
    if let Some(wamid) = &message.context_wamid {
        payload["context"] = json!({ "message_id": wamid });
    }
    payload
}

async fn send_one<S: SenderStore, G: MessageSender, R: RetryScheduler>(
    deps: &Deps<S, G, R>,
    ready: &Ready,
    attempt: u32,
) -> Outcome {
    let m = &ready.message;
    let payload = graph_payload(m, &ready.to);
    match deps
        .graph
        .send_message(&ready.tenant.phone_number_id, &ready.token, &payload)
        .await
    {
        Ok(wamid) => {
            // Meta has the message: recording it must not fail into a resend. Retry the write
            // in place; the lease keeps other senders off meanwhile.
            for delay_ms in [0u64, 100, 400, 1600] {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                match deps
                    .store
                    .mark_sent(&m.tenant_id, &m.message_id, &m.contact_id, &wamid, Utc::now())
                    .await
                {
                    Ok(()) => return Outcome::Done,
                    Err(e) => {
                        tracing::warn!(error = %e, message_id = %m.message_id, "could not record a sent message; retrying")
                    }
                }
            }
            tracing::error!(message_id = %m.message_id, "message sent but not recorded; its lease keeps it from being resent until it expires");
            Outcome::Done
        }
        Err(err) => on_send_error(deps, ready, attempt, err).await,
    }
}

async fn on_send_error<S: SenderStore, G, R>(
    deps: &Deps<S, G, R>,
    ready: &Ready,
    attempt: u32,
    err: GraphCallError,
) -> Outcome {
    let m = &ready.message;
    let (status, code, title, details) = match &err {
        GraphCallError::Api {
            status,
            code,
            message,
            details,
        } => (Some(*status), *code, message.clone(), details.clone()),
        GraphCallError::Transport(reason) => (None, None, reason.clone(), None),
        GraphCallError::TooLarge => (Some(413), None, err.to_string(), None),
    };
    let error = MessageError {
        code: code.unwrap_or(status.map(i64::from).unwrap_or(0)),
        title: Some(title),
        detail: details,
    };
    let class = sending::classify_send_error(status, code);
    tracing::warn!(message_id = %m.message_id, ?code, ?status, ?class, attempt, "Graph send failed");
    let release = || async {
        if let Err(e) = deps.store.release_claim(&m.tenant_id, &m.message_id).await {
            tracing::warn!(error = %e, "could not release a send lease; it expires on its own");
        }
    };
    let finish = |error: MessageError| async move {
        match deps
            .store
            .finish_unsent(&m.tenant_id, &m.message_id, MessageStatus::Failed, &error, Utc::now())
            .await
        {
            Ok(()) => Outcome::Done,
            Err(e) => {
                tracing::error!(error = %e, "could not record a failed send");
                Outcome::RetryAfter(send_retry_delay_secs(attempt))
            }
        }
    };
    match class {
        SendFailure::Fail => finish(error).await,
        SendFailure::TokenInvalid => {
            if let Err(e) = deps.store.set_token_invalid(&m.tenant_id, true).await {
                tracing::error!(error = %e, "could not flag the tenant's token");
            }
            deps.forget_tenant(&m.tenant_id);
            finish(error).await
        }
        SendFailure::Retry | SendFailure::RetryPairRate if attempt >= deps.config.max_receives => {
            finish(error).await;
            Outcome::DeadLetter
        }
        SendFailure::Retry => {
            release().await;
            Outcome::RetryAfter(send_retry_delay_secs(attempt))
        }
        SendFailure::RetryPairRate => {
            release().await;
            Outcome::RetryAfter((sending::PAIR_INTERVAL_MS / 1000) as i32 + 1)
        }
    }
}
