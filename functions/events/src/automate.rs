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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crm_shared::automation::evaluate::{
    CompiledRule, Outcome, compile, consent_confirmation, may_trigger, no_reply_due, shortest_no_reply, text_of,
};
use crm_shared::automation::{
    Action, AutomationSettings, Facts, Firing, OPT_IN_CONFIRMATION, OPT_OUT_CONFIRMATION, Planned, Rule, evaluate,
    reply_message_id, waiting_period_id,
};
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
use crm_shared::whatsapp::{ConsentKeyword, consent_keyword};

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
/// A consent keyword (`STOP`, `START`) also gets the tenant's confirmation, if it set one.
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
    let keyword = new
        .get("type")
        .and_then(Value::as_str)
        .and_then(|t| text_of(t, new.get("content").unwrap_or(&Value::Null)))
        .and_then(|text| consent_keyword(&text));
    let has_rules = !tenant_rules(auto, store, tenant_id).await?.is_empty();
    if !has_rules && keyword.is_none() {
        return Ok(0);
    }
    match inbound_insert(change) {
        Some(message) if message.tenant_id == tenant_id => {
            // The rules only record that the keyword silenced them; the confirmation is its own.
            let mut acted = if has_rules {
                on_inbound(auto, store, &message, change.at).await?
            } else {
                0
            };
            if let Some(keyword) = keyword {
                acted += confirm_consent(auto, store, &message, keyword, change.at).await?;
            }
            Ok(acted)
        }
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
    auto.settings.insert(tenant_id.to_owned(), settings.clone());
    Ok(settings)
}

/// The instant a stored message is judged at: when it was stored (the stream record's time), so
/// a redelivered record is judged the same; to the millisecond, as the firing's state is stored
/// (our reply's time must compare equal to the conversation's `last_outbound_at` it sets: that is
/// how a human's reply is told apart from ours).
fn judged_at(message: &MessageRecord, stored_at: DateTime<Utc>) -> DateTime<Utc> {
    to_millis(stored_at.max(message.created_at))
}

fn to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
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
    let now = judged_at(message, stored_at);
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
            waiting_since: None,
        },
    );
    let occasion = Occasion {
        tenant_id,
        contact_id: &message.contact_id,
        phone_number_id: number,
        key: &message.message_id,
        waiting_since: None,
        now,
    };
    record_and_act(
        auto,
        store,
        &rules,
        &evaluation,
        &context.state,
        &occasion,
        settings.daily_cap,
    )
    .await
}

/// What a set of verdicts was reached on: an inbound message (`key` its id) or a waiting period
/// (`key` its [`waiting_period_id`]).
struct Occasion<'a> {
    tenant_id: &'a str,
    contact_id: &'a str,
    phone_number_id: &'a str,
    key: &'a str,
    waiting_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
}

/// Records every verdict the log keeps and runs each firing's actions; how many fired.
async fn record_and_act<S: AutomationDeps, A: SendJobQueue>(
    auto: &Automations<A>,
    store: &S,
    rules: &[CompiledRule],
    evaluation: &crm_shared::automation::Evaluation,
    state: &crm_shared::automation::ContactState,
    occasion: &Occasion<'_>,
    daily_cap: u64,
) -> Result<usize, AutomateError> {
    let mut fired = 0;
    for verdict in evaluation.verdicts.iter().filter(|v| v.recorded()) {
        let rule = rules
            .iter()
            .find(|r| r.rule.rule_id == verdict.rule_id)
            .expect("verdicts are of these rules");
        let mut firing = occasion.firing(&verdict.rule_id, verdict.trigger);
        let decided = state.fired_for_message(&verdict.rule_id, occasion.key);
        if decided && let Some(at) = state.last_fired.get(&verdict.rule_id) {
            // Completing a recorded firing (a redelivery, or a sweep after a crash): at the time
            // it was recorded, so its reply has the id the first attempt gave it.
            firing.at = *at;
        }
        let planned = match &verdict.outcome {
            Outcome::Suppressed(reason) => {
                suppress(store, firing, reason.code()).await?;
                tracing::info!(rule_id = %verdict.rule_id, reason = reason.code(), "automation suppressed");
                continue;
            }
            Outcome::Fires(planned) => planned,
            _ => unreachable!("recorded verdicts fire or are suppressed"),
        };
        let welcome = rule.rule.spec.trigger == crm_shared::automation::Trigger::Welcome;
        let terms = FireTerms {
            welcome,
            decided,
            daily_cap,
        };
        if fire(auto, store, firing, occasion.phone_number_id, planned, terms).await? {
            tracing::info!(rule_id = %verdict.rule_id, "automation fired");
            fired += 1;
            if occasion.waiting_since.is_some() {
                // The wait's firing is complete: later sweeps pass it over.
                store
                    .mark_no_reply_done(occasion.tenant_id, occasion.contact_id, &verdict.rule_id, occasion.key)
                    .await?;
            }
        }
    }
    Ok(fired)
}

