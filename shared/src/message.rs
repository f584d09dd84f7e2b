//! Stored messages (inbound and outbound) and the rules that derive their ids and keys.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Where a message's media stands. Inbound media is fetched from Meta by the media worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaStatus {
    /// Queued for download.
    Pending,
    /// In S3, checksum verified.
    Available,
    /// Meta could not give it to us (expired, deleted, too large, checksum never matched).
    Failed,
    /// Was stored, then deleted by the tenant's media retention (`media_days`): no link.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    /// Meta's media id (valid for 7 days after the webhook).
    pub media_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Checksum Meta announced (hex or base64, as Meta sent it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub status: MediaStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// An error Meta reported for a message, kept as Meta worded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageError {
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Status of a message as the API shows it. Inbound messages are `received`; outbound ones
/// move `queued → sent → delivered → read` (or end `failed` / `rejected`). A send whose outcome
/// the sender could not learn (a timeout after the request left, a sender that died mid-send) is
/// `unknown`: never resent, and moved on by Meta's status webhook when it names the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Received,
    Queued,
    Unknown,
    Sent,
    Delivered,
    Read,
    Played,
    Failed,
    Rejected,
}

/// The delivery ladder — the one place that orders statuses. The webhook's receipts, the
/// sender's `sent` and the store's conditional writes (`status_rank <= :limit`, see
/// [`MessageStatus::moves_up_to_rank`]) all follow it, so they cannot drift apart.
impl MessageStatus {
    /// Position on the ladder (`queued < sent < delivered < read < played`). Terminal states
    /// rank above everything so nothing moves them.
    pub fn rank(self) -> i64 {
        match self {
            MessageStatus::Received => 0,
            MessageStatus::Queued => 0,
            // Above queued (never claimed again), below sent (Meta's statuses move it on).
            MessageStatus::Unknown => 5,
            MessageStatus::Sent => 10,
            MessageStatus::Delivered => 20,
            MessageStatus::Read => 30,
            MessageStatus::Played => 40,
            MessageStatus::Failed | MessageStatus::Rejected => 100,
        }
    }

    pub const ALL: [MessageStatus; 9] = [
        MessageStatus::Received,
        MessageStatus::Queued,
        MessageStatus::Unknown,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Played,
        MessageStatus::Failed,
        MessageStatus::Rejected,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, MessageStatus::Failed | MessageStatus::Rejected)
    }

    /// The highest rank a message may hold for a change to `self` to move it. A step of the
    /// ladder moves only a message below it (receipts come late and twice); `failed` ends a
    /// message Meta has not delivered yet — once the handset has it, a late `failed`
    /// contradicts that; `rejected` happens before Meta, so only to a queued message.
    pub fn moves_up_to_rank(self) -> i64 {
        match self {
            MessageStatus::Failed => MessageStatus::Sent.rank(),
            MessageStatus::Rejected => MessageStatus::Queued.rank(),
            other => other.rank() - 1,
        }
    }

    /// Whether a message in `current` moves to `self`.
    pub fn moves(self, current: MessageStatus) -> bool {
        current.rank() <= self.moves_up_to_rank()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Received => "received",
            MessageStatus::Queued => "queued",
            MessageStatus::Unknown => "unknown",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Played => "played",
            MessageStatus::Failed => "failed",
            MessageStatus::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MessageStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown message status {s:?}"))
    }
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub tenant_id: String,
    pub message_id: String,
    pub contact_id: String,
    pub direction: Direction,
    /// The tenant's WhatsApp number (phone number id) the message was received on or is sent
    /// from; absent on messages stored before tenants had several numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wamid: Option<String>,
    /// Meta's message type (`text`, `image`, …, or an unknown future type as named).
    #[serde(rename = "type")]
    pub message_type: String,
    /// The type's object as Meta sent it (inbound) or as it will be sent (outbound).
    pub content: serde_json::Value,
    pub status: MessageStatus,
    /// When each status was first reached (Meta's timestamps for webhook statuses).
    #[serde(default)]
    pub status_at: BTreeMap<String, DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRef>,
    /// What an outbound message is for (decides the consent rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<crate::sending::Category>,
    /// The language a template send goes out in, after our fallback (Meta's code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The message this one replies to or reacts to (our message id, outbound sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Meta's id of the message a customer replied to, reacted to or forwarded (inbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_wamid: Option<String>,
    /// Click-to-WhatsApp ad referral attached to an inbound message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<serde_json::Value>,
    /// Pricing/conversation objects of the latest status webhook (outbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<serde_json::Value>,
    /// When the message was sent by the customer (inbound) or created (outbound).
    pub timestamp: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The tenant's user who sent it (outbound, through a key of theirs): per-user reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<String>,
    /// The automation rule whose automated reply this is (outbound): it answers nobody in the
    /// inbox's sense — the conversation keeps waiting for the team (docs/automations.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automation_rule: Option<String>,
    /// The broadcast this message is a recipient's send of (outbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast_id: Option<String>,
}

