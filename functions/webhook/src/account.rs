//! Account-level changes that steer broadcasts: `user_preferences` (a customer stopped or
//! resumed marketing from WhatsApp itself: their marketing consent follows, for every later
//! campaign) and `business_capability_update` (the portfolio's messaging limit, which paces
//! broadcasts). Both are also kept as events, like any other account change.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crm_shared::audit::AuditEntry;
use crm_shared::broadcast::pacing::capability_limit;
use crm_shared::contact::{MarketingConsent, set_consent};
use crm_shared::store::{CustomerIdentity, StoreError};

use crate::WebhookStore;

/// The consent source recorded for a change made in WhatsApp itself.
pub const USER_PREFERENCES_SOURCE: &str = "whatsapp_user_preferences";

/// Attempts at a version-checked consent write that keeps losing to concurrent edits.
const ATTEMPTS: usize = 3;

/// The marketing consent one `user_preferences[]` entry states (`None`: another category or
/// value).
pub fn preference(entry: &Value) -> Option<(String, MarketingConsent)> {
    if entry.get("category").and_then(Value::as_str) != Some("marketing_messages") {
        return None;
    }
    let consent = match entry
        .get("value")
        .and_then(Value::as_str)?
        .to_ascii_lowercase()
        .as_str()
    {
        "stop" => MarketingConsent::OptedOut,
        "resume" => MarketingConsent::OptedIn,
        _ => return None,
    };
    let wa_id = entry.get("wa_id").and_then(Value::as_str)?;
    if wa_id.is_empty() || !wa_id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((format!("+{wa_id}"), consent))
}

/// Applies an account change the broadcasts depend on; `true` when `field` is one of them.
pub(crate) async fn apply<S: WebhookStore>(
    store: &S,
    tenant_id: &str,
    field: &str,
    value: &Value,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    match field {
        "business_capability_update" => {
            if let Some(limit) = capability_limit(value) {
                store.set_messaging_limit(tenant_id, limit).await?;
                tracing::info!(?limit, "messaging limit updated");
            }
            Ok(true)
        }
        "user_preferences" => {
            for entry in value
                .get("user_preferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some((phone, consent)) = preference(entry) {
                    set_marketing(store, tenant_id, phone, consent, now).await?;
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

async fn set_marketing<S: WebhookStore>(
    store: &S,
    tenant_id: &str,
    phone: String,
    consent: MarketingConsent,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let identity = CustomerIdentity {
        phone: Some(phone),
        user_id: None,
    };
    let Some((contact_id, _)) = store.match_contact(tenant_id, &identity).await? else {
        return Ok(());
    };
    for _ in 0..ATTEMPTS {
        let Some(before) = store.get_contact(tenant_id, &contact_id).await? else {
            return Ok(());
        };
        if before.consent.marketing == consent {
            return Ok(());
        }
        let Ok((after, change)) = set_consent(&before, consent, USER_PREFERENCES_SOURCE, USER_PREFERENCES_SOURCE, now)
        else {
            return Ok(());
        };
        match store.record_consent(&before, &after, &change).await {
            Ok(()) => {
                let entry = AuditEntry::new(tenant_id, None, "contact.consent")
                    .target("contact", &contact_id)
                    .detail("marketing", change.marketing.as_str())
                    .detail("previous", change.previous.as_str())
                    .detail("source", USER_PREFERENCES_SOURCE);
                if let Err(e) = store.record_audit(&entry).await {
                    tracing::error!(error = %e, "could not audit a user_preferences consent change");
                }
                return Ok(());
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::VersionMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn preferences_are_read_as_metas_reference_shows_them() {
        let stop = json!({"wa_id": "447700900123", "detail": "User requested to stop marketing messages",
                          "category": "marketing_messages", "value": "stop", "timestamp": 1731705721});
        assert_eq!(
            preference(&stop),
            Some(("+447700900123".to_owned(), MarketingConsent::OptedOut))
        );
        let resume = json!({"wa_id": "447700900123", "category": "marketing_messages", "value": "resume"});
        assert_eq!(preference(&resume).map(|p| p.1), Some(MarketingConsent::OptedIn));
        assert_eq!(
            preference(&json!({"wa_id": "1", "category": "other", "value": "stop"})),
            None
        );
        assert_eq!(
            preference(&json!({"wa_id": "x1", "category": "marketing_messages", "value": "stop"})),
            None
        );
        assert_eq!(
            preference(&json!({"wa_id": "1", "category": "marketing_messages", "value": "maybe"})),
            None
        );
    }
}
