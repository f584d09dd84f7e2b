//! The tenant API (`/v1`): routing, authentication and the route handlers, generic over the
//! storage ports so the same code serves Lambda and the local gateway.

pub mod auth;
pub mod error;
pub mod pagination;
mod routes;

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Error, Request, Response};

use crm_shared::cursor::CursorCodec;
use crm_shared::store::{ApiKeyStore, TenantStore};

use crate::auth::{Caller, authenticate};
use crate::error::ApiError;

/// What the handlers need; built once per execution environment.
pub struct Deps<S> {
    pub store: S,
    pub cursors: CursorCodec,
}

impl<S> Deps<S> {
    pub fn new(store: S, cursors: CursorCodec) -> Self {
        Deps { store, cursors }
    }
}

/// The storage capabilities the API uses.
pub trait ApiStore: TenantStore + ApiKeyStore {}
impl<T: TenantStore + ApiKeyStore> ApiStore for T {}

/// Lambda handler: never returns `Err` for a request problem; those are HTTP responses.
pub async fn handle<S: ApiStore>(deps: &Deps<S>, req: Request) -> Result<Response<Body>, Error> {
    let response = match dispatch(deps, &req).await {
        Ok(resp) => resp,
        Err(err) => json_response(err.status, &err.body()),
    };
    Ok(response)
}

async fn dispatch<S: ApiStore>(deps: &Deps<S>, req: &Request) -> Result<Response<Body>, ApiError> {
    // Authenticate before routing: without a valid key nothing about the API is revealed.
    let caller: Caller = authenticate(&deps.store, req.headers()).await?;
    let path = req.uri().path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let route = routes::match_route(req.method(), &segments)?;
    caller.require(route.required_role())?;
    route.run(deps, &caller, req).await
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::Text(body.to_string()))
        .expect("status and header are valid")
}

pub(crate) fn json_body(status: StatusCode, body: &serde_json::Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(status, body))
}

pub(crate) fn ok_json(body: &serde_json::Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, body))
}
