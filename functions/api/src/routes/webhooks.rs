//! The event stream and tenant webhooks: `GET /v1/events`, `POST /v1/events/{id}/redeliver`,
//! `/v1/webhook-endpoints` (CRUD, rotate-secret, test, recover, deliveries). See docs/events.md.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crm_shared::audit::AuditEntry;
use crm_shared::cursor::Position;
use crm_shared::events::endpoint::{
    DeliveryAttempt, EndpointError, EndpointPatch, NewEndpoint, ROTATION_OVERLAP, WebhookEndpoint,
};
use crm_shared::events::push::{DeliveryJob, Pusher};
use crm_shared::events::signing::new_secret;
use crm_shared::events::ssrf::{SystemLookup, check_endpoint};
use crm_shared::events::{Event, EventType};
use crm_shared::ids;
use crm_shared::jobs::JobQueue;
use crm_shared::store::{EventStore, StoreError};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::json_input;
use crate::{ApiStore, Deps, audit, json_body, no_content, ok_json, request_id};

const EVENTS_LISTING: &str = "events";
const ENDPOINTS_LISTING: &str = "webhook-endpoints";
const AFTER: &str = "after";
/// `?after=latest`: start at the head of the log.
const LATEST: &str = "latest";
/// Log pages read for one filtered listing before answering with what was found.
const MAX_SCAN_PAGES: usize = 10;
/// Attempts of an endpoint edit that keeps losing to a concurrent one.
const EDIT_ATTEMPTS: usize = 3;

/// What the webhook routes need beyond the store: the delivery queue and the HTTP client.
#[derive(Clone)]
pub struct Webhooks {
    pub queue: crm_shared::jobs::SqsQueue,
    pub pusher: Pusher,
}

fn webhooks<S, L, Q>(deps: &Deps<S, L, Q>) -> Result<&Webhooks, ApiError> {
    deps.webhooks.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "webhook delivery is not configured on this deployment",
        )
    })
}

fn entry(caller: &Caller, req: &Request, action: &str, endpoint_id: &str) -> AuditEntry {
    AuditEntry::new(&caller.tenant_id, Some(&caller.key_id), action)
        .target("webhook_endpoint", endpoint_id)
        .request(request_id(req).as_deref())
}

/// Puts a delivery job on the queue now; a failure is a `500` (nothing was promised yet).
async fn enqueue(hooks: &Webhooks, job: &DeliveryJob) -> Result<(), ApiError> {
    hooks.queue.send_job(job, std::time::Duration::ZERO).await.map_err(|e| {
        tracing::error!(error = %e.0, "delivery job could not be enqueued");
        ApiError::internal()
    })
}

fn invalid(e: EndpointError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string())
}

fn no_endpoint() -> ApiError {
    ApiError::not_found("no such webhook endpoint")
}

// ---------------------------------------------------------------------------------------------
// The pull stream

/// `?types=a,b`: the types wanted (none: every type); `400 invalid_types` on an unknown one.
fn types_filter(raw: Option<&str>) -> Result<Vec<EventType>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(|name| {
            EventType::parse(name.trim()).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_types",
                    format!("unknown event type {name:?}"),
                )
            })
        })
        .collect()
}

/// Where a listing starts: `?cursor=` (from `next_cursor`), `?after=<seq>` (the `seq` of the
/// last event seen) or `?after=latest` (the log's head: only what happens from now on, as a
/// client that just loaded the current state wants), else the beginning of the kept log.
async fn start_after<S: ApiStore>(
    store: &S,
    tenant_id: &str,
    req: &Request,
    deps_cursor: Option<Position>,
) -> Result<u64, ApiError> {
    if let Some(position) = deps_cursor {
        return position
            .get(AFTER)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "cursor is invalid"));
    }
    match req.query_string_parameters().first(AFTER) {
        None | Some("") => Ok(0),
        Some(LATEST) => Ok(store.event_head(tenant_id).await?),
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_after",
                "after must be the seq of an event (an integer ≥ 0) or `latest`",
            )
        }),
    }
}

