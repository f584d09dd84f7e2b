//! The DynamoDB implementation of the storage ports.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, ReturnValue, TransactWriteItem};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use super::keys::*;
use super::{ApiKeyStore, Page, StoreError, TenantStore};
use crate::cursor::Position;
use crate::secret::Secret;
use crate::tenant::{ApiKeyRecord, Tenant};

/// One table, one client; cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// Seals and opens Graph tokens (crate::kms); none: stored as given.
    pub(crate) tokens: Option<crate::kms::TokenCipher>,
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

    async fn get_item<T: for<'de> Deserialize<'de>>(&self, pk: String, sk: &str) -> Result<Option<T>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        out.item.map(from_item).transpose()
    }
}

pub(crate) fn backend<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Backend(DisplayErrorContext(&err).to_string())
}

pub(crate) fn from_item<T: for<'de> Deserialize<'de>>(item: HashMap<String, AttributeValue>) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn to_item<T: Serialize>(value: &T) -> HashMap<String, AttributeValue> {
    serde_dynamo::to_item(value).expect("our item types always serialize to a map")
}

/// A `LastEvaluatedKey` as a cursor position (all our key attributes are strings).
pub(crate) fn position(key: HashMap<String, AttributeValue>) -> Position {
    key.into_iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|s| (k, s.clone())))
        .collect()
}

/// Turns a query run with `Limit = limit + 1` into a page of at most `limit` items whose next
/// position is absent exactly when nothing follows (no cursor that leads to an empty page).
/// `key_attrs` are the attributes of the queried index's `LastEvaluatedKey`.
pub(crate) fn trim_page(
    mut items: Vec<HashMap<String, AttributeValue>>,
    limit: i32,
    last_evaluated: Option<HashMap<String, AttributeValue>>,
    key_attrs: &[&str],
) -> (Vec<HashMap<String, AttributeValue>>, Option<Position>) {
    let limit = limit.max(1) as usize;
    if items.len() > limit {
        items.truncate(limit);
        let last = items.last().expect("limit is at least one");
        let next = key_attrs
            .iter()
            .filter_map(|k| {
                last.get(*k)
                    .and_then(|v| v.as_s().ok())
                    .map(|v| (k.to_string(), v.clone()))
            })
            .collect();
        (items, Some(next))
    } else {
        (items, last_evaluated.map(position))
    }
}

/// A cursor position back into an `ExclusiveStartKey`, refusing one outside the tenant's
/// partition (defence in depth: cursors are already bound to their tenant cryptographically).
pub(crate) fn start_key(
    tenant_id: &str,
    start: Option<Position>,
) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
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

fn timestamp(at: DateTime<Utc>) -> AttributeValue {
    AttributeValue::S(at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Indices of the transaction items whose condition failed.
fn failed_conditions(err: &SdkError<TransactWriteItemsError, impl std::fmt::Debug>) -> Option<Vec<usize>> {
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = err.as_service_error()? else {
        return None;
    };
    Some(
        cancelled
            .cancellation_reasons()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
            .map(|(i, _)| i)
            .collect(),
    )
}

#[derive(Serialize, Deserialize)]
struct TenantItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(rename = "GSI1PK")]
    gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    gsi1sk: String,
    #[serde(flatten)]
    tenant: Tenant,
}

#[derive(Serialize, Deserialize)]
struct RouteItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    tenant_id: String,
}

#[derive(Serialize, Deserialize)]
struct TokenItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    access_token: String,
}

#[derive(Serialize, Deserialize)]
struct KeyItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    tenant_id: String,
    key_id: String,
    role: crate::auth::Role,
    key_hash: String,
    created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used_at: Option<DateTime<Utc>>,
}

