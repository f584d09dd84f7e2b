//! Privacy rights and retention (docs/privacy.md): retention settings and their bounds, contact
//! exports, contact erasure that cascades to everything the contact owns, the retention sweep
//! and tenant offboarding. The rules are pure functions here; the machinery that runs them over
//! DynamoDB, S3 and SQS is in the submodules and is shared by the API, the privacy functions,
//! `crmctl` and the benchmark.

pub mod erasure;
pub mod export;
pub mod offboard;
pub mod retention;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blob::BlobError;
use crate::jobs::{EnqueueError, JobQueue, SqsQueue};
use crate::objects::{Bucket, ObjectStore};
use crate::store::{ApiKeyStore, ContactStore, ConversationStore, DynamoStore, PrivacyStore, StoreError, TenantStore};

// ---------------------------------------------------------------------------------------------
// Retention settings

/// How long a tenant keeps each kind of data, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub messages_days: u32,
    pub media_days: u32,
    pub exports_days: u32,
    pub audit_days: u32,
    /// How long the tenant's event log (`GET /v1/events`, redelivery, recovery) keeps an event.
    /// Optional in a request (a client of the four-field form keeps working).
    #[serde(default = "default_events_days")]
    pub events_days: u32,
    /// How long a report counter item is kept after its last update (anonymised aggregates,
    /// docs/privacy.md). Optional in a request.
    #[serde(default = "default_reports_days")]
    pub reports_days: u32,
}

pub(crate) fn default_events_days() -> u32 {
    crate::events::EVENTS_DAYS_DEFAULT
}

pub(crate) fn default_reports_days() -> u32 {
    crate::reports::REPORTS_DAYS_DEFAULT
}

/// Allowed range of each setting (inclusive).
pub const MESSAGES_DAYS: (u32, u32) = (1, 3650);
pub const MEDIA_DAYS: (u32, u32) = (1, 3650);
/// The exports bucket expires every object after 30 days (a lifecycle backstop), so no tenant
/// may promise longer.
pub const EXPORTS_DAYS: (u32, u32) = (1, 30);
/// An audit trail shorter than a month is no trail.
pub const AUDIT_DAYS: (u32, u32) = (30, 3650);

