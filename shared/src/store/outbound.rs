//! Storage for messages we send: creation with idempotency keys, the sender's claim on a
//! message, the moment Meta accepts one (its wamid), failures, the per-number send limiter
//! and the per-recipient pacing.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dynamo::{backend, from_item, to_item};
use super::inbound::{InboundStore, MessageItem, StatusChange, StatusWrite, cancellation_codes};
use super::keys::*;
use super::{DynamoStore, StoreError};
use crate::message::{MessageError, MessageRecord, MessageStatus};
use crate::secret::Secret;
use crate::sending::{SendSchedule, SlotDecision, SlotGrant, book_slots};

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

pub trait OutboundStore: Send + Sync {
    /// Stores a new message; `Conflict` when the id exists.
    fn create_message(&self, message: &MessageRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a new message together with its idempotency record (one transaction); when the
    /// key was used before, nothing is written and the earlier record is returned.
    fn create_message_once(
        &self,
        message: &MessageRecord,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    /// The unexpired record of an idempotency key (by its hash).
    fn idempotency_lookup(
        &self,
        tenant_id: &str,
        key_hash: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Takes the sender's lease on a `queued` message (`None` when it is not queued or another
    /// sender holds an unexpired lease); returns the message.
    fn claim_for_send(
        &self,
        tenant_id: &str,
        message_id: &str,
        now: DateTime<Utc>,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Option<MessageRecord>, StoreError>> + Send;

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

    /// Flags (or clears) the tenant's token as rejected by Meta.
    fn set_token_invalid(&self, tenant_id: &str, invalid: bool) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces the tenant's Graph token and clears the invalid flag.
    fn replace_graph_token(
        &self,
        tenant_id: &str,
        token: &Secret,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Books `count` consecutive send slots on the phone number's schedule, shared by every
    /// sender (see [`crate::sending::book_slots`]): a grant of slots due from now on, or when
    /// to ask again if the schedule is booked beyond its horizon.
    fn take_send_slots(
        &self,
        tenant_id: &str,
        phone_number_id: &str,
        now_us: i64,
        count: u32,
        schedule: SendSchedule,
    ) -> impl Future<Output = Result<SlotDecision, StoreError>> + Send;

    /// Claims the recipient for one send if nothing was sent to them in the last
    /// `interval_ms` (Meta's pair rate); `false` when too soon.
    fn claim_recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
        now: DateTime<Utc>,
        interval_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn schedule_next_free(item: Option<&HashMap<String, AttributeValue>>) -> Option<i64> {
    item?.get("next_free_us")?.as_n().ok()?.parse().ok()
}

fn conditional_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

#[derive(Deserialize)]
struct Parked {
    status: MessageStatus,
    at: DateTime<Utc>,
    #[serde(default)]
    error: Option<MessageError>,
    #[serde(default)]
    pricing: Option<Value>,
    #[serde(default)]
    conversation: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct IdempotencyItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(flatten)]
    record: IdempotencyRecord,
}

/// A reference, inside a contact's partition, to an item of the contact stored elsewhere:
/// erasure follows these.
pub(crate) fn reference_put(table: &str, tenant_id: &str, contact_id: &str, pk: &str, sk: &str) -> TransactWriteItem {
    let item = HashMap::from([
        (PK.to_owned(), s(contact_pk(tenant_id, contact_id))),
        (SK.to_owned(), s(reference_sk(pk))),
        ("ref_sk".to_owned(), s(sk)),
    ]);
    TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .build()
                .expect("put is complete"),
        )
        .build()
}

impl OutboundStore for DynamoStore {
    async fn create_message(&self, message: &MessageRecord) -> Result<(), StoreError> {
        match self.create_message_once(message, None).await? {
            CreateOutcome::Created => Ok(()),
            CreateOutcome::Replay(_) => Err(StoreError::Conflict("message id exists".into())),
        }
    }

    async fn create_message_once(
        &self,
        message: &MessageRecord,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut items = Vec::new();
        if let Some(record) = idempotency {
            let pk = idempotency_pk(&record.tenant_id, &record.key_hash);
            let item = IdempotencyItem {
                pk: pk.clone(),
                sk: IDEMPOTENCY_SK.into(),
                record: record.clone(),
            };
            // An expired record (TTL not yet applied) does not block a new request.
            let put = Put::builder()
                .table_name(self.table())
                .set_item(Some(to_item(&item)))
                .condition_expression("attribute_not_exists(PK) OR expires_at < :now")
                .expression_attribute_values(":now", n(Utc::now().timestamp()))
                .build()
                .expect("put is complete");
            items.push(TransactWriteItem::builder().put(put).build());
            items.push(reference_put(
                self.table(),
                &record.tenant_id,
                &record.contact_id,
                &pk,
                IDEMPOTENCY_SK,
            ));
        }
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(to_item(&MessageItem::new(message))))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .expect("put is complete");
        items.push(TransactWriteItem::builder().put(put).build());
        match self
            .client()
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(err) => {
                let Some(codes) = cancellation_codes(&err) else {
                    return Err(backend(err));
                };
                let failed = |i: usize| codes.get(i).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed");
                match idempotency {
                    Some(record) if failed(0) => {
                        let existing = self
                            .idempotency_record(&record.tenant_id, &record.key_hash)
                            .await?
                            .ok_or_else(|| StoreError::Backend("idempotency record vanished".into()))?;
                        Ok(CreateOutcome::Replay(Box::new(existing)))
                    }
                    _ if codes.iter().any(|c| c.as_deref() == Some("ConditionalCheckFailed")) => {
                        Err(StoreError::Conflict("message id exists".into()))
                    }
                    _ => Err(StoreError::Backend(format!("transaction cancelled: {codes:?}"))),
                }
            }
        }
    }

    async fn idempotency_lookup(
        &self,
        tenant_id: &str,
        key_hash: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.idempotency_record(tenant_id, key_hash).await
    }

    async fn claim_for_send(
        &self,
        tenant_id: &str,
        message_id: &str,
        now: DateTime<Utc>,
        lease_ms: i64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let now_ms = now.timestamp_millis();
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(message_pk(tenant_id, message_id)))
            .key(SK, s(MESSAGE_SK))
            .update_expression("SET lease_until_ms = :until")
            .condition_expression(
                "attribute_exists(PK) AND #status = :queued AND (attribute_not_exists(lease_until_ms) OR lease_until_ms < :now)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":until", n(now_ms + lease_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(
                from_item::<MessageItem>(out.attributes.unwrap_or_default())?.message,
            )),
            Err(err) if conditional_failed(&err) => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }

