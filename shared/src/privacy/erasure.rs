//! Contact erasure. The contact first disappears atomically (profile, phone and user-id records,
//! and the erasure record, in one transaction); then everything it owns is deleted in batches:
//! its objects in both buckets, its messages with their wamid pointers and parked statuses, and
//! everything in its partition together with what the reference items there point at
//! (idempotency records, wamid partitions, export records). Progress is saved in the erasure
//! record; whatever does not finish within a time budget continues on the erasure queue, and
//! every erasure enqueues a delayed safety-net job before it starts, so a crash never leaves an
//! erasure half-done with nobody to resume it.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{ErasureCounts, ErasureJob, ErasureRecord, ErasureStatus, ErasureStep, Privacy, PrivacyError, erasure_id};
use crate::blob::contact_media_prefix;
use crate::store::keys::*;
use crate::store::privacy::{ErasureStart, Item, ItemKey, Lease, PageQuery, visible_erasure};
use crate::store::{ContactStore, StoreError};

/// Messages read per page (bounded further by DynamoDB's 1 MB pages).
const MESSAGE_PAGE: i32 = 1000;
/// Items of a contact's partition read per page.
const PARTITION_PAGE: i32 = 1000;
/// Wamid partitions queried at the same time.
const WAMID_QUERIES: usize = 16;
/// Delay of the safety-net job: longer than the API function may run.
pub const SAFETY_NET_DELAY: Duration = Duration::from_secs(120);
/// A lease outlives its holder's budget by this much (time to save and hand off).
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// The eraser function saves progress at least this often.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(20);

/// Attributes of a message a delete cascades from.
pub(crate) const MESSAGE_ATTRS: &[&str] = &[PK, SK, "contact_id", "direction", "wamid", "media"];

/// What happened to an erasure handed to the eraser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continued {
    /// Finished now.
    Completed(ErasureRecord),
    /// Progress saved; continues on the queue.
    InProgress(ErasureRecord),
    /// Finished earlier, or its record is gone: nothing to do.
    NothingToDo,
    /// Another worker holds its lease.
    Busy,
}

fn encode_cursor(key: Item) -> String {
    let map: BTreeMap<String, String> = key
        .into_iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|s| (k, s.clone())))
        .collect();
    serde_json::to_string(&map).expect("a map of strings serializes")
}

fn decode_cursor(cursor: &str) -> Result<Item, StoreError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(cursor).map_err(|e| StoreError::Corrupt(format!("erasure cursor: {e}")))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, aws_sdk_dynamodb::types::AttributeValue::S(v)))
        .collect())
}

pub(crate) fn attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// The S3 key of a message's stored media, from its `media` map.
pub(crate) fn media_s3_key(item: &Item) -> Option<&str> {
    item.get("media")?
        .as_m()
        .ok()?
        .get("s3_key")?
        .as_s()
        .ok()
        .map(String::as_str)
}

/// How a run under a lease ended.
enum Driven {
    Completed(ErasureRecord),
    /// Progress saved, continuation queued.
    HandedOff(ErasureRecord),
    /// The lease lapsed or the record vanished: another runner (or a purge) owns it now.
    LeaseLost(ErasureRecord),
}

/// What deleting a page of messages removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MessagesDeleted {
    pub messages: u64,
    pub media_objects: u64,
    pub pointers: u64,
    pub statuses: u64,
    pub other_items: u64,
}

