//! Reports end to end: the real handlers store traffic, the real events function counts it from
//! the local endpoint's stream, `GET /v1/reports/*` answers in JSON and CSV, and the counter
//! items — scanned in the table — hold no personal data and are unchanged by an erasure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration as Days, Utc};
use serde_json::json;

use crm_shared::store::{DynamoStore, OutboundStore};
use e2e_tests::{Gateway, api, event_stream, events_lock, events_stack, new_tenant, post_webhook};

use crate::webhook::{customer_wa_id, status_delivery, text_delivery};

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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn gateway(store: DynamoStore) -> Gateway {
    let on = events_stack();
    on.start_gateway(store, on.media_queue_url(), on.outbound_queue_url(), on.privacy().await)
        .await
}

/// Every counter item of the tenant, as the table holds it (both granularities).
async fn counter_items(store: &DynamoStore, tenant_id: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for letter in ["H", "D", "U"] {
        let items = store
            .client()
            .query()
            .table_name(store.table())
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("T#{tenant_id}#RPT#{letter}")))
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        for item in items {
            out.push(
                item.into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            AttributeValue::S(s) | AttributeValue::N(s) => s,
                            other => format!("{other:?}"),
                        };
                        (k, v)
                    })
                    .collect(),
            );
        }
    }
    out
}

async fn get_text(url: &str, key: &str, accept: &str) -> (u16, String, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .header("authorization", format!("Bearer {key}"))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, resp.text().await.unwrap())
}

