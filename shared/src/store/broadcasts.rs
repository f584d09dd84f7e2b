//! Broadcasts in the table: one partition per tenant for the broadcast items
//! (`T#<t>#BCAST`, `B#<id>`), [`RECIPIENT_SHARDS`] partitions per broadcast for its recipients
//! (`T#<t>#BCAST#<id>#<shard>`, `R#<contact>`, the shard a hash of the contact id), and two
//! items in the tenant partition (settings, messaging-limit usage). A page commit is one
//! `TransactWriteItems`: the broadcast put on its version, each new recipient put if absent,
//! each changed recipient put on its status, and the usage item on its version. No index is
//! written. Recipient listings walk the shards in order (a position is a contact id, whose
//! shard follows from it, or the start of a shard).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::dynamo::{
    DynamoStore, ItemKey, PageQuery, backend, condition_failed, from_item, key, n, s, to_item, tx_put,
};
use super::keys::*;
use super::ports::{BroadcastStore, MAX_PAGE_RECIPIENTS, MessagingUsage, PageCommit, RecipientChange};
use crate::broadcast::pacing::BroadcastSettings;
use crate::broadcast::{Broadcast, BroadcastRecipient, NumberQuality, RecipientStatus};
use crate::cursor::Position;
use crate::store::Page;

#[derive(Serialize, Deserialize)]
struct BroadcastItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(flatten)]
    broadcast: Broadcast,
}

impl BroadcastItem {
    fn new(b: &Broadcast) -> Self {
        BroadcastItem {
            pk: broadcasts_pk(&b.tenant_id),
            sk: broadcast_sk(&b.broadcast_id),
            broadcast: b.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct NumberQualityItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    /// Meta's time in ms, for the stale-change condition.
    changed_ms: i64,
    #[serde(flatten)]
    quality: NumberQuality,
}

#[derive(Serialize, Deserialize)]
struct RecipientItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(flatten)]
    recipient: BroadcastRecipient,
}

impl RecipientItem {
    fn new(r: &BroadcastRecipient) -> Self {
        RecipientItem {
            pk: recipient_pk(&r.tenant_id, &r.broadcast_id, &r.contact_id),
            sk: recipient_sk(&r.contact_id),
            recipient: r.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SettingsItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(flatten)]
    settings: BroadcastSettings,
}

#[derive(Serialize, Deserialize)]
struct UsageItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(flatten)]
    usage: MessagingUsage,
}

/// The put of a broadcast at its version (the stored one must be one behind).
fn versioned_put(table: &str, b: &Broadcast) -> Put {
    Put::builder()
        .table_name(table)
        .set_item(Some(to_item(&BroadcastItem::new(b))))
        .condition_expression("#v = :v")
        .expression_attribute_names("#v", "version")
        .expression_attribute_values(":v", n(b.version.saturating_sub(1)))
        .build()
        .expect("put is complete")
}

/// The partition of a contact's entry in a broadcast.
fn recipient_pk(tenant_id: &str, broadcast_id: &str, contact_id: &str) -> String {
    broadcast_recipients_pk(tenant_id, broadcast_id, recipient_shard(contact_id))
}

/// Where a recipient page starts: the shard, and the key to continue after in it. Positions
/// are a contact id (what the engine and the API cursors carry: after it, in its shard) or
/// the start of a shard.
fn recipient_start(
    tenant_id: &str,
    broadcast_id: &str,
    start: &Option<Position>,
) -> (u32, Option<HashMap<String, AttributeValue>>) {
    let Some(start) = start else {
        return (0, None);
    };
    if let Some(contact_id) = start.get("contact_id") {
        let shard = recipient_shard(contact_id);
        let after = key(
            broadcast_recipients_pk(tenant_id, broadcast_id, shard),
            recipient_sk(contact_id),
        );
        return (shard, Some(after));
    }
    let shard = start.get("shard").and_then(|s| s.parse().ok()).unwrap_or(0);
    (shard, None)
}

/// Every shard's partition key of a broadcast's recipients.
fn recipient_partitions(tenant_id: &str, broadcast_id: &str) -> impl Iterator<Item = String> {
    (0..RECIPIENT_SHARDS).map(move |shard| broadcast_recipients_pk(tenant_id, broadcast_id, shard))
}

fn contact_position(item: &super::Item) -> Option<Position> {
    let sk = item.get(SK)?.as_s().ok()?;
    let contact_id = sk.strip_prefix(RECIPIENT_PREFIX)?;
    Some(Position::from([("contact_id".to_owned(), contact_id.to_owned())]))
}

