//! Storage for what Meta tells us: inbound messages, contacts they create, delivery statuses,
//! media state and other account events. Every write is conditional so a redelivered webhook
//! changes nothing.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::contacts::ContactStore;
use super::dynamo::{backend, from_item, to_item};
use super::keys::*;
use super::{DynamoStore, StoreError};
use crate::contact::{ConsentChange, Contact};
use crate::message::{MediaRef, MessageError, MessageRecord, MessageStatus};

/// Identity a webhook gives for a customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerIdentity {
    /// E.164.
    pub phone: Option<String>,
    pub user_id: Option<String>,
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
}

#[derive(Debug, Clone, PartialEq)]
pub enum InboundOutcome {
    Stored,
    /// The same wamid was stored before; the stored message is returned.
    Duplicate(Box<MessageRecord>),
}

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

pub trait InboundStore: Send + Sync {
    /// The contact holding the phone (first) or the user id, and which of the two matched.
    fn match_contact(
        &self,
        tenant_id: &str,
        identity: &CustomerIdentity,
    ) -> impl Future<Output = Result<Option<(String, IdentityKey)>, StoreError>> + Send;

    fn find_contact_id(
        &self,
        tenant_id: &str,
        identity: &CustomerIdentity,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    fn get_contact(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<Option<Contact>, StoreError>> + Send;

    /// Creates a contact and its identity records; `Conflict` when the phone or user id
    /// already belongs to a contact of the tenant.
    fn create_contact(&self, contact: &Contact) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores the message (once per wamid) and updates the contact; `NotFound` when the
    /// contact no longer exists (erased meanwhile).
    fn record_inbound(&self, write: &InboundWrite) -> impl Future<Output = Result<InboundOutcome, StoreError>> + Send;

    fn apply_status(
        &self,
        tenant_id: &str,
        write: &StatusWrite,
    ) -> impl Future<Output = Result<StatusOutcome, StoreError>> + Send;

    /// Keeps a non-message webhook change (account, quality, template updates); idempotent
    /// on its content.
    fn record_event(
        &self,
        tenant_id: &str,
        field: &str,
        value: &Value,
        received_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What the media worker needs.
pub trait MediaStore: Send + Sync {
    fn get_message(
        &self,
        tenant_id: &str,
        message_id: &str,
    ) -> impl Future<Output = Result<Option<MessageRecord>, StoreError>> + Send;

    /// Sets the media state unless the media is already available (a late retry never
    /// downgrades it); `NotFound` when the message is gone.
    fn update_media(
        &self,
        tenant_id: &str,
        message_id: &str,
        media: &MediaRef,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Reading a contact's conversation.
pub trait ConversationStore: Send + Sync {
    /// Messages of one contact, newest first.
    fn conversation(
        &self,
        tenant_id: &str,
        contact_id: &str,
        limit: i32,
        start: Option<crate::cursor::Position>,
    ) -> impl Future<Output = Result<super::Page<MessageRecord>, StoreError>> + Send;
}

impl ConversationStore for DynamoStore {
    async fn conversation(
        &self,
        tenant_id: &str,
        contact_id: &str,
        limit: i32,
        start: Option<crate::cursor::Position>,
    ) -> Result<super::Page<MessageRecord>, StoreError> {
        let out = self
            .client()
            .query()
            .table_name(self.table())
            .index_name(GSI1)
            .key_condition_expression("GSI1PK = :pk")
            .expression_attribute_values(":pk", s(conversation_gsi1pk(tenant_id, contact_id)))
            .scan_index_forward(false)
            .limit(limit + 1)
            .set_exclusive_start_key(super::dynamo::start_key(tenant_id, start)?)
            .send()
            .await
            .map_err(backend)?;
        let (raw, next) = super::dynamo::trim_page(
            out.items.unwrap_or_default(),
            limit,
            out.last_evaluated_key,
            &[PK, SK, GSI1_PK, GSI1_SK],
        );
        let items = raw
            .into_iter()
            .map(|i| from_item::<MessageItem>(i).map(|m| m.message))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::Page { items, next })
    }
}

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
    media.is_some_and(|m| m.status == crate::message::MediaStatus::Available && m.s3_key.is_some())
}

impl MessageItem {
    pub fn new(message: &MessageRecord) -> Self {
        let (t, m) = (&message.tenant_id, &message.message_id);
        let stored = media_is_stored(message.media.as_ref());
        MessageItem {
            pk: message_pk(t, m),
            sk: MESSAGE_SK.into(),
            gsi1pk: conversation_gsi1pk(t, &message.contact_id),
            gsi1sk: m.clone(),
            gsi5pk: Some(tenant_messages_gsi5pk(t)),
            gsi5sk: Some(m.clone()),
            gsi6pk: stored.then(|| tenant_media_gsi6pk(t)),
            gsi6sk: stored.then(|| m.clone()),
            status_rank: message.status.rank(),
            message: message.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct IdentityItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub contact_id: String,
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

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn av<T: Serialize>(v: &T) -> AttributeValue {
    serde_dynamo::to_attribute_value(v).expect("value serializes")
}

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
            (":rank".to_owned(), AttributeValue::N(write.status.rank().to_string())),
            (":at".to_owned(), time(write.at)),
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
        values.insert(
            ":limit".into(),
            AttributeValue::N(write.status.moves_up_to_rank().to_string()),
        );
        let condition = "attribute_exists(PK) AND attribute_not_exists(status_at.#st) AND status_rank <= :limit";
        StatusChange {
            sets,
            names,
            values,
            condition,
        }
    }
}

fn time(at: DateTime<Utc>) -> AttributeValue {
    av(&at)
}

pub(crate) fn identity_put(table: &str, pk: String, contact_id: &str) -> TransactWriteItem {
    let item = to_item(&IdentityItem {
        pk,
        sk: IDENTITY_SK.into(),
        contact_id: contact_id.to_owned(),
    });
    TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .expect("put is complete"),
        )
        .build()
}

pub(crate) fn cancellation_codes(
    err: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, impl std::fmt::Debug>,
) -> Option<Vec<Option<String>>> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(c) => Some(
            c.cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

fn old_item_of_first_reason(
    err: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, impl std::fmt::Debug>,
) -> Option<HashMap<String, AttributeValue>> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(c) => c.cancellation_reasons().first()?.item().cloned(),
        _ => None,
    }
}

impl DynamoStore {
    async fn identity_lookup(&self, pk: String) -> Result<Option<String>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(pk))
            .key(SK, s(IDENTITY_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out
            .item
            .map(from_item::<IdentityItem>)
            .transpose()?
            .map(|i| i.contact_id))
    }

    fn contact_update(&self, write: &InboundWrite, with_time_condition: bool) -> TransactWriteItem {
        let m = &write.message;
        let ts_ms = m.timestamp.timestamp_millis();
        // Every contact write bumps the version, so an API edit based on an older read fails its
        // version check instead of overwriting what the webhook wrote.
        let mut sets = vec!["updated_at = :now".to_owned(), "version = version + :one".to_owned()];
        let mut values: HashMap<String, AttributeValue> = HashMap::new();
        values.insert(":now".into(), time(m.created_at));
        values.insert(":one".into(), AttributeValue::N("1".into()));
        if with_time_condition {
            sets.push("last_inbound_at = :ts".into());
            sets.push("last_inbound_ms = :ms".into());
            values.insert(":ts".into(), time(m.timestamp));
            values.insert(":ms".into(), AttributeValue::N(ts_ms.to_string()));
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
        let update = Update::builder()
            .table_name(self.table())
            .key(PK, s(contact_pk(&m.tenant_id, &m.contact_id)))
            .key(SK, s(PROFILE_SK))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("update is complete");
        TransactWriteItem::builder().update(update).build()
    }

    async fn try_record_inbound(
        &self,
        write: &InboundWrite,
        with_time_condition: bool,
    ) -> Result<Result<InboundOutcome, Vec<Option<String>>>, StoreError> {
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(to_item(&MessageItem::new(&write.message))))
            .condition_expression("attribute_not_exists(PK)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("put is complete");
        let mut tx = self
            .client()
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(self.contact_update(write, with_time_condition));
        if let Some(change) = write.consent.as_ref().filter(|_| with_time_condition) {
            let item = ConsentItem {
                pk: contact_pk(&write.message.tenant_id, &write.message.contact_id),
                sk: consent_history_sk(change.at.timestamp_millis(), &write.message.message_id),
                change: change.clone(),
            };
            tx = tx.transact_items(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(self.table())
                            .set_item(Some(to_item(&item)))
                            .build()
                            .expect("put is complete"),
                    )
                    .build(),
            );
        }
        match tx.send().await {
            Ok(_) => Ok(Ok(InboundOutcome::Stored)),
            Err(err) => {
                let Some(codes) = cancellation_codes(&err) else {
                    return Err(backend(err));
                };
                if codes.first().and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed") {
                    let existing = match old_item_of_first_reason(&err) {
                        Some(item) => from_item::<MessageItem>(item)?.message,
                        // Some endpoints omit the old item: read it.
                        None => self
                            .message(&write.message.tenant_id, &write.message.message_id)
                            .await?
                            .ok_or(StoreError::Backend("duplicate message vanished".into()))?,
                    };
                    return Ok(Ok(InboundOutcome::Duplicate(Box::new(existing))));
                }
                if codes.iter().any(|c| c.as_deref() == Some("ConditionalCheckFailed")) {
                    return Ok(Err(codes));
                }
                Err(StoreError::Backend(format!("transaction cancelled: {codes:?}")))
            }
        }
    }

    async fn message(&self, tenant_id: &str, message_id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(message_pk(tenant_id, message_id)))
            .key(SK, s(MESSAGE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item.map(from_item::<MessageItem>).transpose()?.map(|i| i.message))
    }

    async fn contact_exists(&self, tenant_id: &str, contact_id: &str) -> Result<bool, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(contact_pk(tenant_id, contact_id)))
            .key(SK, s(PROFILE_SK))
            .projection_expression("PK")
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item.is_some())
    }
}

