//! The stored form of every item of the table (the schema, in one place): each struct is the
//! domain value plus its key and index attributes, built from the key formats of [`super::keys`].
//! Adapter files map between these and the domain types; nothing outside `store/` sees them.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Update};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use super::dynamo::{Item, av, millis_time, n, s};
use super::keys::*;
use super::ports::{IdempotencyRecord, Lease, StatusWrite};
use crate::audit::AuditEntry;
use crate::contact::{ConsentChange, Contact, RestrictionChange, name_search_key, phone_search_key};
use crate::conversation::{Conversation, ConversationStatus, Note, conversation_id, preview_of, window_end};
use crate::message::{Direction, MediaRef, MediaStatus, MessageError, MessageRecord, MessageStatus};
use crate::privacy::{EXPORT_TTL_GRACE_HOURS, ErasureRecord, ExportRecord, RetentionSettings};
use crate::template::{TEMPLATE_KIND, TemplateRecord};
use crate::tenant::{ApiKeyRecord, PhoneNumber, Tenant};
use crate::user::User;

// ---------------------------------------------------------------------------------------------
// Tenants, routes, keys

#[derive(Serialize, Deserialize)]
pub(crate) struct TenantItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(rename = "GSI1PK")]
    pub gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    pub gsi1sk: String,
    #[serde(flatten)]
    pub tenant: Tenant,
}

impl TenantItem {
    pub fn new(tenant: &Tenant) -> Self {
        TenantItem {
            pk: tenant_pk(&tenant.tenant_id),
            sk: TENANT_SK.into(),
            gsi1pk: ALL_TENANTS_GSI1PK.into(),
            gsi1sk: tenant.tenant_id.clone(),
            tenant: tenant.clone(),
        }
    }
}

/// A lookup from a phone number id or WABA id to its tenant.
#[derive(Serialize, Deserialize)]
pub(crate) struct RouteItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub tenant_id: String,
}

impl RouteItem {
    pub fn new(pk: String, tenant_id: &str) -> Self {
        RouteItem {
            pk,
            sk: ROUTE_SK.into(),
            tenant_id: tenant_id.to_owned(),
        }
    }
}

/// One of a tenant's numbers beyond its first.
#[derive(Serialize, Deserialize)]
pub(crate) struct NumberItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(flatten)]
    pub number: PhoneNumber,
}

