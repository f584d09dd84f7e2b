//! Contacts: the people a tenant talks to on WhatsApp. Types, validation and normalisation, the
//! PATCH (JSON merge-patch, RFC 7396) rules and search keys. Pure functions, no I/O.
//!
//! Error messages never repeat what was submitted: phones, names, emails, tags and attribute
//! keys may be personal data, and error bodies end up in client logs and in ours.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::ids;

pub const MAX_USER_ID_CHARS: usize = 128;
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_CHARS: usize = 64;
pub const MAX_ATTRIBUTES: usize = 50;
pub const MAX_ATTRIBUTE_KEY_CHARS: usize = 64;
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 1024;
pub const MAX_CONSENT_SOURCE_CHARS: usize = 128;

/// E.164 caps a number at 15 digits, country code included.
const MAX_E164_DIGITS: usize = 15;
/// Niue (+683 xxxx) has the shortest numbers in use: 7 digits with the country code.
const MIN_E164_DIGITS: usize = 7;
/// Room for separators. Anything longer is not a phone number and never reaches the parser.
const MAX_PHONE_INPUT_CHARS: usize = 40;

/// The fields a client may send on create, and the only ones PATCH may touch.
pub const WRITABLE_FIELDS: [&str; 7] = ["phone", "user_id", "name", "email", "language", "tags", "attributes"];

// ---------------------------------------------------------------------------------------------
// Types

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarketingConsent {
    OptedIn,
    OptedOut,
    /// Never stated: treated like opted out for marketing sends.
    #[default]
    Unknown,
}

impl MarketingConsent {
    pub fn as_str(self) -> &'static str {
        match self {
            MarketingConsent::OptedIn => "opted_in",
            MarketingConsent::OptedOut => "opted_out",
            MarketingConsent::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Consent {
    pub marketing: MarketingConsent,
    pub updated_at: Option<DateTime<Utc>>,
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub contact_id: String,
    pub tenant_id: String,
    /// E.164 (`+` and digits).
    pub phone: Option<String>,
    /// WhatsApp business-scoped user id: a contact may have one and no phone number.
    pub user_id: Option<String>,
    pub name: Option<String>,
    /// The customer's WhatsApp profile name, as last seen in a webhook (not editable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    pub email: Option<String>,
    /// The customer's language (Meta's code, `pt_BR`): the first step of the template
    /// language fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub consent: Consent,
    /// Restricted contacts get no outbound and no processing beyond storage.
    #[serde(default)]
    pub restricted: bool,
    /// Opens the 24 h customer-service window.
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// The tenant's number (phone number id) the customer last wrote to: where replies go
    /// from unless a send names another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_number: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic concurrency: every write expects the version it read and stores the next one.
    pub version: u64,
}

impl Contact {
    /// A new contact from validated input: fresh id, consent unknown, not restricted, version 1.
    pub fn new(tenant_id: &str, valid: ValidContact, now: DateTime<Utc>) -> Contact {
        Contact {
            contact_id: ids::new_id(),
            tenant_id: tenant_id.to_owned(),
            phone: valid.phone,
            user_id: valid.user_id,
            name: valid.name,
            profile_name: None,
            email: valid.email,
            language: valid.language,
            tags: valid.tags,
            attributes: valid.attributes,
            consent: Consent::default(),
            restricted: false,
            last_inbound_at: None,
            last_number: None,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }
}

/// What a list of conversations shows of a contact: who it is and its tags (for the tag
/// filter), read without the rest of the profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactSummary {
    pub contact_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub profile_name: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl ContactSummary {
    /// The attributes of a stored profile a summary reads.
    pub const ATTRIBUTES: &[&str] = &["contact_id", "name", "profile_name", "phone", "tags"];

    /// The name to show: the one the business gave, else the customer's WhatsApp profile name.
    pub fn display_name(&self) -> Option<&str> {
        self.name.as_deref().or(self.profile_name.as_deref())
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// The copy of a contact's summary kept on each of its conversations (`contact_card`), so an
/// inbox page reads its rows' names, phones and tags with the rows instead of a second request.
/// `version` is the contact's version it was copied at: a copy only ever replaces an older one.
/// The API's contact edits rewrite it in their own transaction; the events function fills it on
/// a new conversation and rewrites it after any other change of these fields (the customer's
/// WhatsApp profile name), so it trails those by the stream's delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactCard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub version: u64,
}

impl ContactCard {
    pub fn of(contact: &Contact) -> ContactCard {
        ContactCard {
            name: contact.name.clone(),
            profile_name: contact.profile_name.clone(),
            phone: contact.phone.clone(),
            tags: contact.tags.clone(),
            version: contact.version,
        }
    }

    /// Whether the two differ in what a card shows (the version aside).
    pub fn shows_other_than(&self, other: &ContactCard) -> bool {
        (&self.name, &self.profile_name, &self.phone, &self.tags)
            != (&other.name, &other.profile_name, &other.phone, &other.tags)
    }

    pub fn into_summary(self, contact_id: String) -> ContactSummary {
        ContactSummary {
            contact_id,
            name: self.name,
            profile_name: self.profile_name,
            phone: self.phone,
            tags: self.tags,
        }
    }
}

impl From<&Contact> for ContactSummary {
    fn from(c: &Contact) -> Self {
        ContactSummary {
            contact_id: c.contact_id.clone(),
            name: c.name.clone(),
            profile_name: c.profile_name.clone(),
            phone: c.phone.clone(),
            tags: c.tags.clone(),
        }
    }
}

/// One entry of a contact's consent history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChange {
    pub contact_id: String,
    pub marketing: MarketingConsent,
    pub previous: MarketingConsent,
    pub source: String,
    /// An API key id, `"inbound_keyword"` or `"system"`.
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// One entry of a contact's restriction history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestrictionChange {
    pub contact_id: String,
    pub restricted: bool,
    pub previous: bool,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ContactError {
    #[error("request body must be valid JSON")]
    InvalidJson,
    #[error("request body must be a JSON object")]
    BodyNotObject,
    #[error("unknown field `{field}`; allowed: phone, user_id, name, email, language, tags, attributes")]
    UnknownField { field: String },
    #[error("phone must be a valid number in E.164 form: '+', country code, number")]
    InvalidPhone,
    #[error("user_id must be 1 to {max} characters of letters, digits, '.', '-', '_' or ':'", max = MAX_USER_ID_CHARS)]
    InvalidUserId,
    #[error("name must be a string of at most {max} characters without control characters", max = MAX_NAME_CHARS)]
    InvalidName,
    #[error("email must look like name@example.com and be at most {max} characters", max = MAX_EMAIL_CHARS)]
    InvalidEmail,
    #[error("language must be a language code like en, en_US or pt_BR")]
    InvalidLanguage,
    #[error("tags must be a list of strings")]
    TagsNotList,
    #[error("at most {max} distinct tags are allowed", max = MAX_TAGS)]
    TooManyTags,
    #[error(
        "tags[{index}] must be 1 to {max} characters of letters, digits, spaces, '-', '_', ':' or '.'",
        max = MAX_TAG_CHARS
    )]
    InvalidTag { index: usize },
    #[error("attributes must be an object of string values")]
    AttributesNotObject,
    #[error("at most {max} attributes are allowed", max = MAX_ATTRIBUTES)]
    TooManyAttributes,
    #[error(
        "attribute keys must be 1 to {max} characters of letters, digits, '_', '.' or '-'",
        max = MAX_ATTRIBUTE_KEY_CHARS
    )]
    InvalidAttributeKey,
    #[error("attribute values must be strings of at most {max} characters", max = MAX_ATTRIBUTE_VALUE_CHARS)]
    InvalidAttributeValue,
    #[error("a contact needs a phone or a user_id")]
    MissingIdentity,
    #[error("the patch must be a JSON object")]
    PatchNotObject,
    #[error("`{field}` cannot be patched; patchable fields: phone, user_id, name, email, language, tags, attributes")]
    NotPatchable { field: String },
    #[error("marketing must be \"opted_in\" or \"opted_out\"")]
    InvalidConsent,
    #[error("source must be 1 to {max} characters without control characters", max = MAX_CONSENT_SOURCE_CHARS)]
    InvalidConsentSource,
}

