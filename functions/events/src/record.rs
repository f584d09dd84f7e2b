//! The events function: a batch of change-stream records in, events recorded in order per
//! tenant, delivery jobs out.
//!
//! Ordering: Lambda hands one shard's records in order, and one item's changes always share a
//! shard. A tenant's drafts are recorded in that order; on a failure the batch response names
//! the first record of the failed part, so Lambda retries from there (partial batch response;
//! the template also bisects on error). Records before it that were recorded again on retry keep
//! their first position (their ids are recorded once), and their deliveries are enqueued again:
//! pushes are at least once, with a stable `webhook-id`.
//!
//! Reports: each draft carries the facts its change counts; the store adds them to the tenant's
//! counters in the transaction that first records the draft (one update per counter item), so
//! counts are exactly once under every redelivery, and no request is added to any hot path.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;

use crate::automate::{self, AutomationDeps, Automations};
use crm_shared::cache::TtlCache;
use crm_shared::events::cards::refresh_of;
use crm_shared::events::derive::{StreamChange, derive};
use crm_shared::events::endpoint::WebhookEndpoint;
use crm_shared::events::push::DeliveryJob;
use crm_shared::events::{Event, EventDraft};
use crm_shared::jobs::{OverflowQueue, SendJobQueue};
use crm_shared::reports::counters::Counting;
use crm_shared::store::{ConversationStore, EventStore, PrivacyStore, StoreError, TenantStore, WebhookStore};
use crm_shared::tenant::ReportSettings;

/// How long this instance trusts a tenant's endpoint list (a new endpoint gets events within it).
pub const ENDPOINTS_TTL: Duration = Duration::from_secs(5);
/// How long this instance trusts a tenant's event and counter retention (`events_days`,
/// `reports_days`) and its report time zone.
pub const RETENTION_TTL: Duration = Duration::from_secs(300);

pub struct Deps<S, Q, A = crm_shared::jobs::SqsQueue> {
    pub store: S,
    /// The delivery queue (batched sends).
    pub deliveries: Q,
    pub endpoints: TtlCache<String, Vec<WebhookEndpoint>>,
    /// The tenant's `events_days` and `reports_days` (one read per tenant and instance every
    /// few minutes).
    pub retention_days: TtlCache<String, (u32, u32)>,
    /// The tenant's report settings: time zone, business hours (one read per tenant and
    /// instance every few minutes).
    pub report_settings: TtlCache<String, ReportSettings>,
    /// Automated replies on stored inbound messages (`None`: off, as in the benches that measure
    /// only the event log).
    pub automations: Option<Automations<A>>,
}

impl<S, Q> Deps<S, Q> {
    pub fn new(store: S, deliveries: Q) -> Self {
        Deps {
            store,
            deliveries,
            endpoints: TtlCache::new(10_000, ENDPOINTS_TTL),
            retention_days: TtlCache::new(10_000, RETENTION_TTL),
            report_settings: TtlCache::new(10_000, RETENTION_TTL),
            automations: None,
        }
    }
}

impl<S, Q, A> Deps<S, Q, A> {
    /// Runs the tenants' automation rules on stored inbound messages, replying through `sends`
    /// (the sender's queue).
    pub fn with_automations<B>(self, sends: B) -> Deps<S, Q, B> {
        Deps {
            store: self.store,
            deliveries: self.deliveries,
            endpoints: self.endpoints,
            retention_days: self.retention_days,
            report_settings: self.report_settings,
            automations: Some(Automations::new(sends)),
        }
    }
}

/// A stream record as the rules read it: images as JSON.
pub fn change_of(record: &EventRecord) -> StreamChange {
    let image = |item: &serde_dynamo::Item| -> Option<Value> {
        if item.is_empty() {
            return None;
        }
        serde_dynamo::from_item(item.clone()).ok()
    };
    StreamChange {
        record_id: record.event_id.clone(),
        at: record.change.approximate_creation_date_time,
        keys: image(&record.change.keys).unwrap_or(Value::Null),
        old: image(&record.change.old_image),
        new: image(&record.change.new_image),
    }
}

