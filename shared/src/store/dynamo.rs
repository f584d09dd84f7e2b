//! The DynamoDB toolkit every adapter file of `store/` is written with: the store handle,
//! attribute values, item mapping, the one way a failed condition is recognised (single
//! requests and transactions alike), paged queries, consistent batch reads and batched writes
//! with their retry loop. Adapter files hold what is specific to an aggregate and nothing that
//! talks to the SDK's error types or retries by hand.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, DeleteRequest, KeysAndAttributes, Put, PutRequest, TransactWriteItem,
    Update, WriteRequest,
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::{self, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::keys::*;
use super::{Page, StoreError};
use crate::cursor::Position;

/// A raw item.
pub type Item = HashMap<String, AttributeValue>;

/// One table, one client; cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// Seals and opens Graph tokens (crate::kms); none: stored as given.
    pub(crate) tokens: Option<crate::kms::TokenCipher>,
}

/// How a batch read reads: consistently or not, whole items or some attributes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchRead {
    pub consistent: bool,
    pub projection: Option<&'static [&'static str]>,
}

/// Consistent, whole items.
impl Default for BatchRead {
    fn default() -> Self {
        BatchRead {
            consistent: true,
            projection: None,
        }
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            tokens: None,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

// ---------------------------------------------------------------------------------------------
// Attribute values and items

/// A projection expression naming `attributes` through aliases (`#pN`), which it adds to
/// `names`: several attribute names (`name`, `status`) are reserved words.
pub(crate) fn projection<'a>(
    attributes: impl IntoIterator<Item = &'a str>,
    names: &mut HashMap<String, String>,
) -> String {
    let aliases: Vec<String> = attributes
        .into_iter()
        .enumerate()
        .map(|(i, attr)| {
            let alias = format!("#p{i}");
            names.insert(alias.clone(), attr.to_owned());
            alias
        })
        .collect();
    aliases.join(", ")
}

/// The profile items' keys of `contact_ids`, each once (a batch read rejects duplicate keys).
fn profile_keys(tenant_id: &str, contact_ids: &[String]) -> Vec<Item> {
    let unique: BTreeSet<&String> = contact_ids.iter().collect();
    unique
        .into_iter()
        .map(|c| key(contact_pk(tenant_id, c), PROFILE_SK))
        .collect()
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Any serializable value as an attribute (maps, lists, times as serde writes them).
pub(crate) fn av<T: Serialize + ?Sized>(v: &T) -> AttributeValue {
    serde_dynamo::to_attribute_value(v).expect("our values serialize")
}

/// A time as RFC 3339 with milliseconds (the format of key and tenant timestamps).
pub(crate) fn millis_time(at: DateTime<Utc>) -> AttributeValue {
    AttributeValue::S(at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// An item's size as DynamoDB counts it for billing and limits: each attribute's name and
/// value; strings and binaries by their bytes, numbers about one byte per two significant
/// digits plus one, booleans and nulls one byte, lists and maps three bytes plus one per
/// element (and each map key's name). What the bench derives write units from.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(name, v)| name.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    fn number(n: &str) -> usize {
        let digits = n
            .trim_start_matches('-')
            .replace('.', "")
            .trim_start_matches('0')
            .trim_end_matches('0')
            .len();
        digits.div_ceil(2) + 1
    }
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(list) => 3 + list.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(map) => 3 + map.iter().map(|(k, e)| 1 + k.len() + value_size(e)).sum::<usize>(),
        _ => 1,
    }
}

/// Write units of a transactional write of an item of `bytes`: two per KB begun.
pub fn transactional_write_units(bytes: usize) -> u64 {
    2 * bytes.div_ceil(1024).max(1) as u64
}

/// A string attribute of a raw item.
pub(crate) fn attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

/// An SDK error as a [`StoreError`]: a validation error (the request itself is invalid, e.g. an
/// item over 400 KB) is [`StoreError::Rejected`], anything else (throttling, 5xx, network) is
/// the retryable [`StoreError::Backend`].
pub(crate) fn backend<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let text = DisplayErrorContext(&err).to_string();
    if is_validation_code(err.as_service_error().and_then(|e| e.code())) {
        StoreError::Rejected(text)
    } else {
        StoreError::Backend(text)
    }
}