impl Occasion<'_> {
    /// The log record of `rule_id` on this occasion, as a suppression until it fires.
    fn firing(&self, rule_id: &str, trigger: &str) -> Firing {
        Firing {
            tenant_id: self.tenant_id.to_owned(),
            rule_id: rule_id.to_owned(),
            message_id: self.key.to_owned(),
            contact_id: self.contact_id.to_owned(),
            conversation_id: conversation_id(self.contact_id, self.phone_number_id),
            trigger: trigger.to_owned(),
            outcome: "suppressed".into(),
            reason: None,
            actions: Vec::new(),
            reply_message_id: None,
            notify: None,
            waiting_since: self.waiting_since,
            at: self.now,
        }
    }
}

async fn suppress<S: AutomationDeps>(store: &S, firing: Firing, reason: &str) -> Result<(), AutomateError> {
    let suppressed = Firing {
        outcome: "suppressed".into(),
        reason: Some(reason.into()),
        actions: Vec::new(),
        reply_message_id: None,
        notify: None,
        ..firing
    };
    store.record_suppression(&suppressed).await?;
    Ok(())
}

/// What the firing's record is conditional on.
struct FireTerms {
    /// A welcome: once per contact.
    welcome: bool,
    decided: bool,
    daily_cap: u64,
}

/// Records a firing, then runs its actions; whether it fired. `decided`: the contact's state
/// already names this occasion for the rule (a redelivery, or a sweep after a crash), so a
/// recorded firing is completed. A record found that the state does not name is someone else's
/// — a suppression, or an overlapping sweep that runs the actions itself — and is left alone.
async fn fire<S: AutomationDeps, A: SendJobQueue>(
    auto: &Automations<A>,
    store: &S,
    mut firing: Firing,
    phone_number_id: &str,
    planned: &Planned,
    terms: FireTerms,
) -> Result<bool, AutomateError> {
    let FireTerms {
        welcome,
        decided,
        daily_cap,
    } = terms;
    firing.outcome = "fired".into();
    firing.actions = planned.kinds();
    firing.notify = planned.notify();
    firing.reply_message_id = planned
        .reply
        .as_ref()
        .map(|_| reply_message_id(&firing.tenant_id, &firing.rule_id, &firing.message_id, firing.at));
    let refused = match store.record_firing(&firing, welcome, daily_cap).await? {
        FiringWrite::Recorded => None,
        FiringWrite::Duplicate if decided => None,
        FiringWrite::Duplicate => return Ok(false),
        FiringWrite::CapReached => Some("daily_cap"),
        FiringWrite::AlreadyWelcomed => Some("already_welcomed"),
        FiringWrite::ContactErased => Some("contact_erased"),
    };
    if let Some(reason) = refused {
        suppress(store, firing, reason).await?;
        return Ok(false);
    }
    act(auto, store, phone_number_id, planned, &firing).await?;
    Ok(true)
}

