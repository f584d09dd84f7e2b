//! Broadcasts: a template campaign to a segment of a tenant's contacts. This module holds the
//! plain rules (no I/O): the request's validation ([`spec`]), who may be sent to and with which
//! parameters ([`eligibility`]), the lifecycle, and the pacing, budget and retry decisions
//! ([`pacing`]). The engine that applies them page by page is [`run`]; storage is behind
//! `store::BroadcastStore`.
//!
//! Lifecycle: `draft → scheduled → running ⇄ paused → completed | cancelled` (`draft` may be
//! cancelled too; `scheduled` may be paused). Each change is a conditional write on the
//! version the caller read: two concurrent changes cannot both win.

pub mod audience_file;
pub mod control;
pub mod eligibility;
pub mod pacing;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod view;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use eligibility::{Decision, SkipReason};
pub use spec::{Audience, BroadcastSpec, SpecError};

/// Where a broadcast is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastStatus {
    Draft,
    Scheduled,
    Running,
    Paused,
    Completed,
    Cancelled,
}

impl BroadcastStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BroadcastStatus::Draft => "draft",
            BroadcastStatus::Scheduled => "scheduled",
            BroadcastStatus::Running => "running",
            BroadcastStatus::Paused => "paused",
            BroadcastStatus::Completed => "completed",
            BroadcastStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the engine has work to do on it.
    pub fn is_active(self) -> bool {
        matches!(self, BroadcastStatus::Scheduled | BroadcastStatus::Running)
    }

    pub fn is_final(self) -> bool {
        matches!(self, BroadcastStatus::Completed | BroadcastStatus::Cancelled)
    }
}

/// What a caller (or the engine) asks of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Cancel,
    /// The engine: the start time has come.
    Begin,
    /// The engine: nothing is left to send.
    Complete,
}

impl Action {
    pub fn parse(raw: &str) -> Option<Action> {
        Some(match raw {
            "start" => Action::Start,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "cancel" => Action::Cancel,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
            Action::Begin => "begin",
            Action::Complete => "complete",
        }
    }
}

/// The status `action` leads to from `from`, or `None` when it does not apply there (`409`).
/// `start` on a draft schedules it when a start time lies ahead, else runs it.
pub fn transition(from: BroadcastStatus, action: Action, starts_later: bool) -> Option<BroadcastStatus> {
    use BroadcastStatus::*;
    Some(match (from, action) {
        (Draft, Action::Start) if starts_later => Scheduled,
        (Draft, Action::Start) => Running,
        (Scheduled, Action::Begin) => Running,
        (Scheduled | Running, Action::Pause) => Paused,
        (Paused, Action::Resume) => Running,
        (Draft | Scheduled | Running | Paused, Action::Cancel) => Cancelled,
        (Running, Action::Complete) => Completed,
        _ => return None,
    })
}

/// Why the engine paused a broadcast by itself (a caller's pause has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// Meta paused the template (quality) — resumes when it is approved again.
    TemplatePaused,
    /// Meta disabled the template.
    TemplateDisabled,
    /// The template is no longer approved (or was deleted).
    TemplateNotApproved,
    /// Meta flagged the sending number's quality as low (red, `phone_number_quality_update`
    /// with `FLAGGED`): sending on would risk the number. Only a caller resumes it.
    NumberQualityRed,
}

impl PauseReason {
    /// Whether the engine resumes the broadcast by itself once the template is approved again
    /// (the template's reasons; a number's quality is resumed by hand).
    pub fn resumes_on_approval(self) -> bool {
        matches!(
            self,
            PauseReason::TemplatePaused | PauseReason::TemplateDisabled | PauseReason::TemplateNotApproved
        )
    }
}

/// Recipient counters. `skipped` and `failed` are by reason / Meta code. Kept exact: each page
/// of recipients and its counter deltas are written in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub targeted: u64,
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
    pub queued: u64,
    pub sent: u64,
    pub delivered: u64,
    pub read: u64,
    #[serde(default)]
    pub failed: BTreeMap<String, u64>,
    /// Times Meta held a recipient back (`131049`); each is tried again later.
    pub held_back: u64,
    /// Recipients given up on after the last `131049` retry.
    pub capped: u64,
    pub replied: u64,
    pub opted_out_after: u64,
}

impl Counters {
    pub fn skip(&mut self, reason: SkipReason) {
        *self.skipped.entry(reason.as_str().to_owned()).or_default() += 1;
    }