/// A draft with the sequence number of the record it came from.
struct Drafted {
    draft: EventDraft,
    record_seq: String,
}

pub async fn handle<
    S: EventStore + WebhookStore + PrivacyStore + TenantStore + AutomationDeps + ConversationStore,
    Q: OverflowQueue,
    A: SendJobQueue,
>(
    deps: &Deps<S, Q, A>,
    event: LambdaEvent<StreamEvent>,
) -> Result<DynamoDbEventResponse, Error> {
    let mut by_tenant: BTreeMap<String, Vec<Drafted>> = BTreeMap::new();
    let mut changes = Vec::with_capacity(event.payload.records.len());
    for record in &event.payload.records {
        let record_seq = record.change.sequence_number.clone().unwrap_or_default();
        let change = change_of(record);
        for draft in derive(&change) {
            by_tenant.entry(draft.tenant_id.clone()).or_default().push(Drafted {
                draft,
                record_seq: record_seq.clone(),
            });
        }
        changes.push((change, record_seq));
    }
    let results = futures::future::join_all(
        by_tenant
            .iter()
            .map(|(tenant, drafted)| tenant_batch(deps, tenant, drafted)),
    )
    .await;
    let mut failed: Vec<String> = results.into_iter().flatten().collect();
    if let Some(auto) = &deps.automations {
        // In stream order; a failure stops here (the rest is retried from it, idempotently).
        for (change, seq) in &changes {
            if let Err(err) = automate::on_change(auto, &deps.store, change).await {
                tracing::warn!(error = %err, "automations could not run; the batch is retried from this message");
                failed.push(seq.clone());
                break;
            }
        }
    }
    // Cards for the records before the first failure (Lambda retries from that one on, so
    // the ones before it are never handed over again).
    let first_failed = failed.iter().min_by(|a, b| seq_order(a, b)).cloned();
    let done = changes
        .iter()
        .take_while(|(_, seq)| first_failed.as_ref().is_none_or(|f| seq_order(seq, f).is_lt()));
    if let Some(seq) = refresh_cards(&deps.store, done).await {
        failed.push(seq);
    }
    let mut response = DynamoDbEventResponse::default();
    // The earliest failed record: Lambda retries the shard from it.
    if let Some(first_failed) = failed.into_iter().min_by(|a, b| seq_order(a, b)) {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(first_failed);
        response.batch_item_failures.push(failure);
    }
    Ok(response)
}

/// Copies contact cards where the batch's changes call for it (`events::cards`), once per
/// contact, in stream order; the sequence number of the record whose refresh failed (the batch
/// is retried from it; a refresh is idempotent).
async fn refresh_cards<'a, S: ConversationStore>(
    store: &S,
    changes: impl Iterator<Item = &'a (StreamChange, String)>,
) -> Option<String> {
    let mut done = BTreeSet::new();
    for (change, seq) in changes {
        let Some(contact) = refresh_of(change) else { continue };
        if !done.insert(contact.clone()) {
            continue;
        }
        if let Err(err) = store.refresh_contact_cards(&contact.0, &contact.1).await {
            tracing::warn!(error = %err, "contact cards could not be copied; the batch is retried from this change");
            return Some(seq.clone());
        }
    }
    None
}

