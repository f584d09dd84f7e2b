//! The agent inbox end to end: conversations opened by webhooks, listed with every filter and
//! both orders over pages, assigned under a race, seen under need-to-know, read per user,
//! annotated with notes that never reach WhatsApp; users whose keys die with them; several
//! numbers per tenant.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crm_shared::store::{DynamoStore, TenantStore};
use crm_shared::tenant::new_number;
use e2e_tests::{api, new_tenant, post_webhook, stack, start_gateway_with_queues, unique_numeric_id};

use crate::webhook::customer_wa_id;

struct Ctx {
    base: String,
    admin: String,
    tenant_id: String,
    pnid: String,
    store: DynamoStore,
    _gw: e2e_tests::Gateway,
}

/// A tenant behind its own gateway whose sends go to a queue of this test's own.
async fn ctx(name: &str, outbound_queue: &str) -> Ctx {
    let store = stack().store().await;
    let gw = start_gateway_with_queues(
        stack().store_for("ApiFunction").await,
        stack().media_queue_url(),
        outbound_queue,
    )
    .await;
    let t = new_tenant(&store, name).await;
    Ctx {
        base: gw.base.clone(),
        admin: t.api_key.expose().to_owned(),
        tenant_id: t.tenant.tenant_id.clone(),
        pnid: t.tenant.phone_number_id.clone(),
        store,
        _gw: gw,
    }
}

impl Ctx {
    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        api(method, &format!("{}{path}", self.base), Some(key), body).await
    }

    /// A user with a key of their own: (user id, key).
    async fn user(&self, name: &str, role: &str) -> (String, String) {
        let email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
        let (status, user) = self
            .call(
                "POST",
                "/v1/users",
                &self.admin,
                Some(json!({"name": name, "email": email, "role": role})),
            )
            .await;
        assert_eq!(status, 201, "{user}");
        let id = user["id"].as_str().unwrap().to_owned();
        let (status, key) = self
            .call("POST", &format!("/v1/users/{id}/apikeys"), &self.admin, None)
            .await;
        assert_eq!(status, 201, "{key}");
        assert_eq!(key["role"], role);
        (id, key["api_key"].as_str().unwrap().to_owned())
    }

    /// Customers' text messages: (number, customer wa id, wamid, unix seconds), one delivery
    /// each (a delivery's items past the ack budget would wait in the overflow queue).
    async fn deliver(&self, messages: &[(String, String, String, i64)]) {
        for (pnid, from, wamid, ts) in messages {
            let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
                {"field": "messages", "value": {"messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
                    "contacts": [{"profile": {"name": format!("Customer {from}")}, "wa_id": from}],
                    "messages": [{"from": from, "id": wamid, "timestamp": ts.to_string(), "type": "text",
                                  "text": {"body": format!("hello from {wamid}")}}]}}]}]});
            let (status, out) = post_webhook(&self.base, &body.to_string(), None).await;
            assert_eq!(status, 200, "{out}");
        }
    }

    /// Every item of a listing, page by page (`limit` per page); checks the cursor ends it.
    async fn all(&self, query: &str, key: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut path = format!("/v1/conversations?limit={limit}{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", urlencoding(c)));
            }
            let (status, page) = self.call("GET", &path, key, None).await;
            assert_eq!(status, 200, "{path}: {page}");
            let got = page["items"].as_array().unwrap();
            assert!(got.len() <= limit as usize);
            items.extend(got.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
        panic!("listing {query} did not end");
    }
}

