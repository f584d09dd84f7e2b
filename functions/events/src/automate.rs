//! Automated replies, run by the events function on each stored inbound message (see
//! docs/automations.md for why here and not in the webhook).
//!
//! Per message: the tenant's rules come from this instance's memory (read at most every
//! [`RULES_TTL`], so a change applies within a minute); a message no rule could trigger on
//! (no keyword in it, no welcome rule, inside every away rule's hours) costs nothing more. Else
//! one `BatchGetItem` reads the contact, its conversation, its automation state and the tenant's
//! day counter, the rules are evaluated ([`crm_shared::automation::evaluate`]) at the time the
//! message was stored (so a redelivered record is judged the same), and each verdict is
//! recorded. A firing is recorded first (one transaction: firing, contact state, day counter),
//! then its actions run; a redelivered record finds the firing recorded and completes the same
//! actions, each idempotent (the reply's message id is derived from rule and message; tags,
//! assignment and status are set, not toggled). The reply is ONE queued message through the
//! sender, which applies every sending rule again right before Meta.
//!
//! Loop-proof by construction: only inserts of messages with direction `inbound` are evaluated;
//! our replies, statuses and echoes are never one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crm_shared::automation::evaluate::{CompiledRule, Outcome, Verdict, compile, may_trigger, text_of};
use crm_shared::automation::{Action, AutomationSettings, Facts, Firing, Planned, evaluate, reply_message_id};
use crm_shared::cache::TtlCache;
use crm_shared::contact;
use crm_shared::conversation::{check_status_change, conversation_id};
use crm_shared::events::derive::StreamChange;
use crm_shared::jobs::{SendJob, SendJobQueue};
use crm_shared::message::{Direction, MessageRecord, MessageStatus};
use crm_shared::store::{
    AssignOutcome, AutomationStore, ContactStore, ContactUpdate, ConversationStore, FiringWrite, MessageStore,
    OutboundStore, StoreError, keys,
};

/// How long an instance trusts a tenant's rules and automation settings: a change applies to
/// every instance within this time (the bound is 60 s).
pub const RULES_TTL: Duration = Duration::from_secs(30);
/// Attempts of a contact edit (tags) that keeps losing to a concurrent one.
const EDIT_ATTEMPTS: usize = 3;

/// What the automation step needs besides the store: the sender's queue and its memories.
pub struct Automations<A> {
    pub sends: A,
    rules: TtlCache<String, Arc<Vec<CompiledRule>>>,
    settings: TtlCache<String, AutomationSettings>,
}

impl<A> Automations<A> {
    pub fn new(sends: A) -> Self {
        Automations {
            sends,
            rules: TtlCache::new(10_000, RULES_TTL),
            settings: TtlCache::new(10_000, RULES_TTL),
        }
    }
}

/// Everything the automation step asks of the store.
pub trait AutomationDeps: AutomationStore + ContactStore + ConversationStore + OutboundStore + MessageStore {}
impl<T: AutomationStore + ContactStore + ConversationStore + OutboundStore + MessageStore> AutomationDeps for T {}

#[derive(Debug, thiserror::Error)]
pub enum AutomateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the reply could not be queued: {0}")]
    Queue(String),
}

/// The inbound message a stream record inserted, if it is one.
pub fn inbound_insert(change: &StreamChange) -> Option<MessageRecord> {
    let sk = change.keys.get(keys::SK).and_then(Value::as_str)?;
    if sk != keys::MESSAGE_SK || change.old.is_some() {
        return None;
    }
    let new = change.new.as_ref()?;
    if new.get("direction").and_then(Value::as_str) != Some("inbound") {
        return None;
    }
    let message: MessageRecord = serde_json::from_value(new.clone()).ok()?;
    (message.direction == Direction::Inbound).then_some(message)
}

/// Evaluates the rules on a stream record if it inserted an inbound message: the cheap checks
/// (the kind of record, the tenant's cached rules) before the message is read from the image.
pub async fn on_change<S: AutomationDeps, A: SendJobQueue>(
    auto: &Automations<A>,
    store: &S,
    change: &StreamChange,
) -> Result<usize, AutomateError> {
    let is_insert = change.old.is_none() && change.keys.get(keys::SK).and_then(Value::as_str) == Some(keys::MESSAGE_SK);
    let Some(new) = change.new.as_ref().filter(|_| is_insert) else {
        return Ok(0);
    };
    if new.get("direction").and_then(Value::as_str) != Some("inbound") {
        return Ok(0);
    }
    let pk = change.keys.get(keys::PK).and_then(Value::as_str).unwrap_or_default();
    let Some(tenant_id) = keys::tenant_of_pk(pk) else {
        return Ok(0);
    };
    if tenant_rules(auto, store, tenant_id).await?.is_empty() {
        return Ok(0);
    }
    match inbound_insert(change) {
        Some(message) if message.tenant_id == tenant_id => on_inbound(auto, store, &message, change.at).await,
        _ => Ok(0),
    }
}

