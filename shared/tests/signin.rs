//! Sign-in links over the in-memory store: a code works once, only for an active user, and
//! its session key expires; expired sessions leave the user's key list at the next sign-in.

use chrono::{Duration, Utc};

use crm_shared::admin::{self, SigninError, UserError};
use crm_shared::auth::{self, Role};
use crm_shared::store::{ApiKeyStore, UserStore};
use crm_shared::tenant::NewTenant;
use crm_shared::testing::MemStore;

async fn tenant_with_user(store: &MemStore) -> (String, String) {
    let new = NewTenant::validated("Shop", "100000000000777", "200000000000777", "token").unwrap();
    let tenant = admin::create_tenant(store, new).await.unwrap().tenant.tenant_id;
    let user = admin::create_user(store, &tenant, "Ana", "ana@example.com", Role::Agent)
        .await
        .unwrap();
    (tenant, user.user_id)
}

#[tokio::test]
async fn a_code_buys_one_session_key_with_the_users_role_that_expires() {
    let store = MemStore::new();
    let (tenant, user) = tenant_with_user(&store).await;
    let code = admin::create_signin_code(&store, &tenant, &user, Duration::minutes(15))
        .await
        .unwrap();
    let code = code.code.expose().to_owned();
    assert!(auth::parse_key(&code).is_none(), "a code is not a key");

    let session = admin::redeem_signin_code(&store, &code).await.unwrap();
    assert_eq!(session.record.role, Role::Agent);
    assert_eq!(session.record.user_id.as_deref(), Some(user.as_str()));
    let end = session.record.expires_at.expect("a session key ends");
    assert!(end > Utc::now() + Duration::hours(11) && end <= Utc::now() + Duration::hours(12));
    assert!(session.record.is_usable_at(Utc::now()));
    assert!(!session.record.is_usable_at(end), "refused from its end on");
    assert!(
        auth::parse_token(session.api_key.expose(), auth::SIGNIN_PREFIX).is_none(),
        "a key is not a code"
    );

    assert!(
        matches!(
            admin::redeem_signin_code(&store, &code).await,
            Err(SigninError::InvalidCode)
        ),
        "once only"
    );
}

#[tokio::test]
async fn wrong_expired_or_malformed_codes_and_disabled_users_get_nothing() {
    let store = MemStore::new();
    let (tenant, user) = tenant_with_user(&store).await;
    let code = admin::create_signin_code(&store, &tenant, &user, Duration::minutes(15))
        .await
        .unwrap();
    let real = code.code.expose().to_owned();
    let forged = format!(
        "{}{}",
        &real[..real.len() - 1],
        if real.ends_with('0') { '1' } else { '0' }
    );
    for bad in [forged.as_str(), "wcrs_x_y_z", "", "not a code"] {
        assert!(
            matches!(
                admin::redeem_signin_code(&store, bad).await,
                Err(SigninError::InvalidCode)
            ),
            "{bad:?}"
        );
    }
    // A wrong guess does not burn the real code.
    admin::redeem_signin_code(&store, &real).await.unwrap();

    let gone = admin::create_signin_code(&store, &tenant, &user, Duration::seconds(0))
        .await
        .unwrap();
    assert!(matches!(
        admin::redeem_signin_code(&store, gone.code.expose()).await,
        Err(SigninError::InvalidCode)
    ));

    let later = admin::create_signin_code(&store, &tenant, &user, Duration::minutes(5))
        .await
        .unwrap();
    let before = store.get_user(&tenant, &user).await.unwrap().unwrap();
    let mut after = before.clone();
    after.status = crm_shared::user::UserStatus::Disabled;
    after.updated_at = Utc::now();
    store.update_user(&before, &after).await.unwrap();
    assert!(matches!(
        admin::redeem_signin_code(&store, later.code.expose()).await,
        Err(SigninError::User(UserError::Disabled))
    ));
    assert!(matches!(
        admin::create_signin_code(&store, &tenant, &user, Duration::minutes(5)).await,
        Err(UserError::Disabled)
    ));
}

#[tokio::test]
async fn expired_sessions_leave_the_users_key_list_at_the_next_sign_in() {
    let store = MemStore::new();
    let (tenant, user) = tenant_with_user(&store).await;
    let lasting = admin::create_user_key(&store, &tenant, &user).await.unwrap();
    let ended = admin::mint_user_key(&store, &tenant, &user, Some(Duration::seconds(-1)))
        .await
        .unwrap();
    let listed = store.get_user(&tenant, &user).await.unwrap().unwrap().key_ids;
    assert_eq!(listed, vec![lasting.record.key_id.clone(), ended.record.key_id.clone()]);

    let fresh = admin::mint_user_key(&store, &tenant, &user, Some(Duration::hours(12)))
        .await
        .unwrap();
    let listed = store.get_user(&tenant, &user).await.unwrap().unwrap().key_ids;
    assert_eq!(listed, vec![lasting.record.key_id.clone(), fresh.record.key_id.clone()]);
    assert!(store.get_key(&tenant, &ended.record.key_id).await.unwrap().is_none());
    assert!(store.get_key(&tenant, &lasting.record.key_id).await.unwrap().is_some());
}
