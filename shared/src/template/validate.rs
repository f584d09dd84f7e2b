//! A template send checked against the registry before it is queued: the template exists and
//! is approved in the language, and the send's components give every parameter of the schema
//! with the right type and length. Each failure names the field and the code Meta would have
//! answered with ("WhatsApp error codes"), so a client handles ours and Meta's alike:
//!
//! | code | Meta's title | here |
//! | --- | --- | --- |
//! | 132000 | Number of parameters does not match the expected number of params | a parameter missing or extra, a component or button the template does not have |
//! | 132001 | Template does not exist | no such name, language, or not approved |
//! | 132005 | Translated text too long | a text over its limit once the parameters are in |
//! | 132012 | Parameter format does not match format in the created template | wrong type, malformed media, currency, date or location |
//! | 132015 | Template is paused | |
//! | 132016 | Template is disabled | |

use serde::Serialize;
use serde_json::{Map, Value};

use super::schema::{ButtonKind, ButtonSlot, CardSchema, HeaderSlot, MAX_COUPON_CODE_CHARS, MAX_URL_CHARS, TextSlot};
use super::{ParameterFormat, TemplateRecord, TemplateSchema, status};

/// The Meta error codes a local check answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaCode {
    ParameterCount,
    TemplateMissing,
    TextTooLong,
    ParameterFormat,
    TemplatePaused,
    TemplateDisabled,
}

impl MetaCode {
    pub fn code(self) -> u32 {
        match self {
            MetaCode::ParameterCount => 132000,
            MetaCode::TemplateMissing => 132001,
            MetaCode::TextTooLong => 132005,
            MetaCode::ParameterFormat => 132012,
            MetaCode::TemplatePaused => 132015,
            MetaCode::TemplateDisabled => 132016,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            MetaCode::ParameterCount => "Number of parameters does not match the expected number of params",
            MetaCode::TemplateMissing => "Template does not exist",
            MetaCode::TextTooLong => "Translated text too long",
            MetaCode::ParameterFormat => "Parameter format does not match format in the created template",
            MetaCode::TemplatePaused => "Template is paused",
            MetaCode::TemplateDisabled => "Template is disabled",
        }
    }
}

impl Serialize for MetaCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.code())
    }
}

/// One reason a send would fail at Meta, with the field it is about (a JSON path into the
/// send's `template` object, e.g. `template.components[1].parameters[0]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub code: MetaCode,
    pub field: String,
    pub message: String,
}

fn error(code: MetaCode, field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        code,
        field: field.into(),
        message: message.into(),
    }
}

/// Whether the registry entry may be sent: approved, else Meta's code for its status
/// (`None`: the registry has no such template in that language).
pub fn check_status(record: Option<&TemplateRecord>) -> Result<(), FieldError> {
    let Some(record) = record else {
        return Err(error(
            MetaCode::TemplateMissing,
            "template.name",
            "the template does not exist in this language",
        ));
    };
    let code = match record.status.as_str() {
        status::APPROVED => return Ok(()),
        status::PAUSED => MetaCode::TemplatePaused,
        status::DISABLED => MetaCode::TemplateDisabled,
        _ => MetaCode::TemplateMissing,
    };
    Err(error(
        code,
        "template.name",
        format!(
            "the template is {} in this language",
            record.status.to_ascii_lowercase()
        ),
    ))
}

