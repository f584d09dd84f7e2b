//! Event stream benchmark (not a test), `make bench-events`:
//!
//! 1. **CPU per event of the events function**: the real handler (`events_fn::record::handle`)
//!    on 500-record stream batches parsed from Lambda's JSON, over the in-memory store (no
//!    latency), one endpoint subscribed; process CPU time / events.
//! 2. **Sustained 1,000 events/s, one tenant, one endpoint**: stream batches of 100 every 100 ms
//!    into the events handler (one shard, in order), its delivery jobs through an in-process
//!    queue to simulated delivery-worker instances (`events_fn::deliver::handle`, batches of
//!    10), signed POSTs to a local receiver; the store answers each DynamoDB request after
//!    5 ms. Reports deliveries per second and stored → received latency.
//! 3. **End-to-end latency on the local stack**: moto from `template.yaml` with its table
//!    stream read by the devstack stream poller into the real events handler, the delivery
//!    worker on the real SQS queue, a local receiver; contacts created one by one through the
//!    store; latency from `create_contact` returning to the delivery's arrival, p50/p99.
//!
//! `target/release/events-bench [--cpu-batches 40] [--secs 10] [--rate 1000] [--local-events 200] [--no-local]`

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crm_shared::events::endpoint::NewEndpoint;
use crm_shared::events::push::Pusher;
use crm_shared::events::signing::new_secret;
use crm_shared::events::ssrf::UrlPolicy;
use crm_shared::jobs::{EnqueueError, JobQueue, OverflowQueue};
use crm_shared::store::WebhookStore;
use crm_shared::testing::{MemQueue, MemStore};

const TENANT: &str = "01benchtenant0000000000000";
const LOOPBACK: UrlPolicy = UrlPolicy { allow_loopback: true };

struct Options {
    cpu_batches: usize,
    secs: u64,
    rate: usize,
    local_events: usize,
    local: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        cpu_batches: 40,
        secs: 10,
        rate: 1000,
        local_events: 200,
        local: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--cpu-batches" => o.cpu_batches = num("--cpu-batches")?.max(1) as usize,
            "--secs" => o.secs = num("--secs")?.max(1),
            "--rate" => o.rate = num("--rate")?.max(10) as usize,
            "--local-events" => o.local_events = num("--local-events")?.max(10) as usize,
            "--no-local" => o.local = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

/// One inbound-message stream record of message `n`, as Lambda's JSON carries it.
fn inbound_record(n: usize) -> Value {
    let message = format!("m{n:09}");
    json!({
        "eventID": format!("bench-{n}"),
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": Utc::now().timestamp() as f64,
            "Keys": {"PK": {"S": format!("T#{TENANT}#MSG#{message}")}, "SK": {"S": "MSG"}},
            "NewImage": {
                "PK": {"S": format!("T#{TENANT}#MSG#{message}")}, "SK": {"S": "MSG"},
                "message_id": {"S": message}, "contact_id": {"S": "01benchcontact000000000000"},
                "tenant_id": {"S": TENANT}, "direction": {"S": "inbound"}, "type": {"S": "text"},
                "content": {"M": {"body": {"S": "a customer's words, never in the log"}}},
                "status": {"S": "received"}, "status_rank": {"N": "0"},
                "wamid": {"S": format!("wamid.bench{n}")}
            },
            "SequenceNumber": format!("{}", 1_000_000_000 + n),
            "SizeBytes": 400,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        }
    })
}

fn batch_json(from: usize, count: usize) -> String {
    json!({"Records": (from..from + count).map(inbound_record).collect::<Vec<_>>()}).to_string()
}

async fn subscribe(store: &MemStore, url: &str) {
    let input: NewEndpoint = serde_json::from_value(json!({"url": url})).unwrap();
    let endpoint = input.into_endpoint(TENANT, Utc::now()).unwrap();
    store.create_endpoint(&endpoint, &new_secret()).await.unwrap();
}

fn cpu_now() -> Duration {
    bench::procfs::cpu_time(std::process::id()).expect("own CPU time")
}

fn pct(values: &[f64], p: f64) -> f64 {
    bench::stats::percentile(values, p)
}

