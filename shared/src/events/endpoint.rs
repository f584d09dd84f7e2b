//! A tenant's webhook endpoint and the record of each delivery attempt to it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::EventType;
use crate::secret::Secret;

/// Most endpoints one tenant may have (every event fans out to each of them).
pub const MAX_ENDPOINTS_PER_TENANT: usize = 20;

/// How long a rotated-out secret still signs deliveries (both signatures are sent).
pub const ROTATION_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Days a delivery attempt is listed (DynamoDB TTL).
pub const DELIVERY_LOG_DAYS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub endpoint_id: String,
    pub tenant_id: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The types delivered; empty: every type.
    #[serde(default)]
    pub event_types: Vec<EventType>,
    pub enabled: bool,
    /// Inbound message bodies are fetched into `message.received` deliveries (opt-in, audited).
    #[serde(default)]
    pub include_bodies: bool,
    /// Why the platform disabled the endpoint (`gone`: it answered `410`; `failing`: five days
    /// without a successful delivery). Cleared when the tenant enables it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed (cleared by a success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic concurrency, as on contacts.
    pub version: u64,
}

impl WebhookEndpoint {
    /// Whether events of `event_type` go to this endpoint.
    pub fn wants(&self, event_type: EventType) -> bool {
        self.enabled && (self.event_types.is_empty() || self.event_types.contains(&event_type))
    }
}

/// The signing secrets of an endpoint: the current one, and the previous one until
/// `previous_until` (24 h after a rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSecrets {
    pub current: Secret,
    pub previous: Option<(Secret, DateTime<Utc>)>,
}

impl EndpointSecrets {
    /// The secrets that sign a delivery made at `now` (current first).
    pub fn signing(&self, now: DateTime<Utc>) -> Vec<&Secret> {
        let mut secrets = vec![&self.current];
        if let Some((previous, until)) = &self.previous
            && now < *until
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// One attempt to deliver one event to one endpoint (no bodies, no headers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// Time-ordered id of the attempt.
    pub attempt_id: String,
    pub tenant_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// 1 for the first attempt of a delivery.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub success: bool,
    /// What went wrong, in words without personal data (`timeout`, `connect`, `status 500`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the next attempt is due (none after a success or the last attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Why an endpoint's settings are refused (each a `400` with its code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0}")]
    InvalidBody(String),
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error("description is longer than 200 characters")]
    DescriptionTooLong,
}

impl EndpointError {
    pub fn code(&self) -> &'static str {
        match self {
            EndpointError::InvalidBody(_) => "invalid_body",
            EndpointError::UnknownEventType(_) => "invalid_event_type",
            EndpointError::DescriptionTooLong => "invalid_description",
        }
    }
}

const MAX_DESCRIPTION: usize = 200;

