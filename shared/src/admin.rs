//! Operator actions (tenant and key lifecycle) shared by `crmctl`, the local stack's seeding
//! and the tests: the rules live here, the tools only parse arguments and print.

use chrono::Utc;

use crate::auth::{self, Role};
use crate::ids;
use crate::secret::Secret;
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
pub async fn create_user_key<S: UserStore>(store: &S, tenant_id: &str, user_id: &str) -> Result<CreatedKey, UserError> {
    if !ids::is_valid_id(tenant_id) || !ids::is_valid_id(user_id) {
        return Err(StoreError::NotFound.into());
    }
    for _ in 0..3 {
        let user = store.get_user(tenant_id, user_id).await?.ok_or(StoreError::NotFound)?;
        if !user.is_active() {
            return Err(UserError::Disabled);
        }
        if user.key_ids.len() >= MAX_KEYS_PER_USER {
            return Err(UserError::TooManyKeys);
        }
        let minted = auth::mint_key(tenant_id);
        let record = ApiKeyRecord {
            tenant_id: tenant_id.to_owned(),
            key_id: minted.key_id,
            role: user.role,
            key_hash: minted.hash,
            created_at: Utc::now(),
            revoked_at: None,
            last_used_at: None,
            user_id: Some(user.user_id.clone()),
        };
        match store.add_user_key(&user, &record).await {
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