impl NumberItem {
    pub fn new(tenant_id: &str, number: &PhoneNumber) -> Self {
        NumberItem {
            pk: tenant_pk(tenant_id),
            sk: number_sk(&number.phone_number_id),
            number: number.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TokenItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub access_token: String,
}

impl TokenItem {
    pub fn new(tenant_id: &str, token: &str) -> Self {
        TokenItem {
            pk: tenant_pk(tenant_id),
            sk: GRAPH_TOKEN_SK.into(),
            access_token: token.to_owned(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct KeyItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub tenant_id: String,
    pub key_id: String,
    pub role: crate::auth::Role,
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// A session key's end. Not the table's TTL attribute (`expires_at`) on purpose: a user's
    /// keys must stay until the user's next sign-in drops them from the user's key list
    /// (`add_user_key`), because a user update rewrites every listed key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
}

impl From<&ApiKeyRecord> for KeyItem {
    fn from(k: &ApiKeyRecord) -> Self {
        KeyItem {
            pk: tenant_pk(&k.tenant_id),
            sk: api_key_sk(&k.key_id),
            tenant_id: k.tenant_id.clone(),
            key_id: k.key_id.clone(),
            role: k.role,
            key_hash: k.key_hash.clone(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
            user_id: k.user_id.clone(),
            valid_until: k.expires_at,
        }
    }
}

impl From<KeyItem> for ApiKeyRecord {
    fn from(k: KeyItem) -> Self {
        ApiKeyRecord {
            tenant_id: k.tenant_id,
            key_id: k.key_id,
            role: k.role,
            key_hash: k.key_hash,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
            user_id: k.user_id,
            expires_at: k.valid_until,
        }
    }
}

/// A one-time sign-in code; TTL removes it once expired (it is refused from then on anyway).
#[derive(Serialize, Deserialize)]
pub(crate) struct SigninItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub tenant_id: String,
    pub code_id: String,
    pub code_hash: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    /// DynamoDB TTL (epoch seconds): the code's end.
    pub expires_at: i64,
}

impl From<&crate::signin::SigninCode> for SigninItem {
    fn from(c: &crate::signin::SigninCode) -> Self {
        SigninItem {
            pk: tenant_pk(&c.tenant_id),
            sk: signin_code_sk(&c.code_id),
            tenant_id: c.tenant_id.clone(),
            code_id: c.code_id.clone(),
            code_hash: c.code_hash.clone(),
            user_id: c.user_id.clone(),
            created_at: c.created_at,
            expires_at: c.expires_at.timestamp(),
        }
    }
}

impl From<SigninItem> for crate::signin::SigninCode {
    fn from(i: SigninItem) -> Self {
        crate::signin::SigninCode {
            tenant_id: i.tenant_id,
            code_id: i.code_id,
            code_hash: i.code_hash,
            user_id: i.user_id,
            created_at: i.created_at,
            expires_at: DateTime::from_timestamp(i.expires_at, 0).unwrap_or_default(),
        }
    }
}

/// A key's timestamps are stored with millisecond precision.
pub(crate) fn key_time(at: DateTime<Utc>) -> AttributeValue {
    millis_time(at)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct SettingsItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub messages_days: u32,
    pub media_days: u32,
    pub exports_days: u32,
    pub audit_days: u32,
    #[serde(default = "crate::privacy::default_events_days")]
    pub events_days: u32,
    #[serde(default = "crate::privacy::default_reports_days")]
    pub reports_days: u32,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

impl SettingsItem {
    pub fn new(tenant_id: &str, settings: &RetentionSettings, actor: Option<&str>, at: DateTime<Utc>) -> Self {
        SettingsItem {
            pk: tenant_pk(tenant_id),
            sk: RETENTION_SETTINGS_SK.into(),
            messages_days: settings.messages_days,
            media_days: settings.media_days,
            exports_days: settings.exports_days,
            audit_days: settings.audit_days,
            events_days: settings.events_days,
            reports_days: settings.reports_days,
            updated_at: at,
            updated_by: actor.map(str::to_owned),
        }
    }

    pub fn settings(&self) -> RetentionSettings {
        RetentionSettings {
            messages_days: self.messages_days,
            media_days: self.media_days,
            exports_days: self.exports_days,
            audit_days: self.audit_days,
            events_days: self.events_days,
            reports_days: self.reports_days,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Contacts

/// The stored form of a contact: the profile plus its index keys.
#[derive(Serialize, Deserialize)]
pub(crate) struct ContactItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(rename = "GSI2PK")]
    pub gsi2pk: String,
    #[serde(rename = "GSI2SK")]
    pub gsi2sk: String,
    #[serde(rename = "GSI3PK", default, skip_serializing_if = "Option::is_none")]
    pub gsi3pk: Option<String>,
    #[serde(rename = "GSI3SK", default, skip_serializing_if = "Option::is_none")]
    pub gsi3sk: Option<String>,
    #[serde(rename = "GSI4PK", default, skip_serializing_if = "Option::is_none")]
    pub gsi4pk: Option<String>,
    #[serde(rename = "GSI4SK", default, skip_serializing_if = "Option::is_none")]
    pub gsi4sk: Option<String>,
    #[serde(flatten)]
    pub contact: Contact,
}

/// The name search key of a contact (GSI3 and tag entries).
pub(crate) fn name_key(contact: &Contact) -> Option<String> {
    contact.name.as_deref().map(name_search_key).filter(|k| !k.is_empty())
}

/// The phone search key of a contact (GSI4 and tag entries).
pub(crate) fn phone_key(contact: &Contact) -> Option<String> {
    contact.phone.as_deref().map(phone_search_key)
}

impl ContactItem {
    pub fn new(contact: &Contact) -> Self {
        let (t, c) = (&contact.tenant_id, &contact.contact_id);
        let name = name_key(contact);
        let phone = phone_key(contact);
        ContactItem {
            pk: contact_pk(t, c),
            sk: PROFILE_SK.into(),
            gsi2pk: contacts_index_pk(t),
            gsi2sk: c.clone(),
            gsi3pk: name.as_ref().map(|_| names_index_pk(t)),
            gsi3sk: name.map(|n| format!("{n}#{c}")),
            gsi4pk: phone.as_ref().map(|_| phones_index_pk(t)),
            gsi4sk: phone.map(|p| format!("{p}#{c}")),
            contact: contact.clone(),
        }
    }
}

/// Membership of a contact in a tag, indexed on GSI2 with the search keys for combined filters.
#[derive(Serialize, Deserialize)]
pub(crate) struct TagItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(rename = "GSI2PK")]
    pub gsi2pk: String,
    #[serde(rename = "GSI2SK")]
    pub gsi2sk: String,
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_key: Option<String>,
}

impl TagItem {
    pub fn new(contact: &Contact, tag: &str) -> Self {
        TagItem {
            pk: contact_pk(&contact.tenant_id, &contact.contact_id),
            sk: tag_sk(tag),
            gsi2pk: tag_index_pk(&contact.tenant_id, tag),
            gsi2sk: contact.contact_id.clone(),
            tag: tag.to_owned(),
            name_key: name_key(contact),
            phone_key: phone_key(contact),
        }
    }
}

/// The record that makes a phone number or user id unique within a tenant.
#[derive(Serialize, Deserialize)]
pub(crate) struct IdentityItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub contact_id: String,
}

impl IdentityItem {
    pub fn new(pk: String, contact_id: &str) -> Self {
        IdentityItem {
            pk,
            sk: IDENTITY_SK.into(),
            contact_id: contact_id.to_owned(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ConsentItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(flatten)]
    pub change: ConsentChange,
}

impl ConsentItem {
    /// A history entry; `id` makes entries of the same millisecond distinct.
    pub fn new(tenant_id: &str, contact_id: &str, change: &ConsentChange, id: &str) -> Self {
        ConsentItem {
            pk: contact_pk(tenant_id, contact_id),
            sk: consent_history_sk(change.at.timestamp_millis(), id),
            change: change.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RestrictionItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(flatten)]
    pub change: RestrictionChange,
}

impl RestrictionItem {
    pub fn new(tenant_id: &str, contact_id: &str, change: &RestrictionChange, id: &str) -> Self {
        RestrictionItem {
            pk: contact_pk(tenant_id, contact_id),
            sk: restriction_history_sk(change.at.timestamp_millis(), id),
            change: change.clone(),
        }
    }
}

/// A reference, inside a contact's partition, to an item of the contact stored elsewhere:
/// erasure follows these.
#[derive(Serialize, Deserialize)]
pub(crate) struct ReferenceItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub ref_sk: String,
}

impl ReferenceItem {
    pub fn new(tenant_id: &str, contact_id: &str, pk: &str, sk: &str) -> Self {
        ReferenceItem {
            pk: contact_pk(tenant_id, contact_id),
            sk: reference_sk(pk),
            ref_sk: sk.to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

#[derive(Serialize, Deserialize)]
pub(crate) struct MessageItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(rename = "GSI1PK")]
    pub gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    pub gsi1sk: String,
    /// The tenant-wide message index (retention, offboarding).
    #[serde(rename = "GSI5PK", default, skip_serializing_if = "Option::is_none")]
    pub gsi5pk: Option<String>,
    #[serde(rename = "GSI5SK", default, skip_serializing_if = "Option::is_none")]
    pub gsi5sk: Option<String>,
    /// The sparse index of stored media (media retention); set while the object exists.
    #[serde(rename = "GSI6PK", default, skip_serializing_if = "Option::is_none")]
    pub gsi6pk: Option<String>,
    #[serde(rename = "GSI6SK", default, skip_serializing_if = "Option::is_none")]
    pub gsi6sk: Option<String>,
    pub status_rank: i64,
    #[serde(flatten)]
    pub message: MessageRecord,
}

/// Whether a message's media object is in S3 (and so belongs in the media index).
pub(crate) fn media_is_stored(media: Option<&MediaRef>) -> bool {
    media.is_some_and(|m| m.status == MediaStatus::Available && m.s3_key.is_some())
}

impl MessageItem {
    pub fn new(message: &MessageRecord) -> Self {
        let (t, m) = (&message.tenant_id, &message.message_id);
        let stored = media_is_stored(message.media.as_ref());
        let sort_id = crate::message::sort_id(m, message.timestamp);
        let outbox = message.direction == Direction::Outbound && message.status == MessageStatus::Queued;
        let shard = message_shard(m);
        let gsi6pk = if stored {
            Some(tenant_media_gsi6pk(t))
        } else {
            outbox.then(|| tenant_outbox_gsi6pk(t, shard))
        };
        MessageItem {
            pk: message_pk(t, m),
            sk: MESSAGE_SK.into(),
            gsi1pk: conversation_gsi1pk(t, &message.contact_id),
            gsi1sk: sort_id.clone(),
            gsi5pk: Some(tenant_messages_gsi5pk(t, shard)),
            gsi5sk: Some(sort_id.clone()),
            gsi6sk: gsi6pk.as_ref().map(|_| sort_id),
            gsi6pk,
            status_rank: message.status.rank(),
            message: message.clone(),
        }
    }
}

/// The index partitions one write of a message item writes to, by DynamoDB's rules for a
/// global secondary index: an entry is written where the item enters an index, leaves it, or
/// moves within it (a changed key: the old entry deleted, the new one put), or, staying, changes
/// an attribute the index projects. `other_changed`: attributes outside the record changed too
/// (the lease, `touched_ms`), which only GSI1 (projection `ALL`) carries. For the write
/// accounting of the in-memory store (`MemStore::count_writes`, the broadcast bench); keep the
/// projections in step with `template.yaml`.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn message_index_writes(
    before: Option<&MessageRecord>,
    after: Option<&MessageRecord>,
    other_changed: bool,
) -> Vec<String> {
    use serde_json::json;
    type Entry = (Option<String>, Option<String>, serde_json::Value);
    let entries = |m: &MessageRecord| -> [Entry; 3] {
        let item = MessageItem::new(m);
        let gsi5 = json!([m.contact_id, m.direction, m.wamid, m.media]);
        let gsi6 = json!(m.media);
        let all = serde_json::to_value(m).unwrap_or_default();
        [
            (Some(item.gsi1pk), Some(item.gsi1sk), all),
            (item.gsi5pk, item.gsi5sk, gsi5),
            (item.gsi6pk, item.gsi6sk, gsi6),
        ]
    };
    let none = || -> [Entry; 3] { std::array::from_fn(|_| (None, None, serde_json::Value::Null)) };
    let (old, new) = (before.map_or_else(none, entries), after.map_or_else(none, entries));
    let mut writes = Vec::new();
    for (i, ((old_pk, old_sk, old_projected), (new_pk, new_sk, new_projected))) in old.into_iter().zip(new).enumerate()
    {
        match (old_pk, new_pk) {
            (Some(o), Some(n)) if o == n && old_sk == new_sk => {
                if old_projected != new_projected || (i == 0 && other_changed) {
                    writes.push(n);
                }
            }
            (o, n) => writes.extend(o.into_iter().chain(n)),
        }
    }
    writes
}

/// The attributes of a message that its deletion cascades from (erasure, retention,
/// offboarding read messages projected to these; the tenant-wide indexes project exactly
/// these besides the keys).
pub(crate) const MESSAGE_CASCADE_ATTRS: &[&str] = &[PK, SK, "contact_id", "direction", "wamid", "media"];

/// A status moving a message forward, as one conditional update: its `SET` clauses, names,
/// values, and the condition that orders statuses (shared by the webhook's status path and the
/// sender's `sent`).
pub(crate) struct StatusChange {
    pub sets: Vec<&'static str>,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
    pub condition: &'static str,
}

impl StatusChange {
    pub fn of(write: &StatusWrite) -> StatusChange {
        let status = write.status.as_str();
        let mut names = HashMap::from([
            ("#status".to_owned(), "status".to_owned()),
            ("#st".to_owned(), status.to_owned()),
        ]);
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":status".to_owned(), s(status)),
            (":rank".to_owned(), n(write.status.rank())),
            (":at".to_owned(), av(&write.at)),
        ]);
        let mut sets = vec!["#status = :status", "status_rank = :rank", "status_at.#st = :at"];
        if let Some(error) = &write.error {
            sets.push("#error = :error");
            names.insert("#error".into(), "error".into());
            values.insert(":error".into(), av(error));
        }
        if let Some(pricing) = &write.pricing {
            sets.push("pricing = :pricing");
            values.insert(":pricing".into(), av(pricing));
        }
        if let Some(conversation) = &write.conversation {
            sets.push("conversation = :conversation");
            values.insert(":conversation".into(), av(conversation));
        }
        // The ladder decides which current ranks this status moves (MessageStatus::moves).
        values.insert(":limit".into(), n(write.status.moves_up_to_rank()));
        let condition = "attribute_exists(PK) AND attribute_not_exists(status_at.#st) AND status_rank <= :limit";
        StatusChange {
            sets,
            names,
            values,
            condition,
        }
    }
}

/// Where an outbound message's wamid leads: the message it was sent as.
#[derive(Serialize, Deserialize)]
pub(crate) struct WamidPointerItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub message_id: String,
}

impl WamidPointerItem {
    pub fn new(tenant_id: &str, wamid: &str, message_id: &str) -> Self {
        WamidPointerItem {
            pk: wamid_pk(tenant_id, wamid),
            sk: WAMID_SK.into(),
            message_id: message_id.to_owned(),
        }
    }
}

impl StatusChange {
    /// The update expression: the `SET` clauses, the outbox index entry removed (a message with
    /// a status past `queued` has left the outbox), and `also_remove`.
    pub fn expression(&self, also_remove: &[&str]) -> String {
        let removes: Vec<&str> = [OUTBOX_INDEX_ATTRS, also_remove].concat();
        format!("SET {} REMOVE {}", self.sets.join(", "), removes.join(", "))
    }
}

/// The attributes that put a queued outbound message in the outbox (GSI6).
pub(crate) const OUTBOX_INDEX_ATTRS: &[&str] = &[GSI6_PK, GSI6_SK];

/// Days a parked status is kept when its message never shows up.
const PARKED_STATUS_TTL_DAYS: i64 = 30;

/// A status that arrived before the sender stored its message's wamid (applied by `mark_sent`).
#[derive(Serialize, Deserialize)]
pub(crate) struct ParkedStatusItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub wamid: String,
    pub status: MessageStatus,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Value>,
    /// DynamoDB TTL (epoch seconds).
    pub expires_at: i64,
}

impl ParkedStatusItem {
    pub fn new(tenant_id: &str, write: &StatusWrite) -> Self {
        ParkedStatusItem {
            pk: wamid_pk(tenant_id, &write.wamid),
            sk: pending_status_sk(write.status.as_str()),
            wamid: write.wamid.clone(),
            status: write.status,
            at: write.at,
            error: write.error.clone(),
            pricing: write.pricing.clone(),
            conversation: write.conversation.clone(),
            expires_at: (write.at + chrono::Duration::days(PARKED_STATUS_TTL_DAYS)).timestamp(),
        }
    }