/// The error codes DynamoDB uses for a request that can never succeed as sent (request-level
/// `ValidationException`, transaction cancellation reason `ValidationError`).
fn is_validation_code(code: Option<&str>) -> bool {
    matches!(code, Some("ValidationException" | "ValidationError"))
}

pub(crate) fn from_item<T: for<'de> Deserialize<'de>>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn from_attribute<T: for<'de> Deserialize<'de>>(value: AttributeValue) -> Result<T, StoreError> {
    serde_dynamo::from_attribute_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn to_item<T: Serialize>(value: &T) -> Item {
    serde_dynamo::to_item(value).expect("our item types always serialize to a map")
}

/// The primary key of an item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ItemKey {
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
        Some(ItemKey::new(attr(item, PK)?, attr(item, SK)?))
    }
}

// ---------------------------------------------------------------------------------------------
// Conditions

/// Whether a single request failed because its condition did not hold (the one way the store
/// recognises it).
pub(crate) fn condition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// Why a transaction was cancelled, item by item.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancelled {
    codes: Vec<Option<String>>,
    /// The items as they were, for items that asked for them on a failed condition.
    old_items: Vec<Option<Item>>,
}

impl Cancelled {
    fn of<R>(err: &SdkError<TransactWriteItemsError, R>) -> Option<Cancelled> {
        let TransactWriteItemsError::TransactionCanceledException(c) = err.as_service_error()? else {
            return None;
        };
        Some(Cancelled {
            codes: c
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
            old_items: c.cancellation_reasons().iter().map(|r| r.item().cloned()).collect(),
        })
    }

    /// Whether item `i`'s condition failed.
    pub fn failed(&self, i: usize) -> bool {
        self.codes.get(i).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed")
    }

    pub fn any_failed(&self) -> bool {
        (0..self.codes.len()).any(|i| self.failed(i))
    }

    /// The item `i` as it was when its condition failed, if the request asked for it.
    pub fn old_item(&self, i: usize) -> Option<&Item> {
        self.old_items.get(i)?.as_ref()
    }

    /// Cancelled only because another transaction or request touched the same items at the
    /// same moment (or throttling): worth running again as it is.
    fn is_transient(&self) -> bool {
        !self.any_failed()
            && self.codes.iter().flatten().any(|c| {
                matches!(
                    c.as_str(),
                    "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                        | "RequestLimitExceeded"
                )
            })
    }

