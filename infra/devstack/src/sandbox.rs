//! Local Meta sandbox: the Graph API endpoints this backend calls (send, media info, media
//! download), with Meta's error shapes, plus the webhooks Meta would send back — signed status
//! updates after each accepted send, and customer messages injected by a developer. It exists
//! so the whole loop runs on one machine; it is not a test double of every Graph behaviour.
//!
//! Control endpoints (not Meta's): `POST /sandbox/inbound` injects a customer message,
//! `POST /sandbox/errors` makes the next sends fail with a given Meta error, `POST
//! /sandbox/media` stores a media file customers can "send", `POST /sandbox/template-status`
//! changes a template and sends Meta's template webhooks (`templates`), `GET /sandbox/sent?to=`
//! lists the sends accepted for a customer (automated replies among them).

mod templates;

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crm_shared::store::{DynamoStore, TenantStore};
use crm_shared::whatsapp::sign;

/// A Meta error the next send answers with.
#[derive(Debug, Clone)]
struct InjectedError {
    status: u16,
    code: i64,
    title: String,
}

pub struct Sandbox {
    store: DynamoStore,
    webhook_url: String,
    app_secret: String,
    /// Base URL of this sandbox (for media download links).
    base_url: String,
    status_delay: Duration,
    errors: Mutex<VecDeque<InjectedError>>,
    media: Mutex<HashMap<String, (Vec<u8>, String)>>,
    /// Every accepted send, for tests and curious developers: wamid → payload.
    sent: Mutex<Vec<(String, Value)>>,
    http: reqwest::Client,
    templates: Mutex<Vec<templates::SandboxTemplate>>,
    seeded_wabas: Mutex<HashSet<String>>,
    next_template_id: Mutex<u64>,
    /// How long Meta's "review" of a new template takes here.
    template_review_delay: Duration,
}

impl Sandbox {
    pub fn new(store: DynamoStore, webhook_url: &str, app_secret: &str, base_url: &str) -> Arc<Sandbox> {
        Arc::new(Sandbox {
            store,
            webhook_url: webhook_url.to_owned(),
            app_secret: app_secret.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            status_delay: Duration::from_millis(150),
            errors: Mutex::new(VecDeque::new()),
            media: Mutex::new(HashMap::new()),
            sent: Mutex::new(Vec::new()),
            http: reqwest::Client::new(),
            templates: Mutex::new(Vec::new()),
            seeded_wabas: Mutex::new(HashSet::new()),
            next_template_id: Mutex::new(7_000_000_000),
            template_review_delay: Duration::from_millis(300),
        })
    }

    /// How long Meta takes here between a send's `sent`, `delivered` and `read` statuses
    /// (150 ms unless set; call before the sandbox is shared).
    pub fn with_status_delay(mut sandbox: Arc<Sandbox>, delay: Duration) -> Arc<Sandbox> {
        Arc::get_mut(&mut sandbox)
            .expect("the sandbox is not shared yet")
            .status_delay = delay;
        sandbox
    }

    /// Sends accepted so far: `(wamid, payload)`.
    pub fn sent(&self) -> Vec<(String, Value)> {
        self.sent.lock().expect("sent log").clone()
    }

    /// Makes the next `count` sends fail with Meta's error `code`.
    pub fn fail_next(&self, count: usize, status: u16, code: i64, title: &str) {
        let mut errors = self.errors.lock().expect("errors");
        for _ in 0..count {
            errors.push_back(InjectedError {
                status,
                code,
                title: title.to_owned(),
            });
        }
    }

    /// Posts a signed webhook to the backend, as Meta does.
    pub async fn deliver(&self, payload: &Value) -> Result<u16, String> {
        let body = payload.to_string();
        let resp = self
            .http
            .post(&self.webhook_url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(self.app_secret.as_bytes(), body.as_bytes()))
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    }

    /// A customer's text message to the phone number, delivered as a webhook.
    pub async fn inbound_text(
        &self,
        phone_number_id: &str,
        from: &str,
        name: &str,
        text: &str,
    ) -> Result<String, String> {
        let wamid = format!("wamid.SANDBOX{}", crm_shared::ids::new_id().to_uppercase());
        let from = from.trim_start_matches('+');
        let payload = envelope(
            phone_number_id,
            json!({
                "contacts": [{"profile": {"name": name}, "wa_id": from}],
                "messages": [{"from": from, "id": wamid, "timestamp": chrono::Utc::now().timestamp().to_string(),
                              "type": "text", "text": {"body": text}}]
            }),
        );
        match self.deliver(&payload).await? {
            200 => Ok(wamid),
            status => Err(format!("webhook answered {status}")),
        }
    }

