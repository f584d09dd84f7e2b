//! Turns a parsed delivery into stored facts.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crm_shared::audit::AuditEntry;
use crm_shared::contact::{self, ConsentChange, MarketingConsent};
use crm_shared::first_contact::find_or_create_contact;
use crm_shared::jobs::{MediaJob, MediaJobQueue};
use crm_shared::message::{self, Direction, MediaRef, MediaStatus, MessageError, MessageRecord, MessageStatus};
use crm_shared::store::{
    CustomerIdentity, IdentityKey, InboundOutcome, InboundWrite, StatusOutcome, StatusWrite, StoreError,
};
use crm_shared::whatsapp::{
    ConsentKeyword, GraphError, InboundMessage, MessagesValue, StatusUpdate, WaContact, WebhookPayload,
    consent_keyword, receipt_status,
};

use crate::{Deps, WebhookStore};

/// What one delivery amounted to (counts only: safe to log).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub messages_stored: usize,
    pub messages_duplicate: usize,
    pub messages_malformed: usize,
    pub statuses_applied: usize,
    pub statuses_ignored: usize,
    pub statuses_parked: usize,
    pub events_recorded: usize,
    pub unknown_numbers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] crm_shared::jobs::EnqueueError),
}

pub async fn process<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Deps<S, Q>,
    payload: &WebhookPayload,
) -> Result<Summary, ProcessError> {
    let now = Utc::now();
    let mut summary = Summary::default();
    for entry in &payload.entry {
        for change in &entry.changes {
            let phone_number_id = change
                .value
                .get("metadata")
                .and_then(|m| m.get("phone_number_id"))
                .and_then(Value::as_str);
            let tenant = deps.tenant_for(phone_number_id, &entry.id).await?;
            let Some(tenant_id) = tenant else {
                // Meta ids are not personal data; they tell the operator which number is unrouted.
                tracing::warn!(phone_number_id, waba_id = %entry.id, field = %change.field, "delivery for an unknown phone number id acknowledged");
                summary.unknown_numbers += 1;
                continue;
            };
            match change.messages_value() {
                Some(Ok(value)) => process_messages(deps, &tenant_id, &value, now, &mut summary).await?,
                Some(Err(err)) => {
                    tracing::warn!(reason = %err, "messages change could not be parsed; kept raw");
                    deps.store
                        .record_event(&tenant_id, "messages_unparsed", &change.value, now)
                        .await?;
                    summary.events_recorded += 1;
                }
                None => {
                    deps.store
                        .record_event(&tenant_id, &change.field, &change.value, now)
                        .await?;
                    summary.events_recorded += 1;
                }
            }
        }
    }
    Ok(summary)
}

async fn process_messages<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Deps<S, Q>,
    tenant_id: &str,
    value: &MessagesValue,
    now: DateTime<Utc>,
    summary: &mut Summary,
) -> Result<(), ProcessError> {
    for (raw, parsed) in value.messages.iter().zip(value.inbound_messages()) {
        match parsed {
            Ok(message) => {
                let outcome = store_message(deps, tenant_id, &value.contacts, &message, raw, now).await?;
                match outcome {
                    InboundOutcome::Stored => summary.messages_stored += 1,
                    InboundOutcome::Duplicate(_) => summary.messages_duplicate += 1,
                }
            }
            Err(err) => {
                tracing::warn!(reason = %err, "inbound message could not be parsed; kept raw");
                deps.store.record_event(tenant_id, "message_unparsed", raw, now).await?;
                summary.messages_malformed += 1;
            }
        }
    }
    for (raw, parsed) in value.statuses.iter().zip(value.status_updates()) {
        match parsed {
            Ok(status) => match store_status(deps, tenant_id, &status, raw, now).await? {
                Some(StatusOutcome::Applied) => summary.statuses_applied += 1,
                Some(StatusOutcome::Parked) => summary.statuses_parked += 1,
                Some(StatusOutcome::LateFailure) => {
                    tracing::warn!("failed status for a message already delivered; kept as an event");
                    deps.store
                        .record_event(tenant_id, "status_late_failure", raw, now)
                        .await?;
                    summary.statuses_ignored += 1;
                }
                Some(StatusOutcome::HistoryOnly | StatusOutcome::Duplicate) | None => summary.statuses_ignored += 1,
            },
            Err(err) => {
                tracing::warn!(reason = %err, "status could not be parsed; kept raw");
                deps.store.record_event(tenant_id, "status_unparsed", raw, now).await?;
                summary.events_recorded += 1;
            }
        }
    }
    for error in &value.errors {
        tracing::warn!(code = error.code, "Meta reported an error in a messages change");
        let raw = serde_json::to_value(error).unwrap_or(Value::Null);
        deps.store.record_event(tenant_id, "messages_error", &raw, now).await?;
        summary.events_recorded += 1;
    }
    Ok(())
}

