//! Lambda entry point: wiring only.

use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, store::DynamoStore};
use lambda_http::{Error, run, service_fn};
use webhook_fn::{Deps, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    crm_shared::contact::warm_phone_metadata_in_background();
    let env = Env::from_env();
    let secrets = env.webhook_secrets()?;
    let resources = env.resources();
    let sdk = aws::load_sdk_config().await;
    let deps = Deps::new(
        DynamoStore::new(aws::dynamodb_client(&sdk), resources.table),
        SqsQueue::new(aws::sqs_client(&sdk), resources.media_queue_url),
        secrets,
    );
    run(service_fn(|req| handle(&deps, req))).await
}
