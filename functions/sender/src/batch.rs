//! One SQS batch: prepare every record concurrently, book send slots per phone number for the
//! whole batch at once, send each message when its slot is due, and turn the outcomes into the
//! partial batch response. A record to try again later goes back to the queue as a new,
//! delayed job (so waiting never uses up the queue's receives); only if that enqueue fails does
//! the record itself stay on the queue, with its visibility pushed out.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Error, LambdaEvent};

use crm_shared::graph::MessageSender;
use crm_shared::jobs::{RetryScheduler, SendJob, SendJobQueue, partial_batch_response};

use crate::outcome::{Outcome, wait};
use crate::prepare::{Ready, job_of, prepare};
use crate::send::send_one;
use crate::slots::{sleep_until_us, take_slots};
use crate::{Deps, SenderStore};

pub async fn handle<S: SenderStore, G: MessageSender, R: RetryScheduler + SendJobQueue>(
    deps: &Deps<S, G, R>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let records = &event.payload.records;
    let outcomes = process_batch(deps, records).await;
    let mut done = Vec::with_capacity(records.len());
    for (record, outcome) in records.iter().zip(outcomes) {
        done.push(match outcome {
            Outcome::Done => true,
            Outcome::Requeue { delay_secs, failures } => requeue(deps, record, delay_secs, failures).await,
            Outcome::DeadLetter => false,
        });
    }
    Ok(partial_batch_response(records, done))
}

/// Hands the record's job back to the queue as a new message delivered after `delay_secs`;
/// `true` when that worked (the record is then done with).
async fn requeue<S, G, R: RetryScheduler + SendJobQueue>(
    deps: &Deps<S, G, R>,
    record: &SqsMessage,
    delay_secs: u32,
    failures: u32,
) -> bool {
    let Some(job) = job_of(record) else { return false };
    let job = SendJob { failures, ..job };
    match deps
        .retry
        .enqueue_send_after(&job, Duration::from_secs(u64::from(delay_secs)))
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not hand a send back to the queue; the record stays on it");
            if let Some(handle) = &record.receipt_handle
                && let Err(e) = deps.retry.retry_after(handle, delay_secs as i32).await
            {
                tracing::warn!(error = %e, "could not delay the retry; the queue's visibility timeout applies");
            }
            false
        }
    }
}

/// Runs a batch: prepare every record concurrently, take send slots per phone number, send
/// concurrently, record outcomes.
pub async fn process_batch<S: SenderStore, G: MessageSender, R: RetryScheduler + SendJobQueue>(
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
                    // No slot in time: give the message back untouched, in its place in line.
                    let m = &r.message;
                    let _ = deps.store.release_claim(&m.tenant_id, &m.message_id).await;
                    let _ = deps
                        .store
                        .return_to_recipient(&m.tenant_id, &m.contact_id, &m.message_id)
                        .await;
                    outcomes[r.record_index] = wait(1, r.job.failures);
                }
            }
        }
    }
    let sent = futures::future::join_all(sendable.iter().map(|(r, due_us)| async move {
        sleep_until_us(*due_us).await;
        send_one(deps, r).await
    }))
    .await;
    for ((r, _), outcome) in sendable.iter().zip(sent) {
        outcomes[r.record_index] = outcome;
    }
    outcomes
}