/// The send's components by kind, as given.
#[derive(Default)]
struct SentParts<'a> {
    header: Option<(String, &'a Map<String, Value>)>,
    body: Option<(String, &'a Map<String, Value>)>,
    buttons: Vec<(String, &'a Map<String, Value>)>,
    carousel: Option<(String, &'a Map<String, Value>)>,
}

fn kind(component: &Map<String, Value>) -> String {
    component
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Sorts a `components` array into its parts; duplicates and unknown kinds are errors.
fn sent_parts<'a>(components: Option<&'a Value>, at: &str, errors: &mut Vec<FieldError>) -> SentParts<'a> {
    let mut parts = SentParts::default();
    let Some(components) = components else { return parts };
    let Some(list) = components.as_array() else {
        errors.push(error(MetaCode::ParameterFormat, at, "components must be an array"));
        return parts;
    };
    for (i, c) in list.iter().enumerate() {
        let field = format!("{at}[{i}]");
        let Some(obj) = c.as_object() else {
            errors.push(error(MetaCode::ParameterFormat, field, "a component must be an object"));
            continue;
        };
        let slot = match kind(obj).as_str() {
            "header" => &mut parts.header,
            "body" => &mut parts.body,
            "carousel" => &mut parts.carousel,
            "button" => {
                parts.buttons.push((field, obj));
                continue;
            }
            _ => {
                errors.push(error(
                    MetaCode::ParameterCount,
                    format!("{field}.type"),
                    "type must be header, body, button or carousel",
                ));
                continue;
            }
        };
        if slot.is_some() {
            errors.push(error(MetaCode::ParameterCount, field, "this component is given twice"));
        } else {
            *slot = Some((field, obj));
        }
    }
    parts
}

/// A component's `parameters` (an absent component has none).
fn parameters<'a>(
    part: Option<&(String, &'a Map<String, Value>)>,
    errors: &mut Vec<FieldError>,
) -> Vec<(String, &'a Value)> {
    let Some((field, obj)) = part else { return Vec::new() };
    match obj.get("parameters") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("{field}.parameters[{i}]"), p))
            .collect(),
        Some(_) => {
            errors.push(error(
                MetaCode::ParameterFormat,
                format!("{field}.parameters"),
                "parameters must be an array",
            ));
            Vec::new()
        }
    }
}

fn param_type(p: &Value) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn non_empty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// How many characters a body or header parameter shows: its text, or the fallback value of a
/// currency or date.
fn check_text_value(field: &str, p: &Value, allow_rich: bool, errors: &mut Vec<FieldError>) -> usize {
    let shown = match param_type(p) {
        "text" => non_empty_str(p.get("text")),
        "currency" if allow_rich => {
            let c = p.get("currency");
            let amount_ok = c.and_then(|c| c.get("amount_1000")).is_some_and(Value::is_i64);
            let code_ok = non_empty_str(c.and_then(|c| c.get("code")))
                .is_some_and(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()));
            non_empty_str(c.and_then(|c| c.get("fallback_value"))).filter(|_| amount_ok && code_ok)
        }
        "date_time" if allow_rich => non_empty_str(p.get("date_time").and_then(|d| d.get("fallback_value"))),
        _ => {
            let allowed = if allow_rich {
                "text, currency or date_time"
            } else {
                "text"
            };
            errors.push(error(
                MetaCode::ParameterFormat,
                format!("{field}.type"),
                format!("this parameter must be of type {allowed}"),
            ));
            return 0;
        }
    };
    match shown {
        Some(s) => s.chars().count(),
        None => {
            errors.push(error(
                MetaCode::ParameterFormat,
                field,
                format!("a {} parameter needs its value", param_type(p)),
            ));
            0
        }
    }
}

/// A text slot's parameters: count (positional) or names (named), types, and the length of
/// the text once they are in.
fn check_text_slot(
    slot: &TextSlot,
    params: &[(String, &Value)],
    format: ParameterFormat,
    at: &str,
    allow_rich: bool,
    errors: &mut Vec<FieldError>,
) {
    if params.len() != slot.params.len() {
        errors.push(error(
            MetaCode::ParameterCount,
            at,
            format!("expected {} parameter(s), got {}", slot.params.len(), params.len()),
        ));
        return;
    }
    if format == ParameterFormat::Named {
        for (field, p) in params {
            let name = p.get("parameter_name").and_then(Value::as_str);
            if !name.is_some_and(|n| slot.params.iter().any(|want| want == n)) {
                errors.push(error(
                    MetaCode::ParameterCount,
                    format!("{field}.parameter_name"),
                    format!("parameter_name must be one of: {}", slot.params.join(", ")),
                ));
            }
        }
    }
    let shown: usize = params
        .iter()
        .map(|(field, p)| check_text_value(field, p, allow_rich, errors))
        .sum();
    if slot.fixed_chars + shown > slot.max_chars {
        errors.push(error(
            MetaCode::TextTooLong,
            at,
            format!(
                "the text would be {} characters; at most {}",
                slot.fixed_chars + shown,
                slot.max_chars
            ),
        ));
    }
}

