//! Storage for privacy rights and retention: retention settings, export and erasure records,
//! and the cascades erasure, retention and offboarding are made of (message walks on the
//! conversation index and the tenant-wide indexes, contact partitions with what their reference
//! items point at, wamid partitions). Raw items stay in here: the privacy machinery sees
//! message references, counts and opaque walk cursors.

use crate::reports::counters::Granularity;
use std::collections::HashSet;

use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, ReturnValue};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::StoreError;
use super::dynamo::{
    DynamoStore, ItemKey, PageQuery, attr, backend, condition_failed, from_item, key, n, s, to_item, tx_check,
    tx_delete, tx_put,
};
use super::items::{ErasureItem, ExportItem, MESSAGE_CASCADE_ATTRS, MessageItem, SettingsItem, TombstoneItem};
use super::keys::*;
use super::outbound::reference;
use super::ports::{ErasureStart, MessageRef, MessageScope, MessagesDeleted, PrivacyStore, TenantRecords, WalkPage};
use crate::contact::Contact;
use crate::message::MessageRecord;
use crate::privacy::{ErasureCounts, ErasureRecord, ErasureStatus, ExportRecord, RetentionSettings, id_floor};

pub use super::dynamo::Item;
pub use super::ports::Lease;

/// Items of a contact's partition deleted per page (bounded further by DynamoDB's 1 MB pages).
const PARTITION_PAGE: i32 = 1000;
/// Wamid partitions queried at the same time.
const WAMID_QUERIES: usize = 16;
/// Items of a tenant-wide partition (audit, events) read per page.
const PAGE: i32 = 1000;

/// The S3 key of a message's stored media, from its `media` map.
fn media_s3_key(item: &Item) -> Option<&str> {
    item.get("media")?
        .as_m()
        .ok()?
        .get("s3_key")?
        .as_s()
        .ok()
        .map(String::as_str)
}

/// A message item (projected to [`MESSAGE_CASCADE_ATTRS`]) as a cascade sees it.
fn message_ref(item: &Item) -> Option<MessageRef> {
    if attr(item, SK) != Some(MESSAGE_SK) {
        return None;
    }
    let message_id = attr(item, PK).and_then(message_id_of_pk)?.to_owned();
    let wamid = attr(item, "wamid").map(str::to_owned);
    let outbound_wamid = wamid.clone().filter(|_| attr(item, "direction") == Some("outbound"));
    Some(MessageRef {
        message_id,
        contact_id: attr(item, "contact_id").unwrap_or_default().to_owned(),
        outbound_wamid,
        wamid,
        media_key: media_s3_key(item).map(str::to_owned),
    })
}

/// What one page of a contact's partition holds, sorted into what gets deleted and counted.
#[derive(Debug, Default, PartialEq)]
struct PartitionSort {
    keys: Vec<ItemKey>,
    wamid_partitions: Vec<String>,
    counts: ErasureCounts,
}

/// Sorts the items of a contact's partition: every item goes, with what its references point
/// at (wamid partitions are listed separately, once each across pages via `handled`).
fn sort_partition_page(
    tenant_id: &str,
    items: &[Item],
    with_identities: bool,
    handled: &mut HashSet<String>,
) -> PartitionSort {
    let mut sorted = PartitionSort::default();
    let counts = &mut sorted.counts;
    for item in items {
        let Some(item_key) = ItemKey::of(item) else { continue };
        let sk = item_key.sk.as_str();
        if sk == PROFILE_SK {
            counts.contacts += 1;
            if with_identities {
                if let Some(phone) = attr(item, "phone") {
                    sorted
                        .keys
                        .push(ItemKey::new(phone_identity_pk(tenant_id, phone), IDENTITY_SK));
                    counts.identities += 1;
                }
                if let Some(user_id) = attr(item, "user_id") {
                    sorted
                        .keys
                        .push(ItemKey::new(user_identity_pk(tenant_id, user_id), IDENTITY_SK));
                    counts.identities += 1;
                }
            }
        } else if sk.starts_with(TAG_PREFIX) {
            counts.tags += 1;
        } else if sk.starts_with(CONSENT_PREFIX) || sk.starts_with(RESTRICTION_PREFIX) {
            counts.history_entries += 1;
        } else if sk.starts_with(CONVERSATION_PREFIX) {
            counts.conversations += 1;
        } else if sk.starts_with(NOTE_PREFIX) {
            counts.notes += 1;
        } else if let Some(referenced) = sk.strip_prefix(REF_PREFIX) {
            counts.other_items += 1;
            let ref_sk = attr(item, "ref_sk").unwrap_or_default();
            match referenced_kind(referenced) {
                Referenced::Wamid => {
                    if handled.insert(referenced.to_owned()) {
                        sorted.wamid_partitions.push(referenced.to_owned());
                    }
                }
                _ if ref_sk.is_empty() => {}
                kind => {
                    match kind {
                        Referenced::Idempotency => counts.idempotency_records += 1,
                        Referenced::Export => counts.exports += 1,
                        _ => counts.other_items += 1,
                    }
                    sorted.keys.push(ItemKey::new(referenced, ref_sk));
                }
            }
        } else {
            counts.other_items += 1;
        }
        sorted.keys.push(item_key);
    }
    sorted
}