    /// A cancellation no condition explains: a conflict with another transaction or throttling
    /// (retryable), or an item the table cannot hold (rejected for good).
    pub fn unexplained(&self) -> StoreError {
        let text = format!("transaction cancelled: {:?}", self.codes);
        if self.codes.iter().any(|c| is_validation_code(c.as_deref())) {
            StoreError::Rejected(text)
        } else {
            StoreError::Backend(text)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transaction items

pub(crate) fn tx_put(put: Put) -> TransactWriteItem {
    TransactWriteItem::builder().put(put).build()
}

pub(crate) fn tx_update(update: Update) -> TransactWriteItem {
    TransactWriteItem::builder().update(update).build()
}

pub(crate) fn tx_delete(delete: Delete) -> TransactWriteItem {
    TransactWriteItem::builder().delete(delete).build()
}

pub(crate) fn tx_check(check: ConditionCheck) -> TransactWriteItem {
    TransactWriteItem::builder().condition_check(check).build()
}

/// A put that overwrites whatever is there.
pub(crate) fn put_always(table: &str, item: Item) -> TransactWriteItem {
    tx_put(
        Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .build()
            .expect("table and item are set"),
    )
}

/// A put that fails when the key exists.
pub(crate) fn put_new(table: &str, item: Item) -> TransactWriteItem {
    tx_put(
        Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .expect("table, item and condition are set"),
    )
}

// ---------------------------------------------------------------------------------------------
// Pages

/// A `LastEvaluatedKey` as a cursor position (all our key attributes are strings).
pub(crate) fn position(key: Item) -> Position {
    key.into_iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|s| (k, s.clone())))
        .collect()
}

/// Turns a query run with `Limit = limit + 1` into a page of at most `limit` items whose next
/// position is absent exactly when nothing follows (no cursor that leads to an empty page).
/// `key_attrs` are the attributes of the queried index's `LastEvaluatedKey`.
pub(crate) fn trim_page(
    items: Vec<Item>,
    limit: i32,
    last_evaluated: Option<Item>,
    key_attrs: &[&str],
) -> (Vec<Item>, Option<Position>) {
    trim_page_with(items, limit, last_evaluated, |last| key_position(last, key_attrs))
}

/// The position of an item from its key attributes.
pub(crate) fn key_position(item: &Item, key_attrs: &[&str]) -> Position {
    key_attrs
        .iter()
        .filter_map(|k| attr(item, k).map(|v| (k.to_string(), v.to_owned())))
        .collect()
}

/// [`trim_page`] with the next position made from the page's last item by `cursor`.
pub(crate) fn trim_page_with(
    mut items: Vec<Item>,
    limit: i32,
    last_evaluated: Option<Item>,
    cursor: impl Fn(&Item) -> Position,
) -> (Vec<Item>, Option<Position>) {
    let limit = limit.max(1) as usize;
    if items.len() > limit {
        items.truncate(limit);
        let next = cursor(items.last().expect("limit is at least one"));
        (items, Some(next))
    } else {
        (items, last_evaluated.map(position))
    }
}

/// A cursor position back into an `ExclusiveStartKey`, refusing one outside the tenant's
/// partition (defence in depth: cursors are already bound to their tenant cryptographically).
pub(crate) fn start_key(tenant_id: &str, start: Option<Position>) -> Result<Option<Item>, StoreError> {
    let Some(start) = start else { return Ok(None) };
    let prefix = tenant_pk(tenant_id);
    let in_tenant = start
        .iter()
        .filter(|(k, _)| k.ends_with("PK"))
        .all(|(_, v)| v == &prefix || v.starts_with(&format!("{prefix}#")));
    if !in_tenant {
        return Err(StoreError::Corrupt("cursor position outside the tenant".into()));
    }
    Ok(Some(
        start.into_iter().map(|(k, v)| (k, AttributeValue::S(v))).collect(),
    ))
}

/// One page of a query over a partition (of the table or of an index).
#[derive(Debug, Clone)]
pub(crate) struct PageQuery<'a> {
    pub index: Option<&'a str>,
    pub pk_attr: &'a str,
    pub pk: String,
    pub sk_attr: &'a str,
    /// Only items whose sort key is below this.
    pub sk_below: Option<String>,
    /// Only items whose sort key starts with this.
    pub sk_prefix: Option<String>,
    /// Only items whose sort key lies between these two (inclusive).
    pub sk_between: Option<(String, String)>,
    /// Attributes to return (all when `None`).
    pub projection: Option<&'a [&'a str]>,
    pub limit: Option<i32>,
    /// Strongly consistent (base table only).
    pub consistent: bool,
    /// Newest (highest sort key) first.
    pub descending: bool,
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
            sk_between: None,
            projection: None,
            limit: None,
            consistent: true,
            descending: false,
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
            sk_between: None,
            projection: None,
            limit: None,
            consistent: false,
            descending: false,
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

    pub fn newest_first(mut self) -> Self {
        self.descending = true;
        self
    }
}

/// Items of one page and where the next starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryPage {
    pub items: Vec<Item>,
    pub next: Option<Item>,
}

