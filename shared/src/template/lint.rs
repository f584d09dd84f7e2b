//! The local lint of a new template (`POST /v1/templates`), run before Meta is called so a
//! template Meta would refuse for its shape is refused at once, field by field. The rules are
//! Meta's (template components reference, "Templates" overview): one body of at most 1,024
//! characters; at most one header (text ≤ 60 characters with at most one parameter, or media
//! or location), footer (≤ 60, no parameters) and button group (≤ 10 buttons: quick replies,
//! at most 2 URL buttons with at most one parameter at the end of the URL, 1 phone number, 1
//! copy code); parameters `{{1}}`…`{{n}}` in order without gaps, or all named in lowercase
//! snake case, never mixed and as `parameter_format` says; an example for every parameter;
//! no parameter at the very start or end of the body; carousels of 2–10 cards, each with a
//! media header, a body and buttons.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::schema::{
    MAX_BODY_CHARS, MAX_CARD_BODY_CHARS, MAX_FOOTER_CHARS, MAX_HEADER_CHARS, MAX_URL_CHARS, placeholders,
};
use super::{ParameterFormat, TemplateCategory, is_valid_name, language};

pub const MAX_BUTTONS: usize = 10;
pub const MAX_URL_BUTTONS: usize = 2;
pub const MAX_BUTTON_TEXT_CHARS: usize = 25;
pub const MAX_PHONE_CHARS: usize = 20;
pub const MIN_CARDS: usize = 2;
pub const MAX_CARDS: usize = 10;

/// One reason the template would be refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

fn lint(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> LintError {
    LintError {
        field: field.into(),
        code,
        message: message.into(),
    }
}

/// A template that passed the lint: what is stored as `PENDING` and the body Meta receives.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTemplate {
    pub name: String,
    pub language: String,
    pub category: TemplateCategory,
    pub parameter_format: ParameterFormat,
    pub components: Value,
}

impl NewTemplate {
    /// The body of `POST /{waba-id}/message_templates`.
    pub fn meta_body(&self) -> Value {
        json!({
            "name": self.name,
            "language": self.language,
            "category": self.category.as_str(),
            "parameter_format": match self.parameter_format {
                ParameterFormat::Positional => "POSITIONAL",
                ParameterFormat::Named => "NAMED",
            },
            "components": self.components,
        })
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn kind(c: &Value) -> String {
    c.get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_uppercase()
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Collects the problems of one template.
struct Linter {
    format: ParameterFormat,
    errors: Vec<LintError>,
}

impl Linter {
    fn push(&mut self, field: impl Into<String>, code: &'static str, message: impl Into<String>) {
        self.errors.push(lint(field, code, message));
    }

    /// The placeholders of a text, checked for form and numbering; returns their names.
    fn variables(&mut self, text: &str, field: &str) -> Vec<String> {
        let found = placeholders(text);
        let names: Vec<String> = found.iter().map(|p| p.name.to_owned()).collect();
        let positional = names
            .iter()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty());
        let positional = positional.count();
        let named = names.iter().filter(|n| is_named(n)).count();
        if positional + named != names.len() {
            self.push(
                field,
                "invalid_parameter",
                "parameters are {{1}}, {{2}} … or lowercase names like {{first_name}}",
            );
            return names;
        }
        if positional > 0 && named > 0 {
            self.push(
                field,
                "mixed_parameters",
                "positional and named parameters cannot be mixed",
            );
            return names;
        }
        match (self.format, positional > 0, named > 0) {
            (ParameterFormat::Named, true, _) => {
                self.push(
                    field,
                    "parameter_format_mismatch",
                    "parameter_format is NAMED: use named parameters",
                );
            }
            (ParameterFormat::Positional, _, true) => self.push(
                field,
                "parameter_format_mismatch",
                "parameter_format is POSITIONAL (the default): use {{1}}, {{2}} …",
            ),
            (ParameterFormat::Positional, true, _) => {
                let expected: Vec<String> = (1..=names.len()).map(|i| i.to_string()).collect();
                if names != expected {
                    self.push(
                        field,
                        "parameter_numbering",
                        format!(
                            "parameters must be numbered {{{{1}}}} to {{{{{}}}}} in order, without gaps",
                            names.len()
                        ),
                    );
                }
            }
            _ => {}
        }
        names
    }

    /// Positional: `example.<positional_key>` holds the values (nested once for the body);
    /// named: `example.<named_key>` lists `{param_name, example}` for each name.
    fn examples(&mut self, component: &Value, names: &[String], keys: (&str, &str), field: &str) {
        if names.is_empty() {
            return;
        }
        let example = component.get("example");
        let (positional_key, named_key) = keys;
        let complete = match self.format {
            ParameterFormat::Positional => {
                let values = example.and_then(|e| e.get(positional_key));
                let values = match values {
                    Some(Value::Array(outer)) if outer.first().is_some_and(Value::is_array) => outer[0].as_array(),
                    Some(Value::Array(flat)) => Some(flat),
                    _ => None,
                };
                values.is_some_and(|v| {
                    v.len() == names.len() && v.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty()))
                })
            }
            ParameterFormat::Named => {
                let given = example.and_then(|e| e.get(named_key)).and_then(Value::as_array);
                given.is_some_and(|given| {
                    names.iter().all(|n| {
                        given.iter().any(|g| {
                            g.get("param_name").and_then(Value::as_str) == Some(n)
                                && g.get("example").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
                        })
                    })
                })
            }
        };
        if !complete {
            self.push(
                format!("{field}.example"),
                "missing_example",
                "every parameter needs an example value for Meta's review",
            );
        }
    }

