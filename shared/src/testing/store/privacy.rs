//! [`PrivacyStore`] for [`MemStore`], mirroring `store/privacy.rs` item for item: the same
//! walks (conversation index, tenant-wide message index below an id floor, sparse stored-media
//! index, audit partition), the same pages (a full page carries a cursor, as DynamoDB's
//! `LastEvaluatedKey` does even when nothing follows), the same conditions (erasure start,
//! lease claims and saves, pending exports) and the same counts per kind: what a cascade
//! counts is what the DynamoDB store would have named in its deletes (references counted as
//! items, the records they point at by kind, wamid partitions by what they hold, each once per
//! `handled` set).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

use super::{ErasureRow, Key, MemStore, Op, Referenced, State, key};
use crate::contact::Contact;
use crate::message::{Direction, MediaStatus, MessageRecord};
use crate::privacy::{
    ErasureCounts, ErasureRecord, ErasureStatus, ExportRecord, ExportStatus, RetentionSettings, id_floor,
};
use crate::store::keys::{PROFILE_SK, reference_sk, tag_sk, wamid_pk};
use crate::store::{
    ErasureStart, IdentityKey, Lease, MessageRef, MessageScope, MessagesDeleted, PrivacyStore, StoreError,
    TenantRecords, WalkPage,
};

/// Items of a contact's partition deleted per call (as `PARTITION_PAGE` there).
const PARTITION_PAGE: usize = 1000;

const AFTER: &str = "after";

