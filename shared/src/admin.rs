//! Operator actions (tenant and key lifecycle) shared by `crmctl`, the local stack's seeding
//! and the tests: the rules live here, the tools only parse arguments and print.

use chrono::Utc;

use crate::auth::{self, Role};
use crate::ids;
use crate::secret::Secret;
use crate::signin;
use crate::store::{ApiKeyStore, StoreError, TenantStore, UserStore};
use crate::tenant::{ApiKeyRecord, NewTenant, Tenant, TenantStatus};
use crate::user::{MAX_KEYS_PER_USER, User, UserValidationError};

/// A tenant just created, with its first (admin) key in plaintext: shown once, never stored.
#[derive(Debug)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub api_key: Secret,
    pub key_id: String,
}

pub async fn create_tenant<S: TenantStore>(store: &S, new: NewTenant) -> Result<CreatedTenant, StoreError> {
    let now = Utc::now();
    let tenant = Tenant {
        tenant_id: ids::new_id(),
        name: new.name,
        phone_number_id: new.phone_number_id,
        waba_id: new.waba_id,
        status: TenantStatus::Active,
        created_at: now,
        token_invalid: false,
        inbox: Default::default(),
        reports: Default::default(),
    };
    let minted = auth::mint_key(&tenant.tenant_id);
    let key = ApiKeyRecord {
        tenant_id: tenant.tenant_id.clone(),
        key_id: minted.key_id.clone(),
        role: Role::Admin,
        key_hash: minted.hash,
        created_at: now,
        revoked_at: None,
        last_used_at: None,
        user_id: None,
        expires_at: None,
    };
    store.create_tenant(&tenant, &new.access_token, &key).await?;
    Ok(CreatedTenant {
        tenant,
        api_key: minted.plaintext,
        key_id: minted.key_id,
    })
}

/// A key just created: the plaintext is shown once.
#[derive(Debug)]
pub struct CreatedKey {
    pub api_key: Secret,
    pub record: ApiKeyRecord,
}

pub async fn create_api_key<S: ApiKeyStore>(store: &S, tenant_id: &str, role: Role) -> Result<CreatedKey, StoreError> {
    if !ids::is_valid_id(tenant_id) {
        return Err(StoreError::NotFound);
    }
    let minted = auth::mint_key(tenant_id);
    let record = ApiKeyRecord {
        tenant_id: tenant_id.to_owned(),
        key_id: minted.key_id,
        role,
        key_hash: minted.hash,
        created_at: Utc::now(),
        revoked_at: None,
        last_used_at: None,
        user_id: None,
        expires_at: None,
    };
    store.put_key(&record).await?;
    Ok(CreatedKey {
        api_key: minted.plaintext,
        record,
    })
}

pub async fn revoke_api_key<S: ApiKeyStore>(
    store: &S,
    tenant_id: &str,
    key_id: &str,
) -> Result<ApiKeyRecord, StoreError> {
    if !ids::is_valid_id(tenant_id) || !ids::is_valid_id(key_id) {
        return Err(StoreError::NotFound);
    }
    store.revoke_key(tenant_id, key_id, Utc::now()).await
}