/// Answers a consent keyword with the tenant's confirmation (if it set one): a free-form service
/// message — the customer just wrote, and an opt-out stops marketing, not this — through the
/// sender, recorded as a firing of the pseudo-rule `opt_out_confirmation` / `opt_in_confirmation`
/// once per keyword message (its id is derived from the message: a redelivered record sends no
/// second one). No rule answers the keyword (see [`evaluate`]).
pub async fn confirm_consent<S: AutomationDeps, A: SendJobQueue>(
    auto: &Automations<A>,
    store: &S,
    message: &MessageRecord,
    keyword: ConsentKeyword,
    stored_at: DateTime<Utc>,
) -> Result<usize, AutomateError> {
    let tenant_id = message.tenant_id.as_str();
    let settings = tenant_settings(auto, store, tenant_id).await?;
    let (Some(text), Some(number)) = (settings.confirmation(keyword), message.phone_number_id.as_deref()) else {
        return Ok(0);
    };
    let now = judged_at(message, stored_at);
    let context = store
        .automation_context(
            tenant_id,
            &message.contact_id,
            number,
            &now.format("%Y-%m-%d").to_string(),
        )
        .await?;
    let rule_id = match keyword {
        ConsentKeyword::OptOut => OPT_OUT_CONFIRMATION,
        ConsentKeyword::OptIn => OPT_IN_CONFIRMATION,
    };
    let occasion = Occasion {
        tenant_id,
        contact_id: &message.contact_id,
        phone_number_id: number,
        key: &message.message_id,
        waiting_since: None,
        now,
    };
    let mut firing = occasion.firing(rule_id, "consent_keyword");
    let decided = context.state.fired_for_message(rule_id, &message.message_id);
    if decided && let Some(at) = context.state.last_fired.get(rule_id) {
        firing.at = *at;
    }
    match consent_confirmation(context.contact.as_ref(), text, now) {
        Err(reason) => {
            suppress(store, firing, reason.code()).await?;
            Ok(0)
        }
        Ok(reply) => {
            let planned = Planned {
                reply: Some(reply),
                actions: Vec::new(),
            };
            // Not held to the daily cap: a confirmation is owed to whoever opts out.
            Ok(usize::from(
                fire(
                    auto,
                    store,
                    firing,
                    number,
                    &planned,
                    FireTerms {
                        welcome: false,
                        decided,
                        daily_cap: u64::MAX,
                    },
                )
                .await?,
            ))
        }
    }
}

/// What one no-reply sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NoReplySweep {
    /// Tenants with at least one enabled no-reply rule.
    pub tenants: usize,
    /// Conversations whose wait was inside a rule's window (each read once).
    pub due: usize,
    pub fired: usize,
    /// Tenants whose part failed (the next sweep tries again; firings are exactly once).
    pub failures: usize,
}

/// The no-reply sweep (scheduled every minute; `now` is the run's time): for every tenant with a
/// no-reply rule — found in one query, so a tenant without one costs nothing — the waiting index
/// up to `now` minus the shortest rule's minutes; a conversation whose no-reply wait is inside a
/// rule's window is read (contact, conversation, state, day counter: one batch), evaluated and
/// recorded as a stored message is. A firing is keyed by (rule, conversation, waiting since):
/// overlapping, repeated or crashed sweeps find the same record and never fire twice.
pub async fn sweep_no_reply<S: AutomationDeps, A: SendJobQueue>(
    auto: &Automations<A>,
    store: &S,
    now: DateTime<Utc>,
) -> Result<NoReplySweep, AutomateError> {
    let now = to_millis(now);
    let mut by_tenant: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for rule in store.no_reply_rules().await? {
        by_tenant.entry(rule.tenant_id.clone()).or_default().push(rule);
    }
    let mut report = NoReplySweep::default();
    for (tenant_id, rules) in by_tenant {
        let rules = compile(rules);
        let Some(shortest) = shortest_no_reply(&rules) else {
            continue;
        };
        report.tenants += 1;
        if let Err(e) = sweep_tenant(auto, store, &tenant_id, &rules, shortest, now, &mut report).await {
            tracing::error!(%tenant_id, error = %e, "no-reply sweep failed for a tenant");
            report.failures += 1;
        }
    }
    Ok(report)
}