/// A walk's opaque continuation (internal walks: retention, erasure, sweeps; not API cursors).
pub(crate) fn encode_cursor(key: Item) -> String {
    let map: BTreeMap<String, String> = key
        .into_iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|s| (k, s.clone())))
        .collect();
    serde_json::to_string(&map).expect("a map of strings serializes")
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<Item, StoreError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(cursor).map_err(|e| StoreError::Corrupt(format!("walk cursor: {e}")))?;
    Ok(map.into_iter().map(|(k, v)| (k, AttributeValue::S(v))).collect())
}

/// Where a walk over partitions goes after a page of partition `at` (of `len`) that ended at
/// `last` (`None`: the partition is done): the same partition after `last`, else the start of
/// the next one, else nowhere.
pub(crate) fn next_partition_position(at: usize, len: usize, last: Option<Item>) -> Option<(usize, Option<Item>)> {
    match last {
        Some(key) => Some((at, Some(key))),
        None if at + 1 < len => Some((at + 1, None)),
        None => None,
    }
}

/// `<partition>` or `<partition>:<walk cursor>` (see [`encode_cursor`]).
pub(crate) fn encode_partitions_cursor(at: usize, key: Option<Item>) -> String {
    match key {
        Some(key) => format!("{at}:{}", encode_cursor(key)),
        None => at.to_string(),
    }
}

/// The position a [`encode_partitions_cursor`] string names within `queries`; a position past
/// the list, or a key of another partition than the one it names (another tenant's, say), is
/// refused rather than followed.
pub(crate) fn decode_partitions_cursor(
    cursor: &str,
    queries: &[PageQuery<'_>],
) -> Result<(usize, Option<Item>), StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("partition walk cursor: {why}"));
    let (at, key) = match cursor.split_once(':') {
        Some((at, key)) => (at, Some(decode_cursor(key)?)),
        None => (cursor, None),
    };
    let at: usize = at.parse().map_err(|_| corrupt("no partition"))?;
    let query = queries.get(at).ok_or_else(|| corrupt("partition out of range"))?;
    if let Some(key) = &key
        && key.get(query.pk_attr).and_then(|v| v.as_s().ok()) != Some(&query.pk)
    {
        return Err(corrupt("key of another partition"));
    }
    Ok((at, key))
}

// ---------------------------------------------------------------------------------------------
// Batches

/// Most items one `BatchWriteItem` may carry (moto accepts more; DynamoDB does not).
pub(crate) const WRITE_BATCH: usize = 25;

/// Most keys one `BatchGetItem` may ask for.
const READ_BATCH: usize = 100;

/// Batches written at the same time.
const WRITE_CONCURRENCY: usize = 4;

/// Rounds of a batch request whose unprocessed part keeps coming back before giving up.
const BATCH_ROUNDS: u32 = 10;

/// The keys without duplicates (a batch naming one key twice is refused), in batches of 25.
pub(crate) fn write_batches(keys: &[ItemKey]) -> Vec<Vec<ItemKey>> {
    let unique: BTreeSet<&ItemKey> = keys.iter().collect();
    let unique: Vec<ItemKey> = unique.into_iter().cloned().collect();
    unique.chunks(WRITE_BATCH).map(<[ItemKey]>::to_vec).collect()
}

/// Runs of a transaction that keeps losing to concurrent ones before the conflict is reported.
const TRANSACTION_ATTEMPTS: u32 = 4;

/// Most items one `TransactWriteItems` takes.
pub(crate) const TRANSACTION_ITEMS: usize = 100;

/// A random pause before running a conflicted transaction again: 5–20 ms, then growing, so
/// the transactions that collided do not collide again in step.
fn conflict_pause(attempt: u32) -> std::time::Duration {
    let base = 5u64 << attempt.min(4);
    std::time::Duration::from_millis(base + rand::random_range(0..=base * 3))
}

