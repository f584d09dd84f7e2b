//! [`AutomationStore`] for [`MemStore`], mirroring `store/automations.rs`: rules with version
//! checks and the per-tenant limit, one firing per (message, rule), the contact's state written
//! with the firing while the contact exists, the welcome once, the day counter below the cap.

use std::collections::{BTreeMap, HashMap};

use super::{Key, MemStore, Op, Order, key, page_of};
use crate::automation::{AutomationSettings, ContactState, Firing, MAX_RULES_PER_TENANT, Rule};
use crate::conversation::conversation_id;
use crate::cursor::Position;
use crate::store::{AutomationContext, AutomationStore, FiringWrite, Page, StoreError};

#[derive(Default)]
pub(super) struct AutomationState {
    rules: BTreeMap<Key, Rule>,
    settings: HashMap<String, AutomationSettings>,
    /// (tenant, contact) → state.
    states: HashMap<Key, ContactState>,
    /// (tenant, contact) → firings by sort key (message id, rule id).
    firings: HashMap<Key, BTreeMap<String, Firing>>,
    /// (tenant, day) → firings.
    days: HashMap<Key, u64>,
    round_robin: HashMap<Key, u64>,
}

impl AutomationState {
    /// Erasure: the contact partition's items.
    pub(super) fn erase_contact(&mut self, tenant_id: &str, contact_id: &str) -> u64 {
        let k = key(tenant_id, contact_id);
        let state = u64::from(self.states.remove(&k).is_some());
        state + self.firings.remove(&k).map_or(0, |f| f.len() as u64)
    }
}

fn firing_sk(f: &Firing) -> String {
    format!("{}#{}", f.message_id, f.rule_id)
}

impl AutomationStore for MemStore {
    async fn create_rule(&self, rule: &Rule) -> Result<(), StoreError> {
        self.enter(Op::AutomationRuleWrite, 2).await?;
        let mut s = self.state();
        let a = &mut s.automations;
        if a.rules.keys().filter(|(t, _)| *t == rule.tenant_id).count() >= MAX_RULES_PER_TENANT {
            return Err(StoreError::Conflict(format!(
                "a tenant may have at most {MAX_RULES_PER_TENANT} automation rules"
            )));
        }
        let k = key(&rule.tenant_id, &rule.rule_id);
        if a.rules.contains_key(&k) {
            return Err(StoreError::Conflict("rule id already exists".into()));
        }
        a.rules.insert(k, rule.clone());
        Ok(())
    }

    async fn get_rule(&self, tenant_id: &str, rule_id: &str) -> Result<Option<Rule>, StoreError> {
        self.enter(Op::AutomationRules, 1).await?;
        Ok(self.state().automations.rules.get(&key(tenant_id, rule_id)).cloned())
    }

