//! The tenant event stream: what an event is, which changes of the table make which events
//! ([`derive`], a table of plain rules over old and new item images), how deliveries are signed
//! ([`signing`], Standard Webhooks), when they are retried ([`schedule`]) and where they may go
//! ([`ssrf`]). Events are derived from the table's change stream by the events function, never
//! written beside a change by hand: no hot path pays a request for them.

pub mod cards;
pub mod derive;
pub mod endpoint;
pub mod push;
pub mod schedule;
pub mod signing;
pub mod ssrf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every event type, as named on the wire. `ALL` lists them for validation and docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "message.received")]
    MessageReceived,
    #[serde(rename = "message.status_updated")]
    MessageStatusUpdated,
    #[serde(rename = "message.failed")]
    MessageFailed,
    #[serde(rename = "contact.created")]
    ContactCreated,
    #[serde(rename = "contact.updated")]
    ContactUpdated,
    #[serde(rename = "contact.erased")]
    ContactErased,
    #[serde(rename = "consent.changed")]
    ConsentChanged,
    #[serde(rename = "conversation.opened")]
    ConversationOpened,
    #[serde(rename = "conversation.assigned")]
    ConversationAssigned,
    #[serde(rename = "conversation.status_changed")]
    ConversationStatusChanged,
    /// Our first message of a measurement (since the customer opened or reopened the
    /// conversation): carries the first response time.
    #[serde(rename = "conversation.responded")]
    ConversationResponded,
    #[serde(rename = "export.ready")]
    ExportReady,
    #[serde(rename = "erasure.completed")]
    ErasureCompleted,
    #[serde(rename = "template.status_changed")]
    TemplateStatusChanged,
    #[serde(rename = "endpoint.disabled")]
    EndpointDisabled,
    /// Sent by `POST /v1/webhook-endpoints/{id}/test` to that endpoint only (never logged).
    #[serde(rename = "endpoint.test")]
    EndpointTest,
    /// An automation rule fired on an inbound message (its `notify` label, if it has one).
    #[serde(rename = "automation.fired")]
    AutomationFired,
}

impl EventType {
    pub const ALL: &[EventType] = &[
        EventType::MessageReceived,
        EventType::MessageStatusUpdated,
        EventType::MessageFailed,
        EventType::ContactCreated,
        EventType::ContactUpdated,
        EventType::ContactErased,
        EventType::ConsentChanged,
        EventType::ConversationOpened,
        EventType::ConversationAssigned,
        EventType::ConversationStatusChanged,
        EventType::ConversationResponded,
        EventType::ExportReady,
        EventType::ErasureCompleted,
        EventType::TemplateStatusChanged,
        EventType::EndpointDisabled,
        EventType::EndpointTest,
        EventType::AutomationFired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageReceived => "message.received",
            EventType::MessageStatusUpdated => "message.status_updated",
            EventType::MessageFailed => "message.failed",
            EventType::ContactCreated => "contact.created",
            EventType::ContactUpdated => "contact.updated",
            EventType::ContactErased => "contact.erased",
            EventType::ConsentChanged => "consent.changed",
            EventType::ConversationOpened => "conversation.opened",
            EventType::ConversationAssigned => "conversation.assigned",
            EventType::ConversationStatusChanged => "conversation.status_changed",
            EventType::ConversationResponded => "conversation.responded",
            EventType::ExportReady => "export.ready",
            EventType::ErasureCompleted => "erasure.completed",
            EventType::TemplateStatusChanged => "template.status_changed",
            EventType::EndpointDisabled => "endpoint.disabled",
            EventType::EndpointTest => "endpoint.test",
            EventType::AutomationFired => "automation.fired",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| t.as_str() == name)
    }

    /// Whether events of this type name a message whose body an opted-in endpoint receives.
    pub fn carries_message(self) -> bool {
        matches!(self, EventType::MessageReceived)
    }
}

/// An event before it has its place in the tenant's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDraft {
    /// `evt_` + a ULID of the change's time whose random part is derived from the change
    /// stream record: the same record always yields the same id (a redelivered stream batch
    /// is recognised), and ids sort by time.
    pub id: String,
    pub tenant_id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When the change was stored (the stream record's creation time).
    pub timestamp: DateTime<Utc>,
    /// Ids and what changed; never message bodies, names or phone numbers.
    pub data: Value,
    /// What the change counts in the tenant's reports ([`crate::reports::facts`]): applied in
    /// the transaction that first records the event, never stored with it.
    #[serde(skip)]
    pub tally: Vec<crate::reports::Fact>,
}

/// An event in the tenant's log: a draft with its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub tenant_id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub timestamp: DateTime<Utc>,
    /// Position in the tenant's log: strictly increasing, in the order the events were recorded.
    pub seq: u64,
    pub data: Value,
}

impl Event {
    pub fn from_draft(draft: EventDraft, seq: u64) -> Event {
        Event {
            id: draft.id,
            tenant_id: draft.tenant_id,
            event_type: draft.event_type,
            timestamp: draft.timestamp,
            seq,
            data: draft.data,
        }
    }

    /// The public form (API listing and webhook body): `id`, `type`, `timestamp`, `seq`, `data`.
    pub fn view(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "type": self.event_type,
            "timestamp": self.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "seq": self.seq,
            "data": self.data,
        })
    }
}

/// Retention of the event log: 7 days unless the tenant chose otherwise within these bounds.
pub const EVENTS_DAYS_DEFAULT: u32 = 7;
pub const EVENTS_DAYS: (u32, u32) = (1, 30);