pub async fn list_events<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let page = page_request(req, &deps.cursors, &caller.tenant_id, EVENTS_LISTING)?;
    let types = types_filter(req.query_string_parameters().first("types"))?;
    let mut after = start_after(&deps.store, &caller.tenant_id, req, page.start).await?;
    let now = Utc::now();
    let mut items: Vec<Value> = Vec::new();
    let mut more = false;
    for _ in 0..MAX_SCAN_PAGES {
        let events = deps
            .store
            .events_after(&caller.tenant_id, after, page.limit, now)
            .await?;
        let full = events.len() == page.limit as usize;
        for event in events {
            after = event.seq;
            if types.is_empty() || types.contains(&event.event_type) {
                items.push(event.view());
                if items.len() == page.limit as usize {
                    break;
                }
            }
        }
        more = full;
        if !full || items.len() == page.limit as usize {
            break;
        }
    }
    let next = more.then(|| Position::from([(AFTER.to_owned(), after.to_string())]));
    let mut body = json!(envelope(items, next, &deps.cursors, &caller.tenant_id, EVENTS_LISTING));
    // Resume here with `?after=` once caught up (filtered events skipped count as seen).
    body["next_after"] = json!(after);
    ok_json(&body)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RedeliverInput {
    #[serde(default)]
    endpoint_id: Option<String>,
}

/// `POST /v1/events/{id}/redeliver`: a fresh delivery (same `webhook-id`) to every enabled
/// endpoint that wants the event, or to the one named.
pub async fn redeliver<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    event_id: &str,
) -> Result<Response<Body>, ApiError> {
    let hooks = webhooks(deps)?;
    let input: RedeliverInput = if crate::routes::body_bytes(req).is_ok() {
        json_input(req)?
    } else {
        RedeliverInput::default()
    };
    let not_found = || ApiError::not_found("no such event");
    let seq = deps
        .store
        .event_seq(&caller.tenant_id, event_id)
        .await?
        .ok_or_else(not_found)?;
    let event = deps
        .store
        .event_at(&caller.tenant_id, seq)
        .await?
        .ok_or_else(not_found)?;
    let endpoints: Vec<WebhookEndpoint> = deps
        .store
        .endpoints_of(&caller.tenant_id)
        .await?
        .into_iter()
        .filter(|e| e.wants(event.event_type))
        .filter(|e| input.endpoint_id.as_deref().is_none_or(|id| id == e.endpoint_id))
        .collect();
    if let Some(id) = &input.endpoint_id
        && endpoints.is_empty()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no enabled endpoint {id} that takes {}", event.event_type.as_str()),
        ));
    }
    for endpoint in &endpoints {
        let job = DeliveryJob::Event {
            tenant_id: caller.tenant_id.clone(),
            endpoint_id: endpoint.endpoint_id.clone(),
            seq,
            attempt: 1,
            not_before: None,
            event: Some(Box::new(event.clone())),
        };
        enqueue(hooks, &job).await?;
    }
    let ids: Vec<&str> = endpoints.iter().map(|e| e.endpoint_id.as_str()).collect();
    audit(
        &deps.store,
        AuditEntry::new(&caller.tenant_id, Some(&caller.key_id), "event.redeliver")
            .target("event", event_id)
            .request(request_id(req).as_deref())
            .detail("endpoints", ids.len()),
    )
    .await;
    json_body(
        StatusCode::ACCEPTED,
        &json!({"event_id": event_id, "endpoint_ids": ids}),
    )
}

// ---------------------------------------------------------------------------------------------
// Endpoints

fn endpoint_view(e: &WebhookEndpoint) -> Value {
    json!({
        "id": e.endpoint_id,
        "url": e.url,
        "description": e.description,
        "event_types": e.event_types,
        "enabled": e.enabled,
        "include_bodies": e.include_bodies,
        "disabled_reason": e.disabled_reason,
        "failing_since": e.failing_since,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    })
}

async fn load<S: ApiStore, L, Q>(deps: &Deps<S, L, Q>, caller: &Caller, id: &str) -> Result<WebhookEndpoint, ApiError> {
    if !ids::is_valid_id(id) {
        return Err(no_endpoint());
    }
    deps.store
        .get_endpoint(&caller.tenant_id, id)
        .await?
        .ok_or_else(no_endpoint)
}

