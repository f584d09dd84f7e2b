//! The audit log: who did what, when, to which resource. Entries name actors by API key id (and
//! the key's user id) and
//! targets by id; they never hold message bodies, phone numbers or other contact data.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Time-ordered id (ULID).
    pub id: String,
    pub tenant_id: String,
    pub at: DateTime<Utc>,
    /// The API key that acted; `None` for the system (webhooks, schedules, operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_key_id: Option<String>,
    /// The user the acting key belongs to (`None` for integration keys and the system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_user_id: Option<String>,
    /// Dotted verb, e.g. `contact.create`, `contact.consent`, `api_key.used`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// API Gateway request id, to correlate with logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Non-personal facts about the action (changed field names, counts, roles).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl AuditEntry {
    pub fn new(tenant_id: &str, actor_key_id: Option<&str>, action: &str) -> Self {
        AuditEntry {
            id: crate::ids::new_id(),
            tenant_id: tenant_id.to_owned(),
            at: Utc::now(),
            actor_key_id: actor_key_id.map(str::to_owned),
            actor_user_id: None,
            action: action.to_owned(),
            target_type: None,
            target_id: None,
            request_id: None,
            details: Default::default(),
        }
    }

    /// Names the user on whose behalf the key acted.
    pub fn by_user(mut self, user_id: Option<&str>) -> Self {
        self.actor_user_id = user_id.map(str::to_owned);
        self
    }

    pub fn target(mut self, kind: &str, id: &str) -> Self {
        self.target_type = Some(kind.to_owned());
        self.target_id = Some(id.to_owned());
        self
    }

    pub fn request(mut self, request_id: Option<&str>) -> Self {
        self.request_id = request_id.map(str::to_owned);
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}