impl ContactError {
    /// The stable API error code (`{"error": {"code": ...}}`).
    pub fn code(&self) -> &'static str {
        use ContactError::*;
        match self {
            InvalidJson | BodyNotObject | UnknownField { .. } => "invalid_body",
            InvalidPhone => "invalid_phone",
            InvalidUserId => "invalid_user_id",
            InvalidName => "invalid_name",
            InvalidEmail => "invalid_email",
            InvalidLanguage => "invalid_language",
            TagsNotList | TooManyTags | InvalidTag { .. } => "invalid_tags",
            AttributesNotObject | TooManyAttributes | InvalidAttributeKey | InvalidAttributeValue => {
                "invalid_attributes"
            }
            MissingIdentity => "missing_identity",
            PatchNotObject | NotPatchable { .. } => "invalid_patch",
            InvalidConsent | InvalidConsentSource => "invalid_consent",
        }
    }
}

/// A client-chosen field name, fit to quote in an error: field names are not personal data, but a
/// JSON key can hold anything, so only identifier-like names are echoed.
fn printable_field(key: &str) -> String {
    let identifier = (1..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if identifier {
        key.to_owned()
    } else {
        "(not shown)".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Field rules

fn is_e164_shape(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (MIN_E164_DIGITS..=MAX_E164_DIGITS).contains(&d.len())
            && d.bytes().all(|b| b.is_ascii_digit())
            && !d.starts_with('0')
    })
}

/// Normalises an international phone number (`+` first; spaces, dashes and parentheses allowed)
/// to E.164, and refuses numbers the numbering plan says cannot exist.
pub fn normalize_phone(input: &str) -> Result<String, ContactError> {
    let s = input.trim();
    let rest = s.strip_prefix('+').ok_or(ContactError::InvalidPhone)?;
    // Only a short, plain string reaches the parser: it also accepts letters, extensions and
    // `tel:` URIs we do not want, and a small surface keeps its less-trodden paths out of reach.
    if s.chars().count() > MAX_PHONE_INPUT_CHARS {
        return Err(ContactError::InvalidPhone);
    }
    let mut digits = 0;
    for c in rest.chars() {
        match c {
            '0'..='9' => digits += 1,
            ' ' | '-' | '(' | ')' => {}
            _ => return Err(ContactError::InvalidPhone),
        }
    }
    if !(MIN_E164_DIGITS..=MAX_E164_DIGITS).contains(&digits) {
        return Err(ContactError::InvalidPhone);
    }
    let number = phonenumber::parse(None, s).map_err(|_| ContactError::InvalidPhone)?;
    if number.extension().is_some() || !phonenumber::is_valid(&number) {
        return Err(ContactError::InvalidPhone);
    }
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    // What gets stored and indexed must be exactly `+` and digits, whatever the parser did.
    if is_e164_shape(&e164) {
        Ok(e164)
    } else {
        Err(ContactError::InvalidPhone)
    }
}

/// Loads the numbering-plan metadata behind [`normalize_phone`] on a background thread. The
/// `phonenumber` crate parses all of it on first use (~0.1 s in a release build; see
/// bench/REPORT.md): started at init, that overlaps the runtime's first poll and the first
/// event's network waits instead of adding to the first message's latency, and it keeps the
/// init path itself short. Later calls wait for the load if it is still under way.
pub fn warm_phone_metadata_in_background() {
    let spawned = std::thread::Builder::new()
        .name("phone-metadata".into())
        .spawn(|| normalize_phone("+14155550123").is_ok());
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the phone metadata warm-up; the first use loads it");
    }
}

/// The E.164 phone for a webhook's `wa_id` (digits, no `+`); `None` if it is not digits.
///
/// Unlike [`normalize_phone`] this keeps a well-shaped number the numbering-plan metadata calls
/// invalid: `wa_id` is the number WhatsApp itself routes to (Brazilian accounts registered before
/// the ninth mobile digit, ranges newer than the metadata). When it does parse, the canonical
/// form is used so it matches contacts created through the API.
pub fn phone_from_wa_id(wa_id: &str) -> Option<String> {
    let wa_id = wa_id.trim();
    let plain = format!("+{wa_id}");
    if !is_e164_shape(&plain) {
        return None;
    }
    Some(normalize_phone(&plain).unwrap_or(plain))
}

/// A phone as a contact may hold it without the numbering plan knowing it ([`phone_from_wa_id`]
/// stores such numbers: WhatsApp routes to them): `+` and 8–15 digits once spaces, dashes and
/// parentheses are dropped. Only for finding a contact that already has the number, never for
/// creating one (that takes [`normalize_phone`]).
pub fn phone_on_record(input: &str) -> Option<String> {
    let plain: String = input
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    is_e164_shape(&plain).then_some(plain)
}

