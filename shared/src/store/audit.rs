//! The audit log's storage: one partition per tenant, newest first.

use super::dynamo::{DynamoStore, backend, from_item, s, start_key, to_item, trim_page};
use super::items::AuditItem;
use super::keys::*;
use super::ports::AuditStore;
use super::{Page, StoreError};
use crate::audit::AuditEntry;
use crate::cursor::Position;

impl AuditStore for DynamoStore {
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&AuditItem::new(entry))))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_audit(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<AuditEntry>, StoreError> {
        let out = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(audit_pk(tenant_id)))
            .scan_index_forward(false)
            .limit(limit + 1)
            .set_exclusive_start_key(start_key(tenant_id, start)?)
            .send()
            .await
            .map_err(backend)?;
        let (raw, next) = trim_page(out.items.unwrap_or_default(), limit, out.last_evaluated_key, &[PK, SK]);
        let items = raw
            .into_iter()
            .map(|i| from_item::<AuditItem>(i).map(|a| a.entry))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, next })
    }
}
