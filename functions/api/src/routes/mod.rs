//! The route table: every `/v1` route, the role it needs and its handler.

mod apikeys;
mod audit;
mod automations;
mod broadcasts;
mod contacts;
mod conversations;
mod messages;
mod privacy;
mod reports;
pub mod send;
pub mod sessions;
pub mod templates;
mod tenant;
mod webhooks;

pub use webhooks::Webhooks;
mod users;

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::de::DeserializeOwned;

use crm_shared::auth::Role;
use crm_shared::blob::MediaLinks;
use crm_shared::jobs::SendJobQueue;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{ApiStore, Deps};

/// One route: its method, its path template (`{name}` marks the one path parameter a route may
/// have) and the role it needs. Its handler is the table row's right-hand side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDef {
    pub method: &'static str,
    pub path: &'static str,
    pub role: Role,
}

/// Writes the route table once and derives from it both [`ROUTES`] (what is served, checked
/// against `docs/openapi.yaml`) and [`run`] (which handler serves a matched route), so a route
/// cannot be listed without being served or served under another role.
macro_rules! route_table {
    (|$deps:ident, $caller:ident, $req:ident, $param:ident| $($method:ident $path:literal $role:ident => $handler:expr,)*) => {
        /// Every `/v1` route this function serves.
        pub const ROUTES: &[RouteDef] = &[
            $(RouteDef { method: stringify!($method), path: $path, role: Role::$role },)*
        ];

        /// Runs the handler of `route` (a row of [`ROUTES`]) with the route's path parameter.
        pub async fn run<S: ApiStore, L: MediaLinks, Q: SendJobQueue>(
            route: &RouteDef,
            $deps: &Deps<S, L, Q>,
            $caller: &Caller,
            $req: &Request,
            $param: &str,
        ) -> Result<Response<Body>, ApiError> {
            match (route.method, route.path) {
                $((stringify!($method), $path) => $handler.await,)*
                _ => Err(ApiError::route_not_found()),
            }
        }
    };
}

/// Routes served without an API key, before authentication (the body is the credential).
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[("POST", sessions::PATH)];

