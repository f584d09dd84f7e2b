//! Privacy rights and retention: `GET/PUT /v1/settings/retention`, contact exports
//! (`POST /v1/contacts/{id}/export`, `GET /v1/exports/{id}`) and erasure
//! (`DELETE /v1/contacts/{id}`, `GET /v1/erasures/{id}`). See docs/privacy.md.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use crm_shared::audit::AuditEntry;
use crm_shared::blob::{LINK_TTL, MediaLinks};
use crm_shared::ids;
use crm_shared::privacy::{
    ErasureStatus, ExportRecord, ExportStatus, Privacy, PrivacyError, RetentionError, RetentionSettings,
};
use crm_shared::store::PrivacyStore;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::{json_input, json_value_input};
use crate::{ApiStore, Deps, audit, json_body, ok_json, request_id};

pub(crate) fn privacy<S, L, Q>(deps: &Deps<S, L, Q>) -> Result<&Privacy, ApiError> {
    deps.privacy.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "privacy routes are not configured on this deployment",
        )
    })
}

impl From<PrivacyError> for ApiError {
    fn from(err: PrivacyError) -> Self {
        match err {
            PrivacyError::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "privacy operation failed");
                ApiError::internal()
            }
        }
    }
}

fn entry(caller: &Caller, req: &Request, action: &str) -> AuditEntry {
    caller.audit_entry(action).request(request_id(req).as_deref())
}

fn settings_view(settings: &RetentionSettings, custom: bool) -> Value {
    json!({
        "messages_days": settings.messages_days,
        "media_days": settings.media_days,
        "exports_days": settings.exports_days,
        "audit_days": settings.audit_days,
        "events_days": settings.events_days,
        "reports_days": settings.reports_days,
        "source": if custom { "tenant" } else { "default" },
    })
}

pub async fn get_retention<S, L, Q>(deps: &Deps<S, L, Q>, caller: &Caller) -> Result<Response<Body>, ApiError> {
    let p = privacy(deps)?;
    let own = p.store.retention_settings(&caller.tenant_id).await?;
    ok_json(&settings_view(&own.unwrap_or_default(), own.is_some()))
}

pub async fn put_retention<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let p = privacy(deps)?;
    // What a GET shows goes back as it is: `source` follows from this PUT itself (`tenant`).
    let mut body: Value = json_input(req)?;
    if let Some(fields) = body.as_object_mut() {
        fields.remove("source");
    }
    let input: RetentionSettings = json_value_input(body)?;
    let settings = input.validate().map_err(|e| {
        let code = match e {
            RetentionError::OutOfBounds(_) => "invalid_retention",
            RetentionError::MediaOutlivesMessages => "media_outlives_messages",
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })?;
    p.store
        .put_retention_settings(&caller.tenant_id, &settings, Some(&caller.key_id), Utc::now())
        .await?;
    let e = entry(caller, req, "settings.retention")
        .target("settings", "retention")
        .detail("messages_days", settings.messages_days)
        .detail("media_days", settings.media_days)
        .detail("exports_days", settings.exports_days)
        .detail("audit_days", settings.audit_days)
        .detail("events_days", settings.events_days)
        .detail("reports_days", settings.reports_days);
    audit(&deps.store, e).await;
    ok_json(&settings_view(&settings, true))
}

async fn export_view(p: &Privacy, record: &ExportRecord) -> Value {
    // Never valid beyond the export's own expiry.
    let ttl = LINK_TTL.min((record.expiry - Utc::now()).to_std().unwrap_or_default());
    let url = match record.status {
        ExportStatus::Ready => match p
            .exports
            .presigned_get(&record.s3_key, Some(export_type(record)), ttl)
            .await
        {
            Ok(url) => Some(url),
            Err(err) => {
                tracing::warn!(error = %err, "could not presign an export link");
                None
            }
        },
        _ => None,
    };
    let mut view = json!({
        "export_id": record.export_id,
        "contact_id": Some(&record.contact_id).filter(|c| !c.is_empty()),
        "status": record.status,
        "url": url,
        "url_expires_in": url.as_ref().map(|_| ttl.as_secs()),
        "created_at": record.created_at,
        "completed_at": record.completed_at,
        "expires_at": record.expiry,
        "size_bytes": record.size_bytes,
        "message_count": record.message_count,
        "failure": record.failure,
    });
    if let Some(b) = &record.broadcast_id {
        view["broadcast_id"] = json!(b);
        view["format"] = json!("csv");
        // For results, the count is of recipients.
        view["recipient_count"] = json!(record.message_count);
        view["message_count"] = Value::Null;
    }
    view
}