impl MessageRecord {
    /// A message as first stored: in `status` since `timestamp`, with none of the optional
    /// facts (wamid, error, media, category, reply, referral, pricing) yet — callers set those
    /// they have with struct update syntax (`MessageRecord { wamid, ..MessageRecord::new(…) }`).
    // Exactly the fields every message has; a parameter struct would only repeat them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tenant_id: &str,
        message_id: String,
        contact_id: &str,
        direction: Direction,
        message_type: &str,
        content: serde_json::Value,
        status: MessageStatus,
        timestamp: DateTime<Utc>,
        created_at: DateTime<Utc>,
    ) -> Self {
        MessageRecord {
            tenant_id: tenant_id.to_owned(),
            message_id,
            contact_id: contact_id.to_owned(),
            direction,
            phone_number_id: None,
            wamid: None,
            message_type: message_type.to_owned(),
            content,
            status,
            status_at: [(status.as_str().to_owned(), timestamp)].into(),
            error: None,
            media: None,
            category: None,
            language: None,
            reply_to: None,
            context_wamid: None,
            referral: None,
            pricing: None,
            conversation: None,
            timestamp,
            created_at,
            sent_by: None,
            automation_rule: None,
            broadcast_id: None,
        }
    }

    /// The number of the conversation this message moves, if it moves one: every message with
    /// a number does, but a broadcast's. A campaign is not a conversation: its sends neither
    /// open one nor move one up the inbox or answer a waiting customer (a reply does open
    /// one), and a campaign at the number's full rate would otherwise rewrite the tenant's one
    /// inbox index key ~2,000 times a second (docs/data-model.md).
    pub fn conversation_number(&self) -> Option<&str> {
        match self.broadcast_id {
            Some(_) => None,
            None => self.phone_number_id.as_deref(),
        }
    }
}

/// Time of a Meta webhook timestamp (unix seconds); out-of-range values fall back to `now`.
/// This is the time as Meta stated it: it derives an inbound message's id (so every
/// redelivery maps onto the same item) but is never stored as a time — see [`bounded_time`].
pub fn meta_time(unix_seconds: i64, now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(unix_seconds, 0).single().unwrap_or(now)
}

/// How far ahead of our clock a Meta timestamp may be (clock skew).
pub const META_TIME_AHEAD: chrono::Duration = chrono::Duration::minutes(5);
/// The earliest time a Meta timestamp may state (unix seconds of 2015-01-01, before the
/// WhatsApp Business platform existed). The past side is a fixed floor, not a distance from
/// now: a late time only makes a message older (it never opens the 24 h window, never moves the
/// contact's clock back, and retention removes it sooner, never later), while Meta redelivers
/// for days and tests replay fixed times.
pub const META_TIME_FLOOR: i64 = 1_420_070_400;

/// A Meta time clamped to a sane window: what is stored and acted on (the 24 h window, the
/// contact's last-inbound clock, status times, retention), so a bogus future time cannot hold
/// the window open or keep a message from retention.
pub fn bounded_time(stated: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let floor = Utc.timestamp_opt(META_TIME_FLOOR, 0).single().expect("valid floor");
    stated.clamp(floor, (now + META_TIME_AHEAD).max(floor))
}

/// The key a message sorts by in the time-ordered indexes (a contact's history, retention's
/// tenant-wide and media indexes): its id, unless the id is later than the message's stored
/// time (an inbound id derived from a bogus future Meta time), then the id's random part under
/// the stored time. Ids are ULIDs, so for every other message the two are the same.
pub fn sort_id(message_id: &str, timestamp: DateTime<Utc>) -> String {
    let Ok(id) = ulid::Ulid::from_string(message_id) else {
        return message_id.to_owned();
    };
    let ms = timestamp.timestamp_millis().clamp(0, (1i64 << 48) - 1) as u64;
    if id.timestamp_ms() <= ms {
        return message_id.to_owned();
    }
    ulid::Ulid::from_parts(ms, id.random()).to_string().to_ascii_lowercase()
}

