//! The privacy decisions as pure functions, table-driven: which data is past its retention
//! (the id-range and expiry rules the sweep applies), which settings are accepted, and the
//! arithmetic of erasure receipts and retention reports. The walks that apply them over
//! DynamoDB and S3 are tested end to end (tests/e2e/privacy.rs).

use chrono::{DateTime, Duration, Utc};

use crm_shared::privacy::retention::{RetentionCounts, RetentionReport, TenantRetention};
use crm_shared::privacy::{
    ErasureCounts, ErasureRecord, ErasureStatus, ExportRecord, RetentionError, RetentionSettings, erasure_id, id_floor,
    id_time,
};
use crm_shared::store::privacy::{visible_erasure, visible_export};

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

const SETTINGS: RetentionSettings = RetentionSettings {
    messages_days: 30,
    media_days: 10,
    exports_days: 3,
    audit_days: 60,
    events_days: 7,
    reports_days: 400,
};

/// The data kinds the sweep walks by id range (ids are ULIDs of their creation time).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Messages,
    Media,
    Audit,
}

#[test]
fn what_is_past_retention_by_kind_and_age() {
    let as_of = at("2026-03-31T12:00:00Z");
    let cut = SETTINGS.cutoffs(as_of);
    let ms = Duration::milliseconds(1);
    // (kind, created at, past retention).
    let cases = [
        (Kind::Messages, as_of - Duration::days(30) - ms, true),
        (Kind::Messages, as_of - Duration::days(30), false),
        (Kind::Messages, as_of - Duration::days(29), false),
        (Kind::Messages, as_of - Duration::days(400), true),
        (Kind::Media, as_of - Duration::days(10) - ms, true),
        (Kind::Media, as_of - Duration::days(10), false),
        (Kind::Media, as_of - Duration::days(29), true),
        (Kind::Audit, as_of - Duration::days(60) - ms, true),
        (Kind::Audit, as_of - Duration::days(60), false),
        (Kind::Audit, as_of - Duration::days(45), false),
    ];
    for (kind, created, past) in cases {
        let cutoff = match kind {
            Kind::Messages => cut.messages,
            Kind::Media => cut.media,
            Kind::Audit => cut.audit,
        };
        // Any id of that moment: the lowest, a derived one and the highest sort the same way.
        for id in [
            id_floor(created),
            crm_shared::message::inbound_message_id("t1", "wamid.X", created),
            ulid::Ulid::from_parts(created.timestamp_millis() as u64, u128::MAX >> 48)
                .to_string()
                .to_ascii_lowercase(),
        ] {
            assert_eq!(id < id_floor(cutoff), past, "{kind:?} created {created}: {id}");
        }
        assert_eq!(created < cutoff, past, "{kind:?} created {created}: by time");
    }
}

#[test]
fn exports_past_retention_by_age_or_their_own_expiry() {
    let as_of = at("2026-03-31T12:00:00Z");
    let cut = SETTINGS.cutoffs(as_of);
    // (created days before as_of, the exports_days it was made with, past retention).
    let cases = [
        (1, 3, false),
        (3, 3, true),
        (2, 7, false),
        // Made under a longer setting since shortened: the current setting decides.
        (4, 7, true),
        // Made under a shorter setting since lengthened: its own expiry still ends it.
        (2, 1, true),
    ];
    for (age_days, made_with_days, past) in cases {
        let record = ExportRecord::new("t1", "c1", None, made_with_days, as_of - Duration::days(age_days));
        let sweeps = record.created_at < cut.exports || record.is_expired(as_of);
        assert_eq!(sweeps, past, "{age_days} days old, made for {made_with_days}");
        assert_eq!(
            visible_export(Some(record.clone()), as_of).is_none(),
            record.is_expired(as_of),
            "an expired export is hidden before TTL removes it"
        );
    }
}

