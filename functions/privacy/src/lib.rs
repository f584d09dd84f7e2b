//! Privacy workers over the shared machinery in `crm_shared::privacy`:
//!
//! * **exporter** (export queue): builds a contact's JSON export in the exports bucket;
//! * **eraser** (erasure queue): continues erasures that did not finish inside the API request
//!   (and picks up every erasure's delayed safety-net job, a no-op when it is complete);
//! * **retention** (EventBridge schedule): one retention sweep over every tenant.
//!
//! Queue handlers report partial batch failures: a record that failed is retried by SQS and
//! goes to the dead-letter queue after the queue's `maxReceiveCount`.

use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

use crm_shared::audit::AuditEntry;
use crm_shared::config::{ConfigError, Env};
use crm_shared::jobs::{JobQueue, SqsQueue};
use crm_shared::jobs::{partial_batch_response, receive_count};
use crm_shared::objects::{Bucket, ObjectStore};
use crm_shared::privacy::erasure::Continued;
use crm_shared::privacy::export::Built;
use crm_shared::privacy::{ErasureJob, ExportJob, Privacy, PrivacyPorts};
use crm_shared::store::{AuditStore, DynamoStore};

/// Settings of the privacy functions (from their environment in `template.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The export queue's `maxReceiveCount`: on that receive a failing export is marked failed.
    pub export_max_receives: u32,
    /// Work time of one eraser invocation before it saves and re-queues (timeout 300 s).
    pub erasure_budget: Duration,
    /// Work time of one retention run before it stops (timeout 900 s); the next run resumes.
    pub retention_budget: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            export_max_receives: 3,
            erasure_budget: Duration::from_secs(240),
            retention_budget: Duration::from_secs(840),
        }
    }
}

impl WorkerConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = WorkerConfig::default();
        Ok(WorkerConfig {
            export_max_receives: env.bounded("EXPORT_MAX_RECEIVE_COUNT", d.export_max_receives, 1..=1000)?,
            erasure_budget: Duration::from_secs(env.bounded(
                "ERASURE_BUDGET_SECS",
                d.erasure_budget.as_secs(),
                1..=840,
            )?),
            retention_budget: Duration::from_secs(env.bounded(
                "RETENTION_BUDGET_SECS",
                d.retention_budget.as_secs(),
                1..=870,
            )?),
        })
    }
}

/// What the privacy workers talk to, each behind its port (the defaults are the AWS ones).
pub struct Deps<S = DynamoStore, O = Bucket, Q = SqsQueue> {
    pub privacy: Privacy<S, O, Q>,
    pub config: WorkerConfig,
}

/// Storage the privacy workers need: the privacy machinery's, and the audit log.
pub trait WorkerStore: PrivacyPorts + AuditStore {}
impl<T: PrivacyPorts + AuditStore> WorkerStore for T {}

/// Exporter: builds each queued export.
pub async fn handle_exports<S: WorkerStore, O: ObjectStore, Q: JobQueue>(
    deps: &Deps<S, O, Q>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let records = &event.payload.records;
    let outcomes = futures::future::join_all(records.iter().map(|r| export_record(deps, r))).await;
    Ok(partial_batch_response(records, outcomes))
}

#[tracing::instrument(skip_all, fields(sqs_message_id = record.message_id.as_deref().unwrap_or("")))]
async fn export_record<S: WorkerStore, O: ObjectStore, Q: JobQueue>(deps: &Deps<S, O, Q>, record: &SqsMessage) -> bool {
    let Some(job) = record
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<ExportJob>(b).ok())
    else {
        tracing::error!("export job body is not an ExportJob");
        return false;
    };
    match deps.privacy.build_export(&job.tenant_id, &job.export_id).await {
        Ok(Built::Ready(r)) => {
            tracing::info!(export_id = %r.export_id, size = r.size_bytes, messages = r.message_count, "export ready");
            true
        }
        Ok(Built::AlreadyDone | Built::Gone) => true,
        Err(err) if receive_count(record) >= deps.config.export_max_receives => {
            tracing::error!(error = %err, export_id = %job.export_id, "export failed on its last attempt");
            if let Err(e) = deps
                .privacy
                .fail_export(&job.tenant_id, &job.export_id, "the export could not be built")
                .await
            {
                tracing::error!(error = %e, "could not mark the export failed");
            }
            false
        }
        Err(err) => {
            tracing::warn!(error = %err, export_id = %job.export_id, "export failed; will retry");
            false
        }
    }
}

