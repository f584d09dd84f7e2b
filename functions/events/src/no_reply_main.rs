//! Lambda entry point of the no-reply sweep (scheduled every minute): wiring only.

use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, store::DynamoStore};
use events_fn::automate::{Automations, sweep_no_reply};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let resources = Env::from_env().resources();
    let sdk = aws::load_sdk_config().await;
    let store = DynamoStore::new(aws::dynamodb_client(&sdk), resources.table);
    let auto = Automations::new(SqsQueue::new(aws::lazy_sqs_client(&sdk), resources.outbound_queue_url));
    run(service_fn(|_: LambdaEvent<serde_json::Value>| async {
        let report = sweep_no_reply(&auto, &store, chrono::Utc::now()).await?;
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