/// The customer's identity and WhatsApp profile name for a message, from `from`,
/// `from_user_id` and the matching `contacts[]` entry.
pub(crate) fn identity_of(
    message: &InboundMessage,
    contacts: &[WaContact],
    phone_of_wa_id: impl Fn(&str) -> Option<String>,
) -> (CustomerIdentity, Option<String>) {
    let matching = contacts
        .iter()
        .find(|c| {
            (message.from.is_some() && c.wa_id == message.from)
                || (message.from_user_id.is_some() && c.user_id == message.from_user_id)
        })
        .or(if contacts.len() == 1 { contacts.first() } else { None });
    let wa_id = message.from.clone().or_else(|| matching.and_then(|c| c.wa_id.clone()));
    let user_id = message
        .from_user_id
        .clone()
        .or_else(|| matching.and_then(|c| c.user_id.clone()))
        .and_then(|u| contact::normalize_user_id(&u).ok());
    let phone = wa_id.as_deref().and_then(phone_of_wa_id);
    let name = matching
        .and_then(|c| c.profile.as_ref())
        .and_then(|p| p.name.as_deref())
        .and_then(|n| contact::normalize_name(n).ok().flatten());
    (CustomerIdentity { phone, user_id }, name)
}

/// The sender's contact and the identity it was matched by: this instance's memory of it when
/// `use_known` (the write checks it still holds), else a consistent lookup, else a new contact.
async fn resolve_contact<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Deps<S, Q>,
    tenant_id: &str,
    identity: &CustomerIdentity,
    profile_name: Option<&String>,
    now: DateTime<Utc>,
    use_known: bool,
) -> Result<(String, IdentityKey), ProcessError> {
    if use_known && let Some(known) = deps.known_contact(tenant_id, identity) {
        return Ok(known);
    }
    let found = find_or_create_contact(&deps.store, tenant_id, identity, profile_name.map(String::as_str), now).await?;
    let matched_by = found.matched_by().clone();
    deps.remember_contact(tenant_id, matched_by.clone(), found.contact_id());
    Ok((found.contact_id().to_owned(), matched_by))
}

