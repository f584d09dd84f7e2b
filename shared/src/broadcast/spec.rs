//! `POST /v1/broadcasts`: the body's validation. Everything a broadcast needs is checked here,
//! before anything is stored: the template reference, the audience, the parameter mapping
//! (every source must be a field or attribute a contact can have) and the start time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::audience_file::FileSummary;
use super::schedule::{LocalTimeError, QuietHours, parse_start};
use crate::contact::{normalize_phone, normalize_tag};
use crate::template;

/// Most entries of an explicit audience list (contact ids and phones together): the list is
/// kept on the broadcast item, which DynamoDB bounds at 400 KB.
pub const MAX_EXPLICIT: usize = 5_000;
/// Most tags in `tags_all` / `tags_any`.
pub const MAX_TAGS: usize = 10;
pub const MAX_NAME_CHARS: usize = 200;

/// Contact fields a parameter may come from (`contact.<field>`); attributes are
/// `attributes.<key>`.
pub const CONTACT_FIELDS: [&str; 5] = ["name", "profile_name", "email", "phone", "language"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        code,
        message: message.into(),
    }
}

/// Who a broadcast goes to. Sources are walked in order (explicit list, then the search,
/// then the tags); a contact found twice is one recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audience {
    /// Contacts with every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_all: Vec<String>,
    /// Contacts with at least one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_any: Vec<String>,
    /// The contacts search (`GET /v1/contacts?q=`: name or phone prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contact_ids: Vec<String>,
    /// E.164; a phone with no contact is skipped `unknown_contact`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    /// Every contact of the tenant (must be asked for explicitly).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// An uploaded CSV file (`POST /v1/broadcasts/uploads`): its rows' contacts, each with the
    /// values of its other columns (`csv.<column>` parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// What the broadcast kept of that file (set at creation, never by a caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSummary>,
}

impl Audience {
    pub fn explicit_len(&self) -> usize {
        self.contact_ids.len() + self.phones.len()
    }
}

/// The prefix of parameter sources that name an uploaded file's column.
pub const FILE_SOURCE: &str = "csv";

/// What the API was asked for, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastSpec {
    pub name: String,
    pub template_name: String,
    /// `None`: each contact's language by the template fallback (`auto`).
    pub language: Option<String>,
    pub audience: Audience,
    /// Placeholder (`"1"`, `"order"`) → source (`contact.name`, `attributes.order_id`).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Placeholder → value used when the source is empty for a contact.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// The number to send from (`None`: the tenant's first).
    pub phone_number_id: Option<String>,
    pub start_at: Option<DateTime<Utc>>,
    /// The IANA zone of its local times (start time, quiet hours): the tenant's at creation
    /// unless the request named one.
    #[serde(default = "utc_zone")]
    pub time_zone: String,
    /// Local hours in which nothing is sent (held until they end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

fn utc_zone() -> String {
    "UTC".to_owned()
}

impl BroadcastSpec {
    /// The time zone (UTC for a name this build does not know).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateRef {
    name: String,
    #[serde(default)]
    language: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    name: String,
    template: TemplateRef,
    audience: Audience,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    #[serde(default)]
    defaults: BTreeMap<String, String>,
    #[serde(default)]
    from: Option<String>,
    /// An instant (RFC 3339 with an offset) or a local date and time of `time_zone`.
    #[serde(default)]
    start_at: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    quiet_hours: Option<QuietHours>,
}

/// Whether `source` names something a contact (or, with `file`, its row) has.
pub fn valid_source(source: &str, file: bool) -> bool {
    match source.split_once('.') {
        Some(("contact", field)) => CONTACT_FIELDS.contains(&field),
        Some(("attributes", key)) => !key.is_empty() && key.len() <= 64,
        Some((FILE_SOURCE, column)) => file && !column.is_empty() && column.len() <= 64,
        _ => false,
    }
}

