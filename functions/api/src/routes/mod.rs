//! The route table: every `/v1` route, the role it needs and its handler.

mod apikeys;
mod tenant;

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::de::DeserializeOwned;

use crm_shared::auth::Role;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{ApiStore, Deps};

/// A matched route with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    GetTenant,
    ListApiKeys,
    CreateApiKey,
    RevokeApiKey { key_id: String },
}

impl Route {
    pub fn required_role(&self) -> Role {
        match self {
            Route::GetTenant => Role::Viewer,
            Route::ListApiKeys | Route::CreateApiKey | Route::RevokeApiKey { .. } => Role::Admin,
        }
    }

    pub async fn run<S: ApiStore>(
        &self,
        deps: &Deps<S>,
        caller: &Caller,
        req: &Request,
    ) -> Result<Response<Body>, ApiError> {
        match self {
            Route::GetTenant => tenant::get(deps, caller).await,
            Route::ListApiKeys => apikeys::list(deps, caller, req).await,
            Route::CreateApiKey => apikeys::create(deps, caller, req).await,
            Route::RevokeApiKey { key_id } => apikeys::revoke(deps, caller, key_id).await,
        }
    }
}

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
        _ => Err(ApiError::route_not_found()),
    }
}

/// The JSON request body as `T`, or a `400` that says what is wrong.
pub(crate) fn json_input<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
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
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("invalid JSON body: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
