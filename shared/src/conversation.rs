//! Conversations (the agent inbox): one per (contact, WhatsApp number) at a time, opened or
//! reopened by the customer's messages, answered, assigned, snoozed and resolved by the team.
//! Pure rules, no I/O: the state machine, the service window, waiting time and the per-reader
//! unread arithmetic. The DynamoDB adapter writes the same changes as update expressions (folded
//! into the message's own transaction); the in-memory store applies these functions.
//!
//! Sequence numbers: every inbound message of a conversation takes the next number of the
//! conversation's `last_seq` (1, 2, …; outbound messages take none). A reader's read mark is
//! such a number, so `unread = last_seq - mark` exactly, without a cap.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::message::{Direction, MessageRecord};

/// Meta's customer service window: free-form messages are allowed this long after the
/// customer's last message.
pub const SERVICE_WINDOW_HOURS: i64 = 24;

/// Longest preview of a message kept on its conversation (characters).
pub const PREVIEW_CHARS: usize = 100;

/// Longest an agent may snooze a conversation.
pub const MAX_SNOOZE_DAYS: i64 = 365;

/// Longest internal note (characters), as long as a WhatsApp text.
pub const MAX_NOTE_CHARS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Needs the team's attention.
    Open,
    /// Waiting on the customer (or opened by our own message).
    Pending,
    /// Put aside until `snooze_until`; wakes up `open` then, or when the customer writes.
    Snoozed,
    /// Done; the customer's next message reopens it.
    Resolved,
}

impl ConversationStatus {
    pub const ALL: [ConversationStatus; 4] = [
        ConversationStatus::Open,
        ConversationStatus::Pending,
        ConversationStatus::Snoozed,
        ConversationStatus::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Open => "open",
            ConversationStatus::Pending => "pending",
            ConversationStatus::Snoozed => "snoozed",
            ConversationStatus::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for ConversationStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConversationStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}: expected open, pending, snoozed or resolved"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

/// What the inbox shows of a conversation's last message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub message_id: String,
    pub direction: Direction,
    #[serde(rename = "type")]
    pub message_type: String,
    /// The first [`PREVIEW_CHARS`] characters of its text, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub tenant_id: String,
    pub conversation_id: String,
    pub contact_id: String,
    /// The WhatsApp number (phone number id) the conversation is held on.
    pub phone_number_id: String,
    pub status: ConversationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snooze_until: Option<DateTime<Utc>>,
    pub last_activity_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_inbound_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outbound_at: Option<DateTime<Utc>>,
    /// The oldest inbound message not answered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<DateTime<Utc>>,
    /// The oldest inbound message no message of ours answered, automated replies included (the
    /// no-reply automation's waiting period; `waiting_since` ignores automated replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered_since: Option<DateTime<Utc>>,
    /// End of the customer service window (24 h after their last message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
    /// Sequence number of the newest inbound message (0: none yet).
    #[serde(default)]
    pub last_seq: u64,
    /// Messages of both directions recorded in the conversation.
    #[serde(default)]
    pub message_count: u64,
    /// Read marks: reader (user id, or key id for keys without a user) → inbound sequence
    /// number read up to.
    #[serde(default)]
    pub reads: BTreeMap<String, u64>,
    pub opened_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Start of the current response-time measurement (reports): the customer's first message
    /// since the conversation was created or resolved, or the team's reopen. Resolving ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_from: Option<DateTime<Utc>>,
    /// The measurement our latest message answered (a copy of `measured_from` made by each of
    /// our messages): when it moves to a new start, that message was the first response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responded_from: Option<DateTime<Utc>>,
    /// The user who sent our latest message (per-user reports; `None`: a key without a user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outbound_by: Option<String>,
    /// The user who resolved the conversation, while it is resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The id of the conversation of a contact on a number: derived, so the webhook and the API
/// address it without a lookup.
pub fn conversation_id(contact_id: &str, phone_number_id: &str) -> String {
    format!("{contact_id}-{phone_number_id}")
}

/// The contact id and phone number id of a conversation id; `None` for anything else.
pub fn parse_conversation_id(id: &str) -> Option<(&str, &str)> {
    let (contact, number) = id.split_once('-')?;
    let number_ok = (1..=32).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit());
    (crate::ids::is_valid_id(contact) && number_ok).then_some((contact, number))
}

