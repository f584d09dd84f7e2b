//! The hourly template reconcile (EventBridge schedule → `template-sync`): every active
//! tenant's registry against Meta's list, fixing drift the webhooks missed.

use chrono::Utc;
use lambda_runtime::Error;
use serde_json::{Value, json};

use crm_shared::graph::TemplateApi;
use crm_shared::registry;
use crm_shared::store::{AuditStore, PrivacyStore, TemplateStore, TenantStore};

/// Runs one reconcile and answers its counts (tenant ids stay in the log only).
pub async fn reconcile<S, G>(store: &S, graph: &G) -> Result<Value, Error>
where
    S: TenantStore + TemplateStore + AuditStore + PrivacyStore,
    G: TemplateApi,
{
    let report = registry::sync_all(store, graph, Utc::now()).await?;
    tracing::info!(?report, "template reconcile done");
    Ok(json!(report))
}