    async fn release_claim(&self, tenant_id: &str, message_id: &str) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(message_pk(tenant_id, message_id)))
            .key(SK, s(MESSAGE_SK))
            .update_expression("REMOVE lease_until_ms")
            .condition_expression("attribute_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if conditional_failed(&err) => Ok(()),
            Err(err) => Err(backend(err)),
        }
    }

    async fn mark_sent(
        &self,
        tenant_id: &str,
        message_id: &str,
        contact_id: &str,
        wamid: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let pointer_pk = wamid_pk(tenant_id, wamid);
        let sent = StatusWrite {
            wamid: wamid.to_owned(),
            status: MessageStatus::Sent,
            at,
            error: None,
            pricing: None,
            conversation: None,
        };
        // Common case: one transaction stores the wamid, its pointer and the `sent` status
        // (nothing else can move a leased message whose pointer does not exist yet). Should the
        // message have moved anyway, the wamid is stored on its own and `sent` goes through the
        // ordered status path.
        match self
            .store_wamid(tenant_id, message_id, contact_id, wamid, Some(&sent))
            .await
        {
            Ok(()) => {}
            Err(err)
                if cancellation_codes(&err)
                    .is_some_and(|c| c.iter().any(|c| c.as_deref() == Some("ConditionalCheckFailed"))) =>
            {
                self.store_wamid(tenant_id, message_id, contact_id, wamid, None)
                    .await
                    .map_err(backend)?;
                self.apply_status(tenant_id, &sent).await?;
            }
            Err(err) => return Err(backend(err)),
        }
        // Statuses that raced ahead of this write were parked under the wamid: apply them.
        let parked = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
            .expression_attribute_values(":pk", s(pointer_pk))
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

    async fn finish_unsent(
        &self,
        tenant_id: &str,
        message_id: &str,
        status: MessageStatus,
        error: &MessageError,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(message_pk(tenant_id, message_id)))
            .key(SK, s(MESSAGE_SK))
            .update_expression(
                "SET #status = :s, status_rank = :r, status_at.#st = :at, #error = :e REMOVE lease_until_ms",
            )
            .condition_expression("attribute_exists(PK) AND status_rank < :r")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#st", status.as_str())
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":s", s(status.as_str()))
            .expression_attribute_values(":r", n(status.rank()))
            .expression_attribute_values(":at", serde_dynamo::to_attribute_value(at).expect("time serializes"))
            .expression_attribute_values(":e", serde_dynamo::to_attribute_value(error).expect("error serializes"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if conditional_failed(&err) => Ok(()),
            Err(err) => Err(backend(err)),
        }
    }

    async fn set_token_invalid(&self, tenant_id: &str, invalid: bool) -> Result<(), StoreError> {
        self.client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant_id)))
            .key(SK, s(TENANT_SK))
            .update_expression("SET token_invalid = :v")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":v", AttributeValue::Bool(invalid))
            .send()
            .await
            .map_err(|e| {
                if conditional_failed(&e) {
                    StoreError::NotFound
                } else {
                    backend(e)
                }
            })?;
        Ok(())
    }

    async fn replace_graph_token(&self, tenant_id: &str, token: &Secret) -> Result<(), StoreError> {
        let tenant = Update::builder()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant_id)))
            .key(SK, s(TENANT_SK))
            .update_expression("SET token_invalid = :f")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .build()
            .expect("update is complete");
        let item = HashMap::from([
            (PK.to_owned(), s(tenant_pk(tenant_id))),
            (SK.to_owned(), s(GRAPH_TOKEN_SK)),
            ("access_token".to_owned(), s(&self.seal_token(tenant_id, token).await?)),
        ]);
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(item))
            .build()
            .expect("put is complete");
        match self
            .client()
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(tenant).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if cancellation_codes(&err).is_some() => Err(StoreError::NotFound),
            Err(err) => Err(backend(err)),
        }
    }

    async fn take_send_slots(
        &self,
        tenant_id: &str,
        phone_number_id: &str,
        now_us: i64,
        count: u32,
        schedule: SendSchedule,
    ) -> Result<SlotDecision, StoreError> {
        // Busy schedule (the common case under load): one conditional update that appends the
        // slots after the next free one. An idle or unused schedule restarts at `now_us` with a
        // second conditional write; a lost race between them just goes round again.
        let span = i64::from(count) * schedule.interval_us;
        let expires_at = now_us / 1_000_000 + 3_600;
        for _ in 0..4 {
            let appended = self
                .client()
                .update_item()
                .table_name(self.table())
                .key(PK, s(send_schedule_pk(tenant_id, phone_number_id)))
                .key(SK, s(SEND_SCHEDULE_SK))
                .update_expression("SET next_free_us = next_free_us + :span, expires_at = :exp")
                .condition_expression("next_free_us BETWEEN :now AND :latest")
                .expression_attribute_values(":span", n(span))
                .expression_attribute_values(":now", n(now_us))
                .expression_attribute_values(":latest", n(now_us + schedule.horizon_us))
                .expression_attribute_values(":exp", n(expires_at))
                .return_values(ReturnValue::UpdatedNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            let current = match appended {
                Ok(out) => {
                    let next_free_us = schedule_next_free(out.attributes.as_ref())
                        .ok_or_else(|| StoreError::Backend("send schedule update returned no next_free_us".into()))?;
                    return Ok(SlotDecision::Grant {
                        grant: SlotGrant {
                            first_due_us: next_free_us - span,
                            count,
                            interval_us: schedule.interval_us,
                        },
                        next_free_us,
                    });
                }
                Err(err) if conditional_failed(&err) => {
                    let old = err.as_service_error().and_then(|e| match e {
                        UpdateItemError::ConditionalCheckFailedException(c) => c.item(),
                        _ => None,
                    });
                    schedule_next_free(old)
                }
                Err(err) => return Err(backend(err)),
            };
            match book_slots(current, now_us, count, schedule) {
                full @ SlotDecision::Full { .. } => return Ok(full),
                SlotDecision::Grant { .. } if current.is_some_and(|c| c >= now_us) => {
                    // Moved back into range since: append again.
                    continue;
                }
                grant @ SlotDecision::Grant { next_free_us, .. } => {
                    let restarted = self
                        .client()
                        .update_item()
                        .table_name(self.table())
                        .key(PK, s(send_schedule_pk(tenant_id, phone_number_id)))
                        .key(SK, s(SEND_SCHEDULE_SK))
                        .update_expression("SET next_free_us = :next, expires_at = :exp")
                        .condition_expression("attribute_not_exists(next_free_us) OR next_free_us < :now")
                        .expression_attribute_values(":next", n(next_free_us))
                        .expression_attribute_values(":now", n(now_us))
                        .expression_attribute_values(":exp", n(expires_at))
                        .send()
                        .await;
                    match restarted {
                        Ok(_) => return Ok(grant),
                        Err(err) if conditional_failed(&err) => continue,
                        Err(err) => return Err(backend(err)),
                    }
                }
            }
        }
        // Four lost races in a row: let the caller wait a little and ask again.
        Ok(SlotDecision::Full {
            retry_at_us: now_us + schedule.interval_us.max(1_000),
        })
    }

    async fn claim_recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
        now: DateTime<Utc>,
        interval_ms: i64,
    ) -> Result<bool, StoreError> {
        let now_ms = now.timestamp_millis();
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(contact_pk(tenant_id, contact_id)))
            .key(SK, s(PROFILE_SK))
            .update_expression("SET last_outbound_ms = :now")
            .condition_expression(
                "attribute_exists(PK) AND (attribute_not_exists(last_outbound_ms) OR last_outbound_ms <= :before)",
            )
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":before", n(now_ms - interval_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if conditional_failed(&err) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }
}

