//! Lambda entry point of the webhook delivery worker: wiring only.

use crm_shared::events::push::Pusher;
use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, store::DynamoStore};
use events_fn::deliver::{Deps, handle};
use lambda_runtime::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_env();
    let resources = env.resources();
    let sdk = aws::load_sdk_config().await;
    let deps = Deps::new(
        DynamoStore::new(aws::dynamodb_client(&sdk), resources.table),
        SqsQueue::new(aws::lazy_sqs_client(&sdk), resources.webhook_delivery_queue_url),
        Pusher::new(env.webhook_url_policy()),
    );
    run(service_fn(|event| handle(&deps, event))).await
}
