//! Broadcast benchmark (not a test; `make bench-broadcasts`): one campaign of `N` recipients
//! (default 20,000) over the in-memory store, through the real engine
//! (`crm_shared::broadcast::run`): planning time, store calls per recipient for planning,
//! dispatching and following three statuses, and the writes per partition key. Meta's side is simulated by
//! recording `sent`, `delivered` and `read` on every dispatched message (the sender's own cost
//! per message is `make bench`'s); the send queue is the in-memory one.
//!
//! Store calls are counted per port operation; what each costs in DynamoDB requests is in the
//! printed table (a page commit is one `TransactWriteItems` of up to 100 items).
//!
//! `broadcast-bench campaign [N] [--share P] [--latency-ms L] [--senders S]` (`make
//! bench-campaign`, N default 100,000): the whole campaign instead — the engine on its
//! one-minute schedule, `S` real sender instances (default 20) with the limiter at 1,000/s
//! against the fake Graph (which answers `130429` above 1,000 in any aligned second), the
//! broadcast using `P` % of the rate (default 100), three statuses per message through the
//! webhook's store path, `L` ms per DynamoDB request (default 5). It reports planning time,
//! requests per recipient (engine, senders, webhook), the sent rate against the share,
//! throttles, memory (peak RSS and live heap), and the writes per partition key, table and
//! indexes, at 1,000 msg/s (`bench/src/campaign.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("campaign") {
        let arg = |name: &str| bench::numeric_flag(&args, name);
        let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
        let options = campaign::Options {
            recipients: n,
            share_pct: arg("--share").unwrap_or(100) as u8,
            latency: Duration::from_millis(arg("--latency-ms").unwrap_or(5)),
            instances: arg("--senders").unwrap_or(20) as usize,
        };
        // The senders, the engine, the fake Graph and the store share the host's cores, as
        // separate Lambda instances and Meta would not: two workers keep them from queueing
        // behind one another.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(campaign::run(options));
        return;
    }
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(engine_only(n));
}

