//! [`MemStore`]: every storage port over one in-memory "table".
//!
//! Contract: the same observable behaviour as [`crate::store::DynamoStore`] for everything a
//! handler can see through the ports — idempotent inbound records per message id, the status
//! ladder (`StatusChange` in `store/inbound.rs`), parked statuses applied by `mark_sent`,
//! contact uniqueness of phone and user id (`Conflict`), version checks (`VersionMismatch`),
//! the matched-identity condition of `record_inbound` (`NotFound`), send leases, send
//! schedules, pair-rate claims, idempotency records, audit, tenants, keys and routes. Each
//! operation runs atomically under one lock, as each DynamoDB request (or transaction) does.
//! What only DynamoDB can show (expression syntax, index projections, transaction limits) is
//! left to the e2e tests against moto.
//!
//! Clones share one state. An optional latency per DynamoDB request the real store would make
//! stands in for a database round trip (the bench); [`MemStore::fail_next`] makes the next call
//! of an operation fail, and [`MemStore::calls`] counts calls, so tests can drive and observe
//! error paths and caches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::audit::AuditEntry;
use crate::contact::{Consent, ConsentChange, Contact, RestrictionChange, name_search_key, phone_search_key};
use crate::cursor::Position;
use crate::message::{Direction, MediaRef, MediaStatus, MessageError, MessageRecord, MessageStatus};
use crate::privacy::{ErasureRecord, ExportRecord, RetentionSettings};
use crate::secret::Secret;
use crate::sending::{SendSchedule, SlotDecision, book_slots};
use crate::store::keys::{
    audit_pk, consent_history_sk, contact_pk, export_pk, idempotency_pk, reference_sk, restriction_history_sk, wamid_pk,
};
use crate::store::{
    Alongside, ApiKeyStore, AuditStore, Claim, ContactFilter, ContactStore, ContactUpdate, CreateOutcome,
    CustomerIdentity, FoundAlongside, IdempotencyRecord, IdentityKey, InboundOutcome, InboundStore, InboundWrite,
    Lease, MessageStore, OutboundStore, Page, Recipient, SendPacingStore, StatusOutcome, StatusWrite, StoreError,
    TenantStore,
};
use crate::tenant::{ApiKeyRecord, PhoneNumber, Tenant, TenantStatus};

/// One operation of a storage port (for [`MemStore::fail_next`] and [`MemStore::calls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    // TenantStore
    CreateTenant,
    GetTenant,
    TenantForPhoneNumber,
    TenantForWaba,
    GraphToken,
    SetTokenInvalid,
    SetInboxSettings,
    SetReportSettings,
    Numbers,
    AddNumber,
    RemoveNumber,
    ReplaceGraphToken,
    DisableTenant,
    DeleteRoutes,
    // ApiKeyStore
    PutKey,
    GetKey,
    GetKeyAlong,
    RevokeKey,
    ListKeys,
    RecordKeyUse,
    GetKeys,
    PutSigninCode,
    TakeSigninCode,
    // ContactStore
    CreateContact,
    GetContact,
    GetContacts,
    MatchContact,
    UpdateContact,
    RecordConsent,
    RecordRestriction,
    ConsentHistory,
    RestrictionHistory,
    ListContacts,
    // MessageStore
    GetMessage,
    GetMessages,
    ContactMessages,
    UpdateMedia,
    // InboundStore
    RecordInbound,
    ApplyStatus,
    AdoptWamid,
    RecordEvent,
    WamidErased,
    // OutboundStore
    CreateMessage,
    CreateMessageOnce,
    IdempotencyLookup,
    ClaimForSend,
    StaleQueued,
    MarkUnknown,
    ReleaseClaim,
    MarkSent,
    FinishUnsent,
    // SendPacingStore
    TakeSendSlots,
    Recipient,
    ClaimRecipient,
    RecipientQueue,
    // UserStore
    CreateUser,
    GetUser,
    ListUsers,
    UpdateUser,
    AddUserKey,
    // ConversationStore
    GetConversation,
    Inbox,
    Assign,
    SetConversationStatus,
    DueSnoozes,
    MarkRead,
    AddNote,
    Notes,
    ContactConversations,
    RefreshContactCards,
    IdleConversations,
    DeleteConversation,
    // AuditStore
    RecordAudit,
    ListAudit,
    // PrivacyStore
    RetentionSettings,
    PutRetentionSettings,
    CreateExport,
    GetExport,
    FinishExport,
    TenantExports,
    DeleteExports,
    ExportMessages,
    StartErasure,
    GetErasure,
    ClaimErasure,
    SaveErasure,
    TenantErasures,
    DeleteErasures,
    MessageRefs,
    DeleteMessages,
    PutTombstones,
    DeleteContactItems,
    ExpireMedia,
    DeleteAuditBefore,
    TenantIds,
    ContactIds,
    DeleteTenantRecords,
    // EventStore
    RecordEvents,
    // ReportStore
    CounterRows,
    EventsAfter,
    EventAt,
    EventSeq,
    EventHead,
    // WebhookStore
    CreateEndpoint,
    GetEndpoint,
    EndpointsOf,
    UpdateEndpoint,
    DeleteEndpoint,
    EndpointSecrets,
    RotateSecret,
    EndpointOutcome,
    RecordDelivery,
    ListDeliveries,
    // TemplateStore
    TemplateLanguages,
    ListTemplates,
    ApplyTemplateChange,
    PutSyncedTemplates,
    PutTemplate,
    DeleteTemplates,
    ClaimTemplateCreation,
    TemplateSettings,
    PutTemplateSettings,
    // BroadcastStore
    CreateBroadcast,
    GetBroadcast,
    ListBroadcasts,
    SaveBroadcast,
    CommitPage,
    BroadcastRecipients,
    BroadcastSettings,
    PutBroadcastSettings,
    MessagingUsage,
    EraseRecipient,
    DeleteBroadcasts,
    // AutomationStore
    AutomationRules,
    AutomationRuleWrite,
    AutomationSettings,
    AutomationContext,
    RecordFiring,
    RecordSuppression,
    NextRoundRobin,
    AutomationFirings,
    NoReplyRules,
    WaitingConversations,
    MarkNoReplyDone,
}

/// A non-message webhook change kept by `record_event`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub field: String,
    pub value: Value,
    pub received_at: DateTime<Utc>,
}

type Key = (String, String);

fn key(a: &str, b: &str) -> Key {
    (a.to_owned(), b.to_owned())
}

/// A contact's profile item. The pacing clocks are attributes of the item outside [`Contact`]:
/// like DynamoDB's whole-item `Put` of a version-checked update, replacing the profile drops
/// them.
struct ContactRow {
    contact: Contact,
    last_inbound_ms: Option<i64>,
    last_outbound_ms: Option<i64>,
    /// Ids of its queued outbound messages (the recipient queue; `queued_ids` in the table).
    queued: BTreeSet<String>,
}

struct MessageRow {
    record: MessageRecord,
    lease_until_ms: Option<i64>,
    /// When a sender last claimed it (the send sweeper leaves it alone meanwhile).
    touched_ms: Option<i64>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, Tenant>,
    tokens: HashMap<String, Secret>,
    phone_routes: HashMap<String, String>,
    waba_routes: HashMap<String, String>,
    /// (tenant, key id), in key id (creation) order.
    keys: BTreeMap<Key, ApiKeyRecord>,
    /// (tenant, code id).
    signin_codes: HashMap<Key, crate::signin::SigninCode>,
    contacts: HashMap<Key, ContactRow>,
    /// (tenant, identity) → contact id.
    identities: HashMap<(String, IdentityKey), String>,
    /// (tenant, contact) → history entries by sort key (time, then id).
    consent_history: HashMap<Key, BTreeMap<String, ConsentChange>>,
    restriction_history: HashMap<Key, BTreeMap<String, RestrictionChange>>,
    /// (tenant, message id), in id (time) order.
    messages: BTreeMap<Key, MessageRow>,
    /// (tenant, wamid) → message id.
    wamids: HashMap<Key, String>,
    /// (tenant, wamid) → statuses that arrived before the wamid was known, by status name.
    parked: HashMap<Key, BTreeMap<String, StatusWrite>>,
    /// (tenant, wamid) of erased messages (their tombstones; they never expire here).
    tombstones: HashSet<Key>,
    /// (tenant, content digest) → event.
    events: BTreeMap<Key, RecordedEvent>,
    /// (tenant, key hash) → record.
    idempotency: HashMap<Key, IdempotencyRecord>,
    /// (tenant, phone number id) → next free send slot (µs).
    schedules: HashMap<Key, i64>,
    /// (tenant, entry id), in id (time) order.
    audit: BTreeMap<Key, AuditEntry>,
    /// tenant → when it was first disabled.
    disabled_at: HashMap<String, DateTime<Utc>>,
    /// (tenant, contact) → its tag entries (items of its partition: they outlive the profile
    /// until erasure reaches them, as in the table).
    tags: HashMap<Key, BTreeSet<String>>,
    /// (tenant, contact) → its reference items by sort key (`reference_sk` of what they point
    /// at), as erasure finds them in the contact's partition.
    refs: HashMap<Key, BTreeMap<String, Referenced>>,
    /// tenant → its own retention settings.
    settings: HashMap<String, RetentionSettings>,
    /// (tenant, export id), in id (creation) order.
    exports: BTreeMap<Key, ExportRecord>,
    /// (tenant, erasure id) → the record and the lease it is held under.
    erasures: BTreeMap<Key, ErasureRow>,
    /// The event logs and webhook endpoints.
    webhooks: events::WebhookState,
    /// (tenant, conversation id).
    conversations: BTreeMap<Key, crate::conversation::Conversation>,
    /// (tenant, note id), in id (time) order.
    notes: BTreeMap<Key, crate::conversation::Note>,
    /// (tenant, user id), in id (creation) order.
    users: BTreeMap<Key, crate::user::User>,
    /// (tenant, phone number id): numbers beyond the tenant's first.
    numbers: BTreeMap<Key, PhoneNumber>,
    /// The template registry and its side items (`templates.rs`).
    templates: templates::TemplateState,
    /// Broadcasts, their recipients, settings and usage (`broadcasts.rs`).
    broadcasts: broadcasts::BroadcastState,
    /// Automation rules, contact state and firings (`automations.rs`).
    automations: automations::AutomationState,
    /// Writes per partition key (table or index), when counted ([`MemStore::count_writes`]).
    writes: Option<HashMap<String, u64>>,
}