impl DynamoStore {
    /// Every key in the given wamid partitions (pointer, parked statuses), with counts:
    /// (keys, pointers, statuses, other).
    async fn wamid_partition_keys(&self, partitions: Vec<String>) -> Result<(Vec<ItemKey>, u64, u64, u64), StoreError> {
        let found: Vec<Vec<Item>> = stream::iter(partitions)
            .map(|pk| async move {
                let query = PageQuery::partition(pk).project(&[PK, SK]);
                self.query_all(&query).await
            })
            .buffer_unordered(WAMID_QUERIES)
            .try_collect()
            .await?;
        let (mut pointers, mut statuses, mut other) = (0, 0, 0);
        let mut keys = Vec::new();
        for key in found.iter().flatten().filter_map(ItemKey::of) {
            if key.sk == WAMID_SK {
                pointers += 1;
            } else if key.sk.starts_with(PENDING_STATUS_PREFIX) {
                statuses += 1;
            } else {
                other += 1;
            }
            keys.push(key);
        }
        Ok((keys, pointers, statuses, other))
    }

    /// Deletes every item of a partition that `select` picks; returns how many.
    pub(crate) async fn delete_partition(
        &self,
        pk: String,
        select: impl Fn(&ItemKey) -> bool,
    ) -> Result<u64, StoreError> {
        let query = PageQuery::partition(pk).project(&[PK, SK]).limit(PAGE);
        let mut deleted = 0;
        let mut start = None;
        loop {
            let page = self.query_page(&query, start).await?;
            let keys: Vec<ItemKey> = page
                .items
                .iter()
                .filter_map(ItemKey::of)
                .filter(|k| select(k))
                .collect();
            deleted += self.delete_items(&keys).await?;
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(deleted),
            }
        }
    }

    /// Everything of a tenant's event stream: each event's id record (named by the log's
    /// items), the log, each endpoint's delivery log, the endpoints and their secrets, and the
    /// report counters derived from it.
    async fn delete_event_stream(&self, tenant_id: &str) -> Result<u64, StoreError> {
        // Each pack names its events (the head names none); an item of one event (before
        // packs) names its own id.
        let log = PageQuery::partition(event_log_pk(tenant_id));
        let mut id_keys = Vec::new();
        for item in self.query_all(&log).await? {
            let ids = if let Some(id) = super::dynamo::attr(&item, "id") {
                vec![id.to_owned()]
            } else if item.contains_key("first_seq") {
                let pack: super::items::EventPackItem = super::dynamo::from_item(item)?;
                pack.into_events()?.into_iter().map(|e| e.id).collect()
            } else {
                Vec::new()
            };
            id_keys.extend(
                ids.iter()
                    .map(|id| ItemKey::new(event_id_pk(tenant_id, id), EVENT_ID_SK)),
            );
        }
        let mut deleted = self.delete_items(&id_keys).await?;
        deleted += self.delete_partition(event_log_pk(tenant_id), |_| true).await?;
        let endpoints = PageQuery::partition(webhook_endpoints_pk(tenant_id)).prefixed(WEBHOOK_ENDPOINT_PREFIX);
        for item in self.query_all(&endpoints).await? {
            if let Some(id) = super::dynamo::attr(&item, "endpoint_id") {
                for pk in webhook_deliveries_pks(tenant_id, id) {
                    deleted += self.delete_partition(pk, |_| true).await?;
                }
            }
        }
        deleted += self.delete_partition(webhook_endpoints_pk(tenant_id), |_| true).await?;
        for granularity in [Granularity::Hour, Granularity::Day, Granularity::UserDay] {
            deleted += self
                .delete_partition(report_pk(tenant_id, granularity.letter()), |_| true)
                .await?;
        }
        Ok(deleted)
    }

    /// Imports messages in bulk (migrations, tests, benchmarks): each gets its index keys.
    pub async fn import_messages(&self, records: &[MessageRecord]) -> Result<(), StoreError> {
        self.put_items(records.iter().map(|r| to_item(&MessageItem::new(r))).collect())
            .await
    }
}

