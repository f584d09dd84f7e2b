//! Bearer API key → caller (tenant, key, role).

use std::time::Duration;

use chrono::Utc;
use lambda_http::http::HeaderMap;

use crm_shared::audit::AuditEntry;
use crm_shared::auth::{self, Role};
use crm_shared::cache::TtlCache;
use crm_shared::store::{Alongside, ApiKeyStore, AuditStore, FoundAlongside, TenantStore};
use crm_shared::tenant::{key_use_needs_recording, tenant_may_authenticate};

use crate::error::ApiError;

/// Who is calling: established by [`authenticate`], required by every `/v1` route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant_id: String,
    pub key_id: String,
    pub role: Role,
    /// The user the key belongs to (`None`: an integration key).
    pub user_id: Option<String>,
    /// The tenant's need-to-know setting as this instance last read it (at most 30 s old).
    pub need_to_know: bool,
    /// The tenant's first number, its default sender (it never changes: it cannot be removed).
    pub first_number: String,
}

impl Caller {
    /// Who acts, as conversations and notes name them: the user, or the key without one.
    pub fn actor(&self) -> &str {
        self.user_id.as_deref().unwrap_or(&self.key_id)
    }

    /// An audit entry naming the acting key and its user.
    pub fn audit_entry(&self, action: &str) -> AuditEntry {
        AuditEntry::new(&self.tenant_id, Some(&self.key_id), action).by_user(self.user_id.as_deref())
    }

    /// Which conversations the caller may see: admins all; under need-to-know, everyone else
    /// only those assigned to them or to nobody.
    pub fn visibility(&self) -> crm_shared::conversation::Visibility {
        if self.need_to_know && !self.role.allows(Role::Admin) {
            crm_shared::conversation::Visibility::AssignedOrUnassigned(self.actor().to_owned())
        } else {
            crm_shared::conversation::Visibility::All
        }
    }

    /// `403` unless the caller's role includes `required`.
    pub fn require(&self, required: Role) -> Result<(), ApiError> {
        if self.role.allows(required) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this action needs the {required} role; the key has {}",
                self.role
            )))
        }
    }
}

const INVALID_KEY: &str = "missing, unknown or revoked API key";

/// Longest time an instance trusts what it read of a tenant's status: a disabled or offboarded
/// tenant's keys stop working within this time even if revoking them failed half-way.
pub const TENANT_STATUS_TTL: Duration = Duration::from_secs(30);

/// Tenants an instance remembers the status of.
const TENANT_STATUS_CAPACITY: usize = 10_000;

/// What authentication needs of a tenant: whether its keys work, and its need-to-know setting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TenantAccess {
    allowed: bool,
    need_to_know: bool,
    first_number: String,
}

/// Per instance: tenant id → what authentication needs of it, read at most once per TTL.
#[derive(Debug)]
pub struct TenantStatusCache(TtlCache<String, TenantAccess>);

impl TenantStatusCache {
    /// `ttl` is capped at [`TENANT_STATUS_TTL`].
    pub fn new(ttl: Duration) -> Self {
        TenantStatusCache(TtlCache::new(TENANT_STATUS_CAPACITY, ttl.min(TENANT_STATUS_TTL)))
    }

    /// Whether `tenant_id`'s keys may authenticate, and its need-to-know setting: remembered,
    /// or one read of the tenant.
    async fn access<S: TenantStore>(&self, store: &S, tenant_id: &str) -> Result<TenantAccess, ApiError> {
        if let Some(access) = self.0.get(tenant_id) {
            return Ok(access);
        }
        let tenant = store.get_tenant(tenant_id).await?;
        let access = TenantAccess {
            allowed: tenant_may_authenticate(tenant.as_ref()),
            need_to_know: tenant.as_ref().is_some_and(|t| t.inbox.need_to_know),
            first_number: tenant.map(|t| t.phone_number_id).unwrap_or_default(),
        };
        self.0.insert(tenant_id.to_owned(), access.clone());
        Ok(access)
    }

    /// Forgets what this instance read of a tenant (after changing its settings here).
    pub fn forget(&self, tenant_id: &str) {
        self.0.remove(tenant_id);
    }
}

impl Default for TenantStatusCache {
    fn default() -> Self {
        TenantStatusCache::new(TENANT_STATUS_TTL)
    }
}

/// Checks the `Authorization: Bearer` key: one strongly consistent read of the key record, and
/// of the tenant's status when this instance has not read it within [`TENANT_STATUS_TTL`].
/// `along` is an item of the key's tenant the request needs next, read in the key's round trip
/// and handed back only when the key is valid.
pub async fn authenticate<S: ApiKeyStore + AuditStore + TenantStore>(
    store: &S,
    tenants: &TenantStatusCache,
    headers: &HeaderMap,
    request_id: Option<&str>,
    along: Option<&Alongside>,
) -> Result<(Caller, Option<FoundAlongside>), ApiError> {
    let header = headers
        .get(lambda_http::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("an Authorization: Bearer <api key> header is required"))?;
    let presented = auth::bearer_token(header).ok_or_else(|| ApiError::unauthorized(INVALID_KEY))?;
    let key_ref = auth::parse_key(presented).ok_or_else(|| ApiError::unauthorized(INVALID_KEY))?;
    let (record, found) = match along {
        None => (store.get_key(&key_ref.tenant_id, &key_ref.key_id).await?, None),
        Some(along) => {
            let (record, found) = store.get_key_along(&key_ref.tenant_id, &key_ref.key_id, along).await?;
            (record, Some(found))
        }
    };
    let record = record.ok_or_else(|| ApiError::unauthorized(INVALID_KEY))?;
    let now = Utc::now();
    if !record.is_usable_at(now) || !auth::key_matches(presented, &record.key_hash) {
        return Err(ApiError::unauthorized(INVALID_KEY));
    }
    // Checked only for a valid key, so made-up tenant ids cost no read and fill no cache.
    let access = tenants.access(store, &record.tenant_id).await?;
    if !access.allowed {
        return Err(ApiError::unauthorized(INVALID_KEY));
    }
    if key_use_needs_recording(record.last_used_at, now) {
        // Best effort: failing to note the time of use must not fail the request.
        if let Err(err) = store.record_key_use(&record.tenant_id, &record.key_id, now).await {
            tracing::warn!(error = %err, key_id = %record.key_id, "could not record key use");
        }
        // Key use enters the audit log at the same pace as `last_used_at`; every write is
        // audited on its own with the acting key.
        let entry = AuditEntry::new(&record.tenant_id, Some(&record.key_id), "api_key.used")
            .by_user(record.user_id.as_deref())
            .target("api_key", &record.key_id)
            .request(request_id);
        if let Err(err) = store.record_audit(&entry).await {
            tracing::warn!(error = %err, "could not audit key use");
        }
    }
    let caller = Caller {
        tenant_id: record.tenant_id,
        key_id: record.key_id,
        role: record.role,
        user_id: record.user_id,
        need_to_know: access.need_to_know,
        first_number: access.first_number,
    };
    Ok((caller, found))
}
