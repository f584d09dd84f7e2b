//! Tenants, their routes (phone number id and WABA id → tenant), their Graph token and their
//! API keys.

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, ReturnValue, Update};
use chrono::{DateTime, Utc};

use super::dynamo::{
    DynamoStore, PageQuery, attr, av, backend, condition_failed, from_item, key, put_always, put_new, s, to_item,
    tx_check, tx_delete, tx_update,
};
use super::items::{
    ContactItem, IdentityItem, KeyItem, NumberItem, RouteItem, SigninItem, TenantItem, TokenItem, key_time,
};
use super::keys::*;
use super::ports::{Alongside, ApiKeyStore, FoundAlongside, TenantStore};
use super::{Page, StoreError};
use crate::cursor::Position;
use crate::secret::Secret;
use crate::signin::SigninCode;
use crate::tenant::{ApiKeyRecord, InboxSettings, PhoneNumber, ReportSettings, Tenant};

impl TenantStore for DynamoStore {
    async fn create_tenant(
        &self,
        tenant: &Tenant,
        graph_token: &Secret,
        first_key: &ApiKeyRecord,
    ) -> Result<(), StoreError> {
        let t = &tenant.tenant_id;
        let items = vec![
            put_new(self.table(), to_item(&TenantItem::new(tenant))),
            put_new(
                self.table(),
                to_item(&RouteItem::new(phone_route_pk(&tenant.phone_number_id), t)),
            ),
            put_new(
                self.table(),
                to_item(&RouteItem::new(waba_route_pk(&tenant.waba_id), t)),
            ),
            put_new(
                self.table(),
                to_item(&TokenItem::new(t, &self.seal_token(t, graph_token).await?)),
            ),
            put_new(self.table(), to_item(&KeyItem::from(first_key))),
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.failed(1) => Err(StoreError::Conflict(format!(
                "phone number id {} is already routed to another tenant",
                tenant.phone_number_id
            ))),
            Err(c) if c.failed(2) => Err(StoreError::Conflict(format!(
                "WABA id {} belongs to another tenant",
                tenant.waba_id
            ))),
            Err(c) if c.any_failed() => Err(StoreError::Conflict("tenant id already exists".into())),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn numbers(&self, tenant_id: &str) -> Result<Vec<PhoneNumber>, StoreError> {
        let Some(tenant) = self.get_tenant(tenant_id).await? else {
            return Ok(Vec::new());
        };
        let query = PageQuery::partition(tenant_pk(tenant_id)).prefixed(NUMBER_PREFIX);
        let mut numbers = vec![tenant.primary_number()];
        for item in self.query_all(&query).await? {
            numbers.push(from_item::<NumberItem>(item)?.number);
        }
        Ok(numbers)
    }

    async fn add_number(&self, tenant: &Tenant, number: &PhoneNumber) -> Result<(), StoreError> {
        let t = &tenant.tenant_id;
        let mut items = vec![
            tx_check(
                ConditionCheck::builder()
                    .table_name(self.table())
                    .set_key(Some(key(tenant_pk(t), TENANT_SK)))
                    .condition_expression("#st = :active")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":active", s("active"))
                    .build()
                    .expect("check is complete"),
            ),
            put_new(
                self.table(),
                to_item(&RouteItem::new(phone_route_pk(&number.phone_number_id), t)),
            ),
            put_new(self.table(), to_item(&NumberItem::new(t, number))),
        ];
        // Another WABA of the tenant's own gets its route; one routed to another tenant is refused.
        let own_waba =
            number.waba_id == tenant.waba_id || self.tenant_for_waba(&number.waba_id).await?.as_deref() == Some(t);
        if !own_waba {
            items.push(put_new(
                self.table(),
                to_item(&RouteItem::new(waba_route_pk(&number.waba_id), t)),
            ));
        }
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.failed(0) => Err(StoreError::NotFound),
            Err(c) if c.failed(1) => Err(StoreError::Conflict(
                match self.tenant_for_phone_number(&number.phone_number_id).await? {
                    Some(owner) if owner == *t => format!(
                        "phone number id {} is already one of the tenant's numbers",
                        number.phone_number_id
                    ),
                    _ => format!("phone number id {} belongs to another tenant", number.phone_number_id),
                },
            )),
            Err(c) if c.failed(3) => Err(StoreError::Conflict(format!(
                "WABA id {} belongs to another tenant",
                number.waba_id
            ))),
            Err(c) if c.any_failed() => Err(StoreError::Conflict("the number is already the tenant's".into())),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn remove_number(&self, tenant: &Tenant, phone_number_id: &str) -> Result<(), StoreError> {
        if phone_number_id == tenant.phone_number_id {
            return Err(StoreError::Conflict(
                "the tenant's first number cannot be removed (it is its default sender)".into(),
            ));
        }
        let t = &tenant.tenant_id;
        let items = vec![
            tx_delete(
                Delete::builder()
                    .table_name(self.table())
                    .set_key(Some(key(tenant_pk(t), number_sk(phone_number_id))))
                    .condition_expression("attribute_exists(PK)")
                    .build()
                    .expect("delete is complete"),
            ),
            tx_delete(
                Delete::builder()
                    .table_name(self.table())
                    .set_key(Some(key(phone_route_pk(phone_number_id), ROUTE_SK)))
                    .condition_expression("tenant_id = :t")
                    .expression_attribute_values(":t", s(t.clone()))
                    .build()
                    .expect("delete is complete"),
            ),
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.any_failed() => Err(StoreError::NotFound),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>, StoreError> {
        let item: Option<TenantItem> = self.get(tenant_pk(tenant_id), TENANT_SK).await?;
        Ok(item.map(|i| i.tenant))
    }

    async fn tenant_for_phone_number(&self, phone_number_id: &str) -> Result<Option<String>, StoreError> {
        let item: Option<RouteItem> = self.get(phone_route_pk(phone_number_id), ROUTE_SK).await?;
        Ok(item.map(|i| i.tenant_id))
    }

    async fn tenant_for_waba(&self, waba_id: &str) -> Result<Option<String>, StoreError> {
        let item: Option<RouteItem> = self.get(waba_route_pk(waba_id), ROUTE_SK).await?;
        Ok(item.map(|i| i.tenant_id))
    }

    async fn graph_token(&self, tenant_id: &str) -> Result<Option<Secret>, StoreError> {
        let item: Option<TokenItem> = self.get(tenant_pk(tenant_id), GRAPH_TOKEN_SK).await?;
        match item {
            Some(i) => Ok(Some(self.open_token(tenant_id, i.access_token).await?)),
            None => Ok(None),
        }
    }

    async fn set_token_invalid(&self, tenant_id: &str, invalid: bool) -> Result<(), StoreError> {
        self.set_tenant_attribute(tenant_id, "token_invalid", AttributeValue::Bool(invalid))
            .await
    }

    async fn set_inbox_settings(&self, tenant_id: &str, settings: &InboxSettings) -> Result<(), StoreError> {
        self.set_tenant_attribute(tenant_id, "inbox", av(settings)).await
    }

    async fn set_report_settings(&self, tenant_id: &str, settings: &ReportSettings) -> Result<(), StoreError> {
        self.set_tenant_attribute(tenant_id, "reports", av(settings)).await
    }

    async fn replace_graph_token(&self, tenant_id: &str, token: &Secret) -> Result<(), StoreError> {
        let tenant = Update::builder()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), TENANT_SK)))
            .update_expression("SET token_invalid = :f")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .build()
            .expect("update is complete");
        let items = vec![
            tx_update(tenant),
            put_always(
                self.table(),
                to_item(&TokenItem::new(tenant_id, &self.seal_token(tenant_id, token).await?)),
            ),
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::NotFound),
        }
    }

    async fn disable_tenant(&self, tenant_id: &str, at: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), TENANT_SK)))
            .update_expression("SET #status = :disabled, disabled_at = if_not_exists(disabled_at, :now)")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":disabled", s("disabled"))
            .expression_attribute_values(":now", s(at.to_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(
                out.attributes
                    .as_ref()
                    .and_then(|a| attr(a, "disabled_at"))
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.to_utc())
                    .unwrap_or(at),
            )),
            Err(err) if condition_failed(&err) => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }

    async fn delete_routes(&self, tenant: &Tenant) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let mut routes = vec![phone_route_pk(&tenant.phone_number_id), waba_route_pk(&tenant.waba_id)];
        for number in self.numbers(&tenant.tenant_id).await?.into_iter().skip(1) {
            routes.push(phone_route_pk(&number.phone_number_id));
            routes.push(waba_route_pk(&number.waba_id));
        }
        routes.sort();
        routes.dedup();
        for pk in routes {
            let result = self
                .client()
                .delete_item()
                .table_name(self.table())
                .set_key(Some(key(pk, ROUTE_SK)))
                .condition_expression("tenant_id = :t")
                .expression_attribute_values(":t", s(tenant.tenant_id.clone()))
                .send()
                .await;
            match result {
                Ok(_) => deleted += 1,
                // Gone already, or routing to someone else now: not this tenant's to delete.
                Err(err) if condition_failed(&err) => {}
                Err(err) => return Err(backend(err)),
            }
        }
        Ok(deleted)
    }
}

