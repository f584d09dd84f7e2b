//! The sender: takes queued messages from SQS, re-checks the sending rules (state may have
//! changed while a message waited), paces per phone number and per recipient, calls the Graph
//! API, and records the outcome.
//!
//! Never a duplicate send: a message is sent only under a lease taken with a conditional write
//! on its `queued` status (a second delivery of the same job finds the lease or a later
//! status). Retries go back to the queue with a delay (partial batch response plus
//! `ChangeMessageVisibility`); a message that exhausts its retries is marked `failed` and its
//! record lands in the dead-letter queue. Throughput is bounded by a per-number send schedule
//! shared by every concurrent sender through DynamoDB: a batch books consecutive slots spaced
//! at the configured rate and sends each message when its slot is due.
//!
//! One job per module: [`batch`] runs an SQS batch, [`prepare`] claims and re-checks one
//! message, [`slots`] books send slots, [`send`] makes the Graph call and records the send,
//! [`outcome`] decides what a failed send becomes.

mod batch;
mod outcome;
mod prepare;
mod send;
mod slots;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crm_shared::cache::TtlCache;
use crm_shared::graph::MessageSender;
use crm_shared::jobs::RetryScheduler;
use crm_shared::secret::Secret;
use crm_shared::store::{
    ContactStore, MessageStore, OutboundStore, SendPacingStore, StoreError, TemplateStore, TenantStore,
};
use crm_shared::tenant::Tenant;

pub use batch::{handle, process_batch};
pub use outcome::Outcome;
pub use send::graph_payload;

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The queue's `maxReceiveCount`: the receive on which a failure is final.
    pub max_receives: u32,
    /// Messages per second per phone number.
    pub rate_per_second: u32,
    /// How long a sender holds a message it is sending.
    pub lease_ms: i64,
    /// How far ahead send slots are booked, and so how long a batch may wait for its slots
    /// before handing its messages back to the queue.
    pub max_slot_wait: Duration,
    /// Tenant records are cached this long (token flags apply within it).
    pub tenant_ttl: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            max_receives: 8,
            rate_per_second: 80,
            lease_ms: 120_000,
            max_slot_wait: Duration::from_secs(10),
            tenant_ttl: Duration::from_secs(30),
        }
    }
}

/// Tenants a sender instance remembers at most (then it starts over).
const TENANT_CACHE_CAPACITY: usize = 1_000;

/// Storage the sender needs.
pub trait SenderStore:
    OutboundStore + SendPacingStore + MessageStore + ContactStore + TenantStore + TemplateStore
{
}
impl<T: OutboundStore + SendPacingStore + MessageStore + ContactStore + TenantStore + TemplateStore> SenderStore for T {}

pub struct Deps<S, G, R> {
    pub store: S,
    pub graph: G,
    pub retry: R,
    pub config: SenderConfig,
    /// Tenant id → the tenant and its Graph token, remembered for `config.tenant_ttl`.
    tenants: TtlCache<String, (Tenant, Secret)>,
}

impl<S: SenderStore, G: MessageSender, R: RetryScheduler> Deps<S, G, R> {
    pub fn new(store: S, graph: G, retry: R, config: SenderConfig) -> Self {
        Deps {
            store,
            graph,
            retry,
            tenants: TtlCache::new(TENANT_CACHE_CAPACITY, config.tenant_ttl),
            config,
        }
    }

    /// The tenant and its token, cached briefly across invocations.
    async fn tenant(&self, tenant_id: &str) -> Result<Option<(Tenant, Secret)>, StoreError> {
        if let Some(cached) = self.tenants.get(tenant_id) {
            return Ok(Some(cached));
        }
        let Some(tenant) = self.store.get_tenant(tenant_id).await? else {
            return Ok(None);
        };
        let Some(token) = self.store.graph_token(tenant_id).await? else {
            return Ok(None);
        };
        self.tenants
            .insert(tenant_id.to_owned(), (tenant.clone(), token.clone()));
        Ok(Some((tenant, token)))
    }
}

impl<S, G, R> Deps<S, G, R> {
    fn forget_tenant(&self, tenant_id: &str) {
        self.tenants.remove(tenant_id);
    }
}
