//! IAM parity for the local stack, which enforces no IAM of its own.
//!
//! Contract: [`Policies::load`] reads every function's `Policies` statements out of
//! `template.yaml` (and the operator policy `crmctl` runs under, the template's
//! `OperatorPolicy`), resolving `!GetAtt X.Arn`, `!Ref`, `!Sub` and pseudo parameters to the ARNs
//! the local resources would have (`wcrm-<kebab logical id>`, account 123456789012, us-east-1).
//! [`Policies::checks`] turns one raw AWS request (as the SDK sent it) into the IAM checks AWS
//! would make — action and resource, plus the KMS permissions the service uses on the caller's
//! behalf — and [`Policies::allowed`] evaluates a check against a principal's statements (explicit
//! deny wins, else some allow must match action, resource and conditions). A request that cannot
//! be attributed (unknown service or operation) is an error, never an allow.
//!
//! KMS used by services on the caller's behalf (what the rules below add to a request), from the
//! services' documentation:
//! * S3 with SSE-KMS: writes (`PutObject`, multipart create/part/complete) need
//!   `kms:GenerateDataKey`; multipart uploads also `kms:Decrypt`; reads (`GetObject`,
//!   `HeadObject`, presigned links) need `kms:Decrypt`. Deletes and listings need none.
//! * SQS with SSE-KMS: producers need `kms:GenerateDataKey` and `kms:Decrypt`; consumers
//!   `kms:Decrypt`.
//! * DynamoDB with a customer-managed key: data-plane calls need `kms:Decrypt` on the table's key
//!   (DynamoDB decrypts the table key with the caller's authority when it is not cached;
//!   conservative, so a role never works only while the key happens to be cached).
//! * Secrets Manager with a customer-managed key: `GetSecretValue` needs `kms:Decrypt` on it.
//!
//! Resources the tests create as stand-ins for a template resource (a test's own queue) are named
//! `<local name>-test-…` and checked as that resource.

use std::collections::BTreeMap;
use std::path::Path;

use crm_shared::config::local_name;
use serde_yaml::Value;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = crm_shared::config::LOCAL_ACCOUNT_ID;
/// Stack name used for `${AWS::StackName}` locally.
pub const STACK_NAME: &str = "wcrm";
/// Logical id of the managed policy `crmctl`'s operators run under.
pub const OPERATOR: &str = "OperatorPolicy";

/// One permission AWS checks for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub action: String,
    pub resource: String,
    /// Condition keys of the request (e.g. `s3:prefix`).
    pub context: BTreeMap<String, String>,
}

