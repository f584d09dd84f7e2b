//! Automated replies (docs/automations.md): `/v1/automations` (CRUD, merge-patch), `POST
//! /v1/automations/test` (a dry run against a contact's real state: nothing is sent or
//! recorded), the firing logs per rule and per conversation, and `/v1/settings/automations`.
//! Rules apply to new inbound messages within a minute of a change (the events function's
//! per-instance memory).

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crm_shared::automation::evaluate::{Outcome, compile, text_of};
use crm_shared::automation::{
    AutomationSettings, Facts, Firing, Rule, RuleError, RuleSpec, apply_patch, evaluate, waiting_period_id,
};
use crm_shared::conversation::conversation_id;
use crm_shared::ids;
use crm_shared::store::StoreError;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::{contacts, conversations, json_input};
use crate::{ApiStore, Deps, audit, json_body, no_content, ok_json, request_id};

const RULES_LISTING: &str = "automations";
const FIRINGS_LISTING: &str = "automation-firings";
const AFTER: &str = "after";
/// Attempts of an edit that keeps losing to a concurrent one.
const EDIT_ATTEMPTS: usize = 3;

fn no_rule() -> ApiError {
    ApiError::not_found("no such automation")
}

fn invalid(e: RuleError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code, e.to_string())
}

fn entry(caller: &Caller, req: &Request, action: &str, rule_id: &str) -> crm_shared::audit::AuditEntry {
    caller
        .audit_entry(action)
        .target("automation", rule_id)
        .request(request_id(req).as_deref())
}

async fn load<S: ApiStore, L, Q>(deps: &Deps<S, L, Q>, caller: &Caller, id: &str) -> Result<Rule, ApiError> {
    if !ids::is_valid_id(id) {
        return Err(no_rule());
    }
    deps.store.get_rule(&caller.tenant_id, id).await?.ok_or_else(no_rule)
}

fn firing_view(f: &Firing) -> Value {
    json!({
        "rule_id": f.rule_id,
        "message_id": f.message_id,
        "contact_id": f.contact_id,
        "conversation_id": f.conversation_id,
        "trigger": f.trigger,
        "outcome": f.outcome,
        "reason": f.reason,
        "actions": f.actions,
        "reply_message_id": f.reply_message_id,
        "notify": f.notify,
        "waiting_since": f.waiting_since,
        "at": f.at,
    })
}

pub async fn list<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let page = page_request(req, &deps.cursors, &caller.tenant_id, RULES_LISTING)?;
    let after = page
        .start
        .as_ref()
        .and_then(|p| p.get(AFTER))
        .cloned()
        .unwrap_or_default();
    let mut rules = deps.store.rules_of(&caller.tenant_id).await?;
    rules.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
    let rest: Vec<&Rule> = rules.iter().filter(|r| r.rule_id > after).collect();
    let limit = page.limit as usize;
    let next = (rest.len() > limit)
        .then(|| crm_shared::cursor::Position::from([(AFTER.to_owned(), rest[limit - 1].rule_id.clone())]));
    let items = rest.iter().take(limit).map(|r| r.view()).collect();
    ok_json(&envelope(items, next, &deps.cursors, &caller.tenant_id, RULES_LISTING))
}

pub async fn create<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let mut spec: RuleSpec = json_input(req)?;
    spec.validate().map_err(invalid)?;
    let now = Utc::now();
    let rule = Rule {
        tenant_id: caller.tenant_id.clone(),
        rule_id: ids::new_id(),
        spec,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    match deps.store.create_rule(&rule).await {
        Ok(()) => {}
        Err(StoreError::Conflict(m)) => return Err(ApiError::new(StatusCode::CONFLICT, "too_many_automations", m)),
        Err(e) => return Err(e.into()),
    }
    let e = entry(caller, req, "automation.create", &rule.rule_id)
        .detail("trigger", rule.spec.trigger.kind())
        .detail("enabled", rule.spec.enabled);
    audit(&deps.store, e).await;
    json_body(StatusCode::CREATED, &rule.view())
}

pub async fn get<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    ok_json(&load(deps, caller, id).await?.view())
}

