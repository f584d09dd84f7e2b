//! Privacy rights and retention through the local endpoint: retention settings, exports built by
//! the exporter from the queue, erasure (in the request and continued by the eraser from the
//! queue) checked by scanning the table and both buckets, the retention sweep through `crmctl`,
//! and tenant offboarding.
//!
//! These tests write thousands of items: they run on their own local endpoint, one at a time
//! (`e2e_tests::bulk_stack`, `bulk_lock`).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crm_shared::admin;
use crm_shared::audit::AuditEntry;
use crm_shared::auth::Role;
use crm_shared::blob::{contact_media_prefix, media_key};
use crm_shared::message::{MediaRef, MessageRecord, MessageStatus, inbound_message_id};
use crm_shared::privacy::export::message_json;
use crm_shared::privacy::{ExportRecord, Privacy};
use crm_shared::store::keys::*;
use crm_shared::store::privacy::{Item, Lease};
use crm_shared::store::{
    AuditStore, ContactStore, CustomerIdentity, DynamoStore, IdempotencyRecord, InboundStore, MessageStore,
    OutboundStore, PrivacyStore, StatusOutcome, StatusWrite,
};
use e2e_tests::{api, bulk_lock, bulk_stack as stack, new_tenant, post_webhook};

pub(crate) struct Ctx {
    pub(crate) base: String,
    pub(crate) admin: String,
    pub(crate) agent: String,
    viewer: String,
    pub(crate) tenant_id: String,
    pub(crate) phone_number_id: String,
    pub(crate) store: DynamoStore,
    privacy: Privacy,
    _gw: e2e_tests::Gateway,
}

pub(crate) async fn ctx(name: &str) -> Ctx {
    ctx_with(name, None).await
}

/// A tenant with admin, agent and viewer keys behind its own gateway; `budget` overrides the
/// time an erasure may take inside the request.
async fn ctx_with(name: &str, budget: Option<Duration>) -> Ctx {
    let store = stack().store().await;
    let mut privacy = stack().privacy().await;
    if let Some(budget) = budget {
        privacy = privacy.with_request_budget(budget);
    }
    let gw = stack()
        .start_gateway(
            store.clone(),
            stack().media_queue_url(),
            stack().outbound_queue_url(),
            privacy.clone(),
        )
        .await;
    let t = new_tenant(&store, name).await;
    let agent = admin::create_api_key(&store, &t.tenant.tenant_id, Role::Agent)
        .await
        .unwrap();
    let viewer = admin::create_api_key(&store, &t.tenant.tenant_id, Role::Viewer)
        .await
        .unwrap();
    Ctx {
        base: gw.base.clone(),
        admin: t.api_key.expose().to_owned(),
        agent: agent.api_key.expose().to_owned(),
        viewer: viewer.api_key.expose().to_owned(),
        tenant_id: t.tenant.tenant_id.clone(),
        phone_number_id: t.tenant.phone_number_id.clone(),
        store,
        privacy,
        _gw: gw,
    }
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        api(method, &self.url(path), Some(key), body).await
    }

    /// A customer writes in: the webhook creates (or finds) their contact; returns its id.
    async fn inbound_text(&self, from: &str, wamid: &str, text: &str) -> String {
        let body = text_delivery(&self.phone_number_id, from, wamid, Utc::now().timestamp(), text);
        let (status, out) = post_webhook(&self.base, &body, None).await;
        assert_eq!(status, 200, "{out}");
        self.store
            .match_contact(
                &self.tenant_id,
                &CustomerIdentity {
                    phone: Some(format!("+{from}")),
                    user_id: None,
                },
            )
            .await
            .unwrap()
            .map(|(id, _)| id)
            .expect("the webhook created the contact")
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

pub(crate) fn text_delivery(pnid: &str, from: &str, wamid: &str, ts: i64, text: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
            "contacts": [{"profile": {"name": "Privacy Person"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": ts.to_string(), "type": "text",
                          "text": {"body": text}}]
        }}]}]
    })
    .to_string()
}

/// An id of ours created at `at`.
fn id_at(at: DateTime<Utc>) -> String {
    inbound_message_id("seed", &crm_shared::ids::new_id(), at)
}

/// A stored message (for bulk imports); `extra` overrides or adds fields.
fn message(t: &str, c: &str, id: &str, direction: &str, at: DateTime<Utc>, extra: Value) -> MessageRecord {
    let mut v = json!({
        "tenant_id": t, "message_id": id, "contact_id": c, "direction": direction,
        "type": "text", "content": {"body": format!("message {id}")},
        "status": if direction == "inbound" { "received" } else { "delivered" },
        "timestamp": at, "created_at": at,
    });
    for (k, x) in extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn stored_media(key: &str) -> Value {
    json!({"media_id": "m1", "mime_type": "image/png", "sha256": "abc", "status": "available",
           "s3_key": key, "size": 4})
}

async fn s3() -> aws_sdk_s3::Client {
    crm_shared::aws::s3_client(&stack().sdk().await)
}

async fn put_object(bucket: &str, key: &str) {
    s3().await
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(b"data".to_vec().into())
        .send()
        .await
        .unwrap();
}

async fn object_exists(bucket: &str, key: &str) -> bool {
    s3().await.head_object().bucket(bucket).key(key).send().await.is_ok()
}

fn exports_bucket() -> &'static str {
    &stack().provisioned.buckets["ExportsBucket"]
}

async fn all_keys(bucket: &str) -> Vec<String> {
    crm_shared::objects::Bucket::new(s3().await, bucket)
        .list_keys("")
        .await
        .unwrap()
}

/// Every item of the table, with its keys and a text rendering to search.
async fn scan_table(store: &DynamoStore) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let page = store
            .client()
            .scan()
            .table_name(store.table())
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items.unwrap_or_default() {
            let key = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            out.push((key(PK), key(SK), format!("{item:?}")));
        }
        start = page.last_evaluated_key.filter(|k| !k.is_empty());
        if start.is_none() {
            return out;
        }
    }
}

pub(crate) async fn conversation(store: &DynamoStore, t: &str, c: &str) -> Vec<MessageRecord> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = store.contact_messages(t, c, 100, start).await.unwrap();
        out.extend(page.items);
        match page.next {
            Some(next) => start = Some(next),
            None => return out,
        }
    }
}

/// A privacy worker (`ExporterFunction`, `EraserFunction`, `RetentionFunction`) on its own role.
async fn worker_deps(function: &str) -> privacy_fn::Deps {
    privacy_fn::Deps {
        privacy: stack().privacy_for(function).await,
        config: privacy_fn::WorkerConfig {
            erasure_budget: Duration::from_secs(20),
            ..Default::default()
        },
    }
}

/// Runs the exporter on the export queue (as its event source mapping would) until the export
/// is no longer pending; returns the API's view of it.
async fn export_until_done(c: &Ctx, export_id: &str) -> Value {
    let deps = worker_deps("ExporterFunction").await;
    let sqs = crm_shared::aws::sqs_client(&stack().sdk().await);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        devstack::poller::poll_once(&sqs, c.privacy.export_jobs.url(), 1, |e| {
            privacy_fn::handle_exports(&deps, e)
        })
        .await
        .unwrap();
        let (status, body) = c.call("GET", &format!("/v1/exports/{export_id}"), &c.admin, None).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "pending" {
            return body;
        }
        assert!(Instant::now() < deadline, "export still pending: {body}");
    }
}

