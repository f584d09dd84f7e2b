//! Turns a parsed delivery into stored facts, item by item (see `plan` for the items and how
//! they are grouped).

use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde_json::Value;

use crm_shared::audit::AuditEntry;
use crm_shared::contact::{self, ConsentChange, Contact, MarketingConsent};
use crm_shared::first_contact::new_contact;
use crm_shared::jobs::{MediaJob, MediaJobQueue};
use crm_shared::message::{self, Direction, MediaRef, MediaStatus, MessageError, MessageRecord, MessageStatus};
use crm_shared::store::{
    CustomerIdentity, IdentityKey, InboundOutcome, InboundWrite, StatusOutcome, StatusWrite, StoreError,
};
use crm_shared::template;
use crm_shared::whatsapp::{
    ConsentKeyword, GraphError, InboundMessage, StatusUpdate, WaContact, WebhookPayload, consent_keyword,
    receipt_status,
};

use crate::plan::{self, ChangeWork, Item, WorkItem};
use crate::{Processor, WebhookStore};

/// What one delivery amounted to (counts only: safe to log).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub messages_stored: usize,
    pub messages_duplicate: usize,
    /// Redeliveries of erased messages (refused by their tombstones).
    pub messages_erased: usize,
    pub messages_malformed: usize,
    pub statuses_applied: usize,
    pub statuses_ignored: usize,
    pub statuses_parked: usize,
    pub events_recorded: usize,
    /// Template webhooks applied to the registry, and those older than what it holds.
    pub templates_updated: usize,
    pub templates_stale: usize,
    /// Template webhooks of another WABA of the tenant (an added number's): not the registry's.
    pub templates_other_waba: usize,
    /// `user_preferences` and `business_capability_update` changes applied (broadcasts).
    pub account_changes: usize,
    pub unknown_numbers: usize,
    /// Items the table refused for good, kept as digests.
    pub items_unstorable: usize,
    /// Items left for the overflow queue (budget spent, or a retryable failure).
    pub items_deferred: usize,
}

impl Summary {
    pub fn add(&mut self, o: &Summary) {
        self.messages_stored += o.messages_stored;
        self.account_changes += o.account_changes;
        self.messages_duplicate += o.messages_duplicate;
        self.messages_erased += o.messages_erased;
        self.messages_malformed += o.messages_malformed;
        self.statuses_applied += o.statuses_applied;
        self.statuses_ignored += o.statuses_ignored;
        self.statuses_parked += o.statuses_parked;
        self.events_recorded += o.events_recorded;
        self.templates_updated += o.templates_updated;
        self.templates_stale += o.templates_stale;
        self.templates_other_waba += o.templates_other_waba;
        self.unknown_numbers += o.unknown_numbers;
        self.items_unstorable += o.items_unstorable;
        self.items_deferred += o.items_deferred;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] crm_shared::jobs::EnqueueError),
}

impl ProcessError {
    /// Whether retrying can never help (the table refused the item itself as invalid).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ProcessError::Store(StoreError::Rejected(_)))
    }
}

/// How a change's tenant was resolved.
enum Route {
    Tenant(String),
    /// Logged and acknowledged.
    Unknown,
    /// The lookup failed (retryable): its items are handed off.
    Unavailable,
}

/// What processing a delivery left: its counts, and the items not done, by group, as webhook
/// entries (for the overflow queue).
#[derive(Debug, Default)]
pub struct Outcome {
    pub summary: Summary,
    pub deferred: Vec<Vec<Value>>,
}

/// Processes every item of `payload`: groups concurrently (at most `p.concurrency` at once),
/// the items of a group in order. A group not started by `deadline` (or not finished by it) is
/// left for the overflow queue from its first unstarted item; so is the rest of a group after an
/// item failed in a way a retry may fix. An item the table refuses for good is kept as a digest.
pub async fn process<S: WebhookStore, Q: MediaJobQueue>(
    p: &Processor<S, Q>,
    payload: &WebhookPayload,
    deadline: Option<Instant>,
) -> Outcome {
    let now = Utc::now();
    let (changes, groups) = plan::split(payload);
    let mut summary = Summary::default();
    // Few distinct numbers per delivery, each looked up once (then remembered).
    let mut routes = Vec::with_capacity(changes.len());
    for change in &changes {
        let phone_number_id = change.phone_number_id();
        let route = match p.tenant_for(phone_number_id, &change.entry.id).await {
            Ok(Some(tenant)) => Route::Tenant(tenant),
            Ok(None) => {
                // Meta ids are not personal data; they tell the operator which number is unrouted.
                tracing::warn!(phone_number_id, waba_id = %change.entry.id, field = %change.change.field, "delivery for an unknown phone number id acknowledged");
                summary.unknown_numbers += 1;
                Route::Unknown
            }
            Err(err) => {
                tracing::warn!(error = %err, "tenant lookup failed; the change is handed off");
                Route::Unavailable
            }
        };
        routes.push(route);
    }
    let ctx = Ctx {
        p,
        changes: &changes,
        routes: &routes,
        deadline,
        now,
    };
    let ctx = &ctx;
    let mut results: Vec<(usize, Summary, Vec<WorkItem>)> = stream::iter(groups.into_iter().enumerate())
        .map(|(i, group)| async move {
            let (summary, rest) = run_group(ctx, &group).await;
            (i, summary, rest)
        })
        .buffer_unordered(p.concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, ..)| *i);
    let mut deferred = Vec::new();
    for (_, group_summary, rest) in results {
        summary.add(&group_summary);
        if !rest.is_empty() {
            summary.items_deferred += rest.len();
            deferred.push(rest.iter().map(|&w| plan::entry_of(&changes, w)).collect());
        }
    }
    Outcome { summary, deferred }
}

