//! Who a broadcast may be sent to, and with which parameters: one decision per recipient at
//! planning, before anything is sent. The sender checks the sending rules again right before
//! each Graph call (consent may change in between).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::spec::BroadcastSpec;
use crate::contact::{Contact, MarketingConsent};
use crate::template::schema::{ButtonKind, HeaderSlot, TextSlot};
use crate::template::{ParameterFormat, TemplateRecord, language, validate_send};

/// Why a recipient is not sent to. Codes are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A listed contact id or phone with no contact (or the contact was erased).
    UnknownContact,
    /// Marketing needs the contact's opt-in; an opt-out here or in WhatsApp itself (Meta's
    /// `user_preferences` webhook) stops it.
    NoMarketingConsent,
    Restricted,
    /// Neither phone number nor WhatsApp user id.
    NoRecipient,
    /// The rendered parameters do not fit the template's schema.
    InvalidParameters,
    /// The contact was already a recipient of this broadcast.
    Duplicate,
    /// Meta does not deliver marketing templates to US (+1) numbers.
    UsMarketingBlock,
    /// No approved version of the template in the contact's language (nor a fallback).
    TemplateNotApproved,
    /// The portfolio's 24 h unique-user messaging limit (the recipient waits for the next
    /// window: recorded as a wait, never as a final skip).
    MessagingLimit,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::UnknownContact => "unknown_contact",
            SkipReason::NoMarketingConsent => "no_marketing_consent",
            SkipReason::Restricted => "restricted",
            SkipReason::NoRecipient => "no_recipient",
            SkipReason::InvalidParameters => "invalid_parameters",
            SkipReason::Duplicate => "duplicate",
            SkipReason::UsMarketingBlock => "us_marketing_block",
            SkipReason::TemplateNotApproved => "template_not_approved",
            SkipReason::MessagingLimit => "messaging_limit",
        }
    }
}

/// The planning decision for one recipient.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Send { language: String, components: Value },
    Skip(SkipReason),
}

/// Whether Meta blocks a marketing template to this contact: a +1 (US) phone number.
pub fn us_marketing_blocked(contact: &Contact, marketing: bool) -> bool {
    marketing && contact.phone.as_deref().is_some_and(|p| p.starts_with("+1"))
}

/// An uploaded file's row values (column → value) for a recipient, when it came from one.
pub type RowValues<'a> = Option<&'a BTreeMap<String, String>>;

/// The value of a mapping source for a contact (`None` when it is empty).
pub fn source_value(contact: &Contact, row: RowValues<'_>, source: &str) -> Option<String> {
    let value = match source.split_once('.')? {
        (super::spec::FILE_SOURCE, column) => row.and_then(|r| r.get(column)).cloned(),
        ("contact", "name") => contact.name.clone(),
        ("contact", "profile_name") => contact.profile_name.clone(),
        ("contact", "email") => contact.email.clone(),
        ("contact", "phone") => contact.phone.clone(),
        ("contact", "language") => contact.language.clone(),
        ("attributes", key) => contact.attributes.get(key).cloned(),
        _ => None,
    };
    value.filter(|v| !v.trim().is_empty())
}

/// A placeholder's value: the mapped source, else the default, else `None` (missing).
fn value_of(spec: &BroadcastSpec, contact: &Contact, row: RowValues<'_>, placeholder: &str) -> Option<String> {
    spec.parameters
        .get(placeholder)
        .and_then(|source| source_value(contact, row, source))
        .or_else(|| spec.defaults.get(placeholder).cloned())
}

fn text_parameters(
    spec: &BroadcastSpec,
    contact: &Contact,
    row: RowValues<'_>,
    slot: &TextSlot,
    prefix: &str,
    format: ParameterFormat,
) -> Vec<Value> {
    slot.params
        .iter()
        .map(|name| {
            // A missing value is sent as an empty text: the schema check then refuses it.
            let text = value_of(spec, contact, row, &format!("{prefix}{name}")).unwrap_or_default();
            match format {
                ParameterFormat::Named => json!({"type": "text", "parameter_name": name, "text": text}),
                _ => json!({"type": "text", "text": text}),
            }
        })
        .collect()
}

