//! Lambda entry point of the broadcaster (scheduled every minute): wiring only. One run
//! advances every active broadcast (`crm_shared::broadcast::run`).

use crm_shared::broadcast::run::{EngineConfig, run_all};
use crm_shared::jobs::SqsQueue;
use crm_shared::objects::Bucket;
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
    // Uploaded audience files live in the exports bucket.
    let files = Bucket::new(aws::lazy_s3_client(&sdk), resources.exports_bucket);
    let config = EngineConfig {
        rate_per_second: env.send_rate_per_second()?,
        ..EngineConfig::default()
    };
    run(service_fn(|_: LambdaEvent<serde_json::Value>| async {
        let report = run_all(&store, &files, &queue, chrono::Utc::now(), &config).await?;
        tracing::info!(?report, "broadcast run");
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
