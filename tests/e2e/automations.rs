//! Automated replies end to end: rules created through the API, customer messages through the
//! signed webhook, the table's stream into the real events function (which evaluates the rules
//! and queues replies), and what it recorded read back through the API. On the events stack,
//! whose stream [`event_stream`] runs.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use crm_shared::store::{DynamoStore, MessageStore};
use e2e_tests::{Gateway, api, event_stream, events_stack, new_tenant, post_webhook};

use crate::webhook::{customer_wa_id, text_delivery};

async fn gateway(store: DynamoStore) -> Gateway {
    let on = events_stack();
    on.start_gateway(store, on.media_queue_url(), on.outbound_queue_url(), on.privacy().await)
        .await
}

/// Waits (up to 60 s) for `check` to return `Some`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Tenant {
    gw: Gateway,
    key: String,
    pnid: String,
    tenant_id: String,
    store: DynamoStore,
}

async fn tenant(name: &str) -> Tenant {
    event_stream();
    let store = events_stack().store().await;
    let t = new_tenant(&store, name).await;
    Tenant {
        gw: gateway(store.clone()).await,
        key: t.api_key.expose().to_owned(),
        pnid: t.tenant.phone_number_id.clone(),
        tenant_id: t.tenant.tenant_id.clone(),
        store,
    }
}

impl Tenant {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        api(method, &format!("{}{path}", self.gw.base), Some(&self.key), body).await
    }

    async fn rule(&self, spec: Value) -> String {
        let (status, rule) = self.call("POST", "/v1/automations", Some(spec)).await;
        assert_eq!(status, 201, "{rule}");
        rule["id"].as_str().unwrap().to_owned()
    }

    /// The customer `wa_id` writes `body`; returns the contact id once the message is stored.
    async fn inbound(&self, wa_id: &str, n: usize, body: &str) -> String {
        let wamid = format!("wamid.auto{n}{wa_id}");
        let delivery = text_delivery(&self.pnid, wa_id, &wamid, Utc::now().timestamp(), body);
        assert_eq!(post_webhook(&self.gw.base, &delivery, None).await.0, 200);
        let (status, contacts) = self.call("GET", &format!("/v1/contacts?q=%2B{wa_id}"), None).await;
        assert_eq!(status, 200, "{contacts}");
        contacts["items"][0]["id"].as_str().unwrap().to_owned()
    }

    async fn firings(&self, rule_id: &str) -> Vec<Value> {
        let (status, page) = self
            .call("GET", &format!("/v1/automations/{rule_id}/firings?limit=100"), None)
            .await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().unwrap().clone()
    }

    /// Waits until the rule has `n` log entries; returns them (newest first).
    async fn wait_firings(&self, rule_id: &str, n: usize) -> Vec<Value> {
        eventually(&format!("{n} firings of {rule_id}"), || async {
            let f = self.firings(rule_id).await;
            (f.len() >= n).then_some(f)
        })
        .await
    }

    async fn outbound(&self, contact_id: &str) -> Vec<crm_shared::message::MessageRecord> {
        self.store
            .contact_messages(&self.tenant_id, contact_id, 100, None)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|m| m.direction == crm_shared::message::Direction::Outbound)
            .collect()
    }
}

fn text_reply(body: &str) -> Value {
    json!({"type": "reply", "message": {"type": "text", "text": {"body": body}}})
}

