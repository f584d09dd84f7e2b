//! Meta's webhook body as typed values.
//!
//! The envelope (`object`, `entry[]`, `changes[]`) is read strictly: without it nothing can be
//! routed. Below a change everything is read leniently and item by item, so one message we cannot
//! read never costs its neighbours: [`MessagesValue::inbound_messages`] and
//! [`MessagesValue::status_updates`] give one `Result` per item, and unknown message types and
//! statuses are kept, never refused. Ids may arrive as JSON numbers in hand-made payloads; they
//! are read as their decimal text.
//!
//! Errors name fields, never values: bodies and phone numbers are personal data and errors end
//! up in logs.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// `object` of every WhatsApp Business Account webhook.
pub const WHATSAPP_OBJECT: &str = "whatsapp_business_account";
/// `field` of the changes that carry messages, statuses and their errors.
pub const MESSAGES_FIELD: &str = "messages";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON. The text is serde's syntax error, which names a position, never content.
    #[error("webhook body is not valid JSON: {0}")]
    Json(String),
    #[error("webhook object is not whatsapp_business_account")]
    WrongObject,
    #[error("{item} is not a JSON object")]
    NotAnObject { item: &'static str },
    #[error("{item} has no {field}")]
    Missing { item: &'static str, field: &'static str },
    #[error("{item} has an invalid {field}: expected {expected}")]
    Invalid {
        item: &'static str,
        field: &'static str,
        expected: &'static str,
    },
}

impl PayloadError {
    fn json(err: &serde_json::Error) -> Self {
        // Parsing into a `Value` only fails on syntax; a data error could quote the body, so its
        // text is never kept.
        match err.classify() {
            serde_json::error::Category::Data => PayloadError::Json("unexpected data".into()),
            _ => PayloadError::Json(err.to_string()),
        }
    }
}

/// Parses a webhook body (already signature-checked) down to its changes.
pub fn parse_payload(raw: &[u8]) -> Result<WebhookPayload, PayloadError> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| PayloadError::json(&e))?;
    WebhookPayload::from_json(&value)
}

/// One delivery: any number of entries (one per WhatsApp Business Account), each with changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookPayload {
    pub object: String,
    pub entry: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The WhatsApp Business Account id.
    pub id: String,
    /// When Meta triggered the webhook (epoch seconds; account-level changes such as template
    /// status updates carry it).
    pub time: Option<i64>,
    pub changes: Vec<Change>,
}

/// One change; `value` stays raw so fields we do not handle can still be recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub field: String,
    pub value: Value,
}

impl WebhookPayload {
    pub fn from_json(value: &Value) -> Result<Self, PayloadError> {
        // Checked first: a Page or Instagram delivery is not ours, whatever its shape.
        if value.get("object").and_then(Value::as_str) != Some(WHATSAPP_OBJECT) {
            return Err(PayloadError::WrongObject);
        }
        let fields = Fields::of(value, "payload")?;
        let entry = fields
            .array("entry")?
            .iter()
            .map(Entry::from_json)
            .collect::<Result<_, _>>()?;
        Ok(WebhookPayload {
            object: WHATSAPP_OBJECT.to_owned(),
            entry,
        })
    }

    /// Every change with the entry it belongs to, in delivery order.
    pub fn changes(&self) -> impl Iterator<Item = (&Entry, &Change)> {
        self.entry
            .iter()
            .flat_map(|entry| entry.changes.iter().map(move |change| (entry, change)))
    }
}

impl Entry {
    fn from_json(value: &Value) -> Result<Self, PayloadError> {
        let fields = Fields::of(value, "entry")?;
        let changes = fields
            .array("changes")?
            .iter()
            .map(Change::from_json)
            .collect::<Result<_, _>>()?;
        Ok(Entry {
            id: fields.required("id")?,
            time: fields.raw("time").as_i64(),
            changes,
        })
    }
}

impl Change {
    fn from_json(value: &Value) -> Result<Self, PayloadError> {
        let fields = Fields::of(value, "change")?;
        Ok(Change {
            field: fields.required("field")?,
            value: fields.raw("value"),
        })
    }

    /// The typed value of a `messages` change; `None` for every other field
    /// (`account_update`, `message_template_status_update`, ...).
    pub fn messages_value(&self) -> Option<Result<MessagesValue, PayloadError>> {
        (self.field == MESSAGES_FIELD).then(|| MessagesValue::from_json(&self.value))
    }
}

/// The value of a `messages` change. Messages and statuses stay raw here so that each is
/// parsed, and can fail, on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessagesValue {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    pub metadata: Metadata,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<WaContact>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Value>,
    /// Errors about the account or app rather than one message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<GraphError>,
}

/// The business number a change is about: `phone_number_id` finds the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_phone_number: Option<String>,
    pub phone_number_id: String,
}

/// A WhatsApp user the change is about. Either id may be missing: users with a username may
/// show only their business-scoped `user_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaContact {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    /// Business-scoped user id (`US.1234...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl MessagesValue {
    pub fn from_json(value: &Value) -> Result<Self, PayloadError> {
        let fields = Fields::of(value, "messages value")?;
        let metadata = fields.object("metadata")?;
        Ok(MessagesValue {
            messaging_product: fields.string("messaging_product"),
            metadata: Metadata {
                display_phone_number: metadata.string("display_phone_number"),
                phone_number_id: metadata.required("phone_number_id")?,
            },
            // Contacts only add names; one we cannot read is skipped rather than costing the change.
            contacts: fields
                .lenient_array("contacts")
                .filter_map(WaContact::from_json)
                .collect(),
            messages: fields.array("messages")?.to_vec(),
            statuses: fields.array("statuses")?.to_vec(),
            errors: fields.graph_errors("errors"),
        })
    }

    /// Each inbound message, parsed on its own.
    pub fn inbound_messages(&self) -> Vec<Result<InboundMessage, PayloadError>> {
        self.messages.iter().map(InboundMessage::from_json).collect()
    }

    /// Each delivery receipt, parsed on its own.
    pub fn status_updates(&self) -> Vec<Result<StatusUpdate, PayloadError>> {
        self.statuses.iter().map(StatusUpdate::from_json).collect()
    }

    /// The contact entry describing the sender of `message`, matched on `wa_id` or `user_id`.
    pub fn contact_for(&self, message: &InboundMessage) -> Option<&WaContact> {
        self.contacts.iter().find(|c| {
            (c.wa_id.is_some() && c.wa_id == message.from) || (c.user_id.is_some() && c.user_id == message.from_user_id)
        })
    }
}