/// Eraser: continues each queued erasure for up to the configured budget.
pub async fn handle_erasures<S: WorkerStore, O: ObjectStore, Q: JobQueue>(
    deps: &Deps<S, O, Q>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let records = &event.payload.records;
    let mut outcomes = Vec::with_capacity(records.len());
    // One at a time: each may use the whole budget.
    for record in records {
        outcomes.push(erasure_record(deps, record).await);
    }
    Ok(partial_batch_response(records, outcomes))
}

#[tracing::instrument(skip_all, fields(sqs_message_id = record.message_id.as_deref().unwrap_or("")))]
async fn erasure_record<S: WorkerStore, O: ObjectStore, Q: JobQueue>(
    deps: &Deps<S, O, Q>,
    record: &SqsMessage,
) -> bool {
    let Some(job) = record
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<ErasureJob>(b).ok())
    else {
        tracing::error!("erasure job body is not an ErasureJob");
        return false;
    };
    match deps
        .privacy
        .continue_erasure(&job.tenant_id, &job.erasure_id, deps.config.erasure_budget)
        .await
    {
        Ok(Continued::Completed(r)) => {
            tracing::info!(erasure_id = %r.erasure_id, messages = r.deleted.messages, "erasure completed");
            let entry = AuditEntry::new(&r.tenant_id, None, "contact.erasure_completed")
                .target("contact", &r.contact_id)
                .detail("erasure_id", r.erasure_id.as_str())
                .detail("deleted", serde_json::to_value(r.deleted).expect("counts serialize"));
            if let Err(e) = deps.privacy.store.record_audit(&entry).await {
                tracing::error!(error = %e, "could not audit the erasure's completion");
            }
            true
        }
        Ok(Continued::InProgress(r)) => {
            tracing::info!(erasure_id = %r.erasure_id, step = ?r.progress.step, "erasure continues on the queue");
            true
        }
        Ok(Continued::NothingToDo) => true,
        // Another worker runs it; this delivery comes back after the visibility timeout and
        // then finds it finished (or its lease lapsed).
        Ok(Continued::Busy) => false,
        Err(err) => {
            tracing::warn!(error = %err, erasure_id = %job.erasure_id, "erasure step failed; will retry");
            false
        }
    }
}

/// The instant a scheduled event stands for: its `time`, else now.
pub fn scheduled_time(event: &Value) -> DateTime<Utc> {
    event
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
        .unwrap_or_else(Utc::now)
}

/// Retention: one sweep over every tenant, as of the schedule's time. A tenant that failed
/// fails the invocation (after the others ran), so it shows in the function's error metrics.
pub async fn handle_schedule<S: WorkerStore, O: ObjectStore, Q: JobQueue>(
    deps: &Deps<S, O, Q>,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let as_of = scheduled_time(&event.payload);
    let deadline = Instant::now() + deps.config.retention_budget;
    let report = deps.privacy.run_retention(as_of, Some(deadline), &[]).await?;
    let total = report.total();
    tracing::info!(
        as_of = %report.as_of,
        tenants = report.tenants.len(),
        complete = report.complete,
        messages = total.messages,
        media_objects = total.media_objects,
        exports = total.exports,
        audit_entries = total.audit_entries,
        "retention sweep"
    );
    if report.failed() {
        return Err(format!(
            "retention failed for {} tenant(s)",
            report.tenants.iter().filter(|t| t.error.is_some()).count()
        )
        .into());
    }
    Ok(json!({"as_of": report.as_of, "complete": report.complete, "deleted": total}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_bounds() {
        assert_eq!(
            WorkerConfig::from_env(&Env::default()).unwrap(),
            WorkerConfig::default()
        );
        let c = WorkerConfig::from_env(&Env::from_map([
            ("EXPORT_MAX_RECEIVE_COUNT", "5"),
            ("ERASURE_BUDGET_SECS", "60"),
        ]))
        .unwrap();
        assert_eq!(c.export_max_receives, 5);
        assert_eq!(c.erasure_budget, Duration::from_secs(60));
        for bad in ["0", "x", "100000"] {
            assert!(WorkerConfig::from_env(&Env::from_map([("ERASURE_BUDGET_SECS", bad)])).is_err());
        }
    }

    #[test]
    fn scheduled_time_comes_from_the_event() {
        let event = json!({"source": "aws.events", "time": "2026-05-01T10:00:00Z", "detail-type": "Scheduled Event"});
        assert_eq!(scheduled_time(&event).to_rfc3339(), "2026-05-01T10:00:00+00:00");
        let now = Utc::now();
        assert!(scheduled_time(&json!({})) >= now);
    }
}
