//! The media worker's peak memory with big media (not a test): one invocation carrying
//! `--files` (10) documents of `--mib` (100) MiB each, fetched from a fake Graph API that
//! streams them and stored in the local endpoint's media bucket through the real handler
//! (`media_fn::handle`, the function's default part size and byte budget). The worker runs in
//! a child process of its own, as in Lambda, so its peak RSS (`VmHWM`) is the worker's alone:
//! the fake Graph API and moto run elsewhere. Limit from issue 13: below 128 MB.
//!
//! `make bench-media` (`MEDIA_RSS_ARGS="--files N --mib M"` to change it).

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crm_shared::admin;
use crm_shared::config::{Env, GraphConfig};
use crm_shared::jobs::{EnqueueError, RetryScheduler};
use crm_shared::message::MediaStatus;
use crm_shared::store::{ContactStore, InboundStore, InboundWrite, MessageStore};
use crm_shared::tenant::NewTenant;
use crm_shared::testing::fixtures;

/// The limit the issue sets on the worker's peak RSS (128 MB).
const LIMIT_BYTES: u64 = 128_000_000;
/// The chunk the fake Graph API writes at a time.
const CHUNK: usize = 64 * 1024;

struct Options {
    files: usize,
    mib: usize,
}

fn options() -> Options {
    let mut o = Options { files: 10, mib: 100 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--files", Some(v)) => o.files = v,
            ("--mib", Some(v)) => o.mib = v,
            _ => {
                eprintln!("usage: media-rss [--files N] [--mib M]");
                std::process::exit(2);
            }
        }
    }
    o
}

/// The file every media id serves: one pseudo-random 64 KiB block, repeated (so the fake
/// Graph API holds 64 KiB, not the file).
fn block() -> Bytes {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    Bytes::from(
        (0..CHUNK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>(),
    )
}

fn file_sha256(block: &Bytes, size: usize) -> String {
    let mut h = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        h.update(&block[..n]);
        left -= n;
    }
    hex::encode(h.finalize())
}

