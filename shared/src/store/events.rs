//! The event log and the webhook endpoints' storage.
//!
//! Positions: each batch of a tenant's events is one transaction that moves the log's `HEAD`
//! from the value read to `head + k` (conditional) and puts the `k` events as one pack item
//! under `SEQ#<head+1>` (holding positions `head+1..head+k`) with their id records
//! (`attribute_not_exists`). Two writers racing for one tenant cannot both move the head from
//! the same value, so positions are gap-free and become visible in order; a redelivered stream
//! record fails its id record's condition and is dropped from the batch. A reader finds the
//! pack holding position `p` among the packs starting in `(p - EVENTS_PER_TRANSACTION, p]`.

use aws_sdk_dynamodb::types::{Put, ReturnValue, Update};
use chrono::{DateTime, Utc};

use super::dynamo::{
    DynamoStore, PageQuery, attr, av, backend, condition_failed, from_item, n, s, start_key, to_item, tx_put, tx_update,
};
use super::items::{DeliveryItem, EndpointItem, EndpointSecretItem, EventHeadItem, EventIdItem, EventPackItem};
use super::keys::*;
use super::ports::{EndpointOutcome, EventStore, WebhookStore};
use super::{Page, StoreError};
use crate::cursor::Position;
use crate::events::endpoint::{DeliveryAttempt, EndpointSecrets, MAX_ENDPOINTS_PER_TENANT, WebhookEndpoint};
use crate::events::{Event, EventDraft};
use crate::reports::counters::{CounterKey, Counting, Rules, deltas};
use crate::secret::Secret;

/// Events per transaction (and so per pack): the head update, the pack and one id record each,
/// within DynamoDB's 100 items (a pack of thin events stays far below the 400 KB item limit).
const EVENTS_PER_TRANSACTION: usize = 98;

/// DynamoDB's limit of items per transaction.
const TRANSACTION_ITEMS: usize = 100;

/// Most counter attributes one update adds: its expression (`#aN :aN` each) stays well within
/// DynamoDB's 4 KB per expression.
const ATTRIBUTES_PER_UPDATE: usize = 200;

/// Splits a batch into transactions: each holds the head update, the pack, one id record per
/// event and one update per counter item its events' facts touch, within [`TRANSACTION_ITEMS`],
/// and no update adds more than [`ATTRIBUTES_PER_UPDATE`] attributes.
fn transaction_chunks(drafts: &[EventDraft], tz: chrono_tz::Tz) -> Vec<&[EventDraft]> {
    use std::collections::{HashMap, HashSet};
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut touched: HashMap<CounterKey, HashSet<String>> = HashMap::new();
    for (i, draft) in drafts.iter().enumerate() {
        let mine = deltas(&draft.tally, &Rules::wall(tz));
        let new_keys = mine.keys().filter(|k| !touched.contains_key(*k)).count();
        let too_wide = mine.iter().any(|(k, adds)| {
            let held = touched.get(k);
            let added = adds.keys().filter(|a| held.is_none_or(|h| !h.contains(*a))).count();
            held.map_or(0, HashSet::len) + added > ATTRIBUTES_PER_UPDATE
        });
        let events = i - start + 1;
        if i > start
            && (events > EVENTS_PER_TRANSACTION
                || 2 + events + touched.len() + new_keys > TRANSACTION_ITEMS
                || too_wide)
        {
            chunks.push(&drafts[start..i]);
            start = i;
            touched.clear();
        }
        for (k, adds) in mine {
            touched.entry(k).or_default().extend(adds.into_keys());
        }
    }
    if start < drafts.len() {
        chunks.push(&drafts[start..]);
    }
    chunks
}

/// The lowest sort key a pack holding position `seq` can have.
fn lowest_pack_sk(seq: u64) -> String {
    event_seq_sk(seq.saturating_sub(EVENTS_PER_TRANSACTION as u64 - 1).max(1))
}

/// Rounds lost to concurrent writers of the same tenant before giving up (the stream batch is
/// retried by Lambda).
const HEAD_ROUNDS: u32 = 20;

/// A draft with its index in the transaction's batch.
type Indexed<'a> = (usize, &'a EventDraft);