#[tokio::test]
async fn reports_count_real_traffic_once_answer_json_and_csv_and_survive_an_erasure_without_personal_data() {
    let _one_at_a_time = events_lock().await;
    event_stream();
    let store = events_stack().store().await;
    let t = new_tenant(&store, "Reports").await;
    let (tenant, admin) = (&t.tenant, t.api_key.expose());
    let gw = gateway(store.clone()).await;
    let (status, viewer) = api(
        "POST",
        &format!("{}/v1/apikeys", gw.base),
        Some(admin),
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(status, 201, "{viewer}");
    let viewer = viewer["api_key"].as_str().unwrap().to_owned();
    // An agent with a key of their own; per-user metrics are off until the admin turns them on.
    let (status, user) = api(
        "POST",
        &format!("{}/v1/users", gw.base),
        Some(admin),
        Some(json!({"name": "Agent Ray", "email": "ray@example.com", "role": "agent"})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let user_id = user["id"].as_str().unwrap().to_owned();
    let (status, agent) = api(
        "POST",
        &format!("{}/v1/users/{user_id}/apikeys", gw.base),
        Some(admin),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    let agent = agent["api_key"].as_str().unwrap().to_owned();
    let users_url = format!("{}/v1/reports/users", gw.base);
    let (status, body) = api("GET", &users_url, Some(admin), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("per_user_metrics_disabled")),
        "{body}"
    );
    let settings = json!({"time_zone": "Europe/London", "per_user_metrics": true});
    let settings_url = format!("{}/v1/settings/reports", gw.base);
    assert_eq!(
        api("PUT", &settings_url, Some(&agent), Some(settings.clone())).await.0,
        403
    );
    let (status, body) = api("PUT", &settings_url, Some(admin), Some(settings)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(
        "PUT",
        &settings_url,
        Some(admin),
        Some(json!({"time_zone": "Mars/Olympus"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_settings")),
        "{body}"
    );
    let (_, body) = api("GET", &settings_url, Some(&viewer), None).await;
    assert_eq!(
        (&body["time_zone"], &body["per_user_metrics"]),
        (&json!("Europe/London"), &json!(true))
    );

    // A customer writes in (twice: the same webhook redelivered), we answer twice: one send is
    // delivered and read (with a duplicate, late `delivered`), one fails; the team resolves.
    let wa_id = customer_wa_id();
    let ts = Utc::now().timestamp();
    let delivery = text_delivery(
        &tenant.phone_number_id,
        &wa_id,
        &format!("wamid.rp{wa_id}"),
        ts,
        "my secret words",
    );
    for _ in 0..2 {
        assert_eq!(post_webhook(&gw.base, &delivery, None).await.0, 200);
    }
    let contact_id = eventually(30, "the contact", || async {
        let (_, page) = api("GET", &format!("{}/v1/contacts", gw.base), Some(admin), None).await;
        page["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let mut wamids = Vec::new();
    for n in 0..2 {
        let body = json!({"contact_id": contact_id, "type": "text", "text": {"body": "hello Pat"}});
        let (status, sent) = api("POST", &format!("{}/v1/messages", gw.base), Some(&agent), Some(body)).await;
        assert_eq!(status, 202, "{sent}");
        let wamid = format!("wamid.rpo{n}{wa_id}");
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
        (&wamids[0], "read"),
        (&wamids[0], "delivered"),
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
    let conversation_url = format!("{}/v1/conversations/{contact_id}-{}", gw.base, tenant.phone_number_id);
    let (status, body) = api(
        "POST",
        &format!("{conversation_url}/status"),
        Some(&agent),
        Some(json!({"status": "resolved"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The counts, once each, as soon as the stream has been read.
    let from = (Utc::now() - Days::days(1)).format("%Y-%m-%d").to_string();
    let to = (Utc::now() + Days::days(2)).format("%Y-%m-%d").to_string();
    let messages_url = format!("{}/v1/reports/messages?from={from}&to={to}&group_by=phone", gw.base);
    let report = eventually(60, "the counts", || async {
        let (status, r) = api("GET", &messages_url, Some(&viewer), None).await;
        assert_eq!(status, 200, "{r}");
        let t = &r["totals"];
        (t["received"] == 1 && t["sent"] == 2 && t["read"] == 1 && t["failed"] == 1).then_some(r)
    })
    .await;
    let totals = &report["totals"];
    assert_eq!(
        totals["delivered"], 1,
        "read without delivered counts delivered: {report}"
    );
    assert_eq!(totals["delivery_rate"], 0.5);
    assert_eq!(totals["read_rate"], 1.0);
    assert_eq!(totals["failed_by_code"], json!({"131047": 1}));
    assert_eq!(report["read_rate_is_lower_bound"], true);
    let rows = report["rows"].as_array().unwrap();
    assert!(
        rows.iter().all(|r| r["group"] == tenant.phone_number_id.as_str()),
        "{report}"
    );
    let conversations_url = format!("{}/v1/reports/conversations?from={from}&to={to}", gw.base);
    let conversations = eventually(30, "the conversation counts", || async {
        let (_, r) = api("GET", &conversations_url, Some(&viewer), None).await;
        (r["totals"]["resolved"] == 1).then_some(r)
    })
    .await;
    let c = &conversations["totals"];
    assert_eq!(
        (c["opened"].as_u64(), c["first_response"]["count"].as_u64()),
        (Some(1), Some(1)),
        "{conversations}"
    );
    assert_eq!(c["resolution"]["count"], 1);
    assert!(c["first_response"]["p50_seconds"].as_f64().is_some());

    // Per-user metrics: the agent's replies, resolution and first response; admins only.
    let users_url = format!("{users_url}?from={from}&to={to}");
    let users = eventually(30, "the agent's counts", || async {
        let (status, r) = api("GET", &users_url, Some(admin), None).await;
        assert_eq!(status, 200, "{r}");
        (r["totals"]["resolutions"] == 1).then_some(r)
    })
    .await;
    assert_eq!(users["totals"]["replies"], 2, "{users}");
    assert_eq!(users["totals"]["first_response"]["count"], 1, "{users}");
    assert!(
        users["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["group"] == user_id.as_str()),
        "{users}"
    );
    assert_eq!(api("GET", &users_url, Some(&viewer), None).await.0, 403);

    // CSV by Accept header and by format=, with the documented columns; clear 400s.
    let (status, content_type, csv) = get_text(&messages_url, &viewer, "text/csv").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "bucket,group,received,sent,delivered,read,failed,delivery_rate,read_rate"
    );
    assert_eq!(lines.len(), 1 + rows.len());
    assert!(
        lines[1].contains(&format!(",{},1,2,1,1,1,0.5,1.0", tenant.phone_number_id)),
        "{csv}"
    );
    let (_, _, by_param) = get_text(&format!("{conversations_url}&format=csv"), &viewer, "*/*").await;
    assert!(by_param.starts_with("bucket,group,opened,resolved,opt_outs,opt_ins,first_response_count"));
    for (query, param) in [
        ("granularity=week", "granularity"),
        ("group_by=contact", "group_by"),
        ("from=2026-02-30", "from"),
        ("from=2020-01-01&to=2026-01-01", "to"),
    ] {
        let (status, body) = api(
            "GET",
            &format!("{}/v1/reports/messages?{query}", gw.base),
            Some(&viewer),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{query}: {body}"
        );
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    let (status, _) = api("GET", &messages_url, None, None).await;
    assert_eq!(status, 401);

    // The counter items hold no contact id, phone number, name or text.
    let before = counter_items(&store, &tenant.tenant_id).await;
    assert!(!before.is_empty());
    let personal = [contact_id.as_str(), wa_id.as_str(), "Pat", "secret words", "hello"];
    let scan = |items: &[BTreeMap<String, String>]| {
        let text = format!("{items:?}");
        for p in personal {
            assert!(!text.contains(p), "{p} in a counter item: {text}");
        }
    };
    scan(&before);

    // An erasure leaves them exactly as they were.
    let (status, receipt) = api(
        "DELETE",
        &format!("{}/v1/contacts/{contact_id}", gw.base),
        Some(admin),
        None,
    )
    .await;
    assert!(status == 200 || status == 202, "{status} {receipt}");
    eventually(60, "the erasure's events", || async {
        let (_, page) = api(
            "GET",
            &format!("{}/v1/events?types=contact.erased", gw.base),
            Some(admin),
            None,
        )
        .await;
        (!page["items"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    // The stream has now passed the erasure's deletions (the erased contact's event follows them).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = counter_items(&store, &tenant.tenant_id).await;
    scan(&after);
    let strip = |items: &[BTreeMap<String, String>]| -> Vec<BTreeMap<String, String>> {
        items
            .iter()
            .map(|i| {
                i.iter()
                    .filter(|(k, _)| k.as_str() != "expires_at")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .collect()
    };
    assert_eq!(strip(&after), strip(&before), "an erasure changes no counter");
    let (_, again) = api("GET", &messages_url, Some(&viewer), None).await;
    assert_eq!(again["totals"], report["totals"]);
}