async fn cpu_per_event(batches: usize) {
    let store = MemStore::new();
    subscribe(&store, "https://hooks.example.com/").await;
    let deps = events_fn::record::Deps::new(store.clone(), MemQueue::new());
    let inputs: Vec<String> = (0..batches).map(|b| batch_json(b * 500, 500)).collect();
    let started = cpu_now();
    let wall = Instant::now();
    for input in &inputs {
        let event = serde_json::from_str(input).expect("a DynamoDBEvent");
        let response = events_fn::record::handle(&deps, LambdaEvent::new(event, Context::default()))
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    let cpu = cpu_now() - started;
    let events = batches * 500;
    assert_eq!(store.event_log(TENANT).len(), events);
    println!("\n### Events function CPU per event\n");
    println!("| batches × records | events | CPU total | CPU per event | wall per event |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {batches} × 500 | {events} | {:.0} ms | {:.1} µs | {:.1} µs |",
        cpu.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / events as f64,
        wall.elapsed().as_secs_f64() * 1e6 / events as f64
    );
}

/// Delivery jobs through a channel to the simulated worker instances (retries go back in).
#[derive(Clone)]
struct ChannelQueue(mpsc::UnboundedSender<String>);

impl OverflowQueue for ChannelQueue {
    async fn hand_off(&self, bodies: &[String]) -> Result<(), EnqueueError> {
        for b in bodies {
            self.0.send(b.clone()).map_err(|e| EnqueueError(e.to_string()))?;
        }
        Ok(())
    }
}

impl JobQueue for ChannelQueue {
    async fn send_job<T: serde::Serialize + Sync>(&self, job: &T, _delay: Duration) -> Result<(), EnqueueError> {
        self.hand_off(&[serde_json::to_string(job).unwrap()]).await
    }
}

/// Arrival time of each delivery by message id (from the body).
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn start_receiver(arrivals: Arrivals) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let arrivals = arrivals.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let key = event["data"]["message_id"]
                            .as_str()
                            .or(event["data"]["contact_id"].as_str())
                            .unwrap_or_default()
                            .to_owned();
                        arrivals.lock().unwrap().entry(key).or_insert_with(Instant::now);
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(204)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    url
}

fn sqs_event(bodies: Vec<String>) -> LambdaEvent<SqsEvent> {
    let records: Vec<SqsMessage> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("m{i}"));
            m.body = Some(body);
            m
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    LambdaEvent::new(event, Context::default())
}

async fn sustained(secs: u64, rate: usize) {
    const INSTANCES: usize = 20;
    let store = MemStore::with_latency(Duration::from_millis(5));
    let arrivals: Arrivals = Arc::default();
    let url = start_receiver(arrivals.clone()).await;
    subscribe(&store, &url).await;
    // The endpoint's delivery log, one attempt per delivery: written per shard.
    store.count_writes();
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let queue = ChannelQueue(tx);
    let record = events_fn::record::Deps::new(store.clone(), queue.clone());
    let deliver = Arc::new(events_fn::deliver::Deps::new(
        store.clone(),
        queue.clone(),
        Pusher::new(LOOPBACK),
    ));
    for _ in 0..INSTANCES {
        let (rx, deliver) = (rx.clone(), deliver.clone());
        tokio::spawn(async move {
            loop {
                let mut bodies = Vec::new();
                {
                    let mut rx = rx.lock().await;
                    match rx.recv().await {
                        Some(b) => bodies.push(b),
                        None => return,
                    }
                    while bodies.len() < 10 {
                        match rx.try_recv() {
                            Ok(b) => bodies.push(b),
                            Err(_) => break,
                        }
                    }
                }
                events_fn::deliver::handle(&deliver, sqs_event(bodies)).await.unwrap();
            }
        });
    }
    // The stream: a batch every 100 ms, handled in order (one shard).
    let per_batch = rate / 10;
    let mut stored: HashMap<String, Instant> = HashMap::new();
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0;
    let mut handler_ms: Vec<f64> = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        ticks.tick().await;
        let input = batch_json(n, per_batch);
        let at = Instant::now();
        for i in n..n + per_batch {
            stored.insert(format!("m{i:09}"), at);
        }
        let event = serde_json::from_str(&input).unwrap();
        events_fn::record::handle(&record, LambdaEvent::new(event, Context::default()))
            .await
            .unwrap();
        handler_ms.push(at.elapsed().as_secs_f64() * 1e3);
        n += per_batch;
    }
    let produced_for = start.elapsed();
    // Drain: wait for the last deliveries (at most 10 s).
    let drain = Instant::now();
    while arrivals.lock().unwrap().len() < n && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = arrivals.lock().unwrap().clone();
    let latencies: Vec<f64> = stored
        .iter()
        .filter_map(|(id, at)| arrivals.get(id).map(|got| got.duration_since(*at).as_secs_f64() * 1e3))
        .collect();
    let last = arrivals.values().max().copied().unwrap_or(start);
    let delivered = latencies.len();
    println!(
        "\n### Sustained {rate} events/s, one tenant, one endpoint (5 ms per DynamoDB request, {INSTANCES} worker instances)\n"
    );
    println!(
        "| produced | for | delivered | delivered/s (first to last) | stored → received p50 | p99 | max | events handler per 100-record batch p50 / p99 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {n} | {:.1} s | {delivered} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} / {:.1} ms |",
        produced_for.as_secs_f64(),
        delivered as f64 / last.duration_since(start).as_secs_f64().max(0.001),
        pct(&latencies, 50.0),
        pct(&latencies, 99.0),
        latencies.iter().cloned().fold(0.0, f64::max),
        pct(&handler_ms, 50.0),
        pct(&handler_ms, 99.0),
    );
    let log: Vec<u64> = store
        .writes_per_key()
        .into_iter()
        .filter(|(pk, _)| pk.contains("#DELIVERIES"))
        .map(|(_, n)| n)
        .collect();
    let (written, busiest) = (log.iter().sum::<u64>(), log.iter().copied().max().unwrap_or(0));
    let seconds = last.duration_since(start).as_secs_f64().max(0.001);
    println!(
        "\nDelivery log: {written} attempts over {} partition keys (`T#<t>#WEBHOOK#<id>#DELIVERIES#<shard>`), the busiest {busiest} ({:.0}/s here; at 3,000 deliveries/s — 1,000 msg/s with three statuses each — ≈ {:.0}/s on the busiest key, target ≤ 500)",
        log.len(),
        busiest as f64 / seconds,
        3000.0 * busiest as f64 / written.max(1) as f64,
    );
}

