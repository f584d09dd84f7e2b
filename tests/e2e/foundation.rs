//! Tenants, routing, API keys and the auth layer, through the local gateway and `crmctl`.

use std::process::Command;

use e2e_tests::{new_tenant, stack, start_gateway, unique_numeric_id};
use serde_json::{Value, json};

use crm_shared::admin;
use crm_shared::auth::Role;
use crm_shared::store::{StoreError, TenantStore};
use crm_shared::tenant::NewTenant;

async fn call(method: &str, url: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body.to_string());
    }
    let resp = req.send().await.expect("gateway answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn tenant_creation_routes_its_phone_number_and_refuses_a_taken_one() {
    let store = stack().store().await;
    let created = new_tenant(&store, "Acme").await;
    let t = &created.tenant;
    assert_eq!(
        store.tenant_for_phone_number(&t.phone_number_id).await.unwrap(),
        Some(t.tenant_id.clone())
    );
    assert_eq!(store.tenant_for_phone_number(&unique_numeric_id()).await.unwrap(), None);
    assert_eq!(store.get_tenant(&t.tenant_id).await.unwrap().unwrap().name, "Acme");
    assert_eq!(
        store.graph_token(&t.tenant_id).await.unwrap().unwrap().expose(),
        "test-graph-token"
    );

    let again = NewTenant::validated("Copycat", &t.phone_number_id, "42", "tok").unwrap();
    match admin::create_tenant(&store, again).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("already routed"), "{msg}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The refused tenant left nothing behind: the number still routes to the first tenant.
    assert_eq!(
        store.tenant_for_phone_number(&t.phone_number_id).await.unwrap(),
        Some(t.tenant_id.clone())
    );
}

