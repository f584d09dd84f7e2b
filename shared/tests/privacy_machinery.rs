//! The privacy machinery (erasure, its hand-off and leases, the retention sweep) run through
//! its ports over the in-memory implementations: `Privacy<MemStore, MemBlobs, MemQueue>`.
//! Data is written through the same port operations the functions use (inbound with a STOP,
//! an outbound send with an idempotency key whose statuses arrived before its wamid, a
//! restriction, an export built into the exports bucket), so the cascades meet the items
//! those writes leave (tag entries, history entries, references, wamid partitions). The
//! receipts are compared with what the DynamoDB store counts for the same items.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crm_shared::audit::AuditEntry;
use crm_shared::blob::{BlobStore, contact_media_prefix, media_key};
use crm_shared::contact::{ConsentChange, Contact, MarketingConsent, RestrictionChange, ValidContact};
use crm_shared::conversation::{Note, conversation_id};
use crm_shared::message::{MediaStatus, MessageStatus, inbound_message_id};
use crm_shared::privacy::erasure::{Continued, SAFETY_NET_DELAY};
use crm_shared::privacy::export::Built;
use crm_shared::privacy::retention::RetentionCounts;
use crm_shared::privacy::{
    ErasureCounts, ErasureJob, ErasureRecord, ErasureStatus, ExportJob, ExportRecord, Privacy, RetentionSettings,
    erasure_id,
};
use crm_shared::secret::Secret;
use crm_shared::store::{
    AuditStore, ContactStore, ConversationStore, CustomerIdentity, IDEMPOTENCY_TTL_HOURS, IdempotencyRecord,
    IdentityKey, InboundStore, InboundWrite, Lease, MessageStore, OutboundStore, PrivacyStore, StatusOutcome,
    StatusWrite, StoreError,
};
use crm_shared::testing::{MemBlobs, MemQueue, MemStore, fixtures};

type MemPrivacy = Privacy<MemStore, MemBlobs, MemQueue>;

struct World {
    privacy: MemPrivacy,
    store: MemStore,
    media: MemBlobs,
    exports: MemBlobs,
    erasure_jobs: MemQueue,
    export_jobs: MemQueue,
}