    pub fn into_write(self) -> StatusWrite {
        StatusWrite {
            wamid: self.wamid,
            status: self.status,
            at: self.at,
            error: self.error,
            pricing: self.pricing,
            conversation: self.conversation,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct IdempotencyItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(flatten)]
    pub record: IdempotencyRecord,
}

impl IdempotencyItem {
    pub fn new(record: &IdempotencyRecord) -> Self {
        IdempotencyItem {
            pk: idempotency_pk(&record.tenant_id, &record.key_hash),
            sk: IDEMPOTENCY_SK.into(),
            record: record.clone(),
        }
    }
}

/// Days a raw webhook event is kept (DynamoDB TTL; 28 so TTL's lag stays within a month).
pub const RAW_EVENT_TTL_DAYS: i64 = 28;

/// A non-message webhook change kept as received (diagnostics), deduplicated by content.
#[derive(Serialize)]
pub(crate) struct RawEventItem<'a> {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub field: &'a str,
    pub value: &'a Value,
    pub received_at: DateTime<Utc>,
    /// DynamoDB TTL (epoch seconds).
    pub expires_at: i64,
}

impl<'a> RawEventItem<'a> {
    pub fn new(tenant_id: &str, field: &'a str, value: &'a Value, received_at: DateTime<Utc>) -> Self {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(format!("{field}\n{value}").as_bytes()));
        RawEventItem {
            pk: events_pk(tenant_id),
            sk: format!("EVENT#{}", &digest[..32]),
            field,
            value,
            received_at,
            // Raw events are diagnostics that may quote a customer (an unparsed message, a late
            // failure's recipient) without belonging to a contact erasure can find: they expire
            // within the month an erasure request may take (docs/privacy.md).
            expires_at: (received_at + chrono::Duration::days(RAW_EVENT_TTL_DAYS)).timestamp(),
        }
    }
}

