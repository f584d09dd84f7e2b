//! The template registry's routes (`/v1/templates…`, `/v1/settings/templates`) and the check
//! every template send passes before it is queued ([`check_send`]).
//!
//! A send costs one registry request (the `Query` of the template's languages); the tenant's
//! default language is read only when the contact's own languages do not fit, and then
//! remembered per instance for [`SETTINGS_TTL`].

use std::time::Duration;

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};

use crm_shared::cache::TtlCache;
use crm_shared::contact::Contact;
use crm_shared::cursor::Position;
use crm_shared::graph::GraphCallError;
use crm_shared::registry::{self, RegistryError};
use crm_shared::sending::{Category, SendRequest};
use crm_shared::store::TemplateSettings;
use crm_shared::template::lint::lint_new_template;
use crm_shared::template::{FieldError, TemplateRecord, check_status, is_valid_name, language, validate_send};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::{body_bytes, json_input};
use crate::{ApiStore, Deps, json_body, ok_json};

/// How long an instance trusts a tenant's template settings it read.
pub const SETTINGS_TTL: Duration = Duration::from_secs(60);

/// Per-instance memory of tenants' template settings.
pub type SettingsCache = TtlCache<String, TemplateSettings>;

pub fn settings_cache() -> SettingsCache {
    TtlCache::new(10_000, SETTINGS_TTL)
}

pub fn view(t: &TemplateRecord) -> Value {
    json!({
        "name": t.name,
        "language": t.language,
        "id": t.meta_id,
        "status": t.status,
        "reason": t.reason,
        "category": t.category.as_str(),
        "quality": t.quality,
        "parameter_format": t.parameter_format,
        "components": t.components,
        "parameters": t.schema,
        "last_synced_at": t.last_synced_at,
        "updated_at": t.updated_at,
    })
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn query(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The list filters; each must be a value the registry can hold.
struct Filters {
    status: Option<String>,
    category: Option<String>,
    name: Option<String>,
    language: Option<String>,
}

impl Filters {
    fn of(req: &Request) -> Result<Self, ApiError> {
        let bad = |what: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_filter", what.to_owned());
        let status = query(req, "status").map(|s| s.to_ascii_uppercase());
        if status
            .as_deref()
            .is_some_and(|s| !s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        {
            return Err(bad("status must be a template status such as APPROVED"));
        }
        let category = match query(req, "category") {
            Some(c) => Some(
                crm_shared::template::TemplateCategory::parse(&c)
                    .ok_or_else(|| bad("category must be MARKETING, UTILITY or AUTHENTICATION"))?
                    .as_str()
                    .to_owned(),
            ),
            None => None,
        };
        let name = query(req, "name");
        if name.as_deref().is_some_and(|n| {
            n.len() > 512
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }) {
            return Err(bad(
                "name must be a prefix of lowercase letters, digits and underscores",
            ));
        }
        let language = match query(req, "language") {
            Some(l) => Some(language::normalize(&l).ok_or_else(|| bad("language must be a code like en or pt_BR"))?),
            None => None,
        };
        Ok(Filters {
            status,
            category,
            name,
            language,
        })
    }

    fn admits(&self, t: &TemplateRecord) -> bool {
        self.status.as_ref().is_none_or(|s| &t.status == s)
            && self.category.as_ref().is_none_or(|c| t.category.as_str() == c)
            && self.language.as_ref().is_none_or(|l| &t.language == l)
    }

    /// The listing a cursor is bound to: filters included.
    fn listing(&self) -> String {
        let part = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "templates:{}:{}:{}:{}",
            part(&self.status),
            part(&self.category),
            part(&self.name),
            part(&self.language)
        )
    }
}

const AFTER: &str = "after";

fn position_of(t: &TemplateRecord) -> String {
    format!("{}#{}", t.name, t.language)
}

/// `GET /v1/templates`: the registry, by name then language. The tenant's entries are read
/// whole (name prefix in the key condition) and filtered here: a WABA holds at most a few
/// thousand template languages.
pub async fn list<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let filters = Filters::of(req)?;
    let listing = filters.listing();
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    let after = page.start.as_ref().and_then(|p| p.get(AFTER)).cloned();
    let all = deps
        .store
        .list_templates(&caller.tenant_id, filters.name.as_deref().unwrap_or(""))
        .await?;
    let mut matching = all
        .iter()
        .filter(|t| filters.admits(t))
        .filter(|t| after.as_ref().is_none_or(|a| position_of(t) > *a));
    let limit = page.limit as usize;
    let items: Vec<&TemplateRecord> = matching.by_ref().take(limit).collect();
    let next = (matching.next().is_some())
        .then(|| {
            items
                .last()
                .map(|t| Position::from([(AFTER.to_owned(), position_of(t))]))
        })
        .flatten();
    let items = items.into_iter().map(view).collect();
    ok_json(&envelope(items, next, &deps.cursors, &caller.tenant_id, &listing))
}

/// `GET /v1/templates/{name}`: every language of a template.
pub async fn get<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let not_found = || ApiError::not_found("no such template");
    if !is_valid_name(name) {
        return Err(not_found());
    }
    let languages = deps.store.template_languages(&caller.tenant_id, name).await?;
    if languages.is_empty() {
        return Err(not_found());
    }
    ok_json(&json!({"name": name, "languages": languages.iter().map(view).collect::<Vec<_>>()}))
}

