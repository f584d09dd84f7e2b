//! Tenant offboarding: the tenant is disabled at once (status, every API key revoked, its
//! phone-number and WABA routes deleted, so neither the API nor webhooks reach it), then all of
//! its data is purged with the same cascades erasure and retention use.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::erasure::attr;
use super::{ErasureCounts, ErasureStatus, Privacy, PrivacyError};
use crate::store::keys::*;
use crate::store::privacy::{ItemKey, PageQuery};
use crate::store::{ApiKeyStore, StoreError, TenantStore};
use crate::tenant::Tenant;

const PAGE: i32 = 1000;

/// What disabling did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disabled {
    pub tenant_id: String,
    pub disabled_at: DateTime<Utc>,
    pub keys_revoked: u64,
    pub routes_deleted: u64,
}

/// What a purge deleted, per kind.
pub type PurgeCounts = BTreeMap<String, u64>;

fn add(counts: &mut PurgeCounts, kind: &str, n: u64) {
    *counts.entry(kind.to_owned()).or_default() += n;
}

fn add_erasure(counts: &mut PurgeCounts, erased: &ErasureCounts) {
    let value = serde_json::to_value(erased).expect("counts serialize");
    for (kind, n) in value.as_object().into_iter().flatten() {
        add(counts, kind, n.as_u64().unwrap_or(0));
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

impl Privacy {
    /// Disables a tenant: status `disabled`, every key revoked, routes deleted. Idempotent;
    /// `None` when there is no such tenant.
    pub async fn disable_tenant(&self, tenant_id: &str) -> Result<Option<Disabled>, PrivacyError> {
        let Some(tenant) = self.store.get_tenant(tenant_id).await? else {
            return Ok(None);
        };
        let now = Utc::now();
        let out = self
            .store
            .client()
            .update_item()
            .table_name(self.store.table())
            .key(PK, s(tenant_pk(tenant_id)))
            .key(SK, s(TENANT_SK))
            .update_expression("SET #status = :disabled, disabled_at = if_not_exists(disabled_at, :now)")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":disabled", s("disabled"))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| StoreError::Backend(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string()))?;
        let disabled_at = out
            .attributes
            .as_ref()
            .and_then(|a| attr(a, "disabled_at"))
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc())
            .unwrap_or(now);

        let mut keys_revoked = 0;
        let mut start = None;
        loop {
            let page = self.store.list_keys(tenant_id, 100, start).await?;
            for key in page.items.iter().filter(|k| k.is_active()) {
                match self.store.revoke_key(tenant_id, &key.key_id, now).await {
                    Ok(_) => keys_revoked += 1,
                    Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        let routes_deleted = self.delete_routes(&tenant).await?;
        Ok(Some(Disabled {
            tenant_id: tenant_id.to_owned(),
            disabled_at,
            keys_revoked,
            routes_deleted,
        }))
    }

    /// Deletes the tenant's phone-number and WABA routes if they still route to it.
    async fn delete_routes(&self, tenant: &Tenant) -> Result<u64, PrivacyError> {
        let mut deleted = 0;
        for pk in [phone_route_pk(&tenant.phone_number_id), waba_route_pk(&tenant.waba_id)] {
            let result = self
                .store
                .client()
                .delete_item()
                .table_name(self.store.table())
                .key(PK, s(pk))
                .key(SK, s(ROUTE_SK))
                .condition_expression("tenant_id = :t")
                .expression_attribute_values(":t", s(tenant.tenant_id.clone()))
                .send()
                .await;
            match result {
                Ok(_) => deleted += 1,
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(err) => {
                    return Err(
                        StoreError::Backend(aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string()).into(),
                    );
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes every item and object of a (disabled) tenant, the tenant record last, so an
    /// interrupted purge is finished by running it again.
    pub async fn purge_tenant(&self, tenant_id: &str) -> Result<PurgeCounts, PrivacyError> {
        let mut counts = PurgeCounts::new();
        let prefix = format!("tenants/{tenant_id}/");
        add(&mut counts, "media_objects", self.media.delete_prefix(&prefix).await?);
        add(
            &mut counts,
            "export_objects",
            self.exports.delete_prefix(&prefix).await?,
        );

        // Erasures still running are finished (their contacts' partitions may hold leftovers).
        let erasures = self.store.tenant_erasures(tenant_id).await?;
        for record in &erasures {
            if record.status == ErasureStatus::InProgress {
                let erased = self.finish_erasure_now(record.clone()).await?;
                add_erasure(&mut counts, &erased);
            }
        }
        let keys: Vec<ItemKey> = erasures
            .iter()
            .map(|r| ItemKey::new(erasure_pk(tenant_id, &r.erasure_id), ERASURE_SK))
            .collect();
        add(&mut counts, "erasure_records", self.store.delete_items(&keys).await?);

        // Contacts: each partition with what its references point at, and identity records.
        let mut handled = HashSet::new();
        let query = PageQuery::index(GSI2, "GSI2PK", "GSI2SK", contacts_index_pk(tenant_id)).limit(PAGE);
        let mut start = None;
        loop {
            let page = self.store.query_page(&query, start).await?;
            for item in &page.items {
                let Some(contact_id) = attr(item, PK).and_then(|pk| pk.rsplit_once("#C#")).map(|(_, c)| c) else {
                    continue;
                };
                let mut erased = ErasureCounts::default();
                while self
                    .delete_contact_partition_page(tenant_id, contact_id, true, &mut erased, &mut handled)
                    .await?
                {}
                add_erasure(&mut counts, &erased);
            }
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }

        // Every message of the tenant, whoever it belonged to.
        let query = PageQuery::index(GSI5, "GSI5PK", "GSI5SK", tenant_messages_gsi5pk(tenant_id))
            .project(super::erasure::MESSAGE_ATTRS)
            .limit(PAGE);
        let mut start = None;
        loop {
            let page = self.store.query_page(&query, start).await?;
            let d = self
                .delete_messages(tenant_id, &page.items, Some(&prefix), false, &mut handled)
                .await?;
            add(&mut counts, "messages", d.messages);
            add(&mut counts, "pointers", d.pointers);
            add(&mut counts, "statuses", d.statuses);
            add(&mut counts, "other_items", d.other_items);
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }

        let exports = self.store.tenant_exports(tenant_id).await?;
        let keys: Vec<ItemKey> = exports
            .iter()
            .map(|e| ItemKey::new(export_pk(tenant_id, &e.export_id), EXPORT_SK))
            .collect();
        add(&mut counts, "exports", self.store.delete_items(&keys).await?);

        let tenant = self.store.get_tenant(tenant_id).await?;
        let mut partitions = vec![("audit_entries", audit_pk(tenant_id)), ("events", events_pk(tenant_id))];
        if let Some(t) = &tenant {
            partitions.push(("other_items", send_schedule_pk(tenant_id, &t.phone_number_id)));
        }
        for (kind, pk) in partitions {
            let n = self.delete_partition(pk, |_| true).await?;
            add(&mut counts, kind, n);
        }

        // The tenant's own partition (keys, secret, settings), the tenant record last.
        let n = self
            .delete_partition(tenant_pk(tenant_id), |k| k.sk != TENANT_SK)
            .await?;
        add(&mut counts, "tenant_items", n);
        if tenant.is_some() {
            add(
                &mut counts,
                "tenant_items",
                self.store
                    .delete_items(&[ItemKey::new(tenant_pk(tenant_id), TENANT_SK)])
                    .await?,
            );
        }
        // Anything a worker stored while this ran.
        add(&mut counts, "media_objects", self.media.delete_prefix(&prefix).await?);
        add(
            &mut counts,
            "export_objects",
            self.exports.delete_prefix(&prefix).await?,
        );
        Ok(counts)
    }

    /// Deletes the items of a partition that `select` picks; returns how many.
    async fn delete_partition(&self, pk: String, select: impl Fn(&ItemKey) -> bool) -> Result<u64, PrivacyError> {
        let query = PageQuery::partition(pk).project(&[PK, SK]).limit(PAGE);
        let mut deleted = 0;
        let mut start = None;
        loop {
            let page = self.store.query_page(&query, start).await?;
            let keys: Vec<ItemKey> = page
                .items
                .iter()
                .filter_map(ItemKey::of)
                .filter(|k| select(k))
                .collect();
            deleted += self.store.delete_items(&keys).await?;
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(deleted),
            }
        }
    }
}
