//! Inbound media: webhook → media queue → media worker → Graph API (wiremock) → S3, large
//! media streamed in parts (multipart upload, aborted on failure), transient failures retried
//! fast, and a job that reaches the dead-letter queue marking its media failed.

use std::sync::Mutex;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;
use sha2::{Digest, Sha256};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crm_shared::blob::S3Blobs;
use crm_shared::config::GraphConfig;
use crm_shared::graph::GraphClient;
use crm_shared::jobs::{EnqueueError, RetryScheduler};
use crm_shared::message::{MediaStatus, MessageRecord, inbound_message_id, meta_time};
use crm_shared::store::{DynamoStore, MessageStore};
use e2e_tests::{new_tenant, post_webhook, stack, start_gateway_with_media_queue, unique_numeric_id};

const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\n not really an image, but bytes all the same";

fn image_delivery(pnid: &str, from: &str, wamid: &str, media_id: &str, sha256: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
            "contacts": [{"profile": {"name": "Media Sender"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": "1767225600", "type": "image",
                          "image": {"id": media_id, "mime_type": "image/png", "sha256": sha256}}]
        }}]}]
    })
    .to_string()
}

/// Records the backoff the worker asks for instead of touching a queue.
#[derive(Default)]
pub(crate) struct RecordedRetries(pub(crate) Mutex<Vec<i32>>);

impl RetryScheduler for RecordedRetries {
    async fn retry_after(&self, _receipt_handle: &str, seconds: i32) -> Result<(), EnqueueError> {
        self.0.lock().unwrap().push(seconds);
        Ok(())
    }
}

async fn own_queue(_sqs: &aws_sdk_sqs::Client) -> String {
    e2e_tests::own_queue("MediaQueue").await
}

/// A media function instance on the media function's role.
pub(crate) async fn media_worker<G, R>(graph: G, retry: R) -> media_fn::Deps<DynamoStore, G, S3Blobs, R> {
    let sdk = stack().sdk_for("MediaFunction").await;
    media_fn::Deps {
        store: stack().store_for("MediaFunction").await,
        graph,
        blobs: S3Blobs::new(crm_shared::aws::s3_client(&sdk), stack().media_bucket()),
        retry,
        max_receives: 5,
        // The wiremock Graph API serves media on http://127.0.0.1:port.
        media_hosts: crm_shared::config::Env::from_map([
            ("GRAPH_MEDIA_HOSTS", "127.0.0.1"),
            ("GRAPH_MEDIA_ALLOW_HTTP", "true"),
        ])
        .media_hosts()
        .unwrap(),
        buffers: media_fn::PartBudget::default(),
    }
}

async fn mock_graph(server: &MockServer, media_id: &str, token: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{media_id}")))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp",
            "url": format!("{}/lookaside/{media_id}", server.uri()),
            "mime_type": "image/png",
            "sha256": hex::encode(Sha256::digest(IMAGE)),
            "file_size": IMAGE.len(),
            "id": media_id,
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/lookaside/{media_id}")))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(IMAGE.to_vec()))
        .mount(server)
        .await;
}

fn graph_client(server: &MockServer) -> GraphClient {
    GraphClient::new(&GraphConfig {
        base_url: server.uri(),
        version: "v25.0".into(),
    })
    .unwrap()
}

pub(crate) async fn stored_message(store: &DynamoStore, tenant: &str, wamid: &str) -> MessageRecord {
    let id = inbound_message_id(tenant, wamid, meta_time(1_767_225_600, chrono::Utc::now()));
    store.get_message(tenant, &id).await.unwrap().expect("message stored")
}