impl DynamoStore {
    /// Puts a new item if the tenant is active, in one transaction: `NotFound` when it is not,
    /// `Conflict(conflict)` when the item exists.
    async fn put_new_in_active_tenant(
        &self,
        tenant_id: &str,
        item: super::dynamo::Item,
        conflict: &str,
    ) -> Result<(), StoreError> {
        let items = vec![self.tenant_active_check(tenant_id), put_new(self.table(), item)];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.failed(0) => Err(StoreError::NotFound),
            Err(c) if c.any_failed() => Err(StoreError::Conflict(conflict.into())),
            Err(c) => Err(c.unexplained()),
        }
    }

    /// Sets one attribute of an existing tenant's item (`NotFound` when there is none).
    async fn set_tenant_attribute(&self, tenant_id: &str, name: &str, value: AttributeValue) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), TENANT_SK)))
            .update_expression("SET #attr = :v")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#attr", name)
            .expression_attribute_values(":v", value)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Err(StoreError::NotFound),
            Err(err) => Err(backend(err)),
        }
    }
}

impl ApiKeyStore for DynamoStore {
    async fn put_key(&self, key_record: &ApiKeyRecord) -> Result<(), StoreError> {
        let item = to_item(&KeyItem::from(key_record));
        self.put_new_in_active_tenant(&key_record.tenant_id, item, "key id already exists")
            .await
    }