/// Stream sequence numbers are decimal strings of varying length: compare as numbers.
fn seq_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Records one tenant's drafts and enqueues their deliveries; the stream sequence number of the
/// first record not done when something failed.
async fn tenant_batch<S: EventStore + WebhookStore + PrivacyStore + TenantStore, Q: OverflowQueue, A>(
    deps: &Deps<S, Q, A>,
    tenant_id: &str,
    drafted: &[Drafted],
) -> Option<String> {
    let drafts: Vec<EventDraft> = drafted.iter().map(|d| d.draft.clone()).collect();
    let ((days, reports_days), settings) = match (
        events_days(deps, tenant_id).await,
        report_settings(deps, tenant_id).await,
    ) {
        (Ok(days), Ok(settings)) => (days, settings),
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(error = %err, "the event retention or report time zone could not be read; the batch is retried");
            return Some(drafted[0].record_seq.clone());
        }
    };
    let now = Utc::now();
    let expires_at = now + chrono::TimeDelta::days(i64::from(days));
    let counting = Counting {
        time_zone: settings.tz(),
        business_hours: settings.business_hours,
        per_user: settings.per_user_metrics,
        expires_at: now + chrono::TimeDelta::days(i64::from(reports_days)),
    };
    let events = match deps
        .store
        .record_events(tenant_id, &drafts, expires_at, &counting)
        .await
    {
        Ok(events) => events,
        Err(err) => {
            tracing::warn!(error = %err, events = drafts.len(), "events could not be recorded; the batch is retried");
            return Some(drafted[0].record_seq.clone());
        }
    };
    match fan_out(deps, tenant_id, &events).await {
        Ok(jobs) => {
            tracing::info!(events = events.len(), jobs, "events recorded");
            None
        }
        Err(err) => {
            tracing::warn!(error = %err, "deliveries could not be enqueued; the batch is retried");
            Some(drafted[0].record_seq.clone())
        }
    }
}

/// One delivery job per event and endpoint that wants it; returns how many.
async fn fan_out<S: WebhookStore, Q: OverflowQueue, A>(
    deps: &Deps<S, Q, A>,
    tenant_id: &str,
    events: &[Event],
) -> Result<usize, String> {
    let endpoints = tenant_endpoints(deps, tenant_id).await.map_err(|e| e.to_string())?;
    let bodies: Vec<String> = events
        .iter()
        .flat_map(|e| {
            endpoints
                .iter()
                .filter(|ep| ep.wants(e.event_type))
                .map(move |ep| (e, ep))
        })
        .map(|(e, ep)| {
            serde_json::to_string(&DeliveryJob::Event {
                tenant_id: tenant_id.to_owned(),
                endpoint_id: ep.endpoint_id.clone(),
                seq: e.seq,
                attempt: 1,
                not_before: None,
                event: Some(Box::new(e.clone())),
            })
            .expect("jobs serialize")
        })
        .collect();
    if !bodies.is_empty() {
        deps.deliveries.hand_off(&bodies).await.map_err(|e| e.0)?;
    }
    Ok(bodies.len())
}

/// The tenant's event and counter retention in days (the platform defaults when it never
/// chose).
async fn events_days<S: PrivacyStore, Q, A>(deps: &Deps<S, Q, A>, tenant_id: &str) -> Result<(u32, u32), StoreError> {
    if let Some(days) = deps.retention_days.get(tenant_id) {
        return Ok(days);
    }
    // A tenant that never chose has the platform defaults (`EVENTS_DAYS_DEFAULT`, `REPORTS_DAYS_DEFAULT`).
    let s = deps.store.retention_settings(tenant_id).await?.unwrap_or_default();
    let days = (s.events_days, s.reports_days);
    deps.retention_days.insert(tenant_id.to_owned(), days);
    Ok(days)
}

/// The tenant's report settings (UTC and no business hours for a tenant that never chose, or
/// is gone).
async fn report_settings<S: TenantStore, Q, A>(
    deps: &Deps<S, Q, A>,
    tenant_id: &str,
) -> Result<ReportSettings, StoreError> {
    if let Some(settings) = deps.report_settings.get(tenant_id) {
        return Ok(settings);
    }
    let settings = deps
        .store
        .get_tenant(tenant_id)
        .await?
        .map(|t| t.reports)
        .unwrap_or_default();
    deps.report_settings.insert(tenant_id.to_owned(), settings.clone());
    Ok(settings)
}

async fn tenant_endpoints<S: WebhookStore, Q, A>(
    deps: &Deps<S, Q, A>,
    tenant_id: &str,
) -> Result<Vec<WebhookEndpoint>, StoreError> {
    if let Some(cached) = deps.endpoints.get(tenant_id) {
        return Ok(cached);
    }
    let endpoints = deps.store.endpoints_of(tenant_id).await?;
    deps.endpoints.insert(tenant_id.to_owned(), endpoints.clone());
    Ok(endpoints)
}