impl DynamoStore {
    /// Every broadcast id of a tenant.
    async fn broadcast_ids(&self, tenant_id: &str) -> Result<Vec<(String, super::Item)>, StoreError> {
        let query = PageQuery::partition(broadcasts_pk(tenant_id)).prefixed(BROADCAST_PREFIX);
        Ok(self
            .query_all(&query)
            .await?
            .into_iter()
            .filter_map(|item| {
                let id = item.get(SK)?.as_s().ok()?.strip_prefix(BROADCAST_PREFIX)?.to_owned();
                Some((id, item))
            })
            .collect())
    }
}

impl DynamoStore {
    /// Offboarding: every broadcast's recipients, then the broadcasts.
    pub(crate) async fn delete_broadcast_partitions(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for (id, _) in self.broadcast_ids(tenant_id).await? {
            for pk in recipient_partitions(tenant_id, &id) {
                deleted += self.delete_partition(pk, |_| true).await?;
            }
        }
        Ok(deleted + self.delete_partition(broadcasts_pk(tenant_id), |_| true).await?)
    }
}

impl BroadcastStore for DynamoStore {
    async fn create_broadcast(&self, b: &Broadcast) -> Result<(), StoreError> {
        if self.put_if_absent(to_item(&BroadcastItem::new(b))).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict("broadcast exists".into()))
        }
    }

    async fn get_broadcast(&self, tenant_id: &str, broadcast_id: &str) -> Result<Option<Broadcast>, StoreError> {
        Ok(self
            .get::<BroadcastItem>(broadcasts_pk(tenant_id), &broadcast_sk(broadcast_id))
            .await?
            .map(|i| i.broadcast))
    }

    async fn list_broadcasts(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Broadcast>, StoreError> {
        let query = self
            .client()
            .query()
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .expression_attribute_values(":pk", s(broadcasts_pk(tenant_id)))
            .expression_attribute_values(":prefix", s(BROADCAST_PREFIX))
            .scan_index_forward(false)
            .consistent_read(true);
        self.list_page(query, tenant_id, limit, start, &[PK, SK], |i: BroadcastItem| {
            i.broadcast
        })
        .await
    }

    async fn save_broadcast(&self, b: &Broadcast) -> Result<(), StoreError> {
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&BroadcastItem::new(b))))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":v", n(b.version.saturating_sub(1)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Err(StoreError::VersionMismatch),
            Err(err) => Err(backend(err)),
        }
    }

    async fn commit_page(
        &self,
        b: &Broadcast,
        created: &[BroadcastRecipient],
        changed: &[RecipientChange],
        usage: Option<&MessagingUsage>,
    ) -> Result<PageCommit, StoreError> {
        if created.len() + changed.len() > MAX_PAGE_RECIPIENTS {
            return Err(StoreError::Rejected(format!(
                "a page commits at most {MAX_PAGE_RECIPIENTS} recipients"
            )));
        }
        let table = self.table();
        let mut items = vec![tx_put(versioned_put(table, b))];
        for r in created {
            items.push(tx_put(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(to_item(&RecipientItem::new(r))))
                    .condition_expression("attribute_not_exists(PK)")
                    .build()
                    .expect("put is complete"),
            ));
        }
        for c in changed {
            items.push(tx_put(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(to_item(&RecipientItem::new(&c.recipient))))
                    .condition_expression("#st = :expected")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":expected", s(c.expected.as_str()))
                    .build()
                    .expect("put is complete"),
            ));
        }
        if let Some(u) = usage {
            let item = UsageItem {
                pk: tenant_pk(&b.tenant_id),
                sk: MESSAGING_USAGE_SK.into(),
                usage: u.clone(),
            };
            items.push(tx_put(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(to_item(&item)))
                    .condition_expression("attribute_not_exists(PK) OR #v = :v")
                    .expression_attribute_names("#v", "version")
                    .expression_attribute_values(":v", n(u.version.saturating_sub(1)))
                    .build()
                    .expect("put is complete"),
            ));
        }
        match self.transact(items).await? {
            Ok(()) => Ok(PageCommit::Committed),
            Err(cancelled) => {
                if cancelled.failed(0) {
                    return Err(StoreError::VersionMismatch);
                }
                let existing: Vec<usize> = (0..created.len()).filter(|i| cancelled.failed(i + 1)).collect();
                if !existing.is_empty() {
                    return Ok(PageCommit::Existing(existing));
                }
                if cancelled.any_failed() {
                    // A changed recipient or the usage item moved on.
                    return Err(StoreError::VersionMismatch);
                }
                Err(cancelled.unexplained())
            }
        }
    }

    async fn broadcast_recipients(
        &self,
        tenant_id: &str,
        broadcast_id: &str,
        status: Option<RecipientStatus>,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<BroadcastRecipient>, StoreError> {
        let limit = limit.max(1) as usize;
        let (mut shard, mut exclusive) = recipient_start(tenant_id, broadcast_id, &start);
        let mut items: Vec<super::Item> = Vec::new();
        while shard < RECIPIENT_SHARDS {
            let mut query = self
                .client()
                .query()
                .table_name(self.table())
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                .expression_attribute_values(":pk", s(broadcast_recipients_pk(tenant_id, broadcast_id, shard)))
                .expression_attribute_values(":prefix", s(RECIPIENT_PREFIX))
                .set_exclusive_start_key(exclusive.take())
                .limit((limit + 1).max(100) as i32)
                .consistent_read(true);
            if let Some(st) = status {
                query = query
                    .filter_expression("#st = :st")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":st", s(st.as_str()));
            }
            let out = query.send().await.map_err(backend)?;
            items.extend(out.items.unwrap_or_default());
            let more = out.last_evaluated_key.filter(|k| !k.is_empty());
            if items.len() > limit {
                items.truncate(limit);
                let next = items.last().and_then(contact_position);
                return map_recipients(items, next);
            }
            match more {
                Some(k) => exclusive = Some(k),
                None => {
                    shard += 1;
                    exclusive = None;
                    // A full page that ends a shard goes on at the next one's start.
                    if items.len() == limit && shard < RECIPIENT_SHARDS {
                        let next = Position::from([("shard".to_owned(), shard.to_string())]);
                        return map_recipients(items, Some(next));
                    }
                }
            }
        }
        map_recipients(items, None)
    }

    async fn broadcast_settings(&self, tenant_id: &str) -> Result<BroadcastSettings, StoreError> {
        Ok(self
            .get::<SettingsItem>(tenant_pk(tenant_id), BROADCAST_SETTINGS_SK)
            .await?
            .map(|i| i.settings)
            .unwrap_or_default())
    }

    async fn put_broadcast_settings(&self, tenant_id: &str, settings: &BroadcastSettings) -> Result<(), StoreError> {
        // The messaging limit is Meta's (set by its webhook): kept as stored.
        self.client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), BROADCAST_SETTINGS_SK)))
            .update_expression(
                "SET agents_may_broadcast = :a, rate_share_pct = :r, messaging_limit = if_not_exists(messaging_limit, :l)",
            )
            .expression_attribute_values(":a", AttributeValue::Bool(settings.agents_may_broadcast))
            .expression_attribute_values(":r", n(settings.rate_share_pct))
            .expression_attribute_values(
                ":l",
                settings.messaging_limit.map_or(AttributeValue::Null(true), n),
            )
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn set_messaging_limit(&self, tenant_id: &str, limit: Option<u64>) -> Result<(), StoreError> {
        let defaults = BroadcastSettings::default();
        self.client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), BROADCAST_SETTINGS_SK)))
            .update_expression(
                "SET messaging_limit = :l, agents_may_broadcast = if_not_exists(agents_may_broadcast, :a), rate_share_pct = if_not_exists(rate_share_pct, :r)",
            )
            .expression_attribute_values(":l", limit.map_or(AttributeValue::Null(true), n))
            .expression_attribute_values(":a", AttributeValue::Bool(defaults.agents_may_broadcast))
            .expression_attribute_values(":r", n(defaults.rate_share_pct))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn messaging_usage(&self, tenant_id: &str) -> Result<MessagingUsage, StoreError> {
        Ok(self
            .get::<UsageItem>(tenant_pk(tenant_id), MESSAGING_USAGE_SK)
            .await?
            .map(|i| i.usage)
            .unwrap_or_default())
    }

    async fn put_number_quality(&self, tenant_id: &str, quality: &NumberQuality) -> Result<bool, StoreError> {
        let item = NumberQualityItem {
            pk: tenant_pk(tenant_id),
            sk: number_quality_sk(&quality.waba_id, &quality.display_phone_number),
            changed_ms: quality.changed_at.timestamp_millis(),
            quality: quality.clone(),
        };
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&item)))
            .condition_expression("attribute_not_exists(PK) OR changed_ms <= :at")
            .expression_attribute_values(":at", n(item.changed_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if condition_failed(&err) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }

    async fn number_qualities(&self, tenant_id: &str) -> Result<Vec<NumberQuality>, StoreError> {
        let query = PageQuery::partition(tenant_pk(tenant_id)).prefixed(NUMBER_QUALITY_PREFIX);
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|item| Ok(from_item::<NumberQualityItem>(item)?.quality))
            .collect()
    }

    async fn erase_recipient(&self, tenant_id: &str, contact_id: &str) -> Result<u64, StoreError> {
        // One delete per broadcast, a few at a time; counted when an entry was there.
        let ids = self.broadcast_ids(tenant_id).await?;
        let mut erased = 0;
        for chunk in ids.chunks(8) {
            let done = futures::future::join_all(chunk.iter().map(|(id, _)| {
                self.client()
                    .delete_item()
                    .table_name(self.table())
                    .set_key(Some(key(
                        recipient_pk(tenant_id, id, contact_id),
                        recipient_sk(contact_id),
                    )))
                    .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
                    .send()
            }))
            .await;
            for d in done {
                erased += u64::from(d.map_err(backend)?.attributes.is_some_and(|a| !a.is_empty()));
            }
        }
        Ok(erased)
    }

    async fn delete_broadcasts_before(&self, tenant_id: &str, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for (id, item) in self.broadcast_ids(tenant_id).await? {
            let b = from_item::<BroadcastItem>(item)?.broadcast;
            if b.status.is_final() && b.finished_at.is_some_and(|f| f < before) {
                for pk in recipient_partitions(tenant_id, &id) {
                    self.delete_partition(pk, |_| true).await?;
                }
                self.delete_items(&[ItemKey::new(broadcasts_pk(tenant_id), broadcast_sk(&id))])
                    .await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

fn map_recipients(items: Vec<super::Item>, next: Option<Position>) -> Result<Page<BroadcastRecipient>, StoreError> {
    let items = items
        .into_iter()
        .map(|i| from_item::<RecipientItem>(i).map(|r| r.recipient))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { items, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_spread_evenly_over_stable_shards() {
        // Pinned: a shard is part of stored keys, so the hash must never change.
        assert_eq!(recipient_shard("01J9Z3V6W8X0Y2Z4A6B8C0D2E4"), 15);
        assert_eq!(recipient_shard(""), 0x811c_9dc5 % RECIPIENT_SHARDS);
        let mut per_shard = [0u32; RECIPIENT_SHARDS as usize];
        for _ in 0..16_000 {
            per_shard[recipient_shard(&crate::ids::new_id()) as usize] += 1;
        }
        // 1,000 expected per shard: none far off, so no key takes much more than its share.
        assert!(per_shard.iter().all(|n| (850..1150).contains(n)), "{per_shard:?}");
        assert_eq!(broadcast_recipients_pk("t", "b", 3), "T#t#BCAST#b#03");
        let (shard, after) = recipient_start(
            "t",
            "b",
            &Some(Position::from([("contact_id".to_owned(), "c1".to_owned())])),
        );
        assert_eq!(shard, recipient_shard("c1"));
        assert!(after.is_some());
        let (shard, after) = recipient_start("t", "b", &Some(Position::from([("shard".to_owned(), "7".to_owned())])));
        assert_eq!((shard, after), (7, None));
    }

    #[test]
    fn items_round_trip_through_attribute_maps() {
        let mut usage = MessagingUsage::default();
        crate::broadcast::pacing::record_use(&mut usage.hours, Utc::now(), 3);
        usage.version = 2;
        let item = to_item(&UsageItem {
            pk: tenant_pk("t"),
            sk: MESSAGING_USAGE_SK.into(),
            usage: usage.clone(),
        });
        assert_eq!(from_item::<UsageItem>(item).unwrap().usage, usage);
        let settings = BroadcastSettings {
            messaging_limit: None,
            ..BroadcastSettings::default()
        };
        let item = to_item(&SettingsItem {
            pk: tenant_pk("t"),
            sk: BROADCAST_SETTINGS_SK.into(),
            settings: settings.clone(),
        });
        assert_eq!(from_item::<SettingsItem>(item).unwrap().settings, settings);
    }
}
