//! `make bench-templates` (not a test): the CPU a template send's local validation costs,
//! against the CPU of the API's whole `POST /v1/messages`.
//!
//! 1. Validation alone: the registry status check, our language fallback and the parameter
//!    check (`crm_shared::template`) of a realistic send, repeated; CPU per validation.
//! 2. The API's `POST /v1/messages` of the same template send, through the real handler over
//!    the in-memory store (no network: the handler's own CPU, a lower bound of the function's);
//!    CPU per request, and the registry requests each send made.
//! 3. The function's measured `POST /v1/messages` CPU from `bench/results.json` (`make bench`,
//!    against the local endpoint), when present.
//!
//! The target: validation ≤ 5 % of the API's `POST /v1/messages` cost.

use std::time::Duration;

use lambda_http::{Body, Request};
use serde_json::Value;

use crm_shared::auth::Role;
use crm_shared::cursor::CursorCodec;
use crm_shared::store::TemplateStore;
use crm_shared::template::{TemplateRecord, check_status, language, validate_send};
use crm_shared::testing::{MemBlobs, MemQueue, MemStore, Op};

const VALIDATIONS: u32 = 200_000;
const REQUESTS: u32 = 2_000;

fn cpu() -> Duration {
    bench::procfs::cpu_time(std::process::id()).expect("process CPU time")
}

/// What the API does per template send beyond its other work: status, fallback, parameters.
fn validate_once(entries: &[TemplateRecord], send: &Value) -> bool {
    let available: Vec<(&str, bool)> = entries.iter().map(|e| (e.language.as_str(), e.is_approved())).collect();
    let chain = language::candidates(Some("en_US"), Some("en"));
    let Some(chosen) = language::choose(&chain, &available) else {
        return false;
    };
    let record = entries.iter().find(|e| e.language == chosen);
    if check_status(record).is_err() {
        return false;
    }
    let record = record.expect("approved");
    validate_send(
        record.schema.as_ref().expect("compiled"),
        record.parameter_format,
        &send["template"],
    )
    .is_ok()
}

fn per_unit_us(spent: Duration, units: u32) -> f64 {
    spent.as_secs_f64() * 1e6 / f64::from(units)
}

fn request(key: &str, body: &Value) -> Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("https://api.local/v1/messages")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::Text(body.to_string()))
        .expect("valid request")
}

/// The function's `POST /v1/messages` CPU per event in the last `make bench` report.
fn reported_post_cpu_us() -> Option<(String, f64)> {
    let path = devstack::workspace_root().join("bench/results.json");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    results["warm"].as_array()?.iter().find_map(|s| {
        let name = s["scenario"].as_str()?;
        let cpu = s["cpu_us_per_event"].as_f64()?;
        name.starts_with("POST /v1/messages").then(|| (name.to_owned(), cpu))
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let now = chrono::Utc::now();
    let store = MemStore::new();
    let created = crm_shared::admin::create_tenant(
        &store,
        crm_shared::tenant::NewTenant::validated("Bench", "100000000000009", "200000000000009", "token").unwrap(),
    )
    .await
    .unwrap();
    let tenant_id = created.tenant.tenant_id.clone();
    let agent = crm_shared::admin::create_api_key(&store, &tenant_id, Role::Agent)
        .await
        .unwrap();
    let record = TemplateRecord::from_meta(&tenant_id, &bench::samples::order_update_template(), now).unwrap();
    store.put_template(&record).await.unwrap();
    // New contacts have no language of their own: `auto` falls back to the tenant's default
    // (read once per instance, then remembered for 60 s).
    let settings = crm_shared::store::TemplateSettings {
        default_language: Some("en_US".into()),
    };
    store.put_template_settings(&tenant_id, &settings).await.unwrap();
    let entries = vec![record];

    // 1. Validation alone.
    let send = bench::samples::order_update_send("+447911000000");
    assert!(validate_once(&entries, &send), "the bench send is valid");
    for _ in 0..1000 {
        std::hint::black_box(validate_once(&entries, &send));
    }
    let start = cpu();
    let mut ok = 0u32;
    for _ in 0..VALIDATIONS {
        ok += u32::from(validate_once(
            std::hint::black_box(&entries),
            std::hint::black_box(&send),
        ));
    }
    let validation_us = per_unit_us(cpu() - start, VALIDATIONS);
    assert_eq!(ok, VALIDATIONS);

    // 2. The API handler's POST /v1/messages of the same send (each to a new number: the
    // contact is created too, as for a business's first template to a customer).
    let deps = api_fn::Deps::new(
        store.clone(),
        CursorCodec::new("bench"),
        MemBlobs::new(),
        MemQueue::new(),
    )
    .with_quota(crm_shared::quota::QuotaConfig {
        rate_per_second: 1_000_000,
        burst: 1_000_000,
    });
    let key = agent.api_key.expose().to_owned();
    let bodies: Vec<Value> = (0..REQUESTS + 100)
        .map(|i| bench::samples::order_update_send(&format!("+4479110{i:05}")))
        .collect();
    for body in &bodies[..100] {
        let resp = api_fn::handle(&deps, request(&key, body)).await.unwrap();
        assert_eq!(resp.status(), 202, "{:?}", resp.body());
    }
    let lookups_before = store.calls(Op::TemplateLanguages);
    let settings_before = store.calls(Op::TemplateSettings);
    let start = cpu();
    for body in &bodies[100..] {
        let resp = api_fn::handle(&deps, request(&key, body)).await.unwrap();
        assert_eq!(resp.status(), 202);
    }
    let handler_us = per_unit_us(cpu() - start, REQUESTS);
    let lookups = store.calls(Op::TemplateLanguages) - lookups_before;
    let settings_reads = store.calls(Op::TemplateSettings) - settings_before;

    println!("template send validation (status + language fallback + parameters), {VALIDATIONS} runs:");
    println!("  CPU per validation:                          {validation_us:>9.2} µs");
    println!(
        "POST /v1/messages (template, auto language) through the api handler over the in-memory store, {REQUESTS} requests:"
    );
    println!("  CPU per request:                             {handler_us:>9.2} µs");
    println!(
        "  validation / request:                        {:>9.2} %   (target ≤ 5 %)",
        100.0 * validation_us / handler_us
    );
    println!(
        "  registry reads per send:                     {:>9.2} Query (template languages), {:.2} settings reads",
        lookups as f64 / f64::from(REQUESTS),
        settings_reads as f64 / f64::from(REQUESTS)
    );
    match reported_post_cpu_us() {
        Some((name, cpu)) => println!(
            "  vs the api function's {name} in bench/results.json ({cpu:.0} µs CPU per event against the local endpoint): {:.2} %",
            100.0 * validation_us / cpu
        ),
        None => println!(
            "  (no POST /v1/messages figure in bench/results.json: run make bench for the function's own cost)"
        ),
    }
}
