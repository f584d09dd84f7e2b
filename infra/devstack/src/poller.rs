//! Local stand-in for Lambda's SQS event source mapping: long-polls a queue, hands batches to
//! the real queue handler as an `SqsEvent`, deletes what succeeded and leaves the reported
//! failures for redelivery (and, past `maxReceiveCount`, the dead-letter queue).

use std::future::Future;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;

/// Receives one batch (up to 10, waiting up to `wait_secs`) and runs `handler` on it.
/// Returns how many records were handled successfully.
pub async fn poll_once<F, Fut>(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    wait_secs: i32,
    handler: F,
) -> Result<usize, String>
where
    F: Fn(LambdaEvent<SqsEvent>) -> Fut,
    Fut: Future<Output = Result<SqsBatchResponse, lambda_runtime::Error>>,
{
    let received = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_secs)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())?;
    let messages = received.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(0);
    }
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, serde_json::Value> = m
                .attributes
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                .collect();
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "md5OfBody": m.md5_of_body,
                "attributes": attributes,
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{}", queue_url.rsplit('/').next().unwrap_or_default()),
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    let event: SqsEvent =
        serde_json::from_value(json!({ "Records": records })).map_err(|e| format!("building SqsEvent: {e}"))?;
    let response = handler(LambdaEvent::new(event, Context::default()))
        .await
        .map_err(|e| format!("queue handler failed: {e}"))?;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    let done: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .filter(|m| m.message_id.as_ref().is_some_and(|id| !failed.contains(id)))
        .enumerate()
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .set_receipt_handle(m.receipt_handle.clone())
                .build()
                .ok()
        })
        .collect();
    let handled = done.len();
    if !done.is_empty() {
        sqs.delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(done))
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())?;
    }
    Ok(handled)
}