// method path                                 role      handler
route_table! {
    |deps, caller, req, id|
    GET    "/v1/tenant"                            Viewer => tenant::get(deps, caller),
    GET    "/v1/me"                                Viewer => users::me(deps, caller),
    GET    "/v1/numbers"                           Viewer => tenant::numbers(deps, caller, req),
    GET    "/v1/settings/inbox"                    Viewer => tenant::get_inbox_settings(deps, caller),
    PUT    "/v1/settings/inbox"                    Admin  => tenant::put_inbox_settings(deps, caller, req),
    GET    "/v1/users"                             Viewer => users::list(deps, caller, req),
    POST   "/v1/users"                             Admin  => users::create(deps, caller, req),
    GET    "/v1/users/{user_id}"                   Viewer => users::get(deps, caller, id),
    PATCH  "/v1/users/{user_id}"                   Admin  => users::patch(deps, caller, req, id),
    DELETE "/v1/users/{user_id}"                   Admin  => users::disable(deps, caller, req, id),
    POST   "/v1/users/{user_id}/apikeys"           Admin  => users::create_key(deps, caller, req, id),
    GET    "/v1/conversations"                     Viewer => conversations::list(deps, caller, req),
    GET    "/v1/conversations/{conversation_id}"   Viewer => conversations::get(deps, caller, id),
    GET    "/v1/conversations/{conversation_id}/messages" Viewer => conversations::messages(deps, caller, req, id),
    POST   "/v1/conversations/{conversation_id}/assign"   Agent  => conversations::assign(deps, caller, req, id),
    POST   "/v1/conversations/{conversation_id}/status"   Agent  => conversations::set_status(deps, caller, req, id),
    POST   "/v1/conversations/{conversation_id}/read"     Viewer => conversations::read(deps, caller, req, id),
    POST   "/v1/conversations/{conversation_id}/notes"    Agent  => conversations::add_note(deps, caller, req, id),
    GET    "/v1/conversations/{conversation_id}/notes"    Viewer => conversations::notes(deps, caller, req, id),
    GET    "/v1/apikeys"                           Admin  => apikeys::list(deps, caller, req),
    POST   "/v1/apikeys"                           Admin  => apikeys::create(deps, caller, req),
    DELETE "/v1/apikeys/{key_id}"                  Admin  => apikeys::revoke(deps, caller, req, id),
    GET    "/v1/contacts"                          Viewer => contacts::list(deps, caller, req),
    POST   "/v1/contacts"                          Agent  => contacts::create(deps, caller, req),
    GET    "/v1/contacts/{contact_id}"             Viewer => contacts::get(deps, caller, id),
    PATCH  "/v1/contacts/{contact_id}"             Agent  => contacts::patch(deps, caller, req, id),
    DELETE "/v1/contacts/{contact_id}"             Admin  => privacy::erase_contact(deps, caller, req, id),
    PUT    "/v1/contacts/{contact_id}/consent"     Agent  => contacts::put_consent(deps, caller, req, id),
    GET    "/v1/contacts/{contact_id}/consent"     Viewer => contacts::get_consent(deps, caller, id),
    PUT    "/v1/contacts/{contact_id}/restriction" Agent  => contacts::put_restriction(deps, caller, req, id),
    GET    "/v1/contacts/{contact_id}/restriction" Viewer => contacts::get_restriction(deps, caller, id),
    GET    "/v1/contacts/{contact_id}/messages"    Viewer => messages::conversation(deps, caller, req, id),
    POST   "/v1/contacts/{contact_id}/export"      Admin  => privacy::export_contact(deps, caller, req, id),
    GET    "/v1/audit"                             Admin  => audit::list(deps, caller, req),
    POST   "/v1/messages"                          Agent  => send::send(deps, caller, req),
    GET    "/v1/messages/{message_id}"             Viewer => send::get(deps, caller, id),
    GET    "/v1/settings/retention"                Viewer => privacy::get_retention(deps, caller),
    PUT    "/v1/settings/retention"                Admin  => privacy::put_retention(deps, caller, req),
    GET    "/v1/exports/{export_id}"               Admin  => privacy::get_export(deps, caller, req, id),
    GET    "/v1/erasures/{erasure_id}"             Admin  => privacy::get_erasure(deps, caller, id),
    GET    "/v1/events"                            Viewer => webhooks::list_events(deps, caller, req),
    POST   "/v1/events/{event_id}/redeliver"       Admin  => webhooks::redeliver(deps, caller, req, id),
    GET    "/v1/webhook-endpoints"                 Admin  => webhooks::list_endpoints(deps, caller, req),
    POST   "/v1/webhook-endpoints"                 Admin  => webhooks::create_endpoint(deps, caller, req),
    GET    "/v1/webhook-endpoints/{endpoint_id}"   Admin  => webhooks::get_endpoint(deps, caller, id),
    PATCH  "/v1/webhook-endpoints/{endpoint_id}"   Admin  => webhooks::patch_endpoint(deps, caller, req, id),
    DELETE "/v1/webhook-endpoints/{endpoint_id}"   Admin  => webhooks::delete_endpoint(deps, caller, req, id),
    POST   "/v1/webhook-endpoints/{endpoint_id}/rotate-secret" Admin => webhooks::rotate_secret(deps, caller, req, id),
    POST   "/v1/webhook-endpoints/{endpoint_id}/test" Admin => webhooks::test_endpoint(deps, caller, id),
    POST   "/v1/webhook-endpoints/{endpoint_id}/recover" Admin => webhooks::recover(deps, caller, req, id),
    GET    "/v1/webhook-endpoints/{endpoint_id}/deliveries" Admin => webhooks::list_deliveries(deps, caller, req, id),
    GET    "/v1/templates"                         Viewer => templates::list(deps, caller, req),
    POST   "/v1/templates"                         Admin  => templates::create(deps, caller, req),
    POST   "/v1/templates/sync"                    Admin  => templates::sync(deps, caller),
    GET    "/v1/templates/{name}"                  Viewer => templates::get(deps, caller, id),
    DELETE "/v1/templates/{name}"                  Admin  => templates::delete(deps, caller, req, id),
    GET    "/v1/settings/templates"                Viewer => templates::get_settings(deps, caller),
    PUT    "/v1/settings/templates"                Admin  => templates::put_settings(deps, caller, req),
    GET    "/v1/reports/messages"                  Viewer => reports::messages(deps, caller, req),
    GET    "/v1/reports/conversations"             Viewer => reports::conversations(deps, caller, req),
    GET    "/v1/reports/users"                     Admin  => reports::users(deps, caller, req),
    GET    "/v1/settings/reports"                  Viewer => reports::get_settings(deps, caller),
    PUT    "/v1/settings/reports"                  Admin  => reports::put_settings(deps, caller, req),
    // Broadcasts: create and control need admin, or agent if the tenant's settings allow.
    GET    "/v1/broadcasts"                        Viewer => broadcasts::list(deps, caller, req),
    POST   "/v1/broadcasts"                        Agent  => broadcasts::create(deps, caller, req),
    POST   "/v1/broadcasts/uploads"                Agent  => broadcasts::upload(deps, caller, req),
    GET    "/v1/broadcasts/{broadcast_id}"         Viewer => broadcasts::get(deps, caller, id),
    POST   "/v1/broadcasts/{broadcast_id}/start"   Agent  => broadcasts::act(deps, caller, req, id, crm_shared::broadcast::Action::Start),
    POST   "/v1/broadcasts/{broadcast_id}/pause"   Agent  => broadcasts::act(deps, caller, req, id, crm_shared::broadcast::Action::Pause),
    POST   "/v1/broadcasts/{broadcast_id}/resume"  Agent  => broadcasts::act(deps, caller, req, id, crm_shared::broadcast::Action::Resume),
    POST   "/v1/broadcasts/{broadcast_id}/cancel"  Agent  => broadcasts::act(deps, caller, req, id, crm_shared::broadcast::Action::Cancel),
    GET    "/v1/broadcasts/{broadcast_id}/recipients" Viewer => broadcasts::recipients(deps, caller, req, id),
    POST   "/v1/broadcasts/{broadcast_id}/export"  Admin  => privacy::export_broadcast(deps, caller, req, id),
    GET    "/v1/settings/broadcasts"               Viewer => broadcasts::get_settings(deps, caller),
    PUT    "/v1/settings/broadcasts"               Admin  => broadcasts::put_settings(deps, caller, req),
    GET    "/v1/automations"                       Admin  => automations::list(deps, caller, req),
    POST   "/v1/automations"                       Admin  => automations::create(deps, caller, req),
    POST   "/v1/automations/test"                  Admin  => automations::test(deps, caller, req),
    GET    "/v1/automations/{automation_id}"       Admin  => automations::get(deps, caller, id),
    PATCH  "/v1/automations/{automation_id}"       Admin  => automations::patch(deps, caller, req, id),
    DELETE "/v1/automations/{automation_id}"       Admin  => automations::delete(deps, caller, req, id),
    GET    "/v1/automations/{automation_id}/firings" Admin => automations::rule_firings(deps, caller, req, id),
    GET    "/v1/conversations/{conversation_id}/automations" Viewer => automations::conversation_firings(deps, caller, req, id),
    GET    "/v1/settings/automations"              Viewer => automations::get_settings(deps, caller),
    PUT    "/v1/settings/automations"              Admin  => automations::put_settings(deps, caller, req),
}

