//! `/v1/apikeys`: the tenant's own key management (admin). Plaintext keys are shown once, at
//! creation; listings show ids, roles and times, never hashes.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crm_shared::admin;
use crm_shared::auth::Role;
use crm_shared::store::StoreError;
use crm_shared::tenant::ApiKeyRecord;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::json_input;
use crate::{ApiStore, Deps, audit, json_body, ok_json, request_id};

const LISTING: &str = "apikeys";

fn view(k: &ApiKeyRecord) -> Value {
    json!({
        "key_id": k.key_id,
        "role": k.role,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
        "last_used_at": k.last_used_at,
        "active": k.is_usable_at(chrono::Utc::now()),
        "user_id": k.user_id,
        "expires_at": k.expires_at,
    })
}

pub async fn list<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let page = page_request(req, &deps.cursors, &caller.tenant_id, LISTING)?;
    let result = deps.store.list_keys(&caller.tenant_id, page.limit, page.start).await?;
    let items = result.items.iter().map(view).collect();
    ok_json(&envelope(items, result.next, &deps.cursors, &caller.tenant_id, LISTING))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    role: Role,
}

pub async fn create<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let input: CreateKey = json_input(req)?;
    let created = admin::create_api_key(&deps.store, &caller.tenant_id, input.role).await?;
    audit(
        &deps.store,
        caller
            .audit_entry("api_key.create")
            .target("api_key", &created.record.key_id)
            .request(request_id(req).as_deref())
            .detail("role", created.record.role.as_str()),
    )
    .await;
    let mut body = view(&created.record);
    body["api_key"] = json!(created.api_key.expose());
    json_body(StatusCode::CREATED, &body)
}

pub async fn revoke<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    key_id: &str,
) -> Result<Response<Body>, ApiError> {
    match admin::revoke_api_key(&deps.store, &caller.tenant_id, key_id).await {
        Ok(record) => {
            audit(
                &deps.store,
                caller
                    .audit_entry("api_key.revoke")
                    .target("api_key", key_id)
                    .request(request_id(req).as_deref()),
            )
            .await;
            ok_json(&view(&record))
        }
        Err(StoreError::NotFound) => Err(ApiError::not_found("no such API key")),
        Err(e) => Err(e.into()),
    }
}
