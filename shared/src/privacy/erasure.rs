//! Contact erasure. The contact first disappears atomically (profile, phone and user-id records,
//! and the erasure record, in one transaction); then everything it owns is deleted in batches:
//! its objects in both buckets, its messages with their wamid pointers and parked statuses, and
//! everything in its partition together with what the reference items there point at
//! (idempotency records, wamid partitions, export records). Progress is saved in the erasure
//! record; whatever does not finish within a time budget continues on the erasure queue, and
//! every erasure enqueues a delayed safety-net job before it starts, so a crash never leaves an
//! erasure half-done with nobody to resume it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::{
    ErasureCounts, ErasureJob, ErasureRecord, ErasureStatus, ErasureStep, Privacy, PrivacyError, PrivacyPorts,
    erasure_id,
};
use crate::blob::contact_media_prefix;
use crate::jobs::JobQueue;
use crate::objects::ObjectStore;
use crate::store::privacy::visible_erasure;
use crate::store::{ErasureStart, Lease, MessageRef, MessageScope, StoreError};

/// Messages read per page (bounded further by DynamoDB's 1 MB pages).
const MESSAGE_PAGE: i32 = 1000;
/// Delay of the safety-net job: longer than the API function may run.
pub const SAFETY_NET_DELAY: Duration = Duration::from_secs(120);
/// A lease outlives its holder's budget by this much (time to save and hand off).
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// The eraser function saves progress at least this often.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(20);

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

/// How a run under a lease ended.
enum Driven {
    Completed(ErasureRecord),
    /// Progress saved, continuation queued.
    HandedOff(ErasureRecord),
    /// The lease lapsed or the record vanished: another runner (or a purge) owns it now.
    LeaseLost(ErasureRecord),
}

/// What deleting a page of messages removed, objects included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MessagesDeleted {
    pub messages: u64,
    pub media_objects: u64,
    pub pointers: u64,
    pub statuses: u64,
    pub other_items: u64,
}

impl<S: PrivacyPorts, O: ObjectStore, Q: JobQueue> Privacy<S, O, Q> {
    /// Erases a contact (the API's `DELETE /v1/contacts/{id}`): `None` when the tenant has no
    /// such contact and never erased one with this id; the earlier receipt when it did.
    pub async fn request_erasure(
        &self,
        tenant_id: &str,
        contact_id: &str,
        actor: Option<&str>,
    ) -> Result<Option<ErasureRecord>, PrivacyError> {
        let id = erasure_id(tenant_id, contact_id);
        let Some(mut contact) = self.store.get_contact(tenant_id, contact_id).await? else {
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
        self.erasure_jobs.send_job(&job, SAFETY_NET_DELAY).await?;
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
                ErasureStart::ContactChanged => match self.store.get_contact(tenant_id, contact_id).await? {
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
        if let Err(err) = self.erasure_jobs.send_job(&job, Duration::ZERO).await {
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
        Ok(record.deleted.since(&before))
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
                let page = self
                    .store
                    .message_refs(&t, MessageScope::Contact(&c), progress.cursor.clone(), MESSAGE_PAGE)
                    .await?;
                // Tombstones first: once a message is gone, a redelivery of its webhook must
                // find its wamid refused, also after a crash between the two writes.
                let wamids: Vec<String> = page.items.iter().filter_map(|m| m.wamid.clone()).collect();
                self.store.put_tombstones(&t, &wamids, Utc::now()).await?;
                let deleted = self
                    .delete_messages(&t, &page.items, Some(&prefix), false, handled)
                    .await?;
                counts.messages += deleted.messages;
                counts.media_objects += deleted.media_objects;
                counts.pointers += deleted.pointers;
                counts.statuses += deleted.statuses;
                counts.other_items += deleted.other_items;
                match page.next {
                    Some(next) => progress.cursor = Some(next),
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
            ErasureStep::ContactItems => match self.store.delete_contact_items(&t, &c, false, handled).await? {
                Some(deleted) => counts.add(&deleted),
                None => {
                    // Its recipient entries in every broadcast (idempotent: a repeat finds none).
                    counts.broadcast_recipients += self.store.erase_recipient(&t, &c).await?;
                    // Broadcast result exports name recipients' phones and names: the tenant's
                    // are deleted (they can be built again, without this contact).
                    let results: Vec<_> = self
                        .store
                        .tenant_exports(&t)
                        .await?
                        .into_iter()
                        .filter(|e| e.broadcast_id.is_some())
                        .collect();
                    if !results.is_empty() {
                        let objects: Vec<String> = results.iter().map(|e| e.s3_key.clone()).collect();
                        counts.export_objects += self.exports.delete_keys(&objects).await?;
                        counts.exports += self.store.delete_exports(&t, &results).await?;
                    }
                    progress.step = ErasureStep::FinalObjects;
                }
            },
            ErasureStep::Done => {}
        }
        Ok(())
    }

    /// Deletes a page of messages: first their media objects (except those under
    /// `objects_gone_under`, already deleted by prefix), then the messages with what they take
    /// along (see [`crate::store::PrivacyStore::delete_messages`]).
    pub(crate) async fn delete_messages(
        &self,
        tenant_id: &str,
        messages: &[MessageRef],
        objects_gone_under: Option<&str>,
        with_references: bool,
        handled: &mut HashSet<String>,
    ) -> Result<MessagesDeleted, PrivacyError> {
        if messages.is_empty() {
            return Ok(MessagesDeleted::default());
        }
        let objects: Vec<String> = messages
            .iter()
            .filter_map(|m| m.media_key.clone())
            .filter(|k| objects_gone_under.is_none_or(|prefix| !k.starts_with(prefix)))
            .collect();
        let media_objects = self.media.delete_keys(&objects).await?;
        let d = self
            .store
            .delete_messages(tenant_id, messages, with_references, handled)
            .await?;
        Ok(MessagesDeleted {
            messages: d.messages,
            media_objects,
            pointers: d.pointers,
            statuses: d.statuses,
            other_items: d.other_items,
        })
    }
}
