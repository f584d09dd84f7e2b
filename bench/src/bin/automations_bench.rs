//! Automated replies benchmark (not a test), `make bench-automations`.
//!
//! Where the CPU of an inbound message goes with a tenant's rules: the webhook does not
//! evaluate rules at all (docs/automations.md), so its CPU per message is independent of them by
//! construction; the evaluation runs in the events function on the stored message's stream
//! record. This measures that function, the real handler (`events_fn::record::handle`) on
//! 500-record stream batches of inbound text messages parsed from Lambda's JSON, over the
//! in-memory store, per message:
//!
//! - `off`: automations not wired (the events function as before);
//! - `0 rules`: wired, the tenant has none;
//! - `50 rules, none triggers`: 40 keyword rules (exact, prefix, contains, regex) and 10 away
//!   rules inside their hours — the common case, no request beyond the cached rules;
//! - `50 rules, one fires`: the same plus one keyword in every message, each from a new contact
//!   (one batch read, the firing transaction, the reply's creation, one queued send).
//!
//! `automations-bench [--batches 20]`

use std::time::Duration;

use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use crm_shared::store::AutomationStore;
use crm_shared::testing::{MemQueue, MemStore, fixtures};

const TENANT: &str = "01benchtenant0000000000000";
/// Interleaved rounds of every scenario.
const ROUNDS: usize = 3;

fn contact_id(n: usize) -> String {
    format!("01benchcontact{n:012}")
}

fn inbound_record(n: usize, body: &str) -> Value {
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
                "message_id": {"S": message}, "contact_id": {"S": contact_id(n)},
                "tenant_id": {"S": TENANT}, "direction": {"S": "inbound"}, "type": {"S": "text"},
                "content": {"M": {"body": {"S": body}}}, "phone_number_id": {"S": "1001"},
                "status": {"S": "received"}, "status_rank": {"N": "0"},
                "status_at": {"M": {}},
                "timestamp": {"S": Utc::now().to_rfc3339()}, "created_at": {"S": Utc::now().to_rfc3339()},
                "wamid": {"S": format!("wamid.bench{n}")}
            },
            "SequenceNumber": format!("{}", 1_000_000_000 + n),
            "SizeBytes": 400,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        }
    })
}

fn batch_json(from: usize, count: usize, body: &str) -> String {
    json!({"Records": (from..from + count).map(|n| inbound_record(n, body)).collect::<Vec<_>>()}).to_string()
}

async fn add_rules(store: &MemStore, with_match: bool) {
    for rule in bench::samples::fifty_rules(TENANT, with_match) {
        store.create_rule(&rule).await.unwrap();
    }
}

fn cpu_now() -> Duration {
    bench::procfs::cpu_time(std::process::id()).expect("own CPU time")
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Off,
    NoRules,
    NoneTriggers,
    OneFires,
}

async fn run(scenario: Scenario, batches: usize) -> (f64, usize) {
    let store = MemStore::new();
    let messages = batches * 500;
    match scenario {
        Scenario::NoneTriggers => add_rules(&store, false).await,
        Scenario::OneFires => {
            add_rules(&store, true).await;
            let cap = crm_shared::automation::AutomationSettings {
                daily_cap: 1_000_000,
                ..Default::default()
            };
            store.put_automation_settings(TENANT, &cap).await.unwrap();
            for n in 0..messages {
                let mut c = fixtures::contact(TENANT, &format!("+4915{n:09}"), Utc::now() - chrono::Duration::days(1));
                c.contact_id = contact_id(n);
                c.last_inbound_at = Some(Utc::now());
                store.add_contact(c);
            }
        }
        _ => {}
    }
    let body = if scenario == Scenario::OneFires {
        "Hi! What's the price of the blue one?"
    } else {
        "Hi! Is the blue one still available?"
    };
    let inputs: Vec<String> = (0..batches).map(|b| batch_json(b * 500, 500, body)).collect();
    let base = events_fn::record::Deps::new(store.clone(), MemQueue::new());
    let sends = MemQueue::new();
    let started = cpu_now();
    if scenario == Scenario::Off {
        for input in &inputs {
            let event = serde_json::from_str(input).expect("a DynamoDBEvent");
            let r = events_fn::record::handle(&base, LambdaEvent::new(event, Context::default()))
                .await
                .unwrap();
            assert!(r.batch_item_failures.is_empty());
        }
    } else {
        let deps = base.with_automations(sends.clone());
        for input in &inputs {
            let event = serde_json::from_str(input).expect("a DynamoDBEvent");
            let r = events_fn::record::handle(&deps, LambdaEvent::new(event, Context::default()))
                .await
                .unwrap();
            assert!(r.batch_item_failures.is_empty());
        }
    }
    let cpu = cpu_now() - started;
    let expected_sends = if scenario == Scenario::OneFires { messages } else { 0 };
    assert_eq!(sends.send_jobs().len(), expected_sends);
    (cpu.as_secs_f64() * 1e6 / messages as f64, messages)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut batches = 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--batches" => batches = args.next().and_then(|v| v.parse().ok()).unwrap_or(20).max(1),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    // Warm-up (allocator, lazy statics, the regex engine).
    run(Scenario::NoneTriggers, 1).await;
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let scenarios = [
        ("off (automations not wired)", Scenario::Off),
        ("0 rules", Scenario::NoRules),
        ("50 rules, none triggers", Scenario::NoneTriggers),
        ("50 rules, one fires per message", Scenario::OneFires),
    ];
    // Interleaved rounds, the best of each (the machine is shared: the minimum is the cost).
    let mut best = [f64::MAX; 4];
    let mut messages = 0;
    for _ in 0..ROUNDS {
        for (i, (_, scenario)) in scenarios.iter().enumerate() {
            let (per, n) = run(*scenario, batches).await;
            best[i] = best[i].min(per);
            messages = n;
        }
    }
    println!("\n### Events function CPU per inbound message, by the tenant's rules ({profile} build)\n");
    println!("| scenario | messages | CPU per message (best of {ROUNDS}) | vs off |");
    println!("| --- | --- | --- | --- |");
    for (i, (name, _)) in scenarios.iter().enumerate() {
        println!(
            "| {name} | {messages} | {:.1} µs | {:+.1} % |",
            best[i],
            (best[i] / best[0] - 1.0) * 100.0
        );
    }
    println!(
        "\nThe webhook evaluates no rule: its CPU per inbound message does not depend on them (see \
         docs/automations.md, \"Where evaluation runs\")."
    );
}
