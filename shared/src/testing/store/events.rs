//! [`EventStore`] and [`WebhookStore`] for [`MemStore`], mirroring `store/events.rs`: one
//! gap-free log per tenant whose positions are given under the store's lock (the head
//! transaction), each event id recorded once, expired events skipped by reads; endpoints with
//! version checks, separate secrets, the conditional failure-state updates and the delivery
//! log (newest first).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{Key, MemStore, Op, Order, key, page_of};
use crate::cursor::Position;
use crate::events::endpoint::{DeliveryAttempt, EndpointSecrets, MAX_ENDPOINTS_PER_TENANT, WebhookEndpoint};
use crate::events::{Event, EventDraft};
use crate::reports::counters::{CounterKey, CounterRow, Counting, Granularity, deltas};
use crate::secret::Secret;
use crate::store::{EndpointOutcome, EventStore, Page, ReportStore, StoreError, WebhookStore};

/// A counter item's attributes and expiry.
type CounterState = (BTreeMap<String, u64>, DateTime<Utc>);

#[derive(Default)]
pub(super) struct WebhookState {
    /// tenant → position → (event, expires at).
    logs: HashMap<String, BTreeMap<u64, (Event, DateTime<Utc>)>>,
    /// (tenant, event id) → position.
    ids: HashMap<Key, u64>,
    endpoints: BTreeMap<Key, WebhookEndpoint>,
    secrets: HashMap<Key, EndpointSecrets>,
    /// (tenant, endpoint) → attempts by attempt id.
    deliveries: HashMap<Key, BTreeMap<String, DeliveryAttempt>>,
    /// (tenant, counter item) → counters and expiry, as the report items hold them.
    counters: BTreeMap<(String, CounterKey), CounterState>,
    /// Counter item updates applied (one per item per transaction, as the table is written).
    counter_updates: u64,
}

impl WebhookState {
    /// Offboarding: the tenant's log (events and id records, the head counted as the table
    /// holds it), endpoints with their secrets, and delivery logs; the items deleted.
    pub(super) fn delete_tenant(&mut self, tenant_id: &str) -> u64 {
        let events = self.logs.remove(tenant_id).map_or(0, |l| l.len() as u64);
        let ids = self.ids.len();
        self.ids.retain(|(t, _), _| t != tenant_id);
        let endpoints = self.endpoints.len();
        self.endpoints.retain(|(t, _), _| t != tenant_id);
        self.secrets.retain(|(t, _), _| t != tenant_id);
        let deliveries: u64 = self
            .deliveries
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, d)| d.len() as u64)
            .sum();
        self.deliveries.retain(|(t, _), _| t != tenant_id);
        let counters = self.counters.len();
        self.counters.retain(|(t, _), _| t != tenant_id);
        let counters = (counters - self.counters.len()) as u64;
        let head = u64::from(events > 0);
        let endpoints = (endpoints - self.endpoints.len()) as u64;
        events + head + (ids - self.ids.len()) as u64 + 2 * endpoints + deliveries + counters
    }
}

impl MemStore {
    /// Every event of a tenant's log, expired ones included (tests).
    pub fn event_log(&self, tenant_id: &str) -> Vec<Event> {
        let s = self.state();
        s.webhooks
            .logs
            .get(tenant_id)
            .map(|log| log.values().map(|(e, _)| e.clone()).collect())
            .unwrap_or_default()
    }
}

