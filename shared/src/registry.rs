//! The template registry's operations that talk to Meta, over the ports: the reconcile
//! (`POST /v1/templates/sync`, `crmctl templates sync`, the hourly schedule), create and
//! delete. The rules they apply are the pure ones of [`crate::template`].
//!
//! Reconcile: Meta's list is read whole (every page), then each entry is written unless a
//! webhook changed it after the listing began (the webhook is newer than the list), and
//! entries Meta no longer lists are deleted under the same condition. So a sync racing a
//! status webhook never undoes it, and a template created meanwhile is not removed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::audit::AuditEntry;
use crate::graph::{GraphCallError, TemplateApi};
use crate::secret::Secret;
use crate::store::{AuditStore, CreationClaim, PrivacyStore, StoreError, TemplateStore, TenantStore};
use crate::template::lint::NewTemplate;
use crate::template::{CREATIONS_PER_HOUR, TemplateCategory, TemplateRecord, compile, status};
use crate::tenant::{Tenant, TenantStatus};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no such tenant")]
    TenantNotFound,
    #[error("the tenant has no Graph access token")]
    NoToken,
    #[error("no such template")]
    TemplateNotFound,
    #[error("the hourly template creation limit is reached")]
    CreationLimit { retry_after_secs: u64 },
    #[error(transparent)]
    Graph(#[from] GraphCallError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a reconcile did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub tenant_id: String,
    /// Templates (per language) Meta listed.
    pub listed: usize,
    /// Entries written (new, changed or confirmed).
    pub written: u64,
    /// Entries deleted because Meta no longer has them.
    pub removed: u64,
    pub synced_at: DateTime<Utc>,
}

async fn tenant_and_token<S: TenantStore>(store: &S, tenant_id: &str) -> Result<(Tenant, Secret), RegistryError> {
    let tenant = store
        .get_tenant(tenant_id)
        .await?
        .ok_or(RegistryError::TenantNotFound)?;
    let token = store.graph_token(tenant_id).await?.ok_or(RegistryError::NoToken)?;
    Ok((tenant, token))
}

async fn audit<S: AuditStore>(store: &S, entry: AuditEntry) {
    // The registry change happened; a lost audit entry is logged, not turned into a failure.
    if let Err(e) = store.record_audit(&entry).await {
        tracing::error!(error = %e, action = %entry.action, "could not record an audit entry");
    }
}

/// Reconciles the tenant's registry with Meta's list. `actor`: the API key that asked, or
/// `None` for the schedule and operators.
pub async fn sync<S, G>(
    store: &S,
    graph: &G,
    tenant_id: &str,
    actor: Option<&str>,
    now: DateTime<Utc>,
) -> Result<SyncReport, RegistryError>
where
    S: TenantStore + TemplateStore + AuditStore,
    G: TemplateApi,
{
    let (tenant, token) = tenant_and_token(store, tenant_id).await?;
    let listed = graph.list_templates(&tenant.waba_id, &token).await?;
    let records: Vec<TemplateRecord> = listed
        .iter()
        .filter_map(|m| TemplateRecord::from_meta(tenant_id, m, now))
        .collect();
    let known = store.list_templates(tenant_id, "").await?;
    let gone: Vec<(String, String)> = known
        .iter()
        .filter(|k| !records.iter().any(|r| r.name == k.name && r.language == k.language))
        .map(|k| (k.name.clone(), k.language.clone()))
        .collect();
    let written = store.put_synced_templates(&records, now).await?;
    let removed = store.delete_templates(tenant_id, &gone, Some(now)).await?;
    let report = SyncReport {
        tenant_id: tenant_id.to_owned(),
        listed: records.len(),
        written,
        removed,
        synced_at: now,
    };
    audit(
        store,
        AuditEntry::new(tenant_id, actor, "templates.sync")
            .detail("listed", report.listed)
            .detail("written", report.written)
            .detail("removed", report.removed),
    )
    .await;
    Ok(report)
}