impl InboundStore for DynamoStore {
    async fn match_contact(
        &self,
        tenant_id: &str,
        identity: &CustomerIdentity,
    ) -> Result<Option<(String, IdentityKey)>, StoreError> {
        if let Some(phone) = &identity.phone
            && let Some(id) = self.identity_lookup(phone_identity_pk(tenant_id, phone)).await?
        {
            return Ok(Some((id, IdentityKey::Phone(phone.clone()))));
        }
        if let Some(user_id) = &identity.user_id
            && let Some(id) = self.identity_lookup(user_identity_pk(tenant_id, user_id)).await?
        {
            return Ok(Some((id, IdentityKey::UserId(user_id.clone()))));
        }
        Ok(None)
    }

    async fn find_contact_id(
        &self,
        tenant_id: &str,
        identity: &CustomerIdentity,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.match_contact(tenant_id, identity).await?.map(|(id, _)| id))
    }

    async fn get_contact(&self, tenant_id: &str, contact_id: &str) -> Result<Option<Contact>, StoreError> {
        self.load_contact(tenant_id, contact_id).await
    }

    async fn create_contact(&self, contact: &Contact) -> Result<(), StoreError> {
        self.insert_contact(contact).await
    }

    async fn record_inbound(&self, write: &InboundWrite) -> Result<InboundOutcome, StoreError> {
        match self.try_record_inbound(write, true).await? {
            Ok(outcome) => Ok(outcome),
            Err(_) => {
                // The contact update's condition failed: the contact is gone, no longer holds the
                // identity it was matched by, or has seen a newer message. Only the last one
                // stores the message (without moving the contact's clock); the others are
                // `NotFound`, and the caller matches the sender again.
                if !self
                    .contact_exists(&write.message.tenant_id, &write.message.contact_id)
                    .await?
                {
                    return Err(StoreError::NotFound);
                }
                match self.try_record_inbound(write, false).await? {
                    Ok(outcome) => Ok(outcome),
                    Err(_) => Err(StoreError::NotFound),
                }
            }
        }
    }

    async fn apply_status(&self, tenant_id: &str, write: &StatusWrite) -> Result<StatusOutcome, StoreError> {
        let pointer = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(wamid_pk(tenant_id, &write.wamid)))
            .key(SK, s(WAMID_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let message_id = match pointer
            .item
            .and_then(|i| i.get("message_id").and_then(|v| v.as_s().ok()).cloned())
        {
            Some(id) => id,
            None => return self.park_status(tenant_id, write).await,
        };
        let status = write.status.as_str();
        let change = StatusChange::of(write);
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(message_pk(tenant_id, &message_id)))
            .key(SK, s(MESSAGE_SK))
            .update_expression(format!("SET {}", change.sets.join(", ")))
            .condition_expression(change.condition)
            .set_expression_attribute_names(Some(change.names))
            .set_expression_attribute_values(Some(change.values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(StatusOutcome::Applied),
            Err(err)
                if write.status == MessageStatus::Failed
                    && err
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(StatusOutcome::LateFailure)
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Behind the message's current status (or a repeat): keep only the history.
                let history = self
                    .client()
                    .update_item()
                    .table_name(self.table())
                    .key(PK, s(message_pk(tenant_id, &message_id)))
                    .key(SK, s(MESSAGE_SK))
                    .update_expression("SET status_at.#st = :at")
                    .condition_expression("attribute_exists(PK) AND attribute_not_exists(status_at.#st)")
                    .expression_attribute_names("#st", status)
                    .expression_attribute_values(":at", time(write.at))
                    .send()
                    .await;
                match history {
                    Ok(_) => Ok(StatusOutcome::HistoryOnly),
                    Err(err)
                        if err
                            .as_service_error()
                            .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                    {
                        Ok(StatusOutcome::Duplicate)
                    }
                    Err(err) => Err(backend(err)),
                }
            }
            Err(err) => Err(backend(err)),
        }
    }

    async fn record_event(
        &self,
        tenant_id: &str,
        field: &str,
        value: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(format!("{field}\n{value}").as_bytes()));
        let mut item: HashMap<String, AttributeValue> = HashMap::new();
        item.insert(PK.into(), s(events_pk(tenant_id)));
        item.insert(SK.into(), s(format!("EVENT#{}", &digest[..32])));
        item.insert("field".into(), s(field));
        item.insert("value".into(), av(value));
        item.insert("received_at".into(), time(received_at));
        // Raw events are diagnostics that may quote a customer (an unparsed message, a late
        // failure's recipient) without belonging to a contact erasure can find: they expire
        // within the month an erasure request may take (docs/privacy.md).
        let expires = (received_at + chrono::Duration::days(RAW_EVENT_TTL_DAYS)).timestamp();
        item.insert("expires_at".into(), AttributeValue::N(expires.to_string()));
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
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
                Ok(())
            }
            Err(err) => Err(backend(err)),
        }
    }
}