/// Trims and checks a WhatsApp business-scoped user id.
pub fn normalize_user_id(input: &str) -> Result<String, ContactError> {
    let s = input.trim();
    let ok = (1..=MAX_USER_ID_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(ContactError::InvalidUserId)
    }
}

/// Trims a display name; blank means no name.
pub fn normalize_name(input: &str) -> Result<Option<String>, ContactError> {
    let s = input.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_NAME_CHARS || s.chars().any(char::is_control) {
        return Err(ContactError::InvalidName);
    }
    Ok(Some(s.to_owned()))
}

/// A basic shape check, not RFC 5322: one `@`, a non-empty local part, a dotted domain with no
/// empty labels, no whitespace. The domain is lowercased (it is case-insensitive; the local part
/// is not, strictly, so it is kept as given).
pub fn normalize_email(input: &str) -> Result<String, ContactError> {
    let s = input.trim();
    let err = ContactError::InvalidEmail;
    if s.chars().count() > MAX_EMAIL_CHARS || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err);
    }
    let (local, domain) = s.split_once('@').ok_or(err.clone())?;
    if local.is_empty() || domain.contains('@') || !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Err(err);
    }
    Ok(format!("{local}@{}", domain.to_lowercase()))
}

/// The canonical form of one tag (trimmed, lowercased, runs of spaces collapsed), or `None` if
/// it breaks the rules. Also what a `?tag=` filter should be normalised with.
pub fn normalize_tag(input: &str) -> Option<String> {
    let mut out = String::new();
    for word in input.trim().to_lowercase().split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | ' ');
    ((1..=MAX_TAG_CHARS).contains(&out.chars().count()) && out.chars().all(allowed)).then_some(out)
}

/// Normalises a tag list, dropping later duplicates (after normalisation) and keeping order.
pub fn normalize_tags<I, S>(tags: I) -> Result<Vec<String>, ContactError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, raw) in tags.into_iter().enumerate() {
        let tag = normalize_tag(raw.as_ref()).ok_or(ContactError::InvalidTag { index })?;
        if seen.insert(tag.clone()) {
            // Checked as we go, so a huge list stops early instead of being normalised whole.
            if out.len() == MAX_TAGS {
                return Err(ContactError::TooManyTags);
            }
            out.push(tag);
        }
    }
    Ok(out)
}

pub fn is_valid_attribute_key(key: &str) -> bool {
    (1..=MAX_ATTRIBUTE_KEY_CHARS).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A contact's language in Meta's form (`pt-br` → `pt_BR`).
pub fn normalize_language(raw: &str) -> Result<String, ContactError> {
    crate::template::language::normalize(raw).ok_or(ContactError::InvalidLanguage)
}

fn is_valid_attribute_value(value: &str) -> bool {
    value.chars().count() <= MAX_ATTRIBUTE_VALUE_CHARS
}

/// Checks an attribute map. Keys are exact (no trimming or case folding); values are kept as given.
pub fn validate_attributes(attributes: &BTreeMap<String, String>) -> Result<(), ContactError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(ContactError::TooManyAttributes);
    }
    for (key, value) in attributes {
        if !is_valid_attribute_key(key) {
            return Err(ContactError::InvalidAttributeKey);
        }
        if !is_valid_attribute_value(value) {
            return Err(ContactError::InvalidAttributeValue);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Create

/// The body of `POST /v1/contacts`.
///
/// Handlers should prefer [`NewContact::from_json`]: serde's own type errors quote the offending
/// value (`invalid type: integer 14155550123, ...`), which may be personal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub attributes: BTreeMap<String, String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A create request that passed every rule, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidContact {
    pub phone: Option<String>,
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub language: Option<String>,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

/// `null` or a string; anything else is `err`.
fn opt_str(value: &Value, err: ContactError) -> Result<Option<&str>, ContactError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(err),
    }
}

/// A JSON tag list (`null` is the empty list), not yet normalised.
fn tags_from_json(value: &Value) -> Result<Vec<&str>, ContactError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().ok_or(ContactError::TagsNotList))
            .collect(),
        _ => Err(ContactError::TagsNotList),
    }
}

impl NewContact {
    /// Parses a request body with errors that never quote the submitted values.
    pub fn from_json(body: &[u8]) -> Result<NewContact, ContactError> {
        let value: Value = serde_json::from_slice(body).map_err(|_| ContactError::InvalidJson)?;
        let fields = value.as_object().ok_or(ContactError::BodyNotObject)?;
        let mut new = NewContact::default();
        for (key, value) in fields {
            match key.as_str() {
                "phone" => new.phone = opt_str(value, ContactError::InvalidPhone)?.map(str::to_owned),
                "user_id" => new.user_id = opt_str(value, ContactError::InvalidUserId)?.map(str::to_owned),
                "name" => new.name = opt_str(value, ContactError::InvalidName)?.map(str::to_owned),
                "email" => new.email = opt_str(value, ContactError::InvalidEmail)?.map(str::to_owned),
                "language" => new.language = opt_str(value, ContactError::InvalidLanguage)?.map(str::to_owned),
                "tags" => new.tags = tags_from_json(value)?.into_iter().map(str::to_owned).collect(),
                "attributes" => {
                    new.attributes = match value {
                        Value::Null => BTreeMap::new(),
                        Value::Object(map) => map
                            .iter()
                            .map(|(k, v)| match v {
                                Value::String(s) => Ok((k.clone(), s.clone())),
                                _ => Err(ContactError::InvalidAttributeValue),
                            })
                            .collect::<Result<_, _>>()?,
                        _ => return Err(ContactError::AttributesNotObject),
                    }
                }
                other => {
                    return Err(ContactError::UnknownField {
                        field: printable_field(other),
                    });
                }
            }
        }
        Ok(new)
    }

