//! Test harness: one moto endpoint per test binary (on a free port, started here, never
//! skipped), resources provisioned from `template.yaml`, and helpers to reach them.
//!
//! IAM parity: every handler the tests run is wired with [`Stack::sdk_for`] its function's
//! logical id, which reaches moto through that function's IAM gate ([`proxy`]): each request is
//! checked against the function's policy statements in `template.yaml` ([`iam`]) and denied as
//! AWS would deny it. `crmctl` runs behind the gate of the template's `OperatorPolicy`. Only the
//! tests' own setup and assertions use [`Stack::sdk`] (straight to moto, unchecked).

pub mod expressions;
pub mod faults;
pub mod iam;
pub mod proxy;

use std::sync::OnceLock;

use aws_config::{BehaviorVersion, Region, SdkConfig};

use crm_shared::admin::{self, CreatedTenant};
use crm_shared::config::Env;
use crm_shared::cursor::CursorCodec;
use crm_shared::jobs::SqsQueue;

pub const TEST_CURSOR_SECRET: &str = "test-cursor-secret-0123456789abcdef";
use crm_shared::store::DynamoStore;
use crm_shared::tenant::NewTenant;
use devstack::moto::MotoServer;
use devstack::provision::{self, Provisioned};
use devstack::{template, workspace_root};

pub struct Stack {
    _moto: MotoServer,
    pub endpoint: String,
    pub provisioned: Provisioned,
    /// Principal (function logical id, `OperatorPolicy`) → its IAM gate's endpoint.
    pub gates: std::collections::BTreeMap<String, String>,
    pub policies: std::sync::Arc<iam::Policies>,
}

static STACK: OnceLock<Stack> = OnceLock::new();
static BULK_STACK: OnceLock<Stack> = OnceLock::new();
static EVENTS_STACK: OnceLock<Stack> = OnceLock::new();
static FAULTS_STACK: OnceLock<Stack> = OnceLock::new();

/// The shared local stack, started on first use.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(start_stack)
}

/// A second local stack for tests that write thousands of items (privacy: erasure, retention,
/// exports). The local endpoint serializes DynamoDB requests (infra/moto_server.py): on their
/// own endpoint, those tests do not queue the others' requests behind their bulk writes.
pub fn bulk_stack() -> &'static Stack {
    BULK_STACK.get_or_init(start_stack)
}

/// The stack of the event stream tests: its table's stream is read by [`event_stream`], which
/// records every change of the stack; on their own endpoint that work (and those tests' bulk
/// writes) never slows the other tests' requests, nor theirs the stream.
pub fn events_stack() -> &'static Stack {
    EVENTS_STACK.get_or_init(start_stack)
}

/// The stack of the fault suite's inbound scenario (1,500-odd requests): on its own endpoint it
/// neither waits behind the other tests' requests nor slows them.
pub fn faults_stack() -> &'static Stack {
    FAULTS_STACK.get_or_init(start_stack)
}

/// Held by each test of [`events_stack`]: their latency assertions (a fast endpoint served while
/// another hangs) must not share the endpoint with the 1,000-event test.
pub async fn events_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Held by each test on [`bulk_stack`] for its whole run: those tests drive the stack's export
/// and erasure queues and hold erasure leases themselves, so each must see only its own jobs.
pub async fn bulk_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn start_stack() -> Stack {
    {
        // Provisioning is async; run it on its own runtime in its own thread so this works
        // from inside any test's runtime.
        std::thread::spawn(|| {
            let root = workspace_root();
            let moto = MotoServer::start(&root, None).unwrap_or_else(|e| panic!("local AWS endpoint: {e}"));
            let endpoint = moto.endpoint_url();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let provisioned = rt.block_on(async {
                let sdk = sdk_config(&endpoint).await;
                let resources = template::load(&root.join("template.yaml")).expect("template parses");
                let secrets = std::collections::BTreeMap::from([
                    ("MetaAppSecret".to_owned(), TEST_APP_SECRET.to_owned()),
                    ("MetaVerifyToken".to_owned(), TEST_VERIFY_TOKEN.to_owned()),
                    ("CursorKey".to_owned(), TEST_CURSOR_SECRET.to_owned()),
                ]);
                provision::provision_with_secrets(&sdk, &Env::default(), &resources, &secrets)
                    .await
                    .expect("provisioning from template.yaml")
            });
            let policies = std::sync::Arc::new(
                iam::Policies::load(&root.join("template.yaml")).unwrap_or_else(|e| panic!("template policies: {e}")),
            );
            let mut principals: Vec<String> = policies.principals.keys().cloned().collect();
            principals.push(format!("{}NoGrants", proxy::PROBE_PREFIX));
            let gates = proxy::start(&principals, &endpoint, policies.clone());
            Stack {
                _moto: moto,
                endpoint,
                provisioned,
                gates,
                policies,
            }
        })
        .join()
        .expect("stack setup")
    }
}