/// The URL rule (https, resolvable, public), as a `400 invalid_url`.
async fn check_url<S, L, Q>(deps: &Deps<S, L, Q>, url: &str) -> Result<(), ApiError> {
    check_endpoint(url, &SystemLookup, deps.webhook_policy)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_url", e.to_string()))
}

pub async fn list_endpoints<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let page = page_request(req, &deps.cursors, &caller.tenant_id, ENDPOINTS_LISTING)?;
    let after = page
        .start
        .as_ref()
        .and_then(|p| p.get(AFTER))
        .cloned()
        .unwrap_or_default();
    let mut endpoints = deps.store.endpoints_of(&caller.tenant_id).await?;
    endpoints.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
    let rest: Vec<&WebhookEndpoint> = endpoints.iter().filter(|e| e.endpoint_id > after).collect();
    let limit = page.limit as usize;
    let next = (rest.len() > limit).then(|| Position::from([(AFTER.to_owned(), rest[limit - 1].endpoint_id.clone())]));
    let items = rest.iter().take(limit).map(|e| endpoint_view(e)).collect();
    ok_json(&envelope(
        items,
        next,
        &deps.cursors,
        &caller.tenant_id,
        ENDPOINTS_LISTING,
    ))
}

pub async fn create_endpoint<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let input: NewEndpoint = json_input(req)?;
    check_url(deps, &input.url).await?;
    let endpoint = input.into_endpoint(&caller.tenant_id, Utc::now()).map_err(invalid)?;
    let secret = new_secret();
    deps.store.create_endpoint(&endpoint, &secret).await?;
    let e = entry(caller, req, "webhook_endpoint.create", &endpoint.endpoint_id)
        .detail("include_bodies", endpoint.include_bodies)
        .detail("event_types", endpoint.event_types.len());
    audit(&deps.store, e).await;
    let mut body = endpoint_view(&endpoint);
    body["secret"] = json!(secret.expose());
    json_body(StatusCode::CREATED, &body)
}

pub async fn get_endpoint<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    ok_json(&endpoint_view(&load(deps, caller, id).await?))
}

pub async fn patch_endpoint<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let patch: EndpointPatch = json_input(req)?;
    if let Some(url) = &patch.url {
        check_url(deps, url).await?;
    }
    for _ in 0..EDIT_ATTEMPTS {
        let before = load(deps, caller, id).await?;
        let after = patch.clone().apply(&before, Utc::now()).map_err(invalid)?;
        match deps.store.update_endpoint(&after).await {
            Ok(()) => {
                let e = entry(caller, req, "webhook_endpoint.update", id)
                    .detail("include_bodies", after.include_bodies)
                    .detail("enabled", after.enabled)
                    .detail("url_changed", after.url != before.url);
                audit(&deps.store, e).await;
                return ok_json(&endpoint_view(&after));
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(StoreError::NotFound) => return Err(no_endpoint()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::VersionMismatch.into())
}

pub async fn delete_endpoint<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    load(deps, caller, id).await?;
    if !deps.store.delete_endpoint(&caller.tenant_id, id).await? {
        return Err(no_endpoint());
    }
    audit(&deps.store, entry(caller, req, "webhook_endpoint.delete", id)).await;
    Ok(no_content())
}

pub async fn rotate_secret<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    load(deps, caller, id).await?;
    let secret = new_secret();
    let until = Utc::now() + ROTATION_OVERLAP;
    match deps.store.rotate_secret(&caller.tenant_id, id, &secret, until).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(no_endpoint()),
        Err(e) => return Err(e.into()),
    }
    audit(&deps.store, entry(caller, req, "webhook_endpoint.rotate_secret", id)).await;
    ok_json(&json!({"id": id, "secret": secret.expose(), "previous_secret_valid_until": until}))
}