fn check_media(field: &str, p: &Value, want: &str, errors: &mut Vec<FieldError>) {
    let obj = p.get(want).and_then(Value::as_object);
    let well_formed = param_type(p) == want
        && obj.is_some_and(|o| {
            let id = non_empty_str(o.get("id")).is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit()));
            let link = non_empty_str(o.get("link")).is_some_and(|l| l.starts_with("https://"));
            id != link
        });
    if !well_formed {
        errors.push(error(
            MetaCode::ParameterFormat,
            field,
            format!("the header needs an {want} parameter with exactly one of a media id or an https link"),
        ));
    }
}

fn check_location(field: &str, p: &Value, errors: &mut Vec<FieldError>) {
    let loc = p.get("location");
    let within = |f: &str, max: f64| {
        loc.and_then(|l| l.get(f))
            .and_then(Value::as_f64)
            .is_some_and(|v| v.abs() <= max)
    };
    if param_type(p) != "location" || !within("latitude", 90.0) || !within("longitude", 180.0) {
        errors.push(error(
            MetaCode::ParameterFormat,
            field,
            "the header needs a location parameter with latitude (±90) and longitude (±180)",
        ));
    }
}

fn check_header(
    slot: Option<&HeaderSlot>,
    part: Option<&(String, &Map<String, Value>)>,
    format: ParameterFormat,
    at: &str,
    errors: &mut Vec<FieldError>,
) {
    let params = parameters(part, errors);
    let field = part.map_or_else(|| at.to_owned(), |(f, _)| f.clone());
    let wants = slot.is_some_and(HeaderSlot::takes_parameter);
    if !wants {
        if !params.is_empty() {
            errors.push(error(
                MetaCode::ParameterCount,
                field,
                "the template's header takes no parameter",
            ));
        }
        return;
    }
    if params.len() != 1 {
        errors.push(error(
            MetaCode::ParameterCount,
            field,
            format!("the header takes exactly 1 parameter, got {}", params.len()),
        ));
        return;
    }
    let (pfield, p) = &params[0];
    match slot.expect("wants a parameter") {
        HeaderSlot::Text(text) => check_text_slot(text, &params, format, &field, false, errors),
        HeaderSlot::Media { media } => check_media(pfield, p, media.as_str(), errors),
        HeaderSlot::Location => check_location(pfield, p, errors),
    }
}

fn button_index(obj: &Map<String, Value>) -> Option<usize> {
    match obj.get("index")? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        _ => None,
    }
}

fn check_button_parameter(slot: &ButtonSlot, field: &str, p: &Value, errors: &mut Vec<FieldError>) {
    let (want, key) = match slot.kind {
        ButtonKind::QuickReply => ("payload", "payload"),
        ButtonKind::Url { .. } | ButtonKind::Otp => ("text", "text"),
        ButtonKind::CopyCode => ("coupon_code", "coupon_code"),
        ButtonKind::Flow => ("action", "action"),
        _ => return,
    };
    if param_type(p) != want {
        errors.push(error(
            MetaCode::ParameterFormat,
            format!("{field}.type"),
            format!("this button's parameter must be of type {want}"),
        ));
        return;
    }
    if want == "action" {
        if !p.get(key).is_some_and(Value::is_object) {
            errors.push(error(
                MetaCode::ParameterFormat,
                field,
                "a flow button's action must be an object",
            ));
        }
        return;
    }
    let Some(value) = non_empty_str(p.get(key)) else {
        errors.push(error(MetaCode::ParameterFormat, field, format!("{key} is required")));
        return;
    };
    let chars = value.chars().count();
    let limit = match slot.kind {
        ButtonKind::CopyCode => Some(MAX_COUPON_CODE_CHARS),
        ButtonKind::Url { fixed_chars, .. } => Some(MAX_URL_CHARS.saturating_sub(fixed_chars)),
        _ => None,
    };
    if let Some(max) = limit.filter(|max| chars > *max) {
        errors.push(error(
            MetaCode::TextTooLong,
            field,
            format!("{key} may have at most {max} characters"),
        ));
    }
}