fn registry_error(err: RegistryError) -> ApiError {
    match err {
        RegistryError::TenantNotFound | RegistryError::TemplateNotFound => ApiError::not_found("no such template"),
        RegistryError::NoToken => ApiError::new(
            StatusCode::CONFLICT,
            "no_graph_token",
            "the tenant has no WhatsApp access token; an operator must set one",
        ),
        RegistryError::CreationLimit { retry_after_secs } => ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "template_creation_limit",
                format!("Meta allows 100 template creations per hour; retry after {retry_after_secs} s"),
            )
        },
        RegistryError::Graph(GraphCallError::Api {
            status,
            code,
            message,
            details,
        }) if status < 500 && status != 429 => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "meta_rejected", message)
                .with("meta", json!({"status": status, "code": code, "details": details}))
        }
        RegistryError::Graph(e) => {
            tracing::warn!(error = %e, "Graph template call failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "graph_unavailable",
                "Meta's Graph API did not answer usefully; retry later",
            )
        }
        RegistryError::Store(e) => e.into(),
    }
}

fn graph<S, L, Q>(deps: &Deps<S, L, Q>) -> Result<&crm_shared::graph::GraphClient, ApiError> {
    deps.graph.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "templates_unavailable",
            "this deployment cannot reach Meta's Graph API",
        )
    })
}

/// `POST /v1/templates`: lint locally, then create at Meta (within 100 per hour).
pub async fn create<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let body: Value = serde_json::from_slice(body_bytes(req)?)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "the body is not valid JSON"))?;
    let new = lint_new_template(&body).map_err(|errors| {
        let first = errors
            .first()
            .map_or_else(String::new, |e| format!("{}: {}", e.field, e.message));
        unprocessable("invalid_template", format!("the template would be refused ({first})"))
            .with("details", json!(errors))
    })?;
    let graph = graph(deps)?;
    let record = registry::create(
        &deps.store,
        graph,
        &caller.tenant_id,
        &new,
        Some(&caller.key_id),
        Utc::now(),
    )
    .await
    .map_err(registry_error)?;
    json_body(StatusCode::CREATED, &view(&record))
}

/// `DELETE /v1/templates/{name}[?language=]`.
pub async fn delete<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    if !is_valid_name(name) {
        return Err(ApiError::not_found("no such template"));
    }
    let lang = match query(req, "language") {
        Some(l) => Some(language::normalize(&l).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_language",
                "language must be a code like en or pt_BR",
            )
        })?),
        None => None,
    };
    let graph = graph(deps)?;
    let removed = registry::delete(
        &deps.store,
        graph,
        &caller.tenant_id,
        name,
        lang.as_deref(),
        Some(&caller.key_id),
    )
    .await
    .map_err(registry_error)?;
    ok_json(&json!({"name": name, "language": lang, "deleted": removed}))
}

/// `POST /v1/templates/sync`: reconcile with Meta now.
pub async fn sync<S: ApiStore, L, Q>(deps: &Deps<S, L, Q>, caller: &Caller) -> Result<Response<Body>, ApiError> {
    let graph = graph(deps)?;
    let report = registry::sync(&deps.store, graph, &caller.tenant_id, Some(&caller.key_id), Utc::now())
        .await
        .map_err(registry_error)?;
    ok_json(&json!(report))
}

/// The tenant's template settings, remembered per instance.
async fn settings<S: ApiStore, L, Q>(deps: &Deps<S, L, Q>, tenant_id: &str) -> Result<TemplateSettings, ApiError> {
    if let Some(s) = deps.template_settings.get(tenant_id) {
        return Ok(s);
    }
    let s = deps.store.template_settings(tenant_id).await?;
    deps.template_settings.insert(tenant_id.to_owned(), s.clone());
    Ok(s)
}

