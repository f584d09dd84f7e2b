//! The per-event CPU reference of the report: one DynamoDB `PutItem` per event and nothing
//! else, wired like the functions (current-thread runtime, default subscriber, client built
//! once) but with the SDK configured as a plain AWS sample does (`aws_config::load_defaults`,
//! `Client::new`): what the functions save with their own SDK settings (`crm_shared::aws`) is
//! measured against it, so it must not get them.

use aws_sdk_dynamodb::types::AttributeValue;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};

use crm_shared::config::Env;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let table = Env::from_env().resources().table;
    let client = aws_sdk_dynamodb::Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await);
    let client = &client;
    let table = table.as_str();
    run(service_fn(|event: LambdaEvent<Value>| async move {
        client
            .put_item()
            .table_name(table)
            .item("PK", AttributeValue::S("BENCH#putitem-ref".into()))
            .item("SK", AttributeValue::S(event.context.request_id.clone()))
            .item("payload", AttributeValue::S(event.payload.to_string()))
            .send()
            .await?;
        Ok::<_, Error>(json!({"stored": true}))
    }))
    .await
}