/// The send's `components` for a contact: body placeholders by name (`"1"`, `"order"`),
/// header placeholders as `header.<name>` (a media header's link as `header`), button
/// parameters as `button.<index>`.
pub fn render_components(
    spec: &BroadcastSpec,
    template: &TemplateRecord,
    contact: &Contact,
    row: RowValues<'_>,
) -> Value {
    let Some(schema) = &template.schema else {
        return json!([]);
    };
    let format = template.parameter_format;
    let mut components = Vec::new();
    match &schema.header {
        Some(HeaderSlot::Text(slot)) if !slot.params.is_empty() => components.push(json!({
            "type": "header", "parameters": text_parameters(spec, contact, row, slot, "header.", format)
        })),
        Some(HeaderSlot::Media { media }) => {
            let kind = media.as_str();
            let link = value_of(spec, contact, row, "header").unwrap_or_default();
            let mut param = Map::new();
            param.insert("type".into(), json!(kind));
            param.insert(kind.into(), json!({ "link": link }));
            components.push(json!({"type": "header", "parameters": [param]}));
        }
        _ => {}
    }
    if !schema.body.params.is_empty() {
        components.push(json!({
            "type": "body", "parameters": text_parameters(spec, contact, row, &schema.body, "", format)
        }));
    }
    for button in schema.buttons.iter().filter(|b| b.requires_parameter()) {
        let value = value_of(spec, contact, row, &format!("button.{}", button.index)).unwrap_or_default();
        let parameter = match button.kind {
            ButtonKind::CopyCode => json!({"type": "coupon_code", "coupon_code": value}),
            _ => json!({"type": "text", "text": value}),
        };
        components.push(json!({
            "type": "button", "sub_type": button.sub_type(), "index": button.index.to_string(),
            "parameters": [parameter],
        }));
    }
    Value::Array(components)
}

/// The template language for a contact: the broadcast's own, else the fallback chain
/// (contact's language, the tenant's default) among the template's approved languages.
fn choose_language(
    spec: &BroadcastSpec,
    entries: &[TemplateRecord],
    contact: &Contact,
    tenant_default: Option<&str>,
) -> Option<String> {
    let approved = |lang: &str| entries.iter().any(|e| e.language == lang && e.is_approved());
    match &spec.language {
        Some(l) => approved(l).then(|| l.clone()),
        None => {
            let available: Vec<(&str, bool)> = entries.iter().map(|e| (e.language.as_str(), e.is_approved())).collect();
            let mut chain = language::candidates(contact.language.as_deref(), tenant_default);
            // Without any preference, the template's first approved language.
            if let Some(first) = entries.iter().find(|e| e.is_approved()) {
                chain.push(first.language.clone());
            }
            language::choose(&chain, &available).filter(|l| approved(l))
        }
    }
}