    fn text(&mut self, c: &Map<String, Value>, field: &str, max: usize, required: bool) -> Option<String> {
        match str_field(c, "text") {
            Some(t) if !t.trim().is_empty() => {
                if chars(t) > max {
                    self.push(format!("{field}.text"), "too_long", format!("at most {max} characters"));
                }
                Some(t.to_owned())
            }
            _ => {
                if required {
                    self.push(format!("{field}.text"), "missing_text", "text is required");
                }
                None
            }
        }
    }

    fn header(&mut self, component: &Value, field: &str, in_card: bool) {
        let c = component.as_object().expect("components are objects");
        let format = str_field(c, "format").unwrap_or_default().to_ascii_uppercase();
        match format.as_str() {
            "TEXT" if !in_card => {
                let Some(text) = self.text(c, field, MAX_HEADER_CHARS, true) else {
                    return;
                };
                let names = self.variables(&text, &format!("{field}.text"));
                if names.len() > 1 {
                    self.push(
                        format!("{field}.text"),
                        "too_many_parameters",
                        "a text header takes at most 1 parameter",
                    );
                }
                self.examples(component, &names, ("header_text", "header_text_named_params"), field);
            }
            "IMAGE" | "VIDEO" | "DOCUMENT" => {
                let handle = component.pointer("/example/header_handle/0").and_then(Value::as_str);
                if handle.is_none_or(|h| h.is_empty()) {
                    self.push(
                        format!("{field}.example"),
                        "missing_example",
                        "a media header needs example.header_handle (an uploaded sample)",
                    );
                }
            }
            "LOCATION" if !in_card => {}
            _ => {
                let allowed = if in_card {
                    "IMAGE or VIDEO"
                } else {
                    "TEXT, IMAGE, VIDEO, DOCUMENT or LOCATION"
                };
                self.push(
                    format!("{field}.format"),
                    "invalid_format",
                    format!("format must be {allowed}"),
                );
            }
        }
    }

    fn body(&mut self, component: &Value, field: &str, max: usize) {
        let c = component.as_object().expect("components are objects");
        let Some(text) = self.text(c, field, max, true) else {
            return;
        };
        let names = self.variables(&text, &format!("{field}.text"));
        let trimmed = text.trim();
        let found = placeholders(trimmed);
        let at_start = found.first().is_some_and(|p| p.start == 0);
        let at_end = found.last().is_some_and(|p| p.end == trimmed.len());
        if at_start || at_end {
            self.push(
                format!("{field}.text"),
                "parameter_at_edge",
                "the body cannot start or end with a parameter",
            );
        }
        self.examples(component, &names, ("body_text", "body_text_named_params"), field);
    }

