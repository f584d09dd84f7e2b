//! Privacy benchmark (not a test): what erasure and the retention sweep cost in AWS requests.
//!
//! Starts its own local endpoint (moto), provisions it from `template.yaml`, seeds one contact
//! with N messages (every 10th with a media object in S3, every 5th outbound with its wamid
//! pointer and reference item), erases it, then seeds N messages past `messages_days` (plus N/10
//! past only `media_days`) and runs one retention sweep. Every HTTP request the SDK clients send
//! is counted by operation with an interceptor (retries included), and reported per deleted item.
//!
//! `make bench-privacy` or
//! `cargo run --release -p e2e-tests --example privacy_bench -- [--messages N]` (default 10,000).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde_json::json;

use crm_shared::blob::media_key;
use crm_shared::config::Env;
use crm_shared::contact::{Contact, NewContact};
use crm_shared::jobs::SqsQueue;
use crm_shared::message::{MessageRecord, inbound_message_id};
use crm_shared::objects::Bucket;
use crm_shared::privacy::erasure::Continued;
use crm_shared::privacy::{ErasureCounts, ErasureStatus, Privacy};
use crm_shared::store::keys::*;
use crm_shared::store::privacy::Item;
use crm_shared::store::{ContactStore, DynamoStore};
use devstack::moto::MotoServer;
use devstack::{provision, template, workspace_root};

/// Requests by (service, operation).
#[derive(Debug, Clone, Default)]
struct Counter(Arc<Mutex<BTreeMap<(String, String), u64>>>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "PrivacyBenchCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let (service, op) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_owned(), m.name().to_owned()))
            .unwrap_or_else(|| ("?".into(), "?".into()));
        *self.0.lock().unwrap().entry((service, op)).or_default() += 1;
        Ok(())
    }
}

