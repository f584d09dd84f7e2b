//! Lambda entry point: wiring only.

use crm_shared::graph::GraphClient;
use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, store::DynamoStore};
use lambda_runtime::{Error, run, service_fn};
use sender_fn::{Deps, SenderConfig, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_env();
    let resources = env.resources();
    let graph = GraphClient::new(&env.graph()?)?;
    let sdk = aws::load_sdk_config().await;
    let tokens = crm_shared::kms::TokenCipher::from_sdk(&sdk, crm_shared::kms::token_key_id(&env));
    let deps = Deps::new(
        DynamoStore::new(aws::dynamodb_client(&sdk), resources.table).with_token_cipher(tokens),
        graph,
        SqsQueue::new(aws::lazy_sqs_client(&sdk), resources.outbound_queue_url),
        SenderConfig {
            max_receives: env.send_max_receives()?,
            rate_per_second: env.send_rate_per_second()?,
            ..SenderConfig::default()
        },
    );
    run(service_fn(|event| handle(&deps, event))).await
}
