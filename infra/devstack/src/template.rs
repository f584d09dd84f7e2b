//! Reads the stateful resources (tables, queues, buckets, KMS keys, Secrets Manager secrets) out
//! of `template.yaml`, so the local stack is built from the same declaration that deploys to AWS.
//! Everything else (functions, alarms, log groups, policies) has no local counterpart and is
//! skipped.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template: {0}")]
    Read(#[from] std::io::Error),
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("resource {resource}: {message}")]
    Resource { resource: String, message: String },
}

fn invalid(resource: &str, message: impl Into<String>) -> TemplateError {
    TemplateError::Resource {
        resource: resource.to_owned(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyElement {
    pub attribute: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: String,
    pub key_schema: Vec<KeyElement>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    pub non_key_attributes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub logical_id: String,
    /// (name, `S` | `N` | `B`)
    pub attributes: Vec<(String, String)>,
    pub key_schema: Vec<KeyElement>,
    pub global_indexes: Vec<IndexSpec>,
    pub ttl_attribute: Option<String>,
    /// `StreamSpecification.StreamViewType` (`NEW_AND_OLD_IMAGES`, …) when the table has a stream.
    pub stream_view: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical_id: String,
    /// Plain SQS attributes (`VisibilityTimeout`, `MessageRetentionPeriod`, …) as strings.
    pub attributes: BTreeMap<String, String>,
    /// (logical id of the dead-letter queue, maxReceiveCount)
    pub dead_letter: Option<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRule {
    pub id: String,
    pub enabled: bool,
    pub prefix: Option<String>,
    pub expiration_days: Option<i32>,
    pub abort_multipart_days: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub logical_id: String,
    pub lifecycle: Vec<LifecycleRule>,
    pub block_public_access: bool,
}

/// The stateful resources of the template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub tables: Vec<TableSpec>,
    pub queues: Vec<QueueSpec>,
    pub buckets: Vec<BucketSpec>,
    /// Logical ids of the customer-managed KMS keys.
    pub keys: Vec<String>,
    /// Logical ids of the Secrets Manager secrets.
    pub secrets: Vec<String>,
}

pub fn load(path: &Path) -> Result<Resources, TemplateError> {
    parse(&std::fs::read_to_string(path)?)
}

pub fn parse(text: &str) -> Result<Resources, TemplateError> {
    let doc: Value = serde_yaml::from_str(text)?;
    let resources = doc
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| invalid("Resources", "missing or not a mapping"))?;
    let mut out = Resources::default();
    for (id, resource) in resources {
        let id = id.as_str().ok_or_else(|| invalid("?", "logical id is not a string"))?;
        let kind = resource.get("Type").and_then(Value::as_str).unwrap_or_default();
        let empty = Value::Mapping(Default::default());
        let props = resource.get("Properties").unwrap_or(&empty);
        match kind {
            "AWS::DynamoDB::Table" => out.tables.push(table(id, props)?),
            "AWS::SQS::Queue" => out.queues.push(queue(id, props)?),
            "AWS::S3::Bucket" => out.buckets.push(bucket(id, props)?),
            "AWS::KMS::Key" => out.keys.push(id.to_owned()),
            "AWS::SecretsManager::Secret" => out.secrets.push(id.to_owned()),
            _ => {}
        }
    }
    Ok(out)
}

fn str_field<'a>(id: &str, v: &'a Value, field: &str) -> Result<&'a str, TemplateError> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(id, format!("{field} missing or not a string")))
}

fn key_schema(id: &str, v: Option<&Value>) -> Result<Vec<KeyElement>, TemplateError> {
    let list = v
        .and_then(Value::as_sequence)
        .ok_or_else(|| invalid(id, "KeySchema missing"))?;
    list.iter()
        .map(|k| {
            Ok(KeyElement {
                attribute: str_field(id, k, "AttributeName")?.to_owned(),
                key_type: str_field(id, k, "KeyType")?.to_owned(),
            })
        })
        .collect()
}

