//! Messages: reading them, recording their media, and what Meta tells us (inbound messages
//! with the contact changes they imply, delivery statuses, other account events). Every
//! webhook write is conditional so a redelivered webhook changes nothing.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::contacts::contact_creation;
use super::dynamo::{
    DynamoStore, av, backend, condition_failed, from_item, key, n, put_always, s, to_item, tx_check, tx_put, tx_update,
};
use super::items::{
    ConsentItem, ContactItem, ConversationTouch, MessageItem, ParkedStatusItem, RawEventItem, StatusChange,
    TombstoneItem, WamidPointerItem, media_is_stored,
};
use super::keys::*;
use super::outbound::WamidWrite;
use super::ports::{IdentityKey, InboundOutcome, InboundStore, InboundWrite, MessageStore, StatusOutcome, StatusWrite};
use super::{Page, StoreError};
use crate::cursor::Position;
use crate::message::{Direction, MediaRef, MessageRecord, MessageStatus};

impl DynamoStore {
    /// The contact's part of an inbound message's transaction. With `with_time_condition` the
    /// message is the contact's newest: its clock, and a keyword's consent, move forward.
    fn contact_update(&self, write: &InboundWrite, with_time_condition: bool) -> TransactWriteItem {
        let m = &write.message;
        let ts_ms = m.timestamp.timestamp_millis();
        // Every contact write bumps the version, so an API edit based on an older read fails its
        // version check instead of overwriting what the webhook wrote.
        let mut sets = vec!["updated_at = :now".to_owned(), "version = version + :one".to_owned()];
        let mut values: HashMap<String, AttributeValue> = HashMap::new();
        values.insert(":now".into(), av(&m.created_at));
        values.insert(":one".into(), n(1));
        if with_time_condition {
            sets.push("last_inbound_at = :ts".into());
            sets.push("last_inbound_ms = :ms".into());
            values.insert(":ts".into(), av(&m.timestamp));
            values.insert(":ms".into(), n(ts_ms));
        }
        if let Some(number) = m.phone_number_id.as_ref().filter(|_| with_time_condition) {
            sets.push("last_number = :number".into());
            values.insert(":number".into(), s(number.clone()));
        }
        if let Some(name) = &write.profile_name {
            sets.push("profile_name = :pn".into());
            values.insert(":pn".into(), s(name.clone()));
        }
        if let Some(change) = write.consent.as_ref().filter(|_| with_time_condition) {
            sets.push("consent = :consent".into());
            values.insert(
                ":consent".into(),
                av(&crate::contact::Consent {
                    marketing: change.marketing,
                    updated_at: Some(change.at),
                    source: Some(change.source.clone()),
                }),
            );
        }
        let mut condition = if with_time_condition {
            "attribute_exists(PK) AND (attribute_not_exists(last_inbound_ms) OR last_inbound_ms <= :ms)".to_owned()
        } else {
            "attribute_exists(PK)".to_owned()
        };
        match &write.matched_by {
            Some(IdentityKey::Phone(phone)) => {
                condition.push_str(" AND phone = :matched");
                values.insert(":matched".into(), s(phone.clone()));
            }
            Some(IdentityKey::UserId(user_id)) => {
                condition.push_str(" AND user_id = :matched");
                values.insert(":matched".into(), s(user_id.clone()));
            }
            None => {}
        }
        tx_update(
            Update::builder()
                .table_name(self.table())
                .set_key(Some(key(contact_pk(&m.tenant_id, &m.contact_id), PROFILE_SK)))
                .update_expression(format!("SET {}", sets.join(", ")))
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .build()
                .expect("update is complete"),
        )
    }

