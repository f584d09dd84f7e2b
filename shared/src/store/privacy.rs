//! Storage for privacy rights and retention: retention settings, export and erasure records,
//! and the paged reads and batched deletes that erasure, retention and offboarding are made of.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, DeleteRequest, Put, PutRequest, ReturnValue, TransactWriteItem,
    WriteRequest,
};
use chrono::{DateTime, Utc};
use futures::stream::{self, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::dynamo::{backend, from_item, to_item};
use super::inbound::{MessageItem, cancellation_codes};
use super::keys::*;
use super::outbound::reference_put;
use super::{DynamoStore, StoreError};
use crate::contact::Contact;
use crate::message::MessageRecord;
use crate::privacy::{
    EXPORT_TTL_GRACE_HOURS, ErasureRecord, ErasureStatus, ExportRecord, ExportStatus, RetentionSettings,
};

/// A raw item.
pub type Item = HashMap<String, AttributeValue>;

/// The primary key of an item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey {
    pub pk: String,
    pub sk: String,
}

impl ItemKey {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        ItemKey {
            pk: pk.into(),
            sk: sk.into(),
        }
    }

    /// The key of a raw item (`None` when it lacks `PK`/`SK`).
    pub fn of(item: &Item) -> Option<ItemKey> {
        Some(ItemKey::new(
            item.get(PK)?.as_s().ok()?.clone(),
            item.get(SK)?.as_s().ok()?.clone(),
        ))
    }
}

/// Most items one `BatchWriteItem` may carry (moto accepts more; DynamoDB does not).
pub const WRITE_BATCH: usize = 25;

/// Batches written at the same time by [`DynamoStore::delete_items`].
const WRITE_CONCURRENCY: usize = 4;

/// The keys without duplicates (a batch naming one key twice is refused), in batches of 25.
pub fn write_batches(keys: &[ItemKey]) -> Vec<Vec<ItemKey>> {
    let unique: BTreeSet<&ItemKey> = keys.iter().collect();
    let unique: Vec<ItemKey> = unique.into_iter().cloned().collect();
    unique.chunks(WRITE_BATCH).map(<[ItemKey]>::to_vec).collect()
}

/// A lease on a job record: who holds it and until when (epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub until_ms: i64,
}

impl Lease {
    pub fn new(until: DateTime<Utc>) -> Self {
        Lease {
            token: crate::ids::new_id(),
            until_ms: until.timestamp_millis(),
        }
    }
}

/// One page of a query over a partition (of the table or of an index).
#[derive(Debug, Clone)]
pub struct PageQuery<'a> {
    pub index: Option<&'a str>,
    pub pk_attr: &'a str,
    pub pk: String,
    pub sk_attr: &'a str,
    /// Only items whose sort key is below this.
    pub sk_below: Option<String>,
    /// Only items whose sort key starts with this.
    pub sk_prefix: Option<String>,
    /// Attributes to return (all when `None`).
    pub projection: Option<&'a [&'a str]>,
    pub limit: Option<i32>,
    /// Strongly consistent (base table only).
    pub consistent: bool,
}

impl<'a> PageQuery<'a> {
    /// Every item of a base-table partition, read consistently.
    pub fn partition(pk: String) -> Self {
        PageQuery {
            index: None,
            pk_attr: PK,
            pk,
            sk_attr: SK,
            sk_below: None,
            sk_prefix: None,
            projection: None,
            limit: None,
            consistent: true,
        }
    }

    /// Every item of an index partition (`GSI1` → `GSI1PK`/`GSI1SK`).
    pub fn index(index: &'a str, pk_attr: &'a str, sk_attr: &'a str, pk: String) -> Self {
        PageQuery {
            index: Some(index),
            pk_attr,
            pk,
            sk_attr,
            sk_below: None,
            sk_prefix: None,
            projection: None,
            limit: None,
            consistent: false,
        }
    }

    pub fn below(mut self, sk: String) -> Self {
        self.sk_below = Some(sk);
        self
    }

    pub fn prefixed(mut self, prefix: impl Into<String>) -> Self {
        self.sk_prefix = Some(prefix.into());
        self
    }

    pub fn project(mut self, attributes: &'a [&'a str]) -> Self {
        self.projection = Some(attributes);
        self
    }

    pub fn limit(mut self, limit: i32) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// Items of one page and where the next starts.