impl Default for RetentionSettings {
    /// Platform defaults for a tenant that never chose: a year of conversations, 90 days of
    /// media files, exports for a week, a year of audit log.
    fn default() -> Self {
        RetentionSettings {
            messages_days: 365,
            media_days: 90,
            exports_days: 7,
            audit_days: 365,
            events_days: crate::events::EVENTS_DAYS_DEFAULT,
            reports_days: crate::reports::REPORTS_DAYS_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be a whole number of days from {min} to {max}")]
pub struct OutOfBounds {
    pub field: &'static str,
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
    /// Media outliving its message could never be shown or erased with it.
    #[error("media_days cannot exceed messages_days")]
    MediaOutlivesMessages,
}

impl RetentionSettings {
    pub fn validate(self) -> Result<RetentionSettings, RetentionError> {
        for (field, value, (min, max)) in [
            ("messages_days", self.messages_days, MESSAGES_DAYS),
            ("media_days", self.media_days, MEDIA_DAYS),
            ("exports_days", self.exports_days, EXPORTS_DAYS),
            ("audit_days", self.audit_days, AUDIT_DAYS),
            ("events_days", self.events_days, crate::events::EVENTS_DAYS),
            ("reports_days", self.reports_days, crate::reports::REPORTS_DAYS),
        ] {
            if !(min..=max).contains(&value) {
                return Err(OutOfBounds { field, min, max }.into());
            }
        }
        if self.media_days > self.messages_days {
            return Err(RetentionError::MediaOutlivesMessages);
        }
        Ok(self)
    }

    /// What is older than these instants is past its retention at `as_of`.
    pub fn cutoffs(&self, as_of: DateTime<Utc>) -> Cutoffs {
        let days = |d: u32| chrono::Duration::days(i64::from(d));
        Cutoffs {
            messages: as_of - days(self.messages_days),
            media: as_of - days(self.media_days),
            exports: as_of - days(self.exports_days),
            audit: as_of - days(self.audit_days),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    pub messages: DateTime<Utc>,
    pub media: DateTime<Utc>,
    pub exports: DateTime<Utc>,
    pub audit: DateTime<Utc>,
}

/// The smallest id (ULID, lowercase) of anything created at `at`: every id below it was created
/// before `at`. Message, audit and export ids are time-ordered, so "older than the cutoff" is a
/// key range.
pub fn id_floor(at: DateTime<Utc>) -> String {
    let ms = at.timestamp_millis().clamp(0, (1i64 << 48) - 1) as u64;
    ulid::Ulid::from_parts(ms, 0).to_string().to_ascii_lowercase()
}

/// The time encoded in one of our ids.
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let ulid = ulid::Ulid::from_string(&id.to_ascii_uppercase()).ok()?;
    DateTime::from_timestamp_millis(ulid.timestamp_ms() as i64)
}

// ---------------------------------------------------------------------------------------------
// Exports

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    Pending,
    Ready,
    Failed,
}

/// One export of a contact's data, or of a broadcast's per-recipient results (the record; the
/// document is an object in the exports bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    pub export_id: String,
    pub tenant_id: String,
    /// The contact exported (empty for a broadcast's results).
    pub contact_id: String,
    /// The broadcast whose results these are (`None`: a contact export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast_id: Option<String>,
    pub status: ExportStatus,
    /// The API key that asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the export stops being offered and is deleted (`exports_days` after creation).
    pub expiry: DateTime<Utc>,
    /// Object key in the exports bucket.
    pub s3_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_count: Option<u64>,
    /// Why building it failed (no personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl ExportRecord {
    pub fn new(
        tenant_id: &str,
        contact_id: &str,
        requested_by: Option<&str>,
        exports_days: u32,
        now: DateTime<Utc>,
    ) -> Self {
        let export_id = crate::ids::new_id();
        ExportRecord {
            s3_key: export_key(tenant_id, contact_id, &export_id),
            export_id,
            tenant_id: tenant_id.to_owned(),
            contact_id: contact_id.to_owned(),
            broadcast_id: None,
            status: ExportStatus::Pending,
            requested_by: requested_by.map(str::to_owned),
            created_at: now,
            expiry: now + chrono::Duration::days(i64::from(exports_days)),
            completed_at: None,
            size_bytes: None,
            message_count: None,
            failure: None,
        }
    }

    /// A pending export of a broadcast's per-recipient results (a CSV document under the
    /// broadcast's prefix).
    pub fn for_broadcast(
        tenant_id: &str,
        broadcast_id: &str,
        requested_by: Option<&str>,
        exports_days: u32,
        now: DateTime<Utc>,
    ) -> Self {
        let mut record = ExportRecord::new(tenant_id, "", requested_by, exports_days, now);
        record.s3_key = format!(
            "{}exports/{}.csv",
            crate::broadcast::audience_file::broadcast_prefix(tenant_id, broadcast_id),
            record.export_id
        );
        record.broadcast_id = Some(broadcast_id.to_owned());
        record
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expiry <= now
    }
}

/// Export documents live under the contact's prefix, so erasure deletes them with the rest.
pub fn export_key(tenant_id: &str, contact_id: &str, export_id: &str) -> String {
    format!(
        "{}exports/{export_id}.json",
        crate::blob::contact_media_prefix(tenant_id, contact_id)
    )
}

/// DynamoDB TTL of an export record: a day after its expiry. The retention sweep deletes the
/// record together with its object at the expiry; TTL is only the backstop for a sweep that
/// never came, and it must not win the race (the sweep finds the object through the record).
pub const EXPORT_TTL_GRACE_HOURS: i64 = 24;

// ---------------------------------------------------------------------------------------------
// Erasure

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureStatus {
    InProgress,
    Completed,
}

/// What an erasure deleted, per kind (the receipt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErasureCounts {
    /// The profile.
    pub contacts: u64,
    /// Phone and user-id uniqueness records.
    pub identities: u64,
    pub tags: u64,
    /// Consent and restriction history entries.
    pub history_entries: u64,
    pub messages: u64,
    /// Outbound wamid → message pointers.
    pub pointers: u64,
    /// Delivery statuses parked before their message was sent.
    pub statuses: u64,
    pub idempotency_records: u64,
    /// Export records.
    pub exports: u64,
    /// Objects in the media bucket.
    pub media_objects: u64,
    /// Objects in the exports bucket.
    pub export_objects: u64,
    /// Reference items and anything else found in the contact's partition.
    pub other_items: u64,
    /// The contact's conversations (with their read marks) and internal notes.
    pub conversations: u64,
    pub notes: u64,
    /// Its entries in broadcasts' recipient lists (the broadcasts' counters keep their numbers).
    #[serde(default)]
    pub broadcast_recipients: u64,
}

impl ErasureCounts {
    pub fn add(&mut self, other: &ErasureCounts) {
        for (mine, theirs) in self.fields_mut().into_iter().zip(other.values()) {
            *mine += theirs;
        }
    }

