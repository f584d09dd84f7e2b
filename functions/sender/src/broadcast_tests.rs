//! Broadcasts end to end over the in-memory ports: the engine (`crm_shared::broadcast::run`)
//! plans and dispatches, this sender sends through the fake Graph, and the engine follows the
//! results. Sends are counted at the fake Graph: every eligible recipient exactly once,
//! through pauses, resumes, redelivered jobs and repeated runs. DynamoDB's conditions are the
//! e2e tests' business (moto).

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use crm_shared::broadcast::pacing::BroadcastSettings;
use crm_shared::broadcast::run::{EngineConfig, RunReport, run_all};
use crm_shared::broadcast::spec::parse_spec;
use crm_shared::broadcast::{
    Action, Broadcast, BroadcastStatus, Counters, NumberQuality, PauseReason, Progress, RecipientStatus, transition,
};
use crm_shared::contact::{Contact, MarketingConsent};
use crm_shared::message::MessageStatus;
use crm_shared::secret::Secret;
use crm_shared::store::{AuditStore, BroadcastStore, InboundStore, StatusWrite, TemplateStore};
use crm_shared::template::TemplateRecord;
use crm_shared::tenant::Tenant;
use crm_shared::testing::graph::meta_error;
use crm_shared::testing::{FakeGraph, MemBlobs, MemQueue, MemStore, fixtures};

use crate::{Deps, SenderConfig, handle};

struct World {
    store: MemStore,
    graph: FakeGraph,
    queue: MemQueue,
    /// The exports bucket (uploaded audience files).
    files: MemBlobs,
    deps: Deps<MemStore, FakeGraph, MemQueue>,
    tenant: Tenant,
    /// Send jobs already fed to the sender.
    fed: usize,
}

fn world() -> World {
    let store = MemStore::new();
    let graph = FakeGraph::new();
    let queue = MemQueue::new();
    let tenant = fixtures::tenant("106540352242922");
    store.add_tenant(tenant.clone(), Secret::new("graph-token"));
    let config = SenderConfig {
        rate_per_second: 1000,
        max_slot_wait: Duration::from_secs(1),
        ..SenderConfig::default()
    };
    let deps = Deps::new(store.clone(), graph.clone(), queue.clone(), config);
    // Unlimited portfolio (Meta's `-1`) unless a test sets a limit.
    futures::executor::block_on(store.set_messaging_limit(&tenant.tenant_id, None)).unwrap();
    World {
        store,
        graph,
        queue,
        files: MemBlobs::new(),
        deps,
        tenant,
        fed: 0,
    }
}

fn template(status: &str) -> TemplateRecord {
    let meta = json!({"name": "spring_sale", "language": "en_US", "id": "9", "status": status,
        "category": "MARKETING", "parameter_format": "POSITIONAL",
        "components": [{"type": "BODY", "text": "Hi {{1}}, code {{2}}", "example": {"body_text": [["Ana", "X"]]}}]});
    TemplateRecord::from_meta("t", &meta, Utc::now()).unwrap()
}

/// The engine's config in tests: 20 sends per second of broadcast share, 5 s runs.
fn engine() -> EngineConfig {
    EngineConfig {
        rate_per_second: 40,
        run_secs: 5,
        page_size: 7,
        follow_days: 3,
    }
}

impl World {
    async fn seed_template(&self, status: &str) {
        let mut t = template(status);
        t.tenant_id = self.tenant.tenant_id.clone();
        self.store.put_template(&t).await.unwrap();
    }

