//! Operator actions (tenant and key lifecycle) shared by `crmctl`, the local stack's seeding
//! and the tests: the rules live here, the tools only parse arguments and print.

use chrono::Utc;

use crate::auth::{self, Role};
use crate::ids;
use crate::secret::Secret;
use crate::store::{ApiKeyStore, StoreError, TenantStore};
use crate::tenant::{ApiKeyRecord, NewTenant, Tenant, TenantStatus};

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