impl DynamoStore {
    pub async fn idempotency_record(
        &self,
        tenant_id: &str,
        key_hash: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(idempotency_pk(tenant_id, key_hash)))
            .key(SK, s(IDEMPOTENCY_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let record = out
            .item
            .map(from_item::<IdempotencyItem>)
            .transpose()?
            .map(|i| i.record);
        // TTL deletion lags: an expired record is treated as absent.
        Ok(record.filter(|r| r.expires_at >= Utc::now().timestamp()))
    }
}

impl DynamoStore {
    /// Stores an accepted send's wamid on the message with its pointer (and the contact's
    /// reference to it), plus the `sent` status when given (then only if the message has not
    /// moved past it, by the same rule as every status).
    async fn store_wamid(
        &self,
        tenant_id: &str,
        message_id: &str,
        contact_id: &str,
        wamid: &str,
        sent: Option<&StatusWrite>,
    ) -> Result<
        (),
        SdkError<
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
            aws_sdk_dynamodb::config::http::HttpResponse,
        >,
    > {
        let update = Update::builder()
            .table_name(self.table())
            .key(PK, s(message_pk(tenant_id, message_id)))
            .key(SK, s(MESSAGE_SK));
        let update = match sent {
            Some(sent) => {
                let mut change = StatusChange::of(sent);
                change.sets.push("wamid = :w");
                change.values.insert(":w".into(), s(wamid));
                update
                    .update_expression(format!("SET {} REMOVE lease_until_ms", change.sets.join(", ")))
                    .condition_expression(change.condition)
                    .set_expression_attribute_names(Some(change.names))
                    .set_expression_attribute_values(Some(change.values))
            }
            None => update
                .update_expression("SET wamid = :w REMOVE lease_until_ms")
                .condition_expression("attribute_exists(PK)")
                .expression_attribute_values(":w", s(wamid)),
        };
        let pointer_pk = wamid_pk(tenant_id, wamid);
        let pointer = HashMap::from([
            (PK.to_owned(), s(pointer_pk.clone())),
            (SK.to_owned(), s(WAMID_SK)),
            ("message_id".to_owned(), s(message_id)),
        ]);
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(pointer))
            .build()
            .expect("put is complete");
        self.client()
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .update(update.build().expect("update is complete"))
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(reference_put(
                self.table(),
                tenant_id,
                contact_id,
                &pointer_pk,
                WAMID_SK,
            ))
            .send()
            .await
            .map(|_| ())
    }
}