/// An erased wamid's tombstone ([`tombstone_key`]); DynamoDB's TTL removes it once Meta can
/// no longer redeliver the webhook.
#[derive(Serialize, Deserialize)]
pub(crate) struct TombstoneItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub erased_at: DateTime<Utc>,
    /// DynamoDB TTL (epoch seconds).
    pub expires_at: i64,
}

impl TombstoneItem {
    pub fn new(tenant_id: &str, wamid: &str, erased_at: DateTime<Utc>) -> Self {
        let (pk, sk) = tombstone_key(tenant_id, wamid);
        TombstoneItem {
            pk,
            sk,
            erased_at,
            expires_at: (erased_at + chrono::Duration::days(TOMBSTONE_DAYS)).timestamp(),
        }
    }
}

/// How long an erased wamid's tombstone is kept: Meta retries a webhook for up to 7 days.
pub const TOMBSTONE_DAYS: i64 = 8;

/// The per-number send schedule's next free slot, from an item returned by DynamoDB.
pub(crate) fn schedule_next_free(item: Option<&Item>) -> Option<i64> {
    item?.get("next_free_us")?.as_n().ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Conversations, notes, users

/// The stored form of a conversation: in its contact's partition, in the inbox index (GSI1, by
/// last activity) and, while someone waits, in the waiting index (GSI7, by wait).
#[derive(Serialize, Deserialize)]
pub(crate) struct ConversationItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(rename = "GSI1PK")]
    pub gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    pub gsi1sk: String,
    #[serde(rename = "GSI7PK", default, skip_serializing_if = "Option::is_none")]
    pub gsi7pk: Option<String>,
    #[serde(rename = "GSI7SK", default, skip_serializing_if = "Option::is_none")]
    pub gsi7sk: Option<String>,
    #[serde(flatten)]
    pub conversation: Conversation,
}