/// Runs the eraser on the erasure queue until the erasure is complete; returns its receipt.
pub(crate) async fn erase_until_done(c: &Ctx, erasure_id: &str) -> Value {
    let deps = worker_deps("EraserFunction").await;
    let sqs = crm_shared::aws::sqs_client(&stack().sdk().await);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, body) = c
            .call("GET", &format!("/v1/erasures/{erasure_id}"), &c.admin, None)
            .await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "completed" {
            return body;
        }
        assert!(Instant::now() < deadline, "erasure still running: {body}");
        devstack::poller::poll_once(&sqs, c.privacy.erasure_jobs.url(), 1, |e| {
            privacy_fn::handle_erasures(&deps, e)
        })
        .await
        .unwrap();
    }
}

fn crmctl(args: &[&str]) -> (bool, Value, String) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(devstack::workspace_root())
        .args(["run", "-q", "--bin", "crmctl", "--"])
        .args(args)
        .envs(stack().process_env())
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------

fn with_events(settings: &Value, days: u32) -> Value {
    let mut v = settings.clone();
    v["events_days"] = json!(days);
    v
}

#[tokio::test]
async fn retention_settings_have_defaults_bounds_and_stay_within_their_tenant() {
    let _serial = bulk_lock().await;
    let a = ctx("Retention settings A").await;
    let b = ctx("Retention settings B").await;
    let defaults = json!({"messages_days": 365, "media_days": 90, "exports_days": 7, "audit_days": 365,
                          "events_days": 7, "reports_days": 400, "source": "default"});
    let (status, body) = a.call("GET", "/v1/settings/retention", &a.viewer, None).await;
    assert_eq!((status, &body), (200, &defaults));

    let chosen = json!({"messages_days": 30, "media_days": 10, "exports_days": 3, "audit_days": 30});
    let (status, body) = a
        .call("PUT", "/v1/settings/retention", &a.agent, Some(chosen.clone()))
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, body) = a
        .call("PUT", "/v1/settings/retention", &a.admin, Some(chosen.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "tenant");
    let (_, body) = a.call("GET", "/v1/settings/retention", &a.viewer, None).await;
    for field in ["messages_days", "media_days", "exports_days", "audit_days"] {
        assert_eq!(body[field], chosen[field], "{field}");
    }
    assert_eq!(body["events_days"], 7, "optional: the default");
    let (status, body) = a
        .call(
            "PUT",
            "/v1/settings/retention",
            &a.admin,
            Some(with_events(&chosen, 14)),
        )
        .await;
    assert_eq!((status, &body["events_days"]), (200, &json!(14)), "{body}");
    // What a GET shows goes back as it is, `source` included; an unknown field still does not.
    let (_, mut read) = a.call("GET", "/v1/settings/retention", &a.viewer, None).await;
    read["media_days"] = json!(9);
    let (status, body) = a
        .call("PUT", "/v1/settings/retention", &a.admin, Some(read.clone()))
        .await;
    assert_eq!(
        (status, &body["media_days"], &body["source"]),
        (200, &json!(9), &json!("tenant")),
        "{body}"
    );
    read["colour"] = json!("blue");
    let (status, body) = a.call("PUT", "/v1/settings/retention", &a.admin, Some(read)).await;
    assert_eq!((status, code(&body)), (400, "invalid_body"), "{body}");
    // Another tenant still has the defaults.
    let (_, body) = b.call("GET", "/v1/settings/retention", &b.viewer, None).await;
    assert_eq!(body, defaults);

    let with = |field: &str, value: Value| {
        let mut v = chosen.clone();
        v[field] = value;
        v
    };
    for (body, expected) in [
        (with("messages_days", json!(0)), "invalid_retention"),
        (with("messages_days", json!(3651)), "invalid_retention"),
        (with("exports_days", json!(31)), "invalid_retention"),
        (with("audit_days", json!(29)), "invalid_retention"),
        (with("events_days", json!(0)), "invalid_retention"),
        (with("events_days", json!(31)), "invalid_retention"),
        (with("media_days", json!(31)), "media_outlives_messages"),
        (with("media_days", json!(-1)), "invalid_body"),
        (with("media_days", json!("10")), "invalid_body"),
        (with("extra", json!(1)), "invalid_body"),
        (json!({"messages_days": 30}), "invalid_body"),
    ] {
        let (status, out) = a
            .call("PUT", "/v1/settings/retention", &a.admin, Some(body.clone()))
            .await;
        assert_eq!((status, code(&out)), (400, expected), "{body} → {out}");
        assert!(out["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, body) = a.call("GET", "/v1/settings/retention", &a.viewer, None).await;
    assert_eq!(body["messages_days"], 30, "refused changes changed nothing");

    let (_, log) = a.call("GET", "/v1/audit", &a.admin, None).await;
    let entry = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "settings.retention")
        .expect("the change is audited");
    assert_eq!(entry["details"]["messages_days"], 30);
}

#[tokio::test]
async fn an_export_holds_exactly_what_was_stored() {
    let _serial = bulk_lock().await;
    let c = ctx("Export").await;
    let other = ctx("Export other tenant").await;
    let contact_id = c.inbound_text("447700900201", "wamid.export.in.1", "hello there").await;
    c.inbound_text("447700900201", "wamid.export.in.2", "second").await;
    let (status, patched) = c
        .call(
            "PATCH",
            &format!("/v1/contacts/{contact_id}"),
            &c.agent,
            Some(
                json!({"name": "Grace Hopper", "email": "grace@example.com", "tags": ["vip"],
                        "attributes": {"plan": "gold"}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let path = format!("/v1/contacts/{contact_id}");
    let (status, _) = c
        .call(
            "PUT",
            &format!("{path}/consent"),
            &c.agent,
            Some(json!({"marketing": "opted_in", "source": "web form"})),
        )
        .await;
    assert_eq!(status, 200);
    for restricted in [true, false] {
        let (status, _) = c
            .call(
                "PUT",
                &format!("{path}/restriction"),
                &c.agent,
                Some(json!({"restricted": restricted})),
            )
            .await;
        assert_eq!(status, 200);
    }
    // Outbound history with statuses, an error and a media reference.
    let now = Utc::now();
    let records: Vec<MessageRecord> = (0..20)
        .map(|i| {
            let at = now - chrono::Duration::minutes(60 - i);
            let mut extra = json!({"wamid": format!("wamid.export.out.{i}"),
                                   "status_at": {"sent": at, "delivered": at}});
            if i == 3 {
                extra = json!({"status": "failed", "error": {"code": 131026, "title": "Message undeliverable"}});
            }
            if i == 5 {
                extra["type"] = json!("image");
                extra["media"] = stored_media(&media_key(&c.tenant_id, &contact_id, "x"));
            }
            message(&c.tenant_id, &contact_id, &id_at(at), "outbound", at, extra)
        })
        .collect();
    c.store.import_messages(&records).await.unwrap();
    // The inbox's side: the conversation the inbound messages opened, a read mark and a note.
    let conversation_id = format!("{contact_id}-{}", c.phone_number_id);
    let conv_path = format!("/v1/conversations/{conversation_id}");
    let (status, body) = c
        .call(
            "POST",
            &format!("{conv_path}/read"),
            &c.agent,
            Some(json!({"up_to": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c
        .call(
            "POST",
            &format!("{conv_path}/notes"),
            &c.agent,
            Some(json!({"body": "prefers mornings"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let export_path = format!("{path}/export");
    let (status, _) = c.call("POST", &export_path, &c.agent, None).await;
    assert_eq!(status, 403);
    let (status, _) = c
        .call(
            "POST",
            &format!("/v1/contacts/{}/export", crm_shared::ids::new_id()),
            &c.admin,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = other.call("POST", &export_path, &other.admin, None).await;
    assert_eq!(status, 404, "another tenant's contact is not found");

    let (status, created) = c.call("POST", &export_path, &c.admin, None).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["url"], Value::Null);
    assert_eq!(created["contact_id"], contact_id.as_str());
    let export_id = created["export_id"].as_str().unwrap().to_owned();
    let (status, _) = other
        .call("GET", &format!("/v1/exports/{export_id}"), &other.admin, None)
        .await;
    assert_eq!(status, 404);

    let ready = export_until_done(&c, &export_id).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let url = ready["url"].as_str().expect("a presigned url");
    assert!(url.contains("X-Amz-Expires"), "{url}");
    let expires_at: DateTime<Utc> = serde_json::from_value(ready["expires_at"].clone()).unwrap();
    assert!((expires_at - Utc::now()).num_days() >= 6, "exports_days defaults to 7");
    let served = reqwest::get(url).await.unwrap();
    assert_eq!(served.headers()["content-disposition"], "attachment");
    assert_eq!(served.headers()["content-type"], "application/json");
    let document: Value = served.json().await.unwrap();

    assert_eq!(document["format"], "wcrm.contact-export");
    assert_eq!(document["version"], 1);
    assert_eq!(document["export_id"], export_id.as_str());
    assert_eq!(document["tenant_id"], c.tenant_id.as_str());
    let contact = &document["contact"];
    assert_eq!(contact["contact_id"], contact_id.as_str());
    assert_eq!(contact["phone"], "+447700900201");
    assert_eq!(contact["name"], "Grace Hopper");
    assert_eq!(contact["email"], "grace@example.com");
    assert_eq!(contact["tags"], json!(["vip"]));
    assert_eq!(contact["attributes"], json!({"plan": "gold"}));
    assert_eq!(contact["consent"]["marketing"], "opted_in");
    assert_eq!(contact["restricted"], false);
    let consent = document["consent_history"].as_array().unwrap();
    assert_eq!(consent.len(), 1);
    assert_eq!(consent[0]["marketing"], "opted_in");
    assert_eq!(consent[0]["source"], "web form");
    let restrictions = document["restriction_history"].as_array().unwrap();
    assert_eq!(
        restrictions.iter().map(|r| r["restricted"].clone()).collect::<Vec<_>>(),
        vec![json!(true), json!(false)]
    );

    // Every stored message, oldest first, exactly as stored.
    let mut stored = conversation(&c.store, &c.tenant_id, &contact_id).await;
    stored.reverse();
    let exported = document["messages"].as_array().unwrap();
    assert_eq!(exported.len(), 22);
    assert_eq!(stored.len(), 22);
    for (s, e) in stored.iter().zip(exported) {
        assert_eq!(&message_json(s), e);
    }
    let failed = exported.iter().find(|m| m["status"] == "failed").unwrap();
    assert_eq!(failed["error"]["code"], 131026);
    let image = exported.iter().find(|m| m["type"] == "image").unwrap();
    assert_eq!(image["media"]["status"], "available");
    assert!(image["media"]["s3_key"].as_str().unwrap().ends_with("/media/x"));
    assert!(exported[2]["status_at"]["delivered"].is_string());
    let conversations = document["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 1, "{conversations:?}");
    assert_eq!(conversations[0]["conversation_id"], conversation_id.as_str());
    assert_eq!(conversations[0]["message_count"], 2);
    assert_eq!(conversations[0]["reads"].as_object().unwrap().len(), 1, "the read mark");
    let notes = document["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["body"], "prefers mornings");
    assert_eq!(notes[0]["conversation_id"], conversation_id.as_str());
    assert_eq!(document["summary"]["conversations"], 1);
    assert_eq!(document["summary"]["notes"], 1);
    assert_eq!(document["summary"]["messages"], 22);
    assert_eq!(document["summary"]["media_items"], 1);
    assert_eq!(ready["message_count"], 22);

    let (_, log) = c.call("GET", "/v1/audit", &c.admin, None).await;
    let actions: BTreeSet<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains("contact.export") && actions.contains("export.link"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_large_export_is_streamed_in_parts() {
    let _serial = bulk_lock().await;
    let c = ctx("Large export").await;
    let contact_id = c.inbound_text("447700900301", "wamid.large.1", "hi").await;
    let now = Utc::now();
    let body = "x".repeat(2500);
    let records: Vec<MessageRecord> = (0..2600)
        .map(|i| {
            let at = now - chrono::Duration::seconds(10_000 - i);
            message(
                &c.tenant_id,
                &contact_id,
                &id_at(at),
                "inbound",
                at,
                json!({"content": {"body": body}}),
            )
        })
        .collect();
    c.store.import_messages(&records).await.unwrap();
    let (status, created) = c
        .call("POST", &format!("/v1/contacts/{contact_id}/export"), &c.admin, None)
        .await;
    assert_eq!(status, 202);
    let export_id = created["export_id"].as_str().unwrap();
    let ready = export_until_done(&c, export_id).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["size_bytes"].as_u64().unwrap() > 6 * 1024 * 1024);
    // A multipart object's ETag ends with its number of parts.
    let key = crm_shared::privacy::export_key(&c.tenant_id, &contact_id, export_id);
    let head = s3()
        .await
        .head_object()
        .bucket(exports_bucket())
        .key(&key)
        .send()
        .await
        .unwrap();
    let etag = head.e_tag().unwrap().trim_matches('"').to_owned();
    assert!(etag.ends_with("-2"), "{etag}");
    let document: Value = reqwest::get(ready["url"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["messages"].as_array().unwrap().len(), 2601);
}

/// Everything a busy contact leaves behind, so erasure has all of it to find.
struct Seeded {
    contact_id: String,
    wamids: Vec<String>,
    message_ids: Vec<String>,
    media_keys: Vec<String>,
    export_id: String,
    idempotency_hashes: Vec<String>,
    tags: usize,
}

async fn seed_busy_contact(c: &Ctx, from: &str, bulk: usize) -> Seeded {
    let (t, store) = (&c.tenant_id, &c.store);
    let contact_id = c.inbound_text(from, &format!("wamid.{from}.in.1"), "hello").await;
    let mut wamids = vec![format!("wamid.{from}.in.1")];
    let path = format!("/v1/contacts/{contact_id}");
    let (status, _) = c
        .call(
            "PATCH",
            &path,
            &c.agent,
            Some(
                json!({"name": "Ada Lovelace", "email": "ada@example.com", "tags": ["vip", "newsletter"],
                        "attributes": {"plan": "gold"}}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = c
        .call(
            "PUT",
            &format!("{path}/consent"),
            &c.agent,
            Some(json!({"marketing": "opted_in", "source": "checkout"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = c
        .call(
            "PUT",
            &format!("{path}/restriction"),
            &c.agent,
            Some(json!({"restricted": true, "reason": "asked to pause"})),
        )
        .await;
    assert_eq!(status, 200);

    // Outbound sends as the sender stores them: idempotency record, wamid pointer (with its
    // reference), a status parked before the pointer existed.
    let mut idempotency_hashes = Vec::new();
    let mut message_ids = Vec::new();
    for i in 0..3 {
        let now = Utc::now();
        let id = crm_shared::ids::new_id();
        let record = message(t, &contact_id, &id, "outbound", now, json!({"status": "queued"}));
        let hash = format!("{:064x}", i + 1000 * from.len() as u64 + rand_u64());
        let idem = IdempotencyRecord {
            tenant_id: t.clone(),
            key_hash: hash.clone(),
            request_hash: "r".repeat(64),
            status_code: 202,
            response: json!({"id": id, "status": "queued"}),
            message_id: id.clone(),
            contact_id: contact_id.clone(),
            created_at: now,
            expires_at: (now + chrono::Duration::hours(48)).timestamp(),
        };
        store.create_message_once(&record, Some(&idem), None).await.unwrap();
        let wamid = format!("wamid.{from}.out.{i}");
        let parked = store
            .apply_status(
                t,
                &StatusWrite {
                    wamid: wamid.clone(),
                    status: MessageStatus::Delivered,
                    at: now,
                    error: None,
                    pricing: None,
                    conversation: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(parked, StatusOutcome::Parked);
        store.mark_sent(t, &id, &contact_id, &wamid, now).await.unwrap();
        idempotency_hashes.push(hash);
        message_ids.push(id);
        wamids.push(wamid);
    }
    // A stored inbound image (the media worker's result).
    let image_at = Utc::now();
    let image_id = id_at(image_at);
    let image_key = media_key(t, &contact_id, &image_id);
    put_object(stack().media_bucket(), &image_key).await;
    store
        .import_messages(&[message(
            t,
            &contact_id,
            &image_id,
            "inbound",
            image_at,
            json!({"type": "image", "media": {"media_id": "m", "status": "pending"}}),
        )])
        .await
        .unwrap();
    let media: MediaRef = serde_json::from_value(stored_media(&image_key)).unwrap();
    store.update_media(t, &image_id, &media).await.unwrap();
    message_ids.push(image_id);
    let mut media_keys = vec![image_key];

    // A long history; every 50th message has a stored media object.
    let now = Utc::now();
    let mut records = Vec::new();
    for i in 0..bulk {
        let at = now - chrono::Duration::seconds(bulk as i64 - i as i64 + 100);
        let id = id_at(at);
        let mut extra = json!({"wamid": format!("wamid.{from}.bulk.{i}")});
        if i % 50 == 0 {
            let key = media_key(t, &contact_id, &id);
            put_object(stack().media_bucket(), &key).await;
            extra = json!({"type": "image", "media": stored_media(&key)});
            media_keys.push(key);
        }
        message_ids.push(id.clone());
        records.push(message(t, &contact_id, &id, "inbound", at, extra));
    }
    store.import_messages(&records).await.unwrap();

    // A read mark and an internal note on the conversation the first message opened.
    let conv_path = format!("/v1/conversations/{contact_id}-{}", c.phone_number_id);
    let (status, body) = c
        .call(
            "POST",
            &format!("{conv_path}/read"),
            &c.agent,
            Some(json!({"up_to": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c
        .call(
            "POST",
            &format!("{conv_path}/notes"),
            &c.agent,
            Some(json!({"body": "Ada asked about invoice 7731"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // A built export.
    let (status, created) = c.call("POST", &format!("{path}/export"), &c.admin, None).await;
    assert_eq!(status, 202);
    let export_id = created["export_id"].as_str().unwrap().to_owned();
    assert_eq!(export_until_done(c, &export_id).await["status"], "ready");
    Seeded {
        contact_id,
        wamids,
        message_ids,
        media_keys,
        export_id,
        idempotency_hashes,
        tags: 2,
    }
}

fn rand_u64() -> u64 {
    let id = crm_shared::ids::new_id();
    id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
}

/// Items of the tenant, and objects anywhere, that still mention any of `needles` — except the
/// audit log and the erasure's receipt, which name the contact by id (never by anything else).
pub(crate) async fn leftovers(c: &Ctx, erasure_id: &str, needles: &[String], id_only: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let tenant = tenant_pk(&c.tenant_id);
    let receipts = [audit_pk(&c.tenant_id), erasure_pk(&c.tenant_id, erasure_id)];
    for (pk, sk, text) in scan_table(&c.store).await {
        if pk != tenant && !pk.starts_with(&format!("{tenant}#")) {
            continue;
        }
        let allowed: &[String] = if receipts.contains(&pk) { id_only } else { &[] };
        for needle in needles.iter().filter(|n| !allowed.contains(n)) {
            if text.contains(needle.as_str()) {
                found.push(format!("item {pk} / {sk} mentions {needle}"));
            }
        }
    }
    for bucket in [stack().media_bucket(), exports_bucket()] {
        for key in all_keys(bucket).await {
            for needle in needles.iter().filter(|n| key.contains(n.as_str())) {
                found.push(format!("object {bucket}/{key} mentions {needle}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn erasure_leaves_nothing_of_the_contact_in_any_table_or_bucket() {
    let _serial = bulk_lock().await;
    let c = ctx("Erasure").await;
    let b = ctx("Erasure other tenant").await;
    let seeded = seed_busy_contact(&c, "447700900123", 3000).await;
    let x = &seeded.contact_id;
    // Another contact of the tenant, and the same person at another tenant: both stay.
    let y = c.inbound_text("447700900456", "wamid.y.1", "I stay").await;
    let y_key = media_key(&c.tenant_id, &y, "keep");
    put_object(stack().media_bucket(), &y_key).await;
    let bx = b.inbound_text("447700900123", "wamid.b.1", "me too").await;
    let bx_key = media_key(&b.tenant_id, &bx, "keep");
    put_object(stack().media_bucket(), &bx_key).await;

    let (status, _) = c.call("DELETE", &format!("/v1/contacts/{x}"), &c.agent, None).await;
    assert_eq!(status, 403, "erasure needs admin");
    let (status, _) = b.call("DELETE", &format!("/v1/contacts/{x}"), &b.admin, None).await;
    assert_eq!(status, 404, "another tenant cannot erase it");

    let (status, receipt) = c.call("DELETE", &format!("/v1/contacts/{x}"), &c.admin, None).await;
    assert!(status == 200 || status == 202, "{status} {receipt}");
    let erasure_id = receipt["erasure_id"].as_str().unwrap().to_owned();
    // Gone for the API at once, whatever is still being deleted.
    let (status, _) = c.call("GET", &format!("/v1/contacts/{x}"), &c.viewer, None).await;
    assert_eq!(status, 404);
    let (status, _) = c
        .call("GET", &format!("/v1/contacts/{x}/messages"), &c.viewer, None)
        .await;
    assert_eq!(status, 404);
    let receipt = if status == 202 || receipt["status"] == "in_progress" {
        erase_until_done(&c, &erasure_id).await
    } else {
        receipt
    };
    assert_eq!(receipt["status"], "completed", "{receipt}");
    assert_eq!(receipt["contact_id"], x.as_str());
    let d = &receipt["deleted"];
    assert_eq!(d["contacts"], 1, "{d}");
    assert_eq!(d["identities"], 1, "{d}");
    assert_eq!(d["messages"], 3000 + 1 + 3 + 1, "{d}");
    assert_eq!(d["media_objects"], seeded.media_keys.len(), "{d}");
    assert_eq!(d["export_objects"], 1, "{d}");
    assert_eq!(d["exports"], 1, "{d}");
    assert_eq!(d["idempotency_records"], 3, "{d}");
    assert_eq!(d["pointers"], 3, "{d}");
    assert_eq!(d["statuses"], 3, "{d}");
    assert_eq!(d["tags"], seeded.tags, "{d}");
    assert_eq!(d["history_entries"], 2, "{d}");
    assert_eq!(d["conversations"], 1, "{d}");
    assert_eq!(d["notes"], 1, "{d}");

    // Nothing left: the contact's id, phone, messages, wamids, objects, export, idempotency keys.
    let mut needles = vec![
        x.clone(),
        "447700900123".to_owned(),
        "Ada Lovelace".to_owned(),
        "ada@example.com".to_owned(),
        "invoice 7731".to_owned(),
        seeded.export_id.clone(),
    ];
    needles.extend(seeded.wamids.iter().cloned());
    needles.extend(seeded.idempotency_hashes.iter().cloned());
    needles.extend(seeded.message_ids.iter().step_by(97).cloned());
    needles.extend(seeded.message_ids.iter().rev().take(3).cloned());
    // The audit log and the receipt name the contact and its export by id, and nothing else.
    let ids = [x.clone(), seeded.export_id.clone()];
    let found = leftovers(&c, &erasure_id, &needles, &ids).await;
    assert!(found.is_empty(), "{}", found.join("\n"));
    for key in &seeded.media_keys {
        assert!(!object_exists(stack().media_bucket(), key).await, "{key}");
    }
    assert!(
        all_keys(exports_bucket())
            .await
            .iter()
            .all(|k| !k.starts_with(&contact_media_prefix(&c.tenant_id, x)))
    );
    let (status, _) = c
        .call("GET", &format!("/v1/exports/{}", seeded.export_id), &c.admin, None)
        .await;
    assert_eq!(status, 404);

    // The others are untouched.
    let (status, _) = c.call("GET", &format!("/v1/contacts/{y}"), &c.viewer, None).await;
    assert_eq!(status, 200);
    assert_eq!(conversation(&c.store, &c.tenant_id, &y).await.len(), 1);
    assert!(object_exists(stack().media_bucket(), &y_key).await);
    let (status, body) = b.call("GET", &format!("/v1/contacts/{bx}"), &b.viewer, None).await;
    assert_eq!((status, body["phone"].clone()), (200, json!("+447700900123")));
    assert!(object_exists(stack().media_bucket(), &bx_key).await);

    // Repeating the request answers with the same receipt; the receipt is the tenant's only.
    let (status, again) = c.call("DELETE", &format!("/v1/contacts/{x}"), &c.admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(again, receipt);
    let (status, fetched) = c
        .call("GET", &format!("/v1/erasures/{erasure_id}"), &c.admin, None)
        .await;
    assert_eq!((status, &fetched), (200, &receipt));
    let (status, _) = b
        .call("GET", &format!("/v1/erasures/{erasure_id}"), &b.admin, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = c
        .call("GET", &format!("/v1/erasures/{erasure_id}"), &c.viewer, None)
        .await;
    assert_eq!(status, 403);

    // The same person writing again is a new contact with a new history.
    let fresh = c.inbound_text("447700900123", "wamid.after.1", "back again").await;
    assert_ne!(&fresh, x);
    let history = conversation(&c.store, &c.tenant_id, &fresh).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].wamid.as_deref(), Some("wamid.after.1"));

    // The audit log records the erasure without what was erased.
    let (_, log) = c.call("GET", "/v1/audit?limit=100", &c.admin, None).await;
    let entry = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "contact.erase")
        .expect("the erasure is audited");
    assert_eq!(entry["target_id"], x.as_str());
    assert_eq!(entry["details"]["erasure_id"], erasure_id.as_str());
    let text = log.to_string();
    assert!(!text.contains("447700900123") && !text.contains("Ada") && !text.contains("example.com"));
}

#[tokio::test]
async fn an_erasure_that_runs_out_of_time_continues_on_the_queue() {
    let _serial = bulk_lock().await;
    // No time at all inside the request: everything after the atomic step goes to the queue.
    let c = ctx_with("Erasure on the queue", Some(Duration::ZERO)).await;
    let x = c.inbound_text("447700900777", "wamid.q.1", "hello").await;
    let now = Utc::now();
    let records: Vec<MessageRecord> = (0..2500)
        .map(|i| {
            let at = now - chrono::Duration::seconds(5000 - i);
            message(&c.tenant_id, &x, &id_at(at), "inbound", at, json!({}))
        })
        .collect();
    c.store.import_messages(&records).await.unwrap();

    let (status, receipt) = c.call("DELETE", &format!("/v1/contacts/{x}"), &c.admin, None).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["status"], "in_progress");
    assert_eq!(receipt["deleted"]["contacts"], 1);
    let erasure_id = receipt["erasure_id"].as_str().unwrap().to_owned();
    let (status, _) = c.call("GET", &format!("/v1/contacts/{x}"), &c.viewer, None).await;
    assert_eq!(status, 404, "the contact is gone before its history is");
    let (status, body) = c
        .call("GET", &format!("/v1/erasures/{erasure_id}"), &c.admin, None)
        .await;
    assert_eq!((status, body["status"].clone()), (200, json!("in_progress")));

    // While a worker holds the erasure's lease, another delivery of its job backs off.
    let lease = Lease::new(Utc::now() + chrono::Duration::seconds(60));
    let held = c
        .store
        .claim_erasure(&c.tenant_id, &erasure_id, &lease, Utc::now())
        .await
        .unwrap()
        .expect("the lease is free after the request handed off");
    let busy = c
        .privacy
        .continue_erasure(&c.tenant_id, &erasure_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(busy, crm_shared::privacy::erasure::Continued::Busy);
    c.store.save_erasure(&held, &lease, None).await.unwrap();

    let done = erase_until_done(&c, &erasure_id).await;
    assert_eq!(done["deleted"]["messages"], 2501, "{done}");
    let again = c
        .privacy
        .continue_erasure(&c.tenant_id, &erasure_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(again, crm_shared::privacy::erasure::Continued::NothingToDo);
    let found = leftovers(&c, &erasure_id, std::slice::from_ref(&x), std::slice::from_ref(&x)).await;
    assert!(found.is_empty(), "{}", found.join("\n"));
    // The eraser recorded the completion.
    let (_, log) = c.call("GET", "/v1/audit", &c.admin, None).await;
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "contact.erasure_completed" && e["details"]["deleted"]["messages"] == 2501),
        "{log}"
    );
}

/// What the retention test seeds for one tenant, relative to `as_of`.
struct RetentionFixture {
    contact_id: String,
    old_in: String,
    old_out: String,
    old_wamid: String,
    mid: String,
    new: String,
    edge: String,
    old_key: String,
    mid_key: String,
    new_key: String,
    old_export: ExportRecord,
    new_export: ExportRecord,
    old_audit: String,
    new_audit: String,
}

async fn seed_retention(c: &Ctx, as_of: DateTime<Utc>) -> RetentionFixture {
    let (t, store) = (&c.tenant_id, &c.store);
    let contact_id = c.inbound_text("447700900888", "wamid.ret.now", "now").await;
    let days = |d: i64| as_of - chrono::Duration::days(d);
    let (old_in, old_out, mid, new) = (id_at(days(40)), id_at(days(40)), id_at(days(20)), id_at(days(5)));
    // Just inside a 30-day message retention.
    let edge_at = days(30) + chrono::Duration::hours(1);
    let edge = id_at(edge_at);
    let key = |id: &str| media_key(t, &contact_id, id);
    let old_wamid = format!("wamid.ret.out.{old_out}");
    let records = vec![
        message(
            t,
            &contact_id,
            &old_in,
            "inbound",
            days(40),
            json!({"type": "image", "media": stored_media(&key(&old_in))}),
        ),
        message(
            t,
            &contact_id,
            &old_out,
            "outbound",
            days(40),
            json!({"wamid": old_wamid}),
        ),
        message(
            t,
            &contact_id,
            &mid,
            "inbound",
            days(20),
            json!({"type": "image", "media": stored_media(&key(&mid))}),
        ),
        message(
            t,
            &contact_id,
            &new,
            "inbound",
            days(5),
            json!({"type": "image", "media": stored_media(&key(&new))}),
        ),
        message(t, &contact_id, &edge, "inbound", edge_at, json!({})),
    ];
    store.import_messages(&records).await.unwrap();
    for id in [&old_in, &mid, &new] {
        put_object(stack().media_bucket(), &key(id)).await;
    }
    // The old outbound message's pointer, its reference and a parked status.
    let pointer = wamid_pk(t, &old_wamid);
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let raw = |pk: &str, sk: &str, extra: &[(&str, &str)]| -> Item {
        let mut item: Item = [(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))].into_iter().collect();
        for (k, v) in extra {
            item.insert((*k).to_owned(), s(v));
        }
        item
    };
    store
        .put_items(vec![
            raw(&pointer, WAMID_SK, &[("message_id", &old_out)]),
            raw(&pointer, &pending_status_sk("read"), &[("status", "read")]),
            raw(
                &contact_pk(t, &contact_id),
                &reference_sk(&pointer),
                &[("ref_sk", WAMID_SK)],
            ),
        ])
        .await
        .unwrap();
    // Exports made 5 days and 1 day ago.
    let mut exports = Vec::new();
    for age in [5, 1] {
        let record = ExportRecord::new(t, &contact_id, None, 7, days(age));
        store.create_export(&record).await.unwrap();
        put_object(exports_bucket(), &record.s3_key).await;
        exports.push(record);
    }
    // Audit entries 45 and 10 days old.
    let mut audit_ids = Vec::new();
    for age in [45, 10] {
        let mut entry = AuditEntry::new(t, None, "test.seeded");
        entry.id = id_at(days(age));
        entry.at = days(age);
        store.record_audit(&entry).await.unwrap();
        audit_ids.push(entry.id);
    }
    let new_export = exports.pop().unwrap();
    let old_export = exports.pop().unwrap();
    let new_audit = audit_ids.pop().unwrap();
    let old_audit = audit_ids.pop().unwrap();
    RetentionFixture {
        old_key: key(&old_in),
        mid_key: key(&mid),
        new_key: key(&new),
        contact_id,
        old_in,
        old_out,
        old_wamid,
        mid,
        new,
        edge,
        old_export,
        new_export,
        old_audit,
        new_audit,
    }
}

async fn item_exists(store: &DynamoStore, pk: &str, sk: &str) -> bool {
    store
        .client()
        .get_item()
        .table_name(store.table())
        .key(PK, AttributeValue::S(pk.to_owned()))
        .key(SK, AttributeValue::S(sk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .is_some()
}

fn tenant_report<'a>(report: &'a Value, tenant_id: &str) -> &'a Value {
    report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant_id"] == tenant_id)
        .unwrap_or_else(|| panic!("{tenant_id} is in the report: {report}"))
}

#[tokio::test]
async fn retention_deletes_exactly_what_is_past_each_period_and_nothing_else() {
    let _serial = bulk_lock().await;
    let a = ctx("Retention sweep A").await;
    let b = ctx("Retention sweep B").await;
    let (status, _) = a
        .call(
            "PUT",
            "/v1/settings/retention",
            &a.admin,
            Some(json!({"messages_days": 30, "media_days": 10, "exports_days": 3, "audit_days": 30})),
        )
        .await;
    assert_eq!(status, 200);
    let as_of = Utc::now();
    let fa = seed_retention(&a, as_of).await;
    let fb = seed_retention(&b, as_of).await;

    let as_of_arg = as_of.to_rfc3339();
    let run = || {
        crmctl(&[
            "retention",
            "run",
            "--as-of",
            &as_of_arg,
            "--tenant",
            &a.tenant_id,
            "--tenant",
            &b.tenant_id,
        ])
    };
    let (ok, report, err) = run();
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_value::<DateTime<Utc>>(report["as_of"].clone()).unwrap(),
        as_of
    );
    assert_eq!(
        tenant_report(&report, &a.tenant_id)["deleted"],
        json!({"messages": 2, "media_objects": 2, "exports": 1, "audit_entries": 1, "conversations": 0, "conversations_resolved": 0, "notes": 0, "broadcasts": 0}),
        "{report}"
    );
    assert_eq!(
        tenant_report(&report, &b.tenant_id)["deleted"],
        json!({"messages": 0, "media_objects": 0, "exports": 0, "audit_entries": 0, "conversations": 0, "conversations_resolved": 0, "notes": 0, "broadcasts": 0}),
        "B keeps the defaults: {report}"
    );

    // A: past messages gone with their pointer, reference, parked status and media.
    let (t, s) = (&a.tenant_id, &a.store);
    assert!(!item_exists(s, &message_pk(t, &fa.old_in), MESSAGE_SK).await);
    assert!(!item_exists(s, &message_pk(t, &fa.old_out), MESSAGE_SK).await);
    let pointer = wamid_pk(t, &fa.old_wamid);
    assert!(!item_exists(s, &pointer, WAMID_SK).await);
    assert!(!item_exists(s, &pointer, &pending_status_sk("read")).await);
    assert!(!item_exists(s, &contact_pk(t, &fa.contact_id), &reference_sk(&pointer)).await);
    assert!(!object_exists(stack().media_bucket(), &fa.old_key).await);
    // The 20-day-old message stays, its media does not, and the API stops offering it.
    assert!(item_exists(s, &message_pk(t, &fa.mid), MESSAGE_SK).await);
    assert!(!object_exists(stack().media_bucket(), &fa.mid_key).await);
    let (_, page) = a
        .call(
            "GET",
            &format!("/v1/contacts/{}/messages?limit=100", fa.contact_id),
            &a.viewer,
            None,
        )
        .await;
    let shown = |id: &str| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} listed: {page}"))
    };
    assert_eq!(shown(&fa.mid)["media"]["status"], "expired");
    assert_eq!(shown(&fa.mid)["media"]["url"], Value::Null);
    assert_eq!(shown(&fa.new)["media"]["status"], "available");
    assert!(shown(&fa.new)["media"]["url"].is_string());
    shown(&fa.edge);
    assert!(object_exists(stack().media_bucket(), &fa.new_key).await);
    // Exports: the 5-day-old one (record, reference, object) is gone; yesterday's stays.
    assert!(!item_exists(s, &export_pk(t, &fa.old_export.export_id), EXPORT_SK).await);
    assert!(
        !item_exists(
            s,
            &contact_pk(t, &fa.contact_id),
            &reference_sk(&export_pk(t, &fa.old_export.export_id))
        )
        .await
    );
    assert!(!object_exists(exports_bucket(), &fa.old_export.s3_key).await);
    assert!(item_exists(s, &export_pk(t, &fa.new_export.export_id), EXPORT_SK).await);
    assert!(object_exists(exports_bucket(), &fa.new_export.s3_key).await);
    // Audit: 45 days old goes, 10 days old stays.
    assert!(!item_exists(s, &audit_pk(t), &fa.old_audit).await);
    assert!(item_exists(s, &audit_pk(t), &fa.new_audit).await);

    // B: everything is where it was.
    let (t, s) = (&b.tenant_id, &b.store);
    for id in [&fb.old_in, &fb.old_out, &fb.mid, &fb.new, &fb.edge] {
        assert!(item_exists(s, &message_pk(t, id), MESSAGE_SK).await, "{id}");
    }
    assert!(item_exists(s, &wamid_pk(t, &fb.old_wamid), WAMID_SK).await);
    for key in [&fb.old_key, &fb.mid_key, &fb.new_key] {
        assert!(object_exists(stack().media_bucket(), key).await, "{key}");
    }
    for e in [&fb.old_export, &fb.new_export] {
        assert!(item_exists(s, &export_pk(t, &e.export_id), EXPORT_SK).await);
        assert!(object_exists(exports_bucket(), &e.s3_key).await);
    }
    assert!(item_exists(s, &audit_pk(t), &fb.old_audit).await);

    // A repeat deletes nothing.
    let (ok, report, err) = run();
    assert!(ok, "{err}");
    for tenant in [&a.tenant_id, &b.tenant_id] {
        assert_eq!(
            tenant_report(&report, tenant)["deleted"],
            json!({"messages": 0, "media_objects": 0, "exports": 0, "audit_entries": 0, "conversations": 0, "conversations_resolved": 0, "notes": 0, "broadcasts": 0}),
            "{report}"
        );
    }

    // Every tenant (the scheduled function's walk), as of long ago: lists these tenants and
    // deletes nothing anywhere.
    let (ok, report, err) = crmctl(&["retention", "run", "--as-of", "2001-01-01T00:00:00Z"]);
    assert!(ok, "{err}");
    for tenant in [&a.tenant_id, &b.tenant_id] {
        assert_eq!(tenant_report(&report, tenant)["deleted"]["messages"], 0);
    }
    let (ok, _, err) = crmctl(&["retention", "run", "--as-of", "yesterday"]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");

    // The scheduled function's handler runs the same sweep.
    let deps = worker_deps("RetentionFunction").await;
    let event = json!({"source": "aws.events", "detail-type": "Scheduled Event", "time": "2001-01-01T00:00:00Z"});
    let out = privacy_fn::handle_schedule(&deps, lambda_runtime::LambdaEvent::new(event, Default::default()))
        .await
        .unwrap();
    assert_eq!(out["deleted"]["messages"], 0);
}

#[tokio::test]
async fn offboarding_disables_the_tenant_at_once_and_purges_everything() {
    let _serial = bulk_lock().await;
    let c = ctx("Offboarded").await;
    let keep = ctx("Stays").await;
    let seeded = seed_busy_contact(&c, "447700900999", 300).await;
    let other = c.inbound_text("447700900998", "wamid.off.2", "hi").await;
    put_object(stack().media_bucket(), &media_key(&c.tenant_id, &other, "m")).await;
    let kept = keep.inbound_text("447700900999", "wamid.keep.1", "hi").await;
    let (status, _) = c
        .call(
            "PUT",
            "/v1/settings/retention",
            &c.admin,
            Some(json!({"messages_days": 30, "media_days": 10, "exports_days": 3, "audit_days": 30})),
        )
        .await;
    assert_eq!(status, 200);
    // An erasure still running when the tenant goes.
    let slow = stack().privacy().await.with_request_budget(Duration::ZERO);
    let slow_gw = stack()
        .start_gateway(
            c.store.clone(),
            stack().media_queue_url(),
            stack().outbound_queue_url(),
            slow,
        )
        .await;
    let (status, _) = api(
        "DELETE",
        &format!("{}/v1/contacts/{}", slow_gw.base, seeded.contact_id),
        Some(&c.admin),
        None,
    )
    .await;
    assert_eq!(status, 202);

    // Its event log: a pack of events (deflated, as the events function writes it) and each
    // event's id record, which only the pack names.
    let drafts: Vec<crm_shared::events::EventDraft> = (0..3)
        .map(|i| crm_shared::events::EventDraft {
            id: format!("evt_offboarded{i}"),
            tenant_id: c.tenant_id.clone(),
            event_type: crm_shared::events::EventType::ContactCreated,
            timestamp: Utc::now(),
            data: json!({"contact_id": seeded.contact_id}),
            tally: Vec::new(),
        })
        .collect();
    let counting = crm_shared::reports::counters::Counting {
        time_zone: chrono_tz::UTC,
        business_hours: None,
        per_user: false,
        expires_at: Utc::now() + chrono::Duration::days(1),
    };
    let recorded = crm_shared::store::EventStore::record_events(
        &c.store,
        &c.tenant_id,
        &drafts,
        Utc::now() + chrono::Duration::days(1),
        &counting,
    )
    .await
    .unwrap();
    assert_eq!(recorded.len(), 3);
    // A webhook endpoint and its delivery log, spread over the log's shards.
    let input: crm_shared::events::endpoint::NewEndpoint =
        serde_json::from_value(json!({"url": "https://hooks.example.com/crm"})).unwrap();
    let endpoint = input.into_endpoint(&c.tenant_id, Utc::now()).unwrap();
    use crm_shared::store::WebhookStore;
    c.store
        .create_endpoint(&endpoint, &crm_shared::events::signing::new_secret())
        .await
        .unwrap();
    for event in &recorded {
        let attempt = crm_shared::events::endpoint::DeliveryAttempt {
            attempt_id: crm_shared::ids::new_id(),
            tenant_id: c.tenant_id.clone(),
            endpoint_id: endpoint.endpoint_id.clone(),
            event_id: event.id.clone(),
            event_type: event.event_type,
            attempt: 1,
            at: Utc::now(),
            status_code: Some(200),
            latency_ms: 5,
            success: true,
            error: None,
            next_attempt_at: None,
        };
        c.store.record_delivery(&attempt).await.unwrap();
    }

    let (ok, receipt, err) = crmctl(&["tenant", "delete", "--tenant", &c.tenant_id, "--settle-secs", "0"]);
    assert!(ok, "{err}");
    assert_eq!(receipt["tenant_id"], c.tenant_id.as_str());
    assert_eq!(receipt["status"], "deleted");
    assert_eq!(receipt["keys_revoked"], 3, "{receipt}");
    assert_eq!(receipt["routes_deleted"], 2, "{receipt}");
    let d = &receipt["deleted"];
    // 300 + 5 messages of the busy contact (its erasure was finished by the purge), 1 of the other.
    assert_eq!(d["messages"], 306, "{receipt}");
    assert_eq!(d["media_objects"], seeded.media_keys.len() + 1, "{receipt}");
    assert_eq!(d["export_objects"], 1, "{receipt}");
    // Tenant record, Graph token, three keys, retention settings.
    assert_eq!(d["tenant_items"], 6, "{receipt}");
    assert_eq!(d["erasure_records"], 1, "{receipt}");

    // Keys no longer work; webhooks to its number are acknowledged and stored nowhere.
    let (status, _) = c.call("GET", "/v1/tenant", &c.admin, None).await;
    assert_eq!(status, 401);
    let fresh_gw = stack()
        .start_gateway(
            c.store.clone(),
            stack().media_queue_url(),
            stack().outbound_queue_url(),
            stack().privacy().await,
        )
        .await;
    let body = text_delivery(
        &c.phone_number_id,
        "447700900999",
        "wamid.off.after",
        Utc::now().timestamp(),
        "hi?",
    );
    assert_eq!(post_webhook(&fresh_gw.base, &body, None).await.0, 200);

    // Nothing of the tenant in the table or either bucket.
    let tenant = tenant_pk(&c.tenant_id);
    let left: Vec<String> = scan_table(&c.store)
        .await
        .into_iter()
        .filter(|(pk, _, text)| pk == &tenant || pk.starts_with(&format!("{tenant}#")) || text.contains(&c.tenant_id))
        .map(|(pk, sk, _)| format!("{pk} / {sk}"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for bucket in [stack().media_bucket(), exports_bucket()] {
        let objects: Vec<String> = all_keys(bucket)
            .await
            .into_iter()
            .filter(|k| k.starts_with(&format!("tenants/{}/", c.tenant_id)))
            .collect();
        assert!(objects.is_empty(), "{objects:?}");
    }
    // The other tenant (same customer) is untouched.
    let (status, _) = keep
        .call("GET", &format!("/v1/contacts/{kept}"), &keep.viewer, None)
        .await;
    assert_eq!(status, 200);

    // Again: there is no such tenant any more.
    let (ok, _, err) = crmctl(&["tenant", "delete", "--tenant", &c.tenant_id, "--settle-secs", "0"]);
    assert!(!ok && err.contains("no tenant"), "{err}");
}

/// A status webhook for one of our outbound messages, as Meta sends it.
fn status_delivery(pnid: &str, recipient: &str, wamid: &str, status: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
            "statuses": [{"id": wamid, "status": status, "timestamp": Utc::now().timestamp().to_string(),
                          "recipient_id": recipient}]
        }}]}]
    })
    .to_string()
}

#[tokio::test]
async fn an_erased_contact_does_not_come_back_from_redelivered_webhooks() {
    let c = ctx("Tombstones").await;
    let t = &c.tenant_id;
    let from = "447700900777";
    let ts = Utc::now().timestamp();
    let hello = text_delivery(&c.phone_number_id, from, "wamid.tomb.1", ts, "hello, remember me?");
    let stop = text_delivery(&c.phone_number_id, from, "wamid.tomb.2", ts + 1, "STOP");
    for body in [&hello, &stop] {
        let (status, out) = post_webhook(&c.base, body, None).await;
        assert_eq!(status, 200, "{out}");
    }
    let x = c.inbound_text(from, "wamid.tomb.0", "and this").await;
    let contact = c.store.get_contact(t, &x).await.unwrap().unwrap();
    assert_eq!(contact.consent.marketing.as_str(), "opted_out");
    // One of our messages to them, sent.
    let out_id = crm_shared::ids::new_id();
    let record = message(t, &x, &out_id, "outbound", Utc::now(), json!({"status": "queued"}));
    c.store.create_message_once(&record, None, None).await.unwrap();
    c.store
        .mark_sent(t, &out_id, &x, "wamid.tomb.out", Utc::now())
        .await
        .unwrap();

    let (status, receipt) = c.call("DELETE", &format!("/v1/contacts/{x}"), &c.admin, None).await;
    assert!(status == 200 || status == 202, "{status} {receipt}");
    let erasure_id = receipt["erasure_id"].as_str().unwrap().to_owned();
    let receipt = erase_until_done(&c, &erasure_id).await;
    assert_eq!(receipt["status"], "completed", "{receipt}");
    assert_eq!(receipt["deleted"]["messages"], 4, "{receipt}");

    // Meta redelivers the old signed webhooks (it retries for days), and a late status.
    for body in [
        &hello,
        &stop,
        &status_delivery(&c.phone_number_id, from, "wamid.tomb.out", "read"),
    ] {
        let (status, out) = post_webhook(&c.base, body, None).await;
        assert_eq!(status, 200, "acknowledged: {out}");
    }
    let identity = CustomerIdentity {
        phone: Some(format!("+{from}")),
        user_id: None,
    };
    assert_eq!(
        c.store.match_contact(t, &identity).await.unwrap(),
        None,
        "no contact came back"
    );
    let needles: Vec<String> = [
        x.as_str(),
        from,
        "wamid.tomb.0",
        "wamid.tomb.1",
        "wamid.tomb.2",
        "wamid.tomb.out",
        "remember me",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let found = leftovers(&c, &erasure_id, &needles, std::slice::from_ref(&x)).await;
    assert!(found.is_empty(), "{}", found.join("\n"));
    for wamid in ["wamid.tomb.0", "wamid.tomb.1", "wamid.tomb.2", "wamid.tomb.out"] {
        let (pk, sk) = tombstone_key(t, wamid);
        assert!(item_exists(&c.store, &pk, &sk).await, "{wamid}");
    }

    // A genuinely new message from the same customer starts a fresh contact, consent unknown.
    let fresh = c.inbound_text(from, "wamid.tomb.3", "hi, it's me again").await;
    assert_ne!(fresh, x);
    assert_eq!(conversation(&c.store, t, &fresh).await.len(), 1);
    let fresh = c.store.get_contact(t, &fresh).await.unwrap().unwrap();
    assert_ne!(
        fresh.consent.marketing.as_str(),
        "opted_out",
        "the old STOP was not replayed"
    );
}
