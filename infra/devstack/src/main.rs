//! `make dev`: the whole backend on one machine. Starts (or reuses, when `AWS_ENDPOINT_URL`
//! is set) the local AWS endpoint, creates the template's resources, seeds a demo tenant,
//! serves the HTTP routes through the real handlers and stops everything on Ctrl-C.

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use tokio::net::TcpListener;

use crm_shared::blob::S3Blobs;
use crm_shared::config::Env;
use crm_shared::cursor::CursorCodec;
use crm_shared::events::push::Pusher;
use crm_shared::graph::GraphClient;
use crm_shared::jobs::SqsQueue;
use crm_shared::media_url::MediaHosts;
use crm_shared::store::DynamoStore;
use crm_shared::tenant::NewTenant;
use crm_shared::{admin, aws};
use devstack::gateway::{self, Handlers};
use devstack::moto::MotoServer;
use devstack::sandbox::{self, Sandbox};
use devstack::{poller, provision, template, workspace_root};
use sender_fn::SenderConfig;

const DEV_APP_SECRET: &str = "dev-app-secret-change-me";
const DEV_VERIFY_TOKEN: &str = "dev-verify-token";
const DEMO_PHONE_NUMBER_ID: &str = "100000000000001";
const DEMO_WABA_ID: &str = "200000000000001";
const DEMO_GRAPH_TOKEN: &str = "demo-graph-access-token";

type BoxError = Box<dyn std::error::Error>;

fn port(env: &Env, name: &'static str, default: u16) -> Result<u16, BoxError> {
    Ok(env.bounded(name, default, 0..=u16::MAX)?)
}

