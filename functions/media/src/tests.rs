//! Unit tests of the media worker over the in-memory ports (`crm_shared::testing`): which
//! failures are retried with backoff, which mark the media failed at once, what the last
//! allowed receive does, and an erasure that lands while the media is downloading.

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use bytes::Bytes;
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;

use crm_shared::blob::media_key;
use crm_shared::contact::Contact;
use crm_shared::graph::{GraphCallError, MAX_MEDIA_BYTES, MediaInfo};
use crm_shared::message::{MediaStatus, MessageRecord};
use crm_shared::secret::Secret;
use crm_shared::tenant::Tenant;
use crm_shared::testing::graph::meta_error;
use crm_shared::testing::{FakeGraph, MemBlobs, MemQueue, MemStore, Op, fixtures};

use crate::{Deps, handle};

const MAX_RECEIVES: u32 = 5;
/// Meta media ids are digits.
const MEDIA_ID: &str = "1001";
const IMAGE: &[u8] = b"\xff\xd8\xff\xe0 a tiny jpeg";

struct Worker {
    store: MemStore,
    graph: FakeGraph,
    blobs: MemBlobs,
    queue: MemQueue,
    deps: Deps<MemStore, FakeGraph, MemBlobs, MemQueue>,
    tenant: Tenant,
    contact: Contact,
}

fn worker() -> Worker {
    let (store, graph, blobs, queue) = (MemStore::new(), FakeGraph::new(), MemBlobs::new(), MemQueue::new());
    let tenant = fixtures::tenant("106540352242922");
    let contact = fixtures::contact(&tenant.tenant_id, "+447700900123", Utc::now());
    store.add_tenant(tenant.clone(), Secret::new("graph-token"));
    store.add_contact(contact.clone());
    let deps = Deps {
        store: store.clone(),
        graph: graph.clone(),
        blobs: blobs.clone(),
        retry: queue.clone(),
        max_receives: MAX_RECEIVES,
        // The fake Graph serves media from https://media.graph.test/.
        media_hosts: crm_shared::media_url::MediaHosts::parse("graph.test", false).unwrap(),
    };
    Worker {
        store,
        graph,
        blobs,
        queue,
        deps,
        tenant,
        contact,
    }
}

fn record(message: &MessageRecord, attempt: u32) -> SqsMessage {
    let mut r = SqsMessage::default();
    r.message_id = Some("sqs-1".into());
    r.receipt_handle = Some("receipt-1".into());
    r.body = Some(
        json!({"tenant_id": message.tenant_id, "message_id": message.message_id, "contact_id": message.contact_id})
            .to_string(),
    );
    r.attributes
        .insert("ApproximateReceiveCount".into(), attempt.to_string());
    r
}

impl Worker {
    /// An inbound image whose announced checksum matches [`IMAGE`], served by the fake Graph.
    fn image_message(&self) -> MessageRecord {
        let info = self.graph.add_media(MEDIA_ID, IMAGE, "image/jpeg");
        let m = fixtures::inbound_media_message(&self.contact, MEDIA_ID, info.sha256.as_deref());
        self.store.add_message(m.clone());
        m
    }

    /// Runs one record on receive `attempt`; `true` when it was reported failed.
    async fn run(&self, record: SqsMessage) -> bool {
        let mut event = SqsEvent::default();
        event.records = vec![record];
        let response = handle(&self.deps, LambdaEvent::new(event, Context::default()))
            .await
            .expect("the handler never fails the invocation");
        !response.batch_item_failures.is_empty()
    }

    fn media_status(&self, m: &MessageRecord) -> Option<MediaStatus> {
        self.store
            .message(&m.tenant_id, &m.message_id)
            .and_then(|m| m.media)
            .map(|media| media.status)
    }
}

/// What one failure does on one receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    media: MediaStatus,
    reported: bool,
    retry_after: Option<i32>,
}

const RETRY: fn(i32) -> Expected = |secs| Expected {
    media: MediaStatus::Pending,
    reported: true,
    retry_after: Some(secs),
};
/// Marked failed, record done with (no redelivery can help).
const PERMANENT: Expected = Expected {
    media: MediaStatus::Failed,
    reported: false,
    retry_after: None,
};
/// Marked failed on the last receive; the record goes to the DLQ.
const LAST: Expected = Expected {
    media: MediaStatus::Failed,
    reported: true,
    retry_after: None,
};

