//! The contacts API, the conversation route and the audit log, through the local gateway.

use serde_json::{Value, json};

use crm_shared::admin;
use crm_shared::auth::Role;
use e2e_tests::{api, new_tenant, post_webhook, stack, start_gateway};

struct Ctx {
    base: String,
    admin: String,
    agent: String,
    viewer: String,
    tenant_id: String,
    phone_number_id: String,
    _gw: e2e_tests::Gateway,
}

async fn ctx(name: &str) -> Ctx {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
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
        _gw: gw,
    }
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn create(&self, body: Value) -> Value {
        let (status, created) = api("POST", &self.url("/v1/contacts"), Some(&self.agent), Some(body)).await;
        assert_eq!(status, 201, "{created}");
        created
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn create_read_and_rectify_a_contact() {
    let c = ctx("Contacts CRUD").await;
    let created = c
        .create(json!({
            "phone": "+44 7911 123456", "name": "Ada  Lovelace", "email": "Ada@Example.COM",
            "tags": ["VIP", "vip", "newsletter"], "attributes": {"plan": "gold"}
        }))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["contact_id"], id.as_str());
    assert_eq!(created["phone"], "+447911123456");
    assert_eq!(created["tags"], json!(["vip", "newsletter"]));
    assert_eq!(created["consent"]["marketing"], "unknown");
    assert_eq!(created["restricted"], false);
    assert_eq!(created["last_inbound_at"], Value::Null);

    let (status, got) = api("GET", &c.url(&format!("/v1/contacts/{id}")), Some(&c.viewer), None).await;
    assert_eq!(status, 200);
    assert_eq!(got, created);

    // Merge-patch: null removes, attributes merge, tags replace.
    let (status, patched) = api(
        "PATCH",
        &c.url(&format!("/v1/contacts/{id}")),
        Some(&c.agent),
        Some(json!({"email": null, "attributes": {"plan": null, "tier": "2"}, "tags": ["b2b"], "name": "Ada King"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["email"], Value::Null);
    assert_eq!(patched["attributes"], json!({"tier": "2"}));
    assert_eq!(patched["tags"], json!(["b2b"]));
    assert_eq!(patched["name"], "Ada King");
    assert!(patched["version"].as_u64() > created["version"].as_u64());

    // The phone moves: the old number is free again, the new one is taken.
    let (status, moved) = api(
        "PATCH",
        &c.url(&format!("/v1/contacts/{id}")),
        Some(&c.agent),
        Some(json!({"phone": "+14155550123"})),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    c.create(json!({"phone": "+447911123456"})).await;
    let (status, body) = api(
        "POST",
        &c.url("/v1/contacts"),
        Some(&c.agent),
        Some(json!({"phone": "+1 415 555 0123"})),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "contact_exists"));

    // Validation errors are 400 with a code and never echo the input.
    for (bad, expected) in [
        (json!({"phone": "12345"}), "invalid_phone"),
        (json!({"name": "x"}), "missing_identity"),
        (
            json!({"phone": "+14155550199", "tags": vec!["t"; 51].iter().enumerate().map(|(i, _)| format!("t{i}")).collect::<Vec<_>>()}),
            "invalid_tags",
        ),
        (json!({"phone": "+14155550199", "bogus": 1}), "invalid_body"),
        (
            json!({"phone": "+14155550199", "attributes": {"bad key": "v"}}),
            "invalid_attributes",
        ),
    ] {
        let (status, body) = api("POST", &c.url("/v1/contacts"), Some(&c.agent), Some(bad.clone())).await;
        assert_eq!((status, code(&body)), (400, expected), "{bad} → {body}");
        assert!(!body.to_string().contains("12345"));
    }
    let (status, body) = api(
        "PATCH",
        &c.url(&format!("/v1/contacts/{id}")),
        Some(&c.agent),
        Some(json!({"consent": "x"})),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_patch"));
    let (status, body) = api(
        "PATCH",
        &c.url(&format!("/v1/contacts/{id}")),
        Some(&c.agent),
        Some(json!({"phone": null})),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "missing_identity"));
    let (status, _) = api("POST", &c.url("/v1/contacts"), Some(&c.agent), None).await;
    assert_eq!(status, 400);

    // A viewer reads but cannot write; unknown ids are 404.
    let (status, _) = api(
        "POST",
        &c.url("/v1/contacts"),
        Some(&c.viewer),
        Some(json!({"phone": "+14155550100"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = api(
        "PATCH",
        &c.url(&format!("/v1/contacts/{id}")),
        Some(&c.viewer),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = api(
        "GET",
        &c.url(&format!("/v1/contacts/{}", crm_shared::ids::new_id())),
        Some(&c.viewer),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, _) = api("GET", &c.url("/v1/contacts/not-an-id"), Some(&c.viewer), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn concurrent_creates_of_the_same_phone_have_exactly_one_winner() {
    let c = ctx("Race").await;
    let url = c.url("/v1/contacts");
    let attempts = (0..8).map(|i| {
        let url = url.clone();
        let key = c.agent.clone();
        async move {
            api(
                "POST",
                &url,
                Some(&key),
                Some(json!({"phone": "+14155550150", "name": format!("racer {i}")})),
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 7, "{statuses:?}");
    // The same for user ids.
    let attempts = (0..4).map(|_| {
        let url = url.clone();
        let key = c.agent.clone();
        async move {
            api("POST", &url, Some(&key), Some(json!({"user_id": "US.1234567890"})))
                .await
                .0
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
}

async fn all_pages(c: &Ctx, query: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = c.url(&format!("/v1/contacts?limit={limit}{query}"));
        if let Some(cur) = &cursor {
            url.push_str(&format!("&cursor={cur}"));
        }
        let (status, body) = api("GET", &url, Some(&c.viewer), None).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        let page = body["items"].as_array().unwrap();
        assert!(page.len() <= limit);
        items.extend(page.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, pages),
        }
        assert!(pages < 50, "pagination must end");
    }
}

fn names(items: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = items
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn listing_filters_by_tag_name_and_phone_prefix_and_paginates() {
    let c = ctx("Lists").await;
    let (status, empty) = api("GET", &c.url("/v1/contacts"), Some(&c.viewer), None).await;
    assert_eq!(status, 200);
    assert_eq!(empty, json!({"items": [], "next_cursor": null}));

    c.create(json!({"phone": "+14155550101", "name": "Alice Smith", "tags": ["vip"]}))
        .await;
    c.create(json!({"phone": "+14155550102", "name": "alan turing", "tags": ["vip", "b2b"]}))
        .await;
    c.create(json!({"phone": "+447911123401", "name": "Bob", "tags": ["b2b"]}))
        .await;
    c.create(json!({"user_id": "US.555", "name": "Alva"})).await;

    let (all, _) = all_pages(&c, "", 50).await;
    assert_eq!(all.len(), 4);
    assert_eq!(all[0]["name"], "Alva", "newest first");
    let (paged, pages) = all_pages(&c, "", 2).await;
    assert_eq!(names(&paged), names(&all));
    assert_eq!(pages, 2);
    // Exactly one page: no cursor to an empty page. Last page: the remainder, no cursor.
    let (exact, pages) = all_pages(&c, "", 4).await;
    assert_eq!((exact.len(), pages), (4, 1));
    let (_, pages) = all_pages(&c, "", 3).await;
    assert_eq!(pages, 2);

    let (vip, _) = all_pages(&c, "&tag=VIP", 50).await;
    assert_eq!(names(&vip), vec!["Alice Smith", "alan turing"]);
    let (al, _) = all_pages(&c, "&q=al", 50).await;
    assert_eq!(names(&al), vec!["Alice Smith", "Alva", "alan turing"]);
    let (al_vip, _) = all_pages(&c, "&q=ali&tag=vip", 50).await;
    assert_eq!(names(&al_vip), vec!["Alice Smith"]);
    let (us, _) = all_pages(&c, "&q=%2B1415", 50).await;
    assert_eq!(names(&us), vec!["Alice Smith", "alan turing"]);
    let (uk_b2b, _) = all_pages(&c, "&q=44&tag=b2b", 50).await;
    assert_eq!(names(&uk_b2b), vec!["Bob"]);
    let (none, _) = all_pages(&c, "&q=zzz", 50).await;
    assert!(none.is_empty());

    // A tag removed by PATCH disappears from the tag listing.
    let alice = vip.iter().find(|v| v["name"] == "Alice Smith").unwrap();
    let id = alice["id"].as_str().unwrap();
    api(
        "PATCH",
        &c.url(&format!("/v1/contacts/{id}")),
        Some(&c.agent),
        Some(json!({"tags": []})),
    )
    .await;
    let (vip, _) = all_pages(&c, "&tag=vip", 50).await;
    assert_eq!(names(&vip), vec!["alan turing"]);

    // Cursors: bound to the listing and tenant; edited ones refused.
    let (_, first) = api("GET", &c.url("/v1/contacts?limit=1"), Some(&c.viewer), None).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (status, body) = api(
        "GET",
        &c.url(&format!("/v1/contacts?limit=1&tag=vip&cursor={cursor}")),
        Some(&c.viewer),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_cursor"));
    let other = ctx("Lists other").await;
    let (status, body) = api(
        "GET",
        &other.url(&format!("/v1/contacts?cursor={cursor}")),
        Some(&other.viewer),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_cursor"));
    // One character changed in the middle of the sealed bytes.
    let mut forged = cursor.clone().into_bytes();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, _) = api(
        "GET",
        &c.url(&format!("/v1/contacts?cursor={forged}")),
        Some(&c.viewer),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = api("GET", &c.url("/v1/contacts?tag=%00bad"), Some(&c.viewer), None).await;
    assert_eq!((status, code(&body)), (400, "invalid_tag"));
}

#[tokio::test]
async fn consent_and_restriction_keep_history() {
    let c = ctx("Consent API").await;
    let created = c.create(json!({"phone": "+14155550160"})).await;
    let id = created["id"].as_str().unwrap();
    let consent_url = c.url(&format!("/v1/contacts/{id}/consent"));
    let (status, body) = api(
        "PUT",
        &consent_url,
        Some(&c.agent),
        Some(json!({"marketing": "opted_in", "source": "web form"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["consent"]["marketing"], "opted_in");
    assert_eq!(body["consent"]["source"], "web form");
    api(
        "PUT",
        &consent_url,
        Some(&c.agent),
        Some(json!({"marketing": "opted_out", "source": "phone call"})),
    )
    .await;
    let (status, body) = api("GET", &consent_url, Some(&c.viewer), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["current"]["marketing"], "opted_out");
    let history: Vec<(String, String)> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["previous"].as_str().unwrap().to_owned(),
                h["marketing"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            ("unknown".into(), "opted_in".into()),
            ("opted_in".into(), "opted_out".into())
        ]
    );
    for bad in [
        json!({"marketing": "unknown", "source": "x"}),
        json!({"marketing": "opted_in", "source": ""}),
        json!({"marketing": "yes"}),
    ] {
        let (status, _) = api("PUT", &consent_url, Some(&c.agent), Some(bad)).await;
        assert_eq!(status, 400);
    }
    let (status, _) = api(
        "PUT",
        &consent_url,
        Some(&c.viewer),
        Some(json!({"marketing": "opted_in", "source": "x"})),
    )
    .await;
    assert_eq!(status, 403);

    let restriction_url = c.url(&format!("/v1/contacts/{id}/restriction"));
    let (status, body) = api(
        "PUT",
        &restriction_url,
        Some(&c.agent),
        Some(json!({"restricted": true, "reason": "objection by email"})),
    )
    .await;
    assert_eq!((status, body["restricted"].clone()), (200, json!(true)));
    let (_, got) = api("GET", &c.url(&format!("/v1/contacts/{id}")), Some(&c.viewer), None).await;
    assert_eq!(got["restricted"], true);
    let (status, body) = api(
        "PUT",
        &restriction_url,
        Some(&c.agent),
        Some(json!({"restricted": "yes"})),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_body"));
}

#[tokio::test]
async fn conversation_lists_messages_newest_first_with_media_links() {
    let c = ctx("Conversation").await;
    let store = stack().store().await;
    let from = "447911123499";
    for (i, body) in ["first", "second", "third"].iter().enumerate() {
        let delivery = crate::webhook::text_delivery(
            &c.phone_number_id,
            from,
            &format!("wamid.conv{i}"),
            1_767_225_600 + i as i64,
            body,
        );
        assert_eq!(post_webhook(&c.base, &delivery, None).await.0, 200);
    }
    let (_, list) = api("GET", &c.url("/v1/contacts?q=%2B447911123499"), Some(&c.viewer), None).await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["items"][0]["profile_name"], "Pat Customer");
    assert!(list["items"][0]["last_inbound_at"].is_string());

    let url = c.url(&format!("/v1/contacts/{id}/messages?limit=2"));
    let (status, page) = api("GET", &url, Some(&c.viewer), None).await;
    assert_eq!(status, 200, "{page}");
    let bodies: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["third", "second"]);
    assert_eq!(page["items"][0]["direction"], "inbound");
    assert_eq!(page["items"][0]["status"], "received");
    let next = page["next_cursor"].as_str().unwrap();
    let (_, page2) = api("GET", &format!("{url}&cursor={next}"), Some(&c.viewer), None).await;
    assert_eq!(page2["items"][0]["content"]["body"], "first");

    // Media that is in S3 comes with a presigned link that works and expires.
    let sha = "x";
    let image = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "1", "phone_number_id": c.phone_number_id},
            "contacts": [{"profile": {"name": "Pat Customer"}, "wa_id": from}],
            "messages": [{"from": from, "id": "wamid.convimg", "timestamp": "1767225700", "type": "image",
                          "image": {"id": "777", "mime_type": "image/png", "sha256": sha}}]
        }}]}]
    })
    .to_string();
    let (status, response) = post_webhook(&c.base, &image, None).await;
    assert_eq!(status, 200, "{response}");
    let mid = crm_shared::message::inbound_message_id(
        &c.tenant_id,
        "wamid.convimg",
        crm_shared::message::meta_time(1_767_225_700, chrono::Utc::now()),
    );
    let key = crm_shared::blob::media_key(&c.tenant_id, &id, &mid);
    let s3 = crm_shared::aws::s3_client(&stack().sdk().await);
    s3.put_object()
        .bucket(stack().media_bucket())
        .key(&key)
        .body(b"png-bytes".to_vec().into())
        .send()
        .await
        .unwrap();
    use crm_shared::store::MessageStore;
    let mut msg = store.get_message(&c.tenant_id, &mid).await.unwrap().unwrap();
    let mut media = msg.media.take().unwrap();
    media.status = crm_shared::message::MediaStatus::Available;
    media.s3_key = Some(key);
    media.size = Some(9);
    store.update_media(&c.tenant_id, &mid, &media).await.unwrap();
    let (_, page) = api(
        "GET",
        &c.url(&format!("/v1/contacts/{id}/messages?limit=1")),
        Some(&c.viewer),
        None,
    )
    .await;
    let link = page["items"][0]["media"]["url"]
        .as_str()
        .expect("presigned url")
        .to_owned();
    assert!(link.contains("X-Amz-Expires=900"), "{link}");
    assert_eq!(page["items"][0]["url"].as_str(), Some(link.as_str()), "on the item too");
    let served = reqwest::get(&link).await.unwrap();
    // Always a download, with an allowed type (signed into the link, whatever S3 holds).
    assert_eq!(served.headers()["content-disposition"], "attachment");
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.bytes().await.unwrap().as_ref(), b"png-bytes");

    // A customer-declared `text/html` document never renders from our bucket.
    let document = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "1", "phone_number_id": c.phone_number_id},
            "contacts": [{"profile": {"name": "Pat Customer"}, "wa_id": from}],
            "messages": [{"from": from, "id": "wamid.convdoc", "timestamp": "1767225800", "type": "document",
                          "document": {"id": "778", "mime_type": "text/html", "sha256": sha, "filename": "a.html"}}]
        }}]}]
    })
    .to_string();
    let (status, response) = post_webhook(&c.base, &document, None).await;
    assert_eq!(status, 200, "{response}");
    let doc_id = crm_shared::message::inbound_message_id(
        &c.tenant_id,
        "wamid.convdoc",
        crm_shared::message::meta_time(1_767_225_800, chrono::Utc::now()),
    );
    let doc_key = crm_shared::blob::media_key(&c.tenant_id, &id, &doc_id);
    s3.put_object()
        .bucket(stack().media_bucket())
        .key(&doc_key)
        .content_type("text/html")
        .body(b"<script>alert(1)</script>".to_vec().into())
        .send()
        .await
        .unwrap();
    let mut doc = store.get_message(&c.tenant_id, &doc_id).await.unwrap().unwrap();
    let mut doc_media = doc.media.take().unwrap();
    assert_eq!(doc_media.mime_type.as_deref(), Some("text/html"));
    doc_media.status = crm_shared::message::MediaStatus::Available;
    doc_media.s3_key = Some(doc_key);
    store.update_media(&c.tenant_id, &doc_id, &doc_media).await.unwrap();
    let (_, page) = api(
        "GET",
        &c.url(&format!("/v1/contacts/{id}/messages?limit=1")),
        Some(&c.viewer),
        None,
    )
    .await;
    assert_eq!(page["items"][0]["id"], doc_id.as_str());
    let served = reqwest::get(page["items"][0]["media"]["url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(served.headers()["content-disposition"], "attachment");
    assert_eq!(served.headers()["content-type"], "application/octet-stream");

    let (status, _) = api(
        "GET",
        &c.url(&format!("/v1/contacts/{}/messages", crm_shared::ids::new_id())),
        Some(&c.viewer),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn another_tenants_contacts_are_not_found_on_any_route() {
    let a = ctx("Iso A").await;
    let b = ctx("Iso B").await;
    let theirs = b
        .create(json!({"phone": "+14155550170", "tags": ["secret"], "name": "Hidden"}))
        .await;
    let id = theirs["id"].as_str().unwrap();
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/contacts/{id}"), None),
        ("PATCH", format!("/v1/contacts/{id}"), Some(json!({"name": "pwned"}))),
        (
            "PUT",
            format!("/v1/contacts/{id}/consent"),
            Some(json!({"marketing": "opted_in", "source": "x"})),
        ),
        ("GET", format!("/v1/contacts/{id}/consent"), None),
        (
            "PUT",
            format!("/v1/contacts/{id}/restriction"),
            Some(json!({"restricted": true})),
        ),
        ("GET", format!("/v1/contacts/{id}/messages"), None),
    ];
    for (method, path, body) in routes {
        let (status, resp) = api(method, &a.url(&path), Some(&a.admin), body).await;
        assert_eq!(status, 404, "{method} {path}: {resp}");
    }
    // Listings and filters never surface B's contact, and A may reuse B's phone.
    for q in ["", "?tag=secret", "?q=hid", "?q=%2B1415555017"] {
        let (_, list) = api("GET", &a.url(&format!("/v1/contacts{q}")), Some(&a.admin), None).await;
        assert_eq!(list["items"], json!([]), "{q}");
    }
    a.create(json!({"phone": "+14155550170"})).await;
    let (_, still) = api("GET", &b.url(&format!("/v1/contacts/{id}")), Some(&b.viewer), None).await;
    assert_eq!(still["name"], "Hidden");
    let (_, audit) = api("GET", &a.url("/v1/audit"), Some(&a.admin), None).await;
    assert!(
        !audit.to_string().contains(id),
        "A's audit log never mentions B's contact"
    );
}

#[tokio::test]
async fn the_audit_log_records_writes_and_key_use_without_personal_data() {
    let c = ctx("Audit").await;
    let created = c
        .create(json!({"phone": "+14155550180", "name": "Grace Hopper", "email": "g@example.com"}))
        .await;
    let id = created["id"].as_str().unwrap();
    api(
        "PATCH",
        &c.url(&format!("/v1/contacts/{id}")),
        Some(&c.agent),
        Some(json!({"name": "G. Hopper"})),
    )
    .await;
    api(
        "PUT",
        &c.url(&format!("/v1/contacts/{id}/consent")),
        Some(&c.agent),
        Some(json!({"marketing": "opted_in", "source": "form"})),
    )
    .await;
    let (status, _) = api("GET", &c.url("/v1/audit"), Some(&c.agent), None).await;
    assert_eq!(status, 403, "audit is admin-only");
    let (status, log) = api("GET", &c.url("/v1/audit?limit=100"), Some(&c.admin), None).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let pos = |a: &str| {
        actions
            .iter()
            .position(|x| *x == a)
            .unwrap_or_else(|| panic!("{a} missing from {actions:?}"))
    };
    assert!(
        pos("contact.consent") < pos("contact.update") && pos("contact.update") < pos("contact.create"),
        "newest first: {actions:?}"
    );
    assert!(actions.contains(&"api_key.used"));
    let update = &log["items"][pos("contact.update")];
    assert_eq!(update["target_id"], id);
    assert_eq!(update["details"]["fields"], json!(["name"]));
    assert!(update["actor_key_id"].is_string());
    let text = log.to_string();
    for personal in ["4155550180", "Grace", "Hopper", "g@example.com"] {
        assert!(!text.contains(personal), "audit log leaks {personal}");
    }
}