pub async fn patch<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let body: Value = json_input(req)?;
    for _ in 0..EDIT_ATTEMPTS {
        let before = load(deps, caller, id).await?;
        let spec = apply_patch(&before.spec, &body).map_err(|e| {
            // A body that does not parse as a rule is the client's shape error; a rule that
            // parses but breaks a rule is unprocessable.
            if e.field == "body" {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string())
            } else {
                invalid(e)
            }
        })?;
        let after = Rule {
            spec,
            version: before.version + 1,
            updated_at: Utc::now(),
            ..before.clone()
        };
        match deps.store.update_rule(&after).await {
            Ok(()) => {
                let e = entry(caller, req, "automation.update", id).detail("enabled", after.spec.enabled);
                audit(&deps.store, e).await;
                return ok_json(&after.view());
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(StoreError::NotFound) => return Err(no_rule()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::VersionMismatch.into())
}

pub async fn delete<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    load(deps, caller, id).await?;
    if !deps.store.delete_rule(&caller.tenant_id, id).await? {
        return Err(no_rule());
    }
    audit(&deps.store, entry(caller, req, "automation.delete", id)).await;
    Ok(no_content())
}

/// `GET /v1/automations/{id}/firings`: the rule's firings and suppressions, newest first.
pub async fn rule_firings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    load(deps, caller, id).await?;
    let listing = format!("{FIRINGS_LISTING}:{id}");
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    let found = deps
        .store
        .rule_firings(&caller.tenant_id, id, page.limit, page.start)
        .await?;
    let items = found.items.iter().map(firing_view).collect();
    ok_json(&envelope(items, found.next, &deps.cursors, &caller.tenant_id, &listing))
}

/// `GET /v1/conversations/{id}/automations`: the conversation's firings and suppressions.
pub async fn conversation_firings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let conversation = conversations::load(deps, caller, id).await?;
    let listing = format!("{FIRINGS_LISTING}:{id}");
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    let found = deps
        .store
        .conversation_firings(
            &caller.tenant_id,
            &conversation.contact_id,
            &conversation.conversation_id,
            page.limit,
            page.start,
        )
        .await?;
    let items = found.items.iter().map(firing_view).collect();
    ok_json(&envelope(items, found.next, &deps.cursors, &caller.tenant_id, &listing))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestInput {
    contact_id: String,
    /// The sample message: `{"type": "text", "text": {"body": "..."}}` (or any inbound type).
    /// Not with `sweep`.
    #[serde(default)]
    message: Option<Value>,
    /// Evaluate as the no-reply sweep would at `at`: the conversation's real wait, no message.
    #[serde(default)]
    sweep: bool,
    /// The tenant's number it arrives on (default: the one the contact last wrote to).
    #[serde(default)]
    phone_number_id: Option<String>,
    /// When it arrives (default: now).
    #[serde(default)]
    at: Option<DateTime<Utc>>,
    /// Treat it as the first message of a new contact (welcome rules).
    #[serde(default)]
    new_contact: bool,
}

