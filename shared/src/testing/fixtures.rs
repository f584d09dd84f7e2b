//! Small builders of domain values for tests: a tenant, a contact inside its service window,
//! an outbound message waiting in the queue, an inbound message with pending media.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::contact::{Contact, ValidContact};
use crate::message::{Direction, MediaRef, MediaStatus, MessageRecord, MessageStatus};
use crate::sending::Category;
use crate::tenant::{Tenant, TenantStatus};

/// An active tenant with a fresh id and the given phone number id.
pub fn tenant(phone_number_id: &str) -> Tenant {
    Tenant {
        tenant_id: crate::ids::new_id(),
        name: "Test tenant".into(),
        phone_number_id: phone_number_id.to_owned(),
        waba_id: format!("9{phone_number_id}"),
        status: TenantStatus::Active,
        created_at: Utc::now(),
        token_invalid: false,
        inbox: Default::default(),
        reports: Default::default(),
    }
}

/// A contact with this phone whose last message came a minute before `now` (window open).
pub fn contact(tenant_id: &str, phone: &str, now: DateTime<Utc>) -> Contact {
    let valid = ValidContact {
        phone: Some(phone.to_owned()),
        user_id: None,
        name: None,
        email: None,
        language: None,
        tags: Vec::new(),
        attributes: Default::default(),
    };
    let mut c = Contact::new(tenant_id, valid, now);
    c.last_inbound_at = Some(now - Duration::minutes(1));
    c
}

/// An outbound message of `message_type` with `content`, queued for the sender.
pub fn queued_message(
    contact: &Contact,
    message_type: &str,
    content: Value,
    category: Option<Category>,
) -> MessageRecord {
    let now = Utc::now();
    MessageRecord {
        phone_number_id: None,
        tenant_id: contact.tenant_id.clone(),
        message_id: crate::ids::new_id(),
        contact_id: contact.contact_id.clone(),
        direction: Direction::Outbound,
        wamid: None,
        message_type: message_type.to_owned(),
        content,
        status: MessageStatus::Queued,
        status_at: [(MessageStatus::Queued.as_str().to_owned(), now)].into(),
        error: None,
        media: None,
        category,
        language: None,
        reply_to: None,
        context_wamid: None,
        referral: None,
        pricing: None,
        conversation: None,
        timestamp: now,
        created_at: now,
        sent_by: None,
        automation_rule: None,
        broadcast_id: None,
    }
}

/// A queued service text.
pub fn queued_text(contact: &Contact) -> MessageRecord {
    queued_message(contact, "text", json!({"body": "hello"}), Some(Category::Service))
}

/// An inbound image whose media (`media_id`, announced `sha256`) is waiting for the worker.
pub fn inbound_media_message(contact: &Contact, media_id: &str, sha256: Option<&str>) -> MessageRecord {
    let now = Utc::now();
    MessageRecord {
        phone_number_id: None,
        tenant_id: contact.tenant_id.clone(),
        message_id: crate::ids::new_id(),
        contact_id: contact.contact_id.clone(),
        direction: Direction::Inbound,
        wamid: Some(format!("wamid.in.{media_id}")),
        message_type: "image".into(),
        content: json!({"id": media_id, "mime_type": "image/jpeg"}),
        status: MessageStatus::Received,
        status_at: [(MessageStatus::Received.as_str().to_owned(), now)].into(),
        error: None,
        media: Some(MediaRef {
            media_id: media_id.to_owned(),
            mime_type: Some("image/jpeg".into()),
            sha256: sha256.map(str::to_owned),
            status: MediaStatus::Pending,
            s3_key: None,
            size: None,
            failure: None,
        }),
        category: None,
        language: None,
        reply_to: None,
        context_wamid: None,
        referral: None,
        pricing: None,
        conversation: None,
        timestamp: now,
        created_at: now,
        sent_by: None,
        automation_rule: None,
        broadcast_id: None,
    }
}
