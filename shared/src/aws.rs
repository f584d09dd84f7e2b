//! SDK client construction, once per process.
//!
//! `aws_config::defaults` honours `AWS_ENDPOINT_URL` (and the per-service variants), which is
//! how every process reaches the local stack. S3 has no environment switch for path-style
//! addressing, so it is forced whenever an endpoint override is present (virtual-host style
//! against `127.0.0.1` cannot resolve).

use aws_config::{BehaviorVersion, SdkConfig};

pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub fn dynamodb_client(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk)
}

pub fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let endpoint_overridden = sdk.endpoint_url().is_some();
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(endpoint_overridden)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