impl DynamoStore {
    async fn record_chunk(
        &self,
        tenant_id: &str,
        chunk: &[EventDraft],
        expires_at: DateTime<Utc>,
        counting: &Counting,
    ) -> Result<Vec<Event>, StoreError> {
        let mut pending: Vec<&EventDraft> = chunk.iter().collect();
        let mut known = Vec::new();
        for round in 0..HEAD_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let head = self.event_head(tenant_id).await?;
            let events: Vec<Event> = pending
                .iter()
                .enumerate()
                .map(|(i, d)| Event::from_draft((*d).clone(), head + 1 + i as u64))
                .collect();
            let mut items = vec![
                self.head_update(tenant_id, head, head + events.len() as u64),
                self.put_new_item(super::items::event_pack_item(&events, expires_at)),
            ];
            for event in &events {
                items.push(self.put_new_item(to_item(&EventIdItem {
                    pk: event_id_pk(tenant_id, &event.id),
                    sk: EVENT_ID_SK.into(),
                    seq: event.seq,
                    expires_at: expires_at.timestamp(),
                })));
            }
            // The facts of exactly the drafts this transaction records (after the id records,
            // whose positions the cancellation reasons are read by).
            let facts = pending.iter().flat_map(|d| d.tally.iter());
            for (counter, adds) in deltas(facts, &counting.rules())
                .into_iter()
                .filter(|(_, a)| !a.is_empty())
            {
                items.push(self.counter_update(tenant_id, &counter, &adds, counting.expires_at));
            }
            let cancelled = match self.transact(items).await? {
                Ok(()) => {
                    known.extend(events);
                    pending.clear();
                    break;
                }
                Err(cancelled) => cancelled,
            };
            // Id records already there: recorded by an earlier delivery of the stream record.
            let (recorded_before, rest): (Vec<Indexed<'_>>, Vec<Indexed<'_>>) = pending
                .iter()
                .copied()
                .enumerate()
                .partition(|(k, _)| cancelled.failed(2 + k));
            if recorded_before.is_empty() && !cancelled.failed(0) {
                return Err(cancelled.unexplained());
            }
            for (_, draft) in recorded_before {
                if let Some(seq) = self.event_seq(tenant_id, &draft.id).await? {
                    known.push(Event::from_draft(draft.clone(), seq));
                }
            }
            pending = rest.into_iter().map(|(_, d)| d).collect();
            if round > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(round))).await;
            }
        }
        if !pending.is_empty() {
            return Err(StoreError::Backend("event log head contended too long".into()));
        }
        known.sort_by_key(|e| e.seq);
        Ok(known)
    }

    fn head_update(&self, tenant_id: &str, from: u64, to: u64) -> aws_sdk_dynamodb::types::TransactWriteItem {
        let condition = if from == 0 {
            "attribute_not_exists(seq)"
        } else {
            "seq = :from"
        };
        let mut update = Update::builder()
            .table_name(self.table())
            .key(PK, s(event_log_pk(tenant_id)))
            .key(SK, s(EVENT_LOG_HEAD_SK))
            .update_expression("SET seq = :to")
            .condition_expression(condition)
            .expression_attribute_values(":to", n(to));
        if from != 0 {
            update = update.expression_attribute_values(":from", n(from));
        }
        tx_update(update.build().expect("table, key and expression are set"))
    }

    fn put_new_item(&self, item: super::Item) -> aws_sdk_dynamodb::types::TransactWriteItem {
        tx_put(
            Put::builder()
                .table_name(self.table())
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .expect("table, item and condition are set"),
        )
    }
}

impl EventStore for DynamoStore {
    async fn record_events(
        &self,
        tenant_id: &str,
        drafts: &[EventDraft],
        expires_at: DateTime<Utc>,
        counting: &Counting,
    ) -> Result<Vec<Event>, StoreError> {
        let mut recorded = Vec::new();
        for chunk in transaction_chunks(drafts, counting.time_zone) {
            recorded.extend(self.record_chunk(tenant_id, chunk, expires_at, counting).await?);
        }
        Ok(recorded)
    }