async fn sweep_tenant<S: AutomationDeps, A: SendJobQueue>(
    auto: &Automations<A>,
    store: &S,
    tenant_id: &str,
    rules: &[CompiledRule],
    shortest: u32,
    now: DateTime<Utc>,
    report: &mut NoReplySweep,
) -> Result<(), AutomateError> {
    let up_to = now - chrono::Duration::minutes(i64::from(shortest));
    let mut settings = None;
    for listed in store.waiting_since_up_to(tenant_id, up_to).await? {
        let Some(since) = listed.no_reply_waiting_since() else {
            continue;
        };
        if listed.tenant_id != tenant_id || !no_reply_due(rules, since, now) {
            continue;
        }
        report.due += 1;
        if settings.is_none() {
            settings = Some(tenant_settings(auto, store, tenant_id).await?);
        }
        let daily_cap = settings.as_ref().map_or(0, |s| s.daily_cap);
        let context = store
            .automation_context(
                tenant_id,
                &listed.contact_id,
                &listed.phone_number_id,
                &now.format("%Y-%m-%d").to_string(),
            )
            .await?;
        // As read now: a reply since the index was read ended this wait.
        let Some(conversation) = context.conversation.as_ref() else {
            continue;
        };
        if conversation.no_reply_waiting_since() != Some(since) {
            continue;
        }
        let period = waiting_period_id(&conversation.conversation_id, since);
        let evaluation = evaluate(
            rules,
            &Facts {
                message_id: &period,
                text: None,
                contact: context.contact.as_ref(),
                conversation: Some(conversation),
                state: &context.state,
                new_contact: false,
                fired_today: context.fired_today,
                daily_cap,
                now,
                waiting_since: Some(since),
            },
        );
        let occasion = Occasion {
            tenant_id,
            contact_id: &conversation.contact_id,
            phone_number_id: &conversation.phone_number_id,
            key: &period,
            waiting_since: Some(since),
            now,
        };
        let fired = record_and_act(auto, store, rules, &evaluation, &context.state, &occasion, daily_cap).await?;
        report.fired += fired;
    }
    Ok(())
}

/// The firing's actions, each idempotent (a redelivery runs them again).
async fn act<S: AutomationDeps, A: SendJobQueue>(
    auto: &Automations<A>,
    store: &S,
    phone_number_id: &str,
    planned: &Planned,
    firing: &Firing,
) -> Result<(), AutomateError> {
    let tenant_id = firing.tenant_id.as_str();
    if let (Some(reply), Some(id)) = (&planned.reply, &firing.reply_message_id) {
        let language = reply
            .content
            .get("language")
            .and_then(|l| l.get("code"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let message = MessageRecord {
            phone_number_id: Some(phone_number_id.to_owned()),
            category: Some(reply.category),
            language: (reply.message_type == "template").then_some(language).flatten(),
            automation_rule: Some(firing.rule_id.clone()),
            ..MessageRecord::new(
                tenant_id,
                id.clone(),
                &firing.contact_id,
                Direction::Outbound,
                &reply.message_type,
                reply.content.clone(),
                MessageStatus::Queued,
                firing.at,
                firing.at,
            )
        };
        let queued = match store.create_message_once(&message, None, None).await {
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
            Action::AddTags { tags } => edit_tags(store, firing, tags, true).await?,
            Action::RemoveTags { tags } => edit_tags(store, firing, tags, false).await?,
            Action::Assign { user_id, round_robin } => {
                let candidates: Vec<&String> = match user_id {
                    Some(u) => vec![u],
                    None => {
                        let start = store.next_round_robin(tenant_id, &firing.rule_id).await? as usize;
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
    firing: &Firing,
    tags: &[String],
    add: bool,
) -> Result<(), AutomateError> {
    let at = firing.at;
    for _ in 0..EDIT_ATTEMPTS {
        let Some(current) = store.get_contact(&firing.tenant_id, &firing.contact_id).await? else {
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
