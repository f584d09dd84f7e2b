//! The parameter schema of a template: what a send must supply, compiled from the components
//! Meta returns (`HEADER` text or `IMAGE`/`VIDEO`/`DOCUMENT`/`LOCATION`, `BODY`, `FOOTER`,
//! `BUTTONS`, `CAROUSEL` cards). Compiling never fails: what Meta may add later (a new button
//! type) is kept as a slot that takes no parameter we check, and Meta stays the judge of it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Meta's limits on the text of a component (template components reference).
pub const MAX_BODY_CHARS: usize = 1024;
pub const MAX_HEADER_CHARS: usize = 60;
pub const MAX_FOOTER_CHARS: usize = 60;
/// A carousel card's body.
pub const MAX_CARD_BODY_CHARS: usize = 160;
/// A copy-code button's code.
pub const MAX_COUPON_CODE_CHARS: usize = 15;
/// A URL button's URL, suffix included.
pub const MAX_URL_CHARS: usize = 2000;

/// The template's parameters, component by component.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateSchema {
    #[serde(default)]
    pub header: Option<HeaderSlot>,
    #[serde(default)]
    pub body: TextSlot,
    #[serde(default)]
    pub buttons: Vec<ButtonSlot>,
    /// Carousel cards (2–10), in order.
    #[serde(default)]
    pub cards: Vec<CardSchema>,
}

/// A text with placeholders: their names in order of appearance (`"1"`, `"2"` … for
/// positional templates), and the length of the fixed text around them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TextSlot {
    pub params: Vec<String>,
    pub fixed_chars: usize,
    pub max_chars: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
    Document,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Document => "document",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeaderSlot {
    /// A text header (parameters only where `params` is not empty).
    Text(TextSlot),
    /// An image, video or document header: a send supplies the media.
    Media { media: MediaKind },
    /// A location header: a send supplies the location.
    Location,
}

