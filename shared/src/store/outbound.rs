//! Messages we send: creation with idempotency keys, the sender's claim on a message, the
//! moment Meta accepts one (its wamid), failures; and the pacing every sender shares (the
//! per-number send schedule and the per-recipient pair rate).

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::StoreError;
use super::dynamo::{
    Cancelled, DynamoStore, ItemKey, PageQuery, av, backend, condition_failed, from_item, key, n, put_always, s,
    to_item, tx_check, tx_put, tx_update,
};
use super::items::{
    AuditItem, ContactItem, ConversationTouch, IdempotencyItem, MessageItem, ParkedStatusItem, ReferenceItem,
    StatusChange, TombstoneItem, WamidPointerItem, schedule_next_free,
};
use super::keys::*;
use super::ports::{
    Claim, CreateOutcome, IdempotencyRecord, InboundStore, MessageStore, OutboundStore, Recipient, SendPacingStore,
    StatusWrite,
};
use crate::audit::AuditEntry;
use crate::message::{MessageError, MessageRecord, MessageStatus};
use crate::sending::{SendSchedule, SlotDecision, SlotGrant, book_slots, schedule_clock};

/// The contact attribute holding its recipient queue: the ids of its queued outbound messages
/// (a string set; ids sort by acceptance time).
const RECIPIENT_QUEUE: &str = "queued_ids";

/// One message id as a string set, for `ADD`/`DELETE` on the recipient queue.
fn id_set(message_id: &str) -> AttributeValue {
    AttributeValue::Ss(vec![message_id.to_owned()])
}

/// A reference to `pk`/`sk` in the contact's partition, so erasure finds the item.
pub(crate) fn reference(table: &str, tenant_id: &str, contact_id: &str, pk: &str, sk: &str) -> TransactWriteItem {
    put_always(table, to_item(&ReferenceItem::new(tenant_id, contact_id, pk, sk)))
}

/// How [`DynamoStore::store_wamid`] writes the message.
pub(crate) enum WamidWrite<'a> {
    WithSent(&'a StatusWrite),
    Alone,
    Adopted,
}

/// What a refused claim found in the message item (`None`: no such message). A lease carrying
/// our own `token` is ours: the claim was applied and its answer lost (a reset, a timeout), and
/// the SDK's retry of the same request was refused by the write it made itself. Taking it for
/// someone else's would leave the message waiting for its own lease, then end it `unknown`
/// though Meta never saw it.
fn claim_refused(old: Option<super::Item>, now_ms: i64, token: &str) -> Result<Claim, StoreError> {
    let Some(old) = old else { return Ok(Claim::Finished) };
    if old.get("lease_token").and_then(|v| v.as_s().ok()).map(String::as_str) == Some(token) {
        let message = from_item::<MessageItem>(old)?.message;
        return Ok(if message.status == MessageStatus::Queued {
            Claim::Claimed(Box::new(message))
        } else {
            Claim::Finished
        });
    }
    let lease = old
        .get("lease_until_ms")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let message = from_item::<MessageItem>(old)?.message;
    Ok(match lease {
        _ if message.status != MessageStatus::Queued => Claim::Finished,
        Some(until_ms) if until_ms >= now_ms => Claim::Held { until_ms },
        Some(lease_until_ms) => Claim::Abandoned {
            message: Box::new(message),
            lease_until_ms,
        },
        // Released between our write and the read: try again shortly.
        None => Claim::Held { until_ms: now_ms },
    })
}