    async fn rules_of(&self, tenant_id: &str) -> Result<Vec<Rule>, StoreError> {
        self.enter(Op::AutomationRules, 1).await?;
        let s = self.state();
        Ok(s.automations
            .rules
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn update_rule(&self, rule: &Rule) -> Result<(), StoreError> {
        self.enter(Op::AutomationRuleWrite, 1).await?;
        let mut s = self.state();
        match s.automations.rules.get_mut(&key(&rule.tenant_id, &rule.rule_id)) {
            None => Err(StoreError::NotFound),
            Some(current) if current.version + 1 != rule.version => Err(StoreError::VersionMismatch),
            Some(current) => {
                *current = rule.clone();
                Ok(())
            }
        }
    }

    async fn delete_rule(&self, tenant_id: &str, rule_id: &str) -> Result<bool, StoreError> {
        self.enter(Op::AutomationRuleWrite, 1).await?;
        Ok(self
            .state()
            .automations
            .rules
            .remove(&key(tenant_id, rule_id))
            .is_some())
    }

    async fn automation_settings(&self, tenant_id: &str) -> Result<AutomationSettings, StoreError> {
        self.enter(Op::AutomationSettings, 1).await?;
        Ok(self
            .state()
            .automations
            .settings
            .get(tenant_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn put_automation_settings(&self, tenant_id: &str, settings: &AutomationSettings) -> Result<(), StoreError> {
        self.enter(Op::AutomationSettings, 1).await?;
        self.state()
            .automations
            .settings
            .insert(tenant_id.to_owned(), settings.clone());
        Ok(())
    }

    async fn automation_context(
        &self,
        tenant_id: &str,
        contact_id: &str,
        phone_number_id: &str,
        day: &str,
    ) -> Result<AutomationContext, StoreError> {
        self.enter(Op::AutomationContext, 1).await?;
        let contact = self.contact(tenant_id, contact_id);
        let conversation = self.conversation(tenant_id, &conversation_id(contact_id, phone_number_id));
        let s = self.state();
        let k = key(tenant_id, contact_id);
        Ok(AutomationContext {
            contact,
            conversation,
            state: s.automations.states.get(&k).cloned().unwrap_or_default(),
            fired_today: s.automations.days.get(&key(tenant_id, day)).copied().unwrap_or(0),
        })
    }

    async fn record_firing(&self, firing: &Firing, welcome: bool, daily_cap: u64) -> Result<FiringWrite, StoreError> {
        self.enter(Op::RecordFiring, 1).await?;
        let exists = self.contact(&firing.tenant_id, &firing.contact_id).is_some();
        let mut s = self.state();
        let a = &mut s.automations;
        let k = key(&firing.tenant_id, &firing.contact_id);
        let day = key(&firing.tenant_id, &firing.at.format("%Y-%m-%d").to_string());
        // The transaction's conditions, in its order.
        if a.firings.get(&k).is_some_and(|f| f.contains_key(&firing_sk(firing))) {
            return Ok(FiringWrite::Duplicate);
        }
        if !exists {
            return Ok(FiringWrite::ContactErased);
        }
        if welcome && a.states.get(&k).is_some_and(|st| st.welcomed_at.is_some()) {
            return Ok(FiringWrite::AlreadyWelcomed);
        }
        if a.days.get(&day).copied().unwrap_or(0) >= daily_cap {
            return Ok(FiringWrite::CapReached);
        }
        a.firings
            .entry(k.clone())
            .or_default()
            .insert(firing_sk(firing), firing.clone());
        a.states.entry(k).or_default().after(firing);
        *a.days.entry(day).or_default() += 1;
        Ok(FiringWrite::Recorded)
    }

    async fn record_suppression(&self, firing: &Firing) -> Result<bool, StoreError> {
        self.enter(Op::RecordSuppression, 1).await?;
        let mut s = self.state();
        let log = s
            .automations
            .firings
            .entry(key(&firing.tenant_id, &firing.contact_id))
            .or_default();
        let sk = firing_sk(firing);
        if log.contains_key(&sk) {
            return Ok(false);
        }
        log.insert(sk, firing.clone());
        Ok(true)
    }

    async fn no_reply_rules(&self) -> Result<Vec<Rule>, StoreError> {
        self.enter(Op::NoReplyRules, 1).await?;
        Ok(self
            .state()
            .automations
            .rules
            .values()
            .filter(|r| r.spec.enabled && matches!(r.spec.trigger, crate::automation::Trigger::NoReply { .. }))
            .cloned()
            .collect())
    }

    async fn waiting_since_up_to(
        &self,
        tenant_id: &str,
        up_to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<crate::conversation::Conversation>, StoreError> {
        self.enter(Op::WaitingConversations, 1).await?;
        let s = self.state();
        let mut waiting: Vec<_> = s
            .conversations
            .iter()
            .filter(|((t, _), c)| t == tenant_id && c.waiting_since.is_some_and(|w| w <= up_to))
            .map(|(_, c)| c.clone())
            .collect();
        waiting.sort_by_key(|c| c.waiting_since);
        Ok(waiting)
    }

    async fn mark_no_reply_done(
        &self,
        tenant_id: &str,
        contact_id: &str,
        rule_id: &str,
        period_id: &str,
    ) -> Result<(), StoreError> {
        self.enter(Op::MarkNoReplyDone, 1).await?;
        let mut s = self.state();
        if let Some(state) = s.automations.states.get_mut(&key(tenant_id, contact_id)) {
            state.done_for.insert(rule_id.to_owned(), period_id.to_owned());
        }
        Ok(())
    }

    async fn next_round_robin(&self, tenant_id: &str, rule_id: &str) -> Result<u64, StoreError> {
        self.enter(Op::NextRoundRobin, 1).await?;
        let mut s = self.state();
        let n = s.automations.round_robin.entry(key(tenant_id, rule_id)).or_default();
        *n += 1;
        Ok(*n - 1)
    }

    async fn rule_firings(
        &self,
        tenant_id: &str,
        rule_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Firing>, StoreError> {
        self.enter(Op::AutomationFirings, 1).await?;
        let s = self.state();
        let mut sorted: Vec<(String, Firing)> = s
            .automations
            .firings
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .flat_map(|(_, log)| log.values())
            .filter(|f| f.rule_id == rule_id)
            .map(|f| (format!("{}#{}", f.at.timestamp_millis(), f.message_id), f.clone()))
            .collect();
        sorted.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(page_of(sorted, Order::Descending, limit, start))
    }

    async fn conversation_firings(
        &self,
        tenant_id: &str,
        contact_id: &str,
        conversation_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Firing>, StoreError> {
        self.enter(Op::AutomationFirings, 1).await?;
        let s = self.state();
        let sorted: Vec<(String, Firing)> = s
            .automations
            .firings
            .get(&key(tenant_id, contact_id))
            .map(|log| {
                log.iter()
                    .rev()
                    .filter(|(_, f)| f.conversation_id == conversation_id)
                    .map(|(k, f)| (k.clone(), f.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(page_of(sorted, Order::Descending, limit, start))
    }
}
