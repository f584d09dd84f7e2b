//! Creating a broadcast and changing its state on a caller's request — the one implementation
//! behind `POST /v1/broadcasts…` and `crmctl broadcast`. Each change is a conditional write on
//! the version read.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::audience_file::{self, FileSummary};
use super::spec::{SpecError, check_file_sources, parse_spec};
use crate::blob::BlobError;
use crate::objects::ObjectStore;

/// Days an uploaded audience file is kept at most (the exports bucket's lifecycle rule).
pub const FILE_DAYS: i64 = 30;
use super::{Action, Broadcast, BroadcastStatus, Counters, Progress, transition};
use crate::store::{BroadcastStore, StoreError, TemplateStore, TenantStore};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no such broadcast")]
    NotFound,
    #[error("the registry has no such template (in that language); sync or create it first")]
    TemplateNotFound,
    #[error("the template is not approved (in the broadcast's language)")]
    TemplateNotApproved,
    #[error("from is not one of the tenant's numbers")]
    UnknownNumber,
    #[error("no such upload: upload the file first (POST /v1/broadcasts/uploads), once per broadcast")]
    UploadNotFound,
    #[error("the broadcast's audience file has expired (kept {FILE_DAYS} days); create it again with a new upload")]
    AudienceExpired,
    #[error("the audience file could not be read or stored: {0}")]
    Files(#[from] BlobError),
    #[error("a {} broadcast cannot {}", .from.as_str(), .action.as_str())]
    InvalidState { from: BroadcastStatus, action: Action },
    #[error("the broadcast changed while this request ran; read it and retry")]
    Concurrent,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::VersionMismatch => ControlError::Concurrent,
            e => ControlError::Store(e),
        }
    }
}

/// [`create`], with the audience file an `audience.upload_id` names: the upload is checked
/// whole (a bad row is refused before anything is stored), kept as the broadcast's audience
/// file, and deleted (an upload makes one broadcast).
pub async fn create_with_upload<S: BroadcastStore + TemplateStore + TenantStore, F: ObjectStore>(
    store: &S,
    files: &F,
    tenant_id: &str,
    body: &Value,
    created_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Broadcast, ControlError> {
    let Some(upload_id) = body
        .pointer("/audience/upload_id")
        .and_then(Value::as_str)
        .filter(|id| crate::ids::is_valid_id(id))
    else {
        return create(store, tenant_id, body, created_by, now, None).await;
    };
    let upload = audience_file::upload_key(tenant_id, upload_id);
    // One byte over the limit tells an oversized file from one exactly at it.
    let data = files
        .read_range(&upload, 0, audience_file::MAX_UPLOAD_BYTES + 1)
        .await?
        .ok_or(ControlError::UploadNotFound)?;
    let parsed = audience_file::parse_upload(&data)?;
    let broadcast_id = crate::ids::new_id();
    let key = audience_file::audience_key(tenant_id, &broadcast_id);
    files
        .put_object(&key, parsed.lines.into(), "application/x-ndjson")
        .await?;
    let file = UploadedFile {
        broadcast_id,
        summary: parsed.summary,
    };
    match create(store, tenant_id, body, created_by, now, Some(file)).await {
        Ok(b) => {
            if let Err(e) = files.delete_keys(&[upload]).await {
                // The bucket's lifecycle rule removes uploads after a day anyway.
                tracing::warn!(error = %e, "could not delete a taken audience upload");
            }
            Ok(b)
        }
        Err(e) => {
            if let Err(e) = files.delete_keys(&[key]).await {
                tracing::warn!(error = %e, "could not delete the audience file of a refused broadcast");
            }
            Err(e)
        }
    }
}

/// An uploaded audience, checked and stored under the broadcast id it was stored for.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub broadcast_id: String,
    pub summary: FileSummary,
}

