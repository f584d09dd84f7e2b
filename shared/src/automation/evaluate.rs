//! The fixed precedence and the guardrails, as one pure function over what the events function
//! knows when an inbound message is stored ([`Facts`]).
//!
//! Order: rules are sorted by stage (keyword, then welcome, then away) and, within a stage, by
//! priority then id. For each rule: its trigger; then, for a triggered rule, the blocks that
//! silence every rule — the contact is gone (erased), the message is a consent keyword (STOP /
//! START: only its own handling happens), the contact is restricted; then the rule's conditions
//! (unmet: the rule did not match, evaluation goes on); then the guardrails (cooldown, a human
//! replied recently, the conversation is assigned, the tenant's daily cap, the sending rules of
//! the reply). A rule that matched — fired or suppressed by a guardrail — ends the evaluation
//! unless it says `continue`.
//!
//! Loop-proofing is by construction, not by a guard here: only a stored *inbound* message is
//! ever evaluated (the events function reads the stream's message inserts of direction
//! `inbound`); our own sends, status webhooks and echoes never are one.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::matching::{Matcher, fold, language_applies};
use super::{Action, AssigneeCondition, Conditions, ContactState, ReplyMessage, Rule, Trigger, reply_message};
use crate::contact::Contact;
use crate::conversation::Conversation;
use crate::sending::{self, Category, Refusal};
use crate::whatsapp::consent_keyword;

/// A rule ready to evaluate: enabled and valid, its keywords compiled.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub rule: Rule,
    matcher: Option<Matcher>,
    hours: Option<super::OpenHours>,
}

/// The tenant's rules in evaluation order (disabled rules left out; a stored rule that no longer
/// validates — it cannot happen through the API — is left out and logged).
pub fn compile(rules: Vec<Rule>) -> Vec<CompiledRule> {
    let mut compiled: Vec<CompiledRule> = rules
        .into_iter()
        .filter(|r| r.spec.enabled)
        .filter_map(|rule| {
            let mut spec = rule.spec.clone();
            match spec.validate() {
                Ok(matcher) => {
                    let hours = match &rule.spec.trigger {
                        Trigger::Away { schedule } => Some(schedule.compile()),
                        _ => None,
                    };
                    Some(CompiledRule { rule, matcher, hours })
                }
                Err(e) => {
                    tracing::warn!(rule_id = %rule.rule_id, error = %e, "stored automation rule does not validate; skipped");
                    None
                }
            }
        })
        .collect();
    compiled.sort_by(|a, b| {
        (a.rule.spec.trigger.stage(), a.rule.spec.priority, &a.rule.rule_id).cmp(&(
            b.rule.spec.trigger.stage(),
            b.rule.spec.priority,
            &b.rule.rule_id,
        ))
    });
    compiled
}

/// What is known when an inbound message is evaluated.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The inbound message's id.
    pub message_id: &'a str,
    /// The message's text (text body, caption, button or list reply title), if it has one.
    pub text: Option<&'a str>,
    /// `None`: the contact is gone (erased since the message was stored).
    pub contact: Option<&'a Contact>,
    pub conversation: Option<&'a Conversation>,
    pub state: &'a ContactState,
    /// The contact was created by this message: the customer's first.
    pub new_contact: bool,
    /// Firings of the tenant today, and the most it may have.
    pub fired_today: u64,
    pub daily_cap: u64,
    pub now: DateTime<Utc>,
    /// `Some`: the no-reply sweep evaluates the conversation's waiting period that began then
    /// (`message_id` is the period's key); only no-reply rules can trigger. `None`: an inbound
    /// message, on which no no-reply rule ever triggers.
    pub waiting_since: Option<DateTime<Utc>>,
}

/// How long after a waiting period reaches a rule's minutes the sweep still fires it: sweeps
/// missed for up to this long are made up; a period past it (an outage, or a rule created while
/// the customer had long been waiting) is left alone rather than answered late.
pub const NO_REPLY_CATCH_UP_MINUTES: i64 = 10;

/// The smallest `minutes` of the no-reply rules (`None`: the tenant has none, and the sweep
/// passes it over).
pub fn shortest_no_reply(rules: &[CompiledRule]) -> Option<u32> {
    rules
        .iter()
        .filter_map(|r| match r.rule.spec.trigger {
            Trigger::NoReply { minutes } => Some(minutes),
            _ => None,
        })
        .min()
}

/// Whether the sweep should look at a conversation waiting since `since` at `now`: its wait is
/// inside some no-reply rule's firing window (the rule's minutes, plus the catch-up).
pub fn no_reply_due(rules: &[CompiledRule], since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    rules.iter().any(|r| match r.rule.spec.trigger {
        Trigger::NoReply { minutes } => in_no_reply_window(minutes, since, now),
        _ => false,
    })
}

