//! The broadcast engine: one run (the scheduled `broadcaster` function, every minute) advances
//! each active broadcast of each tenant by pages, never holding an audience in memory.
//!
//! 1. **Plan**: walks the audience (explicit list, then the contact search / tags) a page at a
//!    time; decides each recipient ([`super::eligibility::decide`]) and commits the page's
//!    recipients with the counter deltas and the walk's position in one transaction. A contact
//!    already planned (`PageCommit::Existing`) is a duplicate. Nothing is sent until the whole
//!    audience is planned.
//! 2. **Dispatch**: walks the `pending` recipients; each page turns recipients `queued` with a
//!    fresh message id (committed first, together with the counters and the messaging-limit
//!    usage), then stores each message and hands it to the sender's queue with a delay that
//!    spreads the run's sends at the broadcast's share of the number's rate. A run sends at
//!    most `rate share × run length` and stops at the messaging limit (the broadcast then waits
//!    for the window to free room).
//! 3. **Follow**: walks the open recipients and reads their messages: statuses move the
//!    recipient and the counters; a message that never got stored (a crash between commit and
//!    store) is stored and queued now; `131049` makes the recipient wait and be sent again
//!    later (then `capped`); a send refused because the template was paused goes back to
//!    `pending`. When no recipient is left to send to, the broadcast completes.
//!
//! Exactly once per (broadcast, recipient): a recipient gets a message id only in a committed
//! page, a message is stored only under that id (a conditional put), and the sender's lease
//! keeps a redelivered job from sending twice. Pause and cancel stop the next page; messages
//! already handed to the sender (at most one run's share) still go out. A template paused or
//! disabled by Meta pauses the broadcast with the reason; it resumes when the template is
//! approved again. A number Meta flags red (`phone_number_quality_update`, stored by the
//! webhook) pauses the broadcasts sending from it with `number_quality_red`, once per flag;
//! only a caller resumes them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::audience_file;
use super::control::{quality_flag_for, red_numbers};
use super::eligibility::{Decision, SkipReason, decide};
use super::pacing::{self, HELD_BACK_CODE};
use super::schedule::sending_room;
use super::{
    Action, Broadcast, BroadcastRecipient, BroadcastStatus, Counters, PauseReason, RecipientStatus, transition,
};
use crate::audit::AuditEntry;
use crate::blob::BlobError;
use crate::contact::{Contact, MarketingConsent, QueryKind, query_kind};
use crate::cursor::Position;
use crate::jobs::{SendJob, SendJobQueue};
use crate::message::{Direction, MessageRecord, MessageStatus};
use crate::objects::ObjectStore;
use crate::sending::Category;
use crate::store::{
    AuditStore, BroadcastStore, ContactFilter, ContactStore, CustomerIdentity, MAX_PAGE_RECIPIENTS, MessageStore,
    OutboundStore, PageCommit, PrivacyStore, RecipientChange, StoreError, TemplateStore, TenantStore,
};
use crate::template::{TemplateRecord, status as template_status};

/// Storage the engine needs.
pub trait EngineStore:
    BroadcastStore + ContactStore + TemplateStore + TenantStore + OutboundStore + MessageStore + PrivacyStore + AuditStore
{
}
impl<
    T: BroadcastStore
        + ContactStore
        + TemplateStore
        + TenantStore
        + OutboundStore
        + MessageStore
        + PrivacyStore
        + AuditStore,
> EngineStore for T
{
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The number's send rate (the sender's `SEND_RATE_PER_SECOND`).
    pub rate_per_second: u32,
    /// How many seconds of sends one run hands to the sender (the schedule's period).
    pub run_secs: u32,
    /// Recipients per page (at most [`MAX_PAGE_RECIPIENTS`]).
    pub page_size: usize,
    /// How long completed broadcasts keep following their recipients' statuses.
    pub follow_days: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            rate_per_second: 80,
            run_secs: 60,
            page_size: MAX_PAGE_RECIPIENTS,
            follow_days: 3,
        }
    }
}

/// What one run did (printed by the function; no personal data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    pub broadcasts: usize,
    pub planned: u64,
    pub dispatched: u64,
    pub followed: u64,
    pub completed: usize,
    pub paused: usize,
    pub resumed: usize,
    pub enqueue_failures: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Files(#[from] BlobError),
}

