//! `crmctl`: operator commands against DynamoDB/S3/SQS with the caller's AWS credentials.
//! JSON on stdout; errors on stderr with a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crm_shared::auth::Role;
use crm_shared::config::Env;
use crm_shared::store::{DynamoStore, StoreError};
use crm_shared::tenant::NewTenant;
use crm_shared::{admin, aws};

#[derive(Parser)]
#[command(name = "crmctl", about = "Operate the WhatsApp CRM backend", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tenants (the businesses using the CRM).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API keys of a tenant.
    Apikey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Creates a tenant with its phone-number route and a first admin key (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// WhatsApp phone number id (Meta's numeric id, not the phone number).
        #[arg(long)]
        phone_number_id: String,
        /// WhatsApp Business Account id.
        #[arg(long)]
        waba_id: String,
        /// File holding the tenant's Graph API access token (kept out of shell history).
        #[arg(long)]
        access_token_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Creates a key (shown once; only its hash is stored).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = ["admin", "agent", "viewer"])]
        role: String,
    },
    /// Revokes a key at once.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        key_id: String,
    },
}

#[derive(Debug)]
struct CliError(String);

impl From<StoreError> for CliError {
    fn from(err: StoreError) -> Self {
        CliError(err.to_string())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(CliError(message)) => {
            eprintln!("crmctl: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<Value, CliError> {
    let env = Env::from_env();
    let sdk = aws::load_sdk_config().await;
    let store = DynamoStore::new(aws::dynamodb_client(&sdk), env.resources().table);
    match cli.command {
        Command::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    phone_number_id,
                    waba_id,
                    access_token_file,
                },
        } => {
            let token = std::fs::read_to_string(&access_token_file)
                .map_err(|e| CliError(format!("cannot read {}: {e}", access_token_file.display())))?;
            let new =
                NewTenant::validated(&name, &phone_number_id, &waba_id, &token).map_err(|e| CliError(e.to_string()))?;
            let created = admin::create_tenant(&store, new).await?;
            Ok(json!({
                "tenant_id": created.tenant.tenant_id,
                "api_key": created.api_key.expose(),
                "key_id": created.key_id,
            }))
        }
        Command::Apikey {
            command: ApiKeyCommand::Create { tenant, role },
        } => {
            let role: Role = role.parse().map_err(CliError)?;
            let created = admin::create_api_key(&store, &tenant, role)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => CliError(format!("no active tenant {tenant}")),
                    other => other.into(),
                })?;
            Ok(json!({
                "api_key": created.api_key.expose(),
                "key_id": created.record.key_id,
                "tenant_id": created.record.tenant_id,
                "role": created.record.role,
            }))
        }
        Command::Apikey {
            command: ApiKeyCommand::Revoke { tenant, key_id },
        } => {
            let record = admin::revoke_api_key(&store, &tenant, &key_id)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => CliError(format!("tenant {tenant} has no key {key_id}")),
                    other => other.into(),
                })?;
            Ok(json!({
                "tenant_id": record.tenant_id,
                "key_id": record.key_id,
                "revoked": true,
                "revoked_at": record.revoked_at,
            }))
        }
    }
}