impl DynamoStore {
    /// The update that ends a message unsent (`failed`, `rejected`, `unknown`): the status, its
    /// time and error; the lease and the outbox entry gone. Callers add their condition.
    fn end_unsent(
        &self,
        tenant_id: &str,
        message_id: &str,
        status: MessageStatus,
        error: &MessageError,
        at: DateTime<Utc>,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(message_pk(tenant_id, message_id), MESSAGE_SK)))
            .update_expression(
                "SET #status = :s, status_rank = :r, status_at.#st = :at, #error = :e REMOVE lease_until_ms, GSI6PK, GSI6SK",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#st", status.as_str())
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":s", s(status.as_str()))
            .expression_attribute_values(":r", n(status.rank()))
            .expression_attribute_values(":at", av(&at))
            .expression_attribute_values(":e", av(error))
    }

    /// The unexpired record of an idempotency key.
    async fn idempotency_record(
        &self,
        tenant_id: &str,
        key_hash: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let item: Option<IdempotencyItem> = self.get(idempotency_pk(tenant_id, key_hash), IDEMPOTENCY_SK).await?;
        // TTL deletion lags: an expired record is treated as absent.
        Ok(item
            .map(|i| i.record)
            .filter(|r| r.expires_at >= Utc::now().timestamp()))
    }

    /// Stores an accepted send's wamid on the message with its pointer (and the contact's
    /// reference to it): with the `sent` status (then only if the message has not moved past it,
    /// by the same rule as every status), alone, or adopted from a status webhook.
    pub(crate) async fn store_wamid(
        &self,
        tenant_id: &str,
        message_id: &str,
        contact_id: &str,
        wamid: &str,
        write: WamidWrite<'_>,
    ) -> Result<Result<(), Cancelled>, StoreError> {
        let update = Update::builder()
            .table_name(self.table())
            .set_key(Some(key(message_pk(tenant_id, message_id), MESSAGE_SK)));
        let update = match write {
            // The sender's lease stays until a status moves the message past `queued`: taking
            // it away now would let another sender claim a message Meta already has.
            WamidWrite::Adopted => update
                .update_expression("SET wamid = :w")
                .condition_expression("attribute_not_exists(wamid) AND direction = :out AND status_rank < :sent")
                .expression_attribute_values(":w", s(wamid))
                .expression_attribute_values(":out", s("outbound"))
                .expression_attribute_values(":sent", n(MessageStatus::Sent.rank())),
            WamidWrite::WithSent(sent) => {
                let mut change = StatusChange::of(sent);
                change.sets.push("wamid = :w");
                change.values.insert(":w".into(), s(wamid));
                update
                    .update_expression(change.expression(&["lease_until_ms"]))
                    .condition_expression(change.condition)
                    .set_expression_attribute_names(Some(change.names))
                    .set_expression_attribute_values(Some(change.values))
            }
            WamidWrite::Alone => update
                .update_expression("SET wamid = :w REMOVE lease_until_ms")
                .condition_expression("attribute_exists(PK)")
                .expression_attribute_values(":w", s(wamid)),
        };
        let pointer = WamidPointerItem::new(tenant_id, wamid, message_id);
        let pointer_pk = pointer.pk.clone();
        self.transact(vec![
            tx_update(update.build().expect("update is complete")),
            put_always(self.table(), to_item(&pointer)),
            reference(self.table(), tenant_id, contact_id, &pointer_pk, WAMID_SK),
        ])
        .await
    }
}

impl OutboundStore for DynamoStore {
    async fn create_message(&self, message: &MessageRecord) -> Result<(), StoreError> {
        match self.create_message_once(message, None, None).await? {
            CreateOutcome::Created => Ok(()),
            CreateOutcome::Replay(_) => Err(StoreError::Conflict("message id exists".into())),
        }
    }

