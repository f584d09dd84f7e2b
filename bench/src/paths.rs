//! Warm scenarios of the paths added since the first report (issue 21): conversation assignment,
//! a template send, Meta's template status webhook, a 90-day report, the events function over
//! the table's real change stream (per record), the webhook delivery worker (per delivery), and
//! the events function's automation evaluation (per inbound message, fifty rules vs none).
//!
//! They run after [`super::warm_runs`], on the state its runs left: the conversations its
//! inbound messages opened, the outbound messages and their statuses, and the stream of every
//! change they made, replayed into the events function exactly as Lambda's event source mapping
//! hands it over (same filter as `template.yaml`, batches of [`STREAM_BATCH`] records).

use std::collections::HashSet;

use chrono::{Duration as Days, Utc};
use serde_json::{Value, json};

use crm_shared::auth::Role;
use crm_shared::conversation::conversation_id;
use crm_shared::store::{AutomationStore, TemplateSettings, TemplateStore};
use crm_shared::template::TemplateRecord;

use super::{
    Bench, Expect, Warm, apigw_event, bearer, change_of, inbound_text_from, invoke_all, log, sqs_event, warm,
    webhook_event,
};
use bench::report::{
    AUTOMATION_FIFTY, AUTOMATION_NONE, EVENTS_PER_RECORD, REPORT_QUERY, TEMPLATE_SEND, WEBHOOK_DELIVERY,
};
use bench::throughput::{BENCH_PHONE_NUMBER_ID, customer_phone};

/// Records per events-function invocation. The mapping takes up to 500 within a 1 s window;
/// at moderate traffic a batch is smaller.
const STREAM_BATCH: usize = 100;
/// Inbound messages per invocation in the automation scenarios.
const MESSAGES_PER_BATCH: usize = 50;
/// At most this many batches of the change stream are replayed (moto takes seconds per batch).
const MAX_STREAM_BATCHES: usize = 20;
/// At most this many deliveries are measured.
const MAX_DELIVERIES: usize = 500;
/// Jobs per webhook-delivery invocation (the mapping's batch size).
const DELIVERY_BATCH: usize = 10;
/// The WABA `setup` gives the bench tenant.
const BENCH_WABA: &str = "100000000000000";

/// The sort keys the events function's filter criteria in `template.yaml` pass on.
fn passes_stream_filter(record: &Value) -> bool {
    let sk = record["dynamodb"]["Keys"]["SK"]["S"].as_str().unwrap_or_default();
    matches!(sk, "MSG" | "PROFILE" | "EXPORT" | "ERASURE")
        || ["CONV#", "TPL#", "WEBHOOK#", "AUTOFIRE#"]
            .iter()
            .any(|p| sk.starts_with(p))
}

fn is_message_insert(record: &Value) -> bool {
    record["eventName"] == "INSERT" && record["dynamodb"]["Keys"]["SK"]["S"] == "MSG"
}

/// The stream's records not seen before (marking them seen), filtered as the mapping does.
async fn new_stream_records(b: &Bench, seen: &mut HashSet<String>) -> Result<Vec<Value>, String> {
    let ddb = crm_shared::aws::dynamodb_client(&b.sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&b.sdk);
    let arn = devstack::stream::stream_arn(&ddb, &b.provisioned.tables["DataTable"]).await?;
    let all = devstack::stream::read_all(&streams, &arn).await?;
    Ok(all
        .into_iter()
        .filter(|r| seen.insert(r["eventID"].as_str().unwrap_or_default().to_owned()))
        .filter(passes_stream_filter)
        .collect())
}

fn stream_event(records: &[Value]) -> Vec<u8> {
    json!({ "Records": records }).to_string().into_bytes()
}

/// Batches of the records that each hold `per_batch` inbound message inserts (with whatever
/// other records came between them); a trailing partial batch is dropped.
fn batches_by_messages(records: &[Value], per_batch: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut messages = 0;
    for r in records {
        current.push(r.clone());
        if is_message_insert(r) {
            messages += 1;
            if messages == per_batch {
                out.push(stream_event(&current));
                current.clear();
                messages = 0;
            }
        }
    }
    out
}

