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

    // Twice the burst at once: on a loaded machine requests one after another can take long
    // enough for the bucket to refill, so the bound allows for the time the volley took.
    let started = std::time::Instant::now();
    let volley = futures::future::join_all((0..6).map(|_| get_tenant(&gw.base, busy.api_key.expose()))).await;
    let refilled = started.elapsed().as_secs_f64().ceil() as usize;
    let (served, limited): (Vec<_>, Vec<_>) = volley.into_iter().partition(|r| r.status() == 200);
    assert!(
        served.len() >= 3 && served.len() <= 3 + refilled,
        "the burst of 3 (+{refilled} refilled) is served: {}",
        served.len()
    );
    assert!(!limited.is_empty(), "beyond the burst a request is limited");
    let resp = limited.into_iter().next().unwrap();
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

/// Sign-in links against the real table: the code is traded once through the API (the
/// function's own role), its session key works until its end, a code bent to another tenant
/// is refused, and an expired session is deleted at the user's next sign-in.
#[tokio::test]
async fn a_sign_in_code_buys_one_session_key_and_expired_sessions_are_dropped() {
    use crm_shared::auth::Role;
    use crm_shared::store::UserStore;

    let store = stack().store().await;
    let shop = new_tenant(&store, "Signin shop").await;
    let other = new_tenant(&store, "Signin other").await;
    let tenant = &shop.tenant.tenant_id;
    let user = crm_shared::admin::create_user(&store, tenant, "Ana", "ana@example.com", Role::Agent)
        .await
        .unwrap();
    let gw = e2e_tests::start_gateway(stack().store_for("ApiFunction").await).await;
    let sessions = format!("{}/v1/sessions", gw.base);
    let code = crm_shared::admin::create_signin_code(&store, tenant, &user.user_id, chrono::Duration::minutes(15))
        .await
        .unwrap();
    let code = code.code.expose().to_owned();

    // Bent to another tenant, the code matches nothing (and is not used up by the attempt).
    let bent = code.replacen(tenant.as_str(), &other.tenant.tenant_id, 1);
    let (status, body) = api("POST", &sessions, None, Some(serde_json::json!({"code": bent}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_code")),
        "{body}"
    );

    let (status, session) = api("POST", &sessions, None, Some(serde_json::json!({"code": code}))).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["role"], "agent");
    let key = session["api_key"].as_str().unwrap();
    let (status, me) = api("GET", &format!("{}/v1/me", gw.base), Some(key), None).await;
    assert_eq!(
        (status, me["user"]["id"].as_str()),
        (200, Some(user.user_id.as_str())),
        "{me}"
    );
    let (status, _) = api("POST", &sessions, None, Some(serde_json::json!({"code": code}))).await;
    assert_eq!(status, 401, "a code works once");

    // A session that has ended is refused, then dropped when the user signs in again.
    let ended = crm_shared::admin::mint_user_key(&store, tenant, &user.user_id, Some(chrono::Duration::seconds(-1)))
        .await
        .unwrap();
    let (status, _) = api("GET", &format!("{}/v1/me", gw.base), Some(ended.api_key.expose()), None).await;
    assert_eq!(status, 401);
    let again = crm_shared::admin::create_signin_code(&store, tenant, &user.user_id, chrono::Duration::minutes(15))
        .await
        .unwrap();
    let (status, _) = api(
        "POST",
        &sessions,
        None,
        Some(serde_json::json!({"code": again.code.expose()})),
    )
    .await;
    assert_eq!(status, 201);
    let listed = store.get_user(tenant, &user.user_id).await.unwrap().unwrap().key_ids;
    assert_eq!(listed.len(), 2, "the first session and the new one: {listed:?}");
    assert!(!listed.contains(&ended.record.key_id));
    assert!(store.get_key(tenant, &ended.record.key_id).await.unwrap().is_none());
}