    /// What was added since `earlier` (a snapshot of these counts).
    pub fn since(&self, earlier: &ErasureCounts) -> ErasureCounts {
        let mut added = *self;
        for (a, b) in added.fields_mut().into_iter().zip(earlier.values()) {
            *a -= b;
        }
        added
    }

    fn values(&self) -> [u64; 15] {
        [
            self.contacts,
            self.identities,
            self.tags,
            self.history_entries,
            self.messages,
            self.pointers,
            self.statuses,
            self.idempotency_records,
            self.exports,
            self.media_objects,
            self.export_objects,
            self.other_items,
            self.conversations,
            self.notes,
            self.broadcast_recipients,
        ]
    }

    fn fields_mut(&mut self) -> [&mut u64; 15] {
        [
            &mut self.contacts,
            &mut self.identities,
            &mut self.tags,
            &mut self.history_entries,
            &mut self.messages,
            &mut self.pointers,
            &mut self.statuses,
            &mut self.idempotency_records,
            &mut self.exports,
            &mut self.media_objects,
            &mut self.export_objects,
            &mut self.other_items,
            &mut self.conversations,
            &mut self.notes,
            &mut self.broadcast_recipients,
        ]
    }

    /// Items deleted from the table (objects not included).
    pub fn items(&self) -> u64 {
        self.values().iter().sum::<u64>() - self.media_objects - self.export_objects
    }
}

/// Where an unfinished erasure stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureStep {
    /// The contact's objects in both buckets.
    #[default]
    Objects,
    /// Its messages (conversation index), with their pointers and statuses.
    Messages,
    /// Everything left in its partition and what the reference items point at.
    ContactItems,
    /// The objects again: anything a worker stored while the erasure ran.
    FinalObjects,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErasureProgress {
    pub step: ErasureStep,
    /// Where the message walk continues (a serialized `LastEvaluatedKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The message walk has been repeated once from the start (to catch stragglers).
    #[serde(default)]
    pub verified: bool,
}

/// The record of an erasure: its progress while it runs, its receipt afterwards. It names the
/// erased contact only by id and holds no other data of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRecord {
    pub erasure_id: String,
    pub tenant_id: String,
    pub contact_id: String,
    pub status: ErasureStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub requested_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    pub deleted: ErasureCounts,
    #[serde(default)]
    pub progress: ErasureProgress,
    /// When the receipt is no longer kept (the tenant's `audit_days` after the request).
    pub receipt_expiry: DateTime<Utc>,
}

impl ErasureRecord {
    pub fn new(
        tenant_id: &str,
        contact_id: &str,
        requested_by: Option<&str>,
        audit_days: u32,
        now: DateTime<Utc>,
    ) -> Self {
        ErasureRecord {
            erasure_id: erasure_id(tenant_id, contact_id),
            tenant_id: tenant_id.to_owned(),
            contact_id: contact_id.to_owned(),
            status: ErasureStatus::InProgress,
            requested_by: requested_by.map(str::to_owned),
            requested_at: now,
            completed_at: None,
            deleted: ErasureCounts::default(),
            progress: ErasureProgress::default(),
            receipt_expiry: now + chrono::Duration::days(i64::from(audit_days)),
        }
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.receipt_expiry <= now
    }

    /// The receipt as the API shows it.
    pub fn receipt(&self) -> serde_json::Value {
        serde_json::json!({
            "erasure_id": self.erasure_id,
            "contact_id": self.contact_id,
            "status": self.status,
            "requested_at": self.requested_at,
            "completed_at": self.completed_at,
            "deleted": self.deleted,
        })
    }
}