/// Checks the `csv.<column>` sources against the columns the uploaded file has.
pub fn check_file_sources(spec: &BroadcastSpec, summary: &FileSummary) -> Result<(), SpecError> {
    for (placeholder, source) in &spec.parameters {
        if let Some((FILE_SOURCE, column)) = source.split_once('.')
            && !summary.columns.iter().any(|c| c == column)
        {
            return Err(invalid(
                "invalid_parameters",
                format!(
                    "parameter {placeholder:?}: the file has no column {column:?} (columns: {})",
                    summary.columns.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Parses and validates the body of `POST /v1/broadcasts`; `tenant_zone` is the tenant's time
/// zone, used when the body names none.
pub fn parse_spec(body: &Value, now: DateTime<Utc>, tenant_zone: &str) -> Result<BroadcastSpec, SpecError> {
    let body: Body = serde_json::from_value(body.clone()).map_err(|e| {
        invalid(
            "invalid_body",
            format!("the body does not have the expected fields: {e}"),
        )
    })?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(
            "invalid_name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if !template::is_valid_name(&body.template.name) {
        return Err(invalid("invalid_template", "template.name is not a template name"));
    }
    let language = match body.template.language.as_deref() {
        l if template::language::is_auto(l) => None,
        Some(l) => Some(
            template::language::normalize(l)
                .ok_or_else(|| invalid("invalid_template", "template.language is not a language code"))?,
        ),
        None => None,
    };
    let mut audience = body.audience;
    let tags = |tags: &[String]| -> Result<Vec<String>, SpecError> {
        if tags.len() > MAX_TAGS {
            return Err(invalid("invalid_audience", format!("at most {MAX_TAGS} tags")));
        }
        tags.iter()
            .map(|t| normalize_tag(t).ok_or_else(|| invalid("invalid_audience", "a tag is not a valid tag")))
            .collect()
    };
    audience.tags_all = tags(&audience.tags_all)?;
    audience.tags_any = tags(&audience.tags_any)?;
    audience.q = audience.q.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty());
    if audience.explicit_len() > MAX_EXPLICIT {
        return Err(invalid(
            "invalid_audience",
            format!("at most {MAX_EXPLICIT} contact ids and phones in a broadcast"),
        ));
    }
    if audience.contact_ids.iter().any(|id| !crate::ids::is_valid_id(id)) {
        return Err(invalid("invalid_audience", "contact_ids must be contact ids"));
    }
    // Phones are normalised; a malformed one is refused (the caller's list is wrong), while
    // a well-formed phone with no contact is a recipient skipped at planning.
    audience.phones = audience
        .phones
        .iter()
        .map(|p| normalize_phone(p).map_err(|_| invalid("invalid_audience", "phones must be E.164 numbers")))
        .collect::<Result<_, _>>()?;
    if audience.file.is_some() {
        return Err(invalid(
            "invalid_audience",
            "audience.file is set by the server; give upload_id",
        ));
    }
    if audience
        .upload_id
        .as_deref()
        .is_some_and(|id| !crate::ids::is_valid_id(id))
    {
        return Err(invalid("invalid_audience", "upload_id must be an upload id"));
    }
    let uploaded = audience.upload_id.is_some();
    let searched = audience.q.is_some() || !audience.tags_all.is_empty() || !audience.tags_any.is_empty();
    if uploaded && (searched || audience.all) {
        return Err(invalid(
            "invalid_audience",
            "an uploaded file is combined only with contact_ids and phones, not with tags, q or all",
        ));
    }
    if audience.all && (searched || audience.explicit_len() > 0) {
        return Err(invalid(
            "invalid_audience",
            "audience.all cannot be combined with other sources",
        ));
    }
    if !audience.all && !searched && !uploaded && audience.explicit_len() == 0 {
        return Err(invalid(
            "invalid_audience",
            "the audience is empty: give tags_all, tags_any, q, contact_ids, phones, upload_id or all",
        ));
    }
    for (placeholder, source) in &body.parameters {
        if placeholder.is_empty() || placeholder.len() > 64 {
            return Err(invalid(
                "invalid_parameters",
                "a parameter name must be 1 to 64 characters",
            ));
        }
        if !valid_source(source, uploaded) {
            return Err(invalid(
                "invalid_parameters",
                format!(
                    "parameter {placeholder:?}: the source must be contact.<{}>, attributes.<key> or (with an uploaded file) csv.<column>",
                    CONTACT_FIELDS.join("|")
                ),
            ));
        }
    }
    let time_zone = body.time_zone.unwrap_or_else(|| tenant_zone.to_owned());
    let tz: chrono_tz::Tz = time_zone.parse().map_err(|_| {
        invalid(
            "invalid_time_zone",
            "time_zone must be an IANA time zone name, e.g. Europe/Berlin or UTC",
        )
    })?;
    let start_at = match body.start_at.as_deref() {
        None => None,
        Some(raw) => Some(parse_start(raw, tz).map_err(|e| match e {
            LocalTimeError::Malformed => invalid(
                "invalid_start_at",
                "start_at must be an RFC 3339 time (2026-12-05T09:00:00Z) or a local date and time of the time zone (2026-12-05T09:00)",
            ),
            LocalTimeError::Skipped => invalid(
                "invalid_start_at",
                format!("start_at does not exist in {time_zone} (the clock skips it)"),
            ),
        })?),
    };
    if let Some(start) = start_at
        && start > now + chrono::Duration::days(90)
    {
        return Err(invalid("invalid_start_at", "start_at must be within 90 days"));
    }
    if let Some(quiet) = &body.quiet_hours {
        quiet.validate().map_err(|m| invalid("invalid_quiet_hours", m))?;
    }
    let phone_number_id = match body.from {
        Some(f) if (1..=32).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => Some(f),
        Some(_) => return Err(invalid("invalid_from", "from must be a phone number id (digits)")),
        None => None,
    };
    Ok(BroadcastSpec {
        name,
        template_name: body.template.name,
        language,
        audience,
        parameters: body.parameters,
        defaults: body.defaults,
        phone_number_id,
        start_at: start_at.filter(|s| *s > now),
        time_zone,
        quiet_hours: body.quiet_hours,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"name": "Spring sale", "template": {"name": "spring_sale", "language": "en_US"},
               "audience": {"tags_all": ["VIP"]}, "parameters": {"1": "contact.name", "order": "attributes.order_id"},
               "defaults": {"1": "there"}})
    }

    #[test]
    fn a_valid_body_is_normalised() {
        let now = Utc::now();
        let spec = parse_spec(&ok(), now, "UTC").unwrap();
        assert_eq!(spec.language.as_deref(), Some("en_US"));
        assert_eq!(spec.audience.tags_all, vec!["vip"]);
        assert_eq!(spec.parameters["order"], "attributes.order_id");
        let mut auto = ok();
        auto["template"]["language"] = json!("auto");
        assert_eq!(parse_spec(&auto, now, "UTC").unwrap().language, None);
        let mut phones = ok();
        phones["audience"] = json!({"phones": ["+1 415 555 0100"]});
        assert_eq!(
            parse_spec(&phones, now, "UTC").unwrap().audience.phones,
            vec!["+14155550100"]
        );
        // A start time in the past starts at once.
        let mut past = ok();
        past["start_at"] = json!("2020-01-01T00:00:00Z");
        assert_eq!(parse_spec(&past, now, "UTC").unwrap().start_at, None);
        // A local start time is read in the tenant's zone, or in the one the body names.
        let mut local = ok();
        local["start_at"] = json!("2099-01-01T09:00");
        let at = |h| DateTime::parse_from_rfc3339(h).unwrap().to_utc();
        let near = at("2098-12-15T00:00:00Z");
        let spec = parse_spec(&local, near, "Europe/Berlin").unwrap();
        assert_eq!(spec.start_at, Some(at("2099-01-01T08:00:00Z")));
        assert_eq!(spec.time_zone, "Europe/Berlin");
        local["time_zone"] = json!("Asia/Tokyo");
        local["quiet_hours"] = json!({"start": "21:00", "end": "08:00"});
        let spec = parse_spec(&local, near, "Europe/Berlin").unwrap();
        assert_eq!(spec.start_at, Some(at("2099-01-01T00:00:00Z")));
        assert_eq!(spec.quiet_hours.unwrap().end, "08:00");
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let now = Utc::now();
        let case = |edit: &dyn Fn(&mut Value), code: &str| {
            let mut body = ok();
            edit(&mut body);
            assert_eq!(parse_spec(&body, now, "UTC").unwrap_err().code, code, "{body}");
        };
        case(&|b| b["name"] = json!(" "), "invalid_name");
        case(&|b| b["template"]["name"] = json!("Bad Name!"), "invalid_template");
        case(&|b| b["audience"] = json!({}), "invalid_audience");
        case(&|b| b["audience"] = json!({"all": true, "q": "a"}), "invalid_audience");
        case(&|b| b["audience"] = json!({"phones": ["12"]}), "invalid_audience");
        case(&|b| b["audience"] = json!({"contact_ids": ["x"]}), "invalid_audience");
        case(&|b| b["audience"] = json!({"tags_any": ["#?!"]}), "invalid_audience");
        case(
            &|b| b["parameters"] = json!({"1": "contact.password"}),
            "invalid_parameters",
        );
        case(&|b| b["parameters"] = json!({"1": "name"}), "invalid_parameters");
        case(&|b| b["start_at"] = json!("2999-01-01T00:00:00Z"), "invalid_start_at");
        case(&|b| b["start_at"] = json!("soon"), "invalid_start_at");
        case(&|b| b["time_zone"] = json!("Mars/Olympus"), "invalid_time_zone");
        case(&|b| b["quiet_hours"] = json!({"start": "21:00"}), "invalid_body");
        case(
            &|b| b["quiet_hours"] = json!({"start": "21:00", "end": "21:00"}),
            "invalid_quiet_hours",
        );
        case(&|b| b["from"] = json!("abc"), "invalid_from");
        case(&|b| b["extra"] = json!(1), "invalid_body");
        let many: Vec<String> = (0..=MAX_EXPLICIT).map(|i| format!("+1415555{i:04}")).collect();
        case(&|b| b["audience"] = json!({"phones": many}), "invalid_audience");
    }
}
