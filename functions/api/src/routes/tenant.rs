//! `GET /v1/tenant` (the tenant), `GET /v1/numbers` (its WhatsApp numbers) and the inbox
//! settings (`GET/PUT /v1/settings/inbox`).

use lambda_http::{Body, Request, Response};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::json_input;
use crate::{ApiStore, Deps, audit, ok_json, request_id};
use crm_shared::cursor::Position;
use crm_shared::tenant::InboxSettings;

pub async fn get<S: ApiStore, L, Q>(deps: &Deps<S, L, Q>, caller: &Caller) -> Result<Response<Body>, ApiError> {
    let tenant = deps
        .store
        .get_tenant(&caller.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    ok_json(&json!({
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "role": caller.role,
        "key_id": caller.key_id,
        "phone_number_id": tenant.phone_number_id,
        "waba_id": tenant.waba_id,
        "status": tenant.status,
        "created_at": tenant.created_at,
    }))
}

/// `GET /v1/numbers`: the tenant's WhatsApp numbers, the first (default sender) first, paged as
/// every list is (a tenant has few: they are read whole and the page cut from them).
pub async fn numbers<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    const LISTING: &str = "numbers";
    let page = page_request(req, &deps.cursors, &caller.tenant_id, LISTING)?;
    let numbers = deps.store.numbers(&caller.tenant_id).await?;
    let after = page.start.as_ref().and_then(|p| p.get("after"));
    // Past the cursor's number; if it was removed since, past where it stood (the first number
    // leads, the others follow in id order).
    let from = after.map_or(0, |id| match numbers.iter().position(|n| &n.phone_number_id == id) {
        Some(i) => i + 1,
        None => numbers
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, n)| n.phone_number_id.as_str() > id.as_str())
            .map_or(numbers.len(), |(i, _)| i),
    });
    let limit = page.limit as usize;
    let shown = &numbers[from..];
    let next =
        (shown.len() > limit).then(|| Position::from([("after".to_owned(), shown[limit - 1].phone_number_id.clone())]));
    let items: Vec<_> = shown
        .iter()
        .take(limit)
        .map(|n| {
            json!({
                "phone_number_id": n.phone_number_id,
                "display_phone_number": n.display_phone_number,
                "waba_id": n.waba_id,
                "label": n.label,
                "added_at": n.added_at,
            })
        })
        .collect();
    ok_json(&envelope(items, next, &deps.cursors, &caller.tenant_id, LISTING))
}

pub async fn get_inbox_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let tenant = deps
        .store
        .get_tenant(&caller.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    ok_json(&json!(tenant.inbox))
}

pub async fn put_inbox_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &lambda_http::Request,
) -> Result<Response<Body>, ApiError> {
    let settings: InboxSettings = json_input(req)?;
    settings.validate().map_err(|m| {
        ApiError::new(
            lambda_http::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_settings",
            m,
        )
    })?;
    deps.store.set_inbox_settings(&caller.tenant_id, &settings).await?;
    // This instance applies it at once; others within the tenant cache's 30 s.
    deps.tenant_status.forget(&caller.tenant_id);
    let entry = caller
        .audit_entry("settings.inbox")
        .detail("need_to_know", settings.need_to_know)
        .detail("auto_resolve_after_hours", settings.auto_resolve_after_hours)
        .request(request_id(req).as_deref());
    audit(&deps.store, entry).await;
    ok_json(&json!(settings))
}