/// The id of the erasure of a contact: derived from the tenant and contact ids, so a repeated
/// request finds the first one's record with a single read. Shaped like our other ids.
pub fn erasure_id(tenant_id: &str, contact_id: &str) -> String {
    let digest = Sha256::digest(format!("erasure\n{tenant_id}\n{contact_id}").as_bytes());
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let ms = id_time(contact_id)
        .map(|t| t.timestamp_millis().max(0) as u64)
        .unwrap_or(0);
    ulid::Ulid::from_parts(ms, u128::from_be_bytes(random))
        .to_string()
        .to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// Jobs and the services that run them

/// Build one export (exporter function).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJob {
    pub tenant_id: String,
    pub export_id: String,
}

/// Continue one erasure (eraser function).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureJob {
    pub tenant_id: String,
    pub erasure_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] BlobError),
    #[error(transparent)]
    Queue(#[from] EnqueueError),
}

/// How long the API spends on an erasure before handing the rest to the eraser function (the
/// API function's timeout is 10 s).
pub const DEFAULT_REQUEST_BUDGET: Duration = Duration::from_secs(5);

/// The storage the privacy machinery works through.
pub trait PrivacyPorts:
    PrivacyStore + ContactStore + ConversationStore + TenantStore + ApiKeyStore + crate::store::BroadcastStore
{
}
impl<T: PrivacyStore + ContactStore + ConversationStore + TenantStore + ApiKeyStore + crate::store::BroadcastStore>
    PrivacyPorts for T
{
}

/// Everything the privacy machinery talks to, each behind its port (storage, the media and
/// exports buckets, the export and erasure queues); the defaults are the AWS implementations.
#[derive(Debug, Clone)]
pub struct Privacy<S = DynamoStore, O = Bucket, Q = SqsQueue> {
    pub store: S,
    pub media: O,
    pub exports: O,
    pub export_jobs: Q,
    pub erasure_jobs: Q,
    /// Time an erasure may take inside an API request before it continues on the queue.
    pub request_budget: Duration,
}

impl Privacy {
    /// Wiring from SDK configuration and the resource names (`Env::resources`).
    pub fn from_sdk(sdk: &aws_config::SdkConfig, resources: &crate::config::Resources) -> Self {
        // S3 and SQS are built on first use: an API call or a job that never reaches them
        // does not pay for them at init.
        let s3 = crate::aws::lazy_s3_client(sdk);
        let sqs = crate::aws::lazy_sqs_client(sdk);
        Privacy {
            store: DynamoStore::new(crate::aws::dynamodb_client(sdk), resources.table.clone()),
            media: Bucket::new(s3.clone(), resources.media_bucket.clone()),
            exports: Bucket::new(s3, resources.exports_bucket.clone()),
            export_jobs: SqsQueue::new(sqs.clone(), resources.export_queue_url.clone()),
            erasure_jobs: SqsQueue::new(sqs, resources.erasure_queue_url.clone()),
            request_budget: DEFAULT_REQUEST_BUDGET,
        }
    }
}

impl<S: PrivacyPorts, O: ObjectStore, Q: JobQueue> Privacy<S, O, Q> {
    pub fn with_request_budget(mut self, budget: Duration) -> Self {
        self.request_budget = budget;
        self
    }