/// A warm run's figures per item when every invocation carried `items` of them.
fn per_item(mut w: Warm, items: usize) -> Warm {
    let k = items as f64;
    w.cpu_us_per_event /= k;
    w.user_us_per_event /= k;
    w.system_us_per_event /= k;
    w.wall_us_per_event /= k;
    w.wakeups_per_event /= k;
    w.dynamodb_per_event /= k;
    w.aws_per_event /= k;
    for v in w.requests_per_event.values_mut() {
        *v /= k;
    }
    w.events *= items;
    w
}

/// Everything on the queue now (up to `max`), taken off it.
async fn drain_queue(b: &Bench, logical: &str, max: usize) -> Result<Vec<(String, String)>, String> {
    let sqs = crm_shared::aws::sqs_client(&b.sdk);
    let url = &b.provisioned.queue_urls[logical];
    let mut out = Vec::new();
    while out.len() < max {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| format!("receiving from {logical}: {e:?}"))?;
        let messages = got.messages();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            out.push((
                m.message_id().unwrap_or_default().to_owned(),
                m.body().unwrap_or_default().to_owned(),
            ));
            if let Some(handle) = m.receipt_handle() {
                let _ = sqs.delete_message().queue_url(url).receipt_handle(handle).send().await;
            }
        }
    }
    Ok(out)
}

fn template_status_webhook(event: &str) -> Vec<u8> {
    let value = json!({"event": event, "message_template_id": 1001, "message_template_name": "order_update",
                       "message_template_language": "en_US", "reason": "NONE"});
    webhook_event(&change_of(BENCH_WABA, "message_template_status_update", value))
}