impl HeaderSlot {
    /// Whether a send must give this header a parameter.
    pub fn takes_parameter(&self) -> bool {
        match self {
            HeaderSlot::Text(t) => !t.params.is_empty(),
            HeaderSlot::Media { .. } | HeaderSlot::Location => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ButtonKind {
    /// A payload may be given (optional).
    QuickReply,
    /// `dynamic`: the URL ends in `{{1}}`, and a send supplies the suffix.
    Url {
        dynamic: bool,
        fixed_chars: usize,
    },
    PhoneNumber,
    /// A send supplies the code (≤ 15 characters).
    CopyCode,
    /// An authentication template's one-time password button: a send supplies the code.
    Otp,
    /// A Flow button: a send may give an action (token, data).
    Flow,
    /// Anything else Meta has: not checked here.
    Other {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonSlot {
    /// The button's position (a send's `index`).
    pub index: usize,
    pub kind: ButtonKind,
}

impl ButtonSlot {
    /// Whether a send must supply this button's parameter.
    pub fn requires_parameter(&self) -> bool {
        matches!(
            self.kind,
            ButtonKind::Url { dynamic: true, .. } | ButtonKind::CopyCode | ButtonKind::Otp
        )
    }

    /// The `sub_type` a send names this button by (`None`: takes no parameter).
    pub fn sub_type(&self) -> Option<&'static str> {
        match self.kind {
            ButtonKind::QuickReply => Some("quick_reply"),
            ButtonKind::Url { dynamic: true, .. } | ButtonKind::Otp => Some("url"),
            ButtonKind::CopyCode => Some("copy_code"),
            ButtonKind::Flow => Some("flow"),
            ButtonKind::Url { dynamic: false, .. } | ButtonKind::PhoneNumber | ButtonKind::Other { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CardSchema {
    #[serde(default)]
    pub header: Option<HeaderSlot>,
    #[serde(default)]
    pub body: TextSlot,
    #[serde(default)]
    pub buttons: Vec<ButtonSlot>,
}

/// One `{{…}}` of a text: its inner name (trimmed) and its byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder<'a> {
    pub name: &'a str,
    pub start: usize,
    pub end: usize,
}

/// Every `{{…}}` of `text`, in order.
pub fn placeholders(text: &str) -> Vec<Placeholder<'_>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{") {
        let start = from + open;
        let Some(close) = text[start + 2..].find("}}") else {
            break;
        };
        let end = start + 2 + close + 2;
        found.push(Placeholder {
            name: text[start + 2..end - 2].trim(),
            start,
            end,
        });
        from = end;
    }
    found
}

/// The fixed characters of `text` (placeholders removed).
fn fixed_chars(text: &str, found: &[Placeholder<'_>]) -> usize {
    text.chars().count()
        - found
            .iter()
            .map(|p| text[p.start..p.end].chars().count())
            .sum::<usize>()
}

fn text_slot(text: &str, max_chars: usize) -> TextSlot {
    let found = placeholders(text);
    TextSlot {
        fixed_chars: fixed_chars(text, &found),
        params: found.iter().map(|p| p.name.to_owned()).collect(),
        max_chars,
    }
}

fn kind_of(component: &Value) -> String {
    component
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_uppercase()
}

fn text_of(v: &Value, field: &str) -> String {
    v.get(field).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn header_slot(component: &Value) -> Option<HeaderSlot> {
    let format = component
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or("TEXT")
        .to_ascii_uppercase();
    Some(match format.as_str() {
        "TEXT" => HeaderSlot::Text(text_slot(&text_of(component, "text"), MAX_HEADER_CHARS)),
        "IMAGE" => HeaderSlot::Media {
            media: MediaKind::Image,
        },
        "VIDEO" => HeaderSlot::Media {
            media: MediaKind::Video,
        },
        "DOCUMENT" => HeaderSlot::Media {
            media: MediaKind::Document,
        },
        "LOCATION" => HeaderSlot::Location,
        _ => return None,
    })
}

fn button_slots(component: &Value) -> Vec<ButtonSlot> {
    let buttons = component.get("buttons").and_then(Value::as_array);
    buttons
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, b)| {
            let kind = match kind_of(b).as_str() {
                "QUICK_REPLY" => ButtonKind::QuickReply,
                "URL" => {
                    let url = text_of(b, "url");
                    let found = placeholders(&url);
                    ButtonKind::Url {
                        dynamic: !found.is_empty(),
                        fixed_chars: fixed_chars(&url, &found),
                    }
                }
                "PHONE_NUMBER" => ButtonKind::PhoneNumber,
                "COPY_CODE" => ButtonKind::CopyCode,
                // Every OTP button (copy code, one tap, zero tap) takes the code in a send.
                "OTP" => ButtonKind::Otp,
                "FLOW" => ButtonKind::Flow,
                other => ButtonKind::Other { name: other.to_owned() },
            };
            ButtonSlot { index, kind }
        })
        .collect()
}

fn body_and_parts(components: &[Value], body_max: usize) -> (Option<HeaderSlot>, TextSlot, Vec<ButtonSlot>) {
    let mut header = None;
    let mut body = TextSlot {
        max_chars: body_max,
        ..TextSlot::default()
    };
    let mut buttons = Vec::new();
    for component in components {
        match kind_of(component).as_str() {
            "HEADER" => header = header_slot(component),
            "BODY" => body = text_slot(&text_of(component, "text"), body_max),
            "BUTTONS" => buttons = button_slots(component),
            _ => {}
        }
    }
    (header, body, buttons)
}

/// Compiles Meta's `components` array into the schema a send is checked against.
pub fn compile(components: &Value) -> TemplateSchema {
    let components = components.as_array().map(Vec::as_slice).unwrap_or_default();
    let (header, body, buttons) = body_and_parts(components, MAX_BODY_CHARS);
    let cards = components
        .iter()
        .filter(|c| kind_of(c) == "CAROUSEL")
        .flat_map(|c| c.get("cards").and_then(Value::as_array).cloned().unwrap_or_default())
        .map(|card| {
            let parts = card
                .get("components")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let (header, body, buttons) = body_and_parts(&parts, MAX_CARD_BODY_CHARS);
            CardSchema { header, body, buttons }
        })
        .collect();
    TemplateSchema {
        header,
        body,
        buttons,
        cards,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Real component shapes, as Meta's list returns them.
    pub fn positional() -> Value {
        json!([
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}", "example": {"header_text": ["A-1"]}},
            {"type": "BODY", "text": "Hi {{1}}, your order of {{2}} ships on {{3}}.",
             "example": {"body_text": [["Ana", "€10", "Monday"]]}},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [
                {"type": "QUICK_REPLY", "text": "Thanks"},
                {"type": "URL", "text": "Track", "url": "https://shop.example/track/{{1}}", "example": ["A-1"]},
                {"type": "PHONE_NUMBER", "text": "Call", "phone_number": "+15550001111"}
            ]}
        ])
    }

    pub fn named_with_media_and_copy_code() -> Value {
        json!([
            {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["4::aW..."]}},
            {"type": "BODY", "text": "Hello {{first_name}}, use the code for {{discount}} off.",
             "example": {"body_text_named_params": [
                 {"param_name": "first_name", "example": "Ana"}, {"param_name": "discount", "example": "15%"}]}},
            {"type": "BUTTONS", "buttons": [{"type": "COPY_CODE", "example": "SAVE15"}]}
        ])
    }

    pub fn carousel() -> Value {
        let card = |n: u32| {
            json!({"components": [
                {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["4::x"]}},
                {"type": "BODY", "text": format!("Card {n}: {{{{1}}}} left"), "example": {"body_text": [["3"]]}},
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "More"},
                    {"type": "URL", "text": "Buy", "url": "https://shop.example/p/{{1}}", "example": ["p1"]}]}
            ]})
        };
        json!([
            {"type": "BODY", "text": "Our picks for {{1}} this week", "example": {"body_text": [["you"]]}},
            {"type": "CAROUSEL", "cards": [card(1), card(2)]}
        ])
    }

    #[test]
    fn placeholders_in_order_with_positions() {
        let found = placeholders("a {{1}} b {{ name }} c {{2");
        assert_eq!(found.iter().map(|p| p.name).collect::<Vec<_>>(), ["1", "name"]);
        assert_eq!((found[0].start, found[0].end), (2, 7));
        assert!(placeholders("no variables").is_empty());
    }

    #[test]
    fn a_positional_template_with_text_header_and_url_button() {
        let s = compile(&positional());
        assert_eq!(
            s.header,
            Some(HeaderSlot::Text(TextSlot {
                params: vec!["1".into()],
                fixed_chars: 6,
                max_chars: 60
            }))
        );
        assert_eq!(s.body.params, ["1", "2", "3"]);
        assert_eq!(s.body.fixed_chars, "Hi , your order of  ships on .".chars().count());
        assert_eq!(s.buttons.len(), 3);
        assert_eq!(s.buttons[0].kind, ButtonKind::QuickReply);
        assert!(matches!(s.buttons[1].kind, ButtonKind::Url { dynamic: true, .. }));
        assert!(s.buttons[1].requires_parameter());
        assert_eq!(s.buttons[2].sub_type(), None);
        assert!(s.cards.is_empty());
    }

    #[test]
    fn a_named_template_with_media_header_and_copy_code() {
        let s = compile(&named_with_media_and_copy_code());
        assert_eq!(
            s.header,
            Some(HeaderSlot::Media {
                media: MediaKind::Image
            })
        );
        assert_eq!(s.body.params, ["first_name", "discount"]);
        assert_eq!(s.buttons[0].kind, ButtonKind::CopyCode);
        assert_eq!(s.buttons[0].sub_type(), Some("copy_code"));
    }

    #[test]
    fn a_carousel_compiles_its_cards() {
        let s = compile(&carousel());
        assert_eq!(s.cards.len(), 2);
        assert_eq!(s.cards[1].body.params, ["1"]);
        assert_eq!(s.cards[1].body.max_chars, MAX_CARD_BODY_CHARS);
        assert!(s.cards[0].header.as_ref().unwrap().takes_parameter());
        assert_eq!(s.cards[0].buttons[1].index, 1);
    }

    #[test]
    fn the_schema_survives_storage() {
        for components in [positional(), named_with_media_and_copy_code(), carousel()] {
            let s = compile(&components);
            let back: TemplateSchema = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
            assert_eq!(back, s);
        }
        assert_eq!(
            compile(&Value::Null),
            TemplateSchema {
                body: TextSlot {
                    max_chars: MAX_BODY_CHARS,
                    ..TextSlot::default()
                },
                ..TemplateSchema::default()
            }
        );
    }
}
