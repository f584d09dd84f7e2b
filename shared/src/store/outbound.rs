//! Storage for messages we send: creation, and the moment Meta accepts one (its wamid).

use std::future::Future;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::dynamo::{backend, from_item, to_item};
use super::inbound::{InboundStore, MessageItem, StatusWrite};
use super::keys::*;
use super::{DynamoStore, StoreError};
use crate::message::{MessageError, MessageRecord, MessageStatus};

pub trait OutboundStore: Send + Sync {
    /// Stores a new message; `Conflict` when the id exists.
    fn create_message(&self, message: &MessageRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records that Meta accepted the message under `wamid`: status `sent` (unless a status
    /// webhook already moved it further), the wamid pointer, and any statuses that arrived
    /// before the pointer existed.
    fn mark_sent(
        &self,
        tenant_id: &str,
        message_id: &str,
        wamid: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

#[derive(Deserialize)]
struct Parked {
    status: MessageStatus,
    at: DateTime<Utc>,
    #[serde(default)]
    error: Option<MessageError>,
    #[serde(default)]
    pricing: Option<serde_json::Value>,
    #[serde(default)]
    conversation: Option<serde_json::Value>,
}

impl OutboundStore for DynamoStore {
    async fn create_message(&self, message: &MessageRecord) -> Result<(), StoreError> {
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&MessageItem::new(message))))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict("message id exists".into()))
            }
            Err(err) => Err(backend(err)),
        }
    }

    async fn mark_sent(
        &self,
        tenant_id: &str,
        message_id: &str,
        wamid: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let update = Update::builder()
            .table_name(self.table())
            .key(PK, s(message_pk(tenant_id, message_id)))
            .key(SK, s(MESSAGE_SK))
            .update_expression("SET wamid = :w")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":w", s(wamid))
            .build()
            .expect("update is complete");
        let mut pointer = std::collections::HashMap::new();
        pointer.insert(PK.to_owned(), s(wamid_pk(tenant_id, wamid)));
        pointer.insert(SK.to_owned(), s(WAMID_SK));
        pointer.insert("message_id".to_owned(), s(message_id));
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(pointer))
            .build()
            .expect("put is complete");
        self.client()
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await
            .map_err(backend)?;
        // Move the status to `sent` through the same monotonic rule as webhooks.
        self.apply_status(
            tenant_id,
            &StatusWrite {
                wamid: wamid.to_owned(),
                status: MessageStatus::Sent,
                at,
                error: None,
                pricing: None,
                conversation: None,
            },
        )
        .await?;
        // Statuses that raced ahead of this write were parked under the wamid: apply them.
        let parked = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
            .expression_attribute_values(":pk", s(wamid_pk(tenant_id, wamid)))
            .expression_attribute_values(":p", s(pending_status_sk("")))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        for item in parked.items.unwrap_or_default() {
            let p: Parked = from_item(item)?;
            self.apply_status(
                tenant_id,
                &StatusWrite {
                    wamid: wamid.to_owned(),
                    status: p.status,
                    at: p.at,
                    error: p.error,
                    pricing: p.pricing,
                    conversation: p.conversation,
                },
            )
            .await?;
        }
        Ok(())
    }
}
