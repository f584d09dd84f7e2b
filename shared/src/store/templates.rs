//! The template registry: one partition per tenant (`T#<t>#TPL`), one item per template and
//! language, plus the tenant's creation log and template settings in its tenant partition.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};
use futures::future::join_all;

use super::StoreError;
use super::dynamo::{DynamoStore, PageQuery, av, backend, condition_failed, from_item, key, n, s, to_item};
use super::items::{TemplateCreationsItem, TemplateItem};
use super::keys::*;
use super::ports::{CreationClaim, TemplateSettings, TemplateStore};
use crate::template::{
    TEMPLATE_KIND, TemplateCategory, TemplateChange, TemplateRecord, TemplateUpdate, admit_creation, status,
};

/// Conditional writes of a sync in flight at once.
const SYNC_WRITE_CONCURRENCY: usize = 8;

fn records(items: Vec<super::dynamo::Item>) -> Result<Vec<TemplateRecord>, StoreError> {
    items
        .into_iter()
        .map(|i| from_item::<TemplateItem>(i).map(|t| t.record))
        .collect()
}

/// One webhook change as an `UpdateItem`: the fields it names are set, every other field of a
/// new entry gets its default (`if_not_exists`), so the update creates an entry it does not
/// find.
struct ChangeUpdate {
    sets: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    condition: Option<String>,
}

impl ChangeUpdate {
    fn new() -> Self {
        ChangeUpdate {
            sets: Vec::new(),
            names: HashMap::new(),
            values: HashMap::new(),
            condition: None,
        }
    }

    fn set(&mut self, attr: &str, value: AttributeValue) {
        self.names.insert(format!("#{attr}"), attr.to_owned());
        self.values.insert(format!(":{attr}"), value);
        self.sets.push(format!("#{attr} = :{attr}"));
    }

    fn default(&mut self, attr: &str, value: AttributeValue) {
        self.names.insert(format!("#{attr}"), attr.to_owned());
        self.values.insert(format!(":{attr}"), value);
        self.sets.push(format!("#{attr} = if_not_exists(#{attr}, :{attr})"));
    }

    fn of(tenant_id: &str, change: &TemplateChange, event_time: i64, now: DateTime<Utc>) -> Self {
        let mut u = ChangeUpdate::new();
        u.set("kind", s(TEMPLATE_KIND));
        u.set("tenant_id", s(tenant_id));
        u.set("name", s(&change.name));
        u.set("language", s(&change.language));
        u.set("updated_at", av(&now));
        u.set("updated_ms", n(now.timestamp_millis()));
        if change.meta_id.is_empty() {
            u.default("meta_id", s(""));
        } else {
            u.set("meta_id", s(&change.meta_id));
        }
        u.default("parameter_format", s("POSITIONAL"));
        match &change.update {
            TemplateUpdate::Status {
                status,
                reason,
                category,
            } => {
                u.set("status", s(status));
                u.set("reason", reason.as_ref().map_or(AttributeValue::Null(true), s));
                u.set("status_time", n(event_time));
                match category {
                    Some(c) => u.set("category", s(c.as_str())),
                    None => u.default("category", s(TemplateCategory::Marketing.as_str())),
                }
                u.condition = Some("attribute_not_exists(#status_time) OR #status_time <= :status_time".into());
            }
            TemplateUpdate::Quality { quality } => {
                u.set("quality", s(quality));
                u.default("status", s(status::PENDING));
                u.default("category", s(TemplateCategory::Marketing.as_str()));
            }
            TemplateUpdate::Category { category } => {
                u.set("category", s(category.as_str()));
                u.default("status", s(status::PENDING));
            }
        }
        u
    }
}

impl DynamoStore {
    /// Puts an entry read from Meta's list unless it changed after `started` (`false`: kept as
    /// it is); its status counts as Meta's as of `started`.
    async fn put_template_unless_newer(
        &self,
        record: &TemplateRecord,
        started: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&TemplateItem::new(record, started.timestamp()))))
            .condition_expression("attribute_not_exists(PK) OR updated_ms <= :started")
            .expression_attribute_values(":started", n(started.timestamp_millis()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if condition_failed(&err) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }

    async fn delete_template(
        &self,
        tenant_id: &str,
        (name, language): &(String, String),
        unchanged_since: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(key(templates_pk(tenant_id), template_sk(name, language))))
            .condition_expression("attribute_exists(PK)");
        if let Some(since) = unchanged_since {
            request = request
                .condition_expression("attribute_exists(PK) AND updated_ms <= :since")
                .expression_attribute_values(":since", n(since.timestamp_millis()));
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) if condition_failed(&err) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }
}

