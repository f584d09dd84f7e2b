//! The event stream end to end: changes stored by the real handlers reach the table's stream
//! (the local endpoint's DynamoDB Streams), the real events function records them in the
//! tenant's log, `GET /v1/events` reads them after a cursor, and the real delivery worker pushes
//! them, signed, to local receivers.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crm_shared::events::signing::verify;
use crm_shared::secret::Secret;
use crm_shared::store::{ContactStore, OutboundStore};
use e2e_tests::{
    Gateway, api, event_stream, events_lock, events_stack, new_tenant, post_webhook, stack, start_gateway,
    start_gateway_tuned,
};

use crate::webhook::{customer_wa_id, status_delivery, text_delivery};

/// Waits (up to `secs`) for `check` to return `Some`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event of the tenant's log after `after`, following `next_cursor` to the end.
async fn events_after(base: &str, key: &str, after: u64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = format!("{base}/v1/events?after={after}&limit=100");
    loop {
        let (status, page) = api("GET", &url, Some(key), None).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{base}/v1/events?cursor={c}&limit=100"),
            None => return out,
        }
    }
}

/// A gateway on the events stack (its stream is what [`event_stream`] reads).
async fn events_gateway(store: crm_shared::store::DynamoStore) -> Gateway {
    let on = events_stack();
    on.start_gateway(store, on.media_queue_url(), on.outbound_queue_url(), on.privacy().await)
        .await
}

fn named(name: &str) -> crm_shared::contact::ValidContact {
    crm_shared::contact::ValidContact {
        phone: None,
        user_id: None,
        name: Some(name.to_owned()),
        email: None,
        tags: Vec::new(),
        attributes: Default::default(),
        language: None,
    }
}

fn types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

async fn wait_for_type(base: &str, key: &str, wanted: &str) -> Vec<Value> {
    eventually(30, wanted, || async {
        let events = events_after(base, key, 0).await;
        types(&events).iter().any(|t| t == wanted).then_some(events)
    })
    .await
}

