//! `crmctl`: operator commands against DynamoDB/S3/SQS with the caller's AWS credentials.
//! JSON on stdout; errors on stderr with a non-zero exit.

mod broadcast;
mod privacy;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crm_shared::auth::Role;
use crm_shared::config::Env;
use crm_shared::store::{DynamoStore, StoreError, TenantStore};
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
    /// Users of a tenant (the people who use the CRM).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Retention: the sweep the scheduled function runs.
    Retention {
        #[command(subcommand)]
        command: privacy::RetentionCommand,
    },
    /// Tenant webhooks: a local receiver that prints verified deliveries.
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// The local Meta sandbox started by `make dev`.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// The template registry.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Broadcasts (template campaigns).
    Broadcast {
        #[command(subcommand)]
        command: broadcast::BroadcastCommand,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Reconciles a tenant's registry with Meta's list now (what the hourly schedule runs).
    Sync {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Listens on 127.0.0.1:PORT and prints each verified delivery as a JSON line.
    Listen(webhook::Listen),
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Delivers a customer's text message to a tenant's number, as Meta's webhook would.
    Inbound {
        #[arg(long)]
        tenant: String,
        /// The customer's phone number (E.164).
        #[arg(long)]
        from: String,
        #[arg(long)]
        text: String,
        /// The customer's WhatsApp profile name.
        #[arg(long, default_value = "Sandbox Customer")]
        name: String,
        /// Wait up to this many seconds for the sends the message causes (an automated reply)
        /// and show them; 0: do not wait.
        #[arg(long, default_value_t = 5)]
        wait_reply: u64,
    },
    /// Changes a template in the sandbox and sends Meta's webhook for it: a status
    /// (`APPROVED`, `PAUSED`, `DISABLED`, …), a quality (`--quality RED`) or a category.
    TemplateStatus {
        #[arg(long)]
        name: String,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        quality: Option<String>,
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        language: Option<String>,
        /// Only this tenant's WABA (default: every WABA with such a template).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Makes the sandbox answer the next sends with a Meta error code.
    FailNext {
        #[arg(long)]
        code: i64,
        #[arg(long, default_value_t = 400)]
        status: u16,
        #[arg(long, default_value_t = 1)]
        count: u32,
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
    /// Replaces the tenant's Graph API access token (and resumes sending if Meta had
    /// rejected the old one).
    SetToken {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        access_token_file: PathBuf,
    },
    /// Adds another WhatsApp number to a tenant (under its own WABA, or another WABA of its
    /// own); webhooks for it route to the tenant and the number.
    AddNumber {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        phone_number_id: String,
        #[arg(long)]
        waba_id: String,
        /// The number as people dial it, e.g. +15551234567.
        #[arg(long)]
        display_phone_number: Option<String>,
        /// What the team calls it (sales, support, a country).
        #[arg(long)]
        label: Option<String>,
    },
    /// Removes an added number (its webhooks stop routing; the first number stays).
    RemoveNumber {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        phone_number_id: String,
    },
    /// Offboards a tenant: disables it at once (status, every key revoked, phone-number and
    /// WABA routes deleted), then purges all of its data and objects; prints a receipt.
    Delete {
        #[arg(long)]
        tenant: String,
        /// Seconds between disabling and purging, so webhook deliveries that still found the
        /// route in a warm function's cache (60 s) land before the purge.
        #[arg(long, default_value_t = 60)]
        settle_secs: u64,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Creates an active user (no key yet: `apikey create --user`).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["admin", "agent", "viewer"])]
        role: String,
    },
    /// Prints a one-time sign-in link to the web console for an active user (the link holds
    /// a code, not a key: the console trades it once for a 12-hour session key).
    Login {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        /// The console's address (`make dev` serves it at http://127.0.0.1:3000/).
        #[arg(long, default_value = "http://127.0.0.1:3000/")]
        console: String,
        /// Minutes the link stays valid (at most 60).
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(i64).range(1..=60))]
        minutes: i64,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Creates a key (shown once; only its hash is stored): an integration key with `--role`,
    /// or a key of a user (with the user's role) with `--user`.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = ["admin", "agent", "viewer"], required_unless_present = "user", conflicts_with = "user")]
        role: Option<String>,
        /// The user who owns the key.
        #[arg(long)]
        user: Option<String>,
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
pub(crate) struct CliError(pub(crate) String);

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
    // New Graph tokens are sealed with the token key (GRAPH_TOKEN_KEY_ID, the stack's output).
    let store = DynamoStore::new(aws::dynamodb_client(&sdk), env.resources().table).with_token_cipher(
        crm_shared::kms::TokenCipher::from_sdk(&sdk, crm_shared::kms::token_key_id(&env)),
    );
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
        Command::Tenant {
            command: TenantCommand::SetToken {
                tenant,
                access_token_file,
            },
        } => {
            let token = read_token(&access_token_file)?;
            store.replace_graph_token(&tenant, &token).await.map_err(|e| match e {
                StoreError::NotFound => CliError(format!("no tenant {tenant}")),
                other => other.into(),
            })?;
            Ok(json!({"tenant_id": tenant, "token_replaced": true}))
        }
        Command::Tenant {
            command: TenantCommand::Delete { tenant, settle_secs },
        } => privacy::delete_tenant(&privacy::from_env(&env, &sdk), &tenant, settle_secs).await,
        Command::Retention { command } => privacy::retention(&privacy::from_env(&env, &sdk), command).await,
        Command::Sandbox { command } => sandbox(&env, &store, command).await,
        Command::Broadcast { command } => broadcast::run(&store, command).await,
        Command::Templates {
            command: TemplatesCommand::Sync { tenant },
        } => {
            let graph = crm_shared::graph::GraphClient::new(&env.graph().map_err(|e| CliError(e.to_string()))?)
                .map_err(|e| CliError(e.to_string()))?;
            let report = crm_shared::registry::sync(&store, &graph, &tenant, None, chrono::Utc::now())
                .await
                .map_err(|e| CliError(e.to_string()))?;
            Ok(json!(report))
        }
        Command::Webhook {
            command: WebhookCommand::Listen(args),
        } => webhook::listen(args).await,
        Command::Tenant {
            command:
                TenantCommand::AddNumber {
                    tenant,
                    phone_number_id,
                    waba_id,
                    display_phone_number,
                    label,
                },
        } => {
            let number = crm_shared::tenant::new_number(
                &phone_number_id,
                &waba_id,
                display_phone_number.as_deref(),
                label.as_deref(),
            )
            .map_err(|e| CliError(e.to_string()))?;
            let found = active_tenant(&store, &tenant).await?;
            store.add_number(&found, &number).await.map_err(|e| match e {
                StoreError::NotFound => CliError(format!("no active tenant {tenant}")),
                other => other.into(),
            })?;
            Ok(json!({"tenant_id": tenant, "number": number}))
        }
        Command::Tenant {
            command:
                TenantCommand::RemoveNumber {
                    tenant,
                    phone_number_id,
                },
        } => {
            let found = active_tenant(&store, &tenant).await?;
            store
                .remove_number(&found, &phone_number_id)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => CliError(format!("tenant {tenant} has no added number {phone_number_id}")),
                    other => other.into(),
                })?;
            Ok(json!({"tenant_id": tenant, "phone_number_id": phone_number_id, "removed": true}))
        }
        Command::User {
            command:
                UserCommand::Create {
                    tenant,
                    name,
                    email,
                    role,
                },
        } => {
            let role: Role = role.parse().map_err(CliError)?;
            let user = admin::create_user(&store, &tenant, &name, &email, role)
                .await
                .map_err(|e| match e {
                    admin::UserError::Store(StoreError::NotFound) => CliError(format!("no active tenant {tenant}")),
                    other => CliError(other.to_string()),
                })?;
            Ok(crm_shared::user::user_json(&user))
        }
        Command::User {
            command:
                UserCommand::Login {
                    tenant,
                    user,
                    console,
                    minutes,
                },
        } => {
            let created = admin::create_signin_code(&store, &tenant, &user, chrono::Duration::minutes(minutes))
                .await
                .map_err(|e| match e {
                    admin::UserError::Store(StoreError::NotFound) => {
                        CliError(format!("no user {user} in an active tenant {tenant}"))
                    }
                    other => CliError(other.to_string()),
                })?;
            // In the fragment: browsers never send it to a server, so it reaches no log.
            let link = format!(
                "{}#signin={}",
                console.trim_end_matches('/').to_owned() + "/",
                created.code.expose()
            );
            Ok(json!({"sign_in_url": link, "expires_at": created.expires_at}))
        }
        Command::Apikey {
            command:
                ApiKeyCommand::Create {
                    tenant,
                    role: None,
                    user: Some(user),
                },
        } => {
            let created = admin::create_user_key(&store, &tenant, &user)
                .await
                .map_err(|e| match e {
                    admin::UserError::Store(StoreError::NotFound) => {
                        CliError(format!("no active tenant {tenant} with a user {user}"))
                    }
                    other => CliError(other.to_string()),
                })?;
            Ok(json!({
                "api_key": created.api_key.expose(),
                "key_id": created.record.key_id,
                "tenant_id": created.record.tenant_id,
                "role": created.record.role,
                "user_id": user,
            }))
        }
        Command::Apikey {
            command: ApiKeyCommand::Create { tenant, role, .. },
        } => {
            let role: Role = role
                .ok_or_else(|| CliError("--role or --user is required".into()))?
                .parse()
                .map_err(CliError)?;
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

async fn active_tenant(store: &DynamoStore, tenant_id: &str) -> Result<crm_shared::tenant::Tenant, CliError> {
    if !crm_shared::ids::is_valid_id(tenant_id) {
        return Err(CliError(format!("no tenant {tenant_id}")));
    }
    store
        .get_tenant(tenant_id)
        .await?
        .ok_or_else(|| CliError(format!("no tenant {tenant_id}")))
}

fn read_token(path: &std::path::Path) -> Result<crm_shared::secret::Secret, CliError> {
    let raw = std::fs::read_to_string(path).map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?;
    let token = raw.trim();
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        return Err(CliError("the access token file must hold one token".into()));
    }
    Ok(crm_shared::secret::Secret::new(token))
}

