//! `POST /v1/messages` (send) and `GET /v1/messages/{id}`.
//!
//! The sending rules run here before anything is queued (a refused message is stored as
//! `rejected` and answered `422`), and again in the sender right before the Graph call,
//! because consent, restriction and the 24 h window can change while a message waits.

use chrono::{Duration, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crm_shared::auth;
use crm_shared::blob::MediaLinks;
use crm_shared::contact::Contact;
use crm_shared::contact::normalize_phone;
use crm_shared::first_contact::{FoundContact, create_or_match_contact, find_or_create_contact};
use crm_shared::ids;
use crm_shared::jobs::{SendJob, SendJobQueue};
use crm_shared::message::{Direction, MessageError, MessageRecord, MessageStatus};
use crm_shared::sending::{self, SendRequest};
use crm_shared::store::IDEMPOTENCY_TTL_HOURS;
use crm_shared::store::{Alongside, CreateOutcome, CustomerIdentity, FoundAlongside, IdempotencyRecord};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::templates::{self, TemplateRefusal};
use crate::routes::{body_bytes, contacts, messages};
use crate::{ApiStore, Deps, json_body, ok_json, request_id};

const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// The send route's path.
pub const PATH: &str = "/v1/messages";

/// A send's recipient as read in the key's round trip: put in the request's extensions by the
/// dispatcher once the key has proved valid.
#[derive(Debug, Clone)]
pub struct Prefetched {
    pub along: Alongside,
    pub found: FoundAlongside,
}

/// (tenant, phone) → the contact this instance last sent to at that phone. A hit reads the
/// contact itself beside the key instead of the phone's owner; it needs no expiry because the
/// contact read is checked to still hold the phone (a phone can move to another contact).
pub type RecipientCache = crm_shared::cache::TtlCache<(String, String), String>;

/// Recipients an instance remembers.
const RECIPIENT_CAPACITY: usize = 10_000;

pub fn recipient_cache() -> RecipientCache {
    crm_shared::cache::TtlCache::without_expiry(RECIPIENT_CAPACITY)
}

/// What a send body's recipient needs read first, for the dispatcher to read it beside the key:
/// the contact (by id, or the one this instance last sent to at the phone), else the phone's
/// owner. `None` when the body or key is not even shaped right (the route then answers as usual).
pub fn alongside<S, L, Q>(deps: &Deps<S, L, Q>, req: &Request) -> Option<Alongside> {
    #[derive(serde::Deserialize)]
    struct Addressed {
        contact_id: Option<String>,
        to: Option<String>,
    }
    let tenant_id = req
        .headers()
        .get(lambda_http::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer_token)
        .and_then(auth::parse_key)?
        .tenant_id;
    let addressed: Addressed = serde_json::from_slice(body_bytes(req).ok()?).ok()?;
    match (addressed.contact_id, addressed.to) {
        (Some(id), None) if ids::is_valid_id(&id) => Some(Alongside::Contact(id)),
        (None, Some(to)) => {
            let phone = normalize_phone(&to).ok()?;
            Some(match deps.recipients.get(&(tenant_id, phone.clone())) {
                Some(contact_id) => Alongside::Contact(contact_id),
                None => Alongside::PhoneOwner(phone),
            })
        }
        _ => None,
    }
}

/// The contact a send addresses: by id, or by phone (created when new, as a business may
/// start a conversation with a template). Uses what was read beside the key when it answers.
async fn recipient<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &SendRequest,
    prefetched: Option<&Prefetched>,
) -> Result<Contact, ApiError> {
    if let Some(id) = &req.contact_id {
        return match prefetched {
            Some(Prefetched {
                along: Alongside::Contact(read),
                found: FoundAlongside::Contact(contact),
            }) if read == id => contact
                .as_deref()
                .cloned()
                .ok_or_else(|| ApiError::not_found("no such contact")),
            _ => contacts::load(deps, caller, id).await,
        };
    }
    let phone = req.to.clone().expect("validated: contact_id or to");
    let identity = CustomerIdentity {
        phone: Some(phone.clone()),
        user_id: None,
    };
    let now = Utc::now();
    let found = match prefetched.map(|p| (&p.along, &p.found)) {
        // The contact this instance last sent to at the phone, still holding it.
        Some((Alongside::Contact(_), FoundAlongside::Contact(Some(contact))))
            if contact.phone.as_deref() == Some(phone.as_str()) =>
        {
            return Ok((**contact).clone());
        }
        Some((Alongside::PhoneOwner(read), FoundAlongside::PhoneOwner(owner))) if *read == phone => match owner {
            Some(contact_id) => FoundContact::Existing {
                contact_id: contact_id.clone(),
                matched_by: crm_shared::store::IdentityKey::Phone(phone.clone()),
            },
            None => create_or_match_contact(&deps.store, &caller.tenant_id, &identity, None, now).await?,
        },
        // A number outside the numbering plan: only to a contact that has it (one a webhook
        // stored), never a new one.
        _ if req.to_on_record_only => match deps.store.match_contact(&caller.tenant_id, &identity).await? {
            Some((contact_id, matched_by)) => FoundContact::Existing { contact_id, matched_by },
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_phone",
                    "to must be an E.164 phone number (one outside the numbering plan only for a contact that has it)",
                ));
            }
        },
        // Nothing read beside the key, or a remembered contact that no longer holds the phone.
        _ => find_or_create_contact(&deps.store, &caller.tenant_id, &identity, None, now).await?,
    };
    let contact = match found {
        FoundContact::Existing { contact_id, .. } => contacts::load(deps, caller, &contact_id).await?,
        FoundContact::Created { contact, .. } => *contact,
    };
    deps.recipients
        .insert((caller.tenant_id.clone(), phone), contact.contact_id.clone());
    Ok(contact)
}