pub(crate) async fn object_bytes(key: &str) -> Vec<u8> {
    let s3 = crm_shared::aws::s3_client(&stack().sdk().await);
    let obj = s3
        .get_object()
        .bucket(stack().media_bucket())
        .key(key)
        .send()
        .await
        .unwrap();
    obj.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn inbound_media_travels_through_the_queue_into_s3() {
    let store = stack().store().await;
    let sdk = stack().sdk().await;
    let sqs = crm_shared::aws::sqs_client(&sdk);
    let queue = own_queue(&sqs).await;
    let gw = start_gateway_with_media_queue(store.clone(), &queue).await;
    let tenant = new_tenant(&store, "Media").await.tenant;
    let graph = MockServer::start().await;
    mock_graph(&graph, "55501", "test-graph-token").await;

    let sha_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(IMAGE))
    };
    let body = image_delivery(
        &tenant.phone_number_id,
        "447700912345",
        "wamid.media1",
        "55501",
        &sha_b64,
    );
    assert_eq!(post_webhook(&gw.base, &body, None).await.0, 200);
    let before = stored_message(&store, &tenant.tenant_id, "wamid.media1").await;
    assert_eq!(
        before.media.as_ref().unwrap().status,
        MediaStatus::Pending,
        "message stored before its media"
    );

    let deps = media_worker(graph_client(&graph), RecordedRetries::default()).await;
    let handled = devstack::poller::poll_once(&sqs, &queue, 2, |event| media_fn::handle(&deps, event))
        .await
        .unwrap();
    assert_eq!(handled, 1);

    let after = stored_message(&store, &tenant.tenant_id, "wamid.media1").await;
    let media = after.media.unwrap();
    assert_eq!(media.status, MediaStatus::Available);
    assert_eq!(media.size, Some(IMAGE.len() as u64));
    let key = media.s3_key.unwrap();
    assert!(key.starts_with(&format!("tenants/{}/contacts/{}/", tenant.tenant_id, after.contact_id)));
    assert_eq!(object_bytes(&key).await, IMAGE);

    // A redelivered webhook re-enqueues nothing once the media is in; the queue is empty.
    assert_eq!(post_webhook(&gw.base, &body, None).await.0, 200);
    let again = devstack::poller::poll_once(&sqs, &queue, 1, |event| media_fn::handle(&deps, event))
        .await
        .unwrap();
    assert_eq!(again, 0);
}

pub(crate) fn record(job: &serde_json::Value, receive_count: u32) -> serde_json::Value {
    json!({
        "messageId": format!("sqs-{receive_count}"),
        "receiptHandle": format!("rh-{receive_count}"),
        "body": job.to_string(),
        "attributes": {"ApproximateReceiveCount": receive_count.to_string()},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "awsRegion": "us-east-1"
    })
}

pub(crate) fn event(records: Vec<serde_json::Value>) -> LambdaEvent<SqsEvent> {
    LambdaEvent::new(
        serde_json::from_value(json!({ "Records": records })).unwrap(),
        Context::default(),
    )
}

#[tokio::test]
async fn a_media_fetch_that_fails_twice_then_succeeds_is_stored_once() {
    let store = stack().store().await;
    let sdk = stack().sdk().await;
    let sqs = crm_shared::aws::sqs_client(&sdk);
    let queue = own_queue(&sqs).await;
    let gw = start_gateway_with_media_queue(store.clone(), &queue).await;
    let tenant = new_tenant(&store, "Flaky").await.tenant;
    let sha = hex::encode(Sha256::digest(IMAGE));
    let body = image_delivery(&tenant.phone_number_id, "447700912346", "wamid.flaky", "55502", &sha);
    assert_eq!(post_webhook(&gw.base, &body, None).await.0, 200);
    let message = stored_message(&store, &tenant.tenant_id, "wamid.flaky").await;
    let job =
        json!({"tenant_id": tenant.tenant_id, "message_id": message.message_id, "contact_id": message.contact_id});

    let graph = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v25.0/55502"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&graph)
        .await;
    mock_graph(&graph, "55502", "test-graph-token").await;
    let deps = media_worker(graph_client(&graph), RecordedRetries::default()).await;

    for attempt in 1..=2 {
        let resp = media_fn::handle(&deps, event(vec![record(&job, attempt)]))
            .await
            .unwrap();
        let failed: Vec<_> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        assert_eq!(
            failed,
            vec![format!("sqs-{attempt}")],
            "attempt {attempt} is reported for retry"
        );
        let m = stored_message(&store, &tenant.tenant_id, "wamid.flaky").await;
        assert_eq!(m.media.unwrap().status, MediaStatus::Pending);
    }
    assert_eq!(
        *deps.retry.0.lock().unwrap(),
        vec![5, 60],
        "fast first, then backing off"
    );
    let resp = media_fn::handle(&deps, event(vec![record(&job, 3)])).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let m = stored_message(&store, &tenant.tenant_id, "wamid.flaky").await;
    let media = m.media.unwrap();
    assert_eq!(media.status, MediaStatus::Available);
    assert_eq!(object_bytes(media.s3_key.as_deref().unwrap()).await, IMAGE);

    // A duplicate job after success changes nothing and succeeds.
    let resp = media_fn::handle(&deps, event(vec![record(&job, 1)])).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
}