/// `GET /v25.0/{id}` (media info) and `GET /media/{id}` (the file, streamed in 64 KiB chunks).
async fn serve_graph(listener: TcpListener, block: Bytes, size: usize, sha256: String) {
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (block, sha256, base) = (block.clone(), sha256.clone(), base.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (block, sha256, base) = (block.clone(), sha256.clone(), base.clone());
                async move {
                    let path = req.uri().path().to_owned();
                    let body: BoxBody<Bytes, Infallible> = if let Some(id) = path.strip_prefix("/media/") {
                        let chunks = (0..size.div_ceil(CHUNK)).map(move |i| {
                            let n = (size - i * CHUNK).min(CHUNK);
                            Ok::<_, Infallible>(Frame::data(block.slice(..n)))
                        });
                        let _ = id;
                        BodyExt::boxed(StreamBody::new(futures::stream::iter(chunks)))
                    } else {
                        let id = path.rsplit('/').next().unwrap_or_default();
                        let info = json!({
                            "messaging_product": "whatsapp", "url": format!("{base}/media/{id}"),
                            "mime_type": "application/pdf", "sha256": sha256, "file_size": size, "id": id,
                        });
                        BodyExt::boxed(Full::new(Bytes::from(info.to_string())))
                    };
                    Ok::<_, Infallible>(Response::new(body))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Retries are not the point here; the worker's requests for them are counted.
struct NoRetries;

impl RetryScheduler for NoRetries {
    async fn retry_after(&self, _receipt_handle: &str, _seconds: i32) -> Result<(), EnqueueError> {
        Ok(())
    }
}

fn own_memory_kib() -> (u64, u64) {
    bench::procfs::memory_kib(std::process::id()).expect("/proc/self/status")
}

/// The child: one invocation of the media handler over the jobs in `MEDIA_RSS_JOBS`.
async fn worker() {
    let env = Env::from_env();
    let resources = env.resources();
    let sdk = crm_shared::aws::load_sdk_config().await;
    let deps = media_fn::Deps {
        store: crm_shared::store::DynamoStore::new(crm_shared::aws::dynamodb_client(&sdk), resources.table),
        graph: crm_shared::graph::GraphClient::new(&GraphConfig {
            base_url: std::env::var("GRAPH_API_BASE").expect("GRAPH_API_BASE"),
            version: "v25.0".into(),
        })
        .expect("graph client"),
        blobs: crm_shared::blob::S3Blobs::new(crm_shared::aws::s3_client(&sdk), resources.media_bucket),
        retry: NoRetries,
        max_receives: 5,
        media_hosts: crm_shared::media_url::MediaHosts::loopback(),
        buffers: media_fn::PartBudget::default(),
    };
    let jobs: Vec<serde_json::Value> =
        serde_json::from_str(&std::env::var("MEDIA_RSS_JOBS").expect("MEDIA_RSS_JOBS")).expect("jobs");
    let records: Vec<serde_json::Value> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            json!({"messageId": format!("m{i}"), "receiptHandle": format!("r{i}"), "body": job.to_string(),
                   "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                   "eventSource": "aws:sqs", "awsRegion": "us-east-1"})
        })
        .collect();
    let event = serde_json::from_value(json!({ "Records": records })).expect("event");
    let (_, rss_before) = own_memory_kib();
    let start = Instant::now();
    let response = media_fn::handle(&deps, lambda_runtime::LambdaEvent::new(event, Default::default()))
        .await
        .expect("handler");
    let elapsed = start.elapsed().as_secs_f64();
    let (peak, _) = own_memory_kib();
    println!(
        "{}",
        json!({"peak_rss_kib": peak, "rss_before_kib": rss_before, "elapsed_s": elapsed,
               "failed": response.batch_item_failures.len(),
               "part_bytes": deps.buffers.part_bytes(), "budget_bytes": deps.buffers.total_bytes()})
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::var_os("MEDIA_RSS_JOBS").is_some() {
        return worker().await;
    }
    let o = options();
    let size = o.mib * 1024 * 1024;
    let (moto, store) = bench::endpoint::provisioned_store(&devstack::workspace_root(), "app-secret").await;
    let new = NewTenant::validated("Media", "106540352242922", "100000000000000", "bench-graph-token").expect("tenant");
    let tenant_id = admin::create_tenant(&store, new)
        .await
        .expect("tenant")
        .tenant
        .tenant_id;
    let contact = fixtures::contact(&tenant_id, "+447700900001", chrono::Utc::now());
    store.create_contact(&contact).await.expect("contact");
    let block = block();
    let sha256 = file_sha256(&block, size);
    let mut jobs = Vec::new();
    let mut ids = Vec::new();
    for i in 0..o.files {
        let mut m = fixtures::inbound_media_message(&contact, &format!("7000{i}"), Some(&sha256));
        m.message_type = "document".into();
        let write = InboundWrite {
            message: m.clone(),
            matched_by: None,
            profile_name: None,
            consent: None,
            new_contact: None,
        };
        store.record_inbound(&write).await.expect("message");
        jobs.push(json!({"tenant_id": tenant_id, "message_id": m.message_id, "contact_id": contact.contact_id}));
        ids.push(m.message_id);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let graph_base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve_graph(listener, block, size, sha256));

    eprintln!(
        "media-rss: {} documents of {} MiB in one invocation (worker in its own process)…",
        o.files, o.mib
    );
    let exe = std::env::current_exe().expect("own path");
    let child = tokio::process::Command::new(exe)
        .env("MEDIA_RSS_JOBS", serde_json::to_string(&jobs).expect("jobs"))
        .env("AWS_ENDPOINT_URL", moto.endpoint_url())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("GRAPH_API_BASE", &graph_base)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("worker ran");
    if !child.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&child.stderr));
        panic!("worker failed: {}", child.status);
    }
    let report: serde_json::Value = serde_json::from_slice(&child.stdout).expect("worker report");
    let mut stored = 0;
    for id in &ids {
        let media = store
            .get_message(&tenant_id, id)
            .await
            .expect("read")
            .and_then(|m| m.media)
            .expect("media");
        if media.status == MediaStatus::Available && media.size == Some(size as u64) {
            stored += 1;
        }
    }
    let peak_kib = report["peak_rss_kib"].as_u64().unwrap_or_default();
    let peak_bytes = peak_kib * 1024;
    let verdict = if peak_bytes < LIMIT_BYTES && stored == o.files {
        "PASS"
    } else {
        "FAIL"
    };
    let elapsed = report["elapsed_s"].as_f64().unwrap_or_default();
    println!(
        "media worker, {} × {} MiB documents in one invocation: peak RSS {:.1} MiB ({:.1} MB; limit 128 MB) — {verdict}",
        o.files,
        o.mib,
        peak_kib as f64 / 1024.0,
        peak_bytes as f64 / 1e6,
    );
    println!(
        "  RSS before the invocation {:.1} MiB; parts of {} MiB, byte budget {} MiB; {stored}/{} stored available and whole; {} reported for retry; {:.1} s ({:.0} MiB/s into the local endpoint)",
        report["rss_before_kib"].as_u64().unwrap_or_default() as f64 / 1024.0,
        report["part_bytes"].as_u64().unwrap_or_default() / (1024 * 1024),
        report["budget_bytes"].as_u64().unwrap_or_default() / (1024 * 1024),
        o.files,
        report["failed"],
        elapsed,
        (o.files * o.mib) as f64 / elapsed.max(1e-9),
    );
    drop(moto);
    if verdict == "FAIL" {
        std::process::exit(1);
    }
}