/// The number a send goes out from: the one it names (which must be the tenant's), else the
/// one the customer last wrote to (their conversation's), else the tenant's first.
async fn sending_number<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    from: Option<&str>,
    contact: &Contact,
) -> Result<String, ApiError> {
    if let Some(number) = from {
        let owner = deps.store.tenant_for_phone_number(number).await?;
        if owner.as_deref() != Some(caller.tenant_id.as_str()) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_number",
                "from must be one of the tenant's numbers (GET /v1/numbers)",
            ));
        }
        return Ok(number.to_owned());
    }
    if let Some(number) = &contact.last_number {
        return Ok(number.clone());
    }
    Ok(caller.first_number.clone())
}

/// A tenant's numbers as this instance last read them.
pub type NumbersCache = crm_shared::cache::TtlCache<String, Vec<crm_shared::tenant::PhoneNumber>>;

/// How long an instance trusts a tenant's numbers for the template check (numbers are added and
/// removed by an operator, rarely).
pub const NUMBERS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

pub fn numbers_cache() -> NumbersCache {
    crm_shared::cache::TtlCache::new(10_000, NUMBERS_TTL)
}

/// Templates are the registry's, which holds those of the tenant's WABA (the one it was created
/// with): a template goes out from a number of that WABA, never from an added number of another
/// WABA (whose templates Meta keeps apart). The numbers come from a per-instance cache, so the
/// check costs no request on most sends.
async fn check_template_number<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    from: &str,
) -> Result<(), ApiError> {
    let numbers = match deps.tenant_numbers.get(&caller.tenant_id) {
        Some(numbers) if numbers.iter().any(|n| n.phone_number_id == from) => numbers,
        // A number this instance has not seen yet (just added): read again.
        _ => {
            let numbers = deps.store.numbers(&caller.tenant_id).await?;
            deps.tenant_numbers.insert(caller.tenant_id.clone(), numbers.clone());
            numbers
        }
    };
    let registry_waba = numbers.first().map(|n| n.waba_id.as_str());
    match numbers.iter().find(|n| n.phone_number_id == from) {
        Some(number) if Some(number.waba_id.as_str()) == registry_waba => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_number_outside_waba",
            "templates are those of the tenant's WhatsApp Business Account: send this one from a number of it (GET /v1/numbers)",
        )),
    }
}