    /// One attempt at an inbound message's transaction: the outcome, or `Err(())` when the
    /// contact's condition failed (gone, identity moved, or a newer message seen).
    async fn try_record_inbound(
        &self,
        write: &InboundWrite,
        with_time_condition: bool,
    ) -> Result<Result<InboundOutcome, ()>, StoreError> {
        let message = tx_put(
            Put::builder()
                .table_name(self.table())
                .set_item(Some(to_item(&MessageItem::new(&write.message))))
                .condition_expression("attribute_not_exists(PK)")
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .build()
                .expect("put is complete"),
        );
        let m = &write.message;
        let mut items = vec![message];
        let created = write.created_contact();
        match &created {
            Some(contact) => {
                // With the message's clock, so a later but older message cannot move it back.
                let mut profile = to_item(&ContactItem::new(contact));
                profile.insert("last_inbound_ms".into(), n(m.timestamp.timestamp_millis()));
                items.extend(contact_creation(self.table(), contact, profile));
            }
            None => items.push(self.contact_update(write, with_time_condition)),
        }
        // An erased message's wamid stays refused for Meta's redelivery window (same request).
        let tombstone_check = items.len();
        if let Some(wamid) = &m.wamid {
            items.push(tx_check(
                ConditionCheck::builder()
                    .table_name(self.table())
                    .set_key(Some({
                        let (pk, sk) = tombstone_key(&m.tenant_id, wamid);
                        key(pk, sk)
                    }))
                    .condition_expression("attribute_not_exists(PK)")
                    .build()
                    .expect("check is complete"),
            ));
        }
        if let Some(change) = write.consent.as_ref().filter(|_| with_time_condition) {
            let history = ConsentItem::new(&m.tenant_id, &m.contact_id, change, &m.message_id);
            items.push(put_always(self.table(), to_item(&history)));
        }
        if let Some(number) = &write.message.phone_number_id {
            // The conversation moves in the same transaction: no request of its own.
            let touch = ConversationTouch::inbound(&write.message, number, with_time_condition);
            items.push(tx_update(touch.into_update(self.table(), &write.message, number)));
        }
        let cancelled = match self.transact(items).await? {
            Ok(()) => return Ok(Ok(InboundOutcome::Stored)),
            Err(cancelled) => cancelled,
        };
        if m.wamid.is_some() && cancelled.failed(tombstone_check) {
            return Ok(Ok(InboundOutcome::Erased));
        }
        if cancelled.failed(0) {
            let existing = match cancelled.old_item(0) {
                Some(item) => from_item::<MessageItem>(item.clone())?.message,
                // Some endpoints omit the old item: read it.
                None => self
                    .get_message(&write.message.tenant_id, &write.message.message_id)
                    .await?
                    .ok_or(StoreError::Backend("duplicate message vanished".into()))?,
            };
            return Ok(Ok(InboundOutcome::Duplicate(Box::new(existing))));
        }
        if created.is_some() && cancelled.any_failed() {
            // Only an identity claim is left to fail (a fresh id never collides): another first
            // contact of the same customer won.
            return Err(StoreError::Conflict("the identity was claimed meanwhile".into()));
        }
        if cancelled.any_failed() {
            return Ok(Err(()));
        }
        Err(cancelled.unexplained())
    }

    /// Keeps a status that arrived before its message's wamid was stored.
    async fn park_status(&self, tenant_id: &str, write: &StatusWrite) -> Result<StatusOutcome, StoreError> {
        let item = to_item(&ParkedStatusItem::new(tenant_id, write));
        Ok(if self.put_if_absent(item).await? {
            StatusOutcome::Parked
        } else {
            StatusOutcome::Duplicate
        })
    }
}

impl MessageStore for DynamoStore {
    async fn get_message(&self, tenant_id: &str, message_id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let item: Option<MessageItem> = self.get(message_pk(tenant_id, message_id), MESSAGE_SK).await?;
        Ok(item.map(|i| i.message))
    }

    async fn get_messages(&self, tenant_id: &str, message_ids: &[String]) -> Result<Vec<MessageRecord>, StoreError> {
        let keys = message_ids
            .iter()
            .map(|m| key(message_pk(tenant_id, m), MESSAGE_SK))
            .collect();
        self.batch_get(keys)
            .await?
            .into_iter()
            .map(|item| from_item::<MessageItem>(item).map(|i| i.message))
            .collect()
    }

    async fn contact_messages(
        &self,
        tenant_id: &str,
        contact_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<MessageRecord>, StoreError> {
        let query = self
            .client()
            .query()
            .index_name(GSI1)
            .key_condition_expression("GSI1PK = :pk")
            .expression_attribute_values(":pk", s(conversation_gsi1pk(tenant_id, contact_id)))
            .scan_index_forward(false);
        let key_attrs = [PK, SK, GSI1_PK, GSI1_SK];
        self.list_page(query, tenant_id, limit, start, &key_attrs, |m: MessageItem| m.message)
            .await
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
        let filter = if with_unnumbered {
            "phone_number_id = :n OR attribute_not_exists(phone_number_id)"
        } else {
            "phone_number_id = :n"
        };
        let query = self
            .client()
            .query()
            .index_name(GSI1)
            .key_condition_expression("GSI1PK = :pk")
            .filter_expression(filter)
            .expression_attribute_values(":pk", s(conversation_gsi1pk(tenant_id, contact_id)))
            .expression_attribute_values(":n", s(phone_number_id))
            .scan_index_forward(false);
        let key_attrs = [PK, SK, GSI1_PK, GSI1_SK];
        self.list_page(query, tenant_id, limit, start, &key_attrs, |m: MessageItem| m.message)
            .await
    }

    async fn update_media(&self, tenant_id: &str, message_id: &str, media: &MediaRef) -> Result<(), StoreError> {
        let update = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(message_pk(tenant_id, message_id), MESSAGE_SK)))
            // Never downgrade stored media, nor revive media that retention removed.
            .condition_expression("attribute_exists(PK) AND media.#st <> :available AND media.#st <> :expired")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":media", av(media))
            .expression_attribute_values(":available", s("available"))
            .expression_attribute_values(":expired", s("expired"));
        let update = if media_is_stored(Some(media)) {
            // Stored objects enter the media index that media retention walks.
            update
                // Sorted like the tenant-wide index (the message's sort id, see MessageItem).
                .update_expression("SET media = :media, GSI6PK = :g6pk, GSI6SK = GSI5SK")
                .expression_attribute_values(":g6pk", s(tenant_media_gsi6pk(tenant_id)))
        } else {
            update.update_expression("SET media = :media")
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => match self.get_message(tenant_id, message_id).await? {
                None => Err(StoreError::NotFound),
                // Already available: a duplicate job; nothing to do.
                Some(_) => Ok(()),
            },
            Err(err) => Err(backend(err)),
        }
    }
}

