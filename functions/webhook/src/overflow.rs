//! The overflow queue's consumer: webhook items the HTTP function handed off (budget spent, or
//! a retryable failure), each record a minimal WhatsApp webhook payload.
//!
//! The payloads were authenticated by the HTTP function before they were queued, so their
//! signature is not checked again (they carry none). They run through the same processing as
//! a delivery, without a time budget; every write is idempotent (inbound messages by wamid,
//! statuses by wamid + status, raw events by content), so a redelivered record, or a Meta
//! redelivery racing the queue, changes nothing. A record with an item left undone is reported
//! failed (partial batch response) and comes back; after `maxReceiveCount` it is dead-lettered.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::stream::{self, StreamExt};
use lambda_runtime::{Error, LambdaEvent};

use crm_shared::jobs::{MediaJobQueue, partial_batch_response, receive_count};
use crm_shared::whatsapp::parse_payload;

use crate::{Processor, WebhookStore, process};

/// Records processed at once (each runs its own groups concurrently).
const RECORDS_IN_FLIGHT: usize = 2;

pub async fn handle_overflow<S: WebhookStore, Q: MediaJobQueue>(
    p: &Processor<S, Q>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let records = &event.payload.records;
    // By index: a closure over `&SqsMessage` would not be `Send` for every lifetime.
    let done: Vec<bool> = stream::iter(0..records.len())
        .map(|i| process_record(p, &records[i]))
        .buffered(RECORDS_IN_FLIGHT)
        .collect()
        .await;
    Ok(partial_batch_response(records, done))
}

/// `true` when every item of the record is done with.
#[tracing::instrument(skip_all, fields(sqs_message_id = record.message_id.as_deref().unwrap_or("")))]
async fn process_record<S: WebhookStore, Q: MediaJobQueue>(p: &Processor<S, Q>, record: &SqsMessage) -> bool {
    let body = record.body.as_deref().unwrap_or_default();
    let payload = match parse_payload(body.as_bytes()) {
        Ok(payload) => payload,
        Err(err) => {
            // Cannot ever succeed; failing it sends it to the DLQ for inspection.
            tracing::error!(reason = %err, "overflow record is not a webhook payload");
            return false;
        }
    };
    let outcome = process::process(p, &payload, None).await;
    let summary = &outcome.summary;
    if outcome.deferred.is_empty() {
        tracing::info!(?summary, "overflow record processed");
        true
    } else {
        tracing::warn!(
            ?summary,
            attempt = receive_count(record),
            "overflow record left items undone; it comes back"
        );
        false
    }
}