/// The engine alone: Meta's side simulated by recording statuses on every dispatched message.
async fn engine_only(n: usize) {
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
    let cpu = || bench::procfs::cpu_time(std::process::id()).expect("own CPU time");
    let cpu_start = cpu();
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
    let plan_dispatch_cpu = cpu() - cpu_start;
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
    let cpu_follow = cpu();
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
    let follow_cpu = cpu() - cpu_follow;
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
    // The process's CPU, the in-memory store's own work included (what the engine costs a
    // Lambda is this plus the SDK's per request, which `make bench` measures per request).
    println!(
        "  engine CPU per recipient: plan + dispatch {:.1} µs, following three statuses {:.1} µs",
        plan_dispatch_cpu.as_secs_f64() * 1e6 / n as f64,
        follow_cpu.as_secs_f64() * 1e6 / n as f64
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

/// Live heap bytes and their high-water mark (the campaign's memory, beside the RSS).
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Counting;

    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    fn grew(by: usize) {
        let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }

    // SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
                grew(new_size);
            }
            p
        }
    }

    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }

    pub fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }

    /// Starts a new high-water mark at the current live size.
    pub fn reset_peak() {
        PEAK.store(live(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

mod campaign {
    use super::*;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::StreamExt;

    use bench::campaign::{Sqs, families, invoke_sender, sender_instance};
    use bench::graph::FakeGraph;
    use bench::stats::rate_accuracy;
    use crm_shared::broadcast::pacing::{BroadcastSettings, broadcast_rate};
    use crm_shared::config::GraphConfig;
    use crm_shared::graph::GraphClient;
    use crm_shared::store::keys::MESSAGE_INDEX_SHARDS;

    pub struct Options {
        pub recipients: usize,
        pub share_pct: u8,
        pub latency: Duration,
        pub instances: usize,
    }

    /// The number's rate: the sender's limiter and the fake Graph's `130429` threshold.
    const RATE: u32 = 1000;

    fn mib(bytes: usize) -> f64 {
        bytes as f64 / (1024.0 * 1024.0)
    }

    fn peak_rss_mib() -> f64 {
        bench::procfs::memory_kib(std::process::id())
            .map(|(_, hwm)| hwm as f64 / 1024.0)
            .unwrap_or(f64::NAN)
    }

    pub async fn run(o: Options) {
        let n = o.recipients;
        let data = MemStore::with_latency(o.latency);
        // One handle per component, so each one's requests are counted apart.
        let engine_store = data.counted_apart();
        let sender_store = data.counted_apart();
        let webhook_store = data.counted_apart();
        let tenant = fixtures::tenant(bench::throughput::BENCH_PHONE_NUMBER_ID);
        let t = tenant.tenant_id.clone();
        data.add_tenant(tenant.clone(), Secret::new("token"));
        data.set_messaging_limit(&t, None).await.unwrap();
        let meta = json!({"name": "spring_sale", "language": "en_US", "id": "9", "status": "APPROVED",
            "category": "MARKETING", "parameter_format": "POSITIONAL",
            "components": [{"type": "BODY", "text": "Hi {{1}}", "example": {"body_text": [["Ana"]]}}]});
        let template = TemplateRecord::from_meta(&t, &meta, Utc::now()).unwrap();
        data.put_template(&template).await.unwrap();
        for i in 0..n {
            let mut c = fixtures::contact(&t, &format!("+44770{i:07}"), Utc::now());
            c.tags = vec!["all".into()];
            c.name = Some(format!("N{i}"));
            c.last_inbound_at = None;
            c.consent.marketing = MarketingConsent::OptedIn;
            data.add_contact(c);
        }
        data.put_broadcast_settings(
            &t,
            &BroadcastSettings {
                agents_may_broadcast: false,
                rate_share_pct: o.share_pct,
                messaging_limit: None,
            },
        )
        .await
        .unwrap();
        // Naming the number: a campaign's messages carry it, yet move no conversation (the
        // inbox key, `T#<t>#CONVS`, would otherwise be the hottest in the table below).
        let body = json!({"name": "bench", "template": {"name": "spring_sale", "language": "en_US"},
            "audience": {"tags_all": ["all"]}, "parameters": {"1": "contact.name"},
            "from": bench::throughput::BENCH_PHONE_NUMBER_ID});
        let b = control::create(&data, &t, &body, None, Utc::now(), None).await.unwrap();
        let seeded_heap = heap::live();
        let seeded_rss = peak_rss_mib();

        let graph = FakeGraph::start().await.expect("fake graph");
        graph.configure(Duration::from_millis(100), RATE);
        graph.take();
        let graph_config = GraphConfig {
            base_url: graph.base_url(),
            version: crm_shared::config::DEFAULT_GRAPH_API_VERSION.into(),
        };
        let sqs = Sqs::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..o.instances {
            let deps = Arc::new(sender_fn::Deps::new(
                sender_store.clone(),
                GraphClient::new(&graph_config).expect("graph client"),
                sqs.clone(),
                sender_fn::SenderConfig {
                    rate_per_second: RATE,
                    ..sender_fn::SenderConfig::default()
                },
            ));
            senders.spawn(sender_instance(sqs.clone(), 10, stop.clone(), invoke_sender(deps)));
        }

        data.count_writes();
        heap::reset_peak();
        let config = EngineConfig {
            rate_per_second: RATE,
            run_secs: 60,
            ..EngineConfig::default()
        };
        control::act(&engine_store, &t, &b.broadcast_id, Action::Start, Utc::now())
            .await
            .unwrap();
        // Planning ends when the first message is stored (the engine plans, then dispatches).
        let clock = Instant::now();
        let watcher = {
            let store = engine_store.clone();
            tokio::spawn(async move {
                while store.calls(Op::CreateMessage) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (clock.elapsed(), store.requests(), heap::peak())
            })
        };
        // The engine on its schedule (every minute), until everything is dispatched.
        let mut runs = 0;
        let mut run_peaks = Vec::new();
        loop {
            let tick = Instant::now();
            let before = heap::live();
            heap::reset_peak();
            runs += 1;
            run_all(
                &engine_store,
                &crm_shared::testing::MemBlobs::new(),
                &sqs,
                Utc::now(),
                &config,
            )
            .await
            .unwrap();
            run_peaks.push((heap::peak().saturating_sub(before), heap::live().saturating_sub(before)));
            let now = data.get_broadcast(&t, &b.broadcast_id).await.unwrap().unwrap();
            if now.progress.dispatched_at.is_some() || runs > 100 {
                break;
            }
            tokio::time::sleep_until((tick + Duration::from_secs(60)).into()).await;
        }
        let dispatch_time = clock.elapsed();
        let (plan_time, plan_requests, _) = watcher.await.unwrap();
        let engine_plan_dispatch = engine_store.requests();
        let handed = engine_store.calls(Op::CreateMessage);
        // The senders drain the queue.
        let deadline = Instant::now() + Duration::from_secs(1800);
        while sender_store.calls(Op::MarkSent) < handed && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let send_done = clock.elapsed();
        stop.store(true, Ordering::Relaxed);
        while senders.join_next().await.is_some() {}
        let send_peak = heap::peak();
        let log = graph.take();

        // Meta's three statuses per message, as the webhook applies them (concurrently, as
        // its instances do).
        let statuses = futures::stream::iter(log.wamids.iter().flat_map(|w| {
            [MessageStatus::Sent, MessageStatus::Delivered, MessageStatus::Read].map(|status| StatusWrite {
                wamid: w.clone(),
                status,
                at: Utc::now(),
                error: None,
                pricing: None,
                conversation: None,
            })
        }))
        .map(|write| {
            let store = webhook_store.clone();
            let t = t.clone();
            async move { store.apply_status(&t, &write).await.unwrap() }
        })
        .buffer_unordered(200)
        .count()
        .await;
        // The engine follows them (its next scheduled run).
        let before_follow = engine_store.requests();
        run_all(
            &engine_store,
            &crm_shared::testing::MemBlobs::new(),
            &sqs,
            Utc::now(),
            &config,
        )
        .await
        .unwrap();
        let follow = engine_store.requests() - before_follow;
        let end_heap = heap::live();
        let b = data.get_broadcast(&t, &b.broadcast_id).await.unwrap().unwrap();
        assert_eq!(b.status, BroadcastStatus::Completed, "{:?}", b.progress);

        // The sent rate over the steady part: from 2 s after the first send to the last whole
        // second before the last one.
        let share = broadcast_rate(RATE, o.share_pct);
        let first_s = log.accepted_us.iter().min().map_or(0, |t| t.div_euclid(1_000_000));
        let last_s = log.accepted_us.iter().max().map_or(0, |t| t.div_euclid(1_000_000));
        let accuracy = rate_accuracy(&log.accepted_us, share, first_s + 2, last_s);
        let overall = log.accepted_us.len() as f64 / ((last_s - first_s).max(1)) as f64;

        let per = |r: u64| r as f64 / n as f64;
        println!(
            "broadcast campaign bench: {n} recipients, limiter {RATE}/s, broadcast share {} % = {share}/s, {} senders × 10, {:?} per DynamoDB request (in-memory store)",
            o.share_pct, o.instances, o.latency
        );
        println!(
            "  planning: {plan_time:.2?} ({:.3} requests per recipient); dispatch complete after {dispatch_time:.2?} ({runs} engine runs); last send accepted after {send_done:.2?}",
            per(plan_requests)
        );
        println!(
            "  sent: {} accepted, {} refused with 130429, {} records redelivered, {} statuses applied",
            log.accepted_us.len(),
            log.throttled,
            sqs.0.redelivered.load(Ordering::Relaxed),
            statuses
        );
        println!(
            "  sent rate: steady {:.1}/s over {} s ({:+.2} % of the share {share}/s; aligned seconds min {} max {}, sliding max {}); overall {overall:.1}/s",
            accuracy.sustained_per_s,
            accuracy.seconds,
            accuracy.deviation_pct,
            accuracy.min_aligned_second,
            accuracy.max_aligned_second,
            accuracy.max_sliding_second
        );
        println!("  counters: {:?}", b.counters);
        println!(
            "  engine requests per recipient: plan {:.3} + dispatch {:.3} + follow (results) {:.3} = {:.3} (target ≤ 3)",
            per(plan_requests),
            per(engine_plan_dispatch - plan_requests),
            per(follow),
            per(engine_plan_dispatch + follow)
        );
        println!(
            "  beside the engine, per message: sender {:.3}, webhook (3 statuses) {:.3} requests",
            per(sender_store.requests()),
            per(webhook_store.requests())
        );
        println!(
            "  memory: peak RSS {:.0} MiB (after seeding {seeded_rss:.0} MiB); live heap: seeded store {:.0} MiB, end {:.0} MiB, peak during sending {:.0} MiB",
            peak_rss_mib(),
            mib(seeded_heap),
            mib(end_heap),
            mib(send_peak)
        );
        println!(
            "  engine runs, live heap above the run's start (peak / kept): {}; the store's growth (messages, recipients) is in both",
            run_peaks
                .iter()
                .map(|(p, k)| format!("{:.1}/{:.1} MiB", mib(*p), mib(*k)))
                .collect::<Vec<_>>()
                .join(", ")
        );

        // Writes per partition key, table and indexes.
        let writes = data.writes_per_key();
        let sent = log.accepted_us.len().max(1) as f64;
        println!(
            "  writes per partition key (table and index keys; {} keys, {} writes): busiest key per family, and its rate at 1,000 msg/s with 3 statuses each",
            writes.len(),
            writes.values().sum::<u64>()
        );
        println!(
            "    {:<34} {:>8} {:>10} {:>9} {:>9} {:>12}",
            "key family", "keys", "writes", "min/key", "max/key", "max/s @1000"
        );
        for (family, f) in families(&writes, &t).iter().take(16) {
            println!(
                "    {family:<34} {:>8} {:>10} {:>9} {:>9} {:>12.1}",
                f.keys,
                f.writes,
                f.quietest,
                f.busiest,
                f.busiest as f64 * 1000.0 / sent
            );
        }
        let hottest = writes.values().copied().max().unwrap_or(0);
        println!(
            "  busiest key of all: {:.0} writes/s at 1,000 msg/s (target ≤ 500; the message index and outbox over {MESSAGE_INDEX_SHARDS} shards each)",
            hottest as f64 * 1000.0 / sent
        );
    }
}
