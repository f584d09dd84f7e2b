//! Automated replies (docs/automations.md): a tenant's rules — a trigger, conditions, actions and
//! an explicit priority — and everything about them that is a plain rule over plain data:
//! validation ([`RuleSpec::validate`]), JSON merge-patch edits ([`merge_patch`]), matching
//! ([`matching`]), business hours with holidays ([`Schedule`]) and the fixed precedence with its
//! guardrails ([`evaluate`]). No I/O here; the events function runs the evaluation on each stored
//! inbound message, the store keeps rules, per-contact state and the firing log.

pub mod evaluate;
pub mod matching;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contact::MarketingConsent;
use crate::conversation::ConversationStatus;
use crate::reports::hours::BusinessHours;
use crate::sending::{self, Category};
use matching::{MatchMode, Matcher};

pub use evaluate::{Evaluation, Facts, Outcome, Planned, Reason, evaluate};

/// Most rules per tenant (each is evaluated on every inbound message, from memory).
pub const MAX_RULES_PER_TENANT: usize = 100;
/// Longest cooldown and suppression windows (minutes): a week.
pub const MAX_MINUTES: u32 = 7 * 24 * 60;
/// Default per-contact cooldown of a rule (minutes).
pub const DEFAULT_COOLDOWN_MINUTES: u32 = 60;
/// Default window after a human reply in which rules stay quiet (minutes).
pub const DEFAULT_HUMAN_REPLY_MINUTES: u32 = 30;
/// Default most firings per tenant and UTC day.
pub const DEFAULT_DAILY_CAP: u64 = 1_000;
/// Most holidays of one away rule.
pub const MAX_HOLIDAYS: usize = 366;
/// Most actions of one rule.
pub const MAX_ACTIONS: usize = 10;
const MAX_NAME_CHARS: usize = 100;
const MAX_TAGS: usize = 20;
const MAX_LABEL_CHARS: usize = 100;

/// What starts a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// An inbound message whose text matches one of the keywords.
    Keyword {
        #[serde(rename = "match")]
        mode: MatchMode,
        keywords: Vec<String>,
        /// Only for contacts in this language (Meta's code; `es` covers `es_MX`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// The first message of a new contact (a contact the customer's own message created).
    Welcome,
    /// A message outside business hours.
    Away {
        #[serde(flatten)]
        schedule: Schedule,
    },
    /// Time-based: the customer has waited this many minutes with no reply of ours (never on a
    /// message; the no-reply sweep evaluates it, once per waiting period).
    NoReply { minutes: u32 },
}

impl Trigger {
    /// The stage of the fixed precedence the trigger belongs to (lower runs first).
    pub fn stage(&self) -> u8 {
        match self {
            Trigger::Keyword { .. } => 0,
            Trigger::Welcome => 1,
            Trigger::Away { .. } => 2,
            Trigger::NoReply { .. } => 3,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Keyword { .. } => "keyword",
            Trigger::Welcome => "welcome",
            Trigger::Away { .. } => "away",
            Trigger::NoReply { .. } => "no_reply",
        }
    }
}

/// Weekly opening hours in an IANA time zone, and the dates (local) the business is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub time_zone: String,
    pub hours: BusinessHours,
    #[serde(default)]
    pub holidays: Vec<NaiveDate>,
}

impl Schedule {
    pub fn validate(&self) -> Result<(), RuleError> {
        self.time_zone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| RuleError::invalid("trigger.time_zone", "must be an IANA time zone, e.g. Europe/Berlin"))?;
        self.hours
            .validate()
            .map_err(|m| RuleError::invalid("trigger.hours", m.replace("business_hours", "hours")))?;
        if self.holidays.len() > MAX_HOLIDAYS {
            return Err(RuleError::invalid(
                "trigger.holidays",
                format!("at most {MAX_HOLIDAYS} dates"),
            ));
        }
        Ok(())
    }

    /// Whether the business is open at `at`: inside the weekly hours on the local clock, and
    /// the local date is not a holiday.
    pub fn open_at(&self, at: DateTime<Utc>) -> bool {
        self.compile().open_at(at)
    }

    /// The schedule parsed once (time zone, each weekday's window), as rules are evaluated.
    pub fn compile(&self) -> OpenHours {
        use chrono::Weekday;
        const WEEK: [Weekday; 7] = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ];
        OpenHours {
            tz: self.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC),
            windows: WEEK.map(|d| self.hours.window(d)),
            holidays: self.holidays.clone(),
        }
    }
}

