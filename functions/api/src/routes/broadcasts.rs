//! Broadcasts (`/v1/broadcasts…`, `/v1/settings/broadcasts`): create, read, the lifecycle
//! actions and the per-recipient results. Creating and controlling a broadcast needs `admin`,
//! or `agent` when the tenant's broadcast settings allow it. The engine (the `broadcaster`
//! function) does the planning and sending; these routes only change what it reads, each with
//! a conditional write on the version read and an audit entry.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::Value;

use crm_shared::auth::Role;
use crm_shared::broadcast::audience_file;
use crm_shared::broadcast::control::{self, ControlError};
use crm_shared::broadcast::pacing::BroadcastSettings;
use crm_shared::broadcast::view::{recipient_view, view};
use crm_shared::broadcast::{Action, Broadcast, RecipientStatus};
use crm_shared::ids;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::privacy::privacy;
use crate::routes::{body_bytes, json_input};
use crate::{ApiStore, Deps, audit, json_body, ok_json, request_id};

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// `403` unless the caller may create and control broadcasts.
async fn require_broadcaster<S: ApiStore>(store: &S, caller: &Caller) -> Result<(), ApiError> {
    if caller.role.allows(Role::Admin) {
        return Ok(());
    }
    caller.require(Role::Agent)?;
    if store.broadcast_settings(&caller.tenant_id).await?.agents_may_broadcast {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "broadcasts need the admin role (the tenant's broadcast settings do not allow agents)",
        ))
    }
}

async fn find<S: ApiStore>(
    deps: &Deps<S, impl Sized, impl Sized>,
    caller: &Caller,
    id: &str,
) -> Result<Broadcast, ApiError> {
    let not_found = || ApiError::not_found("no such broadcast");
    if !ids::is_valid_id(id) {
        return Err(not_found());
    }
    deps.store
        .get_broadcast(&caller.tenant_id, id)
        .await?
        .ok_or_else(not_found)
}

fn control_error(e: ControlError) -> ApiError {
    let message = e.to_string();
    match e {
        ControlError::Spec(e) => ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message),
        ControlError::NotFound => ApiError::not_found(message),
        ControlError::TemplateNotFound => unprocessable("template_not_found", message),
        ControlError::TemplateNotApproved => unprocessable("template_not_approved", message),
        ControlError::UnknownNumber => unprocessable("unknown_number", message),
        ControlError::UploadNotFound => unprocessable("upload_not_found", message),
        ControlError::AudienceExpired => unprocessable("audience_expired", message),
        ControlError::Files(e) => {
            tracing::error!(error = %e, "an audience file could not be read or stored");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the audience file could not be read or stored; try again",
            )
        }
        ControlError::InvalidState { from, .. } => {
            ApiError::new(StatusCode::CONFLICT, "invalid_state", message).with("status", from.as_str())
        }
        ControlError::Concurrent => ApiError::new(StatusCode::CONFLICT, "concurrent_modification", message),
        ControlError::Store(e) => e.into(),
    }
}

pub async fn create<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    require_broadcaster(&deps.store, caller).await?;
    let body: Value = serde_json::from_slice(body_bytes(req)?)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "the body is not valid JSON"))?;
    let uploaded = body.pointer("/audience/upload_id").is_some();
    let broadcast = if uploaded {
        let files = &privacy(deps)?.exports;
        control::create_with_upload(
            &deps.store,
            files,
            &caller.tenant_id,
            &body,
            Some(&caller.key_id),
            Utc::now(),
        )
        .await
    } else {
        control::create(
            &deps.store,
            &caller.tenant_id,
            &body,
            Some(&caller.key_id),
            Utc::now(),
            None,
        )
        .await
    }
    .map_err(control_error)?;
    audit(
        &deps.store,
        caller
            .audit_entry("broadcast.create")
            .target("broadcast", &broadcast.broadcast_id)
            .request(request_id(req).as_deref())
            .detail("template", broadcast.spec.template_name.as_str()),
    )
    .await;
    json_body(StatusCode::CREATED, &view(&broadcast))
}