/// A message's change to its conversation, as one update (folded into the message's own
/// transaction, so the inbox costs no request of its own): created on first use, every
/// counter and clock moved by update expressions, never read first. Mirrors
/// [`Conversation::on_inbound`] and [`Conversation::on_outbound`].
pub(crate) struct ConversationTouch {
    sets: Vec<String>,
    removes: Vec<&'static str>,
    values: HashMap<String, AttributeValue>,
}

impl ConversationTouch {
    fn base(message: &MessageRecord, phone_number_id: &str) -> Self {
        let (t, c) = (&message.tenant_id, &message.contact_id);
        let id = conversation_id(c, phone_number_id);
        let sets = [
            "tenant_id = if_not_exists(tenant_id, :t)",
            "conversation_id = if_not_exists(conversation_id, :cid)",
            "contact_id = if_not_exists(contact_id, :c)",
            "phone_number_id = if_not_exists(phone_number_id, :pnid)",
            "created_at = if_not_exists(created_at, :now)",
            "opened_at = if_not_exists(opened_at, :now)",
            "#priority = if_not_exists(#priority, :normal)",
            "#reads = if_not_exists(#reads, :no_reads)",
            "message_count = if_not_exists(message_count, :zero) + :one",
            "updated_at = :now",
            "GSI1PK = :inbox",
        ];
        let values = HashMap::from([
            (":t".to_owned(), s(t.clone())),
            (":cid".to_owned(), s(id)),
            (":c".to_owned(), s(c.clone())),
            (":pnid".to_owned(), s(phone_number_id)),
            (":now".to_owned(), av(&message.created_at)),
            (":normal".to_owned(), av(&crate::conversation::Priority::Normal)),
            (":no_reads".to_owned(), AttributeValue::M(HashMap::new())),
            (":zero".to_owned(), n(0)),
            (":one".to_owned(), n(1)),
            (":inbox".to_owned(), s(inbox_gsi1pk(t))),
            (":ts".to_owned(), av(&message.timestamp)),
            (
                ":isk".to_owned(),
                s(inbox_sk(
                    message.timestamp.timestamp_millis(),
                    &conversation_id(c, phone_number_id),
                )),
            ),
            (":preview".to_owned(), av(&preview_of(message))),
        ]);
        ConversationTouch {
            sets: sets.into_iter().map(str::to_owned).collect(),
            removes: Vec::new(),
            values,
        }
    }

    /// A customer's message; `newest`: the contact's newest (clocks, window and preview move).
    pub fn inbound(message: &MessageRecord, phone_number_id: &str, newest: bool) -> Self {
        let mut touch = Self::base(message, phone_number_id);
        touch.sets.extend(
            [
                "#status = :open",
                "last_seq = if_not_exists(last_seq, :zero) + :one",
                "waiting_since = if_not_exists(waiting_since, :ts)",
                "unanswered_since = if_not_exists(unanswered_since, :ts)",
                "measured_from = if_not_exists(measured_from, :ts)",
                "GSI7PK = :waiting",
                "GSI7SK = if_not_exists(GSI7SK, :isk)",
            ]
            .map(str::to_owned),
        );
        if newest {
            touch.sets.extend(
                [
                    "last_activity_at = :ts",
                    "last_inbound_at = :ts",
                    "window_expires_at = :window",
                    "#preview = :preview",
                    "GSI1SK = :isk",
                ]
                .map(str::to_owned),
            );
            touch
                .values
                .insert(":window".into(), av(&window_end(message.timestamp)));
        } else {
            touch.sets.extend(
                [
                    "last_activity_at = if_not_exists(last_activity_at, :ts)",
                    "GSI1SK = if_not_exists(GSI1SK, :isk)",
                ]
                .map(str::to_owned),
            );
            touch.values.remove(":preview");
        }
        touch.removes = vec!["snooze_until", "resolved_at", "resolved_by", "GSI6PK", "GSI6SK"];
        touch.values.insert(":open".into(), av(&ConversationStatus::Open));
        touch
            .values
            .insert(":waiting".into(), s(waiting_gsi7pk(&message.tenant_id)));
        touch
    }

    /// Our message: it answers whoever waited; a conversation it creates is `pending`. An
    /// automated reply only moves the clocks and the preview: the customer still waits for the
    /// team, and the response-time measurement goes on.
    pub fn outbound(message: &MessageRecord, phone_number_id: &str) -> Self {
        let mut touch = Self::base(message, phone_number_id);
        if message.automation_rule.is_some() {
            touch.sets.extend(
                [
                    "#status = if_not_exists(#status, :pending)",
                    "last_seq = if_not_exists(last_seq, :zero)",
                    "last_activity_at = :ts",
                    "last_outbound_at = :ts",
                    "#preview = :preview",
                    "GSI1SK = :isk",
                ]
                .map(str::to_owned),
            );
            // It ends the no-reply wait (the customer got an answer), not the team's.
            touch.removes = vec!["unanswered_since"];
            touch.values.insert(":pending".into(), av(&ConversationStatus::Pending));
            return touch;
        }
        touch.sets.extend(
            [
                "#status = if_not_exists(#status, :pending)",
                "last_seq = if_not_exists(last_seq, :zero)",
                "last_activity_at = :ts",
                "last_outbound_at = :ts",
                "responded_from = if_not_exists(measured_from, :null)",
                "#preview = :preview",
                "GSI1SK = :isk",
            ]
            .map(str::to_owned),
        );
        touch.removes = vec!["waiting_since", "unanswered_since", "GSI7PK", "GSI7SK"];
        match &message.sent_by {
            Some(user) => {
                touch.sets.push("last_outbound_by = :by".to_owned());
                touch.values.insert(":by".into(), s(user.clone()));
            }
            None => touch.removes.push("last_outbound_by"),
        }
        touch.values.insert(":pending".into(), av(&ConversationStatus::Pending));
        touch.values.insert(":null".into(), AttributeValue::Null(true));
        touch
    }