/// A [`Schedule`] ready to answer "open now?" without parsing anything.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenHours {
    tz: chrono_tz::Tz,
    /// Monday first.
    windows: [Option<(chrono::NaiveTime, chrono::NaiveTime)>; 7],
    holidays: Vec<NaiveDate>,
}

impl OpenHours {
    pub fn open_at(&self, at: DateTime<Utc>) -> bool {
        use chrono::Datelike;
        let local = at.with_timezone(&self.tz);
        let window = self.windows[local.weekday().num_days_from_monday() as usize];
        window.is_some_and(|(open, close)| (open..close).contains(&local.time()))
            && !self.holidays.contains(&local.date_naive())
    }
}

/// Who the conversation must be assigned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssigneeCondition {
    Nobody,
    Anyone,
    #[serde(untagged)]
    User(String),
}

/// What must hold for a triggered rule to act. Every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// The contact has at least one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_any: Vec<String>,
    /// The contact has none of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_none: Vec<String>,
    /// The contact's attributes hold these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The contact's marketing consent is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<MarketingConsent>,
    /// The conversation's status (as the inbox shows it) is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conversation_status: Vec<ConversationStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<AssigneeCondition>,
    /// The customer service window is open (`true`) or closed (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_open: Option<bool>,
}

/// An outgoing message as a rule holds it: Meta's type and the type's object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyMessage {
    #[serde(rename = "type")]
    pub message_type: String,
    pub content: Value,
    pub category: Category,
}

/// What a rule does when it fires, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// One message through the sender (every sending rule applies): `message` inside the
    /// service window; outside it `template`, if given (a free-form message cannot go out).
    Reply {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<Value>,
        /// The template's category (decides the consent rule); marketing unless stated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template_category: Option<Category>,
    },
    AddTags {
        tags: Vec<String>,
    },
    RemoveTags {
        tags: Vec<String>,
    },
    /// Assign the conversation to a user, or to the next active user of `round_robin`.
    Assign {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        round_robin: Vec<String>,
    },
    SetStatus {
        status: ConversationStatus,
    },
    /// An `automation.fired` event carries this label (the firing's event is always recorded;
    /// this names it for the tenant's own systems).
    Notify {
        label: String,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Reply { .. } => "reply",
            Action::AddTags { .. } => "add_tags",
            Action::RemoveTags { .. } => "remove_tags",
            Action::Assign { .. } => "assign",
            Action::SetStatus { .. } => "set_status",
            Action::Notify { .. } => "notify",
        }
    }
}

/// The writable part of a rule: what `POST` takes and `PATCH` merges into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Lower runs first within its trigger's stage.
    #[serde(default)]
    pub priority: i32,
    pub trigger: Trigger,
    #[serde(default)]
    pub conditions: Conditions,
    pub actions: Vec<Action>,
    /// Evaluation goes on to the next rule after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_after: bool,
    /// A contact gets this rule at most once per this many minutes (welcome: once ever).
    #[serde(default = "default_cooldown")]
    pub cooldown_minutes: u32,
    /// Quiet while a human replied in the conversation within this many minutes (0: never).
    #[serde(default = "default_human_reply")]
    pub suppress_after_human_reply_minutes: u32,
    /// Quiet while the conversation is assigned to someone.
    #[serde(default = "yes")]
    pub suppress_when_assigned: bool,
}

fn yes() -> bool {
    true
}
fn default_cooldown() -> u32 {
    DEFAULT_COOLDOWN_MINUTES
}
fn default_human_reply() -> u32 {
    DEFAULT_HUMAN_REPLY_MINUTES
}

/// A rule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub tenant_id: String,
    pub rule_id: String,
    #[serde(flatten)]
    pub spec: RuleSpec,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Rule {
    /// The API's view.
    pub fn view(&self) -> Value {
        let mut v = serde_json::to_value(&self.spec).expect("rules serialize");
        v["id"] = Value::String(self.rule_id.clone());
        v["version"] = self.version.into();
        v["created_at"] = serde_json::to_value(self.created_at).expect("times serialize");
        v["updated_at"] = serde_json::to_value(self.updated_at).expect("times serialize");
        v
    }
}

