//! The media dead-letter queue's consumer: a media job that reached it (its retries ran out,
//! or the worker died or timed out on its last receive before it could record anything) marks
//! its message's media `failed` if it is still `pending`, so no media stays `pending` forever.
//! A reason the worker recorded stands, and media stored meanwhile (a duplicate job that
//! succeeded) is never downgraded.
//!
//! It runs as its own function (`MediaDeadLetterFunction`): small, with nothing to download, so
//! whatever took the worker down cannot take it down too, and its role can only read and mark
//! messages. A record it cannot mark (the table unreachable) is reported failed and comes back
//! after the dead-letter queue's visibility timeout; the queue's depth alarm sees it.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Error, LambdaEvent};

use crm_shared::jobs::{MediaJob, partial_batch_response, receive_count};
use crm_shared::store::MessageStore;

use crate::mark_failed;

/// The reason recorded on media marked failed here.
pub const RETRIES_EXHAUSTED: &str = "media could not be fetched before its retries ran out";

pub struct DeadLetterDeps<S> {
    pub store: S,
}

pub async fn handle_dead_letters<S: MessageStore>(
    deps: &DeadLetterDeps<S>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let records = &event.payload.records;
    let outcomes = futures::future::join_all(records.iter().map(|r| process_dead_letter(deps, r))).await;
    Ok(partial_batch_response(records, outcomes))
}

/// `true` when the record is done with.
#[tracing::instrument(skip_all, fields(sqs_message_id = record.message_id.as_deref().unwrap_or("")))]
async fn process_dead_letter<S: MessageStore>(deps: &DeadLetterDeps<S>, record: &SqsMessage) -> bool {
    let job: MediaJob = match record.body.as_deref().map(serde_json::from_str) {
        Some(Ok(job)) => job,
        _ => {
            // Names no message: nothing to mark, and nothing a retry could change. (Its body is
            // not logged: it is not ours to read.)
            tracing::error!("dead-lettered media job is not a MediaJob; dropped");
            return true;
        }
    };
    let done = mark_failed(&deps.store, &job, RETRIES_EXHAUSTED, true).await;
    if done {
        tracing::warn!(message_id = %job.message_id, "dead-lettered media job; media marked failed unless already settled");
    } else {
        tracing::error!(message_id = %job.message_id, attempt = receive_count(record), "could not mark dead-lettered media failed; will retry");
    }
    done
}