impl Check {
    fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Check {
            action: action.into(),
            resource: resource.into(),
            context: BTreeMap::new(),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}", self.action, self.resource)?;
        for (k, v) in &self.context {
            write!(f, " [{k}={v}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub operator: String,
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub sid: String,
    pub allow: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub conditions: Vec<Condition>,
}

impl Statement {
    fn matches(&self, check: &Check) -> bool {
        self.actions
            .iter()
            .any(|a| glob(&a.to_ascii_lowercase(), &check.action.to_ascii_lowercase()))
            && self.resources.iter().any(|r| glob(r, &check.resource))
            && self.conditions.iter().all(|c| {
                let Some(value) = check.context.get(&c.key) else {
                    // A condition on a key the request does not carry never matches (AWS: the
                    // key is absent, so StringLike/StringEquals are false).
                    return false;
                };
                match c.operator.as_str() {
                    "StringLike" => c.values.iter().any(|p| glob(p, value)),
                    "StringEquals" => c.values.iter().any(|p| p == value),
                    // Unknown operators fail closed: the evaluator must not allow what it cannot read.
                    _ => false,
                }
            })
    }
}

/// `*` and `?` wildcards as IAM reads them.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The template's principals and what their resources are encrypted with.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    pub principals: BTreeMap<String, Vec<Statement>>,
    /// Logical id → (type, properties) of every resource.
    resources: BTreeMap<String, (String, Value)>,
    parameters: BTreeMap<String, String>,
    /// Local resource name → logical id (tables, buckets, queues, keys, secrets).
    by_name: BTreeMap<String, String>,
}

impl Policies {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut out = Policies::default();
        for (name, p) in doc.get("Parameters").and_then(Value::as_mapping).into_iter().flatten() {
            if let (Some(name), Some(default)) = (name.as_str(), p.get("Default")) {
                let default = match default {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => format!("{other:?}"),
                };
                out.parameters.insert(name.to_owned(), default);
            }
        }
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or("template has no Resources")?;
        for (id, r) in resources {
            let id = id.as_str().ok_or("logical id is not a string")?.to_owned();
            let kind = r.get("Type").and_then(Value::as_str).unwrap_or_default().to_owned();
            let props = r.get("Properties").cloned().unwrap_or(Value::Null);
            if matches!(
                kind.as_str(),
                "AWS::DynamoDB::Table"
                    | "AWS::S3::Bucket"
                    | "AWS::SQS::Queue"
                    | "AWS::KMS::Key"
                    | "AWS::SecretsManager::Secret"
            ) {
                out.by_name.insert(local_name(&id), id.clone());
            }
            out.resources.insert(id, (kind, props));
        }
        let ids: Vec<String> = out.resources.keys().cloned().collect();
        for id in ids {
            let (kind, props) = out.resources[&id].clone();
            let statements = match kind.as_str() {
                "AWS::Serverless::Function" => {
                    let mut all = Vec::new();
                    for policy in props.get("Policies").and_then(Value::as_sequence).into_iter().flatten() {
                        let list = policy
                            .get("Statement")
                            .and_then(Value::as_sequence)
                            .ok_or_else(|| format!("{id}: only inline `- Statement:` policies are understood"))?;
                        for s in list {
                            all.push(out.statement(&id, s)?);
                        }
                    }
                    all
                }
                "AWS::IAM::ManagedPolicy" => {
                    let list = props
                        .get("PolicyDocument")
                        .and_then(|d| d.get("Statement"))
                        .and_then(Value::as_sequence)
                        .ok_or_else(|| format!("{id}: PolicyDocument.Statement missing"))?;
                    list.iter().map(|s| out.statement(&id, s)).collect::<Result<_, _>>()?
                }
                _ => continue,
            };
            out.principals.insert(id, statements);
        }
        Ok(out)
    }

    fn statement(&self, id: &str, s: &Value) -> Result<Statement, String> {
        let list = |v: Option<&Value>| -> Result<Vec<String>, String> {
            match v {
                None => Ok(Vec::new()),
                Some(Value::Sequence(items)) => items.iter().map(|i| self.resolve(i)).collect(),
                Some(one) => Ok(vec![self.resolve(one)?]),
            }
        };
        let mut conditions = Vec::new();
        for (op, keys) in s.get("Condition").and_then(Value::as_mapping).into_iter().flatten() {
            for (key, values) in keys.as_mapping().into_iter().flatten() {
                conditions.push(Condition {
                    operator: op.as_str().unwrap_or_default().to_owned(),
                    key: key.as_str().unwrap_or_default().to_owned(),
                    values: list(Some(values))?,
                });
            }
        }
        if s.get("NotAction").is_some() || s.get("NotResource").is_some() {
            return Err(format!("{id}: NotAction/NotResource are not understood"));
        }
        Ok(Statement {
            sid: s.get("Sid").and_then(Value::as_str).unwrap_or("?").to_owned(),
            allow: s.get("Effect").and_then(Value::as_str) == Some("Allow"),
            actions: list(s.get("Action"))?,
            resources: list(s.get("Resource"))?,
            conditions,
        })
    }