impl TemplateStore for DynamoStore {
    async fn template_languages(&self, tenant_id: &str, name: &str) -> Result<Vec<TemplateRecord>, StoreError> {
        let query = PageQuery::partition(templates_pk(tenant_id)).prefixed(template_name_prefix(name));
        records(self.query_all(&query).await?)
    }

    async fn list_templates(&self, tenant_id: &str, name_prefix: &str) -> Result<Vec<TemplateRecord>, StoreError> {
        let query = PageQuery::partition(templates_pk(tenant_id)).prefixed(template_search_prefix(name_prefix));
        records(self.query_all(&query).await?)
    }

    async fn apply_template_change(
        &self,
        tenant_id: &str,
        change: &TemplateChange,
        event_time: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        let u = ChangeUpdate::of(tenant_id, change, event_time, now);
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(
                templates_pk(tenant_id),
                template_sk(&change.name, &change.language),
            )))
            .update_expression(format!("SET {}", u.sets.join(", ")))
            .set_condition_expression(u.condition)
            .set_expression_attribute_names(Some(u.names))
            .set_expression_attribute_values(Some(u.values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out
                    .attributes
                    .ok_or_else(|| StoreError::Corrupt("update returned no item".into()))?;
                Ok(Some(from_item::<TemplateItem>(item)?.record))
            }
            Err(err) if condition_failed(&err) => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }

    async fn put_synced_templates(
        &self,
        records: &[TemplateRecord],
        started: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut written = 0;
        for chunk in records.chunks(SYNC_WRITE_CONCURRENCY) {
            let done = join_all(chunk.iter().map(|r| self.put_template_unless_newer(r, started))).await;
            for w in done {
                written += u64::from(w?);
            }
        }
        Ok(written)
    }

    async fn put_template(&self, record: &TemplateRecord) -> Result<(), StoreError> {
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&TemplateItem::new(record, record.updated_at.timestamp()))))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_templates(
        &self,
        tenant_id: &str,
        keys: &[(String, String)],
        unchanged_since: Option<DateTime<Utc>>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for chunk in keys.chunks(SYNC_WRITE_CONCURRENCY) {
            let done = join_all(
                chunk
                    .iter()
                    .map(|k| self.delete_template(tenant_id, k, unchanged_since)),
            )
            .await;
            for d in done {
                deleted += u64::from(d?);
            }
        }
        Ok(deleted)
    }

    async fn claim_template_creation(
        &self,
        tenant_id: &str,
        now: DateTime<Utc>,
        per_hour: u32,
    ) -> Result<CreationClaim, StoreError> {
        // A lost race reads again; a few rounds are plenty for a human-paced route.
        for _ in 0..4 {
            let current: TemplateCreationsItem = self
                .get(tenant_pk(tenant_id), TEMPLATE_CREATIONS_SK)
                .await?
                .unwrap_or_default();
            let recent = match admit_creation(&current.created_ms, now.timestamp_millis(), per_hour) {
                Ok(recent) => recent,
                Err(retry_after_secs) => return Ok(CreationClaim::Exhausted { retry_after_secs }),
            };
            let mut item = key(tenant_pk(tenant_id), TEMPLATE_CREATIONS_SK);
            item.insert("created_ms".into(), av(&recent));
            item.insert("version".into(), n(current.version + 1));
            // Gone from the table an hour after the last creation.
            item.insert("expires_at".into(), n(now.timestamp() + 3600));
            let result = self
                .client()
                .put_item()
                .table_name(self.table())
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK) OR version = :v")
                .expression_attribute_values(":v", n(current.version))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(CreationClaim::Granted),
                Err(err) if condition_failed(&err) => continue,
                Err(err) => return Err(backend(err)),
            }
        }
        Err(StoreError::VersionMismatch)
    }

    async fn template_settings(&self, tenant_id: &str) -> Result<TemplateSettings, StoreError> {
        Ok(self
            .get(tenant_pk(tenant_id), TEMPLATE_SETTINGS_SK)
            .await?
            .unwrap_or_default())
    }

    async fn put_template_settings(&self, tenant_id: &str, settings: &TemplateSettings) -> Result<(), StoreError> {
        let mut item = to_item(settings);
        item.extend(key(tenant_pk(tenant_id), TEMPLATE_SETTINGS_SK));
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}