impl PrivacyStore for DynamoStore {
    async fn retention_settings(&self, tenant_id: &str) -> Result<Option<RetentionSettings>, StoreError> {
        let item: Option<SettingsItem> = self.get(tenant_pk(tenant_id), RETENTION_SETTINGS_SK).await?;
        Ok(item.map(|i| i.settings()))
    }

    async fn put_retention_settings(
        &self,
        tenant_id: &str,
        settings: &RetentionSettings,
        actor: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&SettingsItem::new(tenant_id, settings, actor, at))))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn create_export(&self, record: &ExportRecord) -> Result<(), StoreError> {
        let (t, c) = (&record.tenant_id, &record.contact_id);
        // What it exports must exist: the contact (whose partition then references it, so
        // erasure finds it), or the broadcast.
        let subject = match &record.broadcast_id {
            Some(b) => key(broadcasts_pk(t), broadcast_sk(b)),
            None => key(contact_pk(t, c), PROFILE_SK),
        };
        let subject_exists = ConditionCheck::builder()
            .table_name(self.table())
            .set_key(Some(subject))
            .condition_expression("attribute_exists(PK)")
            .build()
            .expect("condition check is complete");
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(to_item(&ExportItem::new(record))))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .expect("put is complete");
        let mut items = vec![tx_check(subject_exists), tx_put(put)];
        if record.broadcast_id.is_none() {
            items.push(reference(
                self.table(),
                t,
                c,
                &export_pk(t, &record.export_id),
                EXPORT_SK,
            ));
        }
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.failed(0) => Err(StoreError::NotFound),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn get_export(&self, tenant_id: &str, export_id: &str) -> Result<Option<ExportRecord>, StoreError> {
        let item: Option<ExportItem> = self.get(export_pk(tenant_id, export_id), EXPORT_SK).await?;
        Ok(item.map(|i| i.record))
    }

    async fn finish_export(&self, record: &ExportRecord) -> Result<(), StoreError> {
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&ExportItem::new(record))))
            .condition_expression("attribute_exists(PK) AND #status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s("pending"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Err(StoreError::NotFound),
            Err(err) => Err(backend(err)),
        }
    }

    async fn tenant_exports(&self, tenant_id: &str) -> Result<Vec<ExportRecord>, StoreError> {
        let query = PageQuery::index(GSI1, GSI1_PK, GSI1_SK, exports_gsi1pk(tenant_id));
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|i| from_item::<ExportItem>(i).map(|e| e.record))
            .collect()
    }

    async fn delete_exports(&self, tenant_id: &str, exports: &[ExportRecord]) -> Result<u64, StoreError> {
        let mut keys = Vec::new();
        for e in exports {
            let pk = export_pk(tenant_id, &e.export_id);
            if e.broadcast_id.is_none() {
                keys.push(ItemKey::new(contact_pk(tenant_id, &e.contact_id), reference_sk(&pk)));
            }
            keys.push(ItemKey::new(pk, EXPORT_SK));
        }
        self.delete_items(&keys).await?;
        Ok(exports.len() as u64)
    }

    async fn export_messages(
        &self,
        tenant_id: &str,
        contact_id: &str,
        next: Option<String>,
        limit: i32,
    ) -> Result<WalkPage<MessageRecord>, StoreError> {
        let query = PageQuery::index(GSI1, GSI1_PK, GSI1_SK, conversation_gsi1pk(tenant_id, contact_id)).limit(limit);
        let (page, next) = self.walk_page(&query, next).await?;
        let items = page
            .items
            .into_iter()
            .map(|i| from_item::<MessageItem>(i).map(|m| m.message))
            .collect::<Result<_, _>>()?;
        Ok(WalkPage { items, next })
    }

    async fn start_erasure(
        &self,
        contact: &Contact,
        record: &ErasureRecord,
        lease: &super::ports::Lease,
    ) -> Result<ErasureStart, StoreError> {
        let (t, c) = (&contact.tenant_id, &contact.contact_id);
        let mut identities: Vec<String> = Vec::new();
        if let Some(phone) = &contact.phone {
            identities.push(phone_identity_pk(t, phone));
        }
        if let Some(user_id) = &contact.user_id {
            identities.push(user_identity_pk(t, user_id));
        }
        // An identity record that names another contact is that contact's: it is left alone.
        for _ in 0..3 {
            let profile = Delete::builder()
                .table_name(self.table())
                .set_key(Some(key(contact_pk(t, c), PROFILE_SK)))
                .condition_expression("attribute_exists(PK) AND version = :v")
                .expression_attribute_values(":v", n(contact.version))
                .build()
                .expect("delete is complete");
            let put = Put::builder()
                .table_name(self.table())
                .set_item(Some(to_item(&ErasureItem::new(record, Some(lease)))))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .expect("put is complete");
            let mut items = vec![tx_delete(profile), tx_put(put)];
            for pk in &identities {
                items.push(tx_delete(
                    Delete::builder()
                        .table_name(self.table())
                        .set_key(Some(key(pk.clone(), IDENTITY_SK)))
                        .condition_expression("attribute_not_exists(PK) OR contact_id = :c")
                        .expression_attribute_values(":c", s(c.clone()))
                        .build()
                        .expect("delete is complete"),
                ));
            }
            let cancelled = match self.transact(items).await? {
                Ok(()) => {
                    return Ok(ErasureStart::Started {
                        identities: identities.len() as u64,
                    });
                }
                Err(cancelled) => cancelled,
            };
            if cancelled.failed(1) {
                return Ok(ErasureStart::AlreadyErased);
            }
            if cancelled.failed(0) {
                return Ok(ErasureStart::ContactChanged);
            }
            let foreign: Vec<usize> = (0..identities.len()).filter(|i| cancelled.failed(i + 2)).collect();
            if foreign.is_empty() {
                return Err(cancelled.unexplained());
            }
            identities = identities
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !foreign.contains(i))
                .map(|(_, pk)| pk)
                .collect();
        }
        Err(StoreError::Backend("erasure could not start".into()))
    }

    async fn get_erasure(&self, tenant_id: &str, erasure_id: &str) -> Result<Option<ErasureRecord>, StoreError> {
        let item: Option<ErasureItem> = self.get(erasure_pk(tenant_id, erasure_id), ERASURE_SK).await?;
        Ok(item.map(|i| i.record))
    }

    async fn claim_erasure(
        &self,
        tenant_id: &str,
        erasure_id: &str,
        lease: &super::ports::Lease,
        now: DateTime<Utc>,
    ) -> Result<Option<ErasureRecord>, StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(erasure_pk(tenant_id, erasure_id), ERASURE_SK)))
            .update_expression("SET lease_token = :token, lease_until_ms = :until")
            .condition_expression(
                "attribute_exists(PK) AND #status = :in_progress AND \
                 (attribute_not_exists(lease_until_ms) OR lease_until_ms < :now)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":token", s(lease.token.clone()))
            .expression_attribute_values(":until", n(lease.until_ms))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(":in_progress", s("in_progress"))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(
                from_item::<ErasureItem>(out.attributes.unwrap_or_default())?.record,
            )),
            Err(err) if condition_failed(&err) => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }

    async fn save_erasure(
        &self,
        record: &ErasureRecord,
        held: &super::ports::Lease,
        keep: Option<&super::ports::Lease>,
    ) -> Result<(), StoreError> {
        let keep = keep.filter(|_| record.status == ErasureStatus::InProgress);
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&ErasureItem::new(record, keep))))
            .condition_expression("attribute_exists(PK) AND lease_token = :token")
            .expression_attribute_values(":token", s(held.token.clone()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Err(StoreError::VersionMismatch),
            Err(err) => Err(backend(err)),
        }
    }

    async fn tenant_erasures(&self, tenant_id: &str) -> Result<Vec<ErasureRecord>, StoreError> {
        let query = PageQuery::index(GSI1, GSI1_PK, GSI1_SK, erasures_gsi1pk(tenant_id));
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|i| from_item::<ErasureItem>(i).map(|e| e.record))
            .collect()
    }

    async fn delete_erasures(&self, tenant_id: &str, erasure_ids: &[String]) -> Result<u64, StoreError> {
        let keys: Vec<ItemKey> = erasure_ids
            .iter()
            .map(|id| ItemKey::new(erasure_pk(tenant_id, id), ERASURE_SK))
            .collect();
        self.delete_items(&keys).await
    }

    async fn message_refs(
        &self,
        tenant_id: &str,
        scope: MessageScope<'_>,
        next: Option<String>,
        limit: i32,
    ) -> Result<WalkPage<MessageRef>, StoreError> {
        let (page, next) = match scope {
            MessageScope::Contact(contact_id) => {
                let query = PageQuery::index(GSI1, GSI1_PK, GSI1_SK, conversation_gsi1pk(tenant_id, contact_id))
                    .project(MESSAGE_CASCADE_ATTRS)
                    .limit(limit);
                self.walk_page(&query, next).await?
            }
            MessageScope::Tenant { before } => {
                // Every shard of the tenant's message index, one after the other (retention
                // and offboarding delete what they find: no order across shards is needed).
                let queries: Vec<PageQuery<'_>> = tenant_messages_gsi5pks(tenant_id)
                    .into_iter()
                    .map(|pk| {
                        let q = PageQuery::index(GSI5, GSI5_PK, GSI5_SK, pk)
                            .project(MESSAGE_CASCADE_ATTRS)
                            .limit(limit);
                        match before {
                            Some(at) => q.below(id_floor(at)),
                            None => q,
                        }
                    })
                    .collect();
                self.walk_partitions(&queries, next).await?
            }
            MessageScope::StoredMedia { before } => {
                let query = PageQuery::index(GSI6, GSI6_PK, GSI6_SK, tenant_media_gsi6pk(tenant_id))
                    .below(id_floor(before))
                    .project(MESSAGE_CASCADE_ATTRS)
                    .limit(limit);
                self.walk_page(&query, next).await?
            }
        };
        Ok(WalkPage {
            items: page.items.iter().filter_map(message_ref).collect(),
            next,
        })
    }

    async fn delete_messages(
        &self,
        tenant_id: &str,
        messages: &[MessageRef],
        with_references: bool,
        handled: &mut HashSet<String>,
    ) -> Result<MessagesDeleted, StoreError> {
        let mut deleted = MessagesDeleted::default();
        if messages.is_empty() {
            return Ok(deleted);
        }
        let mut keys = Vec::with_capacity(messages.len() * 2);
        let mut wamid_partitions = Vec::new();
        for m in messages {
            if let Some(wamid) = &m.outbound_wamid {
                let pointer = wamid_pk(tenant_id, wamid);
                if with_references && !m.contact_id.is_empty() {
                    keys.push(ItemKey::new(
                        contact_pk(tenant_id, &m.contact_id),
                        reference_sk(&pointer),
                    ));
                }
                if handled.insert(pointer.clone()) {
                    wamid_partitions.push(pointer);
                }
            }
            keys.push(ItemKey::new(message_pk(tenant_id, &m.message_id), MESSAGE_SK));
            deleted.messages += 1;
        }
        let (wamid_keys, pointers, statuses, other) = self.wamid_partition_keys(wamid_partitions).await?;
        keys.extend(wamid_keys);
        deleted.pointers = pointers;
        deleted.statuses = statuses;
        deleted.other_items = other;
        self.delete_items(&keys).await?;
        Ok(deleted)
    }

    async fn put_tombstones(
        &self,
        tenant_id: &str,
        wamids: &[String],
        erased_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let items = wamids
            .iter()
            .map(|w| to_item(&TombstoneItem::new(tenant_id, w, erased_at)))
            .collect();
        self.put_items(items).await
    }

    async fn delete_contact_items(
        &self,
        tenant_id: &str,
        contact_id: &str,
        with_identities: bool,
        handled: &mut HashSet<String>,
    ) -> Result<Option<ErasureCounts>, StoreError> {
        let query = PageQuery::partition(contact_pk(tenant_id, contact_id)).limit(PARTITION_PAGE);
        let page = self.query_page(&query, None).await?;
        if page.items.is_empty() {
            return Ok(None);
        }
        let mut sorted = sort_partition_page(tenant_id, &page.items, with_identities, handled);
        let (wamid_keys, pointers, statuses, other) = self.wamid_partition_keys(sorted.wamid_partitions).await?;
        sorted.keys.extend(wamid_keys);
        sorted.counts.pointers += pointers;
        sorted.counts.statuses += statuses;
        sorted.counts.other_items += other;
        self.delete_items(&sorted.keys).await?;
        Ok(Some(sorted.counts))
    }

    async fn expire_media(&self, tenant_id: &str, message_id: &str) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(message_pk(tenant_id, message_id), MESSAGE_SK)))
            .update_expression("SET media.#st = :expired REMOVE media.s3_key, GSI6PK, GSI6SK")
            .condition_expression("attribute_exists(PK) AND attribute_exists(media)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":expired", s("expired"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Ok(()),
            Err(err) => Err(backend(err)),
        }
    }

    async fn delete_audit_before(
        &self,
        tenant_id: &str,
        before: DateTime<Utc>,
        next: Option<String>,
        limit: i32,
    ) -> Result<(u64, Option<String>), StoreError> {
        let query = PageQuery::partition(audit_pk(tenant_id))
            .below(id_floor(before))
            .project(&[PK, SK])
            .limit(limit);
        let (page, next) = self.walk_page(&query, next).await?;
        let keys: Vec<ItemKey> = page.items.iter().filter_map(ItemKey::of).collect();
        Ok((self.delete_items(&keys).await?, next))
    }

    async fn tenant_ids(&self) -> Result<Vec<String>, StoreError> {
        let query = PageQuery::index(GSI1, GSI1_PK, GSI1_SK, ALL_TENANTS_GSI1PK.to_owned()).project(&[GSI1_SK]);
        Ok(self
            .query_all(&query)
            .await?
            .iter()
            .filter_map(|i| attr(i, GSI1_SK).map(str::to_owned))
            .collect())
    }

    async fn contact_ids(
        &self,
        tenant_id: &str,
        next: Option<String>,
        limit: i32,
    ) -> Result<WalkPage<String>, StoreError> {
        let query = PageQuery::index(GSI2, GSI2_PK, GSI2_SK, contacts_index_pk(tenant_id)).limit(limit);
        let (page, next) = self.walk_page(&query, next).await?;
        Ok(WalkPage {
            items: page
                .items
                .iter()
                .filter_map(|i| attr(i, PK).and_then(contact_id_of_pk).map(str::to_owned))
                .collect(),
            next,
        })
    }

    async fn delete_tenant_records(&self, tenant_id: &str, records: TenantRecords<'_>) -> Result<u64, StoreError> {
        match records {
            TenantRecords::Audit => self.delete_partition(audit_pk(tenant_id), |_| true).await,
            TenantRecords::RawEvents => self.delete_partition(events_pk(tenant_id), |_| true).await,
            TenantRecords::EventStream => self.delete_event_stream(tenant_id).await,
            TenantRecords::SendSchedule(phone_number_id) => {
                self.delete_partition(send_schedule_pk(tenant_id, phone_number_id), |_| true)
                    .await
            }
            TenantRecords::Tombstones => {
                let mut deleted = 0;
                for shard in TOMBSTONE_SHARDS.chars() {
                    let pk = tombstone_pk(tenant_id, &shard.to_string());
                    deleted += self.delete_partition(pk, |_| true).await?;
                }
                Ok(deleted)
            }
            TenantRecords::TenantPartition => self.delete_partition(tenant_pk(tenant_id), |k| k.sk != TENANT_SK).await,
            TenantRecords::Templates => self.delete_partition(templates_pk(tenant_id), |_| true).await,
            TenantRecords::Broadcasts => self.delete_broadcast_partitions(tenant_id).await,
            TenantRecords::Tenant => {
                self.delete_items(&[ItemKey::new(tenant_pk(tenant_id), TENANT_SK)])
                    .await
            }
        }
    }
}

