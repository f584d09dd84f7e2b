//! Storage: the ports (narrow traits, one per aggregate, in [`ports`]) and their DynamoDB
//! implementation. Layout (docs/data-model.md, "Code layout"):
//!
//! - [`keys`]: every key format of the single table, and nothing else builds one;
//! - `items`: the stored form of every item (the schema);
//! - `dynamo`: the toolkit (attribute values, condition failures, pages, batches) and the
//!   [`DynamoStore`] handle;
//! - one adapter file per aggregate (`tenants`, `contacts`, `conversations`, `users`, `messages`,
//!   `outbound`, `audit`, `privacy`), which import only the toolkit, the schema, the keys and the ports.
//!
//! Every item of tenant data lives under a partition key that starts with the tenant id; the
//! only items outside a tenant's partition are lookups that exist to find the tenant in the
//! first place (phone number id → tenant).

mod audit;
mod automations;
mod broadcasts;
mod contacts;
mod conversations;
mod dynamo;
mod events;
mod items;
pub mod keys;
mod messages;
mod outbound;
pub mod ports;
pub mod privacy;
mod reports;
mod templates;
mod tenants;
mod users;

pub use dynamo::{DynamoStore, Item, item_size, transactional_write_units};
#[cfg(any(test, feature = "testing"))]
pub(crate) use items::message_index_writes;
pub use items::{RAW_EVENT_TTL_DAYS, event_pack_item};
pub use ports::*;

use crate::cursor::Position;

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
    /// The database refused the request as invalid (an item over 400 KB, an attribute it
    /// cannot hold): the same request will never succeed, so it is not retried.
    #[error("storage refused the request as invalid: {0}")]
    Rejected(String),
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
