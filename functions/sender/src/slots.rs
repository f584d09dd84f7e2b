//! Slot booking on a phone number's send schedule, shared by every concurrent sender through
//! the store: slots are wall-clock times, so a sender sleeps until each one is due.

use std::time::Duration;

use chrono::Utc;

use crm_shared::sending::{SendSchedule, SlotDecision, SlotGrant};

use crate::{Deps, SenderStore};

/// Books `count` consecutive slots on the number's shared send schedule, waiting (bounded by
/// `max_slot_wait`) while it is booked beyond its horizon. `None`: no slots in time, or the
/// schedule is unavailable (the messages go back to the queue).
pub(crate) async fn take_slots<S: SenderStore, G, R>(
    deps: &Deps<S, G, R>,
    tenant_id: &str,
    number: &str,
    count: u32,
) -> Option<SlotGrant> {
    let schedule = SendSchedule::new(deps.config.rate_per_second, deps.config.max_slot_wait);
    let deadline_us = Utc::now().timestamp_micros() + schedule.horizon_us;
    loop {
        let now_us = Utc::now().timestamp_micros();
        match deps
            .store
            .take_send_slots(tenant_id, number, now_us, count, schedule)
            .await
        {
            Ok(SlotDecision::Grant { grant, .. }) => return Some(grant),
            Ok(SlotDecision::Full { retry_at_us }) if retry_at_us <= deadline_us => sleep_until_us(retry_at_us).await,
            Ok(SlotDecision::Full { .. }) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "send schedule unavailable");
                return None;
            }
        }
    }
}

/// Sleeps until the wall-clock time `at_us` (µs since the epoch): slots are shared across
/// machines, so they are wall-clock times.
pub(crate) async fn sleep_until_us(at_us: i64) {
    let wait_us = at_us - Utc::now().timestamp_micros();
    if wait_us > 0 {
        tokio::time::sleep(Duration::from_micros(wait_us as u64)).await;
    }
}
