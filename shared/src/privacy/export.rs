//! Contact exports (right of access and portability): the API records the request and queues
//! it; the exporter writes ONE versioned JSON document (docs/export-format.md) into the exports
//! bucket under the contact's prefix, page by page through a multipart upload, so a contact
//! with a long history never sits in memory whole.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ExportJob, ExportRecord, ExportStatus, Privacy, PrivacyError, PrivacyPorts};
use crate::contact::Contact;
use crate::jobs::JobQueue;
use crate::message::MessageRecord;
use crate::objects::{MIN_PART_BYTES, ObjectStore, PartSink, PartWriter, Upload};
use crate::store::StoreError;
use crate::store::privacy::visible_export;

/// Name and version of the document format (docs/export-format.md).
pub const FORMAT: &str = "wcrm.contact-export";
pub const FORMAT_VERSION: u32 = 1;

/// Messages read per page while writing.
const MESSAGE_PAGE: i32 = 500;

/// How a build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    Ready(Box<ExportRecord>),
    /// Built before (a repeated job), or failed before.
    AlreadyDone,
    /// The record or the contact is gone (erased, expired): nothing is kept.
    Gone,
}

fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialize")
}

/// A contact as exported: every stored field but the tenant id (stated once at the top).
pub fn contact_json(contact: &Contact) -> Value {
    let mut v = serde_json::to_value(contact).expect("contacts serialize");
    if let Some(map) = v.as_object_mut() {
        map.remove("tenant_id");
    }
    v
}

/// A message as exported: every stored field (statuses with their times, errors, media
/// reference) but the tenant and contact ids and the sending user.
pub fn message_json(message: &MessageRecord) -> Value {
    let mut v = serde_json::to_value(message).expect("messages serialize");
    if let Some(map) = v.as_object_mut() {
        map.remove("tenant_id");
        map.remove("contact_id");
        // Which of the tenant's users sent it is the users' data, not the customer's.
        map.remove("sent_by");
    }
    v
}

impl<S: PrivacyPorts, O: ObjectStore, Q: JobQueue> Privacy<S, O, Q> {
    /// Records an export of a contact and queues it; `None` when the tenant has no such contact.
    pub async fn request_export(
        &self,
        tenant_id: &str,
        contact_id: &str,
        actor: Option<&str>,
    ) -> Result<Option<ExportRecord>, PrivacyError> {
        let settings = self.settings(tenant_id).await?;
        let record = ExportRecord::new(tenant_id, contact_id, actor, settings.exports_days, Utc::now());
        self.queue_export(record).await
    }

    /// Records an export of a broadcast's per-recipient results and queues it; `None` when the
    /// tenant has no such broadcast.
    pub async fn request_broadcast_export(
        &self,
        tenant_id: &str,
        broadcast_id: &str,
        actor: Option<&str>,
    ) -> Result<Option<ExportRecord>, PrivacyError> {
        let settings = self.settings(tenant_id).await?;
        let record = ExportRecord::for_broadcast(tenant_id, broadcast_id, actor, settings.exports_days, Utc::now());
        self.queue_export(record).await
    }

    /// Stores a pending export (if what it exports exists) and queues its build.
    async fn queue_export(&self, record: ExportRecord) -> Result<Option<ExportRecord>, PrivacyError> {
        let tenant_id = record.tenant_id.as_str();
        match self.store.create_export(&record).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let job = ExportJob {
            tenant_id: tenant_id.to_owned(),
            export_id: record.export_id.clone(),
        };
        if let Err(err) = self.export_jobs.send_job(&job, std::time::Duration::ZERO).await {
            // A record nobody will build would stay pending forever: close it.
            self.fail_export(tenant_id, &record.export_id, "could not be queued")
                .await?;
            return Err(err.into());
        }
        Ok(Some(record))
    }

    /// The export, unless it is unknown or expired (hidden even before TTL removes it).
    pub async fn export_status(&self, tenant_id: &str, export_id: &str) -> Result<Option<ExportRecord>, PrivacyError> {
        Ok(visible_export(
            self.store.get_export(tenant_id, export_id).await?,
            Utc::now(),
        ))
    }