fn encode_cursor(after: &str) -> String {
    serde_json::to_string(&BTreeMap::from([(AFTER, after)])).expect("a map of strings serializes")
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<String>, StoreError> {
    let Some(cursor) = cursor else { return Ok(None) };
    let mut map: BTreeMap<String, String> =
        serde_json::from_str(cursor).map_err(|e| StoreError::Corrupt(format!("walk cursor: {e}")))?;
    map.remove(AFTER)
        .map(Some)
        .ok_or_else(|| StoreError::Corrupt("walk cursor: no position".into()))
}

/// One page of `sorted` (ascending by sort key) after the cursor; a full page carries a cursor.
fn walk<T>(sorted: Vec<(String, T)>, next: Option<String>, limit: i32) -> Result<WalkPage<T>, StoreError> {
    let after = decode_cursor(next.as_deref())?;
    let limit = limit.max(1) as usize;
    let mut items: Vec<(String, T)> = sorted
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .take(limit)
        .collect();
    let next = (items.len() == limit).then(|| encode_cursor(&items[limit - 1].0));
    Ok(WalkPage {
        items: items.drain(..).map(|(_, v)| v).collect(),
        next,
    })
}

/// Whether a message's media object is in the bucket (the sparse media index's membership,
/// `media_is_stored` in `store/items.rs`).
fn media_is_stored(m: &MessageRecord) -> bool {
    m.media
        .as_ref()
        .is_some_and(|m| m.status == MediaStatus::Available && m.s3_key.is_some())
}

/// A message as a cascade sees it (`message_ref` there).
fn message_ref(m: &MessageRecord) -> MessageRef {
    MessageRef {
        message_id: m.message_id.clone(),
        contact_id: m.contact_id.clone(),
        outbound_wamid: (m.direction == Direction::Outbound).then(|| m.wamid.clone()).flatten(),
        wamid: m.wamid.clone(),
        media_key: m.media.as_ref().and_then(|m| m.s3_key.clone()),
    }
}

/// Deletes the wamid partitions (pointer, parked statuses): (pointers, statuses).
fn delete_wamid_partitions(s: &mut State, tenant_id: &str, wamids: &[String]) -> (u64, u64) {
    let (mut pointers, mut statuses) = (0, 0);
    for w in wamids {
        let k = key(tenant_id, w);
        if s.wamids.remove(&k).is_some() {
            pointers += 1;
        }
        if let Some(parked) = s.parked.remove(&k) {
            statuses += parked.len() as u64;
        }
    }
    (pointers, statuses)
}

/// One item of a contact's partition, by kind.
enum PartitionItem {
    Profile,
    Tag(String),
    Consent(String),
    Restriction(String),
    Reference(String),
    Conversation(Key),
    Note(Key),
}

impl MemStore {
    /// The messages of a scope in index order (message id), as sort key and record.
    fn scoped_messages(&self, tenant_id: &str, scope: MessageScope<'_>) -> Vec<(String, MessageRecord)> {
        let floor = match scope {
            MessageScope::Contact(_) | MessageScope::Tenant { before: None } => None,
            MessageScope::Tenant { before: Some(at) } | MessageScope::StoredMedia { before: at } => Some(id_floor(at)),
        };
        self.state()
            .messages
            .iter()
            .filter(|((t, id), row)| {
                t == tenant_id
                    && floor.as_ref().is_none_or(|f| id < f)
                    && match scope {
                        MessageScope::Contact(c) => row.record.contact_id == c,
                        MessageScope::Tenant { .. } => true,
                        MessageScope::StoredMedia { .. } => media_is_stored(&row.record),
                    }
            })
            .map(|((_, id), row)| (id.clone(), row.record.clone()))
            .collect()
    }
}

/// The first page of a contact's partition, in sort-key order.
fn partition_page(s: &State, ck: &Key) -> Vec<(String, PartitionItem)> {
    let mut items: Vec<(String, PartitionItem)> = Vec::new();
    if s.contacts.contains_key(ck) {
        items.push((PROFILE_SK.to_owned(), PartitionItem::Profile));
    }
    for tag in s.tags.get(ck).into_iter().flatten() {
        items.push((tag_sk(tag), PartitionItem::Tag(tag.clone())));
    }
    for sk in s.consent_history.get(ck).into_iter().flat_map(BTreeMap::keys) {
        items.push((sk.clone(), PartitionItem::Consent(sk.clone())));
    }
    for sk in s.restriction_history.get(ck).into_iter().flat_map(BTreeMap::keys) {
        items.push((sk.clone(), PartitionItem::Restriction(sk.clone())));
    }
    for sk in s.refs.get(ck).into_iter().flat_map(BTreeMap::keys) {
        items.push((sk.clone(), PartitionItem::Reference(sk.clone())));
    }
    let (tenant_id, contact_id) = ck;
    let (conversations, notes) = super::inbox::contact_conversation_keys(s, tenant_id, contact_id);
    for k in conversations {
        let sk = crate::store::keys::conversation_sk(&s.conversations[&k].phone_number_id);
        items.push((sk, PartitionItem::Conversation(k)));
    }
    for k in notes {
        let n = &s.notes[&k];
        let number = crate::conversation::parse_conversation_id(&n.conversation_id).map_or("", |(_, p)| p);
        items.push((crate::store::keys::note_sk(number, &n.note_id), PartitionItem::Note(k)));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.truncate(PARTITION_PAGE);
    items
}

impl PrivacyStore for MemStore {
    async fn retention_settings(&self, tenant_id: &str) -> Result<Option<RetentionSettings>, StoreError> {
        self.enter(Op::RetentionSettings, 1).await?;
        Ok(self.state().settings.get(tenant_id).copied())
    }

    async fn put_retention_settings(
        &self,
        tenant_id: &str,
        settings: &RetentionSettings,
        _actor: Option<&str>,
        _at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.enter(Op::PutRetentionSettings, 1).await?;
        self.state().settings.insert(tenant_id.to_owned(), *settings);
        Ok(())
    }

    async fn create_export(&self, record: &ExportRecord) -> Result<(), StoreError> {
        self.enter(Op::CreateExport, 1).await?;
        let (t, c) = (&record.tenant_id, &record.contact_id);
        let mut s = self.state();
        let exists = match &record.broadcast_id {
            Some(b) => s.broadcasts.broadcasts.contains_key(&key(t, b)),
            None => s.contacts.contains_key(&key(t, c)),
        };
        if !exists {
            return Err(StoreError::NotFound);
        }
        let k = key(t, &record.export_id);
        if s.exports.contains_key(&k) {
            return Err(StoreError::Backend("transaction cancelled: export id exists".into()));
        }
        s.exports.insert(k, record.clone());
        if record.broadcast_id.is_none() {
            super::add_reference(&mut s, t, c, Referenced::Export(record.export_id.clone()));
        }
        Ok(())
    }

    async fn get_export(&self, tenant_id: &str, export_id: &str) -> Result<Option<ExportRecord>, StoreError> {
        self.enter(Op::GetExport, 1).await?;
        Ok(self.state().exports.get(&key(tenant_id, export_id)).cloned())
    }

    async fn finish_export(&self, record: &ExportRecord) -> Result<(), StoreError> {
        self.enter(Op::FinishExport, 1).await?;
        let mut s = self.state();
        match s.exports.get_mut(&key(&record.tenant_id, &record.export_id)) {
            Some(stored) if stored.status == ExportStatus::Pending => {
                *stored = record.clone();
                Ok(())
            }
            _ => Err(StoreError::NotFound),
        }
    }

    async fn tenant_exports(&self, tenant_id: &str) -> Result<Vec<ExportRecord>, StoreError> {
        self.enter(Op::TenantExports, 1).await?;
        Ok(self
            .state()
            .exports
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn delete_exports(&self, tenant_id: &str, exports: &[ExportRecord]) -> Result<u64, StoreError> {
        self.enter(Op::DeleteExports, 1).await?;
        let mut s = self.state();
        for e in exports {
            let reference = reference_sk(&crate::store::keys::export_pk(tenant_id, &e.export_id));
            if let Some(refs) = s.refs.get_mut(&key(tenant_id, &e.contact_id)) {
                refs.remove(&reference);
            }
            s.exports.remove(&key(tenant_id, &e.export_id));
        }
        Ok(exports.len() as u64)
    }

    async fn export_messages(
        &self,
        tenant_id: &str,
        contact_id: &str,
        next: Option<String>,
        limit: i32,
    ) -> Result<WalkPage<MessageRecord>, StoreError> {
        self.enter(Op::ExportMessages, 1).await?;
        walk(
            self.scoped_messages(tenant_id, MessageScope::Contact(contact_id)),
            next,
            limit,
        )
    }

    async fn start_erasure(
        &self,
        contact: &Contact,
        record: &ErasureRecord,
        lease: &Lease,
    ) -> Result<ErasureStart, StoreError> {
        self.enter(Op::StartErasure, 1).await?;
        let (t, c) = (&contact.tenant_id, &contact.contact_id);
        let mut s = self.state();
        // The transaction's conditions, in the order the DynamoDB store reads its cancellation.
        if s.erasures.contains_key(&key(t, &record.erasure_id)) {
            return Ok(ErasureStart::AlreadyErased);
        }
        let ck = key(t, c);
        if s.contacts
            .get(&ck)
            .is_none_or(|row| row.contact.version != contact.version)
        {
            return Ok(ErasureStart::ContactChanged);
        }
        // Identity records of the contact read: deleted when absent or still its own (and
        // counted either way, as the delete is named); another contact's are left alone.
        let identities: Vec<IdentityKey> = super::identity_keys(contact)
            .into_iter()
            .filter(|id| {
                s.identities
                    .get(&(t.clone(), id.clone()))
                    .is_none_or(|owner| owner == c)
            })
            .collect();
        for id in &identities {
            s.identities.remove(&(t.clone(), id.clone()));
        }
        s.contacts.remove(&ck);
        s.erasures.insert(
            key(t, &record.erasure_id),
            ErasureRow {
                record: record.clone(),
                lease: Some(lease.clone()),
            },
        );
        Ok(ErasureStart::Started {
            identities: identities.len() as u64,
        })
    }

    async fn get_erasure(&self, tenant_id: &str, erasure_id: &str) -> Result<Option<ErasureRecord>, StoreError> {
        self.enter(Op::GetErasure, 1).await?;
        Ok(self
            .state()
            .erasures
            .get(&key(tenant_id, erasure_id))
            .map(|r| r.record.clone()))
    }

    async fn claim_erasure(
        &self,
        tenant_id: &str,
        erasure_id: &str,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<Option<ErasureRecord>, StoreError> {
        self.enter(Op::ClaimErasure, 1).await?;
        let now_ms = now.timestamp_millis();
        let mut s = self.state();
        match s.erasures.get_mut(&key(tenant_id, erasure_id)) {
            Some(row)
                if row.record.status == ErasureStatus::InProgress
                    && row.lease.as_ref().is_none_or(|l| l.until_ms < now_ms) =>
            {
                row.lease = Some(lease.clone());
                Ok(Some(row.record.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn save_erasure(&self, record: &ErasureRecord, held: &Lease, keep: Option<&Lease>) -> Result<(), StoreError> {
        self.enter(Op::SaveErasure, 1).await?;
        // A finished erasure keeps no lease.
        let keep = keep.filter(|_| record.status == ErasureStatus::InProgress);
        let mut s = self.state();
        match s.erasures.get_mut(&key(&record.tenant_id, &record.erasure_id)) {
            Some(row) if row.lease.as_ref().is_some_and(|l| l.token == held.token) => {
                *row = ErasureRow {
                    record: record.clone(),
                    lease: keep.cloned(),
                };
                Ok(())
            }
            _ => Err(StoreError::VersionMismatch),
        }
    }

    async fn tenant_erasures(&self, tenant_id: &str) -> Result<Vec<ErasureRecord>, StoreError> {
        self.enter(Op::TenantErasures, 1).await?;
        Ok(self
            .state()
            .erasures
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, r)| r.record.clone())
            .collect())
    }

    async fn delete_erasures(&self, tenant_id: &str, erasure_ids: &[String]) -> Result<u64, StoreError> {
        self.enter(Op::DeleteErasures, 1).await?;
        let mut s = self.state();
        let unique: HashSet<&String> = erasure_ids.iter().collect();
        for id in &unique {
            s.erasures.remove(&key(tenant_id, id));
        }
        Ok(unique.len() as u64)
    }

    async fn message_refs(
        &self,
        tenant_id: &str,
        scope: MessageScope<'_>,
        next: Option<String>,
        limit: i32,
    ) -> Result<WalkPage<MessageRef>, StoreError> {
        self.enter(Op::MessageRefs, 1).await?;
        let refs = self
            .scoped_messages(tenant_id, scope)
            .into_iter()
            .map(|(k, m)| (k, message_ref(&m)))
            .collect();
        walk(refs, next, limit)
    }

    async fn delete_messages(
        &self,
        tenant_id: &str,
        messages: &[MessageRef],
        with_references: bool,
        handled: &mut HashSet<String>,
    ) -> Result<MessagesDeleted, StoreError> {
        let mut deleted = MessagesDeleted::default();
        if messages.is_empty() {
            return Ok(deleted);
        }
        // The wamid partition queries and the batch delete.
        self.enter(Op::DeleteMessages, 2).await?;
        let mut s = self.state();
        let mut wamids = Vec::new();
        for m in messages {
            if let Some(wamid) = &m.outbound_wamid {
                let pointer = wamid_pk(tenant_id, wamid);
                if with_references
                    && !m.contact_id.is_empty()
                    && let Some(refs) = s.refs.get_mut(&key(tenant_id, &m.contact_id))
                {
                    refs.remove(&reference_sk(&pointer));
                }
                if handled.insert(pointer) {
                    wamids.push(wamid.clone());
                }
            }
            s.messages.remove(&key(tenant_id, &m.message_id));
            deleted.messages += 1;
        }
        let (pointers, statuses) = delete_wamid_partitions(&mut s, tenant_id, &wamids);
        deleted.pointers = pointers;
        deleted.statuses = statuses;
        Ok(deleted)
    }

    async fn put_tombstones(
        &self,
        tenant_id: &str,
        wamids: &[String],
        _erased_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.enter(Op::PutTombstones, wamids.len().div_ceil(25) as u32).await?;
        let mut s = self.state();
        s.tombstones.extend(wamids.iter().map(|w| key(tenant_id, w)));
        Ok(())
    }

    async fn delete_contact_items(
        &self,
        tenant_id: &str,
        contact_id: &str,
        with_identities: bool,
        handled: &mut HashSet<String>,
    ) -> Result<Option<ErasureCounts>, StoreError> {
        // The partition page, the wamid partition queries and the batch delete.
        self.enter(Op::DeleteContactItems, 3).await?;
        let ck = key(tenant_id, contact_id);
        let mut s = self.state();
        let page = partition_page(&s, &ck);
        // The contact's automation state and firings (items of its partition; not paged here).
        let automation_items = s.automations.erase_contact(tenant_id, contact_id);
        if page.is_empty() && automation_items == 0 {
            return Ok(None);
        }
        let mut counts = ErasureCounts {
            other_items: automation_items,
            ..ErasureCounts::default()
        };
        let mut wamids = Vec::new();
        for (_, item) in page {
            match item {
                PartitionItem::Profile => {
                    counts.contacts += 1;
                    let row = s.contacts.remove(&ck).expect("the page read it");
                    if with_identities {
                        // Named by the profile: deleted whoever holds them now, as there.
                        for id in super::identity_keys(&row.contact) {
                            s.identities.remove(&(tenant_id.to_owned(), id));
                            counts.identities += 1;
                        }
                    }
                }
                PartitionItem::Tag(tag) => {
                    counts.tags += 1;
                    if let Some(tags) = s.tags.get_mut(&ck) {
                        tags.remove(&tag);
                    }
                }
                PartitionItem::Consent(sk) => {
                    counts.history_entries += 1;
                    if let Some(h) = s.consent_history.get_mut(&ck) {
                        h.remove(&sk);
                    }
                }
                PartitionItem::Restriction(sk) => {
                    counts.history_entries += 1;
                    if let Some(h) = s.restriction_history.get_mut(&ck) {
                        h.remove(&sk);
                    }
                }
                PartitionItem::Conversation(k) => {
                    counts.conversations += 1;
                    s.conversations.remove(&k);
                }
                PartitionItem::Note(k) => {
                    counts.notes += 1;
                    s.notes.remove(&k);
                }
                PartitionItem::Reference(sk) => {
                    // The reference item itself, then what it points at.
                    counts.other_items += 1;
                    let referenced = s
                        .refs
                        .get_mut(&ck)
                        .and_then(|r| r.remove(&sk))
                        .expect("the page read it");
                    match referenced {
                        Referenced::Wamid(w) => {
                            if handled.insert(wamid_pk(tenant_id, &w)) {
                                wamids.push(w);
                            }
                        }
                        Referenced::Idempotency(hash) => {
                            counts.idempotency_records += 1;
                            s.idempotency.remove(&key(tenant_id, &hash));
                        }
                        Referenced::Export(id) => {
                            counts.exports += 1;
                            s.exports.remove(&key(tenant_id, &id));
                        }
                    }
                }
            }
        }
        let (pointers, statuses) = delete_wamid_partitions(&mut s, tenant_id, &wamids);
        counts.pointers += pointers;
        counts.statuses += statuses;
        s.tags.retain(|_, t| !t.is_empty());
        s.refs.retain(|_, r| !r.is_empty());
        s.consent_history.retain(|_, h| !h.is_empty());
        s.restriction_history.retain(|_, h| !h.is_empty());
        Ok(Some(counts))
    }

    async fn expire_media(&self, tenant_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.enter(Op::ExpireMedia, 1).await?;
        let mut s = self.state();
        // A message deleted meanwhile, or without media, is fine.
        if let Some(media) = s
            .messages
            .get_mut(&key(tenant_id, message_id))
            .and_then(|row| row.record.media.as_mut())
        {
            media.status = MediaStatus::Expired;
            media.s3_key = None;
        }
        Ok(())
    }

    async fn delete_audit_before(
        &self,
        tenant_id: &str,
        before: DateTime<Utc>,
        next: Option<String>,
        limit: i32,
    ) -> Result<(u64, Option<String>), StoreError> {
        self.enter(Op::DeleteAuditBefore, 2).await?;
        let floor = id_floor(before);
        let mut s = self.state();
        let sorted = s
            .audit
            .keys()
            .filter(|(t, id)| t == tenant_id && *id < floor)
            .map(|(_, id)| (id.clone(), id.clone()))
            .collect();
        let page = walk(sorted, next, limit)?;
        for id in &page.items {
            s.audit.remove(&key(tenant_id, id));
        }
        Ok((page.items.len() as u64, page.next))
    }

    async fn tenant_ids(&self) -> Result<Vec<String>, StoreError> {
        self.enter(Op::TenantIds, 1).await?;
        let mut ids: Vec<String> = self.state().tenants.keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    async fn contact_ids(
        &self,
        tenant_id: &str,
        next: Option<String>,
        limit: i32,
    ) -> Result<WalkPage<String>, StoreError> {
        self.enter(Op::ContactIds, 1).await?;
        let mut ids: Vec<(String, String)> = self
            .state()
            .contacts
            .keys()
            .filter(|(t, _)| t == tenant_id)
            .map(|(_, c)| (c.clone(), c.clone()))
            .collect();
        ids.sort();
        walk(ids, next, limit)
    }

    async fn delete_tenant_records(&self, tenant_id: &str, records: TenantRecords<'_>) -> Result<u64, StoreError> {
        self.enter(Op::DeleteTenantRecords, 2).await?;
        let mut s = self.state();
        let of_tenant = |k: &Key| k.0 == tenant_id;
        Ok(match records {
            TenantRecords::Audit => {
                let before = s.audit.len();
                s.audit.retain(|k, _| !of_tenant(k));
                (before - s.audit.len()) as u64
            }
            TenantRecords::RawEvents => {
                let before = s.events.len();
                s.events.retain(|k, _| !of_tenant(k));
                (before - s.events.len()) as u64
            }
            TenantRecords::EventStream => s.webhooks.delete_tenant(tenant_id),
            TenantRecords::SendSchedule(phone_number_id) => {
                u64::from(s.schedules.remove(&key(tenant_id, phone_number_id)).is_some())
            }
            TenantRecords::Tombstones => {
                let before = s.tombstones.len();
                s.tombstones.retain(|k| !of_tenant(k));
                (before - s.tombstones.len()) as u64
            }
            TenantRecords::TenantPartition => {
                let keys = s.keys.len();
                s.keys.retain(|k, _| !of_tenant(k));
                let keys = (keys - s.keys.len()) as u64;
                let token = u64::from(s.tokens.remove(tenant_id).is_some());
                let settings = u64::from(s.settings.remove(tenant_id).is_some());
                keys + token + settings
            }
            TenantRecords::Templates => s.templates.delete_tenant(tenant_id),
            TenantRecords::Broadcasts => s.broadcasts.delete_tenant(tenant_id),
            TenantRecords::Tenant => {
                s.tenants.remove(tenant_id);
                s.disabled_at.remove(tenant_id);
                // The delete is named, so it counts (the caller names it only for a tenant).
                1
            }
        })
    }
}