#[tokio::test]
async fn media_failures_are_recorded_and_batches_report_only_their_failures() {
    let store = stack().store().await;
    let sdk = stack().sdk().await;
    let sqs = crm_shared::aws::sqs_client(&sdk);
    let queue = own_queue(&sqs).await;
    let gw = start_gateway_with_media_queue(store.clone(), &queue).await;
    let tenant = new_tenant(&store, "Failing").await.tenant;
    let sha = hex::encode(Sha256::digest(IMAGE));
    let pnid = &tenant.phone_number_id;
    for (wamid, media_id) in [
        ("wamid.ok", "600"),
        ("wamid.down", "601"),
        ("wamid.gone", "602"),
        ("wamid.bad", "603"),
    ] {
        let from = format!("4477009{}", &unique_numeric_id()[10..]);
        assert_eq!(
            post_webhook(&gw.base, &image_delivery(pnid, &from, wamid, media_id, &sha), None)
                .await
                .0,
            200
        );
    }
    let graph = MockServer::start().await;
    mock_graph(&graph, "600", "test-graph-token").await;
    Mock::given(method("GET"))
        .and(path("/v25.0/601"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&graph)
        .await;
    Mock::given(method("GET"))
        .and(path("/v25.0/602"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"message": "not found", "code": 100}})))
        .mount(&graph)
        .await;
    // 603: Meta serves bytes that do not match the announced checksum.
    Mock::given(method("GET"))
        .and(path("/v25.0/603"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "url": format!("{}/lookaside/603", graph.uri()), "mime_type": "image/png", "id": "603"
        })))
        .mount(&graph)
        .await;
    Mock::given(method("GET"))
        .and(path("/lookaside/603"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(b"tampered".to_vec()))
        .mount(&graph)
        .await;
    let deps = media_worker(graph_client(&graph), RecordedRetries::default()).await;
    let mut records = Vec::new();
    for (i, wamid) in ["wamid.ok", "wamid.down", "wamid.gone", "wamid.bad"].iter().enumerate() {
        let m = stored_message(&store, &tenant.tenant_id, wamid).await;
        let job = json!({"tenant_id": tenant.tenant_id, "message_id": m.message_id, "contact_id": m.contact_id});
        let mut r = record(&job, 5);
        r["messageId"] = json!(format!("m{i}"));
        records.push(r);
    }
    let resp = media_fn::handle(&deps, event(records)).await.unwrap();
    let mut failed: Vec<_> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    failed.sort();
    // Last attempt: the retryable failures (down, checksum) go to the DLQ; the permanent one
    // (gone) is acknowledged; the good one succeeds.
    assert_eq!(failed, vec!["m1".to_owned(), "m3".to_owned()]);
    let status = |m: MessageRecord| m.media.unwrap().status;
    assert_eq!(
        status(stored_message(&store, &tenant.tenant_id, "wamid.ok").await),
        MediaStatus::Available
    );
    for wamid in ["wamid.down", "wamid.gone", "wamid.bad"] {
        let m = stored_message(&store, &tenant.tenant_id, wamid).await;
        let media = m.media.unwrap();
        assert_eq!(media.status, MediaStatus::Failed, "{wamid}");
        assert!(media.failure.is_some() && media.s3_key.is_none(), "{wamid}");
    }

    // A malformed job is reported (and so ends in the DLQ), never panics.
    let mut bad = record(&json!("x"), 1);
    bad["body"] = json!("not json");
    let resp = media_fn::handle(&deps, event(vec![bad])).await.unwrap();
    assert_eq!(resp.batch_item_failures.len(), 1);
}