/// Days a raw webhook event is kept (DynamoDB TTL; 28 so TTL's lag stays within a month).
pub const RAW_EVENT_TTL_DAYS: i64 = 28;

impl DynamoStore {
    async fn park_status(&self, tenant_id: &str, write: &StatusWrite) -> Result<StatusOutcome, StoreError> {
        let mut item = to_item(&ParkedStatus {
            wamid: &write.wamid,
            status: write.status,
            at: write.at,
            error: write.error.as_ref(),
            pricing: write.pricing.as_ref(),
            conversation: write.conversation.as_ref(),
        });
        item.insert(PK.into(), s(wamid_pk(tenant_id, &write.wamid)));
        item.insert(SK.into(), s(pending_status_sk(write.status.as_str())));
        // Parked statuses of messages that never show up are not kept forever.
        let expires = (write.at + chrono::Duration::days(30)).timestamp();
        item.insert("expires_at".into(), AttributeValue::N(expires.to_string()));
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(StatusOutcome::Parked),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(StatusOutcome::Duplicate)
            }
            Err(err) => Err(backend(err)),
        }
    }
}

#[derive(Serialize)]
struct ParkedStatus<'a> {
    wamid: &'a str,
    status: MessageStatus,
    at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a MessageError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation: Option<&'a Value>,
}