impl MemStore {
    /// Every counter item of a tenant with its attributes, expired ones included (tests scan
    /// them for personal data).
    pub fn counter_items(&self, tenant_id: &str) -> Vec<(CounterKey, BTreeMap<String, u64>)> {
        let s = self.state();
        s.webhooks
            .counters
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|((_, k), (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    /// How many counter item updates were applied so far (the bench's writes per event).
    pub fn counter_updates(&self) -> u64 {
        self.state().webhooks.counter_updates
    }
}

impl ReportStore for MemStore {
    async fn counter_rows(
        &self,
        tenant_id: &str,
        granularity: Granularity,
        first: &str,
        last: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<CounterRow>, StoreError> {
        self.enter(Op::CounterRows, 1).await?;
        let s = self.state();
        Ok(s.webhooks
            .counters
            .iter()
            .filter(|((t, k), (_, expires))| {
                t == tenant_id
                    && k.granularity == granularity
                    && k.bucket.as_str() >= first
                    && k.bucket.as_str() <= last
                    && *expires > now
            })
            .map(|((_, k), (values, _))| CounterRow {
                bucket: k.bucket.clone(),
                phone: k.phone.clone(),
                values: values.clone(),
            })
            .collect())
    }
}

impl EventStore for MemStore {
    async fn record_events(
        &self,
        tenant_id: &str,
        drafts: &[EventDraft],
        expires_at: DateTime<Utc>,
        counting: &Counting,
    ) -> Result<Vec<Event>, StoreError> {
        // One head read and one transaction per 98 events (one pack).
        let requests = 2 * drafts.len().div_ceil(98).max(1) as u32;
        self.enter(Op::RecordEvents, requests).await?;
        let mut s = self.state();
        let w = &mut s.webhooks;
        let mut seen = HashSet::new();
        let mut recorded = Vec::new();
        let mut fresh = Vec::new();
        for draft in drafts {
            let id_key = key(tenant_id, &draft.id);
            if let Some(seq) = w.ids.get(&id_key) {
                if seen.insert(draft.id.clone()) {
                    recorded.push(Event::from_draft(draft.clone(), *seq));
                }
                continue;
            }
            seen.insert(draft.id.clone());
            let log = w.logs.entry(tenant_id.to_owned()).or_default();
            let seq = log.keys().next_back().copied().unwrap_or(0) + 1;
            let event = Event::from_draft(draft.clone(), seq);
            log.insert(seq, (event.clone(), expires_at));
            w.ids.insert(id_key, seq);
            recorded.push(event);
            fresh.push(draft);
        }
        // The facts of the drafts recorded now, one update per counter item (as one
        // transaction of the table adapter applies them).
        let facts = fresh.iter().flat_map(|d| d.tally.iter());
        for (counter, adds) in deltas(facts, &counting.rules()) {
            w.counter_updates += 1;
            let (values, expires) = w
                .counters
                .entry((tenant_id.to_owned(), counter))
                .or_insert_with(|| (BTreeMap::new(), counting.expires_at));
            *expires = counting.expires_at;
            for (name, amount) in adds {
                *values.entry(name).or_default() += amount;
            }
        }
        recorded.sort_by_key(|e| e.seq);
        Ok(recorded)
    }

    async fn events_after(
        &self,
        tenant_id: &str,
        after: u64,
        limit: i32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, StoreError> {
        self.enter(Op::EventsAfter, 1).await?;
        let s = self.state();
        let Some(log) = s.webhooks.logs.get(tenant_id) else {
            return Ok(Vec::new());
        };
        Ok(log
            .range(after + 1..)
            .take(limit.max(1) as usize)
            .filter(|(_, (_, expires))| *expires > now)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }

    async fn event_at(&self, tenant_id: &str, seq: u64) -> Result<Option<Event>, StoreError> {
        self.enter(Op::EventAt, 1).await?;
        let s = self.state();
        Ok(s.webhooks
            .logs
            .get(tenant_id)
            .and_then(|l| l.get(&seq))
            .map(|(e, _)| e.clone()))
    }

    async fn event_seq(&self, tenant_id: &str, event_id: &str) -> Result<Option<u64>, StoreError> {
        self.enter(Op::EventSeq, 1).await?;
        Ok(self.state().webhooks.ids.get(&key(tenant_id, event_id)).copied())
    }

    async fn event_head(&self, tenant_id: &str) -> Result<u64, StoreError> {
        self.enter(Op::EventHead, 1).await?;
        let s = self.state();
        Ok(s.webhooks
            .logs
            .get(tenant_id)
            .and_then(|l| l.keys().next_back().copied())
            .unwrap_or(0))
    }
}

impl WebhookStore for MemStore {
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint, secret: &Secret) -> Result<(), StoreError> {
        self.enter(Op::CreateEndpoint, 2).await?;
        let mut s = self.state();
        let w = &mut s.webhooks;
        let count = w.endpoints.keys().filter(|(t, _)| *t == endpoint.tenant_id).count();
        if count >= MAX_ENDPOINTS_PER_TENANT {
            return Err(StoreError::Conflict(format!(
                "a tenant may have at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints"
            )));
        }
        let k = key(&endpoint.tenant_id, &endpoint.endpoint_id);
        if w.endpoints.contains_key(&k) {
            return Err(StoreError::Conflict("endpoint id already exists".into()));
        }
        w.endpoints.insert(k.clone(), endpoint.clone());
        w.secrets.insert(
            k,
            EndpointSecrets {
                current: secret.clone(),
                previous: None,
            },
        );
        Ok(())
    }

    async fn get_endpoint(&self, tenant_id: &str, endpoint_id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.enter(Op::GetEndpoint, 1).await?;
        Ok(self
            .state()
            .webhooks
            .endpoints
            .get(&key(tenant_id, endpoint_id))
            .cloned())
    }

    async fn endpoints_of(&self, tenant_id: &str) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.enter(Op::EndpointsOf, 1).await?;
        let s = self.state();
        Ok(s.webhooks
            .endpoints
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        self.enter(Op::UpdateEndpoint, 1).await?;
        let mut s = self.state();
        let stored = s
            .webhooks
            .endpoints
            .get_mut(&key(&endpoint.tenant_id, &endpoint.endpoint_id))
            .ok_or(StoreError::NotFound)?;
        if stored.version + 1 != endpoint.version {
            return Err(StoreError::VersionMismatch);
        }
        *stored = endpoint.clone();
        Ok(())
    }

    async fn delete_endpoint(&self, tenant_id: &str, endpoint_id: &str) -> Result<bool, StoreError> {
        self.enter(Op::DeleteEndpoint, 2).await?;
        let mut s = self.state();
        let k = key(tenant_id, endpoint_id);
        s.webhooks.secrets.remove(&k);
        Ok(s.webhooks.endpoints.remove(&k).is_some())
    }

    async fn endpoint_secrets(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<EndpointSecrets>, StoreError> {
        self.enter(Op::EndpointSecrets, 1).await?;
        Ok(self.state().webhooks.secrets.get(&key(tenant_id, endpoint_id)).cloned())
    }

    async fn rotate_secret(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        secret: &Secret,
        previous_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.enter(Op::RotateSecret, 1).await?;
        let mut s = self.state();
        let secrets = s
            .webhooks
            .secrets
            .get_mut(&key(tenant_id, endpoint_id))
            .ok_or(StoreError::NotFound)?;
        let old = std::mem::replace(&mut secrets.current, secret.clone());
        secrets.previous = Some((old, previous_until));
        Ok(())
    }

    async fn endpoint_outcome(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        outcome: &EndpointOutcome,
    ) -> Result<(), StoreError> {
        self.enter(Op::EndpointOutcome, 1).await?;
        let mut s = self.state();
        let Some(e) = s.webhooks.endpoints.get_mut(&key(tenant_id, endpoint_id)) else {
            return Ok(());
        };
        match outcome {
            EndpointOutcome::Succeeded => e.failing_since = None,
            EndpointOutcome::Failed(at) => {
                e.failing_since.get_or_insert(*at);
            }
            EndpointOutcome::Disable(reason) if e.enabled => {
                e.enabled = false;
                e.disabled_reason = Some(reason.clone());
                e.updated_at = Utc::now();
                e.version += 1;
            }
            EndpointOutcome::Disable(_) => {}
        }
        Ok(())
    }

    async fn record_delivery(&self, attempt: &DeliveryAttempt) -> Result<(), StoreError> {
        self.enter(Op::RecordDelivery, 1).await?;
        let mut s = self.state();
        s.webhooks
            .deliveries
            .entry(key(&attempt.tenant_id, &attempt.endpoint_id))
            .or_default()
            .insert(attempt.attempt_id.clone(), attempt.clone());
        // Charged to its shard of the log, as DynamoDB stores it.
        let shard = crate::store::keys::delivery_shard(&attempt.attempt_id);
        super::note_write(
            &mut s,
            crate::store::keys::webhook_deliveries_pk(&attempt.tenant_id, &attempt.endpoint_id, shard),
        );
        Ok(())
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<DeliveryAttempt>, StoreError> {
        self.enter(Op::ListDeliveries, 1).await?;
        let s = self.state();
        let sorted = s
            .webhooks
            .deliveries
            .get(&key(tenant_id, endpoint_id))
            .map(|d| d.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(page_of(sorted, Order::Descending, limit, start))
    }
}
