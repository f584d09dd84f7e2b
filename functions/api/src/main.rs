//! Lambda entry point: wiring only (config → SDK client → deps → runtime).

use api_fn::{Deps, handle};
use crm_shared::blob::S3Blobs;
use crm_shared::jobs::SqsQueue;
use crm_shared::{aws, config::Env, cursor::CursorCodec, store::DynamoStore};
use lambda_http::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    crm_shared::contact::warm_phone_metadata_in_background();
    let sdk = aws::load_sdk_config().await;
    // Resolved once per execution environment, before the first request.
    let env = crm_shared::secrets::resolve(Env::from_env(), &sdk, &["CURSOR_SECRET"]).await?;
    let cursors = CursorCodec::new(env.cursor_secret()?.expose());
    let resources = env.resources();
    let privacy = crm_shared::privacy::Privacy::from_sdk(&sdk, &resources);
    // Template create, delete and sync call Meta with the tenant's token.
    let graph = crm_shared::graph::GraphClient::new(&env.graph()?)?;
    let tokens = crm_shared::kms::TokenCipher::from_sdk(&sdk, crm_shared::kms::token_key_id(&env));
    // One SQS client (built on first use) for both queues the API sends to.
    let sqs = aws::lazy_sqs_client(&sdk);
    let deps = Deps::new(
        DynamoStore::new(aws::dynamodb_client(&sdk), resources.table).with_token_cipher(tokens),
        cursors,
        S3Blobs::new(aws::lazy_s3_client(&sdk), resources.media_bucket),
        SqsQueue::new(sqs.clone(), resources.outbound_queue_url),
    )
    .with_privacy(privacy)
    .with_webhooks(api_fn::routes::Webhooks {
        queue: SqsQueue::new(sqs, resources.webhook_delivery_queue_url.clone()),
        pusher: crm_shared::events::push::Pusher::new(env.webhook_url_policy()),
    })
    .with_graph(graph)
    .with_quota(env.tenant_quota()?);
    run(service_fn(|req| handle(&deps, req))).await
}