    /// Marks a pending export failed (`reason` carries no personal data).
    pub async fn fail_export(&self, tenant_id: &str, export_id: &str, reason: &str) -> Result<(), PrivacyError> {
        let Some(mut record) = self.store.get_export(tenant_id, export_id).await? else {
            return Ok(());
        };
        if record.status != ExportStatus::Pending {
            return Ok(());
        }
        record.status = ExportStatus::Failed;
        record.failure = Some(reason.to_owned());
        record.completed_at = Some(Utc::now());
        match self.store.finish_export(&record).await {
            Ok(()) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Builds a pending export (the exporter function). Idempotent: a repeated job finds the
    /// export no longer pending.
    pub async fn build_export(&self, tenant_id: &str, export_id: &str) -> Result<Built, PrivacyError> {
        let now = Utc::now();
        let Some(record) = self.store.get_export(tenant_id, export_id).await? else {
            return Ok(Built::Gone);
        };
        if record.status != ExportStatus::Pending {
            return Ok(Built::AlreadyDone);
        }
        if record.is_expired(now) {
            return Ok(Built::Gone);
        }
        if let Some(broadcast_id) = record.broadcast_id.clone() {
            return self.build_broadcast_results(record, &broadcast_id).await;
        }
        let Some(contact) = self.store.get_contact(tenant_id, &record.contact_id).await? else {
            return Ok(Built::Gone);
        };
        let upload = self.exports.start_upload(&record.s3_key, "application/json").await?;
        let mut writer = PartWriter::new(upload, MIN_PART_BYTES);
        let messages = match self.write_document(&mut writer, &contact, &record, now).await {
            Ok(n) => n,
            Err(err) => {
                writer.into_sink().abort().await;
                return Err(err);
            }
        };
        let (upload, size) = writer.finish().await?;
        upload.complete().await?;
        // Erased while this ran? Then the document must not survive it.
        if self.store.get_contact(tenant_id, &record.contact_id).await?.is_none() {
            self.exports.delete_keys(std::slice::from_ref(&record.s3_key)).await?;
            return Ok(Built::Gone);
        }
        self.mark_ready(record, size, messages).await
    }

    /// Records a written export as ready (`count`: its messages, or a broadcast's rows); when
    /// the record went meanwhile (erased), the document goes too.
    async fn mark_ready(&self, mut record: ExportRecord, size: u64, count: u64) -> Result<Built, PrivacyError> {
        record.status = ExportStatus::Ready;
        record.completed_at = Some(Utc::now());
        record.size_bytes = Some(size);
        record.message_count = Some(count);
        match self.store.finish_export(&record).await {
            Ok(()) => Ok(Built::Ready(Box::new(record))),
            Err(StoreError::NotFound) => {
                self.exports.delete_keys(std::slice::from_ref(&record.s3_key)).await?;
                Ok(Built::Gone)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the document; returns the number of messages in it.
    pub async fn write_document<P: PartSink>(
        &self,
        w: &mut PartWriter<P>,
        contact: &Contact,
        record: &ExportRecord,
        generated_at: DateTime<Utc>,
    ) -> Result<u64, PrivacyError> {
        let (t, c) = (&contact.tenant_id, &contact.contact_id);
        let head = json!({
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "export_id": record.export_id,
            "tenant_id": t,
            "generated_at": generated_at,
        });
        // The head object without its closing brace, then one member per section.
        let head = serde_json::to_string(&head).expect("serializes");
        w.write(&head.as_bytes()[..head.len() - 1]).await?;
        w.write(b",\n\"contact\":").await?;
        w.write(&bytes(&contact_json(contact))).await?;

        let mut counts = [0u64; 3];
        w.write(b",\n\"consent_history\":[").await?;
        counts[0] = write_entries(w, &self.store.consent_history(t, c).await?).await?;
        w.write(b"],\n\"restriction_history\":[").await?;
        counts[1] = write_entries(w, &self.store.restriction_history(t, c).await?).await?;

        // The inbox's view of the contact: conversations (status, assignee, read marks) and the
        // team's internal notes about them.
        let (conversations, notes) = self.store.contact_conversations(t, c).await?;
        w.write(b"],\n\"conversations\":[").await?;
        let conversation_count = write_entries(w, &conversations).await?;
        w.write(b"],\n\"notes\":[").await?;
        let note_count = write_entries(w, &notes).await?;

        w.write(b"],\n\"messages\":[").await?;
        let mut next = None;
        let mut media = 0u64;
        loop {
            let page = self.store.export_messages(t, c, next, MESSAGE_PAGE).await?;
            for message in page.items {
                media += u64::from(message.media.is_some());
                w.write(if counts[2] == 0 { b"\n" } else { b",\n" }).await?;
                w.write(&bytes(&message_json(&message))).await?;
                counts[2] += 1;
            }
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }
        let summary = json!({
            "messages": counts[2],
            "media_items": media,
            "consent_changes": counts[0],
            "restriction_changes": counts[1],
            "conversations": conversation_count,
            "notes": note_count,
        });
        w.write(b"\n],\n\"summary\":").await?;
        w.write(&bytes(&summary)).await?;
        w.write(b"}\n").await?;
        Ok(counts[2])
    }
}

/// The columns of a broadcast's results document (docs/export-format.md).
pub const RESULT_COLUMNS: [&str; 14] = [
    "contact_id",
    "phone",
    "name",
    "status",
    "reason",
    "language",
    "message_id",
    "error_code",
    "attempts",
    "sent_at",
    "replied",
    "opted_out_after",
    "retry_at",
    "updated_at",
];

/// Recipients read per page while writing a broadcast's results.
const RECIPIENT_PAGE: i32 = 100;

/// CSV lines (RFC 4180 quoting) of `rows`, written with one writer.
fn csv_lines(rows: impl IntoIterator<Item = Vec<String>>) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.write_record(&row).expect("writing to memory");
    }
    w.into_inner().expect("writing to memory")
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// One recipient's row: its outcome, and who it is (phone, name) while the contact exists.
fn result_row(r: &crate::broadcast::BroadcastRecipient, who: Option<&crate::contact::ContactSummary>) -> Vec<String> {
    vec![
        r.contact_id.clone(),
        who.and_then(|c| c.phone.clone()).unwrap_or_default(),
        who.and_then(|c| c.display_name().map(str::to_owned))
            .unwrap_or_default(),
        r.status.as_str().to_owned(),
        r.reason.map(|x| x.as_str().to_owned()).unwrap_or_default(),
        opt(&r.language),
        opt(&r.message_id),
        opt(&r.error_code),
        r.attempts.to_string(),
        r.sent_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        r.replied.to_string(),
        r.opted_out_after.to_string(),
        r.retry_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        r.updated_at.to_rfc3339(),
    ]
}

impl<S: PrivacyPorts, O: ObjectStore, Q: JobQueue> Privacy<S, O, Q> {
    /// Writes a broadcast's per-recipient results as one CSV document, a page of recipients
    /// (and one batch read of their contacts) at a time.
    async fn build_broadcast_results(&self, record: ExportRecord, broadcast_id: &str) -> Result<Built, PrivacyError> {
        let t = record.tenant_id.clone();
        if self.store.get_broadcast(&t, broadcast_id).await?.is_none() {
            return Ok(Built::Gone);
        }
        let upload = self.exports.start_upload(&record.s3_key, "text/csv").await?;
        let mut writer = PartWriter::new(upload, MIN_PART_BYTES);
        let written: Result<u64, PrivacyError> = async {
            let header: Vec<String> = RESULT_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
            writer.write(&csv_lines([header])).await?;
            let mut rows = 0u64;
            let mut next = None;
            loop {
                let page = self
                    .store
                    .broadcast_recipients(&t, broadcast_id, None, RECIPIENT_PAGE, next)
                    .await?;
                let ids: Vec<String> = page.items.iter().map(|r| r.contact_id.clone()).collect();
                let who: std::collections::HashMap<String, crate::contact::ContactSummary> = self
                    .store
                    .contact_summaries(&t, &ids)
                    .await?
                    .into_iter()
                    .map(|c| (c.contact_id.clone(), c))
                    .collect();
                // A page's rows through one CSV writer, then into the upload at once.
                let lines = csv_lines(page.items.iter().map(|r| result_row(r, who.get(&r.contact_id))));
                writer.write(&lines).await?;
                rows += page.items.len() as u64;
                match page.next {
                    Some(n) => next = Some(n),
                    None => return Ok(rows),
                }
            }
        }
        .await;
        let rows = match written {
            Ok(rows) => rows,
            Err(err) => {
                writer.into_sink().abort().await;
                return Err(err);
            }
        };
        let (upload, size) = writer.finish().await?;
        upload.complete().await?;
        // (An erasure meanwhile deleted the record with the tenant's other result exports.)
        self.mark_ready(record, size, rows).await
    }
}

/// Writes history entries as a JSON list's members, each without the contact id (stated once
/// in the document); returns how many.
async fn write_entries<P: PartSink, T: Serialize>(w: &mut PartWriter<P>, entries: &[T]) -> Result<u64, PrivacyError> {
    for (i, entry) in entries.iter().enumerate() {
        let mut v = serde_json::to_value(entry).expect("serializes");
        if let Some(map) = v.as_object_mut() {
            map.remove("contact_id");
        }
        if i > 0 {
            w.write(b",").await?;
        }
        w.write(&bytes(&v)).await?;
    }
    Ok(entries.len() as u64)
}