impl From<&ApiKeyRecord> for KeyItem {
    fn from(k: &ApiKeyRecord) -> Self {
        KeyItem {
            pk: tenant_pk(&k.tenant_id),
            sk: api_key_sk(&k.key_id),
            tenant_id: k.tenant_id.clone(),
            key_id: k.key_id.clone(),
            role: k.role,
            key_hash: k.key_hash.clone(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

impl From<KeyItem> for ApiKeyRecord {
    fn from(k: KeyItem) -> Self {
        ApiKeyRecord {
            tenant_id: k.tenant_id,
            key_id: k.key_id,
            role: k.role,
            key_hash: k.key_hash,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

fn put_new(table: &str, item: HashMap<String, AttributeValue>) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(PK)")
        .build()
        .expect("table, item and condition are set");
    TransactWriteItem::builder().put(put).build()
}

impl TenantStore for DynamoStore {
    async fn create_tenant(
        &self,
        tenant: &Tenant,
        graph_token: &Secret,
        first_key: &ApiKeyRecord,
    ) -> Result<(), StoreError> {
        let tenant_item = TenantItem {
            pk: tenant_pk(&tenant.tenant_id),
            sk: TENANT_SK.into(),
            gsi1pk: ALL_TENANTS_GSI1PK.into(),
            gsi1sk: tenant.tenant_id.clone(),
            tenant: tenant.clone(),
        };
        let route = RouteItem {
            pk: phone_route_pk(&tenant.phone_number_id),
            sk: ROUTE_SK.into(),
            tenant_id: tenant.tenant_id.clone(),
        };
        let waba_route = RouteItem {
            pk: waba_route_pk(&tenant.waba_id),
            sk: ROUTE_SK.into(),
            tenant_id: tenant.tenant_id.clone(),
        };
        let token = TokenItem {
            pk: tenant_pk(&tenant.tenant_id),
            sk: GRAPH_TOKEN_SK.into(),
            access_token: self.seal_token(&tenant.tenant_id, graph_token).await?,
        };
        let result = self
            .client
            .transact_write_items()
            .transact_items(put_new(&self.table, to_item(&tenant_item)))
            .transact_items(put_new(&self.table, to_item(&route)))
            .transact_items(put_new(&self.table, to_item(&waba_route)))
            .transact_items(put_new(&self.table, to_item(&token)))
            .transact_items(put_new(&self.table, to_item(&KeyItem::from(first_key))))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match failed_conditions(&err) {
                Some(failed) if failed.contains(&1) => Err(StoreError::Conflict(format!(
                    "phone number id {} is already routed to another tenant",
                    tenant.phone_number_id
                ))),
                Some(failed) if !failed.is_empty() => Err(StoreError::Conflict("tenant id already exists".into())),
                _ => Err(backend(err)),
            },
        }
    }

    async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>, StoreError> {
        let item: Option<TenantItem> = self.get_item(tenant_pk(tenant_id), TENANT_SK).await?;
        Ok(item.map(|i| i.tenant))
    }

    async fn tenant_for_phone_number(&self, phone_number_id: &str) -> Result<Option<String>, StoreError> {
        let item: Option<RouteItem> = self.get_item(phone_route_pk(phone_number_id), ROUTE_SK).await?;
        Ok(item.map(|i| i.tenant_id))
    }

    async fn tenant_for_waba(&self, waba_id: &str) -> Result<Option<String>, StoreError> {
        let item: Option<RouteItem> = self.get_item(waba_route_pk(waba_id), ROUTE_SK).await?;
        Ok(item.map(|i| i.tenant_id))
    }

    async fn graph_token(&self, tenant_id: &str) -> Result<Option<Secret>, StoreError> {
        let item: Option<TokenItem> = self.get_item(tenant_pk(tenant_id), GRAPH_TOKEN_SK).await?;
        match item {
            Some(i) => Ok(Some(self.open_token(tenant_id, i.access_token).await?)),
            None => Ok(None),
        }
    }
}

impl ApiKeyStore for DynamoStore {
    async fn put_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let tenant_exists = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(tenant_pk(&key.tenant_id)))
            .key(SK, AttributeValue::S(TENANT_SK.into()))
            .condition_expression("attribute_exists(PK) AND #status = :active")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", AttributeValue::S("active".into()))
            .build()
            .expect("table, key and condition are set");
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(tenant_exists).build())
            .transact_items(put_new(&self.table, to_item(&KeyItem::from(key))))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match failed_conditions(&err) {
                Some(failed) if failed.contains(&0) => Err(StoreError::NotFound),
                Some(failed) if !failed.is_empty() => Err(StoreError::Conflict("key id already exists".into())),
                _ => Err(backend(err)),
            },
        }
    }

    async fn get_key(&self, tenant_id: &str, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let item: Option<KeyItem> = self.get_item(tenant_pk(tenant_id), &api_key_sk(key_id)).await?;
        Ok(item.map(Into::into))
    }

    async fn revoke_key(&self, tenant_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<ApiKeyRecord, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(tenant_pk(tenant_id)))
            .key(SK, AttributeValue::S(api_key_sk(key_id)))
            .update_expression("SET revoked_at = if_not_exists(revoked_at, :at)")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":at", timestamp(at))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item: KeyItem = from_item(out.attributes.unwrap_or_default())?;
                Ok(item.into())
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::NotFound)
            }
            Err(err) => Err(backend(err)),
        }
    }

    async fn list_keys(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<ApiKeyRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(tenant_pk(tenant_id)))
            .expression_attribute_values(":prefix", AttributeValue::S(api_key_sk("")))
            .limit(limit + 1)
            .set_exclusive_start_key(start_key(tenant_id, start)?)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let (raw, next) = trim_page(out.items.unwrap_or_default(), limit, out.last_evaluated_key, &[PK, SK]);
        let items = raw
            .into_iter()
            .map(|i| from_item::<KeyItem>(i).map(Into::into))
            .collect::<Result<Vec<ApiKeyRecord>, _>>()?;
        Ok(Page { items, next })
    }

    async fn record_key_use(&self, tenant_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(tenant_pk(tenant_id)))
            .key(SK, AttributeValue::S(api_key_sk(key_id)))
            .update_expression("SET last_used_at = :at")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":at", timestamp(at))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::NotFound)
            }
            Err(err) => Err(backend(err)),
        }
    }
}