    async fn create_message_once(
        &self,
        message: &MessageRecord,
        idempotency: Option<&IdempotencyRecord>,
        audit: Option<&AuditEntry>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut items = Vec::new();
        if let Some(record) = idempotency {
            let item = IdempotencyItem::new(record);
            let pk = item.pk.clone();
            // An expired record (TTL not yet applied) does not block a new request.
            items.push(tx_put(
                Put::builder()
                    .table_name(self.table())
                    .set_item(Some(to_item(&item)))
                    .condition_expression("attribute_not_exists(PK) OR expires_at < :now")
                    .expression_attribute_values(":now", n(Utc::now().timestamp()))
                    .build()
                    .expect("put is complete"),
            ));
            items.push(reference(
                self.table(),
                &record.tenant_id,
                &record.contact_id,
                &pk,
                IDEMPOTENCY_SK,
            ));
        }
        items.push(tx_put(
            Put::builder()
                .table_name(self.table())
                .set_item(Some(to_item(&MessageItem::new(message))))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .expect("put is complete"),
        ));
        // The contact must still exist (an erasure that already swept its partition would leave
        // the message's conversation behind); a queued message also takes its place in the
        // recipient's queue (per-recipient order) with the same update.
        let queued = message.status == MessageStatus::Queued;
        let contact_key = key(contact_pk(&message.tenant_id, &message.contact_id), PROFILE_SK);
        let conversation_number = message.conversation_number();
        let contact_item = (queued || conversation_number.is_some()).then(|| {
            items.push(if queued {
                tx_update(
                    Update::builder()
                        .table_name(self.table())
                        .set_key(Some(contact_key))
                        .update_expression(format!("ADD {RECIPIENT_QUEUE} :m"))
                        .condition_expression("attribute_exists(PK)")
                        .expression_attribute_values(":m", id_set(&message.message_id))
                        .build()
                        .expect("update is complete"),
                )
            } else {
                tx_check(
                    ConditionCheck::builder()
                        .table_name(self.table())
                        .set_key(Some(contact_key))
                        .condition_expression("attribute_exists(PK)")
                        .build()
                        .expect("check is complete"),
                )
            });
            items.len() - 1
        });
        // The conversation moves with the message.
        if let Some(number) = conversation_number {
            let touch = ConversationTouch::outbound(message, number);
            items.push(tx_update(touch.into_update(self.table(), message, number)));
        }
        // The entry rides in the same transaction: a request saved by one round trip, and a
        // replayed request (the key's condition fails) leaves no second entry.
        if let Some(entry) = audit {
            items.push(put_always(self.table(), to_item(&AuditItem::new(entry))));
        }
        match self.transact(items).await? {
            Ok(()) => Ok(CreateOutcome::Created),
            Err(c) if contact_item.is_some_and(|i| c.failed(i)) => Err(StoreError::NotFound),
            Err(c) => match idempotency {
                Some(record) if c.failed(0) => {
                    let existing = self
                        .idempotency_record(&record.tenant_id, &record.key_hash)
                        .await?
                        .ok_or_else(|| StoreError::Backend("idempotency record vanished".into()))?;
                    Ok(CreateOutcome::Replay(Box::new(existing)))
                }
                _ if c.any_failed() => Err(StoreError::Conflict("message id exists".into())),
                _ => Err(c.unexplained()),
            },
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
    ) -> Result<Claim, StoreError> {
        let now_ms = now.timestamp_millis();
        // This claim's own mark (see `claim_refused`).
        let token = crate::ids::new_id();
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(message_pk(tenant_id, message_id), MESSAGE_SK)))
            // `touched_ms`: the send sweeper leaves a message alone while its job is alive.
            .update_expression("SET lease_until_ms = :until, touched_ms = :now, lease_token = :token")
            // A lease is given back when its holder did not call Meta: one still present is
            // held, or was abandoned mid-send (the old item tells which).
            .condition_expression("attribute_exists(PK) AND #status = :queued AND attribute_not_exists(lease_until_ms)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":until", n(now_ms + lease_ms))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":token", s(&token))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Claim::Claimed(Box::new(
                from_item::<MessageItem>(out.attributes.unwrap_or_default())?.message,
            ))),
            Err(err) if condition_failed(&err) => {
                let old = err.as_service_error().and_then(|e| match e {
                    UpdateItemError::ConditionalCheckFailedException(c) => c.item().cloned(),
                    _ => None,
                });
                let old = match old {
                    Some(item) => Some(item),
                    // Some endpoints omit the old item: read it.
                    None => self.get_item(message_pk(tenant_id, message_id), MESSAGE_SK).await?,
                };
                claim_refused(old, now_ms, &token)
            }
            Err(err) => Err(backend(err)),
        }
    }

    async fn stale_queued(
        &self,
        tenant_id: &str,
        accepted_before: DateTime<Utc>,
        untouched_since: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        // Every outbox shard at once (the sweep runs every 5 minutes; the merged list is sorted
        // below, so the oldest lost job is queued first whichever shard holds it).
        let floor = crate::privacy::id_floor(accepted_before);
        let shards = tenant_outbox_gsi6pks(tenant_id).into_iter().map(|pk| {
            let floor = floor.clone();
            async move {
                let outbox = PageQuery::index(GSI6, GSI6_PK, GSI6_SK, pk)
                    .below(floor)
                    .project(&[PK, SK]);
                self.query_all(&outbox).await
            }
        });
        let keys: Vec<_> = futures::future::try_join_all(shards)
            .await?
            .iter()
            .flatten()
            .filter_map(ItemKey::of)
            .map(|k| key(k.pk, k.sk))
            .collect();
        let since_ms = untouched_since.timestamp_millis();
        let mut stale = Vec::new();
        for item in self.batch_get(keys).await? {
            let touched = item
                .get("touched_ms")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok());
            let message = from_item::<MessageItem>(item)?.message;
            if message.status == MessageStatus::Queued && touched.is_none_or(|t| t < since_ms) {
                stale.push(message.message_id);
            }
        }
        stale.sort();
        Ok(stale)
    }

    async fn mark_unknown(
        &self,
        tenant_id: &str,
        message_id: &str,
        lease_until_ms: i64,
        error: &MessageError,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .end_unsent(tenant_id, message_id, MessageStatus::Unknown, error, at)
            .condition_expression("#status = :queued AND lease_until_ms = :lease")
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":lease", n(lease_until_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if condition_failed(&err) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }

    async fn release_claim(&self, tenant_id: &str, message_id: &str) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(message_pk(tenant_id, message_id), MESSAGE_SK)))
            .update_expression("REMOVE lease_until_ms")
            .condition_expression("attribute_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Ok(()),
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
            .store_wamid(tenant_id, message_id, contact_id, wamid, WamidWrite::WithSent(&sent))
            .await?
        {
            Ok(()) => {}
            Err(c) if c.any_failed() => {
                match self
                    .store_wamid(tenant_id, message_id, contact_id, wamid, WamidWrite::Alone)
                    .await?
                {
                    Ok(()) => {}
                    Err(c) => {
                        if self.get_message(tenant_id, message_id).await?.is_none() {
                            return self.forget_erased_send(tenant_id, wamid, at).await;
                        }
                        return Err(c.unexplained());
                    }
                }
                self.apply_status(tenant_id, &sent).await?;
            }
            Err(c) => return Err(c.unexplained()),
        }
        // Statuses that raced ahead of this write were parked under the wamid: apply them.
        let parked = PageQuery::partition(wamid_pk(tenant_id, wamid)).prefixed(PENDING_STATUS_PREFIX);
        for item in self.query_all(&parked).await? {
            let parked: ParkedStatusItem = from_item(item)?;
            self.apply_status(tenant_id, &parked.into_write()).await?;
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
            .end_unsent(tenant_id, message_id, status, error, at)
            .condition_expression("attribute_exists(PK) AND status_rank < :r")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Ok(()),
            Err(err) => Err(backend(err)),
        }
    }
}