async fn create_endpoint(base: &str, key: &str, url: &str, extra: Value) -> (String, Secret) {
    let mut body = json!({"url": url});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let (status, created) = api("POST", &format!("{base}/v1/webhook-endpoints"), Some(key), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    (
        created["id"].as_str().unwrap().to_owned(),
        Secret::new(created["secret"].as_str().unwrap()),
    )
}

/// The verified bodies a receiver got, by `webhook-id` (every request must verify).
async fn verified(server: &MockServer, secrets: &[&Secret]) -> Vec<(String, Value)> {
    let requests = server.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .map(|r| {
            let h = |n: &str| {
                r.headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let now = Utc::now().timestamp();
            for secret in secrets {
                verify(
                    secret,
                    &h("webhook-id"),
                    &h("webhook-timestamp"),
                    &h("webhook-signature"),
                    &r.body,
                    now,
                )
                .unwrap_or_else(|e| panic!("delivery {} does not verify: {e}", h("webhook-id")));
            }
            (h("webhook-id"), serde_json::from_slice(&r.body).unwrap())
        })
        .collect()
}

async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn every_event_type_of_the_real_handlers_is_logged_once_in_order_and_pushed_signed() {
    let _one_at_a_time = events_lock().await;
    event_stream();
    let store = events_stack().store().await;
    let t = new_tenant(&store, "Events").await;
    let (tenant, key) = (&t.tenant, t.api_key.expose());
    let gw = events_gateway(store.clone()).await;
    let hook = receiver(200).await;
    let (endpoint_id, secret) = create_endpoint(&gw.base, key, &hook.uri(), json!({})).await;

    // A customer writes in: contact.created, message.received.
    let wa_id = customer_wa_id();
    let ts = Utc::now().timestamp();
    let delivery = text_delivery(
        &tenant.phone_number_id,
        &wa_id,
        &format!("wamid.ev{wa_id}"),
        ts,
        "hello events",
    );
    assert_eq!(post_webhook(&gw.base, &delivery, None).await.0, 200);
    let events = wait_for_type(&gw.base, key, "message.received").await;
    let contact_id = events[0]["data"]["contact_id"].as_str().unwrap().to_owned();
    // The business edits and the customer's consent changes: contact.updated, consent.changed.
    let contact_url = format!("{}/v1/contacts/{contact_id}", gw.base);
    assert_eq!(
        api("PATCH", &contact_url, Some(key), Some(json!({"name": "Pat"})))
            .await
            .0,
        200
    );
    let consent = json!({"marketing": "opted_in", "source": "form"});
    assert_eq!(
        api("PUT", &format!("{contact_url}/consent"), Some(key), Some(consent))
            .await
            .0,
        200
    );
    // The inbox: the message opened a conversation; an agent takes it and resolves it.
    let (status, user) = api(
        "POST",
        &format!("{}/v1/users", gw.base),
        Some(key),
        Some(json!({"name": "Agent Eve", "email": "eve@example.com", "role": "agent"})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let conversation_url = format!("{}/v1/conversations/{contact_id}-{}", gw.base, tenant.phone_number_id);
    let assign = json!({"assignee": user["id"], "expected": null});
    let (status, body) = api("POST", &format!("{conversation_url}/assign"), Some(key), Some(assign)).await;
    assert_eq!(status, 200, "{body}");
    let resolve = json!({"status": "resolved"});
    let (status, body) = api("POST", &format!("{conversation_url}/status"), Some(key), Some(resolve)).await;
    assert_eq!(status, 200, "{body}");
    // Two sends: one moves sent → delivered → read (and a late `delivered` changes nothing),
    // the other fails.
    let mut wamids = Vec::new();
    for n in 0..2 {
        let body = json!({"contact_id": contact_id, "type": "text", "text": {"body": "hi"}});
        let (status, sent) = api("POST", &format!("{}/v1/messages", gw.base), Some(key), Some(body)).await;
        assert_eq!(status, 202, "{sent}");
        let wamid = format!("wamid.out{n}{wa_id}");
        // What the sender records when Meta accepts the send.
        store
            .mark_sent(
                &tenant.tenant_id,
                sent["id"].as_str().unwrap(),
                &contact_id,
                &wamid,
                Utc::now(),
            )
            .await
            .unwrap();
        wamids.push(wamid);
    }
    for (wamid, status) in [
        (&wamids[0], "delivered"),
        (&wamids[0], "read"),
        (&wamids[0], "delivered"),
        (&wamids[1], "failed"),
    ] {
        let extra = if status == "failed" {
            json!({"errors": [{"code": 131047, "title": "Re-engagement message"}]})
        } else {
            json!({})
        };
        let d = status_delivery(&tenant.phone_number_id, wamid, status, ts + 5, extra);
        assert_eq!(post_webhook(&gw.base, &d, None).await.0, 200);
    }
    // Erasure: contact.erased (ids only).
    let (status, receipt) = api("DELETE", &contact_url, Some(key), None).await;
    assert!(status == 200 || status == 202, "{status} {receipt}");
    let events = wait_for_type(&gw.base, key, "contact.erased").await;

    let kinds = types(&events);
    for wanted in [
        "contact.created",
        "message.received",
        "contact.updated",
        "consent.changed",
        "conversation.opened",
        "conversation.assigned",
        "conversation.status_changed",
        "message.status_updated",
        "message.failed",
        "contact.erased",
    ] {
        assert!(kinds.iter().any(|k| k == wanted), "{wanted} missing from {kinds:?}");
    }
    // Positions are gap-free and in order; ids are unique; no body, name or phone in the log.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len());
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains("hello events") && !text.contains(&wa_id) && !text.contains("Pat\""),
        "{text}"
    );
    // Statuses: forward moves only, once each (sent, delivered, read; the late delivered is not one).
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "message.status_updated")
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "delivered").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == "read").count(), 1, "{statuses:?}");
    // Conversations: opened by the message (its sequence number 1), then assigned, resolved.
    let of_type = |t: &str| events.iter().find(|e| e["type"] == t).unwrap()["data"].clone();
    let conversation_id = format!("{contact_id}-{}", tenant.phone_number_id);
    let opened = of_type("conversation.opened");
    assert_eq!(opened["conversation_id"], conversation_id.as_str(), "{opened}");
    let opened_count = events.iter().filter(|e| e["type"] == "conversation.opened").count();
    assert_eq!(opened_count, 1, "{events:?}");
    assert_eq!((opened["seq"].as_u64(), &opened["reopened"]), (Some(1), &json!(false)));
    let assigned = of_type("conversation.assigned");
    assert_eq!(assigned["assignee"], user["id"], "{assigned}");
    let moved = of_type("conversation.status_changed");
    assert_eq!(
        (&moved["previous_status"], &moved["status"]),
        (&json!("open"), &json!("resolved"))
    );
    // `?types=` filters; `?after=` resumes exactly after a position.
    let (_, only) = api(
        "GET",
        &format!("{}/v1/events?types=contact.erased", gw.base),
        Some(key),
        None,
    )
    .await;
    assert_eq!(types(only["items"].as_array().unwrap()), ["contact.erased"]);
    // (Events stored since the snapshot, e.g. `erasure.completed`, may follow.)
    let tail = events_after(&gw.base, key, 3).await;
    assert!(tail.len() >= events.len() - 3);
    assert_eq!(tail[..events.len() - 3], events[3..]);
    assert_eq!(tail[0]["seq"], 4);

    // Every event reached the endpoint, signed, as its webhook-id.
    let pushed = eventually(30, "every event pushed", || async {
        let got = verified(&hook, &[&secret]).await;
        (got.len() >= events.len()).then_some(got)
    })
    .await;
    for e in &events {
        assert!(
            pushed
                .iter()
                .any(|(id, body)| id == e["id"].as_str().unwrap() && body == e),
            "{e} not pushed"
        );
    }

    // Rotation: for 24 h both secrets sign.
    let (status, rotated) = api(
        "POST",
        &format!("{}/v1/webhook-endpoints/{endpoint_id}/rotate-secret", gw.base),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = Secret::new(rotated["secret"].as_str().unwrap());
    // Redelivery of the first event (after the worker's endpoint cache has expired).
    tokio::time::sleep(events_fn::deliver::ENDPOINT_TTL).await;
    let first = events[0]["id"].as_str().unwrap();
    let (status, redelivered) = api(
        "POST",
        &format!("{}/v1/events/{first}/redeliver", gw.base),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 202, "{redelivered}");
    let before = pushed.len();
    let again = eventually(30, "the redelivery", || async {
        let requests = hook.received_requests().await.unwrap_or_default();
        requests
            .into_iter()
            .skip(before)
            .find(|r| r.headers.get("webhook-id").and_then(|v| v.to_str().ok()) == Some(first))
    })
    .await;
    let h = |n: &str| again.headers.get(n).unwrap().to_str().unwrap().to_owned();
    assert_eq!(h("webhook-id"), first, "same webhook-id");
    assert_eq!(h("webhook-signature").split(' ').count(), 2);
    for s in [&secret, &new_secret] {
        verify(
            s,
            &h("webhook-id"),
            &h("webhook-timestamp"),
            &h("webhook-signature"),
            &again.body,
            Utc::now().timestamp(),
        )
        .unwrap();
    }
    // The deliveries log: attempts, statuses, latencies, no bodies.
    let (_, log) = api(
        "GET",
        &format!("{}/v1/webhook-endpoints/{endpoint_id}/deliveries?limit=5", gw.base),
        Some(key),
        None,
    )
    .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 5);
    assert_eq!(log["items"][0]["status_code"], 200);
    assert!(log["next_cursor"].is_string());
    assert!(!log.to_string().contains("hello"));
}

