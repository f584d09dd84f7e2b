//! Account-level changes that steer broadcasts: `user_preferences` (a customer stopped or
//! resumed marketing from WhatsApp itself: their marketing consent follows, for every later
//! campaign) and `business_capability_update` (the portfolio's messaging limit, which paces
//! broadcasts) and `phone_number_quality_update` (`FLAGGED`: the number's quality is low, red;
//! stored with one conditional put, and the engine pauses the broadcasts sending from that
//! number with `number_quality_red` until a caller resumes them — the webhook may not query).
//! All are also kept as events, like any other account change.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crm_shared::audit::AuditEntry;
use crm_shared::broadcast::NumberQuality;
use crm_shared::broadcast::control::display_key;
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

/// What a `phone_number_quality_update` says about the number's quality: `(display, red)`.
/// Meta sends `event` `FLAGGED` when the quality turns low (red) and `UNFLAGGED` when it
/// recovers; `UPGRADE`, `DOWNGRADE`, `ONBOARDING` are limit changes and say nothing about it
/// (`None`), unless the payload states the rating itself (`quality_rating`: `RED`, …).
pub fn quality_change(value: &Value) -> Option<(&str, bool)> {
    let text = |k: &str| value.get(k).and_then(Value::as_str);
    let display = text("display_phone_number").filter(|d| d.bytes().any(|b| b.is_ascii_digit()))?;
    let rating = ["quality_rating", "current_quality"].iter().find_map(|k| text(k));
    let red = match text("event").map(str::to_ascii_uppercase).as_deref() {
        Some("FLAGGED") => true,
        Some("UNFLAGGED") => false,
        _ => match rating.map(str::to_ascii_uppercase).as_deref() {
            Some("RED") => true,
            Some("GREEN" | "YELLOW") => false,
            _ => return None,
        },
    };
    Some((display, red))
}

