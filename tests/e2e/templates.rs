//! The template registry end to end: create → `PENDING` → `APPROVED` through the sandbox's
//! signed webhook, the reconcile fixing drift both ways (API, schedule handler and `crmctl`),
//! tenant isolation, and template sends refused locally for each reason with no Graph call.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crm_shared::admin;
use crm_shared::auth::Role;
use crm_shared::config::GraphConfig;
use crm_shared::graph::GraphClient;
use crm_shared::store::{DynamoStore, TemplateStore};
use crm_shared::template::{ParameterFormat, TemplateCategory, TemplateRecord};
use devstack::sandbox::Sandbox;
use e2e_tests::{Gateway, TEST_APP_SECRET, api, new_tenant, stack, start_gateway_tuned};

fn graph(base: &str) -> GraphClient {
    GraphClient::new(&GraphConfig {
        base_url: base.to_owned(),
        version: "v25.0".into(),
    })
    .unwrap()
}

struct World {
    store: DynamoStore,
    gw: Gateway,
    sandbox: Arc<Sandbox>,
    sandbox_url: String,
    tenant_id: String,
    admin: String,
    agent: String,
}

/// A tenant, a gateway whose API reaches the sandbox for templates, and the sandbox posting
/// its webhooks to that gateway.
async fn world(name: &str) -> World {
    let store = stack().store().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox_url = format!("http://{}", listener.local_addr().unwrap());
    let base = sandbox_url.clone();
    let gw = start_gateway_tuned(store.clone(), move |d| d.with_graph(graph(&base))).await;
    let sandbox = Sandbox::new(
        store.clone(),
        &format!("{}/webhooks/whatsapp", gw.base),
        TEST_APP_SECRET,
        &sandbox_url,
    );
    tokio::spawn(devstack::sandbox::serve(listener, sandbox.clone()));
    let t = new_tenant(&store, name).await;
    let agent = admin::create_api_key(&store, &t.tenant.tenant_id, Role::Agent)
        .await
        .unwrap();
    World {
        store,
        gw,
        sandbox,
        sandbox_url,
        tenant_id: t.tenant.tenant_id.clone(),
        admin: t.api_key.expose().to_owned(),
        agent: agent.api_key.expose().to_owned(),
    }
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.base)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        api(method, &self.url(path), Some(&self.admin), body).await
    }

    /// Waits until the registry shows `name` in `language` with `status` (a webhook's doing).
    async fn until_status(&self, name: &str, language: &str, status: &str) -> Value {
        for _ in 0..100 {
            let (code, t) = self.call("GET", &format!("/v1/templates/{name}"), None).await;
            if code == 200
                && let Some(entry) = t["languages"]
                    .as_array()
                    .and_then(|l| l.iter().find(|e| e["language"] == language && e["status"] == status))
            {
                return entry.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name}/{language} never became {status}");
    }

    async fn create(&self, body: Value) -> (u16, Value) {
        self.call("POST", "/v1/templates", Some(body)).await
    }

    async fn send(&self, body: Value) -> (u16, Value) {
        api("POST", &self.url("/v1/messages"), Some(&self.agent), Some(body)).await
    }
}

fn order_update(language: &str) -> Value {
    json!({"name": "order_update", "language": language, "category": "UTILITY", "components": [
        {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}", "example": {"header_text": ["A-1"]}},
        {"type": "BODY", "text": "Hi {{1}}, your order ships on {{2}}.", "example": {"body_text": [["Ana", "Monday"]]}},
        {"type": "BUTTONS", "buttons": [
            {"type": "URL", "text": "Track", "url": "https://shop.example/t/{{1}}", "example": ["A-1"]}]}
    ]})
}

fn order_send(to: &str, language: Value, body_params: Value) -> Value {
    json!({"to": to, "type": "template", "template": {"name": "order_update", "language": language, "components": [
        {"type": "header", "parameters": [{"type": "text", "text": "A-7"}]},
        {"type": "body", "parameters": body_params},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "A-7"}]}
    ]}})
}