/// Backoff before round `round + 1` of a batch request's unprocessed part.
fn batch_backoff(round: u32) -> std::time::Duration {
    std::time::Duration::from_millis(25 << round.min(7))
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

impl DynamoStore {
    /// One item read consistently, mapped to its type.
    pub(crate) async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        pk: String,
        sk: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_item(pk, sk).await?.map(from_item).transpose()
    }

    /// One item read consistently, as stored.
    pub(crate) async fn get_item(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item)
    }

    /// Whether an item exists (read consistently, key only).
    pub(crate) async fn exists(&self, pk: String, sk: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .projection_expression("PK")
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item.is_some())
    }

    /// Stores an item unless its key exists; `false` when it did (a repeat).
    pub(crate) async fn put_if_absent(&self, item: Item) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if condition_failed(&err) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }

    /// Runs a transaction: `Ok(Err(cancelled))` when DynamoDB cancelled it (conditions or
    /// conflicts, item by item), `Err` when the request itself failed. A cancellation caused only
    /// by a concurrent transaction on the same items (three photos from one customer update its
    /// contact at once) is run again after a short random pause, a few times, before it is
    /// reported.
    pub(crate) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Result<(), Cancelled>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(Ok(())),
                Err(err) => match Cancelled::of(&err) {
                    Some(cancelled) if cancelled.is_transient() && attempt < TRANSACTION_ATTEMPTS => {
                        tokio::time::sleep(conflict_pause(attempt)).await;
                    }
                    Some(cancelled) => return Ok(Err(cancelled)),
                    None => return Err(backend(err)),
                },
            }
        }
    }

    pub(crate) async fn query_page(&self, q: &PageQuery<'_>, start: Option<Item>) -> Result<QueryPage, StoreError> {
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
        } else if let Some((first, last)) = &q.sk_between {
            names.insert("#sk".into(), q.sk_attr.to_owned());
            values.insert(":first".into(), s(first.clone()));
            values.insert(":last".into(), s(last.clone()));
            condition.push_str(" AND #sk BETWEEN :first AND :last");
        }
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(q.index.map(str::to_owned))
            .key_condition_expression(condition)
            .set_exclusive_start_key(start)
            .set_limit(q.limit)
            .scan_index_forward(!q.descending)
            .consistent_read(q.consistent && q.index.is_none());
        if let Some(attributes) = q.projection {
            query = query.projection_expression(projection(attributes.iter().copied(), &mut names));
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

    /// One page of a listing: `query` (a partition or index query, without limit or start)
    /// runs with `Limit = limit + 1` from the tenant-checked `start`, and its items are mapped
    /// through their stored form `I`; the page's next position is there only when more
    /// follows. `key_attrs` are the queried index's key attributes.
    pub(crate) async fn list_page<I, T>(
        &self,
        query: QueryFluentBuilder,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
        key_attrs: &[&str],
        map: impl Fn(I) -> T,
    ) -> Result<Page<T>, StoreError>
    where
        I: for<'de> Deserialize<'de>,
    {
        let cursor = |last: &Item| key_position(last, key_attrs);
        self.list_page_with(query, tenant_id, limit, start, cursor, |i| from_item::<I>(i).map(&map))
            .await
    }

    /// [`Self::list_page`] decoding each stored item itself, with the page's next position
    /// made from its last item by `cursor` (so a listing may leave out of its projection the
    /// key attributes it can derive).
    pub(crate) async fn list_page_with<T>(
        &self,
        query: QueryFluentBuilder,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
        cursor: impl Fn(&Item) -> Position,
        decode: impl Fn(Item) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        let out = query
            .table_name(&self.table)
            .limit(limit + 1)
            .set_exclusive_start_key(start_key(tenant_id, start)?)
            .send()
            .await
            .map_err(backend)?;
        let (raw, next) = trim_page_with(out.items.unwrap_or_default(), limit, out.last_evaluated_key, cursor);
        let items = raw.into_iter().map(decode).collect::<Result<Vec<T>, _>>()?;
        Ok(Page { items, next })
    }

    /// One page of an internal walk, continued by an opaque string.
    pub(crate) async fn walk_page(
        &self,
        query: &PageQuery<'_>,
        next: Option<String>,
    ) -> Result<(QueryPage, Option<String>), StoreError> {
        let start = next.as_deref().map(decode_cursor).transpose()?;
        let page = self.query_page(query, start).await?;
        let next = page.next.clone().map(encode_cursor);
        Ok((page, next))
    }

    /// One page of an internal walk over several partitions (a sharded index: `queries`, one
    /// per shard, always the same list in the same order), continued by an opaque string:
    /// partitions are walked one after the other, empty ones skipped within the call, so a
    /// page holds one partition's items and only the last page has no continuation.
    pub(crate) async fn walk_partitions(
        &self,
        queries: &[PageQuery<'_>],
        next: Option<String>,
    ) -> Result<(QueryPage, Option<String>), StoreError> {
        let (mut at, mut start) = match next.as_deref() {
            Some(cursor) => decode_partitions_cursor(cursor, queries)?,
            None => (0, None),
        };
        while at < queries.len() {
            let page = self.query_page(&queries[at], start.take()).await?;
            let position = next_partition_position(at, queries.len(), page.next.clone());
            if page.items.is_empty() && page.next.is_none() {
                // An empty (or finished) partition: on to the next without a round trip back.
                match position {
                    Some((next_at, _)) => at = next_at,
                    None => break,
                }
                continue;
            }
            return Ok((page, position.map(|(at, key)| encode_partitions_cursor(at, key))));
        }
        Ok((
            QueryPage {
                items: Vec::new(),
                next: None,
            },
            None,
        ))
    }

    /// Profiles for index keys, in the index's order, read consistently; missing ones
    /// (erased since the index was read) are skipped.
    pub(crate) async fn profiles(
        &self,
        tenant_id: &str,
        contact_ids: &[String],
    ) -> Result<Vec<crate::contact::Contact>, StoreError> {
        let keys = profile_keys(tenant_id, contact_ids);
        let mut found: HashMap<String, crate::contact::Contact> = HashMap::new();
        for item in self.batch_get(keys).await? {
            let contact = from_item::<super::items::ContactItem>(item)?.contact;
            found.insert(contact.contact_id.clone(), contact);
        }
        Ok(contact_ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// The summaries of contacts (for lists of conversations), in no particular order, read
    /// eventually consistently (a list is a moment's view) and projected to what a summary
    /// holds; missing ones (erased meanwhile) are absent.
    pub(crate) async fn contact_summaries(
        &self,
        tenant_id: &str,
        contact_ids: &[String],
    ) -> Result<Vec<crate::contact::ContactSummary>, StoreError> {
        let keys = profile_keys(tenant_id, contact_ids);
        let attributes = crate::contact::ContactSummary::ATTRIBUTES;
        let read = BatchRead {
            consistent: false,
            projection: Some(attributes),
        };
        self.batch_get_with(keys, &read)
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    /// Every item a query matches (for partitions known to be small).
    pub(crate) async fn query_all(&self, q: &PageQuery<'_>) -> Result<Vec<Item>, StoreError> {
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

    /// Items by key, read consistently, 100 keys per request, retrying unprocessed keys;
    /// missing items are simply absent from the result (in no particular order).
    pub(crate) async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        self.batch_get_with(keys, &BatchRead::default()).await
    }

    /// [`Self::batch_get`] with a choice of consistency and a projection.
    pub(crate) async fn batch_get_with(&self, keys: Vec<Item>, read: &BatchRead) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        let mut pending = keys;
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            if round > BATCH_ROUNDS {
                return Err(StoreError::Backend(
                    "BatchGetItem kept returning unprocessed keys".into(),
                ));
            }
            let batch: Vec<_> = pending.drain(..pending.len().min(READ_BATCH)).collect();
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(batch))
                .consistent_read(read.consistent);
            if let Some(attributes) = read.projection {
                let mut names = HashMap::new();
                request = request
                    .projection_expression(projection(attributes.iter().copied(), &mut names))
                    .set_expression_attribute_names(Some(names));
            }
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request.build().expect("keys are set"))
                .send()
                .await
                .map_err(backend)?;
            found.extend(
                out.responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default(),
            );
            if let Some(mut unprocessed) = out.unprocessed_keys
                && let Some(retry) = unprocessed.remove(&self.table)
            {
                pending.extend(retry.keys);
            }
        }
        Ok(found)
    }

    /// `BatchWriteItem` for any number of requests: 25 per request, a few requests at a time,
    /// unprocessed items retried with backoff (the one batch-write loop of the store).
    pub(crate) async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        let batches: Vec<Vec<WriteRequest>> = requests.chunks(WRITE_BATCH).map(<[WriteRequest]>::to_vec).collect();
        stream::iter(batches.into_iter().map(Ok::<_, StoreError>))
            .try_for_each_concurrent(WRITE_CONCURRENCY, |batch| self.write_batch(batch))
            .await
    }

    async fn write_batch(&self, mut pending: Vec<WriteRequest>) -> Result<(), StoreError> {
        debug_assert!(pending.len() <= WRITE_BATCH);
        let mut round = 0u32;
        while !pending.is_empty() {
            round += 1;
            if round > BATCH_ROUNDS {
                return Err(StoreError::Backend(
                    "BatchWriteItem kept returning unprocessed items".into(),
                ));
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(backend)?;
            pending = out
                .unprocessed_items
                .and_then(|mut m| m.remove(&self.table))
                .unwrap_or_default();
            if !pending.is_empty() {
                tokio::time::sleep(batch_backoff(round)).await;
            }
        }
        Ok(())
    }

    /// Deletes items (missing ones are fine); returns the number of distinct keys deleted.
    pub(crate) async fn delete_items(&self, keys: &[ItemKey]) -> Result<u64, StoreError> {
        let batches = write_batches(keys);
        let count: usize = batches.iter().map(Vec::len).sum();
        self.batch_write(batches.iter().flatten().map(delete_request).collect())
            .await?;
        Ok(count as u64)
    }

    /// Stores items as they are (bulk seeding of tests and benchmarks).
    pub async fn put_items(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let requests = items
            .into_iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().expect("item is set"))
                    .build()
            })
            .collect();
        self.batch_write(requests).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_sizes_count_names_and_values_as_dynamodb_does() {
        let item: Item = HashMap::from([
            ("PK".to_owned(), s("abc")),
            // 12345 significant digits: 3 bytes + 1.
            ("n".to_owned(), n("-0123.4500")),
            ("b".to_owned(), AttributeValue::B(vec![0; 10].into())),
            ("t".to_owned(), AttributeValue::Bool(true)),
            // 3 + (1 + "k" + "vv") + ... ; list: 3 + (1 + 1-byte number "7" = 2 bytes).
            (
                "m".to_owned(),
                AttributeValue::M(HashMap::from([("k".to_owned(), s("vv"))])),
            ),
            ("l".to_owned(), AttributeValue::L(vec![n(7)])),
        ]);
        assert_eq!(
            item_size(&item),
            (2 + 3) + (1 + 4) + (1 + 10) + (1 + 1) + (1 + 3 + 1 + 1 + 2) + (1 + 3 + 1 + 2)
        );
        assert_eq!(transactional_write_units(1), 2);
        assert_eq!(transactional_write_units(1024), 2);
        assert_eq!(transactional_write_units(1025), 4);
    }

    #[test]
    fn a_partition_walk_goes_through_every_shard_and_only_the_tenants() {
        let pks = tenant_messages_gsi5pks("t1");
        let queries: Vec<PageQuery<'_>> = pks
            .iter()
            .map(|pk| PageQuery::index(GSI5, GSI5_PK, GSI5_SK, pk.clone()))
            .collect();
        let last = |pk: &str| -> Item {
            HashMap::from([
                (GSI5_PK.to_owned(), s(pk)),
                (GSI5_SK.to_owned(), s("01J0")),
                (PK.to_owned(), s(message_pk("t1", "01J0"))),
                (SK.to_owned(), s(MESSAGE_SK)),
            ])
        };
        // A partition with more to come continues there; a finished one moves on to the next
        // one's start; the last one ends the walk.
        assert_eq!(
            next_partition_position(3, queries.len(), Some(last(&pks[3]))),
            Some((3, Some(last(&pks[3]))))
        );
        assert_eq!(next_partition_position(3, queries.len(), None), Some((4, None)));
        assert_eq!(next_partition_position(queries.len() - 1, queries.len(), None), None);
        // Walking every position from the start visits each partition once, in order.
        let (mut at, mut seen) = (Some((0, None)), Vec::new());
        while let Some((p, _)) = at {
            seen.push(p);
            at = next_partition_position(p, queries.len(), None);
        }
        assert_eq!(seen, (0..queries.len()).collect::<Vec<_>>());
        // Cursors round-trip, with and without a key.
        for (p, key) in [(0, None), (5, Some(last(&pks[5]))), (16, Some(last(&pks[16])))] {
            let cursor = encode_partitions_cursor(p, key.clone());
            let (at, back) = decode_partitions_cursor(&cursor, &queries).unwrap();
            assert_eq!((at, back), (p, key));
        }
        // Out of range, garbage, or a key of another partition (another tenant's shard, or
        // another shard than named): refused.
        let other_tenant = encode_partitions_cursor(2, Some(last(&tenant_messages_gsi5pk("t2", 2))));
        let other_shard = encode_partitions_cursor(2, Some(last(&pks[3])));
        for bad in [
            "17".to_owned(),
            "x".to_owned(),
            "2:{".to_owned(),
            other_tenant,
            other_shard,
        ] {
            assert!(
                matches!(decode_partitions_cursor(&bad, &queries), Err(StoreError::Corrupt(_))),
                "{bad}"
            );
        }
    }

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
    fn only_conflicts_without_a_failed_condition_are_run_again() {
        let cancelled = |codes: &[Option<&str>]| Cancelled {
            codes: codes.iter().map(|c| c.map(str::to_owned)).collect(),
            old_items: vec![None; codes.len()],
        };
        assert!(cancelled(&[Some("None"), Some("TransactionConflict")]).is_transient());
        assert!(cancelled(&[Some("ThrottlingError")]).is_transient());
        // A failed condition is an answer, not an accident: never run again.
        assert!(!cancelled(&[Some("ConditionalCheckFailed"), Some("TransactionConflict")]).is_transient());
        assert!(!cancelled(&[Some("ValidationError")]).is_transient());
        assert!(!cancelled(&[]).is_transient());
        for attempt in 1..TRANSACTION_ATTEMPTS {
            let pause = conflict_pause(attempt).as_millis() as u64;
            let base = 5u64 << attempt;
            assert!((base..=base * 4).contains(&pause), "{attempt}: {pause}");
        }
    }

    #[test]
    fn batch_backoff_grows_then_caps() {
        assert_eq!(batch_backoff(1).as_millis(), 50);
        assert_eq!(batch_backoff(2).as_millis(), 100);
        assert_eq!(batch_backoff(7), batch_backoff(20));
    }

    #[test]
    fn pages_carry_a_cursor_only_when_more_follows() {
        let item = |i: usize| key(format!("T#t#C#{i}"), PROFILE_SK);
        let (items, next) = trim_page((0..3).map(item).collect(), 2, None, &[PK, SK]);
        assert_eq!(items.len(), 2);
        assert_eq!(next.unwrap()["PK"], "T#t#C#1");
        let (items, next) = trim_page((0..2).map(item).collect(), 2, None, &[PK, SK]);
        assert_eq!((items.len(), next), (2, None));
    }

    #[test]
    fn a_cursor_outside_the_tenant_is_refused() {
        let inside: Position = [("PK".to_owned(), "T#a#C#1".to_owned())].into_iter().collect();
        assert!(start_key("a", Some(inside.clone())).unwrap().is_some());
        assert!(matches!(start_key("b", Some(inside)), Err(StoreError::Corrupt(_))));
        let prefix_trick: Position = [("PK".to_owned(), "T#ab#C#1".to_owned())].into_iter().collect();
        assert!(start_key("a", Some(prefix_trick)).is_err());
    }
}
