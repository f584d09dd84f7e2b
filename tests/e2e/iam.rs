//! IAM parity: what the e2e tests' requests need is what `template.yaml` grants.
//!
//! Every handler in these tests reaches the local endpoint through its function's IAM gate
//! (`e2e_tests::proxy`), so a request its role does not allow fails there as it would on AWS, and
//! the test binary fails at exit if any was denied. This module pins the rules the gates cannot
//! see in a test run (the event source mappings' own calls, wildcards) and checks the gate itself.

use e2e_tests::iam::{Check, Policies};
use e2e_tests::stack;

fn policies() -> Policies {
    Policies::load(&devstack::workspace_root().join("template.yaml")).expect("template policies parse")
}

fn check(p: &Policies, action: &str, logical: &str, suffix: &str) -> Check {
    Check {
        action: action.to_owned(),
        resource: format!("{}{suffix}", p.arn(logical).unwrap()),
        context: Default::default(),
    }
}

#[test]
fn every_function_has_a_policy_and_least_privilege_holds() {
    let p = policies();
    for f in [
        "ApiFunction",
        "WebhookFunction",
        "MediaFunction",
        "MediaDeadLetterFunction",
        "SenderFunction",
        "BroadcastFunction",
        "NoReplySweepFunction",
        "ExporterFunction",
        "EraserFunction",
        "RetentionFunction",
        "TemplateSyncFunction",
        "OperatorPolicy",
    ] {
        let statements = p.principals.get(f).unwrap_or_else(|| panic!("{f} has no policy"));
        for s in statements {
            for a in &s.actions {
                assert!(!a.contains('*'), "{f}/{}: wildcard action {a}", s.sid);
            }
            for r in &s.resources {
                assert!(r != "*", "{f}/{}: Resource \"*\"", s.sid);
            }
        }
    }
}

/// The three gaps a review of the template found (each made a flow work locally and fail on AWS).
#[test]
fn the_writes_found_missing_in_review_are_granted() {
    let p = policies();
    let gaps = [
        // The exporter marks exports ready/failed with a conditional PutItem.
        ("ExporterFunction", check(&p, "dynamodb:PutItem", "DataTable", "")),
        // The eraser saves progress, completion and its audit entry with PutItems.
        ("EraserFunction", check(&p, "dynamodb:PutItem", "DataTable", "")),
        // The media worker deletes the object it stored for a message erased mid-download.
        (
            "MediaFunction",
            check(&p, "s3:DeleteObject", "MediaBucket", "/tenants/t/contacts/c/messages/m"),
        ),
        // The media worker aborts the multipart upload of a transfer that failed (a gate sees
        // it only on a failure path).
        (
            "MediaFunction",
            check(
                &p,
                "s3:AbortMultipartUpload",
                "MediaBucket",
                "/tenants/t/contacts/c/media/m",
            ),
        ),
    ];
    let missing: Vec<String> = gaps
        .iter()
        .filter(|(f, c)| !p.allowed(f, c))
        .map(|(f, c)| format!("{f}: {c}"))
        .collect();
    assert!(missing.is_empty(), "not granted: {missing:#?}");
}

/// What the template registry's callers of Meta need: the tenant's token opened, and the
/// reconcile's conditional writes and deletes.
#[test]
fn template_calls_to_meta_are_granted() {
    let p = policies();
    let needed = [
        ("ApiFunction", check(&p, "kms:Decrypt", "GraphTokenKey", "")),
        ("TemplateSyncFunction", check(&p, "kms:Decrypt", "GraphTokenKey", "")),
        (
            "TemplateSyncFunction",
            check(&p, "dynamodb:Query", "DataTable", "/index/GSI1"),
        ),
        ("TemplateSyncFunction", check(&p, "dynamodb:PutItem", "DataTable", "")),
        (
            "TemplateSyncFunction",
            check(&p, "dynamodb:DeleteItem", "DataTable", ""),
        ),
        ("OperatorPolicy", check(&p, "kms:Decrypt", "GraphTokenKey", "")),
    ];
    let missing: Vec<String> = needed
        .iter()
        .filter(|(f, c)| !p.allowed(f, c))
        .map(|(f, c)| format!("{f}: {c}"))
        .collect();
    assert!(missing.is_empty(), "not granted: {missing:#?}");
}