    pub fn fail(&mut self, code: i64) {
        *self.failed.entry(code.to_string()).or_default() += 1;
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Adds `delta` (a page's changes) to these counters.
    pub fn add(&mut self, delta: &Counters) {
        self.targeted += delta.targeted;
        for (k, v) in &delta.skipped {
            *self.skipped.entry(k.clone()).or_default() += v;
        }
        self.queued += delta.queued;
        self.sent += delta.sent;
        self.delivered += delta.delivered;
        self.read += delta.read;
        for (k, v) in &delta.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        self.held_back += delta.held_back;
        self.capped += delta.capped;
        self.replied += delta.replied;
        self.opted_out_after += delta.opted_out_after;
    }
}

/// Where the engine is: planning walks the audience once; dispatching walks the planned
/// recipients once; following re-reads sent recipients' messages until their results settle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Index of the audience source being walked (explicit list, then each tag / search).
    #[serde(default)]
    pub plan_source: usize,
    /// Position within that source (an opaque key, or an offset into an explicit list).
    #[serde(default)]
    pub plan_cursor: Option<BTreeMap<String, String>>,
    /// Pages planned so far (recipients remember the page that planned them, so a page run
    /// again is told from a true duplicate).
    #[serde(default)]
    pub plan_pages: u64,
    pub planned_at: Option<DateTime<Utc>>,
    /// Position of the dispatch walk over the recipients (`None` before the first page).
    #[serde(default)]
    pub dispatch_cursor: Option<BTreeMap<String, String>>,
    pub dispatched_at: Option<DateTime<Utc>>,
    /// The engine waits until then (start time, messaging limit window, a retry's time).
    pub wait_until: Option<DateTime<Utc>>,
    /// Why it waits (`messaging_limit`), for the API.
    pub waiting_for: Option<String>,
    /// Meta's time of the number-quality flag the engine last paused it for: a caller's
    /// resume after that flag sticks; only a later flag pauses it again.
    #[serde(default)]
    pub quality_flag_at: Option<DateTime<Utc>>,
    /// The uploaded audience file was deleted (planned, or cancelled before).
    #[serde(default)]
    pub audience_file_removed: bool,
}

/// A number's quality as Meta's `phone_number_quality_update` last stated it (`red`: flagged
/// low). Keyed by WABA and display number, the only number Meta names in that webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberQuality {
    pub waba_id: String,
    /// Digits only.
    pub display_phone_number: String,
    pub red: bool,
    /// Meta's time of the change (orders out-of-order deliveries).
    pub changed_at: DateTime<Utc>,
}

/// A broadcast as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    pub tenant_id: String,
    pub broadcast_id: String,
    pub spec: BroadcastSpec,
    /// The template's category at creation (`MARKETING`, `UTILITY`, …).
    pub category: String,
    pub status: BroadcastStatus,
    pub pause_reason: Option<PauseReason>,
    pub counters: Counters,
    pub progress: Progress,
    /// The key that created it (audit; not personal data).
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Optimistic concurrency: every write expects the version it read.
    pub version: u64,
}

impl Broadcast {
    pub fn is_marketing(&self) -> bool {
        self.category.eq_ignore_ascii_case("MARKETING")
    }
}

/// A recipient's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    /// Planned, waiting for its turn.
    Pending,
    Skipped,
    /// Its message is with the sender.
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
    /// Meta held it back (`131049`); tried again at `retry_at`.
    HeldBack,
    /// Given up after the last `131049`.
    Capped,
}

impl RecipientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Skipped => "skipped",
            RecipientStatus::Queued => "queued",
            RecipientStatus::Sent => "sent",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Read => "read",
            RecipientStatus::Failed => "failed",
            RecipientStatus::HeldBack => "held_back",
            RecipientStatus::Capped => "capped",
        }
    }

    pub fn parse(raw: &str) -> Option<RecipientStatus> {
        [
            RecipientStatus::Pending,
            RecipientStatus::Skipped,
            RecipientStatus::Queued,
            RecipientStatus::Sent,
            RecipientStatus::Delivered,
            RecipientStatus::Read,
            RecipientStatus::Failed,
            RecipientStatus::HeldBack,
            RecipientStatus::Capped,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// Whether the engine still follows it (its message may change, or it waits for a send).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            RecipientStatus::Pending
                | RecipientStatus::Queued
                | RecipientStatus::Sent
                | RecipientStatus::Delivered
                | RecipientStatus::HeldBack
        )
    }

    /// Whether nothing more will be sent to it (the broadcast completes when every recipient is).
    pub fn is_settled(self) -> bool {
        !matches!(
            self,
            RecipientStatus::Pending | RecipientStatus::Queued | RecipientStatus::HeldBack
        )
    }
}