/// SDK configuration for the local endpoint (one per test runtime).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}

impl Stack {
    /// Unchecked access for the tests' own setup and assertions (never for a handler).
    pub async fn sdk(&self) -> SdkConfig {
        sdk_config(&self.endpoint).await
    }

    /// The SDK configuration a function (or `OperatorPolicy`) runs with: through its IAM gate.
    pub async fn sdk_for(&self, principal: &str) -> SdkConfig {
        let gate = self
            .gates
            .get(principal)
            .unwrap_or_else(|| panic!("{principal} is no principal of template.yaml"));
        sdk_config(gate).await
    }

    /// The store a function's handler uses (its role's permissions; Graph tokens sealed with
    /// the stack's token key, which only the sender's and media worker's roles may open).
    pub async fn store_for(&self, principal: &str) -> DynamoStore {
        self.store_with_sdk(&self.sdk_for(principal).await)
    }

    /// The store of a function reaching AWS with `sdk` (e.g. through a fault proxy in front of
    /// its IAM gate).
    pub fn store_with_sdk(&self, sdk: &SdkConfig) -> DynamoStore {
        DynamoStore::new(crm_shared::aws::dynamodb_client(sdk), self.table()).with_token_cipher(self.token_cipher(sdk))
    }

    fn token_cipher(&self, sdk: &SdkConfig) -> crm_shared::kms::TokenCipher {
        crm_shared::kms::TokenCipher::from_sdk(sdk, &self.provisioned.keys[crm_shared::kms::TOKEN_KEY_LOGICAL_ID])
    }

    /// The environment a function gets, with its secrets resolved from the local Secrets
    /// Manager as `principal` (as the function does at init).
    pub async fn function_env_for(&self, principal: &str, secrets: &[&'static str]) -> Env {
        let sdk = self.sdk_for(principal).await;
        crm_shared::secrets::resolve(Env::from_map(self.provisioned.function_env()), &sdk, secrets)
            .await
            .unwrap_or_else(|e| panic!("{principal}: {e}"))
    }

    /// The privacy machinery as `principal` (ApiFunction, ExporterFunction, …) runs it.
    pub async fn privacy_for(&self, principal: &str) -> crm_shared::privacy::Privacy {
        self.privacy_with_sdk(&self.sdk_for(principal).await)
    }

    /// The privacy machinery reaching AWS with `sdk` (e.g. through a fault proxy).
    pub fn privacy_with_sdk(&self, sdk: &SdkConfig) -> crm_shared::privacy::Privacy {
        let resources = Env::from_map(self.provisioned.function_env()).resources();
        crm_shared::privacy::Privacy::from_sdk(sdk, &resources)
    }

    pub fn media_queue_url(&self) -> &str {
        &self.provisioned.queue_urls["MediaQueue"]
    }

    pub fn overflow_queue_url(&self) -> &str {
        &self.provisioned.queue_urls["WebhookOverflowQueue"]
    }

    pub fn outbound_queue_url(&self) -> &str {
        &self.provisioned.queue_urls["OutboundQueue"]
    }

    pub fn delivery_queue_url(&self) -> &str {
        &self.provisioned.queue_urls["WebhookDeliveryQueue"]
    }

    pub fn media_bucket(&self) -> &str {
        &self.provisioned.buckets["MediaBucket"]
    }

    pub fn table(&self) -> &str {
        &self.provisioned.tables["DataTable"]
    }

    pub async fn store(&self) -> DynamoStore {
        let sdk = self.sdk().await;
        DynamoStore::new(crm_shared::aws::dynamodb_client(&sdk), self.table())
            .with_token_cipher(self.token_cipher(&sdk))
    }

    /// The privacy machinery (exports, erasure, retention) as the API function runs it.
    pub async fn privacy(&self) -> crm_shared::privacy::Privacy {
        self.privacy_for("ApiFunction").await
    }

    /// Environment `crmctl` needs to reach this stack, as an operator under `OperatorPolicy`.
    pub fn process_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("AWS_ENDPOINT_URL".to_owned(), self.gates[iam::OPERATOR].clone()),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
        ];
        env.extend(self.provisioned.function_env());
        env
    }
}

/// A Meta-style numeric id nobody else in this test run has.
pub fn unique_numeric_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("1{:09}{:05}", nanos, n % 100_000)
}

