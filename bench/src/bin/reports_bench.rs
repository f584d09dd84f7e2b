//! Reports benchmark (not a test), `make bench-reports`:
//!
//! 1. **Counter updates per 1,000 events**: stream records of real shape (inbound messages,
//!    outbound status moves, conversation changes) through the real events handler
//!    (`events_fn::record::handle`) in Lambda's batches of 500, over the in-memory store; the
//!    counter item updates it applies (each one `UpdateItem` inside the event transaction on
//!    DynamoDB) per 1,000 events recorded. Two traffic shapes: a campaign hour on two numbers,
//!    and the same volume spread over a day.
//! 2. **A 90-day report, every grouping**: 90 days of hourly and daily counter items for two
//!    numbers (5 templates, 3 types, 2 categories, a broadcast, 3 error codes), then each report
//!    (`messages` with no group, `phone`, `type`, `category`, `template`, `broadcast`;
//!    `conversations` with none and `phone`) by day over 90 days and by hour over 31 days: the
//!    store requests (one Query per report in memory; DynamoDB pages estimated from the items'
//!    size at 1 MB per page) and the CPU of building and rendering it (JSON and CSV).
//!
//! `target/release/reports-bench`

use std::time::{Duration, Instant};

use aws_lambda_events::dynamodb::Event as StreamEvent;
use chrono::{DateTime, Duration as Span, Utc};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use crm_shared::events::{EventDraft, EventType};
use crm_shared::reports::Fact;
use crm_shared::reports::counters::{Counting, Granularity, count, count_by, histogram_bucket, histogram_sum};
use crm_shared::reports::report::{ReportKind, build, parse_query};
use crm_shared::store::{EventStore, ReportStore};
use crm_shared::testing::{MemQueue, MemStore, Op};

fn cpu() -> Duration {
    bench::procfs::cpu_time(std::process::id()).expect("process CPU time")
}

fn record(id: usize, pk: &str, sk: &str, old: Option<&Value>, new: &Value) -> Value {
    let dynamo = |v: &Value| serde_json::to_value(serde_dynamo::to_item::<_, serde_dynamo::Item>(v).unwrap()).unwrap();
    let mut change = json!({
        "ApproximateCreationDateTime": Utc::now().timestamp() as f64,
        "Keys": {"PK": {"S": pk}, "SK": {"S": sk}},
        "SequenceNumber": (1000 + id).to_string(),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
        "NewImage": dynamo(new),
    });
    if let Some(old) = old {
        change["OldImage"] = dynamo(old);
    }
    json!({"eventID": format!("rec-{id}"), "eventName": "MODIFY", "eventSource": "aws:dynamodb",
           "awsRegion": "us-east-1", "dynamodb": change})
}

/// About 1,000 counted changes: per message an insert and its status moves.
fn traffic(start: DateTime<Utc>, spread: Span) -> Vec<Value> {
    let mut records = Vec::new();
    let mut id = 0;
    let mut push = |records: &mut Vec<Value>, pk: String, sk: &str, old: Option<&Value>, new: &Value| {
        id += 1;
        records.push(record(id, &pk, sk, old, new));
    };
    let mut i = 0;
    while records.len() < 1_000 {
        let at = start + Span::seconds((i as i64 * 7919) % spread.num_seconds().max(1));
        let phone = ["1001", "1002"][i % 2];
        let pk = format!("T#t1#MSG#m{i}");
        if i % 4 == 0 {
            let m = json!({"message_id": format!("m{i}"), "contact_id": format!("c{i}"), "direction": "inbound",
                           "phone_number_id": phone, "type": "text", "status": "received", "status_rank": 0, "timestamp": at});
            push(&mut records, pk, "MSG", None, &m);
        } else {
            let template = ["order_update", "welcome", "reminder", "promo", "otp"][i % 5];
            let category = ["utility", "marketing"][i % 2];
            let base = json!({"message_id": format!("m{i}"), "contact_id": format!("c{i}"), "direction": "outbound",
                              "phone_number_id": phone, "type": "template", "category": category,
                              "content": {"name": template}, "broadcast_id": "b1", "timestamp": at});
            let with = |status: &str, rank: i64| {
                let mut m = base.clone();
                m["status"] = json!(status);
                m["status_rank"] = json!(rank);
                m
            };
            let steps = [
                with("queued", 0),
                with("sent", 10),
                with("delivered", 20),
                with("read", 30),
            ];
            for w in steps.windows(2) {
                push(&mut records, pk.clone(), "MSG", Some(&w[0]), &w[1]);
            }
        }
        i += 1;
    }
    records
}