/// Polls a queue forever and hands each batch to its handler, as Lambda's SQS event source
/// mapping does.
fn spawn_queue<F, Fut>(name: &'static str, sqs: aws_sdk_sqs::Client, url: String, handler: F)
where
    F: Fn(LambdaEvent<SqsEvent>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<SqsBatchResponse, lambda_runtime::Error>> + Send,
{
    tokio::spawn(async move {
        loop {
            if let Err(e) = poller::poll_once(&sqs, &url, 5, &handler).await {
                eprintln!("devstack: {name} queue poll failed: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    });
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    lambda_http::tracing::init_default_subscriber();
    if let Err(err) = run().await {
        eprintln!("devstack: {err}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let env = Env::from_env();
    let aws_port = port(&env, "LOCAL_AWS_PORT", 4566)?;
    let api_port = port(&env, "LOCAL_API_PORT", 3000)?;
    let sandbox_port = port(&env, "LOCAL_SANDBOX_PORT", 4010)?;
    let app_secret = env.get("WHATSAPP_APP_SECRET").unwrap_or(DEV_APP_SECRET).to_owned();
    let verify_token = env.get("WHATSAPP_VERIFY_TOKEN").unwrap_or(DEV_VERIFY_TOKEN).to_owned();
    let root = workspace_root();
    // Cursors only need to outlive this process (the local stack is in memory).
    let cursor_secret = env
        .get("CURSOR_SECRET")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}{}", crm_shared::ids::new_id(), crm_shared::ids::new_id()));

    let (_moto, endpoint) = match env.get("AWS_ENDPOINT_URL") {
        Some(url) => (None, url.to_owned()),
        None => {
            eprintln!("devstack: starting moto on 127.0.0.1:{aws_port}");
            let moto = MotoServer::start(&root, Some(aws_port))?;
            let url = moto.endpoint_url();
            (Some(moto), url)
        }
    };
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new(env.get("AWS_REGION").unwrap_or("us-east-1").to_owned()))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "devstack",
        ))
        .load()
        .await;

    let resources = template::load(&root.join("template.yaml"))?;
    // The functions read these from (local) Secrets Manager, as on AWS.
    let secret_values = std::collections::BTreeMap::from([
        ("MetaAppSecret".to_owned(), app_secret.clone()),
        ("MetaVerifyToken".to_owned(), verify_token.clone()),
        ("CursorKey".to_owned(), cursor_secret.clone()),
    ]);
    let provisioned = provision::provision_with_secrets(&sdk, &env, &resources, &secret_values).await?;
    for (logical, name) in provisioned.tables.iter().chain(&provisioned.buckets) {
        eprintln!("devstack: {logical} → {name}");
    }
    for (logical, url) in &provisioned.queue_urls {
        eprintln!("devstack: {logical} → {url}");
    }

    let table = provisioned
        .tables
        .get("DataTable")
        .cloned()
        .ok_or("template has no DataTable")?;
    let function_env = Env::from_map(provisioned.function_env());
    let store = DynamoStore::new(aws::dynamodb_client(&sdk), table).with_token_cipher(
        crm_shared::kms::TokenCipher::from_sdk(&sdk, crm_shared::kms::token_key_id(&function_env)),
    );
    let demo = NewTenant::validated("Demo Business", DEMO_PHONE_NUMBER_ID, DEMO_WABA_ID, DEMO_GRAPH_TOKEN)?;
    let demo = admin::create_tenant(&store, demo).await?;

    let media_queue_url = provisioned
        .queue_urls
        .get("MediaQueue")
        .cloned()
        .ok_or("template has no MediaQueue")?;
    let sqs = aws::sqs_client(&sdk);
    let outbound_queue_url = provisioned
        .queue_urls
        .get("OutboundQueue")
        .cloned()
        .ok_or("template has no OutboundQueue")?;
    let media_bucket = provisioned
        .buckets
        .get("MediaBucket")
        .cloned()
        .ok_or("template has no MediaBucket")?;
    let overflow_queue_url = provisioned
        .queue_urls
        .get("WebhookOverflowQueue")
        .cloned()
        .ok_or("template has no WebhookOverflowQueue")?;
    let delivery_queue_url = provisioned
        .queue_urls
        .get("WebhookDeliveryQueue")
        .cloned()
        .ok_or("template has no WebhookDeliveryQueue")?;
    let webhook_limits = webhook_fn::Limits::from_env(&env)?;
    let media_queue = SqsQueue::new(sqs.clone(), &media_queue_url);
    let secrets = crm_shared::secrets::resolve(
        function_env.clone(),
        &sdk,
        &["WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"],
    )
    .await?
    .webhook_secrets()?;
    let cursor_secret = crm_shared::secrets::resolve(function_env.clone(), &sdk, &["CURSOR_SECRET"])
        .await?
        .cursor_secret()?
        .expose()
        .to_owned();
    // Exports, erasure and retention: the same resources the functions get from `Globals`.
    let privacy = crm_shared::privacy::Privacy::from_sdk(&sdk, &function_env.resources());
    // Meta: the local sandbox unless GRAPH_API_BASE points elsewhere.
    let sandbox_url = match env.get("GRAPH_API_BASE") {
        Some(url) => {
            eprintln!("devstack: GRAPH_API_BASE is set; Graph calls go to {url} and no sandbox is started");
            None
        }
        None => {
            let listener = TcpListener::bind(("127.0.0.1", sandbox_port))
                .await
                .map_err(|e| format!("cannot listen on 127.0.0.1:{sandbox_port}: {e}"))?;
            let url = format!("http://127.0.0.1:{sandbox_port}");
            let sandbox = Sandbox::new(
                store.clone(),
                &format!("http://127.0.0.1:{api_port}/webhooks/whatsapp"),
                &app_secret,
                &url,
            );
            let delay = env.bounded("SANDBOX_STATUS_DELAY_MS", 150, 0..=60_000)?;
            let sandbox = Sandbox::with_status_delay(sandbox, std::time::Duration::from_millis(delay));
            tokio::spawn(sandbox::serve(listener, sandbox));
            Some(url)
        }
    };
    let graph = match &sandbox_url {
        Some(url) => Env::from_map([("GRAPH_API_BASE", url.as_str())]).graph()?,
        None => env.graph()?,
    };
    let graph = GraphClient::new(&graph)?;
    let graph_for_schedule = graph.clone();
    let handlers = Arc::new(Handlers {
        api: api_fn::Deps::new(
            store.clone(),
            CursorCodec::new(&cursor_secret),
            S3Blobs::new(aws::s3_client(&sdk), media_bucket.clone()),
            SqsQueue::new(sqs.clone(), &outbound_queue_url),
        )
        .with_privacy(privacy.clone())
        .with_quota(env.tenant_quota()?)
        .with_webhooks(api_fn::routes::Webhooks {
            queue: SqsQueue::new(sqs.clone(), &delivery_queue_url),
            pusher: Pusher::new(env.webhook_url_policy()),
        })
        .with_graph(graph.clone()),
        webhook: webhook_fn::Deps::new(
            store.clone(),
            media_queue.clone(),
            SqsQueue::new(sqs.clone(), &overflow_queue_url),
            secrets,
        )
        .with_limits(webhook_limits),
        console: Some(devstack::console::StaticSite::new(root.join("console"), &endpoint)),
    });

    // The queues' event source mappings.
    let media_deps = Arc::new(media_fn::Deps {
        store: store.clone(),
        graph: graph.clone(),
        blobs: S3Blobs::new(aws::s3_client(&sdk), media_bucket.clone()),
        retry: media_queue.clone(),
        max_receives: env.media_max_receives()?,
        // The sandbox serves media on http://127.0.0.1:port; anything else gets the configured
        // (by default Meta's, https-only) hosts.
        media_hosts: if sandbox_url.is_some() {
            MediaHosts::loopback()
        } else {
            env.media_hosts()?
        },
        buffers: media_fn::PartBudget::default(),
    });
    // The webhook's overflow: its own consumer, the same processing.
    let overflow = Arc::new(webhook_fn::Processor::new(store.clone(), media_queue.clone()).with_limits(webhook_limits));
    spawn_queue("webhook-overflow", sqs.clone(), overflow_queue_url, move |event| {
        let processor = overflow.clone();
        async move { webhook_fn::handle_overflow(&processor, event).await }
    });
    spawn_queue("media", sqs.clone(), media_queue_url, move |event| {
        let deps = media_deps.clone();
        async move { media_fn::handle(&deps, event).await }
    });
    // MediaDeadLetterFunction's mapping: dead-lettered media jobs mark their media failed.
    let media_dlq_url = provisioned
        .queue_urls
        .get("MediaDLQ")
        .cloned()
        .ok_or("template has no MediaDLQ")?;
    let dead_letter_deps = Arc::new(media_fn::dead_letter::DeadLetterDeps { store: store.clone() });
    spawn_queue("media-dead-letter", sqs.clone(), media_dlq_url, move |event| {
        let deps = dead_letter_deps.clone();
        async move { media_fn::dead_letter::handle_dead_letters(&deps, event).await }
    });
    let sender_deps = Arc::new(sender_fn::Deps::new(
        store.clone(),
        graph,
        SqsQueue::new(sqs.clone(), &outbound_queue_url),
        SenderConfig {
            max_receives: env.send_max_receives()?,
            rate_per_second: env.send_rate_per_second()?,
            ..SenderConfig::default()
        },
    ));
    spawn_queue("outbound", sqs.clone(), outbound_queue_url.clone(), move |event| {
        let deps = sender_deps.clone();
        async move { sender_fn::handle(&deps, event).await }
    });

    let privacy_deps = Arc::new(privacy_fn::Deps {
        privacy: privacy.clone(),
        config: privacy_fn::WorkerConfig::from_env(&env)?,
    });
    let deps = privacy_deps.clone();
    spawn_queue(
        "export",
        sqs.clone(),
        privacy.export_jobs.url().to_owned(),
        move |event| {
            let deps = deps.clone();
            async move { privacy_fn::handle_exports(&deps, event).await }
        },
    );
    let deps = privacy_deps.clone();
    spawn_queue(
        "erasure",
        sqs.clone(),
        privacy.erasure_jobs.url().to_owned(),
        move |event| {
            let deps = deps.clone();
            async move { privacy_fn::handle_erasures(&deps, event).await }
        },
    );
    // The event stream: the table's stream into the events function, its jobs into the
    // delivery worker (tenant endpoints on loopback only with WEBHOOK_ALLOW_LOOPBACK=true).
    let stream_arn = devstack::stream::stream_arn(&aws::dynamodb_client(&sdk), store.table()).await?;
    // Automated replies ride on the same stream and queue their replies for the sender.
    let events_deps = Arc::new(
        events_fn::record::Deps::new(store.clone(), SqsQueue::new(sqs.clone(), &delivery_queue_url))
            .with_automations(SqsQueue::new(sqs.clone(), &outbound_queue_url)),
    );
    tokio::spawn(devstack::stream::run(
        aws_sdk_dynamodbstreams::Client::new(&sdk),
        stream_arn,
        std::time::Duration::from_millis(100),
        move |event| {
            let deps = events_deps.clone();
            async move { events_fn::record::handle(&deps, event).await }
        },
    ));
    let delivery_deps = Arc::new(events_fn::deliver::Deps::new(
        store.clone(),
        SqsQueue::new(sqs.clone(), &delivery_queue_url),
        Pusher::new(env.webhook_url_policy()),
    ));
    spawn_queue(
        "webhook-delivery",
        sqs.clone(),
        delivery_queue_url.clone(),
        move |event| {
            let deps = delivery_deps.clone();
            async move { events_fn::deliver::handle(&deps, event).await }
        },
    );
    // The retention function's schedule, at the template's rate.
    let schedules = devstack::schedule::load(&root.join("template.yaml"))?;
    for rate in schedules.get("RetentionFunction").into_iter().flatten().copied() {
        let deps = privacy_deps.clone();
        eprintln!("devstack: retention sweep every {} s", rate.as_secs());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + rate, rate);
            loop {
                ticks.tick().await;
                let event = serde_json::json!({"source": "aws.events", "time": chrono::Utc::now()});
                let invocation = LambdaEvent::new(event, lambda_runtime::Context::default());
                if let Err(e) = privacy_fn::handle_schedule(&deps, invocation).await {
                    eprintln!("devstack: retention sweep failed: {e}");
                }
            }
        });
    }

    // The send sweeper's schedule, at the template's rate.
    for rate in schedules.get("SendSweepFunction").into_iter().flatten().copied() {
        let (store, queue) = (store.clone(), SqsQueue::new(sqs.clone(), &outbound_queue_url));
        eprintln!("devstack: send sweep every {} s", rate.as_secs());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + rate, rate);
            loop {
                ticks.tick().await;
                if let Err(e) = sender_fn::sweep::sweep(&store, &queue, chrono::Utc::now()).await {
                    eprintln!("devstack: send sweep failed: {e}");
                }
            }
        });
    }

    // The no-reply automation sweep's schedule, at the template's rate.
    for rate in schedules.get("NoReplySweepFunction").into_iter().flatten().copied() {
        let store = store.clone();
        let auto = events_fn::automate::Automations::new(SqsQueue::new(sqs.clone(), &outbound_queue_url));
        eprintln!("devstack: no-reply sweep every {} s", rate.as_secs());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + rate, rate);
            loop {
                ticks.tick().await;
                if let Err(e) = events_fn::automate::sweep_no_reply(&auto, &store, chrono::Utc::now()).await {
                    eprintln!("devstack: no-reply sweep failed: {e}");
                }
            }
        });
    }

    // The broadcast engine's schedule, at the template's rate.
    for rate in schedules.get("BroadcastFunction").into_iter().flatten().copied() {
        let (store, queue) = (store.clone(), SqsQueue::new(sqs.clone(), &outbound_queue_url));
        let files = crm_shared::objects::Bucket::new(
            aws::s3_client(&sdk),
            provisioned
                .buckets
                .get("ExportsBucket")
                .cloned()
                .ok_or("template has no ExportsBucket")?,
        );
        let config = crm_shared::broadcast::run::EngineConfig {
            rate_per_second: env.send_rate_per_second()?,
            run_secs: rate.as_secs().max(1) as u32,
            ..Default::default()
        };
        eprintln!("devstack: broadcast run every {} s", rate.as_secs());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + rate, rate);
            loop {
                ticks.tick().await;
                if let Err(e) =
                    crm_shared::broadcast::run::run_all(&store, &files, &queue, chrono::Utc::now(), &config).await
                {
                    eprintln!("devstack: broadcast run failed: {e}");
                }
            }
        });
    }

    // The template reconcile's schedule, at the template's rate.
    for rate in schedules.get("TemplateSyncFunction").into_iter().flatten().copied() {
        let (store, graph) = (store.clone(), graph_for_schedule.clone());
        eprintln!("devstack: template reconcile every {} s", rate.as_secs());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + rate, rate);
            loop {
                ticks.tick().await;
                if let Err(e) = api_fn::schedule::reconcile(&store, &graph).await {
                    eprintln!("devstack: template reconcile failed: {e}");
                }
            }
        });
    }

    let listener = TcpListener::bind(("127.0.0.1", api_port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{api_port}: {e}"))?;
    let server = tokio::spawn(gateway::serve(listener, handlers));

    let key = demo.api_key.expose();
    println!(
        r#"
WhatsApp CRM local stack is up.

  Web console      http://127.0.0.1:{api_port}/   (sign in with the demo API key)
  API gateway      http://127.0.0.1:{api_port}/v1
  AWS endpoint     {endpoint}   (moto)
  Demo tenant      {tenant} (phone number id {DEMO_PHONE_NUMBER_ID})
  Demo API key     {key}
  Meta sandbox     {sandbox}
  Verify token     {verify_token}
  App secret       {app_secret}

Try:
  curl -s -H "Authorization: Bearer {key}" http://127.0.0.1:{api_port}/v1/tenant
  curl -s "http://127.0.0.1:{api_port}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={verify_token}&hub.challenge=42"

A customer writes in (opens the 24 h window), then the business answers:
  cargo run -q --bin crmctl -- sandbox inbound --tenant {tenant} --from +447911123456 --text "hi"
  curl -s -X POST -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \
       -d '{{"to": "+447911123456", "type": "text", "text": {{"body": "Hello from the CRM"}}}}' \
       http://127.0.0.1:{api_port}/v1/messages

Watch the event stream (signed webhook deliveries; start with WEBHOOK_ALLOW_LOOPBACK=true make dev):
  cargo run -q --bin crmctl -- webhook listen --port 8787 --api http://127.0.0.1:{api_port} --api-key {key}

Operator CLI against this stack:
  export AWS_ENDPOINT_URL={endpoint} AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  cargo run -q --bin crmctl -- apikey create --tenant {tenant} --role viewer

Ctrl-C stops everything.
"#,
        tenant = demo.tenant.tenant_id,
        sandbox = sandbox_url.as_deref().unwrap_or("(not started: GRAPH_API_BASE is set)"),
    );

    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("devstack: stopping"),
        _ = server => eprintln!("devstack: gateway stopped"),
    }
    Ok(())
}
