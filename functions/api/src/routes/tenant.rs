//! `GET /v1/tenant`: who am I.

use lambda_http::{Body, Response};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{ApiStore, Deps, ok_json};

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