/// What every item of one delivery shares.
struct Ctx<'a, S, Q> {
    p: &'a Processor<S, Q>,
    changes: &'a [ChangeWork<'a>],
    routes: &'a [Route],
    deadline: Option<Instant>,
    now: DateTime<Utc>,
}

/// One group's items in order; returns its counts and the items left for the queue.
async fn run_group<S: WebhookStore, Q: MediaJobQueue>(
    ctx: &Ctx<'_, S, Q>,
    group: &[WorkItem],
) -> (Summary, Vec<WorkItem>) {
    let mut summary = Summary::default();
    let routed = |w: &&WorkItem| !matches!(ctx.routes[w.change], Route::Unknown);
    let rest = |from: usize| group[from..].iter().filter(routed).copied().collect::<Vec<_>>();
    // Once the budget is spent, a group whose rest cannot travel to the queue finishes here.
    let mut finish_here = false;
    for (n, &w) in group.iter().enumerate() {
        let tenant_id = match &ctx.routes[w.change] {
            Route::Tenant(t) => t.as_str(),
            Route::Unknown => continue,
            Route::Unavailable => return (summary, rest(n)),
        };
        if !finish_here && ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            let travels = group[n..]
                .iter()
                .all(|&w| plan::fits_queue(plan::entry_of(ctx.changes, w).to_string().len()));
            if travels {
                return (summary, rest(n));
            }
            finish_here = true;
        }
        match process_item(ctx, tenant_id, w, &mut summary).await {
            Ok(()) => {}
            Err(err) if err.is_permanent() => {
                let change = &ctx.changes[w.change];
                let field = change.change.field.as_str();
                let raw = plan::raw_item(ctx.changes, w);
                let (sha256, kept) = plan::digest(field, w.item, &raw);
                // Counts, kinds and a digest prefix only: the item may quote a customer.
                tracing::warn!(
                    item = w.item.kind(),
                    field,
                    size = kept["size"].as_u64(),
                    sha256 = &sha256[..16],
                    "item refused by the table for good; kept as a digest"
                );
                match ctx
                    .p
                    .store
                    .record_event(tenant_id, "item_unstorable", &kept, ctx.now)
                    .await
                {
                    Ok(()) => summary.items_unstorable += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not keep an unstorable item's digest; handed off");
                        return (summary, rest(n));
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, item = w.item.kind(), "item failed; it and the rest of its group are handed off");
                return (summary, rest(n));
            }
        }
    }
    (summary, Vec::new())
}