/// The event types of a filter, validated (`endpoint.test` is not subscribable: it is sent only
/// on request); duplicates removed, sorted.
pub fn parse_event_types(names: &[String]) -> Result<Vec<EventType>, EndpointError> {
    let mut types = names
        .iter()
        .map(|n| {
            EventType::parse(n)
                .filter(|t| *t != EventType::EndpointTest)
                .ok_or_else(|| EndpointError::UnknownEventType(n.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    types.sort();
    types.dedup();
    Ok(types)
}

fn description(raw: Option<String>) -> Result<Option<String>, EndpointError> {
    match raw {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(EndpointError::DescriptionTooLong),
        Some(d) if d.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// `POST /v1/webhook-endpoints` input (the URL is checked separately: it needs resolution).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub include_bodies: bool,
}

fn yes() -> bool {
    true
}

impl NewEndpoint {
    pub fn into_endpoint(self, tenant_id: &str, now: DateTime<Utc>) -> Result<WebhookEndpoint, EndpointError> {
        Ok(WebhookEndpoint {
            endpoint_id: crate::ids::new_id(),
            tenant_id: tenant_id.to_owned(),
            url: self.url,
            description: description(self.description)?,
            event_types: parse_event_types(&self.event_types)?,
            enabled: self.enabled,
            include_bodies: self.include_bodies,
            disabled_reason: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }
}

/// `PATCH /v1/webhook-endpoints/{id}` input (JSON merge patch: absent keeps, `null` clears the
/// description).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub include_bodies: Option<bool>,
}

/// A present field, `null` included (`Some(None)`), apart from an absent one (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl EndpointPatch {
    /// The endpoint after the patch, its version moved on. Enabling an endpoint clears why it was
    /// disabled and its failure state: deliveries start afresh.
    pub fn apply(self, before: &WebhookEndpoint, now: DateTime<Utc>) -> Result<WebhookEndpoint, EndpointError> {
        let mut after = before.clone();
        if let Some(url) = self.url {
            after.url = url;
        }
        if let Some(d) = self.description {
            after.description = description(d)?;
        }
        if let Some(types) = self.event_types {
            after.event_types = parse_event_types(&types)?;
        }
        if let Some(include) = self.include_bodies {
            after.include_bodies = include;
        }
        if let Some(enabled) = self.enabled {
            if enabled && !before.enabled {
                after.disabled_reason = None;
                after.failing_since = None;
            }
            after.enabled = enabled;
        }
        after.updated_at = now;
        after.version = before.version + 1;
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_endpoints_validate_types_and_descriptions() {
        let now = Utc::now();
        let input: NewEndpoint = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/h", "event_types": ["message.received", "contact.created", "message.received"]
        }))
        .unwrap();
        let e = input.into_endpoint("t1", now).unwrap();
        assert!(e.enabled && !e.include_bodies && e.version == 1);
        assert_eq!(e.event_types, [EventType::MessageReceived, EventType::ContactCreated]);
        assert!(e.wants(EventType::ContactCreated) && !e.wants(EventType::ContactErased));
        let bad: NewEndpoint =
            serde_json::from_value(serde_json::json!({"url": "https://x", "event_types": ["nope"]})).unwrap();
        assert_eq!(bad.into_endpoint("t1", now).unwrap_err().code(), "invalid_event_type");
        let test: NewEndpoint =
            serde_json::from_value(serde_json::json!({"url": "https://x", "event_types": ["endpoint.test"]})).unwrap();
        assert!(test.into_endpoint("t1", now).is_err());
        let long: NewEndpoint =
            serde_json::from_value(serde_json::json!({"url": "https://x", "description": "d".repeat(201)})).unwrap();
        assert_eq!(
            long.into_endpoint("t1", now).unwrap_err(),
            EndpointError::DescriptionTooLong
        );
        assert!(serde_json::from_value::<NewEndpoint>(serde_json::json!({"url": "https://x", "secret": "s"})).is_err());
    }

    #[test]
    fn patches_merge_and_re_enabling_clears_the_failure_state() {
        let now = Utc::now();
        let mut e: WebhookEndpoint =
            serde_json::from_value::<NewEndpoint>(serde_json::json!({"url": "https://x", "description": "d"}))
                .unwrap()
                .into_endpoint("t1", now)
                .unwrap();
        e.enabled = false;
        e.disabled_reason = Some("gone".into());
        e.failing_since = Some(now);
        let patch: EndpointPatch =
            serde_json::from_value(serde_json::json!({"enabled": true, "description": null})).unwrap();
        let after = patch.apply(&e, now).unwrap();
        assert!(after.enabled && after.disabled_reason.is_none() && after.failing_since.is_none());
        assert_eq!(after.description, None);
        assert_eq!(after.version, 2);
        let keep: EndpointPatch = serde_json::from_value(serde_json::json!({"include_bodies": true})).unwrap();
        let after = keep.apply(&e, now).unwrap();
        assert_eq!(after.description.as_deref(), Some("d"));
        assert!(after.include_bodies && !after.enabled);
    }

    #[test]
    fn the_previous_secret_signs_for_its_overlap_only() {
        let now = Utc::now();
        let secrets = EndpointSecrets {
            current: Secret::new("whsec_b"),
            previous: Some((Secret::new("whsec_a"), now + ROTATION_OVERLAP)),
        };
        assert_eq!(secrets.signing(now).len(), 2);
        assert_eq!(secrets.signing(now + ROTATION_OVERLAP).len(), 1);
        assert_eq!(secrets.signing(now)[0].expose(), "whsec_b");
    }
}