    fn footer(&mut self, component: &Value, field: &str) {
        let c = component.as_object().expect("components are objects");
        if let Some(text) = self.text(c, field, MAX_FOOTER_CHARS, true)
            && !placeholders(&text).is_empty()
        {
            self.push(
                format!("{field}.text"),
                "invalid_parameter",
                "a footer takes no parameters",
            );
        }
    }

    fn url_button(&mut self, b: &Map<String, Value>, field: &str) {
        let url = str_field(b, "url").unwrap_or_default();
        if !url.starts_with("https://") && !url.starts_with("http://") || chars(url) > MAX_URL_CHARS {
            self.push(
                format!("{field}.url"),
                "invalid_url",
                format!("url must be an http(s) URL of at most {MAX_URL_CHARS} characters"),
            );
            return;
        }
        let found = placeholders(url);
        if found.len() > 1 || found.first().is_some_and(|p| p.end != url.len()) {
            self.push(
                format!("{field}.url"),
                "invalid_parameter",
                "a URL takes one parameter, at its very end",
            );
        } else if !found.is_empty() {
            let example = b.get("example").and_then(Value::as_array).and_then(|e| e.first());
            if example.and_then(Value::as_str).is_none_or(|s| s.is_empty()) {
                self.push(
                    format!("{field}.example"),
                    "missing_example",
                    "a dynamic URL needs an example",
                );
            }
        }
    }

    fn buttons(&mut self, component: &Value, field: &str) {
        let Some(list) = component
            .get("buttons")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
        else {
            self.push(
                format!("{field}.buttons"),
                "missing_buttons",
                "buttons must be a non-empty array",
            );
            return;
        };
        if list.len() > MAX_BUTTONS {
            self.push(
                format!("{field}.buttons"),
                "too_many_buttons",
                format!("at most {MAX_BUTTONS} buttons"),
            );
        }
        let mut counts = std::collections::HashMap::new();
        for (i, b) in list.iter().enumerate() {
            let at = format!("{field}.buttons[{i}]");
            let Some(obj) = b.as_object() else {
                self.push(at, "invalid_button", "a button must be an object");
                continue;
            };
            let kind = kind(b);
            *counts.entry(kind.clone()).or_insert(0usize) += 1;
            if kind != "COPY_CODE" && kind != "OTP" {
                self.text(obj, &at, MAX_BUTTON_TEXT_CHARS, true);
            }
            match kind.as_str() {
                "QUICK_REPLY" | "FLOW" | "OTP" => {}
                "URL" => self.url_button(obj, &at),
                "PHONE_NUMBER" => {
                    let phone = str_field(obj, "phone_number").unwrap_or_default();
                    if phone.is_empty() || chars(phone) > MAX_PHONE_CHARS {
                        self.push(
                            format!("{at}.phone_number"),
                            "invalid_phone",
                            "phone_number is required (at most 20 characters)",
                        );
                    }
                }
                "COPY_CODE" => {
                    let example = str_field(obj, "example").unwrap_or_default();
                    if example.is_empty() || chars(example) > super::schema::MAX_COUPON_CODE_CHARS {
                        self.push(
                            format!("{at}.example"),
                            "missing_example",
                            "a copy-code button needs an example code of at most 15 characters",
                        );
                    }
                }
                _ => self.push(
                    format!("{at}.type"),
                    "invalid_button",
                    "type must be QUICK_REPLY, URL, PHONE_NUMBER, COPY_CODE, OTP or FLOW",
                ),
            }
        }
        let count = |k: &str| counts.get(k).copied().unwrap_or(0);
        for (kind, max) in [("URL", MAX_URL_BUTTONS), ("PHONE_NUMBER", 1), ("COPY_CODE", 1)] {
            if count(kind) > max {
                self.push(
                    format!("{field}.buttons"),
                    "too_many_buttons",
                    format!("at most {max} {kind} button(s)"),
                );
            }
        }
    }