/// The short preview of a message: its type and the start of its text (text body, caption,
/// interactive reply title), never more than [`PREVIEW_CHARS`] characters.
pub fn preview_of(message: &MessageRecord) -> Preview {
    let c = &message.content;
    let text = [
        c.get("body"),
        c.get("caption"),
        c.pointer("/button_reply/title"),
        c.pointer("/list_reply/title"),
        c.get("text"),
        c.get("emoji"),
    ]
    .into_iter()
    .flatten()
    .find_map(|v| v.as_str())
    .map(|t| t.chars().take(PREVIEW_CHARS).collect::<String>());
    Preview {
        message_id: message.message_id.clone(),
        direction: message.direction,
        message_type: message.message_type.clone(),
        text,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    #[error("snooze_until is required to snooze, and must be in the future (at most {MAX_SNOOZE_DAYS} days)")]
    SnoozeUntil,
    #[error("snooze_until is only for status snoozed")]
    SnoozeWithoutSnoozing,
    #[error("up_to must be between 0 and the conversation's last_seq ({last_seq})")]
    ReadBeyondLast { last_seq: u64 },
}

impl Conversation {
    /// A conversation opened at `at` (before any message is applied).
    pub fn new(tenant_id: &str, contact_id: &str, phone_number_id: &str, at: DateTime<Utc>) -> Self {
        Conversation {
            tenant_id: tenant_id.to_owned(),
            conversation_id: conversation_id(contact_id, phone_number_id),
            contact_id: contact_id.to_owned(),
            phone_number_id: phone_number_id.to_owned(),
            status: ConversationStatus::Open,
            assignee: None,
            priority: Priority::Normal,
            snooze_until: None,
            last_activity_at: at,
            last_inbound_at: None,
            last_outbound_at: None,
            waiting_since: None,
            unanswered_since: None,
            window_expires_at: None,
            preview: None,
            last_seq: 0,
            message_count: 0,
            reads: BTreeMap::new(),
            opened_at: at,
            resolved_at: None,
            measured_from: None,
            responded_from: None,
            last_outbound_by: None,
            resolved_by: None,
            created_at: at,
            updated_at: at,
        }
    }

    /// A customer's message: the next sequence number, reopened (from resolved or snoozed),
    /// waiting since its oldest unanswered message. With `newest` (the contact's newest
    /// message) the clocks, window and preview move too; a late older message only counts.
    pub fn on_inbound(&mut self, message: &MessageRecord, newest: bool) {
        self.last_seq += 1;
        self.message_count += 1;
        self.status = ConversationStatus::Open;
        self.snooze_until = None;
        self.resolved_at = None;
        self.resolved_by = None;
        self.waiting_since.get_or_insert(message.timestamp);
        self.unanswered_since.get_or_insert(message.timestamp);
        self.measured_from.get_or_insert(message.timestamp);
        self.updated_at = message.created_at;
        if newest {
            self.last_activity_at = message.timestamp;
            self.last_inbound_at = Some(message.timestamp);
            self.window_expires_at = Some(window_end(message.timestamp));
            self.preview = Some(preview_of(message));
        }
    }

    /// Our message (queued by the API): answers whoever waited; the status stays as the team
    /// set it (a conversation our message opens is `pending`: nobody needs to act).
    pub fn on_outbound(&mut self, message: &MessageRecord, created: bool) {
        if created {
            self.status = ConversationStatus::Pending;
        }
        self.unanswered_since = None;
        if message.automation_rule.is_some() {
            // An automated reply answers nobody: the customer still waits for the team.
            self.message_count += 1;
            self.last_activity_at = message.timestamp;
            self.last_outbound_at = Some(message.timestamp);
            self.preview = Some(preview_of(message));
            self.updated_at = message.created_at;
            return;
        }
        self.message_count += 1;
        self.waiting_since = None;
        self.responded_from = self.measured_from;
        self.last_outbound_by = message.sent_by.clone();
        self.last_activity_at = message.timestamp;
        self.last_outbound_at = Some(message.timestamp);
        self.preview = Some(preview_of(message));
        self.updated_at = message.created_at;
    }

    /// The status as the inbox shows it: a snooze that has run out is `open`, even before the
    /// sweep writes it.
    pub fn effective_status(&self, now: DateTime<Utc>) -> ConversationStatus {
        match (self.status, self.snooze_until) {
            (ConversationStatus::Snoozed, Some(until)) if until <= now => ConversationStatus::Open,
            (status, _) => status,
        }
    }

    /// Since when the customer has waited for any reply of ours (automated ones included): the
    /// no-reply automation's waiting period. A conversation stored before `unanswered_since`
    /// existed counts from `waiting_since` unless an automated reply came after it.
    pub fn no_reply_waiting_since(&self) -> Option<DateTime<Utc>> {
        self.unanswered_since.or_else(|| {
            self.waiting_since
                .filter(|since| self.last_outbound_at.is_none_or(|out| out < *since))
        })
    }

    /// Whether free-form messages may be sent now (the customer wrote within 24 h).
    pub fn window_open(&self, now: DateTime<Utc>) -> bool {
        self.window_expires_at.is_some_and(|end| end > now)
    }

    /// Inbound messages after `reader`'s read mark.
    pub fn unread(&self, reader: &str) -> u64 {
        self.last_seq - self.read_mark(reader).min(self.last_seq)
    }

    pub fn read_mark(&self, reader: &str) -> u64 {
        self.reads.get(reader).copied().unwrap_or(0)
    }

    /// Moves `reader`'s mark forward to `up_to` (never back); the mark it holds after.
    pub fn mark_read(&mut self, reader: &str, up_to: u64) -> Result<u64, ConversationError> {
        check_read(up_to, self.last_seq)?;
        let mark = self.reads.entry(reader.to_owned()).or_insert(0);
        *mark = (*mark).max(up_to);
        Ok(*mark)
    }

    /// Applies a status change checked by [`check_status_change`].
    pub fn set_status(&mut self, change: &StatusChange) {
        if self.status == ConversationStatus::Resolved && change.status != ConversationStatus::Resolved {
            self.opened_at = change.at;
        }
        self.status = change.status;
        self.snooze_until = change.snooze_until;
        self.resolved_at = (change.status == ConversationStatus::Resolved).then_some(change.at);
        self.resolved_by = (change.status == ConversationStatus::Resolved)
            .then(|| change.by.clone())
            .flatten();
        if change.status == ConversationStatus::Resolved {
            self.measured_from = None;
        } else {
            self.measured_from.get_or_insert(change.at);
        }
        if change.clears_waiting() {
            self.waiting_since = None;
            self.unanswered_since = None;
        }
        self.updated_at = change.at;
    }
}

/// The end of the service window a customer message at `at` opens.
pub fn window_end(at: DateTime<Utc>) -> DateTime<Utc> {
    at + Duration::hours(SERVICE_WINDOW_HOURS)
}

/// `up_to` must name an inbound message the conversation has.
pub fn check_read(up_to: u64, last_seq: u64) -> Result<(), ConversationError> {
    if up_to > last_seq {
        return Err(ConversationError::ReadBeyondLast { last_seq });
    }
    Ok(())
}

/// A status change as requested and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub status: ConversationStatus,
    pub snooze_until: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
    /// The user who made the change (`None`: a key without a user, or the platform).
    pub by: Option<String>,
}