impl WaContact {
    fn from_json(value: &Value) -> Option<Self> {
        let fields = Fields::of(value, "contact").ok()?;
        Some(WaContact {
            wa_id: fields.string("wa_id"),
            user_id: fields.string("user_id"),
            profile: fields
                .object("profile")
                .ok()
                .map(|p| Profile { name: p.string("name") }),
        })
    }
}

/// An error object as the Graph API shapes it, in statuses, messages or change values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphError {
    /// 0 when Meta sent none.
    pub code: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_data: Option<ErrorData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl GraphError {
    pub fn from_json(value: &Value) -> Result<Self, PayloadError> {
        let fields = Fields::of(value, "error")?;
        let code = match fields.get("code") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        Ok(GraphError {
            code: code.unwrap_or(0),
            title: fields.string("title"),
            message: fields.string("message"),
            error_data: fields.object("error_data").ok().map(|d| ErrorData {
                details: d.string("details"),
            }),
            href: fields.string("href"),
        })
    }

    /// `error_data.details`, Meta's most specific explanation.
    pub fn details(&self) -> Option<&str> {
        self.error_data.as_ref()?.details.as_deref()
    }
}

/// A message a WhatsApp user sent to the business.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// The wamid: the idempotency key.
    pub id: String,
    /// The sender's phone number (wa id); absent when only a business-scoped user id is shared.
    pub from: Option<String>,
    pub from_user_id: Option<String>,
    /// Unix seconds.
    pub timestamp: i64,
    /// Set on replies, forwards and product enquiries.
    pub context: Option<Context>,
    /// Set when the message came from a click-to-WhatsApp ad.
    pub referral: Option<Value>,
    pub errors: Vec<GraphError>,
    pub content: MessageContent,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub from: Option<String>,
    /// The wamid replied to.
    pub id: Option<String>,
    pub forwarded: bool,
    pub frequently_forwarded: bool,
    pub referred_product: Option<Value>,
}

/// What a message carries, chosen by its `type` from the object under the key of that name.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageContent {
    Text {
        body: String,
    },
    Image(Media),
    Video(Media),
    Audio(Media),
    Document(Media),
    Sticker(Media),
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
        url: Option<String>,
    },
    /// Shared contact cards, as sent.
    Contacts(Vec<Value>),
    Interactive(InteractiveReply),
    /// A quick-reply button of a template.
    Button {
        payload: Option<String>,
        text: Option<String>,
    },
    Reaction {
        /// The wamid reacted to.
        message_id: String,
        /// `None` when the user removed their reaction.
        emoji: Option<String>,
    },
    Order(Value),
    System(Value),
    Unsupported(Value),
    /// A type this code does not know yet; `raw` is the whole message, since we cannot know
    /// where such a type keeps its content.
    Unknown {
        type_name: String,
        raw: Value,
    },
}

/// Media as announced in the webhook; the bytes are fetched from the Graph API by `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub id: String,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub caption: Option<String>,
    pub filename: Option<String>,
    /// Audio recorded as a voice note.
    pub voice: Option<bool>,
    /// Animated sticker.
    pub animated: Option<bool>,
    /// Short-lived download URL some payloads include.
    pub url: Option<String>,
}

/// The reply to an interactive message.
#[derive(Debug, Clone, PartialEq)]
pub enum InteractiveReply {
    ButtonReply {
        id: String,
        title: String,
    },
    ListReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// A WhatsApp Flow completed; `response_json` is the flow's answer, a JSON document as text.
    NfmReply {
        name: Option<String>,
        body: Option<String>,
        response_json: String,
    },
    /// Any other interactive type, as the whole `interactive` object.
    Other(Value),
}

impl InboundMessage {
    /// Reads one message. Only a missing `id` or `type`, a bad `timestamp`, or a known type
    /// without its required content is an error.
    pub fn from_json(value: &Value) -> Result<Self, PayloadError> {
        let fields = Fields::of(value, "message")?;
        let id = fields.required("id")?;
        let type_name = fields.required("type")?;
        Ok(InboundMessage {
            id,
            from: fields.string("from"),
            from_user_id: fields.string("from_user_id"),
            timestamp: fields.timestamp()?,
            context: fields.object("context").ok().map(|c| Context {
                from: c.string("from"),
                id: c.string("id"),
                forwarded: c.flag("forwarded").unwrap_or(false),
                frequently_forwarded: c.flag("frequently_forwarded").unwrap_or(false),
                referred_product: c.opt_raw("referred_product"),
            }),
            referral: fields.opt_raw("referral"),
            errors: fields.graph_errors("errors"),
            content: MessageContent::from_message(&fields, &type_name, value)?,
        })
    }

    pub fn type_name(&self) -> &str {
        self.content.type_name()
    }
}

impl MessageContent {
    fn from_message(message: &Fields<'_>, type_name: &str, raw: &Value) -> Result<Self, PayloadError> {
        let media = |key: &'static str| message.object(key).and_then(|f| Media::from_json(&f));
        Ok(match type_name {
            "text" => MessageContent::Text {
                body: message.object("text")?.required("body")?,
            },
            "image" => MessageContent::Image(media("image")?),
            "video" => MessageContent::Video(media("video")?),
            "audio" => MessageContent::Audio(media("audio")?),
            "document" => MessageContent::Document(media("document")?),
            "sticker" => MessageContent::Sticker(media("sticker")?),
            "location" => {
                let location = message.object("location")?;
                MessageContent::Location {
                    latitude: location.number("latitude")?,
                    longitude: location.number("longitude")?,
                    name: location.string("name"),
                    address: location.string("address"),
                    url: location.string("url"),
                }
            }
            "contacts" => MessageContent::Contacts(message.array("contacts")?.to_vec()),
            "interactive" => MessageContent::Interactive(InteractiveReply::from_json(&message.object("interactive")?)?),
            "button" => {
                let button = message.object("button")?;
                MessageContent::Button {
                    payload: button.string("payload"),
                    text: button.string("text"),
                }
            }
            "reaction" => {
                let reaction = message.object("reaction")?;
                MessageContent::Reaction {
                    message_id: reaction.required("message_id")?,
                    emoji: reaction.string("emoji"),
                }
            }
            "order" => MessageContent::Order(message.raw("order")),
            "system" => MessageContent::System(message.raw("system")),
            "unsupported" => MessageContent::Unsupported(message.raw("unsupported")),
            other => MessageContent::Unknown {
                type_name: other.to_owned(),
                raw: raw.clone(),
            },
        })
    }

