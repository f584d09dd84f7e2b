//! The route table: every `/v1` route, the role it needs and its handler.

mod apikeys;
mod audit;
mod contacts;
mod messages;
mod privacy;
mod send;
mod tenant;

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::de::DeserializeOwned;

use crm_shared::auth::Role;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{ApiStore, Deps};
use crm_shared::blob::MediaLinks;
use crm_shared::jobs::SendJobQueue;

/// A matched route with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    GetTenant,
    ListApiKeys,
    CreateApiKey,
    RevokeApiKey { key_id: String },
    ListContacts,
    CreateContact,
    GetContact { id: String },
    PatchContact { id: String },
    PutConsent { id: String },
    GetConsent { id: String },
    PutRestriction { id: String },
    ListMessages { contact_id: String },
    ListAudit,
    SendMessage,
    GetMessage { id: String },
    GetRetention,
    PutRetention,
    ExportContact { id: String },
    GetExport { id: String },
    EraseContact { id: String },
    GetErasure { id: String },
}

impl Route {
    pub fn required_role(&self) -> Role {
        match self {
            Route::GetTenant
            | Route::ListContacts
            | Route::GetContact { .. }
            | Route::GetConsent { .. }
            | Route::ListMessages { .. }
            | Route::GetMessage { .. } => Role::Viewer,
            Route::SendMessage => Role::Agent,
            Route::CreateContact
            | Route::PatchContact { .. }
            | Route::PutConsent { .. }
            | Route::PutRestriction { .. } => Role::Agent,
            Route::ListApiKeys | Route::CreateApiKey | Route::RevokeApiKey { .. } | Route::ListAudit => Role::Admin,
            Route::GetRetention => Role::Viewer,
            Route::PutRetention
            | Route::ExportContact { .. }
            | Route::GetExport { .. }
            | Route::EraseContact { .. }
            | Route::GetErasure { .. } => Role::Admin,
        }
    }

    pub async fn run<S: ApiStore, L: MediaLinks, Q: SendJobQueue>(
        &self,
        deps: &Deps<S, L, Q>,
        caller: &Caller,
        req: &Request,
    ) -> Result<Response<Body>, ApiError> {
        match self {
            Route::GetTenant => tenant::get(deps, caller).await,
            Route::ListApiKeys => apikeys::list(deps, caller, req).await,
            Route::CreateApiKey => apikeys::create(deps, caller, req).await,
            Route::RevokeApiKey { key_id } => apikeys::revoke(deps, caller, req, key_id).await,
            Route::ListContacts => contacts::list(deps, caller, req).await,
            Route::CreateContact => contacts::create(deps, caller, req).await,
            Route::GetContact { id } => contacts::get(deps, caller, id).await,
            Route::PatchContact { id } => contacts::patch(deps, caller, req, id).await,
            Route::PutConsent { id } => contacts::put_consent(deps, caller, req, id).await,
            Route::GetConsent { id } => contacts::get_consent(deps, caller, id).await,
            Route::PutRestriction { id } => contacts::put_restriction(deps, caller, req, id).await,
            Route::ListMessages { contact_id } => messages::conversation(deps, caller, req, contact_id).await,
            Route::ListAudit => audit::list(deps, caller, req).await,
            Route::SendMessage => send::send(deps, caller, req).await,
            Route::GetMessage { id } => send::get(deps, caller, id).await,
            Route::GetRetention => privacy::get_retention(deps, caller).await,
            Route::PutRetention => privacy::put_retention(deps, caller, req).await,
            Route::ExportContact { id } => privacy::export_contact(deps, caller, req, id).await,
            Route::GetExport { id } => privacy::get_export(deps, caller, req, id).await,
            Route::EraseContact { id } => privacy::erase_contact(deps, caller, req, id).await,
            Route::GetErasure { id } => privacy::get_erasure(deps, caller, id).await,
        }
    }
}

/// Every route this function serves, as `(method, path template)`: the list the OpenAPI
/// document is checked against. A unit test checks each entry against [`match_route`].
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/tenant"),
    ("GET", "/v1/apikeys"),
    ("POST", "/v1/apikeys"),
    ("DELETE", "/v1/apikeys/{key_id}"),
    ("GET", "/v1/contacts"),
    ("POST", "/v1/contacts"),
    ("GET", "/v1/contacts/{contact_id}"),
    ("PATCH", "/v1/contacts/{contact_id}"),
    ("PUT", "/v1/contacts/{contact_id}/consent"),
    ("GET", "/v1/contacts/{contact_id}/consent"),
    ("PUT", "/v1/contacts/{contact_id}/restriction"),
    ("GET", "/v1/contacts/{contact_id}/messages"),
    ("GET", "/v1/audit"),
    ("POST", "/v1/messages"),
    ("GET", "/v1/messages/{message_id}"),
    ("GET", "/v1/settings/retention"),
    ("PUT", "/v1/settings/retention"),
    ("DELETE", "/v1/contacts/{contact_id}"),
    ("POST", "/v1/contacts/{contact_id}/export"),
    ("GET", "/v1/exports/{export_id}"),
    ("GET", "/v1/erasures/{erasure_id}"),
];

