//! Creates the template's tables, queues and buckets on the local endpoint. Idempotent: what
//! exists already is left as it is.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration,
    LifecycleRule as S3Rule, LifecycleRuleFilter, PublicAccessBlockConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crm_shared::config::{Env, RESOURCE_ENV, local_name};

use crate::template::{BucketSpec, KeyElement, QueueSpec, Resources, TableSpec};

#[derive(Debug, thiserror::Error)]
#[error("provisioning {resource} failed: {message}")]
pub struct ProvisionError {
    pub resource: String,
    pub message: String,
}

fn fail(resource: &str, err: impl std::fmt::Display) -> ProvisionError {
    ProvisionError {
        resource: resource.to_owned(),
        message: err.to_string(),
    }
}

/// Names and URLs of what was created, by logical id.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    pub tables: BTreeMap<String, String>,
    pub queue_urls: BTreeMap<String, String>,
    pub buckets: BTreeMap<String, String>,
    /// KMS key logical id → its local alias (`alias/<local name>`).
    pub keys: BTreeMap<String, String>,
    /// Secret logical id → its local name.
    pub secrets: BTreeMap<String, String>,
}

impl Provisioned {
    /// The environment a function would get from the template's `Globals`, for this stack.
    pub fn function_env(&self) -> Vec<(String, String)> {
        RESOURCE_ENV
            .iter()
            .filter_map(|(var, logical)| {
                self.tables
                    .get(*logical)
                    .or_else(|| self.buckets.get(*logical))
                    .or_else(|| self.queue_urls.get(*logical))
                    .map(|v| (var.to_string(), v.clone()))
            })
            .chain(crm_shared::secrets::SECRET_ENV.iter().filter_map(|(var, logical)| {
                self.secrets
                    .get(*logical)
                    .map(|name| (crm_shared::secrets::secret_id_var(var), name.clone()))
            }))
            .chain(
                self.keys
                    .get(crm_shared::kms::TOKEN_KEY_LOGICAL_ID)
                    .map(|alias| ("GRAPH_TOKEN_KEY_ID".to_owned(), alias.clone())),
            )
            .collect()
    }
}

/// The local name of a resource: the environment override the functions would read, else the
/// shared default.
pub fn resource_name(env: &Env, logical_id: &str) -> String {
    RESOURCE_ENV
        .iter()
        .find(|(_, logical)| *logical == logical_id)
        .and_then(|(var, _)| env.get(var))
        .map(str::to_owned)
        .unwrap_or_else(|| local_name(logical_id))
}

pub async fn provision(sdk: &SdkConfig, env: &Env, resources: &Resources) -> Result<Provisioned, ProvisionError> {
    provision_with_secrets(sdk, env, resources, &BTreeMap::new()).await
}

/// [`provision`], with the values of the template's secrets (logical id → value); a secret not
/// given gets a random value (as `GenerateSecretString` would).
pub async fn provision_with_secrets(
    sdk: &SdkConfig,
    env: &Env,
    resources: &Resources,
    secret_values: &BTreeMap<String, String>,
) -> Result<Provisioned, ProvisionError> {
    let mut out = Provisioned::default();
    let kms = aws_sdk_kms::Client::new(sdk);
    for logical in &resources.keys {
        let alias = format!("alias/{}", local_name(logical));
        let key = kms
            .create_key()
            .description(format!("local {logical}"))
            .send()
            .await
            .map_err(|e| fail(logical, DisplayErrorContext(&e)))?;
        let key_id = key.key_metadata.map(|m| m.key_id).unwrap_or_default();
        kms.create_alias()
            .alias_name(&alias)
            .target_key_id(key_id)
            .send()
            .await
            .map_err(|e| fail(logical, DisplayErrorContext(&e)))?;
        out.keys.insert(logical.clone(), alias);
    }
    let secretsmanager = aws_sdk_secretsmanager::Client::new(sdk);
    for logical in &resources.secrets {
        let name = local_name(logical);
        let value = secret_values
            .get(logical)
            .cloned()
            .unwrap_or_else(|| format!("{}{}", crm_shared::ids::new_id(), crm_shared::ids::new_id()));
        secretsmanager
            .create_secret()
            .name(&name)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| fail(logical, DisplayErrorContext(&e)))?;
        out.secrets.insert(logical.clone(), name);
    }
    let ddb = crm_shared::aws::dynamodb_client(sdk);
    for table in &resources.tables {
        let name = resource_name(env, &table.logical_id);
        create_table(&ddb, &name, table).await?;
        out.tables.insert(table.logical_id.clone(), name);
    }
    let sqs = crm_shared::aws::sqs_client(sdk);
    // Dead-letter queues first, so the redrive policies can name their ARNs.
    let mut ordered: Vec<&QueueSpec> = resources.queues.iter().filter(|q| q.dead_letter.is_none()).collect();
    ordered.extend(resources.queues.iter().filter(|q| q.dead_letter.is_some()));
    let mut arns = BTreeMap::new();
    for queue in ordered {
        let name = resource_name(env, &queue.logical_id);
        let (url, arn) = create_queue(&sqs, &name, queue, &arns).await?;
        arns.insert(queue.logical_id.clone(), arn);
        out.queue_urls.insert(queue.logical_id.clone(), url);
    }
    let s3 = crm_shared::aws::s3_client(sdk);
    for bucket in &resources.buckets {
        let name = resource_name(env, &bucket.logical_id);
        create_bucket(&s3, &name, bucket).await?;
        out.buckets.insert(bucket.logical_id.clone(), name);
    }
    Ok(out)
}

