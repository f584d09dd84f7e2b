//! [`AutomationStore`] on DynamoDB (layout: docs/data-model.md, "Automations").
//!
//! - rules, settings, day counters and round-robin counters: the tenant partition
//!   (`AUTORULE#<id>`, `AUTOSETTINGS`, `AUTODAY#<day>`, `AUTORR#<rule>`), deleted at offboarding;
//! - a contact's state (`AUTOSTATE`) and firings (`AUTOFIRE#<message>#<rule>`, GSI1 by rule): the
//!   contact partition, erased with the contact; firings expire after [`FIRING_DAYS`].

use aws_sdk_dynamodb::types::{ConditionCheck, ReturnValue, Update};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::dynamo::{
    DynamoStore, Item, attr, backend, condition_failed, from_item, key, n, put_new, s, to_item, tx_check, tx_update,
};
use super::items::{ContactItem, ConversationItem};
use super::keys::*;
use super::ports::{AutomationContext, AutomationStore, FiringWrite};
use super::{Page, StoreError};
use crate::automation::{AutomationSettings, ContactState, Firing, MAX_RULES_PER_TENANT, Rule};
use crate::conversation::Conversation;
use crate::cursor::Position;

/// How long firings and suppressions are kept (then TTL removes them).
pub const FIRING_DAYS: i64 = 90;
/// Day counters outlive their day by this much (TTL).
const DAY_COUNTER_DAYS: i64 = 3;
/// State attributes: `fired#<rule>` (time of its last firing), `firedmsg#<rule>` (its message).
const FIRED_AT: &str = "fired#";
const FIRED_MESSAGE: &str = "firedmsg#";
/// `donemsg#<rule>`: the waiting period whose no-reply firing completed its actions.
const DONE_PERIOD: &str = "donemsg#";

#[derive(Serialize, Deserialize)]
struct RuleItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    /// Enabled no-reply rules only: the sweep's index ([`NO_REPLY_RULES_GSI1PK`]).
    #[serde(rename = "GSI1PK", default, skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(rename = "GSI1SK", default, skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    #[serde(flatten)]
    rule: Rule,
}

impl RuleItem {
    fn new(rule: &Rule) -> Self {
        let no_reply = rule.spec.enabled && matches!(rule.spec.trigger, crate::automation::Trigger::NoReply { .. });
        RuleItem {
            pk: tenant_pk(&rule.tenant_id),
            sk: automation_rule_sk(&rule.rule_id),
            gsi1pk: no_reply.then(|| NO_REPLY_RULES_GSI1PK.to_owned()),
            gsi1sk: no_reply.then(|| no_reply_rule_gsi1sk(&rule.tenant_id, &rule.rule_id)),
            rule: rule.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SettingsItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(flatten)]
    settings: AutomationSettings,
}

#[derive(Serialize, Deserialize)]
struct FiringItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(rename = "GSI1PK")]
    gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    gsi1sk: String,
    expires_at: i64,
    #[serde(flatten)]
    firing: Firing,
}

impl FiringItem {
    fn new(f: &Firing) -> Self {
        FiringItem {
            pk: contact_pk(&f.tenant_id, &f.contact_id),
            sk: automation_firing_sk(&f.message_id, &f.rule_id),
            gsi1pk: automation_rule_firings_gsi1pk(&f.tenant_id, &f.rule_id),
            gsi1sk: format!(
                "{}#{}",
                f.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                f.message_id
            ),
            expires_at: (f.at + Duration::days(FIRING_DAYS)).timestamp(),
            firing: f.clone(),
        }
    }
}

/// The state item's attributes as [`ContactState`].
fn state_of(item: &Item) -> ContactState {
    let time = |v: &str| v.parse::<DateTime<Utc>>().ok();
    let mut state = ContactState::default();
    for (name, value) in item {
        let Ok(v) = value.as_s() else { continue };
        if let Some(rule) = name.strip_prefix(FIRED_AT) {
            if let Some(t) = time(v) {
                state.last_fired.insert(rule.to_owned(), t);
            }
        } else if let Some(rule) = name.strip_prefix(FIRED_MESSAGE) {
            state.fired_for.insert(rule.to_owned(), v.clone());
        } else if let Some(rule) = name.strip_prefix(DONE_PERIOD) {
            state.done_for.insert(rule.to_owned(), v.clone());
        }
    }
    state.last_auto_reply_at = attr(item, "last_auto_reply_at").and_then(time);
    state.welcomed_at = attr(item, "welcomed_at").and_then(time);
    state
}