#[test]
fn queue_consumers_can_consume_their_event_queues() {
    let p = policies();
    for (f, queue) in [
        ("MediaFunction", "MediaQueue"),
        ("MediaDeadLetterFunction", "MediaDLQ"),
        ("SenderFunction", "OutboundQueue"),
        ("ExporterFunction", "ExportQueue"),
        ("EraserFunction", "ErasureQueue"),
        ("WebhookOverflowFunction", "WebhookOverflowQueue"),
    ] {
        for action in [
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes",
        ] {
            assert!(p.allowed(f, &check(&p, action, queue, "")), "{f}: {action} on {queue}");
        }
        assert!(
            p.allowed(f, &check(&p, "kms:Decrypt", "DataKey", "")),
            "{f}: kms:Decrypt"
        );
    }
}

#[test]
fn grants_stay_narrow() {
    let p = policies();
    let denied = [
        (
            "ExporterFunction",
            check(&p, "dynamodb:Query", "DataTable", "/index/GSI5"),
        ),
        ("WebhookFunction", check(&p, "dynamodb:Query", "DataTable", "")),
        ("WebhookFunction", check(&p, "dynamodb:Scan", "DataTable", "")),
        (
            "MediaFunction",
            check(&p, "s3:DeleteObject", "ExportsBucket", "/tenants/t/x"),
        ),
        ("ApiFunction", check(&p, "s3:PutObject", "MediaBucket", "/tenants/t/x")),
        // The dead-letter consumer only marks messages: no media, no Graph tokens.
        (
            "MediaDeadLetterFunction",
            check(&p, "s3:PutObject", "MediaBucket", "/tenants/t/x"),
        ),
        ("MediaDeadLetterFunction", check(&p, "kms:Decrypt", "GraphTokenKey", "")),
        ("RetentionFunction", check(&p, "sqs:SendMessage", "OutboundQueue", "")),
        // The reconcile writes one conditional item at a time and touches no object or queue.
        (
            "TemplateSyncFunction",
            check(&p, "dynamodb:BatchWriteItem", "DataTable", ""),
        ),
        (
            "TemplateSyncFunction",
            check(&p, "s3:DeleteObject", "MediaBucket", "/tenants/t/x"),
        ),
        (
            "TemplateSyncFunction",
            check(&p, "sqs:SendMessage", "OutboundQueue", ""),
        ),
        // Template webhooks are applied without opening a token.
        ("WebhookFunction", check(&p, "kms:Decrypt", "GraphTokenKey", "")),
    ];
    for (f, c) in denied {
        assert!(!p.allowed(f, &c), "{f} must not be allowed {c}");
    }
}

/// The gate answers a request its principal may not make the way AWS does (the SDK sees an
/// access-denied error), and lets through what the principal may do.
#[tokio::test]
async fn the_gate_denies_what_a_role_does_not_grant() {
    let stack = stack();
    let probe = crm_shared::aws::dynamodb_client(&stack.sdk_for("IamProbeNoGrants").await);
    let err = probe
        .scan()
        .table_name(stack.table())
        .limit(1)
        .send()
        .await
        .expect_err("a principal without grants is denied");
    let text = format!("{:?}", err);
    assert!(text.contains("AccessDenied"), "{text}");
    let webhook = crm_shared::aws::dynamodb_client(&stack.sdk_for("WebhookFunction").await);
    webhook
        .get_item()
        .table_name(stack.table())
        .key("PK", aws_sdk_dynamodb::types::AttributeValue::S("NOPE".into()))
        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S("NOPE".into()))
        .send()
        .await
        .expect("the webhook may read an item");
}
