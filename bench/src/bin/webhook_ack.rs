//! Webhook ack latency (not a test): how long the real webhook handler takes to answer a signed
//! delivery of 1, 10, 100 and 1,000 inbound messages, over the in-memory store with a fixed
//! delay per DynamoDB request the real store would make (DynamoDB's few milliseconds), and how
//! many status deliveries one instance sustains. The webhook answers once its items are stored
//! or its time budget has passed and the rest is on the overflow queue; both are counted.
//!
//! The same measurement runs a second time with the table on the local endpoint (moto, from
//! `template.yaml`; the queues stay in memory): slower than DynamoDB, but the real store.
//!
//! `target/release/webhook-ack [--latency-ms 5] [--runs 20] [--status-secs 5] [--no-local]`
//! (`make bench-webhook`); prints Markdown tables.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use lambda_http::{Body, Request};
use serde_json::json;

use crm_shared::admin;
use crm_shared::config::WebhookSecrets;
use crm_shared::secret::Secret;
use crm_shared::store::{ContactStore, DynamoStore, OutboundStore};
use crm_shared::tenant::NewTenant;
use crm_shared::testing::{MemQueue, MemStore, fixtures};
use crm_shared::whatsapp::sign;
use webhook_fn::{Deps, Limits, WebhookStore, handle};

const APP_SECRET: &str = "bench-app-secret";
const PHONE_NUMBER_ID: &str = "106540352242922";
/// Distinct customers a delivery's messages come from (Meta batches several conversations).
const CUSTOMERS: usize = 50;

struct Options {
    latency: Duration,
    runs: usize,
    status_secs: u64,
    local: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        latency: Duration::from_millis(5),
        runs: 20,
        status_secs: 5,
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
            "--latency-ms" => o.latency = Duration::from_millis(num("--latency-ms")?),
            "--runs" => o.runs = num("--runs")?.max(1) as usize,
            "--status-secs" => o.status_secs = num("--status-secs")?.max(1),
            "--no-local" => o.local = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn webhook<S: WebhookStore + Clone>(store: &S, queue: &MemQueue) -> Deps<S, MemQueue, MemQueue> {
    let secrets = WebhookSecrets {
        app_secret: Secret::new(APP_SECRET),
        verify_token: Secret::new("verify"),
    };
    Deps::new(store.clone(), queue.clone(), queue.clone(), secrets).with_limits(Limits::default())
}

fn wa_id(customer: usize) -> String {
    format!("4477009{:05}", customer)
}

/// One delivery of `size` text messages from up to [`CUSTOMERS`] customers, wamids unique to
/// `run`.
fn message_delivery(run: usize, size: usize) -> String {
    let customers = size.min(CUSTOMERS);
    let ts = chrono::Utc::now().timestamp();
    let messages: Vec<_> = (0..size)
        .map(|i| {
            json!({"from": wa_id(i % customers), "id": format!("wamid.bench.{size}.{run}.{i}"),
                   "timestamp": ts.to_string(), "type": "text", "text": {"body": "hello"}})
        })
        .collect();
    let contacts: Vec<_> = (0..customers)
        .map(|c| json!({"profile": {"name": "Bench Customer"}, "wa_id": wa_id(c)}))
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "100000000000000", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": contacts, "messages": messages}}]}]})
    .to_string()
}

fn status_delivery(wamid: &str) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "100000000000000", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": [{"id": wamid, "status": "delivered", "timestamp": chrono::Utc::now().timestamp().to_string(),
                          "recipient_id": wa_id(0)}]}}]}]})
    .to_string()
}

fn signed(body: &str) -> Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("https://hooks.bench/webhooks/whatsapp")
        .header("x-hub-signature-256", sign(APP_SECRET.as_bytes(), body.as_bytes()))
        .body(Body::Text(body.to_owned()))
        .expect("request")
}

async fn post<S: WebhookStore>(w: &Deps<S, MemQueue, MemQueue>, body: &str) -> Duration {
    let started = Instant::now();
    let response = handle(w, signed(body)).await.expect("handler answers");
    assert_eq!(response.status(), 200, "{:?}", response.body());
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("webhook-ack: {e}");
            std::process::exit(2);
        }
    };
    let store = MemStore::with_latency(o.latency);
    let tenant = fixtures::tenant(PHONE_NUMBER_ID);
    store.add_tenant(tenant.clone(), Secret::new("graph-token"));
    let label = format!("in-memory store with {} ms per DynamoDB request", o.latency.as_millis());
    measure(&store, &tenant.tenant_id, &label, o.runs, o.status_secs, 20_000).await;
    if o.local {
        // A tenth of the runs and statuses: the local endpoint serializes DynamoDB requests.
        let (_moto, store, tenant_id) = local_store().await;
        measure(
            &store,
            &tenant_id,
            "local endpoint (moto)",
            o.runs.div_ceil(10),
            o.status_secs,
            2_000,
        )
        .await;
    }
}

