//! Message templates: the registry entry of one template in one language, the parameter schema
//! compiled from Meta's components, the local checks that keep a send Meta would refuse from
//! ever reaching Meta, the lint of a new template, and our language fallback. Pure functions
//! over plain types, no I/O: the API, the sender, the webhook and broadcasts share them.
//!
//! Meta's facts (WhatsApp Cloud API "Templates" and "Template components" pages, the
//! `message_template_status_update`, `message_template_quality_update` and
//! `template_category_update` webhook references, "WhatsApp error codes"): a template is named
//! per WABA and exists once per language; its status decides whether it may be sent; its
//! category (Meta's, not the caller's) decides the consent rule; `language.policy` is only
//! `deterministic`, so Meta never falls back to another language.

pub mod language;
pub mod lint;
pub mod schema;
pub mod validate;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sending::Category;
pub use schema::{ButtonKind, ButtonSlot, CardSchema, HeaderSlot, MediaKind, TemplateSchema, TextSlot, compile};
pub use validate::{FieldError, MetaCode, check_status, validate_send};

/// Meta's template statuses this code acts on (any other status Meta sends is kept as given
/// and treated as not sendable).
pub mod status {
    pub const APPROVED: &str = "APPROVED";
    pub const PENDING: &str = "PENDING";
    pub const REJECTED: &str = "REJECTED";
    pub const PAUSED: &str = "PAUSED";
    pub const DISABLED: &str = "DISABLED";
    pub const ARCHIVED: &str = "ARCHIVED";
    pub const DELETED: &str = "DELETED";
}

/// `parameter_format` of a template: `{{1}}`, `{{2}}` … or `{{first_name}}` ….
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParameterFormat {
    #[default]
    Positional,
    Named,
}

impl ParameterFormat {
    pub fn parse(raw: &str) -> Option<ParameterFormat> {
        match raw.to_ascii_uppercase().as_str() {
            "POSITIONAL" => Some(ParameterFormat::Positional),
            "NAMED" => Some(ParameterFormat::Named),
            _ => None,
        }
    }
}

/// Meta's template categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateCategory {
    Marketing,
    Utility,
    Authentication,
}

impl TemplateCategory {
    pub fn parse(raw: &str) -> Option<TemplateCategory> {
        match raw.to_ascii_uppercase().as_str() {
            "MARKETING" => Some(TemplateCategory::Marketing),
            "UTILITY" => Some(TemplateCategory::Utility),
            "AUTHENTICATION" => Some(TemplateCategory::Authentication),
            _ => None,
        }
    }

    /// A category Meta names that we do not know (a retired one, a new one) counts as
    /// marketing: the reading that never sends to an opted-out customer by mistake.
    pub fn parse_or_marketing(raw: &str) -> TemplateCategory {
        TemplateCategory::parse(raw).unwrap_or(TemplateCategory::Marketing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TemplateCategory::Marketing => "MARKETING",
            TemplateCategory::Utility => "UTILITY",
            TemplateCategory::Authentication => "AUTHENTICATION",
        }
    }

    /// The sending category (consent rule) of a send of a template of this category.
    pub fn send_category(self) -> Category {
        match self {
            TemplateCategory::Marketing => Category::Marketing,
            TemplateCategory::Utility => Category::Utility,
            TemplateCategory::Authentication => Category::Authentication,
        }
    }
}

/// The kind tag of a registry item (kept on the stored item, so a stream consumer recognises a
/// template item and its status change from the old and new images).
pub const TEMPLATE_KIND: &str = "template";

