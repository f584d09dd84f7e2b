//! Tenant offboarding: the tenant is disabled at once (status, every API key revoked, its
//! phone-number and WABA routes deleted, so neither the API nor webhooks reach it), then all of
//! its data is purged with the same cascades erasure and retention use.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ErasureCounts, ErasureStatus, Privacy, PrivacyError, PrivacyPorts};
use crate::jobs::JobQueue;
use crate::objects::ObjectStore;
use crate::store::{MessageScope, StoreError, TenantRecords};

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

impl<S: PrivacyPorts, O: ObjectStore, Q: JobQueue> Privacy<S, O, Q> {
    /// Disables a tenant: status `disabled`, every key revoked, routes deleted. Idempotent;
    /// `None` when there is no such tenant.
    pub async fn disable_tenant(&self, tenant_id: &str) -> Result<Option<Disabled>, PrivacyError> {
        let Some(tenant) = self.store.get_tenant(tenant_id).await? else {
            return Ok(None);
        };
        let now = Utc::now();
        let disabled_at = self.store.disable_tenant(tenant_id, now).await?.unwrap_or(now);

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
        let routes_deleted = self.store.delete_routes(&tenant).await?;
        Ok(Some(Disabled {
            tenant_id: tenant_id.to_owned(),
            disabled_at,
            keys_revoked,
            routes_deleted,
        }))
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
        let ids: Vec<String> = erasures.iter().map(|r| r.erasure_id.clone()).collect();
        add(
            &mut counts,
            "erasure_records",
            self.store.delete_erasures(tenant_id, &ids).await?,
        );

        // Contacts: each partition with what its references point at, and identity records.
        let mut handled = HashSet::new();
        let mut next = None;
        loop {
            let page = self.store.contact_ids(tenant_id, next, PAGE).await?;
            for contact_id in &page.items {
                let mut erased = ErasureCounts::default();
                while let Some(deleted) = self
                    .store
                    .delete_contact_items(tenant_id, contact_id, true, &mut handled)
                    .await?
                {
                    erased.add(&deleted);
                }
                add_erasure(&mut counts, &erased);
            }
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }

        // Every message of the tenant, whoever it belonged to.
        let mut next = None;
        loop {
            let page = self
                .store
                .message_refs(tenant_id, MessageScope::Tenant { before: None }, next, PAGE)
                .await?;
            let d = self
                .delete_messages(tenant_id, &page.items, Some(&prefix), false, &mut handled)
                .await?;
            add(&mut counts, "messages", d.messages);
            add(&mut counts, "pointers", d.pointers);
            add(&mut counts, "statuses", d.statuses);
            add(&mut counts, "other_items", d.other_items);
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }

        let exports = self.store.tenant_exports(tenant_id).await?;
        add(
            &mut counts,
            "exports",
            self.store.delete_exports(tenant_id, &exports).await?,
        );

        let tenant = self.store.get_tenant(tenant_id).await?;
        let mut records = vec![
            ("audit_entries", TenantRecords::Audit),
            ("events", TenantRecords::RawEvents),
            ("event_stream_items", TenantRecords::EventStream),
            ("templates", TenantRecords::Templates),
            ("broadcasts", TenantRecords::Broadcasts),
            ("other_items", TenantRecords::Tombstones),
        ];
        if let Some(t) = &tenant {
            records.push(("other_items", TenantRecords::SendSchedule(&t.phone_number_id)));
        }
        // The tenant's own partition (keys, secret, settings), the tenant record last.
        records.push(("tenant_items", TenantRecords::TenantPartition));
        if tenant.is_some() {
            records.push(("tenant_items", TenantRecords::Tenant));
        }
        for (kind, which) in records {
            let n = self.store.delete_tenant_records(tenant_id, which).await?;
            add(&mut counts, kind, n);
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
}