/// A validation failure: which field, and why. `code` is part of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

impl RuleError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        RuleError {
            code: "invalid_automation",
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Normalizes the tags in place (as contacts hold them).
fn check_tags(field: &str, tags: &mut [String]) -> Result<(), RuleError> {
    if tags.len() > MAX_TAGS {
        return Err(RuleError::invalid(field, format!("at most {MAX_TAGS} tags")));
    }
    for tag in tags.iter_mut() {
        *tag = crate::contact::normalize_tag(tag)
            .ok_or_else(|| RuleError::invalid(field, format!("invalid tag {tag:?}")))?;
    }
    Ok(())
}

/// A reply's message object (`{"type": "text", "text": {...}}`) as the sender takes it, checked
/// as `POST /v1/messages` checks it.
pub fn reply_message(field: &str, message: &Value, category: Option<Category>) -> Result<ReplyMessage, RuleError> {
    let message_type = message
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| RuleError::invalid(field, "needs a type"))?;
    if matches!(message_type, "reaction") {
        return Err(RuleError::invalid(field, "a reaction cannot be an automated reply"));
    }
    let content = message
        .get(message_type)
        .cloned()
        .ok_or_else(|| RuleError::invalid(field, format!("needs the {message_type} object")))?;
    sending::validate_content(message_type, &content).map_err(|e| RuleError::invalid(field, e.message))?;
    Ok(ReplyMessage {
        message_type: message_type.to_owned(),
        content,
        category: category.unwrap_or_else(|| Category::default_for(message_type)),
    })
}

impl RuleSpec {
    /// Every rule a rule must follow (tags normalized on the way); the matcher it compiles to.
    pub fn validate(&mut self) -> Result<Option<Matcher>, RuleError> {
        let name_chars = self.name.trim().chars().count();
        if name_chars == 0 || name_chars > MAX_NAME_CHARS {
            return Err(RuleError::invalid("name", format!("1 to {MAX_NAME_CHARS} characters")));
        }
        for (field, minutes) in [
            ("cooldown_minutes", self.cooldown_minutes),
            (
                "suppress_after_human_reply_minutes",
                self.suppress_after_human_reply_minutes,
            ),
        ] {
            if minutes > MAX_MINUTES {
                return Err(RuleError::invalid(field, format!("0 to {MAX_MINUTES}")));
            }
        }
        let matcher = match &self.trigger {
            Trigger::Keyword {
                mode,
                keywords,
                language,
            } => {
                if let Some(l) = language
                    && (l.is_empty()
                        || l.len() > 15
                        || !l.chars().all(|c| c.is_ascii_alphabetic() || c == '_' || c == '-'))
                {
                    return Err(RuleError::invalid(
                        "trigger.language",
                        "a language code such as es or pt_BR",
                    ));
                }
                Some(Matcher::new(*mode, keywords).map_err(|e| RuleError::invalid("trigger.keywords", e.to_string()))?)
            }
            Trigger::Welcome => None,
            Trigger::Away { schedule } => {
                schedule.validate()?;
                None
            }
            Trigger::NoReply { minutes } => {
                if !(1..=MAX_MINUTES).contains(minutes) {
                    return Err(RuleError::invalid("trigger.minutes", format!("1 to {MAX_MINUTES}")));
                }
                None
            }
        };
        let c = &mut self.conditions;
        check_tags("conditions.tags_any", &mut c.tags_any)?;
        check_tags("conditions.tags_none", &mut c.tags_none)?;
        if c.attributes.len() > MAX_TAGS {
            return Err(RuleError::invalid(
                "conditions.attributes",
                format!("at most {MAX_TAGS}"),
            ));
        }
        if self.actions.is_empty() || self.actions.len() > MAX_ACTIONS {
            return Err(RuleError::invalid("actions", format!("1 to {MAX_ACTIONS} actions")));
        }
        let mut replies = 0;
        for (i, action) in self.actions.iter_mut().enumerate() {
            let field = format!("actions[{i}]");
            match action {
                Action::Reply {
                    message,
                    template,
                    template_category,
                } => {
                    replies += 1;
                    if message.is_none() && template.is_none() {
                        return Err(RuleError::invalid(
                            &field,
                            "a reply needs a message, a template or both",
                        ));
                    }
                    if let Some(m) = message {
                        let reply = reply_message(&format!("{field}.message"), m, None)?;
                        if reply.message_type == "template" {
                            return Err(RuleError::invalid(
                                &format!("{field}.message"),
                                "put a template reply in template (it is what goes out outside the window)",
                            ));
                        }
                    }
                    if let Some(t) = template {
                        let wrapped = serde_json::json!({"type": "template", "template": t});
                        reply_message(&format!("{field}.template"), &wrapped, *template_category)?;
                    }
                }
                Action::AddTags { tags } | Action::RemoveTags { tags } => {
                    if tags.is_empty() {
                        return Err(RuleError::invalid(&field, "tags must not be empty"));
                    }
                    check_tags(&format!("{field}.tags"), tags)?
                }
                Action::Assign { user_id, round_robin } => match (user_id, round_robin.is_empty()) {
                    (Some(u), true) if crate::ids::is_valid_id(u) => {}
                    (None, false)
                        if round_robin.len() <= MAX_TAGS && round_robin.iter().all(|u| crate::ids::is_valid_id(u)) => {}
                    _ => {
                        return Err(RuleError::invalid(
                            &field,
                            format!("assign takes user_id, or round_robin (1 to {MAX_TAGS} user ids)"),
                        ));
                    }
                },
                Action::SetStatus { status } => {
                    if *status == ConversationStatus::Snoozed {
                        return Err(RuleError::invalid(
                            &field,
                            "a rule cannot snooze (it has no wake-up time)",
                        ));
                    }
                }
                Action::Notify { label } => {
                    let n = label.chars().count();
                    if n == 0 || n > MAX_LABEL_CHARS {
                        return Err(RuleError::invalid(
                            &field,
                            format!("label: 1 to {MAX_LABEL_CHARS} characters"),
                        ));
                    }
                }
            }
        }
        if replies > 1 {
            return Err(RuleError::invalid("actions", "at most one reply per rule"));
        }
        Ok(matcher)
    }
}

