//! `/v1/users`: the tenant's users (admins manage them; everyone may list them, to assign
//! conversations), their keys, and `/v1/me`. Disabling a user revokes their keys in the same
//! transaction, so those keys are refused from the next request on.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

use crm_shared::admin::{self, UserError};
use crm_shared::auth::Role;
use crm_shared::store::StoreError;
use crm_shared::user::{User, UserStatus, user_email, user_json, user_name};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::json_input;
use crate::{ApiStore, Deps, audit, json_body, ok_json, request_id};

const LISTING: &str = "users";

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(v) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user", v.to_string()),
            UserError::Disabled => ApiError::new(StatusCode::CONFLICT, "user_disabled", e.to_string()),
            UserError::TooManyKeys => ApiError::new(StatusCode::CONFLICT, "too_many_keys", e.to_string()),
            UserError::Store(StoreError::Conflict(m)) => ApiError::new(StatusCode::CONFLICT, "email_taken", m),
            UserError::Store(StoreError::NotFound) => ApiError::not_found("no such user"),
            UserError::Store(s) => s.into(),
        }
    }
}

async fn load<S: ApiStore, L, Q>(deps: &Deps<S, L, Q>, caller: &Caller, id: &str) -> Result<User, ApiError> {
    if !crm_shared::ids::is_valid_id(id) {
        return Err(ApiError::not_found("no such user"));
    }
    deps.store
        .get_user(&caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))
}

pub async fn list<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let page = page_request(req, &deps.cursors, &caller.tenant_id, LISTING)?;
    let result = deps.store.list_users(&caller.tenant_id, page.limit, page.start).await?;
    let items = result.items.iter().map(user_json).collect();
    ok_json(&envelope(items, result.next, &deps.cursors, &caller.tenant_id, LISTING))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    name: String,
    email: String,
    role: Role,
}

pub async fn create<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let input: CreateUser = json_input(req)?;
    let user = admin::create_user(&deps.store, &caller.tenant_id, &input.name, &input.email, input.role).await?;
    let entry = caller
        .audit_entry("user.create")
        .target("user", &user.user_id)
        .detail("role", user.role.as_str())
        .request(request_id(req).as_deref());
    audit(&deps.store, entry).await;
    json_body(StatusCode::CREATED, &user_json(&user))
}

pub async fn get<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    ok_json(&user_json(&load(deps, caller, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    status: Option<UserStatus>,
}

/// The user as `patch` makes it (checked input; `updated_at` now).
fn patched(before: &User, patch: &PatchUser) -> Result<User, UserError> {
    let now = Utc::now();
    let mut after = before.clone();
    if let Some(name) = &patch.name {
        after.name = user_name(name)?;
    }
    if let Some(email) = &patch.email {
        after.email = user_email(email)?;
    }
    if let Some(role) = patch.role {
        after.role = role;
    }
    if let Some(status) = patch.status {
        after.status = status;
        after.disabled_at = match status {
            UserStatus::Disabled => before.disabled_at.or(Some(now)),
            UserStatus::Active => None,
        };
    }
    after.updated_at = now;
    Ok(after)
}

/// Applies `patch` to the user, retrying when it changed meanwhile; refuses a caller disabling
/// or demoting themselves (the tenant must never lock its last admin out by accident).
async fn change<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
    patch: &PatchUser,
) -> Result<Response<Body>, ApiError> {
    let touches_self = caller.user_id.as_deref() == Some(id);
    if touches_self && (patch.status == Some(UserStatus::Disabled) || patch.role.is_some_and(|r| r != Role::Admin)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_change_self",
            "a user cannot disable or demote themselves; another admin can",
        ));
    }
    for _ in 0..3 {
        let before = load(deps, caller, id).await?;
        let after = patched(&before, patch)?;
        match deps.store.update_user(&before, &after).await {
            Ok(()) => {
                let mut entry = caller
                    .audit_entry("user.update")
                    .target("user", id)
                    .request(request_id(req).as_deref());
                if before.role != after.role {
                    entry = entry.detail("role", after.role.as_str());
                }
                if before.status != after.status {
                    entry = entry.detail("status", json!(after.status));
                }
                if before.email != after.email || before.name != after.name {
                    entry = entry.detail("profile_changed", true);
                }
                audit(&deps.store, entry).await;
                return ok_json(&user_json(&after));
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(e) => return Err(UserError::from(e).into()),
        }
    }
    Err(StoreError::VersionMismatch.into())
}

pub async fn patch<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let patch: PatchUser = json_input(req)?;
    change(deps, caller, req, id, &patch).await
}

/// `DELETE`: disables the user (kept for the audit trail); their keys stop working at once.
pub async fn disable<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let patch = PatchUser {
        name: None,
        email: None,
        role: None,
        status: Some(UserStatus::Disabled),
    };
    change(deps, caller, req, id, &patch).await
}

pub async fn create_key<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    load(deps, caller, id).await?;
    let created = admin::create_user_key(&deps.store, &caller.tenant_id, id).await?;
    let entry = caller
        .audit_entry("api_key.create")
        .target("api_key", &created.record.key_id)
        .detail("user_id", id)
        .detail("role", created.record.role.as_str())
        .request(request_id(req).as_deref());
    audit(&deps.store, entry).await;
    json_body(
        StatusCode::CREATED,
        &json!({
            "api_key": created.api_key.expose(),
            "key_id": created.record.key_id,
            "role": created.record.role,
            "user_id": id,
            "created_at": created.record.created_at,
        }),
    )
}

/// `GET /v1/me`: the caller — their user (if the key has one), role, key and tenant.
pub async fn me<S: ApiStore, L, Q>(deps: &Deps<S, L, Q>, caller: &Caller) -> Result<Response<Body>, ApiError> {
    let tenant = deps
        .store
        .get_tenant(&caller.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    let user = match &caller.user_id {
        Some(id) => deps.store.get_user(&caller.tenant_id, id).await?.map(|u| user_json(&u)),
        None => None,
    };
    ok_json(&json!({
        "user": user,
        "role": caller.role,
        "key_id": caller.key_id,
        "tenant": {"id": tenant.tenant_id, "name": tenant.name, "status": tenant.status},
        "need_to_know": tenant.inbox.need_to_know,
    }))
}