/// The Graph API as seen while the contact is erased: the message disappears during the download.
struct ErasedDuringDownload {
    inner: GraphClient,
    erase: Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
}

impl crm_shared::graph::MediaSource for ErasedDuringDownload {
    async fn media_info(
        &self,
        media_id: &str,
        token: &crm_shared::secret::Secret,
    ) -> Result<crm_shared::graph::MediaInfo, crm_shared::graph::GraphCallError> {
        self.inner.media_info(media_id, token).await
    }

    async fn download(
        &self,
        url: &str,
        token: &crm_shared::secret::Secret,
    ) -> Result<crm_shared::graph::MediaStream, crm_shared::graph::GraphCallError> {
        let data = self.inner.download(url, token).await;
        (self.erase)().await;
        data
    }
}

#[tokio::test]
async fn media_of_a_message_erased_mid_download_is_removed_again() {
    let store = stack().store().await;
    let sdk = stack().sdk().await;
    let sqs = crm_shared::aws::sqs_client(&sdk);
    let queue = own_queue(&sqs).await;
    let gw = start_gateway_with_media_queue(store.clone(), &queue).await;
    let tenant = new_tenant(&store, "Erased media").await.tenant;
    let graph = MockServer::start().await;
    mock_graph(&graph, "55509", "test-graph-token").await;
    let sha_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(IMAGE))
    };
    let body = image_delivery(
        &tenant.phone_number_id,
        "447700912399",
        "wamid.media9",
        "55509",
        &sha_b64,
    );
    assert_eq!(post_webhook(&gw.base, &body, None).await.0, 200);
    let message = stored_message(&store, &tenant.tenant_id, "wamid.media9").await;

    let ddb = crm_shared::aws::dynamodb_client(&sdk);
    let (pk, table) = (
        crm_shared::store::keys::message_pk(&tenant.tenant_id, &message.message_id),
        stack().table().to_owned(),
    );
    let erase = move || -> futures::future::BoxFuture<'static, ()> {
        let (ddb, pk, table) = (ddb.clone(), pk.clone(), table.clone());
        Box::pin(async move {
            ddb.delete_item()
                .table_name(table)
                .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(pk))
                .key(
                    "SK",
                    aws_sdk_dynamodb::types::AttributeValue::S(crm_shared::store::keys::MESSAGE_SK.into()),
                )
                .send()
                .await
                .unwrap();
        })
    };
    let graph = ErasedDuringDownload {
        inner: graph_client(&graph),
        erase: Box::new(erase),
    };
    let deps = media_worker(graph, RecordedRetries::default()).await;
    let handled = devstack::poller::poll_once(&sqs, &queue, 2, |event| media_fn::handle(&deps, event))
        .await
        .unwrap();
    assert_eq!(handled, 1);
    assert!(deps.retry.0.lock().unwrap().is_empty(), "the job succeeded");
    let key = crm_shared::blob::media_key(&tenant.tenant_id, &message.contact_id, &message.message_id);
    let s3 = crm_shared::aws::s3_client(&sdk);
    let head = s3.head_object().bucket(stack().media_bucket()).key(&key).send().await;
    assert!(
        head.is_err(),
        "the object stored for an erased message was deleted again"
    );
}