    async fn get_key(&self, tenant_id: &str, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let item: Option<KeyItem> = self.get(tenant_pk(tenant_id), &api_key_sk(key_id)).await?;
        Ok(item.map(Into::into))
    }

    async fn get_key_along(
        &self,
        tenant_id: &str,
        key_id: &str,
        along: &Alongside,
    ) -> Result<(Option<ApiKeyRecord>, FoundAlongside), StoreError> {
        let key_pk = tenant_pk(tenant_id);
        let (along_pk, along_sk) = match along {
            Alongside::Contact(contact_id) => (contact_pk(tenant_id, contact_id), PROFILE_SK),
            Alongside::PhoneOwner(phone) => (phone_identity_pk(tenant_id, phone), IDENTITY_SK),
        };
        let items = self
            .batch_get(vec![key(key_pk.clone(), api_key_sk(key_id)), key(along_pk, along_sk)])
            .await?;
        let (mut record, mut found) = (None, along.absent());
        for item in items {
            // The two items live in different partitions: the key's is the tenant's.
            if item.get(PK).and_then(|v| v.as_s().ok()) == Some(&key_pk) {
                record = Some(from_item::<KeyItem>(item)?.into());
                continue;
            }
            found = match along {
                Alongside::Contact(_) => {
                    FoundAlongside::Contact(Some(Box::new(from_item::<ContactItem>(item)?.contact)))
                }
                Alongside::PhoneOwner(_) => {
                    FoundAlongside::PhoneOwner(Some(from_item::<IdentityItem>(item)?.contact_id))
                }
            };
        }
        Ok((record, found))
    }

    async fn revoke_key(&self, tenant_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<ApiKeyRecord, StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), api_key_sk(key_id))))
            .update_expression("SET revoked_at = if_not_exists(revoked_at, :at)")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":at", key_time(at))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(from_item::<KeyItem>(out.attributes.unwrap_or_default())?.into()),
            Err(err) if condition_failed(&err) => Err(StoreError::NotFound),
            Err(err) => Err(backend(err)),
        }
    }

    async fn list_keys(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<ApiKeyRecord>, StoreError> {
        let query = self
            .client()
            .query()
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .expression_attribute_values(":pk", s(tenant_pk(tenant_id)))
            .expression_attribute_values(":prefix", s(api_key_sk("")))
            .consistent_read(true);
        self.list_page(query, tenant_id, limit, start, &[PK, SK], |k: KeyItem| k.into())
            .await
    }

    async fn record_key_use(&self, tenant_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), api_key_sk(key_id))))
            .update_expression("SET last_used_at = :at")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":at", key_time(at))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Err(StoreError::NotFound),
            Err(err) => Err(backend(err)),
        }
    }

    async fn get_keys(&self, tenant_id: &str, key_ids: &[String]) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let unique: std::collections::BTreeSet<&String> = key_ids.iter().collect();
        let keys = unique
            .into_iter()
            .map(|k| key(tenant_pk(tenant_id), api_key_sk(k)))
            .collect();
        self.batch_get(keys)
            .await?
            .into_iter()
            .map(|item| Ok(from_item::<KeyItem>(item)?.into()))
            .collect()
    }

    async fn put_signin_code(&self, code: &SigninCode) -> Result<(), StoreError> {
        let item = to_item(&SigninItem::from(code));
        self.put_new_in_active_tenant(&code.tenant_id, item, "code id already exists")
            .await
    }

    async fn take_signin_code(
        &self,
        tenant_id: &str,
        code_id: &str,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SigninCode>, StoreError> {
        let result = self
            .client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), signin_code_sk(code_id))))
            .condition_expression("code_hash = :hash AND expires_at > :now")
            .expression_attribute_values(":hash", s(code_hash))
            .expression_attribute_values(":now", AttributeValue::N(now.timestamp().to_string()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(
                from_item::<SigninItem>(out.attributes.unwrap_or_default())?.into(),
            )),
            Err(err) if condition_failed(&err) => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }
}