#[derive(Debug, Clone, Default)]
pub struct QueryPage {
    pub items: Vec<Item>,
    pub next: Option<Item>,
}

/// How starting an erasure went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErasureStart {
    /// The contact is gone (profile and the identity records that were its own) and the
    /// erasure record exists.
    Started { identities: u64 },
    /// The profile changed or vanished since it was read: read it again.
    ContactChanged,
    /// An erasure of this contact already exists.
    AlreadyErased,
}

#[derive(Serialize, Deserialize)]
struct SettingsItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    messages_days: u32,
    media_days: u32,
    exports_days: u32,
    audit_days: u32,
    updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_by: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ExportItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(rename = "GSI1PK")]
    gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    gsi1sk: String,
    /// DynamoDB TTL (epoch seconds): a backstop after the record's expiry.
    expires_at: i64,
    #[serde(flatten)]
    record: ExportRecord,
}

impl ExportItem {
    fn new(record: &ExportRecord) -> Self {
        ExportItem {
            pk: export_pk(&record.tenant_id, &record.export_id),
            sk: EXPORT_SK.into(),
            gsi1pk: exports_gsi1pk(&record.tenant_id),
            gsi1sk: record.export_id.clone(),
            expires_at: (record.expiry + chrono::Duration::hours(EXPORT_TTL_GRACE_HOURS)).timestamp(),
            record: record.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ErasureItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(rename = "GSI1PK")]
    gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    gsi1sk: String,
    /// DynamoDB TTL (epoch seconds): the receipt's expiry.
    expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_until_ms: Option<i64>,
    #[serde(flatten)]
    record: ErasureRecord,
}

impl ErasureItem {
    fn new(record: &ErasureRecord, lease: Option<&Lease>) -> Self {
        ErasureItem {
            pk: erasure_pk(&record.tenant_id, &record.erasure_id),
            sk: ERASURE_SK.into(),
            gsi1pk: erasures_gsi1pk(&record.tenant_id),
            gsi1sk: record.erasure_id.clone(),
            expires_at: record.receipt_expiry.timestamp(),
            lease_token: lease.map(|l| l.token.clone()),
            lease_until_ms: lease.map(|l| l.until_ms),
            record: record.clone(),
        }
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn delete_request(key: &ItemKey) -> WriteRequest {
    WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .key(PK, s(key.pk.clone()))
                .key(SK, s(key.sk.clone()))
                .build()
                .expect("key is set"),
        )
        .build()
}

/// The message item of a record (with its index keys), for bulk imports.
pub fn message_item(record: &MessageRecord) -> Item {
    to_item(&MessageItem::new(record))
}

impl DynamoStore {
    // -----------------------------------------------------------------------------------------
    // Retention settings