/// `404` for an unknown path, `405` for a known path with another method.
pub fn match_route(method: &Method, segments: &[&str]) -> Result<Route, ApiError> {
    let by_method = |routes: Vec<(Method, Route)>| {
        routes
            .into_iter()
            .find(|(m, _)| m == method)
            .map(|(_, r)| r)
            .ok_or_else(ApiError::method_not_allowed)
    };
    match segments {
        ["v1", "tenant"] => by_method(vec![(Method::GET, Route::GetTenant)]),
        ["v1", "apikeys"] => by_method(vec![
            (Method::GET, Route::ListApiKeys),
            (Method::POST, Route::CreateApiKey),
        ]),
        ["v1", "apikeys", key_id] => by_method(vec![(
            Method::DELETE,
            Route::RevokeApiKey {
                key_id: key_id.to_string(),
            },
        )]),
        ["v1", "contacts"] => by_method(vec![
            (Method::GET, Route::ListContacts),
            (Method::POST, Route::CreateContact),
        ]),
        ["v1", "contacts", id] => by_method(vec![
            (Method::GET, Route::GetContact { id: id.to_string() }),
            (Method::PATCH, Route::PatchContact { id: id.to_string() }),
            (Method::DELETE, Route::EraseContact { id: id.to_string() }),
        ]),
        ["v1", "contacts", id, "consent"] => by_method(vec![
            (Method::PUT, Route::PutConsent { id: id.to_string() }),
            (Method::GET, Route::GetConsent { id: id.to_string() }),
        ]),
        ["v1", "contacts", id, "restriction"] => {
            by_method(vec![(Method::PUT, Route::PutRestriction { id: id.to_string() })])
        }
        ["v1", "contacts", id, "messages"] => by_method(vec![(
            Method::GET,
            Route::ListMessages {
                contact_id: id.to_string(),
            },
        )]),
        ["v1", "audit"] => by_method(vec![(Method::GET, Route::ListAudit)]),
        ["v1", "messages"] => by_method(vec![(Method::POST, Route::SendMessage)]),
        ["v1", "messages", id] => by_method(vec![(Method::GET, Route::GetMessage { id: id.to_string() })]),
        ["v1", "settings", "retention"] => by_method(vec![
            (Method::GET, Route::GetRetention),
            (Method::PUT, Route::PutRetention),
        ]),
        ["v1", "contacts", id, "export"] => {
            by_method(vec![(Method::POST, Route::ExportContact { id: id.to_string() })])
        }
        ["v1", "exports", id] => by_method(vec![(Method::GET, Route::GetExport { id: id.to_string() })]),
        ["v1", "erasures", id] => by_method(vec![(Method::GET, Route::GetErasure { id: id.to_string() })]),
        _ => Err(ApiError::route_not_found()),
    }
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
    serde_json::from_slice(body_bytes(req)?).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "is not valid JSON",
            _ => "does not have the expected fields and types",
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the JSON body {what} (line {}, column {})", e.line(), e.column()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_is_what_the_router_serves() {
        for (method, template) in ROUTES {
            let path = template.replace(['{', '}'], "");
            let segments: Vec<&str> = path.split('/').skip(1).collect();
            let method: Method = method.parse().unwrap();
            assert!(match_route(&method, &segments).is_ok(), "{method} {template}");
        }
    }

    #[test]
    fn routes_match_by_path_then_method() {
        assert_eq!(match_route(&Method::GET, &["v1", "tenant"]), Ok(Route::GetTenant));
        assert_eq!(match_route(&Method::POST, &["v1", "tenant"]).unwrap_err().status, 405);
        assert_eq!(match_route(&Method::GET, &["v1", "nope"]).unwrap_err().status, 404);
        assert_eq!(match_route(&Method::GET, &[""]).unwrap_err().status, 404);
        assert_eq!(
            match_route(&Method::DELETE, &["v1", "apikeys", "k"]),
            Ok(Route::RevokeApiKey { key_id: "k".into() })
        );
        assert_eq!(Route::ListApiKeys.required_role(), Role::Admin);
        assert_eq!(Route::GetTenant.required_role(), Role::Viewer);
    }
}