    /// Meta's `type` for this content.
    pub fn type_name(&self) -> &str {
        match self {
            MessageContent::Text { .. } => "text",
            MessageContent::Image(_) => "image",
            MessageContent::Video(_) => "video",
            MessageContent::Audio(_) => "audio",
            MessageContent::Document(_) => "document",
            MessageContent::Sticker(_) => "sticker",
            MessageContent::Location { .. } => "location",
            MessageContent::Contacts(_) => "contacts",
            MessageContent::Interactive(_) => "interactive",
            MessageContent::Button { .. } => "button",
            MessageContent::Reaction { .. } => "reaction",
            MessageContent::Order(_) => "order",
            MessageContent::System(_) => "system",
            MessageContent::Unsupported(_) => "unsupported",
            MessageContent::Unknown { type_name, .. } => type_name,
        }
    }

    /// The media to fetch, for image, video, audio, document and sticker messages.
    pub fn media(&self) -> Option<&Media> {
        match self {
            MessageContent::Image(m)
            | MessageContent::Video(m)
            | MessageContent::Audio(m)
            | MessageContent::Document(m)
            | MessageContent::Sticker(m) => Some(m),
            _ => None,
        }
    }

    /// Text a user typed or tapped, to look for consent keywords in: a text body or the label
    /// of a template's quick-reply button.
    pub fn text_for_keywords(&self) -> Option<&str> {
        match self {
            MessageContent::Text { body } => Some(body),
            MessageContent::Button { text, .. } => text.as_deref(),
            _ => None,
        }
    }
}

impl Media {
    fn from_json(fields: &Fields<'_>) -> Result<Self, PayloadError> {
        Ok(Media {
            id: fields.required("id")?,
            mime_type: fields.string("mime_type"),
            sha256: fields.string("sha256"),
            caption: fields.string("caption"),
            filename: fields.string("filename"),
            voice: fields.flag("voice"),
            animated: fields.flag("animated"),
            url: fields.string("url"),
        })
    }
}

impl InteractiveReply {
    fn from_json(interactive: &Fields<'_>) -> Result<Self, PayloadError> {
        Ok(match interactive.string("type").as_deref() {
            Some("button_reply") => {
                let reply = interactive.object("button_reply")?;
                InteractiveReply::ButtonReply {
                    id: reply.required("id")?,
                    title: reply.required("title")?,
                }
            }
            Some("list_reply") => {
                let reply = interactive.object("list_reply")?;
                InteractiveReply::ListReply {
                    id: reply.required("id")?,
                    title: reply.required("title")?,
                    description: reply.string("description"),
                }
            }
            Some("nfm_reply") => {
                let reply = interactive.object("nfm_reply")?;
                // Meta sends the flow's answer as JSON text; an object is taken as its text too.
                let response_json = match reply.get("response_json") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => return Err(invalid("nfm_reply", "response_json", "JSON text")),
                    None => return Err(missing("nfm_reply", "response_json")),
                };
                InteractiveReply::NfmReply {
                    name: reply.string("name"),
                    body: reply.string("body"),
                    response_json,
                }
            }
            _ => InteractiveReply::Other(Value::Object(interactive.map.clone())),
        })
    }
}

/// A delivery receipt for a message the business sent.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The wamid of the outbound message.
    pub id: String,
    pub status: DeliveryStatus,
    /// Unix seconds.
    pub timestamp: i64,
    pub recipient_id: Option<String>,
    pub recipient_user_id: Option<String>,
    pub conversation: Option<Value>,
    pub pricing: Option<Value>,
    pub errors: Vec<GraphError>,
    /// Echo of the tracking data given when sending.
    pub biz_opaque_callback_data: Option<String>,
}

impl StatusUpdate {
    pub fn from_json(value: &Value) -> Result<Self, PayloadError> {
        let fields = Fields::of(value, "status")?;
        Ok(StatusUpdate {
            id: fields.required("id")?,
            status: DeliveryStatus::from(fields.required("status")?.as_str()),
            timestamp: fields.timestamp()?,
            recipient_id: fields.string("recipient_id"),
            recipient_user_id: fields.string("recipient_user_id"),
            conversation: fields.opt_raw("conversation"),
            pricing: fields.opt_raw("pricing"),
            errors: fields.graph_errors("errors"),
            biz_opaque_callback_data: fields.string("biz_opaque_callback_data"),
        })
    }
}

/// `statuses[].status` as Meta sends it; values this code does not know are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    /// A voice message was played.
    Played,
    Failed,
    Deleted,
    Warning,
    Unknown(String),
}

impl DeliveryStatus {
    pub fn as_str(&self) -> &str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Played => "played",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Deleted => "deleted",
            DeliveryStatus::Warning => "warning",
            DeliveryStatus::Unknown(other) => other,
        }
    }
}

impl From<&str> for DeliveryStatus {
    fn from(s: &str) -> Self {
        match s {
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "read" => DeliveryStatus::Read,
            "played" => DeliveryStatus::Played,
            "failed" => DeliveryStatus::Failed,
            "deleted" => DeliveryStatus::Deleted,
            "warning" => DeliveryStatus::Warning,
            other => DeliveryStatus::Unknown(other.to_owned()),
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DeliveryStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeliveryStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(DeliveryStatus::from(String::deserialize(deserializer)?.as_str()))
    }
}

/// Serde support with the same rules as `from_json`, for callers that embed these types.
macro_rules! deserialize_with_from_json {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = Value::deserialize(deserializer)?;
                <$ty>::from_json(&value).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

deserialize_with_from_json!(WebhookPayload, MessagesValue, InboundMessage, StatusUpdate, GraphError);

fn missing(item: &'static str, field: &'static str) -> PayloadError {
    PayloadError::Missing { item, field }
}

fn invalid(item: &'static str, field: &'static str, expected: &'static str) -> PayloadError {
    PayloadError::Invalid { item, field, expected }
}

/// A JSON object being read, with the name its errors use.
#[derive(Clone, Copy)]
struct Fields<'a> {
    map: &'a Map<String, Value>,
    item: &'static str,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, item: &'static str) -> Result<Self, PayloadError> {
        match value {
            Value::Object(map) => Ok(Fields { map, item }),
            _ => Err(PayloadError::NotAnObject { item }),
        }
    }

