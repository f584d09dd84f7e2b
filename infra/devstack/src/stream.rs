//! Local stand-in for Lambda's DynamoDB Streams event source mapping: reads the local
//! endpoint's table stream with the official `aws-sdk-dynamodbstreams` client and hands each
//! batch, as Lambda's `DynamoDBEvent`, to the real events handler. Like the mapping: records in
//! order per shard, a partial batch response retries the shard from the first failed record.
//! (Lambda's filter criteria are not applied: the handler ignores what no rule reads.)

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::streams::DynamoDbEventResponse;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

/// Records per `GetRecords` (Lambda's mapping in the template takes up to 500).
const BATCH: i32 = 500;

fn sdk_error(e: impl std::error::Error + 'static) -> String {
    aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e).to_string()
}

/// A record as Lambda's event carries it.
fn lambda_record(r: &Record, stream_arn: &str) -> Value {
    let image = |m: Option<&HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>| {
        m.map(|m| serde_json::to_value(serde_dynamo::Item::from(m.clone())).unwrap_or(Value::Null))
    };
    let d = r.dynamodb();
    let mut change = json!({
        "ApproximateCreationDateTime": d.and_then(|d| d.approximate_creation_date_time()).map(|t| t.as_secs_f64()),
        "Keys": image(d.and_then(|d| d.keys.as_ref())),
        "SequenceNumber": d.and_then(|d| d.sequence_number()),
        "SizeBytes": d.and_then(|d| d.size_bytes()).unwrap_or(0),
        "StreamViewType": d.and_then(|d| d.stream_view_type()).map(|v| v.as_str()),
    });
    if let Some(new) = image(d.and_then(|d| d.new_image.as_ref())) {
        change["NewImage"] = new;
    }
    if let Some(old) = image(d.and_then(|d| d.old_image.as_ref())) {
        change["OldImage"] = old;
    }
    json!({
        "eventID": r.event_id(),
        "eventName": r.event_name().map(|n| n.as_str()),
        "eventSource": "aws:dynamodb",
        "eventVersion": "1.1",
        "awsRegion": "us-east-1",
        "eventSourceARN": stream_arn,
        "dynamodb": change,
    })
}

/// Polls every shard of `stream_arn` from its oldest record, forever, into `handler`; waits
/// `idle` when a shard has nothing new.
pub async fn run<F, Fut>(client: Client, stream_arn: String, idle: Duration, handler: F)
where
    F: Fn(LambdaEvent<StreamEvent>) -> Fut,
    Fut: Future<Output = Result<DynamoDbEventResponse, lambda_runtime::Error>>,
{
    // Shard id → where to read next.
    let mut iterators: HashMap<String, Option<String>> = HashMap::new();
    loop {
        if let Err(e) = discover(&client, &stream_arn, &mut iterators).await {
            eprintln!("devstack: stream: {e}");
        }
        let mut busy = false;
        for (shard, iterator) in iterators.iter_mut() {
            match poll_shard(&client, &stream_arn, shard, iterator, &handler).await {
                Ok(n) => busy |= n > 0,
                Err(e) => eprintln!("devstack: stream shard {shard}: {e}"),
            }
        }
        if !busy {
            tokio::time::sleep(idle).await;
        }
    }
}

async fn discover(
    client: &Client,
    stream_arn: &str,
    iterators: &mut HashMap<String, Option<String>>,
) -> Result<(), String> {
    let described = client
        .describe_stream()
        .stream_arn(stream_arn)
        .send()
        .await
        .map_err(sdk_error)?;
    for shard in described.stream_description().map(|d| d.shards()).unwrap_or_default() {
        let Some(id) = shard.shard_id() else { continue };
        if iterators.contains_key(id) {
            continue;
        }
        let it = client
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(sdk_error)?;
        iterators.insert(id.to_owned(), it.shard_iterator().map(str::to_owned));
    }
    Ok(())
}

/// One `GetRecords` of a shard and its hand-off; the number of records read.
async fn poll_shard<F, Fut>(
    client: &Client,
    stream_arn: &str,
    shard: &str,
    iterator: &mut Option<String>,
    handler: &F,
) -> Result<usize, String>
where
    F: Fn(LambdaEvent<StreamEvent>) -> Fut,
    Fut: Future<Output = Result<DynamoDbEventResponse, lambda_runtime::Error>>,
{
    let Some(current) = iterator.clone() else { return Ok(0) };
    let out = client
        .get_records()
        .shard_iterator(&current)
        .limit(BATCH)
        .send()
        .await
        .map_err(sdk_error)?;
    let records = out.records();
    if records.is_empty() {
        *iterator = out.next_shard_iterator().map(str::to_owned);
        return Ok(0);
    }
    let payload = json!({"Records": records.iter().map(|r| lambda_record(r, stream_arn)).collect::<Vec<_>>()});
    let event: StreamEvent = serde_json::from_value(payload).map_err(|e| format!("building DynamoDBEvent: {e}"))?;
    let failed_at = match handler(LambdaEvent::new(event, Context::default())).await {
        Ok(response) => response.batch_item_failures.into_iter().find_map(|f| f.item_identifier),
        // A function error retries the whole batch.
        Err(e) => {
            eprintln!("devstack: events handler failed: {e}");
            records
                .first()
                .and_then(|r| r.dynamodb())
                .and_then(|d| d.sequence_number())
                .map(str::to_owned)
        }
    };
    match failed_at {
        None => *iterator = out.next_shard_iterator().map(str::to_owned),
        Some(seq) => {
            // Retry from the first failed record, after a pause (as Lambda does).
            tokio::time::sleep(Duration::from_millis(500)).await;
            let it = client
                .get_shard_iterator()
                .stream_arn(stream_arn)
                .shard_id(shard)
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(seq)
                .send()
                .await
                .map_err(sdk_error)?;
            *iterator = it.shard_iterator().map(str::to_owned);
        }
    }
    Ok(records.len())
}

/// The stream of `table` (the local endpoint's `LatestStreamArn`).
pub async fn stream_arn(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<String, String> {
    let described = ddb.describe_table().table_name(table).send().await.map_err(sdk_error)?;
    described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
        .ok_or_else(|| format!("table {table} has no stream"))
}

/// Every record the stream of `stream_arn` holds now, oldest first per shard, as Lambda's event
/// carries them (the bench replays them into the events function).
pub async fn read_all(client: &Client, stream_arn: &str) -> Result<Vec<Value>, String> {
    let mut iterators = HashMap::new();
    discover(client, stream_arn, &mut iterators).await?;
    let mut shards: Vec<_> = iterators.into_iter().collect();
    shards.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (_, mut iterator) in shards {
        while let Some(current) = iterator.take() {
            let page = client
                .get_records()
                .shard_iterator(&current)
                .limit(1000)
                .send()
                .await
                .map_err(sdk_error)?;
            if page.records().is_empty() {
                break;
            }
            out.extend(page.records().iter().map(|r| lambda_record(r, stream_arn)));
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
    }
    Ok(out)
}
