//! [`BroadcastStore`] for [`MemStore`], mirroring `store/broadcasts.rs`: broadcasts by (tenant,
//! id), recipients by (tenant, broadcast, contact) in contact id order, version checks on the
//! broadcast and the usage item, and page commits that write everything or nothing.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use chrono::{DateTime, Utc};

use super::{MemStore, Op, Order, note_write, page_of};
use crate::broadcast::pacing::BroadcastSettings;
use crate::broadcast::{Broadcast, BroadcastRecipient, NumberQuality, RecipientStatus};
use crate::cursor::Position;
use crate::store::keys::{broadcast_recipients_pk, broadcasts_pk, recipient_shard, tenant_pk};
use crate::store::{BroadcastStore, MessagingUsage, Page, PageCommit, RecipientChange, StoreError};

#[derive(Default)]
pub(super) struct BroadcastState {
    pub(super) broadcasts: BTreeMap<(String, String), Broadcast>,
    /// (tenant, broadcast) → contact id → recipient.
    recipients: HashMap<(String, String), BTreeMap<String, BroadcastRecipient>>,
    settings: HashMap<String, BroadcastSettings>,
    usage: HashMap<String, MessagingUsage>,
    /// tenant → (waba, display) → quality.
    qualities: HashMap<String, BTreeMap<(String, String), NumberQuality>>,
}

impl BroadcastState {
    /// Offboarding: everything of the tenant.
    pub(super) fn delete_tenant(&mut self, tenant_id: &str) -> u64 {
        let before = self.broadcasts.len();
        self.broadcasts.retain(|(t, _), _| t != tenant_id);
        self.recipients.retain(|(t, _), _| t != tenant_id);
        self.settings.remove(tenant_id);
        self.usage.remove(tenant_id);
        self.qualities.remove(tenant_id);
        (before - self.broadcasts.len()) as u64
    }
}

fn bkey(tenant_id: &str, id: &str) -> (String, String) {
    (tenant_id.to_owned(), id.to_owned())
}