    /// The tenant's own retention settings (`None`: it uses the platform defaults).
    pub async fn retention_settings(&self, tenant_id: &str) -> Result<Option<RetentionSettings>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(tenant_pk(tenant_id)))
            .key(SK, s(RETENTION_SETTINGS_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let Some(item) = out.item else { return Ok(None) };
        let i: SettingsItem = from_item(item)?;
        Ok(Some(RetentionSettings {
            messages_days: i.messages_days,
            media_days: i.media_days,
            exports_days: i.exports_days,
            audit_days: i.audit_days,
        }))
    }

    pub async fn put_retention_settings(
        &self,
        tenant_id: &str,
        settings: &RetentionSettings,
        actor: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let item = SettingsItem {
            pk: tenant_pk(tenant_id),
            sk: RETENTION_SETTINGS_SK.into(),
            messages_days: settings.messages_days,
            media_days: settings.media_days,
            exports_days: settings.exports_days,
            audit_days: settings.audit_days,
            updated_at: at,
            updated_by: actor.map(str::to_owned),
        };
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&item)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Exports

    /// Stores a new export record and its reference in the contact's partition, if the
    /// contact exists (`NotFound` otherwise).
    pub async fn create_export(&self, record: &ExportRecord) -> Result<(), StoreError> {
        let (t, c) = (&record.tenant_id, &record.contact_id);
        let contact_exists = ConditionCheck::builder()
            .table_name(self.table())
            .key(PK, s(contact_pk(t, c)))
            .key(SK, s(PROFILE_SK))
            .condition_expression("attribute_exists(PK)")
            .build()
            .expect("condition check is complete");
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(to_item(&ExportItem::new(record))))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .expect("put is complete");
        let result = self
            .client()
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(contact_exists).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(reference_put(
                self.table(),
                t,
                c,
                &export_pk(t, &record.export_id),
                EXPORT_SK,
            ))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match cancellation_codes(&err) {
                Some(codes) if codes.first().and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed") => {
                    Err(StoreError::NotFound)
                }
                Some(codes) => Err(StoreError::Backend(format!("transaction cancelled: {codes:?}"))),
                None => Err(backend(err)),
            },
        }
    }

    pub async fn get_export(&self, tenant_id: &str, export_id: &str) -> Result<Option<ExportRecord>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(export_pk(tenant_id, export_id)))
            .key(SK, s(EXPORT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item.map(from_item::<ExportItem>).transpose()?.map(|i| i.record))
    }

    /// Records how building a pending export ended (`ready` or `failed`); `NotFound` when the
    /// record is gone (erased meanwhile) or no longer pending.
    pub async fn finish_export(&self, record: &ExportRecord) -> Result<(), StoreError> {
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
            Err(err) if err.as_service_error().is_some_and(is_condition_failure) => Err(StoreError::NotFound),
            Err(err) => Err(backend(err)),
        }
    }

    /// Every export record of a tenant (expired ones included), oldest first.
    pub async fn tenant_exports(&self, tenant_id: &str) -> Result<Vec<ExportRecord>, StoreError> {
        let query = PageQuery::index(GSI1, GSI1_PK, GSI1_SK, exports_gsi1pk(tenant_id));
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|i| from_item::<ExportItem>(i).map(|e| e.record))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Erasures

    /// Makes the contact disappear at once, in one transaction: its profile (if still at the
    /// version read), its phone and user-id records (if still its own), and the erasure record
    /// created under `lease`. A webhook that arrives next creates a fresh contact.
    pub async fn start_erasure(
        &self,
        contact: &Contact,
        record: &ErasureRecord,
        lease: &Lease,
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
                .key(PK, s(contact_pk(t, c)))
                .key(SK, s(PROFILE_SK))
                .condition_expression("attribute_exists(PK) AND version = :v")
                .expression_attribute_values(":v", AttributeValue::N(contact.version.to_string()))
                .build()
                .expect("delete is complete");
            let put = Put::builder()
                .table_name(self.table())
                .set_item(Some(to_item(&ErasureItem::new(record, Some(lease)))))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .expect("put is complete");
            let mut tx = self
                .client()
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().delete(profile).build())
                .transact_items(TransactWriteItem::builder().put(put).build());
            for pk in &identities {
                let delete = Delete::builder()
                    .table_name(self.table())
                    .key(PK, s(pk.clone()))
                    .key(SK, s(IDENTITY_SK))
                    .condition_expression("attribute_not_exists(PK) OR contact_id = :c")
                    .expression_attribute_values(":c", s(c.clone()))
                    .build()
                    .expect("delete is complete");
                tx = tx.transact_items(TransactWriteItem::builder().delete(delete).build());
            }
            match tx.send().await {
                Ok(_) => {
                    return Ok(ErasureStart::Started {
                        identities: identities.len() as u64,
                    });
                }
                Err(err) => {
                    let Some(codes) = cancellation_codes(&err) else {
                        return Err(backend(err));
                    };
                    let failed = |i: usize| codes.get(i).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed");
                    if failed(1) {
                        return Ok(ErasureStart::AlreadyErased);
                    }
                    if failed(0) {
                        return Ok(ErasureStart::ContactChanged);
                    }
                    let foreign: Vec<usize> = (0..identities.len()).filter(|i| failed(i + 2)).collect();
                    if foreign.is_empty() {
                        return Err(StoreError::Backend(format!("transaction cancelled: {codes:?}")));
                    }
                    identities = identities
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !foreign.contains(i))
                        .map(|(_, pk)| pk)
                        .collect();
                }
            }
        }
        Err(StoreError::Backend("erasure could not start".into()))
    }

    pub async fn get_erasure(&self, tenant_id: &str, erasure_id: &str) -> Result<Option<ErasureRecord>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(erasure_pk(tenant_id, erasure_id)))
            .key(SK, s(ERASURE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item.map(from_item::<ErasureItem>).transpose()?.map(|i| i.record))
    }

    /// Takes the lease of an unfinished erasure whose lease has lapsed; `None` when it is
    /// finished, gone, or held by someone else.
    pub async fn claim_erasure(
        &self,
        tenant_id: &str,
        erasure_id: &str,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<Option<ErasureRecord>, StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(erasure_pk(tenant_id, erasure_id)))
            .key(SK, s(ERASURE_SK))
            .update_expression("SET lease_token = :token, lease_until_ms = :until")
            .condition_expression(
                "attribute_exists(PK) AND #status = :in_progress AND \
                 (attribute_not_exists(lease_until_ms) OR lease_until_ms < :now)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":token", s(lease.token.clone()))
            .expression_attribute_values(":until", AttributeValue::N(lease.until_ms.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now.timestamp_millis().to_string()))
            .expression_attribute_values(":in_progress", s("in_progress"))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(
                from_item::<ErasureItem>(out.attributes.unwrap_or_default())?.record,
            )),
            Err(err) if err.as_service_error().is_some_and(is_condition_failure) => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }

    /// Saves an erasure's progress (or its completion) while holding `lease`, which it keeps
    /// (`Some`) or gives up (`None`); `VersionMismatch` when the lease was lost.
    pub async fn save_erasure(
        &self,
        record: &ErasureRecord,
        held: &Lease,
        keep: Option<&Lease>,
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
            Err(err) if err.as_service_error().is_some_and(is_condition_failure) => Err(StoreError::VersionMismatch),
            Err(err) => Err(backend(err)),
        }
    }

    /// Every erasure record of a tenant.
    pub async fn tenant_erasures(&self, tenant_id: &str) -> Result<Vec<ErasureRecord>, StoreError> {
        let query = PageQuery::index(GSI1, GSI1_PK, GSI1_SK, erasures_gsi1pk(tenant_id));
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|i| from_item::<ErasureItem>(i).map(|e| e.record))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Paged reads and batched writes

    pub async fn query_page(&self, q: &PageQuery<'_>, start: Option<Item>) -> Result<QueryPage, StoreError> {
        let mut names = HashMap::from([("#pk".to_owned(), q.pk_attr.to_owned())]);
        let mut values = HashMap::from([(":pk".to_owned(), s(q.pk.clone()))]);
        let mut condition = "#pk = :pk".to_owned();
        if let Some(below) = &q.sk_below {
            names.insert("#sk".into(), q.sk_attr.to_owned());
            values.insert(":below".into(), s(below.clone()));
            condition.push_str(" AND #sk < :below");
        } else if let Some(prefix) = &q.sk_prefix {
            names.insert("#sk".into(), q.sk_attr.to_owned());
            values.insert(":prefix".into(), s(prefix.clone()));
            condition.push_str(" AND begins_with(#sk, :prefix)");
        }
        let mut query = self
            .client()
            .query()
            .table_name(self.table())
            .set_index_name(q.index.map(str::to_owned))
            .key_condition_expression(condition)
            .set_exclusive_start_key(start)
            .set_limit(q.limit)
            .consistent_read(q.consistent && q.index.is_none());
        if let Some(attributes) = q.projection {
            let mut projected = Vec::new();
            for (i, a) in attributes.iter().enumerate() {
                let name = format!("#a{i}");
                projected.push(name.clone());
                names.insert(name, (*a).to_owned());
            }
            query = query.projection_expression(projected.join(", "));
        }
        let out = query
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(backend)?;
        Ok(QueryPage {
            items: out.items.unwrap_or_default(),
            next: out.last_evaluated_key.filter(|k| !k.is_empty()),
        })
    }

    /// Every item a query matches (for partitions known to be small).
    pub async fn query_all(&self, q: &PageQuery<'_>) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self.query_page(q, start).await?;
            items.extend(page.items);
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// Deletes items (missing ones are fine) with `BatchWriteItem`, 25 keys per request, a few
    /// requests at a time, retrying unprocessed items with backoff; returns the number of
    /// distinct keys deleted.
    pub async fn delete_items(&self, keys: &[ItemKey]) -> Result<u64, StoreError> {
        let batches = write_batches(keys);
        let count: usize = batches.iter().map(Vec::len).sum();
        stream::iter(batches.into_iter().map(Ok::<_, StoreError>))
            .try_for_each_concurrent(WRITE_CONCURRENCY, |batch| async move {
                self.write_batch(batch.iter().map(delete_request).collect()).await
            })
            .await?;
        Ok(count as u64)
    }

    /// Stores items as they are (bulk imports, test and benchmark seeding), 25 per request.
    pub async fn put_items(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let requests: Vec<WriteRequest> = items
            .into_iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().expect("item is set"))
                    .build()
            })
            .collect();
        let batches: Vec<Vec<WriteRequest>> = requests.chunks(WRITE_BATCH).map(<[WriteRequest]>::to_vec).collect();
        stream::iter(batches.into_iter().map(Ok::<_, StoreError>))
            .try_for_each_concurrent(WRITE_CONCURRENCY, |batch| self.write_batch(batch))
            .await
    }

    /// Imports messages in bulk (migrations, tests, benchmarks): each gets its index keys.
    pub async fn import_messages(&self, records: &[MessageRecord]) -> Result<(), StoreError> {
        self.put_items(records.iter().map(message_item).collect()).await
    }

    async fn write_batch(&self, mut pending: Vec<WriteRequest>) -> Result<(), StoreError> {
        debug_assert!(pending.len() <= WRITE_BATCH);
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            if attempt > 10 {
                return Err(StoreError::Backend(
                    "BatchWriteItem kept returning unprocessed items".into(),
                ));
            }
            let out = self
                .client()
                .batch_write_item()
                .request_items(self.table(), pending)
                .send()
                .await
                .map_err(backend)?;
            pending = out
                .unprocessed_items
                .and_then(|mut m| m.remove(self.table()))
                .unwrap_or_default();
            if !pending.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(25 << attempt.min(7))).await;
            }
        }
        Ok(())
    }
}

