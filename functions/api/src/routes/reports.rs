//! `GET /v1/reports/messages` and `GET /v1/reports/conversations` (viewer and up): the tenant's
//! counters over a range, by UTC hour or by day in the tenant's time zone, optionally grouped,
//! as JSON or CSV (`Accept: text/csv` or `?format=csv`). One paged Query per report reads every
//! counter item of the range ([`crm_shared::reports::report`] has the rules); the counters hold
//! no personal data, so viewers may read them.
//!
//! `GET /v1/reports/users` (admin): per-user metrics, the tenant's users' personal data, served
//! only when the tenant turned `per_user_metrics` on.
//!
//! Also the report settings: `GET /v1/settings/reports` (viewer), `PUT` (admin).

use chrono::Utc;
use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;

use crm_shared::reports::report::{Format, ParamError, ReportKind, build, format_of, parse_query};
use crm_shared::tenant::ReportSettings;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::json_input;
use crate::{ApiStore, Deps, audit, ok_json, request_id};

fn invalid(e: ParamError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string()).with("param", e.param)
}

async fn settings_of<S: ApiStore, L, Q>(deps: &Deps<S, L, Q>, caller: &Caller) -> Result<ReportSettings, ApiError> {
    let tenant = deps
        .store
        .get_tenant(&caller.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    Ok(tenant.reports)
}

pub async fn messages<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    report(deps, caller, req, ReportKind::Messages).await
}

pub async fn conversations<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    report(deps, caller, req, ReportKind::Conversations).await
}

pub async fn users<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    report(deps, caller, req, ReportKind::Users).await
}

async fn report<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    kind: ReportKind,
) -> Result<Response<Body>, ApiError> {
    let params = req.query_string_parameters();
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = format_of(params.iter(), accept).map_err(invalid)?;
    let now = Utc::now();
    // The time zone first: a date in `from`/`to` is the tenant's midnight.
    let settings = settings_of(deps, caller).await?;
    if kind == ReportKind::Users && !settings.per_user_metrics {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "per_user_metrics_disabled",
            "per-user metrics are off for this tenant (PUT /v1/settings/reports {\"per_user_metrics\": true})",
        ));
    }
    let tz = settings.tz();
    let query = parse_query(kind, params.iter(), tz, now).map_err(invalid)?;
    let rows = deps
        .store
        .counter_rows(&caller.tenant_id, query.granularity, &query.first, &query.last, now)
        .await?;
    let report = build(&query, &rows);
    match format {
        Format::Json => ok_json(&report.to_json()),
        Format::Csv => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
            .body(Body::Text(report.to_csv()))
            .map_err(|_| ApiError::internal()),
    }
}

pub async fn get_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    ok_json(&json!(settings_of(deps, caller).await?))
}

pub async fn put_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let settings: ReportSettings = json_input(req)?;
    settings
        .validate()
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_settings", m))?;
    deps.store.set_report_settings(&caller.tenant_id, &settings).await?;
    let entry = caller
        .audit_entry("settings.reports")
        .detail("time_zone", settings.time_zone.clone())
        .detail("business_hours", settings.business_hours.is_some())
        .detail("per_user_metrics", settings.per_user_metrics)
        .request(request_id(req).as_deref());
    audit(&deps.store, entry).await;
    ok_json(&json!(settings))
}