    /// The ARN a resource of the template has locally.
    pub fn arn(&self, logical: &str) -> Option<String> {
        let name = local_name(logical);
        Some(match self.resources.get(logical)?.0.as_str() {
            "AWS::DynamoDB::Table" => format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"),
            "AWS::S3::Bucket" => format!("arn:aws:s3:::{name}"),
            "AWS::SQS::Queue" => format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
            "AWS::KMS::Key" => format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{name}"),
            "AWS::SecretsManager::Secret" => format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}"),
            "AWS::SNS::Topic" => format!("arn:aws:sns:{REGION}:{ACCOUNT}:{name}"),
            _ => format!("arn:aws:cloudformation:{REGION}:{ACCOUNT}:resource/{logical}"),
        })
    }

    fn reference(&self, name: &str) -> Result<String, String> {
        if let Some(table) = name.strip_suffix(".StreamArn") {
            let arn = self.arn(table).ok_or_else(|| format!("unknown resource {table}"))?;
            return Ok(format!("{arn}/stream/*"));
        }
        if let Some(attr) = name.strip_suffix(".Arn") {
            return self.arn(attr).ok_or_else(|| format!("unknown resource {attr}"));
        }
        match name {
            "AWS::Partition" => return Ok("aws".into()),
            "AWS::Region" => return Ok(REGION.into()),
            "AWS::AccountId" => return Ok(ACCOUNT.into()),
            "AWS::StackName" => return Ok(STACK_NAME.into()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".into()),
            _ => {}
        }
        if let Some(v) = self.parameters.get(name) {
            return Ok(v.clone());
        }
        match self.resources.get(name).map(|r| r.0.as_str()) {
            // `!Ref` of a secret is its ARN; of the others, their name (or key id).
            Some("AWS::SecretsManager::Secret") => self.arn(name).ok_or_default(),
            Some(_) => Ok(local_name(name)),
            None => Err(format!("unknown reference {name}")),
        }
    }

    /// A policy value: a string, `!Ref`, `!GetAtt X.Arn`, `!Sub`.
    fn resolve(&self, v: &Value) -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Tagged(t) => {
                let tag = t.tag.to_string();
                match (tag.trim_start_matches('!'), &t.value) {
                    ("Ref", Value::String(name)) => self.reference(name),
                    ("GetAtt", Value::String(path)) => self.reference(path),
                    ("GetAtt", Value::Sequence(parts)) if parts.len() == 2 => self.reference(&format!(
                        "{}.{}",
                        parts[0].as_str().unwrap_or_default(),
                        parts[1].as_str().unwrap_or_default()
                    )),
                    ("Sub", Value::String(text)) => self.substitute(text, &BTreeMap::new()),
                    ("Sub", Value::Sequence(parts)) if parts.len() == 2 => {
                        let mut vars = BTreeMap::new();
                        for (k, v) in parts[1].as_mapping().into_iter().flatten() {
                            vars.insert(k.as_str().unwrap_or_default().to_owned(), self.resolve(v)?);
                        }
                        self.substitute(parts[0].as_str().unwrap_or_default(), &vars)
                    }
                    (other, _) => Err(format!("intrinsic !{other} is not understood in a policy")),
                }
            }
            other => Err(format!("policy value {other:?} is not understood")),
        }
    }

    fn substitute(&self, text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or("unterminated ${ in !Sub")? + start;
            let name = &rest[start + 2..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&self.reference(name)?),
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Logical id of a local resource name (a test's stand-in `<name>-test-…` counts as it).
    pub fn logical_for_name(&self, name: &str) -> Option<&str> {
        if let Some(id) = self.by_name.get(name) {
            return Some(id);
        }
        self.by_name
            .iter()
            .find(|(local, _)| name.starts_with(&format!("{local}-test-")))
            .map(|(_, id)| id.as_str())
    }

    /// The ARN of a resource by its local name: the template resource's if it is one.
    fn arn_for_name(&self, kind: &str, name: &str) -> String {
        if let Some(arn) = self.logical_for_name(name).and_then(|id| self.arn(id)) {
            return arn;
        }
        match kind {
            "table" => format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"),
            "queue" => format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
            "bucket" => format!("arn:aws:s3:::{name}"),
            "secret" => format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}"),
            _ => format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{name}"),
        }
    }

    /// The KMS key (ARN) a resource is encrypted with, by its local name.
    fn key_of(&self, name: &str) -> Option<String> {
        let id = self.logical_for_name(name)?;
        let (kind, props) = self.resources.get(id)?;
        let key = match kind.as_str() {
            "AWS::DynamoDB::Table" => props.get("SSESpecification")?.get("KMSMasterKeyId"),
            "AWS::SQS::Queue" => props.get("KmsMasterKeyId"),
            "AWS::S3::Bucket" => props
                .get("BucketEncryption")?
                .get("ServerSideEncryptionConfiguration")?
                .as_sequence()?
                .first()?
                .get("ServerSideEncryptionByDefault")?
                .get("KMSMasterKeyID"),
            "AWS::SecretsManager::Secret" => props.get("KmsKeyId"),
            _ => None,
        }?;
        let Value::Tagged(t) = key else { return None };
        let target = t.value.as_str()?.trim_end_matches(".Arn");
        self.arn(target)
    }

    /// A KMS `KeyId` as a request names it (alias, key id or ARN) → the key's ARN.
    fn key_arn(&self, key_id: &str) -> String {
        let name = key_id
            .rsplit_once(":alias/")
            .map(|(_, a)| a)
            .or_else(|| key_id.strip_prefix("alias/"))
            .or_else(|| key_id.rsplit_once(":key/").map(|(_, k)| k))
            .unwrap_or(key_id);
        self.arn_for_name("key", name)
    }

    /// `true` when `principal`'s statements allow `check`.
    pub fn allowed(&self, principal: &str, check: &Check) -> bool {
        let Some(statements) = self.principals.get(principal) else {
            return false;
        };
        !statements.iter().any(|s| !s.allow && s.matches(check))
            && statements.iter().any(|s| s.allow && s.matches(check))
    }

    /// The checks AWS makes for one request, or why it cannot be attributed.
    pub fn checks(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Vec<Check>, String> {
        let query = parse_query(query);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let scope = header("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .or_else(|| query.get("X-Amz-Credential").map(String::as_str))
            .ok_or("request carries no SigV4 credential scope")?
            .to_owned();
        let service = scope.split('/').nth(3).ok_or("malformed credential scope")?.to_owned();
        if service == "s3" {
            return self.s3_checks(method, path, &query, headers, body);
        }
        let target = header("x-amz-target").ok_or_else(|| format!("{service}: no X-Amz-Target"))?;
        let op = target.rsplit('.').next().unwrap_or_default();
        let json: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("{service}.{op}: body is not JSON: {e}"))?;
        let field = |name: &str| {
            json.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("{service}.{op}: no {name}"))
        };
        match service.as_str() {
            "dynamodb" => self.dynamodb_checks(op, &json),
            "sqs" => {
                let queue = match op {
                    "GetQueueUrl" => field("QueueName")?,
                    _ => field("QueueUrl")?.rsplit('/').next().unwrap_or_default().to_owned(),
                };
                let arn = self.arn_for_name("queue", &queue);
                let action = match op {
                    "SendMessage" | "SendMessageBatch" => "SendMessage",
                    "DeleteMessage" | "DeleteMessageBatch" => "DeleteMessage",
                    "ChangeMessageVisibility" | "ChangeMessageVisibilityBatch" => "ChangeMessageVisibility",
                    "ReceiveMessage" | "GetQueueAttributes" | "GetQueueUrl" | "PurgeQueue" => op,
                    other => return Err(format!("sqs.{other} is not attributed")),
                };
                let mut out = vec![Check::new(format!("sqs:{action}"), arn)];
                if let Some(key) = self.key_of(&queue) {
                    match action {
                        "SendMessage" => {
                            out.push(Check::new("kms:GenerateDataKey", &key));
                            out.push(Check::new("kms:Decrypt", &key));
                        }
                        "ReceiveMessage" => out.push(Check::new("kms:Decrypt", &key)),
                        _ => {}
                    }
                }
                Ok(out)
            }
            "kms" => match op {
                "GenerateDataKey" | "Encrypt" | "Decrypt" | "GenerateDataKeyWithoutPlaintext" | "DescribeKey" => {
                    let key = field("KeyId").map_err(|e| format!("{e} (pass KeyId so the key is named)"))?;
                    Ok(vec![Check::new(format!("kms:{op}"), self.key_arn(&key))])
                }
                other => Err(format!("kms.{other} is not attributed")),
            },
            "secretsmanager" => match op {
                "GetSecretValue" | "DescribeSecret" => {
                    let id = field("SecretId")?;
                    // An ARN ends in `-` + six random characters AWS adds; the name is before it.
                    let name = match id.split_once(":secret:") {
                        Some((_, rest)) => rest.rsplit_once('-').map(|(n, _)| n).unwrap_or(rest).to_owned(),
                        None => id,
                    };
                    let mut out = vec![Check::new(
                        format!("secretsmanager:{op}"),
                        self.arn_for_name("secret", &name),
                    )];
                    if op == "GetSecretValue"
                        && let Some(key) = self.key_of(&name)
                    {
                        out.push(Check::new("kms:Decrypt", key));
                    }
                    Ok(out)
                }
                other => Err(format!("secretsmanager.{other} is not attributed")),
            },
            other => Err(format!("service {other} is not attributed")),
        }
    }

    fn dynamodb_checks(&self, op: &str, json: &serde_json::Value) -> Result<Vec<Check>, String> {
        let table_arn = |t: &str| self.arn_for_name("table", t);
        let mut out = Vec::new();
        let mut tables = Vec::new();
        let str_of = |v: &serde_json::Value, f: &str| v.get(f).and_then(serde_json::Value::as_str).map(str::to_owned);
        match op {
            "GetItem" | "PutItem" | "UpdateItem" | "DeleteItem" | "Query" | "Scan" | "DescribeTable" => {
                let table = str_of(json, "TableName").ok_or_else(|| format!("dynamodb.{op}: no TableName"))?;
                let resource = match str_of(json, "IndexName") {
                    Some(index) => format!("{}/index/{index}", table_arn(&table)),
                    None => table_arn(&table),
                };
                out.push(Check::new(format!("dynamodb:{op}"), resource));
                tables.push(table);
            }
            "BatchGetItem" | "BatchWriteItem" => {
                for table in json
                    .get("RequestItems")
                    .and_then(|r| r.as_object())
                    .into_iter()
                    .flatten()
                    .map(|(t, _)| t)
                {
                    out.push(Check::new(format!("dynamodb:{op}"), table_arn(table)));
                    tables.push(table.clone());
                }
            }
            "TransactWriteItems" | "TransactGetItems" => {
                for item in json
                    .get("TransactItems")
                    .and_then(serde_json::Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let (kind, body) = item
                        .as_object()
                        .and_then(|o| o.iter().next())
                        .ok_or("dynamodb: empty transaction item")?;
                    let action = match kind.as_str() {
                        "Put" => "PutItem",
                        "Update" => "UpdateItem",
                        "Delete" => "DeleteItem",
                        "ConditionCheck" => "ConditionCheckItem",
                        "Get" => "GetItem",
                        other => return Err(format!("dynamodb: transaction item {other}")),
                    };
                    let table = str_of(body, "TableName").ok_or("dynamodb: transaction item without TableName")?;
                    out.push(Check::new(format!("dynamodb:{action}"), table_arn(&table)));
                    tables.push(table);
                }
            }
            // DynamoDB Streams (same SigV4 service): the stream's ARN, named by the request or
            // (GetRecords) by the shard iterator, which moto builds as `<stream ARN>|1|<id>`.
            "DescribeStream" | "GetShardIterator" => {
                let stream = str_of(json, "StreamArn").ok_or_else(|| format!("dynamodb.{op}: no StreamArn"))?;
                return Ok(vec![Check::new(format!("dynamodb:{op}"), stream)]);
            }
            "GetRecords" => {
                let iterator = str_of(json, "ShardIterator").ok_or("dynamodb.GetRecords: no ShardIterator")?;
                let stream = iterator.split('|').next().unwrap_or_default().to_owned();
                return Ok(vec![Check::new("dynamodb:GetRecords", stream)]);
            }
            other => return Err(format!("dynamodb.{other} is not attributed")),
        }
        tables.sort();
        tables.dedup();
        for t in tables {
            if let Some(key) = self.key_of(&t) {
                out.push(Check::new("kms:Decrypt", key));
            }
        }
        Ok(out)
    }

    fn s3_checks(
        &self,
        method: &str,
        path: &str,
        query: &BTreeMap<String, String>,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Vec<Check>, String> {
        let path = percent_decode(path.trim_start_matches('/'));
        let (bucket, key) = path.split_once('/').unwrap_or((&path, ""));
        if bucket.is_empty() {
            return Err("s3: request names no bucket".into());
        }
        let bucket_arn = self.arn_for_name("bucket", bucket);
        let object = format!("{bucket_arn}/{key}");
        let bucket_key = self.key_of(bucket);
        let has = |q: &str| query.contains_key(q);
        let copy_source = headers.get("x-amz-copy-source").and_then(|v| v.to_str().ok());
        let mut out = Vec::new();
        // (write, multipart, read) for the SSE-KMS rule.
        let mut kms = (false, false, false);
        match (method, key.is_empty()) {
            ("GET", true) if has("uploads") => out.push(Check::new("s3:ListBucketMultipartUploads", &bucket_arn)),
            ("GET", true) | ("HEAD", true) => {
                let mut c = Check::new("s3:ListBucket", &bucket_arn);
                c.context
                    .insert("s3:prefix".into(), query.get("prefix").cloned().unwrap_or_default());
                out.push(c);
            }
            ("GET", false) if has("uploadId") => out.push(Check::new("s3:ListMultipartUploadParts", &object)),
            ("GET", false) | ("HEAD", false) => {
                out.push(Check::new("s3:GetObject", &object));
                kms.2 = true;
            }
            ("PUT", false) => {
                out.push(Check::new("s3:PutObject", &object));
                kms.0 = true;
                kms.1 = has("uploadId");
                if let Some(source) = copy_source {
                    let source = percent_decode(source.trim_start_matches('/'));
                    let (src_bucket, src_key) = source.split_once('/').unwrap_or((&source, ""));
                    let src_key = src_key.split('?').next().unwrap_or_default();
                    out.push(Check::new(
                        "s3:GetObject",
                        format!("{}/{src_key}", self.arn_for_name("bucket", src_bucket)),
                    ));
                    if let Some(k) = self.key_of(src_bucket) {
                        out.push(Check::new("kms:Decrypt", k));
                    }
                }
            }
            ("POST", false) if has("uploads") || has("uploadId") => {
                out.push(Check::new("s3:PutObject", &object));
                kms = (true, true, false);
            }
            ("POST", true) if has("delete") => {
                let text = String::from_utf8_lossy(body);
                for part in text.split("<Key>").skip(1) {
                    let k = part.split("</Key>").next().unwrap_or_default();
                    out.push(Check::new(
                        "s3:DeleteObject",
                        format!("{bucket_arn}/{}", xml_unescape(k)),
                    ));
                }
            }
            ("DELETE", false) if has("uploadId") => out.push(Check::new("s3:AbortMultipartUpload", &object)),
            ("DELETE", false) => out.push(Check::new("s3:DeleteObject", &object)),
            (m, _) => return Err(format!("s3 {m} /{path} is not attributed")),
        }
        if let Some(k) = bucket_key {
            if kms.0 {
                out.push(Check::new("kms:GenerateDataKey", &k));
            }
            if kms.1 || kms.2 {
                out.push(Check::new("kms:Decrypt", &k));
            }
        }
        Ok(out)
    }
}

trait OkOrDefault {
    fn ok_or_default(self) -> Result<String, String>;
}

impl OkOrDefault for Option<String> {
    fn ok_or_default(self) -> Result<String, String> {
        self.ok_or_else(|| "unresolvable reference".to_owned())
    }
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_iam_does() {
        assert!(glob("arn:aws:s3:::b/tenants/*", "arn:aws:s3:::b/tenants/t1/x"));
        assert!(!glob("arn:aws:s3:::b/tenants/*", "arn:aws:s3:::b/other"));
        assert!(glob("dynamodb:get*", "dynamodb:getitem"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", ""));
    }

    #[test]
    fn percent_decoding_keeps_plain_text() {
        assert_eq!(percent_decode("tenants%2Ft1%2Fa%20b"), "tenants/t1/a b");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
