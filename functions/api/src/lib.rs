//! The tenant API (`/v1`): routing, authentication and the route handlers, generic over the
//! storage ports so the same code serves Lambda and the local gateway.

pub mod auth;
pub mod error;
pub mod pagination;
pub mod routes;
pub mod schedule;

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Error, Request, Response};

use crm_shared::audit::AuditEntry;
use crm_shared::blob::{MediaLinks, S3Blobs};
use crm_shared::cursor::CursorCodec;
use crm_shared::graph::GraphClient;
use crm_shared::jobs::{SendJobQueue, SqsQueue};
use crm_shared::store::{
    ApiKeyStore, AuditStore, AutomationStore, BroadcastStore, ContactStore, ConversationStore, EventStore,
    MessageStore, OutboundStore, ReportStore, TemplateStore, TenantStore, UserStore, WebhookStore,
};

use crate::auth::{Caller, TenantStatusCache, authenticate};
use crate::error::ApiError;
use crm_shared::quota::{QuotaConfig, TenantQuotas};

/// What the handlers need; built once per execution environment.
pub struct Deps<S, L = S3Blobs, Q = SqsQueue> {
    pub store: S,
    pub cursors: CursorCodec,
    /// Presigned links to stored media.
    pub media: L,
    /// The outbound (send) queue.
    pub outbound: Q,
    /// Exports, erasure and retention settings (`None`: those routes answer `503`).
    pub privacy: Option<crm_shared::privacy::Privacy>,
    /// Per-tenant request quotas of this instance.
    pub quotas: TenantQuotas,
    /// Tenant statuses this instance has read (at most 30 s old).
    pub tenant_status: TenantStatusCache,
    /// The delivery queue and client (`None`: redeliver, recover and test answer `503`).
    pub webhooks: Option<routes::Webhooks>,
    /// Where webhook endpoints may point (strict unless the process was told otherwise).
    pub webhook_policy: crm_shared::events::ssrf::UrlPolicy,
    /// Meta's template endpoints (`None`: create, delete and sync answer `503`).
    pub graph: Option<GraphClient>,
    /// Tenants' template settings this instance has read (at most 60 s old).
    pub template_settings: routes::templates::SettingsCache,
    /// Tenants' numbers this instance has read (at most 60 s old): which WABA a template send's
    /// number belongs to, without a query per send.
    pub tenant_numbers: routes::send::NumbersCache,
    /// Which contact this instance last sent to at a phone: its send reads the contact beside
    /// the key instead of the phone's owner.
    pub recipients: routes::send::RecipientCache,
}

impl<S, L, Q> Deps<S, L, Q> {
    pub fn new(store: S, cursors: CursorCodec, media: L, outbound: Q) -> Self {
        Deps {
            store,
            cursors,
            media,
            outbound,
            privacy: None,
            quotas: TenantQuotas::new(QuotaConfig::default()),
            tenant_status: TenantStatusCache::default(),
            webhooks: None,
            webhook_policy: Default::default(),
            graph: None,
            template_settings: routes::templates::settings_cache(),
            tenant_numbers: routes::send::numbers_cache(),
            recipients: routes::send::recipient_cache(),
        }
    }

    /// Serves the webhook routes that deliver (redeliver, recover, test) with `webhooks`, and
    /// admits endpoint URLs by its client's policy.
    pub fn with_webhooks(mut self, webhooks: routes::Webhooks) -> Self {
        self.webhook_policy = webhooks.pusher.policy();
        self.webhooks = Some(webhooks);
        self
    }

    /// Serves template create, delete and sync through `graph`.
    pub fn with_graph(mut self, graph: GraphClient) -> Self {
        self.graph = Some(graph);
        self
    }

    /// Per-tenant quota `config` (per instance) instead of the template's defaults.
    pub fn with_quota(mut self, config: QuotaConfig) -> Self {
        self.quotas = TenantQuotas::new(config);
        self
    }

    /// Trusts a tenant status read for `ttl` (at most [`auth::TENANT_STATUS_TTL`]).
    pub fn with_tenant_status_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.tenant_status = TenantStatusCache::new(ttl);
        self
    }

    /// Serves the privacy routes with `privacy`.
    pub fn with_privacy(mut self, privacy: crm_shared::privacy::Privacy) -> Self {
        self.privacy = Some(privacy);
        self
    }
}

