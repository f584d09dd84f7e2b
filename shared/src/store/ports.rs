//! The storage ports: one trait per aggregate (tenants, API keys, contacts, messages, inbound
//! writes, outbound writes, send pacing, audit, privacy), each with the plain types it speaks.
//! Handlers are generic over the ports they use. There is one real implementation (DynamoDB,
//! the other files of `store/`) and one in-memory implementation for tests (`crate::testing`);
//! every method states the guarantee both must keep.

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, StoreError};
use crate::audit::AuditEntry;
use crate::contact::{ConsentChange, Contact, ContactSummary, IdentityChange, RestrictionChange};
use crate::conversation::{Conversation, ConversationStatus, InboxFilter, Note, StatusChange, Visibility};
use crate::cursor::Position;
use crate::events::endpoint::{DeliveryAttempt, EndpointSecrets, WebhookEndpoint};
use crate::events::{Event, EventDraft};
use crate::message::{MediaRef, MessageError, MessageRecord, MessageStatus};
use crate::privacy::{ErasureCounts, ErasureRecord, ExportRecord, RetentionSettings};
use crate::reports::counters::{CounterRow, Counting, Granularity};
use crate::secret::Secret;
use crate::sending::{SendSchedule, SlotDecision};
use crate::template::{TemplateChange, TemplateRecord};
use crate::tenant::{ApiKeyRecord, InboxSettings, PhoneNumber, ReportSettings, Tenant};
use crate::user::User;

// ---------------------------------------------------------------------------------------------
// Tenants and API keys