/// Creates a linted template at Meta within the hourly allowance and stores it as Meta
/// answered (`PENDING` until the status webhook arrives).
pub async fn create<S, G>(
    store: &S,
    graph: &G,
    tenant_id: &str,
    new: &NewTemplate,
    actor: Option<&str>,
    now: DateTime<Utc>,
) -> Result<TemplateRecord, RegistryError>
where
    S: TenantStore + TemplateStore + AuditStore,
    G: TemplateApi,
{
    let (tenant, token) = tenant_and_token(store, tenant_id).await?;
    if let CreationClaim::Exhausted { retry_after_secs } = store
        .claim_template_creation(tenant_id, now, CREATIONS_PER_HOUR)
        .await?
    {
        return Err(RegistryError::CreationLimit { retry_after_secs });
    }
    let answer = graph.create_template(&tenant.waba_id, &token, &new.meta_body()).await?;
    let record = created_record(tenant_id, new, &answer, now);
    store.put_template(&record).await?;
    audit(
        store,
        AuditEntry::new(tenant_id, actor, "template.create")
            .target("template", &record.name)
            .detail("language", record.language.as_str())
            .detail("status", record.status.as_str()),
    )
    .await;
    Ok(record)
}

/// The entry of a template Meta just accepted for review.
fn created_record(tenant_id: &str, new: &NewTemplate, answer: &Value, now: DateTime<Utc>) -> TemplateRecord {
    let text = |f: &str| answer.get(f).and_then(Value::as_str);
    TemplateRecord {
        tenant_id: tenant_id.to_owned(),
        name: new.name.clone(),
        language: new.language.clone(),
        meta_id: answer
            .get("id")
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default(),
        status: text("status").unwrap_or(status::PENDING).to_ascii_uppercase(),
        reason: None,
        // Meta may recategorise on creation; its answer wins.
        category: text("category")
            .and_then(TemplateCategory::parse)
            .unwrap_or(new.category),
        quality: None,
        parameter_format: new.parameter_format,
        schema: Some(compile(&new.components)),
        components: new.components.clone(),
        last_synced_at: None,
        updated_at: now,
    }
}

/// Deletes a template at Meta, every language or one, then from the registry; returns the
/// entries removed.
pub async fn delete<S, G>(
    store: &S,
    graph: &G,
    tenant_id: &str,
    name: &str,
    language: Option<&str>,
    actor: Option<&str>,
) -> Result<u64, RegistryError>
where
    S: TenantStore + TemplateStore + AuditStore,
    G: TemplateApi,
{
    let entries = store.template_languages(tenant_id, name).await?;
    let doomed: Vec<&TemplateRecord> = entries
        .iter()
        .filter(|e| language.is_none_or(|l| e.language == l))
        .collect();
    if doomed.is_empty() {
        return Err(RegistryError::TemplateNotFound);
    }
    let (tenant, token) = tenant_and_token(store, tenant_id).await?;
    // One language: by its hsm_id (Meta deletes every language of a name otherwise).
    let hsm_id = language
        .and(doomed.first().map(|e| e.meta_id.as_str()))
        .filter(|id| !id.is_empty());
    match graph.delete_template(&tenant.waba_id, &token, name, hsm_id).await {
        Ok(()) => {}
        // Already gone at Meta: the registry follows.
        Err(GraphCallError::Api { status: 404, .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let keys: Vec<(String, String)> = doomed.iter().map(|e| (e.name.clone(), e.language.clone())).collect();
    let removed = store.delete_templates(tenant_id, &keys, None).await?;
    let mut entry = AuditEntry::new(tenant_id, actor, "template.delete")
        .target("template", name)
        .detail("removed", removed);
    if let Some(l) = language {
        entry = entry.detail("language", l);
    }
    audit(store, entry).await;
    Ok(removed)
}

/// What the scheduled reconcile did across tenants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncAllReport {
    pub tenants_synced: usize,
    pub tenants_failed: usize,
    pub tenants_skipped: usize,
    pub written: u64,
    pub removed: u64,
}

/// The hourly reconcile: every active tenant in turn; one tenant's failure (a revoked token,
/// Meta down) is logged and the others still run.
pub async fn sync_all<S, G>(store: &S, graph: &G, now: DateTime<Utc>) -> Result<SyncAllReport, RegistryError>
where
    S: TenantStore + TemplateStore + AuditStore + PrivacyStore,
    G: TemplateApi,
{
    let mut report = SyncAllReport::default();
    for tenant_id in store.tenant_ids().await? {
        let active = store
            .get_tenant(&tenant_id)
            .await?
            .is_some_and(|t| t.status == TenantStatus::Active && !t.token_invalid);
        if !active {
            report.tenants_skipped += 1;
            continue;
        }
        match sync(store, graph, &tenant_id, None, now).await {
            Ok(r) => {
                report.tenants_synced += 1;
                report.written += r.written;
                report.removed += r.removed;
            }
            Err(e) => {
                tracing::warn!(error = %e, %tenant_id, "template reconcile failed for a tenant");
                report.tenants_failed += 1;
            }
        }
    }
    Ok(report)
}
