//! Who may call the API, and how often: per-tenant quotas (`429` with `Retry-After`) and the
//! tenant status check behind every key.

use std::time::Duration;

use chrono::Utc;
use e2e_tests::{api, new_tenant, stack, start_gateway_tuned};

use crm_shared::quota::QuotaConfig;
use crm_shared::store::{ApiKeyStore, TenantStore};

async fn get_tenant(base: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/v1/tenant"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .expect("gateway answers")
}

#[tokio::test]
async fn a_tenant_over_its_burst_gets_429_with_retry_after_and_others_are_unaffected() {
    let store = stack().store().await;
    let busy = new_tenant(&store, "Busy").await;
    let quiet = new_tenant(&store, "Quiet").await;
    let quota = QuotaConfig {
        rate_per_second: 1,
        burst: 3,
    };
    let gw = start_gateway_tuned(stack().store_for("ApiFunction").await, |deps| deps.with_quota(quota)).await;

    for i in 0..3 {
        let resp = get_tenant(&gw.base, busy.api_key.expose()).await;
        assert_eq!(resp.status(), 200, "request {i} is within the burst");
    }
    let resp = get_tenant(&gw.base, busy.api_key.expose()).await;
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert_eq!(retry_after, 1, "one token at 1/s");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");

    // Another tenant on the same instance has its own bucket.
    for _ in 0..3 {
        assert_eq!(get_tenant(&gw.base, quiet.api_key.expose()).await.status(), 200);
    }
    // An unauthenticated caller is `401`, never counted against anyone.
    assert_eq!(api("GET", &format!("{}/v1/tenant", gw.base), None, None).await.0, 401);

    // After the advertised wait the busy tenant is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(get_tenant(&gw.base, busy.api_key.expose()).await.status(), 200);
}

#[tokio::test]
async fn a_disabled_tenants_keys_answer_401_although_they_were_never_revoked() {
    let store = stack().store().await;
    let created = new_tenant(&store, "Suspended").await;
    let tenant = &created.tenant;
    // An instance that rereads the status on every request, and one started later (cold).
    let eager = start_gateway_tuned(stack().store_for("ApiFunction").await, |deps| {
        deps.with_tenant_status_ttl(Duration::ZERO)
    })
    .await;
    let url = format!("{}/v1/tenant", eager.base);
    assert_eq!(api("GET", &url, Some(created.api_key.expose()), None).await.0, 200);

    // Offboarding that stopped after disabling the tenant: the keys are still active.
    store.disable_tenant(&tenant.tenant_id, Utc::now()).await.unwrap();
    let keys = store.list_keys(&tenant.tenant_id, 10, None).await.unwrap();
    assert!(keys.items.iter().all(|k| k.is_active()), "no key was revoked");

    let (status, body) = api("GET", &url, Some(created.api_key.expose()), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let cold = start_gateway_tuned(stack().store_for("ApiFunction").await, |deps| deps).await;
    let (status, _) = api(
        "GET",
        &format!("{}/v1/contacts", cold.base),
        Some(created.api_key.expose()),
        None,
    )
    .await;
    assert_eq!(status, 401);
}