pub async fn new_tenant(store: &DynamoStore, name: &str) -> CreatedTenant {
    let new = NewTenant::validated(name, &unique_numeric_id(), &unique_numeric_id(), "test-graph-token").unwrap();
    admin::create_tenant(store, new)
        .await
        .unwrap_or_else(|e| panic!("tenant created: {e}"))
}

/// A running local gateway for this test's runtime.
pub struct Gateway {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const TEST_APP_SECRET: &str = "test-app-secret-0123456789";
pub const TEST_VERIFY_TOKEN: &str = "test-verify-token";

pub async fn start_gateway(store: DynamoStore) -> Gateway {
    start_gateway_with_media_queue(store, stack().media_queue_url()).await
}

/// A gateway whose webhook enqueues media jobs on `media_queue_url` (tests that consume the
/// queue use their own, so concurrent tests never take each other's jobs).
pub async fn start_gateway_with_media_queue(store: DynamoStore, media_queue_url: &str) -> Gateway {
    start_gateway_with_queues(store, media_queue_url, stack().outbound_queue_url()).await
}

/// A gateway whose functions use the given media and outbound queues.
pub async fn start_gateway_with_queues(store: DynamoStore, media_queue_url: &str, outbound_queue_url: &str) -> Gateway {
    let privacy = stack().privacy().await;
    start_gateway_with_privacy(store, media_queue_url, outbound_queue_url, privacy).await
}

/// A gateway whose privacy routes use `privacy` (e.g. with another erasure time budget).
pub async fn start_gateway_with_privacy(
    store: DynamoStore,
    media_queue_url: &str,
    outbound_queue_url: &str,
    privacy: crm_shared::privacy::Privacy,
) -> Gateway {
    stack()
        .start_gateway(store, media_queue_url, outbound_queue_url, privacy)
        .await
}

/// The API function's dependencies as the gateway runs them.
pub type ApiDeps = api_fn::Deps<DynamoStore, crm_shared::blob::S3Blobs, SqsQueue>;

/// A quota no test reaches by accident (tests that check the quota set their own).
pub const TEST_QUOTA: crm_shared::quota::QuotaConfig = crm_shared::quota::QuotaConfig {
    rate_per_second: 1_000_000,
    burst: 1_000_000,
};

/// A gateway on the shared stack whose API function is adjusted by `tune` (quota, tenant status
/// cache).
pub async fn start_gateway_tuned(store: DynamoStore, tune: impl FnOnce(ApiDeps) -> ApiDeps) -> Gateway {
    let on = stack();
    let privacy = on.privacy().await;
    start_gateway_on(
        on,
        store,
        on.media_queue_url(),
        on.outbound_queue_url(),
        privacy,
        None,
        tune,
    )
    .await
}

impl Stack {
    /// A gateway on this stack whose webhook function reaches AWS with `webhook_aws` (e.g.
    /// through a [`faults::FaultProxy`] in front of the webhook function's IAM gate) and enqueues
    /// media jobs on `media_queue_url`.
    pub async fn start_gateway_with_webhook_sdk(
        &self,
        store: DynamoStore,
        webhook_aws: SdkConfig,
        media_queue_url: &str,
    ) -> Gateway {
        let privacy = self.privacy().await;
        start_gateway_on(
            self,
            store,
            media_queue_url,
            self.outbound_queue_url(),
            privacy,
            Some(webhook_aws),
            |deps| deps,
        )
        .await
    }