/// The id of an inbound message, derived from the tenant and Meta's wamid so a redelivered
/// webhook maps onto the same item (the conditional put is the dedupe), and shaped as a ULID
/// of the message time so ids sort by time like every other message id.
pub fn inbound_message_id(tenant_id: &str, wamid: &str, at: DateTime<Utc>) -> String {
    let digest = Sha256::digest(format!("{tenant_id}\n{wamid}").as_bytes());
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let ms = at.timestamp_millis().clamp(0, (1i64 << 48) - 1) as u64;
    ulid::Ulid::from_parts(ms, u128::from_be_bytes(random))
        .to_string()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_ids_are_deterministic_per_tenant_and_valid() {
        let at = meta_time(1_700_000_000, Utc::now());
        let a = inbound_message_id("t1", "wamid.X", at);
        assert_eq!(a, inbound_message_id("t1", "wamid.X", at));
        assert_ne!(a, inbound_message_id("t2", "wamid.X", at));
        assert_ne!(a, inbound_message_id("t1", "wamid.Y", at));
        assert!(crate::ids::is_valid_id(&a));
        let later = inbound_message_id("t1", "wamid.A", meta_time(1_700_000_001, Utc::now()));
        assert!(later > a, "ids sort by time");
    }

    #[test]
    fn ranks_order_statuses_and_terminals_win() {
        use MessageStatus::*;
        assert!(Sent.rank() < Delivered.rank() && Delivered.rank() < Read.rank() && Read.rank() < Played.rank());
        assert!(Failed.rank() > Played.rank() && Rejected.rank() == Failed.rank());
        assert_eq!(serde_json::to_value(Read).unwrap(), "read");
    }

    #[test]
    fn the_ladder_moves_forward_only_and_failed_only_before_delivery() {
        use MessageStatus::*;
        let ladder = [Queued, Sent, Delivered, Read, Played];
        for (i, current) in ladder.into_iter().enumerate() {
            for (j, target) in ladder.into_iter().enumerate() {
                assert_eq!(target.moves(current), j > i, "{current} -> {target}");
            }
        }
        assert!(Failed.moves(Queued) && Failed.moves(Sent));
        assert!(!Failed.moves(Delivered) && !Failed.moves(Read) && !Failed.moves(Played));
        assert!(Rejected.moves(Queued) && !Rejected.moves(Sent));
        // An unknown outcome is moved on by Meta's statuses, never by a rejection or a resend.
        assert!(Unknown.moves(Queued) && Sent.moves(Unknown) && Delivered.moves(Unknown) && Failed.moves(Unknown));
        assert!(!Rejected.moves(Unknown) && !Unknown.moves(Sent));
        for status in MessageStatus::ALL {
            assert!(
                !status.moves(Failed) && !status.moves(Rejected),
                "{status} moves a terminal"
            );
        }
    }

    #[test]
    fn meta_times_are_bounded_around_now_and_ids_stay_deterministic() {
        let now = Utc.timestamp_opt(1_767_225_600, 0).unwrap();
        let future = meta_time(4_000_000_000, now);
        assert_eq!(bounded_time(future, now), now + META_TIME_AHEAD);
        assert_eq!(bounded_time(meta_time(0, now), now).timestamp(), META_TIME_FLOOR);
        let recent = now - chrono::Duration::days(300);
        assert_eq!(bounded_time(recent, now), recent, "an old time is kept");
        let skewed = now + chrono::Duration::minutes(2);
        assert_eq!(bounded_time(skewed, now), skewed, "clock skew is tolerated");
        // The id comes from the stated time, so a redelivery an hour later is the same message.
        let later = now + chrono::Duration::hours(1);
        assert_eq!(
            inbound_message_id("t", "wamid.F", future),
            inbound_message_id("t", "wamid.F", meta_time(4_000_000_000, later))
        );
    }

    #[test]
    fn a_future_id_sorts_by_its_stored_time() {
        let now = Utc.timestamp_opt(1_767_225_600, 0).unwrap();
        let normal = inbound_message_id("t", "wamid.N", now);
        assert_eq!(sort_id(&normal, now), normal);
        let future_id = inbound_message_id("t", "wamid.F", meta_time(4_000_000_000, now));
        let stored = bounded_time(meta_time(4_000_000_000, now), now);
        let sorted = sort_id(&future_id, stored);
        assert_ne!(sorted, future_id);
        assert_eq!(
            ulid::Ulid::from_string(&sorted).unwrap().timestamp_ms(),
            stored.timestamp_millis() as u64
        );
        assert_eq!(sorted[10..], future_id[10..], "the random part is kept");
        assert_eq!(sort_id(&sorted, stored), sorted, "idempotent");
        assert_eq!(sort_id("not-a-ulid", now), "not-a-ulid");
    }

    #[test]
    fn meta_time_handles_bad_values() {
        let now = Utc::now();
        assert_eq!(meta_time(0, now).timestamp(), 0);
        assert_eq!(meta_time(i64::MAX, now), now);
    }
}