/// Validates `body` (the API's), checks the template and number, and stores a `draft`.
pub async fn create<S: BroadcastStore + TemplateStore + TenantStore>(
    store: &S,
    tenant_id: &str,
    body: &Value,
    created_by: Option<&str>,
    now: DateTime<Utc>,
    file: Option<UploadedFile>,
) -> Result<Broadcast, ControlError> {
    // Local times in the body are the tenant's (its reports' time zone) unless it names a zone.
    let zone = store
        .get_tenant(tenant_id)
        .await?
        .map_or_else(|| "UTC".to_owned(), |t| t.reports.time_zone);
    let mut spec = parse_spec(body, now, &zone)?;
    let broadcast_id = match file {
        Some(file) => {
            check_file_sources(&spec, &file.summary)?;
            // The bucket keeps an audience file 30 days at most (its lifecycle rule).
            if spec
                .start_at
                .is_some_and(|s| s > now + chrono::Duration::days(FILE_DAYS))
            {
                return Err(SpecError {
                    code: "invalid_start_at",
                    message: format!("a broadcast with an uploaded audience must start within {FILE_DAYS} days"),
                }
                .into());
            }
            spec.audience.upload_id = None;
            spec.audience.file = Some(file.summary);
            file.broadcast_id
        }
        None if spec.audience.upload_id.is_some() => return Err(ControlError::UploadNotFound),
        None => crate::ids::new_id(),
    };
    let entries = store.template_languages(tenant_id, &spec.template_name).await?;
    let first = entries
        .iter()
        .find(|e| spec.language.as_ref().is_none_or(|l| &e.language == l))
        .ok_or(ControlError::TemplateNotFound)?;
    if let Some(from) = &spec.phone_number_id {
        let numbers = store.numbers(tenant_id).await?;
        if !numbers.iter().any(|n| &n.phone_number_id == from) {
            return Err(ControlError::UnknownNumber);
        }
    }
    let broadcast = Broadcast {
        tenant_id: tenant_id.to_owned(),
        broadcast_id,
        category: first.category.as_str().to_owned(),
        spec,
        status: BroadcastStatus::Draft,
        pause_reason: None,
        counters: Counters::default(),
        progress: Progress::default(),
        created_by: created_by.map(str::to_owned),
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        version: 1,
    };
    store.create_broadcast(&broadcast).await?;
    Ok(broadcast)
}

/// Applies a caller's action; returns the broadcast before and after.
pub async fn act<S: BroadcastStore + TemplateStore>(
    store: &S,
    tenant_id: &str,
    broadcast_id: &str,
    action: Action,
    now: DateTime<Utc>,
) -> Result<(Broadcast, Broadcast), ControlError> {
    if !crate::ids::is_valid_id(broadcast_id) {
        return Err(ControlError::NotFound);
    }
    let b = store
        .get_broadcast(tenant_id, broadcast_id)
        .await?
        .ok_or(ControlError::NotFound)?;
    let starts_later = b.spec.start_at.is_some_and(|s| s > now);
    let status =
        transition(b.status, action, starts_later).ok_or(ControlError::InvalidState { from: b.status, action })?;
    let unplanned_file = b.spec.audience.file.is_some() && b.progress.planned_at.is_none();
    if matches!(action, Action::Start | Action::Resume)
        && unplanned_file
        && now - b.created_at > chrono::Duration::days(FILE_DAYS)
    {
        return Err(ControlError::AudienceExpired);
    }
    if matches!(action, Action::Start | Action::Resume) {
        let entries = store.template_languages(tenant_id, &b.spec.template_name).await?;
        let approved = entries
            .iter()
            .any(|e| e.is_approved() && b.spec.language.as_ref().is_none_or(|l| &e.language == l));
        if !approved {
            return Err(ControlError::TemplateNotApproved);
        }
    }
    let mut after = b.clone();
    after.status = status;
    after.pause_reason = None;
    after.version += 1;
    after.updated_at = now;
    if status == BroadcastStatus::Running && after.started_at.is_none() {
        after.started_at = Some(now);
    }
    if status.is_final() {
        after.finished_at = Some(now);
    }
    store.save_broadcast(&after).await?;
    Ok((b, after))
}

fn digits(raw: &str) -> String {
    raw.chars().filter(char::is_ascii_digit).collect()
}

/// A display number as the quality items key it (digits only).
pub fn display_key(raw: &str) -> String {
    digits(raw)
}

/// The tenant's numbers a quality change of `display` (Meta's `display_phone_number`) in WABA
/// `waba_id` is about: the number(s) recorded with that display number; when none is, every
/// number of that WABA whose display number we do not know (one of them is the flagged one,
/// and pausing too much is safe where sending on is not).
pub fn numbers_for_display(numbers: &[crate::tenant::PhoneNumber], waba_id: &str, display: &str) -> Vec<String> {
    let wanted = digits(display);
    let in_waba = || numbers.iter().filter(|n| n.waba_id == waba_id);
    let matched: Vec<String> = in_waba()
        .filter(|n| n.display_phone_number.as_deref().is_some_and(|d| digits(d) == wanted))
        .map(|n| n.phone_number_id.clone())
        .collect();
    if !matched.is_empty() || wanted.is_empty() {
        return matched;
    }
    in_waba()
        .filter(|n| n.display_phone_number.is_none())
        .map(|n| n.phone_number_id.clone())
        .collect()
}

