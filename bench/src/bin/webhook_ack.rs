//! Webhook ack latency (not a test): how long the real webhook handler takes to answer a signed
//! delivery of 1, 10, 100 and 1,000 inbound messages, over the in-memory store with a fixed
//! delay per DynamoDB request the real store would make (DynamoDB's few milliseconds), and how
//! many status deliveries one instance sustains. The webhook answers once its items are stored
//! or its time budget has passed and the rest is on the overflow queue; both are counted.
//!
//! `target/release/webhook-ack [--latency-ms 5] [--runs 20] [--status-secs 5]` (`make
//! bench-webhook`); prints a Markdown table.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use lambda_http::{Body, Request};
use serde_json::json;

use crm_shared::config::WebhookSecrets;
use crm_shared::secret::Secret;
use crm_shared::store::{ContactStore, OutboundStore};
use crm_shared::testing::{MemQueue, MemStore, fixtures};
use crm_shared::whatsapp::sign;
use webhook_fn::{Deps, Limits, handle};

const APP_SECRET: &str = "bench-app-secret";
const PHONE_NUMBER_ID: &str = "106540352242922";
/// Distinct customers a delivery's messages come from (Meta batches several conversations).
const CUSTOMERS: usize = 50;

type Webhook = Deps<MemStore, MemQueue, MemQueue>;

struct Options {
    latency: Duration,
    runs: usize,
    status_secs: u64,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        latency: Duration::from_millis(5),
        runs: 20,
        status_secs: 5,
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
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn webhook(store: &MemStore, queue: &MemQueue) -> Webhook {
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

async fn post(w: &Webhook, body: &str) -> Duration {
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
    let queue = MemQueue::new();
    let tenant = fixtures::tenant(PHONE_NUMBER_ID);
    store.add_tenant(tenant.clone(), Secret::new("graph-token"));
    let w = webhook(&store, &queue);
    // Every customer once first: the instance knows them (the conversation case).
    post(&w, &message_delivery(usize::MAX, CUSTOMERS)).await;

    println!(
        "Webhook ack latency, in-memory store with {} ms per DynamoDB request, budget {} ms, {} runs per size\n",
        o.latency.as_millis(),
        Limits::default().budget.as_millis(),
        o.runs
    );
    println!("| messages per delivery | p50 ms | p99 ms | max ms | handed off (of all items) |");
    println!("|---:|---:|---:|---:|---:|");
    for size in [1usize, 10, 100, 1000] {
        let runs = if size >= 1000 { o.runs.div_ceil(4) } else { o.runs };
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
    let contact = fixtures::contact(&tenant.tenant_id, "+447700900999", chrono::Utc::now());
    store.create_contact(&contact).await.expect("contact");
    let count = 20_000usize;
    let wamids: Vec<String> = stream::iter(0..count)
        .map(|i| {
            let store = store.clone();
            let contact = contact.clone();
            async move {
                let m = fixtures::queued_text(&contact);
                store.create_message(&m).await.expect("message");
                let wamid = format!("wamid.sent.{i}");
                store
                    .mark_sent(&m.tenant_id, &m.message_id, &m.contact_id, &wamid, chrono::Utc::now())
                    .await
                    .expect("sent");
                wamid
            }
        })
        .buffer_unordered(512)
        .collect()
        .await;
    let me = std::process::id();
    let cpu_before = bench::procfs::cpu_time(me).expect("own CPU time");
    let started = Instant::now();
    let mut done = 0usize;
    let mut times = Vec::new();
    while started.elapsed() < Duration::from_secs(o.status_secs) && done < wamids.len() {
        times.push(post(&w, &status_delivery(&wamids[done])).await);
        done += 1;
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    let cpu = bench::procfs::cpu_time(me).expect("own CPU time") - cpu_before;
    times.sort();
    println!(
        "\nStatus deliveries, one at a time on one instance: {done} in {:.1} s = {rate:.0}/s (p50 {} ms, p99 {} ms per delivery; {:.0} µs CPU per delivery, the in-memory store's own work included)",
        started.elapsed().as_secs_f64(),
        ms(percentile(&times, 50.0)),
        ms(percentile(&times, 99.0)),
        cpu.as_secs_f64() * 1e6 / done.max(1) as f64
    );
}
