//! The event log's write units per event (not a test), `make bench-event-log`: what one
//! tenant's log key (`T#<t>#EVLOG`) takes when a campaign runs at the number's full rate.
//!
//! Meta's three statuses (sent, delivered, read) of `--messages` outbound messages become
//! stream changes of the message item, the real rules (`events::derive`) make their events,
//! and they are packed as the events function records them (96 a transaction: the head, the
//! pack, 96 id records and two counter items) into the very item it stores
//! (`store::event_pack_item`). The item's size is counted as DynamoDB counts it
//! (`store::item_size`), beside the same events as a list of maps (the pack format before
//! packs were deflated), and turned into write units per event and per second on the key at
//! `--rate` messages a second.
//!
//! `target/measure/event-log-units [--messages 3200] [--rate 1000]`

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crm_shared::events::Event;
use crm_shared::events::derive::{StreamChange, derive};
use crm_shared::store::{event_pack_item, item_size, transactional_write_units};

const TENANT: &str = "01jbenchtenant000000000000";
/// Events per pack under load: what a transaction holds beside the head and two counter items.
const PER_PACK: usize = 96;
/// DynamoDB's write capacity per partition key, and the benchmark's target for any key.
const KEY_LIMIT: f64 = 1000.0;
const TARGET: f64 = 500.0;

/// The message item's image (as the stream's JSON images are) at a status.
fn image(message_id: &str, contact_id: &str, status: &str, rank: u64, at: &[(&str, DateTime<Utc>)]) -> Value {
    let status_at: serde_json::Map<String, Value> = at
        .iter()
        .map(|(s, t)| ((*s).to_owned(), json!(t.to_rfc3339())))
        .collect();
    json!({
        "PK": format!("T#{TENANT}#MSG#{message_id}"), "SK": "MSG",
        "tenant_id": TENANT, "message_id": message_id, "contact_id": contact_id,
        "direction": "outbound", "type": "template", "phone_number_id": "106540352242922",
        "category": "marketing", "status": status, "status_rank": rank, "status_at": status_at,
        "wamid": format!("wamid.HBgL{message_id}"),
        "content": {"name": "spring_sale", "language": {"code": "en_US"}},
        "created_at": at[0].1.to_rfc3339(), "timestamp": at[0].1.to_rfc3339(),
    })
}

/// The events of one message's three statuses, through the real rules.
fn status_events(n: usize, start: DateTime<Utc>) -> Vec<crm_shared::events::EventDraft> {
    let (message_id, contact_id) = (crm_shared::ids::new_id(), crm_shared::ids::new_id());
    let steps = [("queued", 0), ("sent", 1), ("delivered", 2), ("read", 3)];
    let mut at = vec![("queued", start)];
    let mut drafts = Vec::new();
    for (i, pair) in steps.windows(2).enumerate() {
        let ((old_status, old_rank), (status, rank)) = (pair[0], pair[1]);
        let old = image(&message_id, &contact_id, old_status, old_rank, &at);
        let when = start + chrono::Duration::milliseconds(400 * (i as i64 + 1));
        at.push((status, when));
        let new = image(&message_id, &contact_id, status, rank, &at);
        let change = StreamChange {
            record_id: format!("bench-{n}-{status}"),
            at: when,
            keys: json!({"PK": new["PK"], "SK": "MSG"}),
            old: Some(old),
            new: Some(new),
        };
        drafts.extend(derive(&change));
    }
    drafts
}

/// A pack's size: (deflated item bytes, the same events listed as maps), and the time taken to
/// make the stored item (serializing and deflating).
fn pack_sizes(events: &[Event], expires_at: DateTime<Utc>) -> (usize, usize, Duration) {
    let t = Instant::now();
    let packed = event_pack_item(events, expires_at);
    let took = t.elapsed();
    let mut listed = packed.clone();
    listed.remove("packed");
    listed.insert(
        "events".into(),
        serde_dynamo::to_attribute_value(events).expect("events serialize"),
    );
    (item_size(&packed), item_size(&listed), took)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let messages = bench::numeric_flag(&args, "--messages").unwrap_or(3200) as usize;
    let rate = bench::numeric_flag(&args, "--rate").unwrap_or(1000) as f64;
    let start = Utc::now();
    let expires_at = start + chrono::Duration::days(7);
    let drafts: Vec<_> = (0..messages).flat_map(|n| status_events(n, start)).collect();
    let events: Vec<Event> = drafts
        .into_iter()
        .enumerate()
        .map(|(i, d)| Event::from_draft(d, 1 + i as u64))
        .collect();
    let packs: Vec<&[Event]> = events.chunks(PER_PACK).collect();
    let mut deflate = Duration::ZERO;
    let (mut packed_bytes, mut listed_bytes, mut packed_units, mut listed_units) = (0, 0, 0u64, 0u64);
    for pack in &packs {
        let (packed, listed, took) = pack_sizes(pack, expires_at);
        deflate += took;
        packed_bytes += packed;
        listed_bytes += listed;
        packed_units += transactional_write_units(packed);
        listed_units += transactional_write_units(listed);
    }
    // Each transaction also moves the head (a small item: 2 units).
    let head_units = 2 * packs.len() as u64;
    let n_events = events.len() as f64;
    let events_per_sec = rate * n_events / messages as f64;
    let per_event = |units: u64| (units + head_units) as f64 / n_events;
    let per_sec = |units: u64| per_event(units) * events_per_sec;
    let packs_per_sec = events_per_sec / PER_PACK as f64;
    println!(
        "event log write units: {messages} messages' sent/delivered/read → {} events (`events::derive`), packs of {PER_PACK} as the events function stores them",
        events.len()
    );
    println!(
        "  pack item, mean: {:.0} B deflated vs {:.0} B as a list of maps ({:.1}× smaller); {:.1} B per event deflated",
        packed_bytes as f64 / packs.len() as f64,
        listed_bytes as f64 / packs.len() as f64,
        listed_bytes as f64 / packed_bytes as f64,
        packed_bytes as f64 / n_events
    );
    println!(
        "  write units per event (pack + head, transactional: 2 per KB begun): deflated {:.3}, listed {:.3}",
        per_event(packed_units),
        per_event(listed_units)
    );
    let deflated = per_sec(packed_units);
    println!(
        "  T#<t>#EVLOG at {rate:.0} msg/s ({events_per_sec:.0} events/s): deflated {deflated:.0} WCU/s, listed {:.0} WCU/s (a key takes {KEY_LIMIT:.0}; target ≤ {TARGET:.0}: {}); {:.0} writes/s (packs and head)",
        per_sec(listed_units),
        if deflated <= TARGET { "met" } else { "MISSED" },
        2.0 * packs_per_sec
    );
    println!(
        "  one tenant's log takes ≈ {:.0} events/s before DynamoDB throttles it (was ≈ {:.0}); serializing and deflating a pack: {:.0} µs ({:.1} µs per event)",
        KEY_LIMIT / per_event(packed_units),
        KEY_LIMIT / per_event(listed_units),
        deflate.as_secs_f64() * 1e6 / packs.len() as f64,
        deflate.as_secs_f64() * 1e6 / n_events
    );
}