async fn sandbox_call(method: reqwest::Method, url: String, body: Option<&Value>) -> Result<Value, CliError> {
    let mut req = reqwest::Client::new().request(method, &url);
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| CliError(format!("sandbox at {url} unreachable (is make dev running?): {e}")))?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(CliError(format!("sandbox answered {status}: {answer}")));
    }
    Ok(answer)
}

/// Injects the customer's message, then shows the sends to them it causes (automated replies)
/// as the sandbox accepts them, for up to `wait_secs`.
async fn inbound_with_replies(base: &str, body: &Value, from: &str, wait_secs: u64) -> Result<Value, CliError> {
    let to = from.trim_start_matches('+');
    let sent_url = |after: u64| format!("{base}/sandbox/sent?to={to}&after={after}");
    let before = sandbox_call(reqwest::Method::GET, sent_url(0), None).await?["count"]
        .as_u64()
        .unwrap_or(0);
    let mut answer = sandbox_call(reqwest::Method::POST, format!("{base}/sandbox/inbound"), Some(body)).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
    let mut replies = Vec::new();
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let sent = sandbox_call(reqwest::Method::GET, sent_url(before), None).await?;
        replies = sent["items"].as_array().cloned().unwrap_or_default();
        if !replies.is_empty() {
            // A moment more for a second reply of the same message (rules with `continue`).
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let sent = sandbox_call(reqwest::Method::GET, sent_url(before), None).await?;
            replies = sent["items"].as_array().cloned().unwrap_or_default();
            break;
        }
    }
    answer["replies"] = Value::Array(replies);
    Ok(answer)
}