#[tokio::test]
async fn failures_by_kind_and_attempt() {
    type Break = fn(&Worker);
    let cases: Vec<(&str, Break, [Expected; 3])> = vec![
        (
            "media id unknown or expired",
            |w| w.graph.fail_next_media_info(meta_error(400, Some(100))),
            [PERMANENT; 3],
        ),
        (
            "announced larger than WhatsApp allows",
            |w| {
                let info = MediaInfo {
                    file_size: Some(MAX_MEDIA_BYTES + 1),
                    ..w.graph.add_media(MEDIA_ID, IMAGE, "image/jpeg")
                };
                w.graph.set_media(MEDIA_ID, info, Bytes::from_static(IMAGE));
            },
            [PERMANENT; 3],
        ),
        (
            "download URL not on an allowed media host",
            |w| {
                let info = MediaInfo {
                    url: format!("https://graph.test.evil.example/{MEDIA_ID}"),
                    ..w.graph.add_media(MEDIA_ID, IMAGE, "image/jpeg")
                };
                w.graph.set_media(MEDIA_ID, info, Bytes::from_static(IMAGE));
            },
            [PERMANENT; 3],
        ),
        (
            "download URL over plain http",
            |w| {
                let info = MediaInfo {
                    url: format!("http://media.graph.test/{MEDIA_ID}"),
                    ..w.graph.add_media(MEDIA_ID, IMAGE, "image/jpeg")
                };
                w.graph.set_media(MEDIA_ID, info, Bytes::from_static(IMAGE));
            },
            [PERMANENT; 3],
        ),
        (
            "too large while downloading",
            |w| w.graph.fail_next_download(GraphCallError::TooLarge),
            [PERMANENT; 3],
        ),
        (
            "tenant without a token",
            |w| w.store.remove_graph_token(&w.tenant.tenant_id),
            [PERMANENT; 3],
        ),
        (
            "checksum mismatch",
            |w| {
                let info = w.graph.add_media(MEDIA_ID, IMAGE, "image/jpeg");
                w.graph
                    .set_media(MEDIA_ID, info, Bytes::from_static(b"corrupted bytes"));
            },
            [RETRY(5), RETRY(720), LAST],
        ),
        (
            "size differs from the announcement",
            |w| {
                let info = MediaInfo {
                    file_size: Some(IMAGE.len() as u64 + 1),
                    sha256: None,
                    ..w.graph.add_media(MEDIA_ID, IMAGE, "image/jpeg")
                };
                w.graph.set_media(MEDIA_ID, info, Bytes::from_static(IMAGE));
            },
            [RETRY(5), RETRY(720), LAST],
        ),
        (
            "Meta 5xx",
            |w| w.graph.fail_next_media_info(meta_error(500, Some(131000))),
            [RETRY(5), RETRY(720), LAST],
        ),
        (
            "Meta throttling",
            |w| w.graph.fail_next_media_info(meta_error(429, Some(4))),
            [RETRY(5), RETRY(720), LAST],
        ),
        (
            "token expired (an operator may replace it)",
            |w| w.graph.fail_next_media_info(meta_error(401, Some(190))),
            [RETRY(5), RETRY(720), LAST],
        ),
        (
            "network during download",
            |w| w.graph.fail_next_download(GraphCallError::Transport("reset".into())),
            [RETRY(5), RETRY(720), LAST],
        ),
        (
            "object storage down",
            |w| w.blobs.fail_next_put(),
            [RETRY(5), RETRY(720), LAST],
        ),
        (
            "database down",
            |w| w.store.fail_next_backend(Op::GetMessage),
            [RETRY(5), RETRY(720), LAST],
        ),
    ];
    for (name, break_it, expected) in cases {
        for (attempt, want) in [1, 3, MAX_RECEIVES].into_iter().zip(expected) {
            let w = worker();
            let m = w.image_message();
            break_it(&w);
            let reported = w.run(record(&m, attempt)).await;
            let case = format!("{name}, receive {attempt}");
            assert_eq!(w.media_status(&m), Some(want.media), "{case}: media status");
            assert_eq!(reported, want.reported, "{case}: partial batch response");
            assert_eq!(
                w.queue.retries(),
                want.retry_after
                    .map(|secs| ("receipt-1".to_owned(), secs))
                    .into_iter()
                    .collect::<Vec<_>>(),
                "{case}: redelivery delay"
            );
            assert!(w.blobs.keys().is_empty(), "{case}: nothing stored");
            if want.media == MediaStatus::Failed {
                let failure = w
                    .store
                    .message(&m.tenant_id, &m.message_id)
                    .unwrap()
                    .media
                    .unwrap()
                    .failure;
                assert!(failure.is_some(), "{case}: the reason is kept");
            }
        }
    }
}

