//! The send sweeper (scheduled, every 5 minutes): finds queued messages whose job is lost — the
//! API stored them but its enqueue failed, or their record was dead-lettered — and queues them
//! again. The sender then does what is right for each: sends it, fails it past the send
//! deadline (`not_sent_in_time`), or marks an abandoned send `unknown`. A message whose job is
//! alive is claimed by a sender at least every few minutes (waits are at most the lease,
//! 240 s), so it is left alone.
//!
//! The same run wakes snoozed conversations whose snooze ran out (the inbox already shows them
//! `open` at read; the write makes it true in the table, so the change stream tells endpoints
//! `conversation.status_changed`). Each wake is conditional on the conversation being unchanged
//! since it was read: a customer's message or an agent's change in between wins.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crm_shared::conversation::{ConversationStatus, StatusChange};
use crm_shared::jobs::{SendJob, SendJobQueue};
use crm_shared::store::{ConversationStore, OutboundStore, PrivacyStore, StoreError};

/// A queued message untouched for this long has lost its job (the API enqueues at once; a
/// live job is claimed at least every lease, 240 s).
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub tenants: usize,
    /// Messages queued again.
    pub requeued: usize,
    /// Messages whose new job could not be enqueued (the next sweep tries again).
    pub enqueue_failures: usize,
    /// Snoozed conversations woken (their snooze ran out).
    pub woken: usize,
}

/// Queues again every tenant's messages that have waited `STALE_AFTER` without a sender.
pub async fn sweep<S: OutboundStore + PrivacyStore + ConversationStore, Q: SendJobQueue>(
    store: &S,
    queue: &Q,
    now: DateTime<Utc>,
) -> Result<SweepReport, StoreError> {
    let stale = chrono::Duration::from_std(STALE_AFTER).expect("fits");
    let mut report = SweepReport::default();
    for tenant_id in store.tenant_ids().await? {
        report.tenants += 1;
        for message_id in store.stale_queued(&tenant_id, now - stale, now - stale).await? {
            match queue.enqueue_send(&SendJob::new(&tenant_id, &message_id)).await {
                Ok(()) => report.requeued += 1,
                Err(e) => {
                    tracing::warn!(error = %e, %message_id, "could not queue a stale message again");
                    report.enqueue_failures += 1;
                }
            }
        }
        report.woken += wake_snoozed(store, &tenant_id, now).await?;
    }
    if report.requeued > 0 || report.enqueue_failures > 0 {
        tracing::warn!(?report, "send sweep queued lost messages again");
    }
    Ok(report)
}

/// Opens the tenant's conversations whose snooze ran out by `now`; how many.
async fn wake_snoozed<S: ConversationStore>(
    store: &S,
    tenant_id: &str,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut woken = 0;
    for conversation_id in store.due_snoozes(tenant_id, now).await? {
        let Some(c) = store.get_conversation(tenant_id, &conversation_id).await? else {
            continue;
        };
        if c.status != ConversationStatus::Snoozed || c.effective_status(now) != ConversationStatus::Open {
            continue;
        }
        let change = StatusChange {
            status: ConversationStatus::Open,
            snooze_until: None,
            at: now,
            by: None,
        };
        let only_from = Some((ConversationStatus::Snoozed, c.updated_at));
        woken += usize::from(
            store
                .set_status(tenant_id, &conversation_id, &change, only_from)
                .await?
                .is_some(),
        );
    }
    Ok(woken)
}