/// moto on a free port, provisioned from `template.yaml`, with the bench tenant.
async fn local_store() -> (bench::endpoint::LocalEndpoint, DynamoStore, String) {
    let (moto, store) = bench::endpoint::provisioned_store(&devstack::workspace_root(), APP_SECRET).await;
    let new = NewTenant::validated("Bench", PHONE_NUMBER_ID, "100000000000000", "bench-graph-token").expect("tenant");
    let tenant = admin::create_tenant(&store, new).await.expect("tenant created");
    (moto, store, tenant.tenant.tenant_id)
}

async fn measure<S>(store: &S, tenant_id: &str, label: &str, runs_per_size: usize, status_secs: u64, statuses: usize)
where
    S: WebhookStore + OutboundStore + ContactStore + Clone + 'static,
{
    let queue = MemQueue::new();
    let w = webhook(store, &queue);
    // Every customer once first: the instance knows them (the conversation case).
    post(&w, &message_delivery(usize::MAX, CUSTOMERS)).await;

    println!(
        "\nWebhook ack latency, {label}, budget {} ms, {runs_per_size} runs per size\n",
        Limits::default().budget.as_millis(),
    );
    println!("| messages per delivery | p50 ms | p99 ms | max ms | handed off (of all items) |");
    println!("|---:|---:|---:|---:|---:|");
    for size in [1usize, 10, 100, 1000] {
        let runs = if size >= 1000 {
            runs_per_size.div_ceil(4)
        } else {
            runs_per_size
        };
        let before = queue.overflow_bodies().len();
        let mut times = Vec::with_capacity(runs);
        for run in 0..runs {
            times.push(post(&w, &message_delivery(run, size)).await);
        }
        times.sort();
        let handed_off = queue.overflow_bodies()[before..]
            .iter()
            .map(|b| b.matches("\"wamid.bench.").count())
            .sum::<usize>();
        println!(
            "| {size} | {} | {} | {} | {handed_off} of {} |",
            ms(percentile(&times, 50.0)),
            ms(percentile(&times, 99.0)),
            ms(*times.last().expect("runs")),
            size * runs
        );
    }

    // Statuses: outbound messages sent (wamid known), then one status delivery each, as many
    // at once as a Lambda instance handles (one), for a fixed time.
    let contact = fixtures::contact(tenant_id, "+447700900999", chrono::Utc::now());
    store.create_contact(&contact).await.expect("contact");
    let wamids: Vec<String> = stream::iter(0..statuses)
        .map(|i| {
            let store = store.clone();
            let contact = contact.clone();
            async move {
                let m = fixtures::queued_text(&contact);
                store.create_message(&m).await.expect("message");
                let wamid = format!("wamid.sent.{}.{i}", contact.contact_id);
                store
                    .mark_sent(&m.tenant_id, &m.message_id, &m.contact_id, &wamid, chrono::Utc::now())
                    .await
                    .expect("sent");
                wamid
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let me = std::process::id();
    let cpu_before = bench::procfs::cpu_time(me).expect("own CPU time");
    let started = Instant::now();
    let mut done = 0usize;
    let mut times = Vec::new();
    while started.elapsed() < Duration::from_secs(status_secs) && done < wamids.len() {
        times.push(post(&w, &status_delivery(&wamids[done])).await);
        done += 1;
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    let cpu = bench::procfs::cpu_time(me).expect("own CPU time") - cpu_before;
    times.sort();
    println!(
        "\nStatus deliveries, one at a time on one instance: {done} in {:.1} s = {rate:.0}/s (p50 {} ms, p99 {} ms per delivery; {:.0} µs CPU per delivery, the store's client-side work included)",
        started.elapsed().as_secs_f64(),
        ms(percentile(&times, 50.0)),
        ms(percentile(&times, 99.0)),
        cpu.as_secs_f64() * 1e6 / done.max(1) as f64
    );
}
