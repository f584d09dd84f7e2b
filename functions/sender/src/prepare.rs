//! Preparation of one record: parse the job, claim the message under a lease, and re-check
//! everything that may have changed while it waited (tenant, token, contact, the template's
//! registry entry, sending rules, recipient, its queue order and pair rate). A message that may
//! not be sent is recorded as such here; one that must wait goes back to the queue as a new,
//! delayed job.

use aws_lambda_events::sqs::SqsMessage;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crm_shared::graph::MessageSender;
use crm_shared::jobs::{RetryScheduler, SendJob, SendJobQueue};
use crm_shared::message::{MessageError, MessageRecord, MessageStatus};
use crm_shared::privacy::{id_floor, id_time};
use crm_shared::secret::Secret;
use crm_shared::sending::{self, Category, SEND_DEADLINE_MS};
use crm_shared::store::{Claim, Recipient, StoreError};
use crm_shared::template;
use crm_shared::tenant::{Tenant, TenantStatus};

use crate::outcome::{Outcome, retry_later, wait};
use crate::{Deps, SenderStore};

/// A claimed message ready for the Graph call.
pub(crate) struct Ready {
    pub record_index: usize,
    pub job: SendJob,
    pub message: MessageRecord,
    /// The end of our lease (epoch ms): what `mark_unknown` names.
    pub lease_until_ms: i64,
    pub tenant: Tenant,
    pub token: Secret,
    /// The recipient fields of the Graph payload (`to` or `recipient`).
    pub to: Value,
}

/// The job a record carries.
pub(crate) fn job_of(record: &SqsMessage) -> Option<SendJob> {
    record.body.as_deref().and_then(|b| serde_json::from_str(b).ok())
}

/// An error recorded on a message that did not go out.
pub(crate) fn unsent_error(code: i64, title: &str, detail: &str) -> MessageError {
    MessageError {
        code,
        title: Some(title.to_owned()),
        detail: Some(detail.to_owned()),
    }
}

/// Whether the message is older than the send deadline (ids carry their creation time).
fn past_deadline(message_id: &str, now: DateTime<Utc>) -> bool {
    id_time(message_id).is_some_and(|created| (now - created).num_milliseconds() > SEND_DEADLINE_MS)
}

impl Ready {
    /// The number the message goes out from (its own, else the tenant's first): the Graph
    /// call's path and the send schedule it books slots on.
    pub fn sending_number(&self) -> &str {
        self.message
            .phone_number_id
            .as_deref()
            .unwrap_or(&self.tenant.phone_number_id)
    }
}

