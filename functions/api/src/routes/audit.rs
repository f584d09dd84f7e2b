//! `GET /v1/audit` (admin): the tenant's audit log, newest first.

use lambda_http::{Body, Request, Response};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::{ApiStore, Deps, ok_json};

const LISTING: &str = "audit";

pub async fn list<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let page = page_request(req, &deps.cursors, &caller.tenant_id, LISTING)?;
    let result = deps.store.list_audit(&caller.tenant_id, page.limit, page.start).await?;
    let items = result
        .items
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "at": e.at,
                "actor_key_id": e.actor_key_id,
                "actor_user_id": e.actor_user_id,
                "action": e.action,
                "target_type": e.target_type,
                "target_id": e.target_id,
                "request_id": e.request_id,
                "details": e.details,
            })
        })
        .collect();
    ok_json(&envelope(items, result.next, &deps.cursors, &caller.tenant_id, LISTING))
}