/// Marks a message's media as removed by retention: no object, no link, out of the media
/// index. A message deleted meanwhile is fine.
impl DynamoStore {
    pub async fn expire_media(&self, message: &ItemKey) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(message.pk.clone()))
            .key(SK, s(message.sk.clone()))
            .update_expression("SET media.#st = :expired REMOVE media.s3_key, GSI6PK, GSI6SK")
            .condition_expression("attribute_exists(PK) AND attribute_exists(media)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":expired", s("expired"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(is_condition_failure) => Ok(()),
            Err(err) => Err(backend(err)),
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

/// Whether an export is still waiting for the exporter.
pub fn is_pending(record: &ExportRecord) -> bool {
    record.status == ExportStatus::Pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_deduplicated_and_batched_by_25() {
        let keys: Vec<ItemKey> = (0..60).map(|i| ItemKey::new(format!("P{i}"), "S")).collect();
        let mut with_dupes = keys.clone();
        with_dupes.extend(keys[..5].iter().cloned());
        let batches = write_batches(&with_dupes);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![25, 25, 10]);
        for batch in &batches {
            let unique: BTreeSet<&ItemKey> = batch.iter().collect();
            assert_eq!(unique.len(), batch.len());
        }
        let all: BTreeSet<&ItemKey> = batches.iter().flatten().collect();
        assert_eq!(all.len(), 60);
        assert!(write_batches(&[]).is_empty());
        // Same PK, different SK: distinct items.
        assert_eq!(
            write_batches(&[ItemKey::new("P", "A"), ItemKey::new("P", "B")])[0].len(),
            2
        );
    }

    #[test]
    fn expired_records_are_hidden_before_ttl_removes_them() {
        let now = Utc::now();
        let export = ExportRecord::new("t", "c", None, 1, now - chrono::Duration::days(2));
        assert!(visible_export(Some(export.clone()), now).is_none());
        assert!(visible_export(Some(export), now - chrono::Duration::days(2)).is_some());
        let erasure = ErasureRecord::new("t", "c", None, 30, now - chrono::Duration::days(31));
        assert!(visible_erasure(Some(erasure.clone()), now).is_none());
        assert!(visible_erasure(Some(erasure), now - chrono::Duration::days(2)).is_some());
    }

    #[test]
    fn export_ttl_trails_the_expiry() {
        let now = Utc::now();
        let record = ExportRecord::new("t", "c", None, 7, now);
        let item = ExportItem::new(&record);
        assert_eq!(
            item.expires_at,
            (record.expiry + chrono::Duration::hours(EXPORT_TTL_GRACE_HOURS)).timestamp()
        );
        let raw = to_item(&item);
        assert!(raw["expires_at"].as_n().is_ok(), "TTL attribute must be a number");
        assert!(raw["expiry"].as_s().is_ok());
    }
}