async fn counter_updates(label: &str, spread: Span) {
    let store = MemStore::new();
    let deps = events_fn::record::Deps::new(store.clone(), MemQueue::new());
    let records = traffic("2026-12-01T09:00:00Z".parse().unwrap(), spread);
    let before = cpu();
    for chunk in records.chunks(500) {
        let event: StreamEvent = serde_json::from_value(json!({"Records": chunk})).unwrap();
        let response = events_fn::record::handle(&deps, LambdaEvent::new(event, Context::default()))
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    let spent = cpu() - before;
    let events = store.event_log("t1").len() as f64;
    let updates = store.counter_updates() as f64;
    println!(
        "{label}: {events} events in {} batches of ≤ 500 records: {updates} counter item updates = {:.1} per 1,000 events \
         ({} items; {:.0} µs CPU per event, events function total)",
        records.len().div_ceil(500),
        updates / events * 1000.0,
        store.counter_items("t1").len(),
        spent.as_secs_f64() * 1e6 / events,
    );
}

/// 90 days × 24 hours × 2 numbers of counters, recorded through the store's own path.
async fn ninety_days(store: &MemStore, end: DateTime<Utc>) {
    let counting = Counting {
        time_zone: "Europe/Berlin".parse().unwrap(),
        business_hours: None,
        per_user: false,
        expires_at: end + Span::days(400),
    };
    let mut drafts = Vec::new();
    for h in 0..(90 * 24) {
        let at = end - Span::hours(h);
        for phone in ["1001", "1002"] {
            let mut adds = vec![
                (count("received"), 40),
                (count_by("received", "type", "text"), 30),
                (count_by("received", "type", "image"), 10),
            ];
            for (metric, n) in [("sent", 100), ("delivered", 95), ("read", 60), ("failed", 5)] {
                adds.push((count(metric), n));
                for t in ["order_update", "welcome", "reminder", "promo", "otp"] {
                    adds.push((count_by(metric, "template", t), n / 5));
                }
                for ty in ["template", "text", "image"] {
                    adds.push((count_by(metric, "type", ty), n / 3));
                }
                adds.push((count_by(metric, "category", "utility"), n / 2));
                adds.push((count_by(metric, "category", "marketing"), n / 2));
                adds.push((count_by(metric, "broadcast", "b1"), n / 2));
            }
            for code in ["131047", "131026", "130472"] {
                adds.push((count_by("failed", "code", code), 1));
            }
            for (metric, n) in [("opened", 12), ("resolved", 10), ("opt_out", 1), ("opt_in", 1)] {
                adds.push((count(metric), n));
            }
            for name in ["first_response", "resolution"] {
                adds.push((count(name), 10));
                adds.push((histogram_sum(name), 6000));
                for b in 20..30 {
                    adds.push((histogram_bucket(name, b), 1));
                }
            }
            drafts.push(EventDraft {
                id: format!("evt_{h}_{phone}"),
                tenant_id: "t1".into(),
                event_type: EventType::MessageReceived,
                timestamp: at,
                data: json!({}),
                tally: vec![Fact::counts(at, phone.into(), adds)],
            });
        }
    }
    for chunk in drafts.chunks(500) {
        store
            .record_events("t1", chunk, end + Span::days(7), &counting)
            .await
            .unwrap();
    }
}

async fn reports() {
    let store = MemStore::new();
    let end: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    ninety_days(&store, end).await;
    let tz = "Europe/Berlin".parse().unwrap();
    let item_bytes = |granularity: Granularity| -> usize {
        store
            .counter_items("t1")
            .iter()
            .filter(|(k, _)| k.granularity == granularity)
            .map(|(k, v)| 40 + k.bucket.len() + k.phone.len() + v.keys().map(|n| n.len() + 8).sum::<usize>())
            .sum()
    };
    println!(
        "counter items: {} (hour + day, 2 numbers); stored size ≈ {:.1} MB by hour, {:.2} MB by day",
        store.counter_items("t1").len(),
        item_bytes(Granularity::Hour) as f64 / 1e6,
        item_bytes(Granularity::Day) as f64 / 1e6,
    );
    let cases: &[(ReportKind, Option<&str>)] = &[
        (ReportKind::Messages, None),
        (ReportKind::Messages, Some("phone")),
        (ReportKind::Messages, Some("type")),
        (ReportKind::Messages, Some("category")),
        (ReportKind::Messages, Some("template")),
        (ReportKind::Messages, Some("broadcast")),
        (ReportKind::Conversations, None),
        (ReportKind::Conversations, Some("phone")),
    ];
    for (granularity, days) in [("day", 90), ("hour", 31)] {
        let from = (end - Span::days(days)).to_rfc3339();
        let to = end.to_rfc3339();
        let pages = (item_bytes(if granularity == "day" {
            Granularity::Day
        } else {
            Granularity::Hour
        }) as f64
            * days as f64
            / 90.0
            / 1e6)
            .ceil()
            .max(1.0);
        let mut total_cpu = Duration::ZERO;
        for (kind, group) in cases {
            let mut params = vec![
                ("from", from.as_str()),
                ("to", to.as_str()),
                ("granularity", granularity),
            ];
            if let Some(g) = group {
                params.push(("group_by", g));
            }
            let calls = store.calls(Op::CounterRows);
            const REPEAT: u32 = 20;
            let before = cpu();
            let wall = Instant::now();
            let mut bytes = 0;
            for _ in 0..REPEAT {
                let q = parse_query(*kind, params.iter().copied(), tz, end).unwrap();
                let rows = store
                    .counter_rows("t1", q.granularity, &q.first, &q.last, end)
                    .await
                    .unwrap();
                let report = build(&q, &rows);
                bytes = report.to_json().to_string().len() + report.to_csv().len();
            }
            let spent = (cpu() - before) / REPEAT;
            total_cpu += spent;
            let requests = (store.calls(Op::CounterRows) - calls) as u32 / REPEAT;
            println!(
                "  {granularity} × {days} days, {:?} group_by={}: {requests} Query (DynamoDB ≈ {pages} page(s) of 1 MB), \
                 {:.2} ms CPU, {:.2} ms wall, {bytes} bytes JSON+CSV",
                kind,
                group.unwrap_or("-"),
                spent.as_secs_f64() * 1e3,
                wall.elapsed().as_secs_f64() * 1e3 / f64::from(REPEAT),
            );
        }
        println!(
            "  {granularity}: all {} groupings together: {:.1} ms CPU",
            cases.len(),
            total_cpu.as_secs_f64() * 1e3
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!(
        "reports-bench ({} build)",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    counter_updates("campaign hour, 2 numbers", Span::hours(1)).await;
    counter_updates("spread over a day, 2 numbers", Span::hours(24)).await;
    reports().await;
}
