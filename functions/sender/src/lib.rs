//! The sender: takes queued messages from SQS, re-checks the sending rules (state may have
//! changed while a message waited), paces per phone number and per recipient, calls the Graph
//! API, and records the outcome.
//!
//! Never a duplicate send: a message is sent only under a lease taken with a conditional write
//! on its `queued` status while no lease is on it. Every path that does not reach Meta gives the
//! lease back; a lease that simply expired was abandoned mid-send (a crash, a timeout), so that
//! message is marked `unknown`, never sent again. A send without an answer (timeout or reset
//! after the request left) is `unknown` at once. Every send carries our message id in
//! `biz_opaque_callback_data`; the status webhook that echoes it reconciles an `unknown` (or
//! unrecorded) send with its wamid.
//!
//! Waits (pair rate, no free slot, a lease held elsewhere, an older message to the same
//! recipient, a paused tenant) and retries go back to the queue as new, delayed jobs carrying
//! the job's failure count: waiting never uses up SQS receives, and the last failed attempt marks
//! the message `failed` with Meta's reason. Nothing is sent more than an hour after the API
//! accepted it (`not_sent_in_time`). Messages to one recipient leave in the order the API
//! accepted them: each queued message is in its recipient's queue (on the contact item), and
//! the recipient claim lets only the oldest go. Throughput is bounded by a per-number send
//! schedule shared by every concurrent sender through DynamoDB: a batch books consecutive slots
//! spaced at the configured rate and sends each message when its slot is due.
//!
//! One job per module: [`batch`] runs an SQS batch, [`prepare`] claims and re-checks one
//! message, [`slots`] books send slots, [`send`] makes the Graph call and records the send,
//! [`outcome`] decides what a failed send becomes.

mod batch;
#[cfg(test)]
mod broadcast_tests;
mod outcome;
mod prepare;
mod send;
mod slots;
pub mod sweep;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crm_shared::cache::TtlCache;
use crm_shared::graph::MessageSender;
use crm_shared::jobs::{RetryScheduler, SendJobQueue};
use crm_shared::secret::Secret;
use crm_shared::store::{
    ContactStore, MessageStore, OutboundStore, SendPacingStore, StoreError, TemplateStore, TenantStore,
};
use crm_shared::tenant::Tenant;

pub use batch::{handle, process_batch};
pub use outcome::Outcome;
pub use send::graph_payload;

/// How the sender's clocks fit together (template.yaml: `SenderFunction.Timeout` 30 s,
/// `OutboundQueue.VisibilityTimeout` 180 s):
///
/// * one invocation takes at most: preparing (a few DynamoDB requests, ≤ 3 s with SDK
///   retries), plus waiting for slots (`max_slot_wait`, 10 s), plus the Graph call
///   (`graph::SEND_TIMEOUT`, 10 s), plus recording it (4 tries, 2.1 s of backoff, ≤ 3 s):
///   26 s < the 30 s function timeout, so Lambda never cuts a send off between Meta's answer
///   and its record but by a crash;
/// * visibility timeout 180 s = 6 × the function timeout (AWS's advice for SQS sources);
/// * lease 240 s > 180 s: a message a dead invocation held is found still leased by the
///   redelivery of its record, and found abandoned (then `unknown`, never resent) only after
///   every invocation that could hold it has ended.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Failed send attempts before a message fails for good (the job counts them itself);
    /// also the queue's `maxReceiveCount`, which only a crash-looping record reaches.
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
            lease_ms: 240_000,
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

impl<S: SenderStore, G: MessageSender, R: RetryScheduler + SendJobQueue> Deps<S, G, R> {
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