impl Privacy {
    /// Erases a contact (the API's `DELETE /v1/contacts/{id}`): `None` when the tenant has no
    /// such contact and never erased one with this id; the earlier receipt when it did.
    pub async fn request_erasure(
        &self,
        tenant_id: &str,
        contact_id: &str,
        actor: Option<&str>,
    ) -> Result<Option<ErasureRecord>, PrivacyError> {
        let id = erasure_id(tenant_id, contact_id);
        let Some(mut contact) = self.store.load_contact(tenant_id, contact_id).await? else {
            return Ok(visible_erasure(
                self.store.get_erasure(tenant_id, &id).await?,
                Utc::now(),
            ));
        };
        let settings = self.settings(tenant_id).await?;
        // The safety net goes first: if this process dies after the contact vanished, the
        // eraser still finds the erasure and finishes it.
        let job = ErasureJob {
            tenant_id: tenant_id.to_owned(),
            erasure_id: id.clone(),
        };
        self.erasure_jobs.send(&job, SAFETY_NET_DELAY).await?;
        for _ in 0..4 {
            let now = Utc::now();
            let mut record = ErasureRecord::new(tenant_id, contact_id, actor, settings.audit_days, now);
            let lease = Lease::new(now + self.request_budget + LEASE_MARGIN);
            match self.store.start_erasure(&contact, &record, &lease).await? {
                ErasureStart::Started { identities } => {
                    record.deleted.contacts = 1;
                    record.deleted.identities = identities;
                    let deadline = Instant::now() + self.request_budget;
                    return Ok(Some(match self.drive(record, lease, deadline, None).await? {
                        Driven::Completed(r) | Driven::HandedOff(r) => r,
                        // Someone else took over (this request outlived its lease): their view.
                        Driven::LeaseLost(r) => self.store.get_erasure(tenant_id, &id).await?.unwrap_or(r),
                    }));
                }
                ErasureStart::AlreadyErased => {
                    return Ok(visible_erasure(self.store.get_erasure(tenant_id, &id).await?, now));
                }
                ErasureStart::ContactChanged => match self.store.load_contact(tenant_id, contact_id).await? {
                    Some(fresh) => contact = fresh,
                    None => return Ok(visible_erasure(self.store.get_erasure(tenant_id, &id).await?, now)),
                },
            }
        }
        Err(StoreError::VersionMismatch.into())
    }

    /// The receipt of an erasure, unless it is unknown or past its retention.
    pub async fn erasure_receipt(
        &self,
        tenant_id: &str,
        erasure_id: &str,
    ) -> Result<Option<ErasureRecord>, PrivacyError> {
        Ok(visible_erasure(
            self.store.get_erasure(tenant_id, erasure_id).await?,
            Utc::now(),
        ))
    }

    /// Continues an unfinished erasure for up to `budget` (the eraser function).
    pub async fn continue_erasure(
        &self,
        tenant_id: &str,
        erasure_id: &str,
        budget: Duration,
    ) -> Result<Continued, PrivacyError> {
        let now = Utc::now();
        let lease = Lease::new(now + budget + LEASE_MARGIN);
        match self.store.claim_erasure(tenant_id, erasure_id, &lease, now).await? {
            Some(record) => Ok(
                match self
                    .drive(record, lease, Instant::now() + budget, Some(CHECKPOINT_EVERY))
                    .await?
                {
                    Driven::Completed(r) => Continued::Completed(r),
                    Driven::HandedOff(r) => Continued::InProgress(r),
                    Driven::LeaseLost(_) => Continued::NothingToDo,
                },
            ),
            None => match self.store.get_erasure(tenant_id, erasure_id).await? {
                Some(r) if r.status == ErasureStatus::InProgress => Ok(Continued::Busy),
                _ => Ok(Continued::NothingToDo),
            },
        }
    }

