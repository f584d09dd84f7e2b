//! Broadcast benchmark (not a test; `make bench-broadcasts`): one campaign of `N` recipients
//! (default 20,000) over the in-memory store, through the real engine
//! (`crm_shared::broadcast::run`): planning time, store calls per recipient for planning,
//! dispatching and following three statuses, and the writes per partition key. Meta's side is simulated by
//! recording `sent`, `delivered` and `read` on every dispatched message (the sender's own cost
//! per message is `make bench`'s); the send queue is the in-memory one.
//!
//! Store calls are counted per port operation; what each costs in DynamoDB requests is in the
//! printed table (a page commit is one `TransactWriteItems` of up to 100 items).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use crm_shared::broadcast::control;
use crm_shared::broadcast::run::{EngineConfig, run_all};
use crm_shared::broadcast::{Action, BroadcastStatus};
use crm_shared::contact::MarketingConsent;
use crm_shared::message::{Direction, MessageStatus};
use crm_shared::secret::Secret;
use crm_shared::store::keys::{RECIPIENT_SHARDS, recipient_shard};
use crm_shared::store::{BroadcastStore, InboundStore, OutboundStore, StatusWrite, TemplateStore};
use crm_shared::template::TemplateRecord;
use crm_shared::testing::{MemQueue, MemStore, Op, fixtures};

const OPS: [(Op, &str, u32); 12] = [
    (Op::ListContacts, "list_contacts (Query + BatchGetItem)", 2),
    (Op::GetContact, "get_contact (GetItem)", 1),
    (Op::CommitPage, "commit_page (TransactWriteItems)", 1),
    (Op::SaveBroadcast, "save_broadcast (PutItem)", 1),
    (Op::ListBroadcasts, "list_broadcasts (Query)", 1),
    (Op::BroadcastRecipients, "broadcast_recipients (Query)", 1),
    (Op::BroadcastSettings, "broadcast_settings (GetItem)", 1),
    (Op::MessagingUsage, "messaging_usage (GetItem)", 1),
    (Op::TemplateLanguages, "template_languages (Query)", 1),
    (Op::TemplateSettings, "template_settings (GetItem)", 1),
    (Op::CreateMessage, "create_message (TransactWriteItems)", 1),
    (Op::GetMessage, "get_message (GetItem)", 1),
];

fn calls(store: &MemStore) -> BTreeMap<&'static str, (usize, u32)> {
    OPS.iter()
        .map(|(op, name, weight)| (*name, (store.calls(*op), *weight)))
        .collect()
}

