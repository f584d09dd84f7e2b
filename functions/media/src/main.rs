//! Lambda entry point: wiring only.

use crm_shared::blob::S3Blobs;
use crm_shared::graph::GraphClient;
use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, store::DynamoStore};
use lambda_runtime::{Error, run, service_fn};
use media_fn::{Deps, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_env();
    let resources = env.resources();
    let graph = GraphClient::new(&env.graph()?)?;
    let sdk = aws::load_sdk_config().await;
    let deps = Deps {
        store: DynamoStore::new(aws::dynamodb_client(&sdk), resources.table).with_token_cipher(
            crm_shared::kms::TokenCipher::from_sdk(&sdk, crm_shared::kms::token_key_id(&env)),
        ),
        graph,
        blobs: S3Blobs::new(aws::lazy_s3_client(&sdk), resources.media_bucket),
        retry: SqsQueue::new(aws::lazy_sqs_client(&sdk), resources.media_queue_url),
        max_receives: env.media_max_receives()?,
        media_hosts: env.media_hosts()?,
        buffers: media_fn::PartBudget::default(),
    };
    run(service_fn(|event| handle(&deps, event))).await
}
