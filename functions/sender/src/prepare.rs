//! Preparation of one record: parse the job, claim the message under a lease, and re-check
//! everything that may have changed while it waited (tenant, token, contact, the template's
//! registry entry, sending rules, recipient, pair rate). A message that may not be sent is recorded as such here.

use aws_lambda_events::sqs::SqsMessage;
use chrono::Utc;
use serde_json::{Value, json};

use crm_shared::graph::MessageSender;
use crm_shared::jobs::{RetryScheduler, SendJob, receive_count, send_retry_delay_secs};
use crm_shared::message::{MessageError, MessageRecord, MessageStatus};
use crm_shared::secret::Secret;
use crm_shared::sending::{self, Category};
use crm_shared::store::StoreError;
use crm_shared::template;
use crm_shared::tenant::{Tenant, TenantStatus};

use crate::outcome::{Outcome, retry_or_dead};
use crate::{Deps, SenderStore};

/// A claimed message ready for the Graph call.
pub(crate) struct Ready {
    pub record_index: usize,
    pub message: MessageRecord,
    pub tenant: Tenant,
    pub token: Secret,
    /// The recipient fields of the Graph payload (`to` or `recipient`).
    pub to: Value,
}

/// Claims the message, re-checks everything that may have changed, and returns it ready to
/// send (`Ok(None)`: nothing to send).
pub(crate) async fn prepare<S: SenderStore, G: MessageSender, R: RetryScheduler>(
    deps: &Deps<S, G, R>,
    index: usize,
    record: &SqsMessage,
) -> Result<Option<Ready>, Outcome> {
    let attempt = receive_count(record);
    let Some(job) = record
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<SendJob>(b).ok())
    else {
        tracing::error!("send job body is not a SendJob");
        return Err(Outcome::DeadLetter);
    };
    let store_failure = |e: StoreError| {
        tracing::warn!(error = %e, "storage failure while preparing a send");
        retry_or_dead(deps.config.max_receives, attempt)
    };
    let now = Utc::now();
    let message = match deps
        .store
        .claim_for_send(&job.tenant_id, &job.message_id, now, deps.config.lease_ms)
        .await
        .map_err(store_failure)?
    {
        Some(m) => m,
        None => {
            // Not queued any more (sent, failed, erased), or another sender holds it.
            return match deps
                .store
                .get_message(&job.tenant_id, &job.message_id)
                .await
                .map_err(store_failure)?
            {
                Some(m) if m.status == MessageStatus::Queued => Err(Outcome::RetryAfter(5)),
                _ => Ok(None),
            };
        }
    };
    let fail = |status: MessageStatus, code: i64, title: &str, detail: &str| {
        let error = MessageError {
            code,
            title: Some(title.to_owned()),
            detail: Some(detail.to_owned()),
        };
        let (tenant_id, message_id) = (job.tenant_id.clone(), job.message_id.clone());
        async move {
            deps.store
                .finish_unsent(&tenant_id, &message_id, status, &error, Utc::now())
                .await
        }
    };
    let release = || deps.store.release_claim(&job.tenant_id, &job.message_id);

    let (tenant, token) = match deps.tenant(&job.tenant_id).await.map_err(store_failure)? {
        Some(t) if t.0.status == TenantStatus::Active => t,
        _ => {
            fail(
                MessageStatus::Failed,
                0,
                "tenant_disabled",
                "the tenant is disabled or has no access token",
            )
            .await
            .map_err(store_failure)?;
            return Ok(None);
        }
    };
    if tenant.token_invalid {
        // Sending for this tenant is paused until an operator replaces the token; the message
        // waits in the queue (and fails for good if that takes longer than its retries).
        let _ = release().await;
        if attempt >= deps.config.max_receives {
            fail(
                MessageStatus::Failed,
                190,
                "token_invalid",
                "the tenant's access token was rejected by Meta",
            )
            .await
            .map_err(store_failure)?;
            return Err(Outcome::DeadLetter);
        }
        return Err(Outcome::RetryAfter(send_retry_delay_secs(attempt).max(60)));
    }
    let Some(contact) = deps
        .store
        .get_contact(&job.tenant_id, &message.contact_id)
        .await
        .map_err(store_failure)?
    else {
        fail(
            MessageStatus::Rejected,
            0,
            "contact_erased",
            "the contact no longer exists",
        )
        .await
        .map_err(store_failure)?;
        return Ok(None);
    };
    let mut category = message
        .category
        .unwrap_or_else(|| Category::default_for(&message.message_type));
    // A template is checked against the registry again: Meta may have paused, disabled or
    // deleted it, or recategorised it (a utility template now marketing needs consent), while
    // the message waited. One registry request, template sends only.
    if message.message_type == "template" {
        let name = message.content["name"].as_str().unwrap_or_default();
        let entries = deps
            .store
            .template_languages(&job.tenant_id, name)
            .await
            .map_err(store_failure)?;
        let language = message
            .language
            .as_deref()
            .or(message.content.pointer("/language/code").and_then(|v| v.as_str()));
        let record = entries.iter().find(|e| Some(e.language.as_str()) == language);
        if let Err(e) = template::check_status(record) {
            fail(
                MessageStatus::Rejected,
                i64::from(e.code.code()),
                e.code.title(),
                &e.message,
            )
            .await
            .map_err(store_failure)?;
            return Ok(None);
        }
        category = record.expect("approved").category.send_category();
    }
    if let Err(refusal) = sending::check_rules(&contact, &message.message_type, category, now) {
        fail(MessageStatus::Rejected, 0, refusal.code(), refusal.message())
            .await
            .map_err(store_failure)?;
        return Ok(None);
    }
    let to = match (&contact.phone, &contact.user_id) {
        (Some(phone), _) => json!({"to": phone.trim_start_matches('+')}),
        (None, Some(user_id)) => json!({"recipient": user_id}),
        (None, None) => {
            fail(
                MessageStatus::Rejected,
                0,
                "no_recipient",
                "the contact has no phone number or user id",
            )
            .await
            .map_err(store_failure)?;
            return Ok(None);
        }
    };
    // Meta's pair rate: one message per recipient every few seconds.
    if !deps
        .store
        .claim_recipient(&job.tenant_id, &contact.contact_id, now, sending::PAIR_INTERVAL_MS)
        .await
        .map_err(store_failure)?
    {
        let _ = release().await;
        return Err(Outcome::RetryAfter((sending::PAIR_INTERVAL_MS / 1000) as i32));
    }
    Ok(Some(Ready {
        record_index: index,
        message,
        tenant,
        token,
        to,
    }))
}