fn utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl AutomationStore for DynamoStore {
    async fn create_rule(&self, rule: &Rule) -> Result<(), StoreError> {
        if self.rules_of(&rule.tenant_id).await?.len() >= MAX_RULES_PER_TENANT {
            return Err(StoreError::Conflict(format!(
                "a tenant may have at most {MAX_RULES_PER_TENANT} automation rules"
            )));
        }
        let item = RuleItem::new(rule);
        if self.put_if_absent(to_item(&item)).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict("rule id already exists".into()))
        }
    }

    async fn get_rule(&self, tenant_id: &str, rule_id: &str) -> Result<Option<Rule>, StoreError> {
        let item: Option<RuleItem> = self.get(tenant_pk(tenant_id), &automation_rule_sk(rule_id)).await?;
        Ok(item.map(|i| i.rule))
    }

    async fn rules_of(&self, tenant_id: &str) -> Result<Vec<Rule>, StoreError> {
        let query = super::dynamo::PageQuery::partition(tenant_pk(tenant_id)).prefixed(AUTOMATION_RULE_PREFIX);
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|i| from_item::<RuleItem>(i).map(|i| i.rule))
            .collect()
    }

    async fn update_rule(&self, rule: &Rule) -> Result<(), StoreError> {
        let item = RuleItem::new(rule);
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&item)))
            .condition_expression("attribute_exists(PK) AND version = :previous")
            .expression_attribute_values(":previous", n(rule.version.saturating_sub(1)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => match self.get_rule(&rule.tenant_id, &rule.rule_id).await? {
                None => Err(StoreError::NotFound),
                Some(_) => Err(StoreError::VersionMismatch),
            },
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete_rule(&self, tenant_id: &str, rule_id: &str) -> Result<bool, StoreError> {
        let out = self
            .client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), automation_rule_sk(rule_id))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.attributes.is_some())
    }

    async fn automation_settings(&self, tenant_id: &str) -> Result<AutomationSettings, StoreError> {
        let item: Option<SettingsItem> = self.get(tenant_pk(tenant_id), AUTOMATION_SETTINGS_SK).await?;
        Ok(item.map(|i| i.settings).unwrap_or_default())
    }

    async fn put_automation_settings(&self, tenant_id: &str, settings: &AutomationSettings) -> Result<(), StoreError> {
        let item = SettingsItem {
            pk: tenant_pk(tenant_id),
            sk: AUTOMATION_SETTINGS_SK.to_owned(),
            settings: settings.clone(),
        };
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(&item)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn automation_context(
        &self,
        tenant_id: &str,
        contact_id: &str,
        phone_number_id: &str,
        day: &str,
    ) -> Result<AutomationContext, StoreError> {
        let pk = contact_pk(tenant_id, contact_id);
        let conversation_sk = conversation_sk(phone_number_id);
        let day_sk = automation_day_sk(day);
        let items = self
            .batch_get(vec![
                key(pk.clone(), PROFILE_SK),
                key(pk.clone(), conversation_sk.clone()),
                key(pk.clone(), AUTOMATION_STATE_SK),
                key(tenant_pk(tenant_id), day_sk.clone()),
            ])
            .await?;
        let mut context = AutomationContext::default();
        for item in items {
            let (Some(item_pk), Some(sk)) = (attr(&item, PK), attr(&item, SK)) else {
                continue;
            };
            if item_pk == pk && sk == PROFILE_SK {
                context.contact = Some(from_item::<ContactItem>(item)?.contact);
            } else if item_pk == pk && sk == conversation_sk {
                context.conversation = Some(from_item::<ConversationItem>(item)?.conversation);
            } else if sk == AUTOMATION_STATE_SK {
                context.state = state_of(&item);
            } else if sk == day_sk {
                context.fired_today = item
                    .get("fired")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
        }
        Ok(context)
    }

    async fn record_firing(&self, firing: &Firing, welcome: bool, daily_cap: u64) -> Result<FiringWrite, StoreError> {
        let pk = contact_pk(&firing.tenant_id, &firing.contact_id);
        let at = utc(firing.at);
        let mut state = Update::builder()
            .table_name(self.table())
            .set_key(Some(key(pk.clone(), AUTOMATION_STATE_SK)))
            .expression_attribute_names("#fired", format!("{FIRED_AT}{}", firing.rule_id))
            .expression_attribute_names("#msg", format!("{FIRED_MESSAGE}{}", firing.rule_id))
            .expression_attribute_values(":at", s(at.clone()))
            .expression_attribute_values(":msg", s(firing.message_id.clone()));
        let mut sets = vec!["#fired = :at", "#msg = :msg"];
        if firing.reply_message_id.is_some() {
            sets.push("last_auto_reply_at = :at");
        }
        if welcome {
            sets.push("welcomed_at = :at");
            state = state.condition_expression("attribute_not_exists(welcomed_at)");
        }
        let state = state
            .update_expression(format!("SET {}", sets.join(", ")))
            .build()
            .expect("update is complete");
        let day = firing.at.format("%Y-%m-%d").to_string();
        let counter = Update::builder()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(&firing.tenant_id), automation_day_sk(&day))))
            .update_expression("ADD fired :one SET expires_at = :exp")
            .condition_expression("attribute_not_exists(fired) OR fired < :cap")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":cap", n(daily_cap))
            .expression_attribute_values(":exp", n((firing.at + Duration::days(DAY_COUNTER_DAYS)).timestamp()))
            .build()
            .expect("update is complete");
        let items = vec![
            put_new(self.table(), to_item(&FiringItem::new(firing))),
            tx_check(
                ConditionCheck::builder()
                    .table_name(self.table())
                    .set_key(Some(key(pk, PROFILE_SK)))
                    .condition_expression("attribute_exists(PK)")
                    .build()
                    .expect("check is complete"),
            ),
            tx_update(state),
            tx_update(counter),
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(FiringWrite::Recorded),
            Err(c) if c.failed(0) => Ok(FiringWrite::Duplicate),
            Err(c) if c.failed(1) => Ok(FiringWrite::ContactErased),
            Err(c) if c.failed(2) => Ok(FiringWrite::AlreadyWelcomed),
            Err(c) if c.failed(3) => Ok(FiringWrite::CapReached),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn record_suppression(&self, firing: &Firing) -> Result<bool, StoreError> {
        self.put_if_absent(to_item(&FiringItem::new(firing))).await
    }

    async fn no_reply_rules(&self) -> Result<Vec<Rule>, StoreError> {
        let query = super::dynamo::PageQuery::index(GSI1, GSI1_PK, GSI1_SK, NO_REPLY_RULES_GSI1PK.to_owned());
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|i| from_item::<RuleItem>(i).map(|i| i.rule))
            .collect()
    }

    async fn waiting_since_up_to(
        &self,
        tenant_id: &str,
        up_to: DateTime<Utc>,
    ) -> Result<Vec<Conversation>, StoreError> {
        // Every sort key of an instant up to `up_to` (ms) sorts below the next millisecond's.
        let below = inbox_sk(up_to.timestamp_millis() + 1, "");
        let query = super::dynamo::PageQuery::index(GSI7, GSI7_PK, GSI7_SK, waiting_gsi7pk(tenant_id)).below(below);
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|i| from_item::<ConversationItem>(i).map(|i| i.conversation))
            .filter(|c| !matches!(c, Ok(c) if c.tenant_id != tenant_id))
            .collect()
    }

    async fn mark_no_reply_done(
        &self,
        tenant_id: &str,
        contact_id: &str,
        rule_id: &str,
        period_id: &str,
    ) -> Result<(), StoreError> {
        self.client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(contact_pk(tenant_id, contact_id), AUTOMATION_STATE_SK)))
            .update_expression("SET #done = :period")
            // Only a state the firing wrote (an erased contact's state is not made again).
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#done", format!("{DONE_PERIOD}{rule_id}"))
            .expression_attribute_values(":period", s(period_id))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| if condition_failed(&e) { Ok(()) } else { Err(backend(e)) })
    }

    async fn next_round_robin(&self, tenant_id: &str, rule_id: &str) -> Result<u64, StoreError> {
        let out = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant_id), automation_round_robin_sk(rule_id))))
            .update_expression("ADD position :one")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(backend)?;
        let position = out
            .attributes
            .as_ref()
            .and_then(|a| a.get("position"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1);
        Ok(position - 1)
    }

    async fn rule_firings(
        &self,
        tenant_id: &str,
        rule_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Firing>, StoreError> {
        let query = self
            .client()
            .query()
            .index_name(GSI1)
            .key_condition_expression("GSI1PK = :pk")
            .expression_attribute_values(":pk", s(automation_rule_firings_gsi1pk(tenant_id, rule_id)))
            .scan_index_forward(false);
        self.list_page(
            query,
            tenant_id,
            limit,
            start,
            &[PK, SK, GSI1_PK, GSI1_SK],
            |i: FiringItem| i.firing,
        )
        .await
    }

    async fn conversation_firings(
        &self,
        tenant_id: &str,
        contact_id: &str,
        conversation_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Firing>, StoreError> {
        let query = self
            .client()
            .query()
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .filter_expression("conversation_id = :conversation")
            .expression_attribute_values(":pk", s(contact_pk(tenant_id, contact_id)))
            .expression_attribute_values(":prefix", s(AUTOMATION_FIRING_PREFIX))
            .expression_attribute_values(":conversation", s(conversation_id))
            .scan_index_forward(false);
        self.list_page(query, tenant_id, limit, start, &[PK, SK], |i: FiringItem| i.firing)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    #[test]
    fn state_items_read_back() {
        let item: Item = BTreeMap::from([
            (
                "fired#r1".to_owned(),
                AttributeValue::S("2026-12-01T10:00:00.000Z".into()),
            ),
            ("firedmsg#r1".to_owned(), AttributeValue::S("m1".into())),
            (
                "last_auto_reply_at".to_owned(),
                AttributeValue::S("2026-12-01T10:00:00.000Z".into()),
            ),
            ("PK".to_owned(), AttributeValue::S("T#t#C#c".into())),
        ])
        .into_iter()
        .collect();
        let state = state_of(&item);
        assert_eq!(state.fired_for["r1"], "m1");
        assert_eq!(
            state.last_fired["r1"],
            "2026-12-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(state.welcomed_at.is_none());
        assert!(state.last_auto_reply_at.is_some());
    }
}