/// Counts a write to partition key `pk` (an item's, or an index entry's), when counting.
fn note_write(s: &mut State, pk: String) {
    if let Some(writes) = s.writes.as_mut() {
        *writes.entry(pk).or_default() += 1;
    }
}

/// Counts a write of a message item: its own partition and every index entry it changes
/// (`crate::store::message_index_writes`).
fn note_message_write(s: &mut State, before: Option<&MessageRecord>, after: &MessageRecord, other_changed: bool) {
    if s.writes.is_none() {
        return;
    }
    note_write(s, crate::store::keys::message_pk(&after.tenant_id, &after.message_id));
    for pk in crate::store::message_index_writes(before, Some(after), other_changed) {
        note_write(s, pk);
    }
}

/// What a reference item in a contact's partition points at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Referenced {
    /// A wamid partition (pointer and parked statuses).
    Wamid(String),
    /// An idempotency record, by key hash.
    Idempotency(String),
    /// An export record, by id.
    Export(String),
}

struct ErasureRow {
    record: ErasureRecord,
    lease: Option<Lease>,
}

/// Adds the reference item (`reference` in `store/outbound.rs`: an unconditional put).
fn add_reference(s: &mut State, tenant_id: &str, contact_id: &str, referenced: Referenced) {
    let pk = match &referenced {
        Referenced::Wamid(w) => wamid_pk(tenant_id, w),
        Referenced::Idempotency(h) => idempotency_pk(tenant_id, h),
        Referenced::Export(e) => export_pk(tenant_id, e),
    };
    s.refs
        .entry(key(tenant_id, contact_id))
        .or_default()
        .insert(reference_sk(&pk), referenced);
}

#[derive(Default)]
struct Hooks {
    faults: HashMap<Op, VecDeque<StoreError>>,
    calls: HashMap<Op, usize>,
    /// The DynamoDB requests the calls stand for (what `enter` is told).
    requests: u64,
}

/// Cheap to clone: clones share one state.
#[derive(Clone, Default)]
pub struct MemStore {
    latency: Duration,
    state: Arc<Mutex<State>>,
    hooks: Arc<Mutex<Hooks>>,
}

fn conflict_identity() -> StoreError {
    StoreError::Conflict("a contact with this phone or user_id already exists".into())
}

/// Whether a status write passes the condition `StatusChange` puts on the DynamoDB update:
/// not seen before, and moving the message by the one status ladder ([`MessageStatus::moves`]).
fn status_advances(record: &MessageRecord, write: &StatusWrite) -> bool {
    !record.status_at.contains_key(write.status.as_str()) && write.status.moves(record.status)
}

/// Listing order of a page and where it resumes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Ascending,
    Descending,
}

const AFTER: &str = "after";

/// One page of `sorted` (already in listing order, keyed by sort key) after `start`; the next
/// position is absent exactly when nothing follows, as `trim_page` guarantees.
fn page_of<T>(sorted: Vec<(String, T)>, order: Order, limit: i32, start: Option<Position>) -> Page<T> {
    let after = start.and_then(|p| p.get(AFTER).cloned());
    let limit = limit.max(1) as usize;
    let mut rest: Vec<(String, T)> = sorted
        .into_iter()
        .filter(|(k, _)| match (&after, order) {
            (None, _) => true,
            (Some(a), Order::Ascending) => k > a,
            (Some(a), Order::Descending) => k < a,
        })
        .collect();
    let next = (rest.len() > limit).then(|| {
        rest.truncate(limit);
        Position::from([(AFTER.to_owned(), rest[limit - 1].0.clone())])
    });
    Page {
        items: rest.into_iter().map(|(_, v)| v).collect(),
        next,
    }
}

impl MemStore {
    pub fn new() -> Self {
        MemStore::default()
    }