fn table(id: &str, props: &Value) -> Result<TableSpec, TemplateError> {
    let attributes = props
        .get("AttributeDefinitions")
        .and_then(Value::as_sequence)
        .ok_or_else(|| invalid(id, "AttributeDefinitions missing"))?
        .iter()
        .map(|a| {
            Ok((
                str_field(id, a, "AttributeName")?.to_owned(),
                str_field(id, a, "AttributeType")?.to_owned(),
            ))
        })
        .collect::<Result<Vec<_>, TemplateError>>()?;
    let mut global_indexes = Vec::new();
    for gsi in props
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let projection = gsi.get("Projection");
        global_indexes.push(IndexSpec {
            name: str_field(id, gsi, "IndexName")?.to_owned(),
            key_schema: key_schema(id, gsi.get("KeySchema"))?,
            projection_type: projection
                .and_then(|p| p.get("ProjectionType"))
                .and_then(Value::as_str)
                .unwrap_or("ALL")
                .to_owned(),
            non_key_attributes: projection
                .and_then(|p| p.get("NonKeyAttributes"))
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
        });
    }
    let ttl_attribute = props.get("TimeToLiveSpecification").and_then(|ttl| {
        let enabled = ttl.get("Enabled").and_then(Value::as_bool).unwrap_or(false);
        enabled
            .then(|| ttl.get("AttributeName").and_then(Value::as_str).map(str::to_owned))
            .flatten()
    });
    Ok(TableSpec {
        logical_id: id.to_owned(),
        attributes,
        key_schema: key_schema(id, props.get("KeySchema"))?,
        global_indexes,
        ttl_attribute,
        stream_view: props
            .get("StreamSpecification")
            .and_then(|spec| spec.get("StreamViewType"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// `!GetAtt X.Arn` or `{"Fn::GetAtt": [X, "Arn"]}` → X.
fn get_att_arn_target(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) if t.tag.to_string().trim_start_matches('!') == "GetAtt" => {
            t.value.as_str()?.strip_suffix(".Arn").map(str::to_owned)
        }
        Value::Mapping(m) => {
            let args = m.get("Fn::GetAtt")?.as_sequence()?;
            match (args.first()?.as_str()?, args.get(1)?.as_str()?) {
                (target, "Arn") => Some(target.to_owned()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn queue(id: &str, props: &Value) -> Result<QueueSpec, TemplateError> {
    let mut attributes = BTreeMap::new();
    let mut dead_letter = None;
    for (name, value) in props.as_mapping().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        match name {
            "RedrivePolicy" => {
                let target = value
                    .get("deadLetterTargetArn")
                    .and_then(get_att_arn_target)
                    .ok_or_else(|| invalid(id, "RedrivePolicy.deadLetterTargetArn must be !GetAtt <Queue>.Arn"))?;
                let max = value
                    .get("maxReceiveCount")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| invalid(id, "RedrivePolicy.maxReceiveCount must be a number"))?;
                dead_letter = Some((target, max));
            }
            "QueueName" | "Tags" | "KmsMasterKeyId" | "KmsDataKeyReusePeriodSeconds" | "SqsManagedSseEnabled" => {}
            other => {
                let text = scalar_string(value)
                    .ok_or_else(|| invalid(id, format!("{other} must be a plain value locally")))?;
                attributes.insert(other.to_owned(), text);
            }
        }
    }
    Ok(QueueSpec {
        logical_id: id.to_owned(),
        attributes,
        dead_letter,
    })
}

fn bucket(id: &str, props: &Value) -> Result<BucketSpec, TemplateError> {
    let mut lifecycle = Vec::new();
    let rules = props
        .get("LifecycleConfiguration")
        .and_then(|l| l.get("Rules"))
        .and_then(Value::as_sequence);
    for rule in rules.into_iter().flatten() {
        let int = |v: Option<&Value>| v.and_then(Value::as_i64).map(|n| n as i32);
        lifecycle.push(LifecycleRule {
            id: str_field(id, rule, "Id")?.to_owned(),
            enabled: rule.get("Status").and_then(Value::as_str) == Some("Enabled"),
            prefix: rule.get("Prefix").and_then(Value::as_str).map(str::to_owned),
            expiration_days: int(rule.get("ExpirationInDays")),
            abort_multipart_days: int(rule
                .get("AbortIncompleteMultipartUpload")
                .and_then(|a| a.get("DaysAfterInitiation"))),
        });
    }
    let block = props.get("PublicAccessBlockConfiguration");
    let block_public_access = [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ]
    .iter()
    .all(|f| block.and_then(|b| b.get(*f)).and_then(Value::as_bool) == Some(true));
    Ok(BucketSpec {
        logical_id: id.to_owned(),
        lifecycle,
        block_public_access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_real_template() {
        let path = crate::workspace_root().join("template.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let res = load(&path).unwrap();
        let table = res
            .tables
            .iter()
            .find(|t| t.logical_id == "DataTable")
            .expect("DataTable");
        assert_eq!(table.ttl_attribute.as_deref(), Some("expires_at"));
        assert_eq!(table.stream_view.as_deref(), Some("NEW_AND_OLD_IMAGES"));
        assert_eq!(table.key_schema[0].attribute, "PK");
        assert!(table.global_indexes.iter().any(|g| g.name == "GSI1"));
        for bucket in &res.buckets {
            assert!(
                bucket.block_public_access,
                "{} must block public access",
                bucket.logical_id
            );
            assert!(
                !bucket.lifecycle.is_empty(),
                "{} needs lifecycle rules",
                bucket.logical_id
            );
        }
        for queue in &res.queues {
            let is_dlq = res
                .queues
                .iter()
                .any(|q| q.dead_letter.as_ref().is_some_and(|(t, _)| t == &queue.logical_id));
            // A stream event source's `OnFailure` destination is a dead-letter queue too.
            let is_failure_destination = text.contains(&format!("Destination: !GetAtt {}.Arn", queue.logical_id));
            assert!(
                is_dlq || is_failure_destination || queue.dead_letter.is_some(),
                "{} has no dead-letter queue",
                queue.logical_id
            );
        }
    }

    #[test]
    fn parses_queues_with_both_intrinsic_forms() {
        let text = r#"
Resources:
  Dlq:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 1209600
  Work:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 60
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt Dlq.Arn
        maxReceiveCount: 5
  Other:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy:
        deadLetterTargetArn: {"Fn::GetAtt": ["Dlq", "Arn"]}
        maxReceiveCount: 3
"#;
        let res = parse(text).unwrap();
        let work = res.queues.iter().find(|q| q.logical_id == "Work").unwrap();
        assert_eq!(work.dead_letter, Some(("Dlq".into(), 5)));
        assert_eq!(work.attributes.get("VisibilityTimeout").map(String::as_str), Some("60"));
        let other = res.queues.iter().find(|q| q.logical_id == "Other").unwrap();
        assert_eq!(other.dead_letter, Some(("Dlq".into(), 3)));
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        let bad = "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      RedrivePolicy:\n        deadLetterTargetArn: arn:aws:sqs:x\n        maxReceiveCount: 1\n";
        assert!(matches!(parse(bad), Err(TemplateError::Resource { .. })));
        assert!(parse("Resources: [").is_err());
        assert!(parse("Foo: 1").is_err());
    }
}