/// Whether `segments` (the path split on `/`, without the leading empty one) fit `template`;
/// on a fit, the value of its path parameter (`""` when it has none).
fn fit<'a>(template: &str, segments: &[&'a str]) -> Option<&'a str> {
    let mut param = "";
    let mut parts = template.split('/').skip(1);
    for segment in segments {
        match parts.next()? {
            part if part.starts_with('{') => param = segment,
            part if part == *segment => {}
            _ => return None,
        }
    }
    parts.next().is_none().then_some(param)
}

/// The route for a request and its path parameter: `404` for an unknown path, `405` for a
/// known path with another method.
pub fn match_route<'a>(method: &Method, segments: &[&'a str]) -> Result<(&'static RouteDef, &'a str), ApiError> {
    let mut path_known = false;
    for route in ROUTES {
        if let Some(param) = fit(route.path, segments) {
            if route.method == method.as_str() {
                return Ok((route, param));
            }
            path_known = true;
        }
    }
    Err(if path_known {
        ApiError::method_not_allowed()
    } else {
        ApiError::route_not_found()
    })
}

/// Largest request body accepted (API Gateway allows 10 MB; nothing here needs more).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// The request body's bytes; `400` when it is missing or too large.
pub(crate) fn body_bytes(req: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = match req.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => b"",
    };
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "a JSON body is required",
        ));
    }
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body is too large",
        ));
    }
    Ok(bytes)
}

/// The JSON request body as `T`, or a `400` that says what is wrong. Serde's messages can quote
/// input values, so only its category and position are passed on.
pub(crate) fn json_input<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    serde_json::from_slice(body_bytes(req)?).map_err(invalid_body)
}

/// A body already read as JSON (and adjusted) as `T`, refused as [`json_input`] refuses.
pub(crate) fn json_value_input<T: DeserializeOwned>(body: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(invalid_body)
}