/// Deletes the broadcast's audience file once it is no longer needed (planned, or cancelled
/// unplanned), and records that; `None` when there was nothing to do or it changed meanwhile.
async fn remove_audience_file<S: EngineStore, F: ObjectStore>(
    store: &S,
    files: &F,
    b: &Broadcast,
    now: DateTime<Utc>,
) -> Result<Option<Broadcast>, StoreError> {
    if b.spec.audience.file.is_none() || b.progress.audience_file_removed {
        return Ok(None);
    }
    let key = audience_file::audience_key(&b.tenant_id, &b.broadcast_id);
    if let Err(e) = files.delete_keys(&[key]).await {
        tracing::warn!(error = %e, "could not delete a broadcast's audience file (tried again next run)");
        return Ok(None);
    }
    let mut after = next(b, now);
    after.progress.audience_file_removed = true;
    match store.save_broadcast(&after).await {
        Ok(()) => Ok(Some(after)),
        Err(StoreError::VersionMismatch) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs every tenant's active broadcasts once.
pub async fn run_all<S: EngineStore, F: ObjectStore, Q: SendJobQueue>(
    store: &S,
    files: &F,
    queue: &Q,
    now: DateTime<Utc>,
    config: &EngineConfig,
) -> Result<RunReport, EngineError> {
    let mut report = RunReport::default();
    for tenant_id in store.tenant_ids().await? {
        if let Err(e) = run_tenant(store, files, queue, &tenant_id, now, config, &mut report).await {
            // One tenant's trouble does not stop the others; the next run picks it up.
            tracing::warn!(error = %e, %tenant_id, "broadcast run failed for a tenant");
        }
    }
    Ok(report)
}

/// Runs one tenant's active broadcasts once.
pub async fn run_tenant<S: EngineStore, F: ObjectStore, Q: SendJobQueue>(
    store: &S,
    files: &F,
    queue: &Q,
    tenant_id: &str,
    now: DateTime<Utc>,
    config: &EngineConfig,
    report: &mut RunReport,
) -> Result<(), EngineError> {
    let mut start = None;
    // Numbers Meta flagged red → since when (read once per run, at the first active broadcast).
    let mut red: Option<(String, BTreeMap<String, DateTime<Utc>>)> = None;
    loop {
        let page = store.list_broadcasts(tenant_id, 100, start).await?;
        for b in page.items {
            if b.status.is_active() {
                if red.is_none() {
                    red = Some(red_numbers_of(store, tenant_id).await?);
                }
                let (primary, flagged) = red.as_ref().expect("just read");
                if let Some(at) = quality_flag_for(&b, primary, flagged) {
                    pause_for_quality(store, &b, at, now, report).await?;
                    continue;
                }
            }
            let follow_until = b.finished_at.map(|f| f + chrono::Duration::days(config.follow_days));
            let wanted = b.status.is_active()
                || (b.status == BroadcastStatus::Paused
                    && b.pause_reason.is_some_and(PauseReason::resumes_on_approval))
                || (b.status == BroadcastStatus::Completed && follow_until.is_some_and(|u| u > now));
            if wanted {
                report.broadcasts += 1;
                advance(store, files, queue, b, now, config, report).await?;
            } else if b.status == BroadcastStatus::Cancelled {
                // Cancelled before its audience was planned: its file goes now.
                remove_audience_file(store, files, &b, now).await?;
            }
        }
        match page.next {
            Some(next) => start = Some(next),
            None => return Ok(()),
        }
    }
}

/// The tenant's default number and its numbers flagged red (one read when none is).
async fn red_numbers_of<S: EngineStore>(
    store: &S,
    tenant_id: &str,
) -> Result<(String, BTreeMap<String, DateTime<Utc>>), StoreError> {
    let qualities = store.number_qualities(tenant_id).await?;
    if !qualities.iter().any(|q| q.red) {
        return Ok((String::new(), BTreeMap::new()));
    }
    let primary = store
        .get_tenant(tenant_id)
        .await?
        .map(|t| t.phone_number_id)
        .unwrap_or_default();
    let numbers = store.numbers(tenant_id).await?;
    Ok((primary, red_numbers(&numbers, &qualities)))
}

/// Pauses `b` with `number_quality_red` for the flag of `at`, with an audit entry; a
/// concurrent change wins (the next run decides again on what it made).
async fn pause_for_quality<S: EngineStore>(
    store: &S,
    b: &Broadcast,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    report: &mut RunReport,
) -> Result<(), StoreError> {
    let mut flagged = b.clone();
    flagged.progress.quality_flag_at = Some(at);
    let Some(after) = apply(store, &flagged, Action::Pause, Some(PauseReason::NumberQualityRed), now).await? else {
        return Ok(());
    };
    report.paused += 1;
    let from = after
        .spec
        .phone_number_id
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let entry = AuditEntry::new(&after.tenant_id, None, "broadcast.pause")
        .target("broadcast", &after.broadcast_id)
        .detail("reason", "number_quality_red")
        .detail("phone_number_id", from);
    if let Err(e) = store.record_audit(&entry).await {
        tracing::error!(error = %e, "could not audit a number-quality pause");
    }
    Ok(())
}

/// The template's state for the broadcast: `Ok` when it can be sent (in its fixed language,
/// or in some language for `auto`), else why the broadcast must pause.
fn template_state(b: &Broadcast, entries: &[TemplateRecord]) -> Result<(), PauseReason> {
    let relevant: Vec<&TemplateRecord> = match &b.spec.language {
        Some(l) => entries.iter().filter(|e| &e.language == l).collect(),
        None => entries.iter().collect(),
    };
    if relevant.iter().any(|e| e.is_approved()) {
        return Ok(());
    }
    Err(if relevant.iter().any(|e| e.status == template_status::PAUSED) {
        PauseReason::TemplatePaused
    } else if relevant.iter().any(|e| e.status == template_status::DISABLED) {
        PauseReason::TemplateDisabled
    } else {
        PauseReason::TemplateNotApproved
    })
}

/// The next version of a broadcast, as the engine stores it.
fn next(b: &Broadcast, now: DateTime<Utc>) -> Broadcast {
    Broadcast {
        version: b.version + 1,
        updated_at: now,
        ..b.clone()
    }
}

/// Applies an engine action; `Ok(None)` when a concurrent change won (the next run sees it).
pub(super) async fn apply<S: BroadcastStore>(
    store: &S,
    b: &Broadcast,
    action: Action,
    pause_reason: Option<PauseReason>,
    now: DateTime<Utc>,
) -> Result<Option<Broadcast>, StoreError> {
    let Some(status) = transition(b.status, action, false) else {
        return Ok(None);
    };
    let mut after = next(b, now);
    after.status = status;
    after.pause_reason = pause_reason;
    if status == BroadcastStatus::Running && after.started_at.is_none() {
        after.started_at = Some(now);
    }
    if status.is_final() {
        after.finished_at = Some(now);
    }
    match store.save_broadcast(&after).await {
        Ok(()) => Ok(Some(after)),
        Err(StoreError::VersionMismatch) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn advance<S: EngineStore, F: ObjectStore, Q: SendJobQueue>(
    store: &S,
    files: &F,
    queue: &Q,
    mut b: Broadcast,
    now: DateTime<Utc>,
    config: &EngineConfig,
    report: &mut RunReport,
) -> Result<(), EngineError> {
    let entries = store.template_languages(&b.tenant_id, &b.spec.template_name).await?;
    let template = template_state(&b, &entries);
    match (b.status, template) {
        (BroadcastStatus::Paused, Ok(())) => {
            // Paused by the engine for the template: approved again, so it resumes.
            match apply(store, &b, Action::Resume, None, now).await? {
                Some(after) => {
                    report.resumed += 1;
                    b = after;
                }
                None => return Ok(()),
            }
        }
        (BroadcastStatus::Paused, Err(_)) => return Ok(()),
        (BroadcastStatus::Scheduled | BroadcastStatus::Running, Err(reason)) => {
            if apply(store, &b, Action::Pause, Some(reason), now).await?.is_some() {
                report.paused += 1;
            }
            return Ok(());
        }
        _ => {}
    }
    if b.status == BroadcastStatus::Scheduled {
        if b.spec.start_at.is_some_and(|s| s > now) {
            return Ok(());
        }
        match apply(store, &b, Action::Begin, None, now).await? {
            Some(after) => b = after,
            None => return Ok(()),
        }
    }
    if b.status == BroadcastStatus::Running && b.progress.planned_at.is_none() {
        match plan(store, files, b, &entries, now, config, report).await? {
            Some(after) => b = after,
            None => return Ok(()),
        }
        if b.progress.planned_at.is_none() {
            return Ok(());
        }
    }
    if b.progress.planned_at.is_some() {
        // Planned: the file is no longer needed (a failed delete is tried again next run; a
        // broadcast without a file, or with it gone, costs nothing here).
        b = remove_audience_file(store, files, &b, now).await?.unwrap_or(b);
    }
    let mut sent_this_run = 0;
    if b.status == BroadcastStatus::Running
        && b.progress.dispatched_at.is_none()
        && b.progress.wait_until.is_none_or(|w| w <= now)
    {
        match dispatch(store, queue, b, now, config, report).await? {
            Some((after, sent)) => {
                b = after;
                sent_this_run = sent;
            }
            None => return Ok(()),
        }
    }
    if b.progress.planned_at.is_some() {
        follow(store, queue, b, now, config, sent_this_run, report).await?;
    }
    Ok(())
}

/// One source of the audience walk.
enum Source {
    Explicit,
    /// The uploaded file's rows (JSON lines), by byte offset.
    File,
    Walk {
        filter: ContactFilter,
        must_have: Vec<String>,
    },
}

fn sources(b: &Broadcast) -> Vec<Source> {
    let a = &b.spec.audience;
    let mut out = Vec::new();
    if a.explicit_len() > 0 {
        out.push(Source::Explicit);
    }
    if a.file.is_some() {
        out.push(Source::File);
    }
    let (name_prefix, phone_prefix) = match a.q.as_deref().map(query_kind) {
        Some(QueryKind::NamePrefix(p)) => (Some(p), None),
        Some(QueryKind::PhonePrefix(p)) => (None, Some(p)),
        _ => (None, None),
    };
    let tag_filter = |tag: &str| ContactFilter::Tag {
        tag: tag.to_owned(),
        name_prefix: name_prefix.clone(),
        phone_prefix: phone_prefix.clone(),
    };
    if !a.tags_any.is_empty() {
        for tag in &a.tags_any {
            out.push(Source::Walk {
                filter: tag_filter(tag),
                must_have: a.tags_all.clone(),
            });
        }
    } else if let Some(first) = a.tags_all.first() {
        out.push(Source::Walk {
            filter: tag_filter(first),
            must_have: a.tags_all.clone(),
        });
    } else if let Some(p) = name_prefix {
        out.push(Source::Walk {
            filter: ContactFilter::NamePrefix(p),
            must_have: vec![],
        });
    } else if let Some(p) = phone_prefix {
        out.push(Source::Walk {
            filter: ContactFilter::PhonePrefix(p),
            must_have: vec![],
        });
    } else if a.all {
        out.push(Source::Walk {
            filter: ContactFilter::All,
            must_have: vec![],
        });
    }
    out
}

/// A listed contact id (`true`) or phone's contact, if there is one.
async fn listed_contact<S: EngineStore>(
    store: &S,
    tenant_id: &str,
    is_id: bool,
    value: &str,
) -> Result<Option<Contact>, StoreError> {
    if is_id {
        return store.get_contact(tenant_id, value).await;
    }
    let identity = CustomerIdentity {
        phone: Some(value.to_owned()),
        user_id: None,
    };
    match store.match_contact(tenant_id, &identity).await? {
        Some((contact_id, _)) => store.get_contact(tenant_id, &contact_id).await,
        None => Ok(None),
    }
}

/// One audience entry: its contact (`None`: a listed id or phone with no contact) and, from
/// an uploaded file, its row's values.
type Entry = (Option<Contact>, Option<BTreeMap<String, String>>);

/// One page of the audience and where the walk goes on.
async fn audience_page<S: EngineStore, F: ObjectStore>(
    store: &S,
    files: &F,
    b: &Broadcast,
    source: &Source,
    cursor: Option<Position>,
    size: usize,
) -> Result<(Vec<Entry>, Option<Position>), EngineError> {
    match source {
        Source::File => {
            let offset: u64 = cursor
                .as_ref()
                .and_then(|c| c.get("offset"))
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            let want = audience_file::chunk_bytes(size);
            let key = audience_file::audience_key(&b.tenant_id, &b.broadcast_id);
            let Some(chunk) = files.read_range(&key, offset, want).await? else {
                // Gone (expired by the bucket's lifecycle, or removed): nothing more to plan.
                tracing::warn!(broadcast_id = %b.broadcast_id, "a broadcast's audience file is missing");
                return Ok((Vec::new(), None));
            };
            let (rows, used) = audience_file::rows_in(&chunk, size);
            let found = futures::future::join_all(rows.iter().map(|row| async move {
                match (&row.contact_id, &row.phone) {
                    (Some(id), _) => listed_contact(store, &b.tenant_id, true, id).await,
                    (None, Some(phone)) => listed_contact(store, &b.tenant_id, false, phone).await,
                    (None, None) => Ok(None),
                }
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
            let entries = found
                .into_iter()
                .zip(rows)
                .map(|(c, row)| (c, Some(row.values)))
                .collect();
            // The end: a short read used up (or a read that holds no complete row).
            let end = (chunk.len() as u64) < want && used == chunk.len() || used == 0;
            let next = (!end).then(|| Position::from([("offset".to_owned(), (offset + used as u64).to_string())]));
            Ok((entries, next))
        }
        Source::Explicit => {
            let a = &b.spec.audience;
            let offset: usize = cursor
                .as_ref()
                .and_then(|c| c.get("offset"))
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            let entries: Vec<(bool, &String)> = a
                .contact_ids
                .iter()
                .map(|id| (true, id))
                .chain(a.phones.iter().map(|p| (false, p)))
                .skip(offset)
                .take(size)
                .collect();
            let found = futures::future::join_all(
                entries
                    .iter()
                    .map(|(is_id, value)| listed_contact(store, &b.tenant_id, *is_id, value)),
            )
            .await
            .into_iter()
            .map(|c| c.map(|c| (c, None)))
            .collect::<Result<Vec<_>, _>>()?;
            let end = offset + entries.len();
            let next = (end < a.explicit_len()).then(|| Position::from([("offset".to_owned(), end.to_string())]));
            Ok((found, next))
        }
        Source::Walk { filter, must_have } => {
            let page = store.list_contacts(&b.tenant_id, filter, size as i32, cursor).await?;
            let contacts = page
                .items
                .into_iter()
                .filter(|c| must_have.iter().all(|t| c.tags.contains(t)))
                .map(|c| (Some(c), None))
                .collect();
            Ok((contacts, page.next))
        }
    }
}

fn recipient(b: &Broadcast, contact_id: &str, page: u64, now: DateTime<Utc>) -> BroadcastRecipient {
    BroadcastRecipient {
        tenant_id: b.tenant_id.clone(),
        broadcast_id: b.broadcast_id.clone(),
        contact_id: contact_id.to_owned(),
        status: RecipientStatus::Pending,
        reason: None,
        page,
        components: json!([]),
        language: None,
        message_id: None,
        error_code: None,
        attempts: 0,
        retry_at: None,
        sent_at: None,
        replied: false,
        opted_out_after: false,
        updated_at: now,
    }
}

/// Plans pages until the audience is walked or the run's page budget is spent. `None`: the
/// broadcast changed under the engine (paused, cancelled): stop.
async fn plan<S: EngineStore, F: ObjectStore>(
    store: &S,
    files: &F,
    mut b: Broadcast,
    entries: &[TemplateRecord],
    now: DateTime<Utc>,
    config: &EngineConfig,
    report: &mut RunReport,
) -> Result<Option<Broadcast>, StoreError> {
    let settings = store.template_settings(&b.tenant_id).await?;
    let default_language = settings.default_language.as_deref();
    let sources = sources(&b);
    let size = config.page_size.clamp(1, MAX_PAGE_RECIPIENTS);
    let started = std::time::Instant::now();
    // A run plans for at most half its length, so dispatch and follow get their turn.
    let budget = Duration::from_secs(u64::from(config.run_secs / 2).max(1));
    while b.progress.planned_at.is_none() && started.elapsed() < budget {
        let mut after = next(&b, now);
        let Some(source) = sources.get(b.progress.plan_source) else {
            after.progress.planned_at = Some(now);
            after.progress.plan_cursor = None;
            match store.save_broadcast(&after).await {
                Ok(()) => return Ok(Some(after)),
                Err(StoreError::VersionMismatch) => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        // Listed entries (a list or a file) count each repeat as a duplicate.
        let explicit = matches!(source, Source::Explicit | Source::File);
        let (contacts, position) =
            match audience_page(store, files, &b, source, b.progress.plan_cursor.clone(), size).await {
                Ok(page) => page,
                Err(EngineError::Store(e)) => return Err(e),
                Err(e) => {
                    // The file could not be read now: the next run reads this page again.
                    tracing::warn!(error = %e, "could not read a broadcast's audience file");
                    return Ok(Some(b));
                }
            };
        match position {
            Some(p) => after.progress.plan_cursor = Some(p),
            None => {
                after.progress.plan_source += 1;
                after.progress.plan_cursor = None;
            }
        }
        after.progress.plan_pages += 1;
        let page_no = after.progress.plan_pages;
        // Decide each entry; a contact twice in the page is a duplicate at once.
        let mut delta = Counters::default();
        let mut created: Vec<BroadcastRecipient> = Vec::new();
        let mut seen: HashMap<String, ()> = HashMap::new();
        for (contact, row) in &contacts {
            let Some(contact) = contact else {
                delta.targeted += 1;
                delta.skip(SkipReason::UnknownContact);
                continue;
            };
            if seen.insert(contact.contact_id.clone(), ()).is_some() {
                if explicit {
                    delta.targeted += 1;
                    delta.skip(SkipReason::Duplicate);
                }
                continue;
            }
            let mut r = recipient(&b, &contact.contact_id, page_no, now);
            match decide(
                &b.spec,
                b.is_marketing(),
                entries,
                default_language,
                Some(contact),
                row.as_ref(),
            ) {
                Decision::Send { language, components } => {
                    r.language = Some(language);
                    r.components = components;
                }
                Decision::Skip(reason) => {
                    r.status = RecipientStatus::Skipped;
                    r.reason = Some(reason);
                }
            }
            created.push(r);
        }
        // Commit; recipients planned by an earlier page are duplicates (or, from a second
        // tag of `tags_any`, simply already in).
        loop {
            let mut counted = delta.clone();
            for r in &created {
                counted.targeted += 1;
                if let Some(reason) = r.reason {
                    counted.skip(reason);
                }
            }
            let mut attempt = after.clone();
            attempt.counters.add(&counted);
            match store.commit_page(&attempt, &created, &[], None).await {
                Ok(PageCommit::Committed) => {
                    report.planned += created.len() as u64;
                    b = attempt;
                    break;
                }
                Ok(PageCommit::Existing(indices)) => {
                    let mut keep = Vec::with_capacity(created.len());
                    for (i, r) in created.into_iter().enumerate() {
                        if !indices.contains(&i) {
                            keep.push(r);
                        } else if explicit {
                            delta.targeted += 1;
                            delta.skip(SkipReason::Duplicate);
                        }
                    }
                    created = keep;
                }
                Err(StoreError::VersionMismatch) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Some(b))
}

/// The send's `template` object for a recipient.
fn template_content(b: &Broadcast, r: &BroadcastRecipient) -> serde_json::Value {
    let mut content = json!({"name": b.spec.template_name, "language": {"code": r.language}});
    if r.components.as_array().is_some_and(|c| !c.is_empty()) {
        content["components"] = r.components.clone();
    }
    content
}

fn category_of(b: &Broadcast) -> Category {
    crate::template::TemplateCategory::parse_or_marketing(&b.category).send_category()
}

/// Stores the recipient's message (if it is not stored yet) and hands it to the sender.
async fn hand_over<S: EngineStore, Q: SendJobQueue>(
    store: &S,
    queue: &Q,
    b: &Broadcast,
    r: &BroadcastRecipient,
    delay_secs: u32,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(message_id) = &r.message_id else {
        return Ok(false);
    };
    let message = MessageRecord {
        phone_number_id: Some(b.spec.phone_number_id.clone().unwrap_or_default()).filter(|p| !p.is_empty()),
        category: Some(category_of(b)),
        language: r.language.clone(),
        broadcast_id: Some(b.broadcast_id.clone()),
        ..MessageRecord::new(
            &b.tenant_id,
            message_id.clone(),
            &r.contact_id,
            Direction::Outbound,
            "template",
            template_content(b, r),
            MessageStatus::Queued,
            now,
            now,
        )
    };
    match store.create_message(&message).await {
        Ok(()) | Err(StoreError::Conflict(_)) => {}
        // The contact was erased meanwhile: the follow pass finds no message and no contact.
        Err(StoreError::NotFound) => return Ok(false),
        Err(e) => return Err(e),
    }
    let job = SendJob::new(&b.tenant_id, message_id);
    match queue
        .enqueue_send_after(&job, Duration::from_secs(u64::from(delay_secs)))
        .await
    {
        Ok(()) => Ok(true),
        Err(e) => {
            // The message is stored `queued`: the send sweeper queues it again.
            tracing::warn!(error = %e, "could not hand a broadcast message to the sender");
            Ok(false)
        }
    }
}

/// Dispatches pending recipients up to the run's quota and the messaging limit. Returns the
/// broadcast after and how many were handed over (`None`: it changed under the engine).
async fn dispatch<S: EngineStore, Q: SendJobQueue>(
    store: &S,
    queue: &Q,
    mut b: Broadcast,
    now: DateTime<Utc>,
    config: &EngineConfig,
    report: &mut RunReport,
) -> Result<Option<(Broadcast, u64)>, EngineError> {
    let settings = store.broadcast_settings(&b.tenant_id).await?;
    let rate = pacing::broadcast_rate(config.rate_per_second, settings.rate_share_pct);
    let secs = match sending_room(b.spec.quiet_hours.as_ref(), b.spec.tz(), now, config.run_secs) {
        Ok(secs) => secs,
        Err(until) => return wait_out_quiet_hours(store, b, until, now).await,
    };
    let quota = pacing::run_quota(rate, secs);
    let size = config.page_size.clamp(1, MAX_PAGE_RECIPIENTS);
    let mut handed = 0u64;
    let dispatch_started = std::time::Instant::now();
    while handed < quota {
        let page = store
            .broadcast_recipients(
                &b.tenant_id,
                &b.broadcast_id,
                Some(RecipientStatus::Pending),
                size as i32,
                b.progress.dispatch_cursor.clone(),
            )
            .await?;
        let mut usage = store.messaging_usage(&b.tenant_id).await?;
        let mut budget = pacing::budget_left(settings.messaging_limit, &usage.hours, now);
        let room = (quota - handed) as usize;
        let mut changed = Vec::new();
        let mut counted_users = 0u64;
        let mut stopped_at: Option<Position> = None;
        // Whether each counts against the messaging limit (its service window): read only when
        // there is a limit.
        let limited = settings.messaging_limit.is_some();
        let tenant_id = b.tenant_id.as_str();
        let contacts = futures::future::join_all(page.items.iter().take(room).map(|r| async move {
            if limited {
                store.get_contact(tenant_id, &r.contact_id).await.map(Some)
            } else {
                Ok(None)
            }
        }))
        .await;
        for (r, contact) in page.items.iter().take(room).zip(contacts) {
            let counts = limited
                && contact?
                    .flatten()
                    .as_ref()
                    .is_none_or(|c| pacing::counts_against_limit(c.last_inbound_at, now));
            if counts && budget == 0 {
                stopped_at = Some(Position::from([("contact_id".to_owned(), r.contact_id.clone())]));
                break;
            }
            if counts {
                budget -= 1;
                counted_users += 1;
            }
            let mut after = r.clone();
            after.status = RecipientStatus::Queued;
            after.message_id = Some(crate::ids::new_id());
            after.attempts += 1;
            after.updated_at = now;
            changed.push(RecipientChange {
                expected: RecipientStatus::Pending,
                recipient: after,
            });
        }
        let mut after = next(&b, now);
        after.counters.queued += changed.len() as u64;
        let taken_all = changed.len() == page.items.len() && stopped_at.is_none();
        if taken_all {
            after.progress.dispatch_cursor = page.next.clone();
            if page.next.is_none() {
                after.progress.dispatched_at = Some(now);
            }
        } else if let Some(last) = changed.last() {
            // Resume right after the last one taken (recipients sort by contact id).
            after.progress.dispatch_cursor = Some(Position::from([(
                "contact_id".to_owned(),
                last.recipient.contact_id.clone(),
            )]));
        }
        if stopped_at.is_some() {
            after.progress.wait_until = Some(pacing::window_reopens(&usage.hours, now));
            after.progress.waiting_for = Some(SkipReason::MessagingLimit.as_str().to_owned());
        } else {
            after.progress.wait_until = None;
            after.progress.waiting_for = None;
        }
        let usage_write = (counted_users > 0).then(|| {
            pacing::record_use(&mut usage.hours, now, counted_users);
            usage.version += 1;
            usage.clone()
        });
        match store.commit_page(&after, &[], &changed, usage_write.as_ref()).await {
            Ok(_) => {}
            // Paused, cancelled or another run: stop; whatever committed elsewhere stands.
            Err(StoreError::VersionMismatch) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        b = after;
        // A page's messages are stored and queued HAND_OVER_CONCURRENCY at a time: one after
        // the other, at ~5 ms per DynamoDB write and SQS send each, a run could hand over only
        // ~6,000 of the 60,000 sends a minute at 1,000/s asks for. SQS counts a delay from the
        // enqueue, so the time the run has spent comes off it: the i-th send is due i / rate
        // seconds after the dispatch began, however long handing the others over took.
        // Built first, run HAND_OVER_CONCURRENCY at a time (a closure inside the stream would
        // make the run's future not `Send` for every lifetime, which `tokio::spawn` needs).
        let b_ref = &b;
        let hand_overs: Vec<_> = changed
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let due = pacing::send_delay_secs(handed + i as u64, rate);
                async move {
                    let spent = u32::try_from(dispatch_started.elapsed().as_secs()).unwrap_or(u32::MAX);
                    hand_over(store, queue, b_ref, &c.recipient, due.saturating_sub(spent), now).await
                }
            })
            .collect();
        let handed_over: Vec<Result<bool, StoreError>> = futures::stream::iter(hand_overs)
            .buffered(HAND_OVER_CONCURRENCY)
            .collect()
            .await;
        for result in handed_over {
            if !result? {
                report.enqueue_failures += 1;
            }
        }
        handed += changed.len() as u64;
        report.dispatched += changed.len() as u64;
        if stopped_at.is_some() || b.progress.dispatched_at.is_some() || page.items.is_empty() {
            break;
        }
    }
    Ok(Some((b, handed)))
}

/// Records that the broadcast waits for its quiet hours to end (`until`); nothing is handed
/// over meanwhile. `None`: it changed under the engine.
async fn wait_out_quiet_hours<S: EngineStore>(
    store: &S,
    b: Broadcast,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<(Broadcast, u64)>, EngineError> {
    if b.progress.wait_until == Some(until) && b.progress.waiting_for.as_deref() == Some(QUIET_HOURS) {
        return Ok(Some((b, 0)));
    }
    let mut after = next(&b, now);
    after.progress.wait_until = Some(until);
    after.progress.waiting_for = Some(QUIET_HOURS.to_owned());
    match store.save_broadcast(&after).await {
        Ok(()) => Ok(Some((after, 0))),
        Err(StoreError::VersionMismatch) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `waiting_for` while quiet hours hold the sends back.
pub const QUIET_HOURS: &str = "quiet_hours";

/// Messages of a page stored and handed to the sender at once (see `dispatch`).
const HAND_OVER_CONCURRENCY: usize = 16;

/// The recipient status a message's status means.
fn status_of(message: &MessageRecord) -> RecipientStatus {
    match message.status {
        MessageStatus::Queued => RecipientStatus::Queued,
        MessageStatus::Sent | MessageStatus::Unknown => RecipientStatus::Sent,
        MessageStatus::Delivered => RecipientStatus::Delivered,
        MessageStatus::Read | MessageStatus::Played => RecipientStatus::Read,
        MessageStatus::Failed | MessageStatus::Rejected | MessageStatus::Received => RecipientStatus::Failed,
    }
}

fn rank(s: RecipientStatus) -> u8 {
    match s {
        RecipientStatus::Sent => 1,
        RecipientStatus::Delivered => 2,
        RecipientStatus::Read => 3,
        _ => 0,
    }
}

/// How often a followed recipient's contact is read for a reply or an opt-out.
const CONTACT_RECHECK_MINUTES: i64 = 10;

/// Meta's codes for a template that may not be sent now (paused, disabled, gone): the
/// recipient goes back to `pending` and is sent once the template is approved again.
const TEMPLATE_STOP_CODES: [i64; 3] = [132015, 132016, 132001];

/// Follows the open recipients once; completes the broadcast when nothing is left to send.
async fn follow<S: EngineStore, Q: SendJobQueue>(
    store: &S,
    queue: &Q,
    mut b: Broadcast,
    now: DateTime<Utc>,
    config: &EngineConfig,
    mut sent_this_run: u64,
    report: &mut RunReport,
) -> Result<(), EngineError> {
    let size = config.page_size.clamp(1, MAX_PAGE_RECIPIENTS);
    let settings = store.broadcast_settings(&b.tenant_id).await?;
    let rate = pacing::broadcast_rate(config.rate_per_second, settings.rate_share_pct);
    // Retries of held-back recipients wait out quiet hours like first sends.
    let secs = sending_room(b.spec.quiet_hours.as_ref(), b.spec.tz(), now, config.run_secs).unwrap_or(0);
    let quota = pacing::run_quota(rate, secs);
    let mut unsettled = 0u64;
    let mut start = None;
    loop {
        let page = store
            .broadcast_recipients(&b.tenant_id, &b.broadcast_id, None, size as i32, start)
            .await?;
        // Handed over in this very run: nothing to read back yet (still unsettled).
        let fresh = |r: &BroadcastRecipient| r.status == RecipientStatus::Queued && r.updated_at == now;
        unsettled += page.items.iter().filter(|r| fresh(r)).count() as u64;
        let open: Vec<&BroadcastRecipient> = page
            .items
            .iter()
            .filter(|r| r.status.is_open() && r.message_id.is_some() && !fresh(r))
            .collect();
        unsettled += page
            .items
            .iter()
            .filter(|r| !r.status.is_settled() && r.message_id.is_none())
            .count() as u64;
        // The page's messages in one batch read (one GetItem each cost a request per
        // recipient per follow pass).
        let ids: Vec<String> = open.iter().filter_map(|r| r.message_id.clone()).collect();
        // Boxed (here and below): the batch read's future is large, and inline it would grow
        // every caller's future.
        let mut messages: HashMap<String, MessageRecord> = Box::pin(store.get_messages(&b.tenant_id, &ids))
            .await?
            .into_iter()
            .map(|m| (m.message_id.clone(), m))
            .collect();
        let mut changed = Vec::new();
        let mut resend = Vec::new();
        let mut delta = Counters::default();
        // Recipients whose status was worked out, with whether their contact is to be read for
        // replies and opt-outs (read afterwards, in one batch).
        let mut evaluated: Vec<(&BroadcastRecipient, BroadcastRecipient, bool)> = Vec::new();
        for r in open {
            let mut after = r.clone();
            after.updated_at = now;
            let message = r.message_id.as_ref().and_then(|id| messages.remove(id));
            match message {
                None if r.status == RecipientStatus::Queued => {
                    // Committed but never stored (a crash in between), or its contact erased.
                    if b.status == BroadcastStatus::Running {
                        resend.push(r.clone());
                    }
                    unsettled += 1;
                    continue;
                }
                None => continue,
                Some(m) => {
                    let to = status_of(&m);
                    let code = m.error.as_ref().map(|e| e.code);
                    if to == RecipientStatus::Failed && code == Some(HELD_BACK_CODE) {
                        if r.status == RecipientStatus::HeldBack {
                            // Waiting for its retry.
                            if r.retry_at.is_some_and(|t| t <= now)
                                && b.status == BroadcastStatus::Running
                                && sent_this_run < quota
                            {
                                after.status = RecipientStatus::Queued;
                                after.message_id = Some(crate::ids::new_id());
                                after.attempts += 1;
                                after.retry_at = None;
                                sent_this_run += 1;
                                delta.queued += 1;
                                resend.push(after.clone());
                            } else {
                                unsettled += 1;
                                continue;
                            }
                        } else {
                            match pacing::held_back_retry(r.attempts, now) {
                                Some(at) => {
                                    after.status = RecipientStatus::HeldBack;
                                    after.retry_at = Some(at);
                                    delta.held_back += 1;
                                }
                                None => {
                                    after.status = RecipientStatus::Capped;
                                    after.error_code = code;
                                    delta.capped += 1;
                                }
                            }
                        }
                    } else if to == RecipientStatus::Failed && code.is_some_and(|c| TEMPLATE_STOP_CODES.contains(&c)) {
                        // Refused for the template's state, not the recipient's: send again
                        // once the broadcast runs (a new message; this one never left).
                        after.status = RecipientStatus::Pending;
                        after.message_id = None;
                        b.progress.dispatched_at = None;
                        b.progress.dispatch_cursor = None;
                    } else if to == RecipientStatus::Failed {
                        after.status = RecipientStatus::Failed;
                        after.error_code = code;
                        delta.fail(code.unwrap_or(0));
                    } else if rank(to) > rank(r.status) {
                        after.status = to;
                        if r.sent_at.is_none() {
                            after.sent_at = m.status_at.get("sent").copied().or(Some(now));
                        }
                        for step in [RecipientStatus::Sent, RecipientStatus::Delivered, RecipientStatus::Read] {
                            if rank(step) > rank(r.status) && rank(step) <= rank(to) {
                                match step {
                                    RecipientStatus::Sent => delta.sent += 1,
                                    RecipientStatus::Delivered => delta.delivered += 1,
                                    _ => delta.read += 1,
                                }
                            }
                        }
                    } else if to == RecipientStatus::Queued {
                        unsettled += 1;
                        continue;
                    }
                    // Replies and later opt-outs, while the recipient is followed: read when its
                    // status moved, else at most every few minutes.
                    let moved = after.status != r.status;
                    let due = now - r.updated_at >= chrono::Duration::minutes(CONTACT_RECHECK_MINUTES);
                    let check = after.status != RecipientStatus::Pending
                        && rank(after.status) > 0
                        && (moved || due)
                        && (!r.replied || !r.opted_out_after);
                    evaluated.push((r, after, check));
                }
            }
        }
        let to_check: Vec<String> = evaluated
            .iter()
            .filter(|(_, _, check)| *check)
            .map(|(r, _, _)| r.contact_id.clone())
            .collect();
        let mut contacts: HashMap<String, Contact> = if to_check.is_empty() {
            HashMap::new()
        } else {
            Box::pin(store.get_contacts(&b.tenant_id, &to_check))
                .await?
                .into_iter()
                .map(|c| (c.contact_id.clone(), c))
                .collect()
        };
        for (r, mut after, check) in evaluated {
            if check && let Some(contact) = contacts.remove(&r.contact_id) {
                let since = after.sent_at.unwrap_or(now);
                if !r.replied && contact.last_inbound_at.is_some_and(|t| t > since) {
                    after.replied = true;
                    delta.replied += 1;
                }
                if !r.opted_out_after
                    && contact.consent.marketing == MarketingConsent::OptedOut
                    && contact.consent.updated_at.is_some_and(|t| t > since)
                {
                    after.opted_out_after = true;
                    delta.opted_out_after += 1;
                }
            }
            let unchanged = BroadcastRecipient {
                updated_at: r.updated_at,
                ..after.clone()
            } == *r;
            if unchanged {
                if !after.status.is_settled() {
                    unsettled += 1;
                }
                continue;
            }
            if !after.status.is_settled() {
                unsettled += 1;
            }
            changed.push(RecipientChange {
                expected: r.status,
                recipient: after,
            });
        }
        if !changed.is_empty() {
            let mut after = next(&b, now);
            after.counters.add(&delta);
            match store.commit_page(&after, &[], &changed, None).await {
                Ok(_) => b = after,
                Err(StoreError::VersionMismatch) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            report.followed += changed.len() as u64;
        }
        for r in &resend {
            let delay = pacing::send_delay_secs(sent_this_run, rate);
            if !hand_over(store, queue, &b, r, delay, now).await? {
                report.enqueue_failures += 1;
            }
        }
        match page.next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    if b.status == BroadcastStatus::Running
        && b.progress.dispatched_at.is_some()
        && unsettled == 0
        && apply(store, &b, Action::Complete, None, now).await?.is_some()
    {
        report.completed += 1;
    }
    Ok(())
}