    /// A gateway on this stack whose functions use the given queues and privacy wiring.
    pub async fn start_gateway(
        &self,
        store: DynamoStore,
        media_queue_url: &str,
        outbound_queue_url: &str,
        privacy: crm_shared::privacy::Privacy,
    ) -> Gateway {
        start_gateway_on(
            self,
            store,
            media_queue_url,
            outbound_queue_url,
            privacy,
            None,
            |deps| deps,
        )
        .await
    }
}

async fn start_gateway_on(
    on: &Stack,
    store: DynamoStore,
    media_queue_url: &str,
    outbound_queue_url: &str,
    privacy: crm_shared::privacy::Privacy,
    webhook_aws: Option<SdkConfig>,
    tune: impl FnOnce(ApiDeps) -> ApiDeps,
) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // Secrets as the functions read them at init: from (local) Secrets Manager, on their roles.
    let secrets = on
        .function_env_for("WebhookFunction", &["WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"])
        .await
        .webhook_secrets()
        .unwrap();
    let cursor_secret = on
        .function_env_for("ApiFunction", &["CURSOR_SECRET"])
        .await
        .cursor_secret()
        .unwrap();
    // `store` names the stack's table; each function gets its own client, on its own role.
    let table = store.table().to_owned();
    let api_sdk = on.sdk_for("ApiFunction").await;
    let webhook_sdk = match webhook_aws {
        Some(sdk) => sdk,
        None => on.sdk_for("WebhookFunction").await,
    };
    let media = crm_shared::blob::S3Blobs::new(crm_shared::aws::s3_client(&api_sdk), on.media_bucket());
    let api = api_fn::Deps::new(
        DynamoStore::new(crm_shared::aws::dynamodb_client(&api_sdk), table.clone())
            .with_token_cipher(on.token_cipher(&api_sdk)),
        CursorCodec::new(cursor_secret.expose()),
        media,
        SqsQueue::new(crm_shared::aws::sqs_client(&api_sdk), outbound_queue_url),
    )
    .with_privacy(privacy)
    .with_quota(TEST_QUOTA)
    .with_webhooks(api_fn::routes::Webhooks {
        queue: SqsQueue::new(crm_shared::aws::sqs_client(&api_sdk), on.delivery_queue_url()),
        pusher: crm_shared::events::push::Pusher::new(LOOPBACK_ENDPOINTS),
    });
    let handlers = std::sync::Arc::new(devstack::gateway::Handlers {
        api: tune(api),
        webhook: webhook_fn::Deps::new(
            DynamoStore::new(crm_shared::aws::dynamodb_client(&webhook_sdk), table),
            SqsQueue::new(crm_shared::aws::sqs_client(&webhook_sdk), media_queue_url),
            SqsQueue::new(crm_shared::aws::sqs_client(&webhook_sdk), on.overflow_queue_url()),
            secrets,
        )
        // Tests read the table right after the 200: on a loaded 2-core machine the production
        // 1 s ack budget can run out and leave items to the overflow queue, which these tests
        // do not drain (webhook_load tests the budget with its own gateway).
        .with_limits(webhook_fn::Limits {
            budget: std::time::Duration::from_secs(15),
            ..webhook_fn::Limits::default()
        }),
        console: None,
    });
    let task = tokio::spawn(devstack::gateway::serve(listener, handlers));
    Gateway { base, task }
}

/// Tests' receivers listen on loopback: admitted, as `make dev` admits them when told to
/// (`WEBHOOK_ALLOW_LOOPBACK=true`); the production default refuses them.
pub const LOOPBACK_ENDPOINTS: crm_shared::events::ssrf::UrlPolicy =
    crm_shared::events::ssrf::UrlPolicy { allow_loopback: true };

/// The [`events_stack`]'s event stream, started once per test binary on its own thread: the events
/// function fed from the table's stream (as `EventsFunction`, through its IAM gate, stream reads
/// included) and the delivery worker on the stack's delivery queue (as
/// `WebhookDeliveryFunction`). Every event test calls it; it returns once both run.
pub fn event_stream() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let on = events_stack();
                let arn = devstack::stream::stream_arn(&crm_shared::aws::dynamodb_client(&on.sdk().await), on.table())
                    .await
                    .unwrap_or_else(|e| panic!("table stream: {e}"));
                let events_sdk = on.sdk_for("EventsFunction").await;
                let record = std::sync::Arc::new(
                    events_fn::record::Deps::new(
                        DynamoStore::new(crm_shared::aws::dynamodb_client(&events_sdk), on.table()),
                        SqsQueue::new(crm_shared::aws::sqs_client(&events_sdk), on.delivery_queue_url()),
                    )
                    .with_automations(SqsQueue::new(
                        crm_shared::aws::sqs_client(&events_sdk),
                        on.outbound_queue_url(),
                    )),
                );
                tokio::spawn(devstack::stream::run(
                    aws_sdk_dynamodbstreams::Client::new(&events_sdk),
                    arn,
                    std::time::Duration::from_millis(50),
                    move |event| {
                        let deps = record.clone();
                        async move { events_fn::record::handle(&deps, event).await }
                    },
                ));
                let delivery_sdk = on.sdk_for("WebhookDeliveryFunction").await;
                let sqs = crm_shared::aws::sqs_client(&delivery_sdk);
                let deliver = std::sync::Arc::new(events_fn::deliver::Deps::new(
                    DynamoStore::new(crm_shared::aws::dynamodb_client(&delivery_sdk), on.table()),
                    SqsQueue::new(sqs.clone(), on.delivery_queue_url()),
                    crm_shared::events::push::Pusher::new(LOOPBACK_ENDPOINTS),
                ));
                let url = on.delivery_queue_url().to_owned();
                // Several pollers, as Lambda runs several instances: a hanging endpoint holds one.
                for _ in 0..4 {
                    let (sqs, url, deliver) = (sqs.clone(), url.clone(), deliver.clone());
                    tokio::spawn(async move {
                        loop {
                            let deps = deliver.clone();
                            let handled = devstack::poller::poll_once(&sqs, &url, 1, move |event| {
                                let deps = deps.clone();
                                async move { events_fn::deliver::handle(&deps, event).await }
                            })
                            .await;
                            if let Err(e) = handled {
                                eprintln!("delivery poller: {e}");
                                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            }
                        }
                    });
                }
                ready_tx.send(()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        ready_rx.recv().expect("event stream started");
    });
}

