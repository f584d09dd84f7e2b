//! Meta's webhook: the verification handshake (GET) and signed deliveries (POST).
//!
//! A delivery is authenticated over its exact bytes, parsed, and split into work items (one
//! per message, status, error or other change; `plan`). Items run concurrently, those of one
//! customer in order, within a time budget: what is not done by then (or failed in a way a
//! retry may fix) is handed, as already-authenticated minimal deliveries, to the overflow
//! queue, whose consumer (`overflow`, the `webhook-overflow` binary) runs the same code. Then
//! the webhook answers `200`. It answers `500` (Meta redelivers; every write is idempotent) only
//! when even the hand-off fails. An item the table refuses for good (over 400 KB) is kept as a
//! digest and acknowledged. Slow work (media download) is handed to the media queue.

mod account;
mod overflow;
mod plan;
mod process;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Error, Request, RequestExt, Response};
use subtle::ConstantTimeEq;

use crm_shared::cache::TtlCache;
use crm_shared::config::{ConfigError, Env, WebhookSecrets};
use crm_shared::contact;
use crm_shared::jobs::{MAX_MESSAGE_BYTES, MediaJobQueue, OverflowQueue};
use crm_shared::store::{
    AuditStore, ContactStore, CustomerIdentity, IdentityKey, InboundStore, StoreError, TemplateStore, TenantStore,
};
use crm_shared::whatsapp::{parse_payload, verify_signature};

pub use overflow::handle_overflow;
pub use process::{Outcome, Summary};

/// Storage the webhook needs.
pub trait WebhookStore:
    InboundStore + ContactStore + TenantStore + AuditStore + TemplateStore + crm_shared::store::BroadcastStore
{
}
impl<T: InboundStore + ContactStore + TenantStore + AuditStore + TemplateStore + crm_shared::store::BroadcastStore>
    WebhookStore for T
{
}

/// The webhook's one path, as configured in the Meta app and in `template.yaml`.
pub const WEBHOOK_PATH: &str = "/webhooks/whatsapp";

/// Phone number id → tenant, remembered briefly so a warm function does not look it up for
/// every delivery. Offboarding deletes the route; the cache delays that by at most its TTL.
const ROUTE_TTL: Duration = Duration::from_secs(60);

/// Entries each per-instance memory holds at most (then it starts over).
const MEMORY_CAPACITY: usize = 10_000;

/// How much work a delivery may take before the webhook answers, and how much runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time from receipt after which no further item starts: the rest is handed off.
    pub budget: Duration,
    /// Groups of items in flight at once (each is one or two DynamoDB requests at a time).
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            budget: Duration::from_millis(1000),
            concurrency: 32,
        }
    }
}

impl Limits {
    /// `WEBHOOK_BUDGET_MS` (default 1000; 0 hands every item off) and `WEBHOOK_CONCURRENCY`
    /// (default 32).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Limits::default();
        Ok(Limits {
            budget: Duration::from_millis(env.bounded("WEBHOOK_BUDGET_MS", d.budget.as_millis() as u64, 0..=20_000)?),
            concurrency: env.bounded("WEBHOOK_CONCURRENCY", d.concurrency, 1..=256)?,
        })
    }
}

/// The HTTP function: the processing, its overflow queue and its secrets.
pub struct Deps<S, Q, O> {
    pub processor: Processor<S, Q>,
    pub overflow: O,
    pub secrets: WebhookSecrets,
    pub budget: Duration,
}

