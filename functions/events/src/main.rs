//! Lambda entry point of the events function: wiring only.

use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, store::DynamoStore};
use events_fn::record::{Deps, handle};
use lambda_runtime::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let resources = Env::from_env().resources();
    let sdk = aws::load_sdk_config().await;
    let sqs = aws::lazy_sqs_client(&sdk);
    let deps = Deps::new(
        DynamoStore::new(aws::dynamodb_client(&sdk), resources.table),
        SqsQueue::new(sqs.clone(), resources.webhook_delivery_queue_url),
    )
    .with_automations(SqsQueue::new(sqs, resources.outbound_queue_url));
    run(service_fn(|event| handle(&deps, event))).await
}