/// The planning decision: the rules in order of precedence (a restricted contact is reported
/// as restricted whatever else is wrong).
pub fn decide(
    spec: &BroadcastSpec,
    marketing: bool,
    entries: &[TemplateRecord],
    tenant_default_language: Option<&str>,
    contact: Option<&Contact>,
    row: RowValues<'_>,
) -> Decision {
    let Some(contact) = contact else {
        return Decision::Skip(SkipReason::UnknownContact);
    };
    if contact.restricted {
        return Decision::Skip(SkipReason::Restricted);
    }
    if contact.phone.is_none() && contact.user_id.is_none() {
        return Decision::Skip(SkipReason::NoRecipient);
    }
    // A campaign is marketing the customer asked for: an unknown consent is not enough.
    if marketing && contact.consent.marketing != MarketingConsent::OptedIn {
        return Decision::Skip(SkipReason::NoMarketingConsent);
    }
    if us_marketing_blocked(contact, marketing) {
        return Decision::Skip(SkipReason::UsMarketingBlock);
    }
    let Some(language) = choose_language(spec, entries, contact, tenant_default_language) else {
        return Decision::Skip(SkipReason::TemplateNotApproved);
    };
    let template = entries
        .iter()
        .find(|e| e.language == language)
        .expect("chosen among them");
    let components = render_components(spec, template, contact, row);
    let Some(schema) = &template.schema else {
        return Decision::Skip(SkipReason::TemplateNotApproved);
    };
    let send = json!({"name": spec.template_name, "language": {"code": language}, "components": components});
    if validate_send(schema, template.parameter_format, &send).is_err() {
        return Decision::Skip(SkipReason::InvalidParameters);
    }
    Decision::Send { language, components }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::spec::parse_spec;
    use chrono::Utc;

    pub(crate) fn template(language: &str, status: &str) -> TemplateRecord {
        let meta = json!({"name": "spring_sale", "language": language, "id": "1", "status": status,
            "category": "MARKETING", "parameter_format": "POSITIONAL",
            "components": [{"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships today",
                            "example": {"body_text": [["Ana", "A-1"]]}}]});
        TemplateRecord::from_meta("t", &meta, Utc::now()).unwrap()
    }

    fn spec(language: Option<&str>) -> BroadcastSpec {
        let mut body = json!({"name": "s", "template": {"name": "spring_sale"}, "audience": {"all": true},
            "parameters": {"1": "contact.name", "2": "attributes.order_id"}, "defaults": {"1": "there"}});
        if let Some(l) = language {
            body["template"]["language"] = json!(l);
        }
        parse_spec(&body, Utc::now(), "UTC").unwrap()
    }

    fn contact(phone: &str) -> Contact {
        let mut c = crate::testing::fixtures::contact("t", phone, Utc::now());
        c.attributes.insert("order_id".into(), "A-7".into());
        c.consent.marketing = MarketingConsent::OptedIn;
        c
    }

    #[test]
    fn an_eligible_contact_gets_its_rendered_parameters() {
        let entries = [template("en_US", "APPROVED")];
        let mut c = contact("+447700900001");
        c.name = Some("Ana".into());
        let Decision::Send { language, components } =
            decide(&spec(Some("en_US")), true, &entries, None, Some(&c), None)
        else {
            panic!("eligible");
        };
        assert_eq!(language, "en_US");
        assert_eq!(
            components,
            json!([{"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "A-7"}]}])
        );
        // The default fills an empty source.
        c.name = None;
        let Decision::Send { components, .. } = decide(&spec(None), true, &entries, None, Some(&c), None) else {
            panic!("eligible with the default");
        };
        assert_eq!(components[0]["parameters"][0]["text"], "there");
    }

    #[test]
    fn each_rule_has_its_reason_in_precedence_order() {
        let entries = [template("en_US", "APPROVED")];
        let s = spec(Some("en_US"));
        let skip = |c: Option<&Contact>, marketing: bool| decide(&s, marketing, &entries, None, c, None);
        assert_eq!(skip(None, true), Decision::Skip(SkipReason::UnknownContact));
        let mut c = contact("+447700900001");
        c.restricted = true;
        c.consent.marketing = MarketingConsent::OptedOut;
        assert_eq!(skip(Some(&c), true), Decision::Skip(SkipReason::Restricted));
        c.restricted = false;
        assert_eq!(skip(Some(&c), true), Decision::Skip(SkipReason::NoMarketingConsent));
        c.consent.marketing = MarketingConsent::Unknown;
        assert_eq!(skip(Some(&c), true), Decision::Skip(SkipReason::NoMarketingConsent));
        // A utility broadcast does not need marketing consent.
        assert!(matches!(skip(Some(&c), false), Decision::Send { .. }));
        let us = contact("+14155550100");
        assert_eq!(skip(Some(&us), true), Decision::Skip(SkipReason::UsMarketingBlock));
        assert!(
            matches!(skip(Some(&us), false), Decision::Send { .. }),
            "only marketing is blocked"
        );
        let mut no_order = contact("+447700900001");
        no_order.attributes.clear();
        assert_eq!(
            skip(Some(&no_order), true),
            Decision::Skip(SkipReason::InvalidParameters)
        );
        let mut nobody = contact("+447700900001");
        nobody.phone = None;
        assert_eq!(skip(Some(&nobody), true), Decision::Skip(SkipReason::NoRecipient));
    }

    #[test]
    fn the_language_must_be_approved_for_the_contact() {
        let entries = [template("en_US", "APPROVED"), template("de", "PAUSED")];
        let mut c = contact("+447700900001");
        c.language = Some("de".into());
        assert_eq!(
            decide(&spec(Some("de")), true, &entries, None, Some(&c), None),
            Decision::Skip(SkipReason::TemplateNotApproved)
        );
        // auto: German is paused, so the approved English version goes out.
        let Decision::Send { language, .. } = decide(&spec(None), true, &entries, None, Some(&c), None) else {
            panic!("falls back");
        };
        assert_eq!(language, "en_US");
        let none = [template("en_US", "REJECTED")];
        assert_eq!(
            decide(&spec(None), true, &none, None, Some(&c), None),
            Decision::Skip(SkipReason::TemplateNotApproved)
        );
    }

    #[test]
    fn named_templates_and_buttons_render_by_placeholder() {
        let meta = json!({"name": "promo", "language": "en", "id": "2", "status": "APPROVED",
            "category": "MARKETING", "parameter_format": "NAMED",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "For {{who}}", "example": {"header_text_named_params": [{"param_name": "who", "example": "Ana"}]}},
                {"type": "BODY", "text": "Code {{code}}", "example": {"body_text_named_params": [{"param_name": "code", "example": "X"}]}},
                {"type": "BUTTONS", "buttons": [{"type": "URL", "text": "Shop", "url": "https://x.example/{{1}}", "example": ["https://x.example/a"]}]}]});
        let t = TemplateRecord::from_meta("t", &meta, Utc::now()).unwrap();
        let body = json!({"name": "s", "template": {"name": "promo", "language": "en"}, "audience": {"all": true},
            "parameters": {"header.who": "contact.name", "code": "attributes.code", "button.0": "attributes.slug"}});
        let s = parse_spec(&body, Utc::now(), "UTC").unwrap();
        let mut c = contact("+447700900001");
        c.name = Some("Ana".into());
        c.attributes.insert("code".into(), "SPRING".into());
        c.attributes.insert("slug".into(), "spring".into());
        let Decision::Send { components, .. } = decide(&s, true, std::slice::from_ref(&t), None, Some(&c), None) else {
            panic!(
                "eligible: {:?}",
                decide(&s, true, std::slice::from_ref(&t), None, Some(&c), None)
            );
        };
        assert_eq!(
            components[0]["parameters"][0],
            json!({"type": "text", "parameter_name": "who", "text": "Ana"})
        );
        assert_eq!(components[1]["parameters"][0]["parameter_name"], "code");
        assert_eq!(components[2]["sub_type"], "url");
        assert_eq!(components[2]["parameters"][0]["text"], "spring");
    }
}