fn world(request_budget: Duration) -> World {
    let (store, media, exports) = (MemStore::new(), MemBlobs::new(), MemBlobs::new());
    let (erasure_jobs, export_jobs) = (MemQueue::new(), MemQueue::new());
    let privacy = Privacy {
        store: store.clone(),
        media: media.clone(),
        exports: exports.clone(),
        export_jobs: export_jobs.clone(),
        erasure_jobs: erasure_jobs.clone(),
        request_budget,
    };
    World {
        privacy,
        store,
        media,
        exports,
        erasure_jobs,
        export_jobs,
    }
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

fn add_tenant(store: &MemStore, phone_number_id: &str) -> String {
    let tenant = fixtures::tenant(phone_number_id);
    let id = tenant.tenant_id.clone();
    store.add_tenant(tenant, Secret::new("token"));
    id
}

/// A contact with a phone, a user id and two tags, created through the port.
async fn create_contact(store: &MemStore, tenant_id: &str, phone: &str, user_id: &str) -> Contact {
    let valid = ValidContact {
        phone: Some(phone.to_owned()),
        user_id: Some(user_id.to_owned()),
        name: Some("Ada".into()),
        email: None,
        language: None,
        tags: vec!["vip".into(), "lead".into()],
        attributes: Default::default(),
    };
    let contact = Contact::new(tenant_id, valid, Utc::now());
    store.create_contact(&contact).await.unwrap();
    contact
}

/// What the seeded contact owns, for the assertions.
struct Seeded {
    tenant_id: String,
    contact: Contact,
    wamid: String,
    media_key: String,
    export: ExportRecord,
}

/// A contact with everything an erasure must reach: an inbound image (stored) that said STOP
/// (consent history entry), a restriction (history entry), an outbound text sent with an
/// idempotency key whose `delivered` and `read` arrived before its wamid (parked statuses, the
/// wamid pointer and the contact's reference to it), a conversation (opened by the inbound
/// message) with an internal note, and a built export (record, reference, document). A second
/// contact of the tenant is the bystander.
async fn seed_erasable(w: &World) -> (Seeded, Contact) {
    let store = &w.store;
    let t = add_tenant(store, "1001");
    let contact = create_contact(store, &t, "+15550001", "US.1").await;
    let bystander = create_contact(store, &t, "+15550002", "US.2").await;
    let now = Utc::now();

    // Inbound image with a STOP keyword; its media stored by the worker.
    let mut inbound = fixtures::inbound_media_message(&contact, "media1", None);
    inbound.content = json!({"id": "media1", "caption": "STOP"});
    inbound.phone_number_id = Some("1001".into());
    let stop = ConsentChange {
        contact_id: contact.contact_id.clone(),
        marketing: MarketingConsent::OptedOut,
        previous: MarketingConsent::Unknown,
        source: "inbound_keyword".into(),
        actor: "inbound_keyword".into(),
        at: now,
    };
    let write = InboundWrite {
        message: inbound.clone(),
        matched_by: Some(IdentityKey::Phone("+15550001".into())),
        profile_name: Some("Ada L.".into()),
        consent: Some(stop),
        new_contact: None,
    };
    store.record_inbound(&write).await.unwrap();
    let key = media_key(&t, &contact.contact_id, &inbound.message_id);
    let mut media = inbound.media.clone().unwrap();
    media.status = MediaStatus::Available;
    media.s3_key = Some(key.clone());
    store.update_media(&t, &inbound.message_id, &media).await.unwrap();
    w.media.put(&key, "jpeg".into(), Some("image/jpeg")).await.unwrap();

    // A restriction.
    let before = store.get_contact(&t, &contact.contact_id).await.unwrap().unwrap();
    let mut after = before.clone();
    after.restricted = true;
    after.version += 1;
    let change = RestrictionChange {
        contact_id: contact.contact_id.clone(),
        restricted: true,
        previous: false,
        actor: "key1".into(),
        at: now,
        reason: None,
    };
    store.record_restriction(&before, &after, &change).await.unwrap();

    // A note on the conversation the inbound message opened.
    let note = Note {
        tenant_id: t.clone(),
        note_id: crm_shared::ids::new_id(),
        conversation_id: conversation_id(&contact.contact_id, "1001"),
        contact_id: contact.contact_id.clone(),
        body: "called back".into(),
        author: "user1".into(),
        created_at: now,
    };
    store.add_note(&note).await.unwrap();

    // An outbound text with an idempotency key; statuses race ahead of the wamid.
    let outbound = fixtures::queued_text(&contact);
    let idempotency = IdempotencyRecord {
        tenant_id: t.clone(),
        key_hash: "hash1".into(),
        request_hash: "body1".into(),
        status_code: 202,
        response: json!({"message_id": outbound.message_id}),
        message_id: outbound.message_id.clone(),
        contact_id: contact.contact_id.clone(),
        created_at: now,
        expires_at: (now + chrono::Duration::hours(IDEMPOTENCY_TTL_HOURS)).timestamp(),
    };
    store
        .create_message_once(&outbound, Some(&idempotency), None)
        .await
        .unwrap();
    let wamid = "wamid.out.1".to_owned();
    for status in [MessageStatus::Delivered, MessageStatus::Read] {
        let write = StatusWrite {
            wamid: wamid.clone(),
            status,
            at: now,
            error: None,
            pricing: None,
            conversation: None,
        };
        assert_eq!(store.apply_status(&t, &write).await.unwrap(), StatusOutcome::Parked);
    }
    store
        .mark_sent(&t, &outbound.message_id, &contact.contact_id, &wamid, now)
        .await
        .unwrap();
    assert_eq!(
        store.message(&t, &outbound.message_id).unwrap().status,
        MessageStatus::Read
    );

    // A built export.
    let export = w
        .privacy
        .request_export(&t, &contact.contact_id, None)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        w.privacy.build_export(&t, &export.export_id).await.unwrap(),
        Built::Ready(_)
    ));
    assert!(w.exports.get(&export.s3_key).is_some());
    assert_eq!(w.export_jobs.jobs_of::<ExportJob>().len(), 1);

    // The bystander has a message of its own.
    store.create_message(&fixtures::queued_text(&bystander)).await.unwrap();

    let seeded = Seeded {
        tenant_id: t,
        contact,
        wamid,
        media_key: key,
        export,
    };
    (seeded, bystander)
}

/// The receipt the DynamoDB store gives for the seeded contact, item by item.
fn expected_receipt() -> ErasureCounts {
    ErasureCounts {
        contacts: 1,
        // Phone and user id records.
        identities: 2,
        tags: 2,
        // The STOP and the restriction.
        history_entries: 2,
        messages: 2,
        pointers: 1,
        // `delivered` and `read`, parked until their TTL.
        statuses: 2,
        idempotency_records: 1,
        exports: 1,
        media_objects: 1,
        export_objects: 1,
        // The references to the wamid, the idempotency record and the export.
        other_items: 3,
        conversations: 1,
        notes: 1,
        // Not a recipient of any broadcast (the broadcast e2e test erases one).
        broadcast_recipients: 0,
    }
}