/// One recipient of a broadcast. Holds ids and outcomes, no contact data: the contact is read
/// when needed, so erasure of the contact removes it here too (`store::BroadcastStore`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastRecipient {
    pub tenant_id: String,
    pub broadcast_id: String,
    pub contact_id: String,
    pub status: RecipientStatus,
    /// Why it was skipped.
    pub reason: Option<SkipReason>,
    /// The plan page that planned it.
    pub page: u64,
    /// The template parameters rendered for it at planning (`components` of the send).
    #[serde(default)]
    pub components: serde_json::Value,
    /// The language it is sent in.
    pub language: Option<String>,
    /// Its current message (a `131049` retry gets a new one).
    pub message_id: Option<String>,
    /// Meta's error code of a failed send.
    pub error_code: Option<i64>,
    /// `131049` retries so far.
    #[serde(default)]
    pub attempts: u32,
    pub retry_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub replied: bool,
    #[serde(default)]
    pub opted_out_after: bool,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use BroadcastStatus::*;

    #[test]
    fn lifecycle_transitions() {
        assert_eq!(transition(Draft, Action::Start, false), Some(Running));
        assert_eq!(transition(Draft, Action::Start, true), Some(Scheduled));
        assert_eq!(transition(Scheduled, Action::Begin, false), Some(Running));
        assert_eq!(transition(Running, Action::Pause, false), Some(Paused));
        assert_eq!(transition(Scheduled, Action::Pause, false), Some(Paused));
        assert_eq!(transition(Paused, Action::Resume, false), Some(Running));
        assert_eq!(transition(Running, Action::Complete, false), Some(Completed));
        for from in [Draft, Scheduled, Running, Paused] {
            assert_eq!(transition(from, Action::Cancel, false), Some(Cancelled));
        }
        // Wrong states are refused (the API answers 409).
        assert_eq!(transition(Running, Action::Start, false), None);
        assert_eq!(transition(Running, Action::Resume, false), None);
        assert_eq!(transition(Paused, Action::Pause, false), None);
        assert_eq!(transition(Draft, Action::Pause, false), None);
        assert_eq!(transition(Paused, Action::Complete, false), None);
        for action in [Action::Start, Action::Pause, Action::Resume, Action::Cancel] {
            assert_eq!(transition(Completed, action, false), None);
            assert_eq!(transition(Cancelled, action, false), None);
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
        assert_eq!(Action::parse("begin"), None, "engine actions are not the API's");
    }

    #[test]
    fn only_template_pauses_resume_by_themselves() {
        assert!(PauseReason::TemplatePaused.resumes_on_approval());
        assert!(!PauseReason::NumberQualityRed.resumes_on_approval());
        assert_eq!(
            serde_json::to_value(PauseReason::NumberQualityRed).unwrap(),
            serde_json::json!("number_quality_red")
        );
    }

    #[test]
    fn counters_add_page_deltas() {
        let mut total = Counters::default();
        let mut page = Counters {
            targeted: 3,
            queued: 2,
            held_back: 1,
            ..Counters::default()
        };
        page.skip(SkipReason::Restricted);
        page.fail(131049);
        total.add(&page);
        total.add(&page);
        assert_eq!(total.targeted, 6);
        assert_eq!(total.skipped["restricted"], 2);
        assert_eq!(total.failed["131049"], 2);
        assert_eq!(total.held_back, 2);
        assert_eq!(total.skipped_total(), 2);
    }

    #[test]
    fn recipient_statuses_parse_and_settle() {
        for s in [
            "pending",
            "skipped",
            "queued",
            "sent",
            "delivered",
            "read",
            "failed",
            "held_back",
            "capped",
        ] {
            assert_eq!(RecipientStatus::parse(s).map(RecipientStatus::as_str), Some(s));
        }
        assert_eq!(RecipientStatus::parse("nope"), None);
        assert!(!RecipientStatus::Pending.is_settled());
        assert!(!RecipientStatus::HeldBack.is_settled());
        assert!(RecipientStatus::Sent.is_settled());
        assert!(
            RecipientStatus::Sent.is_open(),
            "sent ones are followed to delivered/read"
        );
        assert!(!RecipientStatus::Read.is_open());
    }
}
