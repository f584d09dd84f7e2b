//! The sandbox's message templates: Meta's template endpoints of a WABA (list with cursor
//! paging, create → `PENDING` → `APPROVED` by a signed `message_template_status_update` a
//! moment later, or `REJECTED` for names containing `reject`; delete by name or `hsm_id`), the
//! check Meta makes of a template send (with Meta's 132xxx codes), and the control endpoint
//! `POST /sandbox/template-status` that drives the status, quality and category webhooks.
//! Every WABA starts with Meta's `hello_world` (en_US, approved).

use std::sync::Arc;

use serde_json::{Value, json};

use crm_shared::store::TenantStore;
use crm_shared::template::lint::lint_new_template;
use crm_shared::template::{TemplateRecord, check_status, compile, validate_send};

use super::{Sandbox, meta_error_detailed, reply};
use hyper::body::Bytes;

type Response = hyper::Response<http_body_util::Full<Bytes>>;

/// Meta's default page size for this edge.
const DEFAULT_PAGE: usize = 25;

/// One template of one WABA, in the shape Meta lists it.
#[derive(Debug, Clone)]
pub(super) struct SandboxTemplate {
    waba_id: String,
    meta: Value,
}

fn hello_world(waba_id: &str, id: u64) -> SandboxTemplate {
    SandboxTemplate {
        waba_id: waba_id.to_owned(),
        meta: json!({
            "id": id.to_string(), "name": "hello_world", "language": "en_US", "status": "APPROVED",
            "category": "UTILITY", "parameter_format": "POSITIONAL",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Hello World"},
                {"type": "BODY", "text": "Welcome and congratulations!! This message demonstrates your ability to send a WhatsApp message notification from the Cloud API, hosted by Meta. Thank you for taking the time to test with us."},
                {"type": "FOOTER", "text": "WhatsApp Business Platform sample message"}
            ]
        }),
    }
}

impl Sandbox {
    fn next_template_id(&self) -> u64 {
        let mut next = self.next_template_id.lock().expect("template ids");
        *next += 1;
        *next
    }

    /// The WABA's templates (seeded with `hello_world` on first sight).
    fn waba_templates(&self, waba_id: &str) -> Vec<Value> {
        let seeded = self
            .templates
            .lock()
            .expect("templates")
            .iter()
            .any(|t| t.waba_id == waba_id)
            || self.seeded_wabas.lock().expect("seeded").contains(waba_id);
        if !seeded {
            let seed = hello_world(waba_id, self.next_template_id());
            self.seeded_wabas.lock().expect("seeded").insert(waba_id.to_owned());
            self.templates.lock().expect("templates").push(seed);
        }
        self.templates
            .lock()
            .expect("templates")
            .iter()
            .filter(|t| t.waba_id == waba_id)
            .map(|t| t.meta.clone())
            .collect()
    }

    async fn waba_token_ok(&self, waba_id: &str, bearer: Option<&str>) -> bool {
        let Some(bearer) = bearer else { return false };
        let Ok(Some(tenant)) = self.store.tenant_for_waba(waba_id).await else {
            return false;
        };
        matches!(self.store.graph_token(&tenant).await, Ok(Some(t)) if t.expose() == bearer)
    }