/// `POST …/{id}/test`: one signed `endpoint.test` delivery now, answered with its outcome (and
/// logged among the endpoint's deliveries).
pub async fn test_endpoint<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let hooks = webhooks(deps)?;
    let endpoint = load(deps, caller, id).await?;
    let secrets = deps
        .store
        .endpoint_secrets(&caller.tenant_id, id)
        .await?
        .ok_or_else(no_endpoint)?;
    let now = Utc::now();
    let event = Event {
        id: format!("evt_{}", ulid::Ulid::new().to_string().to_lowercase()),
        tenant_id: caller.tenant_id.clone(),
        event_type: EventType::EndpointTest,
        timestamp: now,
        seq: 0,
        data: json!({"endpoint_id": id}),
    };
    let body = serde_json::to_vec(&event.view()).expect("JSON serializes");
    let result = hooks
        .pusher
        .push(&endpoint.url, &event.id, &body, &secrets.signing(now), now)
        .await;
    let attempt = DeliveryAttempt {
        attempt_id: ulid::Ulid::new().to_string().to_lowercase(),
        tenant_id: caller.tenant_id.clone(),
        endpoint_id: id.to_owned(),
        event_id: event.id.clone(),
        event_type: EventType::EndpointTest,
        attempt: 1,
        at: now,
        status_code: result.status_code,
        latency_ms: result.latency_ms,
        success: result.verdict == crm_shared::events::schedule::Verdict::Delivered,
        error: result.error.clone(),
        next_attempt_at: None,
    };
    deps.store.record_delivery(&attempt).await?;
    ok_json(&delivery_view(&attempt))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverInput {
    since: DateTime<Utc>,
}

/// The first position whose event happened at or after `since` (events are recorded in time
/// order, so the log is sorted by time): a binary search of point reads; expired positions
/// count as earlier.
async fn first_seq_since<S: EventStore>(
    store: &S,
    tenant_id: &str,
    since: DateTime<Utc>,
    head: u64,
) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (1, head + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match store.event_at(tenant_id, mid).await? {
            Some(e) if e.timestamp >= since => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(lo)
}

/// `POST …/{id}/recover {"since"}`: re-sends, in order, every kept event since that time that
/// the endpoint takes.
pub async fn recover<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let hooks = webhooks(deps)?;
    let input: RecoverInput = json_input(req)?;
    let endpoint = load(deps, caller, id).await?;
    if !endpoint.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "endpoint_disabled",
            "enable the endpoint before recovering",
        ));
    }
    let head = deps.store.event_head(&caller.tenant_id).await?;
    let from_seq = first_seq_since(&deps.store, &caller.tenant_id, input.since, head).await?;
    if from_seq <= head {
        let job = DeliveryJob::Recover {
            tenant_id: caller.tenant_id.clone(),
            endpoint_id: id.to_owned(),
            from_seq,
            until_seq: head,
        };
        enqueue(hooks, &job).await?;
    }
    let events = if from_seq <= head { head - from_seq + 1 } else { 0 };
    let e = entry(caller, req, "webhook_endpoint.recover", id).detail("events", events);
    audit(&deps.store, e).await;
    json_body(
        StatusCode::ACCEPTED,
        &json!({"id": id, "from_seq": from_seq, "until_seq": head, "events": events}),
    )
}

fn delivery_view(d: &DeliveryAttempt) -> Value {
    json!({
        "id": d.attempt_id,
        "event_id": d.event_id,
        "type": d.event_type,
        "attempt": d.attempt,
        "at": d.at,
        "status_code": d.status_code,
        "latency_ms": d.latency_ms,
        "success": d.success,
        "error": d.error,
        "next_attempt_at": d.next_attempt_at,
    })
}

pub async fn list_deliveries<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let listing = format!("deliveries:{id}");
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    load(deps, caller, id).await?;
    let result = deps
        .store
        .list_deliveries(&caller.tenant_id, id, page.limit, page.start)
        .await?;
    let items = result.items.iter().map(delivery_view).collect();
    ok_json(&envelope(
        items,
        result.next,
        &deps.cursors,
        &caller.tenant_id,
        &listing,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filters_are_validated() {
        assert_eq!(types_filter(None).unwrap(), []);
        assert_eq!(types_filter(Some("")).unwrap(), []);
        assert_eq!(
            types_filter(Some("message.received,contact.created")).unwrap(),
            [EventType::MessageReceived, EventType::ContactCreated]
        );
        assert_eq!(
            types_filter(Some("message.received,nope")).unwrap_err().code,
            "invalid_types"
        );
    }
}