impl StatusChange {
    /// Resolving ends the wait: nobody is expected to answer a resolved conversation.
    pub fn clears_waiting(&self) -> bool {
        self.status == ConversationStatus::Resolved
    }
}

/// Checks a requested status: snoozing needs a time in the future (within
/// [`MAX_SNOOZE_DAYS`]); the other statuses take none.
pub fn check_status_change(
    status: ConversationStatus,
    snooze_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<StatusChange, ConversationError> {
    match (status, snooze_until) {
        (ConversationStatus::Snoozed, Some(until)) if until > now && until <= now + Duration::days(MAX_SNOOZE_DAYS) => {
            Ok(StatusChange {
                status,
                snooze_until: Some(until),
                at: now,
                by: None,
            })
        }
        (ConversationStatus::Snoozed, _) => Err(ConversationError::SnoozeUntil),
        (_, Some(_)) => Err(ConversationError::SnoozeWithoutSnoozing),
        (_, None) => Ok(StatusChange {
            status,
            snooze_until: None,
            at: now,
            by: None,
        }),
    }
}

/// Whether the sweep should resolve a conversation idle since `last_activity_at` under a
/// tenant's auto-resolve period (`None`: never). Only open and pending conversations nobody
/// waits on are resolved: an unanswered customer is never closed behind the team's back, and
/// a snoozed one waits for the agent who snoozed it.
pub fn auto_resolves(conversation: &Conversation, idle_hours: Option<u32>, now: DateTime<Utc>) -> bool {
    let Some(hours) = idle_hours else { return false };
    let active = matches!(
        conversation.status,
        ConversationStatus::Open | ConversationStatus::Pending
    );
    active
        && conversation.waiting_since.is_none()
        && conversation.last_activity_at + Duration::hours(hours.into()) <= now
}

/// An internal note on a conversation: seen by the tenant's users only, never sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub tenant_id: String,
    pub note_id: String,
    pub conversation_id: String,
    pub contact_id: String,
    pub body: String,
    /// The user (or, for keys without a user, the key) who wrote it.
    pub author: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a note's body must be 1 to {MAX_NOTE_CHARS} characters")]
pub struct NoteBodyError;

/// Trims a note body and checks its length.
pub fn note_body(body: &str) -> Result<String, NoteBodyError> {
    let body = body.trim();
    if body.is_empty() || body.chars().count() > MAX_NOTE_CHARS {
        return Err(NoteBodyError);
    }
    Ok(body.to_owned())
}

/// Who may see which conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    /// Need-to-know: only conversations assigned to this reader, or to nobody.
    AssignedOrUnassigned(String),
}