/// The document's type: a contact's JSON, or a broadcast's results as CSV.
fn export_type(record: &ExportRecord) -> &'static str {
    if record.broadcast_id.is_some() {
        "text/csv"
    } else {
        "application/json"
    }
}

/// `POST /v1/broadcasts/{id}/export`: the broadcast's per-recipient results as one CSV
/// document (`GET /v1/exports/{id}` answers its link when it is ready).
pub async fn export_broadcast<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    broadcast_id: &str,
) -> Result<Response<Body>, ApiError> {
    let p = privacy(deps)?;
    let not_found = || ApiError::not_found("no such broadcast");
    if !ids::is_valid_id(broadcast_id) {
        return Err(not_found());
    }
    let record = p
        .request_broadcast_export(&caller.tenant_id, broadcast_id, Some(&caller.key_id))
        .await?
        .ok_or_else(not_found)?;
    let e = entry(caller, req, "broadcast.export")
        .target("broadcast", broadcast_id)
        .detail("export_id", record.export_id.as_str());
    audit(&deps.store, e).await;
    json_body(StatusCode::ACCEPTED, &export_view(p, &record).await)
}

pub async fn export_contact<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    contact_id: &str,
) -> Result<Response<Body>, ApiError> {
    let p = privacy(deps)?;
    if !ids::is_valid_id(contact_id) {
        return Err(ApiError::not_found("no such contact"));
    }
    let record = p
        .request_export(&caller.tenant_id, contact_id, Some(&caller.key_id))
        .await?
        .ok_or_else(|| ApiError::not_found("no such contact"))?;
    let e = entry(caller, req, "contact.export")
        .target("contact", contact_id)
        .detail("export_id", record.export_id.as_str());
    audit(&deps.store, e).await;
    json_body(StatusCode::ACCEPTED, &export_view(p, &record).await)
}

pub async fn get_export<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    export_id: &str,
) -> Result<Response<Body>, ApiError> {
    let p = privacy(deps)?;
    let not_found = || ApiError::not_found("no such export (or it has expired)");
    if !ids::is_valid_id(export_id) {
        return Err(not_found());
    }
    let record = p
        .export_status(&caller.tenant_id, export_id)
        .await?
        .ok_or_else(not_found)?;
    let view = export_view(p, &record).await;
    if !view["url"].is_null() {
        // Handing out a download link to a person's data is itself worth recording.
        let e = entry(caller, req, "export.link").target("export", export_id);
        let e = match &record.broadcast_id {
            Some(b) => e.detail("broadcast_id", b.as_str()),
            None => e.detail("contact_id", record.contact_id.as_str()),
        };
        audit(&deps.store, e).await;
    }
    ok_json(&view)
}

pub async fn erase_contact<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    contact_id: &str,
) -> Result<Response<Body>, ApiError> {
    let p = privacy(deps)?;
    if !ids::is_valid_id(contact_id) {
        return Err(ApiError::not_found("no such contact"));
    }
    let record = p
        .request_erasure(&caller.tenant_id, contact_id, Some(&caller.key_id))
        .await?
        .ok_or_else(|| ApiError::not_found("no such contact"))?;
    // Ids and counts only: nothing of what was erased.
    let e = entry(caller, req, "contact.erase")
        .target("contact", contact_id)
        .detail("erasure_id", record.erasure_id.as_str())
        .detail("status", serde_json::to_value(record.status).expect("serializes"))
        .detail("deleted", serde_json::to_value(record.deleted).expect("serializes"));
    audit(&deps.store, e).await;
    let status = match record.status {
        ErasureStatus::Completed => StatusCode::OK,
        ErasureStatus::InProgress => StatusCode::ACCEPTED,
    };
    json_body(status, &record.receipt())
}

pub async fn get_erasure<S, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    erasure_id: &str,
) -> Result<Response<Body>, ApiError> {
    let p = privacy(deps)?;
    let not_found = || ApiError::not_found("no such erasure");
    if !ids::is_valid_id(erasure_id) {
        return Err(not_found());
    }
    let record = p
        .erasure_receipt(&caller.tenant_id, erasure_id)
        .await?
        .ok_or_else(not_found)?;
    ok_json(&record.receipt())
}
