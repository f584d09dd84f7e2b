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

use crate::{Deps, PartBudget, handle};

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
        buffers: PartBudget::default(),
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

/// A file of `len` bytes that is not one repeated byte (so a part out of order shows).
fn document(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

impl Worker {
    /// A worker whose parts are `part` bytes and whose budget is `total` bytes.
    fn with_parts(part: usize, total: usize) -> Worker {
        let mut w = worker();
        w.deps.buffers = PartBudget::new(part, total);
        w
    }

    fn document_message(&self, media_id: &str, data: &[u8]) -> MessageRecord {
        let info = self.graph.add_media(media_id, data, "application/pdf");
        let m = fixtures::inbound_media_message(&self.contact, media_id, info.sha256.as_deref());
        self.store.add_message(m.clone());
        m
    }

    fn key(&self, m: &MessageRecord) -> String {
        media_key(&self.tenant.tenant_id, &self.contact.contact_id, &m.message_id)
    }
}

#[tokio::test]
async fn a_file_larger_than_a_part_is_streamed_in_parts_and_stored_whole() {
    let w = Worker::with_parts(10, 30);
    let data = document(95);
    let m = w.document_message("2001", &data);
    assert!(!w.run(record(&m, 1)).await);
    let key = w.key(&m);
    assert_eq!(w.blobs.get(&key).expect("stored").data, Bytes::from(data.clone()));
    let parts = w.blobs.completed_parts();
    assert_eq!(parts, vec![(key.clone(), vec![10, 10, 10, 10, 10, 10, 10, 10, 10, 5])]);
    let media = w.store.message(&m.tenant_id, &m.message_id).unwrap().media.unwrap();
    assert_eq!((media.status, media.size), (MediaStatus::Available, Some(95)));
    assert_eq!(w.deps.buffers.available(), 30, "every reserved byte is returned");
    assert!(w.blobs.aborted_uploads().is_empty());
}

#[tokio::test]
async fn a_file_that_fits_in_one_part_is_one_put() {
    let w = Worker::with_parts(10, 30);
    let m = w.document_message("2002", &document(9));
    assert!(!w.run(record(&m, 1)).await);
    assert!(w.blobs.get(&w.key(&m)).is_some());
    assert!(w.blobs.completed_parts().is_empty(), "no multipart upload");
}

#[tokio::test]
async fn a_file_of_unannounced_size_is_streamed_and_measured() {
    let w = Worker::with_parts(10, 10);
    let data = document(42);
    let info = MediaInfo {
        file_size: None,
        ..w.graph.add_media("2003", &data, "application/pdf")
    };
    w.graph.set_media("2003", info.clone(), Bytes::from(data.clone()));
    let m = fixtures::inbound_media_message(&w.contact, "2003", info.sha256.as_deref());
    w.store.add_message(m.clone());
    assert!(!w.run(record(&m, 1)).await);
    assert_eq!(w.blobs.get(&w.key(&m)).unwrap().data, Bytes::from(data));
    assert_eq!(w.blobs.completed_parts()[0].1, vec![10, 10, 10, 10, 2]);
}

#[tokio::test]
async fn a_multipart_failure_aborts_the_upload_and_retries() {
    type Break = fn(&Worker);
    let cases: Vec<(&str, Break)> = vec![
        ("a part upload fails", |w| {
            // start_upload succeeds, the first part fails.
            w.blobs.fail_next_bulk_after(1);
        }),
        ("the connection drops mid-body", |w| {
            w.graph
                .fail_next_download_midway(GraphCallError::Transport("reset".into()))
        }),
        ("the checksum does not match", |w| {
            let info = w.graph.add_media("2004", &document(35), "application/pdf");
            let mut other = document(35);
            other[30] ^= 1;
            w.graph.set_media("2004", info, Bytes::from(other));
        }),
        ("more bytes than announced", |w| {
            let info = MediaInfo {
                file_size: Some(25),
                ..w.graph.add_media("2004", &document(35), "application/pdf")
            };
            w.graph.set_media("2004", info, Bytes::from(document(35)));
        }),
        ("completion fails", |w| w.blobs.fail_next_bulk_after(5)),
    ];
    for (name, break_it) in cases {
        let w = Worker::with_parts(10, 20);
        let m = w.document_message("2004", &document(35));
        break_it(&w);
        assert!(w.run(record(&m, 1)).await, "{name}: reported for retry");
        assert_eq!(w.queue.retries(), vec![("receipt-1".to_owned(), 5)], "{name}");
        assert_eq!(w.media_status(&m), Some(MediaStatus::Pending), "{name}");
        assert!(w.blobs.keys().is_empty(), "{name}: nothing stored");
        assert_eq!(w.blobs.aborted_uploads(), vec![w.key(&m)], "{name}: upload aborted");
        assert_eq!(w.deps.buffers.available(), 20, "{name}: the budget is whole again");
    }
}

#[tokio::test]
async fn a_batch_of_large_files_shares_one_budget_and_all_arrive() {
    // Ten files of ten parts each through a budget of three parts.
    let w = Worker::with_parts(8, 24);
    let mut messages = Vec::new();
    for i in 0..10 {
        let data = document(80 + i);
        messages.push((w.document_message(&format!("30{i}"), &data), data));
    }
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .enumerate()
        .map(|(i, (m, _))| {
            let mut r = record(m, 1);
            r.message_id = Some(format!("sqs-{i}"));
            r
        })
        .collect();
    let response = handle(&w.deps, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    for (m, data) in &messages {
        assert_eq!(&w.blobs.get(&w.key(m)).unwrap().data[..], &data[..]);
    }
    assert_eq!(w.deps.buffers.available(), 24);
}

#[tokio::test]
async fn a_transfer_still_running_at_the_deadline_is_stopped_and_retried() {
    let w = Worker::with_parts(10, 20);
    let m = w.document_message("2005", &document(35));
    w.graph.stall_next_download_midway();
    let mut event = SqsEvent::default();
    event.records = vec![record(&m, 1)];
    let mut context = Context::default();
    // Less time left than the margin: running transfers stop at once.
    context.deadline = (Utc::now().timestamp_millis() + 1_000) as u64;
    let response = handle(&w.deps, LambdaEvent::new(event, context)).await.unwrap();
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "reported for retry, not timed out"
    );
    assert_eq!(w.queue.retries(), vec![("receipt-1".to_owned(), 5)]);
    assert_eq!(w.blobs.aborted_uploads(), vec![w.key(&m)]);
    assert_eq!(w.media_status(&m), Some(MediaStatus::Pending));
}

mod dead_letters {
    use super::*;
    use crate::dead_letter::{DeadLetterDeps, RETRIES_EXHAUSTED, handle_dead_letters};

    async fn run(w: &Worker, record: SqsMessage) -> bool {
        let mut event = SqsEvent::default();
        event.records = vec![record];
        let deps = DeadLetterDeps { store: w.store.clone() };
        !handle_dead_letters(&deps, LambdaEvent::new(event, Context::default()))
            .await
            .unwrap()
            .batch_item_failures
            .is_empty()
    }

    fn media(w: &Worker, m: &MessageRecord) -> crm_shared::message::MediaRef {
        w.store.message(&m.tenant_id, &m.message_id).unwrap().media.unwrap()
    }

    #[tokio::test]
    async fn pending_media_of_a_dead_lettered_job_is_marked_failed() {
        let w = worker();
        let m = w.image_message();
        assert!(!run(&w, record(&m, 1)).await);
        let media = media(&w, &m);
        assert_eq!(media.status, MediaStatus::Failed);
        assert_eq!(media.failure.as_deref(), Some(RETRIES_EXHAUSTED));
        assert!(
            w.blobs.keys().is_empty() && w.graph.media_info_calls() == 0,
            "nothing fetched"
        );
    }

    #[tokio::test]
    async fn settled_media_is_left_as_it_is() {
        let w = worker();
        let stored = w.image_message();
        assert!(!w.run(record(&stored, 1)).await);
        assert!(!run(&w, record(&stored, 1)).await);
        assert_eq!(media(&w, &stored).status, MediaStatus::Available);

        // The worker's own reason (recorded on the last receive) stands.
        let w = worker();
        let failed = w.image_message();
        w.graph.fail_next_media_info(meta_error(500, Some(131000)));
        assert!(w.run(record(&failed, MAX_RECEIVES)).await);
        let reason = media(&w, &failed).failure;
        assert!(!run(&w, record(&failed, 1)).await);
        assert_eq!(media(&w, &failed).failure, reason);
        assert_ne!(reason.as_deref(), Some(RETRIES_EXHAUSTED));
    }

    #[tokio::test]
    async fn erased_messages_and_unreadable_jobs_are_done_with() {
        let w = worker();
        let m = w.image_message();
        w.store.erase_contact(&w.tenant.tenant_id, &w.contact.contact_id);
        assert!(!run(&w, record(&m, 1)).await);
        let mut bad = record(&m, 1);
        bad.body = Some("not json".into());
        assert!(!run(&w, bad).await, "dropped: a retry cannot help");
    }

    #[tokio::test]
    async fn a_job_that_cannot_be_marked_is_retried() {
        let w = worker();
        let m = w.image_message();
        w.store.fail_next_backend(Op::UpdateMedia);
        assert!(run(&w, record(&m, 1)).await);
        assert_eq!(media(&w, &m).status, MediaStatus::Pending);
        assert!(!run(&w, record(&m, 2)).await);
        assert_eq!(media(&w, &m).status, MediaStatus::Failed);
    }
}