fn text(s: &str) -> Value {
    json!({"type": "text", "text": s})
}

#[tokio::test]
async fn templates_are_created_reviewed_by_webhook_and_reconciled_both_ways() {
    let w = world("Templates registry").await;

    // The lint refuses before Meta: nothing reaches the sandbox.
    let mut gap = order_update("en_US");
    gap["components"][1]["text"] = json!("Hi {{1}}, your order ships on {{3}}.");
    let (status, refused) = w.create(gap).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("invalid_template")),
        "{refused}"
    );
    assert_eq!(refused["error"]["details"][0]["code"], "parameter_numbering");
    assert_eq!(w.call("GET", "/v1/templates/order_update", None).await.0, 404);

    // Create → PENDING at once → APPROVED by Meta's (the sandbox's) signed webhook.
    let (status, created) = w.create(order_update("en_US")).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["parameters"]["body"]["params"], json!(["1", "2"]));
    let approved = w.until_status("order_update", "en_US", "APPROVED").await;
    assert_eq!(approved["category"], "UTILITY");
    let mut rejected = order_update("en_US");
    rejected["name"] = json!("reject_this_one");
    assert_eq!(w.create(rejected).await.0, 201);
    let entry = w.until_status("reject_this_one", "en_US", "REJECTED").await;
    assert_eq!(entry["reason"], "INVALID_FORMAT");
    // Meta's own refusal comes back with its code: the same name and language again.
    let (status, dup) = w.create(order_update("en_US")).await;
    assert_eq!(
        (status, dup["error"]["code"].as_str()),
        (422, Some("meta_rejected")),
        "{dup}"
    );
    assert_eq!(dup["error"]["meta"]["code"], 100);

    // Drift both ways: an entry Meta does not have, and Meta's hello_world the registry lacks.
    let stale = TemplateRecord {
        tenant_id: w.tenant_id.clone(),
        name: "gone_at_meta".into(),
        language: "en".into(),
        meta_id: "1".into(),
        status: "APPROVED".into(),
        reason: None,
        category: TemplateCategory::Utility,
        quality: None,
        parameter_format: ParameterFormat::Positional,
        components: json!([]),
        schema: None,
        last_synced_at: None,
        updated_at: chrono::Utc::now() - chrono::Duration::hours(2),
    };
    w.store.put_template(&stale).await.unwrap();
    let (status, report) = w.call("POST", "/v1/templates/sync", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["listed"].as_u64(), report["removed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(w.call("GET", "/v1/templates/gone_at_meta", None).await.0, 404);
    let (_, list) = w.call("GET", "/v1/templates?status=APPROVED&limit=1", None).await;
    assert_eq!(list["items"][0]["name"], "hello_world");
    assert!(list["items"][0]["last_synced_at"].is_string());
    let cursor = list["next_cursor"]
        .as_str()
        .expect("a second approved template")
        .to_owned();
    let (_, page2) = w
        .call(
            "GET",
            &format!("/v1/templates?status=APPROVED&limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(page2["items"][0]["name"], "order_update");
    assert!(page2["next_cursor"].is_null());
    // A cursor of one filter set is refused on another.
    let (status, _) = w
        .call("GET", &format!("/v1/templates?limit=1&cursor={cursor}"), None)
        .await;
    assert_eq!(status, 400);

    // The schedule's handler, on its own role, reconciles every tenant.
    let sync_store = stack().store_for("TemplateSyncFunction").await;
    let all = api_fn::schedule::reconcile(&sync_store, &graph(&w.sandbox_url))
        .await
        .unwrap();
    assert!(all["tenants_synced"].as_u64().unwrap() >= 1, "{all}");

    // Another tenant sees none of it, and cannot delete it.
    let other = new_tenant(&w.store, "Templates other").await;
    let key = other.api_key.expose();
    let (_, theirs) = api("GET", &w.url("/v1/templates"), Some(key), None).await;
    assert_eq!(theirs["items"], json!([]));
    assert_eq!(
        api("GET", &w.url("/v1/templates/order_update"), Some(key), None)
            .await
            .0,
        404
    );
    assert_eq!(
        api("DELETE", &w.url("/v1/templates/order_update"), Some(key), None)
            .await
            .0,
        404
    );
    // Viewers and agents may read, not create.
    assert_eq!(
        api(
            "POST",
            &w.url("/v1/templates"),
            Some(&w.agent),
            Some(order_update("de"))
        )
        .await
        .0,
        403
    );

    // Delete one language, then the name: at Meta and in the registry.
    assert_eq!(w.create(order_update("de")).await.0, 201);
    w.until_status("order_update", "de", "APPROVED").await;
    let (status, deleted) = w.call("DELETE", "/v1/templates/order_update?language=de", None).await;
    assert_eq!((status, deleted["deleted"].as_u64()), (200, Some(1)), "{deleted}");
    let (_, left) = w.call("GET", "/v1/templates/order_update", None).await;
    assert_eq!(left["languages"].as_array().unwrap().len(), 1);
    assert_eq!(w.call("DELETE", "/v1/templates/order_update", None).await.0, 200);
    assert_eq!(w.call("GET", "/v1/templates/order_update", None).await.0, 404);
    let (_, audit) = w.call("GET", "/v1/audit", None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["template.create", "template.delete", "templates.sync"] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
}

#[tokio::test]
async fn template_sends_are_checked_before_they_are_queued() {
    let w = world("Templates sends").await;
    for language in ["en", "pt"] {
        assert_eq!(w.create(order_update(language)).await.0, 201);
    }
    let promo = json!({"name": "spring_promo", "language": "en", "category": "MARKETING", "components": [
        {"type": "BODY", "text": "Spring sale: {{1}} off everything!", "example": {"body_text": [["20%"]]}}]});
    assert_eq!(w.create(promo).await.0, 201);
    for (name, language) in [("order_update", "en"), ("order_update", "pt"), ("spring_promo", "en")] {
        w.until_status(name, language, "APPROVED").await;
    }
    let sent_before = w.sandbox.sent().len();

    // Each reason Meta would refuse for, refused here with Meta's code and stored as rejected.
    let to = "+447911123480";
    let en = json!({"code": "en"});
    let good = || json!([text("Ana"), text("Monday")]);
    let cases = [
        (
            json!({"to": to, "type": "template", "template": {"name": "no_such", "language": en}}),
            132001,
            "template.name",
        ),
        (
            order_send(to, en.clone(), json!([text("Ana")])),
            132000,
            "template.components[1]",
        ),
        (
            order_send(
                to,
                en.clone(),
                json!([text("Ana"), {"type": "image", "image": {"id": "1"}}]),
            ),
            132012,
            "template.components[1].parameters[1].type",
        ),
        (
            order_send(to, en.clone(), json!([text(&"a".repeat(1020)), text("Monday")])),
            132005,
            "template.components[1]",
        ),
    ];
    for (body, code, field) in cases {
        let (status, refused) = w.send(body).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (422, Some("template_invalid")),
            "{refused}"
        );
        assert_eq!(refused["error"]["details"][0]["code"], code, "{refused}");
        assert_eq!(refused["error"]["details"][0]["field"], field, "{refused}");
        let id = refused["error"]["message_id"].as_str().unwrap();
        let (_, stored) = api("GET", &w.url(&format!("/v1/messages/{id}")), Some(&w.agent), None).await;
        assert_eq!(
            (stored["status"].as_str(), stored["error"]["code"].as_i64()),
            (Some("rejected"), Some(code))
        );
    }
    // Paused and disabled, as Meta's webhooks report them (driven through the sandbox).
    for (status, code) in [("PAUSED", 132015), ("DISABLED", 132016)] {
        w.sandbox
            .set_template_status(None, "order_update", Some("pt"), status, None)
            .await
            .unwrap();
        w.until_status("order_update", "pt", status).await;
        let (_, refused) = w.send(order_send(to, json!({"code": "pt"}), good())).await;
        assert_eq!(refused["error"]["details"][0]["code"], code, "{refused}");
    }
    // A well-formed send is queued, in exactly the language it names.
    let (status, queued) = w.send(order_send(to, en.clone(), good())).await;
    assert_eq!(status, 202, "{queued}");
    let (_, stored) = api(
        "GET",
        &w.url(&format!("/v1/messages/{}", queued["id"].as_str().unwrap())),
        Some(&w.agent),
        None,
    )
    .await;
    assert_eq!(
        (stored["language"].as_str(), stored["category"].as_str()),
        (Some("en"), Some("utility"))
    );
    assert_eq!(
        stored["content"]["language"],
        json!({"code": "en", "policy": "deterministic"})
    );
    assert_eq!(
        w.sandbox.sent().len(),
        sent_before,
        "Meta saw none of these (the sender has not run)"
    );

    // Category: Meta's, not the caller's.
    let promo_send = |category: Option<&str>| {
        let mut b = json!({"to": to, "type": "template", "template": {"name": "spring_promo", "language": en,
            "components": [{"type": "body", "parameters": [text("20%")]}]}});
        if let Some(c) = category {
            b["category"] = json!(c);
        }
        b
    };
    let (status, mismatch) = w.send(promo_send(Some("utility"))).await;
    assert_eq!(
        (status, mismatch["error"]["code"].as_str()),
        (422, Some("category_mismatch"))
    );
    let (_, contacts) = api("GET", &w.url("/v1/contacts?q=%2B447911123480"), Some(&w.agent), None).await;
    let contact = contacts["items"][0]["id"].as_str().unwrap().to_owned();
    api(
        "PUT",
        &w.url(&format!("/v1/contacts/{contact}/consent")),
        Some(&w.agent),
        Some(json!({"marketing": "opted_out", "source": "test"})),
    )
    .await;
    let (_, opted_out) = w.send(promo_send(None)).await;
    assert_eq!(opted_out["error"]["code"], "opted_out", "{opted_out}");
    // Meta recategorises the utility template as marketing: the next send follows Meta.
    w.sandbox
        .set_template_status(None, "order_update", Some("pt"), "APPROVED", None)
        .await
        .unwrap();
    let language_auto = json!({"code": "auto"});
    w.sandbox
        .deliver_waba_change(
            &w.store_waba().await,
            "template_category_update",
            json!({"message_template_id": 1, "message_template_name": "order_update", "message_template_language": "en",
               "previous_category": "UTILITY", "new_category": "MARKETING"}),
        )
        .await
        .unwrap();
    for _ in 0..100 {
        let (_, t) = w.call("GET", "/v1/templates/order_update", None).await;
        if t["languages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["language"] == "en" && e["category"] == "MARKETING")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, now_marketing) = w.send(order_send(to, en.clone(), good())).await;
    assert_eq!(now_marketing["error"]["code"], "opted_out", "{now_marketing}");

    // Language fallback: contact's language → its base → the tenant's default → 422.
    let other = "+447911123481";
    let (_, c) = api(
        "POST",
        &w.url("/v1/contacts"),
        Some(&w.agent),
        Some(json!({"phone": other, "language": "pt-BR"})),
    )
    .await;
    assert_eq!(c["language"], "pt_BR");
    let cid = c["id"].as_str().unwrap().to_owned();
    let (status, auto) = w.send(order_send(other, language_auto.clone(), good())).await;
    assert_eq!(status, 202, "{auto}");
    let (_, m) = api(
        "GET",
        &w.url(&format!("/v1/messages/{}", auto["id"].as_str().unwrap())),
        Some(&w.agent),
        None,
    )
    .await;
    assert_eq!(m["language"], "pt", "pt_BR is not there; its base is");
    api(
        "PATCH",
        &w.url(&format!("/v1/contacts/{cid}")),
        Some(&w.agent),
        Some(json!({"language": "de"})),
    )
    .await;
    let (status, none) = w.send(order_send(other, language_auto.clone(), good())).await;
    assert_eq!(
        (status, none["error"]["code"].as_str()),
        (422, Some("no_template_language"))
    );
    let (status, _) = w
        .call("PUT", "/v1/settings/templates", Some(json!({"default_language": "en"})))
        .await;
    assert_eq!(status, 200);
    // The PUT clears this instance's memory of the settings (others trust theirs ≤ 60 s).
    let (status, fell_back) = w.send(order_send(other, language_auto, good())).await;
    assert_eq!(status, 202, "{fell_back}");
    let (_, m) = api(
        "GET",
        &w.url(&format!("/v1/messages/{}", fell_back["id"].as_str().unwrap())),
        Some(&w.agent),
        None,
    )
    .await;
    assert_eq!(m["language"], "en");
}

impl World {
    async fn store_waba(&self) -> String {
        use crm_shared::store::TenantStore;
        self.store.get_tenant(&self.tenant_id).await.unwrap().unwrap().waba_id
    }
}

/// The registry is the tenant's WABA's: a number of another WABA of the tenant sends no
/// templates, and that WABA's template webhooks leave the registry as it is; the tenant's own
/// WABA's webhook changes it (and the change is one `template.status_changed` in the log).
#[tokio::test]
async fn the_registry_is_the_tenant_wabas_and_other_wabas_leave_it_alone() {
    use crm_shared::store::TenantStore;
    let w = world("Templates other WABA").await;
    assert_eq!(w.create(order_update("en")).await.0, 201);
    w.until_status("order_update", "en", "APPROVED").await;
    let tenant = w.store.get_tenant(&w.tenant_id).await.unwrap().unwrap();
    let (same_waba, other_waba) = (e2e_tests::unique_numeric_id(), e2e_tests::unique_numeric_id());
    let other_waba_id = e2e_tests::unique_numeric_id();
    let same = crm_shared::tenant::new_number(&same_waba, &tenant.waba_id, None, Some("same")).unwrap();
    let other = crm_shared::tenant::new_number(&other_waba, &other_waba_id, None, Some("other")).unwrap();
    w.store.add_number(&tenant, &same).await.unwrap();
    w.store.add_number(&tenant, &other).await.unwrap();

    let en = json!({"code": "en"});
    let good = json!([text("Ana"), text("Monday")]);
    let to = "+447911123490";
    let mut from_other = order_send(to, en.clone(), good.clone());
    from_other["from"] = json!(other_waba);
    let (status, refused) = w.send(from_other).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("template_number_outside_waba")),
        "{refused}"
    );
    for from in [tenant.phone_number_id.clone(), same_waba] {
        let mut send = order_send(to, en.clone(), good.clone());
        send["from"] = json!(from);
        let (status, queued) = w.send(send).await;
        assert_eq!(status, 202, "{queued}");
    }

    // Another WABA's status webhook for the same name and language changes nothing.
    let value = json!({"event": "PAUSED", "message_template_id": 1, "message_template_name": "order_update",
                       "message_template_language": "en", "reason": "NONE"});
    let code = w
        .sandbox
        .deliver_waba_change(&other_waba_id, "message_template_status_update", value.clone())
        .await
        .unwrap();
    assert_eq!(code, 200);
    let (_, entry) = w.call("GET", "/v1/templates/order_update", None).await;
    assert_eq!(entry["languages"][0]["status"], "APPROVED", "{entry}");
    // The tenant's own WABA's does.
    let code = w
        .sandbox
        .deliver_waba_change(&tenant.waba_id, "message_template_status_update", value)
        .await
        .unwrap();
    assert_eq!(code, 200);
    w.until_status("order_update", "en", "PAUSED").await;
}
