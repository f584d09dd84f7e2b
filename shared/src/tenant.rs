//! Tenants (the businesses using the CRM) and their API keys: types and validation rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    /// Offboarded or suspended: keys and webhook routing stop working.
    Disabled,
}

/// A tenant as the rest of the system sees it. The Graph access token is deliberately not a
/// field: it lives in its own item and is read only by the code that calls Meta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub tenant_id: String,
    pub name: String,
    pub phone_number_id: String,
    pub waba_id: String,
    pub status: TenantStatus,
    pub created_at: DateTime<Utc>,
    /// Meta rejected the access token (error 190): sending stops until an operator replaces it.
    #[serde(default)]
    pub token_invalid: bool,
    /// How the tenant's inbox works (need-to-know, auto-resolve).
    #[serde(default)]
    pub inbox: InboxSettings,
    /// How the tenant's reports count (time zone of their days).
    #[serde(default)]
    pub reports: ReportSettings,
}

/// A tenant's report settings (`GET/PUT /v1/settings/reports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// The IANA time zone the tenant's report days are counted in (`Europe/Berlin`). Days
    /// already counted stay as counted when it changes.
    #[serde(default = "utc_name")]
    pub time_zone: String,
    /// Opening hours in that time zone: response and resolution times count only them
    /// (`None`: wall-clock time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<crate::reports::hours::BusinessHours>,
    /// Count replies, resolutions and response times per user (the users' personal data:
    /// admin-only `GET /v1/reports/users`). Off unless the tenant turns it on.
    #[serde(default)]
    pub per_user_metrics: bool,
}

fn utc_name() -> String {
    "UTC".to_owned()
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            time_zone: utc_name(),
            business_hours: None,
            per_user_metrics: false,
        }
    }
}

impl ReportSettings {
    pub fn validate(&self) -> Result<(), String> {
        self.time_zone
            .parse::<chrono_tz::Tz>()
            .map(|_| ())
            .map_err(|_| "time_zone must be an IANA time zone name, e.g. Europe/Berlin or UTC".to_owned())?;
        self.business_hours.as_ref().map_or(Ok(()), |h| h.validate())
    }

    /// The time zone (UTC for a name this build does not know).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC)
    }
}

/// A tenant's inbox settings (`GET/PUT /v1/settings/inbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxSettings {
    /// Agents and viewers see only conversations assigned to them or to nobody (admins see
    /// all).
    #[serde(default)]
    pub need_to_know: bool,
    /// Resolve conversations nobody waits in after this many idle hours (`None`: never).
    #[serde(default)]
    pub auto_resolve_after_hours: Option<u32>,
}

/// Longest auto-resolve period: a year.
pub const MAX_AUTO_RESOLVE_HOURS: u32 = 24 * 365;

impl InboxSettings {
    pub fn validate(&self) -> Result<(), String> {
        match self.auto_resolve_after_hours {
            Some(h) if h == 0 || h > MAX_AUTO_RESOLVE_HOURS => Err(format!(
                "auto_resolve_after_hours must be 1 to {MAX_AUTO_RESOLVE_HOURS}, or null"
            )),
            _ => Ok(()),
        }
    }
}

/// One of a tenant's WhatsApp numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneNumber {
    pub phone_number_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_phone_number: Option<String>,
    pub waba_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub added_at: DateTime<Utc>,
}

impl Tenant {
    /// The number the tenant was created with: its default sender.
    pub fn primary_number(&self) -> PhoneNumber {
        PhoneNumber {
            phone_number_id: self.phone_number_id.clone(),
            display_phone_number: None,
            waba_id: self.waba_id.clone(),
            label: None,
            added_at: self.created_at,
        }
    }
}

/// Checks an operator's new number: Meta numeric ids, a label of at most 100 characters.
pub fn new_number(
    phone_number_id: &str,
    waba_id: &str,
    display: Option<&str>,
    label: Option<&str>,
) -> Result<PhoneNumber, TenantValidationError> {
    let (phone_number_id, waba_id) = (phone_number_id.trim(), waba_id.trim());
    if !is_meta_numeric_id(phone_number_id) {
        return Err(TenantValidationError::NumericId {
            field: "phone number id",
        });
    }
    if !is_meta_numeric_id(waba_id) {
        return Err(TenantValidationError::NumericId { field: "WABA id" });
    }
    if label.is_some_and(|l| l.chars().count() > 100) || display.is_some_and(|d| d.chars().count() > 32) {
        return Err(TenantValidationError::Name);
    }
    Ok(PhoneNumber {
        phone_number_id: phone_number_id.to_owned(),
        display_phone_number: display.map(str::to_owned),
        waba_id: waba_id.to_owned(),
        label: label.map(str::to_owned),
        added_at: Utc::now(),
    })
}

