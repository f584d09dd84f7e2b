//! [`TemplateStore`] for [`MemStore`], mirroring `store/templates.rs`: entries by (tenant,
//! name, language) in sort-key order, the status-time condition of webhook changes, the
//! "unchanged since the listing began" condition of sync writes and deletes, the sliding
//! creation window and the settings item.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::{MemStore, Op};
use crate::store::keys::template_sk;
use crate::store::{CreationClaim, StoreError, TemplateSettings, TemplateStore};
use crate::template::{TemplateChange, TemplateRecord, admit_creation};

struct Entry {
    record: TemplateRecord,
    status_time: i64,
}

#[derive(Default)]
pub(super) struct TemplateState {
    /// (tenant, sort key) → entry, so prefixes and order are the table's.
    entries: BTreeMap<(String, String), Entry>,
    creations: HashMap<String, Vec<i64>>,
    settings: HashMap<String, TemplateSettings>,
}

impl TemplateState {
    /// Offboarding: the tenant's registry partition.
    pub(super) fn delete_tenant(&mut self, tenant_id: &str) -> u64 {
        let before = self.entries.len();
        self.entries.retain(|(t, _), _| t != tenant_id);
        (before - self.entries.len()) as u64
    }

    fn with_prefix(&self, tenant_id: &str, prefix: &str) -> Vec<TemplateRecord> {
        self.entries
            .iter()
            .filter(|((t, sk), _)| t == tenant_id && sk.starts_with(prefix))
            .map(|(_, e)| e.record.clone())
            .collect()
    }
}

fn entry_key(record: &TemplateRecord) -> (String, String) {
    (record.tenant_id.clone(), template_sk(&record.name, &record.language))
}

impl MemStore {
    /// Every registry entry of a tenant (inspection).
    pub fn templates_of(&self, tenant_id: &str) -> Vec<TemplateRecord> {
        self.state().templates.with_prefix(tenant_id, "TPL#")
    }
}

impl TemplateStore for MemStore {
    async fn template_languages(&self, tenant_id: &str, name: &str) -> Result<Vec<TemplateRecord>, StoreError> {
        self.enter(Op::TemplateLanguages, 1).await?;
        Ok(self.state().templates.with_prefix(tenant_id, &format!("TPL#{name}#")))
    }

    async fn list_templates(&self, tenant_id: &str, name_prefix: &str) -> Result<Vec<TemplateRecord>, StoreError> {
        self.enter(Op::ListTemplates, 1).await?;
        Ok(self
            .state()
            .templates
            .with_prefix(tenant_id, &format!("TPL#{name_prefix}")))
    }

    async fn apply_template_change(
        &self,
        tenant_id: &str,
        change: &TemplateChange,
        event_time: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        self.enter(Op::ApplyTemplateChange, 1).await?;
        let mut s = self.state();
        let k = (tenant_id.to_owned(), template_sk(&change.name, &change.language));
        let current = s.templates.entries.remove(&k);
        let is_status = matches!(change.update, crate::template::TemplateUpdate::Status { .. });
        if let Some(e) = &current
            && is_status
            && e.status_time > event_time
        {
            s.templates.entries.insert(k, current.expect("checked"));
            return Ok(None);
        }
        let status_time = match (&current, is_status) {
            (_, true) => event_time,
            (Some(e), false) => e.status_time,
            (None, false) => i64::MIN,
        };
        let record = change.apply(tenant_id, current.map(|e| e.record), now);
        s.templates.entries.insert(
            k,
            Entry {
                record: record.clone(),
                status_time,
            },
        );
        Ok(Some(record))
    }

    async fn put_synced_templates(
        &self,
        records: &[TemplateRecord],
        started: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.enter(Op::PutSyncedTemplates, records.len() as u32).await?;
        let mut s = self.state();
        let mut written = 0;
        for record in records {
            let k = entry_key(record);
            let newer = s
                .templates
                .entries
                .get(&k)
                .is_some_and(|e| e.record.updated_at > started);
            if !newer {
                let entry = Entry {
                    record: record.clone(),
                    status_time: started.timestamp(),
                };
                s.templates.entries.insert(k, entry);
                written += 1;
            }
        }
        Ok(written)
    }

    async fn put_template(&self, record: &TemplateRecord) -> Result<(), StoreError> {
        self.enter(Op::PutTemplate, 1).await?;
        let entry = Entry {
            record: record.clone(),
            status_time: record.updated_at.timestamp(),
        };
        self.state().templates.entries.insert(entry_key(record), entry);
        Ok(())
    }

    async fn delete_templates(
        &self,
        tenant_id: &str,
        keys: &[(String, String)],
        unchanged_since: Option<DateTime<Utc>>,
    ) -> Result<u64, StoreError> {
        self.enter(Op::DeleteTemplates, keys.len() as u32).await?;
        let mut s = self.state();
        let mut deleted = 0;
        for (name, language) in keys {
            let k = (tenant_id.to_owned(), template_sk(name, language));
            let deletable = s
                .templates
                .entries
                .get(&k)
                .is_some_and(|e| unchanged_since.is_none_or(|since| e.record.updated_at <= since));
            if deletable {
                s.templates.entries.remove(&k);
                deleted += 1;
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
        self.enter(Op::ClaimTemplateCreation, 2).await?;
        let mut s = self.state();
        let log = s.templates.creations.entry(tenant_id.to_owned()).or_default();
        match admit_creation(log, now.timestamp_millis(), per_hour) {
            Ok(next) => {
                *log = next;
                Ok(CreationClaim::Granted)
            }
            Err(retry_after_secs) => Ok(CreationClaim::Exhausted { retry_after_secs }),
        }
    }

    async fn template_settings(&self, tenant_id: &str) -> Result<TemplateSettings, StoreError> {
        self.enter(Op::TemplateSettings, 1).await?;
        Ok(self
            .state()
            .templates
            .settings
            .get(tenant_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn put_template_settings(&self, tenant_id: &str, settings: &TemplateSettings) -> Result<(), StoreError> {
        self.enter(Op::PutTemplateSettings, 1).await?;
        self.state()
            .templates
            .settings
            .insert(tenant_id.to_owned(), settings.clone());
        Ok(())
    }
}