#[tokio::test]
async fn retries_gone_and_a_hanging_endpoint_leave_the_others_on_time() {
    let _one_at_a_time = events_lock().await;
    event_stream();
    let store = events_stack().store().await;
    let t = new_tenant(&store, "Event deliveries").await;
    let key = t.api_key.expose();
    let gw = events_gateway(store.clone()).await;
    let flaky = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&flaky)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&flaky)
        .await;
    let gone = receiver(410).await;
    let hanging = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(20)))
        .mount(&hanging)
        .await;
    let fast = receiver(204).await;
    let only_created = json!({"event_types": ["contact.created"]});
    let (flaky_id, flaky_secret) = create_endpoint(&gw.base, key, &flaky.uri(), only_created.clone()).await;
    let (gone_id, _) = create_endpoint(&gw.base, key, &gone.uri(), only_created.clone()).await;
    create_endpoint(&gw.base, key, &hanging.uri(), only_created.clone()).await;
    let (_, fast_secret) = create_endpoint(&gw.base, key, &fast.uri(), only_created).await;

    let stored_at = Instant::now();
    store
        .create_contact(&crm_shared::contact::Contact::new(
            &t.tenant.tenant_id,
            named("Lee"),
            Utc::now(),
        ))
        .await
        .unwrap();
    // The fast endpoint has its delivery while the hanging one still hangs.
    eventually(10, "the fast endpoint's delivery", || async {
        (!verified(&fast, &[&fast_secret]).await.is_empty()).then_some(())
    })
    .await;
    assert!(
        stored_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        stored_at.elapsed()
    );
    // 410: the endpoint is disabled, and that is an event of its own.
    let disabled = eventually(20, "the 410 endpoint disabled", || async {
        let (_, e) = api(
            "GET",
            &format!("{}/v1/webhook-endpoints/{gone_id}", gw.base),
            Some(key),
            None,
        )
        .await;
        (e["enabled"] == false).then_some(e)
    })
    .await;
    assert_eq!(disabled["disabled_reason"], "gone");
    let events = wait_for_type(&gw.base, key, "endpoint.disabled").await;
    let event = events.iter().find(|e| e["type"] == "endpoint.disabled").unwrap();
    assert_eq!(event["data"]["endpoint_id"], gone_id.as_str());
    // 500 then 200: one logical delivery (same webhook-id), the second attempt ~5 s later.
    let both = eventually(30, "the retried delivery", || async {
        let got = verified(&flaky, &[&flaky_secret]).await;
        (got.len() >= 2).then_some(got)
    })
    .await;
    assert_eq!(both[0].0, both[1].0);
    let (_, log) = api(
        "GET",
        &format!("{}/v1/webhook-endpoints/{flaky_id}/deliveries", gw.base),
        Some(key),
        None,
    )
    .await;
    let attempts: Vec<(u64, bool)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["attempt"].as_u64().unwrap(), d["success"].as_bool().unwrap()))
        .collect();
    assert_eq!(attempts, [(2, true), (1, false)]);
    // Recover: everything since a time, again, in order.
    let since = (Utc::now() - chrono::TimeDelta::minutes(5)).to_rfc3339();
    let (status, recovered) = api(
        "POST",
        &format!("{}/v1/webhook-endpoints/{flaky_id}/recover", gw.base),
        Some(key),
        Some(json!({"since": since})),
    )
    .await;
    assert_eq!(status, 202, "{recovered}");
    assert_eq!(recovered["from_seq"], 1);
    eventually(20, "the recovered delivery", || async {
        (verified(&flaky, &[&flaky_secret]).await.len() >= 3).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_reader_after_a_cursor_loses_nothing_and_sees_nothing_twice_across_1000_concurrent_events() {
    use futures::StreamExt;
    let _one_at_a_time = events_lock().await;
    event_stream();
    let store = events_stack().store().await;
    let t = new_tenant(&store, "Event volume").await;
    let key = t.api_key.expose().to_owned();
    let gw = events_gateway(store.clone()).await;
    let tenant_id = t.tenant.tenant_id.clone();
    let writers = futures::stream::iter(0..1000)
        .map(|i| {
            let (store, tenant_id) = (store.clone(), tenant_id.clone());
            async move {
                let input = named(&format!("C{i}"));
                store
                    .create_contact(&crm_shared::contact::Contact::new(&tenant_id, input, Utc::now()))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    // A consumer reading while the events are produced, resuming after the last seq it saw.
    let base = gw.base.clone();
    let reader = async move {
        let mut seen: Vec<u64> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(240);
        while seen.len() < 1000 && Instant::now() < deadline {
            let after = seen.last().copied().unwrap_or(0);
            let (status, page) = api(
                "GET",
                &format!("{base}/v1/events?after={after}&limit=100"),
                Some(&key),
                None,
            )
            .await;
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().unwrap();
            if items.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen.extend(items.iter().map(|e| e["seq"].as_u64().unwrap()));
        }
        seen
    };
    let ((), seen) = tokio::join!(
        async {
            writers.await;
        },
        reader
    );
    assert_eq!(seen, (1..=1000).collect::<Vec<u64>>(), "every event once, in order");
}

#[tokio::test]
async fn endpoint_urls_are_guarded_and_tenants_are_isolated() {
    let store = stack().store().await;
    let a = new_tenant(&store, "Events A").await;
    let b = new_tenant(&store, "Events B").await;
    // The production policy: no loopback.
    let strict = start_gateway_tuned(store.clone(), |mut deps| {
        deps.webhook_policy = crm_shared::events::ssrf::UrlPolicy::default();
        deps
    })
    .await;
    let key = a.api_key.expose();
    for url in [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://localhost/hook",
        "http://hooks.example.com/hook",
        "http://127.0.0.1:9/hook",
    ] {
        let (status, body) = api(
            "POST",
            &format!("{}/v1/webhook-endpoints", strict.base),
            Some(key),
            Some(json!({"url": url})),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_url")),
            "{url}: {body}"
        );
    }
    let (status, body) = api(
        "POST",
        &format!("{}/v1/webhook-endpoints", strict.base),
        Some(key),
        Some(json!({"url": "https://hooks.example.com/", "event_types": ["nope"]})),
    )
    .await;
    assert!(status == 400, "{body}");
    // Another tenant's endpoint and events are not there.
    let gw = start_gateway(store.clone()).await;
    let hook = receiver(200).await;
    let (id, _) = create_endpoint(&gw.base, key, &hook.uri(), json!({})).await;
    let other = b.api_key.expose();
    for (m, path) in [
        ("GET", format!("/v1/webhook-endpoints/{id}")),
        ("DELETE", format!("/v1/webhook-endpoints/{id}")),
        ("POST", format!("/v1/webhook-endpoints/{id}/rotate-secret")),
        ("GET", format!("/v1/webhook-endpoints/{id}/deliveries")),
    ] {
        assert_eq!(
            api(m, &format!("{}{path}", gw.base), Some(other), None).await.0,
            404,
            "{m} {path}"
        );
    }
    let (_, listed) = api("GET", &format!("{}/v1/webhook-endpoints", gw.base), Some(other), None).await;
    assert_eq!(listed["items"], json!([]));
    // The secret is shown once: never in reads or listings.
    let (_, got) = api(
        "GET",
        &format!("{}/v1/webhook-endpoints/{id}", gw.base),
        Some(key),
        None,
    )
    .await;
    assert!(got.get("secret").is_none(), "{got}");
    let (_, mine) = api("GET", &format!("{}/v1/webhook-endpoints", gw.base), Some(key), None).await;
    assert!(!mine.to_string().contains("whsec_"));
    // A cursor of tenant A's events listing is refused for tenant B.
    let (_, page) = api("GET", &format!("{}/v1/events?limit=1", gw.base), Some(key), None).await;
    if let Some(cursor) = page["next_cursor"].as_str() {
        let (status, _) = api(
            "GET",
            &format!("{}/v1/events?cursor={cursor}", gw.base),
            Some(other),
            None,
        )
        .await;
        assert_eq!(status, 400);
    }
    let (status, _) = api("GET", &format!("{}/v1/events?after=x", gw.base), Some(other), None).await;
    assert_eq!(status, 400);
    // Deleting removes it.
    let (status, _) = api(
        "DELETE",
        &format!("{}/v1/webhook-endpoints/{id}", gw.base),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        api(
            "GET",
            &format!("{}/v1/webhook-endpoints/{id}", gw.base),
            Some(key),
            None
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn an_endpoints_delivery_log_spreads_over_its_shards_and_lists_whole_newest_first() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use crm_shared::events::EventType;
    use crm_shared::events::endpoint::DeliveryAttempt;
    use crm_shared::store::WebhookStore;
    use crm_shared::store::keys::{DELIVERY_LOG_SHARDS, delivery_shard, webhook_deliveries_pk};
    let store = events_stack().store().await;
    let t = new_tenant(&store, "Delivery shards").await;
    let key = t.api_key.expose();
    let gw = events_gateway(store.clone()).await;
    let sink = receiver(204).await;
    let (endpoint, _) = create_endpoint(&gw.base, key, &sink.uri(), json!({})).await;
    let (other, _) = create_endpoint(&gw.base, key, &sink.uri(), json!({})).await;
    // Attempts as the delivery worker records them, on its own role.
    let worker = events_stack().store_for("WebhookDeliveryFunction").await;
    let attempt = |endpoint_id: &str, n: u32| DeliveryAttempt {
        attempt_id: crm_shared::ids::new_id(),
        tenant_id: t.tenant.tenant_id.clone(),
        endpoint_id: endpoint_id.to_owned(),
        event_id: format!("evt_{n}"),
        event_type: EventType::MessageStatusUpdated,
        attempt: 1,
        at: Utc::now(),
        status_code: Some(204),
        latency_ms: 3,
        success: true,
        error: None,
        next_attempt_at: None,
    };
    let mut expected = Vec::new();
    for n in 0..45 {
        let a = attempt(&endpoint, n);
        worker.record_delivery(&a).await.unwrap();
        expected.push(a.attempt_id);
        worker.record_delivery(&attempt(&other, n)).await.unwrap();
    }
    // One attempt an earlier release logged under the endpoint's single key: moved there.
    let ddb = crm_shared::aws::dynamodb_client(&events_stack().sdk().await);
    let (table, old) = (events_stack().table(), expected[20].clone());
    let sharded = webhook_deliveries_pk(&t.tenant.tenant_id, &endpoint, delivery_shard(&old));
    let mut item = ddb
        .get_item()
        .table_name(table)
        .key("PK", AttributeValue::S(sharded.clone()))
        .key("SK", AttributeValue::S(old.clone()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let legacy = format!("T#{}#WEBHOOK#{endpoint}#DELIVERIES", t.tenant.tenant_id);
    item.insert("PK".into(), AttributeValue::S(legacy));
    ddb.put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    ddb.delete_item()
        .table_name(table)
        .key("PK", AttributeValue::S(sharded))
        .key("SK", AttributeValue::S(old))
        .send()
        .await
        .unwrap();
    let shards: std::collections::HashSet<u32> = expected.iter().map(|a| delivery_shard(a)).collect();
    assert!(shards.len() > DELIVERY_LOG_SHARDS as usize / 2, "{shards:?}");

    // Pages of 7 through every shard: each attempt once, newest first, the other endpoint's none.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let mut path = format!("{}/v1/webhook-endpoints/{endpoint}/deliveries?limit=7", gw.base);
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", crate::inbox::urlencoding(c)));
        }
        let (status, page) = api("GET", &path, Some(key), None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7 && !items.is_empty(), "{page}");
        listed.extend(items.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    expected.reverse();
    assert_eq!(listed, expected);
    // A cursor is the listing's own: another endpoint's listing refuses it.
    let (status, first) = api(
        "GET",
        &format!("{}/v1/webhook-endpoints/{endpoint}/deliveries?limit=7", gw.base),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, _) = api(
        "GET",
        &format!(
            "{}/v1/webhook-endpoints/{other}/deliveries?cursor={}",
            gw.base,
            crate::inbox::urlencoding(cursor)
        ),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 400);
}
