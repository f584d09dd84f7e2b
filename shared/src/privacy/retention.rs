//! The retention sweep: per tenant, deletes messages older than `messages_days`, media objects
//! older than `media_days` (marking their messages' media expired), exports older than
//! `exports_days` and audit entries older than `audit_days`.
//!
//! Every kind is found by a key-range query on time-ordered ids (no scans, no watermark to
//! keep): messages on GSI5 (`T#<t>#MSGS#<shard>`, every shard), stored media on the sparse GSI6 (`T#<t>#MEDIA`),
//! audit entries in their partition, exports on GSI1 (`T#<t>#EXPORTS`). Each query starts at
//! the oldest item that is still there, so a run that stops (budget, crash) loses nothing and
//! the next one resumes where it stopped; a repeated run finds nothing and deletes nothing.

use std::collections::HashSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::stream::{self, TryStreamExt};
use serde::Serialize;

use super::{Privacy, PrivacyError, PrivacyPorts, RetentionSettings};
use crate::conversation::{ConversationStatus, StatusChange, auto_resolves};
use crate::jobs::JobQueue;
use crate::objects::ObjectStore;
use crate::store::MessageScope;

/// Items read per page.
const PAGE: i32 = 1000;
/// How far behind the auto-resolve cut the sweep looks (runs are hourly).
const AUTO_RESOLVE_LOOKBACK_HOURS: i64 = 48;
/// Media expiry updates in flight at once.
const MEDIA_UPDATES: usize = 16;

/// What one sweep deleted for one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionCounts {
    pub messages: u64,
    pub media_objects: u64,
    pub exports: u64,
    pub audit_entries: u64,
    /// Conversations idle past `messages_days` (their messages are gone), with their notes.
    pub conversations: u64,
    pub notes: u64,
    /// Conversations the tenant's auto-resolve period resolved (not deletions).
    pub conversations_resolved: u64,
    /// Broadcasts finished (completed or cancelled) more than `messages_days` ago, with their
    /// recipients.
    pub broadcasts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRetention {
    pub tenant_id: String,
    /// The settings applied (the tenant's or the platform defaults).
    pub settings: RetentionSettings,
    pub deleted: RetentionCounts,
    /// False when the run stopped before this tenant was done (time budget or error).
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub as_of: DateTime<Utc>,
    pub tenants: Vec<TenantRetention>,
    pub complete: bool,
}

impl RetentionReport {
    pub fn total(&self) -> RetentionCounts {
        let mut t = RetentionCounts::default();
        for r in &self.tenants {
            t.messages += r.deleted.messages;
            t.media_objects += r.deleted.media_objects;
            t.exports += r.deleted.exports;
            t.audit_entries += r.deleted.audit_entries;
            t.conversations += r.deleted.conversations;
            t.notes += r.deleted.notes;
            t.conversations_resolved += r.deleted.conversations_resolved;
            t.broadcasts += r.deleted.broadcasts;
        }
        t
    }

