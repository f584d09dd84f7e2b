//! Lambda entry point of the hourly template reconcile: wiring only.

use crm_shared::graph::GraphClient;
use crm_shared::{aws, config::Env, store::DynamoStore};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_env();
    let sdk = aws::load_sdk_config().await;
    let graph = GraphClient::new(&env.graph()?)?;
    let tokens = crm_shared::kms::TokenCipher::from_sdk(&sdk, crm_shared::kms::token_key_id(&env));
    let store = DynamoStore::new(aws::dynamodb_client(&sdk), env.resources().table).with_token_cipher(tokens);
    run(service_fn(|_: LambdaEvent<Value>| {
        api_fn::schedule::reconcile(&store, &graph)
    }))
    .await
}