/// `POST /v1/automations/test`: which rule would fire on the sample message, and why each
/// other did not — against the contact's real state, with every rule as stored now. Nothing is
/// sent or recorded.
pub async fn test<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let input: TestInput = json_input(req)?;
    let contact = contacts::load(deps, caller, &input.contact_id).await?;
    let unprocessable = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_message", m.to_owned());
    let text = match (&input.message, input.sweep) {
        (Some(_), true) => return Err(unprocessable("a sweep evaluation takes no message")),
        (None, true) => None,
        (None, false) => return Err(unprocessable("message is required (or sweep: true)")),
        (Some(message), false) => {
            let message_type = message
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| unprocessable("message needs a type"))?;
            let content = message.get(message_type).cloned().unwrap_or(Value::Null);
            text_of(message_type, &content)
        }
    };
    let now = input.at.unwrap_or_else(Utc::now);
    let number = match input.phone_number_id.or_else(|| contact.last_number.clone()) {
        Some(n) => n,
        None => deps
            .store
            .get_tenant(&caller.tenant_id)
            .await?
            .map(|t| t.phone_number_id)
            .unwrap_or_default(),
    };
    let context = deps
        .store
        .automation_context(
            &caller.tenant_id,
            &contact.contact_id,
            &number,
            &now.format("%Y-%m-%d").to_string(),
        )
        .await?;
    let settings = deps.store.automation_settings(&caller.tenant_id).await?;
    let rules = compile(deps.store.rules_of(&caller.tenant_id).await?);
    let mut contact_now = context.contact.clone().unwrap_or(contact);
    let mut conversation = context.conversation.clone();
    // The sweep judges the conversation's real wait; a sample message counts as just received
    // (the service window it opens is open).
    let waiting_since = if input.sweep {
        let since = conversation.as_ref().and_then(|c| c.no_reply_waiting_since());
        if since.is_none() {
            return Err(unprocessable(
                "the customer is not waiting for a reply in this conversation",
            ));
        }
        since
    } else {
        contact_now.last_inbound_at = Some(now);
        if let Some(c) = conversation.as_mut() {
            c.window_expires_at = Some(crm_shared::conversation::window_end(now));
        }
        None
    };
    let period =
        waiting_since.map(|since| waiting_period_id(&conversation_id(&contact_now.contact_id, &number), since));
    let evaluation = evaluate(
        &rules,
        &Facts {
            message_id: period.as_deref().unwrap_or("sample"),
            text: text.as_deref(),
            contact: Some(&contact_now),
            conversation: conversation.as_ref(),
            state: &context.state,
            new_contact: input.new_contact,
            fired_today: context.fired_today,
            daily_cap: settings.daily_cap,
            now,
            waiting_since,
        },
    );
    let verdicts: Vec<Value> = evaluation
        .verdicts
        .iter()
        .map(|v| {
            let (outcome, reason, actions, reply) = match &v.outcome {
                Outcome::Fires(p) => (
                    "fires",
                    None,
                    p.kinds(),
                    p.reply
                        .as_ref()
                        .map(|r| json!({"type": r.message_type, "category": r.category})),
                ),
                Outcome::Suppressed(r) => ("suppressed", Some(r.code().to_owned()), Vec::new(), None),
                Outcome::NotTriggered(why) => ("not_triggered", Some((*why).to_owned()), Vec::new(), None),
                Outcome::ConditionsUnmet(which) => (
                    "conditions_unmet",
                    Some(format!("condition {which} does not hold")),
                    Vec::new(),
                    None,
                ),
                Outcome::Skipped => ("skipped", Some("an earlier rule matched".to_owned()), Vec::new(), None),
            };
            json!({
                "rule_id": v.rule_id, "name": v.name, "trigger": v.trigger, "matched": v.matched,
                "outcome": outcome, "reason": reason, "actions": actions, "reply": reply,
            })
        })
        .collect();
    let fires: Vec<&str> = evaluation.fired().map(|(v, _)| v.rule_id.as_str()).collect();
    ok_json(&json!({
        "conversation_id": conversation_id(&contact_now.contact_id, &number),
        "fires": fires,
        "verdicts": verdicts,
    }))
}

pub async fn get_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    ok_json(&deps.store.automation_settings(&caller.tenant_id).await?)
}

/// Highest daily cap a tenant may set.
const MAX_DAILY_CAP: u64 = 1_000_000;

pub async fn put_settings<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let settings: AutomationSettings = json_input(req)?;
    settings.validate().map_err(invalid)?;
    if settings.daily_cap > MAX_DAILY_CAP {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_settings",
            format!("daily_cap must be 0 to {MAX_DAILY_CAP}"),
        ));
    }
    deps.store.put_automation_settings(&caller.tenant_id, &settings).await?;
    let e = caller
        .audit_entry("settings.automations")
        .detail("daily_cap", settings.daily_cap)
        .detail("opt_out_confirmation", settings.opt_out_confirmation.is_some())
        .detail("opt_in_confirmation", settings.opt_in_confirmation.is_some())
        .request(request_id(req).as_deref());
    audit(&deps.store, e).await;
    ok_json(&settings)
}