#[tokio::test]
async fn the_worker_fetches_only_digit_media_ids_and_only_from_allowed_hosts() {
    let store = stack().store().await;
    let sdk = stack().sdk().await;
    let sqs = crm_shared::aws::sqs_client(&sdk);
    let queue = own_queue(&sqs).await;
    let gw = start_gateway_with_media_queue(store.clone(), &queue).await;
    let tenant = new_tenant(&store, "Guarded").await.tenant;
    let sha = hex::encode(Sha256::digest(IMAGE));
    let pnid = &tenant.phone_number_id;
    for (wamid, media_id) in [("wamid.path", "../../me"), ("wamid.elsewhere", "604")] {
        let from = format!("4477009{}", &unique_numeric_id()[10..]);
        let body = image_delivery(pnid, &from, wamid, media_id, &sha);
        assert_eq!(post_webhook(&gw.base, &body, None).await.0, 200);
    }
    let graph = MockServer::start().await;
    // Meta's answer points the download somewhere not on the allow-list (loopback by name).
    let port = graph.address().port();
    Mock::given(method("GET"))
        .and(path("/v25.0/604"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "url": format!("http://localhost:{port}/lookaside/604"), "mime_type": "image/png", "id": "604"
        })))
        .mount(&graph)
        .await;
    let deps = media_worker(graph_client(&graph), RecordedRetries::default()).await;
    let mut records = Vec::new();
    for wamid in ["wamid.path", "wamid.elsewhere"] {
        let m = stored_message(&store, &tenant.tenant_id, wamid).await;
        let job = json!({"tenant_id": tenant.tenant_id, "message_id": m.message_id, "contact_id": m.contact_id});
        records.push(record(&job, 1));
    }
    let resp = media_fn::handle(&deps, event(records)).await.unwrap();
    // Permanent on the first attempt: acknowledged, not retried.
    assert!(resp.batch_item_failures.is_empty(), "{:?}", resp.batch_item_failures);
    for (wamid, reason) in [
        ("wamid.path", "media id is not a Meta media id"),
        ("wamid.elsewhere", "media URL host is not an allowed Meta media host"),
    ] {
        let media = stored_message(&store, &tenant.tenant_id, wamid).await.media.unwrap();
        assert_eq!(media.status, MediaStatus::Failed, "{wamid}");
        assert_eq!(media.failure.as_deref(), Some(reason), "{wamid}");
        assert!(media.s3_key.is_none());
    }
    // The non-digit id never reached the Graph API, and nothing was downloaded.
    let paths: Vec<String> = graph
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(paths, vec!["/v25.0/604".to_owned()]);
}

/// 12 MiB and a bit: two parts of the worker's 8 MiB, the last one short.
fn large_document() -> Vec<u8> {
    let len = 12 * 1024 * 1024 + 4321;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn document_delivery(pnid: &str, from: &str, wamid: &str, media_id: &str, sha256: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
            "contacts": [{"profile": {"name": "Document Sender"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": "1767225600", "type": "document",
                          "document": {"id": media_id, "mime_type": "application/pdf", "sha256": sha256,
                                       "filename": "statement.pdf"}}]
        }}]}]
    })
    .to_string()
}