impl<S: WebhookStore, Q: MediaJobQueue, O: OverflowQueue> Deps<S, Q, O> {
    pub fn new(store: S, media_queue: Q, overflow: O, secrets: WebhookSecrets) -> Self {
        Deps {
            processor: Processor::new(store, media_queue),
            overflow,
            secrets,
            budget: Limits::default().budget,
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.budget = limits.budget;
        self.processor.concurrency = limits.concurrency;
        self
    }
}

/// What processes items, in the webhook and in its overflow consumer alike.
pub struct Processor<S, Q> {
    pub store: S,
    pub media_queue: Q,
    /// Groups in flight at once ([`Limits::concurrency`]).
    pub concurrency: usize,
    /// `pnid:<phone number id>` / `waba:<waba id>` → tenant (or none).
    routes: TtlCache<String, Option<String>>,
    /// (tenant, identity) → contact id. A hit saves the identity read of an inbound message;
    /// it needs no expiry because the write it feeds is conditioned on the contact still
    /// holding the identity (see `InboundWrite`).
    known_contacts: TtlCache<(String, IdentityKey), String>,
    /// `wa_id` → E.164, as [`contact::phone_from_wa_id`] computes it (a pure function costing
    /// tens of µs per call in the phone metadata: a conversation pays it once).
    wa_id_phones: TtlCache<String, Option<String>>,
}

impl<S: WebhookStore, Q: MediaJobQueue> Processor<S, Q> {
    pub fn new(store: S, media_queue: Q) -> Self {
        Processor {
            store,
            media_queue,
            concurrency: Limits::default().concurrency,
            routes: TtlCache::new(MEMORY_CAPACITY, ROUTE_TTL),
            known_contacts: TtlCache::without_expiry(MEMORY_CAPACITY),
            wa_id_phones: TtlCache::without_expiry(MEMORY_CAPACITY),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.concurrency = limits.concurrency;
        self
    }

    pub(crate) fn phone_of_wa_id(&self, wa_id: &str) -> Option<String> {
        if let Some(phone) = self.wa_id_phones.get(wa_id) {
            return phone;
        }
        let phone = contact::phone_from_wa_id(wa_id);
        self.wa_id_phones.insert(wa_id.to_owned(), phone.clone());
        phone
    }

    /// The contact this instance last matched to one of the customer's identities.
    pub(crate) fn known_contact(&self, tenant_id: &str, identity: &CustomerIdentity) -> Option<(String, IdentityKey)> {
        identity.keys().find_map(|key| {
            self.known_contacts
                .get(&(tenant_id.to_owned(), key.clone()))
                .map(|id| (id, key))
        })
    }

    pub(crate) fn remember_contact(&self, tenant_id: &str, key: IdentityKey, contact_id: &str) {
        self.known_contacts
            .insert((tenant_id.to_owned(), key), contact_id.to_owned());
    }

    pub(crate) fn forget_contact(&self, tenant_id: &str, key: &IdentityKey) {
        self.known_contacts.remove(&(tenant_id.to_owned(), key.clone()));
    }

    /// The tenant of a change: by its phone number id, else (account-level changes) by the
    /// entry's WABA id.
    pub(crate) async fn tenant_for(
        &self,
        phone_number_id: Option<&str>,
        waba_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let cache_key = match phone_number_id {
            Some(id) => format!("pnid:{id}"),
            None => format!("waba:{waba_id}"),
        };
        if let Some(tenant) = self.routes.get(&cache_key) {
            return Ok(tenant);
        }
        let tenant = match phone_number_id {
            Some(id) => self.store.tenant_for_phone_number(id).await?,
            None => self.store.tenant_for_waba(waba_id).await?,
        };
        self.routes.insert(cache_key, tenant.clone());
        Ok(tenant)
    }
}

pub async fn handle<S: WebhookStore, Q: MediaJobQueue, O: OverflowQueue>(
    deps: &Deps<S, Q, O>,
    req: Request,
) -> Result<Response<Body>, Error> {
    let path = req.uri().path().trim_end_matches('/');
    if path != WEBHOOK_PATH {
        return Ok(json(StatusCode::NOT_FOUND, "route_not_found", "no such route"));
    }
    let response = match *req.method() {
        Method::GET => verify_subscription(deps, &req),
        Method::POST => receive(deps, &req).await,
        _ => json(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET or POST"),
    };
    Ok(response)
}

/// `GET ?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C` → `200 C` when T matches.
fn verify_subscription<S, Q, O>(deps: &Deps<S, Q, O>, req: &Request) -> Response<Body> {
    let query = req.query_string_parameters();
    let mode = query.first("hub.mode");
    let token = query.first("hub.verify_token").unwrap_or_default();
    let challenge = query.first("hub.challenge");
    let expected = deps.secrets.verify_token.expose().as_bytes();
    let token_ok = bool::from(token.as_bytes().ct_eq(expected));
    match (mode, challenge) {
        (Some("subscribe"), Some(challenge)) if token_ok => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::Text(challenge.to_owned()))
            .expect("valid response"),
        _ => json(StatusCode::FORBIDDEN, "forbidden", "verification failed"),
    }
}

async fn receive<S: WebhookStore, Q: MediaJobQueue, O: OverflowQueue>(
    deps: &Deps<S, Q, O>,
    req: &Request,
) -> Response<Body> {
    let deadline = Instant::now() + deps.budget;
    // lambda_http has already base64-decoded the body when API Gateway marked it so.
    let raw: &[u8] = match req.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => b"",
    };
    let signature = req.headers().get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    // Before anything is stored or queued.
    if let Err(err) = verify_signature(deps.secrets.app_secret.expose().as_bytes(), raw, signature) {
        tracing::warn!(reason = %err, "webhook signature rejected");
        return json(StatusCode::UNAUTHORIZED, "invalid_signature", &err.to_string());
    }
    let payload = match parse_payload(raw) {
        Ok(p) => p,
        Err(err) => {
            tracing::warn!(reason = %err, "webhook payload rejected");
            return json(StatusCode::BAD_REQUEST, "invalid_payload", &err.to_string());
        }
    };
    let outcome = process::process(&deps.processor, &payload, Some(deadline)).await;
    let summary = outcome.summary;
    if !outcome.deferred.is_empty() {
        let handed_off = match plan::pack(&outcome.deferred, MAX_MESSAGE_BYTES) {
            Ok(bodies) => deps
                .overflow
                .hand_off(&bodies)
                .await
                .map(|()| bodies.len())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match handed_off {
            Ok(queued) => tracing::info!(queued, "webhook items handed to the overflow queue"),
            Err(error) => {
                // Meta redelivers on non-2xx; every write is idempotent, so that is the retry.
                tracing::error!(?summary, %error, "webhook items could not be handed off; Meta will redeliver");
                return json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "delivery could not be stored; retry later",
                );
            }
        }
    }
    tracing::info!(?summary, "webhook processed");
    let body = serde_json::json!({"received": true});
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::Text(body.to_string()))
        .expect("valid response")
}

fn json(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::Text(body.to_string()))
        .expect("valid response")
}
