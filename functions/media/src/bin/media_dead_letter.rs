//! Lambda entry point of the media dead-letter consumer: wiring only.

use crm_shared::{aws, config::Env, store::DynamoStore};
use lambda_runtime::{Error, run, service_fn};
use media_fn::dead_letter::{DeadLetterDeps, handle_dead_letters};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_env();
    let sdk = aws::load_sdk_config().await;
    let deps = DeadLetterDeps {
        store: DynamoStore::new(aws::dynamodb_client(&sdk), env.resources().table),
    };
    run(service_fn(|event| handle_dead_letters(&deps, event))).await
}
