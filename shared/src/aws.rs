//! SDK client construction, once per process.
//!
//! `aws_config::defaults` honours `AWS_ENDPOINT_URL` (and the per-service variants), which is
//! how every process reaches the local stack. S3 has no environment switch for path-style
//! addressing, so it is forced whenever an endpoint override is present (virtual-host style
//! against `127.0.0.1` cannot resolve). DynamoDB and SQS run without stalled-stream protection
//! (see [`dynamodb_client`]).

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;
use std::sync::{Arc, OnceLock};

/// The SDK configuration from the environment, with one HTTPS client for every SDK client built
/// from it (see [`https_client`]).
pub async fn load_sdk_config() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
    // Lambda hands the execution role's credentials over in the environment, which the default
    // chain tries first anyway. Naming that provider gives the same credentials without building
    // the rest of the chain at init (its web-identity provider builds a whole STS client).
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some() {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    loader.load().await
}

/// The SDK's default HTTPS client (hyper 1, rustls with aws-lc, proxy settings from the
/// environment: exactly what the SDK builds by default for this behavior version), shared by
/// every SDK client of the process and by the credential providers, and without the eager TLS
/// set-up.
///
/// Left to itself, the SDK builds a TLS connector — reading and parsing every CA root of the
/// system — while *constructing* each service client (and once more for the STS client of the
/// default credentials chain), then again on each client's first request. In a Lambda that is
/// init time spent before the function can take its first event (measured: most of a cold
/// start; see bench/REPORT.md). Shared and deferred, the connector is built once, on the first
/// request, and serves DynamoDB, SQS and S3 alike.
pub fn https_client() -> SharedHttpClient {
    let client = Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    DeferredTls(client).into_shared()
}

/// Delegates to the SDK's client but skips its construction-time connector build (the trait's
/// default validation does nothing); connectors are still built and cached on first use.
#[derive(Debug)]
struct DeferredTls(SharedHttpClient);

impl HttpClient for DeferredTls {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// DynamoDB and SQS without stalled-stream protection. It watches body *throughput*: on every
/// request it arms a 100 ms check timer that wakes the task for as long as the answer is
/// awaited, and it wraps both bodies to sample the clock per frame — CPU that grows with the
/// endpoint's latency (bench/ANALYSIS.md, "CPU against a slower endpoint"). It cannot catch
/// what stalls these clients: their bodies are small JSON documents sent and read in one go, and
/// a missing answer is not a body stall. A stall it would have cut after its 20 s grace period
/// now ends with the function's timeout, which every path already survives (leases,
/// redelivery). Retries (standard, 3 attempts, token bucket) and timeouts are unchanged. S3
/// keeps it: media and exports stream large bodies.
pub fn dynamodb_client(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

pub fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::from(sdk)
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// An SDK client built on its first use, or handed over ready. Building a client is init work
/// (each SDK crate parses its endpoint partition table when its first client is built), and
/// most invocations of a function never touch most of its clients: the API reaches S3 for media
/// links and exports only, SQS when it queues a send, KMS when it seals a token. Deferred, a
/// client costs the cold start nothing until a request needs it. Cheap to clone (shared).
pub struct LazyClient<C> {
    inner: Arc<LazyInner<C>>,
}

/// How a client is built from the SDK configuration.
type Build<C> = fn(&SdkConfig) -> C;

struct LazyInner<C> {
    /// `None` for a client handed over ready.
    build: Option<(SdkConfig, Build<C>)>,
    client: OnceLock<C>,
}

impl<C> LazyClient<C> {
    /// Built from `sdk` with `build` the first time it is used.
    pub fn new(sdk: &SdkConfig, build: Build<C>) -> Self {
        LazyClient {
            inner: Arc::new(LazyInner {
                build: Some((sdk.clone(), build)),
                client: OnceLock::new(),
            }),
        }
    }

    pub fn get(&self) -> &C {
        self.inner.client.get_or_init(|| {
            let (sdk, build) = self.inner.build.as_ref().expect("a client handed over ready is set");
            build(sdk)
        })
    }
}

impl<C> From<C> for LazyClient<C> {
    fn from(client: C) -> Self {
        LazyClient {
            inner: Arc::new(LazyInner {
                build: None,
                client: OnceLock::from(client),
            }),
        }
    }
}

impl<C> Clone for LazyClient<C> {
    fn clone(&self) -> Self {
        LazyClient {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> std::ops::Deref for LazyClient<C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.get()
    }
}

impl<C> std::fmt::Debug for LazyClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("built", &self.inner.client.get().is_some())
            .finish()
    }
}

/// [`sqs_client`], built on first use.
pub fn lazy_sqs_client(sdk: &SdkConfig) -> LazyClient<aws_sdk_sqs::Client> {
    LazyClient::new(sdk, sqs_client)
}

/// [`s3_client`], built on first use.
pub fn lazy_s3_client(sdk: &SdkConfig) -> LazyClient<aws_sdk_s3::Client> {
    LazyClient::new(sdk, s3_client)
}

pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let endpoint_overridden = sdk.endpoint_url().is_some();
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(endpoint_overridden)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static BUILT: AtomicUsize = AtomicUsize::new(0);

    fn counted(_: &SdkConfig) -> usize {
        BUILT.fetch_add(1, Ordering::SeqCst) + 1
    }

    #[test]
    fn a_lazy_client_is_built_once_on_first_use_and_shared_by_its_clones() {
        let sdk = SdkConfig::builder().behavior_version(BehaviorVersion::latest()).build();
        let lazy = LazyClient::new(&sdk, counted);
        let clone = lazy.clone();
        assert_eq!(BUILT.load(Ordering::SeqCst), 0, "nothing is built before first use");
        assert_eq!(*clone.get(), 1);
        assert_eq!(*lazy, 1, "the clone shares the one client");
        assert_eq!(BUILT.load(Ordering::SeqCst), 1);
        let ready = LazyClient::from(7usize);
        assert_eq!(*ready, 7);
        assert!(format!("{ready:?}").contains("built: true"));
    }
}