    /// Runs an erasure under `lease` until it is done or `deadline` passes; then saves it
    /// (complete, or with its progress, handing it to the queue).
    async fn drive(
        &self,
        mut record: ErasureRecord,
        lease: Lease,
        deadline: Instant,
        checkpoint_every: Option<Duration>,
    ) -> Result<Driven, PrivacyError> {
        let mut handled = HashSet::new();
        let mut last_save = Instant::now();
        loop {
            if record.progress.step == ErasureStep::Done {
                record.status = ErasureStatus::Completed;
                record.completed_at = Some(Utc::now());
                record.progress.cursor = None;
                return match self.store.save_erasure(&record, &lease, None).await {
                    Ok(()) => Ok(Driven::Completed(record)),
                    // This run outlived its lease (or the record is gone): not ours to report.
                    Err(StoreError::VersionMismatch) => Ok(Driven::LeaseLost(record)),
                    Err(e) => Err(e.into()),
                };
            }
            if Instant::now() >= deadline {
                return self.hand_off(record, &lease).await;
            }
            if let Err(err) = self.step(&mut record, &mut handled).await {
                tracing::warn!(error = %err, erasure_id = %record.erasure_id, "erasure step failed; handing off");
                return self.hand_off(record, &lease).await;
            }
            if let Some(every) = checkpoint_every
                && last_save.elapsed() >= every
            {
                match self.store.save_erasure(&record, &lease, Some(&lease)).await {
                    Ok(()) => last_save = Instant::now(),
                    Err(StoreError::VersionMismatch) => return Ok(Driven::LeaseLost(record)),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    /// Saves progress, gives up the lease and queues the continuation.
    async fn hand_off(&self, record: ErasureRecord, lease: &Lease) -> Result<Driven, PrivacyError> {
        match self.store.save_erasure(&record, lease, None).await {
            Ok(()) => {}
            Err(StoreError::VersionMismatch) => return Ok(Driven::LeaseLost(record)),
            Err(e) => return Err(e.into()),
        }
        let job = ErasureJob {
            tenant_id: record.tenant_id.clone(),
            erasure_id: record.erasure_id.clone(),
        };
        if let Err(err) = self.erasure_jobs.send(&job, Duration::ZERO).await {
            // The safety-net job (or the redelivery of the current one) resumes it.
            tracing::warn!(error = %err, erasure_id = %record.erasure_id, "could not queue the erasure's continuation");
        }
        Ok(Driven::HandedOff(record))
    }

    /// Runs an erasure to the end without lease or checkpoints (tenant offboarding, which
    /// deletes the record afterwards).
    pub(crate) async fn finish_erasure_now(&self, mut record: ErasureRecord) -> Result<ErasureCounts, PrivacyError> {
        let mut handled = HashSet::new();
        let before = record.deleted;
        while record.progress.step != ErasureStep::Done {
            self.step(&mut record, &mut handled).await?;
        }
        let mut added = record.deleted;
        for (a, b) in added.fields_mut().into_iter().zip(before.values()) {
            *a -= b;
        }
        Ok(added)
    }

    /// One unit of erasure work (a page of objects, messages or partition items).
    async fn step(&self, record: &mut ErasureRecord, handled: &mut HashSet<String>) -> Result<(), PrivacyError> {
        let (t, c) = (record.tenant_id.clone(), record.contact_id.clone());
        let prefix = contact_media_prefix(&t, &c);
        let progress = &mut record.progress;
        let counts = &mut record.deleted;
        match progress.step {
            ErasureStep::Objects | ErasureStep::FinalObjects => {
                let (media, more_media) = self.media.delete_prefix_page(&prefix).await?;
                let (exports, more_exports) = self.exports.delete_prefix_page(&prefix).await?;
                counts.media_objects += media;
                counts.export_objects += exports;
                if !more_media && !more_exports {
                    progress.step = match progress.step {
                        ErasureStep::Objects => ErasureStep::Messages,
                        _ => ErasureStep::Done,
                    };
                }
            }
            ErasureStep::Messages => {
                let query = PageQuery::index(GSI1, GSI1_PK, GSI1_SK, conversation_gsi1pk(&t, &c))
                    .project(MESSAGE_ATTRS)
                    .limit(MESSAGE_PAGE);
                let start = progress.cursor.as_deref().map(decode_cursor).transpose()?;
                let page = self.store.query_page(&query, start).await?;
                let deleted = self
                    .delete_messages(&t, &page.items, Some(&prefix), false, handled)
                    .await?;
                counts.messages += deleted.messages;
                counts.media_objects += deleted.media_objects;
                counts.pointers += deleted.pointers;
                counts.statuses += deleted.statuses;
                counts.other_items += deleted.other_items;
                match page.next {
                    Some(next) => progress.cursor = Some(encode_cursor(next)),
                    None if !progress.verified => {
                        // Once more from the start: anything written while the walk ran.
                        progress.verified = true;
                        progress.cursor = None;
                    }
                    None => {
                        progress.cursor = None;
                        progress.step = ErasureStep::ContactItems;
                    }
                }
            }
            ErasureStep::ContactItems => {
                let more = self
                    .delete_contact_partition_page(&t, &c, false, counts, handled)
                    .await?;
                if !more {
                    progress.step = ErasureStep::FinalObjects;
                }
            }
            ErasureStep::Done => {}
        }
        Ok(())
    }

    /// Deletes one page of a contact's partition and what its reference items point at;
    /// returns whether the partition had anything left. With `with_identities`, a profile
    /// found there takes its phone and user-id records with it (offboarding).
    pub(crate) async fn delete_contact_partition_page(
        &self,
        tenant_id: &str,
        contact_id: &str,
        with_identities: bool,
        counts: &mut ErasureCounts,
        handled: &mut HashSet<String>,
    ) -> Result<bool, PrivacyError> {
        let query = PageQuery::partition(contact_pk(tenant_id, contact_id)).limit(PARTITION_PAGE);
        let page = self.store.query_page(&query, None).await?;
        if page.items.is_empty() {
            return Ok(false);
        }
        let mut keys = Vec::new();
        let mut wamid_partitions = Vec::new();
        for item in &page.items {
            let Some(key) = ItemKey::of(item) else { continue };
            let sk = key.sk.as_str();
            if sk == PROFILE_SK {
                counts.contacts += 1;
                if with_identities {
                    if let Some(phone) = attr(item, "phone") {
                        keys.push(ItemKey::new(phone_identity_pk(tenant_id, phone), IDENTITY_SK));
                        counts.identities += 1;
                    }
                    if let Some(user_id) = attr(item, "user_id") {
                        keys.push(ItemKey::new(user_identity_pk(tenant_id, user_id), IDENTITY_SK));
                        counts.identities += 1;
                    }
                }
            } else if sk.starts_with("TAG#") {
                counts.tags += 1;
            } else if sk.starts_with("CONSENT#") || sk.starts_with("RESTRICTION#") {
                counts.history_entries += 1;
            } else if let Some(referenced) = sk.strip_prefix(REF_PREFIX) {
                counts.other_items += 1;
                let ref_sk = attr(item, "ref_sk").unwrap_or_default();
                if referenced.contains("#WAMID#") {
                    if handled.insert(referenced.to_owned()) {
                        wamid_partitions.push(referenced.to_owned());
                    }
                } else if !ref_sk.is_empty() {
                    if referenced.contains("#IDEM#") {
                        counts.idempotency_records += 1;
                    } else if referenced.contains("#EXPORT#") {
                        counts.exports += 1;
                    } else {
                        counts.other_items += 1;
                    }
                    keys.push(ItemKey::new(referenced, ref_sk));
                }
            } else {
                counts.other_items += 1;
            }
            keys.push(key);
        }
        let (wamid_keys, pointers, statuses, other) = self.wamid_partition_keys(wamid_partitions).await?;
        keys.extend(wamid_keys);
        counts.pointers += pointers;
        counts.statuses += statuses;
        counts.other_items += other;
        self.store.delete_items(&keys).await?;
        Ok(true)
    }

    /// Every key in the given wamid partitions (pointer, parked statuses), with counts.
    async fn wamid_partition_keys(
        &self,
        partitions: Vec<String>,
    ) -> Result<(Vec<ItemKey>, u64, u64, u64), PrivacyError> {
        let found: Vec<Vec<Item>> = stream::iter(partitions)
            .map(|pk| async move {
                let query = PageQuery::partition(pk).project(&[PK, SK]);
                self.store.query_all(&query).await
            })
            .buffer_unordered(WAMID_QUERIES)
            .try_collect()
            .await?;
        let (mut pointers, mut statuses, mut other) = (0, 0, 0);
        let mut keys = Vec::new();
        for key in found.iter().flatten().filter_map(ItemKey::of) {
            if key.sk == WAMID_SK {
                pointers += 1;
            } else if key.sk.starts_with("PENDING#") {
                statuses += 1;
            } else {
                other += 1;
            }
            keys.push(key);
        }
        Ok((keys, pointers, statuses, other))
    }

    /// Deletes a page of messages (items projected with [`MESSAGE_ATTRS`]): first their media
    /// objects (except those under `objects_gone_under`, already deleted by prefix), then the
    /// messages with the wamid partitions of outbound ones, and with `with_references` the
    /// reference items to those partitions in the contacts' partitions (retention, where the
    /// contact stays).
    pub(crate) async fn delete_messages(
        &self,
        tenant_id: &str,
        items: &[Item],
        objects_gone_under: Option<&str>,
        with_references: bool,
        handled: &mut HashSet<String>,
    ) -> Result<MessagesDeleted, PrivacyError> {
        let mut deleted = MessagesDeleted::default();
        if items.is_empty() {
            return Ok(deleted);
        }
        let objects: Vec<String> = items
            .iter()
            .filter_map(media_s3_key)
            .filter(|k| objects_gone_under.is_none_or(|prefix| !k.starts_with(prefix)))
            .map(str::to_owned)
            .collect();
        deleted.media_objects = self.media.delete_keys(&objects).await?;
        let mut keys = Vec::with_capacity(items.len() * 2);
        let mut wamid_partitions = Vec::new();
        for item in items {
            let Some(key) = ItemKey::of(item) else { continue };
            if key.sk != MESSAGE_SK {
                continue;
            }
            if attr(item, "direction") == Some("outbound")
                && let Some(wamid) = attr(item, "wamid")
            {
                let pointer = wamid_pk(tenant_id, wamid);
                if with_references && let Some(contact_id) = attr(item, "contact_id") {
                    keys.push(ItemKey::new(contact_pk(tenant_id, contact_id), reference_sk(&pointer)));
                }
                if handled.insert(pointer.clone()) {
                    wamid_partitions.push(pointer);
                }
            }
            keys.push(key);
            deleted.messages += 1;
        }
        let (wamid_keys, pointers, statuses, other) = self.wamid_partition_keys(wamid_partitions).await?;
        keys.extend(wamid_keys);
        deleted.pointers = pointers;
        deleted.statuses = statuses;
        deleted.other_items = other;
        self.store.delete_items(&keys).await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;
    use std::collections::HashMap;

    #[test]
    fn cursors_round_trip() {
        let key: Item = HashMap::from([
            ("PK".to_owned(), AttributeValue::S("T#t#MSG#m".into())),
            ("GSI1SK".to_owned(), AttributeValue::S("m".into())),
        ]);
        assert_eq!(decode_cursor(&encode_cursor(key.clone())).unwrap(), key);
        assert!(decode_cursor("not json").is_err());
    }

    #[test]
    fn media_keys_are_read_from_the_media_map() {
        let media = AttributeValue::M(HashMap::from([
            ("status".to_owned(), AttributeValue::S("available".into())),
            (
                "s3_key".to_owned(),
                AttributeValue::S("tenants/t/contacts/c/media/m".into()),
            ),
        ]));
        let item: Item = HashMap::from([("media".to_owned(), media)]);
        assert_eq!(media_s3_key(&item), Some("tenants/t/contacts/c/media/m"));
        assert_eq!(media_s3_key(&HashMap::new()), None);
    }
}