/// RFC 7396 JSON merge-patch of `patch` into `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let object = target.as_object_mut().expect("made an object");
    for (key, value) in members {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A `PATCH /v1/automations/{id}` body applied to `current`'s spec: merged, parsed and
/// validated as a whole (all or nothing).
pub fn apply_patch(current: &RuleSpec, patch: &Value) -> Result<RuleSpec, RuleError> {
    if !patch.is_object() {
        return Err(RuleError::invalid("body", "a merge-patch must be a JSON object"));
    }
    let mut merged = serde_json::to_value(current).expect("rules serialize");
    merge_patch(&mut merged, patch);
    let mut spec: RuleSpec = serde_json::from_value(merged).map_err(|e| RuleError::invalid("body", e.to_string()))?;
    spec.validate()?;
    Ok(spec)
}

/// A contact's automation state (one item in the contact's partition, erased with it): when
/// each rule last fired for them and for which message, when our last automated reply was
/// created (to tell it apart from a human's in the conversation), and their welcome.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContactState {
    #[serde(default)]
    pub last_fired: BTreeMap<String, DateTime<Utc>>,
    /// Rule → the inbound message of its last firing.
    #[serde(default)]
    pub fired_for: BTreeMap<String, String>,
    /// Rule → the waiting period whose no-reply firing has completed its actions (the sweep
    /// passes it over; a period fired but not done is completed by the next sweep).
    #[serde(default)]
    pub done_for: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_auto_reply_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcomed_at: Option<DateTime<Utc>>,
}

impl ContactState {
    /// Whether `rule_id` already fired for `message_id`: the stream record is a redelivery,
    /// and the decision then made is completed rather than taken again.
    pub fn fired_for_message(&self, rule_id: &str, message_id: &str) -> bool {
        self.fired_for.get(rule_id).is_some_and(|m| m == message_id)
    }