pub(super) async fn path_runs(
    b: &Bench,
    events: usize,
    warmup: usize,
    contact_ids: &[String],
) -> Result<Vec<Warm>, String> {
    let total = events + warmup;
    let tenant_id = b.tenant.tenant.tenant_id.clone();
    let mut out = Vec::new();
    let json_headers = || [bearer(b), ("content-type", "application/json".to_owned())];

    // Assignment: every conversation the inbound runs opened, to one agent, once each.
    let agent = crm_shared::admin::create_user(&b.store, &tenant_id, "Bench Agent", "agent@bench.example", Role::Agent)
        .await
        .map_err(|e| e.to_string())?;
    let assign = warm(
        b,
        "POST /v1/conversations/{id}/assign",
        "api",
        contact_ids
            .iter()
            .map(|c| {
                let id = conversation_id(c, BENCH_PHONE_NUMBER_ID);
                let body = json!({"assignee": agent.user_id, "expected": null}).to_string();
                apigw_event(
                    "POST",
                    &format!("/v1/conversations/{id}/assign"),
                    &json_headers(),
                    body.as_bytes(),
                )
            })
            .collect(),
        warmup,
        Expect::Http(200),
    )
    .await?;
    out.push(assign.result);

    // A template send: the registry read and the local validation on top of a text send.
    let now = Utc::now();
    let record = TemplateRecord::from_meta(&tenant_id, &bench::samples::order_update_template(), now)
        .ok_or("the sample template does not parse")?;
    b.store.put_template(&record).await.map_err(|e| e.to_string())?;
    let settings = TemplateSettings {
        default_language: Some("en_US".into()),
    };
    b.store
        .put_template_settings(&tenant_id, &settings)
        .await
        .map_err(|e| e.to_string())?;
    let template_send = warm(
        b,
        TEMPLATE_SEND,
        "api",
        (0..total)
            .map(|i| {
                let body = bench::samples::order_update_send(&customer_phone(i)).to_string();
                apigw_event("POST", "/v1/messages", &json_headers(), body.as_bytes())
            })
            .collect(),
        warmup,
        Expect::Http(202),
    )
    .await?;
    out.push(template_send.result);

    // Meta's template status webhook, paused and approved again in turn (ending approved).
    let statuses = warm(
        b,
        "template status webhook",
        "webhook",
        (0..total)
            .map(|i| {
                template_status_webhook(if (total - i).is_multiple_of(2) {
                    "PAUSED"
                } else {
                    "APPROVED"
                })
            })
            .collect(),
        warmup,
        Expect::Http(200),
    )
    .await?;
    out.push(statuses.result);

    // A tenant webhook endpoint subscribed to everything, so the events function fans out.
    let endpoint = json!({"url": format!("{}/hooks/bench", b.graph.base_url())}).to_string();
    invoke_all(
        b,
        "api",
        vec![apigw_event(
            "POST",
            "/v1/webhook-endpoints",
            &json_headers(),
            endpoint.as_bytes(),
        )],
        Expect::Http(201),
    )
    .await?;

    // The events function over everything the runs so far changed.
    let mut seen = HashSet::new();
    let records = new_stream_records(b, &mut seen).await?;
    let chunks: Vec<&[Value]> = records.chunks(STREAM_BATCH).collect();
    // Evenly spaced batches of the whole history (each one consecutive records, as the mapping
    // hands them over): every kind of change in its share, in a bounded time against moto.
    let step = chunks.len().div_ceil(MAX_STREAM_BATCHES).max(1);
    let batches: Vec<Vec<u8>> = chunks.iter().step_by(step).map(|c| stream_event(c)).collect();
    log(format!(
        "stream: {} records; replaying {} batches of {STREAM_BATCH} (every {step}th)",
        records.len(),
        batches.len()
    ));
    if batches.len() < 4 {
        return Err(format!("only {} stream records to replay", records.len()));
    }
    let events_warmup = (batches.len() / 10).max(1);
    let events_run = warm(
        b,
        EVENTS_PER_RECORD,
        "events",
        batches,
        events_warmup,
        Expect::NoBatchFailures,
    )
    .await?;
    out.push(per_item(events_run.result, STREAM_BATCH));

    // The deliveries it queued, to the bench's receiver.
    let jobs = drain_queue(b, "WebhookDeliveryQueue", total.min(MAX_DELIVERIES)).await?;
    let delivery_batches: Vec<Vec<u8>> = jobs
        .chunks(DELIVERY_BATCH)
        .filter(|c| c.len() == DELIVERY_BATCH)
        .map(|c| sqs_event(c, "wcrm-webhook-delivery-queue"))
        .collect();
    log(format!("webhook deliveries: {} jobs queued", jobs.len()));
    if delivery_batches.len() < 4 {
        return Err(format!("only {} webhook delivery jobs were queued", jobs.len()));
    }
    let before = b.graph.hooks_received();
    let delivery_warmup = (delivery_batches.len() / 10).max(1);
    let deliveries = warm(
        b,
        WEBHOOK_DELIVERY,
        "webhook-delivery",
        delivery_batches,
        delivery_warmup,
        Expect::NoBatchFailures,
    )
    .await?;
    if b.graph.hooks_received() == before {
        return Err("the webhook receiver got no delivery".into());
    }
    out.push(per_item(deliveries.result, DELIVERY_BATCH));

    // The report those events counted: 90 days by day.
    let to = Utc::now().date_naive();
    let from = to - Days::days(89);
    let report = warm(
        b,
        REPORT_QUERY,
        "api",
        (0..total)
            .map(|_| {
                apigw_event(
                    "GET",
                    &format!("/v1/reports/messages?from={from}&to={to}&granularity=day"),
                    &[bearer(b)],
                    b"",
                )
            })
            .collect(),
        warmup,
        Expect::Http(200),
    )
    .await?;
    out.push(report.result);

    // Automation evaluation: the same kind of inbound traffic (known customers in their
    // conversations) through the events function, without rules, then with fifty that it
    // evaluates but none fires.
    let messages = (total / MESSAGES_PER_BATCH).max(4) * MESSAGES_PER_BATCH;
    for (round, scenario) in [(4, AUTOMATION_NONE), (5, AUTOMATION_FIFTY)] {
        if round == 5 {
            for rule in bench::samples::fifty_rules(&tenant_id, false) {
                b.store.create_rule(&rule).await.map_err(|e| e.to_string())?;
            }
        }
        invoke_all(
            b,
            "webhook",
            (0..messages).map(|n| inbound_text_from(n % total, n, round)).collect(),
            Expect::Http(200),
        )
        .await?;
        let records = new_stream_records(b, &mut seen).await?;
        let batches = batches_by_messages(&records, MESSAGES_PER_BATCH);
        let w = warm(b, scenario, "events", batches, 1, Expect::NoBatchFailures).await?;
        out.push(per_item(w.result, MESSAGES_PER_BATCH));
    }
    Ok(out)
}