fn in_no_reply_window(minutes: u32, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let due = since + Duration::minutes(i64::from(minutes));
    now >= due && now < due + Duration::minutes(NO_REPLY_CATCH_UP_MINUTES)
}

/// Why a triggered rule did not act. Codes are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ContactErased,
    ConsentKeyword,
    ContactRestricted,
    Cooldown,
    AlreadyWelcomed,
    HumanReplied,
    Assigned,
    DailyCap,
    OutsideServiceWindow,
    OptedOut,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::ContactErased => "contact_erased",
            Reason::ConsentKeyword => "consent_keyword",
            Reason::ContactRestricted => "contact_restricted",
            Reason::Cooldown => "cooldown",
            Reason::AlreadyWelcomed => "already_welcomed",
            Reason::HumanReplied => "human_replied",
            Reason::Assigned => "assigned",
            Reason::DailyCap => "daily_cap",
            Reason::OutsideServiceWindow => "outside_service_window",
            Reason::OptedOut => "opted_out",
        }
    }
}

/// What a firing does: the reply as it will be queued (if any), then the other actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub reply: Option<ReplyMessage>,
    pub actions: Vec<Action>,
}

impl Planned {
    /// The kinds of what it does, in order (for the firing log).
    pub fn kinds(&self) -> Vec<String> {
        self.reply
            .iter()
            .map(|_| "reply".to_owned())
            .chain(self.actions.iter().map(|a| a.kind().to_owned()))
            .collect()
    }

