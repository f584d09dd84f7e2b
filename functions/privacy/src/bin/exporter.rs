//! Lambda entry point of the exporter: wiring only.

use crm_shared::privacy::Privacy;
use crm_shared::{aws, config::Env};
use lambda_runtime::{Error, run, service_fn};
use privacy_fn::{Deps, WorkerConfig, handle_exports};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_env();
    let sdk = aws::load_sdk_config().await;
    let deps = Deps {
        privacy: Privacy::from_sdk(&sdk, &env.resources()),
        config: WorkerConfig::from_env(&env)?,
    };
    run(service_fn(|event| handle_exports(&deps, event))).await
}