impl InboundStore for DynamoStore {
    async fn record_inbound(&self, write: &InboundWrite) -> Result<InboundOutcome, StoreError> {
        if let Ok(outcome) = self.try_record_inbound(write, true).await? {
            return Ok(outcome);
        }
        // The contact update's condition failed: the contact is gone, no longer holds the
        // identity it was matched by, or has seen a newer message. Only the last one stores the
        // message (without moving the contact's clock); the others are `NotFound`, and the
        // caller matches the sender again.
        let m = &write.message;
        if !self.exists(contact_pk(&m.tenant_id, &m.contact_id), PROFILE_SK).await? {
            return Err(StoreError::NotFound);
        }
        self.try_record_inbound(write, false)
            .await?
            .map_err(|()| StoreError::NotFound)
    }

    async fn apply_status(&self, tenant_id: &str, write: &StatusWrite) -> Result<StatusOutcome, StoreError> {
        let pointer: Option<WamidPointerItem> = self.get(wamid_pk(tenant_id, &write.wamid), WAMID_SK).await?;
        let Some(pointer) = pointer else {
            // No pointer: not sent yet (park the status for the sender), or erased (drop it:
            // a parked status would keep the recipient's number).
            if self.wamid_erased(tenant_id, &write.wamid).await? {
                return Ok(StatusOutcome::Erased);
            }
            return self.park_status(tenant_id, write).await;
        };
        let message_key = key(message_pk(tenant_id, &pointer.message_id), MESSAGE_SK);
        let change = StatusChange::of(write);
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(message_key.clone()))
            .update_expression(change.expression(&[]))
            .condition_expression(change.condition)
            .set_expression_attribute_names(Some(change.names))
            .set_expression_attribute_values(Some(change.values))
            .send()
            .await;
        match result {
            Ok(_) => return Ok(StatusOutcome::Applied),
            Err(err) if !condition_failed(&err) => return Err(backend(err)),
            Err(_) if write.status == MessageStatus::Failed => return Ok(StatusOutcome::LateFailure),
            Err(_) => {}
        }
        // Behind the message's current status (or a repeat): keep only the history.
        let history = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(message_key))
            .update_expression("SET status_at.#st = :at")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(status_at.#st)")
            .expression_attribute_names("#st", write.status.as_str())
            .expression_attribute_values(":at", av(&write.at))
            .send()
            .await;
        match history {
            Ok(_) => Ok(StatusOutcome::HistoryOnly),
            Err(err) if condition_failed(&err) => Ok(StatusOutcome::Duplicate),
            Err(err) => Err(backend(err)),
        }
    }

    async fn adopt_wamid(&self, tenant_id: &str, message_id: &str, wamid: &str) -> Result<bool, StoreError> {
        if !crate::ids::is_valid_id(message_id) {
            return Ok(false);
        }
        let Some(message) = self.get_message(tenant_id, message_id).await? else {
            return Ok(false);
        };
        if message.direction != Direction::Outbound
            || message.wamid.is_some()
            || !matches!(message.status, MessageStatus::Queued | MessageStatus::Unknown)
        {
            return Ok(false);
        }
        let stored = self
            .store_wamid(tenant_id, message_id, &message.contact_id, wamid, WamidWrite::Adopted)
            .await?;
        match stored {
            Ok(()) => Ok(true),
            Err(c) if c.any_failed() => Ok(false),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn drop_orphan_status(
        &self,
        tenant_id: &str,
        message_id: &str,
        write: &StatusWrite,
    ) -> Result<bool, StoreError> {
        if crate::ids::is_valid_id(message_id) && self.get_message(tenant_id, message_id).await?.is_some() {
            return Ok(false);
        }
        self.put_if_absent(to_item(&TombstoneItem::new(tenant_id, &write.wamid, write.at)))
            .await?;
        self.client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(key(
                wamid_pk(tenant_id, &write.wamid),
                pending_status_sk(write.status.as_str()),
            )))
            .send()
            .await
            .map_err(backend)?;
        Ok(true)
    }

    async fn record_event(
        &self,
        tenant_id: &str,
        field: &str,
        value: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // A repeat of the same change is already kept.
        self.put_if_absent(to_item(&RawEventItem::new(tenant_id, field, value, received_at)))
            .await
            .map(|_| ())
    }

    async fn wamid_erased(&self, tenant_id: &str, wamid: &str) -> Result<bool, StoreError> {
        let (pk, sk) = tombstone_key(tenant_id, wamid);
        self.exists(pk, &sk).await
    }
}
