//! Lambda entry point of the send sweeper (scheduled): wiring only.

use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, store::DynamoStore};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_env();
    let resources = env.resources();
    let sdk = aws::load_sdk_config().await;
    let store = DynamoStore::new(aws::dynamodb_client(&sdk), resources.table);
    let queue = SqsQueue::new(aws::lazy_sqs_client(&sdk), resources.outbound_queue_url);
    run(service_fn(|_: LambdaEvent<serde_json::Value>| async {
        let report = sender_fn::sweep::sweep(&store, &queue, chrono::Utc::now()).await?;
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