    /// Adds a contact: `kind` says what makes it (in)eligible.
    fn contact(&self, i: usize, kind: &str) -> Contact {
        let phone = if kind == "us" {
            format!("+1415555{i:04}")
        } else {
            format!("+4477009{i:05}")
        };
        let mut c = fixtures::contact(&self.tenant.tenant_id, &phone, Utc::now());
        c.tags = vec!["vip".into()];
        c.consent.marketing = MarketingConsent::OptedIn;
        c.attributes.insert("code".into(), format!("C{i}"));
        c.name = Some(format!("N{i}"));
        // Outside a service window: each counts against the messaging limit.
        c.last_inbound_at = None;
        match kind {
            "opted_out" => c.consent.marketing = MarketingConsent::OptedOut,
            "unknown_consent" => c.consent.marketing = MarketingConsent::Unknown,
            "restricted" => c.restricted = true,
            "bad_params" => {
                c.attributes.clear();
            }
            "untagged" => c.tags.clear(),
            _ => {}
        }
        self.store.add_contact(c.clone());
        c
    }

    async fn broadcast(&self, body: Value) -> Broadcast {
        let now = Utc::now();
        let spec = parse_spec(&body, now, "UTC").unwrap();
        let b = Broadcast {
            tenant_id: self.tenant.tenant_id.clone(),
            broadcast_id: crm_shared::ids::new_id(),
            spec,
            category: "MARKETING".into(),
            status: BroadcastStatus::Draft,
            pause_reason: None,
            counters: Counters::default(),
            progress: Progress::default(),
            created_by: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            version: 1,
        };
        self.store.create_broadcast(&b).await.unwrap();
        self.act(&b.broadcast_id, Action::Start).await;
        self.get(&b.broadcast_id).await
    }

    async fn get(&self, id: &str) -> Broadcast {
        self.store
            .get_broadcast(&self.tenant.tenant_id, id)
            .await
            .unwrap()
            .unwrap()
    }

    /// A caller's lifecycle action, as the API applies it.
    async fn act(&self, id: &str, action: Action) {
        let b = self.get(id).await;
        let mut after = b.clone();
        after.status = transition(b.status, action, b.spec.start_at.is_some()).expect("allowed");
        after.pause_reason = None;
        after.version += 1;
        self.store.save_broadcast(&after).await.unwrap();
    }

    async fn run_engine(&self, now: DateTime<Utc>) -> RunReport {
        self.run_engine_with(now, &engine()).await
    }

    async fn run_engine_with(&self, now: DateTime<Utc>, config: &EngineConfig) -> RunReport {
        run_all(&self.store, &self.files, &self.queue, now, config)
            .await
            .unwrap()
    }

    /// Feeds every new send job to the sender, in batches of 10, until none is new; a job is
    /// fed `times` times (SQS redelivers).
    async fn drain(&mut self, times: usize) {
        loop {
            let jobs = self.queue.send_jobs();
            if self.fed >= jobs.len() {
                return;
            }
            let new = jobs[self.fed..].to_vec();
            self.fed = jobs.len();
            for chunk in new.chunks(10) {
                for _ in 0..times {
                    let mut event = SqsEvent::default();
                    event.records = chunk
                        .iter()
                        .map(|job| {
                            let mut r = SqsMessage::default();
                            r.message_id = Some(format!("sqs-{}", job.message_id));
                            r.body = Some(serde_json::to_string(job).unwrap());
                            r
                        })
                        .collect();
                    handle(&self.deps, LambdaEvent::new(event, Context::default()))
                        .await
                        .unwrap();
                }
            }
        }
    }