fn check_buttons(slots: &[ButtonSlot], sent: &[(String, &Map<String, Value>)], at: &str, errors: &mut Vec<FieldError>) {
    let mut seen = Vec::new();
    for (field, obj) in sent {
        let Some(index) = button_index(obj) else {
            errors.push(error(
                MetaCode::ParameterFormat,
                format!("{field}.index"),
                "index must be the button's position (0, 1, …)",
            ));
            continue;
        };
        let Some(slot) = slots.iter().find(|s| s.index == index && s.sub_type().is_some()) else {
            errors.push(error(
                MetaCode::ParameterCount,
                format!("{field}.index"),
                format!("the template has no button {index} that takes a parameter"),
            ));
            continue;
        };
        if seen.contains(&index) {
            errors.push(error(
                MetaCode::ParameterCount,
                field.clone(),
                "this button is given twice",
            ));
            continue;
        }
        seen.push(index);
        let sub_type = obj.get("sub_type").and_then(Value::as_str).unwrap_or_default();
        if !sub_type.eq_ignore_ascii_case(slot.sub_type().unwrap_or_default()) {
            errors.push(error(
                MetaCode::ParameterFormat,
                format!("{field}.sub_type"),
                format!("button {index} is of sub_type {}", slot.sub_type().unwrap_or_default()),
            ));
            continue;
        }
        let params = parameters(Some(&(field.clone(), *obj)), errors);
        if params.len() != 1 {
            errors.push(error(
                MetaCode::ParameterCount,
                format!("{field}.parameters"),
                format!("a button takes exactly 1 parameter, got {}", params.len()),
            ));
            continue;
        }
        check_button_parameter(slot, &params[0].0, params[0].1, errors);
    }
    for slot in slots
        .iter()
        .filter(|s| s.requires_parameter() && !seen.contains(&s.index))
    {
        errors.push(error(
            MetaCode::ParameterCount,
            at,
            format!("button {} needs its parameter", slot.index),
        ));
    }
}

/// Header, body and buttons of the template itself or of one carousel card.
#[allow(clippy::too_many_arguments)]
fn check_parts(
    header: Option<&HeaderSlot>,
    body: &TextSlot,
    buttons: &[ButtonSlot],
    parts: &SentParts<'_>,
    format: ParameterFormat,
    at: &str,
    body_rich: bool,
    errors: &mut Vec<FieldError>,
) {
    check_header(header, parts.header.as_ref(), format, at, errors);
    let body_params = parameters(parts.body.as_ref(), errors);
    let body_field = parts.body.as_ref().map_or_else(|| at.to_owned(), |(f, _)| f.clone());
    check_text_slot(body, &body_params, format, &body_field, body_rich, errors);
    check_buttons(buttons, &parts.buttons, at, errors);
}

fn check_card(card: &CardSchema, sent: &Value, at: &str, format: ParameterFormat, errors: &mut Vec<FieldError>) {
    let components_at = format!("{at}.components");
    let parts = sent_parts(sent.get("components"), &components_at, errors);
    if parts.carousel.is_some() {
        errors.push(error(
            MetaCode::ParameterCount,
            components_at.clone(),
            "a card cannot hold a carousel",
        ));
    }
    check_parts(
        card.header.as_ref(),
        &card.body,
        &card.buttons,
        &parts,
        format,
        &components_at,
        false,
        errors,
    );
}