async fn store_message<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Deps<S, Q>,
    tenant_id: &str,
    contacts: &[WaContact],
    message: &InboundMessage,
    raw: &Value,
    now: DateTime<Utc>,
) -> Result<InboundOutcome, ProcessError> {
    let (identity, profile_name) = identity_of(message, contacts, |wa_id| deps.phone_of_wa_id(wa_id));
    if identity.phone.is_none() && identity.user_id.is_none() {
        // Nothing to attach it to; keep it raw rather than drop it.
        deps.store
            .record_event(tenant_id, "message_without_sender", raw, now)
            .await?;
        return Ok(InboundOutcome::Stored);
    }
    let at = message::meta_time(message.timestamp, now);
    let type_name = message.content.type_name().to_owned();
    let media = message.content.media().map(|m| MediaRef {
        media_id: m.id.clone(),
        mime_type: m.mime_type.clone(),
        sha256: m.sha256.clone(),
        status: MediaStatus::Pending,
        s3_key: None,
        size: None,
        failure: None,
    });
    let keyword = message.content.text_for_keywords().and_then(consent_keyword);

    // First with this instance's memory of the sender; after a refused write (contact erased,
    // identity moved to another contact) with fresh lookups.
    for attempt in 0..3 {
        let (contact_id, matched_by) =
            resolve_contact(deps, tenant_id, &identity, profile_name.as_ref(), now, attempt == 0).await?;
        let record = MessageRecord {
            wamid: Some(message.id.clone()),
            error: message.errors.first().map(message_error),
            media: media.clone(),
            context_wamid: message.context.as_ref().and_then(|c| c.id.clone()),
            referral: message.referral.clone(),
            ..MessageRecord::new(
                tenant_id,
                message::inbound_message_id(tenant_id, &message.id, at),
                &contact_id,
                Direction::Inbound,
                &type_name,
                raw.get(&type_name).cloned().unwrap_or(Value::Null),
                MessageStatus::Received,
                at,
                now,
            )
        };
        let consent = match keyword {
            Some(k) => Some(consent_change(deps, tenant_id, &contact_id, k, at).await?),
            None => None,
        };
        let write = InboundWrite {
            message: record,
            matched_by: Some(matched_by.clone()),
            profile_name: profile_name.clone(),
            consent,
        };
        match deps.store.record_inbound(&write).await {
            Ok(InboundOutcome::Stored) => {
                if let Some(change) = &write.consent {
                    // A consent change by the customer's own keyword is audited like any other.
                    let entry = AuditEntry::new(tenant_id, None, "contact.consent")
                        .target("contact", &change.contact_id)
                        .detail("marketing", change.marketing.as_str())
                        .detail("previous", change.previous.as_str())
                        .detail("source", "inbound_keyword");
                    if let Err(e) = deps.store.record_audit(&entry).await {
                        tracing::error!(error = %e, "could not audit a keyword consent change");
                    }
                }
                if write.message.media.is_some() {
                    enqueue_media(deps, &write.message).await?;
                }
                return Ok(InboundOutcome::Stored);
            }
            Ok(InboundOutcome::Duplicate(existing)) => {
                // The first delivery may have stored the message but failed to enqueue its
                // media; the worker is idempotent, so enqueue again while it is pending.
                if existing
                    .media
                    .as_ref()
                    .is_some_and(|m| m.status == MediaStatus::Pending)
                {
                    enqueue_media(deps, &existing).await?;
                }
                return Ok(InboundOutcome::Duplicate(existing));
            }
            // The contact was erased, or no longer holds the identity, between match and write:
            // match again (a fresh contact if nobody holds it now).
            Err(StoreError::NotFound) => {
                deps.forget_contact(tenant_id, &matched_by);
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Backend("contact vanished twice while storing a message".into()).into())
}

async fn consent_change<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Deps<S, Q>,
    tenant_id: &str,
    contact_id: &str,
    keyword: ConsentKeyword,
    at: DateTime<Utc>,
) -> Result<ConsentChange, ProcessError> {
    let previous = deps
        .store
        .get_contact(tenant_id, contact_id)
        .await?
        .map(|c| c.consent.marketing)
        .unwrap_or(MarketingConsent::Unknown);
    Ok(ConsentChange {
        contact_id: contact_id.to_owned(),
        marketing: match keyword {
            ConsentKeyword::OptOut => MarketingConsent::OptedOut,
            ConsentKeyword::OptIn => MarketingConsent::OptedIn,
        },
        previous,
        source: "inbound_keyword".into(),
        actor: "inbound_keyword".into(),
        at,
    })
}

async fn enqueue_media<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Deps<S, Q>,
    m: &MessageRecord,
) -> Result<(), ProcessError> {
    deps.media_queue
        .enqueue_media(&MediaJob {
            tenant_id: m.tenant_id.clone(),
            message_id: m.message_id.clone(),
            contact_id: m.contact_id.clone(),
        })
        .await?;
    Ok(())
}

fn message_error(e: &GraphError) -> MessageError {
    MessageError {
        code: e.code,
        title: e.title.clone().or_else(|| e.message.clone()),
        detail: e.details().map(str::to_owned),
    }
}

async fn store_status<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Deps<S, Q>,
    tenant_id: &str,
    status: &StatusUpdate,
    raw: &Value,
    now: DateTime<Utc>,
) -> Result<Option<StatusOutcome>, ProcessError> {
    let Some(mapped) = receipt_status(&status.status) else {
        // Not a step of the delivery ladder: keep it as an event.
        deps.store.record_event(tenant_id, "status_other", raw, now).await?;
        return Ok(None);
    };
    let write = StatusWrite {
        wamid: status.id.clone(),
        status: mapped,
        at: message::meta_time(status.timestamp, now),
        error: status.errors.first().map(message_error),
        pricing: status.pricing.clone(),
        conversation: status.conversation.clone(),
    };
    Ok(Some(deps.store.apply_status(tenant_id, &write).await?))
}
