//! Lambda entry point of the scheduled retention sweep: wiring only.

use crm_shared::privacy::Privacy;
use crm_shared::{aws, config::Env};
use lambda_runtime::{Error, run, service_fn};
use privacy_fn::{Deps, WorkerConfig, handle_schedule};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_env();
    let sdk = aws::load_sdk_config().await;
    let deps = Deps {
        privacy: Privacy::from_sdk(&sdk, &env.resources()),
        config: WorkerConfig::from_env(&env)?,
    };
    run(service_fn(|event| handle_schedule(&deps, event))).await
}
