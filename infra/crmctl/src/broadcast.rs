//! `crmctl broadcast create|start|status`: the same rules as the API (`broadcast::control`),
//! for operators. Output is the API's JSON form of the broadcast.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use crm_shared::broadcast::Action;
use crm_shared::broadcast::control;
use crm_shared::broadcast::view::view;
use crm_shared::store::{BroadcastStore, DynamoStore};

use crate::CliError;

#[derive(Subcommand)]
pub(crate) enum BroadcastCommand {
    /// Creates a draft from a JSON file holding the body of `POST /v1/broadcasts`.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Starts a draft (it runs at the broadcast engine's next run, or at its start time).
    Start {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
    /// The broadcast with its counters.
    Status {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
}

fn cli(e: control::ControlError) -> CliError {
    CliError(e.to_string())
}

pub(crate) async fn run(store: &DynamoStore, command: BroadcastCommand) -> Result<Value, CliError> {
    let now = chrono::Utc::now();
    match command {
        BroadcastCommand::Create { tenant, file } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| CliError(format!("cannot read {}: {e}", file.display())))?;
            let body: Value =
                serde_json::from_str(&text).map_err(|e| CliError(format!("{} is not JSON: {e}", file.display())))?;
            let b = control::create(store, &tenant, &body, None, now, None)
                .await
                .map_err(cli)?;
            Ok(view(&b))
        }
        BroadcastCommand::Start { tenant, id } => {
            let (_, after) = control::act(store, &tenant, &id, Action::Start, now)
                .await
                .map_err(cli)?;
            Ok(view(&after))
        }
        BroadcastCommand::Status { tenant, id } => {
            let b = store
                .get_broadcast(&tenant, &id)
                .await?
                .ok_or_else(|| CliError(format!("no broadcast {id} in tenant {tenant}")))?;
            Ok(view(&b))
        }
    }
}