/// Nothing of the contact is left anywhere; the bystander is whole.
async fn assert_erased(w: &World, s: &Seeded, bystander: &Contact) {
    let (t, c) = (&s.tenant_id, &s.contact.contact_id);
    assert_eq!(w.store.contact_leftovers(t, c), Vec::<String>::new());
    assert_eq!(w.store.wamid_partition(t, &s.wamid), (false, 0));
    let prefix = contact_media_prefix(t, c);
    assert_eq!(w.media.keys_under(&prefix), Vec::<String>::new());
    assert_eq!(w.exports.keys_under(&prefix), Vec::<String>::new());
    assert!(w.media.get(&s.media_key).is_none());
    assert_eq!(w.store.get_export(t, &s.export.export_id).await.unwrap(), None);
    assert_eq!(w.store.idempotency_lookup(t, "hash1").await.unwrap(), None);
    let identity = CustomerIdentity {
        phone: Some("+15550001".into()),
        user_id: Some("US.1".into()),
    };
    assert_eq!(w.store.match_contact(t, &identity).await.unwrap(), None);
    let left = w.store.contact_leftovers(t, &bystander.contact_id);
    assert_eq!(
        left.iter()
            .filter(|l| l.starts_with("profile") || l.starts_with("message"))
            .count(),
        2,
        "{left:?}"
    );
    assert_eq!(left.iter().filter(|l| l.starts_with("tag")).count(), 2, "{left:?}");
}

#[tokio::test]
async fn erasure_receipts_count_every_kind_whether_finished_in_the_request_or_on_the_queue() {
    // (case, request budget, finished in the request)
    let cases = [
        ("within the request", Duration::from_secs(30), true),
        ("handed off", Duration::ZERO, false),
    ];
    for (case, budget, in_request) in cases {
        let w = world(budget);
        let (s, bystander) = seed_erasable(&w).await;
        let (t, c) = (&s.tenant_id, &s.contact.contact_id);
        let id = erasure_id(t, c);
        let job = ErasureJob {
            tenant_id: t.clone(),
            erasure_id: id.clone(),
        };

        let receipt = w.privacy.request_erasure(t, c, Some("key1")).await.unwrap().unwrap();
        // The contact is gone at once, whatever remains to do.
        assert_eq!(w.store.get_contact(t, c).await.unwrap(), None, "{case}");
        let record = if in_request {
            assert_eq!(receipt.status, ErasureStatus::Completed, "{case}");
            assert_eq!(
                w.erasure_jobs.jobs_of::<ErasureJob>(),
                vec![(job, SAFETY_NET_DELAY)],
                "{case}"
            );
            receipt
        } else {
            // Only the profile and its identities went inside the request; the rest is queued.
            assert_eq!(receipt.status, ErasureStatus::InProgress, "{case}");
            let started = ErasureCounts {
                contacts: 1,
                identities: 2,
                ..Default::default()
            };
            assert_eq!(receipt.deleted, started, "{case}");
            assert_eq!(
                w.erasure_jobs.jobs_of::<ErasureJob>(),
                vec![(job.clone(), SAFETY_NET_DELAY), (job, Duration::ZERO)],
                "{case}"
            );
            assert!(
                w.store.erasure_lease(t, &id).is_none(),
                "{case}: the lease is given back"
            );
            match w
                .privacy
                .continue_erasure(t, &id, Duration::from_secs(30))
                .await
                .unwrap()
            {
                Continued::Completed(r) => r,
                other => panic!("{case}: {other:?}"),
            }
        };
        assert_eq!(record.deleted, expected_receipt(), "{case}");
        assert_eq!(record.status, ErasureStatus::Completed, "{case}");
        assert_eq!(
            w.store.get_erasure(t, &id).await.unwrap().as_ref(),
            Some(&record),
            "{case}"
        );
        assert_erased(&w, &s, &bystander).await;

        // Asking again returns the receipt; continuing again does nothing.
        let again = w.privacy.request_erasure(t, c, None).await.unwrap().unwrap();
        assert_eq!(again.deleted, expected_receipt(), "{case}");
        assert_eq!(
            w.privacy
                .continue_erasure(t, &id, Duration::from_secs(30))
                .await
                .unwrap(),
            Continued::NothingToDo,
            "{case}"
        );
    }
}

