//! Creating a broadcast and changing its state on a caller's request — the one implementation
//! behind `POST /v1/broadcasts…` and `crmctl broadcast`. Each change is a conditional write on
//! the version read.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::spec::{SpecError, parse_spec};
use super::{Action, Broadcast, BroadcastStatus, Counters, Progress, transition};
use crate::store::{BroadcastStore, StoreError, TemplateStore, TenantStore};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no such broadcast")]
    NotFound,
    #[error("the registry has no such template (in that language); sync or create it first")]
    TemplateNotFound,
    #[error("the template is not approved (in the broadcast's language)")]
    TemplateNotApproved,
    #[error("from is not one of the tenant's numbers")]
    UnknownNumber,
    #[error("a {} broadcast cannot {}", .from.as_str(), .action.as_str())]
    InvalidState { from: BroadcastStatus, action: Action },
    #[error("the broadcast changed while this request ran; read it and retry")]
    Concurrent,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::VersionMismatch => ControlError::Concurrent,
            e => ControlError::Store(e),
        }
    }
}

/// Validates `body` (the API's), checks the template and number, and stores a `draft`.
pub async fn create<S: BroadcastStore + TemplateStore + TenantStore>(
    store: &S,
    tenant_id: &str,
    body: &Value,
    created_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Broadcast, ControlError> {
    let spec = parse_spec(body, now)?;
    let entries = store.template_languages(tenant_id, &spec.template_name).await?;
    let first = entries
        .iter()
        .find(|e| spec.language.as_ref().is_none_or(|l| &e.language == l))
        .ok_or(ControlError::TemplateNotFound)?;
    if let Some(from) = &spec.phone_number_id {
        let numbers = store.numbers(tenant_id).await?;
        if !numbers.iter().any(|n| &n.phone_number_id == from) {
            return Err(ControlError::UnknownNumber);
        }
    }
    let broadcast = Broadcast {
        tenant_id: tenant_id.to_owned(),
        broadcast_id: crate::ids::new_id(),
        category: first.category.as_str().to_owned(),
        spec,
        status: BroadcastStatus::Draft,
        pause_reason: None,
        counters: Counters::default(),
        progress: Progress::default(),
        created_by: created_by.map(str::to_owned),
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        version: 1,
    };
    store.create_broadcast(&broadcast).await?;
    Ok(broadcast)
}

/// Applies a caller's action; returns the broadcast before and after.
pub async fn act<S: BroadcastStore + TemplateStore>(
    store: &S,
    tenant_id: &str,
    broadcast_id: &str,
    action: Action,
    now: DateTime<Utc>,
) -> Result<(Broadcast, Broadcast), ControlError> {
    if !crate::ids::is_valid_id(broadcast_id) {
        return Err(ControlError::NotFound);
    }
    let b = store
        .get_broadcast(tenant_id, broadcast_id)
        .await?
        .ok_or(ControlError::NotFound)?;
    let starts_later = b.spec.start_at.is_some_and(|s| s > now);
    let status =
        transition(b.status, action, starts_later).ok_or(ControlError::InvalidState { from: b.status, action })?;
    if matches!(action, Action::Start | Action::Resume) {
        let entries = store.template_languages(tenant_id, &b.spec.template_name).await?;
        let approved = entries
            .iter()
            .any(|e| e.is_approved() && b.spec.language.as_ref().is_none_or(|l| &e.language == l));
        if !approved {
            return Err(ControlError::TemplateNotApproved);
        }
    }
    let mut after = b.clone();
    after.status = status;
    after.pause_reason = None;
    after.version += 1;
    after.updated_at = now;
    if status == BroadcastStatus::Running && after.started_at.is_none() {
        after.started_at = Some(now);
    }
    if status.is_final() {
        after.finished_at = Some(now);
    }
    store.save_broadcast(&after).await?;
    Ok((b, after))
}