/// Creates a user of the tenant (`crmctl user create`, `POST /v1/users`).
pub async fn create_user<S: UserStore>(
    store: &S,
    tenant_id: &str,
    name: &str,
    email: &str,
    role: Role,
) -> Result<User, UserError> {
    if !ids::is_valid_id(tenant_id) {
        return Err(StoreError::NotFound.into());
    }
    let user = User::new(tenant_id, name, email, role, Utc::now())?;
    store.create_user(&user).await?;
    Ok(user)
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Invalid(#[from] UserValidationError),
    #[error("the user is disabled")]
    Disabled,
    #[error("the user has {MAX_KEYS_PER_USER} keys already")]
    TooManyKeys,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Mints a key owned by a user, with the user's role (`crmctl apikey create --user`,
/// `POST /v1/users/{id}/apikeys`); retried when the user changed meanwhile.
pub async fn create_user_key<S: UserStore + ApiKeyStore>(
    store: &S,
    tenant_id: &str,
    user_id: &str,
) -> Result<CreatedKey, UserError> {
    mint_user_key(store, tenant_id, user_id, None).await
}

/// [`create_user_key`], for keys that end after `lifetime` (sessions) or never (`None`). The
/// user's expired sessions are dropped in the same write, so signing in often never fills
/// the user's key list.
pub async fn mint_user_key<S: UserStore + ApiKeyStore>(
    store: &S,
    tenant_id: &str,
    user_id: &str,
    lifetime: Option<chrono::Duration>,
) -> Result<CreatedKey, UserError> {
    if !ids::is_valid_id(tenant_id) || !ids::is_valid_id(user_id) {
        return Err(StoreError::NotFound.into());
    }
    for _ in 0..3 {
        let user = store.get_user(tenant_id, user_id).await?.ok_or(StoreError::NotFound)?;
        if !user.is_active() {
            return Err(UserError::Disabled);
        }
        let now = Utc::now();
        let expired: Vec<String> = store
            .get_keys(tenant_id, &user.key_ids)
            .await?
            .into_iter()
            .filter(|k| k.is_expired_at(now))
            .map(|k| k.key_id)
            .collect();
        if user.key_ids.len() - expired.len() >= MAX_KEYS_PER_USER {
            return Err(UserError::TooManyKeys);
        }
        let minted = auth::mint_key(tenant_id);
        let record = ApiKeyRecord {
            tenant_id: tenant_id.to_owned(),
            key_id: minted.key_id,
            role: user.role,
            key_hash: minted.hash,
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            user_id: Some(user.user_id.clone()),
            expires_at: lifetime.map(|l| now + l),
        };
        match store.add_user_key(&user, &record, &expired).await {
            Ok(()) => {
                return Ok(CreatedKey {
                    api_key: minted.plaintext,
                    record,
                });
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::VersionMismatch.into())
}

/// A sign-in code just minted: the plaintext goes into the link once.
#[derive(Debug)]
pub struct CreatedSigninCode {
    pub code: Secret,
    pub expires_at: chrono::DateTime<Utc>,
}

/// A one-time sign-in code for an active user (`crmctl user login`), valid `lifetime` (at
/// most [`signin::MAX_CODE_TTL`]).
pub async fn create_signin_code<S: UserStore + ApiKeyStore>(
    store: &S,
    tenant_id: &str,
    user_id: &str,
    lifetime: chrono::Duration,
) -> Result<CreatedSigninCode, UserError> {
    if !ids::is_valid_id(tenant_id) || !ids::is_valid_id(user_id) {
        return Err(StoreError::NotFound.into());
    }
    let user = store.get_user(tenant_id, user_id).await?.ok_or(StoreError::NotFound)?;
    if !user.is_active() {
        return Err(UserError::Disabled);
    }
    let now = Utc::now();
    let minted = auth::mint_token(auth::SIGNIN_PREFIX, tenant_id);
    let code = signin::SigninCode {
        tenant_id: tenant_id.to_owned(),
        code_id: minted.key_id,
        code_hash: minted.hash,
        user_id: user.user_id,
        created_at: now,
        expires_at: now + lifetime.min(signin::MAX_CODE_TTL),
    };
    store.put_signin_code(&code).await?;
    Ok(CreatedSigninCode {
        code: minted.plaintext,
        expires_at: code.expires_at,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SigninError {
    /// Malformed, unknown, used or expired: one answer for all, so a guess learns nothing.
    #[error("the sign-in link is invalid, expired or already used")]
    InvalidCode,
    #[error(transparent)]
    User(#[from] UserError),
}

/// Trades a sign-in code, once, for a session key of its user ([`signin::SESSION_TTL`]).
pub async fn redeem_signin_code<S: UserStore + ApiKeyStore>(store: &S, code: &str) -> Result<CreatedKey, SigninError> {
    let parsed = auth::parse_token(code, auth::SIGNIN_PREFIX).ok_or(SigninError::InvalidCode)?;
    let taken = store
        .take_signin_code(&parsed.tenant_id, &parsed.key_id, &auth::hash_key(code), Utc::now())
        .await
        .map_err(UserError::from)?
        .ok_or(SigninError::InvalidCode)?;
    Ok(mint_user_key(store, &taken.tenant_id, &taken.user_id, Some(signin::SESSION_TTL)).await?)
}