impl Counter {
    fn take(&self) -> BTreeMap<(String, String), u64> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

const WRITE_OPS: &[&str] = &[
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
    "DeleteObjects",
    "DeleteObject",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "SendMessage",
];

#[derive(Default)]
struct Row {
    phase: String,
    items: u64,
    objects: u64,
    requests: BTreeMap<(String, String), u64>,
    seconds: f64,
}

impl Row {
    fn count(&self, service: &str, write: bool) -> u64 {
        self.requests
            .iter()
            .filter(|((s, op), _)| s == service && WRITE_OPS.contains(&op.as_str()) == write)
            .map(|(_, n)| n)
            .sum()
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn message(t: &str, c: &str, at: DateTime<Utc>, n: usize, extra: serde_json::Value) -> MessageRecord {
    let id = inbound_message_id(t, &format!("bench-{n}-{}", crm_shared::ids::new_id()), at);
    let mut v = json!({
        "tenant_id": t, "message_id": id, "contact_id": c, "direction": "inbound",
        "type": "text", "content": {"body": format!("benchmark message {n}: some text of a typical length")},
        "status": "received", "timestamp": at, "created_at": at,
    });
    for (k, x) in extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).expect("a valid message")
}

/// Seeds `n` messages of one contact aged from `from_days` to `to_days`: every 10th with a media
/// object, every 5th outbound with a wamid pointer and its reference item.
async fn seed(store: &DynamoStore, media: &Bucket, t: &str, c: &str, n: usize, from_days: i64, to_days: i64) -> usize {
    let now = Utc::now();
    let span = (to_days - from_days).max(1) * 86_400;
    let mut records = Vec::with_capacity(n);
    let mut extra_items: Vec<Item> = Vec::new();
    let mut objects = Vec::new();
    let s = |v: String| AttributeValue::S(v);
    for i in 0..n {
        let at = now - chrono::Duration::days(from_days) - chrono::Duration::seconds((i as i64 * span) / n as i64);
        let mut extra = json!({});
        if i % 10 == 0 {
            let key = media_key(t, c, &format!("bench-{i}-{}", at.timestamp_millis()));
            extra = json!({"type": "image", "media": {"media_id": "m", "mime_type": "image/jpeg",
                            "status": "available", "s3_key": key, "size": 2048}});
            objects.push(key);
        } else if i % 5 == 0 {
            let wamid = format!("wamid.bench.{t}.{i}");
            extra = json!({"direction": "outbound", "status": "delivered", "wamid": wamid});
            let pointer = wamid_pk(t, &wamid);
            extra_items.push(Item::from([
                (PK.to_owned(), s(pointer.clone())),
                (SK.to_owned(), s(WAMID_SK.to_owned())),
                ("message_id".to_owned(), s(format!("m{i}"))),
            ]));
            extra_items.push(Item::from([
                (PK.to_owned(), s(contact_pk(t, c))),
                (SK.to_owned(), s(reference_sk(&pointer))),
                ("ref_sk".to_owned(), s(WAMID_SK.to_owned())),
            ]));
        }
        records.push(message(t, c, at, i, extra));
    }
    store.import_messages(&records).await.expect("messages imported");
    store.put_items(extra_items).await.expect("pointers imported");
    stream::iter(objects.iter())
        .for_each_concurrent(16, |key| async move {
            media
                .client()
                .put_object()
                .bucket(media.name())
                .key(key)
                .body(vec![0u8; 2048].into())
                .send()
                .await
                .expect("object stored");
        })
        .await;
    objects.len()
}

async fn new_contact(store: &DynamoStore, t: &str, phone: &str) -> String {
    let body = json!({"phone": phone, "name": "Bench Person", "tags": ["bench"]}).to_string();
    let valid = NewContact::from_json(body.as_bytes()).unwrap().validate().unwrap();
    let contact = Contact::new(t, valid, Utc::now());
    store.create_contact(&contact).await.expect("contact stored");
    contact.contact_id
}

fn counted(sdk: &SdkConfig, counter: &Counter, resources: &crm_shared::config::Resources) -> Privacy {
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .interceptor(counter.clone())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(sdk)
            .interceptor(counter.clone())
            .build(),
    );
    Privacy {
        store: DynamoStore::new(ddb, resources.table.clone()),
        media: Bucket::new(s3.clone(), resources.media_bucket.clone()),
        exports: Bucket::new(s3, resources.exports_bucket.clone()),
        export_jobs: SqsQueue::new(sqs.clone(), resources.export_queue_url.clone()),
        erasure_jobs: SqsQueue::new(sqs, resources.erasure_queue_url.clone()),
        request_budget: crm_shared::privacy::DEFAULT_REQUEST_BUDGET,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = arg("--messages")
        .map(|v| v.parse().expect("--messages N"))
        .unwrap_or(10_000);
    let root = workspace_root();
    eprintln!("privacy_bench: starting moto and provisioning from template.yaml");
    let moto = MotoServer::start(&root, None).expect("local AWS endpoint");
    let sdk = e2e_tests::sdk_config(&moto.endpoint_url()).await;
    let resources = template::load(&root.join("template.yaml")).expect("template parses");
    let provisioned = provision::provision(&sdk, &Env::default(), &resources)
        .await
        .expect("provisioned");
    let resources = Env::from_map(provisioned.function_env()).resources();
    let plain = Privacy::from_sdk(&sdk, &resources);
    let counter = Counter::default();
    let privacy = counted(&sdk, &counter, &resources);
    let tenant = crm_shared::admin::create_tenant(
        &plain.store,
        crm_shared::tenant::NewTenant::validated("Bench", "100000000000009", "200000000000009", "token").unwrap(),
    )
    .await
    .expect("tenant");
    let t = tenant.tenant.tenant_id.clone();
    let mut rows = Vec::new();

    // Erasure of one contact with n messages: the API request (5 s budget), then the eraser
    // continuing from the queue until done (its jobs are read here instead of by a poller).
    let c = new_contact(&plain.store, &t, "+447911123456").await;
    eprintln!("privacy_bench: seeding {n} messages for the erasure");
    let objects = seed(&plain.store, &plain.media, &t, &c, n, 0, 30).await;
    eprintln!("privacy_bench: erasing ({objects} media objects)");
    counter.take();
    let started = Instant::now();
    let mut record = privacy
        .request_erasure(&t, &c, None)
        .await
        .expect("erasure")
        .expect("contact exists");
    let mut invocations = 1;
    while record.status == ErasureStatus::InProgress {
        invocations += 1;
        record = match privacy
            .continue_erasure(&t, &record.erasure_id, Duration::from_secs(240))
            .await
            .expect("continued")
        {
            Continued::Completed(r) | Continued::InProgress(r) => r,
            other => panic!("unexpected {other:?}"),
        };
    }
    let d: ErasureCounts = record.deleted;
    rows.push(Row {
        phase: format!("erasure ({invocations} invocations)"),
        items: d.items(),
        objects: d.media_objects + d.export_objects,
        requests: counter.take(),
        seconds: started.elapsed().as_secs_f64(),
    });
    assert_eq!(d.messages as usize, n, "every message erased");

    // Retention: n messages past the default 365 days, n/10 past only the 90 media days.
    let old = new_contact(&plain.store, &t, "+447911123457").await;
    eprintln!("privacy_bench: seeding {n} + {} messages for retention", n / 10);
    let old_objects = seed(&plain.store, &plain.media, &t, &old, n, 400, 800).await;
    let mid_objects = seed(&plain.store, &plain.media, &t, &old, n / 10, 100, 300).await;
    eprintln!("privacy_bench: sweeping");
    counter.take();
    let started = Instant::now();
    let swept = privacy.sweep_tenant(&t, Utc::now(), None).await.expect("sweep");
    let requests = counter.take();
    assert_eq!(swept.deleted.messages as usize, n);
    assert_eq!(swept.deleted.media_objects as usize, old_objects + mid_objects);
    // Split the media expiry (one UpdateItem per message: it stays, its media goes) from deletes.
    let updates = requests
        .get(&("DynamoDB".to_owned(), "UpdateItem".to_owned()))
        .copied()
        .unwrap_or(0);
    rows.push(Row {
        phase: "retention sweep".into(),
        items: swept.deleted.messages + (n as u64 / 5 - n as u64 / 10) * 2,
        objects: swept.deleted.media_objects,
        requests,
        seconds: started.elapsed().as_secs_f64(),
    });

    println!();
    println!("privacy benchmark: {n} messages per contact (every 10th with a media object, every 5th outbound)");
    println!();
    println!(
        "| phase | table items deleted | objects deleted | DynamoDB writes | DynamoDB reads | S3 writes | S3 reads | SQS | writes / deleted item | seconds |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let writes = row.count("DynamoDB", true) + row.count("S3", true);
        let deleted = row.items + row.objects;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.4} | {:.1} |",
            row.phase,
            row.items,
            row.objects,
            row.count("DynamoDB", true),
            row.count("DynamoDB", false),
            row.count("S3", true),
            row.count("S3", false),
            row.count("SQS", true) + row.count("SQS", false),
            writes as f64 / deleted.max(1) as f64,
            row.seconds,
        );
    }
    println!();
    println!(
        "retention: {updates} of the DynamoDB writes are media-expiry updates (one UpdateItem per message that keeps its text but loses its media: {mid_objects} here); without them: {:.4} writes / deleted item",
        {
            let row = &rows[1];
            (row.count("DynamoDB", true) + row.count("S3", true) - updates) as f64 / (row.items + row.objects) as f64
        }
    );
    println!();
    for row in &rows {
        println!("{}:", row.phase);
        for ((service, op), count) in &row.requests {
            println!("  {service:>8} {op:<24} {count}");
        }
    }
    drop(moto);
}