/// A webhook fixture from `shared/tests/fixtures/webhooks/`, addressed to `phone_number_id`.
pub fn fixture(name: &str, phone_number_id: &str) -> String {
    let path = workspace_root().join("shared/tests/fixtures/webhooks").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("100000000000001", phone_number_id)
}

/// POSTs a delivery to the webhook, signed with the test app secret unless `signature` says
/// otherwise (`Some(None)`: no header; `Some(Some(v))`: that header value).
pub async fn post_webhook(base: &str, body: &str, signature: Option<Option<&str>>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    let header = match signature {
        None => Some(crm_shared::whatsapp::sign(TEST_APP_SECRET.as_bytes(), body.as_bytes())),
        Some(v) => v.map(str::to_owned),
    };
    if let Some(h) = header {
        req = req.header("x-hub-signature-256", h);
    }
    let resp = req.send().await.expect("gateway answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Counts AWS requests by operation name (an SDK interceptor): how the tests and benchmarks
/// measure what an event costs on AWS, where requests are billed.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl RequestCounter {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl aws_sdk_dynamodb::config::Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        use aws_sdk_dynamodb::operation as op;
        let input = context.input();
        let name = if input.downcast_ref::<op::get_item::GetItemInput>().is_some() {
            "GetItem"
        } else if input.downcast_ref::<op::put_item::PutItemInput>().is_some() {
            "PutItem"
        } else if input.downcast_ref::<op::update_item::UpdateItemInput>().is_some() {
            "UpdateItem"
        } else if input.downcast_ref::<op::delete_item::DeleteItemInput>().is_some() {
            "DeleteItem"
        } else if input.downcast_ref::<op::query::QueryInput>().is_some() {
            "Query"
        } else if input.downcast_ref::<op::scan::ScanInput>().is_some() {
            "Scan"
        } else if input
            .downcast_ref::<op::transact_write_items::TransactWriteItemsInput>()
            .is_some()
        {
            "TransactWriteItems"
        } else if input
            .downcast_ref::<op::batch_write_item::BatchWriteItemInput>()
            .is_some()
        {
            "BatchWriteItem"
        } else if input.downcast_ref::<op::batch_get_item::BatchGetItemInput>().is_some() {
            "BatchGetItem"
        } else {
            "other"
        };
        let op = name.to_owned();
        self.0.lock().unwrap().push(op);
        Ok(())
    }
}

impl Stack {
    /// A store of `principal`'s whose DynamoDB requests are counted.
    pub async fn counted_store(&self, principal: &str) -> (DynamoStore, RequestCounter) {
        let counter = RequestCounter::default();
        let conf = aws_sdk_dynamodb::config::Builder::from(&self.sdk_for(principal).await)
            .interceptor(counter.clone())
            .build();
        (
            DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(conf), self.table()),
            counter,
        )
    }
}

/// A request as API Gateway hands it to a function (through the local gateway's own event
/// mapping), for tests that call a handler in-process.
pub fn gateway_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> lambda_http::Request {
    let mut builder = lambda_http::http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let (parts, _) = builder.body(()).unwrap().into_parts();
    let event = devstack::gateway::api_gateway_event(&parts, body);
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// One API call through the gateway: `(status, JSON body)` (a non-JSON body comes back as a
/// JSON string).
pub async fn api(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body.to_string());
    }
    let resp = req.send().await.expect("gateway answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

/// A queue of this test's own (so concurrent tests never consume each other's jobs), standing in
/// for the template's queue `logical_id` (named `<its local name>-test-…`, so the IAM gates check
/// it as that queue).
pub async fn own_queue(logical_id: &str) -> String {
    let sqs = crm_shared::aws::sqs_client(&stack().sdk().await);
    sqs.create_queue()
        .queue_name(format!(
            "{}-test-{}",
            crm_shared::config::local_name(logical_id),
            unique_numeric_id()
        ))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}
