//! The audit log's storage: one partition per tenant, newest first.

use super::dynamo::{DynamoStore, backend, s, to_item};
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
        let query = self
            .client()
            .query()
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(audit_pk(tenant_id)))
            .scan_index_forward(false);
        self.list_page(query, tenant_id, limit, start, &[PK, SK], |a: AuditItem| a.entry)
            .await
    }
}