    pub fn into_update(self, table: &str, message: &MessageRecord, phone_number_id: &str) -> Update {
        let mut expression = format!("SET {}", self.sets.join(", "));
        if !self.removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", self.removes.join(", ")));
        }
        Update::builder()
            .table_name(table)
            .set_key(Some(super::dynamo::key(
                contact_pk(&message.tenant_id, &message.contact_id),
                conversation_sk(phone_number_id),
            )))
            // Names that are (or may become) DynamoDB reserved words go through aliases, each
            // defined only where used (DynamoDB refuses an unused one).
            .set_expression_attribute_names(Some(
                ["status", "priority", "reads", "preview"]
                    .into_iter()
                    .map(|name| (format!("#{name}"), name.to_owned()))
                    .filter(|(alias, _)| expression.contains(alias.as_str()))
                    .collect(),
            ))
            .update_expression(expression)
            .set_expression_attribute_values(Some(self.values))
            .build()
            .expect("update is complete")
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct NoteItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub phone_number_id: String,
    #[serde(flatten)]
    pub note: Note,
}

impl NoteItem {
    pub fn new(note: &Note, phone_number_id: &str) -> Self {
        NoteItem {
            pk: contact_pk(&note.tenant_id, &note.contact_id),
            sk: note_sk(phone_number_id, &note.note_id),
            phone_number_id: phone_number_id.to_owned(),
            note: note.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct UserItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(flatten)]
    pub user: User,
}

impl UserItem {
    pub fn new(user: &User) -> Self {
        UserItem {
            pk: tenant_pk(&user.tenant_id),
            sk: user_sk(&user.user_id),
            user: user.clone(),
        }
    }
}

/// The record that makes a user's email unique within the tenant.
#[derive(Serialize, Deserialize)]
pub(crate) struct UserEmailItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub user_id: String,
}

