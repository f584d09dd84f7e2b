//! Lambda entry point of the overflow consumer: wiring only.

use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, store::DynamoStore};
use lambda_runtime::{Error, run, service_fn};
use webhook_fn::{Limits, Processor, handle_overflow};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    crm_shared::contact::warm_phone_metadata_in_background();
    let env = Env::from_env();
    let limits = Limits::from_env(&env)?;
    let resources = env.resources();
    let sdk = aws::load_sdk_config().await;
    let processor = Processor::new(
        DynamoStore::new(aws::dynamodb_client(&sdk), resources.table),
        SqsQueue::new(aws::lazy_sqs_client(&sdk), resources.media_queue_url),
    )
    .with_limits(limits);
    run(service_fn(|event| handle_overflow(&processor, event))).await
}