fn requests(before: &BTreeMap<&'static str, (usize, u32)>, after: &BTreeMap<&'static str, (usize, u32)>) -> u64 {
    after
        .iter()
        .map(|(k, (n, w))| (n - before[k].0) as u64 * u64::from(*w))
        .sum()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let store = MemStore::new();
    let queue = MemQueue::new();
    let tenant = fixtures::tenant("106540352242922");
    let t = tenant.tenant_id.clone();
    store.add_tenant(tenant.clone(), Secret::new("token"));
    store.set_messaging_limit(&t, None).await.unwrap();
    let meta = json!({"name": "spring_sale", "language": "en_US", "id": "9", "status": "APPROVED",
        "category": "MARKETING", "parameter_format": "POSITIONAL",
        "components": [{"type": "BODY", "text": "Hi {{1}}", "example": {"body_text": [["Ana"]]}}]});
    let mut template = TemplateRecord::from_meta(&t, &meta, Utc::now()).unwrap();
    template.tenant_id = t.clone();
    store.put_template(&template).await.unwrap();
    for i in 0..n {
        let mut c = fixtures::contact(&t, &format!("+44770{:07}", i), Utc::now());
        c.tags = vec!["all".into()];
        c.name = Some(format!("N{i}"));
        c.last_inbound_at = None;
        // One in eight opted out: skipped at planning.
        c.consent.marketing = if i % 8 == 1 {
            MarketingConsent::OptedOut
        } else {
            MarketingConsent::OptedIn
        };
        store.add_contact(c);
    }
    let body = json!({"name": "bench", "template": {"name": "spring_sale", "language": "en_US"},
        "audience": {"tags_all": ["all"]}, "parameters": {"1": "contact.name"}});
    let b = control::create(&store, &t, &body, None, Utc::now(), None)
        .await
        .unwrap();
    control::act(&store, &t, &b.broadcast_id, Action::Start, Utc::now())
        .await
        .unwrap();
    // 1,000 msg/s per number, all of it for the broadcast, 60 s runs.
    store
        .put_broadcast_settings(
            &t,
            &crm_shared::broadcast::pacing::BroadcastSettings {
                agents_may_broadcast: false,
                rate_share_pct: 100,
                messaging_limit: None,
            },
        )
        .await
        .unwrap();
    let config = EngineConfig {
        rate_per_second: 1000,
        run_secs: 60,
        ..EngineConfig::default()
    };

    let start = calls(&store);
    let clock = Instant::now();
    let mut runs = 0;
    let mut planned_after = None;
    loop {
        runs += 1;
        run_all(
            &store,
            &crm_shared::testing::MemBlobs::new(),
            &queue,
            Utc::now(),
            &config,
        )
        .await
        .unwrap();
        let now = store.get_broadcast(&t, &b.broadcast_id).await.unwrap().unwrap();
        if planned_after.is_none() && now.progress.planned_at.is_some() {
            planned_after = Some((clock.elapsed(), runs));
        }
        if now.progress.dispatched_at.is_some() || runs > 1000 {
            break;
        }
    }
    let dispatched = calls(&store);
    let dispatch_time = clock.elapsed();
    // Meta's side: every dispatched message sent, delivered and read.
    let messages: Vec<_> = store
        .messages(&t)
        .into_iter()
        .filter(|m| m.direction == Direction::Outbound)
        .collect();
    for (i, m) in messages.iter().enumerate() {
        let wamid = format!("wamid.{i}");
        store
            .mark_sent(&t, &m.message_id, &m.contact_id, &wamid, Utc::now())
            .await
            .unwrap();
        for status in [MessageStatus::Delivered, MessageStatus::Read] {
            let write = StatusWrite {
                wamid: wamid.clone(),
                status,
                at: Utc::now(),
                error: None,
                pricing: None,
                conversation: None,
            };
            store.apply_status(&t, &write).await.unwrap();
        }
    }
    let before_follow = calls(&store);
    run_all(
        &store,
        &crm_shared::testing::MemBlobs::new(),
        &queue,
        Utc::now(),
        &config,
    )
    .await
    .unwrap();
    let end = calls(&store);
    let b = store.get_broadcast(&t, &b.broadcast_id).await.unwrap().unwrap();
    assert_eq!(b.status, BroadcastStatus::Completed, "{:?}", b.progress);
    assert_eq!(queue.send_jobs().len(), messages.len());

    let (plan_time, plan_runs) = planned_after.unwrap();
    let plan_dispatch = requests(&start, &dispatched);
    let follow = requests(&before_follow, &end);
    println!(
        "broadcast bench: {n} recipients, {} eligible (in-memory store; debug or release as built)",
        messages.len()
    );
    println!(
        "  planning: {:.2?} over {plan_runs} engine run(s); dispatch done after {:.2?} ({runs} runs)",
        plan_time, dispatch_time
    );
    println!("  counters: {:?}", b.counters);
    println!(
        "  store requests, plan + dispatch: {plan_dispatch} ({:.3} per recipient)",
        plan_dispatch as f64 / n as f64
    );
    println!(
        "  store requests, following sent+delivered+read: {follow} ({:.3} per recipient)",
        follow as f64 / n as f64
    );
    println!(
        "  total per recipient: {:.3}",
        (plan_dispatch + follow) as f64 / n as f64
    );
    println!("  by operation (calls, requests each):");
    for (k, (c, w)) in &end {
        let d = c - start[k].0;
        if d > 0 {
            println!("    {k:<45} {d:>8} × {w}");
        }
    }
    // Writes per partition key: the broadcast item once per page commit; each recipient item
    // once at planning, once at dispatch and once per status change seen by a follow pass.
    let pages = end["commit_page (TransactWriteItems)"].0 - start["commit_page (TransactWriteItems)"].0;
    println!(
        "  writes per key: broadcast item {} (page commits + lifecycle), recipient items {} over {} shard keys (T#<t>#BCAST#<b>#<shard>)",
        pages + (end["save_broadcast (PutItem)"].0 - start["save_broadcast (PutItem)"].0),
        n + 2 * messages.len(),
        RECIPIENT_SHARDS
    );
    // Each recipient item is written once at planning, and a sent one once at dispatch and once
    // per status (sent, delivered, read): the write distribution over the shard keys, and what
    // the busiest key takes when the campaign sends at 1,000 msg/s.
    let mut per_shard = vec![0u64; RECIPIENT_SHARDS as usize];
    for r in store.recipients_of(&t, &b.broadcast_id) {
        per_shard[recipient_shard(&r.contact_id) as usize] += if r.message_id.is_some() { 5 } else { 1 };
    }
    let total: u64 = per_shard.iter().sum();
    let busiest = *per_shard.iter().max().unwrap_or(&0);
    let quietest = *per_shard.iter().min().unwrap_or(&0);
    let sent_writes_per_sec = 1000.0 * total as f64 / messages.len().max(1) as f64;
    println!(
        "  recipient writes per shard key: min {quietest}, max {busiest} of {total} (busiest {:.1} % of them); at 1,000 sends/s ≈ {:.0} recipient writes/s in all, ≈ {:.0}/s on the busiest key (target ≤ 500)",
        100.0 * busiest as f64 / total.max(1) as f64,
        sent_writes_per_sec,
        sent_writes_per_sec * busiest as f64 / total.max(1) as f64
    );
}