/// Claims the message, re-checks everything that may have changed, and returns it ready to
/// send (`Ok(None)`: nothing to send).
pub(crate) async fn prepare<S: SenderStore, G: MessageSender, R: RetryScheduler + SendJobQueue>(
    deps: &Deps<S, G, R>,
    index: usize,
    record: &SqsMessage,
) -> Result<Option<Ready>, Outcome> {
    let Some(job) = job_of(record) else {
        tracing::error!("send job body is not a SendJob");
        return Err(Outcome::DeadLetter);
    };
    let store_failure = |e: StoreError| {
        tracing::warn!(error = %e, "storage failure while preparing a send");
        retry_later(job.failures)
    };
    let now = Utc::now();
    let message = match deps
        .store
        .claim_for_send(&job.tenant_id, &job.message_id, now, deps.config.lease_ms)
        .await
        .map_err(store_failure)?
    {
        Claim::Claimed(m) => *m,
        Claim::Finished => return Ok(None),
        // Another sender has it: look again when its lease ends.
        Claim::Held { until_ms } => {
            let secs = ((until_ms - now.timestamp_millis()).max(0) + 999) / 1000;
            return Err(wait(secs, job.failures));
        }
        Claim::Abandoned {
            message,
            lease_until_ms,
        } => {
            abandoned(deps, &message, lease_until_ms).await.map_err(store_failure)?;
            return Ok(None);
        }
    };
    let lease_until_ms = now.timestamp_millis() + deps.config.lease_ms;
    let fail = |status: MessageStatus, error: MessageError| {
        let message = &message;
        async move {
            deps.store
                .finish_unsent(&message.tenant_id, &message.message_id, status, &error, Utc::now())
                .await?;
            deps.store
                .leave_recipient(&message.tenant_id, &message.contact_id, &message.message_id)
                .await
        }
    };
    let release = || deps.store.release_claim(&job.tenant_id, &job.message_id);
    let late = past_deadline(&message.message_id, now);

    let (tenant, token) = match deps.tenant(&job.tenant_id).await.map_err(store_failure)? {
        Some(t) if t.0.status == TenantStatus::Active => t,
        _ => {
            let error = unsent_error(0, "tenant_disabled", "the tenant is disabled or has no access token");
            fail(MessageStatus::Failed, error).await.map_err(store_failure)?;
            return Ok(None);
        }
    };
    if tenant.token_invalid {
        // Sending for this tenant is paused until an operator replaces the token; the message
        // waits (without using up receives) and fails for good at the send deadline.
        if late {
            let error = unsent_error(190, "token_invalid", "the tenant's access token was rejected by Meta");
            fail(MessageStatus::Failed, error).await.map_err(store_failure)?;
            return Ok(None);
        }
        let _ = release().await;
        return Err(wait(60, job.failures));
    }
    if late {
        let error = unsent_error(
            0,
            "not_sent_in_time",
            "the message could not be sent within an hour of being accepted",
        );
        fail(MessageStatus::Failed, error).await.map_err(store_failure)?;
        return Ok(None);
    }
    let Some(Recipient { contact, queue }) = deps
        .store
        .recipient(&job.tenant_id, &message.contact_id)
        .await
        .map_err(store_failure)?
    else {
        let error = unsent_error(0, "contact_erased", "the contact no longer exists");
        fail(MessageStatus::Rejected, error).await.map_err(store_failure)?;
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
            let error = unsent_error(i64::from(e.code.code()), e.code.title(), &e.message);
            fail(MessageStatus::Rejected, error).await.map_err(store_failure)?;
            return Ok(None);
        }
        category = record.expect("approved").category.send_category();
    }
    if let Err(refusal) = sending::check_rules(&contact, &message.message_type, category, now) {
        let error = unsent_error(0, refusal.code(), refusal.message());
        fail(MessageStatus::Rejected, error).await.map_err(store_failure)?;
        return Ok(None);
    }
    let to = match (&contact.phone, &contact.user_id) {
        (Some(phone), _) => json!({"to": phone.trim_start_matches('+')}),
        (None, Some(user_id)) => json!({"recipient": user_id}),
        (None, None) => {
            let error = unsent_error(0, "no_recipient", "the contact has no phone number or user id");
            fail(MessageStatus::Rejected, error).await.map_err(store_failure)?;
            return Ok(None);
        }
    };
    // An older message to the same recipient goes first.
    if waits_in_line(deps, &message, &queue, now)
        .await
        .map_err(store_failure)?
    {
        let _ = release().await;
        return Err(wait(2, job.failures));
    }
    // Meta's pair rate: one message per recipient every few seconds.
    if !deps
        .store
        .claim_recipient(
            &job.tenant_id,
            &contact.contact_id,
            &message.message_id,
            now,
            sending::PAIR_INTERVAL_MS,
        )
        .await
        .map_err(store_failure)?
    {
        let _ = release().await;
        return Err(wait(sending::PAIR_INTERVAL_MS / 1000, job.failures));
    }
    Ok(Some(Ready {
        record_index: index,
        job,
        message,
        lease_until_ms,
        tenant,
        token,
        to,
    }))
}

/// Whether an older message in the recipient's queue is still waiting to be sent. An entry whose
/// message finished or is gone (a best-effort queue update that did not happen) is cleared out
/// of the queue on the way.
async fn waits_in_line<S: SenderStore, G, R>(
    deps: &Deps<S, G, R>,
    message: &MessageRecord,
    queue: &[String],
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let floor = id_floor(now - chrono::Duration::milliseconds(SEND_DEADLINE_MS));
    let (tenant_id, contact_id) = (&message.tenant_id, &message.contact_id);
    let mut queue: Vec<&str> = queue.iter().map(String::as_str).collect();
    while let Some(older) = sending::first_in_line(queue.iter().copied(), &message.message_id, &floor) {
        match deps.store.get_message(tenant_id, older).await? {
            Some(m) if m.status == MessageStatus::Queued => return Ok(true),
            _ => deps.store.leave_recipient(tenant_id, contact_id, older).await?,
        }
        queue.retain(|id| *id != older);
    }
    Ok(false)
}

/// A lease that expired without being given back: its sender may have reached Meta. Never
/// resent: the message becomes `unknown` until a status webhook names it.
async fn abandoned<S: SenderStore, G, R>(
    deps: &Deps<S, G, R>,
    message: &MessageRecord,
    lease_until_ms: i64,
) -> Result<(), StoreError> {
    tracing::warn!(message_id = %message.message_id, "send lease abandoned mid-send; the message is not resent");
    let error = unsent_error(
        0,
        "send_outcome_unknown",
        "the sender stopped while sending; WhatsApp may have the message, and its status will show if so",
    );
    deps.store
        .mark_unknown(
            &message.tenant_id,
            &message.message_id,
            lease_until_ms,
            &error,
            Utc::now(),
        )
        .await?;
    deps.store
        .leave_recipient(&message.tenant_id, &message.contact_id, &message.message_id)
        .await
}