/// The sandbox's base URL: `SANDBOX_URL`, else the port `make dev` uses.
fn sandbox_url(env: &Env) -> String {
    match env.get("SANDBOX_URL") {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://127.0.0.1:{}", env.get("LOCAL_SANDBOX_PORT").unwrap_or("4010")),
    }
}

async fn sandbox(env: &Env, store: &DynamoStore, command: SandboxCommand) -> Result<Value, CliError> {
    let base = sandbox_url(env);
    let (path, body) = match command {
        SandboxCommand::Inbound {
            tenant,
            from,
            text,
            name,
            wait_reply,
        } => {
            let tenant = store
                .get_tenant(&tenant)
                .await?
                .ok_or_else(|| CliError(format!("no tenant {tenant}")))?;
            let from = crm_shared::contact::normalize_phone(&from).map_err(|e| CliError(e.to_string()))?;
            let body = json!({"phone_number_id": tenant.phone_number_id, "from": from, "text": text, "name": name});
            if wait_reply > 0 {
                return inbound_with_replies(&base, &body, &from, wait_reply).await;
            }
            ("sandbox/inbound", body)
        }
        SandboxCommand::TemplateStatus {
            name,
            status,
            quality,
            category,
            language,
            tenant,
            reason,
        } => {
            let waba_id = match tenant {
                Some(t) => Some(
                    store
                        .get_tenant(&t)
                        .await?
                        .ok_or_else(|| CliError(format!("no tenant {t}")))?
                        .waba_id,
                ),
                None => None,
            };
            (
                "sandbox/template-status",
                json!({"name": name, "status": status, "quality": quality, "category": category,
                       "language": language, "waba_id": waba_id, "reason": reason}),
            )
        }
        SandboxCommand::FailNext { code, status, count } => (
            "sandbox/errors",
            json!({"code": code, "status": status, "count": count}),
        ),
    };
    let resp = reqwest::Client::new()
        .post(format!("{base}/{path}"))
        .json(&body)
        .send()
        .await
        .map_err(|e| CliError(format!("sandbox at {base} unreachable (is make dev running?): {e}")))?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(CliError(format!("sandbox answered {status}: {answer}")));
    }
    Ok(answer)
}
