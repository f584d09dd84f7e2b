//! An in-memory implementation of the sender's storage ports, for the bench only: it isolates
//! the sender's own pipeline (claim → rules → limiter → concurrent Graph calls → outcome) from
//! the speed of the local AWS endpoint. It keeps the semantics the sender relies on — the
//! conditional lease, the pair-rate claim, and the per-number per-second window with the same
//! conditional-add-then-read protocol as the DynamoDB store — and can add a fixed latency to
//! every call to stand in for a real database round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crm_shared::contact::{ConsentChange, Contact, RestrictionChange};
use crm_shared::cursor::Position;
use crm_shared::message::{MediaRef, MessageError, MessageRecord, MessageStatus};
use crm_shared::secret::Secret;
use crm_shared::sending::{SendSchedule, SlotDecision, book_slots};
use crm_shared::store::{
    ContactFilter, ContactStore, ContactUpdate, CreateOutcome, CustomerIdentity, IdempotencyRecord, IdentityKey,
    MessageStore, OutboundStore, Page, SendPacingStore, StoreError, TenantStore,
};
use crm_shared::tenant::{ApiKeyRecord, Tenant};

#[derive(Default)]
struct State {
    tenants: HashMap<String, (Tenant, Secret)>,
    contacts: HashMap<(String, String), Contact>,
    messages: HashMap<(String, String), (MessageRecord, Option<i64>)>,
    last_outbound_ms: HashMap<(String, String), i64>,
    /// Next free send slot per (tenant, phone number).
    schedules: HashMap<(String, String), i64>,
}

/// Cheap to clone: clones share one state (one "table").
#[derive(Clone)]
pub struct MemStore {
    latency: Duration,
    state: Arc<Mutex<State>>,
}

fn unsupported<T>() -> Result<T, StoreError> {
    Err(StoreError::Backend(
        "not supported by the bench's in-memory store".into(),
    ))
}