impl Visibility {
    pub fn allows(&self, conversation: &Conversation) -> bool {
        match self {
            Visibility::All => true,
            Visibility::AssignedOrUnassigned(me) => conversation.assignee.as_deref().is_none_or(|a| a == me),
        }
    }
}

/// How the inbox is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InboxSort {
    /// Newest activity first.
    #[default]
    LastActivity,
    /// Longest wait first (only conversations someone waits in).
    Waiting,
}

/// Whose conversations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AssigneeFilter {
    #[default]
    Any,
    Nobody,
    User(String),
}

/// An inbox listing's filters (all optional; combined with AND).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboxFilter {
    pub sort: InboxSort,
    pub number: Option<String>,
    pub status: Option<ConversationStatus>,
    pub assignee: AssigneeFilter,
    /// A tag of the contact.
    pub tag: Option<String>,
    /// `Some(true)`: service window open; `Some(false)`: closed.
    pub window_open: Option<bool>,
    /// Only conversations with an unanswered customer message.
    pub waiting: bool,
}

impl InboxFilter {
    /// Whether `c` passes every filter but the tag (the contact's, checked with the contact).
    pub fn matches(&self, c: &Conversation, now: DateTime<Utc>) -> bool {
        let assignee_ok = match &self.assignee {
            AssigneeFilter::Any => true,
            AssigneeFilter::Nobody => c.assignee.is_none(),
            AssigneeFilter::User(u) => c.assignee.as_deref() == Some(u.as_str()),
        };
        assignee_ok
            && self.number.as_ref().is_none_or(|n| *n == c.phone_number_id)
            && self.status.is_none_or(|s| c.effective_status(now) == s)
            && self.window_open.is_none_or(|open| c.window_open(now) == open)
            && (!(self.waiting || self.sort == InboxSort::Waiting) || c.waiting_since.is_some())
    }