    /// Waits `latency` for every DynamoDB request the real store would make.
    pub fn with_latency(latency: Duration) -> Self {
        MemStore {
            latency,
            ..MemStore::default()
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("memstore state")
    }

    /// Makes the next call of `op` fail with `error` (queued: call again for later calls).
    pub fn fail_next(&self, op: Op, error: StoreError) {
        let mut hooks = self.hooks.lock().expect("memstore hooks");
        hooks.faults.entry(op).or_default().push_back(error);
    }

    /// Makes the next call of `op` fail as an unreachable database would.
    pub fn fail_next_backend(&self, op: Op) {
        self.fail_next(op, StoreError::Backend("injected fault".into()));
    }

    /// How many times `op` was called (failed calls included).
    /// From now on, counts the writes each partition key (table or index) receives as the
    /// DynamoDB store would make them, for the operations on a campaign's path: broadcast
    /// saves and page commits, message creation, the sender's claims, send slots, `sent` and
    /// releases, statuses, audit entries. A conditional write refused counts too (DynamoDB
    /// charges it to the partition). See [`MemStore::writes_per_key`].
    pub fn count_writes(&self) {
        self.state().writes = Some(HashMap::new());
    }

    /// The writes counted per partition key since [`MemStore::count_writes`].
    pub fn writes_per_key(&self) -> HashMap<String, u64> {
        self.state().writes.clone().unwrap_or_default()
    }

    /// A handle on the same data with calls, requests and faults of its own: one component's
    /// requests counted apart from another's over one store (the campaign bench's engine,
    /// senders and webhook).
    pub fn counted_apart(&self) -> MemStore {
        MemStore {
            latency: self.latency,
            state: self.state.clone(),
            hooks: Arc::default(),
        }
    }

    /// The DynamoDB requests this handle's calls stand for so far.
    pub fn requests(&self) -> u64 {
        self.hooks.lock().expect("memstore hooks").requests
    }

    pub fn calls(&self, op: Op) -> usize {
        self.hooks
            .lock()
            .expect("memstore hooks")
            .calls
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// Counts the call, waits the latency of `requests` round trips, and fails if told to.
    async fn enter(&self, op: Op, requests: u32) -> Result<(), StoreError> {
        let fault = {
            let mut hooks = self.hooks.lock().expect("memstore hooks");
            *hooks.calls.entry(op).or_default() += 1;
            hooks.requests += u64::from(requests);
            hooks.faults.get_mut(&op).and_then(VecDeque::pop_front)
        };
        self.round_trips(requests).await;
        fault.map_or(Ok(()), Err)
    }

    async fn round_trips(&self, requests: u32) {
        if !self.latency.is_zero() && requests > 0 {
            tokio::time::sleep(self.latency * requests).await;
        }
    }

    // --- Seeding and inspection (test set-up and assertions; no hooks, no latency) ---

    /// Stores a tenant with its token and its phone-number and WABA routes.
    pub fn add_tenant(&self, tenant: Tenant, token: Secret) {
        let mut s = self.state();
        let id = tenant.tenant_id.clone();
        s.phone_routes.insert(tenant.phone_number_id.clone(), id.clone());
        s.waba_routes.insert(tenant.waba_id.clone(), id.clone());
        s.tokens.insert(id.clone(), token);
        s.tenants.insert(id, tenant);
    }

    /// Deletes the tenant's Graph token item (a tenant half-offboarded, or never given one).
    pub fn remove_graph_token(&self, tenant_id: &str) {
        self.state().tokens.remove(tenant_id);
    }

    /// Stores a contact with its identities; panics when its phone or user id is taken (a
    /// broken test set-up, not a case under test).
    pub fn add_contact(&self, contact: Contact) {
        insert_contact(&mut self.state(), &contact).expect("seeded contact is unique");
    }

    /// Stores a message as the API does (a queued one also in its recipient's queue).
    pub fn add_message(&self, message: MessageRecord) {
        let mut s = self.state();
        if message.status == MessageStatus::Queued
            && let Some(row) = s.contacts.get_mut(&key(&message.tenant_id, &message.contact_id))
        {
            row.queued.insert(message.message_id.clone());
        }
        s.messages.insert(
            key(&message.tenant_id, &message.message_id),
            MessageRow {
                record: message,
                lease_until_ms: None,
                touched_ms: None,
            },
        );
    }

    /// Removes a contact and everything of it, as a finished erasure leaves the table (with
    /// its messages' wamids tombstoned).
    pub fn erase_contact(&self, tenant_id: &str, contact_id: &str) {
        let mut s = self.state();
        let ck = key(tenant_id, contact_id);
        s.contacts.remove(&ck);
        s.identities.retain(|(t, _), c| !(t == tenant_id && c == contact_id));
        s.consent_history.remove(&ck);
        s.restriction_history.remove(&ck);
        s.tags.remove(&ck);
        s.refs.remove(&ck);
        s.automations.erase_contact(tenant_id, contact_id);
        let erased: Vec<Key> = s
            .messages
            .iter()
            .filter(|((t, _), row)| t == tenant_id && row.record.contact_id == contact_id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &erased {
            // A finished erasure leaves its messages' wamids tombstoned.
            if let Some(wamid) = s.messages.remove(k).and_then(|row| row.record.wamid) {
                s.tombstones.insert(key(tenant_id, &wamid));
            }
        }
        let wamids: Vec<Key> = s
            .wamids
            .iter()
            .filter(|((t, _), m)| t == tenant_id && erased.contains(&key(tenant_id, m)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &wamids {
            s.wamids.remove(k);
            s.parked.remove(k);
        }
        s.exports
            .retain(|(t, _), e| !(t == tenant_id && e.contact_id == contact_id));
        s.idempotency
            .retain(|(t, _), r| !(t == tenant_id && r.contact_id == contact_id));
    }

    /// Everything of a contact still in the table, named by kind (empty after its erasure):
    /// profile, identity records it holds, tag entries, history entries, references, messages,
    /// idempotency records and export records.
    pub fn contact_leftovers(&self, tenant_id: &str, contact_id: &str) -> Vec<String> {
        let s = self.state();
        let ck = key(tenant_id, contact_id);
        let mut out = Vec::new();
        if s.contacts.contains_key(&ck) {
            out.push("profile".to_owned());
        }
        for ((t, id), c) in &s.identities {
            if t == tenant_id && c == contact_id {
                out.push(format!("identity {id:?}"));
            }
        }
        for tag in s.tags.get(&ck).into_iter().flatten() {
            out.push(format!("tag {tag}"));
        }
        for sk in s.consent_history.get(&ck).into_iter().flat_map(BTreeMap::keys) {
            out.push(format!("history {sk}"));
        }
        for sk in s.restriction_history.get(&ck).into_iter().flat_map(BTreeMap::keys) {
            out.push(format!("history {sk}"));
        }
        for sk in s.refs.get(&ck).into_iter().flat_map(BTreeMap::keys) {
            out.push(format!("reference {sk}"));
        }
        for ((t, id), row) in &s.messages {
            if t == tenant_id && row.record.contact_id == contact_id {
                out.push(format!("message {id}"));
            }
        }
        let (conversations, notes) = inbox::contact_conversation_keys(&s, tenant_id, contact_id);
        out.extend(conversations.iter().map(|(_, id)| format!("conversation {id}")));
        out.extend(notes.iter().map(|(_, id)| format!("note {id}")));
        for ((t, hash), r) in &s.idempotency {
            if t == tenant_id && r.contact_id == contact_id {
                out.push(format!("idempotency {hash}"));
            }
        }
        for ((t, id), e) in &s.exports {
            if t == tenant_id && e.contact_id == contact_id {
                out.push(format!("export {id}"));
            }
        }
        out
    }

    /// Whether anything is left of a wamid's partition: (its pointer, its parked statuses).
    pub fn wamid_partition(&self, tenant_id: &str, wamid: &str) -> (bool, usize) {
        let s = self.state();
        let k = key(tenant_id, wamid);
        (s.wamids.contains_key(&k), s.parked.get(&k).map_or(0, BTreeMap::len))
    }

    /// The lease an erasure is held under, if any.
    pub fn erasure_lease(&self, tenant_id: &str, erasure_id: &str) -> Option<Lease> {
        self.state()
            .erasures
            .get(&key(tenant_id, erasure_id))
            .and_then(|r| r.lease.clone())
    }

    pub fn tenant(&self, tenant_id: &str) -> Option<Tenant> {
        self.state().tenants.get(tenant_id).cloned()
    }

    pub fn contact(&self, tenant_id: &str, contact_id: &str) -> Option<Contact> {
        self.state()
            .contacts
            .get(&key(tenant_id, contact_id))
            .map(|r| r.contact.clone())
    }

    /// The tenant's contacts, in id (creation) order.
    pub fn contacts(&self, tenant_id: &str) -> Vec<Contact> {
        let s = self.state();
        let mut out: Vec<Contact> = s
            .contacts
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, r)| r.contact.clone())
            .collect();
        out.sort_by(|a, b| a.contact_id.cmp(&b.contact_id));
        out
    }

    pub fn message(&self, tenant_id: &str, message_id: &str) -> Option<MessageRecord> {
        self.state()
            .messages
            .get(&key(tenant_id, message_id))
            .map(|r| r.record.clone())
    }

    /// The tenant's messages, in id (time) order.
    pub fn messages(&self, tenant_id: &str) -> Vec<MessageRecord> {
        self.state()
            .messages
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, r)| r.record.clone())
            .collect()
    }

    /// When the sender's lease on a message ends (ms since the epoch), if one is held.
    pub fn lease_until_ms(&self, tenant_id: &str, message_id: &str) -> Option<i64> {
        self.state()
            .messages
            .get(&key(tenant_id, message_id))
            .and_then(|r| r.lease_until_ms)
    }

    /// Holds the sender's lease on a message until `until_ms`.
    pub fn set_lease(&self, tenant_id: &str, message_id: &str, until_ms: i64) {
        if let Some(row) = self.state().messages.get_mut(&key(tenant_id, message_id)) {
            row.lease_until_ms = Some(until_ms);
        }
    }

    /// When something was last sent to the contact (the pair-rate clock), ms since the epoch.
    pub fn last_outbound_ms(&self, tenant_id: &str, contact_id: &str) -> Option<i64> {
        self.state()
            .contacts
            .get(&key(tenant_id, contact_id))
            .and_then(|r| r.last_outbound_ms)
    }

    /// Sets the pair-rate clock, as if something was sent to the contact at `at_ms`.
    /// The ids in the contact's recipient queue (its queued outbound messages), oldest first.
    pub fn recipient_queue(&self, tenant_id: &str, contact_id: &str) -> Vec<String> {
        self.state()
            .contacts
            .get(&key(tenant_id, contact_id))
            .map(|r| r.queued.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn set_last_outbound_ms(&self, tenant_id: &str, contact_id: &str, at_ms: i64) {
        if let Some(row) = self.state().contacts.get_mut(&key(tenant_id, contact_id)) {
            row.last_outbound_ms = Some(at_ms);
        }
    }

    /// Messages by status.
    pub fn status_counts(&self) -> HashMap<MessageStatus, usize> {
        let mut out = HashMap::new();
        for row in self.state().messages.values() {
            *out.entry(row.record.status).or_default() += 1;
        }
        out
    }

    pub fn events(&self, tenant_id: &str) -> Vec<RecordedEvent> {
        self.state()
            .events
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The tenant's audit entries, oldest first.
    pub fn audit(&self, tenant_id: &str) -> Vec<AuditEntry> {
        self.state()
            .audit
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The contact's restriction history, oldest first.
    pub fn restrictions(&self, tenant_id: &str, contact_id: &str) -> Vec<RestrictionChange> {
        self.state()
            .restriction_history
            .get(&key(tenant_id, contact_id))
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default()
    }
}

mod automations;
mod broadcasts;
mod events;
mod inbox;
mod privacy;
mod templates;

// --- The conditional writes, each mirroring one DynamoDB request or transaction ---

fn identity_keys(contact: &Contact) -> Vec<IdentityKey> {
    CustomerIdentity {
        phone: contact.phone.clone(),
        user_id: contact.user_id.clone(),
    }
    .keys()
    .collect()
}

/// `insert_contact`'s transaction: a new profile and new identity records.
fn insert_contact(s: &mut State, contact: &Contact) -> Result<(), StoreError> {
    let t = &contact.tenant_id;
    if s.contacts.contains_key(&key(t, &contact.contact_id)) {
        return Err(StoreError::Conflict("contact id already exists".into()));
    }
    let identities = identity_keys(contact);
    if identities
        .iter()
        .any(|id| s.identities.contains_key(&(t.clone(), id.clone())))
    {
        return Err(conflict_identity());
    }
    for id in identities {
        s.identities.insert((t.clone(), id), contact.contact_id.clone());
    }
    if !contact.tags.is_empty() {
        s.tags
            .entry(key(t, &contact.contact_id))
            .or_default()
            .extend(contact.tags.iter().cloned());
    }
    s.contacts.insert(
        key(t, &contact.contact_id),
        ContactRow {
            contact: contact.clone(),
            last_inbound_ms: None,
            last_outbound_ms: None,
            queued: BTreeSet::new(),
        },
    );
    Ok(())
}

/// The version check of every contact edit: the profile exists at `expected`.
fn check_version(s: &State, contact: &Contact, expected: u64) -> Result<(), StoreError> {
    match s.contacts.get(&key(&contact.tenant_id, &contact.contact_id)) {
        Some(row) if row.contact.version == expected => Ok(()),
        _ => Err(StoreError::VersionMismatch),
    }
}

/// The whole-item profile put of a version-checked edit (the pacing clocks go with it).
fn replace_profile(s: &mut State, after: &Contact) {
    s.contacts.insert(
        key(&after.tenant_id, &after.contact_id),
        ContactRow {
            contact: after.clone(),
            last_inbound_ms: None,
            last_outbound_ms: None,
            queued: BTreeSet::new(),
        },
    );
}

/// Whether the contact still holds the identity a message was matched by.
fn holds(contact: &Contact, matched_by: Option<&IdentityKey>) -> bool {
    match matched_by {
        Some(IdentityKey::Phone(p)) => contact.phone.as_ref() == Some(p),
        Some(IdentityKey::UserId(u)) => contact.user_id.as_ref() == Some(u),
        None => true,
    }
}

/// One attempt of `record_inbound`'s transaction; `None` when the contact update's condition
/// failed (contact gone, identity moved, or — `with_time_condition` — a newer message seen).
fn try_record_inbound(
    s: &mut State,
    write: &InboundWrite,
    with_time_condition: bool,
) -> Result<Option<InboundOutcome>, StoreError> {
    let m = &write.message;
    if m.wamid
        .as_ref()
        .is_some_and(|w| s.tombstones.contains(&key(&m.tenant_id, w)))
    {
        return Ok(Some(InboundOutcome::Erased));
    }
    if let Some(existing) = s.messages.get(&key(&m.tenant_id, &m.message_id)) {
        return Ok(Some(InboundOutcome::Duplicate(Box::new(existing.record.clone()))));
    }
    let ts_ms = m.timestamp.timestamp_millis();
    let consent = write.consent.as_ref().filter(|_| with_time_condition);
    if let Some(contact) = write.created_contact() {
        // As the DynamoDB store: created with the message, or not at all.
        insert_contact(s, &contact)?;
        if let Some(row) = s.contacts.get_mut(&key(&m.tenant_id, &m.contact_id)) {
            row.last_inbound_ms = Some(ts_ms);
        }
    } else {
        let Some(row) = s.contacts.get_mut(&key(&m.tenant_id, &m.contact_id)) else {
            return Ok(None);
        };
        let in_order = !with_time_condition || row.last_inbound_ms.is_none_or(|ms| ms <= ts_ms);
        if !in_order || !holds(&row.contact, write.matched_by.as_ref()) {
            return Ok(None);
        }
        let c = &mut row.contact;
        c.updated_at = m.created_at;
        c.version += 1;
        if with_time_condition {
            c.last_inbound_at = Some(m.timestamp);
            row.last_inbound_ms = Some(ts_ms);
            if m.phone_number_id.is_some() {
                c.last_number = m.phone_number_id.clone();
            }
        }
        if let Some(name) = &write.profile_name {
            c.profile_name = Some(name.clone());
        }
        if let Some(change) = consent {
            c.consent = Consent {
                marketing: change.marketing,
                updated_at: Some(change.at),
                source: Some(change.source.clone()),
            };
        }
    }
    if let Some(change) = consent {
        s.consent_history
            .entry(key(&m.tenant_id, &m.contact_id))
            .or_default()
            .insert(
                consent_history_sk(change.at.timestamp_millis(), &m.message_id),
                change.clone(),
            );
    }
    s.messages.insert(
        key(&m.tenant_id, &m.message_id),
        MessageRow {
            record: m.clone(),
            lease_until_ms: None,
            touched_ms: None,
        },
    );
    inbox::touch_conversation(s, m, with_time_condition);
    Ok(Some(InboundOutcome::Stored))
}

/// Sets the fields a status update sets (`StatusChange::of`).
fn set_status(record: &mut MessageRecord, write: &StatusWrite) {
    record.status = write.status;
    record.status_at.insert(write.status.as_str().to_owned(), write.at);
    if let Some(error) = &write.error {
        record.error = Some(error.clone());
    }
    if let Some(pricing) = &write.pricing {
        record.pricing = Some(pricing.clone());
    }
    if let Some(conversation) = &write.conversation {
        record.conversation = Some(conversation.clone());
    }
}

/// `apply_status` against the state: forward, history only, duplicate, late failure or parked.
fn apply_status(s: &mut State, tenant_id: &str, write: &StatusWrite) -> StatusOutcome {
    let Some(message_id) = s.wamids.get(&key(tenant_id, &write.wamid)).cloned() else {
        if s.tombstones.contains(&key(tenant_id, &write.wamid)) {
            return StatusOutcome::Erased;
        }
        let parked = s.parked.entry(key(tenant_id, &write.wamid)).or_default();
        if parked.contains_key(write.status.as_str()) {
            return StatusOutcome::Duplicate;
        }
        parked.insert(write.status.as_str().to_owned(), write.clone());
        return StatusOutcome::Parked;
    };
    let counting = s.writes.is_some();
    let Some(row) = s.messages.get_mut(&key(tenant_id, &message_id)) else {
        // The conditions need the message: a failed `failed` is a late failure, anything else
        // finds its history update refused too.
        return if write.status == MessageStatus::Failed {
            StatusOutcome::LateFailure
        } else {
            StatusOutcome::Duplicate
        };
    };
    // The conditional update is charged to the message's partition, applied or not.
    let before = counting.then(|| row.record.clone());
    let outcome = if status_advances(&row.record, write) {
        set_status(&mut row.record, write);
        StatusOutcome::Applied
    } else if write.status == MessageStatus::Failed {
        StatusOutcome::LateFailure
    } else if row.record.status_at.contains_key(write.status.as_str()) {
        StatusOutcome::Duplicate
    } else {
        row.record.status_at.insert(write.status.as_str().to_owned(), write.at);
        StatusOutcome::HistoryOnly
    };
    if let Some(before) = before {
        let after = row.record.clone();
        note_message_write(s, Some(&before), &after, false);
    }
    outcome
}

fn sort_key_of(contact: &Contact, filter: &ContactFilter) -> Option<(String, Order)> {
    // Search keys only where a filter needs them (a listing computes this for every contact).
    let name = || contact.name.as_deref().map(name_search_key).filter(|k| !k.is_empty());
    let phone = || contact.phone.as_deref().map(phone_search_key);
    let id = &contact.contact_id;
    match filter {
        ContactFilter::All => Some((id.clone(), Order::Descending)),
        ContactFilter::NamePrefix(p) => name()
            .filter(|n| n.starts_with(p.as_str()))
            .map(|n| (format!("{n}#{id}"), Order::Ascending)),
        ContactFilter::PhonePrefix(p) => phone()
            .filter(|d| d.starts_with(p.as_str()))
            .map(|d| (format!("{d}#{id}"), Order::Ascending)),
        ContactFilter::Tag {
            tag,
            name_prefix,
            phone_prefix,
        } => {
            let matches = contact.tags.contains(tag)
                && match (name_prefix, phone_prefix) {
                    (Some(p), _) => name().is_some_and(|n| n.starts_with(p.as_str())),
                    (None, Some(p)) => phone().is_some_and(|d| d.starts_with(p.as_str())),
                    (None, None) => true,
                };
            matches.then(|| (id.clone(), Order::Descending))
        }
    }
}

impl TenantStore for MemStore {
    async fn create_tenant(
        &self,
        tenant: &Tenant,
        graph_token: &Secret,
        first_key: &ApiKeyRecord,
    ) -> Result<(), StoreError> {
        self.enter(Op::CreateTenant, 1).await?;
        let mut s = self.state();
        if s.phone_routes.contains_key(&tenant.phone_number_id) {
            return Err(StoreError::Conflict(format!(
                "phone number id {} is already routed to another tenant",
                tenant.phone_number_id
            )));
        }
        if s.waba_routes.contains_key(&tenant.waba_id) {
            return Err(StoreError::Conflict(format!(
                "WABA id {} belongs to another tenant",
                tenant.waba_id
            )));
        }
        let key_id = key(&first_key.tenant_id, &first_key.key_id);
        if s.tenants.contains_key(&tenant.tenant_id) || s.keys.contains_key(&key_id) {
            return Err(StoreError::Conflict("tenant id already exists".into()));
        }
        s.keys.insert(key_id, first_key.clone());
        drop(s);
        self.add_tenant(tenant.clone(), graph_token.clone());
        Ok(())
    }

    async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>, StoreError> {
        self.enter(Op::GetTenant, 1).await?;
        Ok(self.tenant(tenant_id))
    }

    async fn tenant_for_phone_number(&self, phone_number_id: &str) -> Result<Option<String>, StoreError> {
        self.enter(Op::TenantForPhoneNumber, 1).await?;
        Ok(self.state().phone_routes.get(phone_number_id).cloned())
    }

    async fn tenant_for_waba(&self, waba_id: &str) -> Result<Option<String>, StoreError> {
        self.enter(Op::TenantForWaba, 1).await?;
        Ok(self.state().waba_routes.get(waba_id).cloned())
    }

    async fn graph_token(&self, tenant_id: &str) -> Result<Option<Secret>, StoreError> {
        self.enter(Op::GraphToken, 1).await?;
        Ok(self.state().tokens.get(tenant_id).cloned())
    }

    async fn set_token_invalid(&self, tenant_id: &str, invalid: bool) -> Result<(), StoreError> {
        self.enter(Op::SetTokenInvalid, 1).await?;
        let mut s = self.state();
        let tenant = s.tenants.get_mut(tenant_id).ok_or(StoreError::NotFound)?;
        tenant.token_invalid = invalid;
        Ok(())
    }

    async fn set_inbox_settings(
        &self,
        tenant_id: &str,
        settings: &crate::tenant::InboxSettings,
    ) -> Result<(), StoreError> {
        self.enter(Op::SetInboxSettings, 1).await?;
        let mut s = self.state();
        let tenant = s.tenants.get_mut(tenant_id).ok_or(StoreError::NotFound)?;
        tenant.inbox = *settings;
        Ok(())
    }

    async fn set_report_settings(
        &self,
        tenant_id: &str,
        settings: &crate::tenant::ReportSettings,
    ) -> Result<(), StoreError> {
        self.enter(Op::SetReportSettings, 1).await?;
        let mut s = self.state();
        let tenant = s.tenants.get_mut(tenant_id).ok_or(StoreError::NotFound)?;
        tenant.reports = settings.clone();
        Ok(())
    }

    async fn replace_graph_token(&self, tenant_id: &str, token: &Secret) -> Result<(), StoreError> {
        self.enter(Op::ReplaceGraphToken, 1).await?;
        let mut s = self.state();
        let tenant = s.tenants.get_mut(tenant_id).ok_or(StoreError::NotFound)?;
        tenant.token_invalid = false;
        s.tokens.insert(tenant_id.to_owned(), token.clone());
        Ok(())
    }

    async fn disable_tenant(&self, tenant_id: &str, at: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.enter(Op::DisableTenant, 1).await?;
        let mut s = self.state();
        let Some(tenant) = s.tenants.get_mut(tenant_id) else {
            return Ok(None);
        };
        tenant.status = TenantStatus::Disabled;
        // `disabled_at = if_not_exists(disabled_at, :now)`: the first time is kept.
        Ok(Some(*s.disabled_at.entry(tenant_id.to_owned()).or_insert(at)))
    }

    async fn delete_routes(&self, tenant: &Tenant) -> Result<u64, StoreError> {
        // One conditional delete per route.
        self.enter(Op::DeleteRoutes, 2).await?;
        let mut s = self.state();
        let id = &tenant.tenant_id;
        let mut deleted = 0;
        // Gone already, or routing to someone else now: not this tenant's to delete.
        if s.phone_routes.get(&tenant.phone_number_id) == Some(id) {
            s.phone_routes.remove(&tenant.phone_number_id);
            deleted += 1;
        }
        if s.waba_routes.get(&tenant.waba_id) == Some(id) {
            s.waba_routes.remove(&tenant.waba_id);
            deleted += 1;
        }
        let added: Vec<PhoneNumber> = s
            .numbers
            .iter()
            .filter(|((t, _), _)| t == id)
            .map(|(_, n)| n.clone())
            .collect();
        for n in added {
            if s.phone_routes.get(&n.phone_number_id) == Some(id) {
                s.phone_routes.remove(&n.phone_number_id);
                deleted += 1;
            }
            if s.waba_routes.get(&n.waba_id) == Some(id) {
                s.waba_routes.remove(&n.waba_id);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn numbers(&self, tenant_id: &str) -> Result<Vec<PhoneNumber>, StoreError> {
        self.enter(Op::Numbers, 2).await?;
        let s = self.state();
        let Some(tenant) = s.tenants.get(tenant_id) else {
            return Ok(Vec::new());
        };
        let mut numbers = vec![tenant.primary_number()];
        numbers.extend(
            s.numbers
                .iter()
                .filter(|((t, _), _)| t == tenant_id)
                .map(|(_, n)| n.clone()),
        );
        Ok(numbers)
    }

    async fn add_number(&self, tenant: &Tenant, number: &PhoneNumber) -> Result<(), StoreError> {
        self.enter(Op::AddNumber, 1).await?;
        let mut s = self.state();
        let t = &tenant.tenant_id;
        if s.tenants.get(t).is_none_or(|x| x.status != TenantStatus::Active) {
            return Err(StoreError::NotFound);
        }
        match s.phone_routes.get(&number.phone_number_id) {
            Some(owner) if owner == t => {
                return Err(StoreError::Conflict(format!(
                    "phone number id {} is already one of the tenant's numbers",
                    number.phone_number_id
                )));
            }
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                    "phone number id {} belongs to another tenant",
                    number.phone_number_id
                )));
            }
            None => {}
        }
        if s.waba_routes.get(&number.waba_id).is_some_and(|owner| owner != t) {
            return Err(StoreError::Conflict(format!(
                "WABA id {} belongs to another tenant",
                number.waba_id
            )));
        }
        s.phone_routes.insert(number.phone_number_id.clone(), t.clone());
        s.waba_routes.insert(number.waba_id.clone(), t.clone());
        s.numbers.insert(key(t, &number.phone_number_id), number.clone());
        Ok(())
    }

    async fn remove_number(&self, tenant: &Tenant, phone_number_id: &str) -> Result<(), StoreError> {
        self.enter(Op::RemoveNumber, 1).await?;
        if phone_number_id == tenant.phone_number_id {
            return Err(StoreError::Conflict(
                "the tenant's first number cannot be removed (it is its default sender)".into(),
            ));
        }
        let mut s = self.state();
        let t = &tenant.tenant_id;
        if s.numbers.remove(&key(t, phone_number_id)).is_none() {
            return Err(StoreError::NotFound);
        }
        if s.phone_routes.get(phone_number_id) == Some(t) {
            s.phone_routes.remove(phone_number_id);
        }
        Ok(())
    }
}

impl ApiKeyStore for MemStore {
    async fn put_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.enter(Op::PutKey, 1).await?;
        let mut s = self.state();
        let active = s
            .tenants
            .get(&record.tenant_id)
            .is_some_and(|t| t.status == TenantStatus::Active);
        if !active {
            return Err(StoreError::NotFound);
        }
        let k = key(&record.tenant_id, &record.key_id);
        if s.keys.contains_key(&k) {
            return Err(StoreError::Conflict("key id already exists".into()));
        }
        s.keys.insert(k, record.clone());
        Ok(())
    }

    async fn get_key(&self, tenant_id: &str, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.enter(Op::GetKey, 1).await?;
        Ok(self.state().keys.get(&key(tenant_id, key_id)).cloned())
    }

    async fn get_key_along(
        &self,
        tenant_id: &str,
        key_id: &str,
        along: &Alongside,
    ) -> Result<(Option<ApiKeyRecord>, FoundAlongside), StoreError> {
        // One BatchGetItem of two items.
        self.enter(Op::GetKeyAlong, 1).await?;
        let record = self.state().keys.get(&key(tenant_id, key_id)).cloned();
        let found = match along {
            Alongside::Contact(contact_id) => {
                FoundAlongside::Contact(self.contact(tenant_id, contact_id).map(Box::new))
            }
            Alongside::PhoneOwner(phone) => FoundAlongside::PhoneOwner(
                self.state()
                    .identities
                    .get(&(tenant_id.to_owned(), IdentityKey::Phone(phone.clone())))
                    .cloned(),
            ),
        };
        Ok((record, found))
    }

    async fn revoke_key(&self, tenant_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<ApiKeyRecord, StoreError> {
        self.enter(Op::RevokeKey, 1).await?;
        let mut s = self.state();
        let record = s.keys.get_mut(&key(tenant_id, key_id)).ok_or(StoreError::NotFound)?;
        record.revoked_at.get_or_insert(at);
        Ok(record.clone())
    }

    async fn list_keys(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<ApiKeyRecord>, StoreError> {
        self.enter(Op::ListKeys, 1).await?;
        let sorted = self
            .state()
            .keys
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|((_, k), r)| (k.clone(), r.clone()))
            .collect();
        Ok(page_of(sorted, Order::Ascending, limit, start))
    }

    async fn record_key_use(&self, tenant_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.enter(Op::RecordKeyUse, 1).await?;
        let mut s = self.state();
        let record = s.keys.get_mut(&key(tenant_id, key_id)).ok_or(StoreError::NotFound)?;
        record.last_used_at = Some(at);
        Ok(())
    }

    async fn get_keys(&self, tenant_id: &str, key_ids: &[String]) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.enter(Op::GetKeys, 1).await?;
        let s = self.state();
        Ok(key_ids
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|k| s.keys.get(&key(tenant_id, k)).cloned())
            .collect())
    }

    async fn put_signin_code(&self, code: &crate::signin::SigninCode) -> Result<(), StoreError> {
        self.enter(Op::PutSigninCode, 1).await?;
        let mut s = self.state();
        if !s
            .tenants
            .get(&code.tenant_id)
            .is_some_and(|t| t.status == TenantStatus::Active)
        {
            return Err(StoreError::NotFound);
        }
        s.signin_codes.insert(key(&code.tenant_id, &code.code_id), code.clone());
        Ok(())
    }

    async fn take_signin_code(
        &self,
        tenant_id: &str,
        code_id: &str,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::signin::SigninCode>, StoreError> {
        self.enter(Op::TakeSigninCode, 1).await?;
        let mut s = self.state();
        let k = key(tenant_id, code_id);
        let usable = s
            .signin_codes
            .get(&k)
            .is_some_and(|c| c.code_hash == code_hash && c.is_valid_at(now));
        Ok(if usable { s.signin_codes.remove(&k) } else { None })
    }
}

impl ContactStore for MemStore {
    async fn create_contact(&self, contact: &Contact) -> Result<(), StoreError> {
        self.enter(Op::CreateContact, 1).await?;
        insert_contact(&mut self.state(), contact)
    }

    async fn get_contact(&self, tenant_id: &str, contact_id: &str) -> Result<Option<Contact>, StoreError> {
        self.enter(Op::GetContact, 1).await?;
        Ok(self.contact(tenant_id, contact_id))
    }

    async fn get_contacts(&self, tenant_id: &str, contact_ids: &[String]) -> Result<Vec<Contact>, StoreError> {
        self.enter(Op::GetContacts, contact_ids.len().div_ceil(100) as u32)
            .await?;
        Ok(contact_ids.iter().filter_map(|c| self.contact(tenant_id, c)).collect())
    }

    async fn match_contact(
        &self,
        tenant_id: &str,
        identity: &CustomerIdentity,
    ) -> Result<Option<(String, IdentityKey)>, StoreError> {
        self.enter(Op::MatchContact, 1).await?;
        let s = self.state();
        Ok(identity.keys().find_map(|k| {
            s.identities
                .get(&(tenant_id.to_owned(), k.clone()))
                .map(|id| (id.clone(), k))
        }))
    }

    async fn update_contact(&self, update: &ContactUpdate<'_>) -> Result<(), StoreError> {
        // The transaction, plus the batch delete of removed tags.
        self.enter(Op::UpdateContact, 2).await?;
        let (before, after) = (update.before, update.after);
        let t = &after.tenant_id;
        let mut s = self.state();
        check_version(&s, after, before.version)?;
        let moves = [
            (update.phone_change, IdentityKey::Phone as fn(String) -> IdentityKey),
            (update.user_id_change, IdentityKey::UserId),
        ];
        for (change, identity) in moves.iter().filter_map(|(c, k)| c.map(|c| (c, k))) {
            let released_held = change
                .old
                .as_ref()
                .is_none_or(|old| s.identities.get(&(t.clone(), identity(old.clone()))) == Some(&after.contact_id));
            let new_free = change
                .new
                .as_ref()
                .is_none_or(|new| !s.identities.contains_key(&(t.clone(), identity(new.clone()))));
            if !released_held || !new_free {
                return Err(conflict_identity());
            }
        }
        for (change, identity) in moves.iter().filter_map(|(c, k)| c.map(|c| (c, k))) {
            if let Some(old) = &change.old {
                s.identities.remove(&(t.clone(), identity(old.clone())));
            }
            if let Some(new) = &change.new {
                s.identities
                    .insert((t.clone(), identity(new.clone())), after.contact_id.clone());
            }
        }
        replace_profile(&mut s, after);
        // Tag entries move with the edit: new ones put, removed ones deleted.
        let tags = s.tags.entry(key(t, &after.contact_id)).or_default();
        *tags = after.tags.iter().cloned().collect();
        Ok(())
    }

    async fn record_consent(
        &self,
        before: &Contact,
        after: &Contact,
        change: &ConsentChange,
    ) -> Result<(), StoreError> {
        self.enter(Op::RecordConsent, 1).await?;
        let mut s = self.state();
        check_version(&s, after, before.version)?;
        replace_profile(&mut s, after);
        s.consent_history
            .entry(key(&after.tenant_id, &after.contact_id))
            .or_default()
            .insert(
                consent_history_sk(change.at.timestamp_millis(), &crate::ids::new_id()),
                change.clone(),
            );
        Ok(())
    }

    async fn record_restriction(
        &self,
        before: &Contact,
        after: &Contact,
        change: &RestrictionChange,
    ) -> Result<(), StoreError> {
        self.enter(Op::RecordRestriction, 1).await?;
        let mut s = self.state();
        check_version(&s, after, before.version)?;
        replace_profile(&mut s, after);
        s.restriction_history
            .entry(key(&after.tenant_id, &after.contact_id))
            .or_default()
            .insert(
                restriction_history_sk(change.at.timestamp_millis(), &crate::ids::new_id()),
                change.clone(),
            );
        Ok(())
    }

    async fn consent_history(&self, tenant_id: &str, contact_id: &str) -> Result<Vec<ConsentChange>, StoreError> {
        self.enter(Op::ConsentHistory, 1).await?;
        Ok(self
            .state()
            .consent_history
            .get(&key(tenant_id, contact_id))
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn restriction_history(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> Result<Vec<RestrictionChange>, StoreError> {
        self.enter(Op::RestrictionHistory, 1).await?;
        Ok(self.restrictions(tenant_id, contact_id))
    }

    async fn list_contacts(
        &self,
        tenant_id: &str,
        filter: &ContactFilter,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Contact>, StoreError> {
        // The index query and the batch read of the profiles.
        self.enter(Op::ListContacts, 2).await?;
        let order = match filter {
            ContactFilter::NamePrefix(_) | ContactFilter::PhonePrefix(_) => Order::Ascending,
            ContactFilter::All | ContactFilter::Tag { .. } => Order::Descending,
        };
        // Only what follows the start, and only the page's contacts cloned (a campaign's
        // planning lists every contact of the tenant a page at a time).
        let after = start.as_ref().and_then(|p| p.get(AFTER).cloned());
        let s = self.state();
        let mut keyed: Vec<(String, &Contact)> = s
            .contacts
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .filter_map(|(_, row)| sort_key_of(&row.contact, filter).map(|(k, _)| (k, &row.contact)))
            .filter(|(k, _)| match (&after, order) {
                (None, _) => true,
                (Some(a), Order::Ascending) => k > a,
                (Some(a), Order::Descending) => k < a,
            })
            .collect();
        let in_order = |a: &(String, &Contact), b: &(String, &Contact)| match order {
            Order::Ascending => a.0.cmp(&b.0),
            Order::Descending => b.0.cmp(&a.0),
        };
        let wanted = limit.max(1) as usize + 1;
        if keyed.len() > wanted {
            keyed.select_nth_unstable_by(wanted - 1, in_order);
            keyed.truncate(wanted);
        }
        keyed.sort_by(in_order);
        let sorted = keyed.into_iter().map(|(k, c)| (k, c.clone())).collect();
        Ok(page_of(sorted, order, limit, None))
    }
}

impl InboundStore for MemStore {
    async fn record_inbound(&self, write: &InboundWrite) -> Result<InboundOutcome, StoreError> {
        self.enter(Op::RecordInbound, 1).await?;
        let mut s = self.state();
        if let Some(outcome) = try_record_inbound(&mut s, write, true)? {
            return Ok(outcome);
        }
        // As the DynamoDB store: only a contact that still exists and holds the identity, but
        // has seen a newer message, stores the message (without moving its clock).
        let m = &write.message;
        if !s.contacts.contains_key(&key(&m.tenant_id, &m.contact_id)) {
            return Err(StoreError::NotFound);
        }
        try_record_inbound(&mut s, write, false)?.ok_or(StoreError::NotFound)
    }

    async fn apply_status(&self, tenant_id: &str, write: &StatusWrite) -> Result<StatusOutcome, StoreError> {
        self.enter(Op::ApplyStatus, 2).await?;
        Ok(apply_status(&mut self.state(), tenant_id, write))
    }

    async fn drop_orphan_status(
        &self,
        tenant_id: &str,
        message_id: &str,
        write: &StatusWrite,
    ) -> Result<bool, StoreError> {
        if self.state().messages.contains_key(&key(tenant_id, message_id)) {
            return Ok(false);
        }
        let mut s = self.state();
        let k = key(tenant_id, &write.wamid);
        s.tombstones.insert(k.clone());
        if let Some(parked) = s.parked.get_mut(&k) {
            parked.remove(write.status.as_str());
            if parked.is_empty() {
                s.parked.remove(&k);
            }
        }
        Ok(true)
    }

    async fn adopt_wamid(&self, tenant_id: &str, message_id: &str, wamid: &str) -> Result<bool, StoreError> {
        // The message read and the wamid transaction.
        self.enter(Op::AdoptWamid, 2).await?;
        let mut s = self.state();
        let Some(row) = s.messages.get_mut(&key(tenant_id, message_id)) else {
            return Ok(false);
        };
        let record = &mut row.record;
        if record.direction != Direction::Outbound
            || record.wamid.is_some()
            || !matches!(record.status, MessageStatus::Queued | MessageStatus::Unknown)
        {
            return Ok(false);
        }
        record.wamid = Some(wamid.to_owned());
        let contact_id = record.contact_id.clone();
        s.wamids.insert(key(tenant_id, wamid), message_id.to_owned());
        add_reference(&mut s, tenant_id, &contact_id, Referenced::Wamid(wamid.to_owned()));
        Ok(true)
    }

    async fn record_event(
        &self,
        tenant_id: &str,
        field: &str,
        value: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use sha2::{Digest, Sha256};
        self.enter(Op::RecordEvent, 1).await?;
        let digest = hex::encode(Sha256::digest(format!("{field}\n{value}").as_bytes()));
        self.state()
            .events
            .entry(key(tenant_id, &digest[..32]))
            .or_insert_with(|| RecordedEvent {
                field: field.to_owned(),
                value: value.clone(),
                received_at,
            });
        Ok(())
    }

    async fn wamid_erased(&self, tenant_id: &str, wamid: &str) -> Result<bool, StoreError> {
        self.enter(Op::WamidErased, 1).await?;
        Ok(self.state().tombstones.contains(&key(tenant_id, wamid)))
    }
}

impl MessageStore for MemStore {
    async fn get_message(&self, tenant_id: &str, message_id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.enter(Op::GetMessage, 1).await?;
        Ok(self.message(tenant_id, message_id))
    }

    async fn get_messages(&self, tenant_id: &str, message_ids: &[String]) -> Result<Vec<MessageRecord>, StoreError> {
        self.enter(Op::GetMessages, message_ids.len().div_ceil(100) as u32)
            .await?;
        Ok(message_ids.iter().filter_map(|m| self.message(tenant_id, m)).collect())
    }

    async fn contact_messages(
        &self,
        tenant_id: &str,
        contact_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<MessageRecord>, StoreError> {
        self.enter(Op::ContactMessages, 1).await?;
        let sorted = self
            .state()
            .messages
            .iter()
            .rev()
            .filter(|((t, _), row)| t == tenant_id && row.record.contact_id == contact_id)
            .map(|((_, m), row)| (m.clone(), row.record.clone()))
            .collect();
        Ok(page_of(sorted, Order::Descending, limit, start))
    }

    async fn number_messages(
        &self,
        tenant_id: &str,
        contact_id: &str,
        phone_number_id: &str,
        with_unnumbered: bool,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<MessageRecord>, StoreError> {
        self.enter(Op::ContactMessages, 1).await?;
        let on_number = |m: &MessageRecord| match &m.phone_number_id {
            Some(n) => n == phone_number_id,
            None => with_unnumbered,
        };
        let sorted = self
            .state()
            .messages
            .iter()
            .rev()
            .filter(|((t, _), row)| t == tenant_id && row.record.contact_id == contact_id && on_number(&row.record))
            .map(|((_, m), row)| (m.clone(), row.record.clone()))
            .collect();
        Ok(page_of(sorted, Order::Descending, limit, start))
    }

    async fn update_media(&self, tenant_id: &str, message_id: &str, media: &MediaRef) -> Result<(), StoreError> {
        self.enter(Op::UpdateMedia, 1).await?;
        let mut s = self.state();
        let row = s
            .messages
            .get_mut(&key(tenant_id, message_id))
            .ok_or(StoreError::NotFound)?;
        // Never downgrade stored media, nor revive media that retention removed; a message
        // without media has nothing to update.
        if let Some(current) = &mut row.record.media
            && !matches!(current.status, MediaStatus::Available | MediaStatus::Expired)
        {
            *current = media.clone();
        }
        Ok(())
    }
}

impl OutboundStore for MemStore {
    async fn create_message(&self, message: &MessageRecord) -> Result<(), StoreError> {
        self.enter(Op::CreateMessage, 1).await?;
        let mut s = self.state();
        let k = key(&message.tenant_id, &message.message_id);
        if s.messages.contains_key(&k) {
            return Err(StoreError::Conflict("message id exists".into()));
        }
        if message.status == MessageStatus::Queued
            && let Some(row) = s.contacts.get_mut(&key(&message.tenant_id, &message.contact_id))
        {
            row.queued.insert(message.message_id.clone());
        }
        s.messages.insert(
            k,
            MessageRow {
                record: message.clone(),
                lease_until_ms: None,
                touched_ms: None,
            },
        );
        // The transaction: the message, the contact (its recipient queue, or a check, which
        // DynamoDB charges as a write) and the conversation it moves, if any.
        note_message_write(&mut s, None, message, false);
        note_write(&mut s, contact_pk(&message.tenant_id, &message.contact_id));
        inbox::touch_conversation(&mut s, message, true);
        Ok(())
    }

    async fn create_message_once(
        &self,
        message: &MessageRecord,
        idempotency: Option<&IdempotencyRecord>,
        audit: Option<&AuditEntry>,
    ) -> Result<CreateOutcome, StoreError> {
        self.enter(Op::CreateMessageOnce, 1).await?;
        let now = Utc::now().timestamp();
        let mut s = self.state();
        if let Some(record) = idempotency
            && let Some(existing) = s.idempotency.get(&key(&record.tenant_id, &record.key_hash))
            && existing.expires_at >= now
        {
            return Ok(CreateOutcome::Replay(Box::new(existing.clone())));
        }
        let k = key(&message.tenant_id, &message.message_id);
        if s.messages.contains_key(&k) {
            return Err(StoreError::Conflict("message id exists".into()));
        }
        let contact_gone = !s.contacts.contains_key(&key(&message.tenant_id, &message.contact_id));
        if (message.conversation_number().is_some() || message.status == MessageStatus::Queued) && contact_gone {
            return Err(StoreError::NotFound);
        }
        if message.status == MessageStatus::Queued
            && let Some(row) = s.contacts.get_mut(&key(&message.tenant_id, &message.contact_id))
        {
            row.queued.insert(message.message_id.clone());
        }
        if let Some(record) = idempotency {
            s.idempotency
                .insert(key(&record.tenant_id, &record.key_hash), record.clone());
            add_reference(
                &mut s,
                &record.tenant_id,
                &record.contact_id,
                Referenced::Idempotency(record.key_hash.clone()),
            );
        }
        s.messages.insert(
            k,
            MessageRow {
                record: message.clone(),
                lease_until_ms: None,
                touched_ms: None,
            },
        );
        inbox::touch_conversation(&mut s, message, true);
        if let Some(entry) = audit {
            s.audit.insert(key(&entry.tenant_id, &entry.id), entry.clone());
            note_write(&mut s, audit_pk(&entry.tenant_id));
        }
        Ok(CreateOutcome::Created)
    }

    async fn idempotency_lookup(
        &self,
        tenant_id: &str,
        key_hash: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.enter(Op::IdempotencyLookup, 1).await?;
        let now = Utc::now().timestamp();
        // Expired records still exist until TTL removes them; they read as absent.
        Ok(self
            .state()
            .idempotency
            .get(&key(tenant_id, key_hash))
            .filter(|r| r.expires_at >= now)
            .cloned())
    }

    async fn claim_for_send(
        &self,
        tenant_id: &str,
        message_id: &str,
        now: DateTime<Utc>,
        lease_ms: i64,
    ) -> Result<Claim, StoreError> {
        self.enter(Op::ClaimForSend, 1).await?;
        let now_ms = now.timestamp_millis();
        let mut s = self.state();
        let Some(row) = s.messages.get_mut(&key(tenant_id, message_id)) else {
            return Ok(Claim::Finished);
        };
        let lease = row.lease_until_ms;
        let claim = match lease {
            _ if row.record.status != MessageStatus::Queued => Claim::Finished,
            None => {
                row.lease_until_ms = Some(now_ms + lease_ms);
                row.touched_ms = Some(now_ms);
                Claim::Claimed(Box::new(row.record.clone()))
            }
            Some(until_ms) if until_ms >= now_ms => Claim::Held { until_ms },
            Some(lease_until_ms) => Claim::Abandoned {
                message: Box::new(row.record.clone()),
                lease_until_ms,
            },
        };
        let record = row.record.clone();
        // The lease and `touched_ms` are projected into GSI1 only.
        let claimed = matches!(claim, Claim::Claimed(_));
        note_message_write(&mut s, Some(&record), &record, claimed);
        Ok(claim)
    }

    async fn stale_queued(
        &self,
        tenant_id: &str,
        accepted_before: DateTime<Utc>,
        untouched_since: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        // The outbox shards' queries (concurrent: one round trip) and the consistent batch read.
        self.enter(Op::StaleQueued, 2).await?;
        let floor = crate::privacy::id_floor(accepted_before);
        let since_ms = untouched_since.timestamp_millis();
        Ok(self
            .state()
            .messages
            .iter()
            .filter(|((t, id), row)| {
                t == tenant_id
                    && *id < floor
                    && row.record.direction == Direction::Outbound
                    && row.record.status == MessageStatus::Queued
                    && row.touched_ms.is_none_or(|at| at < since_ms)
            })
            .map(|((_, id), _)| id.clone())
            .collect())
    }

    async fn mark_unknown(
        &self,
        tenant_id: &str,
        message_id: &str,
        lease_until_ms: i64,
        error: &MessageError,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.enter(Op::MarkUnknown, 1).await?;
        let mut s = self.state();
        let Some(row) = s.messages.get_mut(&key(tenant_id, message_id)) else {
            return Ok(false);
        };
        if row.record.status != MessageStatus::Queued || row.lease_until_ms != Some(lease_until_ms) {
            return Ok(false);
        }
        let status = MessageStatus::Unknown;
        row.record.status = status;
        row.record.status_at.insert(status.as_str().to_owned(), at);
        row.record.error = Some(error.clone());
        row.lease_until_ms = None;
        Ok(true)
    }

    async fn release_claim(&self, tenant_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.enter(Op::ReleaseClaim, 1).await?;
        let mut s = self.state();
        if let Some(row) = s.messages.get_mut(&key(tenant_id, message_id)) {
            row.lease_until_ms = None;
            let record = row.record.clone();
            note_message_write(&mut s, Some(&record), &record, true);
        }
        Ok(())
    }

    async fn mark_sent(
        &self,
        tenant_id: &str,
        message_id: &str,
        contact_id: &str,
        wamid: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // The wamid transaction and the query for parked statuses.
        self.enter(Op::MarkSent, 2).await?;
        let sent = StatusWrite {
            wamid: wamid.to_owned(),
            status: MessageStatus::Sent,
            at,
            error: None,
            pricing: None,
            conversation: None,
        };
        let parked = {
            let mut s = self.state();
            let counting = s.writes.is_some();
            let Some(row) = s.messages.get_mut(&key(tenant_id, message_id)) else {
                return Err(StoreError::Backend(
                    "transaction cancelled: the message no longer exists".into(),
                ));
            };
            let before = counting.then(|| row.record.clone());
            let sent_in_transaction = status_advances(&row.record, &sent);
            if sent_in_transaction {
                set_status(&mut row.record, &sent);
            }
            row.record.wamid = Some(wamid.to_owned());
            row.lease_until_ms = None;
            if let Some(before) = before {
                // The transaction: the message (the lease removed), its pointer, its reference.
                let after = row.record.clone();
                note_message_write(&mut s, Some(&before), &after, true);
                note_write(&mut s, wamid_pk(tenant_id, wamid));
                note_write(&mut s, contact_pk(tenant_id, contact_id));
            }
            s.wamids.insert(key(tenant_id, wamid), message_id.to_owned());
            add_reference(&mut s, tenant_id, contact_id, Referenced::Wamid(wamid.to_owned()));
            if !sent_in_transaction {
                // The message moved meanwhile: `sent` goes through the ordered status path.
                apply_status(&mut s, tenant_id, &sent);
            }
            // Parked statuses stay (their TTL removes them); applying them again is a no-op.
            let parked: Vec<StatusWrite> = s
                .parked
                .get(&key(tenant_id, wamid))
                .map(|p| p.values().cloned().collect())
                .unwrap_or_default();
            for write in &parked {
                apply_status(&mut s, tenant_id, write);
            }
            parked.len() as u32
        };
        self.round_trips(2 * parked).await;
        Ok(())
    }

    async fn finish_unsent(
        &self,
        tenant_id: &str,
        message_id: &str,
        status: MessageStatus,
        error: &MessageError,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.enter(Op::FinishUnsent, 1).await?;
        let mut s = self.state();
        if let Some(row) = s.messages.get_mut(&key(tenant_id, message_id))
            && row.record.status.rank() < status.rank()
        {
            let before = row.record.clone();
            row.record.status = status;
            row.record.status_at.insert(status.as_str().to_owned(), at);
            row.record.error = Some(error.clone());
            row.lease_until_ms = None;
            let after = row.record.clone();
            note_message_write(&mut s, Some(&before), &after, true);
        }
        Ok(())
    }
}

impl SendPacingStore for MemStore {
    async fn take_send_slots(
        &self,
        tenant_id: &str,
        phone_number_id: &str,
        now_us: i64,
        count: u32,
        schedule: SendSchedule,
    ) -> Result<SlotDecision, StoreError> {
        // One request, as the DynamoDB store's busy path; the rule is `book_slots`, atomic
        // under the lock as the conditional writes make it there.
        self.enter(Op::TakeSendSlots, 1).await?;
        let mut s = self.state();
        let k = key(tenant_id, phone_number_id);
        let decision = book_slots(s.schedules.get(&k).copied(), now_us, count, schedule);
        if let SlotDecision::Grant { next_free_us, .. } = decision {
            s.schedules.insert(k, next_free_us);
        }
        note_write(&mut s, crate::store::keys::send_schedule_pk(tenant_id, phone_number_id));
        Ok(decision)
    }

    async fn recipient(&self, tenant_id: &str, contact_id: &str) -> Result<Option<Recipient>, StoreError> {
        self.enter(Op::Recipient, 1).await?;
        Ok(self
            .state()
            .contacts
            .get(&key(tenant_id, contact_id))
            .map(|row| Recipient {
                contact: row.contact.clone(),
                queue: row.queued.iter().cloned().collect(),
            }))
    }

    async fn claim_recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
        message_id: &str,
        now: DateTime<Utc>,
        interval_ms: i64,
    ) -> Result<bool, StoreError> {
        self.enter(Op::ClaimRecipient, 1).await?;
        let now_ms = now.timestamp_millis();
        let mut s = self.state();
        let Some(row) = s.contacts.get_mut(&key(tenant_id, contact_id)) else {
            return Ok(false);
        };
        let claimed = row.last_outbound_ms.is_none_or(|last| last <= now_ms - interval_ms);
        if claimed {
            row.last_outbound_ms = Some(now_ms);
            row.queued.remove(message_id);
        }
        // The profile's pacing attributes are projected into no index.
        note_write(&mut s, contact_pk(tenant_id, contact_id));
        Ok(claimed)
    }

    async fn return_to_recipient(&self, tenant_id: &str, contact_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.enter(Op::RecipientQueue, 1).await?;
        if let Some(row) = self.state().contacts.get_mut(&key(tenant_id, contact_id)) {
            row.queued.insert(message_id.to_owned());
        }
        Ok(())
    }

    async fn leave_recipient(&self, tenant_id: &str, contact_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.enter(Op::RecipientQueue, 1).await?;
        if let Some(row) = self.state().contacts.get_mut(&key(tenant_id, contact_id)) {
            row.queued.remove(message_id);
        }
        Ok(())
    }
}

impl AuditStore for MemStore {
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.enter(Op::RecordAudit, 1).await?;
        let mut s = self.state();
        s.audit.insert(key(&entry.tenant_id, &entry.id), entry.clone());
        note_write(&mut s, audit_pk(&entry.tenant_id));
        Ok(())
    }

    async fn list_audit(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<AuditEntry>, StoreError> {
        self.enter(Op::ListAudit, 1).await?;
        let sorted = self
            .state()
            .audit
            .iter()
            .rev()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|((_, id), e)| (id.clone(), e.clone()))
            .collect();
        Ok(page_of(sorted, Order::Descending, limit, start))
    }
}