#[tokio::test]
async fn fetched_media_is_stored_under_the_contact_and_marked_available() {
    let w = worker();
    let m = w.image_message();
    assert!(!w.run(record(&m, 1)).await);
    let key = media_key(&w.tenant.tenant_id, &w.contact.contact_id, &m.message_id);
    let object = w.blobs.get(&key).expect("object stored");
    assert_eq!(object.data, Bytes::from_static(IMAGE));
    assert_eq!(object.content_type.as_deref(), Some("image/jpeg"));
    let media = w.store.message(&m.tenant_id, &m.message_id).unwrap().media.unwrap();
    assert_eq!(media.status, MediaStatus::Available);
    assert_eq!(media.s3_key.as_deref(), Some(key.as_str()));
    assert_eq!(media.size, Some(IMAGE.len() as u64));
    // A duplicate job finds it available and fetches nothing.
    assert!(!w.run(record(&m, 1)).await);
    assert_eq!(w.graph.media_info_calls(), 1);
}

#[tokio::test]
async fn media_of_a_contact_erased_mid_download_is_deleted_again() {
    let w = worker();
    let m = w.image_message();
    let (store, t, c) = (
        w.store.clone(),
        w.tenant.tenant_id.clone(),
        w.contact.contact_id.clone(),
    );
    w.graph.on_download(move || store.erase_contact(&t, &c));
    assert!(!w.run(record(&m, 1)).await, "done with: nothing left to fetch for");
    let key = media_key(&w.tenant.tenant_id, &w.contact.contact_id, &m.message_id);
    assert!(
        w.blobs.get(&key).is_none(),
        "the object stored after the erasure is gone"
    );
    assert_eq!(w.blobs.deleted(), vec![key]);
    assert!(w.store.message(&m.tenant_id, &m.message_id).is_none());
}

#[tokio::test]
async fn nothing_is_fetched_for_erased_messages_or_expired_media() {
    let w = worker();
    let erased = w.image_message();
    w.store.erase_contact(&w.tenant.tenant_id, &w.contact.contact_id);
    assert!(!w.run(record(&erased, 1)).await);

    let w = worker();
    let mut expired = w.image_message();
    expired.media.as_mut().unwrap().status = MediaStatus::Expired;
    w.store.add_message(expired.clone());
    assert!(!w.run(record(&expired, 1)).await);
    assert_eq!(
        w.media_status(&expired),
        Some(MediaStatus::Expired),
        "retention's removal stands"
    );
    assert_eq!(w.graph.media_info_calls(), 0);
}

#[tokio::test]
async fn a_job_that_is_no_media_job_goes_to_the_dead_letter_queue() {
    let w = worker();
    let mut r = record(&w.image_message(), 1);
    r.body = Some("{}".into());
    assert!(w.run(r).await);
    assert!(w.queue.retries().is_empty());
}

#[tokio::test]
async fn a_media_id_that_is_not_digits_never_reaches_the_graph_api() {
    let w = worker();
    let m = fixtures::inbound_media_message(&w.contact, "../../me", None);
    w.store.add_message(m.clone());
    assert!(!w.run(record(&m, 1)).await, "permanent: done with, not retried");
    assert_eq!(w.media_status(&m), Some(MediaStatus::Failed));
    assert_eq!((w.graph.media_info_calls(), w.graph.download_calls()), (0, 0));
}

#[tokio::test]
async fn a_download_url_off_the_allow_list_is_never_fetched() {
    let w = worker();
    let m = w.image_message();
    let info = MediaInfo {
        url: format!("https://evilgraph.test/{MEDIA_ID}"),
        ..w.graph.add_media(MEDIA_ID, IMAGE, "image/jpeg")
    };
    w.graph.set_media(MEDIA_ID, info, Bytes::from_static(IMAGE));
    assert!(!w.run(record(&m, 1)).await);
    assert_eq!(w.media_status(&m), Some(MediaStatus::Failed));
    assert_eq!((w.graph.media_info_calls(), w.graph.download_calls()), (1, 0));
}