impl MediaStore for DynamoStore {
    async fn get_message(&self, tenant_id: &str, message_id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.message(tenant_id, message_id).await
    }

    async fn update_media(&self, tenant_id: &str, message_id: &str, media: &MediaRef) -> Result<(), StoreError> {
        let mut update = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(message_pk(tenant_id, message_id)))
            .key(SK, s(MESSAGE_SK))
            // Never downgrade stored media, nor revive media that retention removed.
            .condition_expression("attribute_exists(PK) AND media.#st <> :available AND media.#st <> :expired")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":media", av(media))
            .expression_attribute_values(":available", s("available"))
            .expression_attribute_values(":expired", s("expired"));
        update = if media_is_stored(Some(media)) {
            // Stored objects enter the media index that media retention walks.
            update
                .update_expression("SET media = :media, GSI6PK = :g6pk, GSI6SK = :g6sk")
                .expression_attribute_values(":g6pk", s(tenant_media_gsi6pk(tenant_id)))
                .expression_attribute_values(":g6sk", s(message_id))
        } else {
            update.update_expression("SET media = :media")
        };
        let result = update.send().await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                match self.message(tenant_id, message_id).await? {
                    None => Err(StoreError::NotFound),
                    // Already available: a duplicate job; nothing to do.
                    Some(_) => Ok(()),
                }
            }
            Err(err) => Err(backend(err)),
        }
    }
}
