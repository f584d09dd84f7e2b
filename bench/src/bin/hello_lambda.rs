//! Hello world on `lambda_runtime`: the cold-start and per-event baseline of the report.
//! Same shape as every function's `main` (current-thread runtime, default subscriber), built
//! with the same release profile; it only echoes the event back.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(event.payload)
    }))
    .await
}
