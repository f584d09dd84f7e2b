//! The JSON form of a broadcast and of a recipient, as the API and `crmctl` show them.

use serde_json::{Value, json};

use super::{Broadcast, BroadcastRecipient};

pub fn view(b: &Broadcast) -> Value {
    json!({
        "id": b.broadcast_id,
        "name": b.spec.name,
        "status": b.status,
        "pause_reason": b.pause_reason,
        "template": {"name": b.spec.template_name, "language": b.spec.language.as_deref().unwrap_or("auto")},
        "category": b.category,
        "audience": b.spec.audience,
        "parameters": b.spec.parameters,
        "defaults": b.spec.defaults,
        "from": b.spec.phone_number_id,
        "start_at": b.spec.start_at,
        "time_zone": b.spec.time_zone,
        "quiet_hours": b.spec.quiet_hours,
        "counters": b.counters,
        "progress": {
            "planned": b.progress.planned_at.is_some(),
            "planned_at": b.progress.planned_at,
            "dispatched": b.progress.dispatched_at.is_some(),
            "dispatched_at": b.progress.dispatched_at,
            "waiting_for": b.progress.waiting_for,
            "wait_until": b.progress.wait_until,
        },
        "created_at": b.created_at,
        "updated_at": b.updated_at,
        "started_at": b.started_at,
        "finished_at": b.finished_at,
    })
}

pub fn recipient_view(r: &BroadcastRecipient) -> Value {
    json!({
        "contact_id": r.contact_id,
        "status": r.status,
        "reason": r.reason,
        "language": r.language,
        "message_id": r.message_id,
        "error_code": r.error_code,
        "attempts": r.attempts,
        "retry_at": r.retry_at,
        "sent_at": r.sent_at,
        "replied": r.replied,
        "opted_out_after": r.opted_out_after,
        "updated_at": r.updated_at,
    })
}