#[tokio::test]
async fn an_erasure_lease_is_exclusive_until_it_lapses() {
    let w = world(Duration::ZERO);
    let (s, bystander) = seed_erasable(&w).await;
    let (t, c) = (&s.tenant_id, &s.contact.contact_id);
    let id = erasure_id(t, c);
    let handed_off = w.privacy.request_erasure(t, c, None).await.unwrap().unwrap();
    assert_eq!(handed_off.status, ErasureStatus::InProgress);

    let now = Utc::now();
    let held = Lease::new(now + chrono::Duration::seconds(60));
    let claimed = w.store.claim_erasure(t, &id, &held, now).await.unwrap();
    assert_eq!(claimed.as_ref(), Some(&handed_off));
    // Another eraser is told it is busy and touches nothing.
    assert_eq!(
        w.privacy
            .continue_erasure(t, &id, Duration::from_secs(30))
            .await
            .unwrap(),
        Continued::Busy
    );
    assert_eq!(
        w.store.get_erasure(t, &id).await.unwrap().unwrap().deleted,
        handed_off.deleted
    );
    let other = Lease::new(now + chrono::Duration::seconds(60));
    assert_eq!(w.store.claim_erasure(t, &id, &other, now).await.unwrap(), None);
    assert!(matches!(
        w.store.save_erasure(&handed_off, &other, Some(&other)).await,
        Err(StoreError::VersionMismatch)
    ));

    // Once the lease has lapsed it can be taken over, and the old holder's saves are refused.
    let later = now + chrono::Duration::seconds(61);
    let lapsed_already = Lease {
        token: "taker".into(),
        until_ms: now.timestamp_millis() - 1,
    };
    assert!(
        w.store
            .claim_erasure(t, &id, &lapsed_already, later)
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        w.store.save_erasure(&handed_off, &held, Some(&held)).await,
        Err(StoreError::VersionMismatch)
    ));
    match w
        .privacy
        .continue_erasure(t, &id, Duration::from_secs(30))
        .await
        .unwrap()
    {
        Continued::Completed(r) => assert_eq!(r.deleted, expected_receipt()),
        other => panic!("{other:?}"),
    }
    assert_erased(&w, &s, &bystander).await;
    // A finished erasure is never claimed again.
    let late = Lease::new(later + chrono::Duration::seconds(60));
    assert_eq!(w.store.claim_erasure(t, &id, &late, later).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Retention

const SETTINGS: RetentionSettings = RetentionSettings {
    messages_days: 30,
    media_days: 10,
    exports_days: 3,
    audit_days: 60,
    events_days: 7,
    reports_days: 400,
};

/// A message of the sweep's table: its age, kind, and what the sweep must do to it.
struct MessageRow {
    name: &'static str,
    age_hours: i64,
    outbound: bool,
    media: bool,
    message_deleted: bool,
    media_deleted: bool,
}

const MESSAGES: &[MessageRow] = &[
    MessageRow {
        name: "outbound sent 40 days ago",
        age_hours: 40 * 24,
        outbound: true,
        media: false,
        message_deleted: true,
        media_deleted: false,
    },
    MessageRow {
        name: "image of 35 days (goes with its message)",
        age_hours: 35 * 24,
        outbound: false,
        media: true,
        message_deleted: true,
        media_deleted: true,
    },
    MessageRow {
        name: "text just past 30 days",
        age_hours: 30 * 24 + 1,
        outbound: false,
        media: false,
        message_deleted: true,
        media_deleted: false,
    },
    MessageRow {
        name: "text just within 30 days",
        age_hours: 30 * 24 - 1,
        outbound: false,
        media: false,
        message_deleted: false,
        media_deleted: false,
    },
    MessageRow {
        name: "image of 20 days (media expires, message stays)",
        age_hours: 20 * 24,
        outbound: false,
        media: true,
        message_deleted: false,
        media_deleted: true,
    },
    MessageRow {
        name: "image just within 10 days",
        age_hours: 10 * 24 - 1,
        outbound: false,
        media: true,
        message_deleted: false,
        media_deleted: false,
    },
];

/// (age in days, the export's own lifetime in days, deleted)
const EXPORTS: &[(i64, u32, bool)] = &[(5, 7, true), (1, 7, false), (2, 1, true)];

/// (age in days, deleted)
const AUDIT: &[(i64, bool)] = &[(70, true), (61, true), (59, false)];

fn expected_counts() -> RetentionCounts {
    let count = |n: usize| n as u64;
    RetentionCounts {
        messages: count(MESSAGES.iter().filter(|m| m.message_deleted).count()),
        media_objects: count(MESSAGES.iter().filter(|m| m.media && m.media_deleted).count()),
        exports: count(EXPORTS.iter().filter(|e| e.2).count()),
        audit_entries: count(AUDIT.iter().filter(|a| a.1).count()),
        ..RetentionCounts::default()
    }
}

/// What one tenant was seeded with.
struct Sweepable {
    tenant_id: String,
    contact: Contact,
    /// Per row of [`MESSAGES`]: message id, wamid of the outbound one, media key.
    messages: Vec<(String, Option<String>, Option<String>)>,
    exports: Vec<ExportRecord>,
    audit: Vec<String>,
}

fn id_at(time: DateTime<Utc>, n: u128) -> String {
    ulid::Ulid::from_parts(time.timestamp_millis() as u64, n)
        .to_string()
        .to_ascii_lowercase()
}

async fn seed_sweepable(w: &World, phone_number_id: &str, as_of: DateTime<Utc>) -> Sweepable {
    let store = &w.store;
    let t = add_tenant(store, phone_number_id);
    store.put_retention_settings(&t, &SETTINGS, None, as_of).await.unwrap();
    let contact = create_contact(store, &t, "+15550001", "US.1").await;
    let c = &contact.contact_id;
    let mut messages = Vec::new();
    for (i, row) in MESSAGES.iter().enumerate() {
        let created = as_of - chrono::Duration::hours(row.age_hours);
        let mut m = if row.outbound {
            fixtures::queued_text(&contact)
        } else {
            fixtures::inbound_media_message(&contact, &format!("media{i}"), None)
        };
        m.message_id = if row.outbound {
            id_at(created, i as u128)
        } else {
            inbound_message_id(&t, &format!("wamid.in.{i}"), created)
        };
        m.created_at = created;
        m.timestamp = created;
        let key = row.media.then(|| media_key(&t, c, &m.message_id));
        match (&key, m.media.as_mut()) {
            (Some(key), Some(media)) => {
                media.status = MediaStatus::Available;
                media.s3_key = Some(key.clone());
                w.media.put(key, "jpeg".into(), Some("image/jpeg")).await.unwrap();
            }
            _ => m.media = None,
        }
        store.add_message(m.clone());
        let wamid = row.outbound.then(|| format!("wamid.out.{i}"));
        if let Some(wamid) = &wamid {
            let parked = StatusWrite {
                wamid: wamid.clone(),
                status: MessageStatus::Delivered,
                at: created,
                error: None,
                pricing: None,
                conversation: None,
            };
            store.apply_status(&t, &parked).await.unwrap();
            store.mark_sent(&t, &m.message_id, c, wamid, created).await.unwrap();
        }
        messages.push((m.message_id, wamid, key));
    }
    let mut exports = Vec::new();
    for (age, days, _) in EXPORTS {
        let record = ExportRecord::new(&t, c, None, *days, as_of - chrono::Duration::days(*age));
        store.create_export(&record).await.unwrap();
        w.exports
            .put(&record.s3_key, "{}".into(), Some("application/json"))
            .await
            .unwrap();
        exports.push(record);
    }
    let mut audit = Vec::new();
    for (i, (age, _)) in AUDIT.iter().enumerate() {
        let mut entry = AuditEntry::new(&t, None, "contact.update");
        entry.at = as_of - chrono::Duration::days(*age);
        entry.id = id_at(entry.at, i as u128);
        store.record_audit(&entry).await.unwrap();
        audit.push(entry.id);
    }
    Sweepable {
        tenant_id: t,
        contact,
        messages,
        exports,
        audit,
    }
}

/// Checks each row of the tables against the store and the buckets after a sweep (`swept`) or
/// before one.
async fn assert_swept(w: &World, s: &Sweepable, swept: bool) {
    let t = &s.tenant_id;
    for (row, (id, wamid, key)) in MESSAGES.iter().zip(&s.messages) {
        let message = w.store.message(t, id);
        assert_eq!(message.is_none(), swept && row.message_deleted, "{}", row.name);
        if let Some(wamid) = wamid {
            let gone = swept && row.message_deleted;
            let partition = w.store.wamid_partition(t, wamid);
            assert_eq!(partition, if gone { (false, 0) } else { (true, 1) }, "{}", row.name);
        }
        if let Some(key) = key {
            let object_gone = swept && row.media_deleted;
            assert_eq!(w.media.get(key).is_none(), object_gone, "{}", row.name);
            if let Some(m) = message {
                let media = m.media.unwrap();
                let expired = media.status == MediaStatus::Expired;
                assert_eq!(expired, object_gone, "{}", row.name);
                assert_eq!(media.s3_key.is_none(), object_gone, "{}", row.name);
            }
        }
    }
    for ((age, days, deleted), e) in EXPORTS.iter().zip(&s.exports) {
        let gone = swept && *deleted;
        let record = w.store.get_export(t, &e.export_id).await.unwrap();
        assert_eq!(record.is_none(), gone, "export of {age} days ({days} own)");
        assert_eq!(w.exports.get(&e.s3_key).is_none(), gone, "export of {age} days");
    }
    let audit: HashSet<String> = w.store.audit(t).into_iter().map(|e| e.id).collect();
    for ((age, deleted), id) in AUDIT.iter().zip(&s.audit) {
        assert_eq!(!audit.contains(id), swept && *deleted, "audit entry of {age} days");
    }
    // The contact stays; of its references only those of what is left remain.
    let left = w.store.contact_leftovers(t, &s.contact.contact_id);
    assert!(left.contains(&"profile".to_owned()));
    let wamid_refs = left.iter().filter(|l| l.contains("#WAMID#")).count();
    let expected_refs = MESSAGES
        .iter()
        .filter(|m| m.outbound && !(swept && m.message_deleted))
        .count();
    assert_eq!(wamid_refs, expected_refs, "{left:?}");
    let export_refs = left.iter().filter(|l| l.contains("#EXPORT#")).count();
    let expected_exports = EXPORTS.iter().filter(|e| !(swept && e.2)).count();
    assert_eq!(export_refs, expected_exports, "{left:?}");
}

#[tokio::test]
async fn retention_deletes_exactly_what_is_past_each_period_for_the_tenant_swept() {
    let as_of = at("2026-03-01T12:00:00Z");
    let w = world(Duration::from_secs(5));
    let a = seed_sweepable(&w, "2001", as_of).await;
    let b = seed_sweepable(&w, "2002", as_of).await;

    // Sweeping tenant A alone leaves B, with the same data and settings, untouched.
    let report = w
        .privacy
        .run_retention(as_of, None, std::slice::from_ref(&a.tenant_id))
        .await
        .unwrap();
    assert!(report.complete && !report.failed());
    assert_eq!(report.tenants.len(), 1);
    assert_eq!(report.tenants[0].settings, SETTINGS);
    assert_eq!(report.tenants[0].deleted, expected_counts());
    assert_swept(&w, &a, true).await;
    assert_swept(&w, &b, false).await;

    // A sweep of every tenant now finds only B's share; then nothing is left to find.
    let report = w.privacy.run_retention(as_of, None, &[]).await.unwrap();
    let by_tenant = |r: &crm_shared::privacy::retention::RetentionReport, t: &str| {
        r.tenants.iter().find(|x| x.tenant_id == t).unwrap().deleted
    };
    assert_eq!(by_tenant(&report, &a.tenant_id), RetentionCounts::default());
    assert_eq!(by_tenant(&report, &b.tenant_id), expected_counts());
    assert_swept(&w, &b, true).await;
    let again = w.privacy.run_retention(as_of, None, &[]).await.unwrap();
    assert_eq!(again.total(), RetentionCounts::default());
    assert_swept(&w, &a, true).await;
    assert_swept(&w, &b, true).await;
}

#[tokio::test]
async fn a_receipt_is_kept_by_audit_days_and_found_by_id() {
    // The erasure record created by a request carries the tenant's audit retention.
    let w = world(Duration::from_secs(30));
    let (s, _) = seed_erasable(&w).await;
    let (t, c) = (&s.tenant_id, &s.contact.contact_id);
    let record: ErasureRecord = w.privacy.request_erasure(t, c, None).await.unwrap().unwrap();
    let days = (record.receipt_expiry - record.requested_at).num_days();
    assert_eq!(days, i64::from(RetentionSettings::default().audit_days));
    assert_eq!(
        w.privacy.erasure_receipt(t, &record.erasure_id).await.unwrap().as_ref(),
        Some(&record)
    );
    assert_eq!(w.store.tenant_erasures(t).await.unwrap(), vec![record]);
}
