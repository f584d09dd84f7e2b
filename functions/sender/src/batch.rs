//! One SQS batch: prepare every record concurrently, book send slots per phone number for the
//! whole batch at once, send each message when its slot is due, and turn the outcomes into the
//! partial batch response (with a delayed redelivery for each retry).

use std::collections::HashMap;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Error, LambdaEvent};

use crm_shared::graph::MessageSender;
use crm_shared::jobs::{RetryScheduler, partial_batch_response, receive_count};

use crate::outcome::Outcome;
use crate::prepare::{Ready, prepare};
use crate::send::send_one;
use crate::slots::{sleep_until_us, take_slots};
use crate::{Deps, SenderStore};

pub async fn handle<S: SenderStore, G: MessageSender, R: RetryScheduler>(
    deps: &Deps<S, G, R>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let records = &event.payload.records;
    let outcomes = process_batch(deps, records).await;
    // Delay each retry's redelivery first; the response then lists every record not done.
    for (record, outcome) in records.iter().zip(&outcomes) {
        if let Outcome::RetryAfter(secs) = outcome
            && let Some(handle) = &record.receipt_handle
            && let Err(e) = deps.retry.retry_after(handle, *secs).await
        {
            tracing::warn!(error = %e, "could not delay the retry; the queue's visibility timeout applies");
        }
    }
    let done = outcomes.iter().map(|outcome| *outcome == Outcome::Done);
    Ok(partial_batch_response(records, done))
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
            .entry((r.tenant.tenant_id.clone(), r.sending_number().to_owned()))
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
