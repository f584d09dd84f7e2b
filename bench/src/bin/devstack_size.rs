//! The local stack at size (not a test): the endpoint `make dev` and the tests run
//! (`infra/moto_server.py`, provisioned from `template.yaml`) filled in stages up to 10,000
//! contacts and 100,000 messages, with the latency of the requests the functions make most and
//! the endpoint's memory at each stage. moto used to deep-copy the whole table for every
//! transaction, so requests slowed and memory grew with the table (seen at 20 GB after ~1,000
//! new contacts); the launcher's undo log keeps both flat.
//!
//! `make bench-devstack` (`-- --contacts N --messages-per-contact M --samples S` to change it).

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};

use crm_shared::admin;
use crm_shared::message::{Direction, MessageRecord, MessageStatus};
use crm_shared::store::{ContactFilter, ContactStore, InboundStore, InboundWrite, MessageStore};
use crm_shared::tenant::NewTenant;
use crm_shared::testing::fixtures;

struct Options {
    contacts: usize,
    messages_per_contact: usize,
    samples: usize,
}

fn options() -> Options {
    let mut o = Options {
        contacts: 10_000,
        messages_per_contact: 10,
        samples: 200,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--contacts", Some(v)) => o.contacts = v,
            ("--messages-per-contact", Some(v)) => o.messages_per_contact = v,
            ("--samples", Some(v)) => o.samples = v,
            _ => {
                eprintln!("usage: devstack-size [--contacts N] [--messages-per-contact M] [--samples S]");
                std::process::exit(2);
            }
        }
    }
    o
}

fn phone(i: usize) -> String {
    format!("+4477009{i:05}")
}

/// p50 and p99 in milliseconds.
fn summary(samples: &[Duration]) -> (f64, f64) {
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    (bench::stats::median(&ms), bench::stats::percentile(&ms, 99.0))
}

/// Runs `op` `n` times, one at a time, and returns each duration.
async fn timed<F, Fut>(n: usize, mut op: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        op(i).await;
        out.push(start.elapsed());
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = options();
    let (moto, store) = bench::endpoint::provisioned_store(&devstack::workspace_root(), "app-secret").await;
    let new = NewTenant::validated("Size", "106540352242922", "100000000000000", "bench-graph-token").expect("tenant");
    let tenant_id = admin::create_tenant(&store, new)
        .await
        .expect("tenant")
        .tenant
        .tenant_id;

    println!(
        "\nLocal endpoint at size (infra/moto_server.py from template.yaml), {} samples per request kind, one at a time\n",
        o.samples
    );
    println!(
        "| contacts | messages | seed s | GetItem contact p50/p99 ms | inbound TransactWriteItems p50/p99 ms | history Query p50/p99 ms | contact list Query+BatchGet p50/p99 ms | endpoint RSS MB (peak) |"
    );
    println!("|---:|---:|---:|---|---|---|---|---:|");

    let stages = [o.contacts / 10, o.contacts / 2, o.contacts];
    let mut contact_ids: Vec<String> = Vec::with_capacity(o.contacts);
    let mut messages = 0usize;
    let mut inbound_n = 0usize;
    for stage in stages {
        let seed_start = Instant::now();
        let from = contact_ids.len();
        let created: Vec<String> = stream::iter(from..stage)
            .map(|i| {
                let store = store.clone();
                let tenant_id = tenant_id.clone();
                async move {
                    let c = fixtures::contact(&tenant_id, &phone(i), chrono::Utc::now());
                    store.create_contact(&c).await.map(|()| c.contact_id)
                }
            })
            .buffered(8)
            .try_collect()
            .await
            .expect("contacts created");
        // Their messages, as an import writes them (batches of 25).
        let now = chrono::Utc::now();
        let t = tenant_id.as_str();
        let records: Vec<MessageRecord> = created
            .iter()
            .flat_map(|c| {
                (0..o.messages_per_contact).map(move |k| {
                    MessageRecord::new(
                        t,
                        crm_shared::ids::new_id(),
                        c,
                        if k % 2 == 0 {
                            Direction::Inbound
                        } else {
                            Direction::Outbound
                        },
                        "text",
                        serde_json::json!({"body": format!("message {k} of a conversation at size")}),
                        MessageStatus::Received,
                        now - chrono::Duration::minutes((o.messages_per_contact - k) as i64),
                        now,
                    )
                })
            })
            .collect();
        for chunk in records.chunks(1000) {
            store.import_messages(chunk).await.expect("messages imported");
        }
        messages += records.len();
        contact_ids.extend(created);
        let seed_s = seed_start.elapsed().as_secs_f64();

        let pick = |i: usize| contact_ids[(i * 7919) % contact_ids.len()].clone();
        let get = timed(o.samples, |i| {
            let (store, t, c) = (&store, &tenant_id, pick(i));
            async move {
                store.get_contact(t, &c).await.expect("get").expect("exists");
            }
        })
        .await;
        let inbound = timed(o.samples, |i| {
            let (store, t, c) = (&store, &tenant_id, pick(i));
            inbound_n += 1;
            let n = inbound_n;
            async move {
                let now = chrono::Utc::now();
                let message = MessageRecord {
                    wamid: Some(format!("wamid.size.{n}")),
                    ..MessageRecord::new(
                        t,
                        crm_shared::message::inbound_message_id(t, &format!("wamid.size.{n}"), now),
                        &c,
                        Direction::Inbound,
                        "text",
                        serde_json::json!({"body": "a new message"}),
                        MessageStatus::Received,
                        now,
                        now,
                    )
                };
                let write = InboundWrite {
                    message,
                    matched_by: None,
                    profile_name: None,
                    consent: None,
                    new_contact: None,
                };
                store.record_inbound(&write).await.expect("stored");
            }
        })
        .await;
        messages += o.samples;
        let history = timed(o.samples, |i| {
            let (store, t, c) = (&store, &tenant_id, pick(i));
            async move {
                store.contact_messages(t, &c, 50, None).await.expect("history");
            }
        })
        .await;
        let list = timed(o.samples.div_ceil(4), |_| {
            let (store, t) = (&store, &tenant_id);
            async move {
                store
                    .list_contacts(t, &ContactFilter::All, 50, None)
                    .await
                    .expect("list");
            }
        })
        .await;
        let (hwm, rss) = bench::procfs::memory_kib(moto.pid()).expect("endpoint memory");
        let f = |(a, b): (f64, f64)| format!("{a:.1} / {b:.1}");
        println!(
            "| {} | {} | {seed_s:.0} | {} | {} | {} | {} | {:.0} ({:.0}) |",
            contact_ids.len(),
            messages,
            f(summary(&get)),
            f(summary(&inbound)),
            f(summary(&history)),
            f(summary(&list)),
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
        );
    }
}