/// What an operator supplies to create a tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub phone_number_id: String,
    pub waba_id: String,
    pub access_token: Secret,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantValidationError {
    #[error("name must be 1 to 200 characters")]
    Name,
    #[error("{field} must be a Meta numeric id (1 to 32 digits)")]
    NumericId { field: &'static str },
    #[error("access token must not be empty and must not contain whitespace")]
    AccessToken,
}

fn is_meta_numeric_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

impl NewTenant {
    /// Trims and checks the operator's input.
    pub fn validated(
        name: &str,
        phone_number_id: &str,
        waba_id: &str,
        access_token: &str,
    ) -> Result<NewTenant, TenantValidationError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(TenantValidationError::Name);
        }
        let (phone_number_id, waba_id) = (phone_number_id.trim(), waba_id.trim());
        if !is_meta_numeric_id(phone_number_id) {
            return Err(TenantValidationError::NumericId {
                field: "phone number id",
            });
        }
        if !is_meta_numeric_id(waba_id) {
            return Err(TenantValidationError::NumericId { field: "WABA id" });
        }
        let token = access_token.trim();
        if token.is_empty() || token.chars().any(char::is_whitespace) {
            return Err(TenantValidationError::AccessToken);
        }
        Ok(NewTenant {
            name: name.to_owned(),
            phone_number_id: phone_number_id.to_owned(),
            waba_id: waba_id.to_owned(),
            access_token: Secret::new(token),
        })
    }
}

/// Whether a tenant's API keys may authenticate: only while the tenant exists and is active (a
/// disabled or offboarded tenant's keys answer `401` even where revoking them failed half-way).
pub fn tenant_may_authenticate(tenant: Option<&Tenant>) -> bool {
    tenant.is_some_and(|t| t.status == TenantStatus::Active)
}

/// A stored API key: never the key itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub tenant_id: String,
    pub key_id: String,
    pub role: Role,
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The user who owns the key (`None`: an integration key).
    #[serde(default)]
    pub user_id: Option<String>,
    /// When a session key (from a sign-in link) stops working; `None`: until revoked.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }

    /// Not revoked and not expired at `now`.
    pub fn is_usable_at(&self, now: DateTime<Utc>) -> bool {
        self.is_active() && !self.is_expired_at(now)
    }

    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|end| end <= now)
    }
}

/// `last_used_at` is refreshed at most this often per key, so authentication stays one read
/// on the hot path instead of a read plus a write on every request.
pub const KEY_TOUCH_INTERVAL_SECS: i64 = 300;

/// Whether a successful authentication at `now` should record the key's use.
pub fn key_use_needs_recording(last_used_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match last_used_at {
        None => true,
        Some(t) => (now - t).num_seconds() >= KEY_TOUCH_INTERVAL_SECS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn only_an_existing_active_tenant_authenticates() {
        let mut tenant = Tenant {
            tenant_id: "t1".into(),
            name: "Acme".into(),
            phone_number_id: "1".into(),
            waba_id: "2".into(),
            status: TenantStatus::Active,
            created_at: Utc::now(),
            token_invalid: true,
            inbox: InboxSettings::default(),
            reports: ReportSettings::default(),
        };
        assert!(
            tenant_may_authenticate(Some(&tenant)),
            "a flagged token does not lock the API"
        );
        tenant.status = TenantStatus::Disabled;
        assert!(!tenant_may_authenticate(Some(&tenant)));
        assert!(!tenant_may_authenticate(None), "offboarded: the tenant item is gone");
    }

    #[test]
    fn new_tenant_validation() {
        let ok = NewTenant::validated(" Acme ", "1234567890", "99", "EAAG123\n").unwrap();
        assert_eq!(ok.name, "Acme");
        assert_eq!(ok.access_token.expose(), "EAAG123");
        assert_eq!(
            NewTenant::validated("", "1", "2", "t").unwrap_err(),
            TenantValidationError::Name
        );
        assert_eq!(
            NewTenant::validated("a", "12a", "2", "t").unwrap_err(),
            TenantValidationError::NumericId {
                field: "phone number id"
            }
        );
        assert_eq!(
            NewTenant::validated("a", "1", "", "t").unwrap_err(),
            TenantValidationError::NumericId { field: "WABA id" }
        );
        assert_eq!(
            NewTenant::validated("a", "1", "2", "  ").unwrap_err(),
            TenantValidationError::AccessToken
        );
        assert_eq!(
            NewTenant::validated("a", "1", "2", "ab cd").unwrap_err(),
            TenantValidationError::AccessToken
        );
        assert!(NewTenant::validated(&"x".repeat(201), "1", "2", "t").is_err());
    }

    #[test]
    fn key_use_is_recorded_sparingly() {
        let now = Utc::now();
        assert!(key_use_needs_recording(None, now));
        assert!(!key_use_needs_recording(Some(now - Duration::seconds(10)), now));
        assert!(key_use_needs_recording(
            Some(now - Duration::seconds(KEY_TOUCH_INTERVAL_SECS)),
            now
        ));
    }
}