impl DynamoStore {
    /// The message was erased while Meta had it (between Graph's answer and this write): its
    /// wamid was never stored, so the erasure could not tombstone it. Tombstone it now, so
    /// Meta's statuses for it are dropped rather than parked, and delete any that were parked
    /// meanwhile.
    async fn forget_erased_send(&self, tenant_id: &str, wamid: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.put_if_absent(to_item(&TombstoneItem::new(tenant_id, wamid, at)))
            .await?;
        let parked = PageQuery::partition(wamid_pk(tenant_id, wamid)).prefixed(PENDING_STATUS_PREFIX);
        for item in self.query_all(&parked).await? {
            let Some(k) = ItemKey::of(&item) else { continue };
            self.client()
                .delete_item()
                .table_name(self.table())
                .set_key(Some(key(k.pk, k.sk)))
                .send()
                .await
                .map_err(backend)?;
        }
        Ok(())
    }
}

impl SendPacingStore for DynamoStore {
    async fn take_send_slots(
        &self,
        tenant_id: &str,
        phone_number_id: &str,
        now_us: i64,
        count: u32,
        schedule: SendSchedule,
    ) -> Result<SlotDecision, StoreError> {
        // Busy schedule (the common case under load): one conditional update that appends the
        // slots after the next free one. An idle or unused schedule restarts at now with a
        // second conditional write; a lost race between them just goes round again. The stored
        // slot is schedule time (`sending::schedule_clock`), so it is compared with now on
        // that clock.
        let now = schedule_clock(now_us);
        let span = i64::from(count) * schedule.interval_us;
        let expires_at = now_us / 1_000_000 + 3_600;
        for _ in 0..4 {
            let appended = self
                .client()
                .update_item()
                .table_name(self.table())
                .set_key(Some(key(
                    send_schedule_pk(tenant_id, phone_number_id),
                    SEND_SCHEDULE_SK,
                )))
                .update_expression("SET next_free_us = next_free_us + :span, expires_at = :exp")
                .condition_expression("next_free_us BETWEEN :now AND :latest")
                .expression_attribute_values(":span", n(span))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":latest", n(now + schedule.horizon_us))
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
                            first_slot_us: next_free_us - span,
                            count,
                            interval_us: schedule.interval_us,
                        },
                        next_free_us,
                    });
                }
                Err(err) if condition_failed(&err) => {
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
                SlotDecision::Grant { .. } if current.is_some_and(|c| c >= now) => {
                    // Moved back into range since: append again.
                    continue;
                }
                grant @ SlotDecision::Grant { next_free_us, .. } => {
                    let restarted = self
                        .client()
                        .update_item()
                        .table_name(self.table())
                        .set_key(Some(key(
                            send_schedule_pk(tenant_id, phone_number_id),
                            SEND_SCHEDULE_SK,
                        )))
                        .update_expression("SET next_free_us = :next, expires_at = :exp")
                        .condition_expression("attribute_not_exists(next_free_us) OR next_free_us < :now")
                        .expression_attribute_values(":next", n(next_free_us))
                        .expression_attribute_values(":now", n(now))
                        .expression_attribute_values(":exp", n(expires_at))
                        .send()
                        .await;
                    match restarted {
                        Ok(_) => return Ok(grant),
                        Err(err) if condition_failed(&err) => continue,
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

    async fn recipient(&self, tenant_id: &str, contact_id: &str) -> Result<Option<Recipient>, StoreError> {
        let Some(item) = self.get_item(contact_pk(tenant_id, contact_id), PROFILE_SK).await? else {
            return Ok(None);
        };
        let mut queue = item
            .get(RECIPIENT_QUEUE)
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        queue.sort();
        let contact = from_item::<ContactItem>(item)?.contact;
        Ok(Some(Recipient { contact, queue }))
    }

    async fn claim_recipient(
        &self,
        tenant_id: &str,
        contact_id: &str,
        message_id: &str,
        now: DateTime<Utc>,
        interval_ms: i64,
    ) -> Result<bool, StoreError> {
        let now_ms = now.timestamp_millis();
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(contact_pk(tenant_id, contact_id), PROFILE_SK)))
            .update_expression(format!("SET last_outbound_ms = :now DELETE {RECIPIENT_QUEUE} :m"))
            .condition_expression(
                "attribute_exists(PK) AND (attribute_not_exists(last_outbound_ms) OR last_outbound_ms <= :before)",
            )
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":before", n(now_ms - interval_ms))
            .expression_attribute_values(":m", id_set(message_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if condition_failed(&err) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }

    async fn return_to_recipient(&self, tenant_id: &str, contact_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.recipient_queue_change(tenant_id, contact_id, message_id, "ADD")
            .await
    }

    async fn leave_recipient(&self, tenant_id: &str, contact_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.recipient_queue_change(tenant_id, contact_id, message_id, "DELETE")
            .await
    }
}

impl DynamoStore {
    /// `ADD` or `DELETE` one message id on the recipient's queue, if the contact still exists.
    async fn recipient_queue_change(
        &self,
        tenant_id: &str,
        contact_id: &str,
        message_id: &str,
        action: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(contact_pk(tenant_id, contact_id), PROFILE_SK)))
            .update_expression(format!("{action} {RECIPIENT_QUEUE} :m"))
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":m", id_set(message_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Ok(()),
            Err(err) => Err(backend(err)),
        }
    }
}