    async fn events_after(
        &self,
        tenant_id: &str,
        after: u64,
        limit: i32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, StoreError> {
        let wanted = usize::try_from(limit.max(0)).unwrap_or_default();
        let mut events = Vec::new();
        let mut start = None;
        // Each pack holds at least one event: `limit + 1` packs always reach `limit` events
        // (the first may hold only positions up to `after`); DynamoDB's 1 MB page may cut it.
        while events.len() < wanted {
            let out = self
                .client()
                .query()
                .table_name(self.table())
                .key_condition_expression("PK = :pk AND SK >= :lowest")
                .expression_attribute_values(":pk", s(event_log_pk(tenant_id)))
                .expression_attribute_values(":lowest", s(lowest_pack_sk(after + 1)))
                .consistent_read(true)
                .limit(limit.saturating_add(1))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            for item in out.items.unwrap_or_default() {
                let pack = from_item::<EventPackItem>(item)?;
                if pack.expires_at > now.timestamp() {
                    events.extend(pack.into_events()?.into_iter().filter(|e| e.seq > after));
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        events.truncate(wanted);
        Ok(events)
    }

    async fn event_at(&self, tenant_id: &str, seq: u64) -> Result<Option<Event>, StoreError> {
        // The pack starting at or most recently before `seq`.
        let out = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("PK = :pk AND SK BETWEEN :lowest AND :seq")
            .expression_attribute_values(":pk", s(event_log_pk(tenant_id)))
            .expression_attribute_values(":lowest", s(lowest_pack_sk(seq)))
            .expression_attribute_values(":seq", s(event_seq_sk(seq)))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(1)
            .send()
            .await
            .map_err(backend)?;
        let Some(item) = out.items.unwrap_or_default().into_iter().next() else {
            return Ok(None);
        };
        let pack = from_item::<EventPackItem>(item)?;
        Ok(pack.into_events()?.into_iter().find(|e| e.seq == seq))
    }

    async fn event_seq(&self, tenant_id: &str, event_id: &str) -> Result<Option<u64>, StoreError> {
        let item: Option<EventIdItem> = self.get(event_id_pk(tenant_id, event_id), EVENT_ID_SK).await?;
        Ok(item.map(|i| i.seq))
    }

    async fn event_head(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let head: Option<EventHeadItem> = self.get(event_log_pk(tenant_id), EVENT_LOG_HEAD_SK).await?;
        Ok(head.map_or(0, |h| h.seq))
    }
}

impl WebhookStore for DynamoStore {
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint, secret: &Secret) -> Result<(), StoreError> {
        if self.endpoints_of(&endpoint.tenant_id).await?.len() >= MAX_ENDPOINTS_PER_TENANT {
            return Err(StoreError::Conflict(format!(
                "a tenant may have at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints"
            )));
        }
        let secret_item = EndpointSecretItem {
            pk: webhook_endpoints_pk(&endpoint.tenant_id),
            sk: webhook_secret_sk(&endpoint.endpoint_id),
            secret: secret.expose().to_owned(),
            previous_secret: None,
            previous_until: None,
        };
        let items = vec![
            self.put_new_item(to_item(&EndpointItem::new(endpoint))),
            self.put_new_item(to_item(&secret_item)),
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.any_failed() => Err(StoreError::Conflict("endpoint id already exists".into())),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn get_endpoint(&self, tenant_id: &str, endpoint_id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        let item: Option<EndpointItem> = self
            .get(webhook_endpoints_pk(tenant_id), &webhook_endpoint_sk(endpoint_id))
            .await?;
        Ok(item.map(|i| i.endpoint))
    }

    async fn endpoints_of(&self, tenant_id: &str) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let query =
            super::dynamo::PageQuery::partition(webhook_endpoints_pk(tenant_id)).prefixed(WEBHOOK_ENDPOINT_PREFIX);
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|i| from_item::<EndpointItem>(i).map(|i| i.endpoint))
            .collect()
    }

    async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(webhook_endpoints_pk(&endpoint.tenant_id)))
            .key(SK, s(webhook_endpoint_sk(&endpoint.endpoint_id)))
            .update_expression(
                "SET #url = :url, description = :description, event_types = :types, enabled = :enabled, \
                 include_bodies = :bodies, disabled_reason = :reason, failing_since = :failing, \
                 updated_at = :updated, version = :version",
            )
            .condition_expression("attribute_exists(PK) AND version = :previous")
            .expression_attribute_names("#url", "url")
            .expression_attribute_values(":url", s(&endpoint.url))
            .expression_attribute_values(":description", av(&endpoint.description))
            .expression_attribute_values(":types", av(&endpoint.event_types))
            .expression_attribute_values(":enabled", av(&endpoint.enabled))
            .expression_attribute_values(":bodies", av(&endpoint.include_bodies))
            .expression_attribute_values(":reason", av(&endpoint.disabled_reason))
            .expression_attribute_values(":failing", av(&endpoint.failing_since))
            .expression_attribute_values(":updated", av(&endpoint.updated_at))
            .expression_attribute_values(":version", n(endpoint.version))
            .expression_attribute_values(":previous", n(endpoint.version.saturating_sub(1)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => {
                match self.get_endpoint(&endpoint.tenant_id, &endpoint.endpoint_id).await? {
                    None => Err(StoreError::NotFound),
                    Some(_) => Err(StoreError::VersionMismatch),
                }
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete_endpoint(&self, tenant_id: &str, endpoint_id: &str) -> Result<bool, StoreError> {
        let out = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key(PK, s(webhook_endpoints_pk(tenant_id)))
            .key(SK, s(webhook_endpoint_sk(endpoint_id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(backend)?;
        self.client()
            .delete_item()
            .table_name(self.table())
            .key(PK, s(webhook_endpoints_pk(tenant_id)))
            .key(SK, s(webhook_secret_sk(endpoint_id)))
            .send()
            .await
            .map_err(backend)?;
        Ok(out.attributes.is_some())
    }

    async fn endpoint_secrets(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<EndpointSecrets>, StoreError> {
        let item: Option<EndpointSecretItem> = self
            .get(webhook_endpoints_pk(tenant_id), &webhook_secret_sk(endpoint_id))
            .await?;
        Ok(item.map(|i| EndpointSecrets {
            current: Secret::new(i.secret),
            previous: i
                .previous_secret
                .zip(i.previous_until)
                .map(|(s, until)| (Secret::new(s), until)),
        }))
    }

    async fn rotate_secret(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        secret: &Secret,
        previous_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(webhook_endpoints_pk(tenant_id)))
            .key(SK, s(webhook_secret_sk(endpoint_id)))
            .update_expression("SET previous_secret = secret, secret = :secret, previous_until = :until")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":secret", s(secret.expose()))
            .expression_attribute_values(":until", av(&previous_until))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Err(StoreError::NotFound),
            Err(e) => Err(backend(e)),
        }
    }

    async fn endpoint_outcome(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        outcome: &EndpointOutcome,
    ) -> Result<(), StoreError> {
        let update = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(webhook_endpoints_pk(tenant_id)))
            .key(SK, s(webhook_endpoint_sk(endpoint_id)));
        let update = match outcome {
            EndpointOutcome::Succeeded => update
                .update_expression("REMOVE failing_since")
                .condition_expression("attribute_exists(PK) AND attribute_type(failing_since, :s)")
                .expression_attribute_values(":s", s("S")),
            EndpointOutcome::Failed(at) => update
                .update_expression("SET failing_since = :at")
                .condition_expression(
                    "attribute_exists(PK) AND (attribute_not_exists(failing_since) OR attribute_type(failing_since, :null))",
                )
                .expression_attribute_values(":at", av(at))
                .expression_attribute_values(":null", s("NULL")),
            EndpointOutcome::Disable(reason) => update
                .update_expression("SET enabled = :false, disabled_reason = :reason, updated_at = :now ADD version :one")
                .condition_expression("attribute_exists(PK) AND enabled = :true")
                .expression_attribute_values(":false", av(&false))
                .expression_attribute_values(":true", av(&true))
                .expression_attribute_values(":reason", s(reason))
                .expression_attribute_values(":now", av(&Utc::now()))
                .expression_attribute_values(":one", n(1)),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn record_delivery(&self, attempt: &DeliveryAttempt) -> Result<(), StoreError> {
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&DeliveryItem::new(attempt))))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<DeliveryAttempt>, StoreError> {
        // The log is spread over shards (and the key of earlier releases): each is read newest
        // first below the cursor's attempt id, at most a page each, and the pages merged. The
        // cursor is the last attempt id listed, named in the first shard's partition.
        let limit = limit.max(1);
        let below = match start {
            Some(position) => {
                let start = start_key(tenant_id, Some(position))?.unwrap_or_default();
                Some(
                    attr(&start, SK)
                        .ok_or_else(|| StoreError::Corrupt("delivery cursor without a position".into()))?
                        .to_owned(),
                )
            }
            None => None,
        };
        let partitions = webhook_deliveries_pks(tenant_id, endpoint_id);
        let reads = partitions.iter().map(|pk| {
            // As before the log was sharded: an attempt may show a moment after it is logged.
            let mut query = PageQuery {
                consistent: false,
                ..PageQuery::partition(pk.clone()).newest_first().limit(limit + 1)
            };
            if let Some(sk) = &below {
                query = query.below(sk.clone());
            }
            async move { self.query_page(&query, None).await }
        });
        let mut attempts = Vec::new();
        for page in futures::future::try_join_all(reads).await? {
            for item in page.items {
                attempts.push(from_item::<DeliveryItem>(item)?);
            }
        }
        attempts.sort_by(|a, b| b.sk.cmp(&a.sk));
        let more = attempts.len() > limit as usize;
        attempts.truncate(limit as usize);
        let next = match attempts.last() {
            Some(last) if more => Some(Position::from([
                (PK.to_owned(), partitions[0].clone()),
                (SK.to_owned(), last.sk.clone()),
            ])),
            _ => None,
        };
        Ok(Page {
            items: attempts.into_iter().map(|d| d.attempt).collect(),
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;
    use crate::reports::Fact;

    fn draft(i: usize, hour: i64, phone: &str) -> EventDraft {
        let at: DateTime<Utc> = "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::hours(hour);
        EventDraft {
            id: format!("evt_{i}"),
            tenant_id: "t1".into(),
            event_type: crate::events::EventType::MessageReceived,
            timestamp: at,
            data: json!({}),
            tally: vec![Fact::counts(at, phone.into(), vec![("n:received".into(), 1)])],
        }
    }

    #[test]
    fn transactions_hold_the_head_the_pack_the_ids_and_the_counter_updates_within_100_items() {
        let tz = chrono_tz::Tz::UTC;
        // One hour, one number: two counter items, so 96 events fit with the head and the pack.
        let dense: Vec<EventDraft> = (0..200).map(|i| draft(i, 0, "1001")).collect();
        let sizes: Vec<usize> = transaction_chunks(&dense, tz).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [96, 96, 8]);
        // Every event in another hour and number: each adds an id and two counter items.
        let sparse: Vec<EventDraft> = (0..100).map(|i| draft(i, i as i64, &format!("{i}"))).collect();
        for chunk in transaction_chunks(&sparse, tz) {
            let items =
                2 + chunk.len() + crate::reports::counters::items_touched(chunk.iter().flat_map(|d| &d.tally), tz);
            assert!(items <= TRANSACTION_ITEMS, "{items}");
        }
        assert_eq!(
            transaction_chunks(&sparse, tz).iter().map(|c| c.len()).sum::<usize>(),
            100
        );
        // Many templates in one hour: no update adds more than 200 attributes.
        let wide: Vec<EventDraft> = (0..100)
            .map(|i| EventDraft {
                tally: vec![Fact::counts(
                    draft(i, 0, "1001").timestamp,
                    "1001".into(),
                    (0..10).map(|k| (format!("n:sent|template=t{i}_{k}"), 1)).collect(),
                )],
                ..draft(i, 0, "1001")
            })
            .collect();
        let chunks = transaction_chunks(&wide, tz);
        assert!(chunks.len() >= 5, "{}", chunks.len());
        for chunk in &chunks {
            let d = crate::reports::counters::deltas(chunk.iter().flat_map(|d| &d.tally), &Rules::wall(tz));
            assert!(d.values().all(|adds| adds.len() <= ATTRIBUTES_PER_UPDATE));
        }
        // Events without facts: 98 a transaction, as before.
        let plain: Vec<EventDraft> = (0..100)
            .map(|i| EventDraft {
                tally: Vec::new(),
                ..draft(i, 0, "1001")
            })
            .collect();
        assert_eq!(
            transaction_chunks(&plain, tz)
                .iter()
                .map(|c| c.len())
                .collect::<Vec<_>>(),
            [98, 2]
        );
    }
}