    /// A stable description of the filters, bound into cursors so a cursor only continues
    /// the listing it came from.
    pub fn listing_name(&self, visibility: &Visibility) -> String {
        format!("conversations:{self:?}:{visibility:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageStatus;
    use serde_json::json;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap()
    }

    fn msg(direction: Direction, ts: i64, body: &str) -> MessageRecord {
        MessageRecord::new(
            "t",
            crate::ids::new_id(),
            "c",
            direction,
            "text",
            json!({ "body": body }),
            MessageStatus::Received,
            at(ts),
            at(ts),
        )
    }

    fn conv() -> Conversation {
        Conversation::new("t", &crate::ids::new_id(), "123", at(0))
    }

    /// The conversation's own measurement fields, read back through the report rules: each
    /// opening is measured from its own start, never from the conversation's creation.
    #[test]
    fn a_reopen_starts_a_new_response_measurement() {
        use crate::reports::facts::facts;
        let image = |c: &Conversation| serde_json::to_value(c).unwrap();
        let first_responses = |before: &Conversation, after: &Conversation| -> Vec<(Option<String>, i64)> {
            facts("CONV#123", Some(&image(before)), Some(&image(after)), at(0))
                .into_iter()
                .flat_map(|f| {
                    let user = f.user.clone();
                    f.durations
                        .into_iter()
                        .filter(|d| d.name == "first_response")
                        .map(move |d| (user.clone(), (d.to - d.from).num_seconds()))
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let mut c = conv();
        let reply = |ts: i64, user: &str| MessageRecord {
            sent_by: Some(user.to_owned()),
            ..msg(Direction::Outbound, ts, "hi")
        };
        c.on_inbound(&msg(Direction::Inbound, 100, "hello"), true);
        assert_eq!(c.measured_from, Some(at(100)));
        let before = c.clone();
        c.on_outbound(&reply(160, "u1"), false);
        assert_eq!(first_responses(&before, &c), [(None, 60), (Some("u1".into()), 60)]);
        let before = c.clone();
        c.on_outbound(&reply(200, "u1"), false);
        assert!(
            first_responses(&before, &c).is_empty(),
            "a second reply is no first response"
        );
        let resolve = StatusChange {
            by: Some("u2".into()),
            ..check_status_change(ConversationStatus::Resolved, None, at(300)).unwrap()
        };
        c.set_status(&resolve);
        assert_eq!((c.measured_from, c.resolved_by.as_deref()), (None, Some("u2")));
        // Our message to the resolved conversation measures nothing …
        let before = c.clone();
        c.on_outbound(&reply(400, "u1"), false);
        assert!(first_responses(&before, &c).is_empty());
        // … the customer's return starts a measurement, answered 30 s later.
        c.on_inbound(&msg(Direction::Inbound, 10_000, "again"), true);
        assert_eq!((c.measured_from, c.resolved_by.as_deref()), (Some(at(10_000)), None));
        let before = c.clone();
        c.on_outbound(&reply(10_030, "u3"), false);
        assert_eq!(first_responses(&before, &c), [(None, 30), (Some("u3".into()), 30)]);
    }

    #[test]
    fn ids_name_the_contact_and_number() {
        let contact = crate::ids::new_id();
        let id = conversation_id(&contact, "1234");
        assert_eq!(parse_conversation_id(&id), Some((contact.as_str(), "1234")));
        for bad in ["", "x-1", &format!("{contact}-"), &format!("{contact}-12a"), &contact] {
            assert_eq!(parse_conversation_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn inbound_opens_reopens_and_numbers_messages() {
        let mut c = conv();
        c.on_inbound(&msg(Direction::Inbound, 10, "hi"), true);
        assert_eq!(
            (c.status, c.last_seq, c.message_count),
            (ConversationStatus::Open, 1, 1)
        );
        assert_eq!(c.waiting_since, Some(at(10)));
        assert_eq!(c.window_expires_at, Some(at(10) + Duration::hours(24)));
        assert_eq!(c.preview.as_ref().unwrap().text.as_deref(), Some("hi"));
        let resolve = check_status_change(ConversationStatus::Resolved, None, at(20)).unwrap();
        c.set_status(&resolve);
        assert_eq!(
            (c.status, c.waiting_since, c.resolved_at),
            (ConversationStatus::Resolved, None, Some(at(20)))
        );
        c.on_inbound(&msg(Direction::Inbound, 30, "again"), true);
        assert_eq!(c.status, ConversationStatus::Open, "a resolved conversation reopens");
        assert_eq!((c.last_seq, c.resolved_at), (2, None));
        let snooze = check_status_change(ConversationStatus::Snoozed, Some(at(5000)), at(40)).unwrap();
        c.set_status(&snooze);
        c.on_inbound(&msg(Direction::Inbound, 50, "wake"), true);
        assert_eq!(
            (c.status, c.snooze_until),
            (ConversationStatus::Open, None),
            "the customer wakes it"
        );
    }

    #[test]
    fn waiting_since_is_the_oldest_unanswered_message() {
        let mut c = conv();
        c.on_inbound(&msg(Direction::Inbound, 10, "a"), true);
        c.on_inbound(&msg(Direction::Inbound, 20, "b"), true);
        assert_eq!(c.waiting_since, Some(at(10)));
        c.on_outbound(&msg(Direction::Outbound, 30, "answer"), false);
        assert_eq!(c.waiting_since, None);
        assert_eq!(
            c.status,
            ConversationStatus::Open,
            "answering does not change the status"
        );
        assert_eq!(c.last_outbound_at, Some(at(30)));
        c.on_inbound(&msg(Direction::Inbound, 40, "c"), true);
        assert_eq!(c.waiting_since, Some(at(40)));
    }

    #[test]
    fn a_late_older_message_counts_but_moves_no_clock() {
        let mut c = conv();
        c.on_inbound(&msg(Direction::Inbound, 100, "new"), true);
        c.on_inbound(&msg(Direction::Inbound, 50, "old"), false);
        assert_eq!(c.last_seq, 2);
        assert_eq!(c.last_activity_at, at(100));
        assert_eq!(c.preview.as_ref().unwrap().text.as_deref(), Some("new"));
    }

    #[test]
    fn outbound_first_opens_pending() {
        let mut c = conv();
        c.on_outbound(&msg(Direction::Outbound, 10, "offer"), true);
        assert_eq!(
            (c.status, c.last_seq, c.waiting_since),
            (ConversationStatus::Pending, 0, None)
        );
        assert!(!c.window_open(at(11)));
    }

    #[test]
    fn window_closes_after_a_day() {
        let mut c = conv();
        c.on_inbound(&msg(Direction::Inbound, 0, "hi"), true);
        assert!(c.window_open(at(0) + Duration::hours(23)));
        assert!(!c.window_open(at(0) + Duration::hours(24)));
    }

    #[test]
    fn snoozes_run_out_and_need_a_time() {
        let mut c = conv();
        assert_eq!(
            check_status_change(ConversationStatus::Snoozed, None, at(0)),
            Err(ConversationError::SnoozeUntil)
        );
        assert_eq!(
            check_status_change(ConversationStatus::Snoozed, Some(at(0)), at(0)),
            Err(ConversationError::SnoozeUntil),
            "not in the past"
        );
        assert_eq!(
            check_status_change(ConversationStatus::Snoozed, Some(at(0) + Duration::days(400)), at(0)),
            Err(ConversationError::SnoozeUntil)
        );
        assert_eq!(
            check_status_change(ConversationStatus::Open, Some(at(10)), at(0)),
            Err(ConversationError::SnoozeWithoutSnoozing)
        );
        c.set_status(&check_status_change(ConversationStatus::Snoozed, Some(at(100)), at(0)).unwrap());
        assert_eq!(c.effective_status(at(99)), ConversationStatus::Snoozed);
        assert_eq!(c.effective_status(at(100)), ConversationStatus::Open);
        c.set_status(&check_status_change(ConversationStatus::Pending, None, at(1)).unwrap());
        assert_eq!(c.snooze_until, None);
    }

    #[test]
    fn unread_is_exact_per_reader_and_marks_only_move_forward() {
        let mut c = conv();
        for i in 0..250 {
            c.on_inbound(&msg(Direction::Inbound, i, "m"), true);
        }
        assert_eq!(c.unread("alice"), 250, "no cap");
        assert_eq!(c.mark_read("alice", 200), Ok(200));
        assert_eq!(c.mark_read("alice", 100), Ok(200), "never back");
        assert_eq!(c.unread("alice"), 50);
        assert_eq!(c.unread("bob"), 250, "marks are per reader");
        assert_eq!(
            c.mark_read("bob", 251),
            Err(ConversationError::ReadBeyondLast { last_seq: 250 })
        );
        c.on_outbound(&msg(Direction::Outbound, 300, "reply"), false);
        assert_eq!(c.unread("alice"), 50, "our messages are never unread");
    }

    #[test]
    fn auto_resolve_spares_waiting_customers() {
        let mut c = conv();
        c.on_inbound(&msg(Direction::Inbound, 0, "hi"), true);
        let later = at(0) + Duration::hours(48);
        assert!(!auto_resolves(&c, Some(24), later), "the customer is waiting");
        c.on_outbound(&msg(Direction::Outbound, 10, "done"), false);
        assert!(auto_resolves(&c, Some(24), later));
        assert!(!auto_resolves(&c, None, later));
        assert!(!auto_resolves(&c, Some(72), later));
    }

    #[test]
    fn previews_are_short() {
        let long = "x".repeat(500);
        let p = preview_of(&msg(Direction::Inbound, 0, &long));
        assert_eq!(p.text.unwrap().chars().count(), PREVIEW_CHARS);
        let mut image = msg(Direction::Inbound, 0, "");
        image.message_type = "image".into();
        image.content = json!({"id": "m1", "caption": "look"});
        assert_eq!(preview_of(&image).text.as_deref(), Some("look"));
        image.content = json!({"id": "m1"});
        assert_eq!(preview_of(&image).text, None);
    }

    #[test]
    fn filters_and_visibility() {
        let now = at(100);
        let mut c = conv();
        c.on_inbound(&msg(Direction::Inbound, 90, "hi"), true);
        let f = |f: InboxFilter| f.matches(&c, now);
        assert!(f(InboxFilter::default()));
        assert!(f(InboxFilter {
            waiting: true,
            ..Default::default()
        }));
        assert!(f(InboxFilter {
            window_open: Some(true),
            ..Default::default()
        }));
        assert!(!f(InboxFilter {
            window_open: Some(false),
            ..Default::default()
        }));
        assert!(f(InboxFilter {
            assignee: AssigneeFilter::Nobody,
            ..Default::default()
        }));
        assert!(!f(InboxFilter {
            assignee: AssigneeFilter::User("u".into()),
            ..Default::default()
        }));
        assert!(!f(InboxFilter {
            number: Some("999".into()),
            ..Default::default()
        }));
        assert!(!f(InboxFilter {
            status: Some(ConversationStatus::Resolved),
            ..Default::default()
        }));
        c.assignee = Some("u".into());
        assert!(Visibility::AssignedOrUnassigned("u".into()).allows(&c));
        assert!(!Visibility::AssignedOrUnassigned("v".into()).allows(&c));
        assert!(Visibility::All.allows(&c));
    }

    #[test]
    fn notes_are_bounded() {
        assert_eq!(note_body("  call back tomorrow "), Ok("call back tomorrow".into()));
        assert_eq!(note_body("   "), Err(NoteBodyError));
        assert_eq!(note_body(&"x".repeat(MAX_NOTE_CHARS + 1)), Err(NoteBodyError));
    }
}