/// The storage capabilities the API uses.
pub trait ApiStore:
    TenantStore
    + AutomationStore
    + ApiKeyStore
    + UserStore
    + ContactStore
    + ConversationStore
    + MessageStore
    + AuditStore
    + OutboundStore
    + EventStore
    + WebhookStore
    + TemplateStore
    + ReportStore
    + BroadcastStore
{
}
impl<
    T: TenantStore
        + AutomationStore
        + ApiKeyStore
        + UserStore
        + ContactStore
        + ConversationStore
        + MessageStore
        + AuditStore
        + OutboundStore
        + EventStore
        + WebhookStore
        + TemplateStore
        + ReportStore
        + BroadcastStore,
> ApiStore for T
{
}

/// Lambda handler: never returns `Err` for a request problem; those are HTTP responses.
pub async fn handle<S: ApiStore, L: MediaLinks, Q: SendJobQueue>(
    deps: &Deps<S, L, Q>,
    req: Request,
) -> Result<Response<Body>, Error> {
    let mut response = match dispatch(deps, req).await {
        Ok(resp) => resp,
        Err(err) => error_response(&err),
    };
    // Every answer is tenant data (or about it): no shared or browser cache may keep it.
    response.headers_mut().insert(
        lambda_http::http::header::CACHE_CONTROL,
        lambda_http::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

async fn dispatch<S: ApiStore, L: MediaLinks, Q: SendJobQueue>(
    deps: &Deps<S, L, Q>,
    mut req: Request,
) -> Result<Response<Body>, ApiError> {
    let req_path = req.uri().path().trim_end_matches('/');
    // The one route without a key: a sign-in link's code is the credential.
    if req.method() == lambda_http::http::Method::POST && req_path == routes::sessions::PATH {
        return routes::sessions::create(deps, &req).await;
    }
    // A send's recipient is read in the key's round trip (the route finds it in the request's
    // extensions); nothing of it is used unless the key is valid.
    let along = (req.method() == lambda_http::http::Method::POST && req_path == routes::send::PATH)
        .then(|| routes::send::alongside(deps, &req))
        .flatten();
    // Authenticate before routing: without a valid key nothing about the API is revealed.
    let (caller, found): (Caller, _) = authenticate(
        &deps.store,
        &deps.tenant_status,
        req.headers(),
        request_id(&req).as_deref(),
        along.as_ref(),
    )
    .await?;
    if let (Some(along), Some(found)) = (along, found) {
        req.extensions_mut().insert(routes::send::Prefetched { along, found });
    }
    let req = &req;
    // The tenant's quota, per instance, before any work is done for the request.
    deps.quotas
        .check(&caller.tenant_id)
        .map_err(|limited| ApiError::rate_limited(limited.retry_after_secs))?;
    let path = req.uri().path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let (route, param) = routes::match_route(req.method(), &segments)?;
    caller.require(route.role)?;
    routes::run(route, deps, &caller, req, param).await
}

fn error_response(err: &ApiError) -> Response<Body> {
    let mut response = json_response(err.status, &err.body());
    if let Some(secs) = err.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, lambda_http::http::HeaderValue::from(secs));
    }
    response
}

pub(crate) fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::Text(
            serde_json::to_string(body).expect("API bodies are plain data that always serialize"),
        ))
        .expect("status and header are valid")
}

/// API Gateway's id of this request, for audit entries and logs.
pub(crate) fn request_id(req: &Request) -> Option<String> {
    use lambda_http::RequestExt;
    match req.request_context_ref()? {
        lambda_http::request::RequestContext::ApiGatewayV2(ctx) => ctx.request_id.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Appends to the audit log after a successful action. The action has happened, so a failure
/// to record it is logged loudly rather than turned into an error response that would invite
/// a retry of the action itself.
pub(crate) async fn audit<S: ApiStore>(store: &S, entry: AuditEntry) {
    for attempt in 1..=2 {
        match store.record_audit(&entry).await {
            Ok(()) => return,
            Err(err) if attempt == 2 => {
                tracing::error!(error = %err, action = %entry.action, "audit entry could not be recorded")
            }
            Err(_) => {}
        }
    }
}

pub(crate) fn json_body<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    body: &T,
) -> Result<Response<Body>, ApiError> {
    Ok(json_response(status, body))
}

/// `204 No Content` (a delete that worked).
pub(crate) fn no_content() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .expect("status is valid")
}

pub(crate) fn ok_json<T: serde::Serialize + ?Sized>(body: &T) -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, body))
}