fn check_carousel(
    cards: &[CardSchema],
    part: Option<&(String, &Map<String, Value>)>,
    at: &str,
    format: ParameterFormat,
    errors: &mut Vec<FieldError>,
) {
    let Some((field, obj)) = part else {
        if !cards.is_empty() {
            errors.push(error(
                MetaCode::ParameterCount,
                at,
                format!("the template is a carousel of {} cards: give each card", cards.len()),
            ));
        }
        return;
    };
    if cards.is_empty() {
        errors.push(error(
            MetaCode::ParameterCount,
            field.clone(),
            "the template has no carousel",
        ));
        return;
    }
    let sent = obj
        .get("cards")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if sent.len() != cards.len() {
        errors.push(error(
            MetaCode::ParameterCount,
            format!("{field}.cards"),
            format!("expected {} cards, got {}", cards.len(), sent.len()),
        ));
        return;
    }
    for (i, card) in sent.iter().enumerate() {
        let at = format!("{field}.cards[{i}]");
        let index = card.get("card_index").and_then(Value::as_u64);
        if index != Some(i as u64) {
            errors.push(error(
                MetaCode::ParameterFormat,
                format!("{at}.card_index"),
                format!("card_index must be {i}"),
            ));
            continue;
        }
        check_card(&cards[i], card, &at, format, errors);
    }
}