/// The `400` for a body serde refused: its category, and its position when it has one (a
/// value already parsed has none).
fn invalid_body(e: serde_json::Error) -> ApiError {
    let what = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "is not valid JSON",
        _ => "does not have the expected fields and types",
    };
    let message = match e.line() {
        0 => format!("the JSON body {what}"),
        line => format!("the JSON body {what} (line {line}, column {})", e.column()),
    };
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, segments: &[&str]) -> Result<(&'static str, &'static str, Role, String), u16> {
        match_route(&method, segments)
            .map(|(r, param)| (r.method, r.path, r.role, param.to_owned()))
            .map_err(|e| e.status.as_u16())
    }

    #[test]
    fn every_route_is_matched_to_itself_and_has_at_most_one_parameter() {
        for def in ROUTES {
            assert!(def.path.matches('{').count() <= 1, "{} {}", def.method, def.path);
            let path = def.path.replace(['{', '}'], "");
            let segments: Vec<&str> = path.split('/').skip(1).collect();
            let method: Method = def.method.parse().unwrap();
            let (matched, _) = match_route(&method, &segments).unwrap_or_else(|_| panic!("{method} {}", def.path));
            assert_eq!(matched, def);
        }
    }

    #[test]
    fn routes_match_by_path_then_method() {
        assert_eq!(
            route(Method::GET, &["v1", "tenant"]),
            Ok(("GET", "/v1/tenant", Role::Viewer, String::new()))
        );
        assert_eq!(route(Method::POST, &["v1", "tenant"]), Err(405));
        assert_eq!(route(Method::GET, &["v1", "nope"]), Err(404));
        assert_eq!(route(Method::GET, &[""]), Err(404));
        assert_eq!(route(Method::GET, &["v1"]), Err(404));
        assert_eq!(route(Method::GET, &["v1", "tenant", "x"]), Err(404));
        assert_eq!(
            route(Method::DELETE, &["v1", "apikeys", "k"]),
            Ok(("DELETE", "/v1/apikeys/{key_id}", Role::Admin, "k".into()))
        );
        assert_eq!(
            route(Method::GET, &["v1", "contacts", "c1", "messages"]),
            Ok(("GET", "/v1/contacts/{contact_id}/messages", Role::Viewer, "c1".into()))
        );
        assert_eq!(route(Method::POST, &["v1", "contacts", "c1", "messages"]), Err(405));
    }

    #[test]
    fn roles_are_as_documented() {
        let role = |method: &str, path: &str| {
            ROUTES
                .iter()
                .find(|r| r.method == method && r.path == path)
                .map(|r| r.role)
        };
        assert_eq!(role("GET", "/v1/apikeys"), Some(Role::Admin));
        assert_eq!(role("GET", "/v1/tenant"), Some(Role::Viewer));
        assert_eq!(role("POST", "/v1/messages"), Some(Role::Agent));
        assert_eq!(role("PATCH", "/v1/contacts/{contact_id}"), Some(Role::Agent));
        assert_eq!(role("DELETE", "/v1/contacts/{contact_id}"), Some(Role::Admin));
        assert_eq!(role("GET", "/v1/settings/retention"), Some(Role::Viewer));
        // Reports hold no personal data: viewers read them; per-user metrics do: admins only.
        assert_eq!(role("GET", "/v1/reports/messages"), Some(Role::Viewer));
        assert_eq!(role("GET", "/v1/reports/conversations"), Some(Role::Viewer));
        assert_eq!(role("GET", "/v1/reports/users"), Some(Role::Admin));
        assert_eq!(role("PUT", "/v1/settings/reports"), Some(Role::Admin));
        assert_eq!(role("PUT", "/v1/settings/retention"), Some(Role::Admin));
        assert_eq!(role("GET", "/v1/templates"), Some(Role::Viewer));
        assert_eq!(role("POST", "/v1/templates"), Some(Role::Admin));
        assert_eq!(role("POST", "/v1/templates/sync"), Some(Role::Admin));
        assert_eq!(role("DELETE", "/v1/templates/{name}"), Some(Role::Admin));
        // Broadcasts: agents reach the handler, which lets them through only when the tenant's
        // broadcast settings allow it (else admin).
        assert_eq!(role("GET", "/v1/broadcasts"), Some(Role::Viewer));
        assert_eq!(role("POST", "/v1/broadcasts"), Some(Role::Agent));
        assert_eq!(role("POST", "/v1/broadcasts/{broadcast_id}/start"), Some(Role::Agent));
        assert_eq!(role("PUT", "/v1/settings/broadcasts"), Some(Role::Admin));
    }

    #[test]
    fn template_sync_is_not_a_template_name() {
        assert_eq!(
            route(Method::POST, &["v1", "templates", "sync"]),
            Ok(("POST", "/v1/templates/sync", Role::Admin, String::new()))
        );
        assert_eq!(
            route(Method::GET, &["v1", "templates", "sync"]),
            Ok(("GET", "/v1/templates/{name}", Role::Viewer, "sync".into()))
        );
    }
}