    /// Posts a WABA-level webhook change (template status, quality, category), as Meta does.
    pub async fn deliver_waba_change(&self, waba_id: &str, field: &str, value: Value) -> Result<u16, String> {
        let payload = json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": waba_id, "time": chrono::Utc::now().timestamp(),
                       "changes": [{"field": field, "value": value}]}]
        });
        self.deliver(&payload).await
    }

    /// Applies `edit` to the matching templates and returns them as they are now.
    fn edit_templates(
        &self,
        waba_id: Option<&str>,
        name: &str,
        language: Option<&str>,
        mut edit: impl FnMut(&mut Value),
    ) -> Vec<(String, Value)> {
        let mut all = self.templates.lock().expect("templates");
        all.iter_mut()
            .filter(|t| waba_id.is_none_or(|w| t.waba_id == w) && t.meta["name"] == name)
            .filter(|t| language.is_none_or(|l| t.meta["language"] == l))
            .map(|t| {
                edit(&mut t.meta);
                (t.waba_id.clone(), t.meta.clone())
            })
            .collect()
    }

    /// Sets a template's status and sends Meta's `message_template_status_update`.
    pub async fn set_template_status(
        &self,
        waba_id: Option<&str>,
        name: &str,
        language: Option<&str>,
        status: &str,
        reason: Option<&str>,
    ) -> Result<usize, String> {
        let changed = self.edit_templates(waba_id, name, language, |t| t["status"] = json!(status));
        for (waba, t) in &changed {
            let value = json!({
                "event": status, "message_template_id": t["id"].as_str().and_then(|id| id.parse::<u64>().ok()),
                "message_template_name": t["name"], "message_template_language": t["language"],
                "reason": reason.unwrap_or("NONE"), "message_template_category": t["category"],
            });
            self.deliver_waba_change(waba, "message_template_status_update", value)
                .await?;
        }
        Ok(changed.len())
    }

    async fn set_template_quality(
        &self,
        waba_id: Option<&str>,
        name: &str,
        language: Option<&str>,
        quality: &str,
    ) -> Result<usize, String> {
        let changed = self.edit_templates(waba_id, name, language, |t| {
            t["quality_score"] = json!({"score": quality})
        });
        for (waba, t) in &changed {
            let value = json!({
                "previous_quality_score": "UNKNOWN", "new_quality_score": quality,
                "message_template_id": t["id"].as_str().and_then(|id| id.parse::<u64>().ok()),
                "message_template_name": t["name"], "message_template_language": t["language"],
            });
            self.deliver_waba_change(waba, "message_template_quality_update", value)
                .await?;
        }
        Ok(changed.len())
    }

    async fn set_template_category(
        &self,
        waba_id: Option<&str>,
        name: &str,
        language: Option<&str>,
        category: &str,
    ) -> Result<usize, String> {
        let mut previous = Vec::new();
        let changed = self.edit_templates(waba_id, name, language, |t| {
            previous.push(t["category"].clone());
            t["category"] = json!(category);
        });
        for ((waba, t), before) in changed.iter().zip(previous) {
            let value = json!({
                "message_template_id": t["id"].as_str().and_then(|id| id.parse::<u64>().ok()),
                "message_template_name": t["name"], "message_template_language": t["language"],
                "previous_category": before, "new_category": category,
            });
            self.deliver_waba_change(waba, "template_category_update", value)
                .await?;
        }
        Ok(changed.len())
    }
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `GET /{version}/{waba-id}/message_templates` with Meta's cursor paging.
pub(super) async fn list(
    sandbox: &Sandbox,
    waba_id: &str,
    bearer: Option<&str>,
    query: &[(String, String)],
    url: &str,
) -> Response {
    if !sandbox.waba_token_ok(waba_id, bearer).await {
        return meta_error_detailed(401, 190, "Invalid OAuth access token.", None);
    }
    let all = sandbox.waba_templates(waba_id);
    let limit = param(query, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, 1000);
    let start: usize = param(query, "after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let end = start + page.len();
    let mut paging = json!({"cursors": {"before": start.to_string(), "after": end.to_string()}});
    if end < all.len() {
        paging["next"] = json!(format!("{url}?limit={limit}&after={end}"));
    }
    reply(200, &json!({"data": page, "paging": paging}))
}

/// `POST /{version}/{waba-id}/message_templates`.
pub(super) async fn create(sandbox: &Arc<Sandbox>, waba_id: &str, bearer: Option<&str>, body: Value) -> Response {
    if !sandbox.waba_token_ok(waba_id, bearer).await {
        return meta_error_detailed(401, 190, "Invalid OAuth access token.", None);
    }
    let new = match lint_new_template(&body) {
        Ok(new) => new,
        Err(errors) => {
            let detail = errors.first().map(|e| format!("{}: {}", e.field, e.message));
            return meta_error_detailed(400, 100, "Invalid parameter", detail.as_deref());
        }
    };
    let exists = sandbox
        .waba_templates(waba_id)
        .iter()
        .any(|t| t["name"] == new.name && t["language"] == new.language);
    if exists {
        return meta_error_detailed(
            400,
            100,
            "Invalid parameter",
            Some("Content in this language already exists"),
        );
    }
    let id = sandbox.next_template_id().to_string();
    let mut meta = new.meta_body();
    meta["id"] = json!(id);
    meta["status"] = json!("PENDING");
    sandbox.templates.lock().expect("templates").push(SandboxTemplate {
        waba_id: waba_id.to_owned(),
        meta,
    });
    // Meta's review, compressed: a status webhook after a short delay.
    let (sb, waba, name, language) = (
        sandbox.clone(),
        waba_id.to_owned(),
        new.name.clone(),
        new.language.clone(),
    );
    tokio::spawn(async move {
        tokio::time::sleep(sb.template_review_delay).await;
        let (status, reason) = if name.contains("reject") {
            ("REJECTED", Some("INVALID_FORMAT"))
        } else {
            ("APPROVED", None)
        };
        if let Err(e) = sb
            .set_template_status(Some(&waba), &name, Some(&language), status, reason)
            .await
        {
            tracing::warn!(error = %e, "sandbox could not deliver a template status webhook");
        }
    });
    reply(
        200,
        &json!({"id": id, "status": "PENDING", "category": new.category.as_str()}),
    )
}

/// `DELETE /{version}/{waba-id}/message_templates?name=…[&hsm_id=…]`.
pub(super) async fn delete(
    sandbox: &Sandbox,
    waba_id: &str,
    bearer: Option<&str>,
    query: &[(String, String)],
) -> Response {
    if !sandbox.waba_token_ok(waba_id, bearer).await {
        return meta_error_detailed(401, 190, "Invalid OAuth access token.", None);
    }
    let Some(name) = param(query, "name") else {
        return meta_error_detailed(400, 100, "Invalid parameter", Some("name is required"));
    };
    let hsm_id = param(query, "hsm_id");
    let mut all = sandbox.templates.lock().expect("templates");
    let before = all.len();
    all.retain(|t| !(t.waba_id == waba_id && t.meta["name"] == name && hsm_id.is_none_or(|id| t.meta["id"] == id)));
    if all.len() == before {
        return meta_error_detailed(404, 100, "Template not found", None);
    }
    reply(200, &json!({"success": true}))
}

/// Meta's check of a template send against the WABA's templates: `Some(error response)`
/// when Meta would refuse it.
pub(super) async fn check_send(sandbox: &Sandbox, phone_number_id: &str, body: &Value) -> Option<Response> {
    if body["type"] != "template" {
        return None;
    }
    let tenant = sandbox.store.tenant_for_phone_number(phone_number_id).await.ok()??;
    let waba_id = sandbox.store.get_tenant(&tenant).await.ok()??.waba_id;
    let template = &body["template"];
    let record = sandbox
        .waba_templates(&waba_id)
        .iter()
        .filter(|t| t["name"] == template["name"] && t["language"] == template["language"]["code"])
        .find_map(|t| TemplateRecord::from_meta(&tenant, t, chrono::Utc::now()));
    let failure = match check_status(record.as_ref()) {
        Err(e) => e,
        Ok(()) => {
            let record = record.expect("approved");
            let format = record.parameter_format;
            let schema = compile(&record.components);
            match validate_send(&schema, format, template) {
                Ok(()) => return None,
                Err(errors) => errors.into_iter().next()?,
            }
        }
    };
    let message = format!("(#{}) {}", failure.code.code(), failure.code.title());
    Some(meta_error_detailed(
        400,
        i64::from(failure.code.code()),
        &message,
        Some(&format!("{}: {}", failure.field, failure.message)),
    ))
}

/// `POST /sandbox/template-status`: `{"name", "language"?, "waba_id"?, and one of "status"
/// (with "reason"?), "quality", "category"}`.
pub(super) async fn control(sandbox: &Sandbox, body: &Value) -> Response {
    let Some(name) = body["name"].as_str() else {
        return reply(400, &json!({"error": "name is required"}));
    };
    let waba = body["waba_id"].as_str();
    let language = body["language"].as_str();
    let result = if let Some(status) = body["status"].as_str() {
        sandbox
            .set_template_status(
                waba,
                name,
                language,
                &status.to_ascii_uppercase(),
                body["reason"].as_str(),
            )
            .await
    } else if let Some(quality) = body["quality"].as_str() {
        sandbox
            .set_template_quality(waba, name, language, &quality.to_ascii_uppercase())
            .await
    } else if let Some(category) = body["category"].as_str() {
        sandbox
            .set_template_category(waba, name, language, &category.to_ascii_uppercase())
            .await
    } else {
        return reply(400, &json!({"error": "status, quality or category is required"}));
    };
    match result {
        Ok(0) => reply(404, &json!({"error": "no such template"})),
        Ok(n) => reply(200, &json!({"updated": n})),
        Err(e) => reply(502, &json!({"error": e})),
    }
}