/// Checks a send's `template` object against the template's schema: every failure, or `Ok`.
pub fn validate_send(
    schema: &TemplateSchema,
    format: ParameterFormat,
    template: &Value,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let at = "template.components";
    let parts = sent_parts(template.get("components"), at, &mut errors);
    check_parts(
        schema.header.as_ref(),
        &schema.body,
        &schema.buttons,
        &parts,
        format,
        at,
        true,
        &mut errors,
    );
    check_carousel(&schema.cards, parts.carousel.as_ref(), at, format, &mut errors);
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::super::schema::compile;
    use super::super::schema::tests::{carousel, named_with_media_and_copy_code, positional};
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> Value {
        json!({"type": "text", "text": s})
    }

    fn positional_send() -> Value {
        json!({"name": "order_update", "language": {"code": "en"}, "components": [
            {"type": "header", "parameters": [text("A-1")]},
            {"type": "body", "parameters": [text("Ana"),
                {"type": "currency", "currency": {"fallback_value": "€10", "code": "EUR", "amount_1000": 10000}},
                {"type": "date_time", "date_time": {"fallback_value": "Monday"}}]},
            {"type": "button", "sub_type": "url", "index": "1", "parameters": [text("A-1")]}
        ]})
    }

    fn codes(result: Result<(), Vec<FieldError>>) -> Vec<(u32, String)> {
        result
            .unwrap_err()
            .into_iter()
            .map(|e| (e.code.code(), e.field))
            .collect()
    }

    fn check(components: &Value, format: ParameterFormat, send: &Value) -> Result<(), Vec<FieldError>> {
        validate_send(&compile(components), format, send)
    }

    fn positional_with(edit: impl FnOnce(&mut Value)) -> Vec<(u32, String)> {
        let mut send = positional_send();
        edit(&mut send);
        codes(check(&positional(), ParameterFormat::Positional, &send))
    }

    #[test]
    fn a_complete_positional_send_passes() {
        assert_eq!(
            check(&positional(), ParameterFormat::Positional, &positional_send()),
            Ok(())
        );
    }

    #[test]
    fn parameter_count_132000() {
        let got = positional_with(|s| {
            s["components"][1]["parameters"].as_array_mut().unwrap().pop();
        });
        assert_eq!(got, [(132000, "template.components[1]".into())]);
        // The URL button's suffix left out.
        let got = positional_with(|s| {
            s["components"].as_array_mut().unwrap().pop();
        });
        assert_eq!(got, [(132000, "template.components".into())]);
        // No components at all: header, body and button are all missing.
        let got = codes(check(&positional(), ParameterFormat::Positional, &json!({"name": "x"})));
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(c, _)| *c == 132000));
        // A button the template does not have, and one that takes no parameter (phone).
        for index in ["7", "2"] {
            let got = positional_with(|s| s["components"][2]["index"] = json!(index));
            assert!(
                got.contains(&(132000, "template.components[2].index".into())),
                "{index}: {got:?}"
            );
        }
        // A component kind Meta does not know.
        let got = positional_with(|s| s["components"].as_array_mut().unwrap().push(json!({"type": "footer"})));
        assert_eq!(got, [(132000, "template.components[3].type".into())]);
    }

    #[test]
    fn parameter_type_132012() {
        let got = positional_with(|s| s["components"][0]["parameters"][0] = json!({"type": "currency"}));
        assert_eq!(got, [(132012, "template.components[0].parameters[0].type".into())]);
        let got = positional_with(|s| {
            s["components"][1]["parameters"][1]["currency"]["code"] = json!("euro");
        });
        assert_eq!(got, [(132012, "template.components[1].parameters[1]".into())]);
        let got = positional_with(|s| s["components"][1]["parameters"][0] = json!({"type": "text", "text": " "}));
        assert_eq!(got, [(132012, "template.components[1].parameters[0]".into())]);
        let got = positional_with(|s| s["components"][2]["sub_type"] = json!("quick_reply"));
        assert_eq!(got, [(132012, "template.components[2].sub_type".into())]);
        let got = positional_with(|s| s["components"] = json!({"not": "an array"}));
        assert_eq!(got[0], (132012, "template.components".into()));
    }

    #[test]
    fn text_too_long_132005() {
        let got = positional_with(|s| s["components"][1]["parameters"][0] = text(&"a".repeat(1000)));
        assert_eq!(got, [(132005, "template.components[1]".into())]);
        let got = positional_with(|s| s["components"][0]["parameters"][0] = text(&"h".repeat(55)));
        assert_eq!(got, [(132005, "template.components[0]".into())]);
        // Exactly at the limit is fine: 1,024 characters.
        let fixed = "Hi , your order of  ships on .".chars().count();
        let got = check(&positional(), ParameterFormat::Positional, &{
            let mut s = positional_send();
            s["components"][1]["parameters"][0] = text(&"a".repeat(1024 - fixed - "€10Monday".chars().count()));
            s
        });
        assert_eq!(got, Ok(()));
    }

    fn named_send() -> Value {
        json!({"components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://cdn.example/a.jpg"}}]},
            {"type": "body", "parameters": [
                {"type": "text", "parameter_name": "discount", "text": "15%"},
                {"type": "text", "parameter_name": "first_name", "text": "Ana"}]},
            {"type": "button", "sub_type": "copy_code", "index": 0,
             "parameters": [{"type": "coupon_code", "coupon_code": "SAVE15"}]}
        ]})
    }

    #[test]
    fn named_parameters_media_header_and_copy_code() {
        let components = named_with_media_and_copy_code();
        let named = ParameterFormat::Named;
        assert_eq!(check(&components, named, &named_send()), Ok(()));
        let mut s = named_send();
        s["components"][1]["parameters"][0]["parameter_name"] = json!("nickname");
        assert_eq!(
            codes(check(&components, named, &s)),
            [(132000, "template.components[1].parameters[0].parameter_name".into())]
        );
        for bad in [
            json!({"type": "video", "video": {"link": "https://cdn.example/a.mp4"}}),
            json!({"type": "image", "image": {"link": "http://cdn.example/a.jpg"}}),
            json!({"type": "image", "image": {"id": "123", "link": "https://cdn.example/a.jpg"}}),
            json!({"type": "image", "image": {}}),
        ] {
            let mut s = named_send();
            s["components"][0]["parameters"][0] = bad.clone();
            assert_eq!(
                codes(check(&components, named, &s)),
                [(132012, "template.components[0].parameters[0]".into())],
                "{bad}"
            );
        }
        let mut s = named_send();
        s["components"][2]["parameters"][0]["coupon_code"] = json!("SIXTEEN_CHARS_XX");
        assert_eq!(
            codes(check(&components, named, &s)),
            [(132005, "template.components[2].parameters[0]".into())]
        );
    }

    #[test]
    fn location_header() {
        let components = json!([
            {"type": "HEADER", "format": "LOCATION"},
            {"type": "BODY", "text": "We are here."}
        ]);
        let send = |loc: Value| json!({"components": [{"type": "header", "parameters": [loc]}]});
        let ok = json!({"type": "location", "location": {"latitude": 52.5, "longitude": 13.4, "name": "Shop"}});
        assert_eq!(check(&components, ParameterFormat::Positional, &send(ok)), Ok(()));
        let bad = json!({"type": "location", "location": {"latitude": 95, "longitude": 13.4}});
        assert_eq!(
            codes(check(&components, ParameterFormat::Positional, &send(bad))),
            [(132012, "template.components[0].parameters[0]".into())]
        );
        // A header parameter for a template whose header is fixed text.
        let fixed = json!([{"type": "HEADER", "format": "TEXT", "text": "Hello"}, {"type": "BODY", "text": "Hi"}]);
        assert_eq!(
            codes(check(&fixed, ParameterFormat::Positional, &send(text("x")))),
            [(132000, "template.components[0]".into())]
        );
    }

    fn card_send(i: u64) -> Value {
        json!({"card_index": i, "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"id": "998877"}}]},
            {"type": "body", "parameters": [text("3")]},
            {"type": "button", "sub_type": "url", "index": 1, "parameters": [text("p1")]}
        ]})
    }

    #[test]
    fn carousel_cards() {
        let components = carousel();
        let send = |cards: Vec<Value>| {
            json!({"components": [
                {"type": "body", "parameters": [text("you")]},
                {"type": "carousel", "cards": cards}
            ]})
        };
        let p = ParameterFormat::Positional;
        assert_eq!(check(&components, p, &send(vec![card_send(0), card_send(1)])), Ok(()));
        assert_eq!(
            codes(check(&components, p, &send(vec![card_send(0)]))),
            [(132000, "template.components[1].cards".into())]
        );
        assert_eq!(
            codes(check(&components, p, &send(vec![card_send(0), card_send(0)]))),
            [(132012, "template.components[1].cards[1].card_index".into())]
        );
        let mut card = card_send(1);
        card["components"][1]["parameters"][0] = text(&"x".repeat(200));
        assert_eq!(
            codes(check(&components, p, &send(vec![card_send(0), card]))),
            [(132005, "template.components[1].cards[1].components[1]".into())]
        );
        let no_carousel = json!({"components": [{"type": "body", "parameters": [text("you")]}]});
        assert_eq!(
            codes(check(&components, p, &no_carousel)),
            [(132000, "template.components".into())]
        );
    }

    fn record(status: &str) -> TemplateRecord {
        TemplateRecord {
            tenant_id: "t".into(),
            name: "n".into(),
            language: "en".into(),
            meta_id: "1".into(),
            status: status.into(),
            reason: None,
            category: super::super::TemplateCategory::Utility,
            quality: None,
            parameter_format: ParameterFormat::Positional,
            components: Value::Null,
            schema: None,
            last_synced_at: None,
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn status_codes_132001_132015_132016() {
        assert_eq!(check_status(Some(&record("APPROVED"))), Ok(()));
        let code = |r: Option<&TemplateRecord>| check_status(r).unwrap_err().code.code();
        assert_eq!(code(None), 132001);
        assert_eq!(code(Some(&record("PENDING"))), 132001);
        assert_eq!(code(Some(&record("REJECTED"))), 132001);
        assert_eq!(code(Some(&record("PAUSED"))), 132015);
        assert_eq!(code(Some(&record("DISABLED"))), 132016);
        assert_eq!(
            serde_json::to_value(check_status(None).unwrap_err()).unwrap(),
            json!({"code": 132001, "field": "template.name", "message": "the template does not exist in this language"})
        );
    }
}