impl MemStore {
    pub fn new(latency: Duration) -> Self {
        MemStore {
            latency,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    pub fn add_tenant(&self, tenant: Tenant, token: Secret) {
        let mut s = self.state.lock().expect("state");
        s.tenants.insert(tenant.tenant_id.clone(), (tenant, token));
    }

    pub fn add_contact(&self, contact: Contact) {
        let mut s = self.state.lock().expect("state");
        s.contacts
            .insert((contact.tenant_id.clone(), contact.contact_id.clone()), contact);
    }

    pub fn add_message(&self, message: MessageRecord) {
        let mut s = self.state.lock().expect("state");
        s.messages
            .insert((message.tenant_id.clone(), message.message_id.clone()), (message, None));
    }

    /// Messages by status.
    pub fn status_counts(&self) -> HashMap<MessageStatus, usize> {
        let s = self.state.lock().expect("state");
        let mut out = HashMap::new();
        for (m, _) in s.messages.values() {
            *out.entry(m.status).or_default() += 1;
        }
        out
    }

    async fn round_trip(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    fn key(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }
}

impl TenantStore for MemStore {
    async fn create_tenant(&self, _: &Tenant, _: &Secret, _: &ApiKeyRecord) -> Result<(), StoreError> {
        unsupported()
    }

    async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>, StoreError> {
        self.round_trip().await;
        Ok(self
            .state
            .lock()
            .expect("state")
            .tenants
            .get(tenant_id)
            .map(|(t, _)| t.clone()))
    }

    async fn tenant_for_phone_number(&self, _: &str) -> Result<Option<String>, StoreError> {
        unsupported()
    }

    async fn tenant_for_waba(&self, _: &str) -> Result<Option<String>, StoreError> {
        unsupported()
    }

    async fn graph_token(&self, tenant_id: &str) -> Result<Option<Secret>, StoreError> {
        self.round_trip().await;
        Ok(self
            .state
            .lock()
            .expect("state")
            .tenants
            .get(tenant_id)
            .map(|(_, s)| s.clone()))
    }

    async fn set_token_invalid(&self, tenant_id: &str, invalid: bool) -> Result<(), StoreError> {
        self.round_trip().await;
        match self.state.lock().expect("state").tenants.get_mut(tenant_id) {
            Some((t, _)) => {
                t.token_invalid = invalid;
                Ok(())
            }
            None => Err(StoreError::NotFound),
        }
    }

    async fn replace_graph_token(&self, _: &str, _: &Secret) -> Result<(), StoreError> {
        unsupported()
    }

    async fn disable_tenant(&self, _: &str, _: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        unsupported()
    }

    async fn delete_routes(&self, _: &Tenant) -> Result<u64, StoreError> {
        unsupported()
    }
}

impl MessageStore for MemStore {
    async fn get_message(&self, tenant_id: &str, message_id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.round_trip().await;
        Ok(self
            .state
            .lock()
            .expect("state")
            .messages
            .get(&Self::key(tenant_id, message_id))
            .map(|(m, _)| m.clone()))
    }

    async fn update_media(&self, _: &str, _: &str, _: &MediaRef) -> Result<(), StoreError> {
        unsupported()
    }

    async fn contact_messages(
        &self,
        _: &str,
        _: &str,
        _: i32,
        _: Option<Position>,
    ) -> Result<Page<MessageRecord>, StoreError> {
        unsupported()
    }
}

impl ContactStore for MemStore {
    async fn create_contact(&self, _: &Contact) -> Result<(), StoreError> {
        unsupported()
    }

    async fn match_contact(&self, _: &str, _: &CustomerIdentity) -> Result<Option<(String, IdentityKey)>, StoreError> {
        unsupported()
    }

    async fn restriction_history(&self, _: &str, _: &str) -> Result<Vec<RestrictionChange>, StoreError> {
        unsupported()
    }

    async fn get_contact(&self, tenant_id: &str, contact_id: &str) -> Result<Option<Contact>, StoreError> {
        self.round_trip().await;
        Ok(self
            .state
            .lock()
            .expect("state")
            .contacts
            .get(&Self::key(tenant_id, contact_id))
            .cloned())
    }

    async fn update_contact(&self, _: &ContactUpdate<'_>) -> Result<(), StoreError> {
        unsupported()
    }

    async fn record_consent(&self, _: &Contact, _: &Contact, _: &ConsentChange) -> Result<(), StoreError> {
        unsupported()
    }

    async fn record_restriction(&self, _: &Contact, _: &Contact, _: &RestrictionChange) -> Result<(), StoreError> {
        unsupported()
    }

    async fn consent_history(&self, _: &str, _: &str) -> Result<Vec<ConsentChange>, StoreError> {
        unsupported()
    }

    async fn list_contacts(
        &self,
        _: &str,
        _: &ContactFilter,
        _: i32,
        _: Option<Position>,
    ) -> Result<Page<Contact>, StoreError> {
        unsupported()
    }
}

impl OutboundStore for MemStore {
    async fn create_message(&self, _: &MessageRecord) -> Result<(), StoreError> {
        unsupported()
    }

    async fn create_message_once(
        &self,
        _: &MessageRecord,
        _: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        unsupported()
    }

    async fn idempotency_lookup(&self, _: &str, _: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        unsupported()
    }

    async fn claim_for_send(
        &self,
        tenant_id: &str,
        message_id: &str,
        now: DateTime<Utc>,
        lease_ms: i64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        self.round_trip().await;
        let now_ms = now.timestamp_millis();
        let mut s = self.state.lock().expect("state");
        match s.messages.get_mut(&Self::key(tenant_id, message_id)) {
            Some((m, lease)) if m.status == MessageStatus::Queued && lease.is_none_or(|l| l < now_ms) => {
                *lease = Some(now_ms + lease_ms);
                Ok(Some(m.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn release_claim(&self, tenant_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.round_trip().await;
        if let Some((_, lease)) = self
            .state
            .lock()
            .expect("state")
            .messages
            .get_mut(&Self::key(tenant_id, message_id))
        {
            *lease = None;
        }
        Ok(())
    }

    async fn mark_sent(
        &self,
        tenant_id: &str,
        message_id: &str,
        _contact_id: &str,
        wamid: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // The DynamoDB store does this in a transaction, a status update and a query.
        for _ in 0..2 {
            self.round_trip().await;
        }
        {
            let mut s = self.state.lock().expect("state");
            let Some((m, lease)) = s.messages.get_mut(&Self::key(tenant_id, message_id)) else {
                return Err(StoreError::NotFound);
            };
            m.wamid = Some(wamid.to_owned());
            *lease = None;
            if m.status.rank() < MessageStatus::Sent.rank() {
                m.status = MessageStatus::Sent;
                m.status_at.insert("sent".into(), at);
            }
        }
        self.round_trip().await;
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
        self.round_trip().await;
        let mut s = self.state.lock().expect("state");
        if let Some((m, lease)) = s.messages.get_mut(&Self::key(tenant_id, message_id))
            && m.status.rank() < status.rank()
        {
            m.status = status;
            m.status_at.insert(status.as_str().to_owned(), at);
            m.error = Some(error.clone());
            *lease = None;
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
        // The same rule as the DynamoDB store, atomic under the lock; one round trip, as the
        // DynamoDB store's busy path.
        self.round_trip().await;
        let mut s = self.state.lock().expect("state");
        let key = (tenant_id.to_owned(), phone_number_id.to_owned());
        let decision = book_slots(s.schedules.get(&key).copied(), now_us, count, schedule);
        if let SlotDecision::Grant { next_free_us, .. } = decision {
            s.schedules.insert(key, next_free_us);
        }
        Ok(decision)
    }

    async fn claim_recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
        now: DateTime<Utc>,
        interval_ms: i64,
    ) -> Result<bool, StoreError> {
        self.round_trip().await;
        let now_ms = now.timestamp_millis();
        let mut s = self.state.lock().expect("state");
        let key = Self::key(tenant_id, contact_id);
        if !s.contacts.contains_key(&key) {
            return Ok(false);
        }
        match s.last_outbound_ms.get(&key) {
            Some(&last) if last > now_ms - interval_ms => Ok(false),
            _ => {
                s.last_outbound_ms.insert(key, now_ms);
                Ok(true)
            }
        }
    }
}