    /// Graph sends per recipient phone (digits).
    fn sends(&self) -> HashMap<String, usize> {
        let mut by_to = HashMap::new();
        for s in self.graph.sent() {
            *by_to
                .entry(s.payload["to"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
        by_to
    }

    /// Runs the engine and the sender until the broadcast completes (or `rounds` run out).
    async fn run_to_end(&mut self, id: &str, rounds: usize) -> Broadcast {
        self.run_to_end_with(id, rounds, &engine()).await
    }

    async fn run_to_end_with(&mut self, id: &str, rounds: usize, config: &EngineConfig) -> Broadcast {
        for _ in 0..rounds {
            self.run_engine_with(Utc::now(), config).await;
            self.drain(1).await;
            if self.get(id).await.status == BroadcastStatus::Completed {
                break;
            }
        }
        self.get(id).await
    }
}

fn body(audience: Value) -> Value {
    json!({"name": "Spring", "template": {"name": "spring_sale", "language": "en_US"}, "audience": audience,
           "parameters": {"1": "contact.name", "2": "attributes.code"}})
}

#[tokio::test]
async fn every_eligible_recipient_gets_exactly_one_send_and_every_skip_has_its_reason() {
    let mut w = world();
    w.seed_template("APPROVED").await;
    let mut eligible = Vec::new();
    let mut listed = Vec::new();
    let kinds = [
        "ok",
        "opted_out",
        "unknown_consent",
        "restricted",
        "bad_params",
        "us",
        "ok",
        "untagged",
    ];
    for i in 0..2000 {
        let kind = kinds[i % kinds.len()];
        let c = w.contact(i, kind);
        if kind == "ok" {
            eligible.push(c.phone.clone().unwrap());
        }
        if i < 3 {
            listed.push(c.contact_id.clone());
        }
    }
    // The explicit list repeats a contact and names one that does not exist.
    listed.push(listed[0].clone());
    listed.push(crm_shared::ids::new_id());
    let b = w
        .broadcast(body(json!({"tags_all": ["vip"], "contact_ids": listed})))
        .await;
    // 2,000 contacts; dispatch is paced (500/s × 1 s = 500 per run here), so it takes a few
    // rounds, and a second look at any page changes nothing.
    let fast = EngineConfig {
        rate_per_second: 1000,
        run_secs: 1,
        page_size: 98,
        follow_days: 3,
    };
    let b = w.run_to_end_with(&b.broadcast_id, 20, &fast).await;
    assert_eq!(b.status, BroadcastStatus::Completed, "{:?}", b.progress);
    let sends = w.sends();
    assert_eq!(sends.len(), eligible.len());
    for phone in &eligible {
        assert_eq!(sends.get(phone.trim_start_matches('+')), Some(&1), "{phone}");
    }
    let c = &b.counters;
    for reason in [
        "no_marketing_consent",
        "restricted",
        "invalid_parameters",
        "us_marketing_block",
        "duplicate",
        "unknown_contact",
    ] {
        assert!(c.skipped.get(reason).is_some_and(|n| *n > 0), "{reason}: {c:?}");
    }
    assert_eq!(c.skipped["duplicate"], 1);
    assert_eq!(c.skipped["unknown_contact"], 1);
    assert_eq!(c.skipped["no_marketing_consent"], 500);
    // 1,750 tagged contacts (the 3 listed ones among them) + the duplicate and the unknown id.
    assert_eq!(c.targeted, 1750 + 2);
    assert_eq!(c.targeted, c.skipped_total() + c.queued);
    assert_eq!(c.queued, eligible.len() as u64);
    assert_eq!(c.sent, eligible.len() as u64);
    // Recipients hold their outcome; skipped ones their reason.
    let recipients = w.store.recipients_of(&w.tenant.tenant_id, &b.broadcast_id);
    assert_eq!(
        recipients.iter().filter(|r| r.status == RecipientStatus::Sent).count(),
        eligible.len()
    );
    assert!(
        recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Skipped)
            .all(|r| r.reason.is_some())
    );
    // More runs change nothing.
    w.run_engine(Utc::now()).await;
    w.drain(1).await;
    assert_eq!(w.graph.sent().len(), eligible.len());
}

#[tokio::test]
async fn pause_resume_cancel_and_redelivered_jobs_never_send_twice_or_lose_anyone() {
    let mut w = world();
    w.seed_template("APPROVED").await;
    for i in 0..250 {
        w.contact(i, "ok");
    }
    let b = w.broadcast(body(json!({"tags_all": ["vip"]}))).await;
    let id = b.broadcast_id.clone();
    // Run 1 plans everything and hands over one run's share (20/s × 5 s).
    w.run_engine(Utc::now()).await;
    assert!(w.get(&id).await.progress.planned_at.is_some());
    w.drain(3).await; // every job delivered three times
    assert_eq!(w.graph.sent().len(), 100);
    w.act(&id, Action::Pause).await;
    for _ in 0..3 {
        w.run_engine(Utc::now()).await;
        w.drain(1).await;
    }
    assert_eq!(w.graph.sent().len(), 100, "nothing leaves while paused");
    assert_eq!(w.get(&id).await.status, BroadcastStatus::Paused);
    w.act(&id, Action::Resume).await;
    w.run_engine(Utc::now()).await;
    w.drain(2).await;
    assert_eq!(w.graph.sent().len(), 200);
    w.act(&id, Action::Cancel).await;
    w.run_engine(Utc::now()).await;
    w.drain(1).await;
    assert_eq!(w.graph.sent().len(), 200, "nothing after cancel");
    let b = w.get(&id).await;
    assert_eq!(b.status, BroadcastStatus::Cancelled);
    assert_eq!(b.counters.queued, 200);
    assert!(w.sends().values().all(|n| *n == 1));
    let pending = w
        .store
        .recipients_of(&w.tenant.tenant_id, &id)
        .into_iter()
        .filter(|r| r.status == RecipientStatus::Pending)
        .count();
    assert_eq!(pending, 50, "the rest stay pending, not lost");
}

#[tokio::test]
async fn a_held_back_recipient_is_retried_later_then_capped() {
    let mut w = world();
    w.seed_template("APPROVED").await;
    let c = w.contact(1, "ok");
    let b = w.broadcast(body(json!({"contact_ids": [c.contact_id]}))).await;
    let id = b.broadcast_id.clone();
    let t0 = Utc::now();
    for round in 0..3 {
        w.graph.answer_next_send(Err(meta_error(400, Some(131049))));
        let at = t0 + chrono::Duration::hours(if round == 0 { 0 } else { 24 * 4 * round });
        w.run_engine(at).await;
        w.drain(1).await;
        // The follow pass sees the failure.
        w.run_engine(at + chrono::Duration::seconds(1)).await;
        // Not retried at once.
        w.run_engine(at + chrono::Duration::seconds(2)).await;
        w.drain(1).await;
        assert_eq!(w.graph.sent().len(), round as usize + 1, "round {round}");
    }
    let b = w.get(&id).await;
    let r = &w.store.recipients_of(&w.tenant.tenant_id, &id)[0];
    assert_eq!(r.status, RecipientStatus::Capped);
    assert_eq!(r.attempts, 3);
    assert_eq!(b.counters.held_back, 2);
    assert_eq!(b.counters.capped, 1);
    assert_eq!(b.status, BroadcastStatus::Completed);
}

#[tokio::test]
async fn a_template_paused_mid_run_pauses_the_broadcast_until_it_is_approved_again() {
    let mut w = world();
    w.seed_template("APPROVED").await;
    for i in 0..150 {
        w.contact(i, "ok");
    }
    let b = w.broadcast(body(json!({"tags_all": ["vip"]}))).await;
    let id = b.broadcast_id.clone();
    w.run_engine(Utc::now()).await;
    // Meta pauses the template while the first share waits in the queue: the sender refuses
    // those sends (132015) and the recipients go back to pending.
    w.seed_template("PAUSED").await;
    w.drain(1).await;
    assert_eq!(w.graph.sent().len(), 0);
    w.run_engine(Utc::now()).await;
    let paused = w.get(&id).await;
    assert_eq!(paused.status, BroadcastStatus::Paused);
    assert_eq!(paused.pause_reason, Some(PauseReason::TemplatePaused));
    w.seed_template("APPROVED").await;
    let b = w.run_to_end(&id, 10).await;
    assert_eq!(b.status, BroadcastStatus::Completed);
    assert_eq!(w.graph.sent().len(), 150);
    assert!(w.sends().values().all(|n| *n == 1));
}

#[tokio::test]
async fn the_messaging_limit_defers_the_rest_to_the_next_window() {
    let mut w = world();
    w.seed_template("APPROVED").await;
    for i in 0..30 {
        w.contact(i, "ok");
    }
    let settings = BroadcastSettings {
        messaging_limit: Some(12),
        ..BroadcastSettings::default()
    };
    w.store
        .set_messaging_limit(&w.tenant.tenant_id, settings.messaging_limit)
        .await
        .unwrap();
    let b = w.broadcast(body(json!({"tags_all": ["vip"]}))).await;
    let id = b.broadcast_id.clone();
    let t0 = Utc::now();
    for _ in 0..3 {
        w.run_engine(t0).await;
        w.drain(1).await;
    }
    assert_eq!(w.graph.sent().len(), 12);
    let waiting = w.get(&id).await;
    assert_eq!(waiting.progress.waiting_for.as_deref(), Some("messaging_limit"));
    // A day later the window has room again.
    w.run_engine(t0 + chrono::Duration::hours(25)).await;
    w.drain(1).await;
    assert_eq!(w.graph.sent().len(), 24);
    // Delivered and read statuses reach the counters.
    for m in w.store.messages(&w.tenant.tenant_id) {
        if let Some(wamid) = &m.wamid {
            let write = StatusWrite {
                wamid: wamid.clone(),
                status: MessageStatus::Read,
                at: Utc::now(),
                error: None,
                pricing: None,
                conversation: None,
            };
            w.store.apply_status(&w.tenant.tenant_id, &write).await.unwrap();
        }
    }
    w.run_engine(t0 + chrono::Duration::hours(25) + chrono::Duration::minutes(1))
        .await;
    let b = w.get(&id).await;
    assert_eq!((b.counters.sent, b.counters.delivered, b.counters.read), (24, 24, 24));
}

#[tokio::test]
async fn another_tenants_broadcasts_are_invisible() {
    let w = world();
    w.seed_template("APPROVED").await;
    let c = w.contact(1, "ok");
    let b = w.broadcast(body(json!({"contact_ids": [c.contact_id]}))).await;
    assert!(w.store.get_broadcast("other", &b.broadcast_id).await.unwrap().is_none());
    assert!(
        w.store
            .list_broadcasts("other", 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let page = w
        .store
        .broadcast_recipients("other", &b.broadcast_id, None, 10, None)
        .await
        .unwrap();
    assert!(page.items.is_empty());
}

#[tokio::test]
async fn a_number_flagged_red_pauses_its_broadcast_until_a_caller_resumes_it() {
    let mut w = world();
    w.seed_template("APPROVED").await;
    for i in 0..150 {
        w.contact(i, "ok");
    }
    let b = w.broadcast(body(json!({"tags_all": ["vip"]}))).await;
    let id = b.broadcast_id.clone();
    w.run_engine(Utc::now()).await;
    w.drain(1).await;
    let sent_before = w.graph.sent().len();
    assert!(sent_before < 150, "the rest waits for later runs");

    // Meta flags the tenant's number (its display number is not recorded: it cannot be ruled
    // out) — stored by the webhook; another tenant's flag would be in its own partition.
    let flagged_at = Utc::now();
    let quality = NumberQuality {
        waba_id: w.tenant.waba_id.clone(),
        display_phone_number: "15550783881".into(),
        red: true,
        changed_at: flagged_at,
    };
    w.store.put_number_quality(&w.tenant.tenant_id, &quality).await.unwrap();
    let report = w.run_engine(Utc::now()).await;
    assert_eq!(report.paused, 1);
    let paused = w.get(&id).await;
    assert_eq!(paused.status, BroadcastStatus::Paused);
    assert_eq!(paused.pause_reason, Some(PauseReason::NumberQualityRed));
    let audit = w.store.list_audit(&w.tenant.tenant_id, 50, None).await.unwrap().items;
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "broadcast.pause" && e.actor_key_id.is_none())
            .count(),
        1
    );

    // No resume by itself (the template is fine), and nothing more is sent.
    w.run_engine(Utc::now() + chrono::Duration::minutes(5)).await;
    w.drain(1).await;
    assert_eq!(w.get(&id).await.status, BroadcastStatus::Paused);
    let sent_paused = w.graph.sent().len();
    assert_eq!(sent_paused, sent_before, "a paused broadcast sends nothing");

    // A caller resumes: it sticks under the same flag and runs to the end.
    w.act(&id, Action::Resume).await;
    let b = w.run_to_end(&id, 10).await;
    assert_eq!(b.status, BroadcastStatus::Completed);
    assert!(w.graph.sent().len() > sent_paused);
    assert_eq!(w.graph.sent().len(), 150);
    assert!(w.sends().values().all(|n| *n == 1));
}

#[tokio::test]
async fn quiet_hours_hold_every_send_until_they_end_on_the_local_clock() {
    let mut w = world();
    w.seed_template("APPROVED").await;
    for i in 0..300 {
        w.contact(i, "ok");
    }
    let mut spec = body(json!({"tags_all": ["vip"]}));
    spec["time_zone"] = json!("Europe/Berlin");
    spec["quiet_hours"] = json!({"start": "21:00", "end": "08:00"});
    let b = w.broadcast(spec).await;
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    // 20:59:58 in Berlin (UTC+1): two seconds before quiet hours, a run hands over only two
    // seconds of sends (20/s of share here), so none is due inside them.
    w.run_engine(at("2026-12-04T19:59:58Z")).await;
    w.drain(1).await;
    let evening = w.get(&b.broadcast_id).await;
    assert!(evening.progress.planned_at.is_some());
    assert_eq!(evening.counters.queued, 40, "{:?}", evening.progress);
    // At night nothing leaves; it waits for 08:00 local (07:00 UTC).
    let night = at("2026-12-04T22:00:00Z");
    for minute in 0..3 {
        w.run_engine(night + chrono::Duration::minutes(minute)).await;
    }
    w.drain(1).await;
    let waiting = w.get(&b.broadcast_id).await;
    assert_eq!(waiting.progress.waiting_for.as_deref(), Some("quiet_hours"));
    assert_eq!(waiting.progress.wait_until, Some(at("2026-12-05T07:00:00Z")));
    assert_eq!(waiting.counters.queued, 40);
    assert_eq!(w.sends().values().sum::<usize>(), 40);
    // In the morning it sends the rest, a run's share at a time, each recipient once.
    for run in 0..4 {
        w.run_engine(at("2026-12-05T07:00:00Z") + chrono::Duration::minutes(run))
            .await;
        w.drain(1).await;
    }
    let morning = w.get(&b.broadcast_id).await;
    assert_eq!(morning.progress.waiting_for, None);
    assert_eq!(morning.counters.queued, 300);
    let sends = w.sends();
    assert_eq!(sends.len(), 300);
    assert!(sends.values().all(|n| *n == 1));
}

#[tokio::test]
async fn a_campaign_from_a_number_leaves_the_inbox_as_it_was() {
    use crm_shared::conversation::conversation_id;
    use crm_shared::store::{ConversationStore, MessageStore};
    let mut w = world();
    w.seed_template("APPROVED").await;
    let contacts: Vec<Contact> = (0..30).map(|i| w.contact(i, "ok")).collect();
    let number = w.tenant.phone_number_id.clone();
    let mut spec = body(json!({"tags_all": ["vip"]}));
    spec["from"] = json!(number);
    let b = w.broadcast(spec).await;
    let b = w.run_to_end(&b.broadcast_id, 20).await;
    assert_eq!((b.status, b.counters.sent), (BroadcastStatus::Completed, 30));
    let t = &w.tenant.tenant_id;
    for r in w.store.recipients_of(t, &b.broadcast_id) {
        let m = w
            .store
            .get_message(t, r.message_id.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.phone_number_id.as_deref(), Some(number.as_str()));
        assert_eq!(m.broadcast_id.as_deref(), Some(b.broadcast_id.as_str()));
    }
    for c in &contacts {
        let id = conversation_id(&c.contact_id, &number);
        assert_eq!(
            w.store.get_conversation(t, &id).await.unwrap(),
            None,
            "no conversation opened"
        );
    }
}
