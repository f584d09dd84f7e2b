//! `POST /v1/sessions`: a sign-in link's one-time code traded for a session key (the one route
//! without a key: the code is the credential). See `crm_shared::signin`.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

use crm_shared::admin::{self, SigninError, UserError};
use crm_shared::audit::AuditEntry;
use crm_shared::store::StoreError;

use crate::error::ApiError;
use crate::routes::json_input;
use crate::{ApiStore, Deps, audit, json_body, request_id};

pub const PATH: &str = "/v1/sessions";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionInput {
    code: String,
}

fn invalid_code() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_code",
        SigninError::InvalidCode.to_string(),
    )
}

pub async fn create<S: ApiStore, L, Q>(deps: &Deps<S, L, Q>, req: &Request) -> Result<Response<Body>, ApiError> {
    let input: SessionInput = json_input(req)?;
    let created = match admin::redeem_signin_code(&deps.store, &input.code).await {
        Ok(created) => created,
        // A user disabled or removed since the link was made gets the same answer as a bad code.
        Err(
            SigninError::InvalidCode | SigninError::User(UserError::Disabled | UserError::Store(StoreError::NotFound)),
        ) => {
            return Err(invalid_code());
        }
        Err(SigninError::User(other)) => return Err(other.into()),
    };
    let record = &created.record;
    let entry = AuditEntry::new(&record.tenant_id, Some(&record.key_id), "session.create")
        .by_user(record.user_id.as_deref())
        .target("api_key", &record.key_id)
        .request(request_id(req).as_deref());
    audit(&deps.store, entry).await;
    json_body(
        StatusCode::CREATED,
        &json!({
            "api_key": created.api_key.expose(),
            "key_id": record.key_id,
            "role": record.role,
            "user_id": record.user_id,
            "expires_at": record.expires_at,
        }),
    )
}