pub(crate) fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_inbox_sorts_filters_and_pages_250_conversations() {
    let queue = e2e_tests::own_queue("OutboundQueue").await;
    let c = ctx("Inbox 250", &queue).await;
    let tenant = c.store.get_tenant(&c.tenant_id).await.unwrap().unwrap();
    let second = new_number(&unique_numeric_id(), &tenant.waba_id, None, Some("support")).unwrap();
    c.store.add_number(&tenant, &second).await.unwrap();
    let (agent_id, agent) = c.user("Inbox Agent", "agent").await;

    // 250 customers: every fifth on the second number; the first 100 wrote two days ago (their
    // service window is closed), the rest within the hour. Distinct seconds: a total order.
    let now = Utc::now().timestamp();
    let customers: Vec<String> = (0..250).map(|_| customer_wa_id()).collect();
    let messages: Vec<(String, String, String, i64)> = customers
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let pnid = if i % 5 == 0 {
                second.phone_number_id.clone()
            } else {
                c.pnid.clone()
            };
            let ts = if i < 100 {
                now - 2 * 86_400 + i as i64
            } else {
                now - 3_600 + i as i64
            };
            (pnid, from.clone(), format!("wamid.inbox.{i}.{from}"), ts)
        })
        .collect();
    c.deliver(&messages).await;
    let everything = c.all("", &c.admin, 50).await;
    assert_eq!(everything.len(), 250, "one conversation per customer and number");
    let expected_order: Vec<String> = messages
        .iter()
        .rev()
        .map(|(pnid, from, ..)| format!("{from}|{pnid}"))
        .collect();
    let got_order: Vec<String> = everything
        .iter()
        .map(|i| {
            format!(
                "{}|{}",
                i["contact"]["phone"].as_str().unwrap().trim_start_matches('+'),
                i["number"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(got_order, expected_order, "newest activity first");
    let first = &everything[0];
    assert_eq!(first["status"], "open");
    assert_eq!(first["unread"], 1);
    assert_eq!(first["last_seq"], 1);
    assert!(first["preview"]["text"].as_str().unwrap().starts_with("hello from"));
    assert!(first["contact"]["name"].as_str().unwrap().starts_with("Customer"));
    let conv_of = |i: usize| everything[249 - i]["id"].as_str().unwrap().to_owned();
    let contact_of = |i: usize| everything[249 - i]["contact_id"].as_str().unwrap().to_owned();

    // Changes: 10 tagged, 10 assigned to the agent, 5 resolved, 5 answered by us.
    for i in 200..210 {
        let (status, body) = c
            .call(
                "PATCH",
                &format!("/v1/contacts/{}", contact_of(i)),
                &c.admin,
                Some(json!({"tags": ["vip"]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for i in 210..220 {
        let (status, body) = c
            .call(
                "POST",
                &format!("/v1/conversations/{}/assign", conv_of(i)),
                &agent,
                Some(json!({"assignee": agent_id, "expected": null})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["assignee"], agent_id.as_str());
    }
    for i in 220..225 {
        let (status, body) = c
            .call(
                "POST",
                &format!("/v1/conversations/{}/status", conv_of(i)),
                &agent,
                Some(json!({"status": "resolved"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["waiting_since"], Value::Null, "resolving ends the wait");
    }
    for i in 225..230 {
        let (status, body) = c
            .call(
                "POST",
                "/v1/messages",
                &agent,
                Some(json!({"contact_id": contact_of(i), "type": "text", "text": {"body": "on it"}})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }

    let count = |q: &'static str, key: String| {
        let c = &c;
        async move { c.all(q, &key, 100).await }
    };
    let path = format!("&number={}", second.phone_number_id);
    let second_items = c.all(&path, &c.admin, 100).await;
    assert_eq!(second_items.len(), 50);
    assert!(
        second_items
            .iter()
            .all(|i| i["number"] == second.phone_number_id.as_str())
    );
    assert_eq!(count("&tag=vip", c.admin.clone()).await.len(), 10);
    let mine = count("&assignee=me", agent.clone()).await;
    assert_eq!(ids(&mine), (210..220).rev().map(conv_of).collect::<Vec<_>>());
    assert_eq!(c.all(&format!("&assignee={agent_id}"), &c.admin, 100).await.len(), 10);
    assert_eq!(count("&assignee=none", c.admin.clone()).await.len(), 240);
    assert_eq!(count("&status=resolved", c.admin.clone()).await.len(), 5);
    assert_eq!(
        count("&status=open", c.admin.clone()).await.len(),
        245,
        "answered ones stay open"
    );
    assert_eq!(
        count("&status=pending", c.admin.clone()).await.len(),
        0,
        "answering keeps the status"
    );
    assert_eq!(count("&window=closed", c.admin.clone()).await.len(), 100);
    assert_eq!(count("&window=open", c.admin.clone()).await.len(), 150);
    assert_eq!(count("&waiting=true", c.admin.clone()).await.len(), 240);
    // Combined: open, on the first number, window open (odd page size on purpose).
    let combined = c
        .all(&format!("&status=open&number={}&window=open", c.pnid), &c.admin, 37)
        .await;
    let expected = (100..250).filter(|i| i % 5 != 0 && !(220..225).contains(i)).count();
    assert_eq!(combined.len(), expected);

    // Longest wait first: the answered and resolved are not waiting.
    let waiting = count("&sort=waiting", c.admin.clone()).await;
    assert_eq!(waiting.len(), 240);
    let expected_wait: Vec<String> = (0..250).filter(|i| !(220..230).contains(i)).map(conv_of).collect();
    assert_eq!(ids(&waiting), expected_wait, "oldest wait first");

    // Bad filters are 400, and a cursor only continues its own listing.
    for bad in [
        "status=closed",
        "window=maybe",
        "assignee=someone",
        "sort=name",
        "waiting=yes",
        "nope=1",
        "number=abc",
    ] {
        let (status, body) = c.call("GET", &format!("/v1/conversations?{bad}"), &c.admin, None).await;
        assert_eq!((status, code(&body)), (400, "invalid_query"), "{bad}: {body}");
    }
    let (_, page) = c
        .call("GET", "/v1/conversations?limit=10&tag=vip", &c.admin, None)
        .await;
    let cursor = page["next_cursor"].as_str().map(str::to_owned);
    let (_, page) = c.call("GET", "/v1/conversations?limit=2", &c.admin, None).await;
    let cursor = cursor.or(page["next_cursor"].as_str().map(str::to_owned)).unwrap();
    let (status, body) = c
        .call(
            "GET",
            &format!("/v1/conversations?status=open&cursor={}", urlencoding(&cursor)),
            &c.admin,
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_cursor"));
}

#[tokio::test]
async fn two_agents_racing_to_assign_exactly_one_wins() {
    let queue = e2e_tests::own_queue("OutboundQueue").await;
    let c = ctx("Assign race", &queue).await;
    let (a_id, a) = c.user("Racer A", "agent").await;
    let (b_id, b) = c.user("Racer B", "agent").await;
    let from = customer_wa_id();
    c.deliver(&[(c.pnid.clone(), from, "wamid.race.1".into(), Utc::now().timestamp())])
        .await;
    let conversation = c.all("", &c.admin, 10).await[0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/conversations/{conversation}/assign");
    for round in 0..3 {
        let take = |key: String, me: String| {
            let path = path.clone();
            let c = &c;
            async move {
                c.call("POST", &path, &key, Some(json!({"assignee": me, "expected": null})))
                    .await
            }
        };
        let (ra, rb) = tokio::join!(take(a.clone(), a_id.clone()), take(b.clone(), b_id.clone()));
        let statuses = [ra.0, rb.0];
        assert!(
            statuses.contains(&200) && statuses.contains(&409),
            "round {round}: {ra:?} {rb:?}"
        );
        let loser = if ra.0 == 409 { &ra.1 } else { &rb.1 };
        assert_eq!(code(loser), "assignee_changed");
        let winner = if ra.0 == 200 { &a_id } else { &b_id };
        let (_, now) = c
            .call("GET", &format!("/v1/conversations/{conversation}"), &c.admin, None)
            .await;
        assert_eq!(now["assignee"], winner.as_str());
        // The winner lets go (expected: themselves) for the next round.
        let key = if ra.0 == 200 { &a } else { &b };
        let (status, body) = c
            .call("POST", &path, key, Some(json!({"assignee": null, "expected": winner})))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Only active users of the tenant are assignees.
    let (status, body) = c
        .call(
            "POST",
            &path,
            &c.admin,
            Some(json!({"assignee": crm_shared::ids::new_id(), "expected": null})),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "unknown_assignee"));
    // Every change is audited with the acting user.
    let (_, audit) = c.call("GET", "/v1/audit?limit=100", &c.admin, None).await;
    let assigns: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "conversation.assign")
        .collect();
    assert_eq!(assigns.len(), 6);
    assert!(
        assigns
            .iter()
            .all(|e| e["actor_user_id"] == a_id.as_str() || e["actor_user_id"] == b_id.as_str())
    );
}

#[tokio::test]
async fn need_to_know_unread_notes_and_other_tenants() {
    let queue = e2e_tests::own_queue("OutboundQueue").await;
    let c = ctx("Need to know", &queue).await;
    let (a_id, a) = c.user("Agent Ann", "agent").await;
    let (b_id, b) = c.user("Agent Ben", "agent").await;
    let now = Utc::now().timestamp();
    let (ann_customer, ben_customer, free_customer) = (customer_wa_id(), customer_wa_id(), customer_wa_id());
    c.deliver(&[
        (c.pnid.clone(), ann_customer.clone(), "wamid.ntk.1".into(), now - 30),
        (c.pnid.clone(), ben_customer.clone(), "wamid.ntk.2".into(), now - 20),
        (c.pnid.clone(), free_customer.clone(), "wamid.ntk.3".into(), now - 10),
    ])
    .await;
    let all = c.all("", &c.admin, 10).await;
    let [free, ben_conv, ann_conv] = [0, 1, 2].map(|i| all[i]["id"].as_str().unwrap().to_owned());
    for (conv, id, key) in [(&ann_conv, &a_id, &a), (&ben_conv, &b_id, &b)] {
        let (status, body) = c
            .call(
                "POST",
                &format!("/v1/conversations/{conv}/assign"),
                key,
                Some(json!({"assignee": id, "expected": null})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // Off: everyone sees everything.
    assert_eq!(c.all("", &a, 10).await.len(), 3);
    let (status, body) = c
        .call(
            "PUT",
            "/v1/settings/inbox",
            &c.admin,
            Some(json!({"need_to_know": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = c
        .call("PUT", "/v1/settings/inbox", &a, Some(json!({"need_to_know": false})))
        .await;
    assert_eq!(status, 403, "settings are the admin's");
    let (status, body) = c
        .call(
            "PUT",
            "/v1/settings/inbox",
            &c.admin,
            Some(json!({"need_to_know": true, "auto_resolve_after_hours": 0})),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_settings"));
    // On (this gateway forgot the cached setting): Ann sees hers and the free one.
    let seen: HashSet<String> = ids(&c.all("", &a, 10).await).into_iter().collect();
    assert_eq!(seen, HashSet::from([ann_conv.clone(), free.clone()]));
    let (status, _) = c.call("GET", &format!("/v1/conversations/{ben_conv}"), &a, None).await;
    assert_eq!(status, 404, "Ben's conversation does not exist for Ann");
    for path in ["messages", "notes"] {
        let (status, _) = c
            .call("GET", &format!("/v1/conversations/{ben_conv}/{path}"), &a, None)
            .await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = c
        .call(
            "POST",
            &format!("/v1/conversations/{ben_conv}/assign"),
            &a,
            Some(json!({"assignee": a_id, "expected": b_id})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = c
        .call(
            "POST",
            &format!("/v1/conversations/{free}/assign"),
            &a,
            Some(json!({"assignee": b_id, "expected": null})),
        )
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    assert_eq!(c.all("", &c.admin, 10).await.len(), 3, "admins see all");
    let (_, me) = c.call("GET", "/v1/me", &a, None).await;
    assert_eq!(me["user"]["id"], a_id.as_str());
    assert_eq!(me["role"], "agent");
    assert_eq!(me["need_to_know"], true);
    assert_eq!(me["tenant"]["id"], c.tenant_id.as_str());
    let (_, me) = c.call("GET", "/v1/me", &c.admin, None).await;
    assert_eq!(me["user"], Value::Null, "an integration key has no user");

    // Unread is per user and exact; marks only move forward and never past the last message.
    c.deliver(&[
        (c.pnid.clone(), ann_customer.clone(), "wamid.ntk.4".into(), now - 5),
        (c.pnid.clone(), ann_customer.clone(), "wamid.ntk.5".into(), now - 4),
    ])
    .await;
    let conv_path = format!("/v1/conversations/{ann_conv}");
    let (_, conv) = c.call("GET", &conv_path, &a, None).await;
    assert_eq!((conv["last_seq"].as_u64(), conv["unread"].as_u64()), (Some(3), Some(3)));
    let (status, conv) = c
        .call("POST", &format!("{conv_path}/read"), &a, Some(json!({"up_to": 2})))
        .await;
    assert_eq!(status, 200, "{conv}");
    assert_eq!(conv["unread"], 1);
    let (_, conv) = c
        .call("POST", &format!("{conv_path}/read"), &a, Some(json!({"up_to": 1})))
        .await;
    assert_eq!(
        (conv["unread"].as_u64(), conv["read_up_to"].as_u64()),
        (Some(1), Some(2)),
        "never back"
    );
    let (status, body) = c
        .call("POST", &format!("{conv_path}/read"), &a, Some(json!({"up_to": 4})))
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_read_mark"));
    let (_, for_admin) = c.call("GET", &conv_path, &c.admin, None).await;
    assert_eq!(for_admin["unread"], 3, "the admin has read nothing");

    // Notes: internal, listed, never sent (nothing reaches the outbound queue).
    let (status, note) = c
        .call(
            "POST",
            &format!("{conv_path}/notes"),
            &a,
            Some(json!({"body": "VIP, call back at 5"})),
        )
        .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(note["author"], a_id.as_str());
    let (status, _) = c
        .call("POST", &format!("{conv_path}/notes"), &a, Some(json!({"body": "  "})))
        .await;
    assert_eq!(status, 422);
    let (_, notes) = c.call("GET", &format!("{conv_path}/notes"), &a, None).await;
    assert_eq!(notes["items"][0]["body"], "VIP, call back at 5");
    let (_, history) = c.call("GET", &format!("{conv_path}/messages"), &a, None).await;
    assert_eq!(history["items"].as_array().unwrap().len(), 3, "notes are not messages");
    let sqs = crm_shared::aws::sqs_client(&stack().sdk().await);
    let queued = sqs
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(
        queued.messages.unwrap_or_default().is_empty(),
        "a note never goes to WhatsApp"
    );

    // Status: snoozing needs a future time; the customer's message wakes it.
    let (status, body) = c
        .call(
            "POST",
            &format!("{conv_path}/status"),
            &a,
            Some(json!({"status": "snoozed"})),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_snooze"));
    let until = (Utc::now() + Duration::hours(3)).to_rfc3339();
    let (_, conv) = c
        .call(
            "POST",
            &format!("{conv_path}/status"),
            &a,
            Some(json!({"status": "snoozed", "snooze_until": until})),
        )
        .await;
    assert_eq!(conv["status"], "snoozed");
    assert_eq!(c.all("&status=snoozed", &c.admin, 10).await.len(), 1);
    c.deliver(&[(c.pnid.clone(), ann_customer.clone(), "wamid.ntk.6".into(), now)])
        .await;
    let (_, conv) = c.call("GET", &conv_path, &a, None).await;
    assert_eq!(
        (conv["status"].as_str(), conv["snooze_until"].as_str()),
        (Some("open"), None)
    );

    // Another tenant sees none of it.
    let other = ctx("Need to know, elsewhere", &queue).await;
    for (method, path, body) in [
        ("GET", conv_path.clone(), None),
        ("GET", format!("{conv_path}/messages"), None),
        ("POST", format!("{conv_path}/read"), Some(json!({"up_to": 1}))),
        ("POST", format!("{conv_path}/notes"), Some(json!({"body": "x"}))),
        (
            "POST",
            format!("{conv_path}/status"),
            Some(json!({"status": "resolved"})),
        ),
        (
            "POST",
            format!("{conv_path}/assign"),
            Some(json!({"assignee": null, "expected": a_id})),
        ),
        ("GET", format!("/v1/users/{a_id}"), None),
    ] {
        let (status, _) = other.call(method, &path, &other.admin, body).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    assert!(other.all("", &other.admin, 10).await.is_empty());
}

#[tokio::test]
async fn a_disabled_users_keys_are_refused_at_once_and_follow_their_role() {
    let queue = e2e_tests::own_queue("OutboundQueue").await;
    let c = ctx("Users", &queue).await;
    let (id, key) = c.user("Dora Disabled", "agent").await;
    let (status, body) = c
        .call(
            "POST",
            "/v1/users",
            &c.admin,
            Some(json!({"name": "Again", "email": "DORA.disabled@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (409, "email_taken"),
        "emails are unique, case-insensitively"
    );
    let (status, body) = c
        .call(
            "POST",
            "/v1/users",
            &c.admin,
            Some(json!({"name": "Bad", "email": "not-an-email", "role": "viewer"})),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_user"));
    let (status, _) = c
        .call(
            "POST",
            "/v1/users",
            &key,
            Some(json!({"name": "X", "email": "x@example.com", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 403, "agents do not make users");
    let (status, _) = c.call("GET", "/v1/users", &key, None).await;
    assert_eq!(status, 200, "but may list them");

    // The user's key follows a role change at once.
    let (status, _) = c
        .call(
            "PATCH",
            &format!("/v1/users/{id}"),
            &c.admin,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = c
        .call("POST", "/v1/contacts", &key, Some(json!({"phone": "+447700900777"})))
        .await;
    assert_eq!(status, 403, "a viewer now");
    let (_, me) = c.call("GET", "/v1/me", &key, None).await;
    assert_eq!(me["role"], "viewer");

    // Disabled: the very next request with the key is refused (same instance, warm caches).
    let (status, body) = c.call("DELETE", &format!("/v1/users/{id}"), &c.admin, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "disabled");
    let (status, _) = c.call("GET", "/v1/me", &key, None).await;
    assert_eq!(status, 401);
    let (status, body) = c.call("POST", &format!("/v1/users/{id}/apikeys"), &c.admin, None).await;
    assert_eq!((status, code(&body)), (409, "user_disabled"));
    let (_, keys) = c.call("GET", "/v1/apikeys", &c.admin, None).await;
    let owned: Vec<&Value> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["user_id"] == id.as_str())
        .collect();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0]["active"], false);
    // Re-enabled users need a new key; the old one stays revoked.
    let (status, _) = c
        .call(
            "PATCH",
            &format!("/v1/users/{id}"),
            &c.admin,
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(c.call("GET", "/v1/me", &key, None).await.0, 401);

    // An admin user cannot lock themselves out.
    let (admin_id, admin_key) = c.user("Ada Admin", "admin").await;
    let (status, body) = c
        .call("DELETE", &format!("/v1/users/{admin_id}"), &admin_key, None)
        .await;
    assert_eq!((status, code(&body)), (409, "cannot_change_self"));
    // Audit entries name the acting user.
    let (_, audit) = c.call("GET", "/v1/audit?limit=100", &admin_key, None).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor_user_id"] == admin_id.as_str())
    );
    let (_, listed) = c.call("GET", "/v1/users", &c.admin, None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn several_numbers_route_webhooks_and_refuse_what_belongs_elsewhere() {
    let queue = e2e_tests::own_queue("OutboundQueue").await;
    let c = ctx("Numbers", &queue).await;
    let other = ctx("Numbers, elsewhere", &queue).await;
    let tenant = c.store.get_tenant(&c.tenant_id).await.unwrap().unwrap();
    let other_tenant = c.store.get_tenant(&other.tenant_id).await.unwrap().unwrap();
    let sales = new_number(&unique_numeric_id(), &tenant.waba_id, Some("+15550001"), Some("sales")).unwrap();
    c.store.add_number(&tenant, &sales).await.unwrap();
    let conflict = |e: crm_shared::store::StoreError| e.to_string();
    // The number again, another tenant's number, another tenant's WABA: each named.
    let again = c.store.add_number(&tenant, &sales).await.unwrap_err();
    assert!(conflict(again).contains("already one of the tenant's numbers"));
    let theirs = new_number(&other_tenant.phone_number_id, &tenant.waba_id, None, None).unwrap();
    let taken = c.store.add_number(&tenant, &theirs).await.unwrap_err();
    assert!(conflict(taken).contains("belongs to another tenant"));
    let foreign_waba = new_number(&unique_numeric_id(), &other_tenant.waba_id, None, None).unwrap();
    let waba = c.store.add_number(&tenant, &foreign_waba).await.unwrap_err();
    assert!(conflict(waba).contains(&format!("WABA id {} belongs to another tenant", other_tenant.waba_id)));

    let (_, numbers) = c.call("GET", "/v1/numbers", &c.admin, None).await;
    let listed: Vec<&str> = numbers["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["phone_number_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![c.pnid.as_str(), sales.phone_number_id.as_str()]);
    assert_eq!(numbers["items"][1]["label"], "sales");
    // Paged as every list is: one a page, the cursor sealed to this tenant and listing.
    let (_, first) = c.call("GET", "/v1/numbers?limit=1", &c.admin, None).await;
    assert_eq!(first["items"][0]["phone_number_id"], c.pnid.as_str());
    let cursor = first["next_cursor"].as_str().expect("a second page").to_owned();
    let (_, second) = c
        .call(
            "GET",
            &format!("/v1/numbers?limit=1&cursor={}", urlencoding(&cursor)),
            &c.admin,
            None,
        )
        .await;
    assert_eq!(second["items"][0]["phone_number_id"], sales.phone_number_id.as_str());
    assert_eq!(second["next_cursor"], Value::Null);
    let (status, body) = c.call("GET", "/v1/numbers?limit=0", &c.admin, None).await;
    assert_eq!((status, code(&body)), (400, "invalid_limit"));
    let (status, body) = c
        .call(
            "GET",
            &format!("/v1/conversations?cursor={}", urlencoding(&cursor)),
            &c.admin,
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_cursor"), "{body}");

    // One customer on both numbers: two conversations; replies go from the last one written to.
    let from = customer_wa_id();
    let now = Utc::now().timestamp();
    c.deliver(&[(c.pnid.clone(), from.clone(), "wamid.num.1".into(), now - 10)])
        .await;
    c.deliver(&[(
        sales.phone_number_id.clone(),
        from.clone(),
        "wamid.num.2".into(),
        now - 5,
    )])
    .await;
    let convs = c.all("", &c.admin, 10).await;
    assert_eq!(convs.len(), 2);
    assert_eq!(convs[0]["number"], sales.phone_number_id.as_str());
    let contact_id = convs[0]["contact_id"].as_str().unwrap().to_owned();
    let (status, sent) = c
        .call(
            "POST",
            "/v1/messages",
            &c.admin,
            Some(json!({"contact_id": contact_id, "type": "text", "text": {"body": "hi"}})),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let (status, sent_first) = c
        .call(
            "POST",
            "/v1/messages",
            &c.admin,
            Some(json!({"contact_id": contact_id, "type": "text", "text": {"body": "hi"}, "from": c.pnid})),
        )
        .await;
    assert_eq!(status, 202, "{sent_first}");
    let (status, body) = c
        .call("POST", "/v1/messages", &c.admin, Some(json!({"contact_id": contact_id, "type": "text", "text": {"body": "hi"}, "from": other_tenant.phone_number_id})))
        .await;
    assert_eq!((status, code(&body)), (422, "unknown_number"));
    let sales_conv = convs[0]["id"].as_str().unwrap();
    let (_, sales_view) = c
        .call("GET", &format!("/v1/conversations/{sales_conv}"), &c.admin, None)
        .await;
    assert_eq!(sales_view["message_count"], 2, "the reply went from the sales number");
    assert_eq!(sales_view["waiting_since"], Value::Null);
    let (_, history) = c
        .call(
            "GET",
            &format!("/v1/conversations/{sales_conv}/messages"),
            &c.admin,
            None,
        )
        .await;
    assert_eq!(history["items"].as_array().unwrap().len(), 2);

    // Removing the number stops its webhooks routing.
    c.store.remove_number(&tenant, &sales.phone_number_id).await.unwrap();
    assert_eq!(
        c.store.tenant_for_phone_number(&sales.phone_number_id).await.unwrap(),
        None
    );
    assert!(
        c.store.remove_number(&tenant, &c.pnid).await.is_err(),
        "the first number stays"
    );
}

#[tokio::test]
async fn the_sweep_wakes_snoozes_that_ran_out_and_only_those() {
    let queue = e2e_tests::own_queue("OutboundQueue").await;
    let c = ctx("Snooze wake", &queue).await;
    let now = Utc::now().timestamp();
    let (soon_customer, later_customer) = (customer_wa_id(), customer_wa_id());
    c.deliver(&[
        (c.pnid.clone(), soon_customer, "wamid.wake.1".into(), now - 20),
        (c.pnid.clone(), later_customer.clone(), "wamid.wake.2".into(), now - 10),
    ])
    .await;
    let all = c.all("", &c.admin, 10).await;
    let [later, soon] = [0, 1].map(|i| all[i]["id"].as_str().unwrap().to_owned());
    let until_soon = Utc::now() + Duration::seconds(2);
    for (conv, until) in [(&soon, until_soon), (&later, Utc::now() + Duration::days(1))] {
        let body = json!({"status": "snoozed", "snooze_until": until.to_rfc3339()});
        let (status, out) = c
            .call(
                "POST",
                &format!("/v1/conversations/{conv}/status"),
                &c.admin,
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{out}");
    }
    let stored = |id: String| {
        let store = c.store.clone();
        let tenant = c.tenant_id.clone();
        async move {
            use crm_shared::store::ConversationStore;
            store.get_conversation(&tenant, &id).await.unwrap().unwrap()
        }
    };
    tokio::time::sleep((until_soon - Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(300))
        .await;
    // Before the sweep the table still says snoozed (the API already shows it open).
    assert_eq!(stored(soon.clone()).await.status.as_str(), "snoozed");
    let sweeper_sdk = stack().sdk_for("SendSweepFunction").await;
    let report = sender_fn::sweep::sweep(
        &stack().store_for("SendSweepFunction").await,
        &crm_shared::jobs::SqsQueue::new(crm_shared::aws::sqs_client(&sweeper_sdk), &queue),
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(report.woken >= 1, "{report:?}");
    let woken = stored(soon.clone()).await;
    assert_eq!((woken.status.as_str(), woken.snooze_until), ("open", None));
    assert_eq!(stored(later.clone()).await.status.as_str(), "snoozed", "not yet");
    let (_, open) = c
        .call("GET", &format!("/v1/conversations/{soon}"), &c.admin, None)
        .await;
    assert_eq!((&open["status"], &open["snooze_until"]), (&json!("open"), &Value::Null));
    // A customer writing to the other one wakes it too, and takes it out of the snooze index.
    c.deliver(&[(c.pnid.clone(), later_customer, "wamid.wake.3".into(), now)])
        .await;
    assert_eq!(stored(later.clone()).await.status.as_str(), "open");
    let (_, remaining) = c.call("GET", "/v1/conversations?status=snoozed", &c.admin, None).await;
    assert_eq!(remaining["items"], json!([]), "{remaining}");
}

#[tokio::test]
async fn a_broadcasts_message_is_in_the_timeline_but_moves_no_conversation() {
    use crm_shared::message::{Direction, MessageRecord, MessageStatus};
    use crm_shared::store::OutboundStore;
    let queue = e2e_tests::own_queue("OutboundQueue").await;
    let c = ctx("Campaign inbox", &queue).await;
    let now = Utc::now().timestamp();
    let waiting_customer = customer_wa_id();
    c.deliver(&[(
        c.pnid.clone(),
        waiting_customer.clone(),
        "wamid.camp.1".into(),
        now - 60,
    )])
    .await;
    let before = c.all("", &c.admin, 10).await;
    assert_eq!(before.len(), 1);
    let conversation = before[0]["id"].as_str().unwrap().to_owned();
    let waiting_contact = before[0]["contact"]["id"].as_str().unwrap().to_owned();
    let (status, quiet) = c
        .call(
            "POST",
            "/v1/contacts",
            &c.admin,
            Some(json!({"phone": "+447911123456", "name": "Never wrote"})),
        )
        .await;
    assert_eq!(status, 201, "{quiet}");
    let quiet_contact = quiet["id"].as_str().unwrap().to_owned();

    // The broadcaster stores each recipient's message (on its own role), naming the number.
    let broadcaster = stack().store_for("BroadcastFunction").await;
    let message = |contact: &str, broadcast: Option<&str>| MessageRecord {
        phone_number_id: Some(c.pnid.clone()),
        broadcast_id: broadcast.map(str::to_owned),
        ..MessageRecord::new(
            &c.tenant_id,
            crm_shared::ids::new_id(),
            contact,
            Direction::Outbound,
            "template",
            json!({"name": "spring_sale", "language": {"code": "en_US"}}),
            MessageStatus::Queued,
            Utc::now(),
            Utc::now(),
        )
    };
    let sent = message(&waiting_contact, Some("01campaign"));
    for m in [&sent, &message(&quiet_contact, Some("01campaign"))] {
        broadcaster.create_message(m).await.unwrap();
    }
    let after = c.all("", &c.admin, 10).await;
    assert_eq!(after.len(), 1, "the campaign opened no conversation: {after:?}");
    for field in ["last_activity_at", "waiting_since", "preview", "status"] {
        assert_eq!(after[0][field], before[0][field], "{field} unchanged");
    }
    let (_, waiting) = c.call("GET", "/v1/conversations?waiting=true", &c.admin, None).await;
    assert_eq!(
        ids(waiting["items"].as_array().unwrap()),
        std::slice::from_ref(&conversation),
        "still waiting"
    );
    // The message is in the conversation's timeline, marked as the campaign's.
    let (status, timeline) = c
        .call(
            "GET",
            &format!("/v1/conversations/{conversation}/messages"),
            &c.admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{timeline}");
    let listed: Vec<&Value> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] == json!(sent.message_id))
        .collect();
    assert_eq!(listed.len(), 1, "{timeline}");
    assert_eq!(listed[0]["broadcast_id"], "01campaign");

    // The same message sent by the team moves it and answers the customer.
    broadcaster
        .create_message(&message(&waiting_contact, None))
        .await
        .unwrap();
    let answered = c.all("", &c.admin, 10).await;
    assert_eq!(answered.len(), 1);
    assert_ne!(answered[0]["last_activity_at"], before[0]["last_activity_at"]);
    assert_eq!(answered[0]["waiting_since"], Value::Null, "{answered:?}");
}

/// Pages of the inbox until `done` accepts one read with nothing but its `Query` (the cards are
/// copied by the events function from the stream); panics after 20 s.
async fn carded_page(
    store: &DynamoStore,
    counter: &e2e_tests::RequestCounter,
    tenant_id: &str,
    query: &crm_shared::store::InboxQuery,
    done: impl Fn(&[crm_shared::store::InboxEntry]) -> bool,
) -> Vec<crm_shared::store::InboxEntry> {
    use crm_shared::store::ConversationStore;
    for _ in 0..200 {
        counter.take();
        let page = store.inbox(tenant_id, query, 50, None).await.unwrap();
        if counter.take() == ["Query"] && done(&page.items) {
            return page.items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the inbox never read its contacts from cards alone");
}

#[tokio::test]
async fn an_inbox_page_reads_its_contacts_from_the_cards_its_conversations_carry() {
    use crm_shared::conversation::{InboxFilter, Visibility};
    use crm_shared::store::InboxQuery;
    use e2e_tests::{event_stream, events_lock, events_stack};

    let _one_at_a_time = events_lock().await;
    event_stream();
    let on = events_stack();
    let store = on.store().await;
    let t = new_tenant(&store, "Cards").await;
    let (tenant_id, key, pnid) = (&t.tenant.tenant_id, t.api_key.expose(), &t.tenant.phone_number_id);
    let gw = on
        .start_gateway(
            store.clone(),
            on.media_queue_url(),
            on.outbound_queue_url(),
            on.privacy().await,
        )
        .await;
    let (counted, counter) = on.counted_store("ApiFunction").await;
    let customers = [customer_wa_id(), customer_wa_id()];
    let ts = Utc::now().timestamp() - 60;
    for (i, wa_id) in customers.iter().enumerate() {
        let delivery = crate::webhook::text_delivery(pnid, wa_id, &format!("wamid.card{wa_id}"), ts + i as i64, "hi");
        assert_eq!(post_webhook(&gw.base, &delivery, None).await.0, 200);
    }
    let everything = |filter: InboxFilter| InboxQuery {
        filter,
        visibility: Visibility::All,
        reader: "reader".into(),
        now: Utc::now(),
    };

    // The events function copies each contact's card onto its new conversation: a page then
    // reads its rows and nothing else, with the names and phones the webhook stored.
    let rows = carded_page(
        &counted,
        &counter,
        tenant_id,
        &everything(InboxFilter::default()),
        |rows| rows.len() == 2,
    )
    .await;
    for (row, wa_id) in rows.iter().zip(customers.iter().rev()) {
        let contact = row.contact.as_ref().expect("every row has its contact");
        assert_eq!(contact.phone.as_deref(), Some(format!("+{wa_id}").as_str()));
        assert_eq!(contact.display_name(), Some("Pat Customer"));
        assert_eq!(contact.contact_id, row.conversation.contact_id);
    }

    // An edit through the API rewrites the cards in its own transaction: the next page (and
    // the tag filter) sees it at once, still with one request.
    let edited = rows[1].conversation.contact_id.clone();
    let (status, body) = api(
        "PATCH",
        &format!("{}/v1/contacts/{edited}", gw.base),
        Some(key),
        Some(json!({"name": "Ana Card", "tags": ["vip"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    counter.take();
    let vip = InboxFilter {
        tag: Some("vip".into()),
        ..InboxFilter::default()
    };
    let page = {
        use crm_shared::store::ConversationStore;
        counted.inbox(tenant_id, &everything(vip), 50, None).await.unwrap()
    };
    assert_eq!(counter.take(), ["Query"]);
    assert_eq!(page.items.len(), 1);
    let contact = page.items[0].contact.as_ref().unwrap();
    assert_eq!(
        (contact.contact_id.as_str(), contact.display_name()),
        (edited.as_str(), Some("Ana Card"))
    );
    assert_eq!(contact.tags, ["vip"]);

    // The customer's new WhatsApp profile name comes with their next message: the stream
    // copies it onto the card of their conversation.
    let other = rows[0].conversation.contact_id.clone();
    let renamed = crate::webhook::text_delivery(pnid, &customers[1], "wamid.card.renamed", ts + 5, "again")
        .replace("Pat Customer", "Pat Renamed");
    assert_eq!(post_webhook(&gw.base, &renamed, None).await.0, 200);
    carded_page(
        &counted,
        &counter,
        tenant_id,
        &everything(InboxFilter::default()),
        |rows| {
            rows.iter().any(|r| {
                r.conversation.contact_id == other
                    && r.contact.as_ref().and_then(|c| c.profile_name.as_deref()) == Some("Pat Renamed")
            })
        },
    )
    .await;
}