    pub fn failed(&self) -> bool {
        self.tenants.iter().any(|t| t.error.is_some())
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

impl<S: PrivacyPorts, O: ObjectStore, Q: JobQueue> Privacy<S, O, Q> {
    /// Every tenant's id.
    pub async fn tenant_ids(&self) -> Result<Vec<String>, PrivacyError> {
        Ok(self.store.tenant_ids().await?)
    }

    /// One sweep over every tenant (or only those named in `only`) as of `as_of`, until
    /// `deadline` if there is one. A tenant whose sweep fails is reported with its error; the
    /// others still run.
    pub async fn run_retention(
        &self,
        as_of: DateTime<Utc>,
        deadline: Option<Instant>,
        only: &[String],
    ) -> Result<RetentionReport, PrivacyError> {
        let mut report = RetentionReport {
            as_of,
            tenants: Vec::new(),
            complete: true,
        };
        let tenants = if only.is_empty() {
            self.tenant_ids().await?
        } else {
            only.to_vec()
        };
        for tenant_id in tenants {
            if past(deadline) {
                report.complete = false;
                break;
            }
            let outcome = self.sweep_tenant(&tenant_id, as_of, deadline).await;
            match outcome {
                Ok(done) => {
                    report.complete &= done.complete;
                    report.tenants.push(done);
                }
                Err(err) => {
                    tracing::error!(error = %err, %tenant_id, "retention sweep of a tenant failed");
                    report.complete = false;
                    report.tenants.push(TenantRetention {
                        tenant_id,
                        settings: RetentionSettings::default(),
                        deleted: RetentionCounts::default(),
                        complete: false,
                        error: Some(err.to_string()),
                    });
                }
            }
        }
        Ok(report)
    }

    /// Resolves the tenant's open and pending conversations idle beyond its auto-resolve period
    /// that nobody waits in, each only if the conversation is still as read. Only the last two days of the idle range are walked:
    /// older ones were resolved by the hourly runs before. Returns how many it resolved.
    async fn auto_resolve(
        &self,
        tenant_id: &str,
        as_of: DateTime<Utc>,
        deadline: Option<Instant>,
    ) -> Result<u64, PrivacyError> {
        let Some(hours) = self
            .store
            .get_tenant(tenant_id)
            .await?
            .and_then(|t| t.inbox.auto_resolve_after_hours)
        else {
            return Ok(0);
        };
        let before = as_of - chrono::Duration::hours(hours.into());
        let since = before - chrono::Duration::hours(AUTO_RESOLVE_LOOKBACK_HOURS);
        let mut resolved = 0;
        let mut next = None;
        while !past(deadline) {
            let page = self
                .store
                .idle_conversations(tenant_id, Some(since), before, next, PAGE)
                .await?;
            for c in page.items.iter().filter(|c| auto_resolves(c, Some(hours), as_of)) {
                let change = StatusChange {
                    status: ConversationStatus::Resolved,
                    snooze_until: None,
                    at: as_of,
                    by: None,
                };
                let done = self
                    .store
                    .set_status(tenant_id, &c.conversation_id, &change, Some((c.status, c.updated_at)))
                    .await?;
                resolved += u64::from(done.is_some());
            }
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }
        Ok(resolved)
    }

    /// Sweeps one tenant.
    pub async fn sweep_tenant(
        &self,
        tenant_id: &str,
        as_of: DateTime<Utc>,
        deadline: Option<Instant>,
    ) -> Result<TenantRetention, PrivacyError> {
        let settings = self.settings(tenant_id).await?;
        let cut = settings.cutoffs(as_of);
        let mut deleted = RetentionCounts::default();
        let mut handled = HashSet::new();
        let mut complete = true;

        // Messages first: media of deleted messages goes with them, not through step two.
        let scope = MessageScope::Tenant {
            before: Some(cut.messages),
        };
        let mut next = None;
        loop {
            if past(deadline) {
                complete = false;
                break;
            }
            let page = self.store.message_refs(tenant_id, scope, next, PAGE).await?;
            let d = self
                .delete_messages(tenant_id, &page.items, None, true, &mut handled)
                .await?;
            deleted.messages += d.messages;
            deleted.media_objects += d.media_objects;
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }

        // Conversations idle past messages_days go after their messages, notes with them.
        let mut next = None;
        while complete {
            if past(deadline) {
                complete = false;
                break;
            }
            let page = self
                .store
                .idle_conversations(tenant_id, None, cut.messages, next, PAGE)
                .await?;
            for c in &page.items {
                let items = self.store.delete_conversation(c).await?;
                deleted.conversations += u64::from(items > 0);
                deleted.notes += items.saturating_sub(1);
            }
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }
        if complete {
            deleted.conversations_resolved = self.auto_resolve(tenant_id, as_of, deadline).await?;
        }

        // Media past media_days: objects first, then the messages stop offering them.
        let scope = MessageScope::StoredMedia { before: cut.media };
        let mut next = None;
        while complete {
            if past(deadline) {
                complete = false;
                break;
            }
            let page = self.store.message_refs(tenant_id, scope, next, PAGE).await?;
            let objects: Vec<String> = page.items.iter().filter_map(|m| m.media_key.clone()).collect();
            deleted.media_objects += self.media.delete_keys(&objects).await?;
            stream::iter(page.items.iter().map(Ok))
                .try_for_each_concurrent(MEDIA_UPDATES, |m| self.store.expire_media(tenant_id, &m.message_id))
                .await?;
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }

        // Exports past exports_days (or past the expiry they were created with).
        if complete {
            let expired: Vec<_> = self
                .store
                .tenant_exports(tenant_id)
                .await?
                .into_iter()
                .filter(|e| e.created_at < cut.exports || e.is_expired(as_of))
                .collect();
            let objects: Vec<String> = expired.iter().map(|e| e.s3_key.clone()).collect();
            self.exports.delete_keys(&objects).await?;
            deleted.exports += self.store.delete_exports(tenant_id, &expired).await?;
        }

        // Audit entries past audit_days.
        let mut next = None;
        while complete {
            if past(deadline) {
                complete = false;
                break;
            }
            let (n, more) = self.store.delete_audit_before(tenant_id, cut.audit, next, PAGE).await?;
            deleted.audit_entries += n;
            match more {
                Some(m) => next = Some(m),
                None => break,
            }
        }

        // Campaign records live as long as the messages they sent.
        if complete {
            deleted.broadcasts += self.store.delete_broadcasts_before(tenant_id, cut.messages).await?;
        }

        Ok(TenantRetention {
            tenant_id: tenant_id.to_owned(),
            settings,
            deleted,
            complete,
            error: None,
        })
    }
}