/// Applies an account change the broadcasts depend on; `true` when `field` is one of them.
pub(crate) async fn apply<S: WebhookStore>(
    store: &S,
    tenant_id: &str,
    waba_id: &str,
    field: &str,
    value: &Value,
    at: DateTime<Utc>,
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
        "phone_number_quality_update" => {
            if let Some((display, red)) = quality_change(value) {
                let quality = NumberQuality {
                    waba_id: waba_id.to_owned(),
                    display_phone_number: display_key(display),
                    red,
                    changed_at: at,
                };
                // A stale (reordered) delivery is kept out by the store's condition.
                let stored = store.put_number_quality(tenant_id, &quality).await?;
                tracing::info!(red, stored, "number quality updated");
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

    use crm_shared::config::WebhookSecrets;
    use crm_shared::secret::Secret;
    use crm_shared::store::BroadcastStore;
    use crm_shared::testing::{MemQueue, MemStore, fixtures};
    use crm_shared::whatsapp::sign;

    /// Delivers `changes` of the tenant's WABA through the handler, signed.
    async fn deliver(store: &MemStore, waba_id: &str, changes: Value) {
        let secrets = WebhookSecrets {
            app_secret: Secret::new("app-secret"),
            verify_token: Secret::new("verify"),
        };
        let queue = MemQueue::new();
        let deps = crate::Deps::new(store.clone(), queue.clone(), queue, secrets);
        let body =
            json!({"object": "whatsapp_business_account", "entry": [{"id": waba_id, "changes": changes}]}).to_string();
        let req = lambda_http::http::Request::builder()
            .method("POST")
            .uri("https://hooks.test/webhooks/whatsapp")
            .header("x-hub-signature-256", sign(b"app-secret", body.as_bytes()))
            .body(lambda_http::Body::Text(body))
            .unwrap();
        let response = crate::handle(&deps, req).await.unwrap();
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn user_preferences_set_consent_and_capability_updates_set_the_messaging_limit() {
        let store = MemStore::new();
        let tenant = fixtures::tenant("106540352242922");
        store.add_tenant(tenant.clone(), Secret::new("graph-token"));
        let mut contact = fixtures::contact(&tenant.tenant_id, "+447700900123", Utc::now());
        contact.consent.marketing = MarketingConsent::OptedIn;
        store.add_contact(contact.clone());
        let prefs = |value: &str| {
            json!([{"field": "user_preferences", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": tenant.phone_number_id},
                "contacts": [{"profile": {"name": "Pat"}, "wa_id": "447700900123"}],
                "user_preferences": [{"wa_id": "447700900123", "detail": "d", "category": "marketing_messages",
                                      "value": value, "timestamp": 1731705721}]}}])
        };
        deliver(&store, &tenant.waba_id, prefs("stop")).await;
        let after = store.contact(&tenant.tenant_id, &contact.contact_id).unwrap();
        assert_eq!(after.consent.marketing, MarketingConsent::OptedOut);
        assert_eq!(after.consent.source.as_deref(), Some(USER_PREFERENCES_SOURCE));
        deliver(&store, &tenant.waba_id, prefs("resume")).await;
        let after = store.contact(&tenant.tenant_id, &contact.contact_id).unwrap();
        assert_eq!(after.consent.marketing, MarketingConsent::OptedIn);

        let capability = |n: i64| {
            json!([{"field": "business_capability_update", "value": {
                "max_daily_conversations_per_business": n, "max_phone_numbers_per_business": 2}}])
        };
        deliver(&store, &tenant.waba_id, capability(10_000)).await;
        let settings = store.broadcast_settings(&tenant.tenant_id).await.unwrap();
        assert_eq!(settings.messaging_limit, Some(10_000));
        deliver(&store, &tenant.waba_id, capability(-1)).await;
        let settings = store.broadcast_settings(&tenant.tenant_id).await.unwrap();
        assert_eq!(settings.messaging_limit, None);
    }

    /// Delivers `changes` with Meta's entry time `time`.
    async fn deliver_at(store: &MemStore, waba_id: &str, time: i64, changes: Value) {
        let secrets = WebhookSecrets {
            app_secret: Secret::new("app-secret"),
            verify_token: Secret::new("verify"),
        };
        let queue = MemQueue::new();
        let deps = crate::Deps::new(store.clone(), queue.clone(), queue, secrets);
        let body = json!({"object": "whatsapp_business_account",
                          "entry": [{"id": waba_id, "time": time, "changes": changes}]})
        .to_string();
        let req = lambda_http::http::Request::builder()
            .method("POST")
            .uri("https://hooks.test/webhooks/whatsapp")
            .header("x-hub-signature-256", sign(b"app-secret", body.as_bytes()))
            .body(lambda_http::Body::Text(body))
            .unwrap();
        assert_eq!(crate::handle(&deps, req).await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn quality_updates_are_stored_per_number_in_metas_order_and_only_for_their_tenant() {
        let store = MemStore::new();
        let tenant = fixtures::tenant("106540352242922");
        store.add_tenant(tenant.clone(), Secret::new("graph-token"));
        let other = fixtures::tenant("306540352242933");
        store.add_tenant(other.clone(), Secret::new("other-token"));
        let quality = |event: &str| {
            json!([{"field": "phone_number_quality_update", "value": {
                "display_phone_number": "15550783881", "event": event, "current_limit": "TIER_1K",
                "max_daily_conversations_per_business": 1000}}])
        };
        // A limit change says nothing about quality.
        deliver_at(&store, &tenant.waba_id, 1_700_000_000, quality("UPGRADE")).await;
        assert!(store.number_qualities(&tenant.tenant_id).await.unwrap().is_empty());

        deliver_at(&store, &tenant.waba_id, 1_700_000_100, quality("FLAGGED")).await;
        let stored = store.number_qualities(&tenant.tenant_id).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert!(stored[0].red);
        assert_eq!(stored[0].display_phone_number, "15550783881");
        assert_eq!(stored[0].waba_id, tenant.waba_id);
        assert!(store.number_qualities(&other.tenant_id).await.unwrap().is_empty());

        // An older UNFLAGGED arriving late does not undo the newer flag; a newer one does.
        deliver_at(&store, &tenant.waba_id, 1_700_000_050, quality("UNFLAGGED")).await;
        assert!(store.number_qualities(&tenant.tenant_id).await.unwrap()[0].red);
        deliver_at(&store, &tenant.waba_id, 1_700_000_200, quality("UNFLAGGED")).await;
        assert!(!store.number_qualities(&tenant.tenant_id).await.unwrap()[0].red);
    }

    #[test]
    fn quality_changes_read_the_flagged_event_or_a_stated_rating() {
        let v =
            |event: &str| json!({"display_phone_number": "15550783881", "event": event, "current_limit": "TIER_1K"});
        assert_eq!(quality_change(&v("FLAGGED")), Some(("15550783881", true)));
        assert_eq!(quality_change(&v("UNFLAGGED")), Some(("15550783881", false)));
        for event in ["UPGRADE", "DOWNGRADE", "ONBOARDING"] {
            assert_eq!(quality_change(&v(event)), None, "{event}");
        }
        let rated = json!({"display_phone_number": "15550783881", "event": "DOWNGRADE", "quality_rating": "RED"});
        assert_eq!(quality_change(&rated), Some(("15550783881", true)));
        assert_eq!(
            quality_change(&json!({"event": "FLAGGED"})),
            None,
            "no number, nothing to flag"
        );
    }

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