/// Phone number id → time of its red flag, for the numbers whose last stated quality is red.
pub fn red_numbers(
    numbers: &[crate::tenant::PhoneNumber],
    qualities: &[super::NumberQuality],
) -> std::collections::BTreeMap<String, DateTime<Utc>> {
    let mut red = std::collections::BTreeMap::new();
    for q in qualities.iter().filter(|q| q.red) {
        for id in numbers_for_display(numbers, &q.waba_id, &q.display_phone_number) {
            let at: &mut DateTime<Utc> = red.entry(id).or_insert(q.changed_at);
            *at = (*at).max(q.changed_at);
        }
    }
    red
}

/// Whether the engine pauses `b` for its number's quality: it is scheduled or running, its
/// number (`primary` when it names none) is flagged red, and it was not paused for that flag
/// (or a later one) before — a caller's resume after a flag sticks.
pub fn quality_flag_for(
    b: &Broadcast,
    primary: &str,
    red: &std::collections::BTreeMap<String, DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    if !b.status.is_active() {
        return None;
    }
    let at = *red.get(b.spec.phone_number_id.as_deref().unwrap_or(primary))?;
    b.progress.quality_flag_at.is_none_or(|seen| seen < at).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::PhoneNumber;

    fn number(id: &str, waba: &str, display: Option<&str>) -> PhoneNumber {
        PhoneNumber {
            phone_number_id: id.into(),
            display_phone_number: display.map(str::to_owned),
            waba_id: waba.into(),
            label: None,
            added_at: Utc::now(),
        }
    }

    #[test]
    fn a_quality_change_finds_its_number_by_display_number_within_the_waba() {
        let numbers = vec![
            number("primary", "w1", None),
            number("second", "w1", Some("+1 555 078 3881")),
            number("third", "w1", Some("+1 555 000 0000")),
            number("other-waba", "w2", Some("15550783881")),
        ];
        assert_eq!(numbers_for_display(&numbers, "w1", "15550783881"), vec!["second"]);
        // Not a known display number: the numbers we cannot rule out (display unknown).
        assert_eq!(numbers_for_display(&numbers, "w1", "15559999999"), vec!["primary"]);
        assert!(numbers_for_display(&numbers, "w3", "15550783881").is_empty());
        assert!(numbers_for_display(&numbers, "w1", "").is_empty());
    }

    #[test]
    fn a_red_flag_pauses_once_and_a_later_flag_again() {
        let numbers = vec![number("100", "w1", None), number("200", "w1", Some("15550783881"))];
        let t0 = Utc::now();
        let quality = |red: bool, at: DateTime<Utc>| super::super::NumberQuality {
            waba_id: "w1".into(),
            display_phone_number: "15550783881".into(),
            red,
            changed_at: at,
        };
        let red = red_numbers(&numbers, &[quality(true, t0)]);
        assert_eq!(red.keys().collect::<Vec<_>>(), vec!["200"]);
        assert!(red_numbers(&numbers, &[quality(false, t0)]).is_empty(), "unflagged");

        let body = serde_json::json!({"name": "n", "template": {"name": "promo", "language": "en"},
            "audience": {"contact_ids": [crate::ids::new_id()]}, "from": "200"});
        let spec = parse_spec(&body, t0, "UTC").unwrap();
        let mut b = Broadcast {
            tenant_id: "t".into(),
            broadcast_id: crate::ids::new_id(),
            spec,
            category: "MARKETING".into(),
            status: BroadcastStatus::Running,
            pause_reason: None,
            counters: Counters::default(),
            progress: Progress::default(),
            created_by: None,
            created_at: t0,
            updated_at: t0,
            started_at: None,
            finished_at: None,
            version: 1,
        };
        assert_eq!(quality_flag_for(&b, "100", &red), Some(t0));
        b.progress.quality_flag_at = Some(t0);
        assert_eq!(
            quality_flag_for(&b, "100", &red),
            None,
            "resumed after this flag: sticks"
        );
        let later = red_numbers(&numbers, &[quality(true, t0 + chrono::Duration::hours(1))]);
        assert!(
            quality_flag_for(&b, "100", &later).is_some(),
            "a later flag pauses again"
        );
        b.status = BroadcastStatus::Draft;
        assert_eq!(quality_flag_for(&b, "100", &later), None);
        b.status = BroadcastStatus::Running;
        b.spec.phone_number_id = None;
        assert_eq!(
            quality_flag_for(&b, "100", &later),
            None,
            "the default number is not flagged"
        );
    }
}