#[tokio::test]
async fn api_keys_authenticate_and_roles_are_enforced() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let created = new_tenant(&store, "Keys Inc").await;
    let admin_key = created.api_key.expose().to_owned();
    let url = format!("{}/v1/tenant", gw.base);

    let (status, body) = call("GET", &url, Some(&admin_key), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant_id"], created.tenant.tenant_id);
    assert_eq!(body["name"], "Keys Inc");
    assert_eq!(body["role"], "admin");
    assert!(body.get("access_token").is_none() && !body.to_string().contains("test-graph-token"));

    // Missing, malformed, unknown and wrong-secret keys are all 401 with the JSON error body.
    let (status, body) = call("GET", &url, None, None).await;
    assert_eq!(status, 401);
    assert_error(&body, "unauthorized");
    let (status, _) = call("GET", &url, Some("not-a-key"), None).await;
    assert_eq!(status, 401);
    let unknown = crm_shared::auth::mint_key(&created.tenant.tenant_id);
    let (status, _) = call("GET", &url, Some(unknown.plaintext.expose()), None).await;
    assert_eq!(status, 401);
    let mut wrong_secret = admin_key.clone();
    wrong_secret.pop();
    wrong_secret.push(if admin_key.ends_with('0') { '1' } else { '0' });
    let (status, _) = call("GET", &url, Some(&wrong_secret), None).await;
    assert_eq!(status, 401);
    // Unknown routes are not revealed without a key.
    let (status, _) = call("GET", &format!("{}/v1/nothing-here", gw.base), None, None).await;
    assert_eq!(status, 401);
    let (status, body) = call("GET", &format!("{}/v1/nothing-here", gw.base), Some(&admin_key), None).await;
    assert_eq!(status, 404);
    assert_error(&body, "route_not_found");

    // A viewer reads but may not use admin routes.
    let viewer = admin::create_api_key(&store, &created.tenant.tenant_id, Role::Viewer)
        .await
        .unwrap();
    let viewer_key = viewer.api_key.expose();
    let (status, body) = call("GET", &url, Some(viewer_key), None).await;
    assert_eq!((status, body["role"].clone()), (200, json!("viewer")));
    let (status, body) = call("GET", &format!("{}/v1/apikeys", gw.base), Some(viewer_key), None).await;
    assert_eq!(status, 403);
    assert_error(&body, "forbidden");
    let agent = admin::create_api_key(&store, &created.tenant.tenant_id, Role::Agent)
        .await
        .unwrap();
    let (status, _) = call(
        "POST",
        &format!("{}/v1/apikeys", gw.base),
        Some(agent.api_key.expose()),
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(status, 403);

    // Revocation takes effect on the next request.
    admin::revoke_api_key(&store, &created.tenant.tenant_id, &viewer.record.key_id)
        .await
        .unwrap();
    let (status, body) = call("GET", &url, Some(viewer_key), None).await;
    assert_eq!(status, 401);
    assert_error(&body, "unauthorized");
    // Admin-created keys work; last use is recorded.
    let (status, body) = call(
        "POST",
        &format!("{}/v1/apikeys", gw.base),
        Some(&admin_key),
        Some(json!({"role": "agent"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let new_key = body["api_key"].as_str().unwrap().to_owned();
    let (status, _) = call("GET", &url, Some(&new_key), None).await;
    assert_eq!(status, 200);
    let (status, body) = call(
        "POST",
        &format!("{}/v1/apikeys", gw.base),
        Some(&admin_key),
        Some(json!({"role": "root"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_error(&body, "invalid_body");
    let record = crm_shared::store::ApiKeyStore::get_key(&store, &created.tenant.tenant_id, &created.key_id)
        .await
        .unwrap()
        .unwrap();
    assert!(record.last_used_at.is_some());
}

#[tokio::test]
async fn one_tenants_key_never_reaches_another_tenants_data() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let a = new_tenant(&store, "Tenant A").await;
    let b = new_tenant(&store, "Tenant B").await;
    let a_key = a.api_key.expose();

    let (_, body) = call("GET", &format!("{}/v1/tenant", gw.base), Some(a_key), None).await;
    assert_eq!(body["tenant_id"], a.tenant.tenant_id);

    let (status, body) = call("GET", &format!("{}/v1/apikeys", gw.base), Some(a_key), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.key_id.as_str()]);
    assert!(!body.to_string().contains("hash"));

    // B's key id, addressed with A's key: not found, and B's key still works.
    let (status, body) = call(
        "DELETE",
        &format!("{}/v1/apikeys/{}", gw.base, b.key_id),
        Some(a_key),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let (status, _) = call("GET", &format!("{}/v1/tenant", gw.base), Some(b.api_key.expose()), None).await;
    assert_eq!(status, 200);

    // A key whose embedded tenant id is swapped for another tenant's does not authenticate.
    let forged = a_key.replace(&a.tenant.tenant_id, &b.tenant.tenant_id);
    let (status, _) = call("GET", &format!("{}/v1/tenant", gw.base), Some(&forged), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn key_listing_paginates_with_cursors_bound_to_the_tenant() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let a = new_tenant(&store, "Pager").await;
    let b = new_tenant(&store, "Other").await;
    for _ in 0..4 {
        admin::create_api_key(&store, &a.tenant.tenant_id, Role::Viewer)
            .await
            .unwrap();
    }
    let list = format!("{}/v1/apikeys", gw.base);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{list}?limit=2&cursor={c}"),
            None => format!("{list}?limit=2"),
        };
        let (status, body) = call("GET", &url, Some(a.api_key.expose()), None).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|k| k["key_id"].as_str().unwrap().to_owned()));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 5, "pagination does not end");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "{seen:?}");

    let (_, first) = call("GET", &format!("{list}?limit=2"), Some(a.api_key.expose()), None).await;
    let a_cursor = first["next_cursor"].as_str().unwrap();
    // Another tenant cannot use it, and an edited one is refused.
    let (status, body) = call(
        "GET",
        &format!("{list}?cursor={a_cursor}"),
        Some(b.api_key.expose()),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_error(&body, "invalid_cursor");
    let mut edited = a_cursor.to_owned();
    edited.insert(5, 'x');
    let (status, _) = call(
        "GET",
        &format!("{list}?cursor={edited}"),
        Some(a.api_key.expose()),
        None,
    )
    .await;
    assert_eq!(status, 400);
    for bad in ["0", "101", "x"] {
        let (status, body) = call("GET", &format!("{list}?limit={bad}"), Some(a.api_key.expose()), None).await;
        assert_eq!(status, 400);
        assert_error(&body, "invalid_limit");
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
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn crmctl_manages_tenants_and_keys_as_the_contract_says() {
    let store = stack().store().await;
    let gw = start_gateway(store.clone()).await;
    let token_file = std::env::temp_dir().join(format!("wcrm-token-{}", unique_numeric_id()));
    std::fs::write(&token_file, "EAAG-cli-token\n").unwrap();
    let pnid = unique_numeric_id();
    let token_path = token_file.to_str().unwrap();

    let (ok, out, err) = crmctl(&[
        "tenant",
        "create",
        "--name",
        "CLI Co",
        "--phone-number-id",
        &pnid,
        "--waba-id",
        "77",
        "--access-token-file",
        token_path,
    ]);
    assert!(ok, "{err}");
    let tenant_id = out["tenant_id"].as_str().expect("tenant_id").to_owned();
    let admin_key = out["api_key"].as_str().expect("api_key").to_owned();
    assert!(!err.contains("EAAG-cli-token") && !out.to_string().contains("EAAG-cli-token"));
    let (status, body) = call("GET", &format!("{}/v1/tenant", gw.base), Some(&admin_key), None).await;
    assert_eq!((status, body["role"].clone()), (200, json!("admin")));
    assert_eq!(
        store.graph_token(&tenant_id).await.unwrap().unwrap().expose(),
        "EAAG-cli-token"
    );

    // The same phone number id again: refused with a message, non-zero exit, nothing on stdout.
    let (ok, out, err) = crmctl(&[
        "tenant",
        "create",
        "--name",
        "Dup",
        "--phone-number-id",
        &pnid,
        "--waba-id",
        "78",
        "--access-token-file",
        token_path,
    ]);
    assert!(!ok);
    assert_eq!(out, Value::Null);
    assert!(err.contains("already routed"), "{err}");

    let (ok, out, err) = crmctl(&["apikey", "create", "--tenant", &tenant_id, "--role", "agent"]);
    assert!(ok, "{err}");
    let agent_key = out["api_key"].as_str().unwrap().to_owned();
    let (status, body) = call("GET", &format!("{}/v1/tenant", gw.base), Some(&agent_key), None).await;
    assert_eq!((status, body["role"].clone()), (200, json!("agent")));
    let key_id = crm_shared::auth::parse_key(&agent_key).unwrap().key_id;

    let (ok, _, err) = crmctl(&["apikey", "revoke", "--tenant", &tenant_id, "--key-id", &key_id]);
    assert!(ok, "{err}");
    let (status, _) = call("GET", &format!("{}/v1/tenant", gw.base), Some(&agent_key), None).await;
    assert_eq!(status, 401);

    let (ok, _, err) = crmctl(&[
        "apikey",
        "revoke",
        "--tenant",
        &tenant_id,
        "--key-id",
        &crm_shared::ids::new_id(),
    ]);
    assert!(!ok && err.contains("no key"), "{err}");
    let (ok, _, err) = crmctl(&[
        "apikey",
        "create",
        "--tenant",
        &crm_shared::ids::new_id(),
        "--role",
        "viewer",
    ]);
    assert!(!ok && err.contains("no active tenant"), "{err}");
    let (ok, _, _) = crmctl(&["apikey", "create", "--tenant", &tenant_id, "--role", "root"]);
    assert!(!ok);
    std::fs::remove_file(token_file).ok();
}