/// Meta's wamid of one of the tenant's messages, for replies and reactions.
async fn wamid_of<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    message_id: &str,
) -> Result<String, ApiError> {
    let unknown = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_reply_to",
            "reply_to must name a message of this tenant that WhatsApp has accepted",
        )
    };
    if !ids::is_valid_id(message_id) {
        return Err(unknown());
    }
    let message = deps
        .store
        .get_message(&caller.tenant_id, message_id)
        .await?
        .ok_or_else(unknown)?;
    message.wamid.ok_or_else(unknown)
}

pub async fn send<S: ApiStore, L: MediaLinks, Q: SendJobQueue>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let raw = body_bytes(req)?;
    let body: Value = serde_json::from_slice(raw).map_err(|_| bad("invalid_body", "the body is not valid JSON"))?;
    let mut request = sending::parse_send_request(&body).map_err(|e| bad(e.code, e.message))?;

    // Idempotency: the key is scoped to the tenant and stored hashed.
    let idempotency_key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| bad("invalid_idempotency_key", "Idempotency-Key must be ASCII"))?;
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_CHARS {
                return Err(bad(
                    "invalid_idempotency_key",
                    format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
                ));
            }
            Some(key.to_owned())
        }
    };
    let key_hash = idempotency_key
        .as_ref()
        .map(|k| hex::encode(Sha256::digest(k.as_bytes())));
    let request_hash = hex::encode(Sha256::digest(raw));
    if let Some(hash) = &key_hash
        && let Some(previous) = deps.store.idempotency_lookup(&caller.tenant_id, hash).await?
    {
        return replay(deps, caller, &previous, &request_hash).await;
    }

    let contact = recipient(deps, caller, &request, req.extensions().get::<Prefetched>()).await?;
    let from = sending_number(deps, caller, request.from.as_deref(), &contact).await?;
    if request.message_type == "template" {
        check_template_number(deps, caller, &from).await?;
    }
    let reply_wamid = match &request.reply_to {
        Some(id) => Some(wamid_of(deps, caller, id).await?),
        None => None,
    };
    // A reaction may name the message by our id; Meta needs its wamid.
    if request.message_type == "reaction"
        && let Some(target) = request
            .content
            .get("message_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
        && ids::is_valid_id(&target)
    {
        request.content["message_id"] = json!(wamid_of(deps, caller, &target).await?);
    }

    // A template send is checked against the registry first: its category is Meta's, and a
    // send Meta would refuse is refused here, with Meta's code, before anything is queued.
    let mut template = None;
    if request.message_type == "template" {
        match templates::check_send(deps, caller, &contact, &mut request).await? {
            Ok(checked) => {
                request.category = checked.category;
                template = Some(Ok(checked.language));
            }
            Err(refusal) => template = Some(Err(refusal)),
        }
    }
    let template_refusal = match &template {
        Some(Err(TemplateRefusal(errors))) => errors.first().cloned().map(|first| (first, errors.clone())),
        _ => None,
    };

    let now = Utc::now();
    let message_id = ids::new_id();
    let refusal = sending::check_rules(&contact, &request.message_type, request.category, now).err();
    // The type's object as it will be sent; the sender re-checks the rules with the category.
    let content = request.content.clone();
    let (status, error) = match (&template_refusal, refusal) {
        (Some((first, _)), _) => (
            MessageStatus::Rejected,
            Some(MessageError {
                code: i64::from(first.code.code()),
                title: Some(first.code.title().to_owned()),
                detail: Some(format!("{}: {}", first.field, first.message)),
            }),
        ),
        (None, Some(r)) => (
            MessageStatus::Rejected,
            Some(MessageError {
                code: 0,
                title: Some(r.code().to_owned()),
                detail: Some(r.message().to_owned()),
            }),
        ),
        (None, None) => (MessageStatus::Queued, None),
    };
    let message = MessageRecord {
        phone_number_id: Some(from),
        sent_by: caller.user_id.clone(),
        error,
        category: Some(request.category),
        language: template.as_ref().and_then(|t| t.as_ref().ok()).cloned(),
        reply_to: request.reply_to.clone(),
        context_wamid: reply_wamid,
        ..MessageRecord::new(
            &caller.tenant_id,
            message_id.clone(),
            &contact.contact_id,
            Direction::Outbound,
            &request.message_type,
            content,
            status,
            now,
            now,
        )
    };
    // A refused send is still a stored message (`rejected`): its id and status sit beside the
    // error, where a queued send's are.
    let (status_code, response) = match (template_refusal, refusal) {
        (Some((first, errors)), _) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"id": message_id, "status": "rejected", "error": {
                "code": "template_invalid",
                "message": format!("Meta would refuse this send ({}): {}", first.code.code(), first.message),
                "message_id": message_id,
                "details": errors.iter().map(|e| json!({
                    "code": e.code.code(), "title": e.code.title(), "field": e.field, "message": e.message,
                })).collect::<Vec<_>>(),
            }}),
        ),
        (None, Some(r)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"id": message_id, "status": "rejected",
                   "error": {"code": r.code(), "message": r.message(), "message_id": message_id}}),
        ),
        (None, None) => (
            StatusCode::ACCEPTED,
            json!({"id": message_id, "message_id": message_id, "status": "queued"}),
        ),
    };
    let record = key_hash.map(|key_hash| IdempotencyRecord {
        tenant_id: caller.tenant_id.clone(),
        key_hash,
        request_hash: request_hash.clone(),
        status_code: status_code.as_u16(),
        response: response.clone(),
        message_id: message_id.clone(),
        contact_id: contact.contact_id.clone(),
        created_at: now,
        expires_at: (now + Duration::hours(IDEMPOTENCY_TTL_HOURS)).timestamp(),
    });
    let entry = caller
        .audit_entry("message.send")
        .target("message", &message_id)
        .request(request_id(req).as_deref())
        .detail("contact_id", contact.contact_id.as_str())
        .detail("type", request.message_type.as_str())
        .detail("outcome", status.as_str());
    let created = match deps
        .store
        .create_message_once(&message, record.as_ref(), Some(&entry))
        .await
    {
        Err(crm_shared::store::StoreError::NotFound) => return Err(ApiError::not_found("contact not found")),
        other => other?,
    };
    match created {
        CreateOutcome::Created => {}
        // A concurrent request with the same key won the race: answer as it did.
        CreateOutcome::Replay(previous) => return replay(deps, caller, &previous, &request_hash).await,
    }
    if status == MessageStatus::Queued {
        enqueue(deps, &caller.tenant_id, &message_id).await?;
    }
    json_body(status_code, &response)
}

