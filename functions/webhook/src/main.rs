//! Lambda entry point: wiring only.

use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, store::DynamoStore};
use lambda_http::{Error, run, service_fn};
use webhook_fn::{Deps, Limits, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    crm_shared::contact::warm_phone_metadata_in_background();
    let sdk = aws::load_sdk_config().await;
    // Resolved once per execution environment, before the first delivery.
    let env =
        crm_shared::secrets::resolve(Env::from_env(), &sdk, &["WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"]).await?;
    let secrets = env.webhook_secrets()?;
    let limits = Limits::from_env(&env)?;
    let resources = env.resources();
    let sqs = aws::lazy_sqs_client(&sdk);
    let deps = Deps::new(
        DynamoStore::new(aws::dynamodb_client(&sdk), resources.table),
        SqsQueue::new(sqs.clone(), resources.media_queue_url),
        SqsQueue::new(sqs, resources.webhook_overflow_queue_url),
        secrets,
    )
    .with_limits(limits);
    run(service_fn(|req| handle(&deps, req))).await
}