#[test]
fn retention_settings_bounds() {
    /// `None`: accepted; `Some(field)`: refused naming it ("media_days > messages_days" for
    /// media outliving messages).
    type Refused = Option<&'static str>;
    type Edit = fn(&mut RetentionSettings);
    let cases: [(&str, Edit, Refused); 11] = [
        ("as given", |_| {}, None),
        ("messages 0", |s| s.messages_days = 0, Some("messages_days")),
        ("messages 3650", |s| s.messages_days = 3650, None),
        ("messages 3651", |s| s.messages_days = 3651, Some("messages_days")),
        ("media 0", |s| s.media_days = 0, Some("media_days")),
        ("media = messages", |s| s.media_days = 100, None),
        (
            "media outlives messages",
            |s| s.media_days = 101,
            Some("media_days > messages_days"),
        ),
        ("exports 30", |s| s.exports_days = 30, None),
        ("exports 31", |s| s.exports_days = 31, Some("exports_days")),
        ("audit 29", |s| s.audit_days = 29, Some("audit_days")),
        ("audit 30", |s| s.audit_days = 30, None),
    ];
    for (name, edit, refused) in cases {
        let mut settings = RetentionSettings {
            messages_days: 100,
            media_days: 50,
            exports_days: 7,
            audit_days: 100,
            events_days: 7,
            reports_days: 400,
        };
        edit(&mut settings);
        let got = match settings.validate() {
            Ok(valid) => {
                assert_eq!(valid, settings);
                None
            }
            Err(RetentionError::OutOfBounds(e)) => Some(e.field),
            Err(RetentionError::MediaOutlivesMessages) => Some("media_days > messages_days"),
        };
        assert_eq!(got, refused, "{name}");
    }
    assert_eq!(
        RetentionSettings::default().validate(),
        Ok(RetentionSettings::default())
    );
}

#[test]
fn an_erasure_receipt_adds_up_its_batches() {
    let requested = at("2026-03-01T00:00:00Z");
    let contact_id = crm_shared::ids::new_id();
    let mut record = ErasureRecord::new("t1", &contact_id, Some("key-1"), 60, requested);
    // The batches one erasure run deletes, step by step.
    let batches = [
        ErasureCounts {
            media_objects: 3,
            export_objects: 1,
            ..Default::default()
        },
        ErasureCounts {
            messages: 120,
            pointers: 40,
            statuses: 2,
            ..Default::default()
        },
        ErasureCounts {
            messages: 5,
            ..Default::default()
        },
        ErasureCounts {
            contacts: 1,
            identities: 2,
            tags: 3,
            history_entries: 4,
            idempotency_records: 1,
            exports: 1,
            other_items: 41,
            ..Default::default()
        },
    ];
    for batch in &batches {
        record.deleted.add(batch);
    }
    let d = record.deleted;
    assert_eq!(
        (d.messages, d.pointers, d.media_objects, d.export_objects),
        (125, 40, 3, 1)
    );
    assert_eq!(
        d.items(),
        125 + 40 + 2 + 1 + 2 + 3 + 4 + 1 + 1 + 41,
        "items exclude objects"
    );
    record.status = ErasureStatus::Completed;
    record.completed_at = Some(requested + Duration::minutes(3));
    let receipt = record.receipt();
    assert_eq!(receipt["erasure_id"], erasure_id("t1", &contact_id));
    assert_eq!(receipt["contact_id"], contact_id.as_str());
    assert_eq!(receipt["status"], "completed");
    assert_eq!(receipt["deleted"]["messages"], 125);
    assert_eq!(receipt["deleted"]["media_objects"], 3);
    assert!(receipt.get("requested_by").is_none(), "the receipt names no actor");
    // Kept for the tenant's audit_days, then hidden before TTL removes it.
    let expiry = requested + Duration::days(60);
    assert!(visible_erasure(Some(record.clone()), expiry - Duration::seconds(1)).is_some());
    assert!(visible_erasure(Some(record), expiry).is_none());
}

#[test]
fn an_erasure_id_is_one_per_contact_and_dated_like_the_contact() {
    let contact_id = crm_shared::ids::new_id();
    let id = erasure_id("t1", &contact_id);
    assert_eq!(id, erasure_id("t1", &contact_id), "a repeated request finds the first");
    assert_ne!(id, erasure_id("t1", &crm_shared::ids::new_id()));
    assert_eq!(id_time(&id), id_time(&contact_id));
}

#[test]
fn a_retention_report_totals_tenants_and_flags_failures() {
    let tenant = |id: &str, messages, media_objects, error: Option<&str>| TenantRetention {
        tenant_id: id.into(),
        settings: RetentionSettings::default(),
        deleted: RetentionCounts {
            messages,
            media_objects,
            exports: 1,
            audit_entries: 2,
            conversations: 3,
            notes: 1,
            conversations_resolved: 2,
            broadcasts: 1,
        },
        complete: error.is_none(),
        error: error.map(str::to_owned),
    };
    let mut report = RetentionReport {
        as_of: Utc::now(),
        tenants: vec![tenant("a", 10, 1, None), tenant("b", 5, 0, None)],
        complete: true,
    };
    assert_eq!(
        report.total(),
        RetentionCounts {
            messages: 15,
            media_objects: 1,
            exports: 2,
            audit_entries: 4,
            conversations: 6,
            notes: 2,
            conversations_resolved: 4,
            broadcasts: 2,
        }
    );
    assert!(!report.failed());
    report.tenants.push(tenant("c", 0, 0, Some("throttled")));
    assert!(report.failed());
    assert_eq!(report.total().messages, 15);
}