/// What an export record's status means for a reader at `now`: expired records are hidden
/// even while DynamoDB's TTL has not removed them yet.
pub fn visible_export(record: Option<ExportRecord>, now: DateTime<Utc>) -> Option<ExportRecord> {
    record.filter(|r| !r.is_expired(now))
}

/// Same for erasure receipts.
pub fn visible_erasure(record: Option<ErasureRecord>, now: DateTime<Utc>) -> Option<ErasureRecord> {
    record.filter(|r| !r.is_expired(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dynamo::{decode_cursor, encode_cursor};
    use aws_sdk_dynamodb::types::AttributeValue;
    use std::collections::HashMap;

    #[test]
    fn cursors_round_trip() {
        let key: Item = HashMap::from([
            ("PK".to_owned(), AttributeValue::S("T#t#MSG#m".into())),
            ("GSI1SK".to_owned(), AttributeValue::S("m".into())),
        ]);
        assert_eq!(decode_cursor(&encode_cursor(key.clone())).unwrap(), key);
        assert!(decode_cursor("not json").is_err());
    }

    #[test]
    fn message_refs_carry_what_a_cascade_needs() {
        let media = AttributeValue::M(HashMap::from([
            ("status".to_owned(), s("available")),
            ("s3_key".to_owned(), s("tenants/t/contacts/c/media/m")),
        ]));
        let mut item: Item = HashMap::from([
            (PK.to_owned(), s(message_pk("t", "m"))),
            (SK.to_owned(), s(MESSAGE_SK)),
            ("contact_id".to_owned(), s("c")),
            ("direction".to_owned(), s("outbound")),
            ("wamid".to_owned(), s("wamid.1")),
            ("media".to_owned(), media),
        ]);
        let r = message_ref(&item).unwrap();
        assert_eq!(r.message_id, "m");
        assert_eq!(r.outbound_wamid.as_deref(), Some("wamid.1"));
        assert_eq!(r.media_key.as_deref(), Some("tenants/t/contacts/c/media/m"));
        // An inbound message's wamid has no pointer partition.
        item.insert("direction".into(), s("inbound"));
        assert_eq!(message_ref(&item).unwrap().outbound_wamid, None);
        assert!(message_ref(&HashMap::new()).is_none());
    }

    #[test]
    fn a_contact_partition_is_sorted_into_kinds_and_references_are_followed() {
        let (t, c) = ("t", "c");
        let pk = contact_pk(t, c);
        let item = |sk: String, extra: &[(&str, &str)]| {
            let mut i = key(pk.clone(), sk);
            for (k, v) in extra {
                i.insert((*k).to_owned(), s(*v));
            }
            i
        };
        let idem = idempotency_pk(t, "h");
        let wamid = wamid_pk(t, "w");
        let items = vec![
            item(PROFILE_SK.into(), &[("phone", "+15550001"), ("user_id", "U1")]),
            item(tag_sk("vip"), &[]),
            item(consent_history_sk(1, "x"), &[]),
            item(restriction_history_sk(1, "y"), &[]),
            item(reference_sk(&idem), &[("ref_sk", IDEMPOTENCY_SK)]),
            item(reference_sk(&wamid), &[("ref_sk", WAMID_SK)]),
            item("SOMETHING".into(), &[]),
        ];
        let mut handled = HashSet::new();
        let sorted = sort_partition_page(t, &items, true, &mut handled);
        let c = sorted.counts;
        assert_eq!((c.contacts, c.identities, c.tags, c.history_entries), (1, 2, 1, 2));
        assert_eq!((c.idempotency_records, c.other_items), (1, 3));
        assert!(sorted.keys.contains(&ItemKey::new(idem, IDEMPOTENCY_SK)));
        assert!(
            sorted
                .keys
                .contains(&ItemKey::new(phone_identity_pk(t, "+15550001"), IDENTITY_SK))
        );
        assert_eq!(sorted.wamid_partitions, vec![wamid.clone()]);
        // Every item of the page goes, plus the idempotency record and both identities.
        assert_eq!(sorted.keys.len(), items.len() + 3);
        // A wamid partition already handled on an earlier page is not listed again; without
        // identities the profile's phone and user id records stay.
        let again = sort_partition_page(t, &items, false, &mut handled);
        assert!(again.wamid_partitions.is_empty());
        assert_eq!(again.counts.identities, 0);
        assert_eq!(again.keys.len(), items.len() + 1);
    }
}