/// Meta serving `data` as media `media_id`, announcing `announced_sha256`.
async fn mock_document(server: &MockServer, media_id: &str, data: &[u8], announced_sha256: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{media_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp",
            "url": format!("{}/lookaside/{media_id}", server.uri()),
            "mime_type": "application/pdf",
            "sha256": announced_sha256,
            "file_size": data.len(),
            "id": media_id,
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/lookaside/{media_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(data.to_vec()))
        .mount(server)
        .await;
}

/// Multipart uploads still open under `prefix` in the media bucket.
pub(crate) async fn open_uploads(prefix: &str) -> Vec<String> {
    let s3 = crm_shared::aws::s3_client(&stack().sdk().await);
    let out = s3
        .list_multipart_uploads()
        .bucket(stack().media_bucket())
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    out.uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect()
}

/// A tenant, a document message stored by the webhook for `media_id`, and its job.
pub(crate) async fn document_job(
    name: &str,
    wamid: &str,
    media_id: &str,
    sha256: &str,
) -> (String, MessageRecord, serde_json::Value) {
    let store = stack().store().await;
    let sqs = crm_shared::aws::sqs_client(&stack().sdk().await);
    let queue = own_queue(&sqs).await;
    let gw = start_gateway_with_media_queue(store.clone(), &queue).await;
    let tenant = new_tenant(&store, name).await.tenant;
    let from = format!("4477009{}", &unique_numeric_id()[10..]);
    let body = document_delivery(&tenant.phone_number_id, &from, wamid, media_id, sha256);
    assert_eq!(post_webhook(&gw.base, &body, None).await.0, 200);
    let message = stored_message(&store, &tenant.tenant_id, wamid).await;
    let job =
        json!({"tenant_id": tenant.tenant_id, "message_id": message.message_id, "contact_id": message.contact_id});
    (tenant.tenant_id, message, job)
}

#[tokio::test]
async fn a_large_document_is_streamed_into_s3_in_parts_and_arrives_intact() {
    let data = large_document();
    let sha = hex::encode(Sha256::digest(&data));
    let (tenant_id, message, job) = document_job("Large", "wamid.large", "55601", &sha).await;
    let graph = MockServer::start().await;
    mock_document(&graph, "55601", &data, &sha).await;
    let deps = media_worker(graph_client(&graph), RecordedRetries::default()).await;

    let resp = media_fn::handle(&deps, event(vec![record(&job, 1)])).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let store = stack().store().await;
    let media = stored_message(&store, &tenant_id, "wamid.large").await.media.unwrap();
    assert_eq!(media.status, MediaStatus::Available);
    assert_eq!(media.size, Some(data.len() as u64));
    let key = media.s3_key.unwrap();
    let stored = object_bytes(&key).await;
    assert_eq!(stored.len(), data.len());
    assert_eq!(
        hex::encode(Sha256::digest(&stored)),
        sha,
        "the stored bytes hash as Meta announced"
    );
    // A multipart object's ETag names its part count.
    let s3 = crm_shared::aws::s3_client(&stack().sdk().await);
    let head = s3
        .head_object()
        .bucket(stack().media_bucket())
        .key(&key)
        .send()
        .await
        .unwrap();
    assert!(head.e_tag().unwrap_or_default().ends_with("-2\""), "{:?}", head.e_tag());
    assert_eq!(head.content_type(), Some("application/pdf"));
    assert!(
        open_uploads(&crm_shared::blob::contact_media_prefix(&tenant_id, &message.contact_id))
            .await
            .is_empty()
    );
    assert_eq!(deps.buffers.available(), deps.buffers.total_bytes());
}

#[tokio::test]
async fn a_large_document_that_fails_its_checksum_leaves_no_object_and_no_upload() {
    let data = large_document();
    let mut tampered = data.clone();
    tampered[10 * 1024 * 1024] ^= 0xff;
    let sha = hex::encode(Sha256::digest(&data));
    let (tenant_id, message, job) = document_job("Tampered", "wamid.tampered", "55602", &sha).await;
    let graph = MockServer::start().await;
    mock_document(&graph, "55602", &tampered, &sha).await;
    let deps = media_worker(graph_client(&graph), RecordedRetries::default()).await;

    let resp = media_fn::handle(&deps, event(vec![record(&job, 1)])).await.unwrap();
    assert_eq!(resp.batch_item_failures.len(), 1, "retried");
    assert_eq!(*deps.retry.0.lock().unwrap(), vec![5]);
    let store = stack().store().await;
    let media = stored_message(&store, &tenant_id, "wamid.tampered")
        .await
        .media
        .unwrap();
    assert_eq!(media.status, MediaStatus::Pending);
    let prefix = crm_shared::blob::contact_media_prefix(&tenant_id, &message.contact_id);
    assert!(
        open_uploads(&prefix).await.is_empty(),
        "the multipart upload was aborted"
    );
    let key = crm_shared::blob::media_key(&tenant_id, &message.contact_id, &message.message_id);
    let s3 = crm_shared::aws::s3_client(&stack().sdk().await);
    assert!(
        s3.head_object()
            .bucket(stack().media_bucket())
            .key(&key)
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_download_that_fails_once_is_stored_on_the_fast_first_retry() {
    let sha = hex::encode(Sha256::digest(IMAGE));
    let (tenant_id, _, job) = document_job("Blip", "wamid.blip", "55603", &sha).await;
    let graph = MockServer::start().await;
    // The media URL answers 500 once (a blip at Meta's CDN), then the file.
    Mock::given(method("GET"))
        .and(path("/lookaside/55603"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&graph)
        .await;
    mock_document(&graph, "55603", IMAGE, &sha).await;
    let deps = media_worker(graph_client(&graph), RecordedRetries::default()).await;

    let resp = media_fn::handle(&deps, event(vec![record(&job, 1)])).await.unwrap();
    assert_eq!(resp.batch_item_failures.len(), 1);
    assert_eq!(
        *deps.retry.0.lock().unwrap(),
        vec![5],
        "the first retry comes within seconds"
    );
    let store = stack().store().await;
    assert_eq!(
        stored_message(&store, &tenant_id, "wamid.blip")
            .await
            .media
            .unwrap()
            .status,
        MediaStatus::Pending
    );
    let resp = media_fn::handle(&deps, event(vec![record(&job, 2)])).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let media = stored_message(&store, &tenant_id, "wamid.blip").await.media.unwrap();
    assert_eq!(media.status, MediaStatus::Available);
    assert_eq!(object_bytes(media.s3_key.as_deref().unwrap()).await, IMAGE);
}

/// A queue pair of this test's own standing in for MediaQueue and its MediaDLQ: the job is
/// dead-lettered after `max_receives` receives, each visible again at once.
async fn own_queue_with_dead_letters(max_receives: u32) -> (String, String) {
    let sqs = crm_shared::aws::sqs_client(&stack().sdk().await);
    let dlq = e2e_tests::own_queue("MediaDLQ").await;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let queue = own_queue(&sqs).await;
    sqs.set_queue_attributes()
        .queue_url(&queue)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}).to_string(),
        )
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "0")
        .send()
        .await
        .unwrap();
    (queue, dlq)
}