    async fn token_ok(&self, phone_number_id: &str, bearer: Option<&str>) -> bool {
        let Some(bearer) = bearer else { return false };
        let Ok(Some(tenant)) = self.store.tenant_for_phone_number(phone_number_id).await else {
            return false;
        };
        matches!(self.store.graph_token(&tenant).await, Ok(Some(t)) if t.expose() == bearer)
    }
}

fn envelope(phone_number_id: &str, value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] = json!({"display_phone_number": "15550000000", "phone_number_id": phone_number_id});
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "0", "changes": [{"field": "messages", "value": value}]}]
    })
}

fn meta_error(status: u16, code: i64, message: &str) -> hyper::Response<Full<Bytes>> {
    meta_error_detailed(status, code, message, Some(message))
}

/// Meta's error envelope with `error_data.details` (when given).
fn meta_error_detailed(status: u16, code: i64, message: &str, details: Option<&str>) -> hyper::Response<Full<Bytes>> {
    let body = json!({"error": {"message": message, "type": "OAuthException", "code": code,
                                "error_data": {"messaging_product": "whatsapp", "details": details.unwrap_or(message)},
                                "fbtrace_id": "SANDBOX"}});
    reply(status, &body)
}

fn reply(status: u16, body: &Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

pub async fn serve(listener: TcpListener, sandbox: Arc<Sandbox>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let sandbox = sandbox.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let sandbox = sandbox.clone();
                async move { Ok::<_, Infallible>(route(&sandbox, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(sandbox: &Arc<Sandbox>, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> = reqwest::Url::parse(&format!("http://sandbox{}", req.uri()))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(crm_shared::auth::bearer_token)
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", [_version, phone_number_id, "messages"]) => {
            send(sandbox, phone_number_id, bearer.as_deref(), json_body).await
        }
        ("GET", [_version, waba_id, "message_templates"]) => {
            let url = format!("{}{path}", sandbox.base_url);
            templates::list(sandbox, waba_id, bearer.as_deref(), &query, &url).await
        }
        ("POST", [_version, waba_id, "message_templates"]) => {
            templates::create(sandbox, waba_id, bearer.as_deref(), json_body).await
        }
        ("DELETE", [_version, waba_id, "message_templates"]) => {
            templates::delete(sandbox, waba_id, bearer.as_deref(), &query).await
        }
        ("POST", ["sandbox", "template-status"]) => templates::control(sandbox, &json_body).await,
        // The sends accepted so far to one customer (digits, as Meta's `to`), from `after` on:
        // what `crmctl sandbox inbound --wait-reply` shows of the replies to its message.
        ("GET", ["sandbox", "sent"]) => {
            let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let to = param("to").unwrap_or_default();
            let after: usize = param("after").and_then(|a| a.parse().ok()).unwrap_or(0);
            let sent = sandbox.sent();
            let items: Vec<Value> = sent
                .iter()
                .enumerate()
                .filter(|(i, (_, body))| *i >= after && body["to"].as_str() == Some(to.as_str()))
                .map(|(i, (wamid, body))| json!({"index": i, "wamid": wamid, "type": body["type"], "payload": body}))
                .collect();
            reply(200, &json!({"count": sent.len(), "items": items}))
        }
        ("GET", ["media", id]) => match sandbox.media.lock().expect("media").get(*id) {
            Some((data, mime)) => hyper::Response::builder()
                .status(200)
                .header("content-type", mime.as_str())
                .body(Full::new(Bytes::from(data.clone())))
                .expect("valid response"),
            None => meta_error(404, 100, "Unsupported get request"),
        },
        ("GET", [_version, media_id]) => {
            if bearer.is_none() {
                return meta_error(401, 190, "Invalid OAuth access token.");
            }
            match sandbox.media.lock().expect("media").get(*media_id) {
                Some((data, mime)) => reply(
                    200,
                    &json!({"messaging_product": "whatsapp", "url": format!("{}/media/{media_id}", sandbox.base_url),
                            "mime_type": mime, "sha256": hex::encode(Sha256::digest(data)),
                            "file_size": data.len(), "id": media_id}),
                ),
                None => meta_error(400, 100, "Unsupported get request. Object does not exist"),
            }
        }
        ("POST", ["sandbox", "errors"]) => {
            let code = json_body["code"].as_i64().unwrap_or(131000);
            let status = json_body["status"].as_u64().unwrap_or(400) as u16;
            let count = json_body["count"].as_u64().unwrap_or(1) as usize;
            let title = json_body["title"].as_str().unwrap_or("Sandbox error");
            sandbox.fail_next(count, status, code, title);
            reply(200, &json!({"queued_errors": count}))
        }
        ("POST", ["sandbox", "media"]) => {
            let data = json_body["data_base64"]
                .as_str()
                .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
            let Some(data) = data else {
                return reply(400, &json!({"error": "data_base64 is required"}));
            };
            let id = format!("{}", 1_000_000_000_000u64 + rand_u32() as u64);
            let mime = json_body["mime_type"]
                .as_str()
                .unwrap_or("application/octet-stream")
                .to_owned();
            sandbox.media.lock().expect("media").insert(id.clone(), (data, mime));
            reply(200, &json!({"id": id}))
        }
        ("POST", ["sandbox", "inbound"]) => {
            let (Some(pnid), Some(from), Some(text)) = (
                json_body["phone_number_id"].as_str(),
                json_body["from"].as_str(),
                json_body["text"].as_str(),
            ) else {
                return reply(400, &json!({"error": "phone_number_id, from and text are required"}));
            };
            let name = json_body["name"].as_str().unwrap_or("Sandbox Customer");
            match sandbox.inbound_text(pnid, from, name, text).await {
                Ok(wamid) => reply(200, &json!({"wamid": wamid})),
                Err(e) => reply(502, &json!({"error": e})),
            }
        }
        _ => meta_error(404, 100, "Unknown path components"),
    }
}

fn rand_u32() -> u32 {
    let id = crm_shared::ids::new_id();
    id.bytes()
        .fold(0u32, |acc, b| acc.wrapping_mul(31).wrapping_add(b as u32))
}

async fn send(
    sandbox: &Arc<Sandbox>,
    phone_number_id: &str,
    bearer: Option<&str>,
    body: Value,
) -> hyper::Response<Full<Bytes>> {
    if !sandbox.token_ok(phone_number_id, bearer).await {
        return meta_error(401, 190, "Error validating access token: Session has expired.");
    }
    if body["messaging_product"] != "whatsapp" || body["type"].as_str().is_none() {
        return meta_error(400, 100, "Invalid parameter");
    }
    if let Some(error) = sandbox.errors.lock().expect("errors").pop_front() {
        return meta_error(error.status, error.code, &error.title);
    }
    if let Some(refusal) = templates::check_send(sandbox, phone_number_id, &body).await {
        return refusal;
    }
    let to = body["to"]
        .as_str()
        .or(body["recipient"].as_str())
        .unwrap_or_default()
        .to_owned();
    let wamid = format!("wamid.SANDBOX{}", crm_shared::ids::new_id().to_uppercase());
    sandbox
        .sent
        .lock()
        .expect("sent log")
        .push((wamid.clone(), body.clone()));
    // The sandbox log (no recipient, no body: `GET /sandbox/sent` has those).
    eprintln!(
        "sandbox: accepted a {} send {wamid} (message {})",
        body["type"].as_str().unwrap_or("?"),
        body["biz_opaque_callback_data"].as_str().unwrap_or("-")
    );
    // Meta reports progress through status webhooks: sent, delivered, read.
    let (sb, pnid, w, recipient) = (sandbox.clone(), phone_number_id.to_owned(), wamid.clone(), to.clone());
    // Meta echoes the send's tracking data in each of its statuses.
    let callback = body.get("biz_opaque_callback_data").cloned();
    tokio::spawn(async move {
        for status in ["sent", "delivered", "read"] {
            tokio::time::sleep(sb.status_delay).await;
            let mut receipt = json!({"id": w, "status": status, "timestamp": chrono::Utc::now().timestamp().to_string(),
                                     "recipient_id": recipient,
                                     "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"}});
            if let Some(callback) = &callback {
                receipt["biz_opaque_callback_data"] = callback.clone();
            }
            let payload = envelope(&pnid, json!({"statuses": [receipt]}));
            if let Err(e) = sb.deliver(&payload).await {
                tracing::warn!(error = %e, "sandbox could not deliver a status webhook");
            }
        }
    });
    reply(
        200,
        &json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid, "message_status": "accepted"}]}),
    )
}
