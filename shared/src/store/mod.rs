//! Storage ports (narrow traits, one per capability) and their DynamoDB implementation.
//!
//! Every item of tenant data lives under a partition key that starts with the tenant id
//! (see [`keys`]); the only items outside a tenant's partition are lookups that exist to find
//! the tenant in the first place (phone number id → tenant).

pub mod audit;
pub mod contacts;
mod dynamo;
pub mod inbound;
pub mod keys;
pub mod outbound;
pub mod privacy;

use std::future::Future;

use chrono::{DateTime, Utc};

pub use audit::AuditStore;
pub use contacts::{ContactFilter, ContactStore, ContactUpdate};
pub use dynamo::DynamoStore;
pub use inbound::{
    ConversationStore, CustomerIdentity, IdentityKey, InboundOutcome, InboundStore, InboundWrite, MediaStore,
    StatusOutcome, StatusWrite,
};
pub use outbound::{CreateOutcome, IdempotencyRecord, OutboundStore};

use crate::cursor::Position;
use crate::secret::Secret;
use crate::tenant::{ApiKeyRecord, Tenant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write; the message says which.
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// An optimistic-concurrency check failed: the item changed since it was read.
    #[error("the item was modified concurrently")]
    VersionMismatch,
    /// The database could not be reached or refused the request (retryable).
    #[error("storage request failed: {0}")]
    Backend(String),
    /// An item exists but cannot be read back into its type.
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
}

/// One page of a listing: the items and where the next page starts, if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Position>,
}

/// Tenants and the lookups that route to them.
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
}

/// API keys of a tenant.
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key; the tenant must exist ([`StoreError::NotFound`] otherwise).
    fn put_key(&self, key: &ApiKeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_key(
        &self,
        tenant_id: &str,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

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
}