/// How long an upload link works.
const UPLOAD_LINK_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// `POST /v1/broadcasts/uploads`: a presigned link to `PUT` one audience CSV through, and the
/// id that names it in `audience.upload_id`. The file is read when the broadcast is created
/// (within a day: the bucket drops unused uploads after one).
pub async fn upload<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    require_broadcaster(&deps.store, caller).await?;
    let files = &privacy(deps)?.exports;
    let upload_id = ids::new_id();
    let key = audience_file::upload_key(&caller.tenant_id, &upload_id);
    let url = files
        .presigned_put(&key, UPLOAD_CONTENT_TYPE, UPLOAD_LINK_TTL)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not presign an upload link");
            ApiError::internal()
        })?;
    audit(
        &deps.store,
        caller
            .audit_entry("broadcast.upload")
            .target("upload", &upload_id)
            .request(request_id(req).as_deref()),
    )
    .await;
    let expires_at = Utc::now() + chrono::Duration::from_std(UPLOAD_LINK_TTL).expect("small");
    json_body(
        StatusCode::CREATED,
        &serde_json::json!({
            "upload_id": upload_id,
            "url": url,
            "method": "PUT",
            "headers": {"content-type": UPLOAD_CONTENT_TYPE},
            "expires_at": expires_at,
            "max_bytes": audience_file::MAX_UPLOAD_BYTES,
            "max_rows": audience_file::MAX_ROWS,
        }),
    )
}

/// The type an upload is signed for (the `PUT` must send it).
const UPLOAD_CONTENT_TYPE: &str = "text/csv";

pub async fn list<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let page = page_request(req, &deps.cursors, &caller.tenant_id, "broadcasts")?;
    let found = deps
        .store
        .list_broadcasts(&caller.tenant_id, page.limit, page.start)
        .await?;
    let items: Vec<Value> = found.items.iter().map(view).collect();
    ok_json(&envelope(
        items,
        found.next,
        &deps.cursors,
        &caller.tenant_id,
        "broadcasts",
    ))
}

pub async fn get<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    ok_json(&view(&find(deps, caller, id).await?))
}

/// `POST /v1/broadcasts/{id}/{start|pause|resume|cancel}`: `409` when the broadcast is not in
/// a state the action applies to, or changed while this request ran.
pub async fn act<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
    action: Action,
) -> Result<Response<Body>, ApiError> {
    require_broadcaster(&deps.store, caller).await?;
    let (b, after) = control::act(&deps.store, &caller.tenant_id, id, action, Utc::now())
        .await
        .map_err(control_error)?;
    let status = after.status;
    audit(
        &deps.store,
        caller
            .audit_entry(&format!("broadcast.{}", action.as_str()))
            .target("broadcast", id)
            .request(request_id(req).as_deref())
            .detail("from", b.status.as_str())
            .detail("to", status.as_str()),
    )
    .await;
    ok_json(&view(&after))
}

pub async fn recipients<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let b = find(deps, caller, id).await?;
    let status = match req.query_string_parameters().first("status") {
        None | Some("") => None,
        Some(raw) => Some(RecipientStatus::parse(raw).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_filter",
                "status must be pending, skipped, queued, sent, delivered, read, failed, held_back or capped",
            )
        })?),
    };
    // The cursor is bound to the broadcast and the filter as well as the tenant.
    let listing = format!("broadcast-recipients:{}:{:?}", b.broadcast_id, status);
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    let found = deps
        .store
        .broadcast_recipients(&caller.tenant_id, &b.broadcast_id, status, page.limit, page.start)
        .await?;
    let items: Vec<Value> = found.items.iter().map(recipient_view).collect();
    ok_json(&envelope(items, found.next, &deps.cursors, &caller.tenant_id, &listing))
}

pub async fn get_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    ok_json(&deps.store.broadcast_settings(&caller.tenant_id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsInput {
    agents_may_broadcast: bool,
    rate_share_pct: u8,
}

/// `PUT /v1/settings/broadcasts`: who may broadcast and the share of the rate; the messaging
/// limit is Meta's (its `business_capability_update` webhook) and not set here.
pub async fn put_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let input: SettingsInput = json_input(req)?;
    if !(1..=100).contains(&input.rate_share_pct) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_settings",
            "rate_share_pct must be 1 to 100",
        ));
    }
    let current = deps.store.broadcast_settings(&caller.tenant_id).await?;
    let settings = BroadcastSettings {
        agents_may_broadcast: input.agents_may_broadcast,
        rate_share_pct: input.rate_share_pct,
        messaging_limit: current.messaging_limit,
    };
    deps.store.put_broadcast_settings(&caller.tenant_id, &settings).await?;
    audit(
        &deps.store,
        caller
            .audit_entry("settings.broadcasts.update")
            .request(request_id(req).as_deref())
            .detail("agents_may_broadcast", settings.agents_may_broadcast)
            .detail("rate_share_pct", settings.rate_share_pct),
    )
    .await;
    ok_json(&settings)
}
