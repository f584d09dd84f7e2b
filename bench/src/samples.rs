//! Sample tenant content the scenarios share: fifty automation rules of a busy tenant (`make
//! bench`'s events function runs and `automations-bench`) and a common utility template with a
//! send of it (`make bench`'s template send and `template-validate`).

use chrono::Utc;
use serde_json::{Value, json};

use crm_shared::automation::{Rule, RuleSpec};

fn reply() -> Value {
    json!({"type": "reply", "message": {"type": "text", "text": {"body": "thanks!"}}})
}

/// 40 keyword rules (exact, prefix, contains, regex) and 10 away rules inside their hours; with
/// `with_match`, the last away rule is replaced by one that fires on "price".
pub fn fifty_rule_specs(with_match: bool) -> Vec<Value> {
    let mut specs: Vec<Value> = Vec::new();
    for i in 0..40 {
        let trigger = match i % 4 {
            0 => json!({"type": "keyword", "match": "exact", "keywords": [format!("code {i}"), format!("menu {i}")]}),
            1 => json!({"type": "keyword", "match": "prefix", "keywords": [format!("order{i}"), "track"]}),
            2 => {
                json!({"type": "keyword", "match": "contains", "keywords": [format!("refund{i}"), "invoice copy", "opening hours"]})
            }
            _ => json!({"type": "keyword", "match": "regex", "keywords": [format!(r"^ticket\s*#?{i}\d+$")]}),
        };
        specs.push(json!({"name": format!("k{i}"), "priority": i, "trigger": trigger, "actions": [reply()]}));
    }
    let all_day: Value = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| (d.to_string(), json!(["00:00", "23:59"])))
        .collect::<serde_json::Map<_, _>>()
        .into();
    for i in 0..10 {
        specs.push(
            json!({"name": format!("a{i}"), "trigger": {"type": "away", "time_zone": "Europe/Berlin",
            "hours": all_day.clone()}, "actions": [reply()]}),
        );
    }
    if with_match {
        specs.pop();
        specs.push(
            json!({"name": "price", "trigger": {"type": "keyword", "match": "contains", "keywords": ["price"]},
            "actions": [reply()]}),
        );
    }
    specs
}

/// [`fifty_rule_specs`] as the tenant's stored rules.
pub fn fifty_rules(tenant_id: &str, with_match: bool) -> Vec<Rule> {
    let now = Utc::now();
    fifty_rule_specs(with_match)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let mut spec: RuleSpec = serde_json::from_value(v).expect("a bench rule parses");
            spec.validate().expect("a bench rule is valid");
            Rule {
                tenant_id: tenant_id.to_owned(),
                rule_id: format!("01benchrule{i:015}"),
                spec,
                version: 1,
                created_at: now,
                updated_at: now,
            }
        })
        .collect()
}

/// A utility template with a text header, a three-parameter body and a URL button (the
/// common shape), as Meta lists it.
pub fn order_update_template() -> Value {
    json!({"id": "1001", "name": "order_update", "language": "en_US", "status": "APPROVED", "category": "UTILITY",
           "parameter_format": "POSITIONAL", "components": [
        {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}", "example": {"header_text": ["A-1"]}},
        {"type": "BODY", "text": "Hi {{1}}, your order of {{2}} ships on {{3}}. Track it below or reply to this message.",
         "example": {"body_text": [["Ana", "€10", "Monday"]]}},
        {"type": "FOOTER", "text": "Reply STOP to opt out"},
        {"type": "BUTTONS", "buttons": [
            {"type": "QUICK_REPLY", "text": "Thanks"},
            {"type": "URL", "text": "Track", "url": "https://shop.example/track/{{1}}", "example": ["A-1"]}]}
    ]})
}

/// A `POST /v1/messages` body sending [`order_update_template`] to `to` (language `auto`).
pub fn order_update_send(to: &str) -> Value {
    json!({"to": to, "type": "template", "template": {"name": "order_update", "language": {"code": "auto"}, "components": [
        {"type": "header", "parameters": [{"type": "text", "text": "A-7"}]},
        {"type": "body", "parameters": [
            {"type": "text", "text": "Casey"},
            {"type": "currency", "currency": {"fallback_value": "€12.50", "code": "EUR", "amount_1000": 12500}},
            {"type": "date_time", "date_time": {"fallback_value": "Friday"}}]},
        {"type": "button", "sub_type": "url", "index": "1", "parameters": [{"type": "text", "text": "A-7"}]}
    ]}})
}