async fn tenant_rules<S: AutomationStore, A>(
    auto: &Automations<A>,
    store: &S,
    tenant_id: &str,
) -> Result<Arc<Vec<CompiledRule>>, StoreError> {
    if let Some(rules) = auto.rules.get(tenant_id) {
        return Ok(rules);
    }
    let rules = Arc::new(compile(store.rules_of(tenant_id).await?));
    auto.rules.insert(tenant_id.to_owned(), rules.clone());
    Ok(rules)
}

async fn tenant_settings<S: AutomationStore, A>(
    auto: &Automations<A>,
    store: &S,
    tenant_id: &str,
) -> Result<AutomationSettings, StoreError> {
    if let Some(s) = auto.settings.get(tenant_id) {
        return Ok(s);
    }
    let settings = store.automation_settings(tenant_id).await?;
    auto.settings.insert(tenant_id.to_owned(), settings);
    Ok(settings)
}

/// Evaluates and acts on one stored inbound message; `Err` only for what a retry may fix.
pub async fn on_inbound<S: AutomationDeps, A: SendJobQueue>(
    auto: &Automations<A>,
    store: &S,
    message: &MessageRecord,
    stored_at: DateTime<Utc>,
) -> Result<usize, AutomateError> {
    let tenant_id = message.tenant_id.as_str();
    let rules = tenant_rules(auto, store, tenant_id).await?;
    if rules.is_empty() {
        return Ok(0);
    }
    // Judged at the time the message was stored: a redelivered record is judged the same.
    // To the millisecond, as the firing's state is stored: our reply's time must compare equal
    // to the conversation's `last_outbound_at` it sets (that is how a human's reply is told
    // apart from ours).
    let now = stored_at.max(message.created_at);
    let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let text = text_of(&message.message_type, &message.content);
    if !may_trigger(&rules, text.as_deref(), now) {
        return Ok(0);
    }
    let Some(number) = message.phone_number_id.as_deref() else {
        return Ok(0);
    };
    let settings = tenant_settings(auto, store, tenant_id).await?;
    let day = now.format("%Y-%m-%d").to_string();
    let context = store
        .automation_context(tenant_id, &message.contact_id, number, &day)
        .await?;
    // A contact the customer's message created has that message's creation time (the webhook
    // stores both with one clock reading).
    let new_contact = context
        .contact
        .as_ref()
        .is_some_and(|c| c.created_at == message.created_at);
    let evaluation = evaluate(
        &rules,
        &Facts {
            message_id: &message.message_id,
            text: text.as_deref(),
            contact: context.contact.as_ref(),
            conversation: context.conversation.as_ref(),
            state: &context.state,
            new_contact,
            fired_today: context.fired_today,
            daily_cap: settings.daily_cap,
            now,
        },
    );
    let conversation = conversation_id(&message.contact_id, number);
    let mut fired = 0;
    for verdict in evaluation.verdicts.iter().filter(|v| v.recorded()) {
        let rule = rules
            .iter()
            .find(|r| r.rule.rule_id == verdict.rule_id)
            .expect("verdicts are of these rules");
        let mut firing = Firing {
            tenant_id: tenant_id.to_owned(),
            rule_id: verdict.rule_id.clone(),
            message_id: message.message_id.clone(),
            contact_id: message.contact_id.clone(),
            conversation_id: conversation.clone(),
            trigger: verdict.trigger.to_owned(),
            outcome: "suppressed".into(),
            reason: None,
            actions: Vec::new(),
            reply_message_id: None,
            notify: None,
            at: now,
        };
        let planned = match &verdict.outcome {
            Outcome::Suppressed(reason) => {
                firing.reason = Some(reason.code().to_owned());
                store.record_suppression(&firing).await?;
                tracing::info!(rule_id = %verdict.rule_id, reason = reason.code(), "automation suppressed");
                continue;
            }
            Outcome::Fires(planned) => planned,
            _ => unreachable!("recorded verdicts fire or are suppressed"),
        };
        firing.outcome = "fired".into();
        firing.actions = planned.kinds();
        firing.notify = planned.notify();
        firing.reply_message_id = planned
            .reply
            .as_ref()
            .map(|_| reply_message_id(tenant_id, &verdict.rule_id, &message.message_id, now));
        let welcome = rule.rule.spec.trigger == crm_shared::automation::Trigger::Welcome;
        let refused = match store.record_firing(&firing, welcome, settings.daily_cap).await? {
            FiringWrite::Recorded | FiringWrite::Duplicate => None,
            FiringWrite::CapReached => Some("daily_cap"),
            FiringWrite::AlreadyWelcomed => Some("already_welcomed"),
            FiringWrite::ContactErased => Some("contact_erased"),
        };
        if let Some(reason) = refused {
            let suppressed = Firing {
                outcome: "suppressed".into(),
                reason: Some(reason.into()),
                actions: Vec::new(),
                reply_message_id: None,
                notify: None,
                ..firing
            };
            store.record_suppression(&suppressed).await?;
            continue;
        }
        act(auto, store, message, verdict, planned, &firing).await?;
        tracing::info!(rule_id = %verdict.rule_id, actions = ?firing.actions, "automation fired");
        fired += 1;
    }
    Ok(fired)
}