/// Gives the events function time to act on records it should ignore (our replies), before
/// asserting that it did nothing with them.
async fn settle() {
    // Stream polling is every 50 ms; a margin for the queue of other tests' records.
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn keyword_welcome_and_away_replies_with_cooldown_and_no_loop() {
    let t = tenant("Automations").await;
    // Today (UTC) is a holiday of one away rule (closed), the other is open around the clock.
    let today = Utc::now().date_naive();
    let all_week: Value = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| (d.to_string(), json!(["00:00", "23:59"])))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let open = t
        .rule(
            json!({"name": "away (open)", "priority": 1, "trigger": {"type": "away", "time_zone": "UTC",
            "hours": all_week}, "actions": [text_reply("we are closed")]}),
        )
        .await;
    let closed_days = [today.pred_opt().unwrap(), today, today.succ_opt().unwrap()];
    let away = t
        .rule(
            json!({"name": "away", "priority": 2, "trigger": {"type": "away", "time_zone": "UTC",
            "hours": {"mon": ["09:00", "17:00"]}, "holidays": closed_days}, "actions": [text_reply("closed today")]}),
        )
        .await;
    let welcome = t
        .rule(json!({"name": "welcome", "trigger": {"type": "welcome"},
            "actions": [text_reply("welcome!"), {"type": "add_tags", "tags": ["New Lead"]}]}))
        .await;
    // The reply holds the rule's own keyword: were our messages evaluated, it would loop.
    let price = t
        .rule(
            json!({"name": "price", "trigger": {"type": "keyword", "match": "contains", "keywords": ["PRICE"]},
            "actions": [text_reply("our price list: price 1, price 2")]}),
        )
        .await;

    // A new contact's first message: the welcome (once), not the away reply (a later stage).
    let wa_id = customer_wa_id();
    let contact = t.inbound(&wa_id, 1, "hello there").await;
    let w = t.wait_firings(&welcome, 1).await;
    assert_eq!(w[0]["outcome"], "fired", "{w:?}");
    assert_eq!(w[0]["actions"], json!(["reply", "add_tags"]));
    let reply_id = w[0]["reply_message_id"].as_str().unwrap().to_owned();
    let (status, reply) = t.call("GET", &format!("/v1/messages/{reply_id}"), None).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "queued");
    assert_eq!(reply["automation_rule"], welcome.as_str());
    eventually("the welcome's tag", || async {
        let (_, c) = t.call("GET", &format!("/v1/contacts/{contact}"), None).await;
        (c["tags"] == json!(["new lead"])).then_some(())
    })
    .await;

    // The second message: no welcome again; out of hours (a holiday): the away reply.
    t.inbound(&wa_id, 2, "anyone there?").await;
    let a = t.wait_firings(&away, 1).await;
    assert_eq!(a[0]["outcome"], "fired");
    // Its cooldown (60 min by default): the third message is suppressed.
    t.inbound(&wa_id, 3, "hello??").await;
    let a = t.wait_firings(&away, 2).await;
    assert_eq!(
        (a[0]["outcome"].as_str(), a[0]["reason"].as_str()),
        (Some("suppressed"), Some("cooldown"))
    );
    // The keyword rule; its reply contains the keyword and never triggers anything.
    t.inbound(&wa_id, 4, "what's the Price?").await;
    let p = t.wait_firings(&price, 1).await;
    assert_eq!(p[0]["outcome"], "fired");
    settle().await;
    assert_eq!(t.firings(&price).await.len(), 1, "our own reply was evaluated");
    assert_eq!(t.firings(&welcome).await.len(), 1);
    assert!(
        t.firings(&open).await.is_empty(),
        "inside the hours the away rule never fires"
    );
    // Welcome, away, price: one queued reply each, nothing more.
    let out = t.outbound(&contact).await;
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(
        out.iter()
            .all(|m| m.status == crm_shared::message::MessageStatus::Queued)
    );

    // Automated replies answer nobody: the customer still waits for the team.
    let (_, conv) = t
        .call("GET", &format!("/v1/conversations/{contact}-{}", t.pnid), None)
        .await;
    assert!(conv["waiting_since"].is_string(), "{conv}");
    // Each firing is an `automation.fired` event in the tenant's log.
    let fired = eventually("automation.fired events", || async {
        let (_, page) = t.call("GET", "/v1/events?types=automation.fired&limit=100", None).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() >= 3).then_some(items)
    })
    .await;
    assert!(
        fired.iter().any(|e| e["data"]["rule_id"] == welcome.as_str()),
        "{fired:?}"
    );

    // The conversation's log shows every firing and suppression.
    let (status, log) = t
        .call(
            "GET",
            &format!("/v1/conversations/{contact}-{}/automations", t.pnid),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["items"].as_array().unwrap().len(), 4, "{log}");

    // The dry run answers which rule would fire, and why the others do not, sending nothing.
    let (status, dry) = t
        .call(
            "POST",
            "/v1/automations/test",
            Some(json!({"contact_id": contact, "message": {"type": "text", "text": {"body": "PRICE"}}})),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    let verdict = |id: &str| {
        dry["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["rule_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(verdict(&price)["outcome"], "suppressed");
    assert_eq!(verdict(&price)["reason"], "cooldown");
    assert_eq!(verdict(&welcome)["outcome"], "skipped");
    assert_eq!(t.outbound(&contact).await.len(), 3);
}

#[tokio::test]
async fn opt_outs_human_replies_and_tenants_are_respected() {
    let t = tenant("Automations guardrails").await;
    let other = tenant("Automations other").await;
    // Only a template reply: marketing unless stated.
    let deals = t
        .rule(
            json!({"name": "deals", "trigger": {"type": "keyword", "match": "exact", "keywords": ["deals"]},
            "actions": [{"type": "reply", "template": {"name": "weekly_deals", "language": {"code": "en"}}}]}),
        )
        .await;
    let help = t
        .rule(
            json!({"name": "help", "trigger": {"type": "keyword", "match": "prefix", "keywords": ["help"]},
            "actions": [text_reply("a human will answer soon")], "suppress_after_human_reply_minutes": 30}),
        )
        .await;
    // The other tenant's rule matches the same words: it never sees this tenant's messages.
    let foreign = other
        .rule(
            json!({"name": "theirs", "trigger": {"type": "keyword", "match": "contains", "keywords": ["deals", "help"]},
            "actions": [text_reply("not yours")]}),
        )
        .await;

    // STOP: the consent keyword opts out, and no rule answers it (only its own handling).
    let wa_id = customer_wa_id();
    let contact = t.inbound(&wa_id, 1, "STOP").await;
    // Then the marketing template is never sent to the opted-out contact.
    t.inbound(&wa_id, 2, "Deals").await;
    let d = t.wait_firings(&deals, 1).await;
    assert_eq!(
        (d[0]["outcome"].as_str(), d[0]["reason"].as_str()),
        (Some("suppressed"), Some("opted_out"))
    );

    // A human answers; the customer's "help" within 30 minutes gets no automated reply.
    let (status, sent) = t
        .call(
            "POST",
            "/v1/messages",
            Some(json!({"contact_id": contact, "type": "text", "text": {"body": "Hi, Sam here"}})),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    t.inbound(&wa_id, 3, "help me please").await;
    let h = t.wait_firings(&help, 1).await;
    assert_eq!(
        (h[0]["outcome"].as_str(), h[0]["reason"].as_str()),
        (Some("suppressed"), Some("human_replied"))
    );
    settle().await;
    // Only the human's message went out.
    assert_eq!(t.outbound(&contact).await.len(), 1);

    // Tenant isolation: the other tenant's rule saw nothing; neither tenant sees the other's.
    assert!(other.firings(&foreign).await.is_empty());
    assert_eq!(
        other.call("GET", &format!("/v1/automations/{deals}"), None).await.0,
        404
    );
    assert_eq!(
        other
            .call("GET", &format!("/v1/automations/{deals}/firings"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        other
            .call(
                "PATCH",
                &format!("/v1/automations/{deals}"),
                Some(json!({"enabled": false}))
            )
            .await
            .0,
        404
    );
    assert_eq!(
        other.call("DELETE", &format!("/v1/automations/{deals}"), None).await.0,
        404
    );
    let (status, listed) = other.call("GET", "/v1/automations", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let dry = json!({"contact_id": contact, "message": {"type": "text", "text": {"body": "help"}}});
    assert_eq!(other.call("POST", "/v1/automations/test", Some(dry)).await.0, 404);
    assert_eq!(
        other
            .call(
                "GET",
                &format!("/v1/conversations/{contact}-{}/automations", t.pnid),
                None
            )
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn rules_are_validated_patched_audited_and_admin_only() {
    let t = tenant("Automations API").await;
    let (status, bad) = t
        .call(
            "POST",
            "/v1/automations",
            Some(json!({"name": "x", "trigger": {"type": "keyword", "match": "regex",
            "keywords": ["(unclosed"]}, "actions": [text_reply("x")]})),
        )
        .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (422, Some("invalid_automation")),
        "{bad}"
    );
    let (status, bad) = t
        .call(
            "POST",
            "/v1/automations",
            Some(json!({"name": "x", "trigger": {"type": "sometimes"}, "actions": []})),
        )
        .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{bad}"
    );
    let id = t
        .rule(
            json!({"name": "hours", "trigger": {"type": "keyword", "match": "exact", "keywords": ["hours"]},
            "conditions": {"tags_any": ["vip"]}, "actions": [text_reply("9-5")]}),
        )
        .await;
    let (status, patched) = t
        .call(
            "PATCH",
            &format!("/v1/automations/{id}"),
            Some(json!({"enabled": false, "conditions": {"tags_any": null}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (patched["enabled"].as_bool(), patched["version"].as_u64()),
        (Some(false), Some(2))
    );
    assert!(patched["conditions"].get("tags_any").is_none(), "{patched}");
    assert_eq!(patched["trigger"]["keywords"], json!(["hours"]));
    let (status, bad) = t
        .call(
            "PATCH",
            &format!("/v1/automations/{id}"),
            Some(json!({"cooldown_minutes": 999999})),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    // Nothing half-stored.
    let (_, got) = t.call("GET", &format!("/v1/automations/{id}"), None).await;
    assert_eq!(got["version"], 2);
    let (status, settings) = t
        .call("PUT", "/v1/settings/automations", Some(json!({"daily_cap": 5})))
        .await;
    assert_eq!((status, settings["daily_cap"].as_u64()), (200, Some(5)));
    // An agent key may not manage rules.
    let (_, agent) = t.call("POST", "/v1/apikeys", Some(json!({"role": "agent"}))).await;
    let agent_key = agent["api_key"].as_str().unwrap_or_else(|| panic!("{agent}"));
    let (status, _) = api("GET", &format!("{}/v1/automations", t.gw.base), Some(agent_key), None).await;
    assert_eq!(status, 403);
    assert_eq!(t.call("DELETE", &format!("/v1/automations/{id}"), None).await.0, 204);
    assert_eq!(t.call("GET", &format!("/v1/automations/{id}"), None).await.0, 404);
    let (_, log) = t.call("GET", "/v1/audit?limit=100", None).await;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("automation."))
        .collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
}

/// The no-reply sweep as its function runs it (its role's permissions), at `now`.
async fn no_reply_sweep(now: chrono::DateTime<Utc>) -> events_fn::automate::NoReplySweep {
    let on = events_stack();
    let sdk = on.sdk_for("NoReplySweepFunction").await;
    let auto = events_fn::automate::Automations::new(crm_shared::jobs::SqsQueue::new(
        crm_shared::aws::sqs_client(&sdk),
        on.outbound_queue_url(),
    ));
    events_fn::automate::sweep_no_reply(&auto, &on.store_for("NoReplySweepFunction").await, now)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_no_reply_timer_fires_once_per_waiting_period() {
    let t = tenant("Automations no reply").await;
    let rule = t
        .rule(json!({"name": "no reply", "trigger": {"type": "no_reply", "minutes": 5}, "cooldown_minutes": 0,
            "actions": [text_reply("We have your message and will answer shortly."), {"type": "add_tags", "tags": ["waited"]}]}))
        .await;
    let waiting = customer_wa_id();
    let answered = customer_wa_id();
    let start = Utc::now();
    let waiting_contact = t.inbound(&waiting, 1, "Where is my order?").await;
    let answered_contact = t.inbound(&answered, 2, "Can I change my address?").await;
    // The team answers the second customer at once.
    let (status, sent) = t
        .call(
            "POST",
            "/v1/messages",
            Some(json!({"contact_id": answered_contact, "type": "text", "text": {"body": "Sure, which one?"}})),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    // The inbound message opened no firing (a time-based rule is never evaluated on a message).
    settle().await;
    assert!(t.firings(&rule).await.is_empty());

    // Four minutes in: nobody has waited five yet.
    no_reply_sweep(start + chrono::Duration::minutes(4)).await;
    assert!(t.firings(&rule).await.is_empty());
    // The dry run agrees with the sweep about both moments.
    let dry = |minutes: i64| json!({"contact_id": waiting_contact, "sweep": true, "at": start + chrono::Duration::minutes(minutes)});
    let (status, early) = t.call("POST", "/v1/automations/test", Some(dry(4))).await;
    assert_eq!(status, 200, "{early}");
    assert_eq!(early["fires"], json!([]), "{early}");
    let (_, due) = t.call("POST", "/v1/automations/test", Some(dry(6))).await;
    assert_eq!(due["fires"], json!([rule]), "{due}");

    // Six minutes in: the waiting customer gets the reply; the answered one nothing. Repeated and
    // overlapping sweeps of the same minute and the next fire nothing more.
    let six = start + chrono::Duration::minutes(6);
    no_reply_sweep(six).await;
    let (a, b) = tokio::join!(no_reply_sweep(six), no_reply_sweep(six + chrono::Duration::seconds(1)));
    let _ = (a, b);
    no_reply_sweep(start + chrono::Duration::minutes(7)).await;
    let fired = t.firings(&rule).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["outcome"], "fired");
    assert_eq!(fired[0]["trigger"], "no_reply");
    assert_eq!(fired[0]["contact_id"].as_str(), Some(waiting_contact.as_str()));
    assert!(fired[0]["waiting_since"].is_string(), "{}", fired[0]);
    let replies = t.outbound(&waiting_contact).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].automation_rule.as_deref(), Some(rule.as_str()));
    assert_eq!(t.outbound(&answered_contact).await.len(), 1, "only the team's answer");
    let (_, contact) = t.call("GET", &format!("/v1/contacts/{waiting_contact}"), None).await;
    assert_eq!(contact["tags"], json!(["waited"]));
    // Visible per conversation too.
    let (status, log) = t
        .call(
            "GET",
            &format!("/v1/conversations/{waiting_contact}-{}/automations", t.pnid),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["items"].as_array().unwrap().len(), 1);

    // Our reply ended that wait; the customer's next message starts a new one, answered again
    // five minutes after it.
    let again = Utc::now();
    t.inbound(&waiting, 3, "Still there?").await;
    no_reply_sweep(again + chrono::Duration::minutes(3)).await;
    assert_eq!(t.firings(&rule).await.len(), 1);
    no_reply_sweep(again + chrono::Duration::minutes(6)).await;
    no_reply_sweep(again + chrono::Duration::minutes(6)).await;
    let fired = t.firings(&rule).await;
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_ne!(fired[0]["waiting_since"], fired[1]["waiting_since"]);
    assert_eq!(t.outbound(&waiting_contact).await.len(), 2);
}

#[tokio::test]
async fn a_consent_keyword_gets_its_confirmation_once_and_nothing_else() {
    let t = tenant("Automations consent").await;
    let (status, settings) = t
        .call(
            "PUT",
            "/v1/settings/automations",
            Some(
                json!({"daily_cap": 100, "opt_out_confirmation": "You will get no more offers. Reply START to undo.",
                        "opt_in_confirmation": "Welcome back!"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{settings}");
    let (status, refused) = t
        .call(
            "PUT",
            "/v1/settings/automations",
            Some(json!({"opt_out_confirmation": "x".repeat(1025)})),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    let (_, read) = t.call("GET", "/v1/settings/automations", None).await;
    assert_eq!(read["opt_in_confirmation"], "Welcome back!");
    // A rule that would answer anything: it never answers the keyword.
    let any = t
        .rule(
            json!({"name": "any", "trigger": {"type": "keyword", "match": "regex", "keywords": [".*"]},
            "actions": [text_reply("anything")]}),
        )
        .await;
    let wa_id = customer_wa_id();
    let contact = t.inbound(&wa_id, 1, "STOP").await;
    let conversation = format!("{contact}-{}", t.pnid);
    let log = eventually("the confirmation's firing", || async {
        let (_, page) = t
            .call("GET", &format!("/v1/conversations/{conversation}/automations"), None)
            .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .any(|f| f["rule_id"] == "opt_out_confirmation")
            .then_some(items)
    })
    .await;
    let confirmation = log.iter().find(|f| f["rule_id"] == "opt_out_confirmation").unwrap();
    assert_eq!(confirmation["outcome"], "fired", "{confirmation}");
    let suppressed = t.wait_firings(&any, 1).await;
    assert_eq!(suppressed[0]["reason"], "consent_keyword");
    let replies = t.outbound(&contact).await;
    assert_eq!(replies.len(), 1, "only the confirmation");
    assert_eq!(
        replies[0].content["body"],
        "You will get no more offers. Reply START to undo."
    );
    assert_eq!(replies[0].category, Some(crm_shared::sending::Category::Service));

    // The same STOP's stream record again (redelivery): no second confirmation.
    let message = t
        .store
        .contact_messages(&t.tenant_id, &contact, 100, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|m| m.direction == crm_shared::message::Direction::Inbound)
        .unwrap();
    let auto = events_fn::automate::Automations::new(crm_shared::jobs::SqsQueue::new(
        crm_shared::aws::sqs_client(&events_stack().sdk_for("EventsFunction").await),
        events_stack().outbound_queue_url(),
    ));
    let events_store = events_stack().store_for("EventsFunction").await;
    // As the stream hands it again: the same record, so the same time it was judged at.
    let stored_at: chrono::DateTime<Utc> = confirmation["at"].as_str().unwrap().parse().unwrap();
    events_fn::automate::confirm_consent(
        &auto,
        &events_store,
        &message,
        crm_shared::whatsapp::ConsentKeyword::OptOut,
        stored_at,
    )
    .await
    .unwrap();
    settle().await;
    assert_eq!(t.outbound(&contact).await.len(), 1);
    let log = t
        .call("GET", &format!("/v1/conversations/{conversation}/automations"), None)
        .await
        .1;
    let confirmations = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule_id"] == "opt_out_confirmation")
        .count();
    assert_eq!(confirmations, 1);

    // START: its own confirmation.
    t.inbound(&wa_id, 2, "start").await;
    eventually("the opt-in confirmation", || async {
        let out = t.outbound(&contact).await;
        out.iter().any(|m| m.content["body"] == "Welcome back!").then_some(())
    })
    .await;
    settle().await;
    assert_eq!(t.outbound(&contact).await.len(), 2);
}