impl MemStore {
    /// Every recipient of a broadcast (inspection).
    pub fn recipients_of(&self, tenant_id: &str, broadcast_id: &str) -> Vec<BroadcastRecipient> {
        self.state()
            .broadcasts
            .recipients
            .get(&bkey(tenant_id, broadcast_id))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

fn check_version(stored: Option<&Broadcast>, b: &Broadcast) -> Result<(), StoreError> {
    match stored {
        Some(s) if s.version + 1 == b.version => Ok(()),
        _ => Err(StoreError::VersionMismatch),
    }
}

impl BroadcastStore for MemStore {
    async fn create_broadcast(&self, b: &Broadcast) -> Result<(), StoreError> {
        self.enter(Op::CreateBroadcast, 1).await?;
        let mut s = self.state();
        let k = bkey(&b.tenant_id, &b.broadcast_id);
        if s.broadcasts.broadcasts.contains_key(&k) {
            return Err(StoreError::Conflict("broadcast exists".into()));
        }
        s.broadcasts.broadcasts.insert(k, b.clone());
        Ok(())
    }

    async fn get_broadcast(&self, tenant_id: &str, broadcast_id: &str) -> Result<Option<Broadcast>, StoreError> {
        self.enter(Op::GetBroadcast, 1).await?;
        Ok(self
            .state()
            .broadcasts
            .broadcasts
            .get(&bkey(tenant_id, broadcast_id))
            .cloned())
    }

    async fn list_broadcasts(
        &self,
        tenant_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Broadcast>, StoreError> {
        self.enter(Op::ListBroadcasts, 1).await?;
        let s = self.state();
        let mut sorted: Vec<(String, Broadcast)> = s
            .broadcasts
            .broadcasts
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|((_, id), b)| (id.clone(), b.clone()))
            .collect();
        sorted.reverse();
        Ok(page_of(sorted, Order::Descending, limit, start))
    }

    async fn save_broadcast(&self, b: &Broadcast) -> Result<(), StoreError> {
        self.enter(Op::SaveBroadcast, 1).await?;
        let mut s = self.state();
        let k = bkey(&b.tenant_id, &b.broadcast_id);
        check_version(s.broadcasts.broadcasts.get(&k), b)?;
        s.broadcasts.broadcasts.insert(k, b.clone());
        note_write(&mut s, broadcasts_pk(&b.tenant_id));
        Ok(())
    }

    async fn commit_page(
        &self,
        b: &Broadcast,
        created: &[BroadcastRecipient],
        changed: &[RecipientChange],
        usage: Option<&MessagingUsage>,
    ) -> Result<PageCommit, StoreError> {
        self.enter(Op::CommitPage, 1).await?;
        let mut s = self.state();
        let k = bkey(&b.tenant_id, &b.broadcast_id);
        check_version(s.broadcasts.broadcasts.get(&k), b)?;
        let recipients = s.broadcasts.recipients.get(&k);
        let existing: Vec<usize> = created
            .iter()
            .enumerate()
            .filter(|(_, r)| recipients.is_some_and(|m| m.contains_key(&r.contact_id)))
            .map(|(i, _)| i)
            .collect();
        if !existing.is_empty() {
            return Ok(PageCommit::Existing(existing));
        }
        for c in changed {
            let stored = recipients.and_then(|m| m.get(&c.recipient.contact_id));
            if stored.map(|r| r.status) != Some(c.expected) {
                return Err(StoreError::VersionMismatch);
            }
        }
        if let Some(u) = usage {
            let stored = s.broadcasts.usage.get(&b.tenant_id).map_or(0, |u| u.version);
            if stored + 1 != u.version {
                return Err(StoreError::VersionMismatch);
            }
            s.broadcasts.usage.insert(b.tenant_id.clone(), u.clone());
        }
        let map = s.broadcasts.recipients.entry(k.clone()).or_default();
        for r in created {
            map.insert(r.contact_id.clone(), r.clone());
        }
        for c in changed {
            map.insert(c.recipient.contact_id.clone(), c.recipient.clone());
        }
        s.broadcasts.broadcasts.insert(k, b.clone());
        // The transaction's items: the broadcast, each recipient in its shard, the usage item.
        let (t, id) = (&b.tenant_id, &b.broadcast_id);
        note_write(&mut s, broadcasts_pk(t));
        for contact_id in created
            .iter()
            .map(|r| &r.contact_id)
            .chain(changed.iter().map(|c| &c.recipient.contact_id))
        {
            note_write(&mut s, broadcast_recipients_pk(t, id, recipient_shard(contact_id)));
        }
        if usage.is_some() {
            note_write(&mut s, tenant_pk(t));
        }
        Ok(PageCommit::Committed)
    }

    async fn broadcast_recipients(
        &self,
        tenant_id: &str,
        broadcast_id: &str,
        status: Option<RecipientStatus>,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<BroadcastRecipient>, StoreError> {
        self.enter(Op::BroadcastRecipients, 1).await?;
        let s = self.state();
        // The engine's own positions name the contact id (`contact_id`), as in the table.
        let after = start.and_then(|p| p.get("contact_id").or_else(|| p.get("after")).cloned());
        // From the start on, and only the page (and one more) cloned: a campaign pages through
        // all of its recipients.
        let sorted: Vec<(String, BroadcastRecipient)> = s
            .broadcasts
            .recipients
            .get(&bkey(tenant_id, broadcast_id))
            .map(|m| {
                let from = match &after {
                    Some(a) => m.range::<String, _>((Bound::Excluded(a.clone()), Bound::Unbounded)),
                    None => m.range::<String, _>(..),
                };
                from.filter(|(_, r)| status.is_none_or(|st| r.status == st))
                    .take(limit.max(1) as usize + 1)
                    .map(|(c, r)| (c.clone(), r.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let page = page_of(sorted, Order::Ascending, limit, None);
        Ok(Page {
            next: page
                .next
                .map(|p| Position::from([("contact_id".to_owned(), p["after"].clone())])),
            items: page.items,
        })
    }

    async fn broadcast_settings(&self, tenant_id: &str) -> Result<BroadcastSettings, StoreError> {
        self.enter(Op::BroadcastSettings, 1).await?;
        Ok(self
            .state()
            .broadcasts
            .settings
            .get(tenant_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn put_broadcast_settings(&self, tenant_id: &str, settings: &BroadcastSettings) -> Result<(), StoreError> {
        self.enter(Op::PutBroadcastSettings, 1).await?;
        let mut s = self.state();
        // The messaging limit is Meta's: a settings write keeps the stored one.
        let limit = s.broadcasts.settings.get(tenant_id).map(|x| x.messaging_limit);
        let mut settings = settings.clone();
        if let Some(limit) = limit {
            settings.messaging_limit = limit;
        }
        s.broadcasts.settings.insert(tenant_id.to_owned(), settings);
        Ok(())
    }

    async fn set_messaging_limit(&self, tenant_id: &str, limit: Option<u64>) -> Result<(), StoreError> {
        self.enter(Op::PutBroadcastSettings, 1).await?;
        let mut s = self.state();
        s.broadcasts
            .settings
            .entry(tenant_id.to_owned())
            .or_default()
            .messaging_limit = limit;
        Ok(())
    }

    async fn messaging_usage(&self, tenant_id: &str) -> Result<MessagingUsage, StoreError> {
        self.enter(Op::MessagingUsage, 1).await?;
        Ok(self
            .state()
            .broadcasts
            .usage
            .get(tenant_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn put_number_quality(&self, tenant_id: &str, quality: &NumberQuality) -> Result<bool, StoreError> {
        self.enter(Op::PutBroadcastSettings, 1).await?;
        let mut s = self.state();
        let stored = s.broadcasts.qualities.entry(tenant_id.to_owned()).or_default();
        let key = (quality.waba_id.clone(), quality.display_phone_number.clone());
        if stored.get(&key).is_some_and(|q| q.changed_at > quality.changed_at) {
            return Ok(false);
        }
        stored.insert(key, quality.clone());
        Ok(true)
    }

    async fn number_qualities(&self, tenant_id: &str) -> Result<Vec<NumberQuality>, StoreError> {
        self.enter(Op::MessagingUsage, 1).await?;
        Ok(self
            .state()
            .broadcasts
            .qualities
            .get(tenant_id)
            .map(|q| q.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn erase_recipient(&self, tenant_id: &str, contact_id: &str) -> Result<u64, StoreError> {
        self.enter(Op::EraseRecipient, 1).await?;
        let mut s = self.state();
        let mut n = 0;
        for ((t, _), m) in s.broadcasts.recipients.iter_mut() {
            if t == tenant_id && m.remove(contact_id).is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn delete_broadcasts_before(&self, tenant_id: &str, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.enter(Op::DeleteBroadcasts, 1).await?;
        let mut s = self.state();
        let gone: Vec<(String, String)> = s
            .broadcasts
            .broadcasts
            .iter()
            .filter(|((t, _), b)| t == tenant_id && b.status.is_final() && b.finished_at.is_some_and(|f| f < before))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            s.broadcasts.broadcasts.remove(k);
            s.broadcasts.recipients.remove(k);
        }
        Ok(gone.len() as u64)
    }
}