async fn local_latency(events: usize) {
    use crm_shared::store::{ContactStore, DynamoStore};
    let root = devstack::workspace_root();
    let moto = bench::endpoint::LocalEndpoint::start(&root).expect("local AWS endpoint");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint_url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let resources = devstack::template::load(&root.join("template.yaml")).expect("template");
    let secrets = std::collections::BTreeMap::from([
        ("MetaAppSecret".to_owned(), "s".to_owned()),
        ("MetaVerifyToken".to_owned(), "v".to_owned()),
        ("CursorKey".to_owned(), "bench-cursor-key-0123456789abcdef".to_owned()),
    ]);
    let provisioned =
        devstack::provision::provision_with_secrets(&sdk, &crm_shared::config::Env::default(), &resources, &secrets)
            .await
            .expect("provisioned");
    let table = provisioned.tables["DataTable"].clone();
    let queue_url = provisioned.queue_urls["WebhookDeliveryQueue"].clone();
    let ddb = crm_shared::aws::dynamodb_client(&sdk);
    let sqs = crm_shared::aws::sqs_client(&sdk);
    let store = DynamoStore::new(ddb.clone(), &table);
    let arrivals: Arrivals = Arc::default();
    let url = start_receiver(arrivals.clone()).await;
    let input: NewEndpoint = serde_json::from_value(json!({"url": url})).unwrap();
    let endpoint = input.into_endpoint(TENANT, Utc::now()).unwrap();
    store.create_endpoint(&endpoint, &new_secret()).await.unwrap();
    let record = Arc::new(events_fn::record::Deps::new(
        store.clone(),
        crm_shared::jobs::SqsQueue::new(sqs.clone(), &queue_url),
    ));
    let arn = devstack::stream::stream_arn(&ddb, &table).await.expect("stream");
    tokio::spawn(devstack::stream::run(
        aws_sdk_dynamodbstreams::Client::new(&sdk),
        arn,
        Duration::from_millis(20),
        move |event| {
            let deps = record.clone();
            async move { events_fn::record::handle(&deps, event).await }
        },
    ));
    let deliver = Arc::new(events_fn::deliver::Deps::new(
        store.clone(),
        crm_shared::jobs::SqsQueue::new(sqs.clone(), &queue_url),
        Pusher::new(LOOPBACK),
    ));
    for _ in 0..2 {
        let (sqs, url, deliver) = (sqs.clone(), queue_url.clone(), deliver.clone());
        tokio::spawn(async move {
            loop {
                let deps = deliver.clone();
                let _ = devstack::poller::poll_once(&sqs, &url, 1, move |event| {
                    let deps = deps.clone();
                    async move { events_fn::deliver::handle(&deps, event).await }
                })
                .await;
            }
        });
    }
    let mut stored = HashMap::new();
    for i in 0..events {
        let valid = crm_shared::contact::ValidContact {
            phone: None,
            user_id: None,
            name: Some(format!("Bench {i}")),
            email: None,
            tags: Vec::new(),
            attributes: Default::default(),
            language: None,
        };
        let contact = crm_shared::contact::Contact::new(TENANT, valid, Utc::now());
        store.create_contact(&contact).await.unwrap();
        stored.insert(contact.contact_id.clone(), Instant::now());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = Instant::now();
    while arrivals.lock().unwrap().len() < events && drain.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = arrivals.lock().unwrap().clone();
    let latencies: Vec<f64> = stored
        .iter()
        .filter_map(|(id, at)| {
            arrivals
                .get(id)
                .map(|got| got.saturating_duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    println!("\n### End to end on the local stack (moto stream → events → SQS → delivery → receiver)\n");
    println!("| changes | delivered | stored → received p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {events} (one every 50 ms) | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        latencies.len(),
        pct(&latencies, 50.0),
        pct(&latencies, 99.0),
        latencies.iter().cloned().fold(0.0, f64::max)
    );
    drop(moto);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("events-bench: {e}");
            std::process::exit(2);
        }
    };
    cpu_per_event(o.cpu_batches).await;
    sustained(o.secs, o.rate).await;
    if o.local {
        local_latency(o.local_events).await;
    }
}