/// The firing's actions, each idempotent (a redelivery runs them again).
async fn act<S: AutomationDeps, A: SendJobQueue>(
    auto: &Automations<A>,
    store: &S,
    inbound: &MessageRecord,
    verdict: &Verdict,
    planned: &Planned,
    firing: &Firing,
) -> Result<(), AutomateError> {
    let tenant_id = inbound.tenant_id.as_str();
    if let (Some(reply), Some(id)) = (&planned.reply, &firing.reply_message_id) {
        let language = reply
            .content
            .get("language")
            .and_then(|l| l.get("code"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let message = MessageRecord {
            phone_number_id: inbound.phone_number_id.clone(),
            category: Some(reply.category),
            language: (reply.message_type == "template").then_some(language).flatten(),
            automation_rule: Some(verdict.rule_id.clone()),
            ..MessageRecord::new(
                tenant_id,
                id.clone(),
                &inbound.contact_id,
                Direction::Outbound,
                &reply.message_type,
                reply.content.clone(),
                MessageStatus::Queued,
                firing.at,
                firing.at,
            )
        };
        let queued = match store.create_message_once(&message, None).await {
            Ok(_) => true,
            // Made by the first delivery of this record: queue it again while still queued (the
            // sender's claim makes a duplicate job harmless).
            Err(StoreError::Conflict(_)) => store
                .get_message(tenant_id, id)
                .await?
                .is_some_and(|m| m.status == MessageStatus::Queued),
            // The contact was erased meanwhile.
            Err(StoreError::NotFound) => false,
            Err(e) => return Err(e.into()),
        };
        if queued {
            auto.sends
                .enqueue_send(&SendJob::new(tenant_id, id))
                .await
                .map_err(|e| AutomateError::Queue(e.to_string()))?;
        }
    }
    for action in &planned.actions {
        match action {
            Action::AddTags { tags } => edit_tags(store, inbound, tags, true, firing.at).await?,
            Action::RemoveTags { tags } => edit_tags(store, inbound, tags, false, firing.at).await?,
            Action::Assign { user_id, round_robin } => {
                let candidates: Vec<&String> = match user_id {
                    Some(u) => vec![u],
                    None => {
                        let start = store.next_round_robin(tenant_id, &verdict.rule_id).await? as usize;
                        let n = round_robin.len();
                        (0..n).map(|i| &round_robin[(start + i) % n]).collect()
                    }
                };
                // Only an unassigned conversation is assigned (a redelivery, or an agent who took
                // it meanwhile, wins); a user no longer active is passed over.
                for user in candidates {
                    match store
                        .assign(tenant_id, &firing.conversation_id, Some(user), None, firing.at)
                        .await
                    {
                        Ok(AssignOutcome::UnknownAssignee) => continue,
                        Ok(_) | Err(StoreError::NotFound) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Action::SetStatus { status } => {
                let Ok(change) = check_status_change(*status, None, firing.at) else {
                    continue;
                };
                match store
                    .set_status(tenant_id, &firing.conversation_id, &change, None)
                    .await
                {
                    Ok(_) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // Carried by the firing's record and its `automation.fired` event.
            Action::Notify { .. } | Action::Reply { .. } => {}
        }
    }
    Ok(())
}

/// Adds or removes tags on the contact (version-checked, retried on a concurrent edit).
async fn edit_tags<S: AutomationDeps>(
    store: &S,
    inbound: &MessageRecord,
    tags: &[String],
    add: bool,
    at: DateTime<Utc>,
) -> Result<(), AutomateError> {
    for _ in 0..EDIT_ATTEMPTS {
        let Some(current) = store.get_contact(&inbound.tenant_id, &inbound.contact_id).await? else {
            return Ok(());
        };
        let mut next: Vec<String> = current.tags.clone();
        if add {
            next.extend(tags.iter().filter(|t| !current.tags.contains(t)).cloned());
        } else {
            next.retain(|t| !tags.contains(t));
        }
        if next == current.tags {
            return Ok(());
        }
        let Ok(patched) = contact::apply_patch(&current, &serde_json::json!({ "tags": next }), at) else {
            // Too many tags: the contact keeps what it has.
            tracing::warn!("automation could not change the contact's tags (limit)");
            return Ok(());
        };
        let update = ContactUpdate {
            before: &current,
            after: &patched.contact,
            phone_change: None,
            user_id_change: None,
        };
        match store.update_contact(&update).await {
            Ok(()) | Err(StoreError::NotFound) => return Ok(()),
            Err(StoreError::VersionMismatch) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::VersionMismatch.into())
}