    /// The state after `firing` (what the store's transaction writes).
    pub fn after(&mut self, firing: &Firing) {
        self.last_fired.insert(firing.rule_id.clone(), firing.at);
        self.fired_for.insert(firing.rule_id.clone(), firing.message_id.clone());
        if firing.reply_message_id.is_some() {
            self.last_auto_reply_at = Some(firing.at);
        }
        if firing.trigger == "welcome" {
            self.welcomed_at.get_or_insert(firing.at);
        }
    }
}

/// Longest consent confirmation text (characters).
pub const MAX_CONFIRMATION_CHARS: usize = 1_024;

/// A tenant's automation settings (`GET/PUT /v1/settings/automations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutomationSettings {
    /// Most firings per UTC day across the tenant's rules.
    #[serde(default = "default_cap")]
    pub daily_cap: u64,
    /// The text that answers a customer's `STOP` / `UNSUBSCRIBE` (none: no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_confirmation: Option<String>,
    /// The text that answers a customer's `START` (none: no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in_confirmation: Option<String>,
}

fn default_cap() -> u64 {
    DEFAULT_DAILY_CAP
}

impl Default for AutomationSettings {
    fn default() -> Self {
        AutomationSettings {
            daily_cap: DEFAULT_DAILY_CAP,
            opt_out_confirmation: None,
            opt_in_confirmation: None,
        }
    }
}

impl AutomationSettings {
    /// The confirmation texts: 1 to [`MAX_CONFIRMATION_CHARS`] characters, not blank.
    pub fn validate(&self) -> Result<(), RuleError> {
        for (field, text) in [
            ("opt_out_confirmation", &self.opt_out_confirmation),
            ("opt_in_confirmation", &self.opt_in_confirmation),
        ] {
            if let Some(t) = text
                && (t.trim().is_empty() || t.chars().count() > MAX_CONFIRMATION_CHARS)
            {
                return Err(RuleError {
                    code: "invalid_settings",
                    field: field.to_owned(),
                    message: format!("1 to {MAX_CONFIRMATION_CHARS} characters, not blank"),
                });
            }
        }
        Ok(())
    }

    /// The confirmation of a consent keyword, if the tenant set one.
    pub fn confirmation(&self, keyword: crate::whatsapp::ConsentKeyword) -> Option<&str> {
        match keyword {
            crate::whatsapp::ConsentKeyword::OptOut => self.opt_out_confirmation.as_deref(),
            crate::whatsapp::ConsentKeyword::OptIn => self.opt_in_confirmation.as_deref(),
        }
    }
}

/// One firing or suppression of a rule for an inbound message, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    pub tenant_id: String,
    pub rule_id: String,
    /// The inbound message that triggered it.
    pub message_id: String,
    pub contact_id: String,
    pub conversation_id: String,
    pub trigger: String,
    /// `fired` or `suppressed`.
    pub outcome: String,
    /// Why it was suppressed (a [`Reason`] code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The actions taken (kinds), in order.
    #[serde(default)]
    pub actions: Vec<String>,
    /// The automated reply's message id, if the rule replied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// A no-reply firing's waiting period: since when the customer waited (its `message_id` is
    /// then the period's key, [`waiting_period_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

/// The key of a waiting period of a conversation (waiting `since`): what a no-reply firing is
/// recorded under in place of an inbound message id, so every sweep that finds the same period —
/// overlapping, repeated or after a crash — finds the same firing. Unique per conversation, so
/// two customers who wrote in the same second never share a key in the rule's firing index.
pub fn waiting_period_id(conversation_id: &str, since: DateTime<Utc>) -> String {
    format!("wait-{conversation_id}-{}", since.timestamp_millis())
}

/// The pseudo-rule ids under which consent confirmations are recorded as firings.
pub const OPT_OUT_CONFIRMATION: &str = "opt_out_confirmation";
pub const OPT_IN_CONFIRMATION: &str = "opt_in_confirmation";

/// The id of the automated reply `rule_id` makes to `message_id`: derived, so a redelivered
/// stream record finds the message it already made instead of making a second one.
pub fn reply_message_id(tenant_id: &str, rule_id: &str, message_id: &str, at: DateTime<Utc>) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{tenant_id}\n{rule_id}\n{message_id}").as_bytes());
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let ms = at.timestamp_millis().clamp(0, (1i64 << 48) - 1) as u64;
    ulid::Ulid::from_parts(ms, u128::from_be_bytes(random))
        .to_string()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