    /// Normalises every field and checks the create rules.
    pub fn validate(self) -> Result<ValidContact, ContactError> {
        let phone = self.phone.as_deref().map(normalize_phone).transpose()?;
        let user_id = self.user_id.as_deref().map(normalize_user_id).transpose()?;
        let name = match self.name.as_deref() {
            Some(n) => normalize_name(n)?,
            None => None,
        };
        let email = self.email.as_deref().map(normalize_email).transpose()?;
        let language = self.language.as_deref().map(normalize_language).transpose()?;
        let tags = normalize_tags(&self.tags)?;
        validate_attributes(&self.attributes)?;
        if phone.is_none() && user_id.is_none() {
            return Err(ContactError::MissingIdentity);
        }
        Ok(ValidContact {
            phone,
            user_id,
            name,
            email,
            language,
            tags,
            attributes: self.attributes,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// PATCH (JSON merge-patch, RFC 7396)

/// An identity field's move: the storage layer releases `old`'s uniqueness record and claims `new`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityChange {
    pub old: Option<String>,
    pub new: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPatchResult {
    /// The patched contact: `version` + 1 and `updated_at` = `now`, even when nothing changed.
    pub contact: Contact,
    /// Names of the fields whose value actually changed (for the audit log; empty for a no-op,
    /// which a caller may choose not to write).
    pub changed_fields: Vec<&'static str>,
    pub phone_change: Option<IdentityChange>,
    pub user_id_change: Option<IdentityChange>,
}

/// RFC 7396 on the `attributes` map: `null` clears it, a member set to `null` removes that key,
/// any other member sets or overwrites it.
fn merge_attributes(attributes: &mut BTreeMap<String, String>, patch: &Value) -> Result<(), ContactError> {
    match patch {
        Value::Null => attributes.clear(),
        Value::Object(members) => {
            for (key, value) in members {
                if !is_valid_attribute_key(key) {
                    return Err(ContactError::InvalidAttributeKey);
                }
                match value {
                    Value::Null => {
                        attributes.remove(key);
                    }
                    Value::String(s) if is_valid_attribute_value(s) => {
                        attributes.insert(key.clone(), s.clone());
                    }
                    _ => return Err(ContactError::InvalidAttributeValue),
                }
            }
        }
        _ => return Err(ContactError::AttributesNotObject),
    }
    // After the whole merge: removals listed after additions must count.
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(ContactError::TooManyAttributes);
    }
    Ok(())
}

fn identity_change(old: &Option<String>, new: &Option<String>) -> Option<IdentityChange> {
    (old != new).then(|| IdentityChange {
        old: old.clone(),
        new: new.clone(),
    })
}

/// Applies a `PATCH /v1/contacts/{id}` body to `current`. Only [`WRITABLE_FIELDS`] may appear;
/// values follow the create rules; `null` removes an optional field (`tags: null` empties the
/// list); `tags` is replaced whole and `attributes` merged. The patch is all or nothing.
pub fn apply_patch(current: &Contact, patch: &Value, now: DateTime<Utc>) -> Result<ContactPatchResult, ContactError> {
    let fields = patch.as_object().ok_or(ContactError::PatchNotObject)?;
    // Refuse read-only and unknown fields before anything else, whatever the key order.
    if let Some(key) = fields.keys().find(|k| !WRITABLE_FIELDS.contains(&k.as_str())) {
        return Err(ContactError::NotPatchable {
            field: printable_field(key),
        });
    }
    let mut next = current.clone();
    for (key, value) in fields {
        match key.as_str() {
            "phone" => {
                next.phone = opt_str(value, ContactError::InvalidPhone)?
                    .map(normalize_phone)
                    .transpose()?
            }
            "user_id" => {
                next.user_id = opt_str(value, ContactError::InvalidUserId)?
                    .map(normalize_user_id)
                    .transpose()?
            }
            "name" => {
                next.name = match opt_str(value, ContactError::InvalidName)? {
                    Some(n) => normalize_name(n)?,
                    None => None,
                }
            }
            "email" => {
                next.email = opt_str(value, ContactError::InvalidEmail)?
                    .map(normalize_email)
                    .transpose()?
            }
            "language" => {
                next.language = opt_str(value, ContactError::InvalidLanguage)?
                    .map(normalize_language)
                    .transpose()?
            }
            "tags" => next.tags = normalize_tags(tags_from_json(value)?)?,
            "attributes" => merge_attributes(&mut next.attributes, value)?,
            // Unreachable: keys were checked above. Refusing again keeps this total without a panic.
            other => {
                return Err(ContactError::NotPatchable {
                    field: printable_field(other),
                });
            }
        }
    }
    if next.phone.is_none() && next.user_id.is_none() {
        return Err(ContactError::MissingIdentity);
    }

    let mut changed_fields = Vec::new();
    let pairs: [(&'static str, bool); 7] = [
        ("phone", next.phone != current.phone),
        ("user_id", next.user_id != current.user_id),
        ("name", next.name != current.name),
        ("email", next.email != current.email),
        ("language", next.language != current.language),
        ("tags", next.tags != current.tags),
        ("attributes", next.attributes != current.attributes),
    ];
    for (field, changed) in pairs {
        if changed {
            changed_fields.push(field);
        }
    }
    let phone_change = identity_change(&current.phone, &next.phone);
    let user_id_change = identity_change(&current.user_id, &next.user_id);
    next.version = current.version.saturating_add(1);
    next.updated_at = now;
    Ok(ContactPatchResult {
        contact: next,
        changed_fields,
        phone_change,
        user_id_change,
    })
}

// ---------------------------------------------------------------------------------------------
// Consent and restriction

/// Records a marketing consent statement (`PUT /v1/contacts/{id}/consent`, or an inbound
/// STOP/START). A repeat of the current state is still recorded: it renews the evidence.
pub fn set_consent(
    current: &Contact,
    marketing: MarketingConsent,
    source: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(Contact, ConsentChange), ContactError> {
    if marketing == MarketingConsent::Unknown {
        return Err(ContactError::InvalidConsent);
    }
    let source = source.trim();
    if !(1..=MAX_CONSENT_SOURCE_CHARS).contains(&source.chars().count()) || source.chars().any(char::is_control) {
        return Err(ContactError::InvalidConsentSource);
    }
    let change = ConsentChange {
        contact_id: current.contact_id.clone(),
        marketing,
        previous: current.consent.marketing,
        source: source.to_owned(),
        actor: actor.to_owned(),
        at: now,
    };
    let mut next = current.clone();
    next.consent = Consent {
        marketing,
        updated_at: Some(now),
        source: Some(source.to_owned()),
    };
    next.version = current.version.saturating_add(1);
    next.updated_at = now;
    Ok((next, change))
}

/// Sets or lifts the restriction. `reason` is written by our own code, not taken from clients.
pub fn set_restriction(
    current: &Contact,
    restricted: bool,
    actor: &str,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> (Contact, RestrictionChange) {
    let change = RestrictionChange {
        contact_id: current.contact_id.clone(),
        restricted,
        previous: current.restricted,
        actor: actor.to_owned(),
        at: now,
        reason,
    };
    let mut next = current.clone();
    next.restricted = restricted;
    next.version = current.version.saturating_add(1);
    next.updated_at = now;
    (next, change)
}

// ---------------------------------------------------------------------------------------------
// Search keys

/// The form names are indexed and searched in: trimmed, whitespace runs collapsed to one space,
/// lowercased (Unicode-aware; no accent folding).
pub fn name_search_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for word in name.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_lowercase()
}

/// The digits of a phone number, which is how phones are indexed and prefix-searched.
pub fn phone_search_key(e164: &str) -> String {
    e164.chars().filter(char::is_ascii_digit).collect()
}

/// What a `?q=` filter searches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKind {
    /// Nothing to search for: list without a `q` filter.
    Empty,
    /// Digits only, to match against [`phone_search_key`].
    PhonePrefix(String),
    /// Normalised with [`name_search_key`].
    NamePrefix(String),
}

/// A query starting with `+` or a digit is a phone prefix; anything else a name prefix.
pub fn query_kind(q: &str) -> QueryKind {
    let q = q.trim();
    match q.chars().next() {
        None => QueryKind::Empty,
        Some(c) if c == '+' || c.is_ascii_digit() => {
            let digits = phone_search_key(q);
            if digits.is_empty() {
                QueryKind::Empty
            } else {
                QueryKind::PhonePrefix(digits)
            }
        }
        Some(_) => QueryKind::NamePrefix(name_search_key(q)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use serde_json::json;

    fn contact() -> Contact {
        let valid = NewContact {
            phone: Some("+14155550123".into()),
            user_id: Some("US.123".into()),
            name: Some("Ana".into()),
            email: Some("ana@example.com".into()),
            language: Some("pt-br".into()),
            tags: vec!["vip".into()],
            attributes: BTreeMap::from([("plan".into(), "pro".into()), ("city".into(), "Lisbon".into())]),
        }
        .validate()
        .unwrap();
        Contact::new(&ids::new_id(), valid, Utc::now() - Duration::hours(1))
    }

    fn patch(c: &Contact, p: Value) -> Result<ContactPatchResult, ContactError> {
        apply_patch(c, &p, Utc::now())
    }

    // --- phones

    #[test]
    fn phones_from_several_countries_normalise_to_e164() {
        for (input, want) in [
            ("+14155550123", "+14155550123"),
            ("+1 (415) 555-0123", "+14155550123"),
            ("  +1 415 555 0123 ", "+14155550123"),
            ("+447911123456", "+447911123456"),
            ("+44 7911 123456", "+447911123456"),
            ("+44 (0)7911 123456", "+447911123456"),
            ("+5511987654321", "+5511987654321"),
            ("+55 (11) 98765-4321", "+5511987654321"),
            ("+919876543210", "+919876543210"),
            ("+91 98765 43210", "+919876543210"),
            ("+351 912 345 678", "+351912345678"),
        ] {
            assert_eq!(normalize_phone(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_phones_are_refused() {
        for input in [
            "",
            "+",
            "14155550123",        // no leading +: national forms are ambiguous
            "004414155550123",    // IDD prefix instead of +
            "+1 415 555 0123 x5", // extension
            "+1.415.555.0123",    // dots are not an accepted separator
            "+1415555012a",
            "tel:+14155550123",
            "++14155550123",
            "+1234567890123456", // 16 digits
            "+123456",           // 6 digits
            "+999123456789",     // no such country code
            "+1 011 555 0123",   // NANP area codes never start with 0
            "+4479111234564567",
            "+447700900123", // Ofcom's range reserved for TV and film: never assigned
            "+١٤١٥٥٥٥٠١٢٣",  // non-ASCII digits
            "+14155550123\u{0}",
        ] {
            assert_eq!(normalize_phone(input), Err(ContactError::InvalidPhone), "{input:?}");
        }
        let long = format!("+1 415 555 0123{}", " ".repeat(40));
        assert_eq!(normalize_phone(&format!("{long}-")), Err(ContactError::InvalidPhone));
    }

    #[test]
    fn phone_error_does_not_echo_the_input() {
        let err = normalize_phone("+1 415 555 01").unwrap_err();
        assert_eq!(err.code(), "invalid_phone");
        assert!(!err.to_string().contains("415"));
    }

    #[test]
    fn wa_ids_become_e164() {
        assert_eq!(phone_from_wa_id("14155550123").as_deref(), Some("+14155550123"));
        assert_eq!(phone_from_wa_id("447911123456").as_deref(), Some("+447911123456"));
        // Old-style Brazilian mobile without the ninth digit: kept, WhatsApp routes to it.
        assert_eq!(phone_from_wa_id("551187654321").as_deref(), Some("+551187654321"));
        for bad in [
            "",
            "+14155550123",
            "0144155550123",
            "1415555012a",
            "123456",
            "1234567890123456",
        ] {
            assert_eq!(phone_from_wa_id(bad), None, "{bad}");
        }
    }

    // --- other fields

    #[test]
    fn user_id_rules() {
        assert_eq!(normalize_user_id(" US.1234:ab-c_d ").as_deref(), Ok("US.1234:ab-c_d"));
        assert!(normalize_user_id(&"a".repeat(128)).is_ok());
        for bad in [
            String::new(),
            "  ".into(),
            "a".repeat(129),
            "a b".into(),
            "a/b".into(),
            "é".into(),
        ] {
            assert_eq!(normalize_user_id(&bad), Err(ContactError::InvalidUserId), "{bad}");
        }
    }

    #[test]
    fn name_rules() {
        assert_eq!(normalize_name("  Ana Souza "), Ok(Some("Ana Souza".into())));
        assert_eq!(normalize_name("   "), Ok(None));
        assert_eq!(normalize_name(""), Ok(None));
        let at_limit = "é".repeat(256);
        assert_eq!(normalize_name(&at_limit), Ok(Some(at_limit.clone())));
        assert_eq!(normalize_name(&"é".repeat(257)), Err(ContactError::InvalidName));
        assert_eq!(normalize_name("Ana\nSouza"), Err(ContactError::InvalidName));
    }

    #[test]
    fn email_rules() {
        assert_eq!(
            normalize_email(" Ana.S@Example.COM ").as_deref(),
            Ok("Ana.S@example.com")
        );
        let local = "a".repeat(254 - "@example.com".len());
        assert!(normalize_email(&format!("{local}@example.com")).is_ok());
        assert_eq!(
            normalize_email(&format!("{local}a@example.com")),
            Err(ContactError::InvalidEmail)
        );
        for bad in [
            "",
            "ana",
            "@example.com",
            "ana@",
            "ana@example",
            "ana@@example.com",
            "ana@b@example.com",
            "ana@.example.com",
            "ana@example.com.",
            "ana@example..com",
            "an a@example.com",
        ] {
            assert_eq!(normalize_email(bad), Err(ContactError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn tags_are_normalised_and_deduplicated() {
        let tags = normalize_tags(["VIP", " vip ", "Late  Payer", "são-paulo", "a:b.c_d", "late payer"]).unwrap();
        assert_eq!(tags, ["vip", "late payer", "são-paulo", "a:b.c_d"]);
        assert_eq!(normalize_tag(&"x".repeat(64)), Some("x".repeat(64)));
        assert_eq!(normalize_tag(&"x".repeat(65)), None);
        for bad in ["", "   ", "a/b", "a\tb", "#vip", "a,b"] {
            assert_eq!(normalize_tag(bad), None, "{bad:?}");
        }
        assert_eq!(
            normalize_tags(["ok", "no/slash"]),
            Err(ContactError::InvalidTag { index: 1 })
        );
    }

    #[test]
    fn tag_count_limit_is_on_distinct_tags() {
        let fifty: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
        assert_eq!(normalize_tags(&fifty).unwrap().len(), 50);
        let mut with_dups = fifty.clone();
        with_dups.extend(fifty.iter().map(|t| t.to_uppercase()));
        assert_eq!(normalize_tags(&with_dups).unwrap().len(), 50);
        let mut fifty_one = fifty;
        fifty_one.push("t50".into());
        assert_eq!(normalize_tags(&fifty_one), Err(ContactError::TooManyTags));
    }

    #[test]
    fn attribute_rules() {
        let mut attrs: BTreeMap<String, String> = (0..50).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(validate_attributes(&attrs), Ok(()));
        attrs.insert("k50".into(), "v".into());
        assert_eq!(validate_attributes(&attrs), Err(ContactError::TooManyAttributes));

        let one = |k: &str, v: &str| validate_attributes(&BTreeMap::from([(k.to_owned(), v.to_owned())]));
        assert_eq!(one(&"k".repeat(64), ""), Ok(()));
        assert_eq!(one("A-z_0.9", &"é".repeat(1024)), Ok(()));
        assert_eq!(one(&"k".repeat(65), "v"), Err(ContactError::InvalidAttributeKey));
        assert_eq!(one("", "v"), Err(ContactError::InvalidAttributeKey));
        assert_eq!(one("a b", "v"), Err(ContactError::InvalidAttributeKey));
        assert_eq!(one("ké", "v"), Err(ContactError::InvalidAttributeKey));
        assert_eq!(one("k", &"v".repeat(1025)), Err(ContactError::InvalidAttributeValue));
    }

    // --- create

    #[test]
    fn create_validates_and_normalises() {
        let v = NewContact {
            phone: Some("+44 7911 123456".into()),
            name: Some("  ".into()),
            email: Some("a@B.io".into()),
            tags: vec!["B".into(), "b".into()],
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(v.phone.as_deref(), Some("+447911123456"));
        assert_eq!(v.user_id, None);
        assert_eq!(v.name, None);
        assert_eq!(v.email.as_deref(), Some("a@b.io"));
        assert_eq!(v.tags, ["b"]);

        let only_user = NewContact {
            user_id: Some("US.1".into()),
            ..Default::default()
        };
        assert!(only_user.validate().is_ok());
        assert_eq!(NewContact::default().validate(), Err(ContactError::MissingIdentity));
        let no_id_but_name = NewContact {
            name: Some("Ana".into()),
            ..Default::default()
        };
        assert_eq!(no_id_but_name.validate().unwrap_err().code(), "missing_identity");
    }

    #[test]
    fn new_contacts_start_clean() {
        let c = contact();
        assert!(ids::is_valid_id(&c.contact_id));
        assert_eq!(c.version, 1);
        assert_eq!(c.consent, Consent::default());
        assert_eq!(c.consent.marketing, MarketingConsent::Unknown);
        assert!(!c.restricted);
        assert_eq!(c.created_at, c.updated_at);
    }

    #[test]
    fn create_body_parsing() {
        let body = br#"{"phone":"+14155550123","tags":null,"attributes":{"a":"1"},"name":null}"#;
        let n = NewContact::from_json(body).unwrap();
        assert_eq!(n.phone.as_deref(), Some("+14155550123"));
        assert!(n.tags.is_empty());
        assert_eq!(n.attributes["a"], "1");
        // serde derive path agrees, including nulls for the collections.
        assert_eq!(serde_json::from_slice::<NewContact>(body).unwrap(), n);
        assert!(serde_json::from_slice::<NewContact>(br#"{"phone":"+1","extra":1}"#).is_err());

        let err = |b: &[u8]| NewContact::from_json(b).unwrap_err();
        assert_eq!(err(b"{"), ContactError::InvalidJson);
        assert_eq!(err(b"[]"), ContactError::BodyNotObject);
        assert_eq!(
            err(br#"{"consent":"opted_in"}"#),
            ContactError::UnknownField {
                field: "consent".into()
            }
        );
        assert_eq!(
            err(br#"{"+14155550123":1}"#),
            ContactError::UnknownField {
                field: "(not shown)".into()
            }
        );
        let e = err(br#"{"phone":14155550123}"#);
        assert_eq!(e, ContactError::InvalidPhone);
        assert!(!e.to_string().contains("4155550123"));
        assert_eq!(err(br#"{"user_id":1}"#), ContactError::InvalidUserId);
        assert_eq!(err(br#"{"name":["a"]}"#), ContactError::InvalidName);
        assert_eq!(err(br#"{"email":true}"#), ContactError::InvalidEmail);
        assert_eq!(err(br#"{"tags":"vip"}"#), ContactError::TagsNotList);
        assert_eq!(err(br#"{"tags":["vip",1]}"#), ContactError::TagsNotList);
        assert_eq!(err(br#"{"attributes":[]}"#), ContactError::AttributesNotObject);
        assert_eq!(err(br#"{"attributes":{"a":1}}"#), ContactError::InvalidAttributeValue);
    }

    #[test]
    fn error_codes_are_stable() {
        use ContactError::*;
        for (e, code) in [
            (InvalidJson, "invalid_body"),
            (UnknownField { field: "x".into() }, "invalid_body"),
            (InvalidPhone, "invalid_phone"),
            (InvalidUserId, "invalid_user_id"),
            (InvalidName, "invalid_name"),
            (InvalidEmail, "invalid_email"),
            (InvalidTag { index: 0 }, "invalid_tags"),
            (TooManyAttributes, "invalid_attributes"),
            (MissingIdentity, "missing_identity"),
            (NotPatchable { field: "x".into() }, "invalid_patch"),
            (PatchNotObject, "invalid_patch"),
            (InvalidConsentSource, "invalid_consent"),
        ] {
            assert_eq!(e.code(), code, "{e}");
        }
        assert_eq!(
            InvalidTag { index: 3 }.to_string(),
            "tags[3] must be 1 to 64 characters of letters, digits, spaces, '-', '_', ':' or '.'"
        );
    }

    // --- patch

    #[test]
    fn patch_sets_and_removes_optional_fields() {
        let c = contact();
        let now = Utc::now();
        let r = apply_patch(&c, &json!({"name": null, "email": "New@X.org"}), now).unwrap();
        assert_eq!(r.contact.name, None);
        assert_eq!(r.contact.email.as_deref(), Some("New@x.org"));
        assert_eq!(r.contact.version, c.version + 1);
        assert_eq!(r.contact.updated_at, now);
        assert_eq!(r.contact.created_at, c.created_at);
        assert_eq!(r.changed_fields, ["name", "email"]);
        assert_eq!((r.phone_change, r.user_id_change), (None, None));
        // Untouched fields stay.
        assert_eq!(r.contact.tags, c.tags);
        assert_eq!(r.contact.attributes, c.attributes);
        // A blank name also removes it.
        assert_eq!(patch(&c, json!({"name": "  "})).unwrap().contact.name, None);
    }

    #[test]
    fn patch_reports_identity_moves() {
        let c = contact();
        let r = patch(&c, json!({"phone": "+44 7911 123456", "user_id": null})).unwrap();
        assert_eq!(r.contact.phone.as_deref(), Some("+447911123456"));
        assert_eq!(
            r.phone_change,
            Some(IdentityChange {
                old: Some("+14155550123".into()),
                new: Some("+447911123456".into())
            })
        );
        assert_eq!(
            r.user_id_change,
            Some(IdentityChange {
                old: Some("US.123".into()),
                new: None
            })
        );
        // The same number in another spelling is not a move.
        let same = patch(&c, json!({"phone": "+1 (415) 555-0123"})).unwrap();
        assert_eq!(same.phone_change, None);
        assert!(same.changed_fields.is_empty());
        assert_eq!(same.contact.version, c.version + 1);
    }

    #[test]
    fn patch_cannot_remove_both_identities() {
        let c = contact();
        assert_eq!(
            patch(&c, json!({"phone": null, "user_id": null})),
            Err(ContactError::MissingIdentity)
        );
        let phone_only = patch(&c, json!({"user_id": null})).unwrap().contact;
        assert_eq!(
            patch(&phone_only, json!({"phone": null})),
            Err(ContactError::MissingIdentity)
        );
        // Swapping one identity for the other in one patch is fine.
        let swapped = patch(&phone_only, json!({"phone": null, "user_id": "US.9"})).unwrap();
        assert_eq!(swapped.contact.phone, None);
        assert_eq!(swapped.contact.user_id.as_deref(), Some("US.9"));
    }

    #[test]
    fn patch_merges_attributes_and_replaces_tags() {
        let c = contact();
        let r = patch(
            &c,
            json!({"attributes": {"city": null, "plan": "enterprise", "lang": "pt"}, "tags": ["New", "new", "b"]}),
        )
        .unwrap();
        assert_eq!(
            r.contact.attributes,
            BTreeMap::from([("plan".into(), "enterprise".into()), ("lang".into(), "pt".into())])
        );
        assert_eq!(r.contact.tags, ["new", "b"]);
        assert_eq!(r.changed_fields, ["tags", "attributes"]);
        // Removing a key that is not there is a no-op.
        assert_eq!(
            patch(&c, json!({"attributes": {"nope": null}}))
                .unwrap()
                .contact
                .attributes,
            c.attributes
        );
        // null clears the collections.
        let cleared = patch(&c, json!({"attributes": null, "tags": null})).unwrap().contact;
        assert!(cleared.attributes.is_empty() && cleared.tags.is_empty());
        assert!(patch(&c, json!({"tags": []})).unwrap().contact.tags.is_empty());
    }

    #[test]
    fn patch_attribute_limit_counts_the_merged_result() {
        let mut c = contact();
        c.attributes = (0..50).map(|i| (format!("k{i:02}"), "v".into())).collect();
        // Adding one and removing one stays at 50, whatever the key order.
        assert!(patch(&c, json!({"attributes": {"a_new": "v", "k49": null}})).is_ok());
        assert_eq!(
            patch(&c, json!({"attributes": {"z_new": "v"}})),
            Err(ContactError::TooManyAttributes)
        );
        assert_eq!(
            patch(&c, json!({"attributes": {"k00": 1}})),
            Err(ContactError::InvalidAttributeValue)
        );
        assert_eq!(
            patch(&c, json!({"attributes": {"bad key": null}})),
            Err(ContactError::InvalidAttributeKey)
        );
        assert_eq!(
            patch(&c, json!({"attributes": {"k": "v".repeat(1025)}})),
            Err(ContactError::InvalidAttributeValue)
        );
        assert_eq!(
            patch(&c, json!({"attributes": "x"})),
            Err(ContactError::AttributesNotObject)
        );
    }

    #[test]
    fn patch_refuses_read_only_unknown_and_malformed() {
        let c = contact();
        for field in [
            "contact_id",
            "tenant_id",
            "consent",
            "restricted",
            "last_inbound_at",
            "created_at",
            "updated_at",
            "version",
            "nickname",
        ] {
            let e = patch(&c, json!({"name": "Bo", field: null})).unwrap_err();
            assert_eq!(e, ContactError::NotPatchable { field: field.into() });
            assert_eq!(e.code(), "invalid_patch");
            assert!(e.to_string().contains(field));
        }
        // A key that could be personal data is not echoed.
        let e = patch(&c, json!({"ana@example.com": 1})).unwrap_err();
        assert!(!e.to_string().contains("ana@"));
        for not_object in [json!(null), json!([]), json!("x"), json!(1)] {
            assert_eq!(patch(&c, not_object), Err(ContactError::PatchNotObject));
        }
    }

    #[test]
    fn patch_values_follow_create_rules() {
        let c = contact();
        for (p, want) in [
            (json!({"phone": "14155550123"}), ContactError::InvalidPhone),
            (json!({"phone": 14155550123u64}), ContactError::InvalidPhone),
            (json!({"user_id": "a b"}), ContactError::InvalidUserId),
            (json!({"name": "x".repeat(257)}), ContactError::InvalidName),
            (json!({"email": "nope"}), ContactError::InvalidEmail),
            (json!({"tags": ["ok", "no/"]}), ContactError::InvalidTag { index: 1 }),
            (json!({"tags": "vip"}), ContactError::TagsNotList),
        ] {
            assert_eq!(patch(&c, p.clone()), Err(want), "{p}");
        }
        // An empty patch is valid and changes nothing but the version.
        let r = patch(&c, json!({})).unwrap();
        assert!(r.changed_fields.is_empty());
        assert_eq!(r.contact.version, 2);
    }

    // --- consent and restriction

    #[test]
    fn consent_changes_are_recorded() {
        let c = contact();
        let now = Utc::now();
        let (next, change) =
            set_consent(&c, MarketingConsent::OptedOut, " inbound STOP ", "inbound_keyword", now).unwrap();
        assert_eq!(next.consent.marketing, MarketingConsent::OptedOut);
        assert_eq!(next.consent.source.as_deref(), Some("inbound STOP"));
        assert_eq!(next.consent.updated_at, Some(now));
        assert_eq!(next.version, 2);
        assert_eq!(change.previous, MarketingConsent::Unknown);
        assert_eq!(change.marketing, MarketingConsent::OptedOut);
        assert_eq!(change.actor, "inbound_keyword");
        assert_eq!(
            set_consent(&c, MarketingConsent::Unknown, "x", "system", now),
            Err(ContactError::InvalidConsent)
        );
        assert!(set_consent(&c, MarketingConsent::OptedIn, &"s".repeat(128), "k", now).is_ok());
        for bad in [String::new(), " ".into(), "s".repeat(129), "a\nb".into()] {
            assert_eq!(
                set_consent(&c, MarketingConsent::OptedIn, &bad, "k", now),
                Err(ContactError::InvalidConsentSource)
            );
        }
        assert_eq!(
            serde_json::to_value(MarketingConsent::OptedIn).unwrap(),
            json!("opted_in")
        );
        assert_eq!(
            serde_json::from_value::<MarketingConsent>(json!("opted_out")).unwrap(),
            MarketingConsent::OptedOut
        );
        assert_eq!(MarketingConsent::Unknown.as_str(), "unknown");
    }

    #[test]
    fn restriction_changes_are_recorded() {
        let c = contact();
        let (next, change) = set_restriction(&c, true, "key1", None, Utc::now());
        assert!(next.restricted && change.restricted && !change.previous);
        assert_eq!(next.version, 2);
    }

    #[test]
    fn contact_round_trips_through_json() {
        let c = contact();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["consent"]["marketing"], "unknown");
        assert_eq!(serde_json::from_value::<Contact>(v).unwrap(), c);
    }

    // --- search

    #[test]
    fn search_keys() {
        assert_eq!(name_search_key("  Ana \t  SOUZA\n"), "ana souza");
        assert_eq!(name_search_key("ÉLODIE"), "élodie");
        assert_eq!(name_search_key("   "), "");
        assert_eq!(phone_search_key("+14155550123"), "14155550123");
        assert_eq!(query_kind("+1 415"), QueryKind::PhonePrefix("1415".into()));
        assert_eq!(query_kind(" 44-7700 "), QueryKind::PhonePrefix("447700".into()));
        assert_eq!(query_kind("  Ana  S "), QueryKind::NamePrefix("ana s".into()));
        assert_eq!(query_kind("(415)"), QueryKind::NamePrefix("(415)".into()));
        assert_eq!(query_kind(""), QueryKind::Empty);
        assert_eq!(query_kind("  "), QueryKind::Empty);
        assert_eq!(query_kind("+"), QueryKind::Empty);
    }

    // --- robustness

    /// Deterministic noise (xorshift), so any failure reproduces.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn string(&mut self, alphabet: &[char]) -> String {
            let len = (self.next() % 48) as usize;
            (0..len)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
                .collect()
        }
    }

    const ANYTHING: &[char] = &[
        '+', '+', '0', '1', '2', '4', '5', '7', '9', '9', ' ', '-', '(', ')', '.', 'x', 'A', '@', ':', '\0', '\n', 'é',
        'İ', '٣', '０', '\u{200f}', ';', '#',
    ];
    /// Mostly strings that pass the pre-parser filter, so the parser itself gets exercised.
    const PHONEISH: &[char] = &[
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '9', ' ', '-', '(', ')',
    ];

    #[test]
    fn no_input_panics() {
        let c = contact();
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        // Parsing is slow in debug builds (~1 ms a number), so keep the count modest.
        for _ in 0..3_000 {
            let s = noise.string(ANYTHING);
            let phoneish = format!("+{}", noise.string(PHONEISH));
            if let Ok(p) = normalize_phone(&phoneish) {
                assert!(is_e164_shape(&p), "{p}");
            }
            if let Ok(p) = normalize_phone(&s) {
                assert!(is_e164_shape(&p), "{p}");
                assert_eq!(normalize_phone(&p), Ok(p.clone()), "normalising is idempotent");
            }
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            if let Some(p) = phone_from_wa_id(&digits) {
                assert!(is_e164_shape(&p));
            }
            let _ = normalize_user_id(&s);
            let _ = normalize_name(&s);
            let _ = normalize_email(&s);
            let _ = normalize_tag(&s);
            let _ = query_kind(&s);
            let _ = NewContact::from_json(s.as_bytes());
            let _ = patch(
                &c,
                json!({ "phone": s, "name": s, "tags": [s], "attributes": { "k": s } }),
            );
        }
    }
}