/// One template in one language, as the registry holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub tenant_id: String,
    pub name: String,
    /// Meta's language and locale code (`en_US`, `pt_BR`, `de`).
    pub language: String,
    /// Meta's template id (`hsm_id`); empty while only a create request is known.
    pub meta_id: String,
    /// Meta's status, uppercase (`APPROVED`, `PENDING`, `REJECTED`, `PAUSED`, `DISABLED`, …).
    pub status: String,
    /// Why Meta set the status (rejections, pauses), as Meta gave it.
    #[serde(default)]
    pub reason: Option<String>,
    pub category: TemplateCategory,
    /// `GREEN`, `YELLOW`, `RED` or `UNKNOWN`.
    #[serde(default)]
    pub quality: Option<String>,
    #[serde(default)]
    pub parameter_format: ParameterFormat,
    /// Meta's components as Meta returned them (`null` while unknown: a webhook named a
    /// template the registry has not synced yet).
    #[serde(default)]
    pub components: Value,
    /// What a send must supply, compiled from `components` (`None` while they are unknown).
    #[serde(default)]
    pub schema: Option<TemplateSchema>,
    /// When Meta's list last confirmed this entry (`None`: known from a webhook or our own
    /// create only).
    #[serde(default)]
    pub last_synced_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl TemplateRecord {
    /// An entry from one template object of Meta's list (`GET /{waba-id}/message_templates`).
    /// `None` when the object lacks a name or language.
    pub fn from_meta(tenant_id: &str, meta: &Value, now: DateTime<Utc>) -> Option<TemplateRecord> {
        let text = |field: &str| meta.get(field).and_then(Value::as_str).map(str::to_owned);
        let name = text("name").filter(|n| is_valid_name(n))?;
        let language = text("language").and_then(|l| language::normalize(&l))?;
        let components = meta.get("components").cloned().unwrap_or(Value::Array(Vec::new()));
        let parameter_format = text("parameter_format")
            .and_then(|f| ParameterFormat::parse(&f))
            .unwrap_or_default();
        Some(TemplateRecord {
            tenant_id: tenant_id.to_owned(),
            name,
            language,
            meta_id: meta
                .get("id")
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default(),
            status: text("status").map_or_else(|| status::PENDING.to_owned(), |s| s.to_ascii_uppercase()),
            reason: text("rejected_reason").filter(|r| r != "NONE"),
            category: TemplateCategory::parse_or_marketing(&text("category").unwrap_or_default()),
            quality: meta
                .pointer("/quality_score/score")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameter_format,
            schema: Some(compile(&components)),
            components,
            last_synced_at: Some(now),
            updated_at: now,
        })
    }

    pub fn is_approved(&self) -> bool {
        self.status == status::APPROVED
    }

    /// Whether this entry says the same as `other` about the template (ignoring sync times).
    pub fn same_content(&self, other: &TemplateRecord) -> bool {
        self.meta_id == other.meta_id
            && self.status == other.status
            && self.reason == other.reason
            && self.category == other.category
            && self.quality == other.quality
            && self.parameter_format == other.parameter_format
            && self.components == other.components
    }
}

/// Meta allows 100 template creations per WABA per hour.
pub const CREATIONS_PER_HOUR: u32 = 100;

const HOUR_MS: i64 = 3_600_000;

/// A sliding hour of creations (epoch milliseconds): the log with one more creation at
/// `now_ms` (older entries dropped), or the whole seconds until one is allowed again.
pub fn admit_creation(log: &[i64], now_ms: i64, per_hour: u32) -> Result<Vec<i64>, u64> {
    let mut recent: Vec<i64> = log.iter().copied().filter(|t| now_ms - t < HOUR_MS).collect();
    if recent.len() >= per_hour as usize {
        let oldest = recent.iter().min().copied().unwrap_or(now_ms);
        let wait_ms = (oldest + HOUR_MS - now_ms).max(1000);
        return Err((wait_ms as u64).div_ceil(1000));
    }
    recent.push(now_ms);
    Ok(recent)
}

/// Meta's template names: lowercase letters, digits and underscores, at most 512 characters.
pub const MAX_NAME_CHARS: usize = 512;

pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A change a template webhook reports, as the registry applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateChange {
    pub name: String,
    pub language: String,
    pub meta_id: String,
    pub update: TemplateUpdate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateUpdate {
    /// `message_template_status_update`: the new status (Meta's `event`), its reason, and the
    /// category when Meta names it.
    Status {
        status: String,
        reason: Option<String>,
        category: Option<TemplateCategory>,
    },
    /// `message_template_quality_update`.
    Quality { quality: String },
    /// `template_category_update` (a completed change; an impending one names no new
    /// category yet and changes nothing).
    Category { category: TemplateCategory },
}

/// The webhook change fields that carry template news.
pub const WEBHOOK_FIELDS: [&str; 3] = [
    "message_template_status_update",
    "message_template_quality_update",
    "template_category_update",
];

/// Reads one template webhook change (`field`, `value`); `None` when it is not one or is
/// malformed.
pub fn parse_webhook_change(field: &str, value: &Value) -> Option<TemplateChange> {
    let text = |f: &str| value.get(f).and_then(Value::as_str).map(str::to_owned);
    let name = text("message_template_name").filter(|n| is_valid_name(n))?;
    let language = text("message_template_language").and_then(|l| language::normalize(&l))?;
    let meta_id = value
        .get("message_template_id")
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .unwrap_or_default();
    let update = match field {
        "message_template_status_update" => TemplateUpdate::Status {
            status: text("event")?.to_ascii_uppercase(),
            reason: text("reason").filter(|r| r != "NONE"),
            category: text("message_template_category").and_then(|c| TemplateCategory::parse(&c)),
        },
        "message_template_quality_update" => TemplateUpdate::Quality {
            quality: text("new_quality_score")?.to_ascii_uppercase(),
        },
        "template_category_update" => {
            // An impending change carries `correct_category` and the *current* category as
            // `new_category`; only a completed one (with `previous_category`) is applied.
            text("previous_category")?;
            TemplateUpdate::Category {
                category: TemplateCategory::parse_or_marketing(&text("new_category")?),
            }
        }
        _ => return None,
    };
    Some(TemplateChange {
        name,
        language,
        meta_id,
        update,
    })
}

impl TemplateChange {
    /// The entry after this change: `current` updated, or a new entry for a template the
    /// registry has not seen (its components stay unknown until the next reconcile).
    pub fn apply(&self, tenant_id: &str, current: Option<TemplateRecord>, now: DateTime<Utc>) -> TemplateRecord {
        let mut record = current.unwrap_or_else(|| TemplateRecord {
            tenant_id: tenant_id.to_owned(),
            name: self.name.clone(),
            language: self.language.clone(),
            meta_id: String::new(),
            status: status::PENDING.to_owned(),
            reason: None,
            category: TemplateCategory::Marketing,
            quality: None,
            parameter_format: ParameterFormat::default(),
            components: Value::Null,
            schema: None,
            last_synced_at: None,
            updated_at: now,
        });
        if !self.meta_id.is_empty() {
            record.meta_id = self.meta_id.clone();
        }
        match &self.update {
            TemplateUpdate::Status {
                status,
                reason,
                category,
            } => {
                record.status = status.clone();
                record.reason = reason.clone();
                if let Some(c) = category {
                    record.category = *c;
                }
            }
            TemplateUpdate::Quality { quality } => record.quality = Some(quality.clone()),
            TemplateUpdate::Category { category } => record.category = *category,
        }
        record.updated_at = now;
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn an_entry_from_metas_list() {
        let meta = json!({
            "name": "order_update", "language": "pt_BR", "status": "APPROVED", "category": "UTILITY",
            "id": "1234", "parameter_format": "NAMED", "quality_score": {"score": "GREEN"},
            "components": [{"type": "BODY", "text": "Olá {{name}}, pedido enviado.",
                            "example": {"body_text_named_params": [{"param_name": "name", "example": "Ana"}]}}]
        });
        let r = TemplateRecord::from_meta("t1", &meta, now()).unwrap();
        assert_eq!(
            (r.name.as_str(), r.language.as_str(), r.meta_id.as_str()),
            ("order_update", "pt_BR", "1234")
        );
        assert_eq!(r.category, TemplateCategory::Utility);
        assert_eq!(r.parameter_format, ParameterFormat::Named);
        assert_eq!(r.quality.as_deref(), Some("GREEN"));
        assert!(r.is_approved());
        assert_eq!(r.schema.unwrap().body.params, ["name"]);
        assert!(TemplateRecord::from_meta("t1", &json!({"name": "Bad Name", "language": "en"}), now()).is_none());
        assert!(TemplateRecord::from_meta("t1", &json!({"name": "ok"}), now()).is_none());
        let unknown = json!({"name": "x", "language": "en", "category": "TRANSACTIONAL", "id": 77});
        let r = TemplateRecord::from_meta("t1", &unknown, now()).unwrap();
        assert_eq!(r.category, TemplateCategory::Marketing);
        assert_eq!(r.meta_id, "77");
    }

    #[test]
    fn the_creation_window_slides() {
        let log: Vec<i64> = (0..100).map(|i| i * 1000).collect();
        assert_eq!(admit_creation(&log, 200_000, 100), Err(3_400));
        let later = admit_creation(&log, 3_600_500, 100).unwrap();
        assert_eq!(later.len(), 100, "the first creation left the hour");
        assert_eq!(later.last(), Some(&3_600_500));
        assert_eq!(admit_creation(&[], 5, 1), Ok(vec![5]));
    }

    #[test]
    fn webhook_changes_of_each_field() {
        let status = parse_webhook_change(
            "message_template_status_update",
            &json!({"event": "APPROVED", "message_template_id": 9, "message_template_name": "hello",
                    "message_template_language": "en_US", "reason": "NONE", "message_template_category": "UTILITY"}),
        )
        .unwrap();
        let created = status.apply("t1", None, now());
        assert_eq!(created.status, "APPROVED");
        assert_eq!(created.reason, None);
        assert_eq!(created.category, TemplateCategory::Utility);
        assert_eq!(created.meta_id, "9");
        assert!(created.schema.is_none(), "components unknown until a sync");

        let quality = parse_webhook_change(
            "message_template_quality_update",
            &json!({"previous_quality_score": "GREEN", "new_quality_score": "RED", "message_template_id": 9,
                    "message_template_name": "hello", "message_template_language": "en_US"}),
        )
        .unwrap();
        assert_eq!(
            quality.apply("t1", Some(created.clone()), now()).quality.as_deref(),
            Some("RED")
        );

        let completed = json!({"message_template_id": 9, "message_template_name": "hello",
            "message_template_language": "en_US", "previous_category": "UTILITY", "new_category": "MARKETING"});
        let category = parse_webhook_change("template_category_update", &completed).unwrap();
        assert_eq!(
            category.apply("t1", Some(created.clone()), now()).category,
            TemplateCategory::Marketing
        );
        let impending = json!({"message_template_id": 9, "message_template_name": "hello",
            "message_template_language": "en_US", "correct_category": "MARKETING", "new_category": "UTILITY",
            "category_update_timestamp": 1});
        assert!(parse_webhook_change("template_category_update", &impending).is_none());
        assert!(parse_webhook_change("messages", &completed).is_none());
    }
}