    /// The components of a template or of a carousel card.
    fn components(&mut self, list: &[Value], field: &str, in_card: bool) {
        let mut seen = std::collections::HashMap::new();
        for (i, c) in list.iter().enumerate() {
            let at = format!("{field}[{i}]");
            if !c.is_object() {
                self.push(at, "invalid_component", "a component must be an object");
                continue;
            }
            let kind = kind(c);
            let n = seen.entry(kind.clone()).or_insert(0usize);
            *n += 1;
            if *n > 1 {
                self.push(
                    format!("{at}.type"),
                    "duplicate_component",
                    format!("at most one {kind} component"),
                );
                continue;
            }
            match kind.as_str() {
                "HEADER" => self.header(c, &at, in_card),
                "BODY" => self.body(c, &at, if in_card { MAX_CARD_BODY_CHARS } else { MAX_BODY_CHARS }),
                "FOOTER" if !in_card => self.footer(c, &at),
                "BUTTONS" => self.buttons(c, &at),
                "CAROUSEL" if !in_card => self.carousel(c, &at),
                _ => self.push(
                    format!("{at}.type"),
                    "invalid_component",
                    "type must be HEADER, BODY, FOOTER, BUTTONS or CAROUSEL",
                ),
            }
        }
        if !seen.contains_key("BODY") {
            self.push(field, "missing_body", "a BODY component is required");
        }
        if in_card {
            for needed in ["HEADER", "BUTTONS"] {
                if !seen.contains_key(needed) {
                    self.push(
                        field,
                        "incomplete_card",
                        format!("every card needs a {needed} component"),
                    );
                }
            }
        }
    }

    fn carousel(&mut self, component: &Value, field: &str) {
        let cards = component
            .get("cards")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !(MIN_CARDS..=MAX_CARDS).contains(&cards.len()) {
            self.push(
                format!("{field}.cards"),
                "invalid_carousel",
                format!("a carousel has {MIN_CARDS} to {MAX_CARDS} cards"),
            );
        }
        for (i, card) in cards.iter().enumerate() {
            let at = format!("{field}.cards[{i}].components");
            match card.get("components").and_then(Value::as_array) {
                Some(parts) => self.components(parts, &at, true),
                None => self.push(at, "incomplete_card", "a card needs its components"),
            }
        }
    }
}