impl UserEmailItem {
    pub fn new(user: &User) -> Self {
        UserEmailItem {
            pk: tenant_pk(&user.tenant_id),
            sk: user_email_sk(&user.email),
            user_id: user.user_id.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Audit

#[derive(Serialize, Deserialize)]
pub(crate) struct AuditItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

impl AuditItem {
    pub fn new(entry: &AuditEntry) -> Self {
        AuditItem {
            pk: audit_pk(&entry.tenant_id),
            sk: entry.id.clone(),
            entry: entry.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Templates

/// A registry entry. `kind` = `"template"` and the flat `status` let a stream consumer tell a
/// template item and its status change from the old and new images alone; `status_time` is
/// Meta's time of the status last applied (epoch seconds), which keeps a late webhook from
/// undoing a newer status.
#[derive(Serialize, Deserialize)]
pub(crate) struct TemplateItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_time: Option<i64>,
    /// `updated_at` in epoch milliseconds, for conditions (RFC 3339 strings of varying
    /// precision do not compare in time order).
    #[serde(default)]
    pub updated_ms: i64,
    #[serde(flatten)]
    pub record: TemplateRecord,
}

impl TemplateItem {
    /// The item of `record`, whose status is Meta's as of `status_time` (epoch seconds).
    pub fn new(record: &TemplateRecord, status_time: i64) -> Self {
        TemplateItem {
            pk: templates_pk(&record.tenant_id),
            sk: template_sk(&record.name, &record.language),
            kind: TEMPLATE_KIND.into(),
            status_time: Some(status_time),
            updated_ms: record.updated_at.timestamp_millis(),
            record: record.clone(),
        }
    }
}

/// The tenant's template creations of the last hour (epoch milliseconds), with a version for
/// the read-modify-write.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct TemplateCreationsItem {
    #[serde(default)]
    pub created_ms: Vec<i64>,
    #[serde(default)]
    pub version: u64,
}

// ---------------------------------------------------------------------------------------------
// Privacy

#[derive(Serialize, Deserialize)]
pub(crate) struct ExportItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(rename = "GSI1PK")]
    pub gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    pub gsi1sk: String,
    /// DynamoDB TTL (epoch seconds): a backstop after the record's expiry.
    pub expires_at: i64,
    #[serde(flatten)]
    pub record: ExportRecord,
}

impl ExportItem {
    pub fn new(record: &ExportRecord) -> Self {
        ExportItem {
            pk: export_pk(&record.tenant_id, &record.export_id),
            sk: EXPORT_SK.into(),
            gsi1pk: exports_gsi1pk(&record.tenant_id),
            gsi1sk: record.export_id.clone(),
            expires_at: (record.expiry + chrono::Duration::hours(EXPORT_TTL_GRACE_HOURS)).timestamp(),
            record: record.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ErasureItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(rename = "GSI1PK")]
    pub gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    pub gsi1sk: String,
    /// DynamoDB TTL (epoch seconds): the receipt's expiry.
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until_ms: Option<i64>,
    #[serde(flatten)]
    pub record: ErasureRecord,
}

impl ErasureItem {
    pub fn new(record: &ErasureRecord, lease: Option<&Lease>) -> Self {
        ErasureItem {
            pk: erasure_pk(&record.tenant_id, &record.erasure_id),
            sk: ERASURE_SK.into(),
            gsi1pk: erasures_gsi1pk(&record.tenant_id),
            gsi1sk: record.erasure_id.clone(),
            expires_at: record.receipt_expiry.timestamp(),
            lease_token: lease.map(|l| l.token.clone()),
            lease_until_ms: lease.map(|l| l.until_ms),
            record: record.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dynamo::to_item;

    fn status_events(n: usize) -> Vec<crate::events::Event> {
        (0..n)
            .map(|i| crate::events::Event {
                id: format!("evt_{}", crate::ids::new_id()),
                tenant_id: "01jtenant00000000000000000".into(),
                event_type: crate::events::EventType::MessageStatusUpdated,
                timestamp: Utc::now(),
                seq: 41 + i as u64,
                data: serde_json::json!({"message_id": crate::ids::new_id(), "contact_id": crate::ids::new_id(),
                             "status": "delivered", "previous_status": "sent", "status_rank": 2,
                             "at": "2026-12-04T10:00:00Z"}),
            })
            .collect()
    }

    #[test]
    fn an_event_pack_is_stored_deflated_and_reads_back_whole_in_either_form() {
        let events = status_events(96);
        let expires = Utc::now() + chrono::Duration::days(7);
        let item = event_pack_item(&events, expires);
        assert!(
            item.get("packed").is_some_and(|v| v.as_b().is_ok()),
            "a binary attribute"
        );
        assert!(!item.contains_key("events"));
        assert_eq!(item["first_seq"].as_n().unwrap(), "41");
        assert_eq!(item["last_seq"].as_n().unwrap(), "136");
        let read: EventPackItem = crate::store::dynamo::from_item(item.clone()).unwrap();
        assert_eq!(read.into_events().unwrap(), events);
        // A pack written before packs were deflated: its events as a list of maps.
        let mut listed = item.clone();
        listed.remove("packed");
        listed.insert("events".into(), av(&events));
        let legacy: EventPackItem = crate::store::dynamo::from_item(listed.clone()).unwrap();
        assert_eq!(legacy.into_events().unwrap(), events);
        // What it saves: thin events shrink to well under a third.
        let (packed, list) = (crate::store::item_size(&item), crate::store::item_size(&listed));
        assert!(packed * 3 < list, "packed {packed} B, listed {list} B");
        // A damaged pack is a clear error, not a panic or a silent gap.
        let mut damaged = item;
        damaged.insert("packed".into(), AttributeValue::B(vec![0xff; 16].into()));
        let damaged: EventPackItem = crate::store::dynamo::from_item(damaged).unwrap();
        assert!(matches!(damaged.into_events(), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_message_is_indexed_under_its_own_shard_and_leaves_the_outbox_when_sent() {
        use crate::message::{Direction, MessageRecord, MessageStatus};
        let now = Utc::now();
        let id = crate::ids::new_id();
        let shard = message_shard(&id);
        let queued = MessageRecord::new(
            "t",
            id.clone(),
            "c",
            Direction::Outbound,
            "text",
            Value::Null,
            MessageStatus::Queued,
            now,
            now,
        );
        let item = MessageItem::new(&queued);
        assert_eq!(
            item.gsi5pk.as_deref(),
            Some(tenant_messages_gsi5pk("t", shard).as_str())
        );
        assert_eq!(item.gsi6pk.as_deref(), Some(tenant_outbox_gsi6pk("t", shard).as_str()));
        assert_eq!(item.gsi5sk, item.gsi6sk);
        // Every reader's list holds the writer's key.
        assert!(tenant_messages_gsi5pks("t").contains(item.gsi5pk.as_ref().unwrap()));
        assert!(tenant_outbox_gsi6pks("t").contains(item.gsi6pk.as_ref().unwrap()));

        // The index writes of its life: created (three indexes), claimed (GSI1 only: the lease
        // is projected nowhere else), sent (the wamid is in GSI5's projection; the outbox entry
        // is deleted), delivered (GSI1 only).
        let conversation = conversation_gsi1pk("t", "c");
        let (gsi5, outbox) = (tenant_messages_gsi5pk("t", shard), tenant_outbox_gsi6pk("t", shard));
        assert_eq!(
            message_index_writes(None, Some(&queued), false),
            vec![conversation.clone(), gsi5.clone(), outbox.clone()]
        );
        assert_eq!(
            message_index_writes(Some(&queued), Some(&queued), true),
            vec![conversation.clone()]
        );
        assert!(message_index_writes(Some(&queued), Some(&queued), false).is_empty());
        let mut sent = queued.clone();
        sent.status = MessageStatus::Sent;
        sent.wamid = Some("wamid.1".into());
        assert_eq!(
            message_index_writes(Some(&queued), Some(&sent), false),
            vec![conversation.clone(), gsi5, outbox]
        );
        assert!(MessageItem::new(&sent).gsi6pk.is_none());
        let mut delivered = sent.clone();
        delivered.status = MessageStatus::Delivered;
        assert_eq!(
            message_index_writes(Some(&sent), Some(&delivered), false),
            vec![conversation]
        );
    }

    #[test]
    fn a_message_stated_in_the_future_sorts_by_its_bounded_time_in_every_index() {
        use crate::message::{self, Direction, MessageRecord, MessageStatus};
        let now = Utc::now();
        let stated = message::meta_time(32_503_680_000, now);
        let id = message::inbound_message_id("t", "wamid.f", stated);
        let at = message::bounded_time(stated, now);
        let record = MessageRecord::new(
            "t",
            id.clone(),
            "c",
            Direction::Inbound,
            "text",
            Value::Null,
            MessageStatus::Received,
            at,
            now,
        );
        let item = MessageItem::new(&record);
        let floor = crate::privacy::id_floor(now + chrono::Duration::hours(1));
        assert!(id > floor, "the id itself is in the future");
        // Retention's `below(id_floor(cutoff))` and the history's order see the bounded time.
        assert!(item.gsi5sk.as_deref().unwrap() < floor.as_str());
        assert_eq!(item.gsi1sk, item.gsi5sk.clone().unwrap());
        assert_eq!(item.pk, message_pk("t", &id));
    }

    #[test]
    fn tombstones_hash_the_wamid_and_expire_after_the_redelivery_window() {
        let at = Utc::now();
        let item = TombstoneItem::new("t", "wamid.secret", at);
        assert!(!item.pk.contains("wamid.secret") && !item.sk.contains("wamid.secret"));
        assert!(item.pk.starts_with("T#t#ERASED#"));
        assert_eq!(
            item.expires_at,
            (at + chrono::Duration::days(TOMBSTONE_DAYS)).timestamp()
        );
        assert_eq!((item.pk.clone(), item.sk.clone()), tombstone_key("t", "wamid.secret"));
    }

    #[test]
    fn export_ttl_trails_the_expiry() {
        let now = Utc::now();
        let record = ExportRecord::new("t", "c", None, 7, now);
        let item = ExportItem::new(&record);
        assert_eq!(
            item.expires_at,
            (record.expiry + chrono::Duration::hours(EXPORT_TTL_GRACE_HOURS)).timestamp()
        );
        let raw = to_item(&item);
        assert!(raw["expires_at"].as_n().is_ok(), "TTL attribute must be a number");
        assert!(raw["expiry"].as_s().is_ok());
    }

    #[test]
    fn raw_events_are_keyed_by_content_and_expire() {
        let at = Utc::now();
        let value = serde_json::json!({"a": 1});
        let a = RawEventItem::new("t", "account_update", &value, at);
        let b = RawEventItem::new("t", "account_update", &value, at + chrono::Duration::seconds(5));
        assert_eq!(a.sk, b.sk, "the same change redelivered is one item");
        assert_ne!(a.sk, RawEventItem::new("t", "other", &value, at).sk);
        assert_eq!(
            a.expires_at,
            (at + chrono::Duration::days(RAW_EVENT_TTL_DAYS)).timestamp()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Event stream and tenant webhooks

/// Consecutive events of a tenant's log recorded together (one stream batch's part), under the
/// position of the first, kept until `expires_at` (DynamoDB TTL; reads skip it after). Packing
/// is what lets one tenant's log, one partition key, take thousands of events/s: DynamoDB
/// bills a transactional write per KB of item, so one item of many small events costs a
/// fraction of as many items of one event each (each rounded up to a KB); and the pack holds
/// them deflated (`packed`: the events' JSON), since a pack of thin events is mostly names,
/// types, times and a tenant id that repeat — about a twelfth of the size (docs/events.md).
#[derive(Serialize, Deserialize)]
pub(crate) struct EventPackItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Packs written before packs were deflated hold their events as a list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<crate::events::Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packed: Option<serde_bytes::ByteBuf>,
    pub expires_at: i64,
}

/// The most a pack's events may inflate to: far above what 98 thin events take (~30 KB), and
/// a bound on what a damaged item can make a reader allocate.
const PACK_INFLATED_LIMIT: usize = 4 << 20;

impl EventPackItem {
    /// `events`: consecutive positions, at least one.
    pub fn new(events: &[crate::events::Event], expires_at: DateTime<Utc>) -> Self {
        let (first, last) = (&events[0], &events[events.len() - 1]);
        let json = serde_json::to_vec(events).expect("events serialize");
        EventPackItem {
            pk: event_log_pk(&first.tenant_id),
            sk: event_seq_sk(first.seq),
            first_seq: first.seq,
            last_seq: last.seq,
            events: Vec::new(),
            packed: Some(serde_bytes::ByteBuf::from(miniz_oxide::deflate::compress_to_vec(
                &json, 6,
            ))),
            expires_at: expires_at.timestamp(),
        }
    }

    /// The pack's events, in position order (either form).
    pub fn into_events(self) -> Result<Vec<crate::events::Event>, StoreError> {
        let Some(packed) = self.packed else {
            return Ok(self.events);
        };
        let json = miniz_oxide::inflate::decompress_to_vec_with_limit(&packed, PACK_INFLATED_LIMIT)
            .map_err(|e| StoreError::Corrupt(format!("event pack {}: {e}", self.sk)))?;
        serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt(format!("event pack {}: {e}", self.sk)))
    }
}

/// The stored item of a pack of `events` (consecutive positions, at least one): what the events
/// function writes, and what the bench sizes (`event-log-units`).
pub fn event_pack_item(events: &[crate::events::Event], expires_at: DateTime<Utc>) -> Item {
    super::dynamo::to_item(&EventPackItem::new(events, expires_at))
}

/// An event id → its position; its conditional put is the stream record's deduplication.
#[derive(Serialize, Deserialize)]
pub(crate) struct EventIdItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub seq: u64,
    pub expires_at: i64,
}

/// The log's head: the last position given.
#[derive(Serialize, Deserialize)]
pub(crate) struct EventHeadItem {
    pub seq: u64,
}

/// A webhook endpoint's settings and state (its secrets are a separate item, so a change of
/// the endpoint never carries them through the change stream).
#[derive(Serialize, Deserialize)]
pub(crate) struct EndpointItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(flatten)]
    pub endpoint: crate::events::endpoint::WebhookEndpoint,
}

impl EndpointItem {
    pub fn new(endpoint: &crate::events::endpoint::WebhookEndpoint) -> Self {
        EndpointItem {
            pk: webhook_endpoints_pk(&endpoint.tenant_id),
            sk: webhook_endpoint_sk(&endpoint.endpoint_id),
            endpoint: endpoint.clone(),
        }
    }
}

/// An endpoint's signing secrets: outside the sort keys the events function watches.
#[derive(Serialize, Deserialize)]
pub(crate) struct EndpointSecretItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<DateTime<Utc>>,
}

/// One delivery attempt, kept 30 days.
#[derive(Serialize, Deserialize)]
pub(crate) struct DeliveryItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(flatten)]
    pub attempt: crate::events::endpoint::DeliveryAttempt,
    pub expires_at: i64,
}

impl DeliveryItem {
    pub fn new(attempt: &crate::events::endpoint::DeliveryAttempt) -> Self {
        DeliveryItem {
            pk: webhook_deliveries_pk(
                &attempt.tenant_id,
                &attempt.endpoint_id,
                delivery_shard(&attempt.attempt_id),
            ),
            sk: attempt.attempt_id.clone(),
            attempt: attempt.clone(),
            expires_at: (attempt.at + chrono::Duration::days(crate::events::endpoint::DELIVERY_LOG_DAYS)).timestamp(),
        }
    }
}