fn key_element(k: &KeyElement) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(&k.attribute)
        .key_type(KeyType::from(k.key_type.as_str()))
        .build()
        .expect("name and type set")
}

async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str, spec: &TableSpec) -> Result<(), ProvisionError> {
    let mut req = ddb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest);
    for (attr, ty) in &spec.attributes {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attr)
                .attribute_type(ScalarAttributeType::from(ty.as_str()))
                .build()
                .map_err(|e| fail(name, e))?,
        );
    }
    for k in &spec.key_schema {
        req = req.key_schema(key_element(k));
    }
    for gsi in &spec.global_indexes {
        let mut projection = Projection::builder().projection_type(ProjectionType::from(gsi.projection_type.as_str()));
        for a in &gsi.non_key_attributes {
            projection = projection.non_key_attributes(a);
        }
        let mut index = GlobalSecondaryIndex::builder()
            .index_name(&gsi.name)
            .projection(projection.build());
        for k in &gsi.key_schema {
            index = index.key_schema(key_element(k));
        }
        req = req.global_secondary_indexes(index.build().map_err(|e| fail(name, e))?);
    }
    if let Some(view) = &spec.stream_view {
        req = req.stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::from(view.as_str()))
                .build()
                .map_err(|e| fail(name, e))?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => return Ok(()),
        Err(e) => return Err(fail(name, DisplayErrorContext(&e))),
    }
    if let Some(attr) = &spec.ttl_attribute {
        ddb.update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attr)
                    .enabled(true)
                    .build()
                    .map_err(|e| fail(name, e))?,
            )
            .send()
            .await
            .map_err(|e| fail(name, DisplayErrorContext(&e)))?;
    }
    Ok(())
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    spec: &QueueSpec,
    arns: &BTreeMap<String, String>,
) -> Result<(String, String), ProvisionError> {
    let mut req = sqs.create_queue().queue_name(name);
    for (attr, value) in &spec.attributes {
        req = req.attributes(QueueAttributeName::from(attr.as_str()), value);
    }
    if let Some((target, max)) = &spec.dead_letter {
        let arn = arns.get(target).ok_or_else(|| {
            fail(
                name,
                format!("dead-letter queue {target} is not a queue of the template"),
            )
        })?;
        let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max});
        req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    let url = req
        .send()
        .await
        .map_err(|e| fail(name, DisplayErrorContext(&e)))?
        .queue_url
        .ok_or_else(|| fail(name, "no queue URL returned"))?;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| fail(name, DisplayErrorContext(&e)))?;
    let arn = attrs
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| fail(name, "no queue ARN returned"))?;
    Ok((url, arn))
}

async fn create_bucket(s3: &aws_sdk_s3::Client, name: &str, spec: &BucketSpec) -> Result<(), ProvisionError> {
    match s3.create_bucket().bucket(name).send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
        Err(e) => return Err(fail(name, DisplayErrorContext(&e))),
    }
    if spec.block_public_access {
        s3.put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .block_public_policy(true)
                    .ignore_public_acls(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| fail(name, DisplayErrorContext(&e)))?;
    }
    if !spec.lifecycle.is_empty() {
        let mut config = BucketLifecycleConfiguration::builder();
        for rule in &spec.lifecycle {
            let mut r = S3Rule::builder()
                .id(&rule.id)
                .status(if rule.enabled {
                    ExpirationStatus::Enabled
                } else {
                    ExpirationStatus::Disabled
                })
                .filter(
                    LifecycleRuleFilter::builder()
                        .prefix(rule.prefix.clone().unwrap_or_default())
                        .build(),
                );
            if let Some(days) = rule.expiration_days {
                r = r.expiration(LifecycleExpiration::builder().days(days).build());
            }
            if let Some(days) = rule.abort_multipart_days {
                r = r.abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(days)
                        .build(),
                );
            }
            config = config.rules(r.build().map_err(|e| fail(name, e))?);
        }
        s3.put_bucket_lifecycle_configuration()
            .bucket(name)
            .lifecycle_configuration(config.build().map_err(|e| fail(name, e))?)
            .send()
            .await
            .map_err(|e| fail(name, DisplayErrorContext(&e)))?;
    }
    Ok(())
}