/// Tenants, the lookups that route to them, and their Graph token.
pub trait TenantStore: Send + Sync {
    /// Creates the tenant, its phone-number and WABA routes, its Graph token and its first key
    /// in one transaction: a tenant never exists half-made. A phone number id or WABA id that
    /// already routes to a tenant is a [`StoreError::Conflict`].
    fn create_tenant(
        &self,
        tenant: &Tenant,
        graph_token: &Secret,
        first_key: &ApiKeyRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_tenant(&self, tenant_id: &str) -> impl Future<Output = Result<Option<Tenant>, StoreError>> + Send;

    /// The tenant a WhatsApp phone number id belongs to.
    fn tenant_for_phone_number(
        &self,
        phone_number_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// The tenant a WhatsApp Business Account id belongs to.
    fn tenant_for_waba(&self, waba_id: &str) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// The tenant's Graph API access token (read only by code that calls Meta).
    fn graph_token(&self, tenant_id: &str) -> impl Future<Output = Result<Option<Secret>, StoreError>> + Send;

    /// Flags (or clears) the tenant's token as rejected by Meta; `NotFound` without a tenant.
    fn set_token_invalid(&self, tenant_id: &str, invalid: bool) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces the tenant's Graph token and clears the invalid flag (one transaction);
    /// `NotFound` without a tenant.
    fn replace_graph_token(
        &self,
        tenant_id: &str,
        token: &Secret,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks the tenant disabled (the first time is kept); the time it was first disabled, or
    /// `None` without a tenant.
    fn disable_tenant(
        &self,
        tenant_id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send;

    /// The tenant's WhatsApp numbers, its first (the tenant record's) first; empty without a
    /// tenant.
    fn numbers(&self, tenant_id: &str) -> impl Future<Output = Result<Vec<PhoneNumber>, StoreError>> + Send;

    /// Adds a number to an active tenant with its phone-number route (and a WABA route for
    /// another WABA of its own), in one transaction; `Conflict` naming what is taken (the
    /// number by another tenant or by this one, the WABA by another tenant).
    fn add_number(&self, tenant: &Tenant, number: &PhoneNumber) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes an added number and its route (`NotFound` if it is not the tenant's; the first
    /// number is the tenant's default sender and cannot be removed: `Conflict`).
    fn remove_number(
        &self,
        tenant: &Tenant,
        phone_number_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces the tenant's inbox settings; `NotFound` without a tenant.
    fn set_inbox_settings(
        &self,
        tenant_id: &str,
        settings: &InboxSettings,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn set_report_settings(
        &self,
        tenant_id: &str,
        settings: &ReportSettings,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the tenant's phone-number and WABA routes where they still route to it; returns
    /// how many it deleted.
    fn delete_routes(&self, tenant: &Tenant) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// An item a request will need right after its key, read in the key's round trip (the key names
/// its tenant, so the two reads do not depend on each other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alongside {
    /// A contact by id.
    Contact(String),
    /// Which contact holds a phone number (E.164).
    PhoneOwner(String),
}

/// What was found of an [`Alongside`] item (`None`: no such item).
#[derive(Debug, Clone, PartialEq)]
pub enum FoundAlongside {
    Contact(Option<Box<Contact>>),
    PhoneOwner(Option<String>),
}

impl Alongside {
    /// The answer when the item does not exist.
    pub fn absent(&self) -> FoundAlongside {
        match self {
            Alongside::Contact(_) => FoundAlongside::Contact(None),
            Alongside::PhoneOwner(_) => FoundAlongside::PhoneOwner(None),
        }
    }
}

/// API keys of a tenant.
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key; the tenant must exist and be active ([`StoreError::NotFound`]
    /// otherwise).
    fn put_key(&self, key: &ApiKeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_key(
        &self,
        tenant_id: &str,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

    /// [`ApiKeyStore::get_key`] and an item of the same tenant, both read consistently in one
    /// request. What is read along is the caller's to withhold until the key has proved valid.
    fn get_key_along(
        &self,
        tenant_id: &str,
        key_id: &str,
        along: &Alongside,
    ) -> impl Future<Output = Result<(Option<ApiKeyRecord>, FoundAlongside), StoreError>> + Send;

    /// Marks the key revoked (the first revocation time is kept); [`StoreError::NotFound`] when
    /// the tenant has no such key.
    fn revoke_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<ApiKeyRecord, StoreError>> + Send;

    /// The tenant's keys in creation order, at most `limit`, after `start`.
    fn list_keys(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<ApiKeyRecord>, StoreError>> + Send;

    fn record_key_use(
        &self,
        tenant_id: &str,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The keys among `key_ids` that exist (in no particular order).
    fn get_keys(
        &self,
        tenant_id: &str,
        key_ids: &[String],
    ) -> impl Future<Output = Result<Vec<ApiKeyRecord>, StoreError>> + Send;

    /// Stores a new sign-in code; the tenant must be active (`NotFound` otherwise).
    fn put_signin_code(&self, code: &crate::signin::SigninCode) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes and returns the code if it is still there, its hash is `code_hash` and it is
    /// valid at `now`, in one conditional delete: of two attempts exactly one gets it. `None`
    /// for a used, expired, wrong or unknown code.
    fn take_signin_code(
        &self,
        tenant_id: &str,
        code_id: &str,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<crate::signin::SigninCode>, StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Contacts

/// Identity a webhook gives for a customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerIdentity {
    /// E.164.
    pub phone: Option<String>,
    pub user_id: Option<String>,
}

/// One of a customer's identities, as stored on the contact.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityKey {
    /// E.164.
    Phone(String),
    UserId(String),
}

impl CustomerIdentity {
    /// The customer's identities in the order they are matched: phone first, then user id.
    pub fn keys(&self) -> impl Iterator<Item = IdentityKey> + '_ {
        let phone = self.phone.clone().map(IdentityKey::Phone);
        let user_id = self.user_id.clone().map(IdentityKey::UserId);
        phone.into_iter().chain(user_id)
    }

    /// The identity a new contact for this customer is matched by from then on.
    pub fn primary_key(&self) -> Option<IdentityKey> {
        self.keys().next()
    }
}

/// How a contact listing is narrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactFilter {
    All,
    /// Name search key prefix (see [`crate::contact::name_search_key`]).
    NamePrefix(String),
    /// Phone digits prefix.
    PhonePrefix(String),
    /// Contacts with a tag, optionally also matching a name or phone prefix.
    Tag {
        tag: String,
        name_prefix: Option<String>,
        phone_prefix: Option<String>,
    },
}

/// A contact edit to store: the contact as read, as it should become, and identity moves.
#[derive(Debug, Clone)]
pub struct ContactUpdate<'a> {
    pub before: &'a Contact,
    pub after: &'a Contact,
    pub phone_change: Option<&'a IdentityChange>,
    pub user_id_change: Option<&'a IdentityChange>,
}

pub trait ContactStore: Send + Sync {
    /// Creates a contact with its identity records and tag entries in one transaction;
    /// `Conflict` when the phone or user id belongs to another contact of the tenant.
    fn create_contact(&self, contact: &Contact) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The contact, read consistently.
    fn get_contact(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<Option<Contact>, StoreError>> + Send;

    /// Contacts by id, read consistently, in no particular order; missing ones (erased) are
    /// absent. DynamoDB answers it with one `BatchGetItem` per 100.
    fn get_contacts(
        &self,
        tenant_id: &str,
        contact_ids: &[String],
    ) -> impl Future<Output = Result<Vec<Contact>, StoreError>> + Send {
        async move {
            let mut out = Vec::new();
            for id in contact_ids {
                out.extend(self.get_contact(tenant_id, id).await?);
            }
            Ok(out)
        }
    }

    /// The summaries (name, phone, tags) of up to 100 contacts, in no particular order;
    /// missing ones (erased) are absent. DynamoDB answers it with one `BatchGetItem`.
    fn contact_summaries(
        &self,
        tenant_id: &str,
        contact_ids: &[String],
    ) -> impl Future<Output = Result<Vec<crate::contact::ContactSummary>, StoreError>> + Send {
        async move {
            let mut out = Vec::new();
            for id in contact_ids {
                if let Some(c) = self.get_contact(tenant_id, id).await? {
                    out.push(crate::contact::ContactSummary::from(&c));
                }
            }
            Ok(out)
        }
    }

    /// The contact holding the phone (first) or the user id, and which of the two matched.
    fn match_contact(
        &self,
        tenant_id: &str,
        identity: &CustomerIdentity,
    ) -> impl Future<Output = Result<Option<(String, IdentityKey)>, StoreError>> + Send;

    /// Replaces the contact if it is still at `before.version` (`VersionMismatch` otherwise),
    /// moving identity records and tag entries with it.
    fn update_contact(&self, update: &ContactUpdate<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores the consent statement and its history entry together (version-checked).
    fn record_consent(
        &self,
        before: &Contact,
        after: &Contact,
        change: &ConsentChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a restriction change and its history entry together (version-checked).
    fn record_restriction(
        &self,
        before: &Contact,
        after: &Contact,
        change: &RestrictionChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every consent change of the contact, oldest first.
    fn consent_history(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<Vec<ConsentChange>, StoreError>> + Send;

    /// Every restriction change of the contact, oldest first.
    fn restriction_history(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<Vec<RestrictionChange>, StoreError>> + Send;

    fn list_contacts(
        &self,
        tenant_id: &str,
        filter: &ContactFilter,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<Contact>, StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Reading messages and recording their media.
pub trait MessageStore: Send + Sync {
    /// The message, read consistently.
    fn get_message(
        &self,
        tenant_id: &str,
        message_id: &str,
    ) -> impl Future<Output = Result<Option<MessageRecord>, StoreError>> + Send;

    /// Messages by id, read consistently, in no particular order; missing ones are absent.
    /// DynamoDB answers it with one `BatchGetItem` per 100.
    fn get_messages(
        &self,
        tenant_id: &str,
        message_ids: &[String],
    ) -> impl Future<Output = Result<Vec<MessageRecord>, StoreError>> + Send {
        async move {
            let mut out = Vec::new();
            for id in message_ids {
                out.extend(self.get_message(tenant_id, id).await?);
            }
            Ok(out)
        }
    }

    /// Messages of one contact, newest first.
    fn contact_messages(
        &self,
        tenant_id: &str,
        contact_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<MessageRecord>, StoreError>> + Send;

    /// Messages of one contact on one of the tenant's numbers (a conversation's timeline),
    /// newest first; `with_unnumbered` includes messages stored before messages named their
    /// number.
    fn number_messages(
        &self,
        tenant_id: &str,
        contact_id: &str,
        phone_number_id: &str,
        with_unnumbered: bool,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<MessageRecord>, StoreError>> + Send;

    /// Sets the media state unless the media is already available or expired (a late retry
    /// never downgrades it, nor revives what retention removed); `NotFound` when the message
    /// is gone.
    fn update_media(
        &self,
        tenant_id: &str,
        message_id: &str,
        media: &MediaRef,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An inbound message and the contact changes it implies, written together.
#[derive(Debug, Clone)]
pub struct InboundWrite {
    pub message: MessageRecord,
    /// The identity by which the message was matched to `message.contact_id`: the contact is
    /// updated only while it still holds it, so a stale (cached or raced) match never attaches
    /// a message to a contact that no longer owns the sender's number or user id.
    pub matched_by: Option<IdentityKey>,
    /// WhatsApp profile name from `contacts[].profile.name`.
    pub profile_name: Option<String>,
    /// Consent change from a STOP/START keyword.
    pub consent: Option<ConsentChange>,
    /// The sender has no contact yet: this one (holding the sender's identity, its id in
    /// `message.contact_id`) is created by the message's own write, identity records claimed.
    /// A message that is refused (a redelivery, an erased wamid) thus creates nothing, and an
    /// identity another first contact claimed meanwhile fails the whole write (`Conflict`).
    pub new_contact: Option<Contact>,
}

impl InboundWrite {
    /// The contact to create as this message leaves it: the window opened at the message's
    /// time, its number, the profile name and a keyword's consent (`None` for a known contact).
    pub fn created_contact(&self) -> Option<Contact> {
        let m = &self.message;
        let mut contact = self.new_contact.clone()?;
        contact.last_inbound_at = Some(m.timestamp);
        contact.last_number = m.phone_number_id.clone();
        contact.updated_at = m.created_at;
        if let Some(name) = &self.profile_name {
            contact.profile_name = Some(name.clone());
        }
        if let Some(change) = &self.consent {
            contact.consent = crate::contact::Consent {
                marketing: change.marketing,
                updated_at: Some(change.at),
                source: Some(change.source.clone()),
            };
        }
        Some(contact)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum InboundOutcome {
    Stored,
    /// The same wamid was stored before; the stored message is returned.
    Duplicate(Box<MessageRecord>),
    /// The wamid belongs to an erased message (a late redelivery): nothing was stored.
    Erased,
}

/// A delivery status from Meta for one of our outbound messages.
#[derive(Debug, Clone)]
pub struct StatusWrite {
    pub wamid: String,
    pub status: MessageStatus,
    pub at: DateTime<Utc>,
    pub error: Option<MessageError>,
    pub pricing: Option<Value>,
    pub conversation: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    /// The message moved to the new status.
    Applied,
    /// Recorded in the message's status history, but the message is already further along.
    HistoryOnly,
    /// Seen before.
    Duplicate,
    /// A `failed` for a message already delivered or read: contradicts what the handset
    /// reported, so it changes nothing (the caller keeps it as an event).
    LateFailure,
    /// No outbound message has this wamid (yet): parked for the sender to apply.
    Parked,
    /// The wamid belongs to an erased message: dropped.
    Erased,
}

/// What Meta tells us: inbound messages, delivery statuses and other account events. Every
/// write is conditional so a redelivered webhook changes nothing.
pub trait InboundStore: Send + Sync {
    /// Stores the message (once per message id) and updates the contact (`last_inbound_at`
    /// only forward, profile name, keyword consent with its history entry); `NotFound` when
    /// the contact no longer exists or no longer holds `matched_by` (erased or moved meanwhile).
    /// A message older than the contact's last inbound one is stored without moving the
    /// contact's clock or consent. With `new_contact` the contact is created in the same
    /// write (`Conflict` when its identity was claimed meanwhile; nothing is written then, nor
    /// for a duplicate or erased message).
    fn record_inbound(&self, write: &InboundWrite) -> impl Future<Output = Result<InboundOutcome, StoreError>> + Send;

    /// Moves an outbound message forward by the status ladder (`MessageStatus::rank`), once
    /// per status; parks the status when no message has the wamid yet.
    fn apply_status(
        &self,
        tenant_id: &str,
        write: &StatusWrite,
    ) -> impl Future<Output = Result<StatusOutcome, StoreError>> + Send;

    /// Reconciles a send whose outcome the sender never learned: a status webhook for a wamid we
    /// do not know names, in `biz_opaque_callback_data`, our message `message_id`. When that is
    /// an outbound message of the tenant without a wamid that Meta has not answered for yet
    /// (`queued` under a lease, or `unknown`), the wamid is stored on it with its pointer, so the
    /// status (and every later one) applies; `false` otherwise.
    fn adopt_wamid(
        &self,
        tenant_id: &str,
        message_id: &str,
        wamid: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A status just parked whose `biz_opaque_callback_data` names a message that no longer
    /// exists (erased while Meta had it, before the sender stored the wamid): the wamid is
    /// tombstoned and the parked status deleted, so nothing of the erased message stays and
    /// later statuses are dropped (`true`). `false` while the message exists (its sender has yet
    /// to record the wamid: the parked status waits for it).
    fn drop_orphan_status(
        &self,
        tenant_id: &str,
        message_id: &str,
        write: &StatusWrite,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Keeps a non-message webhook change (account, quality, template updates); idempotent
    /// on its content.
    fn record_event(
        &self,
        tenant_id: &str,
        field: &str,
        value: &Value,
        received_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether `wamid` belongs to a message erased within Meta's redelivery window (its
    /// tombstone exists). Read only where a miss would create something: a first contact, a
    /// parked status.
    fn wamid_erased(&self, tenant_id: &str, wamid: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The first response to a request made with an `Idempotency-Key`, replayed for repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub tenant_id: String,
    /// SHA-256 of the client's key (the key itself is not stored).
    pub key_hash: String,
    /// SHA-256 of the request body: the same key with another body is refused.
    pub request_hash: String,
    pub status_code: u16,
    pub response: Value,
    pub message_id: String,
    pub contact_id: String,
    pub created_at: DateTime<Utc>,
    /// Unix seconds (TTL); kept at least 24 h.
    pub expires_at: i64,
}

/// How long idempotency records are kept.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 48;

#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    Created,
    /// The idempotency key was used before: the earlier record.
    Replay(Box<IdempotencyRecord>),
}

/// Messages we send: creation with idempotency keys, the sender's claim, Meta's acceptance
/// (the wamid) and failures.
pub trait OutboundStore: Send + Sync {
    /// Stores a new message; `Conflict` when the id exists.
    fn create_message(&self, message: &MessageRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a new message together with its idempotency record and the audit entry of its
    /// creation (one transaction: no message without its entry, no entry of a replay), a
    /// `queued` one also in its recipient's queue (`NotFound` when the contact is gone); when
    /// the key was used before (and its record has not expired), nothing is written and the
    /// earlier record is returned.
    fn create_message_once(
        &self,
        message: &MessageRecord,
        idempotency: Option<&IdempotencyRecord>,
        audit: Option<&AuditEntry>,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    /// The unexpired record of an idempotency key (by its hash).
    fn idempotency_lookup(
        &self,
        tenant_id: &str,
        key_hash: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Takes the sender's lease on a `queued` message that no sender holds. A lease is given back
    /// ([`OutboundStore::release_claim`]) whenever its holder did not call Meta; one that simply
    /// expired was held by a sender that died or lost track mid-send ([`Claim::Abandoned`]).
    fn claim_for_send(
        &self,
        tenant_id: &str,
        message_id: &str,
        now: DateTime<Utc>,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// The tenant's queued messages accepted before `accepted_before` that no sender has
    /// claimed since `untouched_since`: their job is lost (an enqueue that failed after the API
    /// stored them, a record dead-lettered). Oldest first.
    fn stale_queued(
        &self,
        tenant_id: &str,
        accepted_before: DateTime<Utc>,
        untouched_since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Ends a `queued` message still under the lease `lease_until_ms` as `unknown` (Meta may have
    /// it: a send without an answer, or an abandoned lease) with `error`; `false` when the
    /// message moved on or another lease replaced it.
    fn mark_unknown(
        &self,
        tenant_id: &str,
        message_id: &str,
        lease_until_ms: i64,
        error: &MessageError,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease back so a later delivery of the job can send.
    fn release_claim(&self, tenant_id: &str, message_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records that Meta accepted the message under `wamid`: the wamid pointer (with its
    /// reference in the contact's partition, for erasure), status `sent` through the monotonic
    /// rule, and any statuses that arrived before the pointer existed.
    fn mark_sent(
        &self,
        tenant_id: &str,
        message_id: &str,
        contact_id: &str,
        wamid: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends a message `failed` or `rejected` with its error, unless it already reached a
    /// terminal state.
    fn finish_unsent(
        &self,
        tenant_id: &str,
        message_id: &str,
        status: MessageStatus,
        error: &MessageError,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What taking the send lease found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The lease is ours, until `now + lease_ms`.
    Claimed(Box<MessageRecord>),
    /// Another sender holds the message until then (epoch ms).
    Held { until_ms: i64 },
    /// A lease expired without being given back: its holder may have sent the message. It is
    /// not sent again (see [`OutboundStore::mark_unknown`]).
    Abandoned {
        message: Box<MessageRecord>,
        lease_until_ms: i64,
    },
    /// Not queued any more (sent, failed, unknown, erased): nothing to do.
    Finished,
}

/// A contact as the sender reads it: the contact and its recipient queue (the ids of its
/// queued outbound messages, which leave in id order: see [`crate::sending::first_in_line`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    pub contact: Contact,
    pub queue: Vec<String>,
}

/// Meta's throughput limits, shared by every sender: the per-number send schedule and the
/// per-recipient pair rate.
pub trait SendPacingStore: Send + Sync {
    /// Books `count` consecutive send slots on the phone number's schedule (see
    /// [`crate::sending::book_slots`]): a grant of slots due from now on, or when to ask again
    /// if the schedule is booked beyond its horizon.
    fn take_send_slots(
        &self,
        tenant_id: &str,
        phone_number_id: &str,
        now_us: i64,
        count: u32,
        schedule: SendSchedule,
    ) -> impl Future<Output = Result<SlotDecision, StoreError>> + Send;

    /// The contact with its recipient queue, read consistently.
    fn recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<Option<Recipient>, StoreError>> + Send;

    /// Claims the recipient for sending `message_id` if nothing was sent to them in the last
    /// `interval_ms` (Meta's pair rate), taking the message out of the recipient's queue;
    /// `false` when too soon (or the contact is gone). The caller checked the queue's order.
    fn claim_recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
        message_id: &str,
        now: DateTime<Utc>,
        interval_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Puts a claimed message back at its place in the recipient's queue (its send did not
    /// happen and will be retried: nothing newer may overtake it meanwhile). A gone contact is
    /// fine.
    fn return_to_recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
        message_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes a message that will not be sent out of its recipient's queue (it failed, was
    /// rejected, is unknown, or no longer exists). A gone contact is fine.
    fn leave_recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
        message_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Users

/// The tenant's users and the keys they own.
pub trait UserStore: Send + Sync {
    /// Stores a new user with its email's uniqueness record; `Conflict` when another user of
    /// the tenant has the email, `NotFound` when the tenant is not active.
    fn create_user(&self, user: &User) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The user, read consistently.
    fn get_user(&self, tenant_id: &str, user_id: &str)
    -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// The tenant's users in creation order.
    fn list_users(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<User>, StoreError>> + Send;

    /// Replaces the user if it is still as read (`VersionMismatch` otherwise), moving its
    /// email record, and rewrites every key of the user in the same transaction: their role
    /// follows the user's, and a disabled user's keys are revoked at once. `Conflict` when the
    /// new email belongs to another user.
    fn update_user(&self, before: &User, after: &User) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a new key of `user` (as read: `VersionMismatch` if it changed since, e.g. was
    /// disabled) and lists it on the user, in one transaction that also deletes the user's
    /// keys in `dropped` (expired sessions) and takes them off the list.
    fn add_user_key(
        &self,
        user: &User,
        key: &ApiKeyRecord,
        dropped: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Conversations

/// A conversation in an inbox page, with its contact (absent if erased meanwhile).
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEntry {
    /// The conversation as a row shows it: only `reader`'s read mark, no report bookkeeping.
    pub conversation: Conversation,
    pub contact: Option<ContactSummary>,
}

/// One inbox listing: filters, who looks, and when.
#[derive(Debug, Clone)]
pub struct InboxQuery {
    pub filter: InboxFilter,
    pub visibility: Visibility,
    /// Whose unread counts the rows carry (a user id, or a key id for keys without a user).
    pub reader: String,
    pub now: DateTime<Utc>,
}

/// How an assignment went.
#[derive(Debug, Clone, PartialEq)]
pub enum AssignOutcome {
    Assigned(Box<Conversation>),
    /// Someone changed the assignee first: what it is now.
    Lost {
        current: Option<String>,
    },
    /// The assignee is not an active user of the tenant.
    UnknownAssignee,
}

/// The inbox: conversations, their assignment, status, read marks and notes.
pub trait ConversationStore: Send + Sync {
    /// The conversation, read consistently.
    fn get_conversation(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> impl Future<Output = Result<Option<Conversation>, StoreError>> + Send;

    /// One page of the inbox: one `Query` (sorted by activity or by wait, filtered), then one
    /// consistent `BatchGetItem` of the page's contacts (their name, phone, tags).
    fn inbox(
        &self,
        tenant_id: &str,
        query: &InboxQuery,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<InboxEntry>, StoreError>> + Send;

    /// Sets the assignee if it is still `expected` (conditional write; the race's loser gets
    /// `Lost`); a user assignee must be an active user of the tenant. `NotFound` without the
    /// conversation.
    fn assign(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        assignee: Option<&str>,
        expected: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<AssignOutcome, StoreError>> + Send;

    /// Applies a checked status change; with `only_from`, only while the conversation is in that
    /// status and unchanged since `only_from`'s time (the sweep's wake-ups and auto-resolves
    /// never overwrite a newer change): `Ok(None)` then. `NotFound` without the conversation.
    fn set_status(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        change: &StatusChange,
        only_from: Option<(ConversationStatus, DateTime<Utc>)>,
    ) -> impl Future<Output = Result<Option<Conversation>, StoreError>> + Send;

    /// The ids of the tenant's snoozed conversations whose snooze ran out by `now` (the sparse
    /// snooze index, oldest first); the sweep wakes each with [`Self::set_status`].
    fn due_snoozes(
        &self,
        tenant_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Moves `reader`'s read mark forward to `up_to` (checked against the conversation's
    /// `last_seq` by the caller; sequence numbers only grow); the conversation after.
    fn mark_read(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        reader: &str,
        up_to: u64,
    ) -> impl Future<Output = Result<Conversation, StoreError>> + Send;

    /// Stores a note on an existing conversation (`NotFound` otherwise).
    fn add_note(&self, note: &Note) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A conversation's notes, newest first.
    fn notes(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<Note>, StoreError>> + Send;

    /// Every conversation and note of a contact (export).
    fn contact_conversations(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<(Vec<Conversation>, Vec<Note>), StoreError>> + Send;

    /// Copies the contact's card (`contact::ContactCard`) onto every conversation of the contact
    /// that carries an older copy or none (the events function, after a new conversation or a
    /// change of the contact the API did not copy itself); how many it wrote.
    fn refresh_contact_cards(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// One page of the tenant's conversations whose last activity is in `[since, before)`
    /// (from the first when `since` is `None`), oldest first (retention, auto-resolve).
    fn idle_conversations(
        &self,
        tenant_id: &str,
        since: Option<DateTime<Utc>>,
        before: DateTime<Utc>,
        next: Option<String>,
        limit: i32,
    ) -> impl Future<Output = Result<WalkPage<Conversation>, StoreError>> + Send;

    /// Deletes a conversation with its notes if it has not moved since it was read; how many
    /// items went.
    fn delete_conversation(&self, conversation: &Conversation) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Audit

/// The audit log: one partition per tenant, newest first.
pub trait AuditStore: Send + Sync {
    fn record_audit(&self, entry: &AuditEntry) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn list_audit(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<AuditEntry>, StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Templates

/// A tenant's template settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateSettings {
    /// The last step of the language fallback (Meta's code, e.g. `en_US`).
    #[serde(default)]
    pub default_language: Option<String>,
}

/// The answer to a claim on the hourly template-creation allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreationClaim {
    Granted,
    /// The allowance is used up; the oldest creation of the hour leaves it after this long.
    Exhausted {
        retry_after_secs: u64,
    },
}

/// The template registry: one entry per template and language.
pub trait TemplateStore: Send + Sync {
    /// Every language of template `name`, by language, in one request (the send path's only
    /// registry read).
    fn template_languages(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> impl Future<Output = Result<Vec<TemplateRecord>, StoreError>> + Send;

    /// Every entry whose name starts with `name_prefix` (all for `""`), by name then language.
    fn list_templates(
        &self,
        tenant_id: &str,
        name_prefix: &str,
    ) -> impl Future<Output = Result<Vec<TemplateRecord>, StoreError>> + Send;

    /// Applies a template webhook change in one conditional update, creating the entry when
    /// the registry has not seen the template. A status change older than the one applied
    /// (Meta's `entry.time`, `event_time` in epoch seconds) changes nothing: `None`.
    fn apply_template_change(
        &self,
        tenant_id: &str,
        change: &TemplateChange,
        event_time: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<TemplateRecord>, StoreError>> + Send;

    /// Stores entries read from Meta's list, except those a webhook (or a create) changed after
    /// `started` (when the listing began): they are newer than the list. Returns how many it
    /// wrote.
    fn put_synced_templates(
        &self,
        records: &[TemplateRecord],
        started: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Stores one entry as it is (a template just created at Meta).
    fn put_template(&self, record: &TemplateRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes entries by (name, language); with `unchanged_since`, only those not changed
    /// after it. Returns how many it deleted.
    fn delete_templates(
        &self,
        tenant_id: &str,
        keys: &[(String, String)],
        unchanged_since: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Takes one of the tenant's `per_hour` template creations of the last hour (a sliding
    /// window, kept in one item updated under a version condition).
    fn claim_template_creation(
        &self,
        tenant_id: &str,
        now: DateTime<Utc>,
        per_hour: u32,
    ) -> impl Future<Output = Result<CreationClaim, StoreError>> + Send;

    fn template_settings(&self, tenant_id: &str) -> impl Future<Output = Result<TemplateSettings, StoreError>> + Send;

    fn put_template_settings(
        &self,
        tenant_id: &str,
        settings: &TemplateSettings,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Broadcasts

/// The portfolio's use of its messaging limit (unique users per hour), version-checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagingUsage {
    /// Stored as a map with string keys (DynamoDB map keys are strings).
    #[serde(with = "crate::broadcast::pacing::usage_hours_as_strings")]
    pub hours: crate::broadcast::pacing::UsageHours,
    /// 0 before the first write.
    pub version: u64,
}

/// A recipient replaced by a page commit, if its stored status is still `expected`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientChange {
    pub expected: crate::broadcast::RecipientStatus,
    pub recipient: crate::broadcast::BroadcastRecipient,
}

/// What committing a page did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageCommit {
    Committed,
    /// Nothing was written: these new recipients (indices into `created`) already exist.
    Existing(Vec<usize>),
}

/// Campaigns: the broadcast items, their recipients, and the tenant's broadcast settings and
/// messaging-limit usage. Every engine write is a page commit: the broadcast (version-checked),
/// up to [`MAX_PAGE_RECIPIENTS`] recipients and the usage item in one transaction, so a crash
/// or a concurrent run never leaves counters and recipients apart.
pub trait BroadcastStore: Send + Sync {
    fn create_broadcast(
        &self,
        broadcast: &crate::broadcast::Broadcast,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_broadcast(
        &self,
        tenant_id: &str,
        broadcast_id: &str,
    ) -> impl Future<Output = Result<Option<crate::broadcast::Broadcast>, StoreError>> + Send;

    /// Newest first.
    fn list_broadcasts(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<crate::broadcast::Broadcast>, StoreError>> + Send;

    /// Stores `broadcast` if the stored one is at `broadcast.version - 1` (`VersionMismatch`
    /// otherwise).
    fn save_broadcast(
        &self,
        broadcast: &crate::broadcast::Broadcast,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of engine work in one transaction: the broadcast as [`Self::save_broadcast`],
    /// `created` recipients if new, `changed` recipients if still at their expected status,
    /// and the usage item if given (at `usage.version - 1`). `VersionMismatch` when the
    /// broadcast, the usage or a changed recipient moved on.
    fn commit_page(
        &self,
        broadcast: &crate::broadcast::Broadcast,
        created: &[crate::broadcast::BroadcastRecipient],
        changed: &[RecipientChange],
        usage: Option<&MessagingUsage>,
    ) -> impl Future<Output = Result<PageCommit, StoreError>> + Send;

    /// A broadcast's recipients in contact id order, optionally of one status.
    fn broadcast_recipients(
        &self,
        tenant_id: &str,
        broadcast_id: &str,
        status: Option<crate::broadcast::RecipientStatus>,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<crate::broadcast::BroadcastRecipient>, StoreError>> + Send;

    fn broadcast_settings(
        &self,
        tenant_id: &str,
    ) -> impl Future<Output = Result<crate::broadcast::pacing::BroadcastSettings, StoreError>> + Send;

    fn put_broadcast_settings(
        &self,
        tenant_id: &str,
        settings: &crate::broadcast::pacing::BroadcastSettings,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Sets only the messaging limit (Meta's `business_capability_update`).
    fn set_messaging_limit(
        &self,
        tenant_id: &str,
        limit: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn messaging_usage(&self, tenant_id: &str) -> impl Future<Output = Result<MessagingUsage, StoreError>> + Send;

    /// Stores a number's quality unless a later change is stored (`false`: stale, kept).
    fn put_number_quality(
        &self,
        tenant_id: &str,
        quality: &crate::broadcast::NumberQuality,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The tenant's numbers' qualities as last stated by Meta.
    fn number_qualities(
        &self,
        tenant_id: &str,
    ) -> impl Future<Output = Result<Vec<crate::broadcast::NumberQuality>, StoreError>> + Send;

    /// Erasure: removes the contact from every broadcast's recipients (counters keep their
    /// numbers); returns how many recipient items went.
    fn erase_recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Retention and offboarding: deletes finished broadcasts (and their recipients) that
    /// finished before `before`; returns how many broadcasts went.
    fn delete_broadcasts_before(
        &self,
        tenant_id: &str,
        before: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Most recipients one page commit writes (DynamoDB transactions hold 100 items: the
/// broadcast and the usage item take two).
pub const MAX_PAGE_RECIPIENTS: usize = 98;

// ---------------------------------------------------------------------------------------------
// Privacy

/// A lease on a job record: who holds it and until when (epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub until_ms: i64,
}

impl Lease {
    pub fn new(until: DateTime<Utc>) -> Self {
        Lease {
            token: crate::ids::new_id(),
            until_ms: until.timestamp_millis(),
        }
    }
}

/// How starting an erasure went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErasureStart {
    /// The contact is gone (profile and the identity records that were its own) and the
    /// erasure record exists.
    Started { identities: u64 },
    /// The profile changed or vanished since it was read: read it again.
    ContactChanged,
    /// An erasure of this contact already exists.
    AlreadyErased,
}

/// Which messages a cascade walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageScope<'a> {
    /// One contact's messages.
    Contact(&'a str),
    /// Every message of the tenant created before the instant (all when `None`).
    Tenant { before: Option<DateTime<Utc>> },
    /// Messages of the tenant whose media object is stored, created before the instant.
    StoredMedia { before: DateTime<Utc> },
}

/// A message as a cascade sees it: what its deletion takes along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub message_id: String,
    pub contact_id: String,
    /// The wamid of an outbound message (its pointer partition goes with it).
    pub outbound_wamid: Option<String>,
    /// The message's wamid, either direction (an erasure tombstones it).
    pub wamid: Option<String>,
    /// The key of its stored media object.
    pub media_key: Option<String>,
}

/// One page of a walk; `next` is opaque and continues it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkPage<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// What deleting a page of messages removed from the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessagesDeleted {
    pub messages: u64,
    pub pointers: u64,
    pub statuses: u64,
    pub other_items: u64,
}

/// Records of a tenant that offboarding deletes wholesale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRecords<'a> {
    Audit,
    RawEvents,
    /// The event log (its events and their id records), the webhook endpoints with their
    /// secrets, and their delivery logs.
    EventStream,
    /// The send schedule of one of its phone numbers.
    SendSchedule(&'a str),
    /// Tombstones of erased wamids.
    Tombstones,
    /// Keys, secret and settings: everything under the tenant but the tenant record.
    TenantPartition,
    /// The template registry.
    Templates,
    /// Broadcasts and their recipients.
    Broadcasts,
    /// The tenant record itself (deleted last; counted as one item, so name it only when
    /// the tenant exists).
    Tenant,
}

/// Privacy rights and retention: settings, export and erasure records, and the cascades that
/// erasure, retention and offboarding are made of. `handled` sets let a caller walk many pages
/// without visiting a shared item (a wamid partition) twice.
pub trait PrivacyStore: Send + Sync {
    /// The tenant's own retention settings (`None`: it uses the platform defaults).
    fn retention_settings(
        &self,
        tenant_id: &str,
    ) -> impl Future<Output = Result<Option<RetentionSettings>, StoreError>> + Send;

    fn put_retention_settings(
        &self,
        tenant_id: &str,
        settings: &RetentionSettings,
        actor: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a new export record and its reference in the contact's partition, if the
    /// contact exists (`NotFound` otherwise).
    fn create_export(&self, record: &ExportRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_export(
        &self,
        tenant_id: &str,
        export_id: &str,
    ) -> impl Future<Output = Result<Option<ExportRecord>, StoreError>> + Send;

    /// Records how building a pending export ended (`ready` or `failed`); `NotFound` when the
    /// record is gone (erased meanwhile) or no longer pending.
    fn finish_export(&self, record: &ExportRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every export record of a tenant (expired ones included), oldest first.
    fn tenant_exports(&self, tenant_id: &str) -> impl Future<Output = Result<Vec<ExportRecord>, StoreError>> + Send;

    /// Deletes export records with their references; returns how many records.
    fn delete_exports(
        &self,
        tenant_id: &str,
        exports: &[ExportRecord],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// One contact's messages in full, oldest first (the export document).
    fn export_messages(
        &self,
        tenant_id: &str,
        contact_id: &str,
        next: Option<String>,
        limit: i32,
    ) -> impl Future<Output = Result<WalkPage<MessageRecord>, StoreError>> + Send;

    /// Makes the contact disappear at once, in one transaction: its profile (if still at the
    /// version read), its phone and user-id records (if still its own), and the erasure record
    /// created under `lease`. A webhook that arrives next creates a fresh contact.
    fn start_erasure(
        &self,
        contact: &Contact,
        record: &ErasureRecord,
        lease: &Lease,
    ) -> impl Future<Output = Result<ErasureStart, StoreError>> + Send;

    fn get_erasure(
        &self,
        tenant_id: &str,
        erasure_id: &str,
    ) -> impl Future<Output = Result<Option<ErasureRecord>, StoreError>> + Send;

    /// Takes the lease of an unfinished erasure whose lease has lapsed; `None` when it is
    /// finished, gone, or held by someone else.
    fn claim_erasure(
        &self,
        tenant_id: &str,
        erasure_id: &str,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<ErasureRecord>, StoreError>> + Send;

    /// Saves an erasure's progress (or its completion) while holding `held`, which it keeps
    /// (`Some`) or gives up (`None`); `VersionMismatch` when the lease was lost.
    fn save_erasure(
        &self,
        record: &ErasureRecord,
        held: &Lease,
        keep: Option<&Lease>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every erasure record of a tenant.
    fn tenant_erasures(&self, tenant_id: &str) -> impl Future<Output = Result<Vec<ErasureRecord>, StoreError>> + Send;

    /// Deletes erasure records; returns how many.
    fn delete_erasures(
        &self,
        tenant_id: &str,
        erasure_ids: &[String],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// One page of the messages in `scope`, as cascades see them.
    fn message_refs(
        &self,
        tenant_id: &str,
        scope: MessageScope<'_>,
        next: Option<String>,
        limit: i32,
    ) -> impl Future<Output = Result<WalkPage<MessageRef>, StoreError>> + Send;

    /// Deletes messages with the wamid partitions of outbound ones (those not in `handled`),
    /// and with `with_references` their reference items in the contacts' partitions
    /// (retention, where the contact stays). Media objects are the caller's.
    fn delete_messages(
        &self,
        tenant_id: &str,
        messages: &[MessageRef],
        with_references: bool,
        handled: &mut HashSet<String>,
    ) -> impl Future<Output = Result<MessagesDeleted, StoreError>> + Send;

    /// Records tombstones of erased messages' wamids (idempotent), so Meta's redeliveries of
    /// them are refused ([`InboundStore::wamid_erased`]) until the tombstones expire.
    fn put_tombstones(
        &self,
        tenant_id: &str,
        wamids: &[String],
        erased_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes one page of a contact's partition (profile, tags, history, references and what
    /// they point at); `None` when the partition was empty. With `with_identities`, a profile
    /// found there takes its phone and user-id records with it (offboarding).
    fn delete_contact_items(
        &self,
        tenant_id: &str,
        contact_id: &str,
        with_identities: bool,
        handled: &mut HashSet<String>,
    ) -> impl Future<Output = Result<Option<ErasureCounts>, StoreError>> + Send;

    /// Marks a message's media as removed by retention: no object, no link, out of the media
    /// walk. A message deleted meanwhile is fine.
    fn expire_media(&self, tenant_id: &str, message_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes one page of audit entries created before `before`; returns how many and where
    /// the walk continues.
    fn delete_audit_before(
        &self,
        tenant_id: &str,
        before: DateTime<Utc>,
        next: Option<String>,
        limit: i32,
    ) -> impl Future<Output = Result<(u64, Option<String>), StoreError>> + Send;

    /// Every tenant's id.
    fn tenant_ids(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// One page of a tenant's contact ids.
    fn contact_ids(
        &self,
        tenant_id: &str,
        next: Option<String>,
        limit: i32,
    ) -> impl Future<Output = Result<WalkPage<String>, StoreError>> + Send;

    /// Deletes a tenant's records of one kind; returns how many items.
    fn delete_tenant_records(
        &self,
        tenant_id: &str,
        records: TenantRecords<'_>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Event stream and tenant webhooks

/// The tenant's event log: positions strictly increasing in recording order, each event once.
pub trait EventStore: Send + Sync {
    /// Records `drafts` (all of one tenant, in order) after the tenant's last event, each under
    /// the next position, atomically with its id record: a draft whose id is already recorded
    /// (a redelivered stream record) keeps its first position. Returns every draft's event
    /// (new or recorded before) by position, so a retried batch fans out again.
    /// Positions are taken in a transaction with the log's head, so a reader never sees
    /// position `n + 1` before `n`. The report facts of the drafts recorded now (not of those
    /// recorded before) are added to the tenant's counters in the same transaction, folded into
    /// one update per counter item: each fact is counted exactly once.
    fn record_events(
        &self,
        tenant_id: &str,
        drafts: &[EventDraft],
        expires_at: DateTime<Utc>,
        counting: &Counting,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// Up to `limit` events after position `after`, oldest first; expired ones are skipped.
    fn events_after(
        &self,
        tenant_id: &str,
        after: u64,
        limit: i32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// The event at a position.
    fn event_at(&self, tenant_id: &str, seq: u64) -> impl Future<Output = Result<Option<Event>, StoreError>> + Send;

    /// An event's position, by its id.
    fn event_seq(
        &self,
        tenant_id: &str,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// The last position given (0 before the first event).
    fn event_head(&self, tenant_id: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// How a delivery attempt leaves its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointOutcome {
    /// A success: the endpoint is no longer failing.
    Succeeded,
    /// A failure at this time: failing since then unless it already was.
    Failed(DateTime<Utc>),
    /// Disabled by the platform for this reason (`gone`, `failing`), if still enabled.
    Disable(String),
}

/// Webhook endpoints, their secrets and their delivery log.
pub trait WebhookStore: Send + Sync {
    /// Stores a new endpoint with its (sealed) secret; [`StoreError::Conflict`] when the tenant
    /// has [`crate::events::endpoint::MAX_ENDPOINTS_PER_TENANT`] already.
    fn create_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
        secret: &Secret,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_endpoint(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> impl Future<Output = Result<Option<WebhookEndpoint>, StoreError>> + Send;

    /// The tenant's endpoints (at most [`crate::events::endpoint::MAX_ENDPOINTS_PER_TENANT`]).
    fn endpoints_of(&self, tenant_id: &str) -> impl Future<Output = Result<Vec<WebhookEndpoint>, StoreError>> + Send;

    /// Replaces the endpoint's settings if its `version` is still `endpoint.version - 1`
    /// ([`StoreError::VersionMismatch`] otherwise, `NotFound` without it).
    fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the endpoint; `false` when there was none.
    fn delete_endpoint(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The endpoint's signing secrets (read only by code that signs deliveries).
    fn endpoint_secrets(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> impl Future<Output = Result<Option<EndpointSecrets>, StoreError>> + Send;

    /// Makes `secret` current and keeps the old one until `previous_until`; `NotFound`
    /// without the endpoint.
    fn rotate_secret(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        secret: &Secret,
        previous_until: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Applies a delivery's outcome to the endpoint's failure state (conditional: a success
    /// clears `failing_since`, a failure sets it only when unset, a disable applies only to an
    /// enabled endpoint). Missing endpoints are ignored.
    fn endpoint_outcome(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        outcome: &EndpointOutcome,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records one delivery attempt (kept [`crate::events::endpoint::DELIVERY_LOG_DAYS`]).
    fn record_delivery(&self, attempt: &DeliveryAttempt) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The endpoint's delivery attempts, newest first.
    fn list_deliveries(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<DeliveryAttempt>, StoreError>> + Send;
}

/// The tenant's report counters (written only by [`EventStore::record_events`], with the events
/// they count).
pub trait ReportStore: Send + Sync {
    /// The counter items of one granularity whose buckets lie in `first..=last` (bucket strings
    /// as [`crate::reports::counters::bucket`] makes them), every number; expired ones skipped.
    fn counter_rows(
        &self,
        tenant_id: &str,
        granularity: Granularity,
        first: &str,
        last: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<CounterRow>, StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Automations

/// What the evaluation of one inbound message reads, in one request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AutomationContext {
    pub contact: Option<Contact>,
    pub conversation: Option<Conversation>,
    pub state: crate::automation::ContactState,
    /// The tenant's firings on the day asked for.
    pub fired_today: u64,
}

/// What recording a firing amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiringWrite {
    /// Recorded now: its actions are to be taken.
    Recorded,
    /// Recorded before (a redelivered stream record): its actions are to be completed, each
    /// idempotently.
    Duplicate,
    /// The tenant's daily cap was reached by concurrent firings.
    CapReached,
    /// A concurrent message already made the contact's welcome.
    AlreadyWelcomed,
    /// The contact is gone.
    ContactErased,
}

/// The tenant's automation rules, settings, per-contact state and firing log.
pub trait AutomationStore: Send + Sync {
    /// Stores a new rule; `Conflict` beyond [`crate::automation::MAX_RULES_PER_TENANT`].
    fn create_rule(&self, rule: &crate::automation::Rule) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_rule(
        &self,
        tenant_id: &str,
        rule_id: &str,
    ) -> impl Future<Output = Result<Option<crate::automation::Rule>, StoreError>> + Send;

    /// Every rule of the tenant (one query; at most a hundred small items).
    fn rules_of(
        &self,
        tenant_id: &str,
    ) -> impl Future<Output = Result<Vec<crate::automation::Rule>, StoreError>> + Send;

    /// Replaces a rule if it still has `version - 1` (`VersionMismatch` if not, `NotFound`
    /// when gone).
    fn update_rule(&self, rule: &crate::automation::Rule) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the rule existed.
    fn delete_rule(&self, tenant_id: &str, rule_id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn automation_settings(
        &self,
        tenant_id: &str,
    ) -> impl Future<Output = Result<crate::automation::AutomationSettings, StoreError>> + Send;

    fn put_automation_settings(
        &self,
        tenant_id: &str,
        settings: &crate::automation::AutomationSettings,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The contact, its conversation on `phone_number_id`, its automation state and the
    /// tenant's firings of `day` (`YYYY-MM-DD`, UTC): one consistent `BatchGetItem`.
    fn automation_context(
        &self,
        tenant_id: &str,
        contact_id: &str,
        phone_number_id: &str,
        day: &str,
    ) -> impl Future<Output = Result<AutomationContext, StoreError>> + Send;

    /// Records a firing in one transaction: the firing (once per message and rule), the
    /// contact's state (the rule's last firing; the welcome, once; our reply's time) while the
    /// contact exists, and the tenant's day counter below `daily_cap`.
    fn record_firing(
        &self,
        firing: &crate::automation::Firing,
        welcome: bool,
        daily_cap: u64,
    ) -> impl Future<Output = Result<FiringWrite, StoreError>> + Send;

    /// Records a suppression (once per message and rule); whether it is new.
    fn record_suppression(
        &self,
        firing: &crate::automation::Firing,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every tenant's enabled no-reply rules (one query of a sparse index: tenants without one
    /// are not read at all).
    fn no_reply_rules(&self) -> impl Future<Output = Result<Vec<crate::automation::Rule>, StoreError>> + Send;

    /// The tenant's conversations whose customer has waited (`waiting_since`) since `up_to` or
    /// longer: the waiting index, oldest first.
    fn waiting_since_up_to(
        &self,
        tenant_id: &str,
        up_to: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<Vec<crate::conversation::Conversation>, StoreError>> + Send;

    /// Notes in the contact's state that the no-reply firing of `rule_id` for the waiting
    /// period `period_id` completed its actions (later sweeps pass the period over).
    fn mark_no_reply_done(
        &self,
        tenant_id: &str,
        contact_id: &str,
        rule_id: &str,
        period_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The next position of a round-robin rule (0, 1, 2, …).
    fn next_round_robin(&self, tenant_id: &str, rule_id: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// One rule's firings and suppressions, newest first.
    fn rule_firings(
        &self,
        tenant_id: &str,
        rule_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<crate::automation::Firing>, StoreError>> + Send;

    /// A conversation's firings and suppressions, newest message first.
    fn conversation_firings(
        &self,
        tenant_id: &str,
        contact_id: &str,
        conversation_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<crate::automation::Firing>, StoreError>> + Send;
}