    /// Retention settings of a tenant: its own, else the platform defaults.
    pub async fn settings(&self, tenant_id: &str) -> Result<RetentionSettings, StoreError> {
        Ok(self.store.retention_settings(tenant_id).await?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_bounds() {
        assert_eq!(
            RetentionSettings::default().validate(),
            Ok(RetentionSettings::default())
        );
    }

    #[test]
    fn bounds_are_enforced_per_field() {
        let ok = RetentionSettings {
            messages_days: 1,
            media_days: 1,
            exports_days: 1,
            audit_days: 30,
            events_days: 1,
            reports_days: 1,
        };
        assert!(ok.validate().is_ok());
        let max = RetentionSettings {
            messages_days: 3650,
            media_days: 3650,
            exports_days: 30,
            audit_days: 3650,
            events_days: 30,
            reports_days: 3650,
        };
        assert!(max.validate().is_ok());
        let cases = [
            (RetentionSettings { messages_days: 0, ..ok }, "messages_days"),
            (
                RetentionSettings {
                    messages_days: 3651,
                    ..max
                },
                "messages_days",
            ),
            (RetentionSettings { media_days: 0, ..ok }, "media_days"),
            (RetentionSettings { exports_days: 0, ..ok }, "exports_days"),
            (RetentionSettings { exports_days: 31, ..ok }, "exports_days"),
            (RetentionSettings { audit_days: 29, ..ok }, "audit_days"),
            (RetentionSettings { audit_days: 3651, ..ok }, "audit_days"),
            (RetentionSettings { events_days: 0, ..ok }, "events_days"),
            (RetentionSettings { events_days: 31, ..ok }, "events_days"),
            (RetentionSettings { reports_days: 0, ..ok }, "reports_days"),
            (
                RetentionSettings {
                    reports_days: 3651,
                    ..max
                },
                "reports_days",
            ),
        ];
        for (settings, field) in cases {
            match settings.validate() {
                Err(RetentionError::OutOfBounds(e)) => assert_eq!(e.field, field, "{settings:?}"),
                other => panic!("{settings:?}: {other:?}"),
            }
        }
        assert_eq!(
            RetentionSettings {
                messages_days: 30,
                media_days: 31,
                ..ok
            }
            .validate(),
            Err(RetentionError::MediaOutlivesMessages)
        );
    }

    #[test]
    fn unknown_or_missing_fields_are_refused() {
        assert!(serde_json::from_str::<RetentionSettings>(r#"{"messages_days": 1}"#).is_err());
        assert!(
            serde_json::from_str::<RetentionSettings>(
                r#"{"messages_days":1,"media_days":1,"exports_days":1,"audit_days":30,"x":1}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<RetentionSettings>(
                r#"{"messages_days":-1,"media_days":1,"exports_days":1,"audit_days":30}"#
            )
            .is_err()
        );
    }

    #[test]
    fn cutoffs_are_days_before_as_of() {
        let as_of = DateTime::parse_from_rfc3339("2026-03-31T12:00:00Z").unwrap().to_utc();
        let c = RetentionSettings::default().cutoffs(as_of);
        assert_eq!(c.messages.to_rfc3339(), "2025-03-31T12:00:00+00:00");
        assert_eq!(c.media.to_rfc3339(), "2025-12-31T12:00:00+00:00");
        assert_eq!(c.exports.to_rfc3339(), "2026-03-24T12:00:00+00:00");
        assert_eq!(c.audit, c.messages);
    }

    #[test]
    fn id_floor_orders_ids_by_time() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
        let floor = id_floor(t);
        let before = crate::message::inbound_message_id("t", "w", t - chrono::Duration::milliseconds(1));
        let at = crate::message::inbound_message_id("t", "w", t);
        assert!(before < floor, "{before} < {floor}");
        assert!(at >= floor);
        assert_eq!(id_time(&at), Some(t));
        assert!(crate::ids::is_valid_id(&floor));
        assert_eq!(id_floor(DateTime::<Utc>::MIN_UTC), "00000000000000000000000000");
    }

    #[test]
    fn erasure_ids_are_deterministic_valid_and_distinct() {
        let c = crate::ids::new_id();
        let a = erasure_id("t1", &c);
        assert_eq!(a, erasure_id("t1", &c));
        assert_ne!(a, erasure_id("t2", &c));
        assert_ne!(a, c);
        assert!(crate::ids::is_valid_id(&a));
    }

    #[test]
    fn counts_add_up() {
        let mut a = ErasureCounts {
            messages: 3,
            media_objects: 2,
            ..Default::default()
        };
        a.add(&ErasureCounts {
            messages: 1,
            tags: 4,
            ..Default::default()
        });
        assert_eq!((a.messages, a.tags, a.media_objects), (4, 4, 2));
        assert_eq!(a.items(), 8);
        let json = serde_json::to_value(a).unwrap();
        assert_eq!(json["messages"], 4);
        assert_eq!(json["media_objects"], 2);
    }

    #[test]
    fn exports_live_under_the_contact_prefix() {
        let key = export_key("t1", "c1", "e1");
        assert_eq!(key, "tenants/t1/contacts/c1/exports/e1.json");
        assert!(key.starts_with(&crate::blob::contact_media_prefix("t1", "c1")));
        let now = Utc::now();
        let r = ExportRecord::new("t1", "c1", None, 7, now);
        assert!(!r.is_expired(now) && r.is_expired(now + chrono::Duration::days(7)));
    }
}
