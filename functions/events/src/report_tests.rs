//! Report counters through the events function over the in-memory ports: the counts equal the
//! truth computed from the stored messages however often and in whatever order the stream
//! delivers their changes, and the tenant's time zone decides the days.

use std::collections::BTreeMap;

use aws_lambda_events::dynamodb::Event as StreamEvent;
use chrono::{DateTime, Duration, Utc};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use crm_shared::message::MessageStatus;
use crm_shared::reports::counters::{CounterKey, Granularity};
use crm_shared::secret::Secret;
use crm_shared::store::TenantStore;
use crm_shared::testing::{MemQueue, MemStore, Op, fixtures};

use crate::record;

/// A deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

fn record(id: usize, tenant: &str, message: &str, old: Option<&Value>, new: &Value, at: DateTime<Utc>) -> Value {
    let dynamo = |v: &Value| serde_json::to_value(serde_dynamo::to_item::<_, serde_dynamo::Item>(v).unwrap()).unwrap();
    let mut change = json!({
        "ApproximateCreationDateTime": at.timestamp() as f64,
        "Keys": {"PK": {"S": format!("T#{tenant}#MSG#{message}")}, "SK": {"S": "MSG"}},
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

fn batch(records: Vec<Value>) -> LambdaEvent<StreamEvent> {
    LambdaEvent::new(
        serde_json::from_value(json!({"Records": records})).unwrap(),
        Context::default(),
    )
}

/// The store's rule for a status webhook: the status moves only up the ladder (`failed` only
/// before delivery); the first time of each status is kept.
fn apply(image: &Value, status: MessageStatus, at: DateTime<Utc>) -> Value {
    let current: MessageStatus = serde_json::from_value(image["status"].clone()).unwrap();
    let mut next = image.clone();
    if status.moves(current) {
        next["status"] = json!(status);
        next["status_rank"] = json!(status.rank());
        if status == MessageStatus::Failed {
            next["error"] = json!({"code": 131047, "title": "Re-engagement message"});
        }
    }
    if next["status_at"].get(status.as_str()).is_none() {
        next["status_at"][status.as_str()] = json!(at);
    }
    // A receipt always rewrites the pricing object, moved or not.
    next["pricing"] = json!({"category": "utility", "n": next["pricing"]["n"].as_u64().unwrap_or(0) + 1});
    next
}

type Truth = BTreeMap<(String, String), BTreeMap<String, u64>>;

/// What the stored messages say, per UTC hour and number.
fn truth_of(messages: &[Value]) -> Truth {
    let mut truth: Truth = BTreeMap::new();
    for m in messages {
        let at: DateTime<Utc> = m["timestamp"].as_str().unwrap().parse().unwrap();
        let item = truth
            .entry((
                at.format("%Y-%m-%dT%H").to_string(),
                m["phone_number_id"].as_str().unwrap().to_owned(),
            ))
            .or_default();
        let ty = m["type"].as_str().unwrap();
        let mut add = |metric: &str, with_dimensions: bool| {
            *item.entry(format!("n:{metric}")).or_default() += 1;
            *item.entry(format!("n:{metric}|type={ty}")).or_default() += 1;
            if with_dimensions {
                *item
                    .entry(format!("n:{metric}|category={}", m["category"].as_str().unwrap()))
                    .or_default() += 1;
                if let Some(t) = m["content"]["name"].as_str() {
                    *item.entry(format!("n:{metric}|template={t}")).or_default() += 1;
                }
            }
        };
        if m["direction"] == "inbound" {
            add("received", false);
            continue;
        }
        let status: MessageStatus = serde_json::from_value(m["status"].clone()).unwrap();
        if status.is_terminal() {
            if m["status_at"].get("sent").is_some() {
                add("sent", true);
            }
            add("failed", true);
            *item
                .entry(format!(
                    "n:failed|code={}",
                    m["error"]["code"].as_i64().map_or("none".to_owned(), |c| c.to_string())
                ))
                .or_default() += 1;
            continue;
        }
        for step in [MessageStatus::Sent, MessageStatus::Delivered, MessageStatus::Read] {
            if status.rank() >= step.rank() {
                add(step.as_str(), true);
            }
        }
    }
    truth
}

/// Generated traffic: the final stored messages and every change the stream carries.
fn traffic(rng: &mut Rng, tenant: &str, start: DateTime<Utc>) -> (Vec<Value>, Vec<Value>) {
    let (mut finals, mut records) = (Vec::new(), Vec::new());
    let mut next_id = 0;
    let mut push = |records: &mut Vec<Value>, message: &str, old: Option<&Value>, new: &Value, at| {
        next_id += 1;
        records.push(record(next_id, tenant, message, old, new, at));
    };
    for i in 0..150 {
        let id = format!("m{i}");
        let at = start + Duration::minutes(rng.below(180) as i64);
        let phone = ["1001", "1002"][rng.below(2)];
        if rng.below(4) == 0 {
            let ty = ["text", "image"][rng.below(2)];
            let m = json!({"message_id": id, "contact_id": "c1", "direction": "inbound", "phone_number_id": phone,
                           "type": ty, "content": {"body": "my address is secret"},
                           "status": "received", "status_rank": 0, "timestamp": at});
            push(&mut records, &id, None, &m, at);
            finals.push(m);
            continue;
        }
        let template = rng.below(2) == 0;
        let category = ["marketing", "utility"][rng.below(2)];
        let content = if template {
            let name = ["order_update", "welcome"][rng.below(2)];
            json!({ "name": name })
        } else {
            json!({"body": "hi Ann"})
        };
        let mut m = json!({"message_id": id, "contact_id": "c1", "direction": "outbound", "phone_number_id": phone,
                           "type": if template { "template" } else { "text" },
                           "category": category, "content": content,
                           "status": "queued", "status_rank": 0, "status_at": {}, "timestamp": at});
        let outcome = rng.below(6);
        if outcome == 5 {
            // Refused before Meta, stored that way.
            m["status"] = json!("rejected");
            m["status_rank"] = json!(100);
            push(&mut records, &id, None, &m, at);
            finals.push(m);
            continue;
        }
        push(&mut records, &id, None, &m, at);
        // Our own `sent`, then Meta's receipts: duplicated and out of order.
        let receipts: &[MessageStatus] = match outcome {
            0 => &[],
            1 => &[MessageStatus::Delivered],
            2 => &[MessageStatus::Delivered, MessageStatus::Read],
            3 => &[MessageStatus::Read],
            _ => &[MessageStatus::Failed],
        };
        let mut arrivals: Vec<MessageStatus> = vec![MessageStatus::Sent];
        for r in receipts {
            for _ in 0..=rng.below(2) {
                arrivals.push(*r);
            }
        }
        arrivals.push(MessageStatus::Sent); // Meta's own `sent` receipt, late
        rng.shuffle(&mut arrivals[1..]);
        for status in arrivals {
            let next = apply(&m, status, at + Duration::seconds(5));
            push(&mut records, &id, Some(&m), &next, at + Duration::seconds(5));
            m = next;
        }
        finals.push(m);
    }
    (finals, records)
}

fn hour_items(store: &MemStore, tenant: &str) -> Truth {
    store
        .counter_items(tenant)
        .into_iter()
        .filter(|(k, _)| k.granularity == Granularity::Hour)
        .map(|(k, v)| ((k.bucket, k.phone), v))
        .collect()
}

#[tokio::test]
async fn counts_under_threefold_redelivery_and_reordering_equal_the_truth_of_the_stored_messages() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let start: DateTime<Utc> = "2026-12-01T09:00:00Z".parse().unwrap();
    let (finals, records) = traffic(&mut rng, "t1", start);
    let (store, queue) = (MemStore::new(), MemQueue::new());
    let deps = record::Deps::new(store.clone(), queue.clone());
    // Batches of 7 records; each delivered three times, the deliveries shuffled and each
    // delivery's records in another order (records of different items may come from different
    // shards in any order; a record's counts never depend on another's).
    let mut deliveries: Vec<Vec<Value>> = records
        .chunks(7)
        .flat_map(|c| std::iter::repeat_n(c.to_vec(), 3))
        .collect();
    rng.shuffle(&mut deliveries);
    // One delivery fails in the store: Lambda retries it (the other two deliveries do).
    store.fail_next_backend(Op::RecordEvents);
    let mut failed = 0;
    for mut records in deliveries {
        rng.shuffle(&mut records);
        let response = record::handle(&deps, batch(records)).await.unwrap();
        failed += response.batch_item_failures.len();
    }
    assert_eq!(failed, 1, "the injected fault was reported for retry");
    let truth = truth_of(&finals);
    assert!(truth.values().any(|v| v.get("n:delivered").is_some()) && truth.len() > 4);
    assert_eq!(hour_items(&store, "t1"), truth);
    // Days (UTC here) sum their hours.
    let days: BTreeMap<CounterKey, BTreeMap<String, u64>> = store
        .counter_items("t1")
        .into_iter()
        .filter(|(k, _)| k.granularity == Granularity::Day)
        .collect();
    let total = |m: &BTreeMap<String, u64>, name: &str| m.get(name).copied().unwrap_or(0);
    for name in ["n:received", "n:sent", "n:delivered", "n:read", "n:failed"] {
        assert_eq!(
            days.values().map(|v| total(v, name)).sum::<u64>(),
            truth.values().map(|v| total(v, name)).sum::<u64>(),
            "{name}"
        );
    }
    // Batched: the whole traffic as one stream batch writes each counter item once (a few
    // dozen updates for hundreds of events), and gives the same counts.
    let one = MemStore::new();
    let one_deps = record::Deps::new(one.clone(), MemQueue::new());
    let response = record::handle(&one_deps, batch(records.clone())).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let events = one.event_log("t1").len() as u64;
    assert_eq!(one.counter_updates(), one.counter_items("t1").len() as u64);
    assert!(
        one.counter_updates() * 5 < events,
        "{} updates for {events} events",
        one.counter_updates()
    );
    assert_eq!(hour_items(&one, "t1"), truth);
    // Nothing of a message's content or its contact in any counter.
    let scanned = format!("{:?}", store.counter_items("t1"));
    assert!(!scanned.contains("secret") && !scanned.contains("Ann") && !scanned.contains("c1"));
}

#[tokio::test]
async fn days_are_counted_in_the_tenants_time_zone() {
    let store = MemStore::new();
    let mut tenant = fixtures::tenant("1001");
    tenant.tenant_id = "t1".into();
    let key = crm_shared::tenant::ApiKeyRecord {
        tenant_id: "t1".into(),
        key_id: "k1".into(),
        role: crm_shared::auth::Role::Admin,
        key_hash: "h".into(),
        created_at: Utc::now(),
        revoked_at: None,
        last_used_at: None,
        user_id: None,
        expires_at: None,
    };
    store.create_tenant(&tenant, &Secret::new("token"), &key).await.unwrap();
    let settings = crm_shared::tenant::ReportSettings {
        time_zone: "America/New_York".into(),
        business_hours: None,
        per_user_metrics: false,
    };
    store.set_report_settings("t1", &settings).await.unwrap();
    let deps = record::Deps::new(store.clone(), MemQueue::new());
    // 04:30Z and 05:30Z on the day the clocks change: two New York days, one UTC hour each.
    let inbound = |i: usize, at: &str| {
        let m = json!({"message_id": format!("m{i}"), "contact_id": "c1", "direction": "inbound", "phone_number_id": "1001",
                       "type": "text", "status": "received", "status_rank": 0, "timestamp": at});
        record(i, "t1", &format!("m{i}"), None, &m, Utc::now())
    };
    let response = record::handle(
        &deps,
        batch(vec![
            inbound(1, "2026-03-08T04:30:00Z"),
            inbound(2, "2026-03-08T05:30:00Z"),
        ]),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let buckets: Vec<(Granularity, String, u64)> = store
        .counter_items("t1")
        .into_iter()
        .map(|(k, v)| (k.granularity, k.bucket, v["n:received"]))
        .collect();
    assert_eq!(
        buckets,
        [
            (Granularity::Hour, "2026-03-08T04".into(), 1),
            (Granularity::Hour, "2026-03-08T05".into(), 1),
            (Granularity::Day, "2026-03-07".into(), 1),
            (Granularity::Day, "2026-03-08".into(), 1),
        ]
    );
}