fn settings_view(s: &TemplateSettings) -> Value {
    json!({"default_language": s.default_language})
}

/// `GET /v1/settings/templates`.
pub async fn get_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let s = deps.store.template_settings(&caller.tenant_id).await?;
    ok_json(&settings_view(&s))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsInput {
    default_language: Option<String>,
}

/// `PUT /v1/settings/templates` (admin).
pub async fn put_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let input: SettingsInput = json_input(req)?;
    let default_language = match input.default_language.as_deref() {
        Some(l) => Some(language::normalize(l).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_language",
                "default_language must be a code like en or pt_BR",
            )
        })?),
        None => None,
    };
    let settings = TemplateSettings { default_language };
    deps.store.put_template_settings(&caller.tenant_id, &settings).await?;
    deps.template_settings.remove(&caller.tenant_id);
    crate::audit(
        &deps.store,
        crm_shared::audit::AuditEntry::new(&caller.tenant_id, Some(&caller.key_id), "settings.templates.update")
            .request(crate::request_id(req).as_deref()),
    )
    .await;
    ok_json(&settings_view(&settings))
}

/// What a template send turned out to be, once checked.
pub struct CheckedTemplate {
    pub language: String,
    pub category: Category,
}

/// Why a template send is refused before it is queued: stored on the message as `rejected`
/// with Meta's code.
pub struct TemplateRefusal(pub Vec<FieldError>);

/// Checks a template send against the registry: the language (ours or the fallback), the
/// status, the parameters and the category. `Ok(Err(_))` is a send Meta would refuse; `Err`
/// is a request error answered without storing anything.
pub async fn check_send<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    contact: &Contact,
    request: &mut SendRequest,
) -> Result<Result<CheckedTemplate, TemplateRefusal>, ApiError> {
    let name = request.content["name"].as_str().unwrap_or_default().to_owned();
    let entries = if is_valid_name(&name) {
        deps.store.template_languages(&caller.tenant_id, &name).await?
    } else {
        Vec::new()
    };
    let requested = request.content.pointer("/language/code").and_then(Value::as_str);
    let chosen = if language::is_auto(requested) {
        auto_language(deps, &caller.tenant_id, contact, &entries).await?
    } else {
        let code = requested.unwrap_or_default();
        Some(language::normalize(code).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_message",
                "template.language.code must be a language code like en_US, or auto",
            )
        })?)
    };
    let Some(chosen) = chosen else {
        return Err(unprocessable(
            "no_template_language",
            "the template has none of the contact's languages, their base languages or the tenant's default language",
        ));
    };
    let record = entries.iter().find(|e| e.language == chosen);
    if let Err(e) = check_status(record) {
        return Ok(Err(TemplateRefusal(vec![e])));
    }
    let record = record.expect("approved, so present");
    let category = record.category.send_category();
    if request.declared_category.is_some_and(|declared| declared != category) {
        return Err(unprocessable(
            "category_mismatch",
            format!(
                "the template's category at Meta is {}; leave category out or name that one",
                record.category.as_str().to_ascii_lowercase()
            ),
        ));
    }
    // Components unknown (a template only a webhook has named so far): Meta judges them.
    if let Some(schema) = &record.schema
        && let Err(errors) = validate_send(schema, record.parameter_format, &request.content)
    {
        return Ok(Err(TemplateRefusal(errors)));
    }
    // Meta has no fallback: the send names exactly the language we chose.
    request.content["language"] = json!({"code": chosen, "policy": "deterministic"});
    Ok(Ok(CheckedTemplate {
        language: chosen,
        category,
    }))
}

/// Our fallback: the contact's language and its base first; the tenant's default (read only
/// now, and remembered) when those do not fit.
async fn auto_language<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    tenant_id: &str,
    contact: &Contact,
    entries: &[TemplateRecord],
) -> Result<Option<String>, ApiError> {
    let available: Vec<(&str, bool)> = entries.iter().map(|e| (e.language.as_str(), e.is_approved())).collect();
    let approved_in = |chain: &[String]| {
        language::choose(chain, &available).filter(|l| available.iter().any(|(a, ok)| a == l && *ok))
    };
    let own = language::candidates(contact.language.as_deref(), None);
    if let Some(l) = approved_in(&own) {
        return Ok(Some(l));
    }
    let settings = settings(deps, tenant_id).await?;
    let chain = language::candidates(contact.language.as_deref(), settings.default_language.as_deref());
    Ok(language::choose(&chain, &available))
}
