//! The tenant's users (the people of the business who use the CRM): types and validation.
//! A user has a role and may own API keys; disabling the user revokes those keys in the same
//! transaction, so they stop working at once (authentication reads only the key).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Role;

/// Most keys one user may hold (a user's disable or role change rewrites them all in one
/// transaction, which holds at most 100 items).
pub const MAX_KEYS_PER_USER: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub tenant_id: String,
    pub user_id: String,
    pub name: String,
    /// Lowercase; unique within the tenant.
    pub email: String,
    pub role: Role,
    pub status: UserStatus,
    /// The user's API keys (revoked ones included): rewritten with the user.
    #[serde(default)]
    pub key_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime<Utc>>,
}

impl User {
    pub fn is_active(&self) -> bool {
        self.status == UserStatus::Active
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserValidationError {
    #[error("name must be 1 to 200 characters")]
    Name,
    #[error("email must be an address like name@example.com (at most 254 characters)")]
    Email,
}

/// Trims and checks a user's name.
pub fn user_name(name: &str) -> Result<String, UserValidationError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(UserValidationError::Name);
    }
    Ok(name.to_owned())
}

/// Trims, lowercases and checks an email address (one `@`, a dotted domain, no spaces).
pub fn user_email(email: &str) -> Result<String, UserValidationError> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@').ok_or(UserValidationError::Email)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !domain.contains("..");
    let shape_ok =
        !local.is_empty() && email.len() <= 254 && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !(domain_ok && shape_ok) {
        return Err(UserValidationError::Email);
    }
    Ok(email)
}

impl User {
    /// A new active user from checked input.
    pub fn new(
        tenant_id: &str,
        name: &str,
        email: &str,
        role: Role,
        at: DateTime<Utc>,
    ) -> Result<User, UserValidationError> {
        Ok(User {
            tenant_id: tenant_id.to_owned(),
            user_id: crate::ids::new_id(),
            name: user_name(name)?,
            email: user_email(email)?,
            role,
            status: UserStatus::Active,
            key_ids: Vec::new(),
            created_at: at,
            updated_at: at,
            disabled_at: None,
        })
    }
}

/// The user as the API shows it (key ids stay internal).
pub fn user_json(user: &User) -> serde_json::Value {
    serde_json::json!({
        "id": user.user_id,
        "name": user.name,
        "email": user.email,
        "role": user.role,
        "status": user.status,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "disabled_at": user.disabled_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(user_email(" Ana@Example.COM "), Ok("ana@example.com".into()));
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "ana@ex..com",
            "a@b@c.com",
        ] {
            assert_eq!(user_email(bad), Err(UserValidationError::Email), "{bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(user_name("  Ana  "), Ok("Ana".into()));
        assert_eq!(user_name(" "), Err(UserValidationError::Name));
        assert_eq!(user_name(&"x".repeat(201)), Err(UserValidationError::Name));
    }

    #[test]
    fn new_users_are_active() {
        let u = User::new("t", "Ana", "ana@example.com", Role::Agent, Utc::now()).unwrap();
        assert!(u.is_active());
        assert!(crate::ids::is_valid_id(&u.user_id));
        assert!(user_json(&u).get("key_ids").is_none());
    }
}
