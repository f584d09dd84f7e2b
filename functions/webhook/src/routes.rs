//! The webhook's one path, as configured in the Meta app and in `template.yaml`.

pub const WEBHOOK_PATH: &str = "/webhooks/whatsapp";