/// One work item, with today's per-item semantics.
async fn process_item<S: WebhookStore, Q: MediaJobQueue>(
    ctx: &Ctx<'_, S, Q>,
    tenant_id: &str,
    w: WorkItem,
    summary: &mut Summary,
) -> Result<(), ProcessError> {
    let (p, now) = (ctx.p, ctx.now);
    let change = &ctx.changes[w.change];
    let value = match (&change.messages, w.item) {
        (Some(Ok(value)), item) if item != Item::Change => value,
        (Some(Err(err)), _) => {
            tracing::warn!(reason = %err, "messages change could not be parsed; kept raw");
            p.store
                .record_event(tenant_id, "messages_unparsed", &change.change.value, now)
                .await?;
            summary.events_recorded += 1;
            return Ok(());
        }
        _ => {
            if let Some(update) = template::parse_webhook_change(&change.change.field, &change.change.value) {
                // The registry holds the templates of the tenant's WABA (the one it was created
                // with, which sync, create and delete use): another WABA's change is not its.
                let registry_waba = p.store.get_tenant(tenant_id).await?.map(|t| t.waba_id);
                if registry_waba.as_deref() != Some(change.entry.id.as_str()) {
                    tracing::info!(waba_id = %change.entry.id, field = %change.change.field, "template change of a WABA outside the registry ignored");
                    summary.templates_other_waba += 1;
                    return Ok(());
                }
                // Meta's time of the change orders status updates; without one, ours.
                let at = change.entry.time.unwrap_or_else(|| now.timestamp());
                match p.store.apply_template_change(tenant_id, &update, at, now).await? {
                    Some(_) => summary.templates_updated += 1,
                    None => summary.templates_stale += 1,
                }
                return Ok(());
            }
            if crate::account::apply(
                &p.store,
                tenant_id,
                &change.entry.id,
                &change.change.field,
                &change.change.value,
                // Meta's time of the change orders quality updates; without one, ours.
                change
                    .entry
                    .time
                    .and_then(|t| DateTime::from_timestamp(t, 0))
                    .unwrap_or(now),
                now,
            )
            .await?
            {
                summary.account_changes += 1;
            }
            p.store
                .record_event(tenant_id, &change.change.field, &change.change.value, now)
                .await?;
            summary.events_recorded += 1;
            return Ok(());
        }
    };
    match w.item {
        Item::Message(i) => {
            let raw = &value.messages[i];
            match &change.inbound[i] {
                Ok(message) => match store_message(
                    p,
                    tenant_id,
                    &value.metadata.phone_number_id,
                    &value.contacts,
                    message,
                    raw,
                    now,
                )
                .await?
                {
                    InboundOutcome::Stored => summary.messages_stored += 1,
                    InboundOutcome::Duplicate(_) => summary.messages_duplicate += 1,
                    InboundOutcome::Erased => summary.messages_erased += 1,
                },
                Err(err) => {
                    tracing::warn!(reason = %err, "inbound message could not be parsed; kept raw");
                    p.store.record_event(tenant_id, "message_unparsed", raw, now).await?;
                    summary.messages_malformed += 1;
                }
            }
        }
        Item::Status(i) => {
            let raw = &value.statuses[i];
            match &change.statuses[i] {
                Ok(status) => match store_status(p, tenant_id, status, raw, now).await? {
                    Some(StatusOutcome::Applied) => summary.statuses_applied += 1,
                    Some(StatusOutcome::Parked) => summary.statuses_parked += 1,
                    Some(StatusOutcome::LateFailure) => {
                        tracing::warn!("failed status for a message already delivered; kept as an event");
                        p.store.record_event(tenant_id, "status_late_failure", raw, now).await?;
                        summary.statuses_ignored += 1;
                    }
                    Some(StatusOutcome::HistoryOnly | StatusOutcome::Duplicate | StatusOutcome::Erased) | None => {
                        summary.statuses_ignored += 1
                    }
                },
                Err(err) => {
                    tracing::warn!(reason = %err, "status could not be parsed; kept raw");
                    p.store.record_event(tenant_id, "status_unparsed", raw, now).await?;
                    summary.events_recorded += 1;
                }
            }
        }
        Item::Error(i) => {
            let error = &value.errors[i];
            tracing::warn!(code = error.code, "Meta reported an error in a messages change");
            let raw = serde_json::to_value(error).unwrap_or(Value::Null);
            p.store.record_event(tenant_id, "messages_error", &raw, now).await?;
            summary.events_recorded += 1;
        }
        Item::Change => unreachable!("handled above"),
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
    let matching = plan::matching_contact(message, contacts);
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

/// Whom an inbound message is from.
enum Sender {
    /// An existing contact, and the identity it was matched by.
    Known(String, IdentityKey),
    /// Nobody holds the sender's identity: this contact is created by the message's own write
    /// (so a refused message, such as a late redelivery of an erased customer's, creates
    /// nothing).
    New(Box<Contact>),
}

/// The sender: this instance's memory of them when `use_known` (the write checks the contact
/// still holds the identity), else a consistent lookup, else a new contact.
async fn resolve_sender<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Processor<S, Q>,
    tenant_id: &str,
    identity: &CustomerIdentity,
    profile_name: Option<&String>,
    now: DateTime<Utc>,
    use_known: bool,
) -> Result<Sender, ProcessError> {
    if use_known && let Some((contact_id, matched_by)) = deps.known_contact(tenant_id, identity) {
        return Ok(Sender::Known(contact_id, matched_by));
    }
    if let Some((contact_id, matched_by)) = deps.store.match_contact(tenant_id, identity).await? {
        deps.remember_contact(tenant_id, matched_by.clone(), &contact_id);
        return Ok(Sender::Known(contact_id, matched_by));
    }
    let profile_name = profile_name.map(String::as_str);
    Ok(Sender::New(Box::new(new_contact(
        tenant_id,
        identity,
        profile_name,
        now,
    ))))
}

async fn store_message<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Processor<S, Q>,
    tenant_id: &str,
    phone_number_id: &str,
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
    // The id comes from the time Meta stated (a redelivery maps onto the same message); what
    // is stored and acted on is that time bounded around now.
    let stated_at = message::meta_time(message.timestamp, now);
    let at = message::bounded_time(stated_at, now);
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
    // identity moved to another contact, a first contact created concurrently) with fresh
    // lookups.
    for attempt in 0..3 {
        let sender = resolve_sender(deps, tenant_id, &identity, profile_name.as_ref(), now, attempt == 0).await?;
        let (contact_id, matched_by, new_contact) = match sender {
            Sender::Known(contact_id, matched_by) => (contact_id, matched_by, None),
            Sender::New(contact) => {
                let primary = identity.primary_key().expect("the sender has a phone or user id");
                (contact.contact_id.clone(), primary, Some(*contact))
            }
        };
        let record = MessageRecord {
            // The number the customer wrote to: its conversation, and where replies go from.
            phone_number_id: Some(phone_number_id.to_owned()).filter(|n| !n.is_empty()),
            wamid: Some(message.id.clone()),
            error: message.errors.first().map(message_error),
            media: media.clone(),
            context_wamid: message.context.as_ref().and_then(|c| c.id.clone()),
            referral: message.referral.clone(),
            ..MessageRecord::new(
                tenant_id,
                message::inbound_message_id(tenant_id, &message.id, stated_at),
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
            // A contact created by this message had no consent before it.
            Some(k) if new_contact.is_some() => Some(consent_change(&contact_id, k, MarketingConsent::Unknown, at)),
            Some(k) => {
                let previous = current_consent(deps, tenant_id, &contact_id).await?;
                Some(consent_change(&contact_id, k, previous, at))
            }
            None => None,
        };
        let write = InboundWrite {
            message: record,
            matched_by: Some(matched_by.clone()),
            profile_name: profile_name.clone(),
            consent,
            new_contact,
        };
        match deps.store.record_inbound(&write).await {
            Ok(InboundOutcome::Stored) => {
                if write.new_contact.is_some() {
                    deps.remember_contact(tenant_id, matched_by, &contact_id);
                }
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
            Ok(InboundOutcome::Erased) => return Ok(InboundOutcome::Erased),
            // The contact was erased, or no longer holds the identity, between match and write:
            // match again (a fresh contact if nobody holds it now).
            Err(StoreError::NotFound) => {
                deps.forget_contact(tenant_id, &matched_by);
                continue;
            }
            // Another first message of the same customer created their contact meanwhile:
            // match again (the winner's contact).
            Err(StoreError::Conflict(_)) if write.new_contact.is_some() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Backend("contact vanished twice while storing a message".into()).into())
}

/// The contact's marketing consent before a keyword changes it.
async fn current_consent<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Processor<S, Q>,
    tenant_id: &str,
    contact_id: &str,
) -> Result<MarketingConsent, ProcessError> {
    Ok(deps
        .store
        .get_contact(tenant_id, contact_id)
        .await?
        .map(|c| c.consent.marketing)
        .unwrap_or(MarketingConsent::Unknown))
}

fn consent_change(
    contact_id: &str,
    keyword: ConsentKeyword,
    previous: MarketingConsent,
    at: DateTime<Utc>,
) -> ConsentChange {
    ConsentChange {
        contact_id: contact_id.to_owned(),
        marketing: match keyword {
            ConsentKeyword::OptOut => MarketingConsent::OptedOut,
            ConsentKeyword::OptIn => MarketingConsent::OptedIn,
        },
        previous,
        source: "inbound_keyword".into(),
        actor: "inbound_keyword".into(),
        at,
    }
}

async fn enqueue_media<S: WebhookStore, Q: MediaJobQueue>(
    deps: &Processor<S, Q>,
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
    deps: &Processor<S, Q>,
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
        at: message::bounded_time(message::meta_time(status.timestamp, now), now),
        error: status.errors.first().map(message_error),
        pricing: status.pricing.clone(),
        conversation: status.conversation.clone(),
    };
    let outcome = deps.store.apply_status(tenant_id, &write).await?;
    // A wamid we do not know, echoing our message id: a send whose answer never reached the
    // sender (`unknown`, or Meta's answer not yet recorded). Adopt the wamid and apply again.
    if outcome == StatusOutcome::Parked
        && let Some(message_id) = &status.biz_opaque_callback_data
        && deps.store.adopt_wamid(tenant_id, message_id, &status.id).await?
    {
        tracing::info!(%message_id, "status webhook reconciled a send whose outcome was unknown");
        return Ok(Some(deps.store.apply_status(tenant_id, &write).await?));
    }
    // Our message id, but the message is gone: erased while Meta had it. Nothing of it stays.
    if outcome == StatusOutcome::Parked
        && let Some(message_id) = &status.biz_opaque_callback_data
        && deps.store.drop_orphan_status(tenant_id, message_id, &write).await?
    {
        return Ok(Some(StatusOutcome::Erased));
    }
    Ok(Some(outcome))
}
