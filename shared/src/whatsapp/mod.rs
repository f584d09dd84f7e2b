//! Meta's WhatsApp Cloud API webhook: pure rules, no I/O.
//!
//! [`signature`] authenticates a delivery, [`payload`] turns its body into typed values without
//! letting one odd message spoil its neighbours, [`status`] decides whether a delivery receipt
//! moves an outbound message, and [`keywords`] spots consent keywords in inbound text.
//!
//! Test fixtures of real-shaped deliveries live in `shared/tests/fixtures/webhooks/`.

pub mod keywords;
pub mod payload;
pub mod signature;
pub mod status;

pub use keywords::{ConsentKeyword, consent_keyword};
pub use payload::{
    Change, Context, DeliveryStatus, Entry, ErrorData, GraphError, InboundMessage, InteractiveReply, Media,
    MessageContent, MessagesValue, Metadata, PayloadError, Profile, StatusUpdate, WaContact, WebhookPayload,
    parse_payload,
};
pub use signature::{SignatureError, sign, verify_signature};
pub use status::{next_status, receipt_status};