fn is_named(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Lints the body of `POST /v1/templates`; every problem at once, or the template to create.
pub fn lint_new_template(body: &Value) -> Result<NewTemplate, Vec<LintError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![lint("", "invalid_body", "the body must be a JSON object")]);
    };
    let mut errors = Vec::new();
    for key in obj.keys() {
        if !["name", "language", "category", "parameter_format", "components"].contains(&key.as_str()) {
            errors.push(lint(
                "",
                "unknown_field",
                "allowed fields: name, language, category, parameter_format, components",
            ));
            break;
        }
    }
    let name = str_field(obj, "name").filter(|n| is_valid_name(n));
    if name.is_none() {
        errors.push(lint(
            "name",
            "invalid_name",
            "name must be 1 to 512 lowercase letters, digits or underscores",
        ));
    }
    let language = str_field(obj, "language").and_then(language::normalize);
    if language.is_none() {
        errors.push(lint(
            "language",
            "invalid_language",
            "language must be a code like en, en_US or pt_BR",
        ));
    }
    let category = str_field(obj, "category").and_then(TemplateCategory::parse);
    if category.is_none() {
        errors.push(lint(
            "category",
            "invalid_category",
            "category must be MARKETING, UTILITY or AUTHENTICATION",
        ));
    }
    let format = match obj.get("parameter_format") {
        None | Some(Value::Null) => Some(ParameterFormat::Positional),
        Some(v) => v.as_str().and_then(ParameterFormat::parse),
    };
    if format.is_none() {
        errors.push(lint(
            "parameter_format",
            "invalid_parameter_format",
            "parameter_format must be POSITIONAL or NAMED",
        ));
    }
    let mut linter = Linter {
        format: format.unwrap_or_default(),
        errors,
    };
    match obj.get("components").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => linter.components(list, "components", false),
        _ => linter.push(
            "components",
            "missing_components",
            "components must be a non-empty array",
        ),
    }
    match (name, language, category, format) {
        (Some(name), Some(language), Some(category), Some(parameter_format)) if linter.errors.is_empty() => {
            Ok(NewTemplate {
                name: name.to_owned(),
                language,
                category,
                parameter_format,
                components: obj["components"].clone(),
            })
        }
        _ => Err(linter.errors),
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::tests::{carousel, named_with_media_and_copy_code, positional};
    use super::*;

    fn new(components: Value, format: &str) -> Value {
        json!({"name": "order_update", "language": "en_US", "category": "UTILITY",
               "parameter_format": format, "components": components})
    }

    fn problems(body: Value) -> Vec<(String, &'static str)> {
        lint_new_template(&body)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    }

    fn body(text: &str, example: Value) -> Value {
        json!([{"type": "BODY", "text": text, "example": example}])
    }

    #[test]
    fn real_shapes_pass() {
        let t = lint_new_template(&new(positional(), "POSITIONAL")).unwrap();
        assert_eq!(t.meta_body()["parameter_format"], "POSITIONAL");
        assert_eq!(t.meta_body()["category"], "UTILITY");
        lint_new_template(&new(named_with_media_and_copy_code(), "NAMED")).unwrap();
        lint_new_template(&new(carousel(), "POSITIONAL")).unwrap();
        let no_format = json!({"name": "hi", "language": "en", "category": "MARKETING",
                               "components": [{"type": "BODY", "text": "Hello there"}]});
        assert_eq!(
            lint_new_template(&no_format).unwrap().parameter_format,
            ParameterFormat::Positional
        );
    }

    #[test]
    fn numbering_mixing_and_format() {
        let ex = json!({"body_text": [["a", "b"]]});
        assert_eq!(
            problems(new(body("Hi {{1}} and {{3}}.", ex.clone()), "POSITIONAL")),
            [("components[0].text".into(), "parameter_numbering")]
        );
        assert_eq!(
            problems(new(body("Hi {{2}} and {{1}}.", ex.clone()), "POSITIONAL")),
            [("components[0].text".into(), "parameter_numbering")]
        );
        assert_eq!(
            problems(new(body("Hi {{1}} and {{name}}.", ex.clone()), "POSITIONAL")),
            [("components[0].text".into(), "mixed_parameters")]
        );
        assert_eq!(
            problems(new(body("Hi {{1}} and {{2}}.", ex.clone()), "NAMED")),
            [
                ("components[0].text".into(), "parameter_format_mismatch"),
                ("components[0].example".into(), "missing_example")
            ]
        );
        assert_eq!(
            problems(new(body("Hi {{First Name}}.", ex), "NAMED")),
            [
                ("components[0].text".into(), "invalid_parameter"),
                ("components[0].example".into(), "missing_example")
            ]
        );
    }

    #[test]
    fn examples_edges_and_lengths() {
        assert_eq!(
            problems(new(
                body("Hi {{1}} and {{2}}.", json!({"body_text": [["a"]]})),
                "POSITIONAL"
            )),
            [("components[0].example".into(), "missing_example")]
        );
        assert_eq!(
            problems(new(json!([{"type": "BODY", "text": "Hi {{name}}."}]), "NAMED")),
            [("components[0].example".into(), "missing_example")]
        );
        assert_eq!(
            problems(new(body("{{1}}, hello", json!({"body_text": [["a"]]})), "POSITIONAL")),
            [("components[0].text".into(), "parameter_at_edge")]
        );
        assert_eq!(
            problems(new(body("Hello {{1}} ", json!({"body_text": [["a"]]})), "POSITIONAL")),
            [("components[0].text".into(), "parameter_at_edge")]
        );
        assert_eq!(
            problems(new(json!([{"type": "BODY", "text": "x".repeat(1025)}]), "POSITIONAL")),
            [("components[0].text".into(), "too_long")]
        );
        let header = json!([{"type": "HEADER", "format": "TEXT", "text": "{{1}} {{2}}", "example": {"header_text": ["a", "b"]}},
                            {"type": "BODY", "text": "Hi"}]);
        assert_eq!(
            problems(new(header, "POSITIONAL")),
            [("components[0].text".into(), "too_many_parameters")]
        );
        let media = json!([{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "Hi"}]);
        assert_eq!(
            problems(new(media, "POSITIONAL")),
            [("components[0].example".into(), "missing_example")]
        );
        let footer = json!([{"type": "BODY", "text": "Hi"}, {"type": "FOOTER", "text": "Bye {{1}}"}]);
        assert_eq!(
            problems(new(footer, "POSITIONAL")),
            [("components[1].text".into(), "invalid_parameter")]
        );
    }

    #[test]
    fn button_rules() {
        let with_buttons = |buttons: Value| {
            new(
                json!([{"type": "BODY", "text": "Hi"}, {"type": "BUTTONS", "buttons": buttons}]),
                "POSITIONAL",
            )
        };
        let url = |u: &str| json!({"type": "URL", "text": "Go", "url": u, "example": ["x"]});
        assert_eq!(
            problems(with_buttons(json!([url("https://a.example/{{1}}/x")]))),
            [("components[1].buttons[0].url".into(), "invalid_parameter")]
        );
        assert_eq!(
            problems(with_buttons(json!([
                url("https://a/{{1}}"),
                url("https://b/{{1}}"),
                url("https://c/{{1}}")
            ]))),
            [("components[1].buttons".into(), "too_many_buttons")]
        );
        let many: Vec<Value> = (0..11).map(|_| json!({"type": "QUICK_REPLY", "text": "ok"})).collect();
        assert_eq!(
            problems(with_buttons(json!(many))),
            [("components[1].buttons".into(), "too_many_buttons")]
        );
        assert_eq!(
            problems(with_buttons(
                json!([{"type": "URL", "text": "Go", "url": "https://a/{{1}}"}])
            )),
            [("components[1].buttons[0].example".into(), "missing_example")]
        );
        assert_eq!(
            problems(with_buttons(json!([{"type": "QUICK_REPLY", "text": "x".repeat(26)}]))),
            [("components[1].buttons[0].text".into(), "too_long")]
        );
        assert_eq!(
            problems(with_buttons(
                json!([{"type": "COPY_CODE", "example": "WAY_TOO_LONG_A_CODE"}])
            )),
            [("components[1].buttons[0].example".into(), "missing_example")]
        );
        assert_eq!(
            problems(with_buttons(json!([{"type": "PHONE_NUMBER", "text": "Call"}]))),
            [("components[1].buttons[0].phone_number".into(), "invalid_phone")]
        );
    }

    #[test]
    fn carousel_and_top_level_rules() {
        let mut one_card = carousel();
        one_card[1]["cards"].as_array_mut().unwrap().pop();
        assert_eq!(
            problems(new(one_card, "POSITIONAL")),
            [("components[1].cards".into(), "invalid_carousel")]
        );
        let mut headless = carousel();
        headless[1]["cards"][0]["components"].as_array_mut().unwrap().remove(0);
        assert_eq!(
            problems(new(headless, "POSITIONAL")),
            [("components[1].cards[0].components".into(), "incomplete_card")]
        );
        let bad = json!({"name": "Bad-Name", "language": "english", "category": "PROMO", "parameter_format": "X",
                         "components": []});
        let codes: Vec<&str> = problems(bad).into_iter().map(|(_, c)| c).collect();
        assert_eq!(
            codes,
            [
                "invalid_name",
                "invalid_language",
                "invalid_category",
                "invalid_parameter_format",
                "missing_components"
            ]
        );
        assert_eq!(
            problems(new(json!([{"type": "FOOTER", "text": "x"}]), "POSITIONAL")),
            [("components".into(), "missing_body")]
        );
        assert_eq!(
            problems(new(
                json!([{"type": "BODY", "text": "a"}, {"type": "BODY", "text": "b"}]),
                "POSITIONAL"
            )),
            [("components[1].type".into(), "duplicate_component")]
        );
    }
}
