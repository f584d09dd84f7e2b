//! `crmctl retention run` and `crmctl tenant delete`: the same machinery the retention function
//! and the erasure cascade run (`crm_shared::privacy`).

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Value, json};

use crm_shared::privacy::Privacy;

use crate::CliError;

pub fn from_env(env: &crm_shared::config::Env, sdk: &aws_config::SdkConfig) -> Privacy {
    Privacy::from_sdk(sdk, &env.resources())
}

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Runs the retention sweep once over every tenant (what the scheduled function runs) and
    /// prints what it deleted, per tenant and kind.
    Run {
        /// The instant retention periods are measured back from (RFC 3339); default: now.
        #[arg(long, value_parser = parse_time)]
        as_of: Option<DateTime<Utc>>,
        /// Sweep only this tenant (repeatable); default: every tenant.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-01-31T00:00:00Z: {e}"))
}

pub async fn retention(privacy: &Privacy, command: RetentionCommand) -> Result<Value, CliError> {
    let RetentionCommand::Run { as_of, tenants } = command;
    let report = privacy
        .run_retention(as_of.unwrap_or_else(Utc::now), None, &tenants)
        .await
        .map_err(|e| CliError(e.to_string()))?;
    if report.failed() {
        let failed: Vec<String> = report
            .tenants
            .iter()
            .filter_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.tenant_id)))
            .collect();
        return Err(CliError(format!(
            "retention failed for {} tenant(s) (the others were swept): {}",
            failed.len(),
            failed.join("; ")
        )));
    }
    Ok(serde_json::to_value(&report).expect("the report serializes"))
}

/// Offboards a tenant: disables it at once, waits `settle_secs` (webhook deliveries already on
/// their way with a cached route land before the purge), purges everything, prints a receipt.
/// Running it again after an interruption finishes the purge.
pub async fn delete_tenant(privacy: &Privacy, tenant_id: &str, settle_secs: u64) -> Result<Value, CliError> {
    let disabled = privacy
        .disable_tenant(tenant_id)
        .await
        .map_err(|e| CliError(e.to_string()))?
        .ok_or_else(|| CliError(format!("no tenant {tenant_id}")))?;
    if settle_secs > 0 {
        eprintln!("crmctl: tenant {tenant_id} disabled; purging in {settle_secs} s");
        tokio::time::sleep(std::time::Duration::from_secs(settle_secs)).await;
    }
    let deleted = privacy
        .purge_tenant(tenant_id)
        .await
        .map_err(|e| CliError(format!("purge interrupted (run the command again to finish it): {e}")))?;
    Ok(json!({
        "tenant_id": tenant_id,
        "status": "deleted",
        "disabled_at": disabled.disabled_at,
        "keys_revoked": disabled.keys_revoked,
        "routes_deleted": disabled.routes_deleted,
        "deleted": deleted,
        "completed_at": Utc::now(),
    }))
}