async fn enqueue<S: ApiStore, L, Q: SendJobQueue>(
    deps: &Deps<S, L, Q>,
    tenant_id: &str,
    message_id: &str,
) -> Result<(), ApiError> {
    let job = SendJob::new(tenant_id, message_id);
    deps.outbound.enqueue_send(&job).await.map_err(|e| {
        tracing::error!(error = %e, %message_id, "could not enqueue a send");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            "the message is stored but could not be queued; repeat the request with the same Idempotency-Key",
        )
    })
}

/// Answers a repeated request with the first response. A message still `queued` is queued
/// again: the sender's claim makes a duplicate job harmless, and this is how a request whose
/// enqueue failed gets its message sent.
async fn replay<S: ApiStore, L, Q: SendJobQueue>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    previous: &IdempotencyRecord,
    request_hash: &str,
) -> Result<Response<Body>, ApiError> {
    if previous.request_hash != request_hash {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        ));
    }
    if let Some(message) = deps.store.get_message(&caller.tenant_id, &previous.message_id).await?
        && message.status == MessageStatus::Queued
    {
        enqueue(deps, &caller.tenant_id, &message.message_id).await?;
    }
    let status = StatusCode::from_u16(previous.status_code).unwrap_or(StatusCode::ACCEPTED);
    json_body(status, &previous.response)
}

pub async fn get<S: ApiStore, L: MediaLinks, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let not_found = || ApiError::not_found("no such message");
    if !ids::is_valid_id(id) {
        return Err(not_found());
    }
    let message = deps
        .store
        .get_message(&caller.tenant_id, id)
        .await?
        .ok_or_else(not_found)?;
    ok_json(&messages::view(&deps.media, &message).await)
}
