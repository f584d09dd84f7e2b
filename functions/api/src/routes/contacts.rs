//! `/v1/contacts`: create, list, read, rectify (merge-patch), consent and restriction.

use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crm_shared::audit::AuditEntry;
use crm_shared::contact::{
    self, Contact, ContactError, MarketingConsent, NewContact, QueryKind, apply_patch, set_consent, set_restriction,
};
use crm_shared::ids;
use crm_shared::store::{ContactFilter, ContactUpdate, StoreError};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::{body_bytes, json_input};
use crate::{ApiStore, Deps, audit, json_body, ok_json, request_id};

/// Optimistic-concurrency retries for edits that race with webhooks or other edits.
const EDIT_ATTEMPTS: usize = 4;

pub fn view(c: &Contact) -> Value {
    json!({
        "id": c.contact_id,
        "contact_id": c.contact_id,
        "phone": c.phone,
        "user_id": c.user_id,
        "name": c.name,
        "profile_name": c.profile_name,
        "email": c.email,
        "language": c.language,
        "tags": c.tags,
        "attributes": c.attributes,
        "consent": {
            "marketing": c.consent.marketing,
            "updated_at": c.consent.updated_at,
            "source": c.consent.source,
        },
        "restricted": c.restricted,
        "last_inbound_at": c.last_inbound_at,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "version": c.version,
    })
}

pub(crate) fn invalid(err: ContactError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, err.code(), err.to_string())
}

fn exists() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "contact_exists",
        "a contact with this phone or user_id already exists in this tenant",
    )
}

fn not_found() -> ApiError {
    ApiError::not_found("no such contact")
}

/// The contact, or `404` (also for ids that are not even shaped like ours).
pub(crate) async fn load<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Contact, ApiError> {
    if !ids::is_valid_id(id) {
        return Err(not_found());
    }
    deps.store
        .get_contact(&caller.tenant_id, id)
        .await?
        .ok_or_else(not_found)
}

fn entry(caller: &Caller, req: &Request, action: &str, contact_id: &str) -> AuditEntry {
    caller
        .audit_entry(action)
        .target("contact", contact_id)
        .request(request_id(req).as_deref())
}

pub async fn list<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let query = req.query_string_parameters();
    let tag = match query.first("tag") {
        None => None,
        Some(raw) => Some(
            contact::normalize_tag(raw)
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_tag", "tag is not a valid tag"))?,
        ),
    };
    let q = query.first("q").map(contact::query_kind).unwrap_or(QueryKind::Empty);
    let filter = match (tag, q) {
        (None, QueryKind::Empty) => ContactFilter::All,
        (None, QueryKind::NamePrefix(p)) => ContactFilter::NamePrefix(p),
        (None, QueryKind::PhonePrefix(p)) => ContactFilter::PhonePrefix(p),
        (Some(tag), q) => ContactFilter::Tag {
            tag,
            name_prefix: match &q {
                QueryKind::NamePrefix(p) => Some(p.clone()),
                _ => None,
            },
            phone_prefix: match &q {
                QueryKind::PhonePrefix(p) => Some(p.clone()),
                _ => None,
            },
        },
    };
    // The cursor is bound to the filter as well as the tenant.
    let listing = format!("contacts:{filter:?}");
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    let result = deps
        .store
        .list_contacts(&caller.tenant_id, &filter, page.limit, page.start)
        .await?;
    let items = result.items.iter().map(view).collect();
    ok_json(&envelope(
        items,
        result.next,
        &deps.cursors,
        &caller.tenant_id,
        &listing,
    ))
}

pub async fn create<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let valid = NewContact::from_json(body_bytes(req)?)
        .and_then(NewContact::validate)
        .map_err(invalid)?;
    let contact = Contact::new(&caller.tenant_id, valid, Utc::now());
    match deps.store.create_contact(&contact).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(exists()),
        Err(e) => return Err(e.into()),
    }
    audit(&deps.store, entry(caller, req, "contact.create", &contact.contact_id)).await;
    json_body(StatusCode::CREATED, &view(&contact))
}

pub async fn get<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    ok_json(&view(&load(deps, caller, id).await?))
}

pub async fn patch<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let patch: Value = json_input(req)?;
    for _ in 0..EDIT_ATTEMPTS {
        let before = load(deps, caller, id).await?;
        let result = apply_patch(&before, &patch, Utc::now()).map_err(invalid)?;
        if result.changed_fields.is_empty() {
            return ok_json(&view(&before));
        }
        let update = ContactUpdate {
            before: &before,
            after: &result.contact,
            phone_change: result.phone_change.as_ref(),
            user_id_change: result.user_id_change.as_ref(),
        };
        match deps.store.update_contact(&update).await {
            Ok(()) => {
                let changed: Vec<Value> = result.changed_fields.iter().map(|f| json!(f)).collect();
                audit(
                    &deps.store,
                    entry(caller, req, "contact.update", id).detail("fields", changed),
                )
                .await;
                return ok_json(&view(&result.contact));
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(StoreError::Conflict(_)) => return Err(exists()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::VersionMismatch.into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentInput {
    marketing: MarketingConsent,
    source: String,
}

pub async fn put_consent<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let input: ConsentInput = json_input(req)?;
    for _ in 0..EDIT_ATTEMPTS {
        let before = load(deps, caller, id).await?;
        let (after, change) =
            set_consent(&before, input.marketing, &input.source, &caller.key_id, Utc::now()).map_err(invalid)?;
        match deps.store.record_consent(&before, &after, &change).await {
            Ok(()) => {
                let e = entry(caller, req, "contact.consent", id)
                    .detail("marketing", change.marketing.as_str())
                    .detail("previous", change.previous.as_str());
                audit(&deps.store, e).await;
                return ok_json(&view(&after));
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::VersionMismatch.into())
}

pub async fn get_consent<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let contact = load(deps, caller, id).await?;
    let history = deps.store.consent_history(&caller.tenant_id, id).await?;
    ok_json(&json!({
        "current": {
            "marketing": contact.consent.marketing,
            "updated_at": contact.consent.updated_at,
            "source": contact.consent.source,
        },
        "history": history.iter().map(|h| json!({
            "marketing": h.marketing,
            "previous": h.previous,
            "source": h.source,
            "actor": h.actor,
            "at": h.at,
        })).collect::<Vec<_>>(),
    }))
}

pub async fn get_restriction<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let contact = load(deps, caller, id).await?;
    let history = deps.store.restriction_history(&caller.tenant_id, id).await?;
    ok_json(&json!({
        "current": {"restricted": contact.restricted},
        "history": history.iter().map(|h| json!({
            "restricted": h.restricted,
            "previous": h.previous,
            "reason": h.reason,
            "actor": h.actor,
            "at": h.at,
        })).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestrictionInput {
    restricted: bool,
    #[serde(default)]
    reason: Option<String>,
}

const MAX_REASON_CHARS: usize = 256;

pub async fn put_restriction<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let input: RestrictionInput = json_input(req)?;
    let reason = input.reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS || r.chars().any(char::is_control))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_reason",
            format!("reason must be at most {MAX_REASON_CHARS} characters without control characters"),
        ));
    }
    for _ in 0..EDIT_ATTEMPTS {
        let before = load(deps, caller, id).await?;
        let (after, change) = set_restriction(&before, input.restricted, &caller.key_id, reason.clone(), Utc::now());
        match deps.store.record_restriction(&before, &after, &change).await {
            Ok(()) => {
                let e = entry(caller, req, "contact.restriction", id).detail("restricted", input.restricted);
                audit(&deps.store, e).await;
                return ok_json(&view(&after));
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::VersionMismatch.into())
}