    /// A present, non-null value.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A non-empty string, or a number as its decimal text; anything else reads as absent.
    fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn required(&self, key: &'static str) -> Result<String, PayloadError> {
        match self.get(key) {
            None => Err(missing(self.item, key)),
            Some(_) => self
                .string(key)
                .ok_or_else(|| invalid(self.item, key, "a non-empty string")),
        }
    }

    fn flag(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// A finite number; numeric text is accepted too.
    fn number(&self, key: &'static str) -> Result<f64, PayloadError> {
        let n = match self.get(key).ok_or_else(|| missing(self.item, key))? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        n.filter(|n| n.is_finite())
            .ok_or_else(|| invalid(self.item, key, "a number"))
    }

    /// `timestamp`: Meta sends unix seconds as a string; a JSON integer is accepted too.
    fn timestamp(&self) -> Result<i64, PayloadError> {
        let seconds = match self.get("timestamp").ok_or_else(|| missing(self.item, "timestamp"))? {
            Value::String(s) => s.trim().parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        };
        seconds.ok_or_else(|| invalid(self.item, "timestamp", "unix seconds"))
    }

    /// A nested object, required.
    fn object(&self, key: &'static str) -> Result<Fields<'a>, PayloadError> {
        match self.get(key) {
            None => Err(missing(self.item, key)),
            Some(value) => Fields::of(value, key).map_err(|_| invalid(self.item, key, "an object")),
        }
    }

    /// The value under `key`, `Null` when absent.
    fn raw(&self, key: &str) -> Value {
        self.opt_raw(key).unwrap_or(Value::Null)
    }

    fn opt_raw(&self, key: &str) -> Option<Value> {
        self.get(key).cloned()
    }

    /// An array; absent or null reads as empty.
    fn array(&self, key: &'static str) -> Result<&'a [Value], PayloadError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(invalid(self.item, key, "an array")),
        }
    }

    /// The items of an array, or none when `key` holds anything else.
    fn lenient_array(&self, key: &'static str) -> std::slice::Iter<'a, Value> {
        self.array(key).unwrap_or_default().iter()
    }

    /// Error objects; one that is not an object is skipped.
    fn graph_errors(&self, key: &'static str) -> Vec<GraphError> {
        self.lenient_array(key)
            .filter_map(|e| GraphError::from_json(e).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks")
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The one `messages` value of a single-change fixture.
    fn value_of(name: &str) -> MessagesValue {
        let payload = parse_payload(&fixture(name)).unwrap();
        assert_eq!(payload.entry.len(), 1, "{name}");
        assert_eq!(payload.entry[0].changes.len(), 1, "{name}");
        let value = payload.entry[0].changes[0]
            .messages_value()
            .expect("a messages change")
            .unwrap();
        assert_eq!(value.metadata.phone_number_id, "100000000000001");
        assert_eq!(value.metadata.display_phone_number.as_deref(), Some("15550000000"));
        assert_eq!(value.messaging_product.as_deref(), Some("whatsapp"));
        value
    }

    /// The one message of a single-message fixture.
    fn message_of(name: &str) -> InboundMessage {
        let mut messages = value_of(name).inbound_messages();
        assert_eq!(messages.len(), 1, "{name}");
        messages.remove(0).unwrap()
    }

    fn status_of(name: &str) -> StatusUpdate {
        let mut statuses = value_of(name).status_updates();
        assert_eq!(statuses.len(), 1, "{name}");
        statuses.remove(0).unwrap()
    }

    const SHA: &str = "c1a6a9cfd2b0f4f1b7a1e5b96bba8b1d6f2f3c4e5a6b7c8d9e0f1a2b3c4d5e6f";

    #[test]
    fn every_fixture_parses_item_by_item() {
        let mut seen = 0;
        for file in std::fs::read_dir(fixture_dir()).unwrap() {
            let path = file.unwrap().path();
            let payload = parse_payload(&std::fs::read(&path).unwrap()).unwrap();
            for (_, change) in payload.changes() {
                if let Some(value) = change.messages_value() {
                    let value = value.unwrap_or_else(|e| panic!("{path:?}: {e}"));
                    assert!(value.inbound_messages().iter().all(Result::is_ok), "{path:?}");
                    assert!(value.status_updates().iter().all(Result::is_ok), "{path:?}");
                }
            }
            seen += 1;
        }
        assert!(seen >= 27, "{seen} fixtures");
    }

    #[test]
    fn text() {
        let value = value_of("inbound_text.json");
        let contact = &value.contacts[0];
        assert_eq!(contact.wa_id.as_deref(), Some("15550001111"));
        assert_eq!(contact.profile.as_ref().unwrap().name.as_deref(), Some("Alex Example"));
        let msg = value.inbound_messages().remove(0).unwrap();
        assert_eq!(value.contact_for(&msg), Some(contact));
        assert!(msg.id.starts_with("wamid."));
        assert_eq!(msg.from.as_deref(), Some("15550001111"));
        assert_eq!(msg.from_user_id, None);
        assert_eq!(msg.timestamp, 1_767_225_600);
        assert_eq!(msg.context, None);
        assert_eq!(msg.referral, None);
        assert!(msg.errors.is_empty());
        assert_eq!(msg.type_name(), "text");
        assert_eq!(
            msg.content,
            MessageContent::Text {
                body: "Hi, is the blue jacket still available?".into()
            }
        );
        assert_eq!(
            msg.content.text_for_keywords(),
            Some("Hi, is the blue jacket still available?")
        );
        assert_eq!(msg.content.media(), None);
    }

    #[test]
    fn product_enquiry_context() {
        let msg = message_of("inbound_text_product_enquiry.json");
        let context = msg.context.unwrap();
        assert_eq!(context.from.as_deref(), Some("15550000000"));
        assert!(context.id.unwrap().starts_with("wamid."));
        assert!(!context.forwarded && !context.frequently_forwarded);
        assert_eq!(
            context.referred_product.unwrap()["product_retailer_id"],
            "SKU-JACKET-BLUE"
        );
    }

    #[test]
    fn image() {
        let msg = message_of("inbound_image.json");
        let MessageContent::Image(media) = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(media.id, "1000000000000101");
        assert_eq!(media.mime_type.as_deref(), Some("image/jpeg"));
        assert_eq!(media.sha256.as_deref(), Some(SHA));
        assert_eq!(media.caption.as_deref(), Some("This one"));
        assert!(media.url.as_deref().unwrap().starts_with("https://"));
        assert_eq!(
            (media.voice, media.animated, media.filename.as_deref()),
            (None, None, None)
        );
        assert_eq!(msg.content.media(), Some(media));
        assert_eq!(msg.content.text_for_keywords(), None);
    }

    #[test]
    fn voice_audio() {
        let msg = message_of("inbound_audio_voice.json");
        let MessageContent::Audio(media) = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(media.id, "1000000000000102");
        assert_eq!(media.mime_type.as_deref(), Some("audio/ogg; codecs=opus"));
        assert_eq!(media.voice, Some(true));
        assert_eq!(msg.type_name(), "audio");
    }

    #[test]
    fn forwarded_video() {
        let msg = message_of("inbound_video.json");
        let MessageContent::Video(media) = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(media.id, "1000000000000103");
        assert_eq!(media.caption.as_deref(), Some("Unboxing"));
        let context = msg.context.unwrap();
        assert!(context.forwarded && context.frequently_forwarded);
        assert_eq!(context.id, None);
    }

    #[test]
    fn document() {
        let msg = message_of("inbound_document.json");
        let MessageContent::Document(media) = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(media.filename.as_deref(), Some("order-form-0001.pdf"));
        assert_eq!(media.mime_type.as_deref(), Some("application/pdf"));
        assert_eq!(media.caption.as_deref(), Some("Signed form"));
    }

    #[test]
    fn sticker() {
        let msg = message_of("inbound_sticker.json");
        let MessageContent::Sticker(media) = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(media.mime_type.as_deref(), Some("image/webp"));
        assert_eq!(media.animated, Some(false));
        assert_eq!(msg.type_name(), "sticker");
    }

    #[test]
    fn location() {
        let msg = message_of("inbound_location.json");
        assert_eq!(
            msg.content,
            MessageContent::Location {
                latitude: 37.4847,
                longitude: -122.1477,
                name: Some("Example Cafe".into()),
                address: Some("1 Example Way, Menlo Park, CA 94025".into()),
                url: Some("https://example.com/cafe".into()),
            }
        );
    }

    #[test]
    fn contacts() {
        let msg = message_of("inbound_contacts.json");
        let MessageContent::Contacts(cards) = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(cards.len(), 1);
        assert_eq!(cards[0]["name"]["formatted_name"], "Sam Sample");
        assert_eq!(cards[0]["phones"][0]["wa_id"], "15550003333");
    }

    #[test]
    fn interactive_replies() {
        let msg = message_of("inbound_interactive_button_reply.json");
        assert_eq!(
            msg.content,
            MessageContent::Interactive(InteractiveReply::ButtonReply {
                id: "confirm-booking".into(),
                title: "Confirm".into()
            })
        );
        assert!(msg.context.unwrap().id.is_some());
        assert_eq!(msg.content.text_for_keywords(), None);

        let msg = message_of("inbound_interactive_list_reply.json");
        assert_eq!(
            msg.content,
            MessageContent::Interactive(InteractiveReply::ListReply {
                id: "priority_express".into(),
                title: "Priority Express".into(),
                description: Some("Next day to 2 days".into()),
            })
        );

        let msg = message_of("inbound_interactive_nfm_reply.json");
        let MessageContent::Interactive(InteractiveReply::NfmReply {
            name,
            body,
            response_json,
        }) = &msg.content
        else {
            panic!("{:?}", msg.content)
        };
        assert_eq!((name.as_deref(), body.as_deref()), (Some("flow"), Some("Sent")));
        let answer: Value = serde_json::from_str(response_json).unwrap();
        assert_eq!(answer["flow_token"], "FLOW-TOKEN-0001");
        assert_eq!(msg.type_name(), "interactive");
    }

    #[test]
    fn template_button() {
        let msg = message_of("inbound_button.json");
        assert_eq!(
            msg.content,
            MessageContent::Button {
                payload: Some("STOP_PROMOTIONS".into()),
                text: Some("Stop promotions".into())
            }
        );
        assert_eq!(msg.content.text_for_keywords(), Some("Stop promotions"));
    }

    #[test]
    fn reactions_and_their_removal() {
        let msg = message_of("inbound_reaction.json");
        let MessageContent::Reaction { message_id, emoji } = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert!(message_id.starts_with("wamid."));
        assert_eq!(emoji.as_deref(), Some("\u{1F44D}"));

        let removed = message_of("inbound_reaction_removed.json");
        assert_eq!(
            removed.content,
            MessageContent::Reaction {
                message_id: message_id.clone(),
                emoji: None
            }
        );
    }

    #[test]
    fn order_system_unsupported_stay_raw() {
        let msg = message_of("inbound_order.json");
        let MessageContent::Order(order) = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(order["product_items"].as_array().unwrap().len(), 2);
        assert_eq!(order["catalog_id"], "1000000000000200");

        let value = value_of("inbound_system.json");
        assert!(value.contacts.is_empty());
        let msg = value.inbound_messages().remove(0).unwrap();
        let MessageContent::System(system) = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(system["type"], "user_changed_number");
        assert_eq!(system["wa_id"], "15550002222");

        let msg = message_of("inbound_unsupported.json");
        assert_eq!(
            msg.content,
            MessageContent::Unsupported(serde_json::json!({"type": "edit"}))
        );
        assert_eq!(msg.errors.len(), 1);
        assert_eq!(msg.errors[0].code, 131051);
        assert_eq!(
            msg.errors[0].details(),
            Some("Message type is currently not supported.")
        );
    }

    #[test]
    fn referral_rides_on_a_text() {
        let msg = message_of("inbound_referral.json");
        assert_eq!(msg.type_name(), "text");
        let referral = msg.referral.unwrap();
        assert_eq!(referral["source_type"], "ad");
        assert_eq!(referral["ctwa_clid"], "ARAkFAKEctwaClickId0001");
    }

    #[test]
    fn unknown_types_are_kept_whole() {
        let raw: Value = serde_json::from_slice(&fixture("inbound_unknown_type.json")).unwrap();
        let msg = message_of("inbound_unknown_type.json");
        assert_eq!(msg.type_name(), "event_rsvp");
        let MessageContent::Unknown { type_name, raw: kept } = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(type_name, "event_rsvp");
        assert_eq!(kept, &raw["entry"][0]["changes"][0]["value"]["messages"][0]);
        assert_eq!(kept["event_rsvp"]["response"], "going");
    }

    #[test]
    fn user_id_without_phone_number() {
        let value = value_of("inbound_user_id_only.json");
        let msg = value.inbound_messages().remove(0).unwrap();
        assert_eq!(msg.from, None);
        assert_eq!(msg.from_user_id.as_deref(), Some("US.1000000000000000001"));
        let contact = value.contact_for(&msg).expect("matched on user_id");
        assert_eq!(contact.wa_id, None);
        assert_eq!(contact.user_id.as_deref(), Some("US.1000000000000000001"));
        assert_eq!(contact.profile.as_ref().unwrap().name.as_deref(), Some("Robin Sample"));
    }

    #[test]
    fn statuses() {
        let sent = status_of("status_sent.json");
        assert!(sent.id.starts_with("wamid."));
        assert_eq!(sent.status, DeliveryStatus::Sent);
        assert_eq!(sent.timestamp, 1_767_225_601);
        assert_eq!(sent.recipient_id.as_deref(), Some("15550001111"));
        assert_eq!(sent.recipient_user_id, None);
        assert_eq!(sent.conversation.unwrap()["origin"]["type"], "marketing");
        assert_eq!(sent.pricing.unwrap()["billable"], true);
        assert_eq!(sent.biz_opaque_callback_data.as_deref(), Some("campaign=winter-sale"));
        assert!(sent.errors.is_empty());

        let delivered = status_of("status_delivered.json");
        assert_eq!(
            (delivered.status, delivered.id),
            (DeliveryStatus::Delivered, sent.id.clone())
        );

        let read = status_of("status_read.json");
        assert_eq!(read.status, DeliveryStatus::Read);
        assert_eq!((read.conversation, read.pricing), (None, None));

        let failed = status_of("status_failed.json");
        assert_eq!(failed.status, DeliveryStatus::Failed);
        assert_eq!(failed.errors.len(), 1);
        let error = &failed.errors[0];
        assert_eq!(error.code, 131047);
        assert_eq!(error.title.as_deref(), Some("Re-engagement message"));
        assert!(error.details().unwrap().contains("24 hours"));
        assert!(
            error
                .href
                .as_deref()
                .unwrap()
                .starts_with("https://developers.facebook.com/")
        );
    }

    #[test]
    fn value_level_errors() {
        let value = value_of("value_errors.json");
        assert!(value.messages.is_empty() && value.statuses.is_empty());
        assert_eq!(value.errors.len(), 1);
        assert_eq!(value.errors[0].code, 130429);
        assert_eq!(value.errors[0].message.as_deref(), Some("(#130429) Rate limit hit"));
        assert_eq!(
            value.errors[0].details(),
            Some("Cloud API message throughput has been reached.")
        );
    }

    #[test]
    fn batched_entries_and_changes() {
        let payload = parse_payload(&fixture("batched.json")).unwrap();
        assert_eq!(payload.object, WHATSAPP_OBJECT);
        assert_eq!(payload.entry.len(), 2);
        let fields: Vec<(&str, &str)> = payload
            .changes()
            .map(|(entry, change)| (entry.id.as_str(), change.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("100000000000000", "messages"),
                ("100000000000000", "messages"),
                ("100000000000010", "account_update"),
                ("100000000000010", "messages"),
            ]
        );
        let changes: Vec<&Change> = payload.changes().map(|(_, c)| c).collect();

        let first = changes[0].messages_value().unwrap().unwrap();
        let stop = first.inbound_messages().remove(0).unwrap();
        assert_eq!(stop.content.text_for_keywords(), Some("STOP"));

        let receipts: Vec<DeliveryStatus> = changes[1]
            .messages_value()
            .unwrap()
            .unwrap()
            .status_updates()
            .into_iter()
            .map(|s| s.unwrap().status)
            .collect();
        assert_eq!(receipts, [DeliveryStatus::Delivered, DeliveryStatus::Read]);

        assert!(changes[2].messages_value().is_none());
        assert_eq!(changes[2].value["event"], "VERIFIED_ACCOUNT");

        let other_number = changes[3].messages_value().unwrap().unwrap();
        assert_eq!(other_number.metadata.phone_number_id, "100000000000011");
        let messages: Vec<InboundMessage> = other_number
            .inbound_messages()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].type_name(), "image");
        assert_eq!(messages[1].type_name(), "reaction");
        let names: Vec<_> = messages
            .iter()
            .map(|m| {
                other_number
                    .contact_for(m)
                    .unwrap()
                    .profile
                    .as_ref()
                    .unwrap()
                    .name
                    .as_deref()
            })
            .collect();
        assert_eq!(names, [Some("Jordan Sample"), Some("Casey Sample")]);
    }

    #[test]
    fn one_bad_message_does_not_spoil_the_others() {
        let value = MessagesValue::from_json(&serde_json::json!({
            "messaging_product": "whatsapp",
            "metadata": {"phone_number_id": "100000000000001"},
            "messages": [
                {"from": "15550001111", "id": "wamid.A", "timestamp": "1767225600", "type": "text", "text": {"body": "hi"}},
                {"from": "15550001111", "timestamp": "1767225600", "type": "text", "text": {"body": "no id"}},
                {"from": "15550001111", "id": "wamid.C", "timestamp": "1767225600", "text": {"body": "no type"}},
                {"from": "15550001111", "id": "wamid.D", "timestamp": "yesterday", "type": "text", "text": {"body": "x"}},
                {"from": "15550001111", "id": "wamid.E", "timestamp": 1767225601, "type": "image", "image": {"mime_type": "image/png"}},
                {"from": "15550001111", "id": "wamid.F", "timestamp": "1767225602", "type": "text"},
                "not an object",
                null,
                {"from": 15550001111_u64, "id": "wamid.G", "timestamp": 1767225603, "type": "text", "text": {"body": "numeric from"}},
            ],
            "statuses": [
                {"id": "wamid.S", "status": "delivered", "timestamp": "1767225600"},
                {"id": "wamid.T", "timestamp": "1767225600"},
                {"id": "wamid.U", "status": "seen_by_martians", "timestamp": "1767225600", "recipient_user_id": "US.1"},
            ],
        }))
        .unwrap();
        let messages = value.inbound_messages();
        assert_eq!(messages.len(), 9);
        assert!(messages[0].is_ok());
        assert_eq!(messages[1], Err(missing("message", "id")));
        assert_eq!(messages[2], Err(missing("message", "type")));
        assert_eq!(messages[3], Err(invalid("message", "timestamp", "unix seconds")));
        assert_eq!(messages[4], Err(missing("image", "id")));
        assert_eq!(messages[5], Err(missing("message", "text")));
        assert_eq!(messages[6], Err(PayloadError::NotAnObject { item: "message" }));
        assert_eq!(messages[7], Err(PayloadError::NotAnObject { item: "message" }));
        let numeric = messages[8].as_ref().unwrap();
        assert_eq!(
            (numeric.from.as_deref(), numeric.timestamp),
            (Some("15550001111"), 1_767_225_603)
        );

        let statuses = value.status_updates();
        assert_eq!(statuses[0].as_ref().unwrap().status, DeliveryStatus::Delivered);
        assert_eq!(statuses[1], Err(missing("status", "status")));
        let martian = statuses[2].as_ref().unwrap();
        assert_eq!(martian.status, DeliveryStatus::Unknown("seen_by_martians".into()));
        assert_eq!(martian.recipient_user_id.as_deref(), Some("US.1"));
    }

    #[test]
    fn interactive_oddities() {
        let parse = |interactive: Value| {
            InboundMessage::from_json(&serde_json::json!({
                "id": "wamid.I", "timestamp": "1", "type": "interactive", "interactive": interactive
            }))
        };
        let other =
            serde_json::json!({"type": "call_permission_reply", "call_permission_reply": {"response": "accept"}});
        assert_eq!(
            parse(other.clone()).unwrap().content,
            MessageContent::Interactive(InteractiveReply::Other(other))
        );
        let untyped = serde_json::json!({"button_reply": {"id": "a", "title": "b"}});
        assert_eq!(
            parse(untyped.clone()).unwrap().content,
            MessageContent::Interactive(InteractiveReply::Other(untyped))
        );
        assert_eq!(
            parse(serde_json::json!({"type": "button_reply"})),
            Err(missing("interactive", "button_reply"))
        );
        assert_eq!(
            parse(serde_json::json!({"type": "list_reply", "list_reply": {"id": "x"}})),
            Err(missing("list_reply", "title"))
        );
        let object_answer = parse(serde_json::json!({"type": "nfm_reply", "nfm_reply": {"response_json": {"a": 1}}}));
        let Ok(InboundMessage {
            content: MessageContent::Interactive(InteractiveReply::NfmReply { response_json, .. }),
            ..
        }) = object_answer
        else {
            panic!("{object_answer:?}")
        };
        assert_eq!(response_json, r#"{"a":1}"#);
        assert_eq!(
            parse(serde_json::json!({"type": "nfm_reply", "nfm_reply": {"response_json": 5}})),
            Err(invalid("nfm_reply", "response_json", "JSON text"))
        );
        assert_eq!(parse(Value::Null), Err(missing("message", "interactive")));
        assert_eq!(
            parse(serde_json::json!([])),
            Err(invalid("message", "interactive", "an object"))
        );
    }

    #[test]
    fn lenient_details() {
        let msg = InboundMessage::from_json(&serde_json::json!({
            "id": "wamid.L", "timestamp": " 1767225600 ", "type": "reaction",
            "reaction": {"message_id": "wamid.X", "emoji": ""},
            "context": "not an object",
            "referral": null,
            "errors": [{"code": "131051"}, "junk", {"title": "no code"}],
        }))
        .unwrap();
        assert_eq!(msg.timestamp, 1_767_225_600);
        assert_eq!(
            msg.content,
            MessageContent::Reaction {
                message_id: "wamid.X".into(),
                emoji: None
            }
        );
        assert_eq!((msg.context, msg.referral), (None, None));
        assert_eq!(msg.errors.iter().map(|e| e.code).collect::<Vec<_>>(), [131051, 0]);

        let location = InboundMessage::from_json(&serde_json::json!({
            "id": "wamid.M", "timestamp": 1, "type": "location", "location": {"latitude": "1.5", "longitude": "NaN"}
        }));
        assert_eq!(location, Err(invalid("location", "longitude", "a number")));

        let value = MessagesValue::from_json(&serde_json::json!({
            "metadata": {"phone_number_id": 100000000000001_u64},
            "contacts": [null, 3, {"wa_id": 15550001111_u64, "profile": "x"}],
            "errors": {"code": 1},
            "messages": null,
        }))
        .unwrap();
        assert_eq!(value.metadata.phone_number_id, "100000000000001");
        assert_eq!(value.messaging_product, None);
        assert_eq!(
            value.contacts,
            [WaContact {
                wa_id: Some("15550001111".into()),
                user_id: None,
                profile: None
            }]
        );
        assert!(value.errors.is_empty() && value.messages.is_empty());
    }

    #[test]
    fn envelope_errors() {
        assert!(matches!(parse_payload(b""), Err(PayloadError::Json(_))));
        assert!(matches!(parse_payload(b"{\"object\":"), Err(PayloadError::Json(_))));
        assert!(matches!(parse_payload(b"\xff\xfe"), Err(PayloadError::Json(_))));
        for wrong in [
            r#"{"object":"page","entry":[]}"#,
            r#"{"object":"instagram","entry":[]}"#,
            r#"{"entry":[]}"#,
            r#"{"object":null}"#,
            r#"{"object":5}"#,
            r#"["whatsapp_business_account"]"#,
            r#""whatsapp_business_account""#,
            "null",
            "42",
        ] {
            assert_eq!(
                parse_payload(wrong.as_bytes()),
                Err(PayloadError::WrongObject),
                "{wrong}"
            );
        }
        let ok = |body: &str| parse_payload(body.as_bytes());
        assert_eq!(ok(r#"{"object":"whatsapp_business_account"}"#).unwrap().entry, []);
        assert_eq!(
            ok(r#"{"object":"whatsapp_business_account","entry":{}}"#),
            Err(invalid("payload", "entry", "an array"))
        );
        assert_eq!(
            ok(r#"{"object":"whatsapp_business_account","entry":[{"changes":[]}]}"#),
            Err(missing("entry", "id"))
        );
        assert_eq!(
            ok(r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"value":{}}]}]}"#),
            Err(missing("change", "field"))
        );
        assert_eq!(
            ok(r#"{"object":"whatsapp_business_account","entry":[1]}"#),
            Err(PayloadError::NotAnObject { item: "entry" })
        );
        let no_value =
            ok(r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages"}]}]}"#)
                .unwrap();
        assert_eq!(
            no_value.entry[0].changes[0].messages_value(),
            Some(Err(PayloadError::NotAnObject { item: "messages value" }))
        );
        let no_metadata = Change {
            field: "messages".into(),
            value: serde_json::json!({"messages": []}),
        };
        assert_eq!(
            no_metadata.messages_value(),
            Some(Err(missing("messages value", "metadata")))
        );
        let no_number = Change {
            field: "messages".into(),
            value: serde_json::json!({"metadata": {"display_phone_number": "15550000000"}}),
        };
        assert_eq!(
            no_number.messages_value(),
            Some(Err(missing("metadata", "phone_number_id")))
        );
        let bad_messages = Change {
            field: "messages".into(),
            value: serde_json::json!({"metadata": {"phone_number_id": "1"}, "messages": {}}),
        };
        assert_eq!(
            bad_messages.messages_value(),
            Some(Err(invalid("messages value", "messages", "an array")))
        );
    }

    #[test]
    fn json_errors_name_a_position_only() {
        let Err(PayloadError::Json(text)) =
            parse_payload(br#"{"object": "whatsapp_business_account", "x": "15550001111"#)
        else {
            panic!()
        };
        assert!(text.contains("line 1"), "{text}");
        assert!(!text.contains("1555"), "{text}");
    }

    #[test]
    fn serde_entry_points_follow_the_same_rules() {
        let payload: WebhookPayload = serde_json::from_slice(&fixture("batched.json")).unwrap();
        assert_eq!(payload, parse_payload(&fixture("batched.json")).unwrap());
        // Serialising gives back Meta's shape, which parses to the same values.
        let again = parse_payload(&serde_json::to_vec(&payload).unwrap()).unwrap();
        assert_eq!(again, payload);

        let status: StatusUpdate =
            serde_json::from_str(r#"{"id":"wamid.S","status":"played","timestamp":"5"}"#).unwrap();
        assert_eq!((status.status, status.timestamp), (DeliveryStatus::Played, 5));
        let err = serde_json::from_str::<InboundMessage>(r#"{"id":"wamid.X","timestamp":"5"}"#).unwrap_err();
        assert!(err.to_string().contains("message has no type"), "{err}");
        let error: GraphError = serde_json::from_str(r#"{"code":131026,"title":"Message undeliverable"}"#).unwrap();
        assert_eq!(error.code, 131026);
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"code":131026,"title":"Message undeliverable"}"#
        );
    }

    #[test]
    fn delivery_status_strings_round_trip() {
        for s in [
            "sent",
            "delivered",
            "read",
            "played",
            "failed",
            "deleted",
            "warning",
            "pending",
        ] {
            let status = DeliveryStatus::from(s);
            assert_eq!(status.as_str(), s);
            assert_eq!(status.to_string(), s);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(serde_json::from_str::<DeliveryStatus>(&json).unwrap(), status);
        }
        assert_eq!(
            DeliveryStatus::from("pending"),
            DeliveryStatus::Unknown("pending".into())
        );
        assert_eq!(DeliveryStatus::from("READ"), DeliveryStatus::Unknown("READ".into()));
    }

    /// Runs everything a webhook handler would on `raw`; the point is that it returns.
    fn exercise(raw: &[u8]) -> Vec<PayloadError> {
        let mut errors = Vec::new();
        match parse_payload(raw) {
            Err(e) => errors.push(e),
            Ok(payload) => {
                for (_, change) in payload.changes() {
                    match change.messages_value() {
                        None => {}
                        Some(Err(e)) => errors.push(e),
                        Some(Ok(value)) => {
                            for msg in value.inbound_messages() {
                                match msg {
                                    Ok(m) => {
                                        let _ = (m.type_name(), m.content.media(), m.content.text_for_keywords());
                                        let _ = value.contact_for(&m);
                                    }
                                    Err(e) => errors.push(e),
                                }
                            }
                            errors.extend(value.status_updates().into_iter().filter_map(Result::err));
                        }
                    }
                }
            }
        }
        errors
    }

    /// Every position in `value`, as a JSON pointer.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    pointers(v, format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    pointers(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        for file in std::fs::read_dir(fixture_dir()).unwrap() {
            let raw = std::fs::read(file.unwrap().path()).unwrap();
            for end in 0..raw.len() {
                exercise(&raw[..end]);
            }
        }
    }

    #[test]
    fn any_node_of_any_type_is_an_error_not_a_panic_and_errors_leak_nothing() {
        const SENTINEL: &str = "15559998888-private";
        let replacements = [
            Value::Null,
            Value::Bool(true),
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!(u64::MAX),
            serde_json::json!(""),
            serde_json::json!(SENTINEL),
            serde_json::json!([SENTINEL]),
            serde_json::json!({ "body": SENTINEL }),
        ];
        for file in std::fs::read_dir(fixture_dir()).unwrap() {
            let original: Value = serde_json::from_slice(&std::fs::read(file.unwrap().path()).unwrap()).unwrap();
            let mut at = Vec::new();
            pointers(&original, String::new(), &mut at);
            for pointer in at {
                for replacement in &replacements {
                    let mut doc = original.clone();
                    match doc.pointer_mut(&pointer) {
                        Some(slot) => *slot = replacement.clone(),
                        None => continue,
                    }
                    for error in exercise(&serde_json::to_vec(&doc).unwrap()) {
                        let shown = format!("{error} {error:?}");
                        assert!(!shown.contains("1555"), "{pointer}: {shown}");
                        assert!(!shown.contains("private"), "{pointer}: {shown}");
                    }
                }
            }
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            r#"{{"object":"whatsapp_business_account","entry":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(parse_payload(deep.as_bytes()), Err(PayloadError::Json(_))));
    }
}