    pub fn notify(&self) -> Option<String> {
        self.actions.iter().find_map(|a| match a {
            Action::Notify { label } => Some(label.clone()),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The trigger did not match (why, in words).
    NotTriggered(&'static str),
    /// Triggered, but a condition does not hold (which one).
    ConditionsUnmet(&'static str),
    Suppressed(Reason),
    Fires(Planned),
    /// An earlier rule matched without `continue`.
    Skipped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub rule_id: String,
    pub name: String,
    pub trigger: &'static str,
    /// The keyword or pattern that matched.
    pub matched: Option<String>,
    pub outcome: Outcome,
}

impl Verdict {
    /// Whether the firing log records it (fired, or suppressed after its trigger matched).
    pub fn recorded(&self) -> bool {
        matches!(self.outcome, Outcome::Fires(_) | Outcome::Suppressed(_))
    }
}

/// Every rule's verdict, in evaluation order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    pub verdicts: Vec<Verdict>,
}

impl Evaluation {
    pub fn fired(&self) -> impl Iterator<Item = (&Verdict, &Planned)> {
        self.verdicts.iter().filter_map(|v| match &v.outcome {
            Outcome::Fires(p) => Some((v, p)),
            _ => None,
        })
    }
}

/// Whether a rule's trigger matches (and the keyword that did).
fn triggered(rule: &CompiledRule, facts: &Facts<'_>, folded: Option<&str>) -> Result<Option<String>, &'static str> {
    match (&rule.rule.spec.trigger, facts.waiting_since) {
        (Trigger::NoReply { .. }, None) => return Err("time-based: the no-reply sweep evaluates it"),
        (Trigger::NoReply { minutes }, Some(since)) => {
            let due = since + Duration::minutes(i64::from(*minutes));
            return if facts.now < due {
                Err("the customer has not waited that long")
            } else if !in_no_reply_window(*minutes, since, facts.now) {
                Err("the wait reached it before the sweep's catch-up window")
            } else if facts.state.done_for.get(&rule.rule.rule_id).map(String::as_str) == Some(facts.message_id) {
                Err("already fired for this waiting period")
            } else {
                Ok(None)
            };
        }
        (_, Some(_)) => return Err("a message trigger: the no-reply sweep evaluates only no-reply rules"),
        (_, None) => {}
    }
    match &rule.rule.spec.trigger {
        Trigger::NoReply { .. } => unreachable!("handled above"),
        Trigger::Keyword { language, .. } => {
            let Some(text) = folded else {
                return Err("the message has no text");
            };
            if !language_applies(language.as_deref(), facts.contact.and_then(|c| c.language.as_deref())) {
                return Err("the contact's language is not the rule's");
            }
            let matcher = rule.matcher.as_ref().expect("keyword rules compile a matcher");
            matcher.find(text).map(Some).ok_or("no keyword matched")
        }
        Trigger::Welcome => {
            if facts.new_contact {
                Ok(None)
            } else {
                Err("not the first message of a new contact")
            }
        }
        Trigger::Away { .. } => {
            if rule.hours.as_ref().is_some_and(|h| h.open_at(facts.now)) {
                Err("inside business hours")
            } else {
                Ok(None)
            }
        }
    }
}

fn conditions_hold(
    c: &Conditions,
    contact: &Contact,
    conversation: Option<&Conversation>,
    now: DateTime<Utc>,
) -> Result<(), &'static str> {
    if !c.tags_any.is_empty() && !c.tags_any.iter().any(|t| contact.tags.contains(t)) {
        return Err("tags_any");
    }
    if c.tags_none.iter().any(|t| contact.tags.contains(t)) {
        return Err("tags_none");
    }
    if c.attributes.iter().any(|(k, v)| contact.attributes.get(k) != Some(v)) {
        return Err("attributes");
    }
    if c.consent.is_some_and(|wanted| contact.consent.marketing != wanted) {
        return Err("consent");
    }
    if !c.conversation_status.is_empty()
        && !conversation.is_some_and(|conv| c.conversation_status.contains(&conv.effective_status(now)))
    {
        return Err("conversation_status");
    }
    let assignee = conversation.and_then(|conv| conv.assignee.as_deref());
    match (&c.assignee, assignee) {
        (None, _) | (Some(AssigneeCondition::Nobody), None) | (Some(AssigneeCondition::Anyone), Some(_)) => {}
        (Some(AssigneeCondition::User(wanted)), Some(actual)) if wanted == actual => {}
        _ => return Err("assignee"),
    }
    if let Some(open) = c.window_open
        && conversation.is_some_and(|conv| conv.window_open(now)) != open
    {
        return Err("window_open");
    }
    Ok(())
}

/// The reply as it will be queued, or why the sending rules stop it: the free-form message
/// inside the service window; the template outside it (or when there is no message).
fn plan_reply(action: &Action, contact: &Contact, now: DateTime<Utc>) -> Result<Option<ReplyMessage>, Reason> {
    let Action::Reply {
        message,
        template,
        template_category,
    } = action
    else {
        return Ok(None);
    };
    let window_open =
        sending::check_rules(contact, "text", Category::Service, now) != Err(Refusal::OutsideServiceWindow);
    let chosen = match (message, template) {
        (Some(m), _) if window_open => reply_message("message", m, None),
        (_, Some(t)) => reply_message(
            "template",
            &serde_json::json!({"type": "template", "template": t}),
            *template_category,
        ),
        (Some(_), None) => return Err(Reason::OutsideServiceWindow),
        (None, None) => return Ok(None),
    };
    // Validated when the rule was stored.
    let Ok(reply) = chosen else { return Ok(None) };
    sending::check_rules(contact, &reply.message_type, reply.category, now).map_err(|r| match r {
        Refusal::Restricted => Reason::ContactRestricted,
        Refusal::OptedOut => Reason::OptedOut,
        Refusal::OutsideServiceWindow => Reason::OutsideServiceWindow,
    })?;
    Ok(Some(reply))
}

fn guardrails(rule: &Rule, facts: &Facts<'_>, contact: &Contact, fired_so_far: u64) -> Result<Planned, Reason> {
    let spec = &rule.spec;
    let now = facts.now;
    // A redelivered stream record: the firing was decided (and recorded) the first time.
    let decided = facts.state.fired_for_message(&rule.rule_id, facts.message_id);
    if !decided {
        if spec.trigger == Trigger::Welcome {
            if facts.state.welcomed_at.is_some() {
                return Err(Reason::AlreadyWelcomed);
            }
        } else if let Some(last) = facts.state.last_fired.get(&rule.rule_id)
            && now < *last + Duration::minutes(i64::from(spec.cooldown_minutes))
        {
            return Err(Reason::Cooldown);
        }
    }
    if let Some(conversation) = facts.conversation.filter(|_| !decided) {
        if spec.suppress_after_human_reply_minutes > 0
            && let Some(last_out) = conversation.last_outbound_at
            && facts.state.last_auto_reply_at != Some(last_out)
            && now < last_out + Duration::minutes(i64::from(spec.suppress_after_human_reply_minutes))
        {
            return Err(Reason::HumanReplied);
        }
        if spec.suppress_when_assigned && conversation.assignee.is_some() {
            return Err(Reason::Assigned);
        }
    }
    if !decided && facts.fired_today + fired_so_far >= facts.daily_cap {
        return Err(Reason::DailyCap);
    }
    let mut reply = None;
    let mut actions = Vec::new();
    for action in &spec.actions {
        match action {
            Action::Reply { .. } => reply = plan_reply(action, contact, now)?,
            other => actions.push(other.clone()),
        }
    }
    Ok(Planned { reply, actions })
}

/// The verdict of every rule on one inbound message (see the module doc for the order).
pub fn evaluate(rules: &[CompiledRule], facts: &Facts<'_>) -> Evaluation {
    let folded = facts.text.map(fold);
    let block = if facts.contact.is_none() {
        Some(Reason::ContactErased)
    } else if facts.text.and_then(consent_keyword).is_some() {
        Some(Reason::ConsentKeyword)
    } else if facts.contact.is_some_and(|c| c.restricted) {
        Some(Reason::ContactRestricted)
    } else {
        None
    };
    let mut verdicts = Vec::with_capacity(rules.len());
    let mut done = false;
    let mut fired = 0;
    for rule in rules {
        let spec = &rule.rule.spec;
        let mut verdict = Verdict {
            rule_id: rule.rule.rule_id.clone(),
            name: spec.name.clone(),
            trigger: spec.trigger.kind(),
            matched: None,
            outcome: Outcome::Skipped,
        };
        if done {
            verdicts.push(verdict);
            continue;
        }
        verdict.outcome = match triggered(rule, facts, folded.as_deref()) {
            Err(why) => Outcome::NotTriggered(why),
            Ok(matched) => {
                verdict.matched = matched;
                match (block, facts.contact) {
                    (Some(reason), _) => {
                        done = true;
                        Outcome::Suppressed(reason)
                    }
                    (None, Some(contact)) => {
                        match conditions_hold(&spec.conditions, contact, facts.conversation, facts.now) {
                            Err(which) => Outcome::ConditionsUnmet(which),
                            Ok(()) => {
                                done = !spec.continue_after;
                                match guardrails(&rule.rule, facts, contact, fired) {
                                    Ok(planned) => {
                                        fired += 1;
                                        Outcome::Fires(planned)
                                    }
                                    Err(reason) => Outcome::Suppressed(reason),
                                }
                            }
                        }
                    }
                    (None, None) => unreachable!("no contact is a block"),
                }
            }
        };
        verdicts.push(verdict);
    }
    Evaluation { verdicts }
}

/// The confirmation of a consent keyword as it will be queued, or why it cannot go out: a
/// free-form `service` text (the customer's keyword just opened the window; an opt-out stops
/// marketing, never the service message confirming it); nothing to an erased or restricted
/// contact.
pub fn consent_confirmation(contact: Option<&Contact>, text: &str, now: DateTime<Utc>) -> Result<ReplyMessage, Reason> {
    let contact = contact.ok_or(Reason::ContactErased)?;
    sending::check_rules(contact, "text", Category::Service, now).map_err(|r| match r {
        Refusal::Restricted => Reason::ContactRestricted,
        Refusal::OptedOut => Reason::OptedOut,
        Refusal::OutsideServiceWindow => Reason::OutsideServiceWindow,
    })?;
    Ok(ReplyMessage {
        message_type: "text".into(),
        content: serde_json::json!({ "body": text }),
        category: Category::Service,
    })
}

/// The text of an inbound message that keywords are matched against: a text's body, a media
/// caption, a button's text or an interactive reply's title.
pub fn text_of(message_type: &str, content: &serde_json::Value) -> Option<String> {
    let s = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_str).map(str::to_owned);
    match message_type {
        "text" => s(content.get("body")),
        "button" => s(content.get("text")),
        "interactive" => s(content
            .get("button_reply")
            .or_else(|| content.get("list_reply"))
            .and_then(|r| r.get("title"))),
        "image" | "video" | "document" => s(content.get("caption")),
        _ => None,
    }
}

/// Whether any rule could trigger on a message, judged without the contact's state (keywords
/// ignoring the language condition; away by the clock; any welcome rule). When not, the
/// evaluation needs no read at all: the common case costs no request.
pub fn may_trigger(rules: &[CompiledRule], text: Option<&str>, now: DateTime<Utc>) -> bool {
    let folded = text.map(fold);
    rules.iter().any(|rule| match &rule.rule.spec.trigger {
        Trigger::Keyword { .. } => folded
            .as_deref()
            .is_some_and(|t| rule.matcher.as_ref().is_some_and(|m| m.find(t).is_some())),
        Trigger::Welcome => true,
        Trigger::Away { .. } => !rule.hours.as_ref().is_some_and(|h| h.open_at(now)),
        // Never on a message: the sweep evaluates it.
        Trigger::NoReply { .. } => false,
    })
}