#[tokio::test]
async fn a_media_job_that_reaches_the_dead_letter_queue_marks_its_media_failed() {
    let store = stack().store().await;
    let sdk = stack().sdk().await;
    let sqs = crm_shared::aws::sqs_client(&sdk);
    let (queue, dlq) = own_queue_with_dead_letters(2).await;
    let gw = start_gateway_with_media_queue(store.clone(), &queue).await;
    let tenant = new_tenant(&store, "Dead letters").await.tenant;
    let sha = hex::encode(Sha256::digest(IMAGE));
    let body = image_delivery(&tenant.phone_number_id, "447700912377", "wamid.dead", "55604", &sha);
    assert_eq!(post_webhook(&gw.base, &body, None).await.0, 200);

    // A worker that dies on every receive (out of memory, say) records nothing; the queue
    // dead-letters the job after its last receive.
    let mut received = 0;
    for _ in 0..20 {
        let died = devstack::poller::poll_once(&sqs, &queue, 1, |_event| async {
            Err::<aws_lambda_events::sqs::SqsBatchResponse, lambda_runtime::Error>("worker died".into())
        })
        .await;
        if died.is_err() {
            received += 1;
        }
        if received == 2 {
            break;
        }
    }
    assert_eq!(received, 2);
    assert_eq!(
        devstack::poller::poll_once(&sqs, &queue, 1, |_event| async {
            Ok::<_, lambda_runtime::Error>(aws_lambda_events::sqs::SqsBatchResponse::default())
        })
        .await
        .unwrap(),
        0,
        "moved to the dead-letter queue"
    );
    let m = stored_message(&store, &tenant.tenant_id, "wamid.dead").await;
    assert_eq!(m.media.unwrap().status, MediaStatus::Pending, "nothing was recorded");

    let deps = media_fn::dead_letter::DeadLetterDeps {
        store: stack().store_for("MediaDeadLetterFunction").await,
    };
    let handled = devstack::poller::poll_once(&sqs, &dlq, 2, |event| {
        media_fn::dead_letter::handle_dead_letters(&deps, event)
    })
    .await
    .unwrap();
    assert_eq!(handled, 1);
    let media = stored_message(&store, &tenant.tenant_id, "wamid.dead")
        .await
        .media
        .unwrap();
    assert_eq!(media.status, MediaStatus::Failed);
    assert_eq!(media.failure.as_deref(), Some(media_fn::dead_letter::RETRIES_EXHAUSTED));
    assert!(media.s3_key.is_none());
}
